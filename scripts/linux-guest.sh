#!/bin/sh
# scripts/linux-guest.sh OUT_DIR: forkvm's Linux test guest, from Debian
# packages only (docs/linux-guests.md):
#   OUT_DIR/vmlinuz          Debian's stock kernel (linux-image-amd64's
#                            bzImage, the one the KVM lane boots: scripts/lane.sh
#                            prepare downloads it once into /var/cache/forkvm-lane)
#   OUT_DIR/vmlinux          the same kernel uncompressed (an ELF: what
#                            `--kernel vmlinux` boots), cut out of the
#                            bzImage at its header's payload_offset and
#                            decompressed (xz, zstd or gzip, by its magic)
#   OUT_DIR/initramfs.cpio.gz  busybox-static and guest/linux/init
# Cached: rebuilt only when an input changed. Exit status non-zero, with
# what is missing, when the packages cannot be had.
set -eu
out=$1
top=$(cd "$(dirname "$0")/.." && pwd)
lane_image=${FORKVM_LANE_DIR:-$top/build/lane}/image
mkdir -p "$out"

if [ ! -f "$lane_image/vmlinuz" ]; then
	bash "$top/scripts/lane.sh" prepare >&2 ||
		{ echo "linux-guest: cannot get Debian's kernel (scripts/lane.sh prepare failed)" >&2; exit 1; }
fi
if [ ! -f "$out/vmlinuz" ] || ! cmp -s "$lane_image/vmlinuz" "$out/vmlinuz"; then
	cp "$lane_image/vmlinuz" "$out/vmlinuz.tmp"
	mv "$out/vmlinuz.tmp" "$out/vmlinuz"
fi

for entry in busybox-static:/bin/busybox cpio:/usr/bin/cpio xz-utils:/usr/bin/xz zstd:/usr/bin/zstd; do
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

img=$out/initramfs.cpio.gz
if [ -f "$img" ] && [ "$img" -nt "$top/guest/linux/init" ] && [ "$img" -nt /bin/busybox ]; then
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/bin"
cp /bin/busybox "$tmp/root/bin/busybox"
cp "$top/guest/linux/init" "$tmp/root/init"
chmod 755 "$tmp/root/init" "$tmp/root/bin/busybox"
(cd "$tmp/root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9n > "$tmp/img"
mv "$tmp/img" "$img"
