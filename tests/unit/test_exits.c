/* tests/unit/test_exits.c - how a guest thread's exits are handled, in
 * two layers, on VMs built without KVM:
 *   - the KVM platform's decoder kvm_exit_decode() fed with hand-made
 *     struct kvm_run contents: the system call port, the exception ports
 *     (their frames read from guest memory), unknown ports and MMIO, the
 *     other KVM exit reasons;
 *   - the function guest's handlers of the platform-neutral exits
 *     (fguest_exit_syscall, fguest_exit_fault) on platform_none, whose
 *     registers the tests set.
 * vm_terminate keeps only the first reason, so every case uses a fresh VM. */
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
#include "vmm/fguest/fguest.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/x86.h"
#include "vmm/vm.h"

#define RUN_SIZE ((int)(sizeof(struct kvm_run) + 4096))

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
	v = &vm->vcpus[0];
	free(run);
	run = calloc(1, (size_t)RUN_SIZE);
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
	free(run);
	run = NULL;
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

static struct vexit decode(bool *handled)
{
	struct vexit e = { .kind = VEXIT_KICK };
	bool h = false;
	kvm_exit_decode(v, -1, run, RUN_SIZE, &e, &h);
	if (handled)
		*handled = h;
	return e;
}

static void check_stopped(const char *const want[], int status, bool faulted)
{
	struct vm_exit_info ei = exit_info();

	cr_assert(ei.exited, "the VM records why it stopped");
	cr_assert_eq(ei.faulted, faulted, "faulted %d: %s", ei.faulted, ei.reason);
	cr_assert_eq(ei.status, status, "status %d: %s", ei.status, ei.reason);
	for (unsigned i = 0; want[i]; i++)
		cr_assert(strstr(ei.reason, want[i]), "reason '%s' lacks '%s'", ei.reason, want[i]);
	cr_assert(__atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST), "the VM is stopping");
}

/* The exit in run ends the VM; a fault goes through the function guest's
 * report, as the vCPU loop does. */
static void expect_stop(const char *const want[], int status, bool faulted)
{
	struct vexit e = decode(NULL);
	if (e.kind == VEXIT_FAULT)
		cr_assert_eq(fguest_exit_fault(v, &e), VCPU_STOP);
	else
		cr_assert_eq(e.kind, VEXIT_STOP, "exit kind %d", e.kind);
	check_stopped(want, status, faulted);
}

#define STOP(status, faulted, ...) expect_stop((const char *const[]){ __VA_ARGS__, NULL }, status, faulted)

/* ------------------------------------------------------------ syscall port */

Test(exits, syscall_port_is_a_system_call)
{
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	bool handled = true;
	struct vexit e = decode(&handled);
	cr_assert_eq(e.kind, VEXIT_SYSCALL);
	cr_assert(!handled);
	cr_assert(!exit_info().exited);
}

Test(exits, syscall_port_read_stops)
{
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_IN, 1, 1);
	STOP(128 + SIGSEGV, true, "system call port");
	cr_assert_eq(vm->syscalls, 0, "nothing was served");
}

/* The function guest's side: the registers at the call (platform_none
 * keeps them), the result in rax. */
static struct vregs call(struct vcpu *cv, uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2,
			 enum vcpu_action want)
{
	struct vregs r = { .rax = nr, .rdi = a0, .rsi = a1, .rdx = a2, .rip = 0x401234,
			   .rcx = 0x401234, .r11 = 0x246, .rflags = 0x246, .rsp = 0x800000 };
	cr_assert_eq(platform_none.set_regs(cv, &r), 0);
	enum vcpu_action a = fguest_exit_syscall(cv);
	cr_assert_eq(a, want, "action %d for call %llu", a, (unsigned long long)nr);
	cr_assert_eq(platform_none.get_regs(cv, &r), 0);
	return r;
}

Test(exits, syscall_serves_getpid)
{
	struct vregs r = call(v, SYS_getpid, 0, 0, 0, VCPU_CONTINUE);
	cr_assert_eq(r.rax, 1, "getpid() = 1");
	cr_assert_eq(r.rip, 0x401234, "the platform resumes after the call");
	cr_assert_eq(vm->syscalls, 1);
	cr_assert(!exit_info().exited);
}

Test(exits, syscall_passes_arguments)
{
	uint64_t buf = 16 * MiB;
	struct vregs r = { .rax = SYS_mmap, .rdi = buf, .rsi = 4096, .rdx = 3, .r10 = 0x32,
			   .r8 = (uint64_t)-1, .r9 = 0, .rip = 0x401000, .rsp = 0x800000 };

	/* mmap(16M, 4096, RW, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) */
	cr_assert_eq(platform_none.set_regs(v, &r), 0);
	cr_assert_eq(fguest_exit_syscall(v), VCPU_CONTINUE);
	cr_assert_eq(platform_none.get_regs(v, &r), 0);
	cr_assert_eq(r.rax, buf, "rdi, rsi, rdx, r10, r8, r9 are the arguments");
	/* write(2, buf, 0) */
	r = call(v, SYS_write, 2, buf, 0, VCPU_CONTINUE);
	cr_assert_eq(r.rax, 0);
	/* an unknown call returns -ENOSYS in rax */
	r = call(v, 400, 0, 0, 0, VCPU_CONTINUE);
	cr_assert_eq((int64_t)r.rax, -ENOSYS);
	cr_assert_eq(vm->syscalls_enosys, 1);
}

Test(exits, syscall_exit_group_stops)
{
	call(v, SYS_exit_group, 42, 0, 0, VCPU_STOP);
	check_stopped((const char *const[]){ "42", NULL }, 42, false);
}

Test(exits, syscall_on_an_idle_vcpu_stops)
{
	vm_destroy(vm);
	make(2);
	call(&vm->vcpus[1], SYS_getpid, 0, 0, 0, VCPU_STOP);
	check_stopped((const char *const[]){ "vCPU 1", "no guest thread", NULL }, 128 + SIGSEGV, true);
}

Test(exits, thread_exit_idles_the_vcpu)
{
	const uint64_t flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;

	vm_destroy(vm);
	make(2);
	/* clone() from vCPU 0: the child lands on vCPU 1. */
	struct vregs r = call(v, SYS_clone, flags, 0x900000, 0, VCPU_CONTINUE);
	cr_assert_eq(r.rax, 2, "the child's tid");
	cr_assert_not_null(vm->vcpus[1].gt);
	cr_assert_eq(vm->vcpus[1].start.regs.rsp, 0x900000);
	cr_assert_eq(vm->vcpus[1].start.regs.rip, 0x401234);
	cr_assert_eq(vm->vcpus[1].start.regs.rax, 0, "the child returns 0");

	/* The child calls exit(): its vCPU goes idle, the VM keeps running. */
	call(&vm->vcpus[1], SYS_exit, 0, 0, 0, VCPU_THREAD_EXIT);
	cr_assert_null(vm->vcpus[1].gt);
	cr_assert(!exit_info().exited);

	/* The main thread's exit() is the last one: the VM stops. */
	call(v, SYS_exit, 9, 0, 0, VCPU_STOP);
	check_stopped((const char *const[]){ "last thread", NULL }, 9, false);
}

/* ------------------------------------------------------------ exceptions */

/* Places an exception frame at the top of vCPU 0's ring-0 stack and points
 * rsp at it, as the CPU leaves it when the stub's out instruction exits. */
static void exc_exit(unsigned vector, uint64_t err, uint64_t rip)
{
	uint64_t w[6] = { err, rip, X86_SEL_UCODE, 0x10246, 0x7fff00, X86_SEL_UDATA };
	bool ec = cpu_exc_has_error_code(vector);
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
	run->io.data_offset = (uint64_t)RUN_SIZE; /* the byte right after */
	STOP(1, true, "malformed");
}

Test(exits, io_data_straddling_the_run_area)
{
	io_exit(X86_PORT_EXC_BASE, KVM_EXIT_IO_OUT, 4, 2);
	run->io.data_offset = (uint64_t)RUN_SIZE - 4; /* 8 bytes from 4 before the end */
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
	io_exit(X86_PORT_SYSCALL, KVM_EXIT_IO_OUT, 1, 1);
	run->io.data_offset = (uint64_t)RUN_SIZE - 1; /* the last byte */
	cr_assert_eq(decode(NULL).kind, VEXIT_SYSCALL);
	cr_assert(!exit_info().exited);
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

Test(exits, intr_is_a_kick)
{
	run->exit_reason = KVM_EXIT_INTR;
	cr_assert_eq(decode(NULL).kind, VEXIT_KICK);
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
	cr_assert_eq(decode(NULL).kind, VEXIT_STOP);
	run->exit_reason = 9999;
	cr_assert_eq(decode(NULL).kind, VEXIT_STOP);
	struct vm_exit_info ei = exit_info();
	cr_assert(strstr(ei.reason, "halted"), "%s", ei.reason);
	cr_assert_eq(ei.status, 139);
}
