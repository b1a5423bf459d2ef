/* tests/unit/test_gmem.c - vmm/gmem: the guest-physical layout around the
 * MMIO hole [3 GiB, 4 GiB), overflow-safe bounds checks in gmem_ptr(),
 * gmem_discard() on memfd and anonymous backing, size limits. All RAM is
 * MAP_NORESERVE, so multi-GiB guests cost only the pages the tests touch. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "vmm/gmem.h"

static void init_or_die(struct gmem *m, uint64_t size, enum gmem_backing b)
{
	int rc = gmem_init(m, size, b);
	cr_assert_eq(rc, 0, "gmem_init(%llu MiB, %d) = %d", (unsigned long long)(size / MiB), b, rc);
	cr_assert_not_null(m->host);
}

/* ------------------------------------------------------------ layout */

Test(gmem, layout_below_hole_is_one_region)
{
	struct gmem m;

	init_or_die(&m, 64 * MiB, GMEM_ANON);
	cr_assert_eq(m.size, 64 * MiB);
	cr_assert_eq(m.nr_regions, 1);
	cr_assert_eq(m.regions[0].gpa, 0);
	cr_assert_eq(m.regions[0].size, 64 * MiB);
	cr_assert_eq(m.regions[0].offset, 0);
	cr_assert_eq(m.gpa_end, 64 * MiB);
	cr_assert_eq(m.fd, -1, "anonymous RAM has no fd");
	gmem_fini(&m);
	cr_assert_null(m.host);
}

Test(gmem, layout_exactly_3g_does_not_use_high_ram)
{
	struct gmem m;

	init_or_die(&m, 3 * GiB, GMEM_ANON);
	cr_assert_eq(m.nr_regions, 1);
	cr_assert_eq(m.regions[0].size, 3 * GiB);
	cr_assert_eq(m.gpa_end, GMEM_HOLE_START);
	cr_assert_null(gmem_ptr(&m, GMEM_HOLE_START, 1));
	cr_assert_null(gmem_ptr(&m, GMEM_HOLE_END, 1));
	gmem_fini(&m);
}

Test(gmem, layout_above_hole_continues_at_4g)
{
	struct gmem m;

	init_or_die(&m, 3 * GiB + 2 * MiB, GMEM_ANON);
	cr_assert_eq(m.nr_regions, 2);
	cr_assert_eq(m.regions[0].gpa, 0);
	cr_assert_eq(m.regions[0].size, 3 * GiB);
	cr_assert_eq(m.regions[1].gpa, 4 * GiB);
	cr_assert_eq(m.regions[1].size, 2 * MiB);
	cr_assert_eq(m.regions[1].offset, 3 * GiB, "high RAM follows low RAM in the backing");
	cr_assert_eq(m.gpa_end, 4 * GiB + 2 * MiB);
	gmem_fini(&m);
}

Test(gmem, layout_memfd_6g)
{
	struct gmem m;

	init_or_die(&m, 6 * GiB, GMEM_MEMFD);
	cr_assert_geq(m.fd, 0, "memfd backing has an fd");
	cr_assert_eq(lseek(m.fd, 0, SEEK_END), (off_t)(6 * GiB), "the memfd is the RAM size");
	cr_assert_eq(m.nr_regions, 2);
	cr_assert_eq(m.regions[1].gpa, 4 * GiB);
	cr_assert_eq(m.regions[1].size, 3 * GiB);
	cr_assert_eq(m.gpa_end, 7 * GiB);
	gmem_fini(&m);
	cr_assert_eq(m.fd, -1);
}

Test(gmem, host_offsets_follow_regions)
{
	struct gmem m;
	uint8_t *lo, *hi;

	init_or_die(&m, 4 * GiB, GMEM_MEMFD);
	lo = gmem_ptr(&m, 3 * GiB - 1, 1);
	hi = gmem_ptr(&m, 4 * GiB, 1);
	cr_assert_eq(lo, m.host + 3 * GiB - 1);
	cr_assert_eq(hi, m.host + 3 * GiB, "gpa 4 GiB is backing offset 3 GiB");
	cr_assert_eq(gmem_ptr(&m, m.gpa_end - 1, 1), m.host + m.size - 1);

	/* gmem_write/gmem_read agree with the host view. */
	uint64_t v = 0x1122334455667788ULL, r = 0;
	cr_assert_eq(gmem_write(&m, 4 * GiB + 0x123, &v, sizeof(v)), 0);
	cr_assert_eq(memcmp(m.host + 3 * GiB + 0x123, &v, sizeof(v)), 0);
	cr_assert_eq(gmem_read(&m, 4 * GiB + 0x123, &r, sizeof(r)), 0);
	cr_assert_eq(r, v);
	gmem_fini(&m);
}

/* ------------------------------------------------------------ bounds */

Test(gmem, ptr_bounds_low_ram)
{
	struct gmem m;
	const uint64_t sz = 32 * MiB;

	init_or_die(&m, sz, GMEM_ANON);
	cr_assert_eq(gmem_ptr(&m, 0, 1), m.host);
	cr_assert_eq(gmem_ptr(&m, 0, sz), m.host, "all of RAM at once");
	cr_assert_null(gmem_ptr(&m, 0, sz + 1));
	cr_assert_eq(gmem_ptr(&m, sz - 1, 1), m.host + sz - 1, "last byte");
	cr_assert_null(gmem_ptr(&m, sz, 1), "one past the end");
	cr_assert_null(gmem_ptr(&m, sz - 4096, 4097), "straddles the end");
	cr_assert_eq(gmem_ptr(&m, sz - 4096, 4096), m.host + sz - 4096);
	cr_assert_null(gmem_ptr(&m, 3 * GiB + 4096, 1), "in the hole, no high RAM");
	cr_assert(gmem_is_ram(&m, 0, sz));
	cr_assert(!gmem_is_ram(&m, 1, sz));
	gmem_fini(&m);
}

Test(gmem, ptr_bounds_overflow)
{
	struct gmem m;

	init_or_die(&m, 3 * GiB + 64 * MiB, GMEM_ANON);
	cr_assert_null(gmem_ptr(&m, UINT64_MAX, 1));
	cr_assert_null(gmem_ptr(&m, UINT64_MAX, 0));
	cr_assert_null(gmem_ptr(&m, UINT64_MAX - 7, 8));
	cr_assert_null(gmem_ptr(&m, 0, UINT64_MAX));
	cr_assert_null(gmem_ptr(&m, 4096, UINT64_MAX - 100), "gpa + len wraps around");
	cr_assert_null(gmem_ptr(&m, 4096, UINT64_MAX - 4095), "gpa + len wraps to exactly 0");
	cr_assert_null(gmem_ptr(&m, 4 * GiB, UINT64_MAX - 4 * GiB + 1), "wraps from high RAM");
	cr_assert_null(gmem_ptr(&m, 4 * GiB + 4096, UINT64_MAX));
	cr_assert_null(gmem_ptr(&m, UINT64_MAX - 4095, 4096));
	cr_assert(!gmem_is_ram(&m, UINT64_MAX, 2));
	uint8_t b = 0;
	cr_assert_eq(gmem_read(&m, UINT64_MAX, &b, 1), -EFAULT);
	cr_assert_eq(gmem_write(&m, UINT64_MAX - 1, &b, 1), -EFAULT);
	gmem_fini(&m);
}

Test(gmem, ptr_never_crosses_the_hole)
{
	struct gmem m;

	init_or_die(&m, 4 * GiB, GMEM_ANON);
	cr_assert_not_null(gmem_ptr(&m, 3 * GiB - 4096, 4096));
	cr_assert_null(gmem_ptr(&m, 3 * GiB - 4096, 4097), "low RAM into the hole");
	cr_assert_null(gmem_ptr(&m, 3 * GiB - 1, 2));
	cr_assert_null(gmem_ptr(&m, 3 * GiB, 1), "first byte of the hole");
	cr_assert_null(gmem_ptr(&m, 3 * GiB + 512 * MiB, 1));
	cr_assert_null(gmem_ptr(&m, 4 * GiB - 1, 1), "last byte of the hole");
	cr_assert_null(gmem_ptr(&m, 4 * GiB - 1, 2), "hole into high RAM");
	cr_assert_null(gmem_ptr(&m, 3 * GiB - 4096, GiB + 8192), "spans the whole hole");
	cr_assert_not_null(gmem_ptr(&m, 4 * GiB, 1));
	cr_assert_not_null(gmem_ptr(&m, 4 * GiB, GiB), "all of high RAM");
	cr_assert_null(gmem_ptr(&m, 4 * GiB, GiB + 1));
	cr_assert_null(gmem_ptr(&m, m.gpa_end, 1));
	cr_assert(!gmem_is_ram(&m, 3 * GiB - 4096, 8192));
	cr_assert(gmem_is_ram(&m, 4 * GiB, 4096));
	gmem_fini(&m);
}

Test(gmem, ptr_len_zero)
{
	struct gmem m;
	uint8_t *p;

	init_or_die(&m, 4 * GiB, GMEM_ANON);
	cr_assert_eq(gmem_ptr(&m, 0, 0), m.host, "len 0 inside RAM is valid");
	cr_assert_eq(gmem_ptr(&m, 12345, 0), m.host + 12345);
	cr_assert_eq(gmem_ptr(&m, m.gpa_end - 1, 0), m.host + m.size - 1);
	cr_assert_eq(gmem_ptr(&m, 4 * GiB, 0), m.host + 3 * GiB);
	/* At an end (one past the last byte) a zero-length range may be refused
	 * or be the one-past-the-end pointer: never anything else. */
	p = gmem_ptr(&m, m.gpa_end, 0);
	cr_assert(p == NULL || p == m.host + m.size, "len 0 at gpa_end: %p", (void *)p);
	p = gmem_ptr(&m, 3 * GiB, 0);
	cr_assert(p == NULL || p == m.host + 3 * GiB, "len 0 at the hole start: %p", (void *)p);
	cr_assert_null(gmem_ptr(&m, m.gpa_end + 1, 0), "len 0 beyond RAM");
	cr_assert_null(gmem_ptr(&m, 3 * GiB + 4096, 0), "len 0 inside the hole");
	cr_assert_null(gmem_ptr(&m, 4 * GiB - 1, 0), "len 0 at the hole's last byte");
	gmem_fini(&m);
}

Test(gmem, ptr_on_uninitialised_gmem_is_null)
{
	struct gmem m;

	memset(&m, 0, sizeof(m));
	m.fd = -1;
	cr_assert_null(gmem_ptr(&m, 0, 0));
	cr_assert_null(gmem_ptr(&m, 0, 1));
}

/* ------------------------------------------------------------ discard */

static void discard_zeroes(enum gmem_backing b, uint64_t size, uint64_t gpa)
{
	struct gmem m;
	uint8_t *p;

	init_or_die(&m, size, b);
	p = gmem_ptr(&m, gpa, 3 * 4096);
	cr_assert_not_null(p);
	memset(p, 0xab, 3 * 4096);
	/* and a canary at the same backing offset in low RAM when gpa is high */
	uint8_t *canary = gmem_ptr(&m, gpa >= 4 * GiB ? gpa - 4 * GiB : 0, 3 * 4096);
	if (gpa >= 4 * GiB)
		memset(canary, 0xcd, 3 * 4096);

	cr_assert_eq(gmem_discard(&m, gpa + 4096, 4096), 0);
	for (unsigned i = 0; i < 4096; i++) {
		cr_assert_eq(p[i], 0xab, "page before the discarded one changed at %u", i);
		cr_assert_eq(p[4096 + i], 0, "discarded page not zero at %u", i);
		cr_assert_eq(p[8192 + i], 0xab, "page after the discarded one changed at %u", i);
		if (gpa >= 4 * GiB)
			cr_assert_eq(canary[4096 + i], 0xcd, "discard of high RAM hit low RAM");
	}
	/* The page is usable again. */
	p[4096] = 7;
	cr_assert_eq(p[4096], 7);
	cr_assert_eq(gmem_discard(&m, gpa, 3 * 4096), 0);
	for (unsigned i = 0; i < 3 * 4096; i++)
		cr_assert_eq(p[i], 0);
	gmem_fini(&m);
}

Test(gmem, discard_zeroes_memfd)
{
	discard_zeroes(GMEM_MEMFD, 64 * MiB, 16 * MiB);
}

Test(gmem, discard_zeroes_anon)
{
	discard_zeroes(GMEM_ANON, 64 * MiB, 16 * MiB);
}

Test(gmem, discard_zeroes_memfd_above_4g)
{
	discard_zeroes(GMEM_MEMFD, 4 * GiB, 4 * GiB + 8 * MiB);
}

Test(gmem, discard_zeroes_anon_above_4g)
{
	discard_zeroes(GMEM_ANON, 4 * GiB, 4 * GiB + 8 * MiB);
}

Test(gmem, discard_rejects_bad_ranges)
{
	struct gmem m;

	init_or_die(&m, 4 * GiB, GMEM_MEMFD);
	cr_assert_eq(gmem_discard(&m, 4096 + 1, 4096), -EINVAL, "unaligned gpa");
	cr_assert_eq(gmem_discard(&m, 4096, 100), -EINVAL, "unaligned len");
	cr_assert_eq(gmem_discard(&m, 4096, 4096 + 1), -EINVAL);
	cr_assert_eq(gmem_discard(&m, 3 * GiB, 4096), -EFAULT, "the hole is not RAM");
	cr_assert_eq(gmem_discard(&m, 3 * GiB - 4096, 8192), -EFAULT, "crosses into the hole");
	cr_assert_eq(gmem_discard(&m, m.gpa_end, 4096), -EFAULT, "beyond RAM");
	cr_assert_eq(gmem_discard(&m, UINT64_MAX - 4095, 4096), -EFAULT, "top of the address space");
	cr_assert_eq(gmem_discard(&m, 4096, UINT64_MAX - 4095), -EFAULT, "wrapping length");
	cr_assert_eq(gmem_discard(&m, 8192, 0), 0, "len 0 is a no-op");
	gmem_fini(&m);
}

/* ------------------------------------------------------------ sizes */

Test(gmem, check_size_limits)
{
	cr_assert_eq(gmem_check_size(GMEM_MIN_SIZE), 0);
	cr_assert_eq(gmem_check_size(512 * MiB), 0);
	cr_assert_eq(gmem_check_size(4 * GiB), 0);
	cr_assert_eq(gmem_check_size(GMEM_MAX_SIZE), 0);
	cr_assert_eq(gmem_check_size(1), -EINVAL);
	cr_assert_eq(gmem_check_size(3 * MiB), -EINVAL, "not a multiple of 2 MiB");
	cr_assert_eq(gmem_check_size(64 * MiB + 4096), -EINVAL);
	cr_assert_eq(gmem_check_size(UINT64_MAX), -EINVAL);
	cr_assert_eq(gmem_check_size(0), -ERANGE);
	cr_assert_eq(gmem_check_size(GMEM_MIN_SIZE - 2 * MiB), -ERANGE, "too small");
	cr_assert_eq(gmem_check_size(GMEM_MAX_SIZE + 2 * MiB), -ERANGE, "too big");
	cr_assert_eq(gmem_check_size(1ULL << 40), -ERANGE);
	cr_assert_eq(gmem_check_size(UINT64_MAX - (2 * MiB - 1)), -ERANGE);
}

Test(gmem, init_rejects_bad_sizes_and_backings)
{
	struct gmem m;

	memset(&m, 0, sizeof(m));
	m.fd = -1;
	cr_assert_eq(gmem_init(&m, 3 * MiB, GMEM_ANON), -EINVAL);
	cr_assert_eq(gmem_init(&m, 8 * MiB, GMEM_MEMFD), -ERANGE);
	cr_assert_null(m.host);
	cr_assert_eq(gmem_init(&m, 16 * MiB, GMEM_FILE_PRIVATE), -EINVAL,
		     "a private file mapping is not created by gmem_init");
	cr_assert_null(m.host);
	gmem_fini(&m);
}

/* gmem.h promises that gmem_fini is "safe on a zeroed struct". A zeroed
 * struct has fd 0, which is a real descriptor (stdin): it must stay open. */
Test(gmem, fini_on_zeroed_struct_leaves_fd0_alone)
{
	struct gmem m;
	int devnull = open("/dev/null", O_RDONLY);

	cr_assert_geq(devnull, 0);
	cr_assert_eq(dup2(devnull, 0), 0);
	memset(&m, 0, sizeof(m));
	gmem_fini(&m);
	cr_assert_neq(fcntl(0, F_GETFD), -1, "gmem_fini on a zeroed struct gmem closed fd 0");
	close(devnull);
}
