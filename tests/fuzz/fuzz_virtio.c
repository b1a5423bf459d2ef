/* tests/fuzz/fuzz_virtio.c - libFuzzer target: what a Linux guest can do to
 * forkvm's virtio devices (vmm/virtio/): MMIO register reads and writes
 * (QueueNotify included) and the bytes it puts in its memory (descriptor
 * tables, rings, request headers), all from the input.
 *
 * One VM without KVM (fuzz_vm.h) with 16 MiB of RAM, an agent channel, and
 * four devices made once: virtio-blk on a 1 MiB memfd image, the same
 * copy-on-write over a read-only image, virtio-rng, and virtio-vsock (its
 * port 1024 the agent channel; no Unix socket, no loop). Each input resets them (status 0) and
 * zeroes a 64 KiB window of guest memory at 8 MiB, then runs its steps:
 *   0..2 dev, 'w' off16 val32   register write on device dev
 *   0..2 dev, 'r' off16         register read
 *   'm' off16 len8 bytes        copy bytes into the window at off
 * Addresses the guest writes into registers may point anywhere; only the
 * window holds what the fuzzer wrote. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "tests/fuzz/fuzz_vm.h"
#include "vmm/gmem.h"
#include "vmm/virtio/virtio.h"

#define WINDOW (8ULL << 20)
#define WINDOW_LEN (64U << 10)
#define NR_DEVS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vm *vm;
static struct virtio_dev devs[NR_DEVS];

/* A 1 MiB image in a memfd: its /proc path in path. */
static void image(char *path, size_t len)
{
	int fd = memfd_create("fuzz-disk", 0);
	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		abort();
	snprintf(path, len, "/proc/self/fd/%d", fd);
}

static void setup(void)
{
	char err[256], a[64], b[64];

	log_set_level(LOG_ERROR);
	char sock[64];
	snprintf(sock, sizeof(sock), "/tmp/fuzz-virtio-%d.sock", (int)getpid());
	unlink(sock);
	if (fuzz_vm_create(1, 16ULL << 20, sock, NULL, &vm) < 0)
		abort();
	image(a, sizeof(a));
	image(b, sizeof(b));
	if (virtio_blk_create(vm, &devs[0], "vda", a, false, false, VIRTIO_MMIO_BASE, 16, err,
			      sizeof(err)) < 0 ||
	    virtio_blk_create(vm, &devs[1], "vdb", b, false, true, VIRTIO_MMIO_BASE + 0x1000, 17,
			      err, sizeof(err)) < 0 ||
	    virtio_rng_create(vm, &devs[2], VIRTIO_MMIO_BASE + 0x2000, 18) < 0 ||
	    virtio_vsock_create(vm, &devs[3], 3, NULL, false, VIRTIO_MMIO_BASE + 0x3000, 19, err,
				sizeof(err)) < 0)
		abort();
}

static void reg(unsigned dev, uint64_t off, uint32_t *val, bool write)
{
	const struct bus_range *r = bus_find(&vm->mmio, VIRTIO_MMIO_BASE + 0x1000ULL * dev + off, 4);
	if (r)
		r->io(r->dev, NULL, VIRTIO_MMIO_BASE + 0x1000ULL * dev + off - r->base, val, 4, write);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!vm)
		setup();
	uint8_t *win = gmem_ptr(&vm->mem, WINDOW, WINDOW_LEN);
	memset(win, 0, WINDOW_LEN);
	for (unsigned d = 0; d < NR_DEVS; d++) {
		uint32_t zero = 0;
		reg(d, VIRTIO_MMIO_STATUS, &zero, true);
	}
	for (size_t i = 0; i + 3 <= size;) {
		uint8_t op = data[i];
		uint16_t off;
		memcpy(&off, data + i + 1, 2);
		i += 3;
		if (op == 'm') {
			if (i >= size)
				break;
			size_t len = data[i++];
			if (len > size - i)
				len = size - i;
			size_t at = off % WINDOW_LEN;
			if (len > WINDOW_LEN - at)
				len = WINDOW_LEN - at;
			memcpy(win + at, data + i, len);
			i += len;
			continue;
		}
		unsigned dev = (op >> 1) % NR_DEVS;
		uint32_t val = 0;
		if (op & 1) {
			if (i + 4 > size)
				break;
			memcpy(&val, data + i, 4);
			i += 4;
			reg(dev, off & 0x1fc, &val, true);
		} else {
			reg(dev, off & 0x1ff, &val, false);
		}
	}
	return 0;
}
