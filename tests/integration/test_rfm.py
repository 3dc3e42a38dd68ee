#!/usr/bin/env python3
"""RFM on the real Online Retail file (docs/analytics.md "RFM") against an
independent computation: the raw CSV is read here with csv + gzip, each
invoice line's amount computed in exact decimals, loaded into sqlite3, and
R, F, M, the scores (window functions) and the segments computed in SQL.
crowdpack imports the same file with the online-retail preset and runs
`crowdpack rfm --detail --json`; every customer's R, F, M, scores and
segment must match, and so must the stored tags and attributes (counted
through expressions), a preview with an explicit --as-of, the event
measures view, re-running after a reopen, a schedule round trip, and bad
requests.

Environment: CROWDPACK = path of the binary, CP_SOURCE_DIR = repo root
(the data is ../shared/data/online-retail/online_retail.csv.gz from it, or
CP_ONLINE_RETAIL). Prints "N passed, M failed"; without the data file it
prints one SKIP line naming it and exits 77 (ctest: skipped).
"""
import csv
import datetime
import decimal
import gzip
import json
import os
import sqlite3
import sys

from harness import check, main, shared, tempdir
from harness import run as harness_run

SEGMENTS = {  # (R high, F high, M high) -> segment
    (1, 1, 1): "important_value", (1, 0, 1): "important_develop",
    (0, 1, 1): "important_keep", (0, 0, 1): "important_retain",
    (1, 1, 0): "general_value", (1, 0, 0): "general_develop",
    (0, 1, 0): "general_keep", (0, 0, 0): "general_retain",
}


def run(*args):
    return harness_run(*args, timeout=600)


def cents(qty, price):
    """quantity x unit price rounded to cents, half away from zero (exact)."""
    v = decimal.Decimal(qty) * decimal.Decimal(price) * 100
    return int(v.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def reference(path):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE lines (customer TEXT, invoice TEXT, refund INT, day INT, cents INT)")
    epoch = datetime.date(1970, 1, 1)
    rows = []
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            cid = r["CustomerID"].strip()
            if not cid:
                continue
            day = (datetime.date.fromisoformat(r["InvoiceDate"][:10]) - epoch).days
            rows.append((str(int(float(cid))), r["InvoiceNo"], r["InvoiceNo"].startswith("C"),
                         day, cents(r["Quantity"], r["UnitPrice"])))
    db.executemany("INSERT INTO lines VALUES (?,?,?,?,?)", rows)
    (ref,) = db.execute("SELECT MAX(day) + 1 FROM lines").fetchone()
    q = """
    WITH c AS (
      SELECT customer,
             ? - MAX(CASE WHEN refund = 0 THEN day END) AS r,
             COUNT(DISTINCT CASE WHEN refund = 0 THEN invoice END) AS f,
             SUM(cents) AS m
      FROM lines GROUP BY customer HAVING SUM(refund = 0) > 0),
    n AS (SELECT COUNT(*) AS n FROM c),
    s AS (
      SELECT customer, r, f, m,
             1 + (5 * (RANK() OVER (ORDER BY r DESC) - 1)) / (SELECT n FROM n) AS rs,
             1 + (5 * (RANK() OVER (ORDER BY f ASC) - 1)) / (SELECT n FROM n) AS fs,
             1 + (5 * (RANK() OVER (ORDER BY m ASC) - 1)) / (SELECT n FROM n) AS ms
      FROM c),
    t AS (SELECT SUM(rs) AS sr, SUM(fs) AS sf, SUM(ms) AS sm, COUNT(*) AS n FROM s)
    SELECT customer, r, f, m, rs, fs, ms,
           rs * t.n > t.sr, fs * t.n > t.sf, ms * t.n > t.sm
    FROM s, t"""
    out = {}
    for cust, r, f, m, rs, fs, ms, rh, fh, mh in db.execute(q, (ref,)):
        out[cust] = {"r": r, "f": f, "m": m, "r_score": rs, "f_score": fs, "m_score": ms,
                     "segment": SEGMENTS[(rh, fh, mh)]}
    return ref, out


def test():
    retail = shared("online-retail/online_retail.csv.gz", "RFM on Online Retail",
                  env="CP_ONLINE_RETAIL")
    if retail is None:
        return
    tmp = tempdir("cp-rfm-")
    d = os.path.join(tmp, "dmp")
    rc, out, err = run("init", "--data", d)
    check(rc == 0, "init: " + err)
    rc, out, err = run("import", "--data", d, "--preset", "online-retail", retail)
    check(rc == 0, "import: " + err)
    ref_day, exp = reference(retail)
    ref_date = (datetime.date(1970, 1, 1) + datetime.timedelta(days=ref_day)).isoformat()
    check(ref_date == "2011-12-10", "reference date from the data: " + ref_date)

    rc, out, err = run("rfm", "--data", d, "--detail", "--json")
    if not check(rc == 0, "rfm: " + err):
        return
    rep = json.loads(out)
    check(rep["as_of"] == ref_date, "as_of %s, want %s" % (rep["as_of"], ref_date))
    check(rep["customers"] == len(exp), "customers %d, want %d" % (rep["customers"], len(exp)))
    got = {u["user"]: u for u in rep["users"]}
    check(set(got) == set(exp), "the same customers")
    bad = 0
    for cust, e in exp.items():
        g = got.get(cust)
        if g is None:
            continue
        for k in ("r", "f", "m", "r_score", "f_score", "m_score", "segment"):
            if g[k] != e[k]:
                bad += 1
                if bad <= 10:
                    print("customer %s: %s = %r, want %r" % (cust, k, g[k], e[k]),
                          file=sys.stderr)
    check(bad == 0, "every customer's R, F, M, scores and segment (%d differences)" % bad)
    seg_count = {}
    for e in exp.values():
        seg_count[e["segment"]] = seg_count.get(e["segment"], 0) + 1
    for s in rep["segments"]:
        check(s["customers"] == seg_count.get(s["segment"], 0),
              "segment %s: %d customers" % (s["segment"], s["customers"]))
    check(rep["elapsed_ms"] < 1000, "RFM under 1 s: %.1f ms" % rep["elapsed_ms"])

    # stored tags and attributes, through crowd expressions
    def count(expr):
        rc, out, err = run("count", "--data", d, expr)
        return int(out.strip().replace(",", "")) if rc == 0 else -1
    for seg in sorted(set(SEGMENTS.values())):
        check(count("tag:rfm/" + seg) == seg_count.get(seg, 0), "tag rfm/%s" % seg)
    check(count("tag:rfm") == len(exp), "tag rfm holds every customer")
    for k in ("r", "f", "m"):
        for sc in range(1, 6):
            want = sum(1 for e in exp.values() if e[k + "_score"] == sc)
            check(count("rfm_%s_score = %d" % (k, sc)) == want, "rfm_%s_score = %d" % (k, sc))
    check(count("rfm_m >= 100000") == sum(1 for e in exp.values() if e["m"] >= 100000),
          "rfm_m in cents")
    check(count("rfm_r <= 30 AND rfm_f >= 5") ==
          sum(1 for e in exp.values() if e["r"] <= 30 and e["f"] >= 5), "rfm_r and rfm_f")
    rc, out, err = run("user", "show", "--data", d, "12347", "--json")
    u = json.loads(out) if rc == 0 else {}
    attrs = u.get("attrs", {})
    check(all(attrs.get("rfm_" + k) == exp["12347"][k] for k in ("r", "f", "m")),
          "user 12347 attributes: %r" % attrs)
    check(all(attrs.get("rfm_%s_score" % k) == exp["12347"][k + "_score"]
              for k in ("r", "f", "m")), "user 12347 scores")

    # a later reference date (preview): R shifts by the days, the rest keeps
    rc, out, err = run("rfm", "--data", d, "--as-of", "2011-12-20", "--preview", "--detail",
                       "--json")
    rep2 = json.loads(out) if rc == 0 else {"users": []}
    check(rc == 0 and rep2["stored"] is False, "preview: " + err)
    shifted = all(u["r"] == exp[u["user"]]["r"] + 10 and u["f"] == exp[u["user"]]["f"]
                  for u in rep2["users"])
    check(shifted and len(rep2["users"]) == len(exp), "as_of shifts R by 10 days")
    check(count("tag:rfm/important_value") == seg_count["important_value"],
          "a preview stores nothing")
    rc, out, err = run("rfm", "--data", d, "--as-of", "2011-12-01", "--preview")
    check(rc != 0 and "before the last purchase" in err, "as_of before the data: " + err)
    rc, out, err = run("rfm", "--data", d, "--as-of", "someday", "--preview")
    check(rc != 0 and "as_of" in err, "bad as_of: " + err)

    # the table form and the measures view
    rc, out, err = run("rfm", "--data", d)
    check(rc == 0 and "rfm/important_value" in out and "Scores" in out, "rfm table")
    rc, out, err = run("measures", "--data", d, "--json")
    m = json.loads(out) if rc == 0 else {}
    names = {x["name"]: x for x in m.get("measures", [])}
    check("net_amount" in names and names["invoices"]["users"] == len(exp),
          "measures view: %r" % names.get("invoices"))

    # schedule round trip
    rc, out, err = run("rfm", "--data", d, "--schedule", "24")
    check(rc == 0 and json.loads(out)["every_hours"] == 24, "schedule set: " + err)
    rc, out, err = run("rfm", "--data", d, "--show-schedule")
    s = json.loads(out) if rc == 0 else {}
    check(s.get("every_hours") == 24 and "last_run" in s, "schedule shown: %r" % s)


if __name__ == "__main__":
    main(test)
