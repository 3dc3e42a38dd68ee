#!/bin/sh
# Installs the Debian packages crowdpack needs that this machine lacks.
# Quiet when everything is present; uses sudo when not root.
set -eu
PKGS="build-essential cmake pkg-config libroaring-dev liblmdb-dev libmicrohttpd-dev \
libjansson-dev libsodium-dev libxxhash-dev libcmocka-dev libcurl4-openssl-dev zlib1g-dev libdeflate-dev \
python3 curl libsqlite3-dev libunistring-dev clang-format tzdata"
# Fuzzing needs clang and its runtime; tests skip fuzzing when absent, but
# install them so `make check` runs the fuzz targets on a fresh machine.
PKGS="$PKGS clang libclang-rt-14-dev"
[ "${1:-}" = "--bench" ] && PKGS="$PKGS redis-server libhiredis-dev postgresql libpq-dev sqlite3 gnuplot-nox"
# The load generator of `crowdpack bench --rtb` (keep-alive HTTP with a Lua script).
PKGS="$PKGS wrk"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing >&2
