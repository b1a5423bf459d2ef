/* common/unixsock.h - listening Unix stream sockets that appear at their
 * path only once they accept connections: bound under a temporary sibling
 * name, listen()ed, then renamed onto the path (a client that sees the path
 * never gets ECONNREFUSED from a socket that is not listening yet). Mode
 * 0600 from the start. */
#ifndef FORKVM_COMMON_UNIXSOCK_H
#define FORKVM_COMMON_UNIXSOCK_H

#include <stdbool.h>
#include <stdint.h>

/* Longest path accepted: sun_path holds 107 bytes, and the temporary name
 * adds ".tmp-PID-N" (up to 23). */
#define UNIXSOCK_PATH_MAX 84

struct unixsock {
	int fd;           /* listening, non-blocking, close-on-exec */
	char *path;       /* where it is published */
	char *bound;      /* where it is bound now: path once published */
	uint64_t dev, ino; /* the socket file we made */
};

/* Checks path: absent (0), a dead socket (0, *stale = true), a live one
 * (-EADDRINUSE unless takeover), anything else (-EEXIST), too long
 * (-ENAMETOOLONG). */
int unixsock_check(const char *path, bool takeover, bool *stale) __attribute__((warn_unused_result));

/* Creates the socket for path, listening, at a temporary name; with
 * publish it is then renamed onto path at once, else unixsock_publish()
 * does it later. Returns 0 or -errno. */
int unixsock_listen(struct unixsock *s, const char *path, bool publish)
	__attribute__((warn_unused_result));

/* Renames the socket onto its path (atomically replacing what is there).
 * Returns 0 or -errno. */
int unixsock_publish(struct unixsock *s) __attribute__((warn_unused_result));

/* Closes the socket and unlinks its file if that is still ours. */
void unixsock_close(struct unixsock *s);

#endif
