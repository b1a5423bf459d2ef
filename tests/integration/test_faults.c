/* tests/integration/test_faults.c - fault injection on real guests
 * (docs/snapshot-format.md, docs/store-format.md, docs/security.md):
 *
 * 1. forkvm gets SIGKILL at a random point of vm.snapshot to a directory,
 *    100 times (50 in the KVM lane, where each trial is ~5x slower):
 *    afterwards the destination is absent, or it restores and
 *    the guest has exactly the state it was snapshotted with. A leftover
 *    temporary sibling (.NAME.tmp-XXXXXX) is never the destination, and if
 *    it happens to verify, it restores right too.
 * 2. forkctl store put and forkctl store gc get SIGKILL at random points,
 *    50 times each (25 in the KVM lane): afterwards store verify passes, every file under
 *    objects/ is a whole object whose content hashes to its name, every tag
 *    names a committed snapshot, and every tagged snapshot restores (forkvm
 *    --restore source_url=store://TAG) with the right state.
 * 3. A full disk (a 16 MiB tmpfs) as the snapshot destination and as the
 *    store: vm.snapshot to a directory and to store://, and forkctl store
 *    put, fail saying "No space left on device"; nothing half-written is
 *    left (no destination, no temporary files, the space is free again,
 *    the store verifies) and the VM is still paused and resumes intact. A
 *    first restore from the store, which cannot write the snapshot's image,
 *    fails the same way and leaves no partial image.
 *
 * Kill delays are uniform over [0, 1.25 x] the operation's duration,
 * measured first on the same kind of work and then followed as the host's
 * load changes it (struct pacer). The random seed is printed;
 * FORKVM_FAULT_SEED=N repeats its random numbers. Outcome counts go to
 * stderr. No assertion depends on how fast the host is.
 *
 * Every process the tests start dies with the test process
 * (PR_SET_PDEATHSIG) and is killed in .fini; everything lives in a fresh
 * h_tmpdir(). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "store/store.h"
#include "tests/lib/harness.h"
#include "tests/lib/vmh.h"

#define T_MS 60000
#define MiB (1024ULL * 1024)

/* ------------------------------------------------------------ environment */

static struct {
	char *dir;   /* everything of the test lives here */
	char *store; /* dir/store, or a store on the tmpfs */
	char *mnt;   /* a tmpfs mounted by the test */
	struct vmh_set vms; /* unnamed: vm0, vm1, ... */
	uint64_t rng;
	uint64_t t0;
} e;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL) };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* xorshift64*: the kill delays. */
static uint64_t rnd(void)
{
	e.rng ^= e.rng >> 12;
	e.rng ^= e.rng << 25;
	e.rng ^= e.rng >> 27;
	return e.rng * 0x2545f4914f6cdd1dULL;
}

/* Kill delays that follow the operation's duration, which the host's load
 * changes: a delay is uniform over [0, 1.25 d], d first measured, then 10%
 * longer after each kill and 35% shorter after each operation that
 * finished first. That holds about one operation in six finished and the
 * kills spread over all of it, its last steps included. */
struct pacer {
	uint64_t d; /* ns */
};

static uint64_t pacer_delay(const struct pacer *p)
{
	return rnd() % (p->d + p->d / 4 + 1);
}

static void pacer_update(struct pacer *p, bool finished)
{
	p->d = finished ? p->d * 13 / 20 : p->d * 11 / 10;
}

static void setup(void)
{
	const char *s = getenv("FORKVM_FAULT_SEED");
	e.dir = h_tmpdir();
	e.store = h_join(e.dir, "store");
	vmh_set_init(&e.vms, e.dir);
	e.rng = s && *s ? strtoull(s, NULL, 0) : now_ns() ^ ((uint64_t)getpid() << 32);
	if (!e.rng)
		e.rng = 1;
	e.t0 = now_ns();
	fprintf(stderr, "faults: random seed %llu (FORKVM_FAULT_SEED repeats it)\n",
		(unsigned long long)e.rng);
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
	free(e.store);
	memset(&e, 0, sizeof(e));
}

TestSuite(faults, .init = setup, .fini = teardown, .timeout = 600);

static double elapsed_s(void)
{
	return (double)(now_ns() - e.t0) / 1e9;
}

/* Reaps p (killing it first when kill_it) and removes its output files. */
static int proc_end(struct h_proc *p, bool kill_it)
{
	if (kill_it && p->pid > 0 && !p->reaped)
		kill(p->pid, SIGKILL);
	int st = h_wait(p, -1);
	if (p->out_path)
		unlink(p->out_path);
	if (p->err_path)
		unlink(p->err_path);
	h_kill(p);
	return st;
}

/* ------------------------------------------------------------ VMs */

/* The guest's recognisable state: x, and big, N doubles (8 * N bytes of
 * touched memory). fill(seed) writes N new numbers, every 4 KiB page
 * stamped with the seed so that no two pages or chunks of two fills are
 * alike; mark(t) sets x = t and one element; state() is a string of x,
 * that element and a sample of the whole array. */
static void define_guest(struct vmh *v, unsigned n)
{
	char *code = h_fmt(
	    "var N = %u; globalThis.x = 0; globalThis.big = new Float64Array(N);"
	    "function state() { var s = 0;"
	    " for (var p = 3; p < N; p += 4093) s += big[p];"
	    " for (var q = 0; q < N; q += 512 * 61) s += big[q];"
	    " return x + '|' + big[(x * 7919) %% N] + '|' + s; }"
	    "function fill(seed) {"
	    " for (var i = 0; i < 65536 && i < N; i++) big[i] = Math.random();"
	    " for (var k = 65536; k < N; k *= 2) big.set(big.subarray(0, Math.min(k, N - k)), k);"
	    " for (var p = 0; p < N; p += 512) big[p] = seed * 1e9 + p;"
	    " x = seed; return state(); }"
	    "function mark(t) { x = t; big[(t * 7919) %% N] = t; return state(); }"
	    "N",
	    n);
	free(vmh_js(v, code));
	free(code);
}

/* Restored from url (store: the store, or NULL), the guest's state() is
 * want. */
static void expect_restores(const char *url, const char *store, const char *want,
			    const char *when)
{
	struct vmh *r = vmh_restore_start(&e.vms, NULL, url,
					  &(struct vmh_opts){.store = store, .resume = true});
	vmh_ready(r, when);
	char *got = vmh_js(r, "state()");
	cr_assert_str_eq(got, want, "%s: %s restores with state %s, not %s", when, url, got, want);
	free(got);
	vmh_free(r);
}

/* ------------------------------------------------------------ requests killed midway */

/* Sends one HTTP request to the API socket and returns the connected fd
 * without waiting for the answer. */
static int api_send(const char *sock, const char *path, const char *json)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect %s: %s", sock,
		     strerror(errno));
	char *req = h_fmt("PUT %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
			"Content-Length: %zu\r\n\r\n%s",
			path, strlen(json), json);
	size_t len = strlen(req), done = 0;
	while (done < len) {
		ssize_t w = write(fd, req + done, len - done);
		cr_assert(w > 0, "write to %s: %s", sock, strerror(errno));
		done += (size_t)w;
	}
	free(req);
	return fd;
}

/* The HTTP status the server answered on fd before it went away, or -1 for
 * none. Closes fd. */
static int api_status_after_kill(int fd)
{
	char buf[512];
	size_t len = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	while (len + 1 < sizeof(buf) && poll(&p, 1, 5000) > 0) {
		ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	int status = -1;
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		status = -1;
	return status;
}

/* ------------------------------------------------------------ files */

static bool exists(const char *path)
{
	struct stat s;
	return lstat(path, &s) == 0;
}

/* The names in dir (but . and ..), NULL-terminated, malloc'd. */
static char **list_dir(const char *dir, int *count)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **v = calloc(1, sizeof(*v));
	int n = 0;

	cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		v = realloc(v, (size_t)(n + 2) * sizeof(*v));
		cr_assert_not_null(v);
		v[n++] = strdup(de->d_name);
		v[n] = NULL;
	}
	closedir(d);
	if (count)
		*count = n;
	return v;
}

static void free_list(char **v)
{
	for (int i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static char *join_list(char **v)
{
	size_t len = 1;
	for (int i = 0; v[i]; i++)
		len += strlen(v[i]) + 1;
	char *s = calloc(1, len);
	for (int i = 0; v[i]; i++) {
		strcat(s, v[i]);
		strcat(s, " ");
	}
	return s;
}

static int count_entries(const char *dir)
{
	int n;
	free_list(list_dir(dir, &n));
	return n;
}

static uint8_t *read_bytes(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat s;
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(fstat(fd, &s), 0);
	uint8_t *buf = malloc((size_t)s.st_size + 1);
	size_t got = 0;
	cr_assert_not_null(buf);
	while (got < (size_t)s.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)s.st_size - got);
		cr_assert(r > 0, "%s: %s", path, r < 0 ? strerror(errno) : "shorter than its size");
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return buf;
}

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* An object file is whole (docs/store-format.md): "FOBJ", version 1, a
 * known codec, the payload length is the rest of the file, and the content
 * decodes to the raw length and hashes (XXH3-128) to the file's name.
 * Returns the content (malloc'd, NUL-terminated). */
static char *read_object(const char *path, const char *name, const char *when)
{
	size_t len;
	uint8_t *f = read_bytes(path, &len);
	cr_assert(len >= 24 && le(f, 4) == 0x4a424f46 && f[4] == 1 && f[5] <= 1 && !f[6] && !f[7],
		  "%s: %s is not a whole object (%zu bytes, bad header)", when, path, len);
	uint64_t raw = le(f + 8, 8), payload = le(f + 16, 8);
	cr_assert_eq(payload, len - 24, "%s: %s: %zu bytes but its header says %llu + 24", when,
		     path, len, (unsigned long long)payload);
	cr_assert_leq(raw, 256 * MiB, "%s: %s", when, path);
	char *buf = malloc(raw + 1);
	cr_assert_not_null(buf);
	if (f[5] == 0) {
		cr_assert_eq(raw, payload, "%s: %s", when, path);
		memcpy(buf, f + 24, raw);
	} else {
		size_t r = ZSTD_decompress(buf, raw, f + 24, payload);
		cr_assert(!ZSTD_isError(r) && r == raw, "%s: %s does not decompress", when, path);
	}
	buf[raw] = '\0';
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(buf, raw));
	char hex[33];
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
	cr_assert_str_eq(hex, name, "%s: %s holds content that hashes to %s", when, path, hex);
	free(f);
	return buf;
}

/* Every file under STORE/objects/ is a whole object. */
static void check_objects(const char *store, const char *when)
{
	for (unsigned i = 0; i < 256; i++) {
		char *d = h_fmt("%s/objects/%02x", store, i);
		char **names = list_dir(d, NULL);
		for (int k = 0; names[k]; k++) {
			char *p = h_join(d, names[k]);
			free(read_object(p, names[k], when));
			free(p);
		}
		free_list(names);
		free(d);
	}
}

static uint64_t used_bytes(const char *path)
{
	struct statvfs s;
	cr_assert_eq(statvfs(path, &s), 0);
	return (uint64_t)(s.f_blocks - s.f_bfree) * s.f_frsize;
}

/* ============================================================ 1. snapshot */

struct snap_counts {
	int answered; /* 204 before the kill */
	int complete; /* at the destination, restored right */
	int absent;
	int temps;    /* temporary siblings left */
	int temps_ok; /* ... that verified (and restored right) */
};

/* One snapshot killed after delay_ns: the guest v (paused, state() want)
 * is snapshotted to parent/NAME; forkvm gets SIGKILL. Then parent holds
 * either nothing, NAME (which restores to want) and/or temporary siblings
 * .NAME.tmp-XXXXXX (which do not verify, or restore to want too); they are
 * removed. Returns whether forkvm answered 204 before the kill. */
static bool kill_snapshot(struct vmh *v, const char *parent, const char *name, const char *want,
			  uint64_t delay_ns, struct snap_counts *n, const char *when)
{
	char *dest = h_join(parent, name), *tmp_prefix = h_fmt(".%s.tmp-", name);
	char *json = h_fmt("{\"destination_url\": \"file://%s\"}", dest);
	int fd = api_send(v->api, "/api/v1/vm.snapshot", json);
	sleep_ns(delay_ns);
	kill(v->proc.pid, SIGKILL);
	int st = h_wait(&v->proc, 10000);
	cr_assert_eq(st, 128 + SIGKILL, "%s: forkvm ended with %d, not by SIGKILL", when, st);
	int status = api_status_after_kill(fd);
	cr_assert(status == -1 || status == 204, "%s: vm.snapshot answered %d", when, status);

	char **names = list_dir(parent, NULL);
	bool complete = false;
	for (int i = 0; names[i]; i++) {
		char *p = h_join(parent, names[i]);
		if (!strcmp(names[i], name)) {
			complete = true;
			char *url = h_fmt("file://%s", p);
			expect_restores(url, NULL, want, when);
			free(url);
		} else {
			cr_assert(!strncmp(names[i], tmp_prefix, strlen(tmp_prefix)),
				  "%s: %s left in %s: neither the destination nor its temporary "
				  "sibling",
				  when, names[i], parent);
			/* Never the destination; if it is whole, it is right. */
			struct snapdir sd;
			char err[512];
			n->temps++;
			if (snapdir_open(p, &sd, err, sizeof(err)) == 0) {
				snapdir_close(&sd);
				n->temps_ok++;
				char *url = h_fmt("file://%s", p);
				expect_restores(url, NULL, want, when);
				free(url);
			}
		}
		h_rmtree(p);
		free(p);
	}
	free_list(names);
	cr_assert(status != 204 || complete, "%s: vm.snapshot answered 204 but %s is missing",
		  when, dest);
	n->answered += status == 204;
	n->complete += complete;
	n->absent += !complete;
	free(dest);
	free(tmp_prefix);
	free(json);
	return status == 204;
}

/* The duration of a whole vm.snapshot of v (paused) into parent/NAME,
 * which is removed again. */
static uint64_t time_snapshot(struct vmh *v, const char *parent, const char *name)
{
	char *dest = h_join(parent, name);
	char *json = h_fmt("{\"destination_url\": \"file://%s\"}", dest);
	uint64_t t0 = now_ns();
	vmh_put(v, "vm.snapshot", json, 204);
	uint64_t d = now_ns() - t0;
	h_rmtree(dest);
	free(dest);
	free(json);
	return d;
}

static uint64_t median3(uint64_t a, uint64_t b, uint64_t c)
{
	return a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
}

#define SNAP_TRIALS h_size(100, 50)
#define SNAP_DOUBLES (4U << 20) /* 32 MiB touched, in a 512 MiB guest */
#define SNAP_BOOT_EVERY 5      /* every 5th trial boots (the memfd path), the others restore */

Test(faults, sigkill_during_snapshot)
{
	H_NEED_GUEST();
	char *parent = h_join(e.dir, "snaps"), *base = h_join(e.dir, "base");
	char *base_url = h_fmt("file://%s", base);
	cr_assert_eq(mkdir(parent, 0700), 0);

	/* The template: booted, 32 MiB filled, snapshotted; its snapshot
	 * durations (booted VM: memory found with SEEK_DATA on the memfd). */
	struct vmh *t = vmh_boot(&e.vms, NULL, &(struct vmh_opts){.memory = "512M"});
	define_guest(t, SNAP_DOUBLES);
	free(vmh_js(t, "fill(1)"));
	vmh_pause(t);
	struct pacer boot_pace, rest_pace;
	boot_pace.d = median3(time_snapshot(t, parent, "c0"), time_snapshot(t, parent, "c1"),
				  time_snapshot(t, parent, "c2"));
	char *json = h_fmt("{\"destination_url\": \"%s\"}", base_url);
	vmh_put(t, "vm.snapshot", json, 204);
	free(json);
	vmh_free(t);
	/* ... and of a VM restored from it (its data extents and private pages). */
	struct vmh *c =
	    vmh_restore_start(&e.vms, NULL, base_url, &(struct vmh_opts){.resume = true});
	vmh_ready(c, "calibration");
	free(vmh_js(c, "mark(12345)"));
	vmh_pause(c);
	rest_pace.d = median3(time_snapshot(c, parent, "c0"), time_snapshot(c, parent, "c1"),
				  time_snapshot(c, parent, "c2"));
	vmh_free(c);
	fprintf(stderr, "faults: snapshot of 32 MiB takes %.1f ms booted, %.1f ms restored\n",
		boot_pace.d / 1e6, rest_pace.d / 1e6);

	struct snap_counts n = { 0 };
	int booted = 0;
	for (int i = 0; i < SNAP_TRIALS; i++) {
		char when[64], name[32];
		bool boot = i % SNAP_BOOT_EVERY == SNAP_BOOT_EVERY - 1;
		struct pacer *pace = boot ? &boot_pace : &rest_pace;
		struct vmh *v;
		snprintf(when, sizeof(when), "snapshot trial %d (%s)", i,
			 boot ? "booted" : "restored");
		if (boot) {
			v = vmh_boot(&e.vms, NULL, &(struct vmh_opts){.memory = "512M"});
			define_guest(v, SNAP_DOUBLES);
			char *code = h_fmt("fill(%d)", 1000 + i);
			free(vmh_js(v, code));
			free(code);
			booted++;
		} else {
			v = vmh_restore_start(&e.vms, NULL, base_url,
					      &(struct vmh_opts){.resume = true});
			vmh_ready(v, when);
		}
		char *code = h_fmt("mark(%d)", i);
		char *want = vmh_js(v, code); /* state() as JSON */
		vmh_pause(v);
		snprintf(name, sizeof(name), "s%d", i);
		bool answered = kill_snapshot(v, parent, name, want, pacer_delay(pace), &n, when);
		pacer_update(pace, answered);
		vmh_free(v);
		free(code);
		free(want);
	}
	cr_assert_eq(count_entries(parent), 0);
	fprintf(stderr,
		"faults: SIGKILL during vm.snapshot, %d trials (%d booted, %d restored): %d "
		"complete and restored right (%d answered before the kill), %d absent; %d "
		"temporary siblings left (%d of them whole, restored right), none at the "
		"destination; %.1f s\n",
		SNAP_TRIALS, booted, SNAP_TRIALS - booted, n.complete, n.answered, n.absent,
		n.temps, n.temps_ok, elapsed_s());
	free(parent);
	free(base);
	free(base_url);
}

/* ============================================================ 2. store */

#define STORE_PAIRS h_size(50, 25) /* a gc and a put each */
#define STORE_DOUBLES (512U << 10) /* 4 MiB touched, in a 128 MiB guest */

/* The snapshots the store test puts: a directory each, the tag it gets,
 * and the guest's state() in it. */
struct src {
	const char *tag;
	char *dir, *url, *state;
};

static struct src srcs[3]; /* base (never removed), d0, d1 */

static const struct src *src_of_tag(const char *tag)
{
	for (size_t i = 0; i < sizeof(srcs) / sizeof(srcs[0]); i++)
		if (!strcmp(srcs[i].tag, tag))
			return &srcs[i];
	return NULL;
}

static void store_startv(struct h_proc *p, const char *a1, va_list ap)
{
	const char *argv[16];
	char *bin = h_bin("forkctl");
	int n = 0;

	argv[n++] = bin;
	argv[n++] = "--store";
	argv[n++] = e.store;
	argv[n++] = "store";
	argv[n++] = a1;
	for (const char *a; (a = va_arg(ap, const char *)) && n < 15;)
		argv[n++] = a;
	argv[n] = NULL;
	cr_assert_eq(h_spawn_tied(p, e.dir, argv), 0, "forkctl: fork: %s", strerror(errno));
	free(bin);
}

/* forkctl --store STORE store ARGS... (NULL-terminated), started. */
static void store_start(struct h_proc *p, const char *a1, ...)
{
	va_list ap;
	va_start(ap, a1);
	store_startv(p, a1, ap);
	va_end(ap);
}

/* Waits for p (T_MS), returns its status and output (malloc'd). */
static int proc_finish(struct h_proc *p, char **out, char **err)
{
	int st = h_wait(p, T_MS);
	if (out)
		*out = h_stdout(p);
	if (err)
		*err = h_stderr(p);
	proc_end(p, true);
	cr_assert_neq(st, -1, "a command timed out");
	return st;
}

/* forkctl --store STORE store ARGS... (NULL-terminated) exits 0. */
static void store_ok(const char *a1, ...)
{
	struct h_proc p;
	char *out, *err;
	va_list ap;
	va_start(ap, a1);
	store_startv(&p, a1, ap);
	va_end(ap);
	int st = proc_finish(&p, &out, &err);
	cr_assert_eq(st, 0, "forkctl store %s: status %d\n%s%s", a1, st, out, err);
	free(out);
	free(err);
}

/* The snapshot id a tag file names ("" if none). */
static void tag_id(const char *tag, char id[33])
{
	char *p = h_fmt("%s/tags/%s", e.store, tag), *text = h_read_file(p);
	id[0] = '\0';
	if (text) {
		cr_assert(strlen(text) == 33 && text[32] == '\n', "tag %s holds '%s'", tag, text);
		snprintf(id, 33, "%.32s", text);
	}
	free(text);
	free(p);
}

static bool committed(const char *id)
{
	char *p = h_fmt("%s/snapshots/%s", e.store, id);
	bool r = exists(p);
	free(p);
	return r;
}

/* forkctl store verify finds every object of every snapshot intact. */
static void store_verifies(const char *when)
{
	struct h_proc p;
	char *out, *err;
	store_start(&p, "verify", NULL);
	int st = proc_finish(&p, &out, &err);
	cr_assert(st == 0 && strstr(out, "all objects intact"), "%s: store verify: %d\n%s%s", when,
		  st, out, err);
	free(out);
	free(err);
}

/* What must hold after any kill: store verify passes, every object file is
 * whole, every tag names a committed snapshot, and every tagged snapshot
 * restores with its state (all at once, a VM each). */
static void check_store(const char *when)
{
	store_verifies(when);
	check_objects(e.store, when);

	char *tags_dir = h_join(e.store, "tags");
	char **tags = list_dir(tags_dir, NULL);
	struct vmh *vms[8];
	int n = 0;
	bool have_base = false;
	for (int i = 0; tags[i]; i++) {
		char id[33];
		const struct src *s = src_of_tag(tags[i]);
		cr_assert_not_null(s, "%s: an unknown tag %s", when, tags[i]);
		tag_id(tags[i], id);
		cr_assert(committed(id), "%s: tag %s names %s, which is not committed", when,
			  tags[i], id);
		have_base |= !strcmp(tags[i], "base");
		char *url = h_fmt("store://%s", tags[i]);
		cr_assert_lt(n, 8);
		vms[n++] = vmh_restore_start(&e.vms, NULL, url,
					     &(struct vmh_opts){.store = e.store, .resume = true});
		free(url);
	}
	cr_assert(have_base, "%s: the tag base is gone", when);
	for (int i = 0; i < n; i++) {
		char w[160];
		snprintf(w, sizeof(w), "%s: restore of store://%s", when, tags[i]);
		vmh_ready(vms[i], w);
		char *got = vmh_js(vms[i], "state()");
		const struct src *s = src_of_tag(tags[i]);
		cr_assert_str_eq(got, s->state, "%s: restores with state %s, not %s", w, got,
				 s->state);
		free(got);
		vmh_free(vms[i]);
	}
	free_list(tags);
	free(tags_dir);
}

/* Removes, unkilled, the snapshot tagged tag (if any) and every committed
 * snapshot no tag names: what the next gc collects and the next put of
 * tag writes again. */
static void remove_for_gc(const char *tag)
{
	char id[33];
	tag_id(tag, id);
	if (id[0])
		store_ok("rm", tag, NULL);
	char *snaps_dir = h_join(e.store, "snapshots"), *tags_dir = h_join(e.store, "tags");
	char **snaps = list_dir(snaps_dir, NULL), **tags = list_dir(tags_dir, NULL);
	for (int i = 0; snaps[i]; i++) {
		bool tagged = false;
		for (int k = 0; tags[k] && !tagged; k++) {
			tag_id(tags[k], id);
			tagged = !strcmp(id, snaps[i]);
		}
		if (tagged)
			continue;
		store_ok("rm", snaps[i], NULL);
	}
	free_list(snaps);
	free_list(tags);
	free(snaps_dir);
	free(tags_dir);
}

static int count_in_store(const char *sub)
{
	char *d = h_join(e.store, sub);
	int n = count_entries(d);
	free(d);
	return n;
}

struct names {
	char (*v)[33];
	size_t n, cap;
};

static void names_add(struct names *s, const char *hex)
{
	cr_assert_not_null(hex, "a manifest names an object with no string");
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 256;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		cr_assert_not_null(s->v);
	}
	snprintf(s->v[s->n++], 33, "%s", hex);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The objects no committed snapshot references (what a whole gc removes):
 * read from the manifests (docs/store-format.md) without forkvm's code. */
static int count_garbage(void)
{
	struct names live = { 0 };
	char *snaps_dir = h_join(e.store, "snapshots");
	char **snaps = list_dir(snaps_dir, NULL);
	int garbage = 0;

	for (int i = 0; snaps[i]; i++) {
		char *p = h_fmt("%s/objects/%.2s/%s", e.store, snaps[i], snaps[i]);
		char *text = read_object(p, snaps[i], "reading a manifest");
		json_t *m = json_loads(text, 0, NULL), *f, *chunk;
		json_t *chunks = json_object_get(json_object_get(m, "memory"), "chunks");
		const char *k;
		size_t idx;
		cr_assert_not_null(m, "manifest %s: %s", snaps[i], text);
		names_add(&live, snaps[i]);
		json_object_foreach(json_object_get(m, "files"), k, f)
			names_add(&live, json_string_value(f));
		json_array_foreach(chunks, idx, chunk)
			names_add(&live, json_string_value(json_array_get(chunk, 1)));
		json_decref(m);
		free(text);
		free(p);
	}
	if (live.n)
		qsort(live.v, live.n, sizeof(*live.v), cmp_name);
	for (unsigned i = 0; i < 256; i++) {
		char *d = h_fmt("%s/objects/%02x", e.store, i);
		char **names = list_dir(d, NULL);
		for (int k = 0; names[k]; k++)
			garbage += !live.n || !bsearch(names[k], live.v, live.n, sizeof(*live.v),
						       cmp_name);
		free_list(names);
		free(d);
	}
	free_list(snaps);
	free(snaps_dir);
	free(live.v);
	return garbage;
}

Test(faults, sigkill_during_store_put_and_gc)
{
	H_NEED_GUEST();
	struct h_proc p;

	store_ok("init", "--chunk-size", "64K", NULL);

	/* Three snapshot directories of one guest, 4 MiB of distinct numbers
	 * each (the agent's own memory is mostly shared between them). */
	struct vmh *v = vmh_boot(&e.vms, NULL, &(struct vmh_opts){.memory = "128M"});
	define_guest(v, STORE_DOUBLES);
	static const char *const tags[] = { "base", "d0", "d1" };
	for (int i = 0; i < 3; i++) {
		struct src *s = &srcs[i];
		s->tag = tags[i];
		s->dir = h_fmt("%s/src-%s", e.dir, tags[i]);
		s->url = h_fmt("file://%s", s->dir);
		char *code = h_fmt("fill(%d)", 100 * (i + 1));
		s->state = vmh_js(v, code); /* state() as JSON */
		free(code);
		vmh_pause(v);
		char *json = h_fmt("{\"destination_url\": \"%s\"}", s->url);
		vmh_put(v, "vm.snapshot", json, 204);
		vmh_resume(v);
		free(json);
	}
	vmh_free(v);

	/* Each put whole once (d0's and d1's durations are the puts to kill);
	 * then one gc of d0's objects. */
	uint64_t took[3];
	struct pacer put_pace, gc_pace;
	for (int i = 0; i < 3; i++) {
		uint64_t t0 = now_ns();
		store_ok("put", srcs[i].url, "--tag", srcs[i].tag, NULL);
		took[i] = now_ns() - t0;
	}
	put_pace.d = (took[1] + took[2]) / 2;
	check_store("after the first puts");
	remove_for_gc("d0");
	uint64_t t0 = now_ns();
	store_ok("gc", NULL);
	gc_pace.d = now_ns() - t0;
	fprintf(stderr, "faults: store put of 4 MiB takes %.1f ms, gc %.1f ms (forkctl included)\n",
		put_pace.d / 1e6, gc_pace.d / 1e6);

	int gc_done = 0, gc_swept = 0, gc_part = 0, gc_none = 0, max_garbage = 0;
	int put_done = 0, put_tagged = 0, put_untagged = 0, put_none = 0, max_tmp = 0;
	for (int k = 0; k < STORE_PAIRS; k++) {
		const struct src *s = &srcs[1 + k % 2];
		char when[96];

		/* gc, with the snapshot of s and any untagged one removed. gc
		 * may spend most of its time in its final syncfs (which flushes
		 * the whole file system): every other kill falls in the first
		 * eighth of the range, where it marks and sweeps. */
		remove_for_gc(s->tag);
		int garbage = count_garbage(), tmp_before = count_in_store("tmp");
		if (garbage > max_garbage)
			max_garbage = garbage;
		snprintf(when, sizeof(when), "gc trial %d", k);
		store_start(&p, "gc", NULL);
		sleep_ns(k % 2 ? pacer_delay(&gc_pace) / 8 : pacer_delay(&gc_pace));
		int st = proc_end(&p, true);
		if (k % 2 == 0)
			pacer_update(&gc_pace, st == 0);
		cr_assert(st == 0 || st == 128 + SIGKILL, "%s: store gc ended with %d", when, st);
		int left = count_garbage(), tmp_left = count_in_store("tmp");
		if (st == 0) {
			cr_assert(left == 0 && tmp_left == 0,
				  "%s: gc finished, but %d unreferenced objects and %d temporary "
				  "files are left",
				  when, left, tmp_left);
			gc_done++;
		} else if (left == 0 && tmp_left == 0) {
			gc_swept++;
		} else if (left < garbage || tmp_left < tmp_before) {
			gc_part++;
		} else {
			gc_none++;
		}
		check_store(when);

		/* put of s, tagged */
		snprintf(when, sizeof(when), "put trial %d (%s)", k, s->tag);
		int snaps_before = count_in_store("snapshots");
		store_start(&p, "put", s->url, "--tag", s->tag, NULL);
		sleep_ns(pacer_delay(&put_pace));
		st = proc_end(&p, true);
		pacer_update(&put_pace, st == 0);
		cr_assert(st == 0 || st == 128 + SIGKILL, "%s: forkctl store put ended with %d",
			  when, st);
		char id[33];
		tag_id(s->tag, id);
		if (st == 0) {
			cr_assert(id[0], "%s: put succeeded but there is no tag %s", when, s->tag);
			put_done++;
		} else if (id[0]) {
			put_tagged++;
		} else if (count_in_store("snapshots") > snaps_before) {
			put_untagged++;
		} else {
			put_none++;
		}
		if (count_in_store("tmp") > max_tmp)
			max_tmp = count_in_store("tmp");
		check_store(when);
	}
	fprintf(stderr,
		"faults: SIGKILL during store gc, %d trials (up to %d unreferenced objects): %d "
		"finished, %d killed after the sweep, %d midway through it, %d before it\n",
		STORE_PAIRS, max_garbage, gc_done, gc_swept, gc_part, gc_none);
	fprintf(stderr,
		"faults: SIGKILL during store put, %d trials: %d finished, %d killed after the "
		"tag, %d committed without the tag, %d not committed (up to %d files left in "
		"tmp/); store verify passed and every tag restored right after each; %.1f s\n",
		STORE_PAIRS, put_done, put_tagged, put_untagged, put_none, max_tmp, elapsed_s());
	for (int i = 0; i < 3; i++) {
		free(srcs[i].dir);
		free(srcs[i].url);
		free(srcs[i].state);
	}
	memset(srcs, 0, sizeof(srcs));
}

/* ============================================================ 3. full disk */

#define FULL_DOUBLES 7000000U /* 56 MB touched: more than the 16 MiB tmpfs */

/* After a failed write: the tmpfs holds no more than it did (nothing was
 * left behind, no file is kept open), the store has no temporary file,
 * only whole objects, the one snapshot and tag it had, and verifies. */
static void check_nothing_left(uint64_t used_before, const char *when)
{
	char **names = list_dir(e.mnt, NULL);
	char *joined = join_list(names);
	cr_assert(names[0] && !strcmp(names[0], "store") && !names[1],
		  "%s: the tmpfs holds %s, not only the store", when, joined);
	free(joined);
	free_list(names);
	uint64_t used = used_bytes(e.mnt);
	cr_assert_leq(used, used_before + 64 * 1024,
		      "%s: the tmpfs has %llu bytes in use, %llu before: something was left", when,
		      (unsigned long long)used, (unsigned long long)used_before);
	char *tmp = h_join(e.store, "tmp");
	names = list_dir(tmp, NULL);
	joined = join_list(names);
	cr_assert_null(names[0], "%s: left in the store's tmp/: %s", when, joined);
	free(joined);
	free_list(names);
	free(tmp);
	check_objects(e.store, when);
	cr_assert_eq(count_in_store("snapshots"), 1, "%s", when);
	cr_assert_eq(count_in_store("tags"), 1, "%s", when);
	store_verifies(when);
}

/* Fills the file system of path with the file path. */
static void fill_disk(const char *path)
{
	static char block[64 * 1024];
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	memset(block, 0x5a, sizeof(block));
	for (size_t n = sizeof(block); n;) {
		ssize_t w = write(fd, block, n);
		if (w < 0 && errno == ENOSPC)
			n /= 2; /* down to the last bytes */
		else
			cr_assert(w > 0, "%s: %s", path, strerror(errno));
	}
	close(fd);
}

/* A REST vm.snapshot to url fails with a 4xx/5xx naming the full disk. */
static void snapshot_fails_full(struct vmh *v, const char *url)
{
	char *json = h_fmt("{\"destination_url\": \"%s\"}", url), *body = NULL;
	int st = vmh_api(v, "PUT", "/api/v1/vm.snapshot", json, &body);
	cr_assert(st >= 400 && st < 600, "vm.snapshot to %s on a full disk: %d %s", url, st, body);
	cr_assert_not_null(strstr(body, "No space left on device"),
			   "vm.snapshot to %s on a full disk: %d %s", url, st, body);
	free(body);
	free(json);
}

Test(faults, full_disk_snapshot_and_store)
{
	H_NEED_GUEST();
	char *mnt = h_join(e.dir, "small");
	cr_assert_eq(mkdir(mnt, 0700), 0);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=16m,mode=0700") < 0) {
		int errn = errno;
		free(mnt);
		cr_skip_test("cannot mount a 16 MiB tmpfs (%s): this test needs CAP_SYS_ADMIN",
			     strerror(errn));
	}
	e.mnt = mnt;
	free(e.store);
	e.store = h_join(mnt, "store");
	struct h_proc p;
	char *out, *err;
	store_ok("init", NULL);

	/* A small snapshot fits and stays. */
	struct vmh *v =
	    vmh_boot(&e.vms, NULL, &(struct vmh_opts){.memory = "512M", .store = e.store});
	define_guest(v, FULL_DOUBLES);
	char *small = vmh_js(v, "mark(7)");
	vmh_pause(v);
	vmh_put(v, "vm.snapshot", "{\"destination_url\": \"store://small\"}", 200);
	vmh_resume(v);
	/* 56 MB that neither a directory nor the store can hold. */
	char *want = vmh_js(v, "fill(9)");
	vmh_pause(v);
	uint64_t used = used_bytes(mnt);

	char *dest = h_join(mnt, "snap"), *url = h_fmt("file://%s", dest);
	snapshot_fails_full(v, url);
	check_nothing_left(used, "vm.snapshot to a directory");
	snapshot_fails_full(v, "store://big");
	check_nothing_left(used, "vm.snapshot to store://big");

	/* forkctl store put of the same memory, from a directory elsewhere */
	char *big = h_join(e.dir, "big"), *big_url = h_fmt("file://%s", big);
	char *json = h_fmt("{\"destination_url\": \"%s\"}", big_url);
	vmh_put(v, "vm.snapshot", json, 204);
	store_start(&p, "put", big_url, "--tag", "big", NULL);
	int st = proc_finish(&p, &out, &err);
	cr_assert_eq(st, 1, "store put on a full disk: %d\n%s%s", st, out, err);
	cr_assert_not_null(strstr(err, "No space left on device"),
			   "store put on a full disk: %s", err);
	free(out);
	free(err);
	check_nothing_left(used, "forkctl store put");

	/* The VM is paused, resumes, and its memory is intact. */
	vmh_assert_state(v, "Paused");
	vmh_resume(v);
	char *got = vmh_js(v, "state()");
	cr_assert_str_eq(got, want, "after the failed snapshots the guest has %s, not %s", got,
			 want);
	vmh_free(v);

	/* A first restore on a full disk cannot materialize the image: forkvm
	 * says why and leaves no partial image; with room again it works. */
	char *filler = h_join(mnt, "filler");
	fill_disk(filler);
	struct vmh *r = vmh_restore_start(&e.vms, NULL, "store://small",
					  &(struct vmh_opts){.store = e.store, .resume = true});
	st = h_wait(&r->proc, T_MS);
	err = vmh_stderr(r);
	cr_assert(st > 0 && st < 128, "forkvm --restore on a full disk: status %d\n%s", st, err);
	cr_assert_not_null(strstr(err, "No space left on device"),
			   "forkvm --restore on a full disk: %s", err);
	free(err);
	vmh_free(r);
	cr_assert_eq(count_in_store("tmp"), 0, "a partial image left in tmp/");
	cr_assert_eq(count_in_store("images"), 0, "an image left in images/");
	cr_assert_eq(unlink(filler), 0);
	free(filler);
	/* and what the store had still restores */
	expect_restores("store://small", e.store, small, "restore after the full disk");
	fprintf(stderr,
		"faults: full disk: vm.snapshot to a directory and to the store, store put and "
		"a first restore from the store failed cleanly (No space left on device), the VM "
		"resumed intact; %.1f s\n",
		elapsed_s());
	free(got);
	free(json);
	free(big);
	free(big_url);
	free(dest);
	free(url);
	free(small);
	free(want);
}
