/* tests/fuzz/forkd_fixture.h - for the fuzz targets that drive forkd's
 * real code without clone processes (fuzz_forkd_api, fuzz_forkd_ctl): a
 * struct forkd holding two templates ("py" with a pool of 2, "js" without)
 * and clones in every state: running, paused, exited (by status and by
 * signal), a ready pool shell, one still starting, an invoke's hidden one.
 * The clones have no process (pid 0: forkd_clone_kill() leaves them
 * alone). Each running or paused clone has its own control socket
 * (SOCK_SEQPACKET, as forkd's); fx_drain() empties what forkd sent them.
 * Include from one fuzz_*.c only (static functions). */
#ifndef FORKVM_TESTS_FUZZ_FORKD_FIXTURE_H
#define FORKVM_TESTS_FUZZ_FORKD_FIXTURE_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/http.h"
#include "common/log.h"
#include "common/loop.h"
#include "forkd/internal.h"
#include "vmm/vmm.h"

/* ------------------------------------------------------------ stand-ins
 * What both targets replace at link time (-Wl,--wrap, FUZZ_WRAP_* in the
 * Makefile): making clone processes fails with EAGAIN, as at the process
 * limit; template builds fail; templates' store snapshots have a fixed
 * configuration (fx_tpl_cfg). */

static struct vm_config fx_tpl_cfg;

struct clone *__wrap_forkd_clone_spawn(struct forkd *d, struct template *t, bool autostart);
int __wrap_forkd_builder_start(struct forkd *d, const char *name, json_t *boot, const char *script,
			       const char *ref, unsigned pool, struct http_exchange *ex, char *err,
			       size_t errlen);
const struct vm_config *__wrap_vm_template_config(const struct vm_template *t);
void __wrap_vm_template_close(struct vm_template *t);

struct clone *__wrap_forkd_clone_spawn(struct forkd *d, struct template *t, bool autostart)
{
	(void)d;
	(void)t;
	(void)autostart;
	errno = EAGAIN;
	return NULL;
}

int __wrap_forkd_builder_start(struct forkd *d, const char *name, json_t *boot, const char *script,
			       const char *ref, unsigned pool, struct http_exchange *ex, char *err,
			       size_t errlen)
{
	(void)d;
	(void)boot;
	(void)script;
	(void)ref;
	(void)pool;
	(void)ex;
	snprintf(err, errlen, "template %s: the fuzzer builds no templates", name);
	return -ENOSYS;
}

const struct vm_config *__wrap_vm_template_config(const struct vm_template *t)
{
	(void)t;
	return &fx_tpl_cfg;
}

void __wrap_vm_template_close(struct vm_template *t)
{
	(void)t;
}

/* The clones of fx_make(), in list order. */
enum { FX_CLONES = 8 };

struct fx {
	struct forkd *d;
	struct clone *clones[FX_CLONES];
	int peer[FX_CLONES]; /* the clone's end of its control socket, or -1 */
};

static struct template *fx_template(struct forkd *d, const char *name, unsigned pool)
{
	struct template *t = calloc(1, sizeof(*t));
	struct template **pp = &d->templates;

	if (!t)
		abort();
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(t->id, sizeof(t->id), "%032x", (unsigned)strlen(name));
	t->pool_size = pool;
	t->d = d;
	while (*pp)
		pp = &(*pp)->next;
	*pp = t;
	return t;
}

static struct clone *fx_clone(struct fx *fx, int i, struct template *t, const char *id,
			      enum clone_state state)
{
	struct forkd *d = fx->d;
	struct clone *c = calloc(1, sizeof(*c));
	struct clone **pp = &d->clones;
	int sv[2] = {-1, -1};

	if (!c)
		abort();
	if ((state == CLONE_RUNNING || state == CLONE_PAUSED || state == CLONE_READY ||
	     state == CLONE_STARTING) &&
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		abort();
	snprintf(c->id, sizeof(c->id), "%s", id);
	snprintf(c->tpl_name, sizeof(c->tpl_name), "%s", t->name);
	snprintf(c->dir, sizeof(c->dir), "%s/clones/%s", d->run_dir, id);
	c->tpl = t;
	c->pid = 0; /* no process: nothing to signal */
	c->ctl = sv[0];
	c->state = state;
	c->exit_status = -1;
	c->created_ms = 1700000000000ULL;
	c->d = d;
	while (*pp)
		pp = &(*pp)->next;
	*pp = c;
	fx->clones[i] = c;
	fx->peer[i] = sv[1];
	return c;
}

/* What both targets' LLVMFuzzerInitialize do: quiet logs, a run
 * directory's name (run_dir holds "/tmp/NAME-XXXXXX"; nothing is ever
 * created there), the loop, and the templates' configuration. */
static void fx_init(char *run_dir, struct loop **loop)
{
	log_set_level(LOG_ERROR);
	if (!mkdtemp(run_dir) || loop_create(loop) < 0)
		abort();
	rmdir(run_dir);
	vm_config_init(&fx_tpl_cfg);
	fx_tpl_cfg.boot_vcpus = 2;
	fx_tpl_cfg.memory_size = 512ULL << 20;
}

/* A fresh daemon on loop, its names under run_dir (never created). */
static void fx_make(struct fx *fx, struct loop *loop, const char *run_dir)
{
	struct forkd *d = calloc(1, sizeof(*d));

	if (!d)
		abort();
	memset(fx, 0, sizeof(*fx));
	fx->d = d;
	d->cfg.max_clones = 8;
	d->cfg.default_pool = 1;
	d->cfg.mem_reserve = 0; /* no /proc/meminfo */
	snprintf(d->store, sizeof(d->store), "%s/store", run_dir);
	snprintf(d->run_dir, sizeof(d->run_dir), "%s", run_dir);
	snprintf(d->api_socket, sizeof(d->api_socket), "%s/forkd.sock", run_dir);
	d->loop = loop;
	d->sigfd = d->refill_tfd = -1;

	struct template *py = fx_template(d, "py", 2), *js = fx_template(d, "js", 0);
	fx_clone(fx, 0, py, "a1b2c3d4e5f6", CLONE_RUNNING)->fork_ns = 850000;
	struct clone *p = fx_clone(fx, 1, py, "0123456789ab", CLONE_PAUSED);
	p->from_pool = true;
	p->has_times = true;
	p->t_req = 1000;
	p->t_running = 5000;
	p->times[CT_FIRST_RUN] = 6000;
	struct clone *x = fx_clone(fx, 2, js, "deadbeef0001", CLONE_EXITED);
	x->exit_status = 3;
	snprintf(x->exit_reason, sizeof(x->exit_reason), "guest exited with status 3");
	d->nr_exited = 1;
	struct clone *k = fx_clone(fx, 3, js, "deadbeef0002", CLONE_EXITED);
	k->exit_signal = 9;
	snprintf(k->exit_reason, sizeof(k->exit_reason), "killed by SIGKILL");
	d->nr_exited++;
	struct clone *cold = fx_clone(fx, 4, js, "c01dc01dc01d", CLONE_RUNNING);
	cold->has_times = true;
	cold->t_req = 100;
	cold->t_fork = 200;
	for (int i = 0; i < CT_MAX; i++)
		cold->times[i] = 1000 + 100 * (uint64_t)i;
	fx_clone(fx, 5, py, "5he11000000a", CLONE_READY)->shell = true;
	fx_clone(fx, 6, py, "5ta7t1n90000", CLONE_STARTING)->shell = true;
	fx_clone(fx, 7, js, "h1dden000000", CLONE_RUNNING)->hidden = true;
}

/* Reads and drops what forkd sent the clones. */
static void fx_drain(struct fx *fx)
{
	char buf[sizeof(struct ctl_msg)];

	for (int i = 0; i < FX_CLONES; i++)
		if (fx->peer[i] >= 0)
			while (recv(fx->peer[i], buf, sizeof(buf), MSG_DONTWAIT) > 0)
				;
}

/* What forkd does when it stops: the clones die, the requests waiting for
 * them are answered; then everything is freed. */
static void fx_free(struct fx *fx)
{
	struct forkd *d = fx->d;

	/* as forkd_destroy(): every clone still going ends, and what waited
	 * for it (a fork request, an invoke, a pause) is answered */
	d->stopping = true;
	for (;;) {
		struct clone *c = d->clones;
		while (c && c->state == CLONE_EXITED)
			c = c->next;
		if (!c)
			break;
		forkd_clone_reaped(d, c, SIGKILL);
	}
	fx_drain(fx);
	while (d->clones) {
		struct clone *c = d->clones;
		d->clones = c->next;
		if (c->ctl >= 0)
			close(c->ctl);
		free(c);
	}
	for (int i = 0; i < FX_CLONES; i++)
		if (fx->peer[i] >= 0)
			close(fx->peer[i]);
	while (d->templates) {
		struct template *t = d->templates;
		d->templates = t->next;
		free(t);
	}
	free(d);
}

#endif
