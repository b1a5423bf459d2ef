/* vmm/fguest/fguest.h - private: the function-guest ABI. A static Linux
 * program runs in user mode; its system calls reach the VMM as platform
 * exits (vmm/platform.h: under KVM through a ring-0 trampoline, on the
 * process platform through ptrace) and are served here against guest
 * memory, the same code on every platform.
 * All state is plain data hanging off struct fguest (no globals), guarded
 * by vm->lock.
 *
 * Memory model: guest-virtual == guest-physical (identity page tables built
 * once at boot). The VMM keeps the map of what the program has mapped
 * (image, stack, brk, mmap) and answers mmap/munmap/brk/mremap by handing
 * out and taking back ranges of guest RAM; unmapped RAM is always zero and
 * returned to the host. Protections are recorded but not enforced.
 */
#ifndef FORKVM_VMM_FGUEST_H
#define FORKVM_VMM_FGUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/bus.h"
#include "vmm/platform.h"

struct vm;
struct vcpu;

/* Guest-physical layout: the first 2 MiB are the system area (what a
 * platform needs for its machine: KVM's page tables and trampoline), its
 * last page the identity page (guest/abi/forkvm_identity.h); the program
 * maps from FG_SYS_END up. Guest-virtual == guest-physical. */
#define FG_SYS_END 0x200000ULL
#define FG_IDENTITY_PAGE 0x1ff000ULL
/* Each guest thread runs on a vCPU of its own: at most this many. */
#define FG_MAX_VCPUS 254U

/* ---------------------------------------------------------- memory map */

enum fg_vma_kind {
	FG_VMA_RESERVED, /* system area, MMIO hole: never handed out */
	FG_VMA_IMAGE,
	FG_VMA_STACK,
	FG_VMA_BRK,
	FG_VMA_MMAP,
};

struct fg_vma {
	uint64_t start, end; /* page aligned, end exclusive */
	uint32_t prot;
	uint32_t kind;
};

struct fg_mm {
	uint64_t user_start; /* lowest address a program may map */
	uint64_t user_end;   /* one past the highest */
	uint64_t mmap_top;   /* top-down mmap search starts below this */
	uint64_t brk_start, brk_cur;
	struct fg_vma *v;    /* sorted by start, disjoint */
	size_t nr, cap;
	uint64_t mapped;     /* bytes in non-reserved vmas */
};

int fg_mm_init(struct fg_mm *mm, uint64_t user_start, uint64_t user_end) __attribute__((warn_unused_result));
void fg_mm_fini(struct fg_mm *mm);
/* Adds [start, end) with no overlap allowed. Returns 0, -EEXIST, -ENOMEM. */
int fg_mm_insert(struct fg_mm *mm, uint64_t start, uint64_t end, uint32_t prot, uint32_t kind)
	__attribute__((warn_unused_result));
/* Removes every mapping in [start, end), splitting at the edges; calls
 * discard for each removed piece. Returns 0 or -errno. */
int fg_mm_remove(struct fg_mm *mm, uint64_t start, uint64_t end,
		 int (*discard)(void *arg, uint64_t start, uint64_t len), void *arg)
	__attribute__((warn_unused_result));
/* True if [addr, addr+len) is covered by program mappings (not reserved). */
bool fg_mm_mapped(const struct fg_mm *mm, uint64_t addr, uint64_t len);
/* True if no mapping of any kind intersects [start, end). */
bool fg_mm_free(const struct fg_mm *mm, uint64_t start, uint64_t end);
/* Highest free, page-aligned range of len bytes below top. Returns 0 if none. */
uint64_t fg_mm_find_free(const struct fg_mm *mm, uint64_t len, uint64_t top);
/* The mapping holding addr, or NULL. */
const struct fg_vma *fg_mm_lookup(const struct fg_mm *mm, uint64_t addr);

/* ---------------------------------------------------------- threads, fds */

#define FG_MAX_FDS 64
#define FG_FIRST_TID 1

enum fg_fd_kind {
	FG_FD_CLOSED = 0,
	FG_FD_AGENT,   /* read: agent input; write: agent output */
	FG_FD_CONSOLE, /* write: console; read: EOF */
	FG_FD_NULL,    /* read: EOF; write: discarded */
};

struct fg_fd {
	uint8_t kind;
	bool nonblock;
	bool cloexec;
};

struct fg_thread {
	bool live;
	int tid;
	uint64_t clear_child_tid; /* CLONE_CHILD_CLEARTID / set_tid_address */
	uint64_t sigmask;
	uint64_t fs_base, gs_base;
	struct vcpu *vcpu;
};

struct fg_futex_waiter {
	uint64_t uaddr;
	uint32_t bitset;
	bool woken;
	struct fg_futex_waiter *next;
};

struct fguest {
	struct vm *vm;
	struct fg_mm mm;
	struct fg_thread threads[FG_MAX_VCPUS]; /* indexed like vm->vcpus */
	unsigned nr_live;
	int next_tid;
	struct fg_fd fds[FG_MAX_FDS];
	struct fg_futex_waiter *waiters;
	uint64_t enosys_seen[8]; /* bitmap: numbers already logged */
	uint64_t entry;          /* program entry point */
	uint64_t stack_top;
	uint64_t auxv_random;    /* guest address of the AT_RANDOM bytes */
};

/* One system call being served. */
struct fg_call {
	struct fguest *fg;
	struct vm *vm;
	struct vcpu *v;
	struct fg_thread *t;
	uint64_t nr;
	uint64_t a[6];
	const struct vregs *regs; /* the caller's user registers at the call (for clone) */
	/* outcome */
	bool no_return;           /* the thread is gone: do not return to it */
};

/* Creates the ABI state for vm (memory map, fds 0-2, no threads yet). */
int fguest_create(struct vm *vm, struct fguest **out) __attribute__((warn_unused_result));
void fguest_destroy(struct fguest *fg);

/* Serves one system call; vm->lock held. Returns the value for rax. */
long fg_syscall(struct fg_call *c);

/* The vCPU loop's handlers of a guest thread's exits (vcpu.c calls them
 * on the vCPU's thread): a system call (VEXIT_SYSCALL; the registers come
 * from the platform), a fatal exception (VEXIT_FAULT: a report, and the
 * exit status a shell would give: 128 + the signal). */
enum vcpu_action fguest_exit_syscall(struct vcpu *v);
enum vcpu_action fguest_exit_fault(struct vcpu *v, const struct vexit *e);

/* Initial stack: argv (argv0 + words of cmdline), envp, auxv, AT_RANDOM.
 * Writes it below stack_top and sets *sp to the initial rsp. Returns 0, or
 * -EINVAL (unterminated quote), -E2BIG (too long), -EFAULT, with err set. */
struct elf_info;
int fg_build_stack(struct fguest *fg, uint64_t stack_top, uint64_t stack_size,
		   const struct elf_info *elf, const char *argv0, const char *cmdline,
		   const uint8_t random16[16], uint64_t hwcap, uint64_t *sp, char *err,
		   size_t errlen) __attribute__((warn_unused_result));

/* Splits cmdline into shell-like words ('..', "..", backslash). Returns the
 * word count, or -EINVAL (unterminated quote) / -E2BIG. words[] point into
 * buf, which must be strlen(cmdline)+1 bytes. */
int fg_split_cmdline(const char *cmdline, char *buf, char **words, int max_words);

/* Guest memory access for system calls, the same on every platform (the
 * guest's RAM may be the VMM's own mapping or another process's: gmem).
 * fg_user_ok: whether the whole range is mapped by the program; the copies
 * return -EFAULT unless it is. */
#define FG_BOUNCE 65536 /* the most a read or write moves in one call */
bool fg_user_ok(struct fguest *fg, uint64_t addr, uint64_t len);
int fg_copy_from_user(struct fguest *fg, void *dst, uint64_t src, uint64_t len)
	__attribute__((warn_unused_result));
int fg_copy_to_user(struct fguest *fg, uint64_t dst, const void *src, uint64_t len)
	__attribute__((warn_unused_result));

/* Starts guest thread 'tid' on vCPU v at the given user registers (vm->lock
 * held): the vCPU's thread loads them before it next runs. */
void fg_thread_start(struct fguest *fg, struct vcpu *v, int tid, const struct vregs *regs,
		     uint64_t fs_base);

/* Wakes up to n futex waiters on uaddr matching bitset; returns the count. */
int fg_futex_wake(struct fguest *fg, uint64_t uaddr, uint32_t bitset, int n);

/* The identity page (guest/abi/forkvm_identity.h): written at boot
 * (generation 0), bumped with fresh randomness at each restore. Returns 0
 * or -errno. */
int fg_identity_write(struct vm *vm, bool restored) __attribute__((warn_unused_result));
/* Sets the clone id (truncated to 63 bytes), fresh randomness and the
 * restore time; the generation is left as the restore set it. */
int fg_identity_set_clone(struct vm *vm, const char *clone_id) __attribute__((warn_unused_result));
uint64_t fg_identity_generation(struct vm *vm);

/* The "fguest" state unit. */
struct state_unit;
size_t fguest_units(struct vm *vm, struct state_unit *u, size_t max);

/* Syscall handler groups (fguest/sys_*.c). */
long fg_sys_mm(struct fg_call *c, bool *handled);
long fg_sys_io(struct fg_call *c, bool *handled);
long fg_sys_time(struct fg_call *c, bool *handled);
long fg_sys_thread(struct fg_call *c, bool *handled);
long fg_sys_misc(struct fg_call *c, bool *handled);

#endif
