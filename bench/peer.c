/* bench/peer.c - forkbench peer: what users would pick instead, measured in
 * the same run. QEMU (Debian's qemu-system-x86_64) restores a minimal Linux
 * guest (Debian's cloud kernel, a busybox initramfs whose /init answers
 * "pong LINE" for every LINE on ttyS0) from a migration file: the guest's
 * RAM is a file-backed memory backend, share=on while the template runs
 * and share=off (a private copy-on-write mapping of the same file) in
 * every restore, with the x-ignore-shared capability keeping RAM out of
 * the migration stream. forkvm restores the default agent guest from a
 * snapshot directory, and QEMU's own Linux guest (same kernel, initramfs
 * and command line; its ttyS0 on --serial socket=) from another. Every
 * figure is restore-to-first-answer: process spawn -> snapshot loaded ->
 * guest running -> the first answer on its channel (the serial line for
 * QEMU and forkvm's Linux guest, an agent ping for the agent guest).
 *
 * QEMU uses KVM when the guest answers under it within PEER_KVM_PROBE_MS,
 * TCG otherwise (on PVM hosts a Linux guest cannot run on /dev/kvm), and
 * the output says which. What is downloaded, every QEMU command line and
 * QMP command are in docs/peer.md. Packages are installed (qemu-system-x86)
 * or downloaded (kernel, busybox-static) only when missing, into a cache
 * reused by later runs; when that is impossible, peer exits with 77. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/agent_client.h"
#include "common/util.h"

#define PEER_SKIP 77                 /* the exit status of a skipped test */
#define PEER_KVM_PROBE_MS 10000      /* the guest must answer under KVM by then */
#define PEER_BOOT_MS 180000          /* a TCG boot takes ~5 s here */
#define PEER_STEP_MS 60000           /* any other step */
#define PEER_LINUX_BOOT_MS 180000    /* forkvm's Linux boot (the KVM lane: ~30 s) */
#define PEER_QEMU "qemu-system-x86_64"
/* The initramfs's name carries a version: change it whenever peer_init or
 * its build changes, so that caches rebuild it. */
#define PEER_INITRAMFS "initramfs-v1.cpio.gz"
#define PEER_READY "forkbench-peer ready"

/* The guest's /init (busybox sh): the serial-line agent. */
static const char peer_init[] =
	"#!/bin/busybox sh\n"
	"# forkbench peer guest: answers \"pong LINE\" to every LINE on ttyS0\n"
	"/bin/busybox mount -t proc proc /proc\n"
	"/bin/busybox mount -t sysfs sysfs /sys\n"
	"/bin/busybox mount -t devtmpfs devtmpfs /dev\n"
	"/bin/busybox stty -F /dev/ttyS0 -echo\n"
	"exec </dev/ttyS0 >/dev/ttyS0 2>&1\n"
	"echo \"" PEER_READY "\"\n"
	"while true; do\n"
	"\twhile read -r line; do echo \"pong $line\"; done\n"
	"done\n";

/* Prepares the cache ($1): installs qemu-system-x86 when qemu-system-x86_64
 * is missing; downloads (never installs) the kernel package that
 * linux-image-cloud-amd64 depends on and keeps its vmlinuz; builds the
 * initramfs from busybox-static (installed, or downloaded) and /init ($2).
 * Exits 0, or 77 with a message when something cannot be had. */
static const char prepare_sh[] =
	"set -eu\n"
	"cache=$1 init=$2\n"
	"say() { echo \"forkbench peer: $*\" >&2; }\n"
	"skip() { say \"$*; skipped\"; exit 77; }\n"
	"export DEBIAN_FRONTEND=noninteractive\n"
	"root=no; [ \"$(id -u)\" -eq 0 ] && root=yes\n"
	"if ! command -v " PEER_QEMU " >/dev/null 2>&1; then\n"
	"  [ $root = yes ] ||\n"
	"    skip \"" PEER_QEMU " is missing: run as root, or: apt-get install qemu-system-x86\"\n"
	"  install='apt-get install -y -q --no-install-recommends qemu-system-x86'\n"
	"  say \"installing qemu-system-x86 ($install)\"\n"
	"  if ! $install >/dev/null 2>&1; then\n"
	"    apt-get update -q >/dev/null 2>&1 || true\n"
	"    $install >&2 ||\n"
	"      skip \"cannot install qemu-system-x86 (no network or no Debian mirror?)\"\n"
	"  fi\n"
	"fi\n"
	"[ -s \"$cache/vmlinuz\" ] && [ -s \"$cache/" PEER_INITRAMFS "\" ] && exit 0\n"
	"mkdir -p \"$cache\" || skip \"cannot create the cache $cache\"\n"
	"work=$(mktemp -d \"$cache/.work.XXXXXX\") || skip \"cannot write to the cache $cache\"\n"
	"trap 'rm -rf \"$work\"' EXIT\n"
	"# apt-get download PKG into $work; after an apt-get update when root\n"
	"fetch() {\n"
	"  (cd \"$work\" && apt-get download -q \"$1\") >\"$work/apt.log\" 2>&1 && return 0\n"
	"  [ $root = yes ] && apt-get update -q >/dev/null 2>&1 &&\n"
	"    (cd \"$work\" && apt-get download -q \"$1\") >\"$work/apt.log\" 2>&1 && return 0\n"
	"  cat \"$work/apt.log\" >&2; return 1\n"
	"}\n"
	"if [ ! -s \"$cache/vmlinuz\" ]; then\n"
	"  kpkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null |\n"
	"    sed -n 's/^ *Depends: \\(linux-image-[^ ]*\\)$/\\1/p' | head -n 1; }\n"
	"  pkg=$(kpkg)\n"
	"  if [ -z \"$pkg\" ] && [ $root = yes ]; then\n"
	"    apt-get update -q >/dev/null 2>&1 || true\n"
	"    pkg=$(kpkg)\n"
	"  fi\n"
	"  [ -n \"$pkg\" ] || skip \"apt-cache knows no linux-image-cloud-amd64\"\n"
	"  say \"downloading Debian's cloud kernel $pkg (apt-get download, not installed)\"\n"
	"  fetch \"$pkg\" || skip \"cannot download $pkg (no network or no Debian mirror?)\"\n"
	"  mkdir \"$work/k\"\n"
	"  dpkg-deb --fsys-tarfile \"$work\"/\"$pkg\"_*.deb | tar -x -C \"$work/k\" ./boot\n"
	"  echo \"$pkg\" >\"$work/kernel-package\"\n"
	"  mv \"$work/kernel-package\" \"$cache/kernel-package\"\n"
	"  mv \"$work\"/k/boot/vmlinuz-* \"$cache/vmlinuz\"\n"
	"fi\n"
	"if [ ! -s \"$cache/" PEER_INITRAMFS "\" ]; then\n"
	"  st=$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)\n"
	"  if [ \"$st\" = 'install ok installed' ]; then\n"
	"    bb=/bin/busybox\n"
	"  else\n"
	"    say \"downloading busybox-static (apt-get download, not installed)\"\n"
	"    fetch busybox-static ||\n"
	"      skip \"cannot download busybox-static (no network or no Debian mirror?)\"\n"
	"    dpkg-deb -x \"$work\"/busybox-static_*.deb \"$work/bb\"\n"
	"    bb=$work/bb/bin/busybox\n"
	"  fi\n"
	"  r=$work/root\n"
	"  mkdir -p \"$r/bin\" \"$r/dev\" \"$r/proc\" \"$r/sys\"\n"
	"  cp \"$bb\" \"$r/bin/busybox\"\n"
	"  printf '%s' \"$init\" >\"$r/init\"\n"
	"  chmod 755 \"$r/init\" \"$r/bin/busybox\"\n"
	"  (cd \"$r\" && find . | \"$bb\" cpio -o -H newc -R 0:0 2>/dev/null) \\\n"
	"    >\"$work/initramfs.cpio\"\n"
	"  gzip -9 -n <\"$work/initramfs.cpio\" >\"$work/initramfs.cpio.gz\"\n"
	"  mv \"$work/initramfs.cpio.gz\" \"$cache/" PEER_INITRAMFS "\"\n"
	"fi\n";

struct peer {
	const struct opts *o;
	char dir[64];                   /* the run's temporary directory */
	char cache[4096];
	char kernel[4200], initrd[4200];
	char mem[128], mig[128], serial[128], qmp[128], log[128];
	char fsnap[128], fapi[128], fagent[128];
	char lsnap[128], lserial[128];  /* forkvm's Linux guest: snapshot, ttyS0 */
	char size[32];                  /* "256M": QEMU's -m and backend size */
	const char *accel;              /* "kvm" or "tcg" */
	char why[256];                  /* why not KVM, when TCG */
	char kpkg[128];                 /* the kernel's Debian package */
	long long mig_kib;              /* the migration file's size */
	pid_t pid;                      /* the QEMU being driven, or 0 */
	int qmp_fd, ser_fd;
	char qbuf[65536];               /* QMP bytes not yet parsed */
	size_t qlen;
	char mig_status[32];            /* the last MIGRATION event's status */
	char sbuf[8192];                /* serial output, its tail kept */
	size_t slen;
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;
	fputs("forkbench peer: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

static int remaining_ms(uint64_t deadline)
{
	uint64_t now = time_mono_ns();
	return now >= deadline ? 0 : (int)MIN((deadline - now) / 1000000 + 1, 100);
}

/* True while pid has not exited (it is not reaped here). */
static bool alive(pid_t pid)
{
	siginfo_t si = { 0 };
	return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0;
}

/* SIGTERM, then SIGKILL after 5 s; reaps. */
static void kill_wait(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	for (int i = 0; i < 500; i++) {
		pid_t w = waitpid(pid, NULL, WNOHANG);
		if (w == pid || (w < 0 && errno == ECHILD))
			return;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* Connects to a Unix socket as soon as it accepts, while pid lives.
 * Returns the fd or -errno (-ECHILD: pid exited). */
static int connect_child(const char *path, pid_t pid, uint64_t deadline)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		if (!alive(pid))
			return -ECHILD;
		if (time_mono_ns() >= deadline)
			return -ETIMEDOUT;
		usleep(50);
	}
}

/* Reads what fd has into buf[*len..cap) within deadline. Returns the
 * byte count, -ETIMEDOUT, -EPIPE (EOF) or -errno. */
static int read_some(int fd, char *buf, size_t *len, size_t cap, uint64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int ms = remaining_ms(deadline);
		if (ms == 0)
			return -ETIMEDOUT;
		int rc = poll(&pfd, 1, ms);
		if (rc < 0 && errno != EINTR)
			return -errno;
		if (rc <= 0)
			continue;
		ssize_t n = read(fd, buf + *len, cap - *len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EPIPE;
		*len += (size_t)n;
		return (int)n;
	}
}

/* ---------------------------------------------------------------- serial */

/* Reads the serial line until needle appears (the tail is kept for error
 * messages). Returns 0, -ETIMEDOUT or -EPIPE (QEMU went away). */
static int serial_wait(struct peer *p, const char *needle, uint64_t deadline)
{
	size_t nl = strlen(needle);
	size_t from = 0;

	for (;;) {
		if (p->slen >= nl && memmem(p->sbuf + from, p->slen - from, needle, nl))
			return 0;
		if (p->slen > sizeof(p->sbuf) / 2) { /* keep the tail */
			size_t keep = sizeof(p->sbuf) / 4;
			memmove(p->sbuf, p->sbuf + p->slen - keep, keep);
			p->slen = keep;
		}
		from = p->slen >= nl ? p->slen - nl + 1 : 0;
		int rc = read_some(p->ser_fd, p->sbuf, &p->slen, sizeof(p->sbuf) - 1, deadline);
		if (rc < 0)
			return rc;
		if (from > p->slen)
			from = 0;
	}
}

/* Sends a line and waits for "pong LINE". */
static int serial_ping(struct peer *p, const char *line, uint64_t deadline)
{
	char out[128], want[140];
	snprintf(out, sizeof(out), "%s\n", line);
	snprintf(want, sizeof(want), "pong %s", line);
	p->slen = 0;
	int rc = write_full(p->ser_fd, out, strlen(out));
	return rc < 0 ? rc : serial_wait(p, want, deadline);
}

/* ---------------------------------------------------------------- QMP */

/* Reads one QMP message (a line of JSON). MIGRATION events update
 * p->mig_status. Returns 0 and *msg (caller decrefs) or -errno. */
static int qmp_read(struct peer *p, uint64_t deadline, json_t **msg)
{
	for (;;) {
		char *eol = memchr(p->qbuf, '\n', p->qlen);
		if (eol) {
			size_t n = (size_t)(eol - p->qbuf) + 1;
			*msg = json_loadb(p->qbuf, n, 0, NULL);
			memmove(p->qbuf, p->qbuf + n, p->qlen - n);
			p->qlen -= n;
			if (!*msg)
				return -EPROTO;
			const char *ev = json_string_value(json_object_get(*msg, "event"));
			const char *st = json_string_value(
				json_object_get(json_object_get(*msg, "data"), "status"));
			if (ev && !strcmp(ev, "MIGRATION") && st)
				snprintf(p->mig_status, sizeof(p->mig_status), "%s", st);
			return 0;
		}
		if (p->qlen == sizeof(p->qbuf))
			return -EMSGSIZE;
		int rc = read_some(p->qmp_fd, p->qbuf, &p->qlen, sizeof(p->qbuf), deadline);
		if (rc < 0)
			return rc;
	}
}

/* Sends a command (a JSON object) and reads until its "return" (0) or
 * "error" (printed: -EIO); events on the way are consumed. */
static int qmp_cmd(struct peer *p, json_t *cmd, uint64_t deadline)
{
	char *txt = json_dumps(cmd, JSON_COMPACT);
	const char *name = json_string_value(json_object_get(cmd, "execute"));
	int rc;

	if (!txt)
		return -ENOMEM;
	rc = write_full(p->qmp_fd, txt, strlen(txt));
	if (rc == 0)
		rc = write_full(p->qmp_fd, "\n", 1);
	free(txt);
	while (rc == 0) {
		json_t *m;
		if ((rc = qmp_read(p, deadline, &m)) < 0)
			break;
		bool done = json_object_get(m, "return");
		const char *err = json_string_value(
			json_object_get(json_object_get(m, "error"), "desc"));
		if (json_object_get(m, "error"))
			fail("QMP %s: %s", name, err ? err : "error");
		if (done || json_object_get(m, "error"))
			rc = done ? 0 : -EIO;
		json_decref(m);
		if (done || rc)
			return rc;
	}
	fail("QMP %s: %s", name, strerror(-rc));
	return rc;
}

/* A command built with json_pack's format and arguments. */
static int qmp(struct peer *p, uint64_t deadline, const char *fmt, ...)
{
	va_list ap;
	json_error_t err;
	va_start(ap, fmt);
	json_t *cmd = json_vpack_ex(&err, 0, fmt, ap);
	va_end(ap);
	if (!cmd)
		return fail("QMP: %s", err.text);
	int rc = qmp_cmd(p, cmd, deadline);
	json_decref(cmd);
	return rc;
}

/* Connects to QMP: greeting, qmp_capabilities. */
static int qmp_connect(struct peer *p, uint64_t deadline)
{
	json_t *greeting;
	p->qlen = 0;
	p->mig_status[0] = '\0';
	p->qmp_fd = connect_child(p->qmp, p->pid, deadline);
	if (p->qmp_fd < 0)
		return p->qmp_fd;
	int rc = qmp_read(p, deadline, &greeting);
	if (rc < 0)
		return rc;
	json_decref(greeting);
	return qmp(p, deadline, "{s:s}", "execute", "qmp_capabilities");
}

/* x-ignore-shared (RAM of shared file backends stays out of the stream)
 * and MIGRATION events. */
static int qmp_caps(struct peer *p, uint64_t deadline)
{
	return qmp(p, deadline, "{s:s,s:{s:[{s:s,s:b},{s:s,s:b}]}}", "execute",
		   "migrate-set-capabilities", "arguments", "capabilities", "capability",
		   "x-ignore-shared", "state", 1, "capability", "events", "state", 1);
}

/* Waits for the MIGRATION event "completed" (-EIO on "failed"). */
static int qmp_wait_migration(struct peer *p, uint64_t deadline)
{
	while (strcmp(p->mig_status, "completed")) {
		json_t *m;
		if (!strcmp(p->mig_status, "failed") || !strcmp(p->mig_status, "cancelled")) {
			fail("migration %s", p->mig_status);
			return -EIO;
		}
		int rc = qmp_read(p, deadline, &m);
		if (rc < 0) {
			fail("waiting for the migration: %s", strerror(-rc));
			return rc;
		}
		json_decref(m);
	}
	return 0;
}

/* ---------------------------------------------------------------- QEMU */

/* Starts QEMU on the guest: share=on for the template (its RAM is the
 * snapshot's memory file), share=off with -incoming defer -S to restore. */
static pid_t spawn_qemu(struct peer *p, const char *accel, bool restore)
{
	char backend[512], smp[32], append[] = "console=ttyS0 panic=-1";
	char serial[300], qmp_arg[300];
	const char *argv[48];
	int n = 0;

	snprintf(backend, sizeof(backend),
		 "memory-backend-file,id=mem,size=%s,mem-path=%s,share=%s", p->size, p->mem,
		 restore ? "off" : "on");
	snprintf(smp, sizeof(smp), "%s", p->o->cpus);
	snprintf(serial, sizeof(serial), "socket,id=s0,path=%s,server=on,wait=off", p->serial);
	snprintf(qmp_arg, sizeof(qmp_arg), "unix:%s,server=on,wait=off", p->qmp);
	argv[n++] = PEER_QEMU;
	argv[n++] = "-nodefaults";
	argv[n++] = "-no-user-config";
	argv[n++] = "-display";
	argv[n++] = "none";
	argv[n++] = "-no-reboot";
	argv[n++] = "-machine";
	argv[n++] = "pc,memory-backend=mem";
	argv[n++] = "-accel";
	argv[n++] = accel;
	argv[n++] = "-smp";
	argv[n++] = smp;
	argv[n++] = "-m";
	argv[n++] = p->size;
	argv[n++] = "-object";
	argv[n++] = backend;
	argv[n++] = "-kernel";
	argv[n++] = p->kernel;
	argv[n++] = "-initrd";
	argv[n++] = p->initrd;
	argv[n++] = "-append";
	argv[n++] = append;
	argv[n++] = "-chardev";
	argv[n++] = serial;
	argv[n++] = "-serial";
	argv[n++] = "chardev:s0";
	argv[n++] = "-qmp";
	argv[n++] = qmp_arg;
	if (restore) {
		argv[n++] = "-incoming";
		argv[n++] = "defer";
		argv[n++] = "-S";
	}
	argv[n] = NULL;

	unlink(p->serial);
	unlink(p->qmp);
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		int log = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(null, 0);
		dup2(log >= 0 ? log : null, 1);
		dup2(log >= 0 ? log : null, 2);
		execvp(argv[0], (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	return pid;
}

static void qemu_stop(struct peer *p)
{
	if (p->qmp_fd >= 0)
		close(p->qmp_fd);
	if (p->ser_fd >= 0)
		close(p->ser_fd);
	p->qmp_fd = p->ser_fd = -1;
	kill_wait(p->pid);
	p->pid = 0;
}

/* Prints the tails of QEMU's log and of the serial output. */
static void qemu_diag(struct peer *p)
{
	char *log = NULL;
	size_t len = 0;
	if (file_read_all(p->log, 1 << 20, &log, &len) == 0 && len)
		fprintf(stderr, "forkbench peer: QEMU's output (%s):\n%s\n", p->log,
			log + (len > 2000 ? len - 2000 : 0));
	free(log);
	p->sbuf[p->slen] = '\0';
	if (p->slen)
		fprintf(stderr, "forkbench peer: the guest's serial output, last bytes:\n%s\n",
			p->sbuf);
}

/* p->why = "what: the first line of QEMU's log" (or the error). */
static void log_line(struct peer *p, const char *what, int rc)
{
	char *log = NULL;
	size_t len = 0;
	if (file_read_all(p->log, 1 << 20, &log, &len) == 0 && len) {
		log[strcspn(log, "\n")] = '\0';
		snprintf(p->why, sizeof(p->why), "%s: %s", what, log);
	} else {
		snprintf(p->why, sizeof(p->why), "%s: %s", what, strerror(-rc));
	}
	free(log);
}

/* Boots the template on accel until its /init answers a line. Returns 0
 * with QEMU running and QMP connected, or -errno with QEMU stopped. */
static int qemu_boot(struct peer *p, const char *accel, int timeout_ms, uint64_t *boot_ns)
{
	uint64_t t0 = time_mono_ns(), deadline = t0 + (uint64_t)timeout_ms * 1000000ULL;
	int rc;

	unlink(p->mem); /* QEMU creates it at the backend's size */
	unlink(p->log);
	p->slen = 0;
	p->pid = spawn_qemu(p, accel, false);
	if (p->pid < 0)
		return -errno;
	p->ser_fd = connect_child(p->serial, p->pid, deadline);
	rc = p->ser_fd < 0 ? p->ser_fd : serial_wait(p, PEER_READY, deadline);
	if (rc == 0)
		rc = serial_ping(p, "warm-up", deadline);
	*boot_ns = time_mono_ns() - t0;
	if (rc == 0)
		rc = qmp_connect(p, time_mono_ns() + PEER_STEP_MS * 1000000ULL);
	if (rc < 0)
		qemu_stop(p);
	return rc;
}

/* The template, running: stop, migrate to the file (RAM stays in the
 * memory file), quit. */
static int qemu_snapshot(struct peer *p)
{
	uint64_t deadline = time_mono_ns() + PEER_STEP_MS * 1000000ULL;
	char uri[300];
	int rc;

	snprintf(uri, sizeof(uri), "exec:cat > '%s'", p->mig);
	if ((rc = qmp(p, deadline, "{s:s}", "execute", "stop")) < 0 ||
	    (rc = qmp_caps(p, deadline)) < 0 ||
	    (rc = qmp(p, deadline, "{s:s,s:{s:s}}", "execute", "migrate", "arguments", "uri",
		      uri)) < 0 ||
	    (rc = qmp_wait_migration(p, deadline)) < 0)
		return rc;
	qmp(p, deadline, "{s:s}", "execute", "quit");
	close(p->qmp_fd);
	close(p->ser_fd);
	p->qmp_fd = p->ser_fd = -1;
	bool reaped = false;
	for (int i = 0; i < 1000 && !(reaped = waitpid(p->pid, NULL, WNOHANG) == p->pid); i++)
		usleep(10000);
	if (!reaped)
		kill_wait(p->pid);
	p->pid = 0;
	struct stat st;
	p->mig_kib = stat(p->mig, &st) == 0 ? (long long)st.st_size / 1024 : -1;
	return 0;
}

enum { Q_QMP, Q_MIG, Q_CONT, Q_ANSWER, Q_N };

/* One restore: spawn -> QMP ready -> migrate-incoming completed -> cont
 * returned -> first answer on the serial line; t[] from the spawn. */
static int qemu_restore(struct peer *p, int i, uint64_t t[Q_N])
{
	uint64_t deadline, t0;
	char uri[300], line[64];
	int rc;

	snprintf(uri, sizeof(uri), "exec:cat '%s'", p->mig);
	snprintf(line, sizeof(line), "ping-%d-%d", i, (int)getpid());
	unlink(p->log);
	p->slen = 0;
	t0 = time_mono_ns();
	deadline = t0 + PEER_STEP_MS * 1000000ULL;
	p->pid = spawn_qemu(p, p->accel, true);
	if (p->pid < 0)
		return -errno;
	if ((rc = qmp_connect(p, deadline)) < 0)
		goto out;
	t[Q_QMP] = time_mono_ns() - t0;
	if ((rc = qmp_caps(p, deadline)) < 0)
		goto out;
	/* Connected before the guest runs: the answer includes no connect. */
	if ((p->ser_fd = connect_child(p->serial, p->pid, deadline)) < 0) {
		rc = p->ser_fd;
		goto out;
	}
	if ((rc = qmp(p, deadline, "{s:s,s:{s:s}}", "execute", "migrate-incoming", "arguments",
		      "uri", uri)) < 0 ||
	    (rc = qmp_wait_migration(p, deadline)) < 0)
		goto out;
	t[Q_MIG] = time_mono_ns() - t0;
	if ((rc = qmp(p, deadline, "{s:s}", "execute", "cont")) < 0)
		goto out;
	t[Q_CONT] = time_mono_ns() - t0;
	if ((rc = serial_ping(p, line, deadline)) < 0) {
		fail("restore %d: no answer on the serial line: %s", i, strerror(-rc));
		goto out;
	}
	t[Q_ANSWER] = time_mono_ns() - t0;
out:
	if (rc < 0)
		qemu_diag(p);
	qemu_stop(p);
	return rc;
}

/* The QEMU template on KVM when the guest answers there within the probe
 * time (or when asked), else on TCG; then its snapshot. */
static int qemu_template(struct peer *p)
{
	const char *want = p->o->accel;
	uint64_t boot_ns = 0;
	int fd, rc = -1;

	if (!want || !strcmp(want, "auto") || !strcmp(want, "kvm")) {
		bool forced = want && !strcmp(want, "kvm");
		if ((fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0) {
			snprintf(p->why, sizeof(p->why), "/dev/kvm: %s", strerror(errno));
		} else {
			close(fd);
			progress("peer: booting the QEMU guest on KVM (up to %d s)",
				 (forced ? PEER_BOOT_MS : PEER_KVM_PROBE_MS) / 1000);
			rc = qemu_boot(p, "kvm", forced ? PEER_BOOT_MS : PEER_KVM_PROBE_MS,
				       &boot_ns);
			if (rc == 0)
				p->accel = "kvm";
			else if (rc == -ETIMEDOUT)
				snprintf(p->why, sizeof(p->why),
					 "the guest did not answer under KVM within %d s",
					 (forced ? PEER_BOOT_MS : PEER_KVM_PROBE_MS) / 1000);
			else
				log_line(p, "QEMU on KVM failed", rc);
		}
		if (rc < 0 && forced) {
			qemu_diag(p);
			return fail("--accel kvm: %s", p->why);
		}
	}
	if (rc < 0) {
		progress("peer: booting the QEMU guest on TCG");
		rc = qemu_boot(p, "tcg", PEER_BOOT_MS, &boot_ns);
		if (rc < 0) {
			qemu_diag(p);
			return fail("the QEMU guest did not come up on TCG: %s", strerror(-rc));
		}
		p->accel = "tcg";
	}
	progress("%s", "");
	note(p->o, "QEMU template booted on %s in %.2f s (boot to the first answer of /init)",
	     p->accel, boot_ns / 1e9);
	if ((rc = qemu_snapshot(p)) < 0) {
		qemu_diag(p);
		qemu_stop(p);
		return fail("the QEMU snapshot (migration to %s) failed", p->mig);
	}
	return 0;
}

/* ---------------------------------------------------------------- forkvm */

static pid_t spawn_forkvm(const char *const *args)
{
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(null, 0);
		dup2(null, 1);
		execv(args[0], (char *const *)(uintptr_t)args);
		_exit(127);
	}
	return pid;
}

/* Boots the default agent guest, pings it, pauses it and snapshots it to
 * p->fsnap (as forkbench restore does). */
static int forkvm_template(struct peer *p, uint64_t mem)
{
	char agent[300], cpus[64], msize[64], body[300];
	const char *args[] = { p->o->forkvm, "--api-socket", p->fapi, "--kernel", p->o->agent,
			       "--agent", agent, "--cpus", cpus, "--memory", msize,
			       "--serial", "off", NULL };
	struct agent_client *c;
	json_t *r;
	int st, rc = -1;

	snprintf(agent, sizeof(agent), "socket=%s", p->fagent);
	snprintf(cpus, sizeof(cpus), "boot=%s", p->o->cpus);
	snprintf(msize, sizeof(msize), "size=%llu", (unsigned long long)mem);
	snprintf(body, sizeof(body), "{\"destination_url\": \"file://%s\"}", p->fsnap);
	pid_t pid = spawn_forkvm(args);
	int fd = connect_fast(p->fagent, 30000);
	if (fd < 0 || agent_client_from_fd(fd, &c) < 0) {
		fail("forkvm: cannot reach the agent (%s)", p->o->forkvm);
		goto out;
	}
	rc = agent_client_ping(c, 30000, &r);
	agent_client_close(c);
	if (rc < 0) {
		fail("forkvm: the agent did not answer");
		goto out;
	}
	json_decref(r);
	rc = -1;
	if (api_put(p->fapi, "/api/v1/vm.pause", NULL, &st) < 0 || st != 204 ||
	    api_put(p->fapi, "/api/v1/vm.snapshot", body, &st) < 0 || st != 204) {
		fail("forkvm: pause or snapshot failed");
		goto out;
	}
	rc = 0;
out:
	stop_vm(pid);
	unlink(p->fapi);
	unlink(p->fagent);
	return rc;
}

enum { F_PAUSED, F_ANSWER, F_N };

/* One restore: spawn forkvm --restore (paused) -> API up -> agent
 * connected -> vm.resume -> the agent's first answer; t[] from the spawn. */
static int forkvm_restore(struct peer *p, uint64_t t[F_N])
{
	char src[300], agent[300];
	const char *args[] = { p->o->forkvm, "--api-socket", p->fapi, "--restore", src,
			       "--agent", agent, NULL };
	struct agent_client *c = NULL;
	json_t *r;
	int st, rc = -1;

	snprintf(src, sizeof(src), "source_url=file://%s", p->fsnap);
	snprintf(agent, sizeof(agent), "socket=%s", p->fagent);
	unlink(p->fapi);
	unlink(p->fagent);
	uint64_t t0 = time_mono_ns();
	pid_t pid = spawn_forkvm(args);
	if (wait_paused(p->fapi, PEER_STEP_MS) < 0) {
		fail("forkvm: the restored VM did not come up paused");
		goto out;
	}
	t[F_PAUSED] = time_mono_ns() - t0;
	int fd = connect_fast(p->fagent, 30000);
	if (fd < 0 || agent_client_from_fd(fd, &c) < 0) {
		fail("forkvm: cannot reach the restored agent");
		goto out;
	}
	if (api_put(p->fapi, "/api/v1/vm.resume", NULL, &st) < 0 || st != 204 ||
	    agent_client_ping(c, 30000, &r) < 0) {
		fail("forkvm: no answer after resume");
		goto out;
	}
	t[F_ANSWER] = time_mono_ns() - t0;
	json_decref(r);
	rc = 0;
out:
	agent_client_close(c);
	stop_vm(pid);
	return rc;
}

/* ---------------------------------------------------------------- forkvm, Linux */

/* Why forkvm's Linux guest is not measured here ("" when it is). */
static const char *linux_skip_reason(void)
{
	/* PVM (kvm_pvm) emulates guest ring 0 about 1000 times slower than
	 * hardware: a kernel does not boot in minutes. */
	if (access("/sys/module/kvm_pvm", F_OK) == 0)
		return "PVM's /dev/kvm runs a Linux kernel about 1000 times slower than hardware";
	return "";
}

/* Boots QEMU's guest under forkvm (the same kernel, initramfs and command
 * line; ttyS0 on a socket, which now takes input), waits for its first
 * answer, pauses it and snapshots it to p->lsnap. *boot_ns: spawn to the
 * first answer. */
static int linux_template(struct peer *p, uint64_t mem, uint64_t *boot_ns)
{
	char cpus[64], msize[64], serial[200], body[300];
	const char *args[] = { p->o->forkvm, "--api-socket", p->fapi, "--kernel", p->kernel,
			       "--initramfs", p->initrd, "--cmdline", "console=ttyS0 panic=-1",
			       "--cpus", cpus, "--memory", msize, "--serial", serial, NULL };
	int st, rc;

	snprintf(cpus, sizeof(cpus), "boot=%s", p->o->cpus);
	snprintf(msize, sizeof(msize), "size=%llu", (unsigned long long)mem);
	snprintf(serial, sizeof(serial), "socket=%s", p->lserial);
	snprintf(body, sizeof(body), "{\"destination_url\": \"file://%s\"}", p->lsnap);
	unlink(p->fapi);
	unlink(p->lserial);
	uint64_t t0 = time_mono_ns(), deadline = t0 + PEER_LINUX_BOOT_MS * 1000000ULL;
	pid_t pid = spawn_forkvm(args);
	p->slen = 0;
	p->ser_fd = connect_child(p->lserial, pid, deadline);
	rc = p->ser_fd < 0 ? p->ser_fd : serial_wait(p, PEER_READY, deadline);
	if (rc == 0)
		rc = serial_ping(p, "warm-up", deadline);
	*boot_ns = time_mono_ns() - t0;
	if (rc < 0)
		fail("forkvm: the Linux guest did not answer on ttyS0: %s", strerror(-rc));
	else if (api_put(p->fapi, "/api/v1/vm.pause", NULL, &st) < 0 || st != 204 ||
		 api_put(p->fapi, "/api/v1/vm.snapshot", body, &st) < 0 || st != 204)
		rc = fail("forkvm: pause or snapshot of the Linux guest failed");
	if (p->ser_fd >= 0)
		close(p->ser_fd);
	p->ser_fd = -1;
	stop_vm(pid);
	return rc;
}

/* One restore of the Linux guest: spawn forkvm --restore (paused) -> API
 * up -> ttyS0 connected -> vm.resume -> the first "pong" on ttyS0. */
static int linux_restore(struct peer *p, uint64_t t[F_N])
{
	char src[300], serial[200];
	const char *args[] = { p->o->forkvm, "--api-socket", p->fapi, "--restore", src,
			       "--serial", serial, NULL };
	int st, rc = -1;

	snprintf(src, sizeof(src), "source_url=file://%s", p->lsnap);
	snprintf(serial, sizeof(serial), "socket=%s", p->lserial);
	unlink(p->fapi);
	unlink(p->lserial);
	uint64_t t0 = time_mono_ns();
	pid_t pid = spawn_forkvm(args);
	if (wait_paused(p->fapi, PEER_STEP_MS) < 0) {
		fail("forkvm: the restored Linux guest did not come up paused");
		goto out;
	}
	t[F_PAUSED] = time_mono_ns() - t0;
	p->ser_fd = connect_child(p->lserial, pid, time_mono_ns() + PEER_STEP_MS * 1000000ULL);
	if (p->ser_fd < 0 || api_put(p->fapi, "/api/v1/vm.resume", NULL, &st) < 0 || st != 204 ||
	    serial_ping(p, "restored", time_mono_ns() + PEER_STEP_MS * 1000000ULL) < 0) {
		fail("forkvm: no answer from the restored Linux guest");
		goto out;
	}
	t[F_ANSWER] = time_mono_ns() - t0;
	rc = 0;
out:
	if (p->ser_fd >= 0)
		close(p->ser_fd);
	p->ser_fd = -1;
	stop_vm(pid);
	return rc;
}

/* forkvm on QEMU's Linux guest: the template, then total restores; l[]
 * the samples after the warm-ups. Returns 0, or -1 when it could not be
 * measured (why says why; the rest of peer goes on). */
static int linux_side(struct peer *p, uint64_t mem, int total, uint64_t *l[F_N], uint64_t *boot_ns,
		      char *why, size_t whylen)
{
	const char *skip = linux_skip_reason();
	if (*skip) {
		snprintf(why, whylen, "%s", skip);
		return -1;
	}
	if (linux_template(p, mem, boot_ns) < 0) {
		snprintf(why, whylen, "its boot or snapshot failed (see above)");
		return -1;
	}
	for (int i = 0; i < total; i++) {
		uint64_t t[F_N];
		if (linux_restore(p, t) < 0) {
			snprintf(why, whylen, "a restore failed (see above)");
			return -1;
		}
		if (i >= p->o->warmup)
			for (int k = 0; k < F_N; k++)
				l[k][i - p->o->warmup] = t[k];
	}
	return 0;
}

/* ---------------------------------------------------------------- command */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* out = dir/name; "" when it does not fit (every later step then fails). */
static void join(char *out, size_t len, const char *dir, const char *name)
{
	if ((size_t)snprintf(out, len, "%s/%s", dir, name) >= len)
		out[0] = '\0';
}

/* $FORKBENCH_CACHE, else /var/cache/forkbench (root) or
 * ${XDG_CACHE_HOME:-~/.cache}/forkbench; then /peer. */
static void cache_dir(char *out, size_t len)
{
	const char *env = getenv("FORKBENCH_CACHE"), *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	if (env && *env)
		snprintf(out, len, "%s/peer", env);
	else if (geteuid() == 0)
		snprintf(out, len, "/var/cache/forkbench/peer");
	else if (xdg && *xdg)
		snprintf(out, len, "%s/forkbench/peer", xdg);
	else
		snprintf(out, len, "%s/.cache/forkbench/peer", home ? home : "/tmp");
}

/* Runs prepare_sh; returns its exit status (0, 77 or another failure). */
static int prepare(struct peer *p)
{
	int status;
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(2, 1); /* apt's chatter goes with the messages, off the figures */
		execl("/bin/sh", "sh", "-c", prepare_sh, "sh", p->cache, peer_init, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

/* The first line of `qemu-system-x86_64 --version`. */
static void qemu_version(char *out, size_t len)
{
	FILE *f = popen(PEER_QEMU " --version 2>/dev/null", "r");
	snprintf(out, len, "%s", "unknown version");
	if (f) {
		if (fgets(out, (int)len, f))
			out[strcspn(out, "\n")] = '\0';
		pclose(f);
	}
}

static uint64_t p50(const uint64_t *sorted, int n)
{
	return sorted[(int)(0.5 * (n - 1) + 0.5)];
}

int cmd_peer(const struct opts *o)
{
	static struct peer pp; /* large buffers: not on the stack */
	struct peer *p = &pp;
	int total = o->samples + o->warmup, rc = 1, fd;
	uint64_t *q[Q_N] = { 0 }, *f[F_N] = { 0 }, *l[F_N] = { 0 }, mem, lboot = 0;
	char lwhy[200] = "";
	char version[256], what[128];

	memset(p, 0, sizeof(*p));
	p->o = o;
	p->qmp_fd = p->ser_fd = -1;
	if (o->accel && strcmp(o->accel, "auto") && strcmp(o->accel, "kvm") &&
	    strcmp(o->accel, "tcg")) {
		fail("--accel must be auto, kvm or tcg");
		return 2;
	}
	if (o->samples < 1 || o->warmup < 0 || parse_size(o->memory, &mem) < 0 || mem % MiB ||
	    mem < 16 * MiB) {
		fail("bad -n, --warmup or --memory (a whole number of MiB, at least 16M)");
		return 2;
	}
	if (o->prepare) {
		cache_dir(p->cache, sizeof(p->cache));
		int prc = prepare(p);
		if (prc == 0)
			printf("forkbench peer: cache ready in %s\n", p->cache);
		return prc == 0 || prc == PEER_SKIP ? prc : (fail("preparing %s failed", p->cache), 1);
	}
	/* forkvm's side needs /dev/kvm whatever QEMU does. */
	if ((fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0) {
		fail("/dev/kvm: %s: forkvm cannot run here; skipped", strerror(errno));
		return PEER_SKIP;
	}
	close(fd);
	cache_dir(p->cache, sizeof(p->cache));
	int prc = prepare(p);
	if (prc != 0)
		return prc == PEER_SKIP ? PEER_SKIP : (fail("preparing %s failed", p->cache), 1);
	join(p->kernel, sizeof(p->kernel), p->cache, "kernel-package");
	char *kp = NULL;
	size_t kl = 0;
	snprintf(p->kpkg, sizeof(p->kpkg), "%s", "linux-image-cloud-amd64");
	if (file_read_all(p->kernel, 4096, &kp, &kl) == 0 && kl > 1) {
		kp[strcspn(kp, "\n")] = '\0';
		snprintf(p->kpkg, sizeof(p->kpkg), "%s", kp);
	}
	free(kp);
	join(p->kernel, sizeof(p->kernel), p->cache, "vmlinuz");
	join(p->initrd, sizeof(p->initrd), p->cache, PEER_INITRAMFS);
	snprintf(p->size, sizeof(p->size), "%lluM", (unsigned long long)(mem / MiB));
	snprintf(p->dir, sizeof(p->dir), "/tmp/forkbench-peer-XXXXXX");
	if (!mkdtemp(p->dir))
		return fail("mkdtemp: %s", strerror(errno)), 1;
	join(p->mem, sizeof(p->mem), p->dir, "guest-ram");
	join(p->mig, sizeof(p->mig), p->dir, "state.mig");
	join(p->serial, sizeof(p->serial), p->dir, "serial.sock");
	join(p->qmp, sizeof(p->qmp), p->dir, "qmp.sock");
	join(p->log, sizeof(p->log), p->dir, "qemu.log");
	join(p->fsnap, sizeof(p->fsnap), p->dir, "forkvm-snap");
	join(p->fapi, sizeof(p->fapi), p->dir, "api.sock");
	join(p->fagent, sizeof(p->fagent), p->dir, "agent.sock");
	join(p->lsnap, sizeof(p->lsnap), p->dir, "forkvm-linux-snap");
	join(p->lserial, sizeof(p->lserial), p->dir, "forkvm-serial.sock");
	for (int k = 0; k < Q_N; k++)
		if (!(q[k] = calloc((size_t)total, sizeof(uint64_t))))
			goto out;
	for (int k = 0; k < F_N; k++)
		if (!(f[k] = calloc((size_t)total, sizeof(uint64_t))) ||
		    !(l[k] = calloc((size_t)total, sizeof(uint64_t))))
			goto out;

	/* forkvm first: it fails fast if something is wrong with the build. */
	if (forkvm_template(p, mem) < 0)
		goto out;
	for (int i = 0; i < total; i++) {
		uint64_t t[F_N];
		if (forkvm_restore(p, t) < 0)
			goto out;
		if (i >= o->warmup)
			for (int k = 0; k < F_N; k++)
				f[k][i - o->warmup] = t[k];
	}

	bool linux_ok = linux_side(p, mem, total, l, &lboot, lwhy, sizeof(lwhy)) == 0;

	qemu_version(version, sizeof(version));
	if (qemu_template(p) < 0)
		goto out;
	for (int i = 0; i < total; i++) {
		uint64_t t[Q_N];
		if (qemu_restore(p, i, t) < 0)
			goto out;
		if (i >= o->warmup)
			for (int k = 0; k < Q_N; k++)
				q[k][i - o->warmup] = t[k];
	}

	if (!strcmp(p->accel, "kvm"))
		snprintf(what, sizeof(what), "KVM");
	else if (p->why[0])
		snprintf(what, sizeof(what), "TCG, not KVM: %.100s", p->why);
	else
		snprintf(what, sizeof(what), "TCG (--accel tcg)");
	note(o, "QEMU accelerator: %s", what);
	note(o, "QEMU: %s, machine pc, %s RAM, %s vCPU(s)", version, p->size, o->cpus);
	note(o, "QEMU guest: %s (Debian's cloud kernel), busybox /init answering on ttyS0; "
		"migration file %lld KiB (RAM stays in the memory file: x-ignore-shared)",
	     p->kpkg, (long long)p->mig_kib);
	note(o, "QEMU restore: -incoming defer -S, memory-backend-file share=off, "
		"migrate-incoming exec:cat, cont; then a line on the serial port (docs/peer.md)");
	note(o, "forkvm: the default agent guest; restore = forkvm --restore (paused), vm.resume, "
		"agent ping");
	snprintf(what, sizeof(what), "qemu-%s: spawn to QMP ready", p->accel);
	report(what, q[Q_QMP], o->samples, o);
	snprintf(what, sizeof(what), "qemu-%s: spawn to migrated", p->accel);
	report(what, q[Q_MIG], o->samples, o);
	snprintf(what, sizeof(what), "qemu-%s: spawn to cont done", p->accel);
	report(what, q[Q_CONT], o->samples, o);
	snprintf(what, sizeof(what), "qemu-%s: restore to first answer", p->accel);
	report(what, q[Q_ANSWER], o->samples, o);
	report("forkvm: spawn to paused", f[F_PAUSED], o->samples, o);
	report("forkvm: restore to first answer", f[F_ANSWER], o->samples, o);
	if (linux_ok) {
		note(o, "forkvm-linux: QEMU's guest (same kernel, initramfs, command line, RAM and "
			"vCPUs) under forkvm, ttyS0 on --serial socket=; boot to first answer %.1f ms; "
			"restore = forkvm --restore (paused), vm.resume, a line on ttyS0",
		     (double)lboot / 1e6);
		report("forkvm-linux: spawn to paused", l[F_PAUSED], o->samples, o);
		report("forkvm-linux: restore to first answer", l[F_ANSWER], o->samples, o);
		snprintf(what, sizeof(what), "peer: qemu-%s/forkvm-linux restore to answer p50",
			 p->accel);
		figure(o, what,
		       (double)p50(q[Q_ANSWER], o->samples) / (double)p50(l[F_ANSWER], o->samples),
		       "x");
	} else {
		note(o, "forkvm-linux: not measured: %s", lwhy);
	}
	figure(o, "peer: qemu accelerator is kvm", !strcmp(p->accel, "kvm"), "bool");
	snprintf(what, sizeof(what), "peer: qemu-%s/forkvm restore to answer p50", p->accel);
	figure(o, what, (double)p50(q[Q_ANSWER], o->samples) / (double)p50(f[F_ANSWER], o->samples),
	       "x");
	rc = 0;
out:
	qemu_stop(p);
	nftw(p->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	for (int k = 0; k < Q_N; k++)
		free(q[k]);
	for (int k = 0; k < F_N; k++) {
		free(f[k]);
		free(l[k]);
	}
	return rc;
}
