/* guest/agent/agent.h - the forkvm function-guest agent: a Duktape
 * JavaScript runtime that serves framed JSON requests on fd 0/1.
 * Internal header: every agent source file includes only this one.
 * Wire format: docs/agent-protocol.md. */
#ifndef FORKVM_GUEST_AGENT_H
#define FORKVM_GUEST_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "duktape.h"

#define AGENT_NAME "forkvm-agent"
#define AGENT_PROTO_VERSION 1
#define AGENT_EXIT_FATAL 70

#define AGENT_FD_IN 0
#define AGENT_FD_OUT 1
#define AGENT_FD_LOG 2

/* Largest frame payload accepted or sent. */
#define AGENT_FRAME_MAX (64u * 1024 * 1024)
/* Initial (and idle) size of the input buffer. */
#define AGENT_INBUF_MIN (64u * 1024)

#define AGENT_WUR __attribute__((warn_unused_result))

/* ---------------------------------------------------------------- rand.c */

/* xorshift128+ state behind Math.random(). */
struct agent_prng {
	uint64_t s[2];
};

/* Fills buf with len bytes from getrandom(2). Returns 0 or -errno. */
int agent_rand_bytes(void *buf, size_t len) AGENT_WUR;
/* Seeds p from getrandom(2). Returns 0 or -errno (p is then left as it was). */
int agent_prng_seed(struct agent_prng *p) AGENT_WUR;
/* Returns a uniform double in [0, 1) with 53 random bits. */
double agent_prng_double(struct agent_prng *p);

/* ---------------------------------------------------------------- heap.c */

#define AGENT_HEAP_CLASSES 56 /* 16..256 by 16, then 4 steps per doubling to 256 KiB */
#define AGENT_HEAP_CACHE 16 /* freed large mappings kept for reuse */
#define AGENT_HEAP_CACHE_BLOCK (16u * 1024 * 1024) /* largest one kept */
#define AGENT_HEAP_CACHE_BYTES (64u * 1024 * 1024) /* most kept in all */

/* Allocator for the Duktape heap that makes few system calls: see heap.c. */
struct agent_heap {
	void *free[AGENT_HEAP_CLASSES]; /* free blocks per size class */
	char *bump, *bump_end; /* unused part of the newest chunk */
	struct {
		char *p;
		size_t len;
	} cache[AGENT_HEAP_CACHE];
	size_t cache_bytes;
	size_t live; /* bytes requested and not freed */
	size_t peak;
	size_t reserved; /* bytes mapped: chunks, large blocks, cache */
};

/* Returns size bytes, 16-byte aligned, or NULL. h starts zeroed. */
void *agent_heap_alloc(struct agent_heap *h, size_t size);
/* Resizes a block (realloc semantics; size 0 frees and returns NULL). */
void *agent_heap_realloc(struct agent_heap *h, void *ptr, size_t size);
/* Releases a block from agent_heap_alloc (NULL is ignored). */
void agent_heap_free(struct agent_heap *h, void *ptr);

/* ---------------------------------------------------------------- js.c */

/* Everything the Duktape callbacks reach through the heap udata. */
struct agent_js {
	duk_context *ctx;
	struct agent_heap heap;
	struct agent_prng prng;
};

/* Creates the Duktape heap (counting allocator, fatal handler that exits
 * with AGENT_EXIT_FATAL) and installs print, console, Math.random and
 * __forkvm_reseed. js must stay at a fixed address. Returns 0 or -errno. */
int agent_js_init(struct agent_js *js) AGENT_WUR;

/* Returns the agent_js that owns the heap of ctx (the heap udata). */
struct agent_js *agent_js_of(duk_context *ctx);

/* Writes msg (len bytes) and a newline to the console fd with one write. */
void agent_log(const char *msg, size_t len);
/* Logs a NUL-terminated line to the console. */
void agent_logs(const char *msg);

/* ---------------------------------------------------------------- io.c */

/* Input side of the channel: a buffer that is grown to hold a whole frame. */
struct agent_in {
	int fd;
	char *buf;
	size_t cap, start, end; /* unread bytes are buf[start, end) */
	uint64_t skip; /* bytes of an oversized frame still to discard */
};

/* Prepares in for reading fd. Returns 0 or -ENOMEM. */
int agent_in_init(struct agent_in *in, int fd) AGENT_WUR;

/* Returns the next frame's payload in *payload / *len (valid until the next
 * call). Returns 1 for a frame, 0 on end of input, -EMSGSIZE when a frame
 * longer than AGENT_FRAME_MAX was announced (*len is its length; its bytes
 * are discarded by the following calls), or another -errno. */
int agent_in_next(struct agent_in *in, const char **payload, size_t *len) AGENT_WUR;

/* Sends one frame whose payload is the concatenation of the n parts (n <= 8)
 * with one writev(2), looping on short writes. Returns 0, -EMSGSIZE if the
 * payload exceeds AGENT_FRAME_MAX (nothing is sent), or -errno. */
int agent_out_frame(int fd, const struct iovec *parts, int n) AGENT_WUR;

/* ---------------------------------------------------------------- text.c */

/* Duktape's JSON output may hold CESU-8 surrogate pairs, lone surrogates or
 * other byte sequences that are not UTF-8. Returns NULL if s[0, len) is
 * valid UTF-8, else a malloc'd copy with pairs merged into 4-byte UTF-8 and
 * everything invalid replaced by U+FFFD (length in *out_len). Sets *oom and
 * returns NULL if the copy could not be allocated. */
char *agent_utf8_fix(const char *s, size_t len, size_t *out_len, int *oom);

/* Finds the raw text of top-level member "key" (spelled without escapes) in
 * the JSON object text s[0, len). Later duplicates win, as in JSON.parse.
 * Returns 1 and sets *val / *vlen, 0 if absent, -EINVAL if s is no object. */
int agent_json_member(const char *s, size_t len, const char *key, const char **val, size_t *vlen);

/* ---------------------------------------------------------------- ops.c */

#include "../abi/forkvm_identity.h"
#include "../abi/forkvm_linux.h"

/* The agent process: one per program, set up by main.c. */
struct agent {
	struct agent_js js;
	struct agent_in in;
	int out_fd;
	uint64_t requests;
	uint64_t start_ns; /* CLOCK_MONOTONIC at start */
	int pid;
	char boot_id[33];
	char hostname[65];
	/* The VMM's identity page (guest/abi/forkvm_identity.h), or NULL when
	 * running outside forkvm; generation as last seen. */
	const volatile struct forkvm_identity *identity;
	uint64_t generation;
	uint64_t reseeds; /* times Math.random was re-seeded after a restore */
};

/* The agent's struct, from a Duktape context of its heap. */
struct agent *agent_of(duk_context *ctx);

/* Checks the identity page: after a restore (a new generation) re-seeds
 * Math.random, so clones of one snapshot never share a random stream. */
void agent_check_generation(struct agent *a);

/* Monotonic clock in nanoseconds (one clock_gettime). */
uint64_t agent_now_ns(void);

/* Sends the {"event":"ready"} frame. Returns 0 or -errno. */
int agent_send_ready(struct agent *a) AGENT_WUR;

/* Returns the handler of op name ([req] -> [result]), or NULL if unknown. */
duk_c_function agent_op_find(const char *name);

/* ---------------------------------------------------------------- linux.c */

/* The options, for an agent that runs as a process of a Linux guest
 * (docs/linux-guests.md); a function guest's agent is given none. */
struct agent_opts {
	unsigned vsock_port;	  /* 0: the channel is fd 0/1 as inherited */
	const char *identity_mem; /* NULL: the identity page from the auxiliary vector;
				     else physical memory (/dev/mem) holding it at
				     FORKVM_IDENTITY_LINUX_GPA */
};

/* How long --vsock retries a host that is not there yet. */
#define AGENT_VSOCK_TIMEOUT_MS 10000u

/* Parses argv: --vsock PORT (or --vsock=PORT; 1..4294967294),
 * --identity-devmem (/dev/mem) or --identity-devmem=PATH (a file standing
 * for it, for tests). Returns 0, or -EINVAL with the message (and usage)
 * in err. */
int agent_parse_args(int argc, char *const argv[], struct agent_opts *o, char *err,
		     size_t errlen) AGENT_WUR;

/* Connects a vsock stream to the host (CID 2) on port, retrying what
 * says the host end is not up yet (ENODEV, ECONNREFUSED, ETIMEDOUT...)
 * every 100 ms for timeout_ms, and makes the connection AGENT_FD_IN and
 * AGENT_FD_OUT; SIGPIPE is ignored from then on. Returns 0 or -errno. */
int agent_vsock_channel(unsigned port, unsigned timeout_ms) AGENT_WUR;

/* Maps, read-only, the page of path (physical memory) at
 * FORKVM_IDENTITY_LINUX_GPA. Returns it when it holds an identity page
 * (magic, version >= 1), else NULL with the reason in err. */
const volatile struct forkvm_identity *agent_identity_map(const char *path, char *err,
							  size_t errlen);

/* ---------------------------------------------------------------- dispatch.c */

/* Handles one request frame and sends its reply. JavaScript errors become
 * ok:false replies. Returns 0, or -errno when the reply could not be sent. */
int agent_handle(struct agent *a, const char *payload, size_t len) AGENT_WUR;

/* ---------------------------------------------------------------- reply.c
 * id/idlen is the raw JSON text of the request id; NULL means null. */

/* Pops the value on top of the Duktape stack and sends it as the request's
 * result ({"ok":true,"result":...}); a value that cannot be converted
 * (cyclic, too large) is sent as an error reply. Returns 0 or -errno. */
int agent_reply_result(struct agent *a, const char *id, size_t idlen) AGENT_WUR;

/* Pops the thrown value on top of the Duktape stack and sends it as an
 * ok:false reply with error name, message and stack. Returns 0 or -errno. */
int agent_reply_thrown(struct agent *a, const char *id, size_t idlen) AGENT_WUR;

/* Sends an ok:false reply with error name and message. Returns 0 or -errno. */
int agent_reply_error(struct agent *a, const char *id, size_t idlen, const char *name,
		      const char *msg) AGENT_WUR;

/* Pops the object on top of the Duktape stack and sends it as an event
 * frame. Returns 0 or -errno. */
int agent_send_event(struct agent *a) AGENT_WUR;

#endif
