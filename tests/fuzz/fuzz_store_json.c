/* tests/fuzz/fuzz_store_json.c - libFuzzer target: bytes as a store's
 * store.json, opened by store_open as forkctl store, forkvm --store and
 * forkd do. */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char root[64];
	char path[128], err[512];
	struct store *st = NULL;

	if (!root[0]) {
		char tmpl[] = "/tmp/forkvm-fuzz-store-XXXXXX";
		if (!mkdtemp(tmpl))
			return 0;
		snprintf(root, sizeof(root), "%s", tmpl);
		/* a complete layout once; store.json is what each input replaces */
		if (store_open(root, true, 0, &st, err, sizeof(err)) == 0)
			store_close(st);
		st = NULL;
	}
	snprintf(path, sizeof(path), "%s/store.json", root);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	close(fd);
	if (store_open(root, false, 0, &st, err, sizeof(err)) == 0)
		store_close(st);
	return 0;
}
