/* vmm/linux/boot.c - the Linux x86 boot protocol: bzImage parsing, the
 * zero page, the e820 map, the initramfs's place and the MP tables. Pure
 * functions on guest memory (see linux.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "vmm/linux/bytes.h"
#include "vmm/linux/linux.h"

static bool bz_probe(const uint8_t *image, size_t len)
{
	return len >= 0x250 && lx_rd16(image + LX_BOOT_FLAG) == 0xaa55 &&
	       memcmp(image + LX_HEADER, "HdrS", 4) == 0;
}

/* ------------------------------------------------------------ vmlinux */

/* ELF64 fields we read (offsets in the file header and a program header). */
#define EH_TYPE 16
#define EH_MACHINE 18
#define EH_ENTRY 24
#define EH_PHOFF 32
#define EH_PHENTSIZE 54
#define EH_PHNUM 56
#define EH_SIZE 64
#define PH_SIZE 56
#define PT_LOAD_ 1
#define ET_EXEC_ 2
#define EM_X86_64_ 62
#define KERNEL_HALF 0xffff800000000000ULL

/* The program header i of an ELF image whose header was checked. */
static const uint8_t *elf_ph(const uint8_t *image, unsigned i)
{
	return image + lx_rd64(image + EH_PHOFF) + (uint64_t)i * PH_SIZE;
}

/* ELF64, little-endian, x86-64, an executable, program headers in the file. */
static bool elf_header_ok(const uint8_t *image, size_t len)
{
	if (len < EH_SIZE || memcmp(image, "\x7f" "ELF", 4) || image[4] != 2 || image[5] != 1 ||
	    lx_rd16(image + EH_TYPE) != ET_EXEC_ || lx_rd16(image + EH_MACHINE) != EM_X86_64_ ||
	    lx_rd16(image + EH_PHENTSIZE) != PH_SIZE)
		return false;
	uint64_t off = lx_rd64(image + EH_PHOFF), n = lx_rd16(image + EH_PHNUM);
	return n > 0 && off <= len && n * PH_SIZE <= len - off;
}

static bool elf_probe(const uint8_t *image, size_t len)
{
	if (!elf_header_ok(image, len))
		return false;
	for (unsigned i = 0; i < lx_rd16(image + EH_PHNUM); i++) {
		const uint8_t *ph = elf_ph(image, i);
		if (lx_rd32(ph) == PT_LOAD_ && lx_rd64(ph + 16) >= KERNEL_HALF)
			return true;
	}
	return false;
}

static int elf_parse(const uint8_t *image, size_t len, struct lx_image *li, char *err,
		     size_t errlen)
{
	uint64_t lo = UINT64_MAX, hi = 0;
	bool entry_in = false;

	li->elf = true;
	li->version = LX_ELF_PROTOCOL;
	li->cmdline_size = LX_ELF_CMDLINE_SIZE;
	li->initrd_addr_max = LX_ELF_INITRD_ADDR_MAX;
	li->entry = lx_rd64(image + EH_ENTRY);
	for (unsigned i = 0; i < lx_rd16(image + EH_PHNUM); i++) {
		const uint8_t *ph = elf_ph(image, i);
		if (lx_rd32(ph) != PT_LOAD_)
			continue;
		uint64_t off = lx_rd64(ph + 8), paddr = lx_rd64(ph + 24), filesz = lx_rd64(ph + 32),
			 memsz = lx_rd64(ph + 40);
		if (li->nr_segs == LX_ELF_MAX_SEGMENTS)
			return err_fail(err, errlen, -ENOEXEC, "vmlinux: more than %d loadable segments",
				    LX_ELF_MAX_SEGMENTS);
		if (filesz > memsz || off > len || filesz > len - off)
			return err_fail(err, errlen, -ENOEXEC,
				    "vmlinux: segment %u lies outside the file (truncated?)", i);
		if (paddr < LX_EBDA_END || paddr >= 1ULL << 32 || memsz > (1ULL << 32) - paddr)
			return err_fail(
			    err, errlen, -ENOEXEC,
			    "vmlinux: segment %u at physical 0x%llx (+%llu bytes) is not between 1 MiB "
			    "and 4 GiB",
			    i, (unsigned long long)paddr, (unsigned long long)memsz);
		li->segs[li->nr_segs].paddr = paddr;
		li->segs[li->nr_segs].memsz = memsz;
		li->segs[li->nr_segs].filesz = filesz;
		li->segs[li->nr_segs].offset = off;
		li->nr_segs++;
		lo = MIN(lo, paddr);
		hi = MAX(hi, paddr + memsz);
		if (li->entry >= paddr && li->entry < paddr + filesz)
			entry_in = true;
	}
	if (!li->nr_segs)
		return err_fail(err, errlen, -ENOEXEC, "vmlinux: no loadable segment");
	if (!entry_in)
		return err_fail(err, errlen, -ENOEXEC,
			    "vmlinux: its entry 0x%llx is in none of its segments (a 64-bit kernel's "
			    "e_entry is startup_64's physical address)",
			    (unsigned long long)li->entry);
	li->load_end = hi;
	li->init_size = (uint32_t)(hi - lo);
	li->kernel_len = (size_t)(hi - lo);
	return 0;
}

/* ------------------------------------------------------------ bzImage */

bool lx_probe(const uint8_t *image, size_t len)
{
	return bz_probe(image, len) || elf_probe(image, len);
}

int lx_parse(const uint8_t *image, size_t len, struct lx_image *out, char *err, size_t errlen)
{
	struct lx_image li = {0};

	if (elf_probe(image, len)) {
		int rc = elf_parse(image, len, &li, err, errlen);
		if (rc == 0)
			*out = li;
		return rc;
	}
	if (!bz_probe(image, len))
		return err_fail(err, errlen, -ENOEXEC,
			    "not a Linux kernel: no bzImage (boot sector flag and \"HdrS\" header) and no "
			    "x86-64 vmlinux ELF");
	li.version = lx_rd16(image + LX_VERSION);
	/* 2.12: xloadflags, the 64-bit entry point (Linux 3.8 on). */
	if (li.version < 0x20c)
		return err_fail(
		    err, errlen, -ENOEXEC,
		    "boot protocol %u.%02u is too old: forkvm needs 2.12 or later (Linux 3.8)",
		    li.version >> 8, li.version & 0xff);
	if (!(lx_rd16(image + LX_XLOADFLAGS) & LX_XLF_KERNEL_64))
		return err_fail(err, errlen, -ENOEXEC,
			    "the kernel has no 64-bit entry point (a 32-bit kernel?): forkvm boots "
			    "x86-64 kernels only");
	unsigned sects = image[LX_SETUP_SECTS] ? image[LX_SETUP_SECTS] : 4;
	li.setup_len = ((size_t)sects + 1) * 512;
	/* The setup header ends where the jump at 0x200 lands. */
	size_t hdr_end = 0x202 + (size_t)image[0x201];
	if (li.setup_len >= len || hdr_end > li.setup_len || hdr_end < LX_INIT_SIZE + 4)
		return err_fail(err, errlen, -ENOEXEC,
			    "bzImage truncated or malformed: setup of %zu bytes in a file of %zu",
			    li.setup_len, len);
	li.kernel_off = li.setup_len;
	li.kernel_len = len - li.setup_len;
	li.init_size = lx_rd32(image + LX_INIT_SIZE);
	li.initrd_addr_max = lx_rd32(image + LX_INITRD_ADDR_MAX);
	li.cmdline_size = lx_rd32(image + LX_CMDLINE_SIZE);
	if (li.init_size < li.kernel_len)
		li.init_size = (uint32_t)MIN(li.kernel_len, (size_t)UINT32_MAX);
	li.entry = LX_KERNEL + 0x200; /* startup_64 */
	li.load_end = LX_KERNEL + li.init_size;
	*out = li;
	return 0;
}

/* e820 entry i of the zero page zp. */
static void e820_set(uint8_t *zp, unsigned i, uint64_t addr, uint64_t size, uint32_t type)
{
	uint8_t *e = zp + LX_E820_TABLE + 20 * i;
	lx_wr64(e, addr);
	lx_wr64(e + 8, size);
	lx_wr32(e + 16, type);
}

/* The e820 map: low RAM below the EBDA, the EBDA and BIOS area reserved,
 * then each RAM region (the MMIO hole between them stays unlisted). */
static unsigned e820_fill(const struct gmem *m, uint8_t *zp)
{
	unsigned n = 0;

	e820_set(zp, n++, 0, LX_MPTABLE, LX_E820_RAM);
	e820_set(zp, n++, LX_MPTABLE, LX_EBDA_END - LX_MPTABLE, LX_E820_RESERVED);
	for (unsigned i = 0; i < m->nr_regions && n < LX_E820_MAX; i++) {
		uint64_t a = m->regions[i].gpa, end = a + m->regions[i].size;
		if (a < LX_EBDA_END)
			a = LX_EBDA_END;
		if (a < end)
			e820_set(zp, n++, a, end - a, LX_E820_RAM);
	}
	return n;
}

int lx_initrd_place(const struct gmem *m, const struct lx_image *li, uint64_t len, uint64_t *gpa)
{
	uint64_t max = li->initrd_addr_max ? (uint64_t)li->initrd_addr_max + 1 : 0x38000000ULL;
	uint64_t lowest = align_up(li->load_end, GMEM_PAGE_SIZE);

	if (max > 1ULL << 32)
		max = 1ULL << 32;
	/* The highest RAM region that reaches below max. */
	for (unsigned i = m->nr_regions; i-- > 0;) {
		uint64_t a = m->regions[i].gpa, end = a + m->regions[i].size;
		if (end > max)
			end = max;
		if (end <= a || len > end - a)
			continue;
		uint64_t at = (end - len) & ~(GMEM_PAGE_SIZE - 1);
		if (at < a || at < lowest)
			continue;
		*gpa = at;
		return 0;
	}
	return -E2BIG;
}

/* Copies a vmlinux's segments to their physical addresses, zeroing what
 * the file does not hold (bss). */
static int elf_copy(struct gmem *m, const uint8_t *image, const struct lx_image *li, char *err,
		    size_t errlen)
{
	for (unsigned i = 0; i < li->nr_segs; i++) {
		uint8_t *dst = gmem_ptr(m, li->segs[i].paddr, li->segs[i].memsz);
		if (!dst)
			return err_fail(err, errlen, -E2BIG,
				    "the kernel needs memory up to %llu MiB; the guest has less",
				    (unsigned long long)((li->load_end + (1 << 20) - 1) >> 20));
		memcpy(dst, image + li->segs[i].offset, li->segs[i].filesz);
		memset(dst + li->segs[i].filesz, 0, li->segs[i].memsz - li->segs[i].filesz);
	}
	return 0;
}

int lx_setup(struct gmem *m, const uint8_t *image, const struct lx_image *li, const char *cmdline,
	     uint64_t initrd_gpa, uint64_t initrd_len, unsigned nr_vcpus, char *err, size_t errlen)
{
	uint8_t *zp = gmem_ptr(m, LX_ZERO_PAGE, GMEM_PAGE_SIZE);
	size_t cl = cmdline ? strlen(cmdline) : 0;
	int rc;

	if (!zp)
		return err_fail(err, errlen, -EFAULT, "guest memory has no room for the zero page");
	if (li->cmdline_size && cl > li->cmdline_size)
		return err_fail(err, errlen, -E2BIG,
			    "kernel command line of %zu bytes; this kernel takes at most %u", cl,
			    li->cmdline_size);
	if (cl >= LX_CMDLINE_MAX)
		return err_fail(err, errlen, -E2BIG, "kernel command line of %zu bytes is too long",
			    cl);
	if (li->elf) {
		if ((rc = elf_copy(m, image, li, err, errlen)) < 0)
			return rc;
	} else {
		uint8_t *k = gmem_ptr(m, LX_KERNEL, li->init_size);
		if (!k)
			return err_fail(err, errlen, -E2BIG,
				    "the kernel needs %u MiB from 1 MiB on; the guest has less memory",
				    (unsigned)(li->init_size >> 20) + 1);
		memcpy(k, image + li->kernel_off, li->kernel_len);
	}
	if ((rc = gmem_write(m, LX_CMDLINE, cmdline ? cmdline : "", cl + 1)) < 0)
		return err_fail(err, errlen, rc, "cannot write the command line: %s", strerror(-rc));

	/* The zero page: zeroes, then the image's setup header as is (a
	 * vmlinux has none: the fields the 64-bit entry reads are made
	 * here), then what the boot loader fills in. */
	memset(zp, 0, GMEM_PAGE_SIZE);
	if (li->elf) {
		lx_wr16(zp + LX_BOOT_FLAG, 0xaa55);
		memcpy(zp + LX_HEADER, "HdrS", 4);
		lx_wr16(zp + LX_VERSION, li->version);
		lx_wr32(zp + LX_INITRD_ADDR_MAX, li->initrd_addr_max);
		lx_wr32(zp + LX_CMDLINE_SIZE, li->cmdline_size);
		lx_wr16(zp + LX_XLOADFLAGS, LX_XLF_KERNEL_64);
		lx_wr32(zp + LX_INIT_SIZE, li->init_size);
	} else {
		size_t hdr_end = 0x202 + (size_t)image[0x201];
		memcpy(zp + LX_SETUP_SECTS, image + LX_SETUP_SECTS, hdr_end - LX_SETUP_SECTS);
	}
	zp[LX_TYPE_OF_LOADER] = 0xff; /* undefined loader */
	zp[LX_LOADFLAGS] |= LX_LOADED_HIGH | LX_CAN_USE_HEAP;
	lx_wr16(zp + LX_HEAP_END_PTR, 0xfe00);
	lx_wr32(zp + LX_CMD_LINE_PTR, (uint32_t)LX_CMDLINE);
	lx_wr32(zp + LX_RAMDISK_IMAGE, (uint32_t)initrd_gpa);
	lx_wr32(zp + LX_RAMDISK_SIZE, (uint32_t)initrd_len);
	zp[LX_E820_ENTRIES] = (uint8_t)e820_fill(m, zp);
	/* There is no BIOS. A hardware-reduced ACPI kernel reboots through
	 * EFI, and without EFI through the BIOS: it jumps to the reset vector
	 * in real mode (machine_real_restart). There it finds a reset
	 * through the i8042, which ends the VM as `reboot=k` would:
	 * mov al, 0xfe; out 0x64, al; hlt; jmp $-1. */
	static const uint8_t reset_stub[] = { 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd };
	if ((rc = gmem_write(m, LX_RESET_VECTOR, reset_stub, sizeof(reset_stub))) < 0)
		return err_fail(err, errlen, rc, "cannot write the reset vector: %s", strerror(-rc));
	if ((rc = lx_write_mptable(m, nr_vcpus)) < 0)
		return err_fail(err, errlen, rc, "cannot write the MP table for %u vCPUs: %s", nr_vcpus,
			    strerror(-rc));
	return 0;
}

/* ------------------------------------------------------------ MP tables */

/* Intel MultiProcessor Specification 1.4, chapter 4. */
#define MP_CPU_ENTRY 20
#define MP_SMALL_ENTRY 8
#define MP_HDR 44
#define MP_APIC_VERSION 0x14
#define MP_IOAPIC_VERSION 0x11
#define MP_LAPIC_ADDR 0xfee00000U
#define MP_IOAPIC_ADDR 0xfec00000U
#define MP_ISA_IRQS 16

int lx_write_mptable(struct gmem *m, unsigned nr_vcpus)
{
	size_t entries = (size_t)nr_vcpus + 1 + 1 + MP_ISA_IRQS + 2;
	size_t table_len =
	    MP_HDR + (size_t)nr_vcpus * MP_CPU_ENTRY + (1 + 1 + MP_ISA_IRQS + 2) * MP_SMALL_ENTRY;
	uint64_t cfg_gpa = LX_MPTABLE + 16;
	uint8_t *fp, *t, *e;
	unsigned ioapic_id = nr_vcpus;

	if (nr_vcpus < 1 || nr_vcpus > 254 || cfg_gpa + table_len > LX_EBDA_END)
		return -E2BIG;
	fp = gmem_ptr(m, LX_MPTABLE, 16 + table_len);
	if (!fp)
		return -EFAULT;
	memset(fp, 0, 16 + table_len);
	/* The floating pointer: the kernel finds it in the EBDA's first KiB. */
	memcpy(fp, "_MP_", 4);
	lx_wr32(fp + 4, (uint32_t)cfg_gpa);
	fp[8] = 1; /* length in 16-byte units */
	fp[9] = 4; /* spec revision 1.4 */
	fp[10] = lx_checksum(fp, 16);

	t = fp + 16;
	memcpy(t, "PCMP", 4);
	lx_wr16(t + 4, (uint16_t)table_len);
	t[6] = 4;
	memcpy(t + 8, "FORKVM  ", 8);
	memcpy(t + 16, "LINUX GUEST ", 12);
	lx_wr16(t + 34, (uint16_t)entries);
	lx_wr32(t + 36, MP_LAPIC_ADDR);
	e = t + MP_HDR;
	for (unsigned i = 0; i < nr_vcpus; i++, e += MP_CPU_ENTRY) {
		e[0] = 0; /* processor */
		e[1] = (uint8_t)i;
		e[2] = MP_APIC_VERSION;
		e[3] = (uint8_t)(1 | (i == 0 ? 2 : 0)); /* enabled; BSP */
		lx_wr32(e + 4, 0x600);			/* family 6 */
		lx_wr32(e + 8, 0x201);			/* FPU, APIC */
	}
	e[0] = 1; /* bus 0: ISA */
	memcpy(e + 2, "ISA   ", 6);
	e += MP_SMALL_ENTRY;
	e[0] = 2; /* the IOAPIC */
	e[1] = (uint8_t)ioapic_id;
	e[2] = MP_IOAPIC_VERSION;
	e[3] = 1; /* enabled */
	lx_wr32(e + 4, MP_IOAPIC_ADDR);
	e += MP_SMALL_ENTRY;
	for (unsigned irq = 0; irq < MP_ISA_IRQS; irq++, e += MP_SMALL_ENTRY) {
		e[0] = 3; /* I/O interrupt: INT, conforming polarity and trigger */
		e[4] = 0; /* ISA */
		e[5] = (uint8_t)irq;
		e[6] = (uint8_t)ioapic_id;
		e[7] = (uint8_t)irq;
	}
	for (unsigned lint = 0; lint < 2; lint++, e += MP_SMALL_ENTRY) {
		e[0] = 4;			/* local interrupt */
		e[1] = (uint8_t)(lint ? 1 : 3); /* NMI on LINT1, ExtINT on LINT0 */
		e[6] = 0xff;			/* every local APIC */
		e[7] = (uint8_t)lint;
	}
	t[7] = lx_checksum(t, table_len);
	return 0;
}
