/* tests/integration/test_snapshot.c - snapshot and restore on real KVM
 * (docs/snapshot-format.md): the user walkthrough through forkvm --restore,
 * forkctl restore and resume=true; refusals when taking a snapshot; the
 * continuity of JavaScript state, threads on every vCPU, vector registers
 * and blocked system calls in a new process; chains of restores; restores
 * of one snapshot running side by side; damaged or edited snapshots; a full
 * disk; the format as documented; channel contents (a request sent while
 * paused, a reply waiting for a reader) and memory freed after a restore.
 *
 * Every forkvm the tests start runs in a fresh h_tmpdir() with its sockets
 * and console there, dies with the test process (PR_SET_PDEATHSIG) and is
 * killed in .fini. No assertion depends on how fast the host is: waits are
 * bounded polls, and the clock checks compare the guest's time with host
 * times measured around it. */
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
#include <linux/kvm.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/agent_client.h"
#include "tests/lib/harness.h"
#include "tests/lib/vmh.h"

#define T_MS 60000
#define MiB (1024ULL * 1024)
#define GiB (1024ULL * MiB)
#define PAGE 4096ULL

/* ------------------------------------------------------------ environment */

static struct {
	char *dir; /* everything of the test lives here */
	struct vmh_set vms;
	char *mnt; /* a tmpfs mounted by the test */
} e;

/* An empty VMM that refused restores are sent to (9.), started on demand. */
static struct vmh *empty_vmm_for_refusals;

static void setup_dir(void)
{
	e.dir = h_tmpdir();
	vmh_set_init(&e.vms, e.dir);
}

static void teardown(void)
{
	vmh_set_free(&e.vms);
	if (e.mnt) {
		umount2(e.mnt, MNT_DETACH);
		free(e.mnt);
	}
	if (e.dir)
		h_rmtree(e.dir);
	free(e.dir);
	memset(&e, 0, sizeof(e));
	empty_vmm_for_refusals = NULL;
}

static char *path_in(const char *name)
{
	return h_join(e.dir, name);
}

static char *url_of(const char *dir)
{
	return h_fmt("file://%s", dir);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* forkctl --api-socket=SOCK a1 [a2]; returns the exit status. */
static int ctl(const char *sock, char **out, char **err, const char *a1, const char *a2)
{
	char *bin = h_bin("forkctl"), *opt = h_fmt("--api-socket=%s", sock);
	const char *argv[] = { bin, opt, a1, a2, NULL };
	int st = h_run(e.dir, argv, T_MS, out, err);
	free(bin);
	free(opt);
	return st;
}

/* forkctl --agent=SOCK a1 [a2]. */
static int actl(const char *sock, char **out, char **err, const char *a1, const char *a2)
{
	char *bin = h_bin("forkctl"), *opt = h_fmt("--agent=%s", sock);
	const char *argv[] = { bin, opt, a1, a2, NULL };
	int st = h_run(e.dir, argv, T_MS, out, err);
	free(bin);
	free(opt);
	return st;
}

/* ------------------------------------------------------------ the agent */

/* The agent's info result (caller decrefs). */
static json_t *agent_info(struct vmh *v)
{
	json_t *r = NULL;
	int rc = agent_client_info(vmh_agent(v), T_MS, &r);
	cr_assert_eq(rc, 0, "%s: info: %s", v->name, strerror(-rc));
	cr_assert(agent_client_reply_ok(r, NULL, NULL), "%s: info failed", v->name);
	json_t *res = json_incref(json_object_get(r, "result"));
	json_decref(r);
	return res;
}

static long long jnum(const json_t *o, const char *key)
{
	const json_t *j = json_object_get(o, key);
	cr_assert(json_is_number(j), "no number %s in the agent's info", key);
	return json_is_integer(j) ? (long long)json_integer_value(j)
				  : (long long)json_real_value(j);
}

/* ------------------------------------------------------------ files */

static void hex128(XXH128_hash_t h, char out[33])
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", c.digest[i]);
}

static void xxh_hex(const void *data, size_t len, char out[33])
{
	hex128(XXH3_128bits(data, len), out);
}

static bool zero_page(const uint8_t *p)
{
	for (size_t i = 0; i < PAGE; i++)
		if (p[i])
			return false;
	return true;
}

/* The format's memory checksum, computed independently: XXH3-128 over
 * (page index, 8 bytes little-endian; the 4096 page bytes) of every
 * non-zero page, in order; holes skipped with SEEK_DATA/SEEK_HOLE. Works
 * for any file (a last partial page is zero-padded), so it identifies the
 * contents of every file of a snapshot. */
static void nonzero_digest(int fd, uint64_t size, char out[33], uint64_t *pages)
{
	const size_t chunk = 1 << 20;
	XXH3_state_t *st = XXH3_createState();
	uint8_t *buf = malloc(chunk);
	uint64_t pos = 0;

	cr_assert(st && buf);
	XXH3_128bits_reset(st);
	*pages = 0;
	while (pos < size) {
		off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
		if (d < 0)
			break;
		off_t hole = lseek(fd, d, SEEK_HOLE);
		cr_assert(hole >= 0);
		uint64_t s = (uint64_t)d & ~(PAGE - 1);
		uint64_t end = ((uint64_t)hole + PAGE - 1) & ~(PAGE - 1);
		if (end > size)
			end = size;
		for (uint64_t at = s; at < end;) {
			uint64_t n = end - at < chunk ? end - at : chunk;
			uint64_t padded = (n + PAGE - 1) & ~(PAGE - 1);
			memset(buf, 0, padded);
			for (uint64_t got = 0; got < n;) {
				ssize_t r = pread(fd, buf + got, n - got, (off_t)(at + got));
				cr_assert(r > 0, "read error");
				got += (uint64_t)r;
			}
			for (uint64_t p = 0; p < padded; p += PAGE) {
				if (zero_page(buf + p))
					continue;
				uint64_t idx = (at + p) / PAGE;
				uint8_t le[8];
				for (int i = 0; i < 8; i++)
					le[i] = (uint8_t)(idx >> (8 * i));
				XXH3_128bits_update(st, le, 8);
				XXH3_128bits_update(st, buf + p, PAGE);
				(*pages)++;
			}
			at += n;
		}
		pos = end;
	}
	hex128(XXH3_128bits_digest(st), out);
	XXH3_freeState(st);
	free(buf);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names in dir (malloc'd, NULL-terminated), n in *count. */
static char **list_dir(const char *dir, int *count)
{
	DIR *d = opendir(dir);
	char **names = calloc(256, sizeof(char *));
	struct dirent *de;
	int n = 0;

	cr_assert(names);
	if (d) {
		while ((de = readdir(d)) && n < 255)
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				names[n++] = strdup(de->d_name);
		closedir(d);
	}
	qsort(names, (size_t)n, sizeof(char *), cmp_str);
	if (count)
		*count = n;
	return names;
}

static void free_list(char **names)
{
	for (int i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
}

static char *join_list(char **names)
{
	size_t len = 1;
	for (int i = 0; names[i]; i++)
		len += strlen(names[i]) + 1;
	char *s = calloc(1, len);
	for (int i = 0; names[i]; i++) {
		strcat(s, names[i]);
		strcat(s, " ");
	}
	return s;
}

/* Every file of dir: name, mode, size, mtime (ns), content digest. Two
 * equal fingerprints: nothing in dir changed. */
static char *fingerprint(const char *dir)
{
	int n;
	char **names = list_dir(dir, &n);
	size_t cap = 256 + (size_t)n * 256;
	char *out = calloc(1, cap);
	struct stat st;

	if (stat(dir, &st) < 0) {
		snprintf(out, cap, "(%s: %s)", dir, strerror(errno));
		free_list(names);
		return out;
	}
	for (int i = 0; i < n; i++) {
		char *p = h_join(dir, names[i]), hex[33] = "-";
		uint64_t pages = 0;
		cr_assert_eq(lstat(p, &st), 0);
		if (S_ISREG(st.st_mode)) {
			int fd = open(p, O_RDONLY | O_CLOEXEC);
			cr_assert(fd >= 0);
			nonzero_digest(fd, (uint64_t)st.st_size, hex, &pages);
			close(fd);
		}
		size_t len = strlen(out);
		snprintf(out + len, cap - len,
			 "%s mode %o size %lld mtime %lld.%09ld pages %llu %s\n", names[i],
			 st.st_mode, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
			 st.st_mtim.tv_nsec, (unsigned long long)pages, hex);
		free(p);
	}
	free_list(names);
	return out;
}

/* Names in dir that look like a snapshot's temporary sibling. */
static char *tmp_siblings(const char *dir)
{
	char **names = list_dir(dir, NULL);
	char *s = calloc(1, 4096);
	for (int i = 0; names[i]; i++)
		if (strstr(names[i], ".tmp")) {
			strncat(s, names[i], 4000 - strlen(s));
			strcat(s, " ");
		}
	free_list(names);
	return s;
}

static json_t *load_json(const char *dir, const char *name)
{
	char *p = h_join(dir, name);
	json_error_t je;
	json_t *j = json_load_file(p, 0, &je);
	cr_assert(j, "%s: %s", p, je.text);
	free(p);
	return j;
}

/* Writes doc to dir/name as the snapshot writer does (dump + newline);
 * returns its size and checksum. */
static size_t store_json(const char *dir, const char *name, const json_t *doc, size_t flags,
			 char hex[33])
{
	char *text = json_dumps(doc, flags), *p = h_join(dir, name);
	cr_assert(text);
	char *nl = h_fmt("%s\n", text);
	size_t len = strlen(nl);
	cr_assert_eq(h_write_file(p, nl), 0);
	if (hex)
		xxh_hex(nl, len, hex);
	free(text);
	free(nl);
	free(p);
	return len;
}

/* Edits the units of dir/state.json and rewrites the manifest's size and
 * checksum for it, so that the checksum passes and only the edit is wrong. */
static void edit_state_units(const char *dir, void (*edit)(json_t *units))
{
	char hex[33];
	json_t *state = load_json(dir, "state.json");
	json_t *units = json_object_get(state, "units");
	cr_assert(json_is_array(units));
	edit(units);
	size_t len = store_json(dir, "state.json", state, JSON_INDENT(1), hex);
	json_decref(state);
	json_t *man = load_json(dir, "snapshot.json");
	json_t *ent = json_object_get(json_object_get(man, "files"), "state.json");
	cr_assert(json_is_object(ent));
	json_object_set_new(ent, "size", json_integer((json_int_t)len));
	json_object_set_new(ent, "xxh3_128", json_string(hex));
	store_json(dir, "snapshot.json", man, JSON_INDENT(2), NULL);
	json_decref(man);
}

static json_t *find_unit(json_t *units, const char *name)
{
	size_t i;
	json_t *u;
	json_array_foreach(units, i, u) {
		if (!strcmp(json_string_value(json_object_get(u, "name")), name))
			return u;
	}
	cr_assert_fail("state.json has no unit %s", name);
	return NULL;
}

/* Polls path until needle occurs at least count times; returns the text. */
static char *wait_text(const char *path, const char *needle, int count, int timeout_ms,
		       struct h_proc *proc)
{
	char *c = NULL;
	for (int t = 0; t <= timeout_ms; t += 20) {
		free(c);
		c = h_read_file(path);
		if (c && h_count(c, needle) >= count)
			return c;
		if (proc && h_wait(proc, 0) >= 0)
			break; /* the VM is gone: no more output */
		h_sleep_ms(20);
	}
	cr_assert_fail("%s: fewer than %d '%s' after %d ms:\n%s", path, count, needle, timeout_ms,
		       c ? c : "(no file)");
	return NULL;
}

/* True if a server accepts connections on the Unix socket path. */
static bool connectable(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static bool bad_exit(int st, const char *err)
{
	return st > 0 && st < 128 && !strstr(err, "Sanitizer") && !strstr(err, "runtime error");
}

/* ------------------------------------------------------------ JS state */

/* Variables, a closure with a counter, a 1e6-number array, an object graph
 * with shared references, a typed array of random numbers, a loaded
 * script's function, and tick() called 25 times. */
static void js_build_state(struct vmh *v)
{
	free(vmh_js(
	    v, "var greeting = 'héllo, wörld ✓'; var answer = 42; var flag = true;"
	       "var counter = (function () { var n = 0; return function () { return ++n; }; })();"
	       "counter(); counter(); counter(); undefined"));
	vmh_js_expect(
	    v,
	    "var big = []; for (var i = 0; i < 1000000; i++) big.push((i * 7919) % 1000003);"
	    "big.length",
	    "1000000");
	vmh_js_expect(
	    v,
	    "var graph = {name: 'root', kids: [{id: 1, tags: ['a', 'b']},"
	    " {id: 2, nested: {deep: {deeper: [1, 2.5, -3, null, 'x']}}}], when: 1234567890123};"
	    "graph.shared = graph.kids[1]; graph.kids[0].sibling = graph.kids[1];"
	    "graph.kids[0].up = 'root'; for (var k = 0; k < 500; k++) graph['k' + k] = {v: k * k};"
	    "JSON.stringify(graph).length > 1000",
	    "true");
	vmh_js_expect(v,
		      "var rnd = new Float64Array(100000); for (var i = 0; i < rnd.length; i++)"
		      " rnd[i] = Math.random(); rnd.length",
		      "100000");
	json_t *r = NULL;
	cr_assert_eq(
	    agent_client_load(vmh_agent(v),
			      "function handler(x) { return 'handled ' + x + ' #' + counter(); }",
			      "handlers.js", T_MS, &r),
	    0);
	cr_assert(agent_client_reply_ok(r, NULL, NULL));
	json_decref(r);
	free(vmh_js(v, "var ticks = 0; function tick() { return ++ticks; }"));
	for (int i = 1; i <= 25; i++) {
		char want[16];
		snprintf(want, sizeof(want), "%d", i);
		vmh_js_expect(v, "tick()", want);
	}
}

/* What js_build_state leaves, as one JSON text computed in the guest
 * (sums and checksums in JavaScript). Does not change any state. */
static const char *JS_DIGEST =
    "(function () { var s = 0, c = 0; for (var i = 0; i < big.length; i++) {"
    " s += big[i]; c = (c * 31 + big[i]) % 4294967291; }"
    " var r = 0, rc = 0; for (var j = 0; j < rnd.length; j++) { r += rnd[j];"
    " rc = (rc * 33 + Math.floor(rnd[j] * 65536)) % 4294967291; }"
    " return JSON.stringify({greeting: greeting, answer: answer, flag: flag, len: big.length,"
    " sum: s, check: c, graph: JSON.stringify(graph), same: graph.shared === graph.kids[1] &&"
    " graph.kids[0].sibling === graph.kids[1], rnd: [r, rc], ticks: ticks}); })()";

/* The state after a restore: the digest is the one taken before the
 * snapshot, the closure and tick() continue from their counts. Changes
 * the state (the closure and tick advance); call once per restore. */
static void js_check_state(struct vmh *v, const char *digest_before)
{
	char *d = vmh_js(v, JS_DIGEST);
	cr_assert_str_eq(d, digest_before,
			 "%s: the JavaScript state changed:\nbefore %.600s\nafter  %.600s", v->name,
			 digest_before, d);
	free(d);
	vmh_js_expect(v, "counter()", "4");
	vmh_js_expect(v, "tick()", "26");
	vmh_js_expect(v, "tick()", "27");
	vmh_js_expect(v, "handler('x')", "\"handled x #5\"");
	vmh_js_expect(v, "big[999999] + big[123456]", "1613460");
}

/* ------------------------------------------------------------ 1. walkthrough */

Test(snapshot, walkthrough_cli_api_and_resume_true, .fini = teardown, .timeout = 180)
{
	char *out = NULL, *err = NULL;
	struct stat st;

	H_NEED_GUEST();
	setup_dir();
	struct vmh *a =
	    vmh_boot(&e.vms, "a",
		     &(struct vmh_opts){.extra = (const char *const[]){
					    "--cpus", "boot=4", "--memory", "size=4G", NULL}});
	js_build_state(a);
	char *digest = vmh_js(a, JS_DIGEST);
	cr_assert_eq(ctl(a->api, NULL, &err, "pause", NULL), 0, "%s", err);
	free(err);

	char *snap = path_in("snap"), *url = url_of(snap);
	cr_assert_eq(ctl(a->api, &out, &err, "snapshot", url), 0, "forkctl snapshot: %s", err);
	free(out);
	free(err);

	int n;
	char **names = list_dir(snap, &n);
	char *joined = join_list(names);
	cr_assert_str_eq(joined, "config.json memory-ranges snapshot.json state.json ",
			 "the snapshot holds: %s", joined);
	free(joined);
	free_list(names);
	char *mr = h_join(snap, "memory-ranges");
	cr_assert_eq(stat(mr, &st), 0);
	cr_assert_eq((unsigned long long)st.st_size, 4 * GiB, "memory-ranges is %lld bytes",
		     (long long)st.st_size);
	/* Sparse: only the pages the guest touched (the JavaScript state above,
	 * ~75 MiB with the agent's heap reserve) take room on disk. */
	json_t *man = load_json(snap, "snapshot.json");
	json_int_t data_pages = json_integer_value(json_object_get(
	    json_object_get(json_object_get(man, "files"), "memory-ranges"), "data_pages"));
	json_decref(man);
	unsigned long long used = (unsigned long long)st.st_blocks * 512;
	cr_assert_lt(used, 128 * MiB, "memory-ranges takes %llu bytes on disk: it is not sparse",
		     used);
	cr_assert_leq(used, (unsigned long long)data_pages * PAGE + MiB,
		      "memory-ranges takes %llu bytes on disk for %lld non-zero pages", used,
		      (long long)data_pages);
	free(mr);
	char *tmps = tmp_siblings(e.dir);
	cr_assert_str_eq(tmps, "", "temporary directories left behind: %s", tmps);
	free(tmps);
	vmh_assert_state(a, "Paused");

	/* forkvm --api-socket B --restore: takes over A's agent socket path while
	 * A still runs (paused). */
	struct vmh *b = vmh_restore(
	    &e.vms, "b", snap, &(struct vmh_opts){.agent_at = a->agent, .serial = VMH_SERIAL_NONE});
	cr_assert_eq(ctl(b->api, &out, NULL, "info", NULL), 0);
	cr_assert(strstr(out, "\"Paused\""), "forkctl info: %s", out);
	free(out);
	cr_assert_eq(ctl(b->api, NULL, &err, "resume", NULL), 0, "forkctl resume: %s", err);
	free(err);
	vmh_assert_state(b, "Running");
	js_check_state(b, digest);
	json_t *info = agent_info(b);
	cr_assert_eq(jnum(info, "generation"), 1, "generation after one restore");
	json_decref(info);
	/* A VM booted fresh refuses a socket path a live VM serves. */
	char *bin = h_bin("forkvm"), *kernel = h_payload("agent"),
	     *sock = h_fmt("socket=%s", a->agent);
	const char *fresh[] = { bin, "--kernel", kernel, "--agent", sock, "--serial", "off", NULL };
	int fst = h_run(e.dir, fresh, T_MS, NULL, &err);
	cr_assert(bad_exit(fst, err) && strstr(err, "in use"), "fresh boot on a live path: %d %s",
		  fst, err);
	free(err);
	free(bin);
	free(kernel);
	free(sock);
	agent_client_close(b->ag); /* the channel serves one client at a time */
	b->ag = NULL;
	cr_assert_eq(actl(a->agent, &out, &err, "eval", "answer * 2"), 0, "forkctl eval: %s", err);
	cr_assert_str_eq(out, "84\n");
	free(out);
	free(err);
	vmh_stop(b);

	/* forkctl --api-socket=C restore source_url=... into an empty VMM. */
	struct vmh *c = vmh_empty(&e.vms, "c", NULL);
	vmh_set_agent(c, a->agent);
	char *spec = h_fmt("source_url=%s", url);
	cr_assert_eq(ctl(c->api, NULL, &err, "restore", spec), 0, "forkctl restore: %s", err);
	free(err);
	vmh_assert_state(c, "Paused");
	cr_assert_eq(ctl(c->api, NULL, &err, "resume", NULL), 0, "%s", err);
	free(err);
	js_check_state(c, digest);
	vmh_stop(c);

	/* --restore source_url=...,resume=true: running at once. */
	struct vmh *d = vmh_restore(
	    &e.vms, "d", snap,
	    &(struct vmh_opts){.resume = true, .agent_at = a->agent, .serial = VMH_SERIAL_NONE});
	js_check_state(d, digest);
	info = agent_info(d);
	cr_assert_eq(jnum(info, "generation"), 1);
	json_decref(info);
	vmh_stop(d);

	/* The original is untouched by all this: still paused, and resumes. */
	vmh_assert_state(a, "Paused");
	vmh_resume(a);
	vmh_assert_state(a, "Running");
	free(digest);
	free(snap);
	free(url);
	free(spec);
}

/* ------------------------------------------------------------ 2. refusals */

Test(snapshot, refusals_running_nonempty_file_and_empty_dir_ok, .fini = teardown, .timeout = 180)
{
	char *out = NULL, *err = NULL, *body = NULL;

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v =
	    vmh_boot(&e.vms, "v",
		     &(struct vmh_opts){.extra = (const char *const[]){"--cpus", "boot=2", NULL}});
	free(vmh_js(v, "var kept = 'still here'"));

	/* A running VM: 409, forkctl exits 1 saying to pause. */
	char *s1 = path_in("s1"), *u1 = url_of(s1);
	cr_assert_eq(ctl(v->api, NULL, &err, "snapshot", u1), 1, "a running VM was snapshotted");
	cr_assert(strstr(err, "409") && strstr(err, "pause"), "forkctl: %s", err);
	free(err);
	cr_assert_neq(access(s1, F_OK), 0, "a refused snapshot created %s", s1);
	vmh_assert_state(v, "Running");
	vmh_js_expect(v, "kept", "\"still here\"");

	vmh_pause(v);
	/* A non-empty directory: 400, nothing in it changes. */
	char *full = path_in("full"), *keep = h_join(full, "keep.txt"), *ufull = url_of(full);
	cr_assert_eq(mkdir(full, 0755), 0);
	cr_assert_eq(h_write_file(keep, "precious\n"), 0);
	char *fp = fingerprint(full);
	char *json = h_fmt("{\"destination_url\": \"%s\"}", ufull);
	int st = vmh_api(v, "PUT", "/api/v1/vm.snapshot", json, &body);
	cr_assert_eq(st, 400, "snapshot into a non-empty directory: %d %s", st, body);
	cr_assert(strstr(body, "not empty"), "%s", body);
	free(body);
	free(json);
	cr_assert_eq(ctl(v->api, NULL, &err, "snapshot", ufull), 1);
	cr_assert(strstr(err, "400"), "%s", err);
	free(err);
	char *fp2 = fingerprint(full);
	cr_assert_str_eq(fp, fp2, "the non-empty directory changed");
	free(fp);
	free(fp2);
	/* A directory holding only a hidden file is not empty either. */
	char *hid = path_in("hidden"), *hidf = h_join(hid, ".dot"), *uhid = url_of(hid);
	cr_assert_eq(mkdir(hid, 0755), 0);
	cr_assert_eq(h_write_file(hidf, "x"), 0);
	cr_assert_eq(ctl(v->api, NULL, &err, "snapshot", uhid), 1,
		     "a directory with a dot file was used");
	free(err);

	/* A file: 400, the file unchanged. */
	char *file = path_in("afile"), *ufile = url_of(file);
	cr_assert_eq(h_write_file(file, "not a directory\n"), 0);
	cr_assert_eq(ctl(v->api, NULL, &err, "snapshot", ufile), 1, "a file was overwritten");
	cr_assert(strstr(err, "400") && strstr(err, "not a directory"), "%s", err);
	free(err);
	char *text = h_read_file(file);
	cr_assert_str_eq(text, "not a directory\n");
	free(text);

	/* A missing parent and an unsupported scheme: 4xx. */
	char *deep = h_fmt("file://%s/no/such/parent/snap", e.dir);
	cr_assert_eq(ctl(v->api, NULL, &err, "snapshot", deep), 1);
	cr_assert(strstr(err, "(HTTP 4"), "missing parent: %s", err);
	free(err);
	cr_assert_eq(ctl(v->api, NULL, &err, "snapshot", "s3://bucket/snap"), 1);
	cr_assert(strstr(err, "400") && strstr(err, "s3://bucket/snap"), "s3: %s", err);
	free(err);
	char *tmps = tmp_siblings(e.dir);
	cr_assert_str_eq(tmps, "", "refused snapshots left temporary directories: %s", tmps);
	free(tmps);

	/* After all that the VM is still paused and works. */
	vmh_assert_state(v, "Paused");
	vmh_resume(v);
	vmh_js_expect(v, "kept", "\"still here\"");
	vmh_pause(v);

	/* An empty existing directory is accepted; no .tmp sibling remains. */
	char *empty = path_in("empty"), *uempty = h_fmt("file://%s/", empty); /* a trailing slash */
	cr_assert_eq(mkdir(empty, 0700), 0);
	cr_assert_eq(ctl(v->api, &out, &err, "snapshot", uempty), 0, "empty directory: %s", err);
	free(out);
	free(err);
	char *man = h_join(empty, "snapshot.json");
	cr_assert_eq(access(man, F_OK), 0);
	free(man);
	tmps = tmp_siblings(e.dir);
	cr_assert_str_eq(tmps, "", "a successful snapshot left: %s", tmps);
	free(tmps);
	/* The same destination a second time: refused, the first intact. */
	fp = fingerprint(empty);
	cr_assert_eq(ctl(v->api, NULL, &err, "snapshot", uempty), 1, "a snapshot was overwritten");
	free(err);
	fp2 = fingerprint(empty);
	cr_assert_str_eq(fp, fp2);
	free(fp);
	free(fp2);
	/* The paused VM can be snapshotted again elsewhere, then resumes. */
	vmh_snapshot(v, s1);
	vmh_resume(v);
	vmh_js_expect(v, "kept", "\"still here\"");
	/* The snapshot taken from the empty directory restores. */
	vmh_stop(v);
	struct vmh *r = vmh_restore(
	    &e.vms, "r", empty,
	    &(struct vmh_opts){.resume = true, .agent_at = v->agent, .serial = VMH_SERIAL_NONE});
	vmh_js_expect(r, "kept", "\"still here\"");

	/* No VM at all: vm.snapshot is a state error. */
	struct vmh *none = vmh_empty(&e.vms, "none", NULL);
	json = h_fmt("{\"destination_url\": \"file://%s/never\"}", e.dir);
	st = vmh_api(none, "PUT", "/api/v1/vm.snapshot", json, &body);
	cr_assert(st >= 400 && st < 500, "snapshot without a VM: %d %s", st, body);
	free(body);
	free(json);
	free(s1);
	free(u1);
	free(full);
	free(keep);
	free(ufull);
	free(hid);
	free(hidf);
	free(uhid);
	free(file);
	free(ufile);
	free(deep);
	free(empty);
	free(uempty);
}

/* ------------------------------------------------------------ 3. JS state */

Test(snapshot, js_state_continues_in_a_new_process, .fini = teardown, .timeout = 180)
{
	H_NEED_GUEST();
	setup_dir();
	struct vmh *v =
	    vmh_boot(&e.vms, "orig",
		     &(struct vmh_opts){.extra = (const char *const[]){"--cpus", "boot=2", NULL}});
	js_build_state(v);
	char *digest = vmh_js(v, JS_DIGEST);
	json_t *info = agent_info(v);
	char *boot_id = strdup(json_string_value(json_object_get(info, "boot_id")));
	cr_assert_eq(jnum(info, "generation"), 0);
	json_decref(info);
	vmh_pause(v);
	char *snap = path_in("snap");
	vmh_snapshot(v, snap);
	/* The original is gone before the restore starts. */
	pid_t orig_pid = v->proc.pid;
	vmh_stop(v);
	cr_assert(!connectable(v->agent), "the original VM still listens");

	h_sleep_ms(1500); /* the snapshot spends some time on disk */
	struct vmh *r = vmh_restore(&e.vms, "new", snap, NULL);
	cr_assert_neq(r->proc.pid, orig_pid);
	vmh_resume(r);
	js_check_state(r, digest);
	/* The guest's wall clock is the host's (docs: "right after a restore"). */
	struct timespec w0, w1;
	clock_gettime(CLOCK_REALTIME, &w0);
	char *now = vmh_js(r, "Date.now()");
	clock_gettime(CLOCK_REALTIME, &w1);
	double g = strtod(now, NULL), lo = w0.tv_sec * 1e3 + w0.tv_nsec / 1e6 - 2,
	       hi = w1.tv_sec * 1e3 + w1.tv_nsec / 1e6 + 2;
	cr_assert(g >= lo && g <= hi,
		  "Date.now() in the restored guest is %.0f, the host's %.0f..%.0f", g, lo, hi);
	free(now);
	info = agent_info(r);
	cr_assert_eq(jnum(info, "generation"), 1);
	cr_assert_str_eq(json_string_value(json_object_get(info, "boot_id")), boot_id,
			 "a clone keeps the boot id (docs/agent-protocol.md)");
	json_decref(info);
	/* The state goes on changing normally. */
	vmh_js_expect(r, "big.push(7); big.length", "1000001");
	vmh_js_expect(
	    r, "graph.kids[1].nested.deep.deeper[1] = 9; graph.shared.nested.deep.deeper[1]", "9");
	vmh_js_expect(r, "tick()", "28");
	free(digest);
	free(boot_id);
	free(snap);
}

/* ------------------------------------------------------------ platforms */

/* vm.info's "platform". */
static char *vm_platform_of(struct vmh *v)
{
	char *body = NULL;
	int st = vmh_api(v, "GET", "/api/v1/vm.info", NULL, &body);
	cr_assert_eq(st, 200, "%s: vm.info: %d %s", v->name, st, body);
	json_t *j = json_loads(body, 0, NULL);
	const char *p = json_string_value(json_object_get(j, "platform"));
	cr_assert(p, "%s: vm.info has no platform: %s", v->name, body);
	char *r = strdup(p);
	json_decref(j);
	free(body);
	return r;
}

/* The XSAVE components a guest may use, found independently of forkvm:
 * on the process platform the host CPU's XCR0 (less AMX, which needs a
 * permission no guest can get, and deprecated MPX); on KVM what
 * KVM_GET_SUPPORTED_CPUID offers of x87, SSE, AVX, AVX-512 and PKRU (what
 * the KVM platform enables). */
static uint64_t host_xcr0(void)
{
	unsigned a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
	if (!(c & (1u << 27)))
		return 3;
	__asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
	return ((((uint64_t)d << 32) | a) & ~((1ULL << 3) | (1ULL << 4) | (1ULL << 17) | (1ULL << 18)));
}

static uint64_t kvm_xcr0(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 256 * sizeof(struct kvm_cpuid_entry2));
	uint64_t x = 0;
	bool xsave = false, pku = false;
	cr_assert(fd >= 0 && c);
	c->nent = 256;
	cr_assert_eq(ioctl(fd, KVM_GET_SUPPORTED_CPUID, c), 0, "KVM_GET_SUPPORTED_CPUID: %s",
		     strerror(errno));
	for (unsigned i = 0; i < c->nent; i++) {
		if (c->entries[i].function == 1)
			xsave = c->entries[i].ecx & (1u << 26);
		if (c->entries[i].function == 7 && c->entries[i].index == 0)
			pku = c->entries[i].ecx & (1u << 3);
		if (c->entries[i].function == 0xd && c->entries[i].index == 0)
			x = c->entries[i].eax & 0x2e7;
	}
	free(c);
	close(fd);
	if (!pku)
		x &= ~0x200ULL;
	return (xsave ? x : 0) | 3;
}

/* A snapshot taken on KVM restores on the process platform, and the
 * reverse, with the JavaScript state intact (docs/snapshot-format.md,
 * "Platforms"). The reverse needs the KVM vCPUs to offer every XSAVE
 * component the host CPU offered the guest on the process platform;
 * where they do not, the restore is refused with a message saying so. */
Test(snapshot, js_state_crosses_platforms, .fini = teardown, .timeout = 300)
{
	if (!h_have_kvm())
		cr_skip_test("cross-platform restore needs KVM beside the process platform: it runs "
			     "where both exist (natively with /dev/kvm, or in the KVM lane)");
	if (h_on_process())
		cr_skip_test("cross-platform restore runs once, in the KVM pass");
	setup_dir();
	setenv("FORKVM_PLATFORM", "kvm", 1);
	struct vmh *k =
	    vmh_boot(&e.vms, "onkvm",
		     &(struct vmh_opts){.extra = (const char *const[]){"--cpus", "boot=2", NULL}});
	char *p = vm_platform_of(k);
	cr_assert_str_eq(p, "kvm");
	free(p);
	js_build_state(k);
	char *digest = vmh_js(k, JS_DIGEST);
	vmh_pause(k);
	char *snap = path_in("snap-kvm");
	vmh_snapshot(k, snap);
	vmh_stop(k);
	json_t *sj = load_json(snap, "snapshot.json");
	cr_assert_str_eq(json_string_value(json_object_get(sj, "platform")), "kvm");
	json_decref(sj);

	/* KVM -> process */
	setenv("FORKVM_PLATFORM", "process", 1);
	struct vmh *r = vmh_restore(&e.vms, "onproc", snap, NULL);
	p = vm_platform_of(r);
	cr_assert_str_eq(p, "process");
	free(p);
	vmh_resume(r);
	js_check_state(r, digest);
	vmh_js_expect(r, "big.push(11); big.length", "1000001");
	char *digest2 = vmh_js(r, JS_DIGEST);
	vmh_pause(r);
	char *snap2 = path_in("snap-proc");
	vmh_snapshot(r, snap2);
	vmh_stop(r);
	sj = load_json(snap2, "snapshot.json");
	cr_assert_str_eq(json_string_value(json_object_get(sj, "platform")), "process");
	json_decref(sj);

	/* process -> KVM */
	setenv("FORKVM_PLATFORM", "kvm", 1);
	uint64_t need = host_xcr0(), have = kvm_xcr0();
	if (need & ~have) {
		char *bin = h_bin("forkvm"), *src = h_fmt("source_url=file://%s", snap2), *out = NULL,
		     *err = NULL;
		const char *argv[] = { bin, "--restore", src, NULL };
		int st = h_run(e.dir, argv, T_MS, &out, &err);
		cr_assert(st > 0 && st < 128, "the refused restore exited with %d:\n%s", st, err);
		cr_assert(strstr(err, "which this kvm VM's vCPUs lack"),
			  "the refusal does not say why (process XCR0 0x%llx, KVM 0x%llx):\n%s",
			  (unsigned long long)need, (unsigned long long)have, err);
		cr_log_info("process -> KVM refused as it must be here: the host offers XCR0 0x%llx, "
			    "KVM 0x%llx (%s)",
			    (unsigned long long)need, (unsigned long long)have, h_where());
		free(bin), free(src), free(out), free(err);
	} else {
		struct vmh *b = vmh_restore(&e.vms, "back", snap2, NULL);
		p = vm_platform_of(b);
		cr_assert_str_eq(p, "kvm");
		free(p);
		vmh_resume(b);
		char *d = vmh_js(b, JS_DIGEST);
		cr_assert_str_eq(d, digest2, "the JavaScript state changed on the way back to KVM");
		free(d);
		vmh_js_expect(b, "tick()", "28");
		vmh_js_expect(b, "big[1000000]", "11");
	}
	free(digest), free(digest2), free(snap), free(snap2);
}

/* ------------------------------------------------------------ 4-6. payloads */

struct counts {
	int report;
	unsigned long c[8];
	int n;
};

/* Parses every "counts N: c0 c1 ..." line of text; returns how many. */
static int parse_counts(const char *text, struct counts *out, int max)
{
	int k = 0;
	for (const char *p = text; p && (p = strstr(p, "counts ")) && k < max; p++) {
		struct counts *c = &out[k];
		char *end;
		memset(c, 0, sizeof(*c));
		c->report = (int)strtol(p + 7, &end, 10);
		if (*end != ':')
			continue;
		const char *q = end + 1;
		while (*q == ' ' && c->n < 8) {
			c->c[c->n++] = strtoul(q + 1, &end, 10);
			q = end;
		}
		if (*q != '\n')
			continue; /* a partial line */
		k++;
	}
	return k;
}

Test(snapshot, counter_threads_continue_on_all_vcpus, .fini = teardown, .timeout = 180)
{
	static struct counts pre[4096], post[4096];

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v =
	    vmh_boot(&e.vms, "cnt",
		     &(struct vmh_opts){.payload = "counter",
					.extra = (const char *const[]){
					    "--cpus", "boot=4", "--cmdline", "3 6 200", NULL}});
	free(wait_text(v->console, "counts ", 3, T_MS, &v->proc));
	vmh_pause(v);
	char *before = h_read_file(v->console);
	int npre = parse_counts(before, pre, 4096);
	cr_assert_geq(npre, 3, "console:\n%s", before);
	struct counts last = pre[npre - 1];
	cr_assert_eq(last.n, 3, "console:\n%s", before);
	char *snap = path_in("snap");
	vmh_snapshot(v, snap);
	/* The snapshot did not disturb the original: it resumes and finishes. */
	vmh_resume(v);
	int st0 = h_wait(&v->proc, 150000);
	char *orig = h_read_file(v->console);
	cr_assert_eq(st0, 0, "the original exited with %d after the snapshot:\n%s", st0, orig);
	cr_assert(strstr(orig, "done\n"), "%s", orig);
	free(orig);
	vmh_stop(v);

	struct vmh *r = vmh_restore(&e.vms, "cnt2", snap, &(struct vmh_opts){.no_agent = true});
	vmh_resume(r);
	int st = h_wait(&r->proc, 150000);
	char *after = h_read_file(r->console), *err = vmh_stderr(r);
	cr_assert_eq(st, 0, "the restored counter exited with %d\nconsole:\n%s\nstderr:\n%s", st,
		     after ? after : "", err);
	cr_assert(after && strstr(after, "done\n"), "no 'done':\n%s", after ? after : "");
	int npost = parse_counts(after, post, 4096);
	cr_assert_geq(npost, 2, "too few reports after the restore:\n%s", after);
	/* The reports go on from the last one before the snapshot. */
	cr_assert_eq(post[0].report, last.report + 1,
		     "last report before the snapshot %d, first after %d\nbefore:\n%s\nafter:\n%s",
		     last.report, post[0].report, before, after);
	for (int k = 0; k < npost; k++) {
		cr_assert_eq(post[k].n, 3);
		if (k)
			cr_assert_eq(post[k].report, post[k - 1].report + 1, "reports skip:\n%s",
				     after);
		for (int i = 0; i < 3; i++) {
			unsigned long prev = k ? post[k - 1].c[i] : last.c[i];
			cr_assert_geq(post[k].c[i], prev,
				      "counter %d went back from %lu to %lu (report "
				      "%d)\nbefore:\n%s\nafter:\n%s",
				      i, prev, post[k].c[i], post[k].report, before, after);
		}
	}
	/* Every counting thread (one per vCPU) ran after the restore. */
	for (int i = 0; i < 3; i++)
		cr_assert_gt(
		    post[npost - 1].c[i], last.c[i],
		    "counter %d did not move after the restore (%lu): its vCPU does not run\n%s", i,
		    last.c[i], after);
	free(before);
	free(after);
	free(err);
	free(snap);
}

Test(snapshot, vector_registers_survive, .fini = teardown, .timeout = 180)
{
	const int rounds = 16;
	char cmdline[32];

	H_NEED_GUEST();
	setup_dir();
	snprintf(cmdline, sizeof(cmdline), "%d 100000000", rounds);
	struct vmh *v = vmh_boot(
	    &e.vms, "vec",
	    &(struct vmh_opts){.payload = "vector",
			       .extra = (const char *const[]){"--cmdline", cmdline, NULL}});
	free(wait_text(v->console, "round ok", 2, T_MS, &v->proc));
	vmh_pause(v);
	char *before = h_read_file(v->console);
	int done_before = h_count(before, "round ok");
	cr_assert(!strstr(before, "intact after"), "the run ended before the pause; console:\n%s",
		  before);
	char *snap = path_in("snap");
	vmh_snapshot(v, snap);
	/* The original resumes too and runs alongside its restore. */
	vmh_resume(v);

	struct vmh *r = vmh_restore(&e.vms, "vec2", snap, &(struct vmh_opts){.no_agent = true});
	vmh_resume(r);
	int st0 = h_wait(&v->proc, 150000);
	char *orig = h_read_file(v->console);
	cr_assert_eq(st0, 0, "the original exited with %d after the snapshot:\n%s", st0, orig);
	cr_assert(strstr(orig, "intact after") && h_count(orig, "round ok") == rounds, "%s", orig);
	free(orig);
	int st = h_wait(&r->proc, 150000);
	char *after = h_read_file(r->console), *err = vmh_stderr(r);
	cr_assert_eq(st, 0, "status %d\nconsole:\n%s\nstderr:\n%s", st, after ? after : "", err);
	cr_assert(after && strstr(after, "intact after"), "console:\n%s", after ? after : "");
	cr_assert(!strstr(after, "CORRUPTED"), "%s", after);
	cr_assert_eq(done_before + h_count(after, "round ok"), rounds,
		     "%d rounds before the snapshot and %d after, not %d", done_before,
		     h_count(after, "round ok"), rounds);
	free(before);
	free(after);
	free(err);
	free(snap);
}

/* The last "tick N" in text, whether the ticks are first, first+1, ... */
static long ticks_in(const char *text, long first, bool *contiguous)
{
	long last = first - 1;
	*contiguous = true;
	for (const char *p = text; p && (p = strstr(p, "tick ")); p += 5) {
		long n = strtol(p + 5, NULL, 10);
		if (n != last + 1)
			*contiguous = false;
		last = n;
	}
	return last;
}

Test(snapshot, blocking_ticks_continue_contiguously, .fini = teardown, .timeout = 180)
{
	bool contiguous;

	H_NEED_GUEST();
	setup_dir();
	uint64_t t_boot = now_ns();
	struct vmh *v =
	    vmh_boot(&e.vms, "blk",
		     &(struct vmh_opts){.payload = "blocking",
					.extra = (const char *const[]){
					    "--cpus", "boot=2", "--cmdline", "16 100", NULL}});
	free(wait_text(v->console, "tick ", 3, T_MS, &v->proc));
	vmh_pause(v);
	uint64_t t_paused = now_ns();
	char *before = h_read_file(v->console);
	long last = ticks_in(before, 1, &contiguous);
	cr_assert(contiguous && last >= 3 && last < 16, "console:\n%s", before);
	char *snap = path_in("snap");
	vmh_snapshot(v, snap);
	/* The original, resumed, finishes as if nothing happened. */
	vmh_resume(v);
	int st0 = h_wait(&v->proc, 150000);
	char *orig = h_read_file(v->console);
	cr_assert_eq(st0, 0, "the original exited with %d after the snapshot:\n%s", st0, orig);
	cr_assert(ticks_in(orig, 1, &contiguous) == 16 && contiguous &&
		      strstr(orig, "done 16 ticks"),
		  "the original after the snapshot:\n%s", orig);
	free(orig);
	vmh_stop(v);
	/* Time on disk: the guest's clock must not count it. */
	h_sleep_ms(2500);

	uint64_t t_restore = now_ns();
	struct vmh *r = vmh_restore(&e.vms, "blk2", snap, &(struct vmh_opts){.no_agent = true});
	vmh_resume(r);
	int st = h_wait(&r->proc, 150000);
	uint64_t t_exit = now_ns();
	char *after = h_read_file(r->console), *err = vmh_stderr(r);
	cr_assert_eq(st, 0, "status %d\nconsole:\n%s\nstderr:\n%s", st, after ? after : "", err);
	cr_assert(after, "no console");
	long end = ticks_in(after, last + 1, &contiguous);
	cr_assert(contiguous && end == 16,
		  "ticks do not continue from %ld to 16\nbefore:\n%s\nafter:\n%s", last, before,
		  after);
	char *d = strstr(after, "done 16 ticks in ");
	cr_assert(d, "no 'done':\n%s", after);
	long ms = strtol(d + strlen("done 16 ticks in "), NULL, 10);
	cr_assert_geq(ms, 1600, "16 sleeps of 100 ms took %ld ms of guest time", ms);
	/* The guest ran at most from boot to pause and from restore to exit: the
	 * 2.5 s between (and any pause) are not guest time. Not a timing
	 * assumption: it holds however slow the host is. */
	long bound = (long)((t_paused - t_boot + t_exit - t_restore) / 1000000) + 5;
	cr_assert_leq(ms, bound,
		      "guest time %ld ms exceeds the %ld ms the VM ran: the time between snapshot "
		      "and restore was counted",
		      ms, bound);
	free(before);
	free(after);
	free(err);
	free(snap);
}

/* ------------------------------------------------------------ 7. chains */

Test(snapshot, chain_of_five_generations, .fini = teardown, .timeout = 180)
{
	char name[32], *snaps[6];
	long long mono_prev = -1, up_prev = 0;
	uint64_t t_info_prev = 0, t_paused_prev = 0;

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v =
	    vmh_boot(&e.vms, "gen0",
		     &(struct vmh_opts){.extra = (const char *const[]){"--cpus", "boot=4", NULL}});
	free(vmh_js(v, "var hist = []; var work = 0; var data = {};"
		       "var base = []; for (var i = 0; i < 20000; i++) base.push(i); undefined"));
	for (int g = 0; g <= 5; g++) {
		uint64_t t_restore = now_ns();
		if (g > 0) {
			snprintf(name, sizeof(name), "gen%d", g);
			v = vmh_restore(&e.vms, name, snaps[g - 1],
					&(struct vmh_opts){.agent_at = v->agent});
			vmh_resume(v);
		}
		/* What every earlier generation did is here. */
		char *h = vmh_js(v, "JSON.stringify(hist.map(function (x) { return x.g; }))");
		char want[128] = "\"[";
		for (int k = 0; k < g; k++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%d",
				 k ? "," : "", k);
		strcat(want, "]\"");
		cr_assert_str_eq(h, want, "generation %d sees history %s", g, h);
		free(h);
		char *w = vmh_jsf(v, "work");
		char wantw[16];
		snprintf(wantw, sizeof(wantw), "%d", g * 10);
		cr_assert_str_eq(w, wantw, "generation %d: work counter %s", g, w);
		free(w);
		for (int k = 0; k < g; k++) {
			char *s = vmh_jsf(
			    v,
			    "var s = 0; for (var i = 0; i < data.g%d.length; i++) s += data.g%d[i];"
			    " [data.g%d.length, s, base[%d]]",
			    k, k, k, k);
			char exp[64];
			snprintf(exp, sizeof(exp), "[30000,%d,%d]", 30000 * (k + 1), 1000000 + k);
			cr_assert_str_eq(s, exp, "generation %d: data of generation %d is %s", g, k,
					 s);
			free(s);
		}

		/* The identity: generation g, the clock never goes back and did not
		 * count the time between snapshot and restore. */
		uint64_t t_info = now_ns();
		json_t *info = agent_info(v);
		uint64_t t_info_done = now_ns();
		cr_assert_eq(jnum(info, "generation"), g, "generation %d reports %lld", g,
			     jnum(info, "generation"));
		long long mono = jnum(info, "monotonic_ns"), up = jnum(info, "uptime_ms");
		json_decref(info);
		cr_assert_geq(up, up_prev, "generation %d: uptime_ms %lld after %lld", g, up,
			      up_prev);
		up_prev = up;
		if (g > 0) {
			cr_assert_gt(mono, mono_prev, "generation %d: monotonic_ns %lld after %lld",
				     g, mono, mono_prev);
			long long ran =
			    (long long)(t_paused_prev - t_info_prev + t_info_done - t_restore);
			cr_assert_leq(
			    mono - mono_prev, ran + 1000000,
			    "generation %d: the guest clock advanced %lld ns, the VM ran at most "
			    "%lld ns",
			    g, mono - mono_prev, ran);
		}
		mono_prev = mono;
		t_info_prev = t_info;

		/* This generation's work. */
		for (int i = 0; i < 10; i++)
			free(vmh_js(v, "++work"));
		free(vmh_jsf(
		    v,
		    "hist.push({g: %d, r: Math.random()}); data.g%d = [];"
		    " for (var i = 0; i < 30000; i++) data.g%d.push(%d); base[%d] = %d; undefined",
		    g, g, g, g + 1, g, 1000000 + g));
		vmh_pause(v);
		t_paused_prev = now_ns();
		snprintf(name, sizeof(name), "snap%d", g);
		snaps[g] = path_in(name);
		vmh_snapshot(v, snaps[g]);
		vmh_stop(v);
		h_sleep_ms(1000); /* time on disk */
	}

	/* The last snapshot holds all six generations' work. */
	v = vmh_restore(
	    &e.vms, "last", snaps[5],
	    &(struct vmh_opts){.resume = true, .agent_at = v->agent, .serial = VMH_SERIAL_OFF});
	vmh_js_expect(v, "JSON.stringify(hist.map(function (x) { return x.g; }))",
		      "\"[0,1,2,3,4,5]\"");
	vmh_js_expect(v, "work", "60");
	vmh_js_expect(v, "base.slice(0, 7)", "[1000000,1000001,1000002,1000003,1000004,1000005,6]");
	vmh_js_expect(
	    v, "var u = {}; hist.forEach(function (x) { u[x.r] = 1; }); Object.keys(u).length",
	    "6");
	json_t *info = agent_info(v);
	cr_assert_eq(jnum(info, "generation"), 6);
	json_decref(info);
	vmh_stop(v);
	/* An early snapshot of the chain is unaffected by the later generations. */
	v = vmh_restore(
	    &e.vms, "again2", snaps[2],
	    &(struct vmh_opts){.resume = true, .agent_at = v->agent, .serial = VMH_SERIAL_OFF});
	vmh_js_expect(v, "JSON.stringify(hist.map(function (x) { return x.g; }))", "\"[0,1,2]\"");
	vmh_js_expect(v, "[work, base[3], typeof data.g3]", "[30,3,\"undefined\"]");
	info = agent_info(v);
	cr_assert_eq(jnum(info, "generation"), 3);
	json_decref(info);
	for (int g = 0; g <= 5; g++)
		free(snaps[g]);
}

/* ------------------------------------------------------------ 8. independence */

Test(snapshot, five_restores_are_independent, .fini = teardown, .timeout = 180)
{
	enum { N = 5 };
	struct vmh *r[N];
	char *first[N], name[32];

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v =
	    vmh_boot(&e.vms, "base",
		     &(struct vmh_opts){.extra = (const char *const[]){
					    "--cpus", "boot=2", "--memory", "size=1G", NULL}});
	free(vmh_js(
	    v, "var shared = 'base'; var arr = []; for (var i = 0; i < 100000; i++) arr.push(-1);"
	       "undefined"));
	vmh_pause(v);
	char *snap = path_in("snap");
	vmh_snapshot(v, snap);
	char *fp_before = fingerprint(snap);
	/* The stream the clones would share without re-seeding. */
	vmh_resume(v);
	char *base_random = vmh_js(v, "Math.random()");
	json_t *info = agent_info(v);
	char *boot_id = strdup(json_string_value(json_object_get(info, "boot_id")));
	json_decref(info);
	vmh_stop(v);

	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "clone%d", i);
		r[i] =
		    vmh_restore(&e.vms, name, snap, &(struct vmh_opts){.serial = VMH_SERIAL_OFF});
	}
	for (int i = 0; i < N; i++)
		vmh_resume(r[i]);
	for (int i = 0; i < N; i++)
		first[i] = vmh_js(r[i], "Math.random()");
	for (int i = 0; i < N; i++) {
		free(vmh_jsf(
		    r[i],
		    "globalThis.mine = 'vm%d'; shared = shared + '+' + mine;"
		    " for (var i = 0; i < arr.length; i++) arr[i] = %d;"
		    " var mybig = []; for (var j = 0; j < 200000; j++) mybig.push(%d); undefined",
		    i, i, i));
	}
	for (int i = 0; i < N; i++) {
		char want[128];
		snprintf(want, sizeof(want), "[\"vm%d\",\"base+vm%d\",%d,%d]", i, i, 100000 * i,
			 200000 * i);
		vmh_js_expect(
		    r[i],
		    "var s = 0, t = 0; for (var i = 0; i < arr.length; i++) s += arr[i];"
		    " for (var j = 0; j < mybig.length; j++) t += mybig[j]; [mine, shared, s, t]",
		    want);
		info = agent_info(r[i]);
		cr_assert_eq(jnum(info, "generation"), 1);
		cr_assert_str_eq(json_string_value(json_object_get(info, "boot_id")), boot_id);
		json_decref(info);
	}
	for (int i = 0; i < N; i++) {
		cr_assert_str_neq(first[i], base_random,
				  "clone %d draws the snapshot's random stream: not re-seeded", i);
		for (int k = 0; k < i; k++)
			cr_assert_str_neq(first[i], first[k],
					  "clones %d and %d share Math.random(): %s", k, i,
					  first[i]);
	}
	/* The snapshot is unchanged while its clones run, and after. */
	char *fp_running = fingerprint(snap);
	cr_assert_str_eq(fp_running, fp_before,
			 "the snapshot changed under running clones:\n%s\n%s", fp_before,
			 fp_running);
	for (int i = 0; i < N; i++)
		vmh_stop(r[i]);
	char *fp_after = fingerprint(snap);
	cr_assert_str_eq(fp_after, fp_before);
	/* And a sixth restore still sees the original data. */
	struct vmh *s = vmh_restore(&e.vms, "sixth", snap,
				    &(struct vmh_opts){.resume = true, .serial = VMH_SERIAL_OFF});
	vmh_js_expect(s, "[shared, typeof mine, arr[0], arr[99999]]",
		      "[\"base\",\"undefined\",-1,-1]");
	for (int i = 0; i < N; i++)
		free(first[i]);
	free(fp_before);
	free(fp_running);
	free(fp_after);
	free(base_random);
	free(boot_id);
	free(snap);
}

/* ------------------------------------------------------------ 9. bad input */

/* A snapshot of an agent VM (2 vCPUs, 256 MiB) with `marker` set, the VM
 * stopped. Returns its directory. */
static char *base_snapshot(void)
{
	struct vmh *v =
	    vmh_boot(&e.vms, "base",
		     &(struct vmh_opts){.extra = (const char *const[]){
					    "--cpus", "boot=2", "--memory", "size=256M", NULL}});
	free(vmh_js(
	    v, "var marker = 'base-ok'; var pad = []; for (var i = 0; i < 50000; i++) pad.push(i);"
	       "undefined"));
	vmh_pause(v);
	char *snap = path_in("snap");
	vmh_snapshot(v, snap);
	vmh_stop(v);
	return snap;
}

/* Restoring src_url must fail with every needle in the message: through
 * forkvm --restore (non-zero exit, no crash, message on stderr) and through
 * vm.restore into an empty VMM (4xx, the VMM keeps serving and has no VM).
 * dir (may be NULL) must not change. */
static void expect_refused(const char *src_url, const char *dir, const char *const needles[])
{
	char *fp = dir ? fingerprint(dir) : NULL;
	char *bin = h_bin("forkvm"), *api_sock = path_in("refused.api");
	char *opt = h_fmt("source_url=%s", src_url), *err = NULL, *body = NULL;
	const char *argv[] = { bin, "--api-socket", api_sock, "--restore", opt, NULL };

	int st = h_run(e.dir, argv, T_MS, NULL, &err);
	cr_assert_neq(st, -1, "forkvm --restore %s did not exit: the bad snapshot was accepted",
		      opt);
	cr_assert(bad_exit(st, err),
		  "forkvm --restore %s: status %d (expected a clean failure)\n%s", opt, st, err);
	for (int i = 0; needles[i]; i++)
		cr_assert(strstr(err, needles[i]), "forkvm --restore: the message lacks '%s':\n%s",
			  needles[i], err);
	free(err);

	if (!empty_vmm_for_refusals)
		empty_vmm_for_refusals = vmh_empty(&e.vms, "empty", NULL);
	struct vmh *m = empty_vmm_for_refusals;
	char *json = h_fmt("{\"source_url\": \"%s\"}", src_url);
	st = vmh_api(m, "PUT", "/api/v1/vm.restore", json, &body);
	cr_assert(st >= 400 && st < 500, "vm.restore %s: %d %s", src_url, st, body);
	for (int i = 0; needles[i]; i++)
		cr_assert(strstr(body, needles[i]), "vm.restore: the error lacks '%s': %s",
			  needles[i], body);
	free(body);
	cr_assert_eq(vmh_api(m, "GET", "/api/v1/vmm.ping", NULL, NULL), 200,
		     "the VMM stopped serving after a refused restore");
	cr_assert_eq(vmh_api(m, "GET", "/api/v1/vm.info", NULL, &body), 404,
		     "a refused restore left a VM: %s", body);
	free(body);
	cr_assert_eq(h_wait(&m->proc, 0), -1, "the VMM exited");

	if (dir) {
		char *fp2 = fingerprint(dir);
		cr_assert_str_eq(fp2, fp,
				 "a refused restore changed the snapshot:\nbefore\n%s\nafter\n%s",
				 fp, fp2);
		free(fp2);
	}
	free(fp);
	free(json);
	free(bin);
	free(api_sock);
	free(opt);
}

static void refused(const char *dir, const char *const needles[])
{
	char *url = url_of(dir);
	expect_refused(url, dir, needles);
	free(url);
}

static void edit_config(const char *dir, void (*edit)(json_t *cfg))
{
	json_t *cfg = load_json(dir, "config.json");
	edit(cfg);
	store_json(dir, "config.json", cfg, JSON_INDENT(2) | JSON_SORT_KEYS, NULL);
	json_decref(cfg);
}

#define BAD_TEST(name) Test(snapshot, name, .fini = teardown, .timeout = 180)
#define NEEDLES(...) ((const char *const[]){ __VA_ARGS__, NULL })

BAD_TEST(bad_missing_directory)
{
	H_NEED_GUEST();
	setup_dir();
	char *dir = path_in("no-such-snapshot"), *url = url_of(dir);
	expect_refused(url, NULL, NEEDLES(dir, "No such file"));
	cr_assert_neq(access(dir, F_OK), 0, "a refused restore created %s", dir);
	free(dir);
	free(url);
}

BAD_TEST(bad_missing_memory_ranges)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot(), *mr = h_join(snap, "memory-ranges");
	cr_assert_eq(unlink(mr), 0);
	refused(snap, NEEDLES("memory-ranges", "No such file"));
	free(mr);
	free(snap);
}

BAD_TEST(bad_truncated_memory_ranges)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot(), *mr = h_join(snap, "memory-ranges");
	cr_assert_eq(truncate(mr, 128 * (off_t)MiB), 0);
	refused(snap, NEEDLES("memory-ranges", "truncated"));
	free(mr);
	free(snap);
}

BAD_TEST(bad_altered_memory_byte)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot(), *mr = h_join(snap, "memory-ranges");
	int fd = open(mr, O_RDWR);
	cr_assert(fd >= 0);
	/* The first non-zero byte of the second data extent's pages (or the
	 * first's), flipped. */
	off_t d = lseek(fd, 0, SEEK_DATA), at = -1;
	uint8_t buf[4096];
	for (off_t p = d; at < 0 && p >= 0 && p < d + (off_t)(64 * MiB); p += 4096) {
		cr_assert_eq(pread(fd, buf, sizeof(buf), p), (ssize_t)sizeof(buf));
		for (int i = 0; i < 4096; i++)
			if (buf[i] && buf[i] != 0xff) {
				at = p + i;
				buf[0] = buf[i] ^ 0x01;
				break;
			}
	}
	cr_assert(at >= 0, "no non-zero byte found");
	cr_assert_eq(pwrite(fd, buf, 1, at), 1);
	close(fd);
	refused(snap, NEEDLES("memory-ranges", "checksum"));
	free(mr);
	free(snap);
}

static void set_memory_512m(json_t *cfg)
{
	json_object_set_new(json_object_get(cfg, "memory"), "size",
			    json_integer(512 * (json_int_t)MiB));
}

BAD_TEST(bad_config_memory_size)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot();
	edit_config(snap, set_memory_512m);
	refused(snap, NEEDLES("config.json", "memory size"));
	free(snap);
}

static void set_cpus_3(json_t *cfg)
{
	json_t *c = json_object_get(cfg, "cpus");
	json_object_set_new(c, "boot_vcpus", json_integer(3));
	json_object_set_new(c, "max_vcpus", json_integer(3));
}

BAD_TEST(bad_config_cpus)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot();
	edit_config(snap, set_cpus_3);
	refused(snap, NEEDLES("config.json", "vCPU count"));
	free(snap);
}

static void set_cmdline(json_t *cfg)
{
	json_object_set_new(json_object_get(cfg, "payload"), "cmdline", json_string("--other"));
}

BAD_TEST(bad_config_payload_changed)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot();
	edit_config(snap, set_cmdline);
	refused(snap, NEEDLES("config.json", "payload"));
	free(snap);
}

static void drop_agent(json_t *cfg)
{
	json_object_del(cfg, "agent");
}

BAD_TEST(bad_config_agent_removed)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot();
	edit_config(snap, drop_agent);
	refused(snap, NEEDLES("config.json", "agent channel"));
	free(snap);
}

BAD_TEST(bad_agent_added_to_a_snapshot_without_one)
{
	char *err = NULL, *body = NULL;

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v =
	    vmh_boot(&e.vms, "nb",
		     &(struct vmh_opts){.payload = "blocking",
					.extra = (const char *const[]){
					    "--cpus", "boot=2", "--cmdline", "1000 100", NULL}});
	free(wait_text(v->console, "tick 1", 1, T_MS, &v->proc));
	vmh_pause(v);
	char *snap = path_in("snap"), *fp;
	vmh_snapshot(v, snap);
	vmh_stop(v);
	fp = fingerprint(snap);
	char *bin = h_bin("forkvm"), *opt = h_fmt("source_url=file://%s", snap);
	char *sock = path_in("added.agent"), *agent = h_fmt("socket=%s", sock);
	const char *argv[] = { bin, "--restore", opt, "--agent", agent, NULL };
	int st = h_run(e.dir, argv, T_MS, NULL, &err);
	cr_assert(st != -1 && bad_exit(st, err) && strstr(err, "agent channel"),
		  "--agent on a snapshot without one: status %d: %s", st, err);
	free(err);
	struct vmh *m = vmh_empty(&e.vms, "m", NULL);
	char *json =
	    h_fmt("{\"source_url\": \"file://%s\", \"config\": {\"agent\": {\"socket\": \"%s\"}}}",
		snap, sock);
	st = vmh_api(m, "PUT", "/api/v1/vm.restore", json, &body);
	cr_assert(st == 400 && strstr(body, "agent channel"), "vm.restore: %d %s", st, body);
	free(body);
	cr_assert_eq(vmh_api(m, "GET", "/api/v1/vm.info", NULL, NULL), 404);
	char *fp2 = fingerprint(snap);
	cr_assert_str_eq(fp2, fp);
	free(fp);
	free(fp2);
	free(json);
	free(bin);
	free(opt);
	free(sock);
	free(agent);
	free(snap);
}

static char *moved_agent;

static void set_agent_path(json_t *cfg)
{
	json_object_set_new(json_object_get(cfg, "agent"), "socket", json_string(moved_agent));
	json_object_set_new(cfg, "hostname", json_string("moved-host"));
}

BAD_TEST(config_agent_path_edit_is_accepted)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot();
	moved_agent = path_in("moved.agent");
	edit_config(snap, set_agent_path);
	char *fp = fingerprint(snap);
	struct vmh *r =
	    vmh_restore(&e.vms, "moved", snap, &(struct vmh_opts){.agent_at = moved_agent});
	char *body = NULL;
	cr_assert_eq(vmh_api(r, "GET", "/api/v1/vm.info", NULL, &body), 200);
	cr_assert(strstr(body, "moved-host") && strstr(body, moved_agent), "vm.info: %s", body);
	free(body);
	vmh_resume(r);
	vmh_js_expect(r, "marker", "\"base-ok\"");
	char *old = path_in("base.agent");
	cr_assert(!connectable(old), "something listens on the snapshot's original agent path");
	free(old);
	vmh_stop(r);
	char *fp2 = fingerprint(snap);
	cr_assert_str_eq(fp2, fp);
	free(fp);
	free(fp2);
	free(moved_agent);
	free(snap);
}

BAD_TEST(bad_config_malformed_json)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot(), *p = h_join(snap, "config.json");
	cr_assert_eq(h_write_file(p, "{\"cpus\": {\"boot_vcpus\": 2,\n"), 0);
	refused(snap, NEEDLES("config.json", "JSON"));
	free(p);
	free(snap);
}

BAD_TEST(bad_state_altered)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot(), *p = h_join(snap, "state.json");
	char *text = h_read_file(p);
	cr_assert(text);
	/* A digit of the clock's monotonic_ns: still valid JSON. */
	char *at = strstr(text, "\"monotonic_ns\"");
	cr_assert(at);
	at = strstr(at, "0x");
	cr_assert(at);
	at[3] = at[3] == '1' ? '2' : '1';
	cr_assert_eq(h_write_file(p, text), 0);
	refused(snap, NEEDLES("state.json", "checksum"));
	free(text);
	free(p);
	free(snap);
}

BAD_TEST(bad_manifest_version_99)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot();
	json_t *man = load_json(snap, "snapshot.json");
	json_object_set_new(man, "version", json_integer(99));
	store_json(snap, "snapshot.json", man, JSON_INDENT(2), NULL);
	json_decref(man);
	refused(snap, NEEDLES("snapshot.json", "version 99"));
	free(snap);
}

static void add_bogus_unit(json_t *units)
{
	json_array_append_new(units,
			      json_pack("{s:s,s:i,s:{}}", "name", "bogus", "version", 1, "state"));
}

BAD_TEST(bad_unknown_unit)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot();
	edit_state_units(snap, add_bogus_unit);
	refused(snap, NEEDLES("unknown state unit 'bogus'"));
	free(snap);
}

static void duplicate_clock_unit(json_t *units)
{
	json_array_append_new(units, json_deep_copy(find_unit(units, "clock")));
}

BAD_TEST(bad_duplicate_unit)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot();
	edit_state_units(snap, duplicate_clock_unit);
	refused(snap, NEEDLES("duplicate", "'clock'"));
	free(snap);
}

static void future_clock_unit(json_t *units)
{
	json_object_set_new(find_unit(units, "clock"), "version", json_integer(7));
}

BAD_TEST(bad_future_unit_version)
{
	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot();
	edit_state_units(snap, future_clock_unit);
	refused(snap, NEEDLES("'clock'", "newer", "7"));
	free(snap);
}

BAD_TEST(restore_into_a_vmm_with_a_vm_is_409)
{
	char *body = NULL;

	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot(), *url = url_of(snap);
	char *json = h_fmt("{\"source_url\": \"%s\"}", url), *fp = fingerprint(snap);
	struct vmh *v = vmh_boot(&e.vms, "busy", NULL);
	int st = vmh_api(v, "PUT", "/api/v1/vm.restore", json, &body);
	cr_assert_eq(st, 409, "restore into a VMM with a running VM: %d %s", st, body);
	cr_assert(strstr(body, "already"), "%s", body);
	free(body);
	vmh_js_expect(v, "1 + 1", "2");
	vmh_assert_state(v, "Running");
	/* A VMM that restored once refuses a second restore too. */
	struct vmh *m = vmh_empty(&e.vms, "m", NULL);
	char *agent = path_in("m.agent");
	char *json2 = h_fmt("{\"source_url\": \"%s\", \"config\": {\"agent\": {\"socket\": \"%s\"},"
			  " \"serial\": {\"mode\": \"Off\"}}}",
			  url, agent);
	st = vmh_api(m, "PUT", "/api/v1/vm.restore", json2, &body);
	cr_assert_eq(st, 204, "first restore: %d %s", st, body);
	free(body);
	st = vmh_api(m, "PUT", "/api/v1/vm.restore", json2, &body);
	cr_assert_eq(st, 409, "second restore: %d %s", st, body);
	free(body);
	vmh_assert_state(m, "Paused");
	vmh_resume(m);
	vmh_set_agent(m, agent);
	vmh_js_expect(m, "marker", "\"base-ok\"");
	char *fp2 = fingerprint(snap);
	cr_assert_str_eq(fp2, fp);
	free(fp);
	free(fp2);
	free(agent);
	free(json);
	free(json2);
	free(url);
	free(snap);
}

BAD_TEST(unsupported_scheme_is_400)
{
	char *out = NULL, *err = NULL;

	H_NEED_GUEST();
	setup_dir();
	expect_refused("s3://x", NULL, NEEDLES("s3://x"));
	struct vmh *m = empty_vmm_for_refusals;
	cr_assert_eq(ctl(m->api, &out, &err, "restore", "source_url=s3://bucket/snap"), 1);
	cr_assert(strstr(err, "400"), "forkctl restore s3: %s", err);
	free(out);
	free(err);
	expect_refused("not-a-url", NULL, NEEDLES("not-a-url"));
}

BAD_TEST(restore_resume_true_after_a_failed_restore)
{
	char *body = NULL;

	H_NEED_GUEST();
	setup_dir();
	char *snap = base_snapshot(), *url = url_of(snap), *fp = fingerprint(snap);
	char *missing = h_fmt("{\"source_url\": \"file://%s/nothing-here\"}", e.dir);
	struct vmh *m = vmh_empty(&e.vms, "m", NULL);
	int st = vmh_api(m, "PUT", "/api/v1/vm.restore", missing, &body);
	cr_assert_eq(st, 400, "%d %s", st, body);
	free(body);
	char *nocpus =
	    h_fmt("{\"source_url\": \"%s\", \"config\": {\"cpus\": {\"boot_vcpus\": 1}}}", url);
	st = vmh_api(m, "PUT", "/api/v1/vm.restore", nocpus, &body);
	cr_assert(st == 400 && strstr(body, "cpus"), "config.cpus on restore: %d %s", st, body);
	free(body);
	free(nocpus);
	char *badresume = h_fmt("{\"source_url\": \"%s\", \"resume\": \"yes\"}", url);
	st = vmh_api(m, "PUT", "/api/v1/vm.restore", badresume, &body);
	cr_assert(st == 400 && strstr(body, "resume"), "resume: \"yes\": %d %s", st, body);
	free(body);
	free(badresume);
	cr_assert_eq(vmh_api(m, "GET", "/api/v1/vm.info", NULL, NULL), 404);
	char *agent = path_in("m.agent"), *con = path_in("m.console");
	char *json = h_fmt("{\"source_url\": \"%s\", \"resume\": true, \"config\": {\"agent\": "
			 "{\"socket\": \"%s\"}, \"serial\": {\"mode\": \"File\", \"file\": \"%s\"},"
			 " \"hostname\": \"clone-7\"}}",
			 url, agent, con);
	st = vmh_api(m, "PUT", "/api/v1/vm.restore", json, &body);
	cr_assert_eq(st, 204, "restore resume=true: %d %s", st, body);
	free(body);
	vmh_assert_state(m, "Running");
	st = vmh_api(m, "GET", "/api/v1/vm.info", NULL, &body);
	json_t *vi = json_loads(body, 0, NULL);
	json_t *vc = json_object_get(vi, "config");
	cr_assert_str_eq(json_string_value(json_object_get(vc, "hostname")), "clone-7", "%s", body);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(vc, "agent"), "socket")),
			 agent, "%s", body);
	json_decref(vi);
	free(body);
	vmh_set_agent(m, agent);
	vmh_js_expect(m, "marker + ' ' + pad.length", "\"base-ok 50000\"");
	vmh_js_expect(m, "print('console works'); 1", "1");
	free(wait_text(con, "console works", 1, T_MS, NULL));
	char *fp2 = fingerprint(snap);
	cr_assert_str_eq(fp2, fp);
	free(fp);
	free(fp2);
	free(agent);
	free(con);
	free(json);
	free(missing);
	free(url);
	free(snap);
}

/* ------------------------------------------------------------ 10. disk full */

Test(snapshot, disk_full_leaves_nothing_and_the_vm_works, .fini = teardown, .timeout = 180)
{
	char *out = NULL, *err = NULL;
	struct statvfs sv;

	H_NEED_GUEST();
	setup_dir();
	char *mnt = path_in("small");
	cr_assert_eq(mkdir(mnt, 0700), 0);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=16m,mode=0700") < 0) {
		int errn = errno;
		free(mnt);
		cr_skip_test("cannot mount a 16 MiB tmpfs (%s): this test needs CAP_SYS_ADMIN",
			     strerror(errn));
	}
	e.mnt = mnt;

	struct vmh *v = vmh_boot(&e.vms, "v", NULL);
	/* ~56 MB of random numbers: more than the tmpfs holds. */
	char *sum =
	    vmh_js(v, "var big = new Float64Array(7000000);"
		      " for (var i = 0; i < 65536; i++) big[i] = Math.random();"
		      " for (var n = 65536; n < big.length; n *= 2)"
		      "  big.set(big.subarray(0, Math.min(n, big.length - n)), n);"
		      " function bigsum() { var s = 0; for (var i = 0; i < big.length; i += 7) "
		      "s += big[i]; return s; }"
		      " bigsum()");
	vmh_pause(v);
	char *dest = h_join(mnt, "snap"), *url = url_of(dest);
	cr_assert_eq(ctl(v->api, &out, &err, "snapshot", url), 1, "a snapshot fit in 16 MiB?");
	cr_assert(strstr(err, "No space left"), "forkctl snapshot on a full disk: %s", err);
	free(out);
	free(err);
	int n;
	char **names = list_dir(mnt, &n);
	char *joined = join_list(names);
	cr_assert_eq(n, 0, "a failed snapshot left in the tmpfs: %s", joined);
	free(joined);
	free_list(names);
	/* And its blocks are free again (no file kept open after unlinking). */
	cr_assert_eq(statvfs(mnt, &sv), 0);
	cr_assert_geq((unsigned long long)sv.f_bfree * sv.f_bsize, 15 * MiB,
		      "the tmpfs still has %llu bytes in use",
		      (unsigned long long)(sv.f_blocks - sv.f_bfree) * sv.f_bsize);
	/* Through the API: the same clean failure. */
	char *json = h_fmt("{\"destination_url\": \"%s\"}", url), *body = NULL;
	int st = vmh_api(v, "PUT", "/api/v1/vm.snapshot", json, &body);
	cr_assert(st >= 400, "%d %s", st, body);
	cr_assert(strstr(body, "No space left"), "%s", body);
	free(body);
	free(json);
	names = list_dir(mnt, &n);
	cr_assert_eq(n, 0);
	free_list(names);

	/* The VM is still paused, resumes, and its memory is intact. */
	vmh_assert_state(v, "Paused");
	vmh_resume(v);
	char *again = vmh_js(v, "bigsum()");
	cr_assert_str_eq(again, sum);
	free(again);
	/* A snapshot where there is room works. */
	vmh_pause(v);
	char *ok = path_in("ok");
	vmh_snapshot(v, ok);
	vmh_resume(v);
	vmh_js_expect(v, "big.length", "7000000");
	free(ok);
	free(sum);
	free(dest);
	free(url);
}

/* ------------------------------------------------------------ 11. format */

Test(snapshot, format_matches_the_documentation, .fini = teardown, .timeout = 180)
{
	struct stat st;
	char hex[33];
	uint64_t pages;

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v =
	    vmh_boot(&e.vms, "f",
		     &(struct vmh_opts){.extra = (const char *const[]){
					    "--cpus", "boot=2", "--memory", "size=256M", NULL}});
	free(vmh_js(v, "var x = []; for (var i = 0; i < 100000; i++) x.push(i); undefined"));
	vmh_pause(v);
	struct timespec t0, t1;
	clock_gettime(CLOCK_REALTIME, &t0);
	char *snap = path_in("snap");
	vmh_snapshot(v, snap);
	clock_gettime(CLOCK_REALTIME, &t1);

	cr_assert_eq(stat(snap, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0700, "directory mode %o", st.st_mode & 0777);
	const char *files[] = { "config.json", "state.json", "memory-ranges", "snapshot.json" };
	for (int i = 0; i < 4; i++) {
		char *p = h_join(snap, files[i]);
		cr_assert_eq(stat(p, &st), 0, "%s", p);
		cr_assert_eq(st.st_mode & 0777, 0600, "%s mode %o", files[i], st.st_mode & 0777);
		free(p);
	}

	json_t *man = load_json(snap, "snapshot.json");
	cr_assert_str_eq(json_string_value(json_object_get(man, "format")), "forkvm-snapshot");
	cr_assert_eq(json_integer_value(json_object_get(man, "version")), 1);
	cr_assert_str_eq(json_string_value(json_object_get(man, "loader")), "function-guest");
	cr_assert(json_is_string(json_object_get(man, "forkvm_version")));
	cr_assert_eq(json_integer_value(json_object_get(man, "vcpus")), 2);
	json_t *mem = json_object_get(man, "memory");
	cr_assert_eq(json_integer_value(json_object_get(mem, "size")), 256 * (json_int_t)MiB);
	cr_assert_eq(json_integer_value(json_object_get(mem, "page_size")), 4096);
	json_int_t created = json_integer_value(json_object_get(man, "created_realtime_ns"));
	json_int_t lo = (json_int_t)t0.tv_sec * 1000000000 + t0.tv_nsec;
	json_int_t hi = (json_int_t)t1.tv_sec * 1000000000 + t1.tv_nsec;
	cr_assert(created >= lo && created <= hi, "created_realtime_ns %lld not in [%lld, %lld]",
		  (long long)created, (long long)lo, (long long)hi);
	/* config.json is the manifest's config, in vm.create's schema. */
	json_t *cfg = load_json(snap, "config.json");
	cr_assert(json_equal(cfg, json_object_get(man, "config")),
		  "config.json differs from the manifest's copy");
	cr_assert_eq(
	    json_integer_value(json_object_get(json_object_get(cfg, "cpus"), "boot_vcpus")), 2);
	cr_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(cfg, "agent"), "socket")), v->agent);
	json_decref(cfg);

	/* Checksums, computed here as the format describes them. */
	json_t *fl = json_object_get(man, "files");
	for (int i = 0; i < 2; i++) {
		char *p = h_join(snap, files[i]), *text = h_read_file(p);
		cr_assert(text);
		json_t *ent = json_object_get(fl, files[i]);
		cr_assert_eq(json_integer_value(json_object_get(ent, "size")),
			     (json_int_t)strlen(text), "%s size", files[i]);
		xxh_hex(text, strlen(text), hex);
		cr_assert_str_eq(json_string_value(json_object_get(ent, "xxh3_128")), hex,
				 "%s checksum", files[i]);
		free(text);
		free(p);
	}
	char *mr = h_join(snap, "memory-ranges");
	int fd = open(mr, O_RDONLY);
	cr_assert(fd >= 0);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq((unsigned long long)st.st_size, 256 * MiB);
	nonzero_digest(fd, (uint64_t)st.st_size, hex, &pages);
	close(fd);
	json_t *ment = json_object_get(fl, "memory-ranges");
	cr_assert_eq(json_integer_value(json_object_get(ment, "size")), 256 * (json_int_t)MiB);
	cr_assert_eq(json_integer_value(json_object_get(ment, "data_pages")), (json_int_t)pages);
	cr_assert_str_eq(json_string_value(json_object_get(ment, "xxh3_128_nonzero_pages")), hex,
			 "memory-ranges checksum");
	cr_assert_lt((unsigned long long)st.st_blocks * 512, (pages + 256) * PAGE,
		     "zero pages are stored: %llu bytes on disk for %llu data pages",
		     (unsigned long long)st.st_blocks * 512, (unsigned long long)pages);
	free(mr);

	/* state.json: the documented units, in order. */
	json_t *state = load_json(snap, "state.json");
	cr_assert_str_eq(json_string_value(json_object_get(state, "format")), "forkvm-state");
	cr_assert_eq(json_integer_value(json_object_get(state, "version")), 1);
	/* platform-neutral: no unit of KVM's */
	const char *order[] = { "clock", "console", "agent", "fguest" };
	const int versions[] = { 1, 1, 1, 2 };
	json_t *units = json_object_get(state, "units");
	cr_assert_eq(json_array_size(units), 4, "%zu units", json_array_size(units));
	for (size_t i = 0; i < 4; i++) {
		json_t *u = json_array_get(units, i);
		cr_assert_str_eq(json_string_value(json_object_get(u, "name")), order[i]);
		cr_assert_eq(json_integer_value(json_object_get(u, "version")), versions[i]);
		cr_assert(json_is_object(json_object_get(u, "state")));
	}
	/* each thread carries its registers and XSAVE area */
	json_t *threads = json_object_get(json_object_get(find_unit(units, "fguest"), "state"),
					  "threads");
	cr_assert_geq(json_array_size(threads), 1);
	json_t *th0 = json_array_get(threads, 0);
	json_t *regs = json_object_get(th0, "regs");
	cr_assert(json_is_string(json_object_get(regs, "rip")) &&
		  json_is_string(json_object_get(regs, "rsp")) &&
		  json_is_string(json_object_get(regs, "r15")), "registers of thread 0");
	json_t *xs = json_object_get(th0, "xsave");
	cr_assert(json_is_string(json_object_get(xs, "area")) &&
		  json_string_length(json_object_get(xs, "area")) >= 2 * 576, "XSAVE area of thread 0");
	json_t *clk = json_object_get(find_unit(units, "clock"), "state");
	const char *mono = json_string_value(json_object_get(clk, "monotonic_ns"));
	cr_assert(mono && !strncmp(mono, "0x", 2), "64-bit values are \"0x...\" strings: %s",
		  mono ? mono : "(none)");
	json_decref(state);
	json_decref(man);
	free(snap);
}

/* ------------------------------------------------------------ 12. channels */

/* A request sent to the agent while the VM is paused is part of the
 * snapshot (state unit "agent", input peeked from the client socket): the
 * restored VM executes it. */
Test(snapshot, request_sent_while_paused_runs_in_the_restore, .fini = teardown, .timeout = 180)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v = vmh_boot(&e.vms, "p", NULL);
	free(vmh_js(v, "var base = 40; undefined"));
	agent_client_close(v->ag); /* the channel serves one client at a time */
	v->ag = NULL;
	vmh_pause(v);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", v->agent);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	json_t *req = json_pack("{s:s,s:s,s:s}", "id", "late", "op", "eval", "code",
				"print('pending ' + (base + 2)); 'x'");
	char *buf;
	size_t len;
	cr_assert_eq(agent_frame_encode(req, &buf, &len), 0);
	cr_assert_eq(write(fd, buf, len), (ssize_t)len);
	free(buf);
	json_decref(req);
	h_sleep_ms(200);
	char *snap = path_in("snap");
	vmh_snapshot(v, snap);
	vmh_stop(v);
	close(fd);

	struct vmh *r = vmh_restore(&e.vms, "r", snap, NULL);
	char *c = h_read_file(r->console);
	cr_assert(!c || !strstr(c, "pending 42"), "the restored VM ran before resume");
	free(c);
	vmh_resume(r);
	free(wait_text(r->console, "pending 42", 1, T_MS, &r->proc));
	vmh_js_expect(r, "base", "40");
	free(snap);
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	cr_assert(fd >= 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect %s: %s", path,
		     strerror(errno));
	return fd;
}

static void send_frame(int fd, const char *id, const char *code)
{
	json_t *req = json_pack("{s:s,s:s,s:s}", "id", id, "op", "eval", "code", code);
	char *buf;
	size_t len;
	cr_assert_eq(agent_frame_encode(req, &buf, &len), 0);
	cr_assert_eq(write(fd, buf, len), (ssize_t)len);
	free(buf);
	json_decref(req);
}

/* Reads frames from fd until the reply with id; returns it (caller decrefs). */
static json_t *read_reply(int fd, const char *id)
{
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap);
	struct timeval tv = { T_MS / 1000, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (;;) {
		size_t consumed = 0;
		json_t *msg = NULL;
		int rc = agent_frame_decode(buf, len, &consumed, &msg);
		if (rc == 0) {
			memmove(buf, buf + consumed, len - consumed);
			len -= consumed;
			const char *got = json_string_value(json_object_get(msg, "id"));
			if (got && !strcmp(got, id)) {
				free(buf);
				return msg;
			}
			json_decref(msg);
			continue;
		}
		cr_assert_eq(rc, -EAGAIN,
			     "a malformed frame on the agent channel (%s): the stream is torn",
			     strerror(-rc));
		if (consumed) {
			memmove(buf, buf + consumed, len - consumed);
			len -= consumed;
		}
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			cr_assert(buf);
		}
		ssize_t n = read(fd, buf + len, cap - len);
		cr_assert(n > 0, "no reply '%s' (read: %s)", id, n < 0 ? strerror(errno) : "EOF");
		len += (size_t)n;
	}
}

/* The agent writes a 3 MB reply while no client is connected: the VMM
 * buffers part of it and the agent blocks in write ("a write waiting for
 * room"). Both survive the snapshot: a client of the restored VM gets the
 * whole reply. */
Test(snapshot, agent_reply_waiting_for_a_reader_survives, .fini = teardown, .timeout = 180)
{
	char name[32], *snap = NULL;
	size_t pending = 0;

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v = vmh_boot(&e.vms, "w", NULL);
	free(vmh_js(v, "var n = 7; undefined"));
	agent_client_close(v->ag);
	v->ag = NULL;
	/* Sent and disconnected while paused: the guest reads the request
	 * after resume, with no client to take the reply. */
	vmh_pause(v);
	int fd = raw_connect(v->agent);
	send_frame(fd, "big",
		   "var s = new Array(3000001).join('x'); print('built ' + s.length); s");
	close(fd);
	vmh_resume(v);
	free(wait_text(v->console, "built 3000000", 1, T_MS, &v->proc));
	/* Snapshot once reply bytes wait in the channel. */
	for (int k = 0; k < 60 && pending == 0; k++) {
		h_sleep_ms(200);
		vmh_pause(v);
		free(snap);
		snprintf(name, sizeof(name), "snap%d", k);
		snap = path_in(name);
		vmh_snapshot(v, snap);
		json_t *state = load_json(snap, "state.json");
		json_t *ag =
		    json_object_get(find_unit(json_object_get(state, "units"), "agent"), "state");
		pending = strlen(json_string_value(json_object_get(ag, "output"))) / 2;
		json_decref(state);
		if (pending == 0)
			vmh_resume(v);
	}
	cr_assert_gt(pending, 0, "no reply bytes ever waited in the agent channel");
	vmh_stop(v);

	struct vmh *r = vmh_restore(&e.vms, "w2", snap, NULL);
	vmh_resume(r);
	fd = raw_connect(r->agent);
	json_t *reply = read_reply(fd, "big");
	close(fd);
	cr_assert(json_is_true(json_object_get(reply, "ok")));
	const char *res = json_string_value(json_object_get(reply, "result"));
	cr_assert(res, "the reply has no string result");
	size_t len = strlen(res);
	cr_assert_eq(len, 3000000,
		     "the reply's string has %zu characters (%zu bytes were buffered)", len,
		     pending);
	cr_assert_eq(strspn(res, "x"), len, "the reply is damaged");
	json_decref(reply);
	vmh_js_expect(r, "n + s.length", "3000007");
	free(snap);
}

/* A restored VM snapshotted again before it ever ran (paused all along):
 * the second snapshot is as good as the first, blocked system calls
 * included. */
Test(snapshot, snapshot_of_a_restore_that_never_ran, .fini = teardown, .timeout = 180)
{
	bool contiguous;

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v =
	    vmh_boot(&e.vms, "b0",
		     &(struct vmh_opts){.payload = "blocking",
					.extra = (const char *const[]){
					    "--cpus", "boot=2", "--cmdline", "12 100", NULL}});
	free(wait_text(v->console, "tick ", 3, T_MS, &v->proc));
	vmh_pause(v);
	char *before = h_read_file(v->console);
	long last = ticks_in(before, 1, &contiguous);
	cr_assert(contiguous && last >= 3 && last < 12, "console:\n%s", before);
	char *s1 = path_in("s1"), *s2 = path_in("s2");
	vmh_snapshot(v, s1);
	vmh_stop(v);

	struct vmh *r1 = vmh_restore(&e.vms, "b1", s1, &(struct vmh_opts){.no_agent = true});
	vmh_snapshot(r1, s2);
	vmh_stop(r1);
	char *mid = h_read_file(r1->console);
	cr_assert(!mid || !strstr(mid, "tick"), "the first restore ran: %s", mid);
	free(mid);

	struct vmh *r2 = vmh_restore(&e.vms, "b2", s2, &(struct vmh_opts){.no_agent = true});
	vmh_resume(r2);
	int st = h_wait(&r2->proc, 150000);
	char *after = h_read_file(r2->console), *err = vmh_stderr(r2);
	cr_assert_eq(st, 0, "status %d\nconsole:\n%s\nstderr:\n%s", st, after ? after : "", err);
	cr_assert(after && ticks_in(after, last + 1, &contiguous) == 12 && contiguous &&
		      strstr(after, "done 12 ticks"),
		  "ticks do not continue from %ld:\n%s", last, after ? after : "");
	free(before);
	free(after);
	free(err);
	free(s1);
	free(s2);
}

/* A restore that is refused must not disturb anything: not even a live
 * VM whose agent socket path the snapshot names (the default when a VM is
 * snapshotted and restored on the same host). */
Test(snapshot, refused_restore_leaves_a_live_vms_socket_alone, .fini = teardown, .timeout = 180)
{
	char *err = NULL, *body = NULL;

	H_NEED_GUEST();
	setup_dir();
	struct vmh *a =
	    vmh_boot(&e.vms, "a",
		     &(struct vmh_opts){.extra = (const char *const[]){"--cpus", "boot=2", NULL}});
	free(vmh_js(a, "var who = 'A'; undefined"));
	vmh_pause(a);
	char *snap = path_in("snap");
	vmh_snapshot(a, snap);
	vmh_resume(a);
	agent_client_close(a->ag);
	a->ag = NULL;
	/* A snapshot that fails the unit checks (docs: "All checks run before
	 * any state is applied"). */
	edit_state_units(snap, add_bogus_unit);
	/* (No heap strings live across the assertions that show the bug: a
	 * failing test must not add a leak report under SAN=1.) */
	char url[4200], opt[4300], json[4400], msg[1024];
	snprintf(url, sizeof(url), "file://%s", snap);
	snprintf(opt, sizeof(opt), "source_url=%s", url);
	snprintf(json, sizeof(json), "{\"source_url\": \"%s\"}", url);
	free(snap);
	char *bin = h_bin("forkvm");
	const char *argv[] = { bin, "--restore", opt, "--serial", "off", NULL };
	int st = h_run(e.dir, argv, T_MS, NULL, &err);
	free(bin);
	bool refused_ok = bad_exit(st, err) && strstr(err, "bogus");
	snprintf(msg, sizeof(msg), "%s", err);
	free(err);
	cr_assert(refused_ok, "status %d: %s", st, msg);
	cr_assert(connectable(a->agent),
		  "after a refused restore nothing listens on %s any more: the restore took the "
		  "path over from the live VM A and removed it when it failed",
		  a->agent);
	vmh_js_expect(a, "who", "\"A\"");
	agent_client_close(a->ag);
	a->ag = NULL;

	/* The same through vm.restore into an empty VMM. */
	struct vmh *m = vmh_empty(&e.vms, "m", NULL);
	st = vmh_api(m, "PUT", "/api/v1/vm.restore", json, &body);
	snprintf(msg, sizeof(msg), "%s", body);
	free(body);
	cr_assert_eq(st, 400, "%d %s", st, msg);
	cr_assert(connectable(a->agent), "vm.restore refused, and %s no longer reaches VM A",
		  a->agent);
	vmh_js_expect(a, "who", "\"A\"");
}

/* vm.counters' memory_mapped_bytes: guest memory the program has mapped. */
static long long mapped_bytes(struct vmh *v)
{
	char *body = NULL;
	int st = vmh_api(v, "GET", "/api/v1/vm.counters", NULL, &body);
	cr_assert_eq(st, 200, "vm.counters: %d %s", st, body);
	json_t *j = json_loads(body, 0, NULL);
	json_t *n = json_object_get(json_object_get(j, "vmm"), "memory_mapped_bytes");
	cr_assert(json_is_integer(n), "vm.counters: %s", body);
	long long r = (long long)json_integer_value(n);
	json_decref(j);
	free(body);
	return r;
}

/* Memory the restored guest frees (munmap of a block that is in the
 * snapshot file) and maps again must read as zero and keep what is
 * written to it, also through a second snapshot. */
Test(snapshot, memory_freed_and_reused_after_a_restore, .fini = teardown, .timeout = 180)
{
	H_NEED_GUEST();
	setup_dir();
	struct vmh *v = vmh_boot(&e.vms, "m0", NULL);
	/* 24 MiB filled by doubling (fast in Duktape): its own mmap. */
	static const char *FILL =
	    "function fill(t, x) { t[0] = x; for (var n = 1; n < t.length; n *= 2)"
	    " t.set(t.subarray(0, Math.min(n, t.length - n)), n); return t; }"
	    "function probe(t) { var s = 0; for (var i = 0; i < t.length; i += 4093) s += t[i];"
	    " return [t.length, t[0], t[t.length - 1], s]; }";
	free(vmh_js(v, FILL));
	char *want_a =
	    vmh_js(v, "var a = fill(new Uint32Array(6 * 1048576), 0x07070707); probe(a)");
	vmh_pause(v);
	long long mapped = mapped_bytes(v);
	char *s1 = path_in("s1"), *s2 = path_in("s2");
	vmh_snapshot(v, s1);
	vmh_stop(v);

	struct vmh *r = vmh_restore(
	    &e.vms, "m1", s1,
	    &(struct vmh_opts){.resume = true, .agent_at = v->agent, .serial = VMH_SERIAL_OFF});
	char *got = vmh_js(r, "probe(a)");
	cr_assert_str_eq(got, want_a);
	free(got);
	cr_assert_eq(mapped_bytes(r), mapped, "the restored program's memory map differs");
	/* Free it (a block this large is unmapped), then map as much again. */
	free(vmh_js(r, "a = null; Duktape.gc(); Duktape.gc(); undefined"));
	cr_assert_leq(mapped_bytes(r), mapped - 24 * (long long)MiB, "the block was not unmapped");
	vmh_js_expect(r, "var b = new Uint32Array(6 * 1048576); probe(b)", "[6291456,0,0,0]");
	char *want_b = vmh_js(r, "fill(b, 0x09090909); probe(b)");
	free(vmh_js(r, "var c = new Uint32Array(6 * 1048576); undefined"));
	vmh_js_expect(r, "probe(c)", "[6291456,0,0,0]");
	vmh_pause(r);
	vmh_snapshot(r, s2);
	vmh_stop(r);

	struct vmh *r2 = vmh_restore(
	    &e.vms, "m2", s2,
	    &(struct vmh_opts){.resume = true, .agent_at = v->agent, .serial = VMH_SERIAL_OFF});
	got = vmh_js(r2, "probe(b)");
	cr_assert_str_eq(got, want_b,
			 "the memory written after the restore is not in its snapshot");
	free(got);
	vmh_js_expect(r2, "[a, probe(c)[3]]", "[null,0]");
	free(want_a);
	free(want_b);
	free(s1);
	free(s2);
}

/* A destination that is a symbolic link to an empty directory: either the
 * snapshot follows the link (and is there), or it is refused like any
 * other unusable destination, "before any byte is written"
 * (docs/snapshot-format.md). */
Test(snapshot, symlink_destination_is_used_or_refused_up_front, .fini = teardown, .timeout = 180)
{
	char *body = NULL, buf[8192];

	H_NEED_GUEST();
	setup_dir();
	struct vmh *v = vmh_boot(&e.vms, "v", NULL);
	vmh_pause(v);
	char *target = path_in("target"), *link = path_in("link");
	cr_assert_eq(mkdir(target, 0700), 0);
	cr_assert_eq(symlink(target, link), 0);
	int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	cr_assert(ino >= 0);
	cr_assert(inotify_add_watch(ino, e.dir, IN_CREATE | IN_MOVED_TO) >= 0);
	char *json = h_fmt("{\"destination_url\": \"file://%s\"}", link);
	int st = vmh_api(v, "PUT", "/api/v1/vm.snapshot", json, &body);
	char written[1024] = "";
	ssize_t n = read(ino, buf, sizeof(buf));
	for (ssize_t off = 0; off < n;) {
		const struct inotify_event *ev =
		    (const struct inotify_event *)(const void *)(buf + off);
		if (ev->len && strstr(ev->name, ".tmp"))
			snprintf(written + strlen(written), sizeof(written) - strlen(written),
				 "%s ", ev->name);
		off += (ssize_t)(sizeof(*ev) + ev->len);
	}
	close(ino);
	char msg[1024];
	snprintf(msg, sizeof(msg), "%s", body);
	free(body);
	free(json);
	char *man = h_join(link, "snapshot.json"), *tmps = tmp_siblings(e.dir);
	bool there = access(man, F_OK) == 0, clean = tmps[0] == '\0';
	free(man);
	free(tmps);
	free(target);
	free(link);
	cr_assert(clean, "temporary directory left behind");
	if (st == 204) {
		cr_assert(there,
			  "vm.snapshot succeeded, but there is no snapshot through the link");
	} else {
		cr_assert(st >= 400 && st < 500, "%d %s", st, msg);
		cr_assert_str_eq(
		    written, "",
		    "vm.snapshot into a symlink to an empty directory was accepted by the "
		    "destination check, written in full (into %s) and only then refused by "
		    "rename(): %d %s",
		    written, st, msg);
	}
	vmh_resume(v);
}
