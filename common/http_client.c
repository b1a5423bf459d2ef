/* common/http_client.c - the blocking one-shot client: one request per
 * connection (Connection: close), response parsed with http_parser. */
#include "http_internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util.h"

#define HTTP_CLIENT_MAX_BODY (64u * 1024 * 1024)
#define HTTP_CLIENT_MAX_HEADER (64 * 1024)

struct client_state {
	struct hbuf body;
	struct hbuf ctype;
	char field[16];          /* current header name, if short enough to matter */
	size_t field_len;        /* may exceed sizeof(field): then it matches nothing */
	enum hdr_state hdr_state;
	bool is_ctype;           /* the current header is Content-Type */
	size_t hdr_bytes;
	int status;
	bool done;
	int err;                 /* -errno chosen by a callback */
};

/* Milliseconds left until deadline (ns; 0: none → -1), at least 0. */
static int ms_left(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = time_mono_ns();
	if (now >= deadline)
		return 0;
	return (int)MIN((deadline - now + 999999) / 1000000, (uint64_t)INT_MAX);
}

/* Client on_message_begin: resets the response being collected. */
static int ccb_message_begin(http_parser *p)
{
	struct client_state *s = p->data;

	http_hbuf_free(&s->body);
	http_hbuf_free(&s->ctype);
	s->hdr_state = HDR_NONE;
	s->is_ctype = false;
	s->hdr_bytes = 0;
	return 0;
}

/* Client on_header_field: tracks whether the header is Content-Type. */
static int ccb_header_field(http_parser *p, const char *at, size_t n)
{
	struct client_state *s = p->data;

	s->hdr_bytes += n;
	if (s->hdr_bytes > HTTP_CLIENT_MAX_HEADER) {
		s->err = -EPROTO;
		return -1;
	}
	if (s->hdr_state != HDR_FIELD)
		s->field_len = 0;
	if (s->field_len + n < sizeof(s->field))
		memcpy(s->field + s->field_len, at, n);
	s->field_len += n;
	s->hdr_state = HDR_FIELD;
	return 0;
}

/* Client on_header_value: keeps the Content-Type value. */
static int ccb_header_value(http_parser *p, const char *at, size_t n)
{
	struct client_state *s = p->data;

	s->hdr_bytes += n;
	if (s->hdr_bytes > HTTP_CLIENT_MAX_HEADER) {
		s->err = -EPROTO;
		return -1;
	}
	if (s->hdr_state == HDR_FIELD) {
		s->is_ctype = s->field_len == strlen("content-type") &&
			      !strncasecmp(s->field, "content-type", s->field_len);
		if (s->is_ctype)
			http_hbuf_free(&s->ctype);
	}
	s->hdr_state = HDR_VALUE;
	if (s->is_ctype && http_hbuf_append(&s->ctype, at, n) < 0) {
		s->err = -ENOMEM;
		return -1;
	}
	return 0;
}

/* Client on_body: collects the body within the client limit. */
static int ccb_body(http_parser *p, const char *at, size_t n)
{
	struct client_state *s = p->data;

	if (n > HTTP_CLIENT_MAX_BODY || http_hbuf_len(&s->body) > HTTP_CLIENT_MAX_BODY - n) {
		s->err = -EFBIG;
		return -1;
	}
	if (http_hbuf_append(&s->body, at, n) < 0) {
		s->err = -ENOMEM;
		return -1;
	}
	return 0;
}

/* Client on_message_complete: skips 1xx interim responses, stops at the final one. */
static int ccb_message_complete(http_parser *p)
{
	struct client_state *s = p->data;

	if (p->status_code < 200)
		return 0;
	s->status = (int)p->status_code;
	s->done = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings client_settings = {
	.on_message_begin = ccb_message_begin,
	.on_header_field = ccb_header_field,
	.on_header_value = ccb_header_value,
	.on_body = ccb_body,
	.on_message_complete = ccb_message_complete,
};

/* Connects fd to sa, retrying while the backlog is full. Returns 0 or -errno. */
WUR static int client_connect(int fd, const struct sockaddr_un *sa, uint64_t deadline)
{
	for (;;) {
		if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		if (deadline && time_mono_ns() >= deadline)
			return -ETIMEDOUT;
		poll(NULL, 0, 10);
	}
}

/* Sends req; stops early (returning 0) if the server answers or hangs up
 * before taking it all. Returns 0 or -errno. */
WUR static int client_send(int fd, const char *req, size_t len, uint64_t deadline)
{
	while (len) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT | POLLIN };
		ssize_t n;
		int pr = poll(&pfd, 1, ms_left(deadline));

		if (pr < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pr == 0)
			return -ETIMEDOUT;
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
			return 0; /* early answer or hang-up: go read it */
		n = send(fd, req, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			if (errno == EPIPE || errno == ECONNRESET)
				return 0;
			return -errno;
		}
		req += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Moves a complete response from s into resp. Returns 0 or -ENOMEM. */
static int client_finish(struct client_state *s, struct http_client_response *resp)
{
	if (http_hbuf_append(&s->body, "", 0) < 0)
		return -ENOMEM;
	resp->status = s->status;
	resp->body_len = http_hbuf_len(&s->body);
	resp->body = s->body.p;
	if (s->body.start)
		memmove(resp->body, resp->body + s->body.start, resp->body_len + 1);
	s->body.p = NULL;
	if (s->ctype.p) {
		resp->content_type = strdup(http_hbuf_data(&s->ctype));
		if (!resp->content_type) {
			http_client_response_free(resp);
			return -ENOMEM;
		}
	}
	return 0;
}

/* Feeds n bytes (n == 0: the peer closed) to the parser. Returns 1 when
 * the response is complete, 0 for more, or -errno. */
static int client_feed(http_parser *parser, struct client_state *s, const char *buf, size_t n)
{
	http_parser_execute(parser, &client_settings, buf, n);
	if (s->done)
		return 1;
	if (HTTP_PARSER_ERRNO(parser) != HPE_OK)
		return s->err ? s->err : -EPROTO;
	if (n == 0) /* EOF: a close-delimited body ends here, else truncated */
		return s->done ? 1 : -EPROTO;
	return 0;
}

int http_client_parse_response(const char *data, size_t len, size_t piece,
			       struct http_client_response *resp)
{
	struct client_state s;
	http_parser parser;
	int rc = 0;

	memset(resp, 0, sizeof(*resp));
	memset(&s, 0, sizeof(s));
	http_parser_init(&parser, HTTP_RESPONSE);
	parser.data = &s;
	if (!piece)
		piece = len ? len : 1;
	for (size_t off = 0; rc == 0 && off < len; off += piece)
		rc = client_feed(&parser, &s, data + off, MIN(piece, len - off));
	if (rc == 0)
		rc = client_feed(&parser, &s, NULL, 0);
	if (rc > 0)
		rc = client_finish(&s, resp);
	http_hbuf_free(&s.body);
	http_hbuf_free(&s.ctype);
	return rc;
}

/* Reads and parses the response into s. Returns 0 or -errno. */
WUR static int client_recv(int fd, struct client_state *s, uint64_t deadline)
{
	http_parser parser;
	char buf[16384];

	http_parser_init(&parser, HTTP_RESPONSE);
	parser.data = s;
	while (!s->done) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int pr = poll(&pfd, 1, ms_left(deadline));
		ssize_t n;

		if (pr < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pr == 0)
			return -ETIMEDOUT;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			if (errno == ECONNRESET)
				return -ECONNRESET;
			return -errno;
		}
		int fr = client_feed(&parser, s, buf, (size_t)n);
		if (fr < 0)
			return fr;
		if (fr > 0)
			break;
	}
	return 0;
}

int http_client_request(const char *socket_path, const char *method, const char *path, const char *content_type,
			const char *body, size_t body_len, int timeout_ms, struct http_client_response *resp)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct client_state s;
	uint64_t deadline = 0;
	char ctype[256] = "";
	char *req = NULL;
	int hlen, fd, rc;

	if (!socket_path || !method || !path || !resp || (!body && body_len))
		return -EINVAL;
	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (strpbrk(method, " \r\n") || strpbrk(path, " \r\n") || (content_type && strpbrk(content_type, "\r\n")))
		return -EINVAL;
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	memset(resp, 0, sizeof(*resp));
	memset(&s, 0, sizeof(s));
	if (timeout_ms >= 0)
		deadline = time_mono_ns() + (uint64_t)timeout_ms * 1000000ULL;
	if (content_type)
		snprintf(ctype, sizeof(ctype), "Content-Type: %s\r\n", content_type);
	hlen = snprintf(NULL, 0,
			"%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n%s"
			"Content-Length: %zu\r\n\r\n",
			method, path, ctype, body_len);
	if (hlen < 0)
		return -EINVAL;
	req = malloc((size_t)hlen + body_len + 1);
	if (!req)
		return -ENOMEM;
	snprintf(req, (size_t)hlen + 1,
		 "%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n%s"
		 "Content-Length: %zu\r\n\r\n",
		 method, path, ctype, body_len);
	if (body_len)
		memcpy(req + hlen, body, body_len);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		rc = -errno;
		goto out_req;
	}
	rc = client_connect(fd, &sa, deadline);
	if (rc < 0)
		goto out_fd;
	rc = client_send(fd, req, (size_t)hlen + body_len, deadline);
	if (rc < 0)
		goto out_fd;
	rc = client_recv(fd, &s, deadline);
	if (rc < 0)
		goto out_state;
	rc = client_finish(&s, resp);
out_state:
	http_hbuf_free(&s.body);
	http_hbuf_free(&s.ctype);
out_fd:
	close(fd);
out_req:
	free(req);
	return rc;
}

void http_client_response_free(struct http_client_response *resp)
{
	if (!resp)
		return;
	free(resp->body);
	free(resp->content_type);
	memset(resp, 0, sizeof(*resp));
}
