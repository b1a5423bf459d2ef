/* tests/lane/test_lane.c - the KVM lane itself (scripts/lane.sh), run on
 * the host by scripts/run-tests.sh before it runs the integration suites in
 * the lane: a command's exit status and output come back; a failing
 * Criterion suite is reported as a failure; a missing QEMU or kernel
 * package is a clear error; a guest that hangs without output is retried
 * once, then fails; the outer timeout kills QEMU. The hang and timeout
 * cases use a stand-in for QEMU (FORKVM_LANE_QEMU) so they take seconds. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/lib/harness.h"

#define LANE_MS (20 * 60 * 1000) /* a boot is 8-25 s; a hang detector only */

static char *script(const char *name)
{
	char *dir = h_join(h_src_dir(), "scripts");
	char *p = h_join(dir, name);
	free(dir);
	return p;
}

/* Runs scripts/lane.sh with args; returns its status; its output in *out and *err. */
static int lane(const char *const args[], int timeout_ms, char **out, char **err)
{
	const char *argv[16];
	char *sh = script("lane.sh");
	int n = 0;

	argv[n++] = "/bin/bash";
	argv[n++] = sh;
	for (int i = 0; args[i]; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	char *dir = h_tmpdir();
	int st = h_run(dir, argv, timeout_ms, out, err);
	h_rmtree(dir);
	free(dir);
	free(sh);
	return st;
}

/* A stand-in for QEMU: a script that counts its starts in dir/starts and,
 * when mark is set, writes it to the console file it is given
 * (-serial file:PATH); then it hangs. Returns its path (malloc'd). */
static char *fake_qemu(const char *dir, const char *mark)
{
	char *path = h_join(dir, "fake-qemu");
	char text[1024];
	snprintf(text, sizeof(text),
		 "#!/bin/sh\n"
		 "echo start $$ >> '%s/starts'\n"
		 "for a in \"$@\"; do case $a in file:*) con=${a#file:} ;; esac; done\n"
		 "%s%s%s"
		 "exec sleep 600\n",
		 dir, mark ? "printf '%s\\n' '" : "", mark ? mark : "",
		 mark ? "' > \"$con\"\n" : "");
	cr_assert_eq(h_write_file(path, text), 0);
	cr_assert_eq(chmod(path, 0755), 0);
	return path;
}

static void setup(void)
{
	/* run-tests.sh must not start the lane's self-test again */
	setenv("FORKVM_LANE_SELFTEST", "1", 1);
}

TestSuite(lane, .init = setup);

Test(lane, a_commands_status_and_output_come_back, .timeout = 1500)
{
	const char *a[] = { "run", "--", "sh", "-c",
			    "echo lane-says-hello; ls -l /dev/kvm; exit 7", NULL };
	char *out = NULL, *err = NULL;
	int st = lane(a, LANE_MS, &out, &err);
	cr_assert_eq(st, 7, "lane.sh run exited %d, expected the command's 7\n%s\n%s", st, out, err);
	cr_assert(strstr(out, "lane-says-hello"), "%s", out);
	cr_assert(strstr(out, "/dev/kvm"), "no /dev/kvm in the lane:\n%s", out);
	cr_assert(strstr(out, "forkvm-lane: ready"), "%s", out);
	free(out);
	free(err);
}

Test(lane, a_failing_suite_is_a_failure, .timeout = 1500)
{
	char *rt = script("run-tests.sh"), *suite = h_join(h_build_dir(), "tests/lane-failing");
	char *out = NULL, *err = NULL, *dir = h_tmpdir();
	const char *argv[] = { "/bin/sh", rt, h_build_dir(), h_guest_dir(), "--", suite, NULL };
	setenv("FORKVM_TEST_WHERE", "lane", 1);
	int st = h_run(dir, argv, LANE_MS, &out, &err);
	cr_assert_eq(st, 1, "run-tests.sh exited %d for a failing suite\n%s\n%s", st, out, err);
	cr_assert(strstr(out, "fails_on_purpose"), "%s", out);
	cr_assert(strstr(out, "lane-failing") && strstr(out, "KVM lane (nested SVM under TCG)") &&
			  strstr(out, "FAILED"),
		  "the summary does not report the suite failed in the lane:\n%s", out);
	cr_assert_null(strstr(out, "all tests passed"), "%s", out);
	h_rmtree(dir);
	free(dir);
	free(out);
	free(err);
	free(suite);
	free(rt);
}

Test(lane, a_missing_qemu_is_a_clear_error)
{
	setenv("FORKVM_LANE_QEMU", "/nonexistent/qemu-system-x86_64", 1);
	const char *a[] = { "run", "--", "true", NULL };
	char *out = NULL, *err = NULL;
	int st = lane(a, LANE_MS, &out, &err);
	cr_assert_eq(st, 125, "%d\n%s", st, err);
	cr_assert(strstr(err, "/nonexistent/qemu-system-x86_64 is missing"), "%s", err);
	cr_assert(strstr(err, "qemu-system-x86"), "no package named: %s", err);
	free(out);
	free(err);
}

Test(lane, a_missing_kernel_package_is_a_clear_error, .timeout = 600)
{
	char *dir = h_tmpdir(), *ld = h_join(dir, "lane"), *cache = h_join(dir, "cache");
	setenv("FORKVM_LANE_DIR", ld, 1);
	setenv("FORKVM_LANE_CACHE", cache, 1);
	setenv("FORKVM_LANE_KERNEL_PKG", "linux-image-0.0.0-0-forkvm-missing", 1);
	const char *a[] = { "run", "--", "true", NULL };
	char *out = NULL, *err = NULL;
	int st = lane(a, 300000, &out, &err);
	cr_assert_eq(st, 125, "%d\n%s", st, err);
	cr_assert(strstr(err, "linux-image-0.0.0-0-forkvm-missing"), "%s", err);
	cr_assert(strstr(err, "download"), "%s", err);
	char *k = h_join(ld, "image/vmlinuz");
	cr_assert_neq(access(k, F_OK), 0, "a kernel appeared at %s", k);
	free(k);
	h_rmtree(dir);
	free(dir);
	free(ld);
	free(cache);
	free(out);
	free(err);
}

Test(lane, a_silent_hang_is_retried_once_then_fails, .timeout = 120)
{
	char *dir = h_tmpdir(), *q = fake_qemu(dir, NULL), *starts = h_join(dir, "starts");
	setenv("FORKVM_LANE_QEMU", q, 1);
	const char *a[] = { "run", "--boot-timeout", "2", "--", "true", NULL };
	char *out = NULL, *err = NULL;
	int st = lane(a, 60000, &out, &err);
	cr_assert_eq(st, 125, "%d\n%s", st, err);
	cr_assert(strstr(err, "retrying once"), "%s", err);
	cr_assert(strstr(err, "hung twice"), "%s", err);
	char *s = h_read_file(starts);
	cr_assert_eq(h_count(s, "start"), 2, "QEMU started %d times:\n%s", h_count(s, "start"), s);
	free(s);
	h_rmtree(dir);
	free(dir);
	free(q);
	free(starts);
	free(out);
	free(err);
}

Test(lane, the_outer_timeout_kills_qemu, .timeout = 120)
{
	char *dir = h_tmpdir(), *q = fake_qemu(dir, "forkvm-lane: booted"),
	     *starts = h_join(dir, "starts");
	setenv("FORKVM_LANE_QEMU", q, 1);
	const char *a[] = { "run", "--timeout", "3", "--", "true", NULL };
	char *out = NULL, *err = NULL;
	int st = lane(a, 60000, &out, &err);
	cr_assert_eq(st, 124, "%d\n%s", st, err);
	cr_assert(strstr(err, "timed out after 3 s"), "%s", err);
	char *s = h_read_file(starts);
	cr_assert_eq(h_count(s, "start"), 1, "a guest that showed life was retried:\n%s", s);
	/* QEMU (here: its stand-in, now `sleep 600` under the same pid) is gone */
	int pid = atoi(s + strlen("start "));
	cr_assert_gt(pid, 1, "%s", s);
	cr_assert(kill(pid, 0) < 0 && errno == ESRCH, "the stand-in QEMU (pid %d) survived the timeout",
		  pid);
	free(s);
	h_rmtree(dir);
	free(dir);
	free(q);
	free(starts);
	free(out);
	free(err);
}

/* No silent green: where the lane cannot run (here: no QEMU), the
 * integration suites fail the run, naming what is missing. */
Test(lane, no_lane_and_no_kvm_fails_the_run, .timeout = 120)
{
	char *rt = script("run-tests.sh"), *suite = h_join(h_build_dir(), "tests/lane-failing");
	char *out = NULL, *err = NULL, *dir = h_tmpdir();
	const char *argv[] = { "/bin/sh", rt, h_build_dir(), h_guest_dir(), "--", suite, NULL };
	setenv("FORKVM_TEST_WHERE", "lane", 1);
	setenv("FORKVM_LANE_QEMU", "/nonexistent/qemu-system-x86_64", 1);
	int st = h_run(dir, argv, 60000, &out, &err);
	cr_assert_eq(st, 1, "run-tests.sh exited %d\n%s\n%s", st, out, err);
	cr_assert(strstr(err, "the KVM lane could not run"), "%s", err);
	cr_assert(strstr(err, "FORKVM_TESTS_ALLOW_SKIP=1"), "%s", err);
	cr_assert(strstr(out, "qemu-system-x86_64 is missing"), "%s", out);
	cr_assert(strstr(out, "FAILED"), "%s", out);
	cr_assert_null(strstr(out, "fails_on_purpose"), "the suite ran:\n%s", out);
	h_rmtree(dir);
	free(dir);
	free(out);
	free(err);
	free(suite);
	free(rt);
}
