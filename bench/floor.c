/* bench/floor.c - forkbench floor: the bare KVM cost of the work a fork
 * does, with raw ioctls and no forkvm code (only <linux/kvm.h>), so that
 * every fork figure can be read as a ratio to this machine's floor.
 *
 * One sample (a cold VM), each step timed on its own:
 *   create VM     KVM_CREATE_VM (/dev/kvm is opened once, outside)
 *   mmap memory   MAP_PRIVATE | MAP_NORESERVE of a sparse file of --memory
 *                 bytes holding the guest's page tables, GDT and code: the
 *                 copy-on-write mapping forkvm restores a snapshot with
 *   memory slot   KVM_SET_USER_MEMORY_REGION, before the irqchip (after it,
 *                 a slot costs ~7 ms on PVM)
 *   irqchip + PIT KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2
 *   vCPUs + CPUID KVM_CREATE_VCPU, mmap of kvm_run, KVM_SET_CPUID2 per vCPU
 *                 (KVM_GET_SUPPORTED_CPUID is asked once, as a template's
 *                 cache would)
 *   set state     KVM_SET_SREGS + KVM_SET_REGS + KVM_SET_MSRS (the syscall
 *                 MSRs) per vCPU: 64-bit ring 3 with its own page tables,
 *                 GDT and TSS, like forkvm's guests (PVM runs guest ring 3
 *                 natively; real mode works too, but is not what a fork
 *                 resumes)
 *   first KVM_RUN vCPU 0 runs from a ring-3 `syscall` into a ring-0
 *                 `out %al, $0xe0` (al = 0x42) to that port exit, the path
 *                 of a forkvm guest's system call; the exit is checked
 *                 (reason, port, size, data, rip after the `out`)
 * The VM is closed after the timed part (closing one costs 4-35 ms on this
 * PVM machine); its cost is shown apart. Then:
 *   precreated    a warm pool's floor: set state + first KVM_RUN on VMs
 *                 built beforehand (in batches), never run before
 *   rerun         set state + KVM_RUN again on a vCPU that has just run
 *                 (shadow page tables and host pages already in place)
 * --cpus N creates and sets N vCPUs; vCPU 0 is the one that runs. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/util.h"

#define FLOOR_MAX_VCPUS 64
#define FLOOR_BATCH 16 /* precreated VMs held at once */
#define FLOOR_RUN_TIMEOUT_S 5

/* Guest-physical layout (identity mapped by one 2 MiB page). */
#define FLOOR_PML4 0x1000ULL
#define FLOOR_PDPT 0x2000ULL
#define FLOOR_PD 0x3000ULL
#define FLOOR_GDT 0x4000ULL
#define FLOOR_TSS 0x5000ULL
#define FLOOR_CODE 0x6000ULL   /* ring 3: syscall */
#define FLOOR_KCODE 0x6100ULL  /* ring 0 (LSTAR): out %al, $FLOOR_PORT */
#define FLOOR_MIN_MEM 0x200000ULL

/* TSS: 104 bytes, then the I/O bitmap for ports 0..0xff and its 0xff end
 * byte; it opens FLOOR_PORT, as forkvm's TSS opens its ports (PVM's
 * emulated ring 0 consults it). The `out` runs in ring 0, entered through
 * `syscall`, as a forkvm guest's system call does: a ring-3 `out` through
 * the bitmap worked on PVM but #GPs (a triple fault: no IDT) under QEMU
 * TCG's nested SVM, whose I/O permission check wants an "available" TSS
 * type in TR where KVM and VMX load a "busy" one. */
#define FLOOR_IOPB_BYTES (0x100 / 8 + 1)
#define FLOOR_TSS_LIMIT (104 + FLOOR_IOPB_BYTES - 1)

#define FLOOR_SEL_KCODE 0x08
#define FLOOR_SEL_UDATA 0x1b
#define FLOOR_SEL_UCODE 0x23
#define FLOOR_SEL_TSS 0x28
#define FLOOR_GDT_LEN 0x38

/* No in-kernel device (PIC 0x20/0xa0, PIT 0x40-0x43/0x61, ELCR 0x4d0) sits here. */
#define FLOOR_PORT 0xe0
#define FLOOR_DATA 0x42

#define FLOOR_MSR_STAR 0xc0000081
#define FLOOR_MSR_LSTAR 0xc0000082
#define FLOOR_MSR_SFMASK 0xc0000084
#define FLOOR_NR_MSRS 3

enum floor_step {
	FS_CREATE,
	FS_MMAP,
	FS_SLOT,
	FS_IRQ,
	FS_VCPU,
	FS_STATE,
	FS_RUN,
	FS_TOTAL,
	FS_NR,
};

static const char *const floor_step_names[FS_NR] = {
	[FS_CREATE] = "floor: create VM",      [FS_MMAP] = "floor: mmap memory",
	[FS_SLOT] = "floor: memory slot",      [FS_IRQ] = "floor: irqchip + PIT",
	[FS_VCPU] = "floor: vCPUs + CPUID",    [FS_STATE] = "floor: set state",
	[FS_RUN] = "floor: first KVM_RUN",     [FS_TOTAL] = "floor: total (cold VM)",
};

/* What every sample shares, set up outside the timed parts. */
struct floor {
	int kvm_fd;
	int mem_fd; /* the sparse file, already unlinked */
	uint64_t mem_size;
	size_t run_size;
	unsigned nr_vcpus;
	struct kvm_cpuid2 *cpuid;
	struct kvm_sregs sregs_bsp, sregs_ap;
	struct kvm_regs regs;
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e[FLOOR_NR_MSRS];
	} msrs;
};

struct floor_vm {
	int vm_fd;
	uint8_t *mem;
	unsigned nr_vcpus; /* created so far */
	int vcpu_fd[FLOOR_MAX_VCPUS];
	struct kvm_run *run[FLOOR_MAX_VCPUS];
};

static void floor_alarm(int sig)
{
	(void)sig; /* only interrupts a KVM_RUN that never exits */
}

static void floor_vm_init(struct floor_vm *v)
{
	memset(v, 0, sizeof(*v));
	v->vm_fd = -1;
	for (unsigned i = 0; i < FLOOR_MAX_VCPUS; i++)
		v->vcpu_fd[i] = -1;
}

/* Releases whatever v holds (safe on a partly built VM). */
static void floor_vm_close(const struct floor *f, struct floor_vm *v)
{
	for (unsigned i = 0; i < v->nr_vcpus; i++) {
		if (v->run[i])
			munmap(v->run[i], f->run_size);
		if (v->vcpu_fd[i] >= 0)
			close(v->vcpu_fd[i]);
	}
	if (v->vm_fd >= 0)
		close(v->vm_fd);
	if (v->mem)
		munmap(v->mem, f->mem_size);
	floor_vm_init(v);
}

/* FLOOR_IOCTL() repeated while a signal interrupts it (KVM_CREATE_VM returns
 * EINTR readily); not for KVM_RUN, whose EINTR is the alarm. */
static int floor_ioctl(int fd, unsigned long req, unsigned long arg)
{
	int rc;
	do
		rc = ioctl(fd, req, arg);
	while (rc < 0 && errno == EINTR);
	return rc;
}
#define FLOOR_IOCTL(fd, req, arg) floor_ioctl((fd), (req), (unsigned long)(uintptr_t)(arg))

static int floor_fail(const char *what)
{
	fprintf(stderr, "forkbench floor: %s: %s\n", what, strerror(errno));
	return -1;
}

/* KVM_GET_SUPPORTED_CPUID into *out (malloc'd). Returns 0 or -1. */
static int floor_cpuid(int kvm_fd, struct kvm_cpuid2 **out)
{
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return floor_fail("calloc");
		c->nent = n;
		if (FLOOR_IOCTL(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			*out = c;
			return 0;
		}
		free(c);
		if (errno != E2BIG)
			return floor_fail("KVM_GET_SUPPORTED_CPUID");
	}
	errno = E2BIG;
	return floor_fail("KVM_GET_SUPPORTED_CPUID");
}

static uint64_t floor_gdt_seg(uint64_t access, uint64_t flags)
{
	/* base 0, limit 0xfffff, access byte at 40..47, flags at 52..55 */
	return 0xffffULL | (0xfULL << 48) | (access << 40) | (flags << 52);
}

/* Creates the sparse memory file with the guest's page tables, GDT, TSS
 * and code in it. Returns 0 or -1. */
static int floor_mem_file(struct floor *f, char *path_out, size_t path_len)
{
	static const uint8_t code[] = {
		0x0f, 0x05, /* syscall (to FLOOR_KCODE) */
		0xf4,       /* hlt (never reached) */
		0xeb, 0xfd, /* jmp back to the hlt */
	};
	static const uint8_t kcode[] = {
		0xe6, FLOOR_PORT, /* out %al, $FLOOR_PORT (al = FLOOR_DATA, set by KVM_SET_REGS) */
		0xf4,             /* hlt (never reached) */
		0xeb, 0xfd,       /* jmp back to the hlt */
	};
	uint64_t pte = 0x1 | 0x2 | 0x4 | 0x20; /* P RW US A */
	uint64_t table[3] = { FLOOR_PDPT | pte, FLOOR_PD | pte, 0 | pte | 0x40 | 0x80 /* D PS */ };
	uint64_t gdt[FLOOR_GDT_LEN / 8] = { 0 };
	uint8_t tss[FLOOR_TSS_LIMIT + 1] = { 0 };
	const char *tmp = getenv("TMPDIR");

	snprintf(path_out, path_len, "%s/forkbench-floor-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	f->mem_fd = mkstemp(path_out);
	if (f->mem_fd < 0)
		return floor_fail(path_out);
	unlink(path_out);
	if (ftruncate(f->mem_fd, (off_t)f->mem_size) < 0)
		return floor_fail("ftruncate of the memory file");

	gdt[1] = floor_gdt_seg(0x9b, 0xa); /* ring-0 code, L */
	gdt[2] = floor_gdt_seg(0x93, 0xc); /* ring-0 data */
	gdt[FLOOR_SEL_UDATA >> 3] = floor_gdt_seg(0xf3, 0xc);
	gdt[FLOOR_SEL_UCODE >> 3] = floor_gdt_seg(0xfb, 0xa);
	gdt[FLOOR_SEL_TSS >> 3] =
		FLOOR_TSS_LIMIT | ((FLOOR_TSS & 0xffffff) << 16) | (0x8bULL << 40);
	tss[102] = 104; /* I/O bitmap offset */
	memset(tss + 104, 0xff, FLOOR_IOPB_BYTES);
	/* open to the ring-0 `out` too: PVM's ring 0 consults the bitmap */
	tss[104 + FLOOR_PORT / 8] &= (uint8_t)~(1u << (FLOOR_PORT % 8));

	if (pwrite(f->mem_fd, &table[0], 8, FLOOR_PML4) != 8 ||
	    pwrite(f->mem_fd, &table[1], 8, FLOOR_PDPT) != 8 ||
	    pwrite(f->mem_fd, &table[2], 8, FLOOR_PD) != 8 ||
	    pwrite(f->mem_fd, gdt, sizeof(gdt), FLOOR_GDT) != (ssize_t)sizeof(gdt) ||
	    pwrite(f->mem_fd, tss, sizeof(tss), FLOOR_TSS) != (ssize_t)sizeof(tss) ||
	    pwrite(f->mem_fd, code, sizeof(code), FLOOR_CODE) != (ssize_t)sizeof(code) ||
	    pwrite(f->mem_fd, kcode, sizeof(kcode), FLOOR_KCODE) != (ssize_t)sizeof(kcode))
		return floor_fail("writing the memory file");
	return 0;
}

static void floor_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t l, uint8_t db)
{
	*s = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
		.dpl = 3, .db = db, .s = 1, .l = l, .g = 1,
	};
}

/* The vCPU state a snapshot would carry: 64-bit ring 3 at FLOOR_CODE.
 * apic_base and the rest come from a throwaway vCPU's KVM_GET_SREGS. */
static int floor_state_template(struct floor *f)
{
	struct kvm_sregs *s = &f->sregs_bsp;
	int vm_fd = FLOOR_IOCTL(f->kvm_fd, KVM_CREATE_VM, 0);
	int vcpu_fd = vm_fd < 0 ? -1 : FLOOR_IOCTL(vm_fd, KVM_CREATE_VCPU, 0);
	int rc = vcpu_fd < 0 ? -1 : FLOOR_IOCTL(vcpu_fd, KVM_GET_SREGS, s);

	if (rc < 0)
		floor_fail("KVM_GET_SREGS of a throwaway vCPU");
	if (vcpu_fd >= 0)
		close(vcpu_fd);
	if (vm_fd >= 0)
		close(vm_fd);
	if (rc < 0)
		return -1;
	floor_seg(&s->cs, FLOOR_SEL_UCODE, 11, 1, 0);
	floor_seg(&s->ss, FLOOR_SEL_UDATA, 3, 0, 1);
	s->ds = s->es = s->fs = s->gs = s->ss;
	s->tr = (struct kvm_segment){
		.base = FLOOR_TSS, .limit = FLOOR_TSS_LIMIT, .selector = FLOOR_SEL_TSS, .type = 11,
		.present = 1,
	};
	s->ldt = (struct kvm_segment){ .type = 2, .unusable = 1 };
	s->gdt.base = FLOOR_GDT;
	s->gdt.limit = FLOOR_GDT_LEN - 1;
	s->idt.base = 0;
	s->idt.limit = 0;
	s->cr0 = 0x80010033ULL;                            /* PE MP ET NE WP PG */
	s->cr3 = FLOOR_PML4;
	s->cr4 = (1ULL << 5) | (1ULL << 9) | (1ULL << 10); /* PAE OSFXSR OSXMMEXCPT */
	s->efer = 0x1ULL | 0x100ULL | 0x400ULL | 0x800ULL; /* SCE LME LMA NXE */
	s->cr2 = 0;
	f->sregs_ap = *s;
	f->sregs_ap.apic_base &= ~(1ULL << 8); /* not the bootstrap processor */

	memset(&f->regs, 0, sizeof(f->regs));
	f->regs.rip = FLOOR_CODE;
	f->regs.rax = FLOOR_DATA;
	f->regs.rflags = 0x2; /* IOPL 0, interrupts off: as forkvm starts ring 3 */

	/* syscall: CS/SS from STAR (ring 0), rip from LSTAR, flags masked. */
	f->msrs.h.nmsrs = FLOOR_NR_MSRS;
	f->msrs.e[0] = (struct kvm_msr_entry){ .index = FLOOR_MSR_STAR,
					       .data = (0x10ULL << 48) | ((uint64_t)FLOOR_SEL_KCODE << 32) };
	f->msrs.e[1] = (struct kvm_msr_entry){ .index = FLOOR_MSR_LSTAR, .data = FLOOR_KCODE };
	f->msrs.e[2] = (struct kvm_msr_entry){ .index = FLOOR_MSR_SFMASK, .data = 0x47700 };
	return 0;
}

/* Builds a VM up to (not including) its vCPUs' state; t (may be NULL)
 * gets each step's time. Returns 0 or -1 (v partly built: close it). */
static int floor_vm_build(const struct floor *f, struct floor_vm *v, uint64_t *t)
{
	struct kvm_pit_config pit = { .flags = 0 };
	uint64_t t0 = time_mono_ns(), t1, t2, t3, t4, t5;

	v->vm_fd = FLOOR_IOCTL(f->kvm_fd, KVM_CREATE_VM, 0);
	if (v->vm_fd < 0)
		return floor_fail("KVM_CREATE_VM");
	t1 = time_mono_ns();
	void *mem = mmap(NULL, f->mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
			 f->mem_fd, 0);
	if (mem == MAP_FAILED)
		return floor_fail("mmap of guest memory");
	v->mem = mem;
	t2 = time_mono_ns();
	struct kvm_userspace_memory_region slot = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = f->mem_size,
		.userspace_addr = (uint64_t)(uintptr_t)v->mem,
	};
	if (FLOOR_IOCTL(v->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
		return floor_fail("KVM_SET_USER_MEMORY_REGION");
	t3 = time_mono_ns();
	if (FLOOR_IOCTL(v->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return floor_fail("KVM_CREATE_IRQCHIP");
	if (FLOOR_IOCTL(v->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return floor_fail("KVM_CREATE_PIT2");
	t4 = time_mono_ns();
	for (unsigned i = 0; i < f->nr_vcpus; i++) {
		v->vcpu_fd[i] = FLOOR_IOCTL(v->vm_fd, KVM_CREATE_VCPU, i);
		if (v->vcpu_fd[i] < 0)
			return floor_fail("KVM_CREATE_VCPU");
		v->nr_vcpus = i + 1;
		int fd = v->vcpu_fd[i];
		void *run = mmap(NULL, f->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (run == MAP_FAILED)
			return floor_fail("mmap of kvm_run");
		v->run[i] = run;
		if (FLOOR_IOCTL(v->vcpu_fd[i], KVM_SET_CPUID2, f->cpuid) < 0)
			return floor_fail("KVM_SET_CPUID2");
	}
	t5 = time_mono_ns();
	if (t) {
		t[FS_CREATE] = t1 - t0;
		t[FS_MMAP] = t2 - t1;
		t[FS_SLOT] = t3 - t2;
		t[FS_IRQ] = t4 - t3;
		t[FS_VCPU] = t5 - t4;
	}
	return 0;
}

static int floor_set_state(const struct floor *f, const struct floor_vm *v)
{
	for (unsigned i = 0; i < v->nr_vcpus; i++) {
		/* MSRs, sregs, regs: the order forkvm sets them in */
		int n = FLOOR_IOCTL(v->vcpu_fd[i], KVM_SET_MSRS, &f->msrs);
		if (n != FLOOR_NR_MSRS) {
			if (n >= 0)
				errno = EINVAL;
			return floor_fail("KVM_SET_MSRS (STAR, LSTAR, SFMASK)");
		}
		if (FLOOR_IOCTL(v->vcpu_fd[i], KVM_SET_SREGS, i ? &f->sregs_ap : &f->sregs_bsp) < 0)
			return floor_fail("KVM_SET_SREGS");
		if (FLOOR_IOCTL(v->vcpu_fd[i], KVM_SET_REGS, &f->regs) < 0)
			return floor_fail("KVM_SET_REGS");
	}
	return 0;
}

/* KVM_RUN on vCPU 0 until its first exit (bounded by an alarm, set
 * outside the caller's timing). */
static int floor_run(const struct floor_vm *v)
{
	if (ioctl(v->vcpu_fd[0], KVM_RUN, 0) < 0)
		return floor_fail(errno == EINTR ? "KVM_RUN: no exit in time" : "KVM_RUN");
	return 0;
}

/* Fails loudly unless vCPU 0 stopped at our port write, having run our
 * code to get there (rip just past the ring-0 `out`). */
static int floor_check_exit(const struct floor_vm *v)
{
	const struct kvm_run *r = v->run[0];
	struct kvm_regs regs = { 0 };
	bool got_regs = FLOOR_IOCTL(v->vcpu_fd[0], KVM_GET_REGS, &regs) == 0;

	if (!got_regs)
		regs.rip = ~0ULL;
	if (r->exit_reason == KVM_EXIT_IO && r->io.direction == KVM_EXIT_IO_OUT &&
	    r->io.port == FLOOR_PORT && r->io.size == 1 && r->io.count == 1 &&
	    ((const uint8_t *)r)[r->io.data_offset] == FLOOR_DATA) {
		/* at the `out` (KVM completes it on the next KVM_RUN) or past it */
		if (regs.rip == FLOOR_KCODE || regs.rip == FLOOR_KCODE + 2)
			return 0;
		fprintf(stderr,
			"forkbench floor: the port exit came from rip 0x%llx, not from the floor "
			"guest's `out` at 0x%llx\n",
			(unsigned long long)regs.rip, (unsigned long long)FLOOR_KCODE);
		return -1;
	}
	if (r->exit_reason == KVM_EXIT_SHUTDOWN) {
		fprintf(stderr, "forkbench floor: the floor guest triple-faulted (KVM_EXIT_SHUTDOWN) "
				"before its first exit: its page tables, GDT, TSS or syscall MSRs "
				"do not work on this KVM (rip 0x%llx)\n",
			(unsigned long long)regs.rip);
		return -1;
	}
	if (r->exit_reason == KVM_EXIT_IO)
		fprintf(stderr,
			"forkbench floor: unexpected port exit: %s port 0x%x size %u count %u "
			"(expected out of 0x%02x to port 0x%x), rip 0x%llx\n",
			r->io.direction == KVM_EXIT_IO_OUT ? "out" : "in", r->io.port, r->io.size,
			r->io.count, FLOOR_DATA, FLOOR_PORT, (unsigned long long)regs.rip);
	else
		fprintf(stderr,
			"forkbench floor: unexpected exit reason %u (expected KVM_EXIT_IO %u), "
			"rip 0x%llx, suberror %u\n",
			r->exit_reason, KVM_EXIT_IO, (unsigned long long)regs.rip,
			r->exit_reason == KVM_EXIT_INTERNAL_ERROR ? r->internal.suberror : 0);
	return -1;
}

/* Set state + KVM_RUN, timed apart; returns 0 or -1. */
static int floor_state_run(const struct floor *f, const struct floor_vm *v, uint64_t *state_ns,
			   uint64_t *run_ns)
{
	alarm(FLOOR_RUN_TIMEOUT_S);
	uint64_t t0 = time_mono_ns();
	int rc = floor_set_state(f, v);
	uint64_t t1 = time_mono_ns();
	if (rc == 0)
		rc = floor_run(v);
	uint64_t t2 = time_mono_ns();
	alarm(0);
	if (rc < 0 || floor_check_exit(v) < 0)
		return -1;
	*state_ns = t1 - t0;
	*run_ns = t2 - t1;
	return 0;
}

static int floor_setup(struct floor *f)
{
	char path[4200];
	int n;

	f->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (f->kvm_fd < 0)
		return floor_fail("/dev/kvm");
	if (FLOOR_IOCTL(f->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		fprintf(stderr, "forkbench floor: unexpected KVM API version\n");
		return -1;
	}
	if (FLOOR_IOCTL(f->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP) <= 0 ||
	    FLOOR_IOCTL(f->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_PIT2) <= 0 ||
	    FLOOR_IOCTL(f->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0) {
		fprintf(stderr, "forkbench floor: KVM lacks the irqchip, PIT2 or user memory\n");
		return -1;
	}
	n = FLOOR_IOCTL(f->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (n < (int)sizeof(struct kvm_run))
		return floor_fail("KVM_GET_VCPU_MMAP_SIZE");
	f->run_size = (size_t)n;
	if (floor_cpuid(f->kvm_fd, &f->cpuid) < 0)
		return -1;
	if (floor_mem_file(f, path, sizeof(path)) < 0)
		return -1;
	return floor_state_template(f);
}

static void floor_teardown(struct floor *f)
{
	free(f->cpuid);
	if (f->mem_fd >= 0)
		close(f->mem_fd);
	if (f->kvm_fd >= 0)
		close(f->kvm_fd);
}

int kvm_floor_round_trips(const struct opts *o, uint64_t *ns, int n, int warmup)
{
	struct floor f = { .kvm_fd = -1, .mem_fd = -1 };
	struct floor_vm v;
	uint64_t s, r;
	int rc = -1;

	struct sigaction sa = { .sa_handler = floor_alarm }, old_sa;

	(void)o;
	f.mem_size = 2 << 20;
	f.nr_vcpus = 1;
	sigemptyset(&sa.sa_mask); /* no SA_RESTART: the alarm ends a stuck KVM_RUN */
	sigaction(SIGALRM, &sa, &old_sa);
	floor_vm_init(&v);
	if (floor_setup(&f) < 0 || floor_vm_build(&f, &v, NULL) < 0 ||
	    floor_state_run(&f, &v, &s, &r) < 0)
		goto out;
	/* What a VMM does to return from a guest system call: the thread's
	 * registers set (KVM_SET_REGS: back in ring 3 at its `syscall`), then
	 * KVM_RUN to the next exit at the ring-0 `out`. */
	for (int i = 0; i < warmup + n; i++) {
		alarm(FLOOR_RUN_TIMEOUT_S);
		uint64_t t0 = time_mono_ns();
		int k = FLOOR_IOCTL(v.vcpu_fd[0], KVM_SET_REGS, &f.regs) < 0 ? floor_fail("KVM_SET_REGS")
									     : floor_run(&v);
		uint64_t t1 = time_mono_ns();
		alarm(0);
		if (k < 0 || floor_check_exit(&v) < 0)
			goto out;
		if (i >= warmup)
			ns[i - warmup] = t1 - t0;
	}
	rc = 0;
out:
	floor_vm_close(&f, &v);
	floor_teardown(&f);
	sigaction(SIGALRM, &old_sa, NULL);
	return rc;
}

/* Cold VMs: every step, the total, the close apart, and a rerun. */
static int floor_cold(const struct floor *f, const struct opts *o, uint64_t *ns[FS_NR],
		      uint64_t *close_ns, uint64_t *rerun_ns)
{
	for (int i = 0; i < o->warmup + o->samples; i++) {
		struct floor_vm v;
		uint64_t t[FS_NR], rs, rr;
		int k = i - o->warmup;

		floor_vm_init(&v);
		if (floor_vm_build(f, &v, t) < 0 ||
		    floor_state_run(f, &v, &t[FS_STATE], &t[FS_RUN]) < 0 ||
		    floor_state_run(f, &v, &rs, &rr) < 0) {
			floor_vm_close(f, &v);
			return -1;
		}
		uint64_t c0 = time_mono_ns();
		floor_vm_close(f, &v);
		uint64_t c1 = time_mono_ns();
		if (k < 0)
			continue;
		t[FS_TOTAL] = 0;
		for (int s = 0; s < FS_TOTAL; s++)
			t[FS_TOTAL] += t[s];
		for (int s = 0; s < FS_NR; s++)
			ns[s][k] = t[s];
		close_ns[k] = c1 - c0;
		rerun_ns[k] = rs + rr;
	}
	return 0;
}

/* Precreated VMs, built in batches ahead of their timed set state + run. */
static int floor_precreated(const struct floor *f, const struct opts *o, uint64_t *state_ns,
			    uint64_t *run_ns, uint64_t *sum_ns)
{
	struct floor_vm vms[FLOOR_BATCH];
	int total = o->warmup + o->samples, rc = 0;

	for (int b = 0; b < total && rc == 0; b += FLOOR_BATCH) {
		int nb = total - b < FLOOR_BATCH ? total - b : FLOOR_BATCH, built = 0;

		for (; built < nb; built++) {
			floor_vm_init(&vms[built]);
			if (floor_vm_build(f, &vms[built], NULL) < 0) {
				rc = -1;
				built++; /* close the partly built one too */
				break;
			}
		}
		for (int j = 0; j < built && rc == 0; j++) {
			uint64_t s, r;
			int k = b + j - o->warmup;
			if (floor_state_run(f, &vms[j], &s, &r) < 0) {
				rc = -1;
				break;
			}
			if (k >= 0) {
				state_ns[k] = s;
				run_ns[k] = r;
				sum_ns[k] = s + r;
			}
		}
		for (int j = 0; j < built; j++)
			floor_vm_close(f, &vms[j]);
	}
	return rc;
}

int cmd_floor(const struct opts *o)
{
	struct floor f = { .kvm_fd = -1, .mem_fd = -1 };
	const char *memory = o->memory ? o->memory : "256M";
	uint64_t *ns[FS_NR] = { NULL }, *close_ns, *rerun_ns, *pre_state, *pre_run, *pre_sum;
	struct sigaction sa = { .sa_handler = floor_alarm }, old_sa;
	unsigned long cpus;
	char *end;
	int rc = 1;

	errno = 0;
	cpus = strtoul(o->cpus ? o->cpus : "1", &end, 10);
	if (parse_size(memory, &f.mem_size) < 0 || f.mem_size < FLOOR_MIN_MEM ||
	    f.mem_size % 4096 || errno || *end || cpus < 1 || cpus > FLOOR_MAX_VCPUS ||
	    o->samples < 1 || o->warmup < 0) {
		fprintf(stderr, "forkbench floor: needs --memory >= 2M (whole pages), "
				"--cpus 1..%d, -n >= 1\n",
			FLOOR_MAX_VCPUS);
		return 2;
	}
	f.nr_vcpus = (unsigned)cpus;

	size_t n = (size_t)o->samples;
	for (int s = 0; s < FS_NR; s++)
		ns[s] = calloc(n, sizeof(uint64_t));
	close_ns = calloc(n, sizeof(uint64_t));
	rerun_ns = calloc(n, sizeof(uint64_t));
	pre_state = calloc(n, sizeof(uint64_t));
	pre_run = calloc(n, sizeof(uint64_t));
	pre_sum = calloc(n, sizeof(uint64_t));
	sigemptyset(&sa.sa_mask); /* no SA_RESTART: the alarm ends a stuck KVM_RUN */
	sigaction(SIGALRM, &sa, &old_sa);
	for (int s = 0; s < FS_NR; s++)
		if (!ns[s])
			goto out;
	if (!close_ns || !rerun_ns || !pre_state || !pre_run || !pre_sum)
		goto out;
	if (floor_setup(&f) < 0 || floor_cold(&f, o, ns, close_ns, rerun_ns) < 0 ||
	    floor_precreated(&f, o, pre_state, pre_run, pre_sum) < 0)
		goto out;

	note(o, "floor: raw KVM ioctls, no forkvm code; guest memory %s: "
		"MAP_PRIVATE|MAP_NORESERVE of a sparse file (copy-on-write, as forkvm restores), "
		"one slot registered before the irqchip",
	     memory);
	note(o, "floor: %u vCPU(s) created and set, vCPU 0 runs: 64-bit ring 3, `syscall` into "
		"a ring-0 `out` to port 0x%x (a forkvm guest's system call); VMs closed outside "
		"the timed part",
	     f.nr_vcpus, FLOOR_PORT);
	note(o, "floor precreated: VMs built ahead in batches of %d; rerun: the same vCPU again",
	     FLOOR_BATCH);
	figure(o, "floor: guest memory (MAP_PRIVATE file)", (double)(f.mem_size >> 20), "MiB");
	figure(o, "floor: vCPUs", f.nr_vcpus, "vCPUs");
	for (int s = 0; s < FS_NR; s++)
		report(floor_step_names[s], ns[s], o->samples, o);
	report("floor: close VM (not in total)", close_ns, o->samples, o);
	report("floor precreated: set state", pre_state, o->samples, o);
	report("floor precreated: 1st KVM_RUN", pre_run, o->samples, o);
	report("floor precreated: total", pre_sum, o->samples, o);
	report("floor: rerun (state + run)", rerun_ns, o->samples, o);
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "forkbench floor: failed\n");
	sigaction(SIGALRM, &old_sa, NULL);
	floor_teardown(&f);
	for (int s = 0; s < FS_NR; s++)
		free(ns[s]);
	free(close_ns);
	free(rerun_ns);
	free(pre_state);
	free(pre_run);
	free(pre_sum);
	return rc;
}
