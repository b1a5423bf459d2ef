/* common/seccomp.h - seccomp-bpf allowlists built with libseccomp,
 * compiled once into a classic BPF program and installed many times
 * (a forkd clone installs its filters without compiling anything).
 *
 * A filter is a table of rules: each names a system call, optionally with
 * conditions on its arguments (several rules for one system call are
 * alternatives), and either allows it or makes it fail with an errno.
 * Everything else ends the whole process with SIGSYS (mode on), or is
 * allowed and logged by the kernel (mode log: dmesg shows "audit: ...
 * type=1326 ... syscall=N"). Filters stack: a thread runs every filter it
 * and its parents installed, and the strictest answer wins. */
#ifndef FORKVM_COMMON_SECCOMP_H
#define FORKVM_COMMON_SECCOMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <seccomp.h>

enum sc_mode {
	SC_MODE_ON,  /* a system call outside the list kills the process (SIGSYS) */
	SC_MODE_LOG, /* it is allowed and logged by the kernel */
	SC_MODE_OFF, /* no filter */
};

/* "on", "log" or "off". Returns 0 or -EINVAL. */
int sc_mode_parse(const char *s, enum sc_mode *out) __attribute__((warn_unused_result));
const char *sc_mode_name(enum sc_mode m);

#define SC_MAX_ARGS 3

struct sc_rule {
	int nr;          /* system call number (SCMP_SYS(name)) */
	int err;         /* 0: allow; else fail with this errno */
	unsigned nargs;  /* conditions on arguments, all of which must hold */
	struct scmp_arg_cmp arg[SC_MAX_ARGS];
};

/* Rule helpers for the tables. */
#define SC_ALLOW(name) { .nr = SCMP_SYS(name) }
#define SC_ERRNO(name, e) { .nr = SCMP_SYS(name), .err = (e) }
/* Allowed when argument i, masked with m, equals v. */
#define SC_MASKED(name, i, m, v)                                                               \
	{ .nr = SCMP_SYS(name), .nargs = 1,                                                    \
	  .arg = { { .arg = (i), .op = SCMP_CMP_MASKED_EQ, .datum_a = (m), .datum_b = (v) } } }
/* Allowed when argument i equals v. */
#define SC_EQ(name, i, v)                                                                      \
	{ .nr = SCMP_SYS(name), .nargs = 1, .arg = { { .arg = (i), .op = SCMP_CMP_EQ, .datum_a = (v) } } }

/* A compiled filter. len 0: none (mode off). */
struct sc_prog {
	void *insns; /* struct sock_filter[len] */
	unsigned short len;
};

/* Compiles the rules (plus, in sanitizer builds, what the sanitizer
 * runtime needs) for mode. Returns 0 or -errno. */
int sc_prog_build(const struct sc_rule *rules, size_t n, enum sc_mode mode, struct sc_prog *out)
	__attribute__((warn_unused_result));
void sc_prog_free(struct sc_prog *p);

/* Installs p on the calling thread (and, all_threads, on every thread of
 * the process: SECCOMP_FILTER_FLAG_TSYNC), after setting no_new_privs.
 * Threads and processes created later inherit it. A NULL or empty p is a
 * no-op. Returns 0 or -errno. */
int sc_prog_install(const struct sc_prog *p, bool all_threads) __attribute__((warn_unused_result));

#endif
