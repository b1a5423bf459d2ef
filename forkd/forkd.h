/* forkd/forkd.h - the fork daemon: templates (store snapshots opened once),
 * warm pools of paused clone shells, clone processes, and the REST API on
 * a Unix socket (docs/forkd-api.md). The one public header of forkd/.
 *
 * A struct forkd runs on one thread, the one that runs its loop: it forks
 * clone processes, so it must never start threads of its own. Functions
 * return >= 0 on success and -errno on failure; err gets the reason. */
#ifndef FORKVM_FORKD_H
#define FORKVM_FORKD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/loop.h"
#include "common/seccomp.h"
#include "vmm/vmm.h"

/* The clone jail (forkd/jail.c). */
struct forkd_jail_config {
	bool on;                /* namespaces, empty root, no capabilities, cgroup */
	bool uid_set;           /* switch to uid/gid (else root without capabilities) */
	uid_t uid;
	gid_t gid;
	unsigned pids_max;      /* cgroup pids.max */
	unsigned cpu_weight;    /* cgroup cpu.weight, 1..10000 (100: an even share) */
	unsigned long long mem_margin; /* memory.max = the template's guest RAM + this */
};

#define FORKD_DEFAULT_PIDS_MAX 64U
#define FORKD_DEFAULT_CPU_WEIGHT 100U
#define FORKD_DEFAULT_MEM_MARGIN (64ULL << 20)

struct forkd_config {
	const char *api_socket; /* REST API socket path */
	const char *store;      /* store root */
	const char *run_dir;    /* clones' sockets and console logs */
	const char *forkvm;     /* forkvm binary, for booting templates */
	unsigned max_clones;    /* clones given out at once (pool shells excluded) */
	unsigned default_pool;  /* warm pool size of a new template */
	unsigned long long mem_reserve; /* refuse forks when MemAvailable is below (bytes) */
	enum sc_mode seccomp;   /* filters for forkd, its clones and builders (default on) */
	enum vm_platform platform; /* where clones and templates run (resolved: KVM or PROCESS) */
	struct forkd_jail_config jail;
};

#define FORKD_DEFAULT_MAX_CLONES 1024U
#define FORKD_MAX_POOL 256U

/* What the API accepts (docs/forkd-api.md), the one source for forkd and
 * for forkctl, which checks the same before it sends a request. */
#define FORKD_NAME_MAX 32        /* a template name's length */
#define FORKD_CLONE_ID_LEN 12    /* hex digits of a clone id forkd makes */
#define FORKD_MAX_COUNT 1024     /* clones of one fork request */

/* Template names: 1..FORKD_NAME_MAX of [A-Za-z0-9_.-], not starting with
 * '.' or '-' (they go into URL paths and file names). */
static inline bool forkd_template_name_valid(const char *s)
{
	size_t n = 0;

	if (!s || s[0] == '.' || s[0] == '-')
		return false;
	for (; s[n]; n++) {
		char c = s[n];
		if (n >= FORKD_NAME_MAX ||
		    !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return n > 0;
}
#define FORKD_DEFAULT_MEM_RESERVE (256ULL << 20)

struct forkd;

/* The default run directory (/run/forkd as root, $XDG_RUNTIME_DIR/forkd,
 * else /tmp/forkd-UID) into buf. */
const char *forkd_default_run_dir(char *buf, size_t len);

/* Starts the daemon on loop: creates the run directory (0700), listens on
 * the API socket and watches SIGCHLD (which the caller must have blocked).
 * Returns 0 and *out, or -errno with err set. */
int forkd_create(const struct forkd_config *cfg, struct loop *loop, struct forkd **out, char *err,
		 size_t errlen) __attribute__((warn_unused_result));

/* Kills and reaps every clone and shell (waits for them), closes the API
 * and frees everything. */
void forkd_destroy(struct forkd *d);

/* Installs forkd's own seccomp filter on every thread (forkd/seccomp.c):
 * call once set-up is done. SC_MODE_OFF: no-op. Returns 0 or -errno. */
int forkd_seccomp_apply(enum sc_mode mode, enum vm_platform platform) __attribute__((warn_unused_result));

#endif
