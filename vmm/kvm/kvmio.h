/* vmm/kvmio.h - KVM ioctls that a signal may interrupt. Private to vmm/.
 *
 * Slow KVM ioctls return EINTR when a signal arrives (KVM_CREATE_VM does,
 * readily, while it registers its MMU notifier; in the nested lane it takes
 * a quarter of a second). forkvm and forkd take signals at any time (kicks,
 * SIGCHLD, timers), so every KVM ioctl except KVM_RUN, whose EINTR is the
 * kick, goes through kvm_ioctl(). */
#ifndef FORKVM_VMM_KVMIO_H
#define FORKVM_VMM_KVMIO_H

#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>

/* ioctl(fd, req, arg), repeated while it fails with EINTR. Returns what
 * ioctl returns (-1 with errno set on failure). */
static inline int kvm_ioctl_(int fd, unsigned long req, unsigned long arg)
{
	int rc;
	do
		rc = ioctl(fd, req, arg);
	while (rc < 0 && errno == EINTR);
	return rc;
}
#define kvm_ioctl(fd, req, arg) kvm_ioctl_((fd), (req), (unsigned long)(uintptr_t)(arg))

#endif
