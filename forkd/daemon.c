/* forkd/daemon.c - the fork daemon's core: templates, clone processes and
 * their control sockets, warm pools, reaping, metrics. Everything runs on
 * the loop thread; counts (pool shells, live clones) are computed from the
 * clone list rather than kept, so they cannot drift. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "forkd/internal.h"

#define MAX_EXITED_KEPT 256U
#define REFILL_DELAY_MS 20 /* pools refill this long after a hand-out */
#define POOL_BACKOFF_MIN_MS 100ULL  /* after a pool shell's first failure */
#define POOL_BACKOFF_MAX_MS 30000ULL
#define MAX_SHELLS_STARTING 2U /* restores of pool shells in flight (CPU for the hot path) */

/* ------------------------------------------------------------ fork requests */

struct fork_req {
	struct http_exchange *ex;
	unsigned count, done, failed;
	int status;      /* HTTP status of the first failure */
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

int forkd_read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	while (got + 1 < len) {
		ssize_t n = read(fd, buf + got, len - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';
	return 0;
}


/* ------------------------------------------------------------ lookups */

struct template *forkd_template_find(struct forkd *d, const char *name)
{
	for (struct template *t = d->templates; t; t = t->next)
		if (!strcmp(t->name, name))
			return t;
	return NULL;
}

struct clone *forkd_clone_find(struct forkd *d, const char *id)
{
	for (struct clone *c = d->clones; c; c = c->next)
		if (!c->shell && !c->hidden && !strcmp(c->id, id))
			return c;
	return NULL;
}

static bool clone_alive(const struct clone *c)
{
	return c->state != CLONE_EXITED;
}

/* Clones given out and not exited (invoke clones included). */
static unsigned live_clones(struct forkd *d, const struct template *t)
{
	unsigned n = 0;
	/* A clone forkd killed (an invoke's, once answered) no longer counts. */
	for (struct clone *c = d->clones; c; c = c->next)
		if (!c->shell && clone_alive(c) && !c->killed && (!t || c->tpl == t))
			n++;
	return n;
}

static unsigned shells(struct forkd *d, const struct template *t, enum clone_state s)
{
	unsigned n = 0;
	for (struct clone *c = d->clones; c; c = c->next)
		if (c->shell && !c->killed && c->state == s && (!t || c->tpl == t))
			n++;
	return n;
}

const char *forkd_clone_state_name(enum clone_state s)
{
	switch (s) {
	case CLONE_STARTING:
	case CLONE_GOING:
		return "starting";
	case CLONE_READY:
		return "ready";
	case CLONE_RUNNING:
		return "running";
	case CLONE_PAUSED:
		return "paused";
	case CLONE_EXITED:
		return "exited";
	}
	return "?";
}

/* ------------------------------------------------------------ JSON */

json_t *forkd_template_json(const struct template *t)
{
	struct forkd *d = t->d;
	const struct vm_config *cfg = vm_template_config(t->vt);
	return json_pack("{s:s,s:s,s:I,s:i,s:{s:i,s:i,s:b,s:I,s:s?},s:i,s:I,s:s}", "name", t->name,
			 "snapshot", t->id, "memory_size", (json_int_t)cfg->memory_size, "vcpus",
			 (int)cfg->boot_vcpus, "pool", "size", (int)t->pool_size, "ready",
			 (int)shells(d, t, CLONE_READY), "failing", t->fail_streak > 0, "failures",
			 (json_int_t)t->shell_failures, "last_failure",
			 t->last_failure[0] ? t->last_failure : NULL, "clones", (int)live_clones(d, t),
			 "forks", (json_int_t)t->forks, "platform", vm_platform_name(d->cfg.platform));
}

json_t *forkd_clone_json(const struct clone *c)
{
	char path[300];
	json_t *j = json_pack("{s:s,s:s,s:i,s:s,s:s}", "id", c->id, "template", c->tpl_name, "pid",
			      (int)c->pid, "state", forkd_clone_state_name(c->state), "platform",
			      vm_platform_name(c->d->cfg.platform));
	if (!j)
		return NULL;
	snprintf(path, sizeof(path), "%s/agent.sock", c->dir);
	json_object_set_new(j, "agent_socket", json_string(path));
	snprintf(path, sizeof(path), "%s/console.log", c->dir);
	json_object_set_new(j, "console_log", json_string(path));
	json_object_set_new(j, "from_pool", json_boolean(c->from_pool));
	if (c->fork_ns)
		json_object_set_new(j, "fork_us", json_integer((json_int_t)(c->fork_ns / 1000)));
	json_object_set_new(j, "created_unix_ms", json_integer((json_int_t)c->created_ms));
	if (c->has_times && c->t_req) {
		/* Where the fork went, in microseconds from the request. */
		const uint64_t *v = c->times;
		json_t *b = json_object();
#define US(x) json_integer((json_int_t)((x) / 1000))
		if (c->from_pool) {
			json_object_set_new(b, "resume", US(c->t_running - c->t_req));
		} else if (v[CT_CHILD_START] > c->t_req) {
			json_object_set_new(b, "request", US(c->t_fork - c->t_req));
			json_object_set_new(b, "process", US(v[CT_CHILD_START] - c->t_fork));
			json_object_set_new(b, "jail", US(v[CT_JAIL]));
			json_object_set_new(b, "vm_create", US(v[CT_KVM] + v[CT_CREATE]));
			json_object_set_new(b, "memory_map", US(v[CT_MAP]));
			json_object_set_new(b, "state_replay", US(v[CT_STATE]));
			json_object_set_new(b, "vcpu_threads", US(v[CT_THREADS]));
		}
		if (v[CT_FIRST_RUN] > c->t_req) {
			json_object_set_new(b, "first_run", US(v[CT_FIRST_RUN] - c->t_req));
			/* its name before the process platform */
			if (c->d->cfg.platform == VM_PLATFORM_KVM)
				json_object_set_new(b, "first_kvm_run",
						    US(v[CT_FIRST_RUN] - c->t_req));
		}
#undef US
		json_object_set_new(j, "breakdown_us", b);
	}
	if (c->state == CLONE_EXITED) {
		json_t *e = json_pack("{s:s}", "reason", c->exit_reason);
		if (c->exit_signal)
			json_object_set_new(e, "signal", json_integer(c->exit_signal));
		else
			json_object_set_new(e, "status", json_integer(c->exit_status));
		json_object_set_new(j, "exit", e);
	}
	return j;
}

/* ------------------------------------------------------------ clones */

int forkd_ctl_send(int fd, uint32_t op, int32_t rc, const char *text, int flags)
{
	struct ctl_msg m = { .op = op, .rc = rc, .t_ns = time_mono_ns() };

	if (text)
		snprintf(m.text, sizeof(m.text), "%s", text);
	if (send(fd, &m, sizeof(m), MSG_NOSIGNAL | flags) != (ssize_t)sizeof(m))
		return errno ? -errno : -EIO;
	return 0;
}

int forkd_clone_send(struct clone *c, uint32_t op, const char *text)
{
	if (c->ctl < 0)
		return -EPIPE;
	return forkd_ctl_send(c->ctl, op, 0, text, MSG_DONTWAIT);
}

/* Reads with getdents64 into a stack buffer: forkd lists directories for
 * every clone, and opendir's 32 KiB buffer per call would churn the
 * allocator. */
void forkd_dir_each(const char *dir, forkd_dir_fn *fn, void *arg)
{
	char buf[4096] __attribute__((aligned(8)));
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return;
	while ((n = getdents64(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			struct dirent64 *e = (struct dirent64 *)(void *)(buf + off);
			off += e->d_reclen;
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				fn(dir, e->d_name, e->d_type, arg);
		}
	}
	close(fd);
}

static void sched_one(const char *dir, const char *name, unsigned char type, void *arg)
{
	struct sched_param sp = { .sched_priority = 0 };
	pid_t tid = (pid_t)atoi(name);
	(void)dir;
	(void)type;
	if (tid > 0)
		sched_setscheduler(tid, *(const int *)arg, &sp);
}

/* Tearing a VM down costs 5-35 ms of kernel time on PVM (closing a VM with
 * an irqchip): a dying clone does it at SCHED_IDLE, every thread of it, so
 * it does not take the CPU from clones being forked or running. */
void forkd_sched_threads(pid_t pid, int policy)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	forkd_dir_each(path, sched_one, &policy);
}

/* forkd fires invoke time limits and answers its API while the guests it
 * runs may spin on every CPU. At their priority it gets a 1/N share of the
 * CPU: with 45 spinning guests on 2 CPUs, limits of 2 s fired 10 s late and
 * GET /v1/ping took up to 9 s (tests/integration/test_forkd_load.c). So it
 * runs at FORKD_NICE when allowed (root, CAP_SYS_NICE or RLIMIT_NICE), with
 * SCHED_RESET_ON_FORK: its children (clones, template builders) start at
 * nice 0. Best effort. */
#define FORKD_NICE (-10)

static void sched_ahead_of_guests(void)
{
	struct sched_param sp = { .sched_priority = 0 };

	if (sched_setscheduler(0, SCHED_OTHER | SCHED_RESET_ON_FORK, &sp) < 0) {
		log_info("cannot set SCHED_RESET_ON_FORK: %s; forkd keeps its priority", strerror(errno));
		return;
	}
	if (setpriority(PRIO_PROCESS, 0, FORKD_NICE) < 0)
		log_info("cannot run at nice %d: %s; spinning guests may delay forkd", FORKD_NICE,
			 strerror(errno));
}

void forkd_clone_kill(struct forkd *d, struct clone *c)
{
	(void)d;
	if (c->killed || c->state == CLONE_EXITED || c->pid <= 0)
		return;
	forkd_sched_threads(c->pid, SCHED_IDLE);
	kill(c->pid, SIGKILL);
	c->killed = true;
}

/* Removes a dead clone's directory with what its process left there: the
 * agent socket and console log, and the socket's temporary name when the
 * clone was killed during its restore (before the socket was published). */
static void unlink_one(const char *dir, const char *name, unsigned char type, void *arg)
{
	char p[512];
	(void)type;
	(void)arg;
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	unlink(p);
}

static void rm_dir(const char *dir)
{
	forkd_dir_each(dir, unlink_one, NULL);
	rmdir(dir);
}

static void ctl_close(struct forkd *d, struct clone *c)
{
	if (c->ctl < 0)
		return;
	loop_del(d->loop, c->ctl);
	close(c->ctl);
	c->ctl = -1;
}

void forkd_clone_forget(struct forkd *d, struct clone *c)
{
	for (struct clone **pp = &d->clones; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	if (c->state == CLONE_EXITED && !c->shell && !c->hidden && d->nr_exited)
		d->nr_exited--;
	ctl_close(d, c);
	rm_dir(c->dir);
	free(c);
}

static void on_clone_ctl(void *arg, uint32_t events);

/* Arms the refill timer to fire in ns (sooner wins over later). */
static void refill_in(struct forkd *d, uint64_t ns)
{
	struct itimerspec its = { .it_value = { .tv_sec = (time_t)(ns / 1000000000ULL),
						.tv_nsec = (long)(ns % 1000000000ULL) } };
	struct itimerspec cur;

	if (d->refill_armed && d->refill_tfd >= 0 && timerfd_gettime(d->refill_tfd, &cur) == 0) {
		uint64_t left = (uint64_t)cur.it_value.tv_sec * 1000000000ULL +
				(uint64_t)cur.it_value.tv_nsec;
		if (left && left <= ns)
			return;
	}
	if (d->refill_tfd >= 0 && timerfd_settime(d->refill_tfd, 0, &its, NULL) == 0)
		d->refill_armed = true;
}

static void refill_later(struct forkd *d)
{
	struct itimerspec its = { .it_value = { .tv_nsec = REFILL_DELAY_MS * 1000000L } };

	if (d->refill_armed)
		return;
	if (d->refill_tfd < 0 || timerfd_settime(d->refill_tfd, 0, &its, NULL) < 0) {
		for (struct template *t = d->templates; t; t = t->next)
			forkd_pool_fill(d, t);
		return;
	}
	d->refill_armed = true;
}

/* Forks a clone process of t. Returns the clone (state STARTING) or NULL
 * with errno set. */
static struct clone *clone_spawn(struct forkd *d, struct template *t, bool autostart)
{
	uint8_t rnd[FORKD_CLONE_ID_LEN / 2];
	struct clone *c = calloc(1, sizeof(*c));
	int sv[2];
	int rc;

	if (!c)
		return NULL;
	do {
		if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) {
			free(c);
			return NULL;
		}
		hex_encode(rnd, sizeof(rnd), c->id);
	} while (forkd_clone_find(d, c->id));
	snprintf(c->tpl_name, sizeof(c->tpl_name), "%s", t->name);
	snprintf(c->dir, sizeof(c->dir), "%.200s/clones/%s", d->run_dir, c->id);
	c->tpl = t;
	c->exit_status = -1;
	c->state = CLONE_STARTING;
	c->created_ms = time_real_ns() / 1000000;
	uint64_t tf = time_mono_ns();
	uint64_t mem_max = vm_template_config(t->vt)->memory_size + d->cfg.jail.mem_margin;
	if ((rc = forkd_jail_cgroup_create(d, c->id, mem_max)) < 0) {
		log_warn("clone %s: cannot make its cgroup: %s", c->id, strerror(-rc));
		free(c);
		errno = -rc;
		return NULL;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		rc = errno;
		forkd_jail_cgroup_remove(d, c->id);
		free(c);
		errno = rc;
		return NULL;
	}
	/* fork(), or with the jail's namespaces (forkd has one thread, so a
	 * raw clone is a fork) */
	unsigned long flags = forkd_jail_clone_flags(d);
	pid_t pid = flags ? (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0UL) : fork();
	if (pid == 0) {
		struct clone_child_args a = {
			.vt = t->vt, .ctl = sv[1], .autostart = autostart, .id = c->id,
			.dir = c->dir, .store = d->store, .seccomp = d->clone_sc, .forkd = d,
			.platform = d->cfg.platform,
		};
		forkd_clone_main(&a);
	}
	rc = errno;
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		forkd_jail_cgroup_remove(d, c->id);
		free(c);
		errno = rc;
		return NULL;
	}
	log_debug("clone %s: fork() %.3f ms", c->id, (time_mono_ns() - tf) / 1e6);
	c->t_fork = tf;
	c->pid = pid;
	c->ctl = sv[0];
	if (fd_set_nonblock(c->ctl) < 0 || loop_add(d->loop, c->ctl, EPOLLIN, on_clone_ctl, c) < 0) {
		kill(pid, SIGKILL);
		c->killed = true;
		c->state = CLONE_STARTING;
		close(c->ctl);
		c->ctl = -1;
	}
	c->next = d->clones;
	d->clones = c;
	c->d = d;
	return c;
}

static void record_latency(struct forkd *d, uint64_t ns)
{
	static const double bounds[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
					 0.01,   0.025,   0.05,   0.1,   0.25,   1.0 };
	double s = ns / 1e9;
	for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
		if (s <= bounds[i])
			d->lat_buckets[i]++;
	d->lat_count++;
	d->lat_sum += s;
}

static void clone_running(struct forkd *d, struct clone *c, uint64_t t_ns)
{
	c->state = CLONE_RUNNING;
	c->t_running = t_ns;
	if (c->t_req && t_ns > c->t_req)
		c->fork_ns = t_ns - c->t_req;
	record_latency(d, c->fork_ns);
	if (c->from_pool)
		d->forks_pool++;
	else
		d->forks_cold++;
	if (c->req) {
		struct fork_req *r = c->req;
		r->done++;
		req_check(d, r);
	} else if (c->inv) {
		forkd_invoke_clone_running(d, c->inv, c);
	}
}

static int op_status(int rc)
{
	switch (-rc) {
	case EBUSY:
		return 409;
	case EINVAL:
	case ENAMETOOLONG:
		return 400;
	case ENOSPC:
		return 507;
	default:
		return 500;
	}
}

static void clone_reply(struct forkd *d, struct clone *c, const struct ctl_msg *m)
{
	struct http_exchange *ex = c->op_ex;
	(void)d;
	if (!ex)
		return;
	c->op_ex = NULL;
	if (m->rc < 0) {
		http_respond_error(ex, op_status(m->rc), "%s", m->text);
		return;
	}
	if (c->op == CTL_SNAPSHOT) {
		json_t *j = json_pack("{s:s}", "id", m->text);
		if (c->op_tag[0])
			json_object_set_new(j, "tag", json_string(c->op_tag));
		http_respond_json(ex, 201, j);
		json_decref(j);
		return;
	}
	if (c->op == CTL_PAUSE)
		c->state = CLONE_PAUSED;
	else if (c->op == CTL_RESUME)
		c->state = CLONE_RUNNING;
	http_respond(ex, 204, NULL, NULL, 0);
}

static void on_clone_ctl(void *arg, uint32_t events)
{
	struct clone *c = arg;
	struct forkd *d = c->d;
	struct ctl_msg m;

	for (;;) {
		ssize_t n = recv(c->ctl, &m, sizeof(m), MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n != (ssize_t)sizeof(m)) {
			/* EOF or a broken message: the process is going; SIGCHLD reaps it. */
			ctl_close(d, c);
			return;
		}
		m.text[sizeof(m.text) - 1] = '\0';
		switch (m.op) {
		case CTL_READY:
			if (c->state == CLONE_STARTING && c->shell) {
				/* restored at SCHED_IDLE; a jailed shell has no
				 * CAP_SYS_NICE to come back by itself */
				if (d->jail.on)
					forkd_sched_threads(c->pid, SCHED_OTHER);
				c->state = CLONE_READY;
				if (c->tpl) {
					c->tpl->fail_streak = 0;
					c->tpl->retry_at = 0;
					forkd_pool_fill(d, c->tpl);
				}
			}
			break;
		case CTL_RUNNING:
			if (c->state == CLONE_STARTING || c->state == CLONE_GOING)
				clone_running(d, c, m.t_ns);
			break;
		case CTL_FAILED:
		case CTL_EXITED:
			snprintf(c->exit_reason, sizeof(c->exit_reason), "%s", m.text);
			if (m.op == CTL_FAILED)
				log_warn("clone %s could not start: %s", c->id, m.text);
			break;
		case CTL_REPLY:
			clone_reply(d, c, &m);
			break;
		case CTL_TIMES:
			memcpy(c->times, m.v, sizeof(c->times));
			c->has_times = true;
			break;
		default:
			log_warn("clone %s: unknown control message %u", c->id, m.op);
		}
		if (c->ctl < 0)
			return;
	}
	if (events & (EPOLLHUP | EPOLLERR))
		ctl_close(d, c);
}

static const char *signame(int sig)
{
	const char *s = sigabbrev_np(sig);
	return s ? s : "?";
}

static void clone_reaped(struct forkd *d, struct clone *c, int wstatus)
{
	bool given_out = !c->shell;
	char why[200];

	if (WIFSIGNALED(wstatus)) {
		c->exit_signal = WTERMSIG(wstatus);
		snprintf(why, sizeof(why), "killed by signal %d (SIG%s)%s", c->exit_signal,
			 signame(c->exit_signal), c->killed ? " sent by forkd" : "");
	} else {
		c->exit_status = WEXITSTATUS(wstatus);
		snprintf(why, sizeof(why), "exited with status %d", c->exit_status);
	}
	if (c->exit_reason[0]) {
		char tmp[512];
		snprintf(tmp, sizeof(tmp), "%s", c->exit_reason);
		snprintf(c->exit_reason, sizeof(c->exit_reason), "%.190s: %.300s", why, tmp);
	} else {
		snprintf(c->exit_reason, sizeof(c->exit_reason), "%s", why);
	}
	enum clone_state was = c->state;
	c->state = CLONE_EXITED;
	ctl_close(d, c);
	forkd_jail_cgroup_remove(d, c->id);
	if (given_out && !c->hidden)
		log_info("clone %s (pid %d) %s", c->id, (int)c->pid, c->exit_reason);
	if (c->req) {
		struct fork_req *r = c->req;
		c->req = NULL;
		c->hidden = true; /* a failed fork leaves no record */
		/* Died before the reply went out: the request fails whole (a
		 * clone already counted as running is uncounted). */
		if (was != CLONE_STARTING && was != CLONE_GOING && r->done)
			r->done--;
		for (unsigned i = 0; i < r->count; i++)
			if (r->clones[i] == c)
				r->clones[i] = NULL;
		req_fail(r, 500, "a clone process died while starting", c->exit_reason);
		req_check(d, r);
	}
	if (c->inv)
		forkd_invoke_fail(d, c->inv, 500, c->exit_reason);
	if (c->op_ex) {
		struct http_exchange *ex = c->op_ex;
		c->op_ex = NULL;
		if (c->op == -1) {
			http_respond(ex, 204, NULL, NULL, 0);
			c->hidden = true;
		} else {
			http_respond_error(ex, 409, "clone %s exited: %s", c->id, c->exit_reason);
		}
	}
	struct template *t = c->tpl;
	if (t && c->shell && was == CLONE_STARTING && !c->killed) {
		/* A pool shell died before it was ready: count it, and back off
		 * before the next one (issue 15: a template whose clones cannot
		 * start made 73 failing processes a second). */
		t->shell_failures++;
		t->fail_streak++;
		snprintf(t->last_failure, sizeof(t->last_failure), "%s", c->exit_reason);
		unsigned shift = t->fail_streak - 1 < 16 ? t->fail_streak - 1 : 16;
		uint64_t ms = POOL_BACKOFF_MIN_MS << shift;
		if (ms > POOL_BACKOFF_MAX_MS)
			ms = POOL_BACKOFF_MAX_MS;
		t->retry_at = time_mono_ns() + ms * 1000000ULL;
		log_warn("template %s: a pool shell failed to start (%s); %u in a row, next try in "
			 "%llu ms",
			 t->name, c->exit_reason, t->fail_streak, (unsigned long long)ms);
	}
	if (c->shell || c->hidden) {
		forkd_clone_forget(d, c);
	} else {
		d->nr_exited++;
		/* Keep the most recent exited records only. */
		while (d->nr_exited > MAX_EXITED_KEPT) {
			struct clone *old = NULL;
			for (struct clone *x = d->clones; x; x = x->next)
				if (x->state == CLONE_EXITED && !x->shell && !x->hidden && !x->op_ex)
					old = x; /* the list is newest first: the last is oldest */
			if (!old)
				break;
			forkd_clone_forget(d, old);
		}
	}
	if (t)
		refill_later(d);
}

static void on_sigchld(void *arg, uint32_t events)
{
	struct forkd *d = arg;
	struct signalfd_siginfo si;
	int st;
	pid_t pid;

	(void)events;
	while (read(d->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (struct clone *c = d->clones; c; c = c->next) {
			if (c->pid == pid && c->state != CLONE_EXITED) {
				clone_reaped(d, c, st);
				break;
			}
		}
	}
}

/* ------------------------------------------------------------ pools */

/* Refills pools a little later, so that preparing shells (a restore each)
 * does not compete for the CPU with clones just handed out. */

static void on_refill(void *arg, uint32_t events)
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
	unsigned ready = shells(d, t, CLONE_READY), starting = shells(d, t, CLONE_STARTING);
	uint64_t now = time_mono_ns();

	/* Failing: one shell at a time, after the back-off. */
	if (t->fail_streak && ready + starting < t->pool_size) {
		if (starting || now < t->retry_at) {
			if (!starting)
				refill_in(d, t->retry_at - now);
			goto trim;
		}
		struct clone *c = clone_spawn(d, t, false);
		if (c)
			c->shell = true;
		goto trim;
	}
	while (ready + starting < t->pool_size && shells(d, NULL, CLONE_STARTING) < MAX_SHELLS_STARTING) {
		struct clone *c = clone_spawn(d, t, false);
		if (!c) {
			log_warn("template %s: cannot prepare a pool shell: %s", t->name, strerror(errno));
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

/* ------------------------------------------------------------ forks */

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
	c = clone_spawn(d, t, true);
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
		refill_later(d);
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
	refill_later(d);
	req_check(d, r);
}

int forkd_capacity_check(struct forkd *d, unsigned count, char *err, size_t errlen)
{
	unsigned live = live_clones(d, NULL);

	if (live + count > d->cfg.max_clones) {
		snprintf(err, errlen, "forkd runs %u clones and --max-clones is %u: %u more cannot start",
			 live, d->cfg.max_clones, count);
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
					 "host memory is short (%llu MiB available, reserve %llu MiB): no new clones",
					 kb >> 10, d->cfg.mem_reserve >> 20);
				return 503;
			}
		}
	}
	return 0;
}

/* ------------------------------------------------------------ templates */

int forkd_template_add(struct forkd *d, const char *name, const char *ref, unsigned pool,
		       struct template **out, char *err, size_t errlen)
{
	struct template *t = calloc(1, sizeof(*t));
	int rc;

	if (!t) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = vm_template_open(d->store, ref, d->cfg.platform, &t->vt, err, errlen);
	if (rc < 0) {
		free(t);
		return rc;
	}
	/* What every clone's restore would refuse, refused once here. */
	if (!vm_template_config(t->vt)->agent_socket) {
		snprintf(err, errlen,
			 "snapshot %s has no agent channel, so forkd could not talk to its clones "
			 "(boot the template VM with --agent socket=PATH)",
			 ref);
		vm_template_close(t->vt);
		free(t);
		return -EINVAL;
	}
	snprintf(t->name, sizeof(t->name), "%s", name);
	vm_template_id(t->vt, t->id);
	t->pool_size = pool;
	t->d = d;
	struct template **pp = &d->templates;
	while (*pp)
		pp = &(*pp)->next;
	*pp = t;
	log_info("template %s: snapshot %s, pool %u", name, t->id, pool);
	forkd_pool_fill(d, t);
	*out = t;
	return 0;
}

void forkd_template_remove(struct forkd *d, struct template *t)
{
	for (struct template **pp = &d->templates; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	for (struct clone *c = d->clones; c; c = c->next) {
		if (c->tpl != t)
			continue;
		if (c->shell)
			forkd_clone_kill(d, c);
		c->tpl = NULL;
	}
	vm_template_close(t->vt);
	free(t);
}

/* ------------------------------------------------------------ metrics */

struct mem_sums {
	unsigned long long pss, priv, shared;
};

static void process_mem(pid_t pid, struct mem_sums *s)
{
	char path[64], txt[8192];

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	if (forkd_read_small(path, txt, sizeof(txt)) < 0)
		return;
	for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
		unsigned long long kb;
		char key[64];
		if (sscanf(line, "%63[^:]: %llu kB", key, &kb) != 2)
			continue;
		if (!strcmp(key, "Pss"))
			s->pss += kb << 10;
		else if (!strcmp(key, "Private_Clean") || !strcmp(key, "Private_Dirty"))
			s->priv += kb << 10;
		else if (!strcmp(key, "Shared_Clean") || !strcmp(key, "Shared_Dirty"))
			s->shared += kb << 10;
	}
}

/* A clone's memory: its process, and on the process platform its stub
 * (the clone's only child: it holds the guest's pages). */
static void clone_mem(const struct clone *c, struct mem_sums *s)
{
	char path[64], kids[256];

	process_mem(c->pid, s);
	if (c->d->cfg.platform != VM_PLATFORM_PROCESS)
		return;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)c->pid, (int)c->pid);
	if (forkd_read_small(path, kids, sizeof(kids)) < 0)
		return;
	for (char *p = kids, *end; *p; p = end) {
		long k = strtol(p, &end, 10);
		if (end == p)
			break;
		process_mem((pid_t)k, s);
	}
}

static int appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return -EINVAL;
		if ((size_t)n < *cap - *len) {
			*len += (size_t)n;
			return 0;
		}
		size_t ncap = *cap * 2 + (size_t)n;
		char *nb = realloc(*buf, ncap);
		if (!nb)
			return -ENOMEM;
		*buf = nb;
		*cap = ncap;
	}
}

char *forkd_metrics(struct forkd *d)
{
	static const char *const bounds[] = { "0.0001", "0.00025", "0.0005", "0.001",
					      "0.0025", "0.005",   "0.01",   "0.025",
					      "0.05",   "0.1",     "0.25",   "1" };
	size_t len = 0, cap = 4096;
	char *b = malloc(cap);
	struct mem_sums ms = { 0 };

	if (!b)
		return NULL;
	b[0] = '\0';
	for (struct clone *c = d->clones; c; c = c->next)
		if (!c->shell && clone_alive(c))
			clone_mem(c, &ms);
	appendf(&b, &len, &cap,
		"# HELP forkd_info What runs the clones.\n# TYPE forkd_info gauge\n"
		"forkd_info{version=\"%s\",platform=\"%s\"} 1\n",
		FORKVM_VERSION, vm_platform_name(d->cfg.platform));
	appendf(&b, &len, &cap,
		"# HELP forkd_clones_live Clones running or paused.\n# TYPE forkd_clones_live gauge\n"
		"forkd_clones_live %u\n",
		live_clones(d, NULL));
	appendf(&b, &len, &cap, "# HELP forkd_forks_total Clones made.\n# TYPE forkd_forks_total counter\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_forks_total{template=\"%s\"} %llu\n", t->name,
			(unsigned long long)t->forks);
	appendf(&b, &len, &cap,
		"# HELP forkd_forks_by_source_total Clones that reached guest code, by source.\n"
		"# TYPE forkd_forks_by_source_total counter\n"
		"forkd_forks_by_source_total{source=\"pool\"} %llu\n"
		"forkd_forks_by_source_total{source=\"cold\"} %llu\n",
		(unsigned long long)d->forks_pool, (unsigned long long)d->forks_cold);
	appendf(&b, &len, &cap,
		"# HELP forkd_fork_failures_total Fork requests refused or failed.\n"
		"# TYPE forkd_fork_failures_total counter\nforkd_fork_failures_total %llu\n",
		(unsigned long long)d->fork_failures);
	appendf(&b, &len, &cap,
		"# HELP forkd_fork_latency_seconds Request received to clone vCPUs resumed.\n"
		"# TYPE forkd_fork_latency_seconds histogram\n");
	for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
		appendf(&b, &len, &cap, "forkd_fork_latency_seconds_bucket{le=\"%s\"} %llu\n", bounds[i],
			(unsigned long long)d->lat_buckets[i]);
	appendf(&b, &len, &cap,
		"forkd_fork_latency_seconds_bucket{le=\"+Inf\"} %llu\n"
		"forkd_fork_latency_seconds_sum %.9f\nforkd_fork_latency_seconds_count %llu\n",
		(unsigned long long)d->lat_count, d->lat_sum, (unsigned long long)d->lat_count);
	appendf(&b, &len, &cap,
		"# HELP forkd_invokes_total Invocations by result.\n# TYPE forkd_invokes_total counter\n"
		"forkd_invokes_total{result=\"ok\"} %llu\nforkd_invokes_total{result=\"error\"} %llu\n"
		"forkd_invokes_total{result=\"timeout\"} %llu\nforkd_invokes_total{result=\"failed\"} %llu\n",
		(unsigned long long)d->invokes_ok, (unsigned long long)d->invokes_error,
		(unsigned long long)d->invokes_timeout, (unsigned long long)d->invokes_failed);
	appendf(&b, &len, &cap,
		"# HELP forkd_pool_ready Warm clone shells ready.\n# TYPE forkd_pool_ready gauge\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_pool_ready{template=\"%s\"} %u\n", t->name,
			shells(d, t, CLONE_READY));
	appendf(&b, &len, &cap,
		"# HELP forkd_pool_size Warm clone shells wanted.\n# TYPE forkd_pool_size gauge\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_pool_size{template=\"%s\"} %u\n", t->name, t->pool_size);
	appendf(&b, &len, &cap,
		"# HELP forkd_pool_failing 1 while a template's pool shells keep failing to start.\n"
		"# TYPE forkd_pool_failing gauge\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_pool_failing{template=\"%s\"} %d\n", t->name,
			t->fail_streak > 0);
	appendf(&b, &len, &cap,
		"# HELP forkd_pool_shell_failures_total Pool shells that died before they were ready.\n"
		"# TYPE forkd_pool_shell_failures_total counter\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_pool_shell_failures_total{template=\"%s\"} %llu\n",
			t->name, (unsigned long long)t->shell_failures);
	appendf(&b, &len, &cap,
		"# HELP forkd_clone_memory_private_bytes Memory only one clone maps, summed.\n"
		"# TYPE forkd_clone_memory_private_bytes gauge\nforkd_clone_memory_private_bytes %llu\n"
		"# HELP forkd_clone_memory_shared_bytes Resident memory clones share, summed per clone.\n"
		"# TYPE forkd_clone_memory_shared_bytes gauge\nforkd_clone_memory_shared_bytes %llu\n"
		"# HELP forkd_clone_memory_pss_bytes Proportional set size of the clones, summed.\n"
		"# TYPE forkd_clone_memory_pss_bytes gauge\nforkd_clone_memory_pss_bytes %llu\n",
		ms.priv, ms.shared, ms.pss);
	return b;
}

/* ------------------------------------------------------------ lifecycle */

const char *forkd_default_run_dir(char *buf, size_t len)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	if (geteuid() == 0)
		snprintf(buf, len, "/run/forkd");
	else if (xdg && xdg[0] == '/')
		snprintf(buf, len, "%s/forkd", xdg);
	else
		snprintf(buf, len, "/tmp/forkd-%u", (unsigned)geteuid());
	return buf;
}

int forkd_create(const struct forkd_config *cfg, struct loop *loop, struct forkd **out, char *err,
		 size_t errlen)
{
	struct http_server_config hc = { .max_body_bytes = 1 << 20, .max_conns = 1024 };
	struct forkd *d = calloc(1, sizeof(*d));
	char path[4200];
	sigset_t set;
	int rc;

	if (!d) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	d->cfg = *cfg;
	d->loop = loop;
	d->sigfd = -1;
	d->refill_tfd = -1;
	/* Absolute: clones and builders use them from other directories (a
	 * jailed clone from inside its own root). */
	char cwd[2048] = "";
	if ((cfg->store[0] != '/' || cfg->run_dir[0] != '/') && !getcwd(cwd, sizeof(cwd))) {
		rc = -errno;
		snprintf(err, errlen, "cannot get the current directory: %s", strerror(errno));
		goto fail;
	}
	snprintf(d->store, sizeof(d->store), "%s%s%.2000s", cfg->store[0] == '/' ? "" : cwd,
		 cfg->store[0] == '/' ? "" : "/", cfg->store);
	snprintf(d->run_dir, sizeof(d->run_dir), "%s%s%.2000s", cfg->run_dir[0] == '/' ? "" : cwd,
		 cfg->run_dir[0] == '/' ? "" : "/", cfg->run_dir);
	snprintf(d->forkvm, sizeof(d->forkvm), "%s", cfg->forkvm);
	snprintf(d->api_socket, sizeof(d->api_socket), "%s", cfg->api_socket);
	if (strlen(d->run_dir) + strlen("/clones/") + FORKD_CLONE_ID_LEN + strlen("/agent.sock") >= 108) {
		snprintf(err, errlen, "run directory %s is too long for Unix socket paths (at most 76 characters)",
			 d->run_dir);
		rc = -ENAMETOOLONG;
		goto fail;
	}
	if (mkdir(d->run_dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create run directory %s: %s", d->run_dir, strerror(errno));
		goto fail;
	}
	if ((rc = forkd_jail_init(d, err, errlen)) < 0)
		goto fail;
	if ((rc = vmm_seccomp_new(cfg->seccomp, cfg->platform, &d->clone_sc)) < 0) {
		snprintf(err, errlen, "cannot build the clones' seccomp filters: %s", strerror(-rc));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/clones", d->run_dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		goto fail;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	d->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (d->sigfd < 0 || loop_add(loop, d->sigfd, EPOLLIN, on_sigchld, d) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot watch SIGCHLD: %s", strerror(errno));
		goto fail;
	}
	d->refill_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (d->refill_tfd < 0 || loop_add(loop, d->refill_tfd, EPOLLIN, on_refill, d) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot create a timer: %s", strerror(errno));
		goto fail;
	}
	rc = http_server_listen(loop, d->api_socket, &hc, forkd_api_handle, d, &d->srv);
	if (rc < 0) {
		snprintf(err, errlen, "cannot serve the API on %s: %s", d->api_socket, strerror(-rc));
		goto fail;
	}
	sched_ahead_of_guests();
	*out = d;
	return 0;
fail:
	if (d->sigfd >= 0) {
		loop_del(loop, d->sigfd);
		close(d->sigfd);
	}
	if (d->refill_tfd >= 0) {
		loop_del(loop, d->refill_tfd);
		close(d->refill_tfd);
	}
	forkd_jail_fini(d);
	vmm_seccomp_free(d->clone_sc);
	free(d);
	return rc;
}

void forkd_destroy(struct forkd *d)
{
	if (!d)
		return;
	http_server_close(d->srv);
	forkd_builders_kill(d);
	for (struct clone *c = d->clones; c; c = c->next)
		forkd_clone_kill(d, c);
	/* Reap them all: no clone outlives forkd. */
	for (struct clone *c = d->clones; c; c = c->next) {
		if (c->state != CLONE_EXITED && c->pid > 0)
			waitpid(c->pid, NULL, 0);
	}
	while (d->clones) {
		struct clone *c = d->clones;
		d->clones = c->next;
		if (c->ctl >= 0) {
			loop_del(d->loop, c->ctl);
			close(c->ctl);
		}
		rm_dir(c->dir);
		free(c);
	}
	while (d->templates) {
		struct template *t = d->templates;
		d->templates = t->next;
		vm_template_close(t->vt);
		free(t);
	}
	if (d->sigfd >= 0) {
		loop_del(d->loop, d->sigfd);
		close(d->sigfd);
	}
	if (d->refill_tfd >= 0) {
		loop_del(d->loop, d->refill_tfd);
		close(d->refill_tfd);
	}
	forkd_jail_fini(d);
	vmm_seccomp_free(d->clone_sc);
	free(d);
}
