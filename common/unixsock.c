/* common/unixsock.c - see unixsock.h. */
#include "unixsock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int unixsock_check(const char *path, bool takeover, bool *stale)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;

	*stale = false;
	if (!path || !*path)
		return -EINVAL;
	if (strlen(path) > UNIXSOCK_PATH_MAX)
		return -ENAMETOOLONG;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	bool live = rc == 0 || errno == EAGAIN;
	close(fd);
	if (live && !takeover)
		return -EADDRINUSE;
	*stale = !live;
	return 0;
}

int unixsock_listen(struct unixsock *s, const char *path, bool publish)
{
	static unsigned seq;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int rc;

	memset(s, 0, sizeof(*s));
	s->fd = -1;
	if (strlen(path) > UNIXSOCK_PATH_MAX)
		return -ENAMETOOLONG;
	s->path = strdup(path);
	if (!s->path || asprintf(&s->bound, "%s.tmp-%d-%u", path, (int)getpid(),
				 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED)) < 0) {
		s->bound = NULL;
		rc = -ENOMEM;
		goto err;
	}
	strcpy(sa.sun_path, s->bound);
	unlink(s->bound);
	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->fd < 0) {
		rc = -errno;
		goto err;
	}
	/* The inode bind() creates takes the socket's mode: 0600 from the start. */
	if (fchmod(s->fd, 0600) < 0 || bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		goto err;
	}
	if (chmod(s->bound, 0600) < 0 || listen(s->fd, SOMAXCONN) < 0 || lstat(s->bound, &st) < 0) {
		rc = -errno;
		unlink(s->bound);
		goto err;
	}
	s->dev = (uint64_t)st.st_dev;
	s->ino = (uint64_t)st.st_ino;
	if (publish && (rc = unixsock_publish(s)) < 0) {
		unlink(s->bound);
		goto err;
	}
	return 0;
err:
	if (s->fd >= 0)
		close(s->fd);
	free(s->path);
	free(s->bound);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	return rc;
}

int unixsock_publish(struct unixsock *s)
{
	if (!s->bound || !strcmp(s->bound, s->path))
		return 0;
	if (rename(s->bound, s->path) < 0)
		return -errno;
	free(s->bound);
	s->bound = strdup(s->path);
	return s->bound ? 0 : -ENOMEM;
}

void unixsock_close(struct unixsock *s)
{
	struct stat st;

	if (s->fd >= 0)
		close(s->fd);
	if (s->bound && lstat(s->bound, &st) == 0 && (uint64_t)st.st_dev == s->dev &&
	    (uint64_t)st.st_ino == s->ino)
		unlink(s->bound);
	free(s->path);
	free(s->bound);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}
