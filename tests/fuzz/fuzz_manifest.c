/* tests/fuzz/fuzz_manifest.c - libFuzzer target: a store snapshot
 * manifest and a tag file (docs/store-format.md) as a possibly damaged
 * store holds them, through the store API's readers.
 *
 * The input is the manifest's bytes, then optionally a NUL byte and the
 * bytes of the tag file tags/fuzz (without them the tag names the
 * manifest, as store_tag writes it). The harness keeps a store under
 * /dev/shm holding a config.json, a state.json, a snapshot.json and two
 * memory chunks (256 KiB and 4 KiB) that manifests may name (FUZZ_SHOW=1
 * prints their ids); per input it stores the manifest as an object
 * (st_obj_put), commits it as a snapshot and writes the tag, then runs
 * store_resolve (by tag and by id prefix), st_manifest_read, store_list,
 * store_load (which materializes the memory and disk images), store_verify,
 * store_export and store_rm, and removes what the input left. (store_du
 * reads manifests with st_manifest_read too, but spends its time walking
 * every object directory: left out.) FUZZ_SHOW=1 also prints each step's
 * result and time. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "store/internal.h"
#include "store/store.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct store *st;
static char base[64], root[96], export_dir[96];
static struct store_id kept[5]; /* the objects manifests may name */
static bool show;

static const char config_json[] =
	"{\"agent\": {\"socket\": \"/run/forkd/clones/x/agent.sock\"}, \"cpus\": {\"boot_vcpus\": 1, "
	"\"max_vcpus\": 1}, \"hostname\": \"fn\", \"memory\": {\"size\": 268435456}, \"payload\": "
	"{\"cmdline\": null, \"kernel\": \"/usr/lib/forkvm/agent\"}, \"serial\": {\"mode\": \"Off\"}}\n";
static const char state_json[] = "{\"format\": \"forkvm-state\", \"version\": 1, \"units\": []}\n";
static const char snapshot_json[] =
	"{\"format\": \"forkvm-snapshot\", \"version\": 1, \"loader\": \"function-guest\", "
	"\"vcpus\": 1, \"memory\": {\"size\": 268435456, \"page_size\": 4096}, \"files\": {}}\n";

static void put_kept(int i, const void *data, size_t len)
{
	char err[512], hex[33];

	if (st_obj_put(st, data, len, &kept[i], err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_manifest: %s\n", err);
		abort();
	}
	store_id_hex(&kept[i], hex);
	if (show)
		fprintf(stderr, "object %d: %s (%zu bytes)\n", i, hex, len);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* Removes the harness's mkdtemp directory and the store in it. */
static void cleanup(void)
{
	store_close(st);
	st = NULL;
	nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[512];
	uint8_t *chunk = malloc(STORE_DEFAULT_CHUNK);

	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	show = getenv("FUZZ_SHOW") != NULL;
	snprintf(base, sizeof(base), "/dev/shm/fuzz-manifest-XXXXXX");
	if (!chunk || !mkdtemp(base))
		abort();
	snprintf(root, sizeof(root), "%s/store", base);
	snprintf(export_dir, sizeof(export_dir), "%s/export", base);
	if (store_open(root, true, 0, &st, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_manifest: %s\n", err);
		abort();
	}
	atexit(cleanup);
	put_kept(0, config_json, strlen(config_json));
	put_kept(1, state_json, strlen(state_json));
	put_kept(2, snapshot_json, strlen(snapshot_json));
	for (size_t i = 0; i < STORE_DEFAULT_CHUNK; i++)
		chunk[i] = (uint8_t)(i % 251 < 128 ? 0 : i * 7);
	put_kept(3, chunk, STORE_DEFAULT_CHUNK);
	put_kept(4, chunk + 4096, 4096);
	free(chunk);
	return 0;
}

static int list_cb(void *arg, const struct store_entry *e)
{
	unsigned *n = arg;
	(*n)++;
	for (size_t i = 0; e->tags && e->tags[i]; i++)
		(*n) += (unsigned)strlen(e->tags[i]);
	(*n) += (unsigned)json_object_size(e->manifest);
	return 0;
}

static void on_problem(void *arg, const char *problem)
{
	(void)arg;
	if (show)
		fprintf(stderr, "verify: %s\n", problem);
}

static void report(const char *step, int rc, const char *err)
{
	static uint64_t t0;
	uint64_t now = time_mono_ns();

	if (show)
		fprintf(stderr, "%s: %d %s (%.2f ms)\n", step, rc, rc < 0 ? err : "",
			t0 ? (now - t0) / 1e6 : 0.0);
	t0 = now;
}

/* Removes what one input left in the store: the manifest object (unless
 * it is one of the kept ones), its commit mark, tag and image. */
static void forget(const struct store_id *id)
{
	char rel[200], hex[33];
	bool keep = false;

	store_id_hex(id, hex);
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
		keep |= store_id_equal(id, &kept[i]);
	if (!keep) {
		st_obj_rel(id, rel, sizeof(rel));
		unlinkat(st->root_fd, rel, 0);
	}
	snprintf(rel, sizeof(rel), "snapshots/%s", hex);
	unlinkat(st->root_fd, rel, 0);
	unlinkat(st->root_fd, "tags/fuzz", 0);
	snprintf(rel, sizeof(rel), "images/%s.img", hex);
	unlinkat(st->root_fd, rel, 0);
	snprintf(rel, sizeof(rel), "images/%s.lock", hex);
	unlinkat(st->root_fd, rel, 0);
	for (char d = 'a'; d <= 'z'; d++) { /* the disks' images */
		snprintf(rel, sizeof(rel), "images/%s-vd%c.img", hex, d);
		unlinkat(st->root_fd, rel, 0);
		snprintf(rel, sizeof(rel), "images/%s-vd%c.lock", hex, d);
		unlinkat(st->root_fd, rel, 0);
	}
	st_remove_tree(export_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t mlen = nul ? (size_t)(nul - data) : size;
	struct store_id id, got;
	char err[512], hex[33], tag[64], rel[64], prefix[9];
	int rc, fd;

	if (st_obj_put(st, data, mlen, &id, err, sizeof(err)) < 0)
		abort();
	store_id_hex(&id, hex);
	snprintf(rel, sizeof(rel), "snapshots/%s", hex);
	fd = openat(st->root_fd, rel, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		abort();
	close(fd);
	const void *tag_text = nul ? nul + 1 : (const void *)tag;
	size_t tag_len = nul ? size - mlen - 1 : (size_t)snprintf(tag, sizeof(tag), "%s\n", hex);
	fd = openat(st->root_fd, "tags/fuzz", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (tag_len && write(fd, tag_text, tag_len) != (ssize_t)tag_len))
		abort();
	close(fd);

	rc = store_resolve(st, "fuzz", &got, err, sizeof(err));
	report("resolve tag", rc, err);
	snprintf(prefix, sizeof(prefix), "%.8s", hex);
	rc = store_resolve(st, prefix, &got, err, sizeof(err));
	report("resolve prefix", rc, err);

	struct st_manifest m;
	rc = st_manifest_read(st, &id, &m, err, sizeof(err));
	report("manifest", rc, err);
	if (rc == 0)
		st_manifest_free(&m);

	unsigned listed = 0;
	rc = store_list(st, list_cb, &listed, err, sizeof(err));
	report("list", rc, err);

	struct store_snapshot snap;
	rc = store_load(st, &id, &snap, err, sizeof(err));
	report("load", rc, err);
	if (rc == 0)
		store_snapshot_free(&snap);

	rc = store_verify(st, &id, on_problem, NULL, err, sizeof(err));
	report("verify", rc, err);

	rc = store_export(st, &id, export_dir, err, sizeof(err));
	report("export", rc, err);

	rc = store_rm(st, &id, err, sizeof(err));
	report("rm", rc, err);
	forget(&id);
	return 0;
}
