/* vmm/kvm/kvmstate.c - the state units of a full machine guest (a Linux
 * kernel, vmm/linux/) on KVM: what KVM holds for the VM and each vCPU,
 * saved with the KVM_GET_* calls (from the VMM thread, while the vCPUs
 * are parked) and put back with KVM_SET_* on a fresh VM before any vCPU
 * runs (docs/snapshot-format.md, "Machine units").
 *
 *   irqchip   the two 8259 PICs and the IOAPIC (KVM_GET_IRQCHIP x3)
 *   pit       the 8254 PIT (KVM_GET_PIT2)
 *   kvmclock  the VM's kvmclock (KVM_GET_CLOCK): continues where it was
 *   vcpuN     registers, segments and control registers, XSAVE and XCRs,
 *             every MSR KVM lists that reads back, the local APIC, the
 *             MP state, pending events and debug registers
 *
 * Each is a blob of the kernel's own structure (its ABI is stable); a
 * blob of another size is refused. A vCPU's state is read only after any
 * port I/O or MMIO its last exit left half done has completed: its own
 * thread does that with KVM_RUN and immediate_exit before it parks
 * (kvm.c), as the KVM API asks before saving. It is put
 * back in the order QEMU uses: registers, XSAVE, XCRs, segments, MSRs,
 * local APIC (its base is in the segments' state), events, MP state,
 * debug registers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kvm.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/kvmio.h"
#include "vmm/state.h"
#include "vmm/vm.h"

#define MACHINE_STATE_VERSION 1
#define MSRS_MAX 512

/* ------------------------------------------------------------ VM units */

/* KVM_GET_IRQCHIP's chip ids 0, 1, 2, and their keys in the unit. */
static const char *const irqchip_names[] = {"pic_master", "pic_slave", "ioapic"};

static int irqchip_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	json_t *o = json_object();
	(void)arg;
	if (!o)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	for (unsigned id = 0; id < 3; id++) {
		struct kvm_irqchip c = {.chip_id = id};
		if (kvm_ioctl(KV(vm)->vm_fd, KVM_GET_IRQCHIP, &c) < 0) {
			json_decref(o);
			return err_fail(err, errlen, -errno, "KVM_GET_IRQCHIP %s: %s", irqchip_names[id],
					strerror(errno));
		}
		json_object_set_new(o, irqchip_names[id], state_json_blob(&c, sizeof(c)));
	}
	*out = o;
	return 0;
}

static int irqchip_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
			   size_t errlen)
{
	(void)arg;
	(void)version;
	for (unsigned id = 0; id < 3; id++) {
		struct kvm_irqchip c;
		int rc = state_get_blob(st, irqchip_names[id], &c, sizeof(c), err, errlen);
		if (rc < 0)
			return rc;
		if (c.chip_id != id)
			return err_fail(err, errlen, -EINVAL, "%s: it holds chip %u", irqchip_names[id],
					c.chip_id);
		if (kvm_ioctl(KV(vm)->vm_fd, KVM_SET_IRQCHIP, &c) < 0)
			return err_fail(err, errlen, -errno, "KVM_SET_IRQCHIP %s: %s", irqchip_names[id],
					strerror(errno));
	}
	return 0;
}

static int pit_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	struct kvm_pit_state2 p;
	(void)arg;
	if (kvm_ioctl(KV(vm)->vm_fd, KVM_GET_PIT2, &p) < 0)
		return err_fail(err, errlen, -errno, "KVM_GET_PIT2: %s", strerror(errno));
	*out = json_pack("{s:o}", "pit", state_json_blob(&p, sizeof(p)));
	return *out ? 0 : err_fail(err, errlen, -ENOMEM, "out of memory");
}

static int pit_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
		       size_t errlen)
{
	struct kvm_pit_state2 p;
	int rc = state_get_blob(st, "pit", &p, sizeof(p), err, errlen);
	(void)arg;
	(void)version;
	if (rc < 0)
		return rc;
	if (kvm_ioctl(KV(vm)->vm_fd, KVM_SET_PIT2, &p) < 0)
		return err_fail(err, errlen, -errno, "KVM_SET_PIT2: %s", strerror(errno));
	return 0;
}

static int kvmclock_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	struct kvm_clock_data c;
	(void)arg;
	memset(&c, 0, sizeof(c));
	if (kvm_ioctl(KV(vm)->vm_fd, KVM_GET_CLOCK, &c) < 0)
		return err_fail(err, errlen, -errno, "KVM_GET_CLOCK: %s", strerror(errno));
	*out = json_pack("{s:o}", "clock_ns", state_json_u64(c.clock));
	return *out ? 0 : err_fail(err, errlen, -ENOMEM, "out of memory");
}

static int kvmclock_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
			    size_t errlen)
{
	struct kvm_clock_data c;
	uint64_t ns;
	int rc = state_get_u64(st, "clock_ns", &ns, err, errlen);
	(void)arg;
	(void)version;
	if (rc < 0)
		return rc;
	memset(&c, 0, sizeof(c));
	c.clock = ns;
	if (kvm_ioctl(KV(vm)->vm_fd, KVM_SET_CLOCK, &c) < 0)
		return err_fail(err, errlen, -errno, "KVM_SET_CLOCK: %s", strerror(errno));
	return 0;
}

/* ------------------------------------------------------------ vCPUs */

struct msr_list {
	struct kvm_msrs h;
	struct kvm_msr_entry e[MSRS_MAX];
};

/* The MSRs KVM lists (KVM_GET_MSR_INDEX_LIST), those of this vCPU that
 * read back, with their values. Returns 0 or -errno. */
static int msrs_read(struct vm *vm, int fd, struct msr_list *m)
{
	struct {
		struct kvm_msr_list h;
		uint32_t idx[MSRS_MAX];
	} list = {.h.nmsrs = MSRS_MAX};

	if (kvm_ioctl(KV(vm)->kvm_fd, KVM_GET_MSR_INDEX_LIST, &list) < 0)
		return -errno;
	m->h.nmsrs = 0;
	/* KVM_GET_MSRS stops at the first MSR it cannot read: skip it, go on. */
	for (uint32_t at = 0; at < list.h.nmsrs;) {
		struct msr_list batch;
		uint32_t n = list.h.nmsrs - at;
		memset(&batch, 0, sizeof(batch));
		batch.h.nmsrs = n;
		for (uint32_t i = 0; i < n; i++)
			batch.e[i].index = list.idx[at + i];
		int got = kvm_ioctl(fd, KVM_GET_MSRS, &batch);
		if (got < 0)
			return -errno;
		for (int i = 0; i < got; i++)
			m->e[m->h.nmsrs++] = batch.e[i];
		at += (uint32_t)got + 1; /* past the one that failed */
	}
	return 0;
}

static int vcpu_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	struct vcpu *v = arg;
	struct kvm_vcpu *c = KC(v);
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_mp_state mp;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dr;
	struct msr_list *msrs = calloc(1, sizeof(*msrs));
	size_t xlen = KV(vm)->xsave_size;
	void *xsave = calloc(1, xlen);
	json_t *o = NULL;
	int rc;

	if (!msrs || !xsave) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	if (c->io_pending) {
		rc = err_fail(err, errlen, -EBUSY, "vCPU %u has an exit to complete", v->id);
		goto out;
	}
#define GET(req, p)                                                                                \
	do {                                                                                       \
		if (kvm_ioctl(c->fd, req, p) < 0) {                                                \
			rc = err_fail(err, errlen, -errno, #req ": %s", strerror(errno));          \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)
	GET(KVM_GET_REGS, &regs);
	GET(KVM_GET_SREGS, &sregs);
	GET(KV(vm)->has_xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, xsave);
	memset(&xcrs, 0, sizeof(xcrs));
	GET(KVM_GET_XCRS, &xcrs);
	GET(KVM_GET_LAPIC, &lapic);
	GET(KVM_GET_MP_STATE, &mp);
	memset(&ev, 0, sizeof(ev));
	GET(KVM_GET_VCPU_EVENTS, &ev);
	GET(KVM_GET_DEBUGREGS, &dr);
#undef GET
	if ((rc = msrs_read(vm, c->fd, msrs)) < 0) {
		err_fail(err, errlen, rc, "its MSRs: %s", strerror(-rc));
		goto out;
	}
	o = json_pack(
	    "{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "regs", state_json_blob(&regs, sizeof(regs)),
	    "sregs", state_json_blob(&sregs, sizeof(sregs)), "xsave", state_json_blob(xsave, xlen),
	    "xcrs", state_json_blob(&xcrs, sizeof(xcrs)), "msrs",
	    state_json_blob(msrs->e, msrs->h.nmsrs * sizeof(msrs->e[0])), "lapic",
	    state_json_blob(&lapic, sizeof(lapic)), "mp_state", json_integer(mp.mp_state), "events",
	    state_json_blob(&ev, sizeof(ev)), "debugregs", state_json_blob(&dr, sizeof(dr)));
	if (!o) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	*out = o;
	rc = 0;
out:
	free(msrs);
	free(xsave);
	return rc;
}

static int vcpu_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
			size_t errlen)
{
	struct vcpu *v = arg;
	struct kvm_vcpu *c = KC(v);
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_mp_state mp;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dr;
	struct msr_list *msrs = calloc(1, sizeof(*msrs));
	uint8_t *xsave = NULL, *mblob = NULL;
	size_t xlen = 0, mlen = 0;
	uint32_t mps;
	int rc;

	(void)version;
	if (!msrs)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	if ((rc = state_get_blob(st, "regs", &regs, sizeof(regs), err, errlen)) < 0 ||
	    (rc = state_get_blob(st, "sregs", &sregs, sizeof(sregs), err, errlen)) < 0 ||
	    (rc = state_get_blob(st, "xcrs", &xcrs, sizeof(xcrs), err, errlen)) < 0 ||
	    (rc = state_get_blob(st, "lapic", &lapic, sizeof(lapic), err, errlen)) < 0 ||
	    (rc = state_get_blob(st, "events", &ev, sizeof(ev), err, errlen)) < 0 ||
	    (rc = state_get_blob(st, "debugregs", &dr, sizeof(dr), err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "mp_state", &mps, err, errlen)) < 0 ||
	    (rc = state_get_blob_any(st, "xsave", 1 << 20, &xsave, &xlen, err, errlen)) < 0 ||
	    (rc = state_get_blob_any(st, "msrs", sizeof(msrs->e), &mblob, &mlen, err, errlen)) < 0)
		goto out;
	if (xlen < sizeof(struct kvm_xsave) || xlen > KV(vm)->xsave_size) {
		rc = err_fail(
		    err, errlen, -EINVAL,
		    "its XSAVE area has %zu bytes; this host's KVM uses %zu (a snapshot from "
		    "another CPU?)",
		    xlen, KV(vm)->xsave_size);
		goto out;
	}
	if (mlen % sizeof(msrs->e[0])) {
		rc = err_fail(err, errlen, -EINVAL, "its MSR list is malformed");
		goto out;
	}
	/* a smaller saved area (an older KVM): the rest stays zero */
	uint8_t *xfull = calloc(1, KV(vm)->xsave_size);
	if (!xfull) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(xfull, xsave, xlen);
	free(xsave);
	xsave = xfull;
	msrs->h.nmsrs = (uint32_t)(mlen / sizeof(msrs->e[0]));
	memcpy(msrs->e, mblob, mlen);
	mp.mp_state = mps;
#define SET(req, p)                                                                                \
	do {                                                                                       \
		if (kvm_ioctl(c->fd, req, p) < 0) {                                                \
			rc = err_fail(err, errlen, -errno, #req ": %s", strerror(errno));          \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)
	SET(KVM_SET_REGS, &regs);
	SET(KVM_SET_XSAVE, xsave);
	SET(KVM_SET_XCRS, &xcrs);
	SET(KVM_SET_SREGS, &sregs);
	int set = kvm_ioctl(c->fd, KVM_SET_MSRS, msrs);
	if (set < 0 || (uint32_t)set != msrs->h.nmsrs) {
		rc = err_fail(err, errlen, -EINVAL, "KVM_SET_MSRS: MSR 0x%x refused (%d of %u set)",
			      set >= 0 && (uint32_t)set < msrs->h.nmsrs ? msrs->e[set].index : 0,
			      set, msrs->h.nmsrs);
		goto out;
	}
	SET(KVM_SET_LAPIC, &lapic);
	/* what the saved flags say is valid, nothing more */
	ev.flags &= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |
		    KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM;
	SET(KVM_SET_VCPU_EVENTS, &ev);
	SET(KVM_SET_MP_STATE, &mp);
	SET(KVM_SET_DEBUGREGS, &dr);
#undef SET
	c->regs_valid = false;
	c->run->kvm_dirty_regs = 0; /* nothing stale from the sync area */
	rc = 0;
out:
	free(msrs);
	free(xsave);
	free(mblob);
	return rc;
}

size_t kvm_machine_units(struct vm *vm, struct state_unit *u, size_t max)
{
	size_t n = 0;

	if (!KV(vm) || !KV(vm)->machine || max < 3 + (size_t)vm->nr_vcpus)
		return 0;
	u[n++] = (struct state_unit){"irqchip", MACHINE_STATE_VERSION, irqchip_save,
				     irqchip_restore, NULL};
	u[n++] = (struct state_unit){"pit", MACHINE_STATE_VERSION, pit_save, pit_restore, NULL};
	u[n++] = (struct state_unit){"kvmclock", MACHINE_STATE_VERSION, kvmclock_save,
				     kvmclock_restore, NULL};
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		u[n] = (struct state_unit){"", MACHINE_STATE_VERSION, vcpu_save, vcpu_restore,
					   &vm->vcpus[i]};
		snprintf(u[n].name, sizeof(u[n].name), "vcpu%u", i);
		n++;
	}
	return n;
}
