/* forkd/child.c - a clone process: forked from forkd (no exec), it
 * restores the template's VM paused, then obeys its control socket: resume
 * (a pool shell handed out), pause, snapshot. It dies with forkd
 * (PR_SET_PDEATHSIG) and exits when the guest stops. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "forkd/internal.h"

#include <sys/syscall.h>

struct child {
	struct loop *loop;
	struct vm *vm;
	int ctl;
	const char *store;
};

/* A failed send means forkd is gone: PR_SET_PDEATHSIG ends us. */
static void send_msg(int ctl, uint32_t op, int rc, const char *text)
{
	forkd_ctl_send(ctl, op, rc, text, 0);
}

/* After RUNNING, off the fork path: where the start went, with the first
 * KVM_RUN (waited for up to 50 ms). */
static void send_times(struct child *c, uint64_t child_start, uint64_t jail_ns)
{
	struct ctl_msg m = { .op = CTL_TIMES, .t_ns = time_mono_ns() };
	struct vm_timings t;
	uint64_t first = 0;

	for (int i = 0; i < 500 && !(first = vm_first_run_at(c->vm)); i++)
		usleep(100);
	vm_get_timings(c->vm, &t);
	m.v[CT_CHILD_START] = child_start;
	m.v[CT_KVM] = t.kvm_ns;
	m.v[CT_MAP] = t.map_ns;
	m.v[CT_CREATE] = t.create_ns;
	m.v[CT_STATE] = t.state_ns;
	m.v[CT_THREADS] = t.threads_ns;
	m.v[CT_JAIL] = jail_ns;
	m.v[CT_FIRST_RUN] = first;
	if (send(c->ctl, &m, sizeof(m), MSG_NOSIGNAL) < 0) {
		/* forkd is gone */
	}
}

static void on_vm_exit(void *arg, struct vm *vm)
{
	struct child *c = arg;
	struct vm_exit_info info;

	vm_get_exit_info(vm, &info);
	send_msg(c->ctl, CTL_EXITED, info.status, info.reason);
	_exit(info.status & 0xff);
}

static void do_op(struct child *c, const struct ctl_msg *m)
{
	char err[512] = "", id[33] = "";
	int rc;

	switch (m->op) {
	case CTL_GO:
	case CTL_RESUME:
		rc = vm_resume(c->vm);
		send_msg(c->ctl, m->op == CTL_GO ? CTL_RUNNING : CTL_REPLY, rc,
			 rc < 0 ? "the clone is not paused" : NULL);
		if (m->op == CTL_GO && rc == 0)
			send_times(c, 0, 0);
		break;
	case CTL_PAUSE:
		rc = vm_pause(c->vm);
		send_msg(c->ctl, CTL_REPLY, rc, rc < 0 ? "the clone is not running" : NULL);
		break;
	case CTL_SNAPSHOT: {
		bool was_running = vm_get_state(c->vm) == VM_STATE_RUNNING;
		rc = was_running ? vm_pause(c->vm) : 0;
		if (rc < 0)
			snprintf(err, sizeof(err), "cannot pause the clone: %s", strerror(-rc));
		else
			rc = vm_snapshot_store(c->vm, c->store, m->text[0] ? m->text : NULL, id, err,
					       sizeof(err));
		if (was_running && vm_get_state(c->vm) == VM_STATE_PAUSED &&
		    vm_resume(c->vm) < 0 && rc == 0) {
			rc = -EIO;
			snprintf(err, sizeof(err), "snapshot taken (%s) but the clone cannot resume", id);
		}
		send_msg(c->ctl, CTL_REPLY, rc, rc < 0 ? err : id);
		break;
	}
	default:
		send_msg(c->ctl, CTL_REPLY, -EINVAL, "unknown control message");
	}
}

static void on_ctl(void *arg, uint32_t events)
{
	struct child *c = arg;
	struct ctl_msg m;
	ssize_t n = recv(c->ctl, &m, sizeof(m), MSG_DONTWAIT);

	if (n == (ssize_t)sizeof(m)) {
		m.text[sizeof(m.text) - 1] = '\0';
		do_op(c, &m);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !(events & (EPOLLHUP | EPOLLERR)))
		return;
	/* forkd closed our control socket (or is gone): nobody owns us. */
	_exit(0);
}

/* Keeps fds 0..2, ctl (moved to 3), the template's images (moved to 4..:
 * memory, then its disks) and the jail's cgroup files (moved after them,
 * renumbered in cg); closes every other descriptor forkd had open. */
static int tidy_fds(int ctl, struct vm_template *vt, int cg[3])
{
	int tf[VM_TEMPLATE_MAX_FDS], keep[1 + VM_TEMPLATE_MAX_FDS + 3], hi[1 + VM_TEMPLATE_MAX_FDS + 3];
	unsigned nt = vm_template_fds(vt, tf, VM_TEMPLATE_MAX_FDS);
	int n = 0;

	keep[n++] = ctl;
	for (unsigned i = 0; i < nt; i++)
		keep[n++] = tf[i];
	int first_cg = n;
	for (int i = 0; i < 3 && cg[i] >= 0; i++)
		keep[n++] = cg[i];
	/* Move them out of the way first, then into place. */
	for (int i = 0; i < n; i++) {
		hi[i] = fcntl(keep[i], F_DUPFD_CLOEXEC, 100000);
		if (hi[i] < 0) /* a low RLIMIT_NOFILE: any free slot above the kept ones */
			hi[i] = fcntl(keep[i], F_DUPFD_CLOEXEC, 3 + n);
		if (hi[i] < 0)
			return -errno;
	}
	for (int i = 0; i < n; i++)
		if (dup3(hi[i], 3 + i, O_CLOEXEC) < 0)
			return -errno;
	if (syscall(SYS_close_range, (unsigned)(3 + n), ~0U, 0U) < 0)
		return -errno;
	for (unsigned i = 0; i < nt; i++)
		tf[i] = 4 + (int)i;
	vm_template_set_fds(vt, tf, nt);
	for (int i = first_cg; i < n; i++)
		cg[i - first_cg] = 3 + i;
	return 3;
}

void forkd_clone_main(const struct clone_child_args *a)
{
	uint64_t child_start = time_mono_ns();
	struct child c = { .store = a->store };
	char err[512], agent[300], console[300];
	sigset_t all;
	int rc;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	prctl(PR_SET_NAME, "forkd-clone");
	/* Signals back to their defaults (forkd blocks some for its signalfd). */
	signal(SIGCHLD, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	log_set_ident("forkd-clone");

	/* forkd died before PR_SET_PDEATHSIG took: its end of ctl is closed
	 * (getppid() says nothing in a PID namespace of our own) */
	struct pollfd pf = { .fd = a->ctl, .events = POLLRDHUP };
	if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLHUP | POLLRDHUP | POLLERR)))
		_exit(0);
	if (mkdir(a->dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, sizeof(err), "cannot create %s: %s", a->dir, strerror(errno));
		send_msg(a->ctl, CTL_FAILED, -errno, err);
		_exit(1);
	}
	/* The jail needs forkd's namespace descriptors: before tidy_fds. */
	uint64_t tj = time_mono_ns();
	int cg[3];
	rc = forkd_jail_enter(a->forkd, a->id, a->dir, cg, err, sizeof(err));
	uint64_t jail_ns = time_mono_ns() - tj;
	if (rc < 0) {
		send_msg(a->ctl, CTL_FAILED, rc, err);
		_exit(1);
	}
	c.ctl = tidy_fds(a->ctl, a->vt, cg);
	if (c.ctl < 0)
		_exit(125);

	snprintf(agent, sizeof(agent), "%s/agent.sock", a->dir);
	snprintf(console, sizeof(console), "%s/console.log", a->dir);
	struct vm_restore_opts o = {
		.agent_socket = agent,
		.set_serial = true,
		.serial_mode = VM_SERIAL_FILE,
		.serial_path = console,
		.clone_id = a->id,
		.running = a->autostart,
		.seccomp = a->seccomp,
		.platform = a->platform,
	};
	rc = loop_create(&c.loop);
	if (rc < 0) {
		send_msg(c.ctl, CTL_FAILED, rc, "cannot create the event loop");
		_exit(1);
	}
	/* Set-up is done: the VMM filter before the VM is built, the vCPU
	 * filter by each vCPU thread before the guest runs. */
	if ((rc = vmm_seccomp_apply(a->seccomp)) < 0) {
		snprintf(err, sizeof(err), "cannot install the seccomp filter: %s", strerror(-rc));
		send_msg(c.ctl, CTL_FAILED, rc, err);
		_exit(1);
	}
	/* A pool shell joins its cgroup now: it is off the fork path. */
	if (!a->autostart && (rc = forkd_jail_join_cgroup(cg)) < 0) {
		snprintf(err, sizeof(err), "jail: cannot join the clone's cgroup: %s", strerror(-rc));
		send_msg(c.ctl, CTL_FAILED, rc, err);
		_exit(1);
	}
	/* A pool shell is prepared in the background: it yields the CPU to
	 * clones being handed out and to guests running (SCHED_IDLE), and
	 * returns to the normal policy before it counts as ready. */
	struct sched_param sp = { .sched_priority = 0 };
	bool idle = !a->autostart && sched_setscheduler(0, SCHED_IDLE, &sp) == 0;
	rc = vm_restore_template(a->vt, &o, c.loop, on_vm_exit, &c, err, sizeof(err), &c.vm);
	/* back to the normal policy (a jailed shell cannot: forkd does it
	 * when the shell reports ready) */
	if (idle && !a->forkd->jail.on)
		forkd_sched_threads(getpid(), SCHED_OTHER);
	if (rc < 0) {
		send_msg(c.ctl, CTL_FAILED, rc, err);
		_exit(1);
	}
	if (a->autostart) {
		send_msg(c.ctl, CTL_RUNNING, 0, NULL);
		/* off the fork path (see forkd_jail_join_cgroup); the guest runs */
		if ((rc = forkd_jail_join_cgroup(cg)) < 0) {
			log_error("jail: cannot join the clone's cgroup: %s", strerror(-rc));
			_exit(1);
		}
		send_times(&c, child_start, jail_ns);
	} else {
		send_msg(c.ctl, CTL_READY, 0, NULL);
	}
	if (loop_add(c.loop, c.ctl, EPOLLIN, on_ctl, &c) < 0)
		_exit(1);
	for (;;) {
		rc = loop_run_once(c.loop, -1);
		if (rc < 0 && rc != -EINTR)
			_exit(1);
	}
}
