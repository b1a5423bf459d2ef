/* forkd/api.c - the fork daemon's REST API (docs/forkd-api.md): routing,
 * request validation, JSON replies. Every error is {"error": "..."}. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "forkd/internal.h"


/* Splits "/v1/a/b/c" into at most 4 segments (modifies buf). */
static int split(char *buf, char *seg[4])
{
	int n = 0;
	for (char *save = NULL, *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
		if (n == 4)
			return -1;
		seg[n++] = s;
	}
	return n;
}

static bool query_flag(const char *query, const char *name)
{
	size_t n = strlen(name);
	for (const char *q = query; q && *q;) {
		if (!strncmp(q, name, n) && (!strncmp(q + n, "=true", 5) || !strncmp(q + n, "=1", 2)))
			return true;
		q = strchr(q, '&');
		q = q ? q + 1 : NULL;
	}
	return false;
}

static bool query_value(const char *query, const char *name, char *out, size_t len)
{
	size_t n = strlen(name);
	for (const char *q = query; q && *q;) {
		if (!strncmp(q, name, n) && q[n] == '=') {
			const char *v = q + n + 1, *e = strchr(v, '&');
			size_t l = e ? (size_t)(e - v) : strlen(v);
			if (l >= len)
				l = len - 1;
			memcpy(out, v, l);
			out[l] = '\0';
			return true;
		}
		q = strchr(q, '&');
		q = q ? q + 1 : NULL;
	}
	return false;
}


/* Parses the body as a JSON object; on failure responds 400 and returns NULL. */
static json_t *body_object(const struct http_request *req, struct http_exchange *ex, bool allow_empty)
{
	json_error_t jerr;
	if (req->body_len == 0 && allow_empty)
		return json_object();
	json_t *j = json_loadb(req->body, req->body_len, 0, &jerr);
	if (!j) {
		http_respond_error(ex, 400, "bad JSON at line %d column %d: %s", jerr.line, jerr.column,
				   jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		http_respond_error(ex, 400, "the body must be a JSON object");
		json_decref(j);
		return NULL;
	}
	return j;
}

static void respond_json(struct http_exchange *ex, int status, json_t *j)
{
	if (!j) {
		http_respond_error(ex, 500, "out of memory");
		return;
	}
	http_respond_json(ex, status, j);
	json_decref(j);
}

static bool method_is(struct http_exchange *ex, const struct http_request *req, const char *m1,
		      const char *m2)
{
	if (!strcmp(req->method, m1) || (m2 && !strcmp(req->method, m2)))
		return true;
	http_respond_error(ex, 405, "%s takes %s%s%s, not %s", req->path, m1, m2 ? " or " : "",
			   m2 ? m2 : "", req->method);
	return false;
}

static int pool_value(const json_t *v, unsigned *out, struct http_exchange *ex)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > (json_int_t)FORKD_MAX_POOL) {
		http_respond_error(ex, 400, "pool size must be an integer 0..%u", FORKD_MAX_POOL);
		return -1;
	}
	*out = (unsigned)json_integer_value(v);
	return 0;
}

/* ------------------------------------------------------------ templates */

static void templates_post(struct forkd *d, const struct http_request *req, struct http_exchange *ex)
{
	json_t *j = body_object(req, ex, false), *v, *boot = NULL;
	const char *k, *name = NULL, *snap = NULL, *load = NULL;
	unsigned pool = d->cfg.default_pool;
	char err[512];

	if (!j)
		return;
	json_object_foreach(j, k, v) {
		if (!strcmp(k, "name") && json_is_string(v)) {
			name = json_string_value(v);
		} else if (!strcmp(k, "snapshot") && json_is_string(v)) {
			snap = json_string_value(v);
		} else if (!strcmp(k, "boot") && json_is_object(v)) {
			boot = v;
		} else if (!strcmp(k, "load") && json_is_string(v)) {
			load = json_string_value(v);
		} else if (!strcmp(k, "pool")) {
			if (pool_value(v, &pool, ex) < 0)
				goto out;
		} else {
			http_respond_error(ex, 400, "templates: unknown or mistyped field %s", k);
			goto out;
		}
	}
	if (!name || !forkd_template_name_valid(name)) {
		http_respond_error(ex, 400,
				   "a template needs a name of 1..%d characters [A-Za-z0-9_.-], not starting "
				   "with '.' or '-'",
				   FORKD_NAME_MAX);
		goto out;
	}
	if (!!snap == !!boot) {
		http_respond_error(ex, 400, "a template takes either \"snapshot\" (a store tag or id) or "
					    "\"boot\" (a VM configuration)");
		goto out;
	}
	if (load && !boot) {
		http_respond_error(ex, 400, "\"load\" goes with \"boot\"");
		goto out;
	}
	if (snap && !*snap) {
		http_respond_error(ex, 400, "\"snapshot\" is empty");
		goto out;
	}
	if (forkd_template_find(d, name) || forkd_builder_busy(d, name)) {
		http_respond_error(ex, 409, "template %s already exists", name);
		goto out;
	}
	if (boot) {
		/* Validate the configuration here, for a clear 400 before any work. */
		struct vm_config cfg;
		json_t *probe = json_deep_copy(boot);
		json_object_del(probe, "agent");
		json_object_del(probe, "serial");
		int rc = vm_config_from_json(probe, &cfg, err, sizeof(err));
		json_decref(probe);
		if (rc < 0) {
			http_respond_error(ex, 400, "boot: %s", err);
			goto out;
		}
		if (access(cfg.kernel, R_OK) < 0) {
			http_respond_error(ex, 400, "boot: payload.kernel %s: %s", cfg.kernel, strerror(errno));
			vm_config_free(&cfg);
			goto out;
		}
		vm_config_free(&cfg);
	}
	json_t *bootcopy = boot ? json_deep_copy(boot) : NULL;
	int rc = forkd_builder_start(d, name, bootcopy, load, snap, pool, ex, err, sizeof(err));
	json_decref(bootcopy);
	if (rc < 0)
		http_respond_error(ex, 500, "%s", err);
out:
	json_decref(j);
}

static void templates_get(struct forkd *d, struct http_exchange *ex)
{
	json_t *arr = json_array();
	for (struct template *t = d->templates; t; t = t->next)
		json_array_append_new(arr, forkd_template_json(t));
	respond_json(ex, 200, json_pack("{s:o}", "templates", arr));
}

static void template_delete(struct forkd *d, struct template *t, const struct http_request *req,
			    struct http_exchange *ex)
{
	bool force = query_flag(req->query, "force");
	unsigned live = 0;

	for (struct clone *c = d->clones; c; c = c->next)
		if (c->tpl == t && !c->shell && c->state != CLONE_EXITED && !c->killed)
			live++;
	if (live && !force) {
		http_respond_error(ex, 409,
				   "template %s has %u live clones: delete them first or force (?force=true, forkctl template rm --force)",
				   t->name, live);
		return;
	}
	for (struct clone *c = d->clones; c; c = c->next)
		if (c->tpl == t && !c->shell)
			forkd_clone_kill(d, c);
	log_info("template %s removed%s", t->name, live ? " (its clones killed)" : "");
	forkd_template_remove(d, t);
	http_respond(ex, 204, NULL, NULL, 0);
}

static void template_clones(struct forkd *d, struct template *t, const struct http_request *req,
			    struct http_exchange *ex)
{
	json_t *j = body_object(req, ex, true), *v;
	const char *k;
	json_int_t count = 1;
	char err[512];

	if (!j)
		return;
	json_object_foreach(j, k, v) {
		if (!strcmp(k, "count") && json_is_integer(v)) {
			count = json_integer_value(v);
		} else {
			http_respond_error(ex, 400, "clones: unknown or mistyped field %s", k);
			json_decref(j);
			return;
		}
	}
	json_decref(j);
	if (count < 1 || count > FORKD_MAX_COUNT) {
		http_respond_error(ex, 400, "count must be 1..%d", FORKD_MAX_COUNT);
		return;
	}
	int st = forkd_capacity_check(d, (unsigned)count, err, sizeof(err));
	if (st) {
		d->fork_failures++;
		http_respond_error(ex, st, "%s", err);
		return;
	}
	forkd_fork(d, t, (unsigned)count, ex, NULL);
}

static void template_routes(struct forkd *d, char *seg[4], int n, const struct http_request *req,
			    struct http_exchange *ex)
{
	if (n == 2) {
		if (!strcmp(req->method, "POST"))
			templates_post(d, req, ex);
		else if (method_is(ex, req, "GET", "POST"))
			templates_get(d, ex);
		return;
	}
	struct template *t = forkd_template_find(d, seg[2]);
	if (!t) {
		http_respond_error(ex, 404, "no template named %s", seg[2]);
		return;
	}
	if (n == 3) {
		if (!strcmp(req->method, "DELETE"))
			template_delete(d, t, req, ex);
		else if (method_is(ex, req, "GET", "DELETE"))
			respond_json(ex, 200, forkd_template_json(t));
		return;
	}
	if (!strcmp(seg[3], "clones")) {
		if (method_is(ex, req, "POST", NULL))
			template_clones(d, t, req, ex);
	} else if (!strcmp(seg[3], "invoke")) {
		if (!method_is(ex, req, "POST", NULL))
			return;
		json_t *j = body_object(req, ex, false);
		if (j)
			forkd_invoke_start(d, t, j, ex);
		json_decref(j);
	} else if (!strcmp(seg[3], "pool")) {
		if (!method_is(ex, req, "PUT", NULL))
			return;
		json_t *j = body_object(req, ex, false);
		unsigned size;
		if (!j)
			return;
		if (json_object_size(j) != 1 || !json_object_get(j, "size")) {
			http_respond_error(ex, 400, "pool takes exactly {\"size\": N}");
		} else if (pool_value(json_object_get(j, "size"), &size, ex) == 0) {
			t->pool_size = size;
			forkd_pool_fill(d, t);
			respond_json(ex, 200, forkd_template_json(t));
		}
		json_decref(j);
	} else {
		http_respond_error(ex, 404, "unknown path %s", req->path);
	}
}

/* ------------------------------------------------------------ clones */

static void clones_get(struct forkd *d, const struct http_request *req, struct http_exchange *ex)
{
	char tpl[FORKD_NAME_MAX + 2] = "";
	bool filter = query_value(req->query, "template", tpl, sizeof(tpl));
	json_t *arr = json_array();

	for (struct clone *c = d->clones; c; c = c->next) {
		if (c->shell || c->hidden || c->state == CLONE_STARTING || c->state == CLONE_GOING)
			continue;
		if (filter && strcmp(c->tpl_name, tpl))
			continue;
		json_array_append_new(arr, forkd_clone_json(c));
	}
	respond_json(ex, 200, json_pack("{s:o}", "clones", arr));
}

static void clone_op(struct forkd *d, struct clone *c, int op, const struct http_request *req,
		     struct http_exchange *ex)
{
	char tag[256] = "";

	if (c->state == CLONE_EXITED) {
		http_respond_error(ex, 409, "clone %s has exited: %s", c->id, c->exit_reason);
		return;
	}
	if (c->op_ex) {
		http_respond_error(ex, 409, "clone %s is busy with another request", c->id);
		return;
	}
	if (op == CTL_PAUSE && c->state != CLONE_RUNNING) {
		http_respond_error(ex, 409, "clone %s is not running", c->id);
		return;
	}
	if (op == CTL_RESUME && c->state != CLONE_PAUSED) {
		http_respond_error(ex, 409, "clone %s is not paused", c->id);
		return;
	}
	if (op == CTL_SNAPSHOT) {
		json_t *j = body_object(req, ex, true), *v;
		const char *k;
		if (!j)
			return;
		json_object_foreach(j, k, v) {
			if (!strcmp(k, "tag") && json_is_string(v) && json_string_length(v) > 0 &&
			    json_string_length(v) < sizeof(tag)) {
				snprintf(tag, sizeof(tag), "%s", json_string_value(v));
			} else {
				http_respond_error(ex, 400, "snapshot: unknown or mistyped field %s", k);
				json_decref(j);
				return;
			}
		}
		json_decref(j);
	}
	if (forkd_clone_send(c, (uint32_t)op, tag) < 0) {
		http_respond_error(ex, 500, "cannot reach clone %s", c->id);
		return;
	}
	(void)d;
	c->op = op;
	c->op_ex = ex;
	snprintf(c->op_tag, sizeof(c->op_tag), "%s", tag);
}

static void clone_routes(struct forkd *d, char *seg[4], int n, const struct http_request *req,
			 struct http_exchange *ex)
{
	if (n == 2) {
		if (method_is(ex, req, "GET", NULL))
			clones_get(d, req, ex);
		return;
	}
	struct clone *c = forkd_clone_find(d, seg[2]);
	if (!c || c->state == CLONE_STARTING || c->state == CLONE_GOING) {
		http_respond_error(ex, 404, "no clone %s", seg[2]);
		return;
	}
	if (n == 3) {
		if (!strcmp(req->method, "DELETE")) {
			if (c->op_ex) {
				http_respond_error(ex, 409, "clone %s is busy with another request", c->id);
			} else if (c->state == CLONE_EXITED) {
				forkd_clone_forget(d, c);
				http_respond(ex, 204, NULL, NULL, 0);
			} else {
				c->op = -1; /* answered once reaped */
				c->op_ex = ex;
				forkd_clone_kill(d, c);
			}
		} else if (method_is(ex, req, "GET", "DELETE")) {
			respond_json(ex, 200, forkd_clone_json(c));
		}
		return;
	}
	int op = !strcmp(seg[3], "pause")      ? CTL_PAUSE
		 : !strcmp(seg[3], "resume")   ? CTL_RESUME
		 : !strcmp(seg[3], "snapshot") ? CTL_SNAPSHOT
					       : 0;
	if (!op) {
		http_respond_error(ex, 404, "unknown path %s", req->path);
		return;
	}
	if (method_is(ex, req, "POST", NULL))
		clone_op(d, c, op, req, ex);
}

/* ------------------------------------------------------------ entry */

void forkd_api_handle(void *arg, struct http_exchange *ex)
{
	struct forkd *d = arg;
	const struct http_request *req = http_exchange_request(ex);
	char buf[1024], *seg[4] = { 0 };
	int n;

	if (strlen(req->path) >= sizeof(buf) || (snprintf(buf, sizeof(buf), "%s", req->path),
						  n = split(buf, seg)) < 2 || strcmp(seg[0], "v1")) {
		http_respond_error(ex, 404, "unknown path %s (the API lives under /v1/)", req->path);
		return;
	}
	log_debug("api: %s %s", req->method, req->path);
	if (!strcmp(seg[1], "ping") && n == 2) {
		if (method_is(ex, req, "GET", NULL))
			respond_json(ex, 200,
				     json_pack("{s:s,s:i,s:s,s:s,s:s}", "version", FORKVM_VERSION, "pid",
					       (int)getpid(), "store", d->store, "run_dir", d->run_dir,
					       "platform", vm_platform_name(d->cfg.platform)));
	} else if (!strcmp(seg[1], "metrics") && n == 2) {
		if (method_is(ex, req, "GET", NULL)) {
			char *m = forkd_metrics(d);
			if (m)
				http_respond(ex, 200, "text/plain; version=0.0.4", m, strlen(m));
			else
				http_respond_error(ex, 500, "out of memory");
			free(m);
		}
	} else if (!strcmp(seg[1], "templates") && n <= 4) {
		template_routes(d, seg, n, req, ex);
	} else if (!strcmp(seg[1], "clones") && n <= 4) {
		clone_routes(d, seg, n, req, ex);
	} else {
		http_respond_error(ex, 404, "unknown path %s", req->path);
	}
}
