/* tests/integration/test_jail.c - forkd's clone jail, checked from the
 * host through /proc: namespaces of its own, an empty root, no
 * capabilities, an unprivileged uid when configured, a cgroup with the
 * configured limits; and that a jailed clone still answers, snapshots, and
 * serves its agent socket. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "tests/lib/harness.h"

static char *field(const char *text, const char *key)
{
	const char *p = text ? strstr(text, key) : NULL;
	if (!p)
		return NULL;
	p += strlen(key);
	while (*p == ' ' || *p == '\t')
		p++;
	size_t n = strcspn(p, "\n");
	char *s = malloc(n + 1);
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static char *status_of(pid_t pid)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
	return h_read_file(p);
}

static void ns_of(pid_t pid, const char *ns, char *out, size_t len)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/ns/%s", (int)pid, ns);
	ssize_t n = readlink(p, out, len - 1);
	cr_assert_gt(n, 0, "readlink %s", p);
	out[n] = '\0';
}

/* Boots template "j" (128M agent) and forks one clone; returns its JSON. */
static json_t *one_clone(struct h_forkd *d, bool pool)
{
	char *agent = h_payload("agent");
	char body[1024], *resp = NULL;
	snprintf(body, sizeof(body),
		 "{\"name\":\"j\",\"pool\":%d,\"boot\":{\"memory\":{\"size\":%d},\"payload\":{\"kernel\":\"%s\"}}}",
		 pool ? 1 : 0, 128 << 20, agent);
	free(agent);
	int st = h_http(d->sock, "POST", "/v1/templates", body, 60000, &resp);
	cr_assert_eq(st, 201, "%d %s\n%s", st, resp, h_forkd_log(d));
	free(resp);
	if (pool) { /* wait for the shell */
		for (int i = 0; i < 500; i++) {
			h_http(d->sock, "GET", "/v1/templates/j", NULL, 5000, &resp);
			bool ready = strstr(resp, "\"ready\":1") != NULL;
			free(resp);
			if (ready)
				break;
			h_sleep_ms(10);
		}
	}
	st = h_http(d->sock, "POST", "/v1/templates/j/clones", "{}", 30000, &resp);
	cr_assert_eq(st, 201, "%d %s\n%s", st, resp, h_forkd_log(d));
	json_t *j = json_loads(resp, 0, NULL);
	free(resp);
	json_t *c = json_incref(json_array_get(json_object_get(j, "clones"), 0));
	json_decref(j);
	cr_assert(c);
	return c;
}

static void eval_42(const char *dir, const char *agent_sock)
{
	char *fk = h_bin("forkctl"), arg[600], *out = NULL;
	snprintf(arg, sizeof(arg), "--agent=%s", agent_sock);
	const char *argv[] = { fk, arg, "eval", "6*7", NULL };
	cr_assert_eq(h_run(dir, argv, 20000, &out, NULL), 0);
	cr_assert(strstr(out, "42"), "%s", out);
	free(out);
	free(fk);
}

/* Whether forkd put its clones in cgroups: it must wherever a cgroup
 * filesystem is mounted (the KVM lane mounts cgroup2); only a host with
 * none at all (a bare container) lets it run clones without limits. */
static bool forkd_uses_cgroups(struct h_forkd *d)
{
	char *log = h_forkd_log(d);
	bool none = strstr(log, "no usable cgroup") != NULL;
	struct statfs fs;
	bool mounted = (statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) ||
		       access("/sys/fs/cgroup/pids/cgroup.procs", F_OK) == 0 ||
		       access("/sys/fs/cgroup/unified/cgroup.controllers", F_OK) == 0;
	if (none && mounted)
		cr_assert_fail("forkd found no usable cgroup although one is mounted:\n%s", log);
	if (none)
		cr_log_info("no cgroup filesystem on this host: limits not checked");
	free(log);
	return !none;
}

static void check_jailed(struct h_forkd *d, json_t *c, const char *want_uid)
{
	pid_t pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
	const char *id = json_string_value(json_object_get(c, "id"));
	char a[128], b[128];

	/* namespaces: mount, PID, UTS of its own; network and IPC not forkd's */
	static const char *const nss[] = { "mnt", "pid", "uts", "net", "ipc" };
	for (size_t i = 0; i < sizeof(nss) / sizeof(nss[0]); i++) {
		ns_of(pid, nss[i], a, sizeof(a));
		ns_of(d->proc.pid, nss[i], b, sizeof(b));
		cr_assert_str_neq(a, b, "the clone shares forkd's %s namespace", nss[i]);
	}
	char *st = status_of(pid);
	char *nspid = field(st, "NSpid:");
	cr_assert(nspid && strstr(nspid, "\t1") , "NSpid: %s (expected pid 1 in its namespace)", nspid);
	/* no capabilities at all */
	static const char *const caps[] = { "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:" };
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		char *v = field(st, caps[i]);
		cr_assert_str_eq(v, "0000000000000000", "%s %s", caps[i], v);
		free(v);
	}
	char *uid = field(st, "Uid:");
	char want[64];
	snprintf(want, sizeof(want), "%s\t%s\t%s\t%s", want_uid, want_uid, want_uid, want_uid);
	cr_assert_str_eq(uid, want, "Uid: %s", uid);
	free(uid);
	free(nspid);
	free(st);

	/* an empty root: only /dev (with kvm), /proc and the paths to its run
	 * directory and the store */
	char p[128];
	snprintf(p, sizeof(p), "/proc/%d/root", (int)pid);
	DIR *dir = opendir(p);
	cr_assert(dir);
	struct dirent *e;
	int n = 0;
	bool dev = false, proc = false;
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		n++;
		dev |= !strcmp(e->d_name, "dev");
		proc |= !strcmp(e->d_name, "proc");
	}
	closedir(dir);
	cr_assert(dev && proc, "the jail root lacks /dev or /proc");
	cr_assert_leq(n, 4, "the jail root has %d entries", n);
	snprintf(p, sizeof(p), "/proc/%d/root/etc", (int)pid);
	cr_assert_neq(access(p, F_OK), 0, "the host's /etc is visible in the jail");
	snprintf(p, sizeof(p), "/proc/%d/root/dev", (int)pid);
	dir = opendir(p);
	n = 0;
	while (dir && (e = readdir(dir)))
		n += e->d_name[0] != '.';
	if (dir)
		closedir(dir);
	/* KVM: only kvm; the process platform needs no device */
	cr_assert_eq(n, h_on_process() ? 0 : 1, "/dev in the jail has %d entries (%s platform)", n,
		     h_platform());

	/* its cgroup, with the limits (when forkd found a usable hierarchy) */
	snprintf(p, sizeof(p), "/proc/%d/cgroup", (int)pid);
	char *cg = h_read_file(p);
	if (forkd_uses_cgroups(d)) {
		/* v1: .../forkd-PID/ID; v2: .../forkd-PID/clones/ID */
		char v1[64], v2[80];
		snprintf(v1, sizeof(v1), "/forkd-%d/%s\n", (int)d->proc.pid, id);
		snprintf(v2, sizeof(v2), "/forkd-%d/clones/%s\n", (int)d->proc.pid, id);
		/* the clone joins just after it runs: wait for it */
		for (int i = 0; i < 300 && !strstr(cg, v1) && !strstr(cg, v2); i++) {
			free(cg);
			h_sleep_ms(10);
			cg = h_read_file(p);
		}
		cr_assert(strstr(cg, v1) || strstr(cg, v2), "the clone is not in its cgroup:\n%s", cg);
	}
	free(cg);
}

Test(jail, a_clone_is_jailed_and_still_works, .timeout = 120)
{
	H_NEED_GUEST();
	struct h_forkd d;
	const char *extra[] = { "--clone-pids-max", "48", NULL };
	cr_assert_eq(h_forkd_start(&d, NULL, extra, 10000), 0, "%s", h_forkd_log(&d));
	json_t *c = one_clone(&d, false);
	check_jailed(&d, c, "0");
	eval_42(d.dir, json_string_value(json_object_get(c, "agent_socket")));

	/* the limits of its cgroup (v1 on hybrid hosts, v2 elsewhere) */
	if (forkd_uses_cgroups(&d)) {
		char p[512];
		/* pids.max, wherever the hierarchy is */
		snprintf(p, sizeof(p), "/proc/%d/cgroup", (int)json_integer_value(json_object_get(c, "pid")));
		char *cg = h_read_file(p);
		char *line = strstr(cg, "pids:");
		if (!line)
			line = strstr(cg, "0::");
		cr_assert(line, "%s", cg);
		char rel[400];
		sscanf(strchr(line, '/'), "%399s", rel);
		char path[700];
		snprintf(path, sizeof(path), "/sys/fs/cgroup/pids%s/pids.max", rel);
		if (access(path, F_OK) != 0)
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/pids.max", rel);
		char *v = h_read_file(path);
		cr_assert(v, "cannot read %s", path);
		cr_assert_eq(atoi(v), 48, "pids.max %s", v);
		free(v);
		free(cg);
	}

	/* a jailed clone can still snapshot into the store (fork trees) */
	char path[128], *resp = NULL;
	snprintf(path, sizeof(path), "/v1/clones/%s/snapshot", json_string_value(json_object_get(c, "id")));
	int st = h_http(d.sock, "POST", path, "{}", 60000, &resp);
	cr_assert_eq(st, 201, "%d %s", st, resp);
	free(resp);
	json_decref(c);
	h_forkd_stop(&d, 10000);
}

Test(jail, pool_shells_are_jailed_and_run_at_the_normal_policy, .timeout = 120)
{
	H_NEED_GUEST();
	struct h_forkd d;
	cr_assert_eq(h_forkd_start(&d, NULL, NULL, 10000), 0, "%s", h_forkd_log(&d));
	json_t *c = one_clone(&d, true);
	cr_assert(json_is_true(json_object_get(c, "from_pool")));
	check_jailed(&d, c, "0");
	/* restored at SCHED_IDLE, put back by forkd: the clone must not stay idle */
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/sched", (int)json_integer_value(json_object_get(c, "pid")));
	char *s = h_read_file(p), *pol = field(s, "policy");
	cr_assert(pol && strchr(pol, ':') && atoi(strchr(pol, ':') + 1) == 0,
		  "policy %s (0 is SCHED_OTHER)", pol);
	free(pol);
	free(s);
	eval_42(d.dir, json_string_value(json_object_get(c, "agent_socket")));
	json_decref(c);
	h_forkd_stop(&d, 10000);
}

Test(jail, jail_uid_runs_clones_unprivileged, .timeout = 120)
{
	H_NEED_GUEST();
	struct h_forkd d;
	const char *extra[] = { "--jail-uid", "65534", "--jail-gid", "65534", NULL };
	cr_assert_eq(h_forkd_start(&d, NULL, extra, 10000), 0, "%s", h_forkd_log(&d));
	json_t *c = one_clone(&d, false);
	check_jailed(&d, c, "65534");
	eval_42(d.dir, json_string_value(json_object_get(c, "agent_socket")));
	json_decref(c);
	h_forkd_stop(&d, 10000);
}

Test(jail, jail_off_shares_forkds_namespaces, .timeout = 120)
{
	H_NEED_GUEST();
	struct h_forkd d;
	const char *extra[] = { "--jail=off", NULL };
	cr_assert_eq(h_forkd_start(&d, NULL, extra, 10000), 0, "%s", h_forkd_log(&d));
	json_t *c = one_clone(&d, false);
	pid_t pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
	char a[128], b[128];
	ns_of(pid, "mnt", a, sizeof(a));
	ns_of(d.proc.pid, "mnt", b, sizeof(b));
	cr_assert_str_eq(a, b);
	eval_42(d.dir, json_string_value(json_object_get(c, "agent_socket")));
	json_decref(c);
	h_forkd_stop(&d, 10000);
}

Test(jail, bad_jail_options_are_refused)
{
	char *bin = h_bin("forkd"), *err = NULL, *dir = h_tmpdir();
	const char *a1[] = { bin, "--jail=maybe", NULL };
	cr_assert_eq(h_run(dir, a1, 10000, NULL, &err), 2);
	cr_assert(strstr(err, "--jail must be on or off"), "%s", err);
	free(err);
	const char *a2[] = { bin, "--jail-uid", "0", NULL };
	cr_assert_eq(h_run(dir, a2, 10000, NULL, &err), 2);
	cr_assert(strstr(err, "must not be root"), "%s", err);
	free(err);
	const char *a3[] = { bin, "--clone-cpu-weight", "0", NULL };
	cr_assert_eq(h_run(dir, a3, 10000, NULL, &err), 2);
	free(err);
	const char *a4[] = { bin, "--jail=off", "--jail-uid", "65534", NULL };
	cr_assert_eq(h_run(dir, a4, 10000, NULL, &err), 2);
	cr_assert(strstr(err, "needs --jail=on"), "%s", err);
	free(err);
	free(bin);
	h_rmtree(dir);
	free(dir);
}
