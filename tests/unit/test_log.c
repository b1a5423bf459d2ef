/* tests/unit/test_log.c - common/log.c: lines from one call site are
 * rate-limited (issue 15: a failing loop must not flood the log), other
 * sites and debug lines are not. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

static int count_lines(FILE *f, const char *needle)
{
	char line[1200];
	int n = 0;
	rewind(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			n++;
	return n;
}

static void warn_site(int i)
{
	log_warn("the same failure, attempt %d", i);
}

Test(log, one_site_is_limited_to_a_burst_and_other_sites_go_on)
{
	FILE *f = tmpfile();
	cr_assert(f);
	log_set_stream(f);
	log_set_level(LOG_DEBUG);
	for (int i = 0; i < 10000; i++)
		warn_site(i);
	log_warn("another site");
	for (int i = 0; i < 50; i++)
		log_debug("debug line %d", i);
	fflush(f);
	cr_assert_eq(count_lines(f, "the same failure"), 10);
	cr_assert_eq(count_lines(f, "another site"), 1);
	cr_assert_eq(count_lines(f, "debug line"), 50, "debug lines are not limited");
	log_set_stream(NULL);
	fclose(f);
}

Test(log, what_was_dropped_is_counted_after_the_window, .timeout = 30)
{
	FILE *f = tmpfile();
	cr_assert(f);
	log_set_stream(f);
	log_set_level(LOG_WARN);
	for (int i = 0; i < 25; i++)
		warn_site(i);
	struct timespec ts = { .tv_sec = 5, .tv_nsec = 200000000 };
	nanosleep(&ts, NULL);
	warn_site(99);
	fflush(f);
	cr_assert_eq(count_lines(f, "the same failure"), 11);
	cr_assert_eq(count_lines(f, "(15 more like the next were not logged)"), 1);
	log_set_stream(NULL);
	fclose(f);
}
