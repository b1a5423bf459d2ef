/* bench/fork_bench.c - the fork daemon's figures, each subcommand on its
 * own forkd and store in a temporary directory and one template (default
 * 256 MiB, the agent with a small warm-up):
 *   fork          fork latency, cold and from the warm pool: to the clone's
 *                 resume (forkd's figure), to its first entry into guest code, and as the
 *                 client sees it; where a cold fork's time goes
 *   e2e           fork -> first agent answer; invoke round trip
 *   fanout K      K concurrent forks, cold and from a pool of K
 *   density       idle clones until a memory budget or a count is reached
 *   boot-vs-fork  a template whose warm-up takes real work: cold boot plus
 *                 warm-up versus a fork of its snapshot
 * Figures are printed, never asserted. */
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
	bool linux_guest;    /* the template is the Linux test guest, its agent on vsock */
	uint64_t template_ns; /* POST /v1/templates: boot to agent ready, load, snapshot */
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
		char jail[16];
		snprintf(jail, sizeof(jail), "--jail=%s", b->o->jail);
		execl(bin, "forkd", "--api-socket", b->sock, "--store", store, "--run-dir", run,
		      "--max-clones", "100000", jail, (char *)NULL);
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

static const char *template_script = HANDLERS;

static int add_template(struct fb *b)
{
	uint64_t mem;
	json_t *j, *body;

	if (parse_size(b->o->memory, &mem) < 0)
		return -1;
	if (b->linux_guest)
		body = json_pack("{s:s,s:{s:{s:I},s:{s:s,s:s,s:s},s:{s:i},s:{s:i}},s:s}", "name",
				 "bench", "boot", "memory", "size", (json_int_t)mem, "payload", "kernel",
				 b->o->linux_kernel, "initramfs", b->o->linux_initramfs, "cmdline",
				 "console=ttyS0 panic=-1 quiet forkvm.test=agent", "cpus", "boot_vcpus",
				 atoi(b->o->cpus), "vsock", "cid", 3, "load", template_script);
	else
		body = json_pack("{s:s,s:{s:{s:I},s:{s:s},s:{s:i}},s:s}", "name", "bench", "boot",
				 "memory", "size", (json_int_t)mem, "payload", "kernel", b->o->agent,
				 "cpus", "boot_vcpus", atoi(b->o->cpus), "load", template_script);
	char *txt = json_dumps(body, JSON_COMPACT);
	uint64_t t0 = time_mono_ns();
	int st = call(b, "POST", "/v1/templates", txt, &j);
	b->template_ns = time_mono_ns() - t0;
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

/* GET the clone until forkd has its breakdown (sent just after it runs). */
static json_t *breakdown_of(struct fb *b, const char *id)
{
	char path[128];
	snprintf(path, sizeof(path), "/v1/clones/%s", id);
	for (int i = 0; i < 200; i++) {
		json_t *j = NULL;
		if (call(b, "GET", path, NULL, &j) != 200) {
			json_decref(j);
			return NULL;
		}
		json_t *bd = json_object_get(j, "breakdown_us");
		if (bd && json_object_get(bd, "first_run")) {
			json_incref(bd);
			json_decref(j);
			return bd;
		}
		json_decref(j);
		usleep(1000);
	}
	return NULL;
}

static const char *const cold_steps[] = { "request", "process", "jail", "vm_create", "memory_map",
					  "state_replay", "vcpu_threads", NULL };

/* Fork latency, n samples. fork: forkd's figure (to resume), to the first
 * guest entry, the client's round trip, and the breakdown; e2e: request sent ->
 * eval answered by the new clone. */
static int bench_forks(struct fb *b, bool pool, int n, bool e2e)
{
	uint64_t *srv = calloc((size_t)n, 8), *rtt = calloc((size_t)n, 8), *ans = calloc((size_t)n, 8),
		 *first = calloc((size_t)n, 8), *steps[8] = { 0 };
	int got = 0, nfirst = 0;
	const char *mode = pool ? "pool" : "cold";
	char what[96];

	for (int k = 0; cold_steps[k]; k++)
		steps[k] = calloc((size_t)n, 8);
	for (int i = 0; i < n + b->o->warmup; i++) {
		progress("%s forks: %d/%d", mode, i + 1, n + b->o->warmup);
		if (pool && wait_pool(b, 1) < 0)
			break;
		uint64_t t0 = time_mono_ns(), r;
		json_t *arr = fork_n(b, 1, &r);
		if (!arr)
			break;
		json_t *c = json_array_get(arr, 0);
		const char *id = json_string_value(json_object_get(c, "id"));
		int rc = 0;
		uint64_t t1 = 0;
		if (e2e) {
			struct agent_client *ac = NULL;
			json_t *reply = NULL;
			rc = agent_client_connect(json_string_value(json_object_get(c, "agent_socket")), 5000, &ac);
			if (rc == 0)
				rc = agent_client_eval(ac, "1+1", 5000, &reply);
			t1 = time_mono_ns();
			json_decref(reply);
			agent_client_close(ac);
		}
		json_t *bd = e2e ? NULL : breakdown_of(b, id);
		if (i >= b->o->warmup && rc == 0) {
			srv[got] = fork_us_of(c);
			rtt[got] = r;
			ans[got] = t1 - t0;
			if (bd) {
				first[nfirst++] = (uint64_t)json_integer_value(json_object_get(bd, "first_run")) * 1000;
				for (int k = 0; !pool && cold_steps[k]; k++)
					steps[k][got] = (uint64_t)json_integer_value(json_object_get(bd, cold_steps[k])) * 1000;
			}
			got++;
		}
		json_decref(bd);
		kill_clone(b, id);
		json_decref(arr);
	}
	progress("%s", "");
	if (got && e2e) {
		snprintf(what, sizeof(what), "fork -> first agent answer, %s", mode);
		report(what, ans, got, b->o);
	} else if (got) {
		snprintf(what, sizeof(what), "fork, %s: to resume (forkd)", mode);
		report(what, srv, got, b->o);
		snprintf(what, sizeof(what), "fork, %s: to first guest entry", mode);
		report(what, first, nfirst, b->o);
		snprintf(what, sizeof(what), "fork, %s: client round trip", mode);
		report(what, rtt, got, b->o);
		for (int k = 0; !pool && nfirst == got && cold_steps[k]; k++) {
			snprintf(what, sizeof(what), "  cold step: %s", cold_steps[k]);
			report(what, steps[k], got, b->o);
		}
	}
	for (int k = 0; cold_steps[k]; k++)
		free(steps[k]);
	free(srv);
	free(rtt);
	free(ans);
	free(first);
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
		report("invoke round trip (warm pool)", ns, got, b->o);
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
	char line[256];
	long long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");
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

/* A clone's memory: its process and its children (on the process
 * platform, the stub that holds the guest's pages). */
static void clone_smaps(pid_t pid, long long *pss, long long *priv)
{
	char path[64], kids[512] = "";
	smaps(pid, pss, priv);
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
	FILE *f = fopen(path, "r");
	if (f) {
		if (!fgets(kids, sizeof(kids), f))
			kids[0] = '\0';
		fclose(f);
	}
	for (char *p = kids, *end; *p; p = end) {
		long k = strtol(p, &end, 10);
		if (end == p)
			break;
		smaps((pid_t)k, pss, priv);
	}
}

static int bench_density(struct fb *b, int n)
{
	long long avail0 = meminfo_kb("MemAvailable"), pss = 0, priv = 0;
	json_t *all = json_array();
	int made = 0, answered = 0;
	uint64_t t0 = time_mono_ns();

	bool budget_hit = false;
	while (made < n && !budget_hit) {
		int k = n - made > 50 ? 50 : n - made;
		json_t *arr = fork_n(b, k, NULL);
		if (!arr)
			break;
		json_array_extend(all, arr);
		json_decref(arr);
		made += k;
		long long used = (avail0 - meminfo_kb("MemAvailable")) * 1024LL;
		budget_hit = b->o->budget && used >= (long long)b->o->budget;
		progress("density: %d clones, %lld MiB of host memory used", made, used >> 20);
	}
	progress("%s", "");
	note(b->o, "density: stopped at %d clones (%s)", made,
	     budget_hit ? "memory budget reached" : "count reached");
	double secs = (time_mono_ns() - t0) / 1e9;
	sleep(1); /* idle */
	size_t i;
	json_t *c;
	json_array_foreach(all, i, c) {
		clone_smaps((pid_t)json_integer_value(json_object_get(c, "pid")), &pss, &priv);
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

/* A fresh forkd and template (the Linux test guest when linux_guest); run
 * fn; stop and clean up. */
static int with_forkd_of(const struct opts *o, bool linux_guest, int (*fn)(struct fb *b))
{
	struct fb b = { .o = o, .forkd = -1, .linux_guest = linux_guest };
	int rc = -1;

	snprintf(b.dir, sizeof(b.dir), "/tmp/forkbench-XXXXXX");
	if (!mkdtemp(b.dir)) {
		perror("forkbench: mkdtemp");
		return 1;
	}
	if (start_forkd(&b) == 0 && add_template(&b) == 0) {
		note(o, "clone jail %s (forkd --jail)", o->jail);
		note(o, "forkd, template of %s RAM, %s vCPU(s); %d samples after %d warm-ups (excluded)",
		     o->memory, o->cpus, o->samples, o->warmup);
		rc = fn(&b);
	}
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

static int with_forkd(const struct opts *o, int (*fn)(struct fb *b))
{
	return with_forkd_of(o, false, fn);
}

static int run_fork(struct fb *b)
{
	int rc = bench_forks(b, false, b->o->samples, false);
	if (rc == 0 && (rc = set_pool(b, 4)) == 0) {
		note(b->o, "warm pool of 4 shells (paused, prepared ahead): a warm-pool figure");
		rc = bench_forks(b, true, b->o->samples, false);
	}
	return rc;
}

static int run_e2e(struct fb *b)
{
	int rc = bench_forks(b, false, b->o->samples, true);
	if (rc == 0 && (rc = set_pool(b, 4)) == 0) {
		note(b->o, "warm pool of 4 shells: warm-pool figures below");
		rc = bench_forks(b, true, b->o->samples, true);
	}
	if (rc == 0)
		rc = bench_invoke(b, b->o->samples);
	return rc;
}

static int run_fanout(struct fb *b)
{
	int rc = bench_fanout(b, b->o->fanout, false);
	if (rc == 0)
		rc = bench_fanout(b, b->o->fanout, true);
	return rc;
}

static int run_density(struct fb *b)
{
	return bench_density(b, b->o->density);
}

/* The Linux guest through forkd: its template (boot to agent ready over
 * vsock, the warm-up script, snapshot into the store), fork to first
 * answer cold and from a warm pool, and idle clones' memory. */
static int run_linux(struct fb *b)
{
	const struct opts *o = b->o;
	uint64_t t = b->template_ns;

	note(o, "Linux test guest (build/linux: Debian's kernel, busybox initramfs); the agent "
		"runs as a process of its init, on vsock");
	report("linux: template: boot to agent ready, load, snapshot (forkd)", &t, 1, o);
	note(o, "design target on a KVM host, 512 MiB Linux guest: fork to first answer <= 20 ms "
		"cold, <= 5 ms from a pool");
	int rc = bench_forks(b, false, o->samples, true);
	if (rc == 0 && (rc = set_pool(b, 2)) == 0) {
		note(o, "warm pool of 2 shells (paused, prepared ahead)");
		rc = bench_forks(b, true, o->samples, true);
	}
	if (rc == 0 && (rc = set_pool(b, 0)) == 0)
		rc = bench_density(b, o->density);
	return rc;
}

int cmd_linux(const struct opts *o)
{
	if (o->platform && strcmp(o->platform, "kvm")) {
		fprintf(stderr, "forkbench: linux: Linux guests run on KVM only (the platform here is "
				"%s); in the KVM lane: make bench-lane\n",
			o->platform);
		return 2;
	}
	if (access(o->linux_kernel, R_OK) < 0 || access(o->linux_initramfs, R_OK) < 0) {
		fprintf(stderr, "forkbench: linux: the test guest is missing (%s, %s): make linux-guest\n",
			o->linux_kernel, o->linux_initramfs);
		return 2;
	}
	note(o, "one forkvm first: the Linux guest booted, snapshotted to a directory, restored");
	int rc = linux_vm_bench(o);
	if (rc != 0)
		return rc;
	note(o, "then through forkd: a template in the store, forks, idle clones");
	return with_forkd_of(o, true, run_linux);
}

int cmd_fork(const struct opts *o)
{
	return with_forkd(o, run_fork);
}

int cmd_e2e(const struct opts *o)
{
	return with_forkd(o, run_e2e);
}

int cmd_fanout(const struct opts *o)
{
	return with_forkd(o, run_fanout);
}

int cmd_density(const struct opts *o)
{
	return with_forkd(o, run_density);
}

/* ------------------------------------------------------------ boot-vs-fork */

/* A warm-up that takes real work: an index of 200,000 objects. */
#define HEAVY                                                                                  \
	"var idx = {}; for (var i = 0; i < 200000; i++) idx['k' + i] = { n: i, sq: i * i };"   \
	"function lookup(k) { return idx['k' + k].sq; }"

/* Cold: forkvm started, agent ready, HEAVY loaded, lookup answered. */
static int cold_boot_warm(struct fb *b, int i, uint64_t *ns)
{
	char sock[128], mem[64], cpus[64], agent_opt[160];
	struct agent_client *ac = NULL;
	json_t *reply = NULL, *args = json_pack("[i]", 777);
	int rc;

	snprintf(sock, sizeof(sock), "%s/cold%d.agent", b->dir, i);
	snprintf(agent_opt, sizeof(agent_opt), "socket=%s", sock);
	snprintf(mem, sizeof(mem), "size=%s", b->o->memory);
	snprintf(cpus, sizeof(cpus), "boot=%s", b->o->cpus);
	uint64_t t0 = time_mono_ns();
	pid_t pid = fork();
	if (pid == 0) {
		execl(b->o->forkvm, "forkvm", "--kernel", b->o->agent, "--agent", agent_opt, "--memory", mem,
		      "--cpus", cpus, "--serial", "off", (char *)NULL);
		_exit(127);
	}
	rc = agent_client_connect(sock, 30000, &ac);
	if (rc == 0)
		rc = agent_client_wait_ready(ac, 30000, NULL);
	if (rc == 0)
		rc = agent_client_load(ac, HEAVY, "heavy.js", 120000, &reply);
	json_decref(reply);
	reply = NULL;
	if (rc == 0)
		rc = agent_client_call(ac, "lookup", args, 30000, &reply);
	*ns = time_mono_ns() - t0;
	if (rc == 0 && json_integer_value(json_object_get(reply, "result")) != 777LL * 777)
		rc = -EPROTO;
	json_decref(reply);
	json_decref(args);
	agent_client_close(ac);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(sock);
	return rc;
}

/* Forked: request sent -> lookup answered by the new clone. */
static int fork_warm(struct fb *b, uint64_t *ns)
{
	json_t *reply = NULL, *args = json_pack("[i]", 777);
	struct agent_client *ac = NULL;
	uint64_t t0 = time_mono_ns();
	json_t *arr = fork_n(b, 1, NULL);
	int rc = arr ? 0 : -EIO;

	if (rc == 0)
		rc = agent_client_connect(json_string_value(json_object_get(json_array_get(arr, 0), "agent_socket")),
					  5000, &ac);
	if (rc == 0)
		rc = agent_client_call(ac, "lookup", args, 30000, &reply);
	*ns = time_mono_ns() - t0;
	if (rc == 0 && json_integer_value(json_object_get(reply, "result")) != 777LL * 777)
		rc = -EPROTO;
	json_decref(reply);
	json_decref(args);
	agent_client_close(ac);
	if (arr)
		kill_clone(b, json_string_value(json_object_get(json_array_get(arr, 0), "id")));
	json_decref(arr);
	return rc;
}

static int run_boot_vs_fork(struct fb *b)
{
	int n = b->o->samples;
	uint64_t *cold = calloc((size_t)n, 8), *forked = calloc((size_t)n, 8), *pooled = calloc((size_t)n, 8);
	int rc = 0;

	note(b->o, "warm-up: an index of 200,000 objects (HEAVY in bench/fork_bench.c); the answer "
		   "is lookup(777), which needs it");
	for (int i = 0; rc == 0 && i < n; i++) {
		progress("cold boot + warm-up %d/%d", i + 1, n);
		rc = cold_boot_warm(b, i, &cold[i]);
	}
	for (int i = 0; rc == 0 && i < n + b->o->warmup; i++) {
		uint64_t t = 0;
		progress("fork %d/%d", i + 1, n + b->o->warmup);
		rc = fork_warm(b, &t);
		if (i >= b->o->warmup)
			forked[i - b->o->warmup] = t;
	}
	if (rc == 0 && (rc = set_pool(b, 2)) == 0) {
		for (int i = 0; rc == 0 && i < n + b->o->warmup; i++) {
			uint64_t t = 0;
			progress("fork from the pool %d/%d", i + 1, n + b->o->warmup);
			if ((rc = wait_pool(b, 1)) == 0)
				rc = fork_warm(b, &t);
			if (i >= b->o->warmup)
				pooled[i - b->o->warmup] = t;
		}
	}
	progress("%s", "");
	if (rc == 0) {
		report("cold boot + warm-up -> answer", cold, n, b->o);
		report("fork (cold) -> answer", forked, n, b->o);
		report("fork (warm pool) -> answer", pooled, n, b->o);
		figure(b->o, "speed-up of a cold fork (p50 ratio)", (double)cold[n / 2] / (double)forked[n / 2], "x");
		figure(b->o, "speed-up of a warm-pool fork (p50 ratio)", (double)cold[n / 2] / (double)pooled[n / 2],
		       "x");
	} else {
		fprintf(stderr, "forkbench: boot-vs-fork failed: %s\n", strerror(rc < 0 ? -rc : EIO));
	}
	free(cold);
	free(forked);
	free(pooled);
	return rc;
}

int cmd_boot_vs_fork(const struct opts *o)
{
	template_script = HEAVY;
	return with_forkd(o, run_boot_vs_fork);
}
