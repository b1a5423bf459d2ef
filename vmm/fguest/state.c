/* vmm/fguest/state.c - the function-guest ABI as a state unit ("fguest"):
 * memory map, file descriptors, threads, the vCPUs they run on and their
 * registers (general, XSAVE area, FS/GS base). The unit is the same on
 * every platform, so a snapshot taken on one restores on the other. Futex
 * waiters and blocking calls need no state of their own: a thread inside a
 * call is saved at its `syscall` instruction with the call's number, so the
 * call (and its wait, with its deadline) is made again after restore. Also
 * the identity page: written at boot, bumped at every restore. */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "vmm/fguest/fguest.h"
#include "vmm/idpage.h"
#include "vmm/state.h"
#include "vmm/vm.h"

/* 2: threads carry their registers (1 left them to KVM's vcpuN units) */
#define FG_STATE_VERSION 2

/* ------------------------------------------------------------ identity */

/* The identity page at FG_IDENTITY_PAGE (vmm/idpage.c; guest memory,
 * maybe another process's). */
int fg_identity_write(struct vm *vm, bool restored)
{
	return idpage_write(&vm->mem, FG_IDENTITY_PAGE, restored);
}

int fg_identity_set_clone(struct vm *vm, const char *clone_id)
{
	return idpage_set_clone(&vm->mem, FG_IDENTITY_PAGE, clone_id);
}

uint64_t fg_identity_generation(struct vm *vm)
{
	return idpage_generation(&vm->mem, FG_IDENTITY_PAGE);
}

/* ------------------------------------------------------------ save */

static const char *const reg_names[18] = {
	"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9",
	"r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
};

static uint64_t *reg_slot(struct vregs *r, size_t i)
{
	uint64_t *slots[18] = {
		&r->rax, &r->rbx, &r->rcx, &r->rdx, &r->rsi, &r->rdi, &r->rsp, &r->rbp, &r->r8,
		&r->r9, &r->r10, &r->r11, &r->r12, &r->r13, &r->r14, &r->r15, &r->rip, &r->rflags,
	};
	return slots[i];
}

static json_t *regs_json(const struct vregs *r)
{
	struct vregs c = *r;
	json_t *j = json_object();
	for (size_t i = 0; j && i < 18; i++)
		json_object_set_new(j, reg_names[i], state_json_u64(*reg_slot(&c, i)));
	return j;
}

static int regs_from_json(const json_t *j, struct vregs *r, char *err, size_t errlen)
{
	if (!json_is_object(j))
		return err_fail(err, errlen, -EINVAL, "regs must be an object");
	for (size_t i = 0; i < 18; i++)
		if (state_get_u64(j, reg_names[i], reg_slot(r, i), err, errlen) < 0)
			return -EINVAL;
	if (r->rip >= (1ULL << 47) || r->rsp >= (1ULL << 47))
		return err_fail(err, errlen, -EINVAL, "regs: rip or rsp is not a user address");
	return 0;
}

static json_t *u64s(const uint64_t *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, state_json_u64(v[i]));
	return a;
}

static int fg_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	struct fguest *fg = arg;
	json_t *vmas = json_array(), *fds = json_array(), *threads = json_array(),
	       *waiters = json_array(), *in_calls = json_array();

	(void)vm;
	pthread_mutex_lock(&fg->vm->lock);
	for (size_t i = 0; i < fg->mm.nr; i++) {
		const struct fg_vma *v = &fg->mm.v[i];
		if (v->kind == FG_VMA_RESERVED)
			continue; /* rebuilt from the memory layout */
		json_array_append_new(vmas, json_pack("[o,o,I,I]", state_json_u64(v->start), state_json_u64(v->end),
						      (json_int_t)v->prot, (json_int_t)v->kind));
	}
	for (int i = 0; i < FG_MAX_FDS; i++) {
		const struct fg_fd *f = &fg->fds[i];
		if (f->kind != FG_FD_CLOSED)
			json_array_append_new(fds, json_pack("[i,i,b,b]", i, f->kind, f->nonblock,
							     f->cloexec));
	}
	for (unsigned i = 0; i < fg->vm->nr_vcpus; i++) {
		const struct fg_thread *t = &fg->threads[i];
		const struct vcpu *v = &fg->vm->vcpus[i];
		json_t *regs, *th;
		if (!t->live)
			continue;
		if (v->saved_valid)
			regs = regs_json(&v->saved_regs);
		else if (v->start_pending)
			regs = regs_json(&v->start.regs);
		else
			regs = NULL;
		if (!regs) {
			pthread_mutex_unlock(&fg->vm->lock);
			json_decref(vmas), json_decref(fds), json_decref(threads);
			json_decref(waiters), json_decref(in_calls);
			snprintf(err, errlen, "the registers of thread %d on vCPU %u were not saved", t->tid,
				 i);
			return -EIO;
		}
		th = json_pack("{s:I,s:i,s:o,s:o,s:o,s:o,s:o,s:o}", "vcpu", (json_int_t)i, "tid", t->tid,
			       "clear_child_tid", state_json_u64(t->clear_child_tid), "sigmask",
			       state_json_u64(t->sigmask), "fs_base", state_json_u64(t->fs_base), "gs_base",
			       state_json_u64(t->gs_base), "regs", regs, "restart_deadline_ns",
			       state_json_u64(v->in_syscall ? v->sys_deadline : 0));
		if (th && v->saved_valid)
			json_object_set_new(th, "xsave",
					    json_pack("{s:o,s:o}", "xcr0", state_json_u64(v->saved_xcr0),
						      "area", state_json_blob(v->saved_xstate,
									v->saved_xstate_len)));
		json_array_append_new(threads, th);
		if (v->in_syscall)
			json_array_append_new(in_calls, json_integer(i));
	}
	for (const struct fg_futex_waiter *w = fg->waiters; w; w = w->next)
		json_array_append_new(waiters, json_pack("[o,I]", state_json_u64(w->uaddr), (json_int_t)w->bitset));
	*out = json_pack("{s:{s:o,s:o,s:o,s:o,s:o,s:o},s:o,s:o,s:i,s:o,s:o,s:o,s:o,s:o,s:o}", "mm",
			 "user_start", state_json_u64(fg->mm.user_start), "user_end",
			 state_json_u64(fg->mm.user_end), "mmap_top", state_json_u64(fg->mm.mmap_top),
			 "brk_start", state_json_u64(fg->mm.brk_start), "brk_cur", state_json_u64(fg->mm.brk_cur),
			 "vmas", vmas, "fds", fds, "threads", threads, "next_tid", fg->next_tid, "entry",
			 state_json_u64(fg->entry), "stack_top", state_json_u64(fg->stack_top), "auxv_random",
			 state_json_u64(fg->auxv_random), "enosys_seen",
			 u64s(fg->enosys_seen, sizeof(fg->enosys_seen) / sizeof(fg->enosys_seen[0])),
			 "futex_waiters", waiters, "vcpus_in_syscall", in_calls);
	pthread_mutex_unlock(&fg->vm->lock);
	if (!*out) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* ------------------------------------------------------------ restore */

static int get_pair_u64(const json_t *a, size_t i, uint64_t *v)
{
	return state_parse_u64(json_array_get(a, i), v);
}

static int restore_mm(struct fguest *fg, const json_t *mm, char *err, size_t errlen)
{
	struct fg_mm *m = &fg->mm;
	uint64_t us, ue;
	const json_t *vmas = json_object_get(mm, "vmas");

	if (state_get_u64(mm, "user_start", &us, err, errlen) < 0 ||
	    state_get_u64(mm, "user_end", &ue, err, errlen) < 0)
		return -EINVAL;
	if (us != m->user_start || ue != m->user_end)
		return err_fail(err, errlen, -EINVAL, "memory layout [0x%" PRIx64 ", 0x%" PRIx64
				       ") does not match this VM's memory",
			    us, ue);
	if (state_get_u64(mm, "mmap_top", &m->mmap_top, err, errlen) < 0 ||
	    state_get_u64(mm, "brk_start", &m->brk_start, err, errlen) < 0 ||
	    state_get_u64(mm, "brk_cur", &m->brk_cur, err, errlen) < 0)
		return -EINVAL;
	if (!json_is_array(vmas))
		return err_fail(err, errlen, -EINVAL, "mm.vmas must be an array");
	for (size_t i = 0; i < json_array_size(vmas); i++) {
		const json_t *e = json_array_get(vmas, i);
		uint64_t start, end, prot, kind;
		if (get_pair_u64(e, 0, &start) || get_pair_u64(e, 1, &end) ||
		    get_pair_u64(e, 2, &prot) || get_pair_u64(e, 3, &kind))
			return err_fail(err, errlen, -EINVAL, "mm.vmas[%zu] is malformed", i);
		if (kind == FG_VMA_RESERVED || kind > FG_VMA_MMAP || start < us || end > ue ||
		    !gmem_is_ram(&fg->vm->mem, start, end - start) || prot > 0xffff)
			return err_fail(err, errlen, -EINVAL, "mm.vmas[%zu] [0x%" PRIx64 ", 0x%" PRIx64
					       ") is not valid user memory",
				    i, start, end);
		int rc = fg_mm_insert(m, start, end, (uint32_t)prot, (uint32_t)kind);
		if (rc < 0)
			return err_fail(err, errlen, -EINVAL, "mm.vmas[%zu] overlaps another mapping or is misaligned",
				    i);
	}
	if (m->brk_cur < m->brk_start || m->brk_cur > ue || m->mmap_top > ue)
		return err_fail(err, errlen, -EINVAL, "brk or mmap_top out of range");
	return 0;
}

/* XSAVE components left out of the comparison: AMX (tile config and data)
 * needs arch_prctl(ARCH_REQ_XCOMP_PERM), which is not served, so no
 * function guest can use it; MPX (bounds registers and their
 * configuration) is deprecated (Linux dropped its support in 5.6, GCC in
 * 9) and its state is dropped where the restoring vCPUs lack it. */
#define XF_NEVER_USED ((1ULL << 3) | (1ULL << 4) | (1ULL << 17) | (1ULL << 18))

/* Names of the XSAVE components in mask, for messages. */
static void xfeature_names(uint64_t mask, char *buf, size_t len)
{
	static const char *const names[] = { "x87", "SSE", "AVX", "MPX bounds", "MPX CSR",
					     "AVX-512 opmask", "AVX-512 ZMM_Hi256",
					     "AVX-512 Hi16_ZMM", "PT", "PKRU" };
	size_t n = 0;
	buf[0] = '\0';
	for (unsigned b = 0; b < 64 && n < len; b++) {
		if (!(mask & (1ULL << b)))
			continue;
		int w = b < sizeof(names) / sizeof(names[0])
				? snprintf(buf + n, len - n, "%s%s", n ? ", " : "", names[b])
				: snprintf(buf + n, len - n, "%sbit %u", n ? ", " : "", b);
		if (w < 0)
			break;
		n += (size_t)w;
	}
}

/* A thread's saved XSAVE state fits this VM's vCPUs: every component its
 * guest could use (xcr0, what CPUID and XGETBV told it) exists here. A
 * guest that saw AVX uses it without asking again. */
static int check_xfeatures(struct vm *vm, size_t i, uint64_t xcr0, const uint8_t *area,
			   size_t len, char *err, size_t errlen)
{
	uint64_t have, bv = 0, lack;
	char names[256];

	if (!vm->plat || !vm->plat->xfeatures)
		return 0;
	have = vm->plat->xfeatures(vm);
	if (len >= 520)
		memcpy(&bv, area + 512, 8);
	lack = (xcr0 | bv) & ~have & ~XF_NEVER_USED;
	if (!lack)
		return 0;
	xfeature_names(lack, names, sizeof(names));
	return err_fail(err, errlen, -EINVAL, "threads[%zu]: the guest ran where it could use %s (XCR0 0x%" PRIx64
				 "), which this %s VM's vCPUs lack (XCR0 0x%" PRIx64
				 "): restore it where the CPU and platform offer them",
		    i, names, xcr0, vm->plat->name, have);
}

static int fg_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
		      size_t errlen)
{
	struct fguest *fg = arg;
	const json_t *fds = json_object_get(st, "fds"), *threads = json_object_get(st, "threads"),
		     *seen = json_object_get(st, "enosys_seen");
	int rc;

	(void)version;
	if (!json_is_array(fds) || !json_is_array(threads))
		return err_fail(err, errlen, -EINVAL, "fds and threads must be arrays");
	pthread_mutex_lock(&vm->lock);
	rc = restore_mm(fg, json_object_get(st, "mm"), err, errlen);
	if (rc < 0)
		goto out;
	if (state_get_u64(st, "entry", &fg->entry, err, errlen) < 0 ||
	    state_get_u64(st, "stack_top", &fg->stack_top, err, errlen) < 0 ||
	    state_get_u64(st, "auxv_random", &fg->auxv_random, err, errlen) < 0) {
		rc = -EINVAL;
		goto out;
	}
	const json_t *nt = json_object_get(st, "next_tid");
	if (!json_is_integer(nt) || json_integer_value(nt) < 2 || json_integer_value(nt) > INT32_MAX) {
		rc = err_fail(err, errlen, -EINVAL, "next_tid must be an integer >= 2");
		goto out;
	}
	fg->next_tid = (int)json_integer_value(nt);
	memset(fg->fds, 0, sizeof(fg->fds));
	for (size_t i = 0; i < json_array_size(fds); i++) {
		int fd, kind, nb, ce;
		if (json_unpack(json_array_get(fds, i), "[iibb]", &fd, &kind, &nb, &ce) < 0 || fd < 0 ||
		    fd >= FG_MAX_FDS || kind <= FG_FD_CLOSED || kind > FG_FD_NULL) {
			rc = err_fail(err, errlen, -EINVAL, "fds[%zu] is malformed", i);
			goto out;
		}
		fg->fds[fd] = (struct fg_fd){ .kind = (uint8_t)kind, .nonblock = nb, .cloexec = ce };
	}
	if (version < 2) {
		rc = err_fail(err, errlen, -EINVAL, "version %u of the fguest unit keeps thread registers in KVM "
				       "units this forkvm no longer reads: take the snapshot again",
			  version);
		goto out;
	}
	for (size_t i = 0; i < json_array_size(threads); i++) {
		const json_t *t = json_array_get(threads, i);
		uint32_t vc;
		struct fg_thread th = { .live = true };
		struct vcpu_start start = { 0 };
		uint64_t deadline = 0;
		const json_t *tid = json_object_get(t, "tid");
		const json_t *xs = json_object_get(t, "xsave");
		if (state_get_u32(t, "vcpu", &vc, err, errlen) < 0 ||
		    state_get_u64(t, "clear_child_tid", &th.clear_child_tid, err, errlen) < 0 ||
		    state_get_u64(t, "sigmask", &th.sigmask, err, errlen) < 0 ||
		    state_get_u64(t, "fs_base", &th.fs_base, err, errlen) < 0 ||
		    state_get_u64(t, "gs_base", &th.gs_base, err, errlen) < 0 || !json_is_integer(tid) ||
		    json_integer_value(tid) < 1 || json_integer_value(tid) >= fg->next_tid) {
			rc = err_fail(err, errlen, -EINVAL, "threads[%zu] is malformed", i);
			goto out;
		}
		if (vc >= vm->nr_vcpus || fg->threads[vc].live) {
			rc = err_fail(err, errlen, -EINVAL, "threads[%zu]: vCPU %u is not a free vCPU of this VM", i, vc);
			goto out;
		}
		if (regs_from_json(json_object_get(t, "regs"), &start.regs, err, errlen) < 0 ||
		    state_get_u64(t, "restart_deadline_ns", &deadline, err, errlen) < 0) {
			char why[256];
			snprintf(why, sizeof(why), "%s", err);
			rc = err_fail(err, errlen, -EINVAL, "threads[%zu]: %s", i, why);
			goto out;
		}
		if (xs) {
			uint64_t xcr0;
			start.xstate = NULL;
			if (state_get_u64(xs, "xcr0", &xcr0, err, errlen) < 0 ||
			    state_get_blob_any(xs, "area", PLATFORM_XSAVE_MAX, &start.xstate,
					       &start.xstate_len, err, errlen) < 0 ||
			    start.xstate_len < 576) {
				free(start.xstate);
				rc = err_fail(err, errlen, -EINVAL, "threads[%zu].xsave is malformed", i);
				goto out;
			}
			if ((rc = check_xfeatures(vm, i, xcr0, start.xstate, start.xstate_len, err,
						  errlen)) < 0) {
				free(start.xstate);
				goto out;
			}
			start.has_xstate = true;
		}
		th.tid = (int)json_integer_value(tid);
		for (unsigned k = 0; k < vm->nr_vcpus; k++) {
			if (fg->threads[k].live && fg->threads[k].tid == th.tid) {
				free(start.xstate);
				rc = err_fail(err, errlen, -EINVAL, "threads[%zu]: tid %d is used twice", i, th.tid);
				goto out;
			}
		}
		th.vcpu = &vm->vcpus[vc];
		fg->threads[vc] = th;
		struct vcpu *v = &vm->vcpus[vc];
		v->gt = &fg->threads[vc];
		start.fs_base = th.fs_base;
		start.gs_base = th.gs_base;
		free(v->start.xstate);
		v->start = start;
		v->start_pending = true;
		v->restore_deadline = deadline;
		fg->nr_live++;
	}
	for (size_t i = 0; json_is_array(seen) && i < json_array_size(seen) &&
			   i < sizeof(fg->enosys_seen) / sizeof(fg->enosys_seen[0]);
	     i++) {
		if (get_pair_u64(seen, i, &fg->enosys_seen[i]) < 0) {
			rc = err_fail(err, errlen, -EINVAL, "enosys_seen[%zu] is malformed", i);
			goto out;
		}
	}
	rc = 0;
out:
	pthread_mutex_unlock(&vm->lock);
	return rc;
}

size_t fguest_units(struct vm *vm, struct state_unit *u, size_t max)
{
	if (!max || !vm->fg)
		return 0;
	u[0] = (struct state_unit){ "fguest", FG_STATE_VERSION, fg_save, fg_restore, vm->fg };
	return 1;
}
