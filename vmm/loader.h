/* vmm/loader.h - payload loaders: each knows one kind of payload (the
 * function guest; a Linux kernel on KVM). vm.c
 * asks them in order and uses the first whose probe accepts the image. */
#ifndef FORKVM_VMM_LOADER_H
#define FORKVM_VMM_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct vm;
struct state_unit;
struct loop;
struct store_disk_in;
struct store_mem;

struct vm_loader {
	const char *name; /* recorded in snapshots: restore finds the loader by it */
	/* A full machine (a kernel in ring 0 with its devices): only on a
	 * platform with machine_boot (KVM). */
	bool machine;
	/* True if image looks like this loader's payload. */
	bool (*probe)(const uint8_t *image, size_t len);
	/* Sets up guest memory, devices and the vCPUs' start state.
	 * Returns 0 or -errno with err set. */
	int (*load)(struct vm *vm, const uint8_t *image, size_t len, char *err, size_t errlen);
	/* Restore, before the state units: the payload's devices and state
	 * holders, empty (memory already holds the payload). */
	int (*restore_prepare)(struct vm *vm, char *err, size_t errlen);
	/* Restore of a snapshot taken on another platform, before the units:
	 * what this platform needs in guest memory (KVM's system area). */
	int (*restore_foreign)(struct vm *vm, char *err, size_t errlen);
	/* Restore, after every unit: tell the guest it was restored. */
	int (*restore_finish)(struct vm *vm, char *err, size_t errlen);
	/* A paused VM's new identity (the fork daemon's clones): clone id
	 * and fresh randomness, seen by the guest when it resumes. NULL: the
	 * payload has no identity to set. */
	int (*set_identity)(struct vm *vm, const char *clone_id);
	/* The payload's state units (appended after the VM's own). */
	size_t (*units)(struct vm *vm, struct state_unit *u, size_t max);
	/* Snapshot to a directory: writes the payload's files beside memory
	 * and state into dfd (a Linux guest's disks) and adds their manifest
	 * entries to files. NULL: none. Returns 0 or -errno with err set. */
	int (*save_files)(struct vm *vm, int dfd, json_t *files, char *err, size_t errlen);
	/* Once the VM has its event loop (after load or restore): registers
	 * the devices' host sockets on it. NULL: none. Returns 0 or -errno. */
	int (*attach)(struct vm *vm, struct loop *loop);
	/* On the loop thread, after vm_notify(vm, VM_NOTIFY_DEV): the devices
	 * update what the loop watches for them. NULL: none. */
	void (*service)(struct vm *vm);
	/* A restore that succeeded: the devices' sockets, bound under
	 * temporary names, take their paths. NULL: none. Returns 0 or -errno. */
	int (*publish)(struct vm *vm);
	/* Snapshot into the store: the payload's disks (a Linux guest's) as
	 * the store reads them, in device order, out[i] viewing data[i].
	 * Returns how many (at most max). NULL: none. */
	unsigned (*store_disks)(struct vm *vm, struct store_disk_in *out, struct store_mem *data,
				unsigned max);
	/* Frees what load or restore_prepare made (vm->mach), after the vCPU
	 * threads are joined. NULL: nothing beyond free(vm->mach). */
	void (*destroy)(struct vm *vm);
};

/* The function-guest loader (vmm/fguest/loader.c). */
extern const struct vm_loader fguest_loader;
/* The Linux loader: a bzImage or vmlinux (vmm/linux/loader.c). */
extern const struct vm_loader linux_loader;

/* The loader called name, or NULL. */
const struct vm_loader *vm_loader_by_name(const char *name);

#endif
