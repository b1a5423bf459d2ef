/* store/object.c - objects: naming, encoding (zstd), verification, and
 * small synchronous writes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/util.h"
#include "store/internal.h"

void store_id_hex(const struct store_id *id, char out[33])
{
	hex_encode(id->b, sizeof(id->b), out);
}

int store_id_parse(const char *hex, struct store_id *id)
{
	if (!hex || strlen(hex) != 32)
		return -EINVAL;
	for (const char *p = hex; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return -EINVAL;
	return hex_decode(hex, id->b, sizeof(id->b));
}

bool store_id_equal(const struct store_id *a, const struct store_id *b)
{
	return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}

void st_obj_rel(const struct store_id *id, char *out, size_t len)
{
	char hex[33];
	store_id_hex(id, hex);
	snprintf(out, len, "objects/%.2s/%s", hex, hex);
}

void st_obj_path(const struct store *st, const struct store_id *id, char *out, size_t len)
{
	char rel[64];
	st_obj_rel(id, rel, sizeof(rel));
	snprintf(out, len, "%s/%s", st->root, rel);
}

bool st_obj_exists(struct store *st, const struct store_id *id)
{
	char rel[64];
	struct stat s;
	st_obj_rel(id, rel, sizeof(rel));
	return fstatat(st->root_fd, rel, &s, 0) == 0 && S_ISREG(s.st_mode);
}

uint64_t st_obj_raw_len(struct store *st, const struct store_id *id)
{
	char rel[64];
	uint8_t hdr[OBJ_HDR];
	uint64_t raw = 0;
	st_obj_rel(id, rel, sizeof(rel));
	int fd = openat(st->root_fd, rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr))
		for (int i = 0; i < 8; i++)
			raw |= (uint64_t)hdr[8 + i] << (8 * i);
	close(fd);
	return raw;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Level 1's hash table made 16 KiB (hashLog 12, level 1's own is 13): it
 * stays in L1, which made compressing guest memory about 13% faster here
 * at the same ratio (docs/store-format.md). */
#define OBJ_ZSTD_HASHLOG 12

size_t st_obj_encode_bound(size_t len)
{
	return OBJ_HDR + MAX(ZSTD_compressBound(len), len);
}

long st_obj_encode_into(ZSTD_CCtx *cctx, const void *raw, size_t len, int level, uint8_t *buf,
			size_t cap)
{
	size_t bound = ZSTD_compressBound(len), payload;
	int codec = OBJ_CODEC_ZSTD;

	if (cap < st_obj_encode_bound(len))
		return -EINVAL;
	if (cctx) {
		ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
		if (level == 1)
			ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, OBJ_ZSTD_HASHLOG);
		payload = ZSTD_compress2(cctx, buf + OBJ_HDR, bound, raw, len);
	} else {
		payload = ZSTD_compress(buf + OBJ_HDR, bound, raw, len, level);
	}
	if (ZSTD_isError(payload) || payload >= len) {
		/* Incompressible: store as is. */
		codec = OBJ_CODEC_NONE;
		memcpy(buf + OBJ_HDR, raw, len);
		payload = len;
	}
	put_le(buf, OBJ_MAGIC, 4);
	buf[4] = OBJ_VERSION;
	buf[5] = (uint8_t)codec;
	buf[6] = buf[7] = 0;
	put_le(buf + 8, len, 8);
	put_le(buf + 16, payload, 8);
	return (long)(OBJ_HDR + payload);
}

int st_obj_encode(ZSTD_CCtx *cctx, const void *raw, size_t len, int level, uint8_t **out,
		  size_t *out_len)
{
	size_t cap = st_obj_encode_bound(len);
	uint8_t *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	long n = st_obj_encode_into(cctx, raw, len, level, buf, cap);
	if (n < 0) {
		free(buf);
		return (int)n;
	}
	*out = buf;
	*out_len = (size_t)n;
	return 0;
}

/* Checks the header; returns the raw length or -EBADMSG. */
static int64_t check_header(const uint8_t *file, size_t file_len, int *codec)
{
	if (file_len < OBJ_HDR || get_le(file, 4) != OBJ_MAGIC || file[4] != OBJ_VERSION ||
	    file[5] > OBJ_CODEC_ZSTD || file[6] || file[7])
		return -EBADMSG;
	uint64_t raw = get_le(file + 8, 8), payload = get_le(file + 16, 8);
	if (raw > OBJ_MAX_RAW || payload != file_len - OBJ_HDR)
		return -EBADMSG;
	if (file[5] == OBJ_CODEC_NONE && payload != raw)
		return -EBADMSG;
	*codec = file[5];
	return (int64_t)raw;
}

int st_obj_decode_into(ZSTD_DCtx *dctx, const struct store_id *id, const uint8_t *file,
		       size_t file_len, uint8_t *raw, size_t want)
{
	int codec;
	int64_t len = check_header(file, file_len, &codec);
	struct store_id got;

	if (len < 0 || (size_t)len != want)
		return -EBADMSG;
	if (codec == OBJ_CODEC_NONE) {
		memcpy(raw, file + OBJ_HDR, want);
	} else {
		size_t n = dctx ? ZSTD_decompressDCtx(dctx, raw, want, file + OBJ_HDR, file_len - OBJ_HDR) :
			       ZSTD_decompress(raw, want, file + OBJ_HDR, file_len - OBJ_HDR);
		if (ZSTD_isError(n) || n != want)
			return -EBADMSG;
	}
	st_hash_id(XXH3_128bits(raw, want), &got);
	return store_id_equal(&got, id) ? 0 : -EBADMSG;
}

int st_obj_decode(const struct store_id *id, const uint8_t *file, size_t file_len, uint8_t **raw,
		  size_t *raw_len)
{
	int codec;
	int64_t len = check_header(file, file_len, &codec);
	uint8_t *buf;
	int rc;

	if (len < 0)
		return (int)len;
	buf = malloc((size_t)len + 1);
	if (!buf)
		return -ENOMEM;
	rc = st_obj_decode_into(NULL, id, file, file_len, buf, (size_t)len);
	if (rc < 0) {
		free(buf);
		return rc;
	}
	buf[len] = '\0';
	*raw = buf;
	*raw_len = (size_t)len;
	return 0;
}

int st_obj_put(struct store *st, const void *raw, size_t len, struct store_id *id, char *err,
	       size_t errlen)
{
	char rel[64], tmp[96], hex[33];
	uint8_t *file;
	size_t flen;
	int fd, rc;

	st_hash_id(XXH3_128bits(raw, len), id);
	if (st_obj_exists(st, id))
		return 0;
	rc = st_obj_encode(NULL, raw, len, st->zstd_level, &file, &flen);
	if (rc < 0)
		return err_fail(err, errlen, rc, "out of memory");
	store_id_hex(id, hex);
	snprintf(tmp, sizeof(tmp), "tmp/%s.%d.%d", hex, (int)getpid(), (int)gettid());
	fd = openat(st->root_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0400);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	rc = write_full(fd, file, flen);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	st_obj_rel(id, rel, sizeof(rel));
	if (rc == 0 && renameat(st->root_fd, tmp, st->root_fd, rel) < 0)
		rc = -errno;
	if (rc < 0) {
		unlinkat(st->root_fd, tmp, 0);
	} else {
		/* The name durable too: what refers to it is written next. */
		char dir[4200];
		snprintf(dir, sizeof(dir), "%s/objects/%.2s", st->root, hex);
		rc = st_fsync_dir(dir);
	}
out:
	free(file);
	if (rc < 0)
		return err_fail(err, errlen, rc, "cannot write object %s: %s", hex, strerror(-rc));
	return 0;
}

int store_read_object(struct store *st, const struct store_id *id, char **data, size_t *len,
		      char *err, size_t errlen)
{
	char path[4200], hex[33];
	char *file;
	size_t flen;
	int rc;

	st_obj_path(st, id, path, sizeof(path));
	store_id_hex(id, hex);
	rc = file_read_all(path, OBJ_MAX_RAW + OBJ_HDR, &file, &flen);
	if (rc < 0)
		return err_fail(err, errlen, rc, "object %s: %s", hex,
			       rc == -ENOENT ? "missing" : strerror(-rc));
	rc = st_obj_decode(id, (const uint8_t *)file, flen, (uint8_t **)data, len);
	free(file);
	if (rc < 0)
		return err_fail(err, errlen, rc, "object %s: %s", hex,
			       rc == -EBADMSG ? "corrupt (its content does not match its name)" :
						strerror(-rc));
	return 0;
}
