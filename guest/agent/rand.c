/* guest/agent/rand.c - getrandom(2) and the xorshift128+ behind Math.random. */
#include <errno.h>
#include <sys/random.h>

#include "agent.h"

/* Fills buf with len bytes from getrandom(2). Returns 0 or -errno. */
int agent_rand_bytes(void *buf, size_t len)
{
	unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Seeds p from getrandom(2). Returns 0 or -errno (p is then unchanged). */
int agent_prng_seed(struct agent_prng *p)
{
	uint64_t s[2];
	int rc = agent_rand_bytes(s, sizeof(s));

	if (rc < 0)
		return rc;
	if (s[0] == 0 && s[1] == 0) /* the one state xorshift cannot leave */
		s[1] = 0x9e3779b97f4a7c15ull;
	p->s[0] = s[0];
	p->s[1] = s[1];
	return 0;
}

void agent_check_generation(struct agent *a)
{
	if (!a->identity || a->identity->generation == a->generation)
		return;
	/* Restored from a snapshot: whatever was seeded before it is shared
	 * with every other restore of that snapshot. */
	a->generation = a->identity->generation;
	if (agent_prng_seed(&a->js.prng) == 0)
		a->reseeds++;
}

/* Returns a uniform double in [0, 1) with 53 random bits (xorshift128+). */
double agent_prng_double(struct agent_prng *p)
{
	uint64_t x = p->s[0];
	uint64_t y = p->s[1];

	p->s[0] = y;
	x ^= x << 23;
	p->s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
	return (double)((p->s[1] + y) >> 11) * 0x1.0p-53;
}
