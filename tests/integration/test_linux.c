/* tests/integration/test_linux.c - Linux guests (issue 14): Debian's stock
 * kernel with a busybox initramfs (scripts/linux-guest.sh, build/linux/)
 * boots to userspace on 1 and 4 vCPUs (and, uncompressed as a vmlinux
 * ELF, on 2) with its console on the 16550 serial port, pauses and
 * resumes, is snapshotted and restored (twice, a chain) with its counting
 * init going on, and ends with forkvm's exit status 0 when it
 * reboots. Its disks go into snapshot directories and the store, and each
 * restore writes to its own copy-on-write layer. Bad kernels and initramfs
 * images get a clear error on either platform; the process platform
 * refuses a kernel and says why; a device removed between snapshot and
 * restore is a clear error. The agent runs as a process of the guest
 * (forkvm.test=agent) on vsock: its state and connection go on across
 * restores; a guest connection to host port P reaches PATH_P; forkd forks
 * Linux clones (10, each with its own identity and random streams; with
 * a disk, each writing its own).
 *
 * Linux guests need hardware virtualization: on KVM natively, except on
 * PVM (which runs guest ring 0 about 1000 times slower), and in the KVM
 * lane, each test in a lane of its own (make test: the smoke cases;
 * FORKVM_TEST_LINUX_LANE=1, make test-linux-lane: all), where a boot takes
 * 10-40 s and the lane itself may freeze (docs/linux-guests.md). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <sys/types.h>

#include <jansson.h>

#include "common/agent_client.h"
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

/* Starts forkvm restoring url (paused; --store store when not NULL), its
 * console in a file of its own; as h_vm_start, v's paths in a new
 * directory. */
static void restore_url(struct h_vm *v, const char *url, const char *store)
{
	char *bin = h_bin("forkvm"), *src = NULL, *serial = NULL;

	memset(v, 0, sizeof(*v));
	v->dir = h_tmpdir();
	v->api = h_join(v->dir, "api.sock");
	v->agent = h_join(v->dir, "agent.sock");
	v->console = h_join(v->dir, "console.log");
	cr_assert(asprintf(&src, "source_url=%s", url) > 0);
	cr_assert(asprintf(&serial, "file=%s", v->console) > 0);
	/* -v: forkvm logs what its snapshots wrote (and why a VM ended) */
	const char *argv[] = {bin,    "-v",	"--api-socket", v->api, "--restore", src, "--serial",
			      serial, store ? "--store" : NULL, store, NULL};
	cr_assert_eq(h_spawn(&v->proc, v->dir, argv), 0);
	/* materializing a store snapshot's memory and disk in the lane takes a while */
	cr_assert(h_wait_path(v->api, 180000), "the restoring forkvm did not start: %s",
		  h_stderr(&v->proc));
	free(bin);
	free(src);
	free(serial);
}

/* Starts forkvm restoring the snapshot directory snap_dir (paused). */
static void restore_start(struct h_vm *v, const char *snap_dir)
{
	char *url = NULL;
	cr_assert(asprintf(&url, "file://%s", snap_dir) > 0);
	restore_url(v, url, NULL);
	free(url);
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
	/* a device removed between snapshot and restore (the disk taken out of
	 * config.json): its state unit has no device here, a clear error */
	char *cfg_path = h_join(snap, "config.json"), *cfg_text = h_read_file(cfg_path);
	json_t *cfg = json_loads(cfg_text, 0, NULL);
	cr_assert_not_null(cfg, "config.json: %s", cfg_text);
	cr_assert_eq(json_object_del(cfg, "disks"), 0, "config.json has no disks: %s", cfg_text);
	char *edited = json_dumps(cfg, JSON_INDENT(2));
	cr_assert_eq(h_write_file(cfg_path, edited), 0);
	char *bin = h_bin("forkvm"), *src = h_fmt("source_url=file://%s", snap), *rerr = NULL;
	const char *rargv[] = {bin, "--restore", src, "--serial", "off", NULL};
	int rst = h_run(dir, rargv, 120000, NULL, &rerr);
	cr_assert_neq(rst, 0, "a restore without the disk its snapshot had succeeded");
	cr_assert(strstr(rerr, "virtio-blk:vda"), "no clear error for the removed disk: %s", rerr);
	free(rerr);
	free(src);
	free(bin);
	free(edited);
	json_decref(cfg);
	free(cfg_text);
	free(cfg_path);
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

/* The object ids of the disk's chunks in a store manifest ("show --json"
 * of ref), as one string "index:id ..." (malloc'd). */
static char *disk_chunks_of(const char *store, const char *ref, const char *device,
			    char **parent)
{
	char *bin = h_bin("forkctl"), *out = NULL, *err = NULL, *s;
	const char *argv[] = {bin, "--store", store, "store", "show", "--json", ref, NULL};
	cr_assert_eq(h_run(store, argv, 60000, &out, &err), 0, "forkctl store show %s: %s", ref, err);
	/* the manifest's "disks" member: find the device's chunk list by hand
	 * (compact JSON: {"chunks":[[i,"id"],...],"device":"vda",...}) */
	char key[32];
	snprintf(key, sizeof(key), "\"device\":\"%s\"", device);
	char *dev = strstr(out, key);
	cr_assert_not_null(dev, "no disk %s in %s", device, out);
	char *obj = dev;
	while (obj > out && *obj != '{')
		obj--;
	char *chunks = strstr(obj, "\"chunks\":[");
	cr_assert(chunks && chunks < dev + strlen(key) + 200, "no chunks for %s in %s", device, out);
	char *end = chunks[10] == ']' ? chunks + 9 : strstr(chunks, "]]"); /* [] or [[...]] */
	size_t n = end ? (size_t)(end - chunks) + 2 : strlen(chunks);
	s = strndup(chunks, n);
	if (parent) {
		char *p = strstr(out, "\"parent\":\"");
		*parent = p ? strndup(p + 10, 32) : NULL;
	}
	free(out);
	free(err);
	free(bin);
	return s;
}

/* Logs forkvm's line about what a snapshot wrote to the store. */
static void log_store_line(const char *who, const struct h_proc *p)
{
	char *e = h_stderr(p), *l = e ? strstr(e, "written to the store") : NULL;
	if (l) {
		while (l > e && l[-1] != '\n')
			l--;
		cr_log_info("%s: %.*s", who, (int)strcspn(l, "\n"), l);
	}
	free(e);
}

/* How many "[i,"id"]" entries of b are not in a (chunks of a disk that a
 * snapshot stored anew or changed). */
static int chunks_not_in(const char *a, const char *b)
{
	int n = 0;
	for (const char *p = strchr(b + 10, '['); p; p = strchr(p + 1, '[')) {
		size_t len = strcspn(p, "]") + 1;
		char *e = strndup(p, len);
		if (!strstr(a, e))
			n++;
		free(e);
	}
	return n;
}

/* Issue 14's clones through the store: a Linux guest on its root disk
 * (the walkthrough's rootfs.raw) snapshotted to store://; the store holds
 * its disk (exported, byte for byte the image); two restores of it (A, B)
 * each get the disk as the snapshot held it and write to their own
 * copy-on-write layer: B does not see A's writes. A's own snapshot into
 * the store is incremental, its disk too (only the chunks A wrote are
 * new), and restores with A's disk. */
Test(linux, store_snapshots_keep_the_disk_and_clones_write_their_own, .fini = teardown,
     .timeout = 900)
{
	need_linux();
	char *rootfs = h_join(h_build_dir(), "linux/rootfs.raw"), *dir = h_tmpdir();
	char *disk = h_join(dir, "rootfs.raw"), *store = h_join(dir, "store"), da[300];
	cr_assert(access(rootfs, R_OK) == 0, "%s is missing: make linux-guest", rootfs);
	const char *cp[] = {"/bin/cp", "--sparse=always", rootfs, disk, NULL};
	cr_assert_eq(h_run(dir, cp, 60000, NULL, NULL), 0, "cp %s %s", rootfs, disk);
	snprintf(da, sizeof(da), "path=%s", disk);
	const char *more[] = {"--disk", da, "--store", store, NULL};
	char *k = kernel();
	boot_with(k, "root=/dev/vda1 console=hvc0 rw panic=-1 forkvm.test=vmgenid forkvm.diskloop=1",
		  "1", more);
	free(k);
	bool up = console_wait("forkvm-linux: disk saw token-", BOOT_MS);
	char *c = h_read_file(vm.console);
	cr_assert(up, "no disk token; forkvm: %s\nconsole:\n%s", h_stderr(&vm.proc), c);
	free(c);

	/* the template: paused, into the store (memory and disk) */
	char *body = NULL;
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
	int st = h_http(vm.api, "PUT", "/api/v1/vm.snapshot",
			"{\"destination_url\":\"store://lx\"}", 300000, &body);
	cr_assert_eq(st, 200, "vm.snapshot store://lx answered %d: %s (forkvm: %s)", st, body,
		     h_stderr(&vm.proc));
	free(body);
	log_store_line("template", &vm.proc);
	h_vm_stop(&vm);

	/* the store's disk is the image as the guest left it */
	char *exp = h_join(dir, "exported"), *url = NULL, *bin = h_bin("forkctl"), *er = NULL;
	cr_assert(asprintf(&url, "file://%s", exp) > 0);
	const char *ex[] = {bin, "--store", store, "store", "export", "lx", url, NULL};
	cr_assert_eq(h_run(dir, ex, 120000, NULL, &er), 0, "forkctl store export: %s", er);
	free(er);
	char *exp_disk = h_join(exp, "disk-vda");
	size_t img_len, exp_len;
	char *img = file_bytes(disk, &img_len), *expd = file_bytes(exp_disk, &exp_len);
	cr_assert(img_len == exp_len && memcmp(img, expd, img_len) == 0,
		  "the store's disk-vda is not the image");
	free(expd);
	char *lx_chunks = disk_chunks_of(store, "lx", "vda", NULL);

	/* A: restored from the store, goes on writing tokens to its disk,
	 * then snapshotted into the store itself */
	char *first_saw[3], *a_console = NULL;
	restore_url(&vm, "store://lx", store);
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
	char *third = NULL;
	for (int t = 0; t < 120000 && !(third = disk_saw(vm.console, 2)); t += 200)
		h_sleep_ms(200);
	c = h_read_file(vm.console);
	cr_assert_not_null(third, "restore A: no third disk line: %s\nconsole:\n%s",
			   h_stderr(&vm.proc), c);
	cr_assert(!strstr(c, "Linux version"), "restore A booted again:\n%s", c);
	free(c);
	free(third);
	first_saw[0] = disk_saw(vm.console, 0);
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.pause", NULL, NULL), 204);
	st = h_http(vm.api, "PUT", "/api/v1/vm.snapshot", "{\"destination_url\":\"store://lx-a\"}",
		    300000, &body);
	cr_assert_eq(st, 200, "vm.snapshot store://lx-a answered %d: %s (forkvm: %s)", st, body,
		     h_stderr(&vm.proc));
	free(body);
	log_store_line("A", &vm.proc);
	a_console = h_read_file(vm.console);
	h_vm_stop(&vm);
	char *parent = NULL, *a_chunks = disk_chunks_of(store, "lx-a", "vda", &parent);
	char *lx_id = NULL;
	{
		char *out = NULL;
		const char *rs[] = {bin, "--store", store, "store", "show", "--json", "lx", NULL};
		cr_assert_eq(h_run(dir, rs, 60000, &out, NULL), 0);
		char *p = strstr(out, "\"id\":\"");
		cr_assert_not_null(p, "%s", out);
		lx_id = strndup(p + 6, 32);
		free(out);
	}
	cr_assert(parent && !strcmp(parent, lx_id), "A's snapshot is not incremental (parent %s, lx %s)",
		  parent ? parent : "null", lx_id);
	int changed = chunks_not_in(lx_chunks, a_chunks);
	cr_log_info("A's incremental snapshot: %d of its disk chunks differ from lx's", changed);
	cr_assert(changed >= 1 && changed <= 8,
		  "A wrote tokens at byte 4096 only, yet %d disk chunks differ from the parent's",
		  changed);

	/* B: restored from the same snapshot, sees it as it was, not A's writes */
	restore_url(&vm, "store://lx", store);
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
	char *b0 = NULL;
	for (int t = 0; t < 120000 && !(b0 = disk_saw(vm.console, 0)); t += 200)
		h_sleep_ms(200);
	cr_assert_not_null(b0, "restore B: no disk line: %s", h_stderr(&vm.proc));
	first_saw[1] = b0;
	h_vm_stop(&vm);
	cr_assert_str_eq(first_saw[1], first_saw[0],
			 "restore B saw \"%s\" on its disk, not what the snapshot held (\"%s\")",
			 first_saw[1], first_saw[0]);

	/* C: restored from A's snapshot, has A's disk: a token A wrote after
	 * its restore, not the template's */
	restore_url(&vm, "store://lx-a", store);
	cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
	char *c0 = NULL;
	for (int t = 0; t < 120000 && !(c0 = disk_saw(vm.console, 0)); t += 200)
		h_sleep_ms(200);
	cr_assert_not_null(c0, "restore C: no disk line: %s", h_stderr(&vm.proc));
	first_saw[2] = c0;
	h_vm_stop(&vm);
	cr_assert(strncmp(first_saw[2], "token-", 6) == 0 && strcmp(first_saw[2], first_saw[0]),
		  "restore C saw \"%s\", not a token A wrote (the template's was \"%s\")",
		  first_saw[2], first_saw[0]);
	char urandom[64];
	snprintf(urandom, sizeof(urandom), "urandom %.32s", first_saw[2] + 6);
	cr_assert(a_console && strstr(a_console, urandom),
		  "restore C saw \"%s\", which A never drew:\n%s", first_saw[2], a_console);

	/* nothing wrote to the image */
	size_t n;
	char *img2 = file_bytes(disk, &n);
	cr_assert(n == img_len && memcmp(img, img2, n) == 0, "restores wrote to the image");
	for (int r = 0; r < 3; r++)
		free(first_saw[r]);
	free(img);
	free(img2);
	free(a_console);
	free(parent);
	free(lx_id);
	free(lx_chunks);
	free(a_chunks);
	free(exp_disk);
	free(exp);
	free(url);
	free(bin);
	free(store);
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

/* ---------------------------------------------------------------- agent */

/* The agent inside the guest (forkvm.test=agent: init runs it on vsock)
 * at path: connected, ready or answering a ping. */
static struct agent_client *agent_at(const char *path, bool fresh_boot)
{
	struct agent_client *ac = NULL;
	int rc = agent_client_connect(path, BOOT_MS, &ac);
	if (rc < 0) {
		char *c = h_read_file(vm.console);
		cr_assert_fail("cannot connect to %s: %s; forkvm (%s): %s\nconsole:\n%s", path,
			       strerror(-rc), h_wait(&vm.proc, 0) >= 0 ? "exited" : "running",
			       h_stderr(&vm.proc), c ? c : "");
	}
	rc = fresh_boot ? agent_client_wait_ready(ac, BOOT_MS, NULL) : agent_client_ping(ac, 60000, NULL);
	char *c = h_read_file(vm.console);
	cr_assert_eq(rc, 0, "the guest's agent did not answer: %s; forkvm: %s\nconsole:\n%s",
		     strerror(-rc), h_stderr(&vm.proc), c ? c : "");
	free(c);
	return ac;
}

/* eval code; the result as compact JSON (malloc'd). */
static char *agent_eval(struct agent_client *ac, const char *code)
{
	json_t *r = NULL;
	const char *en = NULL, *em = NULL;
	int rc = agent_client_eval(ac, code, 60000, &r);
	cr_assert_eq(rc, 0, "eval `%s`: %s", code, strerror(-rc));
	cr_assert(agent_client_reply_ok(r, &en, &em), "eval `%s` threw %s: %s", code, en, em);
	const json_t *res = json_object_get(r, "result");
	char *s = res ? json_dumps(res, JSON_ENCODE_ANY | JSON_COMPACT) : strdup("undefined");
	json_decref(r);
	return s;
}

/* The agent's info field key (an integer or a string, as JSON). */
static char *agent_info(struct agent_client *ac, const char *key)
{
	json_t *r = NULL;
	int rc = agent_client_info(ac, 60000, &r);
	cr_assert_eq(rc, 0, "info: %s", strerror(-rc));
	const json_t *v = json_object_get(json_object_get(r, "result"), key);
	char *dump = json_dumps(r, JSON_COMPACT);
	cr_assert_not_null(v, "info has no %s: %s", key, dump);
	free(dump);
	char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	json_decref(r);
	return s;
}

/* The agent as a process of the guest's init, on vsock (host port 1024 is
 * forkvm's agent channel): it answers, its JavaScript state is kept in a
 * snapshot, and in each of two restores (with agent sockets of their own)
 * its connection carries on without a new one, the identity page says
 * generation 1, and the kernel's random bytes differ. */
Test(linux, the_agent_runs_in_the_guest_on_vsock_and_carries_on_in_restores, .fini = teardown,
     .timeout = 600)
{
	need_linux();
	char *k = kernel(), *adir = h_tmpdir(), *apath = h_join(adir, "agent.sock");
	char *aopt = h_fmt("socket=%s", apath);
	const char *more[] = {"--vsock", "cid=3", "--agent", aopt, NULL};
	boot_with(k, "console=ttyS0 panic=-1 forkvm.test=agent", "1", more);
	free(k);
	struct agent_client *ac = agent_at(apath, true);
	char *s = agent_eval(ac, "var n = 41; 6 * 7");
	cr_assert_str_eq(s, "42");
	free(s);
	s = agent_info(ac, "generation");
	cr_assert_str_eq(s, "0", "a booted guest's generation: %s", s);
	free(s);
	agent_client_close(ac);
	char *dir = h_tmpdir(), *snap = pause_and_snapshot(&vm, dir, "snap");
	h_vm_stop(&vm);
	char *rand[2];
	for (int r = 0; r < 2; r++) {
		char *bin = h_bin("forkvm"), *src = h_fmt("source_url=file://%s", snap);
		memset(&vm, 0, sizeof(vm));
		vm.dir = h_tmpdir();
		vm.api = h_join(vm.dir, "api.sock");
		vm.agent = h_join(vm.dir, "agent.sock");
		vm.console = h_join(vm.dir, "console.log");
		char *ag = h_fmt("socket=%s", vm.agent), *ser = h_fmt("file=%s", vm.console);
		const char *argv[] = {bin, "--api-socket", vm.api, "--restore", src, "--agent", ag,
				      "--serial", ser, NULL};
		cr_assert_eq(h_spawn(&vm.proc, vm.dir, argv), 0);
		cr_assert(h_wait_path(vm.api, 60000), "restore %d did not start: %s", r,
			  h_stderr(&vm.proc));
		cr_assert_eq(h_api(&vm, "PUT", "/api/v1/vm.resume", NULL, NULL), 204);
		ac = agent_at(vm.agent, false);
		s = agent_eval(ac, "++n");
		cr_assert_str_eq(s, "42", "restore %d: the agent's state: %s", r, s);
		free(s);
		s = agent_info(ac, "generation");
		cr_assert_str_eq(s, "1", "restore %d: generation %s", r, s);
		free(s);
		rand[r] = agent_eval(ac, "forkvm.randomHex(16)");
		cr_assert_eq(strlen(rand[r]), 34, "restore %d: %s", r, rand[r]);
		agent_client_close(ac);
		char *c = h_read_file(vm.console);
		cr_assert(!c || !strstr(c, "agent exited"), "restore %d: the agent exited:\n%s", r, c);
		free(c);
		h_vm_stop(&vm);
		free(bin);
		free(src);
		free(ag);
		free(ser);
	}
	cr_assert_str_neq(rand[0], rand[1], "two restores' kernels gave the same random bytes");
	free(rand[0]);
	free(rand[1]);
	free(snap);
	h_rmtree(dir);
	free(dir);
	h_rmtree(adir);
	free(adir);
	free(apath);
	free(aopt);
}

/* Firecracker's convention, guest side: the agent started on host port
 * 5000 (forkvm.agent_port=5000) is connected by forkvm to the Unix socket
 * PATH_5000, where this test listens and talks to it itself. */
Test(linux, a_guest_connection_to_a_host_port_reaches_path_port, .fini = teardown, .timeout = 300)
{
	need_linux();
	char *dir = h_tmpdir(), *path = h_join(dir, "v.sock"), *port_path = h_fmt("%s_5000", path);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", port_path);
	int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(ls, 0);
	cr_assert_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(ls, 1), 0);
	char *k = kernel(), *vs = h_fmt("cid=7,socket=%s", path);
	const char *more[] = {"--vsock", vs, NULL};
	boot_with(k, "console=ttyS0 panic=-1 forkvm.test=agent forkvm.agent_port=5000", "1", more);
	struct pollfd p = {.fd = ls, .events = POLLIN};
	int ready = poll(&p, 1, BOOT_MS);
	char *c = h_read_file(vm.console);
	cr_assert_eq(ready, 1, "the guest's agent never connected to %s; forkvm: %s\nconsole:\n%s",
		     port_path, h_stderr(&vm.proc), c ? c : "");
	free(c);
	int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(fd, 0);
	struct agent_client *ac = NULL;
	cr_assert_eq(agent_client_from_fd(fd, &ac), 0);
	cr_assert_eq(agent_client_wait_ready(ac, 60000, NULL), 0);
	char *s = agent_eval(ac, "[1, 2, 3].length");
	cr_assert_str_eq(s, "3");
	free(s);
	agent_client_close(ac);
	close(ls);
	free(k);
	free(vs);
	free(path);
	free(port_path);
	h_rmtree(dir);
	free(dir);
}

/* ---------------------------------------------------------------- forkd */

/* forkd with a Linux template: booted once with the agent inside (on
 * vsock), snapshotted into the store; 10 clones forked (cold, and from a
 * warm pool of 2): each answers through its own agent socket, sees its
 * own clone id and a new generation, and no two draw the same random
 * bytes from their kernels (getrandom, /dev/urandom's stream) or from
 * Math.random; metrics count them; an 11th is refused (--max-clones 10);
 * a deleted clone's process is gone; invoke works. */
Test(linux, forkd_forks_linux_clones_each_with_its_own_identity_and_randomness, .timeout = 900)
{
	need_linux();
	struct h_forkd d;
	memset(&d, 0, sizeof(d));
	const char *fargs[] = {"--max-clones", "10", NULL};
	int rc = h_forkd_start(&d, NULL, fargs, 30000);
	char *log = h_forkd_log(&d);
	cr_assert_eq(rc, 0, "forkd did not start: %s", log);
	free(log);
	char *k = kernel(), *i = initramfs(), *sock = h_join(d.dir, "forkd.sock");
	json_t *body = json_pack(
	    "{s:s,s:{s:{s:I},s:{s:s,s:s,s:s},s:{s:i}},s:s,s:i}", "name", "lx", "boot", "memory",
	    "size", (json_int_t)(256 << 20), "payload", "kernel", k, "initramfs", i, "cmdline",
	    "console=ttyS0 panic=-1 quiet forkvm.test=agent", "vsock", "cid", 3, "load",
	    "var seen = 0; function handle(x) { seen++; return {x: x, seen: seen}; }", "pool", 2);
	char *txt = json_dumps(body, JSON_COMPACT), *out = NULL;
	json_decref(body);
	int st = h_http(sock, "POST", "/v1/templates", txt, BOOT_MS + 120000, &out);
	log = h_forkd_log(&d);
	cr_assert_eq(st, 201, "POST /v1/templates: %d %s\nforkd: %s", st, out, log);
	free(log);
	free(out);
	free(txt);
	/* 10 clones in two requests (the pool's two, then cold ones) */
	json_t *clones = json_array();
	for (int batch = 0; batch < 2; batch++) {
		out = NULL;
		st = h_http(sock, "POST", "/v1/templates/lx/clones", "{\"count\": 5}", 600000, &out);
		cr_assert_eq(st, 201, "fork: %d %s", st, out);
		json_t *j = json_loads(out, 0, NULL);
		json_array_extend(clones, json_object_get(j, "clones"));
		json_decref(j);
		free(out);
	}
	cr_assert_eq(json_array_size(clones), 10);
	char *ids[10], *rnd[10], *mrnd[10];
	size_t n;
	json_t *c;
	json_array_foreach(clones, n, c) {
		const char *id = json_string_value(json_object_get(c, "id"));
		const char *ag = json_string_value(json_object_get(c, "agent_socket"));
		cr_assert(id && ag, "clone %zu: no id or agent socket", n);
		struct agent_client *ac = NULL;
		cr_assert_eq(agent_client_connect(ag, 60000, &ac), 0, "clone %s: %s", id, ag);
		rc = agent_client_ping(ac, 120000, NULL);
		cr_assert_eq(rc, 0, "clone %s: no pong: %s", id, strerror(-rc));
		char *cid = agent_info(ac, "clone_id"), *want = h_fmt("\"%s\"", id);
		cr_assert_str_eq(cid, want, "clone %s: the guest sees clone id %s", id, cid);
		free(cid);
		free(want);
		char *gen = agent_info(ac, "generation");
		cr_assert_str_neq(gen, "0", "clone %s: generation 0 (not restored?)", id);
		free(gen);
		char *seen = agent_eval(ac, "seen");
		cr_assert_str_eq(seen, "0", "clone %s: the template's state: seen = %s", id, seen);
		free(seen);
		ids[n] = strdup(id);
		rnd[n] = agent_eval(ac, "forkvm.randomHex(16)");
		mrnd[n] = agent_eval(ac, "Math.random()");
		agent_client_close(ac);
	}
	for (size_t a = 0; a < 10; a++)
		for (size_t b = a + 1; b < 10; b++) {
			cr_assert_str_neq(rnd[a], rnd[b], "clones %s and %s drew the same kernel bytes %s",
					  ids[a], ids[b], rnd[a]);
			cr_assert_str_neq(mrnd[a], mrnd[b], "clones %s and %s: same Math.random()",
					  ids[a], ids[b]);
		}
	/* metrics: the Linux clones are counted, with their memory */
	out = NULL;
	st = h_http(sock, "GET", "/v1/metrics", NULL, 60000, &out);
	cr_assert_eq(st, 200, "metrics: %d", st);
	const char *live = strstr(out, "\nforkd_clones_live ");
	cr_assert_not_null(live, "no forkd_clones_live in:\n%s", out);
	cr_assert_geq(strtol(live + 19, NULL, 10), 10, "%.60s", live + 1);
	const char *priv = strstr(out, "\nforkd_clone_memory_private_bytes ");
	cr_assert_not_null(priv, "no forkd_clone_memory_private_bytes in:\n%s", out);
	cr_assert_gt(strtoll(priv + 34, NULL, 10), 0, "%.80s", priv + 1);
	free(out);
	/* limits: an 11th clone is past --max-clones 10 (pool shells do not count) */
	out = NULL;
	st = h_http(sock, "POST", "/v1/templates/lx/clones", "{\"count\": 1}", 60000, &out);
	cr_assert_eq(st, 503, "an 11th clone with --max-clones 10: %d %s", st, out);
	free(out);
	/* delete: the clone process goes */
	json_array_foreach(clones, n, c) {
		pid_t pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
		char *path = h_fmt("/v1/clones/%s", ids[n]);
		st = h_http(sock, "DELETE", path, NULL, 60000, NULL);
		cr_assert_eq(st, 204, "DELETE %s: %d", path, st);
		bool gone = false;
		for (int t = 0; t < 10000 && !gone; t += 50) {
			gone = kill(pid, 0) < 0 && errno == ESRCH;
			if (!gone)
				h_sleep_ms(50);
		}
		cr_assert(gone, "clone %s (pid %d) is still there", ids[n], (int)pid);
		free(path);
		free(ids[n]);
		free(rnd[n]);
		free(mrnd[n]);
	}
	/* invoke: a clone (from the pool) runs handle(), the others gone */
	out = NULL;
	st = h_http(sock, "POST", "/v1/templates/lx/invoke", "{\"fn\": \"handle\", \"args\": [7], \"timeout_ms\": 120000}", 600000, &out);
	cr_assert_eq(st, 200, "invoke: %d %s", st, out);
	cr_assert(strstr(out, "\"x\":7") || strstr(out, "\"x\": 7"), "invoke answered %s", out);
	free(out);
	json_decref(clones);
	free(k);
	free(i);
	free(sock);
	h_forkd_stop(&d, 30000);
}

/* The clone's console (forkd's console_log) once it has n "disk saw"
 * lines (up to 120 s); malloc'd. */
static char *clone_console(const json_t *c, int n)
{
	const char *log = json_string_value(json_object_get(c, "console_log"));
	cr_assert_not_null(log, "a clone without console_log");
	char *third = NULL;
	for (int t = 0; t < 120000 && !(third = disk_saw(log, n - 1)); t += 200)
		h_sleep_ms(200);
	char *text = h_read_file(log);
	cr_assert_not_null(third, "clone %s: fewer than %d disk lines:\n%s",
			   json_string_value(json_object_get(c, "id")), n, text ? text : "");
	free(third);
	return text;
}

/* Every "disk saw token-X" of console a from its third on names a token a
 * wrote ("urandom X" in a) and none b wrote. (The first is what the
 * snapshot held; the second may be the token of a round whose "urandom"
 * line the template printed before the snapshot.) */
static void tokens_are_own(const char *a, const char *b, const char *what)
{
	int seen = 0;
	const char *p = strstr(a, "forkvm-linux: disk saw ");
	if (p)
		p = strstr(p + 1, "forkvm-linux: disk saw ");
	for (p = p ? strstr(p + 1, "forkvm-linux: disk saw token-") : NULL; p;
	     p = strstr(p + 1, "forkvm-linux: disk saw token-")) {
		char tok[33], want[64];
		snprintf(tok, sizeof(tok), "%.32s", p + 29);
		snprintf(want, sizeof(want), "urandom %s", tok);
		cr_assert(strstr(a, want), "%s saw token %s, which it did not write", what, tok);
		cr_assert_null(strstr(b, want), "%s saw the other clone's token %s", what, tok);
		seen++;
	}
	cr_assert_geq(seen, 2, "%s: only %d of its own tokens seen", what, seen);
}

/* forkd with a Linux template that has a disk (init: the agent in the
 * background, then the disk loop: each round says "urandom X", reads vda's
 * byte 4096 ("disk saw LINE"), writes "token-X" there). The store keeps the
 * disk; two clones first see it as the template's snapshot held it, then
 * only their own tokens; the template's image is not written by them; a
 * snapshot of clone A (POST /v1/clones/ID/snapshot, into the store) becomes
 * a template whose clone first sees A's disk, not B's. */
Test(linux, forkd_clones_of_a_template_with_a_disk_each_write_their_own, .timeout = 900)
{
	need_linux();
	struct h_forkd d;
	memset(&d, 0, sizeof(d));
	int rc = h_forkd_start(&d, NULL, NULL, 30000);
	char *log = h_forkd_log(&d);
	cr_assert_eq(rc, 0, "forkd did not start: %s", log);
	free(log);
	char *k = kernel(), *i = initramfs(), *sock = h_join(d.dir, "forkd.sock");
	char *img = h_join(d.dir, "disk.img");
	make_image(img, 1 << 20, NULL);
	json_t *body = json_pack(
	    "{s:s,s:{s:{s:I},s:{s:s,s:s,s:s},s:{s:i},s:[{s:s}]}}", "name", "lxd", "boot", "memory",
	    "size", (json_int_t)(256 << 20), "payload", "kernel", k, "initramfs", i, "cmdline",
	    "console=ttyS0 panic=-1 quiet forkvm.test=agentbg,vmgenid forkvm.diskloop=1", "vsock",
	    "cid", 3, "disks", "path", img);
	char *txt = json_dumps(body, JSON_COMPACT), *out = NULL;
	json_decref(body);
	int st = h_http(sock, "POST", "/v1/templates", txt, BOOT_MS + 120000, &out);
	log = h_forkd_log(&d);
	cr_assert_eq(st, 201, "POST /v1/templates: %d %s\nforkd: %s", st, out, log);
	free(log);
	free(out);
	free(txt);
	size_t len0, len1;
	char *img0 = file_bytes(img, &len0);
	out = NULL;
	st = h_http(sock, "POST", "/v1/templates/lxd/clones", "{\"count\": 2}", 600000, &out);
	cr_assert_eq(st, 201, "fork: %d %s", st, out);
	json_t *j = json_loads(out, 0, NULL);
	free(out);
	const json_t *arr = json_object_get(j, "clones");
	cr_assert_eq(json_array_size(arr), 2);
	const json_t *ca = json_array_get(arr, 0), *cb = json_array_get(arr, 1);
	char *a = clone_console(ca, 5), *b = clone_console(cb, 5);
	char *fa = disk_saw(json_string_value(json_object_get(ca, "console_log")), 0);
	char *fb = disk_saw(json_string_value(json_object_get(cb, "console_log")), 0);
	cr_assert_str_eq(fa, fb, "the clones first saw different disks: %s / %s", fa, fb);
	tokens_are_own(a, b, "clone A");
	tokens_are_own(b, a, "clone B");
	char *img1 = file_bytes(img, &len1);
	cr_assert(len0 == len1 && memcmp(img0, img1, len0) == 0,
		  "the clones wrote to the template's image");
	/* a snapshot of clone A, as a template: its clone has A's disk */
	char *path = h_fmt("/v1/clones/%s/snapshot", json_string_value(json_object_get(ca, "id")));
	out = NULL;
	st = h_http(sock, "POST", path, "{\"tag\": \"lxd-a\"}", 600000, &out);
	cr_assert_eq(st, 201, "POST %s: %d %s", path, st, out);
	free(out);
	free(path);
	char *a_at_snap = h_read_file(json_string_value(json_object_get(ca, "console_log")));
	out = NULL;
	st = h_http(sock, "POST", "/v1/templates", "{\"name\": \"lxd2\", \"snapshot\": \"lxd-a\"}",
		    600000, &out);
	cr_assert_eq(st, 201, "template from clone A's snapshot: %d %s", st, out);
	free(out);
	out = NULL;
	st = h_http(sock, "POST", "/v1/templates/lxd2/clones", "{\"count\": 1}", 600000, &out);
	cr_assert_eq(st, 201, "fork lxd2: %d %s", st, out);
	json_t *j2 = json_loads(out, 0, NULL);
	free(out);
	const json_t *cc = json_array_get(json_object_get(j2, "clones"), 0);
	char *c = clone_console(cc, 2);
	char *fc = disk_saw(json_string_value(json_object_get(cc, "console_log")), 0);
	cr_assert(!strncmp(fc, "token-", 6), "clone of A's snapshot first saw %s", fc);
	char want[64];
	snprintf(want, sizeof(want), "urandom %.32s", fc + 6);
	cr_assert(strstr(a_at_snap, want), "the clone of A's snapshot saw %s, which A had not written",
		  fc);
	cr_assert_null(strstr(b, want), "the clone of A's snapshot saw B's token %s", fc);
	json_decref(j2);
	json_decref(j);
	free(a);
	free(b);
	free(c);
	free(fa);
	free(fb);
	free(fc);
	free(a_at_snap);
	free(img0);
	free(img1);
	free(img);
	free(k);
	free(i);
	free(sock);
	h_forkd_stop(&d, 30000);
}
