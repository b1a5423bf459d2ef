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
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/util.h"
#include "store/internal.h"

enum chunk_state { CH_UNKNOWN, CH_ZERO, CH_STORED };

/* Guest memory (region 0) or a disk: cut into chunks at fixed offsets. */
struct region {
	const struct store_mem *data;
	char of[20];            /* in messages after "chunk N": "" or " of disk vda" */
	uint64_t nr_chunks;
	uint8_t *state;         /* enum chunk_state per chunk */
	bool *candidate;        /* per chunk: must be looked at */
	bool *is_new;           /* per chunk: written to tmp/ by this put */
	struct store_id *ids;   /* per chunk */
	uint64_t new_chunks;    /* written by this put */
};

/* A chunk of a region: an engine job. */
struct chunk_ref {
	unsigned r;
	uint64_t c;
};

struct put {
	struct store *st;
	uint32_t cs;
	struct region rg[1 + STORE_MAX_DISKS];
	unsigned nrg;
	struct chunk_ref *todo; /* candidate chunks (engine jobs) */
	uint64_t ntodo;
	struct chunk_ref *newc; /* new chunks (rename jobs) */
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

static void put_error(struct put *p, int rc, const char *what, struct chunk_ref ref)
{
	pthread_mutex_lock(&p->mu);
	if (!p->rc) {
		p->rc = rc;
		snprintf(p->err, sizeof(p->err), "%s chunk %llu%s: %s", what,
			 (unsigned long long)ref.c, p->rg[ref.r].of, strerror(-rc));
	}
	pthread_mutex_unlock(&p->mu);
}

static void tmp_name(const struct put *p, struct chunk_ref ref, char *out, size_t len)
{
	char hex[33];
	store_id_hex(&p->rg[ref.r].ids[ref.c], hex);
	snprintf(out, len, "tmp/%s.%d.%d.%u.%llu", hex, (int)getpid(), p->tid, ref.r,
		 (unsigned long long)ref.c);
}

struct mark_arg {
	struct put *p;
	struct region *g;
};

static int mark_populated(void *arg, uint64_t off, uint64_t len)
{
	const struct mark_arg *a = arg;
	struct region *g = a->g;
	if (!len || !g->nr_chunks)
		return 0;
	uint64_t first = off / a->p->cs, last = MIN((off + len - 1) / a->p->cs, g->nr_chunks - 1);
	for (uint64_t c = first; c <= last; c++)
		if (g->state[c] == CH_UNKNOWN)
			g->candidate[c] = true;
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
	struct chunk_ref ref = p->todo[j->index];
	struct region *g = &p->rg[ref.r];
	uint64_t c = ref.c;

	(void)worker;
	if (j->phase == 1) {
		int rc = j->io_res < 0 ? (int)j->io_res : 0;
		if (rc == 0 && j->io_res != (long)j->len)
			rc = rewrite_object(p->st, j);
		if (rc == 0) {
			g->is_new[c] = true;
			return;
		}
		/* The file may exist, partly written: its name is this put's. */
		unlinkat(p->st->root_fd, j->rel, 0);
		put_error(p, rc, "writing", ref);
		return;
	}
	uint64_t off = c * p->cs, len = MIN((uint64_t)p->cs, g->data->size - off);
	const uint8_t *data = g->data->base ? g->data->base + off : NULL;
	if (data) {
#ifdef MADV_POPULATE_READ
		/* Map the chunk's pages in one call rather than one fault each. */
		(void)madvise((void *)(uintptr_t)data, len, MADV_POPULATE_READ);
#endif
	} else {
		uint8_t *buf = st_job_scratch(j, 1, len);
		int rc = buf ? g->data->read(g->data->arg, off, buf, len) : -ENOMEM;
		if (rc < 0) {
			put_error(p, rc, "reading", ref);
			return;
		}
		data = buf;
	}
	if (st_is_zero(data, len)) {
		g->state[c] = CH_ZERO;
		return;
	}
	st_hash_id(XXH3_128bits(data, len), &g->ids[c]);
	g->state[c] = CH_STORED;
	if (st_obj_exists(p->st, &g->ids[c])) {
		__atomic_add_fetch(&p->reused, 1, __ATOMIC_RELAXED);
		return;
	}
	size_t cap = st_obj_encode_bound(len);
	uint8_t *file = st_job_scratch(j, 0, cap);
	long flen = file ? st_obj_encode_into(j->cctx, data, len, p->st->zstd_level, file, cap) : -ENOMEM;
	if (flen < 0) {
		put_error(p, (int)flen, "compressing", ref);
		return;
	}
	__atomic_add_fetch(&p->nstored_new, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&g->new_chunks, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&p->new_raw, len, __ATOMIC_RELAXED);
	__atomic_add_fetch(&p->new_stored, (uint64_t)flen, __ATOMIC_RELAXED);
	tmp_name(p, ref, j->rel, sizeof(j->rel));
	j->buf = file;
	j->len = (size_t)flen;
	j->io_op = ST_IO_CREATE_WRITE;
	j->phase = 1;
}

/* Engine step: rename a new chunk from tmp/ into objects/. */
static void rename_step(void *ctx, struct st_job *j, unsigned worker)
{
	struct put *p = ctx;
	struct chunk_ref ref = p->newc[j->index];

	(void)worker;
	if (j->phase == 1) {
		if (j->io_res < 0)
			put_error(p, (int)j->io_res, "publishing", ref);
		else
			p->rg[ref.r].is_new[ref.c] = false; /* in place now */
		return;
	}
	tmp_name(p, ref, j->rel, sizeof(j->rel));
	st_obj_rel(&p->rg[ref.r].ids[ref.c], j->rel2, sizeof(j->rel2));
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
	for (unsigned r = 0; r < p->nrg; r++) {
		for (uint64_t c = 0; p->rg[r].is_new && c < p->rg[r].nr_chunks; c++) {
			if (!p->rg[r].is_new[c])
				continue;
			tmp_name(p, (struct chunk_ref){ r, c }, rel, sizeof(rel));
			unlinkat(p->st->root_fd, rel, 0);
		}
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

/* A region's stored chunks: [[index, id], ...]. */
static json_t *chunks_json(const struct region *g)
{
	json_t *chunks = json_array();
	for (uint64_t c = 0; chunks && c < g->nr_chunks; c++) {
		if (g->state[c] != CH_STORED)
			continue;
		json_t *e = json_pack("[I,o]", (json_int_t)c, id_json(&g->ids[c]));
		if (json_array_append_new(chunks, e) < 0) {
			json_decref(chunks);
			return NULL;
		}
	}
	return chunks;
}

/* Writes the manifest, commits the snapshot, tags it. */
static int commit(struct store *st, const struct store_snapshot_in *in, struct put *p,
		  const char *tag, struct store_id *id, char *err, size_t errlen)
{
	char *ctext = NULL, *stext = NULL, *mtext = NULL, rel[64], hex[33];
	size_t clen, slen, mlen;
	struct store_id cid, sid, jid;
	json_t *state = NULL, *m = NULL, *chunks = chunks_json(&p->rg[0]), *disks = NULL;
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
	/* Disks: version 2 of the manifest (a reader of version 1 would
	 * restore without them). */
	if (in->nr_disks && !(disks = json_array())) {
		rc = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < in->nr_disks; i++) {
		const struct snap_disk *d = &in->disks[i].disk;
		json_t *dc = chunks_json(&p->rg[1 + i]);
		json_t *e = dc ? json_pack("{s:s,s:I,s:b,s:o}", "device", d->device, "size",
					   (json_int_t)d->size, "readonly", d->readonly, "chunks", dc) :
				 NULL;
		if (json_array_append_new(disks, e) < 0) {
			rc = -ENOMEM;
			goto out;
		}
	}
	uint64_t created = in->meta->created_realtime_ns ? in->meta->created_realtime_ns : time_real_ns();
	m = json_pack("{s:s,s:i,s:s,s:I,s:o,s:s,s:s,s:i,s:{s:I,s:I,s:O},s:{s:o,s:o}}", "format",
		      "forkvm-store-snapshot", "version", disks ? 2 : 1, "forkvm_version", "0.1.0",
		      "created_realtime_ns", (json_int_t)created, "parent",
		      p->parent ? id_json(p->parent) : json_null(), "loader", in->meta->loader,
		      "platform", in->meta->platform ? in->meta->platform : "kvm",
		      "vcpus", (int)in->meta->vcpus, "memory", "size", (json_int_t)in->mem->size,
		      "chunk_size", (json_int_t)p->cs, "chunks", chunks, "files", "config.json",
		      id_json(&cid), "state.json", id_json(&sid));
	if (m && in->snapshot_json)
		json_object_set_new(json_object_get(m, "files"), "snapshot.json", id_json(&jid));
	if (m && disks && json_object_set(m, "disks", disks) < 0) {
		rc = -ENOMEM;
		goto out;
	}
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
	json_decref(disks);
	json_decref(m);
	return rc;
}

static int region_init(struct region *g, const struct store_mem *data, uint32_t cs)
{
	g->data = data;
	g->nr_chunks = (data->size + cs - 1) / cs;
	size_t n = g->nr_chunks ? (size_t)g->nr_chunks : 1;
	g->state = calloc(n, 1);
	g->candidate = calloc(n, sizeof(bool));
	g->is_new = calloc(n, sizeof(bool));
	g->ids = calloc(n, sizeof(*g->ids));
	return g->state && g->candidate && g->is_new && g->ids ? 0 : -ENOMEM;
}

static void region_free(struct region *g)
{
	free(g->state);
	free(g->candidate);
	free(g->is_new);
	free(g->ids);
}

/* Incremental: the chunks of g for which changed() is false take the
 * parent's (ids from pc, zero where pc lists none); the others stay to be
 * read. changed NULL: every chunk is the parent's. */
static void take_parent(struct put *p, struct region *g, const struct st_chunks *pc,
			bool (*changed)(void *arg, uint64_t chunk, uint32_t chunk_size), void *arg)
{
	for (uint64_t c = 0; c < g->nr_chunks; c++)
		if (!changed || !changed(arg, c, p->cs))
			g->state[c] = CH_ZERO;
	for (uint64_t k = 0; k < pc->nr_stored; k++) {
		uint64_t c = pc->index[k];
		if (c < g->nr_chunks && g->state[c] == CH_ZERO) {
			g->state[c] = CH_STORED;
			g->ids[c] = pc->id[k];
			p->reused++;
		}
	}
}

int store_put_snapshot(struct store *st, const struct store_snapshot_in *in, const char *tag,
		       struct store_id *id, struct store_put_stats *stats, char *err, size_t errlen)
{
	struct put p = { .st = st, .cs = st->chunk_size, .tid = (int)gettid() };
	struct st_manifest parent;
	uint64_t t0 = time_mono_ns(), total = 0;
	int rc;

	memset(&parent, 0, sizeof(parent));
	if (tag && !store_tag_valid(tag))
		return err_fail(err, errlen, -EINVAL,
			       "bad tag name '%s' (letters, digits, '.', '_', '-'; at most 128)", tag);
	if (in->mem->size == 0 || in->mem->size % STORE_PAGE)
		return err_fail(err, errlen, -EINVAL,
			       "memory size %llu is not a whole number of %u-byte pages",
			       (unsigned long long)in->mem->size, (unsigned)STORE_PAGE);
	if (in->nr_disks > STORE_MAX_DISKS)
		return err_fail(err, errlen, -EINVAL, "%u disks: the store keeps at most %u",
			       in->nr_disks, STORE_MAX_DISKS);
	for (unsigned i = 0; i < in->nr_disks; i++) {
		const struct snap_disk *d = &in->disks[i].disk;
		if (strlen(d->device) != 3 || strncmp(d->device, "vd", 2) || d->device[2] < 'a' ||
		    d->device[2] > 'z' || (i && strcmp(d->device, in->disks[i - 1].disk.device) <= 0) ||
		    in->disks[i].data->size != d->size || (!in->disks[i].data->base && !in->disks[i].data->read))
			return err_fail(err, errlen, -EINVAL, "disk %u (%.8s) is not one the store takes",
				       i, d->device);
		if (d->size > ST_MAX_DISK_SIZE)
			return err_fail(err, errlen, -EFBIG,
				       "disk %s is %llu bytes: the store keeps disks of at most %llu GiB",
				       d->device, (unsigned long long)d->size, ST_MAX_DISK_SIZE >> 30);
	}
	rc = st_lock(st, false);
	if (rc < 0)
		return err_fail(err, errlen, rc, "store lock: %s", strerror(-rc));
	if ((rc = st_fanout_repair(st, err, errlen)) < 0) {
		st_unlock(st);
		return rc;
	}
	pthread_mutex_init(&p.mu, NULL);
	p.nrg = 1 + in->nr_disks;
	for (unsigned r = 0; r < p.nrg; r++) {
		struct region *g = &p.rg[r];
		if (r)
			snprintf(g->of, sizeof(g->of), " of disk %s", in->disks[r - 1].disk.device);
		if (region_init(g, r ? in->disks[r - 1].data : in->mem, p.cs) < 0) {
			rc = err_fail(err, errlen, -ENOMEM, "out of memory");
			goto out;
		}
		total += g->nr_chunks;
	}
	p.todo = calloc(total, sizeof(*p.todo));
	p.newc = calloc(total, sizeof(*p.newc));
	if (!p.todo || !p.newc) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}

	/* Incremental: unchanged chunks are the parent's. The parent must be
	 * committed (then gc, kept out by the lock, cannot have taken any of
	 * its objects) and laid out alike; else this is a full snapshot. A
	 * disk is the parent's disk of its device when the caller says so
	 * (changed) and it has the parent disk's size. */
	if (in->parent && st_snapshot_committed(st, in->parent) &&
	    st_manifest_read(st, in->parent, &parent, NULL, 0) == 0 && parent.chunk_size == p.cs &&
	    parent.memory_size == in->mem->size) {
		p.parent = in->parent;
		take_parent(&p, &p.rg[0], &parent.mem, in->changed, in->changed_arg);
		for (unsigned i = 0; i < in->nr_disks; i++) {
			const struct store_disk_in *d = &in->disks[i];
			for (unsigned k = 0; d->changed && k < parent.nr_disks; k++)
				if (!strcmp(parent.disks[k].disk.device, d->disk.device) &&
				    parent.disks[k].disk.size == d->disk.size)
					take_parent(&p, &p.rg[1 + i], &parent.disks[k].c, d->changed,
						    d->changed_arg);
		}
	}
	/* Only chunks that may hold data are read: with a parent, the changed
	 * ones; else those the memory (or disk) says are populated. */
	for (unsigned r = 0; r < p.nrg && rc == 0; r++) {
		struct region *g = &p.rg[r];
		struct mark_arg ma = { &p, g };
		bool from_parent = p.parent && (r == 0 || in->disks[r - 1].changed);
		if (from_parent || !g->data->populated)
			rc = mark_populated(&ma, 0, g->data->size);
		else
			rc = g->data->populated(g->data->arg, mark_populated, &ma);
		if (rc < 0)
			err_fail(err, errlen, rc, "cannot find the populated %s: %s",
				 r ? "disk" : "memory", strerror(-rc));
	}
	if (rc < 0)
		goto out;
	for (unsigned r = 0; r < p.nrg; r++) {
		struct region *g = &p.rg[r];
		for (uint64_t c = 0; c < g->nr_chunks; c++) {
			if (g->candidate[c])
				p.todo[p.ntodo++] = (struct chunk_ref){ r, c };
			else if (g->state[c] == CH_UNKNOWN)
				g->state[c] = CH_ZERO;
		}
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
	for (unsigned r = 0; r < p.nrg; r++) {
		for (uint64_t c = 0; c < p.rg[r].nr_chunks; c++) {
			if (!p.rg[r].is_new[c])
				continue;
			p.newc[p.nnew++] = (struct chunk_ref){ r, c };
			dir_used[p.rg[r].ids[c].b[0]] = true;
		}
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
		*stats = (struct store_put_stats){
			.reused_chunks = p.reused, .new_chunks = p.nstored_new, .new_raw_bytes = p.new_raw,
			.new_stored_bytes = p.new_stored, .seconds = (time_mono_ns() - t0) / 1e9,
		};
		for (unsigned r = 0; r < p.nrg; r++) {
			uint64_t data = 0;
			for (uint64_t c = 0; c < p.rg[r].nr_chunks; c++)
				data += p.rg[r].state[c] == CH_STORED;
			stats->logical_bytes += p.rg[r].data->size;
			stats->data_chunks += data;
			if (r) {
				stats->disk_bytes += p.rg[r].data->size;
				stats->disk_data_chunks += data;
				stats->disk_new_chunks += p.rg[r].new_chunks;
			}
		}
	}
out:
	if (rc < 0)
		put_cleanup(&p);
	st_unlock(st);
	st_manifest_free(&parent);
	pthread_mutex_destroy(&p.mu);
	for (unsigned r = 0; r < p.nrg; r++)
		region_free(&p.rg[r]);
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

/* A disk file's bytes (pread: it may be larger than the address space
 * wants mapped, and a mapping of a file cut short under it faults). */
static int dir_read(void *arg, uint64_t off, void *buf, size_t len)
{
	struct extents_arg *a = arg;
	for (size_t done = 0; done < len;) {
		ssize_t n = pread(a->fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO; /* cut short since it was checked */
		done += (size_t)n;
	}
	return 0;
}

int store_put_dir(struct store *st, const char *dir, const char *tag, struct store_id *id,
		  struct store_put_stats *stats, char *err, size_t errlen)
{
	struct snapdir sd;
	struct extents_arg da[STORE_MAX_DISKS];
	struct store_mem dm[STORE_MAX_DISKS];
	struct store_disk_in din[STORE_MAX_DISKS];
	unsigned nd = 0;
	int rc = snapdir_open(dir, &sd, err, errlen);

	if (rc < 0)
		return rc;
	void *mem = mmap(NULL, sd.memory_size, PROT_READ, MAP_SHARED, sd.mem_fd, 0);
	if (mem == MAP_FAILED) {
		rc = err_fail(err, errlen, -errno, "cannot map %s/memory-ranges: %s", dir, strerror(errno));
		snapdir_close(&sd);
		return rc;
	}
	for (; nd < sd.nr_disks; nd++) {
		char path[4200];
		struct stat s;
		snprintf(path, sizeof(path), "%s/disk-%s", dir, sd.disks[nd].device);
		da[nd].fd = open(path, O_RDONLY | O_CLOEXEC);
		if (da[nd].fd < 0 || fstat(da[nd].fd, &s) < 0 || (uint64_t)s.st_size != sd.disks[nd].size) {
			rc = err_fail(err, errlen, da[nd].fd < 0 ? -errno : -EBADMSG, "%s: %s", path,
				      da[nd].fd < 0 ? strerror(errno) : "its size changed");
			if (da[nd].fd >= 0)
				close(da[nd].fd);
			goto out;
		}
		da[nd].size = sd.disks[nd].size;
		dm[nd] = (struct store_mem){ .size = da[nd].size, .populated = dir_populated,
					     .read = dir_read, .arg = &da[nd] };
		din[nd] = (struct store_disk_in){ .disk = sd.disks[nd], .data = &dm[nd] };
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
		.meta = &meta, .mem = &sm, .disks = din, .nr_disks = nd,
	};
	rc = store_put_snapshot(st, &in, tag, id, stats, err, errlen);
out:
	while (nd)
		close(da[--nd].fd);
	munmap(mem, sd.memory_size);
	snapdir_close(&sd);
	return rc;
}
