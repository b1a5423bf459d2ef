/* forkd/daemon.c - the fork daemon: its lifecycle (run directory, jail,
 * SIGCHLD and refill timer on the loop, the API socket) and its
 * templates. The clone lifecycle is in clone.c, warm pools and fork
 * requests in pool.c, /metrics in metrics.c, file helpers in files.c. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "forkd/internal.h"

/* ------------------------------------------------------------ templates */

struct template *forkd_template_find(struct forkd *d, const char *name)
{
	for (struct template *t = d->templates; t; t = t->next)
		if (!strcmp(t->name, name))
			return t;
	return NULL;
}

json_t *forkd_template_json(const struct template *t)
{
	struct forkd *d = t->d;
	const struct vm_config *cfg = vm_template_config(t->vt);
	return json_pack("{s:s,s:s,s:I,s:i,s:{s:i,s:i,s:b,s:I,s:s?},s:i,s:I,s:s}", "name", t->name,
			 "snapshot", t->id, "memory_size", (json_int_t)cfg->memory_size, "vcpus",
			 (int)cfg->boot_vcpus, "pool", "size", (int)t->pool_size, "ready",
			 (int)forkd_pool_shells(d, t, CLONE_READY), "failing", t->fail_streak > 0,
			 "failures", (json_int_t)t->shell_failures, "last_failure",
			 t->last_failure[0] ? t->last_failure : NULL, "clones",
			 (int)forkd_clones_live(d, t), "forks", (json_int_t)t->forks, "platform",
			 vm_platform_name(d->cfg.platform));
}

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

/* ------------------------------------------------------------ lifecycle */

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
	struct sched_param sp = {.sched_priority = 0};

	if (sched_setscheduler(0, SCHED_OTHER | SCHED_RESET_ON_FORK, &sp) < 0) {
		log_info("cannot set SCHED_RESET_ON_FORK: %s; forkd keeps its priority",
			 strerror(errno));
		return;
	}
	if (setpriority(PRIO_PROCESS, 0, FORKD_NICE) < 0)
		log_info("cannot run at nice %d: %s; spinning guests may delay forkd", FORKD_NICE,
			 strerror(errno));
}

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
	struct http_server_config hc = {.max_body_bytes = 1 << 20, .max_conns = 1024};
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
	if (strlen(d->run_dir) + strlen("/clones/") + FORKD_CLONE_ID_LEN + strlen("/agent.sock") >=
	    108) {
		snprintf(
		    err, errlen,
		    "run directory %s is too long for Unix socket paths (at most 76 characters)",
		    d->run_dir);
		rc = -ENAMETOOLONG;
		goto fail;
	}
	if (mkdir(d->run_dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "cannot create run directory %s: %s", d->run_dir,
			 strerror(errno));
		goto fail;
	}
	if ((rc = forkd_jail_init(d, err, errlen)) < 0)
		goto fail;
	if ((rc = vmm_seccomp_new(cfg->seccomp, cfg->platform, &d->clone_sc)) < 0) {
		snprintf(err, errlen, "cannot build the clones' seccomp filters: %s",
			 strerror(-rc));
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
	if (d->sigfd < 0 || loop_add(loop, d->sigfd, EPOLLIN, forkd_clone_on_sigchld, d) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot watch SIGCHLD: %s", strerror(errno));
		goto fail;
	}
	d->refill_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (d->refill_tfd < 0 ||
	    loop_add(loop, d->refill_tfd, EPOLLIN, forkd_pool_on_refill, d) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot create a timer: %s", strerror(errno));
		goto fail;
	}
	rc = http_server_listen(loop, d->api_socket, &hc, forkd_api_handle, d, &d->srv);
	if (rc < 0) {
		snprintf(err, errlen, "cannot serve the API on %s: %s", d->api_socket,
			 strerror(-rc));
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
	/* No new pool shells from here on. */
	d->stopping = true;
	for (struct clone *c = d->clones; c; c = c->next)
		forkd_clone_kill(d, c);
	/* Reap them all: no clone outlives forkd, and what waited for one
	 * (a fork request, an invoke, a pause) is answered and freed. */
	for (;;) {
		struct clone *c = d->clones;
		int st = SIGKILL;
		while (c && c->state == CLONE_EXITED)
			c = c->next;
		if (!c)
			break;
		if (c->pid > 0 && waitpid(c->pid, &st, 0) < 0)
			st = SIGKILL;
		forkd_clone_reaped(d, c, st);
	}
	while (d->clones) {
		struct clone *c = d->clones;
		d->clones = c->next;
		if (c->ctl >= 0) {
			loop_del(d->loop, c->ctl);
			close(c->ctl);
		}
		forkd_rm_dir(c->dir);
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
