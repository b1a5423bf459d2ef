/* tests/unit/test_cli.c - what a user of the four binaries expects
 * (issue 15): --version and -V everywhere, forkctl help COMMAND and
 * forkctl COMMAND --help for every kind of command, and the documented
 * exit codes: 0 success, 1 failure, 2 usage. */
#include <criterion/criterion.h>

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
