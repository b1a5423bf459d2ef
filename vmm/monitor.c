/* vmm/monitor.c - struct vmm: the monitor behind the REST API. It holds
 * at most one VM configuration and one VM, with Cloud Hypervisor's state
 * machine: create (config only) -> boot -> pause/resume -> shutdown, and
 * boot again after a shutdown. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/log.h"
#include "store/store.h"
#include "vmm/vm.h"
#include "vmm/vmm.h"

struct vmm {
	struct loop *loop;
	vm_exit_cb *on_exit;
	void *arg;
	bool have_config;
	struct vm_config cfg;
	struct vm *vm;
	bool shut_down; /* the VM was shut down (state Shutdown, no vm) */
	struct vm_exit_info last_exit;
	char store_root[4096]; /* for store:// URLs; "" until needed: the default */
	const struct vmm_seccomp *seccomp; /* the vCPU threads' filter (may be NULL) */
	enum vm_platform platform; /* where VMs run (resolved when set) */
};

int vmm_create(struct loop *loop, vm_exit_cb *on_exit, void *arg, struct vmm **out)
{
	struct vmm *vmm = calloc(1, sizeof(*vmm));
	if (!vmm)
		return -ENOMEM;
	vmm->loop = loop;
	vmm->on_exit = on_exit;
	vmm->arg = arg;
	*out = vmm;
	return 0;
}

void vmm_destroy(struct vmm *vmm)
{
	if (!vmm)
		return;
	vm_destroy(vmm->vm);
	if (vmm->have_config)
		vm_config_free(&vmm->cfg);
	free(vmm);
}

struct vm *vmm_get_vm(struct vmm *vmm)
{
	return vmm->vm;
}

static void vmm_vm_exited(void *arg, struct vm *vm)
{
	struct vmm *vmm = arg;

	vm_get_exit_info(vm, &vmm->last_exit);
	if (vmm->on_exit)
		vmm->on_exit(vmm->arg, vm);
}

int vmm_vm_create(struct vmm *vmm, const struct vm_config *cfg, char *err, size_t errlen)
{
	int rc;

	if (vmm->have_config)
		return err_fail(err, errlen, -EBUSY, "a VM is already created (delete it first)");
	rc = vm_config_validate(cfg, err, errlen);
	if (rc < 0)
		return rc;
	if (vm_config_copy(&vmm->cfg, cfg) < 0)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	vmm->have_config = true;
	vmm->shut_down = false;
	return 0;
}

int vmm_vm_delete(struct vmm *vmm, char *err, size_t errlen)
{
	if (!vmm->have_config)
		return err_fail(err, errlen, -EBUSY, "no VM is created");
	if (vmm->vm) {
		vm_destroy(vmm->vm);
		vmm->vm = NULL;
	}
	vm_config_free(&vmm->cfg);
	vmm->have_config = false;
	vmm->shut_down = false;
	return 0;
}

int vmm_vm_boot(struct vmm *vmm, char *err, size_t errlen)
{
	int rc;

	if (!vmm->have_config)
		return err_fail(err, errlen, -EBUSY, "no VM is created (PUT /api/v1/vm.create first)");
	if (vmm->vm)
		return err_fail(err, errlen, -EBUSY, "the VM is already booted (state %s)",
			    vm_state_name(vm_get_state(vmm->vm)));
	memset(&vmm->last_exit, 0, sizeof(vmm->last_exit));
	if (vmm->cfg.platform == VM_PLATFORM_AUTO)
		vmm->cfg.platform = vmm->platform;
	rc = vm_create(&vmm->cfg, vmm->loop, vmm_vm_exited, vmm, err, errlen, &vmm->vm);
	if (rc < 0)
		return rc;
	vm_set_seccomp(vmm->vm, vmm->seccomp);
	rc = vm_start(vmm->vm);
	if (rc < 0) {
		vm_destroy(vmm->vm);
		vmm->vm = NULL;
		return err_fail(err, errlen, rc, "cannot start the vCPUs: %s", strerror(-rc));
	}
	vmm->shut_down = false;
	log_info("VM booted on %s: %u vCPUs, %llu MiB, %s", vm_get_platform(vmm->vm),
		 vmm->cfg.boot_vcpus, (unsigned long long)(vmm->cfg.memory_size >> 20),
		 vmm->cfg.kernel);
	return 0;
}

static int need_vm(struct vmm *vmm, char *err, size_t errlen)
{
	if (!vmm->vm)
		return err_fail(err, errlen, -EBUSY, "the VM is not booted");
	return 0;
}

int vmm_vm_pause(struct vmm *vmm, char *err, size_t errlen)
{
	int rc = need_vm(vmm, err, errlen);
	if (rc < 0)
		return rc;
	rc = vm_pause(vmm->vm);
	if (rc == -EBUSY)
		return err_fail(err, errlen, rc, "the VM is not running (state %s)",
			    vm_state_name(vm_get_state(vmm->vm)));
	if (rc < 0)
		return err_fail(err, errlen, rc, "the VM stopped while pausing");
	return 0;
}

int vmm_vm_resume(struct vmm *vmm, char *err, size_t errlen)
{
	int rc = need_vm(vmm, err, errlen);
	if (rc < 0)
		return rc;
	rc = vm_resume(vmm->vm);
	if (rc < 0)
		return err_fail(err, errlen, rc, "the VM is not paused (state %s)",
			    vm_state_name(vm_get_state(vmm->vm)));
	return 0;
}

int vmm_vm_shutdown(struct vmm *vmm, char *err, size_t errlen)
{
	int rc = need_vm(vmm, err, errlen);
	if (rc < 0)
		return rc;
	vm_get_exit_info(vmm->vm, &vmm->last_exit);
	vm_destroy(vmm->vm);
	vmm->vm = NULL;
	vmm->shut_down = true;
	return 0;
}

int vmm_vm_reboot(struct vmm *vmm, char *err, size_t errlen)
{
	int rc = need_vm(vmm, err, errlen);
	if (rc < 0)
		return rc;
	vm_destroy(vmm->vm);
	vmm->vm = NULL;
	return vmm_vm_boot(vmm, err, errlen);
}

void vmm_set_platform(struct vmm *vmm, enum vm_platform p)
{
	vmm->platform = p;
}

void vmm_set_seccomp(struct vmm *vmm, const struct vmm_seccomp *s)
{
	vmm->seccomp = s;
}

void vmm_set_store(struct vmm *vmm, const char *root)
{
	snprintf(vmm->store_root, sizeof(vmm->store_root), "%s", root ? root : "");
}

static const char *store_root_of(struct vmm *vmm)
{
	if (!vmm->store_root[0])
		store_default_root(vmm->store_root, sizeof(vmm->store_root));
	return vmm->store_root;
}

int vmm_vm_snapshot(struct vmm *vmm, const char *url, char id_hex[33], char *err, size_t errlen)
{
	char where[4096];
	enum store_url_kind kind;
	int rc = need_vm(vmm, err, errlen);

	id_hex[0] = '\0';
	if (rc < 0)
		return rc;
	rc = store_url_parse(url, &kind, where, sizeof(where), err, errlen);
	if (rc < 0)
		return rc == -EPROTONOSUPPORT ? -EINVAL : rc;
	if (kind == STORE_URL_STORE) {
		if (where[0] && !store_tag_valid(where))
			return err_fail(err, errlen, -EINVAL,
				    "bad tag '%s' in %s (letters, digits, '.', '_', '-')", where, url);
		return vm_snapshot_store(vmm->vm, store_root_of(vmm), where, id_hex, err, errlen);
	}
	return vm_snapshot(vmm->vm, where, err, errlen);
}

int vmm_vm_restore(struct vmm *vmm, const char *url, const struct vm_restore_opts *opts,
		   bool resume, char *err, size_t errlen)
{
	char where[4096];
	enum store_url_kind kind;
	int rc;

	if (vmm->have_config)
		return err_fail(err, errlen, -EBUSY,
			    "this VMM already has a VM: restore into a VMM started with only "
			    "--api-socket (or delete the VM first)");
	rc = store_url_parse(url, &kind, where, sizeof(where), err, errlen);
	if (rc < 0)
		return rc == -EPROTONOSUPPORT ? -EINVAL : rc;
	if (kind == STORE_URL_STORE && !where[0])
		return err_fail(err, errlen, -EINVAL, "store:// needs a tag or an id: store://TAG");
	memset(&vmm->last_exit, 0, sizeof(vmm->last_exit));
	struct vm_restore_opts o = { 0 };
	if (opts)
		o = *opts;
	if (o.platform == VM_PLATFORM_AUTO)
		o.platform = vmm->platform;
	o.seccomp = vmm->seccomp;
	if (kind == STORE_URL_STORE)
		rc = vm_restore_store(store_root_of(vmm), where, &o, vmm->loop, vmm_vm_exited, vmm,
				      err, errlen, &vmm->vm);
	else
		rc = vm_restore(where, &o, vmm->loop, vmm_vm_exited, vmm, err, errlen, &vmm->vm);
	if (rc < 0)
		return rc;
	if (vm_config_copy(&vmm->cfg, vm_get_config(vmm->vm)) < 0) {
		vm_destroy(vmm->vm);
		vmm->vm = NULL;
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	}
	vmm->have_config = true;
	vmm->shut_down = false;
	if (resume && (rc = vm_resume(vmm->vm)) < 0)
		return err_fail(err, errlen, rc, "restored, but cannot resume: %s", strerror(-rc));
	return 0;
}

json_t *vmm_vm_info(struct vmm *vmm, int *rc)
{
	enum vm_state state;
	json_t *j;

	if (!vmm->have_config) {
		*rc = -ENOENT;
		return NULL;
	}
	if (vmm->vm)
		state = vm_get_state(vmm->vm);
	else
		state = vmm->shut_down ? VM_STATE_SHUTDOWN : VM_STATE_CREATED;
	j = json_pack("{s:o,s:s,s:I,s:s}", "config", vm_config_to_json(&vmm->cfg), "state",
		      vm_state_name(state), "memory_actual_size", (json_int_t)vmm->cfg.memory_size,
		      "platform", vmm->vm ? vm_get_platform(vmm->vm) : vm_platform_name(vmm->platform));
	if (!j) {
		*rc = -ENOMEM;
		return NULL;
	}
	struct vm_exit_info ex = vmm->last_exit;
	if (vmm->vm)
		vm_get_exit_info(vmm->vm, &ex);
	if (ex.exited)
		json_object_set_new(j, "exit", json_pack("{s:i,s:b,s:s}", "status", ex.status,
							 "fault", ex.faulted, "reason", ex.reason));
	*rc = 0;
	return j;
}

json_t *vmm_vm_counters(struct vmm *vmm, int *rc)
{
	struct vm_counters c;

	if (!vmm->vm) {
		*rc = -EBUSY;
		return NULL;
	}
	vm_get_counters(vmm->vm, &c);
	*rc = 0;
	return json_pack("{s:{s:I,s:I,s:I,s:I}}", "vmm", "exits", (json_int_t)c.exits, "syscalls",
			 (json_int_t)c.syscalls, "syscalls_enosys", (json_int_t)c.syscalls_enosys,
			 "memory_mapped_bytes", (json_int_t)c.memory_mapped_bytes);
}
