/* guest/agent/linux.c - the agent as a process of a Linux guest (forkd's
 * Linux templates): its options, the agent channel on a vsock connection
 * to the host, and the identity page read through /dev/mem
 * (guest/abi/forkvm_linux.h). A function guest passes no options and uses
 * none of this. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

/* musl has no <linux/vm_sockets.h>: the kernel's struct sockaddr_vm. */
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define AGENT_VMADDR_CID_HOST 2u
struct agent_sockaddr_vm {
	sa_family_t svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_flags;
	unsigned char svm_zero[3];
};
_Static_assert(sizeof(struct agent_sockaddr_vm) == sizeof(struct sockaddr),
	       "struct sockaddr_vm is 16 bytes");

#define AGENT_USAGE "usage: " AGENT_NAME " [--vsock PORT] [--identity-devmem[=PATH]]"

/* Parses a vsock port: decimal, 1 to 0xfffffffe (0xffffffff is
 * VMADDR_PORT_ANY). Returns 0 or -EINVAL. */
static int parse_port(const char *s, unsigned *port)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v == 0 || v >= 0xffffffffULL)
		return -EINVAL;
	*port = (unsigned)v;
	return 0;
}

int agent_parse_args(int argc, char *const argv[], struct agent_opts *o, char *err, size_t errlen)
{
	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];

		if (strcmp(arg, "--vsock") == 0 || strncmp(arg, "--vsock=", 8) == 0) {
			const char *v = arg[7] == '=' ? arg + 8 : (i + 1 < argc ? argv[++i] : NULL);

			if (!v) {
				snprintf(err, errlen, "--vsock needs a port\n" AGENT_USAGE);
				return -EINVAL;
			}
			if (parse_port(v, &o->vsock_port) < 0) {
				snprintf(
				    err, errlen,
				    "--vsock %s: the port must be a number from 1 to 4294967294",
				    v);
				return -EINVAL;
			}
		} else if (strcmp(arg, "--identity-devmem") == 0) {
			o->identity_mem = "/dev/mem";
		} else if (strncmp(arg, "--identity-devmem=", 18) == 0 && arg[18]) {
			o->identity_mem = arg + 18;
		} else {
			snprintf(err, errlen, "unknown argument '%s'\n" AGENT_USAGE, arg);
			return -EINVAL;
		}
	}
	return 0;
}

/* Failures that mean the host end is not there yet: no transport or
 * device (the modules or the device still coming up), nobody listening,
 * a connection attempt that timed out or was reset. */
static int vsock_transient(int err)
{
	return err == ENODEV || err == ECONNREFUSED || err == ECONNRESET || err == ETIMEDOUT ||
	       err == EHOSTUNREACH || err == ENETUNREACH || err == EAGAIN || err == EINTR;
}

int agent_vsock_channel(unsigned port, unsigned timeout_ms)
{
	struct agent_sockaddr_vm sa = {
	    .svm_family = AF_VSOCK, .svm_port = port, .svm_cid = AGENT_VMADDR_CID_HOST};
	uint64_t deadline = agent_now_ns() + (uint64_t)timeout_ms * 1000000u;
	int fd, err;

	for (;;) {
		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno; /* no vsock in this kernel: not worth waiting for */
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		err = errno;
		close(fd);
		if (!vsock_transient(err) || agent_now_ns() >= deadline)
			return -err;
		nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
	}
	if (dup2(fd, AGENT_FD_IN) < 0 || dup2(fd, AGENT_FD_OUT) < 0) {
		err = errno;
		close(fd);
		return -err;
	}
	close(fd);
	/* A host that hangs up: writes fail with EPIPE (the agent exits 0),
	 * rather than killing the agent. */
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

const volatile struct forkvm_identity *agent_identity_map(const char *path, char *err,
							  size_t errlen)
{
	const long page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
	const volatile struct forkvm_identity *id;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	void *p;

	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	/* a regular file (the tests' stand-in for /dev/mem) must hold the
	 * page, else reading the mapping would raise SIGBUS */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_size < FORKVM_IDENTITY_LINUX_GPA + (uint64_t)page) {
		snprintf(err, errlen, "%s is too short to hold 0x%lx", path,
			 (unsigned long)FORKVM_IDENTITY_LINUX_GPA);
		close(fd);
		return NULL;
	}
	p = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED, fd, (off_t)FORKVM_IDENTITY_LINUX_GPA);
	if (p == MAP_FAILED) {
		snprintf(err, errlen, "cannot map %s at 0x%lx: %s", path,
			 (unsigned long)FORKVM_IDENTITY_LINUX_GPA, strerror(errno));
		close(fd);
		return NULL;
	}
	close(fd);
	id = p;
	if (id->magic != FORKVM_IDENTITY_MAGIC || id->version < 1) {
		snprintf(err, errlen,
			 "%s at 0x%lx holds no identity page (magic %016llx, version %u)", path,
			 (unsigned long)FORKVM_IDENTITY_LINUX_GPA, (unsigned long long)id->magic,
			 (unsigned)id->version);
		munmap(p, (size_t)page);
		return NULL;
	}
	return id;
}
