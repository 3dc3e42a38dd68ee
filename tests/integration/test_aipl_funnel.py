#!/usr/bin/env python3
"""AIPL stages and funnels (docs/analytics.md "AIPL", "Funnels") against
naive per-user computations over generated events.

Users (with gender, age, is_member and tags seg/a|b|c) are loaded first;
Segment track events are then sent through the HTTP API (/v1/batch, write
key) over 30 days of March 2024, with brand and campaign properties
(indexed). Checked against Python computed from the same events:
 - funnels: users reaching each step in order (day granularity: days
   d1 <= d2 <= ... within the window, greedy earliest), conversions,
   filters, a crowd restriction, breakdowns by an enum, int buckets and a
   tag subtree, min-count suppression, stored step tags used in a crowd
   expression;
 - AIPL: each user's highest stage under brand-filtered rules with a
   repeat-purchase and membership loyalty rule, the exclusive tags, events
   never sent reported, a preview storing nothing, a re-run moving users;
 - roles (read keys preview only), bad requests, and the CLI (table and
   --json) embedded;
 - the server's scheduler running a due RFM schedule.

Environment: CROWDPACK = path of the binary. Prints "N passed, M failed".
"""
import datetime
import json
import os
import random
import time

import harness
from harness import Server, basic, check, main, tempdir

DAY0 = datetime.date(2024, 3, 1)
NDAYS = 30
NUSERS = 800
STAGES = ["awareness", "interest", "purchase", "loyalty"]


def run(*args):
    return harness.run(*args, timeout=300)


# ------------------------------------------------------------------ data

def make(seed=5):
    rnd = random.Random(seed)
    users, events = [], []
    for i in range(NUSERS):
        u = {"id": "u%d" % i, "attrs": {"gender": rnd.choice(["female", "male"]),
                                        "is_member": rnd.random() < 0.08},
             "tags": [rnd.choice(["seg/a", "seg/b", "seg/c"])]}
        if rnd.random() < 0.9:
            u["attrs"]["age"] = rnd.randint(16, 60)
        users.append(u)
    funnel = ["exposure", "click", "activation", "registration", "payment"]
    for i in range(NUSERS):
        uid = "u%d" % i
        # funnel-ish journeys: each step with some probability, days mostly increasing,
        # sometimes out of order or outside the window
        day = rnd.randint(-3, NDAYS - 1)
        for k, ev in enumerate(funnel):
            if rnd.random() > 0.75:
                if rnd.random() < 0.5:
                    break
                continue
            day = day + rnd.choice([0, 0, 1, 2, 3, -2])
            props = {}
            if ev == "click":
                props["campaign"] = rnd.choice(["spring", "summer"])
            events.append((uid, ev, day, props))
        # brand journeys for AIPL
        for _ in range(rnd.randint(0, 6)):
            ev = rnd.choice(["page", "exposure", "click", "add_to_cart", "purchase", "purchase"])
            brand = rnd.choice(["acme", "acme", "other"])
            events.append((uid, ev, rnd.randint(-5, NDAYS + 2), {"brand": brand}))
    return users, events


def day_str(d):
    return (DAY0 + datetime.timedelta(days=d)).isoformat()


def naive_funnel(events, steps, d0, d1, users=None):
    """steps: [(event, {filters})]; returns users reaching each step, per user set."""
    by_user = {}
    for uid, ev, d, props in events:
        by_user.setdefault(uid, []).append((ev, d, props))
    reached = [set() for _ in steps]
    for uid, evs in by_user.items():
        if users is not None and uid not in users:
            continue
        cur = d0
        for k, (sev, filt) in enumerate(steps):
            days = [d for ev, d, p in evs if ev == sev and cur <= d <= d1 and
                    all(str(p.get(a)) == str(v) for a, v in filt.items())]
            if not days:
                break
            cur = min(days)
            reached[k].add(uid)
    return reached


def naive_aipl(users, events, rules, d0, d1):
    st = rules["stages"]
    brand = rules.get("filters", {}).get("brand")
    reach = {s: set() for s in STAGES}
    counts = {}
    for uid, ev, d, props in events:
        if not (d0 <= d <= d1) or (brand and props.get("brand") != brand):
            continue
        for s in ("awareness", "interest", "purchase"):
            if ev in st.get(s, []):
                reach[s].add(uid)
        if ev in st["purchase"]:
            counts[uid] = counts.get(uid, 0) + 1
    rep = st["loyalty"]["repeat_purchases"]
    reach["loyalty"] = {u for u, c in counts.items() if c >= rep}
    attr = st["loyalty"].get("or_attribute")
    if attr:
        # With a brand filter, a member is loyal only after buying the brand.
        members = {u["id"] for u in users if u["attrs"].get(attr)}
        reach["loyalty"] |= (members & set(counts)) if brand else members
    cur = {}
    for s in STAGES:  # later (higher) stages overwrite
        for u in reach[s]:
            cur[u] = s
    return reach, cur


# ----------------------------------------------------------------- tests

def test():
    tmp = tempdir("cp-aipl-")
    data = os.path.join(tmp, "data")
    users, events = make()
    schema = {"attributes": [{"name": "age", "type": "int"},
                             {"name": "gender", "type": "enum"},
                             {"name": "is_member", "type": "bool"}]}
    tax = {"tags": [{"path": p} for p in ("seg/a", "seg/b", "seg/c")]}
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
    keys = {}
    for role in ("write", "read", "admin"):
        rc, out, err = run("keys", "create", "--data", data, "--role", role)
        keys[role] = basic(out.strip())
    W, R, A = keys["write"], keys["read"], keys["admin"]
    rc, out, err = run("rfm", "--data", data, "--schedule", "1")
    check(rc == 0, "RFM schedule: " + err)
    srv = Server(tmp, data)
    srv.start()
    # the server's scheduler runs the due RFM about a second after the start
    deadline, sched = time.time() + 15, {}
    while time.time() < deadline and "last_run" not in sched:
        time.sleep(0.2)
        st, sched = srv.call("GET", "/v1/rfm/schedule", None, auth=R)
    check(sched.get("every_hours") == 1 and "last_run" in sched,
          "scheduled RFM ran in the server: %r" % sched)
    st, b = srv.call("PUT", "/v1/intake/config",
                     {"indexed_properties": ["campaign", "brand"]}, auth=A)
    check(st == 200, "intake config %r" % b)
    st, b = srv.call("PUT", "/v1/analytics/settings", {"min_count": 0}, auth=A)
    check(st == 200, "min_count 0 %r" % b)
    batch = []
    for n, (uid, ev, d, props) in enumerate(events):
        ts = "%sT%02d:%02d:00Z" % (day_str(d), (n * 7) % 24, n % 60)
        batch.append({"type": "track", "userId": uid, "event": ev, "properties": props,
                      "timestamp": ts, "messageId": "m%d" % n})
    for i in range(0, len(batch), 400):
        st, b = srv.call("POST", "/v1/batch", {"batch": batch[i:i + 400]}, auth=W)
        if not check(st == 200, "batch %d: %r" % (i, b)):
            break

    # ------------------------------------------------------- funnels
    d0, d1 = 4, 24
    steps = [("exposure", {}), ("click", {"campaign": "spring"}), ("activation", {}),
             ("registration", {}), ("payment", {})]
    req = {"steps": [s if not f else {"event": s, "filters": f} for s, f in steps],
           "from": day_str(d0), "to": day_str(d1)}
    st, rep = srv.call("POST", "/v1/funnels", req, auth=R)
    exp = naive_funnel(events, steps, d0, d1)
    check(st == 200, "funnel %r" % rep)
    if st == 200:
        got = [s["users"] for s in rep["steps"]]
        want = [len(x) for x in exp]
        check(got == want, "funnel steps %r, want %r" % (got, want))
        check(rep["population"] == NUSERS, "population")
        for k in range(1, len(steps)):
            c = rep["steps"][k]["conversion"]
            w = want[k] / want[k - 1] if want[k - 1] else None
            check(c is None if w is None else abs(c - w) < 1e-5, "conversion step %d" % k)
        check(rep["order"] == "day", "order at day granularity")
    # the same funnel with window_days/as_of
    st, rep2 = srv.call("POST", "/v1/funnels", {"steps": req["steps"], "as_of": day_str(d1),
                                                "window_days": d1 - d0 + 1}, auth=R)
    check(st == 200 and [s["users"] for s in rep2["steps"]] == [len(x) for x in exp],
          "window_days form")
    # crowd restriction and breakdowns
    seg_a = {u["id"] for u in users if "seg/a" in u["tags"]}
    st, rep = srv.call("POST", "/v1/funnels", dict(req, crowd={"expression": "tag:seg/a"}), auth=R)
    exp_a = naive_funnel(events, steps, d0, d1, seg_a)
    check(st == 200 and [s["users"] for s in rep["steps"]] == [len(x) for x in exp_a],
          "crowd restriction")
    for bd, groups in [
        ({"attribute": "gender"},
         {g: {u["id"] for u in users if u["attrs"]["gender"] == g} for g in ("female", "male")}),
        ({"attribute": "age", "buckets": [18, 30, 45]},
         {"<18": {u["id"] for u in users if u["attrs"].get("age", 999) < 18},
          "18-29": {u["id"] for u in users if 18 <= u["attrs"].get("age", -1) <= 29},
          "30-44": {u["id"] for u in users if 30 <= u["attrs"].get("age", -1) <= 44},
          "45+": {u["id"] for u in users if 45 <= u["attrs"].get("age", -1) < 999}}),
        ({"tag": "seg"},
         {"seg/" + t: {u["id"] for u in users if "seg/" + t in u["tags"]} for t in "abc"}),
    ]:
        st, rep = srv.call("POST", "/v1/funnels", dict(req, breakdown=bd), auth=R)
        if not check(st == 200, "breakdown %r: %r" % (bd, rep)):
            continue
        got = {g["group"]: g for g in rep["breakdown"]["groups"]}
        check(set(got) == set(groups), "groups of %r: %r" % (bd, sorted(got)))
        for name, members in groups.items():
            g = got.get(name)
            if g is None:
                continue
            check(g["size"] == len(members), "group %s size" % name)
            counts = [s["users"] for s in g["steps"]]
            want = [len(x & members) for x in exp]
            check(counts == want, "group %s: %r, want %r" % (name, counts, want))
    # min_count suppression of breakdown cells
    st, rep = srv.call("POST", "/v1/funnels",
                       dict(req, breakdown={"attribute": "gender"}, min_count=10 ** 6), auth=R)
    check(st == 200 and all(g.get("suppressed") for g in rep["breakdown"]["groups"]),
          "min_count suppresses groups")
    # stored step tags in a crowd expression
    st, rep = srv.call("POST", "/v1/funnels", dict(req, name="signup", store=True), auth=R)
    check(st == 403, "read key cannot store a funnel")
    st, rep = srv.call("POST", "/v1/funnels", dict(req, name="signup", store=True), auth=W)
    check(st == 200 and rep["steps"][2]["tag"] == "funnel/signup/step3", "store funnel")
    for k in range(len(steps)):
        st, c = srv.call("POST", "/v1/count",
                         {"expression": "tag:funnel/signup/step%d" % (k + 1)}, auth=R)
        check(st == 200 and c["count"] == len(exp[k]), "tag funnel/signup/step%d" % (k + 1))
    st, c = srv.call("POST", "/v1/count",
                     {"expression": "tag:funnel/signup/step2 AND NOT tag:funnel/signup/step3 "
                                    "AND gender = \"female\""}, auth=R)
    want = len({u for u in exp[1] - exp[2]
                if next(x for x in users if x["id"] == u)["attrs"]["gender"] == "female"})
    check(st == 200 and c["count"] == want, "drop-offs as a crowd")
    # errors
    st, b = srv.call("POST", "/v1/funnels", {"steps": ["nosuchevent"]}, auth=R)
    check(st in (400, 404) and "nosuchevent" in json.dumps(b), "unknown event %r" % b)
    st, b = srv.call("POST", "/v1/funnels",
                     {"steps": [{"event": "click", "filters": {"color": "red"}}]}, auth=R)
    check(st == 400 and "indexed" in json.dumps(b), "filter on a non-indexed property")
    st, b = srv.call("POST", "/v1/funnels", {"steps": ["click"], "from": "2024-03-09",
                                             "to": "2024-03-01"}, auth=R)
    check(st == 400, "window backwards")
    st, b = srv.call("POST", "/v1/funnels", {"steps": ["click"], "breakdown":
                                             {"attribute": "age"}}, auth=R)
    check(st == 400 and "buckets" in json.dumps(b), "int breakdown needs buckets")

    # ---------------------------------------------------------- AIPL
    rules = {"name": "acme",
             "stages": {"awareness": ["exposure", "page"],
                        "interest": ["click", "favorite", "add_to_cart"],
                        "purchase": ["purchase"],
                        "loyalty": {"repeat_purchases": 2, "or_attribute": "is_member"}},
             "window_days": NDAYS, "as_of": day_str(NDAYS - 1), "filters": {"brand": "acme"}}
    reach, cur = naive_aipl(users, events, rules, 0, NDAYS - 1)
    st, rep = srv.call("POST", "/v1/aipl", rules, auth=R)
    check(st == 403, "read key cannot store AIPL tags")
    st, rep = srv.call("POST", "/v1/aipl", dict(rules, store=False), auth=R)
    check(st == 200 and rep["stored"] is False, "AIPL preview with a read key %r" % rep)
    st, c = srv.call("POST", "/v1/count", {"expression": "tag:aipl"}, auth=R)
    check(st in (400, 404) or c.get("count") == 0, "a preview stores nothing %r" % c)
    st, rep = srv.call("POST", "/v1/aipl", rules, auth=W)
    if check(st == 200, "AIPL %r" % rep):
        got = {s["stage"]: s for s in rep["stages"]}
        for s in STAGES:
            want = sum(1 for v in cur.values() if v == s)
            check(got[s]["users"] == want, "stage %s: %d, want %d" % (s, got[s]["users"], want))
            check(got[s]["reached"] == len(reach[s]), "reached %s" % s)
            st2, c = srv.call("POST", "/v1/count",
                              {"expression": "tag:aipl/acme/" + s}, auth=R)
            check(st2 == 200 and c["count"] == want, "tag aipl/acme/%s" % s)
        check(rep["staged_users"] == len(cur), "staged users")
        check(rep["unknown_events"] == ["favorite"], "unknown events %r" % rep["unknown_events"])
        check("did(\"purchase\", brand = \"acme\", between 2024-03-01 and 2024-03-30) >= 2"
              in rep["expressions"]["loyalty"], "loyalty expression %r" % rep["expressions"])
    st, c = srv.call("POST", "/v1/count", {"expression":
                                           "tag:aipl/acme/awareness AND tag:aipl/acme/interest"},
                     auth=R)
    check(st == 200 and c["count"] == 0, "stages are exclusive")
    # a shorter window moves users; the tags follow
    rules2 = dict(rules, window_days=7)
    reach2, cur2 = naive_aipl(users, events, rules2, NDAYS - 7, NDAYS - 1)
    st, rep = srv.call("POST", "/v1/aipl", rules2, auth=W)
    check(st == 200, "AIPL re-run")
    for s in STAGES:
        want = sum(1 for v in cur2.values() if v == s)
        st2, c = srv.call("POST", "/v1/count", {"expression": "tag:aipl/acme/" + s}, auth=R)
        check(st2 == 200 and c["count"] == want, "re-run tag aipl/acme/%s" % s)
    for bad, what in [({"stages": {}}, "no events"),
                      ({"stages": {"purchase": ["purchase"]}, "window_days": 0}, "window"),
                      ({"stages": {"purchase": ["purchase"], "loyalty":
                                   {"or_attribute": "age"}}}, "or_attribute type"),
                      ({"stages": {"purchase": ["purchase"]}, "filters": {"color": "x"}},
                       "filter not indexed"),
                      ({"stages": {"buy": ["purchase"]}}, "unknown stage")]:
        st, b = srv.call("POST", "/v1/aipl", dict(bad, store=False), auth=R)
        check(st == 400, "bad AIPL rules (%s): %d %r" % (what, st, b))
    srv.stop()

    # ----------------------------------------------------------- CLI
    args = ["exposure", "click:campaign=spring", "activation", "registration", "payment",
            "--from", day_str(d0), "--to", day_str(d1)]
    rc, out, err = run("funnel", "--data", data, *args, "--json")
    check(rc == 0 and [s["users"] for s in json.loads(out)["steps"]] ==
          [len(x) for x in exp], "CLI funnel --json: " + err)
    rc, out, err = run("funnel", "--data", data, *args, "--by", "age=18,30,45")
    check(rc == 0 and "18-29" in out and "conversion" in out, "CLI funnel table: " + err)
    rules_file = os.path.join(tmp, "rules.json")
    with open(rules_file, "w") as f:
        json.dump(rules, f)
    rc, out, err = run("aipl", "--data", data, rules_file, "--preview")
    check(rc == 0 and "aipl/acme/loyalty" in out and "previewed" in out, "CLI aipl: " + err)
    rc, out, err = run("aipl", "--data", data, rules_file, "--json")
    check(rc == 0 and json.loads(out)["stored"] is True, "CLI aipl store: " + err)
    rc, out, err = run("count", "--data", data, "tag:aipl/acme/loyalty")
    check(rc == 0 and int(out.strip().replace(",", "")) ==
          sum(1 for v in cur.values() if v == "loyalty"), "CLI aipl stored tags")


if __name__ == "__main__":
    main(test)
