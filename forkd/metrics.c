/* forkd/metrics.c - GET /metrics: the Prometheus text exposition of the
 * daemon's counters (kept on struct forkd by the clone lifecycle and the
 * pools), the fork latency histogram, and the clones' memory read from
 * /proc at each scrape. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forkd/internal.h"

/* The fork latency histogram's bucket bounds, in seconds. */
static const double lat_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
				    0.01,   0.025,   0.05,   0.1,   0.25,   1.0};

void forkd_metrics_fork_latency(struct forkd *d, uint64_t ns)
{
	double s = (double)ns / 1e9;

	_Static_assert(sizeof(lat_bounds) / sizeof(lat_bounds[0]) <=
			   sizeof(d->lat_buckets) / sizeof(d->lat_buckets[0]),
		       "a bucket per bound");
	for (size_t i = 0; i < sizeof(lat_bounds) / sizeof(lat_bounds[0]); i++)
		if (s <= lat_bounds[i])
			d->lat_buckets[i]++;
	d->lat_count++;
	d->lat_sum += s;
}

struct mem_sums {
	unsigned long long pss, priv, shared;
};

static void process_mem(pid_t pid, struct mem_sums *s)
{
	char path[64], txt[8192];

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	if (forkd_read_small(path, txt, sizeof(txt)) < 0)
		return;
	for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
		unsigned long long kb;
		char key[64];
		if (sscanf(line, "%63[^:]: %llu kB", key, &kb) != 2)
			continue;
		if (!strcmp(key, "Pss"))
			s->pss += kb << 10;
		else if (!strcmp(key, "Private_Clean") || !strcmp(key, "Private_Dirty"))
			s->priv += kb << 10;
		else if (!strcmp(key, "Shared_Clean") || !strcmp(key, "Shared_Dirty"))
			s->shared += kb << 10;
	}
}

/* A clone's memory: its process, and on the process platform its stub
 * (the clone's only child: it holds the guest's pages). */
static void clone_mem(const struct clone *c, struct mem_sums *s)
{
	char path[64], kids[256];

	process_mem(c->pid, s);
	if (c->d->cfg.platform != VM_PLATFORM_PROCESS)
		return;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)c->pid, (int)c->pid);
	if (forkd_read_small(path, kids, sizeof(kids)) < 0)
		return;
	for (char *p = kids, *end; *p; p = end) {
		long k = strtol(p, &end, 10);
		if (end == p)
			break;
		process_mem((pid_t)k, s);
	}
}

static int appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return -EINVAL;
		if ((size_t)n < *cap - *len) {
			*len += (size_t)n;
			return 0;
		}
		size_t ncap = *cap * 2 + (size_t)n;
		char *nb = realloc(*buf, ncap);
		if (!nb)
			return -ENOMEM;
		*buf = nb;
		*cap = ncap;
	}
}

char *forkd_metrics(struct forkd *d)
{
	size_t len = 0, cap = 4096;
	char *b = malloc(cap);
	struct mem_sums ms = {0};

	if (!b)
		return NULL;
	b[0] = '\0';
	for (struct clone *c = d->clones; c; c = c->next)
		if (!c->shell && c->state != CLONE_EXITED)
			clone_mem(c, &ms);
	appendf(&b, &len, &cap,
		"# HELP forkd_info What runs the clones.\n# TYPE forkd_info gauge\n"
		"forkd_info{version=\"%s\",platform=\"%s\"} 1\n",
		FORKVM_VERSION, vm_platform_name(d->cfg.platform));
	appendf(
	    &b, &len, &cap,
	    "# HELP forkd_clones_live Clones running or paused.\n# TYPE forkd_clones_live gauge\n"
	    "forkd_clones_live %u\n",
	    forkd_clones_live(d, NULL));
	appendf(&b, &len, &cap,
		"# HELP forkd_forks_total Clones made.\n# TYPE forkd_forks_total counter\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_forks_total{template=\"%s\"} %llu\n", t->name,
			(unsigned long long)t->forks);
	appendf(&b, &len, &cap,
		"# HELP forkd_forks_by_source_total Clones that reached guest code, by source.\n"
		"# TYPE forkd_forks_by_source_total counter\n"
		"forkd_forks_by_source_total{source=\"pool\"} %llu\n"
		"forkd_forks_by_source_total{source=\"cold\"} %llu\n",
		(unsigned long long)d->forks_pool, (unsigned long long)d->forks_cold);
	appendf(&b, &len, &cap,
		"# HELP forkd_fork_failures_total Fork requests refused or failed.\n"
		"# TYPE forkd_fork_failures_total counter\nforkd_fork_failures_total %llu\n",
		(unsigned long long)d->fork_failures);
	appendf(&b, &len, &cap,
		"# HELP forkd_fork_latency_seconds Request received to clone vCPUs resumed.\n"
		"# TYPE forkd_fork_latency_seconds histogram\n");
	for (size_t i = 0; i < sizeof(lat_bounds) / sizeof(lat_bounds[0]); i++)
		appendf(&b, &len, &cap, "forkd_fork_latency_seconds_bucket{le=\"%g\"} %llu\n",
			lat_bounds[i], (unsigned long long)d->lat_buckets[i]);
	appendf(&b, &len, &cap,
		"forkd_fork_latency_seconds_bucket{le=\"+Inf\"} %llu\n"
		"forkd_fork_latency_seconds_sum %.9f\nforkd_fork_latency_seconds_count %llu\n",
		(unsigned long long)d->lat_count, d->lat_sum, (unsigned long long)d->lat_count);
	appendf(
	    &b, &len, &cap,
	    "# HELP forkd_invokes_total Invocations by result.\n# TYPE forkd_invokes_total "
	    "counter\n"
	    "forkd_invokes_total{result=\"ok\"} %llu\nforkd_invokes_total{result=\"error\"} %llu\n"
	    "forkd_invokes_total{result=\"timeout\"} %llu\nforkd_invokes_total{result=\"failed\"} "
	    "%llu\n",
	    (unsigned long long)d->invokes_ok, (unsigned long long)d->invokes_error,
	    (unsigned long long)d->invokes_timeout, (unsigned long long)d->invokes_failed);
	appendf(
	    &b, &len, &cap,
	    "# HELP forkd_pool_ready Warm clone shells ready.\n# TYPE forkd_pool_ready gauge\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_pool_ready{template=\"%s\"} %u\n", t->name,
			forkd_pool_shells(d, t, CLONE_READY));
	appendf(&b, &len, &cap,
		"# HELP forkd_pool_size Warm clone shells wanted.\n# TYPE forkd_pool_size gauge\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_pool_size{template=\"%s\"} %u\n", t->name,
			t->pool_size);
	appendf(
	    &b, &len, &cap,
	    "# HELP forkd_pool_failing 1 while a template's pool shells keep failing to start.\n"
	    "# TYPE forkd_pool_failing gauge\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_pool_failing{template=\"%s\"} %d\n", t->name,
			t->fail_streak > 0);
	appendf(
	    &b, &len, &cap,
	    "# HELP forkd_pool_shell_failures_total Pool shells that died before they were ready.\n"
	    "# TYPE forkd_pool_shell_failures_total counter\n");
	for (struct template *t = d->templates; t; t = t->next)
		appendf(&b, &len, &cap, "forkd_pool_shell_failures_total{template=\"%s\"} %llu\n",
			t->name, (unsigned long long)t->shell_failures);
	appendf(
	    &b, &len, &cap,
	    "# HELP forkd_clone_memory_private_bytes Memory only one clone maps, summed.\n"
	    "# TYPE forkd_clone_memory_private_bytes gauge\nforkd_clone_memory_private_bytes %llu\n"
	    "# HELP forkd_clone_memory_shared_bytes Resident memory clones share, summed per "
	    "clone.\n"
	    "# TYPE forkd_clone_memory_shared_bytes gauge\nforkd_clone_memory_shared_bytes %llu\n"
	    "# HELP forkd_clone_memory_pss_bytes Proportional set size of the clones, summed.\n"
	    "# TYPE forkd_clone_memory_pss_bytes gauge\nforkd_clone_memory_pss_bytes %llu\n",
	    ms.priv, ms.shared, ms.pss);
	return b;
}

/* ------------------------------------------------------------ lifecycle */
