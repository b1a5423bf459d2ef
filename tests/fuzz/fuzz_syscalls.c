/* tests/fuzz/fuzz_syscalls.c - libFuzzer target: a hostile function
 * guest's system calls (docs/function-guest.md). Each input gets a fresh
 * VM built without KVM (vm_create_nokvm with the payload of fuzz_vm.h:
 * 2 vCPUs, 16 MiB, console off) whose main thread maps a 64 KiB scratch
 * area; then every call goes in the way a vCPU thread delivers it: the
 * call number and arguments in the vCPU's user registers (platform_none
 * holds them), fguest_exit_syscall() as the vCPU loop calls it on a
 * VEXIT_SYSCALL -> fg_syscall() and the handlers (memory map, fds, the
 * agent channel and the console, time, futexes, threads, signals,
 * identity, exit) against guest memory, and the result in rax. The agent channel (guest fd 0/1) is a real socket with a
 * client connected through the event loop, as forkctl or forkd would be:
 * the client sends the scratch bytes, then shuts its side down.
 *
 * Input: u16 n, n bytes copied into the scratch area (at most 64 KiB),
 * then records of 57 bytes, at most 64: u8 vCPU (modulo 2; a vCPU without
 * a guest thread is replaced by one with a thread), u64 call number, u64
 * arguments x 6, little-endian. An argument whose top 16 bits are 0xfffe
 * is a pointer into the scratch area: scratch + its low 32 bits. Calls
 * stop when the VM stops (exit_group, a fatal signal) or no thread is left.
 *
 * Nothing blocks: vcpu_wait and vcpu_poll are replaced at link time
 * (FUZZ_WRAP_syscalls in the Makefile) by the same checks without the
 * sleep: a call whose condition does not hold at once sees its deadline
 * pass, or, without one, the VM stop (what ends an endless wait). Nothing
 * leaves the process either: exit and kill end the VM, not the host.
 * FUZZ_SHOW=1 in the environment prints every call and its result. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "tests/fuzz/fuzz_vm.h"
#include "vmm/fguest/fguest.h"
#include "vmm/gmem.h"
#include "vmm/platform.h"
#include "vmm/vm.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int __wrap_vcpu_wait(struct vcpu *v, bool (*pred)(void *arg), void *arg, uint64_t deadline);
int __wrap_vcpu_poll(struct vcpu *v, int fd);

#define NR_VCPUS 2
#define MEMORY (16ULL << 20)
#define SCRATCH_LEN 0x10000ULL
#define MAX_CALLS 64
#define RECORD (1 + 7 * 8)
#define PTR_TAG 0xfffeULL

static bool show;
static struct loop *fuzz_loop;
static char dir[64];
static struct sockaddr_un agent = { .sun_family = AF_UNIX };

/* ------------------------------------------------------------ waits */

int __wrap_vcpu_wait(struct vcpu *v, bool (*pred)(void *arg), void *arg, uint64_t deadline)
{
	struct vm *vm = v->vm;

	if (v->restore_deadline) {
		deadline = v->restore_deadline;
		v->restore_deadline = 0;
	}
	v->sys_deadline = deadline;
	if (pred(arg))
		return 0;
	if (__atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST))
		return -ESHUTDOWN;
	/* It would sleep, and nothing else runs here to wake it. */
	return deadline ? -ETIMEDOUT : -ESHUTDOWN;
}

int __wrap_vcpu_poll(struct vcpu *v, int fd)
{
	(void)v;
	(void)fd;
	return -ESHUTDOWN;
}

/* ------------------------------------------------------------ calls */

/* Where each guest thread is in its program (what `syscall` saves). */
struct user_ctx {
	uint64_t rip, rsp, rflags;
};

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* One system call on vCPU v, as the vCPU loop hands it over. */
static enum vcpu_action call(struct vcpu *v, struct user_ctx *u, uint64_t nr, const uint64_t a[6],
			     long *ret)
{
	struct vregs r = { 0 };

	if (v->start_pending) {
		/* A new thread (clone): its first registers. */
		u->rip = v->start.regs.rip;
		u->rsp = v->start.regs.rsp;
		u->rflags = v->start.regs.rflags;
		v->start_pending = false;
	}
	r.rax = nr;
	r.rdi = a[0];
	r.rsi = a[1];
	r.rdx = a[2];
	r.r10 = a[3];
	r.r8 = a[4];
	r.r9 = a[5];
	r.rip = r.rcx = u->rip;
	r.rflags = r.r11 = u->rflags;
	r.rsp = u->rsp;
	if (platform_none.set_regs(v, &r) < 0)
		abort();
	enum vcpu_action act = fguest_exit_syscall(v);
	if (platform_none.get_regs(v, &r) < 0)
		abort();
	*ret = (long)r.rax;
	return act;
}

static struct vcpu *pick_vcpu(struct vm *vm, unsigned want)
{
	struct vcpu *v = &vm->vcpus[want % vm->nr_vcpus];

	if (v->gt)
		return v;
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		if (vm->vcpus[i].gt)
			return &vm->vcpus[i];
	return NULL;
}

/* The agent's client: connected, accepted by the loop (chan.c,
 * on_listen), sent data and its end of input. Returns its fd. */
static int agent_client(struct vm *vm, const void *data, size_t len)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	vm->loop = fuzz_loop; /* what vm_create() sets */
	if (fd < 0 || chan_attach(&vm->agent, fuzz_loop) < 0 ||
	    connect(fd, (struct sockaddr *)&agent, sizeof(agent)) < 0 ||
	    loop_run_once(fuzz_loop, 1000) < 0 || vm->agent.conn_fd < 0)
		abort();
	if (len && send(fd, data, len, MSG_NOSIGNAL) != (ssize_t)len)
		abort();
	shutdown(fd, SHUT_WR);
	return fd;
}

static void cleanup(void)
{
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	show = getenv("FUZZ_SHOW") != NULL;
	snprintf(dir, sizeof(dir), "/tmp/fuzz-syscalls-XXXXXX");
	if (!mkdtemp(dir) || loop_create(&fuzz_loop) < 0)
		abort();
	atexit(cleanup);
	snprintf(agent.sun_path, sizeof(agent.sun_path), "%s/agent.sock", dir);
	fuzz_payload_path();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct user_ctx ctx[NR_VCPUS];
	struct vm *vm = NULL;
	uint64_t scratch;
	long ret;

	if (size < 2)
		return 0;
	if (fuzz_vm_create(NR_VCPUS, MEMORY, agent.sun_path, "fuzzhost", &vm) < 0)
		abort();
	vm->clock_base = time_mono_ns() - 1; /* what vm_start() sets */
	for (unsigned i = 0; i < NR_VCPUS; i++)
		ctx[i] = (struct user_ctx){ vm->vcpus[i].start.regs.rip, vm->vcpus[i].start.regs.rsp,
					    vm->vcpus[i].start.regs.rflags };

	/* The scratch area: the main thread maps it, the input fills it. */
	const uint64_t map[6] = { 0, SCRATCH_LEN, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, (uint64_t)-1, 0 };
	if (call(&vm->vcpus[0], &ctx[0], SYS_mmap, map, &ret) != VCPU_CONTINUE || ret < 0)
		abort();
	scratch = (uint64_t)ret;
	size_t n = MIN((size_t)(data[0] | data[1] << 8), MIN(size - 2, (size_t)SCRATCH_LEN));
	if (gmem_write(&vm->mem, scratch, data + 2, n) < 0)
		abort();
	int client = agent_client(vm, data + 2, n);

	const uint8_t *p = data + 2 + n, *end = data + size;
	for (int k = 0; k < MAX_CALLS && end - p >= RECORD; k++, p += RECORD) {
		struct vcpu *v = pick_vcpu(vm, p[0]);
		uint64_t nr = le64(p + 1), a[6];
		if (!v)
			break;
		for (int i = 0; i < 6; i++) {
			a[i] = le64(p + 9 + 8 * i);
			if (a[i] >> 48 == PTR_TAG)
				a[i] = scratch + (a[i] & 0xffffffffULL);
		}
		enum vcpu_action act = call(v, &ctx[v->id], nr, a, &ret);
		if (show)
			fprintf(stderr, "vCPU %u: %llu(0x%llx, 0x%llx, 0x%llx, 0x%llx, 0x%llx, 0x%llx) = %ld%s\n",
				v->id, (unsigned long long)nr, (unsigned long long)a[0],
				(unsigned long long)a[1], (unsigned long long)a[2],
				(unsigned long long)a[3], (unsigned long long)a[4],
				(unsigned long long)a[5], ret,
				act == VCPU_STOP ? " (the VM stops)" :
				act == VCPU_THREAD_EXIT ? " (the thread ends)" : "");
		if (act == VCPU_STOP)
			break;
	}
	close(client);
	vm_destroy(vm);
	return 0;
}
