/* common/seccomp.c - libseccomp rule tables compiled to classic BPF once,
 * installed with seccomp(2) as often as needed. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/seccomp.h"

int sc_mode_parse(const char *s, enum sc_mode *out)
{
	if (!strcmp(s, "on"))
		*out = SC_MODE_ON;
	else if (!strcmp(s, "log"))
		*out = SC_MODE_LOG;
	else if (!strcmp(s, "off"))
		*out = SC_MODE_OFF;
	else
		return -EINVAL;
	return 0;
}

const char *sc_mode_name(enum sc_mode m)
{
	return m == SC_MODE_ON ? "on" : m == SC_MODE_LOG ? "log" : "off";
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define SC_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define SC_SANITIZED 1
#endif
#endif

#ifdef SC_SANITIZED
/* ASan/UBSan builds (make SAN=1) only: the sanitizer runtime reports
 * through these, and LeakSanitizer, at exit, stops every thread from a
 * helper task it clones and ptraces. Release builds never allow them. */
static const struct sc_rule sanitizer_rules[] = {
	SC_ALLOW(clone),      SC_ALLOW(ptrace),     SC_ALLOW(wait4),    SC_ALLOW(prctl),
	SC_ALLOW(sigaltstack), SC_ALLOW(readlink),  SC_ALLOW(getdents64), SC_ALLOW(openat),
	SC_ALLOW(close),      SC_ALLOW(read),       SC_ALLOW(write),    SC_ALLOW(mmap),
	SC_ALLOW(munmap),     SC_ALLOW(mprotect),   SC_ALLOW(madvise),  SC_ALLOW(sched_yield),
	SC_ALLOW(getpid),     SC_ALLOW(gettid),     SC_ALLOW(tgkill),   SC_ALLOW(kill),
	SC_ALLOW(rt_sigaction), SC_ALLOW(rt_sigprocmask), SC_ALLOW(newfstatat), SC_ALLOW(fstat),
	SC_ALLOW(exit),       SC_ALLOW(exit_group), SC_ALLOW(futex),    SC_ALLOW(getrlimit),
	SC_ALLOW(prlimit64),  SC_ALLOW(sched_getaffinity), SC_ALLOW(pipe2), SC_ALLOW(nanosleep),
	SC_ALLOW(clock_nanosleep), SC_ALLOW(getppid), SC_ALLOW(lseek),  SC_ALLOW(pread64),
	SC_ALLOW(open),       SC_ALLOW(stat),       SC_ALLOW(lstat),    SC_ALLOW(access),
	SC_ALLOW(dup2),       SC_ALLOW(pipe),       SC_ALLOW(unlink),   SC_ALLOW(getuid),
	SC_ALLOW(getdents),
};
#endif

static int add_rules(scmp_filter_ctx ctx, const struct sc_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct sc_rule *r = &rules[i];
		uint32_t action = r->err ? SCMP_ACT_ERRNO((uint32_t)r->err) : SCMP_ACT_ALLOW;
		int rc = r->nargs ? seccomp_rule_add_array(ctx, action, r->nr, r->nargs, r->arg)
				  : seccomp_rule_add(ctx, action, r->nr, 0);
		/* -EEXIST: an identical rule is already there (tables may overlap). */
		if (rc < 0 && rc != -EEXIST)
			return rc;
	}
	return 0;
}

int sc_prog_build(const struct sc_rule *rules, size_t n, enum sc_mode mode, struct sc_prog *out)
{
	scmp_filter_ctx ctx;
	int rc, fd = -1;

	memset(out, 0, sizeof(*out));
	if (mode == SC_MODE_OFF)
		return 0;
	ctx = seccomp_init(mode == SC_MODE_LOG ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS);
	if (!ctx)
		return -ENOMEM;
	/* no_new_privs is set by sc_prog_install, not by libseccomp. */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)) < 0)
		goto out;
	/* A system call of another architecture (x32, i386) fails the check
	 * of the architecture field and kills, whatever the mode. */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) < 0)
		goto out;
	if ((rc = add_rules(ctx, rules, n)) < 0)
		goto out;
#ifdef SC_SANITIZED
	if ((rc = add_rules(ctx, sanitizer_rules, sizeof(sanitizer_rules) / sizeof(sanitizer_rules[0]))) < 0)
		goto out;
#endif
	/* libseccomp 2.5 exports to a file descriptor only. */
	fd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	if ((rc = seccomp_export_bpf(ctx, fd)) < 0)
		goto out;
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter) ||
	    size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
		rc = -E2BIG;
		goto out;
	}
	out->insns = malloc((size_t)size);
	if (!out->insns) {
		rc = -ENOMEM;
		goto out;
	}
	if (pread(fd, out->insns, (size_t)size, 0) != size) {
		rc = -EIO;
		sc_prog_free(out);
		goto out;
	}
	out->len = (unsigned short)(size / (off_t)sizeof(struct sock_filter));
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
	return rc;
}

void sc_prog_free(struct sc_prog *p)
{
	if (!p)
		return;
	free(p->insns);
	p->insns = NULL;
	p->len = 0;
}

int sc_prog_install(const struct sc_prog *p, bool all_threads)
{
	if (!p || !p->len)
		return 0;
	struct sock_fprog fp = { .len = p->len, .filter = p->insns };
	/* glibc reads /etc/localtime at its first time conversion (the log's
	 * gmtime_r), possibly on a thread that may no longer open files. */
	tzset();
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
			  all_threads ? SECCOMP_FILTER_FLAG_TSYNC : 0U, &fp);
	if (rc < 0)
		return -errno;
	/* TSYNC returns the id of a thread it could not synchronise. */
	return rc > 0 ? -EBUSY : 0;
}
