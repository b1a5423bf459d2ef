/* tests/unit/test_exits.c - the exit dispatcher vcpu_dispatch_exit() fed
 * with hand-made struct kvm_run contents on a VM built without KVM: the
 * system call port, the exception ports, unknown ports and MMIO, and the
 * other KVM exit reasons. vm_terminate keeps only the first reason, so
 * every case uses a fresh VM. */
#include <criterion/criterion.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#include "common/util.h"
#include "tests/lib/unit.h"
#include "vmm/vm.h"
#include "vmm/x86/x86.h"

static struct vm *vm;
static struct vcpu *v;
static struct kvm_run *run;

static void make(unsigned vcpus)
{
	char err[512] = "";
	char *hello = ut_payload("hello");
	struct ut_vm_opts o = { .payload = "hello", .vcpus = vcpus };

	cr_assert(ut_file_exists(hello), "%s is missing: run make guest", hello);
	free(hello);
	cr_assert_eq(ut_vm_create(&o, err, sizeof(err), &vm), 0, "%s", err);
	cr_assert_eq(vm->run_size, 0, "no KVM: no kvm_run size bound");
	/* vm_create_nokvm allocates sizeof(struct kvm_run) + 4096 per vCPU. */
	vm->run_size = (int)(sizeof(struct kvm_run) + 4096);
	v = &vm->vcpus[0];
	run = v->run;
	cr_assert_not_null(run);
	vm->clock_base = time_mono_ns() - 1;
}

static void setup(void)
{
	make(1);
}

static void teardown(void)
{
	vm_destroy(vm);
	vm = NULL;
}

TestSuite(exits, .init = setup, .fini = teardown);

static struct vm_exit_info exit_info(void)
{
	struct vm_exit_info ei;
	vm_get_exit_info(vm, &ei);
	return ei;
}

static void io_exit(uint16_t port, uint8_t dir, uint8_t size, uint32_t count)
{
	run->exit_reason = KVM_EXIT_IO;
	run->io.direction = dir;
	run->io.size = size;
	run->io.port = port;
	run->io.count = count;
	run->io.data_offset = sizeof(struct kvm_run);
}

static void expect_stop(const char *const want[], int status, bool faulted)
{
	enum vcpu_action a = vcpu_dispatch_exit(v);
	struct vm_exit_info ei = exit_info();

	cr_assert_eq(a, VCPU_STOP, "action %d", a);
	cr_assert(ei.exited, "the VM records why it stopped");
	cr_assert_eq(ei.faulted, faulted, "faulted %d: %s", ei.faulted, ei.reason);
	cr_assert_eq(ei.status, status, "status %d: %s", ei.status, ei.reason);
	for (unsigned i = 0; want[i]; i++)
		cr_assert(strstr(ei.reason, want[i]), "reason '%s' lacks '%s'", ei.reason, want[i]);
	cr_assert(__atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST), "the VM is stopping");
}

#define STOP(status, faulted, ...) expect_stop((const char *const[]){ __VA_ARGS__, NULL }, status, faulted)

/* ------------------------------------------------------------ syscall port */

Test(exits, syscall_port_serves_getpid)
{
	struct kvm_regs *r = &run->s.regs.regs;
	const uint64_t user_rsp = vm->vcpus[0].start_regs.rsp - 64;
	uint64_t frame[5];

	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	memset(r, 0, sizeof(*r));
	r->rax = SYS_getpid;
	r->rcx = 0x401234;         /* user rip (saved by syscall) */
	r->r11 = 0x246 | 0x3000 | 0x4000; /* user rflags with IOPL and NT set */
	r->rsp = user_rsp;
	r->rip = X86_TRAMP_SYSCALL + 2;
	run->kvm_dirty_regs = 0;

	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_CONTINUE);
	cr_assert_eq(r->rax, 1, "getpid() = 1");
	cr_assert_eq(r->rsp, x86_kstack_top(0) - 40, "rsp points at the iret frame on vCPU 0's stack");
	cr_assert(run->kvm_dirty_regs & KVM_SYNC_X86_REGS, "registers marked dirty");
	cr_assert_eq(gmem_read(&vm->mem, r->rsp, frame, sizeof(frame)), 0);
	cr_assert_eq(frame[0], 0x401234, "rip");
	cr_assert_eq(frame[1], X86_SEL_UCODE, "cs");
	cr_assert_eq(frame[2], 0x46, "rflags sanitised: 0x%llx", (unsigned long long)frame[2]);
	cr_assert_eq(frame[3], user_rsp, "rsp");
	cr_assert_eq(frame[4], X86_SEL_UDATA, "ss");
	cr_assert_eq(vm->syscalls, 1);
	cr_assert(!exit_info().exited);
}

Test(exits, syscall_port_passes_arguments)
{
	struct kvm_regs *r = &run->s.regs.regs;
	uint64_t buf = 16 * MiB;

	/* mmap(16M, 4096, RW, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) */
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	memset(r, 0, sizeof(*r));
	r->rax = SYS_mmap;
	r->rdi = buf;
	r->rsi = 4096;
	r->rdx = 3;
	r->r10 = 0x32;
	r->r8 = (uint64_t)-1;
	r->r9 = 0;
	r->rcx = 0x401000;
	r->r11 = 0x202;
	r->rsp = 0x800000;
	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_CONTINUE);
	cr_assert_eq(r->rax, buf, "rdi, rsi, rdx, r10, r8, r9 are the arguments");
	/* write(2, buf, 0) */
	r->rax = SYS_write;
	r->rdi = 2;
	r->rsi = buf;
	r->rdx = 0;
	r->rsp = 0x800000;
	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_CONTINUE);
	cr_assert_eq(r->rax, 0);
	/* an unknown call returns -ENOSYS in rax */
	r->rax = 400;
	r->rsp = 0x800000;
	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_CONTINUE);
	cr_assert_eq((int64_t)r->rax, -ENOSYS);
	cr_assert_eq(vm->syscalls_enosys, 1);
}

Test(exits, syscall_exit_group_stops)
{
	struct kvm_regs *r = &run->s.regs.regs;

	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	r->rax = SYS_exit_group;
	r->rdi = 42;
	STOP(42, false, "42");
}

Test(exits, syscall_port_read_stops)
{
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_IN, 1, 1);
	run->s.regs.regs.rax = SYS_getpid;
	STOP(128 + SIGSEGV, true, "system call port");
	cr_assert_eq(vm->syscalls, 0, "nothing was served");
}

Test(exits, syscall_on_an_idle_vcpu_stops)
{
	vm_destroy(vm);
	make(2);
	v = &vm->vcpus[1];
	run = v->run;
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	run->s.regs.regs.rax = SYS_getpid;
	STOP(128 + SIGSEGV, true, "vCPU 1", "no guest thread");
}

Test(exits, thread_exit_idles_the_vcpu)
{
	struct kvm_regs *r;
	const uint64_t flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;

	vm_destroy(vm);
	make(2);
	/* clone() from vCPU 0 through the port: the child lands on vCPU 1. */
	r = &run->s.regs.regs;
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	r->rax = SYS_clone;
	r->rdi = flags;
	r->rsi = 0x900000;
	r->rcx = 0x401500;
	r->r11 = 0x202;
	r->rsp = 0x800000;
	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_CONTINUE);
	cr_assert_eq(r->rax, 2, "the child's tid");
	cr_assert_not_null(vm->vcpus[1].gt);
	cr_assert_eq(vm->vcpus[1].start_regs.rsp, 0x900000);
	cr_assert_eq(vm->vcpus[1].start_regs.rip, 0x401500);

	/* The child calls exit(): its vCPU goes idle, the VM keeps running. */
	v = &vm->vcpus[1];
	run = v->run;
	r = &run->s.regs.regs;
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	r->rax = SYS_exit;
	r->rdi = 0;
	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_THREAD_EXIT);
	cr_assert_null(vm->vcpus[1].gt);
	cr_assert(!exit_info().exited);

	/* The main thread's exit() is the last one: the VM stops. */
	v = &vm->vcpus[0];
	run = v->run;
	r = &run->s.regs.regs;
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	r->rax = SYS_exit;
	r->rdi = 9;
	STOP(9, false, "last thread");
}

/* ------------------------------------------------------------ exceptions */

/* Places an exception frame at the top of vCPU 0's ring-0 stack and points
 * rsp at it, as the CPU leaves it when the stub's out instruction exits. */
static void exc_exit(unsigned vector, uint64_t err, uint64_t rip)
{
	uint64_t w[6] = { err, rip, X86_SEL_UCODE, 0x10246, 0x7fff00, X86_SEL_UDATA };
	bool ec = x86_exc_has_error_code(vector);
	uint64_t at = x86_kstack_top(0) - (ec ? 48 : 40);

	cr_assert_eq(gmem_write(&vm->mem, at, ec ? w : w + 1, ec ? 48 : 40), 0);
	io_exit((uint16_t)(X86_PORT_EXC_BASE + vector), KVM_EXIT_IO_OUT, 1, 1);
	run->s.regs.regs.rsp = at;
	run->s.regs.regs.rip = X86_TRAMP_EXC(vector) + 2;
}

Test(exits, page_fault)
{
	exc_exit(14, 0x6 /* user write, not present */, 0x401111);
	run->s.regs.sregs.cr2 = 0xdeadb000;
	STOP(128 + SIGSEGV, true, "#PF", "0x401111", "0xdeadb000", "write", "not present", "user");
	cr_assert_eq(139, 128 + SIGSEGV);
}

Test(exits, page_fault_on_instruction_fetch)
{
	exc_exit(14, 0x15 /* user fetch, protection */, 0x500000);
	run->s.regs.sregs.cr2 = 0x500000;
	STOP(139, true, "#PF", "instruction fetch", "protection");
}

Test(exits, invalid_opcode)
{
	exc_exit(6, 0, 0x402222);
	STOP(132, true, "#UD", "0x402222", "vector 6");
}

Test(exits, divide_error)
{
	exc_exit(0, 0, 0x403333);
	STOP(136, true, "#DE", "0x403333");
}

Test(exits, general_protection_with_error_code)
{
	exc_exit(13, 0x1234, 0x404444);
	STOP(139, true, "#GP", "0x404444", "error code 0x1234");
}

Test(exits, breakpoint_is_sigtrap)
{
	exc_exit(3, 0, 0x405555);
	STOP(128 + SIGTRAP, true, "#BP", "0x405555");
}

Test(exits, alignment_check_is_sigbus)
{
	exc_exit(17, 0, 0x406666);
	STOP(128 + SIGBUS, true, "#AC", "0x406666");
}

Test(exits, simd_is_sigfpe)
{
	exc_exit(19, 0, 0x407777);
	STOP(128 + SIGFPE, true, "#XM");
}

Test(exits, unreadable_exception_frame)
{
	io_exit(X86_PORT_EXC_BASE + 14, KVM_EXIT_IO_OUT, 1, 1);
	run->s.regs.regs.rsp = vm->mem.gpa_end - 8;
	STOP(139, true, "#PF", "unreadable");
}

/* ------------------------------------------------------------ other ports, MMIO */

Test(exits, unknown_port)
{
	io_exit(0x3f8, KVM_EXIT_IO_OUT, 1, 1);
	run->s.regs.regs.rip = 0x401abc;
	STOP(139, true, "0x3f8", "0x401abc", "wrote");
}

Test(exits, unknown_port_read)
{
	io_exit(0x60, KVM_EXIT_IO_IN, 4, 1);
	STOP(139, true, "0x60", "read", "4 bytes");
}

Test(exits, access_straddling_the_syscall_port)
{
	/* 0xdf..0xe0 covers the last exception port and the syscall port. */
	io_exit(X86_PORT_EXC_BASE + 31, KVM_EXIT_IO_OUT, 2, 1);
	STOP(139, true, "0xdf");
}

Test(exits, mmio)
{
	run->exit_reason = KVM_EXIT_MMIO;
	run->mmio.phys_addr = 0xfee00030;
	run->mmio.len = 4;
	run->mmio.is_write = 1;
	run->s.regs.regs.rip = 0x408888;
	STOP(139, true, "MMIO", "0xfee00030", "wrote", "0x408888");
}

Test(exits, mmio_read)
{
	run->exit_reason = KVM_EXIT_MMIO;
	run->mmio.phys_addr = 0xc0000000;
	run->mmio.len = 8;
	run->mmio.is_write = 0;
	STOP(139, true, "0xc0000000", "read");
}

/* ------------------------------------------------------------ malformed I/O */

Test(exits, io_size_3)
{
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 3, 1);
	STOP(1, true, "malformed");
	cr_assert_eq(vm->syscalls, 0);
}

Test(exits, io_count_0)
{
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 0);
	STOP(1, true, "malformed");
}

Test(exits, io_data_beyond_the_run_area)
{
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	run->io.data_offset = (uint64_t)vm->run_size; /* the byte right after */
	STOP(1, true, "malformed");
}

Test(exits, io_data_straddling_the_run_area)
{
	io_exit(X86_PORT_EXC_BASE, KVM_EXIT_IO_OUT, 4, 2);
	run->io.data_offset = (uint64_t)vm->run_size - 4; /* 8 bytes from 4 before the end */
	STOP(1, true, "malformed");
}

Test(exits, io_data_offset_huge)
{
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 4, 0x40000000);
	run->io.data_offset = UINT64_MAX - 8;
	STOP(1, true, "malformed");
}

Test(exits, io_at_the_very_end_is_fine)
{
	struct kvm_regs *r = &run->s.regs.regs;

	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	run->io.data_offset = (uint64_t)vm->run_size - 1; /* the last byte */
	r->rax = SYS_getpid;
	r->rsp = 0x800000;
	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_CONTINUE);
	cr_assert_eq(r->rax, 1);
}

/* ------------------------------------------------------------ other exits */

Test(exits, shutdown_is_a_triple_fault)
{
	run->exit_reason = KVM_EXIT_SHUTDOWN;
	run->s.regs.regs.rip = 0x409999;
	STOP(139, true, "triple fault", "0x409999");
}

Test(exits, internal_error)
{
	run->exit_reason = KVM_EXIT_INTERNAL_ERROR;
	run->internal.suberror = KVM_INTERNAL_ERROR_EMULATION;
	run->s.regs.regs.rip = 0x40aaaa;
	STOP(128 + SIGILL, true, "internal error 1", "emulate", "0x40aaaa");
}

Test(exits, fail_entry)
{
	run->exit_reason = KVM_EXIT_FAIL_ENTRY;
	run->fail_entry.hardware_entry_failure_reason = 0x80000021;
	STOP(1, true, "0x80000021");
}

Test(exits, hlt)
{
	run->exit_reason = KVM_EXIT_HLT;
	run->s.regs.regs.rip = 0x40bbbb;
	STOP(139, true, "halted", "0x40bbbb");
}

Test(exits, system_event)
{
	run->exit_reason = KVM_EXIT_SYSTEM_EVENT;
	run->system_event.type = KVM_SYSTEM_EVENT_SHUTDOWN;
	STOP(0, false, "shutdown");
}

Test(exits, intr_continues)
{
	run->exit_reason = KVM_EXIT_INTR;
	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_CONTINUE);
	cr_assert(!exit_info().exited);
	cr_assert(!__atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST));
}

Test(exits, unknown_reason)
{
	run->exit_reason = 9999;
	run->s.regs.regs.rip = 0x40cccc;
	STOP(1, true, "9999", "0x40cccc");
}

Test(exits, first_reason_wins)
{
	run->exit_reason = KVM_EXIT_HLT;
	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_STOP);
	run->exit_reason = 9999;
	cr_assert_eq(vcpu_dispatch_exit(v), VCPU_STOP);
	struct vm_exit_info ei = exit_info();
	cr_assert(strstr(ei.reason, "halted"), "%s", ei.reason);
	cr_assert_eq(ei.status, 139);
}
