/* forkd/clone.c - the clone lifecycle: a clone process is forked (into
 * its jail) from a template, talks to forkd over its control socket
 * (SOCK_SEQPACKET, struct ctl_msg: READY, RUNNING, REPLY, FAILED, EXITED,
 * TIMES), and is reaped on SIGCHLD, which answers whatever waited for it.
 * Everything runs on forkd's loop thread; counts are computed from the
 * clone list rather than kept, so they cannot drift. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "forkd/internal.h"

#define MAX_EXITED_KEPT 256U

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
unsigned forkd_clones_live(const struct forkd *d, const struct template *t)
{
	unsigned n = 0;
	/* A clone forkd killed (an invoke's, once answered) no longer counts. */
	for (const struct clone *c = d->clones; c; c = c->next)
		if (!c->shell && clone_alive(c) && !c->killed && (!t || c->tpl == t))
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
	struct ctl_msg m = {.op = op, .rc = rc, .t_ns = time_mono_ns()};

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

void forkd_clone_kill(struct forkd *d, struct clone *c)
{
	(void)d;
	if (c->killed || c->state == CLONE_EXITED || c->pid <= 0)
		return;
	forkd_sched_threads(c->pid, SCHED_IDLE);
	kill(c->pid, SIGKILL);
	c->killed = true;
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
	forkd_rm_dir(c->dir);
	free(c);
}

static void on_clone_ctl(void *arg, uint32_t events);

struct clone *forkd_clone_spawn(struct forkd *d, struct template *t, bool autostart)
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
	pid_t pid =
	    flags ? (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0UL) : fork();
	if (pid == 0) {
		struct clone_child_args a = {
		    .vt = t->vt,
		    .ctl = sv[1],
		    .autostart = autostart,
		    .id = c->id,
		    .dir = c->dir,
		    .store = d->store,
		    .seccomp = d->clone_sc,
		    .forkd = d,
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
	if (fd_set_nonblock(c->ctl) < 0 ||
	    loop_add(d->loop, c->ctl, EPOLLIN, on_clone_ctl, c) < 0) {
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

static void clone_running(struct forkd *d, struct clone *c, uint64_t t_ns)
{
	c->state = CLONE_RUNNING;
	c->t_running = t_ns;
	if (c->t_req && t_ns > c->t_req)
		c->fork_ns = t_ns - c->t_req;
	forkd_metrics_fork_latency(d, c->fork_ns);
	if (c->from_pool)
		d->forks_pool++;
	else
		d->forks_cold++;
	if (c->req)
		forkd_fork_clone_running(d, c->req);
	else if (c->inv)
		forkd_invoke_clone_running(d, c->inv, c);
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

static bool snapshot_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n != 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Answers the request waiting for m: 0, or -EPROTO for a reply no clone
 * of ours sends (its rc out of range, a snapshot id that is none). */
static int clone_reply(struct forkd *d, struct clone *c, const struct ctl_msg *m)
{
	struct http_exchange *ex = c->op_ex;
	(void)d;
	if (m->rc > 0 || m->rc < -4095 ||
	    (m->rc == 0 && c->op == CTL_SNAPSHOT && !snapshot_id_valid(m->text)))
		return -EPROTO;
	if (!ex)
		return 0; /* the request went (its client closed) */
	c->op_ex = NULL;
	if (m->rc < 0) {
		http_respond_error(ex, op_status(m->rc), "%s", m->text);
		return 0;
	}
	if (c->op == CTL_SNAPSHOT) {
		json_t *j = json_pack("{s:s}", "id", m->text);
		if (j && c->op_tag[0])
			json_object_set_new(j, "tag", json_string(c->op_tag));
		if (j)
			http_respond_json(ex, 201, j);
		else
			http_respond_error(ex, 500, "out of memory");
		json_decref(j);
		return 0;
	}
	if (c->op == CTL_PAUSE)
		c->state = CLONE_PAUSED;
	else if (c->op == CTL_RESUME)
		c->state = CLONE_RUNNING;
	http_respond(ex, 204, NULL, NULL, 0);
	return 0;
}

/* Makes text valid UTF-8 without control characters (each offending byte
 * becomes '?'): it goes into JSON answers, which jansson refuses
 * otherwise, and into the log. */
static void text_clean(char *s)
{
	unsigned char *p = (unsigned char *)s;

	while (*p) {
		size_t n = 0;
		uint32_t cp = 0;
		if (*p < 0x80)
			n = *p >= 0x20 && *p != 0x7f ? 1 : 0;
		else if ((*p & 0xe0) == 0xc0)
			n = 2, cp = *p & 0x1fU;
		else if ((*p & 0xf0) == 0xe0)
			n = 3, cp = *p & 0x0fU;
		else if ((*p & 0xf8) == 0xf0)
			n = 4, cp = *p & 0x07U;
		for (size_t k = 1; k < n; k++) {
			if ((p[k] & 0xc0) != 0x80) {
				n = 0;
				break;
			}
			cp = cp << 6 | (p[k] & 0x3fU);
		}
		/* overlong forms, surrogates, beyond U+10FFFF */
		if ((n == 2 && cp < 0x80) ||
		    (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
			n = 0;
		if (n == 0) {
			*p++ = '?';
			continue;
		}
		p += n;
	}
}

/* A clone broke the control protocol: it is a jailed VMM that may run
 * what a guest made of it, so forkd trusts nothing more from it. */
static void clone_violation(struct forkd *d, struct clone *c, const char *what)
{
	log_warn("clone %s broke the control protocol (%s): killed", c->id, what);
	snprintf(c->exit_reason, sizeof(c->exit_reason), "broke forkd's control protocol: %s",
		 what);
	ctl_close(d, c);
	forkd_clone_kill(d, c);
}

void forkd_clone_ctl_msg(struct forkd *d, struct clone *c, const void *buf, size_t len)
{
	struct ctl_msg m;
	uint64_t now = time_mono_ns();

	if (c->ctl < 0)
		return;
	if (len != sizeof(m)) {
		clone_violation(d, c, "a message of the wrong size");
		return;
	}
	memcpy(&m, buf, sizeof(m));
	if (!memchr(m.text, '\0', sizeof(m.text))) {
		clone_violation(d, c, "a text without its end");
		return;
	}
	text_clean(m.text);
	/* Its clock is ours (CLOCK_MONOTONIC): a time before the clone was
	 * asked for, or in the future, is taken as now. */
	if (m.t_ns < c->t_fork || m.t_ns < c->t_req || m.t_ns > now)
		m.t_ns = now;
	switch (m.op) {
	case CTL_READY:
		if (c->state == CLONE_STARTING && c->shell) {
			/* restored at SCHED_IDLE; a jailed shell has no
			 * CAP_SYS_NICE to come back by itself */
			if (d->jail.on && c->pid > 0)
				forkd_sched_threads(c->pid, SCHED_OTHER);
			c->state = CLONE_READY;
			if (c->tpl)
				forkd_pool_shell_ready(d, c->tpl);
		}
		break;
	case CTL_RUNNING:
		if (c->shell)
			clone_violation(d, c, "a pool shell ran before it was handed out");
		else if (c->state == CLONE_STARTING || c->state == CLONE_GOING)
			clone_running(d, c, m.t_ns);
		break;
	case CTL_FAILED:
	case CTL_EXITED:
		snprintf(c->exit_reason, sizeof(c->exit_reason), "%s", m.text);
		if (m.op == CTL_FAILED)
			log_warn("clone %s could not start: %s", c->id, m.text);
		break;
	case CTL_REPLY:
		if (clone_reply(d, c, &m) < 0)
			clone_violation(d, c, "a malformed reply");
		break;
	case CTL_TIMES:
		/* timestamps from the future are unknown (0) */
		if (m.v[CT_CHILD_START] > now)
			m.v[CT_CHILD_START] = 0;
		if (m.v[CT_FIRST_RUN] > now)
			m.v[CT_FIRST_RUN] = 0;
		memcpy(c->times, m.v, sizeof(c->times));
		c->has_times = true;
		break;
	default:
		clone_violation(d, c, "an unknown message");
	}
}

static void on_clone_ctl(void *arg, uint32_t events)
{
	struct clone *c = arg;
	struct forkd *d = c->d;
	struct ctl_msg m;

	while (c->ctl >= 0) {
		ssize_t n = recv(c->ctl, &m, sizeof(m), MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			/* EOF: the process is going; SIGCHLD reaps it. */
			ctl_close(d, c);
			return;
		}
		forkd_clone_ctl_msg(d, c, &m, (size_t)n);
	}
	if (c->ctl >= 0 && (events & (EPOLLHUP | EPOLLERR)))
		ctl_close(d, c);
}

static const char *signame(int sig)
{
	const char *s = sigabbrev_np(sig);
	return s ? s : "?";
}

void forkd_clone_reaped(struct forkd *d, struct clone *c, int wstatus)
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
		forkd_fork_clone_died(d, r, c, was != CLONE_STARTING && was != CLONE_GOING,
				      c->exit_reason);
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
		forkd_pool_shell_failed(d, t, c->exit_reason);
	}
	if (c->shell || c->hidden) {
		forkd_clone_forget(d, c);
	} else {
		d->nr_exited++;
		/* Keep the most recent exited records only. */
		while (d->nr_exited > MAX_EXITED_KEPT) {
			struct clone *old = NULL;
			for (struct clone *x = d->clones; x; x = x->next)
				if (x->state == CLONE_EXITED && !x->shell && !x->hidden &&
				    !x->op_ex)
					old = x; /* the list is newest first: the last is oldest */
			if (!old)
				break;
			forkd_clone_forget(d, old);
		}
	}
	if (t)
		forkd_pool_refill_later(d);
}

void forkd_clone_on_sigchld(void *arg, uint32_t events)
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
				forkd_clone_reaped(d, c, st);
				break;
			}
		}
	}
}

/* ------------------------------------------------------------ pools */

/* Refills pools a little later, so that preparing shells (a restore each)
 * does not compete for the CPU with clones just handed out. */
