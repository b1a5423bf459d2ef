/* guest/payloads/sysbench.c - benchmark payload (forkbench syscall): makes
 * N+1 clock_gettime(CLOCK_MONOTONIC) system calls back to back. Each is
 * served by the VMM, which reads the host clock while serving it, so the
 * difference between two consecutive readings is one full guest system
 * call round trip: exit, dispatch, return into the guest, the next
 * `syscall`. Prints "sysbench N" and then one line per round trip, "d NS".
 * Usage: sysbench [N] (default 10000, at most 1000000). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000;
	if (n < 1 || n > 1000000) {
		fprintf(stderr, "sysbench: N must be 1..1000000\n");
		return 2;
	}
	struct timespec *t = malloc((size_t)(n + 1) * sizeof(*t));
	if (!t)
		return 1;
	for (long i = 0; i <= n; i++)
		clock_gettime(CLOCK_MONOTONIC, &t[i]);
	printf("sysbench %ld\n", n);
	for (long i = 0; i < n; i++)
		printf("d %lld\n", (long long)(t[i + 1].tv_sec - t[i].tv_sec) * 1000000000LL +
					   (t[i + 1].tv_nsec - t[i].tv_nsec));
	free(t);
	return 0;
}
