#!/bin/sh
# make run: the whole pipeline on the default guest (the JavaScript agent).
# Boots a template VM once with a sample handler, snapshots it into a store
# under the build directory, starts forkd, forks 100 clones, calls the
# handler in each, prints the latency figures, and cleans up.
# Usage: run-demo.sh BUILD_DIR AGENT
set -eu
build=$1
agent=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
bin=$build/bin
store=$build/run/store
dir=$(mktemp -d /tmp/forkvm-run-XXXXXX)
sock=$dir/forkd.sock
fpid=""
N=100

cleanup() {
	if [ -n "$fpid" ]; then
		kill "$fpid" 2>/dev/null || true
		wait "$fpid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# Where the guests run: forkd's --platform default (FORKVM_PLATFORM, else
# auto: KVM where /dev/kvm works, else the process platform, which needs
# no /dev/kvm: a ptrace'd stub process runs the guest natively).
platform=${FORKVM_PLATFORM:-auto}
mkdir -p "$build/run"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
ms() { date +%s%N | cut -c1-13; }
fctl() { "$bin/forkctl" --forkd="$sock" "$@"; }
# p50/p90/p99/max of the numbers on stdin
stats() { sort -n | awk '{ v[NR] = $1 } END {
	if (NR == 0) { print "no samples"; exit }
	printf "n=%d  min %s  p50 %s  p90 %s  p99 %s  max %s\n", NR, v[1], v[int(NR * 0.5 + 0.5)],
	       v[int(NR * 0.9 + 0.5)], v[int(NR * 0.99 + 0.5)], v[NR] }'; }

cat > "$dir/vm.json" <<JSON
{"cpus": {"boot_vcpus": 1}, "memory": {"size": 268435456}, "payload": {"kernel": "$agent"}}
JSON
cat > "$dir/handlers.js" <<'JS'
// The warm-up a template pays once: every clone starts with it done.
var primes = [];
for (var n = 2; primes.length < 10000; n++) {
	var p = true;
	for (var i = 0; primes[i] * primes[i] <= n; i++) if (n % primes[i] === 0) { p = false; break; }
	if (p) primes.push(n);
}
function handler(req) {
	return { clone: forkvm.identity().clone_id, nth: primes[req.k - 1], lucky: Math.floor(Math.random() * 1e6) };
}
JS

if [ -n "${FORKVM_LANE:-}" ]; then
	echo "NOTE: in the KVM lane (nested SVM under QEMU TCG, an emulated CPU): the latency"
	echo "NOTE: figures below are not representative of hardware (a KVM exit costs ~57 us here)."
fi

step "forkd --api-socket $sock --store $store --run-dir $dir/run --platform $platform &"
"$bin/forkd" --api-socket "$sock" --store "$store" --run-dir "$dir/run" --platform "$platform" &
fpid=$!
i=0
until fctl ping >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 500 ] || { echo "forkd did not start" >&2; exit 1; }
	sleep 0.01
done
running_on=$(fctl ping | sed -n 's/.*"platform": *"\([a-z]*\)".*/\1/p')
echo "guests run on the ${running_on:-?} platform"

step "forkctl template add fn --boot vm.json --load handlers.js --pool 8   (boot once, warm up, snapshot into $store)"
t0=$(ms)
fctl template add fn --boot "$dir/vm.json" --load "$dir/handlers.js" --pool 8
echo "template ready in $(($(ms) - t0)) ms (boot, warm-up script, pause, snapshot, image materialized)"
fctl template ls

i=0
until fctl template ls | grep -q ' 8/8 '; do
	i=$((i + 1))
	[ $i -lt 1000 ] || break
	sleep 0.01
done
fctl template ls

step "forkctl fork fn   (x10, one at a time: each from the warm pool, refilled in the background)"
: > "$dir/single.txt"
for i in $(seq 1 10); do
	fctl fork fn >> "$dir/single.txt"
	sleep 0.05
done
echo "fork latency, request -> vCPUs in guest code (us):"
awk '{ print $4 + 0 }' "$dir/single.txt" | stats

step "forkctl fork fn -n $N"
t0=$(ms)
fctl fork fn -n $N > "$dir/clones.txt"
t1=$(ms)
echo "$N clones running in $((t1 - t0)) ms (those left in the warm pool first, the rest cold)"
head -3 "$dir/clones.txt"
echo "..."
echo "fork latency per clone of the batch, request -> its vCPUs in guest code (us):"
awk '{ print $4 + 0 }' "$dir/clones.txt" | stats

step "forkctl --agent=CLONE_SOCKET call handler '{\"k\": 10000}'   (in each of the $N clones)"
: > "$dir/calls.txt"
: > "$dir/answers.txt"
while read -r id pid sockpath us; do
	c0=$(date +%s%N)
	"$bin/forkctl" --agent="$sockpath" call handler '{"k": 10000}' >> "$dir/answers.txt"
	c1=$(date +%s%N)
	echo $(((c1 - c0) / 1000)) >> "$dir/calls.txt"
done < "$dir/clones.txt"
head -2 "$dir/answers.txt"
echo "distinct Math.random() values across the $N clones: $(grep -o '"lucky": *[0-9]*' "$dir/answers.txt" | sort -u | wc -l)"
echo "call round trip per clone, including forkctl's process start (us):"
stats < "$dir/calls.txt"

step "forkctl invoke fn handler '{\"k\": 5}'   (x20: take a pool clone, call, destroy)"
: > "$dir/inv.txt"
for i in $(seq 1 20); do
	c0=$(date +%s%N)
	fctl invoke fn handler '{"k": 5}' > "$dir/inv-last.txt"
	c1=$(date +%s%N)
	echo $(((c1 - c0) / 1000)) >> "$dir/inv.txt"
done
cat "$dir/inv-last.txt"
echo "invoke round trip, including forkctl's process start (us):"
stats < "$dir/inv.txt"

step "forkctl metrics | grep -E 'clones_live|memory|pool_ready'"
fctl metrics | grep -E '^forkd_(clones_live|clone_memory|pool_ready)'

step "kill forkd (SIGTERM: it kills and reaps its clones)"
kill "$fpid"
wait "$fpid" || true
fpid=""
left=$(pgrep -c forkd-clone || true)
echo "forkd exited; clone processes left: ${left:-0}"
echo
echo "Next, a Linux guest (make run-linux): Cloud Hypervisor's walkthrough with a real kernel and"
echo "disk, then forkd forking Linux clones whose agent runs inside the guest on vsock."
