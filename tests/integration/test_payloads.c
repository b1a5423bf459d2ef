/* tests/integration/test_payloads.c - C test payloads on real KVM:
 * threads on several vCPUs, the system call surface from inside a guest,
 * guest faults and exit statuses, bad command lines. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/lib/harness.h"

#define T_MS 60000

struct run {
	int status;
	char *out, *err;
	char *dir;
};

/* forkvm --kernel PAYLOAD --cmdline ARGS [extra...]; console on stdout. */
static struct run run_payload(const char *payload, const char *cmdline, const char *cpus)
{
	struct run r = { .dir = h_tmpdir() };
	char *bin = h_bin("forkvm"), *kernel = h_payload(payload);
	const char *argv[] = { bin, "--kernel", kernel, "--cmdline", cmdline,
			       "--cpus", cpus, "--memory", "size=128M", NULL };
	r.status = h_run(r.dir, argv, T_MS, &r.out, &r.err);
	free(bin);
	free(kernel);
	return r;
}

static void run_free(struct run *r)
{
	h_rmtree(r->dir);
	free(r->dir);
	free(r->out);
	free(r->err);
}

Test(payloads, threads_count_on_4_vcpus, .timeout = 120)
{
	H_NEED_GUEST();
	struct run r = run_payload("threads", "4 300000", "boot=4");
	cr_assert_eq(r.status, 0, "status %d\nstdout:\n%s\nstderr:\n%s", r.status, r.out, r.err);
	cr_assert(strstr(r.out, "total 1200000 expected 1200000"), "stdout:\n%s", r.out);
	/* Each thread ran on its own vCPU. */
	for (int cpu = 0; cpu < 4; cpu++) {
		char want[32];
		snprintf(want, sizeof(want), "on cpu %d counted 300000", cpu);
		cr_assert(strstr(r.out, want), "no thread on vCPU %d:\n%s", cpu, r.out);
	}
	run_free(&r);
}

Test(payloads, threads_bounded_by_vcpus, .timeout = 120)
{
	H_NEED_GUEST();
	/* 4 threads on 2 vCPUs: the main thread and the first new thread hold
	 * both vCPUs (waiting at the barrier), so the next pthread_create
	 * fails with EAGAIN. */
	struct run r = run_payload("threads", "4 1000", "boot=2");
	cr_assert_eq(r.status, 3, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert(strstr(r.out, "pthread_create 2 failed: 11"), "stdout:\n%s", r.out);
	run_free(&r);
}

Test(payloads, syscall_surface_from_inside_the_guest, .timeout = 120)
{
	H_NEED_GUEST();
	struct run r = run_payload("syscalls", "", "boot=1");
	cr_assert_eq(r.status, 0, "status %d\nstdout:\n%s\nstderr:\n%s", r.status, r.out, r.err);
	cr_assert(strstr(r.out, "0 failures"), "stdout:\n%s", r.out);
	cr_assert_eq(h_count(r.out, "FAIL"), 0, "stdout:\n%s", r.out);
	/* The unsupported call is logged once, by number and name. */
	cr_assert(strstr(r.err, "257 (openat) is not supported"), "stderr:\n%s", r.err);
	run_free(&r);
}

Test(payloads, argv_and_exit_status, .timeout = 60)
{
	H_NEED_GUEST();
	struct run r = run_payload("hello", "one 'two words' three\\ four", "boot=1");
	cr_assert_eq(r.status, 3, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert(strstr(r.out, "argv[0]=hello\n"), "%s", r.out);
	cr_assert(strstr(r.out, "argv[1]=one\n"), "%s", r.out);
	cr_assert(strstr(r.out, "argv[2]=two words\n"), "%s", r.out);
	cr_assert(strstr(r.out, "argv[3]=three four\n"), "%s", r.out);
	run_free(&r);
	r = run_payload("fault", "exit 77", "boot=1");
	cr_assert_eq(r.status, 77);
	run_free(&r);
}

static void expect_fault(const char *what, int status, const char *const needles[])
{
	H_NEED_GUEST();
	struct run r = run_payload("fault", what, "boot=1");
	cr_assert_eq(r.status, status, "%s: status %d, stderr:\n%s", what, r.status, r.err);
	for (int i = 0; needles[i]; i++)
		cr_assert(strstr(r.err, needles[i]), "%s: '%s' missing from:\n%s", what, needles[i],
			  r.err);
	run_free(&r);
}

Test(faults, null_write, .timeout = 60)
{
	const char *n[] = { "guest fault", "#PF page fault", "rip 0x", "address 0x0 ", "write",
			    "vCPU 0", NULL };
	expect_fault("null", 139, n);
}

Test(faults, null_read, .timeout = 60)
{
	const char *n[] = { "#PF page fault", "address 0x8 ", "read", NULL };
	expect_fault("read-null", 139, n);
}

Test(faults, wild_address, .timeout = 60)
{
	const char *n[] = { "#PF page fault", "address 0x4000000000", NULL };
	expect_fault("wild", 139, n);
}

Test(faults, illegal_instruction, .timeout = 60)
{
	const char *n[] = { "#UD invalid opcode", "vector 6", "rip 0x", NULL };
	expect_fault("ud2", 132, n);
}

Test(faults, divide_error, .timeout = 60)
{
	const char *n[] = { "#DE divide error", "vector 0", "rip 0x", NULL };
	expect_fault("div0", 136, n);
}

Test(faults, abort_is_sigabrt, .timeout = 60)
{
	const char *n[] = { "signal 6", NULL };
	expect_fault("abort", 134, n);
}

/* ------------------------------------------------------------ bad CLI */

static struct run run_forkvm(const char *const args[])
{
	struct run r = { .dir = h_tmpdir() };
	const char *argv[32];
	char *bin = h_bin("forkvm");
	int n = 0;
	argv[n++] = bin;
	for (int i = 0; args[i] && n < 31; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	r.status = h_run(r.dir, argv, T_MS, &r.out, &r.err);
	free(bin);
	return r;
}

static void expect_cli_error(const char *const args[], const char *needle)
{
	struct run r = run_forkvm(args);
	cr_assert_neq(r.status, 0, "forkvm accepted bad input (stderr: %s)", r.err);
	cr_assert_neq(r.status, -1, "forkvm hung on bad input");
	cr_assert(strstr(r.err, needle), "'%s' missing from:\n%s", needle, r.err);
	run_free(&r);
}

Test(cli, missing_kernel_file)
{
	const char *a[] = { "--kernel", "/nonexistent/payload", NULL };
	expect_cli_error(a, "/nonexistent/payload: No such file or directory");
}

Test(cli, kernel_not_an_elf)
{
	/* recognized before /dev/kvm is opened: no KVM needed */
	char *dir = h_tmpdir(), *f = h_join(dir, "notelf");
	h_write_file(f, "#!/bin/sh\necho this is not an ELF\n");
	const char *a[] = { "--kernel", f, NULL };
	expect_cli_error(a, "not a payload forkvm can load");
	h_rmtree(dir);
	free(f);
	free(dir);
}

Test(cli, kernel_dynamically_linked)
{
	H_NEED_GUEST();
	const char *a[] = { "--kernel", "/bin/true", NULL };
	expect_cli_error(a, "dynamically linked");
}

Test(cli, cpus_zero)
{
	const char *a[] = { "--kernel", "x", "--cpus", "boot=0", NULL };
	expect_cli_error(a, "--cpus");
}

Test(cli, memory_not_a_size)
{
	const char *a[] = { "--kernel", "x", "--memory", "size=abc", NULL };
	expect_cli_error(a, "--memory: size 'abc' is not a size");
}

Test(cli, unknown_option_and_nothing_to_do)
{
	const char *a[] = { "--frobnicate", NULL };
	expect_cli_error(a, "unrecognized option");
	const char *b[] = { NULL };
	expect_cli_error(b, "nothing to do");
}

Test(cli, help_and_version)
{
	const char *a[] = { "--help", NULL };
	struct run r = run_forkvm(a);
	cr_assert_eq(r.status, 0);
	cr_assert(strstr(r.out, "--api-socket") && strstr(r.out, "--agent socket=PATH"));
	run_free(&r);
	const char *b[] = { "--version", NULL };
	r = run_forkvm(b);
	cr_assert_eq(r.status, 0);
	cr_assert(strstr(r.out, "forkvm 0."));
	run_free(&r);
}

/* ------------------------------------------------------------ console, log */

Test(console, serial_socket_and_log_file, .timeout = 60)
{
	H_NEED_GUEST();
	char *dir = h_tmpdir(), *sock = h_join(dir, "serial.sock"), *logf = h_join(dir, "vmm.log");
	char *bin = h_bin("forkvm"), *kernel = h_payload("blocking"), *serial;
	struct h_proc p;

	cr_assert(asprintf(&serial, "socket=%s", sock) > 0);
	const char *argv[] = { bin, "--kernel", kernel, "--cmdline", "5 20", "--cpus", "boot=2",
			       "--serial", serial, "--log-file", logf, "-v", NULL };
	cr_assert_eq(h_spawn(&p, dir, argv), 0);
	/* The console socket: everything the guest printed reaches a client. */
	cr_assert(h_wait_path(sock, 10000), "no serial socket");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	char buf[4096] = "";
	size_t got = 0;
	while (got < sizeof(buf) - 1 && !strstr(buf, "done 5 ticks")) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		buf[got] = '\0';
	}
	close(fd);
	cr_assert(strstr(buf, "tick 1\n") && strstr(buf, "done 5 ticks"), "serial: %s", buf);
	cr_assert_eq(h_wait(&p, 30000), 0);
	char *log = h_read_file(logf);
	cr_assert(log && strstr(log, "VM booted") && strstr(log, "guest exited with status 0"),
		  "log file: %s", log ? log : "(none)");
	free(log);
	h_kill(&p);
	h_rmtree(dir);
	free(dir);
	free(sock);
	free(logf);
	free(bin);
	free(kernel);
	free(serial);
}

Test(cli, agent_socket_in_use_is_refused, .timeout = 60)
{
	struct h_vm vm;

	H_NEED_GUEST();
	cr_assert_eq(h_vm_start(&vm, NULL, NULL), 0);
	cr_assert(h_wait_path(vm.agent, 10000));
	char *opt;
	cr_assert(asprintf(&opt, "socket=%s", vm.agent) > 0);
	char *agent = h_payload("agent");
	const char *a[] = { "--kernel", agent, "--agent", opt, "--serial", "off", NULL };
	expect_cli_error(a, "is in use by another process");
	/* The first VM keeps its socket. */
	char *bin = h_bin("forkctl"), *ctl;
	cr_assert(asprintf(&ctl, "--agent=%s", vm.agent) > 0);
	const char *argv[] = { bin, ctl, "eval", "20+22", NULL };
	char *out = NULL;
	cr_assert_eq(h_run(vm.dir, argv, T_MS, &out, NULL), 0);
	cr_assert_str_eq(out, "42\n");
	free(out);
	free(ctl);
	free(bin);
	free(agent);
	free(opt);
	h_vm_stop(&vm);
}
