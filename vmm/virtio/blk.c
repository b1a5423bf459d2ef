/* vmm/virtio/blk.c - virtio-blk (Virtio 1.2, 5.2) on a raw image file:
 * reads, writes, flush (fdatasync: what the guest flushed is on the
 * host's disk), the device id; read-only when asked. One request queue;
 * requests are served at once, on the notifying vCPU's thread.
 *
 * Copy-on-write (a VM restored from a snapshot that holds its disk): the
 * snapshot's copy is the read-only base, and what the guest writes goes to
 * a private memfd, one bit per 4 KiB block saying which holds it. Neither
 * the snapshot nor another VM restored from it ever sees those writes; a
 * snapshot of this VM captures base and writes merged (virtio_blk_capture). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/state.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define VIRTIO_BLK_F_SEG_MAX (1ULL << 2)
#define VIRTIO_BLK_F_RO (1ULL << 5)
#define VIRTIO_BLK_F_FLUSH (1ULL << 9)

#define VIRTIO_BLK_T_IN 0U
#define VIRTIO_BLK_T_OUT 1U
#define VIRTIO_BLK_T_FLUSH 4U
#define VIRTIO_BLK_T_GET_ID 8U

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define BLK_SECTOR 512ULL
#define BLK_ID_BYTES 20
#define BLK_CONFIG_LEN 24 /* capacity, size_max, seg_max, geometry, blk_size */
#define BLK_BLOCK 4096ULL /* copy-on-write granularity */

struct blk {
	int fd; /* the image, or with cow_fd its read-only base */
	bool readonly;
	uint64_t sectors;
	int cow_fd;	/* copy-on-write: the blocks written since the restore; -1 */
	uint8_t *dirty; /* one bit per BLK_BLOCK block: its bytes are in cow_fd */
	bool restored;	/* fd is a snapshot's disk (with cow_fd unless readonly) */
	char name[8];	/* vda */
	char path[256];
};

static bool blk_dirty(const struct blk *b, uint64_t block)
{
	return b->dirty[block / 8] & (1U << (block % 8));
}

/* pread or pwrite of all len bytes at pos. Returns 0 or -errno (-EIO at
 * the end of the file). */
static int full_io(int fd, uint8_t *p, size_t len, uint64_t pos, bool write)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = write ? pwrite(fd, p + done, len - done, (off_t)(pos + done)) :
				    pread(fd, p + done, len - done, (off_t)(pos + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* Reads len bytes of the disk at pos: from the image, or block by block
 * from the base or the copy-on-write file, in runs. Returns 0 or -errno. */
static int blk_read(const struct blk *b, uint8_t *p, size_t len, uint64_t pos)
{
	if (b->cow_fd < 0)
		return full_io(b->fd, p, len, pos, false);
	while (len) {
		uint64_t block = pos / BLK_BLOCK;
		bool dirty = blk_dirty(b, block);
		size_t n = 0;
		/* the run of blocks with the same source */
		while (n < len && blk_dirty(b, (pos + n) / BLK_BLOCK) == dirty)
			n += (size_t)MIN(len - n, BLK_BLOCK - (pos + n) % BLK_BLOCK);
		int rc = full_io(dirty ? b->cow_fd : b->fd, p, n, pos, false);
		if (rc < 0)
			return rc;
		p += n;
		pos += n;
		len -= n;
	}
	return 0;
}

/* Copies block from the base into the copy-on-write file (before a write
 * that covers only part of it). */
static int blk_copy_up(struct blk *b, uint64_t block)
{
	uint8_t buf[BLK_BLOCK];
	uint64_t at = block * BLK_BLOCK, size = b->sectors * BLK_SECTOR;
	size_t n = (size_t)MIN(BLK_BLOCK, size - at);
	int rc = full_io(b->fd, buf, n, at, false);

	if (rc == 0)
		rc = full_io(b->cow_fd, buf, n, at, true);
	if (rc == 0)
		b->dirty[block / 8] |= (uint8_t)(1U << (block % 8));
	return rc;
}

/* Writes len bytes at pos: into the image, or into the copy-on-write file
 * (the partial blocks at either end copied up first). Returns 0 or -errno. */
static int blk_write(struct blk *b, const uint8_t *p, size_t len, uint64_t pos)
{
	int rc;

	if (b->cow_fd < 0)
		return full_io(b->fd, (uint8_t *)(uintptr_t)p, len, pos, true);
	uint64_t first = pos / BLK_BLOCK, last = (pos + len - 1) / BLK_BLOCK;
	if ((pos % BLK_BLOCK || len < BLK_BLOCK) && !blk_dirty(b, first) &&
	    (rc = blk_copy_up(b, first)) < 0)
		return rc;
	if ((pos + len) % BLK_BLOCK && !blk_dirty(b, last) && (rc = blk_copy_up(b, last)) < 0)
		return rc;
	if ((rc = full_io(b->cow_fd, (uint8_t *)(uintptr_t)p, len, pos, true)) < 0)
		return rc;
	for (uint64_t i = first; i <= last; i++)
		b->dirty[i / 8] |= (uint8_t)(1U << (i % 8));
	return 0;
}

/* Reads (the guest's IN) or writes (OUT) the request's data buffers at
 * byte offset pos of the image. Returns the status byte's value and adds
 * what the device wrote into guest memory to *written. */
static uint8_t blk_rw(struct blk *b, const struct virtq_req *r, bool in, uint64_t pos,
		      uint32_t *written)
{
	/* Data buffers: after the 16-byte header (readable), before the
	 * status byte (the last writable byte). */
	size_t skip = 16;
	for (unsigned i = 0; i < r->nr; i++) {
		const struct virtq_seg *s = &r->seg[i];
		size_t len = s->len;
		uint8_t *p = s->p;
		if (!s->write) {
			size_t k = MIN(skip, len);
			skip -= k;
			p += k;
			len -= k;
		} else if (i == r->nr - 1) {
			len -= 1; /* the status byte */
		}
		if (len == 0 || s->write != in)
			continue;
		if (pos > b->sectors * BLK_SECTOR || len > b->sectors * BLK_SECTOR - pos)
			return VIRTIO_BLK_S_IOERR;
		int rc = in ? blk_read(b, p, len, pos) : blk_write(b, p, len, pos);
		if (rc < 0) {
			log_warn("virtio-blk %s: %s of %zu bytes at byte %llu: %s", b->name,
				 in ? "read" : "write", len, (unsigned long long)pos, strerror(-rc));
			return VIRTIO_BLK_S_IOERR;
		}
		if (in)
			*written += (uint32_t)len;
		pos += len;
	}
	return VIRTIO_BLK_S_OK;
}

/* Serves one request; returns the bytes written into guest memory. */
static uint32_t blk_request(struct virtio_dev *d, const struct virtq_req *r)
{
	struct blk *b = d->priv;
	uint8_t hdr[16];
	uint32_t type, written = 0;
	uint64_t sector;
	uint8_t status;
	const struct virtq_seg *last = &r->seg[r->nr - 1];

	if (!last->write || last->len < 1)
		return 0; /* no status byte: nothing we can answer */
	if (virtq_req_read(r, 0, hdr, sizeof(hdr)) < sizeof(hdr)) {
		last->p[last->len - 1] = VIRTIO_BLK_S_IOERR;
		return 1;
	}
	memcpy(&type, hdr, 4);
	memcpy(&sector, hdr + 8, 8);
	switch (type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (type == VIRTIO_BLK_T_OUT && b->readonly)
			status = VIRTIO_BLK_S_IOERR;
		else if (sector > b->sectors)
			status = VIRTIO_BLK_S_IOERR;
		else
			status = blk_rw(b, r, type == VIRTIO_BLK_T_IN, sector * BLK_SECTOR, &written);
		break;
	case VIRTIO_BLK_T_FLUSH:
		/* a copy-on-write disk's writes are the VM's own: nothing outlives it */
		status = b->readonly || b->cow_fd >= 0 || fdatasync(b->fd) == 0 ? VIRTIO_BLK_S_OK :
										       VIRTIO_BLK_S_IOERR;
		break;
	case VIRTIO_BLK_T_GET_ID: {
		char id[BLK_ID_BYTES] = { 0 };
		snprintf(id, sizeof(id), "forkvm-%s", b->name);
		status = VIRTIO_BLK_S_OK;
		for (unsigned i = 0, off = 0; i < r->nr && off < BLK_ID_BYTES; i++) {
			const struct virtq_seg *s = &r->seg[i];
			uint32_t room = s == last ? s->len - 1 : s->len;
			if (!s->write)
				continue;
			uint32_t n = MIN(room, BLK_ID_BYTES - off);
			memcpy(s->p, id + off, n);
			off += n;
			written += n;
		}
		break;
	}
	default:
		status = VIRTIO_BLK_S_UNSUPP;
	}
	last->p[last->len - 1] = status;
	return written + 1;
}

static void blk_notify(struct virtio_dev *d, unsigned q)
{
	virtq_serve(d, q, blk_request);
}

static void blk_config(struct virtio_dev *d, uint32_t off, void *data, unsigned len, bool is_write)
{
	const struct blk *b = d->priv;
	uint8_t cfg[BLK_CONFIG_LEN] = { 0 };
	uint32_t seg_max = VIRTQ_MAX_SEGS - 2; /* the header and the status */

	if (is_write)
		return; /* nothing writable without VIRTIO_BLK_F_CONFIG_WCE */
	memcpy(cfg, &b->sectors, 8);
	memcpy(cfg + 12, &seg_max, 4);
	memcpy(data, cfg + off, len);
}

static int blk_save(struct virtio_dev *d, json_t *o, char *err, size_t errlen)
{
	const struct blk *b = d->priv;
	if (json_object_set_new(o, "sectors", state_json_u64(b->sectors)) < 0 ||
	    json_object_set_new(o, "readonly", json_boolean(b->readonly)) < 0)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	return 0;
}

/* The guest's driver knows the disk's size and mode from before the
 * snapshot: an image that changed size under it is refused. */
static int blk_restore(struct virtio_dev *d, const json_t *o, char *err, size_t errlen)
{
	const struct blk *b = d->priv;
	uint64_t sectors;
	bool ro;
	int rc;

	if ((rc = state_get_u64(o, "sectors", &sectors, err, errlen)) < 0 ||
	    (rc = state_get_bool(o, "readonly", &ro, err, errlen)) < 0)
		return rc;
	if (sectors != b->sectors)
		return err_fail(err, errlen, -EINVAL,
			    "disk %s (%s) has %llu sectors; the snapshot's guest saw %llu", b->name,
			    b->path, (unsigned long long)b->sectors, (unsigned long long)sectors);
	if (ro != b->readonly)
		return err_fail(err, errlen, -EINVAL, "disk %s (%s) is %s; the snapshot's guest had it %s",
			    b->name, b->path, b->readonly ? "read-only" : "writable",
			    ro ? "read-only" : "writable");
	return 0;
}

static void blk_free(struct blk *b)
{
	if (!b)
		return;
	if (b->fd >= 0)
		close(b->fd);
	if (b->cow_fd >= 0)
		close(b->cow_fd);
	free(b->dirty);
	free(b);
}

static void blk_destroy(struct virtio_dev *d)
{
	blk_free(d->priv);
	d->priv = NULL;
}

static const struct virtio_ops blk_ops = {
    .kind = "virtio-blk",
    .device_id = VIRTIO_ID_BLOCK,
    .nr_queues = 1,
    .config = blk_config,
    .config_len = BLK_CONFIG_LEN,
    .notify = blk_notify,
    .save = blk_save,
    .restore = blk_restore,
    .destroy = blk_destroy,
};

/* virtio_blk_create and _fd: the image is path, or (fd >= 0) a duplicate
 * of fd, the read-only base of a copy-on-write disk. */
static int blk_create(struct vm *vm, struct virtio_dev *d, const char *name, const char *path,
		      int fd, bool readonly, bool cow, uint64_t base, unsigned gsi, char *err,
		      size_t errlen)
{
	struct blk *b = calloc(1, sizeof(*b));
	struct stat st;
	char unit[32];
	int rc;

	if (!b)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	snprintf(b->name, sizeof(b->name), "%s", name);
	snprintf(b->path, sizeof(b->path), "%s", path);
	b->readonly = readonly;
	b->restored = cow;
	b->cow_fd = -1;
	b->fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) :
			  open(path, (readonly || cow ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (b->fd < 0) {
		rc = err_fail(err, errlen, -errno, "disk %s: %s", path, strerror(errno));
		goto fail;
	}
	if (fstat(b->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = err_fail(err, errlen, -EINVAL, "disk %s: not a regular file (a raw image)", path);
		goto fail;
	}
	if ((uint64_t)st.st_size < BLK_SECTOR) {
		rc = err_fail(err, errlen, -EINVAL,
			  "disk %s is %lld bytes: too small for a disk (at least one 512-byte sector)",
			  path, (long long)st.st_size);
		goto fail;
	}
	b->sectors = (uint64_t)st.st_size / BLK_SECTOR;
	if ((uint64_t)st.st_size % BLK_SECTOR)
		log_warn("disk %s: %lld bytes is not a whole number of sectors; the guest sees %llu",
			 path, (long long)st.st_size, (unsigned long long)b->sectors);
	if (cow && !readonly) {
		uint64_t blocks = (b->sectors * BLK_SECTOR + BLK_BLOCK - 1) / BLK_BLOCK;
		b->cow_fd = memfd_create("forkvm-disk-cow", MFD_CLOEXEC);
		b->dirty = calloc((size_t)(blocks + 7) / 8, 1);
		if (b->cow_fd < 0 || !b->dirty ||
		    ftruncate(b->cow_fd, (off_t)(b->sectors * BLK_SECTOR)) < 0) {
			rc = err_fail(err, errlen, b->dirty ? -errno : -ENOMEM,
				  "disk %s: cannot make its copy-on-write layer: %s", path,
				  strerror(b->dirty ? errno : ENOMEM));
			goto fail;
		}
	}
	snprintf(unit, sizeof(unit), "virtio-blk:%s", name);
	uint64_t f = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH | (readonly ? VIRTIO_BLK_F_RO : 0);
	if ((rc = virtio_mmio_register(vm, d, &blk_ops, b, f, unit, base, gsi)) < 0) {
		rc = err_fail(err, errlen, rc, "disk %s: cannot register its device: %s", path,
			  strerror(-rc));
		d->ops = NULL; /* not a device: virtio_dev_destroy must not free b again */
		d->priv = NULL;
		goto fail;
	}
	return 0;
fail:
	blk_free(b);
	return rc;
}

int virtio_blk_create(struct vm *vm, struct virtio_dev *d, const char *name, const char *path,
		      bool readonly, bool cow, uint64_t base, unsigned gsi, char *err, size_t errlen)
{
	return blk_create(vm, d, name, path, -1, readonly, cow, base, gsi, err, errlen);
}

int virtio_blk_create_fd(struct vm *vm, struct virtio_dev *d, const char *name, const char *path,
			 int fd, bool readonly, uint64_t base, unsigned gsi, char *err, size_t errlen)
{
	if (fd < 0)
		return err_fail(err, errlen, -EBADF, "disk %s: no image", path);
	return blk_create(vm, d, name, path, fd, readonly, true, base, gsi, err, errlen);
}

void virtio_blk_info(const struct virtio_dev *d, const char **name, uint64_t *size, bool *readonly)
{
	const struct blk *b = d->priv;
	*name = b->name;
	*size = b->sectors * BLK_SECTOR;
	*readonly = b->readonly;
}

int virtio_blk_read(const struct virtio_dev *d, uint64_t off, void *buf, size_t len)
{
	const struct blk *b = d->priv;
	if (off > b->sectors * BLK_SECTOR || len > b->sectors * BLK_SECTOR - off)
		return -EINVAL;
	return blk_read(b, buf, len, off);
}

/* Calls cb for each run of blocks written since the restore (none without
 * a copy-on-write layer), stopping at its first error. */
static int blk_dirty_runs(const struct blk *b, int (*cb)(void *arg, uint64_t off, uint64_t len),
			  void *arg)
{
	uint64_t size = b->sectors * BLK_SECTOR, blocks = (size + BLK_BLOCK - 1) / BLK_BLOCK;
	int rc = 0;

	for (uint64_t i = 0; rc == 0 && b->cow_fd >= 0 && i < blocks;) {
		if (!blk_dirty(b, i)) {
			i++;
			continue;
		}
		uint64_t j = i;
		while (j < blocks && blk_dirty(b, j))
			j++;
		rc = cb(arg, i * BLK_BLOCK, MIN(j * BLK_BLOCK, size) - i * BLK_BLOCK);
		i = j;
	}
	return rc;
}

int virtio_blk_populated(const struct virtio_dev *d,
			 int (*cb)(void *arg, uint64_t off, uint64_t len), void *arg)
{
	const struct blk *b = d->priv;
	/* the image's data extents, then the blocks written since the restore */
	int rc = fd_data_extents(b->fd, b->sectors * BLK_SECTOR, BLK_BLOCK, cb, arg);
	return rc == 0 ? blk_dirty_runs(b, cb, arg) : rc;
}

bool virtio_blk_changed(const struct virtio_dev *d, uint64_t off, uint64_t len)
{
	const struct blk *b = d->priv;
	uint64_t size = b->sectors * BLK_SECTOR;
	if (!b->restored)
		return true;
	if (b->cow_fd < 0 || off >= size || !len)
		return false; /* read-only: as restored */
	uint64_t last = (MIN(off + len, size) - 1) / BLK_BLOCK;
	for (uint64_t i = off / BLK_BLOCK; i <= last; i++)
		if (blk_dirty(b, i))
			return true;
	return false;
}

/* Copies [off, off+len) of fd to the same place in out, in the kernel
 * where it can (copy_file_range: a reflink on filesystems that share
 * blocks). Returns 0 or -errno. */
static int copy_range(int fd, int out, uint64_t off, uint64_t len)
{
	while (len) {
		loff_t in_off = (loff_t)off, out_off = (loff_t)off;
		ssize_t n = copy_file_range(fd, &in_off, out, &out_off, (size_t)MIN(len, 1ULL << 30), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP ||
			      errno == EINVAL)) {
			uint8_t buf[64 * 1024];
			size_t k = (size_t)MIN(len, sizeof(buf));
			int rc = full_io(fd, buf, k, off, false);
			if (rc == 0)
				rc = full_io(out, buf, k, off, true);
			if (rc < 0)
				return rc;
			n = (ssize_t)k;
		} else if (n <= 0) {
			return n < 0 ? -errno : -EIO;
		}
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

struct copy_arg {
	int fd, out;
};

/* One extent of fd (the disk's image, or its private layer) into the
 * snapshot's copy. */
static int copy_extent(void *arg, uint64_t off, uint64_t len)
{
	const struct copy_arg *a = arg;
	return copy_range(a->fd, a->out, off, len);
}

int virtio_blk_capture(struct virtio_dev *d, int dfd, json_t *files, char *err, size_t errlen)
{
	const struct blk *b = d->priv;
	uint64_t size = b->sectors * BLK_SECTOR;
	char file[32];
	int rc = 0;

	snprintf(file, sizeof(file), "disk-%s", b->name);
	int out = openat(dfd, file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return err_fail(err, errlen, -errno, "%s: %s", file, strerror(errno));
	if (ftruncate(out, (off_t)size) < 0)
		rc = -errno;
	/* the image's data extents (holes stay holes) */
	struct copy_arg ca = { b->fd, out };
	if (rc == 0)
		rc = fd_data_extents(b->fd, size, 1, copy_extent, &ca);
	/* then the blocks written since the restore, from the private layer */
	struct copy_arg cow = { b->cow_fd, out };
	if (rc == 0)
		rc = blk_dirty_runs(b, copy_extent, &cow);
	if (rc == 0 && fsync(out) < 0)
		rc = -errno;
	if (close(out) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		return err_fail(err, errlen, rc, "cannot copy disk %s (%s) into the snapshot: %s",
			    b->name, b->path, strerror(-rc));
	json_t *e = json_pack("{s:s,s:I,s:s,s:b}", "kind", "disk", "size", (json_int_t)size,
			      "device", b->name, "readonly", b->readonly);
	if (!e || json_object_set_new(files, file, e) < 0)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	return 0;
}
