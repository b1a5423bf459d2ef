/* tests/fuzz/fuzz_elf.c - libFuzzer target: bytes as a function-guest
 * payload (vmm/elf.c): parsed, and when accepted, loaded into a small
 * guest memory, as forkvm --kernel does. */
#include <stddef.h>
#include <stdint.h>

#include "vmm/elf.h"
#include "vmm/gmem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct gmem m;
	static int ready;
	struct elf_info info;
	char err[256];

	if (!ready) {
		if (gmem_init(&m, 16ULL << 20, GMEM_ANON) < 0)
			return 0;
		ready = 1;
	}
	if (elf_parse(data, size, 0x400000, &info, err, sizeof(err)) == 0)
		(void)elf_load(&m, data, size, &info);
	return 0;
}
