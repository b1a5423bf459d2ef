/* store/internal.h - private to store/: shared helpers of the formats. */
#ifndef FORKVM_STORE_INTERNAL_H
#define FORKVM_STORE_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <xxhash.h>
#include <zstd.h>

#include "store/store.h"

#define STORE_PAGE 4096ULL

/* err formatting: returns rc. */

/* Makes the object fan-out directories objects/00..ff that are missing
 * (someone deleted one): puts then go on. Returns 0 or -errno. */
int st_fanout_repair(struct store *st, char *err, size_t errlen);

/* 0 when text (len bytes) is one JSON object, else -EINVAL with err
 * saying "WHAT is not a JSON object: ..." (what restore would reject). */
int st_check_json_object(const char *what, const char *text, size_t len, char *err,
			 size_t errlen);

/* Canonical hex of a hash (33 bytes with the NUL). */
void st_hash_hex(XXH128_hash_t h, char out[33]);
void st_hash_id(XXH128_hash_t h, struct store_id *id);
bool st_page_is_zero(const uint8_t *p);
bool st_is_zero(const uint8_t *p, size_t len);
/* The snapshot directory's memory checksum step: (le64 index, page). */
void st_hash_page(XXH3_state_t *st, uint64_t index, const uint8_t *page);

/* Writes data to dirfd/name (O_EXCL, 0600) and fsyncs it. */
int st_write_file(int dirfd, const char *name, const void *data, size_t len, char *err,
		  size_t errlen) STORE_WUR;
/* fsync of a directory path. */
int st_fsync_dir(const char *path);
/* Removes a directory and the files in it (one level). */
void st_remove_tree(const char *dir);
/* dir must not exist or be an empty directory; resolves a symlink into
 * real (then dir = real). Returns 0 or -errno with err. */
int st_check_destination(const char **dir, char real[4096], char *err, size_t errlen) STORE_WUR;
/* Creates a temporary sibling of dir for writing it atomically; fills
 * parent and tmp. Returns 0 or -errno with err. */
int st_make_sibling(const char *dir, char parent[4096], char tmp[8400], char *err, size_t errlen) STORE_WUR;
/* Renames tmp onto dir (dir missing or an empty directory) and fsyncs
 * parent. */
int st_commit_sibling(const char *tmp, const char *dir, const char *parent, char *err,
		      size_t errlen) STORE_WUR;

/* JSON document text with a trailing newline (malloc'd), as the snapshot
 * directory writes it. */
char *st_json_text(const json_t *doc, size_t flags, size_t *len);

#endif

/* ------------------------------------------------------------ the store */

#include <pthread.h>

struct store {
	char root[4096];
	int root_fd;
	int lock_fd;      /* ROOT/lock: flock shared (put, load) or exclusive (gc) */
	uint32_t chunk_size;
	int zstd_level;
};

/* Object files: a 24-byte header, then the payload.
 *   0  u32 magic "FOBJ" (0x4a424f46 little-endian)
 *   4  u8  format version (1)
 *   5  u8  codec: 0 stored as is, 1 zstd
 *   6  u16 reserved (0)
 *   8  u64 raw length
 *   16 u64 payload length
 * The name is the XXH3-128 of the raw bytes. */
#define OBJ_MAGIC 0x4a424f46u
#define OBJ_VERSION 1
#define OBJ_HDR 24
#define OBJ_CODEC_NONE 0
#define OBJ_CODEC_ZSTD 1
#define OBJ_MAX_RAW (256ULL << 20)

/* "ROOT/objects/ab/abcdef...". */
void st_obj_path(const struct store *st, const struct store_id *id, char *out, size_t len);
/* Relative "objects/ab/abcdef..." (for *at() calls on root_fd). */
void st_obj_rel(const struct store_id *id, char *out, size_t len);
bool st_obj_exists(struct store *st, const struct store_id *id);
/* The raw length an object's header gives (0 if it cannot be read). */
uint64_t st_obj_raw_len(struct store *st, const struct store_id *id);

/* Encodes raw into an object file image (header + payload, malloc'd),
 * compressing with zstd when that saves space. */
int st_obj_encode(ZSTD_CCtx *cctx, const void *raw, size_t len, int level, uint8_t **out,
		  size_t *out_len) STORE_WUR;
/* The same into out (capacity st_obj_encode_bound(len)); returns the
 * object file's length, or -errno. */
size_t st_obj_encode_bound(size_t len);
long st_obj_encode_into(ZSTD_CCtx *cctx, const void *raw, size_t len, int level, uint8_t *out,
			size_t cap) STORE_WUR;
/* Decodes an object file image; checks the header, the lengths, and that
 * the raw bytes hash to id. Returns 0, -EBADMSG (corrupt), -errno. */
int st_obj_decode(const struct store_id *id, const uint8_t *file, size_t file_len, uint8_t **raw,
		  size_t *raw_len) STORE_WUR;
/* Decodes into a caller buffer of exactly want bytes (chunks). */
int st_obj_decode_into(ZSTD_DCtx *dctx, const struct store_id *id, const uint8_t *file,
		       size_t file_len, uint8_t *raw,
		       size_t want) STORE_WUR;

/* Writes one object (synchronously): tmp file, fsync, rename. Small
 * objects (JSON); chunks go through the io_uring writer. */
int st_obj_put(struct store *st, const void *raw, size_t len, struct store_id *id, char *err,
	       size_t errlen) STORE_WUR;

/* Store lock. */
int st_lock(struct store *st, bool exclusive) STORE_WUR;
void st_unlock(struct store *st);

/* Guest memory or a disk in a manifest: size bytes cut into chunks of the
 * manifest's chunk size; the non-zero ones listed. */
struct st_chunks {
	uint64_t size;
	uint64_t nr_chunks;      /* size / chunk_size, rounded up */
	uint64_t nr_stored;      /* non-zero chunks */
	uint64_t *index;         /* [nr_stored], ascending */
	struct store_id *id;     /* [nr_stored] */
	char of[20];             /* in messages after "chunk N": "" (memory) or " of disk vda" */
};

/* A snapshot's manifest, parsed. */
struct st_manifest {
	json_t *json;
	int version;             /* 1, or 2 with disks */
	struct store_id config, state, snapshot_json;
	bool has_snapshot_json;
	bool has_parent;
	struct store_id parent;
	char loader[64];
	char platform[16];
	unsigned vcpus;
	uint64_t memory_size;
	uint32_t chunk_size;
	struct st_chunks mem;    /* guest memory (size memory_size) */
	unsigned nr_disks;       /* in device order */
	struct st_disk {
		struct snap_disk disk;
		struct st_chunks c;
	} disks[STORE_MAX_DISKS];
	uint64_t created_realtime_ns;
};
/* The most a disk in a manifest can hold: the readers size per-chunk
 * tables and image files by it. */
#define ST_MAX_DISK_SIZE (1ULL << 40)
int st_manifest_read(struct store *st, const struct store_id *id, struct st_manifest *m, char *err,
		     size_t errlen) STORE_WUR;
void st_manifest_free(struct st_manifest *m);

/* store_tag with the store lock already held. */
int st_tag_locked(struct store *st, const struct store_id *id, const char *name, char *err,
		  size_t errlen) STORE_WUR;
/* Whether snapshot id is committed (ROOT/snapshots/<id> exists). */
bool st_snapshot_committed(struct store *st, const struct store_id *id);
/* Every committed snapshot id (ROOT/snapshots/). */
int st_snapshots(struct store *st, struct store_id **ids, size_t *n) STORE_WUR;
/* Tags naming id (NULL-terminated, malloc'd, free with st_free_strv). */
char **st_tags_of(struct store *st, const struct store_id *id);
void st_free_strv(char **v);

/* Worker threads: calls fn(arg, i) for i in [0, n) on every core. */
void st_parallel(unsigned threads, uint64_t n, void (*fn)(void *arg, uint64_t i, unsigned worker), void *arg);
unsigned st_cpus(void);

/* ------------------------------------------------------------ the I/O engine */

/* A job alternates CPU steps (on worker threads) and I/O (io_uring, on the
 * calling thread). A step sets io_op to request I/O, or IO_NONE when the
 * job is finished; after the I/O it runs again with io_res set. */
enum st_io_op {
	ST_IO_NONE,
	ST_IO_CREATE_WRITE, /* a new file rel (O_EXCL, 0400) gets buf[0, len), fsynced;
			     * io_res < len after a short write (a full disk) */
	ST_IO_READ_FILE,    /* file rel read into buf (capacity len) */
	ST_IO_PWRITE,       /* fd at off gets buf[0, len) */
	ST_IO_RENAME,       /* rel renamed to rel2 (both under the store root) */
	ST_IO_FSYNC_DIR,    /* directory rel fsynced */
};

struct st_job {
	uint64_t index;    /* which job of the run */
	int phase;         /* the step's own state; 0 at start */
	enum st_io_op io_op;
	char rel[96], rel2[96];
	int fd;
	uint64_t off;
	uint8_t *buf;
	size_t len;
	long io_res;       /* the last I/O: bytes, or -errno */
	/* A decoded chunk written out page run by page run (st_job_next_run). */
	uint8_t *raw;
	uint64_t raw_len, raw_off, cursor;
	/* for the engine */
	unsigned slot;
	unsigned pending;
	long res[4];
	struct st_job *next;
	void *user;        /* the step's own per-job data */
	/* The running worker's codec contexts (reused: a fresh context per
	 * chunk costs more than the compression). */
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	/* Buffers that stay with the job slot from job to job (st_job_scratch):
	 * no allocation, and no page faults on fresh memory, per chunk. */
	uint8_t *scratch[2];
	size_t scratch_cap[2];
};

/* Scratch buffer k (0 or 1) of j's slot, at least need bytes; NULL when
 * out of memory. Valid until the engine run ends. */
uint8_t *st_job_scratch(struct st_job *j, int k, size_t need);

/* Sets j up to pwrite the next run of non-zero pages of raw[0, raw_len)
 * (from cursor on) to fd at raw_off + its offset, so zero pages stay holes.
 * Returns false when no run is left (cursor at the end). After the write,
 * call again. */
bool st_job_next_run(struct st_job *j, int fd);

typedef void st_step_fn(void *ctx, struct st_job *j, unsigned worker);

/* Runs jobs 0..n-1, at most depth at once. Returns 0, or -errno when the
 * engine itself failed (each job reports its own errors through ctx). */
int st_engine_run(struct store *st, uint64_t n, unsigned depth, st_step_fn *step, void *ctx) STORE_WUR;
