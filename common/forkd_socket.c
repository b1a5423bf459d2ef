/* common/forkd_socket.c - see forkd_socket.h. */
#include "forkd_socket.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int forkd_socket_default_for(const char *env_socket, unsigned euid, const char *xdg_runtime_dir,
			     char *buf, size_t len)
{
	int n;

	if (env_socket && *env_socket)
		n = snprintf(buf, len, "%s", env_socket);
	else if (euid == 0)
		n = snprintf(buf, len, "/run/forkd/forkd.sock");
	else if (xdg_runtime_dir && xdg_runtime_dir[0] == '/')
		n = snprintf(buf, len, "%s/forkd/forkd.sock", xdg_runtime_dir);
	else
		n = snprintf(buf, len, "/tmp/forkd-%u/forkd.sock", euid);
	if (n < 0 || (size_t)n >= len) {
		if (len)
			buf[0] = '\0';
		return -ENAMETOOLONG;
	}
	return 0;
}

int forkd_socket_default(char *buf, size_t len)
{
	return forkd_socket_default_for(getenv(FORKD_SOCKET_ENV), (unsigned)geteuid(),
					getenv("XDG_RUNTIME_DIR"), buf, len);
}
