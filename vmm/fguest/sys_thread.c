/* vmm/fguest/sys_thread.c - threads (each guest thread runs on its own
 * vCPU), futexes, thread identity, exit, and fatal signals. */
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#include "common/log.h"
#include "vmm/cpu.h"
#include "vmm/fguest/fguest.h"
#include "vmm/vm.h"

#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002
#define ARCH_GET_FS 0x1003
#define ARCH_GET_GS 0x1004
#define NSEC 1000000000ULL

void fg_thread_start(struct fguest *fg, struct vcpu *v, int tid, const struct vregs *regs,
		     uint64_t fs_base)
{
	struct fg_thread *t = &fg->threads[v->id];

	memset(t, 0, sizeof(*t));
	t->live = true;
	t->tid = tid;
	t->vcpu = v;
	t->fs_base = fs_base;
	v->gt = t;
	free(v->start.xstate);
	v->start = (struct vcpu_start){ .regs = *regs, .fs_base = fs_base };
	v->start_pending = true;
	fg->nr_live++;
	pthread_cond_broadcast(&fg->vm->cond);
}

/* ------------------------------------------------------------ futex */

static bool pred_woken(void *arg)
{
	return ((struct fg_futex_waiter *)arg)->woken;
}

static void waiter_unlink(struct fguest *fg, struct fg_futex_waiter *w)
{
	for (struct fg_futex_waiter **pp = &fg->waiters; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			return;
		}
	}
}

int fg_futex_wake(struct fguest *fg, uint64_t uaddr, uint32_t bitset, int n)
{
	int woken = 0;
	struct fg_futex_waiter **pp = &fg->waiters;

	while (*pp && woken < n) {
		struct fg_futex_waiter *w = *pp;
		if (w->uaddr == uaddr && (w->bitset & bitset)) {
			*pp = w->next;
			w->woken = true;
			woken++;
		} else {
			pp = &w->next;
		}
	}
	if (woken)
		pthread_cond_broadcast(&fg->vm->cond);
	return woken;
}

/* The futex word's value (an aligned 4-byte read is atomic on either
 * side of the guest's memory). */
static int futex_word(struct fg_call *c, uint64_t uaddr, uint32_t *val)
{
	if (uaddr & 3)
		return -EINVAL;
	return fg_copy_from_user(c->fg, val, uaddr, 4);
}

static long futex_wait(struct fg_call *c, uint64_t uaddr, uint32_t val, uint64_t tsaddr,
		       bool absolute, bool realtime, uint32_t bitset)
{
	struct fg_futex_waiter w = { .uaddr = uaddr, .bitset = bitset };
	uint64_t deadline = 0;
	uint32_t word;
	int rc;

	if (!bitset)
		return -EINVAL;
	rc = futex_word(c, uaddr, &word);
	if (rc < 0)
		return rc;
	if (tsaddr) {
		struct timespec ts;
		uint64_t ns, now = vm_guest_now(c->vm);
		if (fg_copy_from_user(c->fg, &ts, tsaddr, sizeof(ts)) < 0)
			return -EFAULT;
		if (ts.tv_sec < 0 || ts.tv_nsec < 0 || ts.tv_nsec >= (long)NSEC)
			return -EINVAL;
		ns = (uint64_t)ts.tv_sec > UINT64_MAX / NSEC - 1 ?
			     UINT64_MAX / 2 :
			     (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
		if (!absolute) {
			deadline = add_overflows(now, ns, &deadline) ? UINT64_MAX / 2 : now + ns;
		} else if (realtime) {
			uint64_t real = time_real_ns();
			deadline = ns <= real ? now : now + MIN(ns - real, UINT64_MAX / 4);
		} else {
			deadline = ns;
		}
		if (deadline == 0)
			deadline = 1;
		if (deadline <= now)
			return -ETIMEDOUT;
	}
	/* Re-read now: the word may have changed since the checks above. */
	if (futex_word(c, uaddr, &word) < 0)
		return -EFAULT;
	if (word != val)
		return -EAGAIN;
	w.next = c->fg->waiters;
	c->fg->waiters = &w;
	rc = vcpu_wait(c->v, pred_woken, &w, deadline);
	if (w.woken)
		return 0;
	waiter_unlink(c->fg, &w);
	return rc == -ETIMEDOUT ? -ETIMEDOUT : -EINTR;
}

static long futex_requeue(struct fg_call *c, uint64_t uaddr, int nwake, int nreq,
			  uint64_t uaddr2, bool cmp, uint32_t val3)
{
	uint32_t word, word2;
	int rc, woken, moved = 0;

	if (nwake < 0 || nreq < 0)
		return -EINVAL;
	rc = futex_word(c, uaddr, &word);
	if (rc == 0)
		rc = futex_word(c, uaddr2, &word2);
	if (rc < 0)
		return rc;
	if (cmp && word != val3)
		return -EAGAIN;
	woken = fg_futex_wake(c->fg, uaddr, FUTEX_BITSET_MATCH_ANY, nwake);
	for (struct fg_futex_waiter *w = c->fg->waiters; w && moved < nreq; w = w->next) {
		if (w->uaddr == uaddr) {
			w->uaddr = uaddr2;
			moved++;
		}
	}
	return woken + (cmp ? moved : 0);
}

static long sys_futex(struct fg_call *c)
{
	uint64_t uaddr = c->a[0];
	int op = (int)c->a[1];
	int cmd = op & FUTEX_CMD_MASK;
	bool realtime = op & FUTEX_CLOCK_REALTIME;
	uint32_t val = (uint32_t)c->a[2];
	uint32_t val3 = (uint32_t)c->a[5];

	switch (cmd) {
	case FUTEX_WAIT:
		if (realtime)
			return -ENOSYS;
		return futex_wait(c, uaddr, val, c->a[3], false, false, FUTEX_BITSET_MATCH_ANY);
	case FUTEX_WAIT_BITSET:
		return futex_wait(c, uaddr, val, c->a[3], true, realtime, val3);
	case FUTEX_WAKE:
	case FUTEX_WAKE_BITSET: {
		uint32_t word;
		int rc = futex_word(c, uaddr, &word);
		if (rc < 0)
			return rc;
		if (cmd == FUTEX_WAKE_BITSET && !val3)
			return -EINVAL;
		return fg_futex_wake(c->fg, uaddr, cmd == FUTEX_WAKE ? FUTEX_BITSET_MATCH_ANY : val3,
				     (int)MIN(val, (uint32_t)INT32_MAX));
	}
	case FUTEX_REQUEUE:
		return futex_requeue(c, uaddr, (int)val, (int)c->a[3], c->a[4], false, 0);
	case FUTEX_CMP_REQUEUE:
		return futex_requeue(c, uaddr, (int)val, (int)c->a[3], c->a[4], true, val3);
	}
	return -ENOSYS;
}

/* ------------------------------------------------------------ threads */

#define CLONE_THREAD_FLAGS (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD)
#define CLONE_OK_FLAGS                                                                    \
	(CLONE_THREAD_FLAGS | CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID |         \
	 CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID | CLONE_DETACHED)

static long sys_clone(struct fg_call *c)
{
	struct fguest *fg = c->fg;
	struct vm *vm = c->vm;
	uint64_t flags = c->a[0], newsp = c->a[1], ptid = c->a[2], ctid = c->a[3], tls = c->a[4];
	struct vcpu *nv = NULL;
	struct vregs regs;
	int tid;

	if ((flags & CLONE_THREAD_FLAGS) != CLONE_THREAD_FLAGS || (flags & ~(uint64_t)(CLONE_OK_FLAGS | 0xff)))
		return -ENOSYS; /* only threads: no fork, no vfork, no namespaces */
	if (!c->regs)
		return -EINVAL;
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		if (!vm->vcpus[i].gt && !fg->threads[i].live) {
			nv = &vm->vcpus[i];
			break;
		}
	}
	if (!nv)
		return -EAGAIN; /* every vCPU runs a thread: --cpus boot=N bounds them */
	tid = fg->next_tid;
	if ((flags & CLONE_PARENT_SETTID) && fg_copy_to_user(fg, ptid, &tid, sizeof(tid)) < 0)
		return -EFAULT;
	if ((flags & CLONE_CHILD_SETTID) && fg_copy_to_user(fg, ctid, &tid, sizeof(tid)) < 0)
		return -EFAULT;
	fg->next_tid++;

	/* The child returns from the same call with 0, on its own stack. */
	regs = *c->regs;
	regs.rax = 0;
	regs.rcx = regs.rip;
	regs.rflags = (regs.rflags & CPU_RFLAGS_USER_MASK) | CPU_RFLAGS_FIXED;
	regs.r11 = regs.rflags;
	regs.rsp = newsp ? newsp : regs.rsp;
	fg_thread_start(fg, nv, tid, &regs, (flags & CLONE_SETTLS) ? tls : fg->threads[c->v->id].fs_base);
	if (flags & CLONE_CHILD_CLEARTID)
		fg->threads[nv->id].clear_child_tid = ctid;
	log_debug("clone: thread %d on vCPU %u", tid, nv->id);
	return tid;
}

/* Ends the calling thread; the last one ends the VM with its status. */
static long thread_exit(struct fg_call *c, int status)
{
	struct fguest *fg = c->fg;
	struct fg_thread *t = c->t;

	if (t->clear_child_tid) {
		uint32_t zero = 0;
		if (fg_copy_to_user(fg, t->clear_child_tid, &zero, sizeof(zero)) == 0)
			fg_futex_wake(fg, t->clear_child_tid, FUTEX_BITSET_MATCH_ANY, 1);
	}
	t->live = false;
	c->v->gt = NULL;
	fg->nr_live--;
	c->no_return = true;
	if (fg->nr_live == 0)
		vm_terminate_locked(c->vm, status & 0xff, false,
				    "guest exited with status %d (last thread ended)", status & 0xff);
	return 0;
}

static long kill_with(struct fg_call *c, int tid, int sig)
{
	struct fguest *fg = c->fg;
	bool found = false;

	if (sig < 0 || sig >= 65)
		return -EINVAL;
	for (unsigned i = 0; i < c->vm->nr_vcpus; i++)
		if (fg->threads[i].live && fg->threads[i].tid == tid)
			found = true;
	if (!found)
		return -ESRCH;
	if (sig == 0)
		return 0;
	/* No signal handlers in the function-guest ABI: every signal is fatal
	 * (the default action of SIGABRT, SIGKILL, SIGTERM, SIGSEGV...). */
	c->no_return = true;
	vm_terminate_locked(c->vm, 128 + sig, true, "guest killed by signal %d (%s) sent by thread %d",
			    sig, strsignal(sig), c->t->tid);
	return 0;
}

static long sys_sigprocmask(struct fg_call *c)
{
	uint64_t set, old = c->t->sigmask;
	const uint64_t unblockable = (1ULL << (SIGKILL - 1)) | (1ULL << (SIGSTOP - 1));

	if (c->a[3] != 8)
		return -EINVAL;
	if (c->a[1]) {
		if (fg_copy_from_user(c->fg, &set, c->a[1], 8) < 0)
			return -EFAULT;
		switch (c->a[0]) {
		case SIG_BLOCK:
			c->t->sigmask |= set;
			break;
		case SIG_UNBLOCK:
			c->t->sigmask &= ~set;
			break;
		case SIG_SETMASK:
			c->t->sigmask = set;
			break;
		default:
			return -EINVAL;
		}
		c->t->sigmask &= ~unblockable;
	}
	if (c->a[2] && fg_copy_to_user(c->fg, c->a[2], &old, 8) < 0)
		return -EFAULT;
	return 0;
}

static long sys_arch_prctl(struct fg_call *c)
{
	uint64_t code = c->a[0], addr = c->a[1];
	struct fg_thread *t = c->t;

	switch (code) {
	case ARCH_SET_FS:
	case ARCH_SET_GS: {
		if (addr >= (1ULL << 47))
			return -EPERM; /* non-canonical */
		uint64_t fs = code == ARCH_SET_FS ? addr : t->fs_base;
		uint64_t gs = code == ARCH_SET_GS ? addr : t->gs_base;
		if (c->vm->plat->set_tls(c->v, fs, gs) < 0)
			return -EINVAL;
		t->fs_base = fs;
		t->gs_base = gs;
		return 0;
	}
	case ARCH_GET_FS:
		return fg_copy_to_user(c->fg, addr, &t->fs_base, 8);
	case ARCH_GET_GS:
		return fg_copy_to_user(c->fg, addr, &t->gs_base, 8);
	}
	return -EINVAL;
}

static long sys_sched_getaffinity(struct fg_call *c)
{
	uint8_t mask[FG_MAX_VCPUS / 8 + 8] = { 0 };
	uint64_t need = align_up((c->vm->nr_vcpus + 7) / 8, 8);

	if (c->a[1] < need || (c->a[1] & 7))
		return -EINVAL;
	for (unsigned i = 0; i < c->vm->nr_vcpus; i++)
		mask[i / 8] |= (uint8_t)(1u << (i % 8));
	if (fg_copy_to_user(c->fg, c->a[2], mask, need) < 0)
		return -EFAULT;
	return (long)need;
}

long fg_sys_thread(struct fg_call *c, bool *handled)
{
	*handled = true;
	switch (c->nr) {
	case SYS_clone:
		return sys_clone(c);
	case SYS_exit:
		return thread_exit(c, (int)c->a[0]);
	case SYS_exit_group:
		c->no_return = true;
		vm_terminate_locked(c->vm, (int)(c->a[0] & 0xff), false, "guest exited with status %d",
				    (int)(c->a[0] & 0xff));
		return 0;
	case SYS_set_tid_address:
		c->t->clear_child_tid = c->a[0];
		return c->t->tid;
	case SYS_gettid:
		return c->t->tid;
	case SYS_futex:
		return sys_futex(c);
	case SYS_set_robust_list:
		return c->a[1] == 24 ? 0 : -EINVAL;
	case SYS_rt_sigprocmask:
		return sys_sigprocmask(c);
	case SYS_arch_prctl:
		return sys_arch_prctl(c);
	case SYS_tkill:
		return kill_with(c, (int)c->a[0], (int)c->a[1]);
	case SYS_tgkill:
		if ((int)c->a[0] != 1)
			return -ESRCH;
		return kill_with(c, (int)c->a[1], (int)c->a[2]);
	case SYS_kill:
		if ((int)c->a[0] != 1 && (int)c->a[0] != 0 && (int)c->a[0] != -1)
			return -ESRCH;
		return kill_with(c, c->t->tid, (int)c->a[1]);
	case SYS_sched_getaffinity:
		return sys_sched_getaffinity(c);
	case SYS_getcpu: {
		unsigned cpu = c->v->id, node = 0;
		if (c->a[0] && fg_copy_to_user(c->fg, c->a[0], &cpu, 4) < 0)
			return -EFAULT;
		if (c->a[1] && fg_copy_to_user(c->fg, c->a[1], &node, 4) < 0)
			return -EFAULT;
		return 0;
	}
	}
	*handled = false;
	return -ENOSYS;
}
