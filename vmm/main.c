/* vmm/main.c - the forkvm binary: Cloud Hypervisor compatible command
 * line, one VM per process, REST API on a Unix socket. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "vmm/vmm.h"

struct ctx {
	struct loop *loop;
	struct vmm *vmm;
	bool done;
	int status;
	int sigfd;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: forkvm [OPTIONS]\n"
		"\n"
		"Runs one microVM. With --kernel it boots at once; with only --api-socket it\n"
		"waits for a VM to be created and booted over the REST API (see forkctl).\n"
		"The process ends when the guest exits (with the guest's exit status; 128+N\n"
		"after a guest fault, N being the matching signal) or on vmm.shutdown.\n"
		"\n"
		"Options:\n"
		"  --api-socket PATH        REST API on this Unix socket (mode 0600);\n"
		"                           also accepts path=PATH\n"
		"  --kernel PATH            payload: a static x86-64 ELF (the function guest,\n"
		"                           e.g. build/guest/agent), or a Linux bzImage or\n"
		"                           vmlinux (KVM only; docs/linux-guests.md)\n"
		"  --cmdline ARGS           function guest: its arguments argv[1..]\n"
		"                           (shell-like quoting); Linux: the kernel\n"
		"                           command line (console=ttyS0 for the serial\n"
		"                           port, console=hvc0 for virtio-console)\n"
		"  --initramfs PATH         Linux: an initramfs (cpio, compressed or not)\n"
		"  --disk path=IMG[,readonly=on]\n"
		"                           Linux: a raw disk image on virtio-blk (vda,\n"
		"                           vdb... in order; up to 4 --disk options)\n"
		"  --vsock cid=N[,socket=PATH]\n"
		"                           Linux: virtio-vsock, guest CID N (3 or more);\n"
		"                           host port 1024 is the --agent channel; with\n"
		"                           socket=PATH, Firecracker's convention: clients\n"
		"                           of PATH send \"CONNECT PORT\\n\", and the guest's\n"
		"                           connections to port P reach PATH_P\n"
		"  --cpus boot=N            vCPUs, 1..254 (default 1); each guest thread\n"
		"                           runs on its own vCPU\n"
		"  --memory size=SIZE       guest RAM, e.g. 512M, 4G (default 512M;\n"
		"                           a multiple of 2M, 16M..64G)\n"
		"  --serial MODE            guest console (fd 2; a Linux guest's ttyS0 and\n"
		"                           hvc0): tty (default), off, file=PATH or\n"
		"                           socket=PATH (whose client also types into a\n"
		"                           Linux guest's console)\n"
		"  --agent socket=PATH      agent channel (guest fd 0/1) on this Unix socket;\n"
		"                           without it fd 1 goes to the console, fd 0 is empty\n"
		"  --restore source_url=URL[,resume=true]\n"
		"                           restore a snapshot, URL file:///DIR or\n"
		"                           store://TAG (comes up paused unless\n"
		"                           resume=true); --agent and --serial may change\n"
		"                           the channels' host ends\n"
		"  --store DIR              the snapshot store for store:// URLs (default\n"
		"                           $FORKVM_STORE, else /var/lib/forkvm/store as\n"
		"                           root, ~/.local/share/forkvm/store otherwise)\n"
		"  --platform P             what runs the guest: kvm, process (a host\n"
		"                           process traced with ptrace: no /dev/kvm\n"
		"                           needed) or auto (default: $FORKVM_PLATFORM,\n"
		"                           else auto: kvm where /dev/kvm works, else\n"
		"                           process)\n"
		"  --seccomp MODE           system call filters: on (default; a call\n"
		"                           outside the allowlist kills forkvm with\n"
		"                           SIGSYS), log (allow, and log to the kernel\n"
		"                           audit log), off (docs/security.md)\n"
		"  --log-file PATH          VMM log here instead of stderr\n"
		"  -v                       more log output: -v info, -vv debug,\n"
		"                           -vvv also every guest system call\n"
		"  -h, --help               this help\n"
		"  -V, --version            version\n"
		"\n"
		"Example:\n"
		"  forkvm --api-socket /tmp/a.sock --cpus boot=2 --memory size=512M \\\n"
		"         --kernel build/guest/agent --agent socket=/tmp/a.agent\n"
		"  forkctl --agent=/tmp/a.agent eval '6*7'\n");
}

static void on_vm_exit(void *arg, struct vm *vm)
{
	struct ctx *c = arg;
	struct vm_exit_info info;

	vm_get_exit_info(vm, &info);
	if (info.faulted) {
		fprintf(stderr, "forkvm: %s\n", info.reason);
		log_error("%s", info.reason);
	} else {
		log_info("%s", info.reason);
	}
	c->status = info.status;
	c->done = true;
	loop_stop(c->loop);
}

static void on_api_shutdown(void *arg)
{
	struct ctx *c = arg;
	log_info("vmm.shutdown requested");
	c->status = 0;
	c->done = true;
	loop_stop(c->loop);
}

static void on_signal(void *arg, uint32_t events)
{
	struct ctx *c = arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(c->sigfd, &si, sizeof(si)) != sizeof(si))
		return;
	log_info("signal %u: shutting down", si.ssi_signo);
	c->status = 128 + (int)si.ssi_signo;
	c->done = true;
	loop_stop(c->loop);
}

/* --restore source_url=URL[,resume=on|off|true|false][,prefault=...] */
struct restore_arg {
	char url[4096];
	bool resume;
};

static int parse_restore(const char *arg, struct restore_arg *ra, char *err, size_t errlen)
{
	char *s = strdup(arg), *save = NULL;
	int rc = 0;

	if (!s)
		return -ENOMEM;
	for (char *tok = strtok_r(s, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq) {
			snprintf(err, errlen, "--restore: expected key=value, got '%s'", tok);
			rc = -EINVAL;
			break;
		}
		*eq++ = '\0';
		if (!strcmp(tok, "source_url")) {
			snprintf(ra->url, sizeof(ra->url), "%s", eq);
		} else if (!strcmp(tok, "resume") || !strcmp(tok, "prefault")) {
			bool on = !strcmp(eq, "true") || !strcmp(eq, "on");
			if (!on && strcmp(eq, "false") && strcmp(eq, "off")) {
				snprintf(err, errlen, "--restore: %s must be true or false", tok);
				rc = -EINVAL;
			} else if (!strcmp(tok, "resume")) {
				ra->resume = on;
			}
		} else {
			snprintf(err, errlen,
				 "--restore: unknown option '%s' (supported: source_url, resume, prefault)",
				 tok);
			rc = -EINVAL;
		}
	}
	free(s);
	if (rc == 0 && !ra->url[0]) {
		snprintf(err, errlen, "--restore: source_url=file:///DIR is required");
		rc = -EINVAL;
	}
	return rc;
}

static int die_usage(const char *msg, const char *arg)
{
	fprintf(stderr, "forkvm: %s%s\nTry 'forkvm --help'.\n", msg, arg);
	return 2;
}

/* A usage error after the configuration holds copies: freed first, so a
 * leak checker (the SAN build) does not turn exit status 2 into 1. */
static int die_usage_cfg(struct vm_config *cfg, const char *msg, const char *arg)
{
	int rc = die_usage(msg, arg);
	vm_config_free(cfg);
	return rc;
}

int main(int argc, char **argv)
{
	enum { O_API = 256, O_KERNEL, O_CMDLINE, O_CPUS, O_MEMORY, O_SERIAL, O_AGENT, O_LOGFILE,
	       O_RESTORE, O_STORE, O_SECCOMP, O_PLATFORM, O_INITRAMFS, O_DISK, O_VSOCK };
	static const struct option opts[] = {
		{ "api-socket", required_argument, NULL, O_API },
		{ "kernel", required_argument, NULL, O_KERNEL },
		{ "cmdline", required_argument, NULL, O_CMDLINE },
		{ "initramfs", required_argument, NULL, O_INITRAMFS },
		{ "disk", required_argument, NULL, O_DISK },
		{ "vsock", required_argument, NULL, O_VSOCK },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "memory", required_argument, NULL, O_MEMORY },
		{ "serial", required_argument, NULL, O_SERIAL },
		{ "agent", required_argument, NULL, O_AGENT },
		{ "log-file", required_argument, NULL, O_LOGFILE },
		{ "restore", required_argument, NULL, O_RESTORE },
		{ "store", required_argument, NULL, O_STORE },
		{ "seccomp", required_argument, NULL, O_SECCOMP },
		{ "platform", required_argument, NULL, O_PLATFORM },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct vm_config cfg;
	struct ctx c = { .sigfd = -1 };
	struct vmm_api *api = NULL;
	struct vmm_seccomp *sc = NULL;
	enum sc_mode sc_mode = SC_MODE_ON;
	enum vm_platform platform = VM_PLATFORM_AUTO;
	const char *env_platform = getenv("FORKVM_PLATFORM");
	const char *api_path = NULL, *log_file = NULL, *restore = NULL, *store = NULL;
	bool set_serial = false, set_agent = false, set_sizes = false;
	char err[512];
	int verbose = 0, opt, rc, status = 1;

	log_set_ident("forkvm");
	vm_config_init(&cfg);
	if (env_platform && *env_platform && vm_platform_parse(env_platform, &platform) < 0)
		return die_usage_cfg(&cfg, "FORKVM_PLATFORM must be kvm, process or auto, not ", env_platform);
	while ((opt = getopt_long(argc, argv, "vhV", opts, NULL)) != -1) {
		rc = 0;
		switch (opt) {
		case O_API:
			api_path = strncmp(optarg, "path=", 5) == 0 ? optarg + 5 : optarg;
			if (!*api_path)
				return die_usage_cfg(&cfg, "--api-socket needs a path", "");
			break;
		case O_KERNEL:
			free(cfg.kernel);
			cfg.kernel = strdup(optarg);
			break;
		case O_CMDLINE:
			free(cfg.cmdline);
			cfg.cmdline = strdup(optarg);
			break;
		case O_INITRAMFS:
			free(cfg.initramfs);
			cfg.initramfs = strdup(optarg);
			break;
		case O_DISK:
			rc = vm_config_parse_disk(&cfg, optarg, err, sizeof(err));
			break;
		case O_VSOCK:
			rc = vm_config_parse_vsock(&cfg, optarg, err, sizeof(err));
			break;
		case O_CPUS:
			rc = vm_config_parse_cpus(&cfg, optarg, err, sizeof(err));
			set_sizes = true;
			break;
		case O_MEMORY:
			rc = vm_config_parse_memory(&cfg, optarg, err, sizeof(err));
			set_sizes = true;
			break;
		case O_SERIAL:
			rc = vm_config_parse_serial(&cfg, optarg, err, sizeof(err));
			set_serial = true;
			break;
		case O_AGENT:
			rc = vm_config_parse_agent(&cfg, optarg, err, sizeof(err));
			set_agent = true;
			break;
		case O_RESTORE:
			restore = optarg;
			break;
		case O_STORE:
			if (!*optarg)
				return die_usage_cfg(&cfg, "--store needs a directory", "");
			store = optarg;
			break;
		case O_SECCOMP:
			if (sc_mode_parse(optarg, &sc_mode) < 0)
				return die_usage_cfg(&cfg, "--seccomp must be on, log or off, not ", optarg);
			break;
		case O_PLATFORM:
			if (vm_platform_parse(optarg, &platform) < 0)
				return die_usage_cfg(&cfg, "--platform must be kvm, process or auto, not ", optarg);
			break;
		case O_LOGFILE:
			log_file = optarg;
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("forkvm %s\n", FORKVM_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'forkvm --help'.\n");
			return 2;
		}
		if (rc < 0)
			return die_usage_cfg(&cfg, err, "");
	}
	if (optind < argc)
		return die_usage_cfg(&cfg, "unexpected argument: ", argv[optind]);
	struct restore_arg ra = { 0 };
	if (restore) {
		if (cfg.kernel || cfg.cmdline || cfg.initramfs || cfg.nr_disks || cfg.vsock_cid || set_sizes)
			return die_usage_cfg(&cfg, "--restore takes the payload, devices, vCPUs and memory from the "
					 "snapshot: drop --kernel, --cmdline, --initramfs, --disk, --vsock, --cpus and --memory", "");
		if (parse_restore(restore, &ra, err, sizeof(err)) < 0)
			return die_usage_cfg(&cfg, err, "");
	}
	if (!cfg.kernel && !api_path && !restore)
		return die_usage_cfg(&cfg, "nothing to do: give --kernel PATH, --restore source_url=URL and/or "
				 "--api-socket PATH", "");
	if (!cfg.kernel && !restore &&
	    (cfg.cmdline || cfg.agent_socket || cfg.initramfs || cfg.nr_disks || cfg.vsock_cid))
		return die_usage_cfg(&cfg, "--cmdline, --initramfs, --disk, --vsock and --agent need --kernel (or --restore)", "");

	log_set_level(verbose >= 3 ? LOG_TRACE : verbose == 2 ? LOG_DEBUG : verbose == 1 ? LOG_INFO : LOG_WARN);
	/* API clients, channels and the store's files each take a descriptor:
	 * the soft limit goes up to the hard one, as forkd's does (a server
	 * that still runs out refuses connections: common/http_server.c). */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_info("cannot raise the file limit to %llu: %s",
				 (unsigned long long)rl.rlim_max, strerror(errno));
	}
	if (log_file && (rc = log_open_file(log_file)) < 0) {
		fprintf(stderr, "forkvm: cannot open log file %s: %s\n", log_file, strerror(-rc));
		return 1;
	}

	/* Signals: handled on the loop thread; vCPU threads block them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((rc = loop_create(&c.loop)) < 0) {
		fprintf(stderr, "forkvm: cannot create the event loop: %s\n", strerror(-rc));
		goto out;
	}
	c.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (c.sigfd < 0 || loop_add(c.loop, c.sigfd, EPOLLIN, on_signal, &c) < 0) {
		fprintf(stderr, "forkvm: cannot watch signals: %s\n", strerror(errno));
		goto out;
	}
	if ((rc = vmm_create(c.loop, on_vm_exit, &c, &c.vmm)) < 0) {
		fprintf(stderr, "forkvm: %s\n", strerror(-rc));
		goto out;
	}
	enum vm_platform want = platform;
	if ((rc = vm_platform_resolve(want, &platform, err, sizeof(err))) < 0) {
		fprintf(stderr, "forkvm: platform %s cannot run here: %s\n", vm_platform_name(want), err);
		goto out;
	}
	vmm_set_platform(c.vmm, platform);
	cfg.platform = platform;
	if (store)
		vmm_set_store(c.vmm, store);
	if ((rc = vmm_seccomp_new(sc_mode, platform, &sc)) < 0) {
		fprintf(stderr, "forkvm: cannot build the seccomp filters: %s\n", strerror(-rc));
		goto out;
	}
	vmm_set_seccomp(c.vmm, sc);
	if (api_path && (rc = vmm_api_start(c.vmm, c.loop, api_path, on_api_shutdown, &c, &api)) < 0) {
		fprintf(stderr, "forkvm: cannot serve the API on %s: %s\n", api_path, strerror(-rc));
		goto out;
	}
	/* Set-up is done: from here on, every thread of this process runs
	 * under the VMM filter, and vCPU threads add theirs before they first
	 * enter the guest. */
	if ((rc = vmm_seccomp_apply(sc)) < 0) {
		fprintf(stderr, "forkvm: cannot install the seccomp filter: %s\n", strerror(-rc));
		goto out;
	}
	if (restore) {
		struct vm_restore_opts o = {
			.agent_socket = set_agent ? cfg.agent_socket : NULL,
			.set_serial = set_serial,
			.serial_mode = cfg.serial_mode,
			.serial_path = cfg.serial_path,
		};
		rc = vmm_vm_restore(c.vmm, ra.url, &o, ra.resume, err, sizeof(err));
		if (rc < 0) {
			fprintf(stderr, "forkvm: restore: %s\n", err);
			goto out;
		}
	} else if (cfg.kernel) {
		rc = vmm_vm_create(c.vmm, &cfg, err, sizeof(err));
		if (rc == 0)
			rc = vmm_vm_boot(c.vmm, err, sizeof(err));
		if (rc < 0) {
			fprintf(stderr, "forkvm: %s\n", err);
			goto out;
		}
	}
	while (!c.done) {
		rc = loop_run_once(c.loop, -1);
		if (rc < 0) {
			fprintf(stderr, "forkvm: event loop: %s\n", strerror(-rc));
			goto out;
		}
	}
	/* Let a last response (vmm.shutdown) reach its client. */
	for (int i = 0; i < 10 && loop_run_once(c.loop, 0) > 0; i++)
		;
	status = c.status;
out:
	vmm_api_stop(api);
	vmm_destroy(c.vmm);
	if (c.sigfd >= 0)
		close(c.sigfd);
	loop_destroy(c.loop);
	vmm_seccomp_free(sc);
	vm_config_free(&cfg);
	return status;
}
