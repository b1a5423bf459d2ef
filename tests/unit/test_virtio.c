/* tests/unit/test_virtio.c - vmm/virtio/: the virtio-mmio transport, split
 * virtqueues and the blk, console and rng devices, driven the way Linux's
 * virtio_mmio driver drives them (register writes, descriptors in guest
 * memory, QueueNotify), on a VM without KVM; malformed chains from the
 * guest; the state unit's round trip and refusals. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/loop.h"

#include "tests/lib/unit.h"
#include "vmm/state.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define MiB_ (1024ULL * 1024)
#define RINGS (40 * MiB_) /* desc, avail, used of queue 0 */
#define BUFS (44 * MiB_)  /* request buffers */
#define QNUM 16

static struct vm *vm;
static char dir[] = "/tmp/forkvm-virtio-XXXXXX";
static char disk[256], serial[256];
static struct virtio_dev dev;

static void setup(void)
{
	char err[512] = "";
	cr_assert(mkdtemp(dir));
	snprintf(disk, sizeof(disk), "%s/disk.img", dir);
	snprintf(serial, sizeof(serial), "%s/serial", dir);
	struct ut_vm_opts o = { .payload = "hello", .serial_file = serial };
	cr_assert_eq(ut_vm_create(&o, err, sizeof(err), &vm), 0, "%s", err);
	memset(&dev, 0, sizeof(dev));
}

static void teardown(void)
{
	virtio_dev_destroy(&dev);
	vm_destroy(vm);
	unlink(disk);
	unlink(serial);
	rmdir(dir);
}

TestSuite(virtio, .init = setup, .fini = teardown);

/* A disk image of n bytes, byte i = i * 7 (mod 256). */
static void make_disk(size_t n)
{
	uint8_t *b = malloc(n ? n : 1);
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 7);
	int fd = open(disk, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, b, n), (ssize_t)n);
	close(fd);
	free(b);
}

static void blk(bool readonly)
{
	char err[512] = "";
	int rc = virtio_blk_create(vm, &dev, "vda", disk, readonly, false, VIRTIO_MMIO_BASE, 16, err,
				   sizeof(err));
	cr_assert_eq(rc, 0, "%s", err);
}

/* ---------------------------------------------------------------- driver */

static uint32_t mr(uint64_t off)
{
	uint32_t v = 0xdeadbeef;
	const struct bus_range *r = bus_find(&vm->mmio, VIRTIO_MMIO_BASE + off, 4);
	cr_assert_not_null(r);
	r->io(r->dev, NULL, VIRTIO_MMIO_BASE + off - r->base, &v, 4, false);
	return v;
}

static void mw(uint64_t off, uint32_t v)
{
	const struct bus_range *r = bus_find(&vm->mmio, VIRTIO_MMIO_BASE + off, 4);
	cr_assert_not_null(r);
	r->io(r->dev, NULL, VIRTIO_MMIO_BASE + off - r->base, &v, 4, true);
}

static void *gp(uint64_t gpa, size_t len)
{
	void *p = gmem_ptr(&vm->mem, gpa, len);
	cr_assert_not_null(p);
	return p;
}

static uint16_t avail_idx;

/* Linux's probe: status, features (accepted as offered), queue 0 set up. */
static void drv_init(unsigned nr_queues)
{
	mw(VIRTIO_MMIO_STATUS, 0);
	mw(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	for (uint32_t sel = 0; sel < 2; sel++) {
		mw(VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
		uint32_t f = mr(VIRTIO_MMIO_DEVICE_FEATURES);
		mw(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
		mw(VIRTIO_MMIO_DRIVER_FEATURES, f);
	}
	mw(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				       VIRTIO_STATUS_FEATURES_OK);
	cr_assert(mr(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
	memset(gp(RINGS, 3 * 4096ULL * nr_queues), 0, 3 * 4096ULL * nr_queues);
	for (unsigned q = 0; q < nr_queues; q++) {
		uint64_t base = RINGS + q * 3 * 4096ULL;
		mw(VIRTIO_MMIO_QUEUE_SEL, q);
		cr_assert_eq(mr(VIRTIO_MMIO_QUEUE_NUM_MAX), VIRTQ_MAX_SIZE);
		mw(VIRTIO_MMIO_QUEUE_NUM, QNUM);
		mw(VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)base);
		mw(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
		mw(VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)(base + 4096));
		mw(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
		mw(VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)(base + 8192));
		mw(VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
		mw(VIRTIO_MMIO_QUEUE_READY, 1);
		cr_assert_eq(mr(VIRTIO_MMIO_QUEUE_READY), 1);
	}
	mw(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	avail_idx = 0;
}

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/* Puts a chain of n descriptors (from descriptor 0) on queue q and
 * notifies. next_override >= 0 makes the last one point there. */
static void drv_submit_raw(unsigned q, const struct seg *s, unsigned n, int next_override)
{
	uint64_t base = RINGS + q * 3 * 4096ULL;
	uint8_t *desc = gp(base, 16 * QNUM), *avail = gp(base + 4096, 6 + 2 * QNUM);
	for (unsigned i = 0; i < n; i++) {
		uint16_t flags = (uint16_t)((s[i].write ? 2 : 0) |
					    (i + 1 < n || next_override >= 0 ? 1 : 0));
		uint16_t next = (uint16_t)(i + 1 < n ? i + 1 : next_override >= 0 ? next_override : 0);
		memcpy(desc + 16 * i, &s[i].gpa, 8);
		memcpy(desc + 16 * i + 8, &s[i].len, 4);
		memcpy(desc + 16 * i + 12, &flags, 2);
		memcpy(desc + 16 * i + 14, &next, 2);
	}
	uint16_t head = 0;
	memcpy(avail + 4 + 2 * (avail_idx % QNUM), &head, 2);
	avail_idx++;
	memcpy(avail + 2, &avail_idx, 2);
	mw(VIRTIO_MMIO_QUEUE_NOTIFY, q);
}

static void drv_submit(unsigned q, const struct seg *s, unsigned n)
{
	drv_submit_raw(q, s, n, -1);
}

/* The used ring's index and entry i of queue q. */
static uint16_t used_idx(unsigned q)
{
	uint16_t v;
	memcpy(&v, gp(RINGS + q * 3 * 4096ULL + 8192 + 2, 2), 2);
	return v;
}

static uint32_t used_len(unsigned q, unsigned i)
{
	uint32_t v;
	memcpy(&v, gp(RINGS + q * 3 * 4096ULL + 8192 + 4 + 8 * i + 4, 4), 4);
	return v;
}

/* A virtio-blk request: header at BUFS, data at BUFS + 4096, status at BUFS + 64. */
static uint8_t blk_req(uint32_t type, uint64_t sector, uint32_t len, bool data_in)
{
	uint8_t hdr[16] = { 0 };
	memcpy(hdr, &type, 4);
	memcpy(hdr + 8, &sector, 8);
	memcpy(gp(BUFS, 16), hdr, 16);
	*(uint8_t *)gp(BUFS + 64, 1) = 0xee;
	struct seg s[3] = { { BUFS, 16, false }, { BUFS + 4096, len, data_in },
			    { BUFS + 64, 1, true } };
	if (len)
		drv_submit(0, s, 3);
	else
		drv_submit(0, (struct seg[]){ s[0], s[2] }, 2);
	return *(uint8_t *)gp(BUFS + 64, 1);
}

/* ---------------------------------------------------------------- tests */

Test(virtio, the_transport_says_what_it_is)
{
	make_disk(8192 + 100);
	blk(false);
	cr_assert_eq(mr(VIRTIO_MMIO_MAGIC), 0x74726976);
	cr_assert_eq(mr(VIRTIO_MMIO_VERSION), 2);
	cr_assert_eq(mr(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
	mw(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	cr_assert_eq(mr(VIRTIO_MMIO_DEVICE_FEATURES), 1, "VIRTIO_F_VERSION_1");
	mw(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	cr_assert(mr(VIRTIO_MMIO_DEVICE_FEATURES) & (1U << 9), "flush offered");
	cr_assert_not(mr(VIRTIO_MMIO_DEVICE_FEATURES) & (1U << 5), "writable");
	mw(VIRTIO_MMIO_QUEUE_SEL, 1);
	cr_assert_eq(mr(VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "blk has one queue");
	/* config: capacity in sectors (the partial sector is not the guest's) */
	uint64_t cap = 0;
	const struct bus_range *r = bus_find(&vm->mmio, VIRTIO_MMIO_BASE + 0x100, 8);
	r->io(r->dev, NULL, 0x100, &cap, 8, false);
	cr_assert_eq(cap, 16);
	/* a byte access to a register reads 0 and changes nothing */
	uint8_t b = 0x55;
	r->io(r->dev, NULL, VIRTIO_MMIO_STATUS, &b, 1, false);
	cr_assert_eq(b, 0);
}

Test(virtio, features_without_version_1_or_not_offered_are_refused)
{
	make_disk(4096);
	blk(false);
	mw(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	mw(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	mw(VIRTIO_MMIO_DRIVER_FEATURES, 1U << 9);
	mw(VIRTIO_MMIO_STATUS, 0xb);
	cr_assert_not(mr(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, "legacy refused");
	mw(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	mw(VIRTIO_MMIO_DRIVER_FEATURES, 1 | 2); /* VERSION_1 and a feature not offered */
	mw(VIRTIO_MMIO_STATUS, 0xb);
	cr_assert_not(mr(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, "unoffered refused");
	mw(VIRTIO_MMIO_DRIVER_FEATURES, 1);
	mw(VIRTIO_MMIO_STATUS, 0xb);
	cr_assert(mr(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
	mw(VIRTIO_MMIO_STATUS, 0);
	cr_assert_eq(mr(VIRTIO_MMIO_STATUS), 0, "reset");
}

Test(virtio, blk_reads_writes_flushes_and_names_itself)
{
	make_disk(64 * 1024);
	blk(false);
	drv_init(1);
	/* read sectors 2..3 */
	cr_assert_eq(blk_req(0, 2, 1024, true), 0);
	cr_assert_eq(used_idx(0), 1);
	cr_assert_eq(used_len(0, 0), 1025);
	uint8_t *data = gp(BUFS + 4096, 1024);
	for (unsigned i = 0; i < 1024; i++)
		cr_assert_eq(data[i], (uint8_t)((1024 + i) * 7), "byte %u", i);
	/* write sector 5, then find it in the image */
	memset(data, 0xa5, 512);
	cr_assert_eq(blk_req(1, 5, 512, false), 0);
	cr_assert_eq(used_len(0, 1), 1);
	uint8_t back[512];
	int fd = open(disk, O_RDONLY);
	cr_assert_eq(pread(fd, back, 512, 5 * 512), 512);
	close(fd);
	for (unsigned i = 0; i < 512; i++)
		cr_assert_eq(back[i], 0xa5);
	cr_assert_eq(blk_req(4, 0, 0, false), 0, "flush");
	cr_assert_eq(blk_req(8, 0, 20, true), 0, "get id");
	cr_assert_str_eq((char *)gp(BUFS + 4096, 20), "forkvm-vda");
	cr_assert_eq(blk_req(99, 0, 0, false), 2, "unsupported");
	/* beyond the end: an I/O error, nothing written */
	cr_assert_eq(blk_req(0, 127, 1024, true), 1);
	cr_assert_eq(blk_req(1, 1ULL << 60, 512, false), 1);
	cr_assert_eq(used_idx(0), 7);
	cr_assert_eq(mr(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_INT_USED, VIRTIO_INT_USED);
	mw(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_INT_USED);
	cr_assert_eq(mr(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

Test(virtio, a_readonly_disk_refuses_writes)
{
	make_disk(4096);
	chmod(disk, 0400);
	blk(true);
	mw(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	cr_assert(mr(VIRTIO_MMIO_DEVICE_FEATURES) & (1U << 5), "VIRTIO_BLK_F_RO");
	drv_init(1);
	memset(gp(BUFS + 4096, 512), 0, 512);
	cr_assert_eq(blk_req(1, 0, 512, false), 1);
	cr_assert_eq(blk_req(0, 0, 512, true), 0);
	cr_assert_eq(*(uint8_t *)gp(BUFS + 4096 + 1, 1), 7, "read works");
}

Test(virtio, bad_disks_are_refused_with_a_reason)
{
	char err[512] = "";
	cr_assert_eq(virtio_blk_create(vm, &dev, "vda", "/nonexistent/disk.img", false, false,
				       VIRTIO_MMIO_BASE, 16, err, sizeof(err)),
		     -ENOENT);
	cr_assert(strstr(err, "/nonexistent/disk.img"), "%s", err);
	make_disk(100);
	cr_assert_eq(virtio_blk_create(vm, &dev, "vda", disk, false, false, VIRTIO_MMIO_BASE, 16, err,
				       sizeof(err)),
		     -EINVAL);
	cr_assert(strstr(err, "too small"), "%s", err);
	cr_assert_eq(virtio_blk_create(vm, &dev, "vda", dir, false, false, VIRTIO_MMIO_BASE, 16, err,
				       sizeof(err)),
		     -EISDIR);
	cr_assert_null(bus_find(&vm->mmio, VIRTIO_MMIO_BASE, 4), "nothing registered");
}

Test(virtio, malformed_chains_need_a_reset_and_touch_nothing)
{
	make_disk(4096);
	blk(false);
	drv_init(1);
	/* a buffer outside guest RAM */
	struct seg out[3] = { { BUFS, 16, false }, { 1ULL << 40, 512, true }, { BUFS + 64, 1, true } };
	memset(gp(BUFS, 16), 0, 16);
	drv_submit(0, out, 3);
	cr_assert(mr(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	cr_assert(mr(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_INT_CONFIG);
	cr_assert_eq(used_idx(0), 0);
	/* ignored until reset */
	cr_assert_eq(blk_req(0, 0, 512, true), 0xee);
	/* a loop: descriptor 1 points back to 0 */
	drv_init(1);
	struct seg loop[2] = { { BUFS, 16, false }, { BUFS + 64, 1, true } };
	drv_submit_raw(0, loop, 2, 0);
	cr_assert(mr(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	/* a head beyond the ring */
	drv_init(1);
	uint16_t bad = QNUM + 3;
	memcpy(gp(RINGS + 4096 + 4, 2), &bad, 2);
	uint16_t one = 1;
	memcpy(gp(RINGS + 4096 + 2, 2), &one, 2);
	mw(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	cr_assert(mr(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	/* an avail index far ahead */
	drv_init(1);
	uint16_t far = QNUM * 4;
	memcpy(gp(RINGS + 4096 + 2, 2), &far, 2);
	mw(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	cr_assert(mr(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	/* after a reset it serves again */
	drv_init(1);
	cr_assert_eq(blk_req(0, 0, 512, true), 0);
}

Test(virtio, a_queue_outside_guest_ram_is_not_made_ready)
{
	make_disk(4096);
	blk(false);
	mw(VIRTIO_MMIO_QUEUE_SEL, 0);
	mw(VIRTIO_MMIO_QUEUE_NUM, QNUM);
	mw(VIRTIO_MMIO_QUEUE_DESC_LOW, 0);
	mw(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0x100);
	mw(VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(mr(VIRTIO_MMIO_QUEUE_READY), 0);
	mw(VIRTIO_MMIO_QUEUE_NUM, 12); /* not a power of 2 */
	mw(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
	mw(VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)RINGS);
	mw(VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)RINGS + 4096);
	mw(VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)RINGS + 8192);
	mw(VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(mr(VIRTIO_MMIO_QUEUE_READY), 0);
}

Test(virtio, rng_fills_what_the_guest_offers)
{
	cr_assert_eq(virtio_rng_create(vm, &dev, VIRTIO_MMIO_BASE, 17), 0);
	cr_assert_eq(mr(VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_RNG);
	drv_init(1);
	memset(gp(BUFS, 64), 0, 64);
	drv_submit(0, (struct seg[]){ { BUFS, 64, true } }, 1);
	cr_assert_eq(used_idx(0), 1);
	cr_assert_eq(used_len(0, 0), 64);
	unsigned zeros = 0;
	for (unsigned i = 0; i < 64; i++)
		zeros += *(uint8_t *)gp(BUFS + i, 1) == 0;
	cr_assert_lt(zeros, 8);
}

Test(virtio, console_output_goes_to_the_serial_destination)
{
	cr_assert_eq(virtio_console_create(vm, &dev, VIRTIO_MMIO_BASE, 18), 0);
	drv_init(2);
	memcpy(gp(BUFS, 13), "hvc0 says hi\n", 13);
	drv_submit(1, (struct seg[]){ { BUFS, 13, false } }, 1);
	cr_assert_eq(used_idx(1), 1);
	char buf[64] = "";
	int fd = open(serial, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_geq(read(fd, buf, sizeof(buf) - 1), 0);
	close(fd);
	cr_assert(strstr(buf, "hvc0 says hi"), "serial file: %s", buf);
}

static json_t *save_unit(void)
{
	char err[512] = "";
	json_t *o = NULL;
	cr_assert_eq(virtio_save(vm, &dev, &o, err, sizeof(err)), 0, "%s", err);
	return o;
}

Test(virtio, state_round_trips_and_the_guest_carries_on)
{
	char err[512] = "";
	make_disk(64 * 1024);
	blk(false);
	drv_init(1);
	cr_assert_eq(blk_req(0, 1, 512, true), 0);
	json_t *o = save_unit();
	char *text = json_dumps(o, JSON_SORT_KEYS);
	/* a new device (a restore), state applied, the queue goes on */
	virtio_dev_destroy(&dev);
	vm->mmio.nr = 0;
	blk(false);
	cr_assert_eq(virtio_restore(vm, &dev, o, 1, err, sizeof(err)), 0, "%s", err);
	json_t *again = save_unit();
	char *text2 = json_dumps(again, JSON_SORT_KEYS);
	cr_assert_str_eq(text, text2);
	cr_assert_eq(blk_req(0, 3, 512, true), 0);
	cr_assert_eq(used_idx(0), 2);
	cr_assert_eq(*(uint8_t *)gp(BUFS + 4096, 1), (uint8_t)(3 * 512 * 7));
	free(text);
	free(text2);
	json_decref(again);
	json_decref(o);
}

Test(virtio, state_that_does_not_fit_this_machine_is_refused)
{
	char err[512] = "";
	make_disk(64 * 1024);
	blk(false);
	drv_init(1);
	json_t *o = save_unit();
	virtio_dev_destroy(&dev);
	vm->mmio.nr = 0;

	make_disk(32 * 1024); /* the image shrank */
	blk(false);
	cr_assert_eq(virtio_restore(vm, &dev, o, 1, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "sectors"), "%s", err);
	virtio_dev_destroy(&dev);
	vm->mmio.nr = 0;

	make_disk(64 * 1024);
	blk(true); /* made read-only: the driver's features are no longer offered */
	cr_assert_eq(virtio_restore(vm, &dev, o, 1, err, sizeof(err)), -EINVAL);
	virtio_dev_destroy(&dev);
	vm->mmio.nr = 0;

	blk(false);
	json_t *q0 = json_array_get(json_object_get(o, "queues"), 0);
	json_object_set_new(q0, "used", json_string("0x10000000000"));
	cr_assert_eq(virtio_restore(vm, &dev, o, 1, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "guest RAM"), "%s", err);
	json_object_set_new(q0, "used", json_integer((json_int_t)(RINGS + 8192)));
	json_object_set_new(o, "gsi", json_integer(20));
	cr_assert_eq(virtio_restore(vm, &dev, o, 1, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "interrupt"), "%s", err);
	json_object_set_new(o, "gsi", json_integer(16));
	json_object_set_new(o, "queues", json_array());
	cr_assert_eq(virtio_restore(vm, &dev, o, 1, err, sizeof(err)), -EINVAL);
	json_decref(o);
}

/* The whole file at path (malloc'd), its length in *len. */
static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0, "%s", path);
	cr_assert_eq(fstat(fd, &st), 0);
	uint8_t *b = malloc((size_t)st.st_size + 1);
	cr_assert_eq(read(fd, b, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

/* A restored VM's disk: the snapshot's copy is read-only to it, its
 * writes (partial blocks included) are its own, reads see them. */
Test(virtio, a_copy_on_write_disk_keeps_the_guests_writes_private)
{
	char err[512] = "";
	make_disk(64 * 1024);
	size_t n0;
	uint8_t *before = slurp(disk, &n0);
	chmod(disk, 0400); /* the snapshot's copy: never opened for writing */
	cr_assert_eq(virtio_blk_create(vm, &dev, "vda", disk, false, true, VIRTIO_MMIO_BASE, 16,
				       err, sizeof(err)),
		     0, "%s", err);
	drv_init(1);
	memset(gp(BUFS + 4096, 512), 0x5a, 512);
	cr_assert_eq(blk_req(1, 3, 512, false), 0, "a write inside block 0");
	memset(gp(BUFS + 4096, 8192), 0x6b, 8192);
	cr_assert_eq(blk_req(1, 14, 8192, false), 0, "a write across blocks 1..3");
	cr_assert_eq(blk_req(4, 0, 0, false), 0, "flush");
	cr_assert_eq(blk_req(0, 0, 16384, true), 0, "read blocks 0..3 back");
	const uint8_t *got = gp(BUFS + 4096, 16384);
	for (unsigned i = 0; i < 16384; i++) {
		uint8_t want = i >= 1536 && i < 2048   ? 0x5a :
			       i >= 7168 && i < 15360 ? 0x6b :
							(uint8_t)(i * 7);
		cr_assert_eq(got[i], want, "byte %u", i);
	}
	size_t n1;
	uint8_t *after = slurp(disk, &n1);
	cr_assert(n0 == n1 && memcmp(before, after, n0) == 0, "the base image changed");
	free(before);
	free(after);
}

/* A snapshot's disk: the image as the guest sees it (copy-on-write writes
 * merged), holes kept, with its manifest entry. */
Test(virtio, a_captured_disk_is_what_the_guest_sees)
{
	char err[512] = "";
	make_disk(16 * 1024);
	cr_assert_eq(truncate(disk, 1 << 20), 0); /* a hole after 16 KiB */
	cr_assert_eq(virtio_blk_create(vm, &dev, "vda", disk, false, true, VIRTIO_MMIO_BASE, 16,
				       err, sizeof(err)),
		     0, "%s", err);
	drv_init(1);
	memset(gp(BUFS + 4096, 1024), 0x77, 1024);
	cr_assert_eq(blk_req(1, 1000, 1024, false), 0, "a write into the hole");
	char sub[300];
	snprintf(sub, sizeof(sub), "%s/snap", dir);
	cr_assert_eq(mkdir(sub, 0700), 0);
	int dfd = open(sub, O_RDONLY | O_DIRECTORY);
	json_t *files = json_object();
	cr_assert_eq(virtio_blk_capture(&dev, dfd, files, err, sizeof(err)), 0, "%s", err);
	close(dfd);
	json_t *e = json_object_get(files, "disk-vda");
	cr_assert_str_eq(json_string_value(json_object_get(e, "kind")), "disk");
	cr_assert_eq(json_integer_value(json_object_get(e, "size")), 1 << 20);
	char path[400];
	snprintf(path, sizeof(path), "%s/disk-vda", sub);
	size_t n;
	uint8_t *img = slurp(path, &n);
	cr_assert_eq(n, 1 << 20);
	for (size_t i = 0; i < n; i++) {
		uint8_t want = i < 16384 ? (uint8_t)(i * 7) :
			       i >= 1000 * 512 && i < 1000 * 512 + 1024 ? 0x77 :
									  0;
		cr_assert_eq(img[i], want, "byte %zu", i);
	}
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_lt(st.st_blocks * 512, 512 * 1024, "the hole stayed a hole (%lld blocks)",
		     (long long)st.st_blocks);
	/* a second capture into the same directory is refused, not overwritten */
	dfd = open(sub, O_RDONLY | O_DIRECTORY);
	cr_assert_eq(virtio_blk_capture(&dev, dfd, files, err, sizeof(err)), -EEXIST);
	close(dfd);
	free(img);
	json_decref(files);
	unlink(path);
	rmdir(sub);
}

struct extent_list {
	uint64_t off[8], len[8];
	unsigned n;
};

static int add_extent(void *arg, uint64_t off, uint64_t len)
{
	struct extent_list *l = arg;
	cr_assert_lt(l->n, 8);
	l->off[l->n] = off;
	l->len[l->n++] = len;
	return 0;
}

/* A restored VM's disk as a snapshot into the store reads it: over a
 * descriptor the device keeps (a store's image), its bytes as the guest
 * sees them, where they may be non-zero, and which ranges the guest wrote
 * since the restore (the rest is the snapshot's). */
Test(virtio, a_disk_as_the_store_reads_it)
{
	char err[512] = "";
	make_disk(16 * 1024);
	cr_assert_eq(truncate(disk, 1 << 20), 0); /* a hole after 16 KiB */
	int fd = open(disk, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(virtio_blk_create_fd(vm, &dev, "vda", "image of vda", fd, false,
					  VIRTIO_MMIO_BASE, 16, err, sizeof(err)),
		     0, "%s", err);
	close(fd); /* the device holds its own */
	drv_init(1);
	memset(gp(BUFS + 4096, 1024), 0x77, 1024);
	cr_assert_eq(blk_req(1, 1000, 1024, false), 0, "a write into the hole (block 125)");

	const char *name;
	uint64_t size;
	bool ro;
	virtio_blk_info(&dev, &name, &size, &ro);
	cr_assert_str_eq(name, "vda");
	cr_assert_eq(size, 1 << 20);
	cr_assert_not(ro);
	uint8_t *b = malloc(size);
	cr_assert_eq(virtio_blk_read(&dev, 0, b, size), 0);
	for (size_t i = 0; i < size; i++) {
		uint8_t want = i < 16384 ? (uint8_t)(i * 7) :
			       i >= 1000 * 512 && i < 1000 * 512 + 1024 ? 0x77 :
									  0;
		cr_assert_eq(b[i], want, "byte %zu", i);
	}
	cr_assert_eq(virtio_blk_read(&dev, size - 512, b, 1024), -EINVAL, "past the end");
	free(b);
	struct extent_list l = { .n = 0 };
	cr_assert_eq(virtio_blk_populated(&dev, add_extent, &l), 0);
	cr_assert_eq(l.n, 2);
	cr_assert(l.off[0] == 0 && l.len[0] == 16384, "%llu+%llu", (unsigned long long)l.off[0],
		  (unsigned long long)l.len[0]);
	cr_assert(l.off[1] == 125 * 4096 && l.len[1] == 4096, "%llu+%llu",
		  (unsigned long long)l.off[1], (unsigned long long)l.len[1]);
	/* changed: only the 64 KiB chunk holding block 125 */
	for (uint64_t c = 0; c < 16; c++)
		cr_assert_eq(virtio_blk_changed(&dev, c * 65536, 65536), c == 7, "chunk %llu",
			     (unsigned long long)c);
	cr_assert_not(virtio_blk_changed(&dev, 126 * 4096, 4096));
	cr_assert(virtio_blk_changed(&dev, 125 * 4096 + 4095, 1));

	/* not restored: every range may have changed; restored read-only: none */
	static struct virtio_dev plain, rodev;
	cr_assert_eq(virtio_blk_create(vm, &plain, "vdb", disk, false, false,
				       VIRTIO_MMIO_BASE + 0x1000, 17, err, sizeof(err)),
		     0, "%s", err);
	cr_assert(virtio_blk_changed(&plain, 0, 4096));
	cr_assert_eq(virtio_blk_create(vm, &rodev, "vdc", disk, true, true, VIRTIO_MMIO_BASE + 0x2000,
				       18, err, sizeof(err)),
		     0, "%s", err);
	cr_assert_not(virtio_blk_changed(&rodev, 0, 1 << 20));
	/* a device registered where one is fails cleanly (nothing freed twice) */
	static struct virtio_dev again;
	cr_assert_eq(virtio_blk_create(vm, &again, "vdd", disk, false, false,
				       VIRTIO_MMIO_BASE + 0x2000, 19, err, sizeof(err)),
		     -EEXIST);
	virtio_dev_destroy(&again);
	virtio_dev_destroy(&plain);
	virtio_dev_destroy(&rodev);
}

/* hvc0 as the console: what a client of the serial socket sends fills the
 * receive queue's buffers, when there are bytes and when the guest posts
 * buffers; a buffer is not taken without bytes for it. */
Test(virtio, console_input_fills_the_receive_queue)
{
	char err[512] = "", sock[300];

	vm_destroy(vm); /* this test's VM has its console on a socket */
	snprintf(sock, sizeof(sock), "%s/serial.sock", dir);
	struct ut_vm_opts o = { .payload = "hello", .serial_socket = sock };
	cr_assert_eq(ut_vm_create(&o, err, sizeof(err), &vm), 0, "%s", err);
	cr_assert_eq(virtio_console_create(vm, &dev, VIRTIO_MMIO_BASE, 18), 0);
	virtio_console_take_input(&dev);
	drv_init(2);
	/* the guest posts one 4-byte buffer before there is input: kept */
	drv_submit(0, (struct seg[]){ { BUFS, 4, true } }, 1);
	cr_assert_eq(used_idx(0), 0);
	json_t *st = json_pack("{s:o,s:o}", "output", state_json_blob("", 0), "input",
			       state_json_blob("typed!", 6));
	cr_assert_eq(chan_restore(&vm->console, st, err, sizeof(err)), 0, "%s", err);
	json_decref(st);
	vm->console.on_input(vm->console.on_input_arg); /* as the loop does */
	cr_assert_eq(used_idx(0), 1);
	cr_assert_eq(used_len(0, 0), 4);
	cr_assert_eq(memcmp(gp(BUFS, 4), "type", 4), 0);
	cr_assert(mr(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_INT_USED);
	/* the rest when the guest posts another buffer */
	drv_submit(0, (struct seg[]){ { BUFS + 64, 16, true } }, 1);
	cr_assert_eq(used_idx(0), 2);
	cr_assert_eq(used_len(0, 1), 2);
	cr_assert_eq(memcmp(gp(BUFS + 64, 2), "d!", 2), 0);
	unlink(serial);
}

/* ---------------------------------------------------------------- vsock */

#define VS_CID 3
#define VS_HDR 44
#define VS_RXBUF (BUFS + 2 * MiB_) /* receive buffers, 8 KiB apart */
#define VS_TXBUF (BUFS + 4 * MiB_) /* transmit packets, 8 KiB apart */

enum { VS_REQUEST = 1, VS_RESPONSE, VS_RST, VS_SHUTDOWN, VS_RW, VS_CREDIT_UPDATE, VS_CREDIT_REQUEST };

static uint16_t vq_avail[3], vq_seen[3];
static unsigned vq_desc[3], vs_tx_slot, vs_rx_slot;

/* One descriptor on queue q; notifies. */
static void vq_post(unsigned q, uint64_t gpa, uint32_t len, bool write)
{
	uint64_t base = RINGS + q * 3 * 4096ULL;
	uint8_t *desc = gp(base, 16 * QNUM), *avail = gp(base + 4096, 6 + 2 * QNUM);
	uint16_t i = (uint16_t)(vq_desc[q]++ % QNUM), flags = write ? 2 : 0, next = 0;
	memcpy(desc + 16 * i, &gpa, 8);
	memcpy(desc + 16 * i + 8, &len, 4);
	memcpy(desc + 16 * i + 12, &flags, 2);
	memcpy(desc + 16 * i + 14, &next, 2);
	memcpy(avail + 4 + 2 * (vq_avail[q] % QNUM), &i, 2);
	vq_avail[q]++;
	memcpy(avail + 2, &vq_avail[q], 2);
	mw(VIRTIO_MMIO_QUEUE_NOTIFY, q);
}

static void vs_device(const char *path)
{
	char err[512] = "", sock[300];

	vm_destroy(vm); /* this VM has an agent channel */
	snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
	struct ut_vm_opts o = { .payload = "hello", .serial_file = serial, .agent_socket = sock };
	cr_assert_eq(ut_vm_create(&o, err, sizeof(err), &vm), 0, "%s", err);
	cr_assert_eq(virtio_vsock_create(vm, &dev, VS_CID, path, false, VIRTIO_MMIO_BASE, 19, err,
					 sizeof(err)),
		     0, "%s", err);
	drv_init(3);
	memset(vq_avail, 0, sizeof(vq_avail));
	memset(vq_seen, 0, sizeof(vq_seen));
	memset(vq_desc, 0, sizeof(vq_desc));
	vs_tx_slot = vs_rx_slot = 0;
}

/* The guest posts n receive buffers of 4 KiB + header. */
static void vs_post_rx(unsigned n)
{
	for (unsigned i = 0; i < n; i++, vs_rx_slot++)
		vq_post(0, VS_RXBUF + (vs_rx_slot % QNUM) * 8192ULL, 4096 + VS_HDR, true);
}

/* The guest (port sport) sends op to host port dport. */
static void vs_send(uint32_t sport, uint32_t dport, uint16_t op, const void *data, uint32_t len,
		    uint32_t buf_alloc, uint32_t fwd_cnt)
{
	uint64_t gpa = VS_TXBUF + (vs_tx_slot++ % QNUM) * 8192ULL, cid = VS_CID, host = 2;
	uint8_t *p = gp(gpa, VS_HDR + len);
	uint16_t type = 1;
	uint32_t flags = op == VS_SHUTDOWN ? 3 : 0;
	memset(p, 0, VS_HDR);
	memcpy(p, &cid, 8);
	memcpy(p + 8, &host, 8);
	memcpy(p + 16, &sport, 4);
	memcpy(p + 20, &dport, 4);
	memcpy(p + 24, &len, 4);
	memcpy(p + 28, &type, 2);
	memcpy(p + 30, &op, 2);
	memcpy(p + 32, &flags, 4);
	memcpy(p + 36, &buf_alloc, 4);
	memcpy(p + 40, &fwd_cnt, 4);
	if (len)
		memcpy(p + VS_HDR, data, len);
	vq_post(1, gpa, VS_HDR + len, false);
}

struct vs_pkt {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len, flags, buf_alloc, fwd_cnt;
	uint16_t type, op;
	uint8_t data[4096];
};

/* The next packet the device put in a receive buffer: true, or false for none. */
static bool vs_recv(struct vs_pkt *k)
{
	if (used_idx(0) == vq_seen[0])
		return false;
	uint64_t base = RINGS;
	unsigned e = vq_seen[0]++ % QNUM;
	uint32_t id, len;
	memcpy(&id, gp(base + 8192 + 4 + 8 * e, 4), 4);
	memcpy(&len, gp(base + 8192 + 4 + 8 * e + 4, 4), 4);
	uint64_t addr;
	memcpy(&addr, gp(base + 16 * id, 8), 8);
	const uint8_t *p = gp(addr, len);
	cr_assert_geq(len, VS_HDR);
	memcpy(&k->src_cid, p, 8);
	memcpy(&k->dst_cid, p + 8, 8);
	memcpy(&k->src_port, p + 16, 4);
	memcpy(&k->dst_port, p + 20, 4);
	memcpy(&k->len, p + 24, 4);
	memcpy(&k->type, p + 28, 2);
	memcpy(&k->op, p + 30, 2);
	memcpy(&k->flags, p + 32, 4);
	memcpy(&k->buf_alloc, p + 36, 4);
	memcpy(&k->fwd_cnt, p + 40, 4);
	cr_assert_eq(len, VS_HDR + k->len);
	memcpy(k->data, p + VS_HDR, k->len);
	return true;
}

/* The agent channel's queued output (no client is connected). */
static size_t agent_out(char *buf, size_t max)
{
	char err[256];
	json_t *st = NULL;
	uint8_t *b = NULL;
	size_t n = 0;
	cr_assert_eq(chan_save(&vm->agent, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(state_get_blob_any(st, "output", 1 << 20, &b, &n, err, sizeof(err)), 0, "%s", err);
	json_decref(st);
	cr_assert_leq(n, max);
	memcpy(buf, b, n);
	free(b);
	return n;
}

static void agent_in(const char *s)
{
	char err[256];
	json_t *st = json_pack("{s:o,s:o}", "output", state_json_blob("", 0), "input",
			       state_json_blob(s, strlen(s)));
	cr_assert_eq(chan_restore(&vm->agent, st, err, sizeof(err)), 0, "%s", err);
	json_decref(st);
	vm->agent.on_input(vm->agent.on_input_arg); /* as the loop does */
}

Test(virtio, vsock_host_port_1024_is_the_agent_channel)
{
	struct vs_pkt k;
	char out[64];

	vs_device(NULL);
	uint64_t cid = 0;
	const struct bus_range *r = bus_find(&vm->mmio, VIRTIO_MMIO_BASE + 0x100, 8);
	r->io(r->dev, NULL, 0x100, &cid, 8, false);
	cr_assert_eq(cid, VS_CID);
	cr_assert_eq(mr(VIRTIO_MMIO_DEVICE_ID), 19);
	vs_post_rx(8);
	vs_send(50000, 1024, VS_REQUEST, NULL, 0, 8, 0);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RESPONSE);
	cr_assert_eq(k.src_cid, 2);
	cr_assert_eq(k.dst_cid, VS_CID);
	cr_assert_eq(k.src_port, 1024);
	cr_assert_eq(k.dst_port, 50000);
	cr_assert_eq(k.buf_alloc, VSOCK_BUF_ALLOC);
	/* guest -> agent channel */
	vs_send(50000, 1024, VS_RW, "ready!", 6, 8, 0);
	cr_assert_eq(agent_out(out, sizeof(out)), 6);
	cr_assert_eq(memcmp(out, "ready!", 6), 0);
	/* agent channel -> guest, within the guest's 8-byte credit */
	agent_in("0123456789");
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RW, "op %u len %u", k.op, k.len);
	cr_assert_eq(k.len, 8);
	cr_assert_eq(memcmp(k.data, "01234567", 8), 0);
	cr_assert_eq(k.fwd_cnt, 6); /* what we forwarded */
	cr_assert_not(vs_recv(&k));
	/* the guest read them: the rest */
	vs_send(50000, 1024, VS_CREDIT_UPDATE, NULL, 0, 8, 8);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RW);
	cr_assert_eq(k.len, 2);
	cr_assert_eq(memcmp(k.data, "89", 2), 0);
	/* one agent connection at a time */
	vs_send(50001, 1024, VS_REQUEST, NULL, 0, 8, 0);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RST);
	cr_assert_eq(k.dst_port, 50001);
	/* a credit request is answered */
	vs_send(50000, 1024, VS_CREDIT_REQUEST, NULL, 0, 8, 10);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_CREDIT_UPDATE);
	cr_assert_eq(k.fwd_cnt, 6);
}

Test(virtio, vsock_refuses_what_it_cannot_connect_and_resets_a_greedy_guest)
{
	struct vs_pkt k;
	static uint8_t big[VSOCK_BUF_ALLOC / 4];

	vs_device(NULL);
	vs_post_rx(8);
	/* no socket for the Firecracker convention: any other port is refused */
	vs_send(40000, 5000, VS_REQUEST, NULL, 0, 4096, 0);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RST);
	cr_assert_eq(k.src_port, 5000);
	/* data on a connection that does not exist */
	vs_send(40001, 1024, VS_RW, "x", 1, 4096, 0);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RST);
	/* packets that are not from this guest to the host are dropped */
	cr_assert_not(vs_recv(&k));
	/* the agent connection, flooded past the credit: output waits in the
	 * channel (no client), then the connection is reset */
	vs_send(40002, 1024, VS_REQUEST, NULL, 0, 4096, 0);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RESPONSE);
	bool reset = false;
	for (unsigned i = 0; i < 40 && !reset; i++) {
		uint64_t gpa = VS_TXBUF + 8 * MiB_;
		uint8_t *p = gp(gpa, VS_HDR + sizeof(big));
		(void)p;
		vs_send(40002, 1024, VS_RW, big, sizeof(big), 4096, 0);
		while (vs_recv(&k)) {
			reset |= k.op == VS_RST;
			vs_post_rx(1); /* the guest gives back what it took */
		}
	}
	cr_assert(reset, "a guest sending past its credit is reset");
}

Test(virtio, vsock_state_keeps_the_agent_connection_and_resets_the_others)
{
	struct vs_pkt k;
	char err[512] = "";
	char out[64];

	vs_device(NULL);
	vs_post_rx(4);
	vs_send(50000, 1024, VS_REQUEST, NULL, 0, 64, 0);
	cr_assert(vs_recv(&k) && k.op == VS_RESPONSE);
	vs_send(50000, 1024, VS_RW, "abc", 3, 64, 0);
	/* a connection whose host end is a socket, as far as the state goes */
	json_t *st = NULL;
	cr_assert_eq(virtio_save(vm, &dev, &st, err, sizeof(err)), 0, "%s", err);
	json_t *conns = json_object_get(st, "connections");
	cr_assert_eq(json_array_size(conns), 1);
	json_array_append_new(conns, json_pack("{s:b,s:i,s:i}", "agent", 0, "local_port", 6000,
					       "peer_port", 777));
	/* the device takes the unit back, as a restore's does */
	cr_assert_eq(virtio_restore(vm, &dev, st, 1, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(virtio_vsock_attach(&dev, NULL), 0);
	/* the socket connection is reset, the agent's carries on */
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RST);
	cr_assert_eq(k.src_port, 6000);
	cr_assert_eq(k.dst_port, 777);
	vs_send(50000, 1024, VS_RW, "def", 3, 64, 0);
	size_t got = agent_out(out, sizeof(out));
	cr_assert_eq(got, 6, "%zu: %.*s", got, (int)got, out);
	cr_assert_eq(memcmp(out, "abcdef", 6), 0);
	agent_in("hi");
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RW);
	cr_assert_eq(k.dst_port, 50000);
	cr_assert_eq(k.fwd_cnt, 6);
	/* a unit that does not fit is refused with a reason */
	json_object_set_new(st, "guest_cid", state_json_u64(9));
	cr_assert_lt(virtio_restore(vm, &dev, st, 1, err, sizeof(err)), 0);
	cr_assert(strstr(err, "CID"), "%s", err);
	json_object_set_new(st, "guest_cid", state_json_u64(VS_CID));
	json_array_append_new(conns, json_pack("{s:b,s:i,s:i}", "agent", 1, "local_port", 1024,
					       "peer_port", 1));
	cr_assert_lt(virtio_restore(vm, &dev, st, 1, err, sizeof(err)), 0);
	json_decref(st);
}

static int sock_listen(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%.100s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(fd, 4), 0);
	return fd;
}

static int sock_connect(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%.100s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "%s: %s", path, strerror(errno));
	return fd;
}

/* Runs the loop (and the device's service, as VM_NOTIFY_DEV would). */
static void spin(struct loop *l)
{
	for (int i = 0; i < 5; i++) {
		virtio_vsock_service(&dev);
		(void)loop_run_once(l, 20);
	}
}

Test(virtio, vsock_follows_firecrackers_unix_socket_convention)
{
	char path[300], port_path[320], line[64];
	struct vs_pkt k;
	struct loop *l;

	snprintf(path, sizeof(path), "%s/v.sock", dir);
	vs_device(path);
	cr_assert_eq(loop_create(&l), 0);
	cr_assert_eq(virtio_vsock_attach(&dev, l), 0);
	vs_post_rx(8);
	/* host-initiated: CONNECT 5000 */
	int cl = sock_connect(path);
	cr_assert_eq(write(cl, "CONNECT 5000\nearly", 18), 18);
	spin(l);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_REQUEST);
	cr_assert_eq(k.dst_port, 5000);
	uint32_t hport = k.src_port;
	cr_assert_geq(hport, 1U << 30);
	vs_send(5000, hport, VS_RESPONSE, NULL, 0, 4096, 0);
	ssize_t n = read(cl, line, sizeof(line) - 1);
	cr_assert_gt(n, 0);
	line[n] = '\0';
	char want[32];
	snprintf(want, sizeof(want), "OK %u\n", hport);
	cr_assert_str_eq(line, want);
	spin(l);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RW);
	cr_assert_eq(k.len, 5);
	cr_assert_eq(memcmp(k.data, "early", 5), 0);
	vs_send(5000, hport, VS_RW, "pong", 4, 4096, 5);
	cr_assert_eq(read(cl, line, 4), 4);
	cr_assert_eq(memcmp(line, "pong", 4), 0);
	/* the client hangs up: the guest is told */
	close(cl);
	spin(l);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_SHUTDOWN);
	cr_assert_eq(k.flags, 3);
	vs_send(5000, hport, VS_RST, NULL, 0, 4096, 5);
	/* a line that is not CONNECT PORT: the client is closed */
	cl = sock_connect(path);
	cr_assert_eq(write(cl, "HELLO\n", 6), 6);
	spin(l);
	cr_assert_eq(read(cl, line, sizeof(line)), 0);
	close(cl);
	cr_assert_not(vs_recv(&k));
	/* guest-initiated: port 6000 is PATH_6000 */
	snprintf(port_path, sizeof(port_path), "%s_6000", path);
	int ls = sock_listen(port_path);
	vs_send(41000, 6000, VS_REQUEST, NULL, 0, 4096, 0);
	spin(l);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RESPONSE);
	cr_assert_eq(k.src_port, 6000);
	int srv = accept(ls, NULL, NULL);
	cr_assert_geq(srv, 0);
	vs_send(41000, 6000, VS_RW, "to-host", 7, 4096, 0);
	cr_assert_eq(read(srv, line, 7), 7);
	cr_assert_eq(memcmp(line, "to-host", 7), 0);
	cr_assert_eq(write(srv, "back", 4), 4);
	spin(l);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RW);
	cr_assert_eq(memcmp(k.data, "back", 4), 0);
	/* the guest closes first: an RST for it, and the host end reads EOF */
	vs_send(41000, 6000, VS_SHUTDOWN, NULL, 0, 4096, 4);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RST);
	spin(l);
	cr_assert_eq(read(srv, line, sizeof(line)), 0, "the host end sees the connection end");
	/* nothing listens on PATH_6001 */
	vs_send(41001, 6001, VS_REQUEST, NULL, 0, 4096, 0);
	spin(l);
	cr_assert(vs_recv(&k));
	cr_assert_eq(k.op, VS_RST);
	close(srv);
	close(ls);
	unlink(port_path);
	virtio_dev_destroy(&dev);
	memset(&dev, 0, sizeof(dev));
	loop_destroy(l);
	cr_assert_neq(access(path, F_OK), 0, "the socket is removed with the device");
}
