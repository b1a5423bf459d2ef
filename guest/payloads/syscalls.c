/* guest/payloads/syscalls.c - exercises the function-guest system calls
 * from inside a real guest and reports each check; exits 0 if all pass. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                   \
	do {                                               \
		if (cond) {                                \
			printf("ok   " __VA_ARGS__);       \
		} else {                                   \
			printf("FAIL " __VA_ARGS__);       \
			failures++;                        \
		}                                          \
		printf("\n");                              \
	} while (0)

int main(void)
{
	struct timespec a, b;
	struct utsname u;
	struct sysinfo si;
	char rnd[64] = { 0 };

	CHECK(uname(&u) == 0 && !strcmp(u.sysname, "Linux") && !strcmp(u.machine, "x86_64"),
	      "uname %s %s %s", u.sysname, u.nodename, u.machine);
	CHECK(getpid() == 1, "getpid = %d", getpid());
	CHECK(getrandom(rnd, sizeof(rnd), 0) == sizeof(rnd), "getrandom");
	CHECK(clock_gettime(CLOCK_MONOTONIC, &a) == 0, "clock_gettime");
	struct timespec req = { 0, 20 * 1000 * 1000 };
	CHECK(nanosleep(&req, NULL) == 0, "nanosleep 20 ms");
	clock_gettime(CLOCK_MONOTONIC, &b);
	long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	CHECK(ms >= 20 && ms < 2000, "slept %ld ms", ms);

	size_t len = 8 << 20;
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED, "mmap 8 MiB at %p", (void *)p);
	int zero = 1;
	for (size_t i = 0; i < len; i += 4096)
		zero &= p[i] == 0;
	CHECK(zero, "fresh mapping is zero");
	memset(p, 0xab, len);
	CHECK(munmap(p, len) == 0, "munmap");
	unsigned char *q = mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	CHECK(q == p && q[0] == 0 && q[len - 1] == 0, "remapped memory is zero again");
	unsigned char *r = mremap(q, len, 2 * len, MREMAP_MAYMOVE);
	CHECK(r != MAP_FAILED, "mremap grow to 16 MiB");
	r[2 * len - 1] = 1;
	CHECK(munmap(r, 2 * len) == 0, "munmap grown");
	CHECK(mmap(NULL, (size_t)1 << 40, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED &&
		      errno == ENOMEM,
	      "mmap 1 TiB fails with ENOMEM");
	/* musl's sbrk() refuses increments: ask brk directly. */
	long cur = syscall(SYS_brk, 0);
	CHECK(syscall(SYS_brk, cur + 65536) == cur + 65536 && syscall(SYS_brk, 0) == cur + 65536,
	      "brk grows");
	*(volatile char *)(cur + 65535) = 1;
	CHECK(syscall(SYS_brk, cur) == cur, "brk shrinks");
	CHECK(write(1, NULL, 10) == -1 && errno == EFAULT, "write from NULL is EFAULT");
	CHECK(write(1, (void *)0x1000, 10) == -1 && errno == EFAULT, "write from the system area is EFAULT");
	CHECK(syscall(SYS_read, 0, (void *)0xC0000000ULL, 10) == -1 && (errno == EFAULT),
	      "read into the MMIO hole is EFAULT");
	CHECK(write(42, "x", 1) == -1 && errno == EBADF, "write to a closed fd is EBADF");
	CHECK(syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY) == -1 && errno == ENOSYS,
	      "openat is ENOSYS");
	CHECK(sysinfo(&si) == 0 && si.totalram > 0 && si.freeram <= si.totalram, "sysinfo total %lu free %lu",
	      si.totalram, si.freeram);
	CHECK(fcntl(1, F_GETFL) >= 0, "fcntl F_GETFL");
	int d = dup(2);
	CHECK(d >= 3 && write(d, "dup ok\n", 7) == 7 && close(d) == 0, "dup/write/close");
	printf("%d failures\n", failures);
	return failures ? 1 : 0;
}
