/* tests/unit/test_snapfmt.c - the snapshot directory (docs/snapshot-format.md)
 * without KVM: snapshot_write_dir of a memfd RAM with a few known pages, a
 * configuration and a units array; the files, their modes, the sparse
 * memory file and every checksum recomputed here from the documented
 * definitions; snapshot_open on the result and on damaged copies (each
 * must fail cleanly: a message, a negative errno, no leak under SAN=1);
 * the config.json edits restore accepts and refuses; what snapshot_write_dir
 * refuses and that it never leaves a temporary sibling; store_url_parse;
 * gmem_for_each_populated on memfd RAM and on a copy-on-write file mapping
 * (a restored VM), and a snapshot of such a mapping. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/util.h"
#include "tests/lib/unit.h"
#include "vmm/gmem.h"
#include "vmm/snapshot.h"
#include "vmm/vmm.h"

#define P 4096ULL
#define MEM_SIZE (32 * MiB)
#define NPAGES (MEM_SIZE / P)

static char *root;  /* temporary directory of the test */
static char *snap;  /* root/snap: the snapshot setup() writes */
static struct gmem mem;
static struct vm_config cfg;
static json_t *units;
static const struct snap_meta meta = { .loader = "function-guest", .vcpus = 2,
					    .memory_size = MEM_SIZE };

/* The pages setup() writes (page index -> how). */
#define PG_FULL_FIRST 0       /* every byte non-zero */
#define PG_RUN_START 10       /* 10..12: a run of three pages */
#define PG_REZEROED 100       /* written, then zeroed again: data in the memfd, but zero */
#define PG_LAST_BYTE 200      /* one non-zero byte, the last of the page */
#define PG_FIRST_BYTE 201     /* one non-zero byte, the first of the page */
#define PG_DISCARDED 300      /* written, then gmem_discard */
#define PG_LONG_RUN 1000      /* 1000..1299: a run longer than the writer's 1 MiB chunks */
#define PG_LONG_RUN_LEN 300
#define PG_LAST (NPAGES - 1)  /* the last page of RAM */

static char *path_in(const char *dir, const char *name)
{
	char *p;
	cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

static void fill_page(uint64_t page, uint8_t seed)
{
	uint8_t *p = mem.host + page * P;
	for (uint64_t i = 0; i < P; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 8)) | 1;
}

static void write_pages(void)
{
	fill_page(PG_FULL_FIRST, 1);
	for (int i = 0; i < 3; i++)
		fill_page(PG_RUN_START + i, (uint8_t)(20 + i));
	fill_page(PG_REZEROED, 5);
	memset(mem.host + PG_REZEROED * P, 0, P);
	mem.host[PG_LAST_BYTE * P + P - 1] = 0x80;
	mem.host[PG_FIRST_BYTE * P] = 0x01;
	fill_page(PG_DISCARDED, 9);
	cr_assert_eq(gmem_discard(&mem, PG_DISCARDED * P, P), 0);
	for (int i = 0; i < PG_LONG_RUN_LEN; i++)
		fill_page(PG_LONG_RUN + i, (uint8_t)i);
	fill_page(PG_LAST, 0xee);
}

static json_t *parse(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	cr_assert_not_null(j, "bad JSON: %s", je.text);
	return j;
}

/* The same for a literal written with single quotes. */
static json_t *parse_sq(const char *text)
{
	char *t = strdup(text);

	cr_assert_not_null(t);
	for (char *c = t; *c; c++)
		if (*c == '\'')
			*c = '"';
	json_t *j = parse(t);
	free(t);
	return j;
}

static void write_snap(const char *dir)
{
	char err[512] = "";
	int rc = snapshot_write_dir(dir, &cfg, units, &mem, &meta, err, sizeof(err));
	cr_assert_eq(rc, 0, "snapshot_write_dir(%s): %d %s", dir, rc, err);
}

static void setup(void)
{
	root = ut_tmpdir();
	cr_assert_not_null(root);
	snap = path_in(root, "snap");
	cr_assert_eq(gmem_init(&mem, MEM_SIZE, GMEM_MEMFD), 0);
	write_pages();
	vm_config_init(&cfg);
	cfg.kernel = strdup("/opt/forkvm/payloads/hello");
	cfg.cmdline = strdup("--flag 'two words'");
	cfg.memory_size = MEM_SIZE;
	cfg.boot_vcpus = 2;
	cfg.serial_mode = VM_SERIAL_OFF;
	cfg.agent_socket = strdup("/run/forkvm/agent.sock");
	cfg.hostname = strdup("snaphost");
	units = parse_sq("[{'name':'clock','version':1,'state':{'monotonic_ns':'0x3b9aca00'}},"
			 " {'name':'fguest','version':1,"
			 "  'state':{'next_tid':2,'note':'\\u00e9t\\u00e9'}}]");
	write_snap(snap);
}

static void teardown(void)
{
	json_decref(units);
	vm_config_free(&cfg);
	gmem_fini(&mem);
	ut_rmtree(root);
	free(root);
	free(snap);
}

TestSuite(snapfmt, .init = setup, .fini = teardown);

/* ------------------------------------------------------------ helpers */

/* XXH3-128 as docs/snapshot-format.md writes it: the canonical
 * (big-endian) digest, in lowercase hex. */
static void canonical_hex(XXH128_hash_t h, char out[33])
{
	snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64,
		 (unsigned long long)h.low64);
}

static bool zero_page(const uint8_t *p)
{
	for (uint64_t i = 0; i < P; i++)
		if (p[i])
			return false;
	return true;
}

/* The memory checksum by the documented definition, over RAM as the VM
 * sees it: for each non-zero page, le64(index) then the page. */
static void memory_checksum(const uint8_t *ram, uint64_t size, char hex[33], uint64_t *pages)
{
	XXH3_state_t *st = XXH3_createState();
	cr_assert_not_null(st);
	XXH3_128bits_reset(st);
	*pages = 0;
	for (uint64_t i = 0; i < size / P; i++) {
		if (zero_page(ram + i * P))
			continue;
		uint8_t le[8];
		for (int b = 0; b < 8; b++)
			le[b] = (uint8_t)(i >> (8 * b));
		XXH3_128bits_update(st, le, 8);
		XXH3_128bits_update(st, ram + i * P, P);
		(*pages)++;
	}
	canonical_hex(XXH3_128bits_digest(st), hex);
	XXH3_freeState(st);
}

static uint8_t *read_file(const char *dir, const char *name, size_t *len)
{
	char *p = path_in(dir, name);
	uint8_t *b = ut_read_file(p, len);
	cr_assert_not_null(b, "cannot read %s", p);
	free(p);
	return b;
}

static json_t *load_json(const char *dir, const char *name)
{
	size_t len;
	char *text = (char *)read_file(dir, name, &len);
	json_t *j = parse(text);
	free(text);
	return j;
}

static void save_json(const char *dir, const char *name, const json_t *j)
{
	char *text = json_dumps(j, JSON_INDENT(2));
	char *p;
	cr_assert_not_null(text);
	p = ut_write_file(dir, name, text, strlen(text));
	cr_assert_not_null(p);
	free(p);
	free(text);
}

/* Entries of dir other than . and .. (sorted names joined by '/'). */
static char *listing(const char *dir)
{
	struct dirent **list;
	int n = scandir(dir, &list, NULL, alphasort);
	char *s = strdup("");

	cr_assert_geq(n, 0, "scandir %s", dir);
	for (int i = 0; i < n; i++) {
		if (strcmp(list[i]->d_name, ".") && strcmp(list[i]->d_name, "..")) {
			char *t;
			cr_assert(asprintf(&t, "%s%s/", s, list[i]->d_name) > 0);
			free(s);
			s = t;
		}
		free(list[i]);
	}
	free(list);
	return s;
}

/* True if dir holds an entry ".<name>.tmp-..." (a writer's leftover). */
static bool has_tmp_sibling(const char *dir, const char *name)
{
	char prefix[PATH_MAX];
	struct dirent *e;
	bool found = false;
	DIR *d = opendir(dir);

	cr_assert_not_null(d);
	snprintf(prefix, sizeof(prefix), ".%s.tmp-", name);
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, prefix, strlen(prefix)))
			found = true;
	closedir(d);
	return found;
}

/* ------------------------------------------------------------ writing */

Test(snapfmt, files_and_modes)
{
	struct stat st;
	const char *files[] = { "config.json", "state.json", "memory-ranges", "snapshot.json" };

	cr_assert_eq(stat(snap, &st), 0);
	cr_assert(S_ISDIR(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0700, "the directory is 0700: %o", st.st_mode & 07777);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char *p = path_in(snap, files[i]);
		cr_assert_eq(stat(p, &st), 0, "%s exists", files[i]);
		cr_assert(S_ISREG(st.st_mode));
		cr_assert_eq(st.st_mode & 07777, 0600, "%s is 0600: %o", files[i],
			     st.st_mode & 07777);
		free(p);
	}
	char *l = listing(snap);
	cr_assert_str_eq(l, "config.json/memory-ranges/snapshot.json/state.json/", "nothing else");
	free(l);
	cr_assert(!has_tmp_sibling(root, "snap"), "the temporary directory is gone");
}

Test(snapfmt, memory_ranges_is_sparse_and_exact)
{
	char *p = path_in(snap, "memory-ranges");
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint64_t nonzero = 0;
	char hex[33];

	cr_assert_geq(fd, 0);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq((uint64_t)st.st_size, MEM_SIZE, "exactly the memory size");
	memory_checksum(mem.host, MEM_SIZE, hex, &nonzero);
	cr_assert_eq(nonzero, 1 + 3 + 2 + PG_LONG_RUN_LEN + 1, "the test's own count");
	/* Allocated blocks: about the non-zero pages, not the memory size, and
	 * not the re-zeroed page the memfd still holds. */
	uint64_t alloc = (uint64_t)st.st_blocks * 512;
	cr_assert_geq(alloc, nonzero * P, "%llu bytes allocated", (unsigned long long)alloc);
	cr_assert_leq(alloc, nonzero * P + 16 * P, "%llu bytes allocated for %llu pages",
		      (unsigned long long)alloc, (unsigned long long)nonzero);
	/* The zero pages are holes. */
	off_t h = lseek(fd, PG_REZEROED * P, SEEK_DATA);
	cr_assert_gt(h, (off_t)(PG_REZEROED * P), "the re-zeroed page is a hole");
	h = lseek(fd, PG_DISCARDED * P, SEEK_DATA);
	cr_assert_gt(h, (off_t)(PG_DISCARDED * P), "the discarded page is a hole");

	/* Byte for byte what RAM holds: the written pages, zeros elsewhere. */
	uint8_t *buf = malloc(MEM_SIZE);
	cr_assert_not_null(buf);
	cr_assert_eq(pread(fd, buf, MEM_SIZE, 0), (ssize_t)MEM_SIZE);
	for (uint64_t i = 0; i < NPAGES; i++)
		cr_assert_eq(memcmp(buf + i * P, mem.host + i * P, P), 0, "page %llu differs",
			     (unsigned long long)i);
	cr_assert_eq(buf[PG_LAST_BYTE * P + P - 1], 0x80);
	cr_assert(zero_page(buf + PG_REZEROED * P));
	cr_assert(zero_page(buf + 5000 * P));
	free(buf);
	close(fd);
	free(p);
}

Test(snapfmt, manifest_fields_and_checksums)
{
	json_t *m = load_json(snap, "snapshot.json");
	uint64_t t = time_real_ns();

	cr_assert_str_eq(json_string_value(json_object_get(m, "format")), "forkvm-snapshot");
	cr_assert(json_is_integer(json_object_get(m, "version")));
	cr_assert_eq(json_integer_value(json_object_get(m, "version")), 1);
	cr_assert_str_eq(json_string_value(json_object_get(m, "forkvm_version")), FORKVM_VERSION);
	json_int_t created = json_integer_value(json_object_get(m, "created_realtime_ns"));
	cr_assert_gt(created, 0);
	cr_assert_leq((uint64_t)created, t);
	cr_assert_gt((uint64_t)created, t - 60ULL * 1000000000ULL, "written in the last minute");
	cr_assert_str_eq(json_string_value(json_object_get(m, "loader")), "function-guest");
	cr_assert_eq(json_integer_value(json_object_get(m, "vcpus")), 2);
	const json_t *memory = json_object_get(m, "memory");
	cr_assert_eq(json_integer_value(json_object_get(memory, "size")), (json_int_t)MEM_SIZE);
	cr_assert_eq(json_integer_value(json_object_get(memory, "page_size")), 4096);

	/* "config" is config.json as it was written. */
	json_t *c = load_json(snap, "config.json");
	cr_assert(json_equal(json_object_get(m, "config"), c));
	json_decref(c);

	const json_t *files = json_object_get(m, "files");
	cr_assert(json_is_object(files));
	cr_assert_eq(json_object_size(files), 3);
	const char *small[] = { "config.json", "state.json" };
	for (size_t i = 0; i < ARRAY_SIZE(small); i++) {
		const json_t *e = json_object_get(files, small[i]);
		size_t len;
		uint8_t *b = read_file(snap, small[i], &len);
		char hex[33];
		canonical_hex(XXH3_128bits(b, len), hex);
		cr_assert_eq(json_integer_value(json_object_get(e, "size")), (json_int_t)len,
			     "%s size", small[i]);
		cr_assert_str_eq(json_string_value(json_object_get(e, "xxh3_128")), hex,
				 "%s checksum", small[i]);
		free(b);
	}
	const json_t *mr = json_object_get(files, "memory-ranges");
	char hex[33];
	uint64_t pages;
	memory_checksum(mem.host, MEM_SIZE, hex, &pages);
	cr_assert_eq(json_integer_value(json_object_get(mr, "size")), (json_int_t)MEM_SIZE);
	cr_assert_eq(json_integer_value(json_object_get(mr, "data_pages")), (json_int_t)pages,
		     "data_pages counts the non-zero pages");
	cr_assert_str_eq(json_string_value(json_object_get(mr, "xxh3_128_nonzero_pages")), hex,
			 "the memory checksum follows the documented definition");
	json_decref(m);
}

Test(snapfmt, state_and_config_documents)
{
	json_t *s = load_json(snap, "state.json");
	char err[512] = "";

	cr_assert_str_eq(json_string_value(json_object_get(s, "format")), "forkvm-state");
	cr_assert_eq(json_integer_value(json_object_get(s, "version")), 1);
	cr_assert(json_equal(json_object_get(s, "units"), units), "the units as given");
	json_decref(s);

	json_t *c = load_json(snap, "config.json");
	struct vm_config back;
	cr_assert_eq(vm_config_from_json(c, &back, err, sizeof(err)), 0,
		     "config.json is vm.create's schema: %s", err);
	cr_assert_str_eq(back.kernel, cfg.kernel);
	cr_assert_str_eq(back.cmdline, cfg.cmdline);
	cr_assert_eq(back.memory_size, cfg.memory_size);
	cr_assert_eq(back.boot_vcpus, 2);
	cr_assert_str_eq(back.agent_socket, cfg.agent_socket);
	cr_assert_str_eq(back.hostname, "snaphost");
	cr_assert_eq(back.serial_mode, VM_SERIAL_OFF);
	vm_config_free(&back);
	json_decref(c);
}

Test(snapfmt, open_returns_config_units_and_memory)
{
	struct snapshot s;
	char err[512] = "";
	struct stat st;

	cr_assert_eq(snapshot_open(snap, &s, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(s.cfg.kernel, cfg.kernel);
	cr_assert_str_eq(s.cfg.agent_socket, cfg.agent_socket);
	cr_assert_eq(s.cfg.memory_size, MEM_SIZE);
	cr_assert_eq(s.cfg.boot_vcpus, 2);
	cr_assert(json_equal(s.units, units));
	cr_assert_str_eq(s.loader, "function-guest");
	cr_assert_eq(s.memory_size, MEM_SIZE);
	cr_assert_geq(s.mem_fd, 0);
	cr_assert_eq(fstat(s.mem_fd, &st), 0);
	cr_assert_eq((uint64_t)st.st_size, MEM_SIZE);
	cr_assert_eq(fcntl(s.mem_fd, F_GETFL) & O_ACCMODE, O_RDONLY, "memory is opened read-only");
	cr_assert_not_null(s.manifest);
	snapshot_close(&s);
	cr_assert_eq(s.mem_fd, -1);
	cr_assert_null(s.units);

	/* A trailing slash is fine too. */
	char *slash;
	cr_assert(asprintf(&slash, "%s/", snap) > 0);
	cr_assert_eq(snapshot_open(slash, &s, err, sizeof(err)), 0, "%s", err);
	snapshot_close(&s);
	free(slash);
}

/* ------------------------------------------------------------ damaged copies */

/* snapshot_open must fail with a negative errno, a message containing
 * needle, s holding nothing, and the directory unchanged. */
static void expect_open_fails(int want_rc, const char *needle)
{
	struct snapshot s;
	char err[512] = "";
	char *before = listing(snap);
	int rc = snapshot_open(snap, &s, err, sizeof(err));

	cr_assert_lt(rc, 0, "snapshot_open succeeded although it should fail (%s)", needle);
	if (want_rc)
		cr_assert_eq(rc, want_rc, "rc %d (%s), wanted %d: %s", rc, strerror(-rc), want_rc,
			     err);
	cr_assert_neq(err[0], '\0', "an error message");
	cr_assert_not_null(strstr(err, needle), "the message mentions '%s': %s", needle, err);
	cr_assert_eq(s.mem_fd, -1, "on failure s holds nothing");
	cr_assert_null(s.units);
	cr_assert_null(s.manifest);
	cr_assert_null(s.cfg.kernel);
	char *after = listing(snap);
	cr_assert_str_eq(before, after, "the directory is unchanged");
	free(before);
	free(after);
}

static void expect_open_ok(struct snapshot *s)
{
	char err[512] = "";
	int rc = snapshot_open(snap, s, err, sizeof(err));
	cr_assert_eq(rc, 0, "snapshot_open: %d %s", rc, err);
}

static void remove_file(const char *name)
{
	char *p = path_in(snap, name);
	cr_assert_eq(unlink(p), 0);
	free(p);
}

/* Flips one bit of byte off in file name. */
static void flip_byte(const char *name, off_t off, uint8_t mask)
{
	char *p = path_in(snap, name);
	int fd = open(p, O_RDWR | O_CLOEXEC);
	uint8_t b;

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &b, 1, off), 1);
	b ^= mask;
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
	free(p);
}

static void edit_manifest(void (*fn)(json_t *m))
{
	json_t *m = load_json(snap, "snapshot.json");
	fn(m);
	save_json(snap, "snapshot.json", m);
	json_decref(m);
}

Test(snapfmt, missing_manifest)
{
	remove_file("snapshot.json");
	expect_open_fails(-ENOENT, "snapshot.json");
}

Test(snapfmt, malformed_manifest)
{
	char *p = path_in(snap, "snapshot.json");
	cr_assert_eq(truncate(p, 40), 0);
	free(p);
	expect_open_fails(-EINVAL, "snapshot.json");
}

Test(snapfmt, not_a_directory)
{
	struct snapshot s;
	char err[512] = "";
	char *f = path_in(snap, "config.json");
	char *none = path_in(root, "nothing-here");

	cr_assert_eq(snapshot_open(f, &s, err, sizeof(err)), -ENOTDIR, "%s", err);
	cr_assert_eq(s.mem_fd, -1);
	cr_assert_eq(snapshot_open(none, &s, err, sizeof(err)), -ENOENT, "%s", err);
	cr_assert_not_null(strstr(err, "nothing-here"), "%s", err);
	free(f);
	free(none);
}

static void wrong_format(json_t *m)
{
	json_object_set_new(m, "format", json_string("cloud-hypervisor-snapshot"));
}

Test(snapfmt, wrong_format_name)
{
	edit_manifest(wrong_format);
	expect_open_fails(-EINVAL, "snapshot.json");
}

static void version_2(json_t *m)
{
	json_object_set_new(m, "version", json_integer(2));
}

static void version_0(json_t *m)
{
	json_object_set_new(m, "version", json_integer(0));
}

static void version_string(json_t *m)
{
	json_object_set_new(m, "version", json_string("1"));
}

Test(snapfmt, newer_version)
{
	edit_manifest(version_2);
	expect_open_fails(-EINVAL, "version 2");
}

Test(snapfmt, version_0_and_string_version)
{
	edit_manifest(version_0);
	expect_open_fails(-EINVAL, "version");
	edit_manifest(version_string);
	expect_open_fails(-EINVAL, "snapshot.json");
}

static void drop_state_entry(json_t *m)
{
	json_object_del(json_object_get(m, "files"), "state.json");
}

static void drop_config_entry(json_t *m)
{
	json_object_del(json_object_get(m, "files"), "config.json");
}

static void drop_memory_entry(json_t *m)
{
	json_object_del(json_object_get(m, "files"), "memory-ranges");
}

static void drop_files(json_t *m)
{
	json_object_del(m, "files");
}

static void drop_loader(json_t *m)
{
	json_object_del(m, "loader");
}

Test(snapfmt, missing_files_entries)
{
	edit_manifest(drop_state_entry);
	expect_open_fails(-EINVAL, "state.json");
}

Test(snapfmt, missing_config_entry)
{
	edit_manifest(drop_config_entry);
	expect_open_fails(-EINVAL, "config.json");
}

Test(snapfmt, missing_memory_entry)
{
	edit_manifest(drop_memory_entry);
	expect_open_fails(-EINVAL, "memory-ranges");
}

Test(snapfmt, missing_files_object)
{
	edit_manifest(drop_files);
	expect_open_fails(-EINVAL, "manifest");
}

Test(snapfmt, missing_loader)
{
	edit_manifest(drop_loader);
	expect_open_fails(-EINVAL, "manifest");
}

Test(snapfmt, state_json_one_byte_changed)
{
	size_t len;
	uint8_t *b = read_file(snap, "state.json", &len);
	char *at = strstr((char *)b, "clock");
	cr_assert_not_null(at);
	/* "clock" -> "block": still valid JSON, only the checksum tells. */
	flip_byte("state.json", at - (char *)b, 'c' ^ 'b');
	free(b);
	expect_open_fails(-EBADMSG, "state.json");
}

Test(snapfmt, state_json_missing)
{
	remove_file("state.json");
	expect_open_fails(-ENOENT, "state.json");
}

/* Edits state.json and records its new size and checksum in the manifest,
 * as a writer would have: only the contents are then left to check. */
static void rewrite_state(void (*fn)(json_t *st))
{
	json_t *st = load_json(snap, "state.json");
	size_t len;
	char hex[33];

	fn(st);
	save_json(snap, "state.json", st);
	json_decref(st);
	uint8_t *b = read_file(snap, "state.json", &len);
	canonical_hex(XXH3_128bits(b, len), hex);
	free(b);
	json_t *m = load_json(snap, "snapshot.json");
	json_t *e = json_object_get(json_object_get(m, "files"), "state.json");
	json_object_set_new(e, "size", json_integer((json_int_t)len));
	json_object_set_new(e, "xxh3_128", json_string(hex));
	save_json(snap, "snapshot.json", m);
	json_decref(m);
}

static void state_units_object(json_t *st)
{
	json_object_set_new(st, "units", json_object());
}

static void state_format_wrong(json_t *st)
{
	json_object_set_new(st, "format", json_string("openvmm-state"));
}

static void state_version_2(json_t *st)
{
	json_object_set_new(st, "version", json_integer(2));
}

static void state_new_clock(json_t *st)
{
	json_t *u = json_array_get(json_object_get(st, "units"), 0);
	json_object_set_new(json_object_get(u, "state"), "monotonic_ns", json_string("0x77"));
}

Test(snapfmt, state_json_checked_beyond_its_checksum)
{
	rewrite_state(state_units_object);
	expect_open_fails(-EINVAL, "state.json");
}

Test(snapfmt, state_json_wrong_format)
{
	rewrite_state(state_format_wrong);
	expect_open_fails(-EINVAL, "state.json");
}

Test(snapfmt, state_json_newer_version)
{
	rewrite_state(state_version_2);
	expect_open_fails(-EINVAL, "state.json");
}

Test(snapfmt, state_json_consistent_rewrite_is_read)
{
	struct snapshot s;

	rewrite_state(state_new_clock);
	expect_open_ok(&s);
	const json_t *u = json_array_get(s.units, 0);
	const json_t *ust = json_object_get(u, "state");
	cr_assert_str_eq(json_string_value(json_object_get(ust, "monotonic_ns")), "0x77");
	snapshot_close(&s);
}

Test(snapfmt, memory_byte_flipped_in_a_data_page)
{
	flip_byte("memory-ranges", (off_t)(PG_LONG_RUN + 123) * (off_t)P + 77, 0x10);
	expect_open_fails(-EBADMSG, "memory-ranges");
}

Test(snapfmt, memory_last_byte_of_a_one_byte_page_cleared)
{
	/* The page becomes all zero: one data page fewer. */
	flip_byte("memory-ranges", (off_t)(PG_LAST_BYTE * P + P - 1), 0x80);
	expect_open_fails(-EBADMSG, "memory-ranges");
}

Test(snapfmt, memory_byte_added_in_a_hole)
{
	flip_byte("memory-ranges", (off_t)(5000 * P + 4000), 0x01);
	expect_open_fails(-EBADMSG, "memory-ranges");
}

Test(snapfmt, memory_byte_added_in_the_rezeroed_page)
{
	flip_byte("memory-ranges", (off_t)(PG_REZEROED * P), 0x01);
	expect_open_fails(-EBADMSG, "memory-ranges");
}

Test(snapfmt, memory_truncated)
{
	char *p = path_in(snap, "memory-ranges");
	cr_assert_eq(truncate(p, MEM_SIZE - P), 0);
	free(p);
	expect_open_fails(-EINVAL, "memory-ranges");
}

Test(snapfmt, memory_extended)
{
	char *p = path_in(snap, "memory-ranges");
	cr_assert_eq(truncate(p, MEM_SIZE + P), 0);
	free(p);
	expect_open_fails(-EINVAL, "memory-ranges");
}

Test(snapfmt, memory_missing)
{
	remove_file("memory-ranges");
	expect_open_fails(-ENOENT, "memory-ranges");
}

/* ------------------------------------------------------------ config.json edits */

static void edit_config(const char *path_json, json_t *value)
{
	json_t *c = load_json(snap, "config.json");
	char *dup = strdup(path_json), *dot = strchr(dup, '.');
	json_t *parent = c;

	if (dot) {
		*dot = '\0';
		parent = json_object_get(c, dup);
		if (!parent) {
			parent = json_object();
			json_object_set_new(c, dup, parent);
		}
	}
	if (value)
		json_object_set_new(parent, dot ? dot + 1 : dup, value);
	else
		json_object_del(parent, dot ? dot + 1 : dup);
	save_json(snap, "config.json", c);
	json_decref(c);
	free(dup);
}

Test(snapfmt, edit_memory_size_is_refused)
{
	edit_config("memory.size", json_integer(64 * MiB));
	expect_open_fails(-EINVAL, "memory");
}

Test(snapfmt, edit_vcpus_is_refused)
{
	edit_config("cpus.boot_vcpus", json_integer(4));
	edit_config("cpus.max_vcpus", json_integer(4));
	expect_open_fails(-EINVAL, "vCPU");
}

Test(snapfmt, edit_kernel_is_refused)
{
	edit_config("payload.kernel", json_string("/opt/forkvm/payloads/other"));
	expect_open_fails(-EINVAL, "payload");
}

Test(snapfmt, edit_cmdline_is_refused)
{
	edit_config("payload.cmdline", json_string("--other"));
	expect_open_fails(-EINVAL, "payload");
}

Test(snapfmt, removing_the_agent_is_refused)
{
	edit_config("agent", NULL);
	expect_open_fails(-EINVAL, "agent");
}

Test(snapfmt, malformed_config_is_refused)
{
	char *p = ut_write_file(snap, "config.json", "{\"cpus\": {", 10);
	free(p);
	expect_open_fails(-EINVAL, "config.json");
}

Test(snapfmt, config_with_unknown_key_is_refused)
{
	edit_config("memory.hugepages", json_true());
	expect_open_fails(-EINVAL, "config.json");
}

Test(snapfmt, edit_agent_socket_path_is_accepted)
{
	struct snapshot s;

	edit_config("agent.socket", json_string("/run/forkvm/clone-7.sock"));
	expect_open_ok(&s);
	cr_assert_str_eq(s.cfg.agent_socket, "/run/forkvm/clone-7.sock");
	cr_assert_str_eq(s.cfg.kernel, cfg.kernel);
	snapshot_close(&s);
}

Test(snapfmt, edit_serial_and_hostname_is_accepted)
{
	struct snapshot s;

	edit_config("serial", json_pack("{s:s,s:s}", "mode", "File", "file", "/tmp/console.log"));
	edit_config("hostname", json_string("clone-7"));
	expect_open_ok(&s);
	cr_assert_eq(s.cfg.serial_mode, VM_SERIAL_FILE);
	cr_assert_str_eq(s.cfg.serial_path, "/tmp/console.log");
	cr_assert_str_eq(s.cfg.hostname, "clone-7");
	snapshot_close(&s);
}

Test(snapfmt, adding_an_agent_is_refused)
{
	char *dir2 = path_in(root, "noagent");
	char err[512] = "";

	free(cfg.agent_socket);
	cfg.agent_socket = NULL;
	cr_assert_eq(snapshot_write_dir(dir2, &cfg, units, &mem, &meta, err, sizeof(err)), 0, "%s",
		     err);
	free(snap);
	snap = dir2;
	edit_config("agent.socket", json_string("/run/forkvm/new.sock"));
	expect_open_fails(-EINVAL, "agent");
}

/* ------------------------------------------------------------ write refusals */

Test(snapfmt, destination_not_empty_is_refused_and_untouched)
{
	char *dst = path_in(root, "full");
	char err[512] = "";

	cr_assert_eq(mkdir(dst, 0755), 0);
	char *keep = ut_write_file(dst, "keep", "precious", 8);
	cr_assert_not_null(keep);
	int rc = snapshot_write_dir(dst, &cfg, units, &mem, &meta, err, sizeof(err));
	cr_assert_eq(rc, -EEXIST, "rc %d: %s", rc, err);
	cr_assert_not_null(strstr(err, "full"), "%s", err);
	char *l = listing(dst);
	cr_assert_str_eq(l, "keep/", "nothing added");
	free(l);
	size_t len;
	char *b = (char *)ut_read_file(keep, &len);
	cr_assert_eq(len, 8);
	cr_assert_str_eq(b, "precious");
	free(b);
	cr_assert(!has_tmp_sibling(root, "full"));
	/* An existing snapshot is not overwritten either. */
	cr_assert_eq(snapshot_write_dir(snap, &cfg, units, &mem, &meta, err, sizeof(err)), -EEXIST);
	cr_assert(!has_tmp_sibling(root, "snap"));
	free(keep);
	free(dst);
}

Test(snapfmt, destination_regular_file_is_refused)
{
	char *f = ut_write_file(root, "plainfile", "data", 4);
	char err[512] = "";

	cr_assert_not_null(f);
	int rc = snapshot_write_dir(f, &cfg, units, &mem, &meta, err, sizeof(err));
	cr_assert_eq(rc, -ENOTDIR, "rc %d: %s", rc, err);
	cr_assert_not_null(strstr(err, "plainfile"), "%s", err);
	size_t len;
	char *b = (char *)ut_read_file(f, &len);
	cr_assert_str_eq(b, "data");
	free(b);
	cr_assert(!has_tmp_sibling(root, "plainfile"));
	free(f);
}

Test(snapfmt, destination_empty_directory_is_replaced)
{
	char *dst = path_in(root, "empty");
	struct snapshot s;
	char err[512] = "";

	cr_assert_eq(mkdir(dst, 0755), 0);
	cr_assert_eq(snapshot_write_dir(dst, &cfg, units, &mem, &meta, err, sizeof(err)), 0, "%s", err);
	char *l = listing(dst);
	cr_assert_str_eq(l, "config.json/memory-ranges/snapshot.json/state.json/");
	free(l);
	struct stat st;
	cr_assert_eq(stat(dst, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0700, "the new directory replaced the old one");
	cr_assert(!has_tmp_sibling(root, "empty"));
	free(snap);
	snap = dst;
	expect_open_ok(&s);
	snapshot_close(&s);
}

Test(snapfmt, trailing_slash_destination)
{
	char *dst = path_in(root, "slashed/");
	struct snapshot s;
	char err[512] = "";

	cr_assert_eq(snapshot_write_dir(dst, &cfg, units, &mem, &meta, err, sizeof(err)), 0, "%s", err);
	cr_assert(!has_tmp_sibling(root, "slashed"));
	free(snap);
	snap = dst;
	expect_open_ok(&s);
	snapshot_close(&s);
}

Test(snapfmt, missing_parent_is_an_error_and_creates_nothing)
{
	char *dst = path_in(root, "no/such/parent/snap");
	char err[512] = "";
	char *before = listing(root);

	int rc = snapshot_write_dir(dst, &cfg, units, &mem, &meta, err, sizeof(err));
	cr_assert_lt(rc, 0);
	cr_assert_eq(rc, -ENOENT, "rc %d: %s", rc, err);
	cr_assert_neq(err[0], '\0');
	char *after = listing(root);
	cr_assert_str_eq(before, after, "nothing created");
	free(before);
	free(after);
	free(dst);
}

/* Failures after the temporary directory exists: it must be removed. */
Test(snapfmt, failure_while_writing_memory_leaves_nothing)
{
	char *dst = path_in(root, "late");
	char err[512] = "";
	char *before = listing(root);
	struct gmem broken = mem;

	broken.fd = -1; /* SEEK_DATA on it fails: EBADF */
	int rc = snapshot_write_dir(dst, &cfg, units, &broken, &meta, err, sizeof(err));
	cr_assert_lt(rc, 0, "refused");
	cr_assert_not_null(strstr(err, "memory-ranges"), "%s", err);
	char *after = listing(root);
	cr_assert_str_eq(before, after, "no destination, no .late.tmp-* sibling");
	free(before);
	free(after);
	free(dst);
}

Test(snapfmt, failure_encoding_state_leaves_nothing)
{
	char *dst = path_in(root, "late");
	char err[512] = "";
	char *before = listing(root);
	/* A string that is not UTF-8 cannot be dumped. */
	json_t *bad = json_pack("[{s:s,s:i,s:{s:o}}]", "name", "x", "version", 1, "state", "s",
				json_stringn_nocheck("\xff\xfe", 2));

	cr_assert_not_null(bad);
	int rc = snapshot_write_dir(dst, &cfg, bad, &mem, &meta, err, sizeof(err));
	cr_assert_lt(rc, 0, "refused");
	cr_assert_neq(err[0], '\0');
	char *after = listing(root);
	cr_assert_str_eq(before, after, "no destination, no .late.tmp-* sibling");
	free(before);
	free(after);
	json_decref(bad);
	free(dst);
}

Test(snapfmt, failure_writing_the_manifest_leaves_nothing)
{
	char *dst = path_in(root, "late");
	char err[512] = "";
	char *before = listing(root);
	const struct snap_meta no_loader = { .loader = NULL, .vcpus = 2,
						 .memory_size = MEM_SIZE };

	/* Everything but the manifest is written when this fails. */
	int rc = snapshot_write_dir(dst, &cfg, units, &mem, &no_loader, err, sizeof(err));
	cr_assert_lt(rc, 0, "refused");
	char *after = listing(root);
	cr_assert_str_eq(before, after, "no destination, no .late.tmp-* sibling");
	free(before);
	free(after);
	free(dst);
}

/* ------------------------------------------------------------ URLs */

static char url_path[PATH_MAX], url_err[256];

static int url(const char *u)
{
	url_err[0] = '\0';
	enum store_url_kind kind;
	int rc = store_url_parse(u, &kind, url_path, sizeof(url_path), url_err, sizeof(url_err));
	cr_assert(rc < 0 || kind == STORE_URL_FILE);
	return rc;
}

Test(snapurl, file_urls)
{
	cr_assert_eq(url("file:///var/lib/snap"), 0, "%s", url_err);
	cr_assert_str_eq(url_path, "/var/lib/snap");
	cr_assert_eq(url("file://rel/dir"), 0, "%s", url_err);
	cr_assert_str_eq(url_path, "rel/dir");
	cr_assert_eq(url("file:///tmp/snap/"), 0, "%s", url_err);
	cr_assert_str_eq(url_path, "/tmp/snap", "trailing slash stripped");
	cr_assert_eq(url("file:///tmp/snap///"), 0, "%s", url_err);
	cr_assert_str_eq(url_path, "/tmp/snap");
	cr_assert_eq(url("file:///"), 0, "%s", url_err);
	cr_assert_str_eq(url_path, "/", "the root keeps its slash");
}

Test(snapurl, refused_urls)
{
	cr_assert_eq(url("s3://bucket/snap"), -EPROTONOSUPPORT);
	cr_assert_not_null(strstr(url_err, "s3://bucket/snap"), "%s", url_err);
	cr_assert_eq(url("http://x/y"), -EPROTONOSUPPORT);
	cr_assert_eq(url("/plain/path"), -EINVAL);
	cr_assert_neq(url_err[0], '\0');
	cr_assert_eq(url(""), -EINVAL);
	cr_assert_neq(url_err[0], '\0');
	cr_assert_eq(url(NULL), -EINVAL);
	cr_assert_eq(url("file://"), -EINVAL);
	char small[8], err[64];
	enum store_url_kind kind;
	int rc = store_url_parse("file:///a/long/path", &kind, small, sizeof(small), err, sizeof(err));
	cr_assert_eq(rc, -EINVAL, "a path that does not fit");
}

/* ------------------------------------------------------------ populated ranges */

struct ranges {
	uint8_t *covered; /* per page */
	uint64_t pages;
	uint64_t last_end;
	int calls;
};

static int collect(void *arg, uint64_t off, uint64_t len)
{
	struct ranges *r = arg;

	cr_assert_eq(off % P, 0, "page aligned: 0x%llx", (unsigned long long)off);
	cr_assert_eq(len % P, 0, "page aligned length: 0x%llx", (unsigned long long)len);
	cr_assert_gt(len, 0);
	cr_assert_geq(off, r->last_end, "ascending and disjoint");
	cr_assert_leq(off + len, r->pages * P, "inside the backing");
	for (uint64_t p = off / P; p < (off + len) / P; p++)
		r->covered[p] = 1;
	r->last_end = off + len;
	r->calls++;
	return 0;
}

static void populated(const struct gmem *m, struct ranges *r)
{
	free(r->covered);
	memset(r, 0, sizeof(*r));
	r->pages = m->size / P;
	r->covered = calloc(r->pages, 1);
	cr_assert_not_null(r->covered);
	cr_assert_eq(gmem_for_each_populated(m, collect, r), 0);
}

static void assert_nonzero_covered(const struct gmem *m, const struct ranges *r)
{
	for (uint64_t p = 0; p < r->pages; p++)
		if (!zero_page(m->host + p * P))
			cr_assert(r->covered[p], "non-zero page %llu is not reported",
				  (unsigned long long)p);
}

static int stop_early(void *arg, uint64_t off, uint64_t len)
{
	(void)arg;
	(void)off;
	(void)len;
	return -ECANCELED;
}

Test(snapfmt, populated_memfd)
{
	struct ranges r = { 0 };

	populated(&mem, &r);
	assert_nonzero_covered(&mem, &r);
	cr_assert(!r.covered[PG_DISCARDED], "a discarded page is not reported");
	cr_assert(!r.covered[5000], "an untouched page is not reported");
	cr_assert(!r.covered[PG_RUN_START - 1]);

	cr_assert_eq(gmem_discard(&mem, PG_RUN_START * P, 2 * P), 0);
	populated(&mem, &r);
	assert_nonzero_covered(&mem, &r);
	cr_assert(!r.covered[PG_RUN_START] && !r.covered[PG_RUN_START + 1], "discarded");
	cr_assert(r.covered[PG_RUN_START + 2], "the rest of the run stays");
	free(r.covered);

	cr_assert_eq(gmem_for_each_populated(&mem, stop_early, NULL), -ECANCELED,
		     "the callback's error comes back");
}

Test(snapfmt, populated_anonymous)
{
	struct gmem a;
	struct ranges r = { 0 };

	cr_assert_eq(gmem_init(&a, 16 * MiB, GMEM_ANON), 0);
	a.host[7 * P + 5] = 1;
	a.host[3000 * P] = 2;
	populated(&a, &r);
	assert_nonzero_covered(&a, &r);
	cr_assert(!r.covered[100]);
	free(r.covered);
	gmem_fini(&a);
}

/* A sparse file of 16 MiB with data in a few pages, as a snapshot's
 * memory-ranges would be; returns its path. */
static char *sparse_file(uint8_t **content)
{
	const uint64_t size = 16 * MiB;
	char *p = path_in(root, "ram.img");
	int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	uint8_t *c = calloc(1, size);

	cr_assert_geq(fd, 0);
	cr_assert_not_null(c);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	static const uint64_t data_pages[] = { 3, 4, 500, 4095 };
	for (size_t k = 0; k < ARRAY_SIZE(data_pages); k++) {
		uint64_t pg = data_pages[k];
		for (uint64_t i = 0; i < P; i++)
			c[pg * P + i] = (uint8_t)(pg + i) | 0x40;
		cr_assert_eq(pwrite(fd, c + pg * P, P, (off_t)(pg * P)), (ssize_t)P);
	}
	cr_assert_eq(fsync(fd), 0);
	close(fd);
	*content = c;
	return p;
}

Test(snapfmt, populated_private_file_mapping)
{
	uint8_t *orig;
	char *img = sparse_file(&orig);
	struct gmem m;
	struct ranges r = { 0 };
	const uint64_t size = 16 * MiB;

	int fd = open(img, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(gmem_init_file(&m, fd, size), 0);
	cr_assert_eq(m.backing, GMEM_FILE_PRIVATE);
	cr_assert_eq(memcmp(m.host, orig, size), 0, "the mapping shows the file");

	populated(&m, &r);
	assert_nonzero_covered(&m, &r);
	cr_assert(r.covered[3] && r.covered[4] && r.covered[500] && r.covered[4095],
		  "the file's data");
	cr_assert(!r.covered[700], "a hole of the file");

	/* Private writes: into a hole of the file, and over file data. */
	m.host[700 * P + 1234] = 0x5a;
	m.host[3 * P] ^= 0xff;
	(void)*(volatile uint8_t *)(m.host + 800 * P); /* only read */
	populated(&m, &r);
	assert_nonzero_covered(&m, &r);
	cr_assert(r.covered[700], "a page written privately where the file has a hole is reported");
	cr_assert(r.covered[3]);

	/* A discarded page reads as zero, whatever the file holds. */
	cr_assert_eq(gmem_discard(&m, 500 * P, P), 0);
	cr_assert(zero_page(m.host + 500 * P));
	populated(&m, &r);
	assert_nonzero_covered(&m, &r);
	free(r.covered);

	/* The file never changes. */
	size_t len;
	uint8_t *now = ut_read_file(img, &len);
	cr_assert_eq(len, size);
	cr_assert_eq(memcmp(now, orig, size), 0, "the file on disk is unchanged by guest writes");
	free(now);
	gmem_fini(&m);
	free(orig);
	free(img);
}

Test(snapfmt, init_file_refuses_wrong_size)
{
	uint8_t *orig;
	char *img = sparse_file(&orig);
	struct gmem m;
	int fd = open(img, O_RDONLY | O_CLOEXEC);

	cr_assert_geq(fd, 0);
	cr_assert_eq(gmem_init_file(&m, fd, 32 * MiB), -EINVAL, "the file must be the RAM size");
	/* The fd was taken (closed) even on failure. */
	cr_assert_eq(fcntl(fd, F_GETFD), -1);
	free(orig);
	free(img);
}

/* A VM restored from a snapshot maps memory-ranges copy-on-write; its own
 * snapshot holds the file's data plus its private pages, minus what it
 * discarded. */
Test(snapfmt, snapshot_of_a_restored_mapping)
{
	struct snapshot s;
	struct gmem m;
	char err[512] = "";

	expect_open_ok(&s);
	cr_assert_eq(gmem_init_file(&m, s.mem_fd, s.memory_size), 0);
	s.mem_fd = -1; /* gmem owns it */
	cr_assert_eq(memcmp(m.host, mem.host, MEM_SIZE), 0, "restored RAM is the saved RAM");

	m.host[5000 * P + 17] = 0x33;                       /* a new page */
	m.host[PG_FULL_FIRST * P] ^= 0xff;                 /* a changed page */
	cr_assert_eq(gmem_discard(&m, PG_LAST * P, P), 0); /* a page dropped */

	char *dst = path_in(root, "second");
	cr_assert_eq(snapshot_write_dir(dst, &cfg, s.units, &m, &meta, err, sizeof(err)), 0, "%s", err);
	snapshot_close(&s);

	free(snap);
	snap = dst;
	expect_open_ok(&s);
	uint8_t *buf = malloc(MEM_SIZE);
	cr_assert_not_null(buf);
	cr_assert_eq(pread(s.mem_fd, buf, MEM_SIZE, 0), (ssize_t)MEM_SIZE);
	for (uint64_t i = 0; i < NPAGES; i++)
		cr_assert_eq(memcmp(buf + i * P, m.host + i * P, P), 0, "page %llu differs",
			     (unsigned long long)i);
	cr_assert(zero_page(buf + PG_LAST * P));
	char hex[33];
	uint64_t pages;
	memory_checksum(m.host, MEM_SIZE, hex, &pages);
	const json_t *mr = json_object_get(json_object_get(s.manifest, "files"), "memory-ranges");
	cr_assert_eq(json_integer_value(json_object_get(mr, "data_pages")), (json_int_t)pages);
	cr_assert_str_eq(json_string_value(json_object_get(mr, "xxh3_128_nonzero_pages")), hex);
	free(buf);
	snapshot_close(&s);
	gmem_fini(&m);
}
