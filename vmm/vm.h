/* vmm/vm.h - private: struct vm and struct vcpu, shared by the files of
 * vmm/. Outside vmm/ include vmm/vmm.h. */
#ifndef FORKVM_VMM_VM_H
#define FORKVM_VMM_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/bus.h"
#include "vmm/chan.h"
#include "vmm/gmem.h"
#include "store/store.h"
#include "vmm/vmm.h"

struct fguest;
struct fg_thread;

struct vcpu {
	struct vm *vm;
	unsigned id;
	int fd;               /* -1 without KVM (unit tests) */
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;

	/* Under vm->lock. */
	bool parked;          /* outside KVM_RUN and holding no guest progress */
	struct fg_thread *gt; /* guest thread on this vCPU; NULL: idle */
	bool start_pending;   /* apply start_regs/start_fs before the next run */
	struct kvm_regs start_regs;
	uint64_t start_fs_base;
	bool in_syscall;      /* a blocking system call is in progress */
	uint64_t sys_deadline; /* its deadline, guest monotonic ns (0: none) */
	uint64_t restart_rip; /* while an I/O handler runs: where a snapshot
			       * taken now restarts the vCPU (the call replays) */
	uint64_t restore_deadline; /* restored: deadline of the replayed call */

	uint64_t exits;       /* touched by this vCPU's thread only */
};

/* Bits of vm->notify_pending: work for the loop thread. */
#define VM_NOTIFY_CHAN 0x1u
#define VM_NOTIFY_EXIT 0x2u

struct vm {
	struct vm_config cfg;
	struct loop *loop;
	vm_exit_cb *on_exit;
	void *on_exit_arg;

	int kvm_fd;           /* -1 without KVM */
	int vm_fd;
	int run_size;
	int kick_signal;
	const struct vmm_seccomp *seccomp; /* vCPU threads install its filter (may be NULL) */
	bool osxsave;
	uint64_t xcr0;
	struct kvm_cpuid2 *cpuid;
	/* What this host's KVM can save (kvmstate.c). */
	size_t xsave_size;
	bool has_xsave, has_xsave2, has_debugregs, has_tsc_control;
	uint32_t clock_flags;
	uint32_t *msr_index;
	size_t nr_msr_index;

	struct gmem mem;
	struct bus pio;       /* port I/O devices, explicit order */

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

	uint64_t syscalls;    /* atomic counters */
	uint64_t syscalls_enosys;
};

/* Builds a VM without KVM: guest RAM, payload loaded, no vCPU threads.
 * For unit tests of the loader and system calls. */
int vm_create_nokvm(const struct vm_config *cfg, char *err, size_t errlen, struct vm **out)
	__attribute__((warn_unused_result));

/* Starts the vCPU threads parked (a restored VM: Created -> Paused). */
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

/* Makes a vCPU leave KVM_RUN (immediate_exit + signal). */
void vcpu_kick(struct vcpu *v);

/* Handles the exit in v->run. Pure dispatch: unit tests call it with a
 * hand-made struct kvm_run. */
enum vcpu_action vcpu_dispatch_exit(struct vcpu *v);

/* The vCPU thread body. */
void *vcpu_thread(void *arg);

/* Reads the vCPU's general registers: from the sync area when KVM filled
 * it, else KVM_GET_REGS. */
struct kvm_regs *vcpu_regs(struct vcpu *v);
/* Marks the sync-area registers dirty (written back at the next KVM_RUN). */
void vcpu_regs_dirty(struct vcpu *v);

#endif
