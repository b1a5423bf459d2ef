/* guest/agent/ops.c - the ops (ping, eval, load, call, info) and the ready
 * event. Each op is a native function that dispatch.c runs with duk_pcall,
 * so the request is at index 0 of its own frame; a throw becomes an
 * ok:false reply. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>

#include "agent.h"

/* Hidden stash key of the array of loaded script names. */
#define STASH_LOADED "loaded"

/* Monotonic clock in nanoseconds (one clock_gettime). */
uint64_t agent_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Returns the agent that owns the heap of ctx. */
struct agent *agent_of(duk_context *ctx)
{
	return (struct agent *)(void *)((char *)agent_js_of(ctx) - offsetof(struct agent, js));
}

/* Throws {name: "ProtocolError", message: msg} (a plain object, no stack). */
static duk_ret_t throw_protocol(duk_context *ctx, const char *msg)
{
	duk_push_object(ctx);
	duk_push_string(ctx, "ProtocolError");
	duk_put_prop_string(ctx, -2, "name");
	duk_push_string(ctx, msg);
	duk_put_prop_string(ctx, -2, "message");
	return duk_throw(ctx);
}

/* Pushes request member key (request at index 0); throws ProtocolError
 * unless it is a string, or absent when optional. Returns 1 if present. */
static int get_string_arg(duk_context *ctx, const char *key, int optional)
{
	char msg[96];

	duk_get_prop_string(ctx, 0, key);
	if (duk_is_string(ctx, -1))
		return 1;
	if (optional && duk_is_undefined(ctx, -1))
		return 0;
	snprintf(msg, sizeof(msg), "\"%s\" must be a string", key);
	return throw_protocol(ctx, msg);
}

/* [req] -> ["pong"]. */
static duk_ret_t op_ping(duk_context *ctx)
{
	duk_push_string(ctx, "pong");
	return 1;
}

/* [req] -> [completion value]: indirect eval in the global scope. */
static duk_ret_t op_eval(duk_context *ctx)
{
	get_string_arg(ctx, "code", 0);
	duk_eval(ctx);
	return 1;
}

/* Pushes an object (without prototype, so nothing is inherited) mapping the
 * global object's enumerable own function properties to their values. */
static void push_global_functions(duk_context *ctx)
{
	duk_push_bare_object(ctx);
	duk_push_global_object(ctx);
	duk_enum(ctx, -1, DUK_ENUM_OWN_PROPERTIES_ONLY);
	while (duk_next(ctx, -1, 1)) { /* [map global enum key value] */
		if (duk_is_function(ctx, -1))
			duk_put_prop(ctx, -5);
		else
			duk_pop_2(ctx);
	}
	duk_pop_2(ctx);
}

/* Pushes the stash array of loaded script names, creating it if needed. */
static void push_loaded(duk_context *ctx)
{
	duk_push_global_stash(ctx);
	if (!duk_get_prop_string(ctx, -1, STASH_LOADED)) {
		duk_pop(ctx);
		duk_push_array(ctx);
		duk_dup_top(ctx);
		duk_put_prop_string(ctx, -3, STASH_LOADED);
	}
	duk_remove(ctx, -2);
}

/* [req] -> [{functions, name}]: runs a script once as global (program)
 * code; functions lists global functions that are new or were redefined. */
static duk_ret_t op_load(duk_context *ctx)
{
	duk_uarridx_t nfn = 0;
	char defname[32];

	get_string_arg(ctx, "source", 0); /* 1 */
	if (!get_string_arg(ctx, "name", 1)) { /* 2 */
		duk_pop(ctx);
		push_loaded(ctx);
		snprintf(defname, sizeof(defname), "script-%lu",
			 (unsigned long)duk_get_length(ctx, -1) + 1);
		duk_pop(ctx);
		duk_push_string(ctx, defname);
	}
	push_global_functions(ctx); /* 3: before */
	duk_dup(ctx, 1);
	duk_dup(ctx, 2);
	duk_compile(ctx, 0);
	duk_call(ctx, 0);
	duk_pop(ctx);

	duk_push_object(ctx); /* 4: result */
	duk_push_array(ctx); /* 5: functions */
	duk_push_global_object(ctx); /* 6 */
	duk_enum(ctx, 6, DUK_ENUM_OWN_PROPERTIES_ONLY); /* 7 */
	while (duk_next(ctx, 7, 1)) { /* [... key value] */
		if (duk_is_function(ctx, -1)) {
			duk_dup(ctx, -2);
			duk_get_prop(ctx, 3);
			if (!duk_strict_equals(ctx, -1, -2)) {
				duk_dup(ctx, -3);
				duk_put_prop_index(ctx, 5, nfn++);
			}
			duk_pop(ctx);
		}
		duk_pop_2(ctx);
	}
	duk_pop_2(ctx);
	duk_put_prop_string(ctx, 4, "functions");
	duk_dup(ctx, 2);
	duk_put_prop_string(ctx, 4, "name");

	push_loaded(ctx);
	duk_dup(ctx, 2);
	duk_put_prop_index(ctx, -2, (duk_uarridx_t)duk_get_length(ctx, -2));
	duk_pop(ctx);
	return 1;
}

/* [req] -> [return value]: calls the global function named by "fn" (a
 * dotted path from the global object; this is the object holding it). */
static duk_ret_t op_call(duk_context *ctx)
{
	const char *fn, *p, *dot;
	duk_size_t fnlen;
	duk_idx_t nargs = 0;

	get_string_arg(ctx, "fn", 0); /* 1 */
	fn = duk_get_lstring(ctx, 1, &fnlen);
	duk_push_global_object(ctx); /* 2: holder */
	duk_push_global_object(ctx); /* 3: value */
	for (p = fn;; p = dot + 1) {
		dot = memchr(p, '.', fnlen - (size_t)(p - fn));
		size_t seglen = dot ? (size_t)(dot - p) : fnlen - (size_t)(p - fn);

		if (seglen == 0)
			return throw_protocol(ctx, "\"fn\" must be a name or a dotted path");
		if (p != fn) {
			if (duk_is_null_or_undefined(ctx, 3))
				return duk_error(ctx, DUK_ERR_REFERENCE_ERROR, "%.*s is not defined",
						 (int)(p - 1 - fn), fn);
			duk_copy(ctx, 3, 2);
		}
		duk_get_prop_lstring(ctx, 2, p, seglen);
		duk_replace(ctx, 3);
		if (!dot)
			break;
	}
	if (duk_is_undefined(ctx, 3))
		return duk_error(ctx, DUK_ERR_REFERENCE_ERROR, "%s is not defined", fn);
	if (!duk_is_callable(ctx, 3))
		return duk_error(ctx, DUK_ERR_TYPE_ERROR, "%s is not a function", fn);

	duk_get_prop_string(ctx, 0, "args"); /* 4 */
	duk_dup(ctx, 3);
	duk_dup(ctx, 2);
	if (duk_is_array(ctx, 4)) {
		duk_size_t n = duk_get_length(ctx, 4);

		if (n > 100000)
			return duk_error(ctx, DUK_ERR_RANGE_ERROR, "too many arguments (%lu)",
					 (unsigned long)n);
		duk_require_stack(ctx, (duk_idx_t)n);
		for (duk_size_t i = 0; i < n; i++)
			duk_get_prop_index(ctx, 4, (duk_uarridx_t)i);
		nargs = (duk_idx_t)n;
	} else if (!duk_is_undefined(ctx, 4)) {
		duk_dup(ctx, 4);
		nargs = 1;
	}
	duk_call_method(ctx, nargs);
	return 1;
}

/* Adds the fields shared by the ready event and info to the object on top. */
static void put_identity(duk_context *ctx, const struct agent *a)
{
	duk_push_string(ctx, AGENT_NAME);
	duk_put_prop_string(ctx, -2, "agent");
	duk_push_int(ctx, AGENT_PROTO_VERSION);
	duk_put_prop_string(ctx, -2, "version");
	duk_push_int(ctx, a->pid);
	duk_put_prop_string(ctx, -2, "pid");
	duk_push_string(ctx, a->boot_id);
	duk_put_prop_string(ctx, -2, "boot_id");
	duk_push_string(ctx, a->hostname);
	duk_put_prop_string(ctx, -2, "hostname");
}

/* Sets obj[key] = v on the object on top of the stack. */
static void put_number(duk_context *ctx, const char *key, double v)
{
	duk_push_number(ctx, v);
	duk_put_prop_string(ctx, -2, key);
}

/* [req] -> [info object] (see docs/agent-protocol.md). */
static duk_ret_t op_info(duk_context *ctx)
{
	const struct agent *a = agent_of(ctx);
	struct sysinfo si;

	duk_push_object(ctx);
	put_identity(ctx, a);
	put_number(ctx, "uptime_ms", (double)((agent_now_ns() - a->start_ns) / 1000000u));
	put_number(ctx, "requests", (double)a->requests);
	/* VM identity (forkvm's identity page): the generation changes at
	 * every restore; monotonic_ns is the guest clock (never goes back). */
	put_number(ctx, "generation", a->identity ? (double)a->identity->generation : 0);
	put_number(ctx, "reseeds", (double)a->reseeds);
	put_number(ctx, "monotonic_ns", (double)agent_now_ns());
	if (a->identity) {
		char cid[sizeof(a->identity->clone_id)];
		for (size_t i = 0; i < sizeof(cid); i++)
			cid[i] = a->identity->clone_id[i];
		cid[sizeof(cid) - 1] = '\0';
		duk_push_string(ctx, cid);
	} else {
		duk_push_string(ctx, "");
	}
	duk_put_prop_string(ctx, -2, "clone_id");
	duk_push_object(ctx);
	put_number(ctx, "js_heap_bytes", (double)a->js.heap.live);
	put_number(ctx, "js_heap_peak_bytes", (double)a->js.heap.peak);
	put_number(ctx, "js_heap_reserved_bytes", (double)a->js.heap.reserved);
	if (sysinfo(&si) == 0) {
		put_number(ctx, "ram_total_bytes", (double)si.totalram * si.mem_unit);
		put_number(ctx, "ram_free_bytes", (double)si.freeram * si.mem_unit);
	}
	duk_put_prop_string(ctx, -2, "memory");
	push_loaded(ctx);
	duk_put_prop_string(ctx, -2, "loaded");
	return 1;
}

/* Safe-call body: pushes the ready event. */
static duk_ret_t push_ready(duk_context *ctx, void *udata)
{
	duk_push_object(ctx);
	duk_push_string(ctx, "ready");
	duk_put_prop_string(ctx, -2, "event");
	put_identity(ctx, udata);
	return 1;
}

/* Sends the {"event":"ready"} frame. Returns 0 or -errno. */
int agent_send_ready(struct agent *a)
{
	if (duk_safe_call(a->js.ctx, push_ready, a, 0, 1) != DUK_EXEC_SUCCESS) {
		duk_pop(a->js.ctx);
		return -ENOMEM;
	}
	return agent_send_event(a);
}

static const struct {
	const char *name;
	duk_c_function fn;
} ops[] = {
	{ "ping", op_ping }, { "eval", op_eval }, { "call", op_call },
	{ "load", op_load }, { "info", op_info },
};

/* Returns the handler of op name, or NULL for an unknown op. */
duk_c_function agent_op_find(const char *name)
{
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (strcmp(name, ops[i].name) == 0)
			return ops[i].fn;
	}
	return NULL;
}
