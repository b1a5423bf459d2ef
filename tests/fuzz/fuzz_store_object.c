/* tests/fuzz/fuzz_store_object.c - libFuzzer target: a store object file
 * (docs/store-format.md: header, lengths, zstd payload, name check) as a
 * restore or verify reads it from a possibly damaged store. The name is
 * the XXH3-128 of the input's tail when it has one, so well-formed objects
 * reach the hash check and decode fully. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "store/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct store_id id;
	uint8_t *raw = NULL;
	size_t raw_len = 0;

	memset(&id, 0, sizeof(id));
	if (size > 24) {
		XXH128_hash_t h = XXH3_128bits(data + 24, size - 24);
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, h);
		memcpy(&id, c.digest, sizeof(id) < sizeof(c.digest) ? sizeof(id) : sizeof(c.digest));
	}
	if (st_obj_decode(&id, data, size, &raw, &raw_len) == 0)
		free(raw);
	/* The chunk path: into a fixed buffer with a context. */
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	uint8_t *buf = malloc(65536);
	if (dctx && buf) {
		int rc = st_obj_decode_into(dctx, &id, data, size, buf, 65536);
		(void)rc;
	}
	free(buf);
	ZSTD_freeDCtx(dctx);
	return 0;
}
