#!/usr/bin/env python3
"""Damaged files get refusals, never crashes or silent loss (docs/operations.md
"Damaged files").

Part 1, the write-ahead log. 2,000 acknowledged events sit in the log of a
server killed with SIGKILL (data.mdb holds only part of them). Then:
  - one flipped byte in the middle of the newest segment, valid records after
    it: `serve` must refuse (it used to cut the log there and start, dropping
    every acknowledged event after the flip), naming the segment, the byte
    offset and the records that follow; `crowdpack recover` keeps the valid
    records and writes the dropped bytes to a side file; then every event but
    the damaged record's is there;
  - the newest segment truncated to 0 bytes, and wal/ deleted: `serve` must
    refuse; `recover` lets it start.

Part 2, data.mdb. A copy of a real data.mdb (`crowdpack demo --users 20000`)
has random bytes flipped or a whole 4 KiB page zeroed, again and again; each
time `count`, `eval`, `check` and `serve` startup run on it. Accepted: a clean
error (non-zero exit, a message, no signal) or the undamaged answer. Short
run by default (bounded well under 60 s); CP_DAMAGE_LONG=1 runs hundreds.
"""
import os
import random
import shutil
import signal
import struct
import time

from harness import Server, basic, fail, main, must, run, tempdir

LONG = os.environ.get("CP_DAMAGE_LONG") == "1"
DAY = "2024-06-01"


def copy_dir(src, dst):
    """Copies a data directory; data.mdb (sparse, 64 GiB long) by its used pages."""
    os.mkdir(dst)
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        for d in dirs:
            os.mkdir(os.path.join(dst, rel, d))
        for f in files:
            s, t = os.path.join(root, f), os.path.join(dst, rel, f)
            if f == "data.mdb":
                with open(s, "rb") as i, open(t, "wb") as o:
                    o.write(i.read(used_pages(s) * 4096))
            elif f != "data.mdb-lock":
                shutil.copy2(s, t)


def newest_segment(data):
    segs = sorted(f for f in os.listdir(os.path.join(data, "wal")) if f.endswith(".wal"))
    return os.path.join(data, "wal", segs[-1])


def tick_count(tmp, data, admin, n):
    """1 if user u0 has exactly n tick events (asked of a fresh server)."""
    srv = Server(tmp, data, threads=2)
    bad = srv.try_start()
    if bad:
        return "server did not start: %r" % (bad,)
    try:
        st, body = srv.call("POST", "/v1/count",
                            {"expression": "k = 0 AND did(tick) = %d" % n, "as_of": DAY}, auth=admin)
        return body.get("count") if st == 200 else body
    finally:
        srv.stop()


def expect_refusal(tmp, data, what, needles):
    srv = Server(tmp, data, threads=2)
    bad = srv.try_start()
    if bad is None:
        srv.stop()
        fail("%s: serve started on a damaged log" % what)
        return
    code, err = bad
    if code <= 0:
        fail("%s: serve died by signal %d" % (what, -code))
    for n in needles:
        if n not in err:
            fail("%s: refusal %r lacks %r" % (what, err.strip(), n))


def part_wal(tmp):
    data = os.path.join(tmp, "wal-data")
    must("init", "--data", data)
    must("attrs", "define", "--data", data, "k", "int")
    key = must("keys", "create", "--data", data, "--role", "write").stdout.strip().split()[-1]
    admin = basic(must("keys", "create", "--data", data, "--role",
                      "admin").stdout.strip().split()[-1])
    auth = basic(key)
    srv = Server(tmp, data, threads=2)
    assert srv.try_start() is None
    # No checkpoint during the test: the events stay in the log.
    st, b = srv.call("PUT", "/v1/intake/config",
                     {"checkpoint": {"interval_ms": 3600000, "records": 100000000}}, auth=admin)
    assert st == 200, b
    st, b = srv.call("POST", "/v1/identify", {"userId": "u0", "traits": {"k": 0},
                                               "messageId": "id-0",
                                               "timestamp": DAY + "T00:00:00Z"}, auth=auth)
    assert st == 200, b

    def batches(lo, hi):
        for i in range(lo, hi):
            events = [{"type": "track", "userId": "u0", "event": "tick",
                       "messageId": "b%d-e%d" % (i, j), "timestamp": DAY + "T12:00:00Z"}
                      for j in range(100)]
            st, b = srv.call("POST", "/v1/batch", {"batch": events}, auth=auth)
            assert st == 200, b

    batches(0, 10)
    time.sleep(2.6)  # the intake writer commits data.mdb: it now holds part of the log
    batches(10, 20)
    srv.kill9()
    pristine = os.path.join(tmp, "wal-pristine")
    copy_dir(data, pristine)

    def restore():
        shutil.rmtree(data)
        copy_dir(pristine, data)

    # 1. One flipped byte in the middle of the newest segment.
    seg = newest_segment(data)
    size = os.path.getsize(seg)
    with open(seg, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x10]))
    expect_refusal(tmp, data, "flipped byte", [os.path.basename(seg), "byte offset",
                                               "acknowledged records follow it",
                                               "crowdpack recover"])
    if os.path.getsize(seg) != size:
        fail("flipped byte: the refusal changed the segment")
    p = run("recover", "--data", data)
    side = [f for f in os.listdir(data) if f.startswith("wal-dropped-")]
    if p.returncode != 0 or not side or "wal-dropped-" not in p.stdout:
        fail("recover after a flip: exit %d, side files %r: %s %s"
                        % (p.returncode, side, p.stdout, p.stderr))
    else:
        raw = open(os.path.join(data, side[0]), "rb").read()
        if not raw.startswith(b"crowdpack-wal-dropped segment "):
            fail("side file starts %r" % raw[:60])
    got = tick_count(tmp, data, admin, 1900)  # all but the damaged batch of 100
    if got != 1:
        fail("after recover: u0 should have 1900 tick events: %r" % (got,))

    # 2. The newest segment truncated to 0 bytes.
    restore()
    with open(newest_segment(data), "r+b") as f:
        f.truncate(0)
    expect_refusal(tmp, data, "emptied segment", ["is empty", "data.mdb has applied"])
    p = run("recover", "--data", data)
    if p.returncode != 0:
        fail("recover after emptying: %s" % p.stderr)
    srv = Server(tmp, data, threads=2)
    bad = srv.try_start()
    if bad:
        fail("after recover of an emptied segment: %r" % (bad,))
    else:
        srv.stop()

    # 3. wal/ deleted.
    restore()
    shutil.rmtree(os.path.join(data, "wal"))
    expect_refusal(tmp, data, "deleted wal/", ["is missing", "data.mdb has applied"])
    p = run("recover", "--data", data)
    if p.returncode != 0 or "was missing" not in p.stdout:
        fail("recover after deleting wal/: %s %s" % (p.stdout, p.stderr))
    # Undamaged, the pristine copy replays every event.
    restore()
    got = tick_count(tmp, data, admin, 2000)
    if got != 1:
        fail("pristine log: u0 should have 2000 tick events: %r" % (got,))


def used_pages(path):
    """Pages LMDB uses: last_pg + 1 of the newer meta page."""
    with open(path, "rb") as f:
        b = f.read(8192)
    metas = [(struct.unpack_from("<Q", b, i * 4096 + 144)[0],
              struct.unpack_from("<Q", b, i * 4096 + 136)[0]) for i in (0, 1)]
    return max(metas)[1] + 1


def part_mdb(tmp):
    src = os.path.join(tmp, "demo")
    must("demo", "--data", src, "--users", "20000", timeout=300)
    npages = used_pages(os.path.join(src, "data.mdb"))
    image = open(os.path.join(src, "data.mdb"), "rb").read(npages * 4096)
    expr = "age BETWEEN 25 AND 40 AND gender = \"female\""
    want_count = must("count", "--data", src, "all").stdout
    want_eval = must("eval", "--data", src, expr).stdout
    if run("check", "--data", src).returncode != 0:
        fail("check fails on the undamaged demo directory")
    rng = random.Random(int(os.environ.get("CP_DAMAGE_SEED", "7")))
    iters = 300 if LONG else 20
    budget = time.time() + (3600 if LONG else 20)
    work = os.path.join(tmp, "damaged")
    tally = {}
    done = 0
    for it in range(iters):
        if time.time() > budget:
            break
        shutil.rmtree(work, ignore_errors=True)
        os.mkdir(work)
        img = bytearray(image)
        if rng.random() < 0.5:
            pg = rng.randrange(npages)
            img[pg * 4096:(pg + 1) * 4096] = bytes(4096)
            what = "page %d zeroed" % pg
        else:
            offs = [rng.randrange(len(img)) for _ in range(rng.randint(1, 16))]
            for o in offs:
                img[o] = rng.randrange(256)
            what = "bytes at %s set at random" % offs
        with open(os.path.join(work, "data.mdb"), "wb") as f:
            f.write(img)
        runs = [("count", ["count", "--data", work, "all"], want_count),
                ("eval", ["eval", "--data", work, expr], want_eval),
                ("check", ["check", "--data", work], None)]
        for name, args, want in runs:
            p = run(*args, timeout=120)
            if p.returncode < 0:
                fail("%s: %s died by signal %d: %s" % (what, name, -p.returncode,
                                                                   p.stderr[-300:]))
                outcome = "signal"
            elif p.returncode == 0:
                outcome = "answer"
                if want is not None and p.stdout != want:
                    fail("%s: %s answered %r instead of %r"
                                    % (what, name, p.stdout[:80], want[:80]))
                    outcome = "WRONG"
            else:
                outcome = "error"
                if not p.stderr.strip():
                    fail("%s: %s failed without a message" % (what, name))
            tally[(name, outcome)] = tally.get((name, outcome), 0) + 1
        if LONG or it % 3 == 0:
            srv = Server(tmp, work, threads=2)
            bad = srv.try_start(timeout=60)
            if bad is None:
                srv.stop()
                if srv.proc.returncode < 0 and srv.proc.returncode != -signal.SIGTERM:
                    fail("%s: serve died by signal %d" % (what, -srv.proc.returncode))
                tally[("serve", "started")] = tally.get(("serve", "started"), 0) + 1
            else:
                code, err = bad
                if code < 0:
                    fail("%s: serve died by signal %d at startup" % (what, -code))
                elif not err.strip():
                    fail("%s: serve exited %d without a message" % (what, code))
                tally[("serve", "refused")] = tally.get(("serve", "refused"), 0) + 1
        done += 1
    print("%d damaged copies: %s" % (done, ", ".join("%s %s: %d" % (k[0], k[1], v)
                                                   for k, v in sorted(tally.items()))))
    if done < 5:
        fail("only %d damaged copies tried" % done)


def test():
    tmp = tempdir("cp-damage-")
    part_wal(tmp)
    part_mdb(tmp)


if __name__ == "__main__":
    main(test)
