#!/bin/sh
# make bench: forkbench's standard suite on this machine. Each subcommand
# runs with its defaults; the tables go to the terminal and to
# BUILD/bench/results.txt, the latency CDFs to BUILD/bench/NAME.svg.
# docs/benchmarks.md records the latest results of this suite.
# It runs on every platform this host has (BENCH_PLATFORMS="process kvm"
# picks): the process platform always, KVM where /dev/kvm works; each
# figure's name ends in its platform. In the lane (FORKVM_LANE, make
# bench-lane) both platforms run under an emulated CPU, the sample counts
# are smaller and forkbench labels every figure as not representative.
# Usage: bench.sh BUILD_DIR [OUT_DIR]
set -u
build=$1
out=${2:-$build/bench}
have_kvm() { [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; }
# the platforms measured: the process platform always, KVM where it works
platforms=${BENCH_PLATFORMS:-}
if [ -z "$platforms" ]; then
	platforms=process
	have_kvm && platforms="$platforms kvm"
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
if ! have_kvm; then
	echo "make bench: this host has no usable /dev/kvm: the process platform only"
	echo "make bench: ('make bench-lane' adds KVM figures from the KVM lane, not representative)"
fi
last=""
for p in $platforms; do last=$p; done
for p in $platforms; do
# store first: on ext4 without a journal, creating files soon after mass
# deletions (density removes 1000 clone directories) is slow.
# shellcheck disable=SC2046
{
P="--platform $p"
run "syscall-$p" syscall $P $(lane -n 2000)
run "boot-$p" boot $P $(lane -n 3)
run "eval-$p" eval $P $(lane -n 100)
run "snapshot-$p" snapshot $P $(lane -n 3)
run "restore-$p" restore $P $(lane -n 3)
run "store-$p" store $P $(lane -n 2 --memory 1G --clones 3)
run "fork-$p" fork $P $(lane -n 10)
# the same without the clone jail: what the jail costs a fork
run "fork-nojail-$p" fork $P --jail off $(lane -n 10)
run "e2e-$p" e2e $P $(lane -n 10)
if [ -n "${FORKVM_LANE:-}" ]; then
	run "fanout-$p" fanout $P 4
	run "density-$p" density $P 50 --budget 512M
else
	run "fanout-$p" fanout $P 16
	run "density-$p" density $P 1000 --budget 2G
fi
run "boot-vs-fork-$p" boot-vs-fork $P $(lane -n 2)
run "floor-$p" floor $P $(lane -n 10)
# the Linux test guest through forkd: KVM only, and not on PVM (which runs
# guest ring 0 about 1000x slower)
if [ "$p" = kvm ] && [ ! -d /sys/module/kvm_pvm ]; then
	if [ -s "$build/linux/vmlinuz" ]; then
		run "linux-$p" linux $P $(lane -n 3 2)
	else
		echo "make bench: no Linux test guest in $build/linux: 'make linux-guest' adds the linux figures"
	fi
fi
# QEMU once, beside the last platform's forkvm
if [ "$p" = "$last" ]; then
	run "peer-$p" peer $P $(lane -n 2 --accel kvm) # TCG inside the lane's TCG takes minutes
fi
}
done
echo
echo "results: $out/results.txt; plots: $out/*.svg"
if [ -n "$failed" ]; then
	echo "failed:$failed"
	exit 1
fi
