/* vmm/snapshot.h - private: snapshots of VMs. The formats are in store/
 * (store/store.h); this layer turns a VM into what they take and what they
 * give back into a configuration and state units, applying the rules of
 * config.json edits (docs/snapshot-format.md). */
#ifndef FORKVM_VMM_SNAPSHOT_H
#define FORKVM_VMM_SNAPSHOT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "vmm/gmem.h"
#include "vmm/vmm.h"

/* What a restore needs, from a directory or from the store. */
struct snapshot {
	struct vm_config cfg;  /* config.json (edits checked) */
	json_t *units;         /* state units */
	json_t *manifest;      /* snapshot.json, or the store manifest */
	char loader[64];
	char platform[16];     /* what ran the guest when it was taken */
	int mem_fd;            /* memory to map copy-on-write, read-only */
	uint64_t memory_size;
	/* A directory snapshot: where it is, and whether it holds the disks
	 * ("disk-vda"...: a restore maps them copy-on-write). */
	char dir[4096];
	bool has_disks;
	/* From the store: the snapshot's id and chunk map (incremental
	 * snapshots of the restored VM reuse it). */
	bool from_store;
	char store_root[4096];
	struct store_snapshot ss;
	/* What a platform caches for a template's restores (the KVM
	 * platform: its supported CPUID; vm_template_open), malloc'd; NULL
	 * otherwise. Freed by snapshot_close. */
	void *cpuid_cache;
};

/* The store_mem view of guest RAM. */
void snapshot_mem_of(const struct gmem *m, struct store_mem *out);

/* Writes a snapshot directory (see snapdir_write). */
int snapshot_write_dir(const char *dir, const struct vm_config *cfg, const json_t *units,
		       const struct gmem *mem, const struct snap_meta *meta, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Opens and verifies a snapshot directory, or a store snapshot (url kind
 * STORE: ref is a tag or id prefix in the store at store_root). Returns 0
 * or -errno with err set; on failure s holds nothing. */
int snapshot_open(const char *dir, struct snapshot *s, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int snapshot_open_store(const char *store_root, const char *ref, struct snapshot *s, char *err,
			size_t errlen) __attribute__((warn_unused_result));
void snapshot_close(struct snapshot *s);

#endif
