/* common/http.h - HTTP/1.1 over Unix stream sockets: a small non-blocking
 * server driven by a struct loop (the REST APIs of the VMM and the fork
 * daemon) and a blocking one-shot client (forkctl, tests).
 * All parsing goes through http_parser; include only this header. */
#ifndef FORKVM_COMMON_HTTP_H
#define FORKVM_COMMON_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/loop.h"

/* ---------------------------------------------------------------- server */

struct http_server;
struct http_exchange; /* one request awaiting its response */

struct http_server_config {
	size_t max_header_bytes; /* default 16 KiB when 0 */
	size_t max_body_bytes;   /* default 1 MiB when 0 */
	unsigned max_conns;      /* default 64 when 0; beyond it new connections get 503 and are closed */
	int idle_timeout_ms;     /* 0: default 30000; a connection idle that long is closed */
	int request_timeout_ms;  /* 0: default 5000; a request begun but not received whole
				  * that long is answered 408 and closed (slow clients) */
};

struct http_request { /* valid until the exchange is responded to */
	const char *method;       /* "GET", "PUT", "POST", "DELETE", ... */
	const char *path;         /* URL path without the query string, percent-decoding NOT applied */
	const char *query;        /* NULL if none */
	const char *body;         /* NUL-terminated (may contain NULs before body_len); "" when empty */
	size_t body_len;
	const char *content_type; /* NULL if absent */
};

/* Called on the loop thread for every complete request. The handler must
 * eventually call one of the http_respond*() functions exactly once, either
 * before it returns or later from any thread. */
typedef void http_handler(void *arg, struct http_exchange *ex);

/* Listens on socket_path (mode 0600; a stale socket there is replaced, a live
 * one gives -EADDRINUSE, a non-socket gives -EEXIST) and serves requests in
 * loop. cfg may be NULL for defaults. Returns 0 and *out, or -errno. */
int http_server_listen(struct loop *loop, const char *socket_path, const struct http_server_config *cfg,
		       http_handler *handler, void *arg, struct http_server **out)
	__attribute__((warn_unused_result));

/* Closes the listener and every connection and unlinks the socket path (if
 * it is still ours). Exchanges still deferred stay valid: responding to them
 * later just frees them. Call on the loop thread (from a handler, the close
 * takes effect when the handler returns) or after the loop stopped. NULL ok. */
void http_server_close(struct http_server *srv);

/* The request of an exchange; valid until the exchange is responded to. */
const struct http_request *http_exchange_request(const struct http_exchange *ex);

/* The value of request header name (case-insensitive; the first occurrence),
 * or NULL. Valid until the exchange is responded to. */
const char *http_exchange_header(const struct http_exchange *ex, const char *name);

/* Completes the exchange; body may be NULL. Thread-safe: may be called from
 * any thread, later than the handler returned. Frees the exchange. If the
 * client went away meanwhile, the response is dropped. */
void http_respond(struct http_exchange *ex, int status, const char *content_type, const char *body,
		  size_t body_len);

/* Responds with body serialised as application/json; NULL body: no body
 * (e.g. 204). Same threading rules as http_respond(). */
void http_respond_json(struct http_exchange *ex, int status, const json_t *body);

/* Responds with {"error": "<formatted message>"}. Same rules as http_respond(). */
void http_respond_error(struct http_exchange *ex, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Test entry point: processes raw request bytes as one connection would
 * (pipelined requests included; the handler must respond synchronously
 * here) and returns in *out (malloc'd, NUL-terminated) the raw bytes the
 * server would write and in *closed whether it would close the connection.
 * Returns 0 or -errno. */
int http_process_raw(const char *raw, size_t len, const struct http_server_config *cfg, http_handler *handler,
		     void *arg, char **out, size_t *out_len, bool *closed) __attribute__((warn_unused_result));

/* ---------------------------------------------------------------- client */

struct http_client_response {
	int status;
	char *body; /* NUL-terminated, "" when empty; never NULL after success */
	size_t body_len;
	char *content_type; /* NULL if absent */
};

/* Connects to socket_path, sends one request (Content-Length body,
 * Connection: close), waits for the full response up to timeout_ms (-1
 * forever). content_type and body may be NULL. Returns 0 or -errno
 * (-ECONNREFUSED, -ENOENT, -ETIMEDOUT, -EPROTO for a malformed or truncated
 * response, -EFBIG for a response body over 64 MiB). */
int http_client_request(const char *socket_path, const char *method, const char *path, const char *content_type,
			const char *body, size_t body_len, int timeout_ms, struct http_client_response *resp)
	__attribute__((warn_unused_result));

/* Frees what a successful http_client_request() stored in resp. */
void http_client_response_free(struct http_client_response *resp);

/* Parses a whole response held in memory (the peer closed after it), fed
 * to the parser piece bytes at a time (0: all at once), as
 * http_client_request parses what it receives. Returns 0 with resp set,
 * or -errno (-EPROTO: malformed or truncated). For tests and fuzzing. */
int http_client_parse_response(const char *data, size_t len, size_t piece,
			       struct http_client_response *resp);

#endif
