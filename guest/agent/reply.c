/* guest/agent/reply.c - builds reply and event frames: the JSON text comes
 * from Duktape's JSON.stringify, the request id is spliced in raw so that it
 * is echoed byte for byte. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

static const char last_resort[] =
	"{\"ok\":false,\"error\":{\"name\":\"InternalError\","
	"\"message\":\"the agent could not encode its reply\"}}";

/* Sends the JSON object text json (from '{') as a frame; when with_id, the
 * member "id" (raw id text, NULL for null) is put first. Returns 0 or -errno. */
static int send_json(struct agent *a, int with_id, const char *id, size_t idlen,
		     const char *json, size_t len)
{
	struct iovec iov[4];
	size_t fixed_len = 0;
	int oom = 0, n = 0, rc;
	char *fixed = agent_utf8_fix(json, len, &fixed_len, &oom);

	if (oom)
		return -ENOMEM;
	if (fixed) {
		json = fixed;
		len = fixed_len;
	}
	if (with_id) {
		if (!id) {
			id = "null";
			idlen = 4;
		}
		iov[n].iov_base = (void *)(uintptr_t) "{\"id\":";
		iov[n++].iov_len = 6;
		iov[n].iov_base = (void *)(uintptr_t)id;
		iov[n++].iov_len = idlen;
		iov[n].iov_base = (void *)(uintptr_t) ",";
		iov[n++].iov_len = 1;
		json++; /* skip '{': the reply object always has members */
		len--;
	}
	iov[n].iov_base = (void *)(uintptr_t)json;
	iov[n++].iov_len = len;
	rc = agent_out_frame(a->out_fd, iov, n);
	free(fixed);
	return rc;
}

/* Safe-call body: [value] -> [JSON text of {"ok":true,"result":value}]. */
static duk_ret_t enc_result(duk_context *ctx, void *udata)
{
	duk_idx_t v = duk_get_top(ctx) - 1; /* safe calls share the caller's frame */
	const char *type = NULL;

	(void)udata;
	if (duk_is_undefined(ctx, v))
		type = "undefined";
	else if (duk_is_function(ctx, v))
		type = "function";
	else if (duk_is_symbol(ctx, v))
		type = "symbol";
	duk_push_object(ctx);
	duk_push_true(ctx);
	duk_put_prop_string(ctx, -2, "ok");
	duk_dup(ctx, v);
	duk_put_prop_string(ctx, -2, "result");
	if (type) {
		duk_push_string(ctx, type);
		duk_put_prop_string(ctx, -2, "type");
	}
	duk_json_encode(ctx, -1);
	return 1;
}

static duk_ret_t enc_value(duk_context *ctx, void *udata)
{
	(void)udata;
	duk_json_encode(ctx, -1);
	return 1;
}

/* Safe-call body: [thrown] -> [JSON text of {"ok":false,"error":{...}}]. */
static duk_ret_t enc_error(duk_context *ctx, void *udata)
{
	duk_idx_t v = duk_get_top(ctx) - 1; /* safe calls share the caller's frame */
	duk_idx_t reply = v + 1, err = v + 2;

	(void)udata;
	duk_push_object(ctx); /* reply */
	duk_push_false(ctx);
	duk_put_prop_string(ctx, reply, "ok");
	duk_push_object(ctx); /* err */
	if (duk_is_object(ctx, v)) {
		duk_get_prop_string(ctx, v, "name");
		if (duk_is_null_or_undefined(ctx, -1)) {
			duk_pop(ctx);
			duk_push_string(ctx, "Error");
		}
		duk_safe_to_string(ctx, -1);
		duk_put_prop_string(ctx, err, "name");
		duk_get_prop_string(ctx, v, "message");
		if (duk_is_undefined(ctx, -1) && !duk_is_error(ctx, v)) {
			/* a thrown plain object: show it */
			duk_pop(ctx);
			duk_dup(ctx, v);
			if (duk_safe_call(ctx, enc_value, NULL, 1, 1) != DUK_EXEC_SUCCESS ||
			    !duk_is_string(ctx, -1)) {
				duk_pop(ctx);
				duk_dup(ctx, v);
			}
		} else if (duk_is_undefined(ctx, -1)) {
			duk_pop(ctx);
			duk_push_string(ctx, "");
		}
		duk_safe_to_string(ctx, -1);
		duk_put_prop_string(ctx, err, "message");
		duk_get_prop_string(ctx, v, "stack");
		if (duk_is_string(ctx, -1))
			duk_put_prop_string(ctx, err, "stack");
		else
			duk_pop(ctx);
	} else {
		duk_push_string(ctx, "Error");
		duk_put_prop_string(ctx, err, "name");
		duk_dup(ctx, v);
		duk_safe_to_string(ctx, -1);
		duk_put_prop_string(ctx, err, "message");
	}
	duk_put_prop_string(ctx, reply, "error");
	duk_json_encode(ctx, reply);
	return 1;
}

/* Pops the thrown value and sends it as an ok:false reply. Returns 0 or -errno. */
int agent_reply_thrown(struct agent *a, const char *id, size_t idlen)
{
	duk_context *ctx = a->js.ctx;
	const char *json;
	duk_size_t len;
	int rc;

	if (duk_safe_call(ctx, enc_error, NULL, 1, 1) != DUK_EXEC_SUCCESS ||
	    !(json = duk_get_lstring(ctx, -1, &len))) {
		json = last_resort;
		len = sizeof(last_resort) - 1;
	}
	rc = send_json(a, 1, id, idlen, json, len);
	if (rc == -EMSGSIZE) /* a giant message or stack */
		rc = send_json(a, 1, id, idlen, last_resort, sizeof(last_resort) - 1);
	duk_pop(ctx);
	return rc;
}

struct err_desc {
	const char *name;
	const char *msg;
};

static duk_ret_t push_err(duk_context *ctx, void *udata)
{
	const struct err_desc *d = udata;

	duk_push_object(ctx);
	duk_push_string(ctx, d->name);
	duk_put_prop_string(ctx, -2, "name");
	duk_push_string(ctx, d->msg);
	duk_put_prop_string(ctx, -2, "message");
	return 1;
}

/* Sends an ok:false reply with error name and message. Returns 0 or -errno. */
int agent_reply_error(struct agent *a, const char *id, size_t idlen, const char *name,
		      const char *msg)
{
	struct err_desc d = { .name = name, .msg = msg };

	/* on failure the thrown value (an out-of-memory error) is reported */
	(void)duk_safe_call(a->js.ctx, push_err, &d, 0, 1);
	return agent_reply_thrown(a, id, idlen);
}

/* Pops a result value and sends the ok:true reply. Returns 0 or -errno. */
int agent_reply_result(struct agent *a, const char *id, size_t idlen)
{
	duk_context *ctx = a->js.ctx;
	const char *json;
	duk_size_t len;
	int rc;

	if (duk_safe_call(ctx, enc_result, NULL, 1, 1) != DUK_EXEC_SUCCESS)
		return agent_reply_thrown(a, id, idlen);
	json = duk_get_lstring(ctx, -1, &len);
	rc = send_json(a, 1, id, idlen, json, len);
	duk_pop(ctx);
	if (rc == -EMSGSIZE) {
		char msg[128];

		snprintf(msg, sizeof(msg), "the result (%zu bytes of JSON) exceeds the %u-byte frame limit",
			 (size_t)len, AGENT_FRAME_MAX);
		rc = agent_reply_error(a, id, idlen, "RangeError", msg);
	}
	return rc;
}

/* Pops an event object and sends it as a frame. Returns 0 or -errno. */
int agent_send_event(struct agent *a)
{
	duk_context *ctx = a->js.ctx;
	const char *json;
	duk_size_t len;
	int rc;

	if (duk_safe_call(ctx, enc_value, NULL, 1, 1) != DUK_EXEC_SUCCESS ||
	    !(json = duk_get_lstring(ctx, -1, &len))) {
		duk_pop(ctx);
		return -ENOMEM;
	}
	rc = send_json(a, 0, NULL, 0, json, len);
	duk_pop(ctx);
	return rc;
}
