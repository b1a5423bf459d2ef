/* guest/agent/js.c - the Duktape heap (allocator in heap.c), its fatal handler,
 * and the globals the agent adds (print, console, Math.random,
 * __forkvm_reseed). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "../abi/forkvm_identity.h"

/* Writes msg (len bytes) and a newline to the console fd with one write. */
void agent_log(const char *msg, size_t len)
{
	struct iovec iov[2] = {
		{ .iov_base = (void *)(uintptr_t)msg, .iov_len = len },
		{ .iov_base = (void *)(uintptr_t) "\n", .iov_len = 1 },
	};

	while (writev(AGENT_FD_LOG, iov, 2) < 0 && errno == EINTR)
		;
}

/* Logs a NUL-terminated line to the console. */
void agent_logs(const char *msg)
{
	agent_log(msg, strlen(msg));
}

/* Duktape's allocation callbacks: udata is the agent_js; see heap.c. */
static void *js_alloc(void *udata, duk_size_t size)
{
	return agent_heap_alloc(&((struct agent_js *)udata)->heap, size);
}

static void *js_realloc(void *udata, void *ptr, duk_size_t size)
{
	return agent_heap_realloc(&((struct agent_js *)udata)->heap, ptr, size);
}

static void js_free(void *udata, void *ptr)
{
	agent_heap_free(&((struct agent_js *)udata)->heap, ptr);
}

/* Duktape cannot continue: report on the console and exit. */
static void js_fatal(void *udata, const char *msg)
{
	static const char pfx[] = AGENT_NAME ": fatal Duktape error: ";
	struct iovec iov[3] = {
		{ .iov_base = (void *)(uintptr_t)pfx, .iov_len = sizeof(pfx) - 1 },
		{ .iov_base = (void *)(uintptr_t)(msg ? msg : "(null)"),
		  .iov_len = msg ? strlen(msg) : 6 },
		{ .iov_base = (void *)(uintptr_t) "\n", .iov_len = 1 },
	};

	(void)udata;
	(void)!writev(AGENT_FD_LOG, iov, 3);
	_exit(AGENT_EXIT_FATAL);
}

/* Returns the agent_js that owns the heap of ctx. */
struct agent_js *agent_js_of(duk_context *ctx)
{
	duk_memory_functions f;

	duk_get_memory_functions(ctx, &f);
	return f.udata;
}

static duk_ret_t js_encode_arg(duk_context *ctx, void *udata)
{
	(void)udata;
	duk_json_encode(ctx, -1);
	return 1;
}

/* Replaces the value at idx with the text console.log shows for it. */
static void js_console_text(duk_context *ctx, duk_idx_t idx)
{
	if (duk_is_string(ctx, idx))
		return;
	if (duk_is_error(ctx, idx)) {
		duk_get_prop_string(ctx, idx, "stack");
		if (duk_is_string(ctx, -1)) {
			duk_replace(ctx, idx);
			return;
		}
		duk_pop(ctx);
	} else if (duk_is_object(ctx, idx) && !duk_is_function(ctx, idx)) {
		duk_dup(ctx, idx);
		if (duk_safe_call(ctx, js_encode_arg, NULL, 1, 1) == DUK_EXEC_SUCCESS &&
		    duk_is_string(ctx, -1)) {
			duk_replace(ctx, idx);
			return;
		}
		duk_pop(ctx);
	}
	duk_safe_to_string(ctx, idx);
}

/* print(...) / console.log(...): one line on the console (fd 2). */
static duk_ret_t js_print(duk_context *ctx)
{
	duk_idx_t n = duk_get_top(ctx);
	const char *s;
	duk_size_t len;

	for (duk_idx_t i = 0; i < n; i++)
		js_console_text(ctx, i);
	duk_push_string(ctx, " ");
	duk_insert(ctx, 0);
	duk_join(ctx, n);
	s = duk_get_lstring(ctx, -1, &len);
	agent_log(s, len);
	return 0;
}

/* Math.random(): xorshift128+ seeded from getrandom(2). */
static duk_ret_t js_random(duk_context *ctx)
{
	duk_push_number(ctx, agent_prng_double(&agent_js_of(ctx)->prng));
	return 1;
}

/* forkvm.randomHex(n): n bytes (1..4096) of getrandom(2), the kernel's
 * RNG (/dev/urandom's stream on Linux), in hex. */
static duk_ret_t js_random_hex(duk_context *ctx)
{
	duk_int_t n = duk_require_int(ctx, 0);
	unsigned char b[4096];
	char hex[2 * sizeof(b) + 1];

	if (n < 1 || n > (duk_int_t)sizeof(b))
		return duk_error(ctx, DUK_ERR_RANGE_ERROR, "randomHex: 1 to %d bytes, not %ld",
				 (int)sizeof(b), (long)n);
	int rc = agent_rand_bytes(b, (size_t)n);
	if (rc < 0)
		return duk_error(ctx, DUK_ERR_ERROR, "getrandom failed: errno %d", -rc);
	for (duk_int_t i = 0; i < n; i++) {
		hex[2 * i] = "0123456789abcdef"[b[i] >> 4];
		hex[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
	}
	duk_push_lstring(ctx, hex, (duk_size_t)(2 * n));
	return 1;
}

/* __forkvm_reseed(): reseeds Math.random from getrandom(2). */
static duk_ret_t js_reseed(duk_context *ctx)
{
	int rc = agent_prng_seed(&agent_js_of(ctx)->prng);

	if (rc < 0)
		return duk_error(ctx, DUK_ERR_ERROR, "getrandom failed: errno %d", -rc);
	return 0;
}

/* forkvm.identity(): {clone_id, generation} from the VM's identity page
 * (guest/abi/forkvm_identity.h: the function guest's, or the Linux guest's
 * that --identity-devmem maps); {clone_id: "", generation: 0} on a plain
 * host. A clone of the fork daemon sees its own id from its first
 * instruction after resume. */
static duk_ret_t js_identity(duk_context *ctx)
{
	const volatile struct forkvm_identity *id = agent_of(ctx)->identity;
	char cid[sizeof(id->clone_id)] = "";
	double gen = 0;

	if (id && id->magic == FORKVM_IDENTITY_MAGIC) {
		for (size_t i = 0; i < sizeof(cid); i++)
			cid[i] = id->clone_id[i];
		cid[sizeof(cid) - 1] = '\0';
		gen = (double)id->generation;
	}
	duk_push_object(ctx);
	duk_push_string(ctx, cid);
	duk_put_prop_string(ctx, -2, "clone_id");
	duk_push_number(ctx, gen);
	duk_put_prop_string(ctx, -2, "generation");
	return 1;
}

/* Pops a value and defines it as obj[name] (obj is then on top of the
 * stack), writable and configurable but not enumerable, like the built-ins. */
static void js_def_hidden(duk_context *ctx, const char *name)
{
	duk_push_string(ctx, name);
	duk_swap_top(ctx, -2);
	duk_def_prop(ctx, -3, DUK_DEFPROP_HAVE_VALUE | DUK_DEFPROP_SET_WRITABLE |
				      DUK_DEFPROP_CLEAR_ENUMERABLE | DUK_DEFPROP_SET_CONFIGURABLE);
}

/* Defines obj[name] (obj on top of the stack) as a hidden native function. */
static void js_put_func(duk_context *ctx, const char *name, duk_c_function fn, duk_idx_t nargs)
{
	duk_push_c_function(ctx, fn, nargs);
	duk_push_string(ctx, "name");
	duk_push_string(ctx, name);
	duk_def_prop(ctx, -3, DUK_DEFPROP_HAVE_VALUE | DUK_DEFPROP_SET_CONFIGURABLE);
	js_def_hidden(ctx, name);
}

static duk_ret_t js_install(duk_context *ctx, void *udata)
{
	static const char *const console_fns[] = { "log", "error", "warn", "info", "debug" };

	(void)udata;
	duk_push_global_object(ctx);
	js_put_func(ctx, "print", js_print, DUK_VARARGS);
	js_put_func(ctx, "__forkvm_reseed", js_reseed, 0);

	duk_push_object(ctx);
	js_put_func(ctx, "identity", js_identity, 0);
	js_put_func(ctx, "randomHex", js_random_hex, 1);
	js_def_hidden(ctx, "forkvm");

	duk_push_object(ctx);
	for (size_t i = 0; i < sizeof(console_fns) / sizeof(console_fns[0]); i++)
		js_put_func(ctx, console_fns[i], js_print, DUK_VARARGS);
	js_def_hidden(ctx, "console");

	duk_get_prop_string(ctx, -1, "Math");
	js_put_func(ctx, "random", js_random, 0);
	duk_pop_2(ctx);
	return 0;
}

/* Creates the heap and installs the agent's globals. Returns 0 or -errno. */
int agent_js_init(struct agent_js *js)
{
	int rc;

	memset(js, 0, sizeof(*js));
	rc = agent_prng_seed(&js->prng);
	if (rc < 0)
		return rc;
	js->ctx = duk_create_heap(js_alloc, js_realloc, js_free, js, js_fatal);
	if (!js->ctx)
		return -ENOMEM;
	if (duk_safe_call(js->ctx, js_install, NULL, 0, 1) != DUK_EXEC_SUCCESS) {
		duk_destroy_heap(js->ctx);
		js->ctx = NULL;
		return -ENOMEM;
	}
	duk_pop(js->ctx);
	return 0;
}
