/* tests/fuzz/fuzz_args.c - libFuzzer target: the argument parsers of
 * forkvm, forkctl and forkd on one string: sizes (--memory, --chunk-size,
 * --mem-reserve, --image-budget), bounded numbers, and the Cloud
 * Hypervisor style options (--cpus, --memory, --serial, --agent); then
 * the input split at NUL bytes as a command's words through forkctl's
 * option walker (cli/args.c), with short, long, valued and flag options,
 * in both of its modes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
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

	/* words: the input split at NUL bytes (s holds them all) */
	char *argv[64];
	int argc = 0;
	for (size_t i = 0; i <= size && argc < 64; i += strlen(s + i) + 1)
		argv[argc++] = s + i;
	for (int mode = 0; mode < 2; mode++) {
		struct cli_opt opts[] = {
			{ .name = "json" },
			{ .name = "tag", .takes_value = true },
			{ .name = "timeout", .short_name = 't', .takes_value = true },
			{ .name = "follow", .short_name = 'f' },
			{ .name = NULL },
		};
		struct cli_args a;
		enum cli_args_kind k;
		int steps = 0;
		cli_args_init(&a, argc, argv, 0, opts);
		a.long_only = mode == 1;
		while ((k = cli_args_next(&a)) != CLI_ARGS_END) {
			/* each step reads at least one word; an option's value is one of argv's */
			if (++steps > argc || a.next > argc || !a.word)
				__builtin_trap();
			if (k == CLI_ARGS_OPTION && (!a.opt || (a.opt->takes_value && !a.value)))
				__builtin_trap();
			if (k != CLI_ARGS_ARGUMENT && k != CLI_ARGS_OPTION)
				break;
		}
	}
	free(s);
	return 0;
}
