/* vmm/chan.h - byte channels between the guest and the host: the agent
 * channel (guest fd 0/1) and the console (guest fd 2). A channel's host end
 * is a tty, a file, a listening Unix socket (one client at a time; others
 * wait in the backlog), or nothing. Guest-side calls run on vCPU threads with
 * the VM lock held.
 *
 * Input: a guest read takes bytes straight from the client socket (the
 * kernel's socket buffer is the queue and the flow control), so a request
 * wakes the reading vCPU thread directly, with no hop through the loop
 * thread. The loop thread accepts clients, and on hangup moves what the
 * client left unread into the input ring before closing.
 * Output: a guest write goes straight to the client when nothing is queued;
 * the rest waits in the output ring, which the loop thread flushes. */
#ifndef FORKVM_VMM_CHAN_H
#define FORKVM_VMM_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/unixsock.h"

struct vm;
struct loop;

enum chan_mode {
	CHAN_OFF,    /* output discarded, input at EOF */
	CHAN_TTY,    /* output to the VMM's stdout */
	CHAN_FILE,   /* output appended to a file */
	CHAN_SOCKET, /* a listening Unix socket */
};

struct chan_ring {
	uint8_t *buf;
	size_t cap, head, len;
};

struct chan {
	struct vm *vm;
	const char *name;
	enum chan_mode mode;
	bool flow_control; /* guest writes wait for room instead of dropping */
	char *path;
	int out_fd;       /* TTY/FILE */
	struct unixsock sock; /* SOCKET: the listener (common/unixsock.h) */
	int listen_fd;    /* SOCKET: sock.fd */
	int conn_fd;      /* SOCKET: the connected client, or -1 */
	bool listening;   /* listen_fd is watched by the loop */
	bool peer_closed; /* a guest read saw EOF: the loop drops the client */
	bool out_watched; /* conn EPOLLOUT on */
	struct chan_ring in, out;
	uint64_t dropped; /* output bytes dropped (no flow control, ring full; file full) */
	uint64_t file_bytes, file_max; /* FILE: its size, and the most the guest may make it */
	uint64_t rx_bytes, tx_bytes;
	/* A device that takes input as it arrives (a Linux guest's serial
	 * port) rather than when the guest asks: the loop reads the client's
	 * bytes into the input ring and calls on_input(on_input_arg) on its
	 * thread, vm->lock not held. NULL: input is read when the guest asks. */
	void (*on_input)(void *arg);
	void *on_input_arg;
	/* Called like on_input when the output ring has room again after a
	 * flush (a device holding guest output that did not fit). NULL: none. */
	void (*on_room)(void *arg);
	bool in_watched; /* conn EPOLLIN on (on_input and room in the ring) */
};

#define CHAN_RING_SIZE (1U << 20)
/* A guest may write at most this much to a console file (forkd's clones'
 * console.log): past it output is dropped and counted, once marked in the
 * file, so a flooding guest cannot fill the host's disk. */
#define CHAN_FILE_MAX (16ULL << 20)

/* Opens the host end (creates the socket with mode 0600, opens the file...).
 * flow_control: see struct chan. A socket path another process listens on
 * is refused, unless takeover (a restored VM continues the snapshotted
 * one, addresses included): then the socket is bound under a temporary
 * name and only chan_publish() puts it at path, so a restore that fails
 * leaves path alone. Returns 0 or -errno with err set. */
int chan_open(struct chan *c, struct vm *vm, const char *name, enum chan_mode mode,
	      const char *path, bool flow_control, bool takeover, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Moves a taken-over socket onto its path (atomically replacing whatever
 * is there). Returns 0 or -errno. No-op otherwise. */
int chan_publish(struct chan *c) __attribute__((warn_unused_result));
/* Registers the socket on the loop (loop thread). Returns 0 or -errno. */
int chan_attach(struct chan *c, struct loop *loop) __attribute__((warn_unused_result));
/* Closes everything (loop thread); unlinks the socket path. */
void chan_close(struct chan *c, struct loop *loop);

/* --- guest side, VM lock held --- */
/* Accepts up to len bytes of guest output; returns the count taken (0 when
 * a flow-controlled channel is full; the caller waits and retries). */
size_t chan_write_locked(struct chan *c, const void *buf, size_t len);
/* True when chan_write_locked would take at least one byte. */
bool chan_writable_locked(const struct chan *c);
/* Reads up to len bytes of input into dst without blocking. Returns the
 * count (> 0), 0 at end of input (a channel that never has input: OFF, TTY,
 * FILE), or -EAGAIN when nothing is there now. */
long chan_read_locked(struct chan *c, void *dst, size_t len);
/* What a reader that got -EAGAIN waits on: the client socket to poll
 * (>= 0), or -1: wait on vm->cond until chan_input_changed_locked(). */
int chan_input_fd_locked(const struct chan *c);
/* True when input may be there without polling: queued bytes, or a client
 * to read from. */
bool chan_input_ready_locked(const struct chan *c);
/* Bytes of input queued in the ring (what an on_input device can take now). */
size_t chan_input_queued_locked(const struct chan *c);

/* --- state (VM paused) --- */
struct json_t;
/* Saves buffered bytes: output not yet delivered, input not yet read (the
 * input ring, and what the client sent that the guest has not read, peeked
 * without consuming it). */
int chan_save(struct chan *c, struct json_t **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Puts saved bytes back (output to a tty/file channel is written out). */
int chan_restore(struct chan *c, const struct json_t *st, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* --- loop side --- */
/* Moves pending output to the client and re-enables input after the guest
 * drained the ring. Called by the VM's notifier on the loop thread. */
void chan_service(struct chan *c, struct loop *loop);

#endif
