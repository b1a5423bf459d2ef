/* guest/payloads/threads.c - test payload: N pthreads (one per vCPU) count
 * in shared memory, all at once: they meet at a barrier (futex waits)
 * before counting. Usage: threads [THREADS [INCREMENTS]]. Prints one line
 * per thread and the total; exits 0 when the total is exact. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static unsigned long counter;
static unsigned long per_thread = 1000000;
static pthread_barrier_t start;

static void *count(void *arg)
{
	unsigned long mine = 0;

	pthread_barrier_wait(&start);
	for (unsigned long i = 0; i < per_thread; i++) {
		__atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
		mine++;
	}
	printf("thread %ld on cpu %d counted %lu\n", (long)arg, sched_getcpu(), mine);
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4;
	pthread_t t[64];

	if (argc > 2)
		per_thread = strtoul(argv[2], NULL, 10);
	if (n < 1 || n > 64)
		return 2;
	pthread_barrier_init(&start, NULL, (unsigned)n);
	/* The main thread counts too: n threads in all. */
	for (int i = 1; i < n; i++) {
		int rc = pthread_create(&t[i], NULL, count, (void *)(long)i);
		if (rc) {
			printf("pthread_create %d failed: %d\n", i, rc);
			fflush(stdout);
			_exit(3); /* the threads created so far wait at the barrier */
		}
	}
	count((void *)0L);
	for (int i = 1; i < n; i++)
		pthread_join(t[i], NULL);
	printf("total %lu expected %lu\n", counter, per_thread * (unsigned long)n);
	return counter == per_thread * (unsigned long)n ? 0 : 1;
}
