/* tests/unit/test_x86.c - vmm/x86: the system area x86_setup_system()
 * writes into guest RAM, decoded the way the CPU reads it: a 4-level page
 * walk, GDT/TSS/IDT descriptors, the TSS I/O permission bitmap, the
 * trampoline bytes; the iret/exception frames and the ring-3 registers. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "vmm/gmem.h"
#include "vmm/kvm/x86.h"

#define P_P 0x1ULL
#define P_RW 0x2ULL
#define P_US 0x4ULL
#define P_PS 0x80ULL
#define P_NX (1ULL << 63)
#define P_ADDR 0x000ffffffffff000ULL

static uint64_t rd64(const struct gmem *m, uint64_t gpa)
{
	uint64_t v;
	cr_assert_eq(gmem_read(m, gpa, &v, 8), 0, "read of gpa 0x%llx", (unsigned long long)gpa);
	return v;
}

static void setup(struct gmem *m, uint64_t size, unsigned nr_vcpus)
{
	cr_assert_eq(gmem_init(m, size, GMEM_ANON), 0);
	cr_assert_eq(x86_setup_system(m, nr_vcpus), 0);
}

/* ------------------------------------------------------------ page walk */

struct xlate {
	bool present;
	bool user, rw, nx;   /* effective: AND of U/RW over the levels, OR of NX */
	uint64_t pa;
	uint64_t page_size;
};

/* Translates va like the MMU in 4-level paging (CR3 = X86_PML4). */
static struct xlate walk(const struct gmem *m, uint64_t va)
{
	struct xlate x = { .user = true, .rw = true };
	uint64_t e, table = X86_PML4;
	static const unsigned shift[4] = { 39, 30, 21, 12 };

	for (unsigned lvl = 0; lvl < 4; lvl++) {
		e = rd64(m, table + 8 * ((va >> shift[lvl]) & 511));
		if (!(e & P_P))
			return x;
		x.user &= !!(e & P_US);
		x.rw &= !!(e & P_RW);
		x.nx |= !!(e & P_NX);
		cr_assert(!(lvl == 0 && (e & P_PS)), "PS set in a PML4 entry");
		if (lvl == 1 && (e & P_PS)) {
			x.page_size = 1ULL << 30;
			x.pa = (e & P_ADDR & ~(x.page_size - 1)) | (va & (x.page_size - 1));
			x.present = true;
			return x;
		}
		if (lvl == 2 && (e & P_PS)) {
			x.page_size = 2 * MiB;
			x.pa = (e & P_ADDR & ~(x.page_size - 1)) | (va & (x.page_size - 1));
			x.present = true;
			return x;
		}
		table = e & P_ADDR;
	}
	x.page_size = 4096;
	x.pa = (e & P_ADDR) | (va & 4095);
	x.present = true;
	return x;
}

static void assert_identity(const struct gmem *m, uint64_t va, uint64_t page_size)
{
	struct xlate x = walk(m, va);
	cr_assert(x.present, "va 0x%llx not present", (unsigned long long)va);
	cr_assert_eq(x.pa, va, "va 0x%llx maps to 0x%llx", (unsigned long long)va,
		     (unsigned long long)x.pa);
	cr_assert_eq(x.page_size, page_size, "va 0x%llx: page size %llu", (unsigned long long)va,
		     (unsigned long long)x.page_size);
	cr_assert(x.user && x.rw, "va 0x%llx not user RW", (unsigned long long)va);
	cr_assert(!x.nx, "va 0x%llx is not executable", (unsigned long long)va);
}

Test(x86, null_page_not_present)
{
	struct gmem m;

	setup(&m, 64 * MiB, 1);
	cr_assert(!walk(&m, 0).present);
	cr_assert(!walk(&m, 0xfff).present);
	gmem_fini(&m);
}

Test(x86, system_area_4k_user_rw)
{
	struct gmem m;

	setup(&m, 64 * MiB, 1);
	for (uint64_t va = 0x1000; va < FG_SYS_END; va += 4096)
		assert_identity(&m, va, 4096);
	assert_identity(&m, FG_SYS_END - 1, 4096);
	gmem_fini(&m);
}

Test(x86, all_ram_identity_mapped_2m)
{
	struct gmem m;

	setup(&m, 64 * MiB, 1);
	for (uint64_t va = FG_SYS_END; va < m.gpa_end; va += 2 * MiB) {
		assert_identity(&m, va, 2 * MiB);
		assert_identity(&m, va + 2 * MiB - 1, 2 * MiB);
	}
	/* Nothing past RAM. */
	for (uint64_t va = m.gpa_end; va < GiB; va += 2 * MiB)
		cr_assert(!walk(&m, va).present, "va 0x%llx beyond RAM is mapped",
			  (unsigned long long)va);
	cr_assert(!walk(&m, GiB).present);
	cr_assert(!walk(&m, 1ULL << 39).present, "second PML4 slot");
	cr_assert(!walk(&m, 0xffff800000000000ULL).present, "kernel half");
	gmem_fini(&m);
}

Test(x86, hole_unmapped_and_high_ram_mapped)
{
	struct gmem m;

	setup(&m, 4 * GiB + 64 * MiB, 2);
	cr_assert_eq(m.gpa_end, 5 * GiB + 64 * MiB);
	assert_identity(&m, 3 * GiB - 2 * MiB, 2 * MiB);
	assert_identity(&m, 3 * GiB - 1, 2 * MiB);
	for (uint64_t va = 3 * GiB; va < 4 * GiB; va += 2 * MiB)
		cr_assert(!walk(&m, va).present, "hole address 0x%llx is mapped",
			  (unsigned long long)va);
	cr_assert(!walk(&m, 4 * GiB - 1).present);
	for (uint64_t va = 4 * GiB; va < m.gpa_end; va += 2 * MiB)
		assert_identity(&m, va, 2 * MiB);
	cr_assert(!walk(&m, m.gpa_end).present, "first byte past high RAM");
	cr_assert(!walk(&m, 6 * GiB).present);
	/* The page directories stay below the GDT. */
	uint64_t nr_pd = (m.gpa_end + GiB - 1) / GiB;
	cr_assert_leq(X86_PD_BASE + 4096 * nr_pd, X86_GDT);
	gmem_fini(&m);
}

Test(x86, max_memory_fits_the_tables)
{
	struct gmem m;

	setup(&m, GMEM_MAX_SIZE, 1);
	assert_identity(&m, m.gpa_end - 2 * MiB, 2 * MiB);
	assert_identity(&m, 4 * GiB, 2 * MiB);
	cr_assert(!walk(&m, 3 * GiB).present);
	cr_assert(!walk(&m, m.gpa_end).present);
	cr_assert_leq(X86_PD_BASE + 4096ULL * X86_MAX_PD, X86_GDT, "PD area overlaps the GDT");
	gmem_fini(&m);
}

/* ------------------------------------------------------------ GDT */

struct seg {
	uint64_t base, limit;
	unsigned type, s, dpl, p, l, db, g;
};

static struct seg decode(uint64_t d)
{
	struct seg s = {
		.limit = (d & 0xffff) | (((d >> 48) & 0xf) << 16),
		.base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24),
		.type = (unsigned)((d >> 40) & 0xf),
		.s = (unsigned)((d >> 44) & 1),
		.dpl = (unsigned)((d >> 45) & 3),
		.p = (unsigned)((d >> 47) & 1),
		.l = (unsigned)((d >> 53) & 1),
		.db = (unsigned)((d >> 54) & 1),
		.g = (unsigned)((d >> 55) & 1),
	};
	return s;
}

Test(x86, gdt_code_and_data_descriptors)
{
	struct gmem m;
	struct seg s;

	setup(&m, 64 * MiB, 1);
	cr_assert_eq(rd64(&m, X86_GDT), 0, "null descriptor");

	s = decode(rd64(&m, X86_GDT + X86_SEL_KCODE));
	cr_assert(s.p && s.s && s.dpl == 0 && (s.type & 0x8) && s.l && !s.db,
		  "kernel code: p %u s %u dpl %u type %x l %u db %u", s.p, s.s, s.dpl, s.type, s.l, s.db);
	s = decode(rd64(&m, X86_GDT + X86_SEL_KDATA));
	cr_assert(s.p && s.s && s.dpl == 0 && !(s.type & 0x8) && (s.type & 0x2),
		  "kernel data: dpl %u type %x", s.dpl, s.type);
	s = decode(rd64(&m, X86_GDT + (X86_SEL_UDATA & ~3)));
	cr_assert(s.p && s.s && s.dpl == 3 && !(s.type & 0x8) && (s.type & 0x2),
		  "user data: dpl %u type %x", s.dpl, s.type);
	s = decode(rd64(&m, X86_GDT + (X86_SEL_UCODE & ~3)));
	cr_assert(s.p && s.s && s.dpl == 3 && (s.type & 0x8) && s.l && !s.db,
		  "user code: dpl %u type %x l %u db %u", s.dpl, s.type, s.l, s.db);
	/* The selectors carry the matching RPL. */
	cr_assert_eq(X86_SEL_UCODE & 3, 3);
	cr_assert_eq(X86_SEL_UDATA & 3, 3);
	cr_assert_eq(X86_SEL_KCODE & 3, 0);
	/* sysret's layout: user data right below user code (STAR[63:48] + 8/16). */
	cr_assert_eq((X86_SEL_UDATA & ~3) + 8, X86_SEL_UCODE & ~3);
	cr_assert_eq((X86_SEL_KCODE) + 8, X86_SEL_KDATA, "syscall's SS = CS + 8");
	gmem_fini(&m);
}

Test(x86, gdt_tss_descriptors)
{
	struct gmem m;
	const unsigned n = 5;

	setup(&m, 64 * MiB, n);
	for (unsigned i = 0; i < n; i++) {
		uint64_t lo = rd64(&m, X86_GDT + X86_SEL_TSS(i));
		uint64_t hi = rd64(&m, X86_GDT + X86_SEL_TSS(i) + 8);
		struct seg s = decode(lo);
		uint64_t base = s.base | ((hi & 0xffffffff) << 32);
		cr_assert(s.p && !s.s && s.dpl == 0, "TSS %u: p %u s %u dpl %u", i, s.p, s.s, s.dpl);
		cr_assert(s.type == 0x9 || s.type == 0xb, "TSS %u: type %x is not a 64-bit TSS", i,
			  s.type);
		cr_assert_eq(base, X86_TSS_BASE + X86_TSS_STRIDE * i, "TSS %u base", i);
		cr_assert_eq(s.limit, X86_TSS_LIMIT, "TSS %u limit", i);
		cr_assert_eq(s.g, 0, "TSS limit is in bytes");
		cr_assert_eq(hi >> 32, 0, "reserved upper half");
	}
	gmem_fini(&m);
}

/* ------------------------------------------------------------ TSS */

/* The CPU's I/O permission check for an access of size bytes at port from
 * CPL 3 with IOPL 0: both bitmap bytes must lie within the TSS limit and
 * every bit of the accessed ports must be clear. */
static bool io_allowed(const uint8_t *tss, uint64_t limit, unsigned port, unsigned size)
{
	uint16_t iopb;
	memcpy(&iopb, tss + 102, 2);
	uint64_t off = iopb + port / 8;
	if (off + 1 > limit)
		return false;
	uint16_t w = (uint16_t)(tss[off] | (tss[off + 1] << 8));
	uint16_t mask = (uint16_t)(((1u << size) - 1) << (port % 8));
	return (w & mask) == 0;
}

Test(x86, tss_rsp0_and_io_bitmap)
{
	struct gmem m;
	const unsigned n = 3;

	setup(&m, 64 * MiB, n);
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *tss = gmem_ptr(&m, X86_TSS_BASE + X86_TSS_STRIDE * i, X86_TSS_STRIDE);
		uint64_t rsp0;
		uint16_t iopb;

		cr_assert_not_null(tss);
		memcpy(&rsp0, tss + 4, 8);
		memcpy(&iopb, tss + 102, 2);
		cr_assert_eq(rsp0, x86_kstack_top(i), "vCPU %u RSP0", i);
		cr_assert_geq(iopb, 104, "I/O bitmap inside the TSS body");
		cr_assert_leq(iopb + X86_IOPB_BYTES, X86_TSS_STRIDE, "bitmap fits the stride");
		cr_assert_eq(tss[iopb + 32], 0xff, "the bitmap's terminating byte");
		for (unsigned port = 0; port < 0x10000; port++) {
			bool want = port == X86_PORT_SYSCALL ||
				    (port >= X86_PORT_EXC_BASE && port < X86_PORT_EXC_BASE + X86_NR_EXC);
			cr_assert_eq(io_allowed(tss, X86_TSS_LIMIT, port, 1), want,
				     "vCPU %u port 0x%x: allowed %d", i, port, !want);
		}
		static const unsigned denied[] = { 0x20, 0x21, 0x40, 0x43, 0x60, 0x64, 0x70, 0x80,
						   0xa0, 0xbf, 0xe1, 0xff, 0x3f8, 0xcf8, 0xcfc };
		for (unsigned k = 0; k < sizeof(denied) / sizeof(denied[0]); k++) {
			cr_assert(!io_allowed(tss, X86_TSS_LIMIT, denied[k], 1), "port 0x%x", denied[k]);
			cr_assert(!io_allowed(tss, X86_TSS_LIMIT, denied[k], 4), "port 0x%x", denied[k]);
		}
		cr_assert(!io_allowed(tss, X86_TSS_LIMIT, X86_PORT_SYSCALL, 2), "0xe0-0xe1 word");
	}
	gmem_fini(&m);
}

Test(x86, kernel_stacks_layout)
{
	for (unsigned i = 0; i < X86_MAX_VCPUS; i++) {
		uint64_t top = x86_kstack_top(i);
		cr_assert_eq(top % 16, 0);
		cr_assert_geq(top - X86_KSTACK_SIZE, X86_KSTACK_BASE);
		cr_assert_leq(top, FG_SYS_END);
		if (i)
			cr_assert_eq(top - x86_kstack_top(i - 1), X86_KSTACK_SIZE);
	}
	cr_assert_leq(X86_TSS_BASE + X86_TSS_STRIDE * X86_MAX_VCPUS, X86_KSTACK_BASE,
		      "TSSs overlap the stacks");
	cr_assert_leq(X86_GDT + X86_SEL_TSS(X86_MAX_VCPUS), X86_IDT, "GDT overlaps the IDT");
	cr_assert_leq(X86_IDT + 4096, X86_TRAMP);
	cr_assert_leq(X86_TRAMP + 4096, X86_TSS_BASE);
}

/* ------------------------------------------------------------ IDT */

Test(x86, idt_exception_gates)
{
	struct gmem m;

	setup(&m, 64 * MiB, 1);
	for (unsigned v = 0; v < 256; v++) {
		uint64_t lo = rd64(&m, X86_IDT + 16 * v), hi = rd64(&m, X86_IDT + 16 * v + 8);
		if (v >= X86_NR_EXC) {
			cr_assert_eq(lo, 0, "vector %u must not be present", v);
			cr_assert_eq(hi, 0);
			continue;
		}
		uint64_t off = (lo & 0xffff) | (((lo >> 48) & 0xffff) << 16) | ((hi & 0xffffffff) << 32);
		unsigned sel = (unsigned)((lo >> 16) & 0xffff);
		unsigned ist = (unsigned)((lo >> 32) & 7);
		unsigned type = (unsigned)((lo >> 40) & 0xf);
		unsigned dpl = (unsigned)((lo >> 45) & 3);
		unsigned p = (unsigned)((lo >> 47) & 1);
		cr_assert_eq(off, X86_TRAMP_EXC(v), "vector %u handler", v);
		cr_assert_eq(sel, X86_SEL_KCODE, "vector %u selector", v);
		cr_assert_eq(type, 0xe, "vector %u: 64-bit interrupt gate", v);
		cr_assert_eq(p, 1);
		cr_assert_eq(ist, 0);
		cr_assert_eq(dpl, (v == 3 || v == 4) ? 3u : 0u, "vector %u DPL", v);
	}
	gmem_fini(&m);
}

/* ------------------------------------------------------------ trampoline */

Test(x86, trampoline_bytes)
{
	struct gmem m;
	const uint8_t *t;

	setup(&m, 64 * MiB, 1);
	t = gmem_ptr(&m, X86_TRAMP, 4096);
	cr_assert_not_null(t);
	static const uint8_t entry[] = { 0xe6, X86_PORT_SYSCALL, 0x48, 0xcf };
	cr_assert_eq(memcmp(t + (X86_TRAMP_SYSCALL - X86_TRAMP), entry, 4), 0,
		     "syscall entry is out %%al,$0xe0; iretq: %02x %02x %02x %02x", t[0], t[1], t[2],
		     t[3]);
	cr_assert_geq(X86_TRAMP_EXC(0) - X86_TRAMP, 4, "stubs clear of the syscall entry");
	for (unsigned v = 0; v < X86_NR_EXC; v++) {
		const uint8_t *s = t + (X86_TRAMP_EXC(v) - X86_TRAMP);
		cr_assert_eq(s[0], 0xe6, "vector %u: out imm8", v);
		cr_assert_eq(s[1], X86_PORT_EXC_BASE + v, "vector %u port", v);
		cr_assert_eq(s[2], 0xf4, "vector %u: hlt", v);
	}
	cr_assert_eq(t[4095], 0xf4, "the rest of the page halts");
	cr_assert_eq(t[0x20], 0xf4);
	gmem_fini(&m);
}

Test(x86, boot_msrs)
{
	struct kvm_msr_entry e[32];
	unsigned n = x86_boot_msrs(e, 32);
	uint64_t star = 0, lstar = 0, sfmask = 0;
	bool have_star = false, have_lstar = false, have_sfmask = false;

	cr_assert_gt(n, 0);
	for (unsigned i = 0; i < n; i++) {
		if (e[i].index == X86_MSR_STAR)
			star = e[i].data, have_star = true;
		if (e[i].index == X86_MSR_LSTAR)
			lstar = e[i].data, have_lstar = true;
		if (e[i].index == X86_MSR_SFMASK)
			sfmask = e[i].data, have_sfmask = true;
	}
	cr_assert(have_star && have_lstar && have_sfmask);
	cr_assert_eq(lstar, X86_TRAMP_SYSCALL);
	cr_assert_eq((star >> 32) & 0xffff, X86_SEL_KCODE, "syscall CS");
	cr_assert_eq(((star >> 48) + 16) | 3, X86_SEL_UCODE, "sysret CS");
	cr_assert_eq(((star >> 48) + 8) | 3, X86_SEL_UDATA, "sysret SS");
	/* IF, TF, DF, IOPL, NT, AC cleared on entry */
	cr_assert_eq(sfmask & 0x47700, 0x47700, "SFMASK 0x%llx", (unsigned long long)sfmask);
	cr_assert_eq(x86_boot_msrs(e, 2), 2, "max is honoured");
	cr_assert_eq(x86_boot_msrs(e, 0), 0);
}

/* ------------------------------------------------------------ frames */

Test(x86, iret_frame_layout_and_rflags)
{
	struct gmem m;
	uint64_t f[5], at;

	setup(&m, 64 * MiB, 2);
	at = x86_write_iret_frame(&m, 1, 0x401234, 0x246, 0x7ffff0);
	cr_assert_eq(at, x86_kstack_top(1) - 40);
	cr_assert_eq(gmem_read(&m, at, f, sizeof(f)), 0);
	cr_assert_eq(f[0], 0x401234, "rip");
	cr_assert_eq(f[1], X86_SEL_UCODE, "cs");
	cr_assert_eq(f[2], 0x046, "IF cleared: 0x%llx", (unsigned long long)f[2]);
	cr_assert_eq(f[3], 0x7ffff0, "rsp");
	cr_assert_eq(f[4], X86_SEL_UDATA, "ss");

	at = x86_write_iret_frame(&m, 0, 1, UINT64_MAX, 2);
	cr_assert_eq(at, x86_kstack_top(0) - 40);
	cr_assert_eq(gmem_read(&m, at, f, sizeof(f)), 0);
	cr_assert_eq(f[2] & 0x200, 0, "IF");
	cr_assert_eq(f[2] & 0x3000, 0, "IOPL");
	cr_assert_eq(f[2] & 0x4000, 0, "NT");
	cr_assert_eq(f[2] & 0x20000, 0, "VM");
	cr_assert_eq(f[2] & 0x100000, 0, "VIP");
	cr_assert_eq(f[2] & 0x80000, 0, "VIF");
	cr_assert_eq(f[2] >> 22, 0, "reserved high bits");
	cr_assert_eq(f[2] & 0x2, 0x2, "bit 1 is always set");
	cr_assert_eq(f[2] & 0xcd5, 0xcd5, "arithmetic flags, TF, DF, OF kept: 0x%llx",
		     (unsigned long long)f[2]);
	cr_assert_eq(f[2] & 0x40000, 0x40000, "AC kept");

	at = x86_write_iret_frame(&m, 0, 1, 0, 2);
	cr_assert_eq(gmem_read(&m, at, f, sizeof(f)), 0);
	cr_assert_eq(f[2], 0x2);

	cr_assert_eq(x86_write_iret_frame(&m, X86_MAX_VCPUS, 1, 2, 3), 0, "bad vCPU index");
	gmem_fini(&m);
}

Test(x86, read_exc_frame_with_and_without_error_code)
{
	struct gmem m;
	struct x86_exc_frame f;
	const uint64_t at = x86_kstack_top(0) - 48;
	const uint64_t w[6] = { 0x6, 0x401111, 0x23, 0x10246, 0x7fff00, 0x1b };

	setup(&m, 64 * MiB, 1);
	cr_assert_eq(gmem_write(&m, at, w, sizeof(w)), 0);

	cr_assert_eq(x86_read_exc_frame(&m, at, 14, &f), 0);
	cr_assert_eq(f.error_code, 6);
	cr_assert_eq(f.rip, 0x401111);
	cr_assert_eq(f.cs, 0x23);
	cr_assert_eq(f.rflags, 0x10246);
	cr_assert_eq(f.rsp, 0x7fff00);
	cr_assert_eq(f.ss, 0x1b);

	/* #UD pushes no error code: the frame starts one word higher. */
	memset(&f, 0xaa, sizeof(f));
	cr_assert_eq(x86_read_exc_frame(&m, at + 8, 6, &f), 0);
	cr_assert_eq(f.error_code, 0);
	cr_assert_eq(f.rip, 0x401111);
	cr_assert_eq(f.cs, 0x23);
	cr_assert_eq(f.ss, 0x1b);

	/* Frames that end past RAM are refused. */
	cr_assert_eq(x86_read_exc_frame(&m, m.gpa_end - 40, 6, &f), 0);
	cr_assert_eq(x86_read_exc_frame(&m, m.gpa_end - 40, 14, &f), -EFAULT);
	cr_assert_eq(x86_read_exc_frame(&m, UINT64_MAX - 8, 0, &f), -EFAULT);
	gmem_fini(&m);
}

Test(x86, exception_vectors_with_error_codes)
{
	static const unsigned with[] = { 8, 10, 11, 12, 13, 14, 17, 21, 29, 30 };
	unsigned k = 0;

	for (unsigned v = 0; v < 32; v++) {
		bool want = k < sizeof(with) / sizeof(with[0]) && with[k] == v;
		if (want)
			k++;
		cr_assert_eq(cpu_exc_has_error_code(v), want, "vector %u", v);
	}
	cr_assert_eq(strncmp(cpu_exc_name(14), "#PF", 3), 0);
	cr_assert_eq(strncmp(cpu_exc_name(13), "#GP", 3), 0);
	cr_assert_eq(strncmp(cpu_exc_name(6), "#UD", 3), 0);
	cr_assert_eq(strncmp(cpu_exc_name(0), "#DE", 3), 0);
	cr_assert_not_null(cpu_exc_name(32));
	cr_assert_not_null(cpu_exc_name(UINT32_MAX));
}

/* ------------------------------------------------------------ limits */

Test(x86, vcpu_count_limits)
{
	struct gmem m;

	cr_assert_eq(gmem_init(&m, 64 * MiB, GMEM_ANON), 0);
	cr_assert_eq(x86_setup_system(&m, 0), -E2BIG);
	cr_assert_eq(x86_setup_system(&m, X86_MAX_VCPUS + 1), -E2BIG);
	cr_assert_eq(x86_setup_system(&m, 1000), -E2BIG);
	cr_assert_eq(x86_setup_system(&m, X86_MAX_VCPUS), 0);
	/* The last vCPU's TSS and descriptor are complete. */
	unsigned last = X86_MAX_VCPUS - 1;
	uint64_t rsp0;
	cr_assert_eq(gmem_read(&m, X86_TSS_BASE + X86_TSS_STRIDE * last + 4, &rsp0, 8), 0);
	cr_assert_eq(rsp0, x86_kstack_top(last));
	struct seg s = decode(rd64(&m, X86_GDT + X86_SEL_TSS(last)));
	cr_assert_eq(s.base, (X86_TSS_BASE + X86_TSS_STRIDE * last) & 0xffffffff);
	cr_assert(s.p);
	gmem_fini(&m);
}

/* ------------------------------------------------------------ registers */

Test(x86, sregs_ring3)
{
	struct kvm_sregs s;

	memset(&s, 0x5a, sizeof(s));
	s.apic_base = 0xfee00900;
	s.interrupt_bitmap[1] = 0x1234;
	x86_sregs_ring3(&s, 3, 4, false);

	cr_assert_eq(s.cs.selector, X86_SEL_UCODE);
	cr_assert_eq(s.cs.dpl, 3);
	cr_assert_eq(s.cs.l, 1);
	cr_assert_eq(s.cs.db, 0, "L=1 requires D=0");
	cr_assert_eq(s.cs.s, 1);
	cr_assert_eq(s.cs.present, 1);
	cr_assert(s.cs.type & 0x8, "code segment");
	cr_assert_eq(s.cs.base, 0);
	cr_assert_eq(s.ss.selector, X86_SEL_UDATA);
	cr_assert_eq(s.ss.dpl, 3);
	cr_assert_eq(s.ss.present, 1);
	cr_assert(!(s.ss.type & 0x8) && (s.ss.type & 0x2), "writable data");
	cr_assert_eq(memcmp(&s.ds, &s.ss, sizeof(s.ss)), 0);
	cr_assert_eq(memcmp(&s.es, &s.ss, sizeof(s.ss)), 0);
	cr_assert_eq(memcmp(&s.fs, &s.ss, sizeof(s.ss)), 0);
	cr_assert_eq(memcmp(&s.gs, &s.ss, sizeof(s.ss)), 0);

	cr_assert_eq(s.tr.selector, X86_SEL_TSS(3));
	cr_assert_eq(s.tr.base, X86_TSS_BASE + X86_TSS_STRIDE * 3);
	cr_assert_eq(s.tr.limit, X86_TSS_LIMIT);
	cr_assert_eq(s.tr.type, 11, "busy 64-bit TSS");
	cr_assert_eq(s.tr.present, 1);
	cr_assert_eq(s.tr.s, 0);
	cr_assert(s.ldt.unusable);

	cr_assert_eq(s.gdt.base, X86_GDT);
	cr_assert_geq(s.gdt.limit + 1, X86_SEL_TSS(4), "GDT limit covers every TSS descriptor");
	cr_assert_eq(s.idt.base, X86_IDT);
	cr_assert_eq(s.idt.limit, 4095);

	cr_assert(s.cr0 & 1, "PE");
	cr_assert(s.cr0 & (1ULL << 31), "PG");
	cr_assert(s.cr0 & (1ULL << 16), "WP");
	cr_assert(s.cr0 & (1ULL << 5), "NE");
	cr_assert(!(s.cr0 & (1ULL << 2)), "EM off: SSE works");
	cr_assert(!(s.cr0 & (3ULL << 29)), "caches on");
	cr_assert_eq(s.cr3, X86_PML4);
	cr_assert(s.cr4 & (1ULL << 5), "PAE");
	cr_assert(s.cr4 & (1ULL << 9), "OSFXSR");
	cr_assert(s.cr4 & (1ULL << 10), "OSXMMEXCPT");
	cr_assert(!(s.cr4 & (1ULL << 18)), "no OSXSAVE without osxsave");
	cr_assert(s.efer & 0x1, "SCE");
	cr_assert(s.efer & 0x100, "LME");
	cr_assert(s.efer & 0x400, "LMA");
	cr_assert(s.efer & 0x800, "NXE");
	cr_assert_eq(s.apic_base, 0xfee00900, "apic_base kept");
	cr_assert_eq(s.interrupt_bitmap[1], 0x1234, "interrupt bitmap kept");

	x86_sregs_ring3(&s, 0, 1, true);
	cr_assert(s.cr4 & (1ULL << 18), "OSXSAVE");
	cr_assert_eq(s.tr.selector, X86_SEL_TSS(0));
	cr_assert_eq(s.tr.base, X86_TSS_BASE);
}

