#!/bin/bash
# The KVM lane: a small Debian VM under QEMU TCG that emulates AMD SVM with
# nested paging, so /dev/kvm exists inside it on hosts that have none. The
# host's / is shared read-only (virtio-9p) under a tmpfs overlay and
# chrooted into: binaries built on the host run unchanged, at the same paths.
#
#   lane.sh prepare                build the lane's kernel and initramfs (cached)
#   lane.sh check                  exit 0 when the lane can run here, else say what is missing
#   lane.sh run [OPTIONS] -- CMD [ARG...]
#                                  boot the lane, run CMD in the host's current directory
#                                  with /dev/kvm, stream its output, exit with its status
#   options of run:
#     --timeout S       kill QEMU after S seconds in all (default 3600); exit 124
#     --boot-timeout S  a boot that shows no sign of life in S seconds is
#                       killed and retried once (default 240)
#     --stall S         a guest whose heartbeat (every 10 s) stops for S
#                       seconds is killed (default 300): QEMU TCG can freeze
#     --env NAME        pass the host's $NAME into the lane (repeatable);
#                       FORKVM_* variables always pass
#     --rw DIR          share the host's DIR read-write at the same path (what
#                       the command writes elsewhere stays in the lane's tmpfs)
#     --cpus N --mem SIZE   the lane VM's vCPUs (default 1) and memory (default 6G).
#                       One vCPU because QEMU 7.2's multi-threaded TCG with
#                       nested SVM livelocks with two: one vCPU thread loops
#                       delivering interrupts with the global lock held and
#                       the other starves (2 of 3 runs of test_forkbench froze
#                       or saw a guest triple fault; with one vCPU, 6 of 6 passed)
#
# FORKVM_LANE_APPEND: more words for the lane kernel's command line.
# FORKVM_LANE_DEBUG=1: a root shell inside the lane (in the chroot) on a
# second serial port, the Unix socket RUN_DIR/debug.sock (printed), e.g.
# python3 -c 'import socket,sys,os;...' or socat - UNIX-CONNECT:PATH.
#
# Everything it builds goes to build/lane/ (FORKVM_LANE_DIR); the Debian
# kernel package is kept in FORKVM_LANE_CACHE (default /var/cache/forkvm-lane,
# outside the checkout, so a clean clone on the same machine reuses it).
# Missing Debian packages (qemu-system-x86, busybox-static, kmod, cpio) are
# installed with apt-get as scripts/deps.sh does. Exit status: CMD's status;
# 124 on timeout; 125 when the lane itself failed (boot, image, QEMU).
set -u
set -o pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
lane_dir=${FORKVM_LANE_DIR:-$top/build/lane}
cache=${FORKVM_LANE_CACHE:-/var/cache/forkvm-lane}
qemu=${FORKVM_LANE_QEMU:-qemu-system-x86_64}
kpkg=${FORKVM_LANE_KERNEL_PKG:-}
MODULES="kvm-amd 9pnet_virtio virtio_pci 9p overlay"
BOOT_MARK="forkvm-lane: booted"

die() {
	echo "lane: $*" >&2
	exit 125
}
log() { echo "lane: $*" >&2; }

# ---------------------------------------------------------------- packages
need_pkgs() {
	local missing="" entry pkg file
	for entry in qemu-system-x86:/usr/bin/qemu-system-x86_64 busybox-static:/bin/busybox \
		kmod:/usr/sbin/depmod cpio:/usr/bin/cpio; do
		pkg=${entry%%:*}
		file=${entry#*:}
		[ -e "$file" ] || missing="$missing $pkg"
	done
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		die "missing Debian packages:$missing (run as root, or: sudo apt-get install -y$missing)"
	fi
	log "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get install -y --no-install-recommends $missing >/dev/null; } ||
		die "apt-get could not install:$missing"
}

# The Debian kernel package: linux-image-amd64's dependency, e.g. linux-image-6.1.0-57-amd64.
kernel_pkg() {
	if [ -n "$kpkg" ]; then
		echo "$kpkg"
		return
	fi
	apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# ---------------------------------------------------------------- image
# build/lane/image/{vmlinuz,initrd.img,KVER} from the package's .deb.
prepare() {
	need_pkgs
	local pkg deb img tmp kver m
	pkg=$(kernel_pkg)
	[ -n "$pkg" ] || die "cannot find the Debian kernel package (apt-cache depends linux-image-amd64 printed none; run apt-get update?)"
	img=$lane_dir/image
	image_ok() {
		[ -f "$img/PKG" ] && [ "$(cat "$img/PKG")" = "$pkg" ] && [ -f "$img/vmlinuz" ] &&
			[ -f "$img/initrd.img" ] && [ "$img/initrd.img" -nt "$0" ] &&
			[ "$img/initrd.img" -nt "$top/scripts/lane-init.sh" ]
	}
	image_ok && return 0
	# one builder at a time (lanes started together share build/lane)
	mkdir -p "$lane_dir" || die "cannot create $lane_dir"
	exec 9>"$lane_dir/.prepare.lock"
	flock 9 || die "cannot lock $lane_dir/.prepare.lock"
	if image_ok; then
		exec 9>&-
		return 0
	fi
	mkdir -p "$cache" 2>/dev/null || cache=$lane_dir/cache
	mkdir -p "$cache" "$lane_dir" || die "cannot create $cache"
	deb=$(ls "$cache/${pkg}"_*.deb 2>/dev/null | head -n 1)
	if [ -z "$deb" ]; then
		log "downloading $pkg into $cache"
		(cd "$cache" && apt-get download "$pkg" >/dev/null 2>&1) ||
			{ apt-get update -qq >/dev/null 2>&1 && (cd "$cache" && apt-get download "$pkg" >/dev/null 2>&1); } ||
			die "apt-get download $pkg failed"
		deb=$(ls "$cache/${pkg}"_*.deb 2>/dev/null | head -n 1)
		[ -n "$deb" ] || die "apt-get download $pkg left no .deb in $cache"
	fi
	log "building the lane image from $(basename "$deb")"
	tmp=$(mktemp -d "$lane_dir/prep.XXXXXX") || die "mktemp failed"
	dpkg -x "$deb" "$tmp/k" || die "dpkg -x $deb failed"
	kver=$(ls "$tmp/k/lib/modules" | head -n 1)
	[ -n "$kver" ] || die "$deb holds no modules"
	depmod -b "$tmp/k" "$kver" || die "depmod failed"
	mkdir -p "$tmp/i/bin" "$tmp/i/lib/modules" "$tmp/i/proc" "$tmp/i/sys" "$tmp/i/dev" \
		"$tmp/i/lower" "$tmp/i/upper" "$tmp/i/newroot"
	cp /bin/busybox "$tmp/i/bin/busybox"
	: > "$tmp/i/modules"
	for m in $MODULES; do
		modprobe -d "$tmp/k" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
	done | awk '!seen[$0]++' | while read -r path; do
		cp "$path" "$tmp/i/lib/modules/" || exit 1
		echo "/lib/modules/$(basename "$path")" >> "$tmp/i/modules"
	done || die "copying modules failed"
	cp "$top/scripts/lane-init.sh" "$tmp/i/init"
	chmod 755 "$tmp/i/init" "$tmp/i/bin/busybox"
	(cd "$tmp/i" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp/initrd.img" ||
		die "cpio failed"
	rm -rf "$img.new"
	mkdir -p "$img.new"
	cp "$tmp/k/boot/vmlinuz-$kver" "$img.new/vmlinuz"
	mv "$tmp/initrd.img" "$img.new/initrd.img"
	echo "$kver" > "$img.new/KVER"
	echo "$pkg" > "$img.new/PKG"
	rm -rf "$img" "$tmp"
	mv "$img.new" "$img"
	exec 9>&-
}

check() {
	command -v "$qemu" >/dev/null 2>&1 || { echo "lane: $qemu is missing (Debian package qemu-system-x86)" >&2; return 1; }
	[ -f "$lane_dir/image/vmlinuz" ] || { echo "lane: no kernel at $lane_dir/image/vmlinuz (run: scripts/lane.sh prepare)" >&2; return 1; }
	[ -f "$lane_dir/image/initrd.img" ] || { echo "lane: no initramfs at $lane_dir/image/initrd.img (run: scripts/lane.sh prepare)" >&2; return 1; }
	return 0
}

# ---------------------------------------------------------------- run
qpid=""
kill_qemu() {
	if [ -n "$qpid" ]; then
		kill -9 "$qpid" 2>/dev/null
		wait "$qpid" 2>/dev/null
		qpid=""
	fi
}

# One boot: returns the job's status, 124 on timeout, 126 when the guest
# showed no sign of life within the boot timeout (retried by the caller),
# 125 when it stopped or froze; lane_failed=1 when the lane, not the
# command, failed.
boot_once() {
	local run=$1 start now rc tpid hb
	: > "$run/console"
	rm -f "$run/rc" "$run/heartbeat"
	lane_failed=1
	"$qemu" -accel "tcg${FORKVM_LANE_TCG_THREAD:+,thread=$FORKVM_LANE_TCG_THREAD}" -cpu max -smp "$cpus" -m "$mem" -nographic -no-reboot -nodefaults \
		-serial "file:$run/console" ${FORKVM_LANE_DEBUG:+-serial unix:$run/debug.sock,server=on,wait=off} \
		-monitor none \
		-kernel "$lane_dir/image/vmlinuz" -initrd "$lane_dir/image/initrd.img" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
		-virtfs "local,path=$run,mount_tag=laneout,security_model=none" \
		${rw:+-virtfs "local,path=$rw,mount_tag=lanerw,security_model=none"} \
		-append "console=ttyS0 quiet loglevel=3 panic=-1 ${FORKVM_LANE_APPEND:+$FORKVM_LANE_APPEND }lane_out=$run${rw:+ lane_rw=$rw}${FORKVM_LANE_DEBUG:+ lane_debug=1}" \
		</dev/null >"$run/qemu.log" 2>&1 &
	qpid=$!
	# the console is the job's output: from the init's first line on,
	# without the tty's \r and the kernel's last words
	tail -n +1 -f --pid="$qpid" "$run/console" 2>/dev/null |
		sed -u -e 's/\r$//' -e "0,/$BOOT_MARK/d" -e '/^\[ *[0-9.]*\] reboot: Power down$/d' &
	tpid=$!
	[ -n "${FORKVM_LANE_DEBUG:-}" ] && log "debug shell: $run/debug.sock"
	start=$(date +%s)
	while kill -0 "$qpid" 2>/dev/null; do
		now=$(date +%s)
		if [ $((now - start)) -ge "$boot_timeout" ] && ! grep -q "$BOOT_MARK" "$run/console"; then
			kill_qemu
			wait "$tpid" 2>/dev/null
			return 126
		fi
		if [ $((now - t0)) -ge "$timeout" ]; then
			kill_qemu
			wait "$tpid" 2>/dev/null
			log "timed out after ${timeout} s: QEMU killed"
			return 124
		fi
		if [ -f "$run/heartbeat" ]; then
			hb=$(stat -c %Y "$run/heartbeat" 2>/dev/null || echo "$now")
			if [ $((now - hb)) -ge "$stall" ]; then
				kill_qemu
				wait "$tpid" 2>/dev/null
				log "the lane's guest stopped responding (no heartbeat for $((now - hb)) s): QEMU killed"
				return 125
			fi
		fi
		sleep 1
	done
	wait "$qpid"
	rc=$?
	qpid=""
	wait "$tpid" 2>/dev/null
	if [ -f "$run/rc" ]; then
		lane_failed=0
		return "$(cat "$run/rc")"
	fi
	if ! grep -q "$BOOT_MARK" "$run/console"; then
		log "the lane's guest showed no sign of life (QEMU exit $rc)"
		[ -s "$run/qemu.log" ] && sed 's/^/lane: qemu: /' "$run/qemu.log" >&2
		return 126
	fi
	log "the lane's guest stopped before the command finished (QEMU exit $rc); see its console above"
	return 125
}

run_cmd() {
	local envs="" arg run q n
	rw=""
	timeout=3600
	boot_timeout=240
	stall=300
	cpus=${FORKVM_LANE_CPUS:-1}
	mem=6G
	while [ $# -gt 0 ]; do
		case $1 in
		--timeout) timeout=$2; shift 2 ;;
		--boot-timeout) boot_timeout=$2; shift 2 ;;
		--stall) stall=$2; shift 2 ;;
		--env) envs="$envs $2"; shift 2 ;;
		--cpus) cpus=$2; shift 2 ;;
		--mem) mem=$2; shift 2 ;;
		--rw)
			case $2 in *[!A-Za-z0-9_./+-]*) die "--rw $2: only letters, digits and _./+- in the path" ;; esac
			mkdir -p "$2" || die "cannot create $2"
			rw=$(cd "$2" && pwd)
			shift 2
			;;
		--) shift; break ;;
		*) die "run: unknown option $1 (see the top of $0)" ;;
		esac
	done
	[ $# -gt 0 ] || die "run: no command (lane.sh run [OPTIONS] -- CMD [ARG...])"
	prepare
	check || exit 125
	mkdir -p "$lane_dir/runs"
	# the run directories of failed runs are kept for a while, not forever
	find "$lane_dir/runs" -mindepth 1 -maxdepth 1 -name 'run.*' -mmin +240 -exec rm -rf {} + 2>/dev/null
	run=$(mktemp -d "$lane_dir/runs/run.XXXXXX") || die "mktemp failed"
	# The job: environment, directory and command, run by the lane's init.
	{
		echo "# written by scripts/lane.sh"
		for n in $(env | sed -n 's/^\(FORKVM_[A-Za-z0-9_]*\)=.*/\1/p') $envs; do
			if [ -n "${!n+x}" ]; then
				printf 'export %s=%q\n' "$n" "${!n}"
			fi
		done
		echo "export FORKVM_LANE=1"
		printf 'cd %q || exit 125\n' "$PWD"
		q=""
		for arg in "$@"; do
			q="$q $(printf '%q' "$arg")"
		done
		echo "exec$q"
	} > "$run/job.sh"
	t0=$(date +%s)
	trap 'kill_qemu; exit 130' INT TERM
	boot_once "$run"
	rc=$?
	if [ $rc -eq 126 ]; then
		log "the lane's guest showed no sign of life in ${boot_timeout} s: retrying once"
		boot_once "$run"
		rc=$?
		if [ $rc -eq 126 ]; then
			log "the lane's guest hung twice without output; giving up"
			rc=125
		fi
	fi
	if [ "$lane_failed" = 1 ] || [ -n "${FORKVM_LANE_KEEP:-}" ]; then
		log "kept $run (console, qemu.log)"
	else
		rm -rf "$run"
	fi
	return $rc
}

case ${1:-} in
prepare) prepare; check && echo "$lane_dir/image" ;;
check) check ;;
run) shift; run_cmd "$@"; exit $? ;;
*)
	sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
