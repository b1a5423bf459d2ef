/* vmm/linux/linux.h - private: Linux guests, a kernel in ring 0 with the
 * legacy PC devices it needs (KVM platform only; docs/linux-guests.md).
 *
 * The loader follows the Linux x86 boot protocol (Documentation/arch/x86/
 * boot.rst), 64-bit entry: the bzImage's protected-mode kernel at 1 MiB,
 * the zero page (struct boot_params) with the setup header copied from the
 * image, the command line and the initramfs, an e820 memory map, and an
 * Intel MultiProcessor table so that every vCPU of --cpus boot=N comes up
 * (the in-kernel local APICs and IOAPIC take INIT/SIPI and interrupts).
 *
 * An uncompressed vmlinux (an ELF executable, what `--kernel vmlinux` in
 * Cloud Hypervisor's walkthrough names) is loaded segment by segment at
 * its physical addresses (16 MiB for a distribution kernel) and entered at
 * its e_entry through the same 64-bit protocol, with a setup header made
 * here: Firecracker's way.
 *
 * Guest-physical layout below 1 MiB:
 *   0x000500  GDT (written by the platform: flat 64-bit __BOOT_CS/__BOOT_DS)
 *   0x007000  zero page (boot_params)
 *   0x009000  identity page tables (written by the platform)
 *   0x020000  kernel command line
 *   0x09fc00  MP floating pointer and configuration table (reserved in e820)
 *   0x0e0000  ACPI tables (acpi.h), the VM generation ID at 0x0ef000
 *   0x0f0000  the identity page (guest/abi/forkvm_linux.h), in e820-reserved
 *             memory (the agent reads it through /dev/mem)
 *   0x0ffff0  the reset vector: a stub that resets through the i8042
 *   0x100000  the protected-mode kernel
 * The initramfs sits page-aligned at the top of RAM below 4 GiB and below
 * the kernel's initrd_addr_max. Pure functions on guest memory: unit tests
 * run them without KVM. */
#ifndef FORKVM_VMM_LINUX_LINUX_H
#define FORKVM_VMM_LINUX_LINUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <pthread.h>

#include "vmm/gmem.h"
#include "vmm/virtio/virtio.h"

struct vm;

#define LX_ZERO_PAGE 0x7000ULL
#define LX_CMDLINE 0x20000ULL
#define LX_CMDLINE_MAX 0x10000ULL /* our buffer; the kernel's cmdline_size may be less */
#define LX_MPTABLE 0x9fc00ULL
#define LX_RESET_VECTOR 0xffff0ULL /* where a real-mode "BIOS reboot" jumps */
#define LX_EBDA_END 0x100000ULL
#define LX_KERNEL 0x100000ULL

/* The boot protocol's fields we read or write: offsets in the zero page
 * (the setup header sits at 0x1f1 in both the image and the zero page). */
#define LX_ACPI_RSDP_ADDR 0x070 /* u64 (protocol 2.14) */
#define LX_E820_ENTRIES 0x1e8 /* u8 */
#define LX_SETUP_SECTS 0x1f1  /* u8 */
#define LX_BOOT_FLAG 0x1fe    /* u16 0xaa55 */
#define LX_HEADER 0x202	      /* u32 "HdrS" */
#define LX_VERSION 0x206      /* u16 */
#define LX_TYPE_OF_LOADER 0x210
#define LX_LOADFLAGS 0x211
#define LX_RAMDISK_IMAGE 0x218
#define LX_RAMDISK_SIZE 0x21c
#define LX_HEAP_END_PTR 0x224
#define LX_CMD_LINE_PTR 0x228
#define LX_INITRD_ADDR_MAX 0x22c
#define LX_XLOADFLAGS 0x236
#define LX_CMDLINE_SIZE 0x238
#define LX_INIT_SIZE 0x260
#define LX_E820_TABLE 0x2d0 /* 128 entries of 20 bytes */
#define LX_E820_MAX 128

#define LX_LOADED_HIGH 0x01
#define LX_CAN_USE_HEAP 0x80
#define LX_XLF_KERNEL_64 0x01

#define LX_E820_RAM 1
#define LX_E820_RESERVED 2

/* The legacy devices' ports and interrupts. */
#define LX_COM1_PORT 0x3f8
#define LX_COM1_IRQ 4
#define LX_I8042_PORT 0x60 /* 0x60 data, 0x64 status/command */

#define LX_ELF_MAX_SEGMENTS 16
/* An uncompressed kernel (vmlinux) has no setup header: the zero page
 * gets one made here, for the protocol version the 64-bit entry needs. */
#define LX_ELF_PROTOCOL 0x020f
#define LX_ELF_CMDLINE_SIZE 2047
#define LX_ELF_INITRD_ADDR_MAX 0x37ffffffU

/* A parsed kernel: a bzImage (where its parts are in the file), or an
 * uncompressed vmlinux ELF (its PT_LOAD segments, loaded at their
 * physical addresses, entered at e_entry: startup_64). */
struct lx_image {
	bool elf;
	uint16_t version;  /* boot protocol version */
	size_t setup_len;  /* real-mode setup code, (setup_sects + 1) * 512 */
	size_t kernel_off; /* the protected-mode kernel's offset in the file */
	size_t kernel_len;
	uint32_t init_size; /* memory the kernel needs from its load address */
	uint32_t initrd_addr_max;
	uint32_t cmdline_size; /* longest command line, without the NUL */
	uint64_t entry;	       /* guest-physical 64-bit entry point */
	uint64_t load_end;     /* guest-physical end of what the kernel needs */
	unsigned nr_segs;      /* vmlinux: its PT_LOAD segments */
	struct {
		uint64_t paddr, memsz, filesz, offset;
	} segs[LX_ELF_MAX_SEGMENTS];
};

/* True if image looks like a Linux kernel: a bzImage (boot sector flag
 * and "HdrS"), or an x86-64 ELF executable linked in the kernel's half of
 * the address space (a vmlinux; function guests live in the lower half). */
bool lx_probe(const uint8_t *image, size_t len);

/* Parses and checks a kernel: a bzImage of protocol 2.12 or later with
 * the 64-bit entry point, or a vmlinux whose segments and entry are
 * within the file and below 4 GiB. Returns 0 or -errno with err set. */
int lx_parse(const uint8_t *image, size_t len, struct lx_image *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Writes the guest's boot structures into m: the kernel, the zero page
 * (setup header from image, loader type, command line, initramfs at
 * initrd_gpa/initrd_len (0: none), the e820 map of m's RAM) and the MP
 * table for nr_vcpus. Returns 0 or -errno with err set. */
int lx_setup(struct gmem *m, const uint8_t *image, const struct lx_image *li, const char *cmdline,
	     uint64_t initrd_gpa, uint64_t initrd_len, unsigned nr_vcpus, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Where an initramfs of len bytes goes: page-aligned, as high as RAM,
 * 4 GiB and initrd_addr_max allow, above the kernel's init_size.
 * Returns 0 with *gpa set, or -E2BIG when it does not fit. */
int lx_initrd_place(const struct gmem *m, const struct lx_image *li, uint64_t len, uint64_t *gpa)
    __attribute__((warn_unused_result));

/* The Intel MultiProcessor tables for nr_vcpus (1..254) at LX_MPTABLE:
 * processors (vCPU 0 the BSP), the ISA bus, the IOAPIC (id nr_vcpus) with
 * ISA IRQ n on its pin n, ExtINT on LINT0, NMI on LINT1. Returns 0 or
 * -errno. */
int lx_write_mptable(struct gmem *m, unsigned nr_vcpus) __attribute__((warn_unused_result));

/* ------------------------------------------------------------ devices */

/* A 16550A UART (the guest's ttyS0): its registers as plain data, the
 * state a snapshot records. Output goes to the VM's console channel, and
 * input comes from it (a client of --serial socket=PATH; the bytes wait
 * in the channel's input ring, which is the receive FIFO); the interrupt
 * is raised and lowered through the platform's irq_line. */
struct uart_state {
	uint8_t ier, lcr, mcr, lsr_extra, msr, scr, dll, dlm, fcr;
	bool thr_irq;	/* transmitter-empty interrupt pending */
	bool irq_level; /* what the IRQ line was last set to */
};

struct uart {
	struct vm *vm;
	unsigned irq;
	pthread_mutex_t lock; /* vCPUs and the loop (input); before vm->lock */
	bool rx;	      /* the console's input is this port's (uart_take_input) */
	struct uart_state s;
};

/* Register offsets and bits we use. */
#define UART_RBR 0
#define UART_THR 0
#define UART_DLL 0
#define UART_IER 1
#define UART_DLM 1
#define UART_IIR 2
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7
#define UART_IER_RDI 0x01
#define UART_IER_THRI 0x02
#define UART_IIR_NO_INT 0x01
#define UART_IIR_THRI 0x02
#define UART_IIR_RDI 0x04
#define UART_LSR_DR 0x01
#define UART_IIR_FIFO 0xc0
#define UART_LCR_DLAB 0x80
#define UART_MCR_LOOP 0x10
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40
#define UART_FCR_ENABLE 0x01

/* Registers the UART at port base (8 ports) with its interrupt line.
 * Returns 0 or -errno. */
int uart_register(struct vm *vm, struct uart *u, uint16_t base, unsigned irq)
    __attribute__((warn_unused_result));
void uart_destroy(struct uart *u);
/* Makes the console channel's input this port's: it receives what a client
 * sends (else it receives nothing). */
void uart_take_input(struct uart *u);
/* The UART's state unit ("serial"): its registers. arg: the struct uart. */
int uart_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen);
int uart_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
		 size_t errlen);

/* The i8042 keyboard controller, enough for Linux's probe and reset: no
 * keyboard, no mouse; the reset command (0xfe to port 0x64) ends the VM
 * the way a reboot does in Firecracker (exit status 0). */
struct i8042 {
	struct vm *vm;
	uint8_t cmd;   /* last command byte written to 0x64 (0: none) */
	uint8_t ctr;   /* controller configuration byte */
	bool out_full; /* a byte waits at 0x60 */
	uint8_t out;
};

int i8042_register(struct vm *vm, struct i8042 *k) __attribute__((warn_unused_result));
/* The controller's state unit ("i8042"). arg: the struct i8042. */
int i8042_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen);
int i8042_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
		  size_t errlen);

/* The VM generation ID's interrupt: the Generic Event Device's GSI, the
 * IOAPIC's last pin (virtio devices take 16 + i). */
#define LX_GED_GSI 23U

/* A Linux guest's machine (vm->mach): its devices, registered in this
 * order by the loader (their state units follow it): the serial port,
 * the i8042, then the virtio devices on MMIO: the disks (vda...), the
 * console (hvc0), the rng; and the VM generation ID (16 bytes of guest
 * memory at LX_VMGENID, renewed on every restore). */
struct machine {
	struct uart com1;
	struct i8042 kbd;
	unsigned nr_virtio;
	struct virtio_dev virtio[VIRTIO_MAX_DEVS];
	struct virtio_dev *vsock; /* one of virtio[], or NULL */
};

#endif
