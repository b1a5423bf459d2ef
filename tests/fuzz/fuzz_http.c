/* tests/fuzz/fuzz_http.c - libFuzzer target: raw bytes into the HTTP
 * server's connection state machine (common/http.h, http_process_raw), as
 * the VMM's and forkd's API sockets receive them. The handler answers
 * every complete request, echoing the path's length. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void handler(void *arg, struct http_exchange *ex)
{
	const struct http_request *req = http_exchange_request(ex);
	char body[64];
	(void)arg;
	int n = snprintf(body, sizeof(body), "{\"len\":%zu,\"body\":%zu}", strlen(req->path), req->body_len);
	http_respond(ex, 200, "application/json", body, (size_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_server_config cfg = { .max_header_bytes = 4096, .max_body_bytes = 65536 };
	char *out = NULL;
	size_t out_len = 0;
	bool closed = false;

	if (http_process_raw((const char *)data, size, &cfg, handler, NULL, &out, &out_len, &closed) == 0)
		free(out);
	return 0;
}
