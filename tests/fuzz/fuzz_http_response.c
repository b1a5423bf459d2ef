/* tests/fuzz/fuzz_http_response.c - libFuzzer target: bytes as an HTTP
 * response to forkctl's and the tests' client (common/http_client.c,
 * http_client_parse_response), fed in pieces whose size the first byte
 * picks, as they could arrive from a socket. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_client_response resp;

	if (size < 1)
		return 0;
	size_t piece = data[0] % 17; /* 0: all at once */
	if (http_client_parse_response((const char *)data + 1, size - 1, piece, &resp) == 0) {
		/* what callers rely on: a NUL-terminated body of body_len bytes */
		if (!resp.body || resp.body[resp.body_len] != '\0')
			__builtin_trap();
		http_client_response_free(&resp);
	}
	return 0;
}
