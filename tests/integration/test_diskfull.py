#!/usr/bin/env python3
"""A full disk is an error answer, never a crash (DESIGN.md section 8,
docs/operations.md "Full disk").

On a 64 MiB tmpfs (needs root to mount; skipped with a message otherwise)
the real server takes identify batches with 30 KB traits until the disk is
full. Every answer must be 200 or 507 (code storage_full, naming the path and
the free space), the server must stay alive, /healthz must stop saying ok,
reads must keep working; after space is freed, writes must succeed again
by themselves; and a restart on the still-full disk must open and serve
reads (replay included), with every acknowledged user there.
Exits 0 when every check passes (or when skipped).
"""
import base64
import http.client
import json
import os
import random
import subprocess
import time

import harness
from harness import Server, check, main, must, skip, tempdir

TRAIT_BYTES = 30000
MAX_BATCHES = 4000


class Died(Exception):
    pass


class DiskServer(Server):
    """A server whose lost answers raise Died, saying whether it still runs."""

    def call(self, method, path, body=None):
        try:
            return Server.call(self, method, path, body, timeout=60)
        except (OSError, http.client.HTTPException) as e:
            time.sleep(0.5)
            raise Died("%s %s: %s; the server %s" % (
                method, path, e, "is alive" if self.proc.poll() is None else
                "exited with %d" % self.proc.returncode))


def blob(rng):
    return base64.b64encode(rng.randbytes(TRAIT_BYTES * 3 // 4)).decode()


def fill(srv, rng, start, acked):
    """Posts batches until a 507; returns the next batch number."""
    i = start
    while i < start + MAX_BATCHES:
        st, body = srv.call("POST", "/v1/batch", {"batch": [
            {"type": "identify", "userId": "u%d" % i, "messageId": "m%d" % i,
             "traits": {"note": blob(rng), "k": i}}]})
        if st == 200:
            acked.add(i)
            i += 1
            continue
        check(st == 507, "batch %d answered %d (expected 200 or 507): %s" % (i, st, body))
        if st == 507:
            err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            msg = err.get("message", "")
            check(err.get("code") == "storage_full", "507 code is %r" % err.get("code"))
            check(srv.data in msg and "free" in msg,
                  "507 message names the path and the free space: %r" % msg)
            print("  disk full after %d batches: %s" % (i - start, msg))
        return i + 1
    check(False, "the disk never filled in %d batches" % MAX_BATCHES)
    return i


def health(srv):
    st, body = srv.call("GET", "/healthz")
    wired = isinstance(body, dict) and set(body) != {"status"}
    return st, body, wired


def test():
    if os.geteuid() != 0:
        skip("test_diskfull: mounting a small tmpfs needs root (run as root to test a full "
             "disk)")
    rng = random.Random(int(os.environ.get("CP_DISKFULL_SEED", "1")))
    tmp = tempdir("cp-diskfull-", keep_on_failure=True)
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt],
                       capture_output=True, text=True)
    if p.returncode != 0:
        skip("test_diskfull: cannot mount a tmpfs: %s" % p.stderr.strip())
    srv = None
    try:
        data = os.path.join(mnt, "data")
        must("init", "--data", data)
        must("attrs", "define", "--data", data, "k", "int")
        # 40 MiB stay taken (a shorter fill), 8 MiB are freed later.
        with open(os.path.join(mnt, "ballast"), "wb") as f:
            f.write(b"\1" * (40 << 20))
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\1" * (8 << 20))
        srv = DiskServer(tmp, data, threads=4)
        srv.start()
        acked = set()

        print("test_diskfull: filling a 64 MiB tmpfs with 30 KB traits")
        nxt = fill(srv, rng, 0, acked)
        for j in range(3):  # still full: still clean refusals
            st, body = srv.call("POST", "/v1/identify", {"userId": "x%d" % j,
                                                         "traits": {"note": blob(rng)}})
            check(st == 507, "a write on the full disk answered %d: %s" % (st, body))
        check(srv.proc.poll() is None, "the server is alive on the full disk")
        st, body, wired = health(srv)
        if wired:
            check(st != 200 or body.get("status") != "ok",
                  "/healthz on the full disk answered %d %s" % (st, body))
        else:
            print("  note: this build's /healthz does not report health yet (%d %s)"
                  % (st, body))
        some = sorted(acked)[len(acked) // 2]
        st, body = srv.call("GET", "/v1/users/user_id/u%d" % some)
        check(st == 200, "a read on the full disk answered %d: %s" % (st, body))
        st, body = srv.call("POST", "/v1/crowds/estimate", {"expression": "k >= 0"})
        check(st == 200 and body.get("count") == len(acked),
              "count on the full disk: %d %s (acknowledged %d)" % (st, body, len(acked)))

        print("test_diskfull: freeing 8 MiB")
        os.unlink(filler)
        st, body = srv.call("POST", "/v1/batch", {"batch": [
            {"type": "identify", "userId": "u%d" % nxt, "messageId": "m%d" % nxt,
             "traits": {"note": blob(rng), "k": nxt}}]})
        check(st == 200, "a write after space returned answered %d: %s" % (st, body))
        if st == 200:
            acked.add(nxt)
        nxt += 1
        st, body, wired = health(srv)
        if wired:
            check(st == 200, "/healthz after space returned: %d %s" % (st, body))

        print("test_diskfull: filling again, then restarting on the full disk")
        nxt = fill(srv, rng, nxt, acked)
        # kill -9 on the full disk: the restart replays the log's tail.
        check(srv.proc.poll() is None, "the server is alive on the full disk again")
        srv.kill9()
        try:
            srv.start()
        except RuntimeError as e:
            check(False, "restart on the full disk: %s" % e)
        else:
            st, body = srv.call("POST", "/v1/crowds/estimate", {"expression": "k >= 0"})
            check(st == 200 and body.get("count") == len(acked),
                  "count after the restart on the full disk: %d %s (acknowledged %d)"
                  % (st, body, len(acked)))
            st, body = srv.call("GET", "/v1/users/user_id/u%d" % max(acked))
            check(st == 200, "a read after the restart answered %d: %s" % (st, body))
            st, body = srv.call("POST", "/v1/identify", {"userId": "y", "traits": {
                "note": blob(rng)}})
            check(st in (200, 507), "a write after the restart answered %d: %s" % (st, body))
            rc = srv.stop()
            check(rc == 0, "the restarted server stopped with exit %s" % rc)
        # stats reports allocated bytes (no 64 GiB sparse length).
        stats = json.loads(must("stats", "--data", data, "--json").stdout)
        size = os.stat(os.path.join(data, "data.mdb"))
        check(0 < stats["disk_bytes"] <= 64 << 20 and size.st_size <= 64 << 20,
              "data.mdb: stats disk_bytes %d, length %d on a 64 MiB disk"
              % (stats["disk_bytes"], size.st_size))
        st = os.statvfs(mnt)
        print("test_diskfull: %d batches acknowledged; %d bytes free at the end"
              % (len(acked), st.f_bavail * st.f_frsize))
    except Died as e:
        check(False, "no answer: %s" % e)
    finally:
        if srv:
            srv.stop()
        subprocess.run(["umount", mnt], capture_output=True)
        if harness.failed():
            print("test_diskfull: FAILED (%d checks; server log %s)"
                  % (harness.failed(), srv.errpath if srv else ""))
    if not harness.failed():
        print("test_diskfull: ok")


if __name__ == "__main__":
    main(test)
