/* guest/agent/dispatch.c - one request frame: parse it, find the id and the
 * op, run the op protected, and send the reply (reply.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"

struct frame_text {
	const char *p;
	size_t n;
};

/* Safe-call body: pushes the parsed request (JSON.parse of the frame). */
static duk_ret_t parse_req(duk_context *ctx, void *udata)
{
	const struct frame_text *f = udata;

	duk_push_lstring(ctx, f->p, f->n);
	duk_json_decode(ctx, -1);
	return 1;
}

struct handling {
	struct agent *a;
	const char *payload;
	size_t len;
	const char *raw_id; /* id text inside payload, once known */
	size_t raw_idlen;
	int replied; /* a reply was attempted; rc is its result */
	int rc;
};

/* Sets the request id from the payload text (or from the parsed request,
 * pushed on the stack, when the key is spelled with escapes). Returns 0, or
 * -EINVAL if the id is neither number, string nor null. */
static int request_id(duk_context *ctx, duk_idx_t req, struct handling *h, const char **id,
		      size_t *idlen)
{
	duk_size_t n;

	if (agent_json_member(h->payload, h->len, "id", id, idlen) == 1) {
		if (*idlen == 4 && memcmp(*id, "null", 4) == 0) {
			*id = NULL;
			return 0;
		}
		if ((*id)[0] != '"' && (*id)[0] != '-' && ((*id)[0] < '0' || (*id)[0] > '9'))
			return -EINVAL;
		h->raw_id = *id;
		h->raw_idlen = *idlen;
		return 0;
	}
	*id = NULL;
	duk_get_prop_string(ctx, req, "id");
	if (duk_is_number(ctx, -1) || duk_is_string(ctx, -1)) {
		duk_json_encode(ctx, -1);
		*id = duk_get_lstring(ctx, -1, &n);
		*idlen = n;
		return 0;
	}
	return duk_is_null_or_undefined(ctx, -1) ? 0 : -EINVAL;
}

/* Safe-call body of agent_handle(): parses, dispatches and replies. */
static duk_ret_t handle_body(duk_context *ctx, void *udata)
{
	struct handling *h = udata;
	struct frame_text f = { .p = h->payload, .n = h->len };
	duk_idx_t req = duk_get_top(ctx);
	const char *id = NULL, *op;
	duk_c_function fn;
	size_t idlen = 0;
	char msg[160];

	h->replied = 1;
	if (duk_safe_call(ctx, parse_req, &f, 0, 1) != DUK_EXEC_SUCCESS) {
		snprintf(msg, sizeof(msg), "request is not valid JSON (%s)",
			 duk_safe_to_string(ctx, -1));
		h->rc = agent_reply_error(h->a, NULL, 0, "ProtocolError", msg);
		return 0;
	}
	if (!duk_is_object(ctx, req) || duk_is_array(ctx, req)) {
		h->rc = agent_reply_error(h->a, NULL, 0, "ProtocolError",
					  "request must be a JSON object");
		return 0;
	}
	h->replied = 0;
	if (request_id(ctx, req, h, &id, &idlen) < 0) {
		h->replied = 1;
		h->rc = agent_reply_error(h->a, NULL, 0, "ProtocolError",
					  "\"id\" must be a number, a string or null");
		return 0;
	}
	duk_get_prop_string(ctx, req, "op");
	op = duk_get_string(ctx, -1);
	h->replied = 1;
	if (!op) {
		h->rc = agent_reply_error(h->a, id, idlen, "ProtocolError",
					  "request has no \"op\" string");
		return 0;
	}
	fn = agent_op_find(op);
	if (!fn) {
		snprintf(msg, sizeof(msg), "unknown op \"%.64s\"", op);
		h->rc = agent_reply_error(h->a, id, idlen, "ProtocolError", msg);
		return 0;
	}
	h->replied = 0;
	duk_push_c_function(ctx, fn, 1);
	duk_dup(ctx, req);
	h->replied = 1;
	if (duk_pcall(ctx, 1) == DUK_EXEC_SUCCESS)
		h->rc = agent_reply_result(h->a, id, idlen);
	else
		h->rc = agent_reply_thrown(h->a, id, idlen);
	return 0;
}

/* Handles one request frame and sends its reply. Returns 0 or -errno. */
int agent_handle(struct agent *a, const char *payload, size_t len)
{
	duk_context *ctx = a->js.ctx;
	duk_idx_t top = duk_get_top(ctx);
	struct handling h = { .a = a, .payload = payload, .len = len };

	a->requests++;
	/* Everything runs protected: even the agent's own property reads can
	 * throw (out of memory, or a getter a script put on Object.prototype). */
	if (duk_safe_call(ctx, handle_body, &h, 0, 1) != DUK_EXEC_SUCCESS && !h.replied)
		h.rc = agent_reply_thrown(a, h.raw_id, h.raw_idlen);
	duk_set_top(ctx, top);
	return h.rc;
}
