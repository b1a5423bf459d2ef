/* vmm/vcpu.c - one thread per vCPU: the KVM_RUN loop, the exit
 * dispatcher, kicking, parking for pause, and waits inside system calls.
 *
 * Pause protocol: the pauser sets vm->pause_req, then each vCPU's
 * run->immediate_exit, then signals the thread. A vCPU clears
 * immediate_exit before it reads pause_req, so either it sees the request
 * or KVM_RUN returns at once. Parked vCPUs are counted in vm->nr_parked. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/fguest/fguest.h"
#include "vmm/kvmio.h"
#include "vmm/vm.h"
#include "vmm/x86/x86.h"

struct kvm_regs *vcpu_regs(struct vcpu *v)
{
	return v->run ? &v->run->s.regs.regs : NULL;
}

void vcpu_regs_dirty(struct vcpu *v)
{
	v->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
}

void vcpu_kick(struct vcpu *v)
{
	if (v->run)
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->thread_started)
		pthread_kill(v->thread, v->vm->kick_signal);
}

static bool vm_stopping(struct vm *vm)
{
	return __atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST);
}

static bool vm_pause_requested(struct vm *vm)
{
	return __atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST);
}

static int vcpu_apply_start(struct vcpu *v);

/* A new guest thread's registers go into KVM before the vCPU counts as
 * parked: a paused VM's KVM state is always complete (a snapshot reads it). */
static void vcpu_apply_pending_locked(struct vcpu *v)
{
	if (!v->start_pending || v->fd < 0)
		return;
	int rc = vcpu_apply_start(v);
	if (rc < 0)
		vm_terminate_locked(v->vm, 1, true, "cannot start a thread on vCPU %u: %s", v->id,
				    strerror(-rc));
}

/* Parks until resume or stop; vm->lock held. KVM gets the registers the
 * sync area still holds, so a paused vCPU's KVM state is complete. */
static void vcpu_park_locked(struct vcpu *v)
{
	struct vm *vm = v->vm;

	if (v->fd >= 0 && v->run && (v->run->kvm_dirty_regs & KVM_SYNC_X86_REGS)) {
		if (kvm_ioctl(v->fd, KVM_SET_REGS, &v->run->s.regs.regs) < 0)
			log_error("vCPU %u: KVM_SET_REGS before parking: %s", v->id, strerror(errno));
		v->run->kvm_dirty_regs &= ~(uint64_t)KVM_SYNC_X86_REGS;
	}
	vcpu_apply_pending_locked(v);
	v->parked = true;
	vm->nr_parked++;
	pthread_cond_broadcast(&vm->cond);
	while (vm_pause_requested(vm) && !vm_stopping(vm)) {
		pthread_cond_wait(&vm->cond, &vm->lock);
		/* A clone made while the pause was in progress (the VM is paused
		 * only once every vCPU is parked, and all of this holds the lock). */
		vcpu_apply_pending_locked(v);
	}
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

/* ------------------------------------------------------------ dispatch */

static uint64_t exit_rip(struct vcpu *v)
{
	struct kvm_regs *r = vcpu_regs(v);
	return r ? r->rip : 0;
}

enum vcpu_action vcpu_dispatch_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	struct vm *vm = v->vm;

	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		unsigned size = run->io.size, count = run->io.count;
		bool out = run->io.direction == KVM_EXIT_IO_OUT;
		uint64_t span = (uint64_t)size * count;
		const struct bus_range *r;

		if ((size != 1 && size != 2 && size != 4) || count == 0 ||
		    (vm->run_size && (run->io.data_offset > (uint64_t)vm->run_size ||
				      span > (uint64_t)vm->run_size - run->io.data_offset))) {
			vm_terminate(vm, 1, true, "malformed port I/O exit on vCPU %u", v->id);
			return VCPU_STOP;
		}
		r = bus_find(&vm->pio, run->io.port, size);
		if (!r) {
			vm_terminate(vm, 128 + SIGSEGV, true,
				     "guest %s port 0x%x (%u bytes), which no device handles; vCPU %u, "
				     "rip 0x%llx",
				     out ? "wrote" : "read", run->io.port, size, v->id,
				     (unsigned long long)exit_rip(v));
			return VCPU_STOP;
		}
		uint8_t *data = (uint8_t *)run + run->io.data_offset;
		for (unsigned i = 0; i < count; i++) {
			enum vcpu_action a = r->io(r->dev, v, run->io.port - r->base, data + i * size,
						   size, out);
			if (a != VCPU_CONTINUE)
				return a;
		}
		return VCPU_CONTINUE;
	}
	case KVM_EXIT_MMIO:
		vm_terminate(vm, 128 + SIGSEGV, true,
			     "guest %s MMIO address 0x%llx (%u bytes), which no device handles; vCPU "
			     "%u, rip 0x%llx",
			     run->mmio.is_write ? "wrote" : "read",
			     (unsigned long long)run->mmio.phys_addr, run->mmio.len, v->id,
			     (unsigned long long)exit_rip(v));
		return VCPU_STOP;
	case KVM_EXIT_SHUTDOWN:
		vm_terminate(vm, 128 + SIGSEGV, true,
			     "guest triple fault (an exception while delivering an exception) on vCPU "
			     "%u, rip 0x%llx",
			     v->id, (unsigned long long)exit_rip(v));
		return VCPU_STOP;
	case KVM_EXIT_INTERNAL_ERROR:
		vm_terminate(vm, 128 + SIGILL, true,
			     "KVM internal error %u (%s) on vCPU %u, rip 0x%llx", run->internal.suberror,
			     run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ?
				     "an instruction KVM cannot emulate" :
				     "see the KVM documentation",
			     v->id, (unsigned long long)exit_rip(v));
		return VCPU_STOP;
	case KVM_EXIT_FAIL_ENTRY:
		vm_terminate(vm, 1, true, "KVM could not enter vCPU %u: hardware reason 0x%llx",
			     v->id,
			     (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return VCPU_STOP;
	case KVM_EXIT_HLT:
		vm_terminate(vm, 128 + SIGSEGV, true, "guest halted vCPU %u at rip 0x%llx", v->id,
			     (unsigned long long)exit_rip(v));
		return VCPU_STOP;
	case KVM_EXIT_SYSTEM_EVENT:
		vm_terminate(vm, 0, false, "guest requested a system %s",
			     run->system_event.type == KVM_SYSTEM_EVENT_RESET ? "reset" : "shutdown");
		return VCPU_STOP;
	case KVM_EXIT_INTR:
		return VCPU_CONTINUE;
	}
	vm_terminate(vm, 1, true, "unexpected KVM exit reason %u on vCPU %u, rip 0x%llx",
		     run->exit_reason, v->id, (unsigned long long)exit_rip(v));
	return VCPU_STOP;
}

/* ------------------------------------------------------------ thread */

/* Puts a new guest thread's registers into KVM; vm->lock held. */
static int vcpu_apply_start(struct vcpu *v)
{
	struct vm *vm = v->vm;
	struct kvm_sregs s;
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e[2];
	} m = { .h.nmsrs = 2 };

	/* With the in-kernel irqchip an AP waits for INIT/SIPI until told
	 * it is runnable; a guest thread just starts. */
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
	if (kvm_ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
		return -errno;
	if (kvm_ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	x86_sregs_ring3(&s, v->id, vm->nr_vcpus, vm->osxsave);
	if (kvm_ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		return -errno;
	if (kvm_ioctl(v->fd, KVM_SET_REGS, &v->start_regs) < 0)
		return -errno;
	m.e[0].index = X86_MSR_FS_BASE;
	m.e[0].data = v->start_fs_base;
	m.e[1].index = X86_MSR_GS_BASE;
	m.e[1].data = 0;
	if (kvm_ioctl(v->fd, KVM_SET_MSRS, &m) != 2)
		return -EINVAL;
	v->run->kvm_dirty_regs = 0;
	v->start_pending = false;
	log_debug("vCPU %u: thread %d starts at rip 0x%llx rsp 0x%llx fs 0x%llx", v->id,
		  v->gt ? v->gt->tid : 0, (unsigned long long)v->start_regs.rip,
		  (unsigned long long)v->start_regs.rsp, (unsigned long long)v->start_fs_base);
	return 0;
}

static enum vcpu_action vcpu_run(struct vcpu *v)
{
	struct vm *vm = v->vm;

	for (;;) {
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
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
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			vm_terminate(vm, 1, true, "KVM_RUN failed on vCPU %u: %s", v->id,
				     strerror(errno));
			return VCPU_STOP;
		}
		v->exits++;
		enum vcpu_action a = vcpu_dispatch_exit(v);
		if (a != VCPU_CONTINUE)
			return a;
	}
}

void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	sigset_t set;

	/* Only the kick (and synchronous faults) reach vCPU threads. */
	sigfillset(&set);
	sigdelset(&set, vm->kick_signal);
	sigdelset(&set, SIGSEGV);
	sigdelset(&set, SIGBUS);
	sigdelset(&set, SIGFPE);
	sigdelset(&set, SIGILL);
	pthread_sigmask(SIG_SETMASK, &set, NULL);

	v->run->kvm_valid_regs = KVM_SYNC_X86_REGS;
	/* Before any guest code runs: a vCPU that cannot confine itself
	 * never enters the guest. */
	int rc = vmm_seccomp_apply_vcpu(vm->seccomp);
	if (rc < 0)
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
		if (!v->gt) {
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
