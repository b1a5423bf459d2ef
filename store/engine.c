/* store/engine.c - see the I/O engine in internal.h. Object files are
 * opened into registered file slots, written or read, and closed as one
 * linked io_uring chain (openat_direct, read/write on the fixed slot,
 * close_direct as a hard link so it runs even when the transfer failed);
 * many chains are in flight and submitted in batches. CPU steps run on
 * every core. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/util.h"
#include "store/internal.h"

struct engine {
	struct store *st;
	st_step_fn *step;
	void *ctx;
	uint64_t n, next_index, finished;
	struct st_job *jobs;
	unsigned depth;

	pthread_mutex_t mu;
	pthread_cond_t cpu_cv;
	struct st_job *cpu_head, *cpu_tail; /* jobs waiting for a CPU step */
	struct st_job *io_head, *io_tail;   /* jobs waiting for I/O */
	bool done;
	int efd; /* wakes the I/O thread */
};

static void push(struct st_job **head, struct st_job **tail, struct st_job *j)
{
	j->next = NULL;
	if (*tail)
		(*tail)->next = j;
	else
		*head = j;
	*tail = j;
}

static struct st_job *pop(struct st_job **head, struct st_job **tail)
{
	struct st_job *j = *head;
	if (j) {
		*head = j->next;
		if (!*head)
			*tail = NULL;
	}
	return j;
}

/* Starts job j as the next index; false when there is none left. Lock held. */
static bool start_next(struct engine *e, struct st_job *j)
{
	if (e->next_index >= e->n)
		return false;
	unsigned slot = j->slot;
	uint8_t *scratch[2] = { j->scratch[0], j->scratch[1] };
	size_t cap[2] = { j->scratch_cap[0], j->scratch_cap[1] };
	memset(j, 0, sizeof(*j));
	j->slot = slot;
	for (int k = 0; k < 2; k++) {
		j->scratch[k] = scratch[k];
		j->scratch_cap[k] = cap[k];
	}
	j->index = e->next_index++;
	j->fd = -1;
	push(&e->cpu_head, &e->cpu_tail, j);
	return true;
}

static void wake_io(struct engine *e)
{
	uint64_t one = 1;
	if (write(e->efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: already awake */
	}
}

static void *worker_main(void *arg);

struct worker {
	struct engine *e;
	unsigned id;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct engine *e = w->e;
	/* NULL if out of memory: the codec then makes one-shot contexts. */
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	ZSTD_DCtx *dctx = ZSTD_createDCtx();

	pthread_mutex_lock(&e->mu);
	for (;;) {
		struct st_job *j;
		while (!(j = pop(&e->cpu_head, &e->cpu_tail)) && !e->done)
			pthread_cond_wait(&e->cpu_cv, &e->mu);
		if (!j)
			break;
		pthread_mutex_unlock(&e->mu);
		j->io_op = ST_IO_NONE;
		j->cctx = cctx;
		j->dctx = dctx;
		e->step(e->ctx, j, w->id);
		pthread_mutex_lock(&e->mu);
		if (j->io_op != ST_IO_NONE) {
			push(&e->io_head, &e->io_tail, j);
			wake_io(e);
		} else {
			e->finished++;
			if (!start_next(e, j) && e->finished == e->n) {
				e->done = true;
				pthread_cond_broadcast(&e->cpu_cv);
				wake_io(e);
			}
			pthread_cond_signal(&e->cpu_cv);
		}
	}
	pthread_mutex_unlock(&e->mu);
	ZSTD_freeCCtx(cctx);
	ZSTD_freeDCtx(dctx);
	return NULL;
}

uint8_t *st_job_scratch(struct st_job *j, int k, size_t need)
{
	if (j->scratch_cap[k] < need) {
		free(j->scratch[k]);
		j->scratch[k] = malloc(need);
		j->scratch_cap[k] = j->scratch[k] ? need : 0;
	}
	return j->scratch[k];
}

bool st_job_next_run(struct st_job *j, int fd)
{
	uint64_t a = j->cursor;
	while (a < j->raw_len && st_is_zero(j->raw + a, MIN(STORE_PAGE, j->raw_len - a)))
		a += STORE_PAGE;
	if (a >= j->raw_len) {
		j->cursor = j->raw_len;
		return false;
	}
	uint64_t b = a + STORE_PAGE;
	while (b < j->raw_len && !st_is_zero(j->raw + b, MIN(STORE_PAGE, j->raw_len - b)))
		b += STORE_PAGE;
	b = MIN(b, j->raw_len);
	j->cursor = b;
	j->fd = fd;
	j->buf = j->raw + a;
	j->len = b - a;
	j->off = j->raw_off + a;
	j->io_op = ST_IO_PWRITE;
	return true;
}

#define UD(j, k) ((uint64_t)(uintptr_t)(j) | (k))

/* SQEs of j's I/O. Opened files live in the job's registered slot for one
 * linked chain: open -> transfer (-> fsync) -> close, the steps after the
 * open hard-linked so the close runs whatever the transfer did. */
static unsigned sqes_of(const struct st_job *j)
{
	switch (j->io_op) {
	case ST_IO_CREATE_WRITE:
		return 4;
	case ST_IO_READ_FILE:
	case ST_IO_FSYNC_DIR:
		return 3;
	default:
		return 1;
	}
}

/* Queues the SQEs of j's I/O. Returns the number queued or -EBUSY if the
 * ring is full. */
static int prep(struct io_uring *ring, struct engine *e, struct st_job *j)
{
	struct io_uring_sqe *s[4];
	unsigned need = sqes_of(j), k = 0;
	int root = e->st->root_fd, slot = (int)j->slot;

	if (io_uring_sq_space_left(ring) < need)
		return -EBUSY;
	for (unsigned i = 0; i < need; i++)
		s[i] = io_uring_get_sqe(ring);
	j->pending = need;
	/* No O_CLOEXEC below: direct descriptors refuse it (and have no fd). */
	switch (j->io_op) {
	case ST_IO_CREATE_WRITE:
		io_uring_prep_openat_direct(s[k++], root, j->rel, O_WRONLY | O_CREAT | O_EXCL, 0400,
					    j->slot);
		io_uring_prep_write(s[k++], slot, j->buf, (unsigned)j->len, 0);
		io_uring_prep_fsync(s[k++], slot, 0);
		break;
	case ST_IO_READ_FILE:
		io_uring_prep_openat_direct(s[k++], root, j->rel, O_RDONLY, 0, j->slot);
		io_uring_prep_read(s[k++], slot, j->buf, (unsigned)j->len, 0);
		break;
	case ST_IO_FSYNC_DIR:
		io_uring_prep_openat_direct(s[k++], root, j->rel, O_RDONLY | O_DIRECTORY, 0, j->slot);
		io_uring_prep_fsync(s[k++], slot, 0);
		break;
	case ST_IO_PWRITE:
		io_uring_prep_write(s[k++], j->fd, j->buf, (unsigned)j->len, j->off);
		break;
	case ST_IO_RENAME:
		io_uring_prep_renameat(s[k++], root, j->rel, root, j->rel2, 0);
		break;
	case ST_IO_NONE:
		break;
	}
	if (need > 1) {
		s[0]->flags |= IOSQE_IO_LINK;
		for (unsigned i = 1; i + 1 < need; i++)
			s[i]->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
		io_uring_prep_close_direct(s[k++], j->slot);
	}
	for (unsigned i = 0; i < need; i++)
		io_uring_sqe_set_data64(s[i], UD(j, i));
	return (int)need;
}

/* A whole chain is back: the transfer's result, or the first error. */
static long chain_result(const struct st_job *j)
{
	switch (j->io_op) {
	case ST_IO_CREATE_WRITE:
		if (j->res[0] < 0)
			return j->res[0];
		/* A short write comes back as its count: the step finishes it. */
		if (j->res[1] < 0 || (size_t)j->res[1] != j->len)
			return j->res[1];
		return j->res[2] < 0 ? j->res[2] : j->res[1];
	case ST_IO_READ_FILE:
	case ST_IO_FSYNC_DIR:
		return j->res[0] < 0 ? j->res[0] : j->res[1];
	default:
		return j->res[0];
	}
}

int st_engine_run(struct store *st, uint64_t n, unsigned depth, st_step_fn *step, void *ctx)
{
	struct engine e = { .st = st, .step = step, .ctx = ctx, .n = n, .efd = -1 };
	struct io_uring ring;
	unsigned nworkers = st_cpus();
	pthread_t threads[64];
	struct worker workers[64];
	unsigned started = 0, inflight = 0;
	uint64_t ev;
	int rc;

	if (n == 0)
		return 0;
	if (depth < 1)
		depth = 1;
	if (depth > 256)
		depth = 256;
	e.depth = depth;
	e.jobs = calloc(depth, sizeof(*e.jobs));
	e.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!e.jobs || e.efd < 0) {
		rc = -ENOMEM;
		goto out_free;
	}
	rc = io_uring_queue_init(3 * depth + 8, &ring, 0);
	if (rc < 0)
		goto out_free;
	rc = io_uring_register_files_sparse(&ring, depth);
	if (rc < 0)
		goto out_ring;
	pthread_mutex_init(&e.mu, NULL);
	pthread_cond_init(&e.cpu_cv, NULL);
	pthread_mutex_lock(&e.mu);
	for (unsigned i = 0; i < depth; i++) {
		e.jobs[i].slot = i;
		if (!start_next(&e, &e.jobs[i]))
			break;
	}
	pthread_mutex_unlock(&e.mu);
	for (unsigned i = 0; i < nworkers && i < 64; i++) {
		workers[i] = (struct worker){ &e, i };
		if (pthread_create(&threads[i], NULL, worker_main, &workers[i]) != 0)
			break;
		started++;
	}
	if (!started) {
		rc = -EAGAIN;
		goto out_threads;
	}

	/* The I/O loop: a poll on the eventfd wakes it for new requests. */
	bool poll_armed = false;
	for (;;) {
		pthread_mutex_lock(&e.mu);
		bool all_done = e.done;
		struct st_job *j;
		while ((j = e.io_head)) {
			if (prep(&ring, &e, j) < 0)
				break;
			pop(&e.io_head, &e.io_tail);
			inflight++;
		}
		pthread_mutex_unlock(&e.mu);
		if (all_done && inflight == 0)
			break;
		if (!poll_armed) {
			struct io_uring_sqe *s = io_uring_get_sqe(&ring);
			if (s) {
				io_uring_prep_poll_add(s, e.efd, POLLIN);
				io_uring_sqe_set_data64(s, 0);
				poll_armed = true;
			}
		}
		rc = io_uring_submit_and_wait(&ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
			break;
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&ring, head, cqe) {
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			seen++;
			if (ud == 0) {
				if (read(e.efd, &ev, sizeof(ev)) < 0) {
					/* EAGAIN: nothing to drain */
				}
				poll_armed = false;
				continue;
			}
			struct st_job *cj = (struct st_job *)(uintptr_t)(ud & ~3ULL);
			cj->res[ud & 3] = cqe->res;
			if (--cj->pending == 0) {
				cj->io_res = chain_result(cj);
				inflight--;
				pthread_mutex_lock(&e.mu);
				push(&e.cpu_head, &e.cpu_tail, cj);
				pthread_cond_signal(&e.cpu_cv);
				pthread_mutex_unlock(&e.mu);
			}
		}
		io_uring_cq_advance(&ring, seen);
		rc = 0;
	}

out_threads:
	pthread_mutex_lock(&e.mu);
	e.done = true;
	pthread_cond_broadcast(&e.cpu_cv);
	pthread_mutex_unlock(&e.mu);
	for (unsigned i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	pthread_cond_destroy(&e.cpu_cv);
	pthread_mutex_destroy(&e.mu);
	io_uring_unregister_files(&ring);
out_ring:
	io_uring_queue_exit(&ring);
out_free:
	if (e.efd >= 0)
		close(e.efd);
	for (unsigned i = 0; e.jobs && i < depth; i++) {
		free(e.jobs[i].scratch[0]);
		free(e.jobs[i].scratch[1]);
	}
	free(e.jobs);
	return rc;
}
