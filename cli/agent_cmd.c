/* cli/agent_cmd.c - forkctl --agent=PATH CMD ...: talks to the function
 * guest's agent through the VMM's agent socket (common/agent_client.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "common/agent_client.h"
#include "common/util.h"

#define AGENT_CMD_TIMEOUT_S 60.0 /* forkctl's --timeout default, as documented */

static const char agent_usage_line[] =
	"usage: forkctl --agent=PATH {eval JS | load FILE.js | call NAME [JSON-ARGS] | info | ping"
	" | wait-ready} [--timeout SECONDS]\n";

static const char agent_usage[] =
	"usage: forkctl --agent=PATH COMMAND [ARGS] [--timeout SECONDS]\n"
	"  --timeout SECONDS       limit for connecting plus the request (default 60, 0: none)\n"
	"commands:\n"
	"  eval 'JS'               evaluate JS in the global scope, print the result as JSON\n"
	"  load FILE.js            run a script once (define handlers), print what it defined\n"
	"  call NAME ['JSON-ARGS'] call a global function; an args array is spread\n"
	"  info                    print agent and memory information\n"
	"  ping                    print pong when the agent answers\n"
	"  wait-ready              wait until the agent answers (default timeout 60 s)\n";

struct agent_cmd {
	const char *path;
	const char *name;
	const char *pos[2]; /* positional arguments after the command name */
	int npos;
	int timeout_ms;
	uint64_t deadline_ns;
	/* Read and checked before connecting (bad input fails at once). */
	json_t *args;       /* call's JSON-ARGS */
	char *src;          /* load's script */
	size_t src_len;
};

/* Usage errors: "forkctl: MESSAGE" and the usage line. */
static const struct cli_cmd agent_cli = {.prog = "forkctl", .usage_text = agent_usage_line};

/* Parses "--timeout S" / "--timeout=S" and positional arguments.
 * Returns 0, or CLI_EXIT_USAGE after printing a usage error. */
static int parse_args(struct agent_cmd *cmd, int argc, char **argv)
{
	struct cli_opt opts[] = {{"timeout", 0, true, NULL, false}, {NULL, 0, false, NULL, false}};
	double secs = AGENT_CMD_TIMEOUT_S;
	enum cli_args_kind kind;
	struct cli_args a;
	char *end;

	cli_args_init(&a, argc, argv, 1, opts);
	a.long_only = true; /* "-x": an argument (JS may start with '-') */
	while ((kind = cli_args_next(&a)) != CLI_ARGS_END) {
		if (kind == CLI_ARGS_ARGUMENT) {
			if (cmd->npos >= 2)
				return cli_usage_error(&agent_cli, "too many arguments for %s",
						       cmd->name);
			cmd->pos[cmd->npos++] = a.word;
			continue;
		}
		if (kind == CLI_ARGS_NEEDS_VALUE)
			return cli_usage_error(&agent_cli, "%s needs a number of seconds", a.word);
		if (kind != CLI_ARGS_OPTION)
			return cli_usage_error(&agent_cli, "unknown option %s", a.word);
		/* --timeout: each value given is checked */
		errno = 0;
		secs = strtod(a.value, &end);
		if (errno || end == a.value || *end || !isfinite(secs) || secs < 0 ||
		    secs > 86400.0 * 365)
			return cli_usage_error(
			    &agent_cli, "bad --timeout value '%s' (seconds, e.g. 2.5)", a.value);
	}
	if (secs == 0) { /* as forkctl's own --timeout: 0 waits forever */
		cmd->timeout_ms = -1;
		return 0;
	}
	cmd->timeout_ms = MAX((int)(secs * 1000.0), 1);
	cmd->deadline_ns = time_mono_ns() + (uint64_t)cmd->timeout_ms * 1000000u;
	return 0;
}

/* Milliseconds left of the command's timeout (-1: no timeout). */
static int ms_left(const struct agent_cmd *cmd)
{
	uint64_t now = time_mono_ns();

	if (cmd->timeout_ms < 0)
		return -1;
	return now >= cmd->deadline_ns ? 0 : (int)((cmd->deadline_ns - now) / 1000000u);
}

static int connect_failed(const struct agent_cmd *cmd, int rc)
{
	struct stat st;

	if (rc == -ETIMEDOUT && stat(cmd->path, &st) < 0)
		fprintf(stderr, "forkctl: cannot connect to agent socket %s: %s (gave up after %.1f s)\n",
			cmd->path, strerror(errno), cmd->timeout_ms / 1000.0);
	else if (rc == -ETIMEDOUT)
		fprintf(stderr, "forkctl: cannot connect to agent socket %s: nobody accepts "
				"connections (gave up after %.1f s)\n",
			cmd->path, cmd->timeout_ms / 1000.0);
	else
		fprintf(stderr, "forkctl: cannot connect to agent socket %s: %s\n", cmd->path,
			strerror(-rc));
	return 1;
}

static int request_failed(const struct agent_cmd *cmd, int rc)
{
	if (rc == -ETIMEDOUT)
		fprintf(stderr, "forkctl: %s: no reply from the agent at %s within %.1f s\n",
			cmd->name, cmd->path, cmd->timeout_ms / 1000.0);
	else if (rc == -EPIPE)
		fprintf(stderr, "forkctl: %s: the agent socket %s closed the connection\n",
			cmd->name, cmd->path);
	else if (rc == -EPROTO)
		fprintf(stderr, "forkctl: %s: malformed reply from the agent at %s\n", cmd->name,
			cmd->path);
	else if (rc == -EINVAL)
		fprintf(stderr, "forkctl: %s: cannot encode the request (is the text valid UTF-8?)\n",
			cmd->name);
	else
		fprintf(stderr, "forkctl: %s: %s\n", cmd->name, strerror(-rc));
	return 1;
}

/* Prints value as JSON on one line (flags add indentation). Returns 0 or 1. */
static int print_json(const json_t *value, size_t flags)
{
	char *s = json_dumps(value, flags | JSON_ENCODE_ANY);

	if (!s) {
		fputs("forkctl: cannot print the result\n", stderr);
		return 1;
	}
	puts(s);
	free(s);
	return 0;
}

/* Prints an ok:true reply's result, or the error of an ok:false one.
 * Returns the exit status. */
static int print_reply(const json_t *reply, size_t flags)
{
	const char *name, *msg;
	const json_t *result;

	if (!agent_client_reply_ok(reply, &name, &msg)) {
		fprintf(stderr, "error: %s: %s\n", name, msg);
		return 1;
	}
	result = json_object_get(reply, "result");
	if (!result) { /* undefined, a function...: JSON has no value for it */
		const char *type = json_string_value(json_object_get(reply, "type"));

		puts(type ? type : "undefined");
		return 0;
	}
	return print_json(result, flags);
}

/* load FILE.js and call NAME JSON-ARGS: the file read, the arguments
 * parsed, before connecting: bad input fails at once, not after the
 * agent socket's wait. Returns 0 or the exit status. */
static int prepare(struct agent_cmd *cmd)
{
	if (strcmp(cmd->name, "load") == 0) {
		const char *file = cmd->pos[0];
		int rc = file_read_all(file, AGENT_FRAME_MAX, &cmd->src, &cmd->src_len);
		if (rc < 0) {
			fprintf(stderr, "forkctl: load: cannot read %s: %s\n", file, strerror(-rc));
			return 1;
		}
		if (memchr(cmd->src, '\0', cmd->src_len)) {
			fprintf(stderr, "forkctl: load: %s contains NUL bytes\n", file);
			return 1;
		}
	}
	if (strcmp(cmd->name, "call") == 0 && cmd->npos == 2) {
		json_error_t jerr;
		cmd->args = json_loads(cmd->pos[1], JSON_DECODE_ANY, &jerr);
		if (!cmd->args)
			return cli_usage_error(
			    &agent_cli, "call: JSON-ARGS is not valid JSON: %s (at column %d)",
			    jerr.text, jerr.column);
	}
	return 0;
}

static int cmd_load(struct agent_cmd *cmd, struct agent_client *c, json_t **reply)
{
	const char *file = cmd->pos[0];
	const char *base = strrchr(file, '/');
	int rc = agent_client_load(c, cmd->src, base ? base + 1 : file, ms_left(cmd), reply);

	if (rc == -EINVAL) {
		fprintf(stderr, "forkctl: load: %s is not valid UTF-8\n", file);
		return 1;
	}
	return rc < 0 ? request_failed(cmd, rc) : 0;
}

static int cmd_call(struct agent_cmd *cmd, struct agent_client *c, json_t **reply)
{
	int rc = agent_client_call(c, cmd->pos[0], cmd->args, ms_left(cmd), reply);
	return rc < 0 ? request_failed(cmd, rc) : 0;
}

/* Prints the agent commands' usage text to f. */
void cli_agent_usage(FILE *f)
{
	fputs(agent_usage, f);
}

/* Checks the positional argument count of the command. Returns 0 or 2. */
static int check_arity(const struct agent_cmd *cmd)
{
	static const struct {
		const char *name;
		int min, max;
	} arity[] = {
		{ "eval", 1, 1 }, { "load", 1, 1 }, { "call", 1, 2 },
		{ "info", 0, 0 }, { "ping", 0, 0 }, { "wait-ready", 0, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(arity); i++) {
		if (strcmp(cmd->name, arity[i].name) != 0)
			continue;
		if (cmd->npos < arity[i].min)
			return cli_usage_error(&agent_cli, "%s: missing argument", cmd->name);
		if (cmd->npos > arity[i].max)
			return cli_usage_error(&agent_cli, "%s: too many arguments", cmd->name);
		return 0;
	}
	return cli_usage_error(&agent_cli, "unknown agent command '%s'", cmd->name);
}

/* Runs forkctl --agent=PATH CMD ...; returns the exit status. */
int cli_agent_main(const char *agent_path, int argc, char **argv)
{
	struct agent_cmd cmd = { .path = agent_path };
	struct agent_client *c = NULL;
	json_t *reply = NULL;
	int rc, status;

	if (argc < 1 || !argv[0])
		return cli_usage_error(&agent_cli, "%s", "missing agent command");
	cmd.name = argv[0];
	if (strcmp(cmd.name, "help") == 0 || strcmp(cmd.name, "--help") == 0 ||
	    strcmp(cmd.name, "-h") == 0) {
		fputs(agent_usage, stdout);
		return 0;
	}
	if (!agent_path || !*agent_path)
		return cli_usage_error(&agent_cli, "%s", "--agent=PATH is required");
	status = parse_args(&cmd, argc, argv);
	if (status == 0)
		status = check_arity(&cmd);
	if (status == 0)
		status = prepare(&cmd);
	if (status != 0) {
		json_decref(cmd.args);
		free(cmd.src);
		return status;
	}

	/* Say what is awaited: the socket may come later (a VM booting). */
	if (access(agent_path, F_OK) != 0 && cmd.timeout_ms != 0) {
		if (cmd.timeout_ms < 0)
			fprintf(stderr, "forkctl: waiting for the agent socket %s to appear (no "
					"time limit)\n",
				agent_path);
		else
			fprintf(stderr, "forkctl: waiting up to %.1f s for the agent socket %s to "
					"appear (--timeout)\n",
				cmd.timeout_ms / 1000.0, agent_path);
	}
	rc = agent_client_connect(agent_path, cmd.timeout_ms, &c);
	if (rc < 0) {
		json_decref(cmd.args);
		free(cmd.src);
		return connect_failed(&cmd, rc);
	}

	if (strcmp(cmd.name, "eval") == 0) {
		rc = agent_client_eval(c, cmd.pos[0], ms_left(&cmd), &reply);
		status = rc < 0 ? request_failed(&cmd, rc) : 0;
	} else if (strcmp(cmd.name, "load") == 0) {
		status = cmd_load(&cmd, c, &reply);
	} else if (strcmp(cmd.name, "call") == 0) {
		status = cmd_call(&cmd, c, &reply);
	} else if (strcmp(cmd.name, "info") == 0) {
		rc = agent_client_info(c, ms_left(&cmd), &reply);
		status = rc < 0 ? request_failed(&cmd, rc) : 0;
	} else { /* ping, wait-ready: a ping answers once the agent serves */
		rc = agent_client_ping(c, ms_left(&cmd), &reply);
		if (rc == -EPROTO && reply)
			status = print_reply(reply, 0) ? 1 : request_failed(&cmd, rc);
		else if (rc < 0)
			status = request_failed(&cmd, rc);
		else
			puts(strcmp(cmd.name, "ping") == 0 ? "pong" : "ready");
		json_decref(reply);
		reply = NULL;
	}
	if (status == 0 && reply)
		status = print_reply(reply, strcmp(cmd.name, "info") == 0 ? JSON_INDENT(2) : JSON_COMPACT);
	json_decref(reply);
	json_decref(cmd.args);
	free(cmd.src);
	agent_client_close(c);
	if (fflush(stdout) != 0 && status == 0) {
		perror("forkctl: stdout");
		status = 1;
	}
	return status;
}
