/* vmm/fguest/sys_io.c - file descriptors 0-2 and the calls on them:
 * read/write/readv/writev, close/dup/fcntl/ioctl/fstat/lseek. fd 0/1 are
 * the agent channel (or EOF and the console without one), fd 2 the console. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "vmm/fguest/fguest.h"
#include "vmm/vm.h"

#define IOV_MAX_GUEST 1024

static struct fg_fd *fd_get(struct fguest *fg, uint64_t fd)
{
	if (fd >= FG_MAX_FDS || fg->fds[fd].kind == FG_FD_CLOSED)
		return NULL;
	return &fg->fds[fd];
}

static struct chan *fd_chan(struct vm *vm, const struct fg_fd *f, bool for_write)
{
	switch (f->kind) {
	case FG_FD_AGENT:
		return &vm->agent;
	case FG_FD_CONSOLE:
		return for_write ? &vm->console : NULL;
	default:
		return NULL;
	}
}

/* ------------------------------------------------------------ write */

static bool pred_writable(void *arg)
{
	return chan_writable_locked(arg);
}

/* Writes one guest buffer; blocks only when nothing at all could be taken. */
static long write_buf(struct fg_call *c, struct fg_fd *f, uint64_t buf, uint64_t len)
{
	uint8_t bounce[FG_BOUNCE];
	struct chan *ch;

	if (len == 0)
		return 0;
	if (!fg_user_ok(c->fg, buf, len))
		return -EFAULT;
	ch = fd_chan(c->vm, f, true);
	if (!ch)
		return (long)len; /* FG_FD_NULL */
	/* At most FG_BOUNCE bytes per call: a short write, as a pipe gives. */
	len = MIN(len, (uint64_t)sizeof(bounce));
	if (fg_copy_from_user(c->fg, bounce, buf, len) < 0)
		return -EFAULT;
	for (;;) {
		size_t n = chan_write_locked(ch, bounce, len);
		if (n)
			return (long)n;
		if (f->nonblock)
			return -EAGAIN;
		int rc = vcpu_wait(c->v, pred_writable, ch, 0);
		if (rc < 0)
			return rc == -ESHUTDOWN ? -EINTR : rc;
	}
}

static long sys_write(struct fg_call *c)
{
	struct fg_fd *f = fd_get(c->fg, c->a[0]);
	if (!f)
		return -EBADF;
	if ((int64_t)c->a[2] < 0)
		return -EINVAL;
	return write_buf(c, f, c->a[1], c->a[2]);
}

static int read_iov(struct fg_call *c, uint64_t iov, uint64_t cnt, struct iovec *out)
{
	if (cnt > IOV_MAX_GUEST)
		return -EINVAL;
	if (cnt == 0)
		return 0;
	if (fg_copy_from_user(c->fg, out, iov, cnt * sizeof(struct iovec)) < 0)
		return -EFAULT;
	uint64_t total = 0;
	for (uint64_t i = 0; i < cnt; i++) {
		if (add_overflows(total, out[i].iov_len, &total) || total > INT64_MAX)
			return -EINVAL;
	}
	return 0;
}

static long sys_writev(struct fg_call *c)
{
	struct fg_fd *f = fd_get(c->fg, c->a[0]);
	struct iovec iov[IOV_MAX_GUEST];
	long total = 0;
	int rc;

	if (!f)
		return -EBADF;
	rc = read_iov(c, c->a[1], c->a[2], iov);
	if (rc < 0)
		return rc;
	for (uint64_t i = 0; i < c->a[2]; i++) {
		if (!iov[i].iov_len)
			continue;
		/* Only the first buffer may block; later ones take what fits. */
		bool nb = f->nonblock;
		if (total)
			f->nonblock = true;
		long n = write_buf(c, f, (uint64_t)iov[i].iov_base, iov[i].iov_len);
		f->nonblock = nb;
		if (n < 0)
			return total ? total : n;
		total += n;
		if ((size_t)n < iov[i].iov_len)
			break;
	}
	return total;
}

/* ------------------------------------------------------------ read */

static bool pred_input(void *arg)
{
	return chan_input_ready_locked(arg);
}

/* Reads into dst (a validated guest buffer); blocks when fd is blocking and
 * nothing is there: polling the client socket directly, or waiting for a
 * client to connect. */
/* Reads at most FG_BOUNCE bytes of the channel into guest memory at dst. */
static long read_chan(struct fg_call *c, struct fg_fd *f, struct chan *ch, uint64_t dst, size_t len,
		      bool may_block)
{
	uint8_t bounce[FG_BOUNCE];

	len = MIN(len, sizeof(bounce));
	for (;;) {
		long n = chan_read_locked(ch, bounce, len);
		if (n > 0 && fg_copy_to_user(c->fg, dst, bounce, (uint64_t)n) < 0)
			return -EFAULT;
		if (n != -EAGAIN)
			return n;
		if (f->nonblock || !may_block)
			return -EAGAIN;
		int fd = chan_input_fd_locked(ch);
		int rc = fd >= 0 ? vcpu_poll(c->v, fd) : vcpu_wait(c->v, pred_input, ch, 0);
		if (rc < 0)
			return -EINTR;
	}
}

static long sys_read(struct fg_call *c)
{
	struct fg_fd *f = fd_get(c->fg, c->a[0]);
	uint64_t len = c->a[2];
	struct chan *ch;

	if (!f)
		return -EBADF;
	if ((int64_t)len < 0)
		return -EINVAL;
	if (len == 0)
		return 0;
	if (!fg_user_ok(c->fg, c->a[1], len))
		return -EFAULT;
	ch = fd_chan(c->vm, f, false);
	if (!ch || len == 0)
		return 0;
	return read_chan(c, f, ch, c->a[1], len, true);
}

static long sys_readv(struct fg_call *c)
{
	struct fg_fd *f = fd_get(c->fg, c->a[0]);
	struct iovec iov[IOV_MAX_GUEST];
	struct chan *ch;
	long total = 0, rc;

	if (!f)
		return -EBADF;
	rc = read_iov(c, c->a[1], c->a[2], iov);
	if (rc < 0)
		return rc;
	for (uint64_t i = 0; i < c->a[2]; i++)
		if (iov[i].iov_len && !fg_user_ok(c->fg, (uint64_t)iov[i].iov_base, iov[i].iov_len))
			return -EFAULT;
	ch = fd_chan(c->vm, f, false);
	if (!ch)
		return 0;
	/* Only the first non-empty buffer may wait; the rest take what is there. */
	for (uint64_t i = 0; i < c->a[2]; i++) {
		if (!iov[i].iov_len)
			continue;
		rc = read_chan(c, f, ch, (uint64_t)iov[i].iov_base, iov[i].iov_len, total == 0);
		if (rc <= 0)
			return total ? total : rc;
		total += rc;
		if ((size_t)rc < iov[i].iov_len)
			break;
	}
	return total;
}

/* ------------------------------------------------------------ fd table */

static long fd_dup(struct fguest *fg, uint64_t old, uint64_t newfd, bool cloexec)
{
	struct fg_fd *f = fd_get(fg, old);
	if (!f)
		return -EBADF;
	if (newfd >= FG_MAX_FDS)
		return -EBADF;
	fg->fds[newfd] = *f;
	fg->fds[newfd].cloexec = cloexec;
	return (long)newfd;
}

static long fd_lowest_free(struct fguest *fg, uint64_t from)
{
	for (uint64_t i = from; i < FG_MAX_FDS; i++)
		if (fg->fds[i].kind == FG_FD_CLOSED)
			return (long)i;
	return -EMFILE;
}

static long sys_fcntl(struct fg_call *c)
{
	struct fg_fd *f = fd_get(c->fg, c->a[0]);
	long nfd;

	if (!f)
		return -EBADF;
	switch (c->a[1]) {
	case F_GETFD:
		return f->cloexec ? FD_CLOEXEC : 0;
	case F_SETFD:
		f->cloexec = c->a[2] & FD_CLOEXEC;
		return 0;
	case F_GETFL:
		return O_RDWR | (f->nonblock ? O_NONBLOCK : 0);
	case F_SETFL:
		f->nonblock = c->a[2] & O_NONBLOCK;
		return 0;
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		nfd = fd_lowest_free(c->fg, c->a[2]);
		if (nfd < 0)
			return c->a[2] >= FG_MAX_FDS ? -EINVAL : nfd;
		return fd_dup(c->fg, c->a[0], (uint64_t)nfd, c->a[1] == F_DUPFD_CLOEXEC);
	}
	return -EINVAL;
}

static long sys_fstat(struct fg_call *c)
{
	struct fg_fd *f = fd_get(c->fg, c->a[0]);
	struct stat st;

	if (!f)
		return -EBADF;
	memset(&st, 0, sizeof(st));
	st.st_mode = (f->kind == FG_FD_AGENT ? S_IFSOCK : S_IFCHR) | 0600;
	st.st_nlink = 1;
	st.st_blksize = 4096;
	st.st_ino = c->a[0] + 1;
	return fg_copy_to_user(c->fg, c->a[1], &st, sizeof(st));
}

long fg_sys_io(struct fg_call *c, bool *handled)
{
	struct fguest *fg = c->fg;
	long nfd;

	*handled = true;
	switch (c->nr) {
	case SYS_read:
		return sys_read(c);
	case SYS_write:
		return sys_write(c);
	case SYS_readv:
		return sys_readv(c);
	case SYS_writev:
		return sys_writev(c);
	case SYS_close:
		if (!fd_get(fg, c->a[0]))
			return -EBADF;
		fg->fds[c->a[0]].kind = FG_FD_CLOSED;
		return 0;
	case SYS_dup:
		nfd = fd_lowest_free(fg, 0);
		return nfd < 0 ? nfd : fd_dup(fg, c->a[0], (uint64_t)nfd, false);
	case SYS_dup2:
		if (!fd_get(fg, c->a[0]))
			return -EBADF;
		return c->a[0] == c->a[1] ? (long)c->a[1] : fd_dup(fg, c->a[0], c->a[1], false);
	case SYS_dup3:
		if (c->a[0] == c->a[1] || (c->a[2] & ~(uint64_t)O_CLOEXEC))
			return -EINVAL;
		return fd_dup(fg, c->a[0], c->a[1], c->a[2] & O_CLOEXEC);
	case SYS_fcntl:
		return sys_fcntl(c);
	case SYS_ioctl:
		return fd_get(fg, c->a[0]) ? -ENOTTY : -EBADF;
	case SYS_fstat:
		return sys_fstat(c);
	case SYS_lseek:
		return fd_get(fg, c->a[0]) ? -ESPIPE : -EBADF;
	}
	*handled = false;
	return -ENOSYS;
}
