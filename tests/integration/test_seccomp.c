/* tests/integration/test_seccomp.c - the seccomp filters: a forbidden
 * system call from a filtered thread (the VMM thread or a vCPU thread) ends
 * the whole process with SIGSYS, log mode lets it through, threads still
 * start, and the real forkvm, forkd and clone processes run with their
 * filters stacked as docs/security.md says. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/lib/harness.h"
#include "vmm/vmm.h"

/* Runs fn in a forked child; returns its wait status. */
static int in_child(void (*fn)(enum sc_mode), enum sc_mode mode)
{
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		fn(mode);
		_exit(0);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return st;
}

/* The platform whose filters are tested: this pass's. */
static enum vm_platform platform(void)
{
	enum vm_platform p = VM_PLATFORM_KVM;
	if (vm_platform_parse(h_platform(), &p) < 0)
		_exit(9);
	return p;
}

static void apply_vmm(enum sc_mode mode)
{
	struct vmm_seccomp *s;
	if (vmm_seccomp_new(mode, platform(), &s) < 0 || vmm_seccomp_apply(s) < 0)
		_exit(10);
	/* allowed: still alive */
	if (getpid() <= 0 || write(-1, "", 0) != -1)
		_exit(11);
}

static void vmm_thread_opens_inet_socket(enum sc_mode mode)
{
	apply_vmm(mode);
	int fd = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
	_exit(fd >= 0 ? 0 : 12);
}

Test(seccomp, forbidden_call_on_the_vmm_thread_kills_with_sigsys)
{
	int st = in_child(vmm_thread_opens_inet_socket, SC_MODE_ON);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS, "status 0x%x: expected SIGSYS", st);
}

Test(seccomp, log_mode_allows_the_call)
{
	int st = in_child(vmm_thread_opens_inet_socket, SC_MODE_LOG);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x: expected exit 0", st);
	st = in_child(vmm_thread_opens_inet_socket, SC_MODE_OFF);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x: expected exit 0", st);
}

static void vmm_thread_forks(enum sc_mode mode)
{
	apply_vmm(mode);
	pid_t p = fork();
	if (p == 0)
		_exit(0);
	_exit(13);
}

static void vmm_thread_execs(enum sc_mode mode)
{
	apply_vmm(mode);
	execl("/bin/true", "true", (char *)NULL);
	_exit(13);
}

Test(seccomp, the_vmm_cannot_fork_or_exec)
{
	int st = in_child(vmm_thread_execs, SC_MODE_ON);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS, "exec: status 0x%x", st);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
	/* LeakSanitizer clones a task to stop the world: sanitizer builds
	 * allow clone (common/seccomp.c). */
	cr_log_info("sanitizer build: fork is allowed for LeakSanitizer; not checked");
	(void)vmm_thread_forks;
#else
	st = in_child(vmm_thread_forks, SC_MODE_ON);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS, "fork: status 0x%x", st);
#endif
}

static void *vcpu_like(void *arg)
{
	const struct vmm_seccomp *s = arg;
	if (vmm_seccomp_apply_vcpu(s) < 0)
		_exit(20);
	/* allowed on a vCPU thread */
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		_exit(21);
	/* forbidden there (allowed on the VMM thread): a new socket */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	_exit(fd >= 0 ? 0 : 22);
	return NULL;
}

static void vcpu_thread_opens_a_file(enum sc_mode mode)
{
	struct vmm_seccomp *s;
	pthread_t t;
	if (vmm_seccomp_new(mode, platform(), &s) < 0 || vmm_seccomp_apply(s) < 0)
		_exit(10);
	/* pthread_create works under the filter (clone3 fails with ENOSYS,
	 * glibc falls back to clone with CLONE_THREAD) */
	if (pthread_create(&t, NULL, vcpu_like, s) != 0)
		_exit(14);
	pthread_join(t, NULL);
	_exit(15);
}

Test(seccomp, forbidden_call_on_a_vcpu_thread_kills_the_process)
{
	int st = in_child(vcpu_thread_opens_a_file, SC_MODE_ON);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS, "status 0x%x: expected SIGSYS", st);
	st = in_child(vcpu_thread_opens_a_file, SC_MODE_LOG);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "log mode: status 0x%x", st);
}

Test(seccomp, modes_parse)
{
	enum sc_mode m;
	cr_assert_eq(sc_mode_parse("on", &m), 0);
	cr_assert_eq(m, SC_MODE_ON);
	cr_assert_eq(sc_mode_parse("log", &m), 0);
	cr_assert_eq(m, SC_MODE_LOG);
	cr_assert_eq(sc_mode_parse("off", &m), 0);
	cr_assert_eq(m, SC_MODE_OFF);
	cr_assert_eq(sc_mode_parse("yes", &m), -EINVAL);
	cr_assert_eq(sc_mode_parse("", &m), -EINVAL);
}

/* ------------------------------------------------------------ real processes */

/* "Seccomp_filters:" of each thread of pid: counts[i] for i filters. */
static int thread_filters(pid_t pid, int counts[8])
{
	char path[64];
	memset(counts, 0, 8 * sizeof(int));
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[300];
		snprintf(p, sizeof(p), "/proc/%d/task/%s/status", (int)pid, e->d_name);
		char *s = h_read_file(p);
		const char *f = s ? strstr(s, "Seccomp_filters:") : NULL;
		if (f) {
			int k = atoi(f + strlen("Seccomp_filters:"));
			counts[k < 8 ? k : 7]++;
			n++;
		}
		free(s);
	}
	closedir(d);
	return n;
}

Test(seccomp, forkvm_runs_filtered_and_vcpu_threads_add_theirs, .timeout = 60)
{
	H_NEED_GUEST();
	struct h_vm vm;
	int c[8];
	cr_assert_eq(h_vm_start(&vm, NULL, NULL), 0);
	cr_assert(h_wait_path(vm.agent, 10000));
	/* wait for the agent: its vCPU thread is in the guest */
	char *out = NULL;
	const char *args[] = { NULL, NULL, "eval", "6*7", NULL };
	char *fk = h_bin("forkctl");
	char agent_arg[512];
	snprintf(agent_arg, sizeof(agent_arg), "--agent=%s", vm.agent);
	args[0] = fk;
	args[1] = agent_arg;
	cr_assert_eq(h_run(vm.dir, args, 20000, &out, NULL), 0);
	cr_assert(strstr(out, "42"));
	free(out);
	cr_assert_gt(thread_filters(vm.proc.pid, c), 1);
	cr_assert_eq(c[0], 0, "a thread of forkvm runs without a filter");
	cr_assert_geq(c[1], 1, "the VMM thread has the VMM filter");
	cr_assert_geq(c[2], 1, "a vCPU thread has the VMM and vCPU filters");
	h_vm_stop(&vm);

	const char *off[] = { "--seccomp=off", NULL };
	cr_assert_eq(h_vm_start(&vm, NULL, off), 0);
	cr_assert(h_wait_path(vm.agent, 10000));
	snprintf(agent_arg, sizeof(agent_arg), "--agent=%s", vm.agent);
	cr_assert_eq(h_run(vm.dir, args, 20000, &out, NULL), 0);
	free(out);
	cr_assert_gt(thread_filters(vm.proc.pid, c), 1);
	cr_assert_eq(c[1] + c[2] + c[3], 0, "--seccomp=off installs nothing");
	h_vm_stop(&vm);
	free(fk);
}

Test(seccomp, forkd_and_its_clones_run_filtered, .timeout = 120)
{
	H_NEED_GUEST();
	struct h_forkd d;
	int c[8];
	cr_assert_eq(h_forkd_start(&d, NULL, NULL, 10000), 0, "%s", h_forkd_log(&d));
	char *agent = h_payload("agent");
	char body[1024];
	snprintf(body, sizeof(body),
		 "{\"name\":\"sc\",\"boot\":{\"memory\":{\"size\":%d},\"payload\":{\"kernel\":\"%s\"}}}",
		 128 << 20, agent);
	char *resp = NULL;
	int st = h_http(d.sock, "POST", "/v1/templates", body, 60000, &resp);
	cr_assert_eq(st, 201, "%d %s", st, resp);
	free(resp);
	st = h_http(d.sock, "POST", "/v1/templates/sc/clones", "{}", 30000, &resp);
	cr_assert_eq(st, 201, "%d %s", st, resp);
	json_t *j = json_loads(resp, 0, NULL);
	cr_assert(j);
	json_t *cl = json_is_array(json_object_get(j, "clones")) ? json_array_get(json_object_get(j, "clones"), 0) : j;
	pid_t clone_pid = (pid_t)json_integer_value(json_object_get(cl, "pid"));
	cr_assert_gt(clone_pid, 0, "%s", resp);
	free(resp);

	cr_assert_eq(thread_filters(d.proc.pid, c), 1, "forkd is single-threaded");
	cr_assert_eq(c[1], 1, "forkd has its filter");
	/* the clone: forkd's filter, the VMM's, and on its vCPU thread the vCPU's */
	/* the vCPU thread installs its filter as it starts, just after the
	 * clone reports it runs */
	for (int i = 0; i < 200; i++) {
		cr_assert_gt(thread_filters(clone_pid, c), 1);
		if (c[3])
			break;
		h_sleep_ms(10);
	}
	cr_assert_eq(c[0] + c[1], 0, "a clone thread runs with less than forkd's and the VMM's filters");
	cr_assert_geq(c[2], 1);
	cr_assert_geq(c[3], 1, "the clone's vCPU thread has the vCPU filter");
	json_decref(j);
	free(agent);
	h_forkd_stop(&d, 10000);
}
