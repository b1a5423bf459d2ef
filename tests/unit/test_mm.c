/* tests/unit/test_mm.c - vmm/fguest/mm.c: the program's memory map as a
 * plain data structure: insertion with merging, overlap refusal, removal
 * with splits and the discard callback, reserved ranges, coverage queries
 * and the top-down free-range search. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "common/util.h"
#include "vmm/fguest/fguest.h"

#define P 4096ULL
#define RW (PROT_READ | PROT_WRITE)
#define U0 (2 * MiB)   /* user_start */
#define U1 (64 * MiB)  /* user_end */

static struct fg_mm mm;

static void init_small(void)
{
	cr_assert_eq(fg_mm_init(&mm, U0, U1), 0);
}

static void fini(void)
{
	fg_mm_fini(&mm);
}

/* Records the discard calls. */
struct calls {
	unsigned n;
	uint64_t start[64], len[64];
	int fail_at; /* 1-based call number that fails with -EIO, 0: none */
};

static int rec(void *arg, uint64_t start, uint64_t len)
{
	struct calls *c = arg;
	cr_assert_lt(c->n, 64);
	c->start[c->n] = start;
	c->len[c->n] = len;
	c->n++;
	return c->fail_at && (int)c->n == c->fail_at ? -EIO : 0;
}

static void check_invariants(void)
{
	uint64_t mapped = 0;
	for (size_t i = 0; i < mm.nr; i++) {
		cr_assert_lt(mm.v[i].start, mm.v[i].end, "vma %zu empty", i);
		cr_assert_eq(mm.v[i].start % P, 0);
		cr_assert_eq(mm.v[i].end % P, 0);
		if (i)
			cr_assert_leq(mm.v[i - 1].end, mm.v[i].start, "vmas %zu/%zu overlap", i - 1, i);
		if (mm.v[i].kind != FG_VMA_RESERVED)
			mapped += mm.v[i].end - mm.v[i].start;
	}
	cr_assert_eq(mm.mapped, mapped, "mapped %llu, vmas hold %llu", (unsigned long long)mm.mapped,
		     (unsigned long long)mapped);
}

static void assert_vma(size_t i, uint64_t start, uint64_t end, uint32_t kind)
{
	cr_assert_lt(i, mm.nr, "no vma %zu (nr %zu)", i, mm.nr);
	cr_assert_eq(mm.v[i].start, start, "vma %zu start 0x%llx", i, (unsigned long long)mm.v[i].start);
	cr_assert_eq(mm.v[i].end, end, "vma %zu end 0x%llx", i, (unsigned long long)mm.v[i].end);
	cr_assert_eq(mm.v[i].kind, kind, "vma %zu kind %u", i, mm.v[i].kind);
}

/* ------------------------------------------------------------ init */

Test(mm, init_reserves_the_hole, .fini = fini)
{
	cr_assert_eq(fg_mm_init(&mm, U0, 5 * GiB), 0);
	cr_assert_eq(mm.nr, 1);
	assert_vma(0, 3 * GiB, 4 * GiB, FG_VMA_RESERVED);
	cr_assert_eq(mm.mapped, 0, "reserved ranges are not counted");
	cr_assert_eq(mm.mmap_top, 5 * GiB);
	cr_assert(!fg_mm_mapped(&mm, 3 * GiB, 1));
	cr_assert(!fg_mm_free(&mm, 3 * GiB + P, 3 * GiB + 2 * P));
	fg_mm_fini(&mm);

	init_small();
	cr_assert_eq(mm.nr, 0, "no hole below 3 GiB");
	cr_assert_eq(mm.user_start, U0);
	cr_assert_eq(mm.user_end, U1);
}

/* ------------------------------------------------------------ insert */

Test(mm, insert_merges_neighbours, .init = init_small, .fini = fini)
{
	const uint64_t a = 16 * MiB;

	cr_assert_eq(fg_mm_insert(&mm, a, a + P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + P, a + 3 * P, RW, FG_VMA_MMAP), 0, "right neighbour");
	cr_assert_eq(mm.nr, 1);
	assert_vma(0, a, a + 3 * P, FG_VMA_MMAP);
	cr_assert_eq(fg_mm_insert(&mm, a - 2 * P, a, RW, FG_VMA_MMAP), 0, "left neighbour");
	cr_assert_eq(mm.nr, 1);
	assert_vma(0, a - 2 * P, a + 3 * P, FG_VMA_MMAP);
	/* A gap filled exactly joins three into one. */
	cr_assert_eq(fg_mm_insert(&mm, a + 5 * P, a + 6 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(mm.nr, 2);
	cr_assert_eq(fg_mm_insert(&mm, a + 3 * P, a + 5 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(mm.nr, 1);
	assert_vma(0, a - 2 * P, a + 6 * P, FG_VMA_MMAP);
	cr_assert_eq(mm.mapped, 8 * P);
	check_invariants();
}

Test(mm, insert_keeps_different_kinds_and_prots_apart, .init = init_small, .fini = fini)
{
	const uint64_t a = 16 * MiB;

	cr_assert_eq(fg_mm_insert(&mm, a, a + P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + P, a + 2 * P, PROT_READ, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + 2 * P, a + 3 * P, PROT_READ, FG_VMA_BRK), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + 3 * P, a + 4 * P, 0, FG_VMA_RESERVED), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + 4 * P, a + 5 * P, 0, FG_VMA_RESERVED), 0);
	cr_assert_eq(mm.nr, 5, "nothing merged (reserved ranges never merge)");
	assert_vma(0, a, a + P, FG_VMA_MMAP);
	cr_assert_eq(mm.v[1].prot, PROT_READ);
	assert_vma(2, a + 2 * P, a + 3 * P, FG_VMA_BRK);
	assert_vma(3, a + 3 * P, a + 4 * P, FG_VMA_RESERVED);
	cr_assert_eq(mm.mapped, 3 * P);
	check_invariants();
}

Test(mm, insert_overlap_is_eexist, .init = init_small, .fini = fini)
{
	const uint64_t a = 16 * MiB;

	cr_assert_eq(fg_mm_insert(&mm, a, a + 4 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + 8 * P, a + 9 * P, RW, FG_VMA_IMAGE), 0);
	cr_assert_eq(fg_mm_insert(&mm, a, a + 4 * P, RW, FG_VMA_MMAP), -EEXIST, "identical");
	cr_assert_eq(fg_mm_insert(&mm, a - P, a + P, RW, FG_VMA_MMAP), -EEXIST, "over the start");
	cr_assert_eq(fg_mm_insert(&mm, a + 3 * P, a + 5 * P, RW, FG_VMA_MMAP), -EEXIST, "over the end");
	cr_assert_eq(fg_mm_insert(&mm, a + P, a + 2 * P, RW, FG_VMA_MMAP), -EEXIST, "inside");
	cr_assert_eq(fg_mm_insert(&mm, a - P, a + 10 * P, RW, FG_VMA_MMAP), -EEXIST, "around both");
	cr_assert_eq(fg_mm_insert(&mm, a + 5 * P, a + 9 * P, RW, FG_VMA_MMAP), -EEXIST, "into the second");
	cr_assert_eq(mm.nr, 2);
	cr_assert_eq(mm.mapped, 5 * P, "failed inserts do not count");
	cr_assert_eq(fg_mm_insert(&mm, a + 4 * P, a + 8 * P, RW, FG_VMA_STACK), 0, "the gap itself");
	check_invariants();
}

Test(mm, insert_rejects_bad_ranges, .init = init_small, .fini = fini)
{
	cr_assert_eq(fg_mm_insert(&mm, 16 * MiB, 16 * MiB, RW, FG_VMA_MMAP), -EINVAL, "empty");
	cr_assert_eq(fg_mm_insert(&mm, 16 * MiB + P, 16 * MiB, RW, FG_VMA_MMAP), -EINVAL, "reversed");
	cr_assert_eq(fg_mm_insert(&mm, 16 * MiB + 1, 16 * MiB + P, RW, FG_VMA_MMAP), -EINVAL);
	cr_assert_eq(fg_mm_insert(&mm, 16 * MiB, 16 * MiB + 100, RW, FG_VMA_MMAP), -EINVAL);
	cr_assert_eq(mm.nr, 0);
	cr_assert_eq(mm.mapped, 0);
}

Test(mm, many_vmas_grow_the_array, .init = init_small, .fini = fini)
{
	for (unsigned i = 0; i < 300; i++)
		cr_assert_eq(fg_mm_insert(&mm, U0 + 2 * P * i, U0 + 2 * P * i + P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(mm.nr, 300);
	check_invariants();
	for (unsigned i = 0; i < 300; i++) {
		const struct fg_vma *v = fg_mm_lookup(&mm, U0 + 2 * P * i + 10);
		cr_assert_not_null(v, "vma %u", i);
		cr_assert_eq(v->start, U0 + 2 * P * i);
		cr_assert_null(fg_mm_lookup(&mm, U0 + 2 * P * i + P));
	}
	cr_assert_eq(fg_mm_remove(&mm, U0, U0 + 600 * P, NULL, NULL), 0);
	cr_assert_eq(mm.nr, 0);
	cr_assert_eq(mm.mapped, 0);
}

/* ------------------------------------------------------------ remove */

Test(mm, remove_middle_splits, .init = init_small, .fini = fini)
{
	const uint64_t a = 16 * MiB;
	struct calls c = { 0 };

	cr_assert_eq(fg_mm_insert(&mm, a, a + 4 * P, PROT_READ, FG_VMA_IMAGE), 0);
	cr_assert_eq(fg_mm_remove(&mm, a + P, a + 2 * P, rec, &c), 0);
	cr_assert_eq(mm.nr, 2);
	assert_vma(0, a, a + P, FG_VMA_IMAGE);
	assert_vma(1, a + 2 * P, a + 4 * P, FG_VMA_IMAGE);
	cr_assert_eq(mm.v[1].prot, PROT_READ, "the tail keeps the protection");
	cr_assert_eq(c.n, 1);
	cr_assert_eq(c.start[0], a + P);
	cr_assert_eq(c.len[0], P);
	cr_assert_eq(mm.mapped, 3 * P);
	check_invariants();
}

Test(mm, remove_edges_and_whole, .init = init_small, .fini = fini)
{
	const uint64_t a = 16 * MiB;
	struct calls c = { 0 };

	cr_assert_eq(fg_mm_insert(&mm, a, a + 6 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_remove(&mm, a - 3 * P, a + P, rec, &c), 0, "left edge, from a gap");
	assert_vma(0, a + P, a + 6 * P, FG_VMA_MMAP);
	cr_assert_eq(fg_mm_remove(&mm, a + 5 * P, a + 9 * P, rec, &c), 0, "right edge, into a gap");
	assert_vma(0, a + P, a + 5 * P, FG_VMA_MMAP);
	cr_assert_eq(fg_mm_remove(&mm, a + P, a + 5 * P, rec, &c), 0, "exactly the vma");
	cr_assert_eq(mm.nr, 0);
	cr_assert_eq(c.n, 3);
	cr_assert_eq(c.start[0], a);
	cr_assert_eq(c.len[0], P, "only the mapped part is discarded");
	cr_assert_eq(c.start[1], a + 5 * P);
	cr_assert_eq(c.len[1], P);
	cr_assert_eq(c.start[2], a + P);
	cr_assert_eq(c.len[2], 4 * P);
	cr_assert_eq(mm.mapped, 0);
}

Test(mm, remove_spanning_several_vmas, .init = init_small, .fini = fini)
{
	const uint64_t a = 16 * MiB;
	struct calls c = { 0 };

	/* [a, a+3P) [a+4P, a+6P) [a+6P, a+7P) (different kind) [a+9P, a+12P) */
	cr_assert_eq(fg_mm_insert(&mm, a, a + 3 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + 4 * P, a + 6 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + 6 * P, a + 7 * P, RW, FG_VMA_BRK), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + 9 * P, a + 12 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(mm.nr, 4);
	cr_assert_eq(fg_mm_remove(&mm, a + 2 * P, a + 10 * P, rec, &c), 0);
	cr_assert_eq(mm.nr, 2);
	assert_vma(0, a, a + 2 * P, FG_VMA_MMAP);
	assert_vma(1, a + 10 * P, a + 12 * P, FG_VMA_MMAP);
	cr_assert_eq(c.n, 4, "one call per removed piece, none for gaps");
	const uint64_t ws[] = { a + 2 * P, a + 4 * P, a + 6 * P, a + 9 * P };
	const uint64_t wl[] = { P, 2 * P, P, P };
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(c.start[i], ws[i], "piece %u start", i);
		cr_assert_eq(c.len[i], wl[i], "piece %u len", i);
	}
	cr_assert_eq(mm.mapped, 4 * P);
	check_invariants();
}

Test(mm, remove_nothing, .init = init_small, .fini = fini)
{
	struct calls c = { 0 };

	cr_assert_eq(fg_mm_insert(&mm, 16 * MiB, 16 * MiB + P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_remove(&mm, 20 * MiB, 21 * MiB, rec, &c), 0, "a gap");
	cr_assert_eq(fg_mm_remove(&mm, 16 * MiB + P, 16 * MiB + P, rec, &c), 0, "empty range");
	cr_assert_eq(fg_mm_remove(&mm, 17 * MiB, 16 * MiB, rec, &c), 0, "reversed");
	cr_assert_eq(c.n, 0);
	cr_assert_eq(mm.nr, 1);
}

Test(mm, remove_split_when_array_is_full, .init = init_small, .fini = fini)
{
	/* Fill the array to its capacity, then split one vma in the middle. */
	unsigned i = 0;
	while (mm.nr < 1 || mm.nr < mm.cap) {
		cr_assert_eq(fg_mm_insert(&mm, U0 + 4 * P * i, U0 + 4 * P * i + 3 * P, RW, FG_VMA_MMAP), 0);
		i++;
	}
	size_t nr = mm.nr;
	cr_assert_eq(nr, mm.cap);
	uint64_t mid = U0 + 4 * P * (i / 2);
	cr_assert_eq(fg_mm_remove(&mm, mid + P, mid + 2 * P, NULL, NULL), 0);
	cr_assert_eq(mm.nr, nr + 1);
	cr_assert(fg_mm_mapped(&mm, mid, P));
	cr_assert(!fg_mm_mapped(&mm, mid + P, 1));
	cr_assert(fg_mm_mapped(&mm, mid + 2 * P, P));
	cr_assert(fg_mm_mapped(&mm, U0 + 4 * P * (i - 1), 3 * P), "the last vma survived the move");
	check_invariants();
}

Test(mm, reserved_cannot_be_removed, .fini = fini)
{
	struct calls c = { 0 };

	cr_assert_eq(fg_mm_init(&mm, U0, 5 * GiB), 0);
	cr_assert_eq(fg_mm_insert(&mm, 3 * GiB - 2 * P, 3 * GiB, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_insert(&mm, 4 * GiB, 4 * GiB + P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_remove(&mm, 3 * GiB + P, 3 * GiB + 2 * P, rec, &c), -EINVAL);
	cr_assert_eq(fg_mm_remove(&mm, 3 * GiB - P, 3 * GiB + P, rec, &c), -EINVAL,
		     "a range touching the hole");
	cr_assert_eq(fg_mm_remove(&mm, 0, UINT64_MAX, rec, &c), -EINVAL);
	cr_assert_eq(c.n, 0, "nothing discarded when the removal is refused");
	cr_assert_eq(mm.nr, 3, "nothing removed");
	cr_assert_eq(mm.mapped, 3 * P);
	/* Up to the hole is fine. */
	cr_assert_eq(fg_mm_remove(&mm, 3 * GiB - 2 * P, 3 * GiB, rec, &c), 0);
	cr_assert_eq(c.n, 1);
	check_invariants();
}

Test(mm, discard_error_is_returned, .init = init_small, .fini = fini)
{
	struct calls c = { .fail_at = 1 };

	cr_assert_eq(fg_mm_insert(&mm, 16 * MiB, 16 * MiB + 2 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_remove(&mm, 16 * MiB, 16 * MiB + 2 * P, rec, &c), -EIO);
	cr_assert_eq(mm.nr, 1, "the vma stays when its discard failed");
	cr_assert_eq(mm.mapped, 2 * P);
	check_invariants();
}

/* ------------------------------------------------------------ queries */

Test(mm, mapped_across_adjacent_vmas_and_gaps, .init = init_small, .fini = fini)
{
	const uint64_t a = 16 * MiB;

	cr_assert_eq(fg_mm_insert(&mm, a, a + P, PROT_READ, FG_VMA_IMAGE), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + P, a + 3 * P, RW, FG_VMA_BRK), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + 3 * P, a + 4 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_insert(&mm, a + 5 * P, a + 6 * P, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(mm.nr, 4);
	cr_assert(fg_mm_mapped(&mm, a, 4 * P), "three adjacent vmas");
	cr_assert(fg_mm_mapped(&mm, a + P - 1, 2), "a straddling access");
	cr_assert(!fg_mm_mapped(&mm, a, 4 * P + 1), "runs into the gap");
	cr_assert(!fg_mm_mapped(&mm, a + 4 * P, 1), "the gap");
	cr_assert(!fg_mm_mapped(&mm, a + 3 * P, 3 * P), "across the gap");
	cr_assert(fg_mm_mapped(&mm, a + 5 * P, P));
	cr_assert(!fg_mm_mapped(&mm, a + 6 * P - 1, 2), "past the last vma");
	cr_assert(!fg_mm_mapped(&mm, a - 1, 2), "before the first vma");
	cr_assert(!fg_mm_mapped(&mm, 0, 1));
	cr_assert(fg_mm_mapped(&mm, a + 10, 0), "len 0 inside a vma");
	cr_assert(!fg_mm_mapped(&mm, a + 4 * P, 0), "len 0 in a gap");
	cr_assert(!fg_mm_mapped(&mm, a, UINT64_MAX), "wraps");
	cr_assert(!fg_mm_mapped(&mm, UINT64_MAX - 10, 100), "wraps");
}

Test(mm, mapped_len_zero_at_top_of_address_space, .init = init_small, .fini = fini)
{
	/* fg_mm_mapped treats len 0 as one byte; at UINT64_MAX that byte is not
	 * mapped (and the "one past" address wraps to 0): it must say false. */
	cr_assert_eq(fg_mm_insert(&mm, 16 * MiB, 16 * MiB + P, RW, FG_VMA_MMAP), 0);
	cr_assert(!fg_mm_mapped(&mm, UINT64_MAX, 0),
		  "fg_mm_mapped(UINT64_MAX, 0) claims an unmapped address is mapped");
}

Test(mm, mapped_excludes_reserved, .fini = fini)
{
	cr_assert_eq(fg_mm_init(&mm, U0, 5 * GiB), 0);
	cr_assert_eq(fg_mm_insert(&mm, 3 * GiB - P, 3 * GiB, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_insert(&mm, 4 * GiB, 4 * GiB + P, RW, FG_VMA_MMAP), 0);
	cr_assert(fg_mm_mapped(&mm, 3 * GiB - P, P));
	cr_assert(!fg_mm_mapped(&mm, 3 * GiB - P, P + 1), "into the reserved hole");
	cr_assert(!fg_mm_mapped(&mm, 3 * GiB + 100, 1));
	cr_assert(!fg_mm_mapped(&mm, 3 * GiB - P, GiB + 2 * P), "across the hole");
	cr_assert(fg_mm_mapped(&mm, 4 * GiB, P));
}

Test(mm, free_and_lookup, .init = init_small, .fini = fini)
{
	const uint64_t a = 16 * MiB;

	cr_assert_eq(fg_mm_insert(&mm, a, a + 2 * P, RW, FG_VMA_MMAP), 0);
	cr_assert(fg_mm_free(&mm, a - P, a));
	cr_assert(fg_mm_free(&mm, a + 2 * P, a + 3 * P));
	cr_assert(!fg_mm_free(&mm, a - P, a + 1));
	cr_assert(!fg_mm_free(&mm, a + 2 * P - 1, a + 3 * P));
	cr_assert(!fg_mm_free(&mm, 0, UINT64_MAX));
	cr_assert_null(fg_mm_lookup(&mm, a - 1));
	cr_assert_not_null(fg_mm_lookup(&mm, a));
	cr_assert_not_null(fg_mm_lookup(&mm, a + 2 * P - 1));
	cr_assert_null(fg_mm_lookup(&mm, a + 2 * P));
	cr_assert_null(fg_mm_lookup(&mm, UINT64_MAX));
}

/* ------------------------------------------------------------ find_free */

Test(mm, find_free_top_down, .init = init_small, .fini = fini)
{
	cr_assert_eq(fg_mm_find_free(&mm, P, U1), U1 - P, "empty map: right below the top");
	cr_assert_eq(fg_mm_find_free(&mm, P, UINT64_MAX), U1 - P, "top clamped to user_end");
	cr_assert_eq(fg_mm_find_free(&mm, P, 40 * MiB), 40 * MiB - P, "below the given top");
	cr_assert_eq(fg_mm_find_free(&mm, U1 - U0, U1), U0, "exactly all of user memory");
	cr_assert_eq(fg_mm_find_free(&mm, U1 - U0 + P, U1), 0, "more than user memory");
	cr_assert_eq(fg_mm_find_free(&mm, 0, U1), 0, "len 0");
	cr_assert_eq(fg_mm_find_free(&mm, P, U0), 0, "top at user_start: nothing below");
	cr_assert_eq(fg_mm_find_free(&mm, P, 0), 0);
}

Test(mm, find_free_skips_small_gaps, .init = init_small, .fini = fini)
{
	/* [56M, 60M) used, a one-page gap, [60M+P, 64M) used */
	cr_assert_eq(fg_mm_insert(&mm, 56 * MiB, 60 * MiB, RW, FG_VMA_STACK), 0);
	cr_assert_eq(fg_mm_insert(&mm, 60 * MiB + P, U1, RW, FG_VMA_STACK), 0);
	cr_assert_eq(fg_mm_find_free(&mm, P, U1), 60 * MiB, "the one-page gap");
	cr_assert_eq(fg_mm_find_free(&mm, 2 * P, U1), 56 * MiB - 2 * P, "too small: go below");
	cr_assert_eq(fg_mm_find_free(&mm, P, 60 * MiB), 56 * MiB - P, "top inside a vma");
	cr_assert_eq(fg_mm_find_free(&mm, P, 58 * MiB), 56 * MiB - P);
	/* Fill everything below 56M. */
	cr_assert_eq(fg_mm_insert(&mm, U0, 56 * MiB, RW, FG_VMA_MMAP), 0);
	cr_assert_eq(fg_mm_find_free(&mm, P, U1), 60 * MiB);
	cr_assert_eq(fg_mm_find_free(&mm, 2 * P, U1), 0, "no gap is big enough");
	cr_assert_eq(fg_mm_find_free(&mm, P, 60 * MiB), 0);
}

Test(mm, find_free_around_the_hole, .fini = fini)
{
	cr_assert_eq(fg_mm_init(&mm, U0, 5 * GiB), 0);
	cr_assert_eq(fg_mm_find_free(&mm, P, 5 * GiB), 5 * GiB - P);
	cr_assert_eq(fg_mm_find_free(&mm, P, 4 * GiB), 3 * GiB - P, "never in the hole");
	cr_assert_eq(fg_mm_find_free(&mm, P, 3 * GiB + 100 * MiB), 3 * GiB - P);
	cr_assert_eq(fg_mm_find_free(&mm, GiB, 5 * GiB), 4 * GiB, "high RAM exactly");
	cr_assert_eq(fg_mm_find_free(&mm, GiB + P, 5 * GiB), 3 * GiB - GiB - P,
		     "too big for high RAM: below the hole");
	cr_assert_eq(fg_mm_find_free(&mm, 3 * GiB, 5 * GiB), 0, "nothing that large");
}

Test(mm, find_free_result_is_page_aligned, .init = init_small, .fini = fini)
{
	/* fguest.h: "Highest free, page-aligned range of len bytes below top". */
	uint64_t a = fg_mm_find_free(&mm, P, 40 * MiB + 100);
	cr_assert_neq(a, 0);
	cr_assert_eq(a % P, 0, "fg_mm_find_free returned unaligned 0x%llx for an unaligned top",
		     (unsigned long long)a);
	cr_assert_leq(a + P, 40 * MiB + 100);
}
