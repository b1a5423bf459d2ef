/* vmm/virtio/rng.c - virtio-rng (Virtio 1.2, 5.4): the guest's hwrng,
 * filled from the host's getrandom(). */
#include <errno.h>
#include <sys/random.h>

#include "common/util.h"
#include "vmm/virtio/virtio.h"

/* Fills the request's writable buffers; returns the bytes written. */
static uint32_t rng_fill(struct virtio_dev *d, const struct virtq_req *r)
{
	uint32_t written = 0;

	(void)d;
	for (unsigned i = 0; i < r->nr; i++) {
		if (!r->seg[i].write)
			continue;
		ssize_t n = getrandom(r->seg[i].p, r->seg[i].len, 0);
		if (n <= 0)
			break;
		written += (uint32_t)n;
		if ((uint32_t)n < r->seg[i].len)
			break;
	}
	return written;
}

static void rng_notify(struct virtio_dev *d, unsigned q)
{
	virtq_serve(d, q, rng_fill);
}

static const struct virtio_ops rng_ops = {
    .kind = "virtio-rng",
    .device_id = VIRTIO_ID_RNG,
    .nr_queues = 1,
    .notify = rng_notify,
};

int virtio_rng_create(struct vm *vm, struct virtio_dev *d, uint64_t base, unsigned gsi)
{
	return virtio_mmio_register(vm, d, &rng_ops, NULL, 0, "virtio-rng", base, gsi);
}
