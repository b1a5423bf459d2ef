/* store/export.c - writing a store snapshot back as a snapshot directory:
 * config.json, state.json and (for an imported directory) snapshot.json
 * byte for byte as they were, memory-ranges and the disks (disk-vda...)
 * from the chunks (zero pages are holes). A snapshot taken straight into
 * the store gets the snapshot.json its files call for. */
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

struct exp {
	const struct st_chunks *c;
	uint32_t chunk_size;
	const char *file; /* "memory-ranges", "disk-vda" */
	int fd;
	pthread_mutex_t mu;
	int rc;
	char err[300];
};

static void exp_error(struct exp *x, int rc, uint64_t k, const char *what)
{
	char hex[33];
	store_id_hex(&x->c->id[k], hex);
	pthread_mutex_lock(&x->mu);
	if (!x->rc) {
		x->rc = rc;
		snprintf(x->err, sizeof(x->err), "object %s (chunk %llu%s): %s", hex,
			 (unsigned long long)x->c->index[k], x->c->of, what);
	}
	pthread_mutex_unlock(&x->mu);
}

static void exp_step(void *ctx, struct st_job *j, unsigned worker)
{
	struct exp *x = ctx;
	uint64_t k = j->index, c = x->c->index[k];
	uint64_t off = c * x->chunk_size, len = MIN((uint64_t)x->chunk_size, x->c->size - off);

	(void)worker;
	if (j->phase == 0) {
		j->len = OBJ_HDR + ZSTD_compressBound(x->chunk_size);
		j->buf = st_job_scratch(j, 0, j->len);
		if (!j->buf) {
			exp_error(x, -ENOMEM, k, "out of memory");
			return;
		}
		st_obj_rel(&x->c->id[k], j->rel, sizeof(j->rel));
		j->io_op = ST_IO_READ_FILE;
		j->phase = 1;
		return;
	}
	if (j->phase == 1) {
		uint8_t *raw = j->io_res >= 0 ? st_job_scratch(j, 1, len) : NULL;
		int rc = j->io_res < 0 ? (int)j->io_res :
			 !raw		? -ENOMEM :
					  st_obj_decode_into(j->dctx, &x->c->id[k], j->buf, (size_t)j->io_res, raw, len);
		j->buf = NULL;
		j->raw = raw;
		if (rc < 0) {
			exp_error(x, rc, k, rc == -EBADMSG ? "corrupt" : rc == -ENOENT ? "missing" : strerror(-rc));
		} else {
			j->raw_len = len;
			j->raw_off = off;
			j->cursor = 0;
			j->phase = 2;
			if (st_job_next_run(j, x->fd))
				return;
		}
	} else if (j->io_res != (long)j->len) {
		char why[64];
		snprintf(why, sizeof(why), "cannot write %s", x->file);
		exp_error(x, j->io_res < 0 ? (int)j->io_res : -EIO, k, why);
	} else if (st_job_next_run(j, x->fd)) {
		return;
	}
	j->buf = NULL; /* the buffers are the slot's scratch */
	j->raw = NULL;
}

static int write_object_file(struct store *st, int dfd, const char *name, const struct store_id *id,
			     char *err, size_t errlen)
{
	char *data;
	size_t len;
	int rc = store_read_object(st, id, &data, &len, err, errlen);
	if (rc < 0)
		return rc;
	rc = st_check_json_object(name, data, len, err, errlen);
	if (rc == 0)
		rc = st_write_file(dfd, name, data, len, err, errlen);
	free(data);
	return rc;
}

struct mem_extents {
	int fd;
	uint64_t size;
};

static int exp_populated(void *arg, int (*cb)(void *cbarg, uint64_t off, uint64_t len), void *cbarg)
{
	struct mem_extents *e = arg;
	return fd_data_extents(e->fd, e->size, STORE_PAGE, cb, cbarg);
}

/* Writes file in dfd from chunks c (sparse), fsynced; its descriptor
 * (read-write) in *fd_out. Returns 0 or -errno with err set. */
static int write_chunks_file(struct store *st, int dfd, const char *file, const struct st_chunks *c,
			     uint32_t chunk_size, const char *hex, int *fd_out, char *err,
			     size_t errlen)
{
	struct exp x = { .c = c, .chunk_size = chunk_size, .file = file };
	int rc;

	x.fd = openat(dfd, file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (x.fd < 0 || ftruncate(x.fd, (off_t)c->size) < 0) {
		rc = err_fail(err, errlen, -errno, "%s: %s", file, strerror(errno));
		if (x.fd >= 0)
			close(x.fd);
		return rc;
	}
	pthread_mutex_init(&x.mu, NULL);
	rc = st_engine_run(st, c->nr_stored, 64, exp_step, &x);
	if (rc == 0)
		rc = x.rc;
	if (rc < 0)
		err_fail(err, errlen, rc, "snapshot %s: %s", hex, x.rc ? x.err : strerror(-rc));
	else if (fsync(x.fd) < 0)
		rc = err_fail(err, errlen, -errno, "%s: %s", file, strerror(errno));
	pthread_mutex_destroy(&x.mu);
	if (rc < 0)
		close(x.fd);
	else
		*fd_out = x.fd;
	return rc;
}

int store_export(struct store *st, const struct store_id *id, const char *dir, char *err,
		 size_t errlen)
{
	char parent[4096], tmp[8400], real[4096], hex[33];
	struct st_manifest m;
	json_t *disks = NULL;
	int dfd = -1, mem_fd = -1, rc;

	store_id_hex(id, hex);
	rc = st_check_destination(&dir, real, err, errlen);
	if (rc < 0)
		return rc;
	rc = st_lock(st, false);
	if (rc < 0)
		return err_fail(err, errlen, rc, "store lock: %s", strerror(-rc));
	rc = st_manifest_read(st, id, &m, err, errlen);
	if (rc < 0) {
		st_unlock(st);
		return rc;
	}
	tmp[0] = '\0';
	rc = st_make_sibling(dir, parent, tmp, err, errlen);
	if (rc < 0)
		goto out;
	dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		rc = err_fail(err, errlen, -errno, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	rc = write_object_file(st, dfd, "config.json", &m.config, err, errlen);
	if (rc == 0)
		rc = write_object_file(st, dfd, "state.json", &m.state, err, errlen);
	if (rc == 0)
		rc = write_chunks_file(st, dfd, "memory-ranges", &m.mem, m.chunk_size, hex, &mem_fd,
				       err, errlen);
	if (rc < 0)
		goto out;
	/* The disks, and their entries for a snapshot.json made here. */
	disks = json_object();
	if (!disks) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < m.nr_disks; i++) {
		char file[16];
		int fd = -1;
		snprintf(file, sizeof(file), "disk-%s", m.disks[i].disk.device);
		rc = write_chunks_file(st, dfd, file, &m.disks[i].c, m.chunk_size, hex, &fd, err,
				       errlen);
		if (rc < 0)
			goto out;
		close(fd);
		json_t *e = snapdir_disk_entry(&m.disks[i].disk);
		if (!e || json_object_set_new(disks, file, e) < 0) {
			rc = err_fail(err, errlen, -ENOMEM, "out of memory");
			goto out;
		}
	}
	if (m.has_snapshot_json) {
		rc = write_object_file(st, dfd, "snapshot.json", &m.snapshot_json, err, errlen);
	} else {
		/* Taken live: the manifest the files call for, from what was
		 * just written. */
		char *config = NULL, *state = NULL;
		size_t clen = 0, slen = 0;
		void *mem = mmap(NULL, m.memory_size, PROT_READ, MAP_SHARED, mem_fd, 0);
		rc = mem == MAP_FAILED ? -errno : 0;
		if (rc == 0)
			rc = store_read_object(st, &m.config, &config, &clen, err, errlen);
		if (rc == 0)
			rc = store_read_object(st, &m.state, &state, &slen, err, errlen);
		json_t *cobj = config ? json_loadb(config, clen, 0, NULL) : NULL;
		if (rc == 0 && !cobj)
			rc = err_fail(err, errlen, -EBADMSG, "snapshot %s: config is not JSON", hex);
		if (rc == 0) {
			struct mem_extents me = { mem_fd, m.memory_size };
			struct store_mem sm = { .base = mem, .size = m.memory_size, .populated = exp_populated, .arg = &me };
			struct snap_meta meta = { .loader = m.loader, .platform = m.platform,
						  .vcpus = m.vcpus,
						  .memory_size = m.memory_size,
						  .created_realtime_ns = m.created_realtime_ns };
			json_t *man = snapdir_manifest(config, clen, state, slen, &sm, &meta, cobj, disks,
						       err, errlen);
			size_t mlen;
			char *mtext = man ? st_json_text(man, JSON_INDENT(2), &mlen) : NULL;
			rc = mtext ? st_write_file(dfd, "snapshot.json", mtext, mlen, err, errlen) :
				     (man ? -ENOMEM : -EIO);
			free(mtext);
			json_decref(man);
		}
		json_decref(cobj);
		free(config);
		free(state);
		if (mem != MAP_FAILED)
			munmap(mem, m.memory_size);
	}
	if (rc == 0)
		rc = st_commit_sibling(tmp, dir, parent, err, errlen);
	if (rc == 0)
		tmp[0] = '\0';
out:
	json_decref(disks);
	if (mem_fd >= 0)
		close(mem_fd);
	if (dfd >= 0)
		close(dfd);
	if (tmp[0])
		st_remove_tree(tmp);
	st_manifest_free(&m);
	st_unlock(st);
	return rc;
}
