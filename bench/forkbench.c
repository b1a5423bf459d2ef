/* bench/forkbench.c - forkvm's benchmark. Subcommands:
 *   boot      cold start of forkvm to the agent's first answer, and idle RSS
 *   eval      agent round trip of an eval request
 *   snapshot  snapshot to a directory; restore: from a directory
 *   store     the snapshot store (bench/store_bench.c)
 * Figures are printed, never asserted: these machines are shared and noisy.
 * Medians and percentiles of N samples after warm-ups that are excluded. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/agent_client.h"
#include "common/http.h"
#include "common/util.h"
#include "bench/bench.h"
#include "vmm/vmm.h"

/* Starts forkvm with the agent on sock, and (when not NULL) an API socket
 * and a store for store:// snapshots; returns its pid. */
static pid_t spawn_vm(const struct opts *o, const char *api, const char *sock, const char *store)
{
	char agent_opt[300], cpus[64], mem[64];
	const char *argv[32];
	int n = 0;
	pid_t pid;

	snprintf(agent_opt, sizeof(agent_opt), "socket=%s", sock);
	snprintf(cpus, sizeof(cpus), "boot=%s", o->cpus);
	snprintf(mem, sizeof(mem), "size=%s", o->memory);
	argv[n++] = o->forkvm;
	if (api) {
		argv[n++] = "--api-socket";
		argv[n++] = api;
	}
	if (store) {
		argv[n++] = "--store";
		argv[n++] = store;
	}
	const char *rest[] = { "--kernel", o->agent, "--agent", agent_opt, "--cpus", cpus,
			       "--memory", mem, "--serial", "off", NULL };
	const char *lx[] = { "--kernel", o->linux_kernel, "--initramfs", o->linux_initramfs,
			     "--cmdline", "console=ttyS0 panic=-1 quiet forkvm.test=agent",
			     "--vsock", "cid=3", "--agent", agent_opt, "--cpus", cpus, "--memory", mem,
			     "--serial", "off", NULL };
	const char *const *more = o->linux_guest ? lx : rest;
	for (int i = 0; more[i]; i++)
		argv[n++] = more[i];
	argv[n] = NULL;
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		execv(o->forkvm, (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	return pid;
}

/* Connects as soon as the socket accepts (polling every 50 us). */
int connect_fast(const char *sock, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t end = time_mono_ns() + (uint64_t)timeout_ms * 1000000ULL;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	while (time_mono_ns() < end) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		usleep(50);
	}
	return -ETIMEDOUT;
}

long rss_kib(pid_t pid, const char *field)
{
	char path[64], line[256];
	long v = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, strlen(field)))
			v = strtol(line + strlen(field), NULL, 10);
	fclose(f);
	return v;
}

void stop_vm(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

static int cmd_boot(const struct opts *o)
{
	char dir[] = "/tmp/forkbench-XXXXXX", sock[128];
	int total = o->samples + o->warmup;
	uint64_t *ns = calloc((size_t)total, sizeof(*ns));
	long rss_sum = 0, rss_n = 0;

	if (!ns || !mkdtemp(dir))
		return 1;
	snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
	for (int i = 0; i < total; i++) {
		uint64_t t0 = time_mono_ns();
		pid_t pid = spawn_vm(o, NULL, sock, NULL);
		int fd = connect_fast(sock, 30000);
		struct agent_client *c;
		json_t *ev = NULL;

		if (fd < 0 || agent_client_from_fd(fd, &c) < 0 ||
		    agent_client_wait_ready(c, 30000, &ev) < 0) {
			fprintf(stderr, "forkbench: boot %d: the agent did not become ready\n", i);
			stop_vm(pid);
			return 1;
		}
		uint64_t t1 = time_mono_ns();
		json_decref(ev);
		if (i >= o->warmup) {
			ns[i - o->warmup] = t1 - t0;
			/* Idle: give the guest a moment to settle, then read RSS. */
			usleep(100000);
			long r = rss_kib(pid, "VmRSS:");
			if (r > 0) {
				rss_sum += r;
				rss_n++;
			}
		}
		agent_client_close(c);
		stop_vm(pid);
		unlink(sock);
	}
	report("boot: start to agent ready", ns, o->samples, o);
	if (rss_n)
		figure(o, "idle VMM RSS, agent ready (mean)", (double)(rss_sum / rss_n), "KiB");
	rmdir(dir);
	free(ns);
	return 0;
}

static int cmd_eval(const struct opts *o)
{
	char dir[] = "/tmp/forkbench-XXXXXX", sock[128];
	uint64_t *ns = calloc((size_t)o->samples, sizeof(*ns));
	struct agent_client *c;
	json_t *r;
	int fd;

	if (!ns || !mkdtemp(dir))
		return 1;
	snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
	pid_t pid = spawn_vm(o, NULL, sock, NULL);
	fd = connect_fast(sock, 30000);
	if (fd < 0 || agent_client_from_fd(fd, &c) < 0) {
		fprintf(stderr, "forkbench: cannot reach the agent\n");
		stop_vm(pid);
		return 1;
	}
	for (int i = 0; i < o->warmup + o->samples; i++) {
		uint64_t t0 = time_mono_ns();
		if (agent_client_eval(c, o->code, 30000, &r) < 0 || !agent_client_reply_ok(r, NULL, NULL)) {
			fprintf(stderr, "forkbench: eval failed\n");
			stop_vm(pid);
			return 1;
		}
		uint64_t t1 = time_mono_ns();
		json_decref(r);
		if (i >= o->warmup)
			ns[i - o->warmup] = t1 - t0;
	}
	report("eval round trip", ns, o->samples, o);
	long rss = rss_kib(pid, "VmRSS:");
	{
		char what[64];
		snprintf(what, sizeof(what), "VMM RSS after %d evals", o->warmup + o->samples);
		figure(o, what, (double)rss, "KiB");
	}
	agent_client_close(c);
	stop_vm(pid);
	unlink(sock);
	rmdir(dir);
	free(ns);
	return 0;
}

/* ------------------------------------------------------------ syscall */

/* The guest's system call round trip: the sysbench payload reads the
 * monotonic clock with back-to-back system calls, each served by the VMM
 * (which reads the host clock while serving it), so consecutive readings
 * are one round trip apart. Beside it, the same run's floor for the
 * platform. */
int cmd_syscall(const struct opts *o)
{
	char dir[] = "/tmp/forkbench-XXXXXX", out[128], payload[4300], n_arg[32], mem[64];
	int n = o->samples, total = o->warmup + o->samples, st, got = 0;
	uint64_t *ns = calloc((size_t)n, sizeof(*ns)), *fl = calloc((size_t)n, sizeof(*fl));
	int rc = 1;

	if (!ns || !fl || !mkdtemp(dir))
		goto done;
	snprintf(out, sizeof(out), "%s/out", dir);
	snprintf(payload, sizeof(payload), "%s/sysbench", o->payloads);
	snprintf(n_arg, sizeof(n_arg), "%d", total);
	snprintf(mem, sizeof(mem), "size=%s", o->memory);
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || dup2(fd, 1) < 0)
			_exit(127);
		execl(o->forkvm, "forkvm", "--kernel", payload, "--cmdline", n_arg, "--memory", mem,
		      (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "forkbench syscall: forkvm running %s failed (status 0x%x)\n", payload,
			pid < 0 ? -1 : st);
		goto done;
	}
	FILE *f = fopen(out, "r");
	char line[128];
	for (int i = 0; f && fgets(line, sizeof(line), f);) {
		long long v;
		if (sscanf(line, "d %lld", &v) != 1)
			continue;
		if (i >= o->warmup && got < n)
			ns[got++] = v > 0 ? (uint64_t)v : 0;
		i++;
	}
	if (f)
		fclose(f);
	if (got != n) {
		fprintf(stderr, "forkbench syscall: %d round trips read, %d expected\n", got, n);
		goto done;
	}
	bool process = !strcmp(o->platform, "process");
	int frc = process ? ptrace_floor_round_trips(fl, n, o->warmup)
			  : kvm_floor_round_trips(o, fl, n, o->warmup);
	note(o, "guest: clock_gettime back to back (guest/payloads/sysbench), each served by the "
		"VMM; a round trip is the time between two readings");
	note(o, "floor, same run: %s",
	     process ? "a traced child's system call stop served with GETREGS, SETREGS and "
		       "PTRACE_SYSEMU (raw ptrace, no forkvm code)"
		     : "KVM_SET_REGS (back at the `syscall`) and KVM_RUN to the next exit at "
		       "the ring-0 `out` (raw ioctls, no forkvm code)");
	report("guest system call round trip", ns, n, o);
	if (frc == 0)
		report(process ? "floor: ptrace round trip" : "floor: KVM exit round trip", fl, n, o);
	else
		note(o, "floor: could not be measured (see stderr)");
	rc = 0;
done:
	unlink(out);
	rmdir(dir);
	free(ns);
	free(fl);
	return rc;
}

/* ------------------------------------------------------------ snapshot */

/* Bytes a directory tree takes on disk (du). */
static long long tree_kib(const char *dir)
{
	char cmd[400], buf[64] = "";
	long long kib = -1;
	snprintf(cmd, sizeof(cmd), "du -sk '%s' 2>/dev/null", dir);
	FILE *f = popen(cmd, "r");
	if (f && fgets(buf, sizeof(buf), f))
		kib = atoll(buf);
	if (f)
		pclose(f);
	return kib;
}

/* Store snapshots of the paused VM at api (started with --store store):
 * a full one into the empty store, then an incremental one of a VM
 * restored from it that dirtied --dirty MiB (at most what was touched). */
static int store_snapshots(const struct opts *o, const char *dir, const char *api, const char *store)
{
	char api2[300], sock2[300], src[64], what_buf[160];
	int status;
	char *reply = NULL;

	uint64_t t0 = time_mono_ns();
	if (api_put_body(api, "/api/v1/vm.snapshot", "{\"destination_url\": \"store://full\"}", &status,
			 &reply) < 0 || status != 200) {
		fprintf(stderr, "forkbench: snapshot to the store failed: %s\n", reply ? reply : "");
		free(reply);
		return -1;
	}
	uint64_t full_ns = time_mono_ns() - t0;
	free(reply);
	char objects[400];
	snprintf(objects, sizeof(objects), "%s/objects", store);
	long long full_kib = tree_kib(objects); /* not images/: materialized caches */
	note(o, "store snapshots: the full one goes into a new store (creating it is included), "
		"the incremental one is of a VM restored from it");
	snprintf(what_buf, sizeof(what_buf), "store snapshot %s, full", o->memory);
	figure(o, what_buf, full_ns / 1e6, "ms");
	figure(o, "  stored (zstd, zero chunks skipped)", (double)full_kib, "KiB");

	snprintf(api2, sizeof(api2), "%s/api2.sock", dir);
	snprintf(sock2, sizeof(sock2), "%s/agent2.sock", dir);
	snprintf(src, sizeof(src), "source_url=store://full");
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		char agent_opt[320];
		snprintf(agent_opt, sizeof(agent_opt), "socket=%s", sock2);
		execl(o->forkvm, o->forkvm, "--api-socket", api2, "--restore", src, "--store", store,
		      "--agent", agent_opt, (char *)NULL);
		_exit(127);
	}
	int rc = wait_paused(api2, 30000);
	if (rc == 0 && (api_put(api2, "/api/v1/vm.resume", NULL, &status) < 0 || status != 204))
		rc = -1;
	long dirty = o->touch_mb < o->dirty_mb ? o->touch_mb : o->dirty_mb;
	if (rc == 0 && dirty > 0) {
		struct agent_client *c = NULL;
		json_t *r = NULL;
		char code[256];
		int fd = connect_fast(sock2, 30000);
		snprintf(code, sizeof(code),
			 "for (var i = 0; i < %ld * 262144; i += 1024) ballast[i] ^= 0x5a5a; 0", dirty);
		if (fd < 0 || agent_client_from_fd(fd, &c) < 0 || agent_client_eval(c, code, 60000, &r) < 0 ||
		    !agent_client_reply_ok(r, NULL, NULL))
			rc = -1;
		json_decref(r);
		agent_client_close(c);
	}
	if (rc == 0 && (api_put(api2, "/api/v1/vm.pause", NULL, &status) < 0 || status != 204))
		rc = -1;
	if (rc == 0) {
		t0 = time_mono_ns();
		if (api_put_body(api2, "/api/v1/vm.snapshot", "{\"destination_url\": \"store://inc\"}",
				 &status, &reply) < 0 || status != 200)
			rc = -1;
		uint64_t inc_ns = time_mono_ns() - t0;
		free(reply);
		if (rc == 0) {
			snprintf(what_buf, sizeof(what_buf), "store snapshot %s, incremental, %ld MiB dirtied",
				 o->memory, dirty);
			figure(o, what_buf, inc_ns / 1e6, "ms");
			figure(o, "  stored bytes it added", (double)(tree_kib(objects) - full_kib), "KiB");
		}
	}
	stop_vm(pid);
	unlink(api2);
	unlink(sock2);
	if (rc < 0)
		fprintf(stderr, "forkbench: incremental store snapshot failed\n");
	return rc;
}

int api_put_body(const char *api, const char *path, const char *body, int *status, char **body_out)
{
	struct http_client_response r;
	int rc = http_client_request(api, "PUT", path, body ? "application/json" : NULL, body,
				     body ? strlen(body) : 0, 600000, &r);
	if (rc < 0)
		return rc;
	*status = r.status;
	if (r.status >= 300)
		fprintf(stderr, "forkbench: %s: HTTP %d %s\n", path, r.status, r.body);
	if (body_out)
		*body_out = strndup(r.body ? r.body : "", r.body_len);
	http_client_response_free(&r);
	return 0;
}

int api_put(const char *api, const char *path, const char *body, int *status)
{
	return api_put_body(api, path, body, status, NULL);
}

/* Fills touch_mb MiB of guest memory with non-zero data. */
static int touch_memory(struct agent_client *c, long mb)
{
	char code[512];
	json_t *r;

	if (mb <= 0)
		return 0;
	snprintf(code, sizeof(code),
		 "var ballast = new Uint32Array(%ld * 262144);"
		 "for (var i = 0; i < ballast.length; i += 1024) ballast[i] = i + 1; ballast.length",
		 mb);
	if (agent_client_eval(c, code, 600000, &r) < 0 || !agent_client_reply_ok(r, NULL, NULL))
		return -1;
	json_decref(r);
	return 0;
}

static const char *const snap_files[] = { "config.json", "state.json", "memory-ranges",
					  "snapshot.json" };

static long dir_blocks_kib(const char *dir)
{
	char path[600];
	struct stat st;
	long kib = 0;
	for (size_t i = 0; i < sizeof(snap_files) / sizeof(snap_files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, snap_files[i]);
		if (stat(path, &st) == 0)
			kib += (long)(st.st_blocks / 2);
	}
	return kib;
}

static void rm_snapshot(const char *dir)
{
	char path[600];
	for (size_t i = 0; i < sizeof(snap_files) / sizeof(snap_files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, snap_files[i]);
		unlink(path);
	}
	rmdir(dir);
}

/* Boots an agent VM, waits until it answers, fills memory, pauses, and
 * takes `samples` snapshots (times in ns[], sizes in kib[]). */
/* ready_ns (may be NULL): spawn to the agent's first answer. */
static int make_snapshots(const struct opts *o, const char *dir, int samples, uint64_t *ns,
			  long *kib, pid_t *vm_pid, uint64_t *ready_ns)
{
	char api[256], sock[256], snap[256], body[512];
	struct agent_client *c;
	json_t *r;
	int status;

	snprintf(api, sizeof(api), "%s/api.sock", dir);
	snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
	char store[300];
	snprintf(store, sizeof(store), "%s/store", dir);
	uint64_t t_spawn = time_mono_ns();
	pid_t pid = spawn_vm(o, api, sock, store);
	int fd = connect_fast(sock, 30000);
	/* a Linux guest boots a kernel before its agent answers */
	if (fd < 0 || agent_client_from_fd(fd, &c) < 0 ||
	    agent_client_ping(c, o->linux_guest ? 300000 : 30000, &r) < 0) {
		fprintf(stderr, "forkbench: cannot reach the agent\n");
		stop_vm(pid);
		return -1;
	}
	if (ready_ns)
		*ready_ns = time_mono_ns() - t_spawn;
	json_decref(r);
	if (touch_memory(c, o->touch_mb) < 0) {
		fprintf(stderr, "forkbench: filling guest memory failed\n");
		stop_vm(pid);
		return -1;
	}
	agent_client_close(c);
	if (api_put(api, "/api/v1/vm.pause", NULL, &status) < 0 || status != 204) {
		stop_vm(pid);
		return -1;
	}
	for (int i = 0; i < samples; i++) {
		snprintf(snap, sizeof(snap), "%s/snap%d", dir, i);
		snprintf(body, sizeof(body), "{\"destination_url\": \"file://%s\"}", snap);
		uint64_t t0 = time_mono_ns();
		if (api_put(api, "/api/v1/vm.snapshot", body, &status) < 0 || status != 204) {
			stop_vm(pid);
			return -1;
		}
		ns[i] = time_mono_ns() - t0;
		kib[i] = dir_blocks_kib(snap);
	}
	*vm_pid = pid;
	return 0;
}

static void rm_dir(const char *dir, const char *const names[], size_t n)
{
	char path[600];
	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
}

static int cmd_snapshot(const struct opts *o)
{
	char dir[] = "/tmp/forkbench-XXXXXX", snap[256];
	uint64_t *ns = calloc((size_t)o->samples, sizeof(*ns));
	long *kib = calloc((size_t)o->samples, sizeof(*kib));
	pid_t pid;

	if (!ns || !kib || !mkdtemp(dir))
		return 1;
	if (make_snapshots(o, dir, o->samples, ns, kib, &pid, NULL) < 0)
		return 1;
	char what[96], api[300], store[300];
	snprintf(what, sizeof(what), "snapshot %s, %ld MiB used", o->memory, o->touch_mb);
	report(what, ns, o->samples, o);
	figure(o, "snapshot size on disk (memory-ranges is sparse)", (double)kib[0], "KiB");
	snprintf(api, sizeof(api), "%s/api.sock", dir);
	snprintf(store, sizeof(store), "%s/store", dir);
	int src = store_snapshots(o, dir, api, store);
	stop_vm(pid);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store);
	if (system(cmd) != 0)
		fprintf(stderr, "forkbench: cannot remove %s\n", store);
	for (int i = 0; i < o->samples; i++) {
		snprintf(snap, sizeof(snap), "%s/snap%d", dir, i);
		rm_snapshot(snap);
	}
	static const char *const socks[] = { "api.sock", "agent.sock" };
	rm_dir(dir, socks, 2);
	free(ns);
	free(kib);
	return src < 0 ? 1 : 0;
}

/* Waits until the API answers vm.info: forkvm serves its API only once
 * the restore is done, so the first answer means "paused, ready". */
int wait_paused(const char *api, int timeout_ms)
{
	uint64_t end = time_mono_ns() + (uint64_t)timeout_ms * 1000000ULL;
	while (time_mono_ns() < end) {
		struct http_client_response r;
		if (http_client_request(api, "GET", "/api/v1/vm.info", NULL, NULL, 0, 10000, &r) == 0) {
			bool paused = r.status == 200 && strstr(r.body, "\"Paused\"");
			http_client_response_free(&r);
			return paused ? 0 : -1;
		}
		usleep(50);
	}
	return -1;
}

/* Restores of one snapshot directory: start to paused, resume to first
 * answer. linux: the Linux test guest, with its boot to agent ready and
 * the snapshot's time and size printed first. */
static int restore_bench(const struct opts *o, bool linux)
{
	char dir[] = "/tmp/forkbench-XXXXXX", api[256], sock[256], snap[256], src[300];
	int total = o->samples + o->warmup;
	uint64_t *t_restore = calloc((size_t)total, sizeof(uint64_t));
	uint64_t *t_answer = calloc((size_t)total, sizeof(uint64_t));
	uint64_t snap_ns, ready_ns = 0;
	long kib;
	pid_t pid;
	int status;

	if (!t_restore || !t_answer || !mkdtemp(dir))
		return 1;
	if (make_snapshots(o, dir, 1, &snap_ns, &kib, &pid, linux ? &ready_ns : NULL) < 0)
		return 1;
	stop_vm(pid);
	if (linux) {
		report("linux: boot to agent ready (spawn to first answer)", &ready_ns, 1, o);
		report("linux: snapshot to a directory (paused)", &snap_ns, 1, o);
		figure(o, "linux: snapshot size on disk", kib / 1024.0, "MiB");
	}
	snprintf(snap, sizeof(snap), "%s/snap0", dir);
	snprintf(api, sizeof(api), "%s/r.sock", dir);
	snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
	snprintf(src, sizeof(src), "source_url=file://%s", snap);
	for (int i = 0; i < total; i++) {
		uint64_t t0 = time_mono_ns();
		pid = fork();
		if (pid == 0) {
			int null = open("/dev/null", O_RDWR);
			dup2(null, 0);
			dup2(null, 1);
			execl(o->forkvm, o->forkvm, "--api-socket", api, "--restore", src, (char *)NULL);
			_exit(127);
		}
		if (wait_paused(api, 60000) < 0) {
			fprintf(stderr, "forkbench: the restored VM did not come up paused\n");
			stop_vm(pid);
			return 1;
		}
		uint64_t t1 = time_mono_ns();
		/* Connected before resume: the answer does not include a connect. */
		int fd = connect_fast(sock, 30000);
		struct agent_client *c;
		json_t *r;
		if (fd < 0 || agent_client_from_fd(fd, &c) < 0) {
			stop_vm(pid);
			return 1;
		}
		uint64_t t2 = time_mono_ns();
		if (api_put(api, "/api/v1/vm.resume", NULL, &status) < 0 || status != 204 ||
		    agent_client_ping(c, 30000, &r) < 0) {
			fprintf(stderr, "forkbench: no answer after resume\n");
			stop_vm(pid);
			return 1;
		}
		uint64_t t3 = time_mono_ns();
		json_decref(r);
		agent_client_close(c);
		stop_vm(pid);
		unlink(api);
		if (i >= o->warmup) {
			t_restore[i - o->warmup] = t1 - t0;
			t_answer[i - o->warmup] = t3 - t2;
		}
	}
	char what[96];
	snprintf(what, sizeof(what), "%srestore %s: start to paused", linux ? "linux: " : "",
		 o->memory);
	report(what, t_restore, o->samples, o);
	report(linux ? "linux: resume to first agent answer" : "resume to first agent answer",
	       t_answer, o->samples, o);
	rm_snapshot(snap);
	static const char *const socks[] = { "api.sock", "agent.sock" };
	rm_dir(dir, socks, 2);
	free(t_restore);
	free(t_answer);
	return 0;
}

static int cmd_restore(const struct opts *o)
{
	return restore_bench(o, false);
}

int linux_vm_bench(const struct opts *o)
{
	struct opts l = *o;

	l.linux_guest = true;
	return restore_bench(&l, true);
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: forkbench [OPTIONS] SUBCOMMAND [ARG]\n"
		"\n"
		"forkvm's benchmark. Prints a table that starts with the machine's description;\n"
		"medians and percentiles of N samples, warm-ups excluded and counted; figures\n"
		"are never asserted. Each subcommand has defaults that finish in about a minute.\n"
		"\n"
		"Subcommands:\n"
		"  boot          cold boot of forkvm to the agent's ready event; idle VMM RSS\n"
		"  syscall       a guest system call's round trip, beside the platform's floor\n"
		"                (raw KVM exit or raw ptrace stop) from the same run\n"
		"  eval          round trip of an agent eval request\n"
		"  snapshot      snapshot of a paused agent VM to a directory (time, size on\n"
		"                disk) and to a store, full and incremental (time, bytes)\n"
		"  restore       forkvm --restore of a directory: process start to paused;\n"
		"                resume to the agent's first answer\n"
		"  store         the snapshot store on a 4G template: ingest (live snapshot and\n"
		"                store put), materialize, verify, restore, incremental\n"
		"                snapshot, dedup of clone snapshots; per chunk size\n"
		"  fork          fork latency through forkd, cold and from a warm pool: to the\n"
		"                clone's resume, to its first entry into guest code, client\n"
		"                round trip;\n"
		"                where a cold fork's time goes\n"
		"  e2e           fork -> first agent answer (cold, warm pool); invoke round trip\n"
		"  fanout [K]    K concurrent forks (default 16), cold and from a pool of K\n"
		"  density [N]   idle clones until --budget of host memory is used (default\n"
		"                1G) or N run (default 1000): private memory and PSS per\n"
		"                clone, host memory, whether all still answer\n"
		"  boot-vs-fork  a template whose warm-up does real work: cold boot + warm-up\n"
		"                versus a fork of its snapshot; the speed-up\n"
		"  floor         the bare cost of a fork's work: raw KVM ioctls, or on the\n"
		"                process platform raw ptrace\n"
		"  linux [N]     the Linux test guest (KVM only; its agent on vsock): one\n"
		"                forkvm's boot to agent ready, snapshot to a directory,\n"
		"                restores to first answer; then through forkd: template\n"
		"                (boot, load, snapshot), fork to first answer cold and from a\n"
		"                warm pool, and N idle clones' memory (default 4)\n"
		"  peer          QEMU restoring a minimal Linux guest from a migration file\n"
		"                versus forkvm (its agent guest, and the same Linux guest\n"
		"                where KVM is not PVM), restore to first answer (docs/peer.md)\n"
		"\n"
		"Options:\n"
		"  --platform P     what runs the guests: kvm, process or auto (default:\n"
		"                   $FORKVM_PLATFORM, else auto: kvm where /dev/kvm works,\n"
		"                   else process); named in the header\n"
		"  -n N             samples (defaults: boot 5, eval 1000, syscall 10000,\n"
		"                   restore 10, fork and e2e 50, boot-vs-fork 5, peer 5,\n"
		"                   linux 10,\n"
		"                   store 5 restores)\n"
		"  --warmup N       excluded warm-up runs (default: boot 1, eval 20,\n"
		"                   syscall 100, fork 3)\n"
		"  --cpus N         vCPUs (default 1)\n"
		"  --memory SIZE    guest RAM (default 512M, linux too; store 4G; fork, e2e, fanout,\n"
		"                   density, boot-vs-fork, floor 256M)\n"
		"  --code JS        what eval evaluates (default '1+1')\n"
		"  --touch MIB      guest memory to fill first (default 0; store: 10%% of RAM)\n"
		"  --chunk-size LIST  store: chunk sizes to compare, e.g. 64K,256K,1M\n"
		"                   (default 256K)\n"
		"  --dirty MIB      store: memory dirtied before the incremental snapshot\n"
		"                   (default 16)\n"
		"  --clones N       store: clone snapshots for the dedup figure (default 10)\n"
		"  --accel A        peer: QEMU's accelerator: auto (default: KVM if it runs\n"
		"                   the guest, else TCG), kvm or tcg\n"
		"  --prepare        peer: only install or download what it needs into its\n"
		"                   cache ($FORKBENCH_CACHE), then exit; needs no /dev/kvm\n"
		"  --jail on|off    fork, e2e, fanout, density, boot-vs-fork: forkd's clone\n"
		"                   jail (default on, as forkd's)\n"
		"  --budget SIZE    density: stop once the clones use this much host memory\n"
		"                   (default 1G; 0: only the count stops)\n"
		"  --json           one JSON document: machine, results, notes\n"
		"  --csv            CSV: metric,unit,samples,min,p50,p90,p99,max,value\n"
		"  --plot FILE.svg  the latency distributions as CDFs, one per mode\n"
		"  -h, --help       this help\n"
		"  -V, --version    the version\n");
}

int main(int argc, char **argv)
{
	enum { O_WARMUP = 256, O_CPUS, O_MEMORY, O_CODE, O_JSON, O_TOUCH, O_CHUNK, O_DIRTY, O_CLONES,
	       O_FANOUT, O_DENSITY, O_CSV, O_PLOT, O_BUDGET, O_ACCEL, O_JAIL, O_PREPARE,
	       O_PLATFORM };
	static const struct option lo[] = {
		{ "warmup", required_argument, NULL, O_WARMUP }, { "cpus", required_argument, NULL, O_CPUS },
		{ "memory", required_argument, NULL, O_MEMORY }, { "code", required_argument, NULL, O_CODE },
		{ "json", no_argument, NULL, O_JSON },           { "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "touch", required_argument, NULL, O_TOUCH },
		{ "chunk-size", required_argument, NULL, O_CHUNK },
		{ "dirty", required_argument, NULL, O_DIRTY },
		{ "clones", required_argument, NULL, O_CLONES },
		{ "fanout", required_argument, NULL, O_FANOUT },
		{ "density", required_argument, NULL, O_DENSITY },
		{ "csv", no_argument, NULL, O_CSV },
		{ "plot", required_argument, NULL, O_PLOT },
		{ "budget", required_argument, NULL, O_BUDGET },
		{ "accel", required_argument, NULL, O_ACCEL },
		{ "jail", required_argument, NULL, O_JAIL },
		{ "prepare", no_argument, NULL, O_PREPARE },
		{ "platform", required_argument, NULL, O_PLATFORM },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .samples = -1, .warmup = -1, .cpus = "1", .code = "1+1", .touch_mb = -1,
			  .chunk_sizes = "256K", .dirty_mb = 16, .clones = 10, .fanout = 16,
			  .density = 1000, .budget = 1ULL << 30, .jail = "on" };
	static char forkvm[4200], agent[4200], payloads[4200], lx_kernel[4200], lx_initrd[4200];
	char self[4000], why[512] = "";
	int opt;
	uint64_t v;
	enum vm_platform platform = VM_PLATFORM_AUTO;
	const char *env_platform = getenv("FORKVM_PLATFORM");

	if (env_platform && *env_platform && vm_platform_parse(env_platform, &platform) < 0) {
		fprintf(stderr, "forkbench: FORKVM_PLATFORM must be kvm, process or auto, not '%s'\n",
			env_platform);
		return 2;
	}
	while ((opt = getopt_long(argc, argv, "n:hV", lo, NULL)) != -1) {
		switch (opt) {
		case 'n':
			o.samples = atoi(optarg);
			if (o.samples < 1 || o.samples > 1000000) {
				fprintf(stderr, "forkbench: -n must be 1..1000000\n");
				return 2;
			}
			break;
		case O_WARMUP:
			o.warmup = atoi(optarg);
			break;
		case O_CPUS:
			o.cpus = optarg;
			break;
		case O_MEMORY:
			o.memory = optarg;
			break;
		case O_CODE:
			o.code = optarg;
			break;
		case O_JSON:
			o.json = true;
			break;
		case O_CSV:
			o.csv = true;
			break;
		case O_PLOT:
			o.plot = optarg;
			break;
		case O_BUDGET:
			if (parse_size(optarg, &v) < 0) {
				fprintf(stderr, "forkbench: --budget takes a size such as 4G\n");
				return 2;
			}
			o.budget = v;
			break;
		case O_ACCEL:
			o.accel = optarg;
			break;
		case O_PREPARE:
			o.prepare = true;
			break;
		case O_PLATFORM:
			if (vm_platform_parse(optarg, &platform) < 0) {
				fprintf(stderr, "forkbench: --platform must be kvm, process or auto\n");
				return 2;
			}
			break;
		case O_JAIL:
			if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
				fprintf(stderr, "forkbench: --jail must be on or off\n");
				return 2;
			}
			o.jail = optarg;
			break;
		case O_TOUCH:
			o.touch_mb = atol(optarg);
			break;
		case O_CHUNK:
			o.chunk_sizes = optarg;
			break;
		case O_DIRTY:
			o.dirty_mb = atol(optarg);
			break;
		case O_CLONES:
			o.clones = atoi(optarg);
			break;
		case O_FANOUT:
			o.fanout = atoi(optarg);
			break;
		case O_DENSITY:
			o.density = atoi(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("forkbench %s\n", FORKVM_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc || argc - optind > 2) {
		usage(stderr);
		return 2;
	}
	if (o.json && o.csv) {
		fprintf(stderr, "forkbench: --json and --csv exclude each other\n");
		return 2;
	}
	const char *cmd = argv[optind], *arg = argc - optind == 2 ? argv[optind + 1] : NULL;
	if (arg && strcmp(cmd, "fanout") && strcmp(cmd, "density") && strcmp(cmd, "linux")) {
		fprintf(stderr, "forkbench: %s takes no argument\n", cmd);
		return 2;
	}
	if (arg && (parse_u64(arg, 1, 100000, &v) < 0)) {
		fprintf(stderr, "forkbench: %s: a count 1..100000, not '%s'\n", cmd, arg);
		return 2;
	}
	if (arg && !strcmp(cmd, "fanout"))
		o.fanout = (int)v;
	if (arg && (!strcmp(cmd, "density") || !strcmp(cmd, "linux")))
		o.density = (int)v;
	else if (!strcmp(cmd, "linux"))
		o.density = 4;
	/* forkvm and the agent next to this binary: build/bin, build/guest. */
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = '\0';
	char *slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	snprintf(forkvm, sizeof(forkvm), "%s/forkvm", self);
	snprintf(agent, sizeof(agent), "%s/../guest/agent", self);
	snprintf(payloads, sizeof(payloads), "%s/../guest/payloads", self);
	if (access(agent, R_OK) != 0) { /* build/san/bin */
		snprintf(agent, sizeof(agent), "%s/../../guest/agent", self);
		snprintf(payloads, sizeof(payloads), "%s/../../guest/payloads", self);
	}
	snprintf(lx_kernel, sizeof(lx_kernel), "%s/../linux/vmlinuz", self);
	snprintf(lx_initrd, sizeof(lx_initrd), "%s/../linux/initramfs.cpio.gz", self);
	if (access(lx_kernel, R_OK) != 0) { /* build/san/bin */
		snprintf(lx_kernel, sizeof(lx_kernel), "%s/../../linux/vmlinuz", self);
		snprintf(lx_initrd, sizeof(lx_initrd), "%s/../../linux/initramfs.cpio.gz", self);
	}
	o.linux_kernel = lx_kernel;
	o.linux_initramfs = lx_initrd;
	o.forkvm = forkvm;
	o.agent = agent;
	o.payloads = payloads;
	signal(SIGPIPE, SIG_IGN);

	int (*fn)(const struct opts *) = NULL;
	if (!strcmp(cmd, "store")) {
		uint64_t mem;
		o.memory = o.memory ? o.memory : "4G";
		if (parse_size(o.memory, &mem) < 0) {
			fprintf(stderr, "forkbench: bad --memory '%s'\n", o.memory);
			return 2;
		}
		o.touch_mb = o.touch_mb >= 0 ? o.touch_mb : (long)(mem / 10 >> 20);
		if (o.dirty_mb < 1 || o.dirty_mb > o.touch_mb / 3 || o.clones < 1 || o.clones > 1000) {
			fprintf(stderr, "forkbench: --dirty must be 1..touch/3 MiB, --clones 1..1000\n");
			return 2;
		}
		fn = cmd_store;
	} else if (!strcmp(cmd, "fork") || !strcmp(cmd, "e2e") || !strcmp(cmd, "fanout") ||
		   !strcmp(cmd, "density") || !strcmp(cmd, "boot-vs-fork") || !strcmp(cmd, "floor")) {
		o.memory = o.memory ? o.memory : "256M";
		o.samples = o.samples > 0 ? o.samples : !strcmp(cmd, "boot-vs-fork") ? 5 : 50;
		o.warmup = o.warmup >= 0 ? o.warmup : 3;
		if (o.fanout < 1 || o.fanout > 1024 || o.density < 1 || o.density > 100000) {
			fprintf(stderr, "forkbench: fanout must be 1..1024, density 1..100000\n");
			return 2;
		}
		fn = !strcmp(cmd, "fork")	  ? cmd_fork
		     : !strcmp(cmd, "e2e")	  ? cmd_e2e
		     : !strcmp(cmd, "fanout")	  ? cmd_fanout
		     : !strcmp(cmd, "density")	  ? cmd_density
		     : !strcmp(cmd, "boot-vs-fork") ? cmd_boot_vs_fork
		     : !strcmp(cmd, "floor")	  ? cmd_floor
						  : NULL;
	} else if (!strcmp(cmd, "linux")) {
		o.memory = o.memory ? o.memory : "512M";
		o.samples = o.samples > 0 ? o.samples : 10;
		o.warmup = o.warmup >= 0 ? o.warmup : 1;
		if (o.density < 1 || o.density > 1000) {
			fprintf(stderr, "forkbench: linux: 1..1000 idle clones\n");
			return 2;
		}
		fn = cmd_linux;
	} else if (!strcmp(cmd, "peer")) {
		o.memory = o.memory ? o.memory : "256M";
		o.samples = o.samples > 0 ? o.samples : 5;
		o.warmup = o.warmup >= 0 ? o.warmup : 1;
		fn = cmd_peer;
	} else {
		o.memory = o.memory ? o.memory : "512M";
		o.touch_mb = o.touch_mb >= 0 ? o.touch_mb : 0;
		if (!strcmp(cmd, "boot")) {
			o.samples = o.samples > 0 ? o.samples : 5;
			o.warmup = o.warmup >= 0 ? o.warmup : 1;
			fn = cmd_boot;
		} else if (!strcmp(cmd, "syscall")) {
			o.samples = o.samples > 0 ? o.samples : 10000;
			o.warmup = o.warmup >= 0 ? o.warmup : 100;
			if (o.samples + o.warmup > 1000000) {
				fprintf(stderr, "forkbench: syscall takes at most 1000000 round trips\n");
				return 2;
			}
			fn = cmd_syscall;
		} else if (!strcmp(cmd, "eval")) {
			o.samples = o.samples > 0 ? o.samples : 1000;
			o.warmup = o.warmup >= 0 ? o.warmup : 20;
			fn = cmd_eval;
		} else if (!strcmp(cmd, "snapshot")) {
			o.samples = o.samples > 0 ? o.samples : 5;
			fn = cmd_snapshot;
		} else if (!strcmp(cmd, "restore")) {
			o.samples = o.samples > 0 ? o.samples : 10;
			o.warmup = o.warmup >= 0 ? o.warmup : 1;
			fn = cmd_restore;
		}
	}
	if (!fn) {
		fprintf(stderr, "forkbench: unknown subcommand '%s'\n", cmd);
		usage(stderr);
		return 2;
	}
	/* The platform, resolved once, for this process (the floor) and every
	 * forkvm and forkd it starts (FORKVM_PLATFORM). peer --prepare needs
	 * none. */
	if (!o.prepare) {
		enum vm_platform got;
		if (vm_platform_resolve(platform, &got, why, sizeof(why)) < 0) {
			fprintf(stderr, "forkbench: platform %s cannot run here: %s\n",
				vm_platform_name(platform), why);
			return 1;
		}
		o.platform = vm_platform_name(got);
		setenv("FORKVM_PLATFORM", o.platform, 1);
	}
	if (fn == cmd_floor && o.platform && !strcmp(o.platform, "process"))
		fn = cmd_floor_ptrace;
	if (o.prepare) {
		if (fn != cmd_peer) {
			fprintf(stderr, "forkbench: --prepare is for peer only\n");
			return 2;
		}
		return cmd_peer(&o); /* no figures: no header, no document */
	}
	out_begin(&o, cmd);
	int rc = fn(&o);
	/* 77: skipped (peer without QEMU); 2: bad options found late. */
	return out_end(&o, rc == 0 || rc == 2 || rc == 77 ? rc : 1);
}
