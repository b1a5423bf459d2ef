/* tests/unit/test_store.c - the content-addressed snapshot store
 * (store/store.h, docs/store-format.md) without KVM, through the library
 * and through build/bin/forkctl:
 *   - put -> export byte-identical (every file, the sparse memory file's
 *     extents), a snapshot taken "live" exports as a valid directory;
 *   - dedup: a second snapshot after a small divergence writes only the
 *     chunks holding changed pages (stats, object count, du);
 *   - zero chunks: never stored, holes in the materialized image;
 *   - store_load: the image equals the memory, is made once, read-only,
 *     share-locked while open; incremental puts from a copy-on-write
 *     mapping of that image (gmem_changed_pages) store only what changed;
 *   - corruption (flipped byte, truncation, extension, deletion of chunk,
 *     manifest, config and state objects; a damaged cached image): load
 *     refuses naming the object and the snapshot and leaves no image,
 *     store_verify counts every problem, forkctl store verify exits 1;
 *   - gc: keeps what committed snapshots reference (and they still load
 *     and export), removes the rest, tmp/ leftovers, dangling tags, images
 *     of removed snapshots, images beyond a budget but never an open one;
 *     it waits for a put in progress;
 *   - tags and references; store_open refusals and modes; default root;
 *   - crash safety: forkctl store put killed with SIGKILL part-way;
 *   - bad command lines: exit 2 for usage errors, 1 for failures, a
 *     message on stderr, nothing written.
 *   - disks (a Linux guest's disk-vda... files; manifest version 2): put
 *     and export byte for byte with holes, live puts through a read
 *     function, materialized images, dedup (one changed block: one new
 *     chunk), incremental disks read only where changed, gc keeping disk
 *     chunks until the last snapshot using them goes, image eviction,
 *     damaged disk chunks and images, malformed disk entries.
 * Everything lives in a fresh ut_tmpdir(); stores use 64 KiB chunks. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "common/util.h"
#include "store/internal.h"
#include "store/store.h"
#include "tests/lib/harness.h"
#include "tests/lib/unit.h"
#include "vmm/gmem.h"

#define P 4096ULL
#define CS (64 * KiB) /* the chunk size of the tests' stores */
#define T_MS 60000
#define OBJ_HDR 24 /* docs/store-format.md: the object header */

/* ------------------------------------------------------------ environment */

static struct {
	char *dir;        /* the test's temporary directory */
	char *root;       /* dir/store */
	struct store *st; /* opened on demand, closed in teardown */
} e;

static char *in_dir(const char *name)
{
	return h_fmt("%s/%s", e.dir, name);
}

static char *in_store(const char *rel)
{
	return h_fmt("%s/%s", e.root, rel);
}

static void setup(void)
{
	e.dir = ut_tmpdir();
	cr_assert_not_null(e.dir);
	e.root = in_dir("store");
	unsetenv("FORKVM_STORE");
}

static void teardown(void)
{
	store_close(e.st);
	if (e.dir)
		ut_rmtree(e.dir);
	free(e.dir);
	free(e.root);
	memset(&e, 0, sizeof(e));
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 120);

/* ------------------------------------------------------------ synthetic memory */

struct img {
	uint8_t *p;
	uint64_t size;
};

static struct img img_new(uint64_t size)
{
	struct img m = { mmap(NULL, size, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
			 size };
	cr_assert_neq(m.p, MAP_FAILED, "mmap %llu: %s", (unsigned long long)size, strerror(errno));
	return m;
}

static void img_free(struct img *m)
{
	if (m->p)
		munmap(m->p, m->size);
	m->p = NULL;
}

/* Incompressible bytes (zstd stores such a chunk as is); never a zero page. */
static void fill_random(uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(p + i, &x, 8);
	}
	for (size_t i = 0; i < len; i += P)
		p[i] |= 1;
}

/* Compressible text (zstd compresses such a chunk); never a zero page. */
static void fill_text(uint8_t *p, size_t len, unsigned seed)
{
	char line[64];
	size_t at = 0;
	for (unsigned n = 0; at < len; n++) {
		int l = snprintf(line, sizeof(line), "seed %u line %u of a compressible page\n",
				 seed, n);
		size_t k = MIN((size_t)l, len - at);
		memcpy(p + at, line, k);
		at += k;
	}
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static json_t *test_config(uint64_t size)
{
	json_t *j =
	    json_pack("{s:s,s:{s:I},s:{s:i},s:s}", "kernel", "/opt/forkvm/agent", "memory", "size",
		      (json_int_t)size, "cpus", "boot_vcpus", 1, "hostname", "storetest");
	cr_assert_not_null(j);
	return j;
}

static json_t *test_units(int gen)
{
	json_t *j = json_pack("[{s:s,s:i,s:{s:i,s:s}}]", "name", "test", "version", 1, "state",
			      "generation", gen, "note", "\xc3\xa9t\xc3\xa9");
	cr_assert_not_null(j);
	return j;
}

/* Writes a snapshot directory e.dir/name of memory m (state generation gen). */
static char *write_dir(const char *name, const struct img *m, int gen)
{
	char *dir = in_dir(name), err[512] = "";
	json_t *cfg = test_config(m->size), *units = test_units(gen);
	struct store_mem sm = { .base = m->p, .size = m->size };
	struct snap_meta meta = { .loader = "function-guest", .vcpus = 1, .memory_size = m->size };
	int rc = snapdir_write(dir, cfg, units, &sm, &meta, err, sizeof(err));
	cr_assert_eq(rc, 0, "snapdir_write(%s): %d %s", dir, rc, err);
	json_decref(cfg);
	json_decref(units);
	return dir;
}

/* ------------------------------------------------------------ the store */

static struct store *open_store(uint32_t chunk)
{
	char err[512] = "";
	if (!e.st) {
		int rc = store_open(e.root, true, chunk, &e.st, err, sizeof(err));
		cr_assert_eq(rc, 0, "store_open(%s): %d %s", e.root, rc, err);
	}
	return e.st;
}

struct hexs {
	char s[33];
};

static struct hexs H(const struct store_id *id)
{
	struct hexs h;
	store_id_hex(id, h.s);
	return h;
}

static struct store_id id_of_hex(const char *hex)
{
	struct store_id id;
	cr_assert_eq(store_id_parse(hex, &id), 0, "not an id: %s", hex);
	return id;
}

static struct store_id put(const char *dir, const char *tag, struct store_put_stats *stats)
{
	struct store_id id;
	struct store_put_stats local;
	char err[512] = "";
	int rc = store_put_dir(open_store(CS), dir, tag, &id, stats ? stats : &local, err,
			       sizeof(err));
	cr_assert_eq(rc, 0, "store_put_dir(%s): %d %s", dir, rc, err);
	return id;
}

static struct store_id resolve(const char *ref)
{
	struct store_id id;
	char err[512] = "";
	int rc = store_resolve(open_store(CS), ref, &id, err, sizeof(err));
	cr_assert_eq(rc, 0, "store_resolve(%s): %d %s", ref, rc, err);
	return id;
}

static void export_to(const struct store_id *id, const char *dir)
{
	char err[512] = "";
	int rc = store_export(open_store(CS), id, dir, err, sizeof(err));
	cr_assert_eq(rc, 0, "store_export(%s, %s): %d %s", H(id).s, dir, rc, err);
}

static void load(const struct store_id *id, struct store_snapshot *ss)
{
	char err[512] = "";
	int rc = store_load(open_store(CS), id, ss, err, sizeof(err));
	cr_assert_eq(rc, 0, "store_load(%s): %d %s", H(id).s, rc, err);
	cr_assert_geq(ss->mem_fd, 0);
}

/* Every problem store_verify reports, one per line. */
struct problems {
	char *text;
	int n;
};

static void collect(void *arg, const char *problem)
{
	struct problems *p = arg;
	char *t = h_fmt("%s%s\n", p->text ? p->text : "", problem);
	free(p->text);
	p->text = t;
	p->n++;
}

static int verify(const struct store_id *id, struct problems *p)
{
	char err[512] = "";
	memset(p, 0, sizeof(*p));
	int n = store_verify(open_store(CS), id, collect, p, err, sizeof(err));
	cr_assert_geq(n, 0, "store_verify: %d %s", n, err);
	cr_assert_eq(n, p->n, "store_verify returned %d but reported %d problems:\n%s", n, p->n,
		     p->text ? p->text : "");
	if (!p->text)
		p->text = strdup("");
	return n;
}

static void assert_verify_clean(void)
{
	struct problems p;
	int n = verify(NULL, &p);
	cr_assert_eq(n, 0, "store_verify found %d problems:\n%s", n, p.text);
	free(p.text);
}

/* ------------------------------------------------------------ forkctl */

/* build/bin/forkctl ARGS... (NULL-terminated); returns the exit status. */
static int run_argv(char **out, char **err, const char *const *args)
{
	const char *argv[40];
	char *bin = h_bin("forkctl");
	int n = 0;

	argv[n++] = bin;
	for (int i = 0; args[i] && n < 39; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	char *o = NULL, *er = NULL;
	int st = h_run(e.dir, argv, T_MS, &o, &er);
	cr_assert_neq(st, -1, "forkctl timed out");
	free(bin);
	if (out)
		*out = o;
	else
		free(o);
	if (err)
		*err = er;
	else
		free(er);
	return st;
}

/* forkctl --store ROOT store ARGS... */
static int ctl(char **out, char **err, ...)
{
	const char *args[36] = { "--store", e.root, "store" };
	int n = 3;
	va_list ap;
	va_start(ap, err);
	for (const char *a; (a = va_arg(ap, const char *)) && n < 35;)
		args[n++] = a;
	va_end(ap);
	args[n] = NULL;
	return run_argv(out, err, args);
}

/* ------------------------------------------------------------ files */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names in dir joined with '/', "" if empty, "(missing)" if absent. */
static char *names_of(const char *dir)
{
	DIR *d = opendir(dir);
	char *names[4096];
	int n = 0;
	struct dirent *de;

	if (!d)
		return strdup("(missing)");
	while ((de = readdir(d)) && n < 4096)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof(char *), cmp_str);
	size_t len = 1;
	for (int i = 0; i < n; i++)
		len += strlen(names[i]) + 1;
	char *s = calloc(1, len);
	for (int i = 0; i < n; i++) {
		strcat(s, names[i]);
		strcat(s, "/");
		free(names[i]);
	}
	return s;
}

static int count_in(const char *rel)
{
	char *dir = in_store(rel), *names = names_of(dir);
	int n = strcmp(names, "(missing)") ? h_count(names, "/") : 0;
	free(dir);
	free(names);
	return n;
}

static void assert_empty(const char *rel)
{
	char *dir = in_store(rel), *names = names_of(dir);
	cr_assert_str_eq(names, "", "%s holds: %s", dir, names);
	free(dir);
	free(names);
}

/* Every object file: calls fn with its path and name. */
static void each_object(void (*fn)(void *arg, const char *path, const char *name), void *arg)
{
	for (unsigned i = 0; i < 256; i++) {
		char *sub = h_fmt("%s/objects/%02x", e.root, i);
		DIR *d = opendir(sub);
		struct dirent *de;
		if (d) {
			while ((de = readdir(d))) {
				if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
					continue;
				char *p = h_fmt("%s/%s", sub, de->d_name);
				fn(arg, p, de->d_name);
				free(p);
			}
			closedir(d);
		}
		free(sub);
	}
}

static void count_one(void *arg, const char *path, const char *name)
{
	(void)path;
	(void)name;
	(*(int *)arg)++;
}

static int count_objects(void)
{
	int n = 0;
	each_object(count_one, &n);
	return n;
}

static char *obj_path(const char *hex)
{
	return h_fmt("%s/objects/%.2s/%s", e.root, hex, hex);
}

static bool exists(const char *path)
{
	struct stat s;
	return lstat(path, &s) == 0;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	uint8_t *b = ut_read_file(path, len);
	cr_assert_not_null(b, "cannot read %s: %s", path, strerror(errno));
	return b;
}

/* Data extents of a file (SEEK_DATA/SEEK_HOLE): "off+len " for each. */
static char *extents_of(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat s;
	char *out = strdup("");
	off_t pos = 0;

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(fstat(fd, &s), 0);
	while (pos < s.st_size) {
		off_t d = lseek(fd, pos, SEEK_DATA);
		if (d < 0)
			break;
		off_t h = lseek(fd, d, SEEK_HOLE);
		cr_assert_geq(h, d);
		char *t = h_fmt("%s%lld+%lld ", out, (long long)d, (long long)(h - d));
		free(out);
		out = t;
		pos = h;
	}
	close(fd);
	return out;
}

static uint64_t allocated(const char *path)
{
	struct stat s;
	cr_assert_eq(stat(path, &s), 0, "%s: %s", path, strerror(errno));
	return (uint64_t)s.st_blocks * 512;
}

/* Two files hold the same bytes with the same mode, their data at the
 * same places (holes kept). */
static void assert_same_file(const char *pa, const char *pb)
{
	size_t la, lb;
	uint8_t *ba = slurp(pa, &la), *bb = slurp(pb, &lb);
	struct stat sa, sb;
	cr_assert_eq(la, lb, "%s: %zu bytes, %s: %zu bytes", pa, la, pb, lb);
	for (size_t k = 0; k < la; k++)
		if (ba[k] != bb[k])
			cr_assert_fail("%s and %s differ at byte %zu (%02x != %02x)", pa, pb, k, ba[k],
				       bb[k]);
	cr_assert_eq(stat(pa, &sa), 0);
	cr_assert_eq(stat(pb, &sb), 0);
	cr_assert_eq(sa.st_mode & 0777, sb.st_mode & 0777, "%s mode %o, %s mode %o", pa,
		     sa.st_mode & 0777, pb, sb.st_mode & 0777);
	free(ba);
	free(bb);
}

static void assert_same_extents(const char *pa, const char *pb)
{
	char *ea = extents_of(pa), *eb = extents_of(pb);
	cr_assert_str_eq(eb, ea, "extents differ:\n%s: %s\n%s: %s", pa, ea, pb, eb);
	uint64_t aa = allocated(pa), ab = allocated(pb);
	cr_assert(ab <= aa + 64 * KiB && aa <= ab + 64 * KiB,
		  "allocation differs: %s %llu bytes, %s %llu bytes", pa, (unsigned long long)aa, pb,
		  (unsigned long long)ab);
	free(ea);
	free(eb);
}

/* Two snapshot directories hold the same files (the four, and the disk
 * files named in disks: "disk-vda/disk-vdb/", or NULL for none) with the
 * same bytes and modes, and memory-ranges and the disks have their data at
 * the same places. */
static void assert_same_dir_disks(const char *a, const char *b, const char *disks)
{
	char *na = names_of(a), *nb = names_of(b);
	char *want = h_fmt("config.json/%smemory-ranges/snapshot.json/state.json/", disks ? disks : "");
	cr_assert_str_eq(na, want, "%s: %s", a, na);
	cr_assert_str_eq(nb, na, "%s holds %s, %s holds %s", a, na, b, nb);
	free(want);
	char *save = NULL;
	for (char *f = strtok_r(na, "/", &save); f; f = strtok_r(NULL, "/", &save)) {
		char *pa = h_fmt("%s/%s", a, f), *pb = h_fmt("%s/%s", b, f);
		assert_same_file(pa, pb);
		if (!strcmp(f, "memory-ranges") || !strncmp(f, "disk-", 5))
			assert_same_extents(pa, pb);
		free(pa);
		free(pb);
	}
	free(na);
	free(nb);
}

static void assert_same_dir(const char *a, const char *b)
{
	assert_same_dir_disks(a, b, NULL);
}

/* A file's bytes equal memory m. */
static void assert_file_is(int fd, const struct img *m)
{
	struct stat s;
	cr_assert_eq(fstat(fd, &s), 0);
	cr_assert_eq((uint64_t)s.st_size, m->size, "image of %lld bytes, memory of %llu",
		     (long long)s.st_size, (unsigned long long)m->size);
	uint8_t *f = mmap(NULL, m->size, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert_neq(f, MAP_FAILED);
	for (uint64_t off = 0; off < m->size; off += P)
		if (memcmp(f + off, m->p + off, MIN(P, m->size - off)))
			cr_assert_fail("the image differs from the memory in page %llu",
				       (unsigned long long)(off / P));
	munmap(f, m->size);
}

/* The manifest object of snapshot id, parsed. */
static json_t *manifest_of(const struct store_id *id)
{
	char *text, err[512] = "";
	size_t len;
	int rc = store_read_object(open_store(CS), id, &text, &len, err, sizeof(err));
	cr_assert_eq(rc, 0, "manifest %s: %s", H(id).s, err);
	json_error_t je;
	json_t *j = json_loadb(text, len, 0, &je);
	cr_assert_not_null(j, "manifest %s: %s", H(id).s, je.text);
	free(text);
	return j;
}

/* The object id (hex, malloc'd) of chunk index c of snapshot id; NULL if
 * the chunk is not stored (zero). */
static char *chunk_hex(const struct store_id *id, uint64_t c)
{
	json_t *m = manifest_of(id),
	       *chunks = json_object_get(json_object_get(m, "memory"), "chunks");
	char *r = NULL;
	size_t i;
	json_t *v;
	cr_assert(json_is_array(chunks));
	json_array_foreach (chunks, i, v) {
		if ((uint64_t)json_integer_value(json_array_get(v, 0)) == c)
			r = strdup(json_string_value(json_array_get(v, 1)));
	}
	json_decref(m);
	return r;
}

static char *file_hex(const struct store_id *id, const char *name)
{
	json_t *m = manifest_of(id);
	const char *h = json_string_value(json_object_get(json_object_get(m, "files"), name));
	cr_assert_not_null(h, "manifest %s has no files.%s", H(id).s, name);
	char *r = strdup(h);
	json_decref(m);
	return r;
}

/* Object header fields (docs/store-format.md), read independently. */
struct ohdr {
	uint32_t magic;
	uint8_t version, codec;
	uint64_t raw, payload;
	uint64_t file_size;
};

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static struct ohdr read_hdr(const char *path)
{
	size_t len;
	uint8_t *b = slurp(path, &len);
	struct ohdr h = { 0 };
	cr_assert_geq(len, OBJ_HDR, "%s: %zu bytes", path, len);
	h.magic = (uint32_t)le(b, 4);
	h.version = b[4];
	h.codec = b[5];
	h.raw = le(b + 8, 8);
	h.payload = le(b + 16, 8);
	h.file_size = len;
	free(b);
	return h;
}

/* The raw content of an object, decoded independently (zstd or stored). */
static uint8_t *decode_obj(const char *path, size_t *raw_len)
{
	size_t len;
	uint8_t *b = slurp(path, &len);
	struct ohdr h = read_hdr(path);
	cr_assert_eq(h.magic, 0x4a424f46u, "%s: magic %08x", path, h.magic);
	cr_assert_eq(h.version, 1);
	cr_assert_eq(h.payload, len - OBJ_HDR);
	uint8_t *raw = malloc(h.raw + 1);
	cr_assert_not_null(raw);
	if (h.codec == 0) {
		cr_assert_eq(h.raw, h.payload);
		memcpy(raw, b + OBJ_HDR, h.raw);
	} else {
		cr_assert_eq(h.codec, 1, "%s: codec %u", path, h.codec);
		size_t n = ZSTD_decompress(raw, h.raw, b + OBJ_HDR, h.payload);
		cr_assert(!ZSTD_isError(n) && n == h.raw, "%s: zstd", path);
	}
	free(b);
	*raw_len = h.raw;
	return raw;
}

/* Writes a valid object of raw bytes into the store by hand (an
 * unreferenced object for gc); returns its hex name. */
static struct hexs plant_object(const void *raw, size_t len)
{
	XXH128_canonical_t c;
	struct store_id id;
	XXH128_canonicalFromHash(&c, XXH3_128bits(raw, len));
	memcpy(id.b, c.digest, 16);
	struct hexs h = H(&id);
	uint8_t hdr[OBJ_HDR] = { 'F', 'O', 'B', 'J', 1, 0, 0, 0 };
	for (int i = 0; i < 8; i++) {
		hdr[8 + i] = (uint8_t)((uint64_t)len >> (8 * i));
		hdr[16 + i] = (uint8_t)((uint64_t)len >> (8 * i));
	}
	char *p = obj_path(h.s);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
	cr_assert_geq(fd, 0, "%s: %s", p, strerror(errno));
	cr_assert_eq(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	cr_assert_eq(write(fd, raw, len), (ssize_t)len);
	close(fd);
	free(p);
	return h;
}

/* Damage to a file (objects and images are read-only: made writable first). */
static void flip_byte(const char *path, off_t off)
{
	uint8_t b;
	cr_assert_eq(chmod(path, 0600), 0, "%s: %s", path, strerror(errno));
	int fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(pread(fd, &b, 1, off), 1, "%s has no byte %lld", path, (long long)off);
	b ^= 0x5a;
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static void truncate_to(const char *path, off_t len)
{
	cr_assert_eq(chmod(path, 0600), 0);
	cr_assert_eq(truncate(path, len), 0, "%s: %s", path, strerror(errno));
}

static void append_bytes(const char *path, const char *bytes)
{
	cr_assert_eq(chmod(path, 0600), 0);
	int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
	close(fd);
}

static int count_lines_with(const char *text, const char *a, const char *b)
{
	int n = 0;
	char *copy = strdup(text), *save = NULL;
	for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		if (strstr(l, a) && (!b || strstr(l, b)))
			n++;
	free(copy);
	return n;
}

/* ============================================================ round trips */

/* 16 MiB + 3 pages (the last chunk is partial): random and text chunks, a
 * run across chunk boundaries, isolated bytes, the very last page. */
static struct img varied_memory(void)
{
	struct img m = img_new(16 * MiB + 3 * P);
	fill_random(m.p, CS, 1);                      /* chunk 0 */
	fill_text(m.p + 2 * CS, CS, 2);               /* chunk 2 */
	fill_random(m.p + 5 * CS + 60 * KiB, 72 * KiB, 3); /* chunks 5..7, pages across */
	m.p[20 * CS + CS - 1] = 0x80;                 /* the last byte of chunk 20 */
	m.p[40 * CS] = 0x01;                          /* the first byte of chunk 40 */
	fill_text(m.p + 100 * CS + 3 * P, 2 * P, 4);  /* two pages inside chunk 100 */
	fill_random(m.p + 150 * CS, 4 * CS, 5);       /* chunks 150..153 */
	fill_random(m.p + m.size - P, P, 6);          /* the last page (partial chunk 256) */
	return m;
}

Test(store, put_then_export_is_byte_identical)
{
	struct img m = varied_memory();
	char *src = write_dir("src", &m, 1), *dst = in_dir("exported");
	struct store_put_stats s;
	struct store_id id = put(src, "t1", &s);

	cr_assert_eq(s.logical_bytes, m.size);
	/* chunks 0, 2, 5..7, 20, 40, 100, 150..153, 256 */
	cr_assert_eq(s.data_chunks, 13, "data chunks %llu", (unsigned long long)s.data_chunks);
	cr_assert_eq(s.new_chunks, 13);
	cr_assert_eq(s.reused_chunks, 0);
	export_to(&id, dst);
	assert_same_dir(src, dst);

	/* The exported directory is a valid snapshot directory, as snapdir_open
	 * sees it (every checksum). */
	struct snapdir sd;
	char err[512] = "";
	cr_assert_eq(snapdir_open(dst, &sd, err, sizeof(err)), 0, "%s", err);
	cr_assert_not(sd.config_edited);
	cr_assert_eq(sd.memory_size, m.size);
	snapdir_close(&sd);

	/* forkctl: by tag and by an id prefix. */
	char *d2 = in_dir("by-tag"), *d3 = in_dir("by-prefix"), *u2 = h_fmt("file://%s", d2),
	     *u3 = h_fmt("file://%s/", d3), *prefix = h_fmt("%.8s", H(&id).s), *out, *er;
	cr_assert_eq(ctl(&out, &er, "export", "t1", u2, NULL), 0, "%s", er);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "export", prefix, u3, NULL), 0, "%s", er);
	free(out);
	free(er);
	assert_same_dir(src, d2);
	assert_same_dir(src, d3);
	/* Nothing else appeared next to them (no temporary sibling). */
	char *names = names_of(e.dir);
	cr_assert_eq(h_count(names, ".tmp"), 0, "%s", names);
	free(names);
	/* The same directory put again: the same id, nothing new. */
	struct store_id again = put(src, NULL, &s);
	cr_assert(store_id_equal(&id, &again), "%s != %s", H(&id).s, H(&again).s);
	cr_assert_eq(s.new_chunks, 0);
	cr_assert_eq(s.reused_chunks, 13);
	free(prefix);
	free(u2);
	free(u3);
	free(d2);
	free(d3);
	free(src);
	free(dst);
	img_free(&m);
}

Test(store, forkctl_put_prints_the_id_and_exports_identical)
{
	struct img m = varied_memory();
	char *src = write_dir("src", &m, 1), *url = h_fmt("file://%s", src), *out, *er;

	cr_assert_eq(ctl(NULL, &er, "init", "--chunk-size", "64K", NULL), 0, "%s", er);
	free(er);
	cr_assert_eq(ctl(&out, &er, "put", url, "--tag", "first", NULL), 0, "%s", er);
	cr_assert_eq(strlen(out), 33, "stdout is the id and a newline: '%s'", out);
	cr_assert_eq(out[32], '\n');
	out[32] = '\0';
	struct store_id id = id_of_hex(out);
	cr_assert_not_null(strstr(er, "13 data chunks, 13 new"), "%s", er);
	free(out);
	free(er);
	struct store_id t = resolve("first");
	cr_assert(store_id_equal(&id, &t));
	cr_assert_eq(store_chunk_size(open_store(0)), CS);

	char *dst = in_dir("out"), *durl = h_fmt("file://%s", dst);
	cr_assert_eq(ctl(&out, &er, "export", "first", durl, NULL), 0, "%s", er);
	cr_assert_str_eq(out, "");
	free(out);
	free(er);
	assert_same_dir(src, dst);
	free(dst);
	free(durl);
	free(url);
	free(src);
	img_free(&m);
}

/* A snapshot put straight from memory (as a VM's store:// snapshot is):
 * export writes the snapshot.json its files call for. */
Test(store, live_snapshot_exports_a_valid_directory)
{
	struct img m = varied_memory();
	json_t *cfg = test_config(m.size), *units = test_units(7);
	struct store_mem sm = { .base = m.p, .size = m.size };
	struct snap_meta meta = { .loader = "function-guest", .vcpus = 1, .memory_size = m.size,
				  .created_realtime_ns = 1234567890123456789ULL };
	struct store_snapshot_in in = { .config = cfg, .units = units, .meta = &meta, .mem = &sm };
	struct store_id id;
	struct store_put_stats s;
	char err[512] = "";

	int rc = store_put_snapshot(open_store(CS), &in, "live", &id, &s, err, sizeof(err));
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(s.data_chunks, 13);
	json_t *man = manifest_of(&id);
	cr_assert(json_is_null(json_object_get(man, "parent")));
	cr_assert_null(json_object_get(json_object_get(man, "files"), "snapshot.json"));
	cr_assert_eq(
	    json_integer_value(json_object_get(json_object_get(man, "memory"), "chunk_size")),
	    (json_int_t)CS);
	json_decref(man);

	char *d1 = in_dir("x1"), *d2 = in_dir("x2");
	export_to(&id, d1);
	export_to(&id, d2);
	assert_same_dir(d1, d2); /* deterministic */
	struct snapdir sd;
	cr_assert_eq(snapdir_open(d1, &sd, err, sizeof(err)), 0, "%s", err);
	cr_assert(json_equal(sd.units, units));
	cr_assert_eq(sd.memory_size, m.size);
	cr_assert_str_eq(sd.loader, "function-guest");
	json_t *c = json_loadb(sd.config, sd.config_len, 0, NULL);
	cr_assert(json_equal(c, cfg), "config.json: %.*s", (int)sd.config_len, sd.config);
	json_decref(c);
	cr_assert_eq(json_integer_value(json_object_get(sd.manifest, "created_realtime_ns")),
		     (json_int_t)1234567890123456789ULL);
	assert_file_is(sd.mem_fd, &m);
	snapdir_close(&sd);
	/* ... and importing that directory gives the same memory chunks. */
	struct store_id again = put(d1, NULL, &s);
	cr_assert_not(store_id_equal(&again, &id), "an imported directory keeps its snapshot.json");
	cr_assert_eq(s.new_chunks, 0);
	cr_assert_eq(s.reused_chunks, 13);
	free(d1);
	free(d2);
	json_decref(cfg);
	json_decref(units);
	img_free(&m);
}

/* ============================================================ dedup */

Test(store, dedup_second_snapshot_writes_only_changed_chunks)
{
	struct img m = img_new(16 * MiB);
	fill_random(m.p, 8 * MiB, 11); /* chunks 0..127 */
	char *a = write_dir("a", &m, 1);
	struct store_put_stats s;
	struct store_id ia = put(a, "a", &s);

	cr_assert_eq(s.data_chunks, 128);
	cr_assert_eq(s.new_chunks, 128);
	cr_assert_eq(s.new_raw_bytes, 128 * CS);
	int objs_a = count_objects();
	/* 128 chunks, config, state, snapshot.json, manifest */
	cr_assert_eq(objs_a, 128 + 4, "%d objects", objs_a);

	/* The divergence: one page of chunk 3, two pages of chunk 50, a page
	 * of chunk 200 (zero before), chunk 100 zeroed. */
	fill_random(m.p + 3 * CS + 5 * P, P, 101);
	fill_random(m.p + 50 * CS, P, 102);
	fill_random(m.p + 50 * CS + 15 * P, P, 103);
	fill_text(m.p + 200 * CS + 7 * P, P, 104);
	memset(m.p + 100 * CS, 0, CS);
	char *b = write_dir("b", &m, 1);
	struct store_id ib = put(b, "b", &s);

	cr_assert_eq(s.data_chunks, 128, "data chunks %llu", (unsigned long long)s.data_chunks);
	cr_assert_eq(s.new_chunks, 3, "new chunks %llu", (unsigned long long)s.new_chunks);
	cr_assert_eq(s.reused_chunks, 125);
	cr_assert_eq(s.new_raw_bytes, 3 * CS);
	/* + the three chunks, b's snapshot.json and manifest (same config and state) */
	int objs_b = count_objects();
	cr_assert_eq(objs_b, objs_a + 5, "%d objects after, %d before", objs_b, objs_a);

	/* The unchanged chunks are literally a's objects. */
	for (uint64_t c = 0; c < 128; c++) {
		char *ha = chunk_hex(&ia, c), *hb = chunk_hex(&ib, c);
		if (c == 3 || c == 50 || c == 100)
			cr_assert(!hb || strcmp(ha, hb), "chunk %llu", (unsigned long long)c);
		else
			cr_assert_str_eq(ha, hb, "chunk %llu", (unsigned long long)c);
		free(ha);
		free(hb);
	}

	/* du: exact counts; the bytes shared between the two snapshots are
	 * the referenced bytes counted twice. */
	struct store_du du;
	char err[512] = "";
	cr_assert_eq(store_du(open_store(CS), &du, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(du.snapshots, 2);
	cr_assert_eq(du.logical_bytes, 2 * m.size);
	cr_assert_eq(du.objects, (uint64_t)objs_b);
	size_t clen, slen;
	char *cp = h_fmt("%s/config.json", a), *sp = h_fmt("%s/state.json", a);
	free(slurp(cp, &clen));
	free(slurp(sp, &slen));
	cr_assert_eq(du.referenced_bytes - du.unique_bytes, 125 * CS + clen + slen,
		     "referenced %llu unique %llu", (unsigned long long)du.referenced_bytes,
		     (unsigned long long)du.unique_bytes);
	cr_assert_eq(du.images, 0);
	/* forkctl store du prints the same. */
	char *out, *er;
	cr_assert_eq(ctl(&out, &er, "du", NULL), 0, "%s", er);
	cr_assert_not_null(strstr(out, "snapshots          2\n"), "%s", out);
	char *line = h_fmt("in %d objects", objs_b);
	cr_assert_not_null(strstr(out, line), "%s", out);
	free(line);
	free(out);
	free(er);
	free(cp);
	free(sp);
	free(a);
	free(b);
	img_free(&m);
}

/* ============================================================ zero chunks */

static void check_no_zero_object(void *arg, const char *path, const char *name)
{
	size_t len;
	uint8_t *raw = decode_obj(path, &len);
	struct store_id id;
	XXH128_canonical_t c;
	(void)arg;
	XXH128_canonicalFromHash(&c, XXH3_128bits(raw, len));
	memcpy(id.b, c.digest, 16);
	cr_assert_str_eq(H(&id).s, name, "object %s holds content hashing to %s", name, H(&id).s);
	cr_assert_not(all_zero(raw, len), "object %s holds %zu zero bytes", name, len);
	free(raw);
}

Test(store, zero_chunks_take_no_space)
{
	struct img m = img_new(32 * MiB); /* 512 chunks */
	fill_random(m.p, P, 21);                  /* chunk 0: one page */
	m.p[5 * CS + CS - 1] = 0x7f;              /* chunk 5: its last byte */
	m.p[100 * CS] = 0x01;                     /* chunk 100: its first byte */
	fill_text(m.p + 200 * CS, CS, 22);        /* chunk 200: written ... */
	memset(m.p + 200 * CS, 0, CS);            /* ... and zeroed again */
	fill_random(m.p + 511 * CS, CS, 23);      /* chunk 511: all of it */
	char *src = write_dir("src", &m, 1);
	struct store_put_stats s;
	struct store_id id = put(src, NULL, &s);

	cr_assert_eq(s.data_chunks, 4, "data chunks %llu", (unsigned long long)s.data_chunks);
	cr_assert_eq(s.new_chunks, 4);
	cr_assert_eq(s.new_raw_bytes, 4 * CS);
	cr_assert_eq(count_objects(), 4 + 4); /* + config, state, snapshot.json, manifest */
	each_object(check_no_zero_object, NULL);
	json_t *man = manifest_of(&id);
	cr_assert_eq(json_array_size(json_object_get(json_object_get(man, "memory"), "chunks")), 4);
	json_decref(man);

	/* Put live with no hint of where the data is (every chunk is read, as
	 * a VM's memfd that once held data in chunk 200): the same 4 chunks. */
	json_t *cfg = test_config(m.size), *units = test_units(1);
	struct store_mem sm = { .base = m.p, .size = m.size };
	struct snap_meta meta = { .loader = "function-guest", .vcpus = 1, .memory_size = m.size };
	struct store_snapshot_in in = { .config = cfg, .units = units, .meta = &meta, .mem = &sm };
	struct store_id live;
	char err[512] = "";
	cr_assert_eq(store_put_snapshot(open_store(CS), &in, NULL, &live, &s, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(s.data_chunks, 4, "data chunks %llu", (unsigned long long)s.data_chunks);
	cr_assert_eq(s.new_chunks, 0);
	cr_assert_eq(count_objects(), 8 + 1, "only the new manifest: %d objects", count_objects());
	each_object(check_no_zero_object, NULL);
	json_decref(cfg);
	json_decref(units);

	/* The materialized image: exactly the non-zero pages are data. */
	struct store_snapshot ss;
	load(&id, &ss);
	char *img = h_fmt("%s/images/%s.img", e.root, H(&id).s), *ext = extents_of(img);
	char *want = h_fmt("0+4096 %llu+4096 %llu+4096 %llu+65536 ",
			 (unsigned long long)(5 * CS + CS - P), (unsigned long long)(100 * CS),
			 (unsigned long long)(511 * CS));
	cr_assert_str_eq(ext, want, "image extents");
	uint64_t bytes = allocated(img);
	cr_assert(bytes >= 76 * KiB && bytes <= 76 * KiB + 16 * KiB, "image allocates %llu bytes",
		  (unsigned long long)bytes);
	assert_file_is(ss.mem_fd, &m);
	for (uint64_t c = 0; c < ss.nr_chunks; c++)
		cr_assert_eq(ss.chunk_nonzero[c], c == 0 || c == 5 || c == 100 || c == 511,
			     "chunk %llu", (unsigned long long)c);
	store_snapshot_free(&ss);
	free(ext);
	free(want);
	free(img);
	free(src);
	img_free(&m);
}

Test(store, all_zero_memory_stores_no_chunk)
{
	struct img m = img_new(16 * MiB);
	char *src = write_dir("src", &m, 1), *dst = in_dir("dst");
	struct store_put_stats s;
	struct store_id id = put(src, NULL, &s);

	cr_assert_eq(s.data_chunks, 0);
	cr_assert_eq(s.new_chunks, 0);
	cr_assert_eq(count_objects(), 4);
	struct store_snapshot ss;
	load(&id, &ss);
	cr_assert_eq(lseek(ss.mem_fd, 0, SEEK_DATA), -1, "the image has data");
	cr_assert_eq(errno, ENXIO);
	struct stat st;
	cr_assert_eq(fstat(ss.mem_fd, &st), 0);
	cr_assert_eq((uint64_t)st.st_size, m.size);
	cr_assert_lt((uint64_t)st.st_blocks * 512, 16 * KiB);
	store_snapshot_free(&ss);
	export_to(&id, dst);
	assert_same_dir(src, dst);
	free(src);
	free(dst);
	img_free(&m);
}

/* ============================================================ store_load */

Test(store, load_materializes_once_read_only_and_share_locked)
{
	struct img m = varied_memory();
	char *src = write_dir("src", &m, 3);
	struct store_id id = put(src, "t", NULL);
	struct store_snapshot a, b;
	char *img = h_fmt("%s/images/%s.img", e.root, H(&id).s);

	cr_assert_not(exists(img), "no image before the first load");
	load(&id, &a);
	cr_assert(exists(img));
	assert_file_is(a.mem_fd, &m);
	cr_assert(store_id_equal(&a.id, &id));
	cr_assert_eq(a.memory_size, m.size);
	cr_assert_eq(a.vcpus, 1);
	cr_assert_str_eq(a.loader, "function-guest");
	cr_assert_eq(a.chunk_size, CS);
	cr_assert_eq(a.nr_chunks, 257);
	json_t *units = test_units(3);
	cr_assert(json_equal(a.units, units));
	json_decref(units);
	size_t clen;
	char *cpath = h_fmt("%s/config.json", src);
	uint8_t *config = slurp(cpath, &clen);
	cr_assert_eq(a.config_len, clen);
	cr_assert_eq(memcmp(a.config, config, clen), 0, "config.json text");
	free(config);
	free(cpath);
	/* read-only: the fd, the file's mode */
	cr_assert_eq(fcntl(a.mem_fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	cr_assert_eq(write(a.mem_fd, "x", 1), -1);
	cr_assert_eq(errno, EBADF);
	struct stat sa, sb;
	cr_assert_eq(fstat(a.mem_fd, &sa), 0);
	cr_assert_eq(sa.st_mode & 0777, 0400, "image mode %o", sa.st_mode & 0777);

	/* A second load maps the same file: same inode, not rewritten. */
	h_sleep_ms(20);
	load(&id, &b);
	cr_assert_eq(fstat(b.mem_fd, &sb), 0);
	cr_assert_eq(sa.st_ino, sb.st_ino);
	cr_assert_eq(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
	cr_assert_eq(sa.st_mtim.tv_nsec, sb.st_mtim.tv_nsec, "the image was rewritten");
	assert_file_is(b.mem_fd, &m);
	assert_empty("tmp");

	/* Shared lock while open: nobody gets it exclusively. */
	int fd = open(img, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), -1, "an open image is not share-locked");
	cr_assert_eq(errno, EWOULDBLOCK);
	store_snapshot_free(&a);
	cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), -1, "the second load's lock is gone");
	store_snapshot_free(&b);
	cr_assert_eq(b.mem_fd, -1);
	cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0, "still locked after both were freed");
	close(fd);
	free(img);
	free(src);
	img_free(&m);
}

/* ============================================================ incremental */

struct changed_arg {
	const uint64_t *pages;
	uint64_t nr_pages;
};

/* As the VMM decides (vmm/vm.c): a chunk changed if any of its pages did. */
static bool chunk_changed(void *arg, uint64_t chunk, uint32_t chunk_size)
{
	const struct changed_arg *a = arg;
	uint64_t per = chunk_size / P, first = chunk * per;
	for (uint64_t p = first; p < first + per && p < a->nr_pages; p++)
		if (a->pages[p / 64] & (1ULL << (p % 64)))
			return true;
	return false;
}

static int gmem_populated(void *arg, int (*cb)(void *cbarg, uint64_t off, uint64_t len),
			  void *cbarg)
{
	return gmem_for_each_populated(arg, cb, cbarg);
}

/* A restored VM's memory (copy-on-write over the store's image) changes a
 * little and is snapshotted with its parent: only the changed chunks are
 * hashed and stored, the rest are the parent's; the result loads as the
 * changed memory. */
Test(store, incremental_snapshot_of_a_cow_mapping)
{
	struct img m = img_new(16 * MiB);
	fill_random(m.p, 4 * MiB, 31); /* chunks 0..63 */
	fill_text(m.p + 10 * MiB, CS, 32); /* chunk 160 */
	char *src = write_dir("src", &m, 1);
	struct store_id parent = put(src, "p", NULL);
	struct store_snapshot ss;
	struct gmem g;

	load(&parent, &ss);
	int fd = dup(ss.mem_fd);
	cr_assert_geq(fd, 0);
	cr_assert_eq(gmem_init_file(&g, fd, ss.memory_size), 0);
	/* writes in chunks 2 (two pages) and 70 (was zero), a page of chunk
	 * 160 discarded (now zero) */
	fill_random(g.host + 2 * CS, P, 33);
	fill_random(g.host + 2 * CS + 9 * P, P, 34);
	fill_text(g.host + 70 * CS + P, P, 35);
	cr_assert_eq(gmem_discard(&g, 160 * CS + 2 * P, P), 0);
	/* the expected memory */
	memcpy(m.p + 2 * CS, g.host + 2 * CS, CS);
	memcpy(m.p + 70 * CS, g.host + 70 * CS, CS);
	memset(m.p + 160 * CS + 2 * P, 0, P);

	uint64_t *bits = NULL;
	cr_assert_eq(gmem_changed_pages(&g, &bits), 0);
	struct changed_arg ca = { bits, g.size / P };
	json_t *cfg = test_config(m.size), *units = test_units(2);
	struct store_mem sm = { .base = g.host, .size = g.size, .populated = gmem_populated,
				.arg = &g };
	struct snap_meta meta = { .loader = "function-guest", .vcpus = 1, .memory_size = g.size };
	struct store_snapshot_in in = { .config = cfg, .units = units, .meta = &meta, .mem = &sm,
					.parent = &parent, .changed = chunk_changed,
					.changed_arg = &ca };
	struct store_id child;
	struct store_put_stats s;
	char err[512] = "";
	int before = count_objects();
	int rc = store_put_snapshot(open_store(CS), &in, "child", &child, &s, err, sizeof(err));
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(s.data_chunks, 66, "data chunks %llu", (unsigned long long)s.data_chunks);
	cr_assert_eq(s.new_chunks, 3, "new chunks %llu", (unsigned long long)s.new_chunks);
	cr_assert_eq(s.reused_chunks, 63);
	/* + 3 chunks, state, manifest (the config text is the parent's: the
	 * directory writer and the store generate it alike) */
	cr_assert_eq(count_objects(), before + 5, "%d objects, %d before", count_objects(), before);
	json_t *man = manifest_of(&child);
	cr_assert_str_eq(json_string_value(json_object_get(man, "parent")), H(&parent).s);
	json_decref(man);
	for (uint64_t c = 0; c < 64; c++) {
		if (c == 2)
			continue;
		char *hp = chunk_hex(&parent, c), *hc = chunk_hex(&child, c);
		cr_assert_str_eq(hp, hc, "chunk %llu", (unsigned long long)c);
		free(hp);
		free(hc);
	}
	store_snapshot_free(&ss);
	struct store_snapshot cs;
	load(&child, &cs);
	assert_file_is(cs.mem_fd, &m);
	store_snapshot_free(&cs);

	/* A parent that is not in the store: a full snapshot, no parent. */
	struct store_id ghost = id_of_hex("0123456789abcdef0123456789abcdef");
	in.parent = &ghost;
	struct store_id full;
	rc = store_put_snapshot(open_store(CS), &in, NULL, &full, &s, err, sizeof(err));
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(s.data_chunks, 66);
	cr_assert_eq(s.new_chunks, 0, "every chunk is in the store already");
	man = manifest_of(&full);
	cr_assert(json_is_null(json_object_get(man, "parent")));
	json_decref(man);
	load(&full, &cs);
	assert_file_is(cs.mem_fd, &m);
	store_snapshot_free(&cs);
	assert_verify_clean();

	free(bits);
	gmem_fini(&g);
	json_decref(cfg);
	json_decref(units);
	free(src);
	img_free(&m);
}

/* ============================================================ corruption */

/* A snapshot "c" of 4 MiB: chunk 1 random (stored as is), chunk 2 text
 * (zstd), chunk 3 random, chunk 10 text. */
static struct store_id corruptible(struct img *m, char **src)
{
	*m = img_new(4 * MiB);
	fill_random(m->p + 1 * CS, CS, 41);
	fill_text(m->p + 2 * CS, CS, 42);
	fill_random(m->p + 3 * CS, CS, 43);
	fill_text(m->p + 10 * CS, CS, 44);
	*src = write_dir("src", m, 1);
	struct store_id id = put(*src, "c", NULL);
	char *h1 = chunk_hex(&id, 1), *h2 = chunk_hex(&id, 2);
	char *p1 = obj_path(h1), *p2 = obj_path(h2);
	cr_assert_eq(read_hdr(p1).codec, 0, "a random chunk is stored as is");
	cr_assert_eq(read_hdr(p2).codec, 1, "a text chunk is compressed");
	free(h1);
	free(h2);
	free(p1);
	free(p2);
	return id;
}

/* Restoring id fails with rc, naming the object and the snapshot; nothing
 * is left in images/ or tmp/; verify (library and forkctl) reports the
 * object once; export fails and leaves no directory. */
static void expect_broken(const struct store_id *id, const char *obj, int want_rc)
{
	struct store_snapshot ss;
	char err[512] = "";
	struct hexs snap = H(id);

	int rc = store_load(open_store(CS), id, &ss, err, sizeof(err));
	cr_assert_eq(rc, want_rc, "store_load: %d (%s), expected %d", rc, err, want_rc);
	cr_assert_not_null(strstr(err, obj), "the error does not name the object %s: %s", obj, err);
	cr_assert_not_null(strstr(err, snap.s), "the error does not name the snapshot %s: %s",
			   snap.s, err);
	cr_assert_eq(ss.mem_fd, -1);
	assert_empty("images");
	assert_empty("tmp");

	struct problems p;
	int n = verify(id, &p);
	cr_assert_eq(n, 1, "verify: %d problems:\n%s", n, p.text);
	cr_assert_eq(count_lines_with(p.text, obj, snap.s), 1, "verify: %s", p.text);
	free(p.text);
	n = verify(NULL, &p);
	cr_assert_eq(n, 1, "verify all: %d problems:\n%s", n, p.text);
	free(p.text);

	char *out, *er;
	cr_assert_eq(ctl(&out, &er, "verify", NULL), 1, "forkctl store verify: %s%s", out, er);
	cr_assert_eq(count_lines_with(out, "CORRUPT: ", obj), 1, "stdout: %s", out);
	cr_assert_not_null(strstr(er, "1 problem"), "stderr: %s", er);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "verify", "c", NULL), 1, "forkctl store verify c: %s%s", out,
		     er);
	cr_assert_eq(count_lines_with(out, "CORRUPT: ", obj), 1, "stdout: %s", out);
	free(out);
	free(er);

	char *dst = in_dir("export"), *url = h_fmt("file://%s", dst);
	cr_assert_eq(ctl(&out, &er, "export", "c", url, NULL), 1, "export of a broken snapshot");
	cr_assert_not_null(strstr(er, obj), "export: %s", er);
	cr_assert_not(exists(dst));
	char *names = names_of(e.dir);
	cr_assert_eq(h_count(names, ".tmp"), 0, "%s", names);
	free(names);
	free(out);
	free(er);
	free(dst);
	free(url);
}

Test(store, corrupt_flipped_byte_in_a_stored_chunk)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *h = chunk_hex(&id, 3), *p = obj_path(h);
	flip_byte(p, OBJ_HDR + 1000);
	expect_broken(&id, h, -EBADMSG);
	free(h);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_flipped_byte_in_a_compressed_chunk)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *h = chunk_hex(&id, 2), *p = obj_path(h);
	struct ohdr hd = read_hdr(p);
	flip_byte(p, (off_t)(OBJ_HDR + hd.payload / 2));
	expect_broken(&id, h, -EBADMSG);
	free(h);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_truncated_chunk)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *h = chunk_hex(&id, 1), *p = obj_path(h);
	truncate_to(p, (off_t)read_hdr(p).file_size - 1);
	expect_broken(&id, h, -EBADMSG);
	free(h);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_chunk_truncated_inside_its_header)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *h = chunk_hex(&id, 10), *p = obj_path(h);
	truncate_to(p, 10);
	expect_broken(&id, h, -EBADMSG);
	truncate_to(p, 0);
	expect_broken(&id, h, -EBADMSG);
	free(h);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_chunk_with_bytes_appended)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *h = chunk_hex(&id, 2), *p = obj_path(h);
	append_bytes(p, "trailing garbage");
	expect_broken(&id, h, -EBADMSG);
	free(h);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_deleted_chunk)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *h = chunk_hex(&id, 3), *p = obj_path(h);
	cr_assert_eq(unlink(p), 0);
	expect_broken(&id, h, -ENOENT);
	free(h);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_manifest)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	struct hexs h = H(&id);
	char *p = obj_path(h.s);
	flip_byte(p, (off_t)read_hdr(p).file_size - 3);
	expect_broken(&id, h.s, -EBADMSG);
	/* ls shows it as damaged; show says so too */
	char *out, *er;
	cr_assert_eq(ctl(&out, &er, "ls", NULL), 0, "%s", er);
	cr_assert_not_null(strstr(out, "(damaged)"), "%s", out);
	free(out);
	free(er);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_deleted_manifest)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	struct hexs h = H(&id);
	char *p = obj_path(h.s);
	cr_assert_eq(unlink(p), 0);
	expect_broken(&id, h.s, -ENOENT);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_config_object)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *h = file_hex(&id, "config.json"), *p = obj_path(h);
	flip_byte(p, OBJ_HDR + 5);
	expect_broken(&id, h, -EBADMSG);
	free(h);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_state_object)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *h = file_hex(&id, "state.json"), *p = obj_path(h);
	truncate_to(p, OBJ_HDR + 3);
	expect_broken(&id, h, -EBADMSG);
	free(h);
	free(p);
	free(src);
	img_free(&m);
}

Test(store, corrupt_state_object_deleted)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *h = file_hex(&id, "state.json"), *p = obj_path(h);
	cr_assert_eq(unlink(p), 0);
	expect_broken(&id, h, -ENOENT);
	free(h);
	free(p);
	free(src);
	img_free(&m);
}

/* A committed manifest that gives an absurd memory size (found by
 * tests/fuzz/fuzz_manifest: load made a sparse image that big and then
 * allocated per-chunk tables for it, 2^38 entries here) is refused as
 * damaged before anything is made from it. */
Test(store, manifest_with_a_huge_memory_size_is_refused)
{
	struct img m;
	char *src, err[512] = "";
	struct store_id good = corruptible(&m, &src);
	json_t *man = manifest_of(&good);
	json_object_set_new(json_object_get(man, "memory"), "size", json_integer(1LL << 50));
	json_object_set_new(json_object_get(man, "memory"), "chunk_size", json_integer(4096));
	char *text = json_dumps(man, JSON_COMPACT);
	struct hexs h = plant_object(text, strlen(text));
	char *mark = in_store("snapshots/"), *mark_id = h_fmt("%s%s", mark, h.s);
	int fd = open(mark_id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
	cr_assert_geq(fd, 0, "%s: %s", mark_id, strerror(errno));
	close(fd);
	struct store_id id = id_of_hex(h.s);

	struct store_snapshot ss;
	int rc = store_load(open_store(CS), &id, &ss, err, sizeof(err));
	cr_assert_eq(rc, -EBADMSG, "store_load: %d %s", rc, err);
	cr_assert_not_null(strstr(err, "memory size"), "%s", err);
	cr_assert_not_null(strstr(err, h.s), "the error names the snapshot: %s", err);
	cr_assert_eq(ss.mem_fd, -1);
	assert_empty("images");
	assert_empty("tmp");
	struct problems p;
	cr_assert_eq(verify(&id, &p), 1, "verify: %s", p.text);
	cr_assert_not_null(strstr(p.text, "memory size"), "%s", p.text);
	free(p.text);
	char *dst = in_dir("export");
	cr_assert_eq(store_export(open_store(CS), &id, dst, err, sizeof(err)), -EBADMSG, "%s", err);
	cr_assert_not(exists(dst));
	load(&good, &ss); /* the snapshot it was copied from still loads */
	store_snapshot_free(&ss);

	free(dst);
	free(mark_id);
	free(mark);
	free(text);
	json_decref(man);
	free(src);
	img_free(&m);
}

/* Every problem is reported, each once per snapshot using the object. */
Test(store, verify_reports_every_problem)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	/* a second snapshot sharing chunk 1 (and 2, 3, 10) */
	fill_random(m.p + 20 * CS, CS, 45);
	char *src2 = write_dir("src2", &m, 1);
	struct store_id id2 = put(src2, "d", NULL);
	char *h1 = chunk_hex(&id, 1), *h2 = chunk_hex(&id, 2), *h3 = chunk_hex(&id, 3);
	char *h20 = chunk_hex(&id2, 20), *hs = file_hex(&id2, "snapshot.json");
	char *p1 = obj_path(h1), *p2 = obj_path(h2), *p3 = obj_path(h3), *p20 = obj_path(h20),
	     *ps = obj_path(hs);

	assert_verify_clean();
	flip_byte(p1, OBJ_HDR + 7);
	truncate_to(p2, OBJ_HDR + 10);
	cr_assert_eq(unlink(p3), 0);
	flip_byte(p20, OBJ_HDR);
	flip_byte(ps, OBJ_HDR + 2);

	struct problems p;
	struct hexs s1 = H(&id), s2 = H(&id2);
	int n = verify(&id, &p);
	cr_assert_eq(n, 3, "c: %d problems:\n%s", n, p.text);
	cr_assert_eq(count_lines_with(p.text, h1, s1.s), 1, "%s", p.text);
	cr_assert_eq(count_lines_with(p.text, h2, s1.s), 1, "%s", p.text);
	cr_assert_eq(count_lines_with(p.text, h3, s1.s), 1, "%s", p.text);
	free(p.text);
	n = verify(&id2, &p);
	cr_assert_eq(n, 5, "d: %d problems:\n%s", n, p.text);
	cr_assert_eq(count_lines_with(p.text, h20, s2.s), 1, "%s", p.text);
	cr_assert_eq(count_lines_with(p.text, hs, s2.s), 1, "%s", p.text);
	free(p.text);
	n = verify(NULL, &p);
	cr_assert_eq(n, 8, "all: %d problems:\n%s", n, p.text);
	free(p.text);

	char *out, *er;
	cr_assert_eq(ctl(&out, &er, "verify", NULL), 1);
	cr_assert_eq(count_lines_with(out, "CORRUPT: ", NULL), 8, "%s", out);
	cr_assert_not_null(strstr(er, "8 problems"), "%s", er);
	free(out);
	free(er);
	free(h1);
	free(h2);
	free(h3);
	free(h20);
	free(hs);
	free(p1);
	free(p2);
	free(p3);
	free(p20);
	free(ps);
	free(src);
	free(src2);
	img_free(&m);
}

/* Flipping any one byte of an object file never yields wrong content: a
 * read fails (-EBADMSG, naming the object), always so for a header byte and
 * for the payload of an object stored as is. A zstd frame has a few bytes
 * whose change does not change what it decodes to (the content still
 * hashes to the name): such a read may succeed, with the exact content. */
static void flip_each_byte(const char *hex, uint64_t step)
{
	char *p = obj_path(hex), err[512], *orig, *data;
	size_t orig_len, len;
	struct store_id id = id_of_hex(hex);
	struct ohdr h = read_hdr(p);

	cr_assert_eq(store_read_object(open_store(CS), &id, &orig, &orig_len, err, sizeof(err)), 0,
		     "%s", err);
	for (uint64_t off = 0; off < h.file_size; off += off < OBJ_HDR ? 1 : step) {
		flip_byte(p, (off_t)off);
		err[0] = '\0';
		int rc = store_read_object(open_store(CS), &id, &data, &len, err, sizeof(err));
		if (rc == 0) {
			cr_assert(off >= OBJ_HDR && h.codec == 1,
				  "object %s (codec %u) with byte %llu flipped is read as good",
				  hex, h.codec, (unsigned long long)off);
			cr_assert(len == orig_len && !memcmp(data, orig, len),
				  "object %s with byte %llu flipped is read with other content",
				  hex, (unsigned long long)off);
			free(data);
		} else {
			cr_assert_eq(rc, -EBADMSG,
				     "object %s with byte %llu flipped: read gives %d", hex,
				     (unsigned long long)off, rc);
			cr_assert_not_null(strstr(err, hex), "%s", err);
		}
		flip_byte(p, (off_t)off); /* back */
	}
	cr_assert_eq(store_read_object(open_store(CS), &id, &data, &len, err, sizeof(err)), 0, "%s",
		     err);
	free(data);
	free(orig);
	free(p);
}

Test(store, every_flipped_byte_is_detected)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	char *cfg = file_hex(&id, "config.json"), *raw = chunk_hex(&id, 1);
	flip_each_byte(cfg, 1);
	flip_each_byte(raw, 509);
	flip_each_byte(H(&id).s, 1); /* the manifest */
	free(cfg);
	free(raw);
	free(src);
	img_free(&m);
}

/* A cached image that no longer matches its chunks is reported. */
Test(store, verify_catches_a_damaged_cached_image)
{
	struct img m;
	char *src;
	struct store_id id = corruptible(&m, &src);
	struct store_snapshot ss;
	load(&id, &ss);
	store_snapshot_free(&ss);
	assert_verify_clean();

	char *img = h_fmt("%s/images/%s.img", e.root, H(&id).s);
	flip_byte(img, (off_t)(3 * CS + 100)); /* in a stored chunk */
	struct problems p;
	int n = verify(&id, &p);
	cr_assert_eq(n, 1, "%d problems:\n%s", n, p.text);
	cr_assert_eq(count_lines_with(p.text, "image", H(&id).s), 1, "%s", p.text);
	cr_assert_not_null(strstr(p.text, "chunk 3"), "%s", p.text);
	free(p.text);
	flip_byte(img, (off_t)(30 * CS + 5)); /* in a zero chunk: a hole before */
	n = verify(&id, &p);
	cr_assert_eq(n, 2, "%d problems:\n%s", n, p.text);
	cr_assert_not_null(strstr(p.text, "chunk 30"), "%s", p.text);
	free(p.text);
	char *out, *er;
	cr_assert_eq(ctl(&out, &er, "verify", "c", NULL), 1);
	cr_assert_eq(count_lines_with(out, "CORRUPT: ", "image"), 2, "%s", out);
	free(out);
	free(er);
	/* gc with no budget left evicts it; the next load makes a good one. */
	struct store_gc_stats gs;
	char err[512] = "";
	cr_assert_eq(store_gc(open_store(CS), 0, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gs.images_removed, 1);
	assert_verify_clean();
	load(&id, &ss);
	assert_file_is(ss.mem_fd, &m);
	store_snapshot_free(&ss);
	free(img);
	free(src);
	img_free(&m);
}

/* ============================================================ gc */

struct liveset {
	char **hex;
	int n;
};

static void live_add(struct liveset *l, const char *hex)
{
	for (int i = 0; i < l->n; i++)
		if (!strcmp(l->hex[i], hex))
			return;
	l->hex = realloc(l->hex, (size_t)(l->n + 1) * sizeof(char *));
	l->hex[l->n++] = strdup(hex);
}

/* What snapshot id references, from its manifest (computed here). */
static void live_of(struct liveset *l, const struct store_id *id)
{
	json_t *m = manifest_of(id), *v;
	const char *k;
	size_t i;
	live_add(l, H(id).s);
	json_object_foreach (json_object_get(m, "files"), k, v)
		live_add(l, json_string_value(v));
	json_array_foreach (json_object_get(json_object_get(m, "memory"), "chunks"), i, v)
		live_add(l, json_string_value(json_array_get(v, 1)));
	json_decref(m);
}

static void check_live(void *arg, const char *path, const char *name)
{
	struct liveset *l = arg;
	bool found = false;
	(void)path;
	for (int i = 0; i < l->n; i++)
		found |= !strcmp(l->hex[i], name);
	cr_assert(found, "object %s is left although no snapshot references it", name);
}

static void live_free(struct liveset *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->hex[i]);
	free(l->hex);
}

static void write_text(const char *path, const char *text)
{
	cr_assert_eq(h_write_file(path, text), 0, "%s: %s", path, strerror(errno));
}

Test(store, gc_keeps_what_is_referenced_and_removes_the_rest)
{
	struct img m = img_new(4 * MiB);
	for (int c = 0; c < 16; c++)
		fill_random(m.p + (uint64_t)c * CS, CS, 50 + (uint64_t)c);
	char *da = write_dir("a", &m, 1);
	fill_random(m.p + 3 * CS, P, 70); /* b: chunk 3 changed, chunk 20 new */
	fill_text(m.p + 20 * CS, CS, 71);
	char *db = write_dir("b", &m, 2);
	struct img mc = img_new(4 * MiB); /* c: chunk 0 as a's, 8 of its own */
	memcpy(mc.p, m.p, CS);
	for (int c = 30; c < 38; c++)
		fill_random(mc.p + (uint64_t)c * CS, CS, 80 + (uint64_t)c);
	char *dc = write_dir("c", &mc, 3);
	struct store_id a = put(da, "a", NULL), b = put(db, "b", NULL), c = put(dc, "c", NULL);
	char err[512] = "";
	cr_assert_eq(store_tag(open_store(CS), &c, "c2", err, sizeof(err)), 0, "%s", err);
	struct store_snapshot ss;
	load(&c, &ss); /* c's image exists */
	store_snapshot_free(&ss);
	char *c_only = chunk_hex(&c, 31), *shared = chunk_hex(&c, 0);
	char *c_only_path = obj_path(c_only), *shared_path = obj_path(shared);

	/* leftovers: interrupted writes, an object nothing references, tags
	 * naming nothing, a damaged tag */
	char *t1 = in_store("tmp/0123456789abcdef0123456789abcdef.4242.7");
	char *t2 = in_store("tmp/store.json");
	char *t3 = in_store("tmp/tag-x.4242");
	write_text(t1, "partial chunk");
	write_text(t2, "{");
	write_text(t3, "0123");
	uint8_t junk[3000];
	fill_random(junk, sizeof(junk), 99);
	struct hexs orphan = plant_object(junk, sizeof(junk));
	char *orphan_path = obj_path(orphan.s);
	char *ghost = in_store("tags/ghost"), *broken = in_store("tags/broken");
	write_text(ghost, "fedcba9876543210fedcba9876543210\n");
	write_text(broken, "not an id\n");

	cr_assert_eq(store_rm(open_store(CS), &c, err, sizeof(err)), 0, "%s", err);
	char *tc = in_store("tags/c"), *tc2 = in_store("tags/c2");
	cr_assert_not(exists(tc), "rm leaves the tag c");
	cr_assert_not(exists(tc2), "rm leaves the tag c2");
	struct store_id x;
	cr_assert_eq(store_resolve(open_store(CS), H(&c).s, &x, err, sizeof(err)), -ENOENT);

	struct liveset live = { 0 };
	live_of(&live, &a);
	live_of(&live, &b);
	int before = count_objects();
	struct store_gc_stats gs;
	cr_assert_eq(store_gc(open_store(CS), UINT64_MAX, &gs, err, sizeof(err)), 0, "%s", err);
	int after = count_objects();
	cr_assert_eq(after, live.n, "%d objects left, %d referenced", after, live.n);
	each_object(check_live, &live);
	cr_assert_eq(gs.objects_kept, (uint64_t)live.n);
	cr_assert_eq(gs.objects_removed, (uint64_t)(before - after));
	/* c: manifest, snapshot.json, state, 8 own chunks; and the orphan */
	cr_assert_eq(before - after, 12, "%d objects removed", before - after);
	cr_assert_eq(gs.temp_removed, 3);
	cr_assert_eq(gs.images_removed, 1, "c's image");
	cr_assert_not(exists(c_only_path));
	cr_assert(exists(shared_path), "a chunk a still uses was removed with c");
	cr_assert_not(exists(orphan_path));
	assert_empty("tmp");
	assert_empty("images");
	char *tags = in_store("tags"), *names = names_of(tags);
	cr_assert_str_eq(names, "a/b/", "tags after gc: %s", names);
	free(names);
	free(tags);

	/* What is left is whole: verify, exports, loads. */
	assert_verify_clean();
	char *ea = in_dir("ea"), *eb = in_dir("eb");
	export_to(&a, ea);
	export_to(&b, eb);
	assert_same_dir(da, ea);
	assert_same_dir(db, eb);
	load(&b, &ss);
	assert_file_is(ss.mem_fd, &m);
	store_snapshot_free(&ss);
	/* A second gc finds nothing to do. */
	cr_assert_eq(store_gc(open_store(CS), UINT64_MAX, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gs.objects_removed, 0);
	cr_assert_eq(gs.temp_removed, 0);
	cr_assert_eq(gs.images_removed, 0, "b's image is kept without a budget");

	live_free(&live);
	free(ea);
	free(eb);
	free(tc);
	free(tc2);
	free(ghost);
	free(broken);
	free(orphan_path);
	free(t1);
	free(t2);
	free(t3);
	free(c_only);
	free(shared);
	free(c_only_path);
	free(shared_path);
	free(da);
	free(db);
	free(dc);
	img_free(&m);
	img_free(&mc);
}

Test(store, gc_image_budget_never_evicts_an_open_image)
{
	struct img m = img_new(4 * MiB);
	fill_random(m.p, 4 * CS, 60);
	char *da = write_dir("a", &m, 1);
	fill_random(m.p + 8 * CS, 4 * CS, 61);
	char *db = write_dir("b", &m, 2);
	struct store_id a = put(da, "a", NULL), b = put(db, "b", NULL);
	char *ia = h_fmt("%s/images/%s.img", e.root, H(&a).s),
	     *ib = h_fmt("%s/images/%s.img", e.root, H(&b).s);
	struct store_snapshot sa, sb;
	struct store_gc_stats gs;
	char err[512] = "";

	load(&a, &sa);
	store_snapshot_free(&sa);
	load(&b, &sb); /* kept open: a running VM maps it */
	cr_assert_eq(store_gc(open_store(CS), 0, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gs.images_removed, 1);
	cr_assert_eq(gs.images_in_use, 1);
	cr_assert_not(exists(ia), "the unused image was kept");
	cr_assert(exists(ib), "the open image was evicted");
	assert_file_is(sb.mem_fd, &m);

	/* forkctl store gc --image-budget 0 in another process: the same. */
	load(&a, &sa);
	store_snapshot_free(&sa);
	cr_assert(exists(ia));
	char *out, *er;
	cr_assert_eq(ctl(&out, &er, "gc", "--image-budget", "0", NULL), 0, "%s", er);
	cr_assert_not_null(strstr(out, "1 images removed"), "%s", out);
	cr_assert_not_null(strstr(out, "1 images in use kept"), "%s", out);
	cr_assert_not(exists(ia));
	cr_assert(exists(ib));
	free(out);
	free(er);
	store_snapshot_free(&sb);

	/* Least recently used first: a budget of one image keeps the last used. */
	load(&a, &sa);
	store_snapshot_free(&sa);
	h_sleep_ms(20);
	load(&b, &sb);
	store_snapshot_free(&sb);
	uint64_t one = allocated(ib);
	cr_assert_eq(store_gc(open_store(CS), one, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gs.images_removed, 1);
	cr_assert_not(exists(ia), "a, used before b, is the one to go");
	cr_assert(exists(ib));
	/* Without a budget nothing is evicted; with 0 the last one goes. */
	cr_assert_eq(store_gc(open_store(CS), UINT64_MAX, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert(exists(ib));
	cr_assert_eq(store_gc(open_store(CS), 0, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_not(exists(ib));
	assert_empty("images");
	/* Objects are untouched by image eviction. */
	assert_verify_clean();
	load(&b, &sb);
	assert_file_is(sb.mem_fd, &m);
	store_snapshot_free(&sb);
	free(ia);
	free(ib);
	free(da);
	free(db);
	img_free(&m);
}

/* An image of a removed snapshot goes at the next gc, unless it is open. */
Test(store, gc_removes_images_of_removed_snapshots_unless_open)
{
	struct img m = img_new(4 * MiB);
	fill_random(m.p, 4 * CS, 62);
	char *da = write_dir("a", &m, 1);
	struct store_id a = put(da, "a", NULL);
	char *ia = h_fmt("%s/images/%s.img", e.root, H(&a).s), err[512] = "";
	struct store_snapshot sa;
	struct store_gc_stats gs;

	load(&a, &sa);
	cr_assert_eq(store_rm(open_store(CS), &a, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_gc(open_store(CS), UINT64_MAX, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert(exists(ia), "an image in use was removed");
	cr_assert_eq(gs.images_in_use, 1);
	assert_file_is(sa.mem_fd, &m); /* still readable for the running VM */
	store_snapshot_free(&sa);
	cr_assert_eq(store_gc(open_store(CS), UINT64_MAX, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gs.images_removed, 1);
	cr_assert_not(exists(ia));
	cr_assert_eq(count_objects(), 0);
	free(ia);
	free(da);
	img_free(&m);
}

/* ============================================================ tags and refs */

Test(store, tags_move_and_references_resolve)
{
	struct img m = img_new(4 * MiB);
	fill_random(m.p, CS, 1);
	char *da = write_dir("a", &m, 1);
	fill_random(m.p, CS, 2);
	char *db = write_dir("b", &m, 1);
	struct store_id a = put(da, NULL, NULL), b = put(db, NULL, NULL), r;
	struct hexs ha = H(&a), hb = H(&b);
	char err[512] = "";
	struct store *st = open_store(CS);

	cr_assert_eq(store_tag(st, &a, "x", err, sizeof(err)), 0, "%s", err);
	r = resolve("x");
	cr_assert(store_id_equal(&r, &a));
	cr_assert_eq(store_tag(st, &b, "x", err, sizeof(err)), 0, "%s", err);
	r = resolve("x");
	cr_assert(store_id_equal(&r, &b), "the tag did not move");
	char *tx = in_store("tags/x");
	char *text = h_read_file(tx);
	char *want = h_fmt("%s\n", hb.s);
	cr_assert_str_eq(text, want);
	free(text);
	free(want);
	assert_empty("tmp");

	/* full ids and unique prefixes (docs/store-format.md: any unique prefix) */
	r = resolve(ha.s);
	cr_assert(store_id_equal(&r, &a));
	size_t diff = 0;
	while (ha.s[diff] == hb.s[diff])
		diff++;
	char prefix[33];
	snprintf(prefix, sizeof(prefix), "%.*s", (int)diff + 1, ha.s);
	r = resolve(prefix);
	cr_assert(store_id_equal(&r, &a), "prefix %s", prefix);
	snprintf(prefix, sizeof(prefix), "%.*s", (int)diff + 1, hb.s);
	r = resolve(prefix);
	cr_assert(store_id_equal(&r, &b), "prefix %s", prefix);

	/* refusals */
	int rc;
	if (diff > 0) {
		snprintf(prefix, sizeof(prefix), "%.*s", (int)diff, ha.s);
		rc = store_resolve(st, prefix, &r, err, sizeof(err));
		cr_assert_eq(rc, -EINVAL, "the common prefix %s: %d %s", prefix, rc, err);
	}
	char longer[40];
	snprintf(longer, sizeof(longer), "%s0", ha.s);
	rc = store_resolve(st, longer, &r, err, sizeof(err));
	cr_assert_eq(rc, -ENOENT, "33 digits: %d %s", rc, err);
	snprintf(prefix, sizeof(prefix), "%.8s", ha.s);
	for (char *c = prefix; *c; c++)
		*c = *c >= 'a' ? (char)(*c - 'a' + 'A') : *c;
	if (strcmp(prefix, ha.s) && strpbrk(prefix, "ABCDEF")) {
		rc = store_resolve(st, prefix, &r, err, sizeof(err));
		cr_assert_eq(rc, -ENOENT, "upper case %s: %d %s", prefix, rc, err);
	}
	rc = store_resolve(st, "nosuchtag", &r, err, sizeof(err));
	cr_assert_eq(rc, -ENOENT);
	cr_assert_not_null(strstr(err, "nosuchtag"), "%s", err);
	rc = store_resolve(st, "", &r, err, sizeof(err));
	cr_assert_eq(rc, -EINVAL);
	rc = store_resolve(st, "../store.json", &r, err, sizeof(err));
	cr_assert_eq(rc, -ENOENT, "%s", err);
	struct store_id ghost = id_of_hex("00000000000000000000000000000000");
	rc = store_tag(st, &ghost, "ghost", err, sizeof(err));
	cr_assert_eq(rc, -ENOENT, "a tag naming no snapshot: %d", rc);
	char *tg = in_store("tags/ghost");
	cr_assert_not(exists(tg));
	free(tg);

	/* a tag that looks like a prefix: the tag wins */
	snprintf(prefix, sizeof(prefix), "%.6s", hb.s);
	cr_assert_eq(store_tag(st, &a, prefix, err, sizeof(err)), 0, "%s", err);
	r = resolve(prefix);
	cr_assert(store_id_equal(&r, &a), "the tag %s is not taken first", prefix);

	/* a damaged tag is an error, not another snapshot */
	write_text(tx, "garbage");
	rc = store_resolve(st, "x", &r, err, sizeof(err));
	cr_assert_eq(rc, -EBADMSG, "%d %s", rc, err);
	cr_assert_not_null(strstr(err, "x"), "%s", err);

	/* rm: the snapshot and every tag naming it */
	cr_assert_eq(store_tag(st, &a, "y", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_rm(st, &a, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_resolve(st, "y", &r, err, sizeof(err)), -ENOENT);
	cr_assert_eq(store_resolve(st, prefix, &r, err, sizeof(err)), 0,
		     "the prefix, no tag now: %s", err);
	cr_assert(store_id_equal(&r, &b));
	cr_assert_eq(store_resolve(st, ha.s, &r, err, sizeof(err)), -ENOENT);
	cr_assert_eq(store_rm(st, &a, err, sizeof(err)), -ENOENT);
	free(tx);
	free(da);
	free(db);
	img_free(&m);
}

Test(store, bad_tag_names_are_refused)
{
	static const char *const bad[] = {
		"",	".hidden", "-dash", "_under", "a/b", "../up", "a b", "tab\tx", "new\nline",
		"é",	"a:b",	   "a*",    "..",     ".",   "a\\b",
	};
	struct img m = img_new(4 * MiB);
	fill_random(m.p, CS, 3);
	char *da = write_dir("a", &m, 1);
	struct store_id a = put(da, NULL, NULL), id;
	char err[512] = "";
	struct store *st = open_store(CS);
	char long_ok[129], long_bad[130];

	memset(long_ok, 'a', 128);
	long_ok[128] = '\0';
	memset(long_bad, 'b', 129);
	long_bad[129] = '\0';
	cr_assert(store_tag_valid(long_ok));
	cr_assert_not(store_tag_valid(long_bad));
	cr_assert_eq(store_tag(st, &a, long_bad, err, sizeof(err)), -EINVAL);
	cr_assert_eq(store_tag(st, &a, long_ok, err, sizeof(err)), 0, "%s", err);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		cr_assert_not(store_tag_valid(bad[i]), "'%s' accepted", bad[i]);
		int rc = store_tag(st, &a, bad[i], err, sizeof(err));
		cr_assert_eq(rc, -EINVAL, "store_tag('%s'): %d", bad[i], rc);
		cr_assert_not_null(strstr(err, "bad tag name"), "%s", err);
	}
	static const char *const good[] = { "a", "Z9", "v1.2.3", "my_tag-2", "0abc" };
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		cr_assert(store_tag_valid(good[i]), "'%s' refused", good[i]);
	/* a put with a bad tag writes nothing */
	int objs = count_objects();
	fill_random(m.p + CS, CS, 4);
	char *db = write_dir("b", &m, 1);
	int rc = store_put_dir(st, db, "a/b", &id, NULL, err, sizeof(err));
	cr_assert_eq(rc, -EINVAL);
	cr_assert_eq(count_objects(), objs);
	cr_assert_eq(count_in("snapshots"), 1);
	assert_empty("tmp");
	char *tags = in_store("tags"), *names = names_of(tags), *w = h_fmt("%s/", long_ok);
	cr_assert_str_eq(names, w);
	free(w);
	free(names);
	free(tags);
	/* forkctl: usage errors */
	char *out, *er, *url = h_fmt("file://%s", db);
	cr_assert_eq(ctl(&out, &er, "put", url, "--tag", "a/b", NULL), 2);
	cr_assert_not_null(strstr(er, "bad tag name"), "%s", er);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "tag", H(&a).s, "../x", NULL), 2);
	cr_assert_not_null(strstr(er, "bad tag name"), "%s", er);
	free(out);
	free(er);
	cr_assert_eq(count_objects(), objs);
	free(url);
	free(da);
	free(db);
	img_free(&m);
}

/* Seventeen snapshots: two of them share their first hex digit
 * (pigeonhole), so that digit is an ambiguous prefix, and a prefix one
 * digit longer than their common one names each. */
Test(store, ambiguous_prefix_is_refused)
{
	struct img m = img_new(P);
	json_t *cfg = test_config(P), *units = test_units(0);
	struct store_mem sm = { .base = m.p, .size = P };
	struct store *st = open_store(CS);
	struct store_id ids[17];
	int first = -1, second = -1;
	char err[512] = "";

	for (int i = 0; i < 17; i++) {
		struct snap_meta meta = { .loader = "function-guest", .vcpus = 1, .memory_size = P,
					  .created_realtime_ns = 1000000000ULL + (uint64_t)i };
		struct store_snapshot_in in = { .config = cfg, .units = units, .meta = &meta,
						.mem = &sm };
		int rc = store_put_snapshot(st, &in, NULL, &ids[i], NULL, err, sizeof(err));
		cr_assert_eq(rc, 0, "%s", err);
		for (int k = 0; k < i && first < 0; k++)
			if (H(&ids[k]).s[0] == H(&ids[i]).s[0]) {
				first = k;
				second = i;
			}
	}
	cr_assert_geq(first, 0);
	struct hexs a = H(&ids[first]), b = H(&ids[second]);
	size_t d = 0;
	while (a.s[d] == b.s[d])
		d++;
	char prefix[33];
	int matching = 0;
	snprintf(prefix, sizeof(prefix), "%.1s", a.s);
	for (int i = 0; i < 17; i++)
		matching += H(&ids[i]).s[0] == a.s[0];
	struct store_id r;
	int rc = store_resolve(st, prefix, &r, err, sizeof(err));
	cr_assert_eq(rc, -EINVAL, "ambiguous %s (%s, %s): %d %s", prefix, a.s, b.s, rc, err);
	cr_assert_not_null(strstr(err, prefix), "%s", err);
	char *count = h_fmt("%d snapshots", matching);
	cr_assert_not_null(strstr(err, count), "'%s' lacks '%s'", err, count);
	free(count);
	snprintf(prefix, sizeof(prefix), "%.*s", (int)d, b.s);
	rc = store_resolve(st, prefix, &r, err, sizeof(err));
	cr_assert_eq(rc, -EINVAL, "the common prefix %s: %d %s", prefix, rc, err);
	snprintf(prefix, sizeof(prefix), "%.*s", (int)d + 1, b.s);
	bool unique = true;
	for (int i = 0; i < 17; i++)
		unique &= i == second || strncmp(H(&ids[i]).s, prefix, d + 1);
	if (unique) {
		r = resolve(prefix);
		cr_assert(store_id_equal(&r, &ids[second]));
	}
	/* forkctl says so and fails */
	char *out, *er, *p1 = h_fmt("%.1s", a.s);
	cr_assert_eq(ctl(&out, &er, "show", p1, NULL), 1);
	cr_assert_not_null(strstr(er, "give more digits"), "%s", er);
	free(out);
	free(er);
	free(p1);
	json_decref(cfg);
	json_decref(units);
	img_free(&m);
}

Test(store, forkctl_ls_show_tag_rm)
{
	struct img m = img_new(4 * MiB);
	fill_random(m.p, 3 * CS, 5);
	char *da = write_dir("a", &m, 1), *url = h_fmt("file://%s", da), *out, *er;
	cr_assert_eq(ctl(NULL, &er, "init", "--chunk-size=64K", NULL), 0, "%s", er);
	free(er);
	cr_assert_eq(ctl(&out, &er, "put", url, "--tag=one", NULL), 0, "%s", er);
	out[32] = '\0';
	struct hexs id;
	snprintf(id.s, sizeof(id.s), "%s", out);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "tag", "one", "two", NULL), 0, "%s", er);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "ls", NULL), 0, "%s", er);
	cr_assert_eq(count_lines_with(out, "ID", "TAGS"), 1, "%s", out);
	char *short_id = h_fmt("%.12s", id.s);
	cr_assert_eq(count_lines_with(out, short_id, "one,two"), 1, "%s", out);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "show", "two", NULL), 0, "%s", er);
	json_t *j = json_loads(out, 0, NULL);
	cr_assert_not_null(j, "show prints JSON: %s", out);
	cr_assert_str_eq(json_string_value(json_object_get(j, "id")), id.s);
	cr_assert_eq(json_array_size(json_object_get(j, "tags")), 2);
	json_t *mm = json_object_get(json_object_get(j, "manifest"), "memory");
	cr_assert_eq(json_integer_value(json_object_get(mm, "chunk_size")), (json_int_t)CS);
	cr_assert_str_eq(json_string_value(json_object_get(mm, "chunks")), "3 non-zero chunks");
	cr_assert(json_is_null(json_object_get(json_object_get(j, "manifest"), "parent")));
	json_decref(j);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "rm", short_id, NULL), 0, "%s", er);
	cr_assert_not_null(strstr(er, "removed snapshot"), "%s", er);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "ls", NULL), 0, "%s", er);
	cr_assert_eq(count_lines_with(out, short_id, NULL), 0, "%s", out);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "show", "one", NULL), 1);
	cr_assert_not_null(strstr(er, "no tag one"), "%s", er);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "gc", NULL), 0, "%s", er);
	cr_assert_not_null(strstr(out, "0 objects kept"), "%s", out);
	free(out);
	free(er);
	cr_assert_eq(count_objects(), 0);
	cr_assert_eq(ctl(&out, &er, "verify", NULL), 0, "%s", er);
	cr_assert_not_null(strstr(out, "all objects intact"), "%s", out);
	free(out);
	free(er);
	free(short_id);
	free(url);
	free(da);
	img_free(&m);
}

/* ============================================================ store_open */

Test(store, new_store_is_private)
{
	char *root = in_dir("deep/er/store"), err[512] = "";
	struct store *st;
	mode_t old = umask(0);
	int rc = store_open(root, true, CS, &st, err, sizeof(err));
	umask(old);
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(store_chunk_size(st), CS);
	cr_assert_str_eq(store_root(st), root);
	store_close(st);
	static const char *const dirs[] = { "", "/objects", "/objects/00", "/objects/ff",
					    "/snapshots", "/tags", "/images", "/tmp" };
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		char *p = h_fmt("%s%s", root, dirs[i]);
		struct stat s;
		cr_assert_eq(stat(p, &s), 0, "%s: %s", p, strerror(errno));
		cr_assert(S_ISDIR(s.st_mode));
		cr_assert_eq(s.st_mode & 07777, 0700, "%s mode %o", p, s.st_mode & 07777);
		free(p);
	}
	static const char *const files[] = { "/store.json", "/lock" };
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *p = h_fmt("%s%s", root, files[i]);
		struct stat s;
		cr_assert_eq(stat(p, &s), 0, "%s", p);
		cr_assert_eq(s.st_mode & 07777, 0600, "%s mode %o", p, s.st_mode & 07777);
		free(p);
	}
	char *sj = h_fmt("%s/store.json", root);
	json_t *j = json_load_file(sj, 0, NULL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "format")), "forkvm-store");
	cr_assert_eq(json_integer_value(json_object_get(j, "version")), 1);
	cr_assert_eq(json_integer_value(json_object_get(j, "chunk_size")), (json_int_t)CS);
	json_decref(j);
	/* reopened with another chunk size: the store keeps its own */
	cr_assert_eq(store_open(root, true, 1 << 20, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_chunk_size(st), CS);
	store_close(st);
	cr_assert_eq(store_open(root, false, 0, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_chunk_size(st), CS);
	store_close(st);
	/* the default chunk size */
	char *r2 = in_dir("default");
	cr_assert_eq(store_open(r2, true, 0, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_chunk_size(st), STORE_DEFAULT_CHUNK);
	store_close(st);
	free(r2);
	free(sj);
	free(root);
}

static void expect_open_refused(const char *root, bool create, uint32_t chunk, int want,
				const char *needle)
{
	struct store *st = NULL;
	char err[512] = "";
	int rc = store_open(root, create, chunk, &st, err, sizeof(err));
	if (rc == 0)
		store_close(st);
	cr_assert_eq(rc, want, "store_open(%s, %d, %u): %d %s", root, create, chunk, rc, err);
	cr_assert_not_null(strstr(err, needle), "store_open(%s): '%s' lacks '%s'", root, err,
			   needle);
}

Test(store, store_open_refusals)
{
	/* not a store: a directory with files, opened and "created" */
	char *plain = in_dir("plain");
	cr_assert_eq(mkdir(plain, 0755), 0);
	char *f = ut_write_file(plain, "precious", "keep me", 7);
	cr_assert_not_null(f);
	char *sub = h_fmt("%s/tmp", plain);
	cr_assert_eq(mkdir(sub, 0755), 0);
	char *f2 = ut_write_file(sub, "notes", "mine", 4);
	char *before = names_of(plain);
	expect_open_refused(plain, false, 0, -ENOENT, "not a forkvm store");
	expect_open_refused(plain, true, 0, -EEXIST, "not a forkvm store");
	char *after = names_of(plain);
	cr_assert_str_eq(after, before, "a non-store directory was changed");
	free(after);
	after = names_of(sub);
	cr_assert_str_eq(after, "notes/");
	free(after);
	/* ... and gc never runs there through forkctl either */
	char *out, *er;
	const char *gc[] = { "--store", plain, "store", "gc", NULL };
	cr_assert_eq(run_argv(&out, &er, gc), 1);
	cr_assert_not_null(strstr(er, "not a forkvm store"), "%s", er);
	free(out);
	free(er);
	const char *put[] = { "--store", plain, "store", "put", "file:///nonexistent", NULL };
	cr_assert_eq(run_argv(&out, &er, put), 1);
	free(out);
	free(er);
	after = names_of(plain);
	cr_assert_str_eq(after, before, "forkctl changed a non-store directory");
	free(after);

	/* missing, not created */
	char *missing = in_dir("missing");
	expect_open_refused(missing, false, 0, -ENOENT, missing);
	cr_assert_not(exists(missing));
	/* a regular file */
	expect_open_refused(f, true, 0, -ENOTDIR, f);
	/* bad chunk sizes: refused before anything is created */
	expect_open_refused(missing, true, 3000, -EINVAL, "power of two");
	expect_open_refused(missing, true, 2048, -EINVAL, "power of two");
	expect_open_refused(missing, true, 128 << 20, -EINVAL, "power of two");
	cr_assert_not(exists(missing));
	expect_open_refused("", true, 0, -EINVAL, "bad store path");

	/* store.json of another version, another format, damaged */
	struct store *st;
	char err[512] = "";
	cr_assert_eq(store_open(e.root, true, CS, &st, err, sizeof(err)), 0, "%s", err);
	store_close(st);
	char *sj = in_store("store.json");
	write_text(sj, "{\"format\": \"forkvm-store\", \"version\": 2, \"chunk_size\": 65536}\n");
	expect_open_refused(e.root, false, 0, -EINVAL, "version 2");
	expect_open_refused(e.root, true, 0, -EINVAL, "version 2");
	const char *ls[] = { "--store", e.root, "store", "ls", NULL };
	cr_assert_eq(run_argv(&out, &er, ls), 1);
	cr_assert_not_null(strstr(er, "version 2"), "%s", er);
	free(out);
	free(er);
	write_text(sj, "{\"format\": \"other\", \"version\": 1, \"chunk_size\": 65536}\n");
	expect_open_refused(e.root, false, 0, -EINVAL, "not a forkvm store");
	write_text(sj, "{\"format\": \"forkvm-store\", \"version\": 1, \"chunk_size\": 3000}\n");
	expect_open_refused(e.root, false, 0, -EINVAL, "bad chunk size");
	write_text(sj, "{\"format\": \"forkvm-store\", \"vers");
	expect_open_refused(e.root, false, 0, -EINVAL, "not a forkvm store");
	write_text(sj, "");
	expect_open_refused(e.root, false, 0, -EINVAL, "not a forkvm store");

	/* an empty existing directory becomes a store */
	char *empty = in_dir("empty");
	cr_assert_eq(mkdir(empty, 0700), 0);
	cr_assert_eq(store_open(empty, true, 0, &st, err, sizeof(err)), 0, "%s", err);
	store_close(st);
	free(empty);
	free(sj);
	free(missing);
	free(before);
	free(f);
	free(f2);
	free(sub);
	free(plain);
}

Test(store, default_root)
{
	char buf[4096];
	setenv("FORKVM_STORE", "/srv/forkvm-store", 1);
	cr_assert_str_eq(store_default_root(buf, sizeof(buf)), "/srv/forkvm-store");
	unsetenv("FORKVM_STORE");
	setenv("HOME", "/home/someone", 1);
	unsetenv("XDG_DATA_HOME");
	if (geteuid() == 0)
		cr_assert_str_eq(store_default_root(buf, sizeof(buf)), "/var/lib/forkvm/store");
	else
		cr_assert_str_eq(store_default_root(buf, sizeof(buf)),
				 "/home/someone/.local/share/forkvm/store");

	/* forkctl without --store uses $FORKVM_STORE */
	setenv("FORKVM_STORE", e.root, 1);
	char *out, *er;
	const char *init[] = { "store", "init", "--chunk-size", "128K", NULL };
	cr_assert_eq(run_argv(&out, &er, init), 0, "%s", er);
	cr_assert_not_null(strstr(out, "chunk size 131072"), "%s", out);
	free(out);
	free(er);
	unsetenv("FORKVM_STORE");
	char *sj = in_store("store.json");
	cr_assert(exists(sj));
	free(sj);
}

/* ============================================================ crash safety */

/* A directory whose put takes a while: 32 MiB of random data. */
static char *big_dir(void)
{
	struct img m = img_new(96 * MiB);
	fill_random(m.p, 32 * MiB, 90);
	fill_text(m.p + 80 * MiB, 4 * MiB, 91);
	char *dir = write_dir("big", &m, 1);
	img_free(&m);
	return dir;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

static void sleep_us(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void spawn_put(struct h_proc *p, const char *root, const char *url, const char *tag)
{
	char *bin = h_bin("forkctl");
	const char *argv[] = { bin, "--store", root, "store", "put", url, "--tag", tag, NULL };
	cr_assert_eq(h_spawn(p, e.dir, argv), 0);
	free(bin);
}

/* The store as a crash may leave it is still consistent: verify passes,
 * ls shows only whole snapshots, every tag names a committed snapshot. */
static void assert_consistent(const char *when)
{
	char *out, *er;
	int st = ctl(&out, &er, "verify", NULL);
	cr_assert_eq(st, 0, "%s: forkctl store verify exits %d:\n%s%s", when, st, out, er);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "ls", NULL), 0, "%s: ls: %s", when, er);
	cr_assert_eq(h_count(out, "(damaged)"), 0, "%s: %s", when, out);
	cr_assert_eq(count_lines_with(out, "  ", NULL), 1 + count_in("snapshots"), "%s: ls:\n%s",
		     when, out);
	free(out);
	free(er);
	char *tags = in_store("tags"), *names = names_of(tags), *save = NULL;
	for (char *t = strtok_r(names, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
		char *p = h_fmt("%s/%s", tags, t), *text = h_read_file(p);
		cr_assert_not_null(text);
		cr_assert_eq(strlen(text), 33, "%s: tag %s holds '%s'", when, t, text);
		char *snap = h_fmt("%s/snapshots/%.32s", e.root, text);
		cr_assert(exists(snap), "%s: tag %s names %.32s, which is not committed", when, t,
			  text);
		free(snap);
		free(text);
		free(p);
	}
	free(names);
	free(tags);
}

Test(store, put_killed_part_way_leaves_a_consistent_store, .timeout = 300)
{
	char *src = big_dir(), *url = h_fmt("file://%s", src), *out, *er;
	struct img small = img_new(4 * MiB);
	fill_random(small.p, 2 * CS, 92);
	char *dsmall = write_dir("small", &small, 1);
	struct store_id base = put(dsmall, "base", NULL);
	store_close(e.st);
	e.st = NULL;
	int base_objects = count_objects();

	/* How long a whole put takes (into another store). */
	char *scratch = in_dir("scratch");
	struct h_proc p;
	uint64_t t0 = now_us();
	spawn_put(&p, scratch, url, "big");
	int st = h_wait(&p, T_MS);
	uint64_t whole = now_us() - t0;
	cr_assert_eq(st, 0, "the calibration put: %d", st);
	cr_log_info("a whole put takes %.1f ms", (double)whole / 1000);
	h_kill(&p);
	h_rmtree(scratch);

	static const double when[] = { 0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9 };
	int partial = 0, killed = 0;
	for (size_t i = 0; i < ARRAY_SIZE(when); i++) {
		char what[128];
		uint64_t delay = (uint64_t)(when[i] * (double)whole);
		snprintf(what, sizeof(what), "put killed after %.1f ms of %.1f",
			 (double)delay / 1000, (double)whole / 1000);
		spawn_put(&p, e.root, url, "big");
		sleep_us(delay);
		kill(p.pid, SIGKILL);
		st = h_wait(&p, T_MS);
		h_kill(&p);
		char *tag = in_store("tags/big");
		bool committed = exists(tag);
		if (st == 128 + SIGKILL) {
			killed++;
			if (!committed && (count_in("tmp") > 0 || count_objects() > base_objects))
				partial++;
		} else {
			cr_assert_eq(st, 0, "%s: status %d", what, st);
		}
		assert_consistent(what);
		if (committed) {
			/* it got through: start the next round from scratch */
			cr_assert_eq(ctl(NULL, &er, "rm", "big", NULL), 0, "%s", er);
			free(er);
		}
		if (committed || i % 2) {
			cr_assert_eq(ctl(&out, &er, "gc", NULL), 0, "%s: gc: %s", what, er);
			free(out);
			free(er);
			assert_empty("tmp");
			cr_assert_eq(count_objects(), base_objects,
				     "%s: gc left %d objects, %d before", what, count_objects(),
				     base_objects);
			assert_consistent(what);
		}
		free(tag);
	}
	cr_assert_geq(killed, 3, "only %d of %zu puts were killed before they ended (%.1f ms)",
		      killed, ARRAY_SIZE(when), (double)whole / 1000);
	cr_assert_geq(partial, 2, "only %d kills landed while the put was writing", partial);

	/* One more killed half-way, leftovers kept: a new put still succeeds. */
	spawn_put(&p, e.root, url, "big");
	sleep_us(whole / 2);
	kill(p.pid, SIGKILL);
	h_wait(&p, T_MS);
	h_kill(&p);
	assert_consistent("before the last put");
	cr_assert_eq(ctl(&out, &er, "put", url, "--tag", "big", NULL), 0, "%s", er);
	free(out);
	free(er);
	char *dst = in_dir("exported"), *durl = h_fmt("file://%s", dst);
	cr_assert_eq(ctl(&out, &er, "export", "big", durl, NULL), 0, "%s", er);
	free(out);
	free(er);
	assert_same_dir(src, dst);
	cr_assert_eq(ctl(&out, &er, "gc", NULL), 0, "%s", er);
	free(out);
	free(er);
	assert_empty("tmp");
	assert_consistent("at the end");
	struct store_id big = resolve("big"), b2 = resolve("base");
	cr_assert(store_id_equal(&b2, &base));
	struct liveset live = { 0 };
	live_of(&live, &big);
	live_of(&live, &base);
	cr_assert_eq(count_objects(), live.n);
	each_object(check_live, &live);
	live_free(&live);
	free(dst);
	free(durl);
	free(dsmall);
	img_free(&small);
	free(scratch);
	free(url);
	free(src);
}

/* gc started while a put writes waits for it and removes none of its
 * objects. */
Test(store, gc_waits_for_a_put_in_progress, .timeout = 300)
{
	char *src = big_dir(), *url = h_fmt("file://%s", src), err[512] = "";
	struct h_proc p;
	bool seen = false;

	open_store(CS);
	for (int attempt = 0; attempt < 5 && !seen; attempt++) {
		spawn_put(&p, e.root, url, "big");
		while (h_wait(&p, 0) < 0 && !(seen = count_in("tmp") > 0))
			sleep_us(200);
		if (!seen) {
			/* missed it: undo and try again */
			h_kill(&p);
			struct store_id id = resolve("big");
			cr_assert_eq(store_rm(e.st, &id, err, sizeof(err)), 0, "%s", err);
			cr_assert_eq(store_gc(e.st, UINT64_MAX, NULL, err, sizeof(err)), 0, "%s",
				     err);
			continue;
		}
		struct store_gc_stats gs;
		cr_assert_eq(store_gc(e.st, UINT64_MAX, &gs, err, sizeof(err)), 0, "%s", err);
		/* the put was done when gc got the lock */
		char *tag = in_store("tags/big");
		cr_assert(exists(tag), "gc ran before the put committed");
		free(tag);
		cr_assert_eq(gs.objects_removed, 0);
		cr_assert_eq(gs.temp_removed, 0);
		cr_assert_eq(h_wait(&p, T_MS), 0);
		h_kill(&p);
	}
	cr_assert(seen, "never saw the put writing");
	assert_verify_clean();
	char *dst = in_dir("exported");
	struct store_id id = resolve("big");
	export_to(&id, dst);
	assert_same_dir(src, dst);
	free(dst);
	free(url);
	free(src);
}

/* ============================================================ command line */

struct cli_case {
	const char *args[8];
	int status;
	const char *needle; /* in stderr */
};

/* What a failed command must not change: objects, snapshots, tags, tmp/,
 * images/ (names). */
static char *store_state(void)
{
	char *s = h_fmt("objects %d", count_objects());
	static const char *const dirs[] = { "snapshots", "tags", "tmp", "images" };
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		char *d = in_store(dirs[i]), *n = names_of(d),
		     *t = h_fmt("%s\n%s: %s", s, dirs[i], n);
		free(s);
		s = t;
		free(d);
		free(n);
	}
	return s;
}

Test(store, bad_command_lines)
{
	struct img m = img_new(4 * MiB);
	fill_random(m.p, CS, 7);
	char *da = write_dir("a", &m, 1), *url = h_fmt("file://%s", da), *out, *er;
	cr_assert_eq(ctl(NULL, &er, "init", "--chunk-size", "64K", NULL), 0, "%s", er);
	free(er);
	cr_assert_eq(ctl(&out, &er, "put", url, "--tag", "t", NULL), 0, "%s", er);
	free(out);
	free(er);
	char *plainfile = ut_write_file(e.dir, "plainfile", "x", 1);
	char *nourl = h_fmt("file://%s/nonexistent", e.dir), *fileurl = h_fmt("file://%s", plainfile);
	char *damaged = write_dir("damaged", &m, 2), *damurl = h_fmt("file://%s", damaged);
	char *dstate = h_fmt("%s/state.json", damaged);
	flip_byte(dstate, 3);
	char *full = in_dir("full"), *fullurl = h_fmt("file://%s", full);
	cr_assert_eq(mkdir(full, 0755), 0);
	char *keep = ut_write_file(full, "keep", "precious", 8);
	char *dst = in_dir("dst"), *dsturl = h_fmt("file://%s", dst);

	const struct cli_case cases[] = {
		{ { "frobnicate" }, 2, "unknown store command" },
		{ { NULL }, 2, "a store command is required" },
		{ { "put" }, 2, "a file:///DIR is required" },
		{ { "put", url, url }, 2, "unexpected argument" },
		{ { "put", url, "--tag" }, 2, "unexpected argument" },
		{ { "put", url, "--tag", "" }, 2, "bad tag name" },
		{ { "put", "http://example.com/snap" }, 1, "unsupported URL scheme" },
		{ { "put", "store://t" }, 1, "file:///DIR" },
		{ { "put", "/tmp/snap" }, 1, "not a URL" },
		{ { "put", "file://" }, 1, "bad path" },
		{ { "put", nourl }, 1, "nonexistent" },
		{ { "put", fileurl }, 1, "not a directory" },
		{ { "put", damurl }, 1, "checksum mismatch" },
		{ { "export" }, 2, "REF and file:///DIR are required" },
		{ { "export", "t" }, 2, "REF and file:///DIR are required" },
		{ { "export", "t", dsturl, "x" }, 2, "REF and file:///DIR are required" },
		{ { "export", "nosuch", dsturl }, 1, "no tag nosuch" },
		{ { "export", "t", "http://x/y" }, 1, "unsupported URL scheme" },
		{ { "export", "t", dst }, 1, "not a URL" },
		{ { "export", "t", fullurl }, 1, "not empty" },
		{ { "export", "t", fileurl }, 1, "not a directory" },
		{ { "show" }, 2, "REF is required" },
		{ { "show", "t", "t" }, 2, "REF is required" },
		{ { "show", "nosuch" }, 1, "no tag nosuch" },
		{ { "tag", "t" }, 2, "REF and NAME are required" },
		{ { "tag", "nosuch", "x" }, 1, "no tag nosuch" },
		{ { "tag", "t", "bad name" }, 2, "bad tag name" },
		{ { "rm" }, 2, "REF is required" },
		{ { "rm", "nosuch" }, 1, "no tag nosuch" },
		{ { "rm", "abc" }, 1, "no snapshot abc" },
		{ { "rm", "xyz" }, 1, "no tag xyz" },
		{ { "ls", "x" }, 2, "ls takes no argument" },
		{ { "du", "x" }, 2, "du takes no argument" },
		{ { "verify", "a", "b" }, 2, "at most one REF" },
		{ { "verify", "nosuch" }, 1, "no tag nosuch" },
		{ { "gc", "--image-budget", "lots" }, 2, "needs a size" },
		{ { "gc", "--image-budget" }, 2, "unexpected argument" },
		{ { "gc", "now" }, 2, "unexpected argument" },
		{ { "init", "--chunk-size", "big" }, 2, "needs a size" },
		{ { "init", "--bogus" }, 2, "unexpected argument" },
	};
	char *before = store_state(), *full_before = names_of(full);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct cli_case *c = &cases[i];
		const char *args[12] = { "--store", e.root, "store" };
		char line[512] = "store";
		int n = 3;
		for (int k = 0; c->args[k]; k++) {
			args[n++] = c->args[k];
			snprintf(line + strlen(line), sizeof(line) - strlen(line), " %s",
				 c->args[k]);
		}
		args[n] = NULL;
		int st = run_argv(&out, &er, args);
		cr_assert_eq(st, c->status, "forkctl %s: exit %d, expected %d; stderr:\n%s", line,
			     st, c->status, er);
		cr_assert_not_null(strstr(er, c->needle), "forkctl %s: stderr lacks '%s':\n%s",
				   line, c->needle, er);
		cr_assert_str_eq(out, "", "forkctl %s printed on stdout:\n%s", line, out);
		if (c->status == 2)
			cr_assert_not_null(strstr(er, "usage: forkctl"),
					   "forkctl %s: no usage:\n%s", line, er);
		char *now = store_state();
		cr_assert_str_eq(now, before, "forkctl %s changed the store", line);
		free(now);
		free(out);
		free(er);
	}
	/* the refused destinations are untouched */
	char *full_after = names_of(full);
	cr_assert_str_eq(full_after, full_before);
	char *k = h_read_file(keep);
	cr_assert_str_eq(k, "precious");
	free(k);
	cr_assert_not(exists(dst));
	char *names = names_of(e.dir);
	cr_assert_eq(h_count(names, ".tmp"), 0, "%s", names);
	free(names);

	/* global options */
	const char *both[] = {"--store", e.root, "--api-socket=/nonexistent", "store", "ls", NULL};
	cr_assert_eq(run_argv(&out, &er, both), 2);
	cr_assert_not_null(strstr(er, "drop --api-socket"), "%s", er);
	free(out);
	free(er);
	const char *notstore[] = { "--store", e.root, "--api-socket=/nonexistent", "ping", NULL };
	cr_assert_eq(run_argv(&out, &er, notstore), 2);
	cr_assert_not_null(strstr(er, "--store applies to store commands only"), "%s", er);
	free(out);
	free(er);
	const char *empty[] = { "--store", "", "store", "ls", NULL };
	cr_assert_eq(run_argv(&out, &er, empty), 2);
	cr_assert_not_null(strstr(er, "--store needs a directory"), "%s", er);
	free(out);
	free(er);
	const char *help[] = { "store", "help", NULL };
	cr_assert_eq(run_argv(&out, &er, help), 0);
	cr_assert_not_null(strstr(out, "put file:///DIR"), "%s", out);
	free(out);
	free(er);

	/* Stores that do not exist are not created by failing commands. */
	char *fresh = in_dir("fresh");
	const char *const *fresh_cases[] = {
	    (const char *const[]){"--store", fresh, "store", "ls", NULL},
	    (const char *const[]){"--store", fresh, "store", "frobnicate", NULL},
	    (const char *const[]){"--store", fresh, "store", "put", NULL},
	    (const char *const[]){"--store", fresh, "store", "put", url, "--tag", "a b", NULL},
	    (const char *const[]){"--store", fresh, "store", "init", "--chunk-size", "3K", NULL},
	    (const char *const[]){"--store", fresh, "store", "init", "--chunk-size", "128M", NULL},
	    (const char *const[]){"--store", fresh, "store", "init", "--chunk-size", "2K", NULL},
	};
	static const int fresh_status[] = { 1, 2, 2, 2, 2, 2, 2 }; /* bad sizes: usage errors */
	for (size_t i = 0; i < ARRAY_SIZE(fresh_cases); i++) {
		int st = run_argv(&out, &er, fresh_cases[i]);
		cr_assert_eq(st, fresh_status[i], "case %zu: exit %d: %s", i, st, er);
		cr_assert_neq(er[0], '\0', "case %zu: no message", i);
		cr_assert_not(exists(fresh), "case %zu (%s %s) created the store", i,
			      fresh_cases[i][3], fresh_cases[i][4] ? fresh_cases[i][4] : "");
		free(out);
		free(er);
	}
	free(fresh);
	free(full_before);
	free(full_after);
	free(before);
	free(dst);
	free(dsturl);
	free(keep);
	free(full);
	free(fullurl);
	free(dstate);
	free(damaged);
	free(damurl);
	free(nourl);
	free(fileurl);
	free(plainfile);
	free(url);
	free(da);
	img_free(&m);
}

/* Issue 15, failure 3: a config.json that is not JSON used to pass as an
 * allowed edit (its checksum differs) and fail only at restore. store put
 * now refuses it, with the reason, and the store holds nothing of it; the
 * same directory with a valid config goes in. */
Test(store, put_refuses_a_config_that_is_not_json)
{
	struct img m = varied_memory();
	char *src = write_dir("badcfg", &m, 1), *cfg = h_fmt("%s/config.json", src);
	char err[512] = "";
	struct store_id id;
	struct store_put_stats s;
	FILE *f = fopen(cfg, "w");
	cr_assert_not_null(f);
	fputs("this is not { JSON", f);
	fclose(f);
	int rc = store_put_dir(open_store(CS), src, "bad", &id, &s, err, sizeof(err));
	cr_assert_eq(rc, -EINVAL, "put of a non-JSON config: %d %s", rc, err);
	cr_assert(strstr(err, "config.json is not a JSON object"), "%s", err);
	struct store_id none;
	cr_assert_lt(store_resolve(open_store(CS), "bad", &none, err, sizeof(err)), 0,
		     "a tag was left for the refused snapshot");
	/* an edit that is JSON (a valid object) is still the caller's to judge */
	f = fopen(cfg, "w");
	cr_assert_not_null(f);
	fputs("{\"kernel\": \"/opt/forkvm/agent\"}", f);
	fclose(f);
	(void)put(src, "edited", NULL);
	free(cfg);
	free(src);
	img_free(&m);
}

/* Issue 15, failure 4: a manifest of a newer format version says so, not
 * "malformed". The snapshot is made by hand: the manifest of a real one
 * with "version": 2, stored as an object and committed. */
Test(store, a_newer_manifest_version_says_so)
{
	struct img m = varied_memory();
	char *src = write_dir("v2", &m, 1), err[512] = "";
	struct store_id id = put(src, NULL, NULL), id2;
	struct store *st = open_store(CS);
	char *text = NULL;
	size_t len = 0;
	cr_assert_eq(store_read_object(st, &id, &text, &len, err, sizeof(err)), 0, "%s", err);
	json_t *j = json_loadb(text, len, 0, NULL);
	cr_assert_not_null(j);
	json_object_set_new(j, "version", json_integer(3));
	char *v2 = json_dumps(j, JSON_COMPACT);
	cr_assert_eq(st_obj_put(st, v2, strlen(v2), &id2, err, sizeof(err)), 0, "%s", err);
	char *snaps = h_fmt("%s/snapshots", e.root);
	free(ut_write_file(snaps, H(&id2).s, "", 0));
	struct st_manifest man;
	int rc = st_manifest_read(st, &id2, &man, err, sizeof(err));
	cr_assert_eq(rc, -EPROTONOSUPPORT, "%d %s", rc, err);
	cr_assert(strstr(err, "manifest version 3 is newer than this forkvm's 2"), "%s", err);
	free(snaps);
	free(v2);
	json_decref(j);
	free(text);
	free(src);
	img_free(&m);
}

/* Issue 15, failure 4: a manifest whose chunk size is not the store's, or
 * whose memory size is not whole pages, says so, not "chunk corrupt" when
 * its chunks are read. Made by hand as above. */
static void keep_problem(void *arg, const char *problem)
{
	snprintf(arg, 512, "%s", problem);
}

static void edited_manifest_refused(const char *name, const char *key, json_int_t value,
				    const char *needle)
{
	struct img m = varied_memory();
	char *src = write_dir(name, &m, 1), err[512] = "";
	struct store_id id = put(src, NULL, NULL), id2;
	struct store *st = open_store(CS);
	char *text = NULL;
	size_t len = 0;
	cr_assert_eq(store_read_object(st, &id, &text, &len, err, sizeof(err)), 0, "%s", err);
	json_t *j = json_loadb(text, len, 0, NULL);
	cr_assert_not_null(j);
	json_object_set_new(json_object_get(j, "memory"), key, json_integer(value));
	char *edited = json_dumps(j, JSON_COMPACT);
	cr_assert_eq(st_obj_put(st, edited, strlen(edited), &id2, err, sizeof(err)), 0, "%s", err);
	char *snaps = h_fmt("%s/snapshots", e.root);
	free(ut_write_file(snaps, H(&id2).s, "", 0));
	struct st_manifest man;
	int rc = st_manifest_read(st, &id2, &man, err, sizeof(err));
	cr_assert_eq(rc, -EBADMSG, "%d %s", rc, err);
	cr_assert(strstr(err, needle), "%s", err);
	/* and verify, which reads it the same way, reports it */
	char problem[512] = "";
	rc = store_verify(st, &id2, keep_problem, problem, err, sizeof(err));
	cr_assert_gt(rc, 0, "verify passed an edited manifest (%d %s)", rc, err);
	cr_assert(strstr(problem, needle), "%s", problem);
	free(snaps);
	free(edited);
	json_decref(j);
	free(text);
	free(src);
	img_free(&m);
}

Test(store, a_chunk_size_unlike_the_stores_says_so)
{
	edited_manifest_refused("cs", "chunk_size", CS * 2, "is not this store's");
}

Test(store, a_memory_size_of_no_whole_pages_says_so)
{
	edited_manifest_refused("unal", "size", 4096 * 3 + 100, "not a multiple of the 4096-byte page");
}

/* Issue 15, failure 4: deleted object fan-out directories (objects/xx)
 * are made again by the next put, instead of failing it. */
Test(store, a_put_remakes_deleted_fan_out_directories)
{
	struct img m = varied_memory();
	char *src = write_dir("fan", &m, 1), err[512] = "";
	struct store *st = open_store(CS);
	for (unsigned i = 0; i < 256; i++) {
		char *d = h_fmt("%s/objects/%02x", e.root, i);
		cr_assert_eq(rmdir(d), 0, "%s: %s", d, strerror(errno));
		free(d);
	}
	struct store_id id = put(src, "fan", NULL);
	cr_assert_eq(store_verify(st, &id, NULL, NULL, err, sizeof(err)), 0, "%s", err);
	char *d = h_fmt("%s/objects/ff", e.root);
	cr_assert_eq(access(d, F_OK), 0, "objects/ff was not made again");
	free(d);
	free(src);
	img_free(&m);
}

/* Every store command takes --json and prints one line of JSON with the
 * documented fields (docs/store-format.md), before or after its words. */
static json_t *ctl_json(int want, const char *a1, const char *a2, const char *a3)
{
	char *out = NULL, *er = NULL;
	int st = ctl(&out, &er, a1, "--json", a2, a3, NULL);
	cr_assert_eq(st, want, "store %s --json: %d %s", a1, st, er);
	json_error_t je;
	json_t *j = json_loads(out, 0, &je);
	cr_assert_not_null(j, "store %s --json printed no JSON line: '%s' (%s)", a1, out, je.text);
	cr_assert_eq(h_count(out, "\n"), 1, "one line: '%s'", out);
	free(out);
	free(er);
	return j;
}

Test(store, every_store_command_speaks_json)
{
	struct img m = varied_memory();
	char *src = write_dir("js", &m, 1), *url = h_fmt("file://%s", src), *dst = in_dir("js-out"),
	     *durl = h_fmt("file://%s", dst);
	(void)open_store(CS);
	json_t *put = ctl_json(0, "put", url, NULL);
	const char *id = json_string_value(json_object_get(put, "id"));
	cr_assert(id && strlen(id) == 32);
	cr_assert_eq(json_integer_value(json_object_get(put, "data_chunks")), 13);
	json_t *j = ctl_json(0, "ls", NULL, NULL);
	const json_t *snaps = json_object_get(j, "snapshots");
	cr_assert_eq(json_array_size(snaps), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(snaps, 0), "id")), id);
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(snaps, 0), "memory_size")),
		     (json_int_t)m.size);
	json_decref(j);
	j = ctl_json(0, "tag", id, "js1");
	cr_assert_str_eq(json_string_value(json_object_get(j, "tag")), "js1");
	json_decref(j);
	j = ctl_json(0, "show", "js1", NULL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "id")), id);
	json_decref(j);
	j = ctl_json(0, "export", "js1", durl);
	cr_assert_str_eq(json_string_value(json_object_get(j, "id")), id);
	json_decref(j);
	j = ctl_json(0, "verify", NULL, NULL);
	cr_assert(json_is_true(json_object_get(j, "intact")));
	json_decref(j);
	j = ctl_json(0, "du", NULL, NULL);
	cr_assert_eq(json_integer_value(json_object_get(j, "snapshots")), 1);
	json_decref(j);
	j = ctl_json(0, "rm", "js1", NULL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "removed")), id);
	json_decref(j);
	j = ctl_json(0, "gc", NULL, NULL);
	cr_assert_gt(json_integer_value(json_object_get(j, "objects_removed")), 0);
	json_decref(j);
	json_decref(put);
	free(src);
	free(url);
	free(dst);
	free(durl);
	img_free(&m);
}

/* Issue 15, failure 4: with its commit marker deleted, a snapshot is gone
 * for every command alike: ls does not list it, and its tag no longer
 * resolves for export or restore (it used to, while ls called it gone). */
Test(store, a_snapshot_without_its_commit_marker_is_gone_for_everyone)
{
	struct img m = varied_memory();
	char *src = write_dir("nomark", &m, 1), err[512] = "", *dst = in_dir("nomark-out");
	struct store_id id = put(src, "nomark", NULL), got;
	char *marker = h_fmt("%s/snapshots/%s", e.root, H(&id).s);
	cr_assert_eq(unlink(marker), 0, "%s: %s", marker, strerror(errno));
	int rc = store_resolve(open_store(CS), "nomark", &got, err, sizeof(err));
	cr_assert_eq(rc, -ENOENT, "%d %s", rc, err);
	cr_assert(strstr(err, "not committed"), "%s", err);
	char *out = NULL, *er = NULL, *url = h_fmt("file://%s", dst);
	cr_assert_eq(ctl(&out, &er, "export", "nomark", url, NULL), 1, "%s", er);
	free(out);
	free(er);
	cr_assert_eq(ctl(&out, &er, "ls", NULL), 0);
	char short_id[13];
	snprintf(short_id, sizeof(short_id), "%.12s", H(&id).s);
	cr_assert_null(strstr(out, short_id), "ls lists it: %s", out);
	free(out);
	free(er);
	free(url);
	free(marker);
	free(src);
	free(dst);
	img_free(&m);
}

/* Issue 15, failure 4: a cached image written in place (same size) is
 * not used either: its modification time gives it away. */
Test(store, a_cached_image_written_in_place_is_made_again)
{
	struct img m = varied_memory();
	char *src = write_dir("written", &m, 1), err[512] = "";
	struct store_id id = put(src, NULL, NULL);
	struct store_snapshot s;
	cr_assert_eq(store_load(open_store(CS), &id, &s, err, sizeof(err)), 0, "%s", err);
	store_snapshot_free(&s);
	char *img = h_fmt("%s/images/%s.img", e.root, H(&id).s);
	flip_byte(img, (off_t)(3 * CS + 100));
	cr_assert_eq(store_load(open_store(CS), &id, &s, err, sizeof(err)), 0, "%s", err);
	assert_file_is(s.mem_fd, &m); /* not the written image */
	store_snapshot_free(&s);
	/* an image left alone is reused, not made again */
	struct stat before, after;
	cr_assert_eq(stat(img, &before), 0);
	cr_assert_eq(store_load(open_store(CS), &id, &s, err, sizeof(err)), 0, "%s", err);
	store_snapshot_free(&s);
	cr_assert_eq(stat(img, &after), 0);
	cr_assert_eq(before.st_ino, after.st_ino, "an unchanged image was made again");
	free(img);
	free(src);
	img_free(&m);
}

/* Issue 15, failure 4: a damaged (truncated) cached image is not used: the
 * next load makes it again from the objects. */
Test(store, a_truncated_cached_image_is_made_again)
{
	struct img m = varied_memory();
	char *src = write_dir("trunc", &m, 1), err[512] = "";
	struct store_id id = put(src, NULL, NULL);
	struct store_snapshot s;
	cr_assert_eq(store_load(open_store(CS), &id, &s, err, sizeof(err)), 0, "%s", err);
	store_snapshot_free(&s);
	char *img = h_fmt("%s/images/%s.img", e.root, H(&id).s);
	cr_assert_eq(truncate(img, 4096), 0, "%s: %s", img, strerror(errno));
	cr_assert_eq(store_load(open_store(CS), &id, &s, err, sizeof(err)), 0,
		     "a truncated image failed the load: %s", err);
	/* its size and bytes are the snapshot's again */
	assert_file_is(s.mem_fd, &m);
	store_snapshot_free(&s);
	free(img);
	free(src);
	img_free(&m);
}

/* ============================================================ disks */

/* A disk of a test snapshot: its bytes in m (size m.size). */
struct tdisk {
	const char *device;
	struct img m;
	bool readonly;
};

struct tdisks {
	const struct tdisk *d;
	unsigned n;
};

/* snap_meta.extra_files: each disk as "disk-vdX", sparse (only its
 * non-zero pages written), with its entry, as the VMM's capture does. */
static int write_disks(void *arg, int dfd, json_t *files, char *err, size_t errlen)
{
	const struct tdisks *t = arg;
	for (unsigned i = 0; i < t->n; i++) {
		const struct tdisk *d = &t->d[i];
		char name[16];
		snprintf(name, sizeof(name), "disk-%s", d->device);
		int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)d->m.size) < 0)
			return err_fail(err, errlen, -EIO, "cannot write %s", name);
		for (uint64_t off = 0; off < d->m.size; off += P) {
			size_t n = (size_t)MIN(P, d->m.size - off);
			if (!all_zero(d->m.p + off, n) &&
			    pwrite(fd, d->m.p + off, n, (off_t)off) != (ssize_t)n)
				return err_fail(err, errlen, -EIO, "cannot write %s", name);
		}
		fsync(fd);
		close(fd);
		json_object_set_new(files, name,
				    json_pack("{s:s,s:I,s:s,s:b}", "kind", "disk", "size",
					      (json_int_t)d->m.size, "device", d->device, "readonly",
					      d->readonly));
	}
	return 0;
}

/* Writes a snapshot directory e.dir/name of memory m and the disks. */
static char *write_dir_disks(const char *name, const struct img *m, int gen, const struct tdisk *d,
			     unsigned n)
{
	char *dir = in_dir(name), err[512] = "";
	json_t *cfg = test_config(m->size), *units = test_units(gen);
	struct store_mem sm = { .base = m->p, .size = m->size };
	struct tdisks t = { d, n };
	struct snap_meta meta = { .loader = "linux", .vcpus = 1, .memory_size = m->size,
				  .extra_files = write_disks, .extra_arg = &t };
	int rc = snapdir_write(dir, cfg, units, &sm, &meta, err, sizeof(err));
	cr_assert_eq(rc, 0, "snapdir_write(%s): %d %s", dir, rc, err);
	json_decref(cfg);
	json_decref(units);
	return dir;
}

/* The manifest's disk entry of device (NULL if none), borrowed from man. */
static json_t *disk_entry(json_t *man, const char *device)
{
	size_t i;
	json_t *d;
	json_array_foreach (json_object_get(man, "disks"), i, d)
		if (!strcmp(json_string_value(json_object_get(d, "device")), device))
			return d;
	return NULL;
}

/* The object id (hex, malloc'd) of chunk c of disk device of snapshot id;
 * NULL if that chunk is not stored (zero). */
static char *disk_chunk_hex(const struct store_id *id, const char *device, uint64_t c)
{
	json_t *m = manifest_of(id), *v;
	json_t *d = disk_entry(m, device);
	char *r = NULL;
	size_t i;
	cr_assert_not_null(d, "snapshot %s has no disk %s", H(id).s, device);
	json_array_foreach (json_object_get(d, "chunks"), i, v)
		if ((uint64_t)json_integer_value(json_array_get(v, 0)) == c)
			r = strdup(json_string_value(json_array_get(v, 1)));
	json_decref(m);
	return r;
}

/* An fd's bytes equal img d (and its size). */
static void assert_disk_is(int fd, const struct img *d)
{
	struct stat s;
	cr_assert_eq(fstat(fd, &s), 0);
	cr_assert_eq((uint64_t)s.st_size, d->size, "disk of %lld bytes, expected %llu",
		     (long long)s.st_size, (unsigned long long)d->size);
	uint8_t *buf = malloc(CS);
	for (uint64_t off = 0; off < d->size; off += CS) {
		size_t n = (size_t)MIN(CS, d->size - off);
		cr_assert_eq(pread(fd, buf, n, (off_t)off), (ssize_t)n);
		if (memcmp(buf, d->p + off, n))
			cr_assert_fail("the disk differs in its chunk %llu", (unsigned long long)(off / CS));
	}
	free(buf);
}

/* Disk vda: 8 MiB and 5 sectors (its last chunk partial, not whole
 * pages): random chunk 0, text in chunk 3, a run across chunks 6..7, a
 * byte in the middle of chunk 100, the last sector; the rest holes. Disk
 * vdb, read-only: 1 MiB of zeros. */
static void two_disks(struct tdisk d[2])
{
	d[0] = (struct tdisk){ "vda", img_new(8 * MiB + 5 * 512), false };
	fill_random(d[0].m.p, CS, 201);
	fill_text(d[0].m.p + 3 * CS + 2 * P, 3 * P, 202);
	fill_random(d[0].m.p + 6 * CS + 60 * KiB, 8 * KiB, 203);
	d[0].m.p[100 * CS + 12345] = 0x42;
	memset(d[0].m.p + d[0].m.size - 512, 0xd5, 512);
	d[1] = (struct tdisk){ "vdb", img_new(1 * MiB), true };
}

/* A directory with disks: put, its manifest (version 2, each disk's
 * non-zero chunks), exported byte for byte (holes kept), loaded (each
 * disk materialized like memory: read-only, sparse, share-locked, made
 * once). */
Test(store, disks_put_export_and_load_byte_for_byte)
{
	struct img m = varied_memory();
	struct tdisk d[2];
	two_disks(d);
	char *src = write_dir_disks("src", &m, 1, d, 2), *dst = in_dir("exported");
	struct store_put_stats s;
	struct store_id id = put(src, "d", &s);

	/* vda: chunks 0, 3, 6, 7, 100, 128 (the partial last one) */
	cr_assert_eq(s.disk_data_chunks, 6, "disk chunks %llu", (unsigned long long)s.disk_data_chunks);
	cr_assert_eq(s.disk_new_chunks, 6);
	cr_assert_eq(s.data_chunks, 13 + 6);
	cr_assert_eq(s.disk_bytes, d[0].m.size + d[1].m.size);
	cr_assert_eq(s.logical_bytes, m.size + s.disk_bytes);
	json_t *man = manifest_of(&id);
	cr_assert_eq(json_integer_value(json_object_get(man, "version")), 2);
	cr_assert_eq(json_array_size(json_object_get(man, "disks")), 2);
	json_t *da = disk_entry(man, "vda"), *db = disk_entry(man, "vdb");
	cr_assert_eq(json_integer_value(json_object_get(da, "size")), (json_int_t)d[0].m.size);
	cr_assert(json_is_false(json_object_get(da, "readonly")));
	cr_assert(json_is_true(json_object_get(db, "readonly")));
	cr_assert_eq(json_array_size(json_object_get(da, "chunks")), 6);
	cr_assert_eq(json_array_size(json_object_get(db, "chunks")), 0, "a zero disk costs nothing");
	json_decref(man);
	char *last = disk_chunk_hex(&id, "vda", 128), *lp = obj_path(last);
	cr_assert_eq(read_hdr(lp).raw, 5 * 512, "the partial last chunk holds the disk's tail");
	free(last);
	free(lp);

	export_to(&id, dst);
	assert_same_dir_disks(src, dst, "disk-vda/disk-vdb/");
	struct snapdir sd;
	char err[512] = "";
	cr_assert_eq(snapdir_open(dst, &sd, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(sd.nr_disks, 2);
	cr_assert_str_eq(sd.disks[0].device, "vda");
	cr_assert_eq(sd.disks[0].size, d[0].m.size);
	cr_assert(sd.disks[1].readonly);
	snapdir_close(&sd);
	/* the same directory again: nothing new */
	struct store_id again = put(src, NULL, &s);
	cr_assert(store_id_equal(&id, &again));
	cr_assert_eq(s.new_chunks, 0);

	/* Loaded: memory and each disk as their own image. */
	struct store_snapshot a, b;
	char *img = h_fmt("%s/images/%s-vda.img", e.root, H(&id).s);
	load(&id, &a);
	cr_assert_eq(a.nr_disks, 2);
	cr_assert_str_eq(a.disks[0].disk.device, "vda");
	cr_assert_str_eq(a.disks[1].disk.device, "vdb");
	cr_assert(a.disks[1].disk.readonly);
	assert_file_is(a.mem_fd, &m);
	assert_disk_is(a.disks[0].fd, &d[0].m);
	assert_disk_is(a.disks[1].fd, &d[1].m);
	cr_assert_eq(fcntl(a.disks[0].fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	char *src_vda = h_fmt("%s/disk-vda", src), *ext = extents_of(img), *want = extents_of(src_vda);
	cr_assert_str_eq(ext, want, "the disk image is as sparse as the disk");
	free(ext);
	free(want);
	struct stat sa, sb;
	cr_assert_eq(fstat(a.disks[0].fd, &sa), 0);
	cr_assert_eq(sa.st_mode & 0777, 0400);
	h_sleep_ms(20);
	load(&id, &b);
	cr_assert_eq(fstat(b.disks[0].fd, &sb), 0);
	cr_assert_eq(sa.st_ino, sb.st_ino, "made again");
	int fd = open(img, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), -1, "an open disk image is not share-locked");
	store_snapshot_free(&a);
	store_snapshot_free(&b);
	cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0, "still locked after both were freed");
	close(fd);
	assert_empty("tmp");
	assert_verify_clean();

	free(src_vda);
	free(img);
	free(src);
	free(dst);
	img_free(&d[0].m);
	img_free(&d[1].m);
	img_free(&m);
}

/* A snapshot put live with disks (as a VM's store:// snapshot is), one of
 * them read through its read function: export writes the snapshot.json
 * its files call for, the disks' entries included. */
static int img_read(void *arg, uint64_t off, void *buf, size_t len)
{
	const struct img *m = arg;
	memcpy(buf, m->p + off, len);
	return 0;
}

Test(store, live_snapshot_with_disks_exports_a_valid_directory)
{
	struct img m = varied_memory();
	struct tdisk d[2];
	two_disks(d);
	json_t *cfg = test_config(m.size), *units = test_units(5);
	struct store_mem sm = { .base = m.p, .size = m.size };
	struct store_mem dm[2] = { { .size = d[0].m.size, .read = img_read, .arg = &d[0].m },
				   { .base = d[1].m.p, .size = d[1].m.size } };
	struct store_disk_in din[2] = {
		{ .disk = { "vda", d[0].m.size, false }, .data = &dm[0] },
		{ .disk = { "vdb", d[1].m.size, true }, .data = &dm[1] },
	};
	struct snap_meta meta = { .loader = "linux", .vcpus = 1, .memory_size = m.size };
	struct store_snapshot_in in = { .config = cfg, .units = units, .meta = &meta, .mem = &sm,
					.disks = din, .nr_disks = 2 };
	struct store_id id;
	struct store_put_stats s;
	char err[512] = "";
	cr_assert_eq(store_put_snapshot(open_store(CS), &in, "live", &id, &s, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(s.disk_data_chunks, 6);
	char *dst = in_dir("x"), *src = write_dir_disks("src", &m, 5, d, 2);
	export_to(&id, dst);
	struct snapdir sd;
	cr_assert_eq(snapdir_open(dst, &sd, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(sd.nr_disks, 2);
	json_t *ent = json_object_get(json_object_get(sd.manifest, "files"), "disk-vdb");
	cr_assert_str_eq(json_string_value(json_object_get(ent, "kind")), "disk");
	cr_assert(json_is_true(json_object_get(ent, "readonly")));
	snapdir_close(&sd);
	for (int i = 0; i < 2; i++) {
		char *pa = h_fmt("%s/disk-%s", src, d[i].device), *pb = h_fmt("%s/disk-%s", dst, d[i].device);
		assert_same_file(pa, pb);
		assert_same_extents(pa, pb);
		free(pa);
		free(pb);
	}
	/* Disks in two regions of bad shape are refused before anything. */
	din[0].disk.size++;
	cr_assert_eq(store_put_snapshot(open_store(CS), &in, NULL, &id, &s, err, sizeof(err)), -EINVAL);
	din[0].disk.size--;
	snprintf(din[1].disk.device, sizeof(din[1].disk.device), "vda");
	cr_assert_eq(store_put_snapshot(open_store(CS), &in, NULL, &id, &s, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "disk 1"), "%s", err);
	assert_empty("tmp");
	free(src);
	free(dst);
	json_decref(cfg);
	json_decref(units);
	img_free(&d[0].m);
	img_free(&d[1].m);
	img_free(&m);
}

/* A second snapshot whose disk differs in one 4 KiB block adds one disk
 * chunk (and its snapshot.json and manifest): every other disk chunk is
 * the first snapshot's object. */
Test(store, disk_dedup_one_changed_block_adds_one_chunk)
{
	struct img m = img_new(4 * MiB);
	fill_random(m.p, CS, 210);
	struct tdisk d = { "vda", img_new(32 * MiB), false };
	fill_random(d.m.p, 8 * MiB, 211); /* chunks 0..127 */
	char *a = write_dir_disks("a", &m, 1, &d, 1);
	struct store_put_stats s;
	struct store_id ia = put(a, "a", &s);
	cr_assert_eq(s.disk_new_chunks, 128);
	int objs_a = count_objects();

	fill_random(d.m.p + 77 * CS + 3 * P, P, 212); /* one block of chunk 77 */
	char *b = write_dir_disks("b", &m, 1, &d, 1);
	struct store_id ib = put(b, "b", &s);
	cr_assert_eq(s.disk_data_chunks, 128);
	cr_assert_eq(s.disk_new_chunks, 1, "disk chunks new: %llu", (unsigned long long)s.disk_new_chunks);
	cr_assert_eq(s.new_chunks, 1);
	cr_assert_eq(s.new_raw_bytes, CS);
	cr_assert_eq(s.reused_chunks, 1 + 127);
	cr_assert_eq(count_objects(), objs_a + 3, "the chunk, snapshot.json and manifest");
	for (uint64_t c = 0; c < 128; c++) {
		char *ha = disk_chunk_hex(&ia, "vda", c), *hb = disk_chunk_hex(&ib, "vda", c);
		if (c == 77)
			cr_assert_str_neq(ha, hb);
		else
			cr_assert_str_eq(ha, hb, "disk chunk %llu", (unsigned long long)c);
		free(ha);
		free(hb);
	}
	cr_log_info("disk dedup: one changed 4 KiB block of a 32 MiB disk (8 MiB of data): "
		    "%llu new chunk, %llu bytes raw, %llu stored",
		    (unsigned long long)s.new_chunks, (unsigned long long)s.new_raw_bytes,
		    (unsigned long long)s.new_stored_bytes);
	/* a memory chunk and a disk chunk alike are one object */
	memcpy(m.p + 10 * CS, d.m.p, CS);
	char *c = write_dir_disks("c", &m, 1, &d, 1);
	put(c, "c", &s);
	cr_assert_eq(s.new_chunks, 0, "the memory chunk is the disk's object");
	/* du counts the disks as logical bytes, their chunks as referenced */
	struct store_du du;
	char err[512] = "";
	cr_assert_eq(store_du(open_store(CS), &du, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(du.logical_bytes, 3 * (m.size + d.m.size));
	cr_assert_geq(du.referenced_bytes, 3 * 128 * CS + 3 * CS);
	free(a);
	free(b);
	free(c);
	img_free(&d.m);
	img_free(&m);
}

/* Incremental: a disk that is the parent's (changed() says which chunks
 * may differ) is read only where it changed; the rest are the parent's
 * objects. A disk of another size, or without changed(), is read whole. */
struct disk_changed {
	uint64_t chunk;
	unsigned calls;
};

static bool one_chunk_changed(void *arg, uint64_t chunk, uint32_t chunk_size)
{
	struct disk_changed *c = arg;
	(void)chunk_size;
	c->calls++;
	return chunk == c->chunk;
}

struct counted_read {
	const struct img *m;
	unsigned reads;
};

static int counted_read(void *arg, uint64_t off, void *buf, size_t len)
{
	struct counted_read *r = arg;
	__atomic_add_fetch(&r->reads, 1, __ATOMIC_RELAXED);
	memcpy(buf, r->m->p + off, len);
	return 0;
}

Test(store, incremental_disk_reads_only_what_changed)
{
	struct img m = varied_memory();
	struct tdisk d = { "vda", img_new(16 * MiB), false };
	fill_random(d.m.p, 4 * MiB, 220); /* chunks 0..63 */
	char *src = write_dir_disks("p", &m, 1, &d, 1);
	struct store_id parent = put(src, "p", NULL);

	/* the "VM" wrote in disk chunk 9 and in chunk 200 (a hole before) */
	fill_random(d.m.p + 9 * CS + 5 * P, P, 221);
	json_t *cfg = test_config(m.size), *units = test_units(2);
	struct store_mem sm = { .base = m.p, .size = m.size };
	struct counted_read cr = { &d.m, 0 };
	struct store_mem dm = { .size = d.m.size, .read = counted_read, .arg = &cr };
	struct disk_changed ch = { 9, 0 };
	struct store_disk_in din = { .disk = { "vda", d.m.size, false }, .data = &dm,
				     .changed = one_chunk_changed, .changed_arg = &ch };
	struct snap_meta meta = { .loader = "linux", .vcpus = 1, .memory_size = m.size };
	struct store_snapshot_in in = { .config = cfg, .units = units, .meta = &meta, .mem = &sm,
					.parent = &parent, .changed = NULL, .disks = &din,
					.nr_disks = 1 };
	struct store_id child;
	struct store_put_stats s;
	char err[512] = "";
	cr_assert_eq(store_put_snapshot(open_store(CS), &in, NULL, &child, &s, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(cr.reads, 1, "%u disk chunks read", cr.reads);
	cr_assert_eq(s.disk_new_chunks, 1);
	cr_assert_eq(s.disk_data_chunks, 64);
	cr_assert_eq(s.new_chunks, 1);
	json_t *man = manifest_of(&child);
	cr_assert_str_eq(json_string_value(json_object_get(man, "parent")), H(&parent).s);
	json_decref(man);
	for (uint64_t c = 0; c < 64; c++) {
		char *hp = disk_chunk_hex(&parent, "vda", c), *hc = disk_chunk_hex(&child, "vda", c);
		if (c == 9)
			cr_assert_str_neq(hp, hc);
		else
			cr_assert_str_eq(hp, hc, "chunk %llu", (unsigned long long)c);
		free(hp);
		free(hc);
	}
	struct store_snapshot ss;
	load(&child, &ss);
	assert_disk_is(ss.disks[0].fd, &d.m);
	store_snapshot_free(&ss);

	/* No changed(): the disk is not said to be the parent's, so it is read
	 * where it has data (every chunk, through read, which knows no holes). */
	cr.reads = 0;
	din.changed = NULL;
	cr_assert_eq(store_put_snapshot(open_store(CS), &in, NULL, &child, &s, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(cr.reads, 256, "%u disk chunks read", cr.reads);
	cr_assert_eq(s.disk_new_chunks, 0);
	cr_assert_eq(s.disk_data_chunks, 64);
	assert_verify_clean();
	json_decref(cfg);
	json_decref(units);
	free(src);
	img_free(&d.m);
	img_free(&m);
}

/* gc: a disk chunk stays while any snapshot uses it and goes with the
 * last; the disks' images go with their snapshot. */
Test(store, gc_keeps_disk_chunks_until_the_last_snapshot_goes)
{
	struct img m = img_new(4 * MiB);
	fill_random(m.p, CS, 230);
	struct tdisk d = { "vda", img_new(4 * MiB), false };
	fill_random(d.m.p, 4 * CS, 231); /* disk chunks 0..3 */
	char *a = write_dir_disks("a", &m, 1, &d, 1);
	fill_random(d.m.p + 2 * CS, P, 232); /* b: disk chunk 2 changed */
	char *b = write_dir_disks("b", &m, 1, &d, 1);
	struct store_id ia = put(a, "a", NULL), ib = put(b, "b", NULL);
	char *a_only = disk_chunk_hex(&ia, "vda", 2), *shared = disk_chunk_hex(&ia, "vda", 0),
	     *b_only = disk_chunk_hex(&ib, "vda", 2);
	char *pa = obj_path(a_only), *ps = obj_path(shared), *pb = obj_path(b_only);
	struct store_snapshot ss;
	load(&ia, &ss);
	store_snapshot_free(&ss);
	char *img_a = h_fmt("%s/images/%s-vda.img", e.root, H(&ia).s);
	cr_assert(exists(img_a));

	char err[512] = "";
	struct store_gc_stats gs;
	cr_assert_eq(store_gc(open_store(CS), UINT64_MAX, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gs.objects_removed, 0, "gc took a referenced disk chunk");
	cr_assert_eq(store_rm(open_store(CS), &ia, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_gc(open_store(CS), UINT64_MAX, &gs, err, sizeof(err)), 0, "%s", err);
	/* a's manifest, its snapshot.json and its own disk chunk */
	cr_assert_eq(gs.objects_removed, 3, "%llu objects removed", (unsigned long long)gs.objects_removed);
	cr_assert_eq(gs.images_removed, 2, "a's memory and disk images");
	cr_assert_not(exists(pa));
	cr_assert(exists(ps), "a disk chunk b still uses went with a");
	cr_assert(exists(pb));
	cr_assert_not(exists(img_a));
	char *eb = in_dir("eb");
	export_to(&ib, eb);
	assert_same_dir_disks(b, eb, "disk-vda/");
	assert_verify_clean();

	cr_assert_eq(store_rm(open_store(CS), &ib, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_gc(open_store(CS), UINT64_MAX, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(count_objects(), 0, "objects left after the last snapshot went");
	cr_assert_not(exists(ps));
	cr_assert_not(exists(pb));
	free(eb);
	free(img_a);
	free(a_only);
	free(shared);
	free(b_only);
	free(pa);
	free(ps);
	free(pb);
	free(a);
	free(b);
	img_free(&d.m);
	img_free(&m);
}

/* An image budget evicts disk images as it does memory images, never one
 * a VM has open, and a later load makes them again. */
Test(store, gc_image_budget_evicts_disk_images_not_open)
{
	struct img m = img_new(4 * MiB);
	fill_random(m.p, CS, 240);
	struct tdisk d = { "vda", img_new(4 * MiB), false };
	fill_random(d.m.p, 2 * CS, 241);
	char *a = write_dir_disks("a", &m, 1, &d, 1);
	struct store_id ia = put(a, "a", NULL);
	struct store_snapshot ss;
	load(&ia, &ss);
	char *img = h_fmt("%s/images/%s-vda.img", e.root, H(&ia).s);
	char err[512] = "";
	struct store_gc_stats gs;
	cr_assert_eq(store_gc(open_store(CS), 0, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gs.images_removed, 0);
	cr_assert_eq(gs.images_in_use, 2);
	cr_assert(exists(img));
	store_snapshot_free(&ss);
	cr_assert_eq(store_gc(open_store(CS), 0, &gs, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gs.images_removed, 2);
	cr_assert_not(exists(img));
	load(&ia, &ss);
	assert_disk_is(ss.disks[0].fd, &d.m);
	store_snapshot_free(&ss);
	free(img);
	free(a);
	img_free(&d.m);
	img_free(&m);
}

/* A damaged disk chunk: load refuses naming the object, the disk and the
 * snapshot, and leaves no image (not even the memory's: all or nothing
 * would be better, but a memory image is a valid cache) and nothing in
 * tmp/; verify reports it once; export fails and leaves no directory. */
static struct store_id disk_snapshot(struct img *m, struct tdisk *d)
{
	*m = img_new(4 * MiB);
	fill_random(m->p, CS, 250);
	*d = (struct tdisk){ "vdb", img_new(4 * MiB), false };
	fill_random(d->m.p + CS, CS, 251); /* stored as is */
	fill_text(d->m.p + 5 * CS, CS, 252); /* compressed */
	char *src = write_dir_disks("src", m, 1, d, 1);
	struct store_id id = put(src, "c", NULL);
	free(src);
	return id;
}

static void expect_broken_disk(const struct store_id *id, const char *obj, int want_rc)
{
	struct store_snapshot ss;
	char err[512] = "";
	int rc = store_load(open_store(CS), id, &ss, err, sizeof(err));
	cr_assert_eq(rc, want_rc, "store_load: %d (%s), expected %d", rc, err, want_rc);
	cr_assert(strstr(err, obj) && strstr(err, "disk vdb") && strstr(err, H(id).s),
		  "the error does not name the object, the disk and the snapshot: %s", err);
	cr_assert_eq(ss.mem_fd, -1);
	cr_assert_eq(ss.nr_disks, 0);
	char *dimg = h_fmt("%s/images/%s-vdb.img", e.root, H(id).s);
	cr_assert_not(exists(dimg), "a disk image was made of a damaged chunk");
	free(dimg);
	assert_empty("tmp");
	struct problems p;
	int n = verify(id, &p);
	cr_assert_eq(n, 1, "verify: %d problems:\n%s", n, p.text);
	cr_assert_eq(count_lines_with(p.text, obj, "of disk vdb"), 1, "verify: %s", p.text);
	free(p.text);
	char *dst = in_dir("export"), *url = h_fmt("file://%s", dst), *out, *er;
	cr_assert_eq(ctl(&out, &er, "export", "c", url, NULL), 1, "export of a broken snapshot");
	cr_assert(strstr(er, obj) && strstr(er, "disk vdb"), "export: %s", er);
	cr_assert_not(exists(dst));
	char *names = names_of(e.dir);
	cr_assert_eq(h_count(names, ".tmp"), 0, "%s", names);
	free(names);
	free(out);
	free(er);
	free(dst);
	free(url);
}

Test(store, corrupt_disk_chunk_gives_a_clear_error)
{
	struct img m;
	struct tdisk d;
	struct store_id id = disk_snapshot(&m, &d);
	char *h1 = disk_chunk_hex(&id, "vdb", 1), *p1 = obj_path(h1);
	char *h5 = disk_chunk_hex(&id, "vdb", 5), *p5 = obj_path(h5);
	cr_assert_eq(read_hdr(p5).codec, 1);
	flip_byte(p1, OBJ_HDR + 777);
	expect_broken_disk(&id, h1, -EBADMSG);
	flip_byte(p1, OBJ_HDR + 777); /* mended */
	assert_verify_clean();
	truncate_to(p5, (off_t)read_hdr(p5).file_size - 1);
	expect_broken_disk(&id, h5, -EBADMSG);
	cr_assert_eq(unlink(p5), 0);
	expect_broken_disk(&id, h5, -ENOENT);
	free(h1);
	free(p1);
	free(h5);
	free(p5);
	img_free(&d.m);
	img_free(&m);
}

/* A cached disk image written in place (its modification time moves) or
 * cut short is made again from the chunks. */
Test(store, a_damaged_cached_disk_image_is_made_again)
{
	struct img m;
	struct tdisk d;
	struct store_id id = disk_snapshot(&m, &d);
	struct store_snapshot ss;
	load(&id, &ss);
	store_snapshot_free(&ss);
	char *img = h_fmt("%s/images/%s-vdb.img", e.root, H(&id).s);
	flip_byte(img, (off_t)(CS + 10));
	struct problems p;
	cr_assert_eq(verify(&id, &p), 1, "%s", p.text);
	cr_assert_eq(count_lines_with(p.text, "image of disk vdb", "differs"), 1, "%s", p.text);
	free(p.text);
	load(&id, &ss);
	assert_disk_is(ss.disks[0].fd, &d.m);
	store_snapshot_free(&ss);
	truncate_to(img, 4096);
	load(&id, &ss);
	assert_disk_is(ss.disks[0].fd, &d.m);
	store_snapshot_free(&ss);
	assert_verify_clean();
	free(img);
	img_free(&d.m);
	img_free(&m);
}

/* Manifests: disks came with version 2; a version 1 manifest naming disks,
 * and malformed disk entries, are refused as malformed. */
static int manifest_edit_rc(const struct store_id *id, void (*edit)(json_t *man), char *err)
{
	struct store *st = open_store(CS);
	json_t *man = manifest_of(id);
	edit(man);
	char *text = json_dumps(man, JSON_COMPACT);
	struct store_id id2;
	cr_assert_eq(st_obj_put(st, text, strlen(text), &id2, err, 512), 0, "%s", err);
	struct st_manifest sm;
	int rc = st_manifest_read(st, &id2, &sm, err, 512);
	if (rc == 0)
		st_manifest_free(&sm);
	free(text);
	json_decref(man);
	return rc;
}

static void edit_v1(json_t *man)
{
	json_object_set_new(man, "version", json_integer(1));
}

static void edit_device(json_t *man)
{
	json_object_set_new(json_array_get(json_object_get(man, "disks"), 0), "device",
			    json_string("sda"));
}

static void edit_order(json_t *man)
{
	json_array_append(json_object_get(man, "disks"),
			  json_array_get(json_object_get(man, "disks"), 0));
}

static void edit_chunk(json_t *man)
{
	json_t *d = json_array_get(json_object_get(man, "disks"), 0);
	json_array_append_new(json_object_get(d, "chunks"), json_pack("[i,s]", 64, H(&(struct store_id){ 0 }).s));
}

static void edit_size(json_t *man)
{
	json_object_set_new(json_array_get(json_object_get(man, "disks"), 0), "size",
			    json_integer((json_int_t)(2ULL << 40)));
}

Test(store, manifests_with_bad_disks_are_refused)
{
	struct img m;
	struct tdisk d;
	struct store_id id = disk_snapshot(&m, &d);
	char err[512] = "";
	cr_assert_eq(manifest_edit_rc(&id, edit_v1, err), -EBADMSG, "%s", err);
	cr_assert(strstr(err, "malformed"), "%s", err);
	cr_assert_eq(manifest_edit_rc(&id, edit_device, err), -EBADMSG, "%s", err);
	cr_assert(strstr(err, "disk entry 0"), "%s", err);
	cr_assert_eq(manifest_edit_rc(&id, edit_order, err), -EBADMSG, "%s", err);
	cr_assert(strstr(err, "disk entry 1"), "%s", err);
	cr_assert_eq(manifest_edit_rc(&id, edit_chunk, err), -EBADMSG, "%s", err);
	cr_assert(strstr(err, "disk vdb"), "%s", err);
	cr_assert_eq(manifest_edit_rc(&id, edit_size, err), -EBADMSG, "%s", err);
	cr_assert(strstr(err, "over 1024 GiB"), "%s", err);
	img_free(&d.m);
	img_free(&m);
}

/* The directory's side: disks are listed in its manifest and checked when
 * it is opened (present, of their size); a put reads them. */
Test(store, disks_of_a_snapshot_directory_are_listed_and_checked)
{
	struct img m = img_new(4 << 20);
	struct tdisk d = { "vda", img_new(8192), false };
	memcpy(d.m.p + 4096, "disk", 4);
	char *dir = write_dir_disks("withdisk", &m, 1, &d, 1), err[512] = "";
	struct snapdir sd;
	cr_assert_eq(snapdir_open(dir, &sd, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(sd.nr_disks, 1);
	cr_assert_str_eq(sd.disks[0].device, "vda");
	cr_assert_eq(sd.disks[0].size, 8192);
	snapdir_close(&sd);

	struct store_id id;
	struct store_put_stats stats;
	cr_assert_eq(store_put_dir(open_store(CS), dir, "d", &id, &stats, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(stats.disk_data_chunks, 1);

	/* a disk cut short, then gone */
	char *disk = h_fmt("%s/disk-vda", dir);
	cr_assert_eq(truncate(disk, 4096), 0);
	cr_assert_eq(snapdir_open(dir, &sd, err, sizeof(err)), -EBADMSG);
	cr_assert(strstr(err, "disk-vda") && strstr(err, "8192"), "%s", err);
	cr_assert_eq(store_put_dir(open_store(CS), dir, "d", &id, &stats, err, sizeof(err)), -EBADMSG);
	cr_assert_eq(unlink(disk), 0);
	cr_assert_eq(snapdir_open(dir, &sd, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "disk-vda"), "%s", err);
	free(disk);
	free(dir);
	img_free(&d.m);
	img_free(&m);
}
