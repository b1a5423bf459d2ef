/* vmm/snapshot.c - snapshots of VMs (see snapshot.h): the files and store
 * objects they are made of; a VM's state units; vm_snapshot and
 * vm_snapshot_store; restores from a directory, the store or a template
 * (vm_restore*, vm_template_*). */
#include "common/util.h"
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/fguest/fguest.h"
#include "vmm/loader.h"
#include "vmm/platform.h"
#include "vmm/state.h"
#include "vmm/vm.h"

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
		return err_fail(err, errlen, -ENOMEM, "out of memory");
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
		return err_fail(err, errlen, -EINVAL,
			    "config.json: cpus.boot_vcpus is %u but the snapshot has %u vCPUs: the vCPU "
			    "count cannot change across a restore",
			    now->boot_vcpus, was->boot_vcpus);
	if (now->memory_size != was->memory_size)
		return err_fail(err, errlen, -EINVAL,
			    "config.json: memory.size is %llu but the snapshot has %llu bytes: memory "
			    "size cannot change across a restore",
			    (unsigned long long)now->memory_size, (unsigned long long)was->memory_size);
	if (!SAME_STR(now->kernel, was->kernel) || !SAME_STR(now->cmdline, was->cmdline))
		return err_fail(err, errlen, -EINVAL,
			    "config.json: the payload (kernel, cmdline) cannot change: it is already in "
			    "the snapshot's memory");
	if (!now->agent_socket != !was->agent_socket)
		return err_fail(err, errlen, -EINVAL,
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
		return err_fail(err, errlen, -EINVAL, "%s: bad JSON at line %d column %d: %s", what, je.line,
			    je.column, je.text);
	rc = vm_config_from_json(j, cfg, why, sizeof(why));
	json_decref(j);
	if (rc < 0)
		return err_fail(err, errlen, rc, "%s: %s", what, why);
	return 0;
}

/* Checks what config.json says against what the snapshot is. */
static int check_config_fits(const struct vm_config *cfg, unsigned vcpus, uint64_t memory_size,
			     char *err, size_t errlen)
{
	if (cfg->boot_vcpus != vcpus)
		return err_fail(err, errlen, -EINVAL,
			    "config.json: %u vCPUs, but the snapshot has %u: the vCPU count cannot "
			    "change across a restore",
			    cfg->boot_vcpus, vcpus);
	if (cfg->memory_size != memory_size)
		return err_fail(err, errlen, -EINVAL,
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
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	s->has_disks = sd.nr_disks > 0;
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

/* ------------------------------------------------------------ state */

/* The guest's monotonic clock: saved frozen, continued on restore. */
static int clock_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	(void)arg;
	*out = json_pack("{s:o,s:o}", "monotonic_ns", state_json_u64(vm_guest_now(vm)), "realtime_ns",
			 state_json_u64(time_real_ns()));
	if (!*out)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	return 0;
}

static int clock_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version, char *err,
			 size_t errlen)
{
	(void)arg;
	(void)version;
	return state_get_u64(st, "monotonic_ns", &vm->restored_clock, err, errlen);
}

static int chan_unit_save(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen)
{
	(void)vm;
	return chan_save(arg, out, err, errlen);
}

static int chan_unit_restore(struct vm *vm, void *arg, const json_t *st, uint32_t version,
			     char *err, size_t errlen)
{
	(void)vm;
	(void)version;
	return chan_restore(arg, st, err, errlen);
}

size_t vm_state_units(struct vm *vm, struct state_unit *u, size_t max)
{
	size_t n = vm->plat->units ? vm->plat->units(vm, u, max) : 0;

	if (n + 3 > max)
		return 0;
	u[n++] = (struct state_unit){ "clock", 1, clock_save, clock_restore, NULL };
	u[n++] = (struct state_unit){ "console", 1, chan_unit_save, chan_unit_restore, &vm->console };
	u[n++] = (struct state_unit){ "agent", 1, chan_unit_save, chan_unit_restore, &vm->agent };
	if (vm->loader && vm->loader->units)
		n += vm->loader->units(vm, u + n, max - n);
	return n;
}

int vm_apply_snapshot(struct vm *vm, struct snapshot *snap, char *err, size_t errlen)
{
	struct state_unit *units = calloc(STATE_MAX_UNITS, sizeof(*units));
	int rc;

	if (!units)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	vm->loader = vm_loader_by_name(snap->loader);
	if (!vm->loader || !vm->loader->restore_prepare) {
		rc = err_fail(err, errlen, -EINVAL, "the snapshot's payload kind '%s' is unknown here",
			  snap->loader);
		goto out;
	}
	rc = vm->loader->restore_prepare(vm, err, errlen);
	if (rc < 0)
		goto out;
	/* Taken on another platform: this one's machine for the payload (KVM's
	 * system area) is not in the snapshot's memory. */
	if (strcmp(snap->platform[0] ? snap->platform : "kvm", vm->plat->name) != 0) {
		log_info("restoring a snapshot taken on the %s platform on %s", snap->platform,
			 vm->plat->name);
		if (vm->loader->restore_foreign && (rc = vm->loader->restore_foreign(vm, err, errlen)) < 0)
			goto out;
	}
	size_t n = vm_state_units(vm, units, STATE_MAX_UNITS);
	rc = state_restore(vm, units, n, snap->units, err, errlen);
	if (rc == 0 && vm->loader->restore_finish)
		rc = vm->loader->restore_finish(vm, err, errlen);
out:
	free(units);
	return rc;
}

/* The state units of a paused VM, and its memory brought up to date in
 * the VMM's view (RAM that lives in another process: gmem_sync). */
static int vm_save_units(struct vm *vm, json_t **out, char *err, size_t errlen)
{
	struct state_unit *units;
	int rc;

	if (vm_get_state(vm) != VM_STATE_PAUSED)
		return err_fail(err, errlen, -EBUSY, "the VM is %s: pause it before a snapshot",
			    vm_state_name(vm_get_state(vm)));
	if (!vm->loader)
		return err_fail(err, errlen, -EINVAL, "this VM has no payload to snapshot");
	if ((rc = gmem_sync(&vm->mem)) < 0)
		return err_fail(err, errlen, rc, "cannot read the guest's memory: %s", strerror(-rc));
	units = calloc(STATE_MAX_UNITS, sizeof(*units));
	if (!units)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	size_t n = vm_state_units(vm, units, STATE_MAX_UNITS);
	rc = state_save(vm, units, n, out, err, errlen);
	free(units);
	return rc;
}

/* The payload's files beside the snapshot (a Linux guest's disks). */
static int save_files(void *arg, int dfd, json_t *files, char *err, size_t errlen)
{
	struct vm *vm = arg;
	return vm->loader->save_files(vm, dfd, files, err, errlen);
}

int vm_snapshot(struct vm *vm, const char *dir, char *err, size_t errlen)
{
	json_t *saved = NULL;
	uint64_t t0 = time_mono_ns();
	int rc = vm_save_units(vm, &saved, err, errlen);

	if (rc < 0)
		return rc;
	struct snap_meta meta = {
		.loader = vm->loader->name, .platform = vm->plat->name, .vcpus = vm->nr_vcpus,
		.memory_size = vm->mem.size,
		.extra_files = vm->loader->save_files ? save_files : NULL, .extra_arg = vm,
	};
	uint64_t t1 = time_mono_ns();
	rc = snapshot_write_dir(dir, &vm->cfg, saved, &vm->mem, &meta, err, errlen);
	json_decref(saved);
	if (rc == 0)
		log_info("snapshot written to %s in %.1f ms (state %.1f ms)", dir,
			 (time_mono_ns() - t0) / 1e6, (t1 - t0) / 1e6);
	return rc;
}

struct changed_arg {
	const uint64_t *pages; /* gmem_changed_pages() */
	uint64_t nr_pages;
};

static bool chunk_changed(void *arg, uint64_t chunk, uint32_t chunk_size)
{
	const struct changed_arg *a = arg;
	uint64_t per = chunk_size / GMEM_PAGE_SIZE, p = chunk * per, end = MIN(p + per, a->nr_pages);
	while (p < end) {
		if (p % 64 == 0 && end - p >= 64) { /* a whole word of pages */
			if (a->pages[p / 64])
				return true;
			p += 64;
			continue;
		}
		if (a->pages[p / 64] & (1ULL << (p % 64)))
			return true;
		p++;
	}
	return false;
}

int vm_snapshot_store(struct vm *vm, const char *store_root, const char *tag, char id_hex[33],
		      char *err, size_t errlen)
{
	struct store *st = NULL;
	struct store_id id, parent;
	struct store_put_stats stats;
	struct store_mem sm;
	struct changed_arg ca = { .pages = NULL };
	uint64_t *changed = NULL;
	json_t *saved = NULL, *config = NULL;
	struct store_disk_in disks[STORE_MAX_DISKS];
	struct store_mem disk_data[STORE_MAX_DISKS];
	int rc;

	rc = vm_save_units(vm, &saved, err, errlen);
	if (rc < 0)
		return rc;
	rc = store_open(store_root, true, 0, &st, err, errlen);
	if (rc < 0)
		goto out;
	config = vm_config_to_json(&vm->cfg);
	if (!config) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	struct snap_meta meta = {
		.loader = vm->loader->name, .platform = vm->plat->name, .vcpus = vm->nr_vcpus,
		.memory_size = vm->mem.size,
	};
	snapshot_mem_of(&vm->mem, &sm);
	struct store_snapshot_in in = { .config = config, .units = saved, .meta = &meta, .mem = &sm };
	/* The disks, read as the guest sees them (with the parent below,
	 * only the blocks written since the restore). */
	if (vm->loader->store_disks) {
		in.disks = disks;
		in.nr_disks = vm->loader->store_disks(vm, disks, disk_data, STORE_MAX_DISKS);
	}
	/* Restored from this store: only what changed since is read. */
	if (vm->origin_store[0] && !strcmp(vm->origin_store, store_root) &&
	    vm->mem.backing == GMEM_FILE_PRIVATE &&
	    store_chunk_size(st) == vm->origin_chunk_size) {
		rc = gmem_changed_pages(&vm->mem, &changed);
		ca.pages = changed;
		if (rc < 0) {
			err_fail(err, errlen, rc, "cannot tell what changed since the restore: %s", strerror(-rc));
			goto out;
		}
		ca.nr_pages = vm->mem.size / GMEM_PAGE_SIZE;
		parent = vm->origin_id;
		in.parent = &parent;
		in.changed = chunk_changed;
		in.changed_arg = &ca;
	}
	rc = store_put_snapshot(st, &in, tag && *tag ? tag : NULL, &id, &stats, err, errlen);
	if (rc == 0) {
		char disk_part[64] = "";
		store_id_hex(&id, id_hex);
		if (in.nr_disks)
			snprintf(disk_part, sizeof(disk_part), "; of the disks' %llu, %llu new",
				 (unsigned long long)stats.disk_data_chunks,
				 (unsigned long long)stats.disk_new_chunks);
		log_info("snapshot %.12s written to the store %s in %.1f ms: %llu of %llu chunks new "
			 "(%llu reused%s%s)",
			 id_hex, store_root, stats.seconds * 1e3, (unsigned long long)stats.new_chunks,
			 (unsigned long long)stats.data_chunks, (unsigned long long)stats.reused_chunks,
			 in.parent ? ", incremental" : "", disk_part);
	}
out:
	free(changed);
	json_decref(config);
	json_decref(saved);
	store_close(st);
	return rc;
}

/* Applies the safe changes of opts to cfg. */
static int apply_restore_opts(struct vm_config *cfg, const struct vm_restore_opts *o, char *err,
			      size_t errlen)
{
	char *s;

	if (o->agent_socket) {
		if (!cfg->agent_socket)
			return err_fail(err, errlen, -EINVAL,
				    "the snapshot has no agent channel: one cannot be added on restore");
		if (!(s = strdup(o->agent_socket)))
			return err_fail(err, errlen, -ENOMEM, "out of memory");
		free(cfg->agent_socket);
		cfg->agent_socket = s;
	}
	if (o->set_serial) {
		s = o->serial_path ? strdup(o->serial_path) : NULL;
		if (o->serial_path && !s)
			return err_fail(err, errlen, -ENOMEM, "out of memory");
		free(cfg->serial_path);
		cfg->serial_path = s;
		cfg->serial_mode = o->serial_mode;
	}
	if (o->hostname) {
		if (!(s = strdup(o->hostname)))
			return err_fail(err, errlen, -ENOMEM, "out of memory");
		free(cfg->hostname);
		cfg->hostname = s;
	}
	cfg->platform = o->platform;
	return vm_config_validate(cfg, err, errlen);
}

/* Builds, starts parked and publishes a VM from an opened snapshot. */
static int vm_restore_from(struct snapshot *snap, const char *what, const struct vm_restore_opts *opts,
			   struct loop *loop, vm_exit_cb *on_exit, void *arg, uint64_t t0, char *err,
			   size_t errlen, struct vm **out)
{
	int rc;

	if (opts && (rc = apply_restore_opts(&snap->cfg, opts, err, errlen)) < 0)
		return rc;
	uint64_t t1 = time_mono_ns();
	rc = vm_create_from(&snap->cfg, snap, loop, on_exit, arg, err, errlen, out);
	if (rc < 0)
		return rc;
	if (snap->from_store) {
		snprintf((*out)->origin_store, sizeof((*out)->origin_store), "%s", snap->store_root);
		(*out)->origin_id = snap->ss.id;
		(*out)->origin_chunk_size = snap->ss.chunk_size;
	}
	if (opts && opts->clone_id && (*out)->loader && (*out)->loader->set_identity &&
	    (rc = (*out)->loader->set_identity(*out, opts->clone_id)) < 0) {
		err_fail(err, errlen, rc, "cannot set the clone identity: %s", strerror(-rc));
		vm_destroy(*out);
		*out = NULL;
		return rc;
	}
	if (opts)
		(*out)->seccomp = opts->seccomp;
	uint64_t t2 = time_mono_ns();
	rc = vm_start_restored(*out, !(opts && opts->running));
	uint64_t t3 = time_mono_ns();
	(*out)->timings.threads_ns = t3 - t2;
	if (rc < 0) {
		err_fail(err, errlen, rc, "cannot start the vCPU threads: %s", strerror(-rc));
		vm_destroy(*out);
		*out = NULL;
		return rc;
	}
	/* Only now, with everything restored, the sockets take their paths. */
	if ((rc = chan_publish(&(*out)->agent)) < 0 || (rc = chan_publish(&(*out)->console)) < 0 ||
	    ((*out)->mach && (*out)->loader->publish && (rc = (*out)->loader->publish(*out)) < 0)) {
		err_fail(err, errlen, rc, "cannot put the channel sockets in place: %s", strerror(-rc));
		vm_destroy(*out);
		*out = NULL;
		return rc;
	}
	log_info("restored %s in %.2f ms (open and verify %.2f ms, VM %.2f ms, vCPU threads "
		 "%.2f ms, sockets %.2f ms), %s",
		 what, (time_mono_ns() - t0) / 1e6, (t1 - t0) / 1e6, (t2 - t1) / 1e6, (t3 - t2) / 1e6,
		 (time_mono_ns() - t3) / 1e6, opts && opts->running ? "running" : "paused");
	return 0;
}

int vm_restore(const char *dir, const struct vm_restore_opts *opts, struct loop *loop,
	       vm_exit_cb *on_exit, void *arg, char *err, size_t errlen, struct vm **out)
{
	struct snapshot snap;
	uint64_t t0 = time_mono_ns();
	int rc = snapshot_open(dir, &snap, err, errlen);

	if (rc < 0)
		return rc;
	rc = vm_restore_from(&snap, dir, opts, loop, on_exit, arg, t0, err, errlen, out);
	snapshot_close(&snap);
	return rc;
}

int vm_restore_store(const char *store_root, const char *ref, const struct vm_restore_opts *opts,
		     struct loop *loop, vm_exit_cb *on_exit, void *arg, char *err, size_t errlen,
		     struct vm **out)
{
	struct snapshot snap;
	char what[200];
	uint64_t t0 = time_mono_ns();
	int rc = snapshot_open_store(store_root, ref, &snap, err, errlen);

	if (rc < 0)
		return rc;
	snprintf(what, sizeof(what), "store://%s", ref);
	rc = vm_restore_from(&snap, what, opts, loop, on_exit, arg, t0, err, errlen, out);
	snapshot_close(&snap);
	return rc;
}

/* ------------------------------------------------------------ templates */

struct vm_template {
	struct snapshot snap;
	char ref[256];
};

int vm_template_open(const char *store_root, const char *ref, enum vm_platform platform,
		     struct vm_template **out, char *err, size_t errlen)
{
	struct vm_template *t = calloc(1, sizeof(*t));
	const struct platform *pl;
	int rc;

	if (!t)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	rc = snapshot_open_store(store_root, ref, &t->snap, err, errlen);
	if (rc < 0) {
		free(t);
		return rc;
	}
	/* Cache what every restore would ask the host again. Best effort:
	 * without it, restores ask themselves. */
	if (platform == VM_PLATFORM_AUTO) {
		char why[256] = "";
		if (vm_platform_resolve(VM_PLATFORM_AUTO, &platform, why, sizeof(why)) < 0)
			platform = VM_PLATFORM_PROCESS;
	}
	pl = vm_platform_ops(platform);
	if (pl->template_cache)
		pl->template_cache(&t->snap);
	snprintf(t->ref, sizeof(t->ref), "%s", ref);
	*out = t;
	return 0;
}

void vm_template_close(struct vm_template *t)
{
	if (!t)
		return;
	snapshot_close(&t->snap);
	free(t);
}

const struct vm_config *vm_template_config(const struct vm_template *t)
{
	return &t->snap.cfg;
}

void vm_template_id(const struct vm_template *t, char id_hex[33])
{
	store_id_hex(&t->snap.ss.id, id_hex);
}

unsigned vm_template_fds(const struct vm_template *t, int *fds, unsigned max)
{
	unsigned n = 0;

	if (n < max)
		fds[n++] = t->snap.mem_fd;
	for (unsigned i = 0; t->snap.from_store && i < t->snap.ss.nr_disks && n < max; i++)
		fds[n++] = t->snap.ss.disks[i].fd;
	return n;
}

void vm_template_set_fds(struct vm_template *t, const int *fds, unsigned n)
{
	if (n > 0)
		t->snap.mem_fd = fds[0];
	for (unsigned i = 0; t->snap.from_store && i < t->snap.ss.nr_disks && i + 1 < n; i++)
		t->snap.ss.disks[i].fd = fds[i + 1];
}

int vm_restore_template(const struct vm_template *t, const struct vm_restore_opts *opts,
			struct loop *loop, vm_exit_cb *on_exit, void *arg, char *err, size_t errlen,
			struct vm **out)
{
	uint64_t t0 = time_mono_ns();
	struct snapshot s = t->snap; /* shallow: units, manifest and chunk map are only read */
	char what[300];
	int rc;

	if (vm_config_copy(&s.cfg, &t->snap.cfg) < 0)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	s.mem_fd = fcntl(t->snap.mem_fd, F_DUPFD_CLOEXEC, 0);
	if (s.mem_fd < 0) {
		rc = err_fail(err, errlen, -errno, "cannot use the template's memory image: %s",
			  strerror(errno));
		vm_config_free(&s.cfg);
		return rc;
	}
	snprintf(what, sizeof(what), "store://%s", t->ref);
	rc = vm_restore_from(&s, what, opts, loop, on_exit, arg, t0, err, errlen, out);
	if (s.mem_fd >= 0)
		close(s.mem_fd);
	vm_config_free(&s.cfg);
	return rc;
}
