/* tests/integration/test_library.c - the vmm library used directly: two
 * VMs in one process run, pause and exit independently (nothing in vmm/
 * is global); VMs are built and run while signals rain on the thread that
 * builds them (KVM ioctls interrupted by a signal are retried). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/loop.h"
#include "tests/lib/harness.h"
#include "vmm/vmm.h"

struct watch {
	int exited;
	struct vm *vms[2];
	int status[2];
};

static void on_exit_cb(void *arg, struct vm *vm)
{
	struct watch *w = arg;
	struct vm_exit_info info;

	vm_get_exit_info(vm, &info);
	for (int i = 0; i < 2; i++)
		if (w->vms[i] == vm)
			w->status[i] = info.status;
	w->exited++;
}

static void make_cfg(struct vm_config *cfg, const char *payload, const char *cmdline, unsigned cpus,
		     const char *console)
{
	vm_config_init(cfg);
	cr_assert_eq(vm_platform_parse(h_platform(), &cfg->platform), 0);
	cfg->boot_vcpus = cpus;
	cfg->memory_size = 64 << 20;
	cfg->kernel = h_payload(payload);
	cfg->cmdline = strdup(cmdline);
	cfg->serial_mode = VM_SERIAL_FILE;
	cfg->serial_path = strdup(console);
}

static int ticks_in(const char *path)
{
	char *c = h_read_file(path);
	int n = c ? h_count(c, "tick ") : 0;
	free(c);
	return n;
}

Test(library, two_vms_in_one_process, .timeout = 120)
{
	struct watch w = { 0 };
	struct loop *loop;
	struct vm_config a, b;
	char err[512];

	H_NEED_GUEST();
	char *dir = h_tmpdir();
	char *con_a = h_join(dir, "a.log"), *con_b = h_join(dir, "b.log");
	make_cfg(&a, "blocking", "20 20", 2, con_a);
	make_cfg(&b, "threads", "3 2000000", 3, con_b);
	cr_assert_eq(loop_create(&loop), 0);
	cr_assert_eq(vm_create(&a, loop, on_exit_cb, &w, err, sizeof(err), &w.vms[0]), 0, "%s", err);
	cr_assert_eq(vm_create(&b, loop, on_exit_cb, &w, err, sizeof(err), &w.vms[1]), 0, "%s", err);
	cr_assert_eq(vm_start(w.vms[0]), 0);
	cr_assert_eq(vm_start(w.vms[1]), 0);

	/* Pause A once it ticks; B runs to completion meanwhile. */
	while (ticks_in(con_a) < 2)
		loop_run_once(loop, 10);
	cr_assert_eq(vm_pause(w.vms[0]), 0);
	cr_assert_eq(vm_get_state(w.vms[0]), VM_STATE_PAUSED);
	int paused_ticks = ticks_in(con_a);
	while (w.exited < 1)
		loop_run_once(loop, 100);
	cr_assert_eq(w.status[1], 0, "VM B exited with %d", w.status[1]);
	cr_assert_eq(ticks_in(con_a), paused_ticks, "VM A ran while paused");
	cr_assert_eq(vm_get_state(w.vms[0]), VM_STATE_PAUSED);

	cr_assert_eq(vm_resume(w.vms[0]), 0);
	while (w.exited < 2)
		loop_run_once(loop, 100);
	cr_assert_eq(w.status[0], 0, "VM A exited with %d", w.status[0]);
	cr_assert_eq(ticks_in(con_a), 20);
	char *out_b = h_read_file(con_b);
	cr_assert(out_b && strstr(out_b, "total 6000000 expected 6000000"), "%s", out_b ? out_b : "");
	free(out_b);

	vm_destroy(w.vms[0]);
	vm_destroy(w.vms[1]);
	loop_destroy(loop);
	vm_config_free(&a);
	vm_config_free(&b);
	h_rmtree(dir);
	free(dir);
	free(con_a);
	free(con_b);
}

/* ------------------------------------------------------------ signals */

/* A storm of signals at one thread, whose handler does not restart
 * interrupted calls: the KVM ioctls that build a VM must be retried when a
 * signal interrupts them (KVM_CREATE_VM returns EINTR readily; forkvm and
 * forkd take SIGCHLD, timers and kicks at any time). */
struct storm {
	pthread_t target;
	atomic_bool stop;
	atomic_long sent;
};

static void storm_handler(int sig)
{
	(void)sig;
}

static void *storm_run(void *arg)
{
	struct storm *s = arg;
	while (!atomic_load(&s->stop)) {
		pthread_kill(s->target, SIGUSR2);
		atomic_fetch_add(&s->sent, 1);
	}
	return NULL;
}

Test(library, vms_are_built_and_run_under_a_storm_of_signals, .timeout = 300)
{
	struct sigaction sa = { .sa_handler = storm_handler }; /* no SA_RESTART */
	struct storm s = { .target = pthread_self() };
	struct watch w = { 0 };
	struct loop *loop;
	pthread_t t;
	char err[512];
	int n = h_size(20, 10);

	H_NEED_GUEST();
	char *dir = h_tmpdir(), *con = h_join(dir, "c.log");
	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGUSR2, &sa, NULL), 0);
	cr_assert_eq(loop_create(&loop), 0);
	atomic_init(&s.stop, false);
	atomic_init(&s.sent, 0);
	cr_assert_eq(pthread_create(&t, NULL, storm_run, &s), 0);
	for (int i = 0; i < n; i++) {
		struct vm_config cfg;
		struct vm *vm = NULL;
		make_cfg(&cfg, "blocking", "2 1", 2, con);
		int rc = vm_create(&cfg, loop, on_exit_cb, &w, err, sizeof(err), &vm);
		cr_assert_eq(rc, 0, "VM %d of %d, %ld signals so far: %s", i + 1, n,
			     atomic_load(&s.sent), err);
		if (i == n - 1) { /* the last one runs to its end, still under the storm */
			w.vms[0] = vm;
			cr_assert_eq(vm_start(vm), 0);
			while (w.exited < 1)
				loop_run_once(loop, 100);
			cr_assert_eq(w.status[0], 0, "the guest exited with %d", w.status[0]);
		}
		vm_destroy(vm);
		vm_config_free(&cfg);
	}
	atomic_store(&s.stop, true);
	pthread_join(t, NULL);
	cr_log_info("%d VMs built under %ld signals (%s)", n, atomic_load(&s.sent), h_where());
	cr_assert_gt(atomic_load(&s.sent), n);
	loop_destroy(loop);
	h_rmtree(dir);
	free(dir);
	free(con);
}
