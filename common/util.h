/* common/util.h - small helpers shared by every component: checked
 * arithmetic, alignment, size parsing, monotonic time, fd helpers. */
#ifndef FORKVM_COMMON_UTIL_H
#define FORKVM_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define WUR __attribute__((warn_unused_result))

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)

/* True if [addr, addr+len) does not overflow and lies inside [0, limit). */
static inline bool range_within(uint64_t addr, uint64_t len, uint64_t limit)
{
	return addr <= limit && len <= limit - addr;
}

static inline uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static inline uint64_t align_down(uint64_t v, uint64_t a)
{
	return v & ~(a - 1);
}

/* Sets *out = a + b. Returns false on overflow. */
static inline bool add_overflows(uint64_t a, uint64_t b, uint64_t *out)
{
	return __builtin_add_overflow(a, b, out);
}

/* Parses a size such as "512M", "4G", "65536", "1T" (binary units,
 * optional trailing 'B' / "iB"). Returns 0 or -EINVAL / -ERANGE. */
int parse_size(const char *s, uint64_t *out) WUR;

/* The error convention of store/ and vmm/: formats fmt into err (errlen
 * bytes; NULL or 0: no message) and returns rc, a negative errno. */
int err_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Parses a decimal unsigned integer in [min, max]. Returns 0 or -EINVAL/-ERANGE. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out) WUR;

/* Monotonic and realtime clocks in nanoseconds. */
uint64_t time_mono_ns(void);
uint64_t time_real_ns(void);

/* Writes all of buf to fd, retrying on EINTR and short writes.
 * Returns 0 or -errno. */
int write_full(int fd, const void *buf, size_t len) WUR;

/* Reads exactly len bytes. Returns 0, -EPIPE on early EOF, or -errno. */
int read_full(int fd, void *buf, size_t len) WUR;

/* Sets O_NONBLOCK on fd. Returns 0 or -errno. */
int fd_set_nonblock(int fd) WUR;

/* Lowercase hex of len bytes into out (2*len+1 bytes, NUL-terminated). */
void hex_encode(const void *data, size_t len, char *out);
/* Decodes exactly 2*len hex digits of s into out. Returns 0 or -EINVAL. */
int hex_decode(const char *s, void *out, size_t len) WUR;

/* Reads a whole file (up to max bytes) into a NUL-terminated malloc'd buffer.
 * Returns 0 or -errno (-EFBIG when larger than max). */
int file_read_all(const char *path, size_t max, char **out, size_t *len) WUR;

/* Calls cb for each data extent of fd in [0, size) (SEEK_DATA/SEEK_HOLE),
 * widened to align (a power of 2; 1: exact) and cut at size; holes are
 * skipped. Returns 0, cb's first error, or -errno. */
int fd_data_extents(int fd, uint64_t size, uint64_t align,
		    int (*cb)(void *arg, uint64_t off, uint64_t len), void *arg)
	__attribute__((warn_unused_result));

#endif
