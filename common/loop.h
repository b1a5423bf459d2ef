/* common/loop.h - a small epoll event loop (one per thread that runs it).
 * Callbacks run on the loop thread; loop_del() is safe from inside any
 * callback, including the one being run. loop_wake() is the only call that
 * is safe from other threads. */
#ifndef FORKVM_COMMON_LOOP_H
#define FORKVM_COMMON_LOOP_H

#include <stdint.h>
#include <sys/epoll.h>

struct loop;

/* Called with the epoll events that fired (EPOLLIN, EPOLLOUT, EPOLLHUP...). */
typedef void loop_cb(void *arg, uint32_t events);

/* Returns 0 and *out, or -errno. */
int loop_create(struct loop **out) __attribute__((warn_unused_result));
/* Frees the loop; registered fds are not closed. */
void loop_destroy(struct loop *loop);

/* Watches fd for events. Returns 0 or -errno (-EEXIST if already watched). */
int loop_add(struct loop *loop, int fd, uint32_t events, loop_cb *cb, void *arg)
	__attribute__((warn_unused_result));
/* Changes the event mask of a watched fd. Returns 0 or -errno. */
int loop_mod(struct loop *loop, int fd, uint32_t events) __attribute__((warn_unused_result));
/* Stops watching fd (callbacks for it pending in this round are dropped). */
void loop_del(struct loop *loop, int fd);

/* Waits up to timeout_ms (-1: forever) and dispatches. Returns the number of
 * callbacks run, or -errno. */
int loop_run_once(struct loop *loop, int timeout_ms);

/* Runs until loop_stop(). Returns 0 or -errno. */
int loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

/* Makes a blocked loop_run_once() return; then calls wake_cb(arg) on the
 * loop thread (registered with loop_set_wake). Thread-safe. */
void loop_wake(struct loop *loop);
void loop_set_wake(struct loop *loop, void (*wake_cb)(void *arg), void *arg);

#endif
