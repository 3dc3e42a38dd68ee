#!/usr/bin/env python3
"""kill -9 test of event intake (issue 3, DESIGN.md section 8).

A sender posts Segment batches to the real server (Basic auth with a write
key, as SDKs do) from two threads and records which were acknowledged. The
test SIGKILLs the server at random moments, restarts it on the same data
directory, re-sends every batch that was not acknowledged (same messageIds:
a retry, as an SDK would), and at the end checks, per user, that the number
of events the behaviour index holds equals the number of distinct events
sent: every acknowledged event is present exactly once, and retries of
maybe-applied batches add nothing.

CP_KILL9_CYCLES (default 3) sets the number of kill/restart cycles; the long
run is CP_KILL9_CYCLES=300. Exits 0 when every check passes.
"""
import os
import random
import threading
import time

import harness
from harness import Server, basic, fail, main, request, tempdir

CYCLES = int(os.environ.get("CP_KILL9_CYCLES", "3"))
USERS = 12
DAY = "2024-06-01"


def run(*args):
    return harness.must(*args).stdout


def post(port, auth, path, body, timeout=10):
    return request(port, "POST", path, body, auth=auth, timeout=timeout)


def test():
    tmp = tempdir("cp-kill9-", keep_on_failure=True)
    data = os.path.join(tmp, "data")
    run("init", "--data", data)
    run("attrs", "define", "--data", data, "k", "int")
    key = run("keys", "create", "--data", data, "--role", "write").strip().split()[-1]
    admin = run("keys", "create", "--data", data, "--role", "admin").strip().split()[-1]
    auth = basic(key)
    aauth = basic(admin)
    srv = Server(tmp, data, threads=4)
    srv.start()
    # Users carry an attribute k so each one can be counted on its own.
    for k in range(USERS):
        st, body = post(srv.port, auth, "/v1/identify",
                        {"userId": "u%d" % k, "traits": {"k": k},
                         "messageId": "id-%d" % k, "timestamp": DAY + "T00:00:00Z"})
        assert st == 200, body
    sent = {}        # batch id -> (events per user)
    acked = set()
    pending = {}     # batch id -> body (sent, not acknowledged)
    lock = threading.Lock()
    rng = random.Random(int(os.environ.get("CP_KILL9_SEED", "9")))
    counter = [0]

    def make_batch():
        with lock:
            counter[0] += 1
            bid = counter[0]
        per = [0] * USERS
        events = []
        for i in range(rng.randint(1, 40)):
            k = rng.randrange(USERS)
            per[k] += 1
            events.append({"type": "track", "userId": "u%d" % k, "event": "tick",
                           "messageId": "b%d-e%d" % (bid, i),
                           "timestamp": DAY + "T12:00:00Z"})
        return bid, {"batch": events}, per

    def sender(port, stop):
        while not stop.is_set():
            bid, body, per = make_batch()
            with lock:
                sent[bid] = per
                pending[bid] = body
            try:
                st, _ = post(port, auth, "/v1/batch", body, timeout=5)
            except Exception:  # noqa: BLE001 - the server was killed
                return
            if st == 200:
                with lock:
                    acked.add(bid)
                    pending.pop(bid, None)
                    # now and then a retry of something acknowledged
                if rng.random() < 0.05:
                    try:
                        post(port, auth, "/v1/batch", body, timeout=5)
                    except Exception:  # noqa: BLE001
                        return
            else:
                fail("batch %d: HTTP %d" % (bid, st))
                return

    for cycle in range(CYCLES):
        stop = threading.Event()
        threads = [threading.Thread(target=sender, args=(srv.port, stop)) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.05, 1.0))
        srv.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        srv.start()
        # Retry what was not acknowledged (it may or may not be applied).
        with lock:
            retry = list(pending.items())
        for bid, body in retry:
            st, b = post(srv.port, auth, "/v1/batch", body)
            if st != 200:
                fail("retry of batch %d: HTTP %d %s" % (bid, st, str(b)[:200]))
                continue
            with lock:
                acked.add(bid)
                pending.pop(bid, None)
        if CYCLES >= 20 and cycle % 20 == 0:
            print("cycle %d: %d batches acknowledged" % (cycle, len(acked)), flush=True)
    expect = [0] * USERS
    for bid in acked:
        for k in range(USERS):
            expect[k] += sent[bid][k]
    for k in range(USERS):
        st, body = post(srv.port, aauth, "/v1/count",
                        {"expression": "k = %d AND did(tick) = %d" % (k, expect[k]),
                         "as_of": DAY})
        got = body.get("count") if st == 200 else None
        if got != 1:
            st2, body2 = post(srv.port, aauth, "/v1/count",
                              {"expression": "k = %d AND did(tick) > %d" % (k, expect[k]),
                               "as_of": DAY})
            fail("user u%d: expected exactly %d tick events (count %r; more: %s)"
                            % (k, expect[k], got, body2))
    srv.stop()
    print("%d cycles, %d batches acknowledged, %d events" %
          (CYCLES, len(acked), sum(expect)))
    if not harness.failed():
        print("kill -9 test passed")


if __name__ == "__main__":
    main(test)
