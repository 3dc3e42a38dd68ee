#!/usr/bin/env python3
"""End-to-end test of the HTTP/JSON API: starts `crowdpack serve` on a
temporary data directory and drives every endpoint over real sockets.

Counts are checked against an independent evaluation in Python of the same
users. Exits 0 only when every check passes; prints "N passed, M failed".

Environment: CROWDPACK = path of the binary (default: build/crowdpack).
"""
import base64
import csv
import io
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import harness
from harness import check, main, run, section, tempdir

MAX_BODY = 1 << 20  # --max-body for the server under test


# ----------------------------------------------------------------- server

def Server(tmp, data, name="srv", *extra):
    return harness.Server(tmp, data, "--max-body", MAX_BODY, *extra, name=name, threads=2)


SRV = None


def call(method, path, body=None, raw=None, ctype=None, key=None, auth=None, headers=None):
    """Returns (status, parsed JSON (a JSON answer) or text, headers)."""
    kw = {"ctype": ctype} if ctype else {}
    r = SRV.call(method, path, body, raw=raw, key=key, auth=auth, headers=headers, timeout=30,
                 **kw)
    if r.headers.get("Content-Type", "").startswith("application/json"):
        return r.status, json.loads(r.raw), r.headers
    return r.status, r.raw.decode("utf-8"), r.headers


def err_of(resp):
    """The error object of an error reply, checking its shape."""
    status, body, _ = resp
    ok = isinstance(body, dict) and isinstance(body.get("error"), dict) \
        and isinstance(body["error"].get("code"), str) \
        and isinstance(body["error"].get("message"), str) and body["error"]["message"]
    check(ok, "error body has the {error:{code,message}} shape: %r" % (body,))
    return body["error"] if ok else {"code": None, "message": ""}


def expect_error(resp, status, code, what, contains=None):
    e = err_of(resp)
    check(resp[0] == status, "%s: status %d, want %d (%r)" % (what, resp[0], status, e))
    check(e.get("code") == code, "%s: code %r, want %r" % (what, e.get("code"), code))
    if contains is not None:
        for c in (contains if isinstance(contains, list) else [contains]):
            check(c in e.get("message", ""), "%s: message %r should mention %r"
                  % (what, e.get("message"), c))
    return e


# ------------------------------------------------------------------- data

TAGS = ["interest", "interest/finance", "interest/finance/consulting",
        "interest/finance/stocks", "interest/sports", "interest/sports/football",
        "interest/sports/running", "life", "life/baby", "life/pets", "shopping",
        "shopping/luxury"]
ASSIGNABLE = [t for t in TAGS if t != "interest"]
CITIES = ["beijing", "shanghai", "guangzhou", "foshan"]
WEIRD_IDS = ["user/1", "\u00fc ser 2", "a%20b", "x?y#z", 'quote"d', "comma,id",
             "\u4eba\u7fa4", "semi;colon", "sp ace", "plus+sign"]
WEIRD = []  # the weird ids actually generated


def make_users(n, seed, prefix="u"):
    rng = random.Random(seed)
    users = []
    for i in range(n):
        uid = "%s%d" % (prefix, i)
        if i % 97 == 5:
            uid = WEIRD_IDS[(i // 97) % len(WEIRD_IDS)] + "-" + prefix + str(i)
            WEIRD.append(uid)
        attrs = {}
        if rng.random() > 0.1:
            attrs["age"] = rng.randint(18, 70)
        g = rng.random()
        if g < 0.45:
            attrs["gender"] = "female"
        elif g < 0.9:
            attrs["gender"] = "male"
        attrs["city"] = rng.choice(CITIES)
        if rng.random() < 0.8:
            attrs["vip"] = rng.random() < 0.25
        day = rng.randint(0, 364)
        attrs["signup"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                        time.gmtime(1672531200 + day * 86400))
        tags = sorted(set(rng.sample(ASSIGNABLE, rng.randint(0, 3))))
        users.append({"id": uid, "attrs": attrs, "tags": tags})
    return users


class Model:
    """The naive reference: sets of ids computed straight from the users."""

    def __init__(self):
        self.users = {}

    def load(self, users):
        for u in users:
            cur = self.users.setdefault(u["id"], {"attrs": {}, "tags": set()})
            cur["attrs"].update(u.get("attrs", {}))
            cur["tags"].update(u.get("tags", []))

    def all(self):
        return set(self.users)

    def tag(self, path):
        return {i for i, u in self.users.items()
                if any(t == path or t.startswith(path + "/") for t in u["tags"])}

    def where(self, pred):
        return {i for i, u in self.users.items() if pred(u["attrs"])}

    def attr(self, name, pred):
        return self.where(lambda a: name in a and pred(a[name]))


M = Model()


def estimates():
    """(expression, expected set) pairs over the current model."""
    a = M.all()
    return [
        ("all", a),
        ("tag:interest", M.tag("interest")),
        ("tag:interest/finance AND age BETWEEN 25 AND 40",
         M.tag("interest/finance") & M.attr("age", lambda v: 25 <= v <= 40)),
        ('gender = "female" OR vip = true',
         M.attr("gender", lambda v: v == "female") | M.attr("vip", lambda v: v is True)),
        ("NOT tag:interest/sports AND age >= 50",
         (a - M.tag("interest/sports")) & M.attr("age", lambda v: v >= 50)),
        ('city IN ("beijing", "shanghai") AND NOT gender = "male"',
         M.attr("city", lambda v: v in ("beijing", "shanghai"))
         - M.attr("gender", lambda v: v == "male")),
        ("age < 30 AND (tag:interest/finance/consulting OR tag:life/baby)",
         M.attr("age", lambda v: v < 30)
         & (M.tag("interest/finance/consulting") | M.tag("life/baby"))),
        ('signup >= "2023-07-01"',
         M.attr("signup", lambda v: v >= "2023-07-01T00:00:00Z")),
        ("tag:shopping OR tag:life/pets OR age <= 20",
         M.tag("shopping") | M.tag("life/pets") | M.attr("age", lambda v: v <= 20)),
    ]


def count_of(expr, key=None):
    st, body, _ = call("POST", "/v1/crowds/estimate", {"expression": expr}, key=key)
    check(st == 200, "estimate %r: status %d %r" % (expr, st, body))
    return body.get("count") if st == 200 else None


# ------------------------------------------------------------------ parts

@section
def t_health():
    st, body, _ = call("GET", "/healthz")
    check(st == 200 and body.get("status") == "ok" and body.get("writable") is True,
          "healthz: %d %r" % (st, body))
    # A request is counted when its connection completes (after the
    # response was sent), so the first scrape may race the /healthz count.
    for _ in range(50):
        st, text, h = call("GET", "/metrics")
        if "crowdpack_http_requests_total{" in text:
            break
        time.sleep(0.02)
    check(st == 200 and h.get("Content-Type", "").startswith("text/plain"),
          "metrics content type %r" % h.get("Content-Type"))
    check("crowdpack_http_requests_total{" in text, "metrics has request counters")
    check("crowdpack_users " in text, "metrics has the users gauge")
    check("crowdpack_bitmap_bytes " in text, "metrics has bitmap bytes")


@section
def t_schema_taxonomy():
    st, body, _ = call("POST", "/v1/attributes", {"attributes": [
        {"name": "age", "type": "int"}, {"name": "gender", "type": "enum"},
        {"name": "city", "type": "string"}, {"name": "vip", "type": "bool"}]})
    check(st == 200, "schema load: %d %r" % (st, body))
    st, body, _ = call("POST", "/v1/attributes", {"name": "signup", "type": "timestamp"})
    check(st == 200, "attribute define: %d %r" % (st, body))
    st, body, _ = call("GET", "/v1/attributes")
    types = {a["name"]: a["type"] for a in body.get("attributes", [])}
    check(types == {"age": "int", "gender": "enum", "city": "string", "vip": "bool",
                    "signup": "timestamp"}, "attribute list: %r" % types)
    expect_error(call("POST", "/v1/attributes", {"name": "age", "type": "string"}),
                 409, "conflict", "redefining an attribute with another type")
    expect_error(call("POST", "/v1/attributes", {"name": "x", "type": "blob"}),
                 400, "invalid", "unknown attribute type", "blob")

    # Most tags through the bulk taxonomy load, one through POST /v1/tags.
    tax = [{"path": t, "name": t.split("/")[-1].title(), "description": "about " + t}
           for t in TAGS if t != "shopping/luxury"]
    st, body, _ = call("POST", "/v1/taxonomy", {"tags": tax})
    check(st == 200 and body.get("loaded") == len(tax), "taxonomy load: %d %r" % (st, body))
    st, body, _ = call("POST", "/v1/tags", {"path": "shopping/luxury", "name": "\u5962\u4f88\u54c1",
                                            "description": "luxury goods"})
    check(st == 201 and body.get("path") == "shopping/luxury"
          and body.get("name") == "\u5962\u4f88\u54c1", "tag create: %d %r" % (st, body))
    expect_error(call("POST", "/v1/tags", {"path": "shopping/luxury"}), 409, "exists",
                 "creating an existing tag")
    st, body, _ = call("GET", "/v1/tags")
    paths = [t["path"] for t in body.get("tags", [])]
    check(sorted(paths) == sorted(TAGS), "tag list: %r" % paths)
    st, body, _ = call("GET", "/v1/tags?root=interest/finance")
    paths = sorted(t["path"] for t in body.get("tags", []))
    check(st == 200 and set(paths) >= {"interest/finance/consulting", "interest/finance/stocks"}
          and not any(p.startswith("life") for p in paths), "tag subtree: %r" % paths)
    st, body, _ = call("GET", "/v1/tags/interest/finance")
    check(st == 200 and body.get("path") == "interest/finance" and body.get("level") == 2
          and sorted(body.get("children", [])) == ["interest/finance/consulting",
                                                    "interest/finance/stocks"],
          "tag show: %d %r" % (st, body))
    expect_error(call("GET", "/v1/tags/interest/nope"), 404, "not_found", "unknown tag",
                 "interest/nope")


@section
def t_load_users():
    users = make_users(1500, 1)
    half = len(users) // 2
    nd = "".join(json.dumps(u) + "\n" for u in users[:half]).encode()
    st, body, _ = call("POST", "/v1/users", raw=nd, ctype="application/x-ndjson")
    check(st == 200 and body.get("created") == half and body.get("updated") == 0,
          "NDJSON load: %d %r" % (st, body))
    want_tags = sum(len(u["tags"]) for u in users[:half])
    check(body.get("tags_assigned") == want_tags,
          "tags_assigned %r, want %d" % (body.get("tags_assigned"), want_tags))
    rest = users[half:]
    st, body, _ = call("POST", "/v1/users", {"users": rest[:-1]})
    check(st == 200 and body.get("created") == len(rest) - 1, "JSON array load: %d %r"
          % (st, body))
    st, body, _ = call("POST", "/v1/users", rest[-1])
    check(st == 200 and body.get("created") == 1, "single user load: %d %r" % (st, body))
    M.load(users)
    # An update: overwrite an attribute, add a tag.
    upd = {"id": users[0]["id"], "attrs": {"age": 33}, "tags": ["life/pets"]}
    st, body, _ = call("POST", "/v1/users", upd)
    check(st == 200 and body.get("updated") == 1 and body.get("created") == 0,
          "update: %d %r" % (st, body))
    M.load([upd])
    st, text, _ = call("GET", "/metrics")
    check("crowdpack_users %d\n" % len(M.users) in text, "users gauge after load")


@section
def t_estimates():
    for expr, want in estimates():
        got = count_of(expr)
        check(got == len(want), "estimate %r: %r, want %d" % (expr, got, len(want)))
    st, body, _ = call("POST", "/v1/crowds/estimate",
                       {"expression": "tag:interest   and   age>=50"})
    check(st == 200 and isinstance(body.get("took_ms"), (int, float))
          and body.get("expression") == "tag:interest AND age >= 50",
          "canonical expression: %r" % (body,))


@section
def t_expressions_tree():
    for expr, want in estimates():
        st, body, _ = call("POST", "/v1/expressions/parse", {"expression": expr})
        check(st == 200 and isinstance(body.get("tree"), dict), "parse %r: %d %r"
              % (expr, st, body))
        tree = body["tree"]
        st, back, _ = call("POST", "/v1/expressions/parse", {"tree": tree})
        check(st == 200 and back.get("expression") == body.get("expression"),
              "tree -> text round trip of %r: %r vs %r" % (expr, back, body.get("expression")))
        st, est, _ = call("POST", "/v1/crowds/estimate", {"tree": tree})
        check(st == 200 and est.get("count") == len(want),
              "estimate by tree %r: %r, want %d" % (expr, est, len(want)))


def export_ids(name, fmt):
    st, text, h = call("GET", "/v1/crowds/%s/export?format=%s" % (name, fmt))
    check(st == 200, "export %s %s: %d" % (name, fmt, st))
    if fmt == "ndjson":
        check(h.get("Content-Type", "").startswith("application/x-ndjson"),
              "ndjson content type")
        ids = [json.loads(line)["id"] for line in text.splitlines() if line]
    else:
        check(h.get("Content-Type", "").startswith("text/csv"), "csv content type")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        check(rows and rows[0] == ["id"], "csv header: %r" % rows[:1])
        ids = [r[0] for r in rows[1:]]
    check(len(ids) == len(set(ids)), "export %s %s has no duplicates" % (name, fmt))
    return set(ids)


@section
def t_crowds():
    fin_young = M.tag("interest/finance") & M.attr("age", lambda v: v < 35)
    women = M.attr("gender", lambda v: v == "female")
    st, body, _ = call("POST", "/v1/crowds", {
        "name": "fin_young", "expression": "tag:interest/finance AND age < 35",
        "kind": "static", "description": "young finance"})
    check(st == 201 and body.get("name") == "fin_young" and body.get("size") == len(fin_young),
          "create static crowd: %d %r" % (st, body))
    st, body, _ = call("POST", "/v1/crowds", {
        "name": "women", "tree": {"attr": "gender", "op": "=", "value": "female"},
        "kind": "dynamic"})
    check(st == 201 and body.get("size") == len(women), "create dynamic crowd by tree: %d %r"
          % (st, body))
    expect_error(call("POST", "/v1/crowds", {"name": "women", "expression": "all"}),
                 409, "exists", "duplicate crowd")
    st, body, _ = call("GET", "/v1/crowds")
    names = sorted(c["name"] for c in body.get("crowds", []))
    check(names == ["fin_young", "women"], "crowd list: %r" % names)
    st, body, _ = call("GET", "/v1/crowds/fin_young")
    check(st == 200 and body.get("kind") == "static" and body.get("size") == len(fin_young)
          and body.get("description") == "young finance", "crowd show: %r" % body)
    expect_error(call("GET", "/v1/crowds/nope"), 404, "not_found", "unknown crowd", "nope")

    # Set-operation sugar.
    for op, want in (("union", fin_young | women), ("intersect", fin_young & women),
                     ("difference", fin_young - women)):
        st, body, _ = call("POST", "/v1/crowds", {"name": "op_" + op, "op": op,
                                                  "crowds": ["fin_young", "women"]})
        check(st == 201 and body.get("size") == len(want), "set op %s: %d %r, want %d"
              % (op, st, body, len(want)))
    check(count_of("crowd:op_union AND NOT crowd:women") == len(fin_young - women),
          "estimate over crowd references")

    # Exports (both formats) equal the expected ids, weird ids included.
    want = fin_young | women
    check(export_ids("op_union", "ndjson") == want, "ndjson export equals the expected ids")
    check(export_ids("op_union", "csv") == want, "csv export equals the expected ids")
    expect_error(call("GET", "/v1/crowds/op_union/export?format=xml"), 400, "invalid",
                 "bad export format", "format")

    # Sample: deterministic for a seed, a subset of the members.
    st, s1, _ = call("GET", "/v1/crowds/women/sample?n=25&seed=7")
    st2, s2, _ = call("GET", "/v1/crowds/women/sample?n=25&seed=7")
    check(st == 200 and s1.get("ids") == s2.get("ids") and len(s1.get("ids", [])) == 25,
          "sample deterministic: %r" % (s1,))
    check(set(s1.get("ids", [])) <= women, "sample within the crowd")
    expect_error(call("GET", "/v1/crowds/women/sample?n=abc"), 400, "invalid", "bad n", "n")

    # Static vs dynamic: add users, then refresh.
    more = make_users(60, 2, prefix="late")
    st, body, _ = call("POST", "/v1/users", {"users": more})
    check(st == 200 and body.get("created") == 60, "late load: %r" % body)
    M.load(more)
    fin_young2 = M.tag("interest/finance") & M.attr("age", lambda v: v < 35)
    women2 = M.attr("gender", lambda v: v == "female")
    st, body, _ = call("GET", "/v1/crowds/fin_young")
    check(body.get("size") == len(fin_young), "static crowd unchanged before refresh: %r vs %d"
          % (body.get("size"), len(fin_young)))
    st, body, _ = call("GET", "/v1/crowds/women")
    check(body.get("size") == len(women2), "dynamic crowd follows writes: %r vs %d"
          % (body.get("size"), len(women2)))
    v0 = body.get("version")
    st, body, _ = call("POST", "/v1/crowds/fin_young/refresh")
    check(st == 200 and body.get("size") == len(fin_young2), "refresh: %d %r" % (st, body))

    # Update, cycles, deletes.
    st, body, _ = call("PUT", "/v1/crowds/women", {"expression": 'gender = "female" AND vip = true'})
    want = M.attr("gender", lambda v: v == "female") & M.attr("vip", lambda v: v is True)
    check(st == 200 and body.get("size") == len(want) and body.get("version") != v0,
          "update crowd: %d %r" % (st, body))
    expect_error(call("PATCH", "/v1/crowds/fin_young", {"expression": "crowd:op_union"}),
                 409, "cycle", "crowd reference cycle")
    expect_error(call("PATCH", "/v1/crowds/nope", {"expression": "all"}), 404, "not_found",
                 "updating an unknown crowd")
    expect_error(call("DELETE", "/v1/crowds/women"), 409, "conflict",
                 "deleting a referenced crowd")
    for n in ("op_union", "op_intersect", "op_difference"):
        st, body, _ = call("DELETE", "/v1/crowds/" + n)
        check(st == 200 and body.get("deleted") == n, "delete crowd %s: %d %r" % (n, st, body))
    expect_error(call("GET", "/v1/crowds/op_union"), 404, "not_found", "deleted crowd")


@section
def t_tags_semantics():
    sports = M.tag("interest/sports")
    st, body, _ = call("PATCH", "/v1/tags/interest/sports", {"name": "Sport & Fitness"})
    check(st == 200 and body.get("name") == "Sport & Fitness", "rename: %d %r" % (st, body))
    st, body, _ = call("POST", "/v1/tags", {"path": "hobby", "name": "Hobby"})
    check(st == 201, "create hobby: %d %r" % (st, body))
    st, body, _ = call("PATCH", "/v1/tags/interest/sports", {"path": "hobby/sports"})
    check(st == 200 and body.get("path") == "hobby/sports" and body.get("count") == len(sports),
          "move keeps members: %d %r (want %d)" % (st, body, len(sports)))
    for u in M.users.values():
        u["tags"] = {("hobby/sports" + t[len("interest/sports"):])
                     if t == "interest/sports" or t.startswith("interest/sports/") else t
                     for t in u["tags"]}
    check(count_of("tag:hobby/sports/running") == len(M.tag("hobby/sports/running")),
          "moved subtree keeps descendants' members")
    expect_error(call("GET", "/v1/tags/interest/sports"), 404, "not_found", "old path is gone")
    expect_error(call("POST", "/v1/crowds/estimate", {"expression": "tag:interest/sports"}),
                 400, "unknown_reference", "estimate on the old path")
    # A tag with children needs recursive; a tag used by a crowd cannot go.
    expect_error(call("DELETE", "/v1/tags/hobby"), 409, "conflict", "delete with children")
    st, body, _ = call("POST", "/v1/crowds", {"name": "runners",
                                              "expression": "tag:hobby/sports/running"})
    check(st == 201, "crowd on a tag: %d %r" % (st, body))
    expect_error(call("DELETE", "/v1/tags/hobby?recursive=true"), 409, "conflict",
                 "delete a tag a crowd uses")
    st, body, _ = call("DELETE", "/v1/crowds/runners")
    check(st == 200, "delete runners")
    st, body, _ = call("DELETE", "/v1/tags/hobby?recursive=true")
    check(st == 200 and body.get("deleted") == "hobby", "recursive delete: %d %r" % (st, body))
    for u in M.users.values():
        u["tags"] = {t for t in u["tags"] if not (t == "hobby" or t.startswith("hobby/"))}
    expect_error(call("GET", "/v1/tags/hobby/sports"), 404, "not_found", "deleted subtree")
    check(count_of("tag:interest") == len(M.tag("interest")), "count after tag delete")


@section
def t_users():
    weird = [i for i in WEIRD if i in M.users]
    check(len(weird) >= 5, "have weird ids")
    for uid in weird:
        st, body, _ = call("GET", "/v1/users/" + urllib.request.quote(uid, safe=""))
        check(st == 200 and body.get("id") == uid, "show user %r: %d %r" % (uid, st, body))
        check(sorted(body.get("tags", [])) == sorted(M.users[uid]["tags"]),
              "user %r tags %r vs %r" % (uid, body.get("tags"), M.users[uid]["tags"]))
    uid = weird[0]
    q = urllib.request.quote(uid, safe="")
    M.users[uid]["tags"] |= {"life/baby", "life/pets"}
    st, body, _ = call("POST", "/v1/users", {"id": uid, "tags": ["life/baby", "life/pets"]})
    check(st == 200, "tag user: %r" % (body,))
    st, body, _ = call("POST", "/v1/users/%s/tags/remove" % q, {"tags": ["life/baby"]})
    check(st == 200 and "life/baby" not in body.get("tags", []), "remove tags: %d %r"
          % (st, body))
    M.users[uid]["tags"].discard("life/baby")
    st, body, _ = call("DELETE", "/v1/users/%s/tags/life/pets" % q)
    check(st == 200 and "life/pets" not in body.get("tags", []), "delete user tag: %d %r"
          % (st, body))
    M.users[uid]["tags"].discard("life/pets")
    check(count_of("tag:life/baby") == len(M.tag("life/baby")), "count after tag removal")
    st, body, _ = call("DELETE", "/v1/users/" + q)
    check(st == 200 and body.get("deleted") == uid, "delete user: %d %r" % (st, body))
    del M.users[uid]
    expect_error(call("GET", "/v1/users/" + q), 404, "not_found", "deleted user")
    expect_error(call("DELETE", "/v1/users/" + q), 404, "not_found", "delete again")
    check(count_of("all") == len(M.users), "all after user delete")


@section
def t_bad_input():
    n_before = count_of("all")
    e = expect_error(call("POST", "/v1/crowds/estimate", raw=b'{"expression": tag:x}'),
                     400, "malformed_json", "malformed JSON", "line 1")
    check(e.get("line") == 1 and e.get("column", 0) > 0, "malformed JSON position: %r" % e)
    expect_error(call("POST", "/v1/crowds/estimate", {"expression": 5}), 400, "wrong_type",
                 "expression of the wrong type", "expression")
    # Wrong attribute type in a user: names the attribute; nothing applied.
    e = expect_error(call("POST", "/v1/users", {"users": [
        {"id": "new-ok", "attrs": {"age": 20}},
        {"id": "new-bad", "attrs": {"age": "old"}}]}), 400, "wrong_type", "wrong attr type",
        "age")
    check(e.get("record") == 2 and e.get("index") == 1, "bad user record/index: %r" % e)
    expect_error(call("GET", "/v1/users/new-ok"), 404, "not_found", "all or nothing (JSON)")
    # A bad NDJSON line: its number is reported; earlier lines are not applied.
    nd = b'{"id":"nd-1"}\n{"id":"nd-2","tags":["interest"]}\n{"id":"nd-3","tags":["no/such"]}\n'
    e = expect_error(call("POST", "/v1/users", raw=nd, ctype="application/x-ndjson"),
                     400, "unknown_reference", "unknown tag in NDJSON", "no/such")
    check(e.get("record") == 3, "NDJSON error record: %r" % e)
    expect_error(call("GET", "/v1/users/nd-1"), 404, "not_found", "all or nothing (NDJSON)")
    # Expression errors carry line and column.
    e = expect_error(call("POST", "/v1/crowds/estimate",
                          {"expression": "tag:interest AND\n  tag:nope/nothing"}),
                     400, "unknown_reference", "unknown tag in an expression", "nope/nothing")
    check(e.get("line") == 2 and e.get("column") == 3, "unknown tag position: %r" % e)
    check(e.get("message", "").startswith("2:3: "), "position in the message: %r" % e)
    e = expect_error(call("POST", "/v1/crowds/estimate", {"expression": "age >= AND all"}),
                     400, "syntax_error", "syntax error")
    check(e.get("line") == 1 and e.get("column") == 8, "syntax error position: %r" % e)
    expect_error(call("POST", "/v1/crowds/estimate", {"expression": "nosuchattr = 1"}),
                 400, "unknown_reference", "unknown attribute", "nosuchattr")
    expect_error(call("POST", "/v1/crowds/estimate", {"expression": 'age = "x"'}),
                 400, "wrong_type", "comparing an int with a string", "age")
    expect_error(call("POST", "/v1/crowds/estimate", {}), 400, "missing_field", "no expression")
    expect_error(call("POST", "/v1/crowds/estimate",
                      {"expression": "all OR " * 10000 + "all"}),
                 413, "expression_too_long", "expression too long")
    deep = "[" * 100 + "]" * 100
    e = expect_error(call("POST", "/v1/crowds/estimate", raw=('{"x":%s}' % deep).encode()),
                     400, "json_too_deep", "too deep JSON")
    deep_nd = ('{"id":"d","attrs":{"a":%s}}\n' % deep).encode()
    expect_error(call("POST", "/v1/users", raw=deep_nd, ctype="application/x-ndjson"),
                 400, "json_too_deep", "too deep NDJSON")
    expect_error(call("POST", "/v1/crowds/estimate", raw=b"expression=all",
                      ctype="application/x-www-form-urlencoded"), 415,
                 "unsupported_media_type", "form body")
    # A body without a content type is refused (browsers send those
    # cross-site without a CORS preflight).
    body = b'{"path":"csrf"}'
    st, b = raw_request(b"POST /v1/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    check(st == 415 and b and b["error"]["code"] == "unsupported_media_type",
          "untyped body refused: %r %r" % (st, b))
    # DNS rebinding: without keys, only loopback Host names are served.
    e = expect_error(call("GET", "/v1/tags", headers={"Host": "rebind.example:%d" % SRV.port}),
                     401, "unauthorized", "non-loopback Host in open mode", "rebind.example")
    st, _, _ = call("GET", "/v1/tags", headers={"Host": "localhost:%d" % SRV.port})
    check(st == 200, "localhost Host in open mode: %d" % st)
    expect_error(call("GET", "/v1/nothing/here"), 404, "route_not_found", "unknown route")
    st, body, h = call("PUT", "/v1/tags", {})
    expect_error((st, body, h), 405, "method_not_allowed", "wrong method")
    check("GET" in (h.get("Allow") or ""), "405 has an Allow header: %r" % h.get("Allow"))
    expect_error(call("POST", "/v1/crowds", {"name": "bad name!", "expression": "all"}),
                 400, "invalid", "bad crowd name")
    expect_error(call("POST", "/v1/crowds", {"name": "x", "op": "union",
                                             "crowds": ["fin_young", "a b"]}),
                 400, "invalid", "bad crowd name in a set op", "a b")
    expect_error(call("GET", "/v1/users/%zz"), 400, "invalid", "bad percent escape")
    check(count_of("all") == n_before, "bad input changed nothing")


def raw_request(head, body_chunks=()):
    """Sends a raw HTTP request; returns (status, body dict or None)."""
    s = socket.create_connection(("127.0.0.1", SRV.port), timeout=20)
    try:
        s.sendall(head)
        for c in body_chunks:
            try:
                s.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                hdr, _, rest = data.partition(b"\r\n\r\n")
                cl = [ln for ln in hdr.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if cl and len(rest) >= int(cl[0].split(b":")[1]):
                    break
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    body = data.partition(b"\r\n\r\n")[2]
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


@section
def t_body_limits():
    # Declared too large: refused before the body is read.
    head = ("POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)).encode()
    st, body = raw_request(head)
    check(st == 413 and body and body["error"]["code"] == "body_too_large",
          "Content-Length over the limit: %r %r" % (st, body))
    # Chunked upload that grows past the limit: discarded while read, then 413.
    head = (b"POST /v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
    line = (json.dumps({"id": "big", "attrs": {"city": "x" * 1000}}) + "\n").encode()
    piece = line * 64
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    n = MAX_BODY // len(piece) + 2
    st, body = raw_request(head, [chunk] * n + [b"0\r\n\r\n"])
    check(st == 413 and body and body["error"]["code"] == "body_too_large",
          "chunked body over the limit: %r %r" % (st, body))
    # Just under the limit is fine (and all or nothing still applies).
    users = [{"id": "lim-%d" % i, "attrs": {"city": "c" * 200}} for i in range(3000)]
    nd = "".join(json.dumps(u) + "\n" for u in users).encode()
    nd = nd[:MAX_BODY - 2000]
    nd = nd[:nd.rfind(b"\n") + 1]
    k = nd.count(b"\n")
    st, body, _ = call("POST", "/v1/users", raw=nd, ctype="application/x-ndjson")
    check(st == 200 and body.get("created") == k, "body under the limit: %d %r" % (st, body))
    M.load(users[:k])
    check(count_of("all") == len(M.users), "all after the big load")


@section
def t_two_writers(data):
    r = run("serve", "--data", data, "--listen", "127.0.0.1:0", timeout=20)
    check(r.returncode != 0 and "lock" in r.stderr.lower(),
          "second serve fails with a locked error: rc=%d %r" % (r.returncode, r.stderr))
    r = run("keys", "create", "--data", data, "--role", "read", timeout=20)
    check(r.returncode != 0 and "lock" in r.stderr.lower(),
          "keys create while serving fails with a locked error: %r" % r.stderr)


@section
def t_concurrency():
    """Readers and writers at once over the thread pool: every answer right."""
    errors = []
    exprs = [(e, len(w)) for e, w in estimates()[1:4]]  # not changed by the writers

    def reader(k):
        for i in range(40):
            e, want = exprs[(i + k) % len(exprs)]
            st, body, _ = call("POST", "/v1/crowds/estimate", {"expression": e})
            if st != 200 or body.get("count") != want:
                errors.append(("estimate", e, st, body))
            st, body, _ = call("GET", "/v1/crowds/fin_young")
            if st != 200:
                errors.append(("crowd", st, body))

    def writer(k):
        for i in range(20):
            users = [{"id": "cc-%d-%d-%d" % (k, i, j), "attrs": {"city": "zz"}} for j in range(5)]
            st, body, _ = call("POST", "/v1/users", {"users": users})
            if st != 200 or body.get("created") != 5:
                errors.append(("load", st, body))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "concurrent requests all right: %r" % errors[:3])
    M.load([{"id": "cc-%d-%d-%d" % (k, i, j), "attrs": {"city": "zz"}}
            for k in range(2) for i in range(20) for j in range(5)])
    check(count_of('city = "zz"') == 200, "concurrent writes all applied")
    st, text, _ = call("GET", "/metrics")
    line = [ln for ln in text.splitlines() if ln.startswith(
        'crowdpack_http_requests_total{method="POST",route="/v1/crowds/estimate",status="200"}')]
    check(line and int(line[0].split()[-1]) >= 160, "metrics count estimates: %r" % line)
    check('route="/v1/crowds/{name}",le="+Inf"}' in text, "metrics histogram by route")


@section
def t_https(tmp):
    if shutil.which("openssl") is None:
        print("  (openssl not installed: HTTPS not tested)")
        return
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                       capture_output=True, timeout=60)
    if not check(r.returncode == 0, "openssl made a certificate: %r" % r.stderr[-300:]):
        return
    d = os.path.join(tmp, "tls")
    run("init", "--data", d, timeout=20)
    srv = harness.Server(tmp, d, "--tls-cert", cert, "--tls-key", key, name="tls", timeout=20)
    try:
        try:
            srv.start()
            why = ""
        except RuntimeError as e:
            why = str(e)
        out = srv.stderr()
        if not check(not why, "TLS server started: %r" % (why or out)):
            return
        port = srv.port
        check("listening on https://127.0.0.1:%d" % port in out, "https banner: %r" % out)
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
        with urllib.request.urlopen("https://127.0.0.1:%d/healthz" % port, context=ctx,
                                    timeout=20) as resp:
            check(resp.status == 200 and json.loads(resp.read()).get("status") == "ok",
                  "healthz over HTTPS")
        req = urllib.request.Request("https://127.0.0.1:%d/v1/attributes" % port,
                                     data=b'{"name":"age","type":"int"}', method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=20) as resp:
            check(resp.status == 200, "POST over HTTPS")
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=5).read()
            check(False, "plain HTTP to the TLS port should fail")
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            check(True, "")
    finally:
        if srv.proc is not None:
            check(srv.stop(grace=20) == 0, "TLS server exits 0")


KEYS = {}


@section
def t_restart_and_keys(tmp, data):
    global SRV
    exprs = ["all", "tag:interest", 'gender = "female" OR vip = true', "crowd:fin_young",
             "tag:life/baby AND age < 40", 'city IN ("foshan") AND NOT vip = false']
    before = {e: count_of(e) for e in exprs}
    st, crowd_before, _ = call("GET", "/v1/crowds/fin_young")
    check(SRV.stop() == 0, "server exits 0 on SIGTERM")
    r = run("keys", "create", "--data", data, "--role", "admin", "--label", "test admin",
            timeout=20)
    check(r.returncode == 0 and r.stdout.strip(), "keys create: %r" % (r.stderr,))
    admin = r.stdout.strip().splitlines()[-1].strip()
    KEYS["admin"] = admin
    SRV = Server(tmp, data, "srv2")
    SRV.start()
    for e, c in before.items():
        got = count_of(e, key=admin)
        check(got == c, "after restart %r: %r, want %r" % (e, got, c))
    st, crowd_after, _ = call("GET", "/v1/crowds/fin_young", key=admin)
    check(crowd_after.get("size") == crowd_before.get("size")
          and crowd_after.get("expression") == crowd_before.get("expression"),
          "crowd survives restart")

    # Auth: missing, unknown, roles.
    e = expect_error(call("GET", "/v1/tags"), 401, "unauthorized", "no key")
    st, _, h = call("GET", "/v1/tags")
    check("Bearer" in (h.get("WWW-Authenticate") or ""), "401 carries WWW-Authenticate")
    expect_error(call("GET", "/v1/tags", key="nope"), 401, "unauthorized", "unknown key")
    st, _, _ = call("GET", "/healthz")
    check(st == 200, "healthz stays open")
    st, body, _ = call("POST", "/v1/keys", {"role": "read", "label": "reader"}, key=admin)
    check(st == 201 and body.get("key"), "create read key: %d %r" % (st, body))
    KEYS["read"] = body.get("key")
    st, body, _ = call("POST", "/v1/keys", {"role": "write"}, key=admin)
    check(st == 201 and body.get("key"), "create write key: %d %r" % (st, body))
    KEYS["write"] = body.get("key")
    st, body, _ = call("GET", "/v1/tags", key=KEYS["read"])
    check(st == 200, "read key reads")
    check(count_of("all", key=KEYS["read"]) == len(M.users), "read key estimates")
    expect_error(call("POST", "/v1/tags", {"path": "zzz"}, key=KEYS["read"]), 403, "forbidden",
                 "read key writing", "write")
    expect_error(call("GET", "/v1/keys", key=KEYS["write"]), 403, "forbidden",
                 "write key listing keys", "admin")
    basic = "Basic " + base64.b64encode((KEYS["write"] + ":").encode()).decode()
    st, body, _ = call("POST", "/v1/tags", {"path": "zzz"}, auth=basic)
    check(st == 201, "write key over HTTP Basic (Segment style): %d %r" % (st, body))
    st, body, _ = call("GET", "/v1/keys", key=admin)
    keys = body.get("keys", [])
    check(st == 200 and len(keys) == 3 and all("key" not in k for k in keys),
          "key list (no secrets): %r" % keys)
    rid = [k["id"] for k in keys if k.get("role") == "read"]
    st, body, _ = call("DELETE", "/v1/keys/%s" % (rid[0] if rid else "x"), key=admin)
    check(st == 200, "revoke: %d %r" % (st, body))
    expect_error(call("GET", "/v1/tags", key=KEYS["read"]), 401, "unauthorized", "revoked key")


@section
def t_non_loopback_refused(tmp):
    d = os.path.join(tmp, "open")
    r = run("init", "--data", d, timeout=20)
    check(r.returncode == 0, "init second dir: %r" % r.stderr)
    r = run("serve", "--data", d, "--listen", "0.0.0.0:0", timeout=20)
    check(r.returncode != 0 and "key" in r.stderr.lower(),
          "no keys + public address refused: rc=%d %r" % (r.returncode, r.stderr))


def test():
    global SRV
    t0 = time.time()
    tmp = tempdir("cp-api-")
    data = os.path.join(tmp, "data")
    r = run("init", "--data", data, timeout=30)
    if not check(r.returncode == 0, "init: %r" % r.stderr):
        return
    SRV = Server(tmp, data)
    SRV.start()
    try:
        t_health()
        t_schema_taxonomy()
        t_load_users()
        t_estimates()
        t_expressions_tree()
        t_crowds()
        t_tags_semantics()
        t_users()
        t_bad_input()
        t_body_limits()
        t_concurrency()
        t_two_writers(data)
        t_restart_and_keys(tmp, data)
        t_non_loopback_refused(tmp)
        t_https(tmp)
    finally:
        if SRV.proc.poll() is None:
            rc = SRV.stop()
            check(rc == 0, "final stop exits 0 (rc=%d)" % rc)
    print("(%.1fs)" % (time.time() - t0))


if __name__ == "__main__":
    main(test)
