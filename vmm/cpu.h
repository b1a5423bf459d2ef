/* vmm/cpu.h - private: facts of the x86-64 user mode a function guest runs
 * in, shared by every platform: exception vectors and the RFLAGS bits a
 * program may set. */
#ifndef FORKVM_VMM_CPU_H
#define FORKVM_VMM_CPU_H

#include <stdbool.h>
#include <stdint.h>

/* RFLAGS bits a ring-3 program may keep across a system call (CF PF AF
 * ZF SF TF DF OF AC ID), and the one always set. */
#define CPU_RFLAGS_USER_MASK 0x240dd5ULL
#define CPU_RFLAGS_FIXED 0x2ULL
/* The interrupt flag: always set in a process's user mode. */
#define CPU_RFLAGS_IF 0x200ULL

/* Page fault error code bits: the page was present, a write, from user
 * mode, an instruction fetch. */
#define CPU_PF_PRESENT 0x1ULL
#define CPU_PF_WRITE 0x2ULL
#define CPU_PF_USER 0x4ULL
#define CPU_PF_FETCH 0x10ULL

/* Exception vectors that push an error code. */
bool cpu_exc_has_error_code(unsigned vector);
/* Short name of an exception vector ("#PF page fault", ...). */
const char *cpu_exc_name(unsigned vector);
/* The signal Linux sends a process for an exception (SIGSEGV, SIGFPE...). */
int cpu_exc_signal(unsigned vector);

#endif
