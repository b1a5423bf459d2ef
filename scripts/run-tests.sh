#!/bin/sh
# Runs the Criterion test binaries: run-tests.sh BUILD_DIR GUEST_DIR UNIT... -- INTEGRATION...
# Integration tests find the binaries and the guest through FORKVM_BUILD / FORKVM_GUEST.
#
# Unit tests run on this host. Integration tests boot guests, once on each
# platform (FORKVM_PLATFORM is set for each pass; forkvm, forkd and
# forkbench take their --platform default from it):
#   - the process platform, here ("process platform": needs no /dev/kvm);
#   - KVM natively where /dev/kvm opens ("native KVM"), else in the KVM
#     lane, scripts/lane.sh: a QEMU TCG VM with nested SVM ("KVM lane
#     (nested SVM under TCG)"), all suites in one boot. Where /dev/kvm is
#     PVM, the Linux guest suites' (test_linux*) KVM pass needs the lane:
#     PVM emulates guest ring 0 far too slowly to boot a kernel. In the lane
#     it runs its smoke cases, or all with FORKVM_TEST_LINUX_LANE=1 (see
#     linux_lane_pass).
# FORKVM_TEST_WHERE=lane runs only the KVM pass, in the lane (make
# test-lane); =native forbids the lane (no KVM pass without /dev/kvm).
# FORKVM_TEST_PLATFORMS="kvm process" (default) picks the passes.
# When the KVM pass can run neither natively nor in the lane, the run fails
# and says what is missing, unless FORKVM_TESTS_ALLOW_SKIP=1.
# An integration suite that tested nothing (Criterion's "Tested: 0"), or
# skipped a test for want of /dev/kvm, fails the run, unless
# FORKVM_TESTS_ALLOW_SKIP=1. Other skips (a peer that cannot be downloaded)
# are counted in the suite's result line.
# FORKVM_LANE_TIMEOUT: seconds the whole lane run may take (default 3600).
set -u
build=$1; guest=$2; shift 2
FORKVM_BUILD=$(cd "$build" && pwd); export FORKVM_BUILD
FORKVM_GUEST=$(cd "$guest" && pwd); export FORKVM_GUEST
here=$(cd "$(dirname "$0")" && pwd)
FORKVM_SRC=$(cd "$here/.." && pwd); export FORKVM_SRC
LANE_LABEL="KVM lane (nested SVM under TCG)"
PROCESS_LABEL="process platform"
platforms=${FORKVM_TEST_PLATFORMS:-kvm process}
where=${FORKVM_TEST_WHERE:-auto}
allow_skip=${FORKVM_TESTS_ALLOW_SKIP:-0}

case $where in
auto | native | lane) ;;
*) echo "run-tests: FORKVM_TEST_WHERE=$where: expected auto, native or lane" >&2; exit 2 ;;
esac
for p in $platforms; do
	case $p in
	kvm | process) ;;
	*) echo "run-tests: FORKVM_TEST_PLATFORMS=$platforms: expected kvm and/or process" >&2; exit 2 ;;
	esac
done

unit=""
integ=""
phase=unit
for t in "$@"; do
	if [ "$t" = "--" ]; then
		phase=integration
	elif [ $phase = unit ]; then
		unit="$unit $t"
	else
		integ="$integ $t"
	fi
done

have_kvm() { [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; }
# PVM (kvm_pvm): KVM for guests whose ring 0 it emulates; no Linux guests
is_pvm() { [ -e /sys/module/kvm_pvm ]; }
# The suites that boot Linux guests (test_linux*) and the others.
linux_integ=""
other_integ=""
for t in $integ; do
	case $(basename "$t") in
	test_linux*) linux_integ="$linux_integ $t" ;;
	*) other_integ="$other_integ $t" ;;
	esac
done

summary=$(mktemp /tmp/forkvm-tests-XXXXXX)
trap 'rm -f "$summary" "$summary.log" "$summary.rc"' EXIT
failed=""

# run_suite KIND LABEL BINARY: runs one Criterion binary, prints its result
# line and records it in the summary.
run_suite() {
	kind=$1 label=$2 t=$3
	name=$(basename "$t")
	echo "== $kind: $name ($label)"
	start=$(date +%s)
	{
		"$t" --jobs="${TEST_JOBS:-2}" ${TEST_ARGS:-}
		echo $? > "$summary.rc"
	} 2>&1 | tee "$summary.log"
	rc=$(cat "$summary.rc")
	secs=$(($(date +%s) - start))
	syn=$(grep 'Synthesis:' "$summary.log" | tail -n 1)
	tested=$(echo "$syn" | sed -n 's/.*Tested: \([0-9]*\).*/\1/p')
	passing=$(echo "$syn" | sed -n 's/.*Passing: \([0-9]*\).*/\1/p')
	skipped=$(grep -c '\[SKIP\]' "$summary.log")
	nokvm=$(grep -c '\[SKIP\].*/dev/kvm is absent' "$summary.log")
	result=passed
	[ "$skipped" -gt 0 ] && result="passed, $skipped skipped"
	if [ "$rc" -ne 0 ]; then
		result="FAILED (exit $rc)"
	elif [ -z "$tested" ]; then
		result="FAILED (no Criterion synthesis)"
	elif [ "$kind" = integration ] && [ "$tested" -eq 0 ]; then
		if [ "$allow_skip" = 1 ]; then
			result="skipped (Tested: 0, FORKVM_TESTS_ALLOW_SKIP=1)"
		else
			result="FAILED (Tested: 0: the suite booted no guest)"
		fi
	elif [ "$kind" = integration ] && [ "$nokvm" -gt 0 ] && [ "$allow_skip" != 1 ]; then
		result="FAILED ($nokvm tests skipped: no /dev/kvm)"
	fi
	case $result in FAILED*) failed="$failed $name" ;; esac
	line=$(printf '%-20s %-34s %4s tested %4s passed %5s s  %s' "$name" "$label" "${tested:-?}" \
		"${passing:-?}" "$secs" "$result")
	echo "== $line"
	echo "$line" >> "$summary"
}

for t in $unit; do
	run_suite unit "native" "$t"
done

# native_pass PLATFORM LABEL: every integration suite here, guests on PLATFORM.
native_pass() {
	FORKVM_PLATFORM=$1
	export FORKVM_PLATFORM
	for t in $integ; do
		run_suite integration "$2" "$t"
	done
	unset FORKVM_PLATFORM
}

wants() { case " $platforms " in *" $1 "*) return 0 ;; esac; return 1; }

# lane_pass SUITES [CPUS]: the KVM pass of SUITES in the KVM lane, one
# boot with CPUS vCPUs (default: the lane's, 1).
lane_pass() {
	lane_suites=$1
	[ -n "$(echo $lane_suites)" ] || return 0
	lane_cpus=${2:-${FORKVM_LANE_CPUS:-1}}
	# the lane's own tests first (on this host): it reports failures,
	# missing pieces and hangs as it should
	if [ -z "${FORKVM_LANE_SELFTEST:-}" ] && [ -z "${lane_selftest_done:-}" ] &&
		[ -x "$FORKVM_BUILD/tests/test_lane" ]; then
		run_suite lane "lane self-test (this host)" "$FORKVM_BUILD/tests/test_lane"
		lane_selftest_done=1
	fi
	# what forkbench peer downloads: the lane has no network
	if [ -x "$FORKVM_BUILD/bin/forkbench" ]; then
		"$FORKVM_BUILD/bin/forkbench" peer --prepare ||
			echo "== forkbench peer could not prepare its cache: its test will skip"
	fi
	lane_start=$(date +%s)
	{
		# shellcheck disable=SC2086
		bash "$here/lane.sh" run --timeout "${FORKVM_LANE_TIMEOUT:-3600}" --cpus "$lane_cpus" --env TEST_JOBS \
			--env TEST_ARGS --env ASAN_OPTIONS --env UBSAN_OPTIONS -- \
			sh "$here/run-tests.sh" "$FORKVM_BUILD" "$FORKVM_GUEST" -- $lane_suites
		echo $? > "$summary.rc"
	} 2>&1 | tee "$summary.log"
	lane_rc=$(cat "$summary.rc")
	lane_secs=$(($(date +%s) - lane_start))
	grep '^== test_' "$summary.log" | sed 's/^== //' >> "$summary"
	if [ "$lane_rc" -ge 124 ] && ! grep -q '^== test_' "$summary.log"; then
		if [ "$allow_skip" = 1 ]; then
			echo "== the lane could not run (see above); FORKVM_TESTS_ALLOW_SKIP=1: no KVM pass"
			echo "no KVM pass: the lane could not run (FORKVM_TESTS_ALLOW_SKIP=1)" >> "$summary"
		else
			if grep -q 'forkvm-lane: ready' "$summary.log"; then
				# it booted, then went down before a suite ended
				echo "run-tests: the KVM lane booted but its guest went down during the run (see its console" >&2
				echo "run-tests: above, kept under build/lane/runs): QEMU TCG's nested SVM; run again." >&2
				failed="$failed (integration in the lane: the lane went down, exit $lane_rc)"
				echo "== the lane ran for $(($(date +%s) - lane_start)) s (boot included)"
				return 0
			fi
			if have_kvm; then
				echo "run-tests: FORKVM_TEST_WHERE=lane, but the KVM lane could not run (see its messages above)." >&2
			else
				echo "run-tests: this host has no usable /dev/kvm, and the KVM lane could not run (see its messages above)." >&2
			fi
			echo "run-tests: the lane needs root (to install qemu-system-x86, busybox-static, kmod, cpio" >&2
			echo "run-tests: and to download the Debian kernel) or those already present; or run on a host" >&2
			echo "run-tests: with /dev/kvm. FORKVM_TESTS_ALLOW_SKIP=1 runs without the KVM pass." >&2
			failed="$failed (integration on KVM: neither /dev/kvm nor the KVM lane)"
		fi
	elif [ "$lane_rc" -ne 0 ]; then
		failed="$failed (integration in the lane, exit $lane_rc)"
	fi
	echo "== the lane ran for $lane_secs s (boot included)"
}

# The Linux guest suites' KVM pass where it must take the lane (no
# /dev/kvm, or PVM's), each test in a lane of its own (QEMU's emulated SVM
# has stopped the lane's own timers, or crashed its kernel, while several
# Linux guests booted in one lane: docs/linux-guests.md):
#   FORKVM_TEST_LINUX_LANE=1      every case (make test-linux-lane);
#   unset (make test's default)   the smoke cases below, about 3 minutes:
#                                 a boot, the walkthrough's restores with
#                                 disks, the agent on vsock across restores,
#                                 forkd's 10 Linux clones; the rest is an
#                                 opt-out the summary names;
#   FORKVM_TEST_LINUX_LANE=0      none: an explicit opt-out.
# The suites' other cases (bad kernels, the process platform's refusal)
# ran in the process pass.
LINUX_LANE_SMOKE="boots_to_userspace_on_one_vcpu_and_exits_on_reboot
restores_of_one_snapshot_get_their_own_random_streams_and_disks
the_agent_runs_in_the_guest_on_vsock_and_carries_on_in_restores
forkd_forks_linux_clones_each_with_its_own_identity_and_randomness"
linux_lane_pass() {
	[ -n "$linux_integ" ] || return 0
	lx_mode=${FORKVM_TEST_LINUX_LANE:-smoke}
	if [ "$lx_mode" = 1 ] || [ "$lx_mode" = smoke ]; then
		# one test at a time: two Linux guests booting at once in the
		# lane went down far more often; and each test in a lane of its
		# own, since a lane that ran several Linux guests went down more
		# often too (docs/linux-guests.md). A lane that goes down (not a
		# test that fails) gets one more try in a new lane, said so.
		jobs_was=${TEST_JOBS:-}
		TEST_JOBS=1
		export TEST_JOBS
		if [ -n "${TEST_ARGS:-}" ]; then
			echo "== the Linux guest suites' KVM pass runs in the $LANE_LABEL, 2 CPUs, one test at a time (TEST_ARGS=$TEST_ARGS)"
			lane_pass "$linux_integ" 2
		else
			if [ "$lx_mode" = smoke ]; then
				echo "== the Linux guest suites' KVM pass runs its smoke cases in the $LANE_LABEL, 2 CPUs, each in a lane of its own (FORKVM_TEST_LINUX_LANE=1: all)"
			else
				echo "== the Linux guest suites' KVM pass runs in the $LANE_LABEL, 2 CPUs, each test in a lane of its own"
			fi
			# (lane_pass and run_suite use t, name: the loop's are ours)
			for lx_suite in $linux_integ; do
				lx_csuite=$("$lx_suite" --list 2>/dev/null | sed -n '1s/: .*//p')
				lx_names=$("$lx_suite" --list 2>/dev/null | sed -n 's/^[^a-z_]*── //p')
				lx_skipped=0
				for lx_name in $lx_names; do
					if [ "$lx_mode" = smoke ] && ! echo "$LINUX_LANE_SMOKE" | grep -qx "$lx_name"; then
						lx_skipped=$((lx_skipped + 1))
						continue
					fi
					TEST_ARGS="--filter=$lx_csuite/$lx_name"
					export TEST_ARGS
					lx_failed=$failed
					lx_lines=$(wc -l < "$summary")
					lane_pass "$lx_suite" 2
					if [ "$failed" != "$lx_failed" ] &&
						echo "$failed" | tail -c 80 | grep -q 'the lane went down'; then
						echo "== the lane went down during $lx_csuite/$lx_name: once more, in a new lane"
						echo "$(basename "$lx_suite") $lx_csuite/$lx_name: the lane went down; retried in a new lane" >> "$summary"
						failed=$lx_failed
						lane_pass "$lx_suite" 2
					fi
					# the summary's line for this run (if the lane gave one) names the test
					if [ "$(wc -l < "$summary")" -gt "$lx_lines" ] && tail -n 1 "$summary" | grep -q ' tested '; then
						sed -i '$ s|$|  '"$lx_csuite/$lx_name"'|' "$summary"
					fi
				done
				if [ "$lx_skipped" -gt 0 ]; then
					line=$(printf '%-20s %-34s %s' "$(basename "$lx_suite")" "$LANE_LABEL" \
						"$lx_skipped other cases not run: opt-out (FORKVM_TEST_LINUX_LANE=1, make test-linux-lane, runs them)")
					echo "== $line"
					echo "$line" >> "$summary"
				fi
			done
			unset TEST_ARGS
		fi
		if [ -n "$jobs_was" ]; then TEST_JOBS=$jobs_was; else unset TEST_JOBS; fi
	else
		for t in $linux_integ; do
			line=$(printf '%-20s %-34s %s' "$(basename "$t")" "$LANE_LABEL" \
				"KVM pass not run: opt-out (FORKVM_TEST_LINUX_LANE=0; docs/linux-guests.md)")
			echo "== $line"
			echo "$line" >> "$summary"
		done
	fi
}

if [ -n "$integ" ]; then
	if [ -n "${FORKVM_LANE:-}" ]; then
		# inside the lane (scripts/lane.sh sets FORKVM_LANE): its KVM pass
		native_pass kvm "$LANE_LABEL"
	else
		# the process platform needs no /dev/kvm: it runs here
		if [ "$where" != lane ] && wants process; then
			native_pass process "$PROCESS_LABEL"
		fi
		if ! wants kvm; then
			:
		elif [ "$where" != lane ] && have_kvm && [ -n "$linux_integ" ] && is_pvm; then
			# PVM runs guest ring 0 about 1000 times slower than hardware
			# virtualization: a Linux guest cannot boot in reasonable time,
			# so the Linux suites take the lane
			integ_all=$integ
			integ=$other_integ
			native_pass kvm "native KVM"
			integ=$integ_all
			linux_lane_pass
		elif [ "$where" != lane ] && have_kvm; then
			native_pass kvm "native KVM"
		elif [ "$where" = native ]; then
			echo "== /dev/kvm is absent or not accessible and FORKVM_TEST_WHERE=native: no KVM pass"
		else
			if [ "$where" = lane ]; then
				echo "== integration suites on KVM in the $LANE_LABEL (FORKVM_TEST_WHERE=lane)"
			else
				echo "== /dev/kvm is absent or not accessible: the KVM pass runs in the $LANE_LABEL"
			fi
			lane_pass "$other_integ"
			linux_lane_pass
		fi
	fi
fi

echo
echo "== summary"
cat "$summary"
if [ -n "$failed" ]; then
	echo "FAILED:$failed"
	exit 1
fi
echo "all tests passed"
