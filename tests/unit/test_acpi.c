/* tests/unit/test_acpi.c - vmm/linux/acpi.c: the ACPI tables of a Linux
 * guest, read back from guest memory the way the kernel finds them (the
 * RSDP by scanning 0xe0000-0xfffff, then XSDT, FADT, MADT and DSDT), their
 * checksums and lengths, the DSDT's AML against bytes assembled here by
 * hand from the ACPI 6.5 specification, the refusals, and the AML
 * PkgLength encoding. No KVM needed. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/gmem.h"
#include "vmm/linux/acpi.h"
#include "vmm/linux/bytes.h"

#define MiB_ (1024ULL * 1024)

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

/* Two virtio devices, the VM generation ID at its usual place. */
static struct lx_acpi config(unsigned nr_vcpus)
{
	struct lx_acpi a = {
	    .nr_vcpus = nr_vcpus,
	    .nr_mmio = 2,
	    .mmio = {{0xd0000000, 0x200, 5}, {0xd0001000, 0x1000, 6}},
	    .vmgenid = LX_VMGENID,
	    .ged_gsi = 9,
	};
	return a;
}

/* The RSDP the way the kernel finds it: "RSD PTR " on a 16-byte boundary
 * in 0xe0000-0xfffff whose first 20 bytes sum to zero. */
static uint64_t scan_rsdp(const struct gmem *m)
{
	for (uint64_t a = 0xe0000; a < 0x100000; a += 16) {
		const uint8_t *p = gmem_ptr(m, a, 20);
		if (!memcmp(p, "RSD PTR ", 8) && sum(p, 20) == 0)
			return a;
	}
	return 0;
}

/* The table at gpa, checked: its signature, a length that stays inside
 * the tables' area, and a checksum that sums to zero. */
static const uint8_t *table(const struct gmem *m, uint64_t gpa, const char *sig)
{
	const uint8_t *t = gmem_ptr(m, gpa, 36);
	cr_assert(t, "table %s at 0x%llx is outside RAM", sig, (unsigned long long)gpa);
	cr_assert_eq(memcmp(t, sig, 4), 0, "expected %s at 0x%llx, found %.4s", sig,
		     (unsigned long long)gpa, (const char *)t);
	uint32_t len = lx_rd32(t + 4);
	cr_assert_geq(gpa, LX_ACPI_BASE);
	cr_assert_leq(gpa + len, LX_ACPI_END, "%s ends past LX_ACPI_END", sig);
	t = gmem_ptr(m, gpa, len);
	cr_assert_eq(sum(t, len), 0, "%s checksum", sig);
	cr_assert_eq(memcmp(t + 10, "FORKVM", 6), 0, "%s OEM id", sig);
	return t;
}

/* The XSDT's entry i (FADT first, then MADT). */
static uint64_t xsdt_entry(const struct gmem *m, uint64_t rsdp, unsigned i)
{
	const uint8_t *r = gmem_ptr(m, rsdp, 36);
	const uint8_t *x = table(m, lx_rd64(r + 24), "XSDT");
	cr_assert_eq(lx_rd32(x + 4), 36 + 2 * 8, "the XSDT lists FADT and MADT");
	return lx_rd64(x + 36 + 8 * i);
}

/* The DSDT of the tables at rsdp, and its length. */
static const uint8_t *dsdt(const struct gmem *m, uint64_t rsdp, uint32_t *len)
{
	const uint8_t *f = table(m, xsdt_entry(m, rsdp, 0), "FACP");
	const uint8_t *d = table(m, lx_rd64(f + 140), "DSDT");
	*len = lx_rd32(d + 4);
	return d;
}

static bool has(const uint8_t *hay, size_t n, const void *needle, size_t len)
{
	return memmem(hay, n, needle, len) != NULL;
}

/* RAM made by hand: low bytes from 0 (no more), and optionally a second
 * region at high_gpa; host must hold both. */
static void fake_gmem(struct gmem *m, uint8_t *host, uint64_t low, uint64_t high_gpa,
		      uint64_t high_len)
{
	memset(m, 0, sizeof(*m));
	m->host = host;
	m->fd = -1;
	m->backing = GMEM_ANON;
	m->nr_regions = 1;
	m->regions[0] = (struct gmem_region){.gpa = 0, .size = low, .offset = 0};
	m->size = m->gpa_end = low;
	if (high_len) {
		m->regions[1] =
		    (struct gmem_region){.gpa = high_gpa, .size = high_len, .offset = low};
		m->nr_regions = 2;
		m->size += high_len;
		m->gpa_end = high_gpa + high_len;
	}
}

Test(acpi, the_rsdp_is_found_by_scanning_and_every_table_checks_out)
{
	struct gmem m;
	struct lx_acpi a = config(2);
	uint64_t rsdp = 0;
	char err[256];

	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	memset(gmem_ptr(&m, LX_ACPI_BASE, 0x20000), 0xa5, 0x20000); /* stale bytes */
	cr_assert_eq(lx_acpi_write(&m, &a, &rsdp, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(rsdp, LX_ACPI_BASE);
	cr_assert_eq(scan_rsdp(&m), rsdp, "the kernel's scan finds another RSDP");
	const uint8_t *r = gmem_ptr(&m, rsdp, 36);
	cr_assert_eq(r[15], 2, "revision 2: the XSDT");
	cr_assert_eq(lx_rd32(r + 20), 36);
	cr_assert_eq(sum(r, 36), 0, "extended checksum");
	cr_assert_eq(memcmp(r + 9, "FORKVM", 6), 0);
	cr_assert_eq(lx_rd32(r + 16), 0, "no RSDT");
	uint64_t fadt = xsdt_entry(&m, rsdp, 0), madt = xsdt_entry(&m, rsdp, 1);
	table(&m, fadt, "FACP");
	table(&m, madt, "APIC");
	uint32_t len;
	const uint8_t *d = dsdt(&m, rsdp, &len);
	cr_assert_eq(d[8], 2, "DSDT revision 2: 64-bit integers");
	/* what the tables do not use is zero, up to LX_ACPI_END */
	const uint8_t *base = gmem_ptr(&m, LX_ACPI_BASE, 1);
	uint64_t end = (uint64_t)(d - base) + LX_ACPI_BASE + len;
	const uint8_t *rest = gmem_ptr(&m, end, LX_ACPI_END - end);
	for (uint64_t i = 0; i < LX_ACPI_END - end; i++)
		cr_assert_eq(rest[i], 0, "stale byte at 0x%llx", (unsigned long long)(end + i));
	/* the generation ID's page is the VMM's: untouched */
	cr_assert_eq(*(const uint8_t *)gmem_ptr(&m, LX_VMGENID, 1), 0xa5);
	gmem_fini(&m);
}

Test(acpi, the_fadt_is_hardware_reduced_and_points_at_the_dsdt)
{
	struct gmem m;
	struct lx_acpi a = config(1);
	uint64_t rsdp;
	char err[256];

	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	cr_assert_eq(lx_acpi_write(&m, &a, &rsdp, err, sizeof(err)), 0, "%s", err);
	uint64_t fadt = xsdt_entry(&m, rsdp, 0);
	const uint8_t *f = table(&m, fadt, "FACP");
	cr_assert_eq(lx_rd32(f + 4), 276, "revision 6 length");
	cr_assert_eq(f[8], 6);
	cr_assert_eq(f[131], 5, "minor version: ACPI 6.5");
	cr_assert_eq(lx_rd32(f + 112), 1u << 20 | 1u << 4 | 1u << 5,
		     "flags: HW_REDUCED_ACPI, PWR_BUTTON, SLP_BUTTON");
	uint16_t iapc = (uint16_t)(f[109] | f[110] << 8);
	cr_assert_eq(iapc, 1u << 1 | 1u << 2 | 1u << 3 | 1u << 5,
		     "IA-PC boot flags: 8042, no VGA, no MSI, no CMOS RTC");
	cr_assert_eq(f[46] | f[47] << 8, 0, "no SCI");
	cr_assert_eq(lx_rd32(f + 36), 0, "no FACS");
	uint64_t x_dsdt = lx_rd64(f + 140);
	cr_assert_eq(lx_rd32(f + 40), x_dsdt, "DSDT and X_DSDT agree");
	table(&m, x_dsdt, "DSDT");
	cr_assert_eq(memcmp(f + 268, "FORKVM", 6), 0, "hypervisor vendor id");
	gmem_fini(&m);
}

/* Walks the MADT of the tables at rsdp: n enabled local APICs with ids
 * 0..n-1 in order, then one IOAPIC with id n at 0xfec00000, GSI base 0. */
static void check_madt(const struct gmem *m, uint64_t rsdp, unsigned n)
{
	const uint8_t *t = table(m, xsdt_entry(m, rsdp, 1), "APIC");
	uint32_t len = lx_rd32(t + 4);
	unsigned cpus = 0, ioapics = 0;

	cr_assert_eq(len, 44 + 8 * n + 12);
	cr_assert_eq(lx_rd32(t + 36), 0xfee00000u);
	cr_assert_eq(lx_rd32(t + 40), 0, "flags: no PCAT_COMPAT");
	for (const uint8_t *e = t + 44; e < t + len; e += e[1]) {
		cr_assert_gt(e[1], 0);
		if (e[0] == 0) {
			cr_assert_eq(e[1], 8);
			cr_assert_eq(ioapics, 0, "local APICs first");
			cr_assert_eq(e[2], cpus, "processor UID");
			cr_assert_eq(e[3], cpus, "APIC id");
			cr_assert_eq(lx_rd32(e + 4), 1, "enabled");
			cpus++;
		} else {
			cr_assert_eq(e[0], 1, "unexpected MADT entry type %u", e[0]);
			cr_assert_eq(e[1], 12);
			cr_assert_eq(e[2], n, "the IOAPIC's id follows the CPUs'");
			cr_assert_eq(lx_rd32(e + 4), 0xfec00000u);
			cr_assert_eq(lx_rd32(e + 8), 0, "GSI base");
			ioapics++;
		}
	}
	cr_assert_eq(cpus, n);
	cr_assert_eq(ioapics, 1);
}

Test(acpi, the_madt_lists_each_vcpu_then_the_ioapic)
{
	struct gmem m;
	uint64_t rsdp;
	char err[256];

	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	unsigned counts[] = {1, 4, 254};
	for (unsigned i = 0; i < 3; i++) {
		struct lx_acpi a = config(counts[i]);
		cr_assert_eq(lx_acpi_write(&m, &a, &rsdp, err, sizeof(err)), 0, "%s", err);
		check_madt(&m, rsdp, counts[i]);
	}
	gmem_fini(&m);
}

/* Virtio device V000 (0xd0000000, 0x200 bytes, GSI 5, _UID 0) as ASL
 * compiles it, assembled by hand: Device (V000) { Name (_HID, "LNRO0005")
 * Name (_UID, Zero) Name (_CRS, ResourceTemplate () { Memory32Fixed
 * (ReadWrite, 0xD0000000, 0x200) Interrupt (ResourceConsumer, Edge,
 * ActiveHigh, Exclusive) {5} }) }. The EndTag's checksum goes last. */
/* clang-format off */
static const uint8_t v000[] = {
	0x5b, 0x82, 0x3a, 'V', '0', '0', '0',		/* Device, PkgLength 58 */
	0x08, '_', 'H', 'I', 'D',			/* Name _HID */
	0x0d, 'L', 'N', 'R', 'O', '0', '0', '0', '5', 0x00,
	0x08, '_', 'U', 'I', 'D', 0x00,			/* Name _UID Zero */
	0x08, '_', 'C', 'R', 'S',			/* Name _CRS */
	0x11, 0x1a, 0x0a, 0x17,				/* Buffer, PkgLength 26, size 23 */
	0x86, 0x09, 0x00, 0x01,				/* Memory32Fixed, read-write */
	0x00, 0x00, 0x00, 0xd0, 0x00, 0x02, 0x00, 0x00,
	0x89, 0x06, 0x00, 0x03, 0x01,			/* Interrupt: consumer, edge, 1 */
	0x05, 0x00, 0x00, 0x00,
	0x79, 0x00,					/* EndTag, checksum */
};
/* clang-format on */

Test(acpi, the_dsdt_describes_each_virtio_device)
{
	struct gmem m;
	struct lx_acpi a = config(1);
	uint64_t rsdp;
	uint32_t len;
	char err[256];
	uint8_t want[sizeof(v000)];

	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	a.vmgenid = 0;
	cr_assert_eq(lx_acpi_write(&m, &a, &rsdp, err, sizeof(err)), 0, "%s", err);
	const uint8_t *d = dsdt(&m, rsdp, &len);
	memcpy(want, v000, sizeof(want));
	/* the resource template: from the Memory32Fixed tag to the end */
	want[sizeof(want) - 1] = (uint8_t)(0x100 - sum(want + 37, sizeof(want) - 38));
	cr_assert(has(d, len, want, sizeof(want)), "V000 is not byte for byte the hand-made one");
	/* V001: _UID One, its window and GSI 6 */
	cr_assert(has(d, len, "V001\x08_HID\x0dLNRO0005", 19));
	cr_assert(has(d, len, "\x08_UID\x01", 6));
	/* clang-format off */
	const uint8_t v001_res[] = {0x86, 9, 0, 1, 0x00, 0x10, 0x00, 0xd0, 0x00, 0x10, 0, 0,
				    0x89, 6, 0, 3, 1, 6, 0, 0, 0, 0x79};
	/* clang-format on */
	cr_assert(has(d, len, v001_res, sizeof(v001_res)));
	/* COM1 and the i8042: EisaId PNP0501 and PNP0303, their ports and IRQs */
	/* clang-format off */
	const uint8_t com1[] = {'C', 'O', 'M', '1', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01};
	const uint8_t com1_res[] = {0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8,
				    0x89, 6, 0, 3, 1, 4, 0, 0, 0, 0x79};
	const uint8_t ps2[] = {'P', 'S', '2', '_', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x03, 0x03};
	const uint8_t ps2_res[] = {0x47, 1, 0x60, 0, 0x60, 0, 1, 1,
				   0x47, 1, 0x64, 0, 0x64, 0, 1, 1,
				   0x89, 6, 0, 3, 1, 1, 0, 0, 0, 0x79};
	/* clang-format on */
	cr_assert(has(d, len, com1, sizeof(com1)));
	cr_assert(has(d, len, com1_res, sizeof(com1_res)));
	cr_assert(has(d, len, ps2, sizeof(ps2)));
	cr_assert(has(d, len, ps2_res, sizeof(ps2_res)));
	/* no generation ID asked: neither VGEN nor GED0 */
	cr_assert_not(has(d, len, "VGEN", 4));
	cr_assert_not(has(d, len, "ACPI0013", 8));
	gmem_fini(&m);
}

/* Decodes the PkgLength at p. Returns its value, *n its size in bytes. */
static uint32_t pkglength(const uint8_t *p, unsigned *n)
{
	*n = 1 + (p[0] >> 6);
	if (*n == 1)
		return p[0] & 0x3f;
	uint32_t v = p[0] & 0xf;
	for (unsigned i = 1; i < *n; i++)
		v |= (uint32_t)p[i] << (4 + 8 * (i - 1));
	return v;
}

Test(acpi, the_scope_spans_the_whole_dsdt_with_a_multibyte_pkglength)
{
	struct gmem m;
	struct lx_acpi a = config(8);
	uint64_t rsdp;
	uint32_t len;
	unsigned n;
	char err[256];

	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	a.nr_mmio = LX_ACPI_MAX_MMIO;
	for (unsigned i = 0; i < LX_ACPI_MAX_MMIO; i++)
		a.mmio[i] = (struct lx_acpi_mmio){0xd0000000 + 0x1000ULL * i, 0x1000, 5 + i};
	a.ged_gsi = 20;
	cr_assert_eq(lx_acpi_write(&m, &a, &rsdp, err, sizeof(err)), 0, "%s", err);
	const uint8_t *d = dsdt(&m, rsdp, &len);
	cr_assert_eq(d[36], 0x10, "Scope");
	uint32_t scope = pkglength(d + 37, &n);
	cr_assert_eq(n, 2, "a DSDT this long needs 2 PkgLength bytes");
	cr_assert_eq(37 + scope, len, "the Scope ends where the DSDT does");
	cr_assert_eq(memcmp(d + 37 + n, "\\_SB_", 5), 0);
	cr_assert(has(d, len, "V007\x08_HID", 9));
	gmem_fini(&m);
}

Test(acpi, the_vm_generation_id_device_and_its_event_device)
{
	struct gmem m;
	struct lx_acpi a = config(2);
	uint64_t rsdp;
	uint32_t len;
	char err[256];

	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	cr_assert_eq(lx_acpi_write(&m, &a, &rsdp, err, sizeof(err)), 0, "%s", err);
	const uint8_t *d = dsdt(&m, rsdp, &len);
	/* the ids Linux's vmgenid driver matches ("VMGENCTR"; and the _CID,
	 * which ACPICA upper-cases to "VM_GEN_COUNTER") */
	cr_assert(has(d, len, "VGEN\x08_HID\x0dVMGENCTR", 19));
	cr_assert(has(d, len, "\x08_CID\x0dVM_Gen_Counter", 21));
	cr_assert(has(d, len, "\x08_DDN\x0dVM_Gen_Counter", 21));
	/* Name (ADDR, Package (2) {0xEF000, Zero}) */
	/* clang-format off */
	const uint8_t addr[] = {0x08, 'A', 'D', 'D', 'R', 0x12, 0x08, 0x02,
				0x0c, 0x00, 0xf0, 0x0e, 0x00 /* 0xef000 */, 0x00 /* Zero */};
	/* clang-format on */
	cr_assert(has(d, len, addr, sizeof(addr)));
	/* GED0: ACPI0013, _UID Zero, Interrupt {9}, and
	 * Method (_EVT, 1) { If (LEqual (Arg0, 9)) { Notify (\_SB.VGEN, 0x80) } } */
	cr_assert(has(d, len,
		      "GED0\x08_HID\x0d"
		      "ACPI0013",
		      19));
	const uint8_t ged_res[] = {0x89, 6, 0, 3, 1, 9, 0, 0, 0, 0x79};
	cr_assert(has(d, len, ged_res, sizeof(ged_res)));
	/* clang-format off */
	const uint8_t evt[] = {0x14, 0x19, '_', 'E', 'V', 'T', 0x01,	/* Method, PkgLength 25, 1 arg */
			       0xa0, 0x12, 0x93, 0x68, 0x0a, 0x09,	/* If, PkgLength 18, LEqual (Arg0, 9) */
			       0x86, 0x5c, 0x2e, '_', 'S', 'B', '_',	/* Notify \_SB.VGEN */
			       'V', 'G', 'E', 'N', 0x0a, 0x80};		/* 0x80 */
	/* clang-format on */
	cr_assert(has(d, len, evt, sizeof(evt)));
	gmem_fini(&m);
}

Test(acpi, a_generation_id_above_4_gib_is_split_into_two_dwords)
{
	const uint64_t low = 1 * MiB_, high = 4096;
	uint8_t *host = calloc(1, low + high);
	struct gmem m;
	struct lx_acpi a = config(1);
	uint64_t rsdp;
	uint32_t len;
	char err[256];

	cr_assert(host);
	fake_gmem(&m, host, low, 0x100000000ULL, high);
	a.vmgenid = 0x100000010ULL;
	cr_assert_eq(lx_acpi_write(&m, &a, &rsdp, err, sizeof(err)), 0, "%s", err);
	const uint8_t *d = dsdt(&m, rsdp, &len);
	/* Package (2) {0x10, One} */
	cr_assert(has(d, len, "ADDR\x12\x05\x02\x0a\x10\x01", 10));
	free(host);
}

/* Expects lx_acpi_write to refuse a with rc and a message holding what. */
static void refused(struct gmem *m, const struct lx_acpi *a, int rc, const char *what)
{
	char err[256] = "";
	uint64_t rsdp = 0;

	cr_assert_eq(lx_acpi_write(m, a, &rsdp, err, sizeof(err)), rc, "%s", err);
	cr_assert(strstr(err, what), "\"%s\" lacks \"%s\"", err, what);
}

Test(acpi, bad_descriptions_are_refused)
{
	struct gmem m;
	struct lx_acpi a;

	cr_assert_eq(gmem_init(&m, 16 * MiB_, GMEM_ANON), 0);
	a = config(0);
	refused(&m, &a, -EINVAL, "0 vCPUs");
	a = config(255);
	refused(&m, &a, -EINVAL, "255 vCPUs");
	a = config(1);
	a.nr_mmio = LX_ACPI_MAX_MMIO + 1;
	refused(&m, &a, -EINVAL, "9 virtio-mmio devices");
	a = config(1);
	a.mmio[1].gsi = 24;
	refused(&m, &a, -EINVAL, "GSI 24");
	a = config(1);
	a.ged_gsi = 24;
	refused(&m, &a, -EINVAL, "GSI 24");
	a = config(1);
	a.mmio[0].gsi = 4; /* COM1's */
	refused(&m, &a, -EINVAL, "GSI 4, which another device uses");
	a = config(1);
	a.ged_gsi = 6; /* V001's */
	refused(&m, &a, -EINVAL, "GSI 6, which another device uses");
	a = config(1);
	a.mmio[0].base = 0xfffff000;
	a.mmio[0].len = 0x2000;
	refused(&m, &a, -EINVAL, "not below 4 GiB");
	a = config(1);
	a.mmio[0].len = 0;
	refused(&m, &a, -EINVAL, "empty");
	a = config(1);
	a.vmgenid = 16 * MiB_ - 8;
	refused(&m, &a, -EFAULT, "not in guest memory");
	a = config(1);
	a.vmgenid = LX_ACPI_END - 8;
	refused(&m, &a, -EINVAL, "overlaps the tables");
	/* an unused GED GSI is not checked without a generation ID */
	a = config(1);
	a.vmgenid = 0;
	a.ged_gsi = 99;
	uint64_t rsdp;
	cr_assert_eq(lx_acpi_write(&m, &a, &rsdp, NULL, 0), 0);
	gmem_fini(&m);
}

Test(acpi, memory_without_room_for_the_tables_is_refused)
{
	uint8_t *host = calloc(1, 0xe8000);
	struct gmem m;
	struct lx_acpi a = config(1);

	cr_assert(host);
	a.vmgenid = 0x1000;
	fake_gmem(&m, host, 0x80000, 0, 0); /* 512 KiB: nothing at 0xe0000 */
	refused(&m, &a, -EFAULT, "no room for the tables");
	fake_gmem(&m, host, 0xe8000, 0, 0); /* the area only half there */
	refused(&m, &a, -EFAULT, "no room for the tables");
	free(host);
}

Test(acpi, pkglength_takes_1_to_4_bytes)
{
	struct {
		size_t len;
		unsigned n;
		uint8_t bytes[4];
	} cases[] = {
	    {0, 1, {0x01}},
	    {62, 1, {0x3f}},		   /* 63: the most 6 bits hold */
	    {63, 2, {0x41, 0x04}},	   /* 65 */
	    {4093, 2, {0x4f, 0xff}},	   /* 4095: the most 12 bits hold */
	    {4094, 3, {0x81, 0x00, 0x01}}, /* 4097 */
	    {0xffffc, 3, {0x8f, 0xff, 0xff}},
	    {0xffffd, 4, {0xc1, 0x00, 0x00, 0x01}},
	    {0xffffffb, 4, {0xcf, 0xff, 0xff, 0xff}},
	};
	uint8_t out[4];

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(out, 0xee, sizeof(out));
		unsigned n = lx_aml_pkglength(out, cases[i].len);
		cr_assert_eq(n, cases[i].n, "len %zu: %u bytes, not %u", cases[i].len, n,
			     cases[i].n);
		cr_assert_eq(memcmp(out, cases[i].bytes, n), 0, "len %zu", cases[i].len);
		unsigned m;
		cr_assert_eq(pkglength(out, &m), cases[i].len + n, "it counts its own bytes");
	}
	cr_assert_eq(lx_aml_pkglength(out, 0xffffffc), 0, "too long for 28 bits");
}
