/* common/log.c - see log.h. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* Process-wide logging configuration: the one piece of shared mutable state
 * the project allows outside vmm/ objects, guarded by a mutex. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static enum log_level log_level_cur = LOG_WARN;
static FILE *log_stream;
static const char *log_ident = "forkvm";

/* Rate limit, per call site (file and line) of error, warn and info lines:
 * at most LOG_BURST lines in a LOG_WINDOW_NS window; what was dropped is
 * counted and said with the site's next line after the window. A loop that
 * fails the same way forever (accept with no descriptors left) can then
 * neither fill the disk nor hide other lines. Debug and trace lines, asked
 * for with -vv, are not limited. */
#define LOG_BURST 10
#define LOG_WINDOW_NS (5ULL * 1000000000ULL)
#define LOG_SITES 64

struct log_site {
	const char *file;
	int line;
	uint64_t window_start;
	unsigned count;      /* lines in this window */
	unsigned long dropped;
	uint64_t used;       /* for replacement: the least recently used goes */
};

static struct log_site log_sites[LOG_SITES];
static uint64_t log_clock;

/* With log_lock held: whether this line may go out; *dropped gets the
 * number of lines the site lost before it (to be reported). */
static bool log_site_allow(const char *file, int line, uint64_t now, unsigned long *dropped)
{
	struct log_site *s = NULL, *victim = &log_sites[0];

	*dropped = 0;
	for (unsigned i = 0; i < LOG_SITES; i++) {
		if (log_sites[i].file == file && log_sites[i].line == line) {
			s = &log_sites[i];
			break;
		}
		if (log_sites[i].used < victim->used)
			victim = &log_sites[i];
	}
	if (!s) {
		s = victim;
		*s = (struct log_site){ .file = file, .line = line, .window_start = now };
	}
	s->used = ++log_clock;
	if (now - s->window_start >= LOG_WINDOW_NS) {
		*dropped = s->dropped;
		s->dropped = 0;
		s->count = 0;
		s->window_start = now;
	}
	if (s->count >= LOG_BURST) {
		s->dropped++;
		return false;
	}
	s->count++;
	return true;
}

void log_set_level(enum log_level level)
{
	__atomic_store_n(&log_level_cur, level, __ATOMIC_RELAXED);
}

enum log_level log_get_level(void)
{
	return __atomic_load_n(&log_level_cur, __ATOMIC_RELAXED);
}

void log_set_stream(FILE *stream)
{
	pthread_mutex_lock(&log_lock);
	log_stream = stream;
	pthread_mutex_unlock(&log_lock);
}

int log_open_file(const char *path)
{
	FILE *f = fopen(path, "ae");
	if (!f)
		return -errno;
	setvbuf(f, NULL, _IOLBF, 0);
	log_set_stream(f);
	return 0;
}

void log_set_ident(const char *ident)
{
	log_ident = ident;
}

void log_msg(enum log_level level, const char *file, int line, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug", "trace" };
	char msg[1024];
	va_list ap;

	if (level > log_get_level())
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);

	pthread_mutex_lock(&log_lock);
	FILE *out = log_stream ? log_stream : stderr;
	unsigned long dropped = 0;
	if (level < LOG_DEBUG) {
		struct timespec mono;
		clock_gettime(CLOCK_MONOTONIC, &mono);
		uint64_t now = (uint64_t)mono.tv_sec * 1000000000ULL + (uint64_t)mono.tv_nsec;
		if (!log_site_allow(file, line, now, &dropped)) {
			pthread_mutex_unlock(&log_lock);
			return;
		}
	}
	if (dropped)
		fprintf(out, "%02d:%02d:%02d.%06ld %s %s: (%lu more like the next were not logged)\n",
			tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000, log_ident, names[level],
			dropped);
	if (level >= LOG_DEBUG)
		fprintf(out, "%02d:%02d:%02d.%06ld %s %s: %s (%s:%d)\n", tm.tm_hour, tm.tm_min,
			tm.tm_sec, ts.tv_nsec / 1000, log_ident, names[level], msg, file, line);
	else
		fprintf(out, "%02d:%02d:%02d.%06ld %s %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
			ts.tv_nsec / 1000, log_ident, names[level], msg);
	pthread_mutex_unlock(&log_lock);
}
