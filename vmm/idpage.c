/* vmm/idpage.c - the identity page's writes at boot, restore and clone
 * (see idpage.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/util.h"
#include "guest/abi/forkvm_identity.h"
#include "vmm/idpage.h"

int idpage_write(struct gmem *m, uint64_t gpa, bool restored)
{
	struct forkvm_identity id;
	uint64_t gen = 0;

	if (gmem_read(m, gpa, &id, sizeof(id)) < 0)
		return -EFAULT;
	if (restored) {
		/* The guest can write this page (it is its memory): trust only
		 * the magic and carry the counter on. */
		gen = id.magic == FORKVM_IDENTITY_MAGIC ? id.generation + 1 : 1;
	} else {
		memset(&id, 0, sizeof(id));
	}
	id.magic = FORKVM_IDENTITY_MAGIC;
	id.version = FORKVM_IDENTITY_VERSION;
	id.size = sizeof(id);
	id.generation = gen;
	id.restored_realtime_ns = restored ? time_real_ns() : 0;
	if (getrandom(id.random, sizeof(id.random), 0) != sizeof(id.random))
		return -EIO;
	id.clone_id[sizeof(id.clone_id) - 1] = '\0';
	return gmem_write(m, gpa, &id, sizeof(id));
}

int idpage_set_clone(struct gmem *m, uint64_t gpa, const char *clone_id)
{
	struct forkvm_identity id;

	if (gmem_read(m, gpa, &id, sizeof(id)) < 0)
		return -EFAULT;
	if (getrandom(id.random, sizeof(id.random), 0) != sizeof(id.random))
		return -EIO;
	memset(id.clone_id, 0, sizeof(id.clone_id));
	snprintf(id.clone_id, sizeof(id.clone_id), "%s", clone_id);
	id.restored_realtime_ns = time_real_ns();
	return gmem_write(m, gpa, &id, sizeof(id));
}

uint64_t idpage_generation(const struct gmem *m, uint64_t gpa)
{
	struct forkvm_identity id;

	if (gmem_read(m, gpa, &id, sizeof(id)) < 0)
		return 0;
	return id.magic == FORKVM_IDENTITY_MAGIC ? id.generation : 0;
}
