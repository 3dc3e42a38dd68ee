#!/bin/sh
# check-embed.sh BUILD_DIR EXAMPLE.c — builds an embedding program the way
# README.md says (`cc prog.c $(pkg-config --cflags --libs crowdpack)`) and
# runs it, twice: against the build tree (crowdpack-uninstalled.pc) and
# against a copy installed with `cmake --install` into a temporary prefix.
# Env: CC (default cc), CP_EMBED_FLAGS (extra flags, e.g. sanitizers).
set -eu
build=$(cd "$1" && pwd)
src=$2
cc=${CC:-cc}
flags=${CP_EMBED_FLAGS:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cp-embed.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

echo "== against the build tree"
PKG_CONFIG_PATH=$build
export PKG_CONFIG_PATH
# shellcheck disable=SC2046,SC2086
$cc -Wall -Werror $flags -o "$tmp/prog-build" "$src" $(pkg-config --cflags --libs crowdpack)
LD_LIBRARY_PATH=$build "$tmp/prog-build" "$tmp/data-build"

echo "== installed (cmake --install into $tmp/prefix)"
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name crowdpack.pc)
[ -n "$pc" ] || { echo "check-embed: cmake --install wrote no crowdpack.pc" >&2; exit 1; }
for f in "$tmp/prefix/include/crowdpack.h" "$tmp/prefix/bin/crowdpack"; do
    [ -e "$f" ] || { echo "check-embed: cmake --install wrote no $f" >&2; exit 1; }
done
PKG_CONFIG_PATH=$(dirname "$pc")
# The .pc names the configured prefix; point it at the temporary one.
# shellcheck disable=SC2046,SC2086
$cc -Wall -Werror $flags -o "$tmp/prog-inst" "$src" \
    $(pkg-config --define-variable=prefix="$tmp/prefix" --cflags --libs crowdpack)
libdir=$(pkg-config --define-variable=prefix="$tmp/prefix" --variable=libdir crowdpack)
# The program must load the installed library (through its SONAME), not the build tree's.
LD_LIBRARY_PATH=$libdir "$tmp/prog-inst" "$tmp/data-inst"
LD_LIBRARY_PATH=$libdir ldd "$tmp/prog-inst" | grep -F "$libdir/libcrowdpack.so." ||
    { echo "check-embed: the installed program does not load $libdir/libcrowdpack.so.*" >&2; exit 1; }
echo "check-embed: ok"
