/* vmm/gmem.c - see gmem.h. */
#include "gmem.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int gmem_check_size(uint64_t size)
{
	if (size % (2 * MiB))
		return -EINVAL;
	if (size < GMEM_MIN_SIZE || size > GMEM_MAX_SIZE)
		return -ERANGE;
	return 0;
}

static void gmem_layout(struct gmem *m)
{
	uint64_t low = MIN(m->size, GMEM_HOLE_START);

	m->regions[0] = (struct gmem_region){ .gpa = 0, .size = low, .offset = 0 };
	m->nr_regions = 1;
	m->gpa_end = low;
	if (m->size > low) {
		m->regions[1] = (struct gmem_region){
			.gpa = GMEM_HOLE_END, .size = m->size - low, .offset = low };
		m->nr_regions = 2;
		m->gpa_end = GMEM_HOLE_END + (m->size - low);
	}
}

int gmem_init(struct gmem *m, uint64_t size, enum gmem_backing backing)
{
	int rc = gmem_check_size(size);
	if (rc < 0)
		return rc;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	m->remote_mem = m->remote_pagemap = -1;
	m->size = size;
	m->backing = backing;
	gmem_layout(m);

	if (backing == GMEM_ANON) {
		m->host = mmap(NULL, size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m->host == MAP_FAILED) {
			m->host = NULL;
			return -errno;
		}
		return 0;
	}
	if (backing != GMEM_MEMFD)
		return -EINVAL;

	m->fd = memfd_create("forkvm-ram", MFD_CLOEXEC);
	if (m->fd < 0)
		return -errno;
	if (ftruncate(m->fd, (off_t)size) < 0) {
		rc = -errno;
		goto err_close;
	}
	m->host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
	if (m->host == MAP_FAILED) {
		rc = -errno;
		m->host = NULL;
		goto err_close;
	}
	return 0;
err_close:
	close(m->fd);
	m->fd = -1;
	return rc;
}

int gmem_init_file(struct gmem *m, int fd, uint64_t size)
{
	struct stat st;
	int rc = gmem_check_size(size);

	if (rc == 0 && fstat(fd, &st) < 0)
		rc = -errno;
	if (rc == 0 && (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != size))
		rc = -EINVAL;
	if (rc < 0) {
		close(fd);
		return rc;
	}
	memset(m, 0, sizeof(*m));
	m->fd = fd;
	m->remote_mem = m->remote_pagemap = -1;
	m->size = size;
	m->backing = GMEM_FILE_PRIVATE;
	gmem_layout(m);
	m->discarded = calloc((size / GMEM_PAGE_SIZE + 63) / 64, sizeof(uint64_t));
	m->host = m->discarded ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
				      fd, 0) :
				 MAP_FAILED;
	if (m->host == MAP_FAILED) {
		rc = m->discarded ? -errno : -ENOMEM;
		m->host = NULL;
		free(m->discarded);
		m->discarded = NULL;
		close(fd);
		m->fd = -1;
		return rc;
	}
	return 0;
}

struct bitmap_arg {
	uint64_t *bits;
};

static int mark_range(void *arg, uint64_t off, uint64_t len)
{
	struct bitmap_arg *b = arg;
	for (uint64_t p = off / GMEM_PAGE_SIZE; p < (off + len) / GMEM_PAGE_SIZE; p++)
		b->bits[p / 64] |= 1ULL << (p % 64);
	return 0;
}

#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define PM_FILE (1ULL << 61)

/* PAGEMAP_SCAN: the kernel returns just the ranges of pages in one category
 * (cost grows with what matches, not with the mapping's size). Marks pages
 * that are present and not file pages (private copies), then swapped ones.
 * Returns -ENOTTY (or -EINVAL) where the kernel lacks it. */
static int scan_private_pages(const struct gmem *m, int fd, uint64_t *bits)
{
	struct page_region v[256];
	uintptr_t base = (uintptr_t)m->host, end = base + m->size;
	static const struct {
		uint64_t inverted, mask;
	} pass[] = {
		{ PAGE_IS_FILE, PAGE_IS_PRESENT | PAGE_IS_FILE }, /* present, not file */
		{ 0, PAGE_IS_SWAPPED },
	};

	for (size_t k = 0; k < sizeof(pass) / sizeof(pass[0]); k++) {
		uint64_t at = base;
		while (at < end) {
			struct pm_scan_arg a = {
				.size = sizeof(a), .start = at, .end = end,
				.vec = (uint64_t)(uintptr_t)v, .vec_len = 256,
				.category_inverted = pass[k].inverted, .category_mask = pass[k].mask,
				.return_mask = pass[k].mask,
			};
			long n = ioctl(fd, PAGEMAP_SCAN, &a);
			if (n < 0)
				return -errno;
			for (long i = 0; i < n; i++)
				for (uint64_t p = (v[i].start - base) / GMEM_PAGE_SIZE;
				     p < (v[i].end - base) / GMEM_PAGE_SIZE; p++)
					bits[p / 64] |= 1ULL << (p % 64);
			if (a.walk_end <= at)
				return -EIO;
			at = a.walk_end;
		}
	}
	return 0;
}

/* Marks the pages of the mapping that are private (anonymous) copies. */
static int mark_private_pages(const struct gmem *m, uint64_t *bits)
{
	uint64_t pages = m->size / GMEM_PAGE_SIZE, chunk = 65536;
	uint64_t *pm = NULL;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	rc = scan_private_pages(m, fd, bits);
	if (rc != -ENOTTY && rc != -EINVAL)
		goto out;
	/* Before Linux 6.7: read every page's entry. */
	rc = 0;
	pm = malloc(chunk * sizeof(*pm));
	if (!pm) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint64_t p = 0; p < pages; p += chunk) {
		uint64_t n = MIN(chunk, pages - p);
		off_t at = (off_t)(((uintptr_t)m->host / GMEM_PAGE_SIZE + p) * sizeof(uint64_t));
		ssize_t got = pread(fd, pm, n * sizeof(*pm), at);
		if (got < 0) {
			rc = -errno;
			goto out;
		}
		for (uint64_t i = 0; i < (uint64_t)got / sizeof(*pm); i++)
			if ((pm[i] & (PM_PRESENT | PM_SWAPPED)) && !(pm[i] & PM_FILE))
				bits[(p + i) / 64] |= 1ULL << ((p + i) % 64);
	}
out:
	if (fd >= 0)
		close(fd);
	free(pm);
	return rc;
}

int gmem_changed_pages(const struct gmem *m, uint64_t **bits)
{
	uint64_t words = (m->size / GMEM_PAGE_SIZE + 63) / 64;
	uint64_t *b = calloc(words, sizeof(uint64_t));
	int rc;

	if (!b)
		return -ENOMEM;
	if (m->backing != GMEM_FILE_PRIVATE) {
		memset(b, 0xff, words * sizeof(uint64_t)); /* no file to compare with */
		*bits = b;
		return 0;
	}
	rc = mark_private_pages(m, b);
	if (rc < 0) {
		free(b);
		return rc;
	}
	for (uint64_t w = 0; w < words; w++)
		b[w] |= m->discarded[w];
	*bits = b;
	return 0;
}

int gmem_for_each_populated(const struct gmem *m, int (*cb)(void *arg, uint64_t off, uint64_t len),
			    void *arg)
{
	uint64_t pages = m->size / GMEM_PAGE_SIZE;
	struct bitmap_arg b;
	int rc;

	if (m->backing == GMEM_MEMFD)
		return fd_data_extents(m->fd, m->size, GMEM_PAGE_SIZE, cb, arg);
	/* Private mappings: the file's extents plus the private copies. */
	b.bits = calloc((pages + 63) / 64, sizeof(uint64_t));
	if (!b.bits)
		return -ENOMEM;
	rc = m->fd >= 0 ? fd_data_extents(m->fd, m->size, GMEM_PAGE_SIZE, mark_range, &b) : 0;
	if (rc == 0)
		rc = mark_private_pages(m, b.bits);
	for (uint64_t p = 0; rc == 0 && p < pages;) {
		if (!(b.bits[p / 64] & (1ULL << (p % 64)))) {
			p++;
			continue;
		}
		uint64_t q = p;
		while (q < pages && (b.bits[q / 64] & (1ULL << (q % 64))))
			q++;
		rc = cb(arg, p * GMEM_PAGE_SIZE, (q - p) * GMEM_PAGE_SIZE);
		p = q;
	}
	free(b.bits);
	return rc;
}

void gmem_fini(struct gmem *m)
{
	if (m->remote) {
		if (m->remote_mem >= 0)
			close(m->remote_mem);
		if (m->remote_pagemap >= 0)
			close(m->remote_pagemap);
		m->remote = false;
	}
	m->remote_mem = m->remote_pagemap = -1;
	free(m->discarded);
	m->discarded = NULL;
	/* An fd is only ever kept together with its mapping (see gmem_init),
	 * so a zeroed or never-initialised struct closes nothing. */
	if (m->host) {
		munmap(m->host, m->size);
		if (m->fd >= 0)
			close(m->fd);
	}
	m->host = NULL;
	m->fd = -1;
}

static const struct gmem_region *region_of(const struct gmem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->nr_regions; i++) {
		const struct gmem_region *r = &m->regions[i];
		if (gpa >= r->gpa && range_within(gpa - r->gpa, len, r->size))
			return r;
	}
	return NULL;
}

void *gmem_ptr(const struct gmem *m, uint64_t gpa, uint64_t len)
{
	const struct gmem_region *r;

	if (!m->host || m->remote)
		return NULL;
	r = region_of(m, gpa, len);
	if (!r)
		return NULL;
	return m->host + r->offset + (gpa - r->gpa);
}

bool gmem_is_ram(const struct gmem *m, uint64_t gpa, uint64_t len)
{
	return region_of(m, gpa, len) != NULL;
}

int gmem_discard(struct gmem *m, uint64_t gpa, uint64_t len)
{
	const struct gmem_region *r;
	uint64_t off;

	if ((gpa | len) & (GMEM_PAGE_SIZE - 1))
		return -EINVAL;
	r = region_of(m, gpa, len);
	if (!r)
		return -EFAULT;
	if (!len)
		return 0;
	off = r->offset + (gpa - r->gpa);
	switch (m->backing) {
	case GMEM_MEMFD:
		/* Zeroes and frees the pages; KVM's MMU notifier drops its mappings. */
		if (fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) < 0)
			return -errno;
		return 0;
	case GMEM_ANON:
		if (madvise(m->host + off, len, MADV_DONTNEED) < 0)
			return -errno;
		return 0;
	case GMEM_FILE_PRIVATE:
		/* Remote RAM: the pages go away there (the mirror follows). */
		if (m->remote) {
			int rc = m->remote_discard ? m->remote_discard(m->remote_arg, gpa, len) : -ENOSYS;
			if (rc < 0)
				return rc;
		}
		/* DONTNEED on a private file mapping would bring back the file's
		 * bytes; replace the range with fresh anonymous zero pages. */
		if (mmap(m->host + off, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
			return -errno;
		for (uint64_t p = off / GMEM_PAGE_SIZE; p < (off + len) / GMEM_PAGE_SIZE; p++)
			m->discarded[p / 64] |= 1ULL << (p % 64);
		return 0;
	}
	return -EINVAL;
}

/* pread or pwrite of the other process's memory at guest-physical gpa:
 * its mapping sits at the guest's own addresses. */
static int remote_io(const struct gmem *m, uint64_t gpa, void *buf, uint64_t len, bool write)
{
	uint8_t *p = buf;

	if (!region_of(m, gpa, len))
		return -EFAULT;
	while (len) {
		ssize_t n = write ? pwrite(m->remote_mem, p, len, (off_t)gpa) :
				    pread(m->remote_mem, p, len, (off_t)gpa);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EFAULT;
		p += n;
		gpa += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

int gmem_read(const struct gmem *m, uint64_t gpa, void *dst, uint64_t len)
{
	if (m->remote)
		return remote_io(m, gpa, dst, len, false);
	const void *p = gmem_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

int gmem_write(struct gmem *m, uint64_t gpa, const void *src, uint64_t len)
{
	if (m->remote)
		return remote_io(m, gpa, (void *)(uintptr_t)src, len, true);
	void *p = gmem_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

int gmem_set_remote(struct gmem *m, pid_t pid, int (*discard)(void *arg, uint64_t gpa, uint64_t len),
		    void *arg)
{
	char path[64];

	if (m->backing != GMEM_FILE_PRIVATE || m->remote)
		return -EINVAL;
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	m->remote_mem = open(path, O_RDWR | O_CLOEXEC);
	if (m->remote_mem < 0)
		return -errno;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	m->remote_pagemap = open(path, O_RDONLY | O_CLOEXEC);
	if (m->remote_pagemap < 0) {
		int rc = -errno;
		close(m->remote_mem);
		m->remote_mem = -1;
		return rc;
	}
	m->remote = true;
	m->remote_discard = discard;
	m->remote_arg = arg;
	return 0;
}

/* The other process's private pages of region r, as page indexes of the
 * backing, into bits. PAGEMAP_SCAN where the kernel has it, else the
 * pagemap entries. */
static int remote_private_pages(const struct gmem *m, const struct gmem_region *r, uint64_t *bits)
{
	struct page_region v[256];
	static const struct {
		uint64_t inverted, mask;
	} pass[] = {
		{ PAGE_IS_FILE, PAGE_IS_PRESENT | PAGE_IS_FILE }, /* present, not file */
		{ 0, PAGE_IS_SWAPPED },
	};
	uint64_t first = r->offset / GMEM_PAGE_SIZE;
	int rc = 0;

	for (size_t k = 0; k < sizeof(pass) / sizeof(pass[0]) && rc == 0; k++) {
		uint64_t at = r->gpa, end = r->gpa + r->size;
		while (at < end) {
			struct pm_scan_arg a = {
				.size = sizeof(a), .start = at, .end = end,
				.vec = (uint64_t)(uintptr_t)v, .vec_len = 256,
				.category_inverted = pass[k].inverted, .category_mask = pass[k].mask,
				.return_mask = pass[k].mask,
			};
			long n = ioctl(m->remote_pagemap, PAGEMAP_SCAN, &a);
			if (n < 0) {
				rc = -errno;
				break;
			}
			for (long i = 0; i < n; i++)
				for (uint64_t p = (v[i].start - r->gpa) / GMEM_PAGE_SIZE;
				     p < (v[i].end - r->gpa) / GMEM_PAGE_SIZE; p++)
					bits[(first + p) / 64] |= 1ULL << ((first + p) % 64);
			if (a.walk_end <= at)
				return -EIO;
			at = a.walk_end;
		}
	}
	if (rc != -ENOTTY && rc != -EINVAL)
		return rc;
	/* Before Linux 6.7: every page's entry. */
	uint64_t pages = r->size / GMEM_PAGE_SIZE, pm[512];
	for (uint64_t p = 0; p < pages; p += 512) {
		uint64_t n = MIN(512, pages - p);
		off_t at = (off_t)((r->gpa / GMEM_PAGE_SIZE + p) * sizeof(uint64_t));
		ssize_t got = pread(m->remote_pagemap, pm, n * sizeof(*pm), at);
		if (got < 0)
			return -errno;
		for (uint64_t i = 0; i < (uint64_t)got / sizeof(*pm); i++)
			if ((pm[i] & (PM_PRESENT | PM_SWAPPED)) && !(pm[i] & PM_FILE))
				bits[(first + p + i) / 64] |= 1ULL << ((first + p + i) % 64);
	}
	return 0;
}

int gmem_sync(struct gmem *m)
{
	uint64_t pages = m->size / GMEM_PAGE_SIZE, words = (pages + 63) / 64;
	uint64_t *bits;
	int rc = 0;

	if (!m->remote)
		return 0;
	bits = calloc(words, sizeof(uint64_t));
	if (!bits)
		return -ENOMEM;
	for (unsigned i = 0; rc == 0 && i < m->nr_regions; i++)
		rc = remote_private_pages(m, &m->regions[i], bits);
	/* Copy each run of private pages into the mirror (discarded ones,
	 * never touched since, are not present there: the mirror has them
	 * as zero pages already). */
	for (uint64_t p = 0; rc == 0 && p < pages;) {
		if (!(bits[p / 64] & (1ULL << (p % 64)))) {
			p++;
			continue;
		}
		uint64_t q = p;
		while (q < pages && (bits[q / 64] & (1ULL << (q % 64))) && q - p < 256)
			q++;
		uint64_t off = p * GMEM_PAGE_SIZE, gpa = off < GMEM_HOLE_START ? off : off + (GMEM_HOLE_END - GMEM_HOLE_START);
		/* pread straight into the mirror: its pages become private copies */
		for (uint64_t done = 0, len = (q - p) * GMEM_PAGE_SIZE; done < len;) {
			ssize_t n = pread(m->remote_mem, m->host + off + done, len - done,
					  (off_t)(gpa + done));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				rc = n < 0 ? -errno : -EIO;
				break;
			}
			done += (uint64_t)n;
		}
		p = q;
	}
	free(bits);
	return rc;
}
