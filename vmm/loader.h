/* vmm/loader.h - payload loaders: each knows one kind of payload (the
 * function guest today; a Linux kernel on hosts with VT-x later). vm.c
 * asks them in order and uses the first whose probe accepts the image. */
#ifndef FORKVM_VMM_LOADER_H
#define FORKVM_VMM_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;

struct vm_loader {
	const char *name;
	/* True if image looks like this loader's payload. */
	bool (*probe)(const uint8_t *image, size_t len);
	/* Sets up guest memory, devices and the vCPUs' start state.
	 * Returns 0 or -errno with err set. */
	int (*load)(struct vm *vm, const uint8_t *image, size_t len, char *err, size_t errlen);
};

/* The function-guest loader (vmm/fguest/loader.c). */
extern const struct vm_loader fguest_loader;

#endif
