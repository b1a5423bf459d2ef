/* tests/lib/vmh.c - see vmh.h. */
#include "tests/lib/vmh.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/agent_client.h"

/* src as a source_url or destination_url: an absolute path is a directory. */
static char *url_of(const char *src)
{
	return src[0] == '/' ? h_fmt("file://%s", src) : h_fmt("%s", src);
}

/* ------------------------------------------------------------ handles */

void vmh_set_init(struct vmh_set *s, const char *dir)
{
	memset(s, 0, sizeof(*s));
	s->dir = dir;
}

void vmh_set_free(struct vmh_set *s)
{
	for (int i = 0; i < VMH_MAX; i++)
		if (s->vms[i].used)
			vmh_free(&s->vms[i]);
}

struct vmh *vmh_new(struct vmh_set *s, const char *name)
{
	struct vmh *v = NULL;
	for (int i = 0; i < VMH_MAX && !v; i++)
		if (!s->vms[i].used)
			v = &s->vms[i];
	cr_assert_not_null(v, "more than %d VMs at once", VMH_MAX);
	cr_assert_not_null(s->dir, "vmh_new before vmh_set_init");
	memset(v, 0, sizeof(*v));
	v->used = true;
	v->name = name ? h_fmt("%s", name) : h_fmt("vm%u", s->seq++);
	v->api = h_fmt("%s/%s.api", s->dir, v->name);
	v->agent = h_fmt("%s/%s.agent", s->dir, v->name);
	v->console = h_fmt("%s/%s.console", s->dir, v->name);
	v->log = h_fmt("%s/%s.log", s->dir, v->name);
	return v;
}

/* Starts argv as v's forkvm (output captured in the set's directory, tied
 * to the test process). */
static void start(struct vmh_set *s, struct vmh *v, const char *const argv[])
{
	int rc = h_spawn_tied(&v->proc, s->dir, argv);
	cr_assert_eq(rc, 0, "%s: fork: %s", v->name, strerror(errno));
	v->live = true;
}

void vmh_stop(struct vmh *v)
{
	agent_client_close(v->ag);
	v->ag = NULL;
	if (v->live) {
		if (v->proc.out_path)
			unlink(v->proc.out_path);
		if (v->proc.err_path)
			unlink(v->proc.err_path);
		h_kill(&v->proc);
		v->live = false;
	}
}

void vmh_free(struct vmh *v)
{
	vmh_stop(v);
	unlink(v->api);
	unlink(v->agent);
	unlink(v->console);
	unlink(v->log);
	free(v->name);
	free(v->api);
	free(v->agent);
	free(v->console);
	free(v->log);
	memset(v, 0, sizeof(*v));
}

char *vmh_stderr(const struct vmh *v)
{
	return v->proc.err_path ? h_stderr(&v->proc) : strdup("");
}

void vmh_set_agent(struct vmh *v, const char *path)
{
	agent_client_close(v->ag);
	v->ag = NULL;
	free(v->agent);
	v->agent = h_fmt("%s", path);
}

/* ------------------------------------------------------------ starting forkvm */

#define MAX_ARGS 48

/* Appends to argv[0..n) the optional arguments that boot and restore share,
 * and the terminating NULL. */
static void common_args(const char **argv, int n, const struct vmh_opts *o, const char *serial,
			const char *agent, const struct vmh *v)
{
	if (agent) {
		argv[n++] = "--agent";
		argv[n++] = agent;
	}
	if (o->serial == VMH_SERIAL_FILE) {
		argv[n++] = "--serial";
		argv[n++] = serial;
	} else if (o->serial == VMH_SERIAL_OFF) {
		argv[n++] = "--serial";
		argv[n++] = "off";
	}
	if (o->log) {
		argv[n++] = "--log-file";
		argv[n++] = v->log;
		argv[n++] = "-v";
	}
	if (o->store) {
		argv[n++] = "--store";
		argv[n++] = o->store;
	}
	for (int i = 0; o->extra && o->extra[i]; i++) {
		cr_assert_lt(n, MAX_ARGS - 1, "%s: too many forkvm arguments", v->name);
		argv[n++] = o->extra[i];
	}
	argv[n] = NULL;
}

struct vmh *vmh_boot(struct vmh_set *s, const char *name, const struct vmh_opts *o)
{
	static const struct vmh_opts defaults;
	struct vmh *v = vmh_new(s, name);
	if (!o)
		o = &defaults;
	char *bin = h_bin("forkvm"), *kernel = h_payload(o->payload ? o->payload : "agent");
	char *serial = h_fmt("file=%s", v->console), *agent = h_fmt("socket=%s", v->agent);
	char *mem = o->memory ? h_fmt("size=%s", o->memory) : NULL;
	const char *argv[MAX_ARGS];
	int n = 0;

	argv[n++] = bin;
	argv[n++] = "--api-socket";
	argv[n++] = v->api;
	argv[n++] = "--kernel";
	argv[n++] = kernel;
	if (mem) {
		argv[n++] = "--memory";
		argv[n++] = mem;
	}
	common_args(argv, n, o, serial, o->payload ? NULL : agent, v);
	start(s, v, argv);
	free(bin);
	free(kernel);
	free(serial);
	free(agent);
	free(mem);
	if (o->payload)
		vmh_wait_api(v, NULL);
	else
		vmh_ready(v, NULL);
	return v;
}

struct vmh *vmh_restore_start(struct vmh_set *s, const char *name, const char *src,
			      const struct vmh_opts *o)
{
	static const struct vmh_opts defaults;
	struct vmh *v = vmh_new(s, name);
	if (!o)
		o = &defaults;
	char *bin = h_bin("forkvm"), *url = url_of(src);
	char *source = h_fmt("source_url=%s%s", url, o->resume ? ",resume=true" : "");
	char *serial = h_fmt("file=%s", v->console), *agent = h_fmt("socket=%s", v->agent);
	bool own_agent = !o->no_agent && !o->agent_at;
	const char *argv[MAX_ARGS];
	int n = 0;

	argv[n++] = bin;
	argv[n++] = "--api-socket";
	argv[n++] = v->api;
	argv[n++] = "--restore";
	argv[n++] = source;
	common_args(argv, n, o, serial, own_agent ? agent : NULL, v);
	if (o->agent_at)
		vmh_set_agent(v, o->agent_at);
	start(s, v, argv);
	free(bin);
	free(url);
	free(source);
	free(serial);
	free(agent);
	return v;
}

struct vmh *vmh_restore(struct vmh_set *s, const char *name, const char *src,
			const struct vmh_opts *o)
{
	struct vmh *v = vmh_restore_start(s, name, src, o);
	vmh_wait_api(v, NULL);
	vmh_assert_state(v, o && o->resume ? "Running" : "Paused");
	return v;
}

struct vmh *vmh_empty(struct vmh_set *s, const char *name, const char *store)
{
	struct vmh *v = vmh_new(s, name);
	char *bin = h_bin("forkvm");
	const char *argv[] = {bin, "--api-socket", v->api, store ? "--store" : NULL, store, NULL};
	start(s, v, argv);
	free(bin);
	vmh_wait_api(v, NULL);
	return v;
}

void vmh_wait_api(struct vmh *v, const char *when)
{
	for (int t = 0; t < 30000 && access(v->api, F_OK) != 0; t += 2) {
		if (h_wait(&v->proc, 0) >= 0)
			break;
		h_sleep_ms(2);
	}
	if (access(v->api, F_OK) != 0) {
		char *err = vmh_stderr(v);
		cr_assert_fail("%s%s%s: no API socket (status %d); stderr:\n%s", when ? when : "",
			       when ? ": " : "", v->name, h_wait(&v->proc, 0), err);
	}
}

void vmh_ready(struct vmh *v, const char *when)
{
	vmh_wait_api(v, when);
	vmh_agent(v);
}

/* ------------------------------------------------------------ the REST API */

int vmh_api(const struct vmh *v, const char *method, const char *path, const char *json,
	    char **body)
{
	return h_http(v->api, method, path, json, VMH_T_MS, body);
}

void vmh_put(struct vmh *v, const char *what, const char *json, int want)
{
	char *body = NULL, *path = h_fmt("/api/v1/%s", what);
	int st = vmh_api(v, "PUT", path, json, &body);
	cr_assert_eq(st, want, "%s %s: %d %s", v->name, what, st, body);
	free(body);
	free(path);
}

void vmh_pause(struct vmh *v)
{
	vmh_put(v, "vm.pause", NULL, 204);
}

void vmh_resume(struct vmh *v)
{
	vmh_put(v, "vm.resume", NULL, 204);
}

void vmh_snapshot(struct vmh *v, const char *dest)
{
	char *url = url_of(dest), *json = h_fmt("{\"destination_url\": \"%s\"}", url);
	vmh_put(v, "vm.snapshot", json, 204);
	free(url);
	free(json);
}

char *vmh_state(struct vmh *v, char **why)
{
	char *body = NULL;
	int st = vmh_api(v, "GET", "/api/v1/vm.info", NULL, &body);
	if (st != 200) {
		if (why)
			*why = h_fmt("vm.info: %d %s", st, body);
		free(body);
		return NULL;
	}
	json_t *j = json_loads(body, 0, NULL);
	const char *s = json_string_value(json_object_get(j, "state"));
	char *r = s ? h_fmt("%s", s) : NULL;
	if (!r && why)
		*why = h_fmt("vm.info without a state: %s", body);
	json_decref(j);
	free(body);
	return r;
}

void vmh_assert_state(struct vmh *v, const char *want)
{
	char *why = NULL, *s = vmh_state(v, &why);
	if (!s) {
		char *err = vmh_stderr(v);
		cr_assert_fail("%s: %s; forkvm stderr:\n%s", v->name, why, err);
	}
	cr_assert_str_eq(s, want, "%s is %s, expected %s", v->name, s, want);
	free(s);
}

/* ------------------------------------------------------------ the agent */

struct agent_client *vmh_agent(struct vmh *v)
{
	if (!v->ag) {
		int rc = agent_client_connect(v->agent, VMH_T_MS, &v->ag);
		cr_assert_eq(rc, 0, "%s: cannot connect to %s: %s", v->name, v->agent,
			     strerror(-rc));
		rc = agent_client_ping(v->ag, VMH_T_MS, NULL);
		cr_assert_eq(rc, 0, "%s: the agent at %s does not answer: %s", v->name, v->agent,
			     strerror(-rc));
	}
	return v->ag;
}

char *vmh_js(struct vmh *v, const char *code)
{
	json_t *r = NULL;
	const char *name = NULL, *msg = NULL;
	int rc = agent_client_eval(vmh_agent(v), code, VMH_T_MS, &r);
	cr_assert_eq(rc, 0, "%s: eval `%.200s`: %s", v->name, code, strerror(-rc));
	cr_assert(agent_client_reply_ok(r, &name, &msg), "%s: eval `%.300s` failed: %s: %s",
		  v->name, code, name, msg);
	json_t *res = json_object_get(r, "result");
	char *s = res ? json_dumps(res, JSON_ENCODE_ANY | JSON_COMPACT) : strdup("undefined");
	json_decref(r);
	return s;
}

char *vmh_jsf(struct vmh *v, const char *f, ...)
{
	va_list ap;
	char *code;
	va_start(ap, f);
	if (vasprintf(&code, f, ap) < 0)
		abort();
	va_end(ap);
	char *r = vmh_js(v, code);
	free(code);
	return r;
}

void vmh_js_expect(struct vmh *v, const char *code, const char *want)
{
	char *got = vmh_js(v, code);
	cr_assert_str_eq(got, want, "%s: `%s` is %s, expected %s", v->name, code, got, want);
	free(got);
}
