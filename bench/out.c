/* bench/out.c - forkbench's output: a readable table that starts with the
 * machine's description (text, printed as results come), one JSON document
 * (--json) or CSV (--csv) printed at the end, and an SVG plot of the
 * latency distributions (--plot FILE.svg: one CDF per measured mode).
 * forkbench is a program, not a library: the results of the run are kept
 * here, in this file's state. */
#include <cpuid.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench/bench.h"

struct dist {
	char what[96];
	uint64_t *ns; /* sorted */
	int n;
};

static struct {
	json_t *results, *notes, *machine;
	struct dist *dists;
	int ndists;
	const char *subcommand;
} out;

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(const uint64_t *sorted, int n, double p)
{
	int i = (int)(p / 100.0 * (n - 1) + 0.5);
	return (double)sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

bool out_text(const struct opts *o)
{
	return !o->json && !o->csv;
}

static char *first_line_value(const char *path, const char *key)
{
	char line[512];
	FILE *f = fopen(path, "r");
	char *v = NULL;
	while (f && !v && fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, strlen(key)))
			continue;
		char *c = strchr(line, ':');
		if (!c)
			continue;
		c++;
		while (*c == ' ' || *c == '\t')
			c++;
		c[strcspn(c, "\n")] = '\0';
		v = strdup(c);
	}
	if (f)
		fclose(f);
	return v;
}

/* The hypervisor this machine runs under, from CPUID leaf 0x40000000
 * ("KVMKVMKVM", "TCGTCGTCGTCG", ...), or "" on bare metal. */
static void hypervisor_vendor(char vendor[13])
{
	unsigned a, b, c, d;

	vendor[0] = '\0';
	__cpuid(1, a, b, c, d);
	if (!(c & (1u << 31)))
		return;
	__cpuid(0x40000000, a, b, c, d);
	memcpy(vendor, &b, 4);
	memcpy(vendor + 4, &c, 4);
	memcpy(vendor + 8, &d, 4);
	vendor[12] = '\0';
}

/* The machine: CPU model, cores, kernel, whether it is a VM, KVM flavour,
 * and whether its CPU is emulated (QEMU TCG: the KVM lane), which makes
 * every KVM figure unrepresentative of hardware. */
static json_t *machine(void)
{
	struct utsname u;
	char *model = first_line_value("/proc/cpuinfo", "model name");
	char *flags = first_line_value("/proc/cpuinfo", "flags");
	bool vm = flags && strstr(flags, " hypervisor");
	const char *kvm = access("/sys/module/kvm_pvm", F_OK) == 0     ? "pvm"
			  : access("/sys/module/kvm_intel", F_OK) == 0 ? "vmx"
			  : access("/sys/module/kvm_amd", F_OK) == 0   ? "svm"
								       : "none";
	char hv[13];
	hypervisor_vendor(hv);
	bool emulated = !strcmp(hv, "TCGTCGTCGTCG");
	uname(&u);
	json_t *j = json_pack("{s:s,s:i,s:s,s:b,s:s,s:s,s:b,s:b,s:I}", "cpu",
			      model ? model : "unknown", "cores", (int)sysconf(_SC_NPROCESSORS_ONLN),
			      "kernel", u.release, "nested", vm, "kvm", kvm, "hypervisor", hv,
			      "emulated_cpu", emulated, "representative", !emulated, "memory_bytes",
			      (json_int_t)sysconf(_SC_PHYS_PAGES) * (json_int_t)sysconf(_SC_PAGESIZE));
	free(model);
	free(flags);
	return j;
}

void out_begin(const struct opts *o, const char *subcommand)
{
	out.subcommand = subcommand;
	out.results = json_array();
	out.notes = json_array();
	out.machine = machine();
	json_object_set_new(out.machine, "platform", json_string(o->platform ? o->platform : "none"));
	if (out_text(o)) {
		json_t *m = out.machine;
		printf("# forkbench %s on the %s platform; %s, %d cores, %.1f GiB, kernel %s, %s, "
		       "KVM: %s\n",
		       subcommand, o->platform ? o->platform : "(no)",
		       json_string_value(json_object_get(m, "cpu")),
		       (int)json_integer_value(json_object_get(m, "cores")),
		       json_integer_value(json_object_get(m, "memory_bytes")) / 1073741824.0,
		       json_string_value(json_object_get(m, "kernel")),
		       json_is_true(json_object_get(m, "nested")) ? "itself a VM (nested)" : "bare metal",
		       json_string_value(json_object_get(m, "kvm")));
		if (json_is_true(json_object_get(m, "emulated_cpu")))
			printf("# NOT REPRESENTATIVE OF HARDWARE: measured in the KVM lane, nested SVM under "
			       "QEMU TCG (an emulated CPU: a KVM exit costs ~57 us, VM creation "
			       "~15-20 ms); compare figures only within this run\n");
		fflush(stdout);
	}
}

void note(const struct opts *o, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (out.notes)
		json_array_append_new(out.notes, json_string(buf));
	if (out_text(o)) {
		printf("# %s\n", buf);
		fflush(stdout);
	}
}

void report(const char *what, uint64_t *ns, int n, const struct opts *o)
{
	if (n <= 0)
		return;
	qsort(ns, (size_t)n, sizeof(ns[0]), cmp_u64);
	if (out.results)
		json_array_append_new(
			out.results,
			json_pack("{s:s,s:s,s:i,s:f,s:f,s:f,s:f,s:f}", "metric", what, "unit", "us",
				  "samples", n, "min", ns[0] / 1e3, "p50", pct(ns, n, 50) / 1e3, "p90",
				  pct(ns, n, 90) / 1e3, "p99", pct(ns, n, 99) / 1e3, "max",
				  ns[n - 1] / 1e3));
	struct dist *nd = realloc(out.dists, (size_t)(out.ndists + 1) * sizeof(*nd));
	if (nd) {
		out.dists = nd;
		struct dist *d = &nd[out.ndists];
		snprintf(d->what, sizeof(d->what), "%s", what);
		d->ns = malloc((size_t)n * sizeof(*ns));
		if (d->ns) {
			memcpy(d->ns, ns, (size_t)n * sizeof(*ns));
			d->n = n;
			out.ndists++;
		}
	}
	if (out_text(o)) {
		printf("%-34s n=%-5d min %9.1f  p50 %9.1f  p90 %9.1f  p99 %9.1f  max %9.1f  (us)\n",
		       what, n, ns[0] / 1e3, pct(ns, n, 50) / 1e3, pct(ns, n, 90) / 1e3,
		       pct(ns, n, 99) / 1e3, ns[n - 1] / 1e3);
		fflush(stdout);
	}
}

void figure(const struct opts *o, const char *what, double value, const char *unit)
{
	if (out.results)
		json_array_append_new(out.results, json_pack("{s:s,s:s,s:f}", "metric", what, "unit",
							     unit, "value", value));
	if (out_text(o)) {
		printf("%-46s %12.3f %s\n", what, value, unit);
		fflush(stdout);
	}
}

/* A CSV field: quoted when it holds a comma or a quote. */
static void csv_field(const char *s)
{
	if (!strpbrk(s, ",\"\n")) {
		fputs(s, stdout);
		return;
	}
	putchar('"');
	for (; *s; s++) {
		if (*s == '"')
			putchar('"');
		putchar(*s);
	}
	putchar('"');
}

static void xml_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '&': fputs("&amp;", f); break;
		case '"': fputs("&quot;", f); break;
		default: fputc(*s, f);
		}
	}
}

/* CDF of every distribution, x on a log scale (microseconds). */
static int write_svg(const char *path)
{
	static const char *const colours[] = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
					       "#9467bd", "#8c564b", "#e377c2", "#17becf" };
	const double W = 900, H = 480, L = 70, R = 20, T = 40, B = 50;
	double lo = 1e18, hi = 0;
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	for (int i = 0; i < out.ndists; i++) {
		double a = out.dists[i].ns[0] / 1e3, b = out.dists[i].ns[out.dists[i].n - 1] / 1e3;
		lo = a < lo ? a : lo;
		hi = b > hi ? b : hi;
	}
	if (out.ndists == 0 || lo <= 0)
		lo = 1;
	if (hi <= lo)
		hi = lo * 10;
	double llo = floor(log10(lo)), lhi = ceil(log10(hi));
	if (lhi <= llo)
		lhi = llo + 1;
#define X(us) (L + (log10(us) - llo) / (lhi - llo) * (W - L - R))
#define Y(fr) (T + (1 - (fr)) * (H - T - B))
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		   "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
		   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
		W, H + 20.0 * out.ndists, W, H + 20.0 * out.ndists);
	fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"15\">forkbench %s: latency CDF (",
		L, out.subcommand ? out.subcommand : "");
	xml_text(f, json_string_value(json_object_get(out.machine, "cpu")));
	fprintf(f, ", %d cores)</text>\n", (int)json_integer_value(json_object_get(out.machine, "cores")));
	/* Axes and grid. */
	for (double e = llo; e <= lhi; e++) {
		double x = X(pow(10, e));
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x, T, x,
			H - B);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g us</text>\n", x, H - B + 18,
			pow(10, e));
	}
	for (int k = 0; k <= 4; k++) {
		double y = Y(k / 4.0);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, y,
			W - R, y);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%d%%</text>\n", L - 6, y + 4,
			k * 25);
	}
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n",
		L, T, W - L - R, H - T - B);
	for (int i = 0; i < out.ndists; i++) {
		const struct dist *d = &out.dists[i];
		const char *c = colours[i % 8];
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
		for (int k = 0; k < d->n; k++) {
			double us = d->ns[k] / 1e3 > 0 ? d->ns[k] / 1e3 : lo;
			fprintf(f, "%.1f,%.1f %.1f,%.1f ", X(us), Y((double)k / d->n), X(us),
				Y((double)(k + 1) / d->n));
		}
		fprintf(f, "\"/>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"4\" fill=\"%s\"/>\n", L,
			H + 20.0 * i - 4, c);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", L + 20, H + 20.0 * i);
		xml_text(f, d->what);
		fprintf(f, " (n=%d, p50 %.1f us)</text>\n", d->n, pct(d->ns, d->n, 50) / 1e3);
	}
#undef X
#undef Y
	fprintf(f, "</svg>\n");
	return fclose(f) == 0 ? 0 : -errno;
}

int out_end(const struct opts *o, int rc)
{
	if (o->json) {
		json_t *doc = json_pack("{s:s,s:s,s:O,s:O,s:O,s:b}", "forkbench", FORKBENCH_VERSION,
					"subcommand", out.subcommand ? out.subcommand : "", "machine",
					out.machine, "results", out.results, "notes", out.notes, "ok",
					rc == 0);
		char *txt = json_dumps(doc, JSON_INDENT(2));
		if (txt)
			printf("%s\n", txt);
		free(txt);
		json_decref(doc);
	} else if (o->csv) {
		printf("metric,unit,samples,min,p50,p90,p99,max,value\n");
		size_t i;
		json_t *r;
		json_array_foreach(out.results, i, r) {
			csv_field(json_string_value(json_object_get(r, "metric")));
			putchar(',');
			csv_field(json_string_value(json_object_get(r, "unit")));
			if (json_object_get(r, "samples")) {
				printf(",%lld", (long long)json_integer_value(json_object_get(r, "samples")));
				static const char *const k[] = { "min", "p50", "p90", "p99", "max" };
				for (size_t j = 0; j < 5; j++)
					printf(",%.1f", json_real_value(json_object_get(r, k[j])));
				printf(",\n");
			} else {
				printf(",,,,,,,%.3f\n", json_real_value(json_object_get(r, "value")));
			}
		}
	}
	if (o->plot) {
		int prc = write_svg(o->plot);
		if (prc < 0) {
			fprintf(stderr, "forkbench: cannot write %s: %s\n", o->plot, strerror(-prc));
			rc = rc ? rc : 1;
		} else if (out_text(o)) {
			printf("# latency CDF written to %s\n", o->plot);
		}
	}
	for (int i = 0; i < out.ndists; i++)
		free(out.dists[i].ns);
	free(out.dists);
	json_decref(out.results);
	json_decref(out.notes);
	json_decref(out.machine);
	memset(&out, 0, sizeof(out));
	return rc;
}

/* Progress on a terminal only. */
void progress(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	if (!isatty(2))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "\r\033[K%s", buf);
	if (!*buf)
		fprintf(stderr, "\r\033[K");
}
