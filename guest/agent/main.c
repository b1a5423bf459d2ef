/* guest/agent/main.c - the agent's entry point: options (a Linux guest's:
 * linux.c), set up, announce readiness, then serve one request frame at a
 * time until the channel's input reaches its end. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent.h"

/* The identity page from physical memory (a Linux guest's /dev/mem), or
 * NULL: one line on the console either way. */
static const volatile struct forkvm_identity *identity_from_mem(const char *path)
{
	char why[200], msg[300];
	const volatile struct forkvm_identity *idp = agent_identity_map(path, why, sizeof(why));

	if (idp) {
		char cid[sizeof(idp->clone_id)];

		for (size_t i = 0; i < sizeof(cid); i++)
			cid[i] = idp->clone_id[i];
		cid[sizeof(cid) - 1] = '\0';
		snprintf(msg, sizeof(msg),
			 "%s: identity page at 0x%lx: generation %llu, clone_id \"%s\"", AGENT_NAME,
			 (unsigned long)FORKVM_IDENTITY_LINUX_GPA, (unsigned long long)idp->generation,
			 cid);
	} else {
		snprintf(msg, sizeof(msg), "%s: no identity page: %s; carrying on without",
			 AGENT_NAME, why);
	}
	agent_logs(msg);
	return idp;
}

/* Fills in the identity fields of a (boot id, hostname, pid, start time).
 * Returns 0 or -errno. */
static int agent_identity(struct agent *a, const struct agent_opts *o)
{
	unsigned char id[16];
	struct utsname u;
	int rc;

	a->start_ns = agent_now_ns();
	a->pid = (int)getpid();
	/* The identity page, when forkvm provides one (not on a plain host):
	 * a function guest's in the auxiliary vector, a Linux guest's in
	 * physical memory. */
	const volatile struct forkvm_identity *idp;
	if (o->identity_mem)
		idp = identity_from_mem(o->identity_mem);
	else
		idp = (const volatile struct forkvm_identity *)getauxval(FORKVM_AT_IDENTITY);
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

int main(int argc, char **argv)
{
	static struct agent a; /* large, and Duktape keeps a pointer to a.js */
	struct agent_opts opts;
	char err[300];
	const char *payload;
	size_t len;
	int rc;

	if (agent_parse_args(argc, argv, &opts, err, sizeof(err)) < 0) {
		char msg[340];

		snprintf(msg, sizeof(msg), "%s: %s", AGENT_NAME, err);
		agent_logs(msg);
		return 2;
	}
	a.out_fd = AGENT_FD_OUT;
	rc = agent_identity(&a, &opts);
	if (rc < 0) {
		log_errno("getrandom", rc);
		return 1;
	}
	if (opts.vsock_port) {
		char msg[160];

		rc = agent_vsock_channel(opts.vsock_port, AGENT_VSOCK_TIMEOUT_MS);
		if (rc < 0) {
			snprintf(msg, sizeof(msg), "cannot connect to the host's vsock port %u",
				 opts.vsock_port);
			log_errno(msg, rc);
			return 1;
		}
		snprintf(msg, sizeof(msg), "%s: agent channel on vsock port %u of the host",
			 AGENT_NAME, opts.vsock_port);
		agent_logs(msg);
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
