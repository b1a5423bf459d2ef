/* vmm/virtio/mmio.c - the virtio-mmio transport (version 2) and split
 * virtqueues, shared by every virtio device. See virtio.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/gmem.h"
#include "vmm/platform.h"
#include "vmm/state.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define VRING_DESC_F_NEXT 1U
#define VRING_DESC_F_WRITE 2U
#define VRING_DESC_F_INDIRECT 4U
#define VRING_AVAIL_F_NO_INTERRUPT 1U

/* A split virtqueue's parts in guest memory (2.7). */
struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static size_t desc_bytes(uint16_t num) { return 16U * num; }
static size_t avail_bytes(uint16_t num) { return 6U + 2U * num; }
static size_t used_bytes(uint16_t num) { return 6U + 8U * num; }

/* 0 when queue state q is one a device may use: its size a power of 2 up
 * to VIRTQ_MAX_SIZE and its three parts aligned inside guest RAM. */
static int virtq_check(struct vm *vm, const struct virtq_state *q)
{
	if (q->num == 0 || q->num > VIRTQ_MAX_SIZE || (q->num & (q->num - 1)))
		return -EINVAL;
	if ((q->desc & 15) || (q->avail & 1) || (q->used & 3))
		return -EINVAL;
	if (!gmem_ptr(&vm->mem, q->desc, desc_bytes(q->num)) ||
	    !gmem_ptr(&vm->mem, q->avail, avail_bytes(q->num)) ||
	    !gmem_ptr(&vm->mem, q->used, used_bytes(q->num)))
		return -EFAULT;
	return 0;
}

/* The guest broke the queue protocol: the device stops serving until the
 * driver resets it (2.1.2). */
static void virtio_needs_reset(struct virtio_dev *d, const char *why)
{
	log_warn("%s: %s; the device needs a reset", d->unit, why); /* rate-limited */
	d->s.status |= VIRTIO_STATUS_NEEDS_RESET;
	if (d->s.status & VIRTIO_STATUS_DRIVER_OK) {
		d->s.isr |= VIRTIO_INT_CONFIG;
		vm_irq_pulse(d->vm, d->gsi);
	}
}

int virtq_pop(struct virtio_dev *d, unsigned qi, struct virtq_req *r)
{
	struct virtq_state *q = &d->s.q[qi];
	struct gmem *m = &d->vm->mem;
	uint8_t *avail = gmem_ptr(m, q->avail, avail_bytes(q->num));
	uint8_t *table = gmem_ptr(m, q->desc, desc_bytes(q->num));

	if (!q->ready || !avail || !table || (d->s.status & VIRTIO_STATUS_NEEDS_RESET))
		return 0;
	uint16_t idx = __atomic_load_n((uint16_t *)(void *)(avail + 2), __ATOMIC_ACQUIRE);
	if (idx == q->last_avail)
		return 0;
	if ((uint16_t)(idx - q->last_avail) > q->num) {
		virtio_needs_reset(d, "the avail ring's index ran more than a ring ahead");
		return -EINVAL;
	}
	uint16_t head;
	memcpy(&head, avail + 4 + 2 * (q->last_avail % q->num), 2);
	if (head >= q->num) {
		virtio_needs_reset(d, "a request's head descriptor is outside the ring");
		return -EINVAL;
	}
	r->head = head;
	r->nr = 0;
	uint16_t i = head;
	for (unsigned n = 0;; n++) {
		struct vring_desc desc;
		if (n >= q->num || n >= VIRTQ_MAX_SEGS) {
			virtio_needs_reset(d, "a descriptor chain is longer than the ring or loops");
			return -EINVAL;
		}
		memcpy(&desc, table + 16 * i, sizeof(desc));
		if (desc.flags & VRING_DESC_F_INDIRECT) {
			virtio_needs_reset(d, "an indirect descriptor (not offered)");
			return -EINVAL;
		}
		uint8_t *p = gmem_ptr(m, desc.addr, desc.len ? desc.len : 1);
		if (!p) {
			virtio_needs_reset(d, "a buffer outside guest RAM");
			return -EINVAL;
		}
		r->seg[r->nr++] = (struct virtq_seg){ p, desc.len, (desc.flags & VRING_DESC_F_WRITE) != 0 };
		if (!(desc.flags & VRING_DESC_F_NEXT))
			break;
		if (desc.next >= q->num) {
			virtio_needs_reset(d, "a descriptor's next is outside the ring");
			return -EINVAL;
		}
		i = desc.next;
	}
	q->last_avail++;
	return 1;
}

void virtq_push(struct virtio_dev *d, unsigned qi, uint16_t head, uint32_t written)
{
	struct virtq_state *q = &d->s.q[qi];
	uint8_t *used = gmem_ptr(&d->vm->mem, q->used, used_bytes(q->num));

	if (!used)
		return;
	uint8_t *e = used + 4 + 8 * (q->used_idx % q->num);
	uint32_t id = head;
	memcpy(e, &id, 4);
	memcpy(e + 4, &written, 4);
	q->used_idx++;
	__atomic_store_n((uint16_t *)(void *)(used + 2), q->used_idx, __ATOMIC_RELEASE);
}

void virtq_serve(struct virtio_dev *d, unsigned q,
		 uint32_t (*serve)(struct virtio_dev *d, const struct virtq_req *r))
{
	struct virtq_req r;
	bool any = false;

	while (virtq_pop(d, q, &r) > 0) {
		virtq_push(d, q, r.head, serve(d, &r));
		any = true;
	}
	if (any)
		virtio_interrupt(d, q);
}

void virtio_interrupt(struct virtio_dev *d, unsigned qi)
{
	struct virtq_state *q = &d->s.q[qi];
	uint8_t *avail = gmem_ptr(&d->vm->mem, q->avail, avail_bytes(q->num));
	uint16_t flags = 0;

	/* The used index is visible before the flags are read (2.7.7.2). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (avail)
		flags = __atomic_load_n((uint16_t *)(void *)avail, __ATOMIC_ACQUIRE);
	if (flags & VRING_AVAIL_F_NO_INTERRUPT)
		return;
	d->s.isr |= VIRTIO_INT_USED;
	vm_irq_pulse(d->vm, d->gsi);
}

size_t virtq_req_read(const struct virtq_req *r, size_t off, void *dst, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < r->nr && done < len; i++) {
		if (r->seg[i].write)
			continue;
		if (off >= r->seg[i].len) {
			off -= r->seg[i].len;
			continue;
		}
		size_t n = MIN(r->seg[i].len - off, len - done);
		memcpy((uint8_t *)dst + done, r->seg[i].p + off, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t virtq_req_len(const struct virtq_req *r, bool write)
{
	size_t n = 0;
	for (unsigned i = 0; i < r->nr; i++)
		if (r->seg[i].write == write)
			n += r->seg[i].len;
	return n;
}

/* ------------------------------------------------------------ registers */

static void virtio_reset(struct virtio_dev *d)
{
	if (d->ops->reset)
		d->ops->reset(d);
	memset(&d->s, 0, sizeof(d->s));
}

static uint32_t reg_read(struct virtio_dev *d, uint64_t off)
{
	const struct virtio_mmio_state *s = &d->s;
	const struct virtq_state *q = s->queue_sel < d->ops->nr_queues ? &s->q[s->queue_sel] : NULL;

	switch (off) {
	case VIRTIO_MMIO_MAGIC:
		return VIRTIO_MMIO_MAGIC_VALUE;
	case VIRTIO_MMIO_VERSION:
		return 2;
	case VIRTIO_MMIO_DEVICE_ID:
		return d->ops->device_id;
	case VIRTIO_MMIO_VENDOR_ID:
		return VIRTIO_MMIO_VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		return s->dev_features_sel == 0 ? (uint32_t)d->features :
		       s->dev_features_sel == 1 ? (uint32_t)(d->features >> 32) : 0;
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		return q ? VIRTQ_MAX_SIZE : 0;
	case VIRTIO_MMIO_QUEUE_READY:
		return q && q->ready;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		return s->isr;
	case VIRTIO_MMIO_STATUS:
		return s->status;
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return s->config_gen;
	}
	return 0; /* write-only and reserved registers read as 0 */
}

/* The driver sets FEATURES_OK: accepted only for a subset of what we
 * offer that includes VIRTIO_F_VERSION_1 (no legacy interface). */
static uint32_t status_accept(struct virtio_dev *d, uint32_t v)
{
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(d->s.status & VIRTIO_STATUS_FEATURES_OK)) {
		uint64_t f = d->s.drv_features;
		if ((f & ~d->features) || !(f & VIRTIO_F_VERSION_1)) {
			log_info("%s: driver features 0x%llx refused (offered 0x%llx)", d->unit,
				 (unsigned long long)f, (unsigned long long)d->features);
			v &= ~VIRTIO_STATUS_FEATURES_OK;
		}
	}
	return v | (d->s.status & VIRTIO_STATUS_NEEDS_RESET);
}

static void set_half(uint64_t *v, bool high, uint32_t x)
{
	*v = high ? (*v & 0xffffffffULL) | ((uint64_t)x << 32) : (*v & ~0xffffffffULL) | x;
}

static void reg_write(struct virtio_dev *d, uint64_t off, uint32_t v)
{
	struct virtio_mmio_state *s = &d->s;
	struct virtq_state *q = s->queue_sel < d->ops->nr_queues ? &s->q[s->queue_sel] : NULL;
	bool q_setup = q && !q->ready;

	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		s->dev_features_sel = v;
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		if (!(s->status & VIRTIO_STATUS_FEATURES_OK) && s->drv_features_sel < 2)
			set_half(&s->drv_features, s->drv_features_sel == 1, v);
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		s->drv_features_sel = v;
		break;
	case VIRTIO_MMIO_QUEUE_SEL:
		s->queue_sel = v;
		break;
	case VIRTIO_MMIO_QUEUE_NUM:
		if (q_setup)
			q->num = v > 0xffff ? 0 : (uint16_t)v;
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (!q)
			break;
		if (v == 0) {
			q->ready = false;
		} else if (!q->ready) {
			if (virtq_check(d->vm, q) < 0) {
				log_warn("%s: queue %u refused: size %u or its rings are not in guest RAM",
					 d->unit, s->queue_sel, q->num);
				break;
			}
			q->ready = true;
		}
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		if (v < d->ops->nr_queues && s->q[v].ready &&
		    (s->status & VIRTIO_STATUS_DRIVER_OK) && !(s->status & VIRTIO_STATUS_NEEDS_RESET))
			d->ops->notify(d, v);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		s->isr &= ~v;
		break;
	case VIRTIO_MMIO_STATUS:
		if (v == 0)
			virtio_reset(d);
		else
			s->status = status_accept(d, v);
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		if (q_setup)
			set_half(&q->desc, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
	case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
		if (q_setup)
			set_half(&q->avail, off == VIRTIO_MMIO_QUEUE_AVAIL_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_USED_LOW:
	case VIRTIO_MMIO_QUEUE_USED_HIGH:
		if (q_setup)
			set_half(&q->used, off == VIRTIO_MMIO_QUEUE_USED_HIGH, v);
		break;
	}
}

static enum vcpu_action virtio_mmio_io(void *dev, struct vcpu *v, uint64_t off, void *data,
				       unsigned len, bool is_write)
{
	struct virtio_dev *d = dev;

	(void)v;
	pthread_mutex_lock(&d->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint64_t c = off - VIRTIO_MMIO_CONFIG;
		if (c < d->ops->config_len && len <= d->ops->config_len - c && d->ops->config)
			d->ops->config(d, (uint32_t)c, data, len, is_write);
		else if (!is_write)
			memset(data, 0, len);
	} else if (len == 4 && !(off & 3)) {
		uint32_t x;
		if (is_write) {
			memcpy(&x, data, 4);
			reg_write(d, off, x);
		} else {
			x = reg_read(d, off);
			memcpy(data, &x, 4);
		}
	} else if (!is_write) {
		memset(data, 0, len); /* registers take 32-bit accesses only (4.2.2.2) */
	}
	pthread_mutex_unlock(&d->lock);
	return VCPU_CONTINUE;
}

int virtio_mmio_register(struct vm *vm, struct virtio_dev *d, const struct virtio_ops *ops,
			 void *priv, uint64_t features, const char *unit, uint64_t base,
			 unsigned gsi)
{
	int rc;

	memset(d, 0, sizeof(*d));
	d->vm = vm;
	d->ops = ops;
	d->priv = priv;
	d->features = features | VIRTIO_F_VERSION_1;
	d->base = base;
	d->gsi = gsi;
	snprintf(d->unit, sizeof(d->unit), "%s", unit);
	if ((rc = pthread_mutex_init(&d->lock, NULL)) != 0)
		return -rc;
	rc = bus_register(&vm->mmio, base, VIRTIO_MMIO_SIZE, ops->kind, virtio_mmio_io, d);
	if (rc < 0)
		pthread_mutex_destroy(&d->lock);
	return rc;
}

void virtio_dev_destroy(struct virtio_dev *d)
{
	if (!d->ops)
		return;
	if (d->ops->destroy)
		d->ops->destroy(d);
	pthread_mutex_destroy(&d->lock);
	d->ops = NULL;
}

/* ------------------------------------------------------------ state */

int virtio_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	struct virtio_dev *d = arg;
	const struct virtio_mmio_state *s = &d->s;
	json_t *qs = json_array();
	int rc;

	(void)vm;
	for (unsigned i = 0; qs && i < d->ops->nr_queues; i++) {
		const struct virtq_state *q = &s->q[i];
		if (json_array_append_new(qs, json_pack("{s:i,s:b,s:o,s:o,s:o,s:i,s:i}", "num", q->num,
							"ready", q->ready, "desc",
							state_json_u64(q->desc), "avail",
							state_json_u64(q->avail), "used",
							state_json_u64(q->used), "last_avail",
							q->last_avail, "used_idx", q->used_idx)) < 0) {
			json_decref(qs);
			qs = NULL;
		}
	}
	json_t *o = qs ? json_pack("{s:o,s:i,s:i,s:i,s:i,s:o,s:o,s:i,s:i,s:o}", "features",
				   state_json_u64(d->features), "status", s->status,
				   "dev_features_sel", s->dev_features_sel, "drv_features_sel",
				   s->drv_features_sel, "queue_sel", s->queue_sel, "drv_features",
				   state_json_u64(s->drv_features), "isr", json_integer(s->isr),
				   "config_gen", s->config_gen, "gsi", d->gsi, "queues", qs) :
			 NULL;
	if (!o)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	if (d->ops->save && (rc = d->ops->save(d, o, err, errlen)) < 0) {
		json_decref(o);
		return rc;
	}
	*out = o;
	return 0;
}

static int queue_restore(struct virtio_dev *d, const json_t *j, unsigned i, struct virtq_state *q,
			 char *err, size_t errlen)
{
	uint32_t num, last, used;
	int rc;

	if (!json_is_object(j))
		return err_fail(err, errlen, -EINVAL, "queue %u is not an object", i);
	if ((rc = state_get_u32(j, "num", &num, err, errlen)) < 0 ||
	    (rc = state_get_bool(j, "ready", &q->ready, err, errlen)) < 0 ||
	    (rc = state_get_u64(j, "desc", &q->desc, err, errlen)) < 0 ||
	    (rc = state_get_u64(j, "avail", &q->avail, err, errlen)) < 0 ||
	    (rc = state_get_u64(j, "used", &q->used, err, errlen)) < 0 ||
	    (rc = state_get_u32(j, "last_avail", &last, err, errlen)) < 0 ||
	    (rc = state_get_u32(j, "used_idx", &used, err, errlen)) < 0)
		return rc;
	if (num > VIRTQ_MAX_SIZE || last > 0xffff || used > 0xffff)
		return err_fail(err, errlen, -EINVAL, "queue %u: size %u or an index out of range", i,
			    num);
	q->num = (uint16_t)num;
	q->last_avail = (uint16_t)last;
	q->used_idx = (uint16_t)used;
	if (q->ready && virtq_check(d->vm, q) < 0)
		return err_fail(err, errlen, -EINVAL,
			    "queue %u: size %u or its rings are not in guest RAM", i, num);
	return 0;
}

int virtio_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
		   size_t errlen)
{
	struct virtio_dev *d = arg;
	struct virtio_mmio_state s;
	const json_t *qs = json_object_get(st, "queues");
	uint64_t offered;
	uint32_t gsi;
	int rc;

	(void)vm;
	(void)version;
	memset(&s, 0, sizeof(s));
	if ((rc = state_get_u64(st, "features", &offered, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "status", &s.status, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "dev_features_sel", &s.dev_features_sel, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "drv_features_sel", &s.drv_features_sel, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "queue_sel", &s.queue_sel, err, errlen)) < 0 ||
	    (rc = state_get_u64(st, "drv_features", &s.drv_features, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "isr", &s.isr, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "config_gen", &s.config_gen, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "gsi", &gsi, err, errlen)) < 0)
		return rc;
	if (gsi != d->gsi)
		return err_fail(err, errlen, -EINVAL,
			    "the device was on interrupt %u and is on %u here: the machine's devices "
			    "changed since the snapshot",
			    gsi, d->gsi);
	if (s.drv_features & ~d->features)
		return err_fail(err, errlen, -EINVAL,
			    "the guest's driver uses features 0x%llx this device does not offer "
			    "(0x%llx): was the disk made read-only since the snapshot?",
			    (unsigned long long)(s.drv_features & ~d->features),
			    (unsigned long long)d->features);
	if (!json_is_array(qs) || json_array_size(qs) != d->ops->nr_queues)
		return err_fail(err, errlen, -EINVAL, "queues: expected an array of %u", d->ops->nr_queues);
	for (unsigned i = 0; i < d->ops->nr_queues; i++)
		if ((rc = queue_restore(d, json_array_get(qs, i), i, &s.q[i], err, errlen)) < 0)
			return rc;
	if (d->ops->restore && (rc = d->ops->restore(d, st, err, errlen)) < 0)
		return rc;
	d->s = s;
	return 0;
}
