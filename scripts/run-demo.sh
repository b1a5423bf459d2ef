#!/bin/sh
# make run: boots the default guest (the JavaScript agent) in forkvm, talks to
# it through forkctl, pauses and resumes it, and shuts it down.
# Usage: run-demo.sh BUILD_DIR AGENT
set -eu
build=$1
agent=$2
bin=$build/bin
dir=$(mktemp -d /tmp/forkvm-run-XXXXXX)
api=$dir/api.sock
sock=$dir/agent.sock
log=$dir/console.log
pid=""

cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

if [ ! -c /dev/kvm ]; then
	echo "make run: /dev/kvm is missing: forkvm needs KVM" >&2
	exit 1
fi

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
ms() { date +%s%N | cut -c1-13; }

step "forkvm --api-socket $api --cpus boot=2 --memory size=512M --kernel $agent --agent socket=$sock --serial file=$log"
t0=$(ms)
"$bin/forkvm" --api-socket "$api" --cpus boot=2 --memory size=512M --kernel "$agent" \
	--agent "socket=$sock" --serial "file=$log" &
pid=$!
"$bin/forkctl" --agent="$sock" wait-ready >/dev/null
t1=$(ms)
echo "agent ready $((t1 - t0)) ms after start (including process start-up)"

step "forkctl --agent=$sock eval '[1, 2, 3].map(function (x) { return x * x; })'"
"$bin/forkctl" --agent="$sock" eval '[1, 2, 3].map(function (x) { return x * x; })'

step "forkctl --agent=$sock load handlers.js   (a template's warm-up)"
cat > "$dir/handlers.js" <<'JS'
var primes = [];
for (var n = 2; primes.length < 10000; n++) {
	var p = true;
	for (var i = 0; primes[i] * primes[i] <= n; i++) if (n % primes[i] === 0) { p = false; break; }
	if (p) primes.push(n);
}
function nthPrime(k) { return primes[k - 1]; }
function greet(who) { print('greeting ' + who); return { hello: who, primes: primes.length }; }
JS
"$bin/forkctl" --agent="$sock" load "$dir/handlers.js"

step "forkctl --agent=$sock call nthPrime '[10000]'"
"$bin/forkctl" --agent="$sock" call nthPrime '[10000]'
step "forkctl --agent=$sock call greet '\"world\"'"
"$bin/forkctl" --agent="$sock" call greet '"world"'

step "forkctl --api-socket=$api pause ; info ; resume"
"$bin/forkctl" --api-socket="$api" pause
"$bin/forkctl" --api-socket="$api" info | grep '"state"'
"$bin/forkctl" --api-socket="$api" resume
"$bin/forkctl" --api-socket="$api" info | grep '"state"'

step "forkctl --agent=$sock info"
"$bin/forkctl" --agent="$sock" info

step "forkctl --api-socket=$api counters"
"$bin/forkctl" --api-socket="$api" counters

step "guest console ($log)"
cat "$log"

step "forkctl --api-socket=$api shutdown-vmm"
"$bin/forkctl" --api-socket="$api" shutdown-vmm
wait "$pid" && pid=""
echo "forkvm exited cleanly"
