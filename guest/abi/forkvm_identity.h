/* guest/abi/forkvm_identity.h - the identity page: what a function guest
 * can read about its VM without a system call. Shared by the VMM (which
 * writes it) and guests (which read it); plain C with fixed-width types.
 *
 * The VMM places one page in guest memory and passes its address in the
 * auxiliary vector under FORKVM_AT_IDENTITY (getauxval() finds it). It is
 * written at boot and rewritten while the VM is paused at every restore:
 * `generation` changes (the role of a VM generation ID), `random` is fresh
 * host randomness, so a runtime that sees a new generation re-seeds what it
 * seeded before the snapshot. Guests only read it. */
#ifndef FORKVM_GUEST_ABI_IDENTITY_H
#define FORKVM_GUEST_ABI_IDENTITY_H

#include <stdint.h>

#define FORKVM_AT_IDENTITY 0x46564d49UL          /* auxv type "FVMI" */
#define FORKVM_IDENTITY_MAGIC 0x44494d564b524f46ULL /* "FORKVMID" */
#define FORKVM_IDENTITY_VERSION 1

struct forkvm_identity {
	uint64_t magic;          /* FORKVM_IDENTITY_MAGIC */
	uint32_t version;        /* FORKVM_IDENTITY_VERSION */
	uint32_t size;           /* sizeof(struct forkvm_identity) */
	uint64_t generation;     /* 0 at boot, +1 at every restore */
	uint64_t restored_realtime_ns; /* host CLOCK_REALTIME at the last restore; 0: never */
	uint8_t random[32];      /* fresh at boot and at every restore */
	char clone_id[64];       /* NUL-terminated; "" unless set by the fork daemon */
};

#endif
