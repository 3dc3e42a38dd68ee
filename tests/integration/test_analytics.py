#!/usr/bin/env python3
"""End-to-end test of the analytics reports (docs/analytics.md): loads a
generated population from NDJSON, serves it, and checks insight (shares and
TGI per tag, enum value and age bucket), overlap (pairs and Venn regions),
member tiers and the upgrade nudge, and clusters against values computed
here in Python from the same NDJSON; then bad input, roles, and the CLI
(table and --json, embedded and against the server).

Environment: CROWDPACK = path of the binary. Prints "N passed, M failed".
"""
import json
import math
import os
import random

from harness import Server, check, main, run, tempdir

MIN = 5  # the k-anonymity minimum set for the test


# ------------------------------------------------------------------ data

TAGS = ["interest/sports", "interest/sports/running", "interest/sports/ball",
        "interest/finance", "interest/finance/loans", "life/parent"]
LEAVES = ["interest/sports/running", "interest/sports/ball", "interest/finance/loans",
          "interest/finance", "life/parent"]
AGE_BOUNDS = [0, 18, 25, 30, 35, 40, 50, 60]


def make_users(n=4000, seed=11):
    rnd = random.Random(seed)
    users = []
    for i in range(n):
        u = {"id": "u%d" % i, "attrs": {}, "tags": []}
        for leaf, p in zip(LEAVES, [0.3, 0.2, 0.1, 0.05, 0.15]):
            if rnd.random() < p:
                u["tags"].append(leaf)
        if rnd.random() < 0.9:
            # sports fans skew young
            young = any(t.startswith("interest/sports") for t in u["tags"])
            u["attrs"]["age"] = rnd.randint(16, 35) if young and rnd.random() < 0.7 \
                else rnd.randint(10, 80)
        if rnd.random() < 0.95:
            u["attrs"]["gender"] = rnd.choice(["female", "male", "other"])
        if rnd.random() < 0.8:
            u["attrs"]["points"] = rnd.randint(0, 30000)
        u["attrs"]["vip"] = rnd.random() < 0.1
        blob = rnd.randint(0, 2)
        u["attrs"]["px"] = blob * 1000 + rnd.randint(0, 30)
        u["attrs"]["py"] = blob * 400 + rnd.randint(0, 30)
        users.append(u)
    return users


def has_tag(u, path):
    return any(t == path or t.startswith(path + "/") for t in u["tags"])


def age_label(lo_i):
    lo = AGE_BOUNDS[lo_i]
    if lo_i + 1 < len(AGE_BOUNDS):
        return "%d-%d" % (lo, AGE_BOUNDS[lo_i + 1] - 1)
    return "%d+" % lo


def cells_expected(users, crowd_pred, base_pred):
    """{(kind, key, value): (n_crowd, n_base)} for tags, gender, vip, age buckets."""
    crowd = [u for u in users if crowd_pred(u)]
    base = [u for u in users if base_pred(u)]
    exp = {}
    for t in TAGS + ["interest", "life"]:
        exp[("tag", t, None)] = (sum(has_tag(u, t) for u in crowd),
                                 sum(has_tag(u, t) for u in base))
    for g in ["female", "male", "other"]:
        f = lambda u, g=g: u["attrs"].get("gender") == g
        exp[("attribute", "gender", g)] = (sum(map(f, crowd)), sum(map(f, base)))
    for v in [True, False]:
        f = lambda u, v=v: u["attrs"].get("vip") == v
        exp[("attribute", "vip", "true" if v else "false")] = (sum(map(f, crowd)), sum(map(f, base)))
    for i, lo in enumerate(AGE_BOUNDS):
        hi = AGE_BOUNDS[i + 1] - 1 if i + 1 < len(AGE_BOUNDS) else 10 ** 9
        f = lambda u, lo=lo, hi=hi: "age" in u["attrs"] and lo <= u["attrs"]["age"] <= hi
        exp[("attribute", "age", age_label(i))] = (sum(map(f, crowd)), sum(map(f, base)))
    return exp, len(crowd), len(base)


def cell_key(c):
    if c["kind"] == "tag":
        return ("tag", c["tag"], None)
    return ("attribute", c["attribute"], c["value"])


# ---------------------------------------------------------------- server

SRV = None


def call(method, path, body=None, key=None):
    return SRV.call(method, path, body, key=key)


# ----------------------------------------------------------------- tests

def check_insight(rep, users, crowd_pred, base_pred, what):
    exp, csize, bsize = cells_expected(users, crowd_pred, base_pred)
    check(rep["crowd"]["size"] == csize, what + ": crowd size")
    check(rep["baseline"]["size"] == bsize, what + ": baseline size")
    got = {cell_key(c): c for c in rep["cells"]}
    for k, (nc, nb) in exp.items():
        c = got.get(k)
        if not check(c is not None, "%s: cell %r present" % (what, k)):
            continue
        if nc < MIN or nb < MIN:
            check(c.get("suppressed") is True and "members" not in c and "tgi" not in c,
                  "%s: %r suppressed (%d, %d)" % (what, k, nc, nb))
            continue
        cs, bs = nc / csize, nb / bsize
        tgi = cs / bs * 100
        ok = (c["members"] == nc and c["baseline_members"] == nb and
              math.isclose(c["crowd_share"], cs, rel_tol=1e-5) and
              math.isclose(c["baseline_share"], bs, rel_tol=1e-5) and
              math.isclose(c["tgi"], tgi, rel_tol=1e-5))
        check(ok, "%s: %r = %r, expected members %d/%d tgi %.4f" % (what, k, c, nc, nb, tgi))
    # top lists: over-indexed are the shown cells with TGI > 100, best first
    shown = [c for c in rep["cells"] if not c.get("suppressed") and c.get("tgi") is not None]
    best = sorted((c["tgi"] for c in shown if c["tgi"] > 100), reverse=True)
    check([c["tgi"] for c in rep["top_over"]] == best[:len(rep["top_over"])],
          what + ": top_over order")
    worst = sorted(c["tgi"] for c in shown if c["tgi"] < 100)
    check([c["tgi"] for c in rep["top_under"]] == worst[:len(rep["top_under"])],
          what + ": top_under order")


def test_insight(users):
    st, r = call("PUT", "/v1/analytics/settings", {"min_count": MIN})
    check(st == 200 and r["min_count"] == MIN, "settings put %r" % (r,))
    sports = lambda u: has_tag(u, "interest/sports")
    st, rep = call("POST", "/v1/insight", {"crowd": {"expression": "tag:interest/sports"},
                                           "top": 5})
    if check(st == 200, "insight %d %r" % (st, rep)):
        check_insight(rep, users, sports, lambda u: True, "insight vs all")
        check(len(rep["top_over"]) <= 5, "top 5")
    st, _ = call("POST", "/v1/crowds", {"name": "parents", "expression": "tag:life/parent"})
    check(st in (200, 201), "crowd create")
    st, rep = call("POST", "/v1/insight", {"crowd": {"expression": "tag:interest/sports"},
                                           "baseline": "parents"})
    if check(st == 200, "insight vs crowd %r" % (rep,)):
        check_insight(rep, users, sports, lambda u: has_tag(u, "life/parent"), "insight vs parents")
    # explicit buckets and a raised minimum
    st, rep = call("POST", "/v1/insight", {"crowd": {"expression": "tag:interest/sports"},
                                           "tags": False, "attributes": ["points"],
                                           "buckets": {"points": [10000, 20000]},
                                           "min_count": 400})
    if check(st == 200, "insight buckets %r" % (rep,)):
        check(rep["min_count"] == 400, "request raises the minimum")
        labels = {c["value"]: c for c in rep["cells"]}
        check(set(labels) == {"<10000", "10000-19999", "20000+"}, "bucket labels %r" % labels)
        for lab, lo, hi in [("<10000", -1, 9999), ("10000-19999", 10000, 19999),
                            ("20000+", 20000, 10 ** 9)]:
            nc = sum(1 for u in users if sports(u) and lo <= u["attrs"].get("points", -10) <= hi
                     and "points" in u["attrs"])
            c = labels.get(lab, {})
            if nc < 400:
                check(c.get("suppressed") is True, "bucket %s suppressed" % lab)
            else:
                check(c.get("members") == nc, "bucket %s members %r vs %d" % (lab, c, nc))
    # bad input
    st, r = call("POST", "/v1/insight", {"crowd": "nope"})
    check(st == 400 and r["error"]["code"] == "unknown_reference" and "nope" in
          r["error"]["message"], "unknown crowd %d %r" % (st, r))
    st, r = call("POST", "/v1/insight", {"crowd": "parents", "buckets": {"age": [40, 30]}})
    check(st == 400 and "ascending" in r["error"]["message"], "bad buckets %r" % (r,))
    st, r = call("POST", "/v1/insight", {"crowd": "parents", "buckets": {"gender": [1]}})
    check(st == 400, "buckets on an enum %r" % (r,))
    st, r = call("POST", "/v1/insight", {})
    check(st == 400 and "crowd" in r["error"]["message"], "missing crowd")


def test_overlap(users):
    preds = [lambda u: has_tag(u, "interest/sports"), lambda u: has_tag(u, "life/parent"),
             lambda u: u["attrs"].get("gender") == "female"]
    st, rep = call("POST", "/v1/overlap", {"crowds": [
        {"expression": "tag:interest/sports"}, "parents",
        {"expression": "gender = \"female\""}]})
    if not check(st == 200, "overlap %r" % (rep,)):
        return
    regions = [0] * 8
    for u in users:
        m = sum(1 << i for i, p in enumerate(preds) if p(u))
        regions[m] += 1
    for v in rep["venn"]:
        m = sum(1 << i for i in v["in"])
        if regions[m] < MIN:
            check(v.get("suppressed") is True, "venn %r suppressed" % v["in"])
        else:
            check(v.get("count") == regions[m], "venn %r = %r vs %d" % (v["in"], v, regions[m]))
    sizes = [sum(map(p, users)) for p in preds]
    for pr in rep["pairs"]:
        a, b = pr["a"], pr["b"]
        x = sum(1 for u in users if preds[a](u) and preds[b](u))
        check(pr["intersection"] == x and
              math.isclose(pr["jaccard"], x / (sizes[a] + sizes[b] - x), rel_tol=1e-5) and
              math.isclose(pr["a_in_b"], x / sizes[a], rel_tol=1e-5) and
              math.isclose(pr["b_in_a"], x / sizes[b], rel_tol=1e-5), "pair %r" % pr)
    check(rep["union"] == sum(regions[1:]), "union")
    st, r = call("POST", "/v1/overlap", {"crowds": ["parents"] * 11})
    check(st == 413, "11 crowds: %d %r" % (st, r))
    st, r = call("POST", "/v1/overlap", {"crowds": ["parents", "ghost"]})
    check(st == 400 and "ghost" in r["error"]["message"], "unknown crowd in overlap")


def test_tiers(users):
    st, r = call("GET", "/v1/tiers")
    check(st == 404, "no tiers yet: %d" % st)
    cfg = {"attribute": "points", "tiers": [{"name": "silver", "min": 2000},
                                            {"name": "gold", "min": 6000},
                                            {"name": "platinum", "min": 20000}]}
    st, r = call("PUT", "/v1/tiers", cfg)
    if not check(st == 200, "tiers put %r" % (r,)):
        return
    pts = [u["attrs"]["points"] for u in users if "points" in u["attrs"]]
    bounds = [2000, 6000, 20000, 10 ** 12]
    for i, t in enumerate(r["tiers"]):
        n = sum(1 for p in pts if bounds[i] <= p < bounds[i + 1])
        check(t["members"] == n, "tier %s %r vs %d" % (t["name"], t, n))
    check(r["below_first_tier"] == sum(1 for p in pts if p < 2000), "below")
    st, n = call("POST", "/v1/tiers/nudge", {"within": 2000})
    exp = sum(1 for p in pts if p < 2000 or 4000 <= p < 6000 or 18000 <= p < 20000)
    check(st == 200 and n["members"] == exp, "nudge %r vs %d" % (n, exp))
    st, c = call("POST", "/v1/crowds", {"name": "near_upgrade", "expression": n["expression"]})
    check(st in (200, 201) and c.get("size") == exp, "nudge saved as a crowd %r" % (c,))
    st, r = call("PUT", "/v1/tiers", {"attribute": "gender", "tiers": [{"name": "a", "min": 1}]})
    check(st == 400, "tiers on an enum")
    st, r = call("PUT", "/v1/tiers", {"attribute": "points", "tiers": [
        {"name": "a", "min": 5}, {"name": "b", "min": 3}]})
    check(st == 400 and "greater" in r["error"]["message"], "tiers not ascending %r" % (r,))


def test_clusters(users):
    st, r = call("POST", "/v1/clusters", {"attributes": ["px", "py"], "k": 3,
                                          "root": "cluster/blobs", "elbow": [1, 5]})
    if not check(st == 200, "clusters %r" % (r,)):
        return
    check(r["population"] == len(users) and r["excluded"] == 0, "population")
    for c in r["clusters"]:
        cx = c["centroid"]["px"]
        blob = round(cx / 1000)
        members = [u for u in users if u["attrs"]["px"] // 1000 == blob]
        check(c["size"] == len(members), "cluster %s size %d vs %d" % (c["name"], c["size"],
                                                                       len(members)))
        mx = sum(u["attrs"]["px"] for u in members) / len(members)
        check(math.isclose(cx, mx, rel_tol=1e-5), "centroid px %r vs %r" % (cx, mx))
        st, cnt = call("POST", "/v1/crowds/estimate", {"expression": "tag:" + c["tag"]})
        check(cnt.get("count") == c["size"], "stored tag %s" % c["tag"])
    el = [e["inertia"] for e in r["elbow"]]
    check(el[2] < el[0] / 20, "elbow bends at 3: %r" % el)
    st, r = call("POST", "/v1/clusters", {"attributes": ["px"], "k": 65})
    check(st == 400, "k out of range")
    st, r = call("POST", "/v1/clusters", {"attributes": ["gender"], "k": 2})
    check(st == 400, "cluster on an enum")


def test_roles(data):
    # keys make the server require them; created before it starts
    _, read, _ = run("keys", "create", "--data", data, "--role", "read")
    _, admin, _ = run("keys", "create", "--data", data, "--role", "admin")
    return read.strip(), admin.strip()


def test_roles_live(read, admin):
    st, r = call("POST", "/v1/clusters", {"attributes": ["px"], "k": 2}, key=read)
    check(st == 200 and r["stored"] is False, "read key previews clusters %d" % st)
    st, r = call("POST", "/v1/clusters", {"attributes": ["px"], "k": 2, "root": "cluster/x"},
                 key=read)
    check(st == 403, "read key cannot store clusters %d" % st)
    st, r = call("PUT", "/v1/analytics/settings", {"min_count": 1}, key=read)
    check(st == 403, "read key cannot change the minimum %d" % st)
    st, r = call("POST", "/v1/insight", {"crowd": "parents"}, key=read)
    check(st == 200, "read key insight")


def test_cli(data, users):
    url = SRV.base
    rc, out, err = run("insight", "--server", url, "parents", "--top", "3", "--key", ADMIN)
    check(rc == 0 and "TGI" in out and "Over-indexed" in out, "cli insight table: " + out + err)
    rc, out, err = run("insight", "--server", url, "parents", "--json", "--key", ADMIN)
    ok = rc == 0 and json.loads(out)["crowd"]["size"] == sum(has_tag(u, "life/parent")
                                                                for u in users)
    check(ok, "cli insight --json " + err)
    # embedded, read-only beside the running server
    rc, out, err = run("overlap", "--data", data, "parents", "tag:interest/sports", "--json")
    check(rc == 0 and len(json.loads(out)["venn"]) == 3, "cli overlap embedded " + err)
    rc, out, err = run("overlap", "--server", url, "parents", "near_upgrade", "--key", ADMIN)
    check(rc == 0 and "jaccard" in out, "cli overlap table " + out + err)
    rc, out, err = run("tiers", "show", "--server", url, "--key", ADMIN)
    check(rc == 0 and "platinum" in out, "cli tiers show " + out + err)
    rc, out, err = run("tiers", "nudge", "--server", url, "--within", "1000", "--json",
                       "--key", ADMIN)
    check(rc == 0 and "points BETWEEN 1000 AND 1999" in json.loads(out)["expression"],
          "cli nudge " + out + err)
    rc, out, err = run("cluster", "--server", url, "--attrs", "px,py", "--elbow", "1-4",
                       "--key", ADMIN)
    check(rc == 0 and "Elbow" in out, "cli cluster elbow " + out + err)
    rc, out, err = run("insight", "--data", data, "ghost")
    check(rc == 1 and "ghost" in err, "cli unknown crowd " + err)
    rc, out, err = run("overlap", "--data", data, "a")
    check(rc == 2, "cli overlap needs two sets")


ADMIN = None


def test():
    global SRV, ADMIN
    tmp = tempdir("cp-analytics-")
    data = os.path.join(tmp, "data")
    users = make_users()
    schema = {"attributes": [{"name": "age", "type": "int"},
                             {"name": "gender", "type": "enum"},
                             {"name": "points", "type": "int"},
                             {"name": "vip", "type": "bool"},
                             {"name": "px", "type": "int"}, {"name": "py", "type": "int"}]}
    tax = {"tags": [{"path": t} for t in TAGS]}
    for name, doc in [("schema.json", schema), ("tax.json", tax)]:
        with open(os.path.join(tmp, name), "w") as f:
            json.dump(doc, f)
    with open(os.path.join(tmp, "users.ndjson"), "w") as f:
        for u in users:
            f.write(json.dumps(u) + "\n")
    rc, out, err = run("init", "--data", data, "--schema", os.path.join(tmp, "schema.json"),
                       "--taxonomy", os.path.join(tmp, "tax.json"))
    check(rc == 0, "init " + err)
    rc, out, err = run("load", "--data", data, os.path.join(tmp, "users.ndjson"))
    check(rc == 0, "load " + err)
    SRV = Server(tmp, data, threads=2)
    SRV.start()
    try:
        test_insight(users)
        test_overlap(users)
        test_tiers(users)
        test_clusters(users)
    finally:
        SRV.stop()
    read, ADMIN = test_roles(data)
    SRV.start()
    try:
        test_roles_live(read, ADMIN)
        test_cli(data, users)
    finally:
        SRV.stop()


if __name__ == "__main__":
    main(test)
