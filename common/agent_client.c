/* common/agent_client.c - see agent_client.h. */
#include "agent_client.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* Receive buffer: initial size, and size kept between large frames. */
#define CLIENT_BUF_MIN (64u * 1024)
/* Pause between connection attempts while the socket is not there yet. */
#define CLIENT_RETRY_MS 20

struct agent_client {
	int fd;
	bool broken; /* a write stopped part-way: the stream is out of sync */
	char *buf;
	size_t cap, len; /* unread bytes are buf[0, len) */
	uint64_t skip; /* bytes of an oversized frame still to discard */
	uint64_t next_id;
	char id_prefix[17]; /* random, so replies meant for others never match */
};

/* ---------------------------------------------------------------- framing */

static uint32_t be32_load(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* Encodes msg as one frame in a malloc'd buffer. Returns 0 or -errno. */
int agent_frame_encode(const json_t *msg, char **buf, size_t *len)
{
	const size_t flags = JSON_COMPACT;
	size_t n, n2;
	char *b;

	if (!json_is_object(msg))
		return -EINVAL;
	n = json_dumpb(msg, NULL, 0, flags);
	if (n == 0)
		return -EINVAL;
	if (n > AGENT_FRAME_MAX)
		return -EMSGSIZE;
	b = malloc(AGENT_FRAME_HDR + n);
	if (!b)
		return -ENOMEM;
	n2 = json_dumpb(msg, b + AGENT_FRAME_HDR, n, flags);
	if (n2 != n) {
		free(b);
		return -EINVAL;
	}
	b[0] = (char)(n >> 24);
	b[1] = (char)(n >> 16);
	b[2] = (char)(n >> 8);
	b[3] = (char)n;
	*buf = b;
	*len = AGENT_FRAME_HDR + n;
	return 0;
}

/* Decodes the first frame of buf (see the header for *consumed). */
int agent_frame_decode(const char *buf, size_t len, size_t *consumed, json_t **msg)
{
	size_t off = 0;

	*consumed = 0;
	*msg = NULL;
	for (;;) {
		uint32_t n;
		json_t *m;

		if (len - off < AGENT_FRAME_HDR)
			return -EAGAIN;
		n = be32_load(buf + off);
		if (n == 0) { /* empty frames are ignored */
			off += AGENT_FRAME_HDR;
			*consumed = off;
			continue;
		}
		if (n > AGENT_FRAME_MAX) {
			*consumed = off + AGENT_FRAME_HDR + (size_t)n;
			return -EMSGSIZE;
		}
		if (len - off - AGENT_FRAME_HDR < n)
			return -EAGAIN;
		*consumed = off + AGENT_FRAME_HDR + n;
		m = json_loadb(buf + off + AGENT_FRAME_HDR, n, 0, NULL);
		if (!json_is_object(m)) {
			json_decref(m);
			return -EPROTO;
		}
		*msg = m;
		return 0;
	}
}

/* ---------------------------------------------------------------- time */

/* Deadline in ns on the monotonic clock; UINT64_MAX for "never". */
static uint64_t deadline_after(int timeout_ms)
{
	if (timeout_ms < 0)
		return UINT64_MAX;
	return time_mono_ns() + (uint64_t)timeout_ms * 1000000u;
}

/* Milliseconds left until deadline (rounded up), -1 for never, 0 if past. */
static int ms_left(uint64_t deadline)
{
	uint64_t now;

	if (deadline == UINT64_MAX)
		return -1;
	now = time_mono_ns();
	if (now >= deadline)
		return 0;
	return (int)MIN((deadline - now + 999999u) / 1000000u, (uint64_t)INT32_MAX);
}

/* Waits for events on fd until deadline. Returns 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		int ms = ms_left(deadline);
		int r;

		if (ms == 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, ms);
		if (r > 0)
			return 0; /* ready, or an error the next read/write reports */
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* ---------------------------------------------------------------- client */

/* Wraps a connected socket; takes ownership of fd. Returns 0 or -errno. */
int agent_client_from_fd(int fd, struct agent_client **out)
{
	struct agent_client *c;
	uint64_t r;
	int flags, rc;

	c = calloc(1, sizeof(*c));
	if (!c) {
		rc = -ENOMEM;
		goto err_fd;
	}
	c->buf = malloc(CLIENT_BUF_MIN);
	if (!c->buf) {
		rc = -ENOMEM;
		goto err_client;
	}
	c->cap = CLIENT_BUF_MIN;
	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		r = time_real_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
	snprintf(c->id_prefix, sizeof(c->id_prefix), "%016" PRIx64, r);
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		rc = -errno;
		goto err_buf;
	}
	c->fd = fd;
	*out = c;
	return 0;

err_buf:
	free(c->buf);
err_client:
	free(c);
err_fd:
	close(fd);
	return rc;
}

/* Connects to socket_path, retrying until timeout_ms. Returns 0 or -errno. */
int agent_client_connect(const char *socket_path, int timeout_ms, struct agent_client **out)
{
	uint64_t deadline = deadline_after(timeout_ms);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, socket_path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int err, ms;

		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return agent_client_from_fd(fd, out);
		err = errno;
		close(fd);
		if (err != ENOENT && err != ECONNREFUSED && err != EAGAIN && err != EINTR)
			return -err;
		ms = ms_left(deadline);
		if (ms == 0)
			return -ETIMEDOUT;
		if (ms < 0 || ms > CLIENT_RETRY_MS)
			ms = CLIENT_RETRY_MS;
		nanosleep(&(struct timespec){ .tv_nsec = (long)ms * 1000000 }, NULL);
	}
}

/* Closes the connection and frees c. */
void agent_client_close(struct agent_client *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c->buf);
	free(c);
}

/* Writes all of buf before deadline. Returns 0 or -errno; marks the client
 * broken when the write stops part-way. */
static int client_write(struct agent_client *c, const char *buf, size_t len, uint64_t deadline)
{
	size_t done = 0;

	while (done < len) {
		ssize_t w = send(c->fd, buf + done, len - done, MSG_NOSIGNAL);
		int rc;

		if (w >= 0) {
			done += (size_t)w;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			rc = wait_fd(c->fd, POLLOUT, deadline);
		else
			rc = errno == ECONNRESET ? -EPIPE : -errno;
		if (rc < 0) {
			if (done > 0)
				c->broken = true;
			return rc;
		}
	}
	return 0;
}

/* Makes room for need unread bytes (need <= frame size). Returns 0 or -ENOMEM. */
static int client_reserve(struct agent_client *c, size_t need)
{
	size_t want = c->cap;
	char *nb;

	if (need > want)
		want = MAX(need, MIN(want * 2, (size_t)AGENT_FRAME_MAX + AGENT_FRAME_HDR));
	else if (c->len == 0 && c->cap > 16 * CLIENT_BUF_MIN)
		want = CLIENT_BUF_MIN; /* give back the memory of a huge frame */
	if (want == c->cap)
		return 0;
	nb = realloc(c->buf, want);
	if (!nb)
		return -ENOMEM;
	c->buf = nb;
	c->cap = want;
	return 0;
}

/* Drops n bytes from the front of the buffer (n may exceed what is there:
 * the rest is skipped as it arrives). */
static void client_drop(struct agent_client *c, uint64_t n)
{
	size_t d = (size_t)MIN(n, (uint64_t)c->len);

	memmove(c->buf, c->buf + d, c->len - d);
	c->len -= d;
	c->skip += n - d;
}

/* Reads the next message before deadline. Returns 0 with *msg (caller
 * decrefs), -ETIMEDOUT, -EPIPE, -EPROTO or -errno. */
static int client_read_msg(struct agent_client *c, uint64_t deadline, json_t **msg)
{
	for (;;) {
		size_t consumed = 0, need;
		ssize_t r;
		int rc;

		if (c->skip > 0) {
			size_t d = (size_t)MIN(c->skip, (uint64_t)c->len);

			c->skip -= d;
			client_drop(c, d);
		}
		if (c->skip == 0) {
			rc = agent_frame_decode(c->buf, c->len, &consumed, msg);
			client_drop(c, consumed);
			if (rc == 0 || rc == -EPROTO)
				return rc;
			if (rc == -EMSGSIZE)
				continue; /* never sent by the agent; skipped */
		}
		need = c->len + 1;
		if (c->skip == 0 && c->len >= AGENT_FRAME_HDR)
			need = AGENT_FRAME_HDR + be32_load(c->buf);
		rc = client_reserve(c, need);
		if (rc < 0)
			return rc;
		r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (r > 0) {
			c->len += (size_t)r;
			continue;
		}
		if (r == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return errno == ECONNRESET ? -EPIPE : -errno;
		rc = wait_fd(c->fd, POLLIN, deadline);
		if (rc < 0)
			return rc;
	}
}

/* Reads frames until the ready event. Returns 0 or -errno. */
int agent_client_wait_ready(struct agent_client *c, int timeout_ms, json_t **ready_event)
{
	uint64_t deadline = deadline_after(timeout_ms);

	for (;;) {
		json_t *m;
		int rc = client_read_msg(c, deadline, &m);

		if (rc < 0)
			return rc;
		if (json_is_string(json_object_get(m, "event")) &&
		    strcmp(json_string_value(json_object_get(m, "event")), "ready") == 0) {
			if (ready_event)
				*ready_event = m;
			else
				json_decref(m);
			return 0;
		}
		json_decref(m);
	}
}

/* Sends request with a fresh id and waits for its reply. Returns 0 or -errno. */
int agent_client_request(struct agent_client *c, json_t *request, int timeout_ms, json_t **reply)
{
	uint64_t deadline = deadline_after(timeout_ms);
	char id[48];
	json_t *req;
	char *frame = NULL;
	size_t flen;
	int rc;

	if (c->broken)
		return -EPIPE;
	if (!json_is_object(request))
		return -EINVAL;
	snprintf(id, sizeof(id), "%s-%" PRIu64, c->id_prefix, ++c->next_id);
	req = json_copy(request); /* shallow: the caller's object stays untouched */
	if (!req)
		return -ENOMEM;
	if (json_object_set_new(req, "id", json_string(id)) < 0) {
		rc = -ENOMEM;
		goto out;
	}
	rc = agent_frame_encode(req, &frame, &flen);
	if (rc < 0)
		goto out;
	rc = client_write(c, frame, flen, deadline);
	if (rc < 0)
		goto out;
	for (;;) {
		json_t *m;
		const char *mid;

		rc = client_read_msg(c, deadline, &m);
		if (rc < 0)
			goto out;
		mid = json_string_value(json_object_get(m, "id"));
		if (mid && strcmp(mid, id) == 0 && !json_object_get(m, "event")) {
			*reply = m;
			goto out;
		}
		json_decref(m); /* an event, or a reply meant for someone else */
	}
out:
	free(frame);
	json_decref(req);
	return rc;
}

/* Sends {"op": op} plus the members of extra (stolen; may be NULL). */
static int request_op(struct agent_client *c, const char *op, json_t *extra, int timeout_ms,
		      json_t **reply)
{
	json_t *req = extra ? extra : json_object();
	int rc;

	if (!req)
		return -ENOMEM;
	if (json_object_set_new(req, "op", json_string(op)) < 0)
		rc = -ENOMEM;
	else
		rc = agent_client_request(c, req, timeout_ms, reply);
	json_decref(req);
	return rc;
}

/* Evaluates code in the guest. Returns as agent_client_request(). */
int agent_client_eval(struct agent_client *c, const char *code, int timeout_ms, json_t **reply)
{
	json_t *req = json_pack("{s:s}", "code", code);

	if (!req)
		return code ? -ENOMEM : -EINVAL;
	return request_op(c, "eval", req, timeout_ms, reply);
}

/* Calls a global function in the guest. Returns as agent_client_request(). */
int agent_client_call(struct agent_client *c, const char *fn, json_t *args, int timeout_ms,
		      json_t **reply)
{
	json_t *req = json_pack("{s:s}", "fn", fn);

	if (!req)
		return fn ? -ENOMEM : -EINVAL;
	if (args && json_object_set(req, "args", args) < 0) {
		json_decref(req);
		return -ENOMEM;
	}
	return request_op(c, "call", req, timeout_ms, reply);
}

/* Runs a script once in the guest. Returns as agent_client_request(). */
int agent_client_load(struct agent_client *c, const char *source, const char *name,
		      int timeout_ms, json_t **reply)
{
	json_t *req = json_pack("{s:s}", "source", source);

	if (!req)
		return source ? -ENOMEM : -EINVAL;
	if (name && json_object_set_new(req, "name", json_string(name)) < 0) {
		json_decref(req);
		return -EINVAL;
	}
	return request_op(c, "load", req, timeout_ms, reply);
}

/* Asks for the agent's info. Returns as agent_client_request(). */
int agent_client_info(struct agent_client *c, int timeout_ms, json_t **reply)
{
	return request_op(c, "info", NULL, timeout_ms, reply);
}

/* Readiness probe. Returns 0 on "pong", -EPROTO otherwise, or -errno. */
int agent_client_ping(struct agent_client *c, int timeout_ms, json_t **reply)
{
	json_t *r = NULL;
	const char *res;
	int rc = request_op(c, "ping", NULL, timeout_ms, &r);

	if (rc < 0)
		return rc;
	res = json_string_value(json_object_get(r, "result"));
	if (!agent_client_reply_ok(r, NULL, NULL) || !res || strcmp(res, "pong") != 0)
		rc = -EPROTO;
	if (reply)
		*reply = r;
	else
		json_decref(r);
	return rc;
}

/* True for an ok:true reply; else points name/message at the error. */
bool agent_client_reply_ok(const json_t *reply, const char **name, const char **message)
{
	const json_t *err;
	const char *n, *m;

	if (json_is_true(json_object_get(reply, "ok")))
		return true;
	err = json_object_get(reply, "error");
	n = json_string_value(json_object_get(err, "name"));
	m = json_string_value(json_object_get(err, "message"));
	if (name)
		*name = n ? n : "Error";
	if (message)
		*message = m ? m : "";
	return false;
}
