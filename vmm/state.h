/* vmm/state.h - private: state units. Every piece of VM state that a
 * snapshot carries is a named, versioned unit (OpenVMM's model): vcpuN,
 * irqchip, pit, kvmclock, clock, console, agent, fguest. A unit saves to a
 * JSON object and restores from one. Restore matches saved units to the
 * VM's registered units by name:
 *   saved name unknown to this VM     -> error naming it
 *   the same name saved twice         -> error naming it
 *   registered unit without saved one -> left at its power-on defaults
 *   saved version newer than ours     -> error naming the unit
 * Units restore in registration order, which is the order that matters to
 * KVM (clock and irqchip before vCPUs run; within a vCPU, see kvmstate.c). */
#ifndef FORKVM_VMM_STATE_H
#define FORKVM_VMM_STATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;

struct state_unit {
	char name[32];
	uint32_t version; /* written by this build, and the newest it reads */
	/* Returns 0 and a new object in *out (NULL: nothing to save), or
	 * -errno with err set. */
	int (*save)(struct vm *vm, void *arg, json_t **out, char *err, size_t errlen);
	/* Applies state written with version <= this->version. */
	int (*restore)(struct vm *vm, void *arg, const json_t *state, uint32_t version, char *err,
		       size_t errlen);
	void *arg;
};

#define STATE_MAX_UNITS (16 + 254)

/* Fills units[] with the VM's units in registration order; returns the
 * count. */
size_t vm_state_units(struct vm *vm, struct state_unit *units, size_t max);

/* The "units" array of state.json: [{"name", "version", "state"}...]. */
int state_save(struct vm *vm, const struct state_unit *units, size_t n, json_t **out, char *err,
	       size_t errlen) __attribute__((warn_unused_result));
/* Checks saved against units (the rules above) before touching anything,
 * then restores in registration order. */
int state_restore(struct vm *vm, const struct state_unit *units, size_t n, const json_t *saved,
		  char *err, size_t errlen) __attribute__((warn_unused_result));

/* JSON helpers for state: 64-bit values as "0x..." strings (JSON numbers
 * lose precision beyond 2^53), binary blobs as hex strings. The getters
 * return 0 or -EINVAL with err naming the key. */
json_t *state_json_u64(uint64_t v);
/* Parses a JSON integer >= 0 or a "0x..."/decimal string. Returns 0 or -EINVAL. */
int state_parse_u64(const json_t *j, uint64_t *v) __attribute__((warn_unused_result));
int state_get_u64(const json_t *obj, const char *key, uint64_t *v, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* The same for the kernel's __u64 (unsigned long long). */
static inline int state_get_ull(const json_t *obj, const char *key, unsigned long long *v, char *err,
				size_t errlen)
{
	uint64_t t;
	int rc = state_get_u64(obj, key, &t, err, errlen);
	if (rc == 0)
		*v = t;
	return rc;
}
int state_get_u32(const json_t *obj, const char *key, uint32_t *v, char *err, size_t errlen)
	__attribute__((warn_unused_result));
int state_get_bool(const json_t *obj, const char *key, bool *v, char *err, size_t errlen)
	__attribute__((warn_unused_result));
json_t *state_json_blob(const void *data, size_t len);
/* Decodes a blob of exactly len bytes. */
int state_get_blob(const json_t *obj, const char *key, void *data, size_t len, char *err,
		   size_t errlen) __attribute__((warn_unused_result));
/* A blob of any length up to max (malloc'd in *data). */
int state_get_blob_any(const json_t *obj, const char *key, size_t max, uint8_t **data,
		       size_t *len, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
