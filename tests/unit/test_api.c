/* tests/unit/test_api.c - the VMM's REST router vmm_api_handle() driven
 * through http_process_raw(): routes, methods, the vm.create body, the
 * state machine before boot, size limits, pipelining. Every error must be
 * a JSON body {"error": "..."}. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "common/http.h"
#include "tests/lib/unit.h"
#include "vmm/api.h"
#include "vmm/vmm.h"

#define MAX_BODY (1u << 20) /* what vmm_api_start() configures */

static struct vmm *vmm;
static struct vmm_api api;
static int shutdowns;

static void on_shutdown(void *arg)
{
	(void)arg;
	shutdowns++;
}

static void setup(void)
{
	cr_assert_eq(vmm_create(NULL, NULL, NULL, &vmm), 0);
	memset(&api, 0, sizeof(api));
	api.vmm = vmm;
	api.on_shutdown = on_shutdown;
	shutdowns = 0;
}

static void teardown(void)
{
	vmm_destroy(vmm);
	vmm = NULL;
}

TestSuite(api, .init = setup, .fini = teardown);

/* ------------------------------------------------------------ helpers */

struct resp {
	int status;
	char ctype[128];
	char *body; /* NUL-terminated copy */
	size_t body_len;
	json_t *json; /* parsed body, or NULL */
};

struct exchange {
	unsigned n;
	struct resp r[8];
	bool closed;
	size_t raw_len;
};

static void exchange_free(struct exchange *x)
{
	for (unsigned i = 0; i < x->n; i++) {
		free(x->r[i].body);
		json_decref(x->r[i].json);
	}
	memset(x, 0, sizeof(*x));
}

/* Splits the server's output into responses. */
static void parse_responses(const char *out, size_t len, struct exchange *x)
{
	const char *p = out, *end = out + len;

	while (p < end) {
		struct resp *r;
		const char *hend = strstr(p, "\r\n\r\n");
		cr_assert_not_null(hend, "response without the end of its header: %.80s", p);
		cr_assert_lt(x->n, 8);
		r = &x->r[x->n++];
		cr_assert_eq(sscanf(p, "HTTP/1.1 %d", &r->status), 1, "status line: %.40s", p);
		const char *cl = strstr(p, "Content-Length: ");
		r->body_len = cl && cl < hend ? strtoul(cl + 16, NULL, 10) : 0;
		const char *ct = strstr(p, "Content-Type: ");
		if (ct && ct < hend)
			sscanf(ct + 14, "%127[^\r]", r->ctype);
		const char *b = hend + 4;
		cr_assert_leq(b + r->body_len, end, "truncated body");
		r->body = malloc(r->body_len + 1);
		memcpy(r->body, b, r->body_len);
		r->body[r->body_len] = '\0';
		if (r->body_len)
			r->json = json_loadb(r->body, r->body_len, 0, NULL);
		p = b + r->body_len;
	}
}

static void run_raw(const char *raw, size_t len, struct exchange *x)
{
	struct http_server_config cfg = { .max_body_bytes = MAX_BODY };
	char *out = NULL;
	size_t out_len = 0;
	bool closed = false;

	memset(x, 0, sizeof(*x));
	cr_assert_eq(http_process_raw(raw, len, &cfg, vmm_api_handle, &api, &out, &out_len, &closed), 0);
	x->closed = closed;
	x->raw_len = out_len;
	parse_responses(out, out_len, x);
	free(out);
}

/* Builds one request (malloc'd). body may be NULL. */
static char *request(const char *method, const char *path, const char *body, size_t *len)
{
	char *s;
	int n;

	if (body)
		n = asprintf(&s, "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
				 "Content-Length: %zu\r\n\r\n%s", method, path, strlen(body), body);
	else
		n = asprintf(&s, "%s %s HTTP/1.1\r\nHost: localhost\r\n\r\n", method, path);
	cr_assert_gt(n, 0);
	*len = (size_t)n;
	return s;
}

/* One request, one response. */
static struct resp one(const char *method, const char *path, const char *body)
{
	size_t len;
	char *raw = request(method, path, body, &len);
	struct exchange x;
	struct resp r;

	run_raw(raw, len, &x);
	free(raw);
	cr_assert_eq(x.n, 1, "%s %s: %u responses", method, path, x.n);
	r = x.r[0];
	x.n = 0; /* ownership moves to r */
	return r;
}

static void resp_free(struct resp *r)
{
	free(r->body);
	json_decref(r->json);
}

/* Checks a JSON error response and that its message contains want. */
static void assert_error(const struct resp *r, int status, const char *want)
{
	cr_assert_eq(r->status, status, "status %d (want %d): %s", r->status, status, r->body);
	cr_assert_str_eq(r->ctype, "application/json", "error bodies are JSON");
	cr_assert_not_null(r->json, "error body is not JSON: %s", r->body);
	json_t *e = json_object_get(r->json, "error");
	cr_assert(json_is_string(e), "no \"error\" string in %s", r->body);
	cr_assert_gt(strlen(json_string_value(e)), 0);
	if (want)
		cr_assert(strstr(json_string_value(e), want), "error '%s' lacks '%s'", json_string_value(e),
			  want);
}

static void check_error(const char *method, const char *path, const char *body, int status,
			const char *want)
{
	struct resp r = one(method, path, body);
	assert_error(&r, status, want);
	resp_free(&r);
}

static void check_status(const char *method, const char *path, const char *body, int status)
{
	struct resp r = one(method, path, body);
	cr_assert_eq(r.status, status, "%s %s: status %d (want %d): %s", method, path, r.status, status,
		     r.body);
	resp_free(&r);
}

static char *valid_config(const char *kernel)
{
	char *s;
	cr_assert(asprintf(&s, "{\"payload\": {\"kernel\": \"%s\", \"cmdline\": \"x y\"}, "
			       "\"cpus\": {\"boot_vcpus\": 2}, \"memory\": {\"size\": 67108864}, "
			       "\"serial\": {\"mode\": \"Off\"}}", kernel) > 0);
	return s;
}

static void create_ok(const char *kernel)
{
	char *cfg = valid_config(kernel);
	struct resp r = one("PUT", "/api/v1/vm.create", cfg);
	cr_assert_eq(r.status, 204, "vm.create: %d %s", r.status, r.body);
	cr_assert_eq(r.body_len, 0);
	resp_free(&r);
	free(cfg);
}

/* ------------------------------------------------------------ routes */

Test(api, ping)
{
	struct resp r = one("GET", "/api/v1/vmm.ping", NULL);

	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(r.ctype, "application/json");
	cr_assert_not_null(r.json, "%s", r.body);
	cr_assert_str_eq(json_string_value(json_object_get(r.json, "version")), FORKVM_VERSION);
	cr_assert_eq(json_integer_value(json_object_get(r.json, "pid")), getpid());
	resp_free(&r);
	check_status("GET", "/api/v1/vmm.ping?verbose=1", NULL, 200);
}

Test(api, info_before_create_is_404)
{
	check_error("GET", "/api/v1/vm.info", NULL, 404, "no VM");
}

Test(api, unknown_paths_are_404)
{
	check_error("GET", "/api/v1/vm.nope", NULL, 404, "/api/v1/vm.nope");
	check_error("PUT", "/api/v1/vm.nope", "{}", 404, "vm.nope");
	check_error("GET", "/api/v2/vmm.ping", NULL, 404, "/api/v2/vmm.ping");
	check_error("GET", "/", NULL, 404, NULL);
	check_error("GET", "/api/v1", NULL, 404, NULL);
	check_error("GET", "/api/v1/", NULL, 404, NULL);
	check_error("GET", "/vmm.ping", NULL, 404, NULL);
	check_error("GET", "/api/v1/vmm.ping/extra", NULL, 404, NULL);
	check_error("GET", "/API/V1/vmm.ping", NULL, 404, NULL);
}

Test(api, wrong_method_is_405)
{
	check_error("GET", "/api/v1/vm.create", NULL, 405, "PUT");
	check_error("GET", "/api/v1/vm.boot", NULL, 405, "GET");
	check_error("PUT", "/api/v1/vmm.ping", NULL, 405, "PUT");
	check_error("POST", "/api/v1/vm.info", "{}", 405, "POST");
	check_error("DELETE", "/api/v1/vm.delete", NULL, 405, "DELETE");
	check_error("POST", "/api/v1/vm.create", "{}", 405, NULL);
}

/* ------------------------------------------------------------ vm.create */

Test(api, create_bad_json)
{
	struct resp r = one("PUT", "/api/v1/vm.create", "{\"payload\": {\"kernel\": \"/k\",}}");
	assert_error(&r, 400, "line 1");
	cr_assert(strstr(json_string_value(json_object_get(r.json, "error")), "column"), "%s", r.body);
	resp_free(&r);
	r = one("PUT", "/api/v1/vm.create", "{\n  \"payload\": \n  nope\n}");
	assert_error(&r, 400, "line 3");
	resp_free(&r);
	check_error("GET", "/api/v1/vm.info", NULL, 404, NULL);
}

Test(api, create_unknown_field)
{
	check_error("PUT", "/api/v1/vm.create", "{\"payload\": {\"kernel\": \"/k\"}, \"net\": []}", 400, "net");
	check_error("PUT", "/api/v1/vm.create",
		    "{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": 67108864, \"hugepages\": true}}",
		    400, "memory.hugepages");
}

Test(api, create_wrong_type)
{
	check_error("PUT", "/api/v1/vm.create",
		    "{\"payload\": {\"kernel\": \"/k\"}, \"cpus\": {\"boot_vcpus\": \"two\"}}", 400,
		    "cpus.boot_vcpus");
	check_error("PUT", "/api/v1/vm.create", "[1, 2]", 400, "object");
	check_error("PUT", "/api/v1/vm.create", "{\"payload\": {\"kernel\": \"/k\"}, \"memory\": {\"size\": 3145728}}",
		    400, "memory");
	check_error("PUT", "/api/v1/vm.create", "{\"cpus\": {\"boot_vcpus\": 1}}", 400, "kernel");
}

Test(api, create_empty_body)
{
	check_error("PUT", "/api/v1/vm.create", NULL, 400, "JSON");
	check_error("PUT", "/api/v1/vm.create", "", 400, NULL);
	check_error("PUT", "/api/v1/vm.create", "   ", 400, NULL);
	check_error("GET", "/api/v1/vm.info", NULL, 404, NULL);
}

Test(api, create_then_info_then_conflict)
{
	struct resp r;

	create_ok("/opt/forkvm/guest");
	r = one("GET", "/api/v1/vm.info", NULL);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_not_null(r.json, "%s", r.body);
	cr_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "Created");
	json_t *c = json_object_get(r.json, "config");
	cr_assert(json_is_object(c), "%s", r.body);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(c, "payload"), "kernel")),
			 "/opt/forkvm/guest");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(c, "payload"), "cmdline")), "x y");
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(c, "cpus"), "boot_vcpus")), 2);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(c, "memory"), "size")), 64 << 20);
	cr_assert_eq(json_integer_value(json_object_get(r.json, "memory_actual_size")), 64 << 20);
	cr_assert_null(json_object_get(r.json, "exit"), "no exit before boot");
	resp_free(&r);

	char *cfg = valid_config("/other");
	check_error("PUT", "/api/v1/vm.create", cfg, 409, "already");
	free(cfg);
	/* The first configuration stays. */
	r = one("GET", "/api/v1/vm.info", NULL);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(r.json, "config"),
										"payload"), "kernel")),
			 "/opt/forkvm/guest");
	resp_free(&r);
}

Test(api, verbs_before_boot_are_409)
{
	check_error("PUT", "/api/v1/vm.boot", NULL, 409, "vm.create");
	check_error("PUT", "/api/v1/vm.delete", NULL, 409, "no VM");
	create_ok("/k");
	check_error("PUT", "/api/v1/vm.pause", NULL, 409, "not booted");
	check_error("PUT", "/api/v1/vm.resume", NULL, 409, "not booted");
	check_error("PUT", "/api/v1/vm.shutdown", NULL, 409, "not booted");
	check_error("PUT", "/api/v1/vm.reboot", NULL, 409, "not booted");
	check_error("GET", "/api/v1/vm.counters", NULL, 409, "not booted");
	struct resp r = one("GET", "/api/v1/vm.info", NULL);
	cr_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "Created");
	resp_free(&r);
}

Test(api, delete_then_create_again)
{
	create_ok("/first");
	check_status("PUT", "/api/v1/vm.delete", NULL, 204);
	check_error("GET", "/api/v1/vm.info", NULL, 404, NULL);
	create_ok("/second");
	struct resp r = one("GET", "/api/v1/vm.info", NULL);
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(r.json, "config"),
										"payload"), "kernel")),
			 "/second");
	resp_free(&r);
}

Test(api, vmm_shutdown_calls_back)
{
	check_status("PUT", "/api/v1/vmm.shutdown", NULL, 204);
	cr_assert_eq(shutdowns, 1);
	api.on_shutdown = NULL;
	check_status("PUT", "/api/v1/vmm.shutdown", NULL, 204);
	cr_assert_eq(shutdowns, 1);
}

/* ------------------------------------------------------------ vm.boot */

Test(api, boot_with_missing_kernel)
{
	const char *path = "/nonexistent/forkvm/guest-payload";
	struct resp r;

	/* The payload is read before /dev/kvm is opened: the same error with
	 * or without KVM. */
	create_ok(path);
	r = one("PUT", "/api/v1/vm.boot", NULL);
	assert_error(&r, 400, path);
	resp_free(&r);
	r = one("GET", "/api/v1/vm.info", NULL);
	cr_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "Created",
			 "a failed boot leaves the VM created");
	resp_free(&r);
	check_error("GET", "/api/v1/vm.counters", NULL, 409, NULL);
}

Test(api, boot_with_a_non_elf_kernel)
{
	char *dir = ut_tmpdir();
	char *path = ut_write_file(dir, "notelf", "#!/bin/sh\n", 10);
	struct resp r;

	create_ok(path);
	r = one("PUT", "/api/v1/vm.boot", NULL);
	assert_error(&r, 400, "not a payload");
	cr_assert(strstr(r.body, "notelf"), "%s", r.body);
	resp_free(&r);
	free(path);
	ut_rmtree(dir);
	free(dir);
}

/* ------------------------------------------------------------ limits, framing */

Test(api, oversized_body_is_413)
{
	size_t blen = MAX_BODY + 1, len;
	char *hdr;
	int n = asprintf(&hdr, "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
			       "Content-Length: %zu\r\n\r\n", blen);
	cr_assert_gt(n, 0);
	len = (size_t)n + blen;
	char *raw = malloc(len);
	memcpy(raw, hdr, (size_t)n);
	memset(raw + n, ' ', blen);
	raw[n] = '{';
	raw[len - 1] = '}';

	struct exchange x;
	run_raw(raw, len, &x);
	cr_assert_eq(x.n, 1);
	assert_error(&x.r[0], 413, NULL);
	exchange_free(&x);
	check_error("GET", "/api/v1/vm.info", NULL, 404, NULL);
	free(raw);
	free(hdr);
}

Test(api, oversized_chunked_body_is_413)
{
	const size_t chunk = 600 * 1024;
	char *raw = malloc(2 * chunk + 512), *p = raw;

	p += sprintf(p, "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 2; i++) {
		p += sprintf(p, "%zx\r\n", chunk);
		memset(p, ' ', chunk);
		p += chunk;
		p += sprintf(p, "\r\n");
	}
	p += sprintf(p, "0\r\n\r\n");
	struct exchange x;
	run_raw(raw, (size_t)(p - raw), &x);
	cr_assert_geq(x.n, 1);
	assert_error(&x.r[0], 413, NULL);
	exchange_free(&x);
	free(raw);
}

Test(api, body_of_exactly_the_limit_is_accepted)
{
	const char *json = "{\"payload\": {\"kernel\": \"/k\"}}";
	size_t blen = MAX_BODY, len;
	char *hdr;
	int n = asprintf(&hdr, "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", blen);
	cr_assert_gt(n, 0);
	len = (size_t)n + blen;
	char *raw = malloc(len);
	memcpy(raw, hdr, (size_t)n);
	memcpy(raw + n, json, strlen(json));
	memset(raw + n + strlen(json), ' ', blen - strlen(json)); /* trailing whitespace */

	struct exchange x;
	run_raw(raw, len, &x);
	cr_assert_eq(x.n, 1);
	cr_assert_eq(x.r[0].status, 204, "%d %s", x.r[0].status, x.r[0].body);
	exchange_free(&x);
	free(raw);
	free(hdr);
}

Test(api, truncated_request_gets_no_response)
{
	static const char raw[] = "PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
				  "{\"payload\": {\"kernel\": \"/k\"}}";
	struct exchange x;

	run_raw(raw, sizeof(raw) - 1, &x);
	cr_assert_eq(x.raw_len, 0, "no bytes before the request is complete");
	cr_assert_eq(x.n, 0);
	exchange_free(&x);
	static const char half[] = "GET /api/v1/vmm.pi";
	run_raw(half, sizeof(half) - 1, &x);
	cr_assert_eq(x.raw_len, 0);
	exchange_free(&x);
	check_error("GET", "/api/v1/vm.info", NULL, 404, NULL); /* nothing was created */
}

Test(api, pipelined_errors_do_not_stop_the_server)
{
	size_t l1, l2, l3, l4;
	char *r1 = request("GET", "/api/v1/nope", NULL, &l1);
	char *r2 = request("PUT", "/api/v1/vm.create", "{bad json", &l2);
	char *r3 = request("GET", "/api/v1/vm.create", NULL, &l3);
	char *r4 = request("GET", "/api/v1/vmm.ping", NULL, &l4);
	size_t len = l1 + l2 + l3 + l4;
	char *raw = malloc(len);
	memcpy(raw, r1, l1);
	memcpy(raw + l1, r2, l2);
	memcpy(raw + l1 + l2, r3, l3);
	memcpy(raw + l1 + l2 + l3, r4, l4);

	struct exchange x;
	run_raw(raw, len, &x);
	cr_assert_eq(x.n, 4, "one response per request, in order");
	assert_error(&x.r[0], 404, NULL);
	assert_error(&x.r[1], 400, NULL);
	assert_error(&x.r[2], 405, NULL);
	cr_assert_eq(x.r[3].status, 200);
	cr_assert_not_null(json_object_get(x.r[3].json, "version"));
	cr_assert(!x.closed, "errors keep the connection open");
	exchange_free(&x);
	free(raw);
	free(r1);
	free(r2);
	free(r3);
	free(r4);
}

Test(api, pipelined_create_and_info)
{
	size_t l1, l2;
	char *cfg = valid_config("/k");
	char *r1 = request("PUT", "/api/v1/vm.create", cfg, &l1);
	char *r2 = request("GET", "/api/v1/vm.info", NULL, &l2);
	char *raw = malloc(l1 + l2);
	memcpy(raw, r1, l1);
	memcpy(raw + l1, r2, l2);

	struct exchange x;
	run_raw(raw, l1 + l2, &x);
	cr_assert_eq(x.n, 2);
	cr_assert_eq(x.r[0].status, 204);
	cr_assert_eq(x.r[1].status, 200);
	cr_assert_str_eq(json_string_value(json_object_get(x.r[1].json, "state")), "Created");
	exchange_free(&x);
	free(raw);
	free(r1);
	free(r2);
	free(cfg);
}

Test(api, status_mapping)
{
	cr_assert_eq(vmm_api_status(-EBUSY), 409);
	cr_assert_eq(vmm_api_status(-ENOENT), 400); /* a configuration naming a missing file */
	cr_assert_eq(vmm_api_status(-ENODEV), 503); /* no usable /dev/kvm */
	cr_assert_eq(vmm_api_status(-EINVAL), 400);
	cr_assert_eq(vmm_api_status(-ENOEXEC), 400);
	cr_assert_eq(vmm_api_status(-EISDIR), 400);
	cr_assert_eq(vmm_api_status(-EFBIG), 400);
	cr_assert_eq(vmm_api_status(-ENOMEM), 500);
	cr_assert_eq(vmm_api_status(-EIO), 500);
}
