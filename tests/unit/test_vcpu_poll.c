/* tests/unit/test_vcpu_poll.c - vcpu_poll(), where a vCPU thread blocked in
 * read(2) on the agent channel waits for the client socket, on a VM built
 * without KVM. It drops vm->lock while it polls, and meanwhile the loop
 * thread may close that socket (the client hung up) and accept the next
 * client, which gets the lowest free fd number: the same one. The tests
 * replay that with dup3() at the moment of their choosing. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/lib/unit.h"
#include "vmm/vm.h"

static struct vm *vm;

static void setup(void)
{
	char err[512] = "";
	char *hello = ut_payload("hello");
	struct ut_vm_opts o = { .payload = "hello" };

	cr_assert(ut_file_exists(hello), "%s is missing: run make guest", hello);
	free(hello);
	cr_assert_eq(ut_vm_create(&o, err, sizeof(err), &vm), 0, "%s", err);
	vm->clock_base = time_mono_ns() - 1;
}

static void teardown(void)
{
	vm_destroy(vm);
	vm = NULL;
}

TestSuite(vcpu_poll, .init = setup, .fini = teardown);

/* A vCPU thread in vcpu_poll(fd), as read_chan() calls it. */
struct poller {
	pthread_t thread;
	int fd;
	int tid; /* set before it polls */
	int rc;
	bool done;
};

static void *poller_main(void *arg)
{
	struct poller *p = arg;

	pthread_mutex_lock(&vm->lock);
	__atomic_store_n(&p->tid, (int)gettid(), __ATOMIC_SEQ_CST);
	p->rc = vcpu_poll(&vm->vcpus[0], p->fd);
	__atomic_store_n(&p->done, true, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

static void sleep_ms(long ms)
{
	nanosleep(&(struct timespec){ .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000 }, NULL);
}

/* True when thread tid sleeps in poll(2) (or ppoll): its wait is set up. */
static bool sleeps_in_poll(int tid)
{
	char path[64], buf[256] = "";
	FILE *f;
	long nr;
	char *end, *state;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	f = fopen(path, "r");
	if (!f)
		return false;
	bool ok = fgets(buf, sizeof(buf), f) != NULL;
	fclose(f);
	state = strrchr(buf, ')');
	if (!ok || !state || strncmp(state, ") S", 3) != 0)
		return false;
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	f = fopen(path, "r");
	if (!f)
		return false;
	ok = fgets(buf, sizeof(buf), f) != NULL;
	fclose(f);
	nr = strtol(buf, &end, 10);
	return ok && end != buf && (nr == SYS_poll || nr == SYS_ppoll);
}

static void poller_start(struct poller *p, int fd)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
	cr_assert_eq(pthread_create(&p->thread, NULL, poller_main, p), 0);
	for (int i = 0; i < 1000; i++) {
		int tid = __atomic_load_n(&p->tid, __ATOMIC_SEQ_CST);
		if (tid && sleeps_in_poll(tid))
			return;
		cr_assert(!__atomic_load_n(&p->done, __ATOMIC_SEQ_CST),
			  "vcpu_poll returned before anything happened (rc %d)", p->rc);
		sleep_ms(10);
	}
	cr_assert_fail("the poller never went to sleep in poll(2)");
}

/* Waits up to ms for vcpu_poll to return, then joins the thread (waking it
 * through wake_fd, as a pause would, if it is still waiting). Returns
 * whether it had returned by itself. */
static bool poller_finish(struct poller *p, long ms)
{
	bool returned = false;
	uint64_t one = 1;

	for (long t = 0; t <= ms && !returned; t += 10) {
		returned = __atomic_load_n(&p->done, __ATOMIC_SEQ_CST);
		if (!returned)
			sleep_ms(10);
	}
	if (!returned && write(vm->wake_fd, &one, sizeof(one)) != sizeof(one))
		cr_assert_fail("cannot write wake_fd: %s", strerror(errno));
	pthread_join(p->thread, NULL);
	return returned;
}

/* Input on the connection ends the wait. */
Test(vcpu_poll, returns_when_input_arrives)
{
	struct poller p;
	int c[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c), 0);
	poller_start(&p, c[0]);
	cr_assert_eq(write(c[1], "ping", 4), 4);
	cr_assert(poller_finish(&p, 10000), "input did not end the wait");
	cr_assert_eq(p.rc, 0);
	close(c[0]);
	close(c[1]);
}

/* The flake of snapshot::agent_reply_waiting_for_a_reader_survives: the
 * reader of a reply hung up while the guest's read waited on its socket;
 * the loop thread closed that socket and accepted the next client under
 * the same number before the waiting thread looked again. poll(2) looks
 * fds up by number at every wake-up but queues itself on the files it
 * found the first time, so it went back to sleep on the dead connection
 * while the new client's request sat unread on the new one. */
Test(vcpu_poll, returns_when_its_client_hangs_up_and_the_number_is_reused)
{
	struct poller p;
	int old[2], next[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, old), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, next), 0);
	poller_start(&p, old[0]);
	/* The loop closes the connection; the next client gets its number. */
	cr_assert_eq(dup3(next[0], old[0], O_CLOEXEC), old[0]);
	close(next[0]);
	/* The client that hung up wakes the poll. */
	close(old[1]);
	bool returned = poller_finish(&p, 10000);
	cr_assert(returned, "vcpu_poll kept waiting on a connection that is gone");
	cr_assert_eq(p.rc, 0);
	close(old[0]);
	close(next[1]);
}

/* The loop thread drops a connection whose client is still there (an
 * error on its side): conn_drop() shuts the socket down before closing it,
 * which ends the wait too. */
Test(vcpu_poll, returns_when_the_connection_is_shut_down_and_the_number_reused)
{
	struct poller p;
	int old[2], next[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, old), 0);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, next), 0);
	poller_start(&p, old[0]);
	cr_assert_eq(shutdown(old[0], SHUT_RDWR), 0);
	cr_assert_eq(dup3(next[0], old[0], O_CLOEXEC), old[0]);
	close(next[0]);
	bool returned = poller_finish(&p, 10000);
	cr_assert(returned, "vcpu_poll kept waiting on a connection that was shut down");
	cr_assert_eq(p.rc, 0);
	char c;
	cr_assert_eq(read(old[1], &c, 1), 0, "the client sees the end at once");
	close(old[0]);
	close(old[1]);
	close(next[1]);
}
