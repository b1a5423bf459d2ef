/* cli/forkd_client.c - forkctl's client of the fork daemon's REST API
 * (docs/forkd-api.md) over its Unix socket (common/http.h): requests,
 * error replies, replies as JSON, and the checks and JSON helpers the
 * forkd commands share. */
#include <errno.h>
#include <http_parser.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/forkd_socket.h"
#include "common/http.h"
#include "common/util.h"
#include "forkd/forkd.h"

#define CLONE_ID_MAX 32

/* ---------------------------------------------------------------- requests */

/* Prints why a request to forkd got no HTTP answer. Returns EXIT_FAILURE. */
int cli_forkd_connect_error(const struct cli_forkd *fc, int rc)
{
	const char *hint = fc->socket_default
			       ? " (the default socket; --forkd=SOCK or $" FORKD_SOCKET_ENV
				 " choose another)"
			       : "";

	switch (rc) {
	case -ENOENT:
		return cli_fail(
		    NULL, "cannot connect to forkd at %s: no such socket; is forkd running?%s",
		    fc->socket, hint);
	case -ECONNREFUSED:
		return cli_fail(
		    NULL, "cannot connect to forkd at %s: connection refused; is forkd running?%s",
		    fc->socket, hint);
	case -EACCES:
	case -EPERM:
		return cli_fail(
		    NULL,
		    "cannot connect to forkd at %s: permission denied (the socket is mode 0600: "
		    "run as forkd's user)",
		    fc->socket);
	case -ENOTSOCK:
	case -ENOTDIR:
		return cli_fail(NULL, "cannot connect to forkd at %s: not a socket%s", fc->socket,
				hint);
	case -ENAMETOOLONG:
		return cli_fail(
		    NULL, "cannot connect to forkd at %s: the path is too long for a Unix socket",
		    fc->socket);
	case -ETIMEDOUT:
		return cli_fail(
		    fc->cmd.name,
		    "no reply from forkd at %s within %.1f s (--timeout SECONDS before the "
		    "command waits longer)",
		    fc->socket, fc->timeout_ms / 1000.0);
	case -EPROTO:
		return cli_fail(fc->cmd.name,
				"malformed HTTP reply from %s (is it forkd's socket?)", fc->socket);
	case -EFBIG:
		return cli_fail(fc->cmd.name, "the reply from forkd is too large");
	default:
		return cli_fail(fc->cmd.name, "request to forkd at %s failed: %s", fc->socket,
				strerror(-rc));
	}
}

/* Prints the error of a non-2xx reply: "forkctl: MESSAGE (HTTP NNN)" with
 * the body's "error", else its text, else the status. Returns EXIT_FAILURE. */
int cli_forkd_error_reply(const struct http_client_response *resp)
{
	json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
	const char *msg = json_string_value(json_object_get(j, "error"));
	size_t len = resp->body_len;
	int rc;

	if (msg) {
		rc = cli_fail(NULL, "%s (HTTP %d)", msg, resp->status);
		json_decref(j);
		return rc;
	}
	json_decref(j);
	while (len && (resp->body[len - 1] == '\n' || resp->body[len - 1] == '\r' ||
		       resp->body[len - 1] == ' '))
		len--;
	if (len)
		return cli_fail(NULL, "%.*s (HTTP %d)", (int)MIN(len, (size_t)1024), resp->body,
				resp->status);
	return cli_fail(NULL, "%s (HTTP %d)", http_status_str((enum http_status)resp->status),
			resp->status);
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
		return cli_fail(
		    NULL,
		    "refusing the default forkd socket %s: its directory is owned by uid "
		    "%u, not you "
		    "(give --forkd=SOCK to use it anyway)",
		    sock, (unsigned)st.st_uid);
	return 0;
}

/* Sends one request (body: a JSON object, borrowed, or NULL) to path.
 * Returns 0 with a 2xx reply in *resp (caller frees it), or the exit status
 * after printing the error. */
int cli_forkd_call(const struct cli_forkd *fc, const char *method, const char *path,
		   const json_t *body, struct http_client_response *resp)
{
	char *text = NULL;
	int rc;

	if (fc->socket_guessed && (rc = check_default_socket_dir(fc->socket)))
		return rc;
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text)
			return cli_fail(fc->cmd.name,
					"cannot encode the request (is the text valid UTF-8?)");
		if (strlen(text) > CLI_FORKD_BODY_MAX) {
			free(text);
			return cli_fail(fc->cmd.name, "the request is over forkd's 1 MiB limit");
		}
	}
	rc = http_client_request(fc->socket, method, path, text ? "application/json" : NULL, text,
				 text ? strlen(text) : 0, fc->timeout_ms, resp);
	free(text);
	if (rc < 0)
		return cli_forkd_connect_error(fc, rc);
	if (resp->status < 200 || resp->status > 299) {
		rc = cli_forkd_error_reply(resp);
		http_client_response_free(resp);
		return rc;
	}
	return 0;
}

/* The reply's body as a JSON object, or NULL after printing why not. */
static json_t *reply_object(const struct cli_forkd *fc, const struct http_client_response *resp)
{
	json_error_t err;
	json_t *j = json_loadb(resp->body, resp->body_len, 0, &err);

	if (!j) {
		cli_fail(fc->cmd.name, "malformed JSON from forkd: %s (line %d, column %d)",
			 err.text, err.line, err.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		cli_fail(fc->cmd.name, "unexpected reply from forkd: not a JSON object");
		return NULL;
	}
	return j;
}

/* A request whose JSON object reply is needed: returns it, or NULL after
 * printing the error (*status: the exit status). */
json_t *cli_forkd_call_json(const struct cli_forkd *fc, const char *method, const char *path,
			    const json_t *body, int *status)
{
	struct http_client_response resp;
	json_t *j;

	*status = cli_forkd_call(fc, method, path, body, &resp);
	if (*status)
		return NULL;
	j = reply_object(fc, &resp);
	http_client_response_free(&resp);
	*status = j ? 0 : EXIT_FAILURE;
	return j;
}

/* A request whose reply is an object holding the array key: returns the
 * reply with *list pointing into it, or NULL after printing the error. */
json_t *cli_forkd_call_list(const struct cli_forkd *fc, const char *method, const char *path,
			    const json_t *body, const char *key, const json_t **list, int *status)
{
	json_t *j = cli_forkd_call_json(fc, method, path, body, status);

	if (!j)
		return NULL;
	*list = json_object_get(j, key);
	if (!json_is_array(*list)) {
		json_decref(j);
		*status = cli_fail(fc->cmd.name, "unexpected reply from forkd: no \"%s\" array", key);
		return NULL;
	}
	return j;
}

/* A request whose reply is printed as it is (or nothing for an empty one). */
int cli_forkd_call_print(const struct cli_forkd *fc, const char *method, const char *path,
			 const json_t *body)
{
	struct http_client_response resp;
	int rc = cli_forkd_call(fc, method, path, body, &resp);

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
int cli_print_json(const json_t *j, size_t flags)
{
	char *s = json_dumps(j, flags | JSON_ENCODE_ANY);

	if (!s)
		return cli_fail(NULL, "cannot print the reply");
	puts(s);
	free(s);
	return 0;
}

/* ---------------------------------------------------------------- formatting */

/* json_integer_value() that tells absence apart: false if j is not an integer. */
bool cli_json_int(const json_t *obj, const char *key, long long *out)
{
	const json_t *j = json_object_get(obj, key);

	if (!json_is_integer(j))
		return false;
	*out = (long long)json_integer_value(j);
	return true;
}

/* obj's string field key, or dflt when it is absent or not a string. */
const char *cli_json_str(const json_t *obj, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : dflt;
}

/* An integer field as text, "-" when absent. */
void cli_fmt_int(const json_t *obj, const char *key, char *out, size_t len)
{
	long long v;

	if (cli_json_int(obj, key, &v))
		snprintf(out, len, "%lld", v);
	else
		snprintf(out, len, "-");
}

/* ---------------------------------------------------------------- checks */

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

/* Returns 0 if name is a valid template name, else CLI_EXIT_USAGE, printed. */
int cli_forkd_check_template_name(const struct cli_forkd *fc, const char *name)
{
	if (forkd_template_name_valid(name))
		return 0;
	return cli_usage_error(
	    &fc->cmd,
	    "bad template name '%s' (1 to 32 letters, digits, '_', '.', '-'; not "
	    "starting with '.' or '-')",
	    name);
}

/* Returns 0 if id looks like a clone id, else CLI_EXIT_USAGE, printed. */
int cli_forkd_check_clone_id(const struct cli_forkd *fc, const char *id)
{
	if (clone_id_valid(id))
		return 0;
	return cli_usage_error(&fc->cmd, "'%s' is not a clone id (hex digits, e.g. 9e3b5f0c1a7d)",
			       id);
}
