/* vmm/kvmstate.h - private: KVM state units (see kvmstate.c). */
#ifndef FORKVM_VMM_KVMSTATE_H
#define FORKVM_VMM_KVMSTATE_H

#include <stddef.h>

struct vm;
struct state_unit;

/* Probes what the host's KVM can save (XSAVE size, saveable MSRs...).
 * Returns 0 or -errno with err set. */
int kvmstate_init(struct vm *vm, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Appends kvmclock, irqchip, pit, vcpu0..N-1 to u; returns the count. */
size_t kvmstate_units(struct vm *vm, struct state_unit *u, size_t max);

#endif
