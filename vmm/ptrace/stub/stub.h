/* vmm/ptrace/stub/stub.h - what the process platform (vmm/ptrace/) and its
 * stub program (stub.c) agree on. Plain constants: both sides include it. */
#ifndef FORKVM_VMM_PTRACE_STUB_H
#define FORKVM_VMM_PTRACE_STUB_H

/* The stub's text, data and stacks live here, above all guest memory
 * (guest-physical == guest-virtual, at most 64 GiB of RAM plus the hole),
 * far below the kernel's stack and vDSO. */
#define STUB_BASE 0x7e0000000000ULL

/* File descriptors the stub is started with. */
#define STUB_FD_MEM 3   /* guest RAM: the memfd (shared) or the image (private) */
#define STUB_FD_READY 4 /* a pipe: the stub writes "ready TID..." or "error WHAT ERRNO" */

/* At most this many threads (vCPUs). */
#define STUB_MAX_THREADS 254

/* The fault handler's report: its `syscall` (never executed: every system
 * call of a traced stub thread stops first) carries this number in rax,
 * the siginfo in rsi and the ucontext in rdx, as a handler receives them. */
#define STUB_FAULT_NR 0x7fffff01ULL

#endif
