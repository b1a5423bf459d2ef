/* common/http.c - see http.h.
 *
 * One connection state machine (struct http_conn) serves both the socket
 * path and http_process_raw(): bytes go into conn->in, conn_process() parses
 * them with http_parser one request at a time (the parser is paused at every
 * message end), hands each request to the handler as an exchange and queues
 * the response in conn->out. Only the socket path flushes conn->out to a fd.
 *
 * Deferred responses: http_respond() may run on any thread. It renders the
 * response bytes into the exchange and, if the handler already returned,
 * queues the exchange on the hub (mutex + eventfd) for the loop thread,
 * which appends it to its connection, or frees it if the connection is gone.
 * The hub is reference-counted (server + each live exchange) so that an
 * exchange answered after http_server_close() is still safe to complete. */
#include "http.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define HTTP_DEFAULT_MAX_HEADER (16 * 1024)
#define HTTP_DEFAULT_MAX_BODY (1024 * 1024)
#define HTTP_DEFAULT_MAX_CONNS 64
#define HTTP_DEFAULT_IDLE_MS 30000
#define HTTP_IN_MAX (64 * 1024)          /* unparsed input buffered per connection */
#define HTTP_READ_CHUNK (16 * 1024)
#define HTTP_CLIENT_MAX_BODY (64u * 1024 * 1024)
#define HTTP_CLIENT_MAX_HEADER (64 * 1024)

/* ---------------------------------------------------------------- buffers */

/* A byte buffer; the valid bytes are p[start, end). */
struct hbuf {
	char *p;
	size_t start;
	size_t end;
	size_t cap;
};

/* Number of valid bytes in b. */
static size_t hbuf_len(const struct hbuf *b)
{
	return b->end - b->start;
}

/* Pointer to the first valid byte of b (NULL if never allocated). */
static char *hbuf_data(const struct hbuf *b)
{
	return b->p ? b->p + b->start : NULL;
}

/* Makes room for extra more bytes (plus a NUL). Returns 0 or -ENOMEM. */
WUR static int hbuf_reserve(struct hbuf *b, size_t extra)
{
	size_t need, cap;
	char *np;

	if (b->start && b->cap - b->end <= extra) {
		memmove(b->p, b->p + b->start, b->end - b->start);
		b->end -= b->start;
		b->start = 0;
	}
	if (extra > SIZE_MAX - 2 - b->end)
		return -ENOMEM;
	need = b->end + extra + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	np = realloc(b->p, cap);
	if (!np)
		return -ENOMEM;
	b->p = np;
	b->cap = cap;
	return 0;
}

/* Appends n bytes and keeps a NUL after the last valid byte. Returns 0 or -ENOMEM. */
WUR static int hbuf_append(struct hbuf *b, const void *data, size_t n)
{
	int rc = hbuf_reserve(b, n);

	if (rc < 0)
		return rc;
	if (n)
		memcpy(b->p + b->end, data, n);
	b->end += n;
	b->p[b->end] = '\0';
	return 0;
}

/* Drops the first n valid bytes. */
static void hbuf_consume(struct hbuf *b, size_t n)
{
	b->start += n;
	if (b->start >= b->end)
		b->start = b->end = 0;
}

/* Frees the storage of b and empties it. */
static void hbuf_free(struct hbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ---------------------------------------------------------------- hub */

struct http_hub {
	pthread_mutex_t mu;
	int refs;                          /* guarded by mu */
	bool closed;                       /* guarded by mu: responses are dropped */
	struct http_exchange *done_head;   /* guarded by mu: answered deferred exchanges */
	struct http_exchange *done_tail;
	int efd;                           /* eventfd signalled on queueing; -1 in raw mode */
};

/* Creates a hub with one reference; with_eventfd for the socket server.
 * Returns 0 or -errno. */
WUR static int hub_create(bool with_eventfd, struct http_hub **out)
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

/* Drops a reference; the last one frees the hub and its eventfd. */
static void hub_unref(struct http_hub *hub)
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

struct http_conn;

struct http_exchange {
	struct http_request req;
	struct http_hub *hub;       /* referenced */
	struct http_conn *conn;     /* loop thread only; NULL once the connection is gone */
	struct hbuf url;
	struct hbuf hdrs;           /* "name\0value\0" pairs */
	struct hbuf body;
	char *pathq;                /* path and query storage */
	bool keep_alive;
	bool http10;                /* HTTP/1.0 request (keep-alive must be echoed) */
	bool head;                  /* HEAD: the response carries no body bytes */
	/* Guarded by hub->mu once dispatched: */
	bool in_handler;            /* the handler has not returned yet */
	bool responded;
	char *resp;                 /* rendered response bytes */
	size_t resp_len;
	bool resp_close;            /* the response says Connection: close */
	struct http_exchange *next; /* hub done list */
};

/* Allocates an empty exchange referencing hub. Returns NULL on ENOMEM. */
static struct http_exchange *ex_new(struct http_hub *hub)
{
	struct http_exchange *ex = calloc(1, sizeof(*ex));

	if (!ex)
		return NULL;
	ex->hub = hub;
	hub_ref(hub);
	return ex;
}

/* Frees ex and drops its hub reference. NULL ok. */
static void ex_free(struct http_exchange *ex)
{
	if (!ex)
		return;
	hbuf_free(&ex->url);
	hbuf_free(&ex->hdrs);
	hbuf_free(&ex->body);
	free(ex->pathq);
	free(ex->resp);
	hub_unref(ex->hub);
	free(ex);
}

/* Looks up header name in the finalised header list of ex, or NULL. */
static const char *ex_header(const struct http_exchange *ex, const char *name)
{
	const char *p = hbuf_data(&ex->hdrs);
	const char *end = p ? p + hbuf_len(&ex->hdrs) : NULL;

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
	return ex_header(ex, name);
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

/* Renders {"error": msg} with status. Returns 0 or -ENOMEM. */
WUR static int render_error(int status, const char *msg, bool keep_alive, bool http10, bool head, char **out,
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

/* ---------------------------------------------------------------- connections */

struct http_limits {
	size_t max_header;
	size_t max_body;
	unsigned max_conns;
	int idle_ms;
};

enum hdr_state { HDR_NONE, HDR_FIELD, HDR_VALUE };

struct http_conn {
	struct http_server *srv;        /* NULL in raw mode */
	struct http_conn *prev, *next;  /* srv->conns */
	int fd;                         /* -1 in raw mode */
	const struct http_limits *lim;
	http_handler *handler;
	void *arg;
	struct http_hub *hub;
	http_parser parser;
	struct hbuf in;                 /* received, not yet parsed */
	struct hbuf out;                /* to be written */
	struct http_exchange *cur;      /* request being parsed */
	struct http_exchange *pending;  /* dispatched, awaiting its response */
	int err_status;                 /* error chosen by a parser callback */
	const char *err_msg;
	size_t hdr_bytes;
	enum hdr_state hdr_state;
	size_t val_start;               /* offset in cur->hdrs of the current value */
	bool close_after;               /* close once out is flushed */
	bool peer_eof;                  /* the peer shut down its side */
	bool dead;                      /* close now */
	uint32_t events;                /* current epoll interest */
	uint64_t since;                 /* start of the current idle period or request (ns) */
};

struct http_server {
	struct loop *loop;
	struct http_limits lim;
	http_handler *handler;
	void *arg;
	struct http_hub *hub;
	int lfd;
	int tfd;
	char *path;
	dev_t dev;
	ino_t ino;
	struct http_conn *conns;
	unsigned nconns;
	uint64_t timer_deadline;        /* armed deadline (ns), 0 when disarmed */
	bool in_cb;                     /* inside one of our loop callbacks */
	bool close_requested;           /* http_server_close() called from a callback */
};

static const http_parser_settings conn_settings;

/* Fills lim from cfg (NULL: all defaults). */
static void limits_resolve(const struct http_server_config *cfg, struct http_limits *lim)
{
	lim->max_header = cfg && cfg->max_header_bytes ? cfg->max_header_bytes : HTTP_DEFAULT_MAX_HEADER;
	lim->max_body = cfg && cfg->max_body_bytes ? cfg->max_body_bytes : HTTP_DEFAULT_MAX_BODY;
	lim->max_conns = cfg && cfg->max_conns ? cfg->max_conns : HTTP_DEFAULT_MAX_CONNS;
	lim->idle_ms = cfg && cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : HTTP_DEFAULT_IDLE_MS;
}

/* Initialises a connection (fd < 0: raw mode, srv NULL). */
static void conn_init(struct http_conn *c, struct http_server *srv, int fd, const struct http_limits *lim,
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

/* Releases what the connection holds (not the fd nor c itself); a pending
 * exchange is orphaned: it is freed when its response arrives. */
static void conn_release(struct http_conn *c)
{
	ex_free(c->cur);
	c->cur = NULL;
	if (c->pending) {
		c->pending->conn = NULL;
		c->pending = NULL;
	}
	hbuf_free(&c->in);
	hbuf_free(&c->out);
}

/* Appends n response bytes to the output; on ENOMEM the connection dies. */
static void conn_queue(struct http_conn *c, const char *data, size_t n)
{
	if (hbuf_append(&c->out, data, n) < 0)
		c->dead = true;
}

/* Answers the request being parsed with an error, then closes. */
static void conn_fail(struct http_conn *c, int status, const char *msg)
{
	char *resp;
	size_t len;

	log_debug("http: fd %d: %d %s", c->fd, status, msg);
	ex_free(c->cur);
	c->cur = NULL;
	hbuf_free(&c->in);
	c->close_after = true;
	if (render_error(status, msg, false, false, false, &resp, &len) < 0) {
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
	while (hbuf_len(&c->out)) {
		ssize_t n = send(c->fd, hbuf_data(&c->out), hbuf_len(&c->out), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			hbuf_consume(&c->out, (size_t)n);
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
	return c->fd >= 0 && hbuf_len(&c->out) > 0;
}

static void srv_timer_kick(struct http_server *srv, uint64_t deadline);

/* Moves the response of ex (answered) onto its connection and frees ex. */
static void conn_complete(struct http_conn *c, struct http_exchange *ex)
{
	if (ex->resp)
		conn_queue(c, ex->resp, ex->resp_len);
	else
		c->dead = true;
	if (!ex->keep_alive || ex->resp_close)
		c->close_after = true;
	c->pending = NULL;
	ex_free(ex);
	c->since = time_mono_ns();
	if (c->srv)
		srv_timer_kick(c->srv, c->since + (uint64_t)c->lim->idle_ms * 1000000ULL);
}

/* Fills in ex->req from the parsed URL, headers and body. Returns 0 or -errno
 * (-EINVAL for an unusable URL). */
WUR static int ex_finalize(struct http_exchange *ex, const http_parser *p)
{
	struct http_parser_url u;
	const char *url = hbuf_data(&ex->url);
	size_t ulen = hbuf_len(&ex->url);
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
	ex->req.body = hbuf_len(&ex->body) ? hbuf_data(&ex->body) : "";
	ex->req.body_len = hbuf_len(&ex->body);
	ex->req.content_type = ex_header(ex, "content-type");
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
		ex_free(ex);
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
		conn_complete(c, ex);
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
	size_t len = hbuf_len(&c->in);
	size_t n = http_parser_execute(&c->parser, &conn_settings, hbuf_data(&c->in), len);
	enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);

	if (e == HPE_PAUSED) {
		http_parser_pause(&c->parser, 0);
		hbuf_consume(&c->in, n);
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
	hbuf_consume(&c->in, n);
}

/* Runs the connection state machine as far as it can go without waiting. */
static void conn_process(struct http_conn *c)
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
		if (!hbuf_len(&c->in)) {
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

	ex_free(c->cur);
	c->cur = ex_new(c->hub);
	if (!c->cur)
		return cb_fail(c, 500, "out of memory");
	c->err_status = 0;
	c->hdr_bytes = 16; /* request line overhead */
	c->hdr_state = HDR_NONE;
	c->since = time_mono_ns();
	return 0;
}

/* on_url: accumulates the request target. */
static int cb_url(http_parser *p, const char *at, size_t n)
{
	struct http_conn *c = p->data;

	if (cb_count(c, n))
		return -1;
	if (hbuf_append(&c->cur->url, at, n) < 0)
		return cb_fail(c, 500, "out of memory");
	return 0;
}

/* Terminates the header value being accumulated (trailing blanks trimmed). */
WUR static int hdr_end_value(struct http_conn *c)
{
	struct hbuf *h = &c->cur->hdrs;

	while (h->end > h->start + c->val_start && (h->p[h->end - 1] == ' ' || h->p[h->end - 1] == '\t'))
		h->end--;
	return hbuf_append(h, "", 1);
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
	if (hbuf_append(&c->cur->hdrs, at, n) < 0)
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
		if (hbuf_append(&c->cur->hdrs, "", 1) < 0)
			return cb_fail(c, 500, "out of memory");
		c->val_start = hbuf_len(&c->cur->hdrs);
		c->hdr_state = HDR_VALUE;
	}
	if (hbuf_append(&c->cur->hdrs, at, n) < 0)
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
	if (c->hdr_state == HDR_FIELD && hbuf_append(&ex->hdrs, "\0", 2) < 0)
		return cb_fail(c, 500, "out of memory");
	c->hdr_state = HDR_NONE;
	te = ex_header(ex, "transfer-encoding");
	if (te && strcasecmp(te, "chunked"))
		return cb_fail(c, 501, "unsupported transfer-encoding");
	if ((p->flags & F_CONTENTLENGTH) && !(p->flags & F_CHUNKED) && p->content_length > c->lim->max_body)
		return cb_fail(c, 413, "request body too large");
	ex->http10 = p->http_major == 1 && p->http_minor == 0;
	expect = ex_header(ex, "expect");
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

	if (n > c->lim->max_body || hbuf_len(b) > c->lim->max_body - n)
		return cb_fail(c, 413, "request body too large");
	if (hbuf_append(b, at, n) < 0)
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
		ex_free(ex);
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
	limits_resolve(cfg, &lim);
	rc = hub_create(false, &hub);
	if (rc < 0)
		return rc;
	conn_init(&c, NULL, -1, &lim, handler, arg, hub);
	if (hbuf_append(&c.in, raw, len) < 0 || hbuf_append(&c.out, "", 0) < 0) {
		rc = -ENOMEM;
		goto out;
	}
	conn_process(&c);
	*out_len = hbuf_len(&c.out);
	*out = malloc(*out_len + 1);
	if (!*out) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(*out, hbuf_data(&c.out), *out_len);
	(*out)[*out_len] = '\0';
	*closed = c.dead || c.close_after;
	rc = 0;
out:
	conn_release(&c);
	pthread_mutex_lock(&hub->mu);
	hub->closed = true;
	struct http_exchange *done = hub->done_head;
	hub->done_head = hub->done_tail = NULL;
	pthread_mutex_unlock(&hub->mu);
	while (done) {
		struct http_exchange *next = done->next;
		ex_free(done);
		done = next;
	}
	hub_unref(hub);
	return rc;
}

/* ---------------------------------------------------------------- server */

/* Arms the idle timer for deadline if it is earlier than the armed one. */
static void srv_timer_kick(struct http_server *srv, uint64_t deadline)
{
	struct itimerspec its = { 0 };

	if (srv->timer_deadline && srv->timer_deadline <= deadline)
		return;
	its.it_value.tv_sec = (time_t)(deadline / 1000000000ULL);
	its.it_value.tv_nsec = (long)(deadline % 1000000000ULL);
	if (timerfd_settime(srv->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
		log_warn("http: timerfd_settime: %s", strerror(errno));
		return;
	}
	srv->timer_deadline = deadline;
}

/* Recomputes the epoll interest of c from its state. */
static void conn_update_events(struct http_conn *c)
{
	uint32_t ev = 0;

	if (!c->peer_eof && !c->close_after && hbuf_len(&c->in) < HTTP_IN_MAX)
		ev |= EPOLLIN;
	if (hbuf_len(&c->out))
		ev |= EPOLLOUT;
	if (ev == c->events)
		return;
	if (loop_mod(c->srv->loop, c->fd, ev) < 0) {
		c->dead = true;
		return;
	}
	c->events = ev;
}

/* Unregisters, closes and frees c (its pending exchange is orphaned). */
static void conn_close(struct http_conn *c)
{
	struct http_server *srv = c->srv;

	log_debug("http: closing connection fd %d", c->fd);
	loop_del(srv->loop, c->fd);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	conn_release(c);
	free(c);
}

/* Reads what is available (up to the input cap); notes EOF and errors. */
static void conn_read(struct http_conn *c)
{
	while (!c->peer_eof && !c->dead && hbuf_len(&c->in) < HTTP_IN_MAX) {
		ssize_t n;

		if (hbuf_reserve(&c->in, HTTP_READ_CHUNK) < 0) {
			c->dead = true;
			return;
		}
		n = recv(c->fd, c->in.p + c->in.end, HTTP_READ_CHUNK, MSG_DONTWAIT);
		if (n > 0) {
			c->in.end += (size_t)n;
			continue;
		}
		if (n == 0) {
			c->peer_eof = true;
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			c->dead = true;
		return;
	}
}

static void srv_destroy(struct http_server *srv);

/* Leaves a loop callback; performs a close requested from inside it. */
static void srv_leave(struct http_server *srv)
{
	srv->in_cb = false;
	if (srv->close_requested)
		srv_destroy(srv);
}

/* Loop callback of a connection socket. */
static void conn_cb(void *arg, uint32_t events)
{
	struct http_conn *c = arg;
	struct http_server *srv = c->srv;
	bool hup = events & (EPOLLHUP | EPOLLERR);

	srv->in_cb = true;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_read(c);
	conn_process(c);
	if (hup)
		c->dead = true;
	if (!c->dead)
		conn_update_events(c);
	if (c->dead)
		conn_close(c);
	srv_leave(srv);
}

/* Sends a best-effort 503 on a connection beyond max_conns. */
static void srv_reject(int fd)
{
	char *resp;
	size_t len;

	if (render_error(503, "too many connections", false, false, false, &resp, &len) < 0)
		return;
	if (send(fd, resp, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* best effort: the peer may be gone already */
	}
	free(resp);
}

/* Loop callback of the listening socket: accepts every pending connection. */
static void listen_cb(void *arg, uint32_t events)
{
	struct http_server *srv = arg;

	(void)events;
	srv->in_cb = true;
	for (;;) {
		struct http_conn *c;
		int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_warn("http: accept on %s: %s", srv->path, strerror(errno));
			break;
		}
		if (srv->nconns >= srv->lim.max_conns) {
			log_debug("http: %s: too many connections", srv->path);
			srv_reject(fd);
			close(fd);
			continue;
		}
		c = malloc(sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		conn_init(c, srv, fd, &srv->lim, srv->handler, srv->arg, srv->hub);
		c->events = EPOLLIN;
		if (loop_add(srv->loop, fd, EPOLLIN, conn_cb, c) < 0) {
			free(c);
			close(fd);
			continue;
		}
		c->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = c;
		srv->conns = c;
		srv->nconns++;
		srv_timer_kick(srv, c->since + (uint64_t)srv->lim.idle_ms * 1000000ULL);
	}
	srv_leave(srv);
}

/* Loop callback of the idle timer: closes expired connections, re-arms. */
static void timer_cb(void *arg, uint32_t events)
{
	struct http_server *srv = arg;
	uint64_t now = time_mono_ns(), next = 0, expirations;
	uint64_t idle = (uint64_t)srv->lim.idle_ms * 1000000ULL;
	struct http_conn *c, *cn;

	(void)events;
	srv->in_cb = true;
	if (read(srv->tfd, &expirations, sizeof(expirations)) < 0) {
		/* EAGAIN: already drained */
	}
	srv->timer_deadline = 0;
	for (c = srv->conns; c; c = cn) {
		cn = c->next;
		if (c->pending)
			continue;
		if (now >= c->since + idle) {
			log_debug("http: %s: closing idle connection fd %d", srv->path, c->fd);
			conn_close(c);
			continue;
		}
		if (!next || c->since + idle < next)
			next = c->since + idle;
	}
	if (next)
		srv_timer_kick(srv, next);
	srv_leave(srv);
}

/* Loop callback of the hub eventfd: completes exchanges answered from other threads. */
static void hub_cb(void *arg, uint32_t events)
{
	struct http_server *srv = arg;
	struct http_exchange *ex, *next;
	uint64_t v;

	(void)events;
	srv->in_cb = true;
	if (read(srv->hub->efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: drained by an earlier round */
	}
	pthread_mutex_lock(&srv->hub->mu);
	ex = srv->hub->done_head;
	srv->hub->done_head = srv->hub->done_tail = NULL;
	pthread_mutex_unlock(&srv->hub->mu);
	for (; ex; ex = next) {
		struct http_conn *c = ex->conn;

		next = ex->next;
		if (!c || srv->close_requested) {
			if (c)
				c->pending = NULL;
			ex_free(ex);
			continue;
		}
		conn_complete(c, ex);
		conn_process(c);
		if (!c->dead)
			conn_update_events(c);
		if (c->dead)
			conn_close(c);
	}
	srv_leave(srv);
}

/* Decides what to do with an existing path. Returns 0 (absent or stale
 * socket removed) or -errno (-EEXIST not a socket, -EADDRINUSE live). */
WUR static int srv_clear_path(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	if (rc == 0 || errno == EAGAIN) {
		close(fd);
		return -EADDRINUSE;
	}
	close(fd);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int http_server_listen(struct loop *loop, const char *socket_path, const struct http_server_config *cfg,
		       http_handler *handler, void *arg, struct http_server **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct http_server *srv;
	struct stat st;
	int rc;

	if (!loop || !socket_path || !socket_path[0] || !handler || !out)
		return -EINVAL;
	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->loop = loop;
	srv->handler = handler;
	srv->arg = arg;
	srv->lfd = srv->tfd = -1;
	limits_resolve(cfg, &srv->lim);
	srv->path = strdup(socket_path);
	if (!srv->path) {
		rc = -ENOMEM;
		goto err_free;
	}
	rc = hub_create(true, &srv->hub);
	if (rc < 0)
		goto err_path;
	srv->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (srv->tfd < 0) {
		rc = -errno;
		goto err_hub;
	}
	rc = srv_clear_path(socket_path, &sa);
	if (rc < 0)
		goto err_timer;
	srv->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->lfd < 0) {
		rc = -errno;
		goto err_timer;
	}
	/* The inode bind() creates takes the socket's mode (minus umask): make
	 * it 0600 from the start; chmod again before listen() in case the
	 * kernel ignored it. Nobody can connect before listen(). */
	if (fchmod(srv->lfd, 0600) < 0) {
		rc = -errno;
		goto err_sock;
	}
	if (bind(srv->lfd, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		goto err_sock;
	}
	if (chmod(socket_path, 0600) < 0 || lstat(socket_path, &st) < 0) {
		rc = -errno;
		goto err_unlink;
	}
	srv->dev = st.st_dev;
	srv->ino = st.st_ino;
	if (listen(srv->lfd, SOMAXCONN) < 0) {
		rc = -errno;
		goto err_unlink;
	}
	rc = loop_add(loop, srv->lfd, EPOLLIN, listen_cb, srv);
	if (rc < 0)
		goto err_unlink;
	rc = loop_add(loop, srv->tfd, EPOLLIN, timer_cb, srv);
	if (rc < 0)
		goto err_del_listen;
	rc = loop_add(loop, srv->hub->efd, EPOLLIN, hub_cb, srv);
	if (rc < 0)
		goto err_del_timer;
	*out = srv;
	return 0;
err_del_timer:
	loop_del(loop, srv->tfd);
err_del_listen:
	loop_del(loop, srv->lfd);
err_unlink:
	unlink(socket_path);
err_sock:
	close(srv->lfd);
err_timer:
	close(srv->tfd);
err_hub:
	hub_unref(srv->hub);
err_path:
	free(srv->path);
err_free:
	free(srv);
	return rc;
}

/* Tears the server down now (see http_server_close). */
static void srv_destroy(struct http_server *srv)
{
	struct http_exchange *done, *next;
	struct stat st;

	loop_del(srv->loop, srv->lfd);
	close(srv->lfd);
	if (lstat(srv->path, &st) == 0 && st.st_dev == srv->dev && st.st_ino == srv->ino)
		unlink(srv->path);
	while (srv->conns)
		conn_close(srv->conns);
	loop_del(srv->loop, srv->tfd);
	close(srv->tfd);
	loop_del(srv->loop, srv->hub->efd);
	pthread_mutex_lock(&srv->hub->mu);
	srv->hub->closed = true;
	done = srv->hub->done_head;
	srv->hub->done_head = srv->hub->done_tail = NULL;
	pthread_mutex_unlock(&srv->hub->mu);
	for (; done; done = next) {
		next = done->next;
		ex_free(done);
	}
	hub_unref(srv->hub);
	free(srv->path);
	free(srv);
}

void http_server_close(struct http_server *srv)
{
	if (!srv)
		return;
	if (srv->in_cb) {
		srv->close_requested = true;
		return;
	}
	srv_destroy(srv);
}

/* ---------------------------------------------------------------- client */

struct client_state {
	struct hbuf body;
	struct hbuf ctype;
	char field[16];          /* current header name, if short enough to matter */
	size_t field_len;        /* may exceed sizeof(field): then it matches nothing */
	enum hdr_state hdr_state;
	bool is_ctype;           /* the current header is Content-Type */
	size_t hdr_bytes;
	int status;
	bool done;
	int err;                 /* -errno chosen by a callback */
};

/* Milliseconds left until deadline (ns; 0: none → -1), at least 0. */
static int ms_left(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = time_mono_ns();
	if (now >= deadline)
		return 0;
	return (int)MIN((deadline - now + 999999) / 1000000, (uint64_t)INT_MAX);
}

/* Client on_message_begin: resets the response being collected. */
static int ccb_message_begin(http_parser *p)
{
	struct client_state *s = p->data;

	hbuf_free(&s->body);
	hbuf_free(&s->ctype);
	s->hdr_state = HDR_NONE;
	s->is_ctype = false;
	s->hdr_bytes = 0;
	return 0;
}

/* Client on_header_field: tracks whether the header is Content-Type. */
static int ccb_header_field(http_parser *p, const char *at, size_t n)
{
	struct client_state *s = p->data;

	s->hdr_bytes += n;
	if (s->hdr_bytes > HTTP_CLIENT_MAX_HEADER) {
		s->err = -EPROTO;
		return -1;
	}
	if (s->hdr_state != HDR_FIELD)
		s->field_len = 0;
	if (s->field_len + n < sizeof(s->field))
		memcpy(s->field + s->field_len, at, n);
	s->field_len += n;
	s->hdr_state = HDR_FIELD;
	return 0;
}

/* Client on_header_value: keeps the Content-Type value. */
static int ccb_header_value(http_parser *p, const char *at, size_t n)
{
	struct client_state *s = p->data;

	s->hdr_bytes += n;
	if (s->hdr_bytes > HTTP_CLIENT_MAX_HEADER) {
		s->err = -EPROTO;
		return -1;
	}
	if (s->hdr_state == HDR_FIELD) {
		s->is_ctype = s->field_len == strlen("content-type") &&
			      !strncasecmp(s->field, "content-type", s->field_len);
		if (s->is_ctype)
			hbuf_free(&s->ctype);
	}
	s->hdr_state = HDR_VALUE;
	if (s->is_ctype && hbuf_append(&s->ctype, at, n) < 0) {
		s->err = -ENOMEM;
		return -1;
	}
	return 0;
}

/* Client on_body: collects the body within the client limit. */
static int ccb_body(http_parser *p, const char *at, size_t n)
{
	struct client_state *s = p->data;

	if (n > HTTP_CLIENT_MAX_BODY || hbuf_len(&s->body) > HTTP_CLIENT_MAX_BODY - n) {
		s->err = -EFBIG;
		return -1;
	}
	if (hbuf_append(&s->body, at, n) < 0) {
		s->err = -ENOMEM;
		return -1;
	}
	return 0;
}

/* Client on_message_complete: skips 1xx interim responses, stops at the final one. */
static int ccb_message_complete(http_parser *p)
{
	struct client_state *s = p->data;

	if (p->status_code < 200)
		return 0;
	s->status = (int)p->status_code;
	s->done = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings client_settings = {
	.on_message_begin = ccb_message_begin,
	.on_header_field = ccb_header_field,
	.on_header_value = ccb_header_value,
	.on_body = ccb_body,
	.on_message_complete = ccb_message_complete,
};

/* Connects fd to sa, retrying while the backlog is full. Returns 0 or -errno. */
WUR static int client_connect(int fd, const struct sockaddr_un *sa, uint64_t deadline)
{
	for (;;) {
		if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		if (deadline && time_mono_ns() >= deadline)
			return -ETIMEDOUT;
		poll(NULL, 0, 10);
	}
}

/* Sends req; stops early (returning 0) if the server answers or hangs up
 * before taking it all. Returns 0 or -errno. */
WUR static int client_send(int fd, const char *req, size_t len, uint64_t deadline)
{
	while (len) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT | POLLIN };
		ssize_t n;
		int pr = poll(&pfd, 1, ms_left(deadline));

		if (pr < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pr == 0)
			return -ETIMEDOUT;
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
			return 0; /* early answer or hang-up: go read it */
		n = send(fd, req, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			if (errno == EPIPE || errno == ECONNRESET)
				return 0;
			return -errno;
		}
		req += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads and parses the response into s. Returns 0 or -errno. */
WUR static int client_recv(int fd, struct client_state *s, uint64_t deadline)
{
	http_parser parser;
	char buf[16384];

	http_parser_init(&parser, HTTP_RESPONSE);
	parser.data = s;
	while (!s->done) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int pr = poll(&pfd, 1, ms_left(deadline));
		ssize_t n;

		if (pr < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pr == 0)
			return -ETIMEDOUT;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			if (errno == ECONNRESET)
				return -ECONNRESET;
			return -errno;
		}
		http_parser_execute(&parser, &client_settings, buf, (size_t)n);
		if (s->done)
			break;
		if (HTTP_PARSER_ERRNO(&parser) != HPE_OK)
			return s->err ? s->err : -EPROTO;
		if (n == 0) /* EOF: a close-delimited body ends here, else truncated */
			return s->done ? 0 : -EPROTO;
	}
	return 0;
}

int http_client_request(const char *socket_path, const char *method, const char *path, const char *content_type,
			const char *body, size_t body_len, int timeout_ms, struct http_client_response *resp)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct client_state s;
	uint64_t deadline = 0;
	char ctype[256] = "";
	char *req = NULL;
	int hlen, fd, rc;

	if (!socket_path || !method || !path || !resp || (!body && body_len))
		return -EINVAL;
	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (strpbrk(method, " \r\n") || strpbrk(path, " \r\n") || (content_type && strpbrk(content_type, "\r\n")))
		return -EINVAL;
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	memset(resp, 0, sizeof(*resp));
	memset(&s, 0, sizeof(s));
	if (timeout_ms >= 0)
		deadline = time_mono_ns() + (uint64_t)timeout_ms * 1000000ULL;
	if (content_type)
		snprintf(ctype, sizeof(ctype), "Content-Type: %s\r\n", content_type);
	hlen = snprintf(NULL, 0,
			"%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n%s"
			"Content-Length: %zu\r\n\r\n",
			method, path, ctype, body_len);
	if (hlen < 0)
		return -EINVAL;
	req = malloc((size_t)hlen + body_len + 1);
	if (!req)
		return -ENOMEM;
	snprintf(req, (size_t)hlen + 1,
		 "%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n%s"
		 "Content-Length: %zu\r\n\r\n",
		 method, path, ctype, body_len);
	if (body_len)
		memcpy(req + hlen, body, body_len);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		rc = -errno;
		goto out_req;
	}
	rc = client_connect(fd, &sa, deadline);
	if (rc < 0)
		goto out_fd;
	rc = client_send(fd, req, (size_t)hlen + body_len, deadline);
	if (rc < 0)
		goto out_fd;
	rc = client_recv(fd, &s, deadline);
	if (rc < 0)
		goto out_state;
	if (hbuf_append(&s.body, "", 0) < 0) {
		rc = -ENOMEM;
		goto out_state;
	}
	resp->status = s.status;
	resp->body_len = hbuf_len(&s.body);
	resp->body = s.body.p;
	if (s.body.start)
		memmove(resp->body, resp->body + s.body.start, resp->body_len + 1);
	s.body.p = NULL;
	if (s.ctype.p) {
		resp->content_type = strdup(hbuf_data(&s.ctype));
		if (!resp->content_type) {
			http_client_response_free(resp);
			rc = -ENOMEM;
			goto out_state;
		}
	}
	rc = 0;
out_state:
	hbuf_free(&s.body);
	hbuf_free(&s.ctype);
out_fd:
	close(fd);
out_req:
	free(req);
	return rc;
}

void http_client_response_free(struct http_client_response *resp)
{
	if (!resp)
		return;
	free(resp->body);
	free(resp->content_type);
	memset(resp, 0, sizeof(*resp));
}
