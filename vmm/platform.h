/* vmm/platform.h - private: the seam between the platform-neutral VMM
 * (vm.c, vcpu.c, the function guest in fguest/, snapshots) and what runs
 * guest code. Two platforms sit behind it, the way Solo5 hvt keeps
 * hvt_kvm.c beside its other backends:
 *   kvm      vmm/kvm/: a KVM VM; guest ring 3 with a tiny ring-0 trampoline
 *   process  vmm/ptrace/: a host process (the stub) traced with
 *            PTRACE_SYSEMU, guest memory at the guest's own addresses
 * The core calls only these operations and never includes a platform's
 * headers; only vmm/kvm/ includes <linux/kvm.h>.
 *
 * A guest thread's exits reach the core as platform-neutral events: a
 * system call (its number and arguments in the user registers), a fault
 * (vector, error code, address), or an interruption (a kick). */
#ifndef FORKVM_VMM_PLATFORM_H
#define FORKVM_VMM_PLATFORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/seccomp.h"

struct vm;
struct vcpu;
struct state_unit;
struct snapshot;

/* The user-mode registers of a guest thread (x86-64). At a system call
 * they are what the thread sees on entry: rax holds the call's number,
 * rip the address after the `syscall` instruction (as rcx does), rflags
 * the flags (as r11 does). */
struct vregs {
	uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t rip, rflags;
};

enum vexit_kind {
	VEXIT_SYSCALL, /* the thread made a system call (vcpu_regs() has it) */
	VEXIT_FAULT,   /* an exception the guest cannot survive (struct vexit) */
	VEXIT_KICK,    /* vcpu_kick(), or nothing the core needs to see */
	VEXIT_STOP,    /* the platform ended the VM (vm_terminate was called) */
};

/* Why a guest thread stopped running. */
struct vexit {
	enum vexit_kind kind;
	/* VEXIT_FAULT: what the CPU reported */
	unsigned vector;     /* exception vector: 0 #DE, 6 #UD, 13 #GP, 14 #PF... */
	bool has_error_code;
	uint64_t error_code; /* as the CPU pushed it (#PF: P, W, U, I bits) */
	bool has_addr;
	uint64_t addr;       /* #PF: the faulting address */
	uint64_t rip, rsp;   /* where */
	unsigned ring;       /* the privilege level it ran at */
};

/* The XSAVE area of a guest thread in the standard (non-compacted)
 * layout: x87 and SSE in the legacy region, the header's XSTATE_BV, then
 * the components at their CPUID offsets. */
#define PLATFORM_XSAVE_MAX 16384

/* Where a full machine guest (a Linux kernel, vmm/linux/) starts: vCPU 0
 * in 64-bit mode at entry with rsi = boot_params, flat __BOOT_CS (0x10)
 * and __BOOT_DS (0x18) and the low 4 GiB identity mapped (the Linux
 * 64-bit boot protocol); the other vCPUs wait for INIT/SIPI. */
struct machine_entry {
	uint64_t entry;
	uint64_t boot_params;
};

struct platform {
	const char *name; /* "kvm", "process": in snapshots, vm.info, metrics */

	/* 0 when this platform can run guests on this host; else -errno
	 * with why set ("cannot open /dev/kvm: ..."). */
	int (*probe)(char *why, size_t len);

	/* The VM, once guest memory exists and before the payload or the
	 * state units: snap is the snapshot a restore comes from (NULL for
	 * a boot). Returns 0 or -errno with err set. */
	int (*vm_create)(struct vm *vm, const struct snapshot *snap, char *err, size_t errlen);
	/* Frees what vm_create and the vCPUs hold (after the vCPU threads
	 * are joined). Safe on a partly built VM. */
	void (*vm_destroy)(struct vm *vm);

	/* The function guest's machine, written into guest memory where the
	 * platform needs one (KVM: page tables, GDT, IDT, TSS, trampoline in
	 * the system area; the process platform needs none). Called at boot
	 * and when a restored snapshot was taken on another platform. */
	int (*fguest_setup)(struct vm *vm, char *err, size_t errlen);
	/* A full machine guest (vmm/linux/): writes what the entry needs
	 * (page tables, GDT) below 1 MiB and sets vCPU 0's registers, before
	 * the vCPU threads start. NULL: the platform runs function guests
	 * only. Returns 0 or -errno with err set. */
	int (*machine_boot)(struct vm *vm, const struct machine_entry *me, char *err,
			    size_t errlen);
	/* Sets interrupt line irq (an ISA IRQ / GSI) of a machine guest's
	 * interrupt controllers to level (1 raised, 0 lowered); any thread.
	 * Returns 0 or -errno. */
	int (*irq_line)(struct vm *vm, unsigned irq, int level);
	/* AT_HWCAP for the guest's auxiliary vector. */
	uint64_t (*hwcap)(struct vm *vm);
	/* The XSAVE components (XCR0 bits) the guest's threads can use; a
	 * snapshot whose guest could use more is refused (fguest/state.c). */
	uint64_t (*xfeatures)(struct vm *vm);

	/* A vCPU: created with the VM (vm->vcpus[i], v->id set). */
	int (*vcpu_create)(struct vcpu *v, char *err, size_t errlen);
	/* On the vCPU's own thread before it first runs guest code (the
	 * process platform attaches the stub thread there: ptrace requests
	 * come from the tracing thread). Returns 0 or -errno. */
	int (*vcpu_enter)(struct vcpu *v);
	/* Runs the guest thread until its next exit. Returns 0 with *e set,
	 * or -errno (the VM is terminated by the caller). */
	int (*vcpu_run)(struct vcpu *v, struct vexit *e);
	/* Makes vcpu_run return VEXIT_KICK soon; from any thread. */
	void (*vcpu_kick)(struct vcpu *v);

	/* The thread's user registers (see struct vregs). Only at an exit
	 * or while parked, on the vCPU's thread or with the VM paused. */
	int (*get_regs)(struct vcpu *v, struct vregs *r);
	/* Sets the user registers the thread resumes with (ring 3 at r->rip):
	 * a new thread, a restored one. */
	int (*set_regs)(struct vcpu *v, const struct vregs *r);
	/* FS and GS base of the thread (arch_prctl, TLS of a new thread). */
	int (*set_tls)(struct vcpu *v, uint64_t fs_base, uint64_t gs_base);
	/* Ends the system call the thread stopped at: it resumes after its
	 * `syscall` instruction with rax = ret, as under Linux. */
	int (*syscall_return)(struct vcpu *v, uint64_t ret);
	/* The XSAVE area (FPU, SSE, AVX...) into buf (PLATFORM_XSAVE_MAX
	 * bytes); *len gets its size, *xcr0 the components it can hold. */
	int (*get_xstate)(struct vcpu *v, void *buf, size_t *len, uint64_t *xcr0);
	/* Loads an XSAVE area saved by get_xstate (on either platform):
	 * components this vCPU lacks are dropped. */
	int (*set_xstate)(struct vcpu *v, const void *buf, size_t len);

	/* What a snapshot must record of the platform itself beyond the
	 * platform-neutral units (NULL: nothing, as for a function guest). */
	size_t (*units)(struct vm *vm, struct state_unit *u, size_t max);
	/* What every restore of a template (vm_template_open) would ask the
	 * host again, cached in snap (KVM: its supported CPUID). NULL: none.
	 * Best effort. */
	void (*template_cache)(struct snapshot *snap);

	/* The system calls the platform needs beyond the VMM's own: on the
	 * VMM thread (and every thread it starts) and on vCPU threads. */
	const struct sc_rule *sc_vmm;
	size_t nr_sc_vmm;
	const struct sc_rule *sc_vcpu;
	size_t nr_sc_vcpu;
	/* The device node a jailed clone needs (NULL: none). */
	const char *jail_device;
};

extern const struct platform platform_kvm;
extern const struct platform platform_process;
/* No guest execution: registers kept in memory, for unit tests that
 * build a VM and feed it system calls (vm_create_nokvm). */
extern const struct platform platform_none;

#endif
