/* cli/cli.h - forkctl's internal interface between its parts: the command
 * groups' entry points (forkctl.c calls them), the shared argument parser
 * and error messages (args.c), and the fork daemon client (forkd_client.c)
 * that the forkd commands (forkd_cmd.c, template_cmd.c, clone_cmd.c) use.
 * Exit statuses: 0 success, EXIT_FAILURE (1) failure, CLI_EXIT_USAGE (2)
 * usage error. */
#ifndef FORKVM_CLI_H
#define FORKVM_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "common/http.h"

#define CLI_EXIT_USAGE 2

/* ---------------------------------------------------------------- command groups */

/* Runs an agent command (eval, info, load, call, ping, wait-ready) against
 * the agent socket at agent_path. argv[0] is the command name.
 * Prints the result on stdout; returns the process exit status. */
int cli_agent_main(const char *agent_path, int argc, char **argv);

/* Runs a store command (put, export, ls, show, tag, rm, gc, verify, du,
 * init) on the store at root (NULL: the default). argv[0] is the command
 * name. Returns the process exit status. */
int cli_store_main(const char *root, int argc, char **argv);

/* True if name is a fork daemon command (template, fork, invoke, clones,
 * clone, kill, eval, console, metrics; ping only when forkd_given, since
 * without --forkd it is the VMM's). */
bool cli_forkd_is_command(const char *name, bool forkd_given);

/* Runs a fork daemon command (docs/forkd-api.md) against forkd's API socket
 * (NULL: the default, forkd_socket_default()). timeout_ms is the global
 * --timeout (-1: forever) when timeout_given, else ignored. argv[0] is the
 * command name. Prints results on stdout; returns the process exit status. */
int cli_forkd_main(const char *socket, int timeout_ms, bool timeout_given, int argc, char **argv);

/* Prints the fork daemon commands' lines of the usage text to f. */
void cli_forkd_usage(FILE *f);
/* Prints the agent commands' usage text to f. */
void cli_agent_usage(FILE *f);
/* Prints the store commands' usage text to f. */
void cli_store_usage(FILE *f);

/* ---------------------------------------------------------------- errors (args.c) */

/* A command as its error messages name it, and what follows a usage error's
 * message: "PROG: [NAME: ]MESSAGE", then "usage: USAGE_PREFIX SYNOPSIS"
 * (with a synopsis), usage_text as it is, and the --help hint. */
struct cli_cmd {
	const char *prog;	  /* "forkctl", "forkctl store" */
	const char *name;	  /* NULL, or the command: "fork", "template add" */
	const char *usage_prefix; /* before the synopsis: "forkctl [--forkd=SOCK]" */
	const char *synopsis;	  /* NULL, or the command's synopsis */
	const char *usage_text;	  /* NULL, or a usage text printed as it is */
	bool try_help;		  /* end with "Try 'forkctl --help' ..." */
};

/* Prints a usage error for cmd (struct cli_cmd) to stderr. Returns CLI_EXIT_USAGE. */
int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints "forkctl: [CMD: ]MESSAGE" to stderr (cmd NULL: none). Returns EXIT_FAILURE. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------- arguments (args.c) */

/* An option of a command: "--name", "--name V", "--name=V", "-c", "-c V",
 * "-cV". A table of them ends with a NULL name. */
struct cli_opt {
	const char *name; /* without the dashes; NULL ends a table */
	char short_name;  /* 0: none */
	bool takes_value;
	const char *value; /* out: the last value given */
	bool seen;	   /* out */
};

/* A walk over a command's words, one cli_args_next() at a time. "--" ends
 * the options; "-5", "-.5" and "-" are arguments (JSON-ARGS may be negative
 * numbers). */
struct cli_args {
	int argc;
	char **argv;
	int next;	      /* the index of the next word */
	struct cli_opt *opts; /* the command's options */
	bool long_only;	      /* "-c..." is an argument too */
	bool only_args;	      /* after "--" */
	const char *word;     /* out: the word read (the option as written) */
	struct cli_opt *opt;  /* out: its option (CLI_ARGS_OPTION, CLI_ARGS_NO_VALUE) */
	const char *value;    /* out: the option's value */
};

/* What cli_args_next() read. */
enum cli_args_kind {
	CLI_ARGS_END,	      /* no more words */
	CLI_ARGS_ARGUMENT,    /* a positional argument: word */
	CLI_ARGS_OPTION,      /* an option: opt (seen, value set), value */
	CLI_ARGS_UNKNOWN,     /* word is no option of the table */
	CLI_ARGS_NO_VALUE,    /* word gave a value to opt, which takes none */
	CLI_ARGS_NEEDS_VALUE, /* word (an option that takes a value) ends argv */
};

/* Starts a walk over argv[first..argc) with the option table opts. */
void cli_args_init(struct cli_args *a, int argc, char **argv, int first, struct cli_opt *opts);

/* Reads the next word or option. Returns what it read. */
enum cli_args_kind cli_args_next(struct cli_args *a);

/* Parses argv[first..argc) into opts and positional arguments, stored in
 * pos[] (names pos_names[], of which the first min_pos are required).
 * Returns 0, or CLI_EXIT_USAGE after printing the error for cmd. */
int cli_parse_args(const struct cli_cmd *cmd, int argc, char **argv, int first,
		   struct cli_opt *opts, const char *const *pos_names, int min_pos, int max_pos,
		   const char **pos);

/* Parses a decimal integer option or argument (what names it) in
 * [min, max] into *out. Returns 0 or CLI_EXIT_USAGE after printing why. */
int cli_parse_uint(const struct cli_cmd *cmd, const char *what, const char *s, uint64_t min,
		   uint64_t max, uint64_t *out);

/* ---------------------------------------------------------------- forkd client (forkd_client.c) */

/* The HTTP timeout of a forkd command without the global --timeout. */
#define CLI_FORKD_TIMEOUT_MS 60000
/* forkd's request body limit (docs/forkd-api.md), checked before sending. */
#define CLI_FORKD_BODY_MAX (1024 * 1024)

/* One fork daemon command being run. */
struct cli_forkd {
	const char *socket;
	bool socket_default; /* socket is the default, not --forkd */
	bool socket_guessed; /* ... and not $FORKD_SOCKET either */
	int timeout_ms;	     /* HTTP timeout; -1: forever */
	bool timeout_given;  /* the global --timeout set timeout_ms */
	struct cli_cmd cmd;  /* name: "fork", "template add", ...; its synopsis */
};

/* Prints why a request to forkd got no HTTP answer (rc: -errno of
 * http_client_request()). Returns EXIT_FAILURE. */
int cli_forkd_connect_error(const struct cli_forkd *fc, int rc);

/* Prints the error of a non-2xx reply. Returns EXIT_FAILURE. */
int cli_forkd_error_reply(const struct http_client_response *resp);

/* Sends one request (body: a JSON object, borrowed, or NULL) to path.
 * Returns 0 with a 2xx reply in *resp (caller frees it), or the exit status
 * after printing the error. */
int cli_forkd_call(const struct cli_forkd *fc, const char *method, const char *path,
		   const json_t *body, struct http_client_response *resp);

/* A request whose JSON object reply is needed: returns it, or NULL after
 * printing the error (*status: the exit status). */
json_t *cli_forkd_call_json(const struct cli_forkd *fc, const char *method, const char *path,
			    const json_t *body, int *status);

/* A request whose reply is an object with the array key (forkd's
 * listings): returns the reply, *list pointing into it, or NULL after
 * printing the error (*status: the exit status). */
json_t *cli_forkd_call_list(const struct cli_forkd *fc, const char *method, const char *path,
			    const json_t *body, const char *key, const json_t **list, int *status);

/* A request whose reply is printed as it is (nothing for an empty one).
 * Returns the exit status. */
int cli_forkd_call_print(const struct cli_forkd *fc, const char *method, const char *path,
			 const json_t *body);

/* Returns 0 if name is a valid template name, else CLI_EXIT_USAGE after
 * printing why. */
int cli_forkd_check_template_name(const struct cli_forkd *fc, const char *name);

/* Returns 0 if id looks like a clone id, else CLI_EXIT_USAGE after printing why. */
int cli_forkd_check_clone_id(const struct cli_forkd *fc, const char *id);

/* Prints j as JSON (flags: JSON_COMPACT or JSON_INDENT(n)). Returns 0 or EXIT_FAILURE. */
int cli_print_json(const json_t *j, size_t flags);

/* Sets *out to obj's integer field key. Returns false (*out untouched) if
 * it is absent or not an integer. */
bool cli_json_int(const json_t *obj, const char *key, long long *out);

/* Returns obj's string field key, or dflt if it is absent or not a string. */
const char *cli_json_str(const json_t *obj, const char *key, const char *dflt);

/* Writes obj's integer field key as text into out, "-" when absent. */
void cli_fmt_int(const json_t *obj, const char *key, char *out, size_t len);

/* ---------------------------------------------------------------- forkd commands */

/* Each runs one fork daemon command, argv[0] its name, and returns the
 * process exit status. */

/* template add|ls|show|rm|pool ... (template_cmd.c) */
int cli_forkd_template(struct cli_forkd *fc, int argc, char **argv);
/* fork NAME [-n K] [--json] (clone_cmd.c, as those below) */
int cli_forkd_fork(struct cli_forkd *fc, int argc, char **argv);
/* invoke NAME FN ['JSON-ARGS'] [--timeout MS] [--json] */
int cli_forkd_invoke(struct cli_forkd *fc, int argc, char **argv);
/* clones [--template NAME] [--json] */
int cli_forkd_clones(struct cli_forkd *fc, int argc, char **argv);
/* clone show|pause|resume|snapshot ID ... */
int cli_forkd_clone(struct cli_forkd *fc, int argc, char **argv);
/* kill ID */
int cli_forkd_kill(struct cli_forkd *fc, int argc, char **argv);
/* eval --clone ID 'JS' [--timeout SECONDS] */
int cli_forkd_eval(struct cli_forkd *fc, int argc, char **argv);
/* console ID [-f] */
int cli_forkd_console(struct cli_forkd *fc, int argc, char **argv);
/* metrics */
int cli_forkd_metrics(struct cli_forkd *fc, int argc, char **argv);
/* ping (with --forkd) */
int cli_forkd_ping(struct cli_forkd *fc, int argc, char **argv);

#endif
