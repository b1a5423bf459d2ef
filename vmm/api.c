/* vmm/api.c - the VMM's REST API on a Unix socket, Cloud Hypervisor's
 * paths (docs/api.md). Every error is a JSON body {"error": "..."} with a
 * 4xx status for the client's mistakes and 5xx for the VMM's. */
#include "api.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

#define API_PREFIX "/api/v1/"

int vmm_api_status(int rc)
{
	switch (-rc) {
	case EBUSY:
		return 409;
	case ENODEV:
		return 503;
	case ENOENT: /* a configuration naming a missing file */
	case EINVAL:
	case ENOEXEC:
	case E2BIG:
	case ENAMETOOLONG:
	case EEXIST:
	case EADDRINUSE:
	case EACCES:
	case EISDIR:
	case EFBIG:
	case ENOTDIR:
	case EBADMSG:
	case EPROTONOSUPPORT:
		return 400;
	case ENOSPC:
		return 507; /* Insufficient Storage */
	case ENOTSUP: /* what forkvm cannot do for this VM (a Linux guest's snapshot) */
		return 501;
	default:
		return 500;
	}
}

enum verb { V_GET, V_PUT };

struct route {
	const char *name;
	enum verb verb;
	int (*fn)(struct vmm_api *api, const struct http_request *req, struct http_exchange *ex);
};

static void reply_rc(struct http_exchange *ex, int rc, const char *err)
{
	if (rc >= 0)
		http_respond(ex, 204, NULL, NULL, 0);
	else
		http_respond_error(ex, vmm_api_status(rc), "%s", err);
}

static int r_ping(struct vmm_api *api, const struct http_request *req, struct http_exchange *ex)
{
	(void)api;
	(void)req;
	json_t *j = json_pack("{s:s,s:s,s:i,s:[s,s]}", "build_version", FORKVM_VERSION, "version",
			      FORKVM_VERSION, "pid", (int)getpid(), "features", "function-guest",
			      "linux-guest");
	http_respond_json(ex, 200, j);
	json_decref(j);
	return 0;
}

static int r_info(struct vmm_api *api, const struct http_request *req, struct http_exchange *ex)
{
	int rc;
	json_t *j = vmm_vm_info(api->vmm, &rc);
	(void)req;
	if (!j) {
		http_respond_error(ex, rc == -ENOENT ? 404 : 500, "%s",
				   rc == -ENOENT ? "no VM is created" : "out of memory");
		return 0;
	}
	http_respond_json(ex, 200, j);
	json_decref(j);
	return 0;
}

static int r_counters(struct vmm_api *api, const struct http_request *req, struct http_exchange *ex)
{
	int rc;
	json_t *j = vmm_vm_counters(api->vmm, &rc);
	(void)req;
	if (!j) {
		http_respond_error(ex, 409, "the VM is not booted");
		return 0;
	}
	http_respond_json(ex, 200, j);
	json_decref(j);
	return 0;
}

static int r_create(struct vmm_api *api, const struct http_request *req, struct http_exchange *ex)
{
	char err[512] = "";
	json_error_t jerr;
	struct vm_config cfg;
	json_t *j;
	int rc;

	if (req->body_len == 0) {
		http_respond_error(ex, 400, "vm.create needs a JSON body with the VM configuration");
		return 0;
	}
	j = json_loadb(req->body, req->body_len, 0, &jerr);
	if (!j) {
		http_respond_error(ex, 400, "bad JSON at line %d column %d: %s", jerr.line,
				   jerr.column, jerr.text);
		return 0;
	}
	rc = vm_config_from_json(j, &cfg, err, sizeof(err));
	json_decref(j);
	if (rc < 0) {
		http_respond_error(ex, vmm_api_status(rc), "%s", err);
		return 0;
	}
	rc = vmm_vm_create(api->vmm, &cfg, err, sizeof(err));
	vm_config_free(&cfg);
	reply_rc(ex, rc, err);
	return 0;
}

#define SIMPLE_VERB(fname, call)                                                               \
	static int fname(struct vmm_api *api, const struct http_request *req,                  \
			 struct http_exchange *ex)                                             \
	{                                                                                      \
		char err[512] = "";                                                            \
		(void)req;                                                                     \
		reply_rc(ex, call(api->vmm, err, sizeof(err)), err);                          \
		return 0;                                                                      \
	}

SIMPLE_VERB(r_boot, vmm_vm_boot)
SIMPLE_VERB(r_pause, vmm_vm_pause)
SIMPLE_VERB(r_resume, vmm_vm_resume)
SIMPLE_VERB(r_shutdown, vmm_vm_shutdown)
SIMPLE_VERB(r_reboot, vmm_vm_reboot)
SIMPLE_VERB(r_delete, vmm_vm_delete)

static int r_snapshot(struct vmm_api *api, const struct http_request *req, struct http_exchange *ex)
{
	char err[512] = "";
	json_error_t jerr;
	json_t *j = json_loadb(req->body, req->body_len, 0, &jerr);
	const char *url;

	if (!j || !json_is_object(j)) {
		http_respond_error(ex, 400, "vm.snapshot needs a JSON object {\"destination_url\": \"file:///DIR\"}");
		json_decref(j);
		return 0;
	}
	url = json_string_value(json_object_get(j, "destination_url"));
	if (!url || json_object_size(j) != 1) {
		http_respond_error(ex, 400, "vm.snapshot takes exactly {\"destination_url\": \"file:///DIR\"}");
		json_decref(j);
		return 0;
	}
	char id[33];
	int rc = vmm_vm_snapshot(api->vmm, url, id, err, sizeof(err));
	if (rc == 0 && id[0]) {
		/* A store snapshot: its id (a tag may not have been given). */
		json_t *body = json_pack("{s:s}", "id", id);
		http_respond_json(ex, 200, body);
		json_decref(body);
	} else {
		reply_rc(ex, rc, err);
	}
	json_decref(j);
	return 0;
}

/* Parses vm.restore's optional "config": the safe changes (agent.socket,
 * serial, hostname) in vm.create's schema. Returns 0 or a 400 already sent. */
static int restore_overrides(const json_t *val, struct vm_config *over, struct vm_restore_opts *o,
			     struct http_exchange *ex)
{
	char err[512] = "";
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)(uintptr_t)val, k, v) {
		if (strcmp(k, "agent") && strcmp(k, "serial") && strcmp(k, "hostname")) {
			http_respond_error(ex, 400,
					   "vm.restore: config.%s cannot change on restore (only agent, "
					   "serial and hostname can)",
					   k);
			return -EINVAL;
		}
	}
	json_t *full = json_deep_copy(val);
	if (!full) {
		http_respond_error(ex, 500, "out of memory");
		return -ENOMEM;
	}
	/* The payload is already in memory: a placeholder satisfies validation. */
	json_object_set_new(full, "payload", json_pack("{s:s}", "kernel", "-"));
	int rc = vm_config_from_json(full, over, err, sizeof(err));
	json_decref(full);
	if (rc < 0) {
		http_respond_error(ex, 400, "vm.restore: config: %s", err);
		return rc;
	}
	o->agent_socket = json_object_get(val, "agent") ? over->agent_socket : NULL;
	o->set_serial = json_object_get(val, "serial") != NULL;
	o->serial_mode = over->serial_mode;
	o->serial_path = over->serial_path;
	o->hostname = over->hostname;
	return 0;
}

static int r_restore(struct vmm_api *api, const struct http_request *req, struct http_exchange *ex)
{
	char err[512] = "";
	json_error_t jerr;
	json_t *j = json_loadb(req->body, req->body_len, 0, &jerr);
	const json_t *cfg = NULL;
	const char *key, *url = NULL;
	struct vm_restore_opts opts = { 0 };
	struct vm_config over;
	json_t *val;
	bool resume = false;

	if (!j || !json_is_object(j)) {
		http_respond_error(ex, 400,
				   "vm.restore needs a JSON object {\"source_url\": \"file:///DIR\"}");
		json_decref(j);
		return 0;
	}
	json_object_foreach(j, key, val) {
		if (!strcmp(key, "source_url") && json_is_string(val)) {
			url = json_string_value(val);
		} else if (!strcmp(key, "resume") && json_is_boolean(val)) {
			resume = json_is_true(val);
		} else if (!strcmp(key, "prefault") && json_is_boolean(val)) {
			/* Cloud Hypervisor's option: accepted; memory maps lazily by design. */
		} else if (!strcmp(key, "config") && json_is_object(val)) {
			cfg = val;
		} else {
			http_respond_error(ex, 400, "vm.restore: unknown or mistyped field %s", key);
			json_decref(j);
			return 0;
		}
	}
	if (!url) {
		http_respond_error(ex, 400, "vm.restore needs source_url");
		json_decref(j);
		return 0;
	}
	if (cfg && restore_overrides(cfg, &over, &opts, ex) < 0) {
		json_decref(j);
		return 0;
	}
	reply_rc(ex, vmm_vm_restore(api->vmm, url, cfg ? &opts : NULL, resume, err, sizeof(err)),
		 err);
	if (cfg)
		vm_config_free(&over);
	json_decref(j);
	return 0;
}

static int r_vmm_shutdown(struct vmm_api *api, const struct http_request *req,
			  struct http_exchange *ex)
{
	(void)req;
	http_respond(ex, 204, NULL, NULL, 0);
	if (api->on_shutdown)
		api->on_shutdown(api->arg);
	return 0;
}

static const struct route routes[] = {
	{ "vmm.ping", V_GET, r_ping },
	{ "vmm.shutdown", V_PUT, r_vmm_shutdown },
	{ "vm.info", V_GET, r_info },
	{ "vm.counters", V_GET, r_counters },
	{ "vm.create", V_PUT, r_create },
	{ "vm.boot", V_PUT, r_boot },
	{ "vm.pause", V_PUT, r_pause },
	{ "vm.resume", V_PUT, r_resume },
	{ "vm.shutdown", V_PUT, r_shutdown },
	{ "vm.reboot", V_PUT, r_reboot },
	{ "vm.delete", V_PUT, r_delete },
	{ "vm.snapshot", V_PUT, r_snapshot },
	{ "vm.restore", V_PUT, r_restore },
};

void vmm_api_handle(void *arg, struct http_exchange *ex)
{
	struct vmm_api *api = arg;
	const struct http_request *req = http_exchange_request(ex);
	const char *name;

	if (strncmp(req->path, API_PREFIX, strlen(API_PREFIX)) != 0) {
		http_respond_error(ex, 404, "unknown path %s (the API lives under %s)", req->path,
				   API_PREFIX);
		return;
	}
	name = req->path + strlen(API_PREFIX);
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const struct route *r = &routes[i];
		if (strcmp(name, r->name) != 0)
			continue;
		const char *want = r->verb == V_GET ? "GET" : "PUT";
		if (strcmp(req->method, want) != 0) {
			http_respond_error(ex, 405, "%s takes %s, not %s", req->path, want, req->method);
			return;
		}
		log_debug("api: %s %s", req->method, req->path);
		r->fn(api, req, ex);
		return;
	}
	http_respond_error(ex, 404, "unknown path %s", req->path);
}

int vmm_api_start(struct vmm *vmm, struct loop *loop, const char *socket_path,
		  void (*on_shutdown)(void *arg), void *arg, struct vmm_api **out)
{
	struct http_server_config cfg = { .max_body_bytes = 1 << 20 };
	struct vmm_api *api = calloc(1, sizeof(*api));
	int rc;

	if (!api)
		return -ENOMEM;
	api->vmm = vmm;
	api->on_shutdown = on_shutdown;
	api->arg = arg;
	rc = http_server_listen(loop, socket_path, &cfg, vmm_api_handle, api, &api->srv);
	if (rc < 0) {
		free(api);
		return rc;
	}
	*out = api;
	return 0;
}

void vmm_api_stop(struct vmm_api *api)
{
	if (!api)
		return;
	http_server_close(api->srv);
	free(api);
}
