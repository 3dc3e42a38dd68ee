#!/usr/bin/env python3
"""History everywhere (docs/expressions.md "History: as of a day",
docs/analytics.md "Windows over historical data").

A CSV in the UCI Online Retail layout is generated here (deterministic:
60 customers, invoice lines from 2011-01-04 to 2011-12-09, the last day of
the real file) and imported with the online-retail preset. Then, at several
as-of days, the same expressions must give the naive answer computed here
from the generated lines, and the same answer everywhere:
 - `crowdpack count --as-of`, `crowdpack eval --as-of` (the ids too),
   `crowdpack crowd create --as-of` (the crowd's size), for did() counts,
   did() days, and WITHIN LAST / OLDER THAN over a timestamp attribute;
 - with a server on the same data: POST /v1/count, /v1/crowds/estimate
   (text and tree forms) and /v1/crowds with "as_of", and
   `crowdpack count --server --as-of`;
 - without as_of the same did() count is 0 (the data is 15 years old).
Funnels and AIPL without --as-of must end their window on the data's last
day (2011-12-09) and give non-zero answers; with an as-of day outside the
data they must answer 0 with a warning, shown as a `note:` line by the CLI.

Environment: CROWDPACK = path of the binary. Prints "N passed, M failed".
"""
import datetime
import json
import os
import random

from harness import Server, basic, check, main, run, tempdir

FIRST = datetime.date(2011, 1, 4)
LAST = datetime.date(2011, 12, 9)
NCUST = 60


def make_lines(seed=2011):
    """(customer id, day, invoice, is_refund) per invoice line."""
    rng = random.Random(seed)
    lines = []
    ndays = (LAST - FIRST).days
    inv = 540000
    for c in range(NCUST):
        cid = 12000 + c
        # some customers stop early, some start late: as-of days see different sets
        lo, hi = sorted(rng.sample(range(ndays + 1), 2))
        for _ in range(rng.randint(1, 14)):
            day = FIRST + datetime.timedelta(days=rng.randint(lo, hi))
            inv += 1
            refund = rng.random() < 0.08
            for _ in range(rng.randint(1, 3)):
                lines.append((cid, day, inv, refund))
    # every customer buys on the last day of the data once in a while
    for c in range(0, NCUST, 7):
        inv += 1
        lines.append((12000 + c, LAST, inv, False))
    return lines


def write_csv(path, lines):
    with open(path, "w") as f:
        f.write("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,"
                "Country\n")
        for n, (cid, day, inv, refund) in enumerate(lines):
            f.write("%s%d,%s,ITEM %d,%d,%s %02d:%02d:00,%.2f,%d.0,United Kingdom\n"
                    % ("C" if refund else "", inv, "85123A" if n % 3 else "71053", n,
                       -1 if refund else 1 + n % 5, day.isoformat(), 8 + n % 10, n % 60,
                       1.25 + n % 7, cid))


def naive_count(lines, as_of, ndays, k=1, days=False):
    """Customers with >= k purchase lines (or active days) in [as_of-ndays+1, as_of]."""
    d0 = as_of - datetime.timedelta(days=ndays - 1)
    per = {}
    for cid, day, inv, refund in lines:
        if refund or day < d0 or day > as_of:
            continue
        per.setdefault(cid, []).append(day)
    return {cid for cid, ds in per.items() if (len(set(ds)) if days else len(ds)) >= k}


def naive_sum(lines, as_of, ndays, refunds, op, value):
    """Customers whose sum of amount (in cents, as the preset computes it:
    quantity x unit price rounded to 2 decimals) over the purchase (or refund)
    lines in [as_of-ndays+1, as_of] compares with value; those without any
    have 0."""
    d0 = as_of - datetime.timedelta(days=ndays - 1)
    per = {12000 + c: 0 for c in range(NCUST)}
    for n, (cid, day, inv, refund) in enumerate(lines):
        if refund != refunds or day < d0 or day > as_of:
            continue
        q = -1 if refund else 1 + n % 5
        price_cents = 125 + 100 * (n % 7)
        per[cid] += q * price_cents
    t = round(value * 100)
    ops = {">=": lambda a: a >= t, "<": lambda a: a < t, "=": lambda a: a == t}
    return {cid for cid, v in per.items() if ops[op](v)}


def naive_last_purchase(lines):
    last = {}
    for cid, day, inv, refund in lines:
        if not refund and (cid not in last or day > last[cid]):
            last[cid] = day
    return last


def test():
    tmp = tempdir("cp-history-")
    data = os.path.join(tmp, "data")
    lines = make_lines()
    csv_path = os.path.join(tmp, "retail_2011.csv")
    write_csv(csv_path, lines)
    schema = os.path.join(tmp, "schema.json")
    with open(schema, "w") as f:
        json.dump({"attributes": [{"name": "last_buy", "type": "timestamp"}]}, f)
    rc, out, err = run("init", "--data", data, "--schema", schema)
    check(rc == 0, "init " + err)
    rc, out, err = run("import", "--data", data, "--preset", "online-retail", csv_path)
    check(rc == 0, "import " + err)
    # a timestamp attribute for WITHIN LAST / OLDER THAN: each customer's last purchase
    last = naive_last_purchase(lines)
    users = os.path.join(tmp, "users.ndjson")
    with open(users, "w") as f:
        for cid, day in sorted(last.items()):
            f.write(json.dumps({"id": str(cid),
                                "attrs": {"last_buy": day.isoformat() + "T12:00:00Z"}})
                    + "\n")
    rc, out, err = run("load", "--data", data, users)
    check(rc == 0, "load " + err)

    def cli_count(expr, as_of=None, *conn):
        args = ["count"] + (list(conn) or ["--data", data])
        if as_of:
            args += ["--as-of", as_of]
        rc, out, err = run(*(args + [expr]))
        check(rc == 0, "count %s as of %s: %s" % (expr, as_of, err))
        return int(out.strip()) if rc == 0 else -1

    days = [datetime.date(2011, 3, 31), datetime.date(2011, 6, 30), LAST]
    exprs = []
    for d in days:
        s = d.isoformat()
        exprs += [
            ("did(purchase, last 90d) sum(amount) >= 20.5", s,
             naive_sum(lines, d, 90, False, ">=", 20.5)),
            ("did(refund, last 120d) sum(amount) < -3", s,
             naive_sum(lines, d, 120, True, "<", -3)),
            ("did(purchase, last 30d) >= 2", s, naive_count(lines, d, 30, 2)),
            ("did(purchase, last 90d) days >= 3", s, naive_count(lines, d, 90, 3, True)),
            ("last_buy WITHIN LAST 60d", s,
             {c for c, l in last.items() if d - datetime.timedelta(days=59) <= l <= d}),
            ("last_buy OLDER THAN 60d", s,
             {c for c, l in last.items() if l < d - datetime.timedelta(days=59)}),
        ]
    check(any(len(w) > 0 for _, _, w in exprs), "the data gives non-empty answers")
    for i, (expr, s, want) in enumerate(exprs):
        got = cli_count(expr, s)
        check(got == len(want), "count --as-of %s '%s': %d, want %d" % (s, expr, got,
                                                                        len(want)))
        rc, out, err = run("eval", "--data", data, "--as-of", s, expr)
        ids = {int(x) for x in out.split()} if rc == 0 else None
        check(ids == want, "eval --as-of %s '%s': %r, want %r" % (s, expr, ids, want))
        if i % 2 == 0:
            name = "h%d" % i
            rc, out, err = run("crowd", "create", "--data", data, "--as-of", s, "--json",
                               name, expr)
            size = json.loads(out).get("size") if rc == 0 else None
            check(size == len(want), "crowd create --as-of %s '%s': %r (%s)"
                  % (s, expr, size, err))
    # without as_of: today, 15 years after the data
    check(cli_count("did(purchase, last 30d) >= 2") == 0, "count without --as-of is 0")
    rc, out, err = run("count", "--data", data, "--as-of", "yesterday", "ALL")
    check(rc != 0 and "as_of" in err, "a bad --as-of is refused: " + err)
    rc, out, err = run("crowd", "create", "--data", data, "--as-of", "2011-06-30",
                       "--dynamic", "hdyn", "did(purchase)")
    check(rc != 0 and "static" in err, "a dynamic crowd refuses --as-of: " + err)

    # ------------------------------------------------------- funnels
    rc, out, err = run("funnel", "--data", data, "purchase", "purchase", "--days", "90",
                       "--json")
    rep = json.loads(out) if rc == 0 else {}
    check(rc == 0 and rep.get("window", {}).get("to") == LAST.isoformat(),
          "funnel window ends on the data's last day: %r %s" % (rep.get("window"), err))
    check(rep.get("as_of_from_data") is True and rep.get("warnings") == [],
          "funnel says the data chose the day: %r" % rep)
    want = len(naive_count(lines, LAST, 90))
    check(rep.get("steps") and rep["steps"][0]["users"] == want,
          "funnel step 1: %r, want %d" % (rep.get("steps"), want))
    rc, out, err = run("funnel", "--data", data, "purchase", "--as-of", "2024-06-30")
    check(rc == 0 and "note: the window 2024-06-01 .. 2024-06-30 holds no events" in out
          and "2011-12-09" in out, "funnel on an empty window warns: %s %s" % (out, err))
    rc, out, err = run("funnel", "--data", data, "purchase", "--as-of", "2024-06-30",
                       "--json")
    rep = json.loads(out) if rc == 0 else {}
    check(rep.get("steps", [{}])[0].get("users") == 0 and len(rep.get("warnings", [])) == 1,
          "funnel JSON warnings: %r" % rep.get("warnings"))
    rc, out, err = run("funnel", "--data", data, "purchase", "gift", "--from", "2011-06-01",
                       "--to", "2011-06-30", "--json")
    check(rc != 0 or "gift" in out, "unknown step event: %s %s" % (out, err))

    # ----------------------------------------------------------- AIPL
    rules = json.dumps({"name": "hist", "window_days": 60,
                        "stages": {"interest": ["refund"], "purchase": ["purchase"],
                                   "loyalty": {"repeat_purchases": 3}}})
    rc, out, err = run("aipl", "--data", data, "--preview", "--json", rules)
    rep = json.loads(out) if rc == 0 else {}
    check(rc == 0 and rep.get("window", {}).get("to") == LAST.isoformat()
          and rep.get("staged_users", 0) > 0,
          "AIPL on the data's last day: %r %s" % (rep, err))
    check(rep.get("staged_users") == len(naive_count(lines, LAST, 60)
                                         | {cid for cid, d, i, r in lines
                                            if r and d > LAST - datetime.timedelta(60)}),
          "AIPL staged users: %r" % rep.get("staged_users"))
    rc, out, err = run("aipl", "--data", data, "--preview", "--as-of", "2024-06-30", rules)
    check(rc == 0 and "note: the window" in out and "holds no events" in out,
          "AIPL on an empty window warns: %s %s" % (out, err))

    # --------------------------------------------------------- server
    rc, out, err = run("keys", "create", "--data", data, "--role", "admin")
    raw_key = out.strip()
    key = basic(raw_key)
    srv = Server(tmp, data)
    srv.start()
    url = "http://127.0.0.1:%d" % srv.port
    for i, (expr, s, want) in enumerate(exprs):
        st, b = srv.call("POST", "/v1/count", {"expression": expr, "as_of": s}, auth=key)
        check(st == 200 and b.get("count") == len(want), "/v1/count %s %s: %r"
              % (expr, s, b))
        st, b = srv.call("POST", "/v1/crowds/estimate", {"expression": expr, "as_of": s},
                         auth=key)
        check(st == 200 and b.get("count") == len(want), "/v1/crowds/estimate %s %s: %r"
              % (expr, s, b))
        rc, tree, err = run("expr", "parse", expr) if i % 4 == 0 else (1, "", "")
        check(i % 4 != 0 or rc == 0, "expr parse: " + err)
        if rc == 0:
            st, b = srv.call("POST", "/v1/crowds/estimate",
                             {"tree": json.loads(tree), "as_of": s}, auth=key)
            check(st == 200 and b.get("count") == len(want), "estimate tree %r" % b)
        if i % 4 == 1:
            st, b = srv.call("POST", "/v1/crowds", {"name": "s%d" % i, "expression": expr,
                                                    "as_of": s}, auth=key)
            check(st == 201 and b.get("size") == len(want), "POST /v1/crowds as_of: %r" % b)
    for expr, s, want in exprs[:4]:
        got = cli_count(expr, s, "--server", url, "--key", raw_key)
        check(got == len(want), "count --server --as-of %s '%s': %d, want %d"
              % (s, expr, got, len(want)))
    st, b = srv.call("POST", "/v1/crowds/estimate", {"expression": exprs[0][0]}, auth=key)
    check(st == 200 and b.get("count") == 0, "estimate without as_of is today: %r" % b)
    st, b = srv.call("POST", "/v1/crowds/estimate", {"expression": "ALL", "as_of": "x"}, auth=key)
    check(st == 400, "estimate with a bad as_of: %r" % b)


if __name__ == "__main__":
    main(test)
