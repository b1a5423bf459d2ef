/* tests/lib/unit.c - see unit.h. */
#include "unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "vmm/vm.h"
#include "vmm/vmm.h"

const char *ut_guest_dir(void)
{
	const char *d = getenv("FORKVM_GUEST");
	return d && *d ? d : "build/guest";
}

char *ut_payload(const char *name)
{
	char *p;
	int rc;

	if (!strcmp(name, "agent"))
		rc = asprintf(&p, "%s/agent", ut_guest_dir());
	else
		rc = asprintf(&p, "%s/payloads/%s", ut_guest_dir(), name);
	return rc < 0 ? NULL : p;
}

bool ut_file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

uint8_t *ut_read_file(const char *path, size_t *len)
{
	char *buf;
	size_t n;

	if (file_read_all(path, 512u << 20, &buf, &n) < 0)
		return NULL;
	if (len)
		*len = n;
	return (uint8_t *)buf;
}

char *ut_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *p;

	if (asprintf(&p, "%s/forkvm-unit-XXXXXX", base && *base ? base : "/tmp") < 0)
		return NULL;
	if (!mkdtemp(p)) {
		free(p);
		return NULL;
	}
	return p;
}

void ut_rmtree(const char *dir)
{
	DIR *d;
	struct dirent *e;

	if (!dir || !(d = opendir(dir)))
		return;
	while ((e = readdir(d))) {
		char *p;
		struct stat st;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (asprintf(&p, "%s/%s", dir, e->d_name) < 0)
			continue;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			ut_rmtree(p);
		else
			unlink(p);
		free(p);
	}
	closedir(d);
	rmdir(dir);
}

char *ut_write_file(const char *dir, const char *name, const void *buf, size_t len)
{
	char *p;
	int fd;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (fd < 0 || write_full(fd, buf, len) < 0) {
		if (fd >= 0)
			close(fd);
		free(p);
		return NULL;
	}
	close(fd);
	return p;
}

/* ------------------------------------------------------------ synthetic ELF */

Elf64_Ehdr *ut_elf_ehdr(uint8_t *img)
{
	return (Elf64_Ehdr *)(void *)img;
}

Elf64_Phdr *ut_elf_phdr(uint8_t *img, unsigned i)
{
	return (Elf64_Phdr *)(void *)(img + sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr));
}

uint8_t *ut_elf_image(void)
{
	uint8_t *img = calloc(1, UT_ELF_SIZE);
	Elf64_Ehdr *eh;
	Elf64_Phdr *ph;

	if (!img)
		return NULL;
	eh = ut_elf_ehdr(img);
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = UT_ELF_BASE + 0x1000;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = UT_ELF_NPHDR;

	ph = ut_elf_phdr(img, 0);
	*ph = (Elf64_Phdr){ .p_type = PT_LOAD, .p_flags = PF_R | PF_X, .p_offset = 0,
			    .p_vaddr = UT_ELF_BASE, .p_paddr = UT_ELF_BASE, .p_filesz = 0x2000,
			    .p_memsz = 0x2000, .p_align = 0x1000 };
	ph = ut_elf_phdr(img, 1);
	*ph = (Elf64_Phdr){ .p_type = PT_LOAD, .p_flags = PF_R | PF_W, .p_offset = 0x2000,
			    .p_vaddr = UT_ELF_BASE + 0x2000, .p_paddr = UT_ELF_BASE + 0x2000,
			    .p_filesz = 0x100, .p_memsz = 0x3000, .p_align = 0x1000 };
	ph = ut_elf_phdr(img, 2);
	*ph = (Elf64_Phdr){ .p_type = PT_GNU_STACK, .p_flags = PF_R | PF_W, .p_align = 16 };

	/* code: xor %edi,%edi; mov $231,%eax; syscall (exit_group(0)) */
	static const uint8_t code[] = { 0x31, 0xff, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05 };
	memcpy(img + 0x1000, code, sizeof(code));
	for (unsigned i = 0; i < 0x100; i++)
		img[0x2000 + i] = (uint8_t)((i & 0xff) ^ 0x5a);
	memset(img + 0x2100, 0xee, UT_ELF_SIZE - 0x2100);
	return img;
}

void ut_elf_rebase(uint8_t *img, uint64_t base)
{
	Elf64_Ehdr *eh = ut_elf_ehdr(img);
	uint64_t cur = ut_elf_phdr(img, 0)->p_vaddr;

	eh->e_entry = eh->e_entry - cur + base;
	for (unsigned i = 0; i < 2; i++) {
		Elf64_Phdr *ph = ut_elf_phdr(img, i);
		ph->p_vaddr = ph->p_vaddr - cur + base;
		ph->p_paddr = ph->p_vaddr;
	}
}

/* ------------------------------------------------------------ VM without KVM */

int ut_vm_create(const struct ut_vm_opts *o, char *err, size_t errlen, struct vm **out)
{
	struct vm_config cfg;
	int rc;

	vm_config_init(&cfg);
	cfg.kernel = strchr(o->payload, '/') ? strdup(o->payload) : ut_payload(o->payload);
	cfg.cmdline = o->cmdline ? strdup(o->cmdline) : NULL;
	cfg.memory_size = o->memory ? o->memory : 64 * MiB;
	cfg.boot_vcpus = o->vcpus ? o->vcpus : 1;
	if (o->serial_file) {
		cfg.serial_mode = VM_SERIAL_FILE;
		cfg.serial_path = strdup(o->serial_file);
	} else if (o->serial_socket) {
		cfg.serial_mode = VM_SERIAL_SOCKET;
		cfg.serial_path = strdup(o->serial_socket);
	} else {
		cfg.serial_mode = VM_SERIAL_OFF;
	}
	cfg.hostname = o->hostname ? strdup(o->hostname) : NULL;
	cfg.agent_socket = o->agent_socket ? strdup(o->agent_socket) : NULL;
	if (!cfg.kernel) {
		vm_config_free(&cfg);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = vm_create_nokvm(&cfg, err, errlen, out);
	vm_config_free(&cfg);
	return rc;
}
