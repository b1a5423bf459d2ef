/* vmm/snapshot.c - see snapshot.h and docs/snapshot-format.md. */
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/log.h"
#include "common/util.h"

#define SMALL_FILE_MAX (64ULL << 20) /* config.json, state.json, snapshot.json */
#define PAGE GMEM_PAGE_SIZE
#define IO_CHUNK (1ULL << 20)   /* largest pwrite of a memory run */
#define READ_CHUNK (128ULL << 10) /* verification reads: small enough to stay cheap to touch */

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

int snapshot_url_path(const char *url, char *path, size_t len, char *err, size_t errlen)
{
	const char *p;

	if (!url || !*url)
		return fail(err, errlen, -EINVAL, "a snapshot URL is required (file:///path)");
	if (strncmp(url, "file://", 7) != 0) {
		const char *colon = strstr(url, "://");
		if (colon)
			return fail(err, errlen, -EPROTONOSUPPORT,
				    "unsupported URL scheme in %s (this forkvm takes file:///path)", url);
		return fail(err, errlen, -EINVAL, "'%s' is not a URL (use file:///path)", url);
	}
	p = url + 7;
	if (!*p || strlen(p) >= len)
		return fail(err, errlen, -EINVAL, "bad path in %s", url);
	strcpy(path, p);
	/* Drop trailing slashes: "file:///tmp/snap/" is /tmp/snap. */
	for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
		path[n - 1] = '\0';
	return 0;
}

/* ------------------------------------------------------------ checksums */

static void hash_hex(const XXH128_hash_t *h, char out[33])
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, *h);
	hex_encode(c.digest, sizeof(c.digest), out);
}

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	for (size_t i = 0; i < PAGE / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

/* The memory checksum: XXH3-128 over (page index as 8 little-endian bytes,
 * 4096 page bytes) for every page that is not all zero, in page order.
 * Holes and zero pages do not enter it, so a reader can skip holes. */
static void hash_page(XXH3_state_t *st, uint64_t index, const uint8_t *page)
{
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(index >> (8 * i));
	XXH3_128bits_update(st, le, sizeof(le));
	XXH3_128bits_update(st, page, PAGE);
}

/* ------------------------------------------------------------ writing */

static int write_file(int dirfd, const char *name, const void *data, size_t len, char *err,
		      size_t errlen)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int rc;

	if (fd < 0)
		return fail(err, errlen, -errno, "cannot create %s: %s", name, strerror(errno));
	rc = write_full(fd, data, len);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		return fail(err, errlen, rc, "cannot write %s: %s", name, strerror(-rc));
	return 0;
}

/* Writes a JSON document and records its size and checksum in files. */
static int write_json(int dirfd, const char *name, const json_t *doc, size_t flags, json_t *files,
		      char *err, size_t errlen)
{
	char *text = json_dumps(doc, flags);
	char hex[33];
	int rc;

	if (!text)
		return fail(err, errlen, -ENOMEM, "cannot encode %s", name);
	size_t len = strlen(text);
	text[len] = '\n'; /* json_dumps leaves room for the NUL we overwrite */
	XXH128_hash_t h = XXH3_128bits(text, len + 1);
	hash_hex(&h, hex);
	rc = write_file(dirfd, name, text, len + 1, err, errlen);
	free(text);
	if (rc == 0 && files)
		json_object_set_new(files, name, json_pack("{s:I,s:s}", "size", (json_int_t)(len + 1),
							   "xxh3_128", hex));
	return rc;
}

struct mem_writer {
	const struct gmem *mem;
	int fd;
	XXH3_state_t *hash;
	uint64_t data_pages;
	uint64_t run_start, run_len; /* pending non-zero run (bytes) */
};

static int flush_run(struct mem_writer *w)
{
	const uint8_t *src = w->mem->host + w->run_start;
	uint64_t done = 0;

	while (done < w->run_len) {
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

	for (uint64_t p = off; p < off + len; p += PAGE) {
		const uint8_t *page = w->mem->host + p;
		if (page_is_zero(page))
			continue;
		hash_page(w->hash, p / PAGE, page);
		w->data_pages++;
		if (w->run_len && w->run_start + w->run_len == p && w->run_len < IO_CHUNK) {
			w->run_len += PAGE;
			continue;
		}
		if (w->run_len) {
			int rc = flush_run(w);
			if (rc < 0)
				return rc;
		}
		w->run_start = p;
		w->run_len = PAGE;
	}
	return 0;
}

static int write_memory(int dirfd, const struct gmem *mem, json_t *files, char *err, size_t errlen)
{
	struct mem_writer w = { .mem = mem, .hash = XXH3_createState() };
	char hex[33];
	int rc;

	w.fd = openat(dirfd, "memory-ranges", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w.fd < 0 || !w.hash) {
		rc = w.fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	XXH3_128bits_reset(w.hash);
	if (ftruncate(w.fd, (off_t)mem->size) < 0) {
		rc = -errno;
		goto out;
	}
	rc = gmem_for_each_populated(mem, write_range, &w);
	if (rc == 0 && w.run_len)
		rc = flush_run(&w);
	if (rc == 0 && fsync(w.fd) < 0)
		rc = -errno;
	if (rc < 0)
		goto out;
	XXH128_hash_t h = XXH3_128bits_digest(w.hash);
	hash_hex(&h, hex);
	json_object_set_new(files, "memory-ranges",
			    json_pack("{s:I,s:I,s:s}", "size", (json_int_t)mem->size, "data_pages",
				      (json_int_t)w.data_pages, "xxh3_128_nonzero_pages", hex));
out:
	if (w.fd >= 0 && close(w.fd) < 0 && rc == 0)
		rc = -errno;
	XXH3_freeState(w.hash);
	if (rc < 0)
		return fail(err, errlen, rc, "cannot write memory-ranges: %s", strerror(-rc));
	return 0;
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
	rmdir(dir);
}

/* 0 if dir does not exist or is an empty directory. */
static int check_destination(const char *dir, char *err, size_t errlen)
{
	struct stat st;
	DIR *d;
	struct dirent *e;

	if (lstat(dir, &st) == 0 && S_ISLNK(st.st_mode))
		return fail(err, errlen, -ENOTDIR, "%s is a dangling symbolic link", dir);
	if (stat(dir, &st) < 0)
		return errno == ENOENT ? 0 : fail(err, errlen, -errno, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail(err, errlen, -ENOTDIR, "%s exists and is not a directory", dir);
	d = opendir(dir);
	if (!d)
		return fail(err, errlen, -errno, "%s: %s", dir, strerror(errno));
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			closedir(d);
			return fail(err, errlen, -EEXIST,
				    "%s is not empty: a snapshot never overwrites anything", dir);
		}
	}
	closedir(d);
	return 0;
}

static int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

int snapshot_write(const char *dir, const struct vm_config *cfg, const json_t *units,
		   const struct gmem *mem, const struct snapshot_meta *meta, char *err, size_t errlen)
{
	char parent[PATH_MAX], base[PATH_MAX], tmp[2 * PATH_MAX + 64], real[PATH_MAX];
	json_t *config = NULL, *state = NULL, *manifest = NULL, *files = NULL;
	struct stat lst;
	int dfd = -1, rc;

	/* A symbolic link to a directory: the snapshot goes into its target
	 * (rename() would not follow the link). */
	if (lstat(dir, &lst) == 0 && S_ISLNK(lst.st_mode) && realpath(dir, real))
		dir = real;
	rc = check_destination(dir, err, errlen);
	if (rc < 0)
		return rc;
	if (!*dir)
		return fail(err, errlen, -EINVAL, "an empty snapshot path");
	if (strlen(dir) >= sizeof(parent))
		return fail(err, errlen, -ENAMETOOLONG, "path too long: %s", dir);
	/* dirname() and basename() may modify their argument or return static
	 * storage: work on copies, keep the results. */
	char work[PATH_MAX];
	strcpy(work, dir);
	snprintf(parent, sizeof(parent), "%s", dirname(work));
	strcpy(work, dir);
	snprintf(base, sizeof(base), "%s", basename(work));
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp-XXXXXX", parent, base);
	if (!mkdtemp(tmp))
		return fail(err, errlen, -errno, "cannot create a directory next to %s: %s", dir,
			    strerror(errno));
	dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		rc = fail(err, errlen, -errno, "%s: %s", tmp, strerror(errno));
		goto out;
	}

	config = vm_config_to_json(cfg);
	files = json_object();
	state = json_pack("{s:s,s:i,s:O}", "format", SNAPSHOT_STATE_FORMAT, "version",
			  SNAPSHOT_STATE_VERSION, "units", units);
	if (!config || !files || !state) {
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	rc = write_json(dfd, "config.json", config, JSON_INDENT(2) | JSON_SORT_KEYS, files, err, errlen);
	if (rc == 0)
		rc = write_json(dfd, "state.json", state, JSON_COMPACT, files, err, errlen);
	if (rc == 0)
		rc = write_memory(dfd, mem, files, err, errlen);
	if (rc < 0)
		goto out;
	manifest = json_pack("{s:s,s:i,s:s,s:o,s:s,s:i,s:{s:I,s:I},s:O,s:O}", "format", SNAPSHOT_FORMAT,
			     "version", SNAPSHOT_VERSION, "forkvm_version", FORKVM_VERSION,
			     "created_realtime_ns", json_integer((json_int_t)time_real_ns()), "loader",
			     meta->loader, "vcpus", (int)meta->vcpus, "memory", "size",
			     (json_int_t)meta->memory_size, "page_size", (json_int_t)PAGE, "config",
			     config, "files", files);
	if (!manifest) {
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	/* The manifest last: a directory without it is not a snapshot. */
	rc = write_json(dfd, "snapshot.json", manifest, JSON_INDENT(2), NULL, err, errlen);
	if (rc < 0)
		goto out;
	if (fsync(dfd) < 0) {
		rc = fail(err, errlen, -errno, "fsync %s: %s", tmp, strerror(errno));
		goto out;
	}
	/* Replaces dir only if it is missing or an empty directory. */
	if (rename(tmp, dir) < 0) {
		rc = -errno;
		if (rc == -ENOTEMPTY || rc == -EEXIST)
			fail(err, errlen, -EEXIST,
			     "%s is not empty: a snapshot never overwrites anything", dir);
		else
			fail(err, errlen, rc, "cannot rename into %s: %s", dir, strerror(-rc));
		rc = rc == -ENOTEMPTY ? -EEXIST : rc;
		goto out;
	}
	tmp[0] = '\0';
	rc = fsync_dir(parent);
	if (rc < 0)
		log_warn("fsync of %s: %s", parent, strerror(-rc));
	rc = 0;
out:
	if (dfd >= 0)
		close(dfd);
	if (tmp[0])
		remove_tree(tmp);
	json_decref(config);
	json_decref(state);
	json_decref(files);
	json_decref(manifest);
	return rc;
}

/* ------------------------------------------------------------ reading */

/* Reads name (at most SMALL_FILE_MAX) and checks size and checksum against
 * the manifest entry. *matches is false (and no error) on a checksum
 * mismatch when allow_edit, so the caller can decide. */
static int read_checked(const char *dir, const char *name, const json_t *entry, bool allow_edit,
			char **text, bool *matches, char *err, size_t errlen)
{
	char path[PATH_MAX];
	size_t len;
	char hex[33];
	int rc;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	rc = file_read_all(path, SMALL_FILE_MAX, text, &len);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: %s", path,
			    rc == -EFBIG ? "larger than 64 MiB" : strerror(-rc));
	const char *want = json_string_value(json_object_get(entry, "xxh3_128"));
	const json_t *size = json_object_get(entry, "size");
	if (!want || !json_is_integer(size)) {
		free(*text);
		return fail(err, errlen, -EINVAL, "snapshot.json has no checksum for %s", name);
	}
	XXH128_hash_t h = XXH3_128bits(*text, len);
	hash_hex(&h, hex);
	*matches = strcmp(hex, want) == 0 && (json_int_t)len == json_integer_value(size);
	if (!*matches && !allow_edit) {
		free(*text);
		return fail(err, errlen, -EBADMSG,
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
		for (uint64_t p = 0; p < n; p += PAGE) {
			if (page_is_zero(r->buf + p))
				continue;
			hash_page(r->hash, (at + p) / PAGE, r->buf + p);
			r->data_pages++;
		}
		at += n;
	}
	return 0;
}

static int data_extents(int fd, uint64_t size, int (*cb)(void *, uint64_t, uint64_t), void *arg)
{
	off_t pos = 0;
	while ((uint64_t)pos < size) {
		off_t data = lseek(fd, pos, SEEK_DATA);
		if (data < 0)
			return errno == ENXIO ? 0 : -errno;
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		uint64_t s = align_down((uint64_t)data, PAGE), e = MIN(align_up((uint64_t)hole, PAGE), size);
		int rc = cb(arg, s, e - s);
		if (rc < 0)
			return rc;
		pos = (off_t)e;
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
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	if (!want || !json_is_integer(pages)) {
		rc = fail(err, errlen, -EINVAL, "snapshot.json has no checksum for memory-ranges");
		goto out;
	}
	XXH3_128bits_reset(r.hash);
	rc = data_extents(fd, size, verify_range, &r);
	if (rc < 0) {
		fail(err, errlen, rc, "%s/memory-ranges: %s", dir, strerror(-rc));
		goto out;
	}
	XXH128_hash_t h = XXH3_128bits_digest(r.hash);
	hash_hex(&h, hex);
	if (strcmp(hex, want) || (json_int_t)r.data_pages != json_integer_value(pages))
		rc = fail(err, errlen, -EBADMSG,
			  "%s/memory-ranges: checksum mismatch (the file is damaged or was changed)",
			  dir);
out:
	XXH3_freeState(r.hash);
	free(r.buf);
	return rc;
}

/* The edited config may differ from the saved one only where that is safe. */
static int check_config_edit(const struct vm_config *now, const struct vm_config *was, char *err,
			     size_t errlen)
{
#define SAME_STR(a, b) (((a) == NULL && (b) == NULL) || ((a) && (b) && !strcmp((a), (b))))
	if (now->boot_vcpus != was->boot_vcpus)
		return fail(err, errlen, -EINVAL,
			    "config.json: cpus.boot_vcpus is %u but the snapshot has %u vCPUs: the vCPU "
			    "count cannot change across a restore",
			    now->boot_vcpus, was->boot_vcpus);
	if (now->memory_size != was->memory_size)
		return fail(err, errlen, -EINVAL,
			    "config.json: memory.size is %llu but the snapshot has %llu bytes: memory "
			    "size cannot change across a restore",
			    (unsigned long long)now->memory_size, (unsigned long long)was->memory_size);
	if (!SAME_STR(now->kernel, was->kernel) || !SAME_STR(now->cmdline, was->cmdline))
		return fail(err, errlen, -EINVAL,
			    "config.json: the payload (kernel, cmdline) cannot change: it is already in "
			    "the snapshot's memory");
	if (!now->agent_socket != !was->agent_socket)
		return fail(err, errlen, -EINVAL,
			    "config.json: the agent channel cannot be added or removed (its socket "
			    "path can change)");
	return 0;
#undef SAME_STR
}

static int parse_config(const char *text, const char *what, struct vm_config *cfg, char *err,
			size_t errlen)
{
	json_error_t je;
	char why[512];
	json_t *j = json_loads(text, 0, &je);
	int rc;

	if (!j)
		return fail(err, errlen, -EINVAL, "%s: bad JSON at line %d column %d: %s", what, je.line,
			    je.column, je.text);
	rc = vm_config_from_json(j, cfg, why, sizeof(why));
	json_decref(j);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: %s", what, why);
	return 0;
}

int snapshot_open(const char *dir, struct snapshot *s, char *err, size_t errlen)
{
	char path[PATH_MAX], *text = NULL;
	json_error_t je;
	struct stat st;
	bool same;
	int rc;

	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return fail(err, errlen, stat(dir, &st) < 0 ? -errno : -ENOTDIR,
			    "%s is not a snapshot directory: %s", dir,
			    stat(dir, &st) < 0 ? strerror(errno) : "not a directory");

	/* snapshot.json: format, version, checksums. */
	snprintf(path, sizeof(path), "%s/snapshot.json", dir);
	size_t len;
	rc = file_read_all(path, SMALL_FILE_MAX, &text, &len);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: %s", path, strerror(-rc));
	s->manifest = json_loads(text, 0, &je);
	free(text);
	text = NULL;
	if (!s->manifest) {
		rc = fail(err, errlen, -EINVAL, "%s: bad JSON at line %d column %d: %s", path, je.line,
			  je.column, je.text);
		goto fail;
	}
	const char *format = json_string_value(json_object_get(s->manifest, "format"));
	const json_t *ver = json_object_get(s->manifest, "version");
	if (!format || strcmp(format, SNAPSHOT_FORMAT) || !json_is_integer(ver)) {
		rc = fail(err, errlen, -EINVAL, "%s: not a forkvm snapshot manifest", path);
		goto fail;
	}
	if (json_integer_value(ver) > SNAPSHOT_VERSION || json_integer_value(ver) < 1) {
		rc = fail(err, errlen, -EINVAL,
			  "%s: snapshot format version %lld; this forkvm reads version %d",
			  path, (long long)json_integer_value(ver), SNAPSHOT_VERSION);
		goto fail;
	}
	const json_t *files = json_object_get(s->manifest, "files");
	const char *loader = json_string_value(json_object_get(s->manifest, "loader"));
	const json_t *msize = json_object_get(json_object_get(s->manifest, "memory"), "size");
	if (!json_is_object(files) || !loader || strlen(loader) >= sizeof(s->loader) ||
	    !json_is_integer(msize)) {
		rc = fail(err, errlen, -EINVAL, "%s: incomplete manifest", path);
		goto fail;
	}
	strcpy(s->loader, loader);
	s->memory_size = (uint64_t)json_integer_value(msize);

	/* config.json: checksum, or an edit that is safe. */
	rc = read_checked(dir, "config.json", json_object_get(files, "config.json"), true, &text,
			  &same, err, errlen);
	if (rc < 0)
		goto fail;
	rc = parse_config(text, "config.json", &s->cfg, err, errlen);
	free(text);
	text = NULL;
	if (rc < 0)
		goto fail;
	if (!same) {
		struct vm_config was;
		char *orig = json_dumps(json_object_get(s->manifest, "config"), 0);
		rc = orig ? parse_config(orig, "snapshot.json config", &was, err, errlen) : -ENOMEM;
		free(orig);
		if (rc < 0)
			goto fail;
		rc = check_config_edit(&s->cfg, &was, err, errlen);
		vm_config_free(&was);
		if (rc < 0)
			goto fail;
		log_info("%s/config.json was edited since the snapshot; the edits are safe: using it",
			 dir);
	}
	const json_t *mvcpus = json_object_get(s->manifest, "vcpus");
	if (!json_is_integer(mvcpus) || json_integer_value(mvcpus) != (json_int_t)s->cfg.boot_vcpus) {
		rc = fail(err, errlen, -EINVAL,
			  "config.json: %u vCPUs, but the snapshot has %lld: the vCPU count cannot change "
			  "across a restore",
			  s->cfg.boot_vcpus, json_is_integer(mvcpus) ? (long long)json_integer_value(mvcpus) : -1LL);
		goto fail;
	}
	if (s->cfg.memory_size != s->memory_size) {
		rc = fail(err, errlen, -EINVAL, "config.json: memory size %llu does not match the snapshot (%llu)",
			  (unsigned long long)s->cfg.memory_size, (unsigned long long)s->memory_size);
		goto fail;
	}

	/* state.json */
	rc = read_checked(dir, "state.json", json_object_get(files, "state.json"), false, &text,
			  &same, err, errlen);
	if (rc < 0)
		goto fail;
	json_t *state = json_loads(text, 0, &je);
	free(text);
	text = NULL;
	if (!state) {
		rc = fail(err, errlen, -EINVAL, "%s/state.json: bad JSON at line %d column %d: %s", dir,
			  je.line, je.column, je.text);
		goto fail;
	}
	const char *sf = json_string_value(json_object_get(state, "format"));
	const json_t *sv = json_object_get(state, "version");
	if (!sf || strcmp(sf, SNAPSHOT_STATE_FORMAT) || !json_is_integer(sv) ||
	    json_integer_value(sv) > SNAPSHOT_STATE_VERSION || json_integer_value(sv) < 1 ||
	    !json_is_array(json_object_get(state, "units"))) {
		json_decref(state);
		rc = fail(err, errlen, -EINVAL,
			  "%s/state.json: not a forkvm state file of a version this forkvm reads (%d)",
			  dir, SNAPSHOT_STATE_VERSION);
		goto fail;
	}
	s->units = json_incref(json_object_get(state, "units"));
	json_decref(state);

	/* memory-ranges: size, then the checksum of its non-zero pages. */
	snprintf(path, sizeof(path), "%s/memory-ranges", dir);
	s->mem_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->mem_fd < 0) {
		rc = fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (fstat(s->mem_fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = fail(err, errlen, -EINVAL, "%s is not a regular file", path);
		goto fail;
	}
	if ((uint64_t)st.st_size != s->memory_size) {
		rc = fail(err, errlen, -EINVAL,
			  "%s: %lld bytes, but the VM has %llu bytes of memory (truncated or wrong "
			  "file)",
			  path, (long long)st.st_size, (unsigned long long)s->memory_size);
		goto fail;
	}
	rc = verify_memory(dir, s->mem_fd, json_object_get(files, "memory-ranges"), s->memory_size,
			   err, errlen);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	snapshot_close(s);
	return rc;
}

void snapshot_close(struct snapshot *s)
{
	vm_config_free(&s->cfg);
	json_decref(s->units);
	json_decref(s->manifest);
	if (s->mem_fd >= 0)
		close(s->mem_fd);
	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
}
