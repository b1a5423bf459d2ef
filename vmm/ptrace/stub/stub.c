/* vmm/ptrace/stub/stub.c - the process platform's stub: a freestanding
 * static program (no libc) linked at STUB_BASE, far above guest memory.
 * forkvm starts it (execveat of a memfd holding it) to host a function
 * guest as a host process: it maps guest RAM at the guest's own addresses,
 * arms a fault handler on an alternate stack, confines itself with a
 * seccomp filter that kills the process on any system call made from
 * outside its own code, starts one thread per vCPU, says which threads it
 * has, and parks them. From then on the VMM's vCPU threads trace them
 * (PTRACE_SYSEMU): every system call of guest code stops before the kernel
 * runs it.
 *
 *   argv: forkvm-stub THREADS shared|private GPA,SIZE,OFFSET,PROT...  (hex)
 *   fd 3: guest RAM (STUB_FD_MEM), fd 4: the ready pipe (STUB_FD_READY)
 */
#include <stddef.h>
#include <stdint.h>

#include <asm/unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "stub.h"

#define PROT_RWX 7
#define MAP_SHARED_ 0x01
#define MAP_PRIVATE_ 0x02
#define MAP_FIXED_ 0x10
#define MAP_NORESERVE_ 0x4000
#define PR_SET_NO_NEW_PRIVS_ 38
#define PR_SET_SPECULATION_CTRL_ 53
#define PR_SPEC_STORE_BYPASS_ 0
#define PR_SPEC_INDIRECT_BRANCH_ 1
#define PR_SPEC_FORCE_DISABLE_ (1UL << 3)
#define FUTEX_WAIT_PRIVATE_ 128
#define SA_SIGINFO_ 0x4
#define SA_ONSTACK_ 0x08000000
#define SA_RESTORER_ 0x04000000
#define SA_NODEFER_ 0x40000000
#define CLONE_THREAD_FLAGS 0x50f00 /* VM FS FILES SIGHAND THREAD SYSVSEM */
#define STACK_SIZE 16384
#define ALTSTACK_SIZE 32768

/* Linked into the stub's text by the linker. */
extern char __executable_start[] __attribute__((visibility("hidden"))), etext[] __attribute__((visibility("hidden")));

static char stacks[STUB_MAX_THREADS][STACK_SIZE] __attribute__((aligned(16)));
static char altstacks[STUB_MAX_THREADS][ALTSTACK_SIZE] __attribute__((aligned(16)));
static int park_word;
static int started; /* threads that armed their alternate stack */

static inline long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
#define SYS(n, a, b, c) sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

/* The compiler may emit calls to these. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);

void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;
	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *p = d;
	const unsigned char *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

static void put(char *buf, size_t *at, size_t cap, const char *s)
{
	while (*s && *at < cap - 1)
		buf[(*at)++] = *s++;
}

static void put_num(char *buf, size_t *at, size_t cap, unsigned long v)
{
	char d[24];
	int n = 0;
	do
		d[n++] = (char)('0' + v % 10);
	while ((v /= 10) && n < 23);
	while (n && *at < cap - 1)
		buf[(*at)++] = d[--n];
}

__attribute__((noreturn)) static void die(const char *what, long err)
{
	char m[96];
	size_t at = 0;
	put(m, &at, sizeof(m), "error ");
	put(m, &at, sizeof(m), what);
	put(m, &at, sizeof(m), " ");
	put_num(m, &at, sizeof(m), (unsigned long)(err < 0 ? -err : err));
	put(m, &at, sizeof(m), "\n");
	SYS(__NR_write, STUB_FD_READY, m, at);
	for (;;)
		SYS(__NR_exit_group, 2, 0, 0);
}

/* Parses a hex number up to a comma or the end; returns the next char. */
static const char *hex(const char *s, uint64_t *v)
{
	*v = 0;
	for (; *s && *s != ','; s++) {
		unsigned d;
		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (*s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else
			die("argv", 22);
		*v = *v << 4 | d;
	}
	return *s ? s + 1 : s;
}

/* A guest fault arrives here on the alternate stack. The `syscall` stops
 * in the tracer, which reads the ucontext (trap number, error code, fault
 * address) and ends the VM: it is never executed, and nothing returns. */
static void on_fault(int sig, void *info, void *uc)
{
	for (;;)
		sys6((long)STUB_FAULT_NR, sig, (long)info, (long)uc, 0, 0, 0);
}

/* rt_sigaction's restorer; never used (a fault never returns). */
__asm__(".text\n"
	".globl stub_restorer\n"
	".hidden stub_restorer\n"
	"stub_restorer:\n"
	"	mov $15, %eax\n"
	"	syscall\n");
extern void stub_restorer(void) __attribute__((visibility("hidden")));

struct k_sigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};

struct k_stack {
	void *sp;
	int flags;
	size_t size;
};

/* Each thread: its alternate stack, for the fault handler. */
static void thread_signals(unsigned i)
{
	struct k_stack st;
	st.sp = altstacks[i];
	st.flags = 0;
	st.size = ALTSTACK_SIZE;
	long rc = SYS(__NR_sigaltstack, &st, 0, 0);
	if (rc < 0)
		die("sigaltstack", rc);
}

__attribute__((noreturn)) static void park(void)
{
	for (;;)
		sys6(__NR_futex, (long)&park_word, FUTEX_WAIT_PRIVATE_, 0, 0, 0, 0);
}

__attribute__((noreturn, used)) void stub_thread_main(uint64_t i);
__attribute__((noreturn, used)) void stub_thread_main(uint64_t i)
{
	thread_signals((unsigned)i);
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	sys6(__NR_futex, (long)&started, 129 /* FUTEX_WAKE_PRIVATE */, 1, 0, 0, 0);
	park();
}

/* Where the tracer makes the stub run a system call of its own (a guest's
 * munmap of a private mapping becomes a fresh anonymous one): `syscall`,
 * then a breakpoint that stops the thread in the tracer again. */
__asm__(".text\n"
	".globl stub_gadget\n"
	".hidden stub_gadget\n"
	"stub_gadget:\n"
	"	syscall\n"
	"	int3\n"
	"	jmp stub_gadget\n");
extern char stub_gadget[] __attribute__((visibility("hidden")));

static void put_hex(char *buf, size_t *at, size_t cap, uint64_t v)
{
	char d[17];
	int n = 0;
	do
		d[n++] = "0123456789abcdef"[v & 15];
	while ((v >>= 4) && n < 16);
	while (n && *at < cap - 1)
		buf[(*at)++] = d[--n];
}

/* clone(flags, sp): the child starts on sp, whose first word is its index. */
long stub_thread_clone(unsigned long flags, void *sp) __attribute__((visibility("hidden")));
__asm__(".text\n"
	".globl stub_thread_clone\n"
	".hidden stub_thread_clone\n"
	"stub_thread_clone:\n"
	"	mov $56, %eax\n"
	"	xor %edx, %edx\n"
	"	xor %r10d, %r10d\n"
	"	xor %r8d, %r8d\n"
	"	syscall\n"
	"	test %rax, %rax\n"
	"	jnz 1f\n"
	"	mov (%rsp), %rdi\n"
	"	call stub_thread_main\n"
	"1:	ret\n");

static void confine(void)
{
	uint64_t lo = (uint64_t)(uintptr_t)__executable_start, hi = (uint64_t)(uintptr_t)etext;
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		/* allowed: system calls made from the stub's own text */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, instruction_pointer) + 4),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)(lo >> 32), 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, instruction_pointer)),
		BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, (uint32_t)lo, 0, 2),
		BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, (uint32_t)hi, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* everything else: guest code's system calls, which the tracer
		 * stops before they reach here; if one ever did, the stub dies */
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	};
	struct sock_fprog prog;
	prog.len = sizeof(f) / sizeof(f[0]);
	prog.filter = f;
	if ((lo >> 32) != (hi >> 32))
		die("text", 22);
	/* Guest code runs natively here: no speculative store bypass, and no
	 * indirect branch prediction shared with other processes (STIBP/IBPB
	 * where the kernel offers it; ENXIO/EPERM where it cannot: the
	 * kernel's own mitigations apply then). */
	sys6(__NR_prctl, PR_SET_SPECULATION_CTRL_, PR_SPEC_STORE_BYPASS_, PR_SPEC_FORCE_DISABLE_, 0,
	     0, 0);
	sys6(__NR_prctl, PR_SET_SPECULATION_CTRL_, PR_SPEC_INDIRECT_BRANCH_, PR_SPEC_FORCE_DISABLE_,
	     0, 0, 0);
	long rc = sys6(__NR_prctl, PR_SET_NO_NEW_PRIVS_, 1, 0, 0, 0, 0);
	if (rc < 0)
		die("no_new_privs", rc);
	rc = SYS(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
	if (rc < 0)
		die("seccomp", rc);
}

__attribute__((noreturn, used)) void stub_main(long *sp);
__attribute__((noreturn, used)) void stub_main(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	uint64_t threads;
	long rc;

	if (argc < 4)
		die("argv", 22);
	hex(argv[1], &threads);
	if (threads < 1 || threads > STUB_MAX_THREADS)
		die("threads", 22);
	int shared = argv[2][0] == 's';
	/* Guest RAM at the guest's addresses; page 0 stays unmapped. */
	for (long a = 3; a < argc; a++) {
		uint64_t gpa, size, off, prot;
		const char *s = hex(argv[a], &gpa);
		s = hex(s, &size);
		s = hex(s, &off);
		hex(s, &prot);
		if (gpa == 0) {
			gpa += 4096;
			off += 4096;
			size -= 4096;
		}
		if (!size)
			continue;
		if (prot & ~(uint64_t)PROT_RWX)
			die("argv", 22);
		rc = sys6(__NR_mmap, (long)gpa, (long)size, (long)prot,
			  (shared ? MAP_SHARED_ : MAP_PRIVATE_) | MAP_FIXED_ | MAP_NORESERVE_,
			  STUB_FD_MEM, (long)off);
		if (rc != (long)gpa)
			die("mmap", rc);
	}
	SYS(__NR_close, STUB_FD_MEM, 0, 0);
	/* Every signal reaches the thread: the tracer's kick must stop it. */
	uint64_t none = 0;
	sys6(__NR_rt_sigprocmask, 2 /* SIG_SETMASK */, (long)&none, 0, 8, 0, 0);
	/* Nothing else of forkvm's stays open here. */
	sys6(__NR_close_range, STUB_FD_READY + 1, ~0U, 0, 0, 0, 0);

	/* Faults go to on_fault, on each thread's alternate stack. */
	static const int sigs[] = { 4, 5, 7, 8, 11 }; /* ILL TRAP BUS FPE SEGV */
	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		struct k_sigaction sa;
		sa.handler = (void *)on_fault;
		sa.flags = SA_SIGINFO_ | SA_ONSTACK_ | SA_RESTORER_ | SA_NODEFER_;
		sa.restorer = (void *)stub_restorer;
		sa.mask = 0;
		rc = sys6(__NR_rt_sigaction, sigs[i], (long)&sa, 0, 8, 0, 0);
		if (rc < 0)
			die("sigaction", rc);
	}
	thread_signals(0);
	confine();

	/* The other vCPUs' threads, parked: "ready GADGET TID0 TID1..." once
	 * every one has its alternate stack. */
	char msg[16 * STUB_MAX_THREADS + 32];
	size_t at = 0;
	put(msg, &at, sizeof(msg), "ready ");
	put_hex(msg, &at, sizeof(msg), (uint64_t)(uintptr_t)stub_gadget);
	put(msg, &at, sizeof(msg), " ");
	put_num(msg, &at, sizeof(msg), (unsigned long)SYS(__NR_getpid, 0, 0, 0));
	for (uint64_t i = 1; i < threads; i++) {
		uint64_t *tsp = (uint64_t *)(void *)(stacks[i] + STACK_SIZE) - 2;
		tsp[0] = i;
		rc = stub_thread_clone(CLONE_THREAD_FLAGS, tsp);
		if (rc < 0)
			die("clone", rc);
		put(msg, &at, sizeof(msg), " ");
		put_num(msg, &at, sizeof(msg), (unsigned long)rc);
	}
	for (;;) {
		int n = __atomic_load_n(&started, __ATOMIC_SEQ_CST);
		if ((uint64_t)n >= threads - 1)
			break;
		sys6(__NR_futex, (long)&started, FUTEX_WAIT_PRIVATE_, n, 0, 0, 0);
	}
	put(msg, &at, sizeof(msg), "\n");
	if (SYS(__NR_write, STUB_FD_READY, msg, at) != (long)at)
		die("write", 5);
	SYS(__NR_close, STUB_FD_READY, 0, 0);
	park();
}

__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call stub_main\n");
