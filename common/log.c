/* common/log.c - see log.h. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

/* Process-wide logging configuration: the one piece of shared mutable state
 * the project allows outside vmm/ objects, guarded by a mutex. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static enum log_level log_level_cur = LOG_WARN;
static FILE *log_stream;
static const char *log_ident = "forkvm";

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
	if (level >= LOG_DEBUG)
		fprintf(out, "%02d:%02d:%02d.%06ld %s %s: %s (%s:%d)\n", tm.tm_hour, tm.tm_min,
			tm.tm_sec, ts.tv_nsec / 1000, log_ident, names[level], msg, file, line);
	else
		fprintf(out, "%02d:%02d:%02d.%06ld %s %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
			ts.tv_nsec / 1000, log_ident, names[level], msg);
	pthread_mutex_unlock(&log_lock);
}
