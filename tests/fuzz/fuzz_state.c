/* tests/fuzz/fuzz_state.c - libFuzzer target: a snapshot directory
 * (docs/snapshot-format.md) as forkvm --restore file:///DIR reads it.
 *
 * The input is snapshot.json, config.json and state.json, in that order,
 * separated by NUL bytes, after one byte of flags. They are written into a
 * directory under /dev/shm with a memory-ranges file of the size the
 * manifest gives (sparse, all zero), and opened with snapshot_open()
 * (vmm/snapshot.c over store/snapdir.c: manifest format and version,
 * checksums, config.json with the rules of its edits, state.json's format
 * and version). Flags bit 0, 1 and 2 first set snapshot.json's checksums of
 * config.json, state.json and memory-ranges to the right values (the
 * manifest is then rewritten by jansson), so inputs get past them.
 *
 * A snapshot that opens is applied as vm_restore() does (vm.c,
 * vm_apply_snapshot), to a VM built without KVM from the snapshot's vCPU
 * count and memory size (vm_create_nokvm with a payload of fuzz_vm.h,
 * unloaded again: no function guest, no devices; an agent channel on a
 * socket in that directory when the configuration has one): the loader
 * found by name, its restore_prepare, state_restore() of every unit of the
 * VM in its order (clock, console, agent, fguest: platform-neutral, with
 * the threads' registers and XSAVE areas) and restore_finish.
 * FUZZ_SHOW=1 in the environment prints how far an input got. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/log.h"
#include "store/internal.h"
#include "tests/fuzz/fuzz_vm.h"
#include "vmm/fguest/fguest.h"
#include "vmm/gmem.h"
#include "vmm/loader.h"
#include "vmm/snapshot.h"
#include "vmm/state.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIX_CONFIG 0x1
#define FIX_STATE 0x2
#define FIX_MEMORY 0x4

static char dir[64], agent_path[96];
static bool show;

static void report(const char *step, int rc, const char *err)
{
	if (show)
		fprintf(stderr, "%s: %d %s\n", step, rc, rc < 0 ? err : "");
}

static void put_file(const char *name, const void *data, size_t len)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (len && write(fd, data, len) != (ssize_t)len))
		abort();
	close(fd);
}

static void set_checksum(json_t *files, const char *name, const char *text, size_t len)
{
	char hex[33];
	st_hash_hex(XXH3_128bits(text, len), hex);
	json_object_set_new(files, name, json_pack("{s:s,s:I}", "xxh3_128", hex, "size", (json_int_t)len));
}

/* The manifest to write: the input's bytes, or its fixed-up rewrite. */
static char *manifest_text(const char *text, size_t len, unsigned flags, const char *config,
			   size_t config_len, const char *state, size_t state_len, size_t *out_len,
			   uint64_t *memory_size)
{
	json_t *m = json_loadb(text, len, 0, NULL);
	const json_t *size = json_object_get(json_object_get(m, "memory"), "size");
	char *out = NULL;

	*memory_size = json_is_integer(size) ? (uint64_t)json_integer_value(size) : 0;
	if (flags & (FIX_CONFIG | FIX_STATE | FIX_MEMORY) && json_is_object(m)) {
		json_t *files = json_object_get(m, "files");
		if (!json_is_object(files)) {
			files = json_object();
			json_object_set_new(m, "files", files);
		}
		if (flags & FIX_CONFIG)
			set_checksum(files, "config.json", config, config_len);
		if (flags & FIX_STATE)
			set_checksum(files, "state.json", state, state_len);
		if (flags & FIX_MEMORY) {
			/* A sparse all-zero memory-ranges: the hash of no page. */
			char hex[33];
			XXH3_state_t *h = XXH3_createState();
			XXH3_128bits_reset(h);
			st_hash_hex(XXH3_128bits_digest(h), hex);
			XXH3_freeState(h);
			json_object_set_new(files, "memory-ranges",
					    json_pack("{s:s,s:i}", "xxh3_128_nonzero_pages", hex,
						      "data_pages", 0));
		}
		out = json_dumps(m, JSON_COMPACT);
	}
	json_decref(m);
	if (out) {
		*out_len = strlen(out);
		return out;
	}
	out = malloc(len ? len : 1);
	if (!out)
		abort();
	memcpy(out, text, len);
	*out_len = len;
	return out;
}

/* vm_apply_snapshot() on a VM without KVM. */
static void apply(struct snapshot *s)
{
	struct state_unit *units = calloc(STATE_MAX_UNITS, sizeof(*units));
	char err[512];
	struct vm *vm = NULL;

	if (!units)
		abort();
	if (fuzz_vm_create(s->cfg.boot_vcpus, s->cfg.memory_size,
			   s->cfg.agent_socket ? agent_path : NULL, s->cfg.hostname, &vm) < 0)
		goto out;
	/* What vm_build() leaves for a restore: no payload, no devices. */
	fguest_destroy(vm->fg);
	vm->fg = NULL;
	memset(&vm->pio, 0, sizeof(vm->pio));
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		vm->vcpus[i].gt = NULL;
		vm->vcpus[i].start_pending = false;
	}

	vm->loader = vm_loader_by_name(s->loader);
	if (!vm->loader || !vm->loader->restore_prepare ||
	    vm->loader->restore_prepare(vm, err, sizeof(err)) < 0)
		goto out;
	size_t n = vm_state_units(vm, units, STATE_MAX_UNITS);
	int rc = state_restore(vm, units, n, s->units, err, sizeof(err));
	report("state_restore", rc, err);
	if (rc == 0 && vm->loader->restore_finish) {
		rc = vm->loader->restore_finish(vm, err, sizeof(err));
		report("restore_finish", rc, err);
	}
out:
	vm_destroy(vm);
	free(units);
}

static void cleanup(void)
{
	static const char *const names[] = { "snapshot.json", "config.json", "state.json",
					     "memory-ranges", "agent.sock" };
	char path[128];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	show = getenv("FUZZ_SHOW") != NULL;
	snprintf(dir, sizeof(dir), "/dev/shm/fuzz-state-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	atexit(cleanup);
	snprintf(agent_path, sizeof(agent_path), "%s/agent.sock", dir);
	fuzz_payload_path();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *part[3] = { "", "", "" };
	size_t len[3] = { 0, 0, 0 };
	unsigned flags;
	char err[512], path[128];

	if (size < 1)
		return 0;
	flags = data[0];
	const char *p = (const char *)data + 1, *end = (const char *)data + size;
	for (int i = 0; i < 3 && p <= end; i++) {
		const char *nul = memchr(p, '\0', (size_t)(end - p));
		part[i] = p;
		len[i] = nul ? (size_t)(nul - p) : (size_t)(end - p);
		p += len[i] + 1;
	}

	uint64_t memory_size;
	size_t mlen;
	char *manifest = manifest_text(part[0], len[0], flags, part[1], len[1], part[2], len[2], &mlen,
				       &memory_size);
	put_file("snapshot.json", manifest, mlen);
	free(manifest);
	put_file("config.json", part[1], len[1]);
	put_file("state.json", part[2], len[2]);
	/* memory-ranges: all holes (a restore maps it; nothing reads it here). */
	snprintf(path, sizeof(path), "%s/memory-ranges", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, 0) < 0 ||
	    ftruncate(fd, (off_t)(memory_size && memory_size <= GMEM_MAX_SIZE ? memory_size : 4096)) < 0)
		abort();
	close(fd);

	struct snapshot s;
	int rc = snapshot_open(dir, &s, err, sizeof(err));
	report("snapshot_open", rc, err);
	if (rc == 0) {
		apply(&s);
		snapshot_close(&s);
	}
	return 0;
}
