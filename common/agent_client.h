/* common/agent_client.h - host-side client of the function-guest agent
 * (guest/agent): framing, connection to the VMM's agent socket, and
 * request/reply matching. The wire protocol is docs/agent-protocol.md.
 * Functions return 0 (or a count) on success and -errno on failure; they
 * never print and never exit. Timeouts are in milliseconds; a negative
 * timeout waits forever. */
#ifndef FORKVM_COMMON_AGENT_CLIENT_H
#define FORKVM_COMMON_AGENT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define AGENT_CLIENT_WUR __attribute__((warn_unused_result))

/* ---------------------------------------------------------------- framing */

/* Largest frame payload (JSON bytes after the 4-byte length). */
#define AGENT_FRAME_MAX (64u * 1024 * 1024)
#define AGENT_FRAME_HDR 4

/* Encodes msg (a JSON object) as one frame: 4-byte big-endian length, then
 * compact JSON. *buf is malloc'd (caller frees). Returns 0, -EINVAL (not an
 * object, or not encodable), -EMSGSIZE (over AGENT_FRAME_MAX) or -ENOMEM. */
int agent_frame_encode(const json_t *msg, char **buf, size_t *len) AGENT_CLIENT_WUR;

/* Decodes the first frame of buf[0, len). Always sets *consumed, the number
 * of bytes the caller drops from the front of buf:
 *   0        a message in *msg (a JSON object; caller decrefs);
 *   -EAGAIN  more bytes are needed (*consumed counts empty frames skipped);
 *   -EMSGSIZE the announced length exceeds AGENT_FRAME_MAX (*consumed is the
 *            whole frame, header included, and may exceed len);
 *   -EPROTO  the payload is not a JSON object (*consumed is the frame). */
int agent_frame_decode(const char *buf, size_t len, size_t *consumed, json_t **msg)
	AGENT_CLIENT_WUR;

/* ---------------------------------------------------------------- client */

/* One connection to an agent channel. Not thread-safe: use a client from
 * one thread at a time. Requests are sequential (the agent serves one at a
 * time); a reply that arrives after its request timed out is skipped by the
 * next request. */
struct agent_client;

/* Connects to the agent socket, retrying while it does not exist yet or
 * refuses connections (a VM still starting) until timeout_ms has passed.
 * Returns 0 and *out, -ETIMEDOUT, -ENAMETOOLONG, or another -errno. */
int agent_client_connect(const char *socket_path, int timeout_ms, struct agent_client **out)
	AGENT_CLIENT_WUR;

/* Wraps an already connected stream socket (or one end of a socketpair);
 * takes ownership of fd, also on failure. Returns 0 and *out or -errno. */
int agent_client_from_fd(int fd, struct agent_client **out) AGENT_CLIENT_WUR;

/* Closes the connection and frees c (NULL is ignored). */
void agent_client_close(struct agent_client *c);

/* Reads frames until a {"event":"ready"} frame arrives, discarding others.
 * The VMM buffers guest output while no client is connected, so the event
 * may already have been read by an earlier client: use agent_client_ping()
 * as a readiness probe when that can happen. Returns 0 (with the event in
 * *ready_event unless it is NULL; caller decrefs), -ETIMEDOUT, -EPIPE on
 * disconnect, -EPROTO on a malformed frame. */
int agent_client_wait_ready(struct agent_client *c, int timeout_ms, json_t **ready_event)
	AGENT_CLIENT_WUR;

/* Sends request (a JSON object with "op"; borrowed and not modified) with a
 * fresh unique "id" and reads frames until the reply with that id, skipping
 * events and replies to other ids. Returns 0 with the whole reply in *reply
 * (caller decrefs; ok:false replies are a success here), -ETIMEDOUT, -EPIPE
 * on disconnect (or when an earlier timed-out write left the stream
 * unusable), -EPROTO on a malformed frame, -EINVAL, -EMSGSIZE or -ENOMEM. */
int agent_client_request(struct agent_client *c, json_t *request, int timeout_ms, json_t **reply)
	AGENT_CLIENT_WUR;

/* {"op":"eval","code":code}. Same returns as agent_client_request(). */
int agent_client_eval(struct agent_client *c, const char *code, int timeout_ms, json_t **reply)
	AGENT_CLIENT_WUR;

/* {"op":"call","fn":fn,"args":args}; args is borrowed, NULL omits it (no
 * arguments), an array is spread. Same returns as agent_client_request(). */
int agent_client_call(struct agent_client *c, const char *fn, json_t *args, int timeout_ms,
		      json_t **reply) AGENT_CLIENT_WUR;

/* {"op":"load","source":source,"name":name}; name may be NULL.
 * Same returns as agent_client_request(). */
int agent_client_load(struct agent_client *c, const char *source, const char *name,
		      int timeout_ms, json_t **reply) AGENT_CLIENT_WUR;

/* {"op":"info"}. Same returns as agent_client_request(). */
int agent_client_info(struct agent_client *c, int timeout_ms, json_t **reply) AGENT_CLIENT_WUR;

/* {"op":"ping"}: a readiness probe. reply may be NULL; when not, it is set
 * whenever the agent answered. Returns 0 when the answer was "pong", -EPROTO
 * for any other answer, or as agent_client_request(). */
int agent_client_ping(struct agent_client *c, int timeout_ms, json_t **reply) AGENT_CLIENT_WUR;

/* True if reply is {"ok":true,...}. Otherwise sets *name and *message (each
 * may be NULL) to the error's strings, borrowed from reply; missing fields
 * read as "Error" and "". */
bool agent_client_reply_ok(const json_t *reply, const char **name, const char **message);

#endif
