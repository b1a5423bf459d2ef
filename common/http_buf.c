/* common/http_buf.c - the byte buffers (struct hbuf) every part of the HTTP
 * code accumulates into; see http_internal.h. */
#include "http_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t http_hbuf_len(const struct hbuf *b)
{
	return b->end - b->start;
}

char *http_hbuf_data(const struct hbuf *b)
{
	return b->p ? b->p + b->start : NULL;
}

int http_hbuf_reserve(struct hbuf *b, size_t extra)
{
	size_t need, cap;
	char *np;

	if (b->start && b->cap - b->end <= extra) {
		memmove(b->p, b->p + b->start, b->end - b->start);
		b->end -= b->start;
		b->start = 0;
	}
	if (extra > SIZE_MAX - 2 - b->end)
		return -ENOMEM;
	need = b->end + extra + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	np = realloc(b->p, cap);
	if (!np)
		return -ENOMEM;
	b->p = np;
	b->cap = cap;
	return 0;
}

int http_hbuf_append(struct hbuf *b, const void *data, size_t n)
{
	int rc = http_hbuf_reserve(b, n);

	if (rc < 0)
		return rc;
	if (n)
		memcpy(b->p + b->end, data, n);
	b->end += n;
	b->p[b->end] = '\0';
	return 0;
}

void http_hbuf_consume(struct hbuf *b, size_t n)
{
	b->start += n;
	if (b->start >= b->end)
		b->start = b->end = 0;
}

void http_hbuf_free(struct hbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}
