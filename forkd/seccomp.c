/* forkd/seccomp.c - forkd's seccomp allowlist.
 *
 * forkd hosts VMMs: its clone processes are forked from it without exec
 * and inherit its filter, then jail themselves and add the VMM's filter
 * (and each vCPU thread the vCPU filter) before the guest runs. Template
 * builders exec forkvm, which adds its own. So forkd's filter is the VMM's
 * plus what managing processes and jails needs; the filters that face the
 * guest are the VMM's and the vCPU's (vmm/seccomp.c). */
#include <errno.h>
#include <sched.h>
#include <sys/prctl.h>

#include "common/seccomp.h"
#include "forkd/forkd.h"
#include "vmm/vmm.h"

static const struct sc_rule forkd_rules[] = {
	/* clone processes and template builders (fork: clone without
	 * CLONE_THREAD), reaping them, killing them */
	SC_ALLOW(clone), SC_ALLOW(wait4), SC_ALLOW(waitid), SC_ALLOW(kill),
	/* builders exec forkvm; until forkvm installs its own filter, the
	 * dynamic loader maps libraries executable */
	SC_ALLOW(execve), SC_ALLOW(mmap), SC_ALLOW(mprotect), SC_ALLOW(arch_prctl),
	SC_ALLOW(set_tid_address), SC_ALLOW(prlimit64), SC_ALLOW(statfs), SC_ALLOW(fstatfs),
	/* a new clone process: its descriptors (close_range, dup2), its death
	 * signal and name (prctl), its scheduling class (pool shells restore
	 * at SCHED_IDLE; dying clones are moved there) */
	SC_ALLOW(close_range), SC_ALLOW(dup2), SC_ALLOW(pipe2), SC_ALLOW(prctl), SC_ALLOW(setpriority),
	SC_ALLOW(sched_setscheduler), SC_ALLOW(umask), SC_ALLOW(chdir), SC_ALLOW(sysinfo),
	/* the clone jail: namespaces, an empty root, dropped privileges,
	 * cgroups (forkd/jail.c) */
	SC_ALLOW(unshare), SC_ALLOW(mount), SC_ALLOW(umount2), SC_ALLOW(pivot_root), SC_ALLOW(chroot),
	SC_ALLOW(setuid), SC_ALLOW(setgid), SC_ALLOW(setgroups), SC_ALLOW(setresuid),
	SC_ALLOW(setresgid), SC_ALLOW(capget), SC_ALLOW(capset), SC_ALLOW(sethostname),
	SC_ALLOW(setdomainname), SC_ALLOW(seccomp), SC_ALLOW(setns), SC_ALLOW(mknod),
	SC_ALLOW(mknodat), SC_ALLOW(chown), SC_ALLOW(fchownat), SC_ALLOW(setrlimit),
};

int forkd_seccomp_apply(enum sc_mode mode, enum vm_platform platform)
{
	struct sc_prog p;
	int rc = vmm_seccomp_build_host(mode, platform, forkd_rules,
					sizeof(forkd_rules) / sizeof(forkd_rules[0]), &p);

	if (rc < 0)
		return rc;
	rc = sc_prog_install(&p, true);
	sc_prog_free(&p);
	return rc;
}
