/* guest/payloads/escape.c - test payload that tries to leave the guest.
 * Usage:
 *   escape rawsys PATH PID
 *       makes the raw `syscall` instruction with every number 0..NR_MAX
 *       (and x32 and out-of-range numbers) in four rounds of arguments
 *       aimed at the host: PATH (a host file) as a path, AT_FDCWD with
 *       PATH, PID (a host process) as a process to signal, and PID as a
 *       thread group. None may reach the host: afterwards the file is
 *       untouched and the process alive (tests/integration/test_platforms.c
 *       checks). Prints "rawsys: N calls, skipped: ..." and exits 0.
 *   escape outside ADDR SECS
 *       asks the VMM to write at ADDR (hex, outside guest memory: the
 *       process platform's stub code) through system calls, and to map or
 *       unprotect it; each must fail. Prints "outside: refused", sleeps
 *       SECS seconds (the test pauses the VM and reads the stub's code),
 *       then stores to ADDR: a page fault ends the guest.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define NR_MAX 560

static long raw6(long nr, long a, long b, long c, long d, long e, long f)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

/* Not made, with why: they end or replace this program, or wait without
 * end, and are served inside the guest (never passed to the host) like
 * every other call. */
static const struct {
	long nr;
	const char *why;
} skipped[] = {
	{ 15, "rt_sigreturn" }, { 34, "pause" },	 { 35, "nanosleep" },
	{ 56, "clone" },	{ 57, "fork" },		 { 58, "vfork" },
	{ 60, "exit" },		{ 130, "rt_sigsuspend" }, { 231, "exit_group" },
	{ 435, "clone3" },
};

static int is_skipped(long nr)
{
	for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++)
		if (skipped[i].nr == nr)
			return 1;
	return 0;
}

/* The path lives in a page of its own, put back before every call: a
 * call may unmap, protect or discard it. */
static char *path_page;

static void path_reset(const char *path)
{
	void *p = mmap(path_page, 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (p != path_page) {
		fprintf(stderr, "rawsys: cannot map the path page: %s\n", strerror(errno));
		exit(2);
	}
	strcpy(path_page, path);
}

static int rawsys(const char *path, long pid)
{
	long n = 0, a = 0, b;
	long nrs[NR_MAX + 8];
	int nn = 0;

	if (strlen(path) >= 4000)
		return 2;
	path_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (path_page == MAP_FAILED)
		return 2;
	for (long nr = 0; nr <= NR_MAX; nr++)
		nrs[nn++] = nr;
	/* x32 numbers, a negative one, one past any table */
	nrs[nn++] = 0x40000000L | 2;	/* x32 open */
	nrs[nn++] = 0x40000000L | 62;	/* x32 kill */
	nrs[nn++] = 0x40000000L | 87;	/* x32 unlink */
	nrs[nn++] = -1;
	nrs[nn++] = 0x7fffffffL;
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < nn; i++) {
			long nr = nrs[i];
			if (is_skipped(nr & ~0x40000000L))
				continue;
			path_reset(path);
			a = (long)(uintptr_t)path_page;
			switch (round) {
			case 0: /* open(PATH, O_WRONLY|O_TRUNC), unlink, truncate, chmod... */
				b = raw6(nr, a, 01001, 0, 0, 0, 0);
				break;
			case 1: /* openat(AT_FDCWD, PATH, ...), unlinkat, renameat... */
				b = raw6(nr, -100, a, 01001, 0, 0, 0);
				break;
			case 2: /* kill(PID, SIGKILL), tkill, pidfd_open */
				b = raw6(nr, pid, 9, 0, 0, 0, 0);
				break;
			default: /* tgkill(PID, PID, SIGKILL), process_vm_writev */
				b = raw6(nr, pid, pid, 9, a, 1, 0);
				break;
			}
			(void)b;
			n++;
		}
	}
	printf("rawsys: %ld calls, skipped:", n);
	for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++)
		printf(" %s", skipped[i].why);
	printf("\n");
	return 0;
}

static int outside(uintptr_t addr, int secs)
{
	void *p = (void *)addr;
	struct timespec ts;
	int bad = 0;

	/* each must fail: the VMM never writes outside guest memory */
	if (raw6(318 /* getrandom */, (long)addr, 64, 0, 0, 0, 0) != -EFAULT)
		bad |= 1;
	if (raw6(228 /* clock_gettime */, 0, (long)addr, 0, 0, 0, 0) != -EFAULT)
		bad |= 2;
	if (raw6(0 /* read */, 0, (long)addr, 16, 0, 0, 0) >= 0)
		bad |= 4;
	if (mmap(p, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0) != MAP_FAILED)
		bad |= 8;
	if (mprotect(p, 4096, PROT_READ | PROT_WRITE) == 0)
		bad |= 16;
	if (bad) {
		printf("outside: a call succeeded (mask %d)\n", bad);
		return 1;
	}
	printf("outside: refused\n");
	fflush(stdout);
	ts.tv_sec = secs;
	ts.tv_nsec = 0;
	nanosleep(&ts, NULL);
	printf("outside: storing\n");
	fflush(stdout);
	*(volatile uint8_t *)p = 0xcc;
	printf("outside: the store went through\n");
	return 1;
}

int main(int argc, char **argv)
{
	if (argc > 3 && !strcmp(argv[1], "rawsys"))
		return rawsys(argv[2], atol(argv[3]));
	if (argc > 3 && !strcmp(argv[1], "outside"))
		return outside((uintptr_t)strtoull(argv[2], NULL, 16), atoi(argv[3]));
	fprintf(stderr, "usage: escape rawsys PATH PID | outside ADDR SECS\n");
	return 2;
}
