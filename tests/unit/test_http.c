/* tests/unit/test_http.c - common/http: the connection state machine through
 * http_process_raw(), then the server and client over real Unix sockets
 * with the loop running in a thread. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/http.h"
#include "common/loop.h"

/* ---------------------------------------------------------------- helpers */

/* What the recording handler saw (tests run in separate processes). */
struct seen {
	int calls;
	char method[16];
	char path[256];
	char query[256];
	bool has_query;
	char body[8192];
	size_t body_len;
	char ctype[128];
	bool has_ctype;
};

static struct seen seen;

/* Sleeps ms milliseconds. */
static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Records the request; answers 405 to PATCH, else 200 {"path": ..., "n": calls}. */
static void record_handler(void *arg, struct http_exchange *ex)
{
	const struct http_request *req = http_exchange_request(ex);
	json_t *j;

	(void)arg;
	seen.calls++;
	snprintf(seen.method, sizeof(seen.method), "%s", req->method);
	snprintf(seen.path, sizeof(seen.path), "%s", req->path);
	seen.has_query = req->query != NULL;
	snprintf(seen.query, sizeof(seen.query), "%s", req->query ? req->query : "");
	seen.body_len = req->body_len;
	if (req->body_len < sizeof(seen.body))
		memcpy(seen.body, req->body, req->body_len + 1);
	seen.has_ctype = req->content_type != NULL;
	snprintf(seen.ctype, sizeof(seen.ctype), "%s", req->content_type ? req->content_type : "");
	if (!strcmp(req->method, "PATCH")) {
		http_respond_error(ex, 405, "method %s not allowed", req->method);
		return;
	}
	if (!strcmp(req->path, "/nocontent")) {
		http_respond_json(ex, 204, NULL);
		return;
	}
	j = json_pack("{s:s, s:i}", "path", req->path, "n", seen.calls);
	http_respond_json(ex, 200, j);
	json_decref(j);
}

/* Runs raw bytes through http_process_raw with the recording handler. */
static char *raw_run(const char *raw, size_t len, const struct http_server_config *cfg, size_t *out_len,
		     bool *closed)
{
	char *out = NULL;
	size_t olen = 0;
	int rc = http_process_raw(raw, len, cfg, record_handler, NULL, &out, &olen, closed);

	cr_assert_eq(rc, 0, "http_process_raw: %d", rc);
	cr_assert_not_null(out);
	if (out_len)
		*out_len = olen;
	return out;
}

/* raw_run for a NUL-terminated request. */
static char *raw_str(const char *raw, const struct http_server_config *cfg, bool *closed)
{
	return raw_run(raw, strlen(raw), cfg, NULL, closed);
}

/* Checks that the response starting at resp has a Content-Length matching
 * its body; returns a pointer just after it (the next response). */
static const char *check_response(const char *resp, int status)
{
	char line[32];
	const char *hdr_end = strstr(resp, "\r\n\r\n");
	const char *cl;
	size_t n;

	cr_assert_not_null(hdr_end, "no header end in: %s", resp);
	snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
	cr_assert_eq(strncmp(resp, line, strlen(line)), 0, "expected %d, got: %.40s", status, resp);
	cl = strstr(resp, "Content-Length: ");
	cr_assert(cl && cl < hdr_end, "no Content-Length in: %s", resp);
	n = strtoul(cl + strlen("Content-Length: "), NULL, 10);
	cr_assert_geq(strlen(hdr_end + 4), n, "body shorter than Content-Length");
	return hdr_end + 4 + n;
}

/* ---------------------------------------------------------------- raw: requests */

Test(http_raw, get_reaches_handler, .timeout = 10)
{
	bool closed = true;
	char *out = raw_str("GET /api/v1/vm.info?a=1&b=2 HTTP/1.1\r\nHost: x\r\n\r\n", NULL, &closed);
	const char *end;

	cr_assert_eq(seen.calls, 1);
	cr_assert_str_eq(seen.method, "GET");
	cr_assert_str_eq(seen.path, "/api/v1/vm.info");
	cr_assert(seen.has_query);
	cr_assert_str_eq(seen.query, "a=1&b=2");
	cr_assert_eq(seen.body_len, 0);
	cr_assert_str_eq(seen.body, "");
	cr_assert(!seen.has_ctype);
	end = check_response(out, 200);
	cr_assert_str_eq(end, "");
	cr_assert_not_null(strstr(out, "Content-Type: application/json\r\n"));
	cr_assert_not_null(strstr(out, "{\"path\":\"/api/v1/vm.info\",\"n\":1}"));
	cr_assert_null(strstr(out, "Connection: close"));
	cr_assert(!closed);
	free(out);
}

Test(http_raw, put_body_reaches_handler, .timeout = 10)
{
	bool closed = true;
	const char *req = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
			  "Content-Length: 17\r\n\r\n{\"cpus\": {\"n\":1}}";
	char *out = raw_str(req, NULL, &closed);

	cr_assert_eq(seen.calls, 1);
	cr_assert_str_eq(seen.method, "PUT");
	cr_assert_str_eq(seen.path, "/api/v1/vm.create");
	cr_assert(!seen.has_query);
	cr_assert_eq(seen.body_len, 17);
	cr_assert_str_eq(seen.body, "{\"cpus\": {\"n\":1}}");
	cr_assert_str_eq(seen.ctype, "application/json");
	check_response(out, 200);
	cr_assert(!closed);
	free(out);
}

Test(http_raw, body_with_nul_bytes, .timeout = 10)
{
	static const char req[] = "POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\na\0b\0c";
	bool closed;
	char *out = raw_run(req, sizeof(req) - 1, NULL, NULL, &closed);

	cr_assert_eq(seen.body_len, 5);
	cr_assert_eq(memcmp(seen.body, "a\0b\0c", 6), 0);
	free(out);
}

Test(http_raw, pipelined_in_order, .timeout = 10)
{
	bool closed = true;
	char *out = raw_str("GET /first HTTP/1.1\r\n\r\nPUT /second HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
			    "GET /third HTTP/1.1\r\n\r\n",
			    NULL, &closed);
	const char *p = out;

	cr_assert_eq(seen.calls, 3);
	p = check_response(p, 200);
	cr_assert_not_null(strstr(out, "/first"));
	cr_assert(strstr(out, "/first") < p);
	cr_assert(strstr(out, "/second") > p);
	p = check_response(p, 200);
	cr_assert(strstr(out, "/third") > p);
	p = check_response(p, 200);
	cr_assert_str_eq(p, "");
	cr_assert(!closed);
	free(out);
}

Test(http_raw, malformed_request_line, .timeout = 10)
{
	static const char *const bad[] = {
		"GET / HTTP/1.1 junk\r\n\r\n",
		"GET / HTTP/x.1\r\n\r\n",
		"GET /a b HTTP/1.1\r\n\r\n",
		"GET\r\n\r\n",
		"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
		"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
		"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool closed = false;
		char *out = raw_str(bad[i], NULL, &closed);

		cr_assert_eq(seen.calls, 0, "handler called for %s", bad[i]);
		check_response(out, 400);
		cr_assert_not_null(strstr(out, "Connection: close\r\n"));
		cr_assert_not_null(strstr(out, "Content-Type: application/json\r\n"));
		cr_assert_not_null(strstr(out, "{\"error\":\"malformed request: "), "%s", out);
		cr_assert(closed);
		free(out);
	}
}

Test(http_raw, garbage_after_good_request, .timeout = 10)
{
	bool closed = false;
	char *out = raw_str("GET /ok HTTP/1.1\r\n\r\n\x01\x02garbage\r\n\r\n", NULL, &closed);
	const char *p;

	cr_assert_eq(seen.calls, 1);
	p = check_response(out, 200);
	p = check_response(p, 400);
	cr_assert_str_eq(p, "");
	cr_assert(closed);
	free(out);
}

Test(http_raw, truncated_waits, .timeout = 10)
{
	bool closed = true;
	size_t len = 99;
	char *out = raw_run("GET /x HTTP/1.1\r\nHost: y\r\n", strlen("GET /x HTTP/1.1\r\nHost: y\r\n"), NULL, &len,
			    &closed);

	cr_assert_eq(len, 0);
	cr_assert_eq(seen.calls, 0);
	cr_assert(!closed);
	free(out);
	out = raw_run("PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345", strlen("PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345"),
		      NULL, &len, &closed);
	cr_assert_eq(len, 0);
	cr_assert_eq(seen.calls, 0);
	cr_assert(!closed);
	free(out);
}

Test(http_raw, header_too_large, .timeout = 10)
{
	struct http_server_config cfg = { .max_header_bytes = 1024 };
	char req[4096];
	bool closed = false;
	char *out;

	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: %02000d\r\n\r\n", 7);
	out = raw_str(req, &cfg, &closed);
	cr_assert_eq(seen.calls, 0);
	check_response(out, 431);
	cr_assert(closed);
	free(out);
}

Test(http_raw, header_limit_default_16k, .timeout = 10)
{
	static char req[40000];
	bool closed = false;
	char *out;

	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: %020000d\r\n\r\n", 7);
	out = raw_str(req, NULL, &closed);
	check_response(out, 431);
	cr_assert(closed);
	free(out);
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: %010000d\r\n\r\n", 7);
	out = raw_str(req, NULL, &closed);
	check_response(out, 200);
	cr_assert(!closed);
	free(out);
}

Test(http_raw, body_too_large_content_length, .timeout = 10)
{
	struct http_server_config cfg = { .max_body_bytes = 100 };
	bool closed = false;
	/* The body itself is never sent: the reply must not wait for it. */
	char *out = raw_str("PUT /x HTTP/1.1\r\nContent-Length: 1000\r\n\r\n", &cfg, &closed);

	cr_assert_eq(seen.calls, 0);
	check_response(out, 413);
	cr_assert_not_null(strstr(out, "Connection: close\r\n"));
	cr_assert(closed);
	free(out);
}

Test(http_raw, body_too_large_chunked, .timeout = 10)
{
	struct http_server_config cfg = { .max_body_bytes = 8 };
	bool closed = false;
	char *out = raw_str("PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
			    &cfg, &closed);

	cr_assert_eq(seen.calls, 0);
	check_response(out, 413);
	cr_assert(closed);
	free(out);
}

Test(http_raw, body_at_limit_accepted, .timeout = 10)
{
	struct http_server_config cfg = { .max_body_bytes = 5 };
	bool closed = true;
	char *out = raw_str("PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", &cfg, &closed);

	check_response(out, 200);
	cr_assert_str_eq(seen.body, "hello");
	cr_assert(!closed);
	free(out);
}

Test(http_raw, chunked_body_assembled, .timeout = 10)
{
	bool closed = true;
	char *out = raw_str("PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			    "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
			    "GET /after HTTP/1.1\r\n\r\n",
			    NULL, &closed);
	const char *p;

	cr_assert_eq(seen.calls, 2);
	p = check_response(out, 200);
	p = check_response(p, 200);
	cr_assert_str_eq(p, "");
	cr_assert_str_eq(seen.path, "/after");
	cr_assert(!closed);
	free(out);
	out = raw_str("PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
		      NULL, &closed);
	cr_assert_eq(seen.body_len, 11);
	cr_assert_str_eq(seen.body, "hello world");
	free(out);
}

Test(http_raw, unsupported_transfer_encoding, .timeout = 10)
{
	bool closed = false;
	char *out = raw_str("PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxxxx", NULL, &closed);

	cr_assert_eq(seen.calls, 0);
	check_response(out, 501);
	cr_assert(closed);
	free(out);
	out = raw_str("PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", NULL, &closed);
	check_response(out, 501);
	cr_assert(closed);
	free(out);
}

Test(http_raw, http10_closes, .timeout = 10)
{
	bool closed = false;
	char *out = raw_str("GET /old HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n", NULL, &closed);
	const char *p;

	cr_assert_eq(seen.calls, 1);
	p = check_response(out, 200);
	cr_assert_str_eq(p, "");
	cr_assert_not_null(strstr(out, "Connection: close\r\n"));
	cr_assert(closed);
	free(out);
}

Test(http_raw, http10_keep_alive, .timeout = 10)
{
	bool closed = true;
	char *out = raw_str("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", NULL, &closed);

	check_response(out, 200);
	cr_assert_not_null(strstr(out, "Connection: keep-alive\r\n"));
	cr_assert(!closed);
	free(out);
}

Test(http_raw, connection_close_honoured, .timeout = 10)
{
	bool closed = false;
	char *out = raw_str("GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n", NULL, &closed);

	cr_assert_eq(seen.calls, 1);
	cr_assert_str_eq(check_response(out, 200), "");
	cr_assert_not_null(strstr(out, "Connection: close\r\n"));
	cr_assert(closed);
	free(out);
}

Test(http_raw, unknown_method_goes_to_handler, .timeout = 10)
{
	bool closed = true;
	char *out = raw_str("PATCH /api/v1/vm.boot HTTP/1.1\r\nContent-Length: 0\r\n\r\n", NULL, &closed);

	cr_assert_eq(seen.calls, 1);
	cr_assert_str_eq(seen.method, "PATCH");
	check_response(out, 405);
	cr_assert_not_null(strstr(out, "{\"error\":\"method PATCH not allowed\"}"));
	cr_assert(!closed);
	free(out);
}

Test(http_raw, method_outside_http_parser_table_is_400, .timeout = 10)
{
	bool closed = false;
	char *out = raw_str("FROB / HTTP/1.1\r\n\r\n", NULL, &closed);

	cr_assert_eq(seen.calls, 0);
	check_response(out, 400);
	cr_assert(closed);
	free(out);
}

Test(http_raw, head_has_length_but_no_body, .timeout = 10)
{
	bool closed;
	char *out = raw_str("HEAD /h HTTP/1.1\r\n\r\n", NULL, &closed);
	const char *end = strstr(out, "\r\n\r\n");

	cr_assert_not_null(strstr(out, "Content-Length: "));
	cr_assert_not_null(end);
	cr_assert_str_eq(end + 4, "");
	free(out);
}

Test(http_raw, no_content_has_no_body, .timeout = 10)
{
	bool closed = true;
	char *out = raw_str("PUT /nocontent HTTP/1.1\r\n\r\n", NULL, &closed);

	cr_assert_eq(strncmp(out, "HTTP/1.1 204 No Content\r\n", 25), 0, "%s", out);
	cr_assert_null(strstr(out, "Content-Length"));
	cr_assert_str_eq(strstr(out, "\r\n\r\n") + 4, "");
	cr_assert(!closed);
	free(out);
}

Test(http_raw, expect_continue, .timeout = 10)
{
	bool closed;
	char *out = raw_str("PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok", NULL, &closed);

	cr_assert_eq(strncmp(out, "HTTP/1.1 100 Continue\r\n\r\n", 25), 0, "%s", out);
	check_response(out + 25, 200);
	cr_assert_str_eq(seen.body, "ok");
	free(out);
}

Test(http_raw, absolute_url_and_empty_header, .timeout = 10)
{
	bool closed;
	char *out = raw_str("GET http://localhost/api/v1/vmm.ping?q HTTP/1.1\r\nX-Empty:\r\nContent-Type: text/plain \r\n\r\n",
			    NULL, &closed);

	cr_assert_str_eq(seen.path, "/api/v1/vmm.ping");
	cr_assert_str_eq(seen.query, "q");
	cr_assert_str_eq(seen.ctype, "text/plain");
	check_response(out, 200);
	free(out);
}

/* Header lookup through the exchange. */
static char hdr_seen[64];

/* Stores the X-Test header and answers 200. */
static void header_handler(void *arg, struct http_exchange *ex)
{
	const char *v = http_exchange_header(ex, "x-test");

	(void)arg;
	snprintf(hdr_seen, sizeof(hdr_seen), "%s", v ? v : "(null)");
	http_respond(ex, 200, "text/plain", "ok", 2);
}

Test(http_raw, header_lookup, .timeout = 10)
{
	char *out;
	size_t len;
	bool closed;
	const char *req = "GET / HTTP/1.1\r\nX-Other: 1\r\nX-TEST: value one\r\n\r\n";

	cr_assert_eq(http_process_raw(req, strlen(req), NULL, header_handler, NULL, &out, &len, &closed), 0);
	cr_assert_str_eq(hdr_seen, "value one");
	cr_assert_not_null(strstr(out, "Content-Type: text/plain\r\nContent-Length: 2\r\n"));
	free(out);
}

/* ---------------------------------------------------------------- socket fixture */

struct fixture {
	char dir[64];
	char path[100];
	struct loop *loop;
	struct http_server *srv;
	pthread_t thread;
	bool running;
	bool stop;
};

static struct fixture fx;

/* Deferred exchanges the socket handler parked for the test thread. */
static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cv = PTHREAD_COND_INITIALIZER;
static struct http_exchange *parked;
static int parked_count;

/* Runs the loop until fx.stop (not loop_stop(): loop_run() clears a stop
 * requested before it started). */
static void *loop_thread(void *arg)
{
	struct loop *loop = arg;

	while (!__atomic_load_n(&fx.stop, __ATOMIC_ACQUIRE)) {
		int rc = loop_run_once(loop, -1);
		if (rc < 0)
			return (void *)(intptr_t)rc;
	}
	return NULL;
}

/* Answers ex with 200 "late" after 50 ms, from its own thread. */
static void *late_responder(void *arg)
{
	sleep_ms(50);
	http_respond(arg, 200, "text/plain", "late", 4);
	return NULL;
}

/* Socket handler: /ping, /echo, /defer (parks), /late (another thread answers), /close. */
static void sock_handler(void *arg, struct http_exchange *ex)
{
	const struct http_request *req = http_exchange_request(ex);

	(void)arg;
	if (!strcmp(req->path, "/ping")) {
		http_respond(ex, 200, "application/json", "{\"ok\":true}", 11);
	} else if (!strcmp(req->path, "/echo")) {
		http_respond(ex, 200, req->content_type, req->body, req->body_len);
	} else if (!strcmp(req->path, "/defer")) {
		pthread_mutex_lock(&park_mu);
		parked = ex;
		parked_count++;
		pthread_cond_broadcast(&park_cv);
		pthread_mutex_unlock(&park_mu);
	} else if (!strcmp(req->path, "/late")) {
		pthread_t t;
		cr_assert_eq(pthread_create(&t, NULL, late_responder, ex), 0);
		pthread_detach(t);
	} else if (!strcmp(req->path, "/close")) {
		http_respond(ex, 200, "text/plain", "bye", 3);
		http_server_close(fx.srv);
		fx.srv = NULL;
	} else {
		http_respond_error(ex, 404, "no route %s", req->path);
	}
}

/* Waits until the handler parked an exchange; returns it. */
static struct http_exchange *wait_parked(void)
{
	struct http_exchange *ex;
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	pthread_mutex_lock(&park_mu);
	while (!parked) {
		if (pthread_cond_timedwait(&park_cv, &park_mu, &until) == ETIMEDOUT)
			break;
	}
	ex = parked;
	parked = NULL;
	pthread_mutex_unlock(&park_mu);
	cr_assert_not_null(ex, "the handler never parked an exchange");
	return ex;
}

/* Starts a server in a temporary directory with its loop in a thread. */
static void fx_start(const struct http_server_config *cfg)
{
	int rc;

	snprintf(fx.dir, sizeof(fx.dir), "/tmp/forkvm-http-XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir));
	snprintf(fx.path, sizeof(fx.path), "%s/api.sock", fx.dir);
	cr_assert_eq(loop_create(&fx.loop), 0);
	rc = http_server_listen(fx.loop, fx.path, cfg, sock_handler, NULL, &fx.srv);
	cr_assert_eq(rc, 0, "http_server_listen: %s", strerror(-rc));
	fx.stop = false;
	cr_assert_eq(pthread_create(&fx.thread, NULL, loop_thread, fx.loop), 0);
	fx.running = true;
}

/* Stops the loop thread (the server stays registered). */
static void fx_stop_loop(void)
{
	void *ret;

	if (!fx.running)
		return;
	__atomic_store_n(&fx.stop, true, __ATOMIC_RELEASE);
	loop_wake(fx.loop);
	pthread_join(fx.thread, &ret);
	fx.running = false;
	cr_assert_eq((intptr_t)ret, 0);
}

/* Stops everything and removes the directory. */
static void fx_stop(void)
{
	fx_stop_loop();
	http_server_close(fx.srv);
	fx.srv = NULL;
	loop_destroy(fx.loop);
	fx.loop = NULL;
	unlink(fx.path);
	rmdir(fx.dir);
}

/* Connects a raw client socket to the fixture. */
static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.path);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s", strerror(errno));
	return fd;
}

/* Sends all of s on fd. */
static void raw_send(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
		cr_assert_gt(n, 0, "send: %s", strerror(errno));
		s += n;
		len -= (size_t)n;
	}
}

/* Reads until EOF (or error/timeout) into buf; returns the length. */
static size_t raw_read_all(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t len = 0;

	while (len + 1 < cap) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pfd, 1, timeout_ms) <= 0)
			break;
		n = recv(fd, buf + len, cap - 1 - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return len;
}

/* Reads exactly one response (headers + Content-Length body) into buf. */
static void raw_read_one(int fd, char *buf, size_t cap)
{
	size_t len = 0;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		const char *end, *cl;
		ssize_t n;

		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (end) {
			cl = strstr(buf, "Content-Length: ");
			size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
			if (len >= want)
				return;
		}
		cr_assert_gt(poll(&pfd, 1, 5000), 0, "timed out reading a response");
		cr_assert_lt(len + 1, cap);
		n = recv(fd, buf + len, 1, 0); /* byte by byte: never read past one response */
		cr_assert_gt(n, 0, "EOF or error while reading a response");
		len += (size_t)n;
	}
}

/* Asserts that GET /ping succeeds. */
static void assert_ping(void)
{
	struct http_client_response resp;
	int rc = http_client_request(fx.path, "GET", "/ping", NULL, NULL, 0, 5000, &resp);

	cr_assert_eq(rc, 0, "ping: %s", strerror(-rc));
	cr_assert_eq(resp.status, 200);
	cr_assert_str_eq(resp.body, "{\"ok\":true}");
	http_client_response_free(&resp);
}

/* ---------------------------------------------------------------- sockets */

Test(http_sock, client_round_trip, .timeout = 20)
{
	struct http_client_response resp;
	int rc;

	fx_start(NULL);
	rc = http_client_request(fx.path, "GET", "/ping", NULL, NULL, 0, 5000, &resp);
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	cr_assert_eq(resp.status, 200);
	cr_assert_str_eq(resp.body, "{\"ok\":true}");
	cr_assert_eq(resp.body_len, 11);
	cr_assert_str_eq(resp.content_type, "application/json");
	http_client_response_free(&resp);

	rc = http_client_request(fx.path, "PUT", "/echo", "text/plain", "hello there", 11, 5000, &resp);
	cr_assert_eq(rc, 0);
	cr_assert_eq(resp.status, 200);
	cr_assert_str_eq(resp.body, "hello there");
	cr_assert_str_eq(resp.content_type, "text/plain");
	http_client_response_free(&resp);

	rc = http_client_request(fx.path, "GET", "/nowhere", NULL, NULL, 0, 5000, &resp);
	cr_assert_eq(rc, 0);
	cr_assert_eq(resp.status, 404);
	cr_assert_str_eq(resp.body, "{\"error\":\"no route /nowhere\"}");
	http_client_response_free(&resp);
	fx_stop();
}

Test(http_sock, large_body_round_trip, .timeout = 20)
{
	struct http_server_config cfg = { .max_body_bytes = 4 * 1024 * 1024 };
	struct http_client_response resp;
	size_t n = 3 * 1024 * 1024;
	char *big = malloc(n);
	int rc;

	cr_assert_not_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = (char)('a' + i % 26);
	fx_start(&cfg);
	rc = http_client_request(fx.path, "PUT", "/echo", "application/octet-stream", big, n, 10000, &resp);
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.body_len, n);
	cr_assert_eq(memcmp(resp.body, big, n), 0);
	http_client_response_free(&resp);
	free(big);
	fx_stop();
}

Test(http_sock, socket_mode_0600, .timeout = 20)
{
	struct stat st;
	mode_t old = umask(0);

	fx_start(NULL);
	umask(old);
	cr_assert_eq(lstat(fx.path, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0600, "mode %o", st.st_mode & 07777);
	fx_stop();
	cr_assert_neq(access(fx.path, F_OK), 0, "socket path not unlinked on close");
}

Test(http_sock, stale_socket_replaced_live_one_refused, .timeout = 20)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct http_server *second = NULL;
	char file[160];
	int fd, rc, ffd;

	snprintf(fx.dir, sizeof(fx.dir), "/tmp/forkvm-http-XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir));
	snprintf(fx.path, sizeof(fx.path), "%s/api.sock", fx.dir);
	/* A stale socket: bound, never listening, closed. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	cr_assert_eq(loop_create(&fx.loop), 0);
	rc = http_server_listen(fx.loop, fx.path, NULL, sock_handler, NULL, &fx.srv);
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	/* A live one is not stolen. */
	rc = http_server_listen(fx.loop, fx.path, NULL, sock_handler, NULL, &second);
	cr_assert_eq(rc, -EADDRINUSE, "%d", rc);
	fx.stop = false;
	cr_assert_eq(pthread_create(&fx.thread, NULL, loop_thread, fx.loop), 0);
	fx.running = true;
	assert_ping();
	/* A regular file is never removed. */
	snprintf(file, sizeof(file), "%s/file", fx.dir);
	ffd = open(file, O_CREAT | O_WRONLY, 0644);
	cr_assert_geq(ffd, 0);
	close(ffd);
	fx_stop_loop();
	rc = http_server_listen(fx.loop, file, NULL, sock_handler, NULL, &second);
	cr_assert_eq(rc, -EEXIST, "%d", rc);
	cr_assert_eq(access(file, F_OK), 0);
	unlink(file);
	fx_stop();
}

Test(http_sock, deferred_response_from_other_thread, .timeout = 20)
{
	struct http_client_response resp;
	int rc;

	fx_start(NULL);
	rc = http_client_request(fx.path, "GET", "/late", NULL, NULL, 0, 5000, &resp);
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	cr_assert_eq(resp.status, 200);
	cr_assert_str_eq(resp.body, "late");
	http_client_response_free(&resp);
	assert_ping();
	fx_stop();
}

Test(http_sock, pipelined_behind_deferred, .timeout = 20)
{
	static const char req[] = "GET /defer HTTP/1.1\r\n\r\nGET /ping HTTP/1.1\r\n\r\n";
	char buf[2048];
	struct http_exchange *ex;
	struct pollfd pfd;
	int fd;

	fx_start(NULL);
	fd = raw_connect();
	raw_send(fd, req, sizeof(req) - 1);
	ex = wait_parked();
	/* Nothing may come out before the first response. */
	pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
	cr_assert_eq(poll(&pfd, 1, 100), 0);
	http_respond(ex, 200, "text/plain", "first", 5);
	raw_read_one(fd, buf, sizeof(buf));
	cr_assert_not_null(strstr(buf, "\r\n\r\nfirst"), "%s", buf);
	raw_read_one(fd, buf, sizeof(buf));
	cr_assert_not_null(strstr(buf, "{\"ok\":true}"), "%s", buf);
	close(fd);
	fx_stop();
}

Test(http_sock, client_gone_while_deferred, .timeout = 20)
{
	static const char req[] = "PUT /defer HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
	struct http_exchange *ex;
	int fd;

	fx_start(NULL);
	fd = raw_connect();
	raw_send(fd, req, sizeof(req) - 1);
	ex = wait_parked();
	cr_assert_str_eq(http_exchange_request(ex)->body, "abc");
	close(fd);
	sleep_ms(100); /* let the server notice the hang-up */
	http_respond_error(ex, 500, "too late for %s", "you");
	assert_ping();

	/* Same again, but the answer races the hang-up. */
	fd = raw_connect();
	raw_send(fd, req, sizeof(req) - 1);
	ex = wait_parked();
	close(fd);
	http_respond(ex, 200, NULL, NULL, 0);
	assert_ping();
	fx_stop();
}

Test(http_sock, deferred_answered_after_server_close, .timeout = 20)
{
	struct http_exchange *ex;
	int fd;

	fx_start(NULL);
	fd = raw_connect();
	raw_send(fd, "GET /defer HTTP/1.1\r\n\r\n", 23);
	ex = wait_parked();
	fx_stop_loop();
	http_server_close(fx.srv);
	fx.srv = NULL;
	http_respond(ex, 200, "text/plain", "x", 1); /* dropped, freed */
	close(fd);
	fx_stop();
}

Test(http_sock, close_from_handler, .timeout = 20)
{
	struct http_client_response resp;
	int rc;

	fx_start(NULL);
	rc = http_client_request(fx.path, "POST", "/close", NULL, NULL, 0, 5000, &resp);
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	cr_assert_str_eq(resp.body, "bye");
	http_client_response_free(&resp);
	/* The close runs once the handler's callback returns, right after the
	 * response was written: give it a moment. */
	for (int i = 0; i < 100 && access(fx.path, F_OK) == 0; i++)
		sleep_ms(10);
	cr_assert_neq(access(fx.path, F_OK), 0);
	fx_stop();
}

Test(http_sock, max_conns_gives_503, .timeout = 20)
{
	struct http_server_config cfg = { .max_conns = 2 };
	struct http_client_response resp;
	struct http_exchange *ea, *eb;
	char buf[1024];
	int a, b, rc;

	fx_start(&cfg);
	a = raw_connect();
	b = raw_connect();
	/* Both busy: each waits for a deferred response. */
	raw_send(a, "GET /defer HTTP/1.1\r\n\r\n", 23);
	ea = wait_parked();
	raw_send(b, "GET /defer HTTP/1.1\r\n\r\n", 23);
	eb = wait_parked();
	rc = http_client_request(fx.path, "GET", "/ping", NULL, NULL, 0, 5000, &resp);
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	cr_assert_eq(resp.status, 503);
	cr_assert_not_null(strstr(resp.body, "\"error\""));
	http_client_response_free(&resp);
	http_respond(ea, 200, "text/plain", "a", 1);
	raw_read_one(a, buf, sizeof(buf));
	http_respond(eb, 200, "text/plain", "b", 1);
	raw_read_one(b, buf, sizeof(buf));
	/* Both only waiting now (idle keep-alive): a new client gets in and
	 * the connection idle the longest (a) makes room. */
	rc = http_client_request(fx.path, "GET", "/ping", NULL, NULL, 0, 5000, &resp);
	cr_assert_eq(rc, 0);
	cr_assert_eq(resp.status, 200, "a waiting connection was not evicted for a new client");
	http_client_response_free(&resp);
	cr_assert_eq(raw_read_all(a, buf, sizeof(buf), 3000), 0, "the oldest idle one went");
	close(a);
	close(b);
	fx_stop();
}

/* Slow clients (issue 15, failure 5): a request begun but not received
 * whole within request_timeout_ms gets 408 and is closed, however long the
 * idle timeout; when one process fills every slot with trickling requests,
 * a new client still gets in (the slow process's oldest makes room). */
Test(http_sock, slow_requests_time_out_and_cannot_lock_others_out, .timeout = 20)
{
	struct http_server_config cfg = { .max_conns = 8, .request_timeout_ms = 500 };
	struct http_client_response resp;
	char buf[1024];
	int rc, pfd[2];
	pid_t kid;

	fx_start(&cfg);
	/* Another process fills all 8 slots with half-sent requests, then
	 * reports how many got a 408 within 2 s. */
	cr_assert_eq(pipe(pfd), 0);
	kid = fork();
	cr_assert_geq(kid, 0);
	if (kid == 0) {
		int slow[8], timed_out = 0;
		for (int i = 0; i < 8; i++) {
			slow[i] = raw_connect();
			raw_send(slow[i], "PUT /echo HTTP/1.1\r\nContent-Le", 30);
		}
		for (int i = 0; i < 8; i++) {
			char r[256];
			size_t n = raw_read_all(slow[i], r, sizeof(r) - 1, 2000);
			r[n] = 0;
			if (strstr(r, " 408 ") || n == 0)
				timed_out++;
		}
		char msg = (char)timed_out;
		if (write(pfd[1], &msg, 1) != 1)
			_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	sleep_ms(150); /* the slots are full now */
	/* this process is still served at once */
	rc = http_client_request(fx.path, "GET", "/ping", NULL, NULL, 0, 2000, &resp);
	cr_assert_eq(rc, 0);
	cr_assert_eq(resp.status, 200, "a new client was locked out: %d", resp.status);
	http_client_response_free(&resp);
	char got = 0;
	cr_assert_eq(read(pfd[0], &got, 1), 1);
	close(pfd[0]);
	cr_assert_eq(got, 8, "%d of the 8 trickling requests were closed in time", got);
	waitpid(kid, NULL, 0);
	/* a request of ours that trickles gets 408 */
	int mine = raw_connect();
	raw_send(mine, "GET /ping HTTP/1.1\r\nHost:", 25);
	size_t n = raw_read_all(mine, buf, sizeof(buf) - 1, 3000);
	buf[n] = 0;
	cr_assert(strstr(buf, " 408 "), "no 408: '%s'", buf);
	close(mine);
	fx_stop();
}

Test(http_sock, keeps_serving_after_bad_requests, .timeout = 20)
{
	struct http_server_config cfg = { .max_header_bytes = 1024, .max_body_bytes = 4096 };
	struct http_client_response resp;
	static char buf[65536], big[200000];
	int fd, rc;

	fx_start(&cfg);

	fd = raw_connect();
	raw_send(fd, "NOT HTTP AT ALL\r\n\r\n", 19);
	raw_read_all(fd, buf, sizeof(buf), 5000);
	cr_assert_eq(strncmp(buf, "HTTP/1.1 400 ", 13), 0, "%s", buf);
	close(fd);
	assert_ping();

	fd = raw_connect();
	snprintf(buf, sizeof(buf), "GET /ping HTTP/1.1\r\nX-Big: %04000d\r\n\r\n", 1);
	raw_send(fd, buf, strlen(buf));
	raw_read_all(fd, buf, sizeof(buf), 5000);
	cr_assert_eq(strncmp(buf, "HTTP/1.1 431 ", 13), 0, "%s", buf);
	close(fd);
	assert_ping();

	memset(big, 'x', sizeof(big));
	rc = http_client_request(fx.path, "PUT", "/echo", NULL, big, sizeof(big), 5000, &resp);
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	cr_assert_eq(resp.status, 413);
	cr_assert_str_eq(resp.body, "{\"error\":\"request body too large\"}");
	http_client_response_free(&resp);
	assert_ping();

	fd = raw_connect();
	raw_send(fd, "PUT /echo HTTP/1.1\r\nTransfer-Encoding: br\r\n\r\n", 45);
	raw_read_all(fd, buf, sizeof(buf), 5000);
	cr_assert_eq(strncmp(buf, "HTTP/1.1 501 ", 13), 0, "%s", buf);
	close(fd);
	assert_ping();

	/* A client that sends half a request and hangs up. */
	fd = raw_connect();
	raw_send(fd, "PUT /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc", 46);
	close(fd);
	assert_ping();
	fx_stop();
}

Test(http_sock, idle_and_stuck_connections_closed, .timeout = 20)
{
	struct http_server_config cfg = { .idle_timeout_ms = 200 };
	char buf[256];
	int idle, stuck, busy;
	struct http_exchange *ex;

	fx_start(&cfg);
	idle = raw_connect();
	stuck = raw_connect();
	busy = raw_connect();
	raw_send(stuck, "GET /ping HTTP/1.1\r\nHost:", 25);
	raw_send(busy, "GET /defer HTTP/1.1\r\n\r\n", 23);
	ex = wait_parked();
	cr_assert_eq(raw_read_all(idle, buf, sizeof(buf), 3000), 0);
	/* a begun request gets 408 before the close */
	size_t n = raw_read_all(stuck, buf, sizeof(buf) - 1, 3000);
	buf[n] = 0;
	cr_assert(strstr(buf, " 408 "), "'%s'", buf);
	/* A connection waiting for a deferred response is not idle. */
	sleep_ms(300);
	http_respond(ex, 200, "text/plain", "done", 4);
	raw_read_one(busy, buf, sizeof(buf));
	cr_assert_not_null(strstr(buf, "\r\n\r\ndone"));
	close(idle);
	close(stuck);
	close(busy);
	assert_ping();
	fx_stop();
}

Test(http_sock, half_closed_client_gets_answer, .timeout = 20)
{
	char buf[1024];
	int fd;

	fx_start(NULL);
	fd = raw_connect();
	raw_send(fd, "GET /late HTTP/1.1\r\n\r\n", 22);
	shutdown(fd, SHUT_WR);
	raw_read_all(fd, buf, sizeof(buf), 5000);
	cr_assert_eq(strncmp(buf, "HTTP/1.1 200 ", 13), 0, "%s", buf);
	cr_assert_not_null(strstr(buf, "\r\n\r\nlate"));
	close(fd);
	fx_stop();
}

/* ---------------------------------------------------------------- client errors */

/* A fake server that answers every connection with fixed bytes. */
struct fake {
	int lfd;
	const char *reply;
};

/* Accepts one connection, reads a little, writes the reply, closes. */
static void *fake_server(void *arg)
{
	struct fake *f = arg;
	char buf[4096];
	int fd = accept(f->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	if (recv(fd, buf, sizeof(buf), 0) < 0) {
		/* ignored */
	}
	if (send(fd, f->reply, strlen(f->reply), MSG_NOSIGNAL) < 0) {
		/* ignored */
	}
	close(fd);
	return NULL;
}

/* Runs one client request against a fake server replying reply. */
static int fake_request(const char *reply, struct http_client_response *resp)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fake f = { .reply = reply };
	pthread_t t;
	int rc;

	snprintf(fx.dir, sizeof(fx.dir), "/tmp/forkvm-http-XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir));
	snprintf(fx.path, sizeof(fx.path), "%s/fake.sock", fx.dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.path);
	f.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(f.lfd, 4), 0);
	cr_assert_eq(pthread_create(&t, NULL, fake_server, &f), 0);
	rc = http_client_request(fx.path, "GET", "/", NULL, NULL, 0, 5000, resp);
	pthread_join(t, NULL);
	close(f.lfd);
	unlink(fx.path);
	rmdir(fx.dir);
	return rc;
}

Test(http_client, malformed_response_is_eproto, .timeout = 20)
{
	struct http_client_response resp;

	cr_assert_eq(fake_request("SMTP ready\r\n\r\n", &resp), -EPROTO);
	cr_assert_eq(fake_request("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", &resp), -EPROTO);
	cr_assert_eq(fake_request("", &resp), -EPROTO);
}

Test(http_client, close_delimited_and_interim, .timeout = 20)
{
	struct http_client_response resp;

	cr_assert_eq(fake_request("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 201 Created\r\nContent-Type: a/b\r\n\r\nuntil eof",
				  &resp),
		     0);
	cr_assert_eq(resp.status, 201);
	cr_assert_str_eq(resp.body, "until eof");
	cr_assert_str_eq(resp.content_type, "a/b");
	http_client_response_free(&resp);
	cr_assert_eq(fake_request("HTTP/1.1 204 No Content\r\n\r\n", &resp), 0);
	cr_assert_eq(resp.status, 204);
	cr_assert_str_eq(resp.body, "");
	cr_assert_null(resp.content_type);
	http_client_response_free(&resp);
}

Test(http_client, connect_errors, .timeout = 20)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct http_client_response resp;
	int fd;

	cr_assert_eq(http_client_request("/nonexistent/forkvm.sock", "GET", "/", NULL, NULL, 0, 1000, &resp),
		     -ENOENT);
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/forkvm-http-XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir));
	snprintf(fx.path, sizeof(fx.path), "%s/dead.sock", fx.dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(http_client_request(fx.path, "GET", "/", NULL, NULL, 0, 1000, &resp), -ECONNREFUSED);
	close(fd);
	unlink(fx.path);
	rmdir(fx.dir);
}

Test(http_client, timeout, .timeout = 20)
{
	struct http_client_response resp;
	struct http_exchange *ex;
	int rc;

	fx_start(NULL);
	rc = http_client_request(fx.path, "GET", "/defer", NULL, NULL, 0, 200, &resp);
	cr_assert_eq(rc, -ETIMEDOUT, "%d", rc);
	ex = wait_parked();
	http_respond(ex, 200, NULL, NULL, 0);
	assert_ping();
	fx_stop();
}
