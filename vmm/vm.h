/* vmm/vm.h - private: struct vm and struct vcpu, shared by the files of
 * vmm/. Outside vmm/ include vmm/vmm.h. Nothing here knows a platform's
 * types: each platform hangs its own data off vm->p and vcpu->p. */
#ifndef FORKVM_VMM_VM_H
#define FORKVM_VMM_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/bus.h"
#include "vmm/chan.h"
#include "vmm/gmem.h"
#include "vmm/platform.h"
#include "store/store.h"
#include "vmm/vmm.h"

struct fguest;
struct fg_thread;
struct machine;

/* The register state a guest thread starts (or resumes after a restore)
 * with, loaded by the vCPU's own thread before it next runs. */
struct vcpu_start {
	struct vregs regs;
	uint64_t fs_base, gs_base;
	bool has_xstate;        /* a restore: the saved XSAVE area */
	size_t xstate_len;
	uint8_t *xstate;        /* malloc'd, PLATFORM_XSAVE_MAX bytes when set */
};

struct vcpu {
	struct vm *vm;
	unsigned id;
	void *p;              /* the platform's vCPU */
	pthread_t thread;
	bool thread_started;

	/* Under vm->lock. */
	bool parked;          /* outside the guest and holding no guest progress */
	struct fg_thread *gt; /* guest thread on this vCPU; NULL: idle */
	bool start_pending;   /* load start before the next run */
	struct vcpu_start start;
	bool in_syscall;      /* a blocking system call is in progress */
	struct vregs sys_regs; /* ... and the user registers it was made with */
	uint64_t sys_deadline; /* its deadline, guest monotonic ns (0: none) */
	uint64_t restore_deadline; /* restored: deadline of the replayed call */
	/* A parked vCPU's guest thread, as a snapshot records it (the
	 * platform's registers can only be read on the vCPU's own thread). */
	bool saved_valid;
	struct vregs saved_regs;
	size_t saved_xstate_len;
	uint64_t saved_xcr0;
	uint8_t *saved_xstate; /* malloc'd, PLATFORM_XSAVE_MAX bytes */

	uint64_t exits;       /* touched by this vCPU's thread only */
};

/* Bits of vm->notify_pending: work for the loop thread. */
#define VM_NOTIFY_CHAN 0x1u
#define VM_NOTIFY_EXIT 0x2u
#define VM_NOTIFY_DEV 0x4u  /* the loader's service(): a device's host sockets */

struct vm {
	struct vm_config cfg;
	struct loop *loop;
	vm_exit_cb *on_exit;
	void *on_exit_arg;

	const struct platform *plat; /* what runs the guest */
	void *p;              /* the platform's VM */
	const struct vmm_seccomp *seccomp; /* vCPU threads install its filter (may be NULL) */

	struct gmem mem;
	struct bus pio;       /* port I/O devices, explicit order */
	struct bus mmio;      /* MMIO devices (a Linux guest's virtio), explicit order */

	unsigned nr_vcpus;
	struct vcpu *vcpus;

	pthread_mutex_t lock;
	pthread_cond_t cond;  /* every state change; waiters re-check */
	enum vm_state state;
	int pause_req;        /* atomic */
	int stopping;         /* atomic */
	unsigned nr_parked;
	uint64_t clock_base;  /* guest monotonic = host monotonic - clock_base */
	uint64_t restored_clock; /* restore: the guest clock at the snapshot */
	struct vm_timings timings; /* where a build or restore spent its time */
	uint64_t first_run_at;     /* monotonic ns of the first KVM_RUN since the last resume (atomic) */
	const struct vm_loader *loader; /* the payload's loader */
	const struct snapshot *restoring; /* while a restore builds the VM: its snapshot */
	/* Restored from a store snapshot: where from (incremental snapshots). */
	char origin_store[4096];
	struct store_id origin_id;
	uint32_t origin_chunk_size;
	uint64_t paused_at;
	struct vm_exit_info exit;

	int notify_fd;        /* eventfd watched by the loop */
	int wake_fd;          /* eventfd readable while pause or stop is requested:
			       * vCPU threads polling a socket watch it too */
	unsigned notify_pending; /* atomic VM_NOTIFY_* */

	struct chan agent;    /* guest fd 0/1 */
	struct chan console;  /* guest fd 2 */

	struct fguest *fg;    /* function-guest ABI state */
	struct machine *mach; /* a Linux guest's devices (vmm/linux/); NULL otherwise */

	uint64_t syscalls;    /* atomic counters */
	uint64_t syscalls_enosys;
};

/* Builds a VM on platform_none: guest RAM, payload loaded, no vCPU
 * threads, registers kept in memory. For unit tests of the loader and
 * system calls. */
int vm_create_nokvm(const struct vm_config *cfg, char *err, size_t errlen, struct vm **out)
	__attribute__((warn_unused_result));

struct snapshot;
enum vm_platform;
/* Builds a VM from cfg: booted from its payload (snap NULL) or restored
 * from snap's state (vmm/snapshot.c). */
int vm_create_from(const struct vm_config *cfg, struct snapshot *snap, struct loop *loop,
		   vm_exit_cb *on_exit, void *arg, char *err, size_t errlen, struct vm **out)
	__attribute__((warn_unused_result));
/* Replays snap's state units into vm, being built (vmm/snapshot.c). */
int vm_apply_snapshot(struct vm *vm, struct snapshot *snap, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* The operations of a resolved platform (KVM or PROCESS). */
const struct platform *vm_platform_ops(enum vm_platform p);

/* Starts a restored VM's vCPU threads, parked (paused) or straight into
 * the guest. */
int vm_start_restored(struct vm *vm, bool paused) __attribute__((warn_unused_result));

/* Guest monotonic clock in ns (stops while the VM is paused). */
uint64_t vm_guest_now(struct vm *vm);

/* Ends the VM from a vCPU thread: records why, stops every vCPU, tells
 * the loop. Safe to call more than once; the first reason wins. */
void vm_terminate(struct vm *vm, int status, bool faulted, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Same, with vm->lock held. */
void vm_terminate_locked(struct vm *vm, int status, bool faulted, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Asks the loop thread to run chan_service / exit handling. Thread-safe. */
void vm_notify(struct vm *vm, unsigned bits);

/* Waits with vm->lock held until pred(arg) holds, the guest-monotonic
 * deadline (0: none) passes, or the VM stops; parks while the VM is paused
 * and keeps waiting after resume. Returns 0, -ETIMEDOUT or -ESHUTDOWN. */
int vcpu_wait(struct vcpu *v, bool (*pred)(void *arg), void *arg, uint64_t deadline);

/* Waits with vm->lock held (dropped while waiting) until fd is readable or
 * hung up, or pause/stop is requested; parks while paused. Another thread
 * may close fd meanwhile and its number may be reused: the wait stays on
 * the file fd named at the call, which shutdown() or the peer's hangup
 * ends. The caller re-checks its condition. Returns 0, or -ESHUTDOWN when
 * the VM is stopping. */
int vcpu_poll(struct vcpu *v, int fd);

/* Makes a vCPU leave the guest (the platform's kick). */
void vcpu_kick(struct vcpu *v);

/* For a platform's vcpu_run, after it armed its kick and before it enters
 * the guest: true when the vCPU must not enter (a pause or stop is
 * requested): vcpu_run then returns VEXIT_KICK. */
bool vcpu_must_yield(struct vcpu *v);

/* The vCPU thread body. */
void *vcpu_thread(void *arg);

/* Frees what a vCPU's start and saved state hold. */
void vcpu_state_free(struct vcpu *v);

/* One edge on interrupt line gsi of a machine guest (raised, then
 * lowered): an edge-triggered device's interrupt. No-op on a platform
 * without interrupt controllers. */
static inline void vm_irq_pulse(struct vm *vm, unsigned gsi)
{
	if (vm->plat->irq_line) {
		(void)vm->plat->irq_line(vm, gsi, 1);
		(void)vm->plat->irq_line(vm, gsi, 0);
	}
}

#endif
