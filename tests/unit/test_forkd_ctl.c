/* tests/unit/test_forkd_ctl.c - forkd's side of the clone control
 * protocol (forkd/clone.c: forkd_clone_ctl_msg) and its pools' back-off
 * (forkd/pool.c), on a struct forkd made here with clones whose processes
 * are real children that wait to be killed. A clone process is a jailed
 * VMM that may run what its guest made of it: a message that breaks the
 * protocol kills it; texts and times it sends are made safe for the API. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "forkd/internal.h"

struct rig {
	struct loop *loop;
	struct forkd *d;
	struct template *t;
	char run_dir[64];
};

static void rig_make(struct rig *r)
{
	memset(r, 0, sizeof(*r));
	log_set_level(LOG_ERROR);
	snprintf(r->run_dir, sizeof(r->run_dir), "/tmp/forkd-ctl-XXXXXX");
	cr_assert(mkdtemp(r->run_dir));
	cr_assert(loop_create(&r->loop) == 0);
	r->d = calloc(1, sizeof(*r->d));
	cr_assert(r->d);
	r->d->loop = r->loop;
	r->d->sigfd = r->d->refill_tfd = -1;
	r->d->cfg.max_clones = 8;
	snprintf(r->d->run_dir, sizeof(r->d->run_dir), "%s", r->run_dir);
	/* pool 0: nothing here forks shells */
	r->t = calloc(1, sizeof(*r->t));
	cr_assert(r->t);
	snprintf(r->t->name, sizeof(r->t->name), "t");
	r->t->d = r->d;
	r->d->templates = r->t;
}

/* A clone in state s whose process is a child waiting to be killed; *peer
 * is the clone's end of its control socket. */
static struct clone *rig_clone(struct rig *r, enum clone_state s, bool shell, int *peer)
{
	struct clone *c = calloc(1, sizeof(*c));
	int sv[2];

	cr_assert(c);
	cr_assert(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
	snprintf(c->id, sizeof(c->id), "c%011d", rand() % 100000000);
	snprintf(c->tpl_name, sizeof(c->tpl_name), "t");
	snprintf(c->dir, sizeof(c->dir), "%s/%s", r->run_dir, c->id);
	c->tpl = r->t;
	c->state = s;
	c->shell = shell;
	c->exit_status = -1;
	c->ctl = sv[0];
	c->d = r->d;
	c->t_fork = c->t_req = time_mono_ns();
	c->pid = fork();
	cr_assert(c->pid >= 0);
	if (c->pid == 0) {
		for (;;)
			pause();
	}
	c->next = r->d->clones;
	r->d->clones = c;
	*peer = sv[1];
	return c;
}

/* The child's end: true if forkd killed it (SIGKILL), else kills it. */
static bool rig_was_killed(struct clone *c)
{
	int st = 0;
	pid_t got = 0;

	for (int i = 0; i < 200 && got == 0; i++) {
		got = waitpid(c->pid, &st, WNOHANG);
		if (got == 0)
			usleep(5000);
	}
	if (got == 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, &st, 0);
		c->state = CLONE_EXITED;
		return false;
	}
	c->state = CLONE_EXITED;
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
}

static void rig_free(struct rig *r)
{
	while (r->d->clones) {
		struct clone *c = r->d->clones;
		r->d->clones = c->next;
		if (c->state != CLONE_EXITED && c->pid > 0) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, NULL, 0);
		}
		if (c->ctl >= 0)
			close(c->ctl);
		free(c);
	}
	free(r->t);
	free(r->d);
	loop_destroy(r->loop);
	rmdir(r->run_dir);
}

static struct ctl_msg msg(uint32_t op, int32_t rc, const char *text)
{
	struct ctl_msg m;
	memset(&m, 0, sizeof(m));
	m.op = op;
	m.rc = rc;
	m.t_ns = time_mono_ns();
	if (text)
		snprintf(m.text, sizeof(m.text), "%s", text);
	return m;
}

static void assert_killed_for(struct clone *c, const char *why)
{
	cr_assert(c->ctl < 0, "forkd still listens to clone %s", c->id);
	cr_assert(c->killed, "clone %s was not killed", c->id);
	cr_assert(strstr(c->exit_reason, "control protocol") && strstr(c->exit_reason, why),
		  "exit reason: %s", c->exit_reason);
	cr_assert(rig_was_killed(c), "clone %s's process is alive or did not die by SIGKILL",
		  c->id);
}

Test(forkd_ctl, a_message_of_the_wrong_size_kills_the_clone)
{
	struct rig r;
	int peer;
	rig_make(&r);
	struct clone *c = rig_clone(&r, CLONE_RUNNING, false, &peer);
	struct ctl_msg m = msg(CTL_EXITED, 0, "short");

	forkd_clone_ctl_msg(r.d, c, &m, sizeof(m) - 1);
	assert_killed_for(c, "wrong size");
	close(peer);
	rig_free(&r);
}

Test(forkd_ctl, an_oversized_message_read_from_the_socket_kills_the_clone)
{
	struct rig r;
	int peer;
	rig_make(&r);
	struct clone *c = rig_clone(&r, CLONE_RUNNING, false, &peer);
	char big[sizeof(struct ctl_msg) + 100];
	memset(big, 'x', sizeof(big));

	/* read as forkd reads it (MSG_TRUNC): the datagram's real size counts */
	cr_assert(send(peer, big, sizeof(big), 0) == (ssize_t)sizeof(big));
	char buf[sizeof(struct ctl_msg)];
	ssize_t n = recv(c->ctl, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
	cr_assert(n == (ssize_t)sizeof(big));
	forkd_clone_ctl_msg(r.d, c, buf, (size_t)n);
	assert_killed_for(c, "wrong size");
	close(peer);
	rig_free(&r);
}

Test(forkd_ctl, an_unknown_operation_kills_the_clone)
{
	struct rig r;
	int peer;
	rig_make(&r);
	struct clone *c = rig_clone(&r, CLONE_RUNNING, false, &peer);
	struct ctl_msg m = msg(99, 0, NULL);

	forkd_clone_ctl_msg(r.d, c, &m, sizeof(m));
	assert_killed_for(c, "unknown");
	close(peer);
	rig_free(&r);
}

Test(forkd_ctl, a_text_without_its_end_kills_the_clone)
{
	struct rig r;
	int peer;
	rig_make(&r);
	struct clone *c = rig_clone(&r, CLONE_RUNNING, false, &peer);
	struct ctl_msg m = msg(CTL_EXITED, 0, NULL);
	memset(m.text, 'A', sizeof(m.text));

	forkd_clone_ctl_msg(r.d, c, &m, sizeof(m));
	assert_killed_for(c, "text");
	close(peer);
	rig_free(&r);
}

Test(forkd_ctl, a_snapshot_reply_that_is_no_snapshot_id_kills_the_clone)
{
	struct rig r;
	int peer, peer2;
	rig_make(&r);
	struct clone *c = rig_clone(&r, CLONE_RUNNING, false, &peer);
	struct clone *ok = rig_clone(&r, CLONE_RUNNING, false, &peer2);
	struct ctl_msg bad = msg(CTL_REPLY, 0, "../../../etc/passwd");
	struct ctl_msg good = msg(CTL_REPLY, 0, "0123456789abcdef0123456789abcdef");
	struct ctl_msg positive = msg(CTL_REPLY, 7, "");

	c->op = ok->op = CTL_SNAPSHOT;
	forkd_clone_ctl_msg(r.d, ok, &good, sizeof(good));
	cr_assert(ok->ctl >= 0 && !ok->killed, "a good reply was refused: %s", ok->exit_reason);
	forkd_clone_ctl_msg(r.d, c, &bad, sizeof(bad));
	assert_killed_for(c, "reply");
	/* a reply's rc is 0 or -errno */
	ok->op = CTL_PAUSE;
	forkd_clone_ctl_msg(r.d, ok, &positive, sizeof(positive));
	assert_killed_for(ok, "reply");
	close(peer);
	close(peer2);
	rig_free(&r);
}

Test(forkd_ctl, a_pool_shell_that_runs_before_it_is_handed_out_is_killed)
{
	struct rig r;
	int peer;
	rig_make(&r);
	struct clone *c = rig_clone(&r, CLONE_STARTING, true, &peer);
	struct ctl_msg m = msg(CTL_RUNNING, 0, NULL);

	forkd_clone_ctl_msg(r.d, c, &m, sizeof(m));
	cr_assert(r.d->forks_pool + r.d->forks_cold == 0, "a shell's run was counted as a fork");
	assert_killed_for(c, "pool shell");
	close(peer);
	rig_free(&r);
}

Test(forkd_ctl, texts_become_valid_utf8_for_the_api_and_the_log)
{
	struct rig r;
	int peer;
	rig_make(&r);
	struct clone *c = rig_clone(&r, CLONE_RUNNING, false, &peer);
	/* invalid bytes, an overlong NUL, a surrogate, an escape sequence,
	 * and valid UTF-8 that must stay */
	struct ctl_msg m =
	    msg(CTL_EXITED, 1, "bad \xff\xfe \xc0\x80 \xed\xa0\x80 \x1b[31m red, caf\xc3\xa9 ok");

	forkd_clone_ctl_msg(r.d, c, &m, sizeof(m));
	cr_assert(c->ctl >= 0 && !c->killed);
	cr_assert_str_eq(c->exit_reason, "bad ?? ?? ??? ?[31m red, caf\xc3\xa9 ok");
	c->state = CLONE_EXITED; /* as when reaped: the reason is in its JSON */
	c->exit_status = 1;
	json_t *j = forkd_clone_json(c);
	cr_assert(j, "the clone's JSON view could not be made");
	json_decref(j);
	c->state = CLONE_RUNNING;
	close(peer);
	rig_free(&r);
}

Test(forkd_ctl, times_from_the_future_or_the_past_are_taken_as_now)
{
	struct rig r;
	int p1, p2;
	rig_make(&r);
	struct clone *a = rig_clone(&r, CLONE_STARTING, false, &p1);
	struct clone *b = rig_clone(&r, CLONE_STARTING, false, &p2);
	uint64_t t0 = time_mono_ns();
	struct ctl_msg m = msg(CTL_RUNNING, 0, NULL);

	a->t_req = b->t_req = t0 - 1000000; /* asked for 1 ms ago */
	m.t_ns = UINT64_MAX;
	forkd_clone_ctl_msg(r.d, a, &m, sizeof(m));
	m.t_ns = 1; /* long before it was asked for */
	forkd_clone_ctl_msg(r.d, b, &m, sizeof(m));
	uint64_t t1 = time_mono_ns();
	cr_assert(a->state == CLONE_RUNNING && b->state == CLONE_RUNNING);
	cr_assert(a->fork_ns >= 1000000 && a->fork_ns <= t1 - a->t_req, "fork_ns %llu",
		  (unsigned long long)a->fork_ns);
	cr_assert(b->fork_ns >= 1000000 && b->fork_ns <= t1 - b->t_req, "fork_ns %llu",
		  (unsigned long long)b->fork_ns);
	cr_assert(r.d->lat_count == 2 && r.d->lat_sum < 1.0, "latency sum %f", r.d->lat_sum);

	struct ctl_msg t = msg(CTL_TIMES, 0, NULL);
	t.v[CT_CHILD_START] = UINT64_MAX;
	t.v[CT_FIRST_RUN] = t1 + 3600ULL * 1000000000ULL;
	t.v[CT_MAP] = 5000;
	forkd_clone_ctl_msg(r.d, a, &t, sizeof(t));
	cr_assert(a->has_times && a->times[CT_CHILD_START] == 0 && a->times[CT_FIRST_RUN] == 0 &&
		  a->times[CT_MAP] == 5000);
	close(p1);
	close(p2);
	rig_free(&r);
}

Test(forkd_ctl, ready_from_a_starting_shell_makes_it_ready_and_ends_the_back_off)
{
	struct rig r;
	int peer;
	rig_make(&r);
	struct clone *c = rig_clone(&r, CLONE_STARTING, true, &peer);
	struct ctl_msg m = msg(CTL_READY, 0, NULL);

	forkd_pool_shell_failed(r.d, r.t, "an earlier shell failed");
	cr_assert(r.t->fail_streak == 1 && r.t->retry_at > 0);
	forkd_clone_ctl_msg(r.d, c, &m, sizeof(m));
	cr_assert(c->state == CLONE_READY);
	cr_assert(r.t->fail_streak == 0 && r.t->retry_at == 0);
	cr_assert(r.t->shell_failures == 1, "failures are counted for good");
	close(peer);
	rig_free(&r);
}

/* Issue 15, failure 2: 73 failing pool shells a second. */
Test(forkd_pool, failing_shells_back_off_exponentially_up_to_30_s)
{
	struct rig r;
	uint64_t expect_ms = 100;
	rig_make(&r);

	for (int i = 1; i <= 12; i++) {
		uint64_t before = time_mono_ns();
		forkd_pool_shell_failed(r.d, r.t, "cannot restore");
		uint64_t after = time_mono_ns();
		cr_assert(r.t->fail_streak == (unsigned)i && r.t->shell_failures == (uint64_t)i);
		cr_assert(r.t->retry_at >= before + expect_ms * 1000000ULL &&
			      r.t->retry_at <= after + expect_ms * 1000000ULL,
			  "failure %d: next try in %lld ms, expected %llu", i,
			  (long long)(r.t->retry_at - after) / 1000000,
			  (unsigned long long)expect_ms);
		expect_ms = expect_ms * 2 > 30000 ? 30000 : expect_ms * 2;
	}
	cr_assert_str_eq(r.t->last_failure, "cannot restore");
	char *metrics = forkd_metrics(r.d);
	cr_assert(metrics);
	cr_assert(strstr(metrics, "forkd_pool_failing{template=\"t\"} 1\n"), "%s", metrics);
	cr_assert(strstr(metrics, "forkd_pool_shell_failures_total{template=\"t\"} 12\n"), "%s",
		  metrics);
	free(metrics);
	rig_free(&r);
}

/* While failing, a pool starts no shell before retry_at (forkd_pool_fill
 * arms the refill timer instead). */
Test(forkd_pool, a_failing_pool_forks_nothing_before_its_retry_time)
{
	struct rig r;
	rig_make(&r);

	r.t->pool_size = 3;
	forkd_pool_shell_failed(r.d, r.t, "cannot restore");
	forkd_pool_fill(r.d, r.t); /* would fork (and crash here: no template) if it did not wait */
	cr_assert(r.d->clones == NULL, "a shell was started during the back-off");
	rig_free(&r);
}
