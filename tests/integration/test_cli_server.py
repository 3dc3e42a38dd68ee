#!/usr/bin/env python3
"""The CLI against a running server, and beside one (src/cli).

Starts the real binary ($CROWDPACK) as a server on a temporary data
directory and drives it with the CLI: `intake config` get and set (with
--server, and with --data on another directory, so an NDJSON import needs
no HTTP call), `whois` and `unmerge` with --server on a merge made by two
identify events, `crowd history` and `crowd schedule` with --server;
read-only commands with --data while the server holds the writer lock; a
write with --data refused with a hint; `eval` and `stats` with --server
agree with --data; and every command's help offers --server except the
documented few that work on a directory itself.
"""
import json
import os
import time

from harness import OK, Server, check, main, run, tempdir


def test_with_server(tmp):
    data = os.path.join(tmp, "srv")
    rc, _, err = run("init", "--data", data)
    check(rc == 0, "init", err)
    srv = Server(tmp, data, threads=2).start()
    base = srv.base

    def post(base, path, body):
        return srv.call("POST", path, body, timeout=20, expect=OK)

    try:
        S = ("--server", base)
        # intake config over HTTP
        rc, out, err = run("intake", "config", *S, "--json")
        check(rc == 0 and "indexed_properties" in json.loads(out), "intake config get --server",
              err)
        rc, out, err = run("intake", "config", *S, "--json", "--set",
                           '{"indexed_properties":["category"]}')
        check(rc == 0 and "category" in json.loads(out)["indexed_properties"],
              "intake config set --server", out + err)
        rc, out, err = run("intake", "config", *S, "--set", "[1]")
        check(rc == 2, "intake config --set refuses a non-object", err)

        # a merge: two existing users meet on one email
        post(base, "/v1/identify", {"userId": "a1", "traits": {"email": "x@example.com"}})
        post(base, "/v1/identify", {"userId": "a2", "traits": {"email": "y@example.com"}})
        post(base, "/v1/identify", {"userId": "a2", "traits": {"email": "x@example.com"}})
        rc, out, err = run("whois", *S, "--json", "user_id:a1")
        check(rc == 0, "whois --server", err)
        w = json.loads(out) if rc == 0 else {}
        lineage = w.get("lineage", [])
        check(len(lineage) == 1, "whois --server shows the merge", out)
        rc, out, err = run("whois", *S, "user_id:a1")
        check(rc == 0 and "lineage" in out, "whois --server, text", err)
        if lineage:
            mid = str(lineage[0]["merge_id"])
            rc, out, err = run("unmerge", *S, mid)
            check(rc == 2 and "--user" in err, "unmerge --server needs --user", err)
            rc, out, err = run("unmerge", *S, "--user", "user_id:a1", mid)
            check(rc == 0 and "undid merge" in out, "unmerge --server", out + err)
            ids = []
            for who in ("user_id:a1", "user_id:a2"):
                rc, out, err = run("whois", *S, "--json", who)
                ids.append(json.loads(out)["user"]["id"] if rc == 0 else None)
            check(None not in ids and ids[0] != ids[1], "after unmerge a1 and a2 are apart",
                  str(ids))

        # crowds: history and schedule through the server
        rc, out, err = run("crowd", "create", *S, "known", "all")
        check(rc == 0, "crowd create --server", err)
        rc, out, err = run("crowd", "schedule", *S, "known", "--refresh", "daily 02:00",
                           "--timezone", "Asia/Shanghai", "--expire-after-days", "90")
        check(rc == 0 and "Asia/Shanghai" in out, "crowd schedule --server", out + err)
        rc, out, err = run("crowd", "schedule", *S, "known", "--refresh", "hourly")
        check(rc == 1 and "daily HH:MM" in err, "crowd schedule: a bad schedule is refused", err)
        rc, out, err = run("crowd", "history", *S, "--json", "known")
        h = json.loads(out) if rc == 0 else {}
        check(rc == 0 and len(h.get("points", [])) == 1, "crowd history --server", out + err)

        # streaming import through the server (batches of /v1/batch)
        ev = os.path.join(tmp, "srv-ev.ndjson")
        with open(ev, "w") as f:
            for i in range(3000):
                f.write(json.dumps({"type": "track", "userId": "s%d" % (i % 50), "event": "buy",
                                    "messageId": "m%d" % i,
                                    "properties": {"pad": "x" * 200},
                                    "timestamp": "2024-03-01T10:00:00Z"}) + "\n")
                if i == 1234:
                    f.write('{"type":"track","event":"buy"}\n')  # no user: rejected
                    f.write("not json\n")
        rc, out, err = run("import", *S, "--events", "--json", "-q", ev)
        st = json.loads(out) if rc == 0 else {}
        check(rc == 0 and st.get("events") == 3000 and st.get("rejected") == 2,
              "import --server: every good event once, bad lines rejected", out + err)
        rc, out, err = run("import", *S, "--events", "--json", "-q", ev)
        st = json.loads(out) if rc == 0 else {}
        check(rc == 0 and st.get("events") == 0 and st.get("duplicates") == 3000,
              "import --server again: all duplicates", out + err)
        csvp = os.path.join(tmp, "orders.csv")
        with open(csvp, "w") as f:
            f.write("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,"
                    "Country\n")
            for i in range(120):
                cust = "" if i % 4 == 0 else "%d.0" % (13000 + i % 9)
                f.write("%d,A%d,THING,%d,2011-01-%02d 10:00:00,1.50,%s,France\n" %
                        (540000 + i, i, 1 + i % 3, 1 + i % 28, cust))
        rc, out, err = run("import", *S, "--preset", "online-retail", "--json", "-q", csvp)
        st = json.loads(out) if rc == 0 else {}
        check(rc == 0 and st.get("events") == 90 and st.get("skipped") == 30,
              "import --server of a CSV through a preset", out + err)
        rc, out, err = run("count", *S, "did(purchase) >= 1")
        check(rc == 0 and out.strip() == "9", "the CSV's customers", out + err)

        # beside the server: reads with --data work, writes are refused with a hint
        rc, out, err = run("count", "--data", data, "all")
        check(rc == 0, "count --data while the server runs", err)
        rc, out, err = run("crowd", "list", "--data", data)
        check(rc == 0 and "known" in out, "crowd list --data while the server runs", out + err)
        rc, out, err = run("crowd", "history", "--data", data, "known")
        check(rc == 0 and "VERSION" in out, "crowd history --data while the server runs", err)
        rc, out, err = run("whois", "--data", data, "user_id:a1")
        check(rc == 0 and "a1" in out, "whois --data while the server runs", out + err)
        rc, out, err = run("intake", "config", "--data", data, "--json")
        check(rc == 0 and "category" in out, "intake config --data while the server runs", err)
        # what a read-only handle cannot see yet, it says
        post(base, "/v1/track", {"userId": "late", "event": "late_event"})
        rc, out, err = run("count", "--data", data, "did(late_event) >= 1")
        check((rc == 0 and out.strip() == "1") or "not checkpointed yet" in err,
              "--data beside a server: a recent write is seen or the note says why", out + err)
        seen = False
        deadline = time.time() + 30
        while time.time() < deadline and not seen:
            rc, out, err = run("count", "--data", data, "did(late_event) >= 1")
            seen = rc == 0 and out.strip() == "1" and "not checkpointed" not in err
            time.sleep(0.5)
        check(seen, "after the server's checkpoint --data sees the write")
        rc, out, err = run("intake", "config", "--data", data, "--set", "{}")
        check(rc != 0 and "--server" in err, "a write with --data is refused, with a hint", err)
    finally:
        srv.stop()


def test_data_only(tmp):
    """intake config on a data directory: an NDJSON import is set up without HTTP."""
    data = os.path.join(tmp, "emb")
    run("init", "--data", data)
    rc, out, err = run("intake", "config", "--data", data, "--set",
                       '{"indexed_properties":["category"]}')
    check(rc == 0 and "category" in out, "intake config --set --data", out + err)
    ev = os.path.join(tmp, "ev.ndjson")
    with open(ev, "w") as f:
        for i in range(6):
            f.write(json.dumps({"type": "track", "userId": "u%d" % i, "event": "view",
                                "properties": {"category": "shoes" if i < 4 else "hats"},
                                "timestamp": "2024-03-01T10:00:00Z"}) + "\n")
    rc, out, err = run("import", "--data", data, "--events", "-q", ev)
    check(rc == 0, "import", err)
    rc, out, err = run("count", "--data", data, 'did(view, category = "shoes") >= 1')
    check(rc == 0 and out.strip() == "4", "the indexed property is queryable", out + err)


# Commands that need the data directory itself (or no data at all): the
# server cannot init, check, recover, back up, restore, compact, serve or
# generate its own directory, and `expr` and the benches touch no data.
DATA_ONLY = {"init", "check", "recover", "backup", "restore", "compact", "serve", "demo",
             "bench", "analytics bench", "expr parse", "expr format", "rtb simulate"}


def commands():
    """Every command and subcommand the CLI's help lists."""
    rc, out, err = run("--help")
    names = []
    for line in out.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and "Usage" not in line:
            word = line.split()[0]
            if not word.startswith("crowdpack"):
                names.append(word)
    result = []
    for n in names:
        rc, out, err = run(n, "--help")
        subs = []
        if "Commands:" in out:
            for line in out.split("Commands:", 1)[1].splitlines()[1:]:
                if not line.strip():
                    break
                subs.append(n + " " + line.split()[0])
        if n == "intake":
            subs = ["intake config"]
        result.extend(subs or [n])
    return result


def test_every_command():
    cmds = commands()
    check(len(cmds) >= 45, "the help lists the commands", repr(cmds))
    for c in cmds:
        rc, out, err = run(*(c.split() + ["--help"]))
        has = "--server" in out
        if c in DATA_ONLY:
            check(not has or c == "backup", "%s works on a directory only" % c, out[:200])
        else:
            check(has, "%s offers --server" % c, (out + err)[:300])


def test_eval_stats(tmp):
    data = os.path.join(tmp, "ev")
    rc, out, err = run("demo", "--data", data, "--users", "3000", "--seed", "5")
    check(rc == 0, "demo", err)
    # --max-body 64k: the bad-input checks send a body past it (413)
    srv = Server(tmp, data, "--max-body", "64k", threads=2).start()
    try:
        S = ("--server", srv.base)
        expr = 'tag:interest/food AND NOT gender = "male"'
        rc, local, err = run("eval", "--data", data, expr)
        check(rc == 0 and local.count("\n") > 100, "eval --data beside the server", err)
        rc, remote, err = run("eval", *S, expr)
        check(rc == 0 and remote == local, "eval --server prints the same ids",
              "%d vs %d lines %s" % (remote.count("\n"), local.count("\n"), err))
        rc, out, err = run("eval", *S, "-n", "7", expr)
        check(rc == 0 and out.splitlines() == local.splitlines()[:7], "eval --server -n 7",
              out + err)
        rc, out, err = run("eval", *S, "tag:no/such")
        check(rc == 1 and "unknown tag" in err, "eval --server of an unknown tag fails clearly",
              err)
        rc, out, err = run("eval", *S, "--as-of", "2024-01-01", "tag:interest/food")
        check(rc == 0 and out == run("eval", "--data", data, "tag:interest/food")[1],
              "eval --server --as-of", err)
        r = srv.call("POST", "/v1/eval", {"expression": expr, "limit": 3, "format": "csv"})
        text = r.raw.decode()
        check(r.status == 200 and text.splitlines() == ["id"] + local.splitlines()[:3],
              "POST /v1/eval csv", text)
        rc, out, err = run("stats", *S, "--json")
        remote_stats = json.loads(out) if rc == 0 else {}
        rc, out, err = run("stats", "--data", data, "--json")
        local_stats = json.loads(out) if rc == 0 else {}
        check(remote_stats.get("users") == local_stats.get("users") == 3000 and
              remote_stats.get("tags") == local_stats.get("tags"),
              "stats --server agrees with --data", "%r %r" % (remote_stats, local_stats))
        rc, out, err = run("stats", *S)
        check(rc == 0 and "3,000" in out, "stats --server, text", out + err)
        eval_stats_bad_input(srv, expr)
    finally:
        srv.stop()


def eval_stats_bad_input(srv, expr):
    """POST /v1/eval and GET /v1/stats refuse what they cannot serve, with
    the status and a message that names the culprit."""
    def refused(r, status, code, words, what):
        e = r.body.get("error", {}) if isinstance(r.body, dict) else {}
        msg = e.get("message", "")
        check(r.status == status and e.get("code") == code and all(w in msg for w in words),
              what, "%d %r" % (r.status, r.body))

    big = json.dumps({"expression": expr, "pad": "x" * (80 * 1024)})
    refused(srv.call("POST", "/v1/eval", raw=big), 413, "body_too_large", ["limit"],
            "POST /v1/eval: a body past --max-body is 413")
    refused(srv.call("POST", "/v1/eval", {"expression": expr, "format": "xml"}), 400, "invalid",
            ["format", "xml"], "POST /v1/eval: an unknown format is 400 naming it")
    for lim in (-1, "ten", 2.5):
        refused(srv.call("POST", "/v1/eval", {"expression": expr, "limit": lim}), 400,
                "wrong_type", ["limit"], "POST /v1/eval: limit %r is 400" % (lim,))
    r = srv.call("POST", "/v1/eval", {"expression": expr, "as_of": "last tuesday"})
    check(r.status == 400 and "last tuesday" in json.dumps(r.body, ensure_ascii=False),
          "POST /v1/eval: an as_of that is no date is 400 naming it", "%d %r" % (r.status, r.body))
    r = srv.call("POST", "/v1/eval", raw="{\"expression\": ")
    check(r.status == 400, "POST /v1/eval: malformed JSON is 400", "%d %r" % (r.status, r.body))
    for method, path in (("GET", "/v1/eval"), ("PUT", "/v1/eval"), ("POST", "/v1/stats"),
                         ("DELETE", "/v1/stats")):
        refused(srv.call(method, path, {} if method != "GET" else None), 405,
                "method_not_allowed", [], "%s %s is 405" % (method, path))
    r = srv.call("GET", "/v1/stats")
    check(r.status == 200 and r.body.get("users") == 3000, "GET /v1/stats still answers",
          "%d %r" % (r.status, r.body))


def test():
    tmp = tempdir("cp-cli-srv-")
    test_with_server(tmp)
    test_data_only(tmp)
    test_every_command()
    test_eval_stats(tmp)


if __name__ == "__main__":
    main(test)
