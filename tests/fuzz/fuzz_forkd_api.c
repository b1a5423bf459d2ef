/* tests/fuzz/fuzz_forkd_api.c - libFuzzer target: raw bytes into forkd's
 * REST API as one connection of its socket would deliver them:
 * http_process_raw() -> forkd_api_handle() (forkd/api.c: path splitting,
 * query strings, methods, the JSON bodies of templates, clones, pool,
 * invoke and snapshot) -> the real daemon code behind them (forkd/daemon.c
 * lookups, JSON views, metrics, capacity checks, template removal, clone
 * control messages; forkd/invoke.c's request parsing and time limit).
 *
 * Every input gets a fresh struct forkd holding two templates ("py" with
 * a pool, "js" without) and clones in every state: running, paused,
 * exited, a ready pool shell, one still starting, an invoke's hidden one.
 * The clones have no process (pid 0: forkd_clone_kill() leaves them
 * alone); the running and paused ones have a control socket whose other
 * end the harness drains, and requests left waiting for a clone's reply
 * are answered afterwards, as forkd would when the clone replies.
 *
 * What would fork, boot or open a store is replaced at link time
 * (-Wl,--wrap, see FUZZ_WRAP_forkd_api in the Makefile): making clones
 * (forkd_fork: the request fails with 503, an invoke through
 * forkd_invoke_fail), template builds (forkd_builder_start: an error),
 * pool refills (forkd_pool_fill: nothing), and the templates' store
 * snapshots (vm_template_config: a fixed configuration). FUZZ_SHOW=1 in
 * the environment prints the server's answers. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
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

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

void __wrap_forkd_fork(struct forkd *d, struct template *t, unsigned count, struct http_exchange *ex,
		       struct invoke *inv);
int __wrap_forkd_builder_start(struct forkd *d, const char *name, json_t *boot, const char *script,
			       const char *ref, unsigned pool, struct http_exchange *ex, char *err,
			       size_t errlen);
void __wrap_forkd_pool_fill(struct forkd *d, struct template *t);
const struct vm_config *__wrap_vm_template_config(const struct vm_template *t);
void __wrap_vm_template_close(struct vm_template *t);

static struct loop *fuzz_loop;
static int ctl[2] = { -1, -1 }; /* [0]: the clones' end, [1]: drained here */
static char run_dir[64];
static struct vm_config tpl_cfg;
static bool show;

/* ------------------------------------------------------------ stand-ins */

void __wrap_forkd_fork(struct forkd *d, struct template *t, unsigned count, struct http_exchange *ex,
		       struct invoke *inv)
{
	(void)count;
	if (inv) {
		forkd_invoke_fail(d, inv, 503, "the fuzzer forks no clones");
		return;
	}
	d->fork_failures++;
	http_respond_error(ex, 503, "template %s: the fuzzer forks no clones", t->name);
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

void __wrap_forkd_pool_fill(struct forkd *d, struct template *t)
{
	(void)d;
	(void)t;
}

const struct vm_config *__wrap_vm_template_config(const struct vm_template *t)
{
	(void)t;
	return &tpl_cfg;
}

void __wrap_vm_template_close(struct vm_template *t)
{
	(void)t;
}

/* ------------------------------------------------------------ the daemon */

static struct template *add_template(struct forkd *d, const char *name, unsigned pool)
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

static struct clone *add_clone(struct forkd *d, struct template *t, const char *id,
			       enum clone_state state)
{
	struct clone *c = calloc(1, sizeof(*c));
	struct clone **pp = &d->clones;

	if (!c)
		abort();
	snprintf(c->id, sizeof(c->id), "%s", id);
	snprintf(c->tpl_name, sizeof(c->tpl_name), "%s", t->name);
	snprintf(c->dir, sizeof(c->dir), "%s/clones/%s", run_dir, id);
	c->tpl = t;
	c->pid = 0; /* no process: nothing to signal */
	c->ctl = state == CLONE_RUNNING || state == CLONE_PAUSED ? ctl[0] : -1;
	c->state = state;
	c->exit_status = -1;
	c->created_ms = 1700000000000ULL;
	c->d = d;
	while (*pp)
		pp = &(*pp)->next;
	*pp = c;
	return c;
}

static struct forkd *make_forkd(void)
{
	struct forkd *d = calloc(1, sizeof(*d));

	if (!d)
		abort();
	d->cfg.max_clones = 8;
	d->cfg.default_pool = 1;
	d->cfg.mem_reserve = 0; /* no /proc/meminfo */
	snprintf(d->store, sizeof(d->store), "%s/store", run_dir);
	snprintf(d->run_dir, sizeof(d->run_dir), "%s", run_dir);
	snprintf(d->api_socket, sizeof(d->api_socket), "%s/forkd.sock", run_dir);
	d->loop = fuzz_loop;
	d->sigfd = d->refill_tfd = -1;

	struct template *py = add_template(d, "py", 2), *js = add_template(d, "js", 0);
	add_clone(d, py, "a1b2c3d4e5f6", CLONE_RUNNING)->fork_ns = 850000;
	struct clone *p = add_clone(d, py, "0123456789ab", CLONE_PAUSED);
	p->from_pool = true;
	p->has_times = true;
	p->t_req = 1000;
	p->t_running = 5000;
	p->times[CT_FIRST_RUN] = 6000;
	struct clone *x = add_clone(d, js, "deadbeef0001", CLONE_EXITED);
	x->exit_status = 3;
	snprintf(x->exit_reason, sizeof(x->exit_reason), "guest exited with status 3");
	d->nr_exited = 1;
	struct clone *k = add_clone(d, js, "deadbeef0002", CLONE_EXITED);
	k->exit_signal = 9;
	snprintf(k->exit_reason, sizeof(k->exit_reason), "killed by SIGKILL");
	d->nr_exited++;
	struct clone *cold = add_clone(d, js, "c01dc01dc01d", CLONE_RUNNING);
	cold->has_times = true;
	cold->t_req = 100;
	cold->t_fork = 200;
	for (int i = 0; i < CT_MAX; i++)
		cold->times[i] = 1000 + 100 * (uint64_t)i;
	add_clone(d, py, "5he11000000a", CLONE_READY)->shell = true;
	add_clone(d, py, "5ta7t1n90000", CLONE_STARTING)->shell = true;
	add_clone(d, js, "h1dden000000", CLONE_RUNNING)->hidden = true;
	return d;
}

/* What forkd would do when the clones reply or die: answer the waiting
 * requests, then free everything. */
static void free_forkd(struct forkd *d)
{
	char buf[sizeof(struct ctl_msg)];

	for (struct clone *c = d->clones; c; c = c->next) {
		if (c->op_ex) {
			http_respond_error(c->op_ex, 504, "clone %s did not answer", c->id);
			c->op_ex = NULL;
		}
	}
	while (recv(ctl[1], buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	while (d->clones) {
		struct clone *c = d->clones;
		d->clones = c->next;
		free(c);
	}
	while (d->templates) {
		struct template *t = d->templates;
		d->templates = t->next;
		free(t);
	}
	free(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	show = getenv("FUZZ_SHOW") != NULL;
	snprintf(run_dir, sizeof(run_dir), "/tmp/fuzz-forkd-XXXXXX");
	if (!mkdtemp(run_dir) || loop_create(&fuzz_loop) < 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0)
		abort();
	rmdir(run_dir); /* only its name is used: nothing is ever created there */
	vm_config_init(&tpl_cfg);
	tpl_cfg.boot_vcpus = 2;
	tpl_cfg.memory_size = 512ULL << 20;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* What forkd_create() configures. */
	struct http_server_config cfg = { .max_body_bytes = 1 << 20, .max_conns = 1024 };
	struct forkd *d = make_forkd();
	char *out = NULL;
	size_t out_len = 0;
	bool closed = false;

	if (http_process_raw((const char *)data, size, &cfg, forkd_api_handle, d, &out, &out_len,
			     &closed) == 0) {
		if (show)
			fprintf(stderr, "%.*s\n", (int)out_len, out);
		free(out);
	}
	free_forkd(d);
	return 0;
}
