/* guest/agent/main.c - the agent's entry point: set up, announce readiness,
 * then serve one request frame at a time until fd 0 reaches end of input. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent.h"

/* Fills in the identity fields of a (boot id, hostname, pid, start time).
 * Returns 0 or -errno. */
static int agent_identity(struct agent *a)
{
	unsigned char id[16];
	struct utsname u;
	int rc;

	a->start_ns = agent_now_ns();
	a->pid = (int)getpid();
	/* The identity page, when forkvm provides one (not on a plain host). */
	const volatile struct forkvm_identity *idp =
		(const volatile struct forkvm_identity *)getauxval(FORKVM_AT_IDENTITY);
	if (idp && idp->magic == FORKVM_IDENTITY_MAGIC && idp->version >= 1) {
		a->identity = idp;
		a->generation = idp->generation;
	}
	rc = agent_rand_bytes(id, sizeof(id));
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < sizeof(id); i++) {
		a->boot_id[2 * i] = "0123456789abcdef"[id[i] >> 4];
		a->boot_id[2 * i + 1] = "0123456789abcdef"[id[i] & 15];
	}
	a->boot_id[32] = '\0';
	if (uname(&u) == 0)
		snprintf(a->hostname, sizeof(a->hostname), "%s", u.nodename);
	return 0;
}

static void log_errno(const char *what, int err)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "%s: %s: %s", AGENT_NAME, what, strerror(-err));
	agent_logs(msg);
}

int main(void)
{
	static struct agent a; /* large, and Duktape keeps a pointer to a.js */
	const char *payload;
	size_t len;
	int rc;

	a.out_fd = AGENT_FD_OUT;
	rc = agent_identity(&a);
	if (rc < 0) {
		log_errno("getrandom", rc);
		return 1;
	}
	rc = agent_js_init(&a.js);
	if (rc < 0) {
		log_errno("cannot create the JavaScript heap", rc);
		return 1;
	}
	rc = agent_in_init(&a.in, AGENT_FD_IN);
	if (rc < 0) {
		log_errno("input buffer", rc);
		return 1;
	}
	rc = agent_send_ready(&a);
	while (rc >= 0) {
		rc = agent_in_next(&a.in, &payload, &len);
		if (rc == 0)
			return 0; /* end of input: the host closed the channel */
		if (rc == -EMSGSIZE) {
			char msg[96];

			snprintf(msg, sizeof(msg), "frame of %zu bytes exceeds the %u-byte limit", len,
				 AGENT_FRAME_MAX);
			rc = agent_reply_error(&a, NULL, 0, "ProtocolError", msg);
		} else if (rc > 0) {
			agent_check_generation(&a);
			rc = agent_handle(&a, payload, len);
		}
	}
	if (rc == -EPIPE)
		return 0; /* the reader went away */
	log_errno("agent channel", rc);
	return 1;
}
