/* store/snapdir.c - the snapshot directory (docs/snapshot-format.md):
 * writing it atomically and opening it with every check. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "store/internal.h"

#define SMALL_FILE_MAX (64ULL << 20) /* config.json, state.json, snapshot.json */
#define WRITE_RUN (1ULL << 20)       /* largest pwrite of a memory run */
#define READ_CHUNK (128ULL << 10)    /* verification reads */

/* ------------------------------------------------------------ memory */

struct mem_writer {
	const struct store_mem *mem;
	int fd; /* -1: only hash */
	XXH3_state_t *hash;
	uint64_t data_pages;
	uint64_t run_start, run_len; /* pending non-zero run (bytes) */
};

static int flush_run(struct mem_writer *w)
{
	const uint8_t *src = w->mem->base + w->run_start;
	uint64_t done = 0;

	while (w->fd >= 0 && done < w->run_len) {
		ssize_t n = pwrite(w->fd, src + done, w->run_len - done, (off_t)(w->run_start + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (uint64_t)n;
	}
	w->run_len = 0;
	return 0;
}

static int write_range(void *arg, uint64_t off, uint64_t len)
{
	struct mem_writer *w = arg;

	for (uint64_t p = off; p < off + len && p < w->mem->size; p += STORE_PAGE) {
		const uint8_t *page = w->mem->base + p;
		if (st_page_is_zero(page))
			continue;
		st_hash_page(w->hash, p / STORE_PAGE, page);
		w->data_pages++;
		if (w->run_len && w->run_start + w->run_len == p && w->run_len < WRITE_RUN) {
			w->run_len += STORE_PAGE;
			continue;
		}
		if (w->run_len) {
			int rc = flush_run(w);
			if (rc < 0)
				return rc;
		}
		w->run_start = p;
		w->run_len = STORE_PAGE;
	}
	return 0;
}

/* Walks mem's non-zero pages: hashes them and, with fd >= 0, writes them
 * at their offsets. Fills the memory-ranges entry of the manifest. */
static int walk_memory(const struct store_mem *mem, int fd, json_t **entry)
{
	struct mem_writer w = { .mem = mem, .fd = fd, .hash = XXH3_createState() };
	char hex[33];
	int rc;

	if (!w.hash)
		return -ENOMEM;
	XXH3_128bits_reset(w.hash);
	rc = mem->populated ? mem->populated(mem->arg, write_range, &w) :
			      write_range(&w, 0, mem->size);
	if (rc == 0 && w.run_len)
		rc = flush_run(&w);
	if (rc == 0) {
		st_hash_hex(XXH3_128bits_digest(w.hash), hex);
		*entry = json_pack("{s:I,s:I,s:s}", "size", (json_int_t)mem->size, "data_pages",
				   (json_int_t)w.data_pages, "xxh3_128_nonzero_pages", hex);
		if (!*entry)
			rc = -ENOMEM;
	}
	XXH3_freeState(w.hash);
	return rc;
}

/* ------------------------------------------------------------ writing */

static json_t *file_entry(const char *text, size_t len)
{
	char hex[33];
	st_hash_hex(XXH3_128bits(text, len), hex);
	return json_pack("{s:I,s:s}", "size", (json_int_t)len, "xxh3_128", hex);
}

static json_t *manifest_of(json_t *files, const struct snap_meta *meta, const json_t *config)
{
	uint64_t created = meta->created_realtime_ns ? meta->created_realtime_ns : time_real_ns();
	return json_pack("{s:s,s:i,s:s,s:o,s:s,s:s,s:i,s:{s:I,s:I},s:O,s:o}", "format",
			 SNAPDIR_FORMAT, "version", SNAPDIR_VERSION, "forkvm_version", "0.1.0",
			 "created_realtime_ns", json_integer((json_int_t)created), "loader",
			 meta->loader, "platform", meta->platform ? meta->platform : "kvm", "vcpus",
			 (int)meta->vcpus, "memory", "size", (json_int_t)meta->memory_size,
			 "page_size", (json_int_t)STORE_PAGE, "config", config, "files", files);
}

json_t *snapdir_disk_entry(const struct snap_disk *d)
{
	return json_pack("{s:s,s:I,s:s,s:b}", "kind", "disk", "size", (json_int_t)d->size, "device",
			 d->device, "readonly", d->readonly);
}

json_t *snapdir_manifest(const char *config, size_t config_len, const char *state,
			 size_t state_len, const struct store_mem *mem, const struct snap_meta *meta,
			 const json_t *config_obj, const json_t *extra, char *err, size_t errlen)
{
	json_t *files = json_object(), *mentry = NULL;
	int rc = files ? walk_memory(mem, -1, &mentry) : -ENOMEM;

	if (rc < 0) {
		json_decref(files);
		err_fail(err, errlen, rc, "cannot checksum the memory: %s", strerror(-rc));
		return NULL;
	}
	json_object_set_new(files, "config.json", file_entry(config, config_len));
	json_object_set_new(files, "state.json", file_entry(state, state_len));
	json_object_set_new(files, "memory-ranges", mentry);
	if (extra && json_object_update(files, (json_t *)(uintptr_t)extra) < 0) {
		json_decref(files);
		err_fail(err, errlen, -ENOMEM, "out of memory");
		return NULL;
	}
	json_t *m = manifest_of(files, meta, config_obj);
	if (!m)
		err_fail(err, errlen, -ENOMEM, "out of memory");
	return m;
}

int snapdir_write(const char *dir, const json_t *config, const json_t *units,
		  const struct store_mem *mem, const struct snap_meta *meta, char *err,
		  size_t errlen)
{
	char parent[4096], tmp[8400], real[4096];
	char *ctext = NULL, *stext = NULL, *mtext = NULL;
	size_t clen, slen, mlen;
	json_t *state = NULL, *manifest = NULL, *files = NULL, *mentry = NULL;
	int dfd = -1, mfd = -1, rc;

	rc = st_check_destination(&dir, real, err, errlen);
	if (rc < 0)
		return rc;
	rc = st_make_sibling(dir, parent, tmp, err, errlen);
	if (rc < 0)
		return rc;
	dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		rc = err_fail(err, errlen, -errno, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	state = json_pack("{s:s,s:i,s:O}", "format", SNAPDIR_STATE_FORMAT, "version",
			  SNAPDIR_STATE_VERSION, "units", units);
	files = json_object();
	ctext = st_json_text(config, JSON_INDENT(2) | JSON_SORT_KEYS, &clen);
	stext = state ? st_json_text(state, JSON_COMPACT, &slen) : NULL;
	if (!state || !files || !ctext || !stext) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	rc = st_write_file(dfd, "config.json", ctext, clen, err, errlen);
	if (rc == 0)
		rc = st_write_file(dfd, "state.json", stext, slen, err, errlen);
	if (rc < 0)
		goto out;
	json_object_set_new(files, "config.json", file_entry(ctext, clen));
	json_object_set_new(files, "state.json", file_entry(stext, slen));

	mfd = openat(dfd, "memory-ranges", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (mfd < 0 || ftruncate(mfd, (off_t)mem->size) < 0) {
		rc = -errno;
		goto mem_fail;
	}
	rc = walk_memory(mem, mfd, &mentry);
	if (rc == 0 && fsync(mfd) < 0)
		rc = -errno;
	if (close(mfd) < 0 && rc == 0)
		rc = -errno;
	mfd = -1;
	if (rc < 0)
		goto mem_fail;
	json_object_set_new(files, "memory-ranges", mentry);
	mentry = NULL;
	if (meta->extra_files && (rc = meta->extra_files(meta->extra_arg, dfd, files, err, errlen)) < 0)
		goto out;

	manifest = manifest_of(files, meta, config);
	files = NULL; /* owned by manifest (or freed with it) */
	mtext = manifest ? st_json_text(manifest, JSON_INDENT(2), &mlen) : NULL;
	if (!mtext) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	/* The manifest last: a directory without it is not a snapshot. */
	rc = st_write_file(dfd, "snapshot.json", mtext, mlen, err, errlen);
	if (rc == 0)
		rc = st_commit_sibling(tmp, dir, parent, err, errlen);
	if (rc == 0)
		tmp[0] = '\0';
	goto out;
mem_fail:
	err_fail(err, errlen, rc, "cannot write memory-ranges: %s", strerror(-rc));
out:
	if (mfd >= 0)
		close(mfd);
	if (dfd >= 0)
		close(dfd);
	if (tmp[0])
		st_remove_tree(tmp);
	free(ctext);
	free(stext);
	free(mtext);
	json_decref(state);
	json_decref(files);
	json_decref(mentry);
	json_decref(manifest);
	return rc;
}

/* ------------------------------------------------------------ reading */

/* Reads name and compares with its manifest entry. *same is false on a
 * mismatch when allow_edit (no error then). */
static int read_checked(const char *dir, const char *name, const json_t *entry, bool allow_edit,
			char **text, size_t *len, bool *same, char *err, size_t errlen)
{
	char path[PATH_MAX], hex[33];
	int rc;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	rc = file_read_all(path, SMALL_FILE_MAX, text, len);
	if (rc < 0)
		return err_fail(err, errlen, rc, "%s: %s", path,
			       rc == -EFBIG ? "larger than 64 MiB" : strerror(-rc));
	const char *want = json_string_value(json_object_get(entry, "xxh3_128"));
	const json_t *size = json_object_get(entry, "size");
	if (!want || !json_is_integer(size)) {
		free(*text);
		*text = NULL;
		return err_fail(err, errlen, -EINVAL, "snapshot.json has no checksum for %s", name);
	}
	st_hash_hex(XXH3_128bits(*text, *len), hex);
	*same = strcmp(hex, want) == 0 && (json_int_t)*len == json_integer_value(size);
	if (!*same && !allow_edit) {
		free(*text);
		*text = NULL;
		return err_fail(err, errlen, -EBADMSG,
			       "%s: checksum mismatch (the file is damaged or was changed)", path);
	}
	return 0;
}

struct mem_reader {
	XXH3_state_t *hash;
	uint64_t data_pages;
	uint8_t *buf;
	int fd;
};

static int verify_range(void *arg, uint64_t off, uint64_t len)
{
	struct mem_reader *r = arg;

	for (uint64_t at = off; at < off + len;) {
		uint64_t n = MIN(READ_CHUNK, off + len - at);
		ssize_t got = pread(r->fd, r->buf, n, (off_t)at);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if ((uint64_t)got != n)
			return -EIO;
		for (uint64_t p = 0; p < n; p += STORE_PAGE) {
			if (st_page_is_zero(r->buf + p))
				continue;
			st_hash_page(r->hash, (at + p) / STORE_PAGE, r->buf + p);
			r->data_pages++;
		}
		at += n;
	}
	return 0;
}

static int verify_memory(const char *dir, int fd, const json_t *entry, uint64_t size, char *err,
			 size_t errlen)
{
	struct mem_reader r = { .hash = XXH3_createState(), .buf = malloc(READ_CHUNK), .fd = fd };
	const char *want = json_string_value(json_object_get(entry, "xxh3_128_nonzero_pages"));
	const json_t *pages = json_object_get(entry, "data_pages");
	char hex[33];
	int rc;

	if (!r.hash || !r.buf) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	if (!want || !json_is_integer(pages)) {
		rc = err_fail(err, errlen, -EINVAL, "snapshot.json has no checksum for memory-ranges");
		goto out;
	}
	XXH3_128bits_reset(r.hash);
	rc = fd_data_extents(fd, size, STORE_PAGE, verify_range, &r);
	if (rc < 0) {
		err_fail(err, errlen, rc, "%s/memory-ranges: %s", dir, strerror(-rc));
		goto out;
	}
	st_hash_hex(XXH3_128bits_digest(r.hash), hex);
	if (strcmp(hex, want) || (json_int_t)r.data_pages != json_integer_value(pages))
		rc = err_fail(err, errlen, -EBADMSG,
			     "%s/memory-ranges: checksum mismatch (the file is damaged or was changed)",
			     dir);
out:
	XXH3_freeState(r.hash);
	free(r.buf);
	return rc;
}

static int cmp_disk(const void *a, const void *b)
{
	return strcmp(((const struct snap_disk *)a)->device, ((const struct snap_disk *)b)->device);
}

/* The disk images a snapshot holds ("disk-vda"...: entries of kind
 * "disk"): each a regular file of its size, listed in s->disks in device
 * order. Other entries than the three known files and disks are refused. */
static int check_disks(const char *dir, const json_t *files, struct snapdir *s, char *err,
		       size_t errlen)
{
	const char *name;
	json_t *e;

	s->nr_disks = 0;
	json_object_foreach((json_t *)(uintptr_t)files, name, e) {
		if (!strcmp(name, "config.json") || !strcmp(name, "state.json") ||
		    !strcmp(name, "memory-ranges"))
			continue;
		const char *kind = json_string_value(json_object_get(e, "kind"));
		const json_t *size = json_object_get(e, "size");
		if (!kind || strcmp(kind, "disk") || strncmp(name, "disk-vd", 7) || strlen(name) != 8 ||
		    name[7] < 'a' || name[7] > 'z' || !json_is_integer(size) || json_integer_value(size) < 0)
			return err_fail(err, errlen, -EINVAL, "%s/snapshot.json: unknown file entry %.40s",
				    dir, name);
		char path[PATH_MAX];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (stat(path, &st) < 0)
			return err_fail(err, errlen, -errno, "%s: %s (the snapshot's disk)", path,
				    strerror(errno));
		if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != (uint64_t)json_integer_value(size))
			return err_fail(err, errlen, -EBADMSG,
				    "%s: %lld bytes; the snapshot wrote %lld (truncated or replaced?)",
				    path, (long long)st.st_size, (long long)json_integer_value(size));
		/* at most one entry per name, so at most 26 */
		struct snap_disk *d = &s->disks[s->nr_disks++];
		snprintf(d->device, sizeof(d->device), "%s", name + 5);
		d->size = (uint64_t)json_integer_value(size);
		d->readonly = json_is_true(json_object_get(e, "readonly"));
	}
	qsort(s->disks, s->nr_disks, sizeof(s->disks[0]), cmp_disk);
	return 0;
}

int snapdir_open(const char *dir, struct snapdir *s, char *err, size_t errlen)
{
	char path[PATH_MAX], *text = NULL;
	size_t len;
	json_error_t je;
	struct stat st;
	bool same;
	int rc;

	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
	if (stat(dir, &st) < 0)
		return err_fail(err, errlen, -errno, "%s is not a snapshot directory: %s", dir,
			       strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return err_fail(err, errlen, -ENOTDIR, "%s is not a snapshot directory: not a directory",
			       dir);

	/* snapshot.json: format, version, checksums. */
	snprintf(path, sizeof(path), "%s/snapshot.json", dir);
	rc = file_read_all(path, SMALL_FILE_MAX, &text, &len);
	if (rc < 0)
		return err_fail(err, errlen, rc, "%s: %s", path, strerror(-rc));
	s->manifest = json_loadb(text, len, 0, &je);
	s->manifest_text = text;
	s->manifest_len = len;
	text = NULL;
	if (!s->manifest) {
		rc = err_fail(err, errlen, -EINVAL, "%s: bad JSON at line %d column %d: %s", path,
			     je.line, je.column, je.text);
		goto fail;
	}
	const char *format = json_string_value(json_object_get(s->manifest, "format"));
	const json_t *ver = json_object_get(s->manifest, "version");
	if (!format || strcmp(format, SNAPDIR_FORMAT) || !json_is_integer(ver)) {
		rc = err_fail(err, errlen, -EINVAL, "%s: not a forkvm snapshot manifest", path);
		goto fail;
	}
	if (json_integer_value(ver) > SNAPDIR_VERSION || json_integer_value(ver) < 1) {
		rc = err_fail(err, errlen, -EINVAL,
			     "%s: snapshot format version %lld; this forkvm reads version %d", path,
			     (long long)json_integer_value(ver), SNAPDIR_VERSION);
		goto fail;
	}
	const json_t *files = json_object_get(s->manifest, "files");
	const char *loader = json_string_value(json_object_get(s->manifest, "loader"));
	const json_t *msize = json_object_get(json_object_get(s->manifest, "memory"), "size");
	const json_t *vcpus = json_object_get(s->manifest, "vcpus");
	if (!json_is_object(files) || !loader || strlen(loader) >= sizeof(s->loader) ||
	    !json_is_integer(msize) || json_integer_value(msize) <= 0 || !json_is_integer(vcpus) ||
	    json_integer_value(vcpus) < 1 || json_integer_value(vcpus) > 1024) {
		rc = err_fail(err, errlen, -EINVAL, "%s: incomplete manifest", path);
		goto fail;
	}
	strcpy(s->loader, loader);
	const char *platform = json_string_value(json_object_get(s->manifest, "platform"));
	if (platform && strcmp(platform, "kvm") && strcmp(platform, "process")) {
		rc = err_fail(err, errlen, -EINVAL, "%s: unknown platform '%.32s'", path, platform);
		goto fail;
	}
	snprintf(s->platform, sizeof(s->platform), "%s", platform ? platform : "kvm");
	s->memory_size = (uint64_t)json_integer_value(msize);
	s->vcpus = (unsigned)json_integer_value(vcpus);

	/* config.json: checked, but an edit is the caller's to judge. */
	rc = read_checked(dir, "config.json", json_object_get(files, "config.json"), true, &s->config,
			  &s->config_len, &same, err, errlen);
	if (rc < 0)
		goto fail;
	s->config_edited = !same;
	/* an edit is allowed; one that is not even JSON is not */
	char what[4200];
	snprintf(what, sizeof(what), "%s/config.json", dir);
	rc = st_check_json_object(what, s->config, s->config_len, err, errlen);
	if (rc < 0)
		goto fail;

	/* state.json */
	rc = read_checked(dir, "state.json", json_object_get(files, "state.json"), false, &s->state,
			  &s->state_len, &same, err, errlen);
	if (rc < 0)
		goto fail;
	json_t *state = json_loadb(s->state, s->state_len, 0, &je);
	if (!state) {
		rc = err_fail(err, errlen, -EINVAL, "%s/state.json: bad JSON at line %d column %d: %s",
			     dir, je.line, je.column, je.text);
		goto fail;
	}
	const char *sf = json_string_value(json_object_get(state, "format"));
	const json_t *sv = json_object_get(state, "version");
	if (!sf || strcmp(sf, SNAPDIR_STATE_FORMAT) || !json_is_integer(sv) ||
	    json_integer_value(sv) > SNAPDIR_STATE_VERSION || json_integer_value(sv) < 1 ||
	    !json_is_array(json_object_get(state, "units"))) {
		json_decref(state);
		rc = err_fail(err, errlen, -EINVAL,
			     "%s/state.json: not a forkvm state file of a version this forkvm reads (%d)",
			     dir, SNAPDIR_STATE_VERSION);
		goto fail;
	}
	s->units = json_incref(json_object_get(state, "units"));
	json_decref(state);

	/* memory-ranges: size, then the checksum of its non-zero pages. */
	snprintf(path, sizeof(path), "%s/memory-ranges", dir);
	s->mem_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->mem_fd < 0) {
		rc = err_fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (fstat(s->mem_fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = err_fail(err, errlen, -EINVAL, "%s is not a regular file", path);
		goto fail;
	}
	if ((uint64_t)st.st_size != s->memory_size) {
		rc = err_fail(err, errlen, -EINVAL,
			     "%s: %lld bytes, but the VM has %llu bytes of memory (truncated or wrong "
			     "file)",
			     path, (long long)st.st_size, (unsigned long long)s->memory_size);
		goto fail;
	}
	rc = verify_memory(dir, s->mem_fd, json_object_get(files, "memory-ranges"), s->memory_size,
			   err, errlen);
	if (rc < 0)
		goto fail;
	rc = check_disks(dir, files, s, err, errlen);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	snapdir_close(s);
	return rc;
}

void snapdir_close(struct snapdir *s)
{
	json_decref(s->manifest);
	json_decref(s->units);
	free(s->manifest_text);
	free(s->config);
	free(s->state);
	if (s->mem_fd >= 0)
		close(s->mem_fd);
	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
}
