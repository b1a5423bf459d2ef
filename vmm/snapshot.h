/* vmm/snapshot.h - private: the snapshot directory (docs/snapshot-format.md):
 *   config.json    the VM configuration (vm.create's schema); editable where
 *                  safe
 *   state.json     the state units
 *   memory-ranges  guest RAM, sparse: zero pages are holes
 *   snapshot.json  format version, what restore needs to know first, and a
 *                  checksum of every other file
 * Written into a temporary sibling directory, fsynced, renamed into place;
 * read back with every size and checksum verified before anything is used. */
#ifndef FORKVM_VMM_SNAPSHOT_H
#define FORKVM_VMM_SNAPSHOT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/gmem.h"
#include "vmm/vmm.h"

#define SNAPSHOT_FORMAT "forkvm-snapshot"
#define SNAPSHOT_VERSION 1
#define SNAPSHOT_STATE_FORMAT "forkvm-state"
#define SNAPSHOT_STATE_VERSION 1

/* The directory of a file:// URL (file:///abs or file://rel). Returns 0,
 * or -EPROTONOSUPPORT for another scheme, -EINVAL for a malformed URL. */
int snapshot_url_path(const char *url, char *path, size_t len, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* What a snapshot records besides the files' contents. */
struct snapshot_meta {
	const char *loader;   /* payload loader name */
	unsigned vcpus;
	uint64_t memory_size;
};

/* Writes dir atomically. dir must not exist or be an empty directory;
 * anything else is refused (-EEXIST / -ENOTDIR) and left untouched. On
 * failure nothing is left behind. Returns 0 or -errno with err set. */
int snapshot_write(const char *dir, const struct vm_config *cfg, const json_t *units,
		   const struct gmem *mem, const struct snapshot_meta *meta, char *err, size_t errlen)
	__attribute__((warn_unused_result));

struct snapshot {
	struct vm_config cfg;  /* from config.json (edits checked) */
	json_t *units;         /* state.json's units */
	char loader[64];
	int mem_fd;            /* memory-ranges, read-only */
	uint64_t memory_size;
	json_t *manifest;
};

/* Opens and verifies dir (sizes, checksums, versions, config edits).
 * Returns 0 or -errno with err set; on failure s holds nothing. */
int snapshot_open(const char *dir, struct snapshot *s, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void snapshot_close(struct snapshot *s);

#endif
