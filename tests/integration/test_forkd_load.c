/* tests/integration/test_forkd_load.c - forkd under load (docs/forkd-api.md,
 * docs/security.md): 1000 concurrent API requests (fork, invoke, list,
 * kill) all answered as documented; 10,000 sequential fork/kill cycles from
 * a warm pool leaving forkd's fds, threads and memory flat; 200 concurrent
 * invokes among which runaway guests (a spin, an allocator that catches
 * its failures and keeps going, a console flood, an allocator that runs
 * the guest out of memory) end cleanly while the others answer and forkd
 * stays responsive.
 *
 * In the KVM lane (nested SVM under TCG, where a fork/kill cycle takes
 * ~3.5x longer) the same properties are tested at half the concurrency (500
 * requests, 100 invokes) and 2000 fork/kill cycles measured from cycle 200
 * (h_size).
 *
 * Each test starts its own forkd (h_forkd_start, --max-clones 4000) in a
 * fresh directory and boots one template "t" from the agent with HANDLERS
 * and 256 MiB (64 MiB for the runaways, so that the allocators reach the
 * end of guest memory sooner). Figures (throughput, latency percentiles,
 * cycle rate, memory) are printed on stdout. Nothing asserts on speed: the
 * machine is shared; timeouts are generous hang detectors only. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/agent_client.h"
#include "common/util.h"
#include "tests/lib/harness.h"

#define T_MS 120000       /* one REST request: a hang detector, not a limit */
#define BOOT_MS 180000    /* POST /v1/templates that boots the guest */
#define REAP_MS 120000    /* for every clone process to be gone */
#define MEMORY (256 << 20) /* the template's guest memory */
#define MEMORY_SMALL (64 << 20) /* the runaways': allocators reach its end sooner */
#define STACK (256 << 10) /* client threads' stacks */
#define HANDLERS                                                                                   \
	"function double(x) { return 2 * x; }\n"                                                   \
	"function spin() { for (;;) {} }\n"                                                        \
	"function grow() { var a = []; for (;;) a.push(new Uint8Array(1 << 20)); }\n"              \
	"function hog() { var a = []; for (;;) { try { a.push(new Uint8Array(1 << 20)); }"         \
	" catch (e) {} } }\n"                                                                      \
	"function flood() { for (var i = 0;; i++) console.log('flood ' + i +"                      \
	" ' the quick brown fox jumps over the lazy dog'); }\n"

static struct {
	struct h_forkd d;
	pid_t pid;
} e;

/* ------------------------------------------------------------ fixture */

static void setup(void)
{
	h_asan_small_quarantine();
	static const char *const extra[] = { "--max-clones", "4000", NULL };
	struct rlimit rl;

	if (!h_can_boot())
		return;
	/* A thousand client sockets at once. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (h_forkd_start(&e.d, NULL, extra, 30000) < 0) {
		char *log = h_forkd_log(&e.d);
		cr_assert_fail("forkd did not start: %s", log);
	}
	e.pid = e.d.proc.pid;
}

static void teardown(void)
{
	h_forkd_stop(&e.d, REAP_MS);
	memset(&e, 0, sizeof(e));
}

TestSuite(forkd_load, .init = setup, .fini = teardown, .timeout = 900);

/* The end of forkd's stderr (malloc'd), for failure messages. */
static char *forkd_tail(void)
{
	char *log = h_forkd_log(&e.d), *tail;
	size_t l = strlen(log);
	if (asprintf(&tail, "...%s", l > 3000 ? log + l - 3000 : log) < 0)
		abort();
	free(log);
	return tail;
}

/* ------------------------------------------------------------ REST */

/* One request; returns the status (or -errno) and *out the body parsed
 * (NULL when empty or not JSON) when out is not NULL. */
static int req(const char *method, const char *path, const char *json, json_t **out)
{
	char *body = NULL;
	int st = h_http(e.d.sock, method, path, json, T_MS, &body);
	if (out)
		*out = st >= 0 && *body ? json_loads(body, JSON_DECODE_ANY, NULL) : NULL;
	free(body);
	return st;
}

/* A request that must answer want; returns the parsed body (NULL when empty). */
static json_t *req_expect(const char *method, const char *path, const char *json, int timeout_ms,
			  int want)
{
	char *raw = NULL;
	int st = h_http(e.d.sock, method, path, json, timeout_ms, &raw);
	if (st != want) {
		char *log = forkd_tail();
		cr_assert_fail("%s %s %.300s: %d %.500s (expected %d)\nforkd stderr: %s", method,
			       path, json ? json : "", st, raw, want, log);
	}
	json_t *j = *raw ? json_loads(raw, JSON_DECODE_ANY, NULL) : NULL;
	cr_assert(!*raw || j, "%s %s: a body that is not JSON: %.300s", method, path, raw);
	free(raw);
	return j;
}

static void template_boot(unsigned pool, int memory)
{
	char *agent = h_payload("agent");
	json_t *b = json_pack("{s:s,s:{s:{s:i},s:{s:s}},s:s,s:i}", "name", "t", "boot", "memory",
			      "size", memory, "payload", "kernel", agent, "load", HANDLERS, "pool",
			      (int)pool);
	char *txt = json_dumps(b, JSON_COMPACT);
	json_decref(req_expect("POST", "/v1/templates", txt, BOOT_MS, 201));
	free(txt);
	json_decref(b);
	free(agent);
}

static int pool_ready(void)
{
	json_t *t = req_expect("GET", "/v1/templates/t", NULL, T_MS, 200);
	int ready = (int)json_integer_value(json_object_get(json_object_get(t, "pool"), "ready"));
	json_decref(t);
	return ready;
}

/* The value of one sample line of GET /v1/metrics ("name{labels}"), or -1. */
static long long metric(const char *sample)
{
	char *raw = NULL;
	long long v = -1;
	size_t n = strlen(sample);
	int st = h_http(e.d.sock, "GET", "/v1/metrics", NULL, T_MS, &raw);

	cr_assert_eq(st, 200, "GET /v1/metrics: %d %.300s", st, raw);
	for (const char *line = raw; line && *line;) {
		if (!strncmp(line, sample, n) && line[n] == ' ') {
			v = atoll(line + n + 1);
			break;
		}
		line = strchr(line, '\n');
		line = line ? line + 1 : NULL;
	}
	free(raw);
	return v;
}

/* ------------------------------------------------------------ /proc */

/* /proc/PID/schedstat: time on a CPU and time runnable but waiting for
 * one, in ns. */
static void sched_times(pid_t pid, unsigned long long *run, unsigned long long *wait)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	FILE *f = fopen(path, "r");
	*run = *wait = 0;
	if (f && fscanf(f, "%llu %llu", run, wait) != 2)
		*run = *wait = 0;
	if (f)
		fclose(f);
}

/* forkd's child processes (clones, pool shells, builders). */
struct kids {
	int n, zombies;
	long max_rss_kib;
};

/* Reads parent's children from /proc/PID/task/PID/children (forkd has one
 * thread), then each child's state and resident size: few /proc files, as
 * every /proc entry of a child costs forkd time when it reaps the child. */
static void kids_scan(pid_t parent, struct kids *k)
{
	char path[64], list[65536];
	size_t len;

	memset(k, 0, sizeof(*k));
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)parent, (int)parent);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	len = fread(list, 1, sizeof(list) - 1, f);
	fclose(f);
	list[len] = '\0';
	for (char *save = NULL, *tok = strtok_r(list, " \n", &save); tok;
	     tok = strtok_r(NULL, " \n", &save)) {
		char buf[512], state = '?';
		long pages = 0, rss = 0;
		k->n++;
		snprintf(path, sizeof(path), "/proc/%s/stat", tok);
		f = fopen(path, "r");
		len = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		if (f)
			fclose(f);
		buf[len] = '\0';
		const char *rp = strrchr(buf, ')'); /* the name may hold spaces */
		if (rp && sscanf(rp + 1, " %c", &state) == 1 && state == 'Z')
			k->zombies++;
		snprintf(path, sizeof(path), "/proc/%s/statm", tok);
		f = fopen(path, "r");
		if (f && fscanf(f, "%ld %ld", &pages, &rss) == 2)
			k->max_rss_kib = MAX(k->max_rss_kib, rss * (sysconf(_SC_PAGESIZE) >> 10));
		if (f)
			fclose(f);
	}
}

/* The entries of dir and of its subdirectories, one level down, as
 * " a [x y] b [] ..." (malloc'd); *n gets the count of dir's entries. */
static char *dir_tree(const char *dir, int *n)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char *s = strdup(""), *t;

	cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
	*n = 0;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char *sub = h_join(dir, de->d_name), *in = strdup("");
		DIR *sd = opendir(sub);
		struct dirent *se;
		while (sd && (se = readdir(sd))) {
			if (strcmp(se->d_name, ".") && strcmp(se->d_name, "..") &&
			    asprintf(&t, "%s %s", in, se->d_name) >= 0) {
				free(in);
				in = t;
			}
		}
		if (sd)
			closedir(sd);
		if (asprintf(&t, "%s %s [%s ]", s, de->d_name, in) >= 0) {
			free(s);
			s = t;
		}
		free(in);
		free(sub);
		(*n)++;
	}
	closedir(d);
	return s;
}

/* Nothing is left: no clone listed, none live, and once the pool is
 * emptied no child process of forkd (not even a zombie) and no clone
 * directory. */
static void expect_all_reaped(void)
{
	json_t *list = req_expect("GET", "/v1/clones", NULL, T_MS, 200);
	cr_assert_eq(json_array_size(json_object_get(list, "clones")), 0, "clones still listed");
	json_decref(list);
	json_decref(req_expect("PUT", "/v1/templates/t/pool", "{\"size\":0}", T_MS, 200));
	struct kids k;
	for (int waited = 0;; waited += 20) {
		kids_scan(e.pid, &k);
		if (k.n == 0 || waited >= REAP_MS)
			break;
		h_sleep_ms(20);
	}
	cr_assert_eq(k.n, 0, "forkd still has %d child processes (%d zombies) after %d s", k.n,
		     k.zombies, REAP_MS / 1000);
	cr_assert_eq(metric("forkd_clones_live"), 0);
	char *clones = h_join(e.d.run, "clones"), *left;
	int n;
	for (int waited = 0;; waited += 20) {
		left = dir_tree(clones, &n);
		if (n == 0 || waited >= 2000)
			break;
		free(left);
		h_sleep_ms(20);
	}
	cr_assert_eq(n, 0, "clone directories left in %s:%s", clones, left);
	free(left);
	free(clones);
}

/* ------------------------------------------------------------ figures */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile p of sorted v[0..n). */
static double pct(const double *v, size_t n, unsigned p)
{
	size_t r = (n * p + 99) / 100;
	return v[r ? r - 1 : 0];
}

/* Prints n, p50, p99 and max of ms[0..n) (sorted in place). */
static void print_lat(const char *label, double *ms, size_t n)
{
	if (!n) {
		printf("  %-28s none\n", label);
		return;
	}
	qsort(ms, n, sizeof(*ms), cmp_double);
	printf("  %-28s n=%-4zu p50 %8.2f ms   p99 %8.2f ms   max %8.2f ms\n", label, n,
	       pct(ms, n, 50), pct(ms, n, 99), ms[n - 1]);
}

/* ------------------------------------------------------------ concurrent calls */

/* One request on a thread of its own, released with the others. */
struct call {
	const char *method;
	char path[64];
	char body[128];
	int kind, arg;
	int timeout_ms;
	pthread_barrier_t *go;
	int status;    /* or -errno: the request failed or hung */
	char *raw;     /* the body, or why the request failed */
	json_t *reply; /* the body parsed, NULL when empty or not JSON */
	uint64_t t0, t1;
};

static void *call_run(void *arg)
{
	struct call *c = arg;
	pthread_barrier_wait(c->go);
	c->t0 = time_mono_ns();
	c->status = h_http(e.d.sock, c->method, c->path, c->body[0] ? c->body : NULL, c->timeout_ms,
			   &c->raw);
	c->t1 = time_mono_ns();
	return NULL;
}

/* Runs the n calls at once: one thread each, all released together.
 * Returns the wall time from the release to the last answer (ns). */
static uint64_t calls_run(struct call *calls, size_t n)
{
	pthread_t *th = calloc(n, sizeof(*th));
	pthread_barrier_t go;
	pthread_attr_t at;
	uint64_t t0, t1;

	cr_assert_not_null(th);
	cr_assert_eq(pthread_barrier_init(&go, NULL, (unsigned)n + 1), 0);
	cr_assert_eq(pthread_attr_init(&at), 0);
	cr_assert_eq(pthread_attr_setstacksize(&at, STACK), 0);
	for (size_t i = 0; i < n; i++) {
		calls[i].go = &go;
		int rc = pthread_create(&th[i], &at, call_run, &calls[i]);
		cr_assert_eq(rc, 0, "thread %zu of %zu: %s", i, n, strerror(rc));
	}
	pthread_barrier_wait(&go);
	t0 = t1 = time_mono_ns();
	for (size_t i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		t1 = MAX(t1, calls[i].t1);
		const char *raw = calls[i].raw;
		calls[i].reply = NULL;
		if (calls[i].status >= 0 && *raw)
			calls[i].reply = json_loads(raw, JSON_DECODE_ANY, NULL);
	}
	pthread_attr_destroy(&at);
	pthread_barrier_destroy(&go);
	free(th);
	return t1 - t0;
}

static void calls_free(struct call *calls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(calls[i].raw);
		json_decref(calls[i].reply);
	}
	memset(calls, 0, n * sizeof(*calls));
}

static double call_ms(const struct call *c)
{
	return (c->t1 - c->t0) / 1e6;
}

/* Fails unless c answered want. */
static void call_expect(const struct call *c, int want)
{
	if (c->status == want)
		return;
	char *log = forkd_tail();
	cr_assert_fail("%s %s %s: %d %.300s (expected %d) after %.0f ms\nforkd stderr: %s",
		       c->method, c->path, c->body, c->status, c->raw, want, call_ms(c), log);
}

/* A deterministic shuffle (xorshift), so that the kinds arrive mixed. */
static void calls_shuffle(struct call *calls, size_t n)
{
	uint32_t x = 2463534242u;
	for (size_t i = n - 1; i > 0; i--) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		size_t j = x % (i + 1);
		struct call t = calls[i];
		calls[i] = calls[j];
		calls[j] = t;
	}
}

static void invoke_call(struct call *c, int kind, const char *fn, int arg, int limit_ms)
{
	c->kind = kind;
	c->arg = arg;
	c->method = "POST";
	snprintf(c->path, sizeof(c->path), "/v1/templates/t/invoke");
	snprintf(c->body, sizeof(c->body), "{\"fn\":\"%s\",\"args\":[%d],\"timeout_ms\":%d}", fn,
		 arg, limit_ms);
	c->timeout_ms = limit_ms + 60000; /* forkd answers by the limit; this detects a hang */
}

/* Fails unless c is a 200 invoke with {"ok": true, "result": 2 * arg}. */
static void expect_doubled(const struct call *c)
{
	call_expect(c, 200);
	cr_assert(json_is_true(json_object_get(c->reply, "ok")), "invoke %d: %.300s", c->arg,
		  c->raw);
	cr_assert_eq(json_integer_value(json_object_get(c->reply, "result")), 2LL * c->arg,
		     "invoke %d: %.300s", c->arg, c->raw);
}

/* ------------------------------------------------------------ 1000 concurrent requests */

enum { K_FORK, K_INVOKE, K_LIST, K_KILL, K_KILL_AGAIN, K_KINDS };
/* Natively; half of each in the KVM lane. */
#define STORM_DIV h_size(1, 2)
#define STORM_FORKS_MAX 250
#define STORM_KILLS_MAX 200
#define STORM_MAX 1000
#define STORM_FORKS (250 / STORM_DIV)
#define STORM_INVOKES (250 / STORM_DIV)
#define STORM_LISTS (250 / STORM_DIV)
#define STORM_KILLS (200 / STORM_DIV)      /* of clones forked beforehand */
#define STORM_KILLS_AGAIN (50 / STORM_DIV) /* a second DELETE of the first of those */
#define STORM (STORM_FORKS + STORM_INVOKES + STORM_LISTS + STORM_KILLS + STORM_KILLS_AGAIN)

Test(forkd_load, a_thousand_concurrent_requests_are_all_answered)
{
	static const char *const names[K_KINDS] = { "fork (201)", "invoke (200)", "list (200)",
						    "kill (204)", "kill again (404/409)" };
	static struct call calls[STORM_MAX];
	static double ms[K_KINDS][STORM_MAX];
	static char forked[STORM_FORKS_MAX][16];
	size_t nms[K_KINDS] = { 0 }, n = 0;
	int killed[STORM_KILLS_MAX] = { 0 }, refused[STORM_KILLS_MAX] = { 0 }, nforked = 0;
	int again404 = 0, again409 = 0;
	char body[64];

	H_NEED_GUEST();
	template_boot(4, MEMORY);
	snprintf(body, sizeof(body), "{\"count\":%d}", STORM_KILLS);
	json_t *pre = req_expect("POST", "/v1/templates/t/clones", body, T_MS, 201);
	json_t *targets = json_object_get(pre, "clones");
	cr_assert_eq(json_array_size(targets), STORM_KILLS);

	for (int i = 0; i < STORM_FORKS; i++, n++) {
		calls[n] = (struct call){ .kind = K_FORK, .method = "POST", .timeout_ms = T_MS };
		snprintf(calls[n].path, sizeof(calls[n].path), "/v1/templates/t/clones");
		snprintf(calls[n].body, sizeof(calls[n].body), "{\"count\":1}");
	}
	for (int i = 0; i < STORM_INVOKES; i++, n++)
		invoke_call(&calls[n], K_INVOKE, "double", i, 60000);
	for (int i = 0; i < STORM_LISTS; i++, n++) {
		calls[n] = (struct call){ .kind = K_LIST, .method = "GET", .timeout_ms = T_MS };
		snprintf(calls[n].path, sizeof(calls[n].path), "/v1/clones");
	}
	for (int i = 0; i < STORM_KILLS + STORM_KILLS_AGAIN; i++, n++) {
		int t = i % STORM_KILLS;
		json_t *target = json_array_get(targets, (size_t)t);
		const char *id = json_string_value(json_object_get(target, "id"));
		cr_assert_not_null(id);
		calls[n] = (struct call){ .kind = i < STORM_KILLS ? K_KILL : K_KILL_AGAIN, .arg = t,
					  .method = "DELETE", .timeout_ms = T_MS };
		snprintf(calls[n].path, sizeof(calls[n].path), "/v1/clones/%s", id);
	}
	cr_assert_eq(n, STORM);
	calls_shuffle(calls, n);

	uint64_t wall = calls_run(calls, n);

	for (size_t i = 0; i < n; i++) {
		struct call *c = &calls[i];
		ms[c->kind][nms[c->kind]++] = call_ms(c);
		switch (c->kind) {
		case K_FORK: {
			call_expect(c, 201);
			json_t *arr = json_object_get(c->reply, "clones");
			cr_assert_eq(json_array_size(arr), 1, "fork: %.300s", c->raw);
			json_t *cl = json_array_get(arr, 0);
			cr_assert_str_eq(json_string_value(json_object_get(cl, "state")),
					 "running");
			snprintf(forked[nforked++], sizeof(forked[0]), "%s",
				 json_string_value(json_object_get(cl, "id")));
			break;
		}
		case K_INVOKE:
			expect_doubled(c);
			break;
		case K_LIST:
			call_expect(c, 200);
			cr_assert(json_is_array(json_object_get(c->reply, "clones")),
				  "list: %.300s", c->raw);
			break;
		default:
			/* Of the DELETEs of one clone, exactly one kills it (204, once
			 * reaped); another gets 409 while that one is in progress, or
			 * 404 once the clone is gone, with {"error": ...}. */
			if (c->status == 204) {
				killed[c->arg]++;
				break;
			}
			cr_assert(c->status == 404 || c->status == 409, "%s %s: %d %.300s",
				  c->method, c->path, c->status, c->raw);
			cr_assert(json_is_string(json_object_get(c->reply, "error")), "%s: %.300s",
				  c->path, c->raw);
			refused[c->arg]++;
			again404 += c->status == 404;
			again409 += c->status == 409;
			break;
		}
	}
	for (int t = 0; t < STORM_KILLS; t++) {
		cr_assert_eq(killed[t], 1, "clone %d: %d DELETEs answered 204", t, killed[t]);
		cr_assert_eq(refused[t], t < STORM_KILLS_AGAIN, "clone %d: %d DELETEs refused", t,
			     refused[t]);
	}
	printf("forkd_load: %d concurrent requests (1 thread and connection each) in %.2f s: "
	       "%.0f requests/s\n",
	       STORM, wall / 1e9, STORM / (wall / 1e9));
	for (int k = 0; k < K_KINDS; k++)
		print_lat(names[k], ms[k], nms[k]);
	printf("  second DELETEs: %d got 409 (the first in progress), %d got 404 (clone gone)\n",
	       again409, again404);
	fflush(stdout);
	calls_free(calls, n);
	json_decref(pre);

	/* forkd still answers; the clones the storm forked are exactly those listed. */
	cr_assert_eq(req("GET", "/v1/ping", NULL, NULL), 200);
	json_t *list = req_expect("GET", "/v1/clones", NULL, T_MS, 200);
	json_t *arr = json_object_get(list, "clones"), *cl;
	size_t i;
	cr_assert_eq(json_array_size(arr), STORM_FORKS, "%zu clones listed", json_array_size(arr));
	json_array_foreach(arr, i, cl) {
		const char *id = json_string_value(json_object_get(cl, "id"));
		int found = 0;
		for (int k = 0; k < nforked; k++)
			found += !strcmp(forked[k], id);
		cr_assert_eq(found, 1, "clone %s listed but not forked by the storm", id);
	}
	json_decref(list);
	for (int k = 0; k < nforked; k++) {
		char path[64];
		snprintf(path, sizeof(path), "/v1/clones/%.15s", forked[k]);
		json_decref(req_expect("DELETE", path, NULL, T_MS, 204));
	}
	cr_assert_eq(metric("forkd_invokes_total{result=\"ok\"}"), STORM_INVOKES);
	cr_assert_eq(metric("forkd_fork_failures_total"), 0);
	expect_all_reaped();
}

/* ------------------------------------------------------------ 10,000 fork/kill cycles */

/* 10,000 natively, 2000 in the KVM lane */
#define CYCLES_MAX 10000
#define CYCLES h_size(CYCLES_MAX, 2000)
#define CYCLES_WARM h_size(1000, 200) /* the reference point, after warm-up; a sample each */
#define CYCLES_INVOKE 100              /* an invoke every 100 cycles too */
#define FORK_ONE "{\"count\":1}"
#define RSS_SLACK_KIB 512

struct usage {
	int fds;
	long threads, rss_kib;
};

/* forkd's usage once its pool is full and nothing else runs. */
static void usage_sample(struct usage *u)
{
	struct kids k;
	int waited = 0;

	for (;; waited += 10) {
		kids_scan(e.pid, &k);
		if ((k.n == 2 && pool_ready() == 2) || waited >= 30000)
			break;
		h_sleep_ms(10);
	}
	cr_assert_eq(k.n, 2, "forkd has %d children, expected its 2 pool shells", k.n);
	/* The connection of the last answer may not be closed yet: the least
	 * of a few looks. */
	u->fds = h_count_fds(e.pid);
	for (int i = 0; i < 5; i++) {
		h_sleep_ms(20);
		u->fds = MIN(u->fds, h_count_fds(e.pid));
	}
	u->threads = h_status_field(e.pid, "Threads:");
	u->rss_kib = h_status_field(e.pid, "VmRSS:");
}

Test(forkd_load, ten_thousand_fork_kill_cycles_leave_forkd_flat, .timeout = 3600)
{
	static double fork_ms[CYCLES_MAX], kill_ms[CYCLES_MAX];
	struct usage warm = { 0 }, u;
	uint64_t t0;

	H_NEED_GUEST();
	template_boot(2, MEMORY);
	printf("forkd_load: %d fork/kill cycles (pool of 2, an invoke every %d)\n", CYCLES,
	       CYCLES_INVOKE);
	t0 = time_mono_ns();
	for (int i = 0; i < CYCLES; i++) {
		char path[64];
		uint64_t a = time_mono_ns();
		json_t *j = req_expect("POST", "/v1/templates/t/clones", FORK_ONE, T_MS, 201);
		uint64_t b = time_mono_ns();
		json_t *cl = json_array_get(json_object_get(j, "clones"), 0);
		const char *id = json_string_value(json_object_get(cl, "id"));
		cr_assert_not_null(id);
		snprintf(path, sizeof(path), "/v1/clones/%s", id);
		json_decref(j);
		json_decref(req_expect("DELETE", path, NULL, T_MS, 204));
		fork_ms[i] = (b - a) / 1e6;
		kill_ms[i] = (time_mono_ns() - b) / 1e6;
		if ((i + 1) % CYCLES_INVOKE == 0) {
			char body[64];
			snprintf(body, sizeof(body), "{\"fn\":\"double\",\"args\":[%d]}", i);
			j = req_expect("POST", "/v1/templates/t/invoke", body, T_MS, 200);
			cr_assert_eq(json_integer_value(json_object_get(j, "result")), 2LL * i);
			json_decref(j);
		}
		if ((i + 1) % CYCLES_WARM == 0) {
			usage_sample(&u);
			if (i + 1 == CYCLES_WARM)
				warm = u;
			double s = (time_mono_ns() - t0) / 1e9;
			printf("  cycle %5d: %6.1f s, %5.1f cycles/s so far; "
			       "forkd fds %d, threads %ld, VmRSS %ld KiB\n",
			       i + 1, s, (i + 1) / s, u.fds, u.threads, u.rss_kib);
			fflush(stdout);
		}
	}
	double s = (time_mono_ns() - t0) / 1e9;
	printf("  %d cycles in %.1f s: %.1f cycles/s; forks from the pool %lld, cold %lld\n",
	       CYCLES, s, CYCLES / s, metric("forkd_forks_by_source_total{source=\"pool\"}"),
	       metric("forkd_forks_by_source_total{source=\"cold\"}"));
	print_lat("fork (POST clones)", fork_ms, CYCLES);
	print_lat("kill (DELETE, reaped)", kill_ms, CYCLES);
	fflush(stdout);
	cr_assert_eq(warm.threads, 1, "forkd must stay single-threaded");
	cr_assert_eq(u.threads, 1, "forkd must stay single-threaded");
	cr_assert_leq(u.fds, warm.fds, "fds grew from %d (cycle %d) to %d", warm.fds, CYCLES_WARM,
		      u.fds);
	cr_assert_leq(u.rss_kib, warm.rss_kib + RSS_SLACK_KIB,
		      "VmRSS grew from %ld KiB (cycle %d) to %ld KiB", warm.rss_kib, CYCLES_WARM,
		      u.rss_kib);
	cr_assert_eq(metric("forkd_fork_failures_total"), 0);
	expect_all_reaped();
}

/* ------------------------------------------------------------ runaway guests */

enum { R_NORMAL, R_SPIN, R_HOG, R_FLOOD, R_GROW, R_KINDS };
static const struct {
	const char *fn;
	int count, limit_ms;
} runaway[R_KINDS] = {
	/* Normal invokes get a limit they cannot reach even on a starved machine. */
	[R_NORMAL] = { "double", 140, 120000 },
	/* These never return: 504 at their limit. */
	[R_SPIN] = { "spin", 15, 2000 },
	[R_HOG] = { "hog", 15, 2000 },
	[R_FLOOD] = { "flood", 15, 2000 },
	/* Runs the guest out of memory: Duktape throws "alloc failed" (200
	 * with ok:false, docs/agent-protocol.md) well within its limit. */
	[R_GROW] = { "grow", 15, 120000 },
};
/* 200 natively, 98 in the KVM lane (each count halved, rounded down) */
#define RUNAWAY_MAX 200
#define RUNAWAY_DIV h_size(1, 2)
#define RUNAWAY_COUNT(k) (runaway[k].count / RUNAWAY_DIV)
#define RUNAWAY_STORM                                                                    \
	(RUNAWAY_COUNT(R_NORMAL) + RUNAWAY_COUNT(R_SPIN) + RUNAWAY_COUNT(R_HOG) +         \
	 RUNAWAY_COUNT(R_FLOOD) + RUNAWAY_COUNT(R_GROW))
#define PINGS_MAX 8192

/* Watches forkd during a storm: pings it every 50 ms, samples its clones'
 * memory and the size of their consoles every 250 ms. */
struct watch {
	atomic_bool stop;
	pthread_t pinger, sampler;
	double ping_ms[PINGS_MAX];
	int npings, bad_pings, bad_status;
	long max_rss_kib;
	int max_kids;
	long long max_console;
};

static void *pinger(void *arg)
{
	struct watch *w = arg;
	while (!atomic_load(&w->stop)) {
		uint64_t t = time_mono_ns();
		int st = h_http(e.d.sock, "GET", "/v1/ping", NULL, 30000, NULL);
		if (w->npings < PINGS_MAX)
			w->ping_ms[w->npings++] = (time_mono_ns() - t) / 1e6;
		if (st != 200) {
			w->bad_pings++;
			w->bad_status = st;
		}
		h_sleep_ms(50);
	}
	return NULL;
}

static void *sampler(void *arg)
{
	struct watch *w = arg;
	char *dir = h_join(e.d.run, "clones");
	while (!atomic_load(&w->stop)) {
		struct kids k;
		kids_scan(e.pid, &k);
		w->max_rss_kib = MAX(w->max_rss_kib, k.max_rss_kib);
		w->max_kids = MAX(w->max_kids, k.n);
		DIR *d = opendir(dir);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			char path[512];
			struct stat st;
			snprintf(path, sizeof(path), "%s/%s/console.log", dir, de->d_name);
			if (de->d_name[0] != '.' && stat(path, &st) == 0)
				w->max_console = MAX(w->max_console, (long long)st.st_size);
		}
		if (d)
			closedir(d);
		h_sleep_ms(250);
	}
	free(dir);
	return NULL;
}

Test(forkd_load, runaway_guests_end_cleanly_and_forkd_stays_responsive)
{
	static struct call calls[RUNAWAY_MAX];
	static double ms[R_KINDS][RUNAWAY_MAX];
	static struct watch w;
	size_t nms[R_KINDS] = { 0 }, n = 0;

	H_NEED_GUEST();
	template_boot(4, MEMORY_SMALL);

	/* Normal invokes alone, for reference. */
	for (int i = 0; i < RUNAWAY_COUNT(R_NORMAL); i++, n++)
		invoke_call(&calls[n], R_NORMAL, "double", i, runaway[R_NORMAL].limit_ms);
	uint64_t wall = calls_run(calls, n);
	for (size_t i = 0; i < n; i++) {
		expect_doubled(&calls[i]);
		ms[R_NORMAL][nms[R_NORMAL]++] = call_ms(&calls[i]);
	}
	printf("forkd_load: %zu concurrent normal invokes alone in %.2f s\n", n, wall / 1e9);
	print_lat("normal invokes, alone", ms[R_NORMAL], nms[R_NORMAL]);
	fflush(stdout);
	calls_free(calls, n);
	nms[R_NORMAL] = n = 0;

	/* The same among runaways, with forkd watched. */
	for (int k = 0; k < R_KINDS; k++)
		for (int i = 0; i < RUNAWAY_COUNT(k); i++, n++)
			invoke_call(&calls[n], k, runaway[k].fn, i, runaway[k].limit_ms);
	cr_assert_eq(n, RUNAWAY_STORM);
	calls_shuffle(calls, n);
	atomic_init(&w.stop, false);
	cr_assert_eq(pthread_create(&w.pinger, NULL, pinger, &w), 0);
	cr_assert_eq(pthread_create(&w.sampler, NULL, sampler, &w), 0);
	unsigned long long run0, wait0, run1, wait1;
	sched_times(e.pid, &run0, &wait0);
	wall = calls_run(calls, n);
	sched_times(e.pid, &run1, &wait1);
	atomic_store(&w.stop, true);
	pthread_join(w.pinger, NULL);
	pthread_join(w.sampler, NULL);

	for (size_t i = 0; i < n; i++) {
		struct call *c = &calls[i];
		int limit = runaway[c->kind].limit_ms;
		ms[c->kind][nms[c->kind]++] = call_ms(c);
		if (c->kind == R_NORMAL) {
			expect_doubled(c);
		} else if (c->kind == R_GROW) {
			call_expect(c, 200);
			json_t *err = json_object_get(c->reply, "error");
			const char *msg = json_string_value(json_object_get(err, "message"));
			cr_assert(json_is_false(json_object_get(c->reply, "ok")), "grow: %.300s",
				  c->raw);
			cr_assert(msg && strstr(msg, "alloc failed"), "grow: %.300s", c->raw);
		} else {
			char want[64];
			call_expect(c, 504);
			snprintf(want, sizeof(want), "did not return within %d ms", limit);
			const char *msg = json_string_value(json_object_get(c->reply, "error"));
			cr_assert(msg && strstr(msg, want), "%s: %.300s", runaway[c->kind].fn,
				  c->raw);
			/* forkd's timer cannot fire early. */
			cr_assert_geq(call_ms(c), limit,
				      "%s: 504 after %.0f ms, its limit is %d ms",
				      runaway[c->kind].fn, call_ms(c), limit);
		}
	}
	printf("forkd_load: %d concurrent invokes (%d normal, %d each spin/hog/flood with a %d ms "
	       "limit, %d grow) in %.2f s\n",
	       RUNAWAY_STORM, RUNAWAY_COUNT(R_NORMAL), RUNAWAY_COUNT(R_SPIN),
	       runaway[R_SPIN].limit_ms, RUNAWAY_COUNT(R_GROW), wall / 1e9);
	print_lat("normal invokes, with runaways", ms[R_NORMAL], nms[R_NORMAL]);
	print_lat("spin (504)", ms[R_SPIN], nms[R_SPIN]);
	print_lat("hog (504)", ms[R_HOG], nms[R_HOG]);
	print_lat("flood (504)", ms[R_FLOOD], nms[R_FLOOD]);
	print_lat("grow (200, alloc failed)", ms[R_GROW], nms[R_GROW]);
	print_lat("GET /v1/ping during it", w.ping_ms, (size_t)w.npings);
	printf("  forkd (nice %d): %.2f s on a CPU, %.2f s runnable waiting for one\n",
	       getpriority(PRIO_PROCESS, (id_t)e.pid), (run1 - run0) / 1e9, (wait1 - wait0) / 1e9);
	printf("  peak: %d clone processes, %.1f MiB VmRSS in one clone (guest memory %d MiB), "
	       "%.1f MiB in one console.log\n",
	       w.max_kids, w.max_rss_kib / 1024.0, MEMORY_SMALL >> 20, w.max_console / 1048576.0);
	fflush(stdout);
	calls_free(calls, n);

	cr_assert_gt(w.npings, 0);
	cr_assert_eq(w.bad_pings, 0, "%d pings failed during the storm (last: %d)", w.bad_pings,
		     w.bad_status);
	/* A clone maps guest memory once and allocates little beside it. */
	cr_assert_leq(w.max_rss_kib, (MEMORY_SMALL >> 10) + 32 * 1024, "a clone reached %ld KiB",
		      w.max_rss_kib);
	cr_assert_eq(metric("forkd_invokes_total{result=\"ok\"}"), 2 * RUNAWAY_COUNT(R_NORMAL));
	cr_assert_eq(metric("forkd_invokes_total{result=\"error\"}"), RUNAWAY_COUNT(R_GROW));
	cr_assert_eq(metric("forkd_invokes_total{result=\"timeout\"}"),
		     RUNAWAY_COUNT(R_SPIN) + RUNAWAY_COUNT(R_HOG) + RUNAWAY_COUNT(R_FLOOD));
	cr_assert_eq(metric("forkd_invokes_total{result=\"failed\"}"), 0);
	json_t *j = req_expect("POST", "/v1/templates/t/invoke",
			       "{\"fn\":\"double\",\"args\":[21]}", T_MS, 200);
	cr_assert_eq(json_integer_value(json_object_get(j, "result")), 42);
	json_decref(j);
	expect_all_reaped();
}

/* ------------------------------------------------------------ idle clones */

/* A thousand idle clones at once on the process platform (each a clone
 * process and its stub): all answer an eval. Their private memory is
 * printed (forkbench density measures it; nothing asserts on it). */
Test(forkd_load, a_thousand_idle_process_platform_clones_answer, .timeout = 1200)
{
	if (!h_on_process())
		cr_skip_test("1000 idle clones: a process-platform test (runs in its pass)");
	const int n = 1000, batch = 50;
	template_boot(0, MEMORY);
	json_t *all = json_array();
	uint64_t t0 = time_mono_ns();
	for (int made = 0; made < n; made += batch) {
		json_t *r = req_expect("POST", "/v1/templates/t/clones", "{\"count\": 50}", BOOT_MS, 201);
		json_t *cl = json_object_get(r, "clones");
		cr_assert_eq(json_array_size(cl), (size_t)batch);
		json_array_extend(all, cl);
		json_decref(r);
	}
	double secs = (double)(time_mono_ns() - t0) / 1e9;
	h_sleep_ms(500); /* idle */
	long long priv = metric("forkd_clone_memory_private_bytes");
	cr_assert_eq(metric("forkd_clones_live"), n);
	int answered = 0;
	size_t i;
	json_t *c;
	json_array_foreach(all, i, c) {
		const char *p = json_string_value(json_object_get(c, "platform"));
		cr_assert(p && !strcmp(p, "process"), "clone %zu: platform %s", i, p ? p : "(none)");
		struct agent_client *ac = NULL;
		json_t *reply = NULL;
		const char *sock = json_string_value(json_object_get(c, "agent_socket"));
		int rc = agent_client_connect(sock, T_MS, &ac);
		cr_assert_eq(rc, 0, "clone %zu: cannot connect to %s: %s", i, sock, strerror(-rc));
		rc = agent_client_eval(ac, "6*7", T_MS, &reply);
		cr_assert_eq(rc, 0, "clone %zu: eval: %s", i, strerror(-rc));
		cr_assert_eq(json_integer_value(json_object_get(reply, "result")), 42,
			     "clone %zu answered wrongly", i);
		answered++;
		json_decref(reply);
		agent_client_close(ac);
	}
	cr_assert_eq(answered, n);
	printf("1000 idle process-platform clones: started in %.2f s, all answered; private memory "
	       "%.3f MiB per clone (clone process + stub, forkd_clone_memory_private_bytes)\n",
	       secs, priv / 1048576.0 / n);
	json_decref(all);
}
