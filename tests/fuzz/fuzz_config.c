/* tests/fuzz/fuzz_config.c - libFuzzer target: bytes parsed as JSON and
 * loaded as a VM configuration (vm.create's body, a snapshot's
 * config.json), validated, and written back to JSON. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/vmm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	struct vm_config cfg;
	json_t *j = json_loadb((const char *)data, size, 0, NULL);

	if (!j)
		return 0;
	if (vm_config_from_json(j, &cfg, err, sizeof(err)) == 0) {
		if (vm_config_validate(&cfg, err, sizeof(err)) == 0) {
			json_t *back = vm_config_to_json(&cfg);
			struct vm_config again;
			if (back && vm_config_from_json(back, &again, err, sizeof(err)) == 0)
				vm_config_free(&again);
			json_decref(back);
		}
		vm_config_free(&cfg);
	}
	json_decref(j);
	return 0;
}
