/* common/forkd_socket.h - where the fork daemon's API socket is when nobody
 * says: the one default shared by forkd (its --api-socket) and forkctl (its
 * --forkd), so that both find the same socket. */
#ifndef FORKVM_COMMON_FORKD_SOCKET_H
#define FORKVM_COMMON_FORKD_SOCKET_H

#include <stddef.h>

/* The environment variable that names the socket. */
#define FORKD_SOCKET_ENV "FORKD_SOCKET"

/* Human-readable statement of the rule below, for --help texts. */
#define FORKD_SOCKET_DEFAULT_HELP                                                                  \
	"$FORKD_SOCKET, else /run/forkd/forkd.sock for root, else\n"                               \
	"$XDG_RUNTIME_DIR/forkd/forkd.sock, else /tmp/forkd-UID/forkd.sock"

/* Writes to buf the default socket of a process with effective user id euid,
 * given the values of $FORKD_SOCKET and $XDG_RUNTIME_DIR (NULL or "": unset):
 *   1. env_socket, when set;
 *   2. /run/forkd/forkd.sock when euid is 0;
 *   3. XDG_RUNTIME_DIR/forkd/forkd.sock when xdg_runtime_dir is set and
 *      absolute (the XDG spec says to ignore relative values);
 *   4. /tmp/forkd-EUID/forkd.sock.
 * Pure: reads neither the environment nor the file system.
 * Returns 0, or -ENAMETOOLONG when the path does not fit in len bytes (buf
 * then holds "" when len > 0). */
int forkd_socket_default_for(const char *env_socket, unsigned euid, const char *xdg_runtime_dir,
			     char *buf, size_t len) __attribute__((warn_unused_result));

/* forkd_socket_default_for() with this process's environment and effective
 * user id. Same returns. */
int forkd_socket_default(char *buf, size_t len) __attribute__((warn_unused_result));

#endif
