/* vmm/fguest/mm.c - the program's memory map and brk/mmap/munmap/mremap/
 * mprotect/madvise. See fguest.h for the memory model. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "common/log.h"
#include "vmm/fguest/fguest.h"
#include "vmm/vm.h"

#define PAGE 4096ULL

int fg_mm_init(struct fg_mm *mm, uint64_t user_start, uint64_t user_end)
{
	memset(mm, 0, sizeof(*mm));
	mm->user_start = user_start;
	mm->user_end = user_end;
	mm->mmap_top = user_end;
	if (user_end > GMEM_HOLE_START && user_start < GMEM_HOLE_END)
		return fg_mm_insert(mm, MAX(user_start, GMEM_HOLE_START), GMEM_HOLE_END, 0,
				    FG_VMA_RESERVED);
	return 0;
}

void fg_mm_fini(struct fg_mm *mm)
{
	free(mm->v);
	memset(mm, 0, sizeof(*mm));
}

/* Index of the first vma with end > addr (nr if none). */
static size_t first_after(const struct fg_mm *mm, uint64_t addr)
{
	size_t lo = 0, hi = mm->nr;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (mm->v[mid].end > addr)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static int reserve(struct fg_mm *mm, size_t extra)
{
	if (mm->nr + extra <= mm->cap)
		return 0;
	size_t cap = mm->cap ? mm->cap * 2 : 64;
	while (cap < mm->nr + extra)
		cap *= 2;
	struct fg_vma *v = realloc(mm->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	mm->v = v;
	mm->cap = cap;
	return 0;
}

static bool same_kind(const struct fg_vma *a, uint32_t prot, uint32_t kind)
{
	return a->kind == kind && a->prot == prot && kind != FG_VMA_RESERVED;
}

int fg_mm_insert(struct fg_mm *mm, uint64_t start, uint64_t end, uint32_t prot, uint32_t kind)
{
	size_t i;

	if (start >= end || (start | end) & (PAGE - 1))
		return -EINVAL;
	i = first_after(mm, start);
	if (i < mm->nr && mm->v[i].start < end)
		return -EEXIST;
	if (kind != FG_VMA_RESERVED)
		mm->mapped += end - start;
	/* Merge with neighbours of the same kind and protection. */
	bool left = i > 0 && mm->v[i - 1].end == start && same_kind(&mm->v[i - 1], prot, kind);
	bool right = i < mm->nr && mm->v[i].start == end && same_kind(&mm->v[i], prot, kind);
	if (left && right) {
		mm->v[i - 1].end = mm->v[i].end;
		memmove(&mm->v[i], &mm->v[i + 1], (mm->nr - i - 1) * sizeof(mm->v[0]));
		mm->nr--;
		return 0;
	}
	if (left) {
		mm->v[i - 1].end = end;
		return 0;
	}
	if (right) {
		mm->v[i].start = start;
		return 0;
	}
	if (reserve(mm, 1) < 0) {
		if (kind != FG_VMA_RESERVED)
			mm->mapped -= end - start;
		return -ENOMEM;
	}
	memmove(&mm->v[i + 1], &mm->v[i], (mm->nr - i) * sizeof(mm->v[0]));
	mm->v[i] = (struct fg_vma){ .start = start, .end = end, .prot = prot, .kind = kind };
	mm->nr++;
	return 0;
}

int fg_mm_remove(struct fg_mm *mm, uint64_t start, uint64_t end,
		 int (*discard)(void *arg, uint64_t start, uint64_t len), void *arg)
{
	size_t i;

	if (start >= end)
		return 0;
	for (i = first_after(mm, start); i < mm->nr && mm->v[i].start < end; i++)
		if (mm->v[i].kind == FG_VMA_RESERVED)
			return -EINVAL;
	/* At most one split: make room first so nothing fails halfway. */
	if (reserve(mm, 1) < 0)
		return -ENOMEM;

	i = first_after(mm, start);
	while (i < mm->nr && mm->v[i].start < end) {
		struct fg_vma *x = &mm->v[i];
		uint64_t s = MAX(x->start, start), e = MIN(x->end, end);

		if (discard) {
			int rc = discard(arg, s, e - s);
			if (rc < 0)
				return rc;
		}
		mm->mapped -= e - s;
		if (x->start < s && x->end > e) {
			struct fg_vma tail = *x;
			tail.start = e;
			x->end = s;
			memmove(&mm->v[i + 2], &mm->v[i + 1], (mm->nr - i - 1) * sizeof(mm->v[0]));
			mm->v[i + 1] = tail;
			mm->nr++;
			i += 2;
		} else if (x->start < s) {
			x->end = s;
			i++;
		} else if (x->end > e) {
			x->start = e;
			i++;
		} else {
			memmove(&mm->v[i], &mm->v[i + 1], (mm->nr - i - 1) * sizeof(mm->v[0]));
			mm->nr--;
		}
	}
	return 0;
}

const struct fg_vma *fg_mm_lookup(const struct fg_mm *mm, uint64_t addr)
{
	size_t i = first_after(mm, addr);
	if (i < mm->nr && mm->v[i].start <= addr)
		return &mm->v[i];
	return NULL;
}

bool fg_mm_mapped(const struct fg_mm *mm, uint64_t addr, uint64_t len)
{
	uint64_t end;
	size_t i;

	if (len == 0)
		len = 1; /* an empty range must still point into a mapping */
	if (add_overflows(addr, len, &end))
		return false;
	i = first_after(mm, addr);
	for (uint64_t at = addr; at < end; i++) {
		if (i >= mm->nr || mm->v[i].start > at || mm->v[i].kind == FG_VMA_RESERVED)
			return false;
		at = mm->v[i].end;
	}
	return true;
}

bool fg_mm_free(const struct fg_mm *mm, uint64_t start, uint64_t end)
{
	size_t i = first_after(mm, start);
	return !(i < mm->nr && mm->v[i].start < end);
}

uint64_t fg_mm_find_free(const struct fg_mm *mm, uint64_t len, uint64_t top)
{
	uint64_t gap_end = align_down(MIN(top, mm->user_end), PAGE);
	size_t k = mm->nr;

	len = align_up(len, PAGE);
	if (!len)
		return 0;
	while (k > 0) {
		const struct fg_vma *x = &mm->v[--k];
		if (x->start >= gap_end)
			continue;
		if (x->end < gap_end) {
			uint64_t lo = MAX(x->end, mm->user_start);
			if (gap_end > lo && gap_end - lo >= len)
				return gap_end - len;
		}
		gap_end = x->start;
	}
	if (gap_end > mm->user_start && gap_end - mm->user_start >= len)
		return gap_end - len;
	return 0;
}

/* ------------------------------------------------------------ syscalls */

static int discard_cb(void *arg, uint64_t start, uint64_t len)
{
	struct vm *vm = arg;
	return gmem_discard(&vm->mem, start, len);
}

/* True if [addr, addr+len) is a place a program may map: user range, RAM. */
static bool mappable(struct fguest *fg, uint64_t addr, uint64_t len)
{
	uint64_t end;
	return !add_overflows(addr, len, &end) && addr >= fg->mm.user_start &&
	       end <= fg->mm.user_end && gmem_is_ram(&fg->vm->mem, addr, len);
}

static long sys_mmap(struct fg_call *c)
{
	struct fguest *fg = c->fg;
	uint64_t addr = c->a[0], len = c->a[1];
	int prot = (int)c->a[2], flags = (int)c->a[3];
	int type = flags & MAP_TYPE;
	int rc;

	if (!(flags & MAP_ANONYMOUS))
		return (int)c->a[4] < 0 ? -EBADF : -ENODEV; /* there are no files */
	if (type != MAP_PRIVATE && type != MAP_SHARED && type != MAP_SHARED_VALIDATE)
		return -EINVAL;
	if (len == 0 || len > fg->mm.user_end)
		return len == 0 ? -EINVAL : -ENOMEM;
	len = align_up(len, PAGE);

	if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
		if (addr & (PAGE - 1))
			return -EINVAL;
		if (!mappable(fg, addr, len))
			return -ENOMEM;
		if (!fg_mm_free(&fg->mm, addr, addr + len)) {
			if (flags & MAP_FIXED_NOREPLACE)
				return -EEXIST;
			rc = fg_mm_remove(&fg->mm, addr, addr + len, discard_cb, fg->vm);
			if (rc < 0)
				return rc == -EINVAL ? -ENOMEM : rc;
		}
	} else if (addr && !(addr & (PAGE - 1)) && mappable(fg, addr, len) &&
		   fg_mm_free(&fg->mm, addr, addr + len)) {
		/* the hint is usable */
	} else {
		addr = fg_mm_find_free(&fg->mm, len, fg->mm.mmap_top);
		if (!addr)
			addr = fg_mm_find_free(&fg->mm, len, fg->mm.user_end);
		if (!addr || !mappable(fg, addr, len))
			return -ENOMEM;
	}
	rc = fg_mm_insert(&fg->mm, addr, addr + len, (uint32_t)prot, FG_VMA_MMAP);
	if (rc < 0)
		return -ENOMEM;
	return (long)addr;
}

static long sys_munmap(struct fg_call *c)
{
	struct fguest *fg = c->fg;
	uint64_t addr = c->a[0], len = c->a[1], end;

	if ((addr & (PAGE - 1)) || len == 0)
		return -EINVAL;
	len = align_up(len, PAGE);
	if (add_overflows(addr, len, &end) || addr < fg->mm.user_start || end > fg->mm.user_end)
		return -EINVAL;
	return fg_mm_remove(&fg->mm, addr, end, discard_cb, fg->vm);
}

static long sys_mprotect(struct fg_call *c)
{
	uint64_t addr = c->a[0], len = c->a[1], end;

	if (addr & (PAGE - 1))
		return -EINVAL;
	if (c->a[2] & ~(uint64_t)(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP))
		return -EINVAL;
	if (len == 0)
		return 0;
	len = align_up(len, PAGE);
	if (len == 0 || add_overflows(addr, len, &end))
		return -ENOMEM; /* the range wraps */
	/* Accepted, not enforced: the identity map is read-write for all. */
	return fg_mm_mapped(&c->fg->mm, addr, len) ? 0 : -ENOMEM;
}

static long sys_madvise(struct fg_call *c)
{
	uint64_t addr = c->a[0], len = align_up(c->a[1], PAGE);
	int advice = (int)c->a[2];

	if (addr & (PAGE - 1) || (c->a[1] && !len))
		return -EINVAL;
	if (len == 0)
		return 0;
	if (!fg_mm_mapped(&c->fg->mm, addr, len))
		return -ENOMEM;
	if (advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE)
		return gmem_discard(&c->vm->mem, addr, len);
	return 0;
}

/* Copies len bytes of guest RAM from src to dst (disjoint ranges), in
 * slices through a buffer: the RAM may be another process's. */
static int copy_guest(struct gmem *m, uint64_t dst, uint64_t src, uint64_t len)
{
	uint8_t *buf = malloc(MIN(len, (uint64_t)(1 << 20)));
	int rc = 0;

	if (len && !buf)
		return -ENOMEM;
	for (uint64_t done = 0; rc == 0 && done < len;) {
		uint64_t n = MIN(len - done, (uint64_t)(1 << 20));
		rc = gmem_read(m, src + done, buf, n);
		if (rc == 0)
			rc = gmem_write(m, dst + done, buf, n);
		done += n;
	}
	free(buf);
	return rc;
}

static long sys_mremap(struct fg_call *c)
{
	struct fguest *fg = c->fg;
	uint64_t old = c->a[0], oldlen = c->a[1], newlen = c->a[2], flags = c->a[3];
	uint64_t naddr = c->a[4];
	const struct fg_vma *vma;
	uint32_t prot, kind;
	int rc;

	if (old & (PAGE - 1))
		return -EINVAL;
	if (flags & ~(uint64_t)(MREMAP_MAYMOVE | MREMAP_FIXED))
		return -EINVAL;
	if ((flags & MREMAP_FIXED) && !(flags & MREMAP_MAYMOVE))
		return -EINVAL;
	if (newlen == 0 || oldlen == 0 || newlen > fg->mm.user_end || oldlen > fg->mm.user_end)
		return -EINVAL;
	oldlen = align_up(oldlen, PAGE);
	newlen = align_up(newlen, PAGE);
	vma = fg_mm_lookup(&fg->mm, old);
	if (!vma || vma->kind == FG_VMA_RESERVED || old + oldlen > vma->end)
		return -EFAULT;
	prot = vma->prot;
	kind = vma->kind == FG_VMA_BRK ? FG_VMA_MMAP : vma->kind;

	if (flags & MREMAP_FIXED) {
		if ((naddr & (PAGE - 1)) || !mappable(fg, naddr, newlen))
			return -EINVAL;
		if (naddr < old + oldlen && old < naddr + newlen)
			return -EINVAL;
	} else if (newlen <= oldlen) {
		rc = fg_mm_remove(&fg->mm, old + newlen, old + oldlen, discard_cb, fg->vm);
		return rc < 0 ? rc : (long)old;
	} else if (mappable(fg, old + oldlen, newlen - oldlen) &&
		   fg_mm_free(&fg->mm, old + oldlen, old + newlen)) {
		rc = fg_mm_insert(&fg->mm, old + oldlen, old + newlen, prot, vma->kind);
		return rc < 0 ? -ENOMEM : (long)old;
	} else if (!(flags & MREMAP_MAYMOVE)) {
		return -ENOMEM;
	} else {
		naddr = fg_mm_find_free(&fg->mm, newlen, fg->mm.mmap_top);
		if (!naddr)
			naddr = fg_mm_find_free(&fg->mm, newlen, fg->mm.user_end);
		if (!naddr || !mappable(fg, naddr, newlen))
			return -ENOMEM;
	}

	/* Move: map the target, copy, drop the source. */
	rc = fg_mm_remove(&fg->mm, naddr, naddr + newlen, discard_cb, fg->vm);
	if (rc < 0)
		return rc == -EINVAL ? -ENOMEM : rc;
	rc = fg_mm_insert(&fg->mm, naddr, naddr + newlen, prot, kind);
	if (rc < 0)
		return -ENOMEM;
	rc = copy_guest(&fg->vm->mem, naddr, old, MIN(oldlen, newlen));
	if (rc < 0)
		return rc;
	rc = fg_mm_remove(&fg->mm, old, old + oldlen, discard_cb, fg->vm);
	if (rc < 0)
		return rc;
	return (long)naddr;
}

static long sys_brk(struct fg_call *c)
{
	struct fg_mm *mm = &c->fg->mm;
	uint64_t addr = c->a[0];
	uint64_t old_end = align_up(mm->brk_cur, PAGE), new_end;

	if (addr < mm->brk_start || addr > mm->user_end)
		return (long)mm->brk_cur;
	new_end = align_up(addr, PAGE);
	if (new_end > old_end) {
		if (!mappable(c->fg, old_end, new_end - old_end) ||
		    !fg_mm_free(mm, old_end, new_end) ||
		    fg_mm_insert(mm, old_end, new_end, PROT_READ | PROT_WRITE, FG_VMA_BRK) < 0)
			return (long)mm->brk_cur;
	} else if (new_end < old_end) {
		if (fg_mm_remove(mm, new_end, old_end, discard_cb, c->vm) < 0)
			return (long)mm->brk_cur;
	}
	mm->brk_cur = addr;
	return (long)addr;
}

long fg_sys_mm(struct fg_call *c, bool *handled)
{
	*handled = true;
	switch (c->nr) {
	case SYS_mmap:
		return sys_mmap(c);
	case SYS_munmap:
		return sys_munmap(c);
	case SYS_mprotect:
		return sys_mprotect(c);
	case SYS_madvise:
		return sys_madvise(c);
	case SYS_mremap:
		return sys_mremap(c);
	case SYS_brk:
		return sys_brk(c);
	}
	*handled = false;
	return -ENOSYS;
}

/* ------------------------------------------------------------ uaccess */

bool fg_user_ok(struct fguest *fg, uint64_t addr, uint64_t len)
{
	return fg_mm_mapped(&fg->mm, addr, len) && gmem_is_ram(&fg->vm->mem, addr, len);
}

int fg_copy_from_user(struct fguest *fg, void *dst, uint64_t src, uint64_t len)
{
	if (!fg_user_ok(fg, src, len))
		return -EFAULT;
	return gmem_read(&fg->vm->mem, src, dst, len);
}

int fg_copy_to_user(struct fguest *fg, uint64_t dst, const void *src, uint64_t len)
{
	if (!fg_user_ok(fg, dst, len))
		return -EFAULT;
	return gmem_write(&fg->vm->mem, dst, src, len);
}
