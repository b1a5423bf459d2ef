/* vmm/bus.c - see bus.h. */
#include "bus.h"

#include <errno.h>
#include <string.h>

#include "common/util.h"

int bus_register(struct bus *bus, uint64_t base, uint64_t len, const char *name, bus_io_fn *io,
		 void *dev)
{
	unsigned i;
	uint64_t end;

	if (!len || add_overflows(base, len, &end) || !io)
		return -EINVAL;
	if (bus->nr >= BUS_MAX_RANGES)
		return -ENOSPC;
	for (i = 0; i < bus->nr; i++) {
		const struct bus_range *r = &bus->ranges[i];
		if (base < r->base + r->len && r->base < end)
			return -EEXIST;
		if (r->base > base)
			break;
	}
	memmove(&bus->ranges[i + 1], &bus->ranges[i], (bus->nr - i) * sizeof(bus->ranges[0]));
	bus->ranges[i] = (struct bus_range){ base, len, name, io, dev };
	bus->nr++;
	return 0;
}

const struct bus_range *bus_find(const struct bus *bus, uint64_t addr, unsigned len)
{
	unsigned lo = 0, hi = bus->nr;

	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		const struct bus_range *r = &bus->ranges[mid];
		if (addr < r->base) {
			hi = mid;
		} else if (addr - r->base >= r->len) {
			lo = mid + 1;
		} else {
			return range_within(addr - r->base, len, r->len) ? r : NULL;
		}
	}
	return NULL;
}
