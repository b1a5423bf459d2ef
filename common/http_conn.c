/* common/http_conn.c - the per-connection state machine: request parsing
 * with http_parser, dispatch to the handler, queueing of responses; shared
 * by the socket server and http_process_raw(). See http_internal.h. */
#include "http_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/util.h"

#define HTTP_DEFAULT_MAX_HEADER (16 * 1024)
#define HTTP_DEFAULT_MAX_BODY (1024 * 1024)
#define HTTP_DEFAULT_MAX_CONNS 64
#define HTTP_DEFAULT_IDLE_MS 30000
#define HTTP_DEFAULT_REQUEST_MS 5000

/* ---------------------------------------------------------------- connections */

static const http_parser_settings conn_settings;

void http_limits_resolve(const struct http_server_config *cfg, struct http_limits *lim)
{
	lim->max_header = cfg && cfg->max_header_bytes ? cfg->max_header_bytes : HTTP_DEFAULT_MAX_HEADER;
	lim->max_body = cfg && cfg->max_body_bytes ? cfg->max_body_bytes : HTTP_DEFAULT_MAX_BODY;
	lim->max_conns = cfg && cfg->max_conns ? cfg->max_conns : HTTP_DEFAULT_MAX_CONNS;
	lim->idle_ms = cfg && cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : HTTP_DEFAULT_IDLE_MS;
	lim->request_ms = cfg && cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms
							     : HTTP_DEFAULT_REQUEST_MS;
	if (lim->request_ms > lim->idle_ms)
		lim->request_ms = lim->idle_ms;
}

void http_conn_init(struct http_conn *c, struct http_server *srv, int fd, const struct http_limits *lim,
		    http_handler *handler, void *arg, struct http_hub *hub)
{
	memset(c, 0, sizeof(*c));
	c->srv = srv;
	c->fd = fd;
	c->lim = lim;
	c->handler = handler;
	c->arg = arg;
	c->hub = hub;
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	c->since = time_mono_ns();
}

void http_conn_release(struct http_conn *c)
{
	http_ex_free(c->cur);
	c->cur = NULL;
	if (c->pending) {
		c->pending->conn = NULL;
		c->pending = NULL;
	}
	http_hbuf_free(&c->in);
	http_hbuf_free(&c->out);
}

/* Appends n response bytes to the output; on ENOMEM the connection dies. */
static void conn_queue(struct http_conn *c, const char *data, size_t n)
{
	if (http_hbuf_append(&c->out, data, n) < 0)
		c->dead = true;
}

/* Answers the request being parsed with an error, then closes. */
static void conn_fail(struct http_conn *c, int status, const char *msg)
{
	char *resp;
	size_t len;

	log_debug("http: fd %d: %d %s", c->fd, status, msg);
	http_ex_free(c->cur);
	c->cur = NULL;
	http_hbuf_free(&c->in);
	c->close_after = true;
	if (http_render_error(status, msg, false, false, false, &resp, &len) < 0) {
		c->dead = true;
		return;
	}
	conn_queue(c, resp, len);
	free(resp);
}

/* Tries to write out; sets dead on a write error. No-op in raw mode. */
static void conn_flush(struct http_conn *c)
{
	if (c->fd < 0)
		return;
	while (http_hbuf_len(&c->out)) {
		ssize_t n = send(c->fd, http_hbuf_data(&c->out), http_hbuf_len(&c->out), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			http_hbuf_consume(&c->out, (size_t)n);
			c->since = time_mono_ns();
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		c->dead = true;
		return;
	}
}

/* True while output waits for the socket to drain (never in raw mode). */
static bool conn_out_blocked(const struct http_conn *c)
{
	return c->fd >= 0 && http_hbuf_len(&c->out) > 0;
}

void http_conn_complete(struct http_conn *c, struct http_exchange *ex)
{
	if (ex->resp)
		conn_queue(c, ex->resp, ex->resp_len);
	else
		c->dead = true;
	if (!ex->keep_alive || ex->resp_close)
		c->close_after = true;
	c->pending = NULL;
	http_ex_free(ex);
	c->since = time_mono_ns();
	if (c->srv)
		http_srv_timer_kick(c->srv, c->since + (uint64_t)c->lim->idle_ms * 1000000ULL);
}

/* Fills in ex->req from the parsed URL, headers and body. Returns 0 or -errno
 * (-EINVAL for an unusable URL). */
WUR static int ex_finalize(struct http_exchange *ex, const http_parser *p)
{
	struct http_parser_url u;
	const char *url = http_hbuf_data(&ex->url);
	size_t ulen = http_hbuf_len(&ex->url);
	size_t plen = 0, qlen = 0;
	const char *path = "/", *query = NULL;

	if (!url || !ulen)
		return -EINVAL;
	http_parser_url_init(&u);
	if (http_parser_parse_url(url, ulen, p->method == HTTP_CONNECT, &u))
		return -EINVAL;
	if (u.field_set & (1 << UF_PATH)) {
		path = url + u.field_data[UF_PATH].off;
		plen = u.field_data[UF_PATH].len;
	} else {
		plen = 1;
	}
	if (u.field_set & (1 << UF_QUERY)) {
		query = url + u.field_data[UF_QUERY].off;
		qlen = u.field_data[UF_QUERY].len;
	}
	ex->pathq = malloc(plen + qlen + 2);
	if (!ex->pathq)
		return -ENOMEM;
	memcpy(ex->pathq, path, plen);
	ex->pathq[plen] = '\0';
	ex->req.path = ex->pathq;
	if (query) {
		memcpy(ex->pathq + plen + 1, query, qlen);
		ex->pathq[plen + 1 + qlen] = '\0';
		ex->req.query = ex->pathq + plen + 1;
	}
	ex->req.method = http_method_str((enum http_method)p->method);
	ex->req.body = http_hbuf_len(&ex->body) ? http_hbuf_data(&ex->body) : "";
	ex->req.body_len = http_hbuf_len(&ex->body);
	ex->req.content_type = http_ex_header(ex, "content-type");
	ex->head = p->method == HTTP_HEAD;
	return 0;
}

/* Hands the completed request to the handler; completes it at once if the
 * handler responded synchronously, else leaves it pending. */
static void conn_dispatch(struct http_conn *c)
{
	struct http_exchange *ex = c->cur;
	bool responded;
	int rc;

	c->cur = NULL;
	if (!ex) {
		conn_fail(c, 500, "internal error");
		return;
	}
	rc = ex_finalize(ex, &c->parser);
	if (rc < 0) {
		http_ex_free(ex);
		conn_fail(c, rc == -EINVAL ? 400 : 500, rc == -EINVAL ? "invalid request URL" : "out of memory");
		return;
	}
	ex->conn = c;
	c->pending = ex;
	pthread_mutex_lock(&c->hub->mu);
	ex->in_handler = true;
	pthread_mutex_unlock(&c->hub->mu);
	c->handler(c->arg, ex);
	pthread_mutex_lock(&c->hub->mu);
	ex->in_handler = false;
	responded = ex->responded;
	pthread_mutex_unlock(&c->hub->mu);
	if (responded)
		http_conn_complete(c, ex);
}

/* Maps a parser error to a response and queues it. */
static void conn_parse_error(struct http_conn *c, enum http_errno e)
{
	if (c->err_status) {
		conn_fail(c, c->err_status, c->err_msg);
		return;
	}
	switch (e) {
	case HPE_HEADER_OVERFLOW:
		conn_fail(c, 431, "request header too large");
		break;
	case HPE_INVALID_TRANSFER_ENCODING:
		conn_fail(c, 501, "unsupported transfer-encoding");
		break;
	default: {
		char msg[128];
		snprintf(msg, sizeof(msg), "malformed request: %s", http_errno_description(e));
		conn_fail(c, 400, msg);
		break;
	}
	}
}

/* Feeds buffered input to the parser; dispatches a request if one completed. */
static void conn_parse(struct http_conn *c)
{
	size_t len = http_hbuf_len(&c->in);
	size_t n = http_parser_execute(&c->parser, &conn_settings, http_hbuf_data(&c->in), len);
	enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);

	if (e == HPE_PAUSED) {
		http_parser_pause(&c->parser, 0);
		http_hbuf_consume(&c->in, n);
		conn_dispatch(c);
		return;
	}
	if (e != HPE_OK) {
		conn_parse_error(c, e);
		return;
	}
	if (n != len) {
		conn_fail(c, 400, "unexpected data after request");
		return;
	}
	http_hbuf_consume(&c->in, n);
}

void http_conn_process(struct http_conn *c)
{
	while (!c->dead) {
		conn_flush(c);
		if (c->dead || conn_out_blocked(c) || c->pending)
			return;
		if (c->srv && c->srv->close_requested)
			return;
		if (c->close_after) {
			c->dead = true;
			return;
		}
		if (!http_hbuf_len(&c->in)) {
			if (c->peer_eof)
				c->dead = true;
			return;
		}
		conn_parse(c);
	}
}

/* ---------------------------------------------------------------- parser callbacks */

/* Sets the error response of the current request and fails the callback. */
static int cb_fail(struct http_conn *c, int status, const char *msg)
{
	c->err_status = status;
	c->err_msg = msg;
	return -1;
}

/* Counts header bytes against the limit. Returns 0 or -1 (431 chosen). */
static int cb_count(struct http_conn *c, size_t n)
{
	c->hdr_bytes += n;
	if (c->hdr_bytes > c->lim->max_header)
		return cb_fail(c, 431, "request header too large");
	return 0;
}

/* on_message_begin: starts a new exchange. */
static int cb_message_begin(http_parser *p)
{
	struct http_conn *c = p->data;

	http_ex_free(c->cur);
	c->cur = http_ex_new(c->hub);
	if (!c->cur)
		return cb_fail(c, 500, "out of memory");
	c->err_status = 0;
	c->hdr_bytes = 16; /* request line overhead */
	c->hdr_state = HDR_NONE;
	c->since = time_mono_ns();
	/* the whole request must now arrive within request_ms */
	if (c->srv)
		http_srv_timer_kick(c->srv, c->since + (uint64_t)c->lim->request_ms * 1000000ULL);
	return 0;
}

/* on_url: accumulates the request target. */
static int cb_url(http_parser *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;

	if (cb_count(c, n))
		return -1;
	if (http_hbuf_append(&c->cur->url, at, n) < 0)
		return cb_fail(c, 500, "out of memory");
	return 0;
}

/* Terminates the header value being accumulated (trailing blanks trimmed). */
WUR static int hdr_end_value(struct http_conn *c)
{
	struct hbuf *h = &c->cur->hdrs;

	while (h->end > h->start + c->val_start && (h->p[h->end - 1] == ' ' || h->p[h->end - 1] == '\t'))
		h->end--;
	return http_hbuf_append(h, "", 1);
}

/* on_header_field: accumulates a header name (possibly in pieces). */
static int cb_header_field(http_parser *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;

	if (cb_count(c, n + (c->hdr_state != HDR_FIELD ? 4 : 0)))
		return -1;
	if (c->hdr_state == HDR_VALUE && hdr_end_value(c) < 0)
		return cb_fail(c, 500, "out of memory");
	c->hdr_state = HDR_FIELD;
	if (http_hbuf_append(&c->cur->hdrs, at, n) < 0)
		return cb_fail(c, 500, "out of memory");
	return 0;
}

/* on_header_value: accumulates a header value (possibly in pieces). */
static int cb_header_value(http_parser *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;

	if (cb_count(c, n))
		return -1;
	if (c->hdr_state != HDR_VALUE) {
		if (http_hbuf_append(&c->cur->hdrs, "", 1) < 0)
			return cb_fail(c, 500, "out of memory");
		c->val_start = http_hbuf_len(&c->cur->hdrs);
		c->hdr_state = HDR_VALUE;
	}
	if (http_hbuf_append(&c->cur->hdrs, at, n) < 0)
		return cb_fail(c, 500, "out of memory");
	return 0;
}

/* on_headers_complete: checks framing and limits before any body is read. */
static int cb_headers_complete(http_parser *p)
{
	struct http_conn *c = p->data;
	struct http_exchange *ex = c->cur;
	const char *te, *expect;

	if (c->hdr_state == HDR_VALUE && hdr_end_value(c) < 0)
		return cb_fail(c, 500, "out of memory");
	if (c->hdr_state == HDR_FIELD && http_hbuf_append(&ex->hdrs, "\0", 2) < 0)
		return cb_fail(c, 500, "out of memory");
	c->hdr_state = HDR_NONE;
	te = http_ex_header(ex, "transfer-encoding");
	if (te && strcasecmp(te, "chunked"))
		return cb_fail(c, 501, "unsupported transfer-encoding");
	if ((p->flags & F_CONTENTLENGTH) && !(p->flags & F_CHUNKED) && p->content_length > c->lim->max_body)
		return cb_fail(c, 413, "request body too large");
	ex->http10 = p->http_major == 1 && p->http_minor == 0;
	expect = http_ex_header(ex, "expect");
	if (expect && !strcasecmp(expect, "100-continue") && !ex->http10 &&
	    ((p->flags & F_CHUNKED) || (p->content_length > 0 && p->content_length != ULLONG_MAX))) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		conn_queue(c, cont, sizeof(cont) - 1);
		conn_flush(c);
	}
	return 0;
}

/* on_body: accumulates the (de-chunked) body within the limit. */
static int cb_body(http_parser *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;
	struct hbuf *b = &c->cur->body;

	if (n > c->lim->max_body || http_hbuf_len(b) > c->lim->max_body - n)
		return cb_fail(c, 413, "request body too large");
	if (http_hbuf_append(b, at, n) < 0)
		return cb_fail(c, 500, "out of memory");
	return 0;
}

/* on_message_complete: pauses the parser so one request is handled at a time. */
static int cb_message_complete(http_parser *p)
{
	struct http_conn *c = p->data;

	c->cur->keep_alive = http_should_keep_alive(p) && !p->upgrade;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings conn_settings = {
	.on_message_begin = cb_message_begin,
	.on_url = cb_url,
	.on_header_field = cb_header_field,
	.on_header_value = cb_header_value,
	.on_headers_complete = cb_headers_complete,
	.on_body = cb_body,
	.on_message_complete = cb_message_complete,
};

/* ---------------------------------------------------------------- raw entry point */

int http_process_raw(const char *raw, size_t len, const struct http_server_config *cfg, http_handler *handler,
		     void *arg, char **out, size_t *out_len, bool *closed)
{
	struct http_limits lim;
	struct http_hub *hub;
	struct http_conn c;
	int rc;

	if (!handler || !out || !out_len || !closed || (!raw && len))
		return -EINVAL;
	http_limits_resolve(cfg, &lim);
	rc = http_hub_create(false, &hub);
	if (rc < 0)
		return rc;
	http_conn_init(&c, NULL, -1, &lim, handler, arg, hub);
	if (http_hbuf_append(&c.in, raw, len) < 0 || http_hbuf_append(&c.out, "", 0) < 0) {
		rc = -ENOMEM;
		goto out;
	}
	http_conn_process(&c);
	*out_len = http_hbuf_len(&c.out);
	*out = malloc(*out_len + 1);
	if (!*out) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(*out, http_hbuf_data(&c.out), *out_len);
	(*out)[*out_len] = '\0';
	*closed = c.dead || c.close_after;
	rc = 0;
out:
	http_conn_release(&c);
	pthread_mutex_lock(&hub->mu);
	hub->closed = true;
	struct http_exchange *done = hub->done_head;
	hub->done_head = hub->done_tail = NULL;
	pthread_mutex_unlock(&hub->mu);
	while (done) {
		struct http_exchange *next = done->next;
		http_ex_free(done);
		done = next;
	}
	http_hub_unref(hub);
	return rc;
}
