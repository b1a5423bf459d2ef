/* vmm/gmem.h - guest RAM: one backing file (memfd or regular file) mapped
 * once in the VMM, split into guest-physical regions around the MMIO hole
 * below 4 GiB. Every guest-physical access from the VMM goes through
 * gmem_ptr(), which bounds-checks with overflow-safe arithmetic. */
#ifndef FORKVM_VMM_GMEM_H
#define FORKVM_VMM_GMEM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"

#include <linux/fs.h>
#include <sys/ioctl.h>

/* PAGEMAP_SCAN (Linux 6.7): older headers lack it; the ABI is fixed. */
#ifndef PAGEMAP_SCAN
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
struct page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

/* Guest-physical MMIO hole [3 GiB, 4 GiB): never RAM (LAPIC, IOAPIC, and
 * later PCI devices live here). RAM beyond 3 GiB continues at 4 GiB. */
#define GMEM_HOLE_START (3ULL * GiB)
#define GMEM_HOLE_END (4ULL * GiB)
#define GMEM_PAGE_SIZE 4096ULL
#define GMEM_MAX_SIZE (64ULL * GiB)
#define GMEM_MIN_SIZE (16ULL * MiB)

struct gmem_region {
	uint64_t gpa;    /* guest-physical start */
	uint64_t size;   /* bytes */
	uint64_t offset; /* offset in the backing file and the host mapping */
};

enum gmem_backing {
	GMEM_ANON,     /* anonymous private memory (unit tests) */
	GMEM_MEMFD,    /* memfd, MAP_SHARED: a fresh VM */
	GMEM_FILE_PRIVATE, /* a file mapped MAP_PRIVATE: copy-on-write restore */
};

struct gmem {
	uint8_t *host;  /* host mapping of the whole backing, size bytes */
	uint64_t size;  /* RAM bytes */
	int fd;         /* backing fd, -1 for GMEM_ANON */
	enum gmem_backing backing;
	unsigned nr_regions;
	struct gmem_region regions[2];
	uint64_t gpa_end; /* one past the highest RAM guest-physical address */
	uint64_t *discarded; /* GMEM_FILE_PRIVATE: pages discarded since the mapping (bitmap) */
	/* Remote (gmem_set_remote): the guest's RAM is a private mapping of
	 * the same file in another process, at the guest-physical addresses
	 * (the process platform's stub); host is then a mirror the VMM brings
	 * up to date before a snapshot (gmem_sync). Every other access goes
	 * to the other process. */
	bool remote;
	int remote_mem;     /* /proc/PID/mem */
	int remote_pagemap; /* /proc/PID/pagemap */
	/* Replaces [gpa, gpa+len) with zero pages in the other process. */
	int (*remote_discard)(void *arg, uint64_t gpa, uint64_t len);
	void *remote_arg;
};

/* Checks that size is a usable RAM size (multiple of 2 MiB, within limits).
 * Returns 0 or -EINVAL / -ERANGE. */
int gmem_check_size(uint64_t size) WUR;

/* Creates RAM of size bytes backed by a memfd (or anonymous memory for
 * GMEM_ANON). Returns 0 or -errno. */
int gmem_init(struct gmem *m, uint64_t size, enum gmem_backing backing) WUR;

/* RAM of size bytes mapped MAP_PRIVATE from fd (a snapshot's memory file,
 * opened read-only; the file must be size bytes). Guest writes go to
 * private copies; the file never changes. Takes ownership of fd.
 * Returns 0 or -errno. */
int gmem_init_file(struct gmem *m, int fd, uint64_t size) WUR;

/* Calls cb for the ranges of the backing (file offsets, page aligned,
 * ascending, disjoint) that may hold non-zero bytes: the data extents of
 * the memfd or file, plus pages the VMM holds privately (copy-on-write
 * copies of a restored VM). Everything outside them is zero. Returns 0,
 * -errno, or the first negative value cb returned. */
int gmem_for_each_populated(const struct gmem *m, int (*cb)(void *arg, uint64_t off, uint64_t len),
			    void *arg) WUR;

/* Pages whose content may differ from the backing file of a
 * GMEM_FILE_PRIVATE mapping (written: private copies; or discarded), as a
 * malloc'd bitmap of size/4096 bits. Returns 0 or -errno. */
int gmem_changed_pages(const struct gmem *m, uint64_t **bits) WUR;

/* Releases the mapping and the fd. Safe on a zeroed struct. */
void gmem_fini(struct gmem *m);

/* Host pointer for guest-physical [gpa, gpa+len), or NULL if any byte is
 * outside RAM (or len would cross the hole), or if the RAM is remote (use
 * gmem_read/gmem_write). len 0 is valid inside RAM. */
void *gmem_ptr(const struct gmem *m, uint64_t gpa, uint64_t len);

/* True if [gpa, gpa+len) is RAM. */
bool gmem_is_ram(const struct gmem *m, uint64_t gpa, uint64_t len);

/* Zeroes [gpa, gpa+len) and returns whole pages of it to the host.
 * gpa and len must be page aligned. Returns 0 or -errno. */
int gmem_discard(struct gmem *m, uint64_t gpa, uint64_t len) WUR;

/* Copies between guest RAM and host buffers (local or remote). Return 0
 * or -EFAULT. */
int gmem_read(const struct gmem *m, uint64_t gpa, void *dst, uint64_t len) WUR;
int gmem_write(struct gmem *m, uint64_t gpa, const void *src, uint64_t len) WUR;

/* Makes a GMEM_FILE_PRIVATE RAM remote: it lives in process pid, mapped
 * there from the same file at the guest-physical addresses. discard(arg,
 * gpa, len) zeroes pages there. Returns 0 or -errno. */
int gmem_set_remote(struct gmem *m, pid_t pid, int (*discard)(void *arg, uint64_t gpa, uint64_t len),
		    void *arg) WUR;
/* Remote RAM: copies the pages the other process holds privately (written
 * or discarded since the mapping) into the mirror at host, so that host,
 * the iterators and gmem_changed_pages see the guest's memory. Call with
 * the guest stopped (a paused VM). No-op for local RAM. Returns 0 or
 * -errno. */
int gmem_sync(struct gmem *m) WUR;

#endif
