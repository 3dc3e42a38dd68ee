#!/bin/sh
# Runs the benchmark set reported in docs/benchmarks.md and keeps the raw
# output: bench/results/<date>/ gets machine.txt, one .txt (table) and one
# .json per run. Usage: bench/run-all.sh [path/to/crowdpack]
set -eu
CP=${1:-build/crowdpack}
REPS=${REPS:-200}
OUT=bench/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

{
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|L1d|L2|L3)' || true
    grep MemTotal /proc/meminfo || true
    uname -srm
    "$CP" --version
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"

run() {
    name=$1
    shift
    echo "== $name: $CP bench $*" >&2
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/$name.txt"
    "$CP" bench --reps "$REPS" --json-out "$OUT/$name.json" "$@" | tee -a "$OUT/$name.txt"
}

run engine-1m --users 1M
run synthetic-10m-100m --synthetic --users 10M,100M
run synthetic-100m-2threads --synthetic --users 100M --threads 0
echo "results in $OUT" >&2
