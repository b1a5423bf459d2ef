/* vmm/chan.c - see chan.h. Lock order: vm->lock only; loop callbacks take
 * it around every touch of the rings. */
#include "chan.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "vmm/state.h"
#include "vmm/vm.h"

/* ------------------------------------------------------------ ring */

static int ring_init(struct chan_ring *r, size_t cap)
{
	r->buf = malloc(cap);
	if (!r->buf)
		return -ENOMEM;
	r->cap = cap;
	r->head = r->len = 0;
	return 0;
}

static void ring_free(struct chan_ring *r)
{
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

static size_t ring_put(struct chan_ring *r, const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t n = MIN(len, r->cap - r->len), done = 0;

	while (done < n) {
		size_t tail = (r->head + r->len) % r->cap;
		size_t chunk = MIN(n - done, r->cap - tail);
		memcpy(r->buf + tail, p + done, chunk);
		r->len += chunk;
		done += chunk;
	}
	return n;
}

/* The first contiguous piece of queued bytes. */
static size_t ring_peek(const struct chan_ring *r, const uint8_t **p)
{
	*p = r->buf + r->head;
	return MIN(r->len, r->cap - r->head);
}

static void ring_drop(struct chan_ring *r, size_t n)
{
	r->head = (r->head + n) % r->cap;
	r->len -= n;
	if (!r->len)
		r->head = 0;
}

/* ------------------------------------------------------------ open */

int chan_open(struct chan *c, struct vm *vm, const char *name, enum chan_mode mode,
	      const char *path, bool flow_control, bool takeover, char *err, size_t errlen)
{
	int rc;

	memset(c, 0, sizeof(*c));
	c->vm = vm;
	c->name = name;
	c->mode = mode;
	c->flow_control = flow_control;
	c->out_fd = c->listen_fd = c->conn_fd = -1;

	switch (mode) {
	case CHAN_OFF:
		return 0;
	case CHAN_TTY:
		c->out_fd = STDOUT_FILENO;
		return 0;
	case CHAN_FILE:
		c->out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (c->out_fd < 0)
			return err_fail(err, errlen, -errno, "%s: cannot open %s: %s", name, path,
				    strerror(errno));
		struct stat st;
		c->file_bytes = fstat(c->out_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
		c->file_max = CHAN_FILE_MAX;
		return 0;
	case CHAN_SOCKET:
		break;
	}
	c->path = strdup(path);
	if (!c->path)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	rc = ring_init(&c->in, CHAN_RING_SIZE);
	if (rc == 0)
		rc = ring_init(&c->out, CHAN_RING_SIZE);
	if (rc < 0) {
		err_fail(err, errlen, rc, "out of memory");
		goto err;
	}
	bool stale;
	rc = unixsock_check(path, takeover, &stale);
	if (rc < 0) {
		err_fail(err, errlen, rc, "%s: %s", path,
		     rc == -EADDRINUSE ? "in use by another process" :
		     rc == -EEXIST ? "exists and is not a socket" :
		     rc == -ENAMETOOLONG ? "socket path too long" : strerror(-rc));
		if (rc == -EADDRINUSE)
			snprintf(err, errlen, "%s is in use by another process", path);
		goto err;
	}
	/* A restore (takeover) publishes its sockets only once it succeeded:
	 * chan_publish(). */
	rc = unixsock_listen(&c->sock, path, !takeover);
	if (rc < 0) {
		err_fail(err, errlen, rc, "cannot listen on %s: %s", path, strerror(-rc));
		goto err;
	}
	c->listen_fd = c->sock.fd;
	return 0;
err:
	ring_free(&c->in);
	ring_free(&c->out);
	free(c->path);
	c->path = NULL;
	return rc;
}

int chan_publish(struct chan *c)
{
	bool stale;

	if (c->mode != CHAN_SOCKET)
		return 0;
	if (unixsock_check(c->path, false, &stale) == -EADDRINUSE)
		log_warn("%s: taking over the socket path (the VM this one was restored from may "
			 "still be running)",
			 c->path);
	return unixsock_publish(&c->sock);
}

static void on_listen(void *arg, uint32_t events);
static void on_conn(void *arg, uint32_t events);

int chan_attach(struct chan *c, struct loop *loop)
{
	if (c->mode != CHAN_SOCKET)
		return 0;
	int rc = loop_add(loop, c->listen_fd, EPOLLIN, on_listen, c);
	if (rc == 0)
		c->listening = true;
	return rc;
}

static void conn_drop(struct chan *c, struct loop *loop)
{
	if (c->conn_fd < 0)
		return;
	loop_del(loop, c->conn_fd);
	/* A reader may poll a duplicate of the socket (vcpu_poll): the
	 * shutdown wakes it, and the client sees the end now rather than when
	 * that duplicate is closed. */
	shutdown(c->conn_fd, SHUT_RDWR);
	close(c->conn_fd);
	c->conn_fd = -1;
	c->out_watched = false;
	c->in_watched = false;
	c->peer_closed = false;
	log_info("%s: client disconnected", c->name);
	/* Take the next waiting client. */
	if (c->listen_fd >= 0 && !c->listening && loop_add(loop, c->listen_fd, EPOLLIN, on_listen, c) == 0)
		c->listening = true;
}

void chan_close(struct chan *c, struct loop *loop)
{
	if (c->mode == CHAN_SOCKET) {
		if (loop)
			conn_drop(c, loop);
		else if (c->conn_fd >= 0)
			close(c->conn_fd);
		if (c->listen_fd >= 0) {
			if (loop && c->listening)
				loop_del(loop, c->listen_fd);
			unixsock_close(&c->sock);
		}
	}
	if (c->mode == CHAN_FILE && c->out_fd >= 0)
		close(c->out_fd);
	ring_free(&c->in);
	ring_free(&c->out);
	free(c->path);
	memset(c, 0, sizeof(*c));
	c->out_fd = c->listen_fd = c->conn_fd = -1;
}

/* ------------------------------------------------------------ loop side */

/* The loop watches a client for hangup and, while output is queued, for
 * room; guest reads take its input directly, except for a device that
 * takes input as it arrives (on_input): then for input too, while the
 * ring has room. */
static uint32_t conn_events(const struct chan *c)
{
	return (c->out_watched ? EPOLLOUT : 0) | (c->in_watched ? EPOLLIN : 0) | EPOLLRDHUP;
}

/* Writes queued output to the client. Returns false if the client is gone.
 * vm->lock held. */
static bool flush_out(struct chan *c)
{
	while (c->out.len) {
		const uint8_t *p;
		size_t n = ring_peek(&c->out, &p);
		ssize_t w = send(c->conn_fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN;
		}
		ring_drop(&c->out, (size_t)w);
		c->tx_bytes += (uint64_t)w;
	}
	return true;
}

/* Moves what the client left unread into the input ring (at hangup). */
static void drain_in(struct chan *c)
{
	uint8_t buf[65536];

	while (c->in.len < c->in.cap) {
		size_t room = MIN(sizeof(buf), c->in.cap - c->in.len);
		ssize_t n = recv(c->conn_fd, buf, room, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		ring_put(&c->in, buf, (size_t)n);
		c->rx_bytes += (uint64_t)n;
	}
}

/* Re-arms the connection's epoll mask after a ring changed. */
static bool update_watch(struct chan *c, struct loop *loop)
{
	bool want_out = c->out.len > 0, want_in = c->on_input && c->in.len < c->in.cap;

	if (want_out == c->out_watched && want_in == c->in_watched)
		return true;
	c->out_watched = want_out;
	c->in_watched = want_in;
	return loop_mod(loop, c->conn_fd, conn_events(c)) == 0;
}

/* Handles a client that went away: keeps its unread bytes, closes it. */
static void conn_hangup(struct chan *c, struct loop *loop)
{
	drain_in(c);
	conn_drop(c, loop);
	pthread_cond_broadcast(&c->vm->cond);
}

static void on_conn(void *arg, uint32_t events)
{
	struct chan *c = arg;
	struct vm *vm = c->vm;
	bool ok = true, input = false;

	pthread_mutex_lock(&vm->lock);
	if (c->out.len)
		ok = flush_out(c);
	if ((events & EPOLLIN) && c->on_input) {
		size_t before = c->in.len;
		drain_in(c);
		input = c->in.len > before;
	}
	if (events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP))
		ok = false;
	if (ok)
		ok = update_watch(c, vm->loop);
	if (!ok)
		conn_hangup(c, vm->loop);
	else if (!c->out.len)
		pthread_cond_broadcast(&vm->cond); /* room for waiting writers */
	bool room = c->on_room && c->out.len < c->out.cap;
	pthread_mutex_unlock(&vm->lock);
	if ((input || !ok) && c->on_input)
		c->on_input(c->on_input_arg);
	if (room)
		c->on_room(c->on_input_arg);
}

static void on_listen(void *arg, uint32_t events)
{
	struct chan *c = arg;
	struct vm *vm = c->vm;
	int fd;

	(void)events;
	fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			log_warn("%s: accept: %s", c->name, strerror(errno));
		return;
	}
	pthread_mutex_lock(&vm->lock);
	c->conn_fd = fd;
	c->out_watched = c->out.len > 0;
	c->in_watched = c->on_input && c->in.len < c->in.cap;
	c->peer_closed = false;
	if (loop_add(vm->loop, fd, conn_events(c), on_conn, c) < 0) {
		close(fd);
		c->conn_fd = -1;
		pthread_mutex_unlock(&vm->lock);
		return;
	}
	/* One client at a time: the next ones wait in the backlog. */
	loop_del(vm->loop, c->listen_fd);
	c->listening = false;
	log_info("%s: client connected", c->name);
	pthread_cond_broadcast(&vm->cond); /* readers waiting for a client */
	pthread_mutex_unlock(&vm->lock);
}

void chan_service(struct chan *c, struct loop *loop)
{
	struct vm *vm = c->vm;

	if (c->mode != CHAN_SOCKET)
		return;
	pthread_mutex_lock(&vm->lock);
	if (c->conn_fd >= 0) {
		bool ok = !c->peer_closed;
		if (ok && c->out.len)
			ok = flush_out(c);
		if (ok)
			ok = update_watch(c, loop);
		if (!ok)
			conn_hangup(c, loop);
		pthread_cond_broadcast(&vm->cond);
	}
	bool room = c->on_room && c->out.len < c->out.cap;
	pthread_mutex_unlock(&vm->lock);
	if (room)
		c->on_room(c->on_input_arg);
}

/* ------------------------------------------------------------ guest side */

bool chan_writable_locked(const struct chan *c)
{
	if (c->mode != CHAN_SOCKET || !c->flow_control)
		return true;
	return c->out.len < c->out.cap;
}

/* FILE: up to file_max bytes; then a one-line mark, and the rest dropped. */
static size_t file_write(struct chan *c, const void *buf, size_t len)
{
	static const char mark[] = "\n[forkvm: console file limit reached; further output is dropped]\n";
	uint64_t room = c->file_bytes < c->file_max ? c->file_max - c->file_bytes : 0;
	size_t n = (size_t)MIN((uint64_t)len, room);

	if (n && write_full(c->out_fd, buf, n) < 0) {
		c->dropped += len;
		return len;
	}
	c->file_bytes += n;
	c->tx_bytes += n;
	if (n < len) {
		if (room != 0 || c->file_bytes == c->file_max) {
			/* the first time only: the file then stands past the limit */
			if (write_full(c->out_fd, mark, sizeof(mark) - 1) == 0)
				c->file_bytes += sizeof(mark) - 1;
		}
		c->dropped += len - n;
	}
	return len;
}

size_t chan_write_locked(struct chan *c, const void *buf, size_t len)
{
	size_t n;

	switch (c->mode) {
	case CHAN_OFF:
		return len;
	case CHAN_FILE:
		return file_write(c, buf, len);
	case CHAN_TTY:
		if (write_full(c->out_fd, buf, len) < 0)
			c->dropped += len;
		else
			c->tx_bytes += len;
		return len;
	case CHAN_SOCKET:
		break;
	}
	n = 0;
	/* Straight to the client when nothing is queued: no loop round trip. */
	if (c->conn_fd >= 0 && c->out.len == 0) {
		ssize_t w = send(c->conn_fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			n = (size_t)w;
			c->tx_bytes += n;
		}
	}
	if (n < len) {
		size_t q = ring_put(&c->out, (const uint8_t *)buf + n, len - n);
		n += q;
		if (q)
			vm_notify(c->vm, VM_NOTIFY_CHAN);
	}
	if (n < len && !c->flow_control) {
		c->dropped += len - n;
		return len;
	}
	return n;
}

long chan_read_locked(struct chan *c, void *dst, size_t len)
{
	if (c->mode != CHAN_SOCKET || len == 0)
		return 0;
	if (c->in.len) {
		size_t done = 0;
		/* a full ring's reader (on_input) was not watched: re-arm it */
		if (c->on_input && c->in.len == c->in.cap)
			vm_notify(c->vm, VM_NOTIFY_CHAN);
		while (done < len && c->in.len) {
			const uint8_t *p;
			size_t n = MIN(ring_peek(&c->in, &p), len - done);
			memcpy((uint8_t *)dst + done, p, n);
			ring_drop(&c->in, n);
			done += n;
		}
		return (long)done;
	}
	if (c->conn_fd < 0 || c->peer_closed)
		return -EAGAIN;
	for (;;) {
		ssize_t n = recv(c->conn_fd, dst, len, MSG_DONTWAIT);
		if (n > 0) {
			c->rx_bytes += (uint64_t)n;
			return n;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			/* The client went away: the loop thread closes it. */
			c->peer_closed = true;
			vm_notify(c->vm, VM_NOTIFY_CHAN);
		}
		return -EAGAIN;
	}
}

int chan_input_fd_locked(const struct chan *c)
{
	if (c->mode != CHAN_SOCKET || c->in.len || c->peer_closed)
		return -1;
	return c->conn_fd;
}

size_t chan_input_queued_locked(const struct chan *c)
{
	return c->mode == CHAN_SOCKET ? c->in.len : 0;
}

bool chan_input_ready_locked(const struct chan *c)
{
	return c->mode != CHAN_SOCKET || c->in.len || (c->conn_fd >= 0 && !c->peer_closed);
}

/* ------------------------------------------------------------ state */

static size_t ring_copy(const struct chan_ring *r, uint8_t *dst)
{
	for (size_t i = 0; i < r->len; i++)
		dst[i] = r->buf[(r->head + i) % r->cap];
	return r->len;
}

int chan_save(struct chan *c, json_t **out, char *err, size_t errlen)
{
	size_t cap = c->in.cap + c->out.cap + 1;
	uint8_t *in = malloc(cap), *outb = malloc(cap);
	size_t nin = 0, nout = 0;
	int rc = 0;

	if (!in || !outb) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	pthread_mutex_lock(&c->vm->lock);
	if (c->mode == CHAN_SOCKET) {
		nout = ring_copy(&c->out, outb);
		nin = ring_copy(&c->in, in);
		/* Bytes the client sent that the guest has not read: peek, so the
		 * running VM still gets them. */
		if (c->conn_fd >= 0 && !c->peer_closed && nin < c->in.cap) {
			ssize_t n = recv(c->conn_fd, in + nin, c->in.cap - nin, MSG_PEEK | MSG_DONTWAIT);
			if (n > 0)
				nin += (size_t)n;
		}
	}
	*out = json_pack("{s:o,s:o,s:I,s:I,s:I}", "output", state_json_blob(outb, nout), "input",
			 state_json_blob(in, nin), "dropped", (json_int_t)c->dropped, "rx_bytes",
			 (json_int_t)c->rx_bytes, "tx_bytes", (json_int_t)c->tx_bytes);
	pthread_mutex_unlock(&c->vm->lock);
	if (!*out) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
	}
done:
	free(in);
	free(outb);
	return rc;
}

int chan_restore(struct chan *c, const json_t *st, char *err, size_t errlen)
{
	uint8_t *in = NULL, *outb = NULL;
	size_t nin = 0, nout = 0;
	int rc;

	rc = state_get_blob_any(st, "output", CHAN_RING_SIZE, &outb, &nout, err, errlen);
	if (rc == 0)
		rc = state_get_blob_any(st, "input", CHAN_RING_SIZE, &in, &nin, err, errlen);
	if (rc < 0)
		goto out;
	pthread_mutex_lock(&c->vm->lock);
	if (c->mode == CHAN_SOCKET) {
		ring_put(&c->out, outb, nout);
		ring_put(&c->in, in, nin);
	} else if (nout) {
		chan_write_locked(c, outb, nout);
	}
	const json_t *d = json_object_get(st, "dropped"), *rx = json_object_get(st, "rx_bytes"),
		     *tx = json_object_get(st, "tx_bytes");
	if (json_is_integer(d))
		c->dropped = (uint64_t)json_integer_value(d);
	if (json_is_integer(rx))
		c->rx_bytes = (uint64_t)json_integer_value(rx);
	if (json_is_integer(tx))
		c->tx_bytes = (uint64_t)json_integer_value(tx);
	pthread_mutex_unlock(&c->vm->lock);
out:
	free(in);
	free(outb);
	return rc;
}
