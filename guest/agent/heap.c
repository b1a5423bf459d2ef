/* guest/agent/heap.c - the allocator behind the Duktape heap. Each guest
 * system call costs a VM exit, and musl's malloc maps and unmaps memory for
 * every burst of allocation, so blocks up to 256 KiB come from size-class
 * free lists carved out of large chunks that are never returned, and larger
 * blocks are mappings of their own, sized to a power of two (untouched pages
 * cost nothing) so that growing arrays and strings can reuse a small cache
 * of freed mappings or grow in place. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "agent.h"

#define HEAP_HDR 16 /* keeps payloads 16-byte aligned */
#define HEAP_SMALL_MAX (256u * 1024) /* largest class, header included */
#define HEAP_CHUNK_MIN (1u * 1024 * 1024)
#define HEAP_CHUNK_MAX (16u * 1024 * 1024)
#define HEAP_PAGE 4096u
#define HEAP_LARGE (0xffffffffu) /* cls of a block with its own mapping */

struct heap_hdr {
	uint64_t size; /* bytes requested */
	uint32_t cls; /* size class, or HEAP_LARGE */
	uint32_t pages; /* mapping length in pages (large blocks) */
};

_Static_assert(sizeof(struct heap_hdr) == HEAP_HDR, "header size");

/* Block size (header included) of class cls. */
static size_t class_size(unsigned cls)
{
	unsigned k, j;

	if (cls < 16)
		return (size_t)(cls + 1) * 16;
	k = 8 + (cls - 16) / 4;
	j = (cls - 16) % 4 + 1;
	return ((size_t)1 << k) + j * ((size_t)1 << (k - 2));
}

/* Smallest class whose blocks hold total bytes (total <= HEAP_SMALL_MAX). */
static unsigned class_of(size_t total)
{
	unsigned k, j;
	size_t step;

	if (total <= 256)
		return total <= 16 ? 0 : (unsigned)((total + 15) / 16 - 1);
	k = 63 - (unsigned)__builtin_clzll((unsigned long long)(total - 1)); /* 2^k < total */
	step = (size_t)1 << (k - 2);
	j = (unsigned)((total - ((size_t)1 << k) + step - 1) / step);
	return 16 + (k - 8) * 4 + (j - 1);
}

static size_t page_round(size_t n)
{
	return (n + HEAP_PAGE - 1) & ~(size_t)(HEAP_PAGE - 1);
}

/* Mapping length for a large block of total bytes: the next power of two. */
static size_t large_len(size_t total)
{
	return (size_t)1 << (64 - __builtin_clzll((unsigned long long)(total - 1)));
}

static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Puts the rest of the current chunk on the free lists. */
static void chunk_retire(struct agent_heap *h)
{
	while (h->bump_end - h->bump >= 16) {
		unsigned cls = class_of((size_t)(h->bump_end - h->bump));

		if (class_size(cls) > (size_t)(h->bump_end - h->bump))
			cls--;
		*(void **)h->bump = h->free[cls];
		h->free[cls] = h->bump;
		h->bump += class_size(cls);
	}
	h->bump = h->bump_end = NULL;
}

/* Returns a block (header included) of class cls, or NULL. */
static char *small_get(struct agent_heap *h, unsigned cls)
{
	size_t bs = class_size(cls);
	char *b = h->free[cls];

	if (b) {
		h->free[cls] = *(void **)b;
		return b;
	}
	if ((size_t)(h->bump_end - h->bump) < bs) {
		size_t len = h->reserved / 4;
		char *c;

		len = len < HEAP_CHUNK_MIN ? HEAP_CHUNK_MIN : len > HEAP_CHUNK_MAX ? HEAP_CHUNK_MAX : len;
		len = page_round(len);
		c = map_anon(len);
		if (!c)
			return NULL;
		chunk_retire(h);
		h->bump = c;
		h->bump_end = c + len;
		h->reserved += len;
	}
	b = h->bump;
	h->bump += bs;
	return b;
}

/* Returns a mapping of at least len bytes (the smallest cached one of at
 * most 2 * len, else a new one), or NULL. *got is its length. */
static char *large_get(struct agent_heap *h, size_t len, size_t *got)
{
	int best = -1;
	char *p;

	for (int i = 0; i < AGENT_HEAP_CACHE; i++) {
		size_t s = h->cache[i].len;

		if (h->cache[i].p && s >= len && s / 2 <= len &&
		    (best < 0 || s < h->cache[best].len))
			best = i;
	}
	if (best >= 0) {
		p = h->cache[best].p;
		*got = h->cache[best].len;
		h->cache[best].p = NULL;
		h->cache_bytes -= *got;
		return p;
	}
	p = map_anon(len);
	if (!p)
		return NULL;
	*got = len;
	h->reserved += len;
	return p;
}

/* Caches or unmaps a large block's mapping. */
static void large_put(struct agent_heap *h, char *p, size_t len)
{
	if (len <= AGENT_HEAP_CACHE_BLOCK && h->cache_bytes + len <= AGENT_HEAP_CACHE_BYTES) {
		for (int i = 0; i < AGENT_HEAP_CACHE; i++) {
			if (!h->cache[i].p) {
				h->cache[i].p = p;
				h->cache[i].len = len;
				h->cache_bytes += len;
				return;
			}
		}
	}
	munmap(p, len);
	h->reserved -= len;
}

static void account(struct agent_heap *h, size_t add, size_t sub)
{
	h->live = h->live - sub + add;
	if (h->live > h->peak)
		h->peak = h->live;
}

/* Returns size bytes, 16-byte aligned, or NULL. */
void *agent_heap_alloc(struct agent_heap *h, size_t size)
{
	struct heap_hdr *hd;
	size_t total = size + HEAP_HDR;

	if (size > ((size_t)1 << 40))
		return NULL;
	if (total <= HEAP_SMALL_MAX) {
		unsigned cls = class_of(total);

		hd = (struct heap_hdr *)(void *)small_get(h, cls);
		if (!hd)
			return NULL;
		hd->cls = cls;
		hd->pages = 0;
	} else {
		size_t got;

		hd = (struct heap_hdr *)(void *)large_get(h, large_len(total), &got);
		if (!hd)
			return NULL;
		hd->cls = HEAP_LARGE;
		hd->pages = (uint32_t)(got / HEAP_PAGE);
	}
	hd->size = size;
	account(h, size, 0);
	return (char *)hd + HEAP_HDR;
}

/* Releases a block from agent_heap_alloc (NULL is ignored). */
void agent_heap_free(struct agent_heap *h, void *ptr)
{
	struct heap_hdr *hd;

	if (!ptr)
		return;
	hd = (struct heap_hdr *)(void *)((char *)ptr - HEAP_HDR);
	account(h, 0, hd->size);
	if (hd->cls == HEAP_LARGE) {
		large_put(h, (char *)hd, (size_t)hd->pages * HEAP_PAGE);
	} else {
		*(void **)hd = h->free[hd->cls];
		h->free[hd->cls] = hd;
	}
}

/* Resizes a block (realloc semantics; size 0 frees and returns NULL). */
void *agent_heap_realloc(struct agent_heap *h, void *ptr, size_t size)
{
	struct heap_hdr *hd;
	size_t total = size + HEAP_HDR;
	void *np;

	if (!ptr)
		return agent_heap_alloc(h, size);
	if (size == 0) {
		agent_heap_free(h, ptr);
		return NULL;
	}
	if (size > ((size_t)1 << 40))
		return NULL;
	hd = (struct heap_hdr *)(void *)((char *)ptr - HEAP_HDR);
	if (hd->cls != HEAP_LARGE && total <= HEAP_SMALL_MAX && class_of(total) == hd->cls) {
		account(h, size, hd->size);
		hd->size = size;
		return ptr;
	}
	if (hd->cls == HEAP_LARGE && total > HEAP_SMALL_MAX) {
		size_t have = (size_t)hd->pages * HEAP_PAGE;
		size_t want;
		char *m;

		if (total <= have && total > have / 2) {
			account(h, size, hd->size);
			hd->size = size;
			return ptr;
		}
		want = large_len(total);
		m = mremap(hd, have, want, MREMAP_MAYMOVE);
		if (m == MAP_FAILED)
			return NULL;
		h->reserved = h->reserved - have + want;
		hd = (struct heap_hdr *)(void *)m;
		hd->pages = (uint32_t)(want / HEAP_PAGE);
		account(h, size, hd->size);
		hd->size = size;
		return m + HEAP_HDR;
	}
	np = agent_heap_alloc(h, size);
	if (!np)
		return NULL;
	memcpy(np, ptr, hd->size < size ? hd->size : size);
	agent_heap_free(h, ptr);
	return np;
}
