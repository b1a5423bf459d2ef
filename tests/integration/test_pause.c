/* tests/integration/test_pause.c - pause and resume on real KVM: a
 * JavaScript loop stops counting while paused and continues after resume;
 * guests blocked in read, nanosleep and futex waits pause and carry on. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/agent_client.h"
#include "tests/lib/harness.h"

#define T_MS 30000

static struct h_vm vm;

static void teardown(void)
{
	h_vm_stop(&vm);
}

/* Sends one eval request on a raw connection and leaves it unanswered. */
static int send_eval_async(const char *sock, const char *code)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	json_t *req = json_pack("{s:s,s:s,s:s}", "id", "async", "op", "eval", "code", code);
	char *buf;
	size_t len;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	cr_assert(fd >= 0);
	for (int i = 0; i < 1000 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0; i++)
		h_sleep_ms(10);
	cr_assert_eq(agent_frame_encode(req, &buf, &len), 0);
	cr_assert_eq(write(fd, buf, len), (ssize_t)len);
	free(buf);
	json_decref(req);
	return fd;
}

/* The last "tick N" on the console, and whether the ticks so far are
 * exactly 1, 2, 3, ... with no gap or restart. */
static long last_tick(const char *path, bool *contiguous)
{
	char *c = h_read_file(path);
	long last = 0;
	*contiguous = true;
	for (char *p = c; p && (p = strstr(p, "tick ")); p += 5) {
		long n = strtol(p + 5, NULL, 10);
		if (n != last + 1)
			*contiguous = false;
		last = n;
	}
	free(c);
	return last;
}

static long wait_ticks(const char *path, long at_least, int timeout_ms)
{
	bool contiguous;
	long n = 0;
	for (int t = 0; t < timeout_ms; t += 10) {
		n = last_tick(path, &contiguous);
		if (n >= at_least)
			break;
		h_sleep_ms(10);
	}
	return n;
}

static char *info_state(void)
{
	char *body = NULL;
	cr_assert_eq(h_api(&vm, "GET", "/api/v1/vm.info", NULL, &body), 200);
	json_t *j = json_loads(body, 0, NULL);
	char *s = strdup(json_string_value(json_object_get(j, "state")));
	json_decref(j);
	free(body);
	return s;
}

Test(pause, js_loop_stops_and_continues, .fini = teardown, .timeout = 120)
{
	bool contiguous;
	char *state;

	H_NEED_GUEST();
	cr_assert_eq(h_vm_start(&vm, NULL, NULL), 0);
	int fd = send_eval_async(vm.agent,
				 "var n = 0; for (;;) { n++; if (n % 5000 === 0) print('tick ' + n / 5000); }");
	cr_assert_geq(wait_ticks(vm.console, 3, T_MS), 3, "the loop does not count");

	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
	state = info_state();
	cr_assert_str_eq(state, "Paused");
	free(state);
	long at_pause = last_tick(vm.console, &contiguous);
	h_sleep_ms(700);
	long later = last_tick(vm.console, &contiguous);
	cr_assert_eq(later, at_pause, "the count moved while paused: %ld -> %ld", at_pause, later);
	/* Pausing twice is a state error, and the VM stays paused. */
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 409);

	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
	state = info_state();
	cr_assert_str_eq(state, "Running");
	free(state);
	long after = wait_ticks(vm.console, at_pause + 3, T_MS);
	cr_assert_geq(after, at_pause + 3, "the count did not continue after resume");
	last_tick(vm.console, &contiguous);
	cr_assert(contiguous, "the count restarted or skipped across the pause");
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 409);
	close(fd);
}

Test(pause, agent_blocked_in_read, .fini = teardown, .timeout = 120)
{
	struct agent_client *ag;
	json_t *r;

	H_NEED_GUEST();
	cr_assert_eq(h_vm_start(&vm, NULL, (const char *const[]){ "--cpus", "boot=2", NULL }), 0);
	cr_assert_eq(agent_client_connect(vm.agent, T_MS, &ag), 0);
	cr_assert_eq(agent_client_ping(ag, T_MS, &r), 0);
	json_decref(r);
	/* The agent now waits in read(0): pause must not wait for it. */
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
		cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
	}
	/* A request sent while paused is answered after resume (the channel
	 * serves one client at a time: hand it over first). */
	agent_client_close(ag);
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
	int fd = send_eval_async(vm.agent, "print('late ' + (20 + 22)); 1");
	h_sleep_ms(300);
	char *c = h_read_file(vm.console);
	cr_assert(!c || !strstr(c, "late 42"), "the guest ran while paused");
	free(c);
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
	for (int i = 0; i < 1000; i++) {
		c = h_read_file(vm.console);
		if (c && strstr(c, "late 42"))
			break;
		free(c);
		c = NULL;
		h_sleep_ms(10);
	}
	cr_assert(c, "the request sent while paused was not served after resume");
	free(c);
	close(fd);
	cr_assert_eq(agent_client_connect(vm.agent, T_MS, &ag), 0);
	cr_assert_eq(agent_client_eval(ag, "'still alive'", T_MS, &r), 0);
	cr_assert_str_eq(json_string_value(json_object_get(r, "result")), "still alive");
	json_decref(r);
	agent_client_close(ag);
}

Test(pause, nanosleep_and_futex_wait, .fini = teardown, .timeout = 120)
{
	H_NEED_GUEST();
	char *payload = h_payload("blocking");
	const char *extra[] = { "--cpus", "boot=2", "--cmdline", "12 100", NULL };
	cr_assert_eq(h_vm_start(&vm, payload, extra), 0);
	free(payload);
	/* Main thread in a futex wait (pthread_join), the other in nanosleep. */
	cr_assert_geq(wait_ticks(vm.console, 2, T_MS), 2);
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
	bool contiguous;
	long at_pause = last_tick(vm.console, &contiguous);
	h_sleep_ms(2000);
	cr_assert_eq(last_tick(vm.console, &contiguous), at_pause, "ticked while paused");
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
	int st = h_wait(&vm.proc, T_MS);
	cr_assert_eq(st, 0, "payload status %d", st);
	char *c = h_read_file(vm.console);
	cr_assert(c && strstr(c, "tick 12\n"), "console:\n%s", c ? c : "");
	cr_assert(last_tick(vm.console, &contiguous) == 12 && contiguous);
	/* The guest's monotonic clock stood still while paused: 12 ticks of
	 * 100 ms take about 1.2 s of guest time, not 3.2 s. */
	char *d = strstr(c, "done 12 ticks in ");
	cr_assert(d, "console:\n%s", c);
	long ms = strtol(d + strlen("done 12 ticks in "), NULL, 10);
	cr_assert_geq(ms, 1200, "guest time %ld ms", ms);
	cr_assert_lt(ms, 1200 + 1500, "guest time %ld ms includes the 2 s pause", ms);
	free(c);
}
