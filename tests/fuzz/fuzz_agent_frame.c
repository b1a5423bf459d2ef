/* tests/fuzz/fuzz_agent_frame.c - libFuzzer target: a byte stream cut
 * into agent protocol frames (docs/agent-protocol.md) as forkd and forkctl
 * read a clone's agent channel: every frame decoded, re-encoded. */
#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/agent_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	size_t left = size;

	while (left) {
		size_t used = 0;
		json_t *msg = NULL;
		int rc = agent_frame_decode(p, left, &used, &msg);
		if (rc == 0) {
			char *buf = NULL;
			size_t len = 0;
			if (agent_frame_encode(msg, &buf, &len) == 0)
				free(buf);
			json_decref(msg);
		}
		if (used == 0 || used > left)
			break; /* needs more bytes, or an oversized frame's skip */
		p += used;
		left -= used;
	}
	return 0;
}
