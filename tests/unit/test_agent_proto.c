/* tests/unit/test_agent_proto.c - the agent protocol: framing helpers of
 * common/agent_client, and the real guest agent (build/guest/agent, found
 * through FORKVM_GUEST) run natively on the host with a socketpair or a Unix
 * socket as its fd 0/1. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
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

#include "common/agent_client.h"
#include "common/util.h"
#include "guest/abi/forkvm_identity.h"
#include "guest/abi/forkvm_linux.h"

#define T_MS 10000 /* generous per-request timeout */

/* ---------------------------------------------------------------- framing */

static json_t *must_load(const char *text)
{
	json_error_t err;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &err);

	cr_assert_not_null(j, "bad test JSON %s: %s", text, err.text);
	return j;
}

Test(agent_frame, round_trip)
{
	json_t *msg = must_load("{\"id\":\"x-1\",\"op\":\"eval\",\"code\":\"'\xc3\xa9' + 1\","
				"\"n\":[1,2.5,null,true,{\"k\":\"v\"}]}");
	json_t *back = NULL;
	char *buf = NULL;
	size_t len = 0, consumed = 0;

	cr_assert_eq(agent_frame_encode(msg, &buf, &len), 0);
	cr_assert_gt(len, 4);
	cr_assert_eq(((unsigned char)buf[0] << 24 | (unsigned char)buf[1] << 16 |
		      (unsigned char)buf[2] << 8 | (unsigned char)buf[3]),
		     len - 4, "big-endian payload length");
	cr_assert_eq(agent_frame_decode(buf, len, &consumed, &back), 0);
	cr_assert_eq(consumed, len);
	cr_assert(json_equal(msg, back));
	json_decref(back);
	free(buf);
	json_decref(msg);
}

Test(agent_frame, partial_frames_need_more)
{
	json_t *msg = must_load("{\"op\":\"ping\",\"id\":7}");
	json_t *back = (json_t *)1;
	char *buf = NULL;
	size_t len = 0, consumed = 99;

	cr_assert_eq(agent_frame_encode(msg, &buf, &len), 0);
	for (size_t i = 0; i < len; i++) {
		cr_assert_eq(agent_frame_decode(buf, i, &consumed, &back), -EAGAIN, "prefix %zu", i);
		cr_assert_eq(consumed, 0);
		cr_assert_null(back);
	}
	free(buf);
	json_decref(msg);
}

Test(agent_frame, two_frames_and_empty_frames)
{
	json_t *a = must_load("{\"a\":1}"), *b = must_load("{\"b\":2}"), *m = NULL;
	char *fa, *fb, stream[256];
	size_t la, lb, n = 0, consumed;

	cr_assert_eq(agent_frame_encode(a, &fa, &la), 0);
	cr_assert_eq(agent_frame_encode(b, &fb, &lb), 0);
	memset(stream, 0, 8); /* two empty frames first: ignored */
	n = 8;
	memcpy(stream + n, fa, la);
	n += la;
	memcpy(stream + n, fb, lb);
	n += lb;

	cr_assert_eq(agent_frame_decode(stream, n, &consumed, &m), 0);
	cr_assert_eq(consumed, 8 + la);
	cr_assert(json_equal(m, a));
	json_decref(m);
	cr_assert_eq(agent_frame_decode(stream + consumed, n - consumed, &consumed, &m), 0);
	cr_assert_eq(consumed, lb);
	cr_assert(json_equal(m, b));
	json_decref(m);

	cr_assert_eq(agent_frame_decode(stream, 4, &consumed, &m), -EAGAIN);
	cr_assert_eq(consumed, 4, "an empty frame alone is consumed");
	free(fa);
	free(fb);
	json_decref(a);
	json_decref(b);
}

Test(agent_frame, oversized)
{
	unsigned char hdr[4];
	uint32_t n = AGENT_FRAME_MAX + 1;
	size_t consumed = 0;
	json_t *m = NULL;

	hdr[0] = (unsigned char)(n >> 24);
	hdr[1] = (unsigned char)(n >> 16);
	hdr[2] = (unsigned char)(n >> 8);
	hdr[3] = (unsigned char)n;
	cr_assert_eq(agent_frame_decode((char *)hdr, 4, &consumed, &m), -EMSGSIZE);
	cr_assert_eq(consumed, 4 + (size_t)n, "the whole frame is to be skipped");
	cr_assert_null(m);

	n = AGENT_FRAME_MAX; /* the limit itself is allowed */
	hdr[0] = (unsigned char)(n >> 24);
	hdr[1] = (unsigned char)(n >> 16);
	hdr[2] = (unsigned char)(n >> 8);
	hdr[3] = (unsigned char)n;
	cr_assert_eq(agent_frame_decode((char *)hdr, 4, &consumed, &m), -EAGAIN);

	/* encoding refuses payloads over the limit */
	char *big = malloc(AGENT_FRAME_MAX + 1);
	char *buf = NULL;
	size_t len;

	cr_assert_not_null(big);
	memset(big, 'a', AGENT_FRAME_MAX);
	big[AGENT_FRAME_MAX] = '\0';
	json_t *msg = json_pack("{s:s}", "s", big);

	cr_assert_not_null(msg);
	cr_assert_eq(agent_frame_encode(msg, &buf, &len), -EMSGSIZE);
	json_decref(msg);
	free(big);
}

static size_t raw_frame(char *out, const char *payload, size_t n)
{
	out[0] = (char)(n >> 24);
	out[1] = (char)(n >> 16);
	out[2] = (char)(n >> 8);
	out[3] = (char)n;
	memcpy(out + 4, payload, n);
	return 4 + n;
}

Test(agent_frame, bad_json)
{
	static const char *const bad[] = { "not json", "{\"a\":", "[1,2]", "42", "\"s\"",
					   "{\"a\":1} trailing" };
	char buf[64];
	size_t consumed;
	json_t *m = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		size_t n = raw_frame(buf, bad[i], strlen(bad[i]));

		cr_assert_eq(agent_frame_decode(buf, n, &consumed, &m), -EPROTO, "%s", bad[i]);
		cr_assert_eq(consumed, n, "the bad frame is consumed");
		cr_assert_null(m);
	}
}

Test(agent_frame, encode_rejects_non_objects)
{
	json_t *arr = json_array();
	char *buf = NULL;
	size_t len;

	cr_assert_eq(agent_frame_encode(arr, &buf, &len), -EINVAL);
	cr_assert_eq(agent_frame_encode(NULL, &buf, &len), -EINVAL);
	json_decref(arr);
}

Test(agent_client, connect_times_out)
{
	struct agent_client *c = NULL;
	uint64_t t0 = time_mono_ns();
	int rc = agent_client_connect("/nonexistent/forkvm-agent.sock", 150, &c);

	cr_assert_eq(rc, -ETIMEDOUT, "rc %d", rc);
	cr_assert_geq(time_mono_ns() - t0, 140 * 1000000ull, "it retried until the timeout");
	cr_assert_null(c);
}

/* ---------------------------------------------------------------- native agent */

struct native {
	pid_t pid;
	int raw; /* a second fd on the client end, for hand-made frames */
	struct agent_client *c;
};

/* Path of the agent binary, or skips the test. */
static const char *agent_bin(void)
{
	static char path[4096];
	const char *dir = getenv("FORKVM_GUEST");

	if (!dir || !*dir)
		cr_skip_test("FORKVM_GUEST is not set (directory holding the agent binary, e.g. "
			     "build/guest; 'make test' sets it)");
	snprintf(path, sizeof(path), "%s/agent", dir);
	if (access(path, X_OK) != 0)
		cr_skip_test("%s is missing: run 'make guest'", path);
	return path;
}

/* Forks the agent with fd as its fd 0 and 1, errfd as its fd 2 (-1:
 * /dev/null) and the arguments args (NULL-terminated; NULL: none). */
static pid_t spawn_agent_with(const char *bin, int fd, int errfd, const char *const *args)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		const char *argv[8] = { "agent" };
		int err = errfd >= 0 ? errfd : open("/dev/null", O_WRONLY);

		for (int i = 0; args && args[i] && i < 6; i++)
			argv[i + 1] = args[i];
		if (dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || err < 0 || dup2(err, 2) < 0)
			_exit(126);
		execv(bin, (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	return pid;
}

/* Starts the agent on a socketpair with the arguments args (NULL: none)
 * and its stderr on errfd (-1: /dev/null). */
static void native_start_with(struct native *n, int errfd, const char *const *args)
{
	const char *bin = agent_bin();
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	n->pid = spawn_agent_with(bin, sv[1], errfd, args);
	close(sv[1]);
	n->raw = fcntl(sv[0], F_DUPFD_CLOEXEC, 3);
	cr_assert_geq(n->raw, 0);
	cr_assert_eq(agent_client_from_fd(sv[0], &n->c), 0);
}

static void native_start(struct native *n)
{
	native_start_with(n, -1, NULL);
}

/* Waits up to 5 s for pid to exit; kills it after that. Returns the status. */
static int reap(pid_t pid)
{
	int status = 0;

	for (int i = 0; i < 500; i++) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return status;
}

/* Closes the channel (EOF for the agent) and returns its exit status. */
static int native_stop(struct native *n)
{
	agent_client_close(n->c);
	close(n->raw);
	return reap(n->pid);
}

static void send_raw(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EAGAIN) {
			nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
			continue;
		}
		cr_assert_gt(w, 0, "write: %s", strerror(errno));
		p += w;
		len -= (size_t)w;
	}
}

/* Evaluates code; asserts the request itself succeeded. Caller decrefs. */
static json_t *eval(struct native *n, const char *code)
{
	json_t *reply = NULL;
	int rc = agent_client_eval(n->c, code, T_MS, &reply);

	cr_assert_eq(rc, 0, "eval %s: %s", code, strerror(-rc));
	return reply;
}

/* Evaluates code and returns its result (ok:true asserted), as JSON text. */
static char *eval_text(struct native *n, const char *code)
{
	json_t *reply = eval(n, code);
	const char *name = NULL, *msg = NULL;
	char *s;

	cr_assert(agent_client_reply_ok(reply, &name, &msg), "eval %s: %s: %s", code, name, msg);
	s = json_dumps(json_object_get(reply, "result"), JSON_ENCODE_ANY | JSON_COMPACT);
	json_decref(reply);
	return s;
}

static void expect_eval(struct native *n, const char *code, const char *want)
{
	char *got = eval_text(n, code);

	cr_assert_str_eq(got ? got : "(no result)", want, "eval %s", code);
	free(got);
}

static void expect_error(json_t *reply, const char *want_name)
{
	const char *name = NULL, *msg = NULL;

	cr_assert_not(agent_client_reply_ok(reply, &name, &msg), "expected ok:false");
	cr_assert_str_eq(name, want_name, "message: %s", msg);
}

Test(agent_native, ready_event)
{
	struct native n;
	json_t *ev = NULL;
	const char *boot;

	native_start(&n);
	cr_assert_eq(agent_client_wait_ready(n.c, T_MS, &ev), 0);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "agent")), "forkvm-agent");
	cr_assert_eq(json_integer_value(json_object_get(ev, "version")), 1);
	cr_assert_eq(json_integer_value(json_object_get(ev, "pid")), n.pid);
	cr_assert_null(json_object_get(ev, "id"), "events have no id");
	boot = json_string_value(json_object_get(ev, "boot_id"));
	cr_assert_not_null(boot);
	cr_assert_eq(strlen(boot), 32);
	cr_assert_eq(strspn(boot, "0123456789abcdef"), 32);
	cr_assert(json_is_string(json_object_get(ev, "hostname")));
	json_decref(ev);
	cr_assert_eq(native_stop(&n), 0, "exit status 0 on EOF");
}

Test(agent_native, eval_values)
{
	struct native n;
	json_t *r;

	native_start(&n);
	cr_assert_eq(agent_client_ping(n.c, T_MS, NULL), 0);
	expect_eval(&n, "1+2", "3");
	expect_eval(&n, "'forkvm' + '-' + 'agent'", "\"forkvm-agent\"");
	expect_eval(&n, "JSON.parse('{\"a\":[1,2,{\"b\":\"x\"}],\"n\":null}')",
		    "{\"a\":[1,2,{\"b\":\"x\"}],\"n\":null}");
	expect_eval(&n, "({s: 'caf\xc3\xa9', e: '\\ud83d\\ude00', lone: '\\ud800'})",
		    "{\"s\":\"caf\xc3\xa9\",\"e\":\"\xf0\x9f\x98\x80\",\"lone\":\"\xef\xbf\xbd\"}");
	expect_eval(&n, "[NaN, Infinity, -0, 0.5]", "[null,null,0,0.5]");
	r = eval(&n, "var x = 5");
	cr_assert(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	expect_eval(&n, "x*2", "10");
	expect_eval(&n, "function twice(v) { return 2 * v }; twice(21)", "42");
	expect_eval(&n, "twice(4)", "8");

	r = eval(&n, "undefined");
	cr_assert(json_is_true(json_object_get(r, "ok")));
	cr_assert_null(json_object_get(r, "result"));
	cr_assert_str_eq(json_string_value(json_object_get(r, "type")), "undefined");
	json_decref(r);
	r = eval(&n, "(function f() {})");
	cr_assert_null(json_object_get(r, "result"));
	cr_assert_str_eq(json_string_value(json_object_get(r, "type")), "function");
	json_decref(r);
	cr_assert_eq(native_stop(&n), 0);
}

Test(agent_native, errors_do_not_kill_the_agent)
{
	struct native n;
	json_t *r;
	const char *msg;

	native_start(&n);
	r = eval(&n, "throw new TypeError('boom')");
	expect_error(r, "TypeError");
	msg = json_string_value(json_object_get(json_object_get(r, "error"), "message"));
	cr_assert_str_eq(msg, "boom");
	cr_assert(json_is_string(json_object_get(json_object_get(r, "error"), "stack")));
	json_decref(r);

	r = eval(&n, "null.x");
	expect_error(r, "TypeError");
	json_decref(r);
	r = eval(&n, "undefinedVariable + 1");
	expect_error(r, "ReferenceError");
	json_decref(r);
	r = eval(&n, "this is not javascript");
	expect_error(r, "SyntaxError");
	json_decref(r);
	r = eval(&n, "throw 42");
	expect_error(r, "Error");
	json_decref(r);
	r = eval(&n, "var o = {}; o.self = o; o");
	expect_error(r, "TypeError"); /* cyclic */
	json_decref(r);
	r = eval(&n, "function deep() { return deep() + 1 }; deep()");
	expect_error(r, "RangeError");
	json_decref(r);
	expect_eval(&n, "'still alive'", "\"still alive\"");
	cr_assert_eq(native_stop(&n), 0);
}

Test(agent_native, load_and_call)
{
	struct native n;
	json_t *r = NULL, *args;

	native_start(&n);
	cr_assert_eq(agent_client_load(n.c,
				       "function add(a, b) { return a + b }\n"
				       "var lib = { k: 10, handler: function (x) { return this.k + x } };\n"
				       "function noargs() { return arguments.length }\n"
				       "var notfn = 3;\n",
				       "handlers.js", T_MS, &r),
		     0);
	cr_assert(agent_client_reply_ok(r, NULL, NULL));
	{
		json_t *res = json_object_get(r, "result");
		json_t *fns = json_object_get(res, "functions");
		bool has_add = false;

		cr_assert_str_eq(json_string_value(json_object_get(res, "name")), "handlers.js");
		cr_assert(json_is_array(fns));
		for (size_t i = 0; i < json_array_size(fns); i++) {
			const char *f = json_string_value(json_array_get(fns, i));

			has_add |= f && strcmp(f, "add") == 0;
			cr_assert(f && strcmp(f, "notfn") != 0 && strcmp(f, "lib") != 0);
		}
		cr_assert(has_add, "functions lists add");
		cr_assert_eq(json_array_size(fns), 2, "add and noargs");
	}
	json_decref(r);

	args = must_load("[2,3]");
	cr_assert_eq(agent_client_call(n.c, "add", args, T_MS, &r), 0);
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 5);
	json_decref(r);
	json_decref(args);

	args = must_load("5");
	cr_assert_eq(agent_client_call(n.c, "lib.handler", args, T_MS, &r), 0);
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 15, "this is lib");
	json_decref(r);
	json_decref(args);

	cr_assert_eq(agent_client_call(n.c, "noargs", NULL, T_MS, &r), 0);
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 0);
	json_decref(r);

	cr_assert_eq(agent_client_call(n.c, "missing", NULL, T_MS, &r), 0);
	expect_error(r, "ReferenceError");
	json_decref(r);
	cr_assert_eq(agent_client_call(n.c, "lib.nope.deeper", NULL, T_MS, &r), 0);
	expect_error(r, "ReferenceError");
	json_decref(r);
	cr_assert_eq(agent_client_call(n.c, "notfn", NULL, T_MS, &r), 0);
	expect_error(r, "TypeError");
	json_decref(r);

	cr_assert_eq(agent_client_load(n.c, "function broken( {", NULL, T_MS, &r), 0);
	expect_error(r, "SyntaxError");
	json_decref(r);
	cr_assert_eq(agent_client_load(n.c, "throw new RangeError('no')", "bad.js", T_MS, &r), 0);
	expect_error(r, "RangeError");
	json_decref(r);
	cr_assert_eq(native_stop(&n), 0);
}

Test(agent_native, info)
{
	struct native n;
	json_t *r = NULL, *res, *mem;

	native_start(&n);
	cr_assert_eq(agent_client_load(n.c, "function h() {}", "h.js", T_MS, &r), 0);
	json_decref(r);
	cr_assert_eq(agent_client_info(n.c, T_MS, &r), 0);
	res = json_object_get(r, "result");
	cr_assert_str_eq(json_string_value(json_object_get(res, "agent")), "forkvm-agent");
	cr_assert_eq(json_integer_value(json_object_get(res, "version")), 1);
	cr_assert_eq(json_integer_value(json_object_get(res, "pid")), n.pid);
	cr_assert_eq(strlen(json_string_value(json_object_get(res, "boot_id"))), 32);
	cr_assert(json_is_string(json_object_get(res, "hostname")));
	cr_assert(json_is_integer(json_object_get(res, "uptime_ms")));
	cr_assert_eq(json_integer_value(json_object_get(res, "requests")), 2);
	mem = json_object_get(res, "memory");
	cr_assert_gt(json_integer_value(json_object_get(mem, "js_heap_bytes")), 0);
	cr_assert_geq(json_integer_value(json_object_get(mem, "js_heap_peak_bytes")),
		      json_integer_value(json_object_get(mem, "js_heap_bytes")));
	cr_assert_gt(json_integer_value(json_object_get(mem, "ram_total_bytes")), 0);
	cr_assert(json_is_integer(json_object_get(mem, "ram_free_bytes")));
	cr_assert_eq(json_array_size(json_object_get(res, "loaded")), 1);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(res, "loaded"), 0)), "h.js");
	json_decref(r);
	cr_assert_eq(native_stop(&n), 0);
}

Test(agent_native, big_allocation)
{
	struct native n;
	json_t *r;

	native_start(&n);
	expect_eval(&n, "var b = new Uint8Array(50*1024*1024); b[b.length-1]=7; b.length", "52428800");
	expect_eval(&n, "b[b.length-1]", "7");
	expect_eval(&n, "b = null; 1", "1");
	r = eval(&n, "'x'.repeat(70*1024*1024)"); /* a result over the frame limit */
	expect_error(r, "RangeError");
	json_decref(r);
	expect_eval(&n, "'x'.repeat(1024*1024).length", "1048576");
	cr_assert_eq(native_stop(&n), 0);
}

Test(agent_native, garbage_and_protocol_errors)
{
	struct native n;
	json_t *r = NULL, *req;
	char buf[128];
	size_t len;

	native_start(&n);
	cr_assert_eq(agent_client_wait_ready(n.c, T_MS, NULL), 0);
	/* a non-JSON frame: answered with id null, skipped by the client */
	len = raw_frame(buf, "this is not json", 16);
	send_raw(n.raw, buf, len);
	req = must_load("{\"op\":\"frobnicate\"}");
	cr_assert_eq(agent_client_request(n.c, req, T_MS, &r), 0);
	expect_error(r, "ProtocolError");
	json_decref(r);
	json_decref(req);
	req = must_load("{\"code\":\"1\"}"); /* no op */
	cr_assert_eq(agent_client_request(n.c, req, T_MS, &r), 0);
	expect_error(r, "ProtocolError");
	json_decref(r);
	json_decref(req);
	req = must_load("{\"op\":\"eval\",\"code\":17}");
	cr_assert_eq(agent_client_request(n.c, req, T_MS, &r), 0);
	expect_error(r, "ProtocolError");
	json_decref(r);
	json_decref(req);
	cr_assert_eq(agent_client_ping(n.c, T_MS, NULL), 0);
	cr_assert_eq(native_stop(&n), 0);
}

/* Reads exactly len bytes from the (non-blocking) fd. */
static void read_exact(int fd, char *buf, size_t len)
{
	while (len > 0) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r = read(fd, buf, len);

		if (r < 0 && errno == EAGAIN) {
			cr_assert_eq(poll(&p, 1, T_MS), 1, "no frame within the timeout");
			continue;
		}
		cr_assert_gt(r, 0, "read: %s", r < 0 ? strerror(errno) : "EOF");
		buf += r;
		len -= (size_t)r;
	}
}

/* Reads one raw frame from fd and returns it parsed. */
static json_t *read_raw_msg(int fd)
{
	static char buf[1 << 16];
	size_t n, consumed;
	json_t *m = NULL;

	read_exact(fd, buf, 4);
	n = (size_t)((unsigned char)buf[0] << 24 | (unsigned char)buf[1] << 16 |
		     (unsigned char)buf[2] << 8 | (unsigned char)buf[3]);
	cr_assert_leq(n, sizeof(buf) - 4);
	read_exact(fd, buf + 4, n);
	cr_assert_eq(agent_frame_decode(buf, 4 + n, &consumed, &m), 0);
	return m;
}

Test(agent_native, raw_ids_echoed_and_oversized_frames)
{
	struct native n;
	json_t *m;
	char buf[256];
	size_t len;
	const char *p;

	native_start(&n);
	m = read_raw_msg(n.raw);
	cr_assert_str_eq(json_string_value(json_object_get(m, "event")), "ready");
	json_decref(m);

	/* 2^53 + 1 is not a double: the id is echoed as raw text */
	p = "{\"id\": 9007199254740993, \"op\": \"ping\"}";
	send_raw(n.raw, buf, raw_frame(buf, p, strlen(p)));
	m = read_raw_msg(n.raw);
	cr_assert_eq(json_integer_value(json_object_get(m, "id")), 9007199254740993LL);
	cr_assert_str_eq(json_string_value(json_object_get(m, "result")), "pong");
	json_decref(m);

	p = "{\"op\":\"eval\",\"code\":\"1\",\"id\":\"\xc3\xa9t\xc3\xa9\"}";
	send_raw(n.raw, buf, raw_frame(buf, p, strlen(p)));
	m = read_raw_msg(n.raw);
	cr_assert_str_eq(json_string_value(json_object_get(m, "id")), "\xc3\xa9t\xc3\xa9");
	json_decref(m);

	/* an oversized frame: an error with id null, its bytes are skipped */
	{
		uint32_t big = AGENT_FRAME_MAX + 1;
		char hdr[4] = { (char)(big >> 24), (char)(big >> 16), (char)(big >> 8), (char)big };
		size_t chunk = 1 << 20, left = big;
		char *zeros = calloc(1, chunk);

		cr_assert_not_null(zeros);
		send_raw(n.raw, hdr, 4);
		m = read_raw_msg(n.raw);
		cr_assert(json_is_null(json_object_get(m, "id")));
		cr_assert_str_eq(json_string_value(json_object_get(json_object_get(m, "error"), "name")),
				 "ProtocolError");
		json_decref(m);
		while (left > 0) {
			size_t k = left < chunk ? left : chunk;

			send_raw(n.raw, zeros, k);
			left -= k;
		}
		free(zeros);
	}
	memset(buf, 0, 4); /* an empty frame: ignored */
	send_raw(n.raw, buf, 4);
	p = "{\"id\":\"after\",\"op\":\"ping\"}";
	len = raw_frame(buf, p, strlen(p));
	send_raw(n.raw, buf, len);
	m = read_raw_msg(n.raw);
	cr_assert_str_eq(json_string_value(json_object_get(m, "id")), "after");
	cr_assert_str_eq(json_string_value(json_object_get(m, "result")), "pong");
	json_decref(m);
	cr_assert_eq(native_stop(&n), 0);
}

Test(agent_native, stale_replies_are_skipped)
{
	struct native n;
	json_t *r = NULL;
	char buf[128];
	const char *p = "{\"id\":\"someone-else\",\"op\":\"eval\",\"code\":\"'not for you'\"}";

	native_start(&n);
	send_raw(n.raw, buf, raw_frame(buf, p, strlen(p)));
	cr_assert_eq(agent_client_eval(n.c, "'mine'", T_MS, &r), 0);
	cr_assert_str_eq(json_string_value(json_object_get(r, "result")), "mine");
	json_decref(r);
	cr_assert_eq(native_stop(&n), 0);
}

Test(agent_native, request_timeout)
{
	struct native n;
	json_t *r = NULL;
	uint64_t t0;

	native_start(&n);
	cr_assert_eq(agent_client_ping(n.c, T_MS, NULL), 0);
	t0 = time_mono_ns();
	cr_assert_eq(agent_client_eval(n.c, "for (;;) {}", 200, &r), -ETIMEDOUT);
	cr_assert_lt(time_mono_ns() - t0, 5000 * 1000000ull);
	kill(n.pid, SIGKILL);
	native_stop(&n);
}

static double random_of(struct native *n)
{
	char *s = eval_text(n, "Math.random()");
	double v = strtod(s, NULL);

	free(s);
	cr_assert(v >= 0 && v < 1, "Math.random() in [0, 1): %g", v);
	return v;
}

Test(agent_native, random_differs_and_reseed)
{
	struct native a, b;
	double va, vb;

	native_start(&a);
	native_start(&b);
	va = random_of(&a);
	vb = random_of(&b);
	cr_assert_neq(va, vb, "two agents share a random stream");
	expect_eval(&a, "typeof __forkvm_reseed", "\"function\"");
	expect_eval(&a, "__forkvm_reseed() === undefined", "true");
	random_of(&a);
	expect_eval(&a, "var s = {}; for (var i = 0; i < 1000; i++) s[Math.random()] = 1; "
			"Object.keys(s).length",
		    "1000");
	cr_assert_eq(native_stop(&a), 0);
	cr_assert_eq(native_stop(&b), 0);
}

Test(agent_native, random_hex_draws_from_the_kernel)
{
	struct native a;

	native_start(&a);
	expect_eval(&a, "forkvm.randomHex(16).length", "32");
	expect_eval(&a, "/^[0-9a-f]{8192}$/.test(forkvm.randomHex(4096))", "true");
	expect_eval(&a, "forkvm.randomHex(16) !== forkvm.randomHex(16)", "true");
	expect_eval(&a, "try { forkvm.randomHex(0); 'no' } catch (e) { e.name }", "\"RangeError\"");
	expect_eval(&a, "try { forkvm.randomHex(4097); 'no' } catch (e) { e.name }",
		    "\"RangeError\"");
	cr_assert_eq(native_stop(&a), 0);
}

Test(agent_native, console_goes_to_stderr)
{
	struct native n;

	native_start(&n);
	/* nothing of this may reach fd 1: the next frame must be the reply */
	expect_eval(&n, "print('a', {b: 1}); console.log('c'); console.error(new Error('d')); 7",
		    "7");
	expect_eval(&n, "typeof console.warn + typeof console.info", "\"functionfunction\"");
	cr_assert_eq(native_stop(&n), 0);
}

/* End to end through a Unix socket: a listener that appears late (a VM that
 * is still starting), agent_client_connect, wait_ready, requests. */
Test(agent_native, unix_socket_end_to_end)
{
	const char *bin = agent_bin();
	char dir[] = "/tmp/forkvm-agent-test-XXXXXX";
	char path[128];
	struct agent_client *c = NULL;
	json_t *ev = NULL, *r = NULL;
	pid_t pid;
	int status;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/agent.sock", dir);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) { /* listener: after 200 ms, accept one client, become the agent */
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int l, conn, null;

		nanosleep(&(struct timespec){ .tv_nsec = 200000000 }, NULL);
		strcpy(sa.sun_path, path);
		l = socket(AF_UNIX, SOCK_STREAM, 0);
		if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 1) < 0)
			_exit(125);
		conn = accept(l, NULL, NULL);
		null = open("/dev/null", O_WRONLY);
		if (conn < 0 || null < 0 || dup2(conn, 0) < 0 || dup2(conn, 1) < 0 || dup2(null, 2) < 0)
			_exit(126);
		close(l);
		unlink(sa.sun_path);
		execl(bin, "agent", (char *)NULL);
		_exit(127);
	}
	cr_assert_eq(agent_client_connect(path, T_MS, &c), 0, "connect retries until the socket exists");
	cr_assert_eq(agent_client_wait_ready(c, T_MS, &ev), 0);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "event")), "ready");
	json_decref(ev);
	cr_assert_eq(agent_client_ping(c, T_MS, NULL), 0);
	cr_assert_eq(agent_client_eval(c, "var greeting = 'hello'; greeting + ' world'", T_MS, &r), 0);
	cr_assert_str_eq(json_string_value(json_object_get(r, "result")), "hello world");
	json_decref(r);
	cr_assert_eq(agent_client_eval(c, "greeting.length", T_MS, &r), 0);
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 5);
	json_decref(r);
	agent_client_close(c);
	status = reap(pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
	rmdir(dir);
}

/* ---------------------------------------------------------------- Linux guest options */

/* A pipe for the agent's stderr: [0] non-blocking, for the test. */
static void err_pipe(int p[2])
{
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
}

/* What is in the pipe now (at most len - 1 bytes), NUL-terminated. */
static const char *drain(int fd, char *buf, size_t len)
{
	size_t n = 0;

	for (;;) {
		ssize_t r = read(fd, buf + n, len - 1 - n);
		if (r <= 0 || (n += (size_t)r) == len - 1)
			break;
	}
	buf[n] = '\0';
	return buf;
}

Test(agent_native, bad_options_are_refused_with_a_message)
{
	static const struct {
		const char *args[3];
		const char *says;
	} cases[] = {
		{ { "--vsock" }, "--vsock needs a port" },
		{ { "--vsock", "port" }, "--vsock port: the port must be a number" },
		{ { "--vsock", "0" }, "--vsock 0: the port must be a number from 1 to 4294967294" },
		{ { "--vsock", "4294967295" }, "--vsock 4294967295: the port must be" },
		{ { "--vsock=-1" }, "--vsock -1: the port must be" },
		{ { "--vsock", "1024x" }, "--vsock 1024x: the port must be" },
		{ { "--identity-devmem=" }, "unknown argument '--identity-devmem='" },
		{ { "--vsock=1024", "extra" }, "unknown argument 'extra'" },
		{ { "-v" }, "unknown argument '-v'" },
	};
	const char *bin = agent_bin();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int p[2], sv[2];
		char out[1024];

		err_pipe(p);
		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		pid_t pid = spawn_agent_with(bin, sv[1], p[1], cases[i].args);
		close(sv[1]);
		close(p[1]);
		int status = reap(pid);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "case %zu: status %#x", i,
			  status);
		drain(p[0], out, sizeof(out));
		cr_assert(strstr(out, cases[i].says), "case %zu: stderr '%s'", i, out);
		cr_assert(strncmp(out, "forkvm-agent: ", 14) == 0, "case %zu: %s", i, out);
		/* nothing on the channel: not even the ready event */
		char b;
		cr_assert_eq(read(sv[0], &b, 1), 0, "case %zu", i);
		close(sv[0]);
		close(p[0]);
	}
}

/* A file standing for /dev/mem: sparse, with an identity page at
 * FORKVM_IDENTITY_LINUX_GPA when id is not NULL. */
static char *fake_devmem(char *dir, const struct forkvm_identity *id, uint64_t size)
{
	char *path = NULL;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_gt(asprintf(&path, "%s/mem", dir), 0);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	if (id)
		cr_assert_eq(pwrite(fd, id, sizeof(*id), FORKVM_IDENTITY_LINUX_GPA),
			     (ssize_t)sizeof(*id));
	close(fd);
	return path;
}

/* The result of an info request. Caller decrefs the reply. */
static json_t *info_of(struct native *n, json_t **reply)
{
	cr_assert_eq(agent_client_info(n->c, T_MS, reply), 0);
	return json_object_get(*reply, "result");
}

Test(agent_native, identity_devmem_reports_the_linux_guests_page)
{
	char dir[] = "/tmp/forkvm-agent-test-XXXXXX", out[1024], arg[160];
	struct forkvm_identity id = {
		.magic = FORKVM_IDENTITY_MAGIC, .version = FORKVM_IDENTITY_VERSION,
		.size = sizeof(id), .generation = 5, .clone_id = "9e3b5f0c1a7d",
	};
	char *path = fake_devmem(dir, &id, FORKVM_IDENTITY_LINUX_GPA + 4096);
	struct native n;
	json_t *r = NULL, *res;
	int p[2];

	snprintf(arg, sizeof(arg), "--identity-devmem=%s", path);
	err_pipe(p);
	native_start_with(&n, p[1], (const char *const[]){ arg, NULL });
	close(p[1]);
	cr_assert_eq(agent_client_wait_ready(n.c, T_MS, NULL), 0);
	/* one line on the console at start */
	cr_assert_str_eq(drain(p[0], out, sizeof(out)),
			 "forkvm-agent: identity page at 0xf0000: generation 5, clone_id "
			 "\"9e3b5f0c1a7d\"\n");
	expect_eval(&n, "JSON.stringify(forkvm.identity())",
		    "\"{\\\"clone_id\\\":\\\"9e3b5f0c1a7d\\\",\\\"generation\\\":5}\"");
	res = info_of(&n, &r);
	cr_assert_eq(json_integer_value(json_object_get(res, "generation")), 5);
	cr_assert_str_eq(json_string_value(json_object_get(res, "clone_id")), "9e3b5f0c1a7d");
	cr_assert_eq(json_integer_value(json_object_get(res, "reseeds")), 0);
	json_decref(r);

	/* what the VMM does at a restore: the agent sees it at its next request */
	id.generation = 6;
	snprintf(id.clone_id, sizeof(id.clone_id), "clone-b");
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, &id, sizeof(id), FORKVM_IDENTITY_LINUX_GPA), (ssize_t)sizeof(id));
	close(fd);
	res = info_of(&n, &r);
	cr_assert_eq(json_integer_value(json_object_get(res, "generation")), 6);
	cr_assert_str_eq(json_string_value(json_object_get(res, "clone_id")), "clone-b");
	cr_assert_eq(json_integer_value(json_object_get(res, "reseeds")), 1,
		     "a new generation re-seeds Math.random");
	json_decref(r);
	expect_eval(&n, "forkvm.identity().clone_id + ' ' + forkvm.identity().generation",
		    "\"clone-b 6\"");
	cr_assert_eq(native_stop(&n), 0);
	cr_assert_str_eq(drain(p[0], out, sizeof(out)), "", "nothing more on the console");
	close(p[0]);
	unlink(path);
	free(path);
	rmdir(dir);
}

Test(agent_native, identity_devmem_without_a_page_says_so_and_carries_on)
{
	static const struct {
		uint64_t size;
		bool page;
		const char *says;
	} cases[] = {
		{ FORKVM_IDENTITY_LINUX_GPA + 4096, false,
		  "at 0xf0000 holds no identity page (magic 0000000000000000, version 0)" },
		{ FORKVM_IDENTITY_LINUX_GPA, true, "is too short to hold 0xf0000" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char dir[] = "/tmp/forkvm-agent-test-XXXXXX", out[1024], arg[160];
		char *path = fake_devmem(dir, NULL, cases[i].size);
		struct native n;
		int p[2];

		snprintf(arg, sizeof(arg), "--identity-devmem=%s", path);
		err_pipe(p);
		native_start_with(&n, p[1], (const char *const[]){ arg, NULL });
		close(p[1]);
		cr_assert_eq(agent_client_wait_ready(n.c, T_MS, NULL), 0);
		drain(p[0], out, sizeof(out));
		cr_assert(strncmp(out, "forkvm-agent: no identity page: ", 32) == 0, "%s", out);
		cr_assert(strstr(out, cases[i].says), "case %zu: %s", i, out);
		cr_assert(strstr(out, "; carrying on without\n"), "%s", out);
		cr_assert_eq(strchr(out, '\n') - out + 1, (long)strlen(out), "one line: %s", out);
		expect_eval(&n, "JSON.stringify(forkvm.identity())",
			    "\"{\\\"clone_id\\\":\\\"\\\",\\\"generation\\\":0}\"");
		cr_assert_eq(native_stop(&n), 0);
		close(p[0]);
		unlink(path);
		free(path);
		rmdir(dir);
	}
	/* no such file: the same, with the reason */
	char out[1024];
	struct native n;
	int p[2];
	err_pipe(p);
	native_start_with(&n, p[1],
			  (const char *const[]){ "--identity-devmem=/nonexistent/mem", NULL });
	close(p[1]);
	cr_assert_eq(agent_client_wait_ready(n.c, T_MS, NULL), 0);
	cr_assert_str_eq(drain(p[0], out, sizeof(out)),
			 "forkvm-agent: no identity page: cannot open /nonexistent/mem: No such "
			 "file or directory; carrying on without\n");
	cr_assert_eq(native_stop(&n), 0);
	close(p[0]);
}
