/* store/pool.c - spreading work over every core. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "store/internal.h"

unsigned st_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
}

struct par {
	uint64_t next, n;
	void (*fn)(void *arg, uint64_t i, unsigned worker);
	void *arg;
	unsigned worker;
};

struct par_worker {
	struct par *p;
	unsigned id;
};

static void *par_main(void *arg)
{
	struct par_worker *w = arg;
	for (;;) {
		uint64_t i = __atomic_fetch_add(&w->p->next, 1, __ATOMIC_RELAXED);
		if (i >= w->p->n)
			break;
		w->p->fn(w->p->arg, i, w->id);
	}
	return NULL;
}

void st_parallel(unsigned threads, uint64_t n, void (*fn)(void *arg, uint64_t i, unsigned worker),
		 void *arg)
{
	struct par p = { .next = 0, .n = n, .fn = fn, .arg = arg };
	pthread_t t[64];
	struct par_worker w[64];
	unsigned started = 0;

	if (threads < 1)
		threads = 1;
	if (threads > 64)
		threads = 64;
	for (unsigned i = 1; i < threads; i++) {
		w[i] = (struct par_worker){ &p, i };
		if (pthread_create(&t[i], NULL, par_main, &w[i]) != 0)
			break;
		started = i;
	}
	w[0] = (struct par_worker){ &p, 0 };
	par_main(&w[0]);
	for (unsigned i = 1; i <= started; i++)
		pthread_join(t[i], NULL);
}
