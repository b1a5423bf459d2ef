/* vmm/vmm.h - the forkvm virtual machine monitor library: the one public
 * header of vmm/. Include only this header from outside vmm/.
 *
 * A struct vm is a KVM virtual machine with its guest RAM, vCPU threads,
 * devices and payload. Nothing here is global: one process may hold several
 * VMs. A struct vmm is the monitor behind the REST API: it holds at most one
 * VM configuration and VM (Cloud Hypervisor's model).
 *
 * Every function returns >= 0 on success and -errno on failure; where an
 * err buffer is taken, it receives a human-readable reason.
 */
#ifndef FORKVM_VMM_H
#define FORKVM_VMM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/loop.h"
#include "common/seccomp.h"

#define FORKVM_VERSION "0.1.0"

/* ------------------------------------------------------------ platforms */

/* What runs guest code (docs/design.md, Platforms): KVM, or a host process
 * traced with ptrace (no /dev/kvm needed). AUTO: KVM when /dev/kvm opens
 * and creates a VM, else the process platform. */
enum vm_platform {
	VM_PLATFORM_AUTO,
	VM_PLATFORM_KVM,
	VM_PLATFORM_PROCESS,
};

/* "auto", "kvm", "process". Returns 0 or -EINVAL. */
int vm_platform_parse(const char *s, enum vm_platform *out) __attribute__((warn_unused_result));
const char *vm_platform_name(enum vm_platform p);
/* The platform want stands for here (AUTO decided as above), in *got;
 * 0, or -errno with why set when it cannot run here. */
int vm_platform_resolve(enum vm_platform want, enum vm_platform *got, char *why, size_t len)
	__attribute__((warn_unused_result));

/* ------------------------------------------------------------ config */

/* A Linux guest's disk (--disk path=IMG[,readonly=on]): a raw image on a
 * virtio-blk device, vda, vdb... in the order given. */
struct vm_disk {
	char *path;
	bool readonly;
};

#define VM_MAX_DISKS 4
/* Guest vsock CIDs: 0-2 are reserved (hypervisor, local, host), and
 * 0xffffffff is VMADDR_CID_ANY. */
#define VM_VSOCK_CID_MIN 3U
#define VM_VSOCK_CID_MAX 0xfffffffeU

enum vm_serial_mode {
	VM_SERIAL_OFF,
	VM_SERIAL_TTY,
	VM_SERIAL_FILE,
	VM_SERIAL_SOCKET,
};

/* The VM configuration; the JSON form is what PUT /api/v1/vm.create takes
 * (docs/api.md). Strings are owned (malloc'd) and freed by vm_config_free. */
struct vm_config {
	unsigned boot_vcpus;
	uint64_t memory_size;
	char *kernel;  /* payload: a static ELF64 function guest, or a Linux
			* kernel (bzImage, KVM only: docs/linux-guests.md) */
	char *cmdline; /* function guest: argv[1..] (shell-like words);
			* Linux: the kernel command line */
	char *initramfs; /* Linux: an initramfs loaded beside the kernel */
	unsigned nr_disks; /* Linux: virtio-blk disks */
	struct vm_disk disks[VM_MAX_DISKS];
	enum vm_serial_mode serial_mode;
	char *serial_path;  /* FILE or SOCKET mode */
	char *agent_socket; /* Unix socket for guest fd 0/1; NULL: fd 1 -> console, fd 0 EOF */
	/* Linux: virtio-vsock with guest CID vsock_cid (0: no device). Host
	 * port 1024 is the agent channel; other ports follow Firecracker's
	 * Unix socket convention on vsock_socket (NULL: none). */
	uint32_t vsock_cid;
	char *vsock_socket;
	char *hostname;     /* uname nodename; NULL: "forkvm" */
	/* Where the VM runs: the host's choice, not part of the guest's
	 * configuration (not in config.json; vm.info reports it). */
	enum vm_platform platform;
};

#define VM_DEFAULT_VCPUS 1U
#define VM_DEFAULT_MEMORY (512ULL << 20)

/* Sets the defaults (1 vCPU, 512 MiB, serial on the tty, no agent). */
void vm_config_init(struct vm_config *cfg);
void vm_config_free(struct vm_config *cfg);
int vm_config_copy(struct vm_config *dst, const struct vm_config *src) __attribute__((warn_unused_result));

/* Checks ranges and required fields. Returns 0 or -EINVAL with err set. */
int vm_config_validate(const struct vm_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* JSON <-> config. from_json starts from the defaults, rejects unknown keys
 * and wrong types with a message naming the field. */
int vm_config_from_json(const json_t *j, struct vm_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
json_t *vm_config_to_json(const struct vm_config *cfg);

/* Command-line option values, Cloud Hypervisor syntax: "boot=4",
 * "size=4G", "tty|off|file=PATH|socket=PATH", "socket=PATH". */
int vm_config_parse_cpus(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int vm_config_parse_memory(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int vm_config_parse_serial(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int vm_config_parse_agent(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* One --disk value, "path=IMG[,readonly=on|off]", appended to cfg's disks. */
int vm_config_parse_disk(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* The --vsock value, "cid=N[,socket=PATH]" (Cloud Hypervisor's syntax). */
int vm_config_parse_vsock(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* ------------------------------------------------------------ VM */

enum vm_state {
	VM_STATE_CREATED,
	VM_STATE_RUNNING,
	VM_STATE_PAUSED,
	VM_STATE_SHUTDOWN,
};

const char *vm_state_name(enum vm_state s);

struct vm;

/* Why the guest stopped: its exit status (exit_group), or a fault. */
struct vm_exit_info {
	bool exited;     /* the guest stopped by itself */
	bool faulted;    /* ... because of a fault (report in reason) */
	int status;      /* exit status; for a fault 128 + the matching signal */
	char reason[512];
};

/* Called on the loop thread once the guest has stopped by itself. */
typedef void vm_exit_cb(void *arg, struct vm *vm);

/* Builds a VM from cfg: KVM VM, guest RAM, memory slots, irqchip, PIT,
 * vCPUs, devices, payload. The VM is left in state Created, its channel
 * sockets registered on loop (which must be run by the caller).
 * Returns 0 and *out, or -errno with err set. */
int vm_create(const struct vm_config *cfg, struct loop *loop, vm_exit_cb *on_exit, void *arg,
	      char *err, size_t errlen, struct vm **out) __attribute__((warn_unused_result));

/* Starts the vCPU threads (Created -> Running). */
int vm_start(struct vm *vm) __attribute__((warn_unused_result));

/* Stops every vCPU outside KVM_RUN and returns once all have stopped
 * (Running -> Paused). -EBUSY if not running. */
int vm_pause(struct vm *vm) __attribute__((warn_unused_result));

/* Paused -> Running. -EBUSY if not paused. */
int vm_resume(struct vm *vm) __attribute__((warn_unused_result));

/* Writes a snapshot of the paused VM into the directory dir (which must
 * not exist or be empty): config.json, state.json, memory-ranges,
 * snapshot.json (docs/snapshot-format.md). -EBUSY unless paused; the VM is
 * untouched whatever happens. */
int vm_snapshot(struct vm *vm, const char *dir, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Snapshots the paused VM into the store at store_root (created if
 * missing), tagged tag (NULL: untagged); id_hex gets its id. A VM restored
 * from that same store only hashes and compresses what changed since. */
int vm_snapshot_store(struct vm *vm, const char *store_root, const char *tag, char id_hex[33],
		      char *err, size_t errlen) __attribute__((warn_unused_result));

/* Changes a restore may make to the snapshot's configuration: only what
 * is safe (the host ends of the channels, the hostname). */
struct vm_restore_opts {
	const char *agent_socket; /* NULL: keep (a snapshot with an agent keeps one) */
	bool set_serial;
	enum vm_serial_mode serial_mode;
	const char *serial_path;
	const char *hostname;     /* NULL: keep */
	const char *clone_id;     /* NULL: none; else the guest's clone id (identity page) */
	bool running;             /* come up Running instead of Paused (no park and resume) */
	enum vm_platform platform; /* AUTO: this host's default, whatever the snapshot's */
	const struct vmm_seccomp *seccomp; /* NULL: none; else each vCPU thread installs its
					    * filter before it first enters the guest */
};

/* Builds a VM from the snapshot in dir, verified first; its memory maps
 * the snapshot's memory-ranges copy-on-write. It comes up Paused. opts may
 * be NULL. */
int vm_restore(const char *dir, const struct vm_restore_opts *opts, struct loop *loop,
	       vm_exit_cb *on_exit, void *arg, char *err, size_t errlen, struct vm **out)
	__attribute__((warn_unused_result));

/* Like vm_restore, from a store snapshot (ref: tag or id prefix); its
 * memory image is materialized once and then shared by every restore. */
int vm_restore_store(const char *store_root, const char *ref, const struct vm_restore_opts *opts,
		     struct loop *loop, vm_exit_cb *on_exit, void *arg, char *err, size_t errlen,
		     struct vm **out) __attribute__((warn_unused_result));

/* A store snapshot opened once and restored many times (the fork
 * daemon's templates): verified, its memory image materialized and held
 * open (share-locked: gc keeps it), its configuration and state parsed.
 * Restoring from it costs no store access. */
struct vm_template;
/* platform: where its restores will run (AUTO: this host's default). */
int vm_template_open(const char *store_root, const char *ref, enum vm_platform platform,
		     struct vm_template **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void vm_template_close(struct vm_template *t);
const struct vm_config *vm_template_config(const struct vm_template *t);
/* The snapshot id, 32 hex digits. */
void vm_template_id(const struct vm_template *t, char id_hex[33]);
/* The file descriptors its clones restore from, which a forked child
 * that closes every other descriptor must keep: its memory image first,
 * then its disks' images (a Linux template's). Returns how many (at most
 * max) in fds. */
#define VM_TEMPLATE_MAX_FDS 27
unsigned vm_template_fds(const struct vm_template *t, int *fds, unsigned max);
/* Rebinds the template to fds (the same files in the same order; a child
 * that moved them). */
void vm_template_set_fds(struct vm_template *t, const int *fds, unsigned n);
/* Like vm_restore_store() from an opened template. The VM comes up
 * Paused. */
int vm_restore_template(const struct vm_template *t, const struct vm_restore_opts *opts,
			struct loop *loop, vm_exit_cb *on_exit, void *arg, char *err, size_t errlen,
			struct vm **out) __attribute__((warn_unused_result));

/* Gives a paused VM a new identity: clone id (at most 63 bytes) and fresh
 * randomness, visible to the guest from its first instruction after
 * resume. -EBUSY unless paused; -ENOTSUP if the payload has no identity. */
int vm_set_identity(struct vm *vm, const char *clone_id) __attribute__((warn_unused_result));

/* Where building or restoring a VM spent its time (monotonic ns), and
 * when a vCPU first entered KVM_RUN after the last start or resume (0: not
 * yet; read it with vm_first_run_at()). */
struct vm_timings {
	uint64_t kvm_ns;     /* /dev/kvm, KVM_CREATE_VM, capabilities */
	uint64_t map_ns;     /* guest memory mapped (the snapshot's image, copy-on-write) */
	uint64_t create_ns;  /* memory slots, irqchip, PIT, CPUID, vCPUs */
	uint64_t state_ns;   /* channels, payload or state units replayed */
	uint64_t threads_ns; /* vCPU threads started */
};
void vm_get_timings(struct vm *vm, struct vm_timings *t);
uint64_t vm_first_run_at(struct vm *vm);

/* Stops and joins the vCPU threads (any state -> Shutdown). Idempotent. */
void vm_stop(struct vm *vm);

/* Frees everything; stops the VM first if needed. Call on the loop thread. */
void vm_destroy(struct vm *vm);

enum vm_state vm_get_state(struct vm *vm);
void vm_get_exit_info(struct vm *vm, struct vm_exit_info *info);
const struct vm_config *vm_get_config(const struct vm *vm);
/* The platform the VM runs on: "kvm" or "process". */
const char *vm_get_platform(const struct vm *vm);

/* Counters for vm.info and -v logging: exits and system calls served. */
struct vm_counters {
	uint64_t exits;
	uint64_t syscalls;
	uint64_t syscalls_enosys;
	uint64_t memory_mapped_bytes; /* guest memory mapped by the payload */
};
void vm_get_counters(struct vm *vm, struct vm_counters *c);

/* ------------------------------------------------------------ seccomp */

/* The VMM's seccomp-bpf filters (vmm/seccomp.c), compiled once: one for the
 * VMM thread and every thread it starts, a narrower one each vCPU thread
 * adds before it first enters the guest. A system call outside them kills
 * the process with SIGSYS (SC_MODE_ON) or is logged (SC_MODE_LOG). */
struct vmm_seccomp;
/* For VMs on platform p (resolved: KVM or PROCESS). */
int vmm_seccomp_new(enum sc_mode mode, enum vm_platform p, struct vmm_seccomp **out)
	__attribute__((warn_unused_result));
void vmm_seccomp_free(struct vmm_seccomp *s);
enum sc_mode vmm_seccomp_mode(const struct vmm_seccomp *s);
/* Installs the VMM filter on every thread of the process (NULL: no-op). */
int vmm_seccomp_apply(const struct vmm_seccomp *s) __attribute__((warn_unused_result));
/* Installs the vCPU filter on the calling thread (NULL: no-op). */
int vmm_seccomp_apply_vcpu(const struct vmm_seccomp *s) __attribute__((warn_unused_result));
/* Compiles a filter that allows what the VMM filter allows plus extra: for
 * a process that creates VMMs (forkd, whose clones inherit its filter and
 * add the VMM's). */
int vmm_seccomp_build_host(enum sc_mode mode, enum vm_platform p, const struct sc_rule *extra,
			   size_t n, struct sc_prog *out) __attribute__((warn_unused_result));
/* The device node a jailed clone of platform p needs ("/dev/kvm"), or
 * NULL. */
const char *vm_platform_jail_device(enum vm_platform p);
/* The vCPU filter vm's vCPU threads install (before vm_start). */
void vm_set_seccomp(struct vm *vm, const struct vmm_seccomp *s);

/* ------------------------------------------------------------ monitor */

struct vmm;

/* Creates the monitor. on_exit is called (on the loop thread) when the
 * guest stops by itself; the caller decides whether the process ends. */
int vmm_create(struct loop *loop, vm_exit_cb *on_exit, void *arg, struct vmm **out)
	__attribute__((warn_unused_result));
void vmm_destroy(struct vmm *vmm);

/* The REST verbs (docs/api.md). Wrong state: -EBUSY; bad input: -EINVAL,
 * -ENOENT, -ENOEXEC...; err explains. */
int vmm_vm_create(struct vmm *vmm, const struct vm_config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int vmm_vm_boot(struct vmm *vmm, char *err, size_t errlen) __attribute__((warn_unused_result));
int vmm_vm_pause(struct vmm *vmm, char *err, size_t errlen) __attribute__((warn_unused_result));
int vmm_vm_resume(struct vmm *vmm, char *err, size_t errlen) __attribute__((warn_unused_result));
int vmm_vm_shutdown(struct vmm *vmm, char *err, size_t errlen) __attribute__((warn_unused_result));
int vmm_vm_reboot(struct vmm *vmm, char *err, size_t errlen) __attribute__((warn_unused_result));
/* url: file:///DIR or store://TAG (store:// alone: untagged), in the store
 * set with vmm_set_store() (default: store_default_root()). Snapshot needs
 * a paused VM (id_hex gets a store snapshot's id, "" otherwise); restore
 * needs no VM. */
void vmm_set_store(struct vmm *vmm, const char *root);
/* The platform of the VMs this vmm creates or restores (a resolved one:
 * KVM or PROCESS; default AUTO, decided per VM). */
void vmm_set_platform(struct vmm *vmm, enum vm_platform p);
/* The filters for the VMs this vmm creates or restores (NULL: none). */
void vmm_set_seccomp(struct vmm *vmm, const struct vmm_seccomp *s);
int vmm_vm_snapshot(struct vmm *vmm, const char *url, char id_hex[33], char *err, size_t errlen)
	__attribute__((warn_unused_result));
int vmm_vm_restore(struct vmm *vmm, const char *url, const struct vm_restore_opts *opts,
		   bool resume, char *err, size_t errlen) __attribute__((warn_unused_result));
int vmm_vm_delete(struct vmm *vmm, char *err, size_t errlen) __attribute__((warn_unused_result));
/* GET vm.info body, or NULL with -ENOENT in *rc when no VM is configured. */
json_t *vmm_vm_info(struct vmm *vmm, int *rc);
/* GET vm.counters body, or NULL with -EBUSY in *rc when no VM runs. */
json_t *vmm_vm_counters(struct vmm *vmm, int *rc);
struct vm *vmm_get_vm(struct vmm *vmm);

/* The REST API on a Unix socket (mode 0600). on_shutdown is called when
 * PUT /api/v1/vmm.shutdown arrives. */
struct vmm_api;
int vmm_api_start(struct vmm *vmm, struct loop *loop, const char *socket_path,
		  void (*on_shutdown)(void *arg), void *arg, struct vmm_api **out)
	__attribute__((warn_unused_result));
void vmm_api_stop(struct vmm_api *api);

#endif
