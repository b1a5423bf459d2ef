/* tests/integration/test_store_vm.c - the snapshot store with real guests
 * (docs/store-format.md, docs/api.md): the agent guest snapshotted with
 * forkctl snapshot store://TAG into the VMM's store (forkvm --store DIR)
 * and restored in a new process with forkvm --restore
 * source_url=store://REF; a snapshot directory imported with forkctl store
 * put and restored by an id prefix; incremental snapshots three generations
 * deep (each manifest's parent is the snapshot restored from), which still
 * restore after their ancestors are removed and collected, and export to a
 * directory that restores too; a parent removed while its child VM runs;
 * restores from a damaged store refused (the VMM exits or the API answers
 * 400 naming the object and the snapshot, and no VM runs); vm.snapshot to
 * store:// over the REST API.
 *
 * The file is not called test_store.c: the Makefile builds unit and
 * integration tests into the same build/tests/ directory, and
 * tests/unit/test_store.c has that name.
 *
 * Every forkvm runs in a fresh h_tmpdir() with its sockets, console and
 * store there, dies with the test process (PR_SET_PDEATHSIG) and is killed
 * in .fini. Guests have 64 MiB and stores 64 KiB chunks. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
#include "tests/lib/harness.h"
#include "tests/lib/vmh.h"

#define T_MS 60000
#define GUEST_MEMORY "64M"

/* ------------------------------------------------------------ environment */

static struct {
	char *dir;   /* everything of the test lives here */
	char *store; /* dir/store */
	struct vmh_set vms;
	/* How this suite starts forkvm: 64 MiB guests, the VMM's log (-v) in
	 * NAME.log and the store; without the store; restored and resumed. */
	struct vmh_opts opts, no_store, resumed;
} e;

static void setup(void)
{
	e.dir = h_tmpdir();
	e.store = h_join(e.dir, "store");
	vmh_set_init(&e.vms, e.dir);
	e.opts = (struct vmh_opts){.memory = GUEST_MEMORY, .store = e.store, .log = true};
	e.no_store = e.opts;
	e.no_store.store = NULL;
	e.resumed = e.opts;
	e.resumed.resume = true;
}

static void teardown(void)
{
	vmh_set_free(&e.vms);
	if (e.dir)
		h_rmtree(e.dir);
	free(e.dir);
	free(e.store);
	memset(&e, 0, sizeof(e));
}

TestSuite(store_vm, .init = setup, .fini = teardown, .timeout = 120);

/* forkctl ARGS... (NULL-terminated); returns the exit status. */
static int forkctl(char **out, char **err, ...)
{
	const char *argv[24];
	char *bin = h_bin("forkctl"), *o = NULL, *er = NULL;
	int n = 0;
	va_list ap;

	argv[n++] = bin;
	va_start(ap, err);
	for (const char *a; (a = va_arg(ap, const char *)) && n < 23;)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	int st = h_run(e.dir, argv, T_MS, &o, &er);
	cr_assert_neq(st, -1, "forkctl %s timed out", argv[1]);
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

/* forkctl --store STORE store ARGS... (at most 5 arguments) */
static int store_cmd(char **out, char **err, const char *a1, const char *a2, const char *a3,
		     const char *a4, const char *a5)
{
	return forkctl(out, err, "--store", e.store, "store", a1, a2, a3, a4, a5, NULL);
}

/* forkctl store init --chunk-size 64K */
static void store_init(void)
{
	char *er;
	int st = store_cmd(NULL, &er, "init", "--chunk-size", "64K", NULL, NULL);
	cr_assert_eq(st, 0, "store init: %s", er);
	free(er);
}

/* ------------------------------------------------------------ the agent */

/* ------------------------------------------------------------ VMs */

/* forkctl --api-socket=API snapshot store://TAG: returns the id (malloc'd). */
static char *snapshot_store(struct vmh *v, const char *tag)
{
	char *opt = h_fmt("--api-socket=%s", v->api), *url = h_fmt("store://%s", tag), *out, *er;
	int st = forkctl(&out, &er, opt, "snapshot", url, NULL);
	cr_assert_eq(st, 0, "%s: forkctl snapshot %s: %s", v->name, url, er);
	json_t *j = json_loads(out, 0, NULL);
	const char *id = json_string_value(json_object_get(j, "id"));
	cr_assert_not_null(id, "forkctl snapshot %s printed: %s", url, out);
	cr_assert_eq(strlen(id), 32, "id %s", id);
	cr_assert_eq(strspn(id, "0123456789abcdef"), 32, "id %s", id);
	char *r = strdup(id);
	json_decref(j);
	free(out);
	free(er);
	free(opt);
	free(url);
	return r;
}

/* forkctl --store STORE store show REF: the manifest's parent ("" for
 * none) and its id. */
static char *show_parent(const char *ref, char **id)
{
	char *out, *er;
	int st = store_cmd(&out, &er, "show", ref, NULL, NULL, NULL);
	cr_assert_eq(st, 0, "store show %s: %s", ref, er);
	json_t *j = json_loads(out, 0, NULL);
	cr_assert_not_null(j, "store show %s: %s", ref, out);
	const json_t *p = json_object_get(json_object_get(j, "manifest"), "parent");
	cr_assert(json_is_null(p) || json_is_string(p), "%s", out);
	char *r = strdup(json_is_string(p) ? json_string_value(p) : "");
	if (id)
		*id = strdup(json_string_value(json_object_get(j, "id")));
	json_decref(j);
	free(out);
	free(er);
	return r;
}

static bool exists(const char *path)
{
	struct stat s;
	return stat(path, &s) == 0;
}

static int count_entries(const char *rel)
{
	char *d = h_fmt("%s/%s", e.store, rel);
	DIR *dir = opendir(d);
	struct dirent *de;
	int n = 0;
	cr_assert_not_null(dir, "%s", d);
	while ((de = readdir(dir)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(dir);
	free(d);
	return n;
}

static int count_objects(void)
{
	int n = 0;
	for (unsigned i = 0; i < 256; i++) {
		char rel[16];
		snprintf(rel, sizeof(rel), "objects/%02x", i);
		n += count_entries(rel);
	}
	return n;
}

/* The number of stored chunks forkctl store show reports for ref. */
static int chunks_of(const char *ref)
{
	char *out, *er;
	int n = -1;
	cr_assert_eq(store_cmd(&out, &er, "show", ref, NULL, NULL, NULL), 0, "%s", er);
	const char *c = strstr(out, "\"chunks\": \"");
	cr_assert_not_null(c, "%s", out);
	cr_assert_eq(sscanf(c, "\"chunks\": \"%d non-zero chunks\"", &n), 1, "%s", out);
	free(out);
	free(er);
	return n;
}

/* ============================================================ round trips */

Test(store_vm, snapshot_to_the_store_and_restore_in_a_new_process)
{
	H_NEED_GUEST();
	store_init();
	struct vmh *a = vmh_boot(&e.vms, "a", &e.opts);
	vmh_js_expect(a, "var counter = 41; var log = ['born']; counter", "41");
	vmh_pause(a);
	char *id = snapshot_store(a, "t1");
	vmh_stop(a);

	char *sid = NULL, *parent = show_parent("t1", &sid);
	cr_assert_str_eq(sid, id);
	cr_assert_str_eq(parent, "", "a booted VM's snapshot has no parent");
	char *img = h_fmt("%s/images/%s.img", e.store, id);
	cr_assert_not(exists(img), "an image before any restore");

	struct vmh *b = vmh_restore(&e.vms, "b", "store://t1", &e.opts);
	cr_assert(exists(img), "the restore did not materialize the image");
	vmh_resume(b);
	vmh_js_expect(b, "++counter", "42");
	vmh_js_expect(b, "log.push('restored'); log.join()", "\"born,restored\"");
	/* A second restore at the same time maps the same image. */
	struct vmh *c = vmh_restore(&e.vms, "c", "store://t1", &e.resumed);
	vmh_js_expect(c, "++counter", "42");
	vmh_js_expect(c, "log.join()", "\"born\"");
	vmh_js_expect(b, "counter", "42");
	cr_assert_eq(count_entries("images"), 1);
	/* While both run, gc keeps the image whatever the budget. */
	char *out, *er;
	cr_assert_eq(store_cmd(&out, &er, "gc", "--image-budget", "0", NULL, NULL), 0, "%s", er);
	cr_assert_not_null(strstr(out, "0 images removed"), "%s", out);
	cr_assert(exists(img));
	free(out);
	free(er);
	vmh_js_expect(b, "counter * 2", "84");
	cr_assert_eq(store_cmd(&out, &er, "verify", NULL, NULL, NULL, NULL), 0, "%s%s", out, er);
	free(out);
	free(er);
	free(img);
	free(id);
	free(sid);
	free(parent);
}

Test(store_vm, directory_snapshot_put_and_restored_by_id_prefix)
{
	H_NEED_GUEST();
	store_init();
	struct vmh *a = vmh_boot(&e.vms, "a", &e.no_store);
	vmh_js_expect(a, "var word = 'from a directory'; word.length", "16");
	vmh_pause(a);
	char *dir = h_join(e.dir, "snap"), *json = h_fmt("{\"destination_url\": \"file://%s\"}", dir);
	vmh_put(a, "vm.snapshot", json, 204);
	vmh_stop(a);

	char *url = h_fmt("file://%s", dir), *out, *er;
	int st = store_cmd(&out, &er, "put", url, "--tag", "imported", NULL);
	cr_assert_eq(st, 0, "store put: %s", er);
	cr_assert_eq(strlen(out), 33, "%s", out);
	out[32] = '\0';
	char *prefix = h_fmt("store://%.7s", out), *sid = NULL, *parent = show_parent(out, &sid);
	cr_assert_str_eq(sid, out);
	cr_assert_str_eq(parent, "");
	free(out);
	free(er);

	struct vmh *b = vmh_restore(&e.vms, "b", prefix, &e.resumed);
	vmh_js_expect(b, "word", "\"from a directory\"");
	vmh_js_expect(b, "word.toUpperCase()", "\"FROM A DIRECTORY\"");
	free(prefix);
	free(sid);
	free(parent);
	free(url);
	free(json);
	free(dir);
}

/* ============================================================ incremental */

static bool log_has(struct vmh *v, const char *needle)
{
	char *text = h_read_file(v->log);
	bool r = text && strstr(text, needle);
	free(text);
	return r;
}

Test(store_vm, incremental_chain_three_deep, .timeout = 180)
{
	H_NEED_GUEST();
	store_init();
	struct vmh *a = vmh_boot(&e.vms, "a", &e.opts);
	vmh_js_expect(
	    a,
	    "var gens = ['one']; var big = []; for (var i = 0; i < 20000; i++) big.push(i); "
	    "gens.length",
	    "1");
	vmh_pause(a);
	char *id1 = snapshot_store(a, "t1");
	vmh_stop(a);

	struct vmh *b = vmh_restore(&e.vms, "b", "store://t1", &e.resumed);
	vmh_js_expect(b, "gens.push('two'); big[19999]", "19999");
	vmh_pause(b);
	int before = count_objects();
	char *id2 = snapshot_store(b, "t2");
	/* what changed is little: few new objects for many chunks */
	int added = count_objects() - before, chunks = chunks_of("t2");
	cr_assert_lt(added * 2, chunks, "t2 added %d objects for %d chunks", added, chunks);
	cr_assert(log_has(b, "incremental"), "b's snapshot was not incremental");
	vmh_stop(b);
	char *p2 = show_parent("t2", NULL);
	cr_assert_str_eq(p2, id1, "t2's parent");

	struct vmh *c = vmh_restore(&e.vms, "c", "store://t2", &e.resumed);
	vmh_js_expect(c, "gens.push('three'); gens.length", "3");
	vmh_pause(c);
	char *id3 = snapshot_store(c, "t3");
	cr_assert(log_has(c, "incremental"), "c's snapshot was not incremental");
	vmh_stop(c);
	char *p3 = show_parent("t3", NULL);
	cr_assert_str_eq(p3, id2, "t3's parent");

	struct vmh *d = vmh_restore(&e.vms, "d", "store://t3", &e.resumed);
	vmh_js_expect(d, "gens.join()", "\"one,two,three\"");
	vmh_js_expect(d, "big.length + big[12345]", "32345");
	vmh_stop(d);

	/* The ancestors removed and collected, images evicted: t3 is whole. */
	char *out, *er;
	cr_assert_eq(store_cmd(&out, &er, "rm", "t1", NULL, NULL, NULL), 0, "%s", er);
	free(out);
	free(er);
	cr_assert_eq(store_cmd(&out, &er, "rm", "t2", NULL, NULL, NULL), 0, "%s", er);
	free(out);
	free(er);
	cr_assert_eq(store_cmd(&out, &er, "gc", "--image-budget", "0", NULL, NULL), 0, "%s", er);
	cr_assert_eq(h_count(out, "kept, 0 removed"), 0, "gc removed nothing: %s", out);
	free(out);
	free(er);
	cr_assert_eq(count_entries("images"), 0);
	cr_assert_eq(count_entries("snapshots"), 1);
	cr_assert_eq(store_cmd(&out, &er, "verify", NULL, NULL, NULL, NULL), 0, "%s%s", out, er);
	free(out);
	free(er);
	struct vmh *f = vmh_restore(&e.vms, "f", "store://t3", &e.resumed);
	vmh_js_expect(f, "gens.join() + ':' + big[777]", "\"one,two,three:777\"");
	vmh_stop(f);

	/* exported, the directory restores too */
	char *dir = h_join(e.dir, "t3dir"), *url = h_fmt("file://%s", dir);
	cr_assert_eq(store_cmd(&out, &er, "export", "t3", url, NULL, NULL), 0, "%s", er);
	free(out);
	free(er);
	struct vmh *g = vmh_restore(&e.vms, "g", url, &e.resumed);
	vmh_js_expect(g, "gens.join()", "\"one,two,three\"");
	free(dir);
	free(url);
	free(p2);
	free(p3);
	free(id1);
	free(id2);
	free(id3);
}

/* The snapshot a VM was restored from is removed and collected while it
 * runs: its image stays mapped; its next snapshot is a full one (no
 * parent) and restores. */
Test(store_vm, parent_removed_while_its_child_runs)
{
	H_NEED_GUEST();
	store_init();
	struct vmh *a = vmh_boot(&e.vms, "a", &e.opts);
	vmh_js_expect(a, "var s = 'kept'; s", "\"kept\"");
	vmh_pause(a);
	char *id1 = snapshot_store(a, "p");
	vmh_stop(a);
	struct vmh *b = vmh_restore(&e.vms, "b", "store://p", &e.resumed);
	char *out, *er;
	cr_assert_eq(store_cmd(&out, &er, "rm", "p", NULL, NULL, NULL), 0, "%s", er);
	free(out);
	free(er);
	cr_assert_eq(store_cmd(&out, &er, "gc", "--image-budget", "0", NULL, NULL), 0, "%s", er);
	cr_assert_not_null(strstr(out, "1 images in use kept"), "%s", out);
	free(out);
	free(er);
	vmh_js_expect(b, "s += ' and grown'; s", "\"kept and grown\"");
	vmh_pause(b);
	char *id2 = snapshot_store(b, "q");
	vmh_stop(b);
	char *parent = show_parent("q", NULL);
	cr_assert_str_eq(parent, "", "the parent %s is gone: q must be a full snapshot", id1);
	cr_assert_eq(store_cmd(&out, &er, "gc", NULL, NULL, NULL, NULL), 0, "%s", er);
	free(out);
	free(er);
	cr_assert_eq(store_cmd(&out, &er, "verify", NULL, NULL, NULL, NULL), 0, "%s%s", out, er);
	free(out);
	free(er);
	struct vmh *c = vmh_restore(&e.vms, "c", "store://q", &e.resumed);
	vmh_js_expect(c, "s", "\"kept and grown\"");
	free(parent);
	free(id1);
	free(id2);
}

/* ============================================================ corruption */

/* A snapshot t1 of a booted agent; returns its id and the hex name of its
 * first stored memory chunk. */
static char *snapshot_for_damage(char **chunk)
{
	store_init();
	struct vmh *a = vmh_boot(&e.vms, "a", &e.opts);
	vmh_js_expect(a, "var x = 'intact'; x", "\"intact\"");
	vmh_pause(a);
	char *id = snapshot_store(a, "t1");
	vmh_stop(a);

	struct store *st;
	struct store_id sid;
	char err[512] = "", *text;
	size_t len;
	cr_assert_eq(store_open(e.store, false, 0, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_id_parse(id, &sid), 0);
	cr_assert_eq(store_read_object(st, &sid, &text, &len, err, sizeof(err)), 0, "%s", err);
	store_close(st);
	json_t *m = json_loadb(text, len, 0, NULL), *v;
	size_t i;
	cr_assert_not_null(m);
	*chunk = NULL;
	json_array_foreach (json_object_get(json_object_get(m, "memory"), "chunks"), i, v) {
		if (!*chunk && i == 0)
			*chunk = strdup(json_string_value(json_array_get(v, 1)));
	}
	cr_assert_not_null(*chunk, "the snapshot has no chunk");
	json_decref(m);
	free(text);
	return id;
}

static char *obj_path(const char *hex)
{
	return h_fmt("%s/objects/%.2s/%s", e.store, hex, hex);
}

static void flip_byte(const char *path, off_t off)
{
	uint8_t b;
	cr_assert_eq(chmod(path, 0600), 0, "%s: %s", path, strerror(errno));
	int fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &b, 1, off), 1);
	b ^= 0x5a;
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

/* forkvm --restore from the damaged store exits non-zero, saying which
 * object of which snapshot; no API socket serves a VM and no image is
 * left. */
static void expect_restore_refused(const char *id, const char *obj)
{
	struct vmh *r = vmh_restore_start(&e.vms, "r", "store://t1", &e.resumed);
	int st = h_wait(&r->proc, 20000);
	char *err = vmh_stderr(r);
	cr_assert_neq(st, -1, "forkvm --restore from a damaged store still runs; stderr:\n%s", err);
	cr_assert_neq(st, 0, "forkvm --restore from a damaged store exits 0; stderr:\n%s", err);
	cr_assert_lt(st, 128, "forkvm --restore died of signal %d; stderr:\n%s", st - 128, err);
	cr_assert_not_null(strstr(err, obj), "stderr does not name the object %s:\n%s", obj, err);
	cr_assert_not_null(strstr(err, id), "stderr does not name the snapshot %s:\n%s", id, err);
	cr_assert_not(exists(r->api), "the API socket of a refused restore exists");
	cr_assert_eq(count_entries("images"), 0, "an image of a damaged snapshot is left");
	cr_assert_eq(count_entries("tmp"), 0);
	free(err);

	/* The same through the REST API: 400, the VMM keeps serving, no VM. */
	struct vmh *v = vmh_empty(&e.vms, "empty", e.store);
	char *body = NULL;
	int code =
	    vmh_api(v, "PUT", "/api/v1/vm.restore", "{\"source_url\": \"store://t1\"}", &body);
	cr_assert_eq(code, 400, "vm.restore: %d %s", code, body);
	cr_assert_not_null(strstr(body, obj), "%s", body);
	cr_assert_not_null(strstr(body, id), "%s", body);
	free(body);
	code = vmh_api(v, "GET", "/api/v1/vm.info", NULL, &body);
	cr_assert_neq(code, 200, "a VM exists after a refused restore: %s", body);
	free(body);
	code = vmh_api(v, "GET", "/api/v1/vmm.ping", NULL, &body);
	cr_assert_eq(code, 200, "the VMM stopped serving: %d %s", code, body);
	free(body);
	cr_assert_eq(count_entries("images"), 0);
	vmh_stop(v);

	/* and forkctl store verify says so */
	char *out, *er;
	cr_assert_eq(store_cmd(&out, &er, "verify", NULL, NULL, NULL, NULL), 1, "%s%s", out, er);
	cr_assert_not_null(strstr(out, obj), "%s", out);
	free(out);
	free(er);
}

Test(store_vm, restore_from_a_corrupt_chunk_is_refused)
{
	H_NEED_GUEST();
	char *chunk, *id = snapshot_for_damage(&chunk), *p = obj_path(chunk);
	struct stat s;
	cr_assert_eq(stat(p, &s), 0);
	flip_byte(p, s.st_size / 2);
	expect_restore_refused(id, chunk);
	free(p);
	free(chunk);
	free(id);
}

Test(store_vm, restore_with_a_missing_chunk_is_refused)
{
	H_NEED_GUEST();
	char *chunk, *id = snapshot_for_damage(&chunk), *p = obj_path(chunk);
	cr_assert_eq(unlink(p), 0);
	expect_restore_refused(id, chunk);
	free(p);
	free(chunk);
	free(id);
}

Test(store_vm, restore_from_a_corrupt_manifest_is_refused)
{
	H_NEED_GUEST();
	char *chunk, *id = snapshot_for_damage(&chunk), *p = obj_path(id);
	flip_byte(p, 30);
	expect_restore_refused(id, id);
	free(p);
	free(chunk);
	free(id);
}

/* ============================================================ REST API */

Test(store_vm, rest_snapshot_to_the_store)
{
	H_NEED_GUEST();
	store_init();
	struct vmh *a = vmh_boot(&e.vms, "a", &e.opts);
	vmh_js_expect(a, "var n = 7; n", "7");
	char *body = NULL;
	/* Running: refused, nothing written */
	int code =
	    vmh_api(a, "PUT", "/api/v1/vm.snapshot", "{\"destination_url\": \"store://x\"}", &body);
	cr_assert_eq(code, 409, "vm.snapshot of a running VM: %d %s", code, body);
	free(body);
	cr_assert_eq(count_entries("snapshots"), 0);
	vmh_pause(a);

	code =
	    vmh_api(a, "PUT", "/api/v1/vm.snapshot", "{\"destination_url\": \"store://x\"}", &body);
	cr_assert_eq(code, 200, "vm.snapshot: %d %s", code, body);
	json_t *j = json_loads(body, 0, NULL);
	const char *id = json_string_value(json_object_get(j, "id"));
	cr_assert_not_null(id, "%s", body);
	cr_assert_eq(strlen(id), 32);
	cr_assert_eq(strspn(id, "0123456789abcdef"), 32, "%s", id);
	cr_assert_eq(json_object_size(j), 1, "%s", body);
	char *tagfile = h_fmt("%s/tags/x", e.store), *tag = h_read_file(tagfile),
	     *want = h_fmt("%s\n", id);
	cr_assert_str_eq(tag, want);
	char *marker = h_fmt("%s/snapshots/%s", e.store, id);
	cr_assert(exists(marker));
	free(marker);
	free(tag);
	free(want);
	char *first = strdup(id);
	json_decref(j);
	free(body);

	/* bad tags: 400, nothing written */
	static const char *const bad[] = { "store://bad/tag", "store://.hidden", "store://a b",
					   "store://-x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *req = h_fmt("{\"destination_url\": \"%s\"}", bad[i]);
		code = vmh_api(a, "PUT", "/api/v1/vm.snapshot", req, &body);
		cr_assert_eq(code, 400, "%s: %d %s", bad[i], code, body);
		cr_assert_not_null(strstr(body, "tag"), "%s: %s", bad[i], body);
		free(body);
		free(req);
	}
	cr_assert_eq(count_entries("snapshots"), 1);
	cr_assert_eq(count_entries("tags"), 1);
	cr_assert_eq(count_entries("tmp"), 0);
	code =
	    vmh_api(a, "PUT", "/api/v1/vm.snapshot", "{\"destination_url\": \"ftp://x\"}", &body);
	cr_assert_eq(code, 400, "ftp://: %d %s", code, body);
	free(body);

	/* store:// alone: untagged; store://x again: the tag moves */
	code =
	    vmh_api(a, "PUT", "/api/v1/vm.snapshot", "{\"destination_url\": \"store://\"}", &body);
	cr_assert_eq(code, 200, "store://: %d %s", code, body);
	free(body);
	cr_assert_eq(count_entries("snapshots"), 2);
	cr_assert_eq(count_entries("tags"), 1);
	code =
	    vmh_api(a, "PUT", "/api/v1/vm.snapshot", "{\"destination_url\": \"store://x\"}", &body);
	cr_assert_eq(code, 200, "%d %s", code, body);
	j = json_loads(body, 0, NULL);
	id = json_string_value(json_object_get(j, "id"));
	cr_assert_not_null(id);
	tag = h_read_file(tagfile);
	want = h_fmt("%s\n", id);
	cr_assert_str_eq(tag, want, "the tag x did not move");
	cr_assert_str_neq(id, first);
	free(tag);
	free(want);
	json_decref(j);
	free(body);
	vmh_resume(a);
	vmh_js_expect(a, "n + 1", "8");
	vmh_stop(a);

	/* restored through the REST API of an empty VMM, by tag */
	struct vmh *r = vmh_empty(&e.vms, "r", e.store);
	char *agent = h_fmt("%s/r.agent", e.dir);
	char *req = h_fmt("{\"source_url\": \"store://x\", \"resume\": true, "
			"\"config\": {\"agent\": {\"socket\": \"%s\"}}}",
			agent);
	code = vmh_api(r, "PUT", "/api/v1/vm.restore", req, &body);
	cr_assert_eq(code, 204, "vm.restore: %d %s", code, body);
	free(body);
	free(r->agent);
	r->agent = agent;
	vmh_assert_state(r, "Running");
	vmh_js_expect(r, "n * 6", "42");
	free(req);
	free(tagfile);
	free(first);
}

/* Issue 15, failure 7: an option after the store command is honoured, never
 * ignored: `store du --store DIR` works on DIR, not on the default store
 * ($FORKVM_STORE here), which stays untouched; conflicting --store options
 * and an out-of-range chunk size are usage errors (exit 2). */
Test(store_vm, store_options_anywhere_are_honoured_never_ignored)
{
	char *def = h_join(e.dir, "default-store"), *out = NULL, *er = NULL;
	setenv("FORKVM_STORE", def, 1);
	cr_assert_eq(forkctl(NULL, &er, "store", "init", "--store", e.store, "--chunk-size", "64K",
			     NULL),
		     0, "%s", er);
	free(er);
	cr_assert_eq(forkctl(&out, &er, "store", "du", "--store", e.store, NULL), 0, "%s", er);
	cr_assert(strstr(out, "snapshots"), "%s", out);
	free(out);
	free(er);
	cr_assert_eq(forkctl(&out, &er, "store", "--store", e.store, "ls", NULL), 0, "%s", er);
	free(out);
	free(er);
	cr_assert_eq(forkctl(&out, &er, "store", "gc", "--store=" "/nonexistent/x", NULL), 1);
	cr_assert(strstr(er, "/nonexistent/x"), "the error names the store it was given: %s", er);
	free(out);
	free(er);
	cr_assert_eq(forkctl(NULL, &er, "--store", e.store, "store", "ls", "--store", def, NULL), 2);
	cr_assert(strstr(er, "--store given twice"), "%s", er);
	free(er);
	cr_assert_eq(forkctl(NULL, &er, "store", "--bogus", "ls", NULL), 2);
	free(er);
	cr_assert_eq(forkctl(NULL, &er, "store", "init", "--store", def, "--chunk-size", "1T", NULL), 2);
	cr_assert(strstr(er, "power of two between 4K and 64M"), "%s", er);
	free(er);
	cr_assert(access(def, F_OK) != 0, "the default store %s was touched", def);
	unsetenv("FORKVM_STORE");
	free(def);
}
