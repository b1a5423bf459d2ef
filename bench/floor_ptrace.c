/* bench/floor_ptrace.c - forkbench floor on the process platform: the bare
 * ptrace cost of the work a process-platform fork and a guest system call
 * do, with raw system calls and no forkvm code, so that those figures can
 * be read as ratios to this machine's floor.
 *
 * One cold sample, each step timed on its own:
 *   process       fork() of this (small) process; the child maps a sparse
 *                 file of --memory bytes MAP_PRIVATE (the
 *                 copy-on-write image forkvm restores a clone from), asks
 *                 to be traced and stops itself; until the tracer sees the
 *                 stop
 *   set state     PTRACE_SETOPTIONS (EXITKILL, TRACESYSGOOD), GETREGS and
 *                 SETREGS: a clone's registers
 *   first trap    PTRACE_SYSEMU until the child's first system call stops
 *                 before the kernel runs it
 * then, on that child:
 *   round trip    one guest system call served: GETREGS, set rax, SETREGS,
 *                 PTRACE_SYSEMU, until the next system call stops (what the
 *                 issue measured at 15-20 us)
 * The child runs bound to the tracer's CPU, as forkvm's stub threads do.
 * The child is killed and reaped outside the timed part; its cost is shown
 * apart. "precreated": set state + first trap on children made ahead (a
 * warm pool's floor). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/util.h"

#define PF_BATCH 16

static int pf_fail(const char *what)
{
	fprintf(stderr, "forkbench floor: %s: %s\n", what, strerror(errno));
	return -1;
}

/* The child: the image mapped copy-on-write, traced, stopped; then system
 * calls forever (each stops in the tracer and is never run). */
__attribute__((noreturn)) static void pf_child(int mem_fd, uint64_t size)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Where the kernel likes: a fixed address could fall in a sanitizer's
	 * shadow (the SAN build); the cost does not depend on it. */
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, mem_fd, 0);
	if (p == MAP_FAILED || ptrace(PTRACE_TRACEME, 0, 0, 0) < 0)
		_exit(126);
	raise(SIGSTOP);
	for (;;)
		syscall(SYS_getppid);
}

/* Starts a child and waits for its stop. Returns its pid or -1. */
static pid_t pf_spawn(int mem_fd, uint64_t size)
{
	int st;
	pid_t pid = fork();
	if (pid < 0)
		return pf_fail("fork");
	if (pid == 0)
		pf_child(mem_fd, size);
	if (waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGSTOP) {
		fprintf(stderr, "forkbench floor: the traced child did not stop (status 0x%x)\n", st);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	return pid;
}

static int pf_set_state(pid_t pid)
{
	struct user_regs_struct r;
	if (ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD) < 0 ||
	    ptrace(PTRACE_GETREGS, pid, 0, &r) < 0 || ptrace(PTRACE_SETREGS, pid, 0, &r) < 0)
		return pf_fail("ptrace set state");
	return 0;
}

/* Keeps the child on the tracer's CPU, as forkvm's process platform does
 * (a wake-up across CPUs costs more than the round trip). */
static void pf_bind(pid_t pid)
{
	static __thread int bound = -1;
	static __thread pid_t bound_pid;
	int cpu = sched_getcpu();
	if (cpu < 0 || (cpu == bound && pid == bound_pid))
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(pid, sizeof(set), &set);
	bound = cpu;
	bound_pid = pid;
}

/* PTRACE_SYSEMU until the next system call stop; checks it is getppid. */
static int pf_to_syscall(pid_t pid)
{
	int st;
	pf_bind(pid);
	if (ptrace(PTRACE_SYSEMU, pid, 0, 0) < 0)
		return pf_fail("PTRACE_SYSEMU");
	if (waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st) || WSTOPSIG(st) != (SIGTRAP | 0x80)) {
		fprintf(stderr, "forkbench floor: expected a system call stop, got status 0x%x\n", st);
		return -1;
	}
	return 0;
}

/* One served system call: registers read, result set, resumed to the next. */
static int pf_round_trip(pid_t pid)
{
	struct user_regs_struct r;
	if (ptrace(PTRACE_GETREGS, pid, 0, &r) < 0)
		return pf_fail("PTRACE_GETREGS");
	if (r.orig_rax != SYS_getppid) {
		fprintf(stderr, "forkbench floor: the child made system call %llu, not getppid\n",
			(unsigned long long)r.orig_rax);
		return -1;
	}
	r.rax = (unsigned long long)getpid();
	if (ptrace(PTRACE_SETREGS, pid, 0, &r) < 0)
		return pf_fail("PTRACE_SETREGS");
	return pf_to_syscall(pid);
}

static void pf_kill(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static int pf_mem_file(uint64_t size)
{
	const char *tmp = getenv("TMPDIR");
	char path[4200];
	snprintf(path, sizeof(path), "%s/forkbench-floor-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		return pf_fail(path);
	unlink(path);
	if (ftruncate(fd, (off_t)size) < 0 || pwrite(fd, "floor", 5, 0) != 5) {
		close(fd);
		return pf_fail("the memory file");
	}
	return fd;
}

int ptrace_floor_round_trips(uint64_t *ns, int n, int warmup)
{
	int fd = pf_mem_file(1 << 20), rc = 0;
	if (fd < 0)
		return -1;
	pid_t pid = pf_spawn(fd, 1 << 20);
	close(fd);
	if (pid < 0 || pf_set_state(pid) < 0 || pf_to_syscall(pid) < 0) {
		if (pid > 0)
			pf_kill(pid);
		return -1;
	}
	for (int i = 0; i < warmup + n && rc == 0; i++) {
		uint64_t t0 = time_mono_ns();
		rc = pf_round_trip(pid);
		uint64_t t1 = time_mono_ns();
		if (i >= warmup)
			ns[i - warmup] = t1 - t0;
	}
	pf_kill(pid);
	return rc;
}

enum { PF_PROCESS, PF_STATE, PF_TRAP, PF_TOTAL, PF_NR };
static const char *const pf_names[PF_NR] = {
	"floor: process (fork+map+stop)", "floor: set state", "floor: first trapped call",
	"floor: total",
};

int cmd_floor_ptrace(const struct opts *o)
{
	const char *memory = o->memory ? o->memory : "256M";
	int n = o->samples, total = o->samples + o->warmup, rc = -1, trips = 1000;
	uint64_t size, *ns[PF_NR] = { NULL }, *kill_ns = NULL, *pre_state = NULL, *pre_trap = NULL,
		       *pre_sum = NULL, *rt = NULL;
	int fd = -1;

	if (parse_size(memory, &size) < 0 || size < 4096 || size % 4096 || n < 1 || o->warmup < 0) {
		fprintf(stderr, "forkbench floor: needs --memory >= 4K (whole pages), -n >= 1\n");
		return 2;
	}
	for (int s = 0; s < PF_NR; s++)
		if (!(ns[s] = calloc((size_t)n, sizeof(uint64_t))))
			goto out;
	kill_ns = calloc((size_t)n, sizeof(uint64_t));
	pre_state = calloc((size_t)n, sizeof(uint64_t));
	pre_trap = calloc((size_t)n, sizeof(uint64_t));
	pre_sum = calloc((size_t)n, sizeof(uint64_t));
	rt = calloc((size_t)trips, sizeof(uint64_t));
	if (!kill_ns || !pre_state || !pre_trap || !pre_sum || !rt || (fd = pf_mem_file(size)) < 0)
		goto out;

	for (int i = 0; i < total; i++) {
		uint64_t t0 = time_mono_ns();
		pid_t pid = pf_spawn(fd, size);
		uint64_t t1 = time_mono_ns();
		if (pid < 0)
			goto out;
		int r = pf_set_state(pid);
		uint64_t t2 = time_mono_ns();
		if (r == 0)
			r = pf_to_syscall(pid);
		uint64_t t3 = time_mono_ns();
		pf_kill(pid);
		uint64_t t4 = time_mono_ns();
		if (r < 0)
			goto out;
		if (i >= o->warmup) {
			int k = i - o->warmup;
			ns[PF_PROCESS][k] = t1 - t0;
			ns[PF_STATE][k] = t2 - t1;
			ns[PF_TRAP][k] = t3 - t2;
			ns[PF_TOTAL][k] = t3 - t0;
			kill_ns[k] = t4 - t3;
		}
	}
	for (int b = 0; b < total; b += PF_BATCH) {
		pid_t kids[PF_BATCH];
		int built = 0, r = 0;
		for (; built < PF_BATCH && b + built < total; built++)
			if ((kids[built] = pf_spawn(fd, size)) < 0)
				break;
		for (int j = 0; j < built; j++) {
			int k = b + j - o->warmup;
			uint64_t t0 = time_mono_ns();
			if (r == 0)
				r = pf_set_state(kids[j]);
			uint64_t t1 = time_mono_ns();
			if (r == 0)
				r = pf_to_syscall(kids[j]);
			uint64_t t2 = time_mono_ns();
			if (k >= 0 && r == 0) {
				pre_state[k] = t1 - t0;
				pre_trap[k] = t2 - t1;
				pre_sum[k] = t2 - t0;
			}
		}
		for (int j = 0; j < built; j++)
			pf_kill(kids[j]);
		if (r < 0 || (built < PF_BATCH && b + built < total))
			goto out;
	}
	if (ptrace_floor_round_trips(rt, trips, 100) < 0)
		goto out;

	note(o, "floor (process platform): raw ptrace, no forkvm code; a fork()ed child maps %s "
		"of a sparse file MAP_PRIVATE|MAP_NORESERVE (copy-on-write, as a clone's stub "
		"does), PTRACE_TRACEME, stops; the tracer sets its registers and runs it with "
		"PTRACE_SYSEMU to its first system call",
	     memory);
	note(o, "floor round trip: GETREGS, rax set, SETREGS, PTRACE_SYSEMU to the next call "
		"(a served guest system call); precreated: children made ahead in batches of %d",
	     PF_BATCH);
	for (int s = 0; s < PF_NR; s++)
		report(pf_names[s], ns[s], n, o);
	report("floor: kill + reap (not in total)", kill_ns, n, o);
	report("floor precreated: set state", pre_state, n, o);
	report("floor precreated: first trap", pre_trap, n, o);
	report("floor precreated: total", pre_sum, n, o);
	report("floor: system call round trip", rt, trips, o);
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "forkbench floor: failed\n");
	if (fd >= 0)
		close(fd);
	for (int s = 0; s < PF_NR; s++)
		free(ns[s]);
	free(kill_ns), free(pre_state), free(pre_trap), free(pre_sum), free(rt);
	return rc ? 1 : 0;
}
