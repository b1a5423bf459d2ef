/* cli/forkctl.c - forkctl's main: a Cloud Hypervisor ch-remote compatible
 * client of the VMM's REST API (--api-socket), and the entry point of the
 * guest agent commands (--agent, see cli/agent_cmd.c), the store commands
 * (cli/store_cmd.c) and the fork daemon commands (--forkd, cli/forkd_cmd.c).
 * Exit status: 0 success, 1 failure (error reply, unreachable socket),
 * 2 usage error. */
#include <errno.h>
#include <getopt.h>
#include <http_parser.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/http.h"
#include "common/util.h"

#ifndef FORKVM_VERSION
#define FORKVM_VERSION "0.1.0"
#endif

#define DEFAULT_TIMEOUT_S 60
#define MAX_CONFIG_BYTES (16 * 1024 * 1024)

/* Global options and the request in flight. */
struct forkctl {
	const char *api_socket;
	const char *agent_socket;
	const char *store;
	const char *forkd_socket;
	int timeout_ms; /* -1: forever */
	const char *cmd;
};

/* Prints the full usage text to f. */
static void usage(FILE *f)
{
	fputs("Usage: forkctl --api-socket=PATH [--timeout SECONDS] COMMAND [ARGS]\n"
	      "       forkctl --agent=PATH AGENT-COMMAND [ARGS]\n"
	      "       forkctl [--store DIR] store STORE-COMMAND [ARGS]\n"
	      "       forkctl [--forkd=SOCK] [--timeout SECONDS] FORKD-COMMAND [ARGS]\n"
	      "       forkctl help [COMMAND] | COMMAND --help | --version\n"
	      "\n"
	      "Controls a forkvm VMM through its REST API (Cloud Hypervisor's ch-remote\n"
	      "syntax), talks to the guest agent, manages the snapshot store, or drives\n"
	      "the fork daemon forkd.\n"
	      "\n"
	      "Options:\n"
	      "  --api-socket=PATH   the VMM's API socket (forkvm --api-socket)\n"
	      "  --agent=PATH        the guest agent socket: run an agent command\n"
	      "  --store DIR         the snapshot store for store commands (default:\n"
	      "                      $FORKVM_STORE, else /var/lib/forkvm/store for root,\n"
	      "                      else ~/.local/share/forkvm/store)\n"
	      "  --forkd=SOCK        the fork daemon's API socket for forkd commands\n"
	      "                      (default, as forkd's own: $FORKD_SOCKET, else\n"
	      "                      /run/forkd/forkd.sock for root, else\n"
	      "                      $XDG_RUNTIME_DIR/forkd/forkd.sock, else\n"
	      "                      /tmp/forkd-UID/forkd.sock)\n"
	      "  --timeout SECONDS   request timeout (default 60, 0: wait forever)\n"
	      "  -h, --help          show this help\n"
	      "  -V, --version       show the version\n"
	      "\n"
	      "API commands:\n"
	      "  ping                         check the VMM answers (GET vmm.ping)\n"
	      "  info                         show the VM's configuration and state (GET vm.info)\n"
	      "  counters                     show the VM's counters (GET vm.counters)\n"
	      "  create FILE.json             create the VM from a JSON configuration (PUT vm.create)\n"
	      "  boot                         boot the created VM (PUT vm.boot)\n"
	      "  pause                        pause the VM (PUT vm.pause)\n"
	      "  resume                       resume the paused VM (PUT vm.resume)\n"
	      "  shutdown                     shut the VM down (PUT vm.shutdown)\n"
	      "  reboot                       shut down and boot again (PUT vm.reboot)\n"
	      "  delete                       forget the VM (PUT vm.delete)\n"
	      "  shutdown-vmm                 stop the VMM process (PUT vmm.shutdown)\n"
	      "  snapshot DEST_URL            snapshot the paused VM: file:///DIR, or\n"
	      "                               store://TAG (the VMM's store; store:// for no tag)\n"
	      "                               (PUT vm.snapshot)\n"
	      "  restore source_url=URL[,resume=true|false]\n"
	      "                               restore a snapshot, resumed or paused\n"
	      "                               (PUT vm.restore)\n"
	      "\n"
	      "Agent commands (with --agent=PATH):\n"
	      "  eval, info, load, call, ping, wait-ready\n"
	      "\n"
	      "Store commands (local, no VMM needed; 'forkctl store help' for details):\n"
	      "  init, put, export, ls, show, tag, rm, gc, verify, du\n"
	      "\n"
	      "Fork daemon commands:\n"
	      "  (with --forkd=SOCK or the default socket; the --timeout SECONDS before\n"
	      "  the command bounds each request, default 60)\n",
	      f);
	cli_forkd_usage(f);
	fputs("\n"
	      "Exit status: 0 on success, 1 on failure (an error reply, an unreachable\n"
	      "socket, a function that threw), 2 on a usage error.\n",
	      f);
}

/* Prints from text the entries of command cmd (a line "  CMD ..." and the
 * more indented lines that continue it), each under a heading: prefix when
 * given, else the last line before it that ends with ':' (its section).
 * Returns how many entries it printed. */
static int help_entries(const char *text, const char *cmd, const char *prefix, FILE *f)
{
	size_t clen = strlen(cmd);
	const char *line = text, *heading = NULL;
	size_t heading_len = 0;
	int found = 0;

	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		const char *next = nl ? nl + 1 : line + len;
		if (len && line[len - 1] == ':' && line[0] != ' ') {
			heading = line;
			heading_len = len;
		} else if (len >= 2 + clen && !strncmp(line, "  ", 2) &&
			   !strncmp(line + 2, cmd, clen) &&
			   (len == 2 + clen || line[2 + clen] == ' ')) {
			if (found)
				fputc('\n', f);
			if (prefix)
				fprintf(f, "%s\n", prefix);
			else if (heading)
				fprintf(f, "%.*s\n", (int)heading_len, heading);
			fprintf(f, "%.*s\n", (int)len, line);
			/* its continuation lines */
			while (*next && !strncmp(next, "    ", 4)) {
				const char *e = strchr(next, '\n');
				size_t l = e ? (size_t)(e - next) : strlen(next);
				fprintf(f, "%.*s\n", (int)l, next);
				next = e ? e + 1 : next + l;
			}
			found++;
		}
		line = next;
	}
	return found;
}

/* forkctl help CMD, forkctl CMD --help: what every section says of CMD
 * (API, agent, store and fork daemon commands share some names). */
static int help_command(const char *cmd)
{
	const struct {
		void (*fn)(FILE *);
		const char *prefix;
	} sections[] = {
		{ usage, NULL },
		{ cli_agent_usage, "Agent command (forkctl --agent=PATH COMMAND [ARGS] [--timeout SECONDS]):" },
		{ cli_store_usage, "Store command (forkctl [--store DIR] store COMMAND [ARGS]):" },
	};
	int found = 0;

	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		char *text = NULL, *out = NULL;
		size_t tlen = 0, olen = 0;
		FILE *t = open_memstream(&text, &tlen), *o = NULL;
		if (!t)
			return EXIT_FAILURE;
		sections[i].fn(t);
		fclose(t);
		o = open_memstream(&out, &olen);
		if (!o) {
			free(text);
			return EXIT_FAILURE;
		}
		int n = help_entries(text, cmd, sections[i].prefix, o);
		fclose(o);
		if (n) {
			if (found)
				putchar('\n');
			fputs(out, stdout);
		}
		found += n;
		free(text);
		free(out);
	}
	if (!found) {
		fprintf(stderr, "forkctl: no command '%s' (forkctl --help lists them)\n", cmd);
		return CLI_EXIT_USAGE;
	}
	return EXIT_SUCCESS;
}

/* Usage errors: "forkctl: MESSAGE" and a hint to stderr. */
static const struct cli_cmd forkctl_cli = {.prog = "forkctl", .try_help = true};

/* Writes body to stdout (pretty-printed if asked and it is JSON), ending
 * with a newline. Prints nothing for an empty body. */
static void print_body(const char *body, size_t len, bool pretty)
{
	if (!len)
		return;
	if (pretty) {
		json_t *j = json_loadb(body, len, JSON_DECODE_ANY, NULL);
		if (j) {
			char *text = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
			json_decref(j);
			if (text) {
				printf("%s\n", text);
				free(text);
				return;
			}
		}
	}
	fwrite(body, 1, len, stdout);
	if (body[len - 1] != '\n')
		putchar('\n');
}

/* Prints the error of a non-2xx reply: its JSON "error" field, or the raw
 * body, or the status text. */
static int report_error_reply(const struct forkctl *fc, const struct http_client_response *resp)
{
	json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
	const char *msg = NULL;
	size_t len;
	int rc;

	if (j && json_is_object(j) && json_is_string(json_object_get(j, "error")))
		msg = json_string_value(json_object_get(j, "error"));
	if (msg) {
		rc = cli_fail(fc->cmd, "%s (HTTP %d)", msg, resp->status);
		json_decref(j);
		return rc;
	}
	json_decref(j);
	len = resp->body_len;
	while (len && (resp->body[len - 1] == '\n' || resp->body[len - 1] == '\r' || resp->body[len - 1] == ' '))
		len--;
	if (len)
		return cli_fail(fc->cmd, "%.*s (HTTP %d)", (int)MIN(len, (size_t)INT_MAX),
				resp->body, resp->status);
	return cli_fail(fc->cmd, "%s (HTTP %d)", http_status_str((enum http_status)resp->status),
			resp->status);
}

/* Sends one API request and reports the outcome. Returns the exit status. */
static int api_call(const struct forkctl *fc, const char *method, const char *endpoint, const char *body,
		    size_t body_len, bool pretty)
{
	struct http_client_response resp;
	char path[128];
	int rc;

	snprintf(path, sizeof(path), "/api/v1/%s", endpoint);
	rc = http_client_request(fc->api_socket, method, path, body ? "application/json" : NULL, body, body_len,
				 fc->timeout_ms, &resp);
	if (rc == -ETIMEDOUT)
		return cli_fail(fc->cmd, "no response from %s within %d s", fc->api_socket,
				fc->timeout_ms / 1000);
	if (rc == -EPROTO)
		return cli_fail(fc->cmd, "malformed HTTP response from %s", fc->api_socket);
	if (rc == -ENOENT || rc == -ECONNREFUSED || rc == -EACCES || rc == -ENOTSOCK || rc == -ENAMETOOLONG)
		return cli_fail(fc->cmd, "cannot connect to the API socket %s: %s", fc->api_socket,
				strerror(-rc));
	if (rc < 0)
		return cli_fail(fc->cmd, "request to the API socket %s failed: %s", fc->api_socket,
				strerror(-rc));
	if (resp.status >= 200 && resp.status < 300) {
		print_body(resp.body, resp.body_len, pretty);
		rc = fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
	} else {
		rc = report_error_reply(fc, &resp);
	}
	http_client_response_free(&resp);
	return rc;
}

/* Sends a JSON object as the body of a PUT. Returns the exit status. */
static int api_put_json(const struct forkctl *fc, const char *endpoint, json_t *obj)
{
	char *text;
	int rc;

	if (!obj)
		return cli_fail(fc->cmd, "out of memory");
	text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (!text)
		return cli_fail(fc->cmd, "out of memory");
	rc = api_call(fc, "PUT", endpoint, text, strlen(text), false);
	free(text);
	return rc;
}

/* create FILE.json: validates the file's JSON, then PUT vm.create with it. */
static int cmd_create(const struct forkctl *fc, const char *file)
{
	json_error_t err;
	char *buf = NULL;
	size_t len = 0;
	json_t *j;
	int rc;

	rc = file_read_all(file, MAX_CONFIG_BYTES, &buf, &len);
	if (rc < 0)
		return cli_fail(fc->cmd, "cannot read %s: %s", file, strerror(-rc));
	j = json_loadb(buf, len, 0, &err);
	if (!j) {
		rc = cli_fail(fc->cmd, "%s:%d:%d: invalid JSON: %s", file, err.line, err.column,
			      err.text);
		goto out;
	}
	if (!json_is_object(j)) {
		rc = cli_fail(fc->cmd, "%s: the VM configuration must be a JSON object", file);
		goto out_json;
	}
	rc = api_call(fc, "PUT", "vm.create", buf, len, false);
out_json:
	json_decref(j);
out:
	free(buf);
	return rc;
}

/* restore source_url=URL[,resume=true|false]: PUT vm.restore. */
static int cmd_restore(const struct forkctl *fc, const char *spec)
{
	static const char hint[] = "expected source_url=URL[,resume=true|false]";
	char *copy = strdup(spec);
	char *save = NULL, *tok;
	const char *url = NULL;
	bool resume = false, have_resume = false;
	int rc;

	if (!copy)
		return cli_fail(fc->cmd, "out of memory");
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');

		if (!eq) {
			rc = cli_usage_error(&forkctl_cli, "restore: '%s' is not key=value (%s)",
					     tok, hint);
			goto out;
		}
		*eq = '\0';
		if (!strcmp(tok, "source_url")) {
			if (url || !eq[1]) {
				rc = cli_usage_error(&forkctl_cli, "restore: %s source_url (%s)",
						     url ? "duplicate" : "empty", hint);
				goto out;
			}
			url = eq + 1;
		} else if (!strcmp(tok, "resume")) {
			if (have_resume) {
				rc = cli_usage_error(&forkctl_cli, "restore: duplicate resume (%s)",
						     hint);
				goto out;
			}
			if (!strcmp(eq + 1, "true") || !strcmp(eq + 1, "on")) {
				resume = true;
			} else if (!strcmp(eq + 1, "false") || !strcmp(eq + 1, "off")) {
				resume = false;
			} else {
				rc = cli_usage_error(
				    &forkctl_cli, "restore: resume must be true or false, not '%s'",
				    eq + 1);
				goto out;
			}
			have_resume = true;
		} else {
			rc = cli_usage_error(&forkctl_cli, "restore: unknown option '%s' (%s)", tok,
					     hint);
			goto out;
		}
	}
	if (!url) {
		rc = cli_usage_error(&forkctl_cli, "restore: missing source_url (%s)", hint);
		goto out;
	}
	rc = api_put_json(fc, "vm.restore", json_pack("{s:s, s:b}", "source_url", url, "resume", resume));
out:
	free(copy);
	return rc;
}

/* An API command that takes no argument. */
struct simple_cmd {
	const char *name;
	const char *method;
	const char *endpoint;
	bool pretty;
};

static const struct simple_cmd simple_cmds[] = {
	{ "ping", "GET", "vmm.ping", false },
	{ "info", "GET", "vm.info", true },
	{ "counters", "GET", "vm.counters", true },
	{ "boot", "PUT", "vm.boot", false },
	{ "pause", "PUT", "vm.pause", false },
	{ "resume", "PUT", "vm.resume", false },
	{ "shutdown", "PUT", "vm.shutdown", false },
	{ "reboot", "PUT", "vm.reboot", false },
	{ "delete", "PUT", "vm.delete", false },
	{ "shutdown-vmm", "PUT", "vmm.shutdown", false },
};

/* Checks that cmd got exactly want arguments. Returns 0 or CLI_EXIT_USAGE. */
static int check_args(const char *cmd, int argc, char **argv, int want, const char *synopsis)
{
	if (argc - 1 < want)
		return cli_usage_error(&forkctl_cli, "%s: missing argument (usage: forkctl %s)",
				       cmd, synopsis);
	if (argc - 1 > want)
		return cli_usage_error(&forkctl_cli,
				       "%s: unexpected argument '%s' (usage: forkctl %s)", cmd,
				       argv[want + 1], synopsis);
	return 0;
}

/* Runs the API command argv[0]. Returns the exit status. */
static int run_api_command(struct forkctl *fc, int argc, char **argv)
{
	int rc;

	fc->cmd = argv[0];
	for (size_t i = 0; i < ARRAY_SIZE(simple_cmds); i++) {
		const struct simple_cmd *sc = &simple_cmds[i];

		if (strcmp(argv[0], sc->name))
			continue;
		rc = check_args(sc->name, argc, argv, 0, sc->name);
		if (rc)
			return rc;
		return api_call(fc, sc->method, sc->endpoint, NULL, 0, sc->pretty);
	}
	if (!strcmp(argv[0], "create")) {
		rc = check_args("create", argc, argv, 1, "create FILE.json");
		return rc ? rc : cmd_create(fc, argv[1]);
	}
	if (!strcmp(argv[0], "snapshot")) {
		rc = check_args("snapshot", argc, argv, 1, "snapshot DEST_URL");
		if (rc)
			return rc;
		if (!argv[1][0])
			return cli_usage_error(&forkctl_cli, "snapshot: empty destination URL");
		return api_put_json(fc, "vm.snapshot", json_pack("{s:s}", "destination_url", argv[1]));
	}
	if (!strcmp(argv[0], "restore")) {
		rc = check_args("restore", argc, argv, 1, "restore source_url=URL[,resume=true|false]");
		return rc ? rc : cmd_restore(fc, argv[1]);
	}
	return cli_usage_error(&forkctl_cli, "unknown command '%s'", argv[0]);
}

/* Parses --timeout's value into fc->timeout_ms. Returns 0 or CLI_EXIT_USAGE. */
static int parse_timeout(struct forkctl *fc, const char *s)
{
	uint64_t secs;

	if (parse_u64(s, 0, 365ULL * 24 * 3600, &secs) < 0)
		return cli_usage_error(&forkctl_cli, "--timeout: '%s' is not a number of seconds",
				       s);
	if (secs == 0 || secs * 1000 > INT_MAX)
		fc->timeout_ms = -1;
	else
		fc->timeout_ms = (int)(secs * 1000);
	return 0;
}

int main(int argc, char **argv)
{
	enum { OPT_API_SOCKET = 256, OPT_AGENT, OPT_TIMEOUT, OPT_VERSION, OPT_STORE, OPT_FORKD };
	static const struct option opts[] = {
		{ "api-socket", required_argument, NULL, OPT_API_SOCKET },
		{ "agent", required_argument, NULL, OPT_AGENT },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "store", required_argument, NULL, OPT_STORE },
		{ "forkd", required_argument, NULL, OPT_FORKD },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	struct forkctl fc = { .timeout_ms = DEFAULT_TIMEOUT_S * 1000 };
	const char *timeout_arg = NULL;
	int opt, rc;

	opterr = 0;
	/* '+': stop at the command, whose own arguments may look like options. */
	while ((opt = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
		switch (opt) {
		case OPT_API_SOCKET:
			if (!optarg[0])
				return cli_usage_error(&forkctl_cli, "--api-socket needs a path");
			fc.api_socket = optarg;
			break;
		case OPT_AGENT:
			if (!optarg[0])
				return cli_usage_error(&forkctl_cli, "--agent needs a path");
			fc.agent_socket = optarg;
			break;
		case OPT_STORE:
			if (!optarg[0])
				return cli_usage_error(&forkctl_cli, "--store needs a directory");
			fc.store = optarg;
			break;
		case OPT_FORKD:
			if (!optarg[0])
				return cli_usage_error(&forkctl_cli, "--forkd needs a socket path");
			fc.forkd_socket = optarg;
			break;
		case OPT_TIMEOUT:
			rc = parse_timeout(&fc, optarg);
			if (rc)
				return rc;
			timeout_arg = optarg;
			break;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		case 'V':
		case OPT_VERSION:
			printf("forkctl %s\n", FORKVM_VERSION);
			return EXIT_SUCCESS;
		case ':':
		default:
			if (optopt && optopt != '?' && optopt < 256)
				return cli_usage_error(&forkctl_cli, "invalid option '-%c'",
						       optopt);
			if (optopt >= OPT_API_SOCKET)
				return cli_usage_error(&forkctl_cli, "option '%s' needs a value",
						       argv[optind - 1]);
			return cli_usage_error(&forkctl_cli, "invalid option '%s'",
					       argv[optind - 1]);
		}
	}
	if (optind < argc && !strcmp(argv[optind], "help")) {
		if (optind + 1 < argc)
			return help_command(argv[optind + 1]);
		usage(stdout);
		return EXIT_SUCCESS;
	}
	/* forkctl COMMAND --help (or -h), wherever it comes */
	for (int i = optind + 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return help_command(!strcmp(argv[optind], "store") && optind + 1 < i ?
						    argv[optind + 1] :
						    argv[optind]);
	if (!!fc.api_socket + !!fc.agent_socket + !!fc.forkd_socket > 1)
		return cli_usage_error(&forkctl_cli,
				       "use one of --api-socket, --agent and --forkd");
	if (optind >= argc)
		return cli_usage_error(&forkctl_cli, "missing command");
	if (!strcmp(argv[optind], "store")) {
		if (fc.api_socket || fc.agent_socket || fc.forkd_socket)
			return cli_usage_error(&forkctl_cli,
					       "store commands work on the store directly: drop "
					       "--api-socket/--agent/--forkd");
		return cli_store_main(fc.store, argc - optind - 1, argv + optind + 1);
	}
	if (fc.store)
		return cli_usage_error(
		    &forkctl_cli, "--store applies to store commands only (the VMM has its own "
				  "--store)");
	if (!fc.agent_socket && cli_forkd_is_command(argv[optind], fc.forkd_socket != NULL)) {
		if (fc.api_socket && !strcmp(argv[optind], "eval"))
			return cli_usage_error(
			    &forkctl_cli, "eval talks to a guest agent: use --agent=PATH, or eval "
					  "--clone ID for a clone of forkd");
		if (fc.api_socket)
			return cli_usage_error(
			    &forkctl_cli,
			    "'%s' is a fork daemon command: use --forkd=SOCK (or the "
			    "default socket), not --api-socket",
			    argv[optind]);
		return cli_forkd_main(fc.forkd_socket, fc.timeout_ms, timeout_arg != NULL, argc - optind,
				      argv + optind);
	}
	if (fc.forkd_socket)
		return cli_usage_error(&forkctl_cli, "unknown fork daemon command '%s'",
				       argv[optind]);
	if (fc.agent_socket && timeout_arg) {
		/* A --timeout before the agent command applies to it too: hand it
		 * over after the command's own arguments. */
		int n = argc - optind;
		char **av = calloc((size_t)n + 3, sizeof(*av));
		if (!av)
			return cli_fail(fc.cmd, "out of memory");
		memcpy(av, argv + optind, (size_t)n * sizeof(*av));
		av[n] = (char *)(uintptr_t)"--timeout";
		av[n + 1] = (char *)(uintptr_t)timeout_arg;
		rc = cli_agent_main(fc.agent_socket, n + 2, av);
		free(av);
		return rc;
	}
	if (fc.agent_socket)
		return cli_agent_main(fc.agent_socket, argc - optind, argv + optind);
	if (!fc.api_socket && !strcmp(argv[optind], "ping"))
		return cli_usage_error(&forkctl_cli,
				       "ping: --api-socket=PATH is required (forkd's ping: forkctl "
				       "--forkd=SOCK ping)");
	if (!fc.api_socket)
		return cli_usage_error(&forkctl_cli, "%s: --api-socket=PATH is required",
				       argv[optind]);
	return run_api_command(&fc, argc - optind, argv + optind);
}
