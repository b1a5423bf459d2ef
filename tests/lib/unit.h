/* tests/lib/unit.h - helpers for the unit tests that need no /dev/kvm:
 * where the guest payloads are, temporary files, a synthetic ELF64 image
 * that tests mutate field by field, and a VM built with vm_create_nokvm().
 * Every symbol carries the ut_ prefix (other helpers share tests/lib/). */
#ifndef FORKVM_TESTS_UNIT_H
#define FORKVM_TESTS_UNIT_H

#include <elf.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;

/* The guest build directory: $FORKVM_GUEST, else "build/guest". */
const char *ut_guest_dir(void);

/* Path of a guest binary (malloc'd): "agent" or a payload name ("hello"). */
char *ut_payload(const char *name);

/* True if path names a regular file. */
bool ut_file_exists(const char *path);

/* Reads a whole file into a malloc'd, NUL-terminated buffer; NULL on error. */
uint8_t *ut_read_file(const char *path, size_t *len);

/* A fresh directory under $TMPDIR (malloc'd path); ut_rmtree removes it. */
char *ut_tmpdir(void);
void ut_rmtree(const char *dir);

/* Writes len bytes to dir/name and returns the malloc'd path (NULL on error). */
char *ut_write_file(const char *dir, const char *name, const void *buf, size_t len);

/* ------------------------------------------------------------ synthetic ELF
 * A valid static ET_EXEC image of UT_ELF_SIZE bytes:
 *   phdr[0] PT_LOAD  R+X  offset 0       vaddr UT_ELF_BASE          filesz = memsz = 0x2000
 *           (holds the ELF header, the program headers and code at 0x1000)
 *   phdr[1] PT_LOAD  R+W  offset 0x2000  vaddr UT_ELF_BASE + 0x2000  filesz 0x100, memsz 0x3000
 *   phdr[2] PT_GNU_STACK (a spare slot tests may turn into PT_INTERP, PT_PHDR...)
 * entry UT_ELF_BASE + 0x1000. File bytes [0x2000, 0x2100) hold i & 0xff ^ 0x5a,
 * [0x2100, UT_ELF_SIZE) hold 0xee (must not be loaded: beyond filesz). */
#define UT_ELF_BASE 0x400000ULL
#define UT_ELF_SIZE 0x3000u
#define UT_ELF_NPHDR 3u

/* Returns a malloc'd image of UT_ELF_SIZE bytes (see above). */
uint8_t *ut_elf_image(void);
Elf64_Ehdr *ut_elf_ehdr(uint8_t *img);
Elf64_Phdr *ut_elf_phdr(uint8_t *img, unsigned i);
/* Moves the image so that segment 0 starts at base (both PT_LOAD vaddrs
 * and the entry move by the same amount). */
void ut_elf_rebase(uint8_t *img, uint64_t base);

/* ------------------------------------------------------------ VM without KVM */

struct ut_vm_opts {
	const char *payload;     /* a payload name ("hello") or a path containing '/' */
	const char *cmdline;     /* NULL: none */
	uint64_t memory;         /* 0: 64 MiB */
	unsigned vcpus;          /* 0: 1 */
	const char *serial_file; /* NULL: serial off (or on serial_socket) */
	const char *serial_socket; /* the console on a socket (its input ring) */
	const char *hostname;    /* NULL: default */
	const char *agent_socket; /* NULL: no agent channel */
};

/* Builds a VM with vm_create_nokvm(); returns its rc, the message in err. */
int ut_vm_create(const struct ut_vm_opts *o, char *err, size_t errlen, struct vm **out);

#endif
