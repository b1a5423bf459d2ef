/* vmm/virtio/vsock.c - virtio-vsock (Virtio 1.2, 5.10): stream sockets
 * between the guest (its CID from --vsock cid=N) and the host (CID 2).
 *
 * Where a connection's host end is:
 * - Host port VSOCK_AGENT_PORT (1024), when the VM has an agent channel
 *   (--agent socket=PATH): the guest's connection to it IS the agent
 *   channel. Its bytes go through vm->agent (vmm/chan.h), the same channel
 *   a function guest's fd 0/1 use, so forkd and forkctl talk to a Linux
 *   guest's agent as to a function guest's. The channel belongs to the
 *   VMM, so this connection survives a snapshot and restore: its state
 *   (ports, credit counters, bytes in flight) is in the "vsock" unit, and
 *   the guest's agent keeps its socket across restores.
 * - Firecracker's convention, with --vsock ...,socket=PATH: a client of
 *   PATH writes "CONNECT PORT\n", the guest gets a connection request to
 *   its PORT, and when it accepts, the client reads "OK HOSTPORT\n" and
 *   the stream follows. A guest's connection to host port P is connected
 *   to the Unix socket PATH_P (refused, RST, when nothing listens there).
 *   Those host sockets cannot be snapshotted: a restored guest gets an RST
 *   for each (instead of a transport reset event, which would also end
 *   the agent's connection).
 *
 * Flow control is the protocol's credit: the guest may send us at most
 * VSOCK_BUF_ALLOC bytes we have not forwarded (we tell it fwd_cnt in every
 * packet, and in a CREDIT_UPDATE when it may be waiting), and we send it no
 * more than its buf_alloc allows. A guest that exceeds its credit gets an
 * RST.
 *
 * Threads: the transmit queue is served on the notifying vCPU; the loop
 * thread accepts clients, connects guest-initiated connections, watches
 * host sockets and closes them (only it touches the loop: a vCPU asks with
 * vm_notify(VM_NOTIFY_DEV)). Everything here is under the device's lock,
 * taken before vm->lock. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/unixsock.h"
#include "common/util.h"
#include "vmm/chan.h"
#include "vmm/linux/bytes.h"
#include "vmm/state.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

#define VSOCK_RX 0U
#define VSOCK_TX 1U
#define VSOCK_EVT 2U

#define VSOCK_HOST_CID 2U
#define VSOCK_TYPE_STREAM 1U
#define VSOCK_HDR_LEN 44U
#define VSOCK_SHUT_RCV 1U
#define VSOCK_SHUT_SEND 2U

enum {
	OP_INVALID,
	OP_REQUEST,
	OP_RESPONSE,
	OP_RST,
	OP_SHUTDOWN,
	OP_RW,
	OP_CREDIT_UPDATE,
	OP_CREDIT_REQUEST,
};

/* Host ports we pick for host-initiated connections (Firecracker's range). */
#define VSOCK_LOCAL_PORT_BASE (1U << 30)
#define VSOCK_SCRATCH (64U * 1024)

enum vc_state {
	VC_FREE,
	VC_HELLO,   /* a client of the socket; its "CONNECT PORT\n" not read yet */
	VC_CONNECT, /* the guest asked for host port lport: the loop connects PATH_lport */
	VC_REQUEST, /* host-initiated: REQUEST to send or sent, waiting for RESPONSE */
	VC_OPEN,    /* established (RESPONSE sent or received) */
	VC_CLOSING, /* an RST or SHUTDOWN is all that is left to send */
	VC_DEAD,    /* over: the loop thread closes fd and frees the slot */
};

/* Packets owed to the guest (bits of vconn.pend). */
#define PEND_REQUEST 1U
#define PEND_RESPONSE 2U
#define PEND_SHUTDOWN 4U
#define PEND_RST 8U
#define PEND_CREDIT 16U

struct vsock;

struct vconn {
	struct vsock *vs;
	enum vc_state st;
	unsigned pend;
	bool agent;        /* the host end is vm->agent */
	int fd;            /* the host end's Unix socket, or -1 */
	uint32_t watched;  /* loop thread: the events fd is registered for (0: none) */
	uint32_t lport;    /* host port */
	uint32_t pport;    /* guest port */
	/* host -> guest: the guest's buffer and what it consumed; what we sent */
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
	/* guest -> host: received, forwarded to the host end, last fwd_cnt told */
	uint32_t rx_cnt, fwd_cnt, fwd_told;
	uint8_t *buf; /* received, not yet forwarded (VSOCK_BUF_ALLOC bytes) */
	uint32_t buf_len;
	bool host_eof;     /* the host end sent everything it will */
	bool guest_done;   /* the guest sends no more (SHUTDOWN SEND) */
	bool shut_wr;      /* loop thread: the host socket's sending side is shut */
	char hello[32];
	unsigned hello_len;
};

struct vsock {
	struct virtio_dev *d;
	uint64_t cid;
	bool agent_port;   /* vm->agent is a socket channel: port 1024 is it */
	char *path;        /* Firecracker convention: the socket, NULL: none */
	struct unixsock sock;
	bool sock_open, sock_watched;
	struct loop *loop;
	uint32_t next_port;
	struct vconn c[VSOCK_MAX_CONNS];
	uint8_t scratch[VSOCK_SCRATCH];
};

static uint32_t credit(const struct vconn *c)
{
	uint32_t used = c->tx_cnt - c->peer_fwd_cnt;
	return used >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - used;
}

/* The loop thread has work (watches, connects, closes). */
static void vs_kick_loop(struct vsock *vs)
{
	vm_notify(vs->d->vm, VM_NOTIFY_DEV);
}

static struct vconn *conn_find(struct vsock *vs, uint32_t lport, uint32_t pport)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vconn *c = &vs->c[i];
		if (c->st != VC_FREE && c->st != VC_HELLO && c->st != VC_DEAD && c->lport == lport &&
		    c->pport == pport)
			return c;
	}
	return NULL;
}

static struct vconn *conn_new(struct vsock *vs)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vconn *c = &vs->c[i];
		if (c->st == VC_FREE) {
			free(c->buf);
			*c = (struct vconn){ .vs = vs, .fd = -1 };
			return c;
		}
	}
	return NULL;
}

/* Ends a connection: its host socket goes to the loop thread to close. */
static void conn_end(struct vconn *c)
{
	if (c->fd >= 0) {
		c->st = VC_DEAD;
		vs_kick_loop(c->vs);
	} else {
		c->st = VC_FREE;
	}
	c->pend = 0;
	c->buf_len = 0;
}

/* Ends the connection after an RST to the guest (its host socket is
 * closed by the loop thread once the RST is sent: a vCPU thread's seccomp
 * filter has no shutdown(2)). */
static void conn_reset(struct vconn *c)
{
	if (c->fd >= 0)
		vs_kick_loop(c->vs);
	c->host_eof = true; /* nothing more is read from it */
	c->st = VC_CLOSING;
	c->pend = PEND_RST;
	c->buf_len = 0;
}

/* ------------------------------------------------------------ to the guest */

/* Fills a packet header for c. */
static void hdr_fill(uint8_t *h, const struct vsock *vs, struct vconn *c, uint16_t op, uint32_t len,
		     uint32_t flags)
{
	memset(h, 0, VSOCK_HDR_LEN);
	lx_wr64(h, VSOCK_HOST_CID);
	lx_wr64(h + 8, vs->cid);
	lx_wr32(h + 16, c->lport);
	lx_wr32(h + 20, c->pport);
	lx_wr32(h + 24, len);
	lx_wr16(h + 28, VSOCK_TYPE_STREAM);
	lx_wr16(h + 30, op);
	lx_wr32(h + 32, flags);
	lx_wr32(h + 36, VSOCK_BUF_ALLOC);
	lx_wr32(h + 40, c->fwd_cnt);
	c->fwd_told = c->fwd_cnt;
	c->pend &= ~PEND_CREDIT; /* every packet tells fwd_cnt */
}

/* Copies len bytes into the request's writable buffers from offset off.
 * Returns the count copied. */
static size_t req_write(const struct virtq_req *r, size_t off, const void *src, size_t len)
{
	size_t done = 0;

	for (unsigned i = 0; i < r->nr && done < len; i++) {
		const struct virtq_seg *s = &r->seg[i];
		if (!s->write)
			continue;
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		size_t n = MIN(s->len - off, len - done);
		memcpy(s->p + off, (const uint8_t *)src + done, n);
		done += n;
		off = 0;
	}
	return done;
}

/* Bytes the host end of c has for the guest now (0: none); sets host_eof
 * when a Unix socket's client has closed. */
static size_t host_pending(struct vsock *vs, struct vconn *c)
{
	if (c->agent) {
		struct vm *vm = vs->d->vm;
		pthread_mutex_lock(&vm->lock);
		size_t n = chan_input_queued_locked(&vm->agent);
		pthread_mutex_unlock(&vm->lock);
		return n;
	}
	if (c->fd < 0 || c->host_eof)
		return 0;
	uint8_t b;
	ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		c->host_eof = true;
		c->pend |= PEND_SHUTDOWN;
	}
	return n > 0 ? 1 : 0;
}

/* What c would send next: an op, or OP_INVALID for nothing. */
static uint16_t next_op(struct vsock *vs, struct vconn *c)
{
	if (c->pend & PEND_RST)
		return OP_RST;
	if (c->pend & PEND_REQUEST)
		return OP_REQUEST;
	if (c->pend & PEND_RESPONSE)
		return OP_RESPONSE;
	if (c->st == VC_OPEN && credit(c) > 0 && host_pending(vs, c) > 0)
		return OP_RW;
	if (c->pend & PEND_SHUTDOWN)
		return OP_SHUTDOWN;
	if (c->pend & PEND_CREDIT)
		return OP_CREDIT_UPDATE;
	return OP_INVALID;
}

/* Fills one receive buffer with c's next packet. Returns the bytes written. */
static uint32_t rx_packet(struct vsock *vs, struct vconn *c, uint16_t op, const struct virtq_req *r)
{
	uint8_t h[VSOCK_HDR_LEN];
	size_t room = virtq_req_len(r, true);
	uint32_t len = 0, flags = 0;

	if (room < VSOCK_HDR_LEN)
		return 0;
	switch (op) {
	case OP_RST:
		conn_end(c);
		break;
	case OP_REQUEST:
		c->pend &= ~PEND_REQUEST;
		break;
	case OP_RESPONSE:
		c->pend &= ~PEND_RESPONSE;
		c->st = VC_OPEN;
		break;
	case OP_SHUTDOWN:
		c->pend &= ~PEND_SHUTDOWN;
		flags = VSOCK_SHUT_RCV | VSOCK_SHUT_SEND;
		c->st = VC_CLOSING;
		break;
	case OP_RW: {
		size_t want = MIN(MIN(room - VSOCK_HDR_LEN, (size_t)credit(c)), sizeof(vs->scratch));
		ssize_t n;
		if (c->agent) {
			struct vm *vm = vs->d->vm;
			pthread_mutex_lock(&vm->lock);
			n = chan_read_locked(&vm->agent, vs->scratch, want);
			pthread_mutex_unlock(&vm->lock);
		} else {
			do
				n = recv(c->fd, vs->scratch, want, MSG_DONTWAIT);
			while (n < 0 && errno == EINTR);
		}
		if (n <= 0) {
			/* nothing after all (a racing reader): an empty credit
			 * update keeps the buffer's use honest */
			op = OP_CREDIT_UPDATE;
			break;
		}
		len = (uint32_t)n;
		c->tx_cnt += len;
		break;
	}
	default:
		break;
	}
	hdr_fill(h, vs, c, op, len, flags);
	req_write(r, 0, h, VSOCK_HDR_LEN);
	if (len)
		req_write(r, VSOCK_HDR_LEN, vs->scratch, len);
	return VSOCK_HDR_LEN + len;
}

/* Moves what every connection owes the guest into its receive buffers, as
 * long as it posted some. Device lock held. */
static void vs_rx(struct vsock *vs)
{
	struct virtio_dev *d = vs->d;
	bool any = false;

	if (!d->s.q[VSOCK_RX].ready || !(d->s.status & VIRTIO_STATUS_DRIVER_OK) ||
	    (d->s.status & VIRTIO_STATUS_NEEDS_RESET))
		return;
	for (bool progress = true; progress;) {
		progress = false;
		for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
			struct vconn *c = &vs->c[i];
			if (c->st == VC_FREE || c->st == VC_DEAD || c->st == VC_HELLO ||
			    c->st == VC_CONNECT)
				continue;
			uint16_t op = next_op(vs, c);
			if (op == OP_INVALID)
				continue;
			struct virtq_req r;
			if (virtq_pop(d, VSOCK_RX, &r) <= 0)
				goto out; /* no buffer: the guest's next one notifies */
			virtq_push(d, VSOCK_RX, r.head, rx_packet(vs, c, op, &r));
			any = progress = true;
		}
	}
out:
	if (any)
		virtio_interrupt(d, VSOCK_RX);
}

/* ------------------------------------------------------------ to the host */

/* Forwards c's buffered bytes to its host end; held: some waited since an
 * earlier packet (the guest may be waiting for credit). Device lock held. */
static void conn_flush(struct vsock *vs, struct vconn *c, bool held)
{
	while (c->buf_len) {
		ssize_t n;
		if (c->agent) {
			struct vm *vm = vs->d->vm;
			pthread_mutex_lock(&vm->lock);
			n = (ssize_t)chan_write_locked(&vm->agent, c->buf, c->buf_len);
			pthread_mutex_unlock(&vm->lock);
		} else {
			n = send(c->fd, c->buf, c->buf_len, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
				conn_reset(c); /* the host end is gone */
				return;
			}
		}
		if (n <= 0)
			break; /* full: the loop tells us when there is room */
		memmove(c->buf, c->buf + n, c->buf_len - (size_t)n);
		c->buf_len -= (uint32_t)n;
		c->fwd_cnt += (uint32_t)n;
	}
	if (c->buf_len && !c->agent)
		vs_kick_loop(vs); /* watch for room */
	/* The guest thinks half its credit is used, or waited on us: tell it. */
	if (c->fwd_cnt != c->fwd_told &&
	    (held || c->rx_cnt - c->fwd_told >= VSOCK_BUF_ALLOC / 2))
		c->pend |= PEND_CREDIT;
	if (!c->buf_len && c->guest_done && c->fd >= 0 && !c->shut_wr)
		vs_kick_loop(vs); /* the loop shuts the host socket's sending side */
}

/* An RW packet's payload (bytes [VSOCK_HDR_LEN, VSOCK_HDR_LEN + len) of r's
 * readable buffers) for c's host end: written straight through when
 * nothing is held, the rest held. */
static void conn_rw(struct vsock *vs, struct vconn *c, const struct virtq_req *r, uint32_t len)
{
	if (c->buf_len + (uint64_t)len > VSOCK_BUF_ALLOC) {
		log_warn("vsock: the guest's port %u sent past its credit; connection reset", c->pport);
		conn_reset(c);
		return;
	}
	if (!c->buf && !(c->buf = malloc(VSOCK_BUF_ALLOC))) {
		conn_reset(c);
		return;
	}
	bool held = c->buf_len > 0;
	c->rx_cnt += len;
	c->buf_len += (uint32_t)virtq_req_read(r, VSOCK_HDR_LEN, c->buf + c->buf_len, len);
	conn_flush(vs, c, held);
}

/* A guest connection request to host port lport. */
static void guest_connect(struct vsock *vs, uint32_t lport, uint32_t pport)
{
	struct vconn *c = conn_new(vs);

	if (!c)
		return; /* the guest's request times out */
	c->lport = lport;
	c->pport = pport;
	if (lport == VSOCK_AGENT_PORT && vs->agent_port) {
		for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
			if (vs->c[i].agent && vs->c[i].st != VC_FREE && &vs->c[i] != c) {
				c->st = VC_CLOSING; /* one agent connection at a time */
				c->pend = PEND_RST;
				return;
			}
		c->agent = true;
		c->st = VC_OPEN;
		c->pend = PEND_RESPONSE;
		log_info("vsock: the guest's port %u connected to the agent channel", pport);
	} else if (vs->path) {
		c->st = VC_CONNECT; /* the loop thread connects PATH_lport */
		vs_kick_loop(vs);
	} else {
		log_info("vsock: the guest's connection to host port %u is refused (%s)", lport,
			 lport == VSOCK_AGENT_PORT ? "this VM's agent channel is not a socket" :
						     "no socket=PATH");
		c->st = VC_CLOSING;
		c->pend = PEND_RST;
	}
}

/* One packet from the guest. */
static uint32_t vs_tx_one(struct virtio_dev *d, const struct virtq_req *r)
{
	struct vsock *vs = d->priv;
	uint8_t h[VSOCK_HDR_LEN];

	if (virtq_req_read(r, 0, h, sizeof(h)) < sizeof(h))
		return 0; /* not a packet: dropped */
	uint64_t src_cid = lx_rd64(h), dst_cid = lx_rd64(h + 8);
	uint32_t src_port = lx_rd32(h + 16), dst_port = lx_rd32(h + 20), len = lx_rd32(h + 24);
	uint16_t type = lx_rd16(h + 28), op = lx_rd16(h + 30);
	uint32_t flags = lx_rd32(h + 32);
	if (len > virtq_req_len(r, false) - VSOCK_HDR_LEN)
		return 0; /* a length its buffers do not hold: dropped */
	if (src_cid != vs->cid || dst_cid != VSOCK_HOST_CID)
		return 0; /* not from this guest to the host: dropped */
	struct vconn *c = conn_find(vs, dst_port, src_port);
	if (c) {
		c->peer_buf_alloc = lx_rd32(h + 36);
		c->peer_fwd_cnt = lx_rd32(h + 40);
	}
	log_debug("vsock: guest port %u -> host port %u: op %u type %u len %u%s", src_port, dst_port,
		  op, type, len, c ? "" : " (no connection)");
	if (type != VSOCK_TYPE_STREAM || (!c && op != OP_REQUEST)) {
		if (op != OP_RST && !c) {
			/* an RST for what we do not know (Linux does the same) */
			struct vconn *rst = conn_new(vs);
			if (rst) {
				rst->lport = dst_port;
				rst->pport = src_port;
				rst->st = VC_CLOSING;
				rst->pend = PEND_RST;
			}
		} else if (c && op != OP_RST) {
			conn_reset(c);
		}
		return 0;
	}
	switch (op) {
	case OP_REQUEST:
		if (c)
			conn_reset(c); /* a second request on one connection */
		else
			guest_connect(vs, dst_port, src_port);
		if (!c) {
			c = conn_find(vs, dst_port, src_port);
			if (c) {
				c->peer_buf_alloc = lx_rd32(h + 36);
				c->peer_fwd_cnt = lx_rd32(h + 40);
			}
		}
		break;
	case OP_RESPONSE: {
		char ok[32];
		int n = snprintf(ok, sizeof(ok), "OK %u\n", c->lport);
		if (c->st != VC_REQUEST || c->fd < 0) {
			conn_reset(c);
			break;
		}
		c->st = VC_OPEN;
		if (send(c->fd, ok, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) != n)
			conn_reset(c);
		else
			vs_kick_loop(vs); /* read the client now */
		break;
	}
	case OP_RW:
		if (c->st != VC_OPEN || c->guest_done)
			conn_reset(c);
		else if (len)
			conn_rw(vs, c, r, len);
		break;
	case OP_CREDIT_UPDATE:
		break; /* its credit is read above */
	case OP_CREDIT_REQUEST:
		c->pend |= PEND_CREDIT;
		break;
	case OP_SHUTDOWN:
		if (flags & VSOCK_SHUT_SEND)
			c->guest_done = true;
		if ((flags & (VSOCK_SHUT_RCV | VSOCK_SHUT_SEND)) ==
			    (VSOCK_SHUT_RCV | VSOCK_SHUT_SEND) ||
		    c->agent) {
			if (c->fd >= 0 && c->buf_len)
				conn_flush(vs, c, true);
			conn_reset(c); /* both ways closed: done (Linux waits for our RST) */
		} else {
			conn_flush(vs, c, true);
		}
		break;
	case OP_RST:
		conn_end(c);
		break;
	default:
		conn_reset(c);
		break;
	}
	return 0;
}

static void vs_notify(struct virtio_dev *d, unsigned q)
{
	struct vsock *vs = d->priv;

	if (q == VSOCK_TX) {
		virtq_serve(d, q, vs_tx_one);
		/* credit back for a host socket no longer read: the loop reads it */
		for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
			const struct vconn *c = &vs->c[i];
			if (c->fd >= 0 && c->st == VC_OPEN && !(c->watched & EPOLLIN) &&
			    !c->host_eof && credit(c) > 0) {
				vs_kick_loop(vs);
				break;
			}
		}
	}
	/* new receive buffers, or packets owed after what the guest sent;
	 * the event queue's buffers stay the guest's */
	if (q != VSOCK_EVT)
		vs_rx(vs);
}

static void vs_config(struct virtio_dev *d, uint32_t off, void *data, unsigned len, bool is_write)
{
	struct vsock *vs = d->priv;
	uint8_t cfg[8];

	if (is_write)
		return; /* guest_cid is read-only */
	lx_wr64(cfg, vs->cid);
	memcpy(data, cfg + off, len);
}

/* The driver reset the device: every connection is gone. */
static void vs_reset(struct virtio_dev *d)
{
	struct vsock *vs = d->priv;

	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (vs->c[i].st != VC_FREE && vs->c[i].st != VC_HELLO)
			conn_end(&vs->c[i]);
}

/* ------------------------------------------------------------ loop side */

static void vs_service_locked(struct vsock *vs);

static void on_conn_fd(void *arg, uint32_t events)
{
	struct vconn *c = arg;
	struct vsock *vs = c->vs;
	struct virtio_dev *d = vs->d;

	pthread_mutex_lock(&d->lock);
	if (c->st == VC_HELLO) {
		/* "CONNECT PORT\n", read up to its newline only: what follows is
		 * the stream's */
		char ch;
		ssize_t n;
		while ((n = recv(c->fd, &ch, 1, MSG_DONTWAIT)) == 1 && ch != '\n' &&
		       c->hello_len < sizeof(c->hello) - 1)
			c->hello[c->hello_len++] = ch;
		c->hello[c->hello_len] = '\0';
		unsigned long port = 0;
		char *end = NULL;
		if (n == 1 && ch == '\n') {
			if (!strncmp(c->hello, "CONNECT ", 8)) {
				errno = 0;
				port = strtoul(c->hello + 8, &end, 10);
			}
			if (!end || end == c->hello + 8 || *end || errno || port > UINT32_MAX) {
				log_info("vsock: a client sent \"%s\", not CONNECT PORT", c->hello);
				c->st = VC_DEAD;
			} else {
				uint32_t lp;
				do
					lp = vs->next_port++;
				while (lp < VSOCK_LOCAL_PORT_BASE || conn_find(vs, lp, (uint32_t)port));
				if (vs->next_port < VSOCK_LOCAL_PORT_BASE)
					vs->next_port = VSOCK_LOCAL_PORT_BASE;
				c->lport = lp;
				c->pport = (uint32_t)port;
				c->st = VC_REQUEST;
				c->pend = PEND_REQUEST;
			}
		} else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) ||
			   c->hello_len >= sizeof(c->hello) - 1) {
			c->st = VC_DEAD; /* hung up, or a line too long */
		}
	} else if (c->st == VC_OPEN || c->st == VC_CLOSING || c->st == VC_REQUEST) {
		if ((events & EPOLLOUT) && c->buf_len)
			conn_flush(vs, c, true);
		if ((events & (EPOLLHUP | EPOLLERR)) && c->st == VC_REQUEST)
			c->pend = PEND_RST, c->st = VC_CLOSING; /* the client left first */
	}
	vs_rx(vs);
	vs_service_locked(vs);
	pthread_mutex_unlock(&d->lock);
}

static void on_listen_fd(void *arg, uint32_t events)
{
	struct vsock *vs = arg;
	struct virtio_dev *d = vs->d;

	(void)events;
	int fd = accept4(vs->sock.fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	pthread_mutex_lock(&d->lock);
	struct vconn *c = conn_new(vs);
	if (!c) {
		log_warn("vsock: %u connections already; a client is refused", VSOCK_MAX_CONNS);
		close(fd);
	} else {
		c->fd = fd;
		c->st = VC_HELLO;
		vs_service_locked(vs);
	}
	pthread_mutex_unlock(&d->lock);
}

/* The guest asked for host port c->lport: connects PATH_lport. */
static void conn_connect(struct vsock *vs, struct vconn *c)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int n = snprintf(a.sun_path, sizeof(a.sun_path), "%s_%u", vs->path, c->lport);
	int fd = n > 0 && (size_t)n < sizeof(a.sun_path) ?
			 socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) : -1;

	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
		c->fd = fd;
		c->st = VC_OPEN;
		c->pend = PEND_RESPONSE;
		return;
	}
	log_info("vsock: the guest's connection to host port %u is refused (%s: %s)", c->lport,
		 a.sun_path, strerror(errno));
	if (fd >= 0)
		close(fd);
	c->st = VC_CLOSING;
	c->pend = PEND_RST;
}

/* Loop thread, device lock held: connects, closes, and makes the loop
 * watch what each connection waits for. */
static void vs_service_locked(struct vsock *vs)
{
	bool again = false;

	if (!vs->loop)
		return;
	if (vs->sock_open && !vs->sock_watched &&
	    loop_add(vs->loop, vs->sock.fd, EPOLLIN, on_listen_fd, vs) == 0)
		vs->sock_watched = true;
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vconn *c = &vs->c[i];
		if (c->st == VC_CONNECT) {
			conn_connect(vs, c);
			again = true;
		}
		if (c->fd < 0)
			continue;
		if (c->guest_done && !c->buf_len && !c->shut_wr && c->st == VC_OPEN) {
			shutdown(c->fd, SHUT_WR); /* the guest sends no more: its peer reads EOF */
			c->shut_wr = true;
		}
		uint32_t want = 0;
		if (c->st == VC_HELLO)
			want = EPOLLIN;
		else if (c->st == VC_OPEN && !c->host_eof && credit(c) > 0)
			want = EPOLLIN;
		if ((c->st == VC_OPEN || c->st == VC_CLOSING) && c->buf_len)
			want |= EPOLLOUT;
		if (c->st == VC_REQUEST)
			want = EPOLLRDHUP;
		if (c->st == VC_DEAD || c->st == VC_FREE)
			want = 0;
		if (want != c->watched) {
			if (!want)
				loop_del(vs->loop, c->fd);
			else if (!c->watched ? loop_add(vs->loop, c->fd, want, on_conn_fd, c) < 0 :
					       loop_mod(vs->loop, c->fd, want) < 0)
				want = 0;
			c->watched = want;
		}
		if (c->st == VC_DEAD) {
			close(c->fd);
			c->fd = -1;
			c->st = VC_FREE;
		}
	}
	if (again)
		vs_rx(vs);
}

/* The agent channel got input (loop thread). */
static void on_agent_input(void *arg)
{
	struct virtio_dev *d = arg;

	pthread_mutex_lock(&d->lock);
	vs_rx(d->priv);
	pthread_mutex_unlock(&d->lock);
}

/* The agent channel has room for what the guest sent (loop thread). */
static void on_agent_room(void *arg)
{
	struct virtio_dev *d = arg;
	struct vsock *vs = d->priv;

	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (vs->c[i].agent && vs->c[i].st == VC_OPEN && vs->c[i].buf_len)
			conn_flush(vs, &vs->c[i], true);
	vs_rx(vs);
	pthread_mutex_unlock(&d->lock);
}

int virtio_vsock_attach(struct virtio_dev *d, struct loop *loop)
{
	struct vsock *vs = d->priv;

	pthread_mutex_lock(&d->lock);
	vs->loop = loop;
	vs_service_locked(vs);
	vs_rx(vs); /* a restore's owed packets */
	pthread_mutex_unlock(&d->lock);
	return vs->sock_open && !vs->sock_watched ? -ENOMEM : 0;
}

void virtio_vsock_service(struct virtio_dev *d)
{
	pthread_mutex_lock(&d->lock);
	vs_service_locked(d->priv);
	vs_rx(d->priv);
	pthread_mutex_unlock(&d->lock);
}

int virtio_vsock_publish(struct virtio_dev *d)
{
	struct vsock *vs = d->priv;

	return vs->sock_open ? unixsock_publish(&vs->sock) : 0;
}

/* ------------------------------------------------------------ state */

static int vs_save(struct virtio_dev *d, json_t *obj, char *err, size_t errlen)
{
	struct vsock *vs = d->priv;
	json_t *conns = json_array();

	for (unsigned i = 0; conns && i < VSOCK_MAX_CONNS; i++) {
		const struct vconn *c = &vs->c[i];
		json_t *o = NULL;
		/* what the guest knows of: a REQUEST still to send, or a client
		 * not past its CONNECT line, is forgotten with its client */
		if (c->st == VC_FREE || c->st == VC_HELLO || c->st == VC_DEAD ||
		    (c->st == VC_REQUEST && (c->pend & PEND_REQUEST)))
			continue;
		if (c->agent)
			o = json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "agent", 1,
				      "local_port", (json_int_t)c->lport, "peer_port", (json_int_t)c->pport,
				      "peer_buf_alloc", (json_int_t)c->peer_buf_alloc, "peer_fwd_cnt",
				      (json_int_t)c->peer_fwd_cnt, "tx_cnt", (json_int_t)c->tx_cnt,
				      "rx_cnt", (json_int_t)c->rx_cnt, "fwd_cnt", (json_int_t)c->fwd_cnt,
				      "fwd_told", (json_int_t)c->fwd_told, "pending", (json_int_t)c->pend,
				      "held", state_json_blob(c->buf, c->buf_len));
		else
			o = json_pack("{s:b,s:I,s:I}", "agent", 0, "local_port", (json_int_t)c->lport,
				      "peer_port", (json_int_t)c->pport);
		if (!o || json_array_append_new(conns, o) < 0) {
			json_decref(conns);
			conns = NULL;
		}
	}
	if (!conns || json_object_set_new(obj, "guest_cid", state_json_u64(vs->cid)) < 0 ||
	    json_object_set_new(obj, "next_port", json_integer(vs->next_port)) < 0 ||
	    json_object_set_new(obj, "connections", conns) < 0)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	return 0;
}

static int conn_restore(struct vsock *vs, const json_t *o, unsigned i, struct vconn *c, char *err,
			size_t errlen)
{
	uint32_t pend;
	int rc;

	*c = (struct vconn){ .vs = vs, .fd = -1 };
	if (!json_is_object(o))
		return err_fail(err, errlen, -EINVAL, "connections[%u] is not an object", i);
	if ((rc = state_get_bool(o, "agent", &c->agent, err, errlen)) < 0 ||
	    (rc = state_get_u32(o, "local_port", &c->lport, err, errlen)) < 0 ||
	    (rc = state_get_u32(o, "peer_port", &c->pport, err, errlen)) < 0)
		return rc;
	if (!c->agent) {
		/* its host socket is gone: the guest is told */
		c->st = VC_CLOSING;
		c->pend = PEND_RST;
		return 0;
	}
	if (!vs->agent_port || c->lport != VSOCK_AGENT_PORT)
		return err_fail(err, errlen, -EINVAL,
			    "connections[%u]: an agent connection on host port %u, and this VM's agent "
			    "channel is %s",
			    i, c->lport, vs->agent_port ? "port 1024" : "not a socket");
	size_t held = 0;
	if ((rc = state_get_u32(o, "peer_buf_alloc", &c->peer_buf_alloc, err, errlen)) < 0 ||
	    (rc = state_get_u32(o, "peer_fwd_cnt", &c->peer_fwd_cnt, err, errlen)) < 0 ||
	    (rc = state_get_u32(o, "tx_cnt", &c->tx_cnt, err, errlen)) < 0 ||
	    (rc = state_get_u32(o, "rx_cnt", &c->rx_cnt, err, errlen)) < 0 ||
	    (rc = state_get_u32(o, "fwd_cnt", &c->fwd_cnt, err, errlen)) < 0 ||
	    (rc = state_get_u32(o, "fwd_told", &c->fwd_told, err, errlen)) < 0 ||
	    (rc = state_get_u32(o, "pending", &pend, err, errlen)) < 0 ||
	    (rc = state_get_blob_any(o, "held", VSOCK_BUF_ALLOC, &c->buf, &held, err, errlen)) < 0)
		return rc;
	if (pend & ~(PEND_RESPONSE | PEND_SHUTDOWN | PEND_RST | PEND_CREDIT)) {
		free(c->buf);
		c->buf = NULL;
		return err_fail(err, errlen, -EINVAL, "connections[%u]: pending 0x%x", i, pend);
	}
	if (c->buf && held < VSOCK_BUF_ALLOC) {
		uint8_t *b = realloc(c->buf, VSOCK_BUF_ALLOC);
		if (!b) {
			free(c->buf);
			c->buf = NULL;
			return err_fail(err, errlen, -ENOMEM, "out of memory");
		}
		c->buf = b;
	}
	c->buf_len = (uint32_t)held;
	c->pend = pend;
	c->st = (pend & PEND_RST) ? VC_CLOSING : VC_OPEN;
	return 0;
}

static int vs_restore(struct virtio_dev *d, const json_t *st, char *err, size_t errlen)
{
	struct vsock *vs = d->priv;
	const json_t *conns = json_object_get(st, "connections");
	uint64_t cid;
	uint32_t next;
	int rc;

	if ((rc = state_get_u64(st, "guest_cid", &cid, err, errlen)) < 0 ||
	    (rc = state_get_u32(st, "next_port", &next, err, errlen)) < 0)
		return rc;
	if (cid != vs->cid)
		return err_fail(err, errlen, -EINVAL,
			    "the guest's CID was %llu and is %llu here: it cannot change across a "
			    "restore",
			    (unsigned long long)cid, (unsigned long long)vs->cid);
	if (!json_is_array(conns) || json_array_size(conns) > VSOCK_MAX_CONNS)
		return err_fail(err, errlen, -EINVAL, "connections: expected an array of at most %u",
			    VSOCK_MAX_CONNS);
	struct vconn *c = calloc(VSOCK_MAX_CONNS, sizeof(*c));
	if (!c)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	unsigned n = (unsigned)json_array_size(conns), agents = 0;
	for (unsigned i = 0; i < n; i++) {
		if ((rc = conn_restore(vs, json_array_get(conns, i), i, &c[i], err, errlen)) < 0)
			break;
		agents += c[i].agent;
	}
	if (rc == 0 && agents > 1)
		rc = err_fail(err, errlen, -EINVAL, "connections: %u agent connections", agents);
	if (rc < 0) {
		for (unsigned i = 0; i < n; i++)
			free(c[i].buf);
		free(c);
		return rc;
	}
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		free(vs->c[i].buf);
		vs->c[i] = c[i];
		vs->c[i].vs = vs;
	}
	free(c);
	vs->next_port = next < VSOCK_LOCAL_PORT_BASE ? VSOCK_LOCAL_PORT_BASE : next;
	return 0;
}

/* ------------------------------------------------------------ lifetime */

static void vs_destroy(struct virtio_dev *d)
{
	struct vsock *vs = d->priv;
	struct vm *vm = d->vm;

	if (!vs)
		return;
	pthread_mutex_lock(&vm->lock);
	if (vm->agent.on_input_arg == d) {
		vm->agent.on_input = NULL;
		vm->agent.on_room = NULL;
	}
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vconn *c = &vs->c[i];
		if (c->fd >= 0) {
			if (vs->loop && c->watched)
				loop_del(vs->loop, c->fd);
			close(c->fd);
		}
		free(c->buf);
	}
	if (vs->sock_open) {
		if (vs->loop && vs->sock_watched)
			loop_del(vs->loop, vs->sock.fd);
		unixsock_close(&vs->sock);
	}
	free(vs->path);
	free(vs);
	d->priv = NULL;
}

static const struct virtio_ops vsock_ops = {
    .kind = "vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .nr_queues = 3,
    .config = vs_config,
    .config_len = 8,
    .notify = vs_notify,
    .reset = vs_reset,
    .save = vs_save,
    .restore = vs_restore,
    .destroy = vs_destroy,
};

int virtio_vsock_create(struct vm *vm, struct virtio_dev *d, uint64_t cid, const char *path,
			bool takeover, uint64_t base, unsigned gsi, char *err, size_t errlen)
{
	struct vsock *vs = calloc(1, sizeof(*vs));
	bool stale = false;
	int rc;

	if (!vs)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	vs->cid = cid;
	vs->next_port = VSOCK_LOCAL_PORT_BASE;
	vs->sock.fd = -1;
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		vs->c[i] = (struct vconn){ .vs = vs, .fd = -1 };
	if (path) {
		if (!(vs->path = strdup(path))) {
			free(vs);
			return err_fail(err, errlen, -ENOMEM, "out of memory");
		}
		if ((rc = unixsock_check(path, takeover, &stale)) < 0 ||
		    (rc = unixsock_listen(&vs->sock, path, !takeover)) < 0) {
			free(vs->path);
			free(vs);
			return err_fail(err, errlen, rc, "vsock socket %s: %s", path,
				    rc == -EADDRINUSE ? "another process listens there" :
				    rc == -EEXIST     ? "something else than a socket is there" :
							strerror(-rc));
		}
		vs->sock_open = true;
	}
	if ((rc = virtio_mmio_register(vm, d, &vsock_ops, vs, 0, "vsock", base, gsi)) < 0) {
		if (vs->sock_open)
			unixsock_close(&vs->sock);
		free(vs->path);
		free(vs);
		return err_fail(err, errlen, rc, "cannot register virtio-vsock: %s", strerror(-rc));
	}
	vs->d = d;
	pthread_mutex_lock(&vm->lock);
	if (vm->agent.mode == CHAN_SOCKET && !vm->agent.on_input) {
		vs->agent_port = true;
		vm->agent.on_input = on_agent_input;
		vm->agent.on_room = on_agent_room;
		vm->agent.on_input_arg = d;
	}
	pthread_mutex_unlock(&vm->lock);
	return 0;
}
