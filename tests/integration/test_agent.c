/* tests/integration/test_agent.c - the default guest on real KVM: the
 * agent becomes ready with 1 and 4 vCPUs and evaluates JavaScript. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/agent_client.h"
#include "tests/lib/harness.h"

#define T_MS 30000

static struct h_vm vm;
static struct agent_client *ag;

static void boot(const char *cpus, const char *mem)
{
	const char *extra[] = { "--cpus", cpus, "--memory", mem, NULL };
	cr_assert_eq(h_vm_start(&vm, NULL, extra), 0, "forkvm did not start");
	cr_assert_eq(agent_client_connect(vm.agent, T_MS, &ag), 0, "cannot connect to the agent");
}

static void teardown(void)
{
	if (ag)
		agent_client_close(ag);
	ag = NULL;
	h_vm_stop(&vm);
}

/* Evaluates code; asserts ok and returns the result (borrowed from *reply). */
static json_t *eval_ok(const char *code, json_t **reply)
{
	const char *name = NULL, *msg = NULL;
	cr_assert_eq(agent_client_eval(ag, code, T_MS, reply), 0, "eval of %s failed", code);
	cr_assert(agent_client_reply_ok(*reply, &name, &msg), "eval of %s: %s: %s", code,
		  name ? name : "?", msg ? msg : "?");
	return json_object_get(*reply, "result");
}

static void ready_with(const char *cpus)
{
	json_t *ev = NULL, *r = NULL;

	H_NEED_GUEST();
	boot(cpus, "size=256M");
	cr_assert_eq(agent_client_wait_ready(ag, T_MS, &ev), 0, "no ready event");
	cr_assert_str_eq(json_string_value(json_object_get(ev, "event")), "ready");
	cr_assert_str_eq(json_string_value(json_object_get(ev, "agent")), "forkvm-agent");
	cr_assert_eq(json_integer_value(json_object_get(ev, "pid")), 1);
	cr_assert_eq(strlen(json_string_value(json_object_get(ev, "boot_id"))), 32);
	json_decref(ev);
	cr_assert_eq(json_integer_value(eval_ok("6 * 7", &r)), 42);
	json_decref(r);
	cr_assert_eq(agent_client_info(ag, T_MS, &r), 0);
	json_t *mem = json_object_get(json_object_get(r, "result"), "memory");
	cr_assert_eq(json_integer_value(json_object_get(mem, "ram_total_bytes")), 256 << 20);
	json_decref(r);
}

Test(agent, ready_with_1_vcpu, .fini = teardown, .timeout = 60)
{
	ready_with("boot=1");
}

Test(agent, ready_with_4_vcpus, .fini = teardown, .timeout = 60)
{
	ready_with("boot=4");
}

Test(agent, eval_arithmetic_strings_json, .fini = teardown, .timeout = 60)
{
	json_t *r;

	H_NEED_GUEST();
	boot("boot=1", "size=256M");
	cr_assert_eq(json_integer_value(eval_ok("Math.pow(2, 10) + 7 % 4", &r)), 1027);
	json_decref(r);
	/* (Criterion's float assertions evaluate their arguments twice.) */
	double d = json_real_value(eval_ok("7 / 2", &r));
	cr_assert_float_eq(d, 3.5, 1e-12);
	json_decref(r);
	d = json_number_value(eval_ok("0.1 + 0.2", &r));
	cr_assert_float_eq(d, 0.30000000000000004, 1e-15);
	json_decref(r);
	cr_assert_str_eq(json_string_value(eval_ok("'forkvm'.toUpperCase() + '-' + 'ab'.repeat(2)", &r)),
			 "FORKVM-abab");
	json_decref(r);
	cr_assert_str_eq(json_string_value(eval_ok("'\\u00e9t\\u00e9 \\u2603'", &r)), "\xc3\xa9t\xc3\xa9 \xe2\x98\x83");
	json_decref(r);

	json_t *want = json_loads("{\"a\":[1,2,{\"b\":null}],\"s\":\"x\"}", 0, NULL);
	json_t *got = eval_ok("JSON.parse('{\"a\":[1,2,{\"b\":null}],\"s\":\"x\"}')", &r);
	cr_assert(json_equal(want, got), "JSON round trip differs");
	json_decref(want);
	json_decref(r);
	cr_assert_str_eq(json_string_value(eval_ok("JSON.stringify({k: [true, false]})", &r)),
			 "{\"k\":[true,false]}");
	json_decref(r);

	/* Globals persist between evals. */
	eval_ok("var counter = 40", &r);
	json_decref(r);
	cr_assert_eq(json_integer_value(eval_ok("counter + 2", &r)), 42);
	json_decref(r);

	/* Errors come back as errors, and the agent keeps serving. */
	const char *name, *msg;
	cr_assert_eq(agent_client_eval(ag, "throw new TypeError('bad thing')", T_MS, &r), 0);
	cr_assert_not(agent_client_reply_ok(r, &name, &msg));
	cr_assert_str_eq(name, "TypeError");
	cr_assert(strstr(msg, "bad thing"));
	json_decref(r);
	cr_assert_eq(agent_client_eval(ag, "this is not javascript", T_MS, &r), 0);
	cr_assert_not(agent_client_reply_ok(r, &name, &msg));
	cr_assert_str_eq(name, "SyntaxError");
	json_decref(r);
	cr_assert_eq(json_integer_value(eval_ok("1 + 1", &r)), 2);
	json_decref(r);
}

Test(agent, eval_50_MB_allocation, .fini = teardown, .timeout = 120)
{
	json_t *r;

	H_NEED_GUEST();
	boot("boot=1", "size=512M");
	cr_assert_eq(json_integer_value(eval_ok("var big = new Uint8Array(50 * 1024 * 1024);"
						"for (var i = 0; i < big.length; i += 4096) big[i] = i & 255;"
						"big[big.length - 1] = 7; big.length",
						&r)),
		     50 * 1024 * 1024);
	json_decref(r);
	cr_assert_eq(json_integer_value(eval_ok("big[big.length - 1] + big[8192]", &r)), 7 + 0);
	json_decref(r);
	/* The guest's memory report shows the allocation. */
	cr_assert_eq(agent_client_info(ag, T_MS, &r), 0);
	json_t *mem = json_object_get(json_object_get(r, "result"), "memory");
	json_int_t total = json_integer_value(json_object_get(mem, "ram_total_bytes"));
	json_int_t freeb = json_integer_value(json_object_get(mem, "ram_free_bytes"));
	cr_assert_gt(total - freeb, 50 * 1024 * 1024, "guest reports %lld bytes used",
		     (long long)(total - freeb));
	json_decref(r);
	/* A 50 MB string too. */
	cr_assert_eq(json_integer_value(eval_ok("var s = 'x'.repeat(50 * 1000 * 1000); s.length", &r)),
		     50 * 1000 * 1000);
	json_decref(r);
}

Test(agent, load_and_call, .fini = teardown, .timeout = 60)
{
	json_t *r, *args;
	const char *name, *msg;

	H_NEED_GUEST();
	boot("boot=2", "size=256M");
	cr_assert_eq(agent_client_load(ag,
				       "var table = {}; for (var i = 0; i < 1000; i++) table['k' + i] = i * i;"
				       "function add(a, b) { return a + b; }"
				       "function lookup(k) { return table[k]; }",
				       "warmup.js", T_MS, &r),
		     0);
	cr_assert(agent_client_reply_ok(r, &name, &msg), "load failed: %s", msg ? msg : "");
	json_t *fns = json_object_get(json_object_get(r, "result"), "functions");
	cr_assert(json_is_array(fns));
	bool has_add = false;
	for (size_t i = 0; i < json_array_size(fns); i++)
		has_add |= !strcmp(json_string_value(json_array_get(fns, i)), "add");
	cr_assert(has_add, "load did not list add()");
	json_decref(r);

	args = json_pack("[i,i]", 2, 3);
	cr_assert_eq(agent_client_call(ag, "add", args, T_MS, &r), 0);
	cr_assert(agent_client_reply_ok(r, NULL, NULL));
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 5);
	json_decref(r);
	json_decref(args);

	args = json_pack("[s]", "k30");
	cr_assert_eq(agent_client_call(ag, "lookup", args, T_MS, &r), 0);
	cr_assert_eq(json_integer_value(json_object_get(r, "result")), 900);
	json_decref(r);
	json_decref(args);

	cr_assert_eq(agent_client_call(ag, "missing", NULL, T_MS, &r), 0);
	cr_assert_not(agent_client_reply_ok(r, &name, &msg));
	cr_assert_str_eq(name, "ReferenceError");
	json_decref(r);
}

Test(agent, console_output_goes_to_serial, .fini = teardown, .timeout = 60)
{
	json_t *r;

	H_NEED_GUEST();
	boot("boot=1", "size=256M");
	eval_ok("print('hello from the guest console'); 1", &r);
	json_decref(r);
	char *c = NULL;
	for (int i = 0; i < 200; i++) {
		free(c);
		c = h_read_file(vm.console);
		if (c && strstr(c, "hello from the guest console"))
			break;
		h_sleep_ms(10);
	}
	cr_assert(c && strstr(c, "hello from the guest console"), "console: %s", c ? c : "(none)");
	free(c);
}
