/* tests/fuzz/fuzz_args.c - libFuzzer target: the argument parsers of
 * forkvm, forkctl and forkd on one string: sizes (--memory, --chunk-size,
 * --mem-reserve, --image-budget), bounded numbers, and the Cloud
 * Hypervisor style options (--cpus, --memory, --serial, --agent). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "vmm/vmm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), err[512];
	uint64_t v;
	struct vm_config cfg;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	(void)parse_size(s, &v);
	(void)parse_u64(s, 1, 100000, &v);
	vm_config_init(&cfg);
	if (vm_config_parse_cpus(&cfg, s, err, sizeof(err)) == 0 && (cfg.boot_vcpus < 1 || cfg.boot_vcpus > 254))
		__builtin_trap();
	(void)vm_config_parse_memory(&cfg, s, err, sizeof(err));
	(void)vm_config_parse_serial(&cfg, s, err, sizeof(err));
	(void)vm_config_parse_agent(&cfg, s, err, sizeof(err));
	(void)vm_config_validate(&cfg, err, sizeof(err));
	vm_config_free(&cfg);
	free(s);
	return 0;
}
