/* cli/forkd_cmd.c - forkctl [--forkd=SOCK] template|fork|invoke|clones|
 * clone|kill|eval --clone|console|metrics|ping: the fork daemon commands'
 * usage text and dispatcher; the commands are in cli/template_cmd.c and
 * cli/clone_cmd.c, their client of forkd in cli/forkd_client.c. */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/forkd_socket.h"
#include "common/util.h"

static const char forkd_usage_text[] =
    "  template add NAME (--snapshot ID|TAG | --boot CONFIG.json [--load SCRIPT.js])\n"
    "               [--pool K] [--json]\n"
    "                               register a template: a snapshot of forkd's store, or\n"
    "                               CONFIG.json booted once, SCRIPT.js loaded, snapshotted;\n"
    "                               prints NAME SNAPSHOT POOL\n"
    "  template ls [--json]         list templates\n"
    "  template show NAME           print a template as JSON\n"
    "  template pool NAME K [--json]\n"
    "                               set the warm pool size (0..256)\n"
    "  template rm NAME [--force]   remove a template (--force kills its live clones)\n"
    "  fork NAME [-n K] [--json]    make K clones (1..1024, default 1); prints per clone\n"
    "                               ID PID AGENT_SOCKET FORK_TIME (request to vCPUs running)\n"
    "  invoke NAME FN ['JSON-ARGS'] [--timeout MS] [--json]\n"
    "                               call FN in a fresh clone, destroyed after; prints the\n"
    "                               result as JSON, or the error FN threw on stderr (exit\n"
    "                               1); --timeout in milliseconds (default 10000)\n"
    "  clones [--template NAME] [--json]\n"
    "                               list clones\n"
    "  clone show ID                print a clone as JSON\n"
    "  clone pause ID, clone resume ID\n"
    "                               stop a clone's vCPUs, start them again\n"
    "  clone snapshot ID [--tag T] [--json]\n"
    "                               snapshot a clone into forkd's store; prints its id\n"
    "  kill ID                      kill a clone and remove it\n"
    "  eval --clone ID 'JS' [--timeout SECONDS]\n"
    "                               evaluate JS in a clone (as --agent=PATH eval)\n"
    "  console ID [-f]              print a clone's console; -f follows it until the\n"
    "                               clone exits\n"
    "  metrics                      print forkd's metrics (Prometheus text)\n"
    "  ping                         check forkd answers (only with --forkd=SOCK: without\n"
    "                               it, ping is the VMM's)\n";

/* Prints the fork daemon commands' lines of the usage text to f. */
void cli_forkd_usage(FILE *f)
{
	fputs(forkd_usage_text, f);
}

static const struct {
	const char *name;
	int (*fn)(struct cli_forkd *fc, int argc, char **argv);
	bool needs_forkd_option; /* the name is also a VMM API command */
} forkd_cmds[] = {
    {"template", cli_forkd_template, false}, {"fork", cli_forkd_fork, false},
    {"invoke", cli_forkd_invoke, false},     {"clones", cli_forkd_clones, false},
    {"clone", cli_forkd_clone, false},	     {"kill", cli_forkd_kill, false},
    {"eval", cli_forkd_eval, false},	     {"console", cli_forkd_console, false},
    {"metrics", cli_forkd_metrics, false},   {"ping", cli_forkd_ping, true},
};

/* True if name is a fork daemon command (ping only with --forkd). */
bool cli_forkd_is_command(const char *name, bool forkd_given)
{
	for (size_t i = 0; i < ARRAY_SIZE(forkd_cmds); i++)
		if (!strcmp(name, forkd_cmds[i].name))
			return forkd_given || !forkd_cmds[i].needs_forkd_option;
	return false;
}

/* Runs the fork daemon command argv[0]. Returns the exit status. */
int cli_forkd_main(const char *socket, int timeout_ms, bool timeout_given, int argc, char **argv)
{
	struct cli_forkd fc = {
	    .socket = socket,
	    .timeout_ms = timeout_given ? timeout_ms : CLI_FORKD_TIMEOUT_MS,
	    .timeout_given = timeout_given,
	    .cmd = {.prog = "forkctl", .usage_prefix = "forkctl [--forkd=SOCK]", .try_help = true},
	};
	char defsock[PATH_MAX];
	int rc;

	if (argc < 1)
		return cli_fail(NULL, "missing forkd command");
	fc.cmd.name = argv[0];
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: forkctl [--forkd=SOCK] [--timeout SECONDS] COMMAND [ARGS]\n"
			       "Fork daemon commands (docs/forkd-api.md):\n%s"
			       "SOCK: --forkd, else %s.\n",
			       forkd_usage_text, FORKD_SOCKET_DEFAULT_HELP);
			return 0;
		}
	}
	if (!fc.socket) {
		if (forkd_socket_default(defsock, sizeof(defsock)) < 0)
			return cli_fail(
			    NULL, "the default forkd socket path is too long: give --forkd=SOCK");
		fc.socket = defsock;
		fc.socket_default = true;
		fc.socket_guessed = !getenv(FORKD_SOCKET_ENV) || !getenv(FORKD_SOCKET_ENV)[0];
	}
	for (size_t i = 0; i < ARRAY_SIZE(forkd_cmds); i++) {
		if (!strcmp(argv[0], forkd_cmds[i].name)) {
			rc = forkd_cmds[i].fn(&fc, argc, argv);
			if (fflush(stdout) != 0 && rc == 0) {
				perror("forkctl: stdout");
				rc = EXIT_FAILURE;
			}
			return rc;
		}
	}
	return cli_fail(NULL, "unknown forkd command '%s'", argv[0]);
}
