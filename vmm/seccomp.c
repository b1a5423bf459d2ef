/* vmm/seccomp.c - the VMM's seccomp allowlists: one for the VMM thread
 * (event loop, API, snapshot and restore, store I/O) and its helper
 * threads, and a narrower one each vCPU thread adds before it first enters
 * the guest. The guest reaches the host only through these threads.
 *
 * Found by tracing forkvm and forkd clones through the whole test suite
 * (strace -f, then the filters in log mode with the kernel's audit log);
 * docs/security.md lists what is left out and why. */
#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>

#include "common/seccomp.h"
#include "vmm/gmem.h"
#include "vmm/platform.h"
#include "vmm/vm.h"
#include "vmm/vmm.h"

/* Memory may be mapped and protected, never executable: the VMM loads no
 * code after start-up, and guest memory is data to the host. */
#define NO_EXEC(name) SC_MASKED(name, 2, PROT_EXEC, 0)

/* The VMM thread, and every thread it starts (vCPU threads start with it
 * and add theirs). */
static const struct sc_rule vmm_rules[] = {
	/* files: snapshots, the store, logs, the console */
	SC_ALLOW(read), SC_ALLOW(write), SC_ALLOW(pread64), SC_ALLOW(pwrite64), SC_ALLOW(readv),
	SC_ALLOW(writev), SC_ALLOW(preadv), SC_ALLOW(pwritev), SC_ALLOW(close), SC_ALLOW(openat),
	SC_ALLOW(newfstatat), SC_ALLOW(fstat), SC_ALLOW(statx), SC_ALLOW(lseek), SC_ALLOW(fcntl),
	SC_ALLOW(flock), SC_ALLOW(fsync), SC_ALLOW(fdatasync), SC_ALLOW(syncfs), SC_ALLOW(ftruncate),
	SC_ALLOW(fallocate), SC_ALLOW(copy_file_range), SC_ALLOW(getdents64), SC_ALLOW(mkdirat), SC_ALLOW(mkdir),
	SC_ALLOW(renameat), SC_ALLOW(renameat2), SC_ALLOW(rename), SC_ALLOW(unlinkat), SC_ALLOW(unlink),
	SC_ALLOW(rmdir), SC_ALLOW(chmod), SC_ALLOW(fchmod), SC_ALLOW(fchmodat), SC_ALLOW(utimensat),
	SC_ALLOW(access), SC_ALLOW(faccessat), SC_ALLOW(faccessat2), SC_ALLOW(readlink),
	SC_ALLOW(readlinkat), SC_ALLOW(dup), SC_ALLOW(dup3),
	/* memory: guest RAM (memfd or a snapshot image, mapped private), the
	 * allocator, discarding guest pages */
	NO_EXEC(mmap), NO_EXEC(mprotect), SC_ALLOW(munmap), SC_ALLOW(mremap), SC_ALLOW(madvise),
	SC_ALLOW(brk), SC_ALLOW(memfd_create),
	/* the event loop: epoll, the loop's eventfds, signalfd, timers */
	SC_ALLOW(epoll_create1), SC_ALLOW(epoll_ctl), SC_ALLOW(epoll_wait), SC_ALLOW(epoll_pwait),
	SC_ALLOW(eventfd2), SC_ALLOW(signalfd4), SC_ALLOW(timerfd_create), SC_ALLOW(timerfd_settime),
	SC_ALLOW(timerfd_gettime), SC_ALLOW(poll), SC_ALLOW(ppoll),
	/* Unix sockets only: the API, the agent and console channels, forkd's
	 * control socket */
	SC_EQ(socket, 0, AF_UNIX), SC_EQ(socketpair, 0, AF_UNIX), SC_ALLOW(bind), SC_ALLOW(listen),
	SC_ALLOW(accept4), SC_ALLOW(connect), SC_ALLOW(sendto), SC_ALLOW(recvfrom), SC_ALLOW(sendmsg),
	SC_ALLOW(recvmsg), SC_ALLOW(shutdown), SC_ALLOW(getsockopt), SC_ALLOW(setsockopt),
	SC_ALLOW(getsockname), SC_ALLOW(getpeername),
	/* the store's reads and writes (liburing) */
	SC_ALLOW(io_uring_setup), SC_ALLOW(io_uring_enter), SC_ALLOW(io_uring_register),
	/* the terminal checks of stdio (the platform's own come from it) */
	SC_EQ(ioctl, 1, TCGETS), SC_EQ(ioctl, 1, TIOCGWINSZ),
	/* which pages of guest RAM a restored VM has written (snapshots) */
	SC_EQ(ioctl, 1, PAGEMAP_SCAN),
	/* threads: vCPU and store worker threads only (clone with
	 * CLONE_THREAD); clone3's arguments are in memory, where a filter
	 * cannot look, so it fails with ENOSYS and glibc falls back to clone */
	SC_MASKED(clone, 0, CLONE_THREAD, CLONE_THREAD), SC_ERRNO(clone3, ENOSYS), SC_ALLOW(futex),
	SC_ALLOW(set_robust_list), SC_ALLOW(rseq), SC_ALLOW(exit), SC_ALLOW(exit_group),
	SC_ALLOW(gettid), SC_ALLOW(getpid), SC_ALLOW(sched_yield), SC_ALLOW(sched_getaffinity),
	SC_ALLOW(sched_setscheduler), SC_ALLOW(sched_getscheduler), SC_ALLOW(sched_getparam),
	/* signals: the vCPU kick (tgkill), the loop's signalfd mask */
	SC_ALLOW(rt_sigaction), SC_ALLOW(rt_sigprocmask), SC_ALLOW(rt_sigreturn), SC_ALLOW(tgkill),
	SC_ALLOW(sigaltstack), SC_ALLOW(restart_syscall),
	/* time, randomness (clone identities, guest getrandom) */
	SC_ALLOW(clock_gettime), SC_ALLOW(clock_nanosleep), SC_ALLOW(nanosleep),
	SC_ALLOW(gettimeofday), SC_ALLOW(getrandom),
	/* limits and ids read by the store and the log (never set) */
	SC_EQ(prlimit64, 2, 0), SC_ALLOW(getrlimit), SC_ALLOW(getuid), SC_ALLOW(geteuid),
	SC_ALLOW(getgid), SC_ALLOW(getegid), SC_ALLOW(getppid), SC_ALLOW(uname),
	/* a new vCPU thread adds its own filter: filters only ever narrow */
	SC_EQ(prctl, 0, PR_SET_NO_NEW_PRIVS), SC_EQ(seccomp, 0, SECCOMP_SET_MODE_FILTER),
};

/* Added by each vCPU thread before it first enters the guest: what serving
 * the guest's system calls needs, nothing that opens, creates or executes
 * (plus what the platform needs to run its vCPU). */
static const struct sc_rule vcpu_rules[] = {
	/* the guest's channels (agent: a Unix socket; console: a file or a
	 * socket) and the notification eventfds to the VMM thread */
	SC_ALLOW(read), SC_ALLOW(write), SC_ALLOW(sendto), SC_ALLOW(recvfrom), SC_ALLOW(poll),
	SC_ALLOW(ppoll),
	/* a guest read that blocks polls a duplicate of the channel's socket
	 * (vcpu_poll) and closes it */
	SC_EQ(fcntl, 1, F_DUPFD_CLOEXEC), SC_ALLOW(close),
	/* a Linux guest's disks: virtio-blk requests are served on the vCPU
	 * that notified (vmm/virtio/blk.c) */
	SC_ALLOW(pread64), SC_ALLOW(pwrite64), SC_ALLOW(fdatasync),
	/* guest munmap/madvise discard pages of guest RAM; the allocator */
	NO_EXEC(mmap), NO_EXEC(mprotect), SC_ALLOW(munmap), SC_ALLOW(madvise), SC_ALLOW(fallocate),
	SC_ALLOW(brk),
	/* guest threads wait and wake on the VM's lock; kicks between vCPUs */
	SC_ALLOW(futex), SC_ALLOW(tgkill), SC_ALLOW(getpid), SC_ALLOW(gettid), SC_ALLOW(sched_yield),
	SC_ALLOW(rt_sigprocmask), SC_ALLOW(rt_sigreturn), SC_ALLOW(restart_syscall),
	/* guest clock, sleeps and getrandom */
	SC_ALLOW(clock_gettime), SC_ALLOW(clock_nanosleep), SC_ALLOW(nanosleep),
	SC_ALLOW(gettimeofday), SC_ALLOW(getrandom),
	/* the thread's own end; a fatal guest fault ends the process */
	SC_ALLOW(exit), SC_ALLOW(exit_group),
};

struct vmm_seccomp {
	enum sc_mode mode;
	struct sc_prog vmm, vcpu;
};

/* Compiles base + the platform's rules + extra. */
static int build(const struct sc_rule *base, size_t nb, const struct sc_rule *plat, size_t np,
		 const struct sc_rule *extra, size_t ne, enum sc_mode mode, struct sc_prog *out)
{
	struct sc_rule *all = calloc(nb + np + ne + 1, sizeof(*all));
	int rc;

	if (!all)
		return -ENOMEM;
	memcpy(all, base, nb * sizeof(*base));
	if (np)
		memcpy(all + nb, plat, np * sizeof(*plat));
	if (ne)
		memcpy(all + nb + np, extra, ne * sizeof(*extra));
	rc = sc_prog_build(all, nb + np + ne, mode, out);
	free(all);
	return rc;
}

#define NR(a) (sizeof(a) / sizeof((a)[0]))

static const struct platform *platform_for(enum vm_platform p)
{
	return p == VM_PLATFORM_PROCESS ? &platform_process : &platform_kvm;
}

int vmm_seccomp_new(enum sc_mode mode, enum vm_platform p, struct vmm_seccomp **out)
{
	const struct platform *pl = platform_for(p);
	struct vmm_seccomp *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->mode = mode;
	if ((rc = build(vmm_rules, NR(vmm_rules), pl->sc_vmm, pl->nr_sc_vmm, NULL, 0, mode,
			&s->vmm)) < 0 ||
	    (rc = build(vcpu_rules, NR(vcpu_rules), pl->sc_vcpu, pl->nr_sc_vcpu, NULL, 0, mode,
			&s->vcpu)) < 0) {
		vmm_seccomp_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void vmm_seccomp_free(struct vmm_seccomp *s)
{
	if (!s)
		return;
	sc_prog_free(&s->vmm);
	sc_prog_free(&s->vcpu);
	free(s);
}

enum sc_mode vmm_seccomp_mode(const struct vmm_seccomp *s)
{
	return s ? s->mode : SC_MODE_OFF;
}

int vmm_seccomp_build_host(enum sc_mode mode, enum vm_platform p, const struct sc_rule *extra,
			   size_t n, struct sc_prog *out)
{
	const struct platform *pl = platform_for(p);
	return build(vmm_rules, NR(vmm_rules), pl->sc_vmm, pl->nr_sc_vmm, extra, n, mode, out);
}

int vmm_seccomp_apply(const struct vmm_seccomp *s)
{
	return s ? sc_prog_install(&s->vmm, true) : 0;
}

int vmm_seccomp_apply_vcpu(const struct vmm_seccomp *s)
{
	return s ? sc_prog_install(&s->vcpu, false) : 0;
}
