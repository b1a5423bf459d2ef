#!/bin/sh
# make install / make uninstall.
#   install.sh BUILD GUEST PREFIX      installs into PREFIX:
#     bin/forkvm bin/forkctl bin/forkd bin/forkbench
#     lib/forkvm/agent                 the default function guest
#     share/man/man1/*.1               the man pages (docs/man, built by make)
#     share/bash-completion/completions/{forkvm,forkctl,forkd,forkbench}
#     share/forkvm/installed-files     the list uninstall works from
#   install.sh --uninstall PREFIX      removes what that list names, then the
#                                      directories it leaves empty
# Files are written under a temporary name and renamed into place.
set -eu

if [ "${1:-}" = --uninstall ]; then
	prefix=$2
	list=$prefix/share/forkvm/installed-files
	[ -f "$list" ] || { echo "uninstall: nothing installed in $prefix ($list is missing)" >&2; exit 1; }
	while IFS= read -r f; do
		rm -f "$prefix/$f"
	done < "$list"
	rm -f "$list"
	# the directories we made, deepest first, if now empty
	for d in share/forkvm share/bash-completion/completions share/bash-completion \
		share/man/man1 share/man share lib/forkvm lib bin; do
		rmdir "$prefix/$d" 2>/dev/null || true
	done
	echo "uninstalled forkvm from $prefix"
	exit 0
fi

build=$1 guest=$2 prefix=$3
top=$(cd "$(dirname "$0")/.." && pwd)
files=""
put() { # put SRC DEST-RELATIVE MODE
	mkdir -p "$(dirname "$prefix/$2")"
	cp "$1" "$prefix/$2.tmp.$$"
	chmod "$3" "$prefix/$2.tmp.$$"
	mv "$prefix/$2.tmp.$$" "$prefix/$2"
	files="$files $2"
}
for b in forkvm forkctl forkd forkbench; do
	[ -x "$build/bin/$b" ] || { echo "install: $build/bin/$b is missing (run make)" >&2; exit 1; }
	put "$build/bin/$b" "bin/$b" 755
	put "$top/cli/completion.bash" "share/bash-completion/completions/$b" 644
done
put "$guest/agent" "lib/forkvm/agent" 755
for m in "$build"/man/*.1; do
	[ -f "$m" ] || { echo "install: no man pages in $build/man (run make)" >&2; exit 1; }
	put "$m" "share/man/man1/$(basename "$m")" 644
done
mkdir -p "$prefix/share/forkvm"
for f in $files; do echo "$f"; done > "$prefix/share/forkvm/installed-files.tmp"
mv "$prefix/share/forkvm/installed-files.tmp" "$prefix/share/forkvm/installed-files"
echo "installed forkvm into $prefix (make uninstall PREFIX=$prefix removes it)"
