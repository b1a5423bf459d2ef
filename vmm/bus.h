/* vmm/bus.h - per-VM I/O bus: devices registered explicitly, in order, on
 * port or MMIO address ranges. A handler receives the offset from its own
 * base (kvmtool's signature). The bus is immutable once the VM runs, so
 * lookups need no locking. */
#ifndef FORKVM_VMM_BUS_H
#define FORKVM_VMM_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct vcpu;

/* What the vCPU loop does after an exit was handled. */
enum vcpu_action {
	VCPU_CONTINUE,    /* re-enter the guest */
	VCPU_THREAD_EXIT, /* the guest thread on this vCPU ended; idle the vCPU */
	VCPU_STOP,        /* the VM is stopping (exit, fault, shutdown) */
};

/* Returns the next action. data holds len bytes (written by the guest on
 * a write; to be filled on a read). */
typedef enum vcpu_action bus_io_fn(void *dev, struct vcpu *v, uint64_t offset, void *data,
				   unsigned len, bool is_write);

struct bus_range {
	uint64_t base;
	uint64_t len;
	const char *name;
	bus_io_fn *io;
	void *dev;
};

#define BUS_MAX_RANGES 16

struct bus {
	unsigned nr;
	struct bus_range ranges[BUS_MAX_RANGES]; /* sorted by base, disjoint */
};

/* Registers [base, base+len). Returns 0, -EEXIST on overlap, -ENOSPC. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const char *name, bus_io_fn *io,
		 void *dev) __attribute__((warn_unused_result));

/* The range holding [addr, addr+len), or NULL. */
const struct bus_range *bus_find(const struct bus *bus, uint64_t addr, unsigned len);

#endif
