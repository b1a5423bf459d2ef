/* vmm/kvmstate.c - state units for KVM: the VM clock (kvmclock), the
 * in-kernel irqchip (PIC master/slave, IOAPIC), the PIT, and each vCPU.
 * Saved and restored whole even where the function guest does not use a
 * part (LAPIC, IOAPIC, PIT): a Linux payload will.
 *
 * vCPU order (Firecracker/Cloud Hypervisor lessons, KVM-NOTES):
 *   save:    MP_STATE first (flushes pending APIC events), REGS, SREGS,
 *            XSAVE, XCRS, DEBUGREGS, LAPIC, MSRS, VCPU_EVENTS last; CPUID,
 *            TSC frequency.
 *   restore: CPUID, MP_STATE, REGS, SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC
 *            (after SREGS set the APIC base), MSRS (after LAPIC, or
 *            TSC_DEADLINE is lost), VCPU_EVENTS (after REGS, which clears
 *            pending exceptions). A saved TSC_DEADLINE of 0 becomes the TSC.
 *            The VM clock is restored before any vCPU (registration order). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/log.h"
#include "vmm/kvmio.h"
#include "vmm/kvmstate.h"
#include "vmm/state.h"
#include "vmm/vm.h"

#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

#define IOCTL_OR_FAIL(fd, req, arg, name)                                                  \
	do {                                                                               \
		if (kvm_ioctl((fd), (req), (arg)) < 0)                                         \
			return fail(err, errlen, -errno, "%s: %s", name, strerror(errno)); \
	} while (0)

/* ------------------------------------------------------------ setup */

int kvmstate_init(struct vm *vm, char *err, size_t errlen)
{
	struct kvm_msr_list probe = { .nmsrs = 0 };
	int n;

	/* XSAVE area size: KVM_CAP_XSAVE2 reports it (>= 4096); else 4096. */
	n = kvm_ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	vm->xsave_size = n > (int)sizeof(struct kvm_xsave) ? (size_t)n : sizeof(struct kvm_xsave);
	vm->has_xsave2 = n > 0;
	vm->has_xsave = kvm_ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0;
	vm->has_debugregs = kvm_ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DEBUGREGS) > 0;
	vm->has_tsc_control = kvm_ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0;
	n = kvm_ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK);
	vm->clock_flags = n > 0 ? (uint32_t)n : 0;

	/* The MSRs KVM can save: the list, minus those this vCPU refuses. */
	if (kvm_ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return fail(err, errlen, -errno, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	struct kvm_msr_list *list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
	if (!list)
		return fail(err, errlen, -ENOMEM, "out of memory");
	list->nmsrs = probe.nmsrs;
	if (kvm_ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		free(list);
		return fail(err, errlen, -errno, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	}
	vm->msr_index = calloc(list->nmsrs ? list->nmsrs : 1, sizeof(uint32_t));
	if (!vm->msr_index) {
		free(list);
		return fail(err, errlen, -ENOMEM, "out of memory");
	}
	memcpy(vm->msr_index, list->indices, list->nmsrs * sizeof(uint32_t));
	vm->nr_msr_index = list->nmsrs;
	free(list);
	return 0;
}

/* ------------------------------------------------------------ VM units */

static int kvmclock_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	struct kvm_clock_data c;

	(void)arg;
	memset(&c, 0, sizeof(c));
	IOCTL_OR_FAIL(vm->vm_fd, KVM_GET_CLOCK, &c, "KVM_GET_CLOCK");
	*out = json_pack("{s:o,s:I,s:o}", "clock", json_u64(c.clock), "flags", (json_int_t)c.flags,
			 "realtime", json_u64(c.realtime));
	return *out ? 0 : fail(err, errlen, -ENOMEM, "out of memory");
}

static int kvmclock_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version,
			    char *err, size_t errlen)
{
	struct kvm_clock_data c;
	uint64_t clock, realtime = 0;
	uint32_t flags = 0;

	(void)arg;
	(void)version;
	if (state_get_u64(st, "clock", &clock, err, errlen) < 0 ||
	    state_get_u32(st, "flags", &flags, err, errlen) < 0)
		return -EINVAL;
	if (json_object_get(st, "realtime") && state_get_u64(st, "realtime", &realtime, err, errlen) < 0)
		return -EINVAL;
	memset(&c, 0, sizeof(c));
	c.clock = clock;
	/* With KVM_CLOCK_REALTIME on both sides, KVM advances the clock by the
	 * wall time the snapshot spent on disk; otherwise the guest's kvmclock
	 * continues from the saved value. */
	if ((flags & KVM_CLOCK_REALTIME) && (vm->clock_flags & KVM_CLOCK_REALTIME)) {
		c.flags = KVM_CLOCK_REALTIME;
		c.realtime = realtime;
	}
	IOCTL_OR_FAIL(vm->vm_fd, KVM_SET_CLOCK, &c, "KVM_SET_CLOCK");
	return 0;
}

static const struct {
	const char *name;
	uint32_t id;
} chips[] = {
	{ "pic_master", KVM_IRQCHIP_PIC_MASTER },
	{ "pic_slave", KVM_IRQCHIP_PIC_SLAVE },
	{ "ioapic", KVM_IRQCHIP_IOAPIC },
};

static int irqchip_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	json_t *j = json_object();

	(void)arg;
	if (!j)
		return fail(err, errlen, -ENOMEM, "out of memory");
	for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
		struct kvm_irqchip ic = { .chip_id = chips[i].id };
		if (kvm_ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &ic) < 0) {
			json_decref(j);
			return fail(err, errlen, -errno, "KVM_GET_IRQCHIP %s: %s", chips[i].name,
				    strerror(errno));
		}
		json_object_set_new(j, chips[i].name, json_blob(&ic.chip, sizeof(ic.chip)));
	}
	*out = j;
	return 0;
}

static int irqchip_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version,
			   char *err, size_t errlen)
{
	(void)arg;
	(void)version;
	for (size_t i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
		struct kvm_irqchip ic = { .chip_id = chips[i].id };
		if (state_get_blob(st, chips[i].name, &ic.chip, sizeof(ic.chip), err, errlen) < 0)
			return -EINVAL;
		if (kvm_ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &ic) < 0)
			return fail(err, errlen, -errno, "KVM_SET_IRQCHIP %s: %s", chips[i].name,
				    strerror(errno));
	}
	return 0;
}

static int pit_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	struct kvm_pit_state2 p;

	(void)arg;
	memset(&p, 0, sizeof(p));
	IOCTL_OR_FAIL(vm->vm_fd, KVM_GET_PIT2, &p, "KVM_GET_PIT2");
	*out = json_pack("{s:o}", "pit_state2", json_blob(&p, sizeof(p)));
	return *out ? 0 : fail(err, errlen, -ENOMEM, "out of memory");
}

static int pit_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
		       size_t errlen)
{
	struct kvm_pit_state2 p;

	(void)arg;
	(void)version;
	if (state_get_blob(st, "pit_state2", &p, sizeof(p), err, errlen) < 0)
		return -EINVAL;
	IOCTL_OR_FAIL(vm->vm_fd, KVM_SET_PIT2, &p, "KVM_SET_PIT2");
	return 0;
}

/* ------------------------------------------------------------ vCPU */

static const struct {
	const char *name;
	size_t off;
} reg_fields[] = {
#define R(n) { #n, offsetof(struct kvm_regs, n) }
	R(rax), R(rbx), R(rcx), R(rdx), R(rsi), R(rdi), R(rsp), R(rbp), R(r8),
	R(r9),  R(r10), R(r11), R(r12), R(r13), R(r14), R(r15), R(rip), R(rflags),
#undef R
};

static json_t *regs_to_json(const struct kvm_regs *r)
{
	json_t *j = json_object();
	for (size_t i = 0; j && i < sizeof(reg_fields) / sizeof(reg_fields[0]); i++) {
		uint64_t v;
		memcpy(&v, (const uint8_t *)r + reg_fields[i].off, 8);
		json_object_set_new(j, reg_fields[i].name, json_u64(v));
	}
	return j;
}

static int regs_from_json(const json_t *j, struct kvm_regs *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < sizeof(reg_fields) / sizeof(reg_fields[0]); i++) {
		uint64_t v;
		if (state_get_u64(j, reg_fields[i].name, &v, err, errlen) < 0)
			return -EINVAL;
		memcpy((uint8_t *)r + reg_fields[i].off, &v, 8);
	}
	return 0;
}

static json_t *seg_to_json(const struct kvm_segment *s)
{
	return json_pack("{s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "base", json_u64(s->base),
			 "limit", (json_int_t)s->limit, "selector", (json_int_t)s->selector, "type",
			 (json_int_t)s->type, "present", (json_int_t)s->present, "dpl",
			 (json_int_t)s->dpl, "db", (json_int_t)s->db, "s", (json_int_t)s->s, "l",
			 (json_int_t)s->l, "g", (json_int_t)s->g, "avl", (json_int_t)s->avl,
			 "unusable", (json_int_t)s->unusable);
}

static int seg_from_json(const json_t *j, struct kvm_segment *s, char *err, size_t errlen)
{
	uint32_t v[11];
	static const char *const keys[] = { "limit", "selector", "type", "present", "dpl", "db",
					    "s",     "l",        "g",    "avl",     "unusable" };
	if (!json_is_object(j))
		return fail(err, errlen, -EINVAL, "segment is not an object");
	if (state_get_ull(j, "base", &s->base, err, errlen) < 0)
		return -EINVAL;
	for (size_t i = 0; i < 11; i++)
		if (state_get_u32(j, keys[i], &v[i], err, errlen) < 0)
			return -EINVAL;
	s->limit = v[0];
	s->selector = (uint16_t)v[1];
	s->type = (uint8_t)v[2];
	s->present = (uint8_t)v[3];
	s->dpl = (uint8_t)v[4];
	s->db = (uint8_t)v[5];
	s->s = (uint8_t)v[6];
	s->l = (uint8_t)v[7];
	s->g = (uint8_t)v[8];
	s->avl = (uint8_t)v[9];
	s->unusable = (uint8_t)v[10];
	return 0;
}

static const struct {
	const char *name;
	size_t off;
} seg_fields[] = {
#define S(n) { #n, offsetof(struct kvm_sregs, n) }
	S(cs), S(ds), S(es), S(fs), S(gs), S(ss), S(tr), S(ldt),
#undef S
};

static json_t *sregs_to_json(const struct kvm_sregs *s)
{
	json_t *j = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:{s:o,s:I},s:{s:o,s:I},s:o}", "cr0",
			      json_u64(s->cr0), "cr2", json_u64(s->cr2), "cr3", json_u64(s->cr3),
			      "cr4", json_u64(s->cr4), "cr8", json_u64(s->cr8), "efer",
			      json_u64(s->efer), "apic_base", json_u64(s->apic_base), "interrupt_bitmap",
			      json_blob(s->interrupt_bitmap, sizeof(s->interrupt_bitmap)), "gdt", "base",
			      json_u64(s->gdt.base), "limit", (json_int_t)s->gdt.limit, "idt", "base",
			      json_u64(s->idt.base), "limit", (json_int_t)s->idt.limit, "segments",
			      json_object());
	for (size_t i = 0; j && i < sizeof(seg_fields) / sizeof(seg_fields[0]); i++)
		json_object_set_new(json_object_get(j, "segments"), seg_fields[i].name,
				    seg_to_json((const struct kvm_segment *)((const uint8_t *)s +
									      seg_fields[i].off)));
	return j;
}

static int sregs_from_json(const json_t *j, struct kvm_sregs *s, char *err, size_t errlen)
{
	uint32_t lim;

	memset(s, 0, sizeof(*s));
	if (state_get_ull(j, "cr0", &s->cr0, err, errlen) < 0 ||
	    state_get_ull(j, "cr2", &s->cr2, err, errlen) < 0 ||
	    state_get_ull(j, "cr3", &s->cr3, err, errlen) < 0 ||
	    state_get_ull(j, "cr4", &s->cr4, err, errlen) < 0 ||
	    state_get_ull(j, "cr8", &s->cr8, err, errlen) < 0 ||
	    state_get_ull(j, "efer", &s->efer, err, errlen) < 0 ||
	    state_get_ull(j, "apic_base", &s->apic_base, err, errlen) < 0 ||
	    state_get_blob(j, "interrupt_bitmap", s->interrupt_bitmap, sizeof(s->interrupt_bitmap),
			   err, errlen) < 0)
		return -EINVAL;
	const json_t *gdt = json_object_get(j, "gdt"), *idt = json_object_get(j, "idt");
	if (state_get_ull(gdt, "base", &s->gdt.base, err, errlen) < 0 ||
	    state_get_u32(gdt, "limit", &lim, err, errlen) < 0)
		return -EINVAL;
	s->gdt.limit = (uint16_t)lim;
	if (state_get_ull(idt, "base", &s->idt.base, err, errlen) < 0 ||
	    state_get_u32(idt, "limit", &lim, err, errlen) < 0)
		return -EINVAL;
	s->idt.limit = (uint16_t)lim;
	const json_t *segs = json_object_get(j, "segments");
	for (size_t i = 0; i < sizeof(seg_fields) / sizeof(seg_fields[0]); i++) {
		struct kvm_segment *seg = (struct kvm_segment *)((uint8_t *)s + seg_fields[i].off);
		char why[256];
		if (seg_from_json(json_object_get(segs, seg_fields[i].name), seg, why, sizeof(why)) < 0)
			return fail(err, errlen, -EINVAL, "segment %s: %s", seg_fields[i].name, why);
	}
	return 0;
}

/* Reads every listed MSR this vCPU has: GET_MSRS stops at the first it
 * refuses, so skip that one and go on. Returns the count in *out. */
static int msrs_get(struct vm *vm, struct vcpu *v, struct kvm_msrs **out, char *err, size_t errlen)
{
	size_t n = vm->nr_msr_index;
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(m->entries[0]));
	struct kvm_msrs *res = calloc(1, sizeof(*res) + n * sizeof(res->entries[0]));
	size_t i = 0;

	if (!m || !res) {
		free(m);
		free(res);
		return fail(err, errlen, -ENOMEM, "out of memory");
	}
	while (i < n) {
		m->nmsrs = (uint32_t)(n - i);
		for (size_t k = 0; k < m->nmsrs; k++)
			m->entries[k] = (struct kvm_msr_entry){ .index = vm->msr_index[i + k] };
		int got = kvm_ioctl(v->fd, KVM_GET_MSRS, m);
		if (got < 0) {
			free(m);
			free(res);
			return fail(err, errlen, -errno, "KVM_GET_MSRS: %s", strerror(errno));
		}
		memcpy(&res->entries[res->nmsrs], m->entries, (size_t)got * sizeof(m->entries[0]));
		res->nmsrs += (uint32_t)got;
		i += (size_t)got + 1; /* skip the refused one */
	}
	free(m);
	*out = res;
	return 0;
}

static int vcpu_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	struct vcpu *v = arg;
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_msrs *msrs = NULL;
	struct kvm_cpuid2 *cpuid = NULL;
	void *xsave = NULL;
	json_t *j = NULL;
	int rc;

	/* MP_STATE first: getting it flushes pending APIC events. */
	IOCTL_OR_FAIL(v->fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE");
	IOCTL_OR_FAIL(v->fd, KVM_GET_REGS, &regs, "KVM_GET_REGS");
	IOCTL_OR_FAIL(v->fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
	/* A vCPU parked inside an I/O handler (a blocking system call) restarts
	 * at the instruction that made the exit: the call is replayed. */
	if (v->restart_rip)
		regs.rip = v->restart_rip;
	xsave = calloc(1, vm->xsave_size);
	if (!xsave)
		return fail(err, errlen, -ENOMEM, "out of memory");
	if (vm->has_xsave2)
		rc = kvm_ioctl(v->fd, KVM_GET_XSAVE2, xsave);
	else if (vm->has_xsave)
		rc = kvm_ioctl(v->fd, KVM_GET_XSAVE, xsave);
	else
		rc = kvm_ioctl(v->fd, KVM_GET_FPU, xsave);
	if (rc < 0) {
		rc = fail(err, errlen, -errno, "KVM_GET_XSAVE: %s", strerror(errno));
		goto out;
	}
	memset(&xcrs, 0, sizeof(xcrs));
	if (kvm_ioctl(v->fd, KVM_GET_XCRS, &xcrs) < 0) {
		rc = fail(err, errlen, -errno, "KVM_GET_XCRS: %s", strerror(errno));
		goto out;
	}
	memset(&dbg, 0, sizeof(dbg));
	if (vm->has_debugregs && kvm_ioctl(v->fd, KVM_GET_DEBUGREGS, &dbg) < 0) {
		rc = fail(err, errlen, -errno, "KVM_GET_DEBUGREGS: %s", strerror(errno));
		goto out;
	}
	if (kvm_ioctl(v->fd, KVM_GET_LAPIC, &lapic) < 0) {
		rc = fail(err, errlen, -errno, "KVM_GET_LAPIC: %s", strerror(errno));
		goto out;
	}
	rc = msrs_get(vm, v, &msrs, err, errlen);
	if (rc < 0)
		goto out;
	/* VCPU_EVENTS last. */
	memset(&ev, 0, sizeof(ev));
	if (kvm_ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0) {
		rc = fail(err, errlen, -errno, "KVM_GET_VCPU_EVENTS: %s", strerror(errno));
		goto out;
	}
	int khz = kvm_ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(cpuid->entries[0]));
	if (!cpuid) {
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	cpuid->nent = 256;
	if (kvm_ioctl(v->fd, KVM_GET_CPUID2, cpuid) < 0) {
		rc = fail(err, errlen, -errno, "KVM_GET_CPUID2: %s", strerror(errno));
		goto out;
	}

	json_t *jmsrs = json_array(), *jcpuid = json_array(), *jxcrs = json_array();
	for (uint32_t i = 0; i < msrs->nmsrs; i++)
		json_array_append_new(jmsrs, json_pack("[o,o]", json_u64(msrs->entries[i].index),
						       json_u64(msrs->entries[i].data)));
	for (uint32_t i = 0; i < cpuid->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		json_array_append_new(jcpuid, json_pack("[I,I,I,I,I,I,I]", (json_int_t)e->function,
							(json_int_t)e->index, (json_int_t)e->flags,
							(json_int_t)e->eax, (json_int_t)e->ebx,
							(json_int_t)e->ecx, (json_int_t)e->edx));
	}
	for (uint32_t i = 0; i < xcrs.nr_xcrs && i < KVM_MAX_XCRS; i++)
		json_array_append_new(jxcrs, json_pack("[I,o]", (json_int_t)xcrs.xcrs[i].xcr,
						       json_u64(xcrs.xcrs[i].value)));
	j = json_pack("{s:I,s:o,s:o,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:o,s:o}", "mp_state",
		      (json_int_t)mp.mp_state, "regs", regs_to_json(&regs), "sregs",
		      sregs_to_json(&sregs), "fpu_format",
		      vm->has_xsave2 ? "xsave2" : vm->has_xsave ? "xsave" : "fpu", "xsave",
		      json_blob(xsave, vm->has_xsave || vm->has_xsave2 ? vm->xsave_size :
									    sizeof(struct kvm_fpu)),
		      "xcrs", jxcrs, "debugregs", json_blob(&dbg, sizeof(dbg)), "lapic",
		      json_blob(&lapic, sizeof(lapic)), "msrs", jmsrs, "vcpu_events",
		      json_blob(&ev, sizeof(ev)), "tsc_khz", (json_int_t)(khz > 0 ? khz : 0), "cpuid",
		      jcpuid, "restart_deadline_ns", json_u64(v->restart_rip ? v->sys_deadline : 0));
	rc = j ? 0 : fail(err, errlen, -ENOMEM, "out of memory");
out:
	free(xsave);
	free(msrs);
	free(cpuid);
	*out = j;
	return rc;
}

static int vcpu_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
			size_t errlen)
{
	struct vcpu *v = arg;
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_cpuid2 *cpuid = NULL;
	struct kvm_msrs *msrs = NULL;
	uint8_t *xsave = NULL;
	size_t xsave_len = 0;
	uint64_t deadline = 0, tsc = 0;
	uint32_t khz = 0;
	int rc = -EINVAL;

	(void)version;
	const json_t *jcpuid = json_object_get(st, "cpuid"), *jmsrs = json_object_get(st, "msrs"),
		     *jxcrs = json_object_get(st, "xcrs");
	if (!json_is_array(jcpuid) || !json_is_array(jmsrs) || !json_is_array(jxcrs) ||
	    json_array_size(jcpuid) > 256 || json_array_size(jmsrs) > 4096 ||
	    json_array_size(jxcrs) > KVM_MAX_XCRS)
		return fail(err, errlen, -EINVAL, "cpuid, msrs and xcrs must be (bounded) arrays");
	if (state_get_u32(st, "mp_state", &mp.mp_state, err, errlen) < 0 ||
	    regs_from_json(json_object_get(st, "regs"), &regs, err, errlen) < 0 ||
	    sregs_from_json(json_object_get(st, "sregs"), &sregs, err, errlen) < 0 ||
	    state_get_blob(st, "debugregs", &dbg, sizeof(dbg), err, errlen) < 0 ||
	    state_get_blob(st, "lapic", &lapic, sizeof(lapic), err, errlen) < 0 ||
	    state_get_blob(st, "vcpu_events", &ev, sizeof(ev), err, errlen) < 0 ||
	    state_get_u32(st, "tsc_khz", &khz, err, errlen) < 0 ||
	    state_get_u64(st, "restart_deadline_ns", &deadline, err, errlen) < 0)
		return -EINVAL;
	if (state_get_blob_any(st, "xsave", 1 << 20, &xsave, &xsave_len, err, errlen) < 0)
		return -EINVAL;
	const char *fmt = json_string_value(json_object_get(st, "fpu_format"));
	if (!fmt || (strcmp(fmt, "xsave2") && strcmp(fmt, "xsave") && strcmp(fmt, "fpu"))) {
		rc = fail(err, errlen, -EINVAL, "fpu_format must be xsave2, xsave or fpu");
		goto out;
	}
	bool is_xsave = strcmp(fmt, "fpu") != 0;
	if ((is_xsave && (xsave_len < sizeof(struct kvm_xsave) || xsave_len > vm->xsave_size)) ||
	    (!is_xsave && xsave_len != sizeof(struct kvm_fpu))) {
		rc = fail(err, errlen, -EINVAL, "xsave: %zu bytes do not fit this host (%zu)", xsave_len,
			  vm->xsave_size);
		goto out;
	}

	cpuid = calloc(1, sizeof(*cpuid) + json_array_size(jcpuid) * sizeof(cpuid->entries[0]));
	msrs = calloc(1, sizeof(*msrs) + json_array_size(jmsrs) * sizeof(msrs->entries[0]));
	if (!cpuid || !msrs) {
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < json_array_size(jcpuid); i++) {
		json_int_t f[7];
		if (json_unpack(json_array_get(jcpuid, i), "[IIIIIII]", &f[0], &f[1], &f[2], &f[3],
				&f[4], &f[5], &f[6]) < 0) {
			rc = fail(err, errlen, -EINVAL, "cpuid entry %zu is malformed", i);
			goto out;
		}
		cpuid->entries[i] = (struct kvm_cpuid_entry2){
			.function = (uint32_t)f[0], .index = (uint32_t)f[1], .flags = (uint32_t)f[2],
			.eax = (uint32_t)f[3], .ebx = (uint32_t)f[4], .ecx = (uint32_t)f[5],
			.edx = (uint32_t)f[6],
		};
	}
	cpuid->nent = (uint32_t)json_array_size(jcpuid);
	for (size_t i = 0; i < json_array_size(jmsrs); i++) {
		const json_t *e = json_array_get(jmsrs, i);
		json_t *pair = json_pack("{s:O,s:O}", "i", json_array_get(e, 0), "v", json_array_get(e, 1));
		uint64_t idx, val;
		int bad = !pair || state_get_u64(pair, "i", &idx, err, errlen) < 0 ||
			  state_get_u64(pair, "v", &val, err, errlen) < 0 || idx > UINT32_MAX;
		json_decref(pair);
		if (bad) {
			rc = fail(err, errlen, -EINVAL, "msr entry %zu is malformed", i);
			goto out;
		}
		msrs->entries[i] = (struct kvm_msr_entry){ .index = (uint32_t)idx, .data = val };
		if (idx == MSR_IA32_TSC)
			tsc = val;
	}
	msrs->nmsrs = (uint32_t)json_array_size(jmsrs);
	/* A TSC deadline of 0 would disarm a deadline timer: use the TSC. */
	for (uint32_t i = 0; i < msrs->nmsrs; i++)
		if (msrs->entries[i].index == MSR_IA32_TSC_DEADLINE && msrs->entries[i].data == 0)
			msrs->entries[i].data = tsc;
	memset(&xcrs, 0, sizeof(xcrs));
	for (size_t i = 0; i < json_array_size(jxcrs); i++) {
		json_int_t x;
		json_t *val;
		if (json_unpack(json_array_get(jxcrs, i), "[Io]", &x, &val) < 0) {
			rc = fail(err, errlen, -EINVAL, "xcr entry %zu is malformed", i);
			goto out;
		}
		json_t *wrap = json_pack("{s:O}", "v", val);
		int bad = !wrap || state_get_ull(wrap, "v", &xcrs.xcrs[i].value, err, errlen) < 0;
		json_decref(wrap);
		if (bad) {
			rc = fail(err, errlen, -EINVAL, "xcr entry %zu is malformed", i);
			goto out;
		}
		xcrs.xcrs[i].xcr = (uint32_t)x;
	}
	xcrs.nr_xcrs = (uint32_t)json_array_size(jxcrs);

	/* The order matters: see the top of this file. */
	if (kvm_ioctl(v->fd, KVM_SET_CPUID2, cpuid) < 0) {
		rc = fail(err, errlen, -errno, "KVM_SET_CPUID2: %s", strerror(errno));
		goto out;
	}
	if (khz) {
		int host = kvm_ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
		if (host > 0 && (uint32_t)host != khz && kvm_ioctl(v->fd, KVM_SET_TSC_KHZ, khz) < 0)
			log_warn("vCPU %u: the TSC runs at %d kHz here, %u kHz in the snapshot, and "
				 "KVM cannot scale it",
				 v->id, host, khz);
	}
	struct {
		unsigned long req;
		const void *arg;
		const char *name;
	} steps[] = {
		{ KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE" },
		{ KVM_SET_REGS, &regs, "KVM_SET_REGS" },
		{ KVM_SET_SREGS, &sregs, "KVM_SET_SREGS" },
		{ is_xsave ? KVM_SET_XSAVE : KVM_SET_FPU, xsave, "KVM_SET_XSAVE" },
		{ KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS" },
		{ KVM_SET_DEBUGREGS, &dbg, "KVM_SET_DEBUGREGS" },
		{ KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC" },
	};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		if (steps[i].req == KVM_SET_XCRS && !xcrs.nr_xcrs)
			continue;
		if (steps[i].req == KVM_SET_DEBUGREGS && !vm->has_debugregs)
			continue;
		if (kvm_ioctl(v->fd, steps[i].req, steps[i].arg) < 0) {
			rc = fail(err, errlen, -errno, "%s: %s", steps[i].name, strerror(errno));
			goto out;
		}
	}
	int set = kvm_ioctl(v->fd, KVM_SET_MSRS, msrs);
	if (set != (int)msrs->nmsrs) {
		rc = fail(err, errlen, -EINVAL, "KVM_SET_MSRS: MSR 0x%x refused",
			  set >= 0 && (uint32_t)set < msrs->nmsrs ? msrs->entries[set].index : 0);
		goto out;
	}
	if (kvm_ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev) < 0) {
		rc = fail(err, errlen, -errno, "KVM_SET_VCPU_EVENTS: %s", strerror(errno));
		goto out;
	}
	/* Tell a kvmclock guest it was paused (fails harmlessly without one). */
	if (kvm_ioctl(v->fd, KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL)
		log_debug("vCPU %u: KVM_KVMCLOCK_CTRL: %s", v->id, strerror(errno));
	v->restore_deadline = deadline;
	rc = 0;
out:
	free(xsave);
	free(cpuid);
	free(msrs);
	return rc;
}

/* ------------------------------------------------------------ registry */

size_t kvmstate_units(struct vm *vm, struct state_unit *u, size_t max)
{
	size_t n = 0;

	if (max < 3 + vm->nr_vcpus)
		return 0;
	u[n++] = (struct state_unit){ "kvmclock", 1, kvmclock_save, kvmclock_restore, NULL };
	u[n++] = (struct state_unit){ "irqchip", 1, irqchip_save, irqchip_restore, NULL };
	u[n++] = (struct state_unit){ "pit", 1, pit_save, pit_restore, NULL };
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		u[n] = (struct state_unit){ "", 1, vcpu_save, vcpu_restore, &vm->vcpus[i] };
		snprintf(u[n].name, sizeof(u[n].name), "vcpu%u", i);
		n++;
	}
	return n;
}
