/* tests/integration/test_platforms.c - what keeps a guest in its place on
 * either platform (run in each pass: FORKVM_PLATFORM says which):
 *   - the raw `syscall` instruction with every number, aimed at a host
 *     file and a host process, reaches neither;
 *   - the VMM never writes outside guest memory for the guest, and a
 *     guest store there faults the same way on both platforms (on the
 *     process platform the stub's own code stays intact);
 *   - on the process platform, the stub dies with its monitor. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/lib/harness.h"

#define T_MS 60000
/* Where the process platform's stub lives (vmm/ptrace/stub/stub.h); on
 * KVM nothing of the guest's is there. */
#define STUB_ADDR "7e0000000000"

/* A host process that only waits to be killed. */
static pid_t victim_process(void)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		for (;;)
			pause();
	}
	return pid;
}

Test(platforms, raw_syscalls_with_every_number_do_not_reach_the_host, .timeout = 300)
{
	H_NEED_GUEST();
	char *dir = h_tmpdir(), *file = h_join(dir, "victim"), *bin = h_bin("forkvm"),
	     *payload = h_payload("escape"), *cmdline, *out = NULL, *err = NULL;
	struct stat before, after;

	cr_assert_eq(h_write_file(file, "untouched\n"), 0);
	cr_assert_eq(chmod(file, 0640), 0);
	cr_assert_eq(stat(file, &before), 0);
	pid_t victim = victim_process();
	cr_assert(asprintf(&cmdline, "rawsys %s %d", file, (int)victim) > 0);
	const char *argv[] = { bin, "--kernel", payload, "--cmdline", cmdline, NULL };
	int st = h_run(dir, argv, T_MS, &out, &err);

	int vst;
	pid_t w = waitpid(victim, &vst, WNOHANG);
	kill(victim, SIGKILL);
	waitpid(victim, NULL, 0);
	cr_assert_eq(w, 0, "the host process the guest aimed at died (%s platform)", h_platform());
	cr_assert_eq(st, 0, "forkvm exited with %d (%s platform)\nstdout:\n%s\nstderr:\n%.3000s", st,
		     h_platform(), out, err);
	cr_assert(strstr(out, "rawsys: ") && strstr(out, " calls, skipped:"), "stdout:\n%s", out);
	long calls = atol(strstr(out, "rawsys: ") + 8);
	cr_assert_gt(calls, 2000, "only %ld calls were made", calls);
	cr_assert_eq(stat(file, &after), 0, "the host file is gone");
	char *text = h_read_file(file);
	cr_assert_str_eq(text, "untouched\n", "the host file changed");
	cr_assert_eq(after.st_mode, before.st_mode, "the host file's mode changed");
	cr_assert_eq(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
	cr_assert_eq(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
	cr_log_info("%ld raw system calls on the %s platform reached neither %s nor process %d", calls,
		    h_platform(), file, (int)victim);
	free(text), free(out), free(err), free(cmdline), free(payload), free(bin), free(file);
	h_rmtree(dir);
	free(dir);
}

/* The children of every thread of pid; returns how many (at most max). */
static int children_of(pid_t pid, pid_t *out, int max)
{
	char p[64];
	int n = 0;
	snprintf(p, sizeof(p), "/proc/%d/task", (int)pid);
	DIR *d = opendir(p);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char cp[320];
		snprintf(cp, sizeof(cp), "/proc/%d/task/%s/children", (int)pid, e->d_name);
		char *c = h_read_file(cp);
		for (char *s = c; s && *s && n < max;) {
			char *end;
			long v = strtol(s, &end, 10);
			if (end == s)
				break;
			out[n++] = (pid_t)v;
			s = end;
		}
		free(c);
	}
	if (d)
		closedir(d);
	return n;
}

/* The stub of a process-platform forkvm (its only child). */
static pid_t stub_of(pid_t forkvm)
{
	pid_t kids[4];
	for (int i = 0; i < 200; i++) {
		int n = children_of(forkvm, kids, 4);
		if (n == 1)
			return kids[0];
		h_sleep_ms(50);
	}
	cr_assert_fail("forkvm %d has no single stub child", (int)forkvm);
	return -1;
}

/* Every executable segment of the stub's program (read back through
 * /proc/PID/exe, the memfd it was started from) is in its memory as it
 * is in the file. */
static void assert_stub_code_intact(pid_t stub)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/exe", (int)stub);
	int efd = open(p, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(efd, 0, "%s: %s", p, strerror(errno));
	snprintf(p, sizeof(p), "/proc/%d/mem", (int)stub);
	int mfd = open(p, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(mfd, 0, "%s: %s", p, strerror(errno));
	Elf64_Ehdr eh;
	cr_assert_eq(pread(efd, &eh, sizeof(eh), 0), (ssize_t)sizeof(eh));
	cr_assert_eq(memcmp(eh.e_ident, ELFMAG, SELFMAG), 0);
	int checked = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		cr_assert_eq(pread(efd, &ph, sizeof(ph), (off_t)(eh.e_phoff + i * sizeof(ph))),
			     (ssize_t)sizeof(ph));
		if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X) || !ph.p_filesz)
			continue;
		uint8_t *a = malloc(ph.p_filesz), *b = malloc(ph.p_filesz);
		cr_assert(a && b);
		cr_assert_eq(pread(efd, a, ph.p_filesz, (off_t)ph.p_offset), (ssize_t)ph.p_filesz);
		cr_assert_eq(pread(mfd, b, ph.p_filesz, (off_t)ph.p_vaddr), (ssize_t)ph.p_filesz,
			     "cannot read the stub's code at 0x%llx: %s",
			     (unsigned long long)ph.p_vaddr, strerror(errno));
		cr_assert_eq(memcmp(a, b, ph.p_filesz), 0,
			     "the stub's code at 0x%llx differs from its program",
			     (unsigned long long)ph.p_vaddr);
		free(a), free(b);
		checked++;
	}
	cr_assert_gt(checked, 0, "the stub has no code segment");
	close(efd);
	close(mfd);
}

Test(platforms, the_guest_cannot_write_outside_its_memory, .timeout = 120)
{
	H_NEED_GUEST();
	struct h_vm vm;
	const char *const extra[] = { "--cmdline", "outside " STUB_ADDR " 4", NULL };
	char *payload = h_payload("escape");
	cr_assert_eq(h_vm_start(&vm, payload, extra), 0);
	int waited = 0;
	char *con = NULL;
	for (; waited < T_MS; waited += 20) {
		free(con);
		con = h_read_file(vm.console);
		if (con && (strstr(con, "outside: refused") || strstr(con, "succeeded")))
			break;
		h_sleep_ms(20);
	}
	cr_assert(con && strstr(con, "outside: refused"), "console:\n%s", con ? con : "");
	if (h_on_process()) {
		/* While the guest sleeps: paused, the stub's code is what it
		 * was loaded as. */
		cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
		assert_stub_code_intact(stub_of(vm.proc.pid));
		cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
	}
	int st = h_wait(&vm.proc, T_MS);
	char *err = h_stderr(&vm.proc);
	free(con);
	con = h_read_file(vm.console);
	cr_assert(!strstr(con, "went through"), "the store went through:\n%s", con);
	cr_assert(st > 0, "forkvm exited with %d after the guest's store\n%s", st, err);
	cr_assert(strstr(err, "#PF page fault (vector 14)") &&
		      strstr(err, "address 0x" STUB_ADDR " (write not present, user mode)"),
		  "the fault report differs from KVM's (%s platform):\n%s", h_platform(), err);
	free(err), free(con), free(payload);
	h_vm_stop(&vm);
}

Test(platforms, a_stub_dies_with_its_monitor, .timeout = 60)
{
	if (!h_on_process())
		cr_skip_test("the process platform's stub: runs in the process-platform pass");
	struct h_vm vm;
	const char *const extra[] = { "--cmdline", "outside " STUB_ADDR " 600", NULL };
	char *payload = h_payload("escape");
	cr_assert_eq(h_vm_start(&vm, payload, extra), 0);
	pid_t stub = stub_of(vm.proc.pid);
	char p[64], *stat_text;
	snprintf(p, sizeof(p), "/proc/%d/stat", (int)stub);
	cr_assert(kill(stub, 0) == 0);
	kill(vm.proc.pid, SIGKILL);
	h_wait(&vm.proc, T_MS);
	/* Reparented to init, which reaps it: gone, or a zombie on its way. */
	bool gone = false;
	for (int i = 0; i < 250 && !gone; i++) {
		stat_text = h_read_file(p);
		char *rp = stat_text ? strrchr(stat_text, ')') : NULL;
		gone = !rp || rp[2] == 'Z' || rp[2] == 'X';
		free(stat_text);
		if (!gone)
			h_sleep_ms(20);
	}
	cr_assert(gone, "the stub %d outlived its monitor by 5 s", (int)stub);
	free(payload);
	h_vm_stop(&vm);
}
