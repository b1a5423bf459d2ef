/* store/util.c - helpers shared by the store's files (internal.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/util.h"
#include "store/internal.h"

int st_check_json_object(const char *what, const char *text, size_t len, char *err,
			 size_t errlen)
{
	json_error_t je;
	json_t *j = json_loadb(text, len, 0, &je);

	if (!j)
		return err_fail(err, errlen, -EINVAL,
			       "%s is not a JSON object: bad JSON at line %d column %d: %s", what,
			       je.line, je.column, je.text);
	bool obj = json_is_object(j);
	json_decref(j);
	if (!obj)
		return err_fail(err, errlen, -EINVAL, "%s is not a JSON object", what);
	return 0;
}

void st_hash_hex(XXH128_hash_t h, char out[33])
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	hex_encode(c.digest, sizeof(c.digest), out);
}

void st_hash_id(XXH128_hash_t h, struct store_id *id)
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	memcpy(id->b, c.digest, sizeof(id->b));
}

bool st_page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	for (size_t i = 0; i < STORE_PAGE / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

bool st_is_zero(const uint8_t *p, size_t len)
{
	size_t i = 0;
	for (; i + STORE_PAGE <= len; i += STORE_PAGE)
		if (!st_page_is_zero(p + i))
			return false;
	for (; i < len; i++)
		if (p[i])
			return false;
	return true;
}

void st_hash_page(XXH3_state_t *st, uint64_t index, const uint8_t *page)
{
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(index >> (8 * i));
	XXH3_128bits_update(st, le, sizeof(le));
	XXH3_128bits_update(st, page, STORE_PAGE);
}

int st_write_file(int dirfd, const char *name, const void *data, size_t len, char *err,
		  size_t errlen)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int rc;

	if (fd < 0)
		return err_fail(err, errlen, -errno, "cannot create %s: %s", name, strerror(errno));
	rc = write_full(fd, data, len);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		return err_fail(err, errlen, rc, "cannot write %s: %s", name, strerror(-rc));
	return 0;
}

int st_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

void st_remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
	rmdir(dir);
}

int st_check_destination(const char **dirp, char real[4096], char *err, size_t errlen)
{
	const char *dir = *dirp;
	struct stat st;
	DIR *d;
	struct dirent *e;

	if (!*dir)
		return err_fail(err, errlen, -EINVAL, "an empty snapshot path");
	if (strlen(dir) >= 4096)
		return err_fail(err, errlen, -ENAMETOOLONG, "path too long: %s", dir);
	/* A symbolic link to a directory: the snapshot goes into its target
	 * (rename() would not follow the link). */
	if (lstat(dir, &st) == 0 && S_ISLNK(st.st_mode)) {
		if (!realpath(dir, real))
			return err_fail(err, errlen, -ENOTDIR, "%s is a dangling symbolic link", dir);
		*dirp = dir = real;
	}
	if (stat(dir, &st) < 0)
		return errno == ENOENT ? 0 : err_fail(err, errlen, -errno, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return err_fail(err, errlen, -ENOTDIR, "%s exists and is not a directory", dir);
	d = opendir(dir);
	if (!d)
		return err_fail(err, errlen, -errno, "%s: %s", dir, strerror(errno));
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			closedir(d);
			return err_fail(err, errlen, -EEXIST,
				       "%s is not empty: a snapshot never overwrites anything", dir);
		}
	}
	closedir(d);
	return 0;
}

int st_make_sibling(const char *dir, char parent[4096], char tmp[8400], char *err, size_t errlen)
{
	char work[4096], base[4096];

	snprintf(work, sizeof(work), "%s", dir);
	snprintf(parent, 4096, "%s", dirname(work));
	snprintf(work, sizeof(work), "%s", dir);
	snprintf(base, sizeof(base), "%s", basename(work));
	snprintf(tmp, 8400, "%s/.%s.tmp-XXXXXX", parent, base);
	if (!mkdtemp(tmp))
		return err_fail(err, errlen, -errno, "cannot create a directory next to %s: %s", dir,
			       strerror(errno));
	return 0;
}

int st_commit_sibling(const char *tmp, const char *dir, const char *parent, char *err,
		      size_t errlen)
{
	if (st_fsync_dir(tmp) < 0)
		return err_fail(err, errlen, -errno, "fsync %s: %s", tmp, strerror(errno));
	/* Replaces dir only if it is missing or an empty directory. */
	if (rename(tmp, dir) < 0) {
		int rc = -errno;
		if (rc == -ENOTEMPTY || rc == -EEXIST)
			return err_fail(err, errlen, -EEXIST,
				       "%s is not empty: a snapshot never overwrites anything", dir);
		return err_fail(err, errlen, rc, "cannot rename into %s: %s", dir, strerror(-rc));
	}
	(void)st_fsync_dir(parent);
	return 0;
}

char *st_json_text(const json_t *doc, size_t flags, size_t *len)
{
	char *text = json_dumps(doc, flags);
	if (!text)
		return NULL;
	size_t n = strlen(text);
	char *t = realloc(text, n + 2);
	if (!t) {
		free(text);
		return NULL;
	}
	t[n] = '\n';
	t[n + 1] = '\0';
	*len = n + 1;
	return t;
}

int store_url_parse(const char *url, enum store_url_kind *kind, char *out, size_t len, char *err,
		    size_t errlen)
{
	if (!url || !*url)
		return err_fail(err, errlen, -EINVAL, "a snapshot URL is required (file:///DIR or store://TAG)");
	if (!strncmp(url, "store://", 8)) {
		if (strlen(url + 8) >= len)
			return err_fail(err, errlen, -EINVAL, "reference too long in %s", url);
		strcpy(out, url + 8);
		*kind = STORE_URL_STORE;
		return 0;
	}
	if (strncmp(url, "file://", 7) != 0) {
		if (strstr(url, "://"))
			return err_fail(err, errlen, -EPROTONOSUPPORT,
				       "unsupported URL scheme in %s (use file:///DIR or store://TAG)", url);
		return err_fail(err, errlen, -EINVAL, "'%s' is not a URL (use file:///DIR or store://TAG)",
			       url);
	}
	const char *p = url + 7;
	if (!*p || strlen(p) >= len)
		return err_fail(err, errlen, -EINVAL, "bad path in %s", url);
	strcpy(out, p);
	for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--)
		out[n - 1] = '\0';
	*kind = STORE_URL_FILE;
	return 0;
}
