/* vmm/fguest/sys_misc.c - identity and machine information: getpid and
 * friends, uname, getrandom, sysinfo. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>

#include "vmm/fguest/fguest.h"
#include "vmm/vm.h"

#define GETRANDOM_MAX 33554431ULL /* what Linux returns at most per call */

static long sys_uname(struct fg_call *c)
{
	struct utsname u;
	const char *host = c->vm->cfg.hostname ? c->vm->cfg.hostname : "forkvm";

	memset(&u, 0, sizeof(u));
	strcpy(u.sysname, "Linux");
	snprintf(u.nodename, sizeof(u.nodename), "%s", host);
	strcpy(u.release, "6.1.0-forkvm");
	strcpy(u.version, "#1 SMP forkvm function guest");
	strcpy(u.machine, "x86_64");
	strcpy(u.domainname, "(none)");
	return fg_copy_to_user(c->fg, c->a[0], &u, sizeof(u));
}

static long sys_getrandom(struct fg_call *c)
{
	uint64_t len = MIN(c->a[1], GETRANDOM_MAX);
	uint8_t buf[4096];

	if (c->a[2] & ~(uint64_t)(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE))
		return -EINVAL;
	if (len == 0)
		return 0;
	if (!fg_user_ok(c->fg, c->a[0], len))
		return -EFAULT;
	for (uint64_t done = 0; done < len;) {
		size_t want = (size_t)MIN(len - done, sizeof(buf));
		ssize_t n = getrandom(buf, want, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return done ? (long)done : -errno;
		}
		if (fg_copy_to_user(c->fg, c->a[0] + done, buf, (uint64_t)n) < 0)
			return done ? (long)done : -EFAULT;
		done += (uint64_t)n;
	}
	return (long)len;
}

static long sys_sysinfo(struct fg_call *c)
{
	struct sysinfo si;
	uint64_t used = c->fg->mm.mapped + FG_SYS_END;

	memset(&si, 0, sizeof(si));
	si.uptime = (long)(vm_guest_now(c->vm) / 1000000000ULL);
	si.totalram = c->vm->mem.size;
	si.freeram = used < c->vm->mem.size ? c->vm->mem.size - used : 0;
	si.procs = (unsigned short)c->fg->nr_live;
	si.mem_unit = 1;
	return fg_copy_to_user(c->fg, c->a[0], &si, sizeof(si));
}

long fg_sys_misc(struct fg_call *c, bool *handled)
{
	*handled = true;
	switch (c->nr) {
	case SYS_getpid:
		return 1;
	case SYS_getppid:
		return 0;
	case SYS_getuid:
	case SYS_geteuid:
	case SYS_getgid:
	case SYS_getegid:
		return 0;
	case SYS_uname:
		return sys_uname(c);
	case SYS_getrandom:
		return sys_getrandom(c);
	case SYS_sysinfo:
		return sys_sysinfo(c);
	}
	*handled = false;
	return -ENOSYS;
}
