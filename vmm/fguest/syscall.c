/* vmm/fguest/syscall.c - the function-guest ABI object, system call
 * dispatch, and the two trampoline devices on the port bus: the syscall
 * port and the exception ports. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "common/log.h"
#include "vmm/fguest/fguest.h"
#include "vmm/kvmio.h"
#include "vmm/vm.h"

int fguest_create(struct vm *vm, struct fguest **out)
{
	struct fguest *fg = calloc(1, sizeof(*fg));
	int rc;

	if (!fg)
		return -ENOMEM;
	fg->vm = vm;
	rc = fg_mm_init(&fg->mm, X86_SYS_END, vm->mem.gpa_end);
	if (rc < 0) {
		free(fg);
		return rc;
	}
	if (vm->cfg.agent_socket) {
		fg->fds[0].kind = FG_FD_AGENT;
		fg->fds[1].kind = FG_FD_AGENT;
	} else {
		fg->fds[0].kind = FG_FD_NULL;
		fg->fds[1].kind = FG_FD_CONSOLE;
	}
	fg->fds[2].kind = FG_FD_CONSOLE;
	fg->next_tid = FG_FIRST_TID + 1;
	*out = fg;
	return 0;
}

void fguest_destroy(struct fguest *fg)
{
	if (!fg)
		return;
	fg_mm_fini(&fg->mm);
	free(fg);
}

static const char *syscall_name(uint64_t nr)
{
	static const struct {
		uint16_t nr;
		const char *name;
	} names[] = {
		{ SYS_open, "open" }, { SYS_openat, "openat" }, { SYS_stat, "stat" },
		{ SYS_lstat, "lstat" }, { SYS_newfstatat, "newfstatat" }, { SYS_statx, "statx" },
		{ SYS_poll, "poll" }, { SYS_ppoll, "ppoll" }, { SYS_select, "select" },
		{ SYS_pselect6, "pselect6" }, { SYS_epoll_wait, "epoll_wait" },
		{ SYS_rt_sigaction, "rt_sigaction" }, { SYS_sigaltstack, "sigaltstack" },
		{ SYS_pread64, "pread64" }, { SYS_pwrite64, "pwrite64" }, { SYS_access, "access" },
		{ SYS_pipe, "pipe" }, { SYS_pipe2, "pipe2" }, { SYS_socket, "socket" },
		{ SYS_connect, "connect" }, { SYS_fork, "fork" }, { SYS_vfork, "vfork" },
		{ SYS_execve, "execve" }, { SYS_wait4, "wait4" }, { SYS_getcwd, "getcwd" },
		{ SYS_chdir, "chdir" }, { SYS_readlink, "readlink" }, { SYS_getrlimit, "getrlimit" },
		{ SYS_prlimit64, "prlimit64" }, { SYS_getrusage, "getrusage" },
		{ SYS_membarrier, "membarrier" }, { SYS_clone3, "clone3" }, { SYS_prctl, "prctl" },
		{ SYS_rt_sigreturn, "rt_sigreturn" }, { SYS_mlock, "mlock" }, { SYS_msync, "msync" },
		{ SYS_rseq, "rseq" }, { SYS_getdents64, "getdents64" }, { SYS_timer_create, "timer_create" },
		{ SYS_setitimer, "setitimer" }, { SYS_alarm, "alarm" }, { SYS_eventfd2, "eventfd2" },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].nr == nr)
			return names[i].name;
	return "?";
}

long fg_syscall(struct fg_call *c)
{
	long (*const groups[])(struct fg_call *, bool *) = {
		fg_sys_io, fg_sys_mm, fg_sys_time, fg_sys_thread, fg_sys_misc,
	};
	bool handled = false;
	long ret = -ENOSYS;

	if (__atomic_add_fetch(&c->vm->syscalls, 1, __ATOMIC_RELAXED) == 1)
		log_debug("first system call served at guest time %.2f ms",
			  vm_guest_now(c->vm) / 1e6);
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]) && !handled; i++)
		ret = groups[i](c, &handled);
	if (!handled) {
		uint64_t bit = MIN(c->nr, 511);
		__atomic_add_fetch(&c->vm->syscalls_enosys, 1, __ATOMIC_RELAXED);
		if (!(c->fg->enosys_seen[bit / 64] & (1ULL << (bit % 64)))) {
			c->fg->enosys_seen[bit / 64] |= 1ULL << (bit % 64);
			log_warn("guest system call %llu (%s) is not supported: returning -ENOSYS "
				 "(logged once)",
				 (unsigned long long)c->nr, syscall_name(c->nr));
		}
		ret = -ENOSYS;
	}
	log_trace("thread %d: syscall %llu (%s)(0x%llx, 0x%llx, 0x%llx, 0x%llx) = %ld",
			  c->t ? c->t->tid : 0, (unsigned long long)c->nr, syscall_name(c->nr),
			  (unsigned long long)c->a[0], (unsigned long long)c->a[1],
			  (unsigned long long)c->a[2], (unsigned long long)c->a[3], ret);
	return ret;
}

/* ------------------------------------------------------------ devices */

static enum vcpu_action syscall_io(void *dev, struct vcpu *v, uint64_t offset, void *data,
				   unsigned len, bool is_write)
{
	struct fguest *fg = dev;
	struct vm *vm = v->vm;
	struct kvm_regs *r = vcpu_regs(v);
	bool stopping;
	long ret;

	(void)offset;
	(void)data;
	(void)len;
	if (!r || !is_write) {
		vm_terminate(vm, 128 + SIGSEGV, true, "guest read the system call port (vCPU %u)", v->id);
		return VCPU_STOP;
	}
	struct fg_call c = {
		.fg = fg, .vm = vm, .v = v, .nr = r->rax,
		.a = { r->rdi, r->rsi, r->rdx, r->r10, r->r8, r->r9 },
		.rip = r->rcx, .rflags = r->r11, .rsp = r->rsp, .regs = r,
	};

	pthread_mutex_lock(&vm->lock);
	c.t = v->gt;
	if (!c.t) {
		vm_terminate_locked(vm, 128 + SIGSEGV, true,
				    "system call on vCPU %u, which runs no guest thread", v->id);
		pthread_mutex_unlock(&vm->lock);
		return VCPU_STOP;
	}
	v->in_syscall = true;
	/* A snapshot taken while this call blocks restarts the vCPU on the
	 * trampoline's `out`: the call is replayed after restore. */
	v->restart_rip = X86_TRAMP_SYSCALL;
	ret = fg_syscall(&c);
	v->in_syscall = false;
	v->restart_rip = 0;
	v->sys_deadline = 0;
	stopping = __atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&vm->lock);

	if (stopping)
		return VCPU_STOP;
	if (c.no_return)
		return VCPU_THREAD_EXIT;
	uint64_t frame = x86_write_iret_frame(&vm->mem, v->id, c.rip, c.rflags, c.rsp);
	if (!frame) {
		vm_terminate(vm, 1, true, "cannot write the return frame of vCPU %u", v->id);
		return VCPU_STOP;
	}
	/* Past the `out`, explicitly: KVM's own skip of a completed port I/O
	 * (VT-x) sees the changed rip and stands down, PVM has already moved
	 * there; either way the saved state is unambiguous. */
	r->rip = X86_TRAMP_SYSCALL + 2;
	r->rsp = frame;
	r->rax = (uint64_t)ret;
	vcpu_regs_dirty(v);
	return VCPU_CONTINUE;
}

static int exc_signal(unsigned v)
{
	switch (v) {
	case 0:
	case 16:
	case 19:
		return SIGFPE;
	case 1:
	case 3:
		return SIGTRAP;
	case 6:
		return SIGILL;
	case 11:
	case 12:
	case 17:
		return SIGBUS;
	default:
		return SIGSEGV;
	}
}

static enum vcpu_action exc_io(void *dev, struct vcpu *v, uint64_t offset, void *data,
			       unsigned len, bool is_write)
{
	struct fguest *fg = dev;
	struct vm *vm = v->vm;
	unsigned vector = (unsigned)offset;
	struct kvm_regs *r = vcpu_regs(v);
	struct x86_exc_frame f = { 0 };
	char detail[160] = "";
	uint64_t cr2 = 0;
	int tid = 0;

	(void)data;
	(void)len;
	(void)is_write;
	if (!r || x86_read_exc_frame(&vm->mem, r->rsp, vector, &f) < 0) {
		vm_terminate(vm, 128 + SIGSEGV, true,
			     "guest fault: %s (vector %u) on vCPU %u; exception frame unreadable",
			     x86_exc_name(vector), vector, v->id);
		return VCPU_STOP;
	}
	if (vector == 14) {
		struct kvm_sregs s;
		if (v->fd >= 0 && kvm_ioctl(v->fd, KVM_GET_SREGS, &s) == 0)
			cr2 = s.cr2;
		else if (v->fd < 0)
			cr2 = v->run->s.regs.sregs.cr2;
		snprintf(detail, sizeof(detail), ", address 0x%llx (%s %s, %s)",
			 (unsigned long long)cr2,
			 f.error_code & 16 ? "instruction fetch" : f.error_code & 2 ? "write" : "read",
			 f.error_code & 1 ? "protection violation" : "not present",
			 f.error_code & 4 ? "user mode" : "kernel mode");
	} else if (x86_exc_has_error_code(vector)) {
		snprintf(detail, sizeof(detail), ", error code 0x%llx",
			 (unsigned long long)f.error_code);
	}
	pthread_mutex_lock(&vm->lock);
	if (v->gt)
		tid = v->gt->tid;
	vm_terminate_locked(vm, 128 + exc_signal(vector), true,
			    "guest fault: %s (vector %u) at rip 0x%llx%s; rsp 0x%llx, ring %llu, "
			    "vCPU %u, thread %d",
			    x86_exc_name(vector), vector, (unsigned long long)f.rip, detail,
			    (unsigned long long)f.rsp, (unsigned long long)(f.cs & 3), v->id, tid);
	pthread_mutex_unlock(&vm->lock);
	(void)fg;
	return VCPU_STOP;
}

int fguest_register_devices(struct vm *vm)
{
	int rc = bus_register(&vm->pio, X86_PORT_EXC_BASE, X86_NR_EXC, "fguest-exceptions", exc_io,
			      vm->fg);
	if (rc < 0)
		return rc;
	return bus_register(&vm->pio, X86_PORT_SYSCALL, 1, "fguest-syscall", syscall_io, vm->fg);
}
