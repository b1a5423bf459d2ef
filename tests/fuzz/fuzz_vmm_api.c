/* tests/fuzz/fuzz_vmm_api.c - libFuzzer target: raw bytes into forkvm's
 * REST API as one connection of its socket would deliver them:
 * http_process_raw() -> vmm_api_handle() (vmm/api.c: routing, methods,
 * every endpoint's JSON body) -> the real struct vmm (vmm/monitor.c: the
 * create/boot/pause/resume/shutdown/delete state machine, snapshot and
 * restore URL and tag parsing), one fresh monitor per input, so pipelined
 * requests walk its state machine.
 *
 * Below the monitor, the VM is a stand-in: the calls that would open
 * /dev/kvm, start vCPU threads or read and write snapshot directories and
 * stores are replaced at link time (-Wl,--wrap, see FUZZ_WRAP_vmm_api in
 * the Makefile) by the functions here. They keep the real preconditions
 * (configuration validated, Created -> Running on start, snapshots only
 * when paused) and build a struct vm with no vCPUs, so the real vm_pause,
 * vm_resume, vm_get_state, vm_get_config, vm_get_counters... run on it.
 * Nothing touches KVM, the file system or other processes.
 * FUZZ_SHOW=1 in the environment prints the server's answers (to check
 * what a seed reaches: build/fuzz/fuzz_vmm_api FILE). */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/http.h"
#include "common/log.h"
#include "common/loop.h"
#include "vmm/api.h"
#include "vmm/vm.h"
#include "vmm/vmm.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The stand-ins (their __real_ counterparts are never called). */
int __wrap_vm_create(const struct vm_config *cfg, struct loop *loop, vm_exit_cb *on_exit, void *arg,
		     char *err, size_t errlen, struct vm **out);
int __wrap_vm_start(struct vm *vm);
void __wrap_vm_destroy(struct vm *vm);
int __wrap_vm_snapshot(struct vm *vm, const char *dir, char *err, size_t errlen);
int __wrap_vm_snapshot_store(struct vm *vm, const char *store_root, const char *tag,
			     char id_hex[33], char *err, size_t errlen);
int __wrap_vm_restore(const char *dir, const struct vm_restore_opts *opts, struct loop *loop,
		      vm_exit_cb *on_exit, void *arg, char *err, size_t errlen, struct vm **out);
int __wrap_vm_restore_store(const char *store_root, const char *ref,
			    const struct vm_restore_opts *opts, struct loop *loop,
			    vm_exit_cb *on_exit, void *arg, char *err, size_t errlen,
			    struct vm **out);

static struct loop *fuzz_loop;
static unsigned shutdowns;
static bool show;

/* A struct vm as vm_alloc() leaves it, without vCPUs, channels or RAM. */
static struct vm *fake_vm(const struct vm_config *cfg, struct loop *loop, vm_exit_cb *on_exit,
			  void *arg, enum vm_state state)
{
	struct vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	if (vm_config_copy(&vm->cfg, cfg) < 0) {
		free(vm);
		return NULL;
	}
	vm->notify_fd = vm->wake_fd = -1;
	vm->plat = &platform_none;
	vm->mem.fd = -1;
	vm->agent.out_fd = vm->agent.listen_fd = vm->agent.conn_fd = -1;
	vm->console.out_fd = vm->console.listen_fd = vm->console.conn_fd = -1;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	vm->loop = loop;
	vm->on_exit = on_exit;
	vm->on_exit_arg = arg;
	vm->state = state;
	return vm;
}

int __wrap_vm_create(const struct vm_config *cfg, struct loop *loop, vm_exit_cb *on_exit, void *arg,
		     char *err, size_t errlen, struct vm **out)
{
	/* vm_create's first step, then what it leaves: a Created VM. */
	int rc = vm_config_validate(cfg, err, errlen);

	if (rc < 0)
		return rc;
	*out = fake_vm(cfg, loop, on_exit, arg, VM_STATE_CREATED);
	if (!*out) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

int __wrap_vm_start(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_STATE_CREATED) {
		pthread_mutex_unlock(&vm->lock);
		return -EBUSY;
	}
	vm->clock_base = 1;
	vm->state = VM_STATE_RUNNING;
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

void __wrap_vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	vm_config_free(&vm->cfg);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
}

/* vm_save_units' precondition; nothing is written. */
static int need_paused(struct vm *vm, char *err, size_t errlen)
{
	enum vm_state s = vm_get_state(vm);

	if (s != VM_STATE_PAUSED) {
		snprintf(err, errlen, "the VM is %s: pause it before a snapshot", vm_state_name(s));
		return -EBUSY;
	}
	return 0;
}

int __wrap_vm_snapshot(struct vm *vm, const char *dir, char *err, size_t errlen)
{
	(void)dir;
	return need_paused(vm, err, errlen);
}

int __wrap_vm_snapshot_store(struct vm *vm, const char *store_root, const char *tag,
			     char id_hex[33], char *err, size_t errlen)
{
	int rc = need_paused(vm, err, errlen);

	(void)store_root;
	(void)tag;
	if (rc == 0)
		snprintf(id_hex, 33, "%032x", 0x5eed);
	return rc;
}

/* A restored VM comes up Paused with the snapshot's configuration and
 * the allowed changes applied. */
static int fake_restore(const struct vm_restore_opts *opts, struct loop *loop, vm_exit_cb *on_exit,
			void *arg, char *err, size_t errlen, struct vm **out)
{
	struct vm_config cfg;
	int rc;

	vm_config_init(&cfg);
	cfg.serial_mode = VM_SERIAL_OFF;
	cfg.kernel = strdup("/fuzz/restored-payload");
	if (opts && opts->agent_socket)
		cfg.agent_socket = strdup(opts->agent_socket);
	if (opts && opts->hostname)
		cfg.hostname = strdup(opts->hostname);
	if (opts && opts->set_serial) {
		cfg.serial_mode = opts->serial_mode;
		if (opts->serial_path)
			cfg.serial_path = strdup(opts->serial_path);
	}
	rc = vm_config_validate(&cfg, err, errlen);
	if (rc == 0) {
		*out = fake_vm(&cfg, loop, on_exit, arg, VM_STATE_PAUSED);
		if (!*out)
			rc = -ENOMEM;
		else
			(*out)->clock_base = (*out)->paused_at = 1;
	}
	vm_config_free(&cfg);
	return rc;
}

int __wrap_vm_restore(const char *dir, const struct vm_restore_opts *opts, struct loop *loop,
		      vm_exit_cb *on_exit, void *arg, char *err, size_t errlen, struct vm **out)
{
	if (!dir || !*dir) {
		snprintf(err, errlen, "no snapshot directory");
		return -ENOENT;
	}
	return fake_restore(opts, loop, on_exit, arg, err, errlen, out);
}

int __wrap_vm_restore_store(const char *store_root, const char *ref,
			    const struct vm_restore_opts *opts, struct loop *loop,
			    vm_exit_cb *on_exit, void *arg, char *err, size_t errlen,
			    struct vm **out)
{
	(void)store_root;
	if (!ref || !*ref) {
		snprintf(err, errlen, "a snapshot reference (tag or id) is required");
		return -EINVAL;
	}
	return fake_restore(opts, loop, on_exit, arg, err, errlen, out);
}

static void on_shutdown(void *arg)
{
	(void)arg;
	shutdowns++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	show = getenv("FUZZ_SHOW") != NULL;
	if (loop_create(&fuzz_loop) < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* What vmm_api_start() configures. */
	struct http_server_config cfg = { .max_body_bytes = 1 << 20 };
	struct vmm_api api = { .on_shutdown = on_shutdown };
	char *out = NULL;
	size_t out_len = 0;
	bool closed = false;

	if (vmm_create(fuzz_loop, NULL, NULL, &api.vmm) < 0)
		abort();
	vmm_set_store(api.vmm, "/nonexistent/forkvm-fuzz-store");
	if (http_process_raw((const char *)data, size, &cfg, vmm_api_handle, &api, &out, &out_len,
			     &closed) == 0) {
		if (show)
			fprintf(stderr, "%.*s\n", (int)out_len, out);
		free(out);
	}
	vmm_destroy(api.vmm);
	return 0;
}
