/* tests/fuzz/fuzz_forkd_api.c - libFuzzer target: raw bytes into forkd's
 * REST API as one connection of its socket would deliver them:
 * http_process_raw() -> forkd_api_handle() (forkd/api.c: path splitting,
 * query strings, methods, the JSON bodies of templates, clones, pool,
 * invoke and snapshot) -> the real daemon code behind them (forkd/daemon.c
 * lookups, JSON views, metrics, capacity checks, template removal, clone
 * control messages; forkd/invoke.c's request parsing and time limit).
 *
 * Every input gets a fresh daemon from tests/fuzz/forkd_fixture.h (two
 * templates, clones in every state, no processes); requests left waiting
 * for a clone's reply are answered afterwards, as forkd would when the
 * clone replies.
 *
 * What would fork, boot or open a store is replaced at link time
 * (-Wl,--wrap, see FUZZ_WRAP_forkd_api in the Makefile): making clones
 * (forkd_fork: the request fails with 503, an invoke through
 * forkd_invoke_fail), template builds (forkd_builder_start: an error),
 * pool refills (forkd_pool_fill: nothing; forkd_clone_spawn: EAGAIN), and the templates' store
 * snapshots (vm_template_config: a fixed configuration). FUZZ_SHOW=1 in
 * the environment prints the server's answers. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/http.h"
#include "common/log.h"
#include "common/loop.h"
#include "forkd/internal.h"
#include "tests/fuzz/forkd_fixture.h"
#include "vmm/vmm.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

void __wrap_forkd_fork(struct forkd *d, struct template *t, unsigned count, struct http_exchange *ex,
		       struct invoke *inv);
void __wrap_forkd_pool_fill(struct forkd *d, struct template *t);

static struct loop *fuzz_loop;
static char run_dir[64];
static bool show;

/* ------------------------------------------------------------ stand-ins
 * (besides the fixture's) */

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

void __wrap_forkd_pool_fill(struct forkd *d, struct template *t)
{
	(void)d;
	(void)t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	show = getenv("FUZZ_SHOW") != NULL;
	snprintf(run_dir, sizeof(run_dir), "/tmp/fuzz-forkd-XXXXXX");
	fx_init(run_dir, &fuzz_loop);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* What forkd_create() configures. */
	struct http_server_config cfg = { .max_body_bytes = 1 << 20, .max_conns = 1024 };
	struct fx fx;
	char *out = NULL;
	size_t out_len = 0;
	bool closed = false;

	fx_make(&fx, fuzz_loop, run_dir);
	if (http_process_raw((const char *)data, size, &cfg, forkd_api_handle, fx.d, &out, &out_len,
			     &closed) == 0) {
		if (show)
			fprintf(stderr, "%.*s\n", (int)out_len, out);
		free(out);
	}
	fx_free(&fx);
	return 0;
}
