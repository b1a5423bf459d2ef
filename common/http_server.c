/* common/http_server.c - the non-blocking socket server: listening,
 * accepting, socket I/O, idle timeouts, completion of deferred responses
 * on the loop thread, and close. See http_internal.h. */
#include "http_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define HTTP_IN_MAX (64 * 1024)          /* unparsed input buffered per connection */
#define HTTP_READ_CHUNK (16 * 1024)

void http_srv_timer_kick(struct http_server *srv, uint64_t deadline)
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

	if (!c->peer_eof && !c->close_after && http_hbuf_len(&c->in) < HTTP_IN_MAX)
		ev |= EPOLLIN;
	if (http_hbuf_len(&c->out))
		ev |= EPOLLOUT;
	if (ev == c->events)
		return;
	if (loop_mod(c->srv->loop, c->fd, ev) < 0) {
		c->dead = true;
		return;
	}
	c->events = ev;
}

static void srv_accept_resume(struct http_server *srv);

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
	http_conn_release(c);
	free(c);
	/* a descriptor is free again */
	if (srv->accept_paused_until)
		srv_accept_resume(srv);
}

/* Reads what is available (up to the input cap); notes EOF and errors. */
static void conn_read(struct http_conn *c)
{
	while (!c->peer_eof && !c->dead && http_hbuf_len(&c->in) < HTTP_IN_MAX) {
		ssize_t n;

		if (http_hbuf_reserve(&c->in, HTTP_READ_CHUNK) < 0) {
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
	http_conn_process(c);
	if (hup)
		c->dead = true;
	if (!c->dead)
		conn_update_events(c);
	if (c->dead)
		conn_close(c);
	srv_leave(srv);
}

/* Sends a best-effort 503 on a connection we cannot serve. */
static void srv_reject(int fd, const char *why)
{
	char *resp;
	size_t len;

	if (http_render_error(503, why, false, false, false, &resp, &len) < 0)
		return;
	if (send(fd, resp, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* best effort: the peer may be gone already */
	}
	free(resp);
}

/* When c's current wait ends (ns): a begun request must arrive whole
 * within request_ms; an idle connection may wait idle_ms. A connection
 * whose request is being served has no deadline (0). */
static uint64_t conn_deadline(const struct http_conn *c)
{
	if (c->pending)
		return 0;
	if (c->cur)
		return c->since + (uint64_t)c->lim->request_ms * 1000000ULL;
	return c->since + (uint64_t)c->lim->idle_ms * 1000000ULL;
}

/* Closes c for being too slow: a begun request gets a 408 first. */
static void conn_expire(struct http_conn *c, const char *what)
{
	log_info("http: %s: closing %s connection fd %d (pid %d)", c->srv->path, what, c->fd,
		 (int)c->peer_pid);
	if (c->cur && !http_hbuf_len(&c->out)) {
		char *resp;
		size_t len;
		if (http_render_error(408, "the request did not arrive in time", false, false, false,
				      &resp, &len) == 0) {
			if (send(c->fd, resp, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
				/* best effort */
			}
			free(resp);
		}
	}
	conn_close(c);
}

/* At the connection limit, a new client still gets in if some connection
 * is only waiting (idle, or a request trickling in): of the client process
 * (SO_PEERCRED) holding the most waiting connections, the one waiting the
 * longest goes. One slow client thus makes room for others before anyone
 * else loses a connection. Returns true when a slot was freed. */
static bool srv_evict_waiting(struct http_server *srv)
{
	struct http_conn *victim = NULL;
	unsigned victim_peer_waiting = 0;

	for (struct http_conn *c = srv->conns; c; c = c->next) {
		if (c->pending || http_hbuf_len(&c->out))
			continue;
		unsigned waiting = 0;
		for (struct http_conn *o = srv->conns; o; o = o->next)
			waiting += o->peer_pid == c->peer_pid && !o->pending && !http_hbuf_len(&o->out);
		if (!victim || waiting > victim_peer_waiting ||
		    (waiting == victim_peer_waiting && c->since < victim->since)) {
			victim = c;
			victim_peer_waiting = waiting;
		}
	}
	if (!victim)
		return false;
	conn_expire(victim, victim->cur ? "a slow (evicted for a new client)" :
					  "an idle (evicted for a new client)");
	return true;
}

/* How long accepting pauses when not even the spare descriptor frees one
 * (the process or the system is out of files). */
#define ACCEPT_PAUSE_NS (100ULL * 1000000ULL)

/* Re-arms the listening socket after a pause. */
static void srv_accept_resume(struct http_server *srv)
{
	if (loop_mod(srv->loop, srv->lfd, EPOLLIN) < 0)
		return; /* stays paused: the timer retries */
	srv->accept_paused_until = 0;
	if (srv->spare_fd < 0)
		srv->spare_fd = fcntl(srv->lfd, F_DUPFD_CLOEXEC, 0);
}

/* accept4 failed with EMFILE or ENFILE: the listening socket stays
 * readable, so without this the loop would spin. The classic answer: give
 * the spare descriptor back, accept the connection, refuse it with a 503
 * and close it, take the spare again. Without a spare (ENFILE, or the
 * spare is gone), stop watching the socket for a while. Returns true when
 * the loop may try accepting again. */
static bool srv_out_of_files(struct http_server *srv, int err)
{
	srv->accept_fails++;
	log_warn("http: %s: out of file descriptors (%s): refusing new connections "
		 "(%llu so far)",
		 srv->path, strerror(err), (unsigned long long)srv->accept_fails);
	if (srv->spare_fd >= 0) {
		close(srv->spare_fd);
		srv->spare_fd = -1;
		int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			srv_reject(fd, "out of file descriptors");
			close(fd);
		}
		srv->spare_fd = fcntl(srv->lfd, F_DUPFD_CLOEXEC, 0);
		if (fd >= 0 && srv->spare_fd >= 0)
			return true;
	}
	/* pause: no descriptor to spare */
	if (loop_mod(srv->loop, srv->lfd, 0) == 0) {
		srv->accept_paused_until = time_mono_ns() + ACCEPT_PAUSE_NS;
		http_srv_timer_kick(srv, srv->accept_paused_until);
	}
	return false;
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
			if ((errno == EMFILE || errno == ENFILE) && srv_out_of_files(srv, errno))
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EMFILE &&
			    errno != ENFILE)
				log_warn("http: accept on %s: %s", srv->path, strerror(errno));
			break;
		}
		struct ucred cred = { 0 };
		socklen_t cl = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
			cred.pid = 0;
		if (srv->nconns >= srv->lim.max_conns && !srv_evict_waiting(srv)) {
			log_debug("http: %s: too many connections", srv->path);
			srv_reject(fd, "too many connections");
			close(fd);
			continue;
		}
		c = malloc(sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		http_conn_init(c, srv, fd, &srv->lim, srv->handler, srv->arg, srv->hub);
		c->peer_pid = cred.pid;
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
		http_srv_timer_kick(srv, c->since + (uint64_t)srv->lim.idle_ms * 1000000ULL);
	}
	srv_leave(srv);
}

/* Loop callback of the idle timer: closes expired connections, re-arms. */
static void timer_cb(void *arg, uint32_t events)
{
	struct http_server *srv = arg;
	uint64_t now = time_mono_ns(), next = 0, expirations;
	struct http_conn *c, *cn;

	(void)events;
	srv->in_cb = true;
	if (read(srv->tfd, &expirations, sizeof(expirations)) < 0) {
		/* EAGAIN: already drained */
	}
	srv->timer_deadline = 0;
	if (srv->accept_paused_until && now >= srv->accept_paused_until)
		srv_accept_resume(srv);
	if (srv->accept_paused_until)
		next = srv->accept_paused_until;
	for (c = srv->conns; c; c = cn) {
		cn = c->next;
		uint64_t due = conn_deadline(c);
		if (!due)
			continue;
		if (now >= due) {
			conn_expire(c, c->cur ? "a slow" : "an idle");
			continue;
		}
		if (!next || due < next)
			next = due;
	}
	if (next)
		http_srv_timer_kick(srv, next);
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
			http_ex_free(ex);
			continue;
		}
		http_conn_complete(c, ex);
		http_conn_process(c);
		if (!c->dead)
			conn_update_events(c);
		if (c->dead)
			conn_close(c);
	}
	srv_leave(srv);
}

int http_server_listen(struct loop *loop, const char *socket_path, const struct http_server_config *cfg,
		       http_handler *handler, void *arg, struct http_server **out)
{
	struct http_server *srv;
	int rc;

	if (!loop || !socket_path || !socket_path[0] || !handler || !out)
		return -EINVAL;
	if (strlen(socket_path) > UNIXSOCK_PATH_MAX)
		return -ENAMETOOLONG;
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->loop = loop;
	srv->handler = handler;
	srv->arg = arg;
	srv->lfd = srv->tfd = srv->spare_fd = -1;
	http_limits_resolve(cfg, &srv->lim);
	srv->path = strdup(socket_path);
	if (!srv->path) {
		rc = -ENOMEM;
		goto err_free;
	}
	rc = http_hub_create(true, &srv->hub);
	if (rc < 0)
		goto err_path;
	srv->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (srv->tfd < 0) {
		rc = -errno;
		goto err_hub;
	}
	/* Refuse a live socket or a non-socket at the path; a stale socket is
	 * replaced. The socket appears at the path already listening. */
	bool stale;
	rc = unixsock_check(socket_path, false, &stale);
	if (rc < 0)
		goto err_timer;
	rc = unixsock_listen(&srv->sock, socket_path, true);
	if (rc < 0)
		goto err_timer;
	srv->lfd = srv->sock.fd;
	srv->spare_fd = fcntl(srv->lfd, F_DUPFD_CLOEXEC, 0); /* best effort */
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
	if (srv->spare_fd >= 0)
		close(srv->spare_fd);
	unixsock_close(&srv->sock);
err_timer:
	close(srv->tfd);
err_hub:
	http_hub_unref(srv->hub);
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
	
	loop_del(srv->loop, srv->lfd);
	if (srv->spare_fd >= 0)
		close(srv->spare_fd);
	srv->spare_fd = -1;
	srv->accept_paused_until = 0;
	unixsock_close(&srv->sock);
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
		http_ex_free(done);
	}
	http_hub_unref(srv->hub);
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
