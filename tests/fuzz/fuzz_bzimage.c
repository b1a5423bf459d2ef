/* tests/fuzz/fuzz_bzimage.c - libFuzzer target: bytes as a Linux kernel,
 * a bzImage or a vmlinux ELF (vmm/linux/boot.c): parsed, and when
 * accepted, set up in a guest memory
 * with a command line and an initramfs placed, as the Linux loader does. */
#include <stddef.h>
#include <stdint.h>

#include "vmm/gmem.h"
#include "vmm/linux/linux.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct gmem m;
	static int ready;
	struct lx_image li;
	uint64_t initrd = 0;
	char err[256];

	if (!ready) {
		if (gmem_init(&m, 32ULL << 20, GMEM_ANON) < 0)
			return 0;
		ready = 1;
	}
	if (!lx_probe(data, size) || lx_parse(data, size, &li, err, sizeof(err)) < 0)
		return 0;
	uint64_t len = size & 0xffff;
	if (lx_initrd_place(&m, &li, len ? len : 1, &initrd) < 0)
		initrd = 0;
	(void)lx_setup(&m, data, &li, "console=ttyS0", initrd, initrd ? len : 0, 1 + size % 8,
		       err, sizeof(err));
	return 0;
}
