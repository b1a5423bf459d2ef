/* tests/lib/harness.h - helpers for tests that run the real binaries:
 * where the build is, temp directories, child processes with captured
 * output and timeouts, files. */
#ifndef FORKVM_TESTS_HARNESS_H
#define FORKVM_TESTS_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

/* build dir (FORKVM_BUILD, else "build") and guest dir (FORKVM_GUEST,
 * else "build/guest"). */
const char *h_build_dir(void);
const char *h_guest_dir(void);
/* The source tree (FORKVM_SRC, set by scripts/run-tests.sh, else "."). */
const char *h_src_dir(void);
/* Returns a malloc'd "<a>/<b>". */
char *h_join(const char *a, const char *b);
/* Returns a malloc'd printf-formatted string (aborts when out of memory). */
char *h_fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
/* Full paths of binaries and payloads (malloc'd). */
char *h_bin(const char *name);     /* build/bin/NAME */
char *h_payload(const char *name); /* "agent" or "payloads/NAME" */

/* True if /dev/kvm can be opened read-write. */
bool h_have_kvm(void);
/* The platform the tests run guests on: "kvm" or "process". forkvm, forkd
 * and forkbench take their --platform default from FORKVM_PLATFORM, which
 * scripts/run-tests.sh sets for each pass; unset (or "auto"), it is "kvm"
 * where /dev/kvm opens, else "process", as their auto. */
const char *h_platform(void);
/* True when h_platform() is "process". */
bool h_on_process(void);
/* Skips the test when its guests cannot run: the platform is KVM and
 * /dev/kvm is absent (the message run-tests.sh counts as a failure). */
#define H_NEED_GUEST()                                                                 \
	do {                                                                           \
		if (!h_on_process() && !h_have_kvm())                                  \
			cr_skip_test("/dev/kvm is absent or not accessible: this test boots a guest on KVM"); \
	} while (0)
/* True when this test's guests can run (H_NEED_GUEST would not skip). */
bool h_can_boot(void);

/* True inside the KVM lane (scripts/lane.sh sets FORKVM_LANE=1): KVM is
 * nested SVM under QEMU TCG there, a KVM exit costs ~57 us and creating a
 * VM 15-20 ms, so stress suites run smaller there. */
bool h_in_lane(void);
/* A stress test's count: native on a host's own KVM, lane in the KVM lane
 * (both stated in the suite and the README; never 0). */
int h_size(int native, int lane);
/* Where the tests run, for messages: "native KVM", "KVM lane (nested SVM
 * under TCG)" or "process platform". */
const char *h_where(void);

/* A fresh temporary directory (malloc'd path); h_rmtree removes it. */
char *h_tmpdir(void);
void h_rmtree(const char *dir);

struct h_proc {
	pid_t pid;
	char *out_path; /* captured stdout */
	char *err_path; /* captured stderr */
	int status;     /* exit status, or 128 + signal */
	bool reaped;
};

/* Starts argv[0] (a path) with stdout/stderr captured in files in dir. */
int h_spawn(struct h_proc *p, const char *dir, const char *const argv[]);
/* h_spawn, but the child also gets SIGKILL when the calling thread ends
 * (PR_SET_PDEATHSIG): a test killed by its timeout leaves nothing behind. */
int h_spawn_tied(struct h_proc *p, const char *dir, const char *const argv[]);
/* Waits up to timeout_ms. Returns the status (see struct h_proc) or -1 on timeout. */
int h_wait(struct h_proc *p, int timeout_ms);
/* SIGKILL and reap (no-op if already reaped); frees the paths. */
void h_kill(struct h_proc *p);
/* Captured output so far (malloc'd, "" if none). */
char *h_stdout(const struct h_proc *p);
char *h_stderr(const struct h_proc *p);

/* Runs argv to completion (timeout_ms) and returns its status; out/err get
 * the captured output (malloc'd) when not NULL. -1 on timeout. */
int h_run(const char *dir, const char *const argv[], int timeout_ms, char **out, char **err);

/* Whole file (malloc'd, NUL-terminated) or NULL. */
char *h_read_file(const char *path);
int h_write_file(const char *path, const char *text);
/* Polls until path exists (timeout_ms). */
bool h_wait_path(const char *path, int timeout_ms);
/* Counts occurrences of needle in hay. */
int h_count(const char *hay, const char *needle);
/* Open file descriptors of pid (-1: no such process). */
int h_count_fds(pid_t pid);
/* A "Field:" of /proc/PID/status as a number (kB for sizes), or -1. */
long h_status_field(pid_t pid, const char *field);
/* For tests that check a daemon's memory does not grow: in ASan builds
 * (make SAN=1) freed memory stays resident in ASan's quarantine (256 MiB by
 * default), which such a check would count. Caps it at 1 MiB for the
 * processes started afterwards (appended to ASAN_OPTIONS; no effect on
 * other builds). */
void h_asan_small_quarantine(void);
/* Sleeps ms milliseconds. */
void h_sleep_ms(int ms);

/* A VM running the agent: forkvm with --api-socket, --agent and the serial
 * console in a file, all inside dir. */
struct h_vm {
	struct h_proc proc;
	char *dir;
	char *api;     /* API socket */
	char *agent;   /* agent socket */
	char *console; /* console file */
};
/* Boots payload (NULL: the agent) with extra forkvm arguments (NULL-terminated,
 * may be NULL). Waits for the API socket. Returns 0 or -1. */
int h_vm_start(struct h_vm *vm, const char *payload, const char *const extra[]);
void h_vm_stop(struct h_vm *vm);
/* One REST call to the VM's API; returns the HTTP status (or -errno) and
 * the body (malloc'd) in *body when not NULL. */
int h_api(struct h_vm *vm, const char *method, const char *path, const char *json, char **body);

/* ------------------------------------------------------------ forkd */

/* One HTTP request over the Unix socket sock (JSON body when json is not
 * NULL). Returns the status, or -errno when the request failed; *body, when
 * body is not NULL, gets the response body or "(request failed: ...)"
 * (malloc'd either way). */
int h_http(const char *sock, const char *method, const char *path, const char *json, int timeout_ms,
	   char **body);

/* A fork daemon started as build/bin/forkd --api-socket DIR/forkd.sock
 * --store DIR/store --run-dir DIR/run [extra...], stdout and stderr in
 * DIR/forkd.out and DIR/forkd.err. */
struct h_forkd {
	struct h_proc proc;
	char *dir, *sock, *store, *run;
	bool own_dir; /* dir made by h_forkd_start: h_forkd_stop removes it */
};
/* Starts forkd in dir (NULL: a fresh h_tmpdir()) with extra arguments
 * (NULL-terminated, may be NULL). forkd gets SIGKILL when the calling thread
 * ends (PR_SET_PDEATHSIG). Waits up to timeout_ms for GET /v1/ping to answer
 * 200. Returns 0, or -1 when forkd could not be spawned, exited or did not
 * answer (h_forkd_log() says why); call h_forkd_stop() in either case. */
int h_forkd_start(struct h_forkd *d, const char *dir, const char *const extra[], int timeout_ms);
/* forkd's stderr so far (malloc'd, "" if none). */
char *h_forkd_log(const struct h_forkd *d);
/* Stops forkd: SIGTERM, up to timeout_ms for it to exit, then SIGKILL;
 * reaps it, removes its directory if h_forkd_start made it, frees the paths.
 * Returns its status (as h_wait) when it exited after SIGTERM (or earlier),
 * -1 when it had to be killed. A zeroed d is a no-op (-1). */
int h_forkd_stop(struct h_forkd *d, int timeout_ms);

/* One forkd shared by all the tests of a binary. Call h_forkd_shared_begin()
 * from ReportHook(PRE_ALL) and h_forkd_shared_end() from ReportHook(POST_ALL):
 * they run in Criterion's runner process, the tests in processes of their
 * own, which find the daemon with h_forkd_shared_dir() (through the
 * environment). The daemon and its fresh h_tmpdir() belong to a small
 * supervisor process (Criterion's runner misbehaves when a child it did not
 * spawn dies during the run) that stops forkd with SIGTERM and removes the
 * directory at h_forkd_shared_end() or as soon as the runner dies. */
void h_forkd_shared_begin(const char *const extra[]);
void h_forkd_shared_end(void);
/* The shared forkd's directory (forkd.sock, store, run, forkd.err), or NULL
 * with *why (may be NULL) saying why there is none. */
const char *h_forkd_shared_dir(const char **why);

#endif
