/* tests/unit/test_loader.c - vmm/fguest/loader through vm_create_nokvm():
 * the initial stack (argc, argv, envp, auxv) read back from guest memory,
 * the start registers, the memory map, fg_split_cmdline(), and payloads
 * that must be refused with a message. */
#include <criterion/criterion.h>

#include "guest/abi/forkvm_identity.h"

#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "tests/lib/unit.h"
#include "vmm/elf.h"
#include "vmm/fguest/fguest.h"
#include "vmm/vm.h"

static struct vm *make_vm(const struct ut_vm_opts *o)
{
	char err[512] = "";
	struct vm *vm = NULL;
	char *p = strchr(o->payload, '/') ? strdup(o->payload) : ut_payload(o->payload);

	cr_assert(ut_file_exists(p), "%s is missing: run make guest", p);
	free(p);
	int rc = ut_vm_create(o, err, sizeof(err), &vm);
	cr_assert_eq(rc, 0, "vm_create_nokvm: %d %s", rc, err);
	cr_assert_not_null(vm);
	return vm;
}

static uint64_t rd64(struct vm *vm, uint64_t gpa)
{
	uint64_t v;
	cr_assert_eq(gmem_read(&vm->mem, gpa, &v, 8), 0, "read of 0x%llx", (unsigned long long)gpa);
	return v;
}

/* The NUL-terminated guest string at gpa (static buffer). */
static const char *rdstr(struct vm *vm, uint64_t gpa)
{
	static char buf[4096];
	for (size_t i = 0; i < sizeof(buf); i++) {
		cr_assert_eq(gmem_read(&vm->mem, gpa + i, &buf[i], 1), 0);
		if (!buf[i])
			return buf;
	}
	cr_assert_fail("unterminated string at 0x%llx", (unsigned long long)gpa);
	return NULL;
}

static struct elf_info parse_file(const char *name)
{
	char *p = ut_payload(name);
	size_t len;
	uint8_t *img = ut_read_file(p, &len);
	struct elf_info info;
	char err[256];

	cr_assert_not_null(img, "%s", p);
	cr_assert_eq(elf_parse(img, len, 0x400000, &info, err, sizeof(err)), 0, "%s", err);
	free(img);
	free(p);
	return info;
}

/* ------------------------------------------------------------ initial stack */

struct stack {
	uint64_t identity; /* FORKVM_AT_IDENTITY */
	uint64_t rsp, argc;
	const char *argv[16];
	char argv_buf[16][256];
	const char *envp[16];
	char envp_buf[16][256];
	unsigned nenv;
	uint64_t aux[64]; /* by AT_* type; UINT64_MAX: absent */
	uint64_t argv_ptr[16], envp_ptr[16];
};

static void read_stack(struct vm *vm, struct stack *s)
{
	uint64_t at;

	memset(s, 0, sizeof(*s));
	for (unsigned i = 0; i < 64; i++)
		s->aux[i] = UINT64_MAX;
	s->rsp = vm->vcpus[0].start.regs.rsp;
	at = s->rsp;
	s->argc = rd64(vm, at);
	at += 8;
	cr_assert_lt(s->argc, 16);
	for (unsigned i = 0; i < s->argc; i++, at += 8) {
		s->argv_ptr[i] = rd64(vm, at);
		snprintf(s->argv_buf[i], sizeof(s->argv_buf[i]), "%s", rdstr(vm, s->argv_ptr[i]));
		s->argv[i] = s->argv_buf[i];
	}
	cr_assert_eq(rd64(vm, at), 0, "argv is NULL-terminated");
	at += 8;
	for (; rd64(vm, at); at += 8, s->nenv++) {
		cr_assert_lt(s->nenv, 16);
		s->envp_ptr[s->nenv] = rd64(vm, at);
		snprintf(s->envp_buf[s->nenv], sizeof(s->envp_buf[0]), "%s", rdstr(vm, s->envp_ptr[s->nenv]));
		s->envp[s->nenv] = s->envp_buf[s->nenv];
	}
	at += 8;
	for (unsigned n = 0;; n++, at += 16) {
		uint64_t type = rd64(vm, at), val = rd64(vm, at + 8);
		cr_assert_lt(n, 64, "auxv not terminated");
		if (type == AT_NULL)
			break;
		if (type == FORKVM_AT_IDENTITY) {
			cr_assert_eq(s->identity, 0, "the identity page is announced twice");
			s->identity = val;
			continue;
		}
		cr_assert_lt(type, 64, "unexpected auxv type %llu", (unsigned long long)type);
		cr_assert_eq(s->aux[type], UINT64_MAX, "auxv type %llu twice", (unsigned long long)type);
		s->aux[type] = val;
	}
}

Test(loader, initial_stack_of_hello)
{
	static const char cmdline[] = "a 'b c' \"d\\\"e\" f\\ g";
	struct ut_vm_opts o = { .payload = "hello", .cmdline = cmdline };
	struct vm *vm = make_vm(&o);
	struct elf_info elf = parse_file("hello");
	struct stack s;

	read_stack(vm, &s);
	cr_assert_eq(s.rsp % 16, 0, "rsp 0x%llx is 16-byte aligned at entry", (unsigned long long)s.rsp);
	cr_assert_eq(s.argc, 5);
	cr_assert_str_eq(s.argv[0], "hello", "argv[0] is the payload's basename");
	cr_assert_str_eq(s.argv[1], "a");
	cr_assert_str_eq(s.argv[2], "b c");
	cr_assert_str_eq(s.argv[3], "d\"e");
	cr_assert_str_eq(s.argv[4], "f g");
	cr_assert_eq(s.nenv, 3);
	cr_assert_str_eq(s.envp[0], "HOME=/");
	cr_assert_str_eq(s.envp[1], "PATH=/");
	cr_assert_str_eq(s.envp[2], "FORKVM_GUEST=1");

	cr_assert_eq(s.aux[AT_PAGESZ], 4096);
	cr_assert_eq(s.aux[AT_PHDR], elf.phdr, "AT_PHDR 0x%llx", (unsigned long long)s.aux[AT_PHDR]);
	cr_assert_eq(s.aux[AT_PHDR], 0x400040, "hello's headers follow its ELF header");
	cr_assert_eq(s.aux[AT_PHNUM], elf.phnum);
	cr_assert_eq(s.aux[AT_PHENT], sizeof(Elf64_Phdr));
	cr_assert_eq(s.aux[AT_ENTRY], elf.entry);
	cr_assert_eq(s.aux[AT_BASE], 0, "no interpreter");
	cr_assert_eq(s.aux[AT_UID], 0);
	cr_assert_eq(s.aux[AT_EUID], 0);
	cr_assert_eq(s.aux[AT_GID], 0);
	cr_assert_eq(s.aux[AT_EGID], 0);
	cr_assert_eq(s.aux[AT_SECURE], 0);
	cr_assert_eq(s.aux[AT_CLKTCK], 100);
	cr_assert_neq(s.aux[AT_HWCAP], UINT64_MAX, "AT_HWCAP present");

	/* The identity page: announced in auxv, generation 0 at boot. */
	cr_assert_eq(s.identity, FG_IDENTITY_PAGE);
	const struct forkvm_identity *id = gmem_ptr(&vm->mem, s.identity, sizeof(*id));
	cr_assert_not_null(id);
	cr_assert_eq(id->magic, FORKVM_IDENTITY_MAGIC);
	cr_assert_eq(id->version, FORKVM_IDENTITY_VERSION);
	cr_assert_eq(id->size, sizeof(*id));
	cr_assert_eq(id->generation, 0);
	cr_assert_eq(id->restored_realtime_ns, 0);
	cr_assert_eq(fg_identity_write(vm, true), 0);
	cr_assert_eq(id->generation, 1, "a restore bumps the generation");
	cr_assert_neq(id->restored_realtime_ns, 0);

	/* AT_RANDOM: 16 bytes inside the stack, above the vectors. */
	uint64_t top = vm->fg->stack_top, rnd = s.aux[AT_RANDOM];
	cr_assert_eq(top, vm->mem.gpa_end, "the stack is at the top of RAM");
	cr_assert_gt(rnd, s.rsp);
	cr_assert_leq(rnd + 16, top);
	cr_assert_eq(rnd, vm->fg->auxv_random);
	uint8_t r[16], zero[16] = { 0 };
	cr_assert_eq(gmem_read(&vm->mem, rnd, r, 16), 0);
	cr_assert_neq(memcmp(r, zero, 16), 0, "AT_RANDOM bytes are random");
	const struct fg_vma *sv = fg_mm_lookup(&vm->fg->mm, rnd);
	cr_assert_not_null(sv);
	cr_assert_eq(sv->kind, FG_VMA_STACK);
	cr_assert_str_eq(rdstr(vm, s.aux[AT_PLATFORM]), "x86_64");
	cr_assert_str_eq(rdstr(vm, s.aux[AT_EXECFN]), "hello");

	/* Every string lies between rsp and the top of the stack. */
	for (unsigned i = 0; i < s.argc; i++)
		cr_assert(s.argv_ptr[i] > s.rsp && s.argv_ptr[i] < top, "argv[%u]", i);
	for (unsigned i = 0; i < s.nenv; i++)
		cr_assert(s.envp_ptr[i] > s.rsp && s.envp_ptr[i] < top, "envp[%u]", i);
	cr_assert(fg_mm_mapped(&vm->fg->mm, s.rsp, top - s.rsp), "the stack is mapped");

	/* Start registers. */
	struct vcpu *v = &vm->vcpus[0];
	cr_assert_eq(v->start.regs.rip, elf.entry, "start rip is the ELF entry");
	cr_assert_eq(vm->fg->entry, elf.entry);
	cr_assert_eq(v->start.regs.rflags, 0x2);
	cr_assert(v->start_pending);
	cr_assert_not_null(v->gt);
	cr_assert_eq(v->gt->tid, 1);
	cr_assert_eq(vm->fg->nr_live, 1);
	vm_destroy(vm);
}

Test(loader, no_cmdline_gives_argc_1)
{
	struct ut_vm_opts o = { .payload = "hello" };
	struct vm *vm = make_vm(&o);
	struct stack s;

	read_stack(vm, &s);
	cr_assert_eq(s.argc, 1);
	cr_assert_str_eq(s.argv[0], "hello");
	vm_destroy(vm);

	o.cmdline = "   \t ";
	vm = make_vm(&o);
	read_stack(vm, &s);
	cr_assert_eq(s.argc, 1, "blank command line");
	vm_destroy(vm);
}

Test(loader, memory_map_after_load)
{
	struct ut_vm_opts o = { .payload = "hello" };
	struct vm *vm = make_vm(&o);
	struct elf_info elf = parse_file("hello");
	struct fg_mm *mm = &vm->fg->mm;
	uint64_t img_end = (elf.hi + 4095) & ~4095ULL;

	cr_assert_eq(vm->plat, &platform_none);
	cr_assert_eq(vm->state, VM_STATE_CREATED);
	cr_assert_eq(mm->user_start, FG_SYS_END);
	cr_assert_eq(mm->user_end, vm->mem.gpa_end);
	const struct fg_vma *iv = fg_mm_lookup(mm, elf.entry);
	cr_assert_not_null(iv);
	cr_assert_eq(iv->kind, FG_VMA_IMAGE);
	cr_assert_eq(iv->start, elf.lo);
	cr_assert_eq(iv->end, img_end);
	cr_assert_eq(mm->brk_start, img_end);
	cr_assert_eq(mm->brk_cur, img_end);
	const struct fg_vma *sv = fg_mm_lookup(mm, vm->mem.gpa_end - 1);
	cr_assert_not_null(sv);
	cr_assert_eq(sv->kind, FG_VMA_STACK);
	cr_assert_eq(sv->end, vm->mem.gpa_end);
	cr_assert_eq(mm->mmap_top, sv->start, "mmap grows down from below the stack");
	cr_assert_eq(mm->mapped, (img_end - elf.lo) + (sv->end - sv->start));
	cr_assert(!fg_mm_mapped(mm, FG_SYS_END - 4096, 1), "the system area is not the program's");
	/* The image bytes are in guest memory. */
	char *p = ut_payload("hello");
	size_t len;
	uint8_t *img = ut_read_file(p, &len);
	for (unsigned i = 0; i < elf.nr_segs; i++)
		cr_assert_eq(memcmp(gmem_ptr(&vm->mem, elf.segs[i].vaddr, elf.segs[i].filesz),
				    img + elf.segs[i].offset, elf.segs[i].filesz), 0, "segment %u", i);
	/* No device on the port bus: a platform decodes the function guest's
	 * exits itself (KVM: its trampoline's ports). */
	cr_assert_eq(vm->pio.nr, 0);
	/* The system area is the platform's: none builds nothing there. */
	cr_assert_eq(rd64(vm, 0x1000), 0);
	free(img);
	free(p);
	vm_destroy(vm);
}

Test(loader, stack_in_high_ram)
{
	struct ut_vm_opts o = { .payload = "hello", .memory = 4 * GiB, .cmdline = "x" };
	struct vm *vm = make_vm(&o);
	struct stack s;

	cr_assert_eq(vm->mem.gpa_end, 5 * GiB);
	read_stack(vm, &s);
	cr_assert_gt(s.rsp, 4 * GiB, "the stack is at the top of RAM above the hole");
	cr_assert_eq(s.argc, 2);
	cr_assert_str_eq(s.argv[1], "x");
	const struct fg_vma *h = fg_mm_lookup(&vm->fg->mm, 3 * GiB);
	cr_assert_not_null(h, "the hole is reserved in the memory map");
	cr_assert_eq(h->kind, FG_VMA_RESERVED);
	vm_destroy(vm);
}

Test(loader, two_vcpus_only_vcpu0_runs)
{
	struct ut_vm_opts o = { .payload = "hello", .vcpus = 2 };
	struct vm *vm = make_vm(&o);

	cr_assert_eq(vm->nr_vcpus, 2);
	cr_assert_not_null(vm->vcpus[0].gt);
	cr_assert_null(vm->vcpus[1].gt);
	cr_assert(!vm->vcpus[1].start_pending);
	vm_destroy(vm);
}

/* ------------------------------------------------------------ synthetic ELFs */

static char *write_elf(char *dir, const char *name, const uint8_t *img, size_t len)
{
	char *p = ut_write_file(dir, name, img, len);
	cr_assert_not_null(p);
	return p;
}

Test(loader, synthetic_exec_and_pie)
{
	char *dir = ut_tmpdir();
	uint8_t *img = ut_elf_image();
	char *path = write_elf(dir, "exec", img, UT_ELF_SIZE);
	struct ut_vm_opts o = { .payload = path };
	struct vm *vm = make_vm(&o);

	cr_assert_eq(vm->vcpus[0].start.regs.rip, UT_ELF_BASE + 0x1000);
	uint8_t b;
	cr_assert_eq(gmem_read(&vm->mem, UT_ELF_BASE + 0x2100, &b, 1), 0);
	cr_assert_eq(b, 0, "bss is zero (the file holds 0xee there)");
	cr_assert_eq(gmem_read(&vm->mem, UT_ELF_BASE + 0x2001, &b, 1), 0);
	cr_assert_eq(b, 1 ^ 0x5a);
	vm_destroy(vm);
	free(path);

	/* The same image as ET_DYN at address 0 is placed at the PIE base. */
	ut_elf_ehdr(img)->e_type = ET_DYN;
	ut_elf_rebase(img, 0);
	path = write_elf(dir, "pie", img, UT_ELF_SIZE);
	o.payload = path;
	vm = make_vm(&o);
	cr_assert_eq(vm->vcpus[0].start.regs.rip, 0x400000 + 0x1000);
	struct stack s;
	read_stack(vm, &s);
	cr_assert_eq(s.aux[AT_ENTRY], 0x401000);
	cr_assert_eq(s.aux[AT_PHDR], 0x400040);
	cr_assert_str_eq(s.argv[0], "pie");
	vm_destroy(vm);
	free(path);
	free(img);
	ut_rmtree(dir);
	free(dir);
}

/* Creates a VM from payload bytes and expects failure rc with want in the message. */
static void expect_fail_image(const uint8_t *img, size_t len, uint64_t mem, int want_rc,
			      const char *want)
{
	char *dir = ut_tmpdir();
	char *path = write_elf(dir, "payload", img, len);
	struct ut_vm_opts o = { .payload = path, .memory = mem };
	struct vm *vm = NULL;
	char err[512] = "";
	int rc = ut_vm_create(&o, err, sizeof(err), &vm);

	cr_assert_eq(rc, want_rc, "rc %d, want %d (%s)", rc, want_rc, err);
	cr_assert(strstr(err, want), "message '%s' lacks '%s'", err, want);
	cr_assert(strstr(err, path), "message '%s' does not name the file", err);
	free(path);
	ut_rmtree(dir);
	free(dir);
}

Test(loader, rejects_non_elf)
{
	static const char txt[] = "#!/bin/sh\nexit 0\n";
	expect_fail_image((const uint8_t *)txt, sizeof(txt) - 1, 0, -ENOEXEC, "not a payload");
}

Test(loader, rejects_empty_file)
{
	char *dir = ut_tmpdir();
	char *path = write_elf(dir, "empty", (const uint8_t *)"", 0);
	struct ut_vm_opts o = { .payload = path };
	struct vm *vm = NULL;
	char err[512] = "";
	int rc = ut_vm_create(&o, err, sizeof(err), &vm);

	cr_assert_lt(rc, 0, "an empty payload is refused");
	cr_assert(strstr(err, path), "message '%s' does not name the file", err);
	cr_assert(strstr(err, "empty"), "%s", err);
	free(path);
	ut_rmtree(dir);
	free(dir);
}

Test(loader, rejects_dynamic_elf)
{
	size_t len;
	uint8_t *img = ut_read_file("/bin/true", &len);

	if (!img)
		cr_skip_test("no /bin/true");
	expect_fail_image(img, len, 0, -ENOEXEC, "dynamically linked");
	free(img);
}

Test(loader, rejects_32bit_elf)
{
	uint8_t *img = ut_elf_image();
	img[EI_CLASS] = ELFCLASS32;
	expect_fail_image(img, UT_ELF_SIZE, 0, -ENOEXEC, "64-bit");
	free(img);
}

Test(loader, missing_file_is_enoent)
{
	struct ut_vm_opts o = { .payload = "/nonexistent/forkvm-test/payload" };
	struct vm *vm = NULL;
	char err[512] = "";

	cr_assert_eq(ut_vm_create(&o, err, sizeof(err), &vm), -ENOENT, "%s", err);
	cr_assert(strstr(err, "/nonexistent/forkvm-test/payload"), "%s", err);
	cr_assert(strstr(err, "cannot read"), "%s", err);
	cr_assert_null(vm);
}

Test(loader, directory_is_refused)
{
	struct ut_vm_opts o = { .payload = "/tmp/" };
	struct vm *vm = NULL;
	char err[512] = "";
	int rc = ut_vm_create(&o, err, sizeof(err), &vm);

	cr_assert_eq(rc, -EISDIR, "a directory is not a payload: %s", err);
	cr_assert(strstr(err, "/tmp/"), "%s", err);
}

Test(loader, image_below_user_memory)
{
	uint8_t *img = ut_elf_image();
	ut_elf_rebase(img, 0x100000); /* inside the 2 MiB system area */
	expect_fail_image(img, UT_ELF_SIZE, 0, -ENOEXEC, "does not fit");
	free(img);
}

Test(loader, memory_too_small_for_the_image)
{
	uint8_t *img = ut_elf_image();
	ut_elf_rebase(img, 16 * MiB); /* beyond 16 MiB of RAM */
	expect_fail_image(img, UT_ELF_SIZE, 16 * MiB, -ENOEXEC, "does not fit");
	ut_elf_rebase(img, 3 * GiB - 0x1000); /* the bss runs into the MMIO hole */
	expect_fail_image(img, UT_ELF_SIZE, 4 * GiB, -ENOEXEC, "does not fit");
	free(img);
}

Test(loader, memory_too_small_for_image_and_stack)
{
	uint8_t *img = ut_elf_image();
	/* 16 MiB: a 2 MiB stack at [14 MiB, 16 MiB); an image ending above
	 * 12 MiB leaves no room for a stack-sized gap below it. */
	ut_elf_rebase(img, 12 * MiB);
	expect_fail_image(img, UT_ELF_SIZE, 16 * MiB, -ENOMEM, "too small");
	free(img);
}

Test(loader, bad_config_is_einval)
{
	struct vm_config cfg;
	struct vm *vm = NULL;
	char err[256] = "";

	vm_config_init(&cfg);
	cr_assert_eq(vm_create_nokvm(&cfg, err, sizeof(err), &vm), -EINVAL, "no kernel");
	cr_assert(strstr(err, "kernel"), "%s", err);
	cfg.kernel = ut_payload("hello");
	cfg.boot_vcpus = 0;
	cr_assert_eq(vm_create_nokvm(&cfg, err, sizeof(err), &vm), -EINVAL);
	cr_assert(strstr(err, "cpus"), "%s", err);
	cr_assert_null(vm);
	vm_config_free(&cfg);
}

/* ------------------------------------------------------------ command line */

Test(loader, cmdline_errors)
{
	struct ut_vm_opts o = { .payload = "hello", .cmdline = "a 'unterminated" };
	struct vm *vm = NULL;
	char err[512] = "";
	int rc;

	rc = ut_vm_create(&o, err, sizeof(err), &vm);
	cr_assert_lt(rc, 0);
	cr_assert(strstr(err, "unterminated quote"), "%s", err);

	/* 4096 words plus argv[0] is one too many. */
	size_t n = 4097;
	char *many = malloc(2 * n + 1);
	for (size_t i = 0; i < n; i++) {
		many[2 * i] = 'w';
		many[2 * i + 1] = ' ';
	}
	many[2 * n] = '\0';
	o.cmdline = many;
	rc = ut_vm_create(&o, err, sizeof(err), &vm);
	cr_assert_eq(rc, -E2BIG, "%s", err);
	cr_assert(strstr(err, "too many words"), "%s", err);

	/* More than 128 KiB of command line. */
	char *longer = malloc(200 * 1024);
	memset(longer, 'x', 200 * 1024 - 1);
	longer[200 * 1024 - 1] = '\0';
	o.cmdline = longer;
	rc = ut_vm_create(&o, err, sizeof(err), &vm);
	cr_assert_eq(rc, -E2BIG, "%s", err);
	cr_assert(strstr(err, "too long"), "%s", err);
	free(many);
	free(longer);
}

Test(loader, large_cmdline_fits)
{
	/* 1000 words of 50 bytes: 50 KB of strings plus 8 KB of pointers. */
	size_t n = 1000, wl = 50;
	char *cl = malloc(n * (wl + 1) + 1);
	for (size_t i = 0; i < n; i++) {
		memset(cl + i * (wl + 1), 'a' + (char)(i % 26), wl);
		cl[i * (wl + 1) + wl] = ' ';
	}
	cl[n * (wl + 1)] = '\0';
	struct ut_vm_opts o = { .payload = "hello", .cmdline = cl };
	struct vm *vm = make_vm(&o);
	uint64_t rsp = vm->vcpus[0].start.regs.rsp;
	cr_assert_eq(rd64(vm, rsp), n + 1);
	cr_assert_eq(rsp % 16, 0);
	const char *last = rdstr(vm, rd64(vm, rsp + 8 * (n + 1)));
	cr_assert_eq(strlen(last), wl);
	cr_assert_eq(last[0], 'a' + (char)((n - 1) % 26));
	vm_destroy(vm);
	free(cl);
}

static int split(const char *cl, char **words, int max, char *buf)
{
	return fg_split_cmdline(cl, buf, words, max);
}

Test(loader, split_cmdline_words)
{
	char buf[256], *w[16];

	cr_assert_eq(split("", w, 16, buf), 0);
	cr_assert_eq(split(" \t\n ", w, 16, buf), 0);
	cr_assert_eq(split("one", w, 16, buf), 1);
	cr_assert_str_eq(w[0], "one");
	cr_assert_eq(split("  a  b\tc\nd  ", w, 16, buf), 4);
	cr_assert_str_eq(w[0], "a");
	cr_assert_str_eq(w[1], "b");
	cr_assert_str_eq(w[2], "c");
	cr_assert_str_eq(w[3], "d");
	cr_assert_eq(split("a 'b c' \"d\\\"e\" f\\ g", w, 16, buf), 4);
	cr_assert_str_eq(w[0], "a");
	cr_assert_str_eq(w[1], "b c");
	cr_assert_str_eq(w[2], "d\"e");
	cr_assert_str_eq(w[3], "f g");
	cr_assert_eq(split("'a\\b'", w, 16, buf), 1);
	cr_assert_str_eq(w[0], "a\\b", "no escapes inside single quotes");
	cr_assert_eq(split("\"it's\" 'say \"hi\"'", w, 16, buf), 2);
	cr_assert_str_eq(w[0], "it's");
	cr_assert_str_eq(w[1], "say \"hi\"");
	cr_assert_eq(split("x''y pre'mid'post", w, 16, buf), 2);
	cr_assert_str_eq(w[0], "xy");
	cr_assert_str_eq(w[1], "premidpost");
	cr_assert_eq(split("'' \"\"", w, 16, buf), 2, "empty quoted words are words");
	cr_assert_str_eq(w[0], "");
	cr_assert_str_eq(w[1], "");
	cr_assert_eq(split("a\\\\b", w, 16, buf), 1);
	cr_assert_str_eq(w[0], "a\\b");
	cr_assert_eq(split("\"a\\\\b\"", w, 16, buf), 1);
	cr_assert_str_eq(w[0], "a\\b");
	cr_assert_eq(split("end\\", w, 16, buf), 1);
	cr_assert_str_eq(w[0], "end\\", "a trailing backslash is kept");
	cr_assert_eq(split("'a b'c d", w, 16, buf), 2);
	cr_assert_str_eq(w[0], "a bc");
	cr_assert_str_eq(w[1], "d");
}

Test(loader, split_cmdline_errors)
{
	char buf[256], *w[4];

	cr_assert_eq(split("'open", w, 4, buf), -EINVAL);
	cr_assert_eq(split("a \"open", w, 4, buf), -EINVAL);
	cr_assert_eq(split("a \"esc\\\"", w, 4, buf), -EINVAL, "an escaped quote does not close");
	cr_assert_eq(split("a b c d", w, 4, buf), 4);
	cr_assert_eq(split("a b c d e", w, 4, buf), -E2BIG);
	cr_assert_eq(split("a b c d   ", w, 4, buf), 4, "trailing blanks are no word");
	cr_assert_eq(split("a", w, 0, buf), -E2BIG);
	cr_assert_eq(split("", w, 0, buf), 0);
}

Test(loader, split_cmdline_fits_in_strlen_plus_one)
{
	/* The worst case for the output buffer: no quotes, one-letter words. */
	static const char *const cases[] = { "a", "a b c d e f g", "'a'\"b\"c", "\\a\\b",
					     "'' '' ''", "x\\ y\\ z", "\"\"" };
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = strlen(cases[i]) + 1;
		char *buf = malloc(n); /* exactly the documented size: ASan catches overruns */
		char *w[16];
		cr_assert_geq(fg_split_cmdline(cases[i], buf, w, 16), 1, "%s", cases[i]);
		free(buf);
	}
}
