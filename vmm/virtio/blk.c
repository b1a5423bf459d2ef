/* vmm/virtio/blk.c - virtio-blk (Virtio 1.2, 5.2) on a raw image file:
 * reads, writes, flush (fdatasync: what the guest flushed is on the
 * host's disk), the device id; read-only when asked. One request queue;
 * requests are served at once, on the notifying vCPU's thread. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

struct blk {
	int fd;
	bool readonly;
	uint64_t sectors;
	char name[8]; /* vda */
	char path[256];
};

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
		for (size_t done = 0; done < len;) {
			ssize_t n = in ? pread(b->fd, p + done, len - done, (off_t)(pos + done)) :
					 pwrite(b->fd, p + done, len - done, (off_t)(pos + done));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				log_warn("virtio-blk %s: %s at byte %llu: %s", b->name,
					 in ? "read" : "write", (unsigned long long)(pos + done),
					 n < 0 ? strerror(errno) : "end of file");
				return VIRTIO_BLK_S_IOERR;
			}
			done += (size_t)n;
		}
		if (in)
			*written += (uint32_t)len;
		pos += len;
	}
	return VIRTIO_BLK_S_OK;
}

/* Serves one request; returns the bytes written into guest memory. */
static uint32_t blk_request(struct blk *b, const struct virtq_req *r)
{
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
		status = b->readonly || fdatasync(b->fd) == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
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
	struct virtq_req r;
	bool any = false;

	while (virtq_pop(d, q, &r) > 0) {
		virtq_push(d, q, r.head, blk_request(d->priv, &r));
		any = true;
	}
	if (any)
		virtio_interrupt(d, q);
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

static void blk_destroy(struct virtio_dev *d)
{
	struct blk *b = d->priv;
	if (b && b->fd >= 0)
		close(b->fd);
	free(b);
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

int virtio_blk_create(struct vm *vm, struct virtio_dev *d, const char *name, const char *path,
		      bool readonly, uint64_t base, unsigned gsi, char *err, size_t errlen)
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
	b->fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
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
	snprintf(unit, sizeof(unit), "virtio-blk:%s", name);
	uint64_t f = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH | (readonly ? VIRTIO_BLK_F_RO : 0);
	if ((rc = virtio_mmio_register(vm, d, &blk_ops, b, f, unit, base, gsi)) < 0) {
		rc = err_fail(err, errlen, rc, "disk %s: cannot register its device: %s", path,
			  strerror(-rc));
		goto fail;
	}
	return 0;
fail:
	if (b->fd >= 0)
		close(b->fd);
	free(b);
	return rc;
}
