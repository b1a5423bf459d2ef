/* common/loop.c - see loop.h. */
#include "loop.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct loop_entry {
	int fd;
	bool dead;
	loop_cb *cb;
	void *arg;
	struct loop_entry *next; /* all entries, or the graveyard */
};

struct loop {
	int epfd;
	int wakefd;
	bool stop;
	bool dispatching;
	struct loop_entry *entries;
	struct loop_entry *graveyard; /* freed after the current dispatch round */
	void (*wake_cb)(void *arg);
	void *wake_arg;
};

int loop_create(struct loop **out)
{
	struct loop *l = calloc(1, sizeof(*l));
	int rc;

	if (!l)
		return -ENOMEM;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		rc = -errno;
		goto err_free;
	}
	l->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->wakefd < 0) {
		rc = -errno;
		goto err_ep;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) < 0) {
		rc = -errno;
		goto err_wake;
	}
	*out = l;
	return 0;
err_wake:
	close(l->wakefd);
err_ep:
	close(l->epfd);
err_free:
	free(l);
	return rc;
}

static void free_list(struct loop_entry *e)
{
	while (e) {
		struct loop_entry *n = e->next;
		free(e);
		e = n;
	}
}

void loop_destroy(struct loop *loop)
{
	if (!loop)
		return;
	free_list(loop->entries);
	free_list(loop->graveyard);
	close(loop->wakefd);
	close(loop->epfd);
	free(loop);
}

static struct loop_entry *find(struct loop *loop, int fd, struct loop_entry ***link)
{
	struct loop_entry **pp = &loop->entries;
	for (; *pp; pp = &(*pp)->next) {
		if ((*pp)->fd == fd) {
			if (link)
				*link = pp;
			return *pp;
		}
	}
	return NULL;
}

int loop_add(struct loop *loop, int fd, uint32_t events, loop_cb *cb, void *arg)
{
	if (fd < 0 || !cb)
		return -EINVAL;
	if (find(loop, fd, NULL))
		return -EEXIST;
	struct loop_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->fd = fd;
	e->cb = cb;
	e->arg = arg;
	struct epoll_event ev = { .events = events, .data.ptr = e };
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int rc = -errno;
		free(e);
		return rc;
	}
	e->next = loop->entries;
	loop->entries = e;
	return 0;
}

int loop_mod(struct loop *loop, int fd, uint32_t events)
{
	struct loop_entry *e = find(loop, fd, NULL);
	if (!e)
		return -ENOENT;
	struct epoll_event ev = { .events = events, .data.ptr = e };
	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -errno;
	return 0;
}

void loop_del(struct loop *loop, int fd)
{
	struct loop_entry **link;
	struct loop_entry *e = find(loop, fd, &link);
	if (!e)
		return;
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	*link = e->next;
	e->dead = true;
	if (loop->dispatching) {
		e->next = loop->graveyard;
		loop->graveyard = e;
	} else {
		free(e);
	}
}

int loop_run_once(struct loop *loop, int timeout_ms)
{
	struct epoll_event evs[64];
	int n = epoll_wait(loop->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout_ms);
	int ran = 0;

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	loop->dispatching = true;
	for (int i = 0; i < n; i++) {
		struct loop_entry *e = evs[i].data.ptr;
		if (!e) {
			uint64_t v;
			if (read(loop->wakefd, &v, sizeof(v)) < 0) {
				/* EAGAIN: another round already drained it */
			}
			if (loop->wake_cb)
				loop->wake_cb(loop->wake_arg);
			ran++;
			continue;
		}
		if (e->dead)
			continue;
		e->cb(e->arg, evs[i].events);
		ran++;
	}
	loop->dispatching = false;
	free_list(loop->graveyard);
	loop->graveyard = NULL;
	return ran;
}

int loop_run(struct loop *loop)
{
	int rc = 0;

	/* A loop_stop() that came before loop_run() still counts. */
	while (!__atomic_load_n(&loop->stop, __ATOMIC_SEQ_CST)) {
		rc = loop_run_once(loop, -1);
		if (rc < 0)
			break;
	}
	__atomic_store_n(&loop->stop, false, __ATOMIC_SEQ_CST);
	return rc < 0 ? rc : 0;
}

void loop_stop(struct loop *loop)
{
	__atomic_store_n(&loop->stop, true, __ATOMIC_SEQ_CST);
	loop_wake(loop);
}

void loop_wake(struct loop *loop)
{
	uint64_t one = 1;
	if (write(loop->wakefd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, a wake is pending anyway */
	}
}

void loop_set_wake(struct loop *loop, void (*wake_cb)(void *arg), void *arg)
{
	loop->wake_cb = wake_cb;
	loop->wake_arg = arg;
}
