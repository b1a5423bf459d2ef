/* forkd/invoke.c - the serverless path: take a clone, call a function
 * through its agent channel (docs/agent-protocol.md, op "call"), answer,
 * destroy the clone. The agent exchange is non-blocking on forkd's loop;
 * a timerfd enforces the time limit, which kills the clone. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/agent_client.h"
#include "common/log.h"
#include "common/util.h"
#include "forkd/internal.h"

#define INVOKE_DEFAULT_TIMEOUT_MS 10000
#define INVOKE_MAX_TIMEOUT_MS 600000
#define INVOKE_MAX_REPLY (64u << 20)

struct invoke {
	struct forkd *d;
	struct http_exchange *ex;
	struct clone *clone;
	char *fn;
	json_t *args; /* NULL: none */
	unsigned timeout_ms;
	uint64_t t0;
	int fd, tfd;
	char *wbuf;
	size_t wlen, woff;
	char *rbuf;
	size_t rlen, rcap;
};

static void invoke_free(struct forkd *d, struct invoke *inv)
{
	if (inv->fd >= 0) {
		loop_del(d->loop, inv->fd);
		close(inv->fd);
	}
	if (inv->tfd >= 0) {
		loop_del(d->loop, inv->tfd);
		close(inv->tfd);
	}
	if (inv->clone) {
		inv->clone->inv = NULL;
		forkd_clone_kill(d, inv->clone); /* reaped and forgotten (hidden) */
	}
	free(inv->fn);
	json_decref(inv->args);
	free(inv->wbuf);
	free(inv->rbuf);
	free(inv);
}

void forkd_invoke_fail(struct forkd *d, struct invoke *inv, int status, const char *msg)
{
	d->invokes_failed++;
	http_respond_error(inv->ex, status, "invoke %s: %s", inv->fn, msg);
	invoke_free(d, inv);
}

static void on_timer(void *arg, uint32_t events)
{
	struct invoke *inv = arg;
	struct forkd *d = inv->d;
	(void)events;
	d->invokes_timeout++;
	http_respond_error(inv->ex, 504, "%s did not return within %u ms: its clone was killed", inv->fn,
			   inv->timeout_ms);
	invoke_free(d, inv);
}

static void finish(struct forkd *d, struct invoke *inv, json_t *reply)
{
	json_t *out = json_object();
	json_t *ok = json_object_get(reply, "ok");

	json_object_set(out, "ok", ok ? ok : json_false());
	const char *k;
	json_t *v;
	json_object_foreach(reply, k, v) {
		if (strcmp(k, "id") && strcmp(k, "ok"))
			json_object_set(out, k, v);
	}
	json_object_set_new(out, "clone", json_string(inv->clone ? inv->clone->id : ""));
	json_object_set_new(out, "duration_us",
			   json_integer((json_int_t)((time_mono_ns() - inv->t0) / 1000)));
	if (json_is_true(ok))
		d->invokes_ok++;
	else
		d->invokes_error++;
	http_respond_json(inv->ex, 200, out);
	json_decref(out);
	invoke_free(d, inv);
}

static void on_agent(void *arg, uint32_t events)
{
	struct invoke *inv = arg;
	struct forkd *d = inv->d;

	if (inv->woff < inv->wlen && (events & EPOLLOUT)) {
		ssize_t n = send(inv->fd, inv->wbuf + inv->woff, inv->wlen - inv->woff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			forkd_invoke_fail(d, inv, 500, "the clone's agent channel closed");
			return;
		}
		if (n > 0)
			inv->woff += (size_t)n;
		if (inv->woff == inv->wlen && loop_mod(d->loop, inv->fd, EPOLLIN) < 0) {
			forkd_invoke_fail(d, inv, 500, "event loop failure");
			return;
		}
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (;;) {
		if (inv->rcap - inv->rlen < 65536) {
			size_t ncap = inv->rcap ? inv->rcap * 2 : 131072;
			char *nb = ncap <= INVOKE_MAX_REPLY + 65536 ? realloc(inv->rbuf, ncap) : NULL;
			if (!nb) {
				forkd_invoke_fail(d, inv, 500, "the reply is too large");
				return;
			}
			inv->rbuf = nb;
			inv->rcap = ncap;
		}
		ssize_t n = recv(inv->fd, inv->rbuf + inv->rlen, inv->rcap - inv->rlen, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			forkd_invoke_fail(d, inv, 500, "the clone's agent channel closed before the answer");
			return;
		}
		inv->rlen += (size_t)n;
	}
	while (inv->rlen) {
		size_t used = 0;
		json_t *msg = NULL;
		int rc = agent_frame_decode(inv->rbuf, inv->rlen, &used, &msg);
		if (rc == -EAGAIN && used == 0)
			return;
		if (rc == -EMSGSIZE || used > inv->rlen) {
			forkd_invoke_fail(d, inv, 500, "the agent sent an oversized frame");
			return;
		}
		memmove(inv->rbuf, inv->rbuf + used, inv->rlen - used);
		inv->rlen -= used;
		if (rc == -EPROTO) {
			forkd_invoke_fail(d, inv, 500, "the agent sent a malformed frame");
			return;
		}
		if (rc < 0)
			continue;
		json_t *id = json_object_get(msg, "id");
		if (json_is_integer(id) && json_integer_value(id) == 1) {
			finish(d, inv, msg);
			json_decref(msg);
			return;
		}
		json_decref(msg); /* events, and nothing else is ours */
	}
}

void forkd_invoke_bind(struct invoke *inv, struct clone *c)
{
	inv->clone = c;
}

void forkd_invoke_clone_running(struct forkd *d, struct invoke *inv, struct clone *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	json_t *req;
	int rc;

	inv->clone = c;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.96s/agent.sock", c->dir);
	inv->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (inv->fd < 0 || connect(inv->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		char msg[300];
		snprintf(msg, sizeof(msg), "cannot connect to the clone's agent: %s", strerror(errno));
		forkd_invoke_fail(d, inv, 500, msg);
		return;
	}
	req = json_pack("{s:i,s:s,s:s}", "id", 1, "op", "call", "fn", inv->fn);
	if (req && inv->args)
		json_object_set(req, "args", inv->args);
	rc = req ? agent_frame_encode(req, &inv->wbuf, &inv->wlen) : -ENOMEM;
	json_decref(req);
	if (rc < 0) {
		forkd_invoke_fail(d, inv, rc == -EMSGSIZE ? 413 : 500, "cannot encode the call");
		return;
	}
	if (loop_add(d->loop, inv->fd, EPOLLIN | EPOLLOUT, on_agent, inv) < 0) {
		forkd_invoke_fail(d, inv, 500, "event loop failure");
		return;
	}
	on_agent(inv, EPOLLOUT);
}

void forkd_invoke_start(struct forkd *d, struct template *t, const json_t *body,
			struct http_exchange *ex)
{
	const char *k, *fn = NULL;
	json_t *v, *args = NULL;
	json_int_t timeout = INVOKE_DEFAULT_TIMEOUT_MS;
	char err[512];

	json_object_foreach((json_t *)(uintptr_t)body, k, v) {
		if (!strcmp(k, "fn") && json_is_string(v)) {
			fn = json_string_value(v);
		} else if (!strcmp(k, "args")) {
			args = v;
		} else if (!strcmp(k, "timeout_ms") && json_is_integer(v)) {
			timeout = json_integer_value(v);
		} else {
			http_respond_error(ex, 400, "invoke: unknown or mistyped field %s", k);
			return;
		}
	}
	if (!fn || !*fn) {
		http_respond_error(ex, 400, "invoke needs {\"fn\": NAME}");
		return;
	}
	if (timeout < 1 || timeout > INVOKE_MAX_TIMEOUT_MS) {
		http_respond_error(ex, 400, "invoke: timeout_ms must be 1..%d", INVOKE_MAX_TIMEOUT_MS);
		return;
	}
	int st = forkd_capacity_check(d, 1, err, sizeof(err));
	if (st) {
		d->fork_failures++;
		http_respond_error(ex, st, "%s", err);
		return;
	}
	struct invoke *inv = calloc(1, sizeof(*inv));
	if (!inv || !(inv->fn = strdup(fn))) {
		free(inv);
		http_respond_error(ex, 500, "out of memory");
		return;
	}
	inv->d = d;
	inv->ex = ex;
	inv->fd = -1;
	inv->args = args ? json_incref(args) : NULL;
	inv->timeout_ms = (unsigned)timeout;
	inv->t0 = time_mono_ns();
	inv->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	struct itimerspec its = { .it_value = { .tv_sec = timeout / 1000,
						.tv_nsec = (long)(timeout % 1000) * 1000000L } };
	if (inv->tfd < 0 || timerfd_settime(inv->tfd, 0, &its, NULL) < 0 ||
	    loop_add(d->loop, inv->tfd, EPOLLIN, on_timer, inv) < 0) {
		if (inv->tfd >= 0)
			close(inv->tfd);
		inv->tfd = -1;
		forkd_invoke_fail(d, inv, 500, "cannot arm the time limit");
		return;
	}
	forkd_fork(d, t, 1, NULL, inv);
}
