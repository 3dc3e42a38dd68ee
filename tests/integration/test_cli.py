#!/usr/bin/env python3
"""Integration test of the `crowdpack` command line (src/cli).

Runs the real binary ($CROWDPACK) on a temporary data directory: init with a
schema and a taxonomy, a load with a bad line, counts, crowds, tags, users,
keys, expressions, usage errors, --help everywhere, a second writer against a
running server (locked), --server mode, and a reopen that must give the same
answers. Every expected count is derived from the small data set below by a
naive evaluator in this file, not copied from crowdpack's output.
"""
import json
import os
import subprocess

from harness import CP, Server, check, main, run, tempdir


# ----------------------------------------------------------------- the data

SCHEMA = {"attributes": [{"name": "age", "type": "int"},
                         {"name": "gender", "type": "enum"},
                         {"name": "loc", "type": "geo"}]}
TAXONOMY = {"tags": [
    {"path": "interest", "name": "兴趣"},
    {"path": "interest/finance", "name": "金融"},
    {"path": "interest/finance/consulting", "name": "融资咨询"},
    {"path": "interest/finance/insurance", "name": "保险"},
    {"path": "interest/travel", "name": "旅游", "description": "trips"},
    {"path": "interest/sports", "name": "运动"},
]}


def make_users(n=60):
    users = []
    for i in range(1, n + 1):
        tags = []
        if i % 2 == 0:
            tags.append("interest/finance/consulting")
        if i % 3 == 0:
            tags.append("interest/finance/insurance")
        if i % 5 == 0:
            tags.append("interest/travel")
        if i % 7 == 0:
            tags.append("interest/sports")
        users.append({"id": "u%d" % i,
                      "attrs": {"age": 18 + (i * 7) % 50,
                                "gender": "female" if i % 4 in (0, 1) else "male",
                                "loc": [23.0 + (i % 10) * 0.05, 113.0 + (i % 10) * 0.05]},
                      "tags": tags})
    return users


USERS = make_users()


def has(u, path):
    return any(t == path or t.startswith(path + "/") for t in u["tags"])


def naive(pred):
    return sum(1 for u in USERS if pred(u))


# ------------------------------------------------------------------ tests

def test_help(data):
    rc, out, err = run("--version")
    check(rc == 0 and out.startswith("crowdpack "), "--version", out + err)
    rc, out, _ = run("help")
    check(rc == 0 and "Usage:" in out and "crowd" in out, "help")
    commands = {
        "init": [], "load": [], "count": [], "eval": [], "stats": [], "serve": [], "demo": [],
        "bench": [],
        "crowd": ["create", "list", "show", "refresh", "update", "delete", "sample", "export"],
        "tags": ["list", "show", "create", "rename", "move", "delete", "load"],
        "attrs": ["list", "define", "load"],
        "user": ["show", "delete", "untag"],
        "keys": ["create", "list", "revoke"],
        "expr": ["parse", "format"],
    }
    for cmd, subs in commands.items():
        for flag in ("--help", "-h"):
            rc, out, err = run(cmd, flag)
            check(rc == 0 and "Usage: crowdpack " + cmd in out, "%s %s" % (cmd, flag), out + err)
        for sub in subs:
            rc, out, err = run(cmd, sub, "--help")
            check(rc == 0 and ("Usage: crowdpack %s %s" % (cmd, sub)) in out and "--help" in out,
                  "%s %s --help" % (cmd, sub), out + err)
        rc, out, err = run("help", cmd)
        check(rc == 0 and "Usage:" in out, "help " + cmd, err)


def test_usage_errors(data):
    cases = [
        ["nope"],
        ["count"],                                   # missing expression
        ["count", "--data", data, "--bogus", "all"],  # unknown option
        ["crowd"],                                   # no subcommand
        ["crowd", "frobnicate"],
        ["crowd", "create", "--data", data],         # missing NAME
        ["crowd", "export", "--data", data, "x", "--format", "xml"],
        ["tags", "rename", "--data", data, "interest"],  # no --name
        ["attrs", "define", "--data", data, "x", "float"],
        ["keys", "create", "--data", data],          # no --role
        ["keys", "create", "--data", data, "--role", "god"],
        ["count", "--data", data, "--server", "http://127.0.0.1:1", "all"],
        ["crowd", "sample", "--data", data, "x", "-n", "ten"],
        ["load", "--data", data],
    ]
    for args in cases:
        rc, out, err = run(*args)
        check(rc == 2 and err.startswith("crowdpack: ") and out == "", "usage error exit 2: %s" % args,
              "rc=%d out=%r err=%r" % (rc, out, err))


def test_init_and_load(tmp, data):
    sp, tp = os.path.join(tmp, "schema.json"), os.path.join(tmp, "taxonomy.json")
    with open(sp, "w") as f:
        json.dump(SCHEMA, f)
    with open(tp, "w", encoding="utf-8") as f:
        json.dump(TAXONOMY, f, ensure_ascii=False)
    rc, out, err = run("init", "--data", data, "--schema", sp, "--taxonomy", tp)
    check(rc == 0 and "initialised" in out, "init", out + err)

    rc, out, err = run("attrs", "list", "--data", data, "--json")
    names = sorted(a["name"] for a in json.loads(out)["attributes"]) if rc == 0 else []
    check(names == ["age", "gender", "loc"], "attrs after init", out + err)

    # A bad schema file: the error names the file.
    bad = os.path.join(tmp, "bad.json")
    with open(bad, "w") as f:
        f.write('{"attributes":[{"name":"x","type":"float"}]}')
    rc, out, err = run("attrs", "load", "--data", data, bad)
    check(rc == 1 and "bad.json" in err, "bad schema names the file", err)

    # Users, with a bad line 4 (unknown tag) and a blank line.
    lines = [json.dumps(u, ensure_ascii=False) for u in USERS]
    lines.insert(3, json.dumps({"id": "bad", "tags": ["interest/nope"]}))
    lines.insert(10, "")
    up = os.path.join(tmp, "users.ndjson")
    with open(up, "w") as f:
        f.write("\n".join(lines) + "\n")

    # --strict: nothing applied, exit 1, the line named.
    rc, out, err = run("load", "--data", data, "--strict", up)
    check(rc == 1 and "line 4" in err, "strict load fails naming line 4", err)
    rc, out, err = run("count", "--data", data, "all")
    check(rc == 0 and out.strip() == "0", "strict load applied nothing", out + err)

    rc, out, err = run("load", "--data", data, up)
    check(rc == 0, "load with a bad line exits 0", err)
    check("line 4" in err and "interest/nope" in err, "bad line reported with its number", err)
    check("1 rejected" in out and "60 created" in out, "load summary", out)
    check("\r" not in err, "no progress bar when stderr is not a terminal", repr(err))

    # --rejects FILE and --json; loading again updates.
    rj = os.path.join(tmp, "rejects.txt")
    rc, out, err = run("load", "--data", data, "--rejects", rj, "--json", up)
    st = json.loads(out) if rc == 0 else {}
    check(st.get("rejected") == 1 and st.get("updated") == 60 and st.get("created") == 0,
          "reload --json stats", out + err)
    check("line 4" in open(rj).read() and "line 4" not in err, "--rejects file", err)

    # stdin
    rc, out, err = run("load", "--data", data, "-", stdin=json.dumps(
        {"id": "u61", "attrs": {"age": 30}, "tags": ["interest/sports"]}) + "\n")
    check(rc == 0 and "1 created" in out, "load from stdin", out + err)
    USERS.append({"id": "u61", "attrs": {"age": 30}, "tags": ["interest/sports"]})


def count(data, expr, *extra):
    rc, out, err = run("count", "--data", data, expr, *extra)
    return rc, out, err


EXPRS = [
    ("all", lambda u: True),
    ("tag:interest/finance", lambda u: has(u, "interest/finance")),
    ("tag:interest/finance AND tag:interest/travel",
     lambda u: has(u, "interest/finance") and has(u, "interest/travel")),
    ("tag:interest/finance/consulting AND NOT tag:interest/finance/insurance OR tag:interest/sports",
     lambda u: (has(u, "interest/finance/consulting") and not has(u, "interest/finance/insurance"))
     or has(u, "interest/sports")),
    ("age BETWEEN 25 AND 40", lambda u: "age" in u["attrs"] and 25 <= u["attrs"]["age"] <= 40),
    ('gender = "female" AND age >= 30',
     lambda u: u["attrs"].get("gender") == "female" and u["attrs"].get("age", -1) >= 30),
]


def test_count(data):
    for expr, pred in EXPRS:
        rc, out, err = count(data, expr)
        check(rc == 0 and out == "%d\n" % naive(pred), "count %s" % expr,
              "got %r want %d %s" % (out, naive(pred), err))
    rc, out, err = count(data, "all", "--json")
    check(rc == 0 and json.loads(out) == {"count": len(USERS)}, "count --json", out)

    # The JSON tree form gives the same count.
    rc, tree, err = run("expr", "parse", EXPRS[3][0])
    check(rc == 0 and json.loads(tree), "expr parse", err)
    tf = os.path.join(os.path.dirname(data), "tree.json")
    with open(tf, "w") as f:
        f.write(tree)
    rc, out, err = run("count", "--data", data, "--tree", tf)
    check(rc == 0 and out == "%d\n" % naive(EXPRS[3][1]), "count --tree", out + err)
    rc, text, err = run("expr", "format", "--tree", tf)
    rc2, tree2, _ = run("expr", "parse", text.strip())
    check(rc == 0 and rc2 == 0 and json.loads(tree2) == json.loads(tree), "expr round trip",
          text + err)

    # Errors: syntax with line:column and a caret; unknown tag.
    rc, out, err = count(data, "tag:interest/finance AND (age >")
    check(rc == 1 and out == "" and err.startswith("crowdpack: 1:") and "^" in err,
          "syntax error with position", err)
    rc, out, err = count(data, "tag:interest/nope")
    check(rc == 1 and "interest/nope" in err, "unknown tag is an error", err)
    rc, out, err = count(data, "nosuchattr = 3")
    check(rc == 1 and "nosuchattr" in err, "unknown attribute is an error", err)

    # eval prints the ids
    rc, out, err = run("eval", "--data", data, "tag:interest/sports")
    ids = out.split()
    want = [u["id"] for u in USERS if has(u, "interest/sports")]
    check(rc == 0 and ids == want, "eval ids", out + err)


def test_crowds(tmp, data):
    expr = "tag:interest/finance AND age BETWEEN 25 AND 40"
    want = naive(lambda u: has(u, "interest/finance") and 25 <= u["attrs"].get("age", -1) <= 40)
    rc, out, err = run("crowd", "create", "--data", data, "fin25", expr, "--description", "test")
    check(rc == 0 and "fin25" in out and str(want) in out, "crowd create", out + err)
    rc, out, err = run("crowd", "create", "--data", data, "fin25", expr)
    check(rc == 1 and err.startswith("crowdpack: "), "crowd create twice fails", err)
    rc, out, err = run("crowd", "create", "--data", data, "travel", "tag:interest/travel",
                       "--dynamic")
    check(rc == 0, "crowd create dynamic", err)

    rc, out, err = run("crowd", "list", "--data", data)
    check(rc == 0 and "fin25" in out and "travel" in out and "NAME" in out, "crowd list", out + err)
    rc, out, err = run("crowd", "list", "--data", data, "--json")
    crowds = {c["name"]: c for c in json.loads(out)["crowds"]} if rc == 0 else {}
    check(crowds.get("fin25", {}).get("size") == want, "crowd list --json size", out)

    rc, out, err = run("crowd", "show", "--data", data, "fin25")
    check(rc == 0 and "expression" in out and expr.split()[0] in out, "crowd show", out + err)
    rc, out, err = run("crowd", "show", "--data", data, "nope")
    check(rc == 1 and "nope" in err, "crowd show unknown", err)

    rc, out, err = run("count", "--data", data, "crowd:fin25")
    check(rc == 0 and out.strip() == str(want), "count crowd:", out + err)

    # exports
    members = sorted(u["id"] for u in USERS
                     if has(u, "interest/finance") and 25 <= u["attrs"].get("age", -1) <= 40)
    rc, out, err = run("crowd", "export", "--data", data, "fin25")
    got = sorted(json.loads(l)["id"] for l in out.splitlines() if l.strip()) if rc == 0 else None
    check(got == members, "export ndjson", out + err)
    csvp = os.path.join(tmp, "fin25.csv")
    rc, out, err = run("crowd", "export", "--data", data, "fin25", "--format", "csv", "-o", csvp)
    lines = open(csvp).read().splitlines() if rc == 0 else []
    check(rc == 0 and out == "" and lines[:1] == ["id"] and sorted(lines[1:]) == members,
          "export csv -o", "%r %s" % (lines, err))

    # A closed stdout ends an export quietly.
    p = subprocess.Popen("'%s' crowd export --data '%s' fin25 | head -c 1 >/dev/null; "
                         "echo ${PIPESTATUS[0]}" % (CP, data), shell=True, executable="/bin/bash",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    check(out.strip() in ("0",) and err == "", "export into a closed pipe", out + err)

    rc, out, err = run("crowd", "sample", "--data", data, "fin25", "-n", "3", "--seed", "7")
    s1 = out.split()
    rc2, out2, _ = run("crowd", "sample", "--data", data, "fin25", "-n", "3", "--seed", "7")
    check(rc == 0 and len(s1) == min(3, want) and set(s1) <= set(members) and out == out2,
          "crowd sample deterministic", out + err)

    rc, out, err = run("crowd", "update", "--data", data, "fin25", "tag:interest/finance")
    check(rc == 0 and str(naive(lambda u: has(u, "interest/finance"))) in out, "crowd update",
          out + err)
    rc, out, err = run("crowd", "refresh", "--data", data, "fin25")
    check(rc == 0 and "version" in out, "crowd refresh", out + err)
    rc, out, err = run("crowd", "update", "--data", data, "fin25", "tag:interest/finance AND (")
    check(rc == 1 and "1:" in err, "crowd update syntax error", err)

    rc, out, err = run("crowd", "create", "--data", data, "tmp", "crowd:fin25 AND tag:interest/travel")
    check(rc == 0, "crowd referencing a crowd", err)
    rc, out, err = run("crowd", "delete", "--data", data, "fin25")
    check(rc == 1, "delete a referenced crowd is refused", err)
    rc, out, err = run("crowd", "delete", "--data", data, "tmp")
    check(rc == 0 and "deleted" in out, "crowd delete", out + err)
    rc, out, err = run("crowd", "show", "--data", data, "tmp")
    check(rc == 1, "deleted crowd is gone", out)


def test_tags(tmp, data):
    rc, out, err = run("tags", "list", "--data", data)
    check(rc == 0 and "interest/finance/consulting" in out and "融资咨询" in out, "tags list",
          out + err)
    rc, out, err = run("tags", "list", "--data", data, "--json")
    tags = {t["path"]: t for t in json.loads(out)["tags"]} if rc == 0 else {}
    check(tags.get("interest/finance", {}).get("count") == naive(lambda u: has(u, "interest/finance")),
          "tags list count includes descendants", out)
    rc, out, err = run("tags", "list", "--data", data, "interest/finance", "--json")
    paths = [t["path"] for t in json.loads(out)["tags"]] if rc == 0 else []
    check(rc == 0 and "interest/travel" not in paths and "interest/finance/insurance" in paths,
          "tags list ROOT", out + err)

    rc, out, err = run("tags", "show", "--data", data, "interest/travel")
    check(rc == 0 and "旅游" in out and "trips" in out, "tags show", out + err)
    rc, out, err = run("tags", "create", "--data", data, "interest/food/tea", "--name", "茶")
    check(rc == 0, "tags create (with missing parent)", err)
    rc, out, err = run("tags", "show", "--data", data, "interest/food", "--json")
    check(rc == 0 and "interest/food/tea" in json.loads(out).get("children", []), "parent created",
          out + err)
    rc, out, err = run("tags", "rename", "--data", data, "interest/food/tea", "--name", "好茶")
    rc2, out2, _ = run("tags", "show", "--data", data, "interest/food/tea")
    check(rc == 0 and "好茶" in out2, "tags rename", out + err)
    rc, out, err = run("tags", "move", "--data", data, "interest/food/tea", "interest/tea")
    rc2, _, _ = run("tags", "show", "--data", data, "interest/tea")
    rc3, _, _ = run("tags", "show", "--data", data, "interest/food/tea")
    check(rc == 0 and rc2 == 0 and rc3 == 1, "tags move", out + err)
    rc, out, err = run("tags", "create", "--data", data, "interest/food/cake")
    rc, out, err = run("tags", "delete", "--data", data, "interest/food")
    check(rc == 1 and err.startswith("crowdpack: "), "delete tag with children needs --recursive", err)
    rc, out, err = run("tags", "delete", "--data", data, "interest/food", "--recursive")
    rc2, _, _ = run("tags", "show", "--data", data, "interest/food/cake")
    check(rc == 0 and rc2 == 1, "tags delete --recursive", out + err)
    rc, out, err = run("tags", "delete", "--data", data, "interest/travel")
    check(rc == 1, "tag referenced by a crowd cannot be deleted", err)

    tp = os.path.join(tmp, "more.json")
    with open(tp, "w") as f:
        json.dump({"tags": [{"path": "channel/app", "name": "App"}]}, f)
    rc, out, err = run("tags", "load", "--data", data, tp)
    rc2, out2, _ = run("tags", "show", "--data", data, "channel/app")
    check(rc == 0 and rc2 == 0 and "App" in out2, "tags load", out + err)


def test_users_keys_stats(data):
    rc, out, err = run("user", "show", "--data", data, "u10", "--json")
    u = json.loads(out) if rc == 0 else {}
    check(u.get("id") == "u10" and "interest/travel" in u.get("tags", []), "user show --json", out + err)
    rc, out, err = run("user", "show", "--data", data, "u10")
    check(rc == 0 and "u10" in out and "age" in out, "user show", out + err)
    rc, out, err = run("user", "untag", "--data", data, "u10", "interest/travel")
    rc2, out2, _ = run("user", "show", "--data", data, "u10", "--json")
    check(rc == 0 and "interest/travel" not in json.loads(out2).get("tags", []), "user untag",
          out + err)
    USERS[9]["tags"].remove("interest/travel")
    rc, out, err = run("user", "delete", "--data", data, "u11")
    rc2, _, _ = run("user", "show", "--data", data, "u11")
    check(rc == 0 and rc2 == 1, "user delete", out + err)
    del USERS[10]
    rc, out, err = run("user", "show", "--data", data, "nobody")
    check(rc == 1 and "nobody" in err, "unknown user", err)

    rc, out, err = run("keys", "create", "--data", data, "--role", "read", "--label", "ci")
    check(rc == 0 and len(out.strip().splitlines()) == 1 and len(out.strip()) >= 16,
          "keys create prints only the key", out + err)
    rc, out, err = run("keys", "list", "--data", data, "--json")
    keys = json.loads(out)["keys"] if rc == 0 else []
    check(len(keys) == 1 and keys[0]["role"] == "read", "keys list", out + err)
    rc, out, err = run("keys", "revoke", "--data", data, keys[0]["id"] if keys else "x")
    rc2, out2, _ = run("keys", "list", "--data", data, "--json")
    check(rc == 0 and json.loads(out2)["keys"] == [], "keys revoke", out + err)

    rc, out, err = run("stats", "--data", data, "--json")
    s = json.loads(out) if rc == 0 else {}
    check(s.get("users") == len(USERS) and s.get("crowds") == 2, "stats --json", out + err)
    rc, out, err = run("stats", "--data", data)
    check(rc == 0 and "users" in out, "stats table", out + err)


def answers(data):
    """Everything a reopen must reproduce."""
    res = []
    for expr, _ in EXPRS:
        res.append(count(data, expr)[1])
    res.append(run("crowd", "list", "--data", data, "--json")[1])
    res.append(run("tags", "list", "--data", data, "--json")[1])
    return res


def test_server_and_lock(tmp, data):
    for expr, pred in EXPRS:
        rc, out, _ = count(data, expr)
        check(out == "%d\n" % naive(pred), "count after edits: " + expr, out)

    srv = Server(tmp, data)
    try:
        try:
            srv.start()
            started = ""
        except RuntimeError as e:
            started = str(e)
        check(not started, "serve writes the port file", started)
        if started:
            return
        url = srv.base

        # A second writer on the same directory gets a clear error.
        rc, out, err = run("crowd", "create", "--data", data, "x2", "all")
        check(rc == 1 and "lock" in err.lower() and "--server" in err, "second writer is locked out", err)
        rc, out, err = run("load", "--data", data, os.devnull)
        check(rc == 1 and "lock" in err.lower(), "second loader is locked out", err)

        # The same commands through the server.
        for expr, pred in EXPRS:
            rc, out, err = run("count", "--server", url, expr)
            check(rc == 0 and out == "%d\n" % naive(pred), "count --server " + expr, out + err)
        rc, out, err = run("count", "--server", url, "tag:interest/nope")
        check(rc == 1 and "interest/nope" in err, "--server error message", err)
        rc, out, err = run("crowd", "create", "--server", url, "srv", "tag:interest/sports")
        check(rc == 0 and "srv" in out, "crowd create --server", out + err)
        rc, out, err = run("crowd", "export", "--server", url, "srv", "--format", "csv")
        got = sorted(out.splitlines()[1:]) if rc == 0 else None
        check(got == sorted(u["id"] for u in USERS if has(u, "interest/sports")), "export --server",
              out + err)
        rc, out, err = run("tags", "show", "--server", url, "interest/finance", "--json")
        check(rc == 0 and json.loads(out)["path"] == "interest/finance", "tags show --server", out + err)
        lp = os.path.join(tmp, "srv.ndjson")
        with open(lp, "w") as f:
            f.write(json.dumps({"id": "s1", "attrs": {"age": 50}, "tags": ["interest/travel"]}) + "\n")
            f.write(json.dumps({"id": "s2", "tags": ["interest/nope"]}) + "\n")
            f.write(json.dumps({"id": "s3", "attrs": {"age": "old"}}) + "\n")
            f.write(json.dumps({"id": "s4", "tags": ["interest/sports"]}) + "\n")
        rc, out, err = run("load", "--server", url, lp)
        check(rc == 0 and "2 created" in out and "2 rejected" in out and "line 2" in err
              and "line 3" in err, "load --server skips and reports bad lines", out + err)
        USERS.append({"id": "s1", "attrs": {"age": 50}, "tags": ["interest/travel"]})
        USERS.append({"id": "s4", "attrs": {}, "tags": ["interest/sports"]})
        rc, out, err = run("crowd", "delete", "--server", url, "srv")
        check(rc == 0, "crowd delete --server", err)
    finally:
        rc = srv.stop(grace=30)
    check(rc == 0, "serve exits 0 on SIGTERM", str(rc))

    # Restart: what the server wrote is there, and two reopens agree.
    for expr, pred in EXPRS:
        rc, out, _ = count(data, expr)
        check(out == "%d\n" % naive(pred), "count after restart: " + expr, out)
    first = answers(data)
    check(first == answers(data), "two reopens give the same answers")
    rc, out, _ = run("crowd", "show", "--data", data, "srv")
    check(rc == 1, "crowd deleted through the server stays deleted", out)


def test_bench(tmp):
    """A tiny bench on both paths: it runs, and its counts agree with the floor."""
    for extra in ([], ["--synthetic"]):
        rc, out, err = run("bench", "--users", "3000" if not extra else "200k", "--reps", "3",
                           "--json", "--dir", tmp, *extra, timeout=300)
        runs = json.loads(out)["runs"] if rc == 0 else []
        ok = len(runs) == 1 and runs[0]["count_matches_floor"] and \
            runs[0]["path"] == ("synthetic" if extra else "engine")
        five = [q for q in runs[0]["queries"] if q["name"].startswith("5-term")] if ok else []
        check(ok and five and five[0]["count"] == runs[0]["floor"]["count"] and
              runs[0]["floor"]["p50_ms"] > 0, "bench %s" % (extra or "engine"), out[-500:] + err)
    left = [n for n in os.listdir(tmp) if n.startswith("crowdpack-bench-")]
    check(left == [], "bench removes its data directory", str(left))


def test():
    tmp = tempdir("cp-cli-")
    data = os.path.join(tmp, "data")
    test_help(data)
    test_usage_errors(data)
    test_init_and_load(tmp, data)
    test_count(data)
    test_crowds(tmp, data)
    test_tags(tmp, data)
    test_users_keys_stats(data)
    test_server_and_lock(tmp, data)
    test_bench(tmp)


if __name__ == "__main__":
    main(test)
