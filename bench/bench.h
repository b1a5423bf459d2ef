/* bench/bench.h - forkbench's internal interface between its subcommands. */
#ifndef FORKVM_BENCH_H
#define FORKVM_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct opts {
	int samples;
	int warmup;
	const char *cpus;
	const char *memory;     /* NULL: the subcommand's default */
	const char *forkvm;
	const char *agent;
	const char *code;
	bool json;              /* one JSON document at the end */
	bool csv;               /* CSV at the end */
	const char *plot;       /* SVG file: latency CDFs */
	long touch_mb;          /* MiB the guest fills before a snapshot; -1: default */
	const char *chunk_sizes; /* store: comma-separated chunk sizes to compare */
	long dirty_mb;          /* store: MiB dirtied before an incremental snapshot */
	int clones;             /* store: snapshots of one template for the dedup figure */
	int fanout;             /* fork: concurrent forks */
	int density;            /* density: most idle clones to start */
	const char *jail;          /* forkd --jail: "on" or "off" */
	unsigned long long budget; /* density: stop once host memory used reaches this (0: none) */
	const char *accel;      /* peer: QEMU's accelerator, "kvm", "tcg", or NULL/"auto" */
	bool prepare;           /* peer: only fill the cache (QEMU, kernel, initramfs) */
	const char *platform;   /* "kvm" or "process" (resolved; also in FORKVM_PLATFORM) */
	const char *payloads;   /* the test payloads' directory (build/guest/payloads) */
	bool linux_guest;            /* spawn the Linux test guest (agent on vsock) */
	const char *linux_kernel;    /* linux: the test guest (build/linux/vmlinuz) */
	const char *linux_initramfs; /* ... and its initramfs with the agent */
};

#define FORKBENCH_VERSION "0.1.0"

/* bench/out.c: the run's output. out_begin() prints the machine's
 * description (text mode); report() and figure() print as they come in
 * text mode and are kept for --json / --csv (printed by out_end()) and
 * --plot (report()'s distributions as CDFs). out_end() returns rc, or 1
 * if the plot cannot be written. */
void out_begin(const struct opts *o, const char *subcommand);
int out_end(const struct opts *o, int rc);
bool out_text(const struct opts *o);
/* min/p50/p90/p99/max of ns[0..n) (sorted in place) as `what` (unit us). */
void report(const char *what, uint64_t *ns, int n, const struct opts *o);
/* One figure: "what  value unit". */
void figure(const struct opts *o, const char *what, double value, const char *unit);
/* A comment line ("# ..." in text mode; "notes" in JSON). */
void note(const struct opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "\r"-updated progress line on stderr, only when it is a terminal; ""
 * clears it. */
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Connects to a unix socket as soon as it accepts; fd or -errno. */
int connect_fast(const char *sock, int timeout_ms);
/* A field of /proc/PID/status in KiB, or -1. */
long rss_kib(pid_t pid, const char *field);
/* SIGTERM and reap. */
void stop_vm(pid_t pid);
/* PUT path on the API socket; *status gets the HTTP status (errors printed). */
int api_put(const char *api, const char *path, const char *body, int *status);
/* Same, returning the reply body (malloc'd) in *body_out when not NULL. */
int api_put_body(const char *api, const char *path, const char *body, int *status, char **body_out);
/* Waits until the API answers vm.info with state Paused. */
int wait_paused(const char *api, int timeout_ms);

int cmd_store(const struct opts *o);
int cmd_fork(const struct opts *o);
/* QEMU restoring a Linux guest vs forkvm restoring the agent (bench/peer.c);
 * 0, 1 on failure, 2 on bad options, 77 when QEMU or /dev/kvm cannot be had. */
int cmd_peer(const struct opts *o);
int cmd_e2e(const struct opts *o);
int cmd_fanout(const struct opts *o);
int cmd_density(const struct opts *o);
int cmd_linux(const struct opts *o);
/* linux: one forkvm with the Linux test guest: boot to agent ready,
 * snapshot to a directory, restores to first answer (bench/forkbench.c). */
int linux_vm_bench(const struct opts *o);
int cmd_boot_vs_fork(const struct opts *o);
/* Raw-KVM floor of a fork's work (bench/floor.c). */
int cmd_floor(const struct opts *o);
/* Raw-ptrace floor of a process-platform fork's work (bench/floor_ptrace.c). */
int cmd_floor_ptrace(const struct opts *o);
/* n round trips of a guest system call's bare path, in ns[] (after warmup
 * excluded ones): a KVM exit at a ring-0 `out` reached by `syscall` and
 * the next KVM_RUN (bench/floor.c), or a PTRACE_SYSEMU stop served with
 * GETREGS/SETREGS (bench/floor_ptrace.c). 0 or -1 (printed). */
int kvm_floor_round_trips(const struct opts *o, uint64_t *ns, int n, int warmup);
int ptrace_floor_round_trips(uint64_t *ns, int n, int warmup);
/* guest system call round trip on the chosen platform, and its floor */
int cmd_syscall(const struct opts *o);

#endif
