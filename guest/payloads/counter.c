/* guest/payloads/counter.c - test payload: THREADS threads, one per vCPU,
 * each counting in its own slot; the main thread prints every counter every
 * PERIOD ms ("counts N: c0 c1 ...", N the report number) for SECONDS of
 * guest time, then "done". Counters never go back: after a restore they go
 * on from their values in the snapshot. Usage: counter [THREADS [SECONDS
 * [PERIOD_MS]]]. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long counts[64];
static volatile int stop;

static void *count(void *arg)
{
	volatile unsigned long *c = &counts[(long)arg];
	while (!stop)
		(*c)++;
	return NULL;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 3;
	long secs = argc > 2 ? atol(argv[2]) : 10, period = argc > 3 ? atol(argv[3]) : 100;
	pthread_t t[64];
	struct timespec d = { period / 1000, (period % 1000) * 1000000L };

	if (n < 1 || n > 63)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (long i = 0; i < n; i++)
		if (pthread_create(&t[i], NULL, count, (void *)i))
			return 3;
	long end = now_ms() + secs * 1000;
	for (int r = 1; now_ms() < end; r++) {
		nanosleep(&d, NULL);
		printf("counts %d:", r);
		for (int i = 0; i < n; i++)
			printf(" %lu", counts[i]);
		printf("\n");
	}
	stop = 1;
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	printf("done\n");
	return 0;
}
