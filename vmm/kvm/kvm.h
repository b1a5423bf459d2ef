/* vmm/kvm/kvm.h - private to the KVM platform (vmm/kvm/): its VM and vCPU
 * data, and the exit decoder unit tests feed with hand-made exits. */
#ifndef FORKVM_VMM_KVM_KVM_H
#define FORKVM_VMM_KVM_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/platform.h"
#include "vmm/vm.h"

struct vm;
struct vcpu;

/* vm->p */
struct kvm_vm {
	int kvm_fd;
	int vm_fd;
	int run_size;         /* 0: no bound known (unit tests) */
	int kick_signal;
	bool osxsave;
	bool pku;             /* protection keys: CR4.PKE set, PKRU in XCR0 */
	uint64_t xcr0;
	struct kvm_cpuid2 *cpuid;
	size_t xsave_size;    /* KVM_GET_XSAVE2's size, else sizeof(struct kvm_xsave) */
	bool has_xsave, has_xsave2;
	bool machine;         /* a full machine guest (Linux): its port I/O and
			       * MMIO go to devices, nothing to the trampoline */
};

/* vcpu->p */
struct kvm_vcpu {
	int fd;               /* -1: a unit test's vCPU */
	struct kvm_run *run;
	bool run_mapped;      /* run is KVM's mapping (else malloc'd) */
	bool regs_valid;      /* run->s.regs holds the current registers */
	bool at_syscall;      /* stopped at the trampoline's system call port */
	bool io_pending;      /* a handled port I/O or MMIO exit KVM has yet to complete */
};

/* The KVM state of a VM and of a vCPU. */
static inline struct kvm_vm *KV(const struct vm *vm)
{
	return vm->p;
}

static inline struct kvm_vcpu *KC(const struct vcpu *v)
{
	return v->p;
}

/* Turns the exit in run (vCPU v's last KVM_RUN) into e. Port I/O of the
 * trampoline becomes a system call or a fault; other port I/O goes to the
 * VM's devices (then *handled is set and the vCPU runs on); what the guest
 * cannot survive ends the VM (VEXIT_STOP). run_size bounds the data of
 * a port exit (0: unchecked); vcpu_fd (-1: none) gives a #PF's address.
 * Pure dispatch on run's contents: unit tests call it with hand-made
 * exits. */
void kvm_exit_decode(struct vcpu *v, int vcpu_fd, struct kvm_run *run, int run_size,
		     struct vexit *e, bool *handled);

/* A machine guest's state units (vmm/kvm/kvmstate.c): irqchip, pit,
 * kvmclock, vcpu0..N-1; none for a function guest. */
struct state_unit;
size_t kvm_machine_units(struct vm *vm, struct state_unit *u, size_t max);

/* The KVM_GET_SUPPORTED_CPUID answer, malloc'd in *out; 0 or -errno. */
int kvm_supported_cpuid(int kvm_fd, struct kvm_cpuid2 **out);

#endif
