/* tests/unit/test_cli.c - what a user of the four binaries expects
 * (issue 15): --version and -V everywhere, forkctl help COMMAND and
 * forkctl COMMAND --help for every kind of command, and the documented
 * exit codes: 0 success, 1 failure, 2 usage. */
#include <criterion/criterion.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/harness.h"
#include "vmm/vmm.h"

static int run(const char *const argv[], char **out, char **err)
{
	char *dir = h_tmpdir();
	int st = h_run(dir, argv, 20000, out, err);
	h_rmtree(dir);
	free(dir);
	return st;
}

Test(cli, every_binary_has_version_and_V)
{
	static const char *const names[] = { "forkvm", "forkctl", "forkd", "forkbench" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *bin = h_bin(names[i]), want[64];
		snprintf(want, sizeof(want), "%s %s\n", names[i], FORKVM_VERSION);
		for (int v = 0; v < 2; v++) {
			const char *argv[] = { bin, v ? "-V" : "--version", NULL };
			char *out = NULL, *err = NULL;
			int st = run(argv, &out, &err);
			cr_assert_eq(st, 0, "%s %s: %d %s", names[i], argv[1], st, err);
			cr_assert_str_eq(out, want, "%s %s", names[i], argv[1]);
			free(out);
			free(err);
		}
		/* an unknown option is a usage error */
		const char *bad[] = { bin, "--no-such-option", NULL };
		char *err = NULL;
		cr_assert_eq(run(bad, NULL, &err), 2, "%s --no-such-option: %s", names[i], err);
		free(err);
		free(bin);
	}
}

/* A usage error after options that allocate (--kernel, --cmdline) still
 * exits 2: in the SAN build a leak report used to turn it into 1. */
Test(cli, forkvm_usage_errors_exit_2_after_allocating_options)
{
	char *bin = h_bin("forkvm"), *err = NULL;
	const char *argv[] = { bin, "--kernel", "/k", "--cmdline", "a b", "--initramfs", "/i",
			       "stray", NULL };
	cr_assert_eq(run(argv, NULL, &err), 2, "%s", err);
	cr_assert(strstr(err, "unexpected argument: stray"), "%s", err);
	free(err);
	const char *argv2[] = { bin, "--kernel", "/k", "--platform", "bogus", NULL };
	cr_assert_eq(run(argv2, NULL, &err), 2, "%s", err);
	free(err);
	free(bin);
}

/* forkctl's help for one command: status and output. */
static int help(char **out, const char *a, const char *b, const char *c)
{
	char *bin = h_bin("forkctl");
	const char *argv[] = { bin, a, b, c, NULL };
	char *err = NULL;
	int st = run(argv, out, &err);
	free(err);
	free(bin);
	return st;
}

Test(cli, forkctl_help_for_each_kind_of_command)
{
	char *out = NULL;
	/* API command */
	cr_assert_eq(help(&out, "help", "pause", NULL), 0);
	cr_assert(strstr(out, "API commands:") && strstr(out, "PUT vm.pause"), "%s", out);
	free(out);
	cr_assert_eq(help(&out, "snapshot", "--help", NULL), 0);
	cr_assert(strstr(out, "store://TAG"), "%s", out);
	free(out);
	/* agent command, and the fork daemon's command of the same name */
	cr_assert_eq(help(&out, "help", "eval", NULL), 0);
	cr_assert(strstr(out, "Agent command") && strstr(out, "--clone ID"), "%s", out);
	free(out);
	/* store command */
	cr_assert_eq(help(&out, "store", "gc", "--help"), 0);
	cr_assert(strstr(out, "--image-budget"), "%s", out);
	free(out);
	/* fork daemon command */
	cr_assert_eq(help(&out, "help", "fork", NULL), 0);
	cr_assert(strstr(out, "Fork daemon commands:") && strstr(out, "make K clones"), "%s", out);
	free(out);
	/* unknown */
	cr_assert_eq(help(&out, "help", "frobnicate", NULL), 2);
	free(out);
}

/* The options a text names: every "--word" and "-x" at a word start. */
static void options_of(const char *text, char set[][32], int *n)
{
	*n = 0;
	for (const char *p = text; *p; p++) {
		if (*p != '-' || (p > text && p[-1] != ' ' && p[-1] != '[' && p[-1] != '\n' &&
				  p[-1] != '|' && p[-1] != '`'))
			continue;
		const char *q = p + (p[1] == '-' ? 2 : 1);
		size_t len = 0;
		while (q[len] && (q[len] == '-' || (q[len] >= 'a' && q[len] <= 'z') ||
				  (q[len] >= 'A' && q[len] <= 'Z')))
			len++;
		if (!len || (p[1] != '-' && len != 1))
			continue;
		char opt[32];
		snprintf(opt, sizeof(opt), "%.*s", (int)(q + len - p), p);
		bool seen = false;
		for (int i = 0; i < *n; i++)
			seen = seen || !strcmp(set[i], opt);
		if (!seen && *n < 64)
			snprintf(set[(*n)++], 32, "%s", opt);
		p = q + len - 1;
	}
}

/* The README's forkd synopsis names exactly the options forkd --help
 * lists (issue 15: it omitted --forkvm and -v). */
Test(cli, readme_forkd_synopsis_matches_forkd_help)
{
	char *bin = h_bin("forkd"), *out = NULL, *readme = h_join(h_src_dir(), "README.md");
	const char *argv[] = { bin, "--help", NULL };
	cr_assert_eq(run(argv, &out, NULL), 0);
	/* the option column of --help: lines that start with "  -" */
	char help[8192] = "";
	for (char *l = out; l && *l;) {
		char *nl = strchr(l, '\n');
		if (!strncmp(l, "  -", 3)) {
			char *end = strstr(l + 2, "  ");
			size_t n = (size_t)((end && (!nl || end < nl) ? end : nl ? nl : l + strlen(l)) - l);
			strncat(help, l, n);
			strcat(help, "\n");
		}
		l = nl ? nl + 1 : NULL;
	}
	char *text = h_read_file(readme);
	cr_assert_not_null(text, "%s", readme);
	char *start = strstr(text, "```sh\nforkd [");
	cr_assert_not_null(start, "no forkd synopsis in the README");
	char *end = strstr(start + 6, "```");
	*end = 0;
	char a[64][32], b[64][32];
	int na, nb;
	options_of(help, a, &na);
	options_of(start + 6, b, &nb);
	for (int i = 0; i < na; i++) {
		bool in = false;
		for (int j = 0; j < nb; j++)
			in = in || !strcmp(a[i], b[j]);
		cr_assert(in, "forkd --help has %s, the README's synopsis does not", a[i]);
	}
	for (int j = 0; j < nb; j++) {
		bool in = false;
		for (int i = 0; i < na; i++)
			in = in || !strcmp(a[i], b[j]);
		cr_assert(in, "the README's synopsis has %s, forkd --help does not", b[j]);
	}
	free(text);
	free(out);
	free(readme);
	free(bin);
}
