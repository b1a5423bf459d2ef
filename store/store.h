/* store/store.h - forkvm's snapshot formats and content-addressed store:
 * the one public header of store/.
 *
 * Two on-disk formats live here, so the VMM and `forkctl store` share one
 * implementation of each:
 *   - the snapshot directory (docs/snapshot-format.md): config.json,
 *     state.json, sparse memory-ranges, snapshot.json with checksums;
 *   - the store (docs/store-format.md): immutable objects named by the
 *     XXH3-128 of their content and kept zstd-compressed, guest memory and
 *     disks cut into fixed-size chunks (zero chunks not stored), a
 *     snapshot being a manifest object whose name is its id; mutable tags;
 *     materialized memory and disk images that restores map (memory) or
 *     read (disks) copy-on-write.
 *
 * Every function returns >= 0 on success and -errno on failure, with a
 * human-readable reason in err where it takes one. Nothing here prints.
 */
#ifndef FORKVM_STORE_H
#define FORKVM_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_WUR __attribute__((warn_unused_result))

/* ------------------------------------------------------------ memory */

/* Guest memory as the formats see it: size bytes at base (a mapping of the
 * VM's RAM or of a memory-ranges file). Byte o is RAM at backing offset o.
 * A disk is seen the same way, through read when it is not mapped. */
struct store_mem {
	const uint8_t *base; /* NULL: read the bytes with read */
	uint64_t size;
	/* Calls cb for ranges (ascending, page aligned) outside of which every
	 * byte is zero; NULL means "anywhere". Returns 0 or the first
	 * negative value of cb, or -errno. */
	int (*populated)(void *arg, int (*cb)(void *cbarg, uint64_t off, uint64_t len), void *cbarg);
	/* Without base: reads len bytes at off into buf; called from several
	 * threads at once. Returns 0 or -errno. (The store only.) */
	int (*read)(void *arg, uint64_t off, void *buf, size_t len);
	void *arg;
};

/* A disk in a snapshot: "disk-vda"... in a directory, a member of "disks"
 * in a store manifest. */
#define STORE_MAX_DISKS 26 /* vda ... vdz */
struct snap_disk {
	char device[8]; /* "vda" */
	uint64_t size;  /* bytes */
	bool readonly;
};

/* ------------------------------------------------------------ URLs */

enum store_url_kind { STORE_URL_FILE, STORE_URL_STORE };

/* file:///DIR -> (FILE, DIR); store://REF or store:// -> (STORE, REF or "").
 * Returns 0, -EPROTONOSUPPORT for another scheme, -EINVAL if malformed. */
int store_url_parse(const char *url, enum store_url_kind *kind, char *out, size_t len, char *err,
		    size_t errlen) STORE_WUR;

/* ------------------------------------------------------------ snapshot directories */

#define SNAPDIR_FORMAT "forkvm-snapshot"
#define SNAPDIR_VERSION 1
#define SNAPDIR_STATE_FORMAT "forkvm-state"
#define SNAPDIR_STATE_VERSION 1

/* What a snapshot records besides the files' contents. */
struct snap_meta {
	const char *loader;   /* payload loader name */
	const char *platform; /* what ran the guest ("kvm", "process"); NULL: "kvm" */
	unsigned vcpus;
	uint64_t memory_size;
	uint64_t created_realtime_ns; /* 0: now */
	/* Files beyond config, state and memory (a Linux guest's disks:
	 * "disk-vda"...), written by fn into the new directory dfd before its
	 * manifest, their entries added to files ({"kind": "disk", "size"...}).
	 * NULL: none. Returns 0 or -errno with err set. */
	int (*extra_files)(void *arg, int dfd, json_t *files, char *err, size_t errlen);
	void *extra_arg;
};

/* Writes the directory dir atomically: it must not exist or be an empty
 * directory (a symlink to one counts as its target); anything else is
 * refused before a byte is written. config is the VM configuration object,
 * units the state units array. On failure nothing is left behind.
 * Returns 0 or -errno with err set. */
int snapdir_write(const char *dir, const json_t *config, const json_t *units,
		  const struct store_mem *mem, const struct snap_meta *meta, char *err,
		  size_t errlen) STORE_WUR;

/* A verified snapshot directory. */
struct snapdir {
	json_t *manifest;     /* snapshot.json */
	char *manifest_text;  /* ... and its bytes */
	size_t manifest_len;
	char *config;         /* config.json's text */
	size_t config_len;
	bool config_edited;   /* config.json differs from what was written */
	char *state;          /* state.json's text (checksum verified) */
	size_t state_len;
	json_t *units;        /* state.json's units (format and version checked) */
	char loader[64];
	char platform[16];    /* "kvm" when the manifest names none (before platforms) */
	unsigned vcpus;
	uint64_t memory_size;
	int mem_fd;           /* memory-ranges, read-only, size and checksum verified */
	unsigned nr_disks;    /* "disk-*" files (present, of their size) */
	struct snap_disk disks[STORE_MAX_DISKS]; /* in device order */
};

/* Opens and verifies dir: format and versions, every checksum but
 * config.json's (an edited config.json is reported in config_edited for
 * the caller to judge; the original is in manifest["config"]). Returns 0
 * or -errno (-EBADMSG for a checksum mismatch) with err set; on failure s
 * holds nothing. */
int snapdir_open(const char *dir, struct snapdir *s, char *err, size_t errlen) STORE_WUR;
void snapdir_close(struct snapdir *s);

/* The snapshot.json a directory of these files would have: checksums of
 * config and state texts and of mem's non-zero pages, and the entries of
 * extra (the disks', or NULL). Returns NULL on failure. (Export of a
 * snapshot taken straight into the store.) */
json_t *snapdir_manifest(const char *config, size_t config_len, const char *state,
			 size_t state_len, const struct store_mem *mem, const struct snap_meta *meta,
			 const json_t *config_obj, const json_t *extra, char *err, size_t errlen);

/* The manifest entry of a disk file ("disk-vda": {"kind": "disk", "size",
 * "device", "readonly"}). NULL when out of memory. */
json_t *snapdir_disk_entry(const struct snap_disk *d);

/* ------------------------------------------------------------ the store */

#define STORE_FORMAT "forkvm-store"
#define STORE_VERSION 1
#define STORE_DEFAULT_CHUNK (256U << 10)

struct store_id {
	uint8_t b[16]; /* XXH3-128, canonical (big-endian) bytes */
};

/* 32 lowercase hex digits and a NUL. */
void store_id_hex(const struct store_id *id, char out[33]);
/* Exactly 32 hex digits. Returns 0 or -EINVAL. */
int store_id_parse(const char *hex, struct store_id *id) STORE_WUR;
bool store_id_equal(const struct store_id *a, const struct store_id *b);

struct store;

/* The store root to use when none is given: $FORKVM_STORE, else
 * /var/lib/forkvm/store for root, else $XDG_DATA_HOME/forkvm/store (or
 * ~/.local/share/forkvm/store). */
const char *store_default_root(char *buf, size_t len);

/* Opens the store at root, creating it (mode 0700) with chunk_size (0:
 * STORE_DEFAULT_CHUNK) when create and it does not exist yet. Returns 0 or
 * -errno with err set. */
int store_open(const char *root, bool create, uint32_t chunk_size, struct store **out, char *err,
	       size_t errlen) STORE_WUR;
void store_close(struct store *st);
uint32_t store_chunk_size(const struct store *st);
const char *store_root(const struct store *st);

/* A tag (exact name first) or a unique prefix (1-32 hex digits) of a
 * snapshot id. Returns 0, -ENOENT (nothing matches), -EINVAL (ambiguous
 * prefix, bad syntax) with err set. */
int store_resolve(struct store *st, const char *ref, struct store_id *id, char *err,
		  size_t errlen) STORE_WUR;
/* Tag names: [A-Za-z0-9][A-Za-z0-9._-]*, at most 128 bytes. */
bool store_tag_valid(const char *name);

struct store_put_stats {
	uint64_t logical_bytes;  /* guest memory size and the disks' sizes */
	uint64_t data_chunks;    /* non-zero chunks (memory and disks) */
	uint64_t reused_chunks;  /* already in the store (dedup) or unchanged from the parent */
	uint64_t new_chunks;
	uint64_t new_raw_bytes;  /* of the new chunks */
	uint64_t new_stored_bytes;
	uint64_t disk_bytes;       /* of logical_bytes: the disks' */
	uint64_t disk_data_chunks; /* of data_chunks: the disks' */
	uint64_t disk_new_chunks;  /* of new_chunks: the disks' */
	double seconds;
};

/* A disk to put with a snapshot. */
struct store_disk_in {
	struct snap_disk disk;
	const struct store_mem *data; /* its bytes (size disk.size) */
	/* Incremental (with the snapshot's parent): true for a chunk that may
	 * differ from the parent's disk of this device, which this disk was
	 * made from. NULL: the disk is not the parent's (every chunk is read). */
	bool (*changed)(void *arg, uint64_t chunk, uint32_t chunk_size);
	void *changed_arg;
};

/* A snapshot to put into the store. */
struct store_snapshot_in {
	const json_t *config;       /* the VM configuration object */
	const json_t *units;        /* state units */
	const char *snapshot_json;  /* an imported directory's snapshot.json, kept
				     * verbatim for export; NULL when taken live */
	size_t snapshot_json_len;
	const char *config_text, *state_text; /* imported: verbatim texts (else generated) */
	size_t config_len, state_len;
	const struct snap_meta *meta;
	const struct store_mem *mem;
	/* Incremental: chunks for which changed() is false are the parent's. */
	const struct store_id *parent;
	bool (*changed)(void *arg, uint64_t chunk, uint32_t chunk_size);
	void *changed_arg;
	/* Disks (in device order; at most STORE_MAX_DISKS). */
	const struct store_disk_in *disks;
	unsigned nr_disks;
};

/* Puts a snapshot: memory and disk chunks hashed and compressed on every
 * core, written with io_uring, the manifest and then the tag last. Returns
 * 0 and its id. */
int store_put_snapshot(struct store *st, const struct store_snapshot_in *in, const char *tag,
		       struct store_id *id, struct store_put_stats *stats, char *err,
		       size_t errlen) STORE_WUR;

/* Imports a snapshot directory (verified first), its disks included. */
int store_put_dir(struct store *st, const char *dir, const char *tag, struct store_id *id,
		  struct store_put_stats *stats, char *err, size_t errlen) STORE_WUR;

/* Writes snapshot id as a directory (atomically, like snapdir_write):
 * byte-identical to the directory it was imported from, disks included
 * (sparse: zero pages are holes). */
int store_export(struct store *st, const struct store_id *id, const char *dir, char *err,
		 size_t errlen) STORE_WUR;

/* What a restore needs of a snapshot. */
struct store_snapshot {
	struct store_id id;
	json_t *manifest;
	char *config;         /* config.json text */
	size_t config_len;
	json_t *units;        /* state units */
	char loader[64];
	char platform[16];    /* "kvm" when the manifest names none */
	unsigned vcpus;
	uint64_t memory_size;
	int mem_fd;           /* the materialized image, read-only, share-locked
			       * while open: gc never evicts it */
	uint32_t chunk_size;
	uint64_t nr_chunks;
	bool *chunk_nonzero;  /* per chunk: stored (else zero) - for incremental snapshots */
	struct store_id *chunk_ids; /* per chunk (valid where chunk_nonzero) */
	/* The disks, each materialized like memory: the image read-only and
	 * share-locked while open (a restored VM's copy-on-write base). */
	unsigned nr_disks;
	struct store_disk {
		struct snap_disk disk;
		int fd;
	} disks[STORE_MAX_DISKS];
};

/* Loads snapshot id for a restore, materializing its memory and disk
 * images first if they are not cached (every chunk verified against its
 * name). Returns 0 or -errno with err naming the object and the snapshot. */
int store_load(struct store *st, const struct store_id *id, struct store_snapshot *out, char *err,
	       size_t errlen) STORE_WUR;
void store_snapshot_free(struct store_snapshot *s);

/* Tags. */
int store_tag(struct store *st, const struct store_id *id, const char *name, char *err,
	      size_t errlen) STORE_WUR;

/* Listing: one call per snapshot (any order). */
struct store_entry {
	struct store_id id;
	const json_t *manifest;
	const char *const *tags; /* NULL-terminated */
};
int store_list(struct store *st, int (*cb)(void *arg, const struct store_entry *e), void *arg,
	       char *err, size_t errlen) STORE_WUR;

/* Removes the snapshot (and every tag naming it); its objects go at the
 * next gc. */
int store_rm(struct store *st, const struct store_id *id, char *err, size_t errlen) STORE_WUR;

struct store_gc_stats {
	uint64_t objects_kept, objects_removed, bytes_removed;
	uint64_t temp_removed;
	uint64_t images_removed, image_bytes_removed, images_in_use;
};

/* Removes every object no snapshot references, leftovers of interrupted
 * writes, images of removed snapshots, and images beyond image_budget
 * bytes (least recently used first; never one a running VM maps).
 * image_budget UINT64_MAX: keep all. Exclusive store lock. */
int store_gc(struct store *st, uint64_t image_budget, struct store_gc_stats *stats, char *err,
	     size_t errlen) STORE_WUR;

/* Verifies every object of snapshot id (NULL: of every snapshot) and the
 * cached images; cb gets each problem (an object and a snapshot using it).
 * Returns the number of problems (0: all good) or -errno. */
int store_verify(struct store *st, const struct store_id *id,
		 void (*cb)(void *arg, const char *problem), void *arg, char *err, size_t errlen) STORE_WUR;

struct store_du {
	uint64_t snapshots;
	uint64_t logical_bytes;    /* sum of the snapshots' memory and disk sizes */
	uint64_t referenced_bytes; /* raw bytes of all chunks, counted per snapshot */
	uint64_t unique_bytes;     /* raw bytes of distinct objects */
	uint64_t stored_bytes;     /* object files on disk */
	uint64_t objects;
	uint64_t image_bytes;      /* materialized images (allocated) */
	uint64_t images;
};
int store_du(struct store *st, struct store_du *du, char *err, size_t errlen) STORE_WUR;

/* Reads a whole object (verified against its name). */
int store_read_object(struct store *st, const struct store_id *id, char **data, size_t *len,
		      char *err, size_t errlen) STORE_WUR;

#endif
