/* store/load.c - restoring from the store: the snapshot's memory is
 * materialized once into images/<id>.img, and each disk into
 * images/<id>-vda.img... (sparse: zero chunks are holes; every chunk
 * verified against its name on the way; written to a temporary name,
 * fsynced, made read-only, renamed), then every restore maps the memory
 * file and reads the disk files as the base of its copy-on-write disks.
 * An open image holds a shared flock: gc evicts only images nobody has
 * open. */
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

#include "common/log.h"
#include "common/util.h"
#include "store/internal.h"

struct mat {
	struct store *st;
	const struct st_chunks *c;
	uint32_t chunk_size;
	int fd;
	char snap_hex[33];
	pthread_mutex_t mu;
	int rc;
	char err[300];
};

static void mat_error(struct mat *x, int rc, uint64_t k, const char *what)
{
	char hex[33];
	store_id_hex(&x->c->id[k], hex);
	pthread_mutex_lock(&x->mu);
	if (!x->rc) {
		x->rc = rc;
		snprintf(x->err, sizeof(x->err), "object %s (chunk %llu%s of snapshot %s): %s", hex,
			 (unsigned long long)x->c->index[k], x->c->of, x->snap_hex, what);
	}
	pthread_mutex_unlock(&x->mu);
}

/* read the object -> decode and verify -> write into the image */
static void mat_step(void *ctx, struct st_job *j, unsigned worker)
{
	struct mat *x = ctx;
	uint64_t k = j->index, c = x->c->index[k];
	uint64_t off = c * x->chunk_size, len = MIN((uint64_t)x->chunk_size, x->c->size - off);

	(void)worker;
	switch (j->phase) {
	case 0:
		j->len = OBJ_HDR + ZSTD_compressBound(x->chunk_size);
		j->buf = st_job_scratch(j, 0, j->len);
		if (!j->buf) {
			mat_error(x, -ENOMEM, k, "out of memory");
			return;
		}
		st_obj_rel(&x->c->id[k], j->rel, sizeof(j->rel));
		j->io_op = ST_IO_READ_FILE;
		j->phase = 1;
		return;
	case 1: {
		if (j->io_res < 0) {
			mat_error(x, (int)j->io_res, k, j->io_res == -ENOENT ? "missing" : strerror((int)-j->io_res));
			break;
		}
		uint8_t *raw = st_job_scratch(j, 1, len);
		if (!raw) {
			mat_error(x, -ENOMEM, k, "out of memory");
			break;
		}
		int rc = st_obj_decode_into(j->dctx, &x->c->id[k], j->buf, (size_t)j->io_res, raw, len);
		j->buf = NULL;
		j->raw = raw;
		if (rc < 0) {
			mat_error(x, rc, k, rc == -EBADMSG ? "corrupt (its content does not match its name)" :
							     strerror(-rc));
			break;
		}
		j->raw_len = len;
		j->raw_off = off;
		j->cursor = 0;
		j->phase = 2;
		if (st_job_next_run(j, x->fd))
			return;
		break;
	}
	case 2:
		if (j->io_res > 0 && j->io_res < (long)j->len) {
			/* A short write (a full disk writes what fits): the rest,
			 * which completes the run or says what stopped it. */
			j->buf += j->io_res;
			j->off += (uint64_t)j->io_res;
			j->len -= (size_t)j->io_res;
			j->io_op = ST_IO_PWRITE;
			return;
		}
		if (j->io_res != (long)j->len) {
			int rc = j->io_res < 0 ? (int)j->io_res : -EIO;
			char why[128];
			snprintf(why, sizeof(why), "cannot write the image: %s", strerror(-rc));
			mat_error(x, rc, k, why);
			break;
		}
		if (st_job_next_run(j, x->fd))
			return;
		break;
	}
	j->buf = NULL; /* the buffers are the slot's scratch */
	j->raw = NULL;
}

/* Opens images/<name>.img read-only with a shared lock. */
static int open_image(struct store *st, const char *name)
{
	char rel[64];
	snprintf(rel, sizeof(rel), "images/%s.img", name);
	int fd = openat(st->root_fd, rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_SH) < 0) {
		if (errno != EINTR) {
			int rc = -errno;
			close(fd);
			return rc;
		}
	}
	/* The access time tells gc which images were used last. */
	struct timespec ts[2] = { { 0, UTIME_NOW }, { 0, UTIME_OMIT } };
	futimens(fd, ts);
	return fd;
}

/* A materialized image's modification time, set when it is made: any
 * later write (the image is 0400, but root can) changes it, so a restore
 * notices a changed image with one fstat. gc orders images by their
 * access time, which restores update. */
#define IMAGE_MTIME_SEC 1

/* True when the image behind fd is as materialize() left it: the
 * snapshot's memory (or disk) size, and not written since. */
static bool image_ok(int fd, uint64_t size)
{
	struct stat s;
	return fstat(fd, &s) == 0 && (uint64_t)s.st_size == size &&
	       s.st_mtim.tv_sec == IMAGE_MTIME_SEC && s.st_mtim.tv_nsec == 0;
}

/* Writes images/<name>.img from the chunks c of snapshot hex. */
static int materialize(struct store *st, const struct st_chunks *c, uint32_t chunk_size,
		       const char *hex, const char *name, char *err, size_t errlen)
{
	char tmp[96], rel[64];
	struct mat x = { .st = st, .c = c, .chunk_size = chunk_size, .fd = -1 };
	int rc;

	snprintf(x.snap_hex, sizeof(x.snap_hex), "%s", hex);
	snprintf(tmp, sizeof(tmp), "tmp/%s.img.%d", name, (int)getpid());
	snprintf(rel, sizeof(rel), "images/%s.img", name);
	unlinkat(st->root_fd, tmp, 0);
	x.fd = openat(st->root_fd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (x.fd < 0)
		return err_fail(err, errlen, -errno, "cannot create an image in %s/tmp: %s", st->root,
			       strerror(errno));
	pthread_mutex_init(&x.mu, NULL);
	if (ftruncate(x.fd, (off_t)c->size) < 0) {
		rc = err_fail(err, errlen, -errno, "image%s of %s: %s", c->of, hex, strerror(errno));
		goto out;
	}
	rc = st_engine_run(st, c->nr_stored, 64, mat_step, &x);
	if (rc == 0)
		rc = x.rc;
	if (rc < 0) {
		err_fail(err, errlen, rc, "%s", x.rc ? x.err : strerror(-rc));
		goto out;
	}
	struct timespec ts[2] = { { 0, UTIME_NOW }, { IMAGE_MTIME_SEC, 0 } };
	if (futimens(x.fd, ts) < 0 || fsync(x.fd) < 0 || fchmod(x.fd, 0400) < 0 ||
	    renameat(st->root_fd, tmp, st->root_fd, rel) < 0) {
		rc = err_fail(err, errlen, -errno, "image%s of %s: %s", c->of, hex, strerror(errno));
		goto out;
	}
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/images", st->root);
	(void)st_fsync_dir(dir);
	tmp[0] = '\0';
out:
	close(x.fd);
	if (tmp[0])
		unlinkat(st->root_fd, tmp, 0);
	pthread_mutex_destroy(&x.mu);
	return rc;
}

/* The image images/<name>.img of chunks c, cached or made now (once,
 * whoever asks first): an open descriptor, read-only and share-locked, or
 * -errno with err set. A cached image that changed since it was made
 * (truncated, written) is made again. */
static int get_image(struct store *st, const struct st_chunks *c, uint32_t chunk_size,
		     const char *hex, const char *name, char *err, size_t errlen)
{
	char lockrel[64];
	int rc, lockfd;

	rc = open_image(st, name);
	if (rc >= 0 && !image_ok(rc, c->size)) {
		close(rc);
		rc = -ESTALE;
	}
	if (rc != -ENOENT && rc != -ESTALE)
		return rc >= 0 ? rc : err_fail(err, errlen, rc, "image%s: %s", c->of, strerror(-rc));
	snprintf(lockrel, sizeof(lockrel), "images/%s.lock", name);
	lockfd = openat(st->root_fd, lockrel, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lockfd < 0 || flock(lockfd, LOCK_EX) < 0) {
		rc = err_fail(err, errlen, -errno, "%s/%s: %s", st->root, lockrel, strerror(errno));
		if (lockfd >= 0)
			close(lockfd);
		return rc;
	}
	rc = open_image(st, name);
	if (rc >= 0 && !image_ok(rc, c->size)) {
		char rel[64];
		close(rc);
		snprintf(rel, sizeof(rel), "images/%s.img", name);
		log_warn("store %s: the cached image%s of snapshot %.12s changed since it was "
			 "made (its size or modification time): making it again",
			 st->root, c->of, hex);
		unlinkat(st->root_fd, rel, 0);
		rc = -ENOENT;
	}
	if (rc == -ENOENT) {
		rc = materialize(st, c, chunk_size, hex, name, err, errlen);
		if (rc == 0)
			rc = open_image(st, name);
	}
	if (rc < 0 && !(err && err[0]))
		err_fail(err, errlen, rc, "image%s: %s", c->of, strerror(-rc));
	unlinkat(st->root_fd, lockrel, 0);
	close(lockfd);
	return rc;
}

int store_load(struct store *st, const struct store_id *id, struct store_snapshot *out, char *err,
	       size_t errlen)
{
	struct st_manifest m;
	char hex[33];
	size_t len;
	int rc;

	memset(out, 0, sizeof(*out));
	out->mem_fd = -1;
	if (err && errlen)
		err[0] = '\0';
	store_id_hex(id, hex);
	rc = st_lock(st, false);
	if (rc < 0)
		return err_fail(err, errlen, rc, "store lock: %s", strerror(-rc));
	rc = st_manifest_read(st, id, &m, err, errlen);
	if (rc < 0)
		goto out_unlock;
	char *state = NULL;
	rc = store_read_object(st, &m.config, &out->config, &out->config_len, err, errlen);
	if (rc == 0)
		rc = st_check_json_object("its config.json", out->config, out->config_len, err,
					  errlen);
	if (rc == 0)
		rc = store_read_object(st, &m.state, &state, &len, err, errlen);
	if (rc < 0) {
		char why[400];
		snprintf(why, sizeof(why), "%s", err);
		err_fail(err, errlen, rc, "snapshot %s: %s", hex, why);
		goto out;
	}
	json_error_t je;
	json_t *sj = json_loadb(state, len, 0, &je);
	free(state);
	if (!sj || !json_is_array(json_object_get(sj, "units"))) {
		json_decref(sj);
		rc = err_fail(err, errlen, -EBADMSG, "snapshot %s: its state is malformed", hex);
		goto out;
	}
	out->units = json_incref(json_object_get(sj, "units"));
	json_decref(sj);

	/* The images: memory, then each disk. */
	for (unsigned i = 0; i <= m.nr_disks; i++) {
		const struct st_chunks *c = i ? &m.disks[i - 1].c : &m.mem;
		char name[48];
		if (i)
			snprintf(name, sizeof(name), "%s-%s", hex, m.disks[i - 1].disk.device);
		else
			snprintf(name, sizeof(name), "%s", hex);
		rc = get_image(st, c, m.chunk_size, hex, name, err, errlen);
		if (rc < 0) {
			char why[400];
			snprintf(why, sizeof(why), "%s", err && err[0] ? err : strerror(-rc));
			err_fail(err, errlen, rc, "snapshot %s: %s", hex, why);
			goto out;
		}
		if (i) {
			out->disks[out->nr_disks].disk = m.disks[i - 1].disk;
			out->disks[out->nr_disks++].fd = rc;
		} else {
			out->mem_fd = rc;
		}
		rc = 0;
	}
	out->id = *id;
	out->manifest = json_incref(m.json);
	snprintf(out->loader, sizeof(out->loader), "%s", m.loader);
	snprintf(out->platform, sizeof(out->platform), "%s", m.platform);
	out->vcpus = m.vcpus;
	out->memory_size = m.memory_size;
	out->chunk_size = m.chunk_size;
	out->nr_chunks = m.mem.nr_chunks;
	out->chunk_nonzero = calloc(m.mem.nr_chunks, sizeof(bool));
	out->chunk_ids = calloc(m.mem.nr_chunks, sizeof(*out->chunk_ids));
	if (!out->chunk_nonzero || !out->chunk_ids) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint64_t k = 0; k < m.mem.nr_stored; k++) {
		out->chunk_nonzero[m.mem.index[k]] = true;
		out->chunk_ids[m.mem.index[k]] = m.mem.id[k];
	}
out:
	st_manifest_free(&m);
	if (rc < 0)
		store_snapshot_free(out);
out_unlock:
	st_unlock(st);
	return rc;
}

void store_snapshot_free(struct store_snapshot *s)
{
	json_decref(s->manifest);
	json_decref(s->units);
	free(s->config);
	free(s->chunk_nonzero);
	free(s->chunk_ids);
	if (s->mem_fd >= 0)
		close(s->mem_fd);
	for (unsigned i = 0; i < s->nr_disks; i++)
		if (s->disks[i].fd >= 0)
			close(s->disks[i].fd);
	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
}
