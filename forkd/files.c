/* forkd/files.c - the daemon's file helpers: small /proc and cgroup files,
 * directory walks without allocation, a clone's run directory, and the
 * scheduling policy of a process's threads (found through /proc). Used by
 * the clone lifecycle, the jail and the metrics. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forkd/internal.h"

int forkd_read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	while (got + 1 < len) {
		ssize_t n = read(fd, buf + got, len - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';
	return 0;
}

/* Reads with getdents64 into a stack buffer: forkd lists directories for
 * every clone, and opendir's 32 KiB buffer per call would churn the
 * allocator. */
void forkd_dir_each(const char *dir, forkd_dir_fn *fn, void *arg)
{
	char buf[4096] __attribute__((aligned(8)));
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return;
	while ((n = getdents64(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			struct dirent64 *e = (struct dirent64 *)(void *)(buf + off);
			off += e->d_reclen;
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				fn(dir, e->d_name, e->d_type, arg);
		}
	}
	close(fd);
}

static void sched_one(const char *dir, const char *name, unsigned char type, void *arg)
{
	struct sched_param sp = {.sched_priority = 0};
	pid_t tid = (pid_t)atoi(name);
	(void)dir;
	(void)type;
	if (tid > 0)
		sched_setscheduler(tid, *(const int *)arg, &sp);
}

/* Tearing a VM down costs 5-35 ms of kernel time on PVM (closing a VM with
 * an irqchip): a dying clone does it at SCHED_IDLE, every thread of it, so
 * it does not take the CPU from clones being forked or running. */
void forkd_sched_threads(pid_t pid, int policy)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	forkd_dir_each(path, sched_one, &policy);
}

/* Removes a dead clone's directory with what its process left there: the
 * agent socket and console log, and the socket's temporary name when the
 * clone was killed during its restore (before the socket was published). */
static void unlink_one(const char *dir, const char *name, unsigned char type, void *arg)
{
	char p[512];
	(void)type;
	(void)arg;
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	unlink(p);
}

void forkd_rm_dir(const char *dir)
{
	forkd_dir_each(dir, unlink_one, NULL);
	rmdir(dir);
}
