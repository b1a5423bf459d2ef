/* vmm/fail.c - see fail.h. */
#include "vmm/fail.h"

#include <stdarg.h>
#include <stdio.h>

int vmm_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}
