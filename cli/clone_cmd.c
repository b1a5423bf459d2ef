/* cli/clone_cmd.c - forkctl fork|invoke|clones|clone|kill|eval --clone|
 * console|metrics|ping: making, calling, listing and watching forkd's
 * clones (docs/forkd-api.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/util.h"
#include "forkd/forkd.h"
#include "store/store.h"

#define INVOKE_TIMEOUT_DEFAULT_MS 10000
#define INVOKE_TIMEOUT_MAX_MS 600000
/* console -f: how often the file is read, and the clone's state polled. */
#define FOLLOW_READ_MS 100
#define FOLLOW_STATE_EVERY 5

/* Elapsed time since created (ms since the epoch) as "5s", "3m12s", "2h5m", "4d3h". */
static void fmt_age(long long created_ms, char *out, size_t len)
{
	long long now_ms = (long long)(time_real_ns() / 1000000u);
	long long s = now_ms > created_ms ? (now_ms - created_ms) / 1000 : 0;

	if (s < 60)
		snprintf(out, len, "%llds", s);
	else if (s < 3600)
		snprintf(out, len, "%lldm%llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(out, len, "%lldh%lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(out, len, "%lldd%lldh", s / 86400, s % 86400 / 3600);
}

/* A clone's state, with how it ended when it exited: "exited(0)", "exited(sig 9)". */
static void fmt_state(const json_t *c, char *out, size_t len)
{
	const char *state = cli_json_str(c, "state", "?");
	const json_t *ex = json_object_get(c, "exit");
	long long v;

	if (strcmp(state, "exited") != 0 || !json_is_object(ex))
		snprintf(out, len, "%s", state);
	else if (cli_json_int(ex, "signal", &v))
		snprintf(out, len, "exited(sig %lld)", v);
	else if (cli_json_int(ex, "status", &v))
		snprintf(out, len, "exited(%lld)", v);
	else
		snprintf(out, len, "exited");
}

/* fork NAME [-n K] [--json] */
int cli_forkd_fork(struct cli_forkd *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME"};
	struct cli_opt opts[] = {
	    {"count", 'n', true, NULL, false},
	    {"json", 0, false, NULL, false},
	    {NULL, 0, false, NULL, false},
	};
	const json_t *list, *c;
	const char *name;
	char path[112];
	uint64_t count = 1;
	json_t *body, *j;
	size_t i;
	int rc;

	fc->cmd.synopsis = "fork NAME [-n K] [--json]";
	rc = cli_parse_args(&fc->cmd, argc, argv, 1, opts, names, 1, 1, &name);
	if (rc || (rc = cli_forkd_check_template_name(fc, name)))
		return rc;
	if (opts[0].seen &&
	    (rc = cli_parse_uint(&fc->cmd, "-n", opts[0].value, 1, FORKD_MAX_COUNT, &count)))
		return rc;
	snprintf(path, sizeof(path), "/v1/templates/%s/clones", name);
	body = json_pack("{s:I}", "count", (json_int_t)count);
	if (!body)
		return cli_fail(NULL, "out of memory");
	if (opts[1].seen) {
		rc = cli_forkd_call_print(fc, "POST", path, body);
		json_decref(body);
		return rc;
	}
	j = cli_forkd_call_list(fc, "POST", path, body, "clones", &list, &rc);
	json_decref(body);
	if (!j)
		return rc;
	json_array_foreach(list, i, c)
	{
		char pid[24], us[24];

		cli_fmt_int(c, "pid", pid, sizeof(pid));
		cli_fmt_int(c, "fork_us", us, sizeof(us));
		printf("%s %s %s %sus\n", cli_json_str(c, "id", "?"), pid,
		       cli_json_str(c, "agent_socket", "-"), us);
	}
	json_decref(j);
	return 0;
}

/* Prints the result of an invoke reply, or the function's error. Returns
 * the exit status. */
static int print_invoke_reply(const struct cli_forkd *fc, const json_t *r)
{
	const json_t *ok = json_object_get(r, "ok"), *result;

	if (!json_is_boolean(ok))
		return cli_fail(fc->cmd.name, "unexpected reply from forkd: no \"ok\"");
	if (!json_is_true(ok)) {
		const json_t *err = json_object_get(r, "error");

		fprintf(stderr, "error: %s: %s\n", cli_json_str(err, "name", "Error"),
			cli_json_str(err, "message", ""));
		return EXIT_FAILURE;
	}
	result = json_object_get(r, "result");
	if (!result) { /* undefined, a function...: JSON has no value for it */
		puts(cli_json_str(r, "type", "undefined"));
		return 0;
	}
	return cli_print_json(result, JSON_COMPACT);
}

/* invoke NAME FN ['JSON-ARGS'] [--timeout MS] [--json] */
int cli_forkd_invoke(struct cli_forkd *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME", "FN", "JSON-ARGS"};
	struct cli_opt opts[] = {
	    {"timeout", 0, true, NULL, false},
	    {"json", 0, false, NULL, false},
	    {NULL, 0, false, NULL, false},
	};
	uint64_t timeout = INVOKE_TIMEOUT_DEFAULT_MS;
	const char *pos[3];
	json_t *body, *args = NULL, *r;
	json_error_t jerr;
	char path[112];
	int rc;

	fc->cmd.synopsis = "invoke NAME FN ['JSON-ARGS'] [--timeout MS] [--json]";
	rc = cli_parse_args(&fc->cmd, argc, argv, 1, opts, names, 2, 3, pos);
	if (rc || (rc = cli_forkd_check_template_name(fc, pos[0])))
		return rc;
	if (!pos[1][0])
		return cli_usage_error(&fc->cmd, "FN is empty");
	if (opts[0].seen &&
	    (rc = cli_parse_uint(&fc->cmd, "--timeout (milliseconds)", opts[0].value, 1,
				 INVOKE_TIMEOUT_MAX_MS, &timeout)))
		return rc;
	if (pos[2]) {
		args = json_loads(pos[2], JSON_DECODE_ANY, &jerr);
		if (!args)
			return cli_usage_error(&fc->cmd,
					       "JSON-ARGS is not valid JSON: %s (at column %d)",
					       jerr.text, jerr.column);
	}
	body = json_pack("{s:s, s:I}", "fn", pos[1], "timeout_ms", (json_int_t)timeout);
	if (!body) {
		json_decref(args);
		return cli_fail(fc->cmd.name, "cannot encode FN (is it valid UTF-8?)");
	}
	if (args)
		json_object_set_new(body, "args", args);
	/* The HTTP wait covers the function's time limit plus making the clone. */
	if (!fc->timeout_given)
		fc->timeout_ms = (int)timeout + CLI_FORKD_TIMEOUT_MS;
	snprintf(path, sizeof(path), "/v1/templates/%s/invoke", pos[0]);
	r = cli_forkd_call_json(fc, "POST", path, body, &rc);
	json_decref(body);
	if (!r)
		return rc;
	if (opts[1].seen) {
		rc = cli_print_json(r, JSON_COMPACT);
		if (!rc && !json_is_true(json_object_get(r, "ok")))
			rc = EXIT_FAILURE;
	} else {
		rc = print_invoke_reply(fc, r);
	}
	json_decref(r);
	return rc;
}

/* clones [--template NAME] [--json] */
int cli_forkd_clones(struct cli_forkd *fc, int argc, char **argv)
{
	struct cli_opt opts[] = {
	    {"template", 't', true, NULL, false},
	    {"json", 0, false, NULL, false},
	    {NULL, 0, false, NULL, false},
	};
	const json_t *list, *c;
	char path[112];
	size_t i;
	int width = 8, rc;
	json_t *j;

	fc->cmd.synopsis = "clones [--template NAME] [--json]";
	rc = cli_parse_args(&fc->cmd, argc, argv, 1, opts, NULL, 0, 0, NULL);
	if (rc)
		return rc;
	if (opts[0].seen && (rc = cli_forkd_check_template_name(fc, opts[0].value)))
		return rc;
	snprintf(path, sizeof(path), "/v1/clones%s%s", opts[0].seen ? "?template=" : "",
		 opts[0].seen ? opts[0].value : "");
	if (opts[1].seen)
		return cli_forkd_call_print(fc, "GET", path, NULL);
	j = cli_forkd_call_list(fc, "GET", path, NULL, "clones", &list, &rc);
	if (!j)
		return rc;
	json_array_foreach(list, i, c) width =
	    MAX(width, (int)MIN(strlen(cli_json_str(c, "template", "?")), (size_t)64));
	printf("%-12s  %-*s  %7s  %-14s  %-4s  %9s  %-8s  %s\n", "ID", width, "TEMPLATE", "PID",
	       "STATE", "FROM", "FORK_US", "AGE", "PLATFORM");
	json_array_foreach(list, i, c)
	{
		const json_t *from = json_object_get(c, "from_pool");
		char pid[24], state[48], us[24], age[32] = "-";
		long long created;

		cli_fmt_int(c, "pid", pid, sizeof(pid));
		cli_fmt_int(c, "fork_us", us, sizeof(us));
		fmt_state(c, state, sizeof(state));
		if (cli_json_int(c, "created_unix_ms", &created))
			fmt_age(created, age, sizeof(age));
		printf("%-12s  %-*s  %7s  %-14s  %-4s  %9s  %-8s  %s\n", cli_json_str(c, "id", "?"),
		       width, cli_json_str(c, "template", "?"), pid, state,
		       !json_is_boolean(from) ? "-"
		       : json_is_true(from)   ? "pool"
					      : "cold",
		       us, age, cli_json_str(c, "platform", "-"));
	}
	json_decref(j);
	return 0;
}

/* GET /v1/clones/ID: the clone, or NULL after printing the error. */
static json_t *get_clone(const struct cli_forkd *fc, const char *id, int *status)
{
	char path[64];

	snprintf(path, sizeof(path), "/v1/clones/%s", id);
	return cli_forkd_call_json(fc, "GET", path, NULL, status);
}

/* clone show|pause|resume ID, kill ID: one request on /v1/clones/ID[/VERB]. */
static int clone_simple(struct cli_forkd *fc, int argc, char **argv, int first, const char *method,
			const char *verb)
{
	static const char *const names[] = {"ID"};
	struct cli_opt opts[] = {{NULL, 0, false, NULL, false}};
	struct http_client_response resp;
	const char *id;
	char path[96];
	json_t *c;
	int rc;

	rc = cli_parse_args(&fc->cmd, argc, argv, first, opts, names, 1, 1, &id);
	if (rc || (rc = cli_forkd_check_clone_id(fc, id)))
		return rc;
	if (!verb) { /* show */
		c = get_clone(fc, id, &rc);
		if (!c)
			return rc;
		rc = cli_print_json(c, JSON_INDENT(2));
		json_decref(c);
		return rc;
	}
	snprintf(path, sizeof(path), "/v1/clones/%s%s%s", id, verb[0] ? "/" : "", verb);
	rc = cli_forkd_call(fc, method, path, NULL, &resp);
	if (!rc)
		http_client_response_free(&resp);
	return rc;
}

/* clone snapshot ID [--tag T] [--json] */
static int clone_snapshot(struct cli_forkd *fc, int argc, char **argv)
{
	static const char *const names[] = {"ID"};
	struct cli_opt opts[] = {
	    {"tag", 't', true, NULL, false},
	    {"json", 0, false, NULL, false},
	    {NULL, 0, false, NULL, false},
	};
	const char *id;
	char path[96];
	json_t *body, *r;
	int rc;

	fc->cmd.synopsis = "clone snapshot ID [--tag T] [--json]";
	rc = cli_parse_args(&fc->cmd, argc, argv, 2, opts, names, 1, 1, &id);
	if (rc || (rc = cli_forkd_check_clone_id(fc, id)))
		return rc;
	if (opts[0].seen && !store_tag_valid(opts[0].value))
		return cli_usage_error(&fc->cmd,
				       "bad tag '%s' (letters, digits, '.', '_', '-'; at most 128)",
				       opts[0].value);
	body = opts[0].seen ? json_pack("{s:s}", "tag", opts[0].value) : json_object();
	if (!body)
		return cli_fail(NULL, "out of memory");
	snprintf(path, sizeof(path), "/v1/clones/%s/snapshot", id);
	r = cli_forkd_call_json(fc, "POST", path, body, &rc);
	json_decref(body);
	if (!r)
		return rc;
	if (opts[1].seen)
		rc = cli_print_json(r, JSON_COMPACT);
	else
		puts(cli_json_str(r, "id", "?"));
	json_decref(r);
	return rc;
}

/* clone show|pause|resume|snapshot ID ...: one clone's subcommands. */
int cli_forkd_clone(struct cli_forkd *fc, int argc, char **argv)
{
	fc->cmd.synopsis = "clone show|pause|resume|snapshot ID ...";
	if (argc < 2)
		return cli_usage_error(&fc->cmd,
				       "missing subcommand (show, pause, resume, snapshot)");
	if (!strcmp(argv[1], "snapshot")) {
		fc->cmd.name = "clone snapshot";
		return clone_snapshot(fc, argc, argv);
	}
	if (!strcmp(argv[1], "show")) {
		fc->cmd.name = "clone show";
		fc->cmd.synopsis = "clone show ID";
		return clone_simple(fc, argc, argv, 2, "GET", NULL);
	}
	if (!strcmp(argv[1], "pause")) {
		fc->cmd.name = "clone pause";
		fc->cmd.synopsis = "clone pause ID";
		return clone_simple(fc, argc, argv, 2, "POST", "pause");
	}
	if (!strcmp(argv[1], "resume")) {
		fc->cmd.name = "clone resume";
		fc->cmd.synopsis = "clone resume ID";
		return clone_simple(fc, argc, argv, 2, "POST", "resume");
	}
	return cli_usage_error(&fc->cmd, "unknown subcommand '%s' (show, pause, resume, snapshot)",
			       argv[1]);
}

/* A clone's string field that must be there (agent_socket, console_log).
 * NULL after printing why not, also when the clone has exited and exited
 * is not acceptable. */
static const char *clone_field(const struct cli_forkd *fc, const json_t *c, const char *id,
			       const char *key, bool exited_ok)
{
	const char *s = json_string_value(json_object_get(c, key));

	if (!exited_ok && !strcmp(cli_json_str(c, "state", ""), "exited")) {
		const char *reason = cli_json_str(json_object_get(c, "exit"), "reason", NULL);

		cli_fail(fc->cmd.name, "clone %s has exited%s%s", id, reason ? ": " : "",
			 reason ? reason : "");
		return NULL;
	}
	if (!s || !s[0])
		cli_fail(fc->cmd.name, "forkd gave no %s for clone %s", key, id);
	return s && s[0] ? s : NULL;
}

/* eval --clone ID 'JS' [--timeout SECONDS]: finds the clone's agent socket,
 * then runs the agent command as forkctl --agent=PATH eval would. */
int cli_forkd_eval(struct cli_forkd *fc, int argc, char **argv)
{
	const char *id = NULL, *sock;
	char **av, secs[32];
	int n = 0, rc;
	json_t *c;

	fc->cmd.synopsis = "eval --clone ID 'JS' [--timeout SECONDS]";
	av = calloc((size_t)argc + 3, sizeof(*av));
	if (!av)
		return cli_fail(NULL, "out of memory");
	av[n++] = argv[0];
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--")) { /* the rest is the agent command's */
			while (i < argc)
				av[n++] = argv[i++];
			break;
		}
		if (!strcmp(argv[i], "--clone")) {
			if (i + 1 >= argc) {
				free(av);
				return cli_usage_error(&fc->cmd, "option '--clone' needs a value");
			}
			id = argv[++i];
		} else if (!strncmp(argv[i], "--clone=", 8)) {
			id = argv[i] + 8;
		} else {
			av[n++] = argv[i];
		}
	}
	if (!id) {
		free(av);
		return cli_usage_error(&fc->cmd,
				       "--clone ID is required (or talk to an agent socket with "
				       "forkctl --agent=PATH eval)");
	}
	if ((rc = cli_forkd_check_clone_id(fc, id))) {
		free(av);
		return rc;
	}
	c = get_clone(fc, id, &rc);
	if (!c) {
		free(av);
		return rc;
	}
	sock = clone_field(fc, c, id, "agent_socket", false);
	if (sock && !strcmp(cli_json_str(c, "state", ""), "paused")) {
		/* Its agent cannot answer: say so rather than time out. */
		cli_fail(fc->cmd.name, "clone %s is paused (forkctl clone resume %s)", id, id);
		sock = NULL;
	}
	if (!sock) {
		json_decref(c);
		free(av);
		return EXIT_FAILURE;
	}
	if (fc->timeout_given) { /* the global --timeout, as for --agent */
		if (fc->timeout_ms < 0)
			snprintf(secs, sizeof(secs), "0");
		else
			snprintf(secs, sizeof(secs), "%.3f", fc->timeout_ms / 1000.0);
		av[n++] = (char *)(uintptr_t) "--timeout";
		av[n++] = secs;
	}
	rc = cli_agent_main(sock, n, av);
	json_decref(c);
	free(av);
	return rc;
}

/* Copies what fd has from *pos to its end to stdout. Returns 0 or -errno. */
static int copy_new(int fd, off_t *pos)
{
	char buf[65536];
	struct stat st;
	ssize_t n;

	if (fstat(fd, &st) == 0 && st.st_size < *pos) { /* truncated: start over */
		*pos = 0;
		if (lseek(fd, 0, SEEK_SET) < 0)
			return -errno;
	}
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
			return -EIO;
		*pos += n;
	}
	return fflush(stdout) == 0 ? 0 : -EIO;
}

/* True when the clone is gone or has exited; errors from forkd end the
 * follow too (*status set). */
static bool clone_ended(const struct cli_forkd *fc, const char *id, int *status)
{
	struct http_client_response resp;
	char path[64];
	const char *state;
	json_t *c;
	bool ended;
	int rc;

	snprintf(path, sizeof(path), "/v1/clones/%s", id);
	rc = http_client_request(fc->socket, "GET", path, NULL, NULL, 0, fc->timeout_ms, &resp);
	if (rc < 0) {
		*status = cli_forkd_connect_error(fc, rc);
		return true;
	}
	if (resp.status == 404) { /* deleted meanwhile */
		http_client_response_free(&resp);
		return true;
	}
	if (resp.status != 200) {
		*status = cli_forkd_error_reply(&resp);
		http_client_response_free(&resp);
		return true;
	}
	c = json_loadb(resp.body, resp.body_len, 0, NULL);
	http_client_response_free(&resp);
	state = cli_json_str(c, "state", "");
	ended = !strcmp(state, "exited");
	json_decref(c);
	return ended;
}

/* console ID [-f] */
int cli_forkd_console(struct cli_forkd *fc, int argc, char **argv)
{
	static const char *const names[] = {"ID"};
	struct cli_opt opts[] = {{"follow", 'f', false, NULL, false},
				 {NULL, 0, false, NULL, false}};
	const struct timespec tick = {0, FOLLOW_READ_MS * 1000000L};
	const char *id, *logpath;
	off_t pos = 0;
	int fd, rc, status = 0;
	json_t *c;

	fc->cmd.synopsis = "console ID [-f]";
	rc = cli_parse_args(&fc->cmd, argc, argv, 1, opts, names, 1, 1, &id);
	if (rc || (rc = cli_forkd_check_clone_id(fc, id)))
		return rc;
	c = get_clone(fc, id, &rc);
	if (!c)
		return rc;
	logpath = clone_field(fc, c, id, "console_log", true);
	if (!logpath) {
		json_decref(c);
		return EXIT_FAILURE;
	}
	fd = open(logpath, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = cli_fail(fc->cmd.name, "cannot open %s: %s", logpath, strerror(errno));
		json_decref(c);
		return rc;
	}
	bool ended = !strcmp(cli_json_str(c, "state", ""), "exited");
	json_decref(c);
	for (unsigned tickno = 1;; tickno++) {
		rc = copy_new(fd, &pos);
		if (rc < 0) {
			status = rc == -EIO ? cli_fail(fc->cmd.name, "cannot write to stdout")
					    : cli_fail(fc->cmd.name, "reading the console log: %s",
						       strerror(-rc));
			break;
		}
		if (!opts[0].seen || ended)
			break;
		nanosleep(&tick, NULL);
		/* When the clone ends, one more read gets its last words. */
		if (tickno % FOLLOW_STATE_EVERY == 0)
			ended = clone_ended(fc, id, &status);
	}
	close(fd);
	return status;
}

/* metrics, and ping (with --forkd): the reply as it is. */
static int cmd_get_raw(struct cli_forkd *fc, int argc, char **argv, const char *path)
{
	struct cli_opt opts[] = {{NULL, 0, false, NULL, false}};
	int rc;

	rc = cli_parse_args(&fc->cmd, argc, argv, 1, opts, NULL, 0, 0, NULL);
	return rc ? rc : cli_forkd_call_print(fc, "GET", path, NULL);
}

/* metrics: forkd's Prometheus text as it is. */
int cli_forkd_metrics(struct cli_forkd *fc, int argc, char **argv)
{
	fc->cmd.synopsis = "metrics";
	return cmd_get_raw(fc, argc, argv, "/v1/metrics");
}

/* ping (with --forkd): forkd's answer as it is. */
int cli_forkd_ping(struct cli_forkd *fc, int argc, char **argv)
{
	fc->cmd.synopsis = "ping";
	return cmd_get_raw(fc, argc, argv, "/v1/ping");
}

/* kill ID: kills the clone and removes it. */
int cli_forkd_kill(struct cli_forkd *fc, int argc, char **argv)
{
	fc->cmd.synopsis = "kill ID";
	return clone_simple(fc, argc, argv, 1, "DELETE", "");
}
