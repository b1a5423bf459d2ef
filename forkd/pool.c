/* forkd/pool.c - warm pools and fork requests: each template keeps
 * pool_size paused clone shells ready (restored, waiting for CTL_GO);
 * a fork request takes ready shells first and forks cold clones for the
 * rest; pools are refilled a little after a hand-out, and a template whose
 * shells keep failing to start backs off exponentially. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "forkd/internal.h"

#define REFILL_DELAY_MS 20	   /* pools refill this long after a hand-out */
#define POOL_BACKOFF_MIN_MS 100ULL /* after a pool shell's first failure */
#define POOL_BACKOFF_MAX_MS 30000ULL
#define MAX_SHELLS_STARTING 2U /* restores of pool shells in flight (CPU for the hot path) */

/* ------------------------------------------------------------ pools */

unsigned forkd_pool_shells(const struct forkd *d, const struct template *t, enum clone_state s)
{
	unsigned n = 0;
	for (const struct clone *c = d->clones; c; c = c->next)
		if (c->shell && !c->killed && c->state == s && (!t || c->tpl == t))
			n++;
	return n;
}

/* Arms the refill timer to fire in ns (sooner wins over later). */
static void refill_in(struct forkd *d, uint64_t ns)
{
	struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ULL),
					      .tv_nsec = (long)(ns % 1000000000ULL)}};
	struct itimerspec cur;

	if (d->refill_armed && d->refill_tfd >= 0 && timerfd_gettime(d->refill_tfd, &cur) == 0) {
		uint64_t left =
		    (uint64_t)cur.it_value.tv_sec * 1000000000ULL + (uint64_t)cur.it_value.tv_nsec;
		if (left && left <= ns)
			return;
	}
	if (d->refill_tfd >= 0 && timerfd_settime(d->refill_tfd, 0, &its, NULL) == 0)
		d->refill_armed = true;
}

/* Refills pools a little later, so that preparing shells (a restore each)
 * does not compete for the CPU with clones just handed out. */
void forkd_pool_refill_later(struct forkd *d)
{
	struct itimerspec its = {.it_value = {.tv_nsec = REFILL_DELAY_MS * 1000000L}};

	if (d->refill_armed)
		return;
	if (d->refill_tfd < 0 || timerfd_settime(d->refill_tfd, 0, &its, NULL) < 0) {
		for (struct template *t = d->templates; t; t = t->next)
			forkd_pool_fill(d, t);
		return;
	}
	d->refill_armed = true;
}

void forkd_pool_on_refill(void *arg, uint32_t events)
{
	struct forkd *d = arg;
	uint64_t n;
	(void)events;
	if (read(d->refill_tfd, &n, sizeof(n)) < 0) {
		/* EAGAIN: spurious */
	}
	d->refill_armed = false;
	for (struct template *t = d->templates; t; t = t->next)
		forkd_pool_fill(d, t);
}

void forkd_pool_fill(struct forkd *d, struct template *t)
{
	if (d->stopping)
		return;
	unsigned ready = forkd_pool_shells(d, t, CLONE_READY),
		 starting = forkd_pool_shells(d, t, CLONE_STARTING);
	uint64_t now = time_mono_ns();

	/* Failing: one shell at a time, after the back-off. */
	if (t->fail_streak && ready + starting < t->pool_size) {
		if (starting || now < t->retry_at) {
			if (!starting)
				refill_in(d, t->retry_at - now);
			goto trim;
		}
		struct clone *c = forkd_clone_spawn(d, t, false);
		if (c)
			c->shell = true;
		goto trim;
	}
	while (ready + starting < t->pool_size &&
	       forkd_pool_shells(d, NULL, CLONE_STARTING) < MAX_SHELLS_STARTING) {
		struct clone *c = forkd_clone_spawn(d, t, false);
		if (!c) {
			log_warn("template %s: cannot prepare a pool shell: %s", t->name,
				 strerror(errno));
			return;
		}
		c->shell = true;
		starting++;
	}
trim:
	for (struct clone *c = d->clones; c && ready + starting > t->pool_size; c = c->next) {
		if (c->tpl == t && c->shell && !c->killed && c->state == CLONE_READY) {
			forkd_clone_kill(d, c);
			ready--;
		}
	}
}

void forkd_pool_shell_ready(struct forkd *d, struct template *t)
{
	t->fail_streak = 0;
	t->retry_at = 0;
	forkd_pool_fill(d, t);
}

/* Issue 15: a template whose clones could not start made 73 failing
 * processes a second. Each failure is counted, and the next shell waits
 * POOL_BACKOFF_MIN_MS, doubling up to POOL_BACKOFF_MAX_MS. */
void forkd_pool_shell_failed(struct forkd *d, struct template *t, const char *reason)
{
	(void)d;
	t->shell_failures++;
	t->fail_streak++;
	snprintf(t->last_failure, sizeof(t->last_failure), "%s", reason);
	unsigned shift = t->fail_streak - 1 < 16 ? t->fail_streak - 1 : 16;
	uint64_t ms = POOL_BACKOFF_MIN_MS << shift;
	if (ms > POOL_BACKOFF_MAX_MS)
		ms = POOL_BACKOFF_MAX_MS;
	t->retry_at = time_mono_ns() + ms * 1000000ULL;
	log_warn("template %s: a pool shell failed to start (%s); %u in a row, next try in %llu ms",
		 t->name, reason, t->fail_streak, (unsigned long long)ms);
}

/* ------------------------------------------------------------ fork requests */

struct fork_req {
	struct http_exchange *ex;
	unsigned count, done, failed;
	int status; /* HTTP status of the first failure */
	char err[512];
	struct clone **clones;
};

static void req_finish(struct forkd *d, struct fork_req *r);

static void req_fail(struct fork_req *r, int status, const char *what, const char *why)
{
	if (r->status == 0) {
		r->status = status;
		snprintf(r->err, sizeof(r->err), "%.200s: %.300s", what, why);
	}
	r->failed++;
}

static void req_check(struct forkd *d, struct fork_req *r)
{
	if (r->done + r->failed == r->count)
		req_finish(d, r);
}
void forkd_fork_clone_running(struct forkd *d, struct fork_req *r)
{
	r->done++;
	req_check(d, r);
}

void forkd_fork_clone_died(struct forkd *d, struct fork_req *r, struct clone *c, bool counted,
			   const char *reason)
{
	/* Died before the reply went out: the request fails whole (a clone
	 * already counted as running is uncounted). */
	if (counted && r->done)
		r->done--;
	for (unsigned i = 0; i < r->count; i++)
		if (r->clones[i] == c)
			r->clones[i] = NULL;
	req_fail(r, 500, "a clone process died while starting", reason);
	req_check(d, r);
}

static void req_finish(struct forkd *d, struct fork_req *r)
{
	if (r->failed) {
		for (unsigned i = 0; i < r->count; i++) {
			struct clone *c = r->clones[i];
			if (!c)
				continue;
			c->req = NULL;
			c->hidden = true;
			forkd_clone_kill(d, c);
		}
		d->fork_failures++;
		http_respond_error(r->ex, r->status, "%s", r->err);
	} else {
		json_t *arr = json_array();
		for (unsigned i = 0; i < r->count; i++) {
			r->clones[i]->req = NULL;
			json_array_append_new(arr, forkd_clone_json(r->clones[i]));
		}
		json_t *body = json_pack("{s:o}", "clones", arr);
		http_respond_json(r->ex, 201, body);
		json_decref(body);
	}
	free(r->clones);
	free(r);
}

/* A clone of t for the request: a ready pool shell, else a cold one. */
static struct clone *clone_take(struct forkd *d, struct template *t, uint64_t t_req)
{
	struct clone *c;

	for (c = d->clones; c; c = c->next) {
		if (c->tpl == t && c->shell && !c->killed && c->state == CLONE_READY)
			break;
	}
	if (c) {
		c->t_req = t_req;
		c->shell = false;
		c->from_pool = true;
		c->state = CLONE_GOING;
		if (forkd_clone_send(c, CTL_GO, NULL) < 0) {
			c->hidden = true;
			forkd_clone_kill(d, c);
			c = NULL; /* fall back to a cold clone */
		} else {
			t->forks++;
			return c;
		}
	}
	c = forkd_clone_spawn(d, t, true);
	if (!c)
		return NULL;
	c->t_req = t_req;
	t->forks++;
	return c;
}

void forkd_fork(struct forkd *d, struct template *t, unsigned count, struct http_exchange *ex,
		struct invoke *inv)
{
	uint64_t t_req = time_mono_ns();

	if (inv) {
		struct clone *c = clone_take(d, t, t_req);
		if (!c) {
			forkd_invoke_fail(d, inv, 500, strerror(errno));
			return;
		}
		c->hidden = true;
		c->inv = inv;
		forkd_invoke_bind(inv, c);
		forkd_pool_refill_later(d);
		return;
	}
	struct fork_req *r = calloc(1, sizeof(*r));
	if (!r || !(r->clones = calloc(count, sizeof(*r->clones)))) {
		free(r);
		http_respond_error(ex, 500, "out of memory");
		return;
	}
	r->ex = ex;
	r->count = count;
	for (unsigned i = 0; i < count; i++) {
		struct clone *c = clone_take(d, t, t_req);
		if (!c) {
			req_fail(r, 500, "cannot start a clone process", strerror(errno));
			continue;
		}
		c->req = r;
		r->clones[i] = c;
	}
	forkd_pool_refill_later(d);
	req_check(d, r);
}

int forkd_capacity_check(struct forkd *d, unsigned count, char *err, size_t errlen)
{
	unsigned live = forkd_clones_live(d, NULL);

	if (live + count > d->cfg.max_clones) {
		snprintf(err, errlen,
			 "forkd runs %u clones and --max-clones is %u: %u more cannot start", live,
			 d->cfg.max_clones, count);
		return 503;
	}
	if (d->cfg.mem_reserve) {
		char mi[8192];
		if (forkd_read_small("/proc/meminfo", mi, sizeof(mi)) == 0) {
			const char *p = strstr(mi, "MemAvailable:");
			unsigned long long kb = 0;
			if (p && sscanf(p, "MemAvailable: %llu kB", &kb) == 1 &&
			    kb * 1024ULL < d->cfg.mem_reserve) {
				snprintf(err, errlen,
					 "host memory is short (%llu MiB available, reserve %llu "
					 "MiB): no new clones",
					 kb >> 10, d->cfg.mem_reserve >> 20);
				return 503;
			}
		}
	}
	return 0;
}

/* ------------------------------------------------------------ templates */
