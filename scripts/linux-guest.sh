#!/bin/sh
# scripts/linux-guest.sh OUT_DIR [AGENT]: forkvm's Linux test guest, from
# Debian packages and forkvm's agent (AGENT, default build/guest/agent: the
# Makefile's $(AGENT), which `make linux-guest` builds first) only
# (docs/linux-guests.md):
#   OUT_DIR/vmlinuz          Debian's stock kernel (linux-image-amd64's
#                            bzImage, the one the KVM lane boots: scripts/lane.sh
#                            prepare downloads it once into /var/cache/forkvm-lane)
#   OUT_DIR/vmlinux          the same kernel uncompressed (an ELF: what
#                            `--kernel vmlinux` boots), cut out of the
#                            bzImage at its header's payload_offset and
#                            decompressed (xz, zstd or gzip, by its magic)
#   OUT_DIR/initramfs.cpio.gz  busybox-static, guest/linux/init as /init,
#                            AGENT stripped as /bin/forkvm-agent (init's
#                            forkvm.test=agent), and the kernel's modules for
#                            the virtio-mmio devices, the vsock transport
#                            and ext4 with their dependencies (from
#                            the same kernel package's .deb, the one lane.sh
#                            keeps in its cache; depmod and modprobe
#                            --show-depends order them) in /lib/modules, listed
#                            in load order in /lib/modules/load-order
#   OUT_DIR/rootfs.raw       a 32 MiB raw disk: an MBR with partition 1 from
#                            1 MiB to the end, an ext4 holding busybox-static,
#                            guest/linux/init as /sbin/init and
#                            /etc/forkvm-rootfs ("forkvm-rootfs 1"); made with
#                            sfdisk and mkfs.ext4 -d -E offset=, without loop
#                            devices or mounts
# Cached: each is rebuilt only when an input changed (this script, the
# init, busybox, the kernel, the agent for the initramfs), written to a
# temporary name and renamed. The
# initramfs and the disk are deterministic (fixed times, owners, UUIDs).
# Exit status non-zero, with what is missing, when the packages cannot be
# had.
set -eu
out=$1
top=$(cd "$(dirname "$0")/.." && pwd)
self=$top/scripts/linux-guest.sh
init=$top/guest/linux/init
agent=${2:-$top/build/guest/agent}
lane_dir=${FORKVM_LANE_DIR:-$top/build/lane}
lane_image=$lane_dir/image
# where lane.sh keeps the kernel's .deb (its FORKVM_LANE_CACHE, or
# build/lane/cache when that cannot be made)
cache=${FORKVM_LANE_CACHE:-/var/cache/forkvm-lane}
# the initramfs's modules (modprobe names); their dependencies come along
MODULES="virtio_mmio virtio_blk virtio_console virtio_rng vmw_vsock_virtio_transport ext4"
mkdir -p "$out"
die() {
	echo "linux-guest: $*" >&2
	exit 1
}
[ -x "$agent" ] || die "the agent $agent is missing (make guest)"

if [ ! -f "$lane_image/vmlinuz" ]; then
	bash "$top/scripts/lane.sh" prepare >&2 ||
		{ echo "linux-guest: cannot get Debian's kernel (scripts/lane.sh prepare failed)" >&2; exit 1; }
fi
if [ ! -f "$out/vmlinuz" ] || ! cmp -s "$lane_image/vmlinuz" "$out/vmlinuz"; then
	cp "$lane_image/vmlinuz" "$out/vmlinuz.tmp"
	mv "$out/vmlinuz.tmp" "$out/vmlinuz"
fi

for entry in busybox-static:/bin/busybox cpio:/usr/bin/cpio xz-utils:/usr/bin/xz zstd:/usr/bin/zstd \
	kmod:/usr/sbin/depmod fdisk:/usr/sbin/sfdisk e2fsprogs:/usr/sbin/mke2fs; do
	pkg=${entry%%:*} file=${entry#*:}
	if [ ! -x "$file" ]; then
		[ "$(id -u)" = 0 ] || { echo "linux-guest: $pkg is missing (apt-get install $pkg as root)" >&2; exit 1; }
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1; } ||
			{ echo "linux-guest: cannot install $pkg" >&2; exit 1; }
	fi
done

# vmlinux: the bzImage's payload (boot protocol 2.08+: payload_offset at
# 0x248 and payload_length at 0x24c, from the protected-mode kernel's start
# after (setup_sects + 1) sectors), decompressed
if [ ! -f "$out/vmlinux" ] || [ "$out/vmlinuz" -nt "$out/vmlinux" ]; then
	u8() { od -An -tu1 -j "$1" -N1 "$out/vmlinuz" | tr -d ' '; }
	u32() { od -An -tu4 -j "$1" -N4 "$out/vmlinuz" | tr -d ' '; }
	sects=$(u8 497)
	[ "$sects" = 0 ] && sects=4
	start=$(( (sects + 1) * 512 + $(u32 584) ))
	tail -c +"$((start + 1))" "$out/vmlinuz" | head -c "$(u32 588)" > "$out/vmlinux.payload"
	case $(od -An -tx1 -N4 "$out/vmlinux.payload" | tr -d ' ') in
	fd377a58) dec="xz -dc --single-stream" ;;
	28b52ffd) dec="zstd -dcq" ;;
	1f8b*) dec="gzip -dc" ;;
	*) echo "linux-guest: $out/vmlinuz: its payload is compressed in a way this script does not know" >&2; exit 1 ;;
	esac
	$dec < "$out/vmlinux.payload" > "$out/vmlinux.tmp" 2>/dev/null ||
		{ rm -f "$out/vmlinux.payload" "$out/vmlinux.tmp"; echo "linux-guest: cannot decompress the kernel in $out/vmlinuz" >&2; exit 1; }
	rm -f "$out/vmlinux.payload"
	[ "$(od -An -c -j1 -N3 "$out/vmlinux.tmp" | tr -d ' ')" = ELF ] ||
		{ rm -f "$out/vmlinux.tmp"; echo "linux-guest: the kernel in $out/vmlinuz holds no ELF" >&2; exit 1; }
	mv "$out/vmlinux.tmp" "$out/vmlinux"
fi

# fresh TARGET INPUT...: TARGET exists and is newer than each INPUT
fresh() {
	t=$1
	shift
	[ -f "$t" ] || return 1
	for f; do
		[ "$t" -nt "$f" ] || return 1
	done
}
img=$out/initramfs.cpio.gz
disk=$out/rootfs.raw
fresh "$img" "$self" "$init" /bin/busybox "$out/vmlinuz" "$agent" &&
	fresh "$disk" "$self" "$init" /bin/busybox && exit 0

tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
# fixed times and owners, sorted names: the same inputs give the same bytes
# (mke2fs: E2FSPROGS_FAKE_TIME before e2fsprogs 1.47.1, which reads
# SOURCE_DATE_EPOCH; 0 would mean "now")
export E2FSPROGS_FAKE_TIME=1 SOURCE_DATE_EPOCH=1
stamp() { find "$1" -exec touch -h -d @1 {} +; }

if ! fresh "$img" "$self" "$init" /bin/busybox "$out/vmlinuz" "$agent"; then
	# the kernel's .deb, as lane.sh prepare finds or downloads it
	[ -f "$lane_image/PKG" ] || die "$lane_image/PKG is missing: run scripts/lane.sh prepare"
	pkg=$(cat "$lane_image/PKG")
	deb=$(ls "$cache/${pkg}"_*.deb "$lane_dir/cache/${pkg}"_*.deb 2>/dev/null | head -n 1) || :
	if [ -z "$deb" ]; then
		mkdir -p "$cache" 2>/dev/null || cache=$lane_dir/cache
		mkdir -p "$cache" || die "cannot create $cache"
		echo "linux-guest: downloading $pkg into $cache" >&2
		(cd "$cache" && apt-get download "$pkg" >/dev/null 2>&1) ||
			{ apt-get update -qq >/dev/null 2>&1 && (cd "$cache" && apt-get download "$pkg" >/dev/null 2>&1); } ||
			die "apt-get download $pkg failed"
		deb=$(ls "$cache/${pkg}"_*.deb 2>/dev/null | head -n 1) || :
		[ -n "$deb" ] || die "apt-get download $pkg left no .deb in $cache"
	fi
	dpkg -x "$deb" "$tmp/k" || die "dpkg -x $deb failed"
	kver=$(ls "$tmp/k/lib/modules" | head -n 1)
	[ -n "$kver" ] || die "$deb holds no modules"
	cmp -s "$tmp/k/boot/vmlinuz-$kver" "$out/vmlinuz" ||
		die "$deb's kernel is not $out/vmlinuz: its modules would not load (run scripts/lane.sh prepare)"
	depmod -b "$tmp/k" "$kver" || die "depmod failed on $deb's modules"
	# each module after those it needs (modprobe's order), each once
	: > "$tmp/paths"
	for m in $MODULES; do
		modprobe -d "$tmp/k" -S "$kver" --show-depends "$m" > "$tmp/deps" 2>&1 ||
			die "$pkg has no module $m: $(cat "$tmp/deps")"
		awk '$1 == "insmod" { print $2 }' "$tmp/deps" >> "$tmp/paths"
	done
	awk '!seen[$0]++' "$tmp/paths" > "$tmp/order"
	mkdir -p "$tmp/root/bin" "$tmp/root/lib/modules"
	while read -r path; do
		cp "$path" "$tmp/root/lib/modules/"
		basename "$path"
	done < "$tmp/order" > "$tmp/root/lib/modules/load-order"
	rm -rf "$tmp/k"
	cp /bin/busybox "$tmp/root/bin/busybox"
	cp "$init" "$tmp/root/init"
	# without its debug sections (a sixth of the size, and no build paths)
	strip -o "$tmp/root/bin/forkvm-agent" "$agent" || die "strip $agent failed"
	chmod 755 "$tmp/root/init" "$tmp/root/bin/busybox" "$tmp/root/bin/forkvm-agent"
	chmod 644 "$tmp/root/lib/modules/"*
	find "$tmp/root" -type d -exec chmod 755 {} +
	stamp "$tmp/root"
	(cd "$tmp/root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n > "$tmp/img"
	mv "$tmp/img" "$img"
fi

if ! fresh "$disk" "$self" "$init" /bin/busybox; then
	fs=$tmp/fs
	mkdir -p "$fs/bin" "$fs/sbin" "$fs/etc" "$fs/proc" "$fs/sys" "$fs/dev" "$fs/tmp"
	cp /bin/busybox "$fs/bin/busybox"
	cp "$init" "$fs/sbin/init"
	echo "forkvm-rootfs 1" > "$fs/etc/forkvm-rootfs"
	chmod 755 "$fs/bin/busybox" "$fs/sbin/init"
	chmod 644 "$fs/etc/forkvm-rootfs"
	find "$fs" -type d -exec chmod 755 {} +
	chmod 1777 "$fs/tmp"
	stamp "$fs"
	# 32 MiB: sectors [0, 2048) the MBR and a gap, partition 1 (Linux)
	# from sector 2048 (1 MiB) to the end, an ext4 of 31 MiB
	truncate -s 32M "$tmp/disk"
	printf 'label: dos\nlabel-id: 0x666f726b\nstart=2048, size=63488, type=83\n' |
		sfdisk -q "$tmp/disk" >/dev/null || die "sfdisk failed"
	mke2fs -q -F -t ext4 -L forkvm-root -U 666f726b-766d-4c69-6e75-78726f6f7466 \
		-E offset=1048576,hash_seed=666f726b-766d-4c69-6e75-78726f6f7466,root_owner=0:0 \
		-d "$fs" "$tmp/disk" 31744k || die "mke2fs failed"
	# mke2fs before 1.47.1 gives what -d copies a ctime of now
	{
		echo "sif / ctime 1"
		echo "sif /lost+found ctime 1"
		(cd "$fs" && find . -mindepth 1 | LC_ALL=C sort | sed 's,^\.\(.*\)$,sif \1 ctime 1,')
	} > "$tmp/ctimes"
	debugfs -w -f "$tmp/ctimes" "$tmp/disk?offset=1048576" >/dev/null 2>&1 || die "debugfs failed"
	mv "$tmp/disk" "$disk"
fi
