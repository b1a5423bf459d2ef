/* tests/fuzz/fuzz_forkd_ctl.c - libFuzzer target: the control messages
 * clone processes send forkd (struct ctl_msg over SOCK_SEQPACKET, any
 * size), interleaved with the API requests that make forkd wait for them
 * and with clone deaths, into the real daemon code: forkd_clone_ctl_msg()
 * (forkd/clone.c: sizes, texts, replies, times, state changes), pools and
 * fork requests (forkd/pool.c), invokes (forkd/invoke.c), reaping
 * (forkd_clone_reaped) and every JSON view and /metrics after each step.
 * A clone process is a jailed VMM that may run what its guest made of it:
 * whatever it sends, forkd must neither crash nor produce output its
 * clients cannot parse.
 *
 * The input is a series of records:
 *   0x00..0x7f  a message: clone (byte % 8, the fixture's clones in
 *               tests/fuzz/forkd_fixture.h), then a 16-bit little-endian
 *               length (up to sizeof(struct ctl_msg) + 64) and the bytes
 *               (zero-filled past the input's end);
 *   0x80..0xbf  an API request (byte & 0x3f picks it) about the clone the
 *               next byte names;
 *   0xc0..0xff  that clone's process ends (the next byte: exit status, or
 *               with bit 7 set a signal).
 * Making clone processes and template builds is replaced at link time
 * (-Wl,--wrap, FUZZ_WRAP_forkd_ctl in the Makefile): forkd_clone_spawn
 * fails with EAGAIN, as at the process limit. FUZZ_SHOW=1 prints the
 * server's answers. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/http.h"
#include "common/log.h"
#include "common/loop.h"
#include "forkd/internal.h"
#include "tests/fuzz/forkd_fixture.h"
#include "vmm/vmm.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static struct loop *fuzz_loop;
static char run_dir[64];
static bool show;
static char agent_path[] = "/nonexistent/agent.sock";

/* ------------------------------------------------------------ steps */

/* The fixture's clone i while forkd still holds it, else NULL. */
static struct clone *held(struct fx *fx, unsigned i)
{
	struct clone *want = fx->clones[i % FX_CLONES];

	for (struct clone *c = fx->d->clones; c; c = c->next)
		if (c == want)
			return c;
	return NULL;
}

static void api(struct fx *fx, unsigned what, unsigned i)
{
	static const struct {
		const char *method, *path, *body; /* path: %s is the clone's id */
	} reqs[] = {
	    {"POST", "/v1/clones/%s/pause", NULL},
	    {"POST", "/v1/clones/%s/resume", NULL},
	    {"POST", "/v1/clones/%s/snapshot", NULL},
	    {"POST", "/v1/clones/%s/snapshot", "{\"tag\":\"t-1\"}"},
	    {"DELETE", "/v1/clones/%s", NULL},
	    {"GET", "/v1/clones/%s", NULL},
	    {"POST", "/v1/templates/py/clones", "{\"count\":1}"},
	    {"POST", "/v1/templates/py/invoke", "{\"fn\":\"main\",\"timeout_ms\":1000}"},
	    {"DELETE", "/v1/templates/py?force=true", NULL},
	    {"PUT", "/v1/templates/js/pool", "{\"size\":2}"},
	    {"GET", "/v1/clones", NULL},
	    {"GET", "/v1/templates", NULL},
	};
	/* the fixture's ids, whether or not forkd still holds the clone */
	static const char *const ids[FX_CLONES] = {"a1b2c3d4e5f6", "0123456789ab", "deadbeef0001",
						   "deadbeef0002", "c01dc01dc01d", "5he11000000a",
						   "5ta7t1n90000", "h1dden000000"};
	struct http_server_config cfg = {.max_body_bytes = 1 << 20, .max_conns = 1024};
	const size_t n = sizeof(reqs) / sizeof(reqs[0]);
	const char *body = reqs[what % n].body;
	char path[128], raw[512], *out = NULL;
	size_t out_len = 0;
	bool closed = false;

	snprintf(path, sizeof(path), reqs[what % n].path, ids[i % FX_CLONES]);
	snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\n%sContent-Length: %zu\r\n\r\n%s",
		 reqs[what % n].method, path, body ? "Content-Type: application/json\r\n" : "",
		 body ? strlen(body) : 0, body ? body : "");
	if (http_process_raw(raw, strlen(raw), &cfg, forkd_api_handle, fx->d, &out, &out_len,
			     &closed) == 0) {
		if (show)
			fprintf(stderr, "%.*s\n", (int)out_len, out);
		free(out);
	}
}

/* Every view a client can ask for must be made (and be JSON). */
static void views(struct fx *fx)
{
	for (struct clone *c = fx->d->clones; c; c = c->next) {
		json_t *j = forkd_clone_json(c);
		if (!j)
			abort(); /* forkd would answer 500 or crash */
		char *txt = json_dumps(j, 0);
		if (!txt)
			abort();
		if (show)
			fprintf(stderr, "  %s\n", txt);
		free(txt);
		json_decref(j);
	}
	char *m = forkd_metrics(fx->d);
	if (!m)
		abort();
	free(m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	show = getenv("FUZZ_SHOW") != NULL;
	snprintf(run_dir, sizeof(run_dir), "/tmp/fuzz-forkd-ctl-XXXXXX");
	fx_init(run_dir, &fuzz_loop);
	fx_tpl_cfg.agent_socket = agent_path;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t msg[sizeof(struct ctl_msg) + 64];
	struct fx fx;
	size_t off = 0;

	fx_make(&fx, fuzz_loop, run_dir);
	while (off < size) {
		uint8_t k = data[off++];
		if (show)
			fprintf(stderr, "step 0x%02x\n", k);
		uint8_t arg = off < size ? data[off++] : 0;
		if (k >= 0xc0) {
			struct clone *c = held(&fx, k);
			if (c && c->state != CLONE_EXITED)
				forkd_clone_reaped(fx.d, c,
						   arg & 0x80 ? (arg & 0x7f) % 64 + 1 : (arg << 8));
		} else if (k >= 0x80) {
			api(&fx, k & 0x3fU, arg);
		} else {
			struct clone *c = held(&fx, k);
			size_t len = arg;
			if (off < size)
				len |= (size_t)data[off++] << 8;
			len %= sizeof(msg) + 1;
			size_t have = size - off < len ? size - off : len;
			memset(msg, 0, sizeof(msg));
			memcpy(msg, data + off, have);
			off += have;
			if (c)
				forkd_clone_ctl_msg(fx.d, c, msg, len);
		}
		fx_drain(&fx);
		views(&fx);
	}
	fx_free(&fx);
	return 0;
}
