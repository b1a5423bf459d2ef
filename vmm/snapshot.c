/* vmm/snapshot.c - see snapshot.h. */
#include "snapshot.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

static int mem_populated(void *arg, int (*cb)(void *cbarg, uint64_t off, uint64_t len), void *cbarg)
{
	return gmem_for_each_populated(arg, cb, cbarg);
}

void snapshot_mem_of(const struct gmem *m, struct store_mem *out)
{
	*out = (struct store_mem){
		.base = m->host, .size = m->size, .populated = mem_populated,
		.arg = (void *)(uintptr_t)m,
	};
}

int snapshot_write_dir(const char *dir, const struct vm_config *cfg, const json_t *units,
		       const struct gmem *mem, const struct snap_meta *meta, char *err, size_t errlen)
{
	struct store_mem sm;
	json_t *config = vm_config_to_json(cfg);
	int rc;

	if (!config)
		return fail(err, errlen, -ENOMEM, "out of memory");
	snapshot_mem_of(mem, &sm);
	rc = snapdir_write(dir, config, units, &sm, meta, err, errlen);
	json_decref(config);
	return rc;
}

/* The edited config may differ from the saved one only where that is safe. */
static int check_config_edit(const struct vm_config *now, const struct vm_config *was, char *err,
			     size_t errlen)
{
#define SAME_STR(a, b) (((a) == NULL && (b) == NULL) || ((a) && (b) && !strcmp((a), (b))))
	if (now->boot_vcpus != was->boot_vcpus)
		return fail(err, errlen, -EINVAL,
			    "config.json: cpus.boot_vcpus is %u but the snapshot has %u vCPUs: the vCPU "
			    "count cannot change across a restore",
			    now->boot_vcpus, was->boot_vcpus);
	if (now->memory_size != was->memory_size)
		return fail(err, errlen, -EINVAL,
			    "config.json: memory.size is %llu but the snapshot has %llu bytes: memory "
			    "size cannot change across a restore",
			    (unsigned long long)now->memory_size, (unsigned long long)was->memory_size);
	if (!SAME_STR(now->kernel, was->kernel) || !SAME_STR(now->cmdline, was->cmdline))
		return fail(err, errlen, -EINVAL,
			    "config.json: the payload (kernel, cmdline) cannot change: it is already in "
			    "the snapshot's memory");
	if (!now->agent_socket != !was->agent_socket)
		return fail(err, errlen, -EINVAL,
			    "config.json: the agent channel cannot be added or removed (its socket "
			    "path can change)");
	return 0;
#undef SAME_STR
}

static int parse_config(const char *text, size_t len, const char *what, struct vm_config *cfg,
			char *err, size_t errlen)
{
	json_error_t je;
	char why[512];
	json_t *j = json_loadb(text, len, 0, &je);
	int rc;

	if (!j)
		return fail(err, errlen, -EINVAL, "%s: bad JSON at line %d column %d: %s", what, je.line,
			    je.column, je.text);
	rc = vm_config_from_json(j, cfg, why, sizeof(why));
	json_decref(j);
	if (rc < 0)
		return fail(err, errlen, rc, "%s: %s", what, why);
	return 0;
}

/* Checks what config.json says against what the snapshot is. */
static int check_config_fits(const struct vm_config *cfg, unsigned vcpus, uint64_t memory_size,
			     char *err, size_t errlen)
{
	if (cfg->boot_vcpus != vcpus)
		return fail(err, errlen, -EINVAL,
			    "config.json: %u vCPUs, but the snapshot has %u: the vCPU count cannot "
			    "change across a restore",
			    cfg->boot_vcpus, vcpus);
	if (cfg->memory_size != memory_size)
		return fail(err, errlen, -EINVAL,
			    "config.json: memory size %llu does not match the snapshot (%llu)",
			    (unsigned long long)cfg->memory_size, (unsigned long long)memory_size);
	return 0;
}

int snapshot_open(const char *dir, struct snapshot *s, char *err, size_t errlen)
{
	struct snapdir sd;
	int rc;

	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
	s->ss.mem_fd = -1;
	rc = snapdir_open(dir, &sd, err, errlen);
	if (rc < 0)
		return rc;
	rc = parse_config(sd.config, sd.config_len, "config.json", &s->cfg, err, errlen);
	if (rc == 0 && sd.config_edited) {
		struct vm_config was;
		char *orig = json_dumps(json_object_get(sd.manifest, "config"), 0);
		rc = orig ? parse_config(orig, strlen(orig), "snapshot.json config", &was, err, errlen) :
			    -ENOMEM;
		free(orig);
		if (rc == 0) {
			rc = check_config_edit(&s->cfg, &was, err, errlen);
			vm_config_free(&was);
		}
		if (rc == 0)
			log_info("%s/config.json was edited since the snapshot; the edits are safe: "
				 "using it",
				 dir);
	}
	if (rc == 0)
		rc = check_config_fits(&s->cfg, sd.vcpus, sd.memory_size, err, errlen);
	if (rc < 0) {
		vm_config_free(&s->cfg);
		snapdir_close(&sd);
		return rc;
	}
	s->units = json_incref(sd.units);
	s->manifest = json_incref(sd.manifest);
	snprintf(s->loader, sizeof(s->loader), "%s", sd.loader);
	snprintf(s->platform, sizeof(s->platform), "%s", sd.platform);
	s->memory_size = sd.memory_size;
	s->mem_fd = sd.mem_fd;
	sd.mem_fd = -1;
	snapdir_close(&sd);
	return 0;
}

int snapshot_open_store(const char *store_root, const char *ref, struct snapshot *s, char *err,
			size_t errlen)
{
	struct store *st;
	struct store_id id;
	int rc;

	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
	s->ss.mem_fd = -1;
	rc = store_open(store_root, false, 0, &st, err, errlen);
	if (rc < 0)
		return rc;
	rc = store_resolve(st, ref, &id, err, errlen);
	if (rc == 0)
		rc = store_load(st, &id, &s->ss, err, errlen);
	store_close(st);
	if (rc < 0)
		return rc;
	rc = parse_config(s->ss.config, s->ss.config_len, "config.json", &s->cfg, err, errlen);
	if (rc == 0)
		rc = check_config_fits(&s->cfg, s->ss.vcpus, s->ss.memory_size, err, errlen);
	if (rc < 0) {
		vm_config_free(&s->cfg);
		store_snapshot_free(&s->ss);
		return rc;
	}
	s->from_store = true;
	snprintf(s->store_root, sizeof(s->store_root), "%s", store_root);
	s->units = json_incref(s->ss.units);
	s->manifest = json_incref(s->ss.manifest);
	snprintf(s->loader, sizeof(s->loader), "%s", s->ss.loader);
	snprintf(s->platform, sizeof(s->platform), "%s", s->ss.platform);
	s->memory_size = s->ss.memory_size;
	s->mem_fd = s->ss.mem_fd;
	s->ss.mem_fd = -1;
	return 0;
}

void snapshot_close(struct snapshot *s)
{
	vm_config_free(&s->cfg);
	json_decref(s->units);
	json_decref(s->manifest);
	if (s->mem_fd >= 0)
		close(s->mem_fd);
	store_snapshot_free(&s->ss);
	free(s->cpuid_cache);
	memset(s, 0, sizeof(*s));
	s->mem_fd = -1;
	s->ss.mem_fd = -1;
}
