#!/usr/bin/env python3
"""Backups while the server runs (issue 10 item 4, docs/operations.md "Backups").

Seeds a data directory through the server (users with tags and int, string
and enum attributes, Segment events with merges, static and dynamic crowds,
a deletion), then backs it up with `crowdpack backup` while a writer thread
keeps sending acknowledged events, restores the backup into a new directory
with `crowdpack restore`, serves it and compares every answer with the
source: counts of tags, attribute values and crowds, user lookups, crowd
sizes and members. The writes made during the backup must come back as a
prefix of what the writer sent that holds every write acknowledged before
the backup began. Also: restore refuses a non-empty target without --force
and a target a server has open.
"""
import os
import random
import threading
import time

from harness import Server, check, main, must, run, tempdir

TAGS = ["interest/finance", "interest/finance/loans", "interest/sports", "life/pets", "county/new"]
CITIES = ["shanghai", "北京", "guangzhou", "chengdu"]
LEVELS = ["gold", "silver", "bronze"]


def seed(srv, rnd):
    users = []
    for i in range(400):
        u = {"id": "u%03d" % i, "attrs": {"age": rnd.randint(18, 70),
                                          "city": rnd.choice(CITIES),
                                          "level": rnd.choice(LEVELS)},
             "tags": rnd.sample(TAGS, rnd.randint(0, 3))}
        users.append(u)
    st, b = srv.call("POST", "/v1/users", {"users": users})
    check(st == 200, "load users: %d %r" % (st, b))
    for i in range(60):
        st, b = srv.call("POST", "/v1/identify",
                         {"userId": "e%02d" % i, "anonymousId": "anon-%02d" % (i // 2),
                          "traits": {"age": 20 + i, "city": rnd.choice(CITIES)}})
        check(st == 200, "identify: %d %r" % (st, b))
        st, b = srv.call("POST", "/v1/track",
                         {"userId": "e%02d" % i, "event": "purchase",
                          "properties": {"sku": "s%d" % (i % 5)}})
        check(st == 200, "track: %d %r" % (st, b))
    crowds = [("fin", "tag:interest/finance", "static"),
              ("young_sh", "age < 35 AND city = \"shanghai\"", "dynamic"),
              ("gold_pets", "level = \"gold\" OR tag:life/pets", "dynamic"),
              ("both", "crowd:fin AND crowd:gold_pets", "dynamic"),
              ("buyers", "did(purchase) >= 1", "dynamic")]
    for name, expr, kind in crowds:
        st, b = srv.call("POST", "/v1/crowds", {"name": name, "expression": expr, "kind": kind})
        check(st in (200, 201), "crowd %s: %d %r" % (name, st, b))
    st, b = srv.call("DELETE", "/v1/users/user_id/e07")
    check(st == 200, "delete: %d %r" % (st, b))
    return [c[0] for c in crowds]


def expressions():
    ex = ["all", "did(purchase) >= 1", "age >= 40", "age BETWEEN 20 AND 30"]
    ex += ["tag:%s" % t for t in TAGS]
    ex += ["city = \"%s\"" % c for c in CITIES]
    ex += ["level = \"%s\"" % lv for lv in LEVELS]
    return ex


def answers(srv, crowds):
    """Everything compared between source and restore (writer users excluded)."""
    out = {}
    for e in expressions():
        st, b = srv.call("POST", "/v1/count", {"expression": e + " AND NOT w >= 0"})
        out["count " + e] = (st, b.get("count") if isinstance(b, dict) else b)
    st, b = srv.call("GET", "/v1/crowds")
    for c in (b or {}).get("crowds", []):
        out["crowd " + c["name"]] = (c["kind"], c["expression"], c["size"])
    for name in crowds:
        r = srv.call("GET", "/v1/crowds/%s/export?format=csv" % name)
        st = r.status
        ids = sorted(x for x in r.raw.decode().split("\n")[1:] if x)
        out["members " + name] = (st, ids)
    for uid in ["u%03d" % i for i in range(0, 400, 37)] + ["e05", "e07", "e12"]:
        st, b = srv.call("GET", "/v1/users/" + uid)
        if isinstance(b, dict):
            b.pop("ordinal", None)
        out["user " + uid] = (st, b)
    st, b = srv.call("GET", "/v1/users/anonymous_id/anon-06")
    if isinstance(b, dict):
        b = {k: b[k] for k in ("identifiers",) if k in b}
    out["whois anon-06"] = (st, b)
    return out


def test():
    tmp = tempdir("cp-backup-", keep_on_failure=True)
    rnd = random.Random(20240601)
    src, bak, dst = (os.path.join(tmp, n) for n in ("src", "bak", "dst"))
    srv = Server(tmp, src, name="src")
    writer_stop = threading.Event()
    acked = []
    try:
        must("init", "--data", src)
        for name, typ in (("age", "int"), ("city", "string"), ("level", "enum"), ("w", "int")):
            must("attrs", "define", "--data", src, name, typ)
        for t in TAGS:
            must("tags", "create", "--data", src, t, *(["--name", "县城新客"] if "county" in t else []))
        srv.start()
        crowds = seed(srv, rnd)
        before = answers(srv, crowds)

        # A writer keeps sending while the backup runs: w<seq> users.
        def writer():
            seq = 0
            while not writer_stop.is_set():
                st, _ = srv.call("POST", "/v1/identify",
                                 {"userId": "w%05d" % seq, "traits": {"w": seq}})
                if st == 200:
                    acked.append((seq, time.time()))
                seq += 1
        th = threading.Thread(target=writer)
        th.start()
        time.sleep(0.3)
        t_start = time.time()
        p = run("backup", "--data", src, bak, "--json")
        writer_stop.set()
        th.join()
        check(p.returncode == 0, "backup while serving: %r" % p.stderr)
        acked_before = [s for s, t in acked if t < t_start]
        check(len(acked_before) > 0, "the writer was acknowledged before the backup")

        # Refusals.
        os.makedirs(dst)
        open(os.path.join(dst, "note.txt"), "w").write("x")
        p = run("restore", bak, "--data", dst)
        check(p.returncode != 0 and "not empty" in p.stderr, "non-empty target: %r" % p.stderr)
        p = run("restore", bak, "--data", src, "--force")
        check(p.returncode != 0 and "another process" in p.stderr,
              "target a server has open: %r" % p.stderr)
        os.unlink(os.path.join(dst, "note.txt"))

        p = run("restore", bak, "--data", dst)
        check(p.returncode == 0, "restore: %r" % p.stderr)
        rs = Server(tmp, dst, name="dst")
        rs.start()
        try:
            after = answers(rs, crowds)
            # The writer's users: a prefix holding every acknowledged one.
            st, b = rs.call("POST", "/v1/count", {"expression": "w >= 0"})
            n = b.get("count") if isinstance(b, dict) else -1
            st2, b2 = rs.call("POST", "/v1/count", {"expression": "w >= 0 AND w < %d" % n})
            check(n >= len(acked_before), "restored %d writer users, %d acknowledged before"
                  % (n, len(acked_before)))
            check(b2.get("count") == n, "restored writer users are a prefix")
        finally:
            rs.stop()
        for k in before:
            check(before[k] == after.get(k), "%s: source %r, restored %r"
                  % (k, before[k], after.get(k)))
        check(len(before) > 30, "compared %d answers" % len(before))
        # --force replaces a stopped data directory.
        p = run("restore", bak, "--data", dst, "--force")
        check(p.returncode == 0, "restore --force: %r" % p.stderr)

        # A backup of a quiet directory, every logged record already in
        # data.mdb (a checkpoint ran): the copied log holds nothing newer,
        # and the restored directory must still open (an empty log next to
        # a data.mdb that applied records would look deleted).
        writer_stop.set()
        time.sleep(3)  # past the checkpoint interval
        quiet = os.path.join(tmp, "bak-quiet")
        p = run("backup", "--data", src, quiet)
        check(p.returncode == 0, "quiet backup: %r" % p.stderr)
        dst2 = os.path.join(tmp, "dst-quiet")
        p = run("restore", quiet, "--data", dst2)
        check(p.returncode == 0, "quiet restore: %r" % p.stderr)
        p = run("count", "--data", dst2, "all")
        check(p.returncode == 0 and p.stdout.strip() != "",
              "the restored quiet backup opens: %r %r" % (p.stdout, p.stderr))
        rs2 = Server(tmp, dst2, name="dst2")
        rs2.start()
        rs2.stop()
    finally:
        writer_stop.set()
        srv.stop()


if __name__ == "__main__":
    main(test)
