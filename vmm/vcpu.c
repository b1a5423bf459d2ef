/* vmm/vcpu.c - one thread per vCPU, the same on every platform: the run
 * loop (the platform runs the guest thread until its next exit, the
 * function guest serves it), kicking, parking for pause, and waits inside
 * system calls.
 *
 * Pause protocol: the pauser sets vm->pause_req, then kicks every vCPU
 * (vcpu_kick: the platform's kick, which stays armed until the vCPU next
 * enters the guest). A platform's vcpu_run arms its kick before it asks
 * vcpu_must_yield(), so either the vCPU sees the request or its next entry
 * into the guest returns at once. Parked vCPUs are counted in
 * vm->nr_parked. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/fguest/fguest.h"
#include "vmm/vm.h"

void vcpu_kick(struct vcpu *v)
{
	if (v->p)
		v->vm->plat->vcpu_kick(v);
}

static bool vm_stopping(struct vm *vm)
{
	return __atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST);
}

static bool vm_pause_requested(struct vm *vm)
{
	return __atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST);
}

bool vcpu_must_yield(struct vcpu *v)
{
	return vm_stopping(v->vm) || vm_pause_requested(v->vm);
}

void vcpu_state_free(struct vcpu *v)
{
	free(v->start.xstate);
	v->start.xstate = NULL;
	v->start.has_xstate = false;
	free(v->saved_xstate);
	v->saved_xstate = NULL;
	v->saved_valid = false;
}

/* Loads a new (or restored) guest thread's registers into the platform;
 * vm->lock held, on the vCPU's thread. */
static int vcpu_apply_start(struct vcpu *v)
{
	const struct platform *pl = v->vm->plat;
	int rc = pl->set_regs(v, &v->start.regs);

	if (rc == 0)
		rc = pl->set_tls(v, v->start.fs_base, v->start.gs_base);
	if (rc == 0 && v->start.has_xstate)
		rc = pl->set_xstate(v, v->start.xstate, v->start.xstate_len);
	if (rc < 0)
		return rc;
	free(v->start.xstate);
	v->start.xstate = NULL;
	v->start.has_xstate = false;
	v->start_pending = false;
	log_debug("vCPU %u: thread %d starts at rip 0x%llx rsp 0x%llx fs 0x%llx", v->id,
		  v->gt ? v->gt->tid : 0, (unsigned long long)v->start.regs.rip,
		  (unsigned long long)v->start.regs.rsp, (unsigned long long)v->start.fs_base);
	return 0;
}

/* A new guest thread's registers go into the platform before the vCPU
 * counts as parked: a paused VM's state is always complete. */
static void vcpu_apply_pending_locked(struct vcpu *v)
{
	if (!v->start_pending)
		return;
	int rc = vcpu_apply_start(v);
	if (rc < 0)
		vm_terminate_locked(v->vm, 1, true, "cannot start a thread on vCPU %u: %s", v->id,
				    strerror(-rc));
}

/* What a snapshot of the paused VM records of this vCPU's guest thread,
 * read on the vCPU's own thread (the only one a platform answers). A
 * thread inside a blocking system call is recorded at its `syscall`
 * instruction with the call's number: restored, it makes the call again. */
static void vcpu_save_locked(struct vcpu *v)
{
	const struct platform *pl = v->vm->plat;
	int rc;

	v->saved_valid = false;
	if (!v->gt || v->start_pending)
		return; /* idle, or its state is still the start state */
	if (!v->saved_xstate && !(v->saved_xstate = malloc(PLATFORM_XSAVE_MAX))) {
		log_error("vCPU %u: out of memory for its saved state", v->id);
		return;
	}
	if (v->in_syscall) {
		v->saved_regs = v->sys_regs;
		v->saved_regs.rip -= 2; /* syscall is 0f 05 */
		rc = 0;
	} else {
		rc = pl->get_regs(v, &v->saved_regs);
	}
	if (rc == 0)
		rc = pl->get_xstate(v, v->saved_xstate, &v->saved_xstate_len, &v->saved_xcr0);
	if (rc < 0) {
		log_error("vCPU %u: cannot read its registers for a snapshot: %s", v->id, strerror(-rc));
		return;
	}
	v->saved_valid = true;
}

/* Parks until resume or stop; vm->lock held. */
static void vcpu_park_locked(struct vcpu *v)
{
	struct vm *vm = v->vm;

	vcpu_apply_pending_locked(v);
	vcpu_save_locked(v);
	v->parked = true;
	vm->nr_parked++;
	pthread_cond_broadcast(&vm->cond);
	while (vm_pause_requested(vm) && !vm_stopping(vm)) {
		pthread_cond_wait(&vm->cond, &vm->lock);
		/* A clone made while the pause was in progress (the VM is paused
		 * only once every vCPU is parked, and all of this holds the lock). */
		if (v->start_pending) {
			vcpu_apply_pending_locked(v);
			vcpu_save_locked(v);
		}
	}
	v->saved_valid = false;
	vm->nr_parked--;
	v->parked = false;
}

int vcpu_wait(struct vcpu *v, bool (*pred)(void *arg), void *arg, uint64_t deadline)
{
	struct vm *vm = v->vm;

	/* A call replayed after a restore keeps the deadline it had. */
	if (v->restore_deadline) {
		deadline = v->restore_deadline;
		v->restore_deadline = 0;
	}
	v->sys_deadline = deadline;
	for (;;) {
		if (pred(arg))
			return 0;
		if (vm_stopping(vm))
			return -ESHUTDOWN;
		if (vm_pause_requested(vm)) {
			vcpu_park_locked(v);
			continue;
		}
		if (!deadline) {
			pthread_cond_wait(&vm->cond, &vm->lock);
			continue;
		}
		uint64_t now = vm_guest_now(vm);
		if (now >= deadline)
			return -ETIMEDOUT;
		uint64_t host = time_mono_ns() + (deadline - now);
		struct timespec ts = { .tv_sec = (time_t)(host / 1000000000ULL),
				       .tv_nsec = (long)(host % 1000000000ULL) };
		pthread_cond_timedwait(&vm->cond, &vm->lock, &ts);
	}
}

int vcpu_poll(struct vcpu *v, int fd)
{
	struct vm *vm = v->vm;

	if (vm_stopping(vm))
		return -ESHUTDOWN;
	if (vm_pause_requested(vm)) {
		vcpu_park_locked(v);
		return vm_stopping(vm) ? -ESHUTDOWN : 0;
	}
	/* fd is only ours while the lock is held: once it is dropped the loop
	 * thread may close fd and give its number to the next client.
	 * poll(2) looks the number up again at every wake-up but sleeps only
	 * on the files it found the first time, so polling fd itself could
	 * sleep on a dead connection while the new one's input goes unseen.
	 * A duplicate pins the file; its hangup ends the wait and the caller
	 * looks again under the lock. Without one (no fds left), poll fd in
	 * short slices. */
	int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	struct pollfd p[2] = {
		{ .fd = dup_fd >= 0 ? dup_fd : fd, .events = POLLIN | POLLRDHUP },
		{ .fd = vm->wake_fd, .events = POLLIN },
	};
	pthread_mutex_unlock(&vm->lock);
	if (poll(p, 2, dup_fd >= 0 ? -1 : 10) < 0 && errno != EINTR)
		log_warn("vCPU %u: poll: %s", v->id, strerror(errno));
	if (dup_fd >= 0)
		close(dup_fd);
	pthread_mutex_lock(&vm->lock);
	return vm_stopping(vm) ? -ESHUTDOWN : 0;
}

/* ------------------------------------------------------------ run loop */

/* Runs the guest thread on v until it ends, the VM stops, or a pause
 * parks it (then runs on after resume). */
static enum vcpu_action vcpu_run(struct vcpu *v)
{
	struct vm *vm = v->vm;

	for (;;) {
		struct vexit e = { .kind = VEXIT_KICK };
		if (vm_stopping(vm))
			return VCPU_STOP;
		if (vm_pause_requested(vm)) {
			pthread_mutex_lock(&vm->lock);
			if (!vm_stopping(vm))
				vcpu_park_locked(v);
			pthread_mutex_unlock(&vm->lock);
			continue;
		}
		if (!__atomic_load_n(&vm->first_run_at, __ATOMIC_RELAXED))
			__atomic_store_n(&vm->first_run_at, time_mono_ns(), __ATOMIC_RELAXED);
		int rc = vm->plat->vcpu_run(v, &e);
		if (rc < 0) {
			vm_terminate(vm, 1, true, "vCPU %u cannot run: %s", v->id, strerror(-rc));
			return VCPU_STOP;
		}
		v->exits++;
		enum vcpu_action a = VCPU_CONTINUE;
		if (vm->mach && (e.kind == VEXIT_SYSCALL || e.kind == VEXIT_FAULT)) {
			/* A machine's exits are its devices', handled by the platform. */
			vm_terminate(vm, 1, true, "vCPU %u: a function-guest exit from a Linux guest",
				     v->id);
			return VCPU_STOP;
		}
		switch (e.kind) {
		case VEXIT_SYSCALL:
			a = fguest_exit_syscall(v);
			break;
		case VEXIT_FAULT:
			a = fguest_exit_fault(v, &e);
			break;
		case VEXIT_KICK:
			break;
		case VEXIT_STOP:
			a = VCPU_STOP;
			break;
		}
		if (a != VCPU_CONTINUE)
			return a;
	}
}

void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	sigset_t set;

	/* Only synchronous faults reach vCPU threads (and the platform's kick,
	 * which vcpu_enter unblocks where it is a signal). */
	sigfillset(&set);
	sigdelset(&set, SIGSEGV);
	sigdelset(&set, SIGBUS);
	sigdelset(&set, SIGFPE);
	sigdelset(&set, SIGILL);
	pthread_sigmask(SIG_SETMASK, &set, NULL);

	/* Before any guest code runs: a vCPU that cannot take hold of its
	 * guest thread or confine itself never enters the guest. */
	int rc = vm->plat->vcpu_enter(v);
	if (rc < 0)
		vm_terminate(vm, 1, true, "vCPU %u cannot start: %s", v->id, strerror(-rc));
	else if ((rc = vmm_seccomp_apply_vcpu(vm->seccomp)) < 0)
		vm_terminate(vm, 1, true, "vCPU %u: cannot install its seccomp filter: %s", v->id,
			     strerror(-rc));
	pthread_mutex_lock(&vm->lock);
	for (;;) {
		if (vm_stopping(vm))
			break;
		if (vm_pause_requested(vm)) {
			vcpu_park_locked(v);
			continue;
		}
		/* A function guest's vCPU runs while it holds a guest thread; a
		 * machine's always does (its APs wait for SIPI inside KVM). */
		if (!v->gt && !vm->mach) {
			pthread_cond_wait(&vm->cond, &vm->lock);
			continue;
		}
		if (v->start_pending) {
			vcpu_apply_pending_locked(v);
			if (vm_stopping(vm))
				break;
		}
		pthread_mutex_unlock(&vm->lock);
		enum vcpu_action a = vcpu_run(v);
		pthread_mutex_lock(&vm->lock);
		if (a == VCPU_STOP && vm_stopping(vm))
			break;
	}
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}
