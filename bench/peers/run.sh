#!/bin/sh
# bench/peers/run.sh — crowdpack side by side with Redis bitmaps,
# PostgreSQL, SQLite and the hardware floor, on the same population, with
# the same answers. One command:
#
#   bench/peers/run.sh [--users 1000000,10000000] [--quick] [--build-dir DIR]
#                      [--work DIR] [--doc FILE] [--budget S] [--timeout S]
#                      [--no-install] [--no-redis] [--no-postgres] [--no-sqlite]
#
# For each size: `crowdpack demo` writes the population (timed: that is
# crowdpack's load), Redis and PostgreSQL are started on loopback with
# their own temporary data directories, peers-bench extracts the population
# through the C API, loads every system, runs the workload, checks every
# answer against crowdpack's, and writes results-N.json; the servers are
# stopped. Then report.py writes docs/benchmarks-peers.md and its chart.
#
# --quick: 20,000 users, 3 reps, no install, no report unless --doc: the
# answer check run by tests/integration/test_peers_quick.py. Redis and
# PostgreSQL are skipped (said so) when their binaries or client libraries
# are absent; SQLite is required.
#
# Exit status: 0 all answers equal; 2 a mismatch; 1 any other failure.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
USERS=1000000,10000000
QUICK=0
BUILD=""
WORK=""
DOC=""
BUDGET=""
TIMEOUT=""
INSTALL=1
USE_REDIS=1
USE_PG=1
USE_SQLITE=1
SEED=42

while [ $# -gt 0 ]; do
    case "$1" in
    --users) USERS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --doc) DOC=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-redis) USE_REDIS=0; shift ;;
    --no-postgres) USE_PG=0; shift ;;
    --no-sqlite) USE_SQLITE=0; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    [ "$USERS" = 1000000,10000000 ] && USERS=20000
    INSTALL=0
    REPS="--max-reps 3 --budget ${BUDGET:-1} --timeout ${TIMEOUT:-120}"
else
    [ -z "$DOC" ] && DOC="$REPO/docs/benchmarks-peers.md"
    REPS="--max-reps 200 --budget ${BUDGET:-10} --timeout ${TIMEOUT:-300}"
fi

SUDO=""
[ "$(id -u)" != 0 ] && SUDO=sudo
log() { echo "run.sh: $*" >&2; }

# ------------------------------------------------------------ install
if [ "$INSTALL" = 1 ]; then
    "$REPO/scripts/install-deps.sh" --bench
    missing=""
    for p in redis-server libhiredis-dev postgresql libpq-dev sqlite3 libsqlite3-dev gnuplot-nox; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing:$missing"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing >&2
    fi
fi

# -------------------------------------------------------------- build
[ -z "$WORK" ] && WORK=$(mktemp -d "${TMPDIR:-/tmp}/crowdpack-peers.XXXXXX")
mkdir -p "$WORK"
chmod 755 "$WORK"
if [ -z "$BUILD" ]; then
    BUILD="$WORK/crowdpack-build"
    log "building crowdpack (RelWithDebInfo) in $BUILD"
    cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" -j 2 --target crowdpack >/dev/null
fi
log "building peers-bench"
# A sanitized crowdpack build (make asan) needs a sanitized harness.
SAN=OFF
grep -q '^CP_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null && SAN=ON
cmake -S "$HERE" -B "$WORK/peers-build" -DCROWDPACK_BUILD="$BUILD" -DPEERS_SANITIZE=$SAN >/dev/null
cmake --build "$WORK/peers-build" -j 2 >/dev/null
BENCH="$WORK/peers-build/peers-bench"
CP="$BUILD/crowdpack"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

REDIS_PID=""
PG_DIR=""
PG_BIN=""
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
stop_servers() {
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
    fi
    if [ -n "$PG_DIR" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1 || true
    fi
    [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
    PG_DIR=""
}
trap 'stop_servers' EXIT INT TERM

start_redis() {
    command -v redis-server >/dev/null 2>&1 || { log "redis-server not installed: Redis skipped"; return 1; }
    port=$(free_port)
    mkdir -p "$WORK/redis"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/redis" \
        --protected-mode yes --logfile "$WORK/redis/redis.log" &
    REDIS_PID=$!
    i=0
    until redis-cli -p "$port" ping >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -gt 100 ] && { log "redis did not start"; return 1; }
        sleep 0.1
    done
    REDIS_ARGS="--redis 127.0.0.1:$port --redis-pid $REDIS_PID"
}

start_pg() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || { log "PostgreSQL not installed: skipped"; return 1; }
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        log "running as root without a postgres user: PostgreSQL skipped"; return 1
    fi
    port=$(free_port)
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/crowdpack-peers-pg.XXXXXX")
    chmod 755 "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >/dev/null
    mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
    sb_mb=$((mem_kb / 1024 / 6)) # ~1/6 of RAM
    [ "$sb_mb" -gt 8192 ] && sb_mb=8192
    cat >>"$PG_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_DIR'
shared_buffers = ${sb_mb}MB
work_mem = 1GB
maintenance_work_mem = 2GB
effective_cache_size = $((mem_kb / 1024 / 2))MB
max_parallel_workers_per_gather = $(nproc)
max_parallel_maintenance_workers = $(nproc)
max_worker_processes = 8
max_parallel_workers = 8
random_page_cost = 1.1
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 32GB
checkpoint_timeout = 1h
autovacuum = off
CONF
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start >/dev/null
    PG_PID=$(head -1 "$PG_DIR/data/postmaster.pid")
    PG_ARGS="--pg host=127.0.0.1\ port=$port\ user=postgres\ dbname=postgres --pg-pid $PG_PID"
}

RESULTS=""
STATUS=0
for N in $(echo "$USERS" | tr ',' ' '); do
    DATA="$WORK/data-$N"
    rm -rf "$DATA"
    log "size $N: crowdpack demo (generator + engine load)"
    t0=$(date +%s.%N)
    "$CP" demo --data "$DATA" --users "$N" --seed "$SEED" >/dev/null
    t1=$(date +%s.%N)
    LOAD=$(echo "$t1 - $t0" | bc 2>/dev/null || python3 -c "print($t1-$t0)")
    REDIS_ARGS=""
    PG_ARGS=""
    LITE_ARGS=""
    [ "$USE_SQLITE" = 1 ] || LITE_ARGS="--no-sqlite"
    [ "$USE_REDIS" = 1 ] && { start_redis || true; }
    [ "$USE_PG" = 1 ] && { start_pg || true; }
    OUT="$WORK/results-$N.json"
    set +e
    eval "\"$BENCH\" --data \"$DATA\" --out \"$OUT\" --sqlite \"$WORK/peers-$N.sqlite\" \
        --cp-load-secs $LOAD $REPS $LITE_ARGS $REDIS_ARGS $PG_ARGS"
    rc=$?
    set -e
    stop_servers
    rm -f "$WORK/peers-$N.sqlite"
    [ "$QUICK" = 1 ] || rm -rf "$DATA"
    if [ $rc != 0 ]; then
        log "size $N: peers-bench failed (status $rc)"
        STATUS=$rc
        [ -f "$OUT" ] || exit $rc
    fi
    RESULTS="$RESULTS $OUT"
done

if [ -n "$DOC" ]; then
    log "writing $DOC"
    python3 "$HERE/report.py" --doc "$DOC" --command "bench/peers/run.sh $*" $RESULTS
fi
log "results in $WORK"
exit $STATUS
