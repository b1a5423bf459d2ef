/* vmm/platform_none.c - a platform that runs no guest code: each vCPU's
 * registers live in memory. Unit tests build VMs on it (vm_create_nokvm)
 * to load payloads and feed the function guest system calls by hand, on
 * hosts with or without KVM. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/platform.h"
#include "vmm/vm.h"

struct none_vcpu {
	struct vregs regs;
	uint64_t fs_base, gs_base;
	uint8_t xsave[576];
};

static int none_probe(char *why, size_t len)
{
	(void)why;
	(void)len;
	return 0;
}

static int none_vm_create(struct vm *vm, const struct snapshot *snap, char *err, size_t errlen)
{
	(void)vm;
	(void)snap;
	(void)err;
	(void)errlen;
	return 0;
}

static void none_vm_destroy(struct vm *vm)
{
	for (unsigned i = 0; vm->vcpus && i < vm->nr_vcpus; i++) {
		free(vm->vcpus[i].p);
		vm->vcpus[i].p = NULL;
	}
}

static int none_fguest_setup(struct vm *vm, char *err, size_t errlen)
{
	(void)vm;
	(void)err;
	(void)errlen;
	return 0;
}

static uint64_t none_hwcap(struct vm *vm)
{
	(void)vm;
	return 0;
}

static int none_vcpu_create(struct vcpu *v, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	v->p = calloc(1, sizeof(struct none_vcpu));
	return v->p ? 0 : -ENOMEM;
}

static int none_vcpu_enter(struct vcpu *v)
{
	(void)v;
	return -ENOSYS;
}

static int none_vcpu_run(struct vcpu *v, struct vexit *e)
{
	(void)v;
	(void)e;
	return -ENOSYS; /* runs no guest code */
}

static void none_vcpu_kick(struct vcpu *v)
{
	(void)v;
}

static int none_get_regs(struct vcpu *v, struct vregs *r)
{
	*r = ((struct none_vcpu *)v->p)->regs;
	return 0;
}

static int none_set_regs(struct vcpu *v, const struct vregs *r)
{
	((struct none_vcpu *)v->p)->regs = *r;
	return 0;
}

static int none_set_tls(struct vcpu *v, uint64_t fs_base, uint64_t gs_base)
{
	struct none_vcpu *n = v->p;
	n->fs_base = fs_base;
	n->gs_base = gs_base;
	return 0;
}

static int none_syscall_return(struct vcpu *v, uint64_t ret)
{
	((struct none_vcpu *)v->p)->regs.rax = ret;
	return 0;
}

static int none_get_xstate(struct vcpu *v, void *buf, size_t *len, uint64_t *xcr0)
{
	struct none_vcpu *n = v->p;
	memcpy(buf, n->xsave, sizeof(n->xsave));
	*len = sizeof(n->xsave);
	*xcr0 = 3;
	return 0;
}

static int none_set_xstate(struct vcpu *v, const void *buf, size_t len)
{
	struct none_vcpu *n = v->p;
	memset(n->xsave, 0, sizeof(n->xsave));
	memcpy(n->xsave, buf, len < sizeof(n->xsave) ? len : sizeof(n->xsave));
	return 0;
}

const struct platform platform_none = {
	.name = "none",
	.probe = none_probe,
	.vm_create = none_vm_create,
	.vm_destroy = none_vm_destroy,
	.fguest_setup = none_fguest_setup,
	.hwcap = none_hwcap,
	.vcpu_create = none_vcpu_create,
	.vcpu_enter = none_vcpu_enter,
	.vcpu_run = none_vcpu_run,
	.vcpu_kick = none_vcpu_kick,
	.get_regs = none_get_regs,
	.set_regs = none_set_regs,
	.set_tls = none_set_tls,
	.syscall_return = none_syscall_return,
	.get_xstate = none_get_xstate,
	.set_xstate = none_set_xstate,
};
