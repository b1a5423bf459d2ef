# forkvm - one non-recursive Makefile. Output goes under build/.
#   make            build everything (installs missing Debian packages first)
#   make run        boot the default guest (the JavaScript agent) and talk to it
#   make run-linux  the snapshot/restore walkthrough with a Linux guest
#   make test       unit + integration tests (Criterion)
#   make bench      forkbench's standard suite (results in build/bench/)
#   make fuzz       libFuzzer targets, FUZZ_SECONDS each (clang)
#   make SAN=1 ...  ASan/UBSan build (objects under build/san)
#   make V=1 ...    show the commands

CC ?= gcc
MUSL_CC ?= musl-gcc
SAN ?= 0
V ?= 0

ifeq ($(V),1)
Q :=
else
Q := @
endif

ifeq ($(SAN),1)
O := build/san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
else
O := build
SANFLAGS :=
endif
GUEST_O := build/guest

WARN := -Wall -Wextra -Werror -Wmissing-prototypes -Wstrict-prototypes -Wformat=2 \
	-Wundef -Wwrite-strings -Wshadow -Wpointer-arith -Wcast-qual -Wvla \
	-Wimplicit-fallthrough -Wno-missing-field-initializers
CFLAGS := -std=c11 -O2 -g -D_GNU_SOURCE -I. $(WARN) $(SANFLAGS) -MMD -MP
LDFLAGS := $(SANFLAGS)
LDLIBS := -ljansson -lhttp_parser -lxxhash -lzstd -luring -lseccomp -lpthread

# The default guest and test payloads: static musl programs for guest ring 3.
GUEST_CFLAGS := -std=c11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -Werror -static
DUKTAPE_DIR := /usr/share/duktape

all: bins guest man

# ---------------------------------------------------------------- deps
# Installs what is missing (apt-get) and does nothing when all is present.
.PHONY: deps
deps:
	$(Q)sh scripts/deps.sh

# ---------------------------------------------------------------- sources
COMMON_SRC := $(wildcard common/*.c)
VMM_SRC := $(filter-out vmm/main.c,$(wildcard vmm/*.c vmm/*/*.c))
STORE_SRC := $(wildcard store/*.c)
CLI_SRC := $(wildcard cli/*.c)
BENCH_SRC := $(wildcard bench/*.c)
FORKD_SRC := $(wildcard forkd/*.c)

COMMON_OBJ := $(COMMON_SRC:%.c=$(O)/obj/%.o)
VMM_OBJ := $(VMM_SRC:%.c=$(O)/obj/%.o)

# The process platform's stub (vmm/ptrace/stub/): a freestanding static
# program linked above guest memory, the same for every build, carried in
# libvmm as bytes (vmm/ptrace/stub_blob.S).
STUB_ELF := build/stub/forkvm-stub
STUB_FLAGS := -std=c11 -O2 -Wall -Wextra -Werror -static -nostdlib -ffreestanding \
	-fno-stack-protector -fpie -no-pie -fvisibility=hidden -fno-asynchronous-unwind-tables \
	-fno-builtin -Wl,-Ttext-segment=0x7e0000000000 -Wl,--build-id=none -Wl,-z,noexecstack
STUB_BLOB := $(O)/obj/vmm/ptrace/stub_blob.o
VMM_OBJ += $(STUB_BLOB)

$(STUB_ELF): vmm/ptrace/stub/stub.c vmm/ptrace/stub/stub.h | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  STUB    $@")
	$(Q)gcc $(STUB_FLAGS) $< -o $@

$(STUB_BLOB): vmm/ptrace/stub_blob.S $(STUB_ELF)
	@mkdir -p $(dir $@)
	$(Q)$(CC) -c -DSTUB_ELF='"$(STUB_ELF)"' $< -o $@
STORE_OBJ := $(STORE_SRC:%.c=$(O)/obj/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(O)/obj/%.o)
BENCH_OBJ := $(BENCH_SRC:%.c=$(O)/obj/%.o)
FORKD_OBJ := $(FORKD_SRC:%.c=$(O)/obj/%.o)

LIBCOMMON := $(O)/lib/libcommon.a
LIBVMM := $(O)/lib/libvmm.a
LIBSTORE := $(O)/lib/libstore.a

FORKVM := $(O)/bin/forkvm
FORKCTL := $(O)/bin/forkctl
FORKBENCH := $(O)/bin/forkbench
FORKD := $(O)/bin/forkd
BINS := $(FORKVM) $(FORKCTL) $(FORKBENCH) $(FORKD)

.PHONY: bins
bins: $(BINS)

$(O)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(LIBCOMMON): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBVMM): $(VMM_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBSTORE): $(STORE_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(FORKVM): $(O)/obj/vmm/main.o $(LIBVMM) $(LIBSTORE) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(FORKCTL): $(CLI_OBJ) $(LIBSTORE) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(FORKD): $(FORKD_OBJ) $(LIBVMM) $(LIBSTORE) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(FORKBENCH): $(BENCH_OBJ) $(LIBVMM) $(LIBSTORE) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) $^ $(LDLIBS) -lm -o $@

# ---------------------------------------------------------------- guest
AGENT := $(GUEST_O)/agent
PAYLOAD_SRC := $(wildcard guest/payloads/*.c)
PAYLOADS := $(PAYLOAD_SRC:guest/payloads/%.c=$(GUEST_O)/payloads/%)

.PHONY: guest linux-guest
guest: $(AGENT) $(PAYLOADS)

# The Linux test guest (docs/linux-guests.md): Debian's kernel, a busybox
# initramfs with its virtio, vsock and ext4 modules and the agent, and a
# root disk image, made from Debian packages by scripts/linux-guest.sh
# (cached; the tests of Linux guests need it, nothing else does).
LINUX_O := $(O)/linux
linux-guest: $(AGENT)
	$(Q)sh scripts/linux-guest.sh $(LINUX_O) $(AGENT)

# Installed by deps: with -j, make must not look for it before deps ran.
$(DUKTAPE_DIR)/duktape.c: | deps
	@:

# Duktape is compiled once into an object (it takes ~10 s) with its own flags:
# it is third-party code and not held to our warning set.
$(GUEST_O)/duktape.o: $(DUKTAPE_DIR)/duktape.c | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  MUSLCC  $<")
	$(Q)$(MUSL_CC) -std=c99 -O2 -g -I$(DUKTAPE_DIR) -c $< -o $@

$(AGENT): $(wildcard guest/agent/*.c guest/agent/*.h) $(GUEST_O)/duktape.o | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  MUSLCC  $@")
	$(Q)$(MUSL_CC) $(GUEST_CFLAGS) -I$(DUKTAPE_DIR) $(filter %.c,$^) $(GUEST_O)/duktape.o -lm -o $@

$(GUEST_O)/payloads/%: guest/payloads/%.c | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  MUSLCC  $@")
	$(Q)$(MUSL_CC) $(GUEST_CFLAGS) $< -lpthread -o $@

# ---------------------------------------------------------------- run
RUN_DIR := $(O)/run
# make run: the default guest's pipeline (scripts/run-demo.sh), then the
# Linux path (scripts/run-linux.sh: natively where /dev/kvm runs Linux
# guests, else in the KVM lane); RUN_LINUX=0 leaves the Linux path out.
RUN_LINUX ?= 1
.PHONY: run
run: all linux-guest
	$(Q)sh scripts/run-demo.sh $(O) $(AGENT)
	$(Q)if [ "$(RUN_LINUX)" != 0 ]; then sh scripts/run-linux.sh $(O); \
	else echo "make run: RUN_LINUX=0: the Linux path (make run-linux) left out"; fi

# The walkthrough with a Linux guest: natively where /dev/kvm runs Linux
# guests (not PVM), else in the KVM lane (scripts/run-linux.sh).
.PHONY: run-linux
run-linux: all linux-guest
	$(Q)sh scripts/run-linux.sh $(O)

# ---------------------------------------------------------------- bench
# forkbench's standard suite (docs/benchmarks.md records its results).
# bench-lane: the same in the KVM lane (fewer samples; not representative
# of hardware), results in $(O)/bench-lane.
.PHONY: bench bench-lane
bench: all
	$(Q)sh scripts/bench.sh $(O)

bench-lane: all linux-guest
	$(Q)bash scripts/lane.sh run --rw $(O)/bench-lane -- sh scripts/bench.sh $(O) $(O)/bench-lane

# ---------------------------------------------------------------- fuzz
# libFuzzer targets (clang, ASan/UBSan) for parsers of untrusted bytes:
# tests/fuzz/fuzz_*.c, seed corpora in tests/fuzz/corpus/NAME. make fuzz
# runs each for FUZZ_SECONDS (default 60); new inputs go to
# build/fuzz/corpus/NAME, crashes to build/fuzz/crash-NAME-*.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_O := build/fuzz
FUZZ_FLAGS := -std=c11 -O1 -g -D_GNU_SOURCE -I. -Wall -Wextra -Wno-unused-parameter -Wno-gnu-variable-sized-type-not-at-end \
	-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
FUZZ_LIB_SRC := $(COMMON_SRC) $(VMM_SRC) $(STORE_SRC)
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_O)/obj/%.o) $(FUZZ_O)/obj/vmm/ptrace/stub_blob.o
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_O)/%)
FUZZ_COMMA := ,

# Per target: extra objects, and FUZZ_WRAP_<name>: functions replaced at
# link time (-Wl,--wrap=F sends the library's calls of F to the target's
# __wrap_F) where the real one would open /dev/kvm, fork, kill or sleep.
FUZZ_FORKD_SRC := $(filter-out forkd/main.c,$(FORKD_SRC))
FUZZ_FORKD_OBJ := $(FUZZ_FORKD_SRC:%.c=$(FUZZ_O)/obj/%.o)
$(FUZZ_O)/fuzz_forkd_api $(FUZZ_O)/fuzz_forkd_ctl: $(FUZZ_FORKD_OBJ)
$(FUZZ_O)/fuzz_args: $(FUZZ_O)/obj/cli/args.o
FUZZ_WRAP_vmm_api := vm_create vm_start vm_destroy vm_snapshot vm_snapshot_store vm_restore \
	vm_restore_store
FUZZ_WRAP_forkd_api := forkd_fork forkd_builder_start forkd_pool_fill forkd_clone_spawn vm_template_config \
	vm_template_close
FUZZ_WRAP_forkd_ctl := forkd_clone_spawn forkd_builder_start vm_template_config vm_template_close
FUZZ_WRAP_syscalls := vcpu_wait vcpu_poll
# Kept between builds (make would delete them as intermediate files).
.SECONDARY: $(FUZZ_LIB_OBJ) $(FUZZ_FORKD_OBJ) $(FUZZ_O)/obj/cli/args.o

$(FUZZ_O)/obj/vmm/ptrace/stub_blob.o: vmm/ptrace/stub_blob.S $(STUB_ELF) | fuzz-deps
	@mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) -c -DSTUB_ELF='"$(STUB_ELF)"' $< -o $@

$(FUZZ_O)/obj/%.o: %.c | deps fuzz-deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) -MMD -MP -c $< -o $@

$(FUZZ_O)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_OBJ) | deps fuzz-deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) -MMD -MP -fsanitize=fuzzer $(filter %.c %.o,$^) \
		$(addprefix -Wl$(FUZZ_COMMA)--wrap=,$(FUZZ_WRAP_$*)) $(LDLIBS) -o $@

.PHONY: fuzz fuzz-deps fuzz-build
fuzz-deps:
	$(Q)command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "installing clang for the fuzz targets"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y clang; }

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	$(Q)sh scripts/fuzz.sh $(FUZZ_O) $(FUZZ_SECONDS) $(FUZZ_BINS)

# ---------------------------------------------------------------- tests
UNIT_SRC := $(wildcard tests/unit/test_*.c)
INTEG_SRC := $(wildcard tests/integration/test_*.c)
TEST_HELPERS := $(wildcard tests/lib/*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(O)/tests/%)
INTEG_BINS := $(INTEG_SRC:tests/integration/%.c=$(O)/tests/%)
# The lane's own tests (run on the host when the lane is used) and the
# suite that fails on purpose for them.
LANE_BINS := $(O)/tests/test_lane $(O)/tests/lane-failing
TEST_HELPER_OBJ := $(TEST_HELPERS:%.c=$(O)/obj/%.o)

# Unit suites of forkd's internals link its objects (not main.o).
FORKD_LIB_OBJ := $(filter-out %/forkd/main.o,$(FORKD_OBJ))
$(O)/tests/test_forkd_ctl: $(FORKD_LIB_OBJ)

$(O)/tests/%: tests/unit/%.c $(TEST_HELPER_OBJ) $(LIBVMM) $(LIBSTORE) $(LIBCOMMON) | deps
	@mkdir -p $(dir $@) $(O)/obj/tests/unit
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) -MF $(O)/obj/tests/unit/$*.d $< $(filter $(FORKD_LIB_OBJ),$^) $(TEST_HELPER_OBJ) $(LIBVMM) $(LIBSTORE) $(LIBCOMMON) \
		$(LDFLAGS) -lcriterion $(LDLIBS) -o $@

$(O)/tests/%: tests/integration/%.c $(TEST_HELPER_OBJ) $(LIBVMM) $(LIBSTORE) $(LIBCOMMON) | deps
	@mkdir -p $(dir $@) $(O)/obj/tests/integration
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) -MF $(O)/obj/tests/integration/$*.d $< $(TEST_HELPER_OBJ) $(LIBVMM) $(LIBSTORE) $(LIBCOMMON) \
		$(LDFLAGS) -lcriterion $(LDLIBS) -o $@

# Integration suites boot guests: natively where /dev/kvm opens, else in the
# KVM lane (scripts/lane.sh: nested SVM under QEMU TCG). test-lane forces
# the lane.
$(O)/tests/test_lane: tests/lane/test_lane.c $(TEST_HELPER_OBJ) $(LIBVMM) $(LIBSTORE) $(LIBCOMMON) | deps
	@mkdir -p $(dir $@) $(O)/obj/tests/lane
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) -MF $(O)/obj/tests/lane/test_lane.d $< $(TEST_HELPER_OBJ) $(LIBVMM) $(LIBSTORE) $(LIBCOMMON) \
		$(LDFLAGS) -lcriterion $(LDLIBS) -o $@

$(O)/tests/lane-failing: tests/lane/failing.c | deps
	@mkdir -p $(dir $@) $(O)/obj/tests/lane
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) -MF $(O)/obj/tests/lane/failing.d $< $(LDFLAGS) -lcriterion -o $@

.PHONY: test test-unit test-integration test-lane test-linux-lane
test: all linux-guest $(UNIT_BINS) $(INTEG_BINS) $(LANE_BINS)
	$(Q)sh scripts/run-tests.sh $(O) $(GUEST_O) $(UNIT_BINS) -- $(INTEG_BINS)

test-lane: all linux-guest $(UNIT_BINS) $(INTEG_BINS) $(LANE_BINS)
	$(Q)FORKVM_TEST_WHERE=lane sh scripts/run-tests.sh $(O) $(GUEST_O) $(UNIT_BINS) -- $(INTEG_BINS)

# The Linux guest suites' KVM pass in the lane (off by default there:
# docs/linux-guests.md).
test-linux-lane: all linux-guest $(filter %/test_linux,$(INTEG_BINS)) $(LANE_BINS)
	$(Q)FORKVM_TEST_LINUX_LANE=1 FORKVM_TEST_WHERE=lane sh scripts/run-tests.sh $(O) $(GUEST_O) -- \
		$(filter %/test_linux,$(INTEG_BINS))

test-unit: all $(UNIT_BINS)
	$(Q)sh scripts/run-tests.sh $(O) $(GUEST_O) $(UNIT_BINS) --

test-integration: all linux-guest $(INTEG_BINS) $(LANE_BINS)
	$(Q)sh scripts/run-tests.sh $(O) $(GUEST_O) -- $(INTEG_BINS)

# ---------------------------------------------------------------- man, install
# Man pages: written once in scdoc (docs/man/NAME.1.scd), built here; the
# tests keep their option lists equal to --help's (tests/unit/test_cli.c).
MAN_SRC := $(wildcard docs/man/*.1.scd)
MAN_PAGES := $(MAN_SRC:docs/man/%.scd=$(O)/man/%)
.PHONY: man install uninstall
man: $(MAN_PAGES)
$(O)/man/%: docs/man/%.scd | deps
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  SCDOC   $@")
	$(Q)scdoc < $< > $@.tmp && mv $@.tmp $@

# make install [PREFIX=/usr/local] [DESTDIR=...]: the four binaries, the
# default guest, the man pages and bash completion (scripts/install.sh);
# make uninstall removes exactly what it installed.
PREFIX ?= /usr/local
install: all
	$(Q)sh scripts/install.sh $(O) $(GUEST_O) "$(DESTDIR)$(PREFIX)"
uninstall:
	$(Q)sh scripts/install.sh --uninstall "$(DESTDIR)$(PREFIX)"

# ---------------------------------------------------------------- misc
.PHONY: clean format
clean:
	rm -rf build

format:
	clang-format -i $(wildcard */*.c */*.h */*/*.c */*/*.h)

-include $(shell find build -name '*.d' 2>/dev/null)
