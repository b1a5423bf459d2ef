/* vmm/fail.h - private to vmm/: the one way its functions report an error
 * (a message in the caller's buffer, -errno returned). */
#ifndef FORKVM_VMM_FAIL_H
#define FORKVM_VMM_FAIL_H

#include <stddef.h>

/* Formats fmt into err (errlen bytes; NULL or 0: no message) and returns
 * rc, a negative errno. */
int vmm_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
