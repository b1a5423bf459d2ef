/* cli/template_cmd.c - forkctl template add|ls|show|rm|pool: forkd's
 * templates (docs/forkd-api.md). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/util.h"
#include "forkd/forkd.h"

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

/* Prints a template as "NAME SNAPSHOT12 pool SIZE". */
static void print_template_line(const json_t *t)
{
	long long size = 0;

	cli_json_int(json_object_get(t, "pool"), "size", &size);
	printf("%s %.12s pool %lld\n", cli_json_str(t, "name", "?"),
	       cli_json_str(t, "snapshot", "?"), size);
}

/* Prints a template reply as a line, or as it came with --json. */
static int print_template_reply(const json_t *t, bool as_json)
{
	if (as_json)
		return cli_print_json(t, JSON_COMPACT);
	print_template_line(t);
	return 0;
}

/* Reads a file given to a command into a NUL-terminated buffer of at most
 * forkd's body limit. Returns 0 or EXIT_FAILURE after printing why. */
static int read_input(const struct cli_forkd *fc, const char *file, char **buf, size_t *len)
{
	int rc = file_read_all(file, CLI_FORKD_BODY_MAX, buf, len);

	if (rc == -EFBIG)
		return cli_fail(fc->cmd.name, "%s is over forkd's 1 MiB request limit", file);
	if (rc < 0)
		return cli_fail(fc->cmd.name, "cannot read %s: %s", file, strerror(-rc));
	return 0;
}

/* Adds "boot" (CONFIG.json's object) and "load" (SCRIPT.js's text) to body.
 * Returns 0 or the exit status. */
static int add_boot(const struct cli_forkd *fc, json_t *body, const char *config,
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
		return cli_fail(fc->cmd.name, "%s:%d:%d: invalid JSON: %s", config, err.line,
				err.column, err.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return cli_fail(fc->cmd.name, "%s: the VM configuration must be a JSON object",
				config);
	}
	json_object_set_new(body, "boot", j);
	if (!script)
		return 0;
	rc = read_input(fc, script, &buf, &len);
	if (rc)
		return rc;
	if (memchr(buf, '\0', len)) {
		free(buf);
		return cli_fail(fc->cmd.name, "%s contains NUL bytes", script);
	}
	j = json_stringn(buf, len);
	free(buf);
	if (!j)
		return cli_fail(fc->cmd.name, "%s is not valid UTF-8", script);
	json_object_set_new(body, "load", j);
	return 0;
}

/* template add NAME (--snapshot REF | --boot CONFIG.json [--load SCRIPT.js]) [--pool K] [--json] */
static int template_add(struct cli_forkd *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME"};
	struct cli_opt opts[] = {
	    {"snapshot", 0, true, NULL, false}, {"boot", 0, true, NULL, false},
	    {"load", 0, true, NULL, false},	{"pool", 0, true, NULL, false},
	    {"json", 0, false, NULL, false},	{NULL, 0, false, NULL, false},
	};
	const char *name;
	uint64_t pool = 0;
	json_t *body, *t;
	int rc;

	fc->cmd.synopsis =
	    "template add NAME (--snapshot ID|TAG | --boot CONFIG.json [--load SCRIPT.js]) "
	    "[--pool K] [--json]";
	rc = cli_parse_args(&fc->cmd, argc, argv, 2, opts, names, 1, 1, &name);
	if (rc)
		return rc;
	if ((rc = cli_forkd_check_template_name(fc, name)))
		return rc;
	if (opts[0].seen == opts[1].seen)
		return cli_usage_error(&fc->cmd,
				       "give either --snapshot ID|TAG or --boot CONFIG.json");
	if (opts[2].seen && !opts[1].seen)
		return cli_usage_error(
		    &fc->cmd, "--load goes with --boot (a snapshot has its handlers already)");
	if (opts[0].seen && !opts[0].value[0])
		return cli_usage_error(&fc->cmd, "--snapshot needs a snapshot id or tag");
	if (opts[3].seen &&
	    (rc = cli_parse_uint(&fc->cmd, "--pool", opts[3].value, 0, FORKD_MAX_POOL, &pool)))
		return rc;

	body = json_pack("{s:s}", "name", name);
	if (!body)
		return cli_fail(NULL, "out of memory");
	if (opts[0].seen)
		json_object_set_new(body, "snapshot", json_string(opts[0].value));
	else if ((rc = add_boot(fc, body, opts[1].value, opts[2].value))) {
		json_decref(body);
		return rc;
	}
	if (opts[3].seen)
		json_object_set_new(body, "pool", json_integer((json_int_t)pool));
	t = cli_forkd_call_json(fc, "POST", "/v1/templates", body, &rc);
	json_decref(body);
	if (!t)
		return rc;
	rc = print_template_reply(t, opts[4].seen);
	json_decref(t);
	return rc;
}

/* template ls [--json] */
static int template_ls(struct cli_forkd *fc, int argc, char **argv)
{
	struct cli_opt opts[] = {{"json", 0, false, NULL, false}, {NULL, 0, false, NULL, false}};
	const json_t *list, *t;
	size_t i;
	int width = 4, rc;
	json_t *j;

	fc->cmd.synopsis = "template ls [--json]";
	rc = cli_parse_args(&fc->cmd, argc, argv, 2, opts, NULL, 0, 0, NULL);
	if (rc)
		return rc;
	if (opts[0].seen)
		return cli_forkd_call_print(fc, "GET", "/v1/templates", NULL);
	j = cli_forkd_call_list(fc, "GET", "/v1/templates", NULL, "templates", &list, &rc);
	if (!j)
		return rc;
	json_array_foreach(list, i, t) width =
	    MAX(width, (int)MIN(strlen(cli_json_str(t, "name", "?")), (size_t)64));
	printf("%-*s  %-12s  %9s  %5s  %9s  %6s  %6s  %s\n", width, "NAME", "SNAPSHOT", "MEMORY",
	       "VCPUS", "POOL", "CLONES", "FORKS", "PLATFORM");
	json_array_foreach(list, i, t)
	{
		const json_t *pool = json_object_get(t, "pool");
		char mem[32] = "-", vcpus[24], poolbuf[48] = "-", clones[24], forks[24];
		long long v, ready;

		if (cli_json_int(t, "memory_size", &v))
			fmt_bytes(v, mem, sizeof(mem));
		if (cli_json_int(pool, "size", &v) && cli_json_int(pool, "ready", &ready))
			snprintf(poolbuf, sizeof(poolbuf), "%lld/%lld", ready, v);
		cli_fmt_int(t, "vcpus", vcpus, sizeof(vcpus));
		cli_fmt_int(t, "clones", clones, sizeof(clones));
		cli_fmt_int(t, "forks", forks, sizeof(forks));
		printf("%-*s  %-12.12s  %9s  %5s  %9s  %6s  %6s  %s\n", width,
		       cli_json_str(t, "name", "?"), cli_json_str(t, "snapshot", "-"), mem, vcpus,
		       poolbuf, clones, forks, cli_json_str(t, "platform", "-"));
	}
	json_decref(j);
	return 0;
}

/* template show NAME */
static int template_show(struct cli_forkd *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME"};
	struct cli_opt opts[] = {{NULL, 0, false, NULL, false}};
	char path[96];
	const char *name;
	json_t *t;
	int rc;

	fc->cmd.synopsis = "template show NAME";
	rc = cli_parse_args(&fc->cmd, argc, argv, 2, opts, names, 1, 1, &name);
	if (rc || (rc = cli_forkd_check_template_name(fc, name)))
		return rc;
	snprintf(path, sizeof(path), "/v1/templates/%s", name);
	t = cli_forkd_call_json(fc, "GET", path, NULL, &rc);
	if (!t)
		return rc;
	rc = cli_print_json(t, JSON_INDENT(2));
	json_decref(t);
	return rc;
}

/* template rm NAME [--force] */
static int template_rm(struct cli_forkd *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME"};
	struct cli_opt opts[] = {{"force", 'f', false, NULL, false}, {NULL, 0, false, NULL, false}};
	struct http_client_response resp;
	char path[112];
	const char *name;
	int rc;

	fc->cmd.synopsis = "template rm NAME [--force]";
	rc = cli_parse_args(&fc->cmd, argc, argv, 2, opts, names, 1, 1, &name);
	if (rc || (rc = cli_forkd_check_template_name(fc, name)))
		return rc;
	snprintf(path, sizeof(path), "/v1/templates/%s%s", name, opts[0].seen ? "?force=true" : "");
	rc = cli_forkd_call(fc, "DELETE", path, NULL, &resp);
	if (!rc)
		http_client_response_free(&resp);
	return rc;
}

/* template pool NAME K [--json] */
static int template_pool(struct cli_forkd *fc, int argc, char **argv)
{
	static const char *const names[] = {"NAME", "K (the pool size)"};
	struct cli_opt opts[] = {{"json", 0, false, NULL, false}, {NULL, 0, false, NULL, false}};
	const char *pos[2];
	char path[112];
	uint64_t k;
	json_t *body, *t;
	int rc;

	fc->cmd.synopsis = "template pool NAME K [--json]";
	rc = cli_parse_args(&fc->cmd, argc, argv, 2, opts, names, 2, 2, pos);
	if (rc || (rc = cli_forkd_check_template_name(fc, pos[0])) ||
	    (rc = cli_parse_uint(&fc->cmd, "the pool size", pos[1], 0, FORKD_MAX_POOL, &k)))
		return rc;
	snprintf(path, sizeof(path), "/v1/templates/%s/pool", pos[0]);
	body = json_pack("{s:I}", "size", (json_int_t)k);
	if (!body)
		return cli_fail(NULL, "out of memory");
	t = cli_forkd_call_json(fc, "PUT", path, body, &rc);
	json_decref(body);
	if (!t)
		return rc;
	rc = print_template_reply(t, opts[0].seen);
	json_decref(t);
	return rc;
}

/* template add|ls|show|rm|pool ...: forkd's templates. */
int cli_forkd_template(struct cli_forkd *fc, int argc, char **argv)
{
	static const struct {
		const char *name, *cmd;
		int (*fn)(struct cli_forkd *fc, int argc, char **argv);
	} subs[] = {
	    {"add", "template add", template_add},    {"ls", "template ls", template_ls},
	    {"show", "template show", template_show}, {"rm", "template rm", template_rm},
	    {"pool", "template pool", template_pool},
	};

	fc->cmd.synopsis = "template add|ls|show|rm|pool ...";
	if (argc < 2)
		return cli_usage_error(&fc->cmd, "missing subcommand (add, ls, show, rm, pool)");
	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		if (strcmp(argv[1], subs[i].name) == 0) {
			fc->cmd.name = subs[i].cmd;
			return subs[i].fn(fc, argc, argv);
		}
	}
	return cli_usage_error(&fc->cmd, "unknown subcommand '%s' (add, ls, show, rm, pool)",
			       argv[1]);
}
