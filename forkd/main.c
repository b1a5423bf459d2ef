/* forkd/main.c - the fork daemon binary: options, signals, the loop. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/forkd_socket.h"
#include "common/log.h"
#include "common/util.h"
#include "forkd/forkd.h"
#include "store/store.h"
#include "vmm/vmm.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: forkd [OPTIONS]\n"
		"\n"
		"The fork daemon: turns templates (store snapshots) into running clones,\n"
		"each its own process mapping the template's memory copy-on-write. REST\n"
		"API on a Unix socket (docs/forkd-api.md); forkctl --forkd=SOCK talks to it.\n"
		"SIGTERM or SIGINT: kills and reaps every clone, then exits.\n"
		"\n"
		"Options:\n"
		"  --api-socket PATH   REST API socket, mode 0600 (default $FORKD_SOCKET,\n"
		"                      else /run/forkd/forkd.sock as root, else\n"
		"                      $XDG_RUNTIME_DIR/forkd/forkd.sock, else\n"
		"                      /tmp/forkd-UID/forkd.sock)\n"
		"  --store DIR         the snapshot store (default $FORKVM_STORE, else\n"
		"                      /var/lib/forkvm/store as root,\n"
		"                      ~/.local/share/forkvm/store otherwise)\n"
		"  --run-dir DIR       clones' agent sockets and console logs (default\n"
		"                      /run/forkd as root, $XDG_RUNTIME_DIR/forkd, else\n"
		"                      /tmp/forkd-UID); at most 76 characters\n"
		"  --max-clones N      clones alive at once, 1..100000 (default 1024; warm\n"
		"                      pool shells not counted)\n"
		"  --pool N            warm pool size of templates that do not set one\n"
		"                      (0..256, default 0)\n"
		"  --mem-reserve SIZE  refuse forks while MemAvailable is below SIZE\n"
		"                      (default 256M; 0 disables)\n"
		"  --forkvm PATH       forkvm binary used to boot templates (default: the\n"
		"                      one beside forkd)\n"
		"  --jail on|off       jail every clone (default on): its own mount, PID and\n"
		"                      UTS namespaces, an empty network and IPC namespace,\n"
		"                      an empty read-only root, no capabilities, and a\n"
		"                      cgroup with the limits below (docs/security.md)\n"
		"  --jail-uid USER     clones run as this user (name or uid, not root);\n"
		"                      default: root without capabilities\n"
		"  --jail-gid GROUP    and this group (default: the user's group)\n"
		"  --clone-mem-margin SIZE\n"
		"                      a clone's cgroup memory limit is its guest RAM plus\n"
		"                      SIZE (default 64M)\n"
		"  --clone-pids-max N  tasks per clone, cgroup pids.max (default 64)\n"
		"  --clone-cpu-weight N\n"
		"                      cgroup CPU weight per clone, 1..10000 (default 100,\n"
		"                      an even share)\n"
		"  --platform P        where templates and clones run: kvm, process (host\n"
		"                      processes traced with ptrace: no /dev/kvm needed)\n"
		"                      or auto (default: $FORKVM_PLATFORM, else auto:\n"
		"                      kvm where /dev/kvm works, else process)\n"
		"  --seccomp MODE      system call filters for forkd, its clones and the\n"
		"                      forkvm it runs: on (default; a forbidden call\n"
		"                      kills with SIGSYS), log (allow and log to the\n"
		"                      kernel audit log), off (docs/security.md)\n"
		"  --log-file PATH     log here instead of stderr\n"
		"  -v                  more log output (-v info, -vv debug)\n"
		"  -h, --help          this help\n"
		"  -V, --version       version\n"
		"\n"
		"Example:\n"
		"  forkd --api-socket /tmp/forkd.sock --store /tmp/store &\n"
		"  forkctl --forkd=/tmp/forkd.sock template add fn --boot vm.json --load fn.js\n"
		"  forkctl --forkd=/tmp/forkd.sock fork fn -n 10\n");
}

static int die_usage(const char *msg, const char *arg)
{
	fprintf(stderr, "forkd: %s%s\nTry 'forkd --help'.\n", msg, arg);
	return 2;
}

struct ctx {
	struct loop *loop;
	int sigfd;
	int signo;
};

static void on_signal(void *arg, uint32_t events)
{
	struct ctx *c = arg;
	struct signalfd_siginfo si;
	(void)events;
	if (read(c->sigfd, &si, sizeof(si)) != sizeof(si))
		return;
	c->signo = (int)si.ssi_signo;
	loop_stop(c->loop);
}

int main(int argc, char **argv)
{
	enum { O_API = 256, O_STORE, O_RUN, O_MAX, O_POOL, O_RESERVE, O_FORKVM, O_LOG, O_SECCOMP, O_JAIL, O_JUID, O_JGID,
	       O_PIDS, O_CPUW, O_MEMM, O_PLATFORM };
	static const struct option opts[] = {
		{ "api-socket", required_argument, NULL, O_API },
		{ "store", required_argument, NULL, O_STORE },
		{ "run-dir", required_argument, NULL, O_RUN },
		{ "max-clones", required_argument, NULL, O_MAX },
		{ "pool", required_argument, NULL, O_POOL },
		{ "mem-reserve", required_argument, NULL, O_RESERVE },
		{ "forkvm", required_argument, NULL, O_FORKVM },
		{ "log-file", required_argument, NULL, O_LOG },
		{ "seccomp", required_argument, NULL, O_SECCOMP },
		{ "platform", required_argument, NULL, O_PLATFORM },
		{ "jail", required_argument, NULL, O_JAIL },
		{ "jail-uid", required_argument, NULL, O_JUID },
		{ "jail-gid", required_argument, NULL, O_JGID },
		{ "clone-pids-max", required_argument, NULL, O_PIDS },
		{ "clone-cpu-weight", required_argument, NULL, O_CPUW },
		{ "clone-mem-margin", required_argument, NULL, O_MEMM },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct forkd_config cfg = { .max_clones = FORKD_DEFAULT_MAX_CLONES,
				    .mem_reserve = FORKD_DEFAULT_MEM_RESERVE,
				    .jail = { .on = true, .pids_max = FORKD_DEFAULT_PIDS_MAX,
					      .cpu_weight = FORKD_DEFAULT_CPU_WEIGHT,
					      .mem_margin = FORKD_DEFAULT_MEM_MARGIN } };
	bool gid_set = false;
	char store[4096], run[4096], api[4200], forkvm[4200], err[1024];
	const char *log_file = NULL;
	int verbose = 0, opt, rc;
	uint64_t v;

	log_set_ident("forkd");
	const char *env_platform = getenv("FORKVM_PLATFORM");
	if (env_platform && *env_platform && vm_platform_parse(env_platform, &cfg.platform) < 0)
		return die_usage("FORKVM_PLATFORM must be kvm, process or auto, not ", env_platform);
	while ((opt = getopt_long(argc, argv, "vhV", opts, NULL)) != -1) {
		switch (opt) {
		case O_API:
			if (!*optarg)
				return die_usage("--api-socket needs a path", "");
			cfg.api_socket = optarg;
			break;
		case O_STORE:
			if (!*optarg)
				return die_usage("--store needs a directory", "");
			cfg.store = optarg;
			break;
		case O_RUN:
			if (!*optarg)
				return die_usage("--run-dir needs a directory", "");
			cfg.run_dir = optarg;
			break;
		case O_MAX:
			if (parse_u64(optarg, 1, 100000, &v) < 0)
				return die_usage("--max-clones must be 1..100000, not ", optarg);
			cfg.max_clones = (unsigned)v;
			break;
		case O_POOL:
			if (parse_u64(optarg, 0, FORKD_MAX_POOL, &v) < 0)
				return die_usage("--pool must be 0..256, not ", optarg);
			cfg.default_pool = (unsigned)v;
			break;
		case O_RESERVE:
			if (parse_size(optarg, &v) < 0)
				return die_usage("--mem-reserve takes a size such as 256M, not ", optarg);
			cfg.mem_reserve = v;
			break;
		case O_PLATFORM:
			if (vm_platform_parse(optarg, &cfg.platform) < 0)
				return die_usage("--platform must be kvm, process or auto, not ", optarg);
			break;
		case O_FORKVM:
			cfg.forkvm = optarg;
			break;
		case O_LOG:
			log_file = optarg;
			break;
		case O_JAIL:
			if (strcmp(optarg, "on") && strcmp(optarg, "off"))
				return die_usage("--jail must be on or off, not ", optarg);
			cfg.jail.on = !strcmp(optarg, "on");
			break;
		case O_JUID: {
			struct passwd *pw = getpwnam(optarg);
			if (pw) {
				v = pw->pw_uid;
				if (!gid_set)
					cfg.jail.gid = pw->pw_gid;
			} else if (parse_u64(optarg, 0, 0xfffffffeULL, &v) < 0) {
				return die_usage("--jail-uid takes a user name or a uid, not ", optarg);
			}
			if (v == 0)
				return die_usage("--jail-uid must not be root: ", optarg);
			cfg.jail.uid = (uid_t)v;
			cfg.jail.uid_set = true;
			break;
		}
		case O_JGID: {
			struct group *gr = getgrnam(optarg);
			if (gr)
				v = gr->gr_gid;
			else if (parse_u64(optarg, 0, 0xfffffffeULL, &v) < 0)
				return die_usage("--jail-gid takes a group name or a gid, not ", optarg);
			cfg.jail.gid = (gid_t)v;
			gid_set = true;
			break;
		}
		case O_PIDS:
			if (parse_u64(optarg, 8, 1000000, &v) < 0)
				return die_usage("--clone-pids-max must be 8..1000000, not ", optarg);
			cfg.jail.pids_max = (unsigned)v;
			break;
		case O_CPUW:
			if (parse_u64(optarg, 1, 10000, &v) < 0)
				return die_usage("--clone-cpu-weight must be 1..10000, not ", optarg);
			cfg.jail.cpu_weight = (unsigned)v;
			break;
		case O_MEMM:
			if (parse_size(optarg, &v) < 0)
				return die_usage("--clone-mem-margin takes a size such as 64M, not ", optarg);
			cfg.jail.mem_margin = v;
			break;
		case O_SECCOMP:
			if (sc_mode_parse(optarg, &cfg.seccomp) < 0)
				return die_usage("--seccomp must be on, log or off, not ", optarg);
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("forkd %s\n", FORKVM_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'forkd --help'.\n");
			return 2;
		}
	}
	if (optind < argc)
		return die_usage("unexpected argument: ", argv[optind]);
	if (gid_set && !cfg.jail.uid_set)
		return die_usage("--jail-gid needs --jail-uid", "");
	if (cfg.jail.uid_set && !cfg.jail.on)
		return die_usage("--jail-uid needs --jail=on", "");
	if (!cfg.store)
		cfg.store = store_default_root(store, sizeof(store));
	if (!cfg.run_dir)
		cfg.run_dir = forkd_default_run_dir(run, sizeof(run));
	if (!cfg.api_socket) {
		if (forkd_socket_default(api, sizeof(api)) < 0)
			return die_usage("the default API socket path is too long: give --api-socket", "");
		cfg.api_socket = api;
		/* Its directory (the default run directory, or $FORKD_SOCKET's). */
		char dir[4200];
		snprintf(dir, sizeof(dir), "%s", api);
		char *slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
				fprintf(stderr, "forkd: cannot create %s: %s\n", dir, strerror(errno));
				return 1;
			}
		}
	}
	if (cfg.forkvm) {
		/* Given: it must be there now, not at the first template build. */
		struct stat fst;
		if (stat(cfg.forkvm, &fst) < 0 || !S_ISREG(fst.st_mode) || access(cfg.forkvm, X_OK) < 0)
			return die_usage("--forkvm: not an executable file: ", cfg.forkvm);
	}
	if (!cfg.forkvm) {
		char self[4096];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n > 0) {
			self[n] = '\0';
			snprintf(forkvm, sizeof(forkvm), "%s/forkvm", dirname(self));
		} else {
			snprintf(forkvm, sizeof(forkvm), "forkvm");
		}
		cfg.forkvm = forkvm;
	}
	log_set_level(verbose >= 2 ? LOG_DEBUG : verbose == 1 ? LOG_INFO : LOG_WARN);
	if (log_file) {
		/* Onto fd 2, so clone processes and builders log there too. */
		int fd = open(log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0 || dup2(fd, 2) < 0) {
			fprintf(stderr, "forkd: cannot open log file %s: %s\n", log_file, strerror(errno));
			return 1;
		}
		close(fd);
	}
	/* Many clones: one control socket each. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct ctx c = { .sigfd = -1 };
	struct forkd *d = NULL;
	int status = 1;
	if ((rc = loop_create(&c.loop)) < 0) {
		fprintf(stderr, "forkd: cannot create the event loop: %s\n", strerror(-rc));
		return 1;
	}
	sigdelset(&set, SIGCHLD);
	c.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (c.sigfd < 0 || loop_add(c.loop, c.sigfd, EPOLLIN, on_signal, &c) < 0) {
		fprintf(stderr, "forkd: cannot watch signals: %s\n", strerror(errno));
		goto out;
	}
	enum vm_platform want = cfg.platform;
	if ((rc = vm_platform_resolve(want, &cfg.platform, err, sizeof(err))) < 0) {
		fprintf(stderr, "forkd: platform %s cannot run here: %s\n", vm_platform_name(want), err);
		goto out;
	}
	rc = forkd_create(&cfg, c.loop, &d, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "forkd: %s\n", err);
		goto out;
	}
	/* Set-up is done (socket bound, store and run directory open). */
	if ((rc = forkd_seccomp_apply(cfg.seccomp, cfg.platform)) < 0) {
		fprintf(stderr, "forkd: cannot install the seccomp filter: %s\n", strerror(-rc));
		goto out;
	}
	log_info("serving on %s (store %s, run dir %s, platform %s)", cfg.api_socket, cfg.store,
		 cfg.run_dir, vm_platform_name(cfg.platform));
	rc = loop_run(c.loop);
	if (rc < 0) {
		fprintf(stderr, "forkd: event loop: %s\n", strerror(-rc));
		goto out;
	}
	log_info("signal %d: killing the clones and exiting", c.signo);
	status = 0;
out:
	forkd_destroy(d);
	if (c.sigfd >= 0)
		close(c.sigfd);
	loop_destroy(c.loop);
	return status;
}
