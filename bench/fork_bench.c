/* bench/fork_bench.c - forkbench fork: the fork daemon's figures on one
 * template (default 256 MiB): fork latency cold and from the warm pool
 * (as forkd measures it: request received -> clone vCPUs resumed, and as
 * the client sees it), fork -> first agent answer, invoke round trip,
 * concurrent forks, and the density of idle clones (private memory, PSS,
 * whether every clone still answers). It starts its own forkd and store in
 * a temporary directory. Figures are printed, never asserted. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/agent_client.h"
#include "common/http.h"
#include "common/util.h"

#define HANDLERS                                                                              \
	"var table = []; for (var i = 0; i < 20000; i++) table.push(i * i);"                   \
	"function double(x) { return 2 * x; }"                                                 \
	"function sq(i) { return table[i]; }"

struct fb {
	const struct opts *o;
	char dir[64], sock[128];
	pid_t forkd;
};

/* One request; returns the HTTP status (or -errno) and the JSON body. */
static int call(struct fb *b, const char *method, const char *path, const char *body, json_t **out)
{
	struct http_client_response r;
	int rc = http_client_request(b->sock, method, path, body ? "application/json" : NULL, body,
				     body ? strlen(body) : 0, 120000, &r);
	if (rc < 0)
		return rc;
	if (out)
		*out = json_loads(r.body, 0, NULL);
	rc = r.status;
	if (rc >= 300)
		fprintf(stderr, "forkbench: %s %s: %d %s\n", method, path, rc, r.body);
	http_client_response_free(&r);
	return rc;
}

static int start_forkd(struct fb *b)
{
	char bin[4200], store[128], run[128];

	snprintf(bin, sizeof(bin), "%.4000s", b->o->forkvm);
	char *slash = strrchr(bin, '/');
	snprintf(slash ? slash + 1 : bin, 16, "forkd");
	snprintf(store, sizeof(store), "%s/store", b->dir);
	snprintf(run, sizeof(run), "%s/run", b->dir);
	snprintf(b->sock, sizeof(b->sock), "%s/forkd.sock", b->dir);
	b->forkd = fork();
	if (b->forkd == 0) {
		execl(bin, "forkd", "--api-socket", b->sock, "--store", store, "--run-dir", run,
		      "--max-clones", "100000", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		json_t *j = NULL;
		if (call(b, "GET", "/v1/ping", NULL, &j) == 200) {
			json_decref(j);
			return 0;
		}
		usleep(10000);
	}
	fprintf(stderr, "forkbench: forkd (%s) did not start\n", bin);
	return -1;
}

static int add_template(struct fb *b)
{
	uint64_t mem;
	json_t *j, *body;

	if (parse_size(b->o->memory, &mem) < 0)
		return -1;
	body = json_pack("{s:s,s:{s:{s:I},s:{s:s},s:{s:i}},s:s}", "name", "bench", "boot", "memory",
			 "size", (json_int_t)mem, "payload", "kernel", b->o->agent, "cpus",
			 "boot_vcpus", atoi(b->o->cpus), "load", HANDLERS);
	char *txt = json_dumps(body, JSON_COMPACT);
	int st = call(b, "POST", "/v1/templates", txt, &j);
	free(txt);
	json_decref(body);
	json_decref(j);
	return st == 201 ? 0 : -1;
}

static int set_pool(struct fb *b, int size)
{
	char body[64];
	snprintf(body, sizeof(body), "{\"size\":%d}", size);
	return call(b, "PUT", "/v1/templates/bench/pool", body, NULL) == 200 ? 0 : -1;
}

static int wait_pool(struct fb *b, int want)
{
	for (int i = 0; i < 3000; i++) {
		json_t *j = NULL;
		if (call(b, "GET", "/v1/templates/bench", NULL, &j) == 200) {
			json_int_t ready = json_integer_value(json_object_get(json_object_get(j, "pool"), "ready"));
			json_decref(j);
			if (ready >= want)
				return 0;
		}
		usleep(2000);
	}
	fprintf(stderr, "forkbench: the warm pool did not fill\n");
	return -1;
}

static void kill_clone(struct fb *b, const char *id)
{
	char path[128];
	snprintf(path, sizeof(path), "/v1/clones/%s", id);
	call(b, "DELETE", path, NULL, NULL);
}

/* Forks count clones; fills fork_ns (forkd's figure) and returns the
 * reply's clone array (caller decrefs) or NULL. */
static json_t *fork_n(struct fb *b, int count, uint64_t *rtt_ns)
{
	char body[64];
	json_t *j = NULL;
	snprintf(body, sizeof(body), "{\"count\":%d}", count);
	uint64_t t0 = time_mono_ns();
	int st = call(b, "POST", "/v1/templates/bench/clones", body, &j);
	if (rtt_ns)
		*rtt_ns = time_mono_ns() - t0;
	if (st != 201) {
		json_decref(j);
		return NULL;
	}
	json_t *arr = json_incref(json_object_get(j, "clones"));
	json_decref(j);
	return arr;
}

static uint64_t fork_us_of(const json_t *c)
{
	return (uint64_t)json_integer_value(json_object_get(c, "fork_us")) * 1000;
}

/* Fork latency, n samples: server-side and client round trip; first
 * answer: request sent -> eval answered by the new clone. */
static int bench_forks(struct fb *b, bool pool, int n)
{
	uint64_t *srv = calloc((size_t)n, 8), *rtt = calloc((size_t)n, 8), *ans = calloc((size_t)n, 8);
	int got = 0;

	for (int i = 0; i < n + b->o->warmup; i++) {
		if (pool && wait_pool(b, 1) < 0)
			break;
		uint64_t t0 = time_mono_ns(), r;
		json_t *arr = fork_n(b, 1, &r);
		if (!arr)
			break;
		json_t *c = json_array_get(arr, 0);
		struct agent_client *ac = NULL;
		json_t *reply = NULL;
		int rc = agent_client_connect(json_string_value(json_object_get(c, "agent_socket")), 5000, &ac);
		if (rc == 0)
			rc = agent_client_eval(ac, "1+1", 5000, &reply);
		uint64_t t1 = time_mono_ns();
		json_decref(reply);
		agent_client_close(ac);
		if (i >= b->o->warmup && rc == 0) {
			srv[got] = fork_us_of(c);
			rtt[got] = r;
			ans[got] = t1 - t0;
			got++;
		}
		kill_clone(b, json_string_value(json_object_get(c, "id")));
		json_decref(arr);
	}
	if (got) {
		report(pool ? "fork, warm pool (forkd)" : "fork, cold (forkd)", srv, got, b->o);
		report(pool ? "fork, warm pool (client)" : "fork, cold (client)", rtt, got, b->o);
		report(pool ? "fork -> first answer, pool" : "fork -> first answer, cold", ans, got, b->o);
	}
	free(srv);
	free(rtt);
	free(ans);
	return got == n ? 0 : -1;
}

static int bench_invoke(struct fb *b, int n)
{
	uint64_t *ns = calloc((size_t)n, 8);
	int got = 0;

	for (int i = 0; i < n + b->o->warmup; i++) {
		char body[128];
		json_t *j = NULL;
		snprintf(body, sizeof(body), "{\"fn\":\"sq\",\"args\":[%d]}", i % 20000);
		uint64_t t0 = time_mono_ns();
		int st = call(b, "POST", "/v1/templates/bench/invoke", body, &j);
		uint64_t t1 = time_mono_ns();
		bool ok = st == 200 && json_integer_value(json_object_get(j, "result")) ==
					       (json_int_t)(i % 20000) * (i % 20000);
		json_decref(j);
		if (!ok) {
			fprintf(stderr, "forkbench: invoke gave a wrong answer\n");
			break;
		}
		if (i >= b->o->warmup)
			ns[got++] = t1 - t0;
	}
	if (got)
		report("invoke round trip (pool)", ns, got, b->o);
	free(ns);
	return got == n ? 0 : -1;
}

static int bench_fanout(struct fb *b, int k, bool pool)
{
	uint64_t rtt, *ns = calloc((size_t)k, 8);
	char what[64];

	if (pool && (set_pool(b, k) < 0 || wait_pool(b, k) < 0)) {
		free(ns);
		return -1;
	}
	json_t *arr = fork_n(b, k, &rtt);
	if (pool)
		set_pool(b, 0);

	if (!arr) {
		free(ns);
		return -1;
	}
	for (int i = 0; i < k; i++)
		ns[i] = fork_us_of(json_array_get(arr, (size_t)i));
	snprintf(what, sizeof(what), "fanout %d, %s, per clone", k, pool ? "pool" : "cold");
	report(what, ns, k, b->o);
	snprintf(what, sizeof(what), "fanout %d, %s, all running", k, pool ? "pool" : "cold");
	figure(b->o, what, rtt / 1e6, "ms");
	for (int i = 0; i < k; i++)
		kill_clone(b, json_string_value(json_object_get(json_array_get(arr, (size_t)i), "id")));
	json_decref(arr);
	free(ns);
	return 0;
}

static long long meminfo_kb(const char *key)
{
	char *txt = NULL, line[256];
	long long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");
	(void)txt;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			sscanf(line + strlen(key), ": %lld", &v);
	if (f)
		fclose(f);
	return v;
}

static void smaps(pid_t pid, long long *pss, long long *priv)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	FILE *f = fopen(path, "r");
	long long kb;
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Pss: %lld", &kb) == 1)
			*pss += kb;
		else if (sscanf(line, "Private_Clean: %lld", &kb) == 1 ||
			 sscanf(line, "Private_Dirty: %lld", &kb) == 1)
			*priv += kb;
	}
	if (f)
		fclose(f);
}

static int bench_density(struct fb *b, int n)
{
	long long avail0 = meminfo_kb("MemAvailable"), pss = 0, priv = 0;
	json_t *all = json_array();
	int made = 0, answered = 0;
	uint64_t t0 = time_mono_ns();

	while (made < n) {
		int k = n - made > 50 ? 50 : n - made;
		json_t *arr = fork_n(b, k, NULL);
		if (!arr)
			break;
		json_array_extend(all, arr);
		json_decref(arr);
		made += k;
		if (isatty(2))
			fprintf(stderr, "\rdensity: %d/%d clones", made, n);
	}
	if (isatty(2))
		fprintf(stderr, "\n");
	double secs = (time_mono_ns() - t0) / 1e9;
	sleep(1); /* idle */
	size_t i;
	json_t *c;
	json_array_foreach(all, i, c) {
		smaps((pid_t)json_integer_value(json_object_get(c, "pid")), &pss, &priv);
		struct agent_client *ac = NULL;
		json_t *reply = NULL;
		if (agent_client_connect(json_string_value(json_object_get(c, "agent_socket")), 5000, &ac) == 0 &&
		    agent_client_eval(ac, "1+1", 10000, &reply) == 0 &&
		    json_integer_value(json_object_get(reply, "result")) == 2)
			answered++;
		json_decref(reply);
		agent_client_close(ac);
	}
	long long avail1 = meminfo_kb("MemAvailable");
	figure(b->o, "density: idle clones started", made, "clones");
	figure(b->o, "density: time to start them", secs, "s");
	if (made) {
		figure(b->o, "density: private memory per clone", priv / 1024.0 / made, "MiB");
		figure(b->o, "density: PSS per clone", pss / 1024.0 / made, "MiB");
		figure(b->o, "density: host memory used per clone", (avail0 - avail1) / 1024.0 / made, "MiB");
	}
	figure(b->o, "density: clones that answered eval", answered, "clones");
	json_array_foreach(all, i, c)
		kill_clone(b, json_string_value(json_object_get(c, "id")));
	json_decref(all);
	return made == n && answered == n ? 0 : -1;
}

int cmd_fork(const struct opts *o)
{
	struct fb b = { .o = o, .forkd = -1 };
	int rc = -1;

	snprintf(b.dir, sizeof(b.dir), "/tmp/forkbench-XXXXXX");
	if (!mkdtemp(b.dir)) {
		perror("forkbench: mkdtemp");
		return 1;
	}
	if (start_forkd(&b) < 0 || add_template(&b) < 0)
		goto out;
	printf("# forkd, template %s of %s RAM, %s vCPU(s); %d samples after %d warm-ups\n", "bench",
	       o->memory, o->cpus, o->samples, o->warmup);
	rc = bench_forks(&b, false, o->samples);
	if (rc == 0 && (rc = set_pool(&b, 4)) == 0)
		rc = bench_forks(&b, true, o->samples);
	if (rc == 0)
		rc = bench_invoke(&b, o->samples);
	if (rc == 0 && (rc = set_pool(&b, 0)) == 0)
		rc = bench_fanout(&b, o->fanout, false);
	if (rc == 0)
		rc = bench_fanout(&b, o->fanout, true);
	if (rc == 0 && o->density > 0)
		rc = bench_density(&b, o->density);
out:
	if (b.forkd > 0) {
		kill(b.forkd, SIGTERM);
		waitpid(b.forkd, NULL, 0);
	}
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", b.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "forkbench: cannot remove %s\n", b.dir);
	return rc == 0 ? 0 : 1;
}
