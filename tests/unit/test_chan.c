/* tests/unit/test_chan.c - a console file cannot grow past its limit: a
 * flooding guest fills it up to file_max, one line marks the cut, the rest
 * is dropped and counted. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/lib/harness.h"
#include "vmm/chan.h"

static long size_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

Test(chan, console_file_stops_at_its_limit)
{
	char *dir = h_tmpdir(), *path = h_join(dir, "console.log"), err[256], buf[60];
	struct chan c;

	cr_assert_eq(chan_open(&c, NULL, "console", CHAN_FILE, path, false, false, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(c.file_max, CHAN_FILE_MAX);
	c.file_max = 100;
	memset(buf, 'a', sizeof(buf));
	cr_assert_eq(chan_write_locked(&c, buf, 60), 60);
	cr_assert_eq(size_of(path), 60);
	/* 40 fit, 20 are dropped, the cut is marked once */
	cr_assert_eq(chan_write_locked(&c, buf, 60), 60, "the guest's write is taken whole");
	long marked = size_of(path);
	cr_assert_gt(marked, 100);
	cr_assert_eq(c.dropped, 20);
	cr_assert_eq(chan_write_locked(&c, buf, 10), 10);
	cr_assert_eq(size_of(path), marked, "nothing more is written");
	cr_assert_eq(c.dropped, 30);
	char *text = h_read_file(path);
	cr_assert_eq(h_count(text, "console file limit reached"), 1);
	free(text);
	chan_close(&c, NULL);

	/* reopened (a restored VM appending): the limit counts what is there */
	cr_assert_eq(chan_open(&c, NULL, "console", CHAN_FILE, path, false, false, err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(c.file_bytes, (uint64_t)marked);
	c.file_max = 100;
	cr_assert_eq(chan_write_locked(&c, buf, 5), 5);
	cr_assert_eq(size_of(path), marked);
	chan_close(&c, NULL);
	h_rmtree(dir);
	free(path);
	free(dir);
}
