/* vmm/config.c - struct vm_config: defaults, validation, the JSON form
 * (PUT /api/v1/vm.create, config.json) and Cloud Hypervisor style
 * command-line values ("boot=4", "size=4G", "socket=PATH"). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "common/unixsock.h"
#include "common/util.h"
#include "vmm/gmem.h"
#include "vmm/vmm.h"
#include "vmm/fguest/fguest.h"

void vm_config_init(struct vm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->boot_vcpus = VM_DEFAULT_VCPUS;
	cfg->memory_size = VM_DEFAULT_MEMORY;
	cfg->serial_mode = VM_SERIAL_TTY;
}

void vm_config_free(struct vm_config *cfg)
{
	free(cfg->kernel);
	free(cfg->cmdline);
	free(cfg->initramfs);
	free(cfg->serial_path);
	free(cfg->agent_socket);
	free(cfg->vsock_socket);
	free(cfg->hostname);
	for (unsigned i = 0; i < cfg->nr_disks; i++)
		free(cfg->disks[i].path);
	memset(cfg, 0, sizeof(*cfg));
}

/* Replaces *dst with a copy of src (NULL allowed). Returns 0 or -ENOMEM. */
static int set_str(char **dst, const char *src)
{
	char *c = NULL;
	if (src && !(c = strdup(src)))
		return -ENOMEM;
	free(*dst);
	*dst = c;
	return 0;
}

int vm_config_copy(struct vm_config *dst, const struct vm_config *src)
{
	struct vm_config c = *src;

	c.kernel = c.cmdline = c.initramfs = c.serial_path = c.agent_socket = c.hostname = c.vsock_socket = NULL;
	for (unsigned i = 0; i < c.nr_disks; i++)
		c.disks[i].path = NULL;
	bool disks_ok = true;
	for (unsigned i = 0; i < c.nr_disks; i++)
		disks_ok &= set_str(&c.disks[i].path, src->disks[i].path) == 0;
	if (!disks_ok || set_str(&c.kernel, src->kernel) || set_str(&c.cmdline, src->cmdline) ||
	    set_str(&c.initramfs, src->initramfs) ||
	    set_str(&c.serial_path, src->serial_path) || set_str(&c.agent_socket, src->agent_socket) ||
	    set_str(&c.hostname, src->hostname) || set_str(&c.vsock_socket, src->vsock_socket)) {
		vm_config_free(&c);
		return -ENOMEM;
	}
	*dst = c;
	return 0;
}

static int check_socket_path(const char *what, const char *path, char *err, size_t errlen)
{
	if (!path || !*path)
		return err_fail(err, errlen, -EINVAL, "%s: a socket path is required", what);
	if (strlen(path) > UNIXSOCK_PATH_MAX)
		return err_fail(err, errlen, -EINVAL, "%s: socket path longer than %d bytes: %s", what,
			    UNIXSOCK_PATH_MAX, path);
	return 0;
}

int vm_config_validate(const struct vm_config *cfg, char *err, size_t errlen)
{
	int rc;

	if (cfg->boot_vcpus < 1 || cfg->boot_vcpus > FG_MAX_VCPUS)
		return err_fail(err, errlen, -EINVAL, "cpus: boot_vcpus must be between 1 and %u (got %u)",
			    FG_MAX_VCPUS, cfg->boot_vcpus);
	rc = gmem_check_size(cfg->memory_size);
	if (rc == -EINVAL)
		return err_fail(err, errlen, -EINVAL, "memory: size %llu is not a multiple of 2 MiB",
			    (unsigned long long)cfg->memory_size);
	if (rc < 0)
		return err_fail(err, errlen, -EINVAL, "memory: size must be between %llu MiB and %llu GiB (got %llu bytes)",
			    GMEM_MIN_SIZE / MiB, GMEM_MAX_SIZE / GiB,
			    (unsigned long long)cfg->memory_size);
	if (!cfg->kernel || !*cfg->kernel)
		return err_fail(err, errlen, -EINVAL, "payload: kernel is required");
	if (cfg->serial_mode == VM_SERIAL_FILE && (!cfg->serial_path || !*cfg->serial_path))
		return err_fail(err, errlen, -EINVAL, "serial: file mode needs a path");
	if (cfg->serial_mode == VM_SERIAL_SOCKET &&
	    check_socket_path("serial", cfg->serial_path, err, errlen) < 0)
		return -EINVAL;
	if (cfg->agent_socket && check_socket_path("agent", cfg->agent_socket, err, errlen) < 0)
		return -EINVAL;
	if (cfg->agent_socket && cfg->serial_mode == VM_SERIAL_SOCKET &&
	    strcmp(cfg->agent_socket, cfg->serial_path) == 0)
		return err_fail(err, errlen, -EINVAL, "agent and serial cannot share the socket %s",
			    cfg->agent_socket);
	if (cfg->vsock_cid && (cfg->vsock_cid < VM_VSOCK_CID_MIN || cfg->vsock_cid > VM_VSOCK_CID_MAX))
		return err_fail(err, errlen, -EINVAL,
			    "vsock: cid must be between %u and %u (0-2 are the hypervisor, local "
			    "and host addresses; got %u)",
			    VM_VSOCK_CID_MIN, VM_VSOCK_CID_MAX, cfg->vsock_cid);
	if (cfg->vsock_socket && !cfg->vsock_cid)
		return err_fail(err, errlen, -EINVAL, "vsock: a socket needs a cid");
	if (cfg->vsock_socket && check_socket_path("vsock", cfg->vsock_socket, err, errlen) < 0)
		return -EINVAL;
	if (cfg->hostname && (strlen(cfg->hostname) > 64 || !*cfg->hostname))
		return err_fail(err, errlen, -EINVAL, "hostname must have 1 to 64 characters");
	if (cfg->nr_disks > VM_MAX_DISKS)
		return err_fail(err, errlen, -EINVAL, "disks: at most %u disks", VM_MAX_DISKS);
	for (unsigned i = 0; i < cfg->nr_disks; i++)
		if (!cfg->disks[i].path || !*cfg->disks[i].path)
			return err_fail(err, errlen, -EINVAL, "disks[%u]: a path is required", i);
	return 0;
}

/* ------------------------------------------------------------ JSON */

static const char *const serial_names[] = {
	[VM_SERIAL_OFF] = "Off", [VM_SERIAL_TTY] = "Tty",
	[VM_SERIAL_FILE] = "File", [VM_SERIAL_SOCKET] = "Socket",
};

/* Rejects keys of obj not in allowed (NULL-terminated). */
static int only_keys(const json_t *obj, const char *where, const char *const *allowed, char *err,
		     size_t errlen)
{
	const char *key;
	json_t *val;

	json_object_foreach((json_t *)(uintptr_t)obj, key, val) {
		bool ok = false;
		for (const char *const *a = allowed; *a; a++)
			ok |= strcmp(key, *a) == 0;
		if (!ok)
			return err_fail(err, errlen, -EINVAL, "unknown field %s%s%s", where, *where ? "." : "", key);
	}
	return 0;
}

static int get_obj(const json_t *j, const char *key, const json_t **out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(j, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return err_fail(err, errlen, -EINVAL, "%s must be an object", key);
	*out = v;
	return 0;
}

static int get_uint(const json_t *obj, const char *where, const char *key, uint64_t max,
		    uint64_t *out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max)
		return err_fail(err, errlen, -EINVAL, "%s.%s must be an integer between 0 and %llu", where, key,
			    (unsigned long long)max);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_str(const json_t *obj, const char *where, const char *key, char **out, char *err,
		   size_t errlen)
{
	const json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return err_fail(err, errlen, -EINVAL, "%s%s%s must be a string", where, *where ? "." : "", key);
	if (set_str(out, json_string_value(v)) < 0) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* "disks": [{"path": IMG, "readonly": bool}...] (Cloud Hypervisor's form). */
static int get_disks(const json_t *j, struct vm_config *c, char *err, size_t errlen)
{
	static const char *const disk_k[] = { "path", "readonly", NULL };
	const json_t *a = json_object_get(j, "disks"), *d;
	size_t i;
	int rc;

	if (!a || json_is_null(a))
		return 0;
	if (!json_is_array(a))
		return err_fail(err, errlen, -EINVAL, "disks must be an array");
	if (json_array_size(a) > VM_MAX_DISKS)
		return err_fail(err, errlen, -EINVAL, "disks: at most %u disks (got %zu)", VM_MAX_DISKS,
			    json_array_size(a));
	json_array_foreach(a, i, d) {
		char where[32];
		snprintf(where, sizeof(where), "disks[%zu]", i);
		if (!json_is_object(d))
			return err_fail(err, errlen, -EINVAL, "%s must be an object", where);
		const json_t *ro = json_object_get(d, "readonly");
		if (ro && !json_is_null(ro) && !json_is_boolean(ro))
			return err_fail(err, errlen, -EINVAL, "%s.readonly must be true or false", where);
		struct vm_disk *disk = &c->disks[c->nr_disks++];
		disk->readonly = ro && json_is_true(ro);
		if ((rc = only_keys(d, where, disk_k, err, errlen)) < 0 ||
		    (rc = get_str(d, where, "path", &disk->path, err, errlen)) < 0)
			return rc;
		if (!disk->path || !*disk->path)
			return err_fail(err, errlen, -EINVAL, "%s.path is required", where);
	}
	return 0;
}

int vm_config_from_json(const json_t *j, struct vm_config *out, char *err, size_t errlen)
{
	static const char *const top[] = { "cpus", "memory", "payload", "serial", "agent",
					   "hostname", "disks", "vsock", NULL };
	static const char *const cpus_k[] = { "boot_vcpus", "max_vcpus", NULL };
	static const char *const mem_k[] = { "size", NULL };
	static const char *const pay_k[] = { "kernel", "cmdline", "initramfs", NULL };
	static const char *const ser_k[] = { "mode", "file", "socket", NULL };
	static const char *const agent_k[] = { "socket", NULL };
	static const char *const vsock_k[] = { "cid", "socket", NULL };
	const json_t *o;
	struct vm_config c;
	int rc;

	vm_config_init(&c);
	if (!json_is_object(j)) {
		rc = err_fail(err, errlen, -EINVAL, "the VM configuration must be a JSON object");
		goto out;
	}
	if ((rc = only_keys(j, "", top, err, errlen)) < 0)
		goto out;

	if ((rc = get_obj(j, "cpus", &o, err, errlen)) < 0)
		goto out;
	if (o) {
		uint64_t boot = c.boot_vcpus, max = 0;
		if ((rc = only_keys(o, "cpus", cpus_k, err, errlen)) < 0 ||
		    (rc = get_uint(o, "cpus", "boot_vcpus", FG_MAX_VCPUS, &boot, err, errlen)) < 0 ||
		    (rc = get_uint(o, "cpus", "max_vcpus", FG_MAX_VCPUS, &max, err, errlen)) < 0)
			goto out;
		if (max && max != boot) {
			rc = err_fail(err, errlen, -EINVAL, "cpus.max_vcpus must equal cpus.boot_vcpus (no CPU hotplug)");
			goto out;
		}
		c.boot_vcpus = (unsigned)boot;
	}
	if ((rc = get_obj(j, "memory", &o, err, errlen)) < 0)
		goto out;
	if (o && ((rc = only_keys(o, "memory", mem_k, err, errlen)) < 0 ||
		  (rc = get_uint(o, "memory", "size", UINT64_MAX / 2, &c.memory_size, err, errlen)) < 0))
		goto out;
	if ((rc = get_obj(j, "payload", &o, err, errlen)) < 0)
		goto out;
	if (o && ((rc = only_keys(o, "payload", pay_k, err, errlen)) < 0 ||
		  (rc = get_str(o, "payload", "kernel", &c.kernel, err, errlen)) < 0 ||
		  (rc = get_str(o, "payload", "cmdline", &c.cmdline, err, errlen)) < 0 ||
		  (rc = get_str(o, "payload", "initramfs", &c.initramfs, err, errlen)) < 0))
		goto out;
	if ((rc = get_obj(j, "serial", &o, err, errlen)) < 0)
		goto out;
	if (o) {
		char *mode = NULL;
		if ((rc = only_keys(o, "serial", ser_k, err, errlen)) < 0 ||
		    (rc = get_str(o, "serial", "mode", &mode, err, errlen)) < 0)
			goto out;
		if (mode) {
			if (!strcasecmp(mode, "Off") || !strcasecmp(mode, "Null"))
				c.serial_mode = VM_SERIAL_OFF;
			else if (!strcasecmp(mode, "Tty"))
				c.serial_mode = VM_SERIAL_TTY;
			else if (!strcasecmp(mode, "File"))
				c.serial_mode = VM_SERIAL_FILE;
			else if (!strcasecmp(mode, "Socket"))
				c.serial_mode = VM_SERIAL_SOCKET;
			else
				rc = err_fail(err, errlen, -EINVAL, "serial.mode must be Off, Null, Tty, File or Socket (got %s)", mode);
			free(mode);
			if (rc < 0)
				goto out;
		}
		const char *pkey = c.serial_mode == VM_SERIAL_SOCKET ? "socket" : "file";
		if ((rc = get_str(o, "serial", pkey, &c.serial_path, err, errlen)) < 0)
			goto out;
	}
	if ((rc = get_obj(j, "agent", &o, err, errlen)) < 0)
		goto out;
	if (o && ((rc = only_keys(o, "agent", agent_k, err, errlen)) < 0 ||
		  (rc = get_str(o, "agent", "socket", &c.agent_socket, err, errlen)) < 0))
		goto out;
	if ((rc = get_obj(j, "vsock", &o, err, errlen)) < 0)
		goto out;
	if (o) {
		uint64_t cid = 0;
		if ((rc = only_keys(o, "vsock", vsock_k, err, errlen)) < 0 ||
		    (rc = get_uint(o, "vsock", "cid", UINT32_MAX, &cid, err, errlen)) < 0 ||
		    (rc = get_str(o, "vsock", "socket", &c.vsock_socket, err, errlen)) < 0)
			goto out;
		if (!cid) {
			rc = err_fail(err, errlen, -EINVAL, "vsock.cid is required (%u or more)",
				      VM_VSOCK_CID_MIN);
			goto out;
		}
		c.vsock_cid = (uint32_t)cid;
	}
	if ((rc = get_str(j, "", "hostname", &c.hostname, err, errlen)) < 0 ||
	    (rc = get_disks(j, &c, err, errlen)) < 0)
		goto out;
	rc = vm_config_validate(&c, err, errlen);
out:
	if (rc < 0) {
		vm_config_free(&c);
		return rc;
	}
	*out = c;
	return 0;
}

json_t *vm_config_to_json(const struct vm_config *cfg)
{
	json_t *serial = json_pack("{s:s}", "mode", serial_names[cfg->serial_mode]);
	if (serial && cfg->serial_mode == VM_SERIAL_FILE)
		json_object_set_new(serial, "file", json_string(cfg->serial_path));
	if (serial && cfg->serial_mode == VM_SERIAL_SOCKET)
		json_object_set_new(serial, "socket", json_string(cfg->serial_path));

	json_t *j = json_pack("{s:{s:I,s:I},s:{s:I},s:{s:s?,s:s?,s:s?},s:o?}", "cpus",
			      "boot_vcpus", (json_int_t)cfg->boot_vcpus, "max_vcpus",
			      (json_int_t)cfg->boot_vcpus, "memory", "size",
			      (json_int_t)cfg->memory_size, "payload", "kernel", cfg->kernel,
			      "cmdline", cfg->cmdline, "initramfs", cfg->initramfs, "serial", serial);
	if (!j)
		return NULL;
	if (cfg->agent_socket)
		json_object_set_new(j, "agent", json_pack("{s:s}", "socket", cfg->agent_socket));
	if (cfg->hostname)
		json_object_set_new(j, "hostname", json_string(cfg->hostname));
	if (cfg->vsock_cid)
		json_object_set_new(j, "vsock", json_pack("{s:I,s:s?}", "cid", (json_int_t)cfg->vsock_cid,
							  "socket", cfg->vsock_socket));
	if (cfg->nr_disks) {
		json_t *a = json_array();
		for (unsigned i = 0; a && i < cfg->nr_disks; i++)
			json_array_append_new(a, json_pack("{s:s,s:b}", "path", cfg->disks[i].path,
							   "readonly", cfg->disks[i].readonly));
		if (!a || json_array_size(a) != cfg->nr_disks ||
		    json_object_set_new(j, "disks", a) < 0) {
			json_decref(j);
			return NULL;
		}
	}
	return j;
}

/* ------------------------------------------------------------ CLI */

/* Splits "k=v,k2=v2" in place; calls fn for each pair. */
static int each_kv(char *s, const char *opt, int (*fn)(void *arg, const char *k, const char *v, char *err, size_t errlen),
		   void *arg, char *err, size_t errlen)
{
	char *save = NULL;
	for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq)
			return err_fail(err, errlen, -EINVAL, "%s: expected key=value, got '%s'", opt, tok);
		*eq = '\0';
		int rc = fn(arg, tok, eq + 1, err, errlen);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int with_kv(const char *arg, const char *opt,
		   int (*fn)(void *arg, const char *k, const char *v, char *err, size_t errlen),
		   void *ctx, char *err, size_t errlen)
{
	char *s;
	int rc;

	if (!arg || !*arg)
		return err_fail(err, errlen, -EINVAL, "%s: a value is required", opt);
	s = strdup(arg);
	if (!s)
		return -ENOMEM;
	rc = each_kv(s, opt, fn, ctx, err, errlen);
	free(s);
	return rc;
}

struct cpus_arg {
	uint64_t boot, max;
};

static int cpus_kv(void *arg, const char *k, const char *v, char *err, size_t errlen)
{
	struct cpus_arg *a = arg;
	uint64_t n;

	if (strcmp(k, "boot") && strcmp(k, "max"))
		return err_fail(err, errlen, -EINVAL, "--cpus: unknown option '%s' (supported: boot, max)", k);
	if (parse_u64(v, 1, FG_MAX_VCPUS, &n) < 0)
		return err_fail(err, errlen, -EINVAL, "--cpus: %s must be a number between 1 and %u (got '%s')", k,
			    FG_MAX_VCPUS, v);
	if (!strcmp(k, "boot"))
		a->boot = n;
	else
		a->max = n;
	return 0;
}

int vm_config_parse_cpus(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	struct cpus_arg a = { 0, 0 };
	int rc = with_kv(arg, "--cpus", cpus_kv, &a, err, errlen);

	if (rc < 0)
		return rc;
	if (!a.boot)
		a.boot = a.max ? a.max : cfg->boot_vcpus;
	if (a.max && a.max != a.boot)
		return err_fail(err, errlen, -EINVAL, "--cpus: max must equal boot (no CPU hotplug)");
	cfg->boot_vcpus = (unsigned)a.boot;
	return 0;
}

static int mem_kv(void *arg, const char *k, const char *v, char *err, size_t errlen)
{
	struct vm_config *cfg = arg;
	uint64_t size;
	int rc;

	if (strcmp(k, "size"))
		return err_fail(err, errlen, -EINVAL, "--memory: unknown option '%s' (supported: size)", k);
	if (parse_size(v, &size) < 0)
		return err_fail(err, errlen, -EINVAL, "--memory: size '%s' is not a size (use e.g. 512M or 4G)", v);
	rc = gmem_check_size(size);
	if (rc == -EINVAL)
		return err_fail(err, errlen, -EINVAL, "--memory: size %s is not a multiple of 2 MiB", v);
	if (rc < 0)
		return err_fail(err, errlen, -EINVAL, "--memory: size %s is outside %llu MiB .. %llu GiB", v,
			    GMEM_MIN_SIZE / MiB, GMEM_MAX_SIZE / GiB);
	cfg->memory_size = size;
	return 0;
}

int vm_config_parse_memory(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	return with_kv(arg, "--memory", mem_kv, cfg, err, errlen);
}

int vm_config_parse_serial(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	if (!arg || !*arg)
		return err_fail(err, errlen, -EINVAL, "--serial: a value is required (tty, off, file=PATH or socket=PATH)");
	if (!strcmp(arg, "tty")) {
		cfg->serial_mode = VM_SERIAL_TTY;
		return set_str(&cfg->serial_path, NULL);
	}
	if (!strcmp(arg, "off") || !strcmp(arg, "null")) {
		cfg->serial_mode = VM_SERIAL_OFF;
		return set_str(&cfg->serial_path, NULL);
	}
	if (!strncmp(arg, "file=", 5) && arg[5]) {
		cfg->serial_mode = VM_SERIAL_FILE;
		return set_str(&cfg->serial_path, arg + 5);
	}
	if (!strncmp(arg, "socket=", 7) && arg[7]) {
		cfg->serial_mode = VM_SERIAL_SOCKET;
		if (check_socket_path("--serial", arg + 7, err, errlen) < 0)
			return -EINVAL;
		return set_str(&cfg->serial_path, arg + 7);
	}
	return err_fail(err, errlen, -EINVAL, "--serial: '%s' is not tty, off, file=PATH or socket=PATH", arg);
}

int vm_config_parse_agent(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	if (!arg || strncmp(arg, "socket=", 7) || !arg[7])
		return err_fail(err, errlen, -EINVAL, "--agent: expected socket=PATH (got '%s')", arg ? arg : "");
	if (check_socket_path("--agent", arg + 7, err, errlen) < 0)
		return -EINVAL;
	return set_str(&cfg->agent_socket, arg + 7);
}

struct disk_arg {
	struct vm_disk d;
	bool has_path;
};

static int disk_kv(void *arg, const char *k, const char *v, char *err, size_t errlen)
{
	struct disk_arg *a = arg;

	if (!strcmp(k, "path")) {
		if (!*v)
			return err_fail(err, errlen, -EINVAL, "--disk: path is empty");
		if (set_str(&a->d.path, v) < 0)
			return err_fail(err, errlen, -ENOMEM, "out of memory");
		a->has_path = true;
		return 0;
	}
	if (!strcmp(k, "readonly")) {
		if (!strcmp(v, "on") || !strcmp(v, "true"))
			a->d.readonly = true;
		else if (!strcmp(v, "off") || !strcmp(v, "false"))
			a->d.readonly = false;
		else
			return err_fail(err, errlen, -EINVAL, "--disk: readonly must be on or off (got '%s')", v);
		return 0;
	}
	return err_fail(err, errlen, -EINVAL, "--disk: unknown option '%s' (supported: path, readonly)", k);
}

int vm_config_parse_disk(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	struct disk_arg a = { { NULL, false }, false };
	int rc;

	if (cfg->nr_disks >= VM_MAX_DISKS)
		return err_fail(err, errlen, -EINVAL, "--disk: at most %u disks", VM_MAX_DISKS);
	rc = with_kv(arg, "--disk", disk_kv, &a, err, errlen);
	if (rc == 0 && !a.has_path)
		rc = err_fail(err, errlen, -EINVAL, "--disk: expected path=IMG[,readonly=on] (got '%s')", arg);
	if (rc < 0) {
		free(a.d.path);
		return rc;
	}
	cfg->disks[cfg->nr_disks++] = a.d;
	return 0;
}

struct vsock_arg {
	uint64_t cid;
	char *socket;
};

static int vsock_kv(void *arg, const char *k, const char *v, char *err, size_t errlen)
{
	struct vsock_arg *a = arg;

	if (!strcmp(k, "cid")) {
		if (parse_u64(v, VM_VSOCK_CID_MIN, VM_VSOCK_CID_MAX, &a->cid) < 0)
			return err_fail(err, errlen, -EINVAL,
				    "--vsock: cid must be a number between %u and %u (got '%s')",
				    VM_VSOCK_CID_MIN, VM_VSOCK_CID_MAX, v);
		return 0;
	}
	if (!strcmp(k, "socket")) {
		if (check_socket_path("--vsock", v, err, errlen) < 0)
			return -EINVAL;
		if (set_str(&a->socket, v) < 0)
			return err_fail(err, errlen, -ENOMEM, "out of memory");
		return 0;
	}
	return err_fail(err, errlen, -EINVAL, "--vsock: unknown option '%s' (supported: cid, socket)", k);
}

int vm_config_parse_vsock(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	struct vsock_arg a = { 0, NULL };
	int rc = with_kv(arg, "--vsock", vsock_kv, &a, err, errlen);

	if (rc == 0 && !a.cid)
		rc = err_fail(err, errlen, -EINVAL, "--vsock: expected cid=N[,socket=PATH] (got '%s')",
			      arg ? arg : "");
	if (rc < 0) {
		free(a.socket);
		return rc;
	}
	free(cfg->vsock_socket);
	cfg->vsock_cid = (uint32_t)a.cid;
	cfg->vsock_socket = a.socket;
	return 0;
}
