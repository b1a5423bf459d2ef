/* vmm/linux/acpi.h - private: the ACPI tables of a Linux guest (KVM
 * platform), so that the kernel finds its devices by ACPI: the virtio-mmio
 * devices (there is no other way to describe them to Debian's stock kernel,
 * which is built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), the legacy
 * COM1 and i8042, and the VM generation ID with the Generic Event Device
 * that tells the guest it changed.
 *
 * A hardware-reduced ACPI 6.5 machine, as Firecracker's and QEMU's microvm:
 *   RSDP (revision 2) -> XSDT -> FADT (revision 6, HW_REDUCED_ACPI) -> DSDT
 *                             -> MADT (local APICs 0..n-1, IOAPIC id n)
 * Guest-physical layout, inside the e820-reserved area below 1 MiB:
 *   0x0e0000  RSDP (16-byte aligned: the kernel also finds it by scanning
 *             0xe0000-0xfffff), then the XSDT, FADT, MADT and DSDT, each
 *             16-byte aligned, all ending below 0x0ef000
 *   0x0ef000  the VM generation ID (16 bytes, alone in its page; the VMM
 *             writes it, not lx_acpi_write)
 *
 * What the guest must know (checked against Linux 6.1):
 * - HW_REDUCED_ACPI makes x86 Linux drop the 8259 (null_legacy_pic) and
 *   the PIT/HPET timer setup; with no legacy PIC the IOAPIC's IRQ domain
 *   is dynamic and ISA IRQs 0-15 are not mapped by themselves. A device
 *   the DSDT does not list with its interrupt gets no IRQ: hence COM1
 *   (PNP0501, IRQ 4) and the i8042 (PNP0303, IRQ 1) are listed, as
 *   Firecracker does ("the kernel doesn't pick up the console or i8042
 *   unless we do").
 * - No _STA anywhere: without one, Linux takes a device as present,
 *   enabled and functioning (acpi_bus_get_status_handle).
 * Pure functions on guest memory: unit tests run them without KVM. */
#ifndef FORKVM_VMM_LINUX_ACPI_H
#define FORKVM_VMM_LINUX_ACPI_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/gmem.h"

#define LX_ACPI_BASE 0xe0000ULL /* RSDP here, tables after it */
#define LX_ACPI_END 0xef000ULL	/* tables must end below this */
#define LX_VMGENID 0xef000ULL	/* the VM generation ID: 16 bytes, alone in its page */
#define LX_ACPI_MAX_MMIO 8
#define LX_ACPI_MAX_GSI 23 /* the IOAPIC's last pin */

/* A virtio-mmio device: its register window and its interrupt. */
struct lx_acpi_mmio {
	uint64_t base;
	uint32_t len;
	unsigned gsi;
};

/* What the tables describe. */
struct lx_acpi {
	unsigned nr_vcpus; /* 1..254: local APIC ids 0..n-1; the IOAPIC gets id nr_vcpus */
	unsigned nr_mmio;  /* virtio-mmio devices (0..LX_ACPI_MAX_MMIO) */
	struct lx_acpi_mmio mmio[LX_ACPI_MAX_MMIO];
	uint64_t vmgenid; /* guest-physical address of the 16-byte generation ID; 0: no VM
			     generation ID device */
	unsigned ged_gsi; /* with vmgenid: the Generic Event Device's interrupt (GSI) */
};

/* Writes RSDP, XSDT, FADT, MADT and DSDT into guest memory from
 * LX_ACPI_BASE (zeroing the rest up to LX_ACPI_END). Every GSI the DSDT
 * declares (the virtio devices', the GED's, COM1's 4 and the i8042's 1)
 * must be <= 23 and used once: each is declared exclusive. Returns 0 with
 * *rsdp set to the RSDP's guest-physical address, or -errno with err set
 * (bad counts, a GSI > 23 or used twice, a window beyond 4 GiB, tables
 * that would pass LX_ACPI_END, memory missing). */
int lx_acpi_write(struct gmem *m, const struct lx_acpi *a, uint64_t *rsdp, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Internal, exposed for the unit tests: the AML PkgLength (ACPI 6.5,
 * 20.2.4) of a package whose bytes after its PkgLength number len. Writes
 * 1 to 4 bytes to out (the value they encode counts themselves too) and
 * returns how many, or 0 when len is too long for 4 bytes. */
unsigned lx_aml_pkglength(uint8_t out[4], size_t len);

#endif
