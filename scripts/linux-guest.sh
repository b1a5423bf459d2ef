#!/bin/sh
# scripts/linux-guest.sh OUT_DIR: forkvm's Linux test guest, from Debian
# packages only (docs/linux-guests.md):
#   OUT_DIR/vmlinuz          Debian's stock kernel (linux-image-amd64's
#                            bzImage, the one the KVM lane boots: scripts/lane.sh
#                            prepare downloads it once into /var/cache/forkvm-lane)
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

for entry in busybox-static:/bin/busybox cpio:/usr/bin/cpio; do
	pkg=${entry%%:*} file=${entry#*:}
	if [ ! -x "$file" ]; then
		[ "$(id -u)" = 0 ] || { echo "linux-guest: $pkg is missing (apt-get install $pkg as root)" >&2; exit 1; }
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1; } ||
			{ echo "linux-guest: cannot install $pkg" >&2; exit 1; }
	fi
done

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
