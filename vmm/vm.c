/* vmm/vm.c - VM lifecycle, the same on every platform: build (guest RAM,
 * the platform's VM and vCPUs, channels, payload or snapshot state), start,
 * pause, resume, stop, destroy; the notifier that hands vCPU events to the
 * loop thread. Snapshots, restores and templates are in vmm/snapshot.c. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "common/log.h"
#include "vmm/fguest/fguest.h"
#include "vmm/loader.h"
#include "vmm/platform.h"
#include "vmm/snapshot.h"
#include "vmm/state.h"
#include "vmm/vm.h"

#define VM_MAX_PAYLOAD (256ULL << 20)

/* Payload loaders, asked in this order. */
/* Asked in this order: the Linux loader's probe is the narrower (a
 * bzImage, or an ELF linked in the kernel's half of the address space). */
static const struct vm_loader *const vm_loaders[] = { &linux_loader, &fguest_loader };

/* ------------------------------------------------------------ platforms */

int vm_platform_parse(const char *s, enum vm_platform *out)
{
	if (!strcmp(s, "auto"))
		*out = VM_PLATFORM_AUTO;
	else if (!strcmp(s, "kvm"))
		*out = VM_PLATFORM_KVM;
	else if (!strcmp(s, "process"))
		*out = VM_PLATFORM_PROCESS;
	else
		return -EINVAL;
	return 0;
}

const char *vm_platform_name(enum vm_platform p)
{
	switch (p) {
	case VM_PLATFORM_AUTO:
		return "auto";
	case VM_PLATFORM_KVM:
		return "kvm";
	case VM_PLATFORM_PROCESS:
		return "process";
	}
	return "unknown";
}

const struct platform *vm_platform_ops(enum vm_platform p)
{
	return p == VM_PLATFORM_PROCESS ? &platform_process : &platform_kvm;
}

int vm_platform_resolve(enum vm_platform want, enum vm_platform *got, char *why, size_t len)
{
	char kvm_why[256] = "";
	int rc;

	if (want == VM_PLATFORM_AUTO) {
		if (platform_kvm.probe(kvm_why, sizeof(kvm_why)) == 0) {
			*got = VM_PLATFORM_KVM;
			return 0;
		}
		want = VM_PLATFORM_PROCESS;
	}
	rc = vm_platform_ops(want)->probe(why, len);
	if (rc == 0)
		*got = want;
	else if (kvm_why[0])
		snprintf(why + strlen(why), len - strlen(why), "; and KVM: %s", kvm_why);
	return rc;
}

const char *vm_platform_jail_device(enum vm_platform p)
{
	return vm_platform_ops(p)->jail_device;
}

const char *vm_get_platform(const struct vm *vm)
{
	return vm->plat->name;
}

const char *vm_state_name(enum vm_state s)
{
	switch (s) {
	case VM_STATE_CREATED:
		return "Created";
	case VM_STATE_RUNNING:
		return "Running";
	case VM_STATE_PAUSED:
		return "Paused";
	case VM_STATE_SHUTDOWN:
		return "Shutdown";
	}
	return "Unknown";
}

uint64_t vm_guest_now(struct vm *vm)
{
	uint64_t base = __atomic_load_n(&vm->clock_base, __ATOMIC_SEQ_CST);
	uint64_t paused = __atomic_load_n(&vm->paused_at, __ATOMIC_SEQ_CST);
	if (!base)
		return 0; /* not started */
	return (paused ? paused : time_mono_ns()) - base;
}

void vm_notify(struct vm *vm, unsigned bits)
{
	uint64_t one = 1;

	__atomic_or_fetch(&vm->notify_pending, bits, __ATOMIC_SEQ_CST);
	if (vm->notify_fd >= 0 && write(vm->notify_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: a notification is pending anyway */
	}
}

/* Makes every vCPU look at pause_req/stopping: out of KVM_RUN, out of a
 * socket poll (wake_fd), out of a condition wait (the broadcast). */
static void vm_kick_all(struct vm *vm)
{
	uint64_t one = 1;

	if (vm->wake_fd >= 0 && write(vm->wake_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: already readable */
	}
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	pthread_cond_broadcast(&vm->cond);
}

static void vm_terminate_va(struct vm *vm, int status, bool faulted, const char *fmt, va_list ap)
{
	if (!vm->exit.exited) {
		vm->exit.exited = true;
		vm->exit.faulted = faulted;
		vm->exit.status = status;
		vsnprintf(vm->exit.reason, sizeof(vm->exit.reason), fmt, ap);
	}
	__atomic_store_n(&vm->stopping, 1, __ATOMIC_SEQ_CST);
	vm_kick_all(vm);
	pthread_cond_broadcast(&vm->cond);
	vm_notify(vm, VM_NOTIFY_EXIT);
}

void vm_terminate_locked(struct vm *vm, int status, bool faulted, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vm_terminate_va(vm, status, faulted, fmt, ap);
	va_end(ap);
}

void vm_terminate(struct vm *vm, int status, bool faulted, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&vm->lock);
	va_start(ap, fmt);
	vm_terminate_va(vm, status, faulted, fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&vm->lock);
}

/* ------------------------------------------------------------ build */

static void on_notify(void *arg, uint32_t events)
{
	struct vm *vm = arg;
	uint64_t v;
	unsigned bits;

	(void)events;
	if (read(vm->notify_fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: drained by an earlier round */
	}
	bits = __atomic_exchange_n(&vm->notify_pending, 0, __ATOMIC_SEQ_CST);
	if (bits & VM_NOTIFY_CHAN) {
		chan_service(&vm->agent, vm->loop);
		chan_service(&vm->console, vm->loop);
	}
	if ((bits & VM_NOTIFY_DEV) && vm->loader && vm->loader->service)
		vm->loader->service(vm);
	if ((bits & VM_NOTIFY_EXIT) && vm->on_exit)
		vm->on_exit(vm->on_exit_arg, vm);
}

static struct vm *vm_alloc(const struct vm_config *cfg, const struct platform *plat)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	pthread_condattr_t ca;

	if (!vm)
		return NULL;
	vm->notify_fd = vm->wake_fd = -1;
	vm->mem.fd = -1;
	vm->agent.out_fd = vm->agent.listen_fd = vm->agent.conn_fd = -1;
	vm->console.out_fd = vm->console.listen_fd = vm->console.conn_fd = -1;
	if (vm_config_copy(&vm->cfg, cfg) < 0) {
		free(vm);
		return NULL;
	}
	pthread_mutex_init(&vm->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->cond, &ca);
	pthread_condattr_destroy(&ca);
	vm->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->wake_fd < 0) {
		vm_config_free(&vm->cfg);
		free(vm);
		return NULL;
	}
	vm->state = VM_STATE_CREATED;
	vm->nr_vcpus = cfg->boot_vcpus;
	vm->plat = plat;
	return vm;
}

static int vm_channels(struct vm *vm, bool takeover, char *err, size_t errlen)
{
	static const enum chan_mode serial_modes[] = {
		[VM_SERIAL_OFF] = CHAN_OFF, [VM_SERIAL_TTY] = CHAN_TTY,
		[VM_SERIAL_FILE] = CHAN_FILE, [VM_SERIAL_SOCKET] = CHAN_SOCKET,
	};
	int rc = chan_open(&vm->console, vm, "console", serial_modes[vm->cfg.serial_mode],
			   vm->cfg.serial_path, false, takeover, err, errlen);
	if (rc < 0)
		return rc;
	if (vm->cfg.agent_socket)
		return chan_open(&vm->agent, vm, "agent", CHAN_SOCKET, vm->cfg.agent_socket, true,
				 takeover, err, errlen);
	return chan_open(&vm->agent, vm, "agent", CHAN_OFF, NULL, true, false, err, errlen);
}

/* Maps the payload file read-only: only the pages the loader touches are
 * read (a payload's debug sections never are). */
static int map_payload(const char *path, const uint8_t **image, size_t *len, char *err,
		       size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return err_fail(err, errlen, -errno, "cannot read kernel %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		rc = err_fail(err, errlen, -errno, "cannot read kernel %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = err_fail(err, errlen, S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL,
			  "kernel %s is not a regular file", path);
		goto out;
	}
	if (st.st_size == 0) {
		rc = err_fail(err, errlen, -ENOEXEC, "kernel %s is an empty file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > VM_MAX_PAYLOAD) {
		rc = err_fail(err, errlen, -EFBIG, "kernel %s is larger than 256 MiB", path);
		goto out;
	}
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		rc = err_fail(err, errlen, -errno, "cannot map kernel %s: %s", path, strerror(errno));
		goto out;
	}
	*image = p;
	*len = (size_t)st.st_size;
	rc = 0;
out:
	close(fd);
	return rc;
}

/* The first loader that recognizes the mapped payload, in vm->loader. */
static int vm_probe_payload(struct vm *vm, const uint8_t *image, size_t len, char *err,
			    size_t errlen)
{
	for (size_t i = 0; i < sizeof(vm_loaders) / sizeof(vm_loaders[0]); i++) {
		if (vm_loaders[i]->probe(image, len)) {
			vm->loader = vm_loaders[i];
			if (!vm->loader->machine && vm->cfg.nr_disks)
				return err_fail(err, errlen, -EINVAL,
					    "%s: a function guest has no disks (--disk is for Linux guests)",
					    vm->cfg.kernel);
			if (!vm->loader->machine && vm->cfg.vsock_cid)
				return err_fail(err, errlen, -EINVAL,
					    "%s: a function guest has no vsock device (--vsock is for Linux "
					    "guests; a function guest's agent channel is its fd 0/1)",
					    vm->cfg.kernel);
			return 0;
		}
	}
	return err_fail(err, errlen, -ENOEXEC, "%s: not a payload forkvm can load (a static x86-64 ELF, or a Linux bzImage or vmlinux)",
		    vm->cfg.kernel);
}

/* Loads the mapped payload into guest memory with its loader. */
static int vm_load_payload(struct vm *vm, const uint8_t *image, size_t len, char *err,
			   size_t errlen)
{
	char why[400] = "";
	int rc = vm->loader->load(vm, image, len, why, sizeof(why));

	if (rc < 0)
		snprintf(err, errlen, "%s: %s", vm->cfg.kernel, why);
	return rc;
}

const struct vm_loader *vm_loader_by_name(const char *name)
{
	for (size_t i = 0; i < sizeof(vm_loaders) / sizeof(vm_loaders[0]); i++)
		if (!strcmp(vm_loaders[i]->name, name))
			return vm_loaders[i];
	return NULL;
}

/* Builds the VM: a fresh boot of the payload, or (snap != NULL) the
 * machine a snapshot describes, its memory mapped copy-on-write and its
 * state units applied. */
static int vm_build_in(struct vm *vm, struct snapshot *snap, const uint8_t **image,
		       size_t *image_len, char *err, size_t errlen)
{
	uint64_t t0 = time_mono_ns(), t1, t2, t3;
	int rc;

	vm->vcpus = calloc(vm->nr_vcpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		vm->vcpus[i].vm = vm;
		vm->vcpus[i].id = i;
	}
	/* The payload first: a missing, unreadable or unknown file is the
	 * user's error to hear about, whatever the platform. */
	if (!snap) {
		rc = map_payload(vm->cfg.kernel, image, image_len, err, errlen);
		if (rc == 0)
			rc = vm_probe_payload(vm, *image, *image_len, err, errlen);
		if (rc < 0)
			return rc;
	}
	if (snap) {
		/* The payload's kind first: the platform builds a machine for a
		 * machine's snapshot (vm_apply_snapshot checks it). */
		vm->loader = vm_loader_by_name(snap->loader);
		/* Copy-on-write: the file is never written, restore costs no copy. */
		rc = gmem_init_file(&vm->mem, snap->mem_fd, vm->cfg.memory_size);
		snap->mem_fd = -1; /* gmem owns it now, even on failure */
		if (rc < 0)
			return err_fail(err, errlen, rc, "cannot map the snapshot's memory: %s",
				    strerror(-rc));
	} else {
		rc = gmem_init(&vm->mem, vm->cfg.memory_size, GMEM_MEMFD);
		if (rc < 0)
			return err_fail(err, errlen, rc, "cannot allocate %llu bytes of guest memory: %s",
				    (unsigned long long)vm->cfg.memory_size, strerror(-rc));
	}
	t1 = time_mono_ns();
	vm->timings.map_ns = t1 - t0;
	/* The platform's VM (it sets timings.kvm_ns and .create_ns), then
	 * its vCPUs. */
	rc = vm->plat->vm_create(vm, snap, err, errlen);
	uint64_t tv = time_mono_ns();
	for (unsigned i = 0; rc == 0 && i < vm->nr_vcpus; i++)
		rc = vm->plat->vcpu_create(&vm->vcpus[i], err, errlen);
	if (rc < 0)
		return rc;
	t2 = time_mono_ns();
	vm->timings.create_ns += t2 - tv;
	rc = vm_channels(vm, snap != NULL, err, errlen);
	if (rc < 0)
		return rc;
	vm->restoring = snap;
	rc = snap ? vm_apply_snapshot(vm, snap, err, errlen) : vm_load_payload(vm, *image, *image_len, err, errlen);
	vm->restoring = NULL;
	t3 = time_mono_ns();
	vm->timings.state_ns = t3 - t2;
	log_debug("VM built on %s in %.2f ms: RAM %.2f, VM and vCPUs %.2f, channels and %s %.2f",
		  vm->plat->name, (t3 - t0) / 1e6, (t1 - t0) / 1e6, (t2 - t1) / 1e6,
		  snap ? "state" : "payload", (t3 - t2) / 1e6);
	return rc;
}

static int vm_build(struct vm *vm, struct snapshot *snap, char *err, size_t errlen)
{
	const uint8_t *image = NULL;
	size_t image_len = 0;
	int rc = vm_build_in(vm, snap, &image, &image_len, err, errlen);

	if (image)
		munmap((void *)(uintptr_t)image, image_len);
	return rc;
}

int vm_create_from(const struct vm_config *cfg, struct snapshot *snap, struct loop *loop,
		   vm_exit_cb *on_exit, void *arg, char *err, size_t errlen, struct vm **out)
{
	struct vm *vm;
	int rc;

	enum vm_platform want;
	char why[300] = "";

	rc = vm_config_validate(cfg, err, errlen);
	if (rc < 0)
		return rc;
	rc = vm_platform_resolve(cfg->platform, &want, why, sizeof(why));
	if (rc < 0)
		return err_fail(err, errlen, rc, "platform %s: %s", vm_platform_name(cfg->platform), why);
	vm = vm_alloc(cfg, vm_platform_ops(want));
	if (!vm)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	vm->loop = loop;
	vm->on_exit = on_exit;
	vm->on_exit_arg = arg;

	rc = vm_build(vm, snap, err, errlen);
	if (rc < 0)
		goto err;
	vm->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->notify_fd < 0) {
		rc = err_fail(err, errlen, -errno, "eventfd: %s", strerror(errno));
		goto err;
	}
	rc = loop_add(loop, vm->notify_fd, EPOLLIN, on_notify, vm);
	if (rc == 0)
		rc = chan_attach(&vm->agent, loop);
	if (rc == 0)
		rc = chan_attach(&vm->console, loop);
	if (rc == 0 && vm->loader && vm->loader->attach)
		rc = vm->loader->attach(vm, loop);
	if (rc < 0) {
		err_fail(err, errlen, rc, "event loop: %s", strerror(-rc));
		goto err;
	}
	*out = vm;
	return 0;
err:
	vm_destroy(vm);
	return rc;
}

int vm_create(const struct vm_config *cfg, struct loop *loop, vm_exit_cb *on_exit, void *arg,
	      char *err, size_t errlen, struct vm **out)
{
	return vm_create_from(cfg, NULL, loop, on_exit, arg, err, errlen, out);
}

int vm_create_nokvm(const struct vm_config *cfg, char *err, size_t errlen, struct vm **out)
{
	struct vm *vm;
	int rc = vm_config_validate(cfg, err, errlen);

	if (rc < 0)
		return rc;
	vm = vm_alloc(cfg, &platform_none);
	if (!vm)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	rc = vm_build(vm, NULL, err, errlen);
	if (rc < 0) {
		vm_destroy(vm);
		return rc;
	}
	*out = vm;
	return 0;
}

int vm_set_identity(struct vm *vm, const char *clone_id)
{
	int rc;

	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_STATE_PAUSED)
		rc = -EBUSY;
	else if (!vm->loader || !vm->loader->set_identity)
		rc = -ENOTSUP;
	else
		rc = vm->loader->set_identity(vm, clone_id);
	pthread_mutex_unlock(&vm->lock);
	return rc;
}

/* ------------------------------------------------------------ lifecycle */

int vm_start(struct vm *vm)
{
	int rc = 0;

	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_STATE_CREATED || vm->plat == &platform_none) {
		pthread_mutex_unlock(&vm->lock);
		return -EBUSY;
	}
	__atomic_store_n(&vm->clock_base, time_mono_ns() - 1, __ATOMIC_SEQ_CST);
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		rc = -pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (rc < 0) {
			vm_terminate_locked(vm, 1, true, "cannot start vCPU thread %u: %s", i,
					    strerror(-rc));
			break;
		}
		v->thread_started = true;
	}
	vm->state = VM_STATE_RUNNING;
	pthread_mutex_unlock(&vm->lock);
	return rc;
}

int vm_start_restored(struct vm *vm, bool paused)
{
	int rc = 0;

	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_STATE_CREATED || vm->plat == &platform_none) {
		pthread_mutex_unlock(&vm->lock);
		return -EBUSY;
	}
	/* The guest's clock continues from the snapshot and stands still
	 * until resume. */
	uint64_t now = time_mono_ns();
	__atomic_store_n(&vm->clock_base, now - vm->restored_clock - 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&vm->paused_at, paused ? now : 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&vm->pause_req, paused ? 1 : 0, __ATOMIC_SEQ_CST);
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		rc = -pthread_create(&v->thread, NULL, vcpu_thread, v);
		if (rc < 0)
			break;
		v->thread_started = true;
	}
	while (rc == 0 && paused && vm->nr_parked < vm->nr_vcpus)
		pthread_cond_wait(&vm->cond, &vm->lock);
	vm->state = paused ? VM_STATE_PAUSED : VM_STATE_RUNNING;
	pthread_mutex_unlock(&vm->lock);
	return rc;
}

int vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_STATE_RUNNING || __atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST)) {
		pthread_mutex_unlock(&vm->lock);
		return -EBUSY;
	}
	__atomic_store_n(&vm->pause_req, 1, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&vm->cond);
	while (vm->nr_parked < vm->nr_vcpus && !__atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST)) {
		/* Kick again every 10 ms: cheap insurance against a lost signal. */
		vm_kick_all(vm);
		uint64_t t = time_mono_ns() + 10000000ULL;
		struct timespec ts = { .tv_sec = (time_t)(t / 1000000000ULL),
				       .tv_nsec = (long)(t % 1000000000ULL) };
		pthread_cond_timedwait(&vm->cond, &vm->lock, &ts);
	}
	if (__atomic_load_n(&vm->stopping, __ATOMIC_SEQ_CST)) {
		__atomic_store_n(&vm->pause_req, 0, __ATOMIC_SEQ_CST);
		pthread_mutex_unlock(&vm->lock);
		return -ESHUTDOWN;
	}
	__atomic_store_n(&vm->paused_at, time_mono_ns(), __ATOMIC_SEQ_CST);
	vm->state = VM_STATE_PAUSED;
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

void vm_get_timings(struct vm *vm, struct vm_timings *t)
{
	*t = vm->timings;
}

uint64_t vm_first_run_at(struct vm *vm)
{
	return __atomic_load_n(&vm->first_run_at, __ATOMIC_RELAXED);
}

int vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	__atomic_store_n(&vm->first_run_at, 0, __ATOMIC_RELAXED);
	if (vm->state != VM_STATE_PAUSED) {
		pthread_mutex_unlock(&vm->lock);
		return -EBUSY;
	}
	uint64_t now = time_mono_ns();
	uint64_t paused = __atomic_load_n(&vm->paused_at, __ATOMIC_SEQ_CST);
	uint64_t drain;
	if (read(vm->wake_fd, &drain, sizeof(drain)) < 0) {
		/* EAGAIN: nothing to drain */
	}
	__atomic_add_fetch(&vm->clock_base, now - paused, __ATOMIC_SEQ_CST);
	__atomic_store_n(&vm->paused_at, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&vm->pause_req, 0, __ATOMIC_SEQ_CST);
	vm->state = VM_STATE_RUNNING;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

void vm_stop(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	__atomic_store_n(&vm->stopping, 1, __ATOMIC_SEQ_CST);
	vm_kick_all(vm);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		if (v->thread_started) {
			pthread_join(v->thread, NULL);
			v->thread_started = false;
		}
	}
	pthread_mutex_lock(&vm->lock);
	vm->state = VM_STATE_SHUTDOWN;
	pthread_mutex_unlock(&vm->lock);
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	if (vm->vcpus)
		vm_stop(vm);
	if (vm->notify_fd >= 0) {
		if (vm->loop)
			loop_del(vm->loop, vm->notify_fd);
		close(vm->notify_fd);
	}
	if (vm->wake_fd >= 0)
		close(vm->wake_fd);
	chan_close(&vm->agent, vm->loop);
	chan_close(&vm->console, vm->loop);
	fguest_destroy(vm->fg);
	if (vm->mach && vm->loader && vm->loader->destroy)
		vm->loader->destroy(vm);
	free(vm->mach);
	vm->plat->vm_destroy(vm);
	for (unsigned i = 0; vm->vcpus && i < vm->nr_vcpus; i++)
		vcpu_state_free(&vm->vcpus[i]);
	free(vm->vcpus);
	gmem_fini(&vm->mem);
	vm_config_free(&vm->cfg);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
}

enum vm_state vm_get_state(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	enum vm_state s = vm->state;
	pthread_mutex_unlock(&vm->lock);
	return s;
}

void vm_set_seccomp(struct vm *vm, const struct vmm_seccomp *s)
{
	vm->seccomp = s;
}

void vm_get_exit_info(struct vm *vm, struct vm_exit_info *info)
{
	pthread_mutex_lock(&vm->lock);
	*info = vm->exit;
	pthread_mutex_unlock(&vm->lock);
}

const struct vm_config *vm_get_config(const struct vm *vm)
{
	return &vm->cfg;
}

void vm_get_counters(struct vm *vm, struct vm_counters *c)
{
	memset(c, 0, sizeof(*c));
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		c->exits += __atomic_load_n(&vm->vcpus[i].exits, __ATOMIC_RELAXED);
	c->syscalls = __atomic_load_n(&vm->syscalls, __ATOMIC_RELAXED);
	c->syscalls_enosys = __atomic_load_n(&vm->syscalls_enosys, __ATOMIC_RELAXED);
	pthread_mutex_lock(&vm->lock);
	c->memory_mapped_bytes = vm->fg ? vm->fg->mm.mapped : 0;
	pthread_mutex_unlock(&vm->lock);
}
