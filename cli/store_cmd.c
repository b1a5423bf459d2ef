/* cli/store_cmd.c - forkctl store ...: the content-addressed snapshot
 * store (store/store.h, docs/store-format.md), used locally. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/util.h"
#include "store/store.h"

static const char store_usage[] =
	"usage: forkctl [--store DIR] store COMMAND [ARGS]\n"
	"  init [--chunk-size SIZE]          create the store (default chunk 256K; a power\n"
	"                                    of two, 4K..64M)\n"
	"  put file:///DIR [--tag TAG]       import a snapshot directory; prints its id\n"
	"  export REF file:///DIR            write a snapshot back as a directory\n"
	"  ls                                list snapshots\n"
	"  show REF                          a snapshot's manifest and tags\n"
	"  tag REF NAME                      name a snapshot (moves NAME if it exists)\n"
	"  rm REF                            remove a snapshot and its tags (gc frees space)\n"
	"  gc [--image-budget SIZE]          remove unreferenced objects, leftovers, and\n"
	"                                    cached images beyond SIZE (least recently used)\n"
	"  verify [REF]                      check every object (and cached image)\n"
	"  du                                space used, dedup and compression ratios\n"
	"REF: a tag, or any unique prefix of a snapshot id (hex digits).\n"
	"--json: one line of JSON on stdout instead of the text (every command;\n"
	"docs/store-format.md lists the fields).\n"
	"The store: --store DIR (before or after COMMAND), else $FORKVM_STORE, else\n"
	"/var/lib/forkvm/store (root) or ~/.local/share/forkvm/store.\n";

/* Usage errors: "forkctl store: MESSAGE" and the usage text. */
static const struct cli_cmd store_cli = {.prog = "forkctl store", .usage_text = store_usage};

static int fail(const char *cmd, const char *err)
{
	fprintf(stderr, "forkctl store %s: %s\n", cmd, err);
	return EXIT_FAILURE;
}

static int open_store(const char *root, bool create, uint32_t chunk, struct store **st,
		      const char *cmd)
{
	char err[512];
	if (store_open(root, create, chunk, st, err, sizeof(err)) < 0)
		return fail(cmd, err);
	return 0;
}

static int dir_of(const char *url, char *dir, size_t len, const char *cmd)
{
	enum store_url_kind kind;
	char err[512];
	if (store_url_parse(url, &kind, dir, len, err, sizeof(err)) < 0)
		return fail(cmd, err);
	if (kind != STORE_URL_FILE)
		return fail(cmd, "expected a file:///DIR URL");
	return 0;
}

static void human(uint64_t b, char *out, size_t len)
{
	const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int i = 0;
	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	snprintf(out, len, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* put's arguments, checked before the store is opened (put creates it):
 * returns 0 or the exit status of the error, printed. */
/* Prints j (stolen) as one line of JSON: --json's output. Returns 0 or 1. */
static int print_json_line(json_t *j)
{
	char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!text) {
		fputs("forkctl store: out of memory\n", stderr);
		return EXIT_FAILURE;
	}
	puts(text);
	free(text);
	return 0;
}

static int put_args(int argc, char **argv, const char **tag, char *dir, size_t len)
{
	const char *url = NULL;

	*tag = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--tag") && i + 1 < argc)
			*tag = argv[++i];
		else if (!strncmp(argv[i], "--tag=", 6))
			*tag = argv[i] + 6;
		else if (!url)
			url = argv[i];
		else
			return cli_usage_error(&store_cli, "put: unexpected argument");
	}
	if (!url)
		return cli_usage_error(&store_cli, "put: a file:///DIR is required");
	if (*tag && !store_tag_valid(*tag))
		return cli_usage_error(
		    &store_cli, "put: bad tag name (letters, digits, '.', '_', '-'; at most 128)");
	return dir_of(url, dir, len, "put");
}

static int cmd_put(struct store *st, int argc, char **argv, bool json)
{
	const char *tag;
	char dir[4096], err[512], hex[33], a[32], b[32];
	struct store_id id;
	struct store_put_stats s;
	int rc = put_args(argc, argv, &tag, dir, sizeof(dir));

	if (rc)
		return rc;
	if (store_put_dir(st, dir, tag, &id, &s, err, sizeof(err)) < 0)
		return fail("put", err);
	store_id_hex(&id, hex);
	if (json)
		return print_json_line(json_pack(
			"{s:s,s:s?,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "id", hex, "tag", tag,
			"logical_bytes", (json_int_t)s.logical_bytes, "data_chunks",
			(json_int_t)s.data_chunks, "new_chunks", (json_int_t)s.new_chunks,
			"reused_chunks", (json_int_t)s.reused_chunks, "new_raw_bytes",
			(json_int_t)s.new_raw_bytes, "new_stored_bytes", (json_int_t)s.new_stored_bytes,
			"disk_bytes", (json_int_t)s.disk_bytes, "disk_data_chunks",
			(json_int_t)s.disk_data_chunks, "disk_new_chunks",
			(json_int_t)s.disk_new_chunks, "seconds", s.seconds));
	printf("%s\n", hex);
	human(s.new_raw_bytes, a, sizeof(a));
	human(s.new_stored_bytes, b, sizeof(b));
	char disks[96] = "";
	if (s.disk_bytes)
		snprintf(disks, sizeof(disks), " (of them the disks': %" PRIu64 ", %" PRIu64
			 " new)", s.disk_data_chunks, s.disk_new_chunks);
	fprintf(stderr,
		"put %.12s%s%s: %" PRIu64 " data chunks, %" PRIu64 " new (%s, %s stored), %" PRIu64
		" already in the store%s, %.2f s\n",
		hex, tag ? " as " : "", tag ? tag : "", s.data_chunks, s.new_chunks, a, b,
		s.reused_chunks, disks, s.seconds);
	return 0;
}

static int resolve(struct store *st, const char *ref, struct store_id *id, const char *cmd)
{
	char err[512];
	if (store_resolve(st, ref, id, err, sizeof(err)) < 0)
		return fail(cmd, err);
	return 0;
}

static int cmd_export(struct store *st, int argc, char **argv, bool json)
{
	char dir[4096], err[512];
	struct store_id id;

	if (argc != 3)
		return cli_usage_error(&store_cli, "export: REF and file:///DIR are required");
	if (resolve(st, argv[1], &id, "export") || dir_of(argv[2], dir, sizeof(dir), "export"))
		return EXIT_FAILURE;
	if (store_export(st, &id, dir, err, sizeof(err)) < 0)
		return fail("export", err);
	if (json) {
		char hex[33];
		store_id_hex(&id, hex);
		return print_json_line(json_pack("{s:s,s:s}", "id", hex, "dir", dir));
	}
	return 0;
}

static void fmt_time(uint64_t ns, char *out, size_t len)
{
	time_t t = (time_t)(ns / 1000000000ULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

struct ls_row {
	char line[600];
	uint64_t created;
	json_t *j; /* --json */
};

struct ls_ctx {
	struct ls_row *rows;
	size_t n, cap;
	bool json;
};

/* A manifest's stored bytes (chunks of memory and disks, each counted at
 * the chunk size) and its disks' sizes. */
static void data_of(const json_t *m, uint64_t *data, uint64_t *disk_bytes)
{
	const json_t *mm = json_object_get(m, "memory"), *d;
	uint64_t cs = (uint64_t)json_integer_value(json_object_get(mm, "chunk_size"));
	size_t i;

	*data = cs * json_array_size(json_object_get(mm, "chunks"));
	*disk_bytes = 0;
	json_array_foreach(json_object_get(m, "disks"), i, d) {
		*data += cs * json_array_size(json_object_get(d, "chunks"));
		*disk_bytes += (uint64_t)json_integer_value(json_object_get(d, "size"));
	}
}

static int ls_cb(void *arg, const struct store_entry *e)
{
	struct ls_ctx *c = arg;
	char hex[33], when[32] = "?", mem[32] = "?", tags[300] = "", parent[16] = "-", data[32] = "?";
	const json_t *m = e->manifest;
	uint64_t created = 0;

	store_id_hex(&e->id, hex);
	if (m) {
		created = (uint64_t)json_integer_value(json_object_get(m, "created_realtime_ns"));
		fmt_time(created, when, sizeof(when));
		const json_t *mm = json_object_get(m, "memory");
		human((uint64_t)json_integer_value(json_object_get(mm, "size")), mem, sizeof(mem));
		uint64_t bytes, disk_bytes;
		data_of(m, &bytes, &disk_bytes);
		human(bytes, data, sizeof(data));
		const char *p = json_string_value(json_object_get(m, "parent"));
		if (p)
			snprintf(parent, sizeof(parent), "%.12s", p);
	}
	for (size_t i = 0; e->tags && e->tags[i]; i++) {
		size_t l = strlen(tags);
		snprintf(tags + l, sizeof(tags) - l, "%s%s", l ? "," : "", e->tags[i]);
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 32;
		struct ls_row *g = realloc(c->rows, cap * sizeof(*g));
		if (!g)
			return -ENOMEM;
		c->rows = g;
		c->cap = cap;
	}
	struct ls_row *r = &c->rows[c->n++];
	r->created = created;
	r->j = NULL;
	if (c->json) {
		json_t *tl = json_array();
		for (size_t i = 0; e->tags && e->tags[i]; i++)
			json_array_append_new(tl, json_string(e->tags[i]));
		const json_t *mm = json_object_get(m, "memory");
		uint64_t bytes, disk_bytes;
		data_of(m, &bytes, &disk_bytes);
		r->j = json_pack("{s:s,s:I,s:I,s:I,s:I,s:s?,s:o,s:b}", "id", hex,
				 "created_realtime_ns", (json_int_t)created, "memory_size",
				 (json_int_t)json_integer_value(json_object_get(mm, "size")),
				 "disk_bytes", (json_int_t)disk_bytes, "data_bytes",
				 (json_int_t)bytes,
				 "parent", json_string_value(json_object_get(m, "parent")), "tags", tl,
				 "damaged", m == NULL);
	}
	snprintf(r->line, sizeof(r->line), "%-12.12s  %-19s  %9s  %9s  %-12s  %s%s", hex, when, mem,
		 data, parent, m ? "" : "(damaged) ", tags[0] ? tags : "-");
	return 0;
}

static int cmp_rows(const void *a, const void *b)
{
	const struct ls_row *x = a, *y = b;
	return x->created < y->created ? -1 : x->created > y->created;
}

static int cmd_ls(struct store *st, int argc, char **argv, bool json)
{
	struct ls_ctx c = { .json = json };
	char err[512];

	(void)argv;
	if (argc != 1)
		return cli_usage_error(&store_cli, "ls takes no argument");
	if (store_list(st, ls_cb, &c, err, sizeof(err)) < 0) {
		free(c.rows);
		return fail("ls", err);
	}
	if (c.n) /* qsort's base must not be NULL, even for no rows */
		qsort(c.rows, c.n, sizeof(*c.rows), cmp_rows);
	if (json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < c.n; i++)
			json_array_append_new(arr, c.rows[i].j);
		free(c.rows);
		return print_json_line(json_pack("{s:o}", "snapshots", arr));
	}
	printf("%-12s  %-19s  %9s  %9s  %-12s  %s\n", "ID", "CREATED (UTC)", "MEMORY", "DATA",
	       "PARENT", "TAGS");
	for (size_t i = 0; i < c.n; i++)
		printf("%s\n", c.rows[i].line);
	free(c.rows);
	return 0;
}

struct show_ctx {
	const struct store_id *id;
	json_t *out;
};

static int show_cb(void *arg, const struct store_entry *e)
{
	struct show_ctx *c = arg;
	if (!store_id_equal(&e->id, c->id))
		return 0;
	json_t *tags = json_array();
	for (size_t i = 0; e->tags && e->tags[i]; i++)
		json_array_append_new(tags, json_string(e->tags[i]));
	char hex[33];
	store_id_hex(&e->id, hex);
	c->out = json_pack("{s:s,s:o,s:O}", "id", hex, "tags", tags, "manifest",
			   e->manifest ? e->manifest : json_null());
	return 0;
}

static int cmd_show(struct store *st, int argc, char **argv, bool json)
{
	struct store_id id;
	char err[512];
	if (argc != 2)
		return cli_usage_error(&store_cli, "show: REF is required");
	if (resolve(st, argv[1], &id, "show"))
		return EXIT_FAILURE;
	struct show_ctx c = { &id, NULL };
	if (store_list(st, show_cb, &c, err, sizeof(err)) < 0)
		return fail("show", err);
	if (!c.out)
		return fail("show", "the snapshot vanished");
	/* The chunk list is long: show its size, not its entries. */
	json_t *mem = json_object_get(json_object_get(c.out, "manifest"), "memory");
	if (json_is_object(mem)) {
		size_t n = json_array_size(json_object_get(mem, "chunks"));
		json_object_set_new(mem, "chunks", json_sprintf("%zu non-zero chunks", n));
	}
	char *text = json_dumps(c.out, json ? JSON_COMPACT | JSON_SORT_KEYS : JSON_INDENT(2));
	printf("%s\n", text ? text : "{}");
	free(text);
	json_decref(c.out);
	return 0;
}

static int cmd_tag(struct store *st, int argc, char **argv, bool json)
{
	struct store_id id;
	char err[512];
	if (argc != 3)
		return cli_usage_error(&store_cli, "tag: REF and NAME are required");
	if (!store_tag_valid(argv[2]))
		return cli_usage_error(
		    &store_cli, "tag: bad tag name (letters, digits, '.', '_', '-'; at most 128)");
	if (resolve(st, argv[1], &id, "tag"))
		return EXIT_FAILURE;
	if (store_tag(st, &id, argv[2], err, sizeof(err)) < 0)
		return fail("tag", err);
	if (json) {
		char hex[33];
		store_id_hex(&id, hex);
		return print_json_line(json_pack("{s:s,s:s}", "id", hex, "tag", argv[2]));
	}
	return 0;
}

static int cmd_rm(struct store *st, int argc, char **argv, bool json)
{
	struct store_id id;
	char err[512], hex[33];
	if (argc != 2)
		return cli_usage_error(&store_cli, "rm: REF is required");
	if (resolve(st, argv[1], &id, "rm"))
		return EXIT_FAILURE;
	if (store_rm(st, &id, err, sizeof(err)) < 0)
		return fail("rm", err);
	store_id_hex(&id, hex);
	if (json)
		return print_json_line(json_pack("{s:s}", "removed", hex));
	fprintf(stderr, "removed snapshot %.12s (its space is freed by forkctl store gc)\n", hex);
	return 0;
}

static int cmd_gc(struct store *st, int argc, char **argv, bool json)
{
	uint64_t budget = UINT64_MAX;
	struct store_gc_stats s;
	char err[512], a[32], b[32];

	for (int i = 1; i < argc; i++) {
		const char *v = NULL;
		if (!strcmp(argv[i], "--image-budget") && i + 1 < argc)
			v = argv[++i];
		else if (!strncmp(argv[i], "--image-budget=", 15))
			v = argv[i] + 15;
		else
			return cli_usage_error(&store_cli, "gc: unexpected argument");
		if (parse_size(v, &budget) < 0)
			return cli_usage_error(&store_cli,
					       "gc: --image-budget needs a size (e.g. 8G, 0)");
	}
	if (store_gc(st, budget, &s, err, sizeof(err)) < 0)
		return fail("gc", err);
	if (json)
		return print_json_line(json_pack(
			"{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "objects_kept", (json_int_t)s.objects_kept,
			"objects_removed", (json_int_t)s.objects_removed, "bytes_removed",
			(json_int_t)s.bytes_removed, "temp_removed", (json_int_t)s.temp_removed,
			"images_removed", (json_int_t)s.images_removed, "image_bytes_removed",
			(json_int_t)s.image_bytes_removed, "images_in_use", (json_int_t)s.images_in_use));
	human(s.bytes_removed, a, sizeof(a));
	human(s.image_bytes_removed, b, sizeof(b));
	printf("gc: %" PRIu64 " objects kept, %" PRIu64 " removed (%s), %" PRIu64
	       " leftover temporary files removed, %" PRIu64 " images removed (%s), %" PRIu64
	       " images in use kept\n",
	       s.objects_kept, s.objects_removed, a, s.temp_removed, s.images_removed, b,
	       s.images_in_use);
	return 0;
}

static void print_problem(void *arg, const char *problem)
{
	if (arg) /* --json: collected */
		json_array_append_new(arg, json_string(problem));
	else
		printf("CORRUPT: %s\n", problem);
}

static int cmd_verify(struct store *st, int argc, char **argv, bool json)
{
	struct store_id id;
	char err[512];
	if (argc > 2)
		return cli_usage_error(&store_cli, "verify takes at most one REF");
	if (argc == 2 && resolve(st, argv[1], &id, "verify"))
		return EXIT_FAILURE;
	json_t *problems = json ? json_array() : NULL;
	int n = store_verify(st, argc == 2 ? &id : NULL, print_problem, problems, err, sizeof(err));
	if (n < 0) {
		json_decref(problems);
		return fail("verify", err);
	}
	if (json) {
		int rc = print_json_line(json_pack("{s:b,s:o}", "intact", n == 0, "problems", problems));
		return rc ? rc : n ? EXIT_FAILURE : 0;
	}
	if (n) {
		fprintf(stderr, "forkctl store verify: %d problem%s\n", n, n == 1 ? "" : "s");
		return EXIT_FAILURE;
	}
	printf("verify: all objects intact\n");
	return 0;
}

static int cmd_du(struct store *st, int argc, char **argv, bool json)
{
	struct store_du d;
	char err[512], l[32], r[32], u[32], s[32], im[32];

	(void)argv;
	if (argc != 1)
		return cli_usage_error(&store_cli, "du takes no argument");
	if (store_du(st, &d, err, sizeof(err)) < 0)
		return fail("du", err);
	if (json)
		return print_json_line(json_pack(
			"{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "snapshots", (json_int_t)d.snapshots,
			"logical_bytes", (json_int_t)d.logical_bytes, "referenced_bytes",
			(json_int_t)d.referenced_bytes, "unique_bytes", (json_int_t)d.unique_bytes,
			"stored_bytes", (json_int_t)d.stored_bytes, "objects", (json_int_t)d.objects,
			"image_bytes", (json_int_t)d.image_bytes, "images", (json_int_t)d.images));
	human(d.logical_bytes, l, sizeof(l));
	human(d.referenced_bytes, r, sizeof(r));
	human(d.unique_bytes, u, sizeof(u));
	human(d.stored_bytes, s, sizeof(s));
	human(d.image_bytes, im, sizeof(im));
	printf("snapshots          %" PRIu64 "\n", d.snapshots);
	printf("logical bytes      %s (guest memory and disks of all snapshots)\n", l);
	printf("referenced bytes   %s (their objects: non-zero chunks, manifests, state)\n", r);
	printf("unique bytes       %s in %" PRIu64 " objects\n", u, d.objects);
	printf("stored bytes       %s\n", s);
	printf("dedup ratio        %.2f (referenced / unique)\n",
	       d.unique_bytes ? (double)d.referenced_bytes / (double)d.unique_bytes : 0.0);
	printf("compression ratio  %.2f (unique / stored)\n",
	       d.stored_bytes ? (double)d.unique_bytes / (double)d.stored_bytes : 0.0);
	printf("cached images      %" PRIu64 ", %s\n", d.images, im);
	return 0;
}

/* Prints the store commands' usage text to f. */
void cli_store_usage(FILE *f)
{
	fputs(store_usage, f);
}

static int cli_store_run(const char *root, int argc, char **argv, bool json);

/* Runs the store command in argv (--store DIR anywhere). Returns the exit status. */
int cli_store_main(const char *root, int argc, char **argv)
{
	int rc;

	/* --store DIR is taken anywhere among the store command's words
	 * (forkctl store du --store DIR, forkctl store --store DIR du): a
	 * store option is never ignored, and none acts on another store. */
	char **args = calloc((size_t)argc + 1, sizeof(*args));
	int n = 0;
	if (!args)
		return fail("store", "out of memory");
	bool json = false;
	for (int i = 0; i < argc; i++) {
		const char *v = NULL;
		if (!strcmp(argv[i], "--json")) {
			json = true;
			continue;
		}
		if (!strcmp(argv[i], "--store")) {
			if (i + 1 >= argc) {
				free(args);
				return cli_usage_error(&store_cli, "--store needs a directory");
			}
			v = argv[++i];
		} else if (!strncmp(argv[i], "--store=", 8)) {
			v = argv[i] + 8;
		} else {
			args[n++] = argv[i];
			continue;
		}
		if (!*v || (root && strcmp(root, v))) {
			free(args);
			return cli_usage_error(
			    &store_cli, "%s",
			    *v ? "--store given twice, with different directories"
			       : "--store needs a directory");
		}
		root = v;
	}
	rc = cli_store_run(root, n, args, json);
	free(args);
	return rc;
}

static int cli_store_run(const char *root, int argc, char **argv, bool json)
{
	char defroot[4096], err[512];
	struct store *st = NULL;
	int rc;

	if (argc < 1)
		return cli_usage_error(&store_cli, "a store command is required");
	if (!root)
		root = store_default_root(defroot, sizeof(defroot));
	const char *cmd = argv[0];
	if (cmd[0] == '-' && strcmp(cmd, "--help"))
		return cli_usage_error(&store_cli, "unknown option before the store command");
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help")) {
		fputs(store_usage, stdout);
		return 0;
	}
	if (!strcmp(cmd, "init")) {
		uint64_t chunk = 0;
		for (int i = 1; i < argc; i++) {
			const char *v = NULL;
			if (!strcmp(argv[i], "--chunk-size") && i + 1 < argc)
				v = argv[++i];
			else if (!strncmp(argv[i], "--chunk-size=", 13))
				v = argv[i] + 13;
			else
				return cli_usage_error(&store_cli, "init: unexpected argument");
			if (parse_size(v, &chunk) < 0)
				return cli_usage_error(
				    &store_cli, "init: --chunk-size needs a size (e.g. 256K)");
			if (chunk < 4096 || chunk > (64 << 20) || (chunk & (chunk - 1)))
				return cli_usage_error(
				    &store_cli, "init: --chunk-size must be a power of two between "
						"4K and 64M");
		}
		if (store_open(root, true, (uint32_t)chunk, &st, err, sizeof(err)) < 0)
			return fail("init", err);
		if (json) {
			rc = print_json_line(json_pack("{s:s,s:i}", "store", root, "chunk_size",
						       (int)store_chunk_size(st)));
			store_close(st);
			return rc;
		}
		printf("store %s: chunk size %u\n", root, store_chunk_size(st));
		store_close(st);
		return 0;
	}
	static const struct {
		const char *name;
		int (*fn)(struct store *st, int argc, char **argv, bool json);
		bool create;
	} cmds[] = {
		{ "put", cmd_put, true },   { "export", cmd_export, false }, { "ls", cmd_ls, false },
		{ "show", cmd_show, false }, { "tag", cmd_tag, false },       { "rm", cmd_rm, false },
		{ "gc", cmd_gc, false },     { "verify", cmd_verify, false }, { "du", cmd_du, false },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(cmd, cmds[i].name))
			continue;
		char dir[4096];
		const char *tag;
		if (cmds[i].fn == cmd_put && (rc = put_args(argc, argv, &tag, dir, sizeof(dir))))
			return rc;
		if (open_store(root, cmds[i].create, 0, &st, cmd))
			return EXIT_FAILURE;
		rc = cmds[i].fn(st, argc, argv, json);
		store_close(st);
		return rc;
	}
	return cli_usage_error(&store_cli, "unknown store command");
}
