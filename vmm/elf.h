/* vmm/elf.h - ELF64 x86-64 executables: validation and loading into guest
 * memory. Every header field is checked against the file size before use. */
#ifndef FORKVM_VMM_ELF_H
#define FORKVM_VMM_ELF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/gmem.h"

#define ELF_MAX_SEGMENTS 16

struct elf_segment {
	uint64_t vaddr;   /* after the load bias */
	uint64_t memsz;
	uint64_t filesz;
	uint64_t offset;
	uint32_t flags;   /* PF_R/PF_W/PF_X */
};

struct elf_info {
	bool pie;          /* ET_DYN (static-pie) */
	uint64_t bias;     /* load bias (0 for ET_EXEC) */
	uint64_t entry;    /* after bias */
	uint64_t phdr;     /* guest address of the program headers (AT_PHDR) */
	uint16_t phnum, phentsize;
	uint64_t lo, hi;   /* lowest/highest (exclusive) byte of the image */
	uint64_t max_align;
	unsigned nr_segs;
	struct elf_segment segs[ELF_MAX_SEGMENTS];
};

/* Checks image: ELF64, little-endian, x86-64, ET_EXEC or static ET_DYN (no
 * PT_INTERP), sane PT_LOAD segments within the file. pie_base is the bias
 * used for ET_DYN. Returns 0, or -ENOEXEC with err set. */
int elf_parse(const uint8_t *image, size_t len, uint64_t pie_base, struct elf_info *info,
	      char *err, size_t errlen) __attribute__((warn_unused_result));

/* Copies the segments into guest memory at their addresses (zeroing bss).
 * Returns 0 or -EFAULT when a segment is outside RAM. */
int elf_load(struct gmem *m, const uint8_t *image, size_t len, const struct elf_info *info)
	__attribute__((warn_unused_result));

#endif
