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
	bool json;
	long touch_mb;          /* MiB the guest fills before a snapshot; -1: default */
	const char *chunk_sizes; /* store: comma-separated chunk sizes to compare */
	long dirty_mb;          /* store: MiB dirtied before an incremental snapshot */
	int clones;             /* store: snapshots of one template for the dedup figure */
	int fanout;             /* fork: concurrent forks */
	int density;            /* fork: idle clones for the density figure (0: skip) */
};

/* Prints min/p50/p90/p99/max of ns[0..n) (sorted in place) as `what`. */
void report(const char *what, uint64_t *ns, int n, const struct opts *o);
/* Prints one figure: text mode "what  value unit", or a JSON object. */
void figure(const struct opts *o, const char *what, double value, const char *unit);
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

#endif
