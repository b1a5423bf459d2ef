/* vmm/idpage.h - private: the identity page (guest/abi/forkvm_identity.h)
 * in guest memory, at the address its payload's loader chose (a function
 * guest's FG_IDENTITY_PAGE, announced in its auxiliary vector; a Linux
 * guest's FORKVM_IDENTITY_LINUX_GPA, guest/abi/forkvm_linux.h). The page
 * is guest memory the guest may have scribbled on: each call reads it,
 * trusts only its magic, and writes it back whole. Pure functions on guest
 * memory: unit tests run them without KVM. */
#ifndef FORKVM_VMM_IDPAGE_H
#define FORKVM_VMM_IDPAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/gmem.h"

/* Writes the page at gpa: at boot (restored false) magic, version, size,
 * generation 0, fresh random, no restore time and clone_id ""; at a
 * restore the generation + 1 (1 when the magic is gone), the host's
 * CLOCK_REALTIME and fresh random, the clone_id kept. Returns 0, -EFAULT
 * when gpa is not guest memory, or -EIO when getrandom fails. */
int idpage_write(struct gmem *m, uint64_t gpa, bool restored) __attribute__((warn_unused_result));

/* A paused VM's new identity (the fork daemon's clones): clone_id
 * (truncated to 63 bytes), fresh random and the restore time; the
 * generation is left as the restore set it. Returns 0 or -errno as
 * idpage_write. */
int idpage_set_clone(struct gmem *m, uint64_t gpa, const char *clone_id)
    __attribute__((warn_unused_result));

/* The page's generation; 0 when gpa is not guest memory or the magic is
 * gone. */
uint64_t idpage_generation(const struct gmem *m, uint64_t gpa);

#endif
