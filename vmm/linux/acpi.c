/* vmm/linux/acpi.c - the ACPI tables of a Linux guest: RSDP, XSDT, FADT,
 * MADT, and a DSDT whose AML is emitted here (see acpi.h). Table layouts:
 * the ACPI 6.5 specification, chapter 5; AML encoding: chapter 20; the
 * resource descriptors: section 6.4. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "vmm/linux/acpi.h"
#include "vmm/linux/bytes.h"
#include "vmm/linux/linux.h"

#define OEM_ID "FORKVM"
#define OEM_TABLE_PREFIX "FKVM" /* OEM table id: this, then the signature */
#define OEM_REVISION 1
#define CREATOR_ID "FKVM"
#define CREATOR_REVISION 1
#define HYPERVISOR_ID "FORKVM  "

#define SDT_HDR 36
#define RSDP_LEN 36
#define XSDT_LEN (SDT_HDR + 2 * 8)
#define FADT_LEN 276 /* revision 6 */
#define MADT_HDR 44
#define MADT_LAPIC_LEN 8
#define MADT_IOAPIC_LEN 12
#define TABLE_ALIGN 16

#define LAPIC_ADDR 0xfee00000U
#define IOAPIC_ADDR 0xfec00000U
#define I8042_IRQ 1
#define I8042_CMD_PORT (LX_I8042_PORT + 4)
#define COM1_PORTS 8
#define VMGENID_LEN 16

/* FADT fields we set (offsets), its flags and IA-PC boot flags. */
#define FADT_DSDT 40
#define FADT_IAPC_BOOT_ARCH 109
#define FADT_FLAGS 112
#define FADT_MINOR_VERSION 131
#define FADT_X_DSDT 140
#define FADT_HYPERVISOR_ID 268
#define FADT_F_PWR_BUTTON (1U << 4)  /* the power button, if any, is a device */
#define FADT_F_SLP_BUTTON (1U << 5)  /* likewise the sleep button */
#define FADT_F_HW_REDUCED (1U << 20) /* no fixed hardware: no SCI, PM timer, GPEs */
#define IAPC_8042 (1U << 1)	     /* i8042 present: Linux probes it (and resets by it) */
#define IAPC_NO_VGA (1U << 2)
#define IAPC_NO_MSI (1U << 3)
#define IAPC_NO_CMOS_RTC (1U << 5) /* forkvm has none: Linux then skips rtc_cmos */

/* The compressed EISA ids (EisaId() in ASL) of the legacy devices. */
#define EISA_PNP0303 0x0303d041U /* IBM enhanced keyboard (the i8042) */
#define EISA_PNP0501 0x0105d041U /* 16550A-compatible COM port */

/* AML opcodes and prefixes (ACPI 6.5, 20.2). */
#define AML_ZERO 0x00
#define AML_ONE 0x01
#define AML_NAME 0x08
#define AML_BYTE 0x0a
#define AML_WORD 0x0b
#define AML_DWORD 0x0c
#define AML_STRING 0x0d
#define AML_QWORD 0x0e
#define AML_SCOPE 0x10
#define AML_BUFFER 0x11
#define AML_PACKAGE 0x12
#define AML_METHOD 0x14
#define AML_DUAL_NAME 0x2e
#define AML_MULTI_NAME 0x2f
#define AML_EXT 0x5b
#define AML_DEVICE 0x82 /* after AML_EXT */
#define AML_ROOT 0x5c
#define AML_ARG0 0x68
#define AML_NOTIFY 0x86
#define AML_LEQUAL 0x93
#define AML_IF 0xa0

/* Resource descriptors (ACPI 6.5, 6.4). */
#define RES_IO 0x47	     /* small, 7 bytes after the tag */
#define RES_END 0x79	     /* small, a checksum byte after the tag */
#define RES_MEM32_FIXED 0x86 /* large, 9 bytes after tag and length */
#define RES_EXT_IRQ 0x89     /* large, 6 bytes for one interrupt */
#define RES_IRQ_CONSUMER 0x01
#define RES_IRQ_EDGE 0x02 /* 0: level; polarity bit 2 clear: active high */

/* ------------------------------------------------------------ AML */

/* An AML byte stream being written into [p, p+cap). */
struct aml {
	uint8_t *p;
	size_t len, cap;
	bool full; /* a write did not fit: the stream is incomplete */
};

/* True if n more bytes fit; otherwise marks the stream full. */
static bool aml_room(struct aml *b, size_t n)
{
	if (b->full || n > b->cap - b->len)
		b->full = true;
	return !b->full;
}

/* Appends n bytes. */
static void aml_bytes(struct aml *b, const void *s, size_t n)
{
	if (!aml_room(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void aml_byte(struct aml *b, uint8_t v)
{
	aml_bytes(b, &v, 1);
}

/* Appends the low n bytes of v, little-endian. */
static void aml_le(struct aml *b, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		aml_byte(b, (uint8_t)(v >> (8 * i)));
}

/* An Integer in its smallest encoding: Zero, One, or a Byte, Word,
 * DWord or QWord constant. */
static void aml_int(struct aml *b, uint64_t v)
{
	if (v <= 1) {
		aml_byte(b, v ? AML_ONE : AML_ZERO);
	} else if (v <= UINT8_MAX) {
		aml_byte(b, AML_BYTE);
		aml_le(b, v, 1);
	} else if (v <= UINT16_MAX) {
		aml_byte(b, AML_WORD);
		aml_le(b, v, 2);
	} else if (v <= UINT32_MAX) {
		aml_byte(b, AML_DWORD);
		aml_le(b, v, 4);
	} else {
		aml_byte(b, AML_QWORD);
		aml_le(b, v, 8);
	}
}

/* A String constant (ASCII, NUL-terminated). */
static void aml_string(struct aml *b, const char *s)
{
	aml_byte(b, AML_STRING);
	aml_bytes(b, s, strlen(s) + 1);
}

/* A NameString: an optional leading '\' (the root), then NameSegs of up
 * to 4 characters separated by '.', each padded with '_' to 4. */
static void aml_name(struct aml *b, const char *path)
{
	unsigned nsegs = 1;

	if (*path == '\\') {
		aml_byte(b, AML_ROOT);
		path++;
	}
	for (const char *c = path; *c; c++)
		nsegs += *c == '.';
	if (nsegs == 2) {
		aml_byte(b, AML_DUAL_NAME);
	} else if (nsegs > 2) {
		aml_byte(b, AML_MULTI_NAME);
		aml_byte(b, (uint8_t)nsegs);
	}
	while (*path) {
		char seg[4] = {'_', '_', '_', '_'};
		for (unsigned i = 0; i < 4 && *path && *path != '.'; i++)
			seg[i] = *path++;
		aml_bytes(b, seg, 4);
		if (*path == '.')
			path++;
	}
}

unsigned lx_aml_pkglength(uint8_t out[4], size_t len)
{
	/* The largest value 1, 2, 3 and 4 bytes encode: 6, 12, 20, 28 bits. */
	static const uint32_t max[4] = {0x3f, 0xfff, 0xfffff, 0xfffffff};

	for (unsigned k = 1; k <= 4; k++) {
		if (len > max[k - 1] - k)
			continue;
		uint32_t v = (uint32_t)len + k;
		if (k == 1) {
			out[0] = (uint8_t)v;
			return 1;
		}
		/* Lead byte: the count of bytes that follow in bits 7-6, the
		 * low nibble in bits 3-0; then the rest, 8 bits a byte. */
		out[0] = (uint8_t)((k - 1) << 6 | (v & 0xf));
		for (unsigned i = 1; i < k; i++)
			out[i] = (uint8_t)(v >> (4 + 8 * (i - 1)));
		return k;
	}
	return 0;
}

/* Ends the package whose contents began at offset at (right after its
 * opcode): inserts its PkgLength there. */
static void aml_close(struct aml *b, size_t at)
{
	uint8_t pl[4];
	unsigned k;

	if (b->full)
		return;
	k = lx_aml_pkglength(pl, b->len - at);
	if (!k || !aml_room(b, k)) {
		b->full = true;
		return;
	}
	memmove(b->p + at + k, b->p + at, b->len - at);
	memcpy(b->p + at, pl, k);
	b->len += k;
}

/* Scope(name) {: returns what aml_close takes. */
static size_t aml_scope(struct aml *b, const char *name)
{
	aml_byte(b, AML_SCOPE);
	size_t at = b->len;
	aml_name(b, name);
	return at;
}

/* Device(name) {: returns what aml_close takes. */
static size_t aml_device(struct aml *b, const char *name)
{
	aml_byte(b, AML_EXT);
	aml_byte(b, AML_DEVICE);
	size_t at = b->len;
	aml_name(b, name);
	return at;
}

/* Method(name, nargs, NotSerialized) {: returns what aml_close takes. */
static size_t aml_method(struct aml *b, const char *name, unsigned nargs)
{
	aml_byte(b, AML_METHOD);
	size_t at = b->len;
	aml_name(b, name);
	aml_byte(b, (uint8_t)(nargs & 7)); /* sync level 0, not serialized */
	return at;
}

/* Name(name, v) for an Integer. */
static void aml_name_int(struct aml *b, const char *name, uint64_t v)
{
	aml_byte(b, AML_NAME);
	aml_name(b, name);
	aml_int(b, v);
}

/* Name(name, "s"). */
static void aml_name_str(struct aml *b, const char *name, const char *s)
{
	aml_byte(b, AML_NAME);
	aml_name(b, name);
	aml_string(b, s);
}

/* ------------------------------------------------------------ resources */

/* A resource template being built (the largest here is 27 bytes). */
struct res {
	uint8_t b[48];
	size_t len;
};

/* Appends n bytes; the callers' fixed templates always fit. */
static void res_put(struct res *r, const uint8_t *s, size_t n)
{
	if (n <= sizeof(r->b) - r->len) {
		memcpy(r->b + r->len, s, n);
		r->len += n;
	}
}

/* Memory32Fixed(ReadWrite, base, len). */
static void res_mem32(struct res *r, uint32_t base, uint32_t len)
{
	uint8_t d[12] = {RES_MEM32_FIXED, 9, 0, 1 /* read-write */};
	lx_wr32(d + 4, base);
	lx_wr32(d + 8, len);
	res_put(r, d, sizeof(d));
}

/* Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {gsi}. */
static void res_irq(struct res *r, unsigned gsi)
{
	uint8_t d[9] = {RES_EXT_IRQ, 6, 0, RES_IRQ_CONSUMER | RES_IRQ_EDGE, 1};
	lx_wr32(d + 5, gsi);
	res_put(r, d, sizeof(d));
}

/* IO(Decode16, port, port, 1, len). */
static void res_io(struct res *r, uint16_t port, uint8_t len)
{
	uint8_t d[8] = {RES_IO, 1 /* 16-bit decode */};
	lx_wr16(d + 2, port);
	lx_wr16(d + 4, port);
	d[6] = 1; /* alignment */
	d[7] = len;
	res_put(r, d, sizeof(d));
}

/* Name(_CRS, ResourceTemplate() {r}): the EndTag with the checksum that
 * makes the template's bytes sum to zero, in a Buffer. */
static void aml_crs(struct aml *b, struct res *r)
{
	uint8_t end[2] = {RES_END, 0};

	res_put(r, end, 1);
	end[1] = lx_checksum(r->b, r->len);
	res_put(r, end + 1, 1);
	aml_byte(b, AML_NAME);
	aml_name(b, "_CRS");
	aml_byte(b, AML_BUFFER);
	size_t at = b->len;
	aml_int(b, r->len);
	aml_bytes(b, r->b, r->len);
	aml_close(b, at);
}

/* ------------------------------------------------------------ DSDT */

/* COM1: without it a hardware-reduced Linux maps no IRQ 4 (see acpi.h):
 * Debian's 6.1 under QEMU's microvm then registers ttyS0 with IRQ 4 and
 * userspace gets no console at all. */
static void dsdt_com1(struct aml *b)
{
	struct res r = {0};
	size_t dev = aml_device(b, "COM1");

	aml_name_int(b, "_HID", EISA_PNP0501);
	aml_name_int(b, "_UID", 0);
	res_io(&r, LX_COM1_PORT, COM1_PORTS);
	res_irq(&r, LX_COM1_IRQ);
	aml_crs(b, &r);
	aml_close(b, dev);
}

/* The i8042: its data and command ports and the keyboard's IRQ 1 (which
 * forkvm's controller, without keyboard, never raises). */
static void dsdt_i8042(struct aml *b)
{
	struct res r = {0};
	size_t dev = aml_device(b, "PS2_");

	aml_name_int(b, "_HID", EISA_PNP0303);
	res_io(&r, LX_I8042_PORT, 1);
	res_io(&r, I8042_CMD_PORT, 1);
	res_irq(&r, I8042_IRQ);
	aml_crs(b, &r);
	aml_close(b, dev);
}

/* Virtio-mmio device i, Vnnn: the id Linux's virtio_mmio driver matches
 * (LNRO0005), its register window and its interrupt. */
static void dsdt_virtio(struct aml *b, unsigned i, const struct lx_acpi_mmio *d)
{
	char name[5] = {'V', (char)('0' + i / 100 % 10), (char)('0' + i / 10 % 10),
			(char)('0' + i % 10), 0};
	struct res r = {0};
	size_t dev = aml_device(b, name);

	aml_name_str(b, "_HID", "LNRO0005");
	aml_name_int(b, "_UID", i);
	res_mem32(&r, (uint32_t)d->base, d->len);
	res_irq(&r, d->gsi);
	aml_crs(b, &r);
	aml_close(b, dev);
}

/* The VM generation ID device, VGEN. Linux 6.1's vmgenid driver matches
 * "VMGENCTR" or "VM_GEN_COUNTER" among the _HID and _CIDs; ACPICA
 * upper-cases _HID and _CID strings, so Microsoft's "VM_Gen_Counter"
 * _CID matches too. ADDR: Package {low 32 bits, high 32 bits}. iasl's
 * compiler rejects "VMGENCTR" as a _HID (its last 4 characters are not
 * hex digits); ACPICA and Linux take it as it is, as in Firecracker. */
static void dsdt_vmgenid(struct aml *b, uint64_t addr)
{
	size_t dev = aml_device(b, "VGEN");

	aml_name_str(b, "_HID", "VMGENCTR");
	aml_name_str(b, "_CID", "VM_Gen_Counter");
	aml_name_str(b, "_DDN", "VM_Gen_Counter");
	aml_byte(b, AML_NAME);
	aml_name(b, "ADDR");
	aml_byte(b, AML_PACKAGE);
	size_t pkg = b->len;
	aml_byte(b, 2);
	aml_int(b, addr & UINT32_MAX);
	aml_int(b, addr >> 32);
	aml_close(b, pkg);
	aml_close(b, dev);
}

/* The Generic Event Device, GED0: its interrupt runs _EVT(gsi), which
 * tells VGEN that the generation ID changed (Notify 0x80). */
static void dsdt_ged(struct aml *b, unsigned gsi)
{
	struct res r = {0};
	size_t dev = aml_device(b, "GED0");

	aml_name_str(b, "_HID", "ACPI0013");
	aml_name_int(b, "_UID", 0);
	res_irq(&r, gsi);
	aml_crs(b, &r);
	size_t evt = aml_method(b, "_EVT", 1);
	aml_byte(b, AML_IF);
	size_t cond = b->len;
	aml_byte(b, AML_LEQUAL);
	aml_byte(b, AML_ARG0);
	aml_int(b, gsi);
	aml_byte(b, AML_NOTIFY);
	aml_name(b, "\\_SB_.VGEN");
	aml_int(b, 0x80);
	aml_close(b, cond);
	aml_close(b, evt);
	aml_close(b, dev);
}

/* ------------------------------------------------------------ tables */

/* The common header of a system description table (checksum left 0). */
static void sdt_header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	lx_wr32(t + 4, len);
	t[8] = rev;
	memcpy(t + 10, OEM_ID, 6);
	memcpy(t + 16, OEM_TABLE_PREFIX, 4);
	memcpy(t + 20, sig, 4);
	lx_wr32(t + 24, OEM_REVISION);
	memcpy(t + 28, CREATOR_ID, 4);
	lx_wr32(t + 32, CREATOR_REVISION);
}

/* Sets the checksum of the table t of len bytes. */
static void sdt_seal(uint8_t *t, size_t len)
{
	t[9] = 0;
	t[9] = lx_checksum(t, len);
}

/* The DSDT at t (cap bytes of room). Returns its length, or 0 if it does
 * not fit. */
static size_t dsdt_write(uint8_t *t, size_t cap, const struct lx_acpi *a)
{
	struct aml b = {.p = t, .len = SDT_HDR, .cap = cap};

	if (cap < SDT_HDR)
		return 0;
	size_t sb = aml_scope(&b, "\\_SB_");
	dsdt_com1(&b);
	dsdt_i8042(&b);
	for (unsigned i = 0; i < a->nr_mmio; i++)
		dsdt_virtio(&b, i, &a->mmio[i]);
	if (a->vmgenid) {
		dsdt_vmgenid(&b, a->vmgenid);
		dsdt_ged(&b, a->ged_gsi);
	}
	aml_close(&b, sb);
	if (b.full)
		return 0;
	/* Revision 2: AML integers are 64-bit. */
	sdt_header(t, "DSDT", (uint32_t)b.len, 2);
	sdt_seal(t, b.len);
	return b.len;
}

/* The MADT for n vCPUs at t. Returns its length.
 *
 * Flags 0, PCAT_COMPAT clear: x86 Linux never reads the flag, and with
 * HW_REDUCED_ACPI it replaces its 8259 driver with null_legacy_pic in any
 * case; every interrupt goes through the IOAPIC (KVM's in-kernel 8259s
 * stay, unused), as in Firecracker. No Interrupt Source Overrides: KVM's
 * default routing sends ISA IRQ n to IOAPIC pin n, edge, active high, the
 * bus defaults; and its PIT raises GSI 0 (no IRQ 0 -> GSI 2 override as on
 * PC firmware), which a hardware-reduced Linux does not use anyway. */
static size_t madt_write(uint8_t *t, unsigned n)
{
	size_t len = MADT_HDR + (size_t)n * MADT_LAPIC_LEN + MADT_IOAPIC_LEN;
	uint8_t *e = t + MADT_HDR;

	sdt_header(t, "APIC", (uint32_t)len, 6);
	lx_wr32(t + 36, LAPIC_ADDR);
	lx_wr32(t + 40, 0);
	for (unsigned i = 0; i < n; i++, e += MADT_LAPIC_LEN) {
		e[0] = 0; /* Processor Local APIC */
		e[1] = MADT_LAPIC_LEN;
		e[2] = (uint8_t)i; /* ACPI processor UID */
		e[3] = (uint8_t)i; /* APIC id; vCPU 0, the BSP, first */
		lx_wr32(e + 4, 1);	   /* enabled */
	}
	e[0] = 1; /* I/O APIC */
	e[1] = MADT_IOAPIC_LEN;
	e[2] = (uint8_t)n;
	lx_wr32(e + 4, IOAPIC_ADDR);
	lx_wr32(e + 8, 0); /* GSI base */
	sdt_seal(t, len);
	return len;
}

/* The FADT at t, revision 6 (ACPI 6.5), hardware-reduced. */
static void fadt_write(uint8_t *t, uint64_t dsdt)
{
	sdt_header(t, "FACP", FADT_LEN, 6);
	lx_wr32(t + FADT_DSDT, (uint32_t)dsdt);
	lx_wr16(t + FADT_IAPC_BOOT_ARCH, IAPC_8042 | IAPC_NO_VGA | IAPC_NO_MSI | IAPC_NO_CMOS_RTC);
	lx_wr32(t + FADT_FLAGS, FADT_F_HW_REDUCED | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON);
	t[FADT_MINOR_VERSION] = 5;
	lx_wr64(t + FADT_X_DSDT, dsdt);
	memcpy(t + FADT_HYPERVISOR_ID, HYPERVISOR_ID, 8);
	sdt_seal(t, FADT_LEN);
}

/* The XSDT at t: the FADT and the MADT. */
static void xsdt_write(uint8_t *t, uint64_t fadt, uint64_t madt)
{
	sdt_header(t, "XSDT", XSDT_LEN, 1);
	lx_wr64(t + SDT_HDR, fadt);
	lx_wr64(t + SDT_HDR + 8, madt);
	sdt_seal(t, XSDT_LEN);
}

/* The RSDP at p, revision 2: the XSDT only (no RSDT). */
static void rsdp_write(uint8_t *p, uint64_t xsdt)
{
	memcpy(p, "RSD PTR ", 8);
	p[8] = 0;
	memcpy(p + 9, OEM_ID, 6);
	p[15] = 2;
	lx_wr32(p + 16, 0);
	lx_wr32(p + 20, RSDP_LEN);
	lx_wr64(p + 24, xsdt);
	p[32] = 0;
	p[8] = lx_checksum(p, 20);
	p[32] = lx_checksum(p, RSDP_LEN);
}

/* ------------------------------------------------------------ checks */

/* Takes gsi for what (a device) in the set used. Returns 0 or -EINVAL. */
static int gsi_claim(uint32_t *used, unsigned gsi, const char *what, char *err, size_t errlen)
{
	if (gsi > LX_ACPI_MAX_GSI)
		return err_fail(err, errlen, -EINVAL,
				"ACPI: %s has GSI %u; the IOAPIC has pins 0 to %d", what, gsi,
				LX_ACPI_MAX_GSI);
	if (*used & (1U << gsi))
		return err_fail(
		    err, errlen, -EINVAL,
		    "ACPI: %s has GSI %u, which another device uses (each is exclusive)", what,
		    gsi);
	*used |= 1U << gsi;
	return 0;
}

/* Checks virtio-mmio device i. Returns 0 or -EINVAL. */
static int mmio_check(const struct lx_acpi_mmio *d, unsigned i, uint32_t *used, char *err,
		      size_t errlen)
{
	char what[32];

	snprintf(what, sizeof(what), "virtio-mmio device %u", i);
	if (!d->len || !range_within(d->base, d->len, 1ULL << 32))
		return err_fail(err, errlen, -EINVAL,
				"ACPI: %s at 0x%llx (+0x%x bytes) is empty or not below 4 GiB",
				what, (unsigned long long)d->base, d->len);
	return gsi_claim(used, d->gsi, what, err, errlen);
}

/* Checks what the tables are to describe. Returns 0 or -errno. */
static int acpi_check(const struct gmem *m, const struct lx_acpi *a, char *err, size_t errlen)
{
	uint32_t used = 0;
	int rc;

	if (a->nr_vcpus < 1 || a->nr_vcpus > 254)
		return err_fail(err, errlen, -EINVAL, "ACPI: %u vCPUs; the MADT takes 1 to 254",
				a->nr_vcpus);
	if (a->nr_mmio > LX_ACPI_MAX_MMIO)
		return err_fail(err, errlen, -EINVAL, "ACPI: %u virtio-mmio devices; at most %d",
				a->nr_mmio, LX_ACPI_MAX_MMIO);
	if ((rc = gsi_claim(&used, LX_COM1_IRQ, "COM1", err, errlen)) < 0 ||
	    (rc = gsi_claim(&used, I8042_IRQ, "the i8042", err, errlen)) < 0)
		return rc;
	for (unsigned i = 0; i < a->nr_mmio; i++)
		if ((rc = mmio_check(&a->mmio[i], i, &used, err, errlen)) < 0)
			return rc;
	if (!a->vmgenid)
		return 0;
	if (!gmem_is_ram(m, a->vmgenid, VMGENID_LEN))
		return err_fail(err, errlen, -EFAULT,
				"ACPI: the VM generation ID at 0x%llx is not in guest memory",
				(unsigned long long)a->vmgenid);
	if (a->vmgenid < LX_ACPI_END && a->vmgenid + VMGENID_LEN > LX_ACPI_BASE)
		return err_fail(
		    err, errlen, -EINVAL,
		    "ACPI: the VM generation ID at 0x%llx overlaps the tables (0x%llx-0x%llx)",
		    (unsigned long long)a->vmgenid, LX_ACPI_BASE, LX_ACPI_END);
	return gsi_claim(&used, a->ged_gsi, "the Generic Event Device", err, errlen);
}

int lx_acpi_write(struct gmem *m, const struct lx_acpi *a, uint64_t *rsdp, char *err, size_t errlen)
{
	const size_t win = LX_ACPI_END - LX_ACPI_BASE;
	const size_t xsdt = align_up(RSDP_LEN, TABLE_ALIGN);
	const size_t fadt = align_up(xsdt + XSDT_LEN, TABLE_ALIGN);
	const size_t madt = align_up(fadt + FADT_LEN, TABLE_ALIGN);
	uint8_t *w;
	int rc;

	if ((rc = acpi_check(m, a, err, errlen)) < 0)
		return rc;
	w = gmem_ptr(m, LX_ACPI_BASE, win);
	if (!w)
		return err_fail(err, errlen, -EFAULT,
				"ACPI: guest memory has no room for the tables at 0x%llx-0x%llx",
				LX_ACPI_BASE, LX_ACPI_END);
	memset(w, 0, win);
	/* madt_write's table (at most 2 KiB for 254 vCPUs) always fits. */
	size_t dsdt = align_up(madt + madt_write(w + madt, a->nr_vcpus), TABLE_ALIGN);
	if (dsdt >= win || !dsdt_write(w + dsdt, win - dsdt, a)) {
		memset(w, 0, win);
		return err_fail(err, errlen, -E2BIG, "ACPI: the tables do not fit below 0x%llx",
				LX_ACPI_END);
	}
	fadt_write(w + fadt, LX_ACPI_BASE + dsdt);
	xsdt_write(w + xsdt, LX_ACPI_BASE + fadt, LX_ACPI_BASE + madt);
	rsdp_write(w, LX_ACPI_BASE + xsdt);
	*rsdp = LX_ACPI_BASE;
	return 0;
}
