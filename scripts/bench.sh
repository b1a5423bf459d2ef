#!/bin/sh
# make bench: forkbench's standard suite on this machine. Each subcommand
# runs with its defaults; the tables go to the terminal and to
# BUILD/bench/results.txt, the latency CDFs to BUILD/bench/NAME.svg.
# docs/benchmarks.md records the latest results of this suite.
# Usage: bench.sh BUILD_DIR
set -u
build=$1
out=$build/bench
mkdir -p "$out"
fb=$build/bin/forkbench
: > "$out/results.txt"
failed=""
run() {
	name=$1
	shift
	printf '\n$ forkbench %s\n' "$*" | tee -a "$out/results.txt"
	if ! "$fb" "$@" --plot "$out/$name.svg" 2>&1 | tee -a "$out/results.txt"; then
		failed="$failed $name"
	fi
}
# store first: on ext4 without a journal, creating files soon after mass
# deletions (density removes 1000 clone directories) is slow.
run boot boot
run eval eval
run snapshot snapshot
run restore restore
run store store
run fork fork
# the same without the clone jail: what the jail costs a fork
run fork-nojail fork --jail off
run e2e e2e
run fanout fanout 16
run density density 1000 --budget 2G
run boot-vs-fork boot-vs-fork
run floor floor
run peer peer
echo
echo "results: $out/results.txt; plots: $out/*.svg"
if [ -n "$failed" ]; then
	echo "failed:$failed"
	exit 1
fi
