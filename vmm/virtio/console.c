/* vmm/virtio/console.c - virtio-console (Virtio 1.2, 5.3), one port
 * without multiport: hvc0. What the guest transmits goes to the VM's
 * console channel (the --serial destination), beside the serial port's
 * output. When the console's input is hvc0's (virtio_console_take_input),
 * what a client sends fills the receive queue's buffers, as they come and
 * as the guest posts buffers; a buffer is taken only when there are bytes
 * for it, so the rest stay the guest's (and in a snapshot, in its rings). */
#include <errno.h>
#include <stdlib.h>

#include "common/util.h"
#include "vmm/chan.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define CONSOLE_RX 0U
#define CONSOLE_TX 1U

struct console {
	bool rx; /* the console channel's input is this device's */
};

/* Moves queued input into the guest's receive buffers. Device lock held. */
static void console_rx(struct virtio_dev *d)
{
	const struct console *c = d->priv;
	struct vm *vm = d->vm;
	bool any = false;

	if (!c || !c->rx || !d->s.q[CONSOLE_RX].ready || !(d->s.status & VIRTIO_STATUS_DRIVER_OK))
		return;
	for (;;) {
		/* a buffer is taken only when there are bytes for it (the
		 * console's reader is this device alone: they stay there) */
		struct virtq_req r;
		uint32_t written = 0;
		pthread_mutex_lock(&vm->lock);
		if (chan_input_queued_locked(&vm->console) == 0 || virtq_pop(d, CONSOLE_RX, &r) <= 0) {
			pthread_mutex_unlock(&vm->lock);
			break;
		}
		for (unsigned i = 0; i < r.nr; i++) {
			if (!r.seg[i].write || !r.seg[i].len)
				continue;
			long n = chan_read_locked(&vm->console, r.seg[i].p, r.seg[i].len);
			if (n <= 0)
				break;
			written += (uint32_t)n;
			if ((uint32_t)n < r.seg[i].len)
				break;
		}
		pthread_mutex_unlock(&vm->lock);
		virtq_push(d, CONSOLE_RX, r.head, written);
		any = true;
	}
	if (any)
		virtio_interrupt(d, CONSOLE_RX);
}

/* The console channel received bytes (loop thread, vm->lock not held). */
static void console_on_input(void *arg)
{
	struct virtio_dev *d = arg;

	pthread_mutex_lock(&d->lock);
	console_rx(d);
	pthread_mutex_unlock(&d->lock);
}

static void console_destroy(struct virtio_dev *d)
{
	struct vm *vm = d->vm;

	pthread_mutex_lock(&vm->lock);
	if (vm->console.on_input_arg == d)
		vm->console.on_input = NULL;
	pthread_mutex_unlock(&vm->lock);
	free(d->priv);
	d->priv = NULL;
}

/* What the guest transmits, to the console channel; nothing is written
 * into its buffers. */
static uint32_t console_tx(struct virtio_dev *d, const struct virtq_req *r)
{
	struct vm *vm = d->vm;

	pthread_mutex_lock(&vm->lock);
	for (unsigned i = 0; i < r->nr; i++)
		if (!r->seg[i].write && r->seg[i].len)
			(void)chan_write_locked(&vm->console, r->seg[i].p, r->seg[i].len);
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

static void console_notify(struct virtio_dev *d, unsigned q)
{
	if (q == CONSOLE_RX)
		console_rx(d);
	else
		virtq_serve(d, q, console_tx);
}

static const struct virtio_ops console_ops = {
    .kind = "virtio-console",
    .device_id = VIRTIO_ID_CONSOLE,
    .nr_queues = 2,
    .notify = console_notify,
    .destroy = console_destroy,
};

int virtio_console_create(struct vm *vm, struct virtio_dev *d, uint64_t base, unsigned gsi)
{
	struct console *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	int rc = virtio_mmio_register(vm, d, &console_ops, c, 0, "virtio-console", base, gsi);
	if (rc < 0)
		free(c);
	return rc;
}

void virtio_console_take_input(struct virtio_dev *d)
{
	struct console *c = d->priv;
	struct vm *vm = d->vm;

	pthread_mutex_lock(&vm->lock);
	c->rx = true;
	vm->console.on_input = console_on_input;
	vm->console.on_input_arg = d;
	pthread_mutex_unlock(&vm->lock);
}
