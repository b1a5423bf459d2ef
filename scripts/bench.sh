#!/bin/sh
# make bench: forkbench's standard suite on this machine. Each subcommand
# runs with its defaults; the tables go to the terminal and to
# BUILD/bench/results.txt, the latency CDFs to BUILD/bench/NAME.svg.
# docs/benchmarks.md records the latest results of this suite.
# On a host without /dev/kvm it says so and does nothing (make bench-lane
# runs it in the KVM lane); in the lane (FORKVM_LANE) the sample counts are
# smaller and forkbench labels every figure as not representative.
# Usage: bench.sh BUILD_DIR [OUT_DIR]
set -u
build=$1
out=${2:-$build/bench}
if [ -z "${FORKVM_LANE:-}" ] && { [ ! -c /dev/kvm ] || [ ! -w /dev/kvm ]; }; then
	echo "make bench: this host has no usable /dev/kvm, and forkbench measures KVM: nothing measured."
	echo "make bench: 'make bench-lane' runs the suite in the KVM lane (nested SVM under QEMU TCG)"
	echo "make bench: with fewer samples; its figures are not representative of hardware."
	exit 0
fi
# lane ARGS: extra arguments in the KVM lane only
lane() { [ -n "${FORKVM_LANE:-}" ] && echo "$*"; }
mkdir -p "$out"
fb=$build/bin/forkbench
: > "$out/results.txt"
failed=""
run() {
	name=$1
	shift
	printf '\n$ forkbench %s\n' "$*" | tee -a "$out/results.txt"
	# (a pipe's status is tee's: forkbench's goes through a file)
	{
		"$fb" "$@" --plot "$out/$name.svg"
		echo $? > "$out/.rc"
	} 2>&1 | tee -a "$out/results.txt"
	[ "$(cat "$out/.rc")" = 0 ] || failed="$failed $name"
	rm -f "$out/.rc"
}
# store first: on ext4 without a journal, creating files soon after mass
# deletions (density removes 1000 clone directories) is slow.
# shellcheck disable=SC2046
{
run boot boot $(lane -n 3)
run eval eval $(lane -n 100)
run snapshot snapshot $(lane -n 3)
run restore restore $(lane -n 3)
run store store $(lane -n 2 --memory 1G --clones 3)
run fork fork $(lane -n 10)
# the same without the clone jail: what the jail costs a fork
run fork-nojail fork --jail off $(lane -n 10)
run e2e e2e $(lane -n 10)
if [ -n "${FORKVM_LANE:-}" ]; then
	run fanout fanout 4
	run density density 50 --budget 512M
else
	run fanout fanout 16
	run density density 1000 --budget 2G
fi
run boot-vs-fork boot-vs-fork $(lane -n 2)
run floor floor $(lane -n 10)
run peer peer $(lane -n 2 --accel kvm) # TCG inside the lane's TCG takes minutes
}
echo
echo "results: $out/results.txt; plots: $out/*.svg"
if [ -n "$failed" ]; then
	echo "failed:$failed"
	exit 1
fi
