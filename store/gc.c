/* store/gc.c - garbage collection (mark from every committed snapshot,
 * sweep the rest, under the exclusive store lock, so never during a put),
 * verification, and usage. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/util.h"
#include "store/internal.h"

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct store_id));
}

struct idset {
	struct store_id *v;
	size_t n, cap;
};

static int idset_add(struct idset *s, const struct store_id *id)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		struct store_id *g = realloc(s->v, cap * sizeof(*g));
		if (!g)
			return -ENOMEM;
		s->v = g;
		s->cap = cap;
	}
	s->v[s->n++] = *id;
	return 0;
}

static bool idset_has(const struct idset *s, const struct store_id *id)
{
	return s->n && bsearch(id, s->v, s->n, sizeof(*id), cmp_id) != NULL;
}

/* Every object a committed snapshot references, sorted. */
static int mark(struct store *st, struct idset *live, char *err, size_t errlen)
{
	struct store_id *ids;
	size_t n;
	int rc = st_snapshots(st, &ids, &n);

	if (rc < 0)
		return err_fail(err, errlen, rc, "%s/snapshots: %s", st->root, strerror(-rc));
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct st_manifest m;
		char why[400];
		if (st_manifest_read(st, &ids[i], &m, why, sizeof(why)) < 0) {
			char hex[33];
			store_id_hex(&ids[i], hex);
			rc = err_fail(err, errlen, -EBADMSG,
				     "snapshot %s cannot be read (%s): gc stops rather than lose data; "
				     "see forkctl store verify",
				     hex, why);
			break;
		}
		rc = idset_add(live, &ids[i]);
		if (rc == 0)
			rc = idset_add(live, &m.config);
		if (rc == 0)
			rc = idset_add(live, &m.state);
		if (rc == 0 && m.has_snapshot_json)
			rc = idset_add(live, &m.snapshot_json);
		for (uint64_t k = 0; rc == 0 && k < m.mem.nr_stored; k++)
			rc = idset_add(live, &m.mem.id[k]);
		for (unsigned d = 0; d < m.nr_disks; d++)
			for (uint64_t k = 0; rc == 0 && k < m.disks[d].c.nr_stored; k++)
				rc = idset_add(live, &m.disks[d].c.id[k]);
		st_manifest_free(&m);
	}
	free(ids);
	if (rc == 0 && live->n) /* no snapshot: v is NULL, which qsort must not get */
		qsort(live->v, live->n, sizeof(*live->v), cmp_id);
	return rc == -ENOMEM ? err_fail(err, errlen, rc, "out of memory") : rc;
}

/* Calls fn for each entry of ROOT/rel (not . or ..). */
static int each_entry(struct store *st, const char *rel, void (*fn)(void *arg, int dfd, const char *name),
		      void *arg)
{
	int fd = openat(st->root_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			fn(arg, dirfd(d), e->d_name);
	closedir(d);
	return 0;
}

struct sweep {
	const struct idset *live;
	struct store_gc_stats *stats;
};

static void sweep_object(void *arg, int dfd, const char *name)
{
	struct sweep *s = arg;
	struct store_id id;
	struct stat st;

	if (store_id_parse(name, &id) == 0 && idset_has(s->live, &id)) {
		s->stats->objects_kept++;
		return;
	}
	if (fstatat(dfd, name, &st, 0) == 0 && unlinkat(dfd, name, 0) == 0) {
		s->stats->objects_removed++;
		s->stats->bytes_removed += (uint64_t)st.st_size;
	}
}

static void sweep_tmp(void *arg, int dfd, const char *name)
{
	struct sweep *s = arg;
	if (unlinkat(dfd, name, 0) == 0)
		s->stats->temp_removed++;
}

struct image {
	char name[80];
	uint64_t bytes;
	struct timespec used;
};

struct images {
	struct store *st;
	struct image *v;
	size_t n, cap;
	struct store_gc_stats *stats;
};

/* Removes images/<name> unless a VM maps it (someone holds its lock). */
static bool remove_image(int dfd, const char *name)
{
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	bool gone = false;
	if (fd < 0)
		return false;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		gone = unlinkat(dfd, name, 0) == 0;
	close(fd);
	return gone;
}

static void scan_image(void *arg, int dfd, const char *name)
{
	struct images *im = arg;
	struct stat st;
	size_t n = strlen(name);
	char hex[33];
	struct store_id id;
	char rel[64];

	if (fstatat(dfd, name, &st, 0) < 0)
		return;
	if (n > 5 && !strcmp(name + n - 5, ".lock")) {
		/* A materialization lock nobody holds is a leftover. */
		int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
		if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
			unlinkat(dfd, name, 0);
		if (fd >= 0)
			close(fd);
		return;
	}
	/* <id>.img (memory) or <id>-vdX.img (a disk) */
	if (!((n == 36 && !strcmp(name + 32, ".img")) ||
	      (n == 40 && !strncmp(name + 32, "-vd", 3) && name[35] >= 'a' && name[35] <= 'z' &&
	       !strcmp(name + 36, ".img"))))
		return;
	snprintf(hex, sizeof(hex), "%.32s", name);
	snprintf(rel, sizeof(rel), "snapshots/%s", hex);
	struct stat ss;
	if (store_id_parse(hex, &id) < 0 || fstatat(im->st->root_fd, rel, &ss, 0) < 0) {
		/* The snapshot is gone: its image too, unless still mapped. */
		if (remove_image(dfd, name)) {
			im->stats->images_removed++;
			im->stats->image_bytes_removed += (uint64_t)st.st_blocks * 512;
		} else {
			im->stats->images_in_use++;
		}
		return;
	}
	if (im->n == im->cap) {
		size_t cap = im->cap ? im->cap * 2 : 32;
		struct image *g = realloc(im->v, cap * sizeof(*g));
		if (!g)
			return;
		im->v = g;
		im->cap = cap;
	}
	struct image *e = &im->v[im->n++];
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->bytes = (uint64_t)st.st_blocks * 512;
	e->used = st.st_atim;
}

static int cmp_used(const void *a, const void *b)
{
	const struct image *x = a, *y = b;
	if (x->used.tv_sec != y->used.tv_sec)
		return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
	return x->used.tv_nsec < y->used.tv_nsec ? -1 : x->used.tv_nsec > y->used.tv_nsec;
}

static void drop_dangling_tag(void *arg, int dfd, const char *name)
{
	struct store *st = arg;
	char buf[64], rel[64];
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	struct stat s;

	if (fd >= 0)
		close(fd);
	if (n >= 32) {
		snprintf(rel, sizeof(rel), "snapshots/%.32s", buf);
		if (fstatat(st->root_fd, rel, &s, 0) == 0)
			return;
	}
	unlinkat(dfd, name, 0);
}

int store_gc(struct store *st, uint64_t image_budget, struct store_gc_stats *stats, char *err,
	     size_t errlen)
{
	struct idset live = { 0 };
	struct store_gc_stats local;
	struct images im = { .st = st };
	int rc;

	if (!stats)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	im.stats = stats;
	rc = st_lock(st, true);
	if (rc < 0)
		return err_fail(err, errlen, rc, "store lock: %s", strerror(-rc));
	rc = mark(st, &live, err, errlen);
	if (rc < 0)
		goto out;
	struct sweep sw = { &live, stats };
	for (unsigned i = 0; i < 256; i++) {
		char rel[16];
		snprintf(rel, sizeof(rel), "objects/%02x", i);
		(void)each_entry(st, rel, sweep_object, &sw);
	}
	/* Nobody writes while we hold the lock: tmp/ holds only leftovers. */
	(void)each_entry(st, "tmp", sweep_tmp, &sw);
	(void)each_entry(st, "tags", drop_dangling_tag, st);
	(void)each_entry(st, "images", scan_image, &im);
	uint64_t total = 0;
	for (size_t i = 0; i < im.n; i++)
		total += im.v[i].bytes;
	if (total > image_budget) {
		qsort(im.v, im.n, sizeof(*im.v), cmp_used);
		int dfd = openat(st->root_fd, "images", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		for (size_t i = 0; dfd >= 0 && i < im.n && total > image_budget; i++) {
			if (remove_image(dfd, im.v[i].name)) {
				total -= im.v[i].bytes;
				stats->images_removed++;
				stats->image_bytes_removed += im.v[i].bytes;
			} else {
				stats->images_in_use++;
			}
		}
		if (dfd >= 0)
			close(dfd);
	}
	(void)syncfs(st->root_fd);
out:
	st_unlock(st);
	free(live.v);
	free(im.v);
	return rc;
}

/* ------------------------------------------------------------ verify */

struct ver {
	struct store *st;
	const struct st_chunks *c;
	uint32_t chunk_size;
	char snap[33];
	void (*cb)(void *arg, const char *problem);
	void *arg;
	pthread_mutex_t mu;
	int problems;
};

static void problem(struct ver *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct ver *v, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&v->mu);
	v->problems++;
	if (v->cb)
		v->cb(v->arg, msg);
	pthread_mutex_unlock(&v->mu);
}

static void ver_step(void *ctx, struct st_job *j, unsigned worker)
{
	struct ver *v = ctx;
	uint64_t k = j->index, c = v->c->index[k];
	uint64_t len = MIN((uint64_t)v->chunk_size, v->c->size - c * v->chunk_size);
	char hex[33];

	(void)worker;
	if (j->phase == 0) {
		j->len = OBJ_HDR + ZSTD_compressBound(v->chunk_size);
		j->buf = st_job_scratch(j, 0, j->len);
		if (!j->buf) {
			problem(v, "out of memory");
			return;
		}
		st_obj_rel(&v->c->id[k], j->rel, sizeof(j->rel));
		j->io_op = ST_IO_READ_FILE;
		j->phase = 1;
		return;
	}
	store_id_hex(&v->c->id[k], hex);
	uint8_t *raw = j->io_res >= 0 ? st_job_scratch(j, 1, len) : NULL;
	int rc = j->io_res < 0 ? (int)j->io_res :
		 !raw		? -ENOMEM :
				  st_obj_decode_into(j->dctx, &v->c->id[k], j->buf, (size_t)j->io_res, raw, len);
	if (rc < 0)
		problem(v, "object %s (chunk %llu%s of snapshot %s): %s", hex, (unsigned long long)c,
			v->c->of, v->snap,
			rc == -ENOENT ? "missing" :
			rc == -EBADMSG ? "corrupt (its content does not match its name)" :
					 strerror(-rc));
	j->buf = NULL; /* the buffers are the slot's scratch */
}

/* Compares a cached image (images/<name>.img) with the chunks it was made
 * from. */
static void verify_image(struct ver *v, const char *name)
{
	char rel[64];
	const struct st_chunks *ch = v->c;
	snprintf(rel, sizeof(rel), "images/%s.img", name);
	int fd = openat(v->st->root_fd, rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	uint8_t *buf = malloc(v->chunk_size);
	uint64_t k = 0, data = 0; /* where the image has data next (UINT64_MAX: nowhere) */
	bool known = false;
	for (uint64_t c = 0; buf && c < ch->nr_chunks; c++) {
		uint64_t off = c * v->chunk_size;
		uint64_t len = MIN((uint64_t)v->chunk_size, ch->size - off);
		bool stored = k < ch->nr_stored && ch->index[k] == c;
		if (!known || (data != UINT64_MAX && data < off)) {
			off_t d = lseek(fd, (off_t)off, SEEK_DATA);
			data = d < 0 ? UINT64_MAX : (uint64_t)d;
			known = true;
		}
		if (!stored && data >= off + len) {
			/* a hole, as a zero chunk should be: on to the next stored
			 * chunk or the chunk with the next data (a large sparse
			 * disk costs its data, not its size) */
			uint64_t next = k < ch->nr_stored ? ch->index[k] : ch->nr_chunks;
			if (data != UINT64_MAX)
				next = MIN(next, data / v->chunk_size);
			c = MAX(next, c + 1) - 1;
			continue;
		}
		if (pread(fd, buf, len, (off_t)off) != (ssize_t)len) {
			problem(v, "image%s of snapshot %s: cannot read chunk %llu", ch->of, v->snap,
				(unsigned long long)c);
			break;
		}
		struct store_id got;
		st_hash_id(XXH3_128bits(buf, len), &got);
		if (stored ? !store_id_equal(&got, &ch->id[k]) : !st_is_zero(buf, len))
			problem(v, "image%s of snapshot %s: chunk %llu differs from the store (gc removes "
				   "the image with the snapshot, or rm the snapshot's image file)",
				ch->of, v->snap, (unsigned long long)c);
		if (stored)
			k++;
	}
	free(buf);
	close(fd);
}

static int verify_one(struct store *st, const struct store_id *id,
		      void (*cb)(void *arg, const char *problem), void *arg, int *problems)
{
	struct st_manifest m;
	struct ver v = { .st = st, .cb = cb, .arg = arg };
	char why[400];
	int rc = 0;

	store_id_hex(id, v.snap);
	pthread_mutex_init(&v.mu, NULL);
	if (st_manifest_read(st, id, &m, why, sizeof(why)) < 0) {
		problem(&v, "snapshot %s: %s", v.snap, why);
		*problems += v.problems;
		pthread_mutex_destroy(&v.mu);
		return 0;
	}
	const struct store_id *files[3] = { &m.config, &m.state, m.has_snapshot_json ? &m.snapshot_json : NULL };
	static const char *const names[3] = { "config.json", "state.json", "snapshot.json" };
	for (int i = 0; i < 3; i++) {
		char *data;
		size_t len;
		if (files[i] && store_read_object(st, files[i], &data, &len, why, sizeof(why)) < 0) {
			problem(&v, "%s of snapshot %s: %s", names[i], v.snap, why);
		} else if (files[i]) {
			/* what a restore or an export would reject */
			if (st_check_json_object(names[i], data, len, why, sizeof(why)) < 0)
				problem(&v, "snapshot %s: %s", v.snap, why);
			free(data);
		}
	}
	/* memory, then each disk: their chunks and cached images */
	v.chunk_size = m.chunk_size;
	for (unsigned i = 0; rc == 0 && i <= m.nr_disks; i++) {
		char name[48];
		v.c = i ? &m.disks[i - 1].c : &m.mem;
		if (i)
			snprintf(name, sizeof(name), "%s-%s", v.snap, m.disks[i - 1].disk.device);
		else
			snprintf(name, sizeof(name), "%s", v.snap);
		rc = st_engine_run(st, v.c->nr_stored, 64, ver_step, &v);
		if (rc == 0)
			verify_image(&v, name);
	}
	*problems += v.problems;
	st_manifest_free(&m);
	pthread_mutex_destroy(&v.mu);
	return rc;
}

int store_verify(struct store *st, const struct store_id *id,
		 void (*cb)(void *arg, const char *problem), void *arg, char *err, size_t errlen)
{
	struct store_id *ids = NULL;
	size_t n = 1;
	int problems = 0, rc = st_lock(st, false);

	if (rc < 0)
		return err_fail(err, errlen, rc, "store lock: %s", strerror(-rc));
	if (!id) {
		rc = st_snapshots(st, &ids, &n);
		if (rc < 0) {
			st_unlock(st);
			return err_fail(err, errlen, rc, "%s/snapshots: %s", st->root, strerror(-rc));
		}
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = verify_one(st, id ? id : &ids[i], cb, arg, &problems);
	free(ids);
	st_unlock(st);
	if (rc < 0)
		return err_fail(err, errlen, rc, "verify: %s", strerror(-rc));
	return problems;
}

/* ------------------------------------------------------------ du */

struct du_scan {
	struct store_du *du;
};

static void du_object(void *arg, int dfd, const char *name)
{
	struct du_scan *s = arg;
	struct stat st;
	uint8_t hdr[OBJ_HDR];
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && read(fd, hdr, sizeof(hdr)) == (ssize_t)sizeof(hdr)) {
		uint64_t raw = 0;
		for (int i = 0; i < 8; i++)
			raw |= (uint64_t)hdr[8 + i] << (8 * i);
		s->du->objects++;
		s->du->unique_bytes += raw;
		s->du->stored_bytes += (uint64_t)st.st_size;
	}
	close(fd);
}

static void du_image(void *arg, int dfd, const char *name)
{
	struct du_scan *s = arg;
	struct stat st;
	size_t n = strlen(name);
	if (n > 4 && !strcmp(name + n - 4, ".img") && fstatat(dfd, name, &st, 0) == 0) {
		s->du->images++;
		s->du->image_bytes += (uint64_t)st.st_blocks * 512;
	}
}

int store_du(struct store *st, struct store_du *du, char *err, size_t errlen)
{
	struct store_id *ids;
	size_t n;
	struct du_scan s = { du };
	int rc = st_lock(st, false);

	memset(du, 0, sizeof(*du));
	if (rc < 0)
		return err_fail(err, errlen, rc, "store lock: %s", strerror(-rc));
	rc = st_snapshots(st, &ids, &n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct st_manifest m;
		char why[400];
		if (st_manifest_read(st, &ids[i], &m, why, sizeof(why)) < 0)
			continue;
		du->snapshots++;
		for (unsigned d = 0; d <= m.nr_disks; d++) {
			const struct st_chunks *c = d ? &m.disks[d - 1].c : &m.mem;
			du->logical_bytes += c->size;
			for (uint64_t k = 0; k < c->nr_stored; k++) {
				uint64_t off = c->index[k] * m.chunk_size;
				du->referenced_bytes += MIN((uint64_t)m.chunk_size, c->size - off);
			}
		}
		/* The manifest and its files count too, as in unique_bytes. */
		du->referenced_bytes += st_obj_raw_len(st, &ids[i]) + st_obj_raw_len(st, &m.config) +
					st_obj_raw_len(st, &m.state);
		if (m.has_snapshot_json)
			du->referenced_bytes += st_obj_raw_len(st, &m.snapshot_json);
		st_manifest_free(&m);
	}
	if (rc == 0)
		free(ids);
	for (unsigned i = 0; rc == 0 && i < 256; i++) {
		char rel[16];
		snprintf(rel, sizeof(rel), "objects/%02x", i);
		(void)each_entry(st, rel, du_object, &s);
	}
	if (rc == 0)
		(void)each_entry(st, "images", du_image, &s);
	st_unlock(st);
	if (rc < 0)
		return err_fail(err, errlen, rc, "du: %s", strerror(-rc));
	return 0;
}
