/* tests/unit/test_config.c - vmm/config.c: the Cloud Hypervisor style
 * command-line values, validation, and the JSON form (round trip, unknown
 * fields, wrong types). Every error message names the option or field. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "vmm/vmm.h"

static struct vm_config cfg;
static char err[512];

/* strdup() for this test binary: the statically linked vmm/config.c binds
 * to it. It fails (ENOMEM) for one magic string, to reach the out-of-memory
 * paths of the JSON parser; otherwise it is the usual strdup. */
#define FAIL_DUP "/strdup-fails-for-this-kernel"
char *strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d;

	if (!strcmp(s, FAIL_DUP)) {
		errno = ENOMEM;
		return NULL;
	}
	d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

static void init(void)
{
	vm_config_init(&cfg);
	err[0] = '\0';
}

static void fini(void)
{
	vm_config_free(&cfg);
}

TestSuite(config, .init = init, .fini = fini);

static void expect_err(int rc, const char *want)
{
	cr_assert_eq(rc, -EINVAL, "rc %d (message '%s')", rc, err);
	cr_assert(strstr(err, want), "message '%s' lacks '%s'", err, want);
}

Test(config, defaults)
{
	cr_assert_eq(cfg.boot_vcpus, 1);
	cr_assert_eq(cfg.memory_size, 512 * MiB);
	cr_assert_eq(cfg.serial_mode, VM_SERIAL_TTY);
	cr_assert_null(cfg.kernel);
	cr_assert_null(cfg.agent_socket);
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "kernel");
}

/* ------------------------------------------------------------ --cpus */

Test(config, cpus_good)
{
	cr_assert_eq(vm_config_parse_cpus(&cfg, "boot=4", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.boot_vcpus, 4);
	cr_assert_eq(vm_config_parse_cpus(&cfg, "boot=2,max=2", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.boot_vcpus, 2);
	cr_assert_eq(vm_config_parse_cpus(&cfg, "boot=254", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.boot_vcpus, 254);
	cr_assert_eq(vm_config_parse_cpus(&cfg, "boot=1", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.boot_vcpus, 1);
}

Test(config, cpus_bad)
{
	expect_err(vm_config_parse_cpus(&cfg, "boot=0", err, sizeof(err)), "--cpus");
	cr_assert(strstr(err, "'0'"), "%s", err);
	expect_err(vm_config_parse_cpus(&cfg, "boot=255", err, sizeof(err)), "--cpus");
	expect_err(vm_config_parse_cpus(&cfg, "boot=abc", err, sizeof(err)), "abc");
	expect_err(vm_config_parse_cpus(&cfg, "boot=-1", err, sizeof(err)), "--cpus");
	expect_err(vm_config_parse_cpus(&cfg, "boot=", err, sizeof(err)), "--cpus");
	expect_err(vm_config_parse_cpus(&cfg, "boot=2x", err, sizeof(err)), "--cpus");
	expect_err(vm_config_parse_cpus(&cfg, "boot=99999999999999999999999", err, sizeof(err)), "--cpus");
	expect_err(vm_config_parse_cpus(&cfg, "boot=2,max=4", err, sizeof(err)), "max");
	cr_assert(strstr(err, "--cpus"), "%s", err);
	expect_err(vm_config_parse_cpus(&cfg, "cores=2", err, sizeof(err)), "cores");
	cr_assert(strstr(err, "--cpus"), "%s", err);
	expect_err(vm_config_parse_cpus(&cfg, "4", err, sizeof(err)), "key=value");
	expect_err(vm_config_parse_cpus(&cfg, "", err, sizeof(err)), "--cpus");
	expect_err(vm_config_parse_cpus(&cfg, NULL, err, sizeof(err)), "--cpus");
}

/* Cloud Hypervisor accepts the keys of --cpus in any order. */
Test(config, cpus_max_before_boot)
{
	int rc = vm_config_parse_cpus(&cfg, "max=4,boot=4", err, sizeof(err));
	cr_assert_eq(rc, 0, "\"max=4,boot=4\" is refused: %s", err);
	cr_assert_eq(cfg.boot_vcpus, 4);
}

/* ------------------------------------------------------------ --memory */

Test(config, memory_good)
{
	cr_assert_eq(vm_config_parse_memory(&cfg, "size=4G", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.memory_size, 4 * GiB);
	cr_assert_eq(vm_config_parse_memory(&cfg, "size=16M", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.memory_size, 16 * MiB);
	cr_assert_eq(vm_config_parse_memory(&cfg, "size=64G", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.memory_size, 64 * GiB);
	cr_assert_eq(vm_config_parse_memory(&cfg, "size=1024MiB", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.memory_size, GiB);
	cr_assert_eq(vm_config_parse_memory(&cfg, "size=33554432", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.memory_size, 32 * MiB);
}

Test(config, memory_bad)
{
	expect_err(vm_config_parse_memory(&cfg, "size=abc", err, sizeof(err)), "--memory");
	cr_assert(strstr(err, "abc"), "%s", err);
	expect_err(vm_config_parse_memory(&cfg, "size=3M", err, sizeof(err)), "multiple of 2 MiB");
	cr_assert(strstr(err, "--memory"), "%s", err);
	expect_err(vm_config_parse_memory(&cfg, "size=8M", err, sizeof(err)), "--memory");
	cr_assert(strstr(err, "8M"), "%s", err);
	expect_err(vm_config_parse_memory(&cfg, "size=1T", err, sizeof(err)), "--memory");
	expect_err(vm_config_parse_memory(&cfg, "size=66G", err, sizeof(err)), "--memory");
	expect_err(vm_config_parse_memory(&cfg, "size=99999999999T", err, sizeof(err)), "--memory");
	expect_err(vm_config_parse_memory(&cfg, "size=", err, sizeof(err)), "--memory");
	expect_err(vm_config_parse_memory(&cfg, "size=4X", err, sizeof(err)), "--memory");
	expect_err(vm_config_parse_memory(&cfg, "shared=on", err, sizeof(err)), "shared");
	expect_err(vm_config_parse_memory(&cfg, "4G", err, sizeof(err)), "--memory");
	cr_assert_eq(cfg.memory_size, 512 * MiB, "failed parses leave the size alone");
}

/* ------------------------------------------------------------ --serial, --agent */

Test(config, serial_modes)
{
	cr_assert_eq(vm_config_parse_serial(&cfg, "off", err, sizeof(err)), 0);
	cr_assert_eq(cfg.serial_mode, VM_SERIAL_OFF);
	cr_assert_eq(vm_config_parse_serial(&cfg, "null", err, sizeof(err)), 0);
	cr_assert_eq(cfg.serial_mode, VM_SERIAL_OFF);
	cr_assert_eq(vm_config_parse_serial(&cfg, "file=/tmp/console.log", err, sizeof(err)), 0);
	cr_assert_eq(cfg.serial_mode, VM_SERIAL_FILE);
	cr_assert_str_eq(cfg.serial_path, "/tmp/console.log");
	cr_assert_eq(vm_config_parse_serial(&cfg, "socket=/tmp/console.sock", err, sizeof(err)), 0);
	cr_assert_eq(cfg.serial_mode, VM_SERIAL_SOCKET);
	cr_assert_str_eq(cfg.serial_path, "/tmp/console.sock");
	cr_assert_eq(vm_config_parse_serial(&cfg, "tty", err, sizeof(err)), 0);
	cr_assert_eq(cfg.serial_mode, VM_SERIAL_TTY);
	cr_assert_null(cfg.serial_path, "tty drops the path");
}

Test(config, serial_bad)
{
	expect_err(vm_config_parse_serial(&cfg, "pty", err, sizeof(err)), "--serial");
	cr_assert(strstr(err, "pty"), "%s", err);
	expect_err(vm_config_parse_serial(&cfg, "file=", err, sizeof(err)), "--serial");
	expect_err(vm_config_parse_serial(&cfg, "socket=", err, sizeof(err)), "--serial");
	expect_err(vm_config_parse_serial(&cfg, "TTY", err, sizeof(err)), "--serial");
	expect_err(vm_config_parse_serial(&cfg, "", err, sizeof(err)), "--serial");
	expect_err(vm_config_parse_serial(&cfg, NULL, err, sizeof(err)), "--serial");
	char longp[200] = "socket=/";
	memset(longp + 8, 'a', 108); /* a 109-byte path */
	longp[116] = '\0';
	expect_err(vm_config_parse_serial(&cfg, longp, err, sizeof(err)), "--serial");
	cr_assert(strstr(err, "84"), "%s", err);
}

Test(config, agent)
{
	char path[120];

	cr_assert_eq(vm_config_parse_agent(&cfg, "socket=/tmp/agent.sock", err, sizeof(err)), 0);
	cr_assert_str_eq(cfg.agent_socket, "/tmp/agent.sock");
	expect_err(vm_config_parse_agent(&cfg, "/tmp/agent.sock", err, sizeof(err)), "--agent");
	cr_assert(strstr(err, "socket="), "%s", err);
	expect_err(vm_config_parse_agent(&cfg, "socket=", err, sizeof(err)), "--agent");
	expect_err(vm_config_parse_agent(&cfg, "path=/x", err, sizeof(err)), "--agent");
	expect_err(vm_config_parse_agent(&cfg, NULL, err, sizeof(err)), "--agent");
	/* sun_path holds 107 bytes and a NUL; a socket is first bound under a
	 * temporary name 23 bytes longer (common/unixsock.h): 84 bytes fit. */
	memset(path, 'b', sizeof(path));
	memcpy(path, "socket=/", 8);
	path[7 + 84] = '\0'; /* an 84-byte path */
	cr_assert_eq(vm_config_parse_agent(&cfg, path, err, sizeof(err)), 0, "84 bytes fit: %s", err);
	path[7 + 84] = 'b';
	path[7 + 85] = '\0'; /* 85 bytes */
	expect_err(vm_config_parse_agent(&cfg, path, err, sizeof(err)), "--agent");
	cr_assert(strstr(err, "longer than 84"), "%s", err);
}

Test(config, disks)
{
	cr_assert_eq(vm_config_parse_disk(&cfg, "path=/tmp/a.img", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(vm_config_parse_disk(&cfg, "path=/tmp/b.img,readonly=on", err, sizeof(err)), 0);
	cr_assert_eq(cfg.nr_disks, 2);
	cr_assert_str_eq(cfg.disks[0].path, "/tmp/a.img");
	cr_assert_not(cfg.disks[0].readonly);
	cr_assert(cfg.disks[1].readonly);
	expect_err(vm_config_parse_disk(&cfg, "readonly=on", err, sizeof(err)), "--disk");
	cr_assert(strstr(err, "path="), "%s", err);
	expect_err(vm_config_parse_disk(&cfg, "path=/x,readonly=maybe", err, sizeof(err)), "--disk");
	expect_err(vm_config_parse_disk(&cfg, "path=/x,cache=none", err, sizeof(err)), "--disk");
	cr_assert(strstr(err, "unknown option 'cache'"), "%s", err);
	expect_err(vm_config_parse_disk(&cfg, "path=", err, sizeof(err)), "--disk");
	expect_err(vm_config_parse_disk(&cfg, "", err, sizeof(err)), "--disk");
	cr_assert_eq(cfg.nr_disks, 2, "failures add nothing");
	cr_assert_eq(vm_config_parse_disk(&cfg, "path=/c", err, sizeof(err)), 0);
	cr_assert_eq(vm_config_parse_disk(&cfg, "path=/d", err, sizeof(err)), 0);
	expect_err(vm_config_parse_disk(&cfg, "path=/e", err, sizeof(err)), "--disk");
	cr_assert(strstr(err, "at most 4"), "%s", err);

	/* JSON: Cloud Hypervisor's "disks", round trip, copy */
	free(cfg.kernel);
	cfg.kernel = strdup("/k");
	json_t *j = vm_config_to_json(&cfg);
	struct vm_config back, copy;
	cr_assert_eq(vm_config_from_json(j, &back, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(back.nr_disks, 4);
	cr_assert_str_eq(back.disks[1].path, "/tmp/b.img");
	cr_assert(back.disks[1].readonly);
	cr_assert_eq(vm_config_copy(&copy, &back), 0);
	cr_assert_str_eq(copy.disks[3].path, "/d");
	cr_assert_neq(copy.disks[3].path, back.disks[3].path);
	vm_config_free(&copy);
	vm_config_free(&back);
	json_decref(j);

	static const char *const bad[] = {
		"{\"payload\":{\"kernel\":\"/k\"},\"disks\":{}}",
		"{\"payload\":{\"kernel\":\"/k\"},\"disks\":[1]}",
		"{\"payload\":{\"kernel\":\"/k\"},\"disks\":[{}]}",
		"{\"payload\":{\"kernel\":\"/k\"},\"disks\":[{\"path\":\"/a\",\"readonly\":1}]}",
		"{\"payload\":{\"kernel\":\"/k\"},\"disks\":[{\"path\":\"/a\",\"direct\":true}]}",
		"{\"payload\":{\"kernel\":\"/k\"},\"disks\":[{\"path\":\"/a\"},{\"path\":\"/a\"},"
		"{\"path\":\"/a\"},{\"path\":\"/a\"},{\"path\":\"/a\"}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *b = json_loads(bad[i], 0, NULL);
		cr_assert_not_null(b, "%s", bad[i]);
		cr_assert_eq(vm_config_from_json(b, &back, err, sizeof(err)), -EINVAL, "%s", bad[i]);
		cr_assert(strstr(err, "disks"), "%s: %s", bad[i], err);
		json_decref(b);
	}
}

/* ------------------------------------------------------------ validate */

Test(config, validate)
{
	cfg.kernel = strdup("/guest");
	cr_assert_eq(vm_config_validate(&cfg, err, sizeof(err)), 0, "%s", err);
	cfg.boot_vcpus = 0;
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "cpus");
	cfg.boot_vcpus = 255;
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "cpus");
	cfg.boot_vcpus = 2;
	cfg.memory_size = 3 * MiB;
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "memory");
	cfg.memory_size = 128 * GiB;
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "memory");
	cfg.memory_size = 64 * MiB;
	cfg.serial_mode = VM_SERIAL_FILE;
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "serial");
	cfg.serial_mode = VM_SERIAL_SOCKET;
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "serial");
	cfg.serial_path = strdup("/tmp/s.sock");
	cr_assert_eq(vm_config_validate(&cfg, err, sizeof(err)), 0, "%s", err);
	cfg.agent_socket = strdup("/tmp/s.sock");
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "share");
	free(cfg.agent_socket);
	cfg.agent_socket = strdup("/tmp/a.sock");
	cfg.hostname = strdup("");
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "hostname");
	free(cfg.hostname);
	cfg.hostname = malloc(66);
	memset(cfg.hostname, 'h', 65);
	cfg.hostname[65] = '\0';
	expect_err(vm_config_validate(&cfg, err, sizeof(err)), "hostname");
	cfg.hostname[64] = '\0';
	cr_assert_eq(vm_config_validate(&cfg, err, sizeof(err)), 0, "64 characters are fine: %s", err);
}

Test(config, copy)
{
	struct vm_config c2;

	cfg.kernel = strdup("/k");
	cfg.cmdline = strdup("a b");
	cfg.hostname = strdup("h");
	cr_assert_eq(vm_config_copy(&c2, &cfg), 0);
	cr_assert_str_eq(c2.kernel, "/k");
	cr_assert_neq(c2.kernel, cfg.kernel, "deep copy");
	cr_assert_str_eq(c2.cmdline, "a b");
	cr_assert_null(c2.agent_socket);
	vm_config_free(&c2);
	cr_assert_null(c2.kernel);
}

/* ------------------------------------------------------------ JSON */

static int from_json_str(const char *s)
{
	json_error_t je;
	json_t *j = json_loads(s, JSON_DECODE_ANY, &je);
	int rc;

	cr_assert_not_null(j, "test JSON does not parse: %s (%s)", je.text, s);
	vm_config_free(&cfg);
	rc = vm_config_from_json(j, &cfg, err, sizeof(err));
	json_decref(j);
	return rc;
}

Test(config, json_round_trip)
{
	struct vm_config a, b;
	json_t *j;

	vm_config_init(&a);
	a.boot_vcpus = 4;
	a.memory_size = 6 * GiB;
	a.kernel = strdup("/opt/guest/agent");
	a.cmdline = strdup("--flag 'two words'");
	a.initramfs = strdup("/boot/initrd.img");
	a.serial_mode = VM_SERIAL_SOCKET;
	a.serial_path = strdup("/tmp/serial.sock");
	a.agent_socket = strdup("/tmp/agent.sock");
	a.hostname = strdup("fn-1");
	j = vm_config_to_json(&a);
	cr_assert_not_null(j);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "cpus"), "max_vcpus")), 4);
	cr_assert_eq(vm_config_from_json(j, &b, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(b.boot_vcpus, 4);
	cr_assert_eq(b.memory_size, 6 * GiB);
	cr_assert_str_eq(b.kernel, a.kernel);
	cr_assert_str_eq(b.cmdline, a.cmdline);
	cr_assert_str_eq(b.initramfs, a.initramfs);
	cr_assert_eq(b.serial_mode, VM_SERIAL_SOCKET);
	cr_assert_str_eq(b.serial_path, a.serial_path);
	cr_assert_str_eq(b.agent_socket, a.agent_socket);
	cr_assert_str_eq(b.hostname, a.hostname);
	/* And once more: to_json of the parsed config is the same JSON. */
	json_t *j2 = vm_config_to_json(&b);
	cr_assert(json_equal(j, j2), "to_json(from_json(to_json(c))) == to_json(c)");
	json_decref(j);
	json_decref(j2);
	vm_config_free(&a);
	vm_config_free(&b);
}

Test(config, json_round_trip_minimal_and_file)
{
	struct vm_config a, b;
	const enum vm_serial_mode modes[] = { VM_SERIAL_OFF, VM_SERIAL_TTY, VM_SERIAL_FILE };

	for (unsigned i = 0; i < 3; i++) {
		vm_config_init(&a);
		a.kernel = strdup("/k");
		a.serial_mode = modes[i];
		if (modes[i] == VM_SERIAL_FILE)
			a.serial_path = strdup("/tmp/console.log");
		json_t *j = vm_config_to_json(&a);
		cr_assert_not_null(j);
		cr_assert_eq(vm_config_from_json(j, &b, err, sizeof(err)), 0, "mode %d: %s", modes[i], err);
		cr_assert_eq(b.serial_mode, modes[i]);
		cr_assert_eq(b.boot_vcpus, 1);
		cr_assert_eq(b.memory_size, 512 * MiB);
		cr_assert_null(b.cmdline);
		cr_assert_null(b.agent_socket);
		cr_assert_null(b.hostname);
		if (modes[i] == VM_SERIAL_FILE)
			cr_assert_str_eq(b.serial_path, "/tmp/console.log");
		json_decref(j);
		vm_config_free(&a);
		vm_config_free(&b);
	}
}

Test(config, json_defaults)
{
	cr_assert_eq(from_json_str("{\"payload\": {\"kernel\": \"/k\"}}"), 0, "%s", err);
	cr_assert_eq(cfg.boot_vcpus, 1);
	cr_assert_eq(cfg.memory_size, 512 * MiB);
	cr_assert_eq(cfg.serial_mode, VM_SERIAL_TTY);
	cr_assert_eq(from_json_str("{\"payload\": {\"kernel\": \"/k\", \"cmdline\": null}, \"cpus\": null,"
				   " \"agent\": null, \"hostname\": null}"), 0, "nulls are absent: %s", err);
}

Test(config, json_unknown_fields)
{
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"net\": []}"), "unknown field net");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\", \"firmware\": \"/f\"}}"),
		   "unknown field payload.firmware");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": 1, \"topology\": {}}}"),
		   "cpus.topology");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": 33554432, \"shared\": true}}"),
		   "memory.shared");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"serial\": {\"mode\": \"Off\", \"iommu\": false}}"),
		   "serial.iommu");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"agent\": {\"socket\": \"/a\", \"x\": 1}}"),
		   "agent.x");
}

Test(config, json_wrong_types)
{
	expect_err(from_json_str("[]"), "JSON object");
	expect_err(from_json_str("\"x\""), "JSON object");
	expect_err(from_json_str("{\"payload\": \"/k\"}"), "payload must be an object");
	expect_err(from_json_str("{\"payload\": {\"kernel\": 5}}"), "payload.kernel must be a string");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\", \"cmdline\": [\"a\"]}}"), "payload.cmdline");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": 2}"), "cpus must be an object");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": \"2\"}}"),
		   "cpus.boot_vcpus");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": 1.5}}"),
		   "cpus.boot_vcpus");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": -1}}"),
		   "cpus.boot_vcpus");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": 300}}"),
		   "cpus.boot_vcpus");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": \"4G\"}}"),
		   "memory.size");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": -2097152}}"),
		   "memory.size");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"serial\": {\"mode\": 1}}"), "serial.mode");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"serial\": {\"mode\": \"File\", \"file\": 3}}"),
		   "serial.file");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"agent\": {\"socket\": true}}"),
		   "agent.socket");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"hostname\": 7}"), "hostname must be a string");
}

Test(config, json_semantic_errors)
{
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": 2, \"max_vcpus\": 4}}"),
		   "max_vcpus");
	expect_err(from_json_str("{\"cpus\": {\"boot_vcpus\": 2}}"), "kernel is required");
	expect_err(from_json_str("{}"), "kernel");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"\"}}"), "kernel");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": 0}}"), "cpus");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": 3145728}}"), "memory");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": 1099511627776}}"),
		   "memory");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"serial\": {\"mode\": \"Pty\"}}"),
		   "serial.mode");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"serial\": {\"mode\": \"File\"}}"), "serial");
	expect_err(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"serial\": {\"mode\": \"Socket\"}}"), "serial");
	cr_assert_eq(from_json_str("{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": 3, \"max_vcpus\": 3}}"),
		     0, "%s", err);
	cr_assert_eq(cfg.boot_vcpus, 3);
}

Test(config, json_serial_modes_case_insensitive)
{
	static const struct {
		const char *json;
		enum vm_serial_mode mode;
	} cases[] = {
		{ "{\"mode\": \"off\"}", VM_SERIAL_OFF },
		{ "{\"mode\": \"OFF\"}", VM_SERIAL_OFF },
		{ "{\"mode\": \"Null\"}", VM_SERIAL_OFF },
		{ "{\"mode\": \"tTy\"}", VM_SERIAL_TTY },
		{ "{\"mode\": \"file\", \"file\": \"/tmp/f\"}", VM_SERIAL_FILE },
		{ "{\"mode\": \"FILE\", \"file\": \"/tmp/f\"}", VM_SERIAL_FILE },
		{ "{\"mode\": \"socket\", \"socket\": \"/tmp/s\"}", VM_SERIAL_SOCKET },
		{ "{\"mode\": \"SoCkEt\", \"socket\": \"/tmp/s\"}", VM_SERIAL_SOCKET },
	};
	char buf[256];

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(buf, sizeof(buf), "{\"payload\": {\"kernel\": \"/k\"}, \"serial\": %s}", cases[i].json);
		cr_assert_eq(from_json_str(buf), 0, "%s: %s", cases[i].json, err);
		cr_assert_eq(cfg.serial_mode, cases[i].mode, "%s", cases[i].json);
		if (cases[i].mode == VM_SERIAL_FILE)
			cr_assert_str_eq(cfg.serial_path, "/tmp/f");
		if (cases[i].mode == VM_SERIAL_SOCKET)
			cr_assert_str_eq(cfg.serial_path, "/tmp/s");
	}
}

Test(config, json_failure_leaves_output_untouched)
{
	struct vm_config out;
	json_t *j = json_pack("{s:{s:s},s:i}", "payload", "kernel", "/k", "bogus", 1);

	memset(&out, 0x5a, sizeof(out));
	cr_assert_eq(vm_config_from_json(j, &out, err, sizeof(err)), -EINVAL);
	const unsigned char *p = (const unsigned char *)&out;
	for (size_t i = 0; i < sizeof(out); i++)
		cr_assert_eq(p[i], 0x5a, "byte %zu of the output changed on failure", i);
	json_decref(j);
}

/* vmm.h: "where an err buffer is taken, it receives a human-readable
 * reason". The API (vmm/api.c r_create) sends err back as the error
 * message, so an unset err leaks uninitialised stack bytes into the
 * response (and vsnprintf may read past the buffer: no NUL). */
Test(config, json_out_of_memory_sets_err)
{
	struct vm_config out;
	json_t *j = json_pack("{s:{s:s}}", "payload", "kernel", FAIL_DUP);

	memset(err, 'Z', sizeof(err)); /* no NUL anywhere */
	int rc = vm_config_from_json(j, &out, err, sizeof(err));
	json_decref(j);
	cr_assert_eq(rc, -ENOMEM);
	cr_assert_not_null(memchr(err, '\0', sizeof(err)),
			   "vm_config_from_json failed with -ENOMEM and left err unset");
}

Test(config, vsock)
{
	cr_assert_eq(vm_config_parse_vsock(&cfg, "cid=3,socket=/tmp/v.sock", err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_eq(cfg.vsock_cid, 3);
	cr_assert_str_eq(cfg.vsock_socket, "/tmp/v.sock");
	cr_assert_eq(vm_config_parse_vsock(&cfg, "cid=4294967294", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cfg.vsock_cid, 4294967294U);
	cr_assert_null(cfg.vsock_socket, "a later --vsock replaces the earlier one");
	static const char *const bad_args[] = { "", "cid=2", "cid=0", "cid=4294967295", "cid=x",
						"socket=/tmp/v", "cid=3,port=5", "cid=3,socket=" };
	for (size_t i = 0; i < sizeof(bad_args) / sizeof(bad_args[0]); i++)
		expect_err(vm_config_parse_vsock(&cfg, bad_args[i], err, sizeof(err)), "--vsock");
	cr_assert_eq(cfg.vsock_cid, 4294967294U, "failures change nothing");

	/* JSON: Cloud Hypervisor's "vsock": {"cid", "socket"}, round trip, copy */
	cr_assert_eq(vm_config_parse_vsock(&cfg, "cid=7,socket=/tmp/v.sock", err, sizeof(err)), 0);
	free(cfg.kernel);
	cfg.kernel = strdup("/k");
	json_t *j = vm_config_to_json(&cfg);
	struct vm_config back, copy;
	cr_assert_eq(vm_config_from_json(j, &back, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(back.vsock_cid, 7);
	cr_assert_str_eq(back.vsock_socket, "/tmp/v.sock");
	cr_assert_eq(vm_config_copy(&copy, &back), 0);
	cr_assert_str_eq(copy.vsock_socket, "/tmp/v.sock");
	cr_assert_neq(copy.vsock_socket, back.vsock_socket);
	vm_config_free(&copy);
	vm_config_free(&back);
	json_decref(j);
	static const char *const bad[] = {
		"{\"payload\":{\"kernel\":\"/k\"},\"vsock\":3}",
		"{\"payload\":{\"kernel\":\"/k\"},\"vsock\":{}}",
		"{\"payload\":{\"kernel\":\"/k\"},\"vsock\":{\"cid\":2}}",
		"{\"payload\":{\"kernel\":\"/k\"},\"vsock\":{\"cid\":4294967296}}",
		"{\"payload\":{\"kernel\":\"/k\"},\"vsock\":{\"cid\":3,\"socket\":5}}",
		"{\"payload\":{\"kernel\":\"/k\"},\"vsock\":{\"cid\":3,\"iommu\":true}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *b = json_loads(bad[i], 0, NULL);
		cr_assert_not_null(b, "%s", bad[i]);
		cr_assert_eq(vm_config_from_json(b, &back, err, sizeof(err)), -EINVAL, "%s", bad[i]);
		cr_assert(strstr(err, "vsock"), "%s: %s", bad[i], err);
		json_decref(b);
	}
}
