/* tests/lib/harness.c - see harness.h. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/http.h"

const char *h_build_dir(void)
{
	const char *d = getenv("FORKVM_BUILD");
	return d && *d ? d : "build";
}

const char *h_guest_dir(void)
{
	const char *d = getenv("FORKVM_GUEST");
	return d && *d ? d : "build/guest";
}

const char *h_src_dir(void)
{
	const char *d = getenv("FORKVM_SRC");
	return d && *d ? d : ".";
}

char *h_fmt(const char *f, ...)
{
	va_list ap;
	char *s;
	va_start(ap, f);
	if (vasprintf(&s, f, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

char *h_join(const char *a, const char *b)
{
	char *s;
	if (asprintf(&s, "%s/%s", a, b) < 0)
		abort();
	return s;
}

char *h_bin(const char *name)
{
	char *dir = h_join(h_build_dir(), "bin");
	char *p = h_join(dir, name);
	free(dir);
	return p;
}

char *h_payload(const char *name)
{
	if (!strcmp(name, "agent"))
		return h_join(h_guest_dir(), "agent");
	char *dir = h_join(h_guest_dir(), "payloads");
	char *p = h_join(dir, name);
	free(dir);
	return p;
}

bool h_have_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

const char *h_platform(void)
{
	const char *p = getenv("FORKVM_PLATFORM");
	if (p && !strcmp(p, "kvm"))
		return "kvm";
	if (p && !strcmp(p, "process"))
		return "process";
	return h_have_kvm() ? "kvm" : "process";
}

bool h_on_process(void)
{
	return !strcmp(h_platform(), "process");
}

bool h_can_boot(void)
{
	return h_on_process() || h_have_kvm();
}

bool h_in_lane(void)
{
	const char *l = getenv("FORKVM_LANE");
	return l && *l && strcmp(l, "0") != 0;
}

int h_size(int native, int lane)
{
	return h_in_lane() ? lane : native;
}

const char *h_where(void)
{
	if (h_on_process())
		return h_in_lane() ? "process platform in the KVM lane (under TCG)" : "process platform";
	return h_in_lane() ? "KVM lane (nested SVM under TCG)" : "native KVM";
}

char *h_tmpdir(void)
{
	char *t = strdup("/tmp/forkvm-test-XXXXXX");
	if (!t || !mkdtemp(t))
		abort();
	return t;
}

void h_rmtree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char *p = h_join(dir, e->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			h_rmtree(p);
		else
			unlink(p);
		free(p);
	}
	closedir(d);
	rmdir(dir);
}

/* Forks and execs argv[0] with stdin from /dev/null and stdout/stderr in
 * p->out_path / p->err_path (set by the caller). With pdeathsig the child
 * gets SIGKILL when the calling thread ends. Returns 0 or -1. */
static int spawn_captured(struct h_proc *p, const char *const argv[], bool pdeathsig)
{
	pid_t parent = getpid();

	p->pid = fork();
	if (p->pid < 0)
		return -1;
	if (p->pid == 0) {
		if (pdeathsig && (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent))
			_exit(125);
		int o = open(p->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int n = open("/dev/null", O_RDONLY);
		if (o < 0 || e < 0 || n < 0)
			_exit(126);
		dup2(n, 0);
		dup2(o, 1);
		dup2(e, 2);
		execv(argv[0], (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	return 0;
}

/* The names of captured output files: procN.out, procN.err. */
static int spawn_seq;

static int spawn_in(struct h_proc *p, const char *dir, const char *const argv[], bool pdeathsig)
{
	char name[64];

	memset(p, 0, sizeof(*p));
	snprintf(name, sizeof(name), "proc%d.out", spawn_seq);
	p->out_path = h_join(dir, name);
	snprintf(name, sizeof(name), "proc%d.err", spawn_seq++);
	p->err_path = h_join(dir, name);
	return spawn_captured(p, argv, pdeathsig);
}

int h_spawn(struct h_proc *p, const char *dir, const char *const argv[])
{
	return spawn_in(p, dir, argv, false);
}

int h_spawn_tied(struct h_proc *p, const char *dir, const char *const argv[])
{
	return spawn_in(p, dir, argv, true);
}

static int decode_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return -1;
}

int h_wait(struct h_proc *p, int timeout_ms)
{
	struct timespec ts = { 0, 5 * 1000 * 1000 };
	int st;

	if (p->reaped)
		return p->status;
	for (int waited = 0; timeout_ms < 0 || waited <= timeout_ms; waited += 5) {
		pid_t r = waitpid(p->pid, &st, WNOHANG);
		if (r == p->pid) {
			p->reaped = true;
			p->status = decode_status(st);
			return p->status;
		}
		nanosleep(&ts, NULL);
	}
	return -1;
}

void h_kill(struct h_proc *p)
{
	if (p->pid > 0 && !p->reaped) {
		kill(p->pid, SIGKILL);
		h_wait(p, -1);
	}
	free(p->out_path);
	free(p->err_path);
	p->out_path = p->err_path = NULL;
}

char *h_read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	buf[len] = '\0';
	return buf;
}

int h_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -1;
}

static char *read_or_empty(const char *path)
{
	char *s = path ? h_read_file(path) : NULL;
	return s ? s : strdup("");
}

char *h_stdout(const struct h_proc *p)
{
	return read_or_empty(p->out_path);
}

char *h_stderr(const struct h_proc *p)
{
	return read_or_empty(p->err_path);
}

int h_run(const char *dir, const char *const argv[], int timeout_ms, char **out, char **err)
{
	struct h_proc p;
	int st;

	if (h_spawn(&p, dir, argv) < 0)
		return -1;
	st = h_wait(&p, timeout_ms);
	if (out)
		*out = h_stdout(&p);
	if (err)
		*err = h_stderr(&p);
	if (p.out_path)
		unlink(p.out_path);
	if (p.err_path)
		unlink(p.err_path);
	h_kill(&p);
	return st;
}

int h_count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	struct dirent *de;
	int n = 0;
	if (!d)
		return -1;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

long h_status_field(pid_t pid, const char *field)
{
	char path[64], line[256];
	long v = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, field, strlen(field)))
			v = atol(line + strlen(field));
	if (f)
		fclose(f);
	return v;
}

void h_asan_small_quarantine(void)
{
	const char *old = getenv("ASAN_OPTIONS");
	char buf[1024];
	if (old && strstr(old, "quarantine_size_mb"))
		return;
	snprintf(buf, sizeof(buf), "%s%squarantine_size_mb=1", old ? old : "", old && *old ? ":" : "");
	setenv("ASAN_OPTIONS", buf, 1);
}

void h_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

bool h_wait_path(const char *path, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 5) {
		if (access(path, F_OK) == 0)
			return true;
		h_sleep_ms(5);
	}
	return false;
}

int h_count(const char *hay, const char *needle)
{
	int n = 0;
	size_t l = strlen(needle);
	for (const char *p = hay; l && (p = strstr(p, needle)); p += l)
		n++;
	return n;
}

int h_vm_start(struct h_vm *vm, const char *payload, const char *const extra[])
{
	const char *argv[64];
	char *serial;
	int n = 0;

	memset(vm, 0, sizeof(*vm));
	vm->dir = h_tmpdir();
	vm->api = h_join(vm->dir, "api.sock");
	vm->agent = h_join(vm->dir, "agent.sock");
	vm->console = h_join(vm->dir, "console.log");
	if (asprintf(&serial, "file=%s", vm->console) < 0)
		abort();
	char *agent_opt;
	if (asprintf(&agent_opt, "socket=%s", vm->agent) < 0)
		abort();
	char *bin = h_bin("forkvm");
	char *kernel = payload ? strdup(payload) : h_payload("agent");

	argv[n++] = bin;
	argv[n++] = "--api-socket";
	argv[n++] = vm->api;
	argv[n++] = "--kernel";
	argv[n++] = kernel;
	argv[n++] = "--serial";
	argv[n++] = serial;
	if (!payload) {
		argv[n++] = "--agent";
		argv[n++] = agent_opt;
	}
	for (int i = 0; extra && extra[i] && n < 62; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	int rc = h_spawn(&vm->proc, vm->dir, argv);
	free(bin);
	free(kernel);
	free(serial);
	free(agent_opt);
	if (rc < 0)
		return -1;
	return h_wait_path(vm->api, 10000) ? 0 : -1;
}

void h_vm_stop(struct h_vm *vm)
{
	h_kill(&vm->proc);
	if (vm->dir)
		h_rmtree(vm->dir);
	free(vm->dir);
	free(vm->api);
	free(vm->agent);
	free(vm->console);
	memset(vm, 0, sizeof(*vm));
}

int h_api(struct h_vm *vm, const char *method, const char *path, const char *json, char **body)
{
	struct http_client_response r;
	int rc = http_client_request(vm->api, method, path, json ? "application/json" : NULL, json,
				     json ? strlen(json) : 0, 30000, &r);
	if (rc < 0)
		return rc;
	if (body)
		*body = strdup(r.body ? r.body : "");
	rc = r.status;
	http_client_response_free(&r);
	return rc;
}

/* ------------------------------------------------------------ forkd */

int h_http(const char *sock, const char *method, const char *path, const char *json, int timeout_ms,
	   char **body)
{
	struct http_client_response r;
	int rc = http_client_request(sock, method, path, json ? "application/json" : NULL, json,
				     json ? strlen(json) : 0, timeout_ms, &r);
	if (rc < 0) {
		if (body && asprintf(body, "(request failed: %s)", strerror(-rc)) < 0)
			abort();
		return rc;
	}
	if (body) {
		*body = strdup(r.body ? r.body : "");
		if (!*body)
			abort();
	}
	rc = r.status;
	http_client_response_free(&r);
	return rc;
}

/* waitpid for p up to timeout_ms (negative: forever). Unlike h_wait, a child
 * that someone else reaped (ECHILD) counts as gone, with status -1. Returns
 * true once p is reaped. */
static bool reap(struct h_proc *p, int timeout_ms)
{
	for (int waited = 0; !p->reaped; waited += 5) {
		int st;
		pid_t r = waitpid(p->pid, &st, WNOHANG);
		if (r == p->pid) {
			p->reaped = true;
			p->status = decode_status(st);
		} else if (r < 0 && errno == ECHILD) {
			p->reaped = true;
			p->status = -1;
		} else if (timeout_ms >= 0 && waited >= timeout_ms) {
			return false;
		} else {
			h_sleep_ms(5);
		}
	}
	return true;
}

int h_forkd_start(struct h_forkd *d, const char *dir, const char *const extra[], int timeout_ms)
{
	const char *argv[32];
	int n = 0;

	memset(d, 0, sizeof(*d));
	d->own_dir = !dir;
	d->dir = dir ? strdup(dir) : h_tmpdir();
	if (!d->dir)
		abort();
	d->sock = h_join(d->dir, "forkd.sock");
	d->store = h_join(d->dir, "store");
	d->run = h_join(d->dir, "run");
	d->proc.out_path = h_join(d->dir, "forkd.out");
	d->proc.err_path = h_join(d->dir, "forkd.err");

	char *bin = h_bin("forkd");
	argv[n++] = bin;
	argv[n++] = "--api-socket";
	argv[n++] = d->sock;
	argv[n++] = "--store";
	argv[n++] = d->store;
	argv[n++] = "--run-dir";
	argv[n++] = d->run;
	for (int i = 0; extra && extra[i] && n < 31; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	int rc = spawn_captured(&d->proc, argv, true);
	free(bin);
	if (rc < 0) {
		d->proc.pid = 0;
		return -1;
	}
	for (int waited = 0; waited <= timeout_ms; waited += 20) {
		if (h_wait(&d->proc, 0) >= 0 || d->proc.reaped)
			return -1; /* it exited */
		if (access(d->sock, F_OK) == 0 &&
		    h_http(d->sock, "GET", "/v1/ping", NULL, 5000, NULL) == 200)
			return 0;
		h_sleep_ms(20);
	}
	return -1;
}

char *h_forkd_log(const struct h_forkd *d)
{
	return h_stderr(&d->proc);
}

int h_forkd_stop(struct h_forkd *d, int timeout_ms)
{
	int status = -1;

	if (!d->dir)
		return -1;
	if (d->proc.pid > 0 && !d->proc.reaped)
		kill(d->proc.pid, SIGTERM);
	if (d->proc.pid > 0 && reap(&d->proc, timeout_ms)) {
		status = d->proc.status;
	} else if (d->proc.pid > 0) {
		kill(d->proc.pid, SIGKILL);
		reap(&d->proc, -1);
	}
	free(d->proc.out_path);
	free(d->proc.err_path);
	if (d->own_dir)
		h_rmtree(d->dir);
	free(d->dir);
	free(d->sock);
	free(d->store);
	free(d->run);
	memset(d, 0, sizeof(*d));
	return status;
}

#define SHARED_DIR_ENV "FORKVM_TEST_FORKD_DIR"
#define SHARED_ERR_ENV "FORKVM_TEST_FORKD_ERROR"

static struct {
	pid_t supervisor;
	int control; /* write end: the supervisor stops forkd at its EOF */
} shared = { 0, -1 };

/* The supervisor: starts forkd in dir, reports "ok" or why not on status,
 * waits for EOF on control, stops forkd and removes dir. Never returns. */
static void shared_supervise(const char *dir, const char *const extra[], int control, int status)
{
	struct h_forkd d;
	char buf[4096];
	int rc = h_forkd_start(&d, dir, extra, 30000);

	d.own_dir = true; /* the runner made it for this daemon: ours to remove */
	if (rc == 0) {
		snprintf(buf, sizeof(buf), "ok");
	} else {
		char *log = h_forkd_log(&d);
		size_t l = strlen(log);
		snprintf(buf, sizeof(buf),
			 "forkd (%s) did not answer GET /v1/ping (exit status %d, 127: not found);"
			 " its stderr ends with: %s",
			 d.sock, d.proc.reaped ? d.proc.status : -1, l > 2000 ? log + l - 2000 : log);
		free(log);
	}
	if (write(status, buf, strlen(buf)) < 0) {
		/* the runner went away: stop at once */
	}
	close(status);
	for (;;) {
		ssize_t r = read(control, buf, sizeof(buf));
		if (r == 0 || (r < 0 && errno != EINTR))
			break;
	}
	h_forkd_stop(&d, 20000);
	_exit(0);
}

void h_forkd_shared_begin(const char *const extra[])
{
	int control[2], status[2];
	char *dir = h_tmpdir(), buf[4096];
	size_t len = 0;

	if (pipe2(control, O_CLOEXEC) < 0 || pipe2(status, O_CLOEXEC) < 0)
		abort();
	shared.supervisor = fork();
	if (shared.supervisor < 0)
		abort();
	if (shared.supervisor == 0) {
		close(control[1]);
		close(status[0]);
		shared_supervise(dir, extra, control[0], status[1]);
	}
	close(control[0]);
	close(status[1]);
	shared.control = control[1];
	for (ssize_t r; len < sizeof(buf) - 1; len += (size_t)r) {
		r = read(status[0], buf + len, sizeof(buf) - 1 - len);
		if (r < 0 && errno == EINTR)
			r = 0;
		else if (r <= 0)
			break;
	}
	buf[len] = '\0';
	close(status[0]);
	if (!strcmp(buf, "ok")) {
		setenv(SHARED_DIR_ENV, dir, 1);
		unsetenv(SHARED_ERR_ENV);
	} else {
		unsetenv(SHARED_DIR_ENV);
		setenv(SHARED_ERR_ENV, len ? buf : "the forkd supervisor died", 1);
	}
	free(dir);
}

void h_forkd_shared_end(void)
{
	struct h_proc p = { .pid = shared.supervisor };

	if (shared.control >= 0)
		close(shared.control);
	shared.control = -1;
	if (shared.supervisor > 0 && !reap(&p, 30000)) {
		kill(shared.supervisor, SIGKILL);
		reap(&p, -1);
	}
	shared.supervisor = 0;
}

const char *h_forkd_shared_dir(const char **why)
{
	const char *dir = getenv(SHARED_DIR_ENV);
	if (!dir && why) {
		*why = getenv(SHARED_ERR_ENV);
		if (!*why)
			*why = "h_forkd_shared_begin() was not called (ReportHook(PRE_ALL))";
	}
	return dir;
}
