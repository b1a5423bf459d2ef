/* tests/integration/test_linux.c - Linux guests (issue 14): Debian's stock
 * kernel with a busybox initramfs (scripts/linux-guest.sh, build/linux/)
 * boots to userspace on 1 and 4 vCPUs (and, uncompressed as a vmlinux
 * ELF, on 2) with its console on the 16550 serial port, pauses and
 * resumes, is snapshotted and restored (twice, a chain) with its counting
 * init going on, and ends with forkvm's exit status 0 when it
 * reboots. Bad kernels and initramfs images get a clear error on either
 * platform; the process platform refuses a kernel and says why. The
 * agent runs as a process of the guest (forkvm.test=agent) and finds the
 * identity page the VMM wrote at boot.
 *
 * Linux guests need hardware virtualization: on KVM natively, except on
 * PVM (which runs guest ring 0 about 1000 times slower), and in the KVM
 * lane with FORKVM_TEST_LINUX_LANE=1 (make test-linux-lane), where a boot
 * takes 20-40 s and the lane itself may freeze (docs/linux-guests.md). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <sys/types.h>

#include "tests/lib/harness.h"

#define BOOT_MS 240000

static struct h_vm vm;

static void teardown(void)
{
	h_vm_stop(&vm);
}

/* The kernel booted: the bzImage, or (vmlinux set) the same kernel
 * uncompressed, an ELF as the walkthrough's --kernel vmlinux. */
static bool vmlinux;

static char *kernel(void)
{
	return h_join(h_build_dir(), vmlinux ? "linux/vmlinux" : "linux/vmlinuz");
}

static char *initramfs(void)
{
	return h_join(h_build_dir(), "linux/initramfs.cpio.gz");
}

/* Skips unless this pass boots Linux guests: KVM (the process platform
 * runs function guests only). The test guest must have been built. */
static void need_linux(void)
{
	if (h_on_process())
		cr_skip_test("Linux guests run on KVM only; the process platform's refusal is "
			     "tested by process_platform_refuses_a_kernel");
	H_NEED_GUEST();
	char *k = kernel(), *i = initramfs();
	cr_assert(access(k, R_OK) == 0 && access(i, R_OK) == 0,
		  "the Linux test guest is missing (%s, %s): make linux-guest", k, i);
	free(k);
	free(i);
}

/* Boots kern with the test initramfs, cmdline, cpus and extra forkvm
 * options (NULL-terminated, may be NULL); returns after forkvm started
 * (its API socket exists). */
static void boot_with(const char *kern, const char *cmdline, const char *cpus,
		      const char *const *more)
{
	char *i = initramfs(), cpu_opt[32];
	const char *extra[24];
	unsigned n = 0;

	snprintf(cpu_opt, sizeof(cpu_opt), "boot=%s", cpus);
	/* -v: forkvm says why a VM ended (a reset by the i8042 or a triple fault) */
	const char *base[] = {"-v", "--initramfs", i, "--cmdline", cmdline, "--cpus", cpu_opt,
			      "--memory", "size=512M"};
	for (unsigned k = 0; k < sizeof(base) / sizeof(base[0]); k++)
		extra[n++] = base[k];
	for (unsigned k = 0; more && more[k] && n < 23; k++)
		extra[n++] = more[k];
	extra[n] = NULL;
	cr_assert_eq(h_vm_start(&vm, kern, extra), 0, "forkvm did not start: %s",
		     h_stderr(&vm.proc));
	free(i);
}

/* Boots the test guest with mode (forkvm.test=) and cpus, its console on
 * ttyS0. */
static void boot(const char *mode, const char *cpus)
{
	char *k = kernel(), cmdline[256];

	snprintf(cmdline, sizeof(cmdline), "console=ttyS0 panic=-1 forkvm.test=%s", mode);
	boot_with(k, cmdline, cpus, NULL);
	free(k);
}

/* Waits until the console holds text; false on timeout or exit. */
static bool console_wait(const char *text, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 100) {
		char *c = h_read_file(vm.console);
		bool found = c && strstr(c, text);
		free(c);
		if (found)
			return true;
		if (h_wait(&vm.proc, 0) >= 0)
			return false;
		h_sleep_ms(100);
	}
	return false;
}

/* The highest "count N" on the console, -1 if none. */
static long last_count(void)
{
	char *c = h_read_file(vm.console);
	long last = -1;
	for (char *p = c; p && (p = strstr(p, "forkvm-linux: count ")); p += 20)
		last = strtol(p + 20, NULL, 10);
	free(c);
	return last;
}

static void boots_and_reboots(const char *cpus, const char *expect)
{
	need_linux();
	boot("hello", cpus);
	int st = h_wait(&vm.proc, BOOT_MS);
	char *c = h_read_file(vm.console);
	cr_assert_eq(st, 0, "forkvm exited %d (stderr: %s); console:\n%s", st, h_stderr(&vm.proc),
		     c ? c : "");
	cr_assert(c && strstr(c, "Linux version"), "no kernel banner on ttyS0:\n%s", c ? c : "");
	if (!strstr(c, expect)) {
		/* forkvm says why it ended (a reset: the i8042 or a triple fault) */
		char *why = h_stderr(&vm.proc);
		cr_assert_fail("no \"%s\" on the console; forkvm's stderr:\n%s\nconsole:\n%s", expect,
			       why, c);
	}
	cr_assert(strstr(c, "forkvm-linux: done"), "init did not finish:\n%s", c);
	char *err = h_stderr(&vm.proc);
	cr_assert(strstr(err, "reset") == NULL || st == 0, "%s", err);
	free(err);
	free(c);
}

Test(linux, boots_to_userspace_on_one_vcpu_and_exits_on_reboot, .fini = teardown, .timeout = 300)
{
	boots_and_reboots("1", "forkvm-linux: userspace up, 1 cpus");
}

Test(linux, four_vcpus_come_up, .fini = teardown, .timeout = 300)
{
	boots_and_reboots("4", "forkvm-linux: userspace up, 4 cpus");
}

Test(linux, an_uncompressed_vmlinux_boots_to_userspace_on_two_vcpus, .fini = teardown,
     .timeout = 300)
{
	vmlinux = true;
	boots_and_reboots("2", "forkvm-linux: userspace up, 2 cpus");
}

Test(linux, pause_stops_the_guest_and_resume_continues, .fini = teardown, .timeout = 300)
{
	need_linux();
	boot("count", "1");
	cr_assert(console_wait("forkvm-linux: count 3", BOOT_MS),
		  "the guest never counted to 3: %s", h_stderr(&vm.proc));
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
	long paused = last_count();
	h_sleep_ms(2000);
	cr_assert_eq(last_count(), paused, "the guest counted while paused (%ld -> %ld)", paused,
		     last_count());
	char *info = NULL;
	cr_assert_eq(h_api(&vm, "GET", "/api/v1/vm.info", NULL, &info), 200);
	cr_assert(strstr(info, "\"Paused\""), "%s", info);
	free(info);
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
	char want[64];
	snprintf(want, sizeof(want), "forkvm-linux: count %ld", paused + 3);
	cr_assert(console_wait(want, 60000), "the guest did not count on after resume (last %ld)",
		  last_count());
}

/* Starts forkvm restoring the snapshot in snap_dir (paused), its console
 * in a file of its own; as h_vm_start, v's paths in a new directory. */
static void restore_start(struct h_vm *v, const char *snap_dir)
{
	char *bin = h_bin("forkvm"), *src = NULL, *serial = NULL;

	memset(v, 0, sizeof(*v));
	v->dir = h_tmpdir();
	v->api = h_join(v->dir, "api.sock");
	v->agent = h_join(v->dir, "agent.sock");
	v->console = h_join(v->dir, "console.log");
	cr_assert(asprintf(&src, "source_url=file://%s", snap_dir) > 0);
	cr_assert(asprintf(&serial, "file=%s", v->console) > 0);
	const char *argv[] = {bin, "--api-socket", v->api, "--restore", src, "--serial", serial, NULL};
	cr_assert_eq(h_spawn(&v->proc, v->dir, argv), 0);
	cr_assert(h_wait_path(v->api, 60000), "the restoring forkvm did not start: %s",
		  h_stderr(&v->proc));
	free(bin);
	free(src);
	free(serial);
}

/* Pauses v and snapshots it into dir/name (the walkthrough's
 * `forkctl pause`, `snapshot file:///DIR`). */
static char *pause_and_snapshot(struct h_vm *v, const char *dir, const char *name)
{
	char json[600], *body = NULL, *snap = h_join(dir, name);
	cr_assert_eq(h_api(v, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
	snprintf(json, sizeof(json), "{\"destination_url\":\"file://%s\"}", snap);
	/* writing 512 MiB in the lane takes a while */
	int st = h_http(v->api, "PUT", "/api/v1/vm.snapshot", json, 300000, &body);
	cr_assert_eq(st, 204, "vm.snapshot answered %d: %s", st, body);
	free(body);
	return snap;
}

/* The highest "count N" in the console file at path, -1 if none. */
static long last_count_in(const char *path)
{
	char *c = h_read_file(path);
	long last = -1;
	for (char *p = c; p && (p = strstr(p, "forkvm-linux: count ")); p += 20)
		last = strtol(p + 20, NULL, 10);
	free(c);
	return last;
}

/* The walkthrough with a Linux guest on 2 vCPUs: boot, pause, snapshot,
 * restore (paused) in a new forkvm, resume; the counting init goes on
 * from where it was, without a new boot; then again from the restored VM
 * (a chain of 3: boot -> snapshot 1 -> restore -> snapshot 2 -> restore). */
Test(linux, a_snapshot_restores_and_the_guest_counts_on, .fini = teardown, .timeout = 600)
{
	need_linux();
	boot("count", "2");
	cr_assert(console_wait("forkvm-linux: count 3", BOOT_MS), "the guest never counted: %s",
		  h_stderr(&vm.proc));
	char *dir = h_tmpdir();
	for (int gen = 1; gen <= 2; gen++) {
		char name[16];
		snprintf(name, sizeof(name), "snap%d", gen);
		char *snap = pause_and_snapshot(&vm, dir, name);
		long at = last_count();
		cr_assert_geq(at, 3);
		h_vm_stop(&vm);
		restore_start(&vm, snap);
		char *info = NULL;
		cr_assert_eq(h_api(&vm, "GET", "/api/v1/vm.info", NULL, &info), 200);
		cr_assert(strstr(info, "\"Paused\""), "restored VM: %s", info);
		free(info);
		cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
		char want[64];
		snprintf(want, sizeof(want), "forkvm-linux: count %ld", at + 3);
		bool counted = console_wait(want, 120000);
		char *c = h_read_file(vm.console);
		cr_assert(counted, "restore %d: no \"%s\" (snapshot at %ld); forkvm: %s\nconsole:\n%s", gen,
			  want, at, h_stderr(&vm.proc), c ? c : "");
		/* it went on: no new boot, and no count started over */
		cr_assert(!strstr(c, "Linux version") && !strstr(c, "userspace up"),
			  "restore %d booted again:\n%s", gen, c);
		cr_assert_gt(last_count_in(vm.console), at);
		free(c);
		free(snap);
	}
	h_rmtree(dir);
	free(dir);
}

static void make_image(const char *path, size_t len, const char *head);

/* forkvm --kernel FILE (with the test initramfs, and disk: a --disk
 * value, or NULL); status and stderr. */
static int run_kernel_disk(const char *file, const char *initrd, const char *disk, char **err)
{
	char *bin = h_bin("forkvm"), *dir = h_tmpdir();
	const char *argv[] = {bin,    "--kernel", file,	 "--initramfs",
			      initrd, "--serial", "off", disk ? "--disk" : NULL, disk, NULL};
	int st = h_run(dir, argv, 60000, NULL, err);
	free(bin);
	h_rmtree(dir);
	return st;
}

static int run_kernel(const char *file, const char *initrd, char **err)
{
	return run_kernel_disk(file, initrd, NULL, err);
}

/* A file with a bzImage's boot sector flag and header, and version. */
static char *fake_bzimage(const char *dir, unsigned version, size_t len)
{
	char *path = h_join(dir, "bzImage");
	unsigned char *b = calloc(1, len);
	b[0x1f1] = 1; /* setup_sects */
	b[0x1fe] = 0x55;
	b[0x1ff] = 0xaa;
	b[0x201] = 0x6a; /* header up to 0x26c */
	memcpy(b + 0x202, "HdrS", 4);
	b[0x206] = (unsigned char)version;
	b[0x207] = (unsigned char)(version >> 8);
	FILE *f = fopen(path, "w");
	cr_assert(f);
	cr_assert_eq(fwrite(b, 1, len, f), len);
	fclose(f);
	free(b);
	return path;
}

Test(linux, bad_kernels_and_initramfs_get_a_clear_error, .timeout = 120)
{
	char *dir = h_tmpdir(), *err = NULL, *initrd = initramfs();
	char *missing = h_join(dir, "missing");

	/* a boot protocol older than 2.12 */
	char *old = fake_bzimage(dir, 0x0202, 8192);
	cr_assert_eq(run_kernel(old, initrd, &err), 1, "%s", err);
	cr_assert(strstr(err, "boot protocol 2.02 is too old"), "%s", err);
	free(err);
	/* a 32-bit kernel: no 64-bit entry point */
	char *k32 = fake_bzimage(dir, 0x020f, 8192);
	cr_assert_eq(run_kernel(k32, initrd, &err), 1, "%s", err);
	cr_assert(strstr(err, "no 64-bit entry point"), "%s", err);
	free(err);
	/* truncated inside its setup code */
	char *cut = fake_bzimage(dir, 0x020f, 0x300);
	cr_assert_eq(run_kernel(cut, initrd, &err), 1, "%s", err);
	cr_assert(strstr(err, "truncated or malformed") || strstr(err, "64-bit"), "%s", err);
	free(err);
	/* a missing initramfs, with the real kernel, on a platform that can
	 * try (else the platform's refusal comes first) */
	char *k = kernel();
	if (access(k, R_OK) == 0 && !h_on_process()) {
		cr_assert_eq(run_kernel(k, missing, &err), 1, "%s", err);
		cr_assert(strstr(err, "initramfs") && strstr(err, "No such file"), "%s", err);
		free(err);
		/* disks: missing, too small, a directory */
		char opt[600];
		snprintf(opt, sizeof(opt), "path=%s", missing);
		cr_assert_eq(run_kernel_disk(k, initrd, opt, &err), 1, "%s", err);
		cr_assert(strstr(err, "disk") && strstr(err, "No such file"), "%s", err);
		free(err);
		char *tiny = h_join(dir, "tiny.img");
		make_image(tiny, 100, NULL);
		snprintf(opt, sizeof(opt), "path=%s", tiny);
		cr_assert_eq(run_kernel_disk(k, initrd, opt, &err), 1, "%s", err);
		cr_assert(strstr(err, "too small"), "%s", err);
		free(err);
		snprintf(opt, sizeof(opt), "path=%s,readonly=on", dir);
		cr_assert_eq(run_kernel_disk(k, initrd, opt, &err), 1, "%s", err);
		cr_assert(strstr(err, "not a regular file"), "%s", err);
		free(err);
		free(tiny);
	}
	free(k);
	/* a vmlinux cut short: its segments lie past the end of the file */
	vmlinux = true;
	k = kernel();
	vmlinux = false;
	FILE *in = fopen(k, "rb");
	if (in) {
		static char head[1 << 20];
		size_t n = fread(head, 1, sizeof(head), in);
		fclose(in);
		char *cutk = h_join(dir, "vmlinux-cut");
		FILE *out = fopen(cutk, "wb");
		cr_assert(out && fwrite(head, 1, n, out) == n && fclose(out) == 0);
		cr_assert_eq(run_kernel(cutk, initrd, &err), 1, "%s", err);
		cr_assert(strstr(err, "vmlinux: segment") && strstr(err, "outside the file"), "%s", err);
		free(err);
		free(cutk);
	}
	free(k);
	free(old);
	free(k32);
	free(cut);
	free(missing);
	free(initrd);
	h_rmtree(dir);
}

Test(linux, process_platform_refuses_a_kernel, .timeout = 120)
{
	/* --platform process whatever the pass: the refusal is the same */
	char *k = kernel(), *i = initramfs(), *err = NULL, *bin = h_bin("forkvm"), *dir = h_tmpdir();
	cr_assert(access(k, R_OK) == 0, "the Linux test guest is missing (%s): make linux-guest",
		  k);
	const char *argv[] = {bin, "--platform", "process", "--kernel", k, "--initramfs", i,
			      "--serial", "off", NULL};
	int st = h_run(dir, argv, 60000, NULL, &err);
	cr_assert_eq(st, 1, "%s", err);
	cr_assert(strstr(err, "a Linux kernel needs the KVM platform"), "%s", err);
	free(err);
	free(k);
	free(i);
	free(bin);
	h_rmtree(dir);
	free(dir);
}

/* ---------------------------------------------------------------- virtio */

/* A raw image of len bytes at path: head (if any) at 0, zeroes after. */
static void make_image(const char *path, size_t len, const char *head)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	if (head)
		fputs(head, f);
	cr_assert_eq(ftruncate(fileno(f), (off_t)len), 0);
	fclose(f);
}

/* The virtio devices through the ACPI tables (virtio-mmio, LNRO0005):
 * two disks (vda writable: read its head, write and flush a line the host
 * then finds in the image; vdb read-only), hvc0 on virtio-console, and
 * virtio-rng as the guest's hwrng. */
Test(linux, virtio_disks_console_and_rng_work, .fini = teardown, .timeout = 300)
{
	need_linux();
	char *dir = h_tmpdir(), *vda = h_join(dir, "vda.img"), *vdb = h_join(dir, "vdb.img");
	char da[300], db[300];
	make_image(vda, 1 << 20, "forkvm-disk-head");
	make_image(vdb, 64 << 10, NULL);
	snprintf(da, sizeof(da), "path=%s", vda);
	snprintf(db, sizeof(db), "path=%s,readonly=on", vdb);
	const char *more[] = {"--disk", da, "--disk", db, NULL};
	char *k = kernel();
	boot_with(k, "console=ttyS0 panic=-1 forkvm.test=disk,hvc,rng forkvm.seq=7", "1", more);
	free(k);
	int st = h_wait(&vm.proc, BOOT_MS);
	char *c = h_read_file(vm.console);
	cr_assert_eq(st, 0, "forkvm exited %d (stderr: %s); console:\n%s", st, h_stderr(&vm.proc),
		     c ? c : "");
	static const char *const want[] = {
		"forkvm-linux: disk vda 2048 rw",
		"forkvm-linux: disk vdb 128 ro",
		"forkvm-linux: disk vda head 666f726b766d2d6469736b2d68656164",
		"forkvm-linux: disk vda wrote OK",
		"forkvm-linux: hvc0 says hello",
		"forkvm-linux: rng virtio_rng",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		cr_assert(c && strstr(c, want[i]), "no \"%s\" on the console:\n%s", want[i], c);
	/* the guest's write, flushed, is in the image */
	char *img = NULL;
	size_t len = 0;
	FILE *f = fopen(vda, "r");
	cr_assert_not_null(f);
	img = calloc(1, 8192);
	len = fread(img, 1, 8192, f);
	fclose(f);
	cr_assert_eq(len, 8192);
	cr_assert(memmem(img + 4096, 4096, "forkvm-linux-wrote 7", 20), "the write is not in %s", vda);
	free(img);
	free(c);
	free(vda);
	free(vdb);
	h_rmtree(dir);
	free(dir);
}

/* The second "urandom HEX" line of the console file at path (the first
 * may have been read before the snapshot); NULL if none. */
static char *second_urandom(const char *path)
{
	char *c = h_read_file(path), *out = NULL;
	char *p = c ? strstr(c, "forkvm-linux: urandom ") : NULL;
	if (p)
		p = strstr(p + 1, "forkvm-linux: urandom ");
	if (p)
		out = strndup(p + 22, 32);
	free(c);
	return out;
}

/* The nth (0-based) "disk saw LINE" of the console file at path: LINE
 * (malloc'd), or NULL. */
static char *disk_saw(const char *path, int nth)
{
	char *c = h_read_file(path), *out = NULL, *p = c;
	for (int i = 0; p && (p = strstr(p, "forkvm-linux: disk saw ")); i++, p++) {
		if (i == nth) {
			size_t n = strcspn(p + 23, "\r\n");
			out = strndup(p + 23, n);
			break;
		}
	}
	free(c);
	return out;
}

/* XXH-free content check: the file's bytes (malloc'd). */
static char *file_bytes(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	rewind(f);
	char *b = malloc(*len + 1);
	cr_assert_eq(fread(b, 1, *len, f), *len);
	fclose(f);
	return b;
}

/* Cloud Hypervisor's walkthrough verbatim: root=/dev/vda1 console=hvc0 rw
 * from a disk image (scripts/linux-guest.sh's rootfs.raw); pause, snapshot
 * (the directory holds the disk), and two restores of that one snapshot:
 * - each gets a new VM generation ID (Linux's vmgenid driver bound,
 *   through the GED's notify), so their random streams differ although
 *   their memory was the same;
 * - each has the disk as it was at the snapshot, copy-on-write: restore B
 *   first reads what restore A first read, not what A wrote after; neither
 *   the snapshot's copy nor the template's image changes. */
Test(linux, restores_of_one_snapshot_get_their_own_random_streams_and_disks, .fini = teardown,
     .timeout = 600)
{
	need_linux();
	char *rootfs = h_join(h_build_dir(), "linux/rootfs.raw"), *dir = h_tmpdir();
	char *disk = h_join(dir, "rootfs.raw"), da[300];
	cr_assert(access(rootfs, R_OK) == 0, "%s is missing: make linux-guest", rootfs);
	const char *cp[] = {"/bin/cp", "--sparse=always", rootfs, disk, NULL};
	cr_assert_eq(h_run(dir, cp, 60000, NULL, NULL), 0, "cp %s %s", rootfs, disk);
	snprintf(da, sizeof(da), "path=%s", disk);
	const char *more[] = {"--disk", da, NULL};
	char *k = kernel();
	boot_with(k, "root=/dev/vda1 console=hvc0 rw panic=-1 forkvm.test=vmgenid forkvm.diskloop=1",
		  "2", more);
	free(k);
	bool up = console_wait("forkvm-linux: disk saw token-", BOOT_MS);
	char *c = h_read_file(vm.console);
	cr_assert(up, "no disk token; forkvm: %s\nconsole:\n%s", h_stderr(&vm.proc), c);
	cr_assert(strstr(c, "rootfs up"), "not on the root disk:\n%s", c);
	cr_assert(strstr(c, "forkvm-linux: vmgenid bound"), "vmgenid did not bind:\n%s", c);
	free(c);
	char *snap = pause_and_snapshot(&vm, dir, "snap");
	h_vm_stop(&vm);
	char *snap_disk = h_join(snap, "disk-vda");
	size_t img_len, copy_len;
	char *img = file_bytes(disk, &img_len), *copy = file_bytes(snap_disk, &copy_len);
	cr_assert(img_len == copy_len && memcmp(img, copy, img_len) == 0,
		  "the snapshot's disk-vda is not the image");
	char *streams[2], *first_saw[2];
	for (int r = 0; r < 2; r++) {
		restore_start(&vm, snap);
		cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
		char *third = NULL;
		for (int t = 0; t < 60000 && !(third = disk_saw(vm.console, 2)); t += 200)
			h_sleep_ms(200);
		c = h_read_file(vm.console);
		cr_assert_not_null(third, "restore %d: no third disk line: %s\nconsole:\n%s", r,
				   h_stderr(&vm.proc), c);
		streams[r] = second_urandom(vm.console);
		first_saw[r] = disk_saw(vm.console, 0);
		cr_assert_not_null(streams[r]);
		cr_assert(!strstr(c, "Linux version"), "restore %d booted again:\n%s", r, c);
		free(c);
		free(third);
		h_vm_stop(&vm);
	}
	cr_assert_str_neq(streams[0], streams[1], "two restores drew the same random bytes");
	cr_assert_str_eq(first_saw[0], first_saw[1],
			 "restore B saw \"%s\" on its disk, not what the snapshot held (\"%s\")",
			 first_saw[1], first_saw[0]);
	size_t n;
	char *img2 = file_bytes(disk, &n), *copy2 = NULL;
	cr_assert(n == img_len && memcmp(img, img2, n) == 0, "restores wrote to the template's image");
	copy2 = file_bytes(snap_disk, &n);
	cr_assert(n == copy_len && memcmp(copy, copy2, n) == 0, "restores wrote to the snapshot");
	for (int r = 0; r < 2; r++) {
		free(streams[r]);
		free(first_saw[r]);
	}
	free(img);
	free(img2);
	free(copy);
	free(copy2);
	free(snap_disk);
	free(snap);
	free(disk);
	free(rootfs);
	h_rmtree(dir);
	free(dir);
}

/* ---------------------------------------------------------------- input */

/* Connects to the Unix socket at path (waiting for it up to 60 s). */
static int serial_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	for (int t = 0; t < 60000; t += 100) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert_geq(fd, 0);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
		close(fd);
		h_sleep_ms(100);
	}
	cr_assert_fail("cannot connect to %s", path);
	return -1;
}

/* Reads from fd into buf (text so far, NUL-terminated) until it holds
 * want; false on timeout or end of stream. */
static bool serial_wait(int fd, char *buf, size_t cap, const char *want, int timeout_ms)
{
	size_t len = strlen(buf);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	/* by the clock: the serial port's output comes a few bytes at a time */
	long long deadline = now.tv_sec * 1000LL + now.tv_nsec / 1000000 + timeout_ms;
	while (!strstr(buf, want)) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec * 1000LL + now.tv_nsec / 1000000 >= deadline)
			break;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 100) <= 0)
			continue;
		if (len + 1 >= cap) /* keep the tail */
			memmove(buf, buf + cap / 2, len - cap / 2 + 1), len -= cap / 2;
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n <= 0) {
			fprintf(stderr, "serial: %s\n", n < 0 ? strerror(errno) : "end of stream");
			return false;
		}
		len += (size_t)n;
		buf[len] = 0;
	}
	return strstr(buf, want) != NULL;
}

/* Console input: a client of --serial socket=PATH types lines; the guest
 * reads them from its console (ttyS0: the UART's receive side and its
 * interrupt; hvc0: virtio-console's receive queue) and answers each. */
static void console_takes_input(const char *console)
{
	need_linux();
	char *dir = h_tmpdir(), *sock = h_join(dir, "serial.sock"), opt[300], cmdline[128];
	snprintf(opt, sizeof(opt), "socket=%s", sock);
	snprintf(cmdline, sizeof(cmdline), "console=%s panic=-1 forkvm.test=echo", console);
	const char *more[] = {"--serial", opt, NULL};
	char *k = kernel();
	boot_with(k, cmdline, "1", more);
	free(k);
	int fd = serial_connect(sock);
	static char buf[1 << 16];
	buf[0] = 0;
	bool ready = serial_wait(fd, buf, sizeof(buf), "forkvm-linux: echo ready", BOOT_MS);
	cr_assert(ready, "no echo ready; forkvm (status %d): %s\nconsole:\n%s", h_wait(&vm.proc, 1000),
		  h_stderr(&vm.proc), buf);
	cr_assert_eq(write(fd, "hello-forkvm\n", 13), 13);
	cr_assert(serial_wait(fd, buf, sizeof(buf), "forkvm-linux: echo hello-forkvm", 60000),
		  "the guest did not read the line on %s:\n%s", console, buf);
	cr_assert_eq(write(fd, "quit\n", 5), 5);
	int st = h_wait(&vm.proc, 60000);
	cr_assert_eq(st, 0, "forkvm exited %d: %s", st, h_stderr(&vm.proc));
	close(fd);
	free(sock);
	h_rmtree(dir);
	free(dir);
}

Test(linux, the_serial_console_takes_input, .fini = teardown, .timeout = 300)
{
	console_takes_input("ttyS0");
}

Test(linux, the_hvc0_console_takes_input, .fini = teardown, .timeout = 300)
{
	console_takes_input("hvc0");
}

/* forkd's Linux templates: the function guest's agent runs as a process
 * of the guest (init's forkvm.test=agent: `forkvm-agent --vsock 1024
 * --identity-devmem`) and maps the identity page the loader wrote at boot
 * from /dev/mem (reserved and below 1 MiB: STRICT_DEVMEM allows it). Its
 * vsock connection: AF_VSOCK and the virtio transport are there (the
 * modules loaded); whether the host answers is the vsock device's test. */
Test(linux, the_agent_starts_and_finds_its_identity_page, .fini = teardown, .timeout = 300)
{
	need_linux();
	boot("agent", "1");
	bool found = console_wait("forkvm-agent: identity page at 0xf0000: generation 0, "
				  "clone_id \"\"",
				  BOOT_MS);
	char *c = h_read_file(vm.console);
	cr_assert(found, "the agent did not find its identity page; forkvm: %s\nconsole:\n%s",
		  h_stderr(&vm.proc), c ? c : "");
	cr_assert(strstr(c, "forkvm-linux: userspace up, 1 cpus, mode agent"), "%s", c);
	cr_assert_null(strstr(c, "forkvm-linux: module "), "a module is missing or failed:\n%s", c);
	cr_assert_null(strstr(c, "no identity page"), "%s", c);
	free(c);
	/* connected, or still no host end after its 10 s of retries: either
	 * way not "Address family not supported" (no vsock in the guest) */
	const char *ok = "forkvm-agent: agent channel on vsock port 1024 of the host";
	const char *gave_up = "forkvm-agent: cannot connect to the host's vsock port 1024: ";
	bool said = false;
	for (int t = 0; t < 60000 && !said; t += 200) {
		c = h_read_file(vm.console);
		said = c && (strstr(c, ok) || strstr(c, gave_up));
		free(c);
		if (!said)
			h_sleep_ms(200);
	}
	c = h_read_file(vm.console);
	cr_assert(said, "the agent said nothing of its vsock connection:\n%s", c ? c : "");
	const char *why = strstr(c, gave_up);
	if (why) {
		why += strlen(gave_up);
		cr_assert(strncmp(why, "Address family", 14) != 0,
			  "no AF_VSOCK in the guest:\n%s", c);
		cr_assert(console_wait("forkvm-linux: agent exited 1", 20000),
			  "init did not see the agent exit:\n%s", c);
	}
	free(c);
}
