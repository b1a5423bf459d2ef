/* vmm/state.c - see state.h. */
#include "state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"


json_t *state_json_u64(uint64_t v)
{
	char s[24];
	snprintf(s, sizeof(s), "0x%" PRIx64, v);
	return json_string(s);
}

int state_parse_u64(const json_t *j, uint64_t *v)
{
	if (json_is_integer(j) && json_integer_value(j) >= 0) {
		*v = (uint64_t)json_integer_value(j);
		return 0;
	}
	if (!json_is_string(j))
		return -EINVAL;
	/* "0x..." hex or plain decimal, digits only: no sign, no blanks, no
	 * octal (strtoull would take " -1" and "010"). */
	const char *s = json_string_value(j);
	int base = (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) ? 16 : 10;
	const char *digits = base == 16 ? s + 2 : s;
	char *end;
	if (!((*digits >= '0' && *digits <= '9') ||
	      (base == 16 && ((*digits >= 'a' && *digits <= 'f') || (*digits >= 'A' && *digits <= 'F')))))
		return -EINVAL;
	errno = 0;
	unsigned long long x = strtoull(digits, &end, base);
	if (*end || errno)
		return -EINVAL;
	*v = x;
	return 0;
}

int state_get_u64(const json_t *obj, const char *key, uint64_t *v, char *err, size_t errlen)
{
	if (state_parse_u64(json_object_get(obj, key), v) < 0)
		return err_fail(err, errlen, -EINVAL, "%s: missing or not a 64-bit number", key);
	return 0;
}

int state_get_u32(const json_t *obj, const char *key, uint32_t *v, char *err, size_t errlen)
{
	uint64_t x;
	int rc = state_get_u64(obj, key, &x, err, errlen);
	if (rc < 0)
		return rc;
	if (x > UINT32_MAX)
		return err_fail(err, errlen, -EINVAL, "%s: out of range", key);
	*v = (uint32_t)x;
	return 0;
}

int state_get_bool(const json_t *obj, const char *key, bool *v, char *err, size_t errlen)
{
	const json_t *j = json_object_get(obj, key);
	if (!json_is_boolean(j))
		return err_fail(err, errlen, -EINVAL, "%s: missing or not a boolean", key);
	*v = json_is_true(j);
	return 0;
}

json_t *state_json_blob(const void *data, size_t len)
{
	char *s = malloc(2 * len + 1);
	json_t *j;

	if (!s)
		return NULL;
	hex_encode(data, len, s);
	j = json_string(s);
	free(s);
	return j;
}

int state_get_blob(const json_t *obj, const char *key, void *data, size_t len, char *err,
		   size_t errlen)
{
	const json_t *j = json_object_get(obj, key);
	if (!json_is_string(j) || hex_decode(json_string_value(j), data, len) < 0)
		return err_fail(err, errlen, -EINVAL, "%s: missing or not %zu bytes of hex", key, len);
	return 0;
}

int state_get_blob_any(const json_t *obj, const char *key, size_t max, uint8_t **data,
		       size_t *len, char *err, size_t errlen)
{
	const json_t *j = json_object_get(obj, key);
	size_t n;

	if (!json_is_string(j) || json_string_length(j) % 2)
		return err_fail(err, errlen, -EINVAL, "%s: missing or not hex", key);
	n = json_string_length(j) / 2;
	if (n > max)
		return err_fail(err, errlen, -EINVAL, "%s: %zu bytes, more than %zu", key, n, max);
	*data = malloc(n ? n : 1);
	if (!*data)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	if (hex_decode(json_string_value(j), *data, n) < 0) {
		free(*data);
		*data = NULL;
		return err_fail(err, errlen, -EINVAL, "%s: not hex", key);
	}
	*len = n;
	return 0;
}

int state_save(struct vm *vm, const struct state_unit *units, size_t n, json_t **out, char *err,
	       size_t errlen)
{
	json_t *arr = json_array();

	if (!arr)
		return err_fail(err, errlen, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *st = NULL;
		char why[400] = "";
		int rc = units[i].save(vm, units[i].arg, &st, why, sizeof(why));
		if (rc < 0) {
			json_decref(arr);
			return err_fail(err, errlen, rc, "saving %s: %s", units[i].name, why);
		}
		if (!st)
			continue; /* nothing to save: restore keeps its defaults */
		json_t *u = json_pack("{s:s,s:I,s:o}", "name", units[i].name, "version",
				      (json_int_t)units[i].version, "state", st);
		if (!u || json_array_append_new(arr, u) < 0) {
			json_decref(arr);
			return err_fail(err, errlen, -ENOMEM, "out of memory");
		}
	}
	*out = arr;
	return 0;
}

int state_restore(struct vm *vm, const struct state_unit *units, size_t n, const json_t *saved,
		  char *err, size_t errlen)
{
	size_t ns = json_array_size(saved);
	const json_t **match = calloc(n ? n : 1, sizeof(*match));
	uint32_t *versions = calloc(n ? n : 1, sizeof(*versions));
	int rc = 0;

	if (!match || !versions) {
		rc = err_fail(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	if (!json_is_array(saved)) {
		rc = err_fail(err, errlen, -EINVAL, "state.json: \"units\" must be an array");
		goto out;
	}
	/* Check everything before changing anything. */
	for (size_t i = 0; i < ns; i++) {
		const json_t *u = json_array_get(saved, i);
		const char *name = json_string_value(json_object_get(u, "name"));
		const json_t *st = json_object_get(u, "state");
		uint32_t version = 0;
		size_t k;

		if (!json_is_object(u) || !name || !json_is_object(st)) {
			rc = err_fail(err, errlen, -EINVAL,
				  "state.json: unit %zu needs a name, a version and a state object", i);
			goto out;
		}
		if (state_get_u32(u, "version", &version, err, errlen) < 0) {
			rc = err_fail(err, errlen, -EINVAL, "state.json: unit %s has no valid version", name);
			goto out;
		}
		for (k = 0; k < n && strcmp(units[k].name, name); k++)
			;
		if (k == n) {
			rc = err_fail(err, errlen, -EINVAL,
				  "state.json: unknown state unit '%s' (this VM has no such unit)", name);
			goto out;
		}
		if (match[k]) {
			rc = err_fail(err, errlen, -EINVAL, "state.json: duplicate state unit '%s'", name);
			goto out;
		}
		if (version > units[k].version) {
			rc = err_fail(err, errlen, -EINVAL,
				  "state.json: unit '%s' has version %u, newer than this forkvm "
				  "understands (%u)",
				  name, version, units[k].version);
			goto out;
		}
		match[k] = st;
		versions[k] = version;
	}
	for (size_t k = 0; k < n; k++) {
		char why[400] = "";
		if (!match[k])
			continue; /* power-on defaults */
		rc = units[k].restore(vm, units[k].arg, match[k], versions[k], why, sizeof(why));
		if (rc < 0) {
			err_fail(err, errlen, rc, "restoring %s: %s", units[k].name, why);
			goto out;
		}
	}
out:
	free(match);
	free(versions);
	return rc;
}
