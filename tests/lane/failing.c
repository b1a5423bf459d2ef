/* tests/lane/failing.c - a Criterion suite that fails on purpose: test_lane
 * runs it in the KVM lane to check that the lane and scripts/run-tests.sh
 * report a failing suite as a failure. Not part of make test's suites. */
#include <criterion/criterion.h>
#include <stdio.h>

Test(failing, passes)
{
	cr_assert_eq(6 * 7, 42);
}

Test(failing, fails_on_purpose)
{
	printf("failing-suite: this test fails on purpose\n");
	cr_assert_eq(6 * 7, 43, "a deliberate failure");
}
