/* tests/unit/test_cli.c - what a user of the four binaries expects
 * (issue 15): --version and -V everywhere, forkctl help COMMAND and
 * forkctl COMMAND --help for every kind of command, and the documented
 * exit codes: 0 success, 1 failure, 2 usage. */
#include <criterion/criterion.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* The long options a text names ("--word"), unescaping scdoc's \_ and \*. */
static void long_options(const char *text, char set[][32], int *n)
{
	*n = 0;
	for (const char *p = text; (p = strstr(p, "--")); p += 2) {
		if (p > text && (p[-1] == '-' || (p[-1] >= 'a' && p[-1] <= 'z')))
			continue;
		size_t len = 2;
		while (p[len] == '-' || (p[len] >= 'a' && p[len] <= 'z'))
			len++;
		if (len < 4)
			continue;
		char opt[32];
		snprintf(opt, sizeof(opt), "%.*s", (int)len, p);
		bool seen = false;
		for (int i = 0; i < *n; i++)
			seen = seen || !strcmp(set[i], opt);
		if (!seen && *n < 128)
			snprintf(set[(*n)++], 32, "%s", opt);
	}
}

static char *help_of(const char *name, const char *a, const char *b)
{
	char *bin = h_bin(name), *out = NULL;
	const char *argv[] = { bin, a, b, NULL };
	run(argv, &out, NULL);
	free(bin);
	return out;
}

/* Each man page source (docs/man/NAME.1.scd) names exactly the long
 * options its program's help does (for forkctl: its own, its agent
 * commands' and its store commands' help). */
Test(cli, man_pages_and_help_name_the_same_options)
{
	static const char *const names[] = { "forkvm", "forkctl", "forkd", "forkbench" };
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		char path[512];
		snprintf(path, sizeof(path), "%s/docs/man/%s.1.scd", h_src_dir(), names[k]);
		char *man = h_read_file(path);
		cr_assert_not_null(man, "%s", path);
		/* scdoc escapes */
		for (char *s = man, *d = man;; s++) {
			if (*s == '\\' && s[1])
				s++;
			*d++ = *s;
			if (!*s)
				break;
		}
		char *help = help_of(names[k], "--help", NULL);
		if (!strcmp(names[k], "forkctl")) {
			char *agent = help_of("forkctl", "--agent=/x", "help");
			char *store = help_of("forkctl", "store", "help");
			char *all = malloc(strlen(help) + strlen(agent) + strlen(store) + 1);
			strcpy(all, help);
			strcat(all, agent);
			strcat(all, store);
			free(help);
			free(agent);
			free(store);
			help = all;
		}
		static char a[128][32], b[128][32];
		int na, nb;
		long_options(help, a, &na);
		long_options(man, b, &nb);
		for (int i = 0; i < na; i++) {
			bool in = false;
			for (int j = 0; j < nb; j++)
				in = in || !strcmp(a[i], b[j]);
			cr_assert(in, "%s --help has %s, its man page does not", names[k], a[i]);
		}
		for (int j = 0; j < nb; j++) {
			bool in = false;
			for (int i = 0; i < na; i++)
				in = in || !strcmp(a[i], b[j]);
			cr_assert(in, "the %s man page has %s, its --help does not", names[k], b[j]);
		}
		free(help);
		free(man);
	}
}

/* make install's script into a temporary prefix, the installed programs
 * run, and uninstall leaves the prefix empty. */
Test(cli, install_and_uninstall_in_a_temporary_prefix, .timeout = 60)
{
	char *prefix = h_tmpdir(), *script = h_join(h_src_dir(), "scripts/install.sh"), *err = NULL;
	const char *inst[] = { "/bin/sh", script, h_build_dir(), h_guest_dir(), prefix, NULL };
	cr_assert_eq(run(inst, NULL, &err), 0, "install: %s", err);
	free(err);
	static const char *const files[] = {
		"bin/forkvm", "bin/forkctl", "bin/forkd", "bin/forkbench", "lib/forkvm/agent",
		"share/man/man1/forkvm.1", "share/man/man1/forkctl.1", "share/man/man1/forkd.1",
		"share/man/man1/forkbench.1", "share/bash-completion/completions/forkctl",
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *f = h_join(prefix, files[i]);
		cr_assert_eq(access(f, R_OK), 0, "%s was not installed", f);
		free(f);
	}
	char *ctl = h_join(prefix, "bin/forkctl"), *out = NULL;
	const char *ver[] = { ctl, "--version", NULL };
	cr_assert_eq(run(ver, &out, NULL), 0);
	cr_assert(strstr(out, "forkctl "), "%s", out);
	free(out);
	free(ctl);
	const char *un[] = { "/bin/sh", script, "--uninstall", prefix, NULL };
	cr_assert_eq(run(un, NULL, &err), 0, "uninstall: %s", err);
	free(err);
	char *left = NULL;
	const char *ls[] = { "/usr/bin/find", prefix, "-mindepth", "1", NULL };
	cr_assert_eq(run(ls, &left, NULL), 0);
	cr_assert_str_eq(left, "", "uninstall left: %s", left);
	free(left);
	/* uninstalling twice is an error that says why */
	cr_assert_eq(run(un, NULL, &err), 1);
	cr_assert(strstr(err, "nothing installed"), "%s", err);
	free(err);
	free(script);
	h_rmtree(prefix);
	free(prefix);
}
