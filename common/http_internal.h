/* common/http_internal.h - what the pieces of common/http share; include
 * only this header (it includes common/http.h). Not for use outside
 * common/http_*.c.
 *
 * One connection state machine (struct http_conn) serves both the socket
 * path and http_process_raw(): bytes go into conn->in, http_conn_process()
 * parses them with http_parser one request at a time (the parser is paused
 * at every message end), hands each request to the handler as an exchange
 * and queues the response in conn->out. Only the socket path flushes
 * conn->out to a fd.
 *
 * Deferred responses: http_respond() may run on any thread. It renders the
 * response bytes into the exchange and, if the handler already returned,
 * queues the exchange on the hub (mutex + eventfd) for the loop thread,
 * which appends it to its connection, or frees it if the connection is gone.
 * The hub is reference-counted (server + each live exchange) so that an
 * exchange answered after http_server_close() is still safe to complete.
 *
 * The files:
 *   http_buf.c       byte buffers (struct hbuf)
 *   http_exchange.c  the hub, exchanges, response rendering, http_respond*()
 *   http_conn.c      request parsing, the connection state machine, http_process_raw()
 *   http_server.c    the socket server: listening, accepting, I/O, timeouts, close
 *   http_client.c    the blocking client */
#ifndef FORKVM_COMMON_HTTP_INTERNAL_H
#define FORKVM_COMMON_HTTP_INTERNAL_H

#include <http_parser.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/http.h"
#include "common/unixsock.h"

/* ---------------------------------------------------------------- buffers (http_buf.c) */

/* A byte buffer; the valid bytes are p[start, end). */
struct hbuf {
	char *p;
	size_t start;
	size_t end;
	size_t cap;
};

/* Number of valid bytes in b. */
size_t http_hbuf_len(const struct hbuf *b);

/* Pointer to the first valid byte of b (NULL if never allocated). */
char *http_hbuf_data(const struct hbuf *b);

/* Makes room for extra more bytes (plus a NUL). Returns 0 or -ENOMEM. */
int http_hbuf_reserve(struct hbuf *b, size_t extra) __attribute__((warn_unused_result));

/* Appends n bytes and keeps a NUL after the last valid byte. Returns 0 or -ENOMEM. */
int http_hbuf_append(struct hbuf *b, const void *data, size_t n) __attribute__((warn_unused_result));

/* Drops the first n valid bytes. */
void http_hbuf_consume(struct hbuf *b, size_t n);

/* Frees the storage of b and empties it. */
void http_hbuf_free(struct hbuf *b);

/* ---------------------------------------------------------------- hub (http_exchange.c) */

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
int http_hub_create(bool with_eventfd, struct http_hub **out) __attribute__((warn_unused_result));

/* Drops a reference; the last one frees the hub and its eventfd. */
void http_hub_unref(struct http_hub *hub);

/* ---------------------------------------------------------------- exchanges (http_exchange.c) */

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
struct http_exchange *http_ex_new(struct http_hub *hub);

/* Frees ex and drops its hub reference. NULL ok. */
void http_ex_free(struct http_exchange *ex);

/* Looks up header name in the finalised header list of ex, or NULL. */
const char *http_ex_header(const struct http_exchange *ex, const char *name);

/* Renders {"error": msg} with status. Returns 0 or -ENOMEM. */
int http_render_error(int status, const char *msg, bool keep_alive, bool http10, bool head, char **out,
		      size_t *out_len) __attribute__((warn_unused_result));

/* ---------------------------------------------------------------- connections (http_conn.c) */

struct http_limits {
	size_t max_header;
	size_t max_body;
	unsigned max_conns;
	int idle_ms;
	int request_ms;                 /* a begun request must arrive whole within it */
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
	pid_t peer_pid;                 /* SO_PEERCRED of the client (0: unknown) */
};

/* Fills lim from cfg (NULL: all defaults). */
void http_limits_resolve(const struct http_server_config *cfg, struct http_limits *lim);

/* Initialises a connection (fd < 0: raw mode, srv NULL). */
void http_conn_init(struct http_conn *c, struct http_server *srv, int fd, const struct http_limits *lim,
		    http_handler *handler, void *arg, struct http_hub *hub);

/* Releases what the connection holds (not the fd nor c itself); a pending
 * exchange is orphaned: it is freed when its response arrives. */
void http_conn_release(struct http_conn *c);

/* Moves the response of ex (answered) onto its connection and frees ex. */
void http_conn_complete(struct http_conn *c, struct http_exchange *ex);

/* Runs the connection state machine as far as it can go without waiting. */
void http_conn_process(struct http_conn *c);

/* ---------------------------------------------------------------- server (http_server.c) */

struct http_server {
	struct loop *loop;
	struct http_limits lim;
	http_handler *handler;
	void *arg;
	struct http_hub *hub;
	int lfd;
	int tfd;
	char *path;
	struct unixsock sock; /* the listener, published at path */
	struct http_conn *conns;
	unsigned nconns;
	uint64_t timer_deadline;        /* armed deadline (ns), 0 when disarmed */
	int spare_fd;                   /* kept for EMFILE: closed to accept and refuse one */
	uint64_t accept_paused_until;   /* ns: accepting stopped (no descriptor at all), 0: not */
	uint64_t accept_fails;          /* connections refused for want of descriptors */
	bool in_cb;                     /* inside one of our loop callbacks */
	bool close_requested;           /* http_server_close() called from a callback */
};

/* Arms the idle timer for deadline if it is earlier than the armed one. */
void http_srv_timer_kick(struct http_server *srv, uint64_t deadline);

#endif
