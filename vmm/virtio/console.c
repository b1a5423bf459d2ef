/* vmm/virtio/console.c - virtio-console (Virtio 1.2, 5.3), one port
 * without multiport: hvc0. What the guest transmits goes to the VM's
 * console channel (the --serial destination), beside the serial port's
 * output; the receive queue stays empty (no console input yet). */
#include <errno.h>

#include "common/util.h"
#include "vmm/chan.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define CONSOLE_RX 0U
#define CONSOLE_TX 1U

static void console_notify(struct virtio_dev *d, unsigned q)
{
	struct vm *vm = d->vm;
	struct virtq_req r;
	bool any = false;

	if (q != CONSOLE_TX)
		return; /* buffers for input: kept until there is input */
	while (virtq_pop(d, q, &r) > 0) {
		pthread_mutex_lock(&vm->lock);
		for (unsigned i = 0; i < r.nr; i++)
			if (!r.seg[i].write && r.seg[i].len)
				(void)chan_write_locked(&vm->console, r.seg[i].p, r.seg[i].len);
		pthread_mutex_unlock(&vm->lock);
		virtq_push(d, q, r.head, 0);
		any = true;
	}
	if (any)
		virtio_interrupt(d, q);
}

static const struct virtio_ops console_ops = {
    .kind = "virtio-console",
    .device_id = VIRTIO_ID_CONSOLE,
    .nr_queues = 2,
    .notify = console_notify,
};

int virtio_console_create(struct vm *vm, struct virtio_dev *d, uint64_t base, unsigned gsi)
{
	return virtio_mmio_register(vm, d, &console_ops, NULL, 0, "virtio-console", base, gsi);
}
