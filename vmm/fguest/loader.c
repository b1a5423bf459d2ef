/* vmm/fguest/loader.c - loads a static x86-64 ELF as a function guest:
 * system area, image, stack with argv/envp/auxv, main thread on vCPU 0. */
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "common/util.h"
#include "common/log.h"
#include "guest/abi/forkvm_identity.h"
#include "vmm/cpu.h"
#include "vmm/elf.h"
#include "vmm/fguest/fguest.h"
#include "vmm/loader.h"
#include "vmm/vm.h"

#define FG_PIE_BASE 0x400000ULL
#define FG_STACK_MAX (8ULL * MiB)
#define FG_MAX_ARGS 4096
#define FG_ARGS_MAX_BYTES (128 * KiB)

static const char *const fg_envp[] = { "HOME=/", "PATH=/", "FORKVM_GUEST=1" };

int fg_split_cmdline(const char *cmdline, char *buf, char **words, int max_words)
{
	int n = 0;
	const char *s = cmdline;
	char *o = buf;

	for (;;) {
		while (*s == ' ' || *s == '\t' || *s == '\n')
			s++;
		if (!*s)
			return n;
		if (n >= max_words)
			return -E2BIG;
		words[n++] = o;
		char quote = 0;
		for (; *s; s++) {
			if (quote) {
				if (*s == quote)
					quote = 0;
				else if (*s == '\\' && quote == '"' && s[1])
					*o++ = *++s;
				else
					*o++ = *s;
			} else if (*s == '\'' || *s == '"') {
				quote = *s;
			} else if (*s == '\\' && s[1]) {
				*o++ = *++s;
			} else if (*s == ' ' || *s == '\t' || *s == '\n') {
				break;
			} else {
				*o++ = *s;
			}
		}
		if (quote)
			return -EINVAL;
		*o++ = '\0';
	}
}

int fg_build_stack(struct fguest *fg, uint64_t stack_top, uint64_t stack_size,
		   const struct elf_info *elf, const char *argv0, const char *cmdline,
		   const uint8_t random16[16], uint64_t hwcap, uint64_t *sp_out, char *err,
		   size_t errlen)
{
	struct gmem *m = &fg->vm->mem;
	size_t cl = cmdline ? strlen(cmdline) : 0;
	char wordbuf[FG_ARGS_MAX_BYTES];
	char *words[FG_MAX_ARGS];
	uint64_t argv_at[FG_MAX_ARGS + 1], envp_at[sizeof(fg_envp) / sizeof(fg_envp[0])];
	uint64_t sp = stack_top, limit = stack_top - stack_size;
	int nw = 0;

	if (cl + strlen(argv0) + 2 > sizeof(wordbuf))
		return err_fail(err, errlen, -E2BIG, "command line too long (%zu bytes, at most %llu)", cl,
				  FG_ARGS_MAX_BYTES - 1);
	if (cmdline) {
		nw = fg_split_cmdline(cmdline, wordbuf, words, FG_MAX_ARGS);
		if (nw == -EINVAL)
			return err_fail(err, errlen, -EINVAL, "command line has an unterminated quote");
		if (nw < 0)
			return err_fail(err, errlen, -E2BIG, "command line has too many words");
	}
	int argc = nw + 1;
	size_t nenv = sizeof(fg_envp) / sizeof(fg_envp[0]);

	/* Strings at the top. */
#define PUSH_BYTES(src, n)                                    \
	do {                                                  \
		if (sp - limit < (n) + 64)                     \
			return err_fail(err, errlen, -E2BIG, "initial stack overflow"); \
		sp -= (n);                                    \
		if (gmem_write(m, sp, (src), (n)) < 0)        \
			return err_fail(err, errlen, -EFAULT, "stack outside RAM"); \
	} while (0)

	const char *platform = "x86_64";
	PUSH_BYTES(platform, strlen(platform) + 1);
	uint64_t platform_at = sp;
	PUSH_BYTES(random16, 16);
	uint64_t random_at = sp;
	for (size_t i = nenv; i-- > 0;) {
		PUSH_BYTES(fg_envp[i], strlen(fg_envp[i]) + 1);
		envp_at[i] = sp;
	}
	for (int i = nw; i-- > 0;) {
		PUSH_BYTES(words[i], strlen(words[i]) + 1);
		argv_at[i + 1] = sp;
	}
	PUSH_BYTES(argv0, strlen(argv0) + 1);
	argv_at[0] = sp;
	uint64_t execfn_at = sp;
	sp &= ~15ULL;

	uint64_t auxv[][2] = {
		{ AT_PHDR, elf->phdr },   { AT_PHENT, elf->phentsize }, { AT_PHNUM, elf->phnum },
		{ AT_PAGESZ, 4096 },      { AT_BASE, 0 },               { AT_FLAGS, 0 },
		{ AT_ENTRY, elf->entry }, { AT_UID, 0 },                { AT_EUID, 0 },
		{ AT_GID, 0 },            { AT_EGID, 0 },               { AT_SECURE, 0 },
		{ AT_CLKTCK, 100 },       { AT_HWCAP, hwcap },          { AT_HWCAP2, 0 },
		{ AT_RANDOM, random_at }, { AT_PLATFORM, platform_at }, { AT_EXECFN, execfn_at },
		{ FORKVM_AT_IDENTITY, FG_IDENTITY_PAGE }, { AT_NULL, 0 },
	};
	size_t nauxv = sizeof(auxv) / sizeof(auxv[0]);
	size_t words_total = 1 + (size_t)argc + 1 + nenv + 1 + 2 * nauxv;
	uint64_t bytes = words_total * 8;

	if (sp - limit < bytes + 64)
		return err_fail(err, errlen, -E2BIG, "initial stack overflow");
	sp = (sp - bytes) & ~15ULL;
	uint64_t *w = gmem_ptr(m, sp, bytes);
	if (!w)
		return err_fail(err, errlen, -EFAULT, "stack outside RAM");
	size_t k = 0;
	w[k++] = (uint64_t)argc;
	for (int i = 0; i < argc; i++)
		w[k++] = argv_at[i];
	w[k++] = 0;
	for (size_t i = 0; i < nenv; i++)
		w[k++] = envp_at[i];
	w[k++] = 0;
	for (size_t i = 0; i < nauxv; i++) {
		w[k++] = auxv[i][0];
		w[k++] = auxv[i][1];
	}
	fg->auxv_random = random_at;
	*sp_out = sp;
	return 0;
#undef PUSH_BYTES
}

static bool fg_probe(const uint8_t *image, size_t len)
{
	return len >= SELFMAG && memcmp(image, ELFMAG, SELFMAG) == 0;
}

static int fg_load(struct vm *vm, const uint8_t *image, size_t len, char *err, size_t errlen)
{
	struct elf_info elf;
	struct fguest *fg;
	uint8_t rnd[16];
	const char *argv0;
	int rc;

	rc = elf_parse(image, len, FG_PIE_BASE, &elf, err, errlen);
	if (rc < 0)
		return rc;
	if (elf.lo < FG_SYS_END || !gmem_is_ram(&vm->mem, elf.lo, align_up(elf.hi, 4096) - elf.lo)) {
		snprintf(err, errlen,
			 "the ELF image [0x%llx, 0x%llx) does not fit in guest memory "
			 "(user memory is [0x%llx, 0x%llx))",
			 (unsigned long long)elf.lo, (unsigned long long)elf.hi,
			 (unsigned long long)FG_SYS_END, (unsigned long long)vm->mem.gpa_end);
		return -ENOEXEC;
	}
	rc = vm->plat->fguest_setup(vm, err, errlen);
	if (rc < 0)
		return rc;
	rc = fguest_create(vm, &fg);
	if (rc < 0) {
		snprintf(err, errlen, "out of memory");
		return rc;
	}
	vm->fg = fg;

	uint64_t img_end = align_up(elf.hi, 4096);
	rc = fg_mm_insert(&fg->mm, elf.lo, img_end, PROT_READ | PROT_WRITE | PROT_EXEC, FG_VMA_IMAGE);
	if (rc == 0)
		rc = elf_load(&vm->mem, image, len, &elf);
	if (rc < 0) {
		snprintf(err, errlen, "cannot load the ELF image: %s", strerror(-rc));
		return rc;
	}
	fg->mm.brk_start = fg->mm.brk_cur = img_end;
	fg->entry = elf.entry;

	/* Stack at the top of RAM; mmap grows down from below it. */
	uint64_t top = vm->mem.gpa_end;
	uint64_t ssize = MIN(FG_STACK_MAX, align_down(vm->mem.size / 8, 4096));
	if (top - ssize < img_end + ssize) {
		snprintf(err, errlen, "guest memory too small for the program and its stack");
		return -ENOMEM;
	}
	rc = fg_mm_insert(&fg->mm, top - ssize, top, PROT_READ | PROT_WRITE, FG_VMA_STACK);
	if (rc < 0) {
		snprintf(err, errlen, "cannot map the stack: %s", strerror(-rc));
		return rc;
	}
	fg->stack_top = top;
	fg->mm.mmap_top = top - ssize;

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) {
		snprintf(err, errlen, "getrandom failed");
		return -EIO;
	}
	argv0 = strrchr(vm->cfg.kernel, '/');
	argv0 = argv0 ? argv0 + 1 : vm->cfg.kernel;
	uint64_t sp;
	rc = fg_build_stack(fg, top, ssize, &elf, argv0, vm->cfg.cmdline, rnd, vm->plat->hwcap(vm),
			    &sp, err, errlen);
	if (rc < 0)
		return rc;

	rc = fg_identity_write(vm, false);
	if (rc < 0) {
		snprintf(err, errlen, "cannot write the identity page: %s", strerror(-rc));
		return rc;
	}
	struct vregs regs = { .rip = elf.entry, .rsp = sp, .rflags = CPU_RFLAGS_FIXED };
	pthread_mutex_lock(&vm->lock);
	fg_thread_start(fg, &vm->vcpus[0], FG_FIRST_TID, &regs, 0);
	pthread_mutex_unlock(&vm->lock);
	log_debug("function guest: entry 0x%llx, image [0x%llx, 0x%llx), stack top 0x%llx, sp 0x%llx",
		  (unsigned long long)elf.entry, (unsigned long long)elf.lo,
		  (unsigned long long)elf.hi, (unsigned long long)top, (unsigned long long)sp);
	return 0;
}

static int fg_restore_prepare(struct vm *vm, char *err, size_t errlen)
{
	int rc = fguest_create(vm, &vm->fg);
	if (rc < 0)
		snprintf(err, errlen, "out of memory");
	return rc;
}

static int fg_restore_finish(struct vm *vm, char *err, size_t errlen)
{
	int rc = fg_identity_write(vm, true);
	if (rc < 0)
		snprintf(err, errlen, "cannot write the identity page: %s", strerror(-rc));
	return rc;
}

static int fg_restore_foreign(struct vm *vm, char *err, size_t errlen)
{
	return vm->plat->fguest_setup(vm, err, errlen);
}

const struct vm_loader fguest_loader = {
	.name = "function-guest",
	.probe = fg_probe,
	.load = fg_load,
	.restore_prepare = fg_restore_prepare,
	.restore_foreign = fg_restore_foreign,
	.restore_finish = fg_restore_finish,
	.set_identity = fg_identity_set_clone,
	.units = fguest_units,
};
