/* bench/store_bench.c - forkbench store: the snapshot store on a real
 * guest. A template VM (default 4 GiB, about 10% of it filled with data
 * that compresses about like real memory) is paused; then, for each chunk
 * size asked for:
 *   ingest        the live VM snapshotted straight into an empty store
 *                 (forkctl snapshot store://), and a snapshot directory
 *                 imported into another (forkctl store put): guest memory
 *                 per second, bytes stored
 *   materialize   the first restore's memory image, made with the objects
 *                 out of the page cache; a cached image's reuse
 *   verify        every object of the snapshot and its image, objects cold
 *   restore       forkvm --restore source_url=store://: start to paused
 *   incremental   a VM restored from the store dirties DIRTY MiB and is
 *                 snapshotted again: time, chunks hashed anew
 *   dedup         CLONES VMs restored from the template each run a little
 *                 code and are snapshotted: dedup ratio over their
 *                 snapshots, bytes they add to the store
 * Figures are printed, never asserted. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/agent_client.h"
#include "common/util.h"
#include "store/store.h"

#define T_MS 600000

struct sb {
	const struct opts *o;
	char dir[64];       /* the benchmark's temporary directory */
	char tmpl_dir[128]; /* the template as a snapshot directory */
	char api[128], sock[128];
	pid_t tmpl_pid;     /* the paused template VM */
	uint64_t mem_size;
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;
	fputs("forkbench store: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

/* Starts forkvm with argv (after the binary), output to /dev/null. */
static pid_t spawn(const struct opts *o, const char *const *args)
{
	const char *argv[32];
	size_t n = 0;

	argv[n++] = o->forkvm;
	while (*args && n < 31)
		argv[n++] = *args++;
	argv[n] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		execv(o->forkvm, (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	return pid;
}

static int eval(struct agent_client *c, const char *code)
{
	json_t *r = NULL;
	const char *name = NULL, *msg = NULL;
	int rc = agent_client_eval(c, code, T_MS, &r);
	if (rc < 0)
		return fail("eval: %s", strerror(-rc));
	if (!agent_client_reply_ok(r, &name, &msg)) {
		fail("eval failed: %s: %s", name, msg);
		json_decref(r);
		return -1;
	}
	json_decref(r);
	return 0;
}

static struct agent_client *agent(const char *sock)
{
	struct agent_client *c = NULL;
	json_t *r = NULL;
	int fd = connect_fast(sock, 30000);
	if (fd < 0 || agent_client_from_fd(fd, &c) < 0 || agent_client_ping(c, T_MS, &r) < 0) {
		if (c)
			agent_client_close(c);
		fail("cannot reach the agent at %s", sock);
		return NULL;
	}
	json_decref(r);
	return c;
}

/* Fills mb MiB with data that compresses about like real memory (each
 * 16 bytes: 7 random, the rest zero; zstd -1 makes about half of it),
 * every page distinct. */
static int fill(struct agent_client *c, long mb)
{
	char code[1024];
	snprintf(code, sizeof(code),
		 "var blk = new Uint32Array(262144), s = 12345;"
		 "for (var i = 0; i < blk.length; i++) {"
		 "  s ^= s << 13; s ^= s >>> 17; s ^= s << 5;"
		 "  var k = i & 3; blk[i] = k == 0 ? s : k == 1 ? s >>> 24 : k == 2 ? s >>> 16 : 0; }"
		 "var ballast = new Uint32Array(%ld * 262144);"
		 "for (var o = 0; o < ballast.length; o += 262144) ballast.set(blk, o);"
		 "for (var p = 0; p < ballast.length; p += 1024) ballast[p + 3] = p + 1;"
		 "ballast.length",
		 mb);
	return eval(c, code);
}

static int pause_vm(const char *api)
{
	int status;
	if (api_put(api, "/api/v1/vm.pause", NULL, &status) < 0 || status != 204)
		return fail("vm.pause failed");
	return 0;
}

static int resume_vm(const char *api)
{
	int status;
	if (api_put(api, "/api/v1/vm.resume", NULL, &status) < 0 || status != 204)
		return fail("vm.resume failed");
	return 0;
}

/* vm.snapshot to url; *ns its time. */
static int snapshot(const char *api, const char *url, uint64_t *ns)
{
	char body[512];
	int status;
	snprintf(body, sizeof(body), "{\"destination_url\": \"%s\"}", url);
	uint64_t t0 = time_mono_ns();
	if (api_put(api, "/api/v1/vm.snapshot", body, &status) < 0 || status / 100 != 2)
		return fail("vm.snapshot %s failed", url);
	*ns = time_mono_ns() - t0;
	return 0;
}

/* Boots the template, fills it, pauses it, writes it as a directory. */
static int make_template(struct sb *b)
{
	char cpus[64], mem[64], agent_opt[200];
	const struct opts *o = b->o;
	uint64_t ns;

	snprintf(cpus, sizeof(cpus), "boot=%s", o->cpus);
	snprintf(mem, sizeof(mem), "size=%s", o->memory);
	snprintf(agent_opt, sizeof(agent_opt), "socket=%s", b->sock);
	const char *args[] = { "--api-socket", b->api, "--kernel", o->agent, "--agent", agent_opt,
			       "--cpus", cpus, "--memory", mem, "--serial", "off", NULL };
	b->tmpl_pid = spawn(o, args);
	struct agent_client *c = agent(b->sock);
	if (!c)
		return -1;
	uint64_t t0 = time_mono_ns();
	int rc = fill(c, o->touch_mb);
	agent_client_close(c);
	if (rc < 0)
		return rc;
	if (out_text(o))
		printf("template: %s guest, %ld MiB filled in %.1f s\n", o->memory, o->touch_mb,
		       (time_mono_ns() - t0) / 1e9);
	if (pause_vm(b->api) < 0)
		return -1;
	snprintf(b->tmpl_dir, sizeof(b->tmpl_dir), "%s/template", b->dir);
	char url[200];
	snprintf(url, sizeof(url), "file://%s", b->tmpl_dir);
	if (snapshot(b->api, url, &ns) < 0)
		return -1;
	figure(o, "snapshot to a directory", ns / 1e6, "ms");
	return 0;
}

/* Evicts the store's objects from the page cache. */
static void drop_objects(const char *root)
{
	char path[PATH_MAX];
	for (int i = 0; i < 256; i++) {
		snprintf(path, sizeof(path), "%s/objects/%02x", root, i);
		DIR *d = opendir(path);
		struct dirent *e;
		if (!d)
			continue;
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
				close(fd);
			}
		}
		closedir(d);
	}
}

static void rm_rf(const char *path)
{
	pid_t pid = fork();
	if (pid == 0) {
		execlp("rm", "rm", "-rf", "--", path, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

/* The chunk ids of snapshot ref, as a JSON array of [index, id]. */
struct chunks_ctx {
	struct store_id id;
	json_t *chunks;
};

static int chunks_cb(void *arg, const struct store_entry *e)
{
	struct chunks_ctx *c = arg;
	if (store_id_equal(&e->id, &c->id) && e->manifest)
		c->chunks = json_incref(json_object_get(json_object_get(e->manifest, "memory"), "chunks"));
	return 0;
}

static json_t *chunks_of(struct store *st, const char *ref)
{
	struct chunks_ctx c = { .chunks = NULL };
	char err[512];
	if (store_resolve(st, ref, &c.id, err, sizeof(err)) < 0 ||
	    store_list(st, chunks_cb, &c, err, sizeof(err)) < 0) {
		fail("%s: %s", ref, err);
		return NULL;
	}
	return c.chunks;
}

/* Chunks of b not in a (at the same index with the same id). */
static long changed_chunks(json_t *a, json_t *b)
{
	long n = 0;
	size_t i = 0, j = 0;
	while (j < json_array_size(b)) {
		json_t *y = json_array_get(b, j);
		json_int_t yi = json_integer_value(json_array_get(y, 0));
		while (i < json_array_size(a) &&
		       json_integer_value(json_array_get(json_array_get(a, i), 0)) < yi)
			i++;
		json_t *x = json_array_get(a, i);
		if (!x || json_integer_value(json_array_get(x, 0)) != yi ||
		    strcmp(json_string_value(json_array_get(x, 1)), json_string_value(json_array_get(y, 1))))
			n++;
		j++;
	}
	return n;
}

static int restore_vm(struct sb *b, const char *root, const char *ref, const char *api,
		      const char *sock, pid_t *pid, uint64_t *ns)
{
	char src[300], agent_opt[200];
	snprintf(src, sizeof(src), "source_url=store://%s", ref);
	snprintf(agent_opt, sizeof(agent_opt), "socket=%s", sock);
	unlink(api);
	const char *args[] = { "--api-socket", api, "--store", root, "--restore", src, "--agent",
			       agent_opt, NULL };
	uint64_t t0 = time_mono_ns();
	*pid = spawn(b->o, args);
	if (wait_paused(api, T_MS) < 0) {
		stop_vm(*pid);
		return fail("the VM restored from %s did not come up paused", src);
	}
	if (ns)
		*ns = time_mono_ns() - t0;
	return 0;
}

struct cs_result {
	uint32_t chunk;
	double live_gbs, put_gbs, mat_gbs, verify_gbs, cached_ms, restore_ms, inc_ms, dedup, clone_mib;
	double stored_mib, ratio;
	long inc_chunks;
};

static double gbs(uint64_t bytes, uint64_t ns)
{
	return ns ? (double)bytes / (double)ns : 0; /* bytes per ns = GB/s */
}

static int bench_chunk(struct sb *b, uint32_t cs, struct cs_result *res)
{
	const struct opts *o = b->o;
	char root[160], root2[160], api[160], sock[160], what[128], err[512], url[64];
	struct store *st = NULL;
	struct store_du du;
	uint64_t ns;
	int rc = -1;

	memset(res, 0, sizeof(*res));
	res->chunk = cs;
	snprintf(root, sizeof(root), "%s/store-%u", b->dir, cs);
	snprintf(root2, sizeof(root2), "%s/store-put-%u", b->dir, cs);
	snprintf(api, sizeof(api), "%s/r.api", b->dir);
	snprintf(sock, sizeof(sock), "%s/r.agent", b->dir);
	if (out_text(o))
		printf("\n== chunk size %u KiB\n", cs >> 10);

	/* Ingest, live: a VM restored from the template directory (its
	 * memory a copy-on-write mapping, as in production) into an empty
	 * store. The template VM itself has the default store; restored
	 * ones get this one. */
	if (store_open(root, true, cs, &st, err, sizeof(err)) < 0)
		return fail("%s", err);
	store_close(st);
	st = NULL;
	{
		char src[300], agent_opt[200];
		pid_t pid;
		snprintf(src, sizeof(src), "source_url=file://%s", b->tmpl_dir);
		snprintf(agent_opt, sizeof(agent_opt), "socket=%s", sock);
		unlink(api);
		const char *args[] = { "--api-socket", api, "--store", root, "--restore", src,
				       "--agent", agent_opt, NULL };
		pid = spawn(o, args);
		if (wait_paused(api, T_MS) < 0) {
			stop_vm(pid);
			return fail("the template did not restore");
		}
		rc = snapshot(api, "store://base", &ns);
		stop_vm(pid);
		if (rc < 0)
			return rc;
	}
	res->live_gbs = gbs(b->mem_size, ns);
	snprintf(what, sizeof(what), "ingest, live VM (%s) [GB/s]", o->memory);
	figure(o, what, res->live_gbs, "GB/s");
	figure(o, "  time", ns / 1e6, "ms");

	if (store_open(root, false, 0, &st, err, sizeof(err)) < 0 ||
	    store_du(st, &du, err, sizeof(err)) < 0)
		return fail("%s", err);
	res->stored_mib = du.stored_bytes / 1048576.0;
	res->ratio = du.stored_bytes ? (double)du.unique_bytes / (double)du.stored_bytes : 0;
	figure(o, "  non-zero data", du.unique_bytes / 1048576.0, "MiB");
	figure(o, "  stored", res->stored_mib, "MiB");
	figure(o, "  compression ratio", res->ratio, "x");

	/* Ingest, import: the template directory into another empty store. */
	{
		struct store *st2;
		struct store_id id;
		struct store_put_stats ps;
		if (store_open(root2, true, cs, &st2, err, sizeof(err)) < 0)
			return fail("%s", err);
		uint64_t t0 = time_mono_ns();
		rc = store_put_dir(st2, b->tmpl_dir, NULL, &id, &ps, err, sizeof(err));
		ns = time_mono_ns() - t0;
		store_close(st2);
		if (rc < 0)
			return fail("put: %s", err);
		res->put_gbs = gbs(b->mem_size, ns);
		figure(o, "ingest, store put of a directory [GB/s]", res->put_gbs, "GB/s");
		figure(o, "  time (verifying the directory included)", ns / 1e6, "ms");
		/* Kept until the end: on ext4 without a journal, creating files
		 * soon after mass deletions is slow (recently_deleted()). */
	}

	/* Materialize: the objects out of the page cache, no image yet. */
	{
		struct store_id id;
		struct store_snapshot ss;
		drop_objects(root);
		if (store_resolve(st, "base", &id, err, sizeof(err)) < 0)
			return fail("%s", err);
		uint64_t t0 = time_mono_ns();
		rc = store_load(st, &id, &ss, err, sizeof(err));
		ns = time_mono_ns() - t0;
		if (rc < 0)
			return fail("load: %s", err);
		store_snapshot_free(&ss);
		res->mat_gbs = gbs(b->mem_size, ns);
		figure(o, "materialize, objects not cached [GB/s]", res->mat_gbs, "GB/s");
		figure(o, "  time", ns / 1e6, "ms");
		t0 = time_mono_ns();
		rc = store_load(st, &id, &ss, err, sizeof(err));
		ns = time_mono_ns() - t0;
		if (rc < 0)
			return fail("load: %s", err);
		store_snapshot_free(&ss);
		res->cached_ms = ns / 1e6;
		figure(o, "load with the image cached", res->cached_ms, "ms");
	}

	/* Verify: every object of the snapshot and its image, objects cold. */
	{
		struct store_id id;
		drop_objects(root);
		if (store_resolve(st, "base", &id, err, sizeof(err)) < 0)
			return fail("%s", err);
		uint64_t t0 = time_mono_ns();
		int n = store_verify(st, &id, NULL, NULL, err, sizeof(err));
		ns = time_mono_ns() - t0;
		if (n != 0)
			return fail("verify: %s", n < 0 ? err : "problems found");
		res->verify_gbs = gbs(b->mem_size, ns);
		figure(o, "verify, objects not cached [GB/s]", res->verify_gbs, "GB/s");
		figure(o, "  time (the cached image included)", ns / 1e6, "ms");
	}

	/* Restore from the store: process start to paused. */
	{
		int n = o->samples > 0 ? o->samples : 5;
		uint64_t *t = calloc((size_t)n, sizeof(*t));
		if (!t)
			return -1;
		for (int i = 0; i < n; i++) {
			pid_t pid;
			if (restore_vm(b, root, "base", api, sock, &pid, &t[i]) < 0) {
				free(t);
				return -1;
			}
			stop_vm(pid);
		}
		report("restore store://: start to paused", t, n, o);
		res->restore_ms = t[n / 2] / 1e6;
		free(t);
	}

	/* Incremental: dirty DIRTY MiB of the filled memory, snapshot again. */
	{
		pid_t pid;
		char code[512];
		if (restore_vm(b, root, "base", api, sock, &pid, NULL) < 0 || resume_vm(api) < 0)
			return -1;
		struct agent_client *c = agent(sock);
		snprintf(code, sizeof(code),
			 "var from = Math.floor(ballast.length / 3);"
			 "for (var p = from; p < from + %ld * 262144; p += 1024) ballast[p] ^= 0x5a5a5a5a;"
			 "undefined",
			 o->dirty_mb);
		rc = c ? eval(c, code) : -1;
		if (c)
			agent_client_close(c);
		if (rc == 0)
			rc = pause_vm(api);
		if (rc == 0)
			rc = snapshot(api, "store://inc", &ns);
		stop_vm(pid);
		if (rc < 0)
			return rc;
		json_t *a = chunks_of(st, "base"), *d = chunks_of(st, "inc");
		res->inc_chunks = a && d ? changed_chunks(a, d) : -1;
		json_decref(a);
		json_decref(d);
		res->inc_ms = ns / 1e6;
		snprintf(what, sizeof(what), "incremental snapshot, %ld MiB dirtied", o->dirty_mb);
		figure(o, what, res->inc_ms, "ms");
		figure(o, "  chunks that changed", (double)res->inc_chunks, "chunks");
	}

	/* Dedup: clones of the template, each runs a little code. */
	{
		struct store_du before, after;
		json_t **lists = calloc((size_t)o->clones, sizeof(*lists));
		if (!lists || store_du(st, &before, err, sizeof(err)) < 0)
			return fail("du: %s", err);
		for (int k = 0; k < o->clones; k++) {
			pid_t pid;
			char code[512];
			if (restore_vm(b, root, "base", api, sock, &pid, NULL) < 0 || resume_vm(api) < 0)
				return -1;
			struct agent_client *c = agent(sock);
			snprintf(code, sizeof(code),
				 "var out = []; for (var i = 0; i < 2000; i++) out.push('clone %d item ' + i);"
				 "JSON.stringify(out).length",
				 k);
			rc = c ? eval(c, code) : -1;
			if (c)
				agent_client_close(c);
			snprintf(url, sizeof(url), "store://clone-%d", k);
			if (rc == 0)
				rc = pause_vm(api);
			if (rc == 0)
				rc = snapshot(api, url, &ns);
			stop_vm(pid);
			if (rc < 0)
				return rc;
			lists[k] = chunks_of(st, url + 8);
		}
		if (store_du(st, &after, err, sizeof(err)) < 0)
			return fail("du: %s", err);
		/* Over the clones' snapshots: chunks referenced / distinct. */
		json_t *seen = json_object();
		uint64_t refs = 0;
		for (int k = 0; k < o->clones; k++) {
			size_t i;
			json_t *e;
			json_array_foreach(lists[k], i, e) {
				refs++;
				json_object_set_new(seen, json_string_value(json_array_get(e, 1)), json_true());
			}
			json_decref(lists[k]);
		}
		size_t distinct = json_object_size(seen);
		json_decref(seen);
		free(lists);
		res->dedup = distinct ? (double)refs / (double)distinct : 0;
		res->clone_mib = (after.stored_bytes - before.stored_bytes) / 1048576.0;
		snprintf(what, sizeof(what), "dedup ratio of %d clone snapshots", o->clones);
		figure(o, what, res->dedup, "x");
		figure(o, "  stored bytes they added", res->clone_mib, "MiB");
		figure(o, "  logical (guest memory) bytes", o->clones * b->mem_size / 1048576.0, "MiB");
	}
	store_close(st);
	return 0;
}

int cmd_store(const struct opts *o)
{
	struct sb b = { .o = o };
	uint32_t sizes[16];
	int nsizes = 0, rc = 0;
	char list[256];

	snprintf(list, sizeof(list), "%s", o->chunk_sizes);
	for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		uint64_t v;
		if (nsizes == 16 || parse_size(t, &v) < 0 || v < 4096 || v > (64 << 20) || (v & (v - 1))) {
			fprintf(stderr, "forkbench: --chunk-size: '%s' is not a power of two from 4K to 64M\n", t);
			return 2;
		}
		sizes[nsizes++] = (uint32_t)v;
	}
	if (parse_size(o->memory, &b.mem_size) < 0) {
		fprintf(stderr, "forkbench: bad --memory '%s'\n", o->memory);
		return 2;
	}
	snprintf(b.dir, sizeof(b.dir), "/var/tmp/forkbench-XXXXXX");
	if (!mkdtemp(b.dir)) {
		perror("forkbench: mkdtemp");
		return 1;
	}
	snprintf(b.api, sizeof(b.api), "%s/t.api", b.dir);
	snprintf(b.sock, sizeof(b.sock), "%s/t.agent", b.dir);
	if (make_template(&b) < 0) {
		rc = 1;
		goto out;
	}
	struct cs_result res[16];
	for (int i = 0; i < nsizes; i++) {
		if (bench_chunk(&b, sizes[i], &res[i]) < 0) {
			rc = 1;
			goto out;
		}
	}
	if (out_text(o) && nsizes > 1) {
		printf("\n%-6s %7s %7s %7s %7s %8s %8s %7s %7s %7s %8s\n", "chunk", "live", "put",
		       "mater.", "verify", "stored", "restore", "incr.", "incr.", "dedup", "clones");
		printf("%-6s %7s %7s %7s %7s %8s %8s %7s %7s %7s %8s\n", "KiB", "GB/s", "GB/s", "GB/s",
		       "GB/s", "MiB", "p50 ms", "ms", "chunks", "x", "+MiB");
		for (int i = 0; i < nsizes; i++)
			printf("%-6u %7.2f %7.2f %7.2f %7.2f %8.1f %8.2f %7.1f %7ld %7.2f %8.1f\n",
			       res[i].chunk >> 10, res[i].live_gbs, res[i].put_gbs, res[i].mat_gbs,
			       res[i].verify_gbs, res[i].stored_mib, res[i].restore_ms, res[i].inc_ms,
			       res[i].inc_chunks, res[i].dedup, res[i].clone_mib);
	}
out:
	if (b.tmpl_pid > 0)
		stop_vm(b.tmpl_pid);
	rm_rf(b.dir);
	return rc;
}
