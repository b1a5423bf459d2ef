/* guest/payloads/fault.c - test payload that faults on purpose.
 * Usage: fault null|read-null|ud2|div0|wild|abort|exit N */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address the compiler cannot see through. */
static volatile int *addr_of(uintptr_t a)
{
	volatile uintptr_t v = a;
	return (volatile int *)v;
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "null";

	fprintf(stderr, "fault: %s\n", what);
	if (!strcmp(what, "null"))
		*addr_of(0) = 1;
	else if (!strcmp(what, "read-null"))
		return *addr_of(8);
	else if (!strcmp(what, "ud2"))
		__asm__ volatile("ud2");
	else if (!strcmp(what, "div0")) {
		volatile int zero = 0;
		return 10 / zero;
	} else if (!strcmp(what, "wild"))
		*addr_of(0x4000000000ULL) = 1; /* 256 GiB: beyond any RAM */
	else if (!strcmp(what, "abort"))
		abort();
	else if (!strcmp(what, "exit"))
		exit(argc > 2 ? atoi(argv[2]) : 0);
	fprintf(stderr, "fault: nothing happened\n");
	return 99;
}
