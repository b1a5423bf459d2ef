/* vmm/api.h - private: the REST router, exposed so unit tests can feed it
 * raw HTTP through http_process_raw(). */
#ifndef FORKVM_VMM_API_H
#define FORKVM_VMM_API_H

#include "common/http.h"
#include "vmm/vmm.h"

struct vmm_api {
	struct vmm *vmm;
	struct http_server *srv;
	void (*on_shutdown)(void *arg);
	void *arg;
};

/* The http_handler of the VMM's API; arg is a struct vmm_api. */
void vmm_api_handle(void *arg, struct http_exchange *ex);

/* Maps a -errno of a struct vmm verb to an HTTP status. */
int vmm_api_status(int rc);

#endif
