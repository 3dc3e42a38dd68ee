#!/usr/bin/env python3
"""Crash-consistency test of the store (power loss), in the manner of
SQLite's crash tests and ALICE (DESIGN.md section 8, docs/operations.md).

The real server runs with tests/crash/crashlog.c preloaded: it records every
write the process issues to the data directory (offset and bytes), every
fsync/fdatasync, truncation, creation and deletion, in order. A client posts
Segment batches one at a time, and after each acknowledgement (HTTP 200)
appends "A <n>" to the same record, so the record says which events were
acknowledged before any point. Reads in between make the intake writer
commit often, and a short checkpoint interval makes checkpoints delete WAL
segments, so LMDB reuses pages of earlier snapshots many times.

Then, for many points of the record, the test builds disk images a power
cut at that point could leave: everything synced is there; each 512-byte
sector written since its file's last sync holds its synced content or any
later version (writes dropped, reordered, torn at sectors), the file's
length is any it had since its sync, and directory entries created or
removed since their directory's last fsync are a prefix of those changes.
Each image is opened by the real binary, which must open it (replaying the
WAL), answer `count` and `eval` consistently, pass `crowdpack check` when the
binary has it, and hold every event acknowledged before the cut.

CP_CRASH_LONG=1 runs the long version (more requests, many more images).
Exits 0 when every image passes.
"""
import os
import random
import shutil
import subprocess
import time

from harness import CP, Server, fail, main, must, request, run, tempdir

SHIM = os.environ.get("CP_CRASHLOG") or os.path.join(os.path.dirname(os.path.abspath(CP)),
                                                      "cp_crashlog.so")
LONG = os.environ.get("CP_CRASH_LONG") == "1"
REQUESTS = 400 if LONG else 120
IMAGES = 600 if LONG else 30
PER_REQUEST = 4           # new users per request
SECTOR = 512
SEED = int(os.environ.get("CP_CRASH_SEED", "0")) or random.randrange(1, 1 << 30)
CHECK_SECONDS = 3000 if LONG else 40  # for checking images, on an idle machine


def check_budget(base):
    """Seconds for checking images: base on an idle machine, times how
    loaded it is (a load average of 20 on 2 cores gives ten times), so a
    busy machine checks as many images instead of failing on a clock;
    capped inside ctest's TIMEOUT for integration tests (900 s)."""
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        load = 1.0
    return min(base * max(1.0, load), 3000 if LONG else 600)


# ------------------------------------------------------------------ workload

def start_server(tmp, data, log):
    env = dict(LD_PRELOAD=SHIM, CP_CRASH_DIR=data, CP_CRASH_LOG=log)
    # Sanitizer builds: the recorder is preloaded before the ASan runtime.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return Server(tmp, data, threads=4, env=env).start()


def call(port, method, path, body=None):
    r = request(port, method, path, body, timeout=30, ctype="application/json")
    return r.status, r.raw


def workload(tmp, data, log, rng):
    srv = start_server(tmp, data, log)
    port = srv.port
    ack = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        st, body = call(port, "PUT", "/v1/intake/config",
                        {"checkpoint": {"interval_ms": 300, "records": 25}})
        if st != 200:
            raise RuntimeError("PUT /v1/intake/config: %d %s" % (st, body))
        for i in range(REQUESTS):
            events = []
            for j in range(PER_REQUEST):
                events.append({"type": "identify", "userId": "u%d_%d" % (i, j),
                               "messageId": "m%d_%d" % (i, j),
                               "traits": {"n": i, "g": rng.randrange(1000)}})
            # Updates of earlier users rewrite their bitmaps: pages are freed
            # and, a few commits later, reused.
            for k in range(2):
                if i > 0:
                    o = rng.randrange(i)
                    events.append({"type": "identify", "userId": "u%d_0" % o,
                                   "messageId": "m%d_u%d" % (i, k),
                                   "traits": {"g": rng.randrange(1000)}})
            st, body = call(port, "POST", "/v1/batch", {"batch": events})
            if st != 200:
                raise RuntimeError("POST /v1/batch: %d %s" % (st, body))
            os.write(ack, b"A %d\n" % i)
            if i % 2 == 1:
                # A read through LMDB: the intake writer commits first.
                st, body = call(port, "GET", "/v1/users/user_id/u%d_0" % rng.randrange(i + 1))
                if st != 200:
                    raise RuntimeError("GET /v1/users: %d %s" % (st, body))
    finally:
        os.close(ack)
        srv.kill9()


# ------------------------------------------------------------- the record

def parse(log, data):
    ops = []
    raw = open(log, "rb").read()
    pos = 0
    pre = data.rstrip("/") + "/"
    rel = lambda p: p[len(pre):] if p.startswith(pre) else ("" if p == data else p)
    while pos < len(raw):
        nl = raw.index(b"\n", pos)
        f = raw[pos:nl].decode().split(" ")
        pos = nl + 1
        if f[0] == "W":
            off, n, ds = int(f[2]), int(f[3]), f[4] == "1"
            ops.append(("W", rel(f[1]), off, raw[pos:pos + n], ds))
            pos += n
        elif f[0] in "FDCU":
            ops.append((f[0], rel(f[1])))
        elif f[0] == "T":
            ops.append(("T", rel(f[1]), int(f[2])))
        elif f[0] == "R":
            ops.append(("R", rel(f[1]), rel(f[2])))
        elif f[0] == "A":
            ops.append(("A", int(f[1])))
        elif f[0] == "M":
            raise RuntimeError("the store wrote through a memory map (msync): its writes "
                               "cannot be recorded")
    return ops


class File:
    def __init__(self, content=b""):
        self.durable = bytearray(content)
        self.pend = []  # ("W", off, bytes, forced) | ("T", size)

    def sync(self):
        for op in self.pend:
            apply_op(self.durable, op)
        self.pend = []


def apply_op(buf, op):
    if op[0] == "W":
        _, off, b, _ = op
        if len(buf) < off:
            buf.extend(b"\0" * (off - len(buf)))
        buf[off:off + len(b)] = b
    else:
        size = op[1]
        if size < len(buf):
            del buf[size:]
        else:
            buf.extend(b"\0" * (size - len(buf)))


def parent(path):
    return path.rsplit("/", 1)[0] if "/" in path else ""


class Model:
    """The files as the process saw them and what of it is durable."""

    def __init__(self, base):
        self.durable_ns = {p: File(c) for p, c in base.items()}
        self.latest = dict(self.durable_ns)
        self.pend_ns = []  # ("C", path, File) | ("U", path) | ("R", a, b)
        self.acked = 0

    def step(self, op):
        k = op[0]
        if k == "A":
            self.acked = op[1] + 1
        elif k == "C":
            if op[1] in self.latest or op[1] == "wal":
                return
            f = File()
            self.latest[op[1]] = f
            self.pend_ns.append(("C", op[1], f))
        elif k == "U":
            self.latest.pop(op[1], None)
            self.pend_ns.append(("U", op[1]))
        elif k == "R":
            f = self.latest.pop(op[1], None)
            if f is not None:
                self.latest[op[2]] = f
            self.pend_ns.append(("R", op[1], op[2]))
        elif k == "D":
            keep = []
            for e in self.pend_ns:
                if parent(e[1]) == op[1]:
                    apply_ns(self.durable_ns, e)
                else:
                    keep.append(e)
            self.pend_ns = keep
        elif k == "F":
            f = self.latest.get(op[1])
            if f is not None:
                f.sync()
        elif k == "W":
            f = self.latest.get(op[1])
            if f is not None:
                f.pend.append(("W", op[2], op[3], op[4]))
        elif k == "T":
            f = self.latest.get(op[1])
            if f is not None:
                f.pend.append(("T", op[2]))


def apply_ns(ns, e):
    if e[0] == "C":
        ns[e[1]] = e[2]
    elif e[0] == "U":
        ns.pop(e[1], None)
    else:
        f = ns.pop(e[1], None)
        if f is not None:
            ns[e[2]] = f


def pick(rng, lo, hi):
    """A version index in [lo, hi]: often the oldest or newest allowed."""
    r = rng.random()
    if r < 0.35:
        return lo
    if r < 0.7:
        return hi
    return rng.randint(lo, hi)


def materialize(f, rng):
    """One possible content of f after a power cut."""
    if not f.pend:
        return bytes(f.durable)
    cur = bytearray(f.durable)
    sizes = [len(cur)]
    min_size_idx = 0
    versions = {}  # sector -> [(bytes, forced)]
    for op in f.pend:
        apply_op(cur, op)
        sizes.append(len(cur))
        if op[0] == "W":
            _, off, b, forced = op
            for s in range(off // SECTOR, (off + len(b) + SECTOR - 1) // SECTOR):
                versions.setdefault(s, []).append(
                    (bytes(cur[s * SECTOR:(s + 1) * SECTOR]), forced))
            if forced:
                min_size_idx = len(sizes) - 1
    size = sizes[pick(rng, min_size_idx, len(sizes) - 1)]
    out = bytearray(f.durable[:size])
    out.extend(b"\0" * (size - len(out)))
    for s, vs in versions.items():
        if s * SECTOR >= size:
            continue
        lo = -1
        for i, (_, forced) in enumerate(vs):
            if forced:
                lo = i
        k = pick(rng, lo, len(vs) - 1)
        if k < 0:
            b = bytes(f.durable[s * SECTOR:(s + 1) * SECTOR])
        else:
            b = vs[k][0]
        b = b.ljust(SECTOR, b"\0")
        end = min(size, (s + 1) * SECTOR)
        out[s * SECTOR:end] = b[:end - s * SECTOR]
    return bytes(out)


def image(model, rng, dest):
    ns = dict(model.durable_ns)
    cut = pick(rng, 0, len(model.pend_ns))
    for e in model.pend_ns[:cut]:
        apply_ns(ns, e)
    os.makedirs(os.path.join(dest, "wal"))
    for path, f in ns.items():
        if path in ("data.mdb-lock", "LOCK") or path == "":
            continue
        if path == "activate" or path.startswith("activate/"):
            continue  # the bidder's state (serve opens it): not the store's concern here
        with open(os.path.join(dest, path), "wb") as out:
            out.write(materialize(f, rng))


# ---------------------------------------------------------------- checking

def has_check():
    p = run("check", "--help")
    return p.returncode == 0 and "check" in (p.stdout + p.stderr)


def count(img, expr):
    return int(must("count", "--data", img, expr).stdout.strip().split()[0])


def verify(img, acked, check):
    """None if the image is a correct state, else what is wrong."""
    try:
        p = run("import", "--data", img, "--events", os.devnull, "--quiet",
                timeout=120)
    except subprocess.TimeoutExpired:
        return "open (with WAL replay) took over 120 s"
    if p.returncode != 0:
        return "open (with WAL replay) failed: exit %d: %s" % (p.returncode,
                                                               p.stderr.strip()[-400:])
    try:
        if check:
            p = run("check", "--data", img, timeout=120)
            if p.returncode != 0:
                return "crowdpack check failed: %s" % (p.stdout + p.stderr).strip()[-400:]
        total = count(img, "all")
        have = count(img, "n < %d" % acked) if acked else 0
        with_g = count(img, "g >= 0")
        ids = must("eval", "--data", img, "all").stdout.split()
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        return "reading failed: %s" % e
    want = acked * PER_REQUEST
    if have != want:
        return "%d of the %d users of acknowledged requests are there" % (have, want)
    if total not in (want, want + PER_REQUEST):
        return "count all = %d; expected %d or %d" % (total, want, want + PER_REQUEST)
    if with_g != total:
        return "count g >= 0 = %d but count all = %d" % (with_g, total)
    if len(ids) != total:
        return "eval all lists %d ids but count all = %d" % (len(ids), total)
    return None


def test():
    if not os.path.exists(SHIM):
        fail("test_crash: the write recorder %s is not built" % SHIM)
        return
    rng = random.Random(SEED)
    tmp = tempdir("cp-crash-", keep_on_failure=True)
    failures = []
    data = os.path.join(tmp, "data")
    log = os.path.join(tmp, "record")
    must("init", "--data", data)
    must("attrs", "define", "--data", data, "n", "int")
    must("attrs", "define", "--data", data, "g", "int")
    os.sync()
    base = {}
    for root, _, files in os.walk(data):
        for name in files:
            full = os.path.join(root, name)
            base[os.path.relpath(full, data)] = open(full, "rb").read()
    t0 = time.time()
    workload(tmp, data, log, rng)
    ops = parse(log, data)
    nsync = sum(1 for o in ops if o[0] in "FD")
    print("test_crash: seed %d; %d requests recorded as %d operations (%d syncs) in %.1f s"
          % (SEED, REQUESTS, len(ops), nsync, time.time() - t0))

    # Crash points: half anywhere, half just before a sync (the most
    # unsynced data) of data.mdb.
    before_sync = [i for i, o in enumerate(ops) if o[0] == "F" and o[1] == "data.mdb"]
    points = set()
    while len(points) < IMAGES:
        if before_sync and rng.random() < 0.5:
            points.add(rng.choice(before_sync))
        else:
            points.add(rng.randrange(len(ops) + 1))
    points = sorted(points)
    check = has_check()
    budget = check_budget(CHECK_SECONDS)
    deadline = time.time() + budget
    model = Model(base)
    done = 0
    pi = 0
    for i in range(len(ops) + 1):
        while pi < len(points) and points[pi] == i:
            if time.time() > deadline:
                break
            img = os.path.join(tmp, "img%d" % i)
            image(model, rng, img)
            why = verify(img, model.acked, check)
            done += 1
            if why:
                failures.append((i, model.acked, why))
                keep = os.path.join(tmp, "failed%d" % i)
                os.rename(img, keep)
            else:
                shutil.rmtree(img)
            pi += 1
        if i < len(ops):
            model.step(ops[i])
    print("test_crash: %d post-crash images checked%s, %d failed"
          % (done, " (with crowdpack check)" if check else "", len(failures)))
    for i, acked, why in failures[:10]:
        print("  cut after operation %d (%d requests acknowledged): %s" % (i, acked, why))
    if failures:
        fail("test_crash: %d post-crash images wrong (seed %d; images kept in %s)"
             % (len(failures), SEED, tmp))
        return
    if done < min(IMAGES, 10):
        fail("test_crash: only %d images checked in %.0f s" % (done, budget))
        return
    print("test_crash: ok")


if __name__ == "__main__":
    main(test)
