/* vmm/virtio/virtio.h - private: virtio devices of a Linux guest on the
 * virtio-mmio transport (Virtio 1.2, section 4.2: the "modern" register
 * layout, version 2), split virtqueues (section 2.7), and the devices:
 * blk (vda...), console (hvc0), rng and vsock. The guest finds them through the
 * ACPI DSDT (vmm/linux/acpi.c: "LNRO0005", a 4 KiB window and one edge-
 * triggered GSI each).
 *
 * Why MMIO and not PCI: no PCI host bridge, configuration space, BARs or
 * MSI-X to emulate; Debian's stock kernel binds LNRO0005 devices from ACPI
 * (QEMU's microvm machine does the same), and one exit per register access
 * costs the same as PCI's. Firecracker made the same choice.
 *
 * Requests are served on the vCPU thread that wrote QueueNotify, under
 * the device's lock: when every vCPU is parked no request is in flight in
 * the VMM, so a snapshot needs only the transport's registers and each
 * queue's indices (its rings are in guest memory). Every guest-physical
 * address goes through gmem_ptr(); a descriptor chain that is malformed
 * (out of RAM, too long, a loop, wrong direction) puts the device in
 * DEVICE_NEEDS_RESET and is never trusted further. */
#ifndef FORKVM_VMM_VIRTIO_VIRTIO_H
#define FORKVM_VMM_VIRTIO_VIRTIO_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "guest/abi/forkvm_linux.h"

struct vm;

/* Where the devices live: device i at VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE,
 * GSI VIRTIO_GSI_BASE + i (IOAPIC pins above the ISA ones). */
#define VIRTIO_MMIO_BASE 0xd0000000ULL
#define VIRTIO_MMIO_SIZE 0x1000ULL
#define VIRTIO_GSI_BASE 16U
#define VIRTIO_MAX_DEVS 7U

#define VIRTIO_MAX_QUEUES 3U
#define VIRTQ_MAX_SIZE 256U
#define VIRTQ_MAX_SEGS 64U /* descriptors in one chain we take */

/* Device types (5 Device Types). */
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_VSOCK 19

/* Device status bits (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1U
#define VIRTIO_STATUS_DRIVER 2U
#define VIRTIO_STATUS_DRIVER_OK 4U
#define VIRTIO_STATUS_FEATURES_OK 8U
#define VIRTIO_STATUS_NEEDS_RESET 0x40U
#define VIRTIO_STATUS_FAILED 0x80U

#define VIRTIO_F_VERSION_1 (1ULL << 32)
#define VIRTIO_INT_USED 1U
#define VIRTIO_INT_CONFIG 2U

/* virtio-mmio registers (4.2.2). */
#define VIRTIO_MMIO_MAGIC 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_AVAIL_LOW 0x090
#define VIRTIO_MMIO_QUEUE_AVAIL_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_USED_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_USED_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100
#define VIRTIO_MMIO_MAGIC_VALUE 0x74726976U /* "virt" */
#define VIRTIO_MMIO_VENDOR 0x4d564b46U	    /* "FKVM" */

/* One split virtqueue as the driver set it up, plus where the device is
 * in it: plain data, what a snapshot records. */
struct virtq_state {
	uint16_t num; /* entries (a power of 2, <= VIRTQ_MAX_SIZE) */
	bool ready;
	uint64_t desc, avail, used; /* guest-physical addresses of the three parts */
	uint16_t last_avail;	    /* next avail ring entry the device takes */
	uint16_t used_idx;	    /* next used ring entry the device fills */
};

/* The transport's registers: plain data, what a snapshot records. */
struct virtio_mmio_state {
	uint32_t status;
	uint32_t dev_features_sel, drv_features_sel, queue_sel;
	uint64_t drv_features;
	uint32_t isr;
	uint32_t config_gen;
	struct virtq_state q[VIRTIO_MAX_QUEUES];
};

/* One buffer of a request: guest memory the device reads (out) or writes. */
struct virtq_seg {
	uint8_t *p;
	uint32_t len;
	bool write; /* device-writable */
};

/* A descriptor chain taken from the avail ring. */
struct virtq_req {
	uint16_t head;
	unsigned nr;
	struct virtq_seg seg[VIRTQ_MAX_SEGS];
};

struct virtio_dev;

/* What a device type adds to the transport. */
struct virtio_ops {
	const char *kind; /* "virtio-blk": the state unit is kind, or kind:name */
	uint32_t device_id;
	unsigned nr_queues;
	/* Config space access at offset off (reads fill data); the caller
	 * checked off + len against config_len. */
	void (*config)(struct virtio_dev *d, uint32_t off, void *data, unsigned len, bool is_write);
	uint32_t config_len;
	/* The driver notified queue q (it is ready). Takes requests with
	 * virtq_pop() and completes them with virtq_push(). */
	void (*notify)(struct virtio_dev *d, unsigned q);
	/* Device-specific state for snapshots (NULL: none). */
	int (*save)(struct virtio_dev *d, json_t *obj, char *err, size_t errlen);
	int (*restore)(struct virtio_dev *d, const json_t *obj, char *err, size_t errlen);
	/* The driver reset the device (status 0). NULL: nothing beyond the
	 * transport's registers. */
	void (*reset)(struct virtio_dev *d);
	void (*destroy)(struct virtio_dev *d);
};

struct virtio_dev {
	struct vm *vm;
	const struct virtio_ops *ops;
	void *priv;	     /* the device type's own data */
	char unit[32];	     /* state unit name: "virtio-blk:vda" */
	uint64_t features;   /* offered to the driver */
	uint64_t base;
	unsigned gsi;
	pthread_mutex_t lock;
	struct virtio_mmio_state s;
};

/* ------------------------------------------------------------ transport */

/* Sets up d (ops, features, unit name) and registers its registers on
 * vm->mmio at base with interrupt gsi. Returns 0 or -errno. */
int virtio_mmio_register(struct vm *vm, struct virtio_dev *d, const struct virtio_ops *ops,
			 void *priv, uint64_t features, const char *unit, uint64_t base,
			 unsigned gsi) __attribute__((warn_unused_result));
/* Frees what the device type holds. */
void virtio_dev_destroy(struct virtio_dev *d);

/* Takes the next request of queue q: 1 with *r filled, 0 when the queue
 * is empty, -EINVAL for a malformed chain (the device is then marked
 * DEVICE_NEEDS_RESET and the guest told). Caller holds d->lock. */
int virtq_pop(struct virtio_dev *d, unsigned q, struct virtq_req *r);
/* Returns request head to the used ring with written bytes; the
 * interrupt is raised by virtio_interrupt(). Caller holds d->lock. */
void virtq_push(struct virtio_dev *d, unsigned q, uint16_t head, uint32_t written);
/* Serves every request waiting on queue q: serve returns the bytes it
 * wrote into the request's buffers; then one used-buffer interrupt.
 * Caller holds d->lock. */
void virtq_serve(struct virtio_dev *d, unsigned q,
		 uint32_t (*serve)(struct virtio_dev *d, const struct virtq_req *r));
/* Raises the used-buffer interrupt unless the driver asked for none on
 * queue q. Caller holds d->lock. */
void virtio_interrupt(struct virtio_dev *d, unsigned q);

/* Bytes of a request's device-readable (out) buffers from offset off
 * copied to dst, up to len; returns how many were copied. */
size_t virtq_req_read(const struct virtq_req *r, size_t off, void *dst, size_t len);
/* Total bytes of the request's readable or writable buffers. */
size_t virtq_req_len(const struct virtq_req *r, bool write);

/* The state unit of a device ({"transport": ..., "queues": [...], plus
 * the device's own}); arg: the struct virtio_dev. */
int virtio_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen);
int virtio_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
		   size_t errlen);

/* ------------------------------------------------------------ devices */

/* virtio-blk on a raw image (disk name "vda"...). Opens the image (read-
 * only when readonly or cow) and refuses one smaller than a sector. cow:
 * the image is a snapshot's copy, the guest's writes stay in a private
 * layer (see blk.c). Returns 0 or -errno with err set. */
int virtio_blk_create(struct vm *vm, struct virtio_dev *d, const char *name, const char *path,
		      bool readonly, bool cow, uint64_t base, unsigned gsi, char *err,
		      size_t errlen) __attribute__((warn_unused_result));
/* The same, copy-on-write over the read-only descriptor fd (a store's
 * disk image, dup'd: its lock is held while the device lives); path names
 * it in messages. */
int virtio_blk_create_fd(struct vm *vm, struct virtio_dev *d, const char *name, const char *path,
			 int fd, bool readonly, uint64_t base, unsigned gsi, char *err,
			 size_t errlen) __attribute__((warn_unused_result));
/* A disk as a snapshot into the store reads it, the VM paused: its name,
 * size (whole sectors) and mode; len bytes at off as the guest sees them
 * (from several threads at once); the ranges outside of which it reads as
 * zeros; whether [off, off+len) may differ from the snapshot's disk it was
 * restored from (true for a disk not restored from one). */
void virtio_blk_info(const struct virtio_dev *d, const char **name, uint64_t *size, bool *readonly);
int virtio_blk_read(const struct virtio_dev *d, uint64_t off, void *buf, size_t len)
	__attribute__((warn_unused_result));
int virtio_blk_populated(const struct virtio_dev *d,
			 int (*cb)(void *arg, uint64_t off, uint64_t len), void *arg)
	__attribute__((warn_unused_result));
bool virtio_blk_changed(const struct virtio_dev *d, uint64_t off, uint64_t len);
/* Writes the disk as the guest sees it (the image, or base and private
 * writes merged) into dfd as "disk-NAME", sparse and fsynced, and adds its
 * entry ({"kind": "disk", "size", "device", "readonly"}) to files. The VM
 * is paused. Returns 0 or -errno with err set. */
int virtio_blk_capture(struct virtio_dev *d, int dfd, json_t *files, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* virtio-console (hvc0): what the guest writes goes to the VM's console
 * channel, as the serial port's does; input when it takes it. */
int virtio_console_create(struct vm *vm, struct virtio_dev *d, uint64_t base, unsigned gsi)
	__attribute__((warn_unused_result));
/* Makes the console channel's input hvc0's (else its receive queue stays
 * empty). */
void virtio_console_take_input(struct virtio_dev *d);
/* virtio-rng: the host's getrandom(). */
int virtio_rng_create(struct vm *vm, struct virtio_dev *d, uint64_t base, unsigned gsi)
	__attribute__((warn_unused_result));

/* virtio-vsock: guest CID cid; host port VSOCK_AGENT_PORT is the VM's
 * agent channel when it is a socket; path (NULL: none) is the Unix socket
 * of Firecracker's convention (see vsock.c), bound under a temporary name
 * until virtio_vsock_publish() when takeover (a restore). Returns 0 or
 * -errno with err set. */
#define VSOCK_AGENT_PORT FORKVM_AGENT_VSOCK_PORT /* guest/abi/forkvm_linux.h */
#define VSOCK_BUF_ALLOC (256U * 1024) /* what a connection buffers from the guest */
#define VSOCK_MAX_CONNS 64U
int virtio_vsock_create(struct vm *vm, struct virtio_dev *d, uint64_t cid, const char *path,
			bool takeover, uint64_t base, unsigned gsi, char *err, size_t errlen)
	__attribute__((warn_unused_result));
struct loop;
/* Registers the socket on the VM's loop and sends what a restore owes the
 * guest. Returns 0 or -errno. */
int virtio_vsock_attach(struct virtio_dev *d, struct loop *loop) __attribute__((warn_unused_result));
/* Loop thread, after VM_NOTIFY_DEV: connects, closes, re-arms watches. */
void virtio_vsock_service(struct virtio_dev *d);
/* Puts a restore's socket at its path. Returns 0 or -errno. */
int virtio_vsock_publish(struct virtio_dev *d) __attribute__((warn_unused_result));

#endif
