/* tests/integration/test_forkd.c - the fork daemon's REST API
 * (docs/forkd-api.md) with real guests: 50 clones with their own identity
 * and random stream, isolation of clones, 200 concurrent invokes, a clone
 * killed with SIGKILL, a clone snapshot that becomes a template (fork
 * trees), bad requests that leave forkd serving, SIGTERM leaving no clone
 * behind, invoke time limits, warm pools and the metrics.
 *
 * The tests share one forkd (h_forkd_shared_begin/end: started by the
 * Criterion runner before the first test, stopped after the last) and one
 * template "t" booted once from the agent with 256 MiB and the handlers in
 * HANDLERS, made by the first test that needs it (under a lock: tests run
 * in parallel processes). Each test makes its own clones and its own other
 * templates, under names no other test uses, and deletes its clones (the
 * fixture deletes what a failed test left). Only the SIGTERM test runs a
 * forkd of its own. forkd's stderr is quoted when a request fails at the
 * transport level or with a 5xx. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/agent_client.h"
#include "common/http.h"
#include "tests/lib/harness.h"

#define T_MS 60000     /* one REST request */
#define BOOT_MS 180000 /* POST /v1/templates that boots a guest */
#define AG_MS 30000    /* one agent request */
#define MEMORY 268435456
#define HANDLERS                                                                                   \
	"function double(x) { return 2 * x; }\n"                                                   \
	"function spin() { for (;;) {} }\n"
#define MAX_CLONES 64
#define INVOKES 200

/* ------------------------------------------------------------ fixture */

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
	(void)set;
	h_forkd_shared_begin(NULL);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
	(void)stats;
	h_forkd_shared_end();
}

struct clone {
	char id[13];
	pid_t pid;
	char *agent_socket;
	bool from_pool;
	struct agent_client *ag;
	bool deleted;
};

static struct {
	char *dir;	    /* forkd's directory */
	char *sock;	    /* its API socket */
	struct h_forkd own; /* the SIGTERM test's forkd */
	struct clone clones[MAX_CLONES];
	int nclones;
} e;

/* The end of forkd's stderr (malloc'd), for failure messages. */
static char *forkd_log(void)
{
	char *p = h_join(e.dir, "forkd.err"), *log = h_read_file(p);
	free(p);
	if (!log)
		return strdup("(no forkd.err)");
	size_t l = strlen(log);
	char *tail = h_fmt("...%s", l > 3000 ? log + l - 3000 : log);
	free(log);
	return tail;
}

static void use_shared(void)
{
	const char *why = NULL, *dir = h_forkd_shared_dir(&why);
	cr_assert_not_null(dir, "no shared forkd: %s", why);
	e.dir = strdup(dir);
	e.sock = h_join(dir, "forkd.sock");
}

static void teardown(void)
{
	for (int i = 0; i < e.nclones; i++) {
		struct clone *c = &e.clones[i];
		agent_client_close(c->ag);
		if (!c->deleted && e.sock) {
			char *path = h_fmt("/v1/clones/%s", c->id);
			(void)h_http(e.sock, "DELETE", path, NULL, T_MS, NULL);
			free(path);
		}
		free(c->agent_socket);
	}
	h_forkd_stop(&e.own, 20000);
	free(e.dir);
	free(e.sock);
	memset(&e, 0, sizeof(e));
}

TestSuite(forkd, .fini = teardown, .timeout = 240);

/* ------------------------------------------------------------ REST */

/* One request to forkd; returns the status, *out the body parsed (NULL
 * when empty or not JSON) and *raw the body text, each when not NULL. */
static int req(const char *method, const char *path, const char *json, int timeout_ms, json_t **out,
	       char **raw)
{
	char *body = NULL;
	int st = h_http(e.sock, method, path, json, timeout_ms, &body);
	if (out)
		*out = st >= 0 && *body ? json_loads(body, JSON_DECODE_ANY, NULL) : NULL;
	if (raw)
		*raw = body;
	else
		free(body);
	return st;
}

/* A request that must answer `want`; returns the parsed body (NULL for an
 * empty one). */
static json_t *req_expect(const char *method, const char *path, const char *json, int timeout_ms,
			  int want)
{
	json_t *j = NULL;
	char *raw = NULL;
	int st = req(method, path, json, timeout_ms, &j, &raw);
	if (st != want) {
		char *log = st < 0 || st >= 500 ? forkd_log() : strdup("");
		cr_assert_fail("%s %s %.500s: %d %s (expected %d)%s%s", method, path,
			       json ? json : "", st, raw, want, *log ? "\nforkd stderr: " : "",
			       log);
	}
	if (*raw)
		cr_assert_not_null(j, "%s %s: %d with a body that is not JSON: %s", method, path,
				   st, raw);
	free(raw);
	return j;
}

/* An error answer: {"error": "a sentence"} with status want. */
static void expect_error(const char *method, const char *path, const char *json, int want,
			 const char *must_contain)
{
	json_t *j = NULL;
	char *raw = NULL;
	int st = req(method, path, json, T_MS, &j, &raw);
	if (st != want) {
		char *log = st < 0 || st >= 500 ? forkd_log() : strdup("");
		cr_assert_fail("%s %s %.300s: %d %s (expected %d)%s%s", method, path,
			       json ? json : "(no body)", st, raw, want,
			       *log ? "\nforkd stderr: " : "", log);
	}
	const char *msg = json_string_value(json_object_get(j, "error"));
	cr_assert(msg && *msg, "%s %s: %d without {\"error\": \"...\"}: %s", method, path, st, raw);
	if (must_contain)
		cr_assert_not_null(strstr(msg, must_contain),
				   "%s %s: the error \"%s\" does not mention \"%s\"", method, path,
				   msg, must_contain);
	json_decref(j);
	free(raw);
	/* and forkd still serves */
	char *pong = NULL;
	st = req("GET", "/v1/ping", NULL, T_MS, NULL, &pong);
	if (st != 200) {
		char *log = forkd_log();
		cr_assert_fail("after %s %s (%d): GET /v1/ping gives %d %s\nforkd stderr: %s",
			       method, path, want, st, pong, log);
	}
	free(pong);
}

static long long jint(const json_t *o, const char *key, const char *what)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_integer(v)) {
		char *s = json_dumps(o, JSON_COMPACT);
		cr_assert_fail("%s: \"%s\" is not an integer in %s", what, key, s);
	}
	return json_integer_value(v);
}

static const char *jstr(const json_t *o, const char *key, const char *what)
{
	const char *s = json_string_value(json_object_get(o, key));
	if (!s) {
		char *d = json_dumps(o, JSON_COMPACT);
		cr_assert_fail("%s: \"%s\" is not a string in %s", what, key, d);
	}
	return s;
}

static bool is_hex(const char *s, size_t len)
{
	return s && strlen(s) == len && strspn(s, "0123456789abcdefABCDEF") == len;
}

/* ------------------------------------------------------------ templates */

/* The body of POST /v1/templates that boots the agent (malloc'd); load
 * NULL: none, pool < 0: none. */
static char *boot_body(const char *name, const char *load, int pool)
{
	char *rel = h_payload("agent"), kernel[PATH_MAX];
	cr_assert_not_null(realpath(rel, kernel), "the agent %s: %s (run make)", rel,
			   strerror(errno));
	json_t *j = json_pack("{s:s, s:{s:{s:I}, s:{s:s}}}", "name", name, "boot", "memory", "size",
			      (json_int_t)MEMORY, "payload", "kernel", kernel);
	cr_assert_not_null(j);
	if (load)
		json_object_set_new(j, "load", json_string(load));
	if (pool >= 0)
		json_object_set_new(j, "pool", json_integer(pool));
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	free(rel);
	return s;
}

static void check_template(const json_t *t, const char *name, int pool_size)
{
	char *what = h_fmt("template %s", name);
	cr_assert_str_eq(jstr(t, "name", what), name);
	const char *snap = jstr(t, "snapshot", what);
	cr_assert(is_hex(snap, 32), "%s: snapshot \"%s\" is not 32 hex digits", what, snap);
	cr_assert_eq(jint(t, "memory_size", what), MEMORY);
	cr_assert_eq(jint(t, "vcpus", what), 1);
	const json_t *pool = json_object_get(t, "pool");
	cr_assert(json_is_object(pool), "%s: no pool object", what);
	if (pool_size >= 0)
		cr_assert_eq(jint(pool, "size", what), pool_size);
	long long ready = jint(pool, "ready", what);
	cr_assert(ready >= 0 && ready <= jint(pool, "size", what), "%s: pool.ready %lld", what,
		  ready);
	cr_assert_geq(jint(t, "clones", what), 0);
	cr_assert_geq(jint(t, "forks", what), 0);
	free(what);
}

/* POST /v1/templates booting the agent; 201 with the template. */
static json_t *template_boot(const char *name, const char *load, int pool)
{
	char *body = boot_body(name, load, pool);
	json_t *t = req_expect("POST", "/v1/templates", body, BOOT_MS, 201);
	check_template(t, name, pool);
	free(body);
	return t;
}

/* The shared template "t" (HANDLERS), made once per forkd. */
static void need_t(void)
{
	char *lock = h_join(e.dir, "template-t.lock");
	int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0, "%s: %s", lock, strerror(errno));
	while (flock(fd, LOCK_EX) < 0)
		cr_assert_eq(errno, EINTR);
	json_t *t = NULL;
	char *raw = NULL;
	int st = req("GET", "/v1/templates/t", NULL, T_MS, &t, &raw);
	if (st == 404) {
		json_decref(template_boot("t", HANDLERS, -1));
	} else {
		cr_assert_eq(st, 200, "GET /v1/templates/t: %d %s", st, raw);
		check_template(t, "t", -1);
	}
	json_decref(t);
	free(raw);
	flock(fd, LOCK_UN);
	close(fd);
	free(lock);
}

static json_t *template_get(const char *name)
{
	char *path = h_fmt("/v1/templates/%s", name);
	json_t *t = req_expect("GET", path, NULL, T_MS, 200);
	free(path);
	return t;
}

/* Polls GET /v1/templates/NAME until pool.ready is want (up to 90 s). */
static void wait_pool_ready(const char *name, long long want)
{
	long long ready = -1;
	for (int waited = 0; waited < 90000; waited += 50) {
		json_t *t = template_get(name);
		ready = jint(json_object_get(t, "pool"), "ready", name);
		json_decref(t);
		if (ready == want)
			return;
		h_sleep_ms(50);
	}
	cr_assert_fail("template %s: pool.ready is %lld after 90 s, expected %lld", name, ready,
		       want);
}

/* ------------------------------------------------------------ clones */

static void check_clone(const json_t *c, const char *tmpl)
{
	const char *id = jstr(c, "id", "clone");
	cr_assert(is_hex(id, 12), "clone id \"%s\" is not 12 hex digits", id);
	cr_assert_str_eq(jstr(c, "template", id), tmpl, "clone %s", id);
	cr_assert_gt(jint(c, "pid", id), 0, "clone %s", id);
	cr_assert_str_eq(jstr(c, "state", id), "running", "clone %s", id);
	cr_assert(*jstr(c, "agent_socket", id), "clone %s", id);
	cr_assert(*jstr(c, "console_log", id), "clone %s", id);
	cr_assert(json_is_boolean(json_object_get(c, "from_pool")), "clone %s: from_pool", id);
	cr_assert_geq(jint(c, "fork_us", id), 0, "clone %s", id);
	cr_assert_gt(jint(c, "created_unix_ms", id), 0, "clone %s", id);
}

/* POST /v1/templates/TMPL/clones {"count": n}: 201 with n running clones,
 * registered for the fixture. Returns the first. */
static struct clone *fork_n(const char *tmpl, int n)
{
	char *path = h_fmt("/v1/templates/%s/clones", tmpl), *body = h_fmt("{\"count\": %d}", n);
	json_t *j = req_expect("POST", path, body, T_MS * 3, 201);
	const json_t *arr = json_object_get(j, "clones");
	cr_assert(json_is_array(arr), "POST %s: no clones array", path);
	cr_assert_eq(json_array_size(arr), (size_t)n, "POST %s %s: %zu clones", path, body,
		     json_array_size(arr));
	cr_assert_leq(e.nclones + n, MAX_CLONES);
	struct clone *first = &e.clones[e.nclones];
	for (int i = 0; i < n; i++) {
		const json_t *o = json_array_get(arr, (size_t)i);
		check_clone(o, tmpl);
		struct clone *c = &e.clones[e.nclones++];
		memset(c, 0, sizeof(*c));
		snprintf(c->id, sizeof(c->id), "%s", json_string_value(json_object_get(o, "id")));
		c->pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
		c->agent_socket = strdup(json_string_value(json_object_get(o, "agent_socket")));
		c->from_pool = json_is_true(json_object_get(o, "from_pool"));
	}
	json_decref(j);
	free(path);
	free(body);
	return first;
}

static json_t *clone_get(const struct clone *c, int want)
{
	char *path = h_fmt("/v1/clones/%s", c->id);
	json_t *j = req_expect("GET", path, NULL, T_MS, want);
	free(path);
	return j;
}

static void clone_delete(struct clone *c)
{
	char *path = h_fmt("/v1/clones/%s", c->id);
	agent_client_close(c->ag);
	c->ag = NULL;
	json_decref(req_expect("DELETE", path, NULL, T_MS, 204));
	c->deleted = true;
	free(path);
}

static struct agent_client *agent(struct clone *c)
{
	if (!c->ag) {
		int rc = agent_client_connect(c->agent_socket, AG_MS, &c->ag);
		cr_assert_eq(rc, 0, "clone %s: cannot connect to %s: %s", c->id, c->agent_socket,
			     strerror(-rc));
		rc = agent_client_ping(c->ag, AG_MS, NULL);
		cr_assert_eq(rc, 0, "clone %s: the agent does not answer a ping: %s", c->id,
			     strerror(-rc));
	}
	return c->ag;
}

/* eval in the clone: the result as compact JSON, or "undefined" (malloc'd). */
static char *js(struct clone *c, const char *code)
{
	json_t *r = NULL;
	const char *name = NULL, *msg = NULL;
	int rc = agent_client_eval(agent(c), code, AG_MS, &r);
	cr_assert_eq(rc, 0, "clone %s: eval `%s`: %s", c->id, code, strerror(-rc));
	cr_assert(agent_client_reply_ok(r, &name, &msg), "clone %s: eval `%s` threw %s: %s", c->id,
		  code, name, msg);
	const json_t *res = json_object_get(r, "result");
	char *s = res ? json_dumps(res, JSON_ENCODE_ANY | JSON_COMPACT) : strdup("undefined");
	json_decref(r);
	return s;
}

static void js_expect(struct clone *c, const char *code, const char *want)
{
	char *got = js(c, code);
	cr_assert_str_eq(got, want, "clone %s: `%s` is %s, expected %s", c->id, code, got, want);
	free(got);
}

static double js_random(struct clone *c)
{
	char *s = js(c, "Math.random()");
	char *end;
	double d = strtod(s, &end);
	cr_assert(*s && !*end && d >= 0 && d < 1, "clone %s: Math.random() gave %s", c->id, s);
	free(s);
	return d;
}

/* The clone id the guest sees (agent info.clone_id), malloc'd. */
static char *guest_clone_id(struct clone *c)
{
	json_t *r = NULL;
	int rc = agent_client_info(agent(c), AG_MS, &r);
	cr_assert_eq(rc, 0, "clone %s: info: %s", c->id, strerror(-rc));
	cr_assert(agent_client_reply_ok(r, NULL, NULL), "clone %s: info failed", c->id);
	const char *id =
	    json_string_value(json_object_get(json_object_get(r, "result"), "clone_id"));
	char *dump = json_dumps(r, JSON_COMPACT);
	cr_assert_not_null(id, "clone %s: info without a clone_id: %s", c->id, dump);
	char *s = strdup(id);
	free(dump);
	json_decref(r);
	return s;
}

static void expect_guest_clone_id(struct clone *c)
{
	char *id = guest_clone_id(c);
	cr_assert_str_eq(id, c->id, "clone %s: the guest's info.clone_id is \"%s\"", c->id, id);
	free(id);
}

static bool pid_gone(pid_t pid, int grace_ms)
{
	for (int waited = 0;; waited += 20) {
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return true;
		if (waited >= grace_ms)
			return false;
		h_sleep_ms(20);
	}
}

/* ------------------------------------------------------------ invoke */

/* POST /v1/templates/TMPL/invoke with body; returns the status and the
 * parsed answer in *out. */
static int invoke(const char *tmpl, const char *body, json_t **out, char **raw)
{
	char *path = h_fmt("/v1/templates/%s/invoke", tmpl);
	int st = req("POST", path, body, T_MS * 3, out, raw);
	free(path);
	return st;
}

static void invoke_expect(const char *tmpl, const char *body, const char *want_result)
{
	json_t *j = NULL;
	char *raw = NULL;
	int st = invoke(tmpl, body, &j, &raw);
	cr_assert_eq(st, 200, "invoke %s %s: %d %s", tmpl, body, st, raw);
	cr_assert(json_is_true(json_object_get(j, "ok")), "invoke %s %s: %s", tmpl, body, raw);
	char *res = json_dumps(json_object_get(j, "result"), JSON_ENCODE_ANY | JSON_COMPACT);
	cr_assert_not_null(res, "invoke %s %s: no result: %s", tmpl, body, raw);
	cr_assert_str_eq(res, want_result, "invoke %s %s: %s", tmpl, body, raw);
	cr_assert(is_hex(json_string_value(json_object_get(j, "clone")), 12),
		  "invoke %s: clone in %s", tmpl, raw);
	cr_assert_geq(jint(j, "duration_us", "invoke"), 0);
	free(res);
	free(raw);
	json_decref(j);
}

/* ------------------------------------------------------------ metrics */

struct sample {
	char *name;
	char *labels; /* "k=\"v\",..." as written, "" without labels */
	double value;
};

struct metrics {
	struct sample *s;
	int n;
	char *types; /* "\nNAME TYPE\n..." from the # TYPE lines */
};

static bool metric_name_char(char c, bool first)
{
	return isalpha((unsigned char)c) || c == '_' || c == ':' ||
	       (!first && isdigit((unsigned char)c));
}

/* Parses Prometheus text format 0.0.4; every line must be a comment, a
 * HELP or TYPE line or a sample. */
static void metrics_parse(const char *text, struct metrics *m)
{
	memset(m, 0, sizeof(*m));
	m->types = strdup("\n");
	int lineno = 0;
	for (const char *line = text; *line;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char *l = strndup(line, len);
		lineno++;
		line += len + (nl ? 1 : 0);
		if (!*l) {
			free(l);
			continue;
		}
		if (!strncmp(l, "# TYPE ", 7)) {
			char name[256], type[32];
			cr_assert_eq(sscanf(l + 7, "%255s %31s", name, type), 2,
				     "metrics line %d: %s", lineno, l);
			cr_assert(!strcmp(type, "counter") || !strcmp(type, "gauge") ||
				      !strcmp(type, "histogram") || !strcmp(type, "summary") ||
				      !strcmp(type, "untyped"),
				  "metrics line %d: type %s", lineno, type);
			char *t = h_fmt("%s%s %s\n", m->types, name, type);
			free(m->types);
			m->types = t;
		} else if (l[0] != '#') {
			const char *p = l;
			cr_assert(metric_name_char(*p, true), "metrics line %d: not a sample: %s",
				  lineno, l);
			while (metric_name_char(*p, false))
				p++;
			char *name = strndup(l, (size_t)(p - l)), *labels = strdup("");
			if (*p == '{') {
				const char *start = ++p;
				bool quoted = false;
				for (; *p && (quoted || *p != '}'); p++) {
					if (quoted && *p == '\\' && p[1])
						p++;
					else if (*p == '"')
						quoted = !quoted;
				}
				cr_assert_eq(*p, '}', "metrics line %d: unterminated labels: %s",
					     lineno, l);
				free(labels);
				labels = strndup(start, (size_t)(p - start));
				p++;
			}
			cr_assert_eq(*p, ' ', "metrics line %d: no value: %s", lineno, l);
			char *end;
			double v = strtod(p + 1, &end);
			cr_assert(end != p + 1 && (*end == '\0' || *end == ' '),
				  "metrics line %d: bad value: %s", lineno, l);
			if (*end == ' ') { /* a timestamp */
				char *tend;
				strtoll(end + 1, &tend, 10);
				cr_assert(tend != end + 1 && !*tend,
					  "metrics line %d: bad timestamp: %s", lineno, l);
			}
			m->s = realloc(m->s, (size_t)(m->n + 1) * sizeof(*m->s));
			m->s[m->n++] = (struct sample){name, labels, v};
		}
		free(l);
	}
}

static void metrics_free(struct metrics *m)
{
	for (int i = 0; i < m->n; i++) {
		free(m->s[i].name);
		free(m->s[i].labels);
	}
	free(m->s);
	free(m->types);
}

static bool has_label(const char *labels, const char *label)
{
	size_t l = strlen(label);
	for (const char *p = labels; (p = strstr(p, label)); p += l)
		if ((p == labels || p[-1] == ',') && (p[l] == '\0' || p[l] == ','))
			return true;
	return false;
}

/* The value of the sample name with label (k="v", or NULL for any); NAN if
 * absent. */
static double metric(const struct metrics *m, const char *name, const char *label)
{
	for (int i = 0; i < m->n; i++)
		if (!strcmp(m->s[i].name, name) && (!label || has_label(m->s[i].labels, label)))
			return m->s[i].value;
	return NAN;
}

static void expect_type(const struct metrics *m, const char *name, const char *type)
{
	char *want = h_fmt("\n%s %s\n", name, type);
	cr_assert_not_null(strstr(m->types, want), "metrics: no \"# TYPE %s %s\"", name, type);
	free(want);
}

/* GET /v1/metrics, parsed. */
static void metrics_get(struct metrics *m, char **text)
{
	struct http_client_response r;
	int rc = http_client_request(e.sock, "GET", "/v1/metrics", NULL, NULL, 0, T_MS, &r);
	cr_assert_eq(rc, 0, "GET /v1/metrics: %s", strerror(-rc));
	cr_assert_eq(r.status, 200, "GET /v1/metrics: %d %s", r.status, r.body);
	cr_assert(r.content_type && !strncmp(r.content_type, "text/plain", 10),
		  "GET /v1/metrics: Content-Type %s", r.content_type ? r.content_type : "(none)");
	metrics_parse(r.body, m);
	if (text)
		*text = strdup(r.body);
	http_client_response_free(&r);
}

/* ============================================================ tests */

Test(forkd, ping_and_the_template_booted_once)
{
	H_NEED_GUEST();
	use_shared();
	json_t *p = req_expect("GET", "/v1/ping", NULL, T_MS, 200);
	cr_assert(*jstr(p, "version", "ping"));
	pid_t pid = (pid_t)jint(p, "pid", "ping");
	cr_assert(pid > 0 && kill(pid, 0) == 0, "ping: pid %d is not a live process", pid);
	char *store = h_join(e.dir, "store"), *run = h_join(e.dir, "run");
	cr_assert_str_eq(jstr(p, "store", "ping"), store);
	cr_assert_str_eq(jstr(p, "run_dir", "ping"), run);
	cr_assert_str_eq(jstr(p, "platform", "ping"), h_platform());
	json_decref(p);

	need_t();
	json_t *t = template_get("t");
	check_template(t, "t", 0);
	char *snap = strdup(json_string_value(json_object_get(t, "snapshot")));
	json_decref(t);

	json_t *all = req_expect("GET", "/v1/templates", NULL, T_MS, 200);
	const json_t *arr = json_object_get(all, "templates"), *it;
	size_t i;
	bool found = false;
	cr_assert(json_is_array(arr), "GET /v1/templates: no templates array");
	json_array_foreach(arr, i, it)
	{
		const char *name = json_string_value(json_object_get(it, "name"));
		found |= name && !strcmp(name, "t");
	}
	cr_assert(found, "GET /v1/templates does not list t");
	json_decref(all);

	/* forkctl names the platform of templates (and the metrics do). */
	char *fbin = h_bin("forkctl"), *fopt = NULL, *lout = NULL, *lerr = NULL;
	cr_assert(asprintf(&fopt, "--forkd=%s", e.sock) > 0);
	const char *largv[] = { fbin, fopt, "template", "ls", NULL };
	int lst = h_run(e.dir, largv, T_MS, &lout, &lerr);
	cr_assert_eq(lst, 0, "forkctl template ls: %d %s", lst, lerr);
	cr_assert(strstr(lout, "PLATFORM") && strstr(lout, h_platform()),
		  "forkctl template ls does not name the platform:\n%s", lout);
	free(fbin), free(fopt), free(lout), free(lerr);

	/* The snapshot is in forkd's store, tagged forkd.t. */
	char *bin = h_bin("forkctl"), *out = NULL, *err = NULL;
	const char *argv[] = {bin, "--store", store, "store", "show", "forkd.t", NULL};
	int st = h_run(e.dir, argv, T_MS, &out, &err);
	cr_assert_eq(st, 0, "forkctl store show forkd.t: %d %s", st, err);
	json_t *show = json_loads(out, 0, NULL);
	cr_assert_str_eq(json_string_value(json_object_get(show, "id")), snap,
			 "store show forkd.t: %s", out);
	json_decref(show);
	free(out);
	free(err);
	free(bin);
	free(snap);
	free(store);
	free(run);
}

Test(forkd, fifty_clones_each_with_its_own_id_and_random_stream)
{
	H_NEED_GUEST();
	use_shared();
	need_t();
	enum { N = 50 };
	struct clone *c = fork_n("t", N);
	double rnd[N];

	for (int i = 0; i < N; i++) {
		cr_assert_not(c[i].from_pool, "clone %s of t (no pool) says from_pool", c[i].id);
		for (int k = 0; k < i; k++) {
			cr_assert_str_neq(c[i].id, c[k].id, "two clones with id %s", c[i].id);
			cr_assert_neq(c[i].pid, c[k].pid, "clones %s and %s with pid %d", c[i].id,
				      c[k].id, c[i].pid);
		}
	}
	for (int i = 0; i < N; i++) {
		expect_guest_clone_id(&c[i]);
		char *want = h_fmt("\"%s\"", c[i].id);
		js_expect(&c[i], "forkvm.identity().clone_id", want);
		free(want);
		rnd[i] = js_random(&c[i]);
		for (int k = 0; k < i; k++)
			cr_assert(rnd[i] != rnd[k],
				  "clones %s and %s both drew %.17g from Math.random()", c[k].id,
				  c[i].id, rnd[i]);
	}

	/* All listed, running. */
	json_t *list = req_expect("GET", "/v1/clones?template=t", NULL, T_MS, 200);
	const json_t *arr = json_object_get(list, "clones"), *it;
	cr_assert(json_is_array(arr));
	for (int i = 0; i < N; i++) {
		size_t k;
		bool found = false;
		json_array_foreach(arr, k, it)
		{
			cr_assert_str_eq(
			    json_string_value(json_object_get(it, "template")), "t",
			    "GET /v1/clones?template=t lists a clone of another template");
			const char *id = json_string_value(json_object_get(it, "id"));
			if (id && !strcmp(id, c[i].id)) {
				found = true;
				cr_assert_str_eq(json_string_value(json_object_get(it, "state")),
						 "running");
			}
		}
		cr_assert(found, "GET /v1/clones?template=t does not list %s", c[i].id);
	}
	json_decref(list);

	/* DELETE kills, reaps and removes the clone's directory. */
	for (int i = 0; i < N; i++) {
		char *dir = strdup(c[i].agent_socket);
		*strrchr(dir, '/') = '\0';
		clone_delete(&c[i]);
		cr_assert(pid_gone(c[i].pid, 0),
			  "clone %s: pid %d still exists after DELETE answered 204", c[i].id,
			  c[i].pid);
		cr_assert_neq(access(dir, F_OK), 0, "clone %s: %s still exists after DELETE",
			      c[i].id, dir);
		json_decref(clone_get(&c[i], 404));
		free(dir);
	}
}

Test(forkd, a_global_set_in_one_clone_is_absent_in_the_others)
{
	H_NEED_GUEST();
	use_shared();
	need_t();
	struct clone *c = fork_n("t", 3);
	js_expect(&c[0], "globalThis.mark = 1", "1");
	js_expect(&c[0], "typeof mark", "\"number\"");
	js_expect(&c[1], "typeof mark", "\"undefined\"");
	js_expect(&c[2], "typeof mark", "\"undefined\"");
	struct clone *fresh = fork_n("t", 1);
	js_expect(fresh, "typeof mark", "\"undefined\"");
	js_expect(&c[0], "mark", "1");
	for (int i = 0; i < 3; i++)
		clone_delete(&c[i]);
	clone_delete(fresh);
}

struct inv {
	const char *sock;
	pthread_barrier_t *go;
	int i;
	int status;
	char *raw;
};

static void *invoke_thread(void *arg)
{
	struct inv *v = arg;
	/* a limit far above the default 10 s: 200 forks at once on a slow host
	 * (the KVM lane) take longer, and this test is about the answers */
	char *body = h_fmt("{\"fn\": \"double\", \"args\": [%d], \"timeout_ms\": 120000}", v->i);
	pthread_barrier_wait(v->go);
	v->status = h_http(v->sock, "POST", "/v1/templates/t/invoke", body, 180000, &v->raw);
	free(body);
	return NULL;
}

Test(forkd, two_hundred_concurrent_invokes)
{
	H_NEED_GUEST();
	use_shared();
	need_t();
	static struct inv v[INVOKES];
	pthread_t th[INVOKES];
	pthread_barrier_t go;
	pthread_attr_t attr;

	cr_assert_eq(pthread_barrier_init(&go, NULL, INVOKES), 0);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 512 * 1024);
	for (int i = 0; i < INVOKES; i++) {
		v[i] = (struct inv){.sock = e.sock, .go = &go, .i = i};
		cr_assert_eq(pthread_create(&th[i], &attr, invoke_thread, &v[i]), 0);
	}
	for (int i = 0; i < INVOKES; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&go);
	pthread_attr_destroy(&attr);

	char *ids[INVOKES];
	int failed = 0, first = -1;
	for (int i = 0; i < INVOKES; i++)
		if (v[i].status != 200 && failed++ == 0)
			first = i;
	if (failed) {
		char *log = forkd_log();
		cr_assert_fail(
		    "%d of %d invokes failed; the first, double(%d): %d %s\nforkd stderr: %s",
		    failed, INVOKES, first, v[first].status, v[first].raw, log);
	}
	for (int i = 0; i < INVOKES; i++) {
		json_t *j = json_loads(v[i].raw, 0, NULL);
		cr_assert_not_null(j, "invoke double(%d): %s", i, v[i].raw);
		cr_assert(json_is_true(json_object_get(j, "ok")), "invoke double(%d): %s", i,
			  v[i].raw);
		const json_t *r = json_object_get(j, "result");
		cr_assert(json_is_integer(r) && json_integer_value(r) == 2 * i,
			  "invoke double(%d): %s", i, v[i].raw);
		const char *id = json_string_value(json_object_get(j, "clone"));
		cr_assert(is_hex(id, 12), "invoke double(%d): clone in %s", i, v[i].raw);
		ids[i] = strdup(id);
		for (int k = 0; k < i; k++)
			cr_assert_str_neq(ids[k], ids[i],
					  "invokes %d and %d ran in the same clone %s", k, i, id);
		json_decref(j);
	}

	/* An invoke's clone is destroyed and never listed. */
	json_t *list = req_expect("GET", "/v1/clones", NULL, T_MS, 200);
	const json_t *it;
	size_t k;
	json_array_foreach(json_object_get(list, "clones"), k, it)
	{
		const char *id = json_string_value(json_object_get(it, "id"));
		for (int i = 0; i < INVOKES; i++)
			cr_assert(!id || strcmp(id, ids[i]),
				  "GET /v1/clones lists %s, the clone of invoke %d", id, i);
	}
	json_decref(list);

	struct metrics m;
	metrics_get(&m, NULL);
	double ok = metric(&m, "forkd_invokes_total", "result=\"ok\"");
	cr_assert(ok >= INVOKES, "forkd_invokes_total{result=\"ok\"} is %g after %d invokes", ok,
		  INVOKES);
	metrics_free(&m);
	for (int i = 0; i < INVOKES; i++) {
		free(ids[i]);
		free(v[i].raw);
	}
}

Test(forkd, a_clone_killed_with_sigkill_is_noticed)
{
	H_NEED_GUEST();
	use_shared();
	need_t();
	struct clone *c = fork_n("t", 3);
	js_expect(&c[0], "1 + 1", "2");
	cr_assert_eq(kill(c[0].pid, SIGKILL), 0, "kill %d: %s", c[0].pid, strerror(errno));

	json_t *j = NULL;
	const char *state = NULL;
	for (int waited = 0; waited <= 10000; waited += 50) {
		json_decref(j);
		j = clone_get(&c[0], 200);
		state = jstr(j, "state", c[0].id);
		if (!strcmp(state, "exited"))
			break;
		h_sleep_ms(50);
	}
	char *dump = json_dumps(j, JSON_COMPACT);
	cr_assert_str_eq(state, "exited", "10 s after SIGKILL: %s", dump);
	const json_t *ex = json_object_get(j, "exit");
	cr_assert(json_is_object(ex), "an exited clone without \"exit\": %s", dump);
	cr_assert_eq(jint(ex, "signal", dump), 9, "%s", dump);
	cr_assert(*jstr(ex, "reason", dump), "%s", dump);
	free(dump);
	json_decref(j);

	/* The others still answer, forkd too. */
	js_expect(&c[1], "6 * 7", "42");
	js_expect(&c[2], "6 * 7", "42");
	json_decref(req_expect("GET", "/v1/ping", NULL, T_MS, 200));

	/* Still listed, as exited; pausing it is a conflict; DELETE removes it. */
	json_t *list = req_expect("GET", "/v1/clones", NULL, T_MS, 200);
	const json_t *it;
	size_t k;
	bool found = false;
	json_array_foreach(json_object_get(list, "clones"), k, it)
	{
		const char *id = json_string_value(json_object_get(it, "id"));
		if (id && !strcmp(id, c[0].id)) {
			found = true;
			cr_assert_str_eq(json_string_value(json_object_get(it, "state")), "exited");
		}
	}
	cr_assert(found, "GET /v1/clones does not list the exited clone %s", c[0].id);
	json_decref(list);
	char *pause = h_fmt("/v1/clones/%s/pause", c[0].id);
	expect_error("POST", pause, NULL, 409, NULL);
	free(pause);
	clone_delete(&c[0]);
	json_decref(clone_get(&c[0], 404));
	clone_delete(&c[1]);
	clone_delete(&c[2]);
}

Test(forkd, a_clone_snapshot_becomes_a_template)
{
	H_NEED_GUEST();
	use_shared();
	need_t();
	struct clone *parent = fork_n("t", 1);
	js_expect(parent, "globalThis.v = 41", "41");

	char *path = h_fmt("/v1/clones/%s/snapshot", parent->id);
	json_t *s = req_expect("POST", path, "{\"tag\": \"child\"}", T_MS * 3, 201);
	const char *sid = jstr(s, "id", "snapshot");
	cr_assert(is_hex(sid, 32), "snapshot id \"%s\"", sid);
	cr_assert_str_eq(jstr(s, "tag", "snapshot"), "child");
	char *snap = strdup(sid);
	json_decref(s);
	free(path);

	/* The parent runs on, unchanged. */
	json_t *pj = clone_get(parent, 200);
	cr_assert_str_eq(jstr(pj, "state", parent->id), "running", "the clone after its snapshot");
	json_decref(pj);
	js_expect(parent, "v", "41");

	json_t *t2 = req_expect("POST", "/v1/templates",
				"{\"name\": \"t2\", \"snapshot\": \"child\"}", BOOT_MS, 201);
	check_template(t2, "t2", -1);
	cr_assert_str_eq(jstr(t2, "snapshot", "t2"), snap,
			 "template t2 from the snapshot tagged child");
	json_decref(t2);

	struct clone *child = fork_n("t2", 1);
	expect_guest_clone_id(child);
	js_expect(child, "v + 1", "42");
	js_expect(child, "typeof double", "\"function\"");
	/* Both ways isolated. */
	js_expect(child, "v = 100", "100");
	js_expect(parent, "v", "41");
	struct clone *fresh = fork_n("t", 1);
	js_expect(fresh, "typeof v", "\"undefined\"");
	clone_delete(child);
	clone_delete(parent);
	clone_delete(fresh);

	/* An invoke's clone is destroyed before the answer: t2 has no live
	 * clone left once it returned, so it can be deleted without force. */
	invoke_expect("t2", "{\"fn\": \"double\", \"args\": [21]}", "42");
	json_decref(req_expect("DELETE", "/v1/templates/t2", NULL, T_MS, 204));
	json_decref(req_expect("GET", "/v1/templates/t2", NULL, T_MS, 404));
	free(snap);
}

Test(forkd, bad_requests_get_4xx_and_forkd_keeps_serving)
{
	H_NEED_GUEST();
	use_shared();
	need_t();
	static const struct {
		const char *method, *path, *body;
		int want;
		const char *mention;
	} bad[] = {
	    {"POST", "/v1/templates/nope/clones", "{\"count\": 1}", 404, NULL},
	    {"POST", "/v1/templates/t/clones", "{\"count\": 0}", 400, NULL},
	    {"POST", "/v1/templates/t/clones", "{\"count\": 100000}", 400, NULL},
	    {"POST", "/v1/templates/t/clones", "{\"count\": ", 400, "line"},
	    {"POST", "/v1/templates/t/clones", "{\"count\": 1, \"colour\": \"red\"}", 400, NULL},
	    {"POST", "/v1/templates/t/clones", "{\"count\": \"2\"}", 400, NULL},
	    {"POST", "/v1/templates/t/invoke", "{\"fn\": \"double\", \"timeout_ms\": 0}", 400,
	     NULL},
	    {"POST", "/v1/templates/t/invoke", "{\"args\": [1]}", 400, NULL},
	    {"PUT", "/v1/templates/t/pool", "{\"size\": 257}", 400, NULL},
	    {"GET", "/v1/clones/0123456789ab", NULL, 404, NULL},
	    {"DELETE", "/v1/clones/0123456789ab", NULL, 404, NULL},
	    {"GET", "/v1/nothing-here", NULL, 404, NULL},
	    {"DELETE", "/v1/ping", NULL, 405, NULL},
	    {"GET", "/v1/templates/t/clones", NULL, 405, NULL},
	    {"PUT", "/v1/metrics", "{}", 405, NULL},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_error(bad[i].method, bad[i].path, bad[i].body, bad[i].want, bad[i].mention);

	/* A bad template name; a name taken. */
	char *body = boot_body("-bad", HANDLERS, -1);
	expect_error("POST", "/v1/templates", body, 400, NULL);
	free(body);
	body = boot_body("t", HANDLERS, -1);
	expect_error("POST", "/v1/templates", body, 409, NULL);
	free(body);
	/* A script that throws: 400 with the error; no template registered. */
	body = boot_body("throws", "var a = 1;\nthrow new Error('boom in load');", -1);
	expect_error("POST", "/v1/templates", body, 400, "boom in load");
	free(body);
	json_decref(req_expect("GET", "/v1/templates/throws", NULL, T_MS, 404));

	/* And a valid fork still works. */
	struct clone *c = fork_n("t", 1);
	expect_guest_clone_id(c);
	js_expect(c, "double(4)", "8");
	clone_delete(c);
}

/* The pids of pid's descendants (from /proc), into out[max]; returns the count. */
static int descendants(pid_t pid, pid_t *out, int max)
{
	static pid_t pids[32768], ppids[32768];
	int n = 0, found = 0;
	DIR *d = opendir("/proc");
	struct dirent *de;
	cr_assert_not_null(d);
	while ((de = readdir(d)) && n < 32768) {
		char *end, path[64], buf[1024];
		long p = strtol(de->d_name, &end, 10);
		if (*end || p <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", p);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t l = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[l] = '\0';
		char *rp = strrchr(buf, ')');
		int ppid;
		if (rp && sscanf(rp + 1, " %*c %d", &ppid) == 1) {
			pids[n] = (pid_t)p;
			ppids[n++] = ppid;
		}
	}
	closedir(d);
	out[found++] = pid; /* a work list: parents first */
	for (int w = 0; w < found; w++)
		for (int i = 0; i < n; i++)
			if (ppids[i] == out[w] && found < max)
				out[found++] = pids[i];
	memmove(out, out + 1, (size_t)(found - 1) * sizeof(*out));
	return found - 1;
}

Test(forkd, sigterm_leaves_no_clone_behind)
{
	H_NEED_GUEST();
	int rc = h_forkd_start(&e.own, NULL, NULL, 30000);
	if (rc < 0) {
		char *log = h_forkd_log(&e.own);
		cr_assert_fail("forkd did not start: %s", log);
	}
	e.dir = strdup(e.own.dir);
	e.sock = strdup(e.own.sock);
	json_decref(template_boot("t", HANDLERS, 1));
	wait_pool_ready("t", 1);
	struct clone *c = fork_n("t", 3);
	for (int i = 0; i < 3; i++)
		js_expect(&c[i], "1 + 2", "3");
	wait_pool_ready("t", 1); /* the shell taken by the fork is replaced */

	pid_t pids[256];
	int n = descendants(e.own.proc.pid, pids, 250);
	for (int i = 0; i < 3; i++) {
		bool listed = false;
		for (int k = 0; k < n; k++)
			listed |= pids[k] == c[i].pid;
		if (!listed)
			pids[n++] = c[i].pid;
	}
	cr_assert_geq(n, 4, "forkd with 3 clones and a warm shell has %d processes below it", n);

	cr_assert_eq(kill(e.own.proc.pid, SIGTERM), 0);
	int st = h_wait(&e.own.proc, 60000);
	cr_assert_neq(st, -1, "forkd still runs 60 s after SIGTERM");
	for (int i = 0; i < 3; i++)
		c[i].deleted = true; /* nothing left to delete */
	for (int i = 0; i < n; i++)
		cr_assert(pid_gone(pids[i], 5000),
			  "process %d (below forkd before its SIGTERM) still exists 5 s after "
			  "forkd exited",
			  pids[i]);
	cr_assert_eq(st, 0, "forkd's exit status after SIGTERM is %d", st);
}

Test(forkd, an_invoke_past_its_time_limit_gets_504)
{
	H_NEED_GUEST();
	use_shared();
	need_t();
	json_t *j = NULL;
	char *raw = NULL;
	int st = invoke("t", "{\"fn\": \"spin\", \"timeout_ms\": 500}", &j, &raw);
	cr_assert_eq(st, 504, "invoke spin with timeout_ms 500: %d %s", st, raw);
	cr_assert(json_string_value(json_object_get(j, "error")), "504 without an error: %s", raw);
	json_decref(j);
	free(raw);

	invoke_expect("t", "{\"fn\": \"double\", \"args\": [21]}", "42");
	invoke_expect("t", "{\"fn\": \"double\", \"args\": 5}", "10");
	/* The function runs in the clone the answer names. */
	st = invoke("t", "{\"fn\": \"forkvm.identity\"}", &j, &raw);
	cr_assert_eq(st, 200, "invoke forkvm.identity: %d %s", st, raw);
	const char *inside =
	    json_string_value(json_object_get(json_object_get(j, "result"), "clone_id"));
	const char *clone = json_string_value(json_object_get(j, "clone"));
	cr_assert(inside && clone && !strcmp(inside, clone), "invoke forkvm.identity: %s", raw);
	json_decref(j);
	free(raw);
	/* A function that throws: 200 with ok false. */
	st = invoke("t", "{\"fn\": \"nope\"}", &j, &raw);
	cr_assert_eq(st, 200, "invoke nope: %d %s", st, raw);
	cr_assert(json_is_false(json_object_get(j, "ok")), "invoke nope: %s", raw);
	cr_assert_str_eq(jstr(json_object_get(j, "error"), "name", raw), "ReferenceError");
	json_decref(j);
	free(raw);

	struct metrics m;
	metrics_get(&m, NULL);
	cr_assert_geq(metric(&m, "forkd_invokes_total", "result=\"timeout\""), 1);
	cr_assert_geq(metric(&m, "forkd_invokes_total", "result=\"ok\""), 2);
	cr_assert_geq(metric(&m, "forkd_invokes_total", "result=\"error\""), 1);
	metrics_free(&m);
}

Test(forkd, warm_pool_and_metrics)
{
	H_NEED_GUEST();
	use_shared();
	json_decref(template_boot("pooled", HANDLERS, 2));
	wait_pool_ready("pooled", 2);

	struct clone *a = fork_n("pooled", 1);
	cr_assert(a->from_pool, "clone %s of a template with 2 ready shells: from_pool false",
		  a->id);
	expect_guest_clone_id(a);
	js_expect(a, "double(21)", "42");

	wait_pool_ready("pooled", 2); /* refilled */
	struct clone *b = fork_n("pooled", 2);
	double r[3];
	for (int i = 0; i < 2; i++) {
		cr_assert(b[i].from_pool, "clone %s (2 of 2 ready shells): from_pool false",
			  b[i].id);
		expect_guest_clone_id(&b[i]);
		r[i] = js_random(&b[i]);
	}
	r[2] = js_random(a);
	cr_assert(r[0] != r[1] && r[1] != r[2] && r[0] != r[2],
		  "pool clones drew the same Math.random()");

	json_t *t = template_get("pooled");
	check_template(t, "pooled", 2);
	cr_assert_eq(jint(t, "clones", "pooled"), 3);
	cr_assert_eq(jint(t, "forks", "pooled"), 3);
	json_decref(t);

	struct metrics m;
	char *text;
	metrics_get(&m, &text);
	expect_type(&m, "forkd_clones_live", "gauge");
	expect_type(&m, "forkd_info", "gauge");
	char plabel[64];
	snprintf(plabel, sizeof(plabel), "platform=\"%s\"", h_platform());
	cr_assert_eq(metric(&m, "forkd_info", plabel), 1, "forkd_info names no platform %s\n%s",
		     h_platform(), text);
	double live = metric(&m, "forkd_clones_live", NULL);
	cr_assert(live >= 3, "forkd_clones_live is %g with 3 clones of pooled alive:\n%s", live,
		  text);
	cr_assert_eq(metric(&m, "forkd_forks_total", "template=\"pooled\""), 3, "\n%s", text);
	cr_assert_geq(metric(&m, "forkd_forks_by_source_total", "source=\"pool\""), 3, "\n%s",
		      text);
	cr_assert_eq(metric(&m, "forkd_pool_size", "template=\"pooled\""), 2, "\n%s", text);
	double ready = metric(&m, "forkd_pool_ready", "template=\"pooled\"");
	cr_assert(ready >= 0 && ready <= 2, "forkd_pool_ready{template=\"pooled\"} %g\n%s", ready,
		  text);

	/* The latency histogram: cumulative buckets up to +Inf = _count. */
	expect_type(&m, "forkd_fork_latency_seconds", "histogram");
	double prev_le = -INFINITY, prev = 0, inf = NAN;
	int buckets = 0;
	for (int i = 0; i < m.n; i++) {
		if (strcmp(m.s[i].name, "forkd_fork_latency_seconds_bucket"))
			continue;
		const char *le = strstr(m.s[i].labels, "le=\"");
		cr_assert_not_null(le, "a bucket without le: {%s}", m.s[i].labels);
		double bound = !strncmp(le + 4, "+Inf\"", 5) ? INFINITY : strtod(le + 4, NULL);
		cr_assert_gt(bound, prev_le, "buckets out of order at le %g\n%s", bound, text);
		cr_assert_geq(m.s[i].value, prev,
			      "bucket le %g holds fewer than the one before\n%s", bound, text);
		prev_le = bound;
		prev = m.s[i].value;
		if (isinf(bound))
			inf = m.s[i].value;
		buckets++;
	}
	cr_assert_gt(buckets, 1, "forkd_fork_latency_seconds has %d buckets\n%s", buckets, text);
	cr_assert(!isnan(inf), "no le=\"+Inf\" bucket\n%s", text);
	cr_assert_eq(inf, metric(&m, "forkd_fork_latency_seconds_count", NULL), "\n%s", text);
	cr_assert_geq(inf, 3, "\n%s", text);
	cr_assert(!isnan(metric(&m, "forkd_fork_latency_seconds_sum", NULL)), "no _sum\n%s", text);
	metrics_free(&m);
	free(text);

	/* Pool size 0: the shells go. */
	t = req_expect("PUT", "/v1/templates/pooled/pool", "{\"size\": 0}", T_MS, 200);
	check_template(t, "pooled", 0);
	json_decref(t);
	wait_pool_ready("pooled", 0);

	clone_delete(a);
	clone_delete(&b[0]);
	clone_delete(&b[1]);
	json_decref(req_expect("DELETE", "/v1/templates/pooled", NULL, T_MS, 204));
}

/* Issue 15, failure 6: a --forkvm that is not an executable file is a
 * usage error at start (exit 2), not a failure at the first template. */
Test(forkd_cli, a_missing_forkvm_binary_is_refused_at_start, .timeout = 30)
{
	char *dir = h_tmpdir(), *bin = h_bin("forkd"), *sock = h_join(dir, "f.sock"), *err = NULL;
	const char *argv[] = { bin, "--api-socket", sock, "--forkvm", "/nonexistent/forkvm", NULL };
	int st = h_run(dir, argv, 20000, NULL, &err);
	cr_assert_eq(st, 2, "forkd exited %d: %s", st, err);
	cr_assert(strstr(err, "--forkvm: not an executable file: /nonexistent/forkvm"), "%s", err);
	cr_assert(access(sock, F_OK) != 0, "forkd started serving");
	/* a directory is not an executable file either */
	free(err);
	const char *argv2[] = { bin, "--api-socket", sock, "--forkvm", dir, NULL };
	cr_assert_eq(h_run(dir, argv2, 20000, NULL, &err), 2, "%s", err);
	free(err);
	free(sock);
	free(bin);
	h_rmtree(dir);
	free(dir);
}

/* Issue 15, failure 2: a snapshot whose clones can never start (it has no
 * agent channel) is refused when it is added as a template, with the
 * reason; no pool shell is ever started for it. */
Test(forkd, a_template_whose_clones_cannot_start_is_refused_when_added, .timeout = 120)
{
	H_NEED_GUEST();
	use_shared();
	struct h_vm vm;
	char *payload = h_payload("counter"), *store = h_join(e.dir, "store");
	char store_opt[4200];
	snprintf(store_opt, sizeof(store_opt), "%s", store);
	const char *extra[] = { "--cmdline", "1 600 1000", "--cpus", "boot=2", "--store", store_opt,
				NULL };
	cr_assert_eq(h_vm_start(&vm, payload, extra), 0, "forkvm: %s", h_stderr(&vm.proc));
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
	char *body = NULL;
	int st = h_api(&vm, "PUT", "/api/v1/vm.snapshot", "{\"destination_url\": \"store://noagent\"}",
		       &body);
	cr_assert_eq(st, 200, "snapshot into forkd's store: %d %s", st, body);
	free(body);
	h_vm_stop(&vm);
	char *raw = NULL;
	st = req("POST", "/v1/templates", "{\"name\": \"noagent\", \"snapshot\": \"noagent\", \"pool\": 3}",
		 T_MS, NULL, &raw);
	cr_assert_eq(st, 400, "%d %s", st, raw);
	cr_assert(strstr(raw, "no agent channel"), "%s", raw);
	free(raw);
	cr_assert_eq(req("GET", "/v1/templates/noagent", NULL, T_MS, NULL, NULL), 404);
	free(payload);
	free(store);
}
