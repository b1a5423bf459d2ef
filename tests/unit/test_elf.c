/* tests/unit/test_elf.c - vmm/elf: elf_parse() on the real payloads
 * (ET_EXEC), on a static-pie built here with musl-gcc, and on synthetic
 * images broken one field at a time; elf_load() copies and zeroes bss. */
#include <criterion/criterion.h>

#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/lib/unit.h"
#include "vmm/elf.h"
#include "vmm/gmem.h"

#define PIE_BASE 0x400000ULL

static uint8_t *load_payload(const char *name, size_t *len)
{
	char *path = ut_payload(name);
	uint8_t *img;

	cr_assert(ut_file_exists(path), "%s is missing: run make guest (FORKVM_GUEST=%s)", path,
		  ut_guest_dir());
	img = ut_read_file(path, len);
	cr_assert_not_null(img, "cannot read %s", path);
	free(path);
	return img;
}

/* Checks info against the image's own headers. */
static void check_against_headers(const uint8_t *img, const struct elf_info *info, uint64_t bias)
{
	Elf64_Ehdr eh;
	uint64_t lo = UINT64_MAX, hi = 0, phdr = 0;
	unsigned nload = 0;
	bool have_phdr = false;

	memcpy(&eh, img, sizeof(eh));
	cr_assert_eq(info->entry, eh.e_entry + bias, "entry");
	cr_assert_eq(info->phnum, eh.e_phnum);
	cr_assert_eq(info->phentsize, sizeof(Elf64_Phdr));
	cr_assert_eq(info->bias, bias);
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, img + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_PHDR) {
			phdr = ph.p_vaddr + bias;
			have_phdr = true;
		}
		if (ph.p_type != PT_LOAD || !ph.p_memsz)
			continue;
		cr_assert_lt(nload, info->nr_segs);
		const struct elf_segment *s = &info->segs[nload++];
		cr_assert_eq(s->vaddr, ph.p_vaddr + bias, "segment %u vaddr", nload - 1);
		cr_assert_eq(s->memsz, ph.p_memsz);
		cr_assert_eq(s->filesz, ph.p_filesz);
		cr_assert_eq(s->offset, ph.p_offset);
		cr_assert_eq(s->flags, ph.p_flags);
		if (!have_phdr && eh.e_phoff >= ph.p_offset &&
		    eh.e_phoff + eh.e_phnum * sizeof(Elf64_Phdr) <= ph.p_offset + ph.p_filesz) {
			phdr = ph.p_vaddr + bias + (eh.e_phoff - ph.p_offset);
			have_phdr = true;
		}
		if ((ph.p_vaddr + bias) / 4096 * 4096 < lo)
			lo = (ph.p_vaddr + bias) / 4096 * 4096;
		if (ph.p_vaddr + bias + ph.p_memsz > hi)
			hi = ph.p_vaddr + bias + ph.p_memsz;
	}
	cr_assert_eq(info->nr_segs, nload);
	cr_assert(have_phdr);
	cr_assert_eq(info->phdr, phdr, "AT_PHDR 0x%llx, want 0x%llx", (unsigned long long)info->phdr,
		     (unsigned long long)phdr);
	cr_assert_eq(info->lo, lo);
	cr_assert_eq(info->hi, hi);
	cr_assert_geq(info->entry, info->lo);
	cr_assert_lt(info->entry, info->hi);
}

static void parse_real(const char *name)
{
	size_t len;
	uint8_t *img = load_payload(name, &len);
	struct elf_info info;
	char err[256] = "";
	int rc = elf_parse(img, len, PIE_BASE, &info, err, sizeof(err));

	cr_assert_eq(rc, 0, "%s: %s", name, err);
	cr_assert(!info.pie, "%s is ET_EXEC", name);
	check_against_headers(img, &info, 0);
	cr_assert_geq(info.lo, 0x200000, "%s loads above the system area", name);
	free(img);
}

Test(elf, parse_hello)
{
	parse_real("hello");
}

Test(elf, parse_threads)
{
	parse_real("threads");
}

Test(elf, parse_fault)
{
	parse_real("fault");
}

Test(elf, parse_syscalls)
{
	parse_real("syscalls");
}

Test(elf, parse_agent)
{
	parse_real("agent");
}

/* ------------------------------------------------------------ static-pie */

Test(elf, parse_static_pie)
{
	char *dir = ut_tmpdir();
	static const char src[] = "int main(void) { return 7; }\n";
	char *c, *out, *cmd;
	int st;

	cr_assert_not_null(dir);
	if (system("command -v musl-gcc >/dev/null 2>&1") != 0) {
		ut_rmtree(dir);
		cr_skip_test("musl-gcc is not installed");
	}
	c = ut_write_file(dir, "pie.c", src, strlen(src));
	cr_assert_not_null(c);
	cr_assert(asprintf(&out, "%s/pie", dir) > 0);
	/* Debian's musl-gcc.specs passes -dynamic-linker unconditionally, so a
	 * plain -static-pie gets a PT_INTERP; --no-dynamic-linker drops it. */
	cr_assert(asprintf(&cmd, "musl-gcc -static-pie -fPIE -O1 -Wl,--no-dynamic-linker -o '%s' '%s' "
			   "2>/dev/null || musl-gcc -static-pie -fPIE -O1 -o '%s' '%s' 2>/dev/null",
			   out, c, out, c) > 0);
	st = system(cmd);
	if (st != 0 || !ut_file_exists(out)) {
		ut_rmtree(dir);
		cr_skip_test("musl-gcc cannot build a static-pie here");
	}

	size_t len;
	uint8_t *img = ut_read_file(out, &len);
	struct elf_info info;
	char err[256] = "";
	cr_assert_not_null(img);
	cr_assert_eq(ut_elf_ehdr(img)->e_type, ET_DYN, "musl-gcc -static-pie gives ET_DYN");
	for (unsigned i = 0; i < ut_elf_ehdr(img)->e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, img + ut_elf_ehdr(img)->e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_INTERP) {
			ut_rmtree(dir);
			cr_skip_test("musl-gcc -static-pie produced an ELF with an interpreter");
		}
	}
	cr_assert_eq(elf_parse(img, len, PIE_BASE, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert(info.pie);
	cr_assert_eq(info.bias, PIE_BASE);
	check_against_headers(img, &info, PIE_BASE);
	cr_assert_geq(info.lo, PIE_BASE);

	/* A different base moves everything by the same amount. */
	struct elf_info info2;
	cr_assert_eq(elf_parse(img, len, 0x10000000, &info2, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(info2.entry - info.entry, 0x10000000 - PIE_BASE);
	cr_assert_eq(info2.phdr - info.phdr, 0x10000000 - PIE_BASE);
	cr_assert_eq(info2.segs[0].vaddr - info.segs[0].vaddr, 0x10000000 - PIE_BASE);

	/* And it loads: the bytes land at bias + p_vaddr. */
	struct gmem m;
	cr_assert_eq(gmem_init(&m, 64 * MiB, GMEM_ANON), 0);
	cr_assert_eq(elf_load(&m, img, len, &info), 0);
	for (unsigned i = 0; i < info.nr_segs; i++) {
		const struct elf_segment *s = &info.segs[i];
		cr_assert_eq(memcmp(gmem_ptr(&m, s->vaddr, s->filesz), img + s->offset, s->filesz), 0,
			     "segment %u", i);
	}
	gmem_fini(&m);
	free(img);
	free(c);
	free(out);
	free(cmd);
	ut_rmtree(dir);
	free(dir);
}

/* ------------------------------------------------------------ synthetic */

Test(elf, synthetic_image_is_valid)
{
	uint8_t *img = ut_elf_image();
	struct elf_info info;
	char err[256] = "";

	cr_assert_eq(elf_parse(img, UT_ELF_SIZE, PIE_BASE, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(info.nr_segs, 2);
	cr_assert_eq(info.lo, UT_ELF_BASE);
	cr_assert_eq(info.hi, UT_ELF_BASE + 0x5000);
	cr_assert_eq(info.entry, UT_ELF_BASE + 0x1000);
	cr_assert_eq(info.phdr, UT_ELF_BASE + sizeof(Elf64_Ehdr), "phdrs found in the first segment");
	cr_assert_eq(info.max_align, 0x1000);
	cr_assert_eq(info.segs[1].flags, PF_R | PF_W);
	free(img);
}

/* Parses img (len bytes) and expects -ENOEXEC with a message containing want. */
static void expect_reject(const uint8_t *img, size_t len, const char *want)
{
	struct elf_info info;
	char err[256] = "";
	int rc = elf_parse(img, len, PIE_BASE, &info, err, sizeof(err));

	cr_assert_eq(rc, -ENOEXEC, "rc %d (want -ENOEXEC; message '%s')", rc, err);
	cr_assert(strstr(err, want), "message '%s' does not mention '%s'", err, want);
}

Test(elf, rejects_non_elf)
{
	static const char txt[] = "#!/bin/sh\necho this is not an ELF file at all, but it is long enough\n";
	uint8_t *img = ut_elf_image();

	expect_reject((const uint8_t *)txt, sizeof(txt), "not an ELF");
	expect_reject(img, 4, "not an ELF");                   /* magic only */
	expect_reject(img, sizeof(Elf64_Ehdr) - 1, "not an ELF"); /* truncated header */
	expect_reject((const uint8_t *)"", 0, "not an ELF");
	img[1] = 'e';
	expect_reject(img, UT_ELF_SIZE, "not an ELF");
	free(img);
}

Test(elf, rejects_32bit)
{
	uint8_t *img = ut_elf_image();
	img[EI_CLASS] = ELFCLASS32;
	expect_reject(img, UT_ELF_SIZE, "64-bit");
	free(img);
}

Test(elf, rejects_big_endian)
{
	uint8_t *img = ut_elf_image();
	img[EI_DATA] = ELFDATA2MSB;
	expect_reject(img, UT_ELF_SIZE, "little-endian");
	free(img);
}

Test(elf, rejects_wrong_machine)
{
	uint8_t *img = ut_elf_image();
	ut_elf_ehdr(img)->e_machine = EM_AARCH64;
	expect_reject(img, UT_ELF_SIZE, "machine 183");
	ut_elf_ehdr(img)->e_machine = EM_386;
	expect_reject(img, UT_ELF_SIZE, "x86-64");
	free(img);
}

Test(elf, rejects_relocatable_and_core)
{
	uint8_t *img = ut_elf_image();
	ut_elf_ehdr(img)->e_type = ET_REL;
	expect_reject(img, UT_ELF_SIZE, "not an executable");
	ut_elf_ehdr(img)->e_type = ET_CORE;
	expect_reject(img, UT_ELF_SIZE, "not an executable");
	ut_elf_ehdr(img)->e_type = ET_NONE;
	expect_reject(img, UT_ELF_SIZE, "not an executable");
	free(img);
}

Test(elf, rejects_bad_program_header_table)
{
	uint8_t *img = ut_elf_image();
	Elf64_Ehdr *eh = ut_elf_ehdr(img);

	eh->e_phentsize = 32;
	expect_reject(img, UT_ELF_SIZE, "program header");
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 0;
	expect_reject(img, UT_ELF_SIZE, "program header");
	eh->e_phnum = UT_ELF_NPHDR;

	eh->e_phoff = UT_ELF_SIZE - 100; /* three headers do not fit in 100 bytes */
	expect_reject(img, UT_ELF_SIZE, "outside the file");
	eh->e_phoff = UT_ELF_SIZE;
	expect_reject(img, UT_ELF_SIZE, "outside the file");
	eh->e_phoff = UINT64_MAX - 8; /* wraps */
	expect_reject(img, UT_ELF_SIZE, "outside the file");
	eh->e_phoff = sizeof(Elf64_Ehdr);
	/* The file ends inside the program header table. */
	expect_reject(img, sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr), "outside the file");
	free(img);
}

Test(elf, rejects_segment_outside_file)
{
	uint8_t *img = ut_elf_image();
	Elf64_Phdr *ph = ut_elf_phdr(img, 1);

	ph->p_offset = UT_ELF_SIZE - 0x80; /* 0x100 bytes from there run past the end */
	expect_reject(img, UT_ELF_SIZE, "segment 1 lies outside the file");
	ph->p_offset = UINT64_MAX - 0x10; /* offset + filesz wraps */
	expect_reject(img, UT_ELF_SIZE, "outside the file");
	ph->p_offset = 0x2000;
	/* A file cut short inside segment 0. */
	expect_reject(img, 0x1800, "segment 0 lies outside the file");
	free(img);
}

Test(elf, rejects_filesz_above_memsz)
{
	uint8_t *img = ut_elf_image();
	Elf64_Phdr *ph = ut_elf_phdr(img, 1);

	ph->p_filesz = 0x200;
	ph->p_memsz = 0x100;
	expect_reject(img, UT_ELF_SIZE, "file size exceeds memory size");
	free(img);
}

Test(elf, rejects_interpreter)
{
	uint8_t *img = ut_elf_image();
	Elf64_Phdr *ph = ut_elf_phdr(img, 2);

	*ph = (Elf64_Phdr){ .p_type = PT_INTERP, .p_offset = 0x100, .p_vaddr = UT_ELF_BASE + 0x100,
			    .p_filesz = 16, .p_memsz = 16, .p_align = 1 };
	memcpy(img + 0x100, "/lib/ld-musl.so", 16);
	expect_reject(img, UT_ELF_SIZE, "dynamically linked");
	free(img);
}

Test(elf, rejects_dynamic_system_binary)
{
	const char *bins[] = { "/bin/true", "/usr/bin/true" };
	const char *bin = NULL;
	size_t len;
	uint8_t *img;

	for (unsigned i = 0; i < 2 && !bin; i++)
		if (ut_file_exists(bins[i]))
			bin = bins[i];
	if (!bin)
		cr_skip_test("no /bin/true");
	img = ut_read_file(bin, &len);
	cr_assert_not_null(img);
	if (len < 4 || memcmp(img, ELFMAG, SELFMAG) != 0) {
		free(img);
		cr_skip_test("%s is not an ELF file", bin);
	}
	expect_reject(img, len, "dynamically linked");
	free(img);
}

Test(elf, rejects_entry_outside_image)
{
	uint8_t *img = ut_elf_image();
	Elf64_Ehdr *eh = ut_elf_ehdr(img);

	eh->e_entry = UT_ELF_BASE + 0x5000; /* == hi */
	expect_reject(img, UT_ELF_SIZE, "entry point 0x405000 is outside the image");
	eh->e_entry = UT_ELF_BASE - 1;
	expect_reject(img, UT_ELF_SIZE, "entry point");
	eh->e_entry = 0;
	expect_reject(img, UT_ELF_SIZE, "entry point");
	eh->e_entry = UT_ELF_BASE + 0x4fff; /* last byte of bss: inside */
	struct elf_info info;
	char err[128];
	cr_assert_eq(elf_parse(img, UT_ELF_SIZE, PIE_BASE, &info, err, sizeof(err)), 0, "%s", err);
	free(img);
}

Test(elf, rejects_odd_alignment_and_address_overflow)
{
	uint8_t *img = ut_elf_image();
	Elf64_Phdr *ph = ut_elf_phdr(img, 1);

	ph->p_align = 0x1800;
	expect_reject(img, UT_ELF_SIZE, "power of 2");
	ph->p_align = 0x1000;
	ph->p_vaddr = UINT64_MAX - 0x1000; /* + memsz 0x3000 wraps */
	expect_reject(img, UT_ELF_SIZE, "overflows");
	free(img);
}

Test(elf, rejects_pie_bias_overflow)
{
	uint8_t *img = ut_elf_image();
	struct elf_info info;
	char err[256] = "";

	ut_elf_ehdr(img)->e_type = ET_DYN;
	ut_elf_rebase(img, 0);
	cr_assert_eq(elf_parse(img, UT_ELF_SIZE, PIE_BASE, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert(info.pie);
	cr_assert_eq(info.entry, PIE_BASE + 0x1000);
	cr_assert_eq(info.segs[1].vaddr, PIE_BASE + 0x2000);
	cr_assert_eq(info.phdr, PIE_BASE + sizeof(Elf64_Ehdr));
	cr_assert_eq(elf_parse(img, UT_ELF_SIZE, UINT64_MAX - 0x1000, &info, err, sizeof(err)),
		     -ENOEXEC, "a bias that wraps the address space");
	free(img);
}

Test(elf, rejects_empty_and_too_many_segments)
{
	uint8_t *img = ut_elf_image();
	Elf64_Ehdr *eh = ut_elf_ehdr(img);

	/* Only PT_GNU_STACK and two empty PT_LOADs: nothing to load. */
	ut_elf_phdr(img, 0)->p_memsz = 0;
	ut_elf_phdr(img, 0)->p_filesz = 0;
	ut_elf_phdr(img, 1)->p_memsz = 0;
	ut_elf_phdr(img, 1)->p_filesz = 0;
	expect_reject(img, UT_ELF_SIZE, "nothing to load");
	free(img);

	/* 17 PT_LOAD segments: header table at 0x40, 17 * 56 bytes. */
	img = ut_elf_image();
	eh = ut_elf_ehdr(img);
	eh->e_phnum = ELF_MAX_SEGMENTS + 1;
	for (unsigned i = 0; i < eh->e_phnum; i++)
		*ut_elf_phdr(img, i) = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = 0,
						     .p_vaddr = UT_ELF_BASE + 0x1000ULL * i * 2,
						     .p_filesz = 0x1000, .p_memsz = 0x1000,
						     .p_align = 0x1000 };
	expect_reject(img, UT_ELF_SIZE, "too many");
	free(img);
}

Test(elf, rejects_phdrs_not_loaded)
{
	uint8_t *img = ut_elf_image();

	/* Segment 0 starts after the header table and there is no PT_PHDR. */
	Elf64_Phdr *ph = ut_elf_phdr(img, 0);
	ph->p_offset = 0x1000;
	ph->p_vaddr = UT_ELF_BASE + 0x1000;
	ph->p_filesz = ph->p_memsz = 0x1000;
	expect_reject(img, UT_ELF_SIZE, "program headers are not in a loaded segment");

	/* An explicit PT_PHDR is trusted. */
	*ut_elf_phdr(img, 2) = (Elf64_Phdr){ .p_type = PT_PHDR, .p_offset = 0x40,
					     .p_vaddr = UT_ELF_BASE + 0x40,
					     .p_filesz = 3 * sizeof(Elf64_Phdr),
					     .p_memsz = 3 * sizeof(Elf64_Phdr), .p_align = 8 };
	struct elf_info info;
	char err[128] = "";
	cr_assert_eq(elf_parse(img, UT_ELF_SIZE, PIE_BASE, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(info.phdr, UT_ELF_BASE + 0x40);
	free(img);
}

Test(elf, short_error_buffer_is_truncated_safely)
{
	char err[8];
	struct elf_info info;

	memset(err, 'x', sizeof(err));
	cr_assert_eq(elf_parse((const uint8_t *)"nope", 4, PIE_BASE, &info, err, sizeof(err)), -ENOEXEC);
	cr_assert_eq(err[7], '\0', "NUL-terminated within errlen");
	cr_assert_str_eq(err, "not an ");
}

/* ------------------------------------------------------------ load */

Test(elf, load_copies_segments_and_zeroes_bss)
{
	uint8_t *img = ut_elf_image();
	struct elf_info info;
	struct gmem m;
	char err[128] = "";
	uint8_t *g;

	cr_assert_eq(elf_parse(img, UT_ELF_SIZE, PIE_BASE, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gmem_init(&m, 16 * MiB, GMEM_ANON), 0);
	/* Dirty the whole image area and a bit around it. */
	g = gmem_ptr(&m, UT_ELF_BASE - 0x1000, 0x7000);
	cr_assert_not_null(g);
	memset(g, 0xcc, 0x7000);

	cr_assert_eq(elf_load(&m, img, UT_ELF_SIZE, &info), 0);
	g = gmem_ptr(&m, UT_ELF_BASE, 0x5000);
	cr_assert_eq(memcmp(g, img, 0x2000), 0, "segment 0 copied");
	cr_assert_eq(memcmp(g + 0x2000, img + 0x2000, 0x100), 0, "segment 1 file part copied");
	for (unsigned i = 0x2100; i < 0x5000; i++)
		cr_assert_eq(g[i], 0, "bss byte at +0x%x is 0x%02x (file bytes past filesz leaked?)", i,
			     g[i]);
	cr_assert_eq(g[-1], 0xcc, "byte before the image untouched");
	cr_assert_eq(g[0x5000], 0xcc, "byte after the image untouched");
	gmem_fini(&m);
	free(img);
}

Test(elf, load_real_payload)
{
	size_t len;
	uint8_t *img = load_payload("hello", &len);
	struct elf_info info;
	struct gmem m;
	char err[128] = "";

	cr_assert_eq(elf_parse(img, len, PIE_BASE, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gmem_init(&m, 64 * MiB, GMEM_MEMFD), 0);
	memset(gmem_ptr(&m, info.lo, info.hi - info.lo), 0xcc, info.hi - info.lo);
	cr_assert_eq(elf_load(&m, img, len, &info), 0);
	for (unsigned i = 0; i < info.nr_segs; i++) {
		const struct elf_segment *s = &info.segs[i];
		const uint8_t *g = gmem_ptr(&m, s->vaddr, s->memsz);
		cr_assert_eq(memcmp(g, img + s->offset, s->filesz), 0, "segment %u", i);
		for (uint64_t k = s->filesz; k < s->memsz; k++)
			cr_assert_eq(g[k], 0, "segment %u bss +0x%llx", i, (unsigned long long)k);
	}
	gmem_fini(&m);
	free(img);
}

Test(elf, load_outside_ram_is_efault)
{
	uint8_t *img = ut_elf_image();
	struct elf_info info;
	struct gmem m;
	char err[128] = "";

	ut_elf_rebase(img, 16 * MiB - 0x4000); /* bss runs past the end of 16 MiB */
	cr_assert_eq(elf_parse(img, UT_ELF_SIZE, PIE_BASE, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gmem_init(&m, 16 * MiB, GMEM_ANON), 0);
	cr_assert_eq(elf_load(&m, img, UT_ELF_SIZE, &info), -EFAULT);
	gmem_fini(&m);

	ut_elf_rebase(img, 3 * GiB - 0x2000); /* segment 1 lands in the MMIO hole */
	cr_assert_eq(elf_parse(img, UT_ELF_SIZE, PIE_BASE, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(gmem_init(&m, 4 * GiB, GMEM_ANON), 0);
	cr_assert_eq(elf_load(&m, img, UT_ELF_SIZE, &info), -EFAULT);
	gmem_fini(&m);
	free(img);
}
