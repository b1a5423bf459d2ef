/* tests/integration/test_fork_daemon.c - forkd with real guests
 * (docs/forkd-api.md): clones with their own identity and random streams,
 * isolation of clones, 200 concurrent invokes, a clone killed with SIGKILL,
 * a clone snapshot that becomes a template (fork trees), bad requests,
 * SIGTERM leaving no clone behind, invoke time limits, warm pools and
 * metrics, template deletion, clone pause and resume.
 *
 * Each test starts its own forkd (build/bin/forkd) in a fresh h_tmpdir()
 * with the store and run directory there, and a template booted once from
 * the agent with 256 MiB (the "boot" path). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/agent_client.h"
#include "common/http.h"
#include "tests/lib/harness.h"

#define T_MS 60000
#define HANDLERS                                                                               \
	"function double(x) { return 2 * x; }"                                                 \
	"function spin() { for (;;) {} }"                                                      \
	"var seeded = Math.random();"

static struct {
	char *dir, *sock;
	pid_t pid;
} e;

/* ------------------------------------------------------------ helpers */

/* One request: returns the status and the body as JSON (when it parses). */
static int req(const char *method, const char *path, const char *body, json_t **out)
{
	struct http_client_response r;
	int rc = http_client_request(e.sock, method, path, body ? "application/json" : NULL, body,
				     body ? strlen(body) : 0, T_MS, &r);
	if (rc < 0)
		return rc;
	if (out)
		*out = json_loads(r.body, JSON_DECODE_ANY, NULL);
	rc = r.status;
	http_client_response_free(&r);
	return rc;
}

static void forkd_start(const char *max_clones, const char *mem_reserve)
{
	char *store = h_join(e.dir, "store"), *run = h_join(e.dir, "run"), *bin = h_bin("forkd");

	free(e.sock);
	e.sock = h_join(e.dir, "forkd.sock");
	e.pid = fork();
	if (e.pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		char *log = h_join(e.dir, "forkd.log");
		FILE *f = freopen(log, "w", stderr);
		(void)f;
		execl(bin, "forkd", "--api-socket", e.sock, "--store", store, "--run-dir", run,
		      "--max-clones", max_clones, "--mem-reserve", mem_reserve, (char *)NULL);
		_exit(127);
	}
	cr_assert_gt(e.pid, 0);
	cr_assert(h_wait_path(e.sock, 10000), "forkd did not create its socket");
	json_t *j = NULL;
	cr_assert_eq(req("GET", "/v1/ping", NULL, &j), 200);
	json_decref(j);
	free(store);
	free(run);
	free(bin);
}

/* Registers template name by booting the agent with HANDLERS. */
static void template_boot(const char *name, int pool)
{
	char *agent = h_payload("agent");
	json_t *body = json_pack("{s:s,s:{s:{s:i},s:{s:s}},s:s,s:i}", "name", name, "boot", "memory",
				 "size", 256 << 20, "payload", "kernel", agent, "load", HANDLERS, "pool",
				 pool);
	char *txt = json_dumps(body, JSON_COMPACT);
	json_t *j = NULL;
	int st = req("POST", "/v1/templates", txt, &j);
	char *dump = j ? json_dumps(j, JSON_COMPACT) : strdup("(no body)");
	cr_assert_eq(st, 201, "template %s: %d %s", name, st, dump);
	cr_assert_str_eq(json_string_value(json_object_get(j, "name")), name);
	cr_assert_eq(strlen(json_string_value(json_object_get(j, "snapshot"))), 32);
	free(dump);
	json_decref(j);
	free(txt);
	json_decref(body);
	free(agent);
}

static void setup(void)
{
	h_asan_small_quarantine();
	e.dir = h_tmpdir();
	e.pid = -1;
	if (!h_can_boot())
		return;
	forkd_start("400", "256M");
}

static void teardown(void)
{
	if (e.pid > 0) {
		kill(e.pid, SIGTERM);
		waitpid(e.pid, NULL, 0);
	}
	h_rmtree(e.dir);
	free(e.dir);
	free(e.sock);
	memset(&e, 0, sizeof(e));
}

TestSuite(forkd, .init = setup, .fini = teardown, .timeout = 180);

/* Forks count clones of tpl; returns the clone array (caller decrefs). */
static json_t *fork_clones(const char *tpl, int count)
{
	char path[128], body[64];
	json_t *j = NULL;
	snprintf(path, sizeof(path), "/v1/templates/%s/clones", tpl);
	snprintf(body, sizeof(body), "{\"count\":%d}", count);
	int st = req("POST", path, body, &j);
	cr_assert_eq(st, 201, "fork %d of %s: %d", count, tpl, st);
	json_t *arr = json_incref(json_object_get(j, "clones"));
	json_decref(j);
	cr_assert_eq(json_array_size(arr), (size_t)count);
	return arr;
}

static const char *str(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* eval code in clone c; returns the reply (caller decrefs). */
static json_t *clone_eval(const json_t *c, const char *code)
{
	struct agent_client *ac = NULL;
	json_t *reply = NULL;
	cr_assert_eq(agent_client_connect(str(c, "agent_socket"), 10000, &ac), 0,
		     "clone %s: no agent", str(c, "id"));
	cr_assert_eq(agent_client_eval(ac, code, 10000, &reply), 0, "clone %s: eval", str(c, "id"));
	agent_client_close(ac);
	cr_assert(agent_client_reply_ok(reply, NULL, NULL), "clone %s: eval %s failed", str(c, "id"),
		  code);
	return reply;
}

static json_t *clone_get(const char *id)
{
	char path[128];
	json_t *j = NULL;
	snprintf(path, sizeof(path), "/v1/clones/%s", id);
	int st = req("GET", path, NULL, &j);
	if (st != 200) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* ------------------------------------------------------------ tests */

Test(forkd, fifty_clones_have_their_own_identity_and_random_stream)
{
	H_NEED_GUEST();
	template_boot("t", 0);
	json_t *arr = fork_clones("t", 50);
	double seen[50];
	size_t i;
	json_t *c;

	json_array_foreach(arr, i, c) {
		cr_assert_str_eq(str(c, "state"), "running");
		cr_assert_str_eq(str(c, "template"), "t");
		cr_assert_gt(json_integer_value(json_object_get(c, "pid")), 0);
		json_t *r = clone_eval(c, "[forkvm.identity().clone_id, Math.random(), seeded]");
		json_t *res = json_object_get(r, "result");
		cr_assert_str_eq(json_string_value(json_array_get(res, 0)), str(c, "id"),
				 "the guest sees its clone id");
		seen[i] = json_real_value(json_array_get(res, 1));
		for (size_t k = 0; k < i; k++)
			cr_assert(seen[k] != seen[i], "clones %zu and %zu share Math.random()", k, i);
		json_decref(r);
		/* The agent's info op reports the same id. */
		struct agent_client *ac = NULL;
		json_t *info = NULL;
		cr_assert_eq(agent_client_connect(str(c, "agent_socket"), 10000, &ac), 0);
		cr_assert_eq(agent_client_info(ac, 10000, &info), 0);
		cr_assert_str_eq(json_string_value(json_object_get(json_object_get(info, "result"), "clone_id")),
				 str(c, "id"));
		json_decref(info);
		agent_client_close(ac);
	}
	json_decref(arr);
	/* GET /v1/clones lists all 50. */
	json_t *list = NULL;
	cr_assert_eq(req("GET", "/v1/clones", NULL, &list), 200);
	cr_assert_eq(json_array_size(json_object_get(list, "clones")), 50);
	json_decref(list);
}

Test(forkd, a_global_set_in_one_clone_is_absent_in_others_and_in_fresh_ones)
{
	H_NEED_GUEST();
	template_boot("t", 1);
	json_t *arr = fork_clones("t", 3);
	json_decref(clone_eval(json_array_get(arr, 0), "globalThis.mark = 1"));
	json_t *r = clone_eval(json_array_get(arr, 0), "typeof mark");
	cr_assert_str_eq(json_string_value(json_object_get(r, "result")), "number");
	json_decref(r);
	for (size_t k = 1; k < 3; k++) {
		r = clone_eval(json_array_get(arr, k), "typeof mark");
		cr_assert_str_eq(json_string_value(json_object_get(r, "result")), "undefined");
		json_decref(r);
	}
	json_t *fresh = fork_clones("t", 1);
	r = clone_eval(json_array_get(fresh, 0), "typeof mark");
	cr_assert_str_eq(json_string_value(json_object_get(r, "result")), "undefined");
	json_decref(r);
	json_decref(fresh);
	json_decref(arr);
}

struct inv_arg {
	int i;
	int status;
	long long result;
	bool ok;
};

static void *invoke_thread(void *p)
{
	struct inv_arg *a = p;
	char body[128];
	json_t *j = NULL;
	/* a limit far above the default 10 s: 200 forks at once on a slow host
	 * (the KVM lane) take longer, and this test is about the answers */
	snprintf(body, sizeof(body), "{\"fn\":\"double\",\"args\":[%d],\"timeout_ms\":120000}", a->i);
	a->status = req("POST", "/v1/templates/t/invoke", body, &j);
	a->ok = json_is_true(json_object_get(j, "ok"));
	a->result = json_integer_value(json_object_get(j, "result"));
	json_decref(j);
	return NULL;
}

Test(forkd, two_hundred_concurrent_invokes_return_correct_results, .timeout = 300)
{
	H_NEED_GUEST();
	template_boot("t", 4);
	enum { N = 200 };
	static struct inv_arg a[N];
	static pthread_t th[N];
	for (int i = 0; i < N; i++) {
		a[i].i = i;
		cr_assert_eq(pthread_create(&th[i], NULL, invoke_thread, &a[i]), 0);
	}
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(a[i].status, 200, "invoke %d: HTTP %d", i, a[i].status);
		cr_assert(a[i].ok, "invoke %d: not ok", i);
		cr_assert_eq(a[i].result, 2LL * i, "invoke %d returned %lld", i, a[i].result);
	}
	/* Their clones are gone: nothing is listed, nothing is live. */
	h_sleep_ms(500);
	json_t *list = NULL;
	cr_assert_eq(req("GET", "/v1/clones", NULL, &list), 200);
	cr_assert_eq(json_array_size(json_object_get(list, "clones")), 0);
	json_decref(list);
}

Test(forkd, a_clone_killed_with_sigkill_is_noticed_and_disturbs_nothing)
{
	H_NEED_GUEST();
	template_boot("t", 0);
	json_t *arr = fork_clones("t", 3);
	json_t *victim = json_array_get(arr, 1);
	pid_t pid = (pid_t)json_integer_value(json_object_get(victim, "pid"));
	cr_assert_eq(kill(pid, SIGKILL), 0);
	json_t *c = NULL;
	for (int i = 0; i < 500; i++) {
		json_decref(c);
		c = clone_get(str(victim, "id"));
		cr_assert_not_null(c);
		if (!strcmp(str(c, "state"), "exited"))
			break;
		h_sleep_ms(10);
	}
	cr_assert_str_eq(str(c, "state"), "exited");
	json_t *ex = json_object_get(c, "exit");
	cr_assert_eq(json_integer_value(json_object_get(ex, "signal")), 9);
	cr_assert(strstr(json_string_value(json_object_get(ex, "reason")), "SIGKILL"));
	json_decref(c);
	json_t *r = clone_eval(json_array_get(arr, 0), "1+1");
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 2);
	json_decref(r);
	r = clone_eval(json_array_get(arr, 2), "2+2");
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 4);
	json_decref(r);
	cr_assert_eq(req("GET", "/v1/ping", NULL, NULL), 200);
	/* Still forks, and the dead clone no longer counts as live. */
	json_decref(fork_clones("t", 1));
	json_t *t = NULL;
	cr_assert_eq(req("GET", "/v1/templates/t", NULL, &t), 200);
	cr_assert_eq(json_integer_value(json_object_get(t, "clones")), 3);
	json_decref(t);
	/* DELETE of the exited clone forgets it. */
	char path[128];
	snprintf(path, sizeof(path), "/v1/clones/%s", str(victim, "id"));
	cr_assert_eq(req("DELETE", path, NULL, NULL), 204);
	cr_assert_eq(req("GET", path, NULL, NULL), 404);
	json_decref(arr);
}

Test(forkd, a_clone_snapshot_becomes_a_template_with_its_changes)
{
	H_NEED_GUEST();
	template_boot("t", 0);
	json_t *arr = fork_clones("t", 1);
	json_t *c = json_array_get(arr, 0);
	json_decref(clone_eval(c, "globalThis.v = 41"));
	char path[128];
	json_t *j = NULL;
	snprintf(path, sizeof(path), "/v1/clones/%s/snapshot", str(c, "id"));
	cr_assert_eq(req("POST", path, "{\"tag\":\"child\"}", &j), 201);
	cr_assert_eq(strlen(str(j, "id")), 32);
	cr_assert_str_eq(str(j, "tag"), "child");
	json_decref(j);
	/* The snapshotted clone keeps running. */
	json_t *r = clone_eval(c, "v");
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 41);
	json_decref(r);
	cr_assert_eq(req("POST", "/v1/templates", "{\"name\":\"t2\",\"snapshot\":\"child\"}", NULL), 201);
	json_t *kids = fork_clones("t2", 2);
	for (size_t k = 0; k < 2; k++) {
		r = clone_eval(json_array_get(kids, k), "v + 1");
		cr_assert_eq(json_integer_value(json_object_get(r, "result")), 42);
		json_decref(r);
	}
	/* The original template's clones do not have it. */
	json_t *plain = fork_clones("t", 1);
	r = clone_eval(json_array_get(plain, 0), "typeof v");
	cr_assert_str_eq(json_string_value(json_object_get(r, "result")), "undefined");
	json_decref(r);
	json_decref(plain);
	json_decref(kids);
	json_decref(arr);
}

Test(forkd, bad_requests_get_4xx_and_forkd_keeps_serving)
{
	H_NEED_GUEST();
	template_boot("t", 0);
	static const struct {
		const char *method, *path, *body;
		int status;
	} cases[] = {
		{ "POST", "/v1/templates/nope/clones", "{\"count\":1}", 404 },
		{ "POST", "/v1/templates/t/clones", "{\"count\":0}", 400 },
		{ "POST", "/v1/templates/t/clones", "{\"count\":100000}", 400 },
		{ "POST", "/v1/templates/t/clones", "{\"count\":-1}", 400 },
		{ "POST", "/v1/templates/t/clones", "{\"count\":\"3\"}", 400 },
		{ "POST", "/v1/templates/t/clones", "{\"count\":1", 400 },
		{ "POST", "/v1/templates/t/clones", "[1]", 400 },
		{ "POST", "/v1/templates/t/clones", "{\"count\":1,\"colour\":2}", 400 },
		{ "GET", "/v1/clones/000000000000", NULL, 404 },
		{ "DELETE", "/v1/clones/zzz", NULL, 404 },
		{ "PUT", "/v1/templates/t/clones", "{}", 405 },
		{ "GET", "/v1/nothing", NULL, 404 },
		{ "GET", "/api/v1/vm.info", NULL, 404 },
		{ "POST", "/v1/templates", "{\"name\":\"t\",\"snapshot\":\"forkd.t\"}", 409 },
		{ "POST", "/v1/templates", "{\"name\":\"bad name\",\"snapshot\":\"x\"}", 400 },
		{ "POST", "/v1/templates", "{\"name\":\"u\"}", 400 },
		{ "POST", "/v1/templates", "{\"name\":\"u\",\"snapshot\":\"no-such-tag\"}", 400 },
		{ "POST", "/v1/templates", "{\"name\":\"u\",\"boot\":{\"memory\":{\"size\":3}}}", 400 },
		{ "POST", "/v1/templates/t/invoke", "{\"args\":[1]}", 400 },
		{ "POST", "/v1/templates/t/invoke", "{\"fn\":\"double\",\"timeout_ms\":0}", 400 },
		{ "PUT", "/v1/templates/t/pool", "{\"size\":100000}", 400 },
		{ "POST", "/v1/clones/000000000000/pause", NULL, 404 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *j = NULL;
		int st = req(cases[i].method, cases[i].path, cases[i].body, &j);
		cr_assert_eq(st, cases[i].status, "%s %s %s: %d, expected %d", cases[i].method,
			     cases[i].path, cases[i].body ? cases[i].body : "", st, cases[i].status);
		cr_assert(json_is_string(json_object_get(j, "error")), "%s %s: no error message",
			  cases[i].method, cases[i].path);
		json_decref(j);
	}
	/* A function that throws is a 200 with ok:false; one that is missing too. */
	json_t *j = NULL;
	cr_assert_eq(req("POST", "/v1/templates/t/invoke", "{\"fn\":\"nope\"}", &j), 200);
	cr_assert(json_is_false(json_object_get(j, "ok")));
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "name")),
			 "ReferenceError");
	json_decref(j);
	json_t *arr = fork_clones("t", 2);
	json_decref(arr);
}

Test(forkd, sigterm_leaves_no_clone_behind)
{
	H_NEED_GUEST();
	template_boot("t", 2);
	json_t *arr = fork_clones("t", 5);
	pid_t pids[5];
	for (size_t k = 0; k < 5; k++)
		pids[k] = (pid_t)json_integer_value(json_object_get(json_array_get(arr, k), "pid"));
	json_decref(arr);
	h_sleep_ms(300); /* the pool refills too */
	cr_assert_eq(kill(e.pid, SIGTERM), 0);
	int st;
	cr_assert_eq(waitpid(e.pid, &st, 0), e.pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "forkd exit status %d", st);
	e.pid = -1;
	for (size_t k = 0; k < 5; k++)
		cr_assert(kill(pids[k], 0) < 0 && errno == ESRCH, "clone pid %d outlived forkd",
			  (int)pids[k]);
	/* Nor any pool shell, and forkd removed their directories. */
	char *clones = h_join(e.dir, "run/clones");
	DIR *d = opendir(clones);
	struct dirent *de;
	int entries = 0;
	cr_assert_not_null(d);
	while ((de = readdir(d)))
		entries += de->d_name[0] != '.';
	closedir(d);
	cr_assert_eq(entries, 0, "%d clone directories left", entries);
	free(clones);
}

Test(forkd, an_invoke_past_its_time_limit_gets_504_and_the_next_works)
{
	H_NEED_GUEST();
	template_boot("t", 1);
	json_t *j = NULL;
	cr_assert_eq(req("POST", "/v1/templates/t/invoke", "{\"fn\":\"spin\",\"timeout_ms\":500}", &j),
		     504);
	cr_assert(strstr(json_string_value(json_object_get(j, "error")), "500 ms"));
	json_decref(j);
	j = NULL;
	cr_assert_eq(req("POST", "/v1/templates/t/invoke", "{\"fn\":\"double\",\"args\":[21]}", &j), 200);
	cr_assert_eq(json_integer_value(json_object_get(j, "result")), 42);
	cr_assert(json_is_string(json_object_get(j, "clone")));
	json_decref(j);
	char *m = NULL;
	struct http_client_response r;
	cr_assert_eq(http_client_request(e.sock, "GET", "/v1/metrics", NULL, NULL, 0, T_MS, &r), 0);
	m = r.body;
	cr_assert(strstr(m, "forkd_invokes_total{result=\"timeout\"} 1"), "%s", m);
	cr_assert(strstr(m, "forkd_invokes_total{result=\"ok\"} 1"));
	http_client_response_free(&r);
}

Test(forkd, warm_pool_fills_and_serves_forks_metrics_parse)
{
	H_NEED_GUEST();
	template_boot("t", 2);
	json_t *t = NULL;
	int ready = 0;
	for (int i = 0; i < 1000 && ready < 2; i++) {
		json_decref(t);
		t = NULL;
		cr_assert_eq(req("GET", "/v1/templates/t", NULL, &t), 200);
		ready = (int)json_integer_value(json_object_get(json_object_get(t, "pool"), "ready"));
		if (ready < 2)
			h_sleep_ms(10);
	}
	json_decref(t);
	cr_assert_eq(ready, 2, "the pool did not fill");
	json_t *arr = fork_clones("t", 1);
	cr_assert(json_is_true(json_object_get(json_array_get(arr, 0), "from_pool")));
	cr_assert(json_integer_value(json_object_get(json_array_get(arr, 0), "fork_us")) > 0);
	json_decref(clone_eval(json_array_get(arr, 0), "1"));
	json_decref(arr);
	/* Resize. */
	json_t *j = NULL;
	cr_assert_eq(req("PUT", "/v1/templates/t/pool", "{\"size\":0}", &j), 200);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "pool"), "size")), 0);
	json_decref(j);
	struct http_client_response r;
	cr_assert_eq(http_client_request(e.sock, "GET", "/v1/metrics", NULL, NULL, 0, T_MS, &r), 0);
	cr_assert_eq(r.status, 200);
	cr_assert(strstr(r.content_type, "text/plain"));
	/* Prometheus text: every line a comment or "name{labels} value". */
	int samples = 0;
	for (char *save = NULL, *line = strtok_r(r.body, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#') {
			cr_assert(!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7), "%s", line);
			continue;
		}
		char name[128];
		double v;
		cr_assert(sscanf(line, "%127[a-zA-Z0-9_:{}=\",.+ ]", name) == 1, "%s", line);
		const char *sp = strrchr(line, ' ');
		cr_assert(sp && sscanf(sp + 1, "%lf", &v) == 1, "no value: %s", line);
		samples++;
	}
	cr_assert_gt(samples, 10);
	http_client_response_free(&r);
	cr_assert_eq(http_client_request(e.sock, "GET", "/v1/metrics", NULL, NULL, 0, T_MS, &r), 0);
	cr_assert(strstr(r.body, "forkd_clones_live 1\n"), "%s", r.body);
	cr_assert(strstr(r.body, "forkd_fork_latency_seconds_bucket{le=\"+Inf\"} 1\n"), "%s", r.body);
	cr_assert(strstr(r.body, "forkd_forks_by_source_total{source=\"pool\"} 1\n"), "%s", r.body);
	http_client_response_free(&r);
}

Test(forkd, template_delete_is_refused_with_live_clones_unless_forced)
{
	H_NEED_GUEST();
	template_boot("t", 1);
	json_t *arr = fork_clones("t", 2);
	cr_assert_eq(req("DELETE", "/v1/templates/t", NULL, NULL), 409);
	cr_assert_eq(req("DELETE", "/v1/templates/t?force=true", NULL, NULL), 204);
	cr_assert_eq(req("GET", "/v1/templates/t", NULL, NULL), 404);
	for (size_t k = 0; k < 2; k++) {
		const char *id = str(json_array_get(arr, k), "id");
		json_t *c = NULL;
		for (int i = 0; i < 500; i++) {
			json_decref(c);
			c = clone_get(id);
			if (c && !strcmp(str(c, "state"), "exited"))
				break;
			h_sleep_ms(10);
		}
		cr_assert_str_eq(str(c, "state"), "exited");
		json_decref(c);
	}
	json_decref(arr);
	/* The name is free again; the store snapshot is still there. */
	cr_assert_eq(req("POST", "/v1/templates", "{\"name\":\"t\",\"snapshot\":\"forkd.t\"}", NULL), 201);
	json_decref(fork_clones("t", 1));
}

Test(forkd, a_clone_pauses_and_resumes)
{
	H_NEED_GUEST();
	template_boot("t", 0);
	json_t *arr = fork_clones("t", 1);
	const char *id = str(json_array_get(arr, 0), "id");
	char path[128];
	snprintf(path, sizeof(path), "/v1/clones/%s/pause", id);
	cr_assert_eq(req("POST", path, NULL, NULL), 204);
	cr_assert_eq(req("POST", path, NULL, NULL), 409);
	json_t *c = clone_get(id);
	cr_assert_str_eq(str(c, "state"), "paused");
	json_decref(c);
	/* Paused: the agent does not answer. */
	struct agent_client *ac = NULL;
	json_t *reply = NULL;
	cr_assert_eq(agent_client_connect(str(json_array_get(arr, 0), "agent_socket"), 5000, &ac), 0);
	cr_assert_eq(agent_client_eval(ac, "1", 300, &reply), -ETIMEDOUT);
	agent_client_close(ac);
	snprintf(path, sizeof(path), "/v1/clones/%s/resume", id);
	cr_assert_eq(req("POST", path, NULL, NULL), 204);
	cr_assert_eq(req("POST", path, NULL, NULL), 409);
	json_t *r = clone_eval(json_array_get(arr, 0), "6*7");
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 42);
	json_decref(r);
	snprintf(path, sizeof(path), "/v1/clones/%s", id);
	cr_assert_eq(req("DELETE", path, NULL, NULL), 204);
	cr_assert_eq(req("GET", path, NULL, NULL), 404);
	json_decref(arr);
}

Test(forkd, forks_beyond_max_clones_or_short_memory_are_refused_whole)
{
	H_NEED_GUEST();
	template_boot("t", 0);
	kill(e.pid, SIGTERM);
	waitpid(e.pid, NULL, 0);
	forkd_start("3", "256M");
	cr_assert_eq(req("POST", "/v1/templates", "{\"name\":\"t\",\"snapshot\":\"forkd.t\"}", NULL), 201);
	json_t *arr = fork_clones("t", 2);
	json_t *j = NULL;
	cr_assert_eq(req("POST", "/v1/templates/t/clones", "{\"count\":2}", &j), 503);
	cr_assert(strstr(json_string_value(json_object_get(j, "error")), "--max-clones"));
	json_decref(j);
	/* Nothing half-made: still exactly 2 clones. */
	json_t *list = NULL;
	cr_assert_eq(req("GET", "/v1/clones", NULL, &list), 200);
	cr_assert_eq(json_array_size(json_object_get(list, "clones")), 2);
	json_decref(list);
	json_decref(fork_clones("t", 1));
	json_decref(arr);

	kill(e.pid, SIGTERM);
	waitpid(e.pid, NULL, 0);
	forkd_start("100", "1000T"); /* more than any host has available */
	cr_assert_eq(req("POST", "/v1/templates", "{\"name\":\"t\",\"snapshot\":\"forkd.t\"}", NULL), 201);
	j = NULL;
	cr_assert_eq(req("POST", "/v1/templates/t/clones", "{\"count\":1}", &j), 503);
	cr_assert(strstr(json_string_value(json_object_get(j, "error")), "memory"));
	json_decref(j);
	j = NULL;
	cr_assert_eq(req("POST", "/v1/templates/t/invoke", "{\"fn\":\"double\",\"args\":[1]}", &j), 503);
	json_decref(j);
	list = NULL;
	cr_assert_eq(req("GET", "/v1/clones", NULL, &list), 200);
	cr_assert_eq(json_array_size(json_object_get(list, "clones")), 0);
	json_decref(list);
}

Test(forkd, clones_die_with_a_forkd_killed_by_sigkill)
{
	H_NEED_GUEST();
	template_boot("t", 2);
	json_t *arr = fork_clones("t", 3);
	pid_t pids[3];
	for (size_t k = 0; k < 3; k++)
		pids[k] = (pid_t)json_integer_value(json_object_get(json_array_get(arr, k), "pid"));
	json_decref(arr);
	cr_assert_eq(kill(e.pid, SIGKILL), 0);
	waitpid(e.pid, NULL, 0);
	e.pid = -1;
	/* PR_SET_PDEATHSIG: the kernel kills them; they are reparented and reaped. */
	for (size_t k = 0; k < 3; k++) {
		int i = 0;
		while (kill(pids[k], 0) == 0 && i++ < 500)
			h_sleep_ms(10);
		cr_assert(kill(pids[k], 0) < 0 && errno == ESRCH, "clone %d outlived forkd", (int)pids[k]);
	}
}

Test(forkd, fork_kill_cycles_do_not_grow_fds_threads_or_memory, .timeout = 300)
{
	H_NEED_GUEST();
	template_boot("t", 2);
	int fds0 = 0, threads0 = 0;
	long rss0 = 0;
	for (int i = 0; i < 400; i++) {
		json_t *arr = fork_clones("t", 1);
		char path[128];
		snprintf(path, sizeof(path), "/v1/clones/%s", str(json_array_get(arr, 0), "id"));
		cr_assert_eq(req("DELETE", path, NULL, NULL), 204);
		json_decref(arr);
		if (i % 20 == 0)
			cr_assert_eq(req("POST", "/v1/templates/t/invoke", "{\"fn\":\"double\",\"args\":[2]}", NULL), 200);
		if (i == 50) { /* after warm-up: pools, allocator arenas */
			fds0 = h_count_fds(e.pid);
			threads0 = (int)h_status_field(e.pid, "Threads:");
			rss0 = h_status_field(e.pid, "VmRSS:");
		}
	}
	h_sleep_ms(200);
	int fds = h_count_fds(e.pid), threads = (int)h_status_field(e.pid, "Threads:");
	long rss = h_status_field(e.pid, "VmRSS:");
	cr_assert_eq(threads, 1, "forkd must stay single-threaded");
	cr_assert_eq(threads0, 1);
	cr_assert_leq(fds, fds0 + 2, "fds grew from %d to %d", fds0, fds);
	cr_assert_leq(rss, rss0 + 1024, "RSS grew from %ld to %ld KiB", rss0, rss);
}
