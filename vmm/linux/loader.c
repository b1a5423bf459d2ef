/* vmm/linux/loader.c - the Linux payload loader: a bzImage or vmlinux, its command
 * line and initramfs, booted through the 64-bit boot protocol on a
 * platform that runs full machines (KVM). See linux.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "common/log.h"
#include "vmm/linux/linux.h"
#include "vmm/loader.h"
#include "vmm/state.h"
#include "vmm/vm.h"

/* Reads the initramfs at path into guest memory at its place. */
static int load_initramfs(struct vm *vm, const struct lx_image *li, const char *path, uint64_t *gpa,
			  uint64_t *len, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return err_fail(err, errlen, -errno, "initramfs %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = err_fail(err, errlen, -EINVAL, "initramfs %s: not a regular file", path);
		goto out;
	}
	if (st.st_size == 0) {
		rc = err_fail(err, errlen, -EINVAL, "initramfs %s is empty", path);
		goto out;
	}
	*len = (uint64_t)st.st_size;
	if (lx_initrd_place(&vm->mem, li, *len, gpa) < 0) {
		rc = err_fail(err, errlen, -E2BIG,
			  "initramfs %s (%llu MiB) does not fit in guest memory beside the kernel",
			  path, (unsigned long long)(*len >> 20));
		goto out;
	}
	uint8_t *dst = gmem_ptr(&vm->mem, *gpa, *len);
	for (uint64_t done = 0; done < *len;) {
		ssize_t n = read(fd, dst + done, *len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = err_fail(err, errlen, n < 0 ? -errno : -EIO, "initramfs %s: %s", path,
				  n < 0 ? strerror(errno) : "shorter than its size");
			goto out;
		}
		done += (uint64_t)n;
	}
out:
	close(fd);
	return rc;
}

/* The machine's devices, in this order (their state units follow it). */
static int lx_devices(struct vm *vm, char *err, size_t errlen)
{
	int rc;

	vm->mach = calloc(1, sizeof(*vm->mach));
	if (!vm->mach)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	if ((rc = uart_register(vm, &vm->mach->com1, LX_COM1_PORT, LX_COM1_IRQ)) < 0 ||
	    (rc = i8042_register(vm, &vm->mach->kbd)) < 0)
		return err_fail(err, errlen, rc, "cannot register the legacy devices: %s",
			    strerror(-rc));
	return 0;
}

static int lx_load(struct vm *vm, const uint8_t *image, size_t len, char *err, size_t errlen)
{
	struct lx_image li;
	uint64_t initrd = 0, initrd_len = 0;
	int rc;

	if ((rc = lx_parse(image, len, &li, err, errlen)) < 0)
		return rc;
	if (!vm->plat->machine_boot)
		return err_fail(err, errlen, -ENOTSUP,
			    "a Linux kernel needs the KVM platform (the %s platform runs function "
			    "guests only: docs/linux-guests.md)",
			    vm->plat->name);
	if (vm->cfg.initramfs && (rc = load_initramfs(vm, &li, vm->cfg.initramfs, &initrd,
						      &initrd_len, err, errlen)) < 0)
		return rc;
	if ((rc = lx_setup(&vm->mem, image, &li, vm->cfg.cmdline, initrd, initrd_len, vm->nr_vcpus,
			   err, errlen)) < 0)
		return rc;
	if ((rc = lx_devices(vm, err, errlen)) < 0)
		return rc;
	struct machine_entry me = {.entry = li.entry, .boot_params = LX_ZERO_PAGE};
	if ((rc = vm->plat->machine_boot(vm, &me, err, errlen)) < 0)
		return rc;
	log_info("Linux kernel (%s, boot protocol %u.%02u, %zu KiB) entered at 0x%llx, initramfs "
		 "%llu KiB at 0x%llx, %u vCPU(s)",
		 li.elf ? "vmlinux" : "bzImage", li.version >> 8, li.version & 0xff,
		 li.kernel_len >> 10, (unsigned long long)li.entry,
		 (unsigned long long)(initrd_len >> 10),
		 (unsigned long long)initrd, vm->nr_vcpus);
	return 0;
}

/* Restore: the devices, empty; the platform's units and theirs fill them.
 * Only KVM runs machines. */
static int lx_restore_prepare(struct vm *vm, char *err, size_t errlen)
{
	if (!vm->plat->machine_boot)
		return err_fail(err, errlen, -ENOTSUP,
			    "a Linux guest's snapshot needs the KVM platform (the %s platform runs "
			    "function guests only)",
			    vm->plat->name);
	return lx_devices(vm, err, errlen);
}

static size_t lx_units(struct vm *vm, struct state_unit *u, size_t max)
{
	if (!vm->mach || max < 2)
		return 0;
	u[0] = (struct state_unit){ "serial", 1, uart_save, uart_restore, &vm->mach->com1 };
	u[1] = (struct state_unit){ "i8042", 1, i8042_save, i8042_restore, &vm->mach->kbd };
	return 2;
}

const struct vm_loader linux_loader = {
    .name = "linux",
    .machine = true,
    .probe = lx_probe,
    .load = lx_load,
    .restore_prepare = lx_restore_prepare,
    .units = lx_units,
};
