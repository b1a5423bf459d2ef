#!/bin/busybox sh
# /init of the KVM lane's initramfs (built by scripts/lane.sh prepare).
# Loads kvm-amd with nested SVM, mounts the host's / (9p, read-only) under a
# tmpfs overlay, chroots into it and runs the job scripts/lane.sh wrote
# into the run directory (shared read-write as "laneout"), then powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "forkvm-lane: booted" > /dev/console
exec > /dev/console 2>&1

fail() {
	echo "forkvm-lane: $*"
	poweroff -f
}

out=""
rw=""
debug=""
for arg in $(cat /proc/cmdline); do
	case $arg in
	lane_out=*) out=${arg#lane_out=} ;;
	lane_rw=*) rw=${arg#lane_rw=} ;;
	lane_debug=1) debug=1 ;;
	esac
done
[ -n "$out" ] || fail "no lane_out= on the kernel command line"

while read -r m; do
	case $m in
	*/kvm-amd.ko) insmod "$m" nested=1 ;;
	*) insmod "$m" ;;
	esac || fail "insmod $m failed"
done < /modules
[ -c /dev/kvm ] || fail "no /dev/kvm after loading kvm-amd (is SVM emulated? QEMU needs -cpu max)"

mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro,cache=loose hostroot /lower ||
	fail "cannot mount the host's / (9p)"
mount -t tmpfs -o mode=755 upper /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot ||
	fail "cannot mount the overlay"
r=/newroot
mount -t proc proc $r/proc
mount -t sysfs sys $r/sys
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup || fail "cannot mount cgroup2"
mount -t devtmpfs dev $r/dev
mkdir -p $r/dev/shm $r/dev/pts
mount -t tmpfs -o mode=1777 shm $r/dev/shm
mount -t devpts -o ptmxmode=666 devpts $r/dev/pts
mount -t tmpfs -o mode=755 run $r/run
# /tmp stays the host's, under the overlay: the checkout may live there
mkdir -p "$r$out"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 laneout "$r$out" ||
	fail "cannot mount the run directory (9p)"
if [ -n "$rw" ]; then
	mkdir -p "$r$rw"
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 lanerw "$r$rw" ||
		fail "cannot mount $rw read-write (9p)"
fi
# Criterion and the tests want a hostname and a loopback interface
hostname lane
ip link set lo up 2>/dev/null

# a heartbeat for scripts/lane.sh, which kills a guest that stops writing it
(while :; do date +%s > "$r$out/heartbeat"; sleep 10; done) &
hb=$!
if [ -n "$debug" ]; then
	# FORKVM_LANE_DEBUG: a shell in the chroot on the second serial port
	(while :; do setsid chroot $r /bin/sh -i </dev/ttyS1 >/dev/ttyS1 2>&1; sleep 1; done) &
fi
echo "forkvm-lane: ready ($(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB, /dev/kvm with nested SVM)"
chroot $r /bin/sh "$out/job.sh"
rc=$?
kill $hb 2>/dev/null
echo "$rc" > "$r$out/rc.tmp" && mv "$r$out/rc.tmp" "$r$out/rc"
sync
[ -n "$rw" ] && umount "$r$rw"
umount "$r$out"
poweroff -f
