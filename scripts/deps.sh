#!/bin/sh
# Installs the Debian packages forkvm builds with, when (and only when) one is missing.
# Usage: scripts/deps.sh [--check]   (--check: report missing packages, install nothing)
set -eu

# package:file-that-proves-it-is-installed
PKGS="
gcc:/usr/bin/gcc
libc6-dev:/usr/include/stdio.h
linux-libc-dev:/usr/include/linux/kvm.h
liburing-dev:/usr/include/liburing.h
libzstd-dev:/usr/include/zstd.h
libxxhash-dev:/usr/include/xxhash.h
libcriterion-dev:/usr/include/criterion/criterion.h
musl-tools:/usr/bin/musl-gcc
duktape-dev:/usr/share/duktape/duktape.c
libjansson-dev:/usr/include/jansson.h
libhttp-parser-dev:/usr/include/http_parser.h
libseccomp-dev:/usr/include/seccomp.h
scdoc:/usr/bin/scdoc
"

missing=""
for entry in $PKGS; do
	pkg=${entry%%:*}
	file=${entry#*:}
	[ -e "$file" ] || missing="$missing $pkg"
done

[ -z "$missing" ] && exit 0

if [ "${1:-}" = "--check" ]; then
	echo "missing packages:$missing" >&2
	exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "forkvm: missing build dependencies:$missing" >&2
	echo "forkvm: run as root, or: sudo apt-get install -y$missing" >&2
	exit 1
fi

echo "forkvm: installing build dependencies:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! apt-get install -y --no-install-recommends $missing >/dev/null 2>&1; then
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y --no-install-recommends $missing
fi
