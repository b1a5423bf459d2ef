#!/bin/sh
# make run-linux: Cloud Hypervisor's snapshot/restore walkthrough with a
# Linux guest, as its users type it, on Debian's stock kernel and the test
# guest's root disk (scripts/linux-guest.sh):
#   forkvm --kernel vmlinux --initramfs ... --disk path=rootfs.raw \
#          --cmdline "root=/dev/vda1 console=hvc0 rw ..."
#   forkctl pause; forkctl snapshot file:///DIR
#   forkvm --restore source_url=file:///DIR (twice: two clones); forkctl resume
# and shows what each clone does: it goes on from the snapshot, with its
# own random stream (a new VM generation ID) and its own copy-on-write disk.
# Then forkd with a Linux template: the agent inside the guest on vsock,
# four clones forked from the store, a handler called in each (its own
# clone id and kernel random bytes), and an invoke.
#
# Linux guests need hardware virtualization. With a /dev/kvm that is not
# PVM's this runs here; otherwise inside the KVM lane (scripts/lane.sh:
# nested SVM under QEMU TCG, much slower, and its times are not
# representative of hardware).
# Usage: run-linux.sh BUILD_DIR [--here]
set -eu
build=$(cd "$1" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
here=${2:-}

if [ "$here" != --here ]; then
	if [ -c /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ] && [ -r /dev/kvm ]; then
		exec sh "$0" "$build" --here
	fi
	echo "run-linux: no /dev/kvm that runs Linux guests here (none, or PVM's): running in the KVM lane"
	echo "run-linux: (nested SVM under QEMU TCG: slow, and its times are not representative of hardware)"
	exec bash "$top/scripts/lane.sh" run -- sh "$top/scripts/run-linux.sh" "$build" --here
fi

bin=$build/bin
lx=$build/linux
dir=$(mktemp -d /tmp/forkvm-run-linux-XXXXXX)
pid=""
fpid=""
cleanup() {
	[ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
	[ -n "$fpid" ] && { kill "$fpid" 2>/dev/null || true; wait "$fpid" 2>/dev/null || true; }
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
# waits (up to $2 s) for text $1 in file $3
wait_for() {
	i=0
	while ! grep -q "$1" "$3" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt $(($2 * 10)) ] && { echo "run-linux: no \"$1\" after $2 s; console:"; tail -20 "$3"; exit 1; }
		sleep 0.1
	done
}
ctl() { "$bin/forkctl" --api-socket="$dir/api.sock" "$@"; }

for f in vmlinux vmlinuz initramfs.cpio.gz rootfs.raw; do
	[ -f "$lx/$f" ] || { echo "run-linux: $lx/$f is missing (make linux-guest)"; exit 1; }
done
cp --sparse=always "$lx/rootfs.raw" "$dir/rootfs.raw"

step "forkvm --kernel vmlinux --disk path=rootfs.raw --cmdline \"root=/dev/vda1 console=hvc0 rw ...\" --cpus boot=2"
t0=$(date +%s%N)
"$bin/forkvm" --api-socket "$dir/api.sock" --kernel "$lx/vmlinux" --initramfs "$lx/initramfs.cpio.gz" \
	--disk "path=$dir/rootfs.raw" --cpus boot=2 --memory size=512M \
	--cmdline "root=/dev/vda1 console=hvc0 rw panic=-1 forkvm.test=vmgenid forkvm.diskloop=1" \
	--serial "file=$dir/template.log" &
pid=$!
wait_for "forkvm-linux: disk saw token-" 300 "$dir/template.log"
echo "booted to userspace in $((($(date +%s%N) - t0) / 1000000)) ms:"
grep -E "rootfs up|vmgenid|disk saw" "$dir/template.log" | head -4

step "forkctl pause; forkctl snapshot file://$dir/snap"
ctl pause
t0=$(date +%s%N)
ctl snapshot "file://$dir/snap"
echo "snapshot in $((($(date +%s%N) - t0) / 1000000)) ms: $(du -sh "$dir/snap" | cut -f1) on disk ($(ls "$dir/snap" | tr '\n' ' '))"
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=""

for clone in a b; do
	step "forkvm --restore source_url=file://$dir/snap; forkctl resume   (clone $clone)"
	rm -f "$dir/api.sock"
	t0=$(date +%s%N)
	"$bin/forkvm" --api-socket "$dir/api.sock" --restore "source_url=file://$dir/snap" \
		--serial "file=$dir/clone-$clone.log" &
	pid=$!
	i=0
	until ctl info >/dev/null 2>&1; do i=$((i + 1)); [ $i -gt 600 ] && exit 1; sleep 0.1; done
	ctl resume
	wait_for "forkvm-linux: urandom" 60 "$dir/clone-$clone.log"
	echo "restored and answering in $((($(date +%s%N) - t0) / 1000000)) ms"
	sleep 1
	echo "its first lines (the disk as the snapshot held it, then its own random tokens):"
	grep -E "urandom|disk saw" "$dir/clone-$clone.log" | head -4 | sed 's/^/  /'
	grep -q "Linux version" "$dir/clone-$clone.log" && { echo "run-linux: clone $clone booted again"; exit 1; }
	ctl shutdown-vmm >/dev/null 2>&1 || kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=""
done

# forkd with a Linux template: the agent runs inside the guest (init's
# forkvm.test=agent), on vsock; clones forked from the store's snapshot
step "forkd --api-socket $dir/forkd.sock --store $dir/store --platform kvm &"
"$bin/forkd" --api-socket "$dir/forkd.sock" --store "$dir/store" --run-dir "$dir/run" --platform kvm &
fpid=$!
fctl() { "$bin/forkctl" --forkd="$dir/forkd.sock" "$@"; }
i=0
until fctl ping >/dev/null 2>&1; do i=$((i + 1)); [ $i -gt 1000 ] && exit 1; sleep 0.01; done
cat > "$dir/lx.json" <<JSON
{"cpus": {"boot_vcpus": 1}, "memory": {"size": 536870912}, "vsock": {"cid": 3},
 "payload": {"kernel": "$lx/vmlinuz", "initramfs": "$lx/initramfs.cpio.gz",
             "cmdline": "console=ttyS0 panic=-1 quiet forkvm.test=agent"}}
JSON
cat > "$dir/lx.js" <<'JS'
var warm = []; for (var i = 0; i < 50000; i++) warm.push(i * i);
function handler(req) {
	return { clone: forkvm.identity().clone_id, generation: forkvm.identity().generation,
		 kernel_random: forkvm.randomHex(8), sq: warm[req.k] };
}
JS
step "forkctl template add lx --boot lx.json --load lx.js --pool 2   (Linux boots once, agent on vsock, snapshot into the store)"
t0=$(date +%s%N)
fctl template add lx --boot "$dir/lx.json" --load "$dir/lx.js" --pool 2
echo "Linux template ready in $((($(date +%s%N) - t0) / 1000000)) ms"
step "forkctl fork lx -n 4; forkctl --agent=CLONE call handler '{\"k\": 7}'   (in each clone)"
fctl fork lx -n 4 > "$dir/lx-clones.txt"
: > "$dir/lx-answers.txt"
while read -r id cpid sockpath us; do
	"$bin/forkctl" --agent="$sockpath" call handler '{"k": 7}' | tee -a "$dir/lx-answers.txt"
done < "$dir/lx-clones.txt"
n=$(grep -o '"kernel_random": *"[0-9a-f]*"' "$dir/lx-answers.txt" | sort -u | wc -l)
ids=$(grep -o '"clone": *"[0-9a-f]*"' "$dir/lx-answers.txt" | sort -u | wc -l)
echo "distinct kernel random draws across the 4 Linux clones: $n; distinct clone ids: $ids"
[ "$n" = 4 ] && [ "$ids" = 4 ] || { echo "run-linux: the Linux clones do not differ as they should"; exit 1; }
step "forkctl invoke lx handler '{\"k\": 9}'"
fctl invoke lx handler '{"k": 9}'
kill "$fpid"
wait "$fpid" 2>/dev/null || true
fpid=""

a=$(grep -m2 "urandom" "$dir/clone-a.log" | tail -1)
b=$(grep -m2 "urandom" "$dir/clone-b.log" | tail -1)
sa=$(grep -m1 "disk saw" "$dir/clone-a.log")
sb=$(grep -m1 "disk saw" "$dir/clone-b.log")
echo
if [ "$a" != "$b" ] && [ "$sa" = "$sb" ]; then
	echo "The two clones of one snapshot drew different random bytes (a new VM generation ID each) and"
	echo "each first saw the disk as the snapshot held it (copy-on-write disks): the walkthrough works."
else
	echo "run-linux: the clones do not differ as they should (random: '$a' / '$b'; disk: '$sa' / '$sb')"
	exit 1
fi
