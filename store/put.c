/* store/put.c - putting snapshots into the store: chunks hashed and
 * compressed on every core and written through io_uring to temporary
 * names, each fsynced; renamed into place; the object directories they
 * went to fsynced; then the manifest object, the snapshot's commit marker,
 * and the tag, in that order, each durable before the next. A crash
 * anywhere leaves no manifest naming a missing object; leftovers in tmp/
 * are gc's. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zstd.h>

#include "common/util.h"
#include "store/internal.h"

enum chunk_state { CH_UNKNOWN, CH_ZERO, CH_STORED };

struct put {
	struct store *st;
	const struct store_mem *mem;
	uint32_t cs;
	uint64_t nr_chunks;
	uint8_t *state;         /* enum chunk_state per chunk */
	bool *candidate;        /* per chunk: must be looked at */
	bool *is_new;           /* per chunk: written to tmp/ by this put */
	struct store_id *ids;   /* per chunk */
	uint64_t *todo;         /* candidate chunks (engine jobs) */
	uint64_t ntodo;
	uint64_t *newc;         /* new chunks (rename jobs) */
	uint64_t nnew;
	unsigned dirs[256];     /* objects/xx directories renamed into */
	unsigned ndirs;
	uint64_t reused, nstored_new, new_raw, new_stored;
	const struct store_id *parent; /* incremental: the parent used */
	int tid;                /* the putting thread: temporary names are per put */
	pthread_mutex_t mu;
	int rc;
	char err[256];
};

static void put_error(struct put *p, int rc, const char *what, uint64_t chunk)
{
	pthread_mutex_lock(&p->mu);
	if (!p->rc) {
		p->rc = rc;
		snprintf(p->err, sizeof(p->err), "%s chunk %llu: %s", what, (unsigned long long)chunk,
			 strerror(-rc));
	}
	pthread_mutex_unlock(&p->mu);
}

static void tmp_name(const struct put *p, uint64_t chunk, char *out, size_t len)
{
	char hex[33];
	store_id_hex(&p->ids[chunk], hex);
	snprintf(out, len, "tmp/%s.%d.%d.%llu", hex, (int)getpid(), p->tid, (unsigned long long)chunk);
}

static int mark_populated(void *arg, uint64_t off, uint64_t len)
{
	struct put *p = arg;
	if (!len)
		return 0;
	uint64_t first = off / p->cs, last = MIN((off + len - 1) / p->cs, p->nr_chunks - 1);
	for (uint64_t c = first; c <= last; c++)
		if (p->state[c] == CH_UNKNOWN)
			p->candidate[c] = true;
	return 0;
}

/* Writes j's object file again, synchronously, after the engine's write
 * came back short (a full disk writes what fits): then either the object
 * is whole or the error that stopped it (ENOSPC, EDQUOT...) is known.
 * Returns 0 or -errno. */
static int rewrite_object(struct store *st, const struct st_job *j)
{
	int fd, rc;

	unlinkat(st->root_fd, j->rel, 0);
	fd = openat(st->root_fd, j->rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
	if (fd < 0)
		return -errno;
	rc = write_full(fd, j->buf, j->len);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

/* Engine step: hash a chunk; compress and write it when it is new. */
static void chunk_step(void *ctx, struct st_job *j, unsigned worker)
{
	struct put *p = ctx;
	uint64_t c = p->todo[j->index];

	(void)worker;
	if (j->phase == 1) {
		int rc = j->io_res < 0 ? (int)j->io_res : 0;
		if (rc == 0 && j->io_res != (long)j->len)
			rc = rewrite_object(p->st, j);
		if (rc == 0) {
			p->is_new[c] = true;
			return;
		}
		/* The file may exist, partly written: its name is this put's. */
		unlinkat(p->st->root_fd, j->rel, 0);
		put_error(p, rc, "writing", c);
		return;
	}
	uint64_t off = c * p->cs, len = MIN((uint64_t)p->cs, p->mem->size - off);
	const uint8_t *data = p->mem->base + off;
#ifdef MADV_POPULATE_READ
	/* Map the chunk's pages in one call rather than one fault each. */
	(void)madvise((void *)(uintptr_t)data, len, MADV_POPULATE_READ);
#endif
	if (st_is_zero(data, len)) {
		p->state[c] = CH_ZERO;
		return;
	}
	st_hash_id(XXH3_128bits(data, len), &p->ids[c]);
	p->state[c] = CH_STORED;
	if (st_obj_exists(p->st, &p->ids[c])) {
		__atomic_add_fetch(&p->reused, 1, __ATOMIC_RELAXED);
		return;
	}
	size_t cap = st_obj_encode_bound(len);
	uint8_t *file = st_job_scratch(j, 0, cap);
	long flen = file ? st_obj_encode_into(j->cctx, data, len, p->st->zstd_level, file, cap) : -ENOMEM;
	if (flen < 0) {
		put_error(p, (int)flen, "compressing", c);
		return;
	}
	__atomic_add_fetch(&p->nstored_new, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&p->new_raw, len, __ATOMIC_RELAXED);
	__atomic_add_fetch(&p->new_stored, (uint64_t)flen, __ATOMIC_RELAXED);
	tmp_name(p, c, j->rel, sizeof(j->rel));
	j->buf = file;
	j->len = (size_t)flen;
	j->io_op = ST_IO_CREATE_WRITE;
	j->phase = 1;
}

/* Engine step: rename a new chunk from tmp/ into objects/. */
static void rename_step(void *ctx, struct st_job *j, unsigned worker)
{
	struct put *p = ctx;
	uint64_t c = p->newc[j->index];

	(void)worker;
	if (j->phase == 1) {
		if (j->io_res < 0)
			put_error(p, (int)j->io_res, "publishing", c);
		else
			p->is_new[c] = false; /* in place now */
		return;
	}
	tmp_name(p, c, j->rel, sizeof(j->rel));
	st_obj_rel(&p->ids[c], j->rel2, sizeof(j->rel2));
	j->io_op = ST_IO_RENAME;
	j->phase = 1;
}

/* Engine step: fsync an objects/xx directory that got new names. */
static void dirsync_step(void *ctx, struct st_job *j, unsigned worker)
{
	struct put *p = ctx;
	unsigned d = p->dirs[j->index];

	(void)worker;
	if (j->phase == 1) {
		if (j->io_res < 0) {
			pthread_mutex_lock(&p->mu);
			if (!p->rc) {
				p->rc = (int)j->io_res;
				snprintf(p->err, sizeof(p->err), "fsync of objects/%02x: %s", d,
					 strerror((int)-j->io_res));
			}
			pthread_mutex_unlock(&p->mu);
		}
		return;
	}
	snprintf(j->rel, sizeof(j->rel), "objects/%02x", d);
	j->io_op = ST_IO_FSYNC_DIR;
	j->phase = 1;
}

/* Removes what this put left in tmp/ (after a failure). */
static void put_cleanup(struct put *p)
{
	char rel[128];
	for (uint64_t c = 0; c < p->nr_chunks; c++) {
		if (!p->is_new[c])
			continue;
		tmp_name(p, c, rel, sizeof(rel));
		unlinkat(p->st->root_fd, rel, 0);
	}
}

static int put_text(struct store *st, const char *text, size_t len, struct store_id *id, char *err,
		    size_t errlen)
{
	return st_obj_put(st, text, len, id, err, errlen);
}

static json_t *id_json(const struct store_id *id)
{
	char hex[33];
	store_id_hex(id, hex);
	return json_string(hex);
}

/* Writes the manifest, commits the snapshot, tags it. */
static int commit(struct store *st, const struct store_snapshot_in *in, struct put *p,
		  const char *tag, struct store_id *id, char *err, size_t errlen)
{
	char *ctext = NULL, *stext = NULL, *mtext = NULL, rel[64], hex[33];
	size_t clen, slen, mlen;
	struct store_id cid, sid, jid;
	json_t *state = NULL, *m = NULL, *chunks = json_array();
	int rc;

	if (in->config_text) {
		rc = put_text(st, in->config_text, in->config_len, &cid, err, errlen);
	} else {
		ctext = st_json_text(in->config, JSON_INDENT(2) | JSON_SORT_KEYS, &clen);
		rc = ctext ? put_text(st, ctext, clen, &cid, err, errlen) : -ENOMEM;
	}
	if (rc == 0 && in->state_text) {
		rc = put_text(st, in->state_text, in->state_len, &sid, err, errlen);
	} else if (rc == 0) {
		state = json_pack("{s:s,s:i,s:O}", "format", SNAPDIR_STATE_FORMAT, "version",
				  SNAPDIR_STATE_VERSION, "units", in->units);
		stext = state ? st_json_text(state, JSON_COMPACT, &slen) : NULL;
		rc = stext ? put_text(st, stext, slen, &sid, err, errlen) : -ENOMEM;
	}
	if (rc == 0 && in->snapshot_json)
		rc = put_text(st, in->snapshot_json, in->snapshot_json_len, &jid, err, errlen);
	if (rc < 0 || !chunks) {
		rc = rc < 0 ? rc : -ENOMEM;
		goto out;
	}
	for (uint64_t c = 0; c < p->nr_chunks; c++)
		if (p->state[c] == CH_STORED)
			json_array_append_new(chunks, json_pack("[I,o]", (json_int_t)c, id_json(&p->ids[c])));
	uint64_t created = in->meta->created_realtime_ns ? in->meta->created_realtime_ns : time_real_ns();
	m = json_pack("{s:s,s:i,s:s,s:I,s:o,s:s,s:s,s:i,s:{s:I,s:I,s:O},s:{s:o,s:o}}", "format",
		      "forkvm-store-snapshot", "version", 1, "forkvm_version", "0.1.0",
		      "created_realtime_ns", (json_int_t)created, "parent",
		      p->parent ? id_json(p->parent) : json_null(), "loader", in->meta->loader,
		      "platform", in->meta->platform ? in->meta->platform : "kvm",
		      "vcpus", (int)in->meta->vcpus, "memory", "size", (json_int_t)p->mem->size,
		      "chunk_size", (json_int_t)p->cs, "chunks", chunks, "files", "config.json",
		      id_json(&cid), "state.json", id_json(&sid));
	if (m && in->snapshot_json)
		json_object_set_new(json_object_get(m, "files"), "snapshot.json", id_json(&jid));
	mtext = m ? st_json_text(m, JSON_COMPACT, &mlen) : NULL;
	if (!mtext) {
		rc = -ENOMEM;
		goto out;
	}
	rc = put_text(st, mtext, mlen, id, err, errlen);
	if (rc < 0)
		goto out;
	/* The commit point: the snapshot exists once its marker does. */
	store_id_hex(id, hex);
	snprintf(rel, sizeof(rel), "snapshots/%s", hex);
	int fd = openat(st->root_fd, rel, O_WRONLY | O_CREAT | O_CLOEXEC, 0400);
	if (fd < 0 || fsync(fd) < 0) {
		rc = err_fail(err, errlen, -errno, "cannot commit snapshot %s: %s", hex, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	close(fd);
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/snapshots", st->root);
	(void)st_fsync_dir(dir);
	if (tag)
		rc = st_tag_locked(st, id, tag, err, errlen);
out:
	if (rc == -ENOMEM)
		err_fail(err, errlen, rc, "out of memory");
	free(ctext);
	free(stext);
	free(mtext);
	json_decref(state);
	json_decref(chunks);
	json_decref(m);
	return rc;
}

int store_put_snapshot(struct store *st, const struct store_snapshot_in *in, const char *tag,
		       struct store_id *id, struct store_put_stats *stats, char *err, size_t errlen)
{
	struct put p = { .st = st, .mem = in->mem, .cs = st->chunk_size, .tid = (int)gettid() };
	struct st_manifest parent;
	uint64_t t0 = time_mono_ns();
	int rc;

	memset(&parent, 0, sizeof(parent));
	if (tag && !store_tag_valid(tag))
		return err_fail(err, errlen, -EINVAL,
			       "bad tag name '%s' (letters, digits, '.', '_', '-'; at most 128)", tag);
	if (in->mem->size == 0 || in->mem->size % STORE_PAGE)
		return err_fail(err, errlen, -EINVAL,
			       "memory size %llu is not a whole number of %u-byte pages",
			       (unsigned long long)in->mem->size, (unsigned)STORE_PAGE);
	rc = st_lock(st, false);
	if (rc < 0)
		return err_fail(err, errlen, rc, "store lock: %s", strerror(-rc));
	if ((rc = st_fanout_repair(st, err, errlen)) < 0) {
		st_unlock(st);
		return rc;
	}
	pthread_mutex_init(&p.mu, NULL);
	p.nr_chunks = (in->mem->size + p.cs - 1) / p.cs;
	p.state = calloc(p.nr_chunks, 1);
	p.candidate = calloc(p.nr_chunks, sizeof(bool));
	p.is_new = calloc(p.nr_chunks, sizeof(bool));
	p.ids = calloc(p.nr_chunks, sizeof(*p.ids));
	p.todo = calloc(p.nr_chunks, sizeof(*p.todo));
	p.newc = calloc(p.nr_chunks, sizeof(*p.newc));
	if (!p.state || !p.candidate || !p.is_new || !p.ids || !p.todo || !p.newc) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}

	/* Incremental: unchanged chunks are the parent's. The parent must be
	 * committed (then gc, kept out by the lock, cannot have taken any of
	 * its objects) and laid out alike; else this is a full snapshot. */
	if (in->parent && st_snapshot_committed(st, in->parent) &&
	    st_manifest_read(st, in->parent, &parent, NULL, 0) == 0 && parent.chunk_size == p.cs &&
	    parent.memory_size == in->mem->size) {
		p.parent = in->parent;
		for (uint64_t c = 0; c < p.nr_chunks; c++)
			if (!in->changed || !in->changed(in->changed_arg, c, p.cs))
				p.state[c] = CH_ZERO;
		for (uint64_t k = 0; k < parent.nr_stored; k++) {
			uint64_t c = parent.chunk_index[k];
			if (p.state[c] == CH_ZERO) {
				p.state[c] = CH_STORED;
				p.ids[c] = parent.chunk_id[k];
				p.reused++;
			}
		}
	}
	/* Only chunks that may hold data are read: with a parent, the changed
	 * ones; else those the memory says are populated. */
	if (p.parent)
		rc = mark_populated(&p, 0, in->mem->size);
	else if (in->mem->populated)
		rc = in->mem->populated(in->mem->arg, mark_populated, &p);
	else
		rc = mark_populated(&p, 0, in->mem->size);
	if (rc < 0) {
		err_fail(err, errlen, rc, "cannot find the populated memory: %s", strerror(-rc));
		goto out;
	}
	for (uint64_t c = 0; c < p.nr_chunks; c++) {
		if (p.candidate[c])
			p.todo[p.ntodo++] = c;
		else if (p.state[c] == CH_UNKNOWN)
			p.state[c] = CH_ZERO;
	}
	rc = st_engine_run(st, p.ntodo, 64, chunk_step, &p);
	if (rc == 0)
		rc = p.rc;
	if (rc < 0) {
		err_fail(err, errlen, rc, "%s", p.rc ? p.err : strerror(-rc));
		goto out;
	}
	/* New chunks are durable (fsynced by the engine): put them in place,
	 * then make their names durable. */
	bool dir_used[256] = { false };
	for (uint64_t c = 0; c < p.nr_chunks; c++) {
		if (!p.is_new[c])
			continue;
		p.newc[p.nnew++] = c;
		dir_used[p.ids[c].b[0]] = true;
	}
	for (unsigned d = 0; d < 256; d++)
		if (dir_used[d])
			p.dirs[p.ndirs++] = d;
	rc = st_engine_run(st, p.nnew, 128, rename_step, &p);
	if (rc == 0)
		rc = p.rc;
	if (rc == 0)
		rc = st_engine_run(st, p.ndirs, 64, dirsync_step, &p);
	if (rc == 0)
		rc = p.rc;
	if (rc < 0) {
		err_fail(err, errlen, rc, "%s", p.rc ? p.err : strerror(-rc));
		goto out;
	}
	rc = commit(st, in, &p, tag, id, err, errlen);
	if (rc == 0 && stats) {
		uint64_t data = 0;
		for (uint64_t c = 0; c < p.nr_chunks; c++)
			data += p.state[c] == CH_STORED;
		*stats = (struct store_put_stats){
			.logical_bytes = in->mem->size, .data_chunks = data, .reused_chunks = p.reused,
			.new_chunks = p.nstored_new, .new_raw_bytes = p.new_raw,
			.new_stored_bytes = p.new_stored, .seconds = (time_mono_ns() - t0) / 1e9,
		};
	}
out:
	if (rc < 0 && p.is_new)
		put_cleanup(&p);
	st_unlock(st);
	st_manifest_free(&parent);
	pthread_mutex_destroy(&p.mu);
	free(p.state);
	free(p.candidate);
	free(p.is_new);
	free(p.ids);
	free(p.todo);
	free(p.newc);
	return rc;
}

/* ------------------------------------------------------------ put_dir */

struct extents_arg {
	int fd;
	uint64_t size;
};

static int dir_populated(void *arg, int (*cb)(void *cbarg, uint64_t off, uint64_t len), void *cbarg)
{
	struct extents_arg *a = arg;
	return fd_data_extents(a->fd, a->size, STORE_PAGE, cb, cbarg);
}

int store_put_dir(struct store *st, const char *dir, const char *tag, struct store_id *id,
		  struct store_put_stats *stats, char *err, size_t errlen)
{
	struct snapdir sd;
	int rc = snapdir_open(dir, &sd, err, errlen);

	if (rc < 0)
		return rc;
	if (sd.nr_disks) {
		snapdir_close(&sd);
		return err_fail(err, errlen, -ENOTSUP,
			    "%s holds disk images (a Linux guest's); the store does not keep disks yet: "
			    "restore it from the directory",
			    dir);
	}
	void *mem = mmap(NULL, sd.memory_size, PROT_READ, MAP_SHARED, sd.mem_fd, 0);
	if (mem == MAP_FAILED) {
		rc = err_fail(err, errlen, -errno, "cannot map %s/memory-ranges: %s", dir, strerror(errno));
		snapdir_close(&sd);
		return rc;
	}
	const json_t *created = json_object_get(sd.manifest, "created_realtime_ns");
	struct snap_meta meta = {
		.loader = sd.loader, .platform = sd.platform, .vcpus = sd.vcpus,
		.memory_size = sd.memory_size,
		.created_realtime_ns = json_is_integer(created) ? (uint64_t)json_integer_value(created) : 0,
	};
	struct extents_arg ea = { sd.mem_fd, sd.memory_size };
	struct store_mem sm = { .base = mem, .size = sd.memory_size, .populated = dir_populated, .arg = &ea };
	struct store_snapshot_in in = {
		.snapshot_json = sd.manifest_text, .snapshot_json_len = sd.manifest_len,
		.config_text = sd.config, .config_len = sd.config_len,
		.state_text = sd.state, .state_len = sd.state_len,
		.meta = &meta, .mem = &sm,
	};
	rc = store_put_snapshot(st, &in, tag, id, stats, err, errlen);
	munmap(mem, sd.memory_size);
	snapdir_close(&sd);
	return rc;
}
