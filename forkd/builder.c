/* forkd/builder.c - registering a template without blocking the daemon: a
 * child process does the slow part (for "boot": run forkvm, wait for the
 * agent, load the script, pause, snapshot into the store; then, for both
 * kinds, materialize the memory image) and reports on a pipe; forkd then
 * opens the template from the now cached image. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/agent_client.h"
#include "common/log.h"
#include "common/util.h"
#include "forkd/internal.h"

#define BOOT_TIMEOUT_MS 30000
/* A Linux template (its agent on vsock) boots a kernel first: up to a
 * minute in the KVM lane's nested virtualization. */
#define LINUX_BOOT_TIMEOUT_MS 240000
#define LOAD_TIMEOUT_MS 120000

struct builder {
	struct forkd *d;
	pid_t pid;
	int fd;
	char name[FORKD_NAME_MAX + 1];
	unsigned pool;
	struct http_exchange *ex;
	char *out;
	size_t len, cap;
	struct builder *next;
};

/* ------------------------------------------------------------ the child */

struct bctx {
	char dir[4200], api[4300], agent[4300], console[4300], log[4300];
	pid_t vmm;
};

static int api_call(const struct bctx *b, const char *method, const char *path, json_t *body,
		    json_t **reply, char *err, size_t errlen)
{
	struct http_client_response r;
	char *txt = body ? json_dumps(body, JSON_COMPACT) : NULL;
	int rc = http_client_request(b->api, method, path, txt ? "application/json" : NULL, txt,
				     txt ? strlen(txt) : 0, 120000, &r);
	free(txt);
	if (rc < 0) {
		snprintf(err, errlen, "%s %s: %s", method, path, strerror(-rc));
		return -500;
	}
	if (r.status >= 300) {
		json_t *j = json_loads(r.body, 0, NULL);
		const char *e = j ? json_string_value(json_object_get(j, "error")) : NULL;
		snprintf(err, errlen, "%s", e ? e : r.body);
		json_decref(j);
		rc = r.status >= 500 ? -500 : -400;
	} else if (reply) {
		*reply = json_loads(r.body, 0, NULL);
	}
	http_client_response_free(&r);
	return rc;
}

/* Boots boot with forkvm, loads script, snapshots into the store. Returns
 * 0 with the id, or -HTTP status with err. */
static int boot_and_snapshot(struct forkd *d, const char *name, json_t *boot, const char *script,
			     char id[33], char *err, size_t errlen)
{
	struct bctx b = { .vmm = -1 };
	struct agent_client *ac = NULL;
	json_t *reply = NULL;
	int rc;

	snprintf(b.dir, sizeof(b.dir), "%s/build-%s-%d", d->run_dir, name, (int)getpid());
	snprintf(b.api, sizeof(b.api), "%s/api.sock", b.dir);
	snprintf(b.agent, sizeof(b.agent), "%s/agent.sock", b.dir);
	snprintf(b.console, sizeof(b.console), "%s/console.log", b.dir);
	snprintf(b.log, sizeof(b.log), "%s/forkvm.log", b.dir);
	if (mkdir(b.dir, 0700) < 0) {
		snprintf(err, errlen, "cannot create %.300s: %s", b.dir, strerror(errno));
		return -500;
	}
	/* Our channels, whatever the configuration said. */
	json_object_set_new(boot, "agent", json_pack("{s:s}", "socket", b.agent));
	json_object_set_new(boot, "serial", json_pack("{s:s,s:s}", "mode", "File", "file", b.console));
	if (!json_object_get(boot, "hostname"))
		json_object_set_new(boot, "hostname", json_string(name));

	b.vmm = fork();
	if (b.vmm == 0) {
		int fd = open(b.log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		char sc[32], pl[32];
		snprintf(sc, sizeof(sc), "--seccomp=%s", sc_mode_name(d->cfg.seccomp));
		snprintf(pl, sizeof(pl), "--platform=%s", vm_platform_name(d->cfg.platform));
		execl(d->forkvm, "forkvm", "--api-socket", b.api, "--store", d->store, sc, pl,
		      (char *)NULL);
		fprintf(stderr, "cannot run %s: %s\n", d->forkvm, strerror(errno));
		_exit(127);
	}
	if (b.vmm < 0) {
		snprintf(err, errlen, "cannot start forkvm: %s", strerror(errno));
		rc = -500;
		goto out;
	}
	uint64_t deadline = time_mono_ns() + 10000000000ULL;
	struct stat st;
	while (stat(b.api, &st) < 0) {
		if (waitpid(b.vmm, NULL, WNOHANG) == b.vmm || time_mono_ns() > deadline) {
			char *log = NULL;
			size_t len;
			if (file_read_all(b.log, 4096, &log, &len) == 0)
				while (len && log[len - 1] == '\n')
					log[--len] = '\0';
			snprintf(err, errlen, "forkvm (%.300s) did not start: %.500s", d->forkvm,
				 log && *log ? log : "no output");
			free(log);
			b.vmm = -1;
			rc = -500;
			goto out;
		}
		usleep(2000);
	}
	rc = api_call(&b, "PUT", "/api/v1/vm.create", boot, NULL, err, errlen);
	if (rc == 0)
		rc = api_call(&b, "PUT", "/api/v1/vm.boot", NULL, NULL, err, errlen);
	if (rc < 0)
		goto out;
	int boot_ms = json_object_get(boot, "vsock") ? LINUX_BOOT_TIMEOUT_MS : BOOT_TIMEOUT_MS;
	rc = agent_client_connect(b.agent, boot_ms, &ac);
	if (rc == 0)
		rc = agent_client_wait_ready(ac, boot_ms, NULL);
	if (rc < 0) {
		snprintf(err, errlen, "the guest's agent did not become ready: %s (see %.300s)",
			 strerror(-rc), b.console);
		rc = -400;
		goto out;
	}
	if (script) {
		const char *en, *em;
		rc = agent_client_load(ac, script, "template.js", LOAD_TIMEOUT_MS, &reply);
		if (rc < 0) {
			snprintf(err, errlen, "load: the agent did not answer: %s", strerror(-rc));
			rc = -400;
			goto out;
		}
		if (!agent_client_reply_ok(reply, &en, &em)) {
			snprintf(err, errlen, "load: %s: %s", en, em);
			rc = -400;
			goto out;
		}
	}
	agent_client_close(ac);
	ac = NULL;
	rc = api_call(&b, "PUT", "/api/v1/vm.pause", NULL, NULL, err, errlen);
	if (rc < 0)
		goto out;
	char url[300];
	json_t *snapreply = NULL;
	snprintf(url, sizeof(url), "store://forkd.%s", name);
	json_t *body = json_pack("{s:s}", "destination_url", url);
	rc = api_call(&b, "PUT", "/api/v1/vm.snapshot", body, &snapreply, err, errlen);
	json_decref(body);
	if (rc == 0) {
		const char *s = json_string_value(json_object_get(snapreply, "id"));
		if (!s || strlen(s) != 32) {
			snprintf(err, errlen, "vm.snapshot gave no snapshot id");
			rc = -500;
		} else {
			snprintf(id, 33, "%s", s);
		}
	}
	json_decref(snapreply);
out:
	json_decref(reply);
	agent_client_close(ac);
	if (b.vmm > 0) {
		char e2[128];
		if (api_call(&b, "PUT", "/api/v1/vmm.shutdown", NULL, NULL, e2, sizeof(e2)) < 0)
			kill(b.vmm, SIGKILL);
		waitpid(b.vmm, NULL, 0);
	}
	unlink(b.api);
	unlink(b.agent);
	unlink(b.console);
	unlink(b.log);
	rmdir(b.dir);
	return rc;
}

__attribute__((noreturn)) static void builder_child(struct forkd *d, int wfd, const char *name,
							   json_t *boot, const char *script,
							   const char *ref)
{
	char err[1024] = "", id[33] = "";
	struct vm_template *vt = NULL;
	int rc = 0;
	json_t *res;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (wfd != 3 && (dup2(wfd, 3) < 0 || close(wfd) < 0))
		_exit(125);
	syscall(SYS_close_range, 4U, ~0U, 0U);
	log_set_ident("forkd-build");
	if (boot) {
		rc = boot_and_snapshot(d, name, boot, script, id, err, sizeof(err));
		ref = id;
	}
	if (rc == 0) {
		/* Materializes the image (once; cached in the store). */
		rc = vm_template_open(d->store, ref, d->cfg.platform, &vt, err, sizeof(err));
		if (rc == 0)
			vm_template_id(vt, id);
		else
			rc = rc == -ENOENT || rc == -EINVAL ? -404 : -500;
	}
	if (rc == 0)
		res = json_pack("{s:s}", "id", id);
	else
		res = json_pack("{s:i,s:s}", "status", -rc, "error", err);
	char *txt = json_dumps(res, JSON_COMPACT);
	if (txt && write_full(3, txt, strlen(txt)) < 0)
		_exit(1);
	_exit(0);
}

/* ------------------------------------------------------------ forkd side */

static void builder_free(struct forkd *d, struct builder *b)
{
	for (struct builder **pp = &d->builders; *pp; pp = &(*pp)->next) {
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	}
	if (b->fd >= 0) {
		loop_del(d->loop, b->fd);
		close(b->fd);
	}
	free(b->out);
	free(b);
}

static void builder_done(struct builder *b)
{
	struct forkd *d = b->d;
	char err[512] = "";
	json_t *j = b->out ? json_loadb(b->out, b->len, 0, NULL) : NULL;
	const char *id = json_string_value(json_object_get(j, "id"));

	if (!id) {
		const char *e = json_string_value(json_object_get(j, "error"));
		int st = (int)json_integer_value(json_object_get(j, "status"));
		if (st == 404)
			st = 400; /* the request named a snapshot that is not in the store */
		http_respond_error(b->ex, st >= 400 && st < 600 ? st : 500, "template %s: %s", b->name,
				   e ? e : "the template builder process died");
	} else if (forkd_template_find(d, b->name)) {
		http_respond_error(b->ex, 409, "template %s already exists", b->name);
	} else {
		struct template *t;
		int rc = forkd_template_add(d, b->name, id, b->pool, &t, err, sizeof(err));
		if (rc < 0) {
			/* -EINVAL: the snapshot is unfit for a template (400) */
			http_respond_error(b->ex, rc == -EINVAL ? 400 : 500, "template %s: %s", b->name,
					   err);
		} else {
			json_t *tj = forkd_template_json(t);
			http_respond_json(b->ex, 201, tj);
			json_decref(tj);
		}
	}
	json_decref(j);
	builder_free(d, b);
}

static void on_builder(void *arg, uint32_t events)
{
	struct builder *b = arg;
	(void)events;
	for (;;) {
		if (b->cap - b->len < 4096) {
			size_t ncap = b->cap ? b->cap * 2 : 8192;
			char *n = realloc(b->out, ncap);
			if (!n)
				break;
			b->out = n;
			b->cap = ncap;
		}
		ssize_t n = read(b->fd, b->out + b->len, b->cap - b->len - 1);
		if (n > 0) {
			b->len += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
	builder_done(b);
}

int forkd_builder_start(struct forkd *d, const char *name, json_t *boot, const char *script,
			const char *ref, unsigned pool, struct http_exchange *ex, char *err,
			size_t errlen)
{
	struct builder *b = calloc(1, sizeof(*b));
	int p[2];

	if (!b) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		free(b);
		return -errno;
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		builder_child(d, p[1], name, boot, script, ref);
	}
	close(p[1]);
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		free(b);
		snprintf(err, errlen, "fork: %s", strerror(e));
		return -e;
	}
	b->d = d;
	b->pid = pid;
	b->fd = p[0];
	b->pool = pool;
	b->ex = ex;
	snprintf(b->name, sizeof(b->name), "%s", name);
	if (fd_set_nonblock(b->fd) < 0 || loop_add(d->loop, b->fd, EPOLLIN, on_builder, b) < 0) {
		kill(pid, SIGKILL);
		close(b->fd);
		free(b);
		snprintf(err, errlen, "event loop: %s", strerror(errno));
		return -EIO;
	}
	b->next = d->builders;
	d->builders = b;
	return 0;
}

bool forkd_builder_busy(struct forkd *d, const char *name)
{
	for (struct builder *b = d->builders; b; b = b->next)
		if (!strcmp(b->name, name))
			return true;
	return false;
}

void forkd_builders_kill(struct forkd *d)
{
	while (d->builders) {
		struct builder *b = d->builders;
		kill(b->pid, SIGKILL);
		waitpid(b->pid, NULL, 0);
		http_respond_error(b->ex, 503, "forkd is shutting down");
		builder_free(d, b);
	}
}
