/* vmm/kvm/x86.h - private to the KVM platform: the x86-64 machine a
 * function guest runs on under KVM: identity page tables, GDT/TSS/IDT, the
 * ring-0 trampoline, and the register state that puts a vCPU in ring 3.
 * Pure functions on guest memory and plain structs, so unit tests run them
 * without KVM. (On the process platform the guest is a host process and
 * needs none of this.)
 *
 * Guest-physical layout of the system area (the first 2 MiB):
 *   0x000000  null page, not present (NULL dereferences fault)
 *   0x001000  PML4          0x002000  PDPT       0x003000  PT for [0, 2 MiB)
 *   0x004000  PDs, one per GiB of guest-physical space
 *   0x058000  GDT           0x05a000  IDT        0x05b000  trampoline code
 *   0x05c000  TSSs, 256 bytes per vCPU (with an I/O bitmap)
 *   0x070000  ring-0 stacks, 4 KiB per vCPU
 *   0x1ff000  the identity page (guest/abi/forkvm_identity.h)
 * Everything else is identity mapped (guest-virtual == guest-physical) with
 * 2 MiB pages: the tables never change after boot, so no TLB shootdowns and
 * no stale shadow pages. PVM needs the pages the trampoline touches to be
 * user-accessible (it checks ring-0 accesses as user accesses), so the
 * system area is U=1, RW; the guest can only harm itself with it. For the
 * same reason the trampoline's port I/O is checked against the TSS I/O
 * bitmap, which therefore opens exactly the trampoline's ports (a ring-3
 * program using them directly only confuses itself).
 */
#ifndef FORKVM_VMM_KVM_X86_H
#define FORKVM_VMM_KVM_X86_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/cpu.h"
#include "vmm/fguest/fguest.h"
#include "vmm/gmem.h"

#define X86_PML4 0x1000ULL
#define X86_PDPT 0x2000ULL
#define X86_PT_LOW 0x3000ULL
#define X86_PD_BASE 0x4000ULL
#define X86_MAX_PD 80U
#define X86_GDT 0x58000ULL
#define X86_IDT 0x5a000ULL
#define X86_TRAMP 0x5b000ULL
#define X86_TSS_BASE 0x5c000ULL
#define X86_TSS_STRIDE 256ULL
#define X86_TSS_LIMIT (104 + X86_IOPB_BYTES - 1)
#define X86_IOPB_BYTES (0x100 / 8 + 1) /* ports 0..0xff, then the 0xff end byte */
#define X86_KSTACK_BASE 0x70000ULL
#define X86_KSTACK_SIZE 4096ULL
#define X86_IDENTITY_PAGE FG_IDENTITY_PAGE
#define X86_SYS_END FG_SYS_END
#define X86_MAX_VCPUS FG_MAX_VCPUS

/* Selectors. */
#define X86_SEL_KCODE 0x08
#define X86_SEL_KDATA 0x10
#define X86_SEL_UDATA 0x1b
#define X86_SEL_UCODE 0x23
#define X86_SEL_TSS(i) (0x28 + 16 * (i))

/* Trampoline entry points and the ports its stubs use. The syscall entry
 * is `out %al, $X86_PORT_SYSCALL; iretq`: the VMM serves the call at the
 * port exit and writes an iret frame for the return to ring 3. Exception
 * vector v is `out %al, $(X86_PORT_EXC_BASE + v); hlt`. */
#define X86_TRAMP_SYSCALL (X86_TRAMP + 0x0)
#define X86_TRAMP_EXC(v) (X86_TRAMP + 0x40 + 8ULL * (v))
#define X86_PORT_SYSCALL 0xe0
#define X86_PORT_EXC_BASE 0xc0 /* 0xc0..0xdf: clear of the in-kernel PIC (0x20, 0xa0) and PIT (0x40) */
#define X86_NR_EXC 32

/* MSR numbers. */
#define X86_MSR_EFER 0xc0000080
#define X86_MSR_STAR 0xc0000081
#define X86_MSR_LSTAR 0xc0000082
#define X86_MSR_CSTAR 0xc0000083
#define X86_MSR_SFMASK 0xc0000084
#define X86_MSR_FS_BASE 0xc0000100
#define X86_MSR_GS_BASE 0xc0000101
#define X86_MSR_KERNEL_GS_BASE 0xc0000102
#define X86_MSR_SYSENTER_CS 0x174
#define X86_MSR_SYSENTER_ESP 0x175
#define X86_MSR_SYSENTER_EIP 0x176
#define X86_MSR_MISC_ENABLE 0x1a0

#define X86_RFLAGS_USER_MASK CPU_RFLAGS_USER_MASK
#define X86_RFLAGS_FIXED CPU_RFLAGS_FIXED

/* Top of vCPU i's ring-0 stack (TSS.RSP0), 16-byte aligned. */
static inline uint64_t x86_kstack_top(unsigned i)
{
	return X86_KSTACK_BASE + X86_KSTACK_SIZE * (i + 1);
}

/* Writes page tables, GDT, TSSs, IDT and the trampoline for nr_vcpus vCPUs
 * into the system area of m. Returns 0 or -errno (-E2BIG: too many vCPUs or
 * too much memory for the tables). */
int x86_setup_system(struct gmem *m, unsigned nr_vcpus) __attribute__((warn_unused_result));

/* Fills the special registers of vCPU i for ring-3 execution. s must come
 * from KVM_GET_SREGS (apic_base and the interrupt bitmap are kept). */
/* CR4.PKE: protection keys for user pages (PKRU; all keys open at 0). */
#define X86_CR4_PKE (1ULL << 22)
void x86_sregs_ring3(struct kvm_sregs *s, unsigned vcpu, unsigned nr_vcpus, bool osxsave);


/* Fills up to max MSR entries for the syscall path. Returns the count. */
unsigned x86_boot_msrs(struct kvm_msr_entry *e, unsigned max);

/* Linux guests (vmm/linux/): the 64-bit boot protocol's GDT and identity
 * page tables below 1 MiB, clear of the loader's zero page (0x7000),
 * command line (0x20000) and MP table (0x9fc00). */
#define X86_LX_GDT 0x500ULL
#define X86_LX_PML4 0x9000ULL
#define X86_LX_PDPT 0xa000ULL
#define X86_LX_PD 0xb000ULL /* four PDs: the low 4 GiB */
#define X86_LX_SEL_CODE 0x10
#define X86_LX_SEL_DATA 0x18

/* Writes the GDT and page tables a Linux guest's 64-bit entry needs.
 * Returns 0 or -EFAULT. */
int x86_setup_linux(struct gmem *m) __attribute__((warn_unused_result));
/* Fills s for the 64-bit entry: long mode, paging on the tables above,
 * flat __BOOT_CS/__BOOT_DS. s comes from KVM_GET_SREGS. */
void x86_sregs_linux(struct kvm_sregs *s);

/* Writes the iret frame for a return to ring 3 (rip, rflags sanitized, rsp)
 * at the top of vCPU i's ring-0 stack and returns its address (the value
 * the trampoline's iretq expects in rsp), or 0 on a bad vCPU index. */
uint64_t x86_write_iret_frame(struct gmem *m, unsigned vcpu, uint64_t rip, uint64_t rflags,
			      uint64_t rsp);

/* Reads the exception frame a ring-3 fault left on vCPU i's stack
 * (rsp = the vCPU's rsp at the exit). Returns 0 or -EFAULT. */
struct x86_exc_frame {
	uint64_t error_code;
	uint64_t rip, cs, rflags, rsp, ss;
};
int x86_read_exc_frame(const struct gmem *m, uint64_t rsp, unsigned vector,
		       struct x86_exc_frame *f) __attribute__((warn_unused_result));

#endif
