/* common/http_exchange.c - exchanges (one request awaiting its response),
 * the hub that carries deferred responses back to the loop thread, and
 * response rendering; http_respond*() may run on any thread. See
 * http_internal.h for the design. */
#include "http_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/util.h"

/* ---------------------------------------------------------------- hub */

int http_hub_create(bool with_eventfd, struct http_hub **out)
{
	struct http_hub *hub = calloc(1, sizeof(*hub));
	int rc;

	if (!hub)
		return -ENOMEM;
	hub->refs = 1;
	hub->efd = -1;
	rc = -pthread_mutex_init(&hub->mu, NULL);
	if (rc < 0)
		goto err_free;
	if (with_eventfd) {
		hub->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (hub->efd < 0) {
			rc = -errno;
			goto err_mutex;
		}
	}
	*out = hub;
	return 0;
err_mutex:
	pthread_mutex_destroy(&hub->mu);
err_free:
	free(hub);
	return rc;
}

/* Takes a reference on hub. */
static void hub_ref(struct http_hub *hub)
{
	pthread_mutex_lock(&hub->mu);
	hub->refs++;
	pthread_mutex_unlock(&hub->mu);
}

void http_hub_unref(struct http_hub *hub)
{
	bool last;

	pthread_mutex_lock(&hub->mu);
	last = --hub->refs == 0;
	pthread_mutex_unlock(&hub->mu);
	if (!last)
		return;
	if (hub->efd >= 0)
		close(hub->efd);
	pthread_mutex_destroy(&hub->mu);
	free(hub);
}

/* ---------------------------------------------------------------- exchanges */

struct http_exchange *http_ex_new(struct http_hub *hub)
{
	struct http_exchange *ex = calloc(1, sizeof(*ex));

	if (!ex)
		return NULL;
	ex->hub = hub;
	hub_ref(hub);
	return ex;
}

void http_ex_free(struct http_exchange *ex)
{
	if (!ex)
		return;
	http_hbuf_free(&ex->url);
	http_hbuf_free(&ex->hdrs);
	http_hbuf_free(&ex->body);
	free(ex->pathq);
	free(ex->resp);
	http_hub_unref(ex->hub);
	free(ex);
}

const char *http_ex_header(const struct http_exchange *ex, const char *name)
{
	const char *p = http_hbuf_data(&ex->hdrs);
	const char *end = p ? p + http_hbuf_len(&ex->hdrs) : NULL;

	while (p && p < end) {
		const char *val = p + strlen(p) + 1;
		if (val >= end)
			break;
		if (!strcasecmp(p, name))
			return val;
		p = val + strlen(val) + 1;
	}
	return NULL;
}

const struct http_request *http_exchange_request(const struct http_exchange *ex)
{
	return &ex->req;
}

const char *http_exchange_header(const struct http_exchange *ex, const char *name)
{
	return http_ex_header(ex, name);
}

/* ---------------------------------------------------------------- responses */

/* True for statuses whose responses carry no body nor Content-Length
 * (RFC 7230 3.3.2: 1xx, 204; 304 per 3.3.3). */
static bool status_bodiless(int status)
{
	return status < 200 || status == 204 || status == 304;
}

/* Renders a complete response into a malloc'd buffer. Returns 0 or -ENOMEM. */
WUR static int render_response(int status, const char *content_type, const char *body, size_t body_len,
			   bool keep_alive, bool http10, bool head, char **out, size_t *out_len)
{
	const char *reason;
	const char *conn_hdr = "";
	char ctype[256] = "";
	char clen[64] = "";
	size_t send_body;
	int hlen;
	char *buf;

	if (status < 100 || status > 999)
		status = 500;
	reason = http_status_str((enum http_status)status);
	if (!reason || reason[0] == '<')
		reason = "Unknown";
	if (!body)
		body_len = 0;
	if (status_bodiless(status)) {
		body_len = 0;
	} else {
		if (content_type || body_len)
			snprintf(ctype, sizeof(ctype), "Content-Type: %s\r\n",
				 content_type ? content_type : "application/octet-stream");
		snprintf(clen, sizeof(clen), "Content-Length: %zu\r\n", body_len);
	}
	if (!keep_alive)
		conn_hdr = "Connection: close\r\n";
	else if (http10)
		conn_hdr = "Connection: keep-alive\r\n";
	send_body = head ? 0 : body_len;
	hlen = snprintf(NULL, 0, "HTTP/1.1 %d %s\r\nServer: forkvm\r\n%s%s%s\r\n", status, reason, ctype, clen,
			conn_hdr);
	if (hlen < 0)
		return -ENOMEM;
	buf = malloc((size_t)hlen + send_body + 1);
	if (!buf)
		return -ENOMEM;
	snprintf(buf, (size_t)hlen + 1, "HTTP/1.1 %d %s\r\nServer: forkvm\r\n%s%s%s\r\n", status, reason, ctype,
		 clen, conn_hdr);
	if (send_body)
		memcpy(buf + hlen, body, send_body);
	buf[(size_t)hlen + send_body] = '\0';
	*out = buf;
	*out_len = (size_t)hlen + send_body;
	return 0;
}

int http_render_error(int status, const char *msg, bool keep_alive, bool http10, bool head, char **out,
		      size_t *out_len)
{
	json_t *obj = json_pack("{s:s}", "error", msg ? msg : "");
	char *text;
	int rc;

	if (!obj)
		return -ENOMEM;
	text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (!text)
		return -ENOMEM;
	rc = render_response(status, "application/json", text, strlen(text), keep_alive, http10, head, out,
			     out_len);
	free(text);
	return rc;
}

/* ---------------------------------------------------------------- responding */

void http_respond(struct http_exchange *ex, int status, const char *content_type, const char *body,
		  size_t body_len)
{
	struct http_hub *hub = ex->hub;
	char *resp = NULL;
	size_t len = 0;
	bool drop;

	if (render_response(status, content_type, body, body_len, ex->keep_alive, ex->http10, ex->head, &resp,
			    &len) < 0) {
		/* Out of memory: the loop thread closes the connection. */
		resp = NULL;
	}
	pthread_mutex_lock(&hub->mu);
	drop = hub->closed;
	if (!drop) {
		ex->resp = resp;
		ex->resp_len = len;
		ex->responded = true;
		if (!ex->in_handler) {
			uint64_t one = 1;
			ex->next = NULL;
			if (hub->done_tail)
				hub->done_tail->next = ex;
			else
				hub->done_head = ex;
			hub->done_tail = ex;
			if (hub->efd >= 0 && write(hub->efd, &one, sizeof(one)) < 0) {
				/* EAGAIN: the counter is saturated, a wake-up is pending */
			}
		}
	}
	pthread_mutex_unlock(&hub->mu);
	if (drop) {
		free(resp);
		http_ex_free(ex);
	}
}

void http_respond_json(struct http_exchange *ex, int status, const json_t *body)
{
	char *text;

	if (!body) {
		http_respond(ex, status, NULL, NULL, 0);
		return;
	}
	text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!text) {
		http_respond_error(ex, 500, "cannot encode the response");
		return;
	}
	http_respond(ex, status, "application/json", text, strlen(text));
	free(text);
}

void http_respond_error(struct http_exchange *ex, int status, const char *fmt, ...)
{
	char *msg = NULL;
	json_t *obj;
	char *text = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	obj = json_pack("{s:s}", "error", msg ? msg : "internal error");
	if (obj)
		text = json_dumps(obj, JSON_COMPACT);
	if (text)
		http_respond(ex, status, "application/json", text, strlen(text));
	else
		http_respond(ex, status, "application/json", "{\"error\":\"out of memory\"}",
			     strlen("{\"error\":\"out of memory\"}"));
	free(text);
	json_decref(obj);
	free(msg);
}
