/* vmm/elf.c - see elf.h. */
#include "elf.h"

#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"


int elf_parse(const uint8_t *image, size_t len, uint64_t pie_base, struct elf_info *info,
	      char *err, size_t errlen)
{
	Elf64_Ehdr eh;
	uint64_t phend;

	memset(info, 0, sizeof(*info));
	if (len < sizeof(eh) || memcmp(image, ELFMAG, SELFMAG) != 0)
		return err_fail(err, errlen, -ENOEXEC, "not an ELF file");
	memcpy(&eh, image, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64)
		return err_fail(err, errlen, -ENOEXEC, "not a 64-bit ELF file");
	if (eh.e_ident[EI_DATA] != ELFDATA2LSB)
		return err_fail(err, errlen, -ENOEXEC, "not a little-endian ELF file");
	if (eh.e_machine != EM_X86_64)
		return err_fail(err, errlen, -ENOEXEC, "ELF machine %u is not x86-64", eh.e_machine);
	if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN)
		return err_fail(err, errlen, -ENOEXEC, "ELF type %u is not an executable", eh.e_type);
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 64)
		return err_fail(err, errlen, -ENOEXEC, "bad ELF program header table (%u entries of %u bytes)",
			    eh.e_phnum, eh.e_phentsize);
	if (add_overflows(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr), &phend) ||
	    phend > len)
		return err_fail(err, errlen, -ENOEXEC, "ELF program headers lie outside the file");

	info->pie = eh.e_type == ET_DYN;
	info->bias = info->pie ? pie_base : 0;
	info->phnum = eh.e_phnum;
	info->phentsize = eh.e_phentsize;
	info->lo = UINT64_MAX;
	info->max_align = 4096;

	uint64_t phdr_vaddr = 0;
	bool have_phdr = false;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		uint64_t fend, vend;

		memcpy(&ph, image + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_INTERP)
			return err_fail(err, errlen, -ENOEXEC,
				    "dynamically linked ELF (has an interpreter): build the guest "
				    "with -static");
		if (ph.p_type == PT_PHDR) {
			phdr_vaddr = ph.p_vaddr;
			have_phdr = true;
		}
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		if (info->nr_segs >= ELF_MAX_SEGMENTS)
			return err_fail(err, errlen, -ENOEXEC, "too many ELF load segments");
		if (ph.p_filesz > ph.p_memsz)
			return err_fail(err, errlen, -ENOEXEC, "ELF segment %u: file size exceeds memory size", i);
		if (add_overflows(ph.p_offset, ph.p_filesz, &fend) || fend > len)
			return err_fail(err, errlen, -ENOEXEC, "ELF segment %u lies outside the file", i);
		if (ph.p_align > 1 && (ph.p_align & (ph.p_align - 1)))
			return err_fail(err, errlen, -ENOEXEC, "ELF segment %u: alignment is not a power of 2", i);
		uint64_t va;
		if (add_overflows(ph.p_vaddr, info->bias, &va) || add_overflows(va, ph.p_memsz, &vend))
			return err_fail(err, errlen, -ENOEXEC, "ELF segment %u: address overflows", i);
		if (!have_phdr && eh.e_phoff >= ph.p_offset && phend <= fend) {
			phdr_vaddr = ph.p_vaddr + (eh.e_phoff - ph.p_offset);
			have_phdr = true;
		}
		info->segs[info->nr_segs++] = (struct elf_segment){
			.vaddr = va, .memsz = ph.p_memsz, .filesz = ph.p_filesz,
			.offset = ph.p_offset, .flags = ph.p_flags,
		};
		info->lo = MIN(info->lo, align_down(va, 4096));
		info->hi = MAX(info->hi, vend);
		if (ph.p_align > info->max_align)
			info->max_align = ph.p_align;
	}
	if (info->nr_segs == 0)
		return err_fail(err, errlen, -ENOEXEC, "ELF file has nothing to load");
	if (!have_phdr)
		return err_fail(err, errlen, -ENOEXEC, "ELF program headers are not in a loaded segment");
	info->phdr = phdr_vaddr + info->bias;
	if (add_overflows(eh.e_entry, info->bias, &info->entry) || info->entry < info->lo ||
	    info->entry >= info->hi)
		return err_fail(err, errlen, -ENOEXEC, "ELF entry point 0x%llx is outside the image",
			    (unsigned long long)eh.e_entry);
	return 0;
}

int elf_load(struct gmem *m, const uint8_t *image, size_t len, const struct elf_info *info)
{
	for (unsigned i = 0; i < info->nr_segs; i++) {
		const struct elf_segment *s = &info->segs[i];
		uint8_t *dst = gmem_ptr(m, s->vaddr, s->memsz);

		if (!dst || s->offset + s->filesz > len)
			return -EFAULT;
		memcpy(dst, image + s->offset, s->filesz);
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	return 0;
}
