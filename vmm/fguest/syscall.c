/* vmm/fguest/syscall.c - the function-guest ABI object, system call
 * dispatch, and the vCPU loop's handlers of a guest thread's exits: a
 * system call, a fatal exception. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#include "common/log.h"
#include "vmm/cpu.h"
#include "vmm/fguest/fguest.h"
#include "vmm/vm.h"

int fguest_create(struct vm *vm, struct fguest **out)
{
	struct fguest *fg = calloc(1, sizeof(*fg));
	int rc;

	if (!fg)
		return -ENOMEM;
	fg->vm = vm;
	rc = fg_mm_init(&fg->mm, FG_SYS_END, vm->mem.gpa_end);
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

/* ------------------------------------------------------------ exits */

enum vcpu_action fguest_exit_syscall(struct vcpu *v)
{
	struct vm *vm = v->vm;
	struct vregs r;
	bool stopping;
	long ret;

	int rc = vm->plat->get_regs(v, &r);
	if (rc < 0) {
		vm_terminate(vm, 1, true, "cannot read the registers of vCPU %u: %s", v->id,
			     strerror(-rc));
		return VCPU_STOP;
	}
	struct fg_call c = {
		.fg = vm->fg, .vm = vm, .v = v, .nr = r.rax,
		.a = { r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9 }, .regs = &r,
	};

	pthread_mutex_lock(&vm->lock);
	c.t = v->gt;
	if (!c.t || !c.fg) {
		vm_terminate_locked(vm, 128 + SIGSEGV, true,
				    "system call on vCPU %u, which runs no guest thread", v->id);
		pthread_mutex_unlock(&vm->lock);
		return VCPU_STOP;
	}
	/* A snapshot taken while this call blocks records the thread at its
	 * `syscall` instruction: the call is made again after a restore. */
	v->in_syscall = true;
	v->sys_regs = r;
	ret = fg_syscall(&c);
	v->in_syscall = false;
	v->sys_deadline = 0;
	stopping = __atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&vm->lock);

	if (stopping)
		return VCPU_STOP;
	if (c.no_return)
		return VCPU_THREAD_EXIT;
	rc = vm->plat->syscall_return(v, (uint64_t)ret);
	if (rc < 0) {
		vm_terminate(vm, 1, true, "cannot return from a system call on vCPU %u: %s", v->id,
			     strerror(-rc));
		return VCPU_STOP;
	}
	return VCPU_CONTINUE;
}

enum vcpu_action fguest_exit_fault(struct vcpu *v, const struct vexit *e)
{
	struct vm *vm = v->vm;
	char detail[160] = "";
	int tid = 0;

	if (e->vector == 14 && e->has_addr) {
		if (e->has_error_code)
			snprintf(detail, sizeof(detail), ", address 0x%llx (%s %s, %s)",
				 (unsigned long long)e->addr,
				 e->error_code & 16 ? "instruction fetch" :
				 e->error_code & 2  ? "write" :
						      "read",
				 e->error_code & 1 ? "protection violation" : "not present",
				 e->error_code & 4 ? "user mode" : "kernel mode");
		else
			snprintf(detail, sizeof(detail), ", address 0x%llx",
				 (unsigned long long)e->addr);
	} else if (e->has_error_code && cpu_exc_has_error_code(e->vector)) {
		snprintf(detail, sizeof(detail), ", error code 0x%llx",
			 (unsigned long long)e->error_code);
	}
	pthread_mutex_lock(&vm->lock);
	if (v->gt)
		tid = v->gt->tid;
	vm_terminate_locked(vm, 128 + cpu_exc_signal(e->vector), true,
			    "guest fault: %s (vector %u) at rip 0x%llx%s; rsp 0x%llx, ring %u, "
			    "vCPU %u, thread %d",
			    cpu_exc_name(e->vector), e->vector, (unsigned long long)e->rip, detail,
			    (unsigned long long)e->rsp, e->ring, v->id, tid);
	pthread_mutex_unlock(&vm->lock);
	return VCPU_STOP;
}
