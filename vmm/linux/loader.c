/* vmm/linux/loader.c - the Linux payload loader: a bzImage or vmlinux, its command
 * line and initramfs, booted through the 64-bit boot protocol on a
 * platform that runs full machines (KVM). See linux.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "common/log.h"
#include "guest/abi/forkvm_linux.h"
#include "vmm/idpage.h"
#include "vmm/linux/acpi.h"
#include "vmm/linux/linux.h"
#include "vmm/snapshot.h"
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

/* The virtio devices: the disks of the configuration (vda, vdb...), the
 * console, the rng, and the vsock device when configured; device i at VIRTIO_MMIO_BASE + i * 4 KiB on GSI
 * VIRTIO_GSI_BASE + i. */
static int lx_virtio(struct vm *vm, char *err, size_t errlen)
{
	struct machine *mc = vm->mach;
	int rc;

	for (unsigned i = 0; i < vm->cfg.nr_disks; i++) {
		char name[8], copy[4200];
		const char *path = vm->cfg.disks[i].path;
		bool cow = false;
		snprintf(name, sizeof(name), "vd%c", 'a' + i);
		const struct snapshot *snap = vm->restoring;
		unsigned n = mc->nr_virtio;
		/* restored from the store: its image of the disk, read-only, with
		 * the guest's writes private to this VM */
		if (snap && snap->from_store && snap->ss.nr_disks) {
			const struct store_disk *sd = NULL;
			for (unsigned k = 0; k < snap->ss.nr_disks; k++)
				if (!strcmp(snap->ss.disks[k].disk.device, name))
					sd = &snap->ss.disks[k];
			if (!sd)
				return err_fail(err, errlen, -ENOENT,
					    "the store snapshot holds no copy of disk %s (%s)", name, path);
			snprintf(copy, sizeof(copy), "store image of %s (%s)", name, path);
			if ((rc = virtio_blk_create_fd(vm, &mc->virtio[n], name, copy, sd->fd,
						       vm->cfg.disks[i].readonly,
						       VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_SIZE,
						       VIRTIO_GSI_BASE + n, err, errlen)) < 0)
				return rc;
			mc->nr_virtio++;
			continue;
		}
		/* restored from a directory that holds the disk: its copy, likewise */
		if (snap && snap->has_disks) {
			snprintf(copy, sizeof(copy), "%s/disk-%s", snap->dir, name);
			if (access(copy, F_OK) < 0)
				return err_fail(err, errlen, -ENOENT,
					    "the snapshot %s holds no copy of disk %s (%s)", snap->dir,
					    name, path);
			path = copy;
			cow = true;
		}
		if ((rc = virtio_blk_create(vm, &mc->virtio[n], name, path, vm->cfg.disks[i].readonly,
					    cow, VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_SIZE,
					    VIRTIO_GSI_BASE + n, err, errlen)) < 0)
			return rc;
		mc->nr_virtio++;
	}
	unsigned n = mc->nr_virtio;
	if ((rc = virtio_console_create(vm, &mc->virtio[n], VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_SIZE,
					VIRTIO_GSI_BASE + n)) < 0)
		return err_fail(err, errlen, rc, "cannot register virtio-console: %s", strerror(-rc));
	n = ++mc->nr_virtio;
	if ((rc = virtio_rng_create(vm, &mc->virtio[n], VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_SIZE,
				    VIRTIO_GSI_BASE + n)) < 0)
		return err_fail(err, errlen, rc, "cannot register virtio-rng: %s", strerror(-rc));
	n = ++mc->nr_virtio;
	if (vm->cfg.vsock_cid) {
		if ((rc = virtio_vsock_create(vm, &mc->virtio[n], vm->cfg.vsock_cid,
					      vm->cfg.vsock_socket, vm->restoring != NULL,
					      VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_SIZE,
					      VIRTIO_GSI_BASE + n, err, errlen)) < 0)
			return rc;
		mc->vsock = &mc->virtio[n];
		mc->nr_virtio++;
	}
	return 0;
}

/* True when the kernel's console (its last console= on the command line,
 * the one /dev/console is) is hvc0 rather than the serial port. */
static bool lx_console_is_hvc(const char *cmdline)
{
	bool hvc = false;
	for (const char *p = cmdline; p && (p = strstr(p, "console=")); p += 8)
		if (p == cmdline || p[-1] == ' ' || p[-1] == '\t')
			hvc = strncmp(p + 8, "hvc", 3) == 0;
	return hvc;
}

/* The machine's devices, in this order (their state units follow it). */
static int lx_devices(struct vm *vm, char *err, size_t errlen)
{
	int rc;

	if (vm->cfg.nr_disks + 3 > VIRTIO_MAX_DEVS)
		return err_fail(err, errlen, -EINVAL, "at most %u disks", VIRTIO_MAX_DEVS - 3);
	vm->mach = calloc(1, sizeof(*vm->mach));
	if (!vm->mach)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	if ((rc = uart_register(vm, &vm->mach->com1, LX_COM1_PORT, LX_COM1_IRQ)) < 0 ||
	    (rc = i8042_register(vm, &vm->mach->kbd)) < 0)
		return err_fail(err, errlen, rc, "cannot register the legacy devices: %s",
			    strerror(-rc));
	if ((rc = lx_virtio(vm, err, errlen)) < 0)
		return rc;
	/* Console input goes where the kernel's console is. */
	if (lx_console_is_hvc(vm->cfg.cmdline))
		virtio_console_take_input(&vm->mach->virtio[vm->cfg.nr_disks]);
	else
		uart_take_input(&vm->mach->com1);
	return 0;
}

/* The ACPI tables describing the machine's devices, and the zero page's
 * pointer to them. */
static int lx_tables(struct vm *vm, char *err, size_t errlen)
{
	const struct machine *mc = vm->mach;
	struct lx_acpi a = { .nr_vcpus = vm->nr_vcpus, .nr_mmio = mc->nr_virtio,
			     .vmgenid = LX_VMGENID, .ged_gsi = LX_GED_GSI };
	uint64_t rsdp;
	int rc;

	for (unsigned i = 0; i < mc->nr_virtio; i++)
		a.mmio[i] = (struct lx_acpi_mmio){ mc->virtio[i].base, (uint32_t)VIRTIO_MMIO_SIZE,
						   mc->virtio[i].gsi };
	if ((rc = lx_acpi_write(&vm->mem, &a, &rsdp, err, errlen)) < 0)
		return rc;
	if ((rc = gmem_write(&vm->mem, LX_ZERO_PAGE + LX_ACPI_RSDP_ADDR, &rsdp, sizeof(rsdp))) < 0)
		return err_fail(err, errlen, rc, "cannot write the zero page: %s", strerror(-rc));
	return 0;
}

/* A new VM generation ID: 16 random bytes at LX_VMGENID, then the GED's
 * interrupt, whose _EVT notifies the guest's vmgenid driver (it reseeds
 * the kernel's RNG: add_vmfork_randomness). */
static int lx_vmgenid_renew(struct vm *vm, char *err, size_t errlen)
{
	uint8_t id[16];
	int rc;

	if (getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id))
		return err_fail(err, errlen, -EIO, "getrandom: %s", strerror(errno));
	if ((rc = gmem_write(&vm->mem, LX_VMGENID, id, sizeof(id))) < 0)
		return err_fail(err, errlen, rc, "cannot write the VM generation ID: %s", strerror(-rc));
	vm_irq_pulse(vm, LX_GED_GSI);
	return 0;
}

/* The identity page (guest/abi/forkvm_linux.h): a page of the
 * e820-reserved area below 1 MiB, clear of the ACPI tables, the VM
 * generation ID's page and the reset vector's. */
_Static_assert(FORKVM_IDENTITY_LINUX_GPA % GMEM_PAGE_SIZE == 0 &&
		       FORKVM_IDENTITY_LINUX_GPA >= LX_MPTABLE &&
		       FORKVM_IDENTITY_LINUX_GPA + GMEM_PAGE_SIZE <= LX_EBDA_END,
	       "the Linux identity page must be e820-reserved");
_Static_assert(FORKVM_IDENTITY_LINUX_GPA >= LX_VMGENID + GMEM_PAGE_SIZE &&
		       FORKVM_IDENTITY_LINUX_GPA + GMEM_PAGE_SIZE <= (LX_RESET_VECTOR & ~0xfffULL),
	       "the Linux identity page overlaps the ACPI tables, VM generation ID or reset vector");

/* Writes the identity page at boot (generation 0) or restore (the next
 * generation, fresh random): vmm/idpage.c. */
static int lx_identity_write(struct vm *vm, bool restored, char *err, size_t errlen)
{
	int rc = idpage_write(&vm->mem, FORKVM_IDENTITY_LINUX_GPA, restored);

	if (rc < 0)
		return err_fail(err, errlen, rc, "cannot write the identity page: %s",
				strerror(-rc));
	return 0;
}

/* The loader's set_identity: a clone's id and fresh random (vm paused). */
static int lx_set_identity(struct vm *vm, const char *clone_id)
{
	return idpage_set_clone(&vm->mem, FORKVM_IDENTITY_LINUX_GPA, clone_id);
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
			   err, errlen)) < 0 ||
	    (rc = lx_devices(vm, err, errlen)) < 0 || (rc = lx_tables(vm, err, errlen)) < 0 ||
	    (rc = lx_vmgenid_renew(vm, err, errlen)) < 0 ||
	    (rc = lx_identity_write(vm, false, err, errlen)) < 0)
		return rc;
	struct machine_entry me = {.entry = li.entry, .boot_params = LX_ZERO_PAGE};
	if ((rc = vm->plat->machine_boot(vm, &me, err, errlen)) < 0)
		return rc;
	log_info("Linux kernel (%s, boot protocol %u.%02u, %zu KiB) entered at 0x%llx, initramfs "
		 "%llu KiB at 0x%llx, %u vCPU(s), %u disk(s)",
		 li.elf ? "vmlinux" : "bzImage", li.version >> 8, li.version & 0xff,
		 li.kernel_len >> 10, (unsigned long long)li.entry,
		 (unsigned long long)(initrd_len >> 10),
		 (unsigned long long)initrd, vm->nr_vcpus, vm->cfg.nr_disks);
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

/* After every unit: the guest gets a new generation ID (each restore is
 * a new VM as far as its randomness goes) and its identity page the next
 * generation. */
static int lx_restore_finish(struct vm *vm, char *err, size_t errlen)
{
	int rc = lx_identity_write(vm, true, err, errlen);

	return rc < 0 ? rc : lx_vmgenid_renew(vm, err, errlen);
}

static size_t lx_units(struct vm *vm, struct state_unit *u, size_t max)
{
	const struct machine *mc = vm->mach;
	size_t n = 0;

	if (!mc || max < 2 + mc->nr_virtio)
		return 0;
	u[n++] = (struct state_unit){ "serial", 1, uart_save, uart_restore, &vm->mach->com1 };
	u[n++] = (struct state_unit){ "i8042", 1, i8042_save, i8042_restore, &vm->mach->kbd };
	for (unsigned i = 0; i < mc->nr_virtio; i++) {
		u[n] = (struct state_unit){ "", 1, virtio_save, virtio_restore, &vm->mach->virtio[i] };
		snprintf(u[n].name, sizeof(u[n].name), "%s", mc->virtio[i].unit);
		n++;
	}
	return n;
}

/* A snapshot to a directory holds each disk as the guest sees it. */
static int lx_save_files(struct vm *vm, int dfd, json_t *files, char *err, size_t errlen)
{
	const struct machine *mc = vm->mach;
	int rc;

	for (unsigned i = 0; mc && i < vm->cfg.nr_disks && i < mc->nr_virtio; i++)
		if ((rc = virtio_blk_capture(&vm->mach->virtio[i], dfd, files, err, errlen)) < 0)
			return rc;
	return 0;
}

static int lx_attach(struct vm *vm, struct loop *loop)
{
	return vm->mach->vsock ? virtio_vsock_attach(vm->mach->vsock, loop) : 0;
}

static void lx_service(struct vm *vm)
{
	if (vm->mach && vm->mach->vsock)
		virtio_vsock_service(vm->mach->vsock);
}

static int lx_publish(struct vm *vm)
{
	return vm->mach->vsock ? virtio_vsock_publish(vm->mach->vsock) : 0;
}

/* What a snapshot into the store reads of a disk (store_disk_in). */
static int lx_disk_read(void *arg, uint64_t off, void *buf, size_t len)
{
	return virtio_blk_read(arg, off, buf, len);
}

static int lx_disk_populated(void *arg, int (*cb)(void *cbarg, uint64_t off, uint64_t len),
			     void *cbarg)
{
	return virtio_blk_populated(arg, cb, cbarg);
}

static bool lx_disk_changed(void *arg, uint64_t chunk, uint32_t chunk_size)
{
	return virtio_blk_changed(arg, chunk * chunk_size, chunk_size);
}

/* A snapshot into the store reads each disk as the guest sees it; where
 * the VM was restored from the store snapshot it names as the parent,
 * only the blocks written since (virtio_blk_changed). */
static unsigned lx_store_disks(struct vm *vm, struct store_disk_in *out, struct store_mem *data,
			       unsigned max)
{
	const struct machine *mc = vm->mach;
	unsigned n = 0;

	for (unsigned i = 0; mc && i < vm->cfg.nr_disks && i < mc->nr_virtio && n < max; i++) {
		struct virtio_dev *d = &vm->mach->virtio[i];
		const char *name;
		uint64_t size;
		bool ro;
		virtio_blk_info(d, &name, &size, &ro);
		data[n] = (struct store_mem){ .size = size, .populated = lx_disk_populated,
					      .read = lx_disk_read, .arg = d };
		out[n] = (struct store_disk_in){ .data = &data[n], .changed = lx_disk_changed,
						 .changed_arg = d };
		snprintf(out[n].disk.device, sizeof(out[n].disk.device), "%s", name);
		out[n].disk.size = size;
		out[n].disk.readonly = ro;
		n++;
	}
	return n;
}

static void lx_destroy(struct vm *vm)
{
	uart_destroy(&vm->mach->com1);
	for (unsigned i = 0; i < vm->mach->nr_virtio; i++)
		virtio_dev_destroy(&vm->mach->virtio[i]);
}

const struct vm_loader linux_loader = {
    .name = "linux",
    .machine = true,
    .probe = lx_probe,
    .load = lx_load,
    .restore_prepare = lx_restore_prepare,
    .restore_finish = lx_restore_finish,
    .set_identity = lx_set_identity,
    .units = lx_units,
    .save_files = lx_save_files,
    .attach = lx_attach,
    .service = lx_service,
    .publish = lx_publish,
    .store_disks = lx_store_disks,
    .destroy = lx_destroy,
};
