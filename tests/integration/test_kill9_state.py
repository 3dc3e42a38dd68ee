#!/usr/bin/env python3
"""kill -9 test of the durable state beside events: groups and their traits,
value aliases, crowd schedules, crowd refreshes and their history.

One sender applies a random sequence of such writes to the real server, one
at a time, and records each acknowledged one. The test SIGKILLs the server
at random moments, restarts it on the same data directory, re-sends the
write that was in flight (as a client retries), and at the end checks that
the server holds exactly the state the sequence of writes defines:

- `group:G` counts the users ever grouped into G; `group.plan = "P"` the
  members of the groups whose last `plan` trait is P;
- the `city` attribute lists exactly the aliases set;
- every crowd created has its schedule, its version is at least the last
  acknowledged refresh's, and its history has a point for that version;
- `crowdpack check` passes on the data directory after every kill.

CP_KILL9_CYCLES (default 4) sets the number of kill/restart cycles.
"""
import os
import random
import subprocess
import threading
import time

import harness
from harness import CP, Server, basic, check, fail, main, request, tempdir

CYCLES = int(os.environ.get("CP_KILL9_CYCLES", "4"))
USERS = 16
GROUPS = 5
CITIES = ["guangzhou", "shenzhen", "beijing", "shanghai"]
DAY = "2024-06-01"


def call(port, auth, method, path, body=None, timeout=10):
    r = request(port, method, path, body, auth=auth, timeout=timeout)
    return r.status, r.body


class Model:
    """The state the acknowledged (and retried) writes define."""

    def __init__(self):
        self.members = {g: set() for g in range(GROUPS)}
        self.plan = {}            # group -> last plan sent
        self.aliases = {}         # alias -> city
        self.crowds = {}          # name -> last acknowledged version (0 = created)


def make_op(rng, n, model):
    """One write: (label, method, path, body, apply(model, answer))."""
    kind = rng.choice(["group", "group", "alias", "crowd", "refresh"])
    if kind == "refresh" and not model.crowds:
        kind = "crowd"
    if kind == "group":
        u, g, p = rng.randrange(USERS), rng.randrange(GROUPS), "p%d" % rng.randrange(3)
        body = {"batch": [{"type": "group", "userId": "u%d" % u, "groupId": "g%d" % g,
                           "traits": {"plan": p}, "messageId": "op-%d" % n,
                           "timestamp": DAY + "T12:00:00Z"}]}

        def apply(m, ans, u=u, g=g, p=p):
            m.members[g].add(u)
            m.plan[g] = p
        return "group", "POST", "/v1/batch", body, apply
    if kind == "alias":
        alias, city = "城%d" % rng.randrange(6), rng.choice(CITIES)
        body = {"aliases": {alias: city}}

        def apply(m, ans, alias=alias, city=city):
            m.aliases[alias] = city
        return "alias", "PUT", "/v1/attributes/city/aliases", body, apply
    if kind == "crowd":
        name = "c%d" % n
        body = {"name": name, "expression": 'city = "%s"' % rng.choice(CITIES),
                "refresh": "daily 02:00", "timezone": "Asia/Shanghai",
                "expire_after_days": 30}

        def apply(m, ans, name=name):
            m.crowds.setdefault(name, 0)
        return "crowd", "POST", "/v1/crowds", body, apply
    name = rng.choice(sorted(model.crowds))

    def apply(m, ans, name=name):
        m.crowds[name] = max(m.crowds[name], ans.get("version", 0))
    return "refresh", "POST", "/v1/crowds/%s/refresh" % name, None, apply


def ok_status(label, st):
    # A retried crowd creation may find the crowd made by the first attempt.
    return st == 200 or st == 201 or (label == "crowd" and st == 409)


def test():
    tmp = tempdir("cp-kill9-state-", keep_on_failure=True)
    data = os.path.join(tmp, "data")
    failures = []
    harness.must("init", "--data", data)
    harness.must("attrs", "define", "--data", data, "city", "enum")
    admin = harness.must("keys", "create", "--data", data, "--role",
                         "admin").stdout.strip().split()[-1]
    auth = basic(admin)
    srv = Server(tmp, data)
    srv.start()
    # Every user has a city, so the aliases have values to stand for.
    batch = [{"type": "identify", "userId": "u%d" % u,
              "traits": {"city": CITIES[u % len(CITIES)]}, "messageId": "id-%d" % u,
              "timestamp": DAY + "T00:00:00Z"} for u in range(USERS)]
    st, ans = call(srv.port, auth, "POST", "/v1/batch", {"batch": batch})
    assert st == 200, ans
    model = Model()
    rng = random.Random(int(os.environ.get("CP_KILL9_SEED", "11")))
    counter = [0]
    inflight = [None]
    acked = [0]

    def sender(port, stop):
        while not stop.is_set():
            counter[0] += 1
            op = make_op(rng, counter[0], model)
            inflight[0] = op
            label, method, path, body, apply = op
            try:
                st, ans = call(port, auth, method, path, body, timeout=5)
            except Exception:  # noqa: BLE001 - the server was killed
                return
            if not ok_status(label, st):
                failures.append("%s %s: HTTP %d %r" % (method, path, st, ans))
                return
            apply(model, ans if isinstance(ans, dict) else {})
            inflight[0] = None
            acked[0] += 1

    for cycle in range(CYCLES):
        stop = threading.Event()
        t = threading.Thread(target=sender, args=(srv.port, stop))
        t.start()
        time.sleep(rng.uniform(0.1, 0.8))
        srv.kill9()
        stop.set()
        t.join(timeout=30)
        chk = subprocess.run([CP, "check", "--data", data], capture_output=True,
                               text=True, timeout=120)
        if chk.returncode != 0:
            failures.append("cycle %d: crowdpack check failed: %s%s"
                            % (cycle, chk.stdout[-400:], chk.stderr[-400:]))
        srv.start()
        if inflight[0] is not None:  # the client's retry of the unanswered write
            label, method, path, body, apply = inflight[0]
            st, ans = call(srv.port, auth, method, path, body)
            if not ok_status(label, st):
                failures.append("retry %s %s: HTTP %d %r" % (method, path, st, ans))
            else:
                apply(model, ans if isinstance(ans, dict) else {})
                acked[0] += 1
            inflight[0] = None

    def count(expr):
        st, ans = call(srv.port, auth, "POST", "/v1/count", {"expression": expr})
        return ans.get("count") if st == 200 else (st, ans)

    for g in range(GROUPS):
        if not model.members[g]:
            continue
        got = count("group:g%d" % g)
        if got != len(model.members[g]):
            failures.append("group:g%d counts %r, expected %d"
                            % (g, got, len(model.members[g])))
    for p in ("p0", "p1", "p2"):
        want = set()
        for g, plan in model.plan.items():
            if plan == p:
                want |= model.members[g]
        if not want:
            continue
        got = count('group.plan = "%s"' % p)
        if got != len(want):
            failures.append('group.plan = "%s" counts %r, expected %d' % (p, got, len(want)))
    st, ans = call(srv.port, auth, "GET", "/v1/attributes/city/values")
    have = {a["alias"]: a["value"] for a in (ans or {}).get("aliases", [])}
    if have != model.aliases:
        failures.append("aliases %r, expected %r" % (have, model.aliases))
    for name, version in sorted(model.crowds.items()):
        st, c = call(srv.port, auth, "GET", "/v1/crowds/" + name)
        if st != 200:
            failures.append("crowd %s: HTTP %d %r" % (name, st, c))
            continue
        if c.get("refresh") != "daily 02:00" or c.get("timezone") != "Asia/Shanghai" \
                or c.get("expire_after_days") != 30:
            failures.append("crowd %s lost its schedule: %r" % (name, c))
        if c.get("version", 0) < version:
            failures.append("crowd %s: version %r, a refresh to %d was acknowledged"
                            % (name, c.get("version"), version))
        st, h = call(srv.port, auth, "GET", "/v1/crowds/%s/history" % name)
        versions = {p.get("version") for p in (h or {}).get("points", [])}
        if version and version not in versions:
            failures.append("crowd %s: history %r lacks acknowledged version %d"
                            % (name, sorted(versions), version))
    srv.stop()
    print("%d cycles, %d writes acknowledged (%d groups, %d aliases, %d crowds)"
          % (CYCLES, acked[0], sum(1 for g in model.members.values() if g),
             len(model.aliases), len(model.crowds)))
    for f in failures:
        fail(f)
    check(not failures, "every acknowledged write survived %d kills" % CYCLES)


if __name__ == "__main__":
    main(test)
