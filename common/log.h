/* common/log.h - process-wide logging with levels and printf checking.
 * Include only this header for logging. Debug lines carry file:line. */
#ifndef FORKVM_COMMON_LOG_H
#define FORKVM_COMMON_LOG_H

#include <stdio.h>

enum log_level {
	LOG_ERROR = 0,
	LOG_WARN = 1,
	LOG_INFO = 2,
	LOG_DEBUG = 3,
	LOG_TRACE = 4, /* debug plus per-event traces (every guest system call) */
};

/* Sets the most verbose level printed (default LOG_WARN). */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Sends log lines to FILE (not owned). NULL restores stderr. */
void log_set_stream(FILE *stream);

/* Opens PATH for appending and logs there. Returns 0 or -errno. */
int log_open_file(const char *path) __attribute__((warn_unused_result));

/* Prefix for every line, e.g. the program name (not copied). */
void log_set_ident(const char *ident);

/* One line. Error, warn and info lines are rate-limited per call site:
 * at most 10 in 5 s; the site's next line after that says how many were
 * dropped. Debug and trace lines are not limited. */
void log_msg(enum log_level level, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define log_error(...) log_msg(LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_debug(...)                                                   \
	do {                                                             \
		if (log_get_level() >= LOG_DEBUG)                         \
			log_msg(LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__); \
	} while (0)
#define log_trace(...)                                                   \
	do {                                                             \
		if (log_get_level() >= LOG_TRACE)                         \
			log_msg(LOG_TRACE, __FILE__, __LINE__, __VA_ARGS__); \
	} while (0)

#endif
