/* cli/args.c - forkctl's command-line words: the option parser its
 * commands share, and the usage-error and failure messages they print. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/util.h"

/* ---------------------------------------------------------------- messages */

/* Prints "PROG: [NAME: ]MESSAGE" and what cmd says follows it. Returns CLI_EXIT_USAGE. */
int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", cmd->prog);
	if (cmd->name)
		fprintf(stderr, "%s: ", cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (cmd->synopsis)
		fprintf(stderr, "usage: %s %s\n", cmd->usage_prefix, cmd->synopsis);
	if (cmd->usage_text)
		fputs(cmd->usage_text, stderr);
	if (cmd->try_help)
		fputs("Try 'forkctl --help' for more information.\n", stderr);
	return CLI_EXIT_USAGE;
}

/* Prints "forkctl: [CMD: ]MESSAGE" to stderr. Returns EXIT_FAILURE. */
int cli_fail(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("forkctl: ", stderr);
	if (cmd)
		fprintf(stderr, "%s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_FAILURE;
}

/* ---------------------------------------------------------------- options */

/* True if a looks like an option rather than an argument: "-5", "-.5", "-"
 * and anything not starting with '-' are arguments; with long_only, so is
 * "-c...". */
static bool looks_like_option(const char *a, bool long_only)
{
	if (long_only)
		return a[0] == '-' && a[1] == '-';
	return a[0] == '-' && a[1] && a[1] != '.' && (a[1] < '0' || a[1] > '9');
}

/* Finds the option named by a ("--name..." or "-c..."); sets *inline_val to
 * the value glued to it, if any. NULL if unknown. */
static struct cli_opt *find_opt(struct cli_opt *opts, const char *a, const char **inline_val)
{
	*inline_val = NULL;
	for (struct cli_opt *o = opts; o->name; o++) {
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

/* Starts a walk over argv[first..argc) with the option table opts. */
void cli_args_init(struct cli_args *a, int argc, char **argv, int first, struct cli_opt *opts)
{
	*a = (struct cli_args){.argc = argc, .argv = argv, .next = first, .opts = opts};
}

/* Reads the next argument or option of the walk. Returns what it read. */
enum cli_args_kind cli_args_next(struct cli_args *a)
{
	const char *w, *val;

	a->opt = NULL;
	a->value = NULL;
	for (;;) {
		if (a->next >= a->argc)
			return CLI_ARGS_END;
		w = a->word = a->argv[a->next++];
		if (a->only_args || strcmp(w, "--") != 0)
			break;
		a->only_args = true;
	}
	if (a->only_args || !looks_like_option(w, a->long_only))
		return CLI_ARGS_ARGUMENT;
	a->opt = find_opt(a->opts, w, &val);
	if (!a->opt)
		return CLI_ARGS_UNKNOWN;
	if (!a->opt->takes_value && val)
		return CLI_ARGS_NO_VALUE;
	if (a->opt->takes_value && !val) {
		if (a->next >= a->argc)
			return CLI_ARGS_NEEDS_VALUE;
		val = a->argv[a->next++];
	}
	a->opt->seen = true;
	a->opt->value = a->value = val;
	return CLI_ARGS_OPTION;
}

/* Parses a whole command line into opts and pos[]. Returns 0 or CLI_EXIT_USAGE, printed. */
int cli_parse_args(const struct cli_cmd *cmd, int argc, char **argv, int first,
		   struct cli_opt *opts, const char *const *pos_names, int min_pos, int max_pos,
		   const char **pos)
{
	struct cli_args a;
	int npos = 0;

	cli_args_init(&a, argc, argv, first, opts);
	for (;;) {
		switch (cli_args_next(&a)) {
		case CLI_ARGS_END:
			if (npos < min_pos)
				return cli_usage_error(cmd, "missing %s", pos_names[npos]);
			for (int i = npos; i < max_pos; i++)
				pos[i] = NULL;
			return 0;
		case CLI_ARGS_ARGUMENT:
			if (npos >= max_pos)
				return cli_usage_error(cmd, "unexpected argument '%s'", a.word);
			pos[npos++] = a.word;
			break;
		case CLI_ARGS_OPTION:
			break;
		case CLI_ARGS_UNKNOWN:
			return cli_usage_error(cmd, "unknown option '%s'", a.word);
		case CLI_ARGS_NO_VALUE:
			if (a.word[1] == '-')
				return cli_usage_error(cmd, "option '--%s' takes no value",
						       a.opt->name);
			return cli_usage_error(cmd, "unknown option '%s'", a.word);
		case CLI_ARGS_NEEDS_VALUE:
			return cli_usage_error(cmd, "option '%s' needs a value", a.word);
		}
	}
}

/* Parses a whole number in [min, max]. Returns 0 or CLI_EXIT_USAGE, printed. */
int cli_parse_uint(const struct cli_cmd *cmd, const char *what, const char *s, uint64_t min,
		   uint64_t max, uint64_t *out)
{
	if (parse_u64(s, min, max, out) < 0)
		return cli_usage_error(
		    cmd, "%s must be a whole number from %" PRIu64 " to %" PRIu64 ", not '%s'",
		    what, min, max, s);
	return 0;
}
