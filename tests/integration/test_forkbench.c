/* tests/integration/test_forkbench.c - forkbench's subcommands in short
 * modes: each exits 0, its --json output is one document with the machine,
 * the expected metrics (with samples and percentiles, or a value) and
 * ok:true; --csv has its header; --plot writes a well-formed SVG with one
 * curve per distribution. Figures are not asserted (noisy machines), only
 * their presence and sanity (p50 between min and max, positive values). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/harness.h"

static char *dir;

static void setup(void)
{
	dir = h_tmpdir();
}

static void teardown(void)
{
	h_rmtree(dir);
	free(dir);
}

TestSuite(forkbench, .init = setup, .fini = teardown, .timeout = 300);

/* Runs forkbench with args (NULL-terminated) and --json; returns the
 * parsed document, checked for the common fields. */
static json_t *run_json(const char *const args[])
{
	const char *argv[32];
	char *bin = h_bin("forkbench"), *out = NULL, *err = NULL;
	int n = 0;

	argv[n++] = bin;
	for (int i = 0; args[i]; i++)
		argv[n++] = args[i];
	argv[n++] = "--json";
	argv[n] = NULL;
	int st = h_run(dir, argv, 280000, &out, &err);
	cr_assert_eq(st, 0, "forkbench %s: status %d\n%s", args[0], st, err);
	json_error_t je;
	json_t *doc = json_loads(out, 0, &je);
	cr_assert_not_null(doc, "forkbench %s --json is not one JSON document: %s\n%s", args[0], je.text, out);
	cr_assert_str_eq(json_string_value(json_object_get(doc, "subcommand")), args[0]);
	cr_assert(json_is_true(json_object_get(doc, "ok")));
	json_t *m = json_object_get(doc, "machine");
	cr_assert(json_is_string(json_object_get(m, "cpu")));
	cr_assert_gt(json_integer_value(json_object_get(m, "cores")), 0);
	cr_assert(json_is_string(json_object_get(m, "kernel")));
	cr_assert(json_is_boolean(json_object_get(m, "nested")));
	/* figures from the KVM lane say they are not representative */
	cr_assert(json_is_boolean(json_object_get(m, "representative")));
	cr_assert_eq(json_is_true(json_object_get(m, "representative")), !h_in_lane(),
		     "machine.representative is %s %s",
		     json_is_true(json_object_get(m, "representative")) ? "true" : "false",
		     h_in_lane() ? "in the KVM lane" : "on a host's own KVM");
	/* the header names the platform the figures come from */
	cr_assert_str_eq(json_string_value(json_object_get(m, "platform")), h_platform());
	cr_assert(json_is_array(json_object_get(doc, "results")));
	free(bin);
	free(out);
	free(err);
	return doc;
}

/* The result named metric (prefix match), checked for sanity. */
static json_t *result(json_t *doc, const char *metric)
{
	size_t i;
	json_t *r;
	json_array_foreach(json_object_get(doc, "results"), i, r) {
		const char *name = json_string_value(json_object_get(r, "metric"));
		if (strncmp(name, metric, strlen(metric)))
			continue;
		cr_assert(json_is_string(json_object_get(r, "unit")));
		if (json_object_get(r, "samples")) {
			double mn = json_real_value(json_object_get(r, "min")),
			       p50 = json_real_value(json_object_get(r, "p50")),
			       p99 = json_real_value(json_object_get(r, "p99")),
			       mx = json_real_value(json_object_get(r, "max"));
			cr_assert_gt(json_integer_value(json_object_get(r, "samples")), 0);
			cr_assert(mn >= 0 && mn <= p50 && p50 <= p99 && p99 <= mx, "%s: bad percentiles", name);
		} else {
			cr_assert(json_is_real(json_object_get(r, "value")), "%s: no value", name);
		}
		return r;
	}
	char *dump = json_dumps(json_object_get(doc, "results"), JSON_INDENT(1));
	cr_assert_fail("no metric '%s' in %s", metric, dump);
	free(dump);
	return NULL;
}

static void need(const char *const args[], const char *const metrics[])
{
	json_t *doc = run_json(args);
	for (int i = 0; metrics[i]; i++)
		result(doc, metrics[i]);
	json_decref(doc);
}

Test(forkbench, boot_and_eval)
{
	H_NEED_GUEST();
	need((const char *const[]){ "boot", "-n", "2", "--warmup", "0", "--memory", "64M", NULL },
	     (const char *const[]){ "boot: start to agent ready", "idle VMM RSS", NULL });
	need((const char *const[]){ "eval", "-n", "20", "--warmup", "2", "--memory", "64M", NULL },
	     (const char *const[]){ "eval round trip", "VMM RSS after", NULL });
}

Test(forkbench, snapshot_and_restore)
{
	H_NEED_GUEST();
	need((const char *const[]){ "snapshot", "-n", "2", "--memory", "64M", NULL },
	     (const char *const[]){ "snapshot 64M", "snapshot size on disk", "store snapshot 64M, full",
				    "store snapshot 64M, incremental", "  stored bytes it added", NULL });
	need((const char *const[]){ "restore", "-n", "2", "--warmup", "0", "--memory", "64M", NULL },
	     (const char *const[]){ "restore 64M: start to paused", "resume to first agent answer", NULL });
}

Test(forkbench, store)
{
	H_NEED_GUEST();
	need((const char *const[]){ "store", "--memory", "128M", "--touch", "12", "--dirty", "2",
				    "--clones", "2", "-n", "1", NULL },
	     (const char *const[]){ "ingest, live VM", "ingest, store put", "materialize", "verify",
				    "restore store://", "incremental snapshot", "dedup ratio",
				    "  compression ratio", NULL });
}

Test(forkbench, fork_e2e_fanout_density)
{
	H_NEED_GUEST();
	need((const char *const[]){ "fork", "-n", "3", "--warmup", "0", NULL },
	     (const char *const[]){ "fork, cold: to resume", "fork, cold: to first guest entry",
				    "fork, cold: client round trip", "  cold step: vm_create",
				    "  cold step: state_replay", "fork, pool: to resume",
				    "fork, pool: to first guest entry", NULL });
	need((const char *const[]){ "e2e", "-n", "3", "--warmup", "0", NULL },
	     (const char *const[]){ "fork -> first agent answer, cold", "fork -> first agent answer, pool",
				    "invoke round trip", NULL });
	need((const char *const[]){ "fanout", "3", NULL },
	     (const char *const[]){ "fanout 3, cold, per clone", "fanout 3, pool, per clone",
				    "fanout 3, cold, all running", NULL });
	json_t *doc = run_json((const char *const[]){ "density", "5", NULL });
	cr_assert_eq(json_real_value(json_object_get(result(doc, "density: idle clones started"), "value")), 5.0);
	cr_assert_eq(json_real_value(json_object_get(result(doc, "density: clones that answered"), "value")), 5.0);
	cr_assert_gt(json_real_value(json_object_get(result(doc, "density: PSS per clone"), "value")), 0.0);
	json_decref(doc);
}

Test(forkbench, boot_vs_fork)
{
	H_NEED_GUEST();
	json_t *doc = run_json((const char *const[]){ "boot-vs-fork", "-n", "1", "--warmup", "0", NULL });
	result(doc, "cold boot + warm-up -> answer");
	result(doc, "fork (cold) -> answer");
	result(doc, "fork (warm pool) -> answer");
	cr_assert_gt(json_real_value(json_object_get(result(doc, "speed-up of a cold fork"), "value")), 0.0);
	json_decref(doc);
}

Test(forkbench, floor)
{
	H_NEED_GUEST();
	if (h_on_process())
		need((const char *const[]){ "floor", "-n", "3", "--warmup", "1", NULL },
		     (const char *const[]){ "floor: process (fork+map+stop)", "floor: set state",
					    "floor: first trapped call", "floor: total",
					    "floor precreated: total", "floor: system call round trip",
					    NULL });
	else
		need((const char *const[]){ "floor", "-n", "3", "--warmup", "1", NULL },
		     (const char *const[]){ "floor: create VM", "floor: memory slot",
					    "floor: irqchip + PIT", "floor: vCPUs + CPUID",
					    "floor: first KVM_RUN", "floor: total (cold VM)",
					    "floor precreated: total", NULL });
}

/* A guest system call's round trip beside the same run's floor. */
Test(forkbench, syscall)
{
	H_NEED_GUEST();
	json_t *doc = run_json((const char *const[]){ "syscall", "-n", "200", "--warmup", "10", NULL });
	json_t *r = result(doc, "guest system call round trip");
	cr_assert_eq(json_integer_value(json_object_get(r, "samples")), 200);
	cr_assert_gt(json_real_value(json_object_get(r, "min")), 0.0);
	result(doc, h_on_process() ? "floor: ptrace round trip" : "floor: KVM exit round trip");
	json_decref(doc);
}

/* QEMU restoring a Linux guest from a migration file (installed on demand;
 * forkbench exits 77 when it cannot be, e.g. no network to the mirrors).
 * QEMU runs under TCG natively (it may have no KVM of its own next to
 * forkvm's), and under KVM in the KVM lane, where TCG inside TCG would take
 * many minutes. */
Test(forkbench, peer, .timeout = 600)
{
	H_NEED_GUEST();
	char *bin = h_bin("forkbench"), *out = NULL, *err = NULL;
	const char *accel = h_in_lane() ? "kvm" : "tcg";
	const char *const argv[] = { bin, "peer", "-n", "1", "--warmup", "0", "--accel", accel, "--json", NULL };
	int st = h_run(dir, argv, 590000, &out, &err);
	if (st == 77)
		cr_skip_test("forkbench peer skipped: %s", err);
	cr_assert_eq(st, 0, "status %d\n%s", st, err);
	json_t *doc = json_loads(out, 0, NULL);
	cr_assert_not_null(doc, "%s", out);
	char metric[64];
	snprintf(metric, sizeof(metric), "qemu-%s: restore to first answer", accel);
	result(doc, metric);
	result(doc, "forkvm: restore to first answer");
	snprintf(metric, sizeof(metric), "peer: qemu-%s/forkvm", accel);
	cr_assert_gt(json_real_value(json_object_get(result(doc, metric), "value")), 0.0);
	json_decref(doc);
	free(out);
	free(err);
	free(bin);
}

/* Tags of an SVG file balance (a small well-formedness check). */
static void svg_well_formed(const char *text, int *curves)
{
	const char *stack[64];
	int depth = 0;
	*curves = 0;
	cr_assert(!strncmp(text, "<?xml", 5), "no XML declaration");
	for (const char *p = strchr(text + 5, '<'); p; p = strchr(p + 1, '<')) {
		const char *end = strchr(p, '>');
		cr_assert_not_null(end, "unterminated tag");
		if (p[1] == '/') {
			cr_assert_gt(depth, 0, "closing tag without opening");
			size_t n = strcspn(stack[depth - 1], " >/");
			cr_assert(!strncmp(stack[depth - 1], p + 2, n) && p[2 + n] == '>', "mismatched tag");
			depth--;
		} else if (end[-1] != '/') {
			cr_assert_lt(depth, 64);
			stack[depth++] = p + 1;
		}
		if (!strncmp(p, "<polyline", 9))
			(*curves)++;
		cr_assert(!memchr(p, '&', (size_t)(end - p)) || strstr(p, "&amp;") || strstr(p, "&lt;") ||
			  strstr(p, "&gt;") || strstr(p, "&quot;"));
	}
	cr_assert_eq(depth, 0, "unclosed tags");
	cr_assert(strstr(text, "<svg"));
}

Test(forkbench, csv_and_plot)
{
	H_NEED_GUEST();
	char *bin = h_bin("forkbench"), *svg = h_join(dir, "cdf.svg"), *out = NULL, *err = NULL;
	const char *const argv[] = { bin, "fork", "-n", "3", "--warmup", "0", "--csv", "--plot", svg, NULL };
	cr_assert_eq(h_run(dir, argv, 280000, &out, &err), 0, "%s", err);
	cr_assert(!strncmp(out, "metric,unit,samples,min,p50,p90,p99,max,value\n", 46), "%s", out);
	cr_assert(strstr(out, "\"fork, cold: to resume (forkd)\",us,3,"), "%s", out);
	char *text = h_read_file(svg);
	cr_assert_not_null(text);
	int curves;
	svg_well_formed(text, &curves);
	cr_assert_geq(curves, 6, "one curve per distribution, got %d", curves);
	free(text);
	free(out);
	free(err);
	free(svg);
	free(bin);
}

Test(forkbench, bad_arguments_exit_2)
{
	char *bin = h_bin("forkbench");
	const char *const cases[][4] = {
		{ "nope", NULL }, { "fork", "-n", "0", NULL }, { "boot", "extra", NULL },
		{ "fanout", "zero", NULL }, { "--json", "--csv", "fork", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *argv[6] = { bin };
		for (int k = 0; k < 4 && cases[i][k]; k++)
			argv[k + 1] = cases[i][k];
		char *err = NULL;
		cr_assert_eq(h_run(dir, argv, 10000, NULL, &err), 2, "case %zu", i);
		cr_assert_gt(strlen(err), 0);
		free(err);
	}
	free(bin);
}
