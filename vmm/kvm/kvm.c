/* vmm/kvm/kvm.c - the KVM platform: a KVM VM (memory slots before the
 * in-kernel irqchip, PIT, CPUID), one KVM vCPU per vCPU, KVM_RUN and its
 * exits. A function guest runs in ring 3 on the machine of x86.c; its
 * `syscall` enters a two-instruction ring-0 trampoline (`out; iretq`)
 * whose port exit is the system call, and its exceptions reach ports of
 * their own through the IDT. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/util.h"
#include "common/log.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/kvmio.h"
#include "vmm/kvm/x86.h"
#include "vmm/loader.h"
#include "vmm/snapshot.h"
#include "vmm/vm.h"

#define XSAVE_BV_OFFSET 512
#define XSAVE_XCOMP_BV_OFFSET 520

/* ------------------------------------------------------------ probe */

static int kvm_probe(char *why, size_t len)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC), vmfd;

	if (fd < 0) {
		int rc = -errno;
		snprintf(why, len, "cannot open /dev/kvm: %s", strerror(errno));
		return rc;
	}
	vmfd = kvm_ioctl(fd, KVM_CREATE_VM, 0);
	if (vmfd < 0) {
		int rc = -errno;
		snprintf(why, len, "/dev/kvm cannot create a VM: %s", strerror(errno));
		close(fd);
		return rc;
	}
	close(vmfd);
	close(fd);
	return 0;
}

/* ------------------------------------------------------------ VM */

static void kick_handler(int sig)
{
	(void)sig; /* only interrupts KVM_RUN */
}

static int kvm_open(struct vm *vm, struct kvm_vm *k, char *err, size_t errlen)
{
	static const struct {
		int cap;
		const char *name;
	} caps[] = {
		{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
		{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
		{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
		{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
		{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
		{ KVM_CAP_XCRS, "KVM_CAP_XCRS" },
	};
	int rc;

	(void)vm;
	k->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->kvm_fd < 0)
		return err_fail(err, errlen, -ENODEV, "cannot open /dev/kvm: %s", strerror(errno));
	rc = kvm_ioctl(k->kvm_fd, KVM_GET_API_VERSION, 0);
	if (rc != KVM_API_VERSION)
		return err_fail(err, errlen, -ENOTSUP, "KVM API version %d, expected %d", rc,
			    KVM_API_VERSION);
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		if (kvm_ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, caps[i].cap) <= 0)
			return err_fail(err, errlen, -ENOTSUP, "KVM lacks %s", caps[i].name);
	rc = kvm_ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
	if (rc <= 0 || !(rc & KVM_SYNC_X86_REGS))
		return err_fail(err, errlen, -ENOTSUP, "KVM lacks KVM_CAP_SYNC_REGS");
	k->run_size = kvm_ioctl(k->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->run_size < (int)sizeof(struct kvm_run))
		return err_fail(err, errlen, -EIO, "bad KVM_GET_VCPU_MMAP_SIZE");
	/* XSAVE area size: KVM_CAP_XSAVE2 reports it (>= 4096); else 4096. */
	int n = kvm_ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	k->xsave_size = n > (int)sizeof(struct kvm_xsave) ? (size_t)n : sizeof(struct kvm_xsave);
	k->has_xsave2 = n > 0;
	k->has_xsave = kvm_ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0;
	k->vm_fd = kvm_ioctl(k->kvm_fd, KVM_CREATE_VM, 0);
	if (k->vm_fd < 0)
		return err_fail(err, errlen, -errno, "KVM_CREATE_VM: %s", strerror(errno));
	return 0;
}

static int kvm_memory(struct vm *vm, struct kvm_vm *k, char *err, size_t errlen)
{
	uint64_t t0 = time_mono_ns();

	/* Memory slots before the irqchip: afterwards each costs ~7 ms on
	 * PVM (KVM-NOTES). */
	for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
		const struct gmem_region *r = &vm->mem.regions[i];
		struct kvm_userspace_memory_region slot = {
			.slot = i, .guest_phys_addr = r->gpa, .memory_size = r->size,
			.userspace_addr = (uint64_t)(uintptr_t)(vm->mem.host + r->offset),
		};
		if (kvm_ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			return err_fail(err, errlen, -errno, "KVM_SET_USER_MEMORY_REGION: %s",
				    strerror(errno));
	}
	uint64_t t1 = time_mono_ns();
	if (kvm_ioctl(k->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return err_fail(err, errlen, -errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	uint64_t t2 = time_mono_ns();
	struct kvm_pit_config pit = { .flags = 0 };
	if (kvm_ioctl(k->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return err_fail(err, errlen, -errno, "KVM_CREATE_PIT2: %s", strerror(errno));
	log_debug("memory slots %.2f ms, irqchip %.2f ms, PIT %.2f ms", (t1 - t0) / 1e6,
		  (t2 - t1) / 1e6, (time_mono_ns() - t2) / 1e6);
	return 0;
}

int kvm_supported_cpuid(int kvm_fd, struct kvm_cpuid2 **out)
{
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = n;
		if (kvm_ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			*out = c;
			return 0;
		}
		free(c);
		if (errno != E2BIG)
			return -errno;
	}
	return -E2BIG;
}

/* The VM's CPUID: what KVM supports (queried, or cached by a template:
 * the host's answer does not change), plus our adjustments. */
static int kvm_cpuid(struct kvm_vm *k, const struct snapshot *snap, char *err, size_t errlen)
{
	const struct kvm_cpuid2 *cached = snap ? snap->cpuid_cache : NULL;

	if (cached) {
		size_t sz = sizeof(*cached) + cached->nent * sizeof(cached->entries[0]);
		k->cpuid = malloc(sz);
		if (!k->cpuid)
			return err_fail(err, errlen, -ENOMEM, "out of memory");
		memcpy(k->cpuid, cached, sz);
	} else {
		int rc = kvm_supported_cpuid(k->kvm_fd, &k->cpuid);
		if (rc < 0)
			return err_fail(err, errlen, rc, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-rc));
	}
	for (uint32_t i = 0; i < k->cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &k->cpuid->entries[i];
		if (e->function == 1) {
			e->ecx |= 1u << 31; /* hypervisor present */
			k->osxsave = e->ecx & (1u << 26);
		}
		if (e->function == 7 && e->index == 0)
			k->pku = e->ecx & (1u << 3);
		if (e->function == 0xd && e->index == 0)
			k->xcr0 = e->eax & 0x2e7; /* x87, SSE, AVX, AVX-512, PKRU */
	}
	/* What a host process has (the process platform's guests), where KVM
	 * offers it: snapshots move between the two. */
	if (!k->pku)
		k->xcr0 &= ~(uint64_t)0x200;
	if (!k->osxsave)
		k->xcr0 = 0;
	return 0;
}

static int kvm_vm_create(struct vm *vm, const struct snapshot *snap, char *err, size_t errlen)
{
	struct sigaction sa = { .sa_handler = kick_handler };
	struct kvm_vm *k = calloc(1, sizeof(*k));
	uint64_t t0 = time_mono_ns(), t1, t2;
	int rc;

	if (!k)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	k->kvm_fd = k->vm_fd = -1;
	k->kick_signal = SIGRTMIN + 3;
	k->machine = vm->loader && vm->loader->machine;
	vm->p = k;
	/* No SA_RESTART: the kick must make KVM_RUN return EINTR. */
	sigemptyset(&sa.sa_mask);
	sigaction(k->kick_signal, &sa, NULL);
	rc = kvm_open(vm, k, err, errlen);
	t1 = time_mono_ns();
	if (rc == 0)
		rc = kvm_memory(vm, k, err, errlen);
	if (rc == 0)
		rc = kvm_cpuid(k, snap, err, errlen);
	t2 = time_mono_ns();
	vm->timings.kvm_ns = t1 - t0;
	vm->timings.create_ns = t2 - t1;
	return rc;
}

static void kvm_vm_destroy(struct vm *vm)
{
	struct kvm_vm *k = KV(vm);

	for (unsigned i = 0; vm->vcpus && i < vm->nr_vcpus; i++) {
		struct kvm_vcpu *c = vm->vcpus[i].p;
		if (!c)
			continue;
		if (c->run && c->run_mapped)
			munmap(c->run, (size_t)k->run_size);
		else
			free(c->run);
		if (c->fd >= 0)
			close(c->fd);
		free(c);
		vm->vcpus[i].p = NULL;
	}
	if (!k)
		return;
	if (k->vm_fd >= 0)
		close(k->vm_fd);
	if (k->kvm_fd >= 0)
		close(k->kvm_fd);
	free(k->cpuid);
	free(k);
	vm->p = NULL;
}

static int kvm_fguest_setup(struct vm *vm, char *err, size_t errlen)
{
	int rc = x86_setup_system(&vm->mem, vm->nr_vcpus);
	if (rc < 0)
		return err_fail(err, errlen, rc, "cannot build the system area: %s", strerror(-rc));
	return 0;
}

static uint64_t kvm_xfeatures(struct vm *vm)
{
	return KV(vm)->xcr0 | 3;
}

static uint64_t kvm_hwcap(struct vm *vm)
{
	const struct kvm_vm *k = KV(vm);
	for (uint32_t i = 0; k && k->cpuid && i < k->cpuid->nent; i++)
		if (k->cpuid->entries[i].function == 1)
			return k->cpuid->entries[i].edx;
	return 0;
}

/* ------------------------------------------------------------ vCPUs */

/* CPUID of one vCPU: its APIC ID in leaves 1, 0xb and 0x1f. */
static int vcpu_set_cpuid(struct kvm_vm *k, struct vcpu *v)
{
	size_t sz = sizeof(*k->cpuid) + k->cpuid->nent * sizeof(k->cpuid->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz);
	int rc = 0;

	if (!c)
		return -ENOMEM;
	memcpy(c, k->cpuid, sz);
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffffu) | (v->id << 24);
		if (e->function == 0xb || e->function == 0x1f)
			e->edx = v->id;
	}
	if (kvm_ioctl(KC(v)->fd, KVM_SET_CPUID2, c) < 0)
		rc = -errno;
	free(c);
	return rc;
}

static int kvm_vcpu_create(struct vcpu *v, char *err, size_t errlen)
{
	struct vm *vm = v->vm;
	struct kvm_vm *k = KV(vm);
	struct kvm_msr_entry e[16];
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e[16];
	} msrs;
	struct kvm_sregs s;
	struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };
	struct kvm_vcpu *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	c->fd = -1;
	v->p = c;
	c->fd = kvm_ioctl(k->vm_fd, KVM_CREATE_VCPU, v->id);
	if (c->fd < 0)
		return err_fail(err, errlen, -errno, "KVM_CREATE_VCPU %u: %s", v->id, strerror(errno));
	c->run = mmap(NULL, (size_t)k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
	if (c->run == MAP_FAILED) {
		c->run = NULL;
		return err_fail(err, errlen, -errno, "mmap of kvm_run: %s", strerror(errno));
	}
	c->run_mapped = true;
	rc = vcpu_set_cpuid(k, v);
	if (rc < 0)
		return err_fail(err, errlen, rc, "KVM_SET_CPUID2: %s", strerror(-rc));
	/* A machine's vCPUs keep their reset state: vCPU 0 gets its entry
	 * from machine_boot, the others wait for INIT/SIPI. */
	if (k->machine)
		return 0;
	msrs.h.nmsrs = x86_boot_msrs(e, 16);
	memcpy(msrs.e, e, msrs.h.nmsrs * sizeof(e[0]));
	if (kvm_ioctl(c->fd, KVM_SET_MSRS, &msrs) != (int)msrs.h.nmsrs)
		return err_fail(err, errlen, -EIO, "KVM_SET_MSRS: not all boot MSRs were accepted");
	if (kvm_ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
		return err_fail(err, errlen, -errno, "KVM_GET_SREGS: %s", strerror(errno));
	x86_sregs_ring3(&s, v->id, vm->nr_vcpus, k->osxsave);
	if (k->pku && k->osxsave)
		s.cr4 |= X86_CR4_PKE;
	if (kvm_ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
		return err_fail(err, errlen, -errno, "KVM_SET_SREGS: %s", strerror(errno));
	if (k->osxsave) {
		struct kvm_xcrs x = { .nr_xcrs = 1 };
		x.xcrs[0].xcr = 0;
		x.xcrs[0].value = k->xcr0;
		if (kvm_ioctl(c->fd, KVM_SET_XCRS, &x) < 0)
			return err_fail(err, errlen, -errno, "KVM_SET_XCRS: %s", strerror(errno));
	}
	if (kvm_ioctl(c->fd, KVM_SET_FPU, &fpu) < 0)
		return err_fail(err, errlen, -errno, "KVM_SET_FPU: %s", strerror(errno));
	return 0;
}

static int kvm_vcpu_enter(struct vcpu *v)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, KV(v->vm)->kick_signal);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	KC(v)->run->kvm_valid_regs = KVM_SYNC_X86_REGS;
	return 0;
}

static void kvm_vcpu_kick(struct vcpu *v)
{
	struct kvm_vcpu *c = KC(v);

	if (c->run)
		__atomic_store_n(&c->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->thread_started)
		pthread_kill(v->thread, KV(v->vm)->kick_signal);
}

/* ------------------------------------------------------------ exits */

static uint64_t exit_rip(const struct kvm_run *run)
{
	return run->s.regs.regs.rip;
}

/* An exception reached its trampoline entry: the frame the CPU pushed on
 * the vCPU's ring-0 stack says where and why. */
static void decode_exception(struct vcpu *v, int vcpu_fd, struct kvm_run *run, unsigned vector,
			     struct vexit *e)
{
	struct vm *vm = v->vm;
	struct x86_exc_frame f = { 0 };

	if (x86_read_exc_frame(&vm->mem, run->s.regs.regs.rsp, vector, &f) < 0) {
		vm_terminate(vm, 128 + SIGSEGV, true,
			     "guest fault: %s (vector %u) on vCPU %u; exception frame unreadable",
			     cpu_exc_name(vector), vector, v->id);
		e->kind = VEXIT_STOP;
		return;
	}
	*e = (struct vexit){
		.kind = VEXIT_FAULT, .vector = vector, .has_error_code = cpu_exc_has_error_code(vector),
		.error_code = f.error_code, .rip = f.rip, .rsp = f.rsp, .ring = (unsigned)(f.cs & 3),
	};
	if (vector == 14) {
		struct kvm_sregs s;
		e->has_addr = true;
		if (vcpu_fd >= 0 && kvm_ioctl(vcpu_fd, KVM_GET_SREGS, &s) == 0)
			e->addr = s.cr2;
		else
			e->addr = run->s.regs.sregs.cr2;
	}
}

void kvm_exit_decode(struct vcpu *v, int vcpu_fd, struct kvm_run *run, int run_size,
		     struct vexit *e, bool *handled)
{
	struct vm *vm = v->vm;

	*handled = false;
	e->kind = VEXIT_STOP;
	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		unsigned size = run->io.size, count = run->io.count, port = run->io.port;
		bool out = run->io.direction == KVM_EXIT_IO_OUT;
		uint64_t span = (uint64_t)size * count;

		if ((size != 1 && size != 2 && size != 4) || count == 0 ||
		    (run_size && (run->io.data_offset > (uint64_t)run_size ||
				  span > (uint64_t)run_size - run->io.data_offset))) {
			vm_terminate(vm, 1, true, "malformed port I/O exit on vCPU %u", v->id);
			return;
		}
		const struct kvm_vm *k = vm->p;
		bool machine = k && k->machine;
		/* The trampoline's ports: a system call, an exception. */
		if (!machine && port == X86_PORT_SYSCALL && size == 1 && count == 1) {
			if (!out) {
				vm_terminate(vm, 128 + SIGSEGV, true,
					     "guest read the system call port (vCPU %u)", v->id);
				return;
			}
			e->kind = VEXIT_SYSCALL;
			return;
		}
		if (!machine && port >= X86_PORT_EXC_BASE && port < X86_PORT_EXC_BASE + X86_NR_EXC &&
		    size == 1 && count == 1) {
			decode_exception(v, vcpu_fd, run, port - X86_PORT_EXC_BASE, e);
			return;
		}
		uint8_t *data = (uint8_t *)run + run->io.data_offset;
		const struct bus_range *r = bus_find(&vm->pio, port, size);
		if (!r && machine) {
			/* A kernel probes ports where no device sits: on a PC an
			 * empty port reads all ones and ignores writes. */
			if (!out)
				memset(data, 0xff, span);
			e->kind = VEXIT_KICK;
			*handled = true;
			return;
		}
		if (!r) {
			vm_terminate(vm, 128 + SIGSEGV, true,
				     "guest %s port 0x%x (%u bytes), which no device handles; vCPU %u, "
				     "rip 0x%llx",
				     out ? "wrote" : "read", port, size, v->id,
				     (unsigned long long)exit_rip(run));
			return;
		}
		for (unsigned i = 0; i < count; i++) {
			enum vcpu_action a = r->io(r->dev, v, port - r->base, data + i * size, size, out);
			if (a != VCPU_CONTINUE)
				return;
		}
		e->kind = VEXIT_KICK;
		*handled = true;
		return;
	}
	case KVM_EXIT_MMIO:
		if (vm->p && ((const struct kvm_vm *)vm->p)->machine) {
			unsigned len = run->mmio.len <= sizeof(run->mmio.data) ? run->mmio.len :
										 sizeof(run->mmio.data);
			const struct bus_range *r = bus_find(&vm->mmio, run->mmio.phys_addr, len);
			if (r && len)
				(void)r->io(r->dev, v, run->mmio.phys_addr - r->base, run->mmio.data, len,
					    run->mmio.is_write);
			else if (!run->mmio.is_write)
				memset(run->mmio.data, 0xff, sizeof(run->mmio.data)); /* empty space, as on a PC */
			e->kind = VEXIT_KICK;
			*handled = true;
			return;
		}
		vm_terminate(vm, 128 + SIGSEGV, true,
			     "guest %s MMIO address 0x%llx (%u bytes), which no device handles; vCPU "
			     "%u, rip 0x%llx",
			     run->mmio.is_write ? "wrote" : "read",
			     (unsigned long long)run->mmio.phys_addr, run->mmio.len, v->id,
			     (unsigned long long)exit_rip(run));
		return;
	case KVM_EXIT_SHUTDOWN:
		if (vm->p && ((const struct kvm_vm *)vm->p)->machine) {
			/* Linux's last resort for a reboot is a triple fault. */
			vm_terminate(vm, 0, false, "guest reset the machine (triple fault) on vCPU %u",
				     v->id);
			return;
		}
		vm_terminate(vm, 128 + SIGSEGV, true,
			     "guest triple fault (an exception while delivering an exception) on vCPU "
			     "%u, rip 0x%llx",
			     v->id, (unsigned long long)exit_rip(run));
		return;
	case KVM_EXIT_INTERNAL_ERROR:
		vm_terminate(vm, 128 + SIGILL, true,
			     "KVM internal error %u (%s) on vCPU %u, rip 0x%llx", run->internal.suberror,
			     run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ?
				     "an instruction KVM cannot emulate" :
				     "see the KVM documentation",
			     v->id, (unsigned long long)exit_rip(run));
		return;
	case KVM_EXIT_FAIL_ENTRY:
		vm_terminate(vm, 1, true, "KVM could not enter vCPU %u: hardware reason 0x%llx",
			     v->id,
			     (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return;
	case KVM_EXIT_HLT:
		vm_terminate(vm, 128 + SIGSEGV, true, "guest halted vCPU %u at rip 0x%llx", v->id,
			     (unsigned long long)exit_rip(run));
		return;
	case KVM_EXIT_SYSTEM_EVENT:
		vm_terminate(vm, 0, false, "guest requested a system %s",
			     run->system_event.type == KVM_SYSTEM_EVENT_RESET ? "reset" : "shutdown");
		return;
	case KVM_EXIT_INTR:
		e->kind = VEXIT_KICK;
		return;
	}
	vm_terminate(vm, 1, true, "unexpected KVM exit reason %u on vCPU %u, rip 0x%llx",
		     run->exit_reason, v->id, (unsigned long long)exit_rip(run));
}

static int kvm_vcpu_run(struct vcpu *v, struct vexit *e)
{
	struct kvm_vcpu *c = KC(v);

	for (;;) {
		/* Cleared before the pause check: a kick after it makes KVM_RUN
		 * return at once. */
		__atomic_store_n(&c->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		if (vcpu_must_yield(v)) {
			/* A device answered an `in` or an MMIO read that KVM has
			 * not put into the guest's registers yet: finish it here,
			 * on this thread, so that a snapshot of the parked vCPU is
			 * final (KVM_RUN with immediate_exit returns at once). */
			if (c->io_pending) {
				c->run->immediate_exit = 1;
				if (ioctl(c->fd, KVM_RUN, 0) < 0 && errno != EINTR && errno != EAGAIN)
					return -errno;
				c->run->immediate_exit = 0;
				c->io_pending = false;
			}
			e->kind = VEXIT_KICK;
			return 0;
		}
		c->regs_valid = false;
		c->io_pending = false;
		if (ioctl(c->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				c->regs_valid = true; /* KVM filled the sync area on the way out */
				e->kind = VEXIT_KICK;
				return 0;
			}
			return -errno;
		}
		c->regs_valid = true;
		bool handled;
		kvm_exit_decode(v, c->fd, c->run, KV(v->vm)->run_size, e, &handled);
		if (handled) {
			c->io_pending = c->run->exit_reason == KVM_EXIT_IO ||
					c->run->exit_reason == KVM_EXIT_MMIO;
			continue; /* a device answered; the guest runs on */
		}
		c->at_syscall = e->kind == VEXIT_SYSCALL;
		return 0;
	}
}

/* ------------------------------------------------------------ registers */

static struct kvm_regs *kvm_regs_now(struct vcpu *v)
{
	struct kvm_vcpu *c = KC(v);

	if (!c->regs_valid && c->fd >= 0) {
		if (kvm_ioctl(c->fd, KVM_GET_REGS, &c->run->s.regs.regs) < 0)
			return NULL;
		c->regs_valid = true;
	}
	return &c->run->s.regs.regs;
}

static void vregs_from_kvm(struct vregs *o, const struct kvm_regs *r)
{
	*o = (struct vregs){
		.rax = r->rax, .rbx = r->rbx, .rcx = r->rcx, .rdx = r->rdx, .rsi = r->rsi,
		.rdi = r->rdi, .rsp = r->rsp, .rbp = r->rbp, .r8 = r->r8, .r9 = r->r9,
		.r10 = r->r10, .r11 = r->r11, .r12 = r->r12, .r13 = r->r13, .r14 = r->r14,
		.r15 = r->r15, .rip = r->rip, .rflags = r->rflags,
	};
}

/* The user registers: in ring 3 the vCPU's own; on the trampoline, what
 * ring 3 sees: at a system call (or just after `syscall`, before the
 * port), rip and rflags from rcx and r11; on the way back (at the
 * `iretq`), rip, rflags and rsp from the frame the VMM wrote. */
static int kvm_get_regs(struct vcpu *v, struct vregs *o)
{
	struct kvm_vcpu *c = KC(v);
	const struct kvm_regs *r = kvm_regs_now(v);

	if (!r)
		return -errno;
	vregs_from_kvm(o, r);
	if (c->at_syscall) {
		o->rip = r->rcx;
		o->rflags = r->r11;
	} else if (r->rip == X86_TRAMP_SYSCALL) {
		/* entered, not yet served: resume by making the call again */
		o->rip = r->rcx - 2;
		o->rflags = r->r11;
	} else if (r->rip == X86_TRAMP_SYSCALL + 2) {
		uint64_t frame[5];
		if (gmem_read(&v->vm->mem, r->rsp, frame, sizeof(frame)) < 0)
			return -EFAULT;
		o->rip = frame[0];
		o->rflags = frame[2];
		o->rsp = frame[3];
	} else if (r->rip >= X86_TRAMP && r->rip < X86_TRAMP + 4096) {
		return -EINVAL; /* inside an exception entry: never parked there alive */
	}
	return 0;
}

/* Puts the vCPU in ring 3 at r: runnable, ring-3 segments, registers. */
static int kvm_set_regs(struct vcpu *v, const struct vregs *r)
{
	struct kvm_vcpu *c = KC(v);
	struct vm *vm = v->vm;
	struct kvm_regs *k = &c->run->s.regs.regs;
	struct kvm_sregs s;

	*k = (struct kvm_regs){
		.rax = r->rax, .rbx = r->rbx, .rcx = r->rcx, .rdx = r->rdx, .rsi = r->rsi,
		.rdi = r->rdi, .rsp = r->rsp, .rbp = r->rbp, .r8 = r->r8, .r9 = r->r9,
		.r10 = r->r10, .r11 = r->r11, .r12 = r->r12, .r13 = r->r13, .r14 = r->r14,
		.r15 = r->r15, .rip = r->rip,
		.rflags = (r->rflags & X86_RFLAGS_USER_MASK) | X86_RFLAGS_FIXED,
	};
	c->at_syscall = false;
	c->regs_valid = true;
	c->run->kvm_dirty_regs = 0;
	if (c->fd < 0)
		return 0;
	/* With the in-kernel irqchip an AP waits for INIT/SIPI until told
	 * it is runnable; a guest thread just starts. */
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
	if (kvm_ioctl(c->fd, KVM_SET_MP_STATE, &mp) < 0)
		return -errno;
	if (kvm_ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	x86_sregs_ring3(&s, v->id, vm->nr_vcpus, KV(vm)->osxsave);
	if (KV(vm)->pku && KV(vm)->osxsave)
		s.cr4 |= X86_CR4_PKE;
	if (kvm_ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
		return -errno;
	if (kvm_ioctl(c->fd, KVM_SET_REGS, k) < 0)
		return -errno;
	return 0;
}

static int kvm_set_tls(struct vcpu *v, uint64_t fs_base, uint64_t gs_base)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e[2];
	} m = { .h.nmsrs = 2 };

	m.e[0].index = X86_MSR_FS_BASE;
	m.e[0].data = fs_base;
	m.e[1].index = X86_MSR_GS_BASE;
	m.e[1].data = gs_base;
	if (KC(v)->fd >= 0 && kvm_ioctl(KC(v)->fd, KVM_SET_MSRS, &m) != 2)
		return -EINVAL;
	return 0;
}

/* Back to ring 3 through the trampoline's `iretq`: the frame holds the
 * user rip, rflags and rsp; rax the result. */
static int kvm_syscall_return(struct vcpu *v, uint64_t ret)
{
	struct kvm_vcpu *c = KC(v);
	struct kvm_regs *r = kvm_regs_now(v);

	if (!r)
		return -errno;
	uint64_t frame = x86_write_iret_frame(&v->vm->mem, v->id, r->rcx, r->r11, r->rsp);
	if (!frame)
		return -EFAULT;
	/* Past the `out`, explicitly: KVM's own skip of a completed port I/O
	 * (VT-x, SVM) sees the changed rip and stands down, PVM has already
	 * moved there; either way the saved state is unambiguous. */
	r->rip = X86_TRAMP_SYSCALL + 2;
	r->rsp = frame;
	r->rax = ret;
	c->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
	c->at_syscall = false;
	return 0;
}

/* ------------------------------------------------------------ XSAVE */

static int kvm_get_xstate(struct vcpu *v, void *buf, size_t *len, uint64_t *xcr0)
{
	struct kvm_vm *k = KV(v->vm);
	struct kvm_vcpu *c = KC(v);
	size_t size = MIN(k->xsave_size, (size_t)PLATFORM_XSAVE_MAX);
	int rc;

	if (c->fd < 0) {
		memset(buf, 0, sizeof(struct kvm_xsave));
		*len = sizeof(struct kvm_xsave);
		*xcr0 = 3;
		return 0;
	}
	struct kvm_xsave *x = calloc(1, k->xsave_size);
	if (!x)
		return -ENOMEM;
	if (!k->has_xsave) {
		free(x);
		return -ENOTSUP;
	}
	rc = kvm_ioctl(c->fd, k->has_xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, x);
	if (rc < 0) {
		rc = -errno;
		free(x);
		return rc;
	}
	memcpy(buf, x, size);
	free(x);
	*len = size;
	*xcr0 = k->xcr0 | 3;
	return 0;
}

static int kvm_set_xstate(struct vcpu *v, const void *buf, size_t len)
{
	struct kvm_vm *k = KV(v->vm);
	struct kvm_vcpu *c = KC(v);
	uint64_t bv;
	int rc = 0;

	if (c->fd < 0)
		return 0;
	if (!k->has_xsave)
		return -ENOTSUP;
	if (len < XSAVE_BV_OFFSET + 64)
		return -EINVAL;
	struct kvm_xsave *x = calloc(1, k->xsave_size);
	if (!x)
		return -ENOMEM;
	memcpy(x, buf, MIN(len, k->xsave_size));
	/* Only what this vCPU holds: x87, SSE and (with OSXSAVE) AVX; the
	 * standard, non-compacted form. */
	memcpy(&bv, (uint8_t *)x + XSAVE_BV_OFFSET, 8);
	bv &= k->xcr0 | 3;
	memcpy((uint8_t *)x + XSAVE_BV_OFFSET, &bv, 8);
	memset((uint8_t *)x + XSAVE_XCOMP_BV_OFFSET, 0, 8);
	if (kvm_ioctl(c->fd, KVM_SET_XSAVE, x) < 0)
		rc = -errno;
	free(x);
	return rc;
}

static void kvm_template_cache(struct snapshot *snap)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	struct kvm_cpuid2 *c = NULL;

	if (fd < 0)
		return;
	if (kvm_supported_cpuid(fd, &c) == 0)
		snap->cpuid_cache = c;
	close(fd);
}

/* ------------------------------------------------------------ machines */

static int kvm_machine_boot(struct vm *vm, const struct machine_entry *me, char *err,
			    size_t errlen)
{
	struct kvm_vcpu *c = KC(&vm->vcpus[0]);
	struct kvm_sregs s;
	int rc = x86_setup_linux(&vm->mem);

	if (rc < 0)
		return err_fail(err, errlen, rc, "cannot write the boot page tables: %s", strerror(-rc));
	if (c->fd < 0)
		return 0; /* a unit test's vCPU */
	if (kvm_ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
		return err_fail(err, errlen, -errno, "KVM_GET_SREGS: %s", strerror(errno));
	x86_sregs_linux(&s);
	if (kvm_ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
		return err_fail(err, errlen, -errno, "KVM_SET_SREGS: %s", strerror(errno));
	struct kvm_regs r = { .rip = me->entry, .rsi = me->boot_params, .rflags = 0x2 };
	if (kvm_ioctl(c->fd, KVM_SET_REGS, &r) < 0)
		return err_fail(err, errlen, -errno, "KVM_SET_REGS: %s", strerror(errno));
	c->run->kvm_dirty_regs = 0;
	c->regs_valid = false;
	return 0;
}

static int kvm_irq_line(struct vm *vm, unsigned irq, int level)
{
	struct kvm_irq_level l = { .irq = irq, .level = (uint32_t)level };

	if (kvm_ioctl(KV(vm)->vm_fd, KVM_IRQ_LINE, &l) < 0)
		return -errno;
	return 0;
}

/* ------------------------------------------------------------ seccomp */

/* KVM's ioctls are _IO*(0xAE, n): the type byte is bits 8..15. */
#define KVM_IOCTL_MASK 0xff00ULL
#define KVM_IOCTL_TYPE ((unsigned long long)KVMIO << 8)

/* The VMM thread: every KVM ioctl (the process's only KVM descriptors are
 * its own). */
static const struct sc_rule kvm_sc_vmm[] = {
	SC_MASKED(ioctl, 1, KVM_IOCTL_MASK, KVM_IOCTL_TYPE),
};

#define VCPU_IOCTL(req) SC_EQ(ioctl, 1, req)

/* A vCPU thread: run its vCPU, read and write the registers the function
 * guest's system calls and snapshots need; the kick between vCPUs. */
static const struct sc_rule kvm_sc_vcpu[] = {
	VCPU_IOCTL(KVM_RUN),	     VCPU_IOCTL(KVM_GET_REGS),	 VCPU_IOCTL(KVM_SET_REGS),
	VCPU_IOCTL(KVM_GET_SREGS),   VCPU_IOCTL(KVM_SET_SREGS),	 VCPU_IOCTL(KVM_GET_MSRS),
	VCPU_IOCTL(KVM_SET_MSRS),    VCPU_IOCTL(KVM_GET_MP_STATE), VCPU_IOCTL(KVM_SET_MP_STATE),
	VCPU_IOCTL(KVM_GET_XSAVE),   VCPU_IOCTL(KVM_GET_XSAVE2), VCPU_IOCTL(KVM_SET_XSAVE),
	VCPU_IOCTL(KVM_IRQ_LINE), /* a machine's devices interrupt (on the VM fd) */
	SC_ALLOW(tgkill),
};

const struct platform platform_kvm = {
	.name = "kvm",
	.probe = kvm_probe,
	.vm_create = kvm_vm_create,
	.vm_destroy = kvm_vm_destroy,
	.fguest_setup = kvm_fguest_setup,
	.machine_boot = kvm_machine_boot,
	.irq_line = kvm_irq_line,
	.hwcap = kvm_hwcap,
	.xfeatures = kvm_xfeatures,
	.vcpu_create = kvm_vcpu_create,
	.vcpu_enter = kvm_vcpu_enter,
	.vcpu_run = kvm_vcpu_run,
	.vcpu_kick = kvm_vcpu_kick,
	.get_regs = kvm_get_regs,
	.set_regs = kvm_set_regs,
	.set_tls = kvm_set_tls,
	.syscall_return = kvm_syscall_return,
	.get_xstate = kvm_get_xstate,
	.set_xstate = kvm_set_xstate,
	.template_cache = kvm_template_cache,
	.units = kvm_machine_units,
	.sc_vmm = kvm_sc_vmm,
	.nr_sc_vmm = sizeof(kvm_sc_vmm) / sizeof(kvm_sc_vmm[0]),
	.sc_vcpu = kvm_sc_vcpu,
	.nr_sc_vcpu = sizeof(kvm_sc_vcpu) / sizeof(kvm_sc_vcpu[0]),
	.jail_device = "/dev/kvm",
};
