/* vmm/fguest/sys_time.c - clocks and sleeping. The guest's monotonic clock
 * stops while the VM is paused; its realtime clock is the host's. */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>

#include "vmm/fguest/fguest.h"
#include "vmm/vm.h"

#define NSEC 1000000000ULL

static int clock_now(struct vm *vm, uint64_t clk, uint64_t *ns)
{
	struct timespec ts;

	switch (clk) {
	case CLOCK_REALTIME:
	case CLOCK_REALTIME_COARSE:
	case CLOCK_TAI:
		*ns = time_real_ns();
		return 0;
	case CLOCK_MONOTONIC:
	case CLOCK_MONOTONIC_RAW:
	case CLOCK_MONOTONIC_COARSE:
	case CLOCK_BOOTTIME:
		*ns = vm_guest_now(vm);
		return 0;
	case CLOCK_PROCESS_CPUTIME_ID:
	case CLOCK_THREAD_CPUTIME_ID:
		clock_gettime((clockid_t)clk, &ts);
		*ns = (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
		return 0;
	}
	return -EINVAL;
}

static long put_timespec(struct fg_call *c, uint64_t addr, uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / NSEC), .tv_nsec = (long)(ns % NSEC) };
	return fg_copy_to_user(c->fg, addr, &ts, sizeof(ts));
}

/* Reads a guest timespec. Returns 0, -EFAULT, or -EINVAL if malformed. */
static int get_timespec(struct fg_call *c, uint64_t addr, uint64_t *ns)
{
	struct timespec ts;

	if (fg_copy_from_user(c->fg, &ts, addr, sizeof(ts)) < 0)
		return -EFAULT;
	if (ts.tv_sec < 0 || ts.tv_nsec < 0 || ts.tv_nsec >= (long)NSEC)
		return -EINVAL;
	if ((uint64_t)ts.tv_sec > UINT64_MAX / NSEC - 1)
		*ns = UINT64_MAX / 2;
	else
		*ns = (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
	return 0;
}

static bool pred_never(void *arg)
{
	(void)arg;
	return false;
}

/* Sleeps until the guest-monotonic deadline. */
static long sleep_until(struct fg_call *c, uint64_t deadline)
{
	if (deadline <= vm_guest_now(c->vm))
		return 0;
	int rc = vcpu_wait(c->v, pred_never, NULL, deadline);
	return rc == -ETIMEDOUT ? 0 : -EINTR;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	uint64_t r;
	return add_overflows(a, b, &r) ? UINT64_MAX / 2 : MIN(r, UINT64_MAX / 2);
}

/* Converts an absolute time on clock clk into a guest-monotonic deadline. */
static uint64_t deadline_of(struct vm *vm, uint64_t clk, uint64_t abs_ns)
{
	uint64_t mono = vm_guest_now(vm);
	if (clk == CLOCK_REALTIME || clk == CLOCK_TAI) {
		uint64_t real = time_real_ns();
		return abs_ns <= real ? mono : sat_add(mono, abs_ns - real);
	}
	return abs_ns;
}

long fg_sys_time(struct fg_call *c, bool *handled)
{
	uint64_t ns;
	int rc;

	*handled = true;
	switch (c->nr) {
	case SYS_clock_gettime:
		rc = clock_now(c->vm, c->a[0], &ns);
		return rc < 0 ? rc : put_timespec(c, c->a[1], ns);
	case SYS_clock_getres:
		rc = clock_now(c->vm, c->a[0], &ns);
		if (rc < 0 || !c->a[1])
			return rc;
		return put_timespec(c, c->a[1], 1);
	case SYS_gettimeofday:
		if (c->a[0]) {
			ns = time_real_ns();
			struct timeval tv = { .tv_sec = (time_t)(ns / NSEC),
					      .tv_usec = (suseconds_t)(ns % NSEC / 1000) };
			if (fg_copy_to_user(c->fg, c->a[0], &tv, sizeof(tv)) < 0)
				return -EFAULT;
		}
		if (c->a[1]) {
			struct timezone tz = { 0, 0 };
			if (fg_copy_to_user(c->fg, c->a[1], &tz, sizeof(tz)) < 0)
				return -EFAULT;
		}
		return 0;
	case SYS_time:
		ns = time_real_ns() / NSEC;
		if (c->a[0] && fg_copy_to_user(c->fg, c->a[0], &ns, sizeof(ns)) < 0)
			return -EFAULT;
		return (long)ns;
	case SYS_nanosleep:
		rc = get_timespec(c, c->a[0], &ns);
		if (rc < 0)
			return rc;
		return sleep_until(c, sat_add(vm_guest_now(c->vm), ns));
	case SYS_clock_nanosleep: {
		uint64_t now;
		if (c->a[0] == CLOCK_THREAD_CPUTIME_ID)
			return -EINVAL;
		rc = clock_now(c->vm, c->a[0], &now);
		if (rc < 0)
			return rc;
		if (c->a[1] & ~(uint64_t)TIMER_ABSTIME)
			return -EINVAL;
		rc = get_timespec(c, c->a[2], &ns);
		if (rc < 0)
			return rc;
		if (c->a[1] & TIMER_ABSTIME)
			return sleep_until(c, deadline_of(c->vm, c->a[0], ns));
		return sleep_until(c, sat_add(vm_guest_now(c->vm), ns));
	}
	case SYS_sched_yield:
		sched_yield();
		return 0;
	}
	*handled = false;
	return -ENOSYS;
}
