#!/bin/sh
# Runs every libFuzzer target in BUILD for SECONDS each on a copy of its
# corpus (tests/fuzz/<name>/), so the checked-in corpus is not modified.
set -eu
BUILD=$1
SECONDS_EACH=${2:-15}
root=$(cd "$(dirname "$0")/.." && pwd)
status=0
for f in "$BUILD"/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f" | sed 's/^fuzz_//')
    work=$(mktemp -d)
    [ -d "$root/tests/fuzz/$name" ] && cp -r "$root/tests/fuzz/$name/." "$work/"
    # A target whose inputs need more room (a bitmap with a bitset
    # container is 8 KiB) names its limit in tests/fuzz/<name>.max_len.
    max_len=4096
    [ -f "$root/tests/fuzz/$name.max_len" ] && max_len=$(cat "$root/tests/fuzz/$name.max_len")
    echo "fuzz: $name for ${SECONDS_EACH}s"
    if ! "$f" -max_total_time="$SECONDS_EACH" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=0 "$work" >"$work.log" 2>&1; then
        echo "fuzz: $name FAILED"; tail -50 "$work.log"; status=1
    else
        grep -E '^(#[0-9]+.*DONE|Done)' "$work.log" | tail -1 || true
    fi
    rm -rf "$work" "$work.log"
done
exit $status
