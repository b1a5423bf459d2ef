/* tests/lib/vmh.h - forkvm processes for the integration suites that drive
 * the real binary: VMs booted or restored (and empty VMMs), each with its
 * API socket, agent socket, console and log in the test's directory
 * (DIR/NAME.api, .agent, .console, .log), driven over the REST API and the
 * agent. Every forkvm dies with the test process (PR_SET_PDEATHSIG);
 * vmh_set_free() kills the rest. The helpers fail the test (Criterion
 * asserts) when something they need does not work, unless their comment
 * says they return the failure. */
#ifndef FORKVM_TESTS_VMH_H
#define FORKVM_TESTS_VMH_H

#include <stdbool.h>

#include "tests/lib/harness.h"

struct agent_client;

#define VMH_MAX 16     /* VMs of one set at a time */
#define VMH_T_MS 60000 /* limit of one API request, agent call or wait */

/* One forkvm process and the paths it serves. */
struct vmh {
	bool used; /* a slot of its set (vmh_new .. vmh_free) */
	bool live; /* proc started and not stopped */
	char *name;
	char *api, *agent, *console, *log;
	struct h_proc proc;
	struct agent_client *ag; /* vmh_agent()'s connection, or NULL */
};

/* The VMs of one test, in dir (the caller's; it must outlive the set). */
struct vmh_set {
	const char *dir;
	unsigned seq; /* names of unnamed VMs: vm0, vm1, ... */
	struct vmh vms[VMH_MAX];
};

/* Where a started forkvm's serial console goes. */
enum vmh_serial {
	VMH_SERIAL_FILE, /* --serial file=NAME.console (the default) */
	VMH_SERIAL_NONE, /* no --serial: forkvm's default, or the snapshot's */
	VMH_SERIAL_OFF,	 /* --serial off */
};

/* How vmh_boot and vmh_restore* start forkvm; all zero: the agent, with
 * --agent socket=NAME.agent and --serial file=NAME.console, no store, no
 * log, forkvm's default memory, a restore left paused. */
struct vmh_opts {
	const char *payload;  /* boot: payloads/PAYLOAD, with no --agent; NULL: the agent */
	const char *memory;   /* boot: --memory size=MEMORY (e.g. "64M"); NULL: forkvm's default */
	const char *store;    /* --store STORE; NULL: none */
	bool resume;	      /* restore: source_url=...,resume=true */
	bool no_agent;	      /* restore: no --agent (keeps the snapshot's; the test does not
				 talk to the agent) */
	const char *agent_at; /* restore: no --agent; the restored agent listens where the
				 snapshot's did, at agent_at (vmh_agent connects there) */
	enum vmh_serial serial;
	bool log;		  /* --log-file NAME.log -v */
	const char *const *extra; /* more forkvm arguments, NULL-terminated; may be NULL */
};

/* Starts an empty set of VMs whose files go in dir. */
void vmh_set_init(struct vmh_set *s, const char *dir);
/* vmh_free() on every VM of the set. */
void vmh_set_free(struct vmh_set *s);

/* A free slot of s named name (NULL: "vmN", N counting up in the set), its
 * paths DIR/NAME.api, .agent, .console, .log; no process yet. Names must
 * differ among the VMs a set holds at once. */
struct vmh *vmh_new(struct vmh_set *s, const char *name);
/* Closes the agent connection, SIGKILLs and reaps forkvm (if it runs) and
 * removes its captured output; the handle and its paths stay. */
void vmh_stop(struct vmh *v);
/* vmh_stop, then removes v's files and frees its slot. */
void vmh_free(struct vmh *v);
/* forkvm's stderr so far (malloc'd; "" once stopped). */
char *vmh_stderr(const struct vmh *v);
/* The agent's socket is path from now on (a restore that keeps the
 * snapshot's); closes a connection to the old one. */
void vmh_set_agent(struct vmh *v, const char *path);

/* forkvm --api-socket NAME.api --kernel ... per o (NULL: all defaults);
 * waits for the API and, with the agent, connects to it (vmh_ready). */
struct vmh *vmh_boot(struct vmh_set *s, const char *name, const struct vmh_opts *o);
/* forkvm --api-socket NAME.api --restore source_url=SRC ... per o (NULL:
 * all defaults): src is a URL, or an absolute directory (file://SRC).
 * Started, not waited for. */
struct vmh *vmh_restore_start(struct vmh_set *s, const char *name, const char *src,
			      const struct vmh_opts *o);
/* vmh_restore_start, then waits for the API (the restore is done) and
 * checks that the VM is Running (o->resume) or Paused. */
struct vmh *vmh_restore(struct vmh_set *s, const char *name, const char *src,
			const struct vmh_opts *o);
/* forkvm --api-socket NAME.api [--store STORE]: a VMM with no VM, waiting
 * for vm.create or vm.restore; waits for its API. */
struct vmh *vmh_empty(struct vmh_set *s, const char *name, const char *store);

/* Waits up to 30 s for the API socket (a restore creates it once it has
 * succeeded); fails with forkvm's stderr when it does not come or forkvm
 * exits. when (may be NULL) goes first in the message. */
void vmh_wait_api(struct vmh *v, const char *when);
/* vmh_wait_api, then vmh_agent. */
void vmh_ready(struct vmh *v, const char *when);

/* One REST request to v's API (VMH_T_MS): the HTTP status, or -errno when
 * the request failed; *body (when body is not NULL) gets the response body
 * or "(request failed: ...)", malloc'd. Does not fail the test. */
int vmh_api(const struct vmh *v, const char *method, const char *path, const char *json,
	    char **body);
/* PUT /api/v1/WHAT with json (may be NULL) answers want. */
void vmh_put(struct vmh *v, const char *what, const char *json, int want);
/* vm.pause, vm.resume answer 204. */
void vmh_pause(struct vmh *v);
void vmh_resume(struct vmh *v);
/* vm.snapshot to dest (a URL, or an absolute directory: file://DEST)
 * answers 204. */
void vmh_snapshot(struct vmh *v, const char *dest);
/* The VM's state from vm.info (malloc'd), or NULL with the reason in *why
 * (malloc'd, when why is not NULL) when vm.info does not answer 200 with
 * one. Does not fail the test. */
char *vmh_state(struct vmh *v, char **why);
/* vm.info answers 200 with state want (else fails with forkvm's stderr). */
void vmh_assert_state(struct vmh *v, const char *want);

/* The connection to v's agent, made (and pinged) on first use. */
struct agent_client *vmh_agent(struct vmh *v);
/* Evaluates code in v's agent: the result as compact JSON (malloc'd;
 * "undefined" when there is none); an error reply fails the test. */
char *vmh_js(struct vmh *v, const char *code);
/* vmh_js of a printf-formatted code. */
char *vmh_jsf(struct vmh *v, const char *f, ...) __attribute__((format(printf, 2, 3)));
/* vmh_js(v, code) is want. */
void vmh_js_expect(struct vmh *v, const char *code, const char *want);

#endif
