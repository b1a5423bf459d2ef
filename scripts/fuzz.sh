#!/bin/sh
# make fuzz: runs every libFuzzer target for SECONDS, from its seed corpus
# (tests/fuzz/corpus/NAME) plus what earlier runs found
# (BUILD/corpus/NAME). Prints executions and coverage per target; exits 1
# if any target found a crash (saved as BUILD/crash-NAME-*).
# Usage: fuzz.sh BUILD SECONDS BIN...
set -u
out=$1
secs=$2
shift 2
failed=""
for bin in "$@"; do
	name=$(basename "$bin" | sed 's/^fuzz_//')
	mkdir -p "$out/corpus/$name"
	echo "== fuzz $name for ${secs}s"
	if ! "$bin" "$out/corpus/$name" "tests/fuzz/corpus/$name" -max_total_time="$secs" \
		-artifact_prefix="$out/crash-$name-" -print_final_stats=1 > "$out/$name.log" 2>&1; then
		failed="$failed $name"
	fi
	grep -E '^stat::number_of_executed_units|^#[0-9]+ *DONE' "$out/$name.log" | tail -2
	grep -E 'cov: ' "$out/$name.log" | tail -1
done
if [ -n "$failed" ]; then
	echo "crashes in:$failed (see $out/*.log and $out/crash-*)"
	exit 1
fi
echo "no crashes"
