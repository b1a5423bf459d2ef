/* store/store.c - the store handle: layout, lock, references, tags,
 * manifests, listing, removal. Layout (docs/store-format.md):
 *   store.json            format, version, chunk size
 *   lock                  flock: shared by put/load, exclusive by gc
 *   objects/xx/<id>       objects (xx: the first two hex digits)
 *   snapshots/<id>        one empty file per committed snapshot
 *   tags/<name>           "<id>\n"
 *   images/<id>.img       materialized memory images (read-only, cache)
 *   tmp/                  files being written */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "store/internal.h"

const char *store_default_root(char *buf, size_t len)
{
	const char *env = getenv("FORKVM_STORE");
	if (env && *env) {
		snprintf(buf, len, "%s", env);
	} else if (geteuid() == 0) {
		snprintf(buf, len, "/var/lib/forkvm/store");
	} else {
		const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
		if (xdg && *xdg)
			snprintf(buf, len, "%s/forkvm/store", xdg);
		else
			snprintf(buf, len, "%s/.local/share/forkvm/store", home ? home : "/tmp");
	}
	return buf;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int st_fanout_repair(struct store *st, char *err, size_t errlen)
{
	for (unsigned i = 0; i < 256; i++) {
		char d[16];
		snprintf(d, sizeof(d), "objects/%02x", i);
		if (mkdirat(st->root_fd, d, 0700) == 0)
			log_warn("store %s: %s was missing: made again", st->root, d);
		else if (errno != EEXIST)
			return err_fail(err, errlen, -errno, "%s/%s: %s", st->root, d, strerror(errno));
	}
	return 0;
}

static int create_layout(struct store *st, uint32_t chunk_size, char *err, size_t errlen)
{
	static const char *const dirs[] = { "objects", "snapshots", "tags", "images", "tmp" };
	char hex[3];
	int rc;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdirat(st->root_fd, dirs[i], 0700) < 0 && errno != EEXIST)
			return err_fail(err, errlen, -errno, "%s/%s: %s", st->root, dirs[i], strerror(errno));
	for (unsigned i = 0; i < 256; i++) {
		char d[16];
		snprintf(hex, sizeof(hex), "%02x", i);
		snprintf(d, sizeof(d), "objects/%s", hex);
		if (mkdirat(st->root_fd, d, 0700) < 0 && errno != EEXIST)
			return err_fail(err, errlen, -errno, "%s/%s: %s", st->root, d, strerror(errno));
	}
	json_t *j = json_pack("{s:s,s:i,s:I}", "format", STORE_FORMAT, "version", STORE_VERSION,
			      "chunk_size", (json_int_t)chunk_size);
	size_t len;
	char *text = j ? st_json_text(j, JSON_INDENT(2), &len) : NULL;
	json_decref(j);
	if (!text)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	/* store.json last: its presence means the layout is complete. */
	unlinkat(st->root_fd, "tmp/store.json", 0);
	rc = st_write_file(st->root_fd, "tmp/store.json", text, len, err, errlen);
	free(text);
	if (rc == 0 && renameat(st->root_fd, "tmp/store.json", st->root_fd, "store.json") < 0)
		rc = err_fail(err, errlen, -errno, "%s/store.json: %s", st->root, strerror(errno));
	if (rc == 0)
		(void)st_fsync_dir(st->root);
	return rc;
}

static int read_config(struct store *st, char *err, size_t errlen)
{
	char path[4200], *text;
	json_error_t je;
	int rc;

	snprintf(path, sizeof(path), "%s/store.json", st->root);
	rc = file_read_all(path, 1 << 20, &text, NULL);
	if (rc < 0)
		return err_fail(err, errlen, rc, "%s: %s", path,
			       rc == -ENOENT ? "not a forkvm store (no store.json)" : strerror(-rc));
	json_t *j = json_loads(text, 0, &je);
	free(text);
	const char *format = json_string_value(json_object_get(j, "format"));
	const json_t *ver = json_object_get(j, "version"), *cs = json_object_get(j, "chunk_size");
	if (!j || !format || strcmp(format, STORE_FORMAT) || !json_is_integer(ver) ||
	    !json_is_integer(cs)) {
		json_decref(j);
		return err_fail(err, errlen, -EINVAL, "%s: not a forkvm store description", path);
	}
	if (json_integer_value(ver) != STORE_VERSION) {
		rc = err_fail(err, errlen, -EINVAL, "%s: store format version %lld; this forkvm reads %d",
			     path, (long long)json_integer_value(ver), STORE_VERSION);
		json_decref(j);
		return rc;
	}
	json_int_t c = json_integer_value(cs);
	json_decref(j);
	if (c < (json_int_t)STORE_PAGE || c > (64 << 20) || (c & (c - 1)))
		return err_fail(err, errlen, -EINVAL, "%s: bad chunk size %lld", path, (long long)c);
	st->chunk_size = (uint32_t)c;
	return 0;
}

/* Whether the directory holds nothing but what an interrupted
 * create_layout() leaves: a store is never created over other files (gc
 * would take them for its own). */
static bool only_layout(int root_fd)
{
	static const char *const names[] = { ".", "..", "objects", "snapshots", "tags",
					     "images", "tmp", "lock" };
	int fd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	bool ok = d != NULL;

	if (!d && fd >= 0)
		close(fd);
	while (ok && (e = readdir(d))) {
		bool known = false;
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			known |= !strcmp(e->d_name, names[i]);
		ok = known;
	}
	if (d)
		closedir(d);
	return ok;
}

int store_open(const char *root, bool create, uint32_t chunk_size, struct store **out, char *err,
	       size_t errlen)
{
	struct store *st;
	struct stat s;
	int rc;

	if (!root || !*root || strlen(root) >= sizeof(st->root))
		return err_fail(err, errlen, -EINVAL, "bad store path");
	if (chunk_size && (chunk_size < STORE_PAGE || chunk_size > (64 << 20) ||
			   (chunk_size & (chunk_size - 1))))
		return err_fail(err, errlen, -EINVAL,
			       "chunk size must be a power of two between 4 KiB and 64 MiB");
	st = calloc(1, sizeof(*st));
	if (!st)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	snprintf(st->root, sizeof(st->root), "%s", root);
	st->root_fd = st->lock_fd = -1;
	st->zstd_level = 1;
	if (stat(root, &s) < 0) {
		if (errno != ENOENT || !create) {
			rc = err_fail(err, errlen, -errno, "store %s: %s", root, strerror(errno));
			goto err;
		}
		rc = mkdir_p(root, 0700);
		if (rc < 0) {
			err_fail(err, errlen, rc, "cannot create the store %s: %s", root, strerror(-rc));
			goto err;
		}
	}
	st->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->root_fd < 0) {
		rc = err_fail(err, errlen, -errno, "store %s: %s", root, strerror(errno));
		goto err;
	}
	if (fstatat(st->root_fd, "store.json", &s, 0) < 0) {
		if (!create) {
			rc = err_fail(err, errlen, -ENOENT,
				     "%s is not a forkvm store (no store.json; forkctl store put creates one)",
				     root);
			goto err;
		}
		if (!only_layout(st->root_fd)) {
			rc = err_fail(err, errlen, -EEXIST,
				     "%s is not a forkvm store (no store.json) and not empty: a store is "
				     "only created in a new or empty directory",
				     root);
			goto err;
		}
		rc = create_layout(st, chunk_size ? chunk_size : STORE_DEFAULT_CHUNK, err, errlen);
		if (rc < 0)
			goto err;
	}
	rc = read_config(st, err, errlen);
	if (rc < 0)
		goto err;
	st->lock_fd = openat(st->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->lock_fd < 0) {
		rc = err_fail(err, errlen, -errno, "%s/lock: %s", root, strerror(errno));
		goto err;
	}
	*out = st;
	return 0;
err:
	store_close(st);
	return rc;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	if (st->root_fd >= 0)
		close(st->root_fd);
	free(st);
}

uint32_t store_chunk_size(const struct store *st)
{
	return st->chunk_size;
}

const char *store_root(const struct store *st)
{
	return st->root;
}

int st_lock(struct store *st, bool exclusive)
{
	while (flock(st->lock_fd, exclusive ? LOCK_EX : LOCK_SH) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

void st_unlock(struct store *st)
{
	flock(st->lock_fd, LOCK_UN);
}

/* ------------------------------------------------------------ references */

bool store_tag_valid(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > 128)
		return false;
	if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z') ||
	      (name[0] >= '0' && name[0] <= '9')))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static int read_tag(struct store *st, const char *name, struct store_id *id)
{
	char rel[200], buf[64];
	ssize_t n;
	int fd;

	snprintf(rel, sizeof(rel), "tags/%s", name);
	fd = openat(st->root_fd, rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 33 || buf[32] != '\n')
		return -EBADMSG;
	buf[32] = '\0';
	return store_id_parse(buf, id) < 0 ? -EBADMSG : 0;
}

bool st_snapshot_committed(struct store *st, const struct store_id *id)
{
	char rel[64], hex[33];
	struct stat s;
	store_id_hex(id, hex);
	snprintf(rel, sizeof(rel), "snapshots/%s", hex);
	return fstatat(st->root_fd, rel, &s, 0) == 0;
}

int st_snapshots(struct store *st, struct store_id **ids, size_t *n)
{
	int fd = openat(st->root_fd, "snapshots", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	size_t cap = 0;

	*ids = NULL;
	*n = 0;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	while ((e = readdir(d))) {
		struct store_id id;
		if (store_id_parse(e->d_name, &id) < 0)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			struct store_id *g = realloc(*ids, cap * sizeof(**ids));
			if (!g) {
				closedir(d);
				free(*ids);
				*ids = NULL;
				return -ENOMEM;
			}
			*ids = g;
		}
		(*ids)[(*n)++] = id;
	}
	closedir(d);
	return 0;
}

int store_resolve(struct store *st, const char *ref, struct store_id *id, char *err, size_t errlen)
{
	struct store_id *all;
	size_t n, hits = 0, len = ref ? strlen(ref) : 0;
	int rc;

	if (!len)
		return err_fail(err, errlen, -EINVAL, "a snapshot reference (tag or id) is required");
	if (store_tag_valid(ref)) {
		rc = read_tag(st, ref, id);
		/* The commit marker is the one truth (ls, show, gc go by it): a
		 * tag of a snapshot without one names nothing usable. */
		if (rc == 0 && !st_snapshot_committed(st, id)) {
			char h[33];
			store_id_hex(id, h);
			return err_fail(err, errlen, -ENOENT,
				       "tag %s names snapshot %.12s, which is not committed in the store "
				       "%s (its marker snapshots/%s is missing: put it again)",
				       ref, h, st->root, h);
		}
		if (rc == 0)
			return 0;
		if (rc == -EBADMSG)
			return err_fail(err, errlen, rc, "tag %s is damaged", ref);
	}
	bool hex = len <= 32;
	for (size_t i = 0; hex && i < len; i++)
		hex = (ref[i] >= '0' && ref[i] <= '9') || (ref[i] >= 'a' && ref[i] <= 'f');
	if (!hex)
		return err_fail(err, errlen, -ENOENT,
			       "no tag %s in the store %s (and it is not a snapshot id prefix of hex digits)",
			       ref, st->root);
	rc = st_snapshots(st, &all, &n);
	if (rc < 0)
		return err_fail(err, errlen, rc, "%s/snapshots: %s", st->root, strerror(-rc));
	for (size_t i = 0; i < n; i++) {
		char h[33];
		store_id_hex(&all[i], h);
		if (!strncmp(h, ref, len)) {
			*id = all[i];
			hits++;
		}
	}
	free(all);
	if (hits == 0)
		return err_fail(err, errlen, -ENOENT, "no snapshot %s in the store %s", ref, st->root);
	if (hits > 1)
		return err_fail(err, errlen, -EINVAL, "the prefix %s names %zu snapshots: give more digits",
			       ref, hits);
	return 0;
}

int store_tag(struct store *st, const struct store_id *id, const char *name, char *err,
	      size_t errlen)
{
	/* Shared: gc (exclusive) sweeps tmp/, where the tag is written first. */
	int rc = st_lock(st, false);
	if (rc < 0)
		return err_fail(err, errlen, rc, "store lock: %s", strerror(-rc));
	rc = st_tag_locked(st, id, name, err, errlen);
	st_unlock(st);
	return rc;
}

int st_tag_locked(struct store *st, const struct store_id *id, const char *name, char *err,
		  size_t errlen)
{
	char tmp[200], rel[200], line[40], hex[33];
	int rc;

	if (!store_tag_valid(name))
		return err_fail(err, errlen, -EINVAL,
			       "bad tag name '%s' (letters, digits, '.', '_', '-'; at most 128)", name);
	if (!st_snapshot_committed(st, id)) {
		store_id_hex(id, hex);
		return err_fail(err, errlen, -ENOENT, "no snapshot %s in the store", hex);
	}
	store_id_hex(id, hex);
	snprintf(line, sizeof(line), "%s\n", hex);
	snprintf(tmp, sizeof(tmp), "tmp/tag-%s.%d", name, (int)getpid());
	snprintf(rel, sizeof(rel), "tags/%s", name);
	unlinkat(st->root_fd, tmp, 0);
	rc = st_write_file(st->root_fd, tmp, line, 33, err, errlen);
	if (rc == 0 && renameat(st->root_fd, tmp, st->root_fd, rel) < 0)
		rc = err_fail(err, errlen, -errno, "tag %s: %s", name, strerror(errno));
	if (rc == 0) {
		char tags[4200];
		snprintf(tags, sizeof(tags), "%s/tags", st->root);
		(void)st_fsync_dir(tags);
	} else {
		unlinkat(st->root_fd, tmp, 0);
	}
	return rc;
}

char **st_tags_of(struct store *st, const struct store_id *id)
{
	int fd = openat(st->root_fd, "tags", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	char **v = calloc(1, sizeof(*v));
	size_t n = 0;
	struct dirent *e;

	if (!d || !v) {
		if (d)
			closedir(d);
		else if (fd >= 0)
			close(fd);
		return v;
	}
	while ((e = readdir(d))) {
		struct store_id t;
		if (!store_tag_valid(e->d_name) || read_tag(st, e->d_name, &t) < 0 ||
		    !store_id_equal(&t, id))
			continue;
		char **g = realloc(v, (n + 2) * sizeof(*v));
		if (!g)
			break;
		v = g;
		v[n] = strdup(e->d_name);
		if (v[n])
			n++;
		v[n] = NULL;
	}
	closedir(d);
	return v;
}

void st_free_strv(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* ------------------------------------------------------------ manifests */

static int id_of(const json_t *j, struct store_id *id)
{
	return json_is_string(j) ? store_id_parse(json_string_value(j), id) : -EINVAL;
}

/* The most guest memory a snapshot can have: the VMM's limit
 * (GMEM_MAX_SIZE). A manifest giving more is damaged, and the readers
 * size their per-chunk tables and the image file by it. */
#define MANIFEST_MAX_MEMORY (64ULL << 30)
/* The manifest versions this forkvm reads: 1, and 2 (disks). */
#define MANIFEST_VERSION 2

/* A "chunks" list ([[index, id], ...], indices ascending and below
 * c->nr_chunks) into c. Returns 0, -EBADMSG, -ENOMEM. */
static int parse_chunks(const json_t *chunks, struct st_chunks *c)
{
	c->nr_stored = json_array_size(chunks);
	c->index = calloc(c->nr_stored ? c->nr_stored : 1, sizeof(*c->index));
	c->id = calloc(c->nr_stored ? c->nr_stored : 1, sizeof(*c->id));
	if (!c->index || !c->id)
		return -ENOMEM;
	for (size_t i = 0; i < c->nr_stored; i++) {
		const json_t *e = json_array_get(chunks, i);
		const json_t *ix = json_array_get(e, 0);
		if (!json_is_integer(ix) || json_integer_value(ix) < 0 ||
		    (uint64_t)json_integer_value(ix) >= c->nr_chunks ||
		    id_of(json_array_get(e, 1), &c->id[i]) < 0 ||
		    (i && (uint64_t)json_integer_value(ix) <= c->index[i - 1]))
			return -EBADMSG;
		c->index[i] = (uint64_t)json_integer_value(ix);
	}
	return 0;
}

/* The manifest's "disks" (version 2): each {"device": "vda".."vdz" in
 * ascending order, "size", "readonly", "chunks"}. Returns 0 or -errno
 * with err set. */
static int parse_disks(const json_t *disks, struct st_manifest *m, const char *hex, char *err,
		       size_t errlen)
{
	size_t i;
	const json_t *d;

	if (!json_is_array(disks))
		return err_fail(err, errlen, -EBADMSG, "snapshot %s: its manifest's disks are malformed",
			       hex);
	json_array_foreach(disks, i, d) {
		const char *dev = json_string_value(json_object_get(d, "device"));
		const json_t *size = json_object_get(d, "size"), *ro = json_object_get(d, "readonly");
		const json_t *chunks = json_object_get(d, "chunks");
		if (!dev || strlen(dev) != 3 || strncmp(dev, "vd", 2) || dev[2] < 'a' || dev[2] > 'z' ||
		    (i && strcmp(dev, m->disks[i - 1].disk.device) <= 0) || !json_is_integer(size) ||
		    json_integer_value(size) < 0 || !json_is_boolean(ro) || !json_is_array(chunks))
			return err_fail(err, errlen, -EBADMSG,
				       "snapshot %s: disk entry %zu of its manifest is malformed", hex, i);
		if ((uint64_t)json_integer_value(size) > ST_MAX_DISK_SIZE)
			return err_fail(err, errlen, -EBADMSG,
				       "snapshot %s: disk %s of %lld bytes is over %llu GiB", hex, dev,
				       (long long)json_integer_value(size), ST_MAX_DISK_SIZE >> 30);
		struct st_disk *sd = &m->disks[m->nr_disks++];
		snprintf(sd->disk.device, sizeof(sd->disk.device), "%s", dev);
		sd->disk.size = (uint64_t)json_integer_value(size);
		sd->disk.readonly = json_is_true(ro);
		sd->c.size = sd->disk.size;
		sd->c.nr_chunks = (sd->c.size + m->chunk_size - 1) / m->chunk_size;
		snprintf(sd->c.of, sizeof(sd->c.of), " of disk %s", dev);
		int rc = parse_chunks(chunks, &sd->c);
		if (rc == -ENOMEM)
			return err_fail(err, errlen, rc, "out of memory");
		if (rc < 0)
			return err_fail(err, errlen, rc, "snapshot %s: disk %s: a chunk entry is malformed",
				       hex, dev);
	}
	return 0;
}

int st_manifest_read(struct store *st, const struct store_id *id, struct st_manifest *m, char *err,
		     size_t errlen)
{
	char *text, hex[33];
	size_t len;
	json_error_t je;
	int rc;

	memset(m, 0, sizeof(*m));
	store_id_hex(id, hex);
	rc = store_read_object(st, id, &text, &len, err, errlen);
	if (rc < 0) {
		char why[400];
		snprintf(why, sizeof(why), "%s", err && errlen ? err : "");
		return err_fail(err, errlen, rc, "snapshot %s: its manifest: %s", hex, why);
	}
	m->json = json_loadb(text, len, 0, &je);
	free(text);
	const json_t *j = m->json, *mem = json_object_get(j, "memory"),
		     *files = json_object_get(j, "files"), *chunks = json_object_get(mem, "chunks");
	const char *format = json_string_value(json_object_get(j, "format"));
	const char *loader = json_string_value(json_object_get(j, "loader"));
	const json_t *ver = json_object_get(j, "version"), *size = json_object_get(mem, "size"),
		     *cs = json_object_get(mem, "chunk_size"), *vcpus = json_object_get(j, "vcpus"),
		     *disks = json_object_get(j, "disks");
	/* A newer format first: say so rather than "malformed". */
	if (j && format && !strcmp(format, "forkvm-store-snapshot") && json_is_integer(ver) &&
	    json_integer_value(ver) > MANIFEST_VERSION) {
		long long v = (long long)json_integer_value(ver);
		st_manifest_free(m);
		return err_fail(err, errlen, -EPROTONOSUPPORT,
			       "snapshot %s: manifest version %lld is newer than this forkvm's %d "
			       "(written by a newer forkvm: use that one)",
			       hex, v, MANIFEST_VERSION);
	}
	/* Disks came with version 2: a version 1 manifest names none. */
	if (!j || !format || strcmp(format, "forkvm-store-snapshot") || !json_is_integer(ver) ||
	    json_integer_value(ver) < 1 || (json_integer_value(ver) == 1 && disks) || !loader ||
	    strlen(loader) >= sizeof(m->loader) || !json_is_integer(size) ||
	    json_integer_value(size) <= 0 || !json_is_integer(cs) || !json_is_integer(vcpus) ||
	    !json_is_array(chunks) || id_of(json_object_get(files, "config.json"), &m->config) < 0 ||
	    id_of(json_object_get(files, "state.json"), &m->state) < 0) {
		st_manifest_free(m);
		return err_fail(err, errlen, -EBADMSG, "snapshot %s: its manifest is malformed", hex);
	}
	m->version = (int)json_integer_value(ver);
	json_int_t c = json_integer_value(cs);
	if (c < (json_int_t)STORE_PAGE || c > (64 << 20) || (c & (c - 1))) {
		st_manifest_free(m);
		return err_fail(err, errlen, -EBADMSG, "snapshot %s: bad chunk size", hex);
	}
	json_int_t bytes = json_integer_value(size);
	if (bytes % STORE_PAGE) {
		st_manifest_free(m);
		return err_fail(err, errlen, -EBADMSG,
			       "snapshot %s: its memory size (%lld bytes) is not a multiple of the %u-byte page",
			       hex, (long long)bytes, (unsigned)STORE_PAGE);
	}
	if ((uint64_t)bytes > MANIFEST_MAX_MEMORY) {
		st_manifest_free(m);
		return err_fail(err, errlen, -EBADMSG, "snapshot %s: memory size %lld is over %llu GiB",
			       hex, (long long)bytes, MANIFEST_MAX_MEMORY >> 30);
	}
	if ((uint32_t)c != st->chunk_size) {
		st_manifest_free(m);
		return err_fail(err, errlen, -EBADMSG,
			       "snapshot %s: its chunk size (%lld bytes) is not this store's (%u bytes): the "
			       "manifest was edited or comes from another store",
			       hex, (long long)c, st->chunk_size);
	}
	strcpy(m->loader, loader);
	const char *platform = json_string_value(json_object_get(j, "platform"));
	if (platform && strcmp(platform, "kvm") && strcmp(platform, "process")) {
		st_manifest_free(m);
		return err_fail(err, errlen, -EBADMSG, "snapshot %s: unknown platform '%.32s'", hex,
			       platform);
	}
	snprintf(m->platform, sizeof(m->platform), "%s", platform ? platform : "kvm");
	m->memory_size = (uint64_t)bytes;
	m->chunk_size = (uint32_t)c;
	m->mem.size = m->memory_size;
	m->mem.nr_chunks = (m->memory_size + m->chunk_size - 1) / m->chunk_size;
	m->vcpus = (unsigned)json_integer_value(vcpus);
	const json_t *created = json_object_get(j, "created_realtime_ns");
	m->created_realtime_ns = json_is_integer(created) ? (uint64_t)json_integer_value(created) : 0;
	m->has_snapshot_json = id_of(json_object_get(files, "snapshot.json"), &m->snapshot_json) == 0;
	m->has_parent = id_of(json_object_get(j, "parent"), &m->parent) == 0;
	rc = parse_chunks(chunks, &m->mem);
	if (rc < 0) {
		st_manifest_free(m);
		return rc == -ENOMEM ? err_fail(err, errlen, rc, "out of memory") :
				       err_fail(err, errlen, rc, "snapshot %s: a chunk entry is malformed",
						hex);
	}
	if (disks && (rc = parse_disks(disks, m, hex, err, errlen)) < 0) {
		st_manifest_free(m);
		return rc;
	}
	return 0;
}

void st_manifest_free(struct st_manifest *m)
{
	json_decref(m->json);
	free(m->mem.index);
	free(m->mem.id);
	for (unsigned i = 0; i < m->nr_disks; i++) {
		free(m->disks[i].c.index);
		free(m->disks[i].c.id);
	}
	memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------ list, rm */

int store_list(struct store *st, int (*cb)(void *arg, const struct store_entry *e), void *arg,
	       char *err, size_t errlen)
{
	struct store_id *ids;
	size_t n;
	int rc = st_snapshots(st, &ids, &n);

	if (rc < 0)
		return err_fail(err, errlen, rc, "%s/snapshots: %s", st->root, strerror(-rc));
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct st_manifest m;
		char why[512];
		struct store_entry e = { .id = ids[i] };
		if (st_manifest_read(st, &ids[i], &m, why, sizeof(why)) == 0)
			e.manifest = m.json;
		else
			memset(&m, 0, sizeof(m));
		char **tags = st_tags_of(st, &ids[i]);
		e.tags = (const char *const *)tags;
		rc = cb(arg, &e);
		st_free_strv(tags);
		st_manifest_free(&m);
	}
	free(ids);
	return rc;
}

int store_rm(struct store *st, const struct store_id *id, char *err, size_t errlen)
{
	char rel[200], hex[33];
	char **tags;
	int rc = st_lock(st, false);

	if (rc < 0)
		return err_fail(err, errlen, rc, "store lock: %s", strerror(-rc));
	store_id_hex(id, hex);
	if (!st_snapshot_committed(st, id)) {
		st_unlock(st);
		return err_fail(err, errlen, -ENOENT, "no snapshot %s in the store", hex);
	}
	/* Tags first: a tag never names a removed snapshot. */
	tags = st_tags_of(st, id);
	for (size_t i = 0; tags && tags[i]; i++) {
		snprintf(rel, sizeof(rel), "tags/%s", tags[i]);
		unlinkat(st->root_fd, rel, 0);
	}
	st_free_strv(tags);
	snprintf(rel, sizeof(rel), "snapshots/%s", hex);
	if (unlinkat(st->root_fd, rel, 0) < 0)
		rc = err_fail(err, errlen, -errno, "%s/%s: %s", st->root, rel, strerror(errno));
	st_unlock(st);
	return rc;
}
