/* guest/agent/io.c - framing on the agent channel: a growing input buffer
 * read with as few read(2) calls as possible, one writev(2) per frame. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

/* Input buffers larger than this are shrunk back when they empty. */
#define AGENT_INBUF_KEEP (1024u * 1024)

/* Prepares in for reading fd. Returns 0 or -ENOMEM. */
int agent_in_init(struct agent_in *in, int fd)
{
	memset(in, 0, sizeof(*in));
	in->fd = fd;
	in->buf = malloc(AGENT_INBUF_MIN);
	if (!in->buf)
		return -ENOMEM;
	in->cap = AGENT_INBUF_MIN;
	return 0;
}

static uint32_t be32_load(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* Makes room for at least need unread bytes: moves unread bytes to the
 * front and grows (or shrinks an idle oversized) buffer. Returns 0 or -ENOMEM. */
static int in_make_room(struct agent_in *in, size_t need)
{
	size_t used = in->end - in->start;
	size_t want = in->cap;

	if (in->start > 0) {
		memmove(in->buf, in->buf + in->start, used);
		in->start = 0;
		in->end = used;
	}
	if (need > want) {
		want = want * 2 > need ? want * 2 : need;
		if (want > AGENT_FRAME_MAX + 4)
			want = AGENT_FRAME_MAX + 4;
	} else if (used == 0 && need <= AGENT_INBUF_MIN && in->cap > AGENT_INBUF_KEEP) {
		want = AGENT_INBUF_MIN;
	}
	if (want != in->cap) {
		char *nb = realloc(in->buf, want);

		if (!nb)
			return -ENOMEM;
		in->buf = nb;
		in->cap = want;
	}
	return 0;
}

/* One read(2) into the free space. Returns bytes read, 0 on EOF, or -errno. */
static ssize_t in_fill(struct agent_in *in)
{
	for (;;) {
		ssize_t n = read(in->fd, in->buf + in->end, in->cap - in->end);

		if (n >= 0) {
			in->end += (size_t)n;
			return n;
		}
		if (errno != EINTR)
			return -errno;
	}
}

/* Returns the next frame's payload (valid until the next call): 1 for a
 * frame, 0 at end of input, -EMSGSIZE for an oversized frame, or -errno. */
int agent_in_next(struct agent_in *in, const char **payload, size_t *len)
{
	for (;;) {
		size_t avail = in->end - in->start;
		size_t need = 4;

		if (in->skip > 0) {
			size_t drop = avail < in->skip ? avail : (size_t)in->skip;

			in->start += drop;
			in->skip -= drop;
			avail -= drop;
		}
		if (in->skip == 0 && avail >= 4) {
			uint32_t n = be32_load(in->buf + in->start);

			if (n == 0) { /* empty frames are ignored */
				in->start += 4;
				continue;
			}
			if (n > AGENT_FRAME_MAX) {
				in->start += 4;
				in->skip = n;
				*len = n;
				return -EMSGSIZE;
			}
			if (avail - 4 >= n) {
				*payload = in->buf + in->start + 4;
				*len = n;
				in->start += 4 + (size_t)n;
				return 1;
			}
			need = 4 + (size_t)n;
		}
		if (in->skip > 0)
			need = 1;
		if (in->start == in->end)
			in->start = in->end = 0;
		if (in->cap - in->start < need || in->cap == in->end ||
		    (in->start == in->end && in->cap > AGENT_INBUF_KEEP)) {
			int rc = in_make_room(in, need);

			if (rc < 0)
				return rc;
		}
		ssize_t r = in_fill(in);

		if (r < 0)
			return (int)r;
		if (r == 0)
			return 0;
	}
}

/* Sends the n parts as one frame with one writev(2), looping on short
 * writes. Returns 0, -EMSGSIZE if over AGENT_FRAME_MAX, or -errno. */
int agent_out_frame(int fd, const struct iovec *parts, int n)
{
	struct iovec iov[9];
	unsigned char hdr[4];
	size_t total = 0;
	int cnt = 0;

	if (n < 0 || n > 8)
		return -EINVAL;
	for (int i = 0; i < n; i++)
		total += parts[i].iov_len;
	if (total > AGENT_FRAME_MAX)
		return -EMSGSIZE;
	hdr[0] = (unsigned char)(total >> 24);
	hdr[1] = (unsigned char)(total >> 16);
	hdr[2] = (unsigned char)(total >> 8);
	hdr[3] = (unsigned char)total;
	iov[cnt].iov_base = hdr;
	iov[cnt++].iov_len = 4;
	for (int i = 0; i < n; i++) {
		if (parts[i].iov_len > 0)
			iov[cnt++] = parts[i];
	}

	struct iovec *v = iov;

	while (cnt > 0) {
		ssize_t w = writev(fd, v, cnt);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		size_t done = (size_t)w;

		while (cnt > 0 && done >= v->iov_len) {
			done -= v->iov_len;
			v++;
			cnt--;
		}
		if (cnt > 0) {
			v->iov_base = (char *)v->iov_base + done;
			v->iov_len -= done;
		}
	}
	return 0;
}
