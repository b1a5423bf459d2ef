/* forkd/jail.c - the clone jail: every clone process starts in its own
 * mount, PID and UTS namespaces (clone flags), joins an empty network and
 * IPC namespace that forkd made once (setns: a network namespace costs
 * about 10 ms to create on this kind of host, too much for a fork),
 * pivots into an empty read-only tmpfs root that holds only /dev/kvm, its
 * own run directory, the store (clone snapshots) and a /proc of its PID
 * namespace, drops every capability (and, when configured, switches to an
 * unprivileged uid/gid), and joins a cgroup of its own with a memory limit,
 * a task limit and a CPU weight: cgroup v2 when its controllers are
 * available, else the v1 hierarchies of a hybrid host.
 *
 * forkd side (forkd_jail_init/fini, cgroup create/remove) runs on forkd's
 * thread; jail_enter runs in the new clone process before anything of the
 * guest is built. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "forkd/internal.h"

/* ------------------------------------------------------------ cgroups */

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t n = strlen(s);
	ssize_t w = write(fd, s, n);
	int rc = w == (ssize_t)n ? 0 : w < 0 ? -errno : -EIO;
	close(fd);
	return rc;
}

/* The mount point of a cgroup hierarchy: cgroup2 (v1opt NULL) or the v1
 * hierarchy whose super options include v1opt. */
static int cg_mount(const char *v1opt, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (rc < 0 && fgets(line, sizeof(line), f)) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SRC SUPEROPTS */
		char root[1024], mnt[1024], fstype[64], superopts[1024];
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %1023s %1023s", root, mnt) != 2 ||
		    sscanf(dash + 3, "%63s %*s %1023s", fstype, superopts) != 2)
			continue;
		if (strcmp(root, "/"))
			continue;
		if (!v1opt ? !strcmp(fstype, "cgroup2") : !strcmp(fstype, "cgroup")) {
			if (v1opt) {
				bool found = false;
				char *save = NULL;
				for (char *t = strtok_r(superopts, ",", &save); t; t = strtok_r(NULL, ",", &save))
					found |= !strcmp(t, v1opt);
				if (!found)
					continue;
			}
			rc = (size_t)snprintf(out, len, "%s", mnt) < len ? 0 : -ENAMETOOLONG;
		}
	}
	fclose(f);
	return rc;
}

/* forkd's own cgroup path in hierarchy v1opt (NULL: the v2 one, "0::"). */
static int cg_self(const char *v1opt, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	char line[4096];
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (rc < 0 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c1 = *c2 = '\0';
		bool match = false;
		if (!v1opt) {
			match = !strcmp(line, "0") && c1[1] == '\0';
		} else {
			char *save = NULL;
			for (char *t = strtok_r(c1 + 1, ",", &save); t; t = strtok_r(NULL, ",", &save))
				match |= !strcmp(t, v1opt);
		}
		if (match) {
			snprintf(out, len, "%s", strcmp(c2 + 1, "/") ? c2 + 1 : "");
			rc = 0;
		}
	}
	fclose(f);
	return rc;
}

static bool has_word(const char *list, const char *w)
{
	size_t n = strlen(w);
	for (const char *p = list; (p = strstr(p, w)); p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

static void rmdir_subdir(const char *dir, const char *name, unsigned char type, void *arg)
{
	char p[4400];
	(void)arg;
	if (type != DT_DIR || name[0] == '.')
		return;
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	rmdir(p);
}

/* Removes the (empty) child groups of base. */
static void cg_rmdir_children(const char *base)
{
	forkd_dir_each(base, rmdir_subdir, NULL);
}

static void remove_if_stale(const char *parent, const char *name, unsigned char type, void *arg)
{
	char p[4400], sub[4500], tail;
	int pid;

	(void)arg;
	if (type != DT_DIR || sscanf(name, "forkd-%d%c", &pid, &tail) != 1 || pid <= 0)
		return;
	if (kill(pid, 0) == 0 || errno != ESRCH)
		return;
	snprintf(p, sizeof(p), "%s/%s", parent, name);
	snprintf(sub, sizeof(sub), "%s/clones", p);
	cg_rmdir_children(sub);
	rmdir(sub);
	snprintf(sub, sizeof(sub), "%s/daemon", p);
	rmdir(sub);
	cg_rmdir_children(p);
	if (rmdir(p) == 0)
		log_info("jail: removed the cgroup %s of a forkd that is gone", p);
}

/* Removes the groups a forkd killed with SIGKILL left in parent
 * (forkd-PID whose PID is gone; its clones died with it). */
static void cg_remove_stale(const char *parent)
{
	forkd_dir_each(parent, remove_if_stale, NULL);
}

/* cgroup v2: forkd moves itself to TOP/daemon (no process may sit in a
 * cgroup whose children have controllers) and makes clones under
 * TOP/clones. */
static int cg_init_v2(struct jail *j)
{
	char mnt[512], self[1024], buf[512], path[4400];
	int rc;

	if ((rc = cg_mount(NULL, mnt, sizeof(mnt))) < 0 || (rc = cg_self(NULL, self, sizeof(self))) < 0)
		return rc;
	snprintf(path, sizeof(path), "%s%s/cgroup.controllers", mnt, self);
	if ((rc = forkd_read_small(path, buf, sizeof(buf))) < 0)
		return rc;
	if (!has_word(buf, "memory") || !has_word(buf, "pids") || !has_word(buf, "cpu"))
		return -EOPNOTSUPP;
	snprintf(path, sizeof(path), "%s%s", mnt, self);
	cg_remove_stale(path);
	snprintf(j->cg_top[0], sizeof(j->cg_top[0]), "%s%s/forkd-%d", mnt, self, (int)getpid());
	if (mkdir(j->cg_top[0], 0755) < 0 && errno != EEXIST)
		return -errno;
	snprintf(path, sizeof(path), "%s/daemon", j->cg_top[0]);
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return -errno;
	snprintf(path, sizeof(path), "%s/daemon/cgroup.procs", j->cg_top[0]);
	if ((rc = write_str(path, "0")) < 0)
		return rc;
	/* controllers for TOP's children, then for the clones' */
	snprintf(path, sizeof(path), "%s%s/cgroup.subtree_control", mnt, self);
	if ((rc = write_str(path, "+memory +pids +cpu")) < 0)
		return rc;
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", j->cg_top[0]);
	if ((rc = write_str(path, "+memory +pids +cpu")) < 0)
		return rc;
	snprintf(j->cg_base[0], sizeof(j->cg_base[0]), "%.2100s/clones", j->cg_top[0]);
	if (mkdir(j->cg_base[0], 0755) < 0 && errno != EEXIST)
		return -errno;
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", j->cg_base[0]);
	if ((rc = write_str(path, "+memory +pids +cpu")) < 0)
		return rc;
	j->cg_n = 1;
	j->cg = JAIL_CG_V2;
	return 0;
}

/* forkd back where it came from, then its v2 subtree goes. */
static void cg_v2_undo(struct jail *j)
{
	char path[4400], up[2200];

	if (!j->cg_top[0][0])
		return;
	snprintf(path, sizeof(path), "%.2100s/clones", j->cg_top[0]);
	rmdir(path);
	snprintf(up, sizeof(up), "%s", j->cg_top[0]);
	char *slash = strrchr(up, '/');
	if (slash) {
		*slash = '\0';
		snprintf(path, sizeof(path), "%s/cgroup.procs", up);
		if (write_str(path, "0") == 0) {
			snprintf(path, sizeof(path), "%s/daemon", j->cg_top[0]);
			rmdir(path);
			rmdir(j->cg_top[0]);
		}
	}
	j->cg_top[0][0] = '\0';
}

/* cgroup v1 (hybrid hosts): one group per controller, under forkd's own
 * group in each hierarchy. */
static const char *const v1_ctrl[3] = { "memory", "pids", "cpu" };

static int cg_init_v1(struct jail *j)
{
	char mnt[512], self[1024];
	int rc;

	for (int i = 0; i < 3; i++) {
		if ((rc = cg_mount(v1_ctrl[i], mnt, sizeof(mnt))) < 0 ||
		    (rc = cg_self(v1_ctrl[i], self, sizeof(self))) < 0)
			return rc;
		char parent[1600];
		snprintf(parent, sizeof(parent), "%s%s", mnt, self);
		cg_remove_stale(parent);
		snprintf(j->cg_base[i], sizeof(j->cg_base[i]), "%s%s/forkd-%d", mnt, self, (int)getpid());
		if (mkdir(j->cg_base[i], 0755) < 0 && errno != EEXIST)
			return -errno;
		j->cg_n = i + 1;
	}
	j->cg = JAIL_CG_V1;
	return 0;
}


int forkd_jail_cgroup_create(struct forkd *d, const char *id, uint64_t mem_max)
{
	struct jail *j = &d->jail;
	char dir[4400], path[4500], v[64];
	int rc = 0;

	if (!j->on || j->cg == JAIL_CG_NONE)
		return 0;
	for (int i = 0; i < j->cg_n && rc == 0; i++) {
		snprintf(dir, sizeof(dir), "%s/%s", j->cg_base[i], id);
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			rc = -errno;
			break;
		}
		const char *ctrl = j->cg == JAIL_CG_V2 ? NULL : v1_ctrl[i];
		if (!ctrl || !strcmp(ctrl, "memory")) {
			snprintf(path, sizeof(path), "%s/%s", dir,
				 ctrl ? "memory.limit_in_bytes" : "memory.max");
			snprintf(v, sizeof(v), "%" PRIu64, mem_max);
			rc = write_str(path, v);
		}
		if (rc == 0 && (!ctrl || !strcmp(ctrl, "pids"))) {
			snprintf(path, sizeof(path), "%s/pids.max", dir);
			snprintf(v, sizeof(v), "%u", d->cfg.jail.pids_max);
			rc = write_str(path, v);
		}
		if (rc == 0 && (!ctrl || !strcmp(ctrl, "cpu"))) {
			/* weight 100 (v2's default) is 1024 shares (v1's default) */
			snprintf(path, sizeof(path), "%s/%s", dir, ctrl ? "cpu.shares" : "cpu.weight");
			snprintf(v, sizeof(v), "%u",
				 ctrl ? d->cfg.jail.cpu_weight * 1024 / 100 : d->cfg.jail.cpu_weight);
			rc = write_str(path, v);
		}
	}
	if (rc < 0)
		forkd_jail_cgroup_remove(d, id);
	return rc;
}

void forkd_jail_cgroup_remove(struct forkd *d, const char *id)
{
	struct jail *j = &d->jail;
	char dir[4400];

	if (!j->on || j->cg == JAIL_CG_NONE)
		return;
	for (int i = 0; i < j->cg_n; i++) {
		snprintf(dir, sizeof(dir), "%s/%s", j->cg_base[i], id);
		if (rmdir(dir) < 0 && errno != ENOENT)
			log_debug("cannot remove cgroup %s: %s (removed at exit)", dir, strerror(errno));
	}
}

/* ------------------------------------------------------------ set-up */

/* A process in fresh network and IPC namespaces, to hold them for the
 * clones: forkd keeps their descriptors, the process exits. */
static int shared_namespaces(struct jail *j)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(pfd[0]);
		close(pfd[1]);
		return -e;
	}
	if (pid == 0) {
		char c = unshare(CLONE_NEWNET | CLONE_NEWIPC) == 0 ? 'y' : 'n';
		close(pfd[0]);
		if (write(pfd[1], &c, 1) != 1)
			_exit(1);
		/* until forkd has opened the namespaces */
		pause();
		_exit(0);
	}
	close(pfd[1]);
	char c = 'n', path[64];
	int rc = read(pfd[0], &c, 1) == 1 && c == 'y' ? 0 : -EPERM;
	close(pfd[0]);
	if (rc == 0) {
		snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
		j->netns = open(path, O_RDONLY | O_CLOEXEC);
		snprintf(path, sizeof(path), "/proc/%d/ns/ipc", (int)pid);
		j->ipcns = open(path, O_RDONLY | O_CLOEXEC);
		if (j->netns < 0 || j->ipcns < 0)
			rc = -errno;
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return rc;
}

int forkd_jail_init(struct forkd *d, char *err, size_t errlen)
{
	struct jail *j = &d->jail;
	struct stat st;
	int rc;

	memset(j, 0, sizeof(*j));
	j->netns = j->ipcns = -1;
	j->on = d->cfg.jail.on;
	if (!j->on)
		return 0;
	/* The device the platform needs (/dev/kvm), recreated in each jail. */
	j->dev = vm_platform_jail_device(d->cfg.platform);
	if (j->dev && (stat(j->dev, &st) < 0 || !S_ISCHR(st.st_mode))) {
		snprintf(err, errlen, "jail: %s is not a character device: %s", j->dev,
			 strerror(errno ? errno : ENODEV));
		return -ENODEV;
	}
	if (j->dev)
		j->dev_rdev = st.st_rdev;
	if ((rc = shared_namespaces(j)) < 0) {
		snprintf(err, errlen,
			 "jail: cannot create the clones' network and IPC namespaces: %s (forkd needs "
			 "CAP_SYS_ADMIN for jails; --jail=off runs clones unjailed)",
			 strerror(-rc));
		return rc;
	}
	snprintf(j->root, sizeof(j->root), "%.4000s/jail", d->run_dir);
	if (mkdir(j->root, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "jail: cannot create %s: %s", j->root, strerror(errno));
		return rc;
	}
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	if (!f || fscanf(f, "%d", &j->cap_last) != 1)
		j->cap_last = 40;
	if (f)
		fclose(f);
	if ((rc = cg_init_v2(j)) == 0) {
		log_info("jail: clones get cgroup v2 groups under %s", j->cg_base[0]);
		return 0;
	}
	/* v2 unusable (no controllers here, or forkd's cgroup cannot delegate):
	 * undo what it made, then the v1 hierarchies of a hybrid host */
	int rc2 = rc;
	cg_v2_undo(j);
	j->cg_n = 0;
	memset(j->cg_base, 0, sizeof(j->cg_base));
	if ((rc = cg_init_v1(j)) == 0) {
		log_info("jail: cgroup v2 unusable (%s); clones get cgroup v1 groups (%s, ...)",
			 strerror(-rc2), j->cg_base[0]);
		return 0;
	}
	for (int i = 0; i < 3; i++)
		if (j->cg_base[i][0])
			rmdir(j->cg_base[i]);
	j->cg = JAIL_CG_NONE;
	j->cg_n = 0;
	log_warn("jail: no usable cgroup (v2: %s; v1 memory/pids/cpu: %s): clones run without "
		 "memory, task and CPU limits", strerror(-rc2), strerror(-rc));
	return 0;
}

void forkd_jail_fini(struct forkd *d)
{
	struct jail *j = &d->jail;

	if (!j->on)
		return;
	for (int i = 0; i < j->cg_n; i++) {
		cg_rmdir_children(j->cg_base[i]);
		rmdir(j->cg_base[i]);
	}
	if (j->cg == JAIL_CG_V2)
		cg_v2_undo(j);
	if (j->netns >= 0)
		close(j->netns);
	if (j->ipcns >= 0)
		close(j->ipcns);
	rmdir(j->root);
}

unsigned long forkd_jail_clone_flags(const struct forkd *d)
{
	return d->jail.on ? CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS : 0;
}

/* ------------------------------------------------------------ in the clone */

/* mkdir -p of path below root (root + path, path absolute). */
static int mkdirs_under(const char *root, const char *path, mode_t mode)
{
	char p[8400];
	snprintf(p, sizeof(p), "%s%s", root, path);
	for (char *s = p + strlen(root) + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Binds host path at the same path inside root, without suid, devices or
 * executables. */
static int bind_same(const char *root, const char *path)
{
	char p[8400];
	int rc = mkdirs_under(root, path, 0755);
	if (rc < 0)
		return rc;
	snprintf(p, sizeof(p), "%s%s", root, path);
	if (mount(path, p, NULL, MS_BIND | MS_REC, NULL) < 0 ||
	    mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return -errno;
	return 0;
}

/* The bounding and ambient sets (needs CAP_SETPCAP: before a uid switch). */
static int drop_bounding(const struct jail *j)
{
	for (int cap = 0; cap <= j->cap_last; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return -errno;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -errno;
	return 0;
}

/* The effective, permitted and inheritable sets. */
static int drop_caps(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &h, data) < 0)
		return -errno;
	return 0;
}

int forkd_jail_join_cgroup(int cg_fds[3])
{
	int rc = 0;
	for (int i = 0; i < 3; i++) {
		if (cg_fds[i] < 0)
			continue;
		if (rc == 0 && write(cg_fds[i], "0", 1) != 1)
			rc = -errno;
		close(cg_fds[i]);
		cg_fds[i] = -1;
	}
	return rc;
}

int forkd_jail_enter(const struct forkd *d, const char *id, const char *clone_dir, int cg_fds[3],
		     char *err, size_t errlen)
{
	const struct jail *j = &d->jail;
	const struct forkd_jail_config *jc = &d->cfg.jail;
	char p[8400];
	int rc;

#define JFAIL(what)                                                                            \
	do {                                                                                   \
		rc = -errno;                                                                   \
		snprintf(err, errlen, "jail: %s: %s", what, strerror(errno));                  \
		return rc;                                                                     \
	} while (0)

	for (int i = 0; i < 3; i++)
		cg_fds[i] = -1;
	if (!j->on)
		return 0;
	uint64_t t0 = time_mono_ns();
	/* The cgroup is joined later (forkd_jail_join_cgroup): moving a task
	 * between cgroups waits for an RCU grace period (8-18 ms measured on
	 * cgroup v1 here), which must not sit on the fork path. Its files are
	 * opened now, while the host's /sys/fs/cgroup is visible. */
	for (int i = 0; i < j->cg_n; i++) {
		snprintf(p, sizeof(p), "%s/%s/cgroup.procs", j->cg_base[i], id);
		if ((cg_fds[i] = open(p, O_WRONLY | O_CLOEXEC)) < 0)
			JFAIL("cannot open the clone's cgroup");
	}
	uint64_t t1 = time_mono_ns();
	if (setns(j->netns, CLONE_NEWNET) < 0)
		JFAIL("cannot join the clones' network namespace");
	if (setns(j->ipcns, CLONE_NEWIPC) < 0)
		JFAIL("cannot join the clones' IPC namespace");
	if (sethostname(id, strlen(id)) < 0)
		JFAIL("sethostname");
	/* glibc reads /etc/localtime once: now, while it is there */
	tzset();
	uint64_t t2 = time_mono_ns();
	/* nothing this process mounts reaches forkd's namespace */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		JFAIL("cannot make the mounts private");
	if (mount("forkd-jail", j->root, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") < 0)
		JFAIL("cannot mount the root tmpfs");
	if (mkdirs_under(j->root, "/dev", 0755) < 0)
		JFAIL("mkdir /dev");
	if (j->dev) {
		snprintf(p, sizeof(p), "%s%s", j->root, j->dev);
		if (mknod(p, S_IFCHR | 0600, j->dev_rdev) < 0)
			JFAIL("mknod of the platform's device");
		if (jc->uid_set && chown(p, jc->uid, jc->gid) < 0)
			JFAIL("chown of the platform's device");
	}
	if (jc->uid_set && chown(clone_dir, jc->uid, jc->gid) < 0)
		JFAIL("chown the clone directory");
	if ((rc = bind_same(j->root, clone_dir)) < 0 || (rc = bind_same(j->root, d->store)) < 0) {
		snprintf(err, errlen, "jail: cannot bind the clone directory and the store: %s",
			 strerror(-rc));
		return rc;
	}
	if (mkdirs_under(j->root, "/proc", 0555) < 0)
		JFAIL("mkdir /proc");
	snprintf(p, sizeof(p), "%s/proc", j->root);
	if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		JFAIL("cannot mount /proc");
	if (mkdirs_under(j->root, "/.old", 0700) < 0)
		JFAIL("mkdir /.old");
	snprintf(p, sizeof(p), "%s/.old", j->root);
	uint64_t t3 = time_mono_ns();
	if (syscall(SYS_pivot_root, j->root, p) < 0)
		JFAIL("pivot_root");
	if (chdir("/") < 0)
		JFAIL("chdir /");
	if (umount2("/.old", MNT_DETACH) < 0)
		JFAIL("cannot detach the old root");
	if (rmdir("/.old") < 0)
		JFAIL("rmdir /.old");
	if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) < 0)
		JFAIL("cannot make the root read-only");
	uint64_t t4 = time_mono_ns();
	if ((rc = drop_bounding(j)) < 0) {
		snprintf(err, errlen, "jail: cannot drop capabilities: %s", strerror(-rc));
		return rc;
	}
	if (jc->uid_set) {
		if (setgroups(0, NULL) < 0 || setresgid(jc->gid, jc->gid, jc->gid) < 0 ||
		    setresuid(jc->uid, jc->uid, jc->uid) < 0)
			JFAIL("cannot switch to the jail uid/gid");
	}
	if ((rc = drop_caps()) < 0) {
		snprintf(err, errlen, "jail: cannot drop capabilities: %s", strerror(-rc));
		return rc;
	}
#undef JFAIL
	log_debug("jail %s: cgroup files %.0f us, namespaces %.0f us, root %.0f us, pivot %.0f us, "
		  "privileges %.0f us", id, (t1 - t0) / 1e3, (t2 - t1) / 1e3, (t3 - t2) / 1e3,
		  (t4 - t3) / 1e3, (time_mono_ns() - t4) / 1e3);
	return 0;
}
