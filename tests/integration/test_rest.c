/* tests/integration/test_rest.c - the VMM's REST API over its real Unix
 * socket, driven by forkctl: the ch-remote walkthrough, errors that keep
 * the VMM serving, socket permissions, vmm.shutdown. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tests/lib/harness.h"

#define T_MS 60000

struct env {
	char *dir, *api, *agent;
	struct h_proc vmm;
};

static struct env e;

static void start_empty_vmm(void)
{
	e.dir = h_tmpdir();
	e.api = h_join(e.dir, "api.sock");
	e.agent = h_join(e.dir, "agent.sock");
	char *bin = h_bin("forkvm");
	const char *argv[] = { bin, "--api-socket", e.api, NULL };
	cr_assert_eq(h_spawn(&e.vmm, e.dir, argv), 0);
	free(bin);
	cr_assert(h_wait_path(e.api, 10000), "no API socket");
}

static void teardown(void)
{
	h_kill(&e.vmm);
	if (e.dir)
		h_rmtree(e.dir);
	free(e.dir);
	free(e.api);
	free(e.agent);
	memset(&e, 0, sizeof(e));
}

/* forkctl --api-socket=API args...; returns the status. */
static int ctl(char **out, char **err, const char *a1, const char *a2)
{
	char *bin = h_bin("forkctl");
	char *opt;
	cr_assert(asprintf(&opt, "--api-socket=%s", e.api) > 0);
	const char *argv[] = { bin, opt, a1, a2, NULL };
	int st = h_run(e.dir, argv, T_MS, out, err);
	free(bin);
	free(opt);
	return st;
}

static int agentctl(char **out, char **err, const char *a1, const char *a2, const char *a3)
{
	char *bin = h_bin("forkctl");
	char *opt;
	cr_assert(asprintf(&opt, "--agent=%s", e.agent) > 0);
	const char *argv[] = { bin, opt, a1, a2, a3, NULL };
	int st = h_run(e.dir, argv, T_MS, out, err);
	free(bin);
	free(opt);
	return st;
}

static char *write_config(const char *cpus)
{
	char *agent = h_payload("agent"), *cfg = h_join(e.dir, "vm.json"), *text;
	cr_assert(asprintf(&text,
			   "{\"cpus\": {\"boot_vcpus\": %s}, \"memory\": {\"size\": 268435456},"
			   " \"payload\": {\"kernel\": \"%s\"}, \"serial\": {\"mode\": \"Off\"},"
			   " \"agent\": {\"socket\": \"%s\"}}",
			   cpus, agent, e.agent) > 0);
	cr_assert_eq(h_write_file(cfg, text), 0);
	free(text);
	free(agent);
	return cfg;
}

static char *state_of(void)
{
	char *out = NULL;
	cr_assert_eq(ctl(&out, NULL, "info", NULL), 0);
	json_t *j = json_loads(out, 0, NULL);
	cr_assert(j, "info is not JSON: %s", out);
	char *s = strdup(json_string_value(json_object_get(j, "state")));
	json_decref(j);
	free(out);
	return s;
}

Test(rest, walkthrough_create_boot_pause_resume_shutdown, .fini = teardown, .timeout = 120)
{
	char *out = NULL, *err = NULL, *s;

	H_NEED_GUEST();
	start_empty_vmm();
	cr_assert_eq(ctl(&out, NULL, "ping", NULL), 0);
	cr_assert(strstr(out, "\"version\""), "%s", out);
	free(out);

	/* Nothing to act on yet: clear 4xx errors, exit status 1. */
	cr_assert_eq(ctl(NULL, &err, "info", NULL), 1);
	cr_assert(strstr(err, "no VM is created") && strstr(err, "404"), "%s", err);
	free(err);
	cr_assert_eq(ctl(NULL, &err, "pause", NULL), 1);
	cr_assert(strstr(err, "409"), "%s", err);
	free(err);
	cr_assert_eq(ctl(NULL, &err, "boot", NULL), 1);
	free(err);

	char *cfg = write_config("2");
	cr_assert_eq(ctl(NULL, &err, "create", cfg), 0, "%s", err);
	free(err);
	s = state_of();
	cr_assert_str_eq(s, "Created");
	free(s);
	cr_assert_eq(ctl(NULL, &err, "create", cfg), 1, "a second create must be refused");
	cr_assert(strstr(err, "409"), "%s", err);
	free(err);
	free(cfg);

	cr_assert_eq(ctl(NULL, &err, "boot", NULL), 0, "%s", err);
	free(err);
	s = state_of();
	cr_assert_str_eq(s, "Running");
	free(s);
	cr_assert_eq(agentctl(&out, &err, "eval", "6*7", NULL), 0, "%s", err);
	cr_assert_str_eq(out, "42\n");
	free(out);
	free(err);

	cr_assert_eq(ctl(NULL, NULL, "pause", NULL), 0);
	s = state_of();
	cr_assert_str_eq(s, "Paused");
	free(s);
	cr_assert_eq(ctl(NULL, NULL, "resume", NULL), 0);
	s = state_of();
	cr_assert_str_eq(s, "Running");
	free(s);

	cr_assert_eq(ctl(NULL, NULL, "shutdown", NULL), 0);
	s = state_of();
	cr_assert_str_eq(s, "Shutdown");
	free(s);
	/* The agent socket went with the VM. */
	cr_assert_neq(access(e.agent, F_OK), 0);
	/* Booting again after a shutdown works. */
	cr_assert_eq(ctl(NULL, &err, "boot", NULL), 0, "%s", err);
	free(err);
	cr_assert_eq(agentctl(&out, NULL, "eval", "'again'", NULL), 0);
	cr_assert_str_eq(out, "\"again\"\n");
	free(out);

	cr_assert_eq(ctl(NULL, NULL, "shutdown-vmm", NULL), 0);
	cr_assert_eq(h_wait(&e.vmm, 10000), 0, "forkvm did not exit cleanly after vmm.shutdown");
	cr_assert_neq(access(e.api, F_OK), 0, "the API socket was left behind");
}

Test(rest, socket_is_private, .fini = teardown)
{
	struct stat st;
	start_empty_vmm();
	cr_assert_eq(stat(e.api, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
}

/* Sends raw bytes, returns what the server answered (until it closes or
 * 2 s pass). */
static char *raw(const char *bytes, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct timeval tv = { 2, 0 };
	char *buf = calloc(1, 65536);
	size_t got = 0;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", e.api);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(write(fd, bytes, len), (ssize_t)len);
	for (;;) {
		ssize_t n = read(fd, buf + got, 65535 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		if (strstr(buf, "\r\n\r\n") && strstr(buf, "Connection: close"))
			continue;
	}
	close(fd);
	return buf;
}

Test(rest, bad_requests_get_4xx_and_the_vmm_keeps_serving, .fini = teardown, .timeout = 60)
{
	char *r, *out = NULL;

	start_empty_vmm();
	r = raw("GARBAGE\r\n\r\n", 11);
	cr_assert(strstr(r, "HTTP/1.1 400"), "%s", r);
	free(r);
	const char *wrong_method = "DELETE /api/v1/vm.info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	r = raw(wrong_method, strlen(wrong_method));
	cr_assert(strstr(r, "HTTP/1.1 405") && strstr(r, "\"error\""), "%s", r);
	free(r);
	const char *unknown = "GET /api/v1/vm.nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	r = raw(unknown, strlen(unknown));
	cr_assert(strstr(r, "HTTP/1.1 404"), "%s", r);
	free(r);
	const char *badjson = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n"
			      "Connection: close\r\n\r\n{\"cpus\":[";
	r = raw(badjson, strlen(badjson));
	cr_assert(strstr(r, "HTTP/1.1 400") && strstr(r, "bad JSON"), "%s", r);
	free(r);
	const char *badcfg = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n"
			     "Connection: close\r\n\r\n{\"cpus\":{\"boot_vcpus\":0},\"x\":1}";
	r = raw(badcfg, strlen(badcfg));
	cr_assert(strstr(r, "HTTP/1.1 400") && strstr(r, "unknown field x"), "%s", r);
	free(r);
	char big[4096];
	snprintf(big, sizeof(big),
		 "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
		 64 * 1024 * 1024);
	r = raw(big, strlen(big));
	cr_assert(strstr(r, "HTTP/1.1 413"), "%s", r);
	free(r);
	/* Truncated: the client gives up; the server must not care. */
	const char *trunc = "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{";
	r = raw(trunc, strlen(trunc));
	free(r);
	cr_assert_eq(ctl(&out, NULL, "ping", NULL), 0, "the VMM stopped serving");
	free(out);
	cr_assert_eq(h_wait(&e.vmm, 0), -1, "forkvm exited");
}

Test(rest, forkctl_agent_commands, .fini = teardown, .timeout = 120)
{
	char *out = NULL, *err = NULL;

	H_NEED_GUEST();
	start_empty_vmm();
	char *cfg = write_config("1");
	cr_assert_eq(ctl(NULL, NULL, "create", cfg), 0);
	cr_assert_eq(ctl(NULL, NULL, "boot", NULL), 0);
	free(cfg);

	cr_assert_eq(agentctl(&out, NULL, "wait-ready", NULL, NULL), 0);
	free(out);
	cr_assert_eq(agentctl(&out, NULL, "eval", "[1, 'two', {three: 3}]", NULL), 0);
	cr_assert_str_eq(out, "[1,\"two\",{\"three\":3}]\n");
	free(out);
	char *js = h_join(e.dir, "fns.js");
	h_write_file(js, "function greet(name) { return 'hello ' + name; }\n");
	cr_assert_eq(agentctl(&out, &err, "load", js, NULL), 0, "%s", err);
	cr_assert(strstr(out, "greet"), "%s", out);
	free(out);
	free(err);
	free(js);
	cr_assert_eq(agentctl(&out, NULL, "call", "greet", "[\"forkvm\"]"), 0);
	cr_assert_str_eq(out, "\"hello forkvm\"\n");
	free(out);
	cr_assert_eq(agentctl(&out, NULL, "info", NULL, NULL), 0);
	cr_assert(strstr(out, "\"uptime_ms\"") && strstr(out, "\"ram_total_bytes\""), "%s", out);
	free(out);
	cr_assert_eq(agentctl(NULL, &err, "eval", "null.x", NULL), 1);
	cr_assert(strstr(err, "TypeError"), "%s", err);
	free(err);
	cr_assert_eq(agentctl(NULL, &err, "call", "greet", "{not json"), 2);
	free(err);
	/* A socket nobody listens on: a clear error. */
	char *bin = h_bin("forkctl");
	const char *argv[] = { bin, "--agent=/nonexistent/agent.sock", "--timeout", "1", "ping", NULL };
	int st = h_run(e.dir, argv, T_MS, NULL, &err);
	cr_assert_eq(st, 1, "status %d: %s", st, err);
	cr_assert(strstr(err, "/nonexistent/agent.sock"), "%s", err);
	free(err);
	free(bin);
}

/* utime + stime of pid, in clock ticks. */
static long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	cr_assert(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	cr_assert(p);
	long ut = 0, st = 0;
	/* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt
	 * majflt cmajflt utime stime */
	cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st),
		     2);
	return ut + st;
}

static int connect_api(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", e.api);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Issue 15, failure 1: with its file limit at 24 and 40 idle connections
 * held open, accept fails with EMFILE. The VMM must neither spin on the
 * readable listening socket nor flood its log, and must answer again once
 * the connections go. */
Test(rest, out_of_descriptors_neither_spins_nor_floods_the_log, .fini = teardown, .timeout = 60)
{
	e.dir = h_tmpdir();
	e.api = h_join(e.dir, "api.sock");
	char *bin = h_bin("forkvm"), *log = h_join(e.dir, "vmm.log");
	const char *argv[] = { "/usr/bin/prlimit", "--nofile=24:24", "--", bin, "--api-socket",
			       e.api, "--log-file", log, NULL };
	if (access(argv[0], X_OK) != 0)
		cr_skip_test("prlimit (util-linux) is missing");
	cr_assert_eq(h_spawn(&e.vmm, e.dir, argv), 0);
	cr_assert(h_wait_path(e.api, 10000), "no API socket");
	int fds[40];
	for (int i = 0; i < 40; i++)
		fds[i] = connect_api();
	h_sleep_ms(300);
	long t0 = cpu_ticks(e.vmm.pid);
	h_sleep_ms(2000);
	long used = cpu_ticks(e.vmm.pid) - t0;
	/* spinning burns the whole 2 s (about 200 ticks) */
	cr_assert_lt(used, 40, "forkvm used %ld ticks of CPU in 2 s with no descriptors left", used);
	char *text = h_read_file(log);
	int lines = h_count(text ? text : "", "\n");
	cr_assert_lt(lines, 100, "%d log lines in 2 s:\n%.2000s", lines, text ? text : "");
	cr_assert(text && strstr(text, "out of file descriptors"), "%s", text ? text : "");
	free(text);
	for (int i = 0; i < 40; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	/* serving again */
	int st = -1;
	for (int i = 0; i < 50 && st != 200; i++) {
		st = h_http(e.api, "GET", "/api/v1/vmm.ping", NULL, 2000, NULL);
		if (st != 200)
			h_sleep_ms(100);
	}
	cr_assert_eq(st, 200, "vmm.ping after the connections closed: %d", st);
	free(bin);
	free(log);
}

/* Issue 15, failure 6: agent commands check their input before they wait
 * for the agent socket, say what they wait for, and use the documented
 * --timeout default (60 s, as forkctl's help says). */
Test(rest, agent_commands_check_input_first_and_say_what_they_wait_for, .fini = teardown,
     .timeout = 60)
{
	e.dir = h_tmpdir();
	e.agent = h_join(e.dir, "missing.sock");
	char *out = NULL, *err = NULL;
	uint64_t t0 = 0;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	t0 = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	cr_assert_eq(agentctl(&out, &err, "call", "f", "notjson"), 2, "%s", err);
	cr_assert(strstr(err, "not valid JSON"), "%s", err);
	free(out);
	free(err);
	cr_assert_eq(agentctl(&out, &err, "load", "/nonexistent/handlers.js", NULL), 1, "%s", err);
	cr_assert(strstr(err, "cannot read /nonexistent/handlers.js"), "%s", err);
	free(out);
	free(err);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t t1 = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	cr_assert_lt(t1 - t0, 10000, "bad input waited for the socket (%llu ms)",
		     (unsigned long long)(t1 - t0));
	cr_assert_eq(agentctl(&out, &err, "eval", "1", "--timeout=1"), 1, "%s", err);
	cr_assert(strstr(err, "waiting up to 1.0 s for the agent socket"), "%s", err);
	free(out);
	free(err);
	/* the documented default */
	char *bin = h_bin("forkctl");
	const char *help[] = { bin, "--agent=/x", "help", NULL };
	cr_assert_eq(h_run(e.dir, help, 10000, &out, NULL), 0);
	cr_assert(strstr(out, "default 60"), "%s", out);
	free(out);
	const char *mainhelp[] = { bin, "--help", NULL };
	cr_assert_eq(h_run(e.dir, mainhelp, 10000, &out, NULL), 0);
	cr_assert(strstr(out, "--timeout SECONDS   request timeout (default 60"), "%s", out);
	free(out);
	free(bin);
}
