/* tests/unit/test_forkctl_forkd.c - common/forkd_socket: the default forkd
 * API socket that forkctl --forkd and forkd --api-socket both fall back to. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/forkd_socket.h"

static void expect(const char *env, unsigned uid, const char *xdg, const char *want)
{
	char buf[256];

	memset(buf, 'x', sizeof(buf));
	cr_assert_eq(forkd_socket_default_for(env, uid, xdg, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, want, "env=%s uid=%u xdg=%s", env ? env : "(null)", uid,
			 xdg ? xdg : "(null)");
}

Test(forkd_socket, env_wins_for_everyone)
{
	expect("/srv/f.sock", 0, "/run/user/0", "/srv/f.sock");
	expect("/srv/f.sock", 1000, "/run/user/1000", "/srv/f.sock");
	expect("rel.sock", 1000, NULL, "rel.sock"); /* the user's explicit choice, as given */
}

Test(forkd_socket, root_uses_run_even_with_xdg)
{
	expect(NULL, 0, NULL, "/run/forkd/forkd.sock");
	expect("", 0, "/run/user/0", "/run/forkd/forkd.sock");
}

Test(forkd_socket, user_uses_xdg_runtime_dir)
{
	expect(NULL, 1000, "/run/user/1000", "/run/user/1000/forkd/forkd.sock");
	expect("", 1000, "/run/user/1000", "/run/user/1000/forkd/forkd.sock");
}

Test(forkd_socket, user_without_usable_xdg_uses_tmp)
{
	expect(NULL, 1000, NULL, "/tmp/forkd-1000/forkd.sock");
	expect(NULL, 1000, "", "/tmp/forkd-1000/forkd.sock");
	/* The XDG spec: a relative value is invalid and ignored. */
	expect(NULL, 1000, "run/user/1000", "/tmp/forkd-1000/forkd.sock");
	expect(NULL, 4294967294u, NULL, "/tmp/forkd-4294967294/forkd.sock");
}

Test(forkd_socket, too_long_is_an_error_not_a_truncation)
{
	char buf[22]; /* "/run/forkd/forkd.sock" is 21 characters */

	cr_assert_eq(forkd_socket_default_for(NULL, 0, NULL, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "/run/forkd/forkd.sock");
	cr_assert_eq(forkd_socket_default_for(NULL, 0, NULL, buf, sizeof(buf) - 1), -ENAMETOOLONG);
	cr_assert_str_eq(buf, "");
	cr_assert_eq(forkd_socket_default_for("/a/b", 0, NULL, buf, 0), -ENAMETOOLONG);
}

Test(forkd_socket, reads_the_environment)
{
	char buf[256], want[256];

	cr_assert_eq(setenv(FORKD_SOCKET_ENV, "/x/y.sock", 1), 0);
	cr_assert_eq(forkd_socket_default(buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "/x/y.sock");

	cr_assert_eq(unsetenv(FORKD_SOCKET_ENV), 0);
	cr_assert_eq(setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1), 0);
	cr_assert_eq(forkd_socket_default(buf, sizeof(buf)), 0);
	if (geteuid() == 0)
		snprintf(want, sizeof(want), "/run/forkd/forkd.sock");
	else
		snprintf(want, sizeof(want), "/run/user/4242/forkd/forkd.sock");
	cr_assert_str_eq(buf, want);
}
