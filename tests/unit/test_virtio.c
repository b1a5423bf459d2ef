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
#include <sys/stat.h>
#include <unistd.h>

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
