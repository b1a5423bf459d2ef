/* forkd/internal.h - private to forkd/: the daemon's objects and the
 * control protocol between forkd and its clone processes. */
#ifndef FORKVM_FORKD_INTERNAL_H
#define FORKVM_FORKD_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/http.h"
#include "common/loop.h"
#include "forkd/forkd.h"
#include "vmm/vmm.h"

/* ------------------------------------------------------------ control protocol */

/* One SOCK_SEQPACKET message each way between forkd and a clone. */
enum ctl_op {
	CTL_READY = 1, /* clone -> forkd: restored and paused (t_ns: when) */
	CTL_RUNNING,   /* clone -> forkd: resumed (t_ns: right after vm_resume) */
	CTL_FAILED,    /* clone -> forkd: could not start (text: why); it exits */
	CTL_EXITED,    /* clone -> forkd: the guest stopped (rc: status, text: why) */
	CTL_GO,        /* forkd -> clone: resume (a pool shell handed out) */
	CTL_PAUSE,     /* forkd -> clone */
	CTL_RESUME,    /* forkd -> clone */
	CTL_SNAPSHOT,  /* forkd -> clone: text: tag ("" none) */
	CTL_REPLY,     /* clone -> forkd: answer to PAUSE/RESUME/SNAPSHOT (rc, text: id or error) */
	CTL_TIMES,     /* clone -> forkd: where its start went (v[], after RUNNING) */
};

/* CTL_TIMES values (CLOCK_MONOTONIC ns; durations unless said). */
enum ctl_time {
	CT_CHILD_START, /* timestamp: the clone process's first instruction (0 for a pool shell) */
	CT_KVM,         /* KVM VM created */
	CT_MAP,         /* memory mapped */
	CT_CREATE,      /* slots, irqchip, PIT, vCPUs */
	CT_STATE,       /* state units replayed */
	CT_THREADS,     /* vCPU threads started */
	CT_JAIL,        /* the jail: cgroup, namespaces, root, capabilities */
	CT_FIRST_RUN,   /* timestamp: first KVM_RUN after the start or resume (0: not seen) */
	CT_MAX,
};

struct ctl_msg {
	uint32_t op;
	int32_t rc;
	uint64_t t_ns; /* CLOCK_MONOTONIC */
	uint64_t v[CT_MAX];
	char text[512];
};

/* ------------------------------------------------------------ objects */


struct fork_req;
struct invoke;

struct template {
	char name[FORKD_NAME_MAX + 1];
	char id[33];
	struct vm_template *vt;
	unsigned pool_size;
	uint64_t forks;
	/* Pool shells that died before they were ready: the pool backs off
	 * (exponentially, up to POOL_BACKOFF_MAX_MS) while they keep failing. */
	unsigned fail_streak;       /* failures since the last ready shell */
	uint64_t retry_at;          /* monotonic ns: no new shell before; 0: none */
	uint64_t shell_failures;    /* all of them, for the API and /metrics */
	char last_failure[512];
	struct forkd *d;
	struct template *next;
};

enum clone_state {
	CLONE_STARTING, /* process restoring */
	CLONE_READY,    /* a paused shell in its template's pool */
	CLONE_GOING,    /* told to resume, waiting for RUNNING */
	CLONE_RUNNING,
	CLONE_PAUSED,
	CLONE_EXITED,
};

/* The clone jail's forkd-side state (forkd/jail.c). */
enum jail_cg { JAIL_CG_NONE, JAIL_CG_V1, JAIL_CG_V2 };
struct jail {
	bool on;
	int netns, ipcns;      /* the clones' shared empty network and IPC namespaces */
	const char *dev;       /* the platform's device (/dev/kvm), NULL: none */
	dev_t dev_rdev;        /* ... recreated in each jail */
	int cap_last;
	char root[4096];       /* mount point of each clone's root tmpfs (its own namespace) */
	enum jail_cg cg;
	int cg_n;              /* v2: 1 directory; v1: memory, pids, cpu */
	char cg_base[3][2200]; /* clones' cgroups are cg_base[i]/ID */
	char cg_top[1][2200];  /* v2: forkd's subtree (TOP/daemon, TOP/clones) */
};

struct clone {
	char id[FORKD_CLONE_ID_LEN + 1];
	char tpl_name[FORKD_NAME_MAX + 1];
	struct template *tpl; /* NULL once the template is deleted */
	pid_t pid;
	int ctl;              /* -1 once closed */
	enum clone_state state;
	bool shell;           /* in (or on its way into) the pool, not given out */
	bool from_pool;
	bool hidden;          /* an invoke's clone: not listed */
	bool killed;          /* forkd sent SIGKILL */
	char dir[256];        /* run_dir/clones/ID */
	uint64_t t_req;       /* when the request that took it arrived */
	uint64_t fork_ns;     /* t_req -> running */
	uint64_t created_ms;  /* realtime */
	uint64_t t_fork;      /* when forkd called fork() for it */
	uint64_t t_running;   /* its RUNNING timestamp */
	uint64_t times[CT_MAX]; /* CTL_TIMES, once received */
	bool has_times;
	struct fork_req *req; /* the fork request waiting for it */
	struct invoke *inv;   /* the invoke using it */
	struct http_exchange *op_ex; /* a pause/resume/snapshot/delete waiting */
	int op;                      /* CTL_* of op_ex, or -1 for delete */
	char op_tag[256];
	/* Exit. */
	int exit_status; /* -1 unless it exited */
	int exit_signal; /* 0 unless a signal ended it */
	char exit_reason[512];
	struct forkd *d;
	struct clone *next;
};

struct forkd {
	struct forkd_config cfg;
	char api_socket[4096], store[4096], run_dir[4096], forkvm[4096];
	struct loop *loop;
	struct http_server *srv;
	int sigfd;
	int refill_tfd;     /* pools are refilled a little after clones are handed out */
	bool refill_armed;
	bool stopping;      /* forkd_destroy(): no new pool shells */
	struct template *templates;
	struct clone *clones; /* every clone and shell, exited ones too */
	unsigned nr_exited;
	struct builder *builders;
	struct vmm_seccomp *clone_sc; /* compiled once, installed by every clone */
	struct jail jail;
	/* Metrics. */
	uint64_t forks_pool, forks_cold, fork_failures;
	uint64_t invokes_ok, invokes_error, invokes_timeout, invokes_failed;
	uint64_t lat_buckets[16];
	uint64_t lat_count;
	double lat_sum;
};

/* forkd/daemon.c: templates. */
struct template *forkd_template_find(struct forkd *d, const char *name);
/* Registers a template from store ref under name and fills its pool.
 * Returns 0 or -errno with err. */
int forkd_template_add(struct forkd *d, const char *name, const char *ref, unsigned pool,
		       struct template **out, char *err, size_t errlen);
/* Unregisters t: its pool shells are killed, its clones live on. */
void forkd_template_remove(struct forkd *d, struct template *t);
json_t *forkd_template_json(const struct template *t);

/* forkd/clone.c: the clone lifecycle. */
/* A given-out clone by id (not shells, not invokes' clones), or NULL. */
struct clone *forkd_clone_find(struct forkd *d, const char *id);
/* Clones given out and not exited (of t; NULL: of every template). */
unsigned forkd_clones_live(const struct forkd *d, const struct template *t);
/* Forks a clone process of t (started at once when autostart, else a
 * paused shell). Returns the clone (state STARTING) or NULL with errno. */
struct clone *forkd_clone_spawn(struct forkd *d, struct template *t, bool autostart);
/* Handles one control message of len bytes that c sent: a message that
 * breaks the protocol (its size, an unterminated text, an unknown
 * operation, a malformed reply, a shell running early) kills c. */
void forkd_clone_ctl_msg(struct forkd *d, struct clone *c, const void *buf, size_t len);
/* Clone c's process ended (wstatus from waitpid): answers what waited for
 * it, counts a pool shell's failure, keeps or frees its record. */
void forkd_clone_reaped(struct forkd *d, struct clone *c, int wstatus);
/* The SIGCHLD signalfd's loop callback (arg: the forkd): reaps clones. */
void forkd_clone_on_sigchld(void *arg, uint32_t events);
/* Sends SIGKILL (once), the clone's threads moved to SCHED_IDLE first. */
void forkd_clone_kill(struct forkd *d, struct clone *c);
/* Frees an exited clone's record and directory. */
void forkd_clone_forget(struct forkd *d, struct clone *c);
/* Sends op (with text) to the clone. Returns 0 or -errno (-EPIPE: closed). */
int forkd_clone_send(struct clone *c, uint32_t op, const char *text);
/* Sends one control message on fd (both sides of the protocol). Returns
 * 0 or -errno. */
int forkd_ctl_send(int fd, uint32_t op, int32_t rc, const char *text, int flags);
json_t *forkd_clone_json(const struct clone *c);
const char *forkd_clone_state_name(enum clone_state s);

/* forkd/pool.c: warm pools and fork requests. */
/* Pool shells of t (NULL: all templates) in state s, not being killed. */
unsigned forkd_pool_shells(const struct forkd *d, const struct template *t, enum clone_state s);
/* Makes or discards shells until t's pool matches its size (one at a
 * time, after the back-off, while its shells keep failing). */
void forkd_pool_fill(struct forkd *d, struct template *t);
/* Refills every pool a little later (the refill timer). */
void forkd_pool_refill_later(struct forkd *d);
/* The refill timerfd's loop callback (arg: the forkd). */
void forkd_pool_on_refill(void *arg, uint32_t events);
/* A shell of t is ready: t is no longer failing. */
void forkd_pool_shell_ready(struct forkd *d, struct template *t);
/* A shell of t died before it was ready (reason): counted, and t backs off. */
void forkd_pool_shell_failed(struct forkd *d, struct template *t, const char *reason);
/* Takes count clones of t for ex (a fork request, or an invoke when inv
 * is set): pool shells first, then cold. Responds to ex itself. */
void forkd_fork(struct forkd *d, struct template *t, unsigned count, struct http_exchange *ex,
		struct invoke *inv);
/* A clone of fork request r runs (the request is answered when all do). */
void forkd_fork_clone_running(struct forkd *d, struct fork_req *r);
/* Clone c of r died before r was answered (counted: it had been counted
 * as running): r fails whole. */
void forkd_fork_clone_died(struct forkd *d, struct fork_req *r, struct clone *c, bool counted,
			   const char *reason);
/* Refuses a fork of count clones: returns 0, or an HTTP status with err. */
int forkd_capacity_check(struct forkd *d, unsigned count, char *err, size_t errlen);

/* forkd/metrics.c */
/* Counts one fork's latency (request to running) in the histogram. */
void forkd_metrics_fork_latency(struct forkd *d, uint64_t ns);
/* The Prometheus text of GET /metrics (malloc'd), or NULL. */
char *forkd_metrics(struct forkd *d);

/* forkd/files.c */
/* Calls fn(dir, name, d_type, arg) for each entry of dir but "." and ".."
 * (nothing if dir cannot be opened); allocates nothing. */
typedef void forkd_dir_fn(const char *dir, const char *name, unsigned char type, void *arg);
void forkd_dir_each(const char *dir, forkd_dir_fn *fn, void *arg);
/* Reads a small file into buf, NUL-terminated (what fits in len - 1): for
 * /proc and cgroup files, whose size reads as 0. Returns 0 or -errno. */
int forkd_read_small(const char *path, char *buf, size_t len);
/* Removes dir and the files in it (best effort; no subdirectories). */
void forkd_rm_dir(const char *dir);
/* Sets the scheduling policy of every thread of process pid (best effort). */
void forkd_sched_threads(pid_t pid, int policy);

/* forkd/child.c: the clone process (never returns). */
struct clone_child_args {
	struct vm_template *vt;
	int ctl;
	bool autostart;
	const char *id;
	const char *dir;
	const char *store;
	const struct vmm_seccomp *seccomp; /* the VMM and vCPU filters (NULL: none) */
	enum vm_platform platform;         /* where the clone runs */
	const struct forkd *forkd;         /* its jail settings */
};
__attribute__((noreturn)) void forkd_clone_main(const struct clone_child_args *a);

/* forkd/jail.c */
/* Namespaces, the jail root's mount point, cgroups (when jails are on).
 * Returns 0 or -errno with err. */
int forkd_jail_init(struct forkd *d, char *err, size_t errlen);
void forkd_jail_fini(struct forkd *d);
/* clone(2) flags of a new clone process (0: no jail). */
unsigned long forkd_jail_clone_flags(const struct forkd *d);
/* The clone's cgroup with its limits, made before it is forked. */
int forkd_jail_cgroup_create(struct forkd *d, const char *id, uint64_t mem_max);
void forkd_jail_cgroup_remove(struct forkd *d, const char *id);
/* In the new clone process: namespaces, root, ids, capabilities; opens
 * the clone's cgroup.procs files into cg_fds (-1 where none). */
int forkd_jail_enter(const struct forkd *d, const char *id, const char *clone_dir, int cg_fds[3],
		     char *err, size_t errlen);
/* Moves the calling process into its cgroup and closes cg_fds. */
int forkd_jail_join_cgroup(int cg_fds[3]);

/* forkd/builder.c: the "booted once" templates. */
struct builder;
/* Starts a child that boots boot (a vm.create configuration) with forkvm,
 * loads script, snapshots it into the store (or, boot NULL, takes store
 * snapshot ref) and materializes its image; when done, forkd registers the
 * template and responds to ex. Returns 0 or -errno with err. */
int forkd_builder_start(struct forkd *d, const char *name, json_t *boot, const char *script,
			const char *ref, unsigned pool, struct http_exchange *ex, char *err,
			size_t errlen);
void forkd_builders_kill(struct forkd *d);
bool forkd_builder_busy(struct forkd *d, const char *name);

/* forkd/invoke.c */
struct invoke;
/* Parses the invoke body and starts it. */
void forkd_invoke_start(struct forkd *d, struct template *t, const json_t *body,
			struct http_exchange *ex);
/* The clone taken for the invoke (killed when the invoke ends). */
void forkd_invoke_bind(struct invoke *inv, struct clone *c);
/* The invoke's clone runs: call the function. */
void forkd_invoke_clone_running(struct forkd *d, struct invoke *inv, struct clone *c);
/* The invoke's clone could not be made or died: fail it. */
void forkd_invoke_fail(struct forkd *d, struct invoke *inv, int status, const char *msg);

/* forkd/api.c */
void forkd_api_handle(void *arg, struct http_exchange *ex);

#endif
