/* cli/forkd_cmd.c - forkctl [--forkd=SOCK] template|fork|invoke|clones|
 * clone|kill|eval --clone|console|metrics: the fork daemon's REST API
 * (docs/forkd-api.md) over its Unix socket (common/http.h). */
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
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
#include "common/forkd_socket.h"
#include "common/http.h"
#include "common/util.h"
#include "forkd/forkd.h"
#include "store/store.h"

#define EXIT_USAGE 2
#define DEFAULT_TIMEOUT_MS 60000
/* Limits of docs/forkd-api.md, checked here to fail early with a usage error. */
#define BODY_MAX (1024 * 1024)
#define INVOKE_TIMEOUT_DEFAULT_MS 10000
#define INVOKE_TIMEOUT_MAX_MS 600000
#define CLONE_ID_MAX 32
/* console -f: how often the file is read, and the clone's state polled. */
#define FOLLOW_READ_MS 100
#define FOLLOW_STATE_EVERY 5

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

void cli_forkd_usage(FILE *f)
{
	fputs(forkd_usage_text, f);
}

/* One forkd command being run. */
struct forkd_cli {
	const char *socket;
	bool socket_default; /* socket is the default, not --forkd */
	bool socket_guessed; /* ... and not $FORKD_SOCKET either */
	int timeout_ms;	     /* HTTP timeout; -1: forever */
	bool timeout_given;  /* the global --timeout set timeout_ms */
	const char *cmd;     /* "fork", "template add", ...: for messages */
	const char *synopsis;
};

/* Prints "forkctl: CMD: MESSAGE" and the command's synopsis. Returns EXIT_USAGE. */
static int usage_error(const struct forkd_cli *fc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const struct forkd_cli *fc, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "forkctl: %s: ", fc->cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (fc->synopsis)
		fprintf(stderr, "usage: forkctl [--forkd=SOCK] %s\n", fc->synopsis);
	fputs("Try 'forkctl --help' for more information.\n", stderr);
	return EXIT_USAGE;
}

/* Prints "forkctl: MESSAGE". Returns EXIT_FAILURE. */
static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fputs("forkctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_FAILURE;
}

/* ---------------------------------------------------------------- arguments */

/* An option of a command: "--name", "--name V", "--name=V", "-c", "-c V",
 * "-cV". */
struct opt {
	const char *name; /* without the dashes; NULL ends a table */
	char short_name;  /* 0: none */
	bool takes_value;
	const char *value; /* out: the last value given */
	bool seen;	   /* out */
};

/* True if a looks like an option rather than an argument: "-5", "-.5", "-"
 * and anything not starting with '-' are arguments (JSON-ARGS may be
 * negative numbers). */
static bool looks_like_option(const char *a)
{
	return a[0] == '-' && a[1] && a[1] != '.' && (a[1] < '0' || a[1] > '9');
}

/* Finds the option named by a ("--name..." or "-c..."); sets *inline_val to
 * the value glued to it, if any. NULL if unknown. */
static struct opt *find_opt(struct opt *opts, const char *a, const char **inline_val)
{
	*inline_val = NULL;
	for (struct opt *o = opts; o->name; o++) {
		if (a[1] == '-') {
			size_t n = strlen(o->name);

			if (strncmp(a + 2, o->name, n) != 0)
				continue;
			if (a[2 + n] == '=') {
				*inline_val = a + 3 + n;
				return o;
			}
			if (a[2 + n] == '\0')
				return o;
		} else if (o->short_name && a[1] == o->short_name) {
			if (a[2])
				*inline_val = a + 2;
			return o;
		}
	}
	return NULL;
}

/* Parses argv[first..argc) into opts and positional arguments, stored in
 * pos[] (names pos_names[], of which the first min_pos are required).
 * Returns 0, or EXIT_USAGE after printing the error. */
static int parse_args(const struct forkd_cli *fc, int argc, char **argv, int first,
		      struct opt *opts, const char *const *pos_names, int min_pos, int max_pos,
		      const char **pos)
{
	bool only_args = false;
	int npos = 0;

	for (int i = first; i < argc; i++) {
		const char *a = argv[i], *val;
		struct opt *o;

		if (!only_args && !strcmp(a, "--")) {
			only_args = true;
			continue;
		}
		if (only_args || !looks_like_option(a)) {
			if (npos >= max_pos)
				return usage_error(fc, "unexpected argument '%s'", a);
			pos[npos++] = a;
			continue;
		}
		o = find_opt(opts, a, &val);
		if (!o)
			return usage_error(fc, "unknown option '%s'", a);
		if (!o->takes_value && val) {
			if (a[1] == '-')
				return usage_error(fc, "option '--%s' takes no value", o->name);
			return usage_error(fc, "unknown option '%s'", a);
		}
		if (o->takes_value && !val) {
			if (i + 1 >= argc)
				return usage_error(fc, "option '%s' needs a value", a);
			val = argv[++i];
		}
		o->seen = true;
		o->value = val;
	}
	if (npos < min_pos)
		return usage_error(fc, "missing %s", pos_names[npos]);
	for (int i = npos; i < max_pos; i++)
		pos[i] = NULL;
	return 0;
}

/* Clone ids are hex digits (12 from forkd). */
static bool clone_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CLONE_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
		      (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

static int check_template_name(const struct forkd_cli *fc, const char *name)
{
	if (forkd_template_name_valid(name))
		return 0;
	return usage_error(fc,
			   "bad template name '%s' (1 to 32 letters, digits, '_', '.', '-'; not "
			   "starting with '.' or '-')",
			   name);
}

static int check_clone_id(const struct forkd_cli *fc, const char *id)
{
	if (clone_id_valid(id))
		return 0;
	return usage_error(fc, "'%s' is not a clone id (hex digits, e.g. 9e3b5f0c1a7d)", id);
}

/* Parses a decimal integer option in [min, max] into *out. Returns 0 or
 * EXIT_USAGE. */
static int parse_int_arg(const struct forkd_cli *fc, const char *what, const char *s, uint64_t min,
			 uint64_t max, uint64_t *out)
{
	if (parse_u64(s, min, max, out) < 0)
		return usage_error(
		    fc, "%s must be a whole number from %" PRIu64 " to %" PRIu64 ", not '%s'", what,
		    min, max, s);
	return 0;
}

/* ---------------------------------------------------------------- requests */

/* Prints why a request to forkd got no HTTP answer. Returns EXIT_FAILURE. */
static int connect_error(const struct forkd_cli *fc, int rc)
{
	const char *hint = fc->socket_default
			       ? " (the default socket; --forkd=SOCK or $" FORKD_SOCKET_ENV
				 " choose another)"
			       : "";

	switch (rc) {
	case -ENOENT:
		return fail("cannot connect to forkd at %s: no such socket; is forkd running?%s",
			    fc->socket, hint);
	case -ECONNREFUSED:
		return fail(
		    "cannot connect to forkd at %s: connection refused; is forkd running?%s",
		    fc->socket, hint);
	case -EACCES:
	case -EPERM:
		return fail(
		    "cannot connect to forkd at %s: permission denied (the socket is mode 0600: "
		    "run as forkd's user)",
		    fc->socket);
	case -ENOTSOCK:
	case -ENOTDIR:
		return fail("cannot connect to forkd at %s: not a socket%s", fc->socket, hint);
	case -ENAMETOOLONG:
		return fail("cannot connect to forkd at %s: the path is too long for a Unix socket",
			    fc->socket);
	case -ETIMEDOUT:
		return fail(
		    "%s: no reply from forkd at %s within %.1f s (--timeout SECONDS before the "
		    "command waits longer)",
		    fc->cmd, fc->socket, fc->timeout_ms / 1000.0);
	case -EPROTO:
		return fail("%s: malformed HTTP reply from %s (is it forkd's socket?)", fc->cmd,
			    fc->socket);
	case -EFBIG:
		return fail("%s: the reply from forkd is too large", fc->cmd);
	default:
		return fail("%s: request to forkd at %s failed: %s", fc->cmd, fc->socket,
			    strerror(-rc));
	}
}

/* Prints the error of a non-2xx reply: "forkctl: MESSAGE (HTTP NNN)" with
 * the body's "error", else its text, else the status. Returns EXIT_FAILURE. */
static int error_reply(const struct http_client_response *resp)
{
	json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
	const char *msg = json_string_value(json_object_get(j, "error"));
	size_t len = resp->body_len;
	int rc;

	if (msg) {
		rc = fail("%s (HTTP %d)", msg, resp->status);
		json_decref(j);
		return rc;
	}
	json_decref(j);
	while (len && (resp->body[len - 1] == '\n' || resp->body[len - 1] == '\r' ||
		       resp->body[len - 1] == ' '))
		len--;
	if (len)
		return fail("%.*s (HTTP %d)", (int)MIN(len, (size_t)1024), resp->body,
			    resp->status);
	return fail("%s (HTTP %d)", http_status_str((enum http_status)resp->status), resp->status);
}

/* A socket path nobody named (neither --forkd nor $FORKD_SOCKET): refuse
 * one in a directory another user owns, since /tmp/forkd-UID could have
 * been made by anyone, and what forkctl sends (scripts, arguments) would go
 * to them. Returns 0 or EXIT_FAILURE. */
static int check_default_socket_dir(const char *sock)
{
	char copy[PATH_MAX];
	struct stat st;
	const char *dir;

	snprintf(copy, sizeof(copy), "%s", sock);
	dir = dirname(copy);
	if (stat(dir, &st) < 0)
		return 0; /* the connect reports it */
	if (st.st_uid != geteuid() && st.st_uid != 0)
		return fail("refusing the default forkd socket %s: its directory is owned by uid "
			    "%u, not you "
			    "(give --forkd=SOCK to use it anyway)",
			    sock, (unsigned)st.st_uid);
	return 0;
}

/* Sends one request (body: a JSON object, borrowed, or NULL) to path.
 * Returns 0 with a 2xx reply in *resp (caller frees it), or the exit status
 * after printing the error. */
static int forkd_call(const struct forkd_cli *fc, const char *method, const char *path,
		      const json_t *body, struct http_client_response *resp)
{
	char *text = NULL;
	int rc;

	if (fc->socket_guessed && (rc = check_default_socket_dir(fc->socket)))
		return rc;
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text)
			return fail("%s: cannot encode the request (is the text valid UTF-8?)",
				    fc->cmd);
		if (strlen(text) > BODY_MAX) {
			free(text);
			return fail("%s: the request is over forkd's 1 MiB limit", fc->cmd);
		}
	}
	rc = http_client_request(fc->socket, method, path, text ? "application/json" : NULL, text,
				 text ? strlen(text) : 0, fc->timeout_ms, resp);
	free(text);
	if (rc < 0)
		return connect_error(fc, rc);
	if (resp->status < 200 || resp->status > 299) {
		rc = error_reply(resp);
		http_client_response_free(resp);
		return rc;
	}
	return 0;
}

/* The reply's body as a JSON object, or NULL after printing why not. */
static json_t *reply_object(const struct forkd_cli *fc, const struct http_client_response *resp)
{
	json_error_t err;
	json_t *j = json_loadb(resp->body, resp->body_len, 0, &err);

	if (!j) {
		fail("%s: malformed JSON from forkd: %s (line %d, column %d)", fc->cmd, err.text,
		     err.line, err.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		fail("%s: unexpected reply from forkd: not a JSON object", fc->cmd);
		return NULL;
	}
	return j;
}

/* A request whose JSON object reply is needed: returns it, or NULL after
 * printing the error (*status: the exit status). */
static json_t *forkd_call_json(const struct forkd_cli *fc, const char *method, const char *path,
			       const json_t *body, int *status)
{
	struct http_client_response resp;
	json_t *j;

	*status = forkd_call(fc, method, path, body, &resp);
	if (*status)
		return NULL;
	j = reply_object(fc, &resp);
	http_client_response_free(&resp);
	*status = j ? 0 : EXIT_FAILURE;
	return j;
}

/* A request whose reply is printed as it is (or nothing for an empty one). */
static int forkd_call_print(const struct forkd_cli *fc, const char *method, const char *path,
			    const json_t *body)
{
	struct http_client_response resp;
	int rc = forkd_call(fc, method, path, body, &resp);

	if (rc)
		return rc;
	if (resp.body_len) {
		fwrite(resp.body, 1, resp.body_len, stdout);
		if (resp.body[resp.body_len - 1] != '\n')
			putchar('\n');
	}
	http_client_response_free(&resp);
	return 0;
}

/* Prints j as JSON (flags: JSON_COMPACT or JSON_INDENT(n)). Returns 0 or 1. */
static int print_json(const json_t *j, size_t flags)
{
	char *s = json_dumps(j, flags | JSON_ENCODE_ANY);

	if (!s)
		return fail("cannot print the reply");
	puts(s);
	free(s);
	return 0;
}

/* ---------------------------------------------------------------- formatting */

/* json_integer_value() that tells absence apart: false if j is not an integer. */
static bool get_int(const json_t *obj, const char *key, long long *out)
{
	const json_t *j = json_object_get(obj, key);

	if (!json_is_integer(j))
		return false;
	*out = (long long)json_integer_value(j);
	return true;
}

static const char *get_str(const json_t *obj, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : dflt;
}

/* A byte count as "256 MiB" / "1 GiB" when exact, else "268435457 B". */
static void fmt_bytes(long long b, char *out, size_t len)
{
	if (b > 0 && b % (long long)GiB == 0)
		snprintf(out, len, "%lld GiB", b / (long long)GiB);
	else if (b > 0 && b % (long long)MiB == 0)
		snprintf(out, len, "%lld MiB", b / (long long)MiB);
	else
		snprintf(out, len, "%lld B", b);
}

/* An integer field as text, "-" when absent. */
static void fmt_int(const json_t *obj, const char *key, char *out, size_t len)
{
	long long v;

	if (get_int(obj, key, &v))
		snprintf(out, len, "%lld", v);
	else
		snprintf(out, len, "-");
}

/* Prints a template as "NAME SNAPSHOT12 pool SIZE". */
static void print_template_line(const json_t *t)
{
	long long size = 0;

	get_int(json_object_get(t, "pool"), "size", &size);
	printf("%s %.12s pool %lld\n", get_str(t, "name", "?"), get_str(t, "snapshot", "?"), size);
}

/* Prints a template reply as a line, or as it came with --json. */
static int print_template_reply(const json_t *t, bool as_json)
{
	if (as_json)
		return print_json(t, JSON_COMPACT);
	print_template_line(t);
	return 0;
}

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
	const char *state = get_str(c, "state", "?");
	const json_t *ex = json_object_get(c, "exit");
	long long v;

	if (strcmp(state, "exited") != 0 || !json_is_object(ex))
		snprintf(out, len, "%s", state);
	else if (get_int(ex, "signal", &v))
		snprintf(out, len, "exited(sig %lld)", v);
	else if (get_int(ex, "status", &v))
		snprintf(out, len, "exited(%lld)", v);
	else
		snprintf(out, len, "exited");
}

/* ---------------------------------------------------------------- template */

/* Reads a file given to a command into a NUL-terminated buffer of at most
 * forkd's body limit. Returns 0 or EXIT_FAILURE after printing why. */
static int read_input(const struct forkd_cli *fc, const char *file, char **buf, size_t *len)
{
	int rc = file_read_all(file, BODY_MAX, buf, len);

	if (rc == -EFBIG)
		return fail("%s: %s is over forkd's 1 MiB request limit", fc->cmd, file);
	if (rc < 0)
		return fail("%s: cannot read %s: %s", fc->cmd, file, strerror(-rc));
	return 0;
}

/* Adds "boot" (CONFIG.json's object) and "load" (SCRIPT.js's text) to body.
 * Returns 0 or the exit status. */
static int add_boot(const struct forkd_cli *fc, json_t *body, const char *config,
		    const char *script)
{
	json_error_t err;
	char *buf;
	size_t len;
	json_t *j;
	int rc = read_input(fc, config, &buf, &len);

	if (rc)
		return rc;
	j = json_loadb(buf, len, 0, &err);
	free(buf);
	if (!j)
		return fail("%s: %s:%d:%d: invalid JSON: %s", fc->cmd, config, err.line, err.column,
			    err.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return fail("%s: %s: the VM configuration must be a JSON object", fc->cmd, config);
	}
	json_object_set_new(body, "boot", j);
	if (!script)
		return 0;
	rc = read_input(fc, script, &buf, &len);
	if (rc)
		return rc;
	if (memchr(buf, '\0', len)) {
		free(buf);
		return fail("%s: %s contains NUL bytes", fc->cmd, script);
	}
	j = json_stringn(buf, len);
	free(buf);
	if (!j)
		return fail("%s: %s is not valid UTF-8", fc->cmd, script);
	json_object_set_new(body, "load", j);
	return 0;
}

/* template add NAME (--snapshot REF | --boot CONFIG.json [--load SCRIPT.js]) [--pool K] [--json] */
static int template_add(struct forkd_cli *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME"};
	struct opt opts[] = {
	    {"snapshot", 0, true, NULL, false}, {"boot", 0, true, NULL, false},
	    {"load", 0, true, NULL, false},	{"pool", 0, true, NULL, false},
	    {"json", 0, false, NULL, false},	{NULL, 0, false, NULL, false},
	};
	const char *name;
	uint64_t pool = 0;
	json_t *body, *t;
	int rc;

	fc->synopsis =
	    "template add NAME (--snapshot ID|TAG | --boot CONFIG.json [--load SCRIPT.js]) "
	    "[--pool K] [--json]";
	rc = parse_args(fc, argc, argv, 2, opts, names, 1, 1, &name);
	if (rc)
		return rc;
	if ((rc = check_template_name(fc, name)))
		return rc;
	if (opts[0].seen == opts[1].seen)
		return usage_error(fc, "give either --snapshot ID|TAG or --boot CONFIG.json");
	if (opts[2].seen && !opts[1].seen)
		return usage_error(fc,
				   "--load goes with --boot (a snapshot has its handlers already)");
	if (opts[0].seen && !opts[0].value[0])
		return usage_error(fc, "--snapshot needs a snapshot id or tag");
	if (opts[3].seen && (rc = parse_int_arg(fc, "--pool", opts[3].value, 0, FORKD_MAX_POOL, &pool)))
		return rc;

	body = json_pack("{s:s}", "name", name);
	if (!body)
		return fail("out of memory");
	if (opts[0].seen)
		json_object_set_new(body, "snapshot", json_string(opts[0].value));
	else if ((rc = add_boot(fc, body, opts[1].value, opts[2].value))) {
		json_decref(body);
		return rc;
	}
	if (opts[3].seen)
		json_object_set_new(body, "pool", json_integer((json_int_t)pool));
	t = forkd_call_json(fc, "POST", "/v1/templates", body, &rc);
	json_decref(body);
	if (!t)
		return rc;
	rc = print_template_reply(t, opts[4].seen);
	json_decref(t);
	return rc;
}

/* template ls [--json] */
static int template_ls(struct forkd_cli *fc, int argc, char **argv)
{
	struct opt opts[] = {{"json", 0, false, NULL, false}, {NULL, 0, false, NULL, false}};
	const json_t *list, *t;
	size_t i;
	int width = 4, rc;
	json_t *j;

	fc->synopsis = "template ls [--json]";
	rc = parse_args(fc, argc, argv, 2, opts, NULL, 0, 0, NULL);
	if (rc)
		return rc;
	if (opts[0].seen)
		return forkd_call_print(fc, "GET", "/v1/templates", NULL);
	j = forkd_call_json(fc, "GET", "/v1/templates", NULL, &rc);
	if (!j)
		return rc;
	list = json_object_get(j, "templates");
	if (!json_is_array(list)) {
		json_decref(j);
		return fail("%s: unexpected reply from forkd: no \"templates\" array", fc->cmd);
	}
	json_array_foreach(list, i, t) width =
	    MAX(width, (int)MIN(strlen(get_str(t, "name", "?")), (size_t)64));
	printf("%-*s  %-12s  %9s  %5s  %9s  %6s  %6s  %s\n", width, "NAME", "SNAPSHOT", "MEMORY",
	       "VCPUS", "POOL", "CLONES", "FORKS", "PLATFORM");
	json_array_foreach(list, i, t)
	{
		const json_t *pool = json_object_get(t, "pool");
		char mem[32] = "-", vcpus[24], poolbuf[48] = "-", clones[24], forks[24];
		long long v, ready;

		if (get_int(t, "memory_size", &v))
			fmt_bytes(v, mem, sizeof(mem));
		if (get_int(pool, "size", &v) && get_int(pool, "ready", &ready))
			snprintf(poolbuf, sizeof(poolbuf), "%lld/%lld", ready, v);
		fmt_int(t, "vcpus", vcpus, sizeof(vcpus));
		fmt_int(t, "clones", clones, sizeof(clones));
		fmt_int(t, "forks", forks, sizeof(forks));
		printf("%-*s  %-12.12s  %9s  %5s  %9s  %6s  %6s  %s\n", width, get_str(t, "name", "?"),
		       get_str(t, "snapshot", "-"), mem, vcpus, poolbuf, clones, forks,
		       get_str(t, "platform", "-"));
	}
	json_decref(j);
	return 0;
}

/* template show NAME */
static int template_show(struct forkd_cli *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME"};
	struct opt opts[] = {{NULL, 0, false, NULL, false}};
	char path[96];
	const char *name;
	json_t *t;
	int rc;

	fc->synopsis = "template show NAME";
	rc = parse_args(fc, argc, argv, 2, opts, names, 1, 1, &name);
	if (rc || (rc = check_template_name(fc, name)))
		return rc;
	snprintf(path, sizeof(path), "/v1/templates/%s", name);
	t = forkd_call_json(fc, "GET", path, NULL, &rc);
	if (!t)
		return rc;
	rc = print_json(t, JSON_INDENT(2));
	json_decref(t);
	return rc;
}

/* template rm NAME [--force] */
static int template_rm(struct forkd_cli *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME"};
	struct opt opts[] = {{"force", 'f', false, NULL, false}, {NULL, 0, false, NULL, false}};
	struct http_client_response resp;
	char path[112];
	const char *name;
	int rc;

	fc->synopsis = "template rm NAME [--force]";
	rc = parse_args(fc, argc, argv, 2, opts, names, 1, 1, &name);
	if (rc || (rc = check_template_name(fc, name)))
		return rc;
	snprintf(path, sizeof(path), "/v1/templates/%s%s", name, opts[0].seen ? "?force=true" : "");
	rc = forkd_call(fc, "DELETE", path, NULL, &resp);
	if (!rc)
		http_client_response_free(&resp);
	return rc;
}

/* template pool NAME K [--json] */
static int template_pool(struct forkd_cli *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME", "K (the pool size)"};
	struct opt opts[] = {{"json", 0, false, NULL, false}, {NULL, 0, false, NULL, false}};
	const char *pos[2];
	char path[112];
	uint64_t k;
	json_t *body, *t;
	int rc;

	fc->synopsis = "template pool NAME K [--json]";
	rc = parse_args(fc, argc, argv, 2, opts, names, 2, 2, pos);
	if (rc || (rc = check_template_name(fc, pos[0])) ||
	    (rc = parse_int_arg(fc, "the pool size", pos[1], 0, FORKD_MAX_POOL, &k)))
		return rc;
	snprintf(path, sizeof(path), "/v1/templates/%s/pool", pos[0]);
	body = json_pack("{s:I}", "size", (json_int_t)k);
	if (!body)
		return fail("out of memory");
	t = forkd_call_json(fc, "PUT", path, body, &rc);
	json_decref(body);
	if (!t)
		return rc;
	rc = print_template_reply(t, opts[0].seen);
	json_decref(t);
	return rc;
}

static int cmd_template(struct forkd_cli *fc, int argc, char **argv)
{
	static const struct {
		const char *name, *cmd;
		int (*fn)(struct forkd_cli *fc, int argc, char **argv);
	} subs[] = {
	    {"add", "template add", template_add},    {"ls", "template ls", template_ls},
	    {"show", "template show", template_show}, {"rm", "template rm", template_rm},
	    {"pool", "template pool", template_pool},
	};

	fc->synopsis = "template add|ls|show|rm|pool ...";
	if (argc < 2)
		return usage_error(fc, "missing subcommand (add, ls, show, rm, pool)");
	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		if (strcmp(argv[1], subs[i].name) == 0) {
			fc->cmd = subs[i].cmd;
			return subs[i].fn(fc, argc, argv);
		}
	}
	return usage_error(fc, "unknown subcommand '%s' (add, ls, show, rm, pool)", argv[1]);
}

/* ---------------------------------------------------------------- clones */

/* fork NAME [-n K] [--json] */
static int cmd_fork(struct forkd_cli *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME"};
	struct opt opts[] = {
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

	fc->synopsis = "fork NAME [-n K] [--json]";
	rc = parse_args(fc, argc, argv, 1, opts, names, 1, 1, &name);
	if (rc || (rc = check_template_name(fc, name)))
		return rc;
	if (opts[0].seen && (rc = parse_int_arg(fc, "-n", opts[0].value, 1, FORKD_MAX_COUNT, &count)))
		return rc;
	snprintf(path, sizeof(path), "/v1/templates/%s/clones", name);
	body = json_pack("{s:I}", "count", (json_int_t)count);
	if (!body)
		return fail("out of memory");
	if (opts[1].seen) {
		rc = forkd_call_print(fc, "POST", path, body);
		json_decref(body);
		return rc;
	}
	j = forkd_call_json(fc, "POST", path, body, &rc);
	json_decref(body);
	if (!j)
		return rc;
	list = json_object_get(j, "clones");
	if (!json_is_array(list)) {
		json_decref(j);
		return fail("%s: unexpected reply from forkd: no \"clones\" array", fc->cmd);
	}
	json_array_foreach(list, i, c)
	{
		char pid[24], us[24];

		fmt_int(c, "pid", pid, sizeof(pid));
		fmt_int(c, "fork_us", us, sizeof(us));
		printf("%s %s %s %sus\n", get_str(c, "id", "?"), pid,
		       get_str(c, "agent_socket", "-"), us);
	}
	json_decref(j);
	return 0;
}

/* Prints the result of an invoke reply, or the function's error. Returns
 * the exit status. */
static int print_invoke_reply(const struct forkd_cli *fc, const json_t *r)
{
	const json_t *ok = json_object_get(r, "ok"), *result;

	if (!json_is_boolean(ok))
		return fail("%s: unexpected reply from forkd: no \"ok\"", fc->cmd);
	if (!json_is_true(ok)) {
		const json_t *err = json_object_get(r, "error");

		fprintf(stderr, "error: %s: %s\n", get_str(err, "name", "Error"),
			get_str(err, "message", ""));
		return EXIT_FAILURE;
	}
	result = json_object_get(r, "result");
	if (!result) { /* undefined, a function...: JSON has no value for it */
		puts(get_str(r, "type", "undefined"));
		return 0;
	}
	return print_json(result, JSON_COMPACT);
}

/* invoke NAME FN ['JSON-ARGS'] [--timeout MS] [--json] */
static int cmd_invoke(struct forkd_cli *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME", "FN", "JSON-ARGS"};
	struct opt opts[] = {
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

	fc->synopsis = "invoke NAME FN ['JSON-ARGS'] [--timeout MS] [--json]";
	rc = parse_args(fc, argc, argv, 1, opts, names, 2, 3, pos);
	if (rc || (rc = check_template_name(fc, pos[0])))
		return rc;
	if (!pos[1][0])
		return usage_error(fc, "FN is empty");
	if (opts[0].seen && (rc = parse_int_arg(fc, "--timeout (milliseconds)", opts[0].value, 1,
						INVOKE_TIMEOUT_MAX_MS, &timeout)))
		return rc;
	if (pos[2]) {
		args = json_loads(pos[2], JSON_DECODE_ANY, &jerr);
		if (!args)
			return usage_error(fc, "JSON-ARGS is not valid JSON: %s (at column %d)",
					   jerr.text, jerr.column);
	}
	body = json_pack("{s:s, s:I}", "fn", pos[1], "timeout_ms", (json_int_t)timeout);
	if (!body) {
		json_decref(args);
		return fail("%s: cannot encode FN (is it valid UTF-8?)", fc->cmd);
	}
	if (args)
		json_object_set_new(body, "args", args);
	/* The HTTP wait covers the function's time limit plus making the clone. */
	if (!fc->timeout_given)
		fc->timeout_ms = (int)timeout + DEFAULT_TIMEOUT_MS;
	snprintf(path, sizeof(path), "/v1/templates/%s/invoke", pos[0]);
	r = forkd_call_json(fc, "POST", path, body, &rc);
	json_decref(body);
	if (!r)
		return rc;
	if (opts[1].seen) {
		rc = print_json(r, JSON_COMPACT);
		if (!rc && !json_is_true(json_object_get(r, "ok")))
			rc = EXIT_FAILURE;
	} else {
		rc = print_invoke_reply(fc, r);
	}
	json_decref(r);
	return rc;
}

/* clones [--template NAME] [--json] */
static int cmd_clones(struct forkd_cli *fc, int argc, char **argv)
{
	struct opt opts[] = {
	    {"template", 't', true, NULL, false},
	    {"json", 0, false, NULL, false},
	    {NULL, 0, false, NULL, false},
	};
	const json_t *list, *c;
	char path[112];
	size_t i;
	int width = 8, rc;
	json_t *j;

	fc->synopsis = "clones [--template NAME] [--json]";
	rc = parse_args(fc, argc, argv, 1, opts, NULL, 0, 0, NULL);
	if (rc)
		return rc;
	if (opts[0].seen && (rc = check_template_name(fc, opts[0].value)))
		return rc;
	snprintf(path, sizeof(path), "/v1/clones%s%s", opts[0].seen ? "?template=" : "",
		 opts[0].seen ? opts[0].value : "");
	if (opts[1].seen)
		return forkd_call_print(fc, "GET", path, NULL);
	j = forkd_call_json(fc, "GET", path, NULL, &rc);
	if (!j)
		return rc;
	list = json_object_get(j, "clones");
	if (!json_is_array(list)) {
		json_decref(j);
		return fail("%s: unexpected reply from forkd: no \"clones\" array", fc->cmd);
	}
	json_array_foreach(list, i, c) width =
	    MAX(width, (int)MIN(strlen(get_str(c, "template", "?")), (size_t)64));
	printf("%-12s  %-*s  %7s  %-14s  %-4s  %9s  %-8s  %s\n", "ID", width, "TEMPLATE", "PID",
	       "STATE", "FROM", "FORK_US", "AGE", "PLATFORM");
	json_array_foreach(list, i, c)
	{
		const json_t *from = json_object_get(c, "from_pool");
		char pid[24], state[48], us[24], age[32] = "-";
		long long created;

		fmt_int(c, "pid", pid, sizeof(pid));
		fmt_int(c, "fork_us", us, sizeof(us));
		fmt_state(c, state, sizeof(state));
		if (get_int(c, "created_unix_ms", &created))
			fmt_age(created, age, sizeof(age));
		printf("%-12s  %-*s  %7s  %-14s  %-4s  %9s  %-8s  %s\n", get_str(c, "id", "?"), width,
		       get_str(c, "template", "?"), pid, state,
		       !json_is_boolean(from) ? "-"
		       : json_is_true(from)   ? "pool"
					      : "cold",
		       us, age, get_str(c, "platform", "-"));
	}
	json_decref(j);
	return 0;
}

/* GET /v1/clones/ID: the clone, or NULL after printing the error. */
static json_t *get_clone(const struct forkd_cli *fc, const char *id, int *status)
{
	char path[64];

	snprintf(path, sizeof(path), "/v1/clones/%s", id);
	return forkd_call_json(fc, "GET", path, NULL, status);
}

/* clone show|pause|resume ID, kill ID: one request on /v1/clones/ID[/VERB]. */
static int clone_simple(struct forkd_cli *fc, int argc, char **argv, int first, const char *method,
			const char *verb)
{
	static const char *const names[] = {"ID"};
	struct opt opts[] = {{NULL, 0, false, NULL, false}};
	struct http_client_response resp;
	const char *id;
	char path[96];
	json_t *c;
	int rc;

	rc = parse_args(fc, argc, argv, first, opts, names, 1, 1, &id);
	if (rc || (rc = check_clone_id(fc, id)))
		return rc;
	if (!verb) { /* show */
		c = get_clone(fc, id, &rc);
		if (!c)
			return rc;
		rc = print_json(c, JSON_INDENT(2));
		json_decref(c);
		return rc;
	}
	snprintf(path, sizeof(path), "/v1/clones/%s%s%s", id, verb[0] ? "/" : "", verb);
	rc = forkd_call(fc, method, path, NULL, &resp);
	if (!rc)
		http_client_response_free(&resp);
	return rc;
}

/* clone snapshot ID [--tag T] [--json] */
static int clone_snapshot(struct forkd_cli *fc, int argc, char **argv)
{
	static const char *const names[] = {"ID"};
	struct opt opts[] = {
	    {"tag", 't', true, NULL, false},
	    {"json", 0, false, NULL, false},
	    {NULL, 0, false, NULL, false},
	};
	const char *id;
	char path[96];
	json_t *body, *r;
	int rc;

	fc->synopsis = "clone snapshot ID [--tag T] [--json]";
	rc = parse_args(fc, argc, argv, 2, opts, names, 1, 1, &id);
	if (rc || (rc = check_clone_id(fc, id)))
		return rc;
	if (opts[0].seen && !store_tag_valid(opts[0].value))
		return usage_error(fc, "bad tag '%s' (letters, digits, '.', '_', '-'; at most 128)",
				   opts[0].value);
	body = opts[0].seen ? json_pack("{s:s}", "tag", opts[0].value) : json_object();
	if (!body)
		return fail("out of memory");
	snprintf(path, sizeof(path), "/v1/clones/%s/snapshot", id);
	r = forkd_call_json(fc, "POST", path, body, &rc);
	json_decref(body);
	if (!r)
		return rc;
	if (opts[1].seen)
		rc = print_json(r, JSON_COMPACT);
	else
		puts(get_str(r, "id", "?"));
	json_decref(r);
	return rc;
}

static int cmd_clone(struct forkd_cli *fc, int argc, char **argv)
{
	fc->synopsis = "clone show|pause|resume|snapshot ID ...";
	if (argc < 2)
		return usage_error(fc, "missing subcommand (show, pause, resume, snapshot)");
	if (!strcmp(argv[1], "snapshot")) {
		fc->cmd = "clone snapshot";
		return clone_snapshot(fc, argc, argv);
	}
	if (!strcmp(argv[1], "show")) {
		fc->cmd = "clone show";
		fc->synopsis = "clone show ID";
		return clone_simple(fc, argc, argv, 2, "GET", NULL);
	}
	if (!strcmp(argv[1], "pause")) {
		fc->cmd = "clone pause";
		fc->synopsis = "clone pause ID";
		return clone_simple(fc, argc, argv, 2, "POST", "pause");
	}
	if (!strcmp(argv[1], "resume")) {
		fc->cmd = "clone resume";
		fc->synopsis = "clone resume ID";
		return clone_simple(fc, argc, argv, 2, "POST", "resume");
	}
	return usage_error(fc, "unknown subcommand '%s' (show, pause, resume, snapshot)", argv[1]);
}

/* A clone's string field that must be there (agent_socket, console_log).
 * NULL after printing why not, also when the clone has exited and exited
 * is not acceptable. */
static const char *clone_field(const struct forkd_cli *fc, const json_t *c, const char *id,
			       const char *key, bool exited_ok)
{
	const char *s = json_string_value(json_object_get(c, key));

	if (!exited_ok && !strcmp(get_str(c, "state", ""), "exited")) {
		const char *reason = get_str(json_object_get(c, "exit"), "reason", NULL);

		fail("%s: clone %s has exited%s%s", fc->cmd, id, reason ? ": " : "",
		     reason ? reason : "");
		return NULL;
	}
	if (!s || !s[0])
		fail("%s: forkd gave no %s for clone %s", fc->cmd, key, id);
	return s && s[0] ? s : NULL;
}

/* eval --clone ID 'JS' [--timeout SECONDS]: finds the clone's agent socket,
 * then runs the agent command as forkctl --agent=PATH eval would. */
static int cmd_eval(struct forkd_cli *fc, int argc, char **argv)
{
	const char *id = NULL, *sock;
	char **av, secs[32];
	int n = 0, rc;
	json_t *c;

	fc->synopsis = "eval --clone ID 'JS' [--timeout SECONDS]";
	av = calloc((size_t)argc + 3, sizeof(*av));
	if (!av)
		return fail("out of memory");
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
				return usage_error(fc, "option '--clone' needs a value");
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
		return usage_error(fc, "--clone ID is required (or talk to an agent socket with "
				       "forkctl --agent=PATH eval)");
	}
	if ((rc = check_clone_id(fc, id))) {
		free(av);
		return rc;
	}
	c = get_clone(fc, id, &rc);
	if (!c) {
		free(av);
		return rc;
	}
	sock = clone_field(fc, c, id, "agent_socket", false);
	if (sock && !strcmp(get_str(c, "state", ""), "paused")) {
		/* Its agent cannot answer: say so rather than time out. */
		fail("%s: clone %s is paused (forkctl clone resume %s)", fc->cmd, id, id);
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
static bool clone_ended(const struct forkd_cli *fc, const char *id, int *status)
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
		*status = connect_error(fc, rc);
		return true;
	}
	if (resp.status == 404) { /* deleted meanwhile */
		http_client_response_free(&resp);
		return true;
	}
	if (resp.status != 200) {
		*status = error_reply(&resp);
		http_client_response_free(&resp);
		return true;
	}
	c = json_loadb(resp.body, resp.body_len, 0, NULL);
	http_client_response_free(&resp);
	state = get_str(c, "state", "");
	ended = !strcmp(state, "exited");
	json_decref(c);
	return ended;
}

/* console ID [-f] */
static int cmd_console(struct forkd_cli *fc, int argc, char **argv)
{
	static const char *const names[] = {"ID"};
	struct opt opts[] = {{"follow", 'f', false, NULL, false}, {NULL, 0, false, NULL, false}};
	const struct timespec tick = {0, FOLLOW_READ_MS * 1000000L};
	const char *id, *logpath;
	off_t pos = 0;
	int fd, rc, status = 0;
	json_t *c;

	fc->synopsis = "console ID [-f]";
	rc = parse_args(fc, argc, argv, 1, opts, names, 1, 1, &id);
	if (rc || (rc = check_clone_id(fc, id)))
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
		rc = fail("%s: cannot open %s: %s", fc->cmd, logpath, strerror(errno));
		json_decref(c);
		return rc;
	}
	bool ended = !strcmp(get_str(c, "state", ""), "exited");
	json_decref(c);
	for (unsigned tickno = 1;; tickno++) {
		rc = copy_new(fd, &pos);
		if (rc < 0) {
			status = rc == -EIO ? fail("%s: cannot write to stdout", fc->cmd)
					    : fail("%s: reading the console log: %s", fc->cmd,
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
static int cmd_get_raw(struct forkd_cli *fc, int argc, char **argv, const char *path)
{
	struct opt opts[] = {{NULL, 0, false, NULL, false}};
	int rc;

	rc = parse_args(fc, argc, argv, 1, opts, NULL, 0, 0, NULL);
	return rc ? rc : forkd_call_print(fc, "GET", path, NULL);
}

static int cmd_metrics(struct forkd_cli *fc, int argc, char **argv)
{
	fc->synopsis = "metrics";
	return cmd_get_raw(fc, argc, argv, "/v1/metrics");
}

static int cmd_ping(struct forkd_cli *fc, int argc, char **argv)
{
	fc->synopsis = "ping";
	return cmd_get_raw(fc, argc, argv, "/v1/ping");
}

static int cmd_kill(struct forkd_cli *fc, int argc, char **argv)
{
	fc->synopsis = "kill ID";
	return clone_simple(fc, argc, argv, 1, "DELETE", "");
}

/* ---------------------------------------------------------------- entry */

static const struct {
	const char *name;
	int (*fn)(struct forkd_cli *fc, int argc, char **argv);
	bool needs_forkd_option; /* the name is also a VMM API command */
} forkd_cmds[] = {
    {"template", cmd_template, false}, {"fork", cmd_fork, false},
    {"invoke", cmd_invoke, false},     {"clones", cmd_clones, false},
    {"clone", cmd_clone, false},       {"kill", cmd_kill, false},
    {"eval", cmd_eval, false},	       {"console", cmd_console, false},
    {"metrics", cmd_metrics, false},   {"ping", cmd_ping, true},
};

bool cli_forkd_is_command(const char *name, bool forkd_given)
{
	for (size_t i = 0; i < ARRAY_SIZE(forkd_cmds); i++)
		if (!strcmp(name, forkd_cmds[i].name))
			return forkd_given || !forkd_cmds[i].needs_forkd_option;
	return false;
}

int cli_forkd_main(const char *socket, int timeout_ms, bool timeout_given, int argc, char **argv)
{
	struct forkd_cli fc = {
	    .socket = socket,
	    .timeout_ms = timeout_given ? timeout_ms : DEFAULT_TIMEOUT_MS,
	    .timeout_given = timeout_given,
	};
	char defsock[PATH_MAX];
	int rc;

	if (argc < 1)
		return fail("missing forkd command");
	fc.cmd = argv[0];
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
			return fail("the default forkd socket path is too long: give --forkd=SOCK");
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
	return fail("unknown forkd command '%s'", argv[0]);
}
