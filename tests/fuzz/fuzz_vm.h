/* tests/fuzz/fuzz_vm.h - for the fuzz targets that need a VM without KVM
 * (fuzz_state, fuzz_syscalls): vm_create_nokvm() with a payload made here,
 * a minimal static ELF (one PT_LOAD at 0x400000 holding its own headers)
 * kept in a memfd, so the targets need no guest build and write no files.
 * Include from one fuzz_*.c only (static functions). */
#ifndef FORKVM_TESTS_FUZZ_VM_H
#define FORKVM_TESTS_FUZZ_VM_H

#include <elf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmm/vm.h"
#include "vmm/vmm.h"

#define FUZZ_ELF_BASE 0x400000ULL
#define FUZZ_ELF_SIZE 0x1000u

/* "/proc/self/fd/N" of a memfd holding the payload, made once. */
static const char *fuzz_payload_path(void)
{
	static char path[64];
	uint8_t img[FUZZ_ELF_SIZE];
	Elf64_Ehdr eh = {
		.e_ident = { ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS64, ELFDATA2LSB, EV_CURRENT },
		.e_type = ET_EXEC,
		.e_machine = EM_X86_64,
		.e_version = EV_CURRENT,
		.e_entry = FUZZ_ELF_BASE + 0x100,
		.e_phoff = sizeof(Elf64_Ehdr),
		.e_ehsize = sizeof(Elf64_Ehdr),
		.e_phentsize = sizeof(Elf64_Phdr),
		.e_phnum = 1,
	};
	Elf64_Phdr ph = {
		.p_type = PT_LOAD,
		.p_flags = PF_R | PF_W | PF_X,
		.p_vaddr = FUZZ_ELF_BASE,
		.p_paddr = FUZZ_ELF_BASE,
		.p_filesz = FUZZ_ELF_SIZE,
		.p_memsz = 2 * FUZZ_ELF_SIZE,
		.p_align = 0x1000,
	};

	if (path[0])
		return path;
	memset(img, 0xf4, sizeof(img)); /* hlt: never run */
	memcpy(img, &eh, sizeof(eh));
	memcpy(img + sizeof(eh), &ph, sizeof(ph));
	int fd = memfd_create("fuzz-payload", 0);
	if (fd < 0 || write(fd, img, sizeof(img)) != (ssize_t)sizeof(img))
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return path;
}

/* A VM built by vm_create_nokvm(): vcpus, memory bytes, the agent channel
 * on agent_socket (NULL: none), serial off. Returns its rc. */
static int fuzz_vm_create(unsigned vcpus, uint64_t memory, const char *agent_socket,
			  const char *hostname, struct vm **out)
{
	struct vm_config cfg;
	char err[512];
	int rc;

	vm_config_init(&cfg);
	cfg.boot_vcpus = vcpus;
	cfg.memory_size = memory;
	cfg.serial_mode = VM_SERIAL_OFF;
	cfg.kernel = strdup(fuzz_payload_path());
	cfg.agent_socket = agent_socket ? strdup(agent_socket) : NULL;
	cfg.hostname = hostname ? strdup(hostname) : NULL;
	rc = vm_create_nokvm(&cfg, err, sizeof(err), out);
	vm_config_free(&cfg);
	return rc;
}

#endif
