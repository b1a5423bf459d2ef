/* tests/unit/test_linux_boot.c - vmm/linux/boot.c: bzImage parsing, the
 * zero page, the e820 map, the initramfs's place and the MP table, read
 * back from guest memory the way the kernel reads them; the KVM
 * platform's 64-bit entry tables (vmm/kvm/x86.c); and the identity page
 * of a Linux guest (vmm/idpage.c, the loader's restore and clone hooks).
 * No KVM needed. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "guest/abi/forkvm_identity.h"
#include "guest/abi/forkvm_linux.h"
#include "tests/lib/unit.h"
#include "vmm/gmem.h"
#include "vmm/idpage.h"
#include "vmm/kvm/x86.h"
#include "vmm/linux/acpi.h"
#include "vmm/linux/bytes.h"
#include "vmm/linux/linux.h"
#include "vmm/loader.h"
#include "vmm/vm.h"

#define MiB_ (1024ULL * 1024)

static uint8_t *image;
static size_t image_len;

/* A bzImage: 1 setup sector after the boot sector, then kernel bytes. */
static void make_image(uint16_t version, uint16_t xloadflags, size_t kernel_len)
{
	image_len = 1024 + kernel_len;
	image = calloc(1, image_len);
	cr_assert(image);
	image[0x1f1] = 1;
	image[0x1fe] = 0x55;
	image[0x1ff] = 0xaa;
	image[0x201] = 0x6a; /* setup header up to 0x26c */
	memcpy(image + 0x202, "HdrS", 4);
	image[0x206] = (uint8_t)version;
	image[0x207] = (uint8_t)(version >> 8);
	image[0x236] = (uint8_t)xloadflags;
	image[0x238] = 0xff; /* cmdline_size 2047 */
	image[0x239] = 0x07;
	uint32_t init_size = 4 * MiB_;
	memcpy(image + 0x260, &init_size, 4);
	uint32_t max = 0x37ffffff;
	memcpy(image + 0x22c, &max, 4);
	for (size_t i = 1024; i < image_len; i++)
		image[i] = (uint8_t)(i * 7);
}

static void fini(void)
{
	free(image);
	image = NULL;
}

Test(linux_boot, probe_and_parse_a_bzimage, .fini = fini)
{
	struct lx_image li;
	char err[256];

	make_image(0x020f, LX_XLF_KERNEL_64, 8192);
	cr_assert(lx_probe(image, image_len));
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(li.version, 0x020f);
	cr_assert_eq(li.setup_len, 1024);
	cr_assert_eq(li.kernel_off, 1024);
	cr_assert_eq(li.kernel_len, 8192);
	cr_assert_eq(li.init_size, 4 * MiB_);
	cr_assert_eq(li.cmdline_size, 2047);
	/* an ELF is not a bzImage */
	uint8_t elf[0x300] = {0x7f, 'E', 'L', 'F'};
	cr_assert_not(lx_probe(elf, sizeof(elf)));
	cr_assert_not(lx_probe(image, 0x100));
}

Test(linux_boot, old_protocols_32_bit_kernels_and_truncated_images_are_refused, .fini = fini)
{
	struct lx_image li;
	char err[256];

	make_image(0x020b, LX_XLF_KERNEL_64, 8192);
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), -ENOEXEC);
	cr_assert(strstr(err, "2.11 is too old"), "%s", err);
	fini();
	make_image(0x020f, 0, 8192);
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), -ENOEXEC);
	cr_assert(strstr(err, "no 64-bit entry point"), "%s", err);
	/* the file ends inside its setup sectors */
	image[0x236] = LX_XLF_KERNEL_64;
	cr_assert_eq(lx_parse(image, 1000, &li, err, sizeof(err)), -ENOEXEC);
	cr_assert(strstr(err, "truncated"), "%s", err);
	/* setup_sects that runs past the file */
	image[0x1f1] = 200;
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), -ENOEXEC);
}

Test(linux_boot, the_zero_page_holds_the_header_cmdline_initramfs_and_e820, .fini = fini)
{
	struct gmem m;
	struct lx_image li;
	char err[256];
	uint64_t initrd;

	make_image(0x020f, LX_XLF_KERNEL_64, 8192);
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), 0);
	cr_assert_eq(gmem_init(&m, 64 * MiB_, GMEM_ANON), 0);
	cr_assert_eq(lx_initrd_place(&m, &li, 3 * 4096 + 5, &initrd), 0);
	cr_assert_eq(initrd % 4096, 0);
	cr_assert_leq(initrd + 3 * 4096 + 5, 64 * MiB_);
	cr_assert_geq(initrd, LX_KERNEL + li.init_size);
	cr_assert_eq(lx_setup(&m, image, &li, "console=ttyS0 quiet", initrd, 3 * 4096 + 5, 2, err,
			      sizeof(err)),
		     0, "%s", err);
	const uint8_t *zp = gmem_ptr(&m, LX_ZERO_PAGE, 4096);
	cr_assert_eq(memcmp(zp + 0x202, "HdrS", 4), 0, "setup header copied");
	cr_assert_eq(zp[LX_TYPE_OF_LOADER], 0xff);
	cr_assert(zp[LX_LOADFLAGS] & LX_LOADED_HIGH);
	cr_assert(zp[LX_LOADFLAGS] & LX_CAN_USE_HEAP);
	cr_assert_eq(lx_rd32(zp + LX_CMD_LINE_PTR), LX_CMDLINE);
	cr_assert_str_eq((const char *)gmem_ptr(&m, LX_CMDLINE, 20), "console=ttyS0 quiet");
	cr_assert_eq(lx_rd32(zp + LX_RAMDISK_IMAGE), initrd);
	cr_assert_eq(lx_rd32(zp + LX_RAMDISK_SIZE), 3 * 4096 + 5);
	/* the kernel is at 1 MiB, byte for byte */
	cr_assert_eq(memcmp(gmem_ptr(&m, LX_KERNEL, 8192), image + 1024, 8192), 0);
	/* e820: low RAM, the reserved EBDA and BIOS area, RAM from 1 MiB */
	cr_assert_eq(zp[LX_E820_ENTRIES], 3);
	const uint8_t *e = zp + LX_E820_TABLE;
	cr_assert_eq(lx_rd64(e), 0);
	cr_assert_eq(lx_rd64(e + 8), LX_MPTABLE);
	cr_assert_eq(lx_rd32(e + 16), LX_E820_RAM);
	cr_assert_eq(lx_rd64(e + 20), LX_MPTABLE);
	cr_assert_eq(lx_rd64(e + 28), LX_EBDA_END - LX_MPTABLE);
	cr_assert_eq(lx_rd32(e + 36), LX_E820_RESERVED);
	cr_assert_eq(lx_rd64(e + 40), LX_EBDA_END);
	cr_assert_eq(lx_rd64(e + 48), 64 * MiB_ - LX_EBDA_END);
	cr_assert_eq(lx_rd32(e + 56), LX_E820_RAM);
	/* the reset vector (no BIOS): mov al, 0xfe; out 0x64, al (the i8042's reset) */
	const uint8_t *rv = gmem_ptr(&m, LX_RESET_VECTOR, 16);
	cr_assert_eq(memcmp(rv, "\xb0\xfe\xe6\x64", 4), 0);
	gmem_fini(&m);
}

Test(linux_boot, a_command_line_longer_than_the_kernel_takes_is_refused, .fini = fini)
{
	struct gmem m;
	struct lx_image li;
	char err[256], *cl = malloc(3000);

	make_image(0x020f, LX_XLF_KERNEL_64, 8192);
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), 0);
	cr_assert_eq(gmem_init(&m, 64 * MiB_, GMEM_ANON), 0);
	memset(cl, 'a', 2999);
	cl[2999] = 0;
	cr_assert_eq(lx_setup(&m, image, &li, cl, 0, 0, 1, err, sizeof(err)), -E2BIG);
	cr_assert(strstr(err, "takes at most 2047"), "%s", err);
	free(cl);
	gmem_fini(&m);
}

Test(linux_boot, an_initramfs_too_big_for_memory_has_no_place, .fini = fini)
{
	struct gmem m;
	struct lx_image li;
	char err[256];
	uint64_t at;

	make_image(0x020f, LX_XLF_KERNEL_64, 8192);
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), 0);
	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	cr_assert_eq(lx_initrd_place(&m, &li, 14 * MiB_, &at), -E2BIG);
	gmem_fini(&m);
}

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

Test(linux_boot, the_mp_table_lists_every_vcpu_the_ioapic_and_isa_irqs)
{
	struct gmem m;

	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	cr_assert_eq(lx_write_mptable(&m, 4), 0);
	const uint8_t *fp = gmem_ptr(&m, LX_MPTABLE, 16);
	cr_assert_eq(memcmp(fp, "_MP_", 4), 0);
	cr_assert_eq(sum(fp, 16), 0, "floating pointer checksum");
	uint32_t cfg = lx_rd32(fp + 4);
	const uint8_t *t = gmem_ptr(&m, cfg, 44);
	cr_assert_eq(memcmp(t, "PCMP", 4), 0);
	uint16_t len = (uint16_t)(t[4] | t[5] << 8), count = (uint16_t)(t[34] | t[35] << 8);
	t = gmem_ptr(&m, cfg, len);
	cr_assert_eq(sum(t, len), 0, "configuration table checksum");
	cr_assert_eq(lx_rd32(t + 36), 0xfee00000u);
	/* walk the entries */
	const uint8_t *e = t + 44;
	unsigned cpus = 0, bsp = 0, ioapics = 0, ints = 0, lints = 0, buses = 0;
	for (unsigned i = 0; i < count; i++) {
		switch (e[0]) {
		case 0:
			cr_assert_eq(e[1], cpus, "APIC IDs in order");
			cpus++;
			bsp += (e[3] & 2) ? 1 : 0;
			e += 20;
			continue;
		case 1:
			buses++;
			cr_assert_eq(memcmp(e + 2, "ISA", 3), 0);
			break;
		case 2:
			ioapics++;
			cr_assert_eq(e[1], 4, "the IOAPIC's id follows the CPUs'");
			cr_assert_eq(lx_rd32(e + 4), 0xfec00000u);
			break;
		case 3:
			cr_assert_eq(e[5], ints, "ISA IRQ n");
			cr_assert_eq(e[7], ints, "on IOAPIC pin n");
			ints++;
			break;
		case 4:
			lints++;
			break;
		default:
			cr_assert_fail("unknown MP entry type %u", e[0]);
		}
		e += 8;
	}
	cr_assert_eq(e - t, len);
	cr_assert_eq(cpus, 4);
	cr_assert_eq(bsp, 1);
	cr_assert_eq(buses, 1);
	cr_assert_eq(ioapics, 1);
	cr_assert_eq(ints, 16);
	cr_assert_eq(lints, 2);
	cr_assert_eq(lx_write_mptable(&m, 0), -E2BIG);
	cr_assert_eq(lx_write_mptable(&m, 255), -E2BIG);
	gmem_fini(&m);
}

Test(linux_boot, the_64_bit_entry_maps_the_low_4_gib_and_has_boot_segments)
{
	struct gmem m;
	struct kvm_sregs s;

	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	cr_assert_eq(x86_setup_linux(&m), 0);
	uint64_t pml4, pdpt, pd;
	cr_assert_eq(gmem_read(&m, X86_LX_PML4, &pml4, 8), 0);
	cr_assert_eq(pml4 & ~0xfffULL, X86_LX_PDPT);
	for (unsigned g = 0; g < 4; g++) {
		cr_assert_eq(gmem_read(&m, X86_LX_PDPT + 8 * g, &pdpt, 8), 0);
		cr_assert_eq(pdpt & ~0xfffULL, X86_LX_PD + 4096ULL * g);
		cr_assert_eq(gmem_read(&m, X86_LX_PD + 4096ULL * g + 8 * 511, &pd, 8), 0);
		cr_assert_eq(pd & ~0x1fffffULL, (uint64_t)g * 1024 * MiB_ + 511 * 2 * MiB_);
		cr_assert(pd & 0x80, "2 MiB page");
	}
	/* the tables stay clear of the zero page, command line and MP table */
	cr_assert(X86_LX_PD + 4 * 4096 <= LX_CMDLINE);
	cr_assert(X86_LX_PML4 >= LX_ZERO_PAGE + 4096);
	memset(&s, 0, sizeof(s));
	x86_sregs_linux(&s);
	cr_assert_eq(s.cs.selector, 0x10);
	cr_assert_eq(s.cs.l, 1);
	cr_assert_eq(s.ds.selector, 0x18);
	cr_assert_eq(s.cr3, X86_LX_PML4);
	cr_assert(s.efer & 0x400, "LMA");
	cr_assert(s.cr0 & 0x80000000u, "paging");
	gmem_fini(&m);
}

/* ------------------------------------------------------------ vmlinux */

static void wr16_(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void wr32_(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void wr64_(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

/* A program header: PT_LOAD at vaddr/paddr, file bytes at off. */
static void phdr(uint8_t *ph, uint64_t off, uint64_t vaddr, uint64_t paddr, uint64_t filesz,
		 uint64_t memsz)
{
	wr32_(ph, 1);
	wr32_(ph + 4, 5);
	wr64_(ph + 8, off);
	wr64_(ph + 16, vaddr);
	wr64_(ph + 24, paddr);
	wr64_(ph + 32, filesz);
	wr64_(ph + 40, memsz);
	wr64_(ph + 48, 0x200000);
}

/* A vmlinux as the kernel links it: text at 0xffffffff81000000 loaded at
 * 16 MiB (8 KiB in the file, 16 KiB in memory: bss), and a per-CPU
 * segment linked at 0 loaded right after it; entry: its physical start. */
static void make_vmlinux(uint64_t entry, uint64_t text_paddr)
{
	image_len = 0x3000;
	image = calloc(1, image_len);
	cr_assert(image);
	memcpy(image, "\x7f" "ELF", 4);
	image[4] = 2; /* 64-bit */
	image[5] = 1; /* little-endian */
	image[6] = 1;
	wr16_(image + 16, 2);  /* ET_EXEC */
	wr16_(image + 18, 62); /* x86-64 */
	wr32_(image + 20, 1);
	wr64_(image + 24, entry);
	wr64_(image + 32, 64); /* program headers right after */
	wr16_(image + 52, 64);
	wr16_(image + 54, 56);
	wr16_(image + 56, 2);
	phdr(image + 64, 0x1000, 0xffffffff81000000ULL, text_paddr, 0x1000, 0x4000);
	phdr(image + 64 + 56, 0x2000, 0, text_paddr + 0x4000, 0x1000, 0x1000);
	for (size_t i = 0x1000; i < image_len; i++)
		image[i] = (uint8_t)(i * 13 + 1);
}

Test(linux_boot, a_vmlinux_is_loaded_at_its_physical_addresses_with_a_made_header, .fini = fini)
{
	struct gmem m;
	struct lx_image li;
	char err[256];
	uint64_t initrd;

	make_vmlinux(16 * MiB_, 16 * MiB_);
	cr_assert(lx_probe(image, image_len));
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), 0, "%s", err);
	cr_assert(li.elf);
	cr_assert_eq(li.entry, 16 * MiB_);
	cr_assert_eq(li.nr_segs, 2);
	cr_assert_eq(li.load_end, 16 * MiB_ + 0x5000);
	cr_assert_eq(gmem_init(&m, 64 * MiB_, GMEM_ANON), 0);
	cr_assert_eq(lx_initrd_place(&m, &li, 8192, &initrd), 0);
	cr_assert_geq(initrd, li.load_end, "the initramfs overlaps the kernel");
	/* memory the kernel's bss will use holds garbage before */
	memset(gmem_ptr(&m, 16 * MiB_, 0x5000), 0xee, 0x5000);
	cr_assert_eq(lx_setup(&m, image, &li, "console=ttyS0", initrd, 8192, 1, err, sizeof(err)), 0,
		     "%s", err);
	const uint8_t *k = gmem_ptr(&m, 16 * MiB_, 0x5000);
	cr_assert_eq(memcmp(k, image + 0x1000, 0x1000), 0, "text not at its physical address");
	for (size_t i = 0x1000; i < 0x4000; i++)
		cr_assert_eq(k[i], 0, "bss byte %zu not zero", i);
	cr_assert_eq(memcmp(k + 0x4000, image + 0x2000, 0x1000), 0, "per-CPU segment misplaced");
	const uint8_t *zp = gmem_ptr(&m, LX_ZERO_PAGE, 4096);
	cr_assert_eq(zp[0x1fe], 0x55);
	cr_assert_eq(zp[0x1ff], 0xaa);
	cr_assert_eq(memcmp(zp + 0x202, "HdrS", 4), 0);
	cr_assert_eq(zp[LX_VERSION] | zp[LX_VERSION + 1] << 8, LX_ELF_PROTOCOL);
	cr_assert_eq(zp[LX_XLOADFLAGS] & LX_XLF_KERNEL_64, LX_XLF_KERNEL_64);
	cr_assert_eq(zp[LX_TYPE_OF_LOADER], 0xff);
	cr_assert_eq(lx_rd32(zp + LX_CMD_LINE_PTR), LX_CMDLINE);
	cr_assert_eq(lx_rd32(zp + LX_RAMDISK_IMAGE), initrd);
	cr_assert_eq(lx_rd32(zp + LX_RAMDISK_SIZE), 8192);
	cr_assert_eq(zp[LX_E820_ENTRIES], 3);
	gmem_fini(&m);
}

Test(linux_boot, a_vmlinux_that_cannot_be_booted_is_refused, .fini = fini)
{
	struct lx_image li;
	char err[256];

	/* entry outside every segment */
	make_vmlinux(0x400000, 16 * MiB_);
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), -ENOEXEC);
	cr_assert(strstr(err, "entry"), "%s", err);
	fini();
	/* loaded below 1 MiB, over the zero page and tables */
	make_vmlinux(0x10000, 0x10000);
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), -ENOEXEC);
	cr_assert(strstr(err, "between 1 MiB and 4 GiB"), "%s", err);
	fini();
	/* truncated: the second segment's bytes are missing */
	make_vmlinux(16 * MiB_, 16 * MiB_);
	cr_assert_eq(lx_parse(image, 0x2800, &li, err, sizeof(err)), -ENOEXEC);
	cr_assert(strstr(err, "outside the file"), "%s", err);
	/* a guest that needs more memory than the VM has */
	struct gmem m;
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0); /* the kernel loads at 16 MiB */
	cr_assert_eq(lx_setup(&m, image, &li, "", 0, 0, 1, err, sizeof(err)), -E2BIG);
	cr_assert(strstr(err, "the guest has less"), "%s", err);
	gmem_fini(&m);
}

/* A function guest (a static ELF in the lower half) is not a kernel: the
 * function-guest loader keeps it. */
Test(linux_boot, a_user_space_elf_is_not_taken_for_a_kernel, .fini = fini)
{
	make_vmlinux(16 * MiB_, 16 * MiB_);
	wr64_(image + 64 + 16, 0x400000); /* text linked at 4 MiB, user space */
	cr_assert_not(lx_probe(image, image_len));
}

/* ------------------------------------------------------------ identity page */

#define ID_GPA ((uint64_t)FORKVM_IDENTITY_LINUX_GPA)

Test(linux_identity, the_page_is_e820_reserved_and_clear_of_the_firmware, .fini = fini)
{
	struct gmem m;
	struct lx_image li;
	char err[256];
	uint64_t rsdp;

	make_image(0x020f, LX_XLF_KERNEL_64, 8192);
	cr_assert_eq(lx_parse(image, image_len, &li, err, sizeof(err)), 0);
	cr_assert_eq(gmem_init(&m, 64 * MiB_, GMEM_ANON), 0);
	cr_assert_eq(lx_setup(&m, image, &li, "console=ttyS0", 0, 0, 2, err, sizeof(err)), 0, "%s",
		     err);
	struct lx_acpi a = { .nr_vcpus = 2, .vmgenid = LX_VMGENID, .ged_gsi = LX_GED_GSI };
	cr_assert_eq(lx_acpi_write(&m, &a, &rsdp, err, sizeof(err)), 0, "%s", err);
	memset(gmem_ptr(&m, LX_VMGENID, 16), 0xa5, 16);
	/* everything from the ACPI tables to the reset vector, before */
	uint8_t *before = malloc(LX_EBDA_END - LX_ACPI_BASE);
	cr_assert(before);
	memcpy(before, gmem_ptr(&m, LX_ACPI_BASE, LX_EBDA_END - LX_ACPI_BASE),
	       LX_EBDA_END - LX_ACPI_BASE);

	cr_assert_eq(idpage_write(&m, ID_GPA, false), 0);

	/* the one e820 entry holding the page is reserved, not RAM: the kernel
	 * never allocates it, and /dev/mem (STRICT_DEVMEM) lets root read it */
	const uint8_t *zp = gmem_ptr(&m, LX_ZERO_PAGE, 4096);
	unsigned holders = 0;
	for (unsigned i = 0; i < zp[LX_E820_ENTRIES]; i++) {
		const uint8_t *e = zp + LX_E820_TABLE + 20 * i;
		uint64_t at = lx_rd64(e), end = at + lx_rd64(e + 8);
		if (end <= ID_GPA || at >= ID_GPA + 4096)
			continue;
		holders++;
		cr_assert_leq(at, ID_GPA);
		cr_assert_geq(end, ID_GPA + 4096, "the page is inside one entry");
		cr_assert_eq(lx_rd32(e + 16), LX_E820_RESERVED);
	}
	cr_assert_eq(holders, 1);
	cr_assert_lt(ID_GPA, 1 * MiB_, "STRICT_DEVMEM allows reserved pages below 1 MiB only");
	/* the page changed nothing else below 1 MiB: tables, generation ID,
	 * reset vector */
	const uint8_t *after = gmem_ptr(&m, LX_ACPI_BASE, LX_EBDA_END - LX_ACPI_BASE);
	for (uint64_t o = 0; o < LX_EBDA_END - LX_ACPI_BASE; o++) {
		uint64_t gpa = LX_ACPI_BASE + o;
		if (gpa >= ID_GPA && gpa < ID_GPA + sizeof(struct forkvm_identity))
			continue;
		cr_assert_eq(after[o], before[o], "byte 0x%llx changed", (unsigned long long)gpa);
	}
	free(before);
	const struct forkvm_identity *id = gmem_ptr(&m, ID_GPA, sizeof(*id));
	static const uint8_t zero[32];
	cr_assert_eq(id->magic, FORKVM_IDENTITY_MAGIC);
	cr_assert_eq(id->version, FORKVM_IDENTITY_VERSION);
	cr_assert_eq(id->size, sizeof(*id));
	cr_assert_eq(id->generation, 0);
	cr_assert_eq(id->restored_realtime_ns, 0);
	cr_assert_neq(memcmp(id->random, zero, 32), 0);
	cr_assert_eq(id->clone_id[0], '\0');
	cr_assert_eq(idpage_generation(&m, ID_GPA), 0);
	/* not guest memory: refused, nothing written */
	cr_assert_eq(idpage_write(&m, 64 * MiB_, false), -EFAULT);
	cr_assert_eq(idpage_set_clone(&m, 64 * MiB_, "x"), -EFAULT);
	cr_assert_eq(idpage_generation(&m, 64 * MiB_), 0);
	gmem_fini(&m);
}

/* The Linux loader's restore and clone hooks on guest memory: a VM built
 * without KVM (a function guest's, whose RAM also starts at 0) stands in
 * for the machine, whose own load needs KVM. */
Test(linux_identity, restores_bump_the_generation_and_clones_get_their_id)
{
	struct ut_vm_opts o = { .payload = "hello" };
	struct vm *vm;
	char err[256];

	cr_assert_eq(ut_vm_create(&o, err, sizeof(err), &vm), 0, "%s", err);
	const struct vm_loader *lx = vm_loader_by_name("linux");
	cr_assert_not_null(lx);
	cr_assert_not_null(lx->set_identity, "Linux guests have an identity to set");
	cr_assert_eq(idpage_write(&vm->mem, ID_GPA, false), 0, "what lx_load writes at boot");
	struct forkvm_identity *id = gmem_ptr(&vm->mem, ID_GPA, sizeof(*id)), before;
	uint8_t genid[16];
	memcpy(genid, gmem_ptr(&vm->mem, LX_VMGENID, 16), 16);

	for (uint64_t gen = 1; gen <= 3; gen++) {
		before = *id;
		uint64_t t0 = time_real_ns();
		cr_assert_eq(lx->restore_finish(vm, err, sizeof(err)), 0, "%s", err);
		uint64_t t1 = time_real_ns();
		cr_assert_eq(id->magic, FORKVM_IDENTITY_MAGIC);
		cr_assert_eq(id->generation, gen, "each restore increments it");
		cr_assert_geq(id->restored_realtime_ns, t0);
		cr_assert_leq(id->restored_realtime_ns, t1);
		cr_assert_neq(memcmp(id->random, before.random, 32), 0, "random is refreshed");
		cr_assert_neq(memcmp(gmem_ptr(&vm->mem, LX_VMGENID, 16), genid, 16), 0,
			      "and the VM generation ID");
		memcpy(genid, gmem_ptr(&vm->mem, LX_VMGENID, 16), 16);
	}

	before = *id;
	cr_assert_eq(lx->set_identity(vm, "9e3b5f0c1a7d"), 0);
	cr_assert_str_eq(id->clone_id, "9e3b5f0c1a7d");
	cr_assert_eq(id->generation, 3, "a clone id leaves the generation alone");
	cr_assert_neq(memcmp(id->random, before.random, 32), 0);
	cr_assert_geq(id->restored_realtime_ns, before.restored_realtime_ns);
	/* the next restore keeps the id; a longer one is cut to 63 bytes */
	cr_assert_eq(lx->restore_finish(vm, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(id->generation, 4);
	cr_assert_str_eq(id->clone_id, "9e3b5f0c1a7d");
	char longid[100];
	memset(longid, 'c', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	cr_assert_eq(lx->set_identity(vm, longid), 0);
	cr_assert_eq(strlen(id->clone_id), 63);
	cr_assert_eq(lx->set_identity(vm, ""), 0);
	cr_assert_str_eq(id->clone_id, "");

	/* a guest that scribbled over the page starts again at 1 */
	id->magic = 0;
	id->generation = 1000;
	cr_assert_eq(lx->restore_finish(vm, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(id->magic, FORKVM_IDENTITY_MAGIC);
	cr_assert_eq(id->generation, 1);
	vm_destroy(vm);
}
