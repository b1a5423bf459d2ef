/* vmm/ptrace/ptrace.c - the process platform: a function guest runs as a
 * host process, the stub (stub/stub.c), whose threads the vCPU threads
 * trace with PTRACE_SYSEMU (gVisor's ptrace platform). The stub's address
 * space holds guest RAM at the guest's own addresses (guest-virtual ==
 * guest-physical, as under KVM) and its own small code and stacks at
 * STUB_BASE, far above. Every system call of guest code stops in the
 * tracer before the kernel runs it, and is served by the same function-
 * guest code as under KVM; a fault is a signal that the stub's handler
 * turns into a report of the CPU's own trap number, error code and
 * address. The stub's seccomp filter kills it on any system call made
 * from outside its own code; it dies with its tracers (PTRACE_O_EXITKILL)
 * and with the thread that started it (PR_SET_PDEATHSIG).
 *
 * Guest RAM: a booted VM's memfd is mapped shared by the VMM and the stub;
 * a restored VM's snapshot image is mapped private by the stub, which holds
 * the guest's copies: the VMM reaches them through /proc/PID/mem (gmem's
 * remote mode) and brings its own mirror up to date before a snapshot.
 *
 * ptrace requests come from the tracing thread only: each vCPU thread
 * attaches its stub thread (vcpu_enter) and is the only one to touch it. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "common/log.h"
#include "vmm/cpu.h"
#include "vmm/fguest/fguest.h"
#include "vmm/ptrace/stub/stub.h"
#include "vmm/vm.h"

/* The stub program's bytes (stub_blob.S). */
extern const unsigned char ptrace_stub_elf[], ptrace_stub_elf_end[];

/* Stops a traced stub thread for the VMM: a plain signal, so kicks that
 * pile up while it is stopped stay one. The tracer never delivers it. */
#define PT_KICK_SIGNAL SIGURG
#define PT_READY_MS 10000
#define PT_STUB_TEXT_END (STUB_BASE + (16ULL << 20))
/* Pieces of guest RAM the stub maps (two regions, three kinds of page). */
#define PT_MAX_PIECES 6
#define XSAVE_BV_OFFSET 512
#define XSAVE_XCOMP_BV_OFFSET 520
#define XSAVE_SW_OFFSET 464 /* ptrace: the kernel's words; the first 8 are its XCR0 */
#define XSAVE_SW_XFEATURES XSAVE_SW_OFFSET

/* ucontext_t: uc_mcontext's general registers start 40 bytes in; their
 * order (glibc's REG_*). */
#define UC_GREGS 40
enum { G_RSP = 15, G_RIP = 16, G_CSGSFS = 18, G_ERR = 19, G_TRAPNO = 20, G_CR2 = 22, G_N = 23 };

struct pt_vm {
	pid_t pid;      /* the stub; 0 once reaped */
	pid_t tids[STUB_MAX_THREADS];
	uint64_t gadget; /* `syscall; int3` in the stub */
};

struct pt_vcpu {
	pid_t tid;
	bool attached;  /* traced by the vCPU's thread */
	pthread_t tracer;
	bool stopped;   /* in a ptrace stop */
	bool at_syscall; /* ... at a system call's entry */
	int pending_sig; /* a fault to deliver at the next resume */
	bool fault_sent; /* ... delivered: the stub's handler reports it next */
	int bound_cpu;   /* the CPU the stub thread is bound to (-1: none yet) */
	bool regs_valid;
	struct user_regs_struct regs;
};

static struct pt_vm *PV(const struct vm *vm)
{
	return vm->p;
}

static struct pt_vcpu *PC(const struct vcpu *v)
{
	return v->p;
}

/* ------------------------------------------------------------ probe */

static int pt_probe(char *why, size_t len)
{
	char buf[16] = "";
	int fd = open("/proc/sys/kernel/yama/ptrace_scope", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0 && atoi(buf) >= 3) {
			snprintf(why, len, "ptrace is disabled here (kernel.yama.ptrace_scope = 3)");
			return -EPERM;
		}
	}
	return 0;
}

/* ------------------------------------------------------------ the stub */

static int wait_stopped(pid_t tid, int *st)
{
	for (;;) {
		pid_t w = waitpid(tid, st, __WALL);
		if (w == tid)
			return 0;
		if (w < 0 && errno != EINTR)
			return -errno;
	}
}

/* Reads the stub's first line ("ready GADGET TID..." or "error WHAT N"). */
static int read_ready(int fd, char *line, size_t cap)
{
	size_t at = 0;
	uint64_t deadline = time_mono_ns() + PT_READY_MS * 1000000ULL;

	while (at < cap - 1) {
		uint64_t now = time_mono_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, (int)((deadline - now) / 1000000ULL) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		ssize_t n = read(fd, line + at, cap - 1 - at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		at += (size_t)n;
		if (memchr(line, '\n', at))
			break;
	}
	line[at] = '\0';
	return at ? 0 : -EPIPE;
}

static int pt_discard(void *arg, uint64_t gpa, uint64_t len);

/* Starts the stub: a memfd holding its program, exec'd by a vfork child
 * with guest RAM on fd 3 and the ready pipe on fd 4. */
static int stub_start(struct vm *vm, struct pt_vm *p, char *err, size_t errlen)
{
	bool shared = vm->mem.backing == GMEM_MEMFD;
	char threads[16], pieces[PT_MAX_PIECES][80], line[16 * STUB_MAX_THREADS + 64];
	char name[] = "forkvm-stub", mode_shared[] = "shared", mode_private[] = "private";
	char *argv[4 + PT_MAX_PIECES] = { name, threads, shared ? mode_shared : mode_private };
	char *envp[] = { NULL };
	int sfd = -1, ready[2] = { -1, -1 }, rc;
	size_t size = (size_t)(ptrace_stub_elf_end - ptrace_stub_elf);

	if (vm->mem.backing != GMEM_MEMFD && vm->mem.backing != GMEM_FILE_PRIVATE)
		return err_fail(err, errlen, -EINVAL, "the process platform needs file-backed guest RAM");
	snprintf(threads, sizeof(threads), "%x", vm->nr_vcpus);
	/* Guest RAM as the guest's ring 3 sees it on KVM: the system area
	 * below FG_SYS_END is the kernel's there (inaccessible), but for the
	 * identity page (read-only); the rest is the guest's. */
	static const struct {
		uint64_t start, end;
		int prot;
	} layout[] = {
		{ 0, FG_IDENTITY_PAGE, PROT_NONE },
		{ FG_IDENTITY_PAGE, FG_IDENTITY_PAGE + 4096, PROT_READ },
		{ FG_SYS_END, UINT64_MAX, PROT_READ | PROT_WRITE | PROT_EXEC },
	};
	unsigned np = 0;
	for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
		const struct gmem_region *r = &vm->mem.regions[i];
		for (unsigned k = 0; k < sizeof(layout) / sizeof(layout[0]); k++) {
			uint64_t s = MAX(r->gpa, layout[k].start), e = MIN(r->gpa + r->size, layout[k].end);
			if (s >= e)
				continue;
			if (np == PT_MAX_PIECES)
				return err_fail(err, errlen, -EINVAL, "guest RAM has too many regions");
			snprintf(pieces[np], sizeof(pieces[np]), "%llx,%llx,%llx,%x", (unsigned long long)s,
				 (unsigned long long)(e - s), (unsigned long long)(r->offset + s - r->gpa),
				 layout[k].prot);
			argv[3 + np] = pieces[np];
			np++;
		}
	}
	argv[3 + np] = NULL;
	sfd = memfd_create("forkvm-stub", MFD_CLOEXEC);
	if (sfd < 0)
		return err_fail(err, errlen, -errno, "memfd_create: %s", strerror(errno));
	for (size_t done = 0; done < size;) {
		ssize_t n = write(sfd, ptrace_stub_elf + done, size - done);
		if (n <= 0) {
			rc = err_fail(err, errlen, n < 0 ? -errno : -EIO, "cannot write the stub: %s",
				  strerror(n < 0 ? errno : EIO));
			goto out;
		}
		done += (size_t)n;
	}
	if (pipe2(ready, O_CLOEXEC) < 0) {
		rc = err_fail(err, errlen, -errno, "pipe: %s", strerror(errno));
		goto out;
	}
	int mem_fd = vm->mem.fd;
	pid_t pid = vfork();
	if (pid == 0) {
		/* Above any number dup2 targets, then onto 3 and 4 (not
		 * close-on-exec: the stub reads them; it closes everything
		 * else itself). */
		int m = fcntl(mem_fd, F_DUPFD, 16), r = fcntl(ready[1], F_DUPFD, 16);
		if (m < 0 || r < 0 || dup2(m, STUB_FD_MEM) < 0 || dup2(r, STUB_FD_READY) < 0)
			_exit(126);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		syscall(SYS_execveat, sfd, "", argv, envp, AT_EMPTY_PATH);
		_exit(127);
	}
	if (pid < 0) {
		rc = err_fail(err, errlen, -errno, "cannot start the stub process: %s", strerror(errno));
		goto out;
	}
	p->pid = pid;
	close(ready[1]);
	ready[1] = -1;
	rc = read_ready(ready[0], line, sizeof(line));
	if (rc == 0 && !strncmp(line, "ready ", 6)) {
		char *s = line + 6, *end;
		p->gadget = strtoull(s, &end, 16);
		unsigned n = 0;
		for (s = end; n < vm->nr_vcpus; n++) {
			long t = strtol(s, &end, 10);
			if (end == s || t <= 0)
				break;
			p->tids[n] = (pid_t)t;
			s = end;
		}
		if (n == vm->nr_vcpus && p->gadget >= STUB_BASE && p->gadget < PT_STUB_TEXT_END) {
			rc = 0;
			goto out;
		}
		rc = err_fail(err, errlen, -EPROTO, "the stub process said: %.100s", line);
	} else {
		int st = 0;
		line[strcspn(line, "\n")] = '\0';
		kill(pid, SIGKILL);
		while (waitpid(pid, &st, __WALL) < 0 && errno == EINTR)
			;
		p->pid = 0;
		if (rc == 0)
			rc = err_fail(err, errlen, -EIO, "the stub process failed: %.100s", line);
		else if (WIFEXITED(st) && WEXITSTATUS(st) >= 126)
			rc = err_fail(err, errlen, -ENOEXEC, "cannot execute the stub process (status %d)",
				  WEXITSTATUS(st));
		else
			rc = err_fail(err, errlen, rc, "the stub process did not start: %s%s", strerror(-rc),
				  WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS ?
					  " (killed by a seccomp filter: SIGSYS)" :
					  "");
	}
out:
	if (sfd >= 0)
		close(sfd);
	if (ready[0] >= 0)
		close(ready[0]);
	if (ready[1] >= 0)
		close(ready[1]);
	return rc;
}

static int pt_vm_create(struct vm *vm, const struct snapshot *snap, char *err, size_t errlen)
{
	struct pt_vm *p = calloc(1, sizeof(*p));
	uint64_t t0 = time_mono_ns();
	int rc;

	(void)snap;
	if (!p)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	vm->p = p;
	if (vm->nr_vcpus > STUB_MAX_THREADS)
		return err_fail(err, errlen, -E2BIG, "at most %d vCPUs on the process platform",
			    STUB_MAX_THREADS);
	rc = stub_start(vm, p, err, errlen);
	if (rc == 0 && vm->mem.backing == GMEM_FILE_PRIVATE) {
		rc = gmem_set_remote(&vm->mem, p->pid, pt_discard, vm);
		if (rc < 0)
			err_fail(err, errlen, rc, "cannot reach the stub's memory: %s", strerror(-rc));
	}
	vm->timings.kvm_ns = time_mono_ns() - t0;
	return rc;
}

static void pt_vm_destroy(struct vm *vm)
{
	struct pt_vm *p = PV(vm);

	for (unsigned i = 0; vm->vcpus && i < vm->nr_vcpus; i++) {
		free(vm->vcpus[i].p);
		vm->vcpus[i].p = NULL;
	}
	if (!p)
		return;
	if (p->pid > 0) {
		int st;
		kill(p->pid, SIGKILL);
		while (waitpid(p->pid, &st, __WALL) < 0 && errno == EINTR)
			;
	}
	free(p);
	vm->p = NULL;
}

static int pt_fguest_setup(struct vm *vm, char *err, size_t errlen)
{
	(void)vm;
	(void)err;
	(void)errlen;
	return 0; /* a host process needs no machine of its own */
}

static uint64_t pt_hwcap(struct vm *vm)
{
	(void)vm;
	return getauxval(AT_HWCAP);
}

/* The stub runs on the host's CPU: what XCR0 enables for every process
 * (with OSXSAVE; else x87 and SSE through FXSAVE). */
static uint64_t pt_xfeatures(struct vm *vm)
{
	unsigned a, b, c, d;
	(void)vm;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
	if (!(c & (1u << 27)))
		return 3;
	__asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
	return ((uint64_t)d << 32) | a;
}

/* ------------------------------------------------------------ vCPUs */

static int pt_vcpu_create(struct vcpu *v, char *err, size_t errlen)
{
	struct pt_vcpu *c = calloc(1, sizeof(*c));

	if (!c)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	c->tid = PV(v->vm)->tids[v->id];
	c->bound_cpu = -1;
	v->p = c;
	return 0;
}

/* Attaches the vCPU's stub thread to this (the vCPU's) thread and stops
 * it: from here on it runs only guest code, under SYSEMU. */
static int pt_vcpu_enter(struct vcpu *v)
{
	struct pt_vcpu *c = PC(v);
	int st, rc;

	/* Every stop of the traced thread sends its tracer's process a
	 * SIGCHLD. Blocked here (vcpu_thread blocks all), it would stay
	 * pending and wake another thread of forkvm at every guest system
	 * call; unblocked and at its default action, the kernel drops it
	 * where it is made. */
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_sigmask(SIG_UNBLOCK, &chld, NULL);
	c->tracer = pthread_self();
	if (ptrace(PTRACE_SEIZE, c->tid, 0, PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD) < 0)
		return -errno;
	c->attached = true;
	if (ptrace(PTRACE_INTERRUPT, c->tid, 0, 0) < 0)
		return -errno;
	rc = wait_stopped(c->tid, &st);
	if (rc < 0)
		return rc;
	if (!WIFSTOPPED(st))
		return -ESRCH;
	c->stopped = true;
	c->regs_valid = false;
	return 0;
}

/* Binds the stub thread to the CPU its tracer runs on now (gVisor's ptrace
 * platform does the same): tracer and tracee hand the CPU to each other at
 * every system call, and a wake-up across CPUs costs ten times the round
 * trip itself on these machines (60 us against 3.5). Best effort: a CPU
 * outside the stub's allowed set (a clone's cpuset) is left alone. */
static void bind_to_tracer(struct pt_vcpu *c)
{
	int cpu = sched_getcpu();
	if (cpu < 0 || cpu == c->bound_cpu)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(c->tid, sizeof(set), &set);
	c->bound_cpu = cpu;
}

static void pt_vcpu_kick(struct vcpu *v)
{
	struct pt_vcpu *c = PC(v);
	struct pt_vm *p = PV(v->vm);

	if (c && c->attached && p && p->pid > 0)
		syscall(SYS_tgkill, p->pid, c->tid, PT_KICK_SIGNAL);
}

static int regs_now(struct pt_vcpu *c)
{
	if (!c->regs_valid) {
		if (ptrace(PTRACE_GETREGS, c->tid, 0, &c->regs) < 0)
			return -errno;
		c->regs_valid = true;
	}
	return 0;
}

static int regs_put(struct pt_vcpu *c)
{
	if (ptrace(PTRACE_SETREGS, c->tid, 0, &c->regs) < 0) {
		c->regs_valid = false;
		return -errno;
	}
	return 0;
}

/* The stub's fault handler stopped at its `syscall`: the CPU's trap
 * number, error code and address are in the ucontext it was given. */
static int decode_fault(struct vcpu *v, struct vexit *e)
{
	struct pt_vcpu *c = PC(v);
	uint64_t g[G_N];
	struct iovec l = { g, sizeof(g) };
	struct iovec r = { (void *)(uintptr_t)(c->regs.rdx + UC_GREGS), sizeof(g) };

	if (process_vm_readv(c->tid, &l, 1, &r, 1, 0) != (ssize_t)sizeof(g)) {
		vm_terminate(v->vm, 128 + (int)c->regs.rdi, true,
			     "guest fault: signal %d on vCPU %u; its report is unreadable",
			     (int)c->regs.rdi, v->id);
		e->kind = VEXIT_STOP;
		return 0;
	}
	unsigned vector = (unsigned)g[G_TRAPNO];
	*e = (struct vexit){
		.kind = VEXIT_FAULT, .vector = vector, .has_error_code = cpu_exc_has_error_code(vector),
		.error_code = g[G_ERR], .has_addr = vector == 14, .addr = g[G_CR2], .rip = g[G_RIP],
		.rsp = g[G_RSP], .ring = (unsigned)(g[G_CSGSFS] & 3),
	};
	/* Outside guest RAM (the stub's own pages included) the guest sees
	 * nothing mapped, as on KVM: a not-present fault. */
	if (vector == 14 && !gmem_is_ram(&v->vm->mem, e->addr, 1))
		e->error_code &= ~(uint64_t)CPU_PF_PRESENT;
	/* The system area is mapped there, for ring 0 only (here PROT_NONE):
	 * a present page. */
	else if (vector == 14 && e->addr >= 4096 && e->addr < FG_SYS_END)
		e->error_code |= CPU_PF_PRESENT;
	return 0;
}

/* A system call made from outside guest RAM (the guest jumped into the
 * stub's code): on KVM nothing is mapped there, so it is the instruction
 * fetch fault the guest would get there. */
static void fetch_fault(struct vcpu *v, struct vexit *e)
{
	struct pt_vcpu *c = PC(v);
	uint64_t rip = c->regs.rip - 2;

	*e = (struct vexit){
		.kind = VEXIT_FAULT, .vector = 14, .has_error_code = true,
		.error_code = CPU_PF_USER | CPU_PF_FETCH, .has_addr = true, .addr = rip, .rip = rip,
		.rsp = c->regs.rsp, .ring = 3,
	};
}

static bool fault_signal(int sig)
{
	return sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGTRAP;
}

static int pt_vcpu_run(struct vcpu *v, struct vexit *e)
{
	struct pt_vcpu *c = PC(v);

	for (;;) {
		int st, rc;

		/* A kick sent after this check is a pending signal: the thread
		 * stops as soon as it resumes. */
		if (vcpu_must_yield(v)) {
			e->kind = VEXIT_KICK;
			return 0;
		}
		bind_to_tracer(c);
		int sig = c->pending_sig;
		c->pending_sig = 0;
		c->fault_sent = sig != 0;
		c->regs_valid = false;
		c->at_syscall = false;
		if (ptrace(PTRACE_SYSEMU, c->tid, 0, sig) < 0)
			return -errno;
		c->stopped = false;
		rc = wait_stopped(c->tid, &st);
		if (rc < 0)
			return rc;
		if (!WIFSTOPPED(st)) {
			if (!vcpu_must_yield(v))
				vm_terminate(v->vm, 1, true, "the stub process of vCPU %u ended: %s %d",
					     v->id, WIFSIGNALED(st) ? "killed by signal" : "exit status",
					     WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
			e->kind = VEXIT_STOP;
			return 0;
		}
		c->stopped = true;
		sig = WSTOPSIG(st);
		if (sig == (SIGTRAP | 0x80)) {
			if ((rc = regs_now(c)) < 0)
				return rc;
			bool sent = c->fault_sent;
			c->fault_sent = false;
			if (sent && c->regs.orig_rax == STUB_FAULT_NR && c->regs.rip >= STUB_BASE &&
			    c->regs.rip < PT_STUB_TEXT_END)
				return decode_fault(v, e);
			if (!gmem_is_ram(&v->vm->mem, c->regs.rip - 2, 2)) {
				fetch_fault(v, e);
				return 0;
			}
			c->at_syscall = true;
			e->kind = VEXIT_SYSCALL;
			return 0;
		}
		if (st >> 16) { /* an event stop (interrupt, group stop) */
			e->kind = VEXIT_KICK;
			return 0;
		}
		if (sig == PT_KICK_SIGNAL) {
			e->kind = VEXIT_KICK;
			return 0;
		}
		if (fault_signal(sig))
			c->pending_sig = sig; /* to the stub's handler, which reports it */
		/* any other signal (from outside) is not the guest's: dropped */
	}
}

/* ------------------------------------------------------------ registers */

static int pt_get_regs(struct vcpu *v, struct vregs *o)
{
	struct pt_vcpu *c = PC(v);
	int rc = regs_now(c);

	if (rc < 0)
		return rc;
	const struct user_regs_struct *r = &c->regs;
	*o = (struct vregs){
		.rax = c->at_syscall ? r->orig_rax : r->rax, .rbx = r->rbx, .rcx = r->rcx,
		.rdx = r->rdx, .rsi = r->rsi, .rdi = r->rdi, .rsp = r->rsp, .rbp = r->rbp,
		.r8 = r->r8, .r9 = r->r9, .r10 = r->r10, .r11 = r->r11, .r12 = r->r12,
		.r13 = r->r13, .r14 = r->r14, .r15 = r->r15, .rip = r->rip, .rflags = r->eflags,
	};
	return 0;
}

static int pt_set_regs(struct vcpu *v, const struct vregs *n)
{
	struct pt_vcpu *c = PC(v);
	int rc = regs_now(c);

	if (rc < 0)
		return rc;
	struct user_regs_struct *r = &c->regs;
	r->rax = n->rax, r->rbx = n->rbx, r->rcx = n->rcx, r->rdx = n->rdx;
	r->rsi = n->rsi, r->rdi = n->rdi, r->rsp = n->rsp, r->rbp = n->rbp;
	r->r8 = n->r8, r->r9 = n->r9, r->r10 = n->r10, r->r11 = n->r11;
	r->r12 = n->r12, r->r13 = n->r13, r->r14 = n->r14, r->r15 = n->r15;
	r->rip = n->rip;
	/* A process's user mode always has interrupts on. */
	r->eflags = (n->rflags & CPU_RFLAGS_USER_MASK) | CPU_RFLAGS_FIXED | CPU_RFLAGS_IF;
	r->orig_rax = (unsigned long long)-1; /* no system call to restart */
	c->at_syscall = false;
	return regs_put(c);
}

static int pt_set_tls(struct vcpu *v, uint64_t fs_base, uint64_t gs_base)
{
	struct pt_vcpu *c = PC(v);
	int rc = regs_now(c);

	if (rc < 0)
		return rc;
	c->regs.fs_base = fs_base;
	c->regs.gs_base = gs_base;
	return regs_put(c);
}

static int pt_syscall_return(struct vcpu *v, uint64_t ret)
{
	struct pt_vcpu *c = PC(v);
	int rc = regs_now(c);

	if (rc < 0)
		return rc;
	/* SYSEMU skips the call itself: the thread resumes after it with rax. */
	c->regs.rax = ret;
	c->regs.orig_rax = (unsigned long long)-1;
	c->at_syscall = false;
	return regs_put(c);
}

static int pt_get_xstate(struct vcpu *v, void *buf, size_t *len, uint64_t *xcr0)
{
	struct pt_vcpu *c = PC(v);
	struct iovec iov = { buf, PLATFORM_XSAVE_MAX };

	if (ptrace(PTRACE_GETREGSET, c->tid, NT_X86_XSTATE, &iov) < 0)
		return -errno;
	*len = iov.iov_len;
	memcpy(xcr0, (uint8_t *)buf + XSAVE_SW_XFEATURES, 8);
	return 0;
}

static int pt_set_xstate(struct vcpu *v, const void *buf, size_t len)
{
	struct pt_vcpu *c = PC(v);
	uint8_t *cur = malloc(PLATFORM_XSAVE_MAX);
	struct iovec iov = { cur, PLATFORM_XSAVE_MAX };
	uint64_t xcr0, bv;
	int rc = 0;

	if (!cur)
		return -ENOMEM;
	if (len < XSAVE_BV_OFFSET + 64 || ptrace(PTRACE_GETREGSET, c->tid, NT_X86_XSTATE, &iov) < 0) {
		rc = len < XSAVE_BV_OFFSET + 64 ? -EINVAL : -errno;
		goto out;
	}
	/* The saved area over this thread's, keeping this kernel's own words
	 * (fx_sw_bytes) and only the components this CPU has. */
	memcpy(&xcr0, cur + XSAVE_SW_XFEATURES, 8);
	uint8_t sw[48];
	memcpy(sw, cur + XSAVE_SW_OFFSET, sizeof(sw));
	memcpy(cur, buf, MIN(len, iov.iov_len));
	memcpy(cur + XSAVE_SW_OFFSET, sw, sizeof(sw));
	memcpy(&bv, cur + XSAVE_BV_OFFSET, 8);
	bv &= xcr0;
	memcpy(cur + XSAVE_BV_OFFSET, &bv, 8);
	memset(cur + XSAVE_XCOMP_BV_OFFSET, 0, 8);
	if (ptrace(PTRACE_SETREGSET, c->tid, NT_X86_XSTATE, &iov) < 0)
		rc = -errno;
out:
	free(cur);
	return rc;
}

/* ------------------------------------------------------------ memory */

/* Makes the stub thread c run one system call of the stub's own at the
 * gadget (c is stopped and traced by this thread); its registers are put
 * back afterwards. Returns the call's result or -errno. */
static long stub_call(struct pt_vm *p, struct pt_vcpu *c, long nr, const long a[6])
{
	struct user_regs_struct saved, r;
	int st, rc = regs_now(c);

	if (rc < 0)
		return rc;
	saved = c->regs;
	r = saved;
	r.rip = p->gadget;
	r.rax = (unsigned long long)nr;
	r.orig_rax = (unsigned long long)-1;
	r.rdi = (unsigned long long)a[0], r.rsi = (unsigned long long)a[1];
	r.rdx = (unsigned long long)a[2], r.r10 = (unsigned long long)a[3];
	r.r8 = (unsigned long long)a[4], r.r9 = (unsigned long long)a[5];
	if (ptrace(PTRACE_SETREGS, c->tid, 0, &r) < 0)
		return -errno;
	for (;;) {
		if (ptrace(PTRACE_CONT, c->tid, 0, 0) < 0)
			return -errno;
		if ((rc = wait_stopped(c->tid, &st)) < 0)
			return rc;
		if (!WIFSTOPPED(st))
			return -ESRCH;
		if (WSTOPSIG(st) == SIGTRAP && !(st >> 16))
			break; /* the int3 after the call */
		/* a kick or a signal from outside: not for now */
	}
	if (ptrace(PTRACE_GETREGS, c->tid, 0, &r) < 0)
		return -errno;
	long ret = (long)r.rax;
	c->regs = saved;
	if ((rc = regs_put(c)) < 0)
		return rc;
	return ret;
}

/* gmem's remote discard: [gpa, gpa+len) becomes fresh zero pages in the
 * stub, mapped by the stub thread of the vCPU serving this system call
 * (the calling thread traces it). */
static int pt_discard(void *arg, uint64_t gpa, uint64_t len)
{
	struct vm *vm = arg;
	pthread_t self = pthread_self();

	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct pt_vcpu *c = vm->vcpus[i].p;
		if (!c || !c->attached || !c->stopped || !pthread_equal(c->tracer, self))
			continue;
		const long a[6] = { (long)gpa, (long)len, PROT_READ | PROT_WRITE | PROT_EXEC,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0 };
		long r = stub_call(PV(vm), c, SYS_mmap, a);
		if (r < 0 && r > -4096)
			return (int)r;
		return r == (long)gpa ? 0 : -EIO;
	}
	return -EPERM; /* only a vCPU thread can reach its stub thread */
}

/* ------------------------------------------------------------ seccomp */

/* The VMM thread: starting the stub (vfork, execveat of a memfd, the
 * parent-death signal in the child), reading and writing its memory,
 * reaping it. The stub runs under this filter too (filters are inherited):
 * it maps guest RAM executable, at fixed addresses below 1 TiB only. */
static const struct sc_rule pt_sc_vmm[] = {
	SC_ALLOW(vfork), SC_EQ(execveat, 4, AT_EMPTY_PATH), SC_EQ(prctl, 0, PR_SET_PDEATHSIG),
	SC_EQ(prctl, 0, PR_SET_SPECULATION_CTRL),
	SC_ALLOW(dup2), SC_ALLOW(pipe2), SC_ALLOW(wait4), SC_ALLOW(waitid), SC_ALLOW(kill),
	SC_ALLOW(ptrace), SC_ALLOW(process_vm_readv), SC_ALLOW(close_range),
	SC_ALLOW(sched_setaffinity), SC_ALLOW(getcpu),
	{ .nr = SCMP_SYS(mmap), .nargs = 2,
	  .arg = { { .arg = 0, .op = SCMP_CMP_LT, .datum_a = 1ULL << 40 },
		   { .arg = 3, .op = SCMP_CMP_MASKED_EQ, .datum_a = MAP_FIXED, .datum_b = MAP_FIXED } } },
};

/* A vCPU thread: trace its stub thread, reach the stub's memory. */
static const struct sc_rule pt_sc_vcpu[] = {
	SC_ALLOW(ptrace), SC_ALLOW(wait4), SC_ALLOW(tgkill), SC_ALLOW(process_vm_readv),
	SC_ALLOW(pread64), SC_ALLOW(pwrite64), SC_ALLOW(sched_setaffinity), SC_ALLOW(getcpu),
};

const struct platform platform_process = {
	.name = "process",
	.probe = pt_probe,
	.vm_create = pt_vm_create,
	.vm_destroy = pt_vm_destroy,
	.fguest_setup = pt_fguest_setup,
	.hwcap = pt_hwcap,
	.xfeatures = pt_xfeatures,
	.vcpu_create = pt_vcpu_create,
	.vcpu_enter = pt_vcpu_enter,
	.vcpu_run = pt_vcpu_run,
	.vcpu_kick = pt_vcpu_kick,
	.get_regs = pt_get_regs,
	.set_regs = pt_set_regs,
	.set_tls = pt_set_tls,
	.syscall_return = pt_syscall_return,
	.get_xstate = pt_get_xstate,
	.set_xstate = pt_set_xstate,
	.sc_vmm = pt_sc_vmm,
	.nr_sc_vmm = sizeof(pt_sc_vmm) / sizeof(pt_sc_vmm[0]),
	.sc_vcpu = pt_sc_vcpu,
	.nr_sc_vcpu = sizeof(pt_sc_vcpu) / sizeof(pt_sc_vcpu[0]),
	.jail_device = NULL,
};
