/* tests/lib/harness.c - see harness.h. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int h_spawn(struct h_proc *p, const char *dir, const char *const argv[])
{
	static int seq;
	char name[64];

	memset(p, 0, sizeof(*p));
	snprintf(name, sizeof(name), "proc%d.out", seq);
	p->out_path = h_join(dir, name);
	snprintf(name, sizeof(name), "proc%d.err", seq++);
	p->err_path = h_join(dir, name);
	p->pid = fork();
	if (p->pid < 0)
		return -1;
	if (p->pid == 0) {
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
