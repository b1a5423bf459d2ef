/* guest/payloads/blocking.c - test payload for pause/resume across blocking
 * system calls: a thread ticks every PERIOD ms with nanosleep while the main
 * thread waits for it in pthread_join (a futex wait). Prints one line per
 * tick and, at the end, the guest-monotonic time the run took.
 * Usage: blocking [TICKS [PERIOD_MS]] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int ticks = 10, period_ms = 50;

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void *ticker(void *arg)
{
	struct timespec d = { period_ms / 1000, (period_ms % 1000) * 1000000L };
	(void)arg;
	for (int i = 1; i <= ticks; i++) {
		nanosleep(&d, NULL);
		printf("tick %d\n", i);
		fflush(stdout);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t;
	long start = now_ms();

	if (argc > 1)
		ticks = atoi(argv[1]);
	if (argc > 2)
		period_ms = atoi(argv[2]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (pthread_create(&t, NULL, ticker, NULL))
		return 3;
	pthread_join(t, NULL);
	printf("done %d ticks in %ld ms of guest time\n", ticks, now_ms() - start);
	return 0;
}
