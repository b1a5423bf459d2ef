/* tests/unit/test_bus.c - vmm/bus: explicit registration order, overlap and
 * capacity errors, and lookups at the edges of each range. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "vmm/bus.h"

static enum vcpu_action io_a(void *dev, struct vcpu *v, uint64_t offset, void *data, unsigned len,
			     bool is_write)
{
	(void)dev, (void)v, (void)offset, (void)data, (void)len, (void)is_write;
	return VCPU_CONTINUE;
}

static enum vcpu_action io_b(void *dev, struct vcpu *v, uint64_t offset, void *data, unsigned len,
			     bool is_write)
{
	(void)dev, (void)v, (void)offset, (void)data, (void)len, (void)is_write;
	return VCPU_STOP;
}

static void check_sorted(const struct bus *b)
{
	for (unsigned i = 1; i < b->nr; i++) {
		cr_assert_lt(b->ranges[i - 1].base, b->ranges[i].base, "ranges %u/%u not sorted", i - 1, i);
		cr_assert_leq(b->ranges[i - 1].base + b->ranges[i - 1].len, b->ranges[i].base,
			      "ranges %u/%u overlap", i - 1, i);
	}
}

Test(bus, register_keeps_ranges_sorted)
{
	struct bus b;
	int d1, d2, d3;

	memset(&b, 0, sizeof(b));
	cr_assert_eq(bus_register(&b, 0x40, 4, "pit", io_a, &d1), 0);
	cr_assert_eq(bus_register(&b, 0x10, 8, "low", io_b, &d2), 0);
	cr_assert_eq(bus_register(&b, 0x20, 1, "mid", io_a, &d3), 0);
	cr_assert_eq(bus_register(&b, 0x1000, 0x10, "high", io_a, NULL), 0);
	cr_assert_eq(b.nr, 4);
	check_sorted(&b);
	cr_assert_eq(b.ranges[0].base, 0x10);
	cr_assert_str_eq(b.ranges[0].name, "low");
	cr_assert_eq(b.ranges[0].io, io_b);
	cr_assert_eq(b.ranges[0].dev, &d2);
	cr_assert_eq(b.ranges[1].base, 0x20);
	cr_assert_eq(b.ranges[1].dev, &d3);
	cr_assert_eq(b.ranges[2].base, 0x40);
	cr_assert_eq(b.ranges[2].len, 4);
	cr_assert_eq(b.ranges[2].dev, &d1);
	cr_assert_eq(b.ranges[3].base, 0x1000);
}

Test(bus, overlap_is_eexist)
{
	struct bus b;

	memset(&b, 0, sizeof(b));
	cr_assert_eq(bus_register(&b, 0x10, 8, "a", io_a, NULL), 0); /* [0x10, 0x18) */
	cr_assert_eq(bus_register(&b, 0x30, 8, "b", io_a, NULL), 0); /* [0x30, 0x38) */
	cr_assert_eq(bus_register(&b, 0x10, 8, "same", io_a, NULL), -EEXIST);
	cr_assert_eq(bus_register(&b, 0x17, 2, "tail", io_a, NULL), -EEXIST);
	cr_assert_eq(bus_register(&b, 0x08, 9, "head", io_a, NULL), -EEXIST);
	cr_assert_eq(bus_register(&b, 0x12, 1, "inside", io_a, NULL), -EEXIST);
	cr_assert_eq(bus_register(&b, 0x00, 0x100, "around all", io_a, NULL), -EEXIST);
	cr_assert_eq(bus_register(&b, 0x20, 0x11, "into b", io_a, NULL), -EEXIST);
	cr_assert_eq(bus_register(&b, 0x37, 1, "b's last", io_a, NULL), -EEXIST);
	cr_assert_eq(b.nr, 2, "failed registrations must not add ranges");
	/* Touching is fine. */
	cr_assert_eq(bus_register(&b, 0x18, 0x18, "between", io_a, NULL), 0); /* [0x18, 0x30) */
	cr_assert_eq(bus_register(&b, 0x08, 8, "before", io_a, NULL), 0);
	cr_assert_eq(bus_register(&b, 0x38, 1, "after", io_a, NULL), 0);
	cr_assert_eq(b.nr, 5);
	check_sorted(&b);
}

Test(bus, capacity_is_enospc)
{
	struct bus b;

	memset(&b, 0, sizeof(b));
	for (unsigned i = 0; i < BUS_MAX_RANGES; i++)
		cr_assert_eq(bus_register(&b, 0x100 - 8 * i, 4, "r", io_a, NULL), 0, "range %u", i);
	cr_assert_eq(b.nr, BUS_MAX_RANGES);
	check_sorted(&b);
	cr_assert_eq(bus_register(&b, 0x1000, 4, "one too many", io_a, NULL), -ENOSPC);
	cr_assert_eq(b.nr, BUS_MAX_RANGES);
	/* Every range is still found. */
	for (unsigned i = 0; i < BUS_MAX_RANGES; i++) {
		const struct bus_range *r = bus_find(&b, 0x100 - 8 * i + 3, 1);
		cr_assert_not_null(r, "range %u lost", i);
		cr_assert_eq(r->base, 0x100 - 8 * i);
		cr_assert_null(bus_find(&b, 0x100 - 8 * i + 4, 1), "gap after range %u", i);
	}
}

Test(bus, zero_length_overflow_and_null_handler_are_einval)
{
	struct bus b;

	memset(&b, 0, sizeof(b));
	cr_assert_eq(bus_register(&b, 0x10, 0, "empty", io_a, NULL), -EINVAL);
	cr_assert_eq(bus_register(&b, UINT64_MAX, 2, "wraps", io_a, NULL), -EINVAL);
	cr_assert_eq(bus_register(&b, UINT64_MAX - 1, UINT64_MAX, "wraps", io_a, NULL), -EINVAL);
	cr_assert_eq(bus_register(&b, 1, UINT64_MAX, "wraps", io_a, NULL), -EINVAL);
	cr_assert_eq(bus_register(&b, 0x10, 1, "no handler", NULL, NULL), -EINVAL);
	cr_assert_eq(b.nr, 0);
	cr_assert_eq(bus_register(&b, UINT64_MAX - 16, 16, "top", io_a, NULL), 0,
		     "a range ending just below 2^64 does not wrap");
	cr_assert_not_null(bus_find(&b, UINT64_MAX - 1, 1));
	cr_assert_null(bus_find(&b, UINT64_MAX, 1));
	cr_assert_null(bus_find(&b, UINT64_MAX - 1, 2));
}

Test(bus, find_edges)
{
	struct bus b;
	const struct bus_range *r;

	memset(&b, 0, sizeof(b));
	cr_assert_eq(bus_register(&b, 0xc0, 32, "exc", io_a, NULL), 0);
	cr_assert_eq(bus_register(&b, 0xe0, 1, "sys", io_b, NULL), 0);
	cr_assert_eq(bus_register(&b, 0x3f8, 8, "uart", io_a, NULL), 0);

	r = bus_find(&b, 0xc0, 1);
	cr_assert_not_null(r, "base");
	cr_assert_str_eq(r->name, "exc");
	r = bus_find(&b, 0xdf, 1);
	cr_assert_not_null(r, "last byte");
	cr_assert_str_eq(r->name, "exc");
	r = bus_find(&b, 0xe0, 1);
	cr_assert_not_null(r, "one past exc is sys");
	cr_assert_str_eq(r->name, "sys");
	cr_assert_null(bus_find(&b, 0xe1, 1), "one past sys");
	cr_assert_null(bus_find(&b, 0xbf, 1), "one before exc");
	cr_assert_null(bus_find(&b, 0xdf, 2), "straddles exc and sys: no single device");
	cr_assert_null(bus_find(&b, 0xe0, 2), "straddles the end of sys");
	cr_assert_null(bus_find(&b, 0xde, 4));
	cr_assert_not_null(bus_find(&b, 0xdc, 4), "exactly the last 4 bytes");
	cr_assert_not_null(bus_find(&b, 0x3f8, 8));
	cr_assert_null(bus_find(&b, 0x3f8, 9));
	cr_assert_null(bus_find(&b, 0x3ff, 2));
	cr_assert_not_null(bus_find(&b, 0x3ff, 1));
	cr_assert_null(bus_find(&b, 0x400, 1));
	cr_assert_null(bus_find(&b, 0, 1));
	cr_assert_null(bus_find(&b, UINT64_MAX, 1));
	cr_assert_null(bus_find(&b, 0x3f8, UINT32_MAX));
}

Test(bus, find_on_empty_bus)
{
	struct bus b;

	memset(&b, 0, sizeof(b));
	cr_assert_null(bus_find(&b, 0, 1));
	cr_assert_null(bus_find(&b, 0xe0, 1));
}
