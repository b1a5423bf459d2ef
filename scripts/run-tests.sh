#!/bin/sh
# Runs the Criterion test binaries: run-tests.sh BUILD_DIR GUEST_DIR UNIT... -- INTEGRATION...
# Integration tests find the binaries and the guest through FORKVM_BUILD / FORKVM_GUEST.
set -u
build=$1; guest=$2; shift 2
FORKVM_BUILD=$(cd "$build" && pwd); export FORKVM_BUILD
FORKVM_GUEST=$(cd "$guest" && pwd); export FORKVM_GUEST
failed=""
phase=unit
for t in "$@"; do
	if [ "$t" = "--" ]; then
		phase=integration
		if [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
			echo "== /dev/kvm is absent or not accessible: integration tests that boot a guest will skip"
		fi
		continue
	fi
	echo "== $phase: $(basename "$t")"
	if ! "$t" --jobs="${TEST_JOBS:-2}" ${TEST_ARGS:-}; then
		failed="$failed $(basename "$t")"
	fi
done
if [ -n "$failed" ]; then
	echo "FAILED:$failed"
	exit 1
fi
echo "all tests passed"
