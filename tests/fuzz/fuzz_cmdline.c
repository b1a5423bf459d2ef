/* tests/fuzz/fuzz_cmdline.c - libFuzzer target: a --cmdline string split
 * into the function guest's argv (fg_split_cmdline): words stay inside
 * the buffer and are NUL-terminated. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/fguest/fguest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), *buf = malloc(size + 1);
	char *words[64];

	if (!s || !buf)
		goto out;
	memcpy(s, data, size);
	s[size] = '\0';
	int n = fg_split_cmdline(s, buf, words, 64);
	for (int i = 0; i < n; i++) {
		if (words[i] < buf || words[i] > buf + strlen(s))
			__builtin_trap();
		(void)strlen(words[i]);
	}
out:
	free(s);
	free(buf);
	return 0;
}
