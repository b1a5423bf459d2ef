/* vmm/kvm/x86.c - see x86.h. */
#include "x86.h"

#include <errno.h>
#include <string.h>

#define PTE_P 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_US 0x4ULL
#define PTE_A 0x20ULL
#define PTE_D 0x40ULL
#define PTE_PS 0x80ULL
/* Accessed/dirty preset so the (emulated, on PVM) ring 0 never writes them. */
#define PTE_TABLE (PTE_P | PTE_RW | PTE_US | PTE_A)
#define PTE_LEAF (PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D)

static uint64_t gdt_seg(uint64_t access, uint64_t flags)
{
	/* base 0, limit 0xfffff; access byte at bits 40..47, flags at 52..55 */
	return 0xffffULL | (0xfULL << 48) | (access << 40) | (flags << 52);
}

static void gdt_tss(uint64_t *d, uint64_t base, uint64_t limit)
{
	d[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x8bULL << 40) |
	       (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	d[1] = base >> 32;
}

static void idt_gate(uint64_t *d, uint64_t handler, unsigned dpl)
{
	uint64_t type = 0x8e | ((uint64_t)dpl << 5); /* present, interrupt gate */
	d[0] = (handler & 0xffff) | ((uint64_t)X86_SEL_KCODE << 16) | (type << 40) |
	       (((handler >> 16) & 0xffff) << 48);
	d[1] = handler >> 32;
}

static int setup_page_tables(struct gmem *m)
{
	uint64_t *pml4 = gmem_ptr(m, X86_PML4, 4096);
	uint64_t *pdpt = gmem_ptr(m, X86_PDPT, 4096);
	uint64_t *pt = gmem_ptr(m, X86_PT_LOW, 4096);
	unsigned nr_pd = (unsigned)((m->gpa_end + GiB - 1) / GiB);

	if (!pml4 || !pdpt || !pt)
		return -EFAULT;
	if (nr_pd > X86_MAX_PD)
		return -E2BIG;
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	memset(pt, 0, 4096);
	pml4[0] = X86_PDPT | PTE_TABLE;

	/* [0, 2 MiB) in 4 KiB pages, the null page left out. */
	for (unsigned i = 1; i < 512; i++)
		pt[i] = ((uint64_t)i * 4096) | PTE_LEAF;

	for (unsigned g = 0; g < nr_pd; g++) {
		uint64_t pd_gpa = X86_PD_BASE + 4096ULL * g;
		uint64_t *pd = gmem_ptr(m, pd_gpa, 4096);
		bool any = false;

		if (!pd)
			return -EFAULT;
		memset(pd, 0, 4096);
		for (unsigned i = 0; i < 512; i++) {
			uint64_t gpa = (uint64_t)g * GiB + (uint64_t)i * (2 * MiB);
			if (gpa == 0) {
				pd[0] = X86_PT_LOW | PTE_TABLE;
				any = true;
			} else if (gmem_is_ram(m, gpa, 2 * MiB)) {
				pd[i] = gpa | PTE_LEAF | PTE_PS;
				any = true;
			}
		}
		if (any)
			pdpt[g] = pd_gpa | PTE_TABLE;
	}
	return 0;
}

static int setup_descriptors(struct gmem *m, unsigned nr_vcpus)
{
	uint64_t gdt_len = X86_SEL_TSS(nr_vcpus);
	uint64_t *gdt = gmem_ptr(m, X86_GDT, gdt_len);
	uint64_t *idt = gmem_ptr(m, X86_IDT, 4096);

	if (!gdt || !idt || X86_GDT + gdt_len > X86_IDT)
		return -E2BIG;
	memset(gdt, 0, gdt_len);
	/* Accessed bits preset: the CPU never needs to write the GDT. */
	gdt[X86_SEL_KCODE >> 3] = gdt_seg(0x9b, 0xa); /* ring-0 code, L */
	gdt[X86_SEL_KDATA >> 3] = gdt_seg(0x93, 0xc); /* ring-0 data */
	gdt[X86_SEL_UDATA >> 3] = gdt_seg(0xf3, 0xc); /* ring-3 data */
	gdt[X86_SEL_UCODE >> 3] = gdt_seg(0xfb, 0xa); /* ring-3 code, L */

	for (unsigned i = 0; i < nr_vcpus; i++) {
		uint64_t tss_gpa = X86_TSS_BASE + X86_TSS_STRIDE * i;
		uint8_t *tss = gmem_ptr(m, tss_gpa, X86_TSS_STRIDE);
		uint64_t rsp0 = x86_kstack_top(i);
		uint16_t iopb = 104;
		uint8_t *bitmap;

		if (!tss)
			return -EFAULT;
		memset(tss, 0, X86_TSS_STRIDE);
		memcpy(tss + 4, &rsp0, 8);
		memcpy(tss + 102, &iopb, 2);
		/* Every port denied but the trampoline's (a clear bit allows). */
		bitmap = tss + iopb;
		memset(bitmap, 0xff, X86_IOPB_BYTES);
		bitmap[X86_PORT_SYSCALL / 8] &= (uint8_t)~(1u << (X86_PORT_SYSCALL % 8));
		for (unsigned p = X86_PORT_EXC_BASE; p < X86_PORT_EXC_BASE + X86_NR_EXC; p++)
			bitmap[p / 8] &= (uint8_t)~(1u << (p % 8));
		gdt_tss(&gdt[X86_SEL_TSS(i) >> 3], tss_gpa, X86_TSS_LIMIT);
	}

	memset(idt, 0, 4096);
	for (unsigned v = 0; v < X86_NR_EXC; v++)
		idt_gate(&idt[2 * v], X86_TRAMP_EXC(v), (v == 3 || v == 4) ? 3 : 0);
	return 0;
}

static int setup_trampoline(struct gmem *m)
{
	uint8_t *code = gmem_ptr(m, X86_TRAMP, 4096);

	if (!code)
		return -EFAULT;
	/* hlt everywhere else: a stray jump into the page stops there. */
	memset(code, 0xf4, 4096);
	/* syscall entry: out %al, $port ; iretq */
	code[0] = 0xe6;
	code[1] = X86_PORT_SYSCALL;
	code[2] = 0x48;
	code[3] = 0xcf;
	for (unsigned v = 0; v < X86_NR_EXC; v++) {
		uint8_t *s = code + (X86_TRAMP_EXC(v) - X86_TRAMP);
		s[0] = 0xe6; /* out %al, $(base + v) */
		s[1] = (uint8_t)(X86_PORT_EXC_BASE + v);
		s[2] = 0xf4; /* hlt */
		s[3] = 0xeb; /* jmp back to the hlt */
		s[4] = 0xfd;
	}
	return 0;
}

int x86_setup_system(struct gmem *m, unsigned nr_vcpus)
{
	int rc;

	if (nr_vcpus == 0 || nr_vcpus > X86_MAX_VCPUS)
		return -E2BIG;
	if (x86_kstack_top(nr_vcpus - 1) > X86_SYS_END || !gmem_is_ram(m, 0, X86_SYS_END))
		return -E2BIG;
	rc = setup_page_tables(m);
	if (rc < 0)
		return rc;
	rc = setup_descriptors(m, nr_vcpus);
	if (rc < 0)
		return rc;
	return setup_trampoline(m);
}

static void seg_set(struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t dpl, uint8_t l,
		    uint8_t db)
{
	*s = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
		.dpl = dpl, .db = db, .s = 1, .l = l, .g = 1,
	};
}

void x86_sregs_ring3(struct kvm_sregs *s, unsigned vcpu, unsigned nr_vcpus, bool osxsave)
{
	seg_set(&s->cs, X86_SEL_UCODE, 11, 3, 1, 0);
	seg_set(&s->ss, X86_SEL_UDATA, 3, 3, 0, 1);
	s->ds = s->es = s->fs = s->gs = s->ss;
	s->tr = (struct kvm_segment){
		.base = X86_TSS_BASE + X86_TSS_STRIDE * vcpu, .limit = X86_TSS_LIMIT,
		.selector = X86_SEL_TSS(vcpu), .type = 11, .present = 1,
	};
	s->ldt = (struct kvm_segment){ .type = 2, .unusable = 1 };
	s->gdt.base = X86_GDT;
	s->gdt.limit = (uint16_t)(X86_SEL_TSS(nr_vcpus) - 1);
	s->idt.base = X86_IDT;
	s->idt.limit = 4095;
	/* PE MP ET NE WP PG */
	s->cr0 = 0x80010033ULL;
	s->cr3 = X86_PML4;
	/* PAE OSFXSR OSXMMEXCPT [OSXSAVE] */
	s->cr4 = (1ULL << 5) | (1ULL << 9) | (1ULL << 10) | (osxsave ? 1ULL << 18 : 0);
	/* SCE LME LMA NXE */
	s->efer = 0x1ULL | 0x100ULL | 0x400ULL | 0x800ULL;
	s->cr2 = 0;
}

unsigned x86_boot_msrs(struct kvm_msr_entry *e, unsigned max)
{
	const struct kvm_msr_entry msrs[] = {
		/* syscall: CS 0x08/SS 0x10; sysret (unused): CS 0x23/SS 0x1b */
		{ .index = X86_MSR_STAR, .data = (0x10ULL << 48) | ((uint64_t)X86_SEL_KCODE << 32) },
		{ .index = X86_MSR_LSTAR, .data = X86_TRAMP_SYSCALL },
		{ .index = X86_MSR_CSTAR, .data = X86_TRAMP_EXC(6) },
		/* TF DF IF IOPL NT AC cleared on entry */
		{ .index = X86_MSR_SFMASK, .data = 0x47700 },
		{ .index = X86_MSR_FS_BASE, .data = 0 },
		{ .index = X86_MSR_GS_BASE, .data = 0 },
		{ .index = X86_MSR_KERNEL_GS_BASE, .data = 0 },
		{ .index = X86_MSR_SYSENTER_CS, .data = 0 },
		{ .index = X86_MSR_SYSENTER_ESP, .data = 0 },
		{ .index = X86_MSR_SYSENTER_EIP, .data = 0 },
		{ .index = X86_MSR_MISC_ENABLE, .data = 1 }, /* fast strings */
	};
	unsigned n = 0;
	for (; n < max && n < sizeof(msrs) / sizeof(msrs[0]); n++)
		e[n] = msrs[n];
	return n;
}

uint64_t x86_write_iret_frame(struct gmem *m, unsigned vcpu, uint64_t rip, uint64_t rflags,
			      uint64_t rsp)
{
	uint64_t frame[5] = {
		rip, X86_SEL_UCODE, (rflags & X86_RFLAGS_USER_MASK) | X86_RFLAGS_FIXED, rsp,
		X86_SEL_UDATA,
	};
	uint64_t at;

	if (vcpu >= X86_MAX_VCPUS)
		return 0;
	at = x86_kstack_top(vcpu) - sizeof(frame);
	if (gmem_write(m, at, frame, sizeof(frame)) < 0)
		return 0;
	return at;
}

int x86_read_exc_frame(const struct gmem *m, uint64_t rsp, unsigned vector,
		       struct x86_exc_frame *f)
{
	uint64_t w[6];
	unsigned n = cpu_exc_has_error_code(vector) ? 6 : 5;
	unsigned i = 0;

	if (gmem_read(m, rsp, w, n * sizeof(uint64_t)) < 0)
		return -EFAULT;
	f->error_code = n == 6 ? w[i++] : 0;
	f->rip = w[i++];
	f->cs = w[i++];
	f->rflags = w[i++];
	f->rsp = w[i++];
	f->ss = w[i];
	return 0;
}

/* ------------------------------------------------------------ Linux guests */

int x86_setup_linux(struct gmem *m)
{
	uint64_t *gdt = gmem_ptr(m, X86_LX_GDT, 4 * 8);
	uint64_t *pml4 = gmem_ptr(m, X86_LX_PML4, 4096);
	uint64_t *pdpt = gmem_ptr(m, X86_LX_PDPT, 4096);
	uint64_t *pd = gmem_ptr(m, X86_LX_PD, 4 * 4096);

	if (!gdt || !pml4 || !pdpt || !pd)
		return -EFAULT;
	/* null, null, __BOOT_CS (0x10, 64-bit code), __BOOT_DS (0x18) */
	gdt[0] = gdt[1] = 0;
	gdt[2] = gdt_seg(0x9b, 0xa);
	gdt[3] = gdt_seg(0x93, 0xc);
	/* The low 4 GiB identity mapped in 2 MiB pages, supervisor only. */
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = X86_LX_PDPT | PTE_P | PTE_RW;
	for (unsigned g = 0; g < 4; g++) {
		pdpt[g] = (X86_LX_PD + 4096ULL * g) | PTE_P | PTE_RW;
		for (unsigned i = 0; i < 512; i++)
			pd[512 * g + i] = ((uint64_t)g * GiB + (uint64_t)i * 2 * MiB) | PTE_P |
					  PTE_RW | PTE_PS;
	}
	return 0;
}

static void seg_flat(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code64)
{
	*s = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
		.dpl = 0, .db = code64 ? 0 : 1, .s = 1, .l = code64 ? 1 : 0, .g = 1,
	};
}

void x86_sregs_linux(struct kvm_sregs *s)
{
	seg_flat(&s->cs, X86_LX_SEL_CODE, 0xb, true);
	seg_flat(&s->ds, X86_LX_SEL_DATA, 0x3, false);
	s->es = s->fs = s->gs = s->ss = s->ds;
	s->gdt.base = X86_LX_GDT;
	s->gdt.limit = 4 * 8 - 1;
	s->idt.base = 0;
	s->idt.limit = 0;
	s->cr3 = X86_LX_PML4;
	s->cr4 = 0x20;               /* PAE */
	s->cr0 = 0x80000001 | 0x10; /* PG, PE, ET */
	s->efer = 0x500;             /* LME, LMA */
}
