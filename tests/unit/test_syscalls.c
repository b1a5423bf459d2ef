/* tests/unit/test_syscalls.c - the function-guest system calls served by
 * fg_syscall() on a VM built without KVM (the hello payload, serial console
 * in a file, no agent), checked against Linux semantics: memory management,
 * fds and console I/O, user-pointer validation, time, futexes, threads,
 * signals, identity, exit. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/lib/unit.h"
#include "vmm/fguest/fguest.h"
#include "vmm/vm.h"

#define P 4096ULL
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

static struct vm *vm;
static char *dir, *serial;
static struct fg_call last; /* the last call made, for no_return */

static void make(uint64_t mem, unsigned vcpus)
{
	char err[512] = "";
	char *hello = ut_payload("hello");

	cr_assert(ut_file_exists(hello), "%s is missing: run make guest", hello);
	free(hello);
	dir = ut_tmpdir();
	cr_assert_not_null(dir);
	cr_assert(asprintf(&serial, "%s/serial.log", dir) > 0);
	struct ut_vm_opts o = { .payload = "hello", .memory = mem, .vcpus = vcpus,
				.serial_file = serial, .hostname = "testhost" };
	int rc = ut_vm_create(&o, err, sizeof(err), &vm);
	cr_assert_eq(rc, 0, "vm_create_nokvm: %s", err);
	/* vm_guest_now() is 0 until vm_start() sets the clock base. */
	vm->clock_base = time_mono_ns() - 1;
}

static void setup(void)
{
	make(64 * MiB, 1);
}

static void setup_4g(void)
{
	make(4 * GiB, 1);
}

static void setup_2cpu(void)
{
	make(64 * MiB, 2);
}

static void teardown(void)
{
	vm_destroy(vm);
	vm = NULL;
	ut_rmtree(dir);
	free(dir);
	free(serial);
}

/* Serves system call a[0] with arguments a[1..6] on vCPU vi. */
static long call_on(unsigned vi, const uint64_t a[7])
{
	struct vcpu *v = &vm->vcpus[vi];
	long r;

	memset(&last, 0, sizeof(last));
	last.fg = vm->fg;
	last.vm = vm;
	last.v = v;
	last.t = v->gt;
	last.nr = a[0];
	memcpy(last.a, a + 1, sizeof(last.a));
	pthread_mutex_lock(&vm->lock);
	r = fg_syscall(&last);
	pthread_mutex_unlock(&vm->lock);
	return r;
}

#define SC(...) call_on(0, (const uint64_t[7]){ __VA_ARGS__ })
#define SC_ON(vi, ...) call_on(vi, (const uint64_t[7]){ __VA_ARGS__ })

static uint8_t *host(uint64_t gpa)
{
	uint8_t *p = gmem_ptr(&vm->mem, gpa, 1);
	cr_assert_not_null(p, "gpa 0x%llx is not RAM", (unsigned long long)gpa);
	return p;
}

static uint64_t map(uint64_t len)
{
	long a = SC(SYS_mmap, 0, len, RW, ANON, (uint64_t)-1, 0);
	cr_assert_gt(a, 0, "mmap(%llu) = %ld", (unsigned long long)len, a);
	return (uint64_t)a;
}

/* Maps len bytes at exactly addr (which must be free). */
static uint64_t map_at(uint64_t addr, uint64_t len)
{
	long a = SC(SYS_mmap, addr, len, RW, ANON | MAP_FIXED_NOREPLACE, (uint64_t)-1, 0);
	cr_assert_eq(a, (long)addr, "mmap(0x%llx, %llu) = %ld", (unsigned long long)addr,
		     (unsigned long long)len, a);
	return addr;
}

static bool all(uint64_t gpa, uint64_t len, uint8_t b)
{
	const uint8_t *p = gmem_ptr(&vm->mem, gpa, len);
	cr_assert_not_null(p);
	for (uint64_t i = 0; i < len; i++)
		if (p[i] != b)
			return false;
	return true;
}

static void fill(uint64_t gpa, uint64_t len, uint8_t b)
{
	uint8_t *p = gmem_ptr(&vm->mem, gpa, len);
	cr_assert_not_null(p);
	memset(p, b, len);
}

static void put(uint64_t gpa, const void *src, size_t len)
{
	cr_assert_eq(gmem_write(&vm->mem, gpa, src, len), 0);
}

static bool mapped(uint64_t gpa, uint64_t len)
{
	return fg_mm_mapped(&vm->fg->mm, gpa, len);
}

static char *serial_text(void)
{
	size_t len;
	char *s = (char *)ut_read_file(serial, &len);
	return s ? s : strdup("");
}

/* ------------------------------------------------------------ mmap */

TestSuite(sys, .init = setup, .fini = teardown);

Test(sys, mmap_anonymous_top_down)
{
	uint64_t before = vm->fg->mm.mapped;
	uint64_t a = map(3 * P);

	cr_assert_eq(a % P, 0);
	cr_assert_eq(a, vm->fg->mm.mmap_top - 3 * P, "the first mapping sits right below mmap_top");
	cr_assert(mapped(a, 3 * P));
	cr_assert(all(a, 3 * P, 0), "fresh memory is zero");
	cr_assert_eq(vm->fg->mm.mapped, before + 3 * P);
	const struct fg_vma *v = fg_mm_lookup(&vm->fg->mm, a);
	cr_assert_not_null(v);
	cr_assert_eq(v->kind, FG_VMA_MMAP);
	uint64_t b = map(100);
	cr_assert_eq(b, a - P, "the length is rounded up to a page");
	cr_assert(mapped(b, P));
}

Test(sys, mmap_hint)
{
	long a = SC(SYS_mmap, 16 * MiB, 2 * P, RW, ANON, (uint64_t)-1, 0);
	cr_assert_eq(a, (long)(16 * MiB), "a free, aligned hint is used");
	long b = SC(SYS_mmap, 16 * MiB, 2 * P, RW, ANON, (uint64_t)-1, 0);
	cr_assert_gt(b, 0);
	cr_assert_neq(b, a, "an occupied hint is not");
	cr_assert(mapped(16 * MiB, 2 * P) && mapped((uint64_t)b, 2 * P));
	long c = SC(SYS_mmap, 0x1000, P, RW, ANON, (uint64_t)-1, 0);
	cr_assert_geq(c, (long)FG_SYS_END, "a hint in the system area is ignored");
	long d = SC(SYS_mmap, 20 * MiB + 5, P, RW, ANON, (uint64_t)-1, 0);
	cr_assert_gt(d, 0);
	cr_assert_eq(d % P, 0);
}

Test(sys, mmap_fixed_replaces)
{
	uint64_t a = map(3 * P);
	uint64_t before = vm->fg->mm.mapped;

	fill(a, 3 * P, 0xab);
	long r = SC(SYS_mmap, a + P, P, PROT_READ, ANON | MAP_FIXED, (uint64_t)-1, 0);
	cr_assert_eq(r, (long)(a + P));
	cr_assert(all(a, P, 0xab), "page before untouched");
	cr_assert(all(a + P, P, 0), "the replaced page is fresh");
	cr_assert(all(a + 2 * P, P, 0xab), "page after untouched");
	cr_assert_eq(vm->fg->mm.mapped, before, "replacing does not change the total");
	const struct fg_vma *v = fg_mm_lookup(&vm->fg->mm, a + P);
	cr_assert_eq(v->prot, PROT_READ, "the new mapping's protection");
	/* MAP_FIXED over a free range works too. */
	cr_assert_eq(SC(SYS_mmap, 24 * MiB, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), (long)(24 * MiB));
}

Test(sys, mmap_fixed_noreplace)
{
	uint64_t a = map(2 * P);

	fill(a, 2 * P, 0x11);
	cr_assert_eq(SC(SYS_mmap, a + P, 2 * P, RW, ANON | MAP_FIXED_NOREPLACE, (uint64_t)-1, 0), -EEXIST);
	cr_assert(all(a, 2 * P, 0x11), "nothing replaced");
	cr_assert_eq(SC(SYS_mmap, 24 * MiB, P, RW, ANON | MAP_FIXED_NOREPLACE, (uint64_t)-1, 0),
		     (long)(24 * MiB));
}

Test(sys, mmap_errors)
{
	cr_assert_eq(SC(SYS_mmap, 0, 0, RW, ANON, (uint64_t)-1, 0), -EINVAL, "len 0");
	cr_assert_eq(SC(SYS_mmap, 0, 1ULL << 40, RW, ANON, (uint64_t)-1, 0), -ENOMEM, "too big");
	cr_assert_eq(SC(SYS_mmap, 0, UINT64_MAX, RW, ANON, (uint64_t)-1, 0), -ENOMEM, "len wraps");
	cr_assert_eq(SC(SYS_mmap, 0, UINT64_MAX - P + 2, RW, ANON, (uint64_t)-1, 0), -ENOMEM);
	cr_assert_eq(SC(SYS_mmap, 0, 60 * MiB, RW, ANON, (uint64_t)-1, 0), -ENOMEM,
		     "fits the address range but not the free space");
	cr_assert_eq(SC(SYS_mmap, 0, P, RW, MAP_PRIVATE, (uint64_t)-1, 0), -EBADF,
		     "a file mapping without a file");
	cr_assert_lt(SC(SYS_mmap, 0, P, RW, MAP_PRIVATE, 0, 0), 0, "a file mapping of fd 0");
	cr_assert_lt(SC(SYS_mmap, 0, P, RW, MAP_SHARED, 3, 0), 0, "a file mapping of fd 3");
	cr_assert_eq(SC(SYS_mmap, 0, P, RW, MAP_ANONYMOUS, (uint64_t)-1, 0), -EINVAL,
		     "neither private nor shared");
	cr_assert_eq(SC(SYS_mmap, 16 * MiB + 1, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), -EINVAL,
		     "unaligned fixed address");
	cr_assert_lt(SC(SYS_mmap, 0x1000, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), 0,
		     "fixed in the system area");
	cr_assert_lt(SC(SYS_mmap, 0, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), 0, "fixed at 0");
	cr_assert_lt(SC(SYS_mmap, vm->mem.gpa_end, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), 0,
		     "fixed beyond RAM");
	cr_assert_lt(SC(SYS_mmap, vm->mem.gpa_end - P, 2 * P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), 0,
		     "fixed straddling the end of RAM");
	cr_assert_lt(SC(SYS_mmap, UINT64_MAX - P + 1, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), 0,
		     "fixed at the top of the address space");
	cr_assert(!mapped(0x1000, 1));
}

Test(sys, memory_is_zero_after_munmap_and_mmap)
{
	uint64_t a = map(2 * P);

	fill(a, 2 * P, 0x5c);
	cr_assert_eq(SC(SYS_munmap, a, 2 * P), 0);
	cr_assert(!mapped(a, 1));
	cr_assert(all(a, 2 * P, 0), "unmapped RAM is returned zeroed");
	uint64_t b = map(2 * P);
	cr_assert_eq(b, a, "the top-down allocator reuses the hole");
	cr_assert(all(b, 2 * P, 0));
	fill(b, P, 0x77);
	cr_assert_eq(SC(SYS_mmap, b, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), (long)b);
	cr_assert(all(b, P, 0), "MAP_FIXED gives fresh memory");
}

Test(sys, munmap_partial)
{
	uint64_t a = map(4 * P), before;

	fill(a, 4 * P, 0x42);
	before = vm->fg->mm.mapped;
	cr_assert_eq(SC(SYS_munmap, a + P, P), 0);
	cr_assert(mapped(a, P));
	cr_assert(!mapped(a + P, 1));
	cr_assert(mapped(a + 2 * P, 2 * P));
	cr_assert(all(a, P, 0x42) && all(a + 2 * P, 2 * P, 0x42));
	cr_assert(all(a + P, P, 0));
	cr_assert_eq(vm->fg->mm.mapped, before - P);
	cr_assert_eq(SC(SYS_munmap, a + 3 * P, 100), 0, "len rounded up to a page");
	cr_assert(!mapped(a + 3 * P, 1));
	cr_assert(mapped(a + 2 * P, P));
	cr_assert_eq(SC(SYS_munmap, a + 3 * P, P), 0, "unmapping a hole is fine");
	cr_assert_eq(SC(SYS_munmap, a + 1, P), -EINVAL, "unaligned");
	cr_assert_eq(SC(SYS_munmap, a, 0), -EINVAL, "len 0");
	cr_assert_eq(SC(SYS_munmap, 0x1000, P), -EINVAL, "system area");
	cr_assert_eq(SC(SYS_munmap, a, UINT64_MAX - P), -EINVAL, "wraps");
	cr_assert_eq(SC(SYS_munmap, vm->mem.gpa_end, P), -EINVAL, "beyond user memory");
}

/* ------------------------------------------------------------ brk */

Test(sys, brk_grow_shrink_refuse)
{
	uint64_t b0 = (uint64_t)SC(SYS_brk, 0);

	cr_assert_eq(b0, vm->fg->mm.brk_start);
	cr_assert_eq(SC(SYS_brk, b0 + 10000), (long)(b0 + 10000));
	cr_assert(mapped(b0, 10000));
	cr_assert(!mapped(b0 + 3 * P, 1), "rounded up to 3 pages, no more");
	cr_assert_eq(fg_mm_lookup(&vm->fg->mm, b0)->kind, FG_VMA_BRK);
	fill(b0, 10000, 0x99);
	cr_assert_eq(SC(SYS_brk, 0), (long)(b0 + 10000), "brk(0) reports the break");

	cr_assert_eq(SC(SYS_brk, b0 + 100), (long)(b0 + 100), "shrink");
	cr_assert(mapped(b0, P));
	cr_assert(!mapped(b0 + P, 1));
	cr_assert_eq(SC(SYS_brk, b0 + 10000), (long)(b0 + 10000), "grow again");
	cr_assert(all(b0 + P, 2 * P, 0), "regrown pages are zero");

	cr_assert_eq(SC(SYS_brk, b0 - 1), (long)(b0 + 10000), "below the start: refused");
	cr_assert_eq(SC(SYS_brk, vm->mem.gpa_end + P), (long)(b0 + 10000), "beyond memory: refused");
	cr_assert_eq(SC(SYS_brk, UINT64_MAX), (long)(b0 + 10000));
	/* Something mapped right above the break blocks growth. */
	cr_assert_eq(SC(SYS_mmap, b0 + 4 * P, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), (long)(b0 + 4 * P));
	cr_assert_eq(SC(SYS_brk, b0 + 6 * P), (long)(b0 + 10000), "would overlap a mapping: refused");
	cr_assert(mapped(b0 + 4 * P, P));
	cr_assert_eq(SC(SYS_brk, b0 + 4 * P), (long)(b0 + 4 * P), "up to the mapping is fine");
	cr_assert_eq(SC(SYS_brk, b0), (long)b0, "back to the start");
	cr_assert(!mapped(b0, 1));
	cr_assert(mapped(b0 + 4 * P, P), "the mapping above survives");
}

/* ------------------------------------------------------------ mremap */

Test(sys, mremap_grow_in_place_and_shrink)
{
	uint64_t a = (uint64_t)SC(SYS_mmap, 16 * MiB, P, RW, ANON, (uint64_t)-1, 0);

	cr_assert_eq(a, 16 * MiB);
	fill(a, P, 0x31);
	cr_assert_eq(SC(SYS_mremap, a, P, 3 * P, 0), (long)a, "room above: grows in place");
	cr_assert(mapped(a, 3 * P));
	cr_assert(all(a, P, 0x31));
	cr_assert(all(a + P, 2 * P, 0));
	cr_assert_eq(SC(SYS_mremap, a, 3 * P, P, 0), (long)a, "shrink");
	cr_assert(mapped(a, P));
	cr_assert(!mapped(a + P, 1));
	cr_assert(all(a, P, 0x31));
	cr_assert_eq(SC(SYS_mremap, a, P, P, 0), (long)a, "same size");
}

Test(sys, mremap_move_preserves_content)
{
	uint64_t a = (uint64_t)SC(SYS_mmap, 16 * MiB, 2 * P, RW, ANON, (uint64_t)-1, 0);
	uint64_t blocker = a + 2 * P;

	cr_assert_eq(a, 16 * MiB);
	cr_assert_eq(SC(SYS_mmap, blocker, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), (long)blocker);
	for (unsigned i = 0; i < 2 * P; i++)
		host(a)[i] = (uint8_t)(i * 7);
	cr_assert_eq(SC(SYS_mremap, a, 2 * P, 4 * P, 0), -ENOMEM, "no room and no MREMAP_MAYMOVE");
	cr_assert(mapped(a, 2 * P), "the failed mremap changed nothing");

	long n = SC(SYS_mremap, a, 2 * P, 4 * P, MREMAP_MAYMOVE);
	cr_assert_gt(n, 0);
	cr_assert_neq((uint64_t)n, a, "moved");
	cr_assert_eq(n % P, 0);
	cr_assert(mapped((uint64_t)n, 4 * P));
	for (unsigned i = 0; i < 2 * P; i++)
		cr_assert_eq(host((uint64_t)n)[i], (uint8_t)(i * 7), "byte %u not preserved", i);
	cr_assert(all((uint64_t)n + 2 * P, 2 * P, 0), "the grown part is zero");
	cr_assert(!mapped(a, 1), "the old range is gone");
	cr_assert(all(a, 2 * P, 0), "and zeroed");
	cr_assert(mapped(blocker, P), "the neighbour is untouched");

	/* MREMAP_FIXED to a chosen place. */
	long f = SC(SYS_mremap, (uint64_t)n, 4 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_FIXED, 24 * MiB);
	cr_assert_eq(f, (long)(24 * MiB));
	cr_assert_eq(host(24 * MiB)[5], (uint8_t)35);
	cr_assert(!mapped((uint64_t)n, 1));
}

Test(sys, mremap_errors)
{
	uint64_t a = map(2 * P);

	cr_assert_eq(SC(SYS_mremap, a + 1, P, 2 * P, MREMAP_MAYMOVE), -EINVAL, "unaligned");
	cr_assert_eq(SC(SYS_mremap, a, P, 0, MREMAP_MAYMOVE), -EINVAL, "new length 0");
	cr_assert_eq(SC(SYS_mremap, a, 0, P, MREMAP_MAYMOVE), -EINVAL, "old length 0");
	cr_assert_eq(SC(SYS_mremap, a, P, 2 * P, 0x80), -EINVAL, "unknown flag");
	cr_assert_eq(SC(SYS_mremap, a, P, 2 * P, MREMAP_FIXED, 24 * MiB), -EINVAL,
		     "MREMAP_FIXED without MREMAP_MAYMOVE");
	cr_assert_eq(SC(SYS_mremap, a, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, a + P), -EINVAL,
		     "overlapping target");
	cr_assert_eq(SC(SYS_mremap, 16 * MiB, P, 2 * P, MREMAP_MAYMOVE), -EFAULT, "nothing mapped");
	cr_assert_eq(SC(SYS_mremap, a, 3 * P, 4 * P, MREMAP_MAYMOVE), -EFAULT,
		     "old range runs past the mapping");
	cr_assert_eq(SC(SYS_mremap, a, P, 1ULL << 40, MREMAP_MAYMOVE), -EINVAL, "huge");
	cr_assert(mapped(a, 2 * P));
}

/* ------------------------------------------------------------ mprotect, madvise */

Test(sys, mprotect)
{
	uint64_t a = map_at(16 * MiB, 2 * P);

	cr_assert_eq(SC(SYS_mprotect, a, 2 * P, PROT_READ), 0);
	cr_assert_eq(SC(SYS_mprotect, a, 100, PROT_NONE), 0);
	cr_assert_eq(SC(SYS_mprotect, 20 * MiB, P, PROT_READ), -ENOMEM, "unmapped");
	cr_assert_eq(SC(SYS_mprotect, a, 3 * P, PROT_READ), -ENOMEM, "partly unmapped");
	cr_assert_eq(SC(SYS_mprotect, a + 1, P, PROT_READ), -EINVAL, "unaligned");
	cr_assert_eq(SC(SYS_mprotect, a, P, 0x100), -EINVAL, "unknown protection bit");
	cr_assert_eq(SC(SYS_mprotect, 20 * MiB, 0, PROT_READ), 0, "len 0");
}

Test(sys, madvise_dontneed_zeroes)
{
	uint64_t a = map(2 * P);

	fill(a, 2 * P, 0xee);
	cr_assert_eq(SC(SYS_madvise, a, P, MADV_NORMAL), 0);
	cr_assert(all(a, 2 * P, 0xee), "MADV_NORMAL changes nothing");
	cr_assert_eq(SC(SYS_madvise, a, P, MADV_DONTNEED), 0);
	cr_assert(all(a, P, 0), "MADV_DONTNEED zeroes (private anonymous semantics)");
	cr_assert(all(a + P, P, 0xee));
	cr_assert(mapped(a, 2 * P), "still mapped");
	cr_assert_eq(SC(SYS_madvise, 16 * MiB, P, MADV_DONTNEED), -ENOMEM, "unmapped");
	cr_assert_eq(SC(SYS_madvise, a + 1, P, MADV_DONTNEED), -EINVAL, "unaligned");
}

/* Linux: madvise returns -EINVAL when len_in != 0 rounds up to 0 (mm/madvise.c). */
Test(sys, madvise_length_that_wraps_is_einval)
{
	uint64_t a = map(2 * P);

	cr_assert_eq(SC(SYS_madvise, a, UINT64_MAX, MADV_DONTNEED), -EINVAL,
		     "madvise(len = 2^64 - 1) must fail with -EINVAL");
	cr_assert_eq(SC(SYS_madvise, a, UINT64_MAX - 100, MADV_DONTNEED), -EINVAL);
}

/* Linux: mprotect returns -ENOMEM when start + PAGE_ALIGN(len) <= start (mm/mprotect.c). */
Test(sys, mprotect_length_that_wraps_is_enomem)
{
	uint64_t a = map(2 * P);

	cr_assert_eq(SC(SYS_mprotect, a, UINT64_MAX, PROT_READ), -ENOMEM,
		     "mprotect(len = 2^64 - 1) must fail with -ENOMEM");
}

/* ------------------------------------------------------------ console I/O */

Test(sys, write_and_writev_reach_the_console)
{
	uint64_t a = map(P);
	static const char m1[] = "to stderr\n", m2[] = "to stdout\n", v1[] = "vec", v2[] = "tor\n";

	put(a, m1, strlen(m1));
	cr_assert_eq(SC(SYS_write, 2, a, strlen(m1)), (long)strlen(m1));
	put(a + 100, m2, strlen(m2));
	cr_assert_eq(SC(SYS_write, 1, a + 100, strlen(m2)), (long)strlen(m2),
		     "without an agent fd 1 is the console too");
	put(a + 200, v1, 3);
	put(a + 300, v2, 4);
	struct iovec iov[3] = { { (void *)(uintptr_t)(a + 200), 3 }, { NULL, 0 },
				{ (void *)(uintptr_t)(a + 300), 4 } };
	put(a + 400, iov, sizeof(iov));
	cr_assert_eq(SC(SYS_writev, 2, a + 400, 3), 7);
	cr_assert_eq(SC(SYS_write, 2, a, 0), 0, "zero bytes");
	cr_assert_eq(SC(SYS_writev, 2, a + 400, 0), 0, "no vectors");
	char *s = serial_text();
	cr_assert_str_eq(s, "to stderr\nto stdout\nvector\n");
	cr_assert_eq(vm->console.tx_bytes, strlen(s));
	free(s);
}

Test(sys, read_stdin_without_agent_is_eof)
{
	uint64_t a = map(P);
	struct iovec iov = { (void *)(uintptr_t)a, 10 };

	fill(a, P, 0x33);
	cr_assert_eq(SC(SYS_read, 0, a, 10), 0, "EOF");
	cr_assert_eq(SC(SYS_read, 0, a, 0), 0);
	put(a + 100, &iov, sizeof(iov));
	cr_assert_eq(SC(SYS_readv, 0, a + 100, 1), 0);
	cr_assert_eq(SC(SYS_read, 2, a, 10), 0, "reading the console: EOF");
	cr_assert(all(a, 10, 0x33), "nothing was written to the buffer");
}

Test(sys, bad_fds_are_ebadf)
{
	uint64_t a = map(P);
	const uint64_t bad[] = { 3, 5, 63, 64, 1000, (uint64_t)-1, UINT64_MAX / 2 };

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t fd = bad[i];
		cr_assert_eq(SC(SYS_write, fd, a, 1), -EBADF, "write fd %lld", (long long)fd);
		cr_assert_eq(SC(SYS_read, fd, a, 1), -EBADF, "read fd %lld", (long long)fd);
		cr_assert_eq(SC(SYS_writev, fd, a, 1), -EBADF);
		cr_assert_eq(SC(SYS_readv, fd, a, 1), -EBADF);
		cr_assert_eq(SC(SYS_close, fd), -EBADF);
		cr_assert_eq(SC(SYS_fstat, fd, a), -EBADF);
		cr_assert_eq(SC(SYS_fcntl, fd, F_GETFL), -EBADF);
		cr_assert_eq(SC(SYS_ioctl, fd, 0x5401, a), -EBADF);
		cr_assert_eq(SC(SYS_lseek, fd, 0, SEEK_SET), -EBADF);
		cr_assert_eq(SC(SYS_dup, fd), -EBADF);
		cr_assert_eq(SC(SYS_dup2, fd, 10), -EBADF);
	}
	cr_assert_eq(SC(SYS_close, 2), 0);
	cr_assert_eq(SC(SYS_write, 2, a, 1), -EBADF, "a closed fd");
	cr_assert_eq(SC(SYS_close, 2), -EBADF, "closed twice");
}

/* ------------------------------------------------------------ user pointers */

static void expect_efault_write(uint64_t addr, uint64_t len, const char *what)
{
	cr_assert_eq(SC(SYS_write, 2, addr, len), -EFAULT, "write from %s", what);
}

Test(sys, efault_for_bad_pointers)
{
	uint64_t a = map_at(16 * MiB, P); /* unmapped on both sides */

	fill(a, P, 'x');
	expect_efault_write(0, 1, "NULL");
	expect_efault_write(0x1000, 1, "the system area (page tables)");
	expect_efault_write(0x5b000, 1, "the system area (KVM's trampoline)");
	expect_efault_write(FG_SYS_END - 1, 1, "the last byte of the system area");
	expect_efault_write(vm->mem.gpa_end, 1, "the first byte beyond RAM");
	expect_efault_write(vm->mem.gpa_end + 0x1000, 1, "beyond RAM");
	expect_efault_write(3 * GiB + 0x1000, 1, "where the hole would be");
	expect_efault_write(20 * MiB, 1, "unmapped user memory");
	expect_efault_write(a + P - 10, 20, "a buffer straddling the end of a mapping");
	expect_efault_write(a - 10, 20, "a buffer straddling the start of a mapping");
	expect_efault_write(a, 1ULL << 62, "a huge length");
	expect_efault_write(UINT64_MAX - 10, 5, "the top of the address space");
	expect_efault_write(UINT64_MAX - 10, 100, "a range that wraps");
	cr_assert_eq(SC(SYS_write, 2, a, UINT64_MAX), -EINVAL, "a negative count");
	cr_assert_eq(SC(SYS_write, 2, a + P - 10, 10), 10, "the last 10 bytes are fine");
	cr_assert_eq(SC(SYS_read, 0, 0x1000, 1), -EFAULT, "read into the system area");
	cr_assert_eq(SC(SYS_read, 0, a + P - 1, 2), -EFAULT, "read straddling the end");
	cr_assert_eq(SC(SYS_uname, 0), -EFAULT);
	cr_assert_eq(SC(SYS_uname, a + P - 10), -EFAULT);
	cr_assert_eq(SC(SYS_clock_gettime, CLOCK_REALTIME, 0x2000), -EFAULT);
	cr_assert_eq(SC(SYS_gettimeofday, vm->mem.gpa_end - 8, 0), -EFAULT);
	cr_assert_eq(SC(SYS_fstat, 1, 0), -EFAULT);
	cr_assert_eq(SC(SYS_getrandom, 20 * MiB, 16, 0), -EFAULT);
	cr_assert_eq(SC(SYS_sysinfo, 0x1000), -EFAULT);
	cr_assert_eq(SC(SYS_nanosleep, 0, 0), -EFAULT);
	char *s = serial_text();
	cr_assert_str_eq(s, "xxxxxxxxxx", "only the valid write reached the console");
	free(s);
}

Test(sys_4g, efault_in_the_hole, .init = setup_4g, .fini = teardown)
{
	uint64_t a = map(P);

	cr_assert_gt(a, 4 * GiB, "mmap serves high RAM first");
	cr_assert_eq(SC(SYS_write, 2, 3 * GiB + 0x1000, 1), -EFAULT, "the MMIO hole");
	cr_assert_eq(SC(SYS_write, 2, 4 * GiB - 1, 1), -EFAULT);
	cr_assert_lt(SC(SYS_mmap, 3 * GiB, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), 0,
		     "cannot map the hole");
	cr_assert_lt(SC(SYS_mmap, 3 * GiB - P, 2 * P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), 0,
		     "cannot map across the hole");
	cr_assert_eq(SC(SYS_mmap, 3 * GiB - P, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0),
		     (long)(3 * GiB - P), "right below the hole is fine");
	cr_assert_eq(SC(SYS_mmap, 4 * GiB, P, RW, ANON | MAP_FIXED, (uint64_t)-1, 0), (long)(4 * GiB),
		     "right above the hole is fine");
	cr_assert_eq(SC(SYS_write, 2, 3 * GiB - 10, 20), -EFAULT, "a buffer running into the hole");
	cr_assert_eq(SC(SYS_munmap, 3 * GiB - P, 2 * P), -EINVAL, "cannot unmap the hole");
	cr_assert(mapped(3 * GiB - P, P), "a refused munmap leaves the mapping below the hole");
	fill(3 * GiB - P, P, 'y');
	cr_assert_eq(SC(SYS_write, 2, 3 * GiB - 4, 4), 4);
	cr_assert_eq(SC(SYS_mremap, 3 * GiB - P, P, 2 * P, 0), -ENOMEM, "cannot grow into the hole");
}

Test(sys, iovec_validation)
{
	uint64_t a = map_at(16 * MiB, 8 * P);
	struct iovec iov[2];

	fill(a, 8 * P, 'z');
	cr_assert_eq(SC(SYS_writev, 2, a, 1025), -EINVAL, "more than IOV_MAX vectors");
	cr_assert_eq(SC(SYS_readv, 0, a, 1025), -EINVAL);
	cr_assert_eq(SC(SYS_writev, 2, a, 1ULL << 60), -EINVAL, "a count whose byte size wraps");
	cr_assert_eq(SC(SYS_writev, 2, 0, 1), -EFAULT, "NULL vector");
	cr_assert_eq(SC(SYS_writev, 2, a + 8 * P - 8, 1), -EFAULT, "vector straddles the mapping end");
	/* 1024 empty vectors are fine. */
	memset(host(a), 0, 1024 * sizeof(struct iovec));
	cr_assert_eq(SC(SYS_writev, 2, a, 1024), 0);
	/* Lengths that sum past SSIZE_MAX. */
	iov[0] = (struct iovec){ (void *)(uintptr_t)(a + 7 * P), 1 };
	iov[1] = (struct iovec){ (void *)(uintptr_t)(a + 7 * P), UINT64_MAX };
	put(a, iov, sizeof(iov));
	cr_assert_eq(SC(SYS_writev, 2, a, 2), -EINVAL);
	iov[1].iov_len = (size_t)INT64_MAX;
	put(a, iov, sizeof(iov));
	cr_assert_eq(SC(SYS_writev, 2, a, 2), -EINVAL);
	/* A base that wraps. */
	iov[0] = (struct iovec){ (void *)(uintptr_t)(UINT64_MAX - 10), 100 };
	put(a, iov, sizeof(iov));
	cr_assert_eq(SC(SYS_writev, 2, a, 1), -EFAULT);
	/* The first buffer is written, the second faults: the partial count. */
	iov[0] = (struct iovec){ (void *)(uintptr_t)(a + 7 * P), 3 };
	iov[1] = (struct iovec){ (void *)(uintptr_t)0x1000, 3 };
	put(a, iov, sizeof(iov));
	cr_assert_eq(SC(SYS_writev, 2, a, 2), 3);
	cr_assert_eq(SC(SYS_readv, 0, a, 2), -EFAULT, "readv checks every buffer");
	char *s = serial_text();
	cr_assert_str_eq(s, "zzz");
	free(s);
}

/* ------------------------------------------------------------ fd table */

Test(sys, close_dup_dup2_dup3)
{
	uint64_t a = map(P);

	put(a, "dup!", 4);
	cr_assert_eq(SC(SYS_dup, 2), 3, "the lowest free fd");
	cr_assert_eq(SC(SYS_write, 3, a, 4), 4, "the copy writes to the console");
	cr_assert_eq(SC(SYS_close, 3), 0);
	cr_assert_eq(SC(SYS_write, 3, a, 4), -EBADF);
	cr_assert_eq(SC(SYS_dup2, 2, 10), 10);
	cr_assert_eq(SC(SYS_dup2, 2, 2), 2, "dup2 onto itself");
	cr_assert_eq(SC(SYS_dup2, 2, 64), -EBADF, "newfd out of range");
	cr_assert_eq(SC(SYS_dup2, 0, 10), 10, "dup2 replaces an open fd");
	cr_assert_eq(SC(SYS_write, 10, a, 4), 4, "fd 10 is now /dev/null-like stdin");
	cr_assert_eq(SC(SYS_dup3, 2, 2, 0), -EINVAL, "dup3 onto itself");
	cr_assert_eq(SC(SYS_dup3, 2, 7, 0x1), -EINVAL, "unknown dup3 flag");
	cr_assert_eq(SC(SYS_dup3, 2, 7, O_CLOEXEC), 7);
	cr_assert_eq(SC(SYS_fcntl, 7, F_GETFD), FD_CLOEXEC);
	cr_assert_eq(SC(SYS_fcntl, 2, F_GETFD), 0);
	cr_assert_eq(SC(SYS_dup3, 9, 11, 0), -EBADF);
	char *s = serial_text();
	cr_assert_str_eq(s, "dup!");
	free(s);
}

Test(sys, dup_runs_out_of_fds)
{
	for (long fd = 3; fd < FG_MAX_FDS; fd++)
		cr_assert_eq(SC(SYS_dup, 2), fd);
	cr_assert_eq(SC(SYS_dup, 2), -EMFILE);
	cr_assert_eq(SC(SYS_fcntl, 2, F_DUPFD, 0), -EMFILE);
	cr_assert_eq(SC(SYS_close, 40), 0);
	cr_assert_eq(SC(SYS_dup, 2), 40);
}

Test(sys, fcntl)
{
	cr_assert_eq(SC(SYS_fcntl, 2, F_GETFL) & O_ACCMODE, O_RDWR);
	cr_assert_eq(SC(SYS_fcntl, 2, F_GETFL) & O_NONBLOCK, 0);
	cr_assert_eq(SC(SYS_fcntl, 2, F_SETFL, O_NONBLOCK), 0);
	cr_assert_eq(SC(SYS_fcntl, 2, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
	cr_assert_eq(SC(SYS_fcntl, 2, F_SETFD, FD_CLOEXEC), 0);
	cr_assert_eq(SC(SYS_fcntl, 2, F_GETFD), FD_CLOEXEC);
	cr_assert_eq(SC(SYS_fcntl, 2, F_DUPFD, 20), 20, "lowest free at or above 20");
	cr_assert_eq(SC(SYS_fcntl, 2, F_DUPFD, 20), 21);
	cr_assert_eq(SC(SYS_fcntl, 21, F_GETFD), 0, "F_DUPFD clears FD_CLOEXEC");
	cr_assert_eq(SC(SYS_fcntl, 2, F_DUPFD_CLOEXEC, 5), 5);
	cr_assert_eq(SC(SYS_fcntl, 5, F_GETFD), FD_CLOEXEC);
	cr_assert_eq(SC(SYS_fcntl, 2, F_DUPFD, FG_MAX_FDS), -EINVAL);
	cr_assert_eq(SC(SYS_fcntl, 2, 9999), -EINVAL, "unknown command");
}

Test(sys, ioctl_lseek_fstat)
{
	uint64_t a = map(P);
	struct stat st;

	cr_assert_eq(SC(SYS_ioctl, 1, 0x5401 /* TCGETS */, a), -ENOTTY);
	cr_assert_eq(SC(SYS_ioctl, 0, 0x5413 /* TIOCGWINSZ */, a), -ENOTTY);
	cr_assert_eq(SC(SYS_lseek, 1, 0, SEEK_CUR), -ESPIPE);
	cr_assert_eq(SC(SYS_fstat, 2, a), 0);
	cr_assert_eq(gmem_read(&vm->mem, a, &st, sizeof(st)), 0);
	cr_assert(S_ISCHR(st.st_mode), "the console is a character device");
	cr_assert_eq(st.st_nlink, 1);
}

/* ------------------------------------------------------------ identity */

Test(sys, identity)
{
	cr_assert_eq(SC(SYS_getpid), 1);
	cr_assert_eq(SC(SYS_gettid), 1);
	cr_assert_eq(SC(SYS_getppid), 0);
	cr_assert_eq(SC(SYS_getuid), 0);
	cr_assert_eq(SC(SYS_geteuid), 0);
	cr_assert_eq(SC(SYS_getgid), 0);
	cr_assert_eq(SC(SYS_getegid), 0);
	cr_assert_eq(SC(SYS_set_tid_address, 0), 1);
	cr_assert_eq(SC(SYS_set_robust_list, 0, 24), 0);
	cr_assert_eq(SC(SYS_set_robust_list, 0, 16), -EINVAL);
}

Test(sys, uname_fields)
{
	uint64_t a = map(P);
	struct utsname u;

	cr_assert_eq(SC(SYS_uname, a), 0);
	cr_assert_eq(gmem_read(&vm->mem, a, &u, sizeof(u)), 0);
	cr_assert_str_eq(u.sysname, "Linux");
	cr_assert_str_eq(u.machine, "x86_64");
	cr_assert_str_eq(u.nodename, "testhost", "the configured hostname");
	cr_assert_geq(strlen(u.release), 3);
	cr_assert(u.release[0] >= '3' && u.release[0] <= '9', "a release musl accepts: %s", u.release);
	cr_assert_neq(strlen(u.version), 0);
}

Test(sys, getrandom_fills)
{
	uint64_t a = map_at(16 * MiB, P);
	uint8_t first[256];

	cr_assert_eq(SC(SYS_getrandom, a, 256, 0), 256);
	cr_assert(!all(a, 256, 0), "random bytes are not all zero");
	memcpy(first, host(a), 256);
	cr_assert_eq(SC(SYS_getrandom, a, 256, GRND_NONBLOCK), 256);
	cr_assert_neq(memcmp(first, host(a), 256), 0, "two calls differ");
	cr_assert_eq(SC(SYS_getrandom, a, 0, 0), 0);
	cr_assert_eq(SC(SYS_getrandom, a, 16, 0x80), -EINVAL, "unknown flag");
	cr_assert_eq(SC(SYS_getrandom, a + P - 8, 16, 0), -EFAULT);
}

Test(sys, sysinfo_totals)
{
	uint64_t a = map(P);
	struct sysinfo si;

	cr_assert_eq(SC(SYS_sysinfo, a), 0);
	cr_assert_eq(gmem_read(&vm->mem, a, &si, sizeof(si)), 0);
	cr_assert_eq(si.mem_unit, 1);
	cr_assert_eq(si.totalram, 64 * MiB);
	cr_assert_eq(si.freeram, 64 * MiB - vm->fg->mm.mapped - FG_SYS_END);
	cr_assert_lt(si.freeram, si.totalram);
	cr_assert_eq(si.procs, 1);
	cr_assert_lt(si.uptime, 60);
}

/* ------------------------------------------------------------ time */

static uint64_t ts_ns(uint64_t gpa)
{
	struct timespec ts;
	cr_assert_eq(gmem_read(&vm->mem, gpa, &ts, sizeof(ts)), 0);
	cr_assert(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void put_ts(uint64_t gpa, long sec, long nsec)
{
	struct timespec ts = { .tv_sec = sec, .tv_nsec = nsec };
	put(gpa, &ts, sizeof(ts));
}

Test(sys, clocks)
{
	uint64_t a = map(P), t1, t2;

	cr_assert_eq(SC(SYS_clock_gettime, CLOCK_REALTIME, a), 0);
	t1 = ts_ns(a);
	uint64_t now = time_real_ns();
	cr_assert(t1 <= now && now - t1 < 2000000000ULL, "CLOCK_REALTIME is the host's");
	cr_assert_eq(SC(SYS_clock_gettime, CLOCK_MONOTONIC, a), 0);
	t1 = ts_ns(a);
	cr_assert_lt(t1, 60000000000ULL, "guest monotonic counts from the VM's start");
	cr_assert_eq(SC(SYS_clock_gettime, CLOCK_MONOTONIC, a), 0);
	t2 = ts_ns(a);
	cr_assert_geq(t2, t1, "monotonic");
	cr_assert_eq(SC(SYS_clock_gettime, CLOCK_BOOTTIME, a), 0);
	cr_assert_eq(SC(SYS_clock_gettime, CLOCK_PROCESS_CPUTIME_ID, a), 0);
	cr_assert_eq(SC(SYS_clock_gettime, 99, a), -EINVAL, "unknown clock");
	cr_assert_eq(SC(SYS_clock_getres, CLOCK_MONOTONIC, a), 0);
	cr_assert_eq(ts_ns(a), 1);
	cr_assert_eq(SC(SYS_clock_getres, CLOCK_MONOTONIC, 0), 0, "res pointer may be NULL");

	struct timeval tv;
	cr_assert_eq(SC(SYS_gettimeofday, a, 0), 0);
	cr_assert_eq(gmem_read(&vm->mem, a, &tv, sizeof(tv)), 0);
	cr_assert(tv.tv_usec >= 0 && tv.tv_usec < 1000000);
	long long d = (long long)tv.tv_sec - (long long)(time_real_ns() / 1000000000ULL);
	cr_assert(d >= -2 && d <= 0, "gettimeofday is the host's time");
	cr_assert_eq(SC(SYS_gettimeofday, 0, a + 64), 0, "only the timezone");
	long t = SC(SYS_time, 0);
	cr_assert(t > 1600000000L && (uint64_t)t <= time_real_ns() / 1000000000ULL);
}

Test(sys, nanosleep_sleeps)
{
	uint64_t a = map(P), t0, dt;

	put_ts(a, 0, 10 * 1000 * 1000);
	t0 = time_mono_ns();
	cr_assert_eq(SC(SYS_nanosleep, a, 0), 0);
	dt = time_mono_ns() - t0;
	cr_assert_geq(dt, 10000000ULL, "slept only %llu ns", (unsigned long long)dt);
	cr_assert_lt(dt, 2000000000ULL);
	put_ts(a, 0, 0);
	cr_assert_eq(SC(SYS_nanosleep, a, 0), 0, "zero");
	put_ts(a, 0, 1000000000L);
	cr_assert_eq(SC(SYS_nanosleep, a, 0), -EINVAL, "tv_nsec >= 1e9");
	put_ts(a, 0, -1);
	cr_assert_eq(SC(SYS_nanosleep, a, 0), -EINVAL, "negative tv_nsec");
	put_ts(a, -1, 0);
	cr_assert_eq(SC(SYS_nanosleep, a, 0), -EINVAL, "negative tv_sec");
}

Test(sys, clock_nanosleep)
{
	uint64_t a = map(P), t0;

	put_ts(a, 0, 5 * 1000 * 1000);
	t0 = time_mono_ns();
	cr_assert_eq(SC(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, a, 0), 0);
	cr_assert_geq(time_mono_ns() - t0, 5000000ULL);
	/* An absolute deadline in the past returns at once. */
	put_ts(a, 0, 1);
	t0 = time_mono_ns();
	cr_assert_eq(SC(SYS_clock_nanosleep, CLOCK_MONOTONIC, TIMER_ABSTIME, a, 0), 0);
	cr_assert_eq(SC(SYS_clock_nanosleep, CLOCK_REALTIME, TIMER_ABSTIME, a, 0), 0);
	cr_assert_lt(time_mono_ns() - t0, 1000000000ULL);
	/* An absolute realtime deadline 5 ms ahead. */
	uint64_t dl = time_real_ns() + 5000000ULL;
	put_ts(a, (long)(dl / 1000000000ULL), (long)(dl % 1000000000ULL));
	cr_assert_eq(SC(SYS_clock_nanosleep, CLOCK_REALTIME, TIMER_ABSTIME, a, 0), 0);
	cr_assert_geq(time_real_ns() + 1000000ULL, dl, "woke before the realtime deadline");
	cr_assert_eq(SC(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0x8, a, 0), -EINVAL, "unknown flag");
	cr_assert_eq(SC(SYS_clock_nanosleep, CLOCK_THREAD_CPUTIME_ID, 0, a, 0), -EINVAL);
	cr_assert_eq(SC(SYS_clock_nanosleep, 99, 0, a, 0), -EINVAL);
}

/* ------------------------------------------------------------ futex */

Test(sys, futex_basics)
{
	uint64_t a = map(P), t0;
	uint32_t word = 5;

	put(a, &word, 4);
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAKE, 1), 0, "no waiters");
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAKE_PRIVATE, INT32_MAX), 0);
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAIT, 4, 0), -EAGAIN, "value mismatch");
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAIT_PRIVATE, 4, 0), -EAGAIN);
	cr_assert_eq(SC(SYS_futex, a + 2, FUTEX_WAIT, 5, 0), -EINVAL, "misaligned");
	cr_assert_eq(SC(SYS_futex, a + 1, FUTEX_WAKE, 1), -EINVAL, "misaligned");
	cr_assert_eq(SC(SYS_futex, 16 * MiB, FUTEX_WAKE, 1), -EFAULT, "unmapped");
	cr_assert_eq(SC(SYS_futex, 0x1000, FUTEX_WAIT, 0, 0), -EFAULT, "system area");
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAIT_BITSET, 5, 0, 0, 0), -EINVAL, "empty bitset");
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAKE_BITSET, 1, 0, 0, 0), -EINVAL, "empty bitset");
	cr_assert_eq(SC(SYS_futex, a, 99, 0), -ENOSYS, "unknown operation");

	/* A matching value with a 5 ms timeout times out. */
	put_ts(a + 64, 0, 5 * 1000 * 1000);
	t0 = time_mono_ns();
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAIT, 5, a + 64), -ETIMEDOUT);
	cr_assert_geq(time_mono_ns() - t0, 5000000ULL);
	cr_assert_null(vm->fg->waiters, "the timed-out waiter is unlinked");
	put_ts(a + 64, 0, 1000000000L);
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAIT, 5, a + 64), -EINVAL, "bad timeout");
	/* WAIT_BITSET takes an absolute time: one in the past times out at once. */
	put_ts(a + 64, 0, 1);
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAIT_BITSET, 5, a + 64, 0, FUTEX_BITSET_MATCH_ANY),
		     -ETIMEDOUT);
}

/* Waiters queued by hand (as blocked guest threads would be). */
Test(sys, futex_wake_and_requeue_waiters)
{
	uint64_t a = map(P);
	uint32_t zero = 0;
	struct fg_futex_waiter w[4] = {
		{ .uaddr = a, .bitset = 0x1 },
		{ .uaddr = a + 4, .bitset = FUTEX_BITSET_MATCH_ANY },
		{ .uaddr = a, .bitset = 0x4 },
		{ .uaddr = a, .bitset = 0x2 },
	};

	put(a, &zero, 4);
	put(a + 4, &zero, 4);
	vm->fg->waiters = &w[0];
	w[0].next = &w[1];
	w[1].next = &w[2];
	w[2].next = &w[3];

	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAKE_BITSET, 10, 0, 0, 0x2), 1, "only the matching bitset");
	cr_assert(w[3].woken && !w[0].woken && !w[2].woken);
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAKE, 1), 1, "at most val waiters");
	cr_assert(w[0].woken, "the oldest first");
	cr_assert(!w[2].woken);
	/* Requeue the remaining waiter of a onto a + 4 (CMP: the word must match). */
	cr_assert_eq(SC(SYS_futex, a, FUTEX_CMP_REQUEUE, 0, 5, a + 4, 1), -EAGAIN, "value mismatch");
	cr_assert_eq(SC(SYS_futex, a, FUTEX_CMP_REQUEUE, 0, 5, a + 4, 0), 1, "woken + requeued");
	cr_assert_eq(w[2].uaddr, a + 4);
	cr_assert(!w[2].woken);
	cr_assert_eq(SC(SYS_futex, a, FUTEX_WAKE, 10), 0, "nobody waits on a any more");
	cr_assert_eq(SC(SYS_futex, a + 4, FUTEX_WAKE, 10), 2, "both waiters of a + 4");
	cr_assert(w[1].woken && w[2].woken);
	cr_assert_null(vm->fg->waiters, "woken waiters are unlinked");
	cr_assert_eq(SC(SYS_futex, a, FUTEX_CMP_REQUEUE, 0, 5, a + 2, 0), -EINVAL, "misaligned target");
	cr_assert_eq(SC(SYS_futex, a, FUTEX_REQUEUE, (uint64_t)-1, 5, a + 4, 0), -EINVAL);
}

/* Linux checks nothing about the buffer of a zero-length read or of an
 * empty iovec array (access_ok(p, 0) holds): both return 0. */
Test(sys, zero_length_io_ignores_the_buffer)
{
	long r;

	r = SC(SYS_write, 2, 0, 0);
	cr_expect_eq(r, 0, "write(2, NULL, 0) = %ld", r);
	r = SC(SYS_read, 0, 0, 0);
	cr_expect_eq(r, 0, "read(0, NULL, 0) = %ld", r);
	r = SC(SYS_writev, 2, 0, 0);
	cr_expect_eq(r, 0, "writev(2, NULL, 0) = %ld", r);
	r = SC(SYS_readv, 0, 0, 0);
	cr_expect_eq(r, 0, "readv(0, NULL, 0) = %ld", r);
}

/* ------------------------------------------------------------ threads */

Test(sys, clone_needs_a_free_vcpu)
{
	struct vregs regs = { 0 };
	const uint64_t flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
			       CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
	uint64_t stack = map(4 * P);

	memset(&last, 0, sizeof(last));
	pthread_mutex_lock(&vm->lock);
	struct fg_call c = { .fg = vm->fg, .vm = vm, .v = &vm->vcpus[0], .t = vm->vcpus[0].gt,
			     .nr = SYS_clone, .a = { flags, stack + 4 * P, stack, stack + 8, 0x5000 },
			     .regs = &regs };
	long r = fg_syscall(&c);
	pthread_mutex_unlock(&vm->lock);
	cr_assert_eq(r, -EAGAIN, "one vCPU, already running the main thread");
	cr_assert_eq(SC(SYS_clone, SIGCHLD, 0, 0, 0, 0), -ENOSYS, "fork");
	cr_assert_eq(SC(SYS_clone, CLONE_VM | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0), -ENOSYS, "vfork");
}

static long clone_on(unsigned vi, uint64_t flags, uint64_t sp, uint64_t ptid, uint64_t ctid,
		     uint64_t tls, struct vregs *regs)
{
	pthread_mutex_lock(&vm->lock);
	/* the caller's user context at the call */
	regs->rip = 0x401234;
	regs->rflags = 0x3246;
	regs->rsp = 0x7000;
	struct fg_call c = { .fg = vm->fg, .vm = vm, .v = &vm->vcpus[vi], .t = vm->vcpus[vi].gt,
			     .nr = SYS_clone, .a = { flags, sp, ptid, ctid, tls }, .regs = regs };
	long r = fg_syscall(&c);
	pthread_mutex_unlock(&vm->lock);
	return r;
}

Test(sys_smp, clone_thread_and_exits, .init = setup_2cpu, .fini = teardown)
{
	const uint64_t flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
			       CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
	struct vregs regs;
	uint64_t stack = map(4 * P);
	uint32_t tid_word = 0xffffffff;

	memset(&regs, 0, sizeof(regs));
	regs.rbx = 0xb0b;
	put(stack + 8, &tid_word, 4);
	long tid = clone_on(0, flags, stack + 4 * P, stack, stack + 8, 0x5000, &regs);
	cr_assert_eq(tid, 2);
	struct vcpu *v1 = &vm->vcpus[1];
	cr_assert_not_null(v1->gt);
	cr_assert_eq(v1->gt->tid, 2);
	cr_assert(v1->start_pending);
	cr_assert_eq(v1->start.regs.rip, 0x401234, "the child returns where the parent does");
	cr_assert_eq(v1->start.regs.rsp, stack + 4 * P);
	cr_assert_eq(v1->start.regs.rax, 0, "clone returns 0 in the child");
	cr_assert_eq(v1->start.regs.rbx, 0xb0b, "other registers are the parent's");
	cr_assert_eq(v1->start.regs.rflags, 0x246 & ~0x200ULL, "IOPL and IF not inherited");
	cr_assert_eq(v1->start.fs_base, 0x5000, "CLONE_SETTLS");
	uint32_t ptid;
	cr_assert_eq(gmem_read(&vm->mem, stack, &ptid, 4), 0);
	cr_assert_eq(ptid, 2, "CLONE_PARENT_SETTID");
	cr_assert_eq(vm->fg->nr_live, 2);
	cr_assert_eq(clone_on(0, flags, stack, stack, stack + 8, 0, &regs), -EAGAIN, "no vCPU left");

	/* The child exits: its tid word is cleared, the VM lives on. */
	cr_assert_eq(SC_ON(1, SYS_exit, 7), 0);
	cr_assert(last.no_return);
	cr_assert_null(v1->gt);
	cr_assert_eq(gmem_read(&vm->mem, stack + 8, &tid_word, 4), 0);
	cr_assert_eq(tid_word, 0, "CLONE_CHILD_CLEARTID");
	struct vm_exit_info ei;
	vm_get_exit_info(vm, &ei);
	cr_assert(!ei.exited, "one thread is still running");
	/* The last thread's exit ends the VM with its status. */
	cr_assert_eq(SC(SYS_exit, 3), 0);
	cr_assert(last.no_return);
	vm_get_exit_info(vm, &ei);
	cr_assert(ei.exited);
	cr_assert(!ei.faulted);
	cr_assert_eq(ei.status, 3);
}

Test(sys, sigprocmask)
{
	uint64_t a = map(P);
	uint64_t set = (1ULL << (SIGUSR1 - 1)) | (1ULL << (SIGKILL - 1)), old = 0;

	put(a, &set, 8);
	cr_assert_eq(SC(SYS_rt_sigprocmask, SIG_BLOCK, a, 0, 4), -EINVAL, "sigsetsize 4");
	cr_assert_eq(SC(SYS_rt_sigprocmask, SIG_BLOCK, a, 0, 16), -EINVAL, "sigsetsize 16");
	cr_assert_eq(SC(SYS_rt_sigprocmask, SIG_BLOCK, a, 0, 8), 0);
	cr_assert_eq(SC(SYS_rt_sigprocmask, SIG_BLOCK, 0, a + 8, 8), 0);
	cr_assert_eq(gmem_read(&vm->mem, a + 8, &old, 8), 0);
	cr_assert_eq(old, 1ULL << (SIGUSR1 - 1), "SIGKILL cannot be blocked");
	cr_assert_eq(SC(SYS_rt_sigprocmask, 42, a, 0, 8), -EINVAL, "bad how");
	cr_assert_eq(SC(SYS_rt_sigprocmask, SIG_UNBLOCK, a, a + 8, 8), 0);
	cr_assert_eq(SC(SYS_rt_sigprocmask, SIG_SETMASK, 0, a + 8, 8), 0);
	cr_assert_eq(gmem_read(&vm->mem, a + 8, &old, 8), 0);
	cr_assert_eq(old, 0);
	cr_assert_eq(SC(SYS_rt_sigprocmask, SIG_BLOCK, 0x1000, 0, 8), -EFAULT);
}

Test(sys, arch_prctl_and_affinity)
{
	uint64_t a = map(P), v = 0;

	cr_assert_eq(SC(SYS_arch_prctl, 0x1002 /* ARCH_SET_FS */, 0x7000), 0);
	cr_assert_eq(SC(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, a), 0);
	cr_assert_eq(gmem_read(&vm->mem, a, &v, 8), 0);
	cr_assert_eq(v, 0x7000);
	cr_assert_eq(SC(SYS_arch_prctl, 0x1002, 1ULL << 47), -EPERM, "non-canonical");
	cr_assert_eq(SC(SYS_arch_prctl, 0x9999, a), -EINVAL);
	cr_assert_eq(SC(SYS_sched_getaffinity, 0, 8, a), 8);
	cr_assert_eq(gmem_read(&vm->mem, a, &v, 8), 0);
	cr_assert_eq(v, 1, "one vCPU");
	cr_assert_eq(SC(SYS_sched_getaffinity, 0, 4, a), -EINVAL);
	unsigned cpu = 99;
	cr_assert_eq(SC(SYS_getcpu, a, 0, 0), 0);
	cr_assert_eq(gmem_read(&vm->mem, a, &cpu, 4), 0);
	cr_assert_eq(cpu, 0);
}

/* ------------------------------------------------------------ exit, signals */

Test(sys, exit_group_records_the_status)
{
	struct vm_exit_info ei;

	vm_get_exit_info(vm, &ei);
	cr_assert(!ei.exited);
	cr_assert_eq(SC(SYS_exit_group, 0x1203), 0);
	cr_assert(last.no_return, "exit_group does not return to the guest");
	vm_get_exit_info(vm, &ei);
	cr_assert(ei.exited);
	cr_assert(!ei.faulted);
	cr_assert_eq(ei.status, 3, "the status is the low 8 bits");
	cr_assert(strstr(ei.reason, "3"), "%s", ei.reason);
	cr_assert(__atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST));
	/* A second exit does not overwrite the first. */
	cr_assert_eq(SC(SYS_exit_group, 9), 0);
	vm_get_exit_info(vm, &ei);
	cr_assert_eq(ei.status, 3);
}

Test(sys, signals_to_self_are_fatal)
{
	struct vm_exit_info ei;

	cr_assert_eq(SC(SYS_tkill, 1, 0), 0, "signal 0 probes");
	cr_assert_eq(SC(SYS_tkill, 2, 0), -ESRCH);
	cr_assert_eq(SC(SYS_tgkill, 5, 1, SIGTERM), -ESRCH, "wrong tgid");
	cr_assert_eq(SC(SYS_kill, 1, 0), 0);
	cr_assert_eq(SC(SYS_kill, 77, SIGTERM), -ESRCH);
	cr_assert_eq(SC(SYS_tkill, 1, 65), -EINVAL);
	vm_get_exit_info(vm, &ei);
	cr_assert(!ei.exited);
	cr_assert_eq(SC(SYS_tgkill, 1, 1, SIGABRT), 0);
	cr_assert(last.no_return);
	vm_get_exit_info(vm, &ei);
	cr_assert(ei.exited && ei.faulted);
	cr_assert_eq(ei.status, 128 + SIGABRT);
}

Test(sys, unknown_syscalls_are_enosys)
{
	uint64_t calls = vm->syscalls, enosys = vm->syscalls_enosys;

	cr_assert_eq(SC(400), -ENOSYS);
	cr_assert_eq(SC(100000), -ENOSYS);
	cr_assert_eq(SC(UINT64_MAX), -ENOSYS);
	cr_assert_eq(SC(SYS_fork), -ENOSYS);
	cr_assert_eq(SC(SYS_openat, (uint64_t)AT_FDCWD, 0x1000, 0), -ENOSYS);
	cr_assert_eq(vm->syscalls_enosys, enosys + 5);
	cr_assert_eq(vm->syscalls, calls + 5);
	cr_assert_eq(SC(SYS_getpid), 1);
	cr_assert_eq(vm->syscalls_enosys, enosys + 5, "served calls are not counted as ENOSYS");
	cr_assert_eq(vm->syscalls, calls + 6);
	struct vm_counters cnt;
	vm_get_counters(vm, &cnt);
	cr_assert_eq(cnt.syscalls_enosys, enosys + 5);
	cr_assert_eq(cnt.memory_mapped_bytes, vm->fg->mm.mapped);
}
