#!/usr/bin/env python3
"""Incremental imports count every row exactly once (src/engine/import.c).

Runs the real binary ($CROWDPACK) on temporary data directories with a slice
of the Online Retail file (../shared/data/online-retail, outside this
repository: when it is missing the test says so and generates rows of the
same shape instead). Scenarios, each with its exact expected event count
derived here from the rows (a row is an event when its CustomerID is not
empty, as the online-retail preset says), not from crowdpack's output:

  import; re-import; rename + append (only the new rows); gzip copy; moved
  copy; an older snapshot; a partial last line (held back, then completed);
  --final; an NDJSON file that grows and is gzipped; --dedup-rows across a
  re-sorted copy and across an append that repeats an earlier row. At the
  end the directory built step by step answers did() counts exactly like
  one built by a single import of the final file.
"""
import csv
import gzip
import json
import os
import random
import shutil

from harness import SHARED, check, main, run, tempdir

# ../shared beside the repository, as CI places it (missing: generated rows,
# so the test runs in full either way).
RETAIL = os.path.join(SHARED, "online-retail", "online_retail.csv.gz")


def retail_rows(n):
    """Header and n data lines (text, with their line breaks)."""
    if os.path.exists(RETAIL):
        out = []
        with gzip.open(RETAIL, "rt", encoding="utf-8", newline="") as f:
            for line in f:
                out.append(line if line.endswith("\n") else line + "\n")
                if len(out) > n:
                    break
        print("using %d rows of %s" % (n, RETAIL))
        return out[0], out[1:]
    print("NOTE: %s is missing (shared data outside the repository): "
          "using %d generated rows of the same shape instead" % (RETAIL, n))
    rnd = random.Random(11)
    rows = []
    for i in range(n):
        cust = "" if rnd.random() < 0.25 else "%d.0" % (12000 + rnd.randrange(80))
        inv = ("C" if rnd.random() < 0.02 else "") + str(536000 + i // 7)
        row = '%s,%d,"ITEM, NO %d",%d,2010-12-%02d 08:%02d:00,%.2f,%s,United Kingdom\n' % (
            inv, 85000 + rnd.randrange(50), i % 40, rnd.randrange(1, 12), 1 + i % 28,
            i % 60, rnd.randrange(50, 900) / 100.0, cust)
        rows.append(row)
        if rnd.random() < 0.01:
            rows.append(row)  # identical rows: two events, as in the real file
    return "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n", \
        rows[:n]


def has_customer(row):
    r = next(csv.reader([row]), [])
    return len(r) >= 8 and r[6].strip() != ""


def events_in(rows):
    """Rows the preset makes events of: a non-empty CustomerID (7th column)."""
    return sum(1 for r in rows if has_customer(r))


def imp(data, path, *extra):
    rc, out, err = run("import", "--json", "-q", "--data", data, "--preset", "online-retail",
                       *extra, path)
    if rc != 0:
        check(False, "import %s %s" % (os.path.basename(path), " ".join(extra)), err)
        return {}
    return json.loads(out)


def count(data, expr):
    rc, out, err = run("count", "--data", data, expr)
    check(rc == 0, "count %s" % expr, err)
    return int(out.strip().replace(",", "")) if rc == 0 else -1


def write(path, text, mode="w"):
    with open(path, mode, encoding="utf-8", newline="") as f:
        f.write(text)


def test_csv(tmp):
    header, rows = retail_rows(4000)
    first, second = rows[:2000], rows[2000:2900]
    last = [r for r in rows[2900:] if has_customer(r)][:1]
    check(len(last) == 1, "a row with a customer for the partial-line step")
    data = os.path.join(tmp, "d")
    run("init", "--data", data)
    a = os.path.join(tmp, "a.csv")
    write(a, header + "".join(first))
    shutil.copy(a, os.path.join(tmp, "snapshot.csv"))

    s = imp(data, a)
    check(s.get("events") == events_in(first), "first import: every event once",
          "%s vs %d" % (s.get("events"), events_in(first)))
    s = imp(data, a)
    check(s.get("already_done") is True and s.get("events") == 0, "re-import: nothing", str(s))

    b = os.path.join(tmp, "b.csv")
    os.rename(a, b)
    write(b, "".join(second), "a")
    s = imp(data, b)
    check(s.get("resumed_at_line") == 2001, "renamed and grown: resumed after the old rows",
          str(s))
    check(s.get("events") == events_in(second), "renamed and grown: only the new rows",
          "%s vs %d" % (s.get("events"), events_in(second)))
    check(s.get("duplicates") == 0, "grown: nothing counted as a duplicate", str(s))

    with open(b, "rb") as f, gzip.open(os.path.join(tmp, "copy.csv.gz"), "wb") as g:
        g.write(f.read())
    s = imp(data, os.path.join(tmp, "copy.csv.gz"))
    check(s.get("already_done") is True and s.get("events") == 0, "gzip copy: nothing", str(s))
    os.makedirs(os.path.join(tmp, "moved"))
    shutil.copy(b, os.path.join(tmp, "moved", "orders-2011.csv"))
    s = imp(data, os.path.join(tmp, "moved", "orders-2011.csv"))
    check(s.get("already_done") is True and s.get("events") == 0, "moved copy: nothing", str(s))
    s = imp(data, os.path.join(tmp, "snapshot.csv"))
    check(s.get("already_done") is True and s.get("events") == 0,
          "the older snapshot of the grown file: nothing", str(s))

    row = last[0]
    cut = len(row) // 2
    write(b, row[:cut], "a")
    s = imp(data, b)
    check(s.get("events") == 0 and s.get("held_back_bytes") == len(row[:cut].encode()),
          "partial last line: held back", str(s))
    write(b, row[cut:], "a")
    s = imp(data, b)
    check(s.get("events") == 1 and s.get("held_back_bytes") == 0,
          "completed line: imported once", str(s))
    s = imp(data, b)
    check(s.get("already_done") is True, "completed file: nothing more", str(s))

    # --final takes an unterminated last line of a finished file
    c = os.path.join(tmp, "c.csv")
    write(c, header + row.rstrip("\n"))
    d3 = os.path.join(tmp, "d3")
    run("init", "--data", d3)
    s = imp(d3, c)
    check(s.get("events") == 0 and s.get("held_back_bytes", 0) > 0, "unterminated: held", str(s))
    s = imp(d3, c, "--final")
    check(s.get("events") == 1, "--final: the last line is imported", str(s))

    # The step-by-step directory equals a single import of the final file.
    ref = os.path.join(tmp, "ref")
    run("init", "--data", ref)
    s = imp(ref, b)
    total = events_in(first) + events_in(second) + 1
    check(s.get("events") == total, "reference import", "%s vs %d" % (s.get("events"), total))
    for k in (1, 2, 3, 5, 10, 20, 50):
        for ev in ("purchase", "refund"):
            e = "did(%s) >= %d" % (ev, k)
            check(count(data, e) == count(ref, e), "incremental = single import: " + e)
    return header, rows


def test_dedup_rows(tmp, header, rows):
    data = os.path.join(tmp, "dd")
    run("init", "--data", data)
    body = rows[:1500]
    f = os.path.join(tmp, "dd.csv")
    write(f, header + "".join(body))
    s = imp(data, f, "--dedup-rows")
    check(s.get("events") == events_in(body), "--dedup-rows: identical rows stay events",
          "%s vs %d" % (s.get("events"), events_in(body)))
    shuffled = list(body)
    random.Random(3).shuffle(shuffled)
    g = os.path.join(tmp, "resorted.csv")
    write(g, header + "".join(shuffled))
    s = imp(data, g, "--dedup-rows")
    check(s.get("events") == 0 and s.get("duplicates") == events_in(body),
          "--dedup-rows: a re-sorted copy is all duplicates", str(s))
    # an appended row equal to an earlier one is a new event, not a duplicate
    again = [r for r in body if has_customer(r)][0]
    write(f, again, "a")
    s = imp(data, f, "--dedup-rows")
    check(s.get("events") == 1 and s.get("duplicates") == 0,
          "--dedup-rows: a repeated row appended counts once more", str(s))


def test_ndjson(tmp):
    data = os.path.join(tmp, "nd")
    run("init", "--data", data)
    lines = [json.dumps({"type": "track", "userId": "u%d" % (i % 7), "event": "visit",
                         "timestamp": "2024-03-%02dT10:00:00Z" % (1 + i % 20)}) + "\n"
             for i in range(40)]
    lines.append(lines[3])  # the same line twice: two events
    f = os.path.join(tmp, "ev.ndjson")
    write(f, "".join(lines[:25]))

    def ndimp(path, *extra):
        rc, out, err = run("import", "--json", "-q", "--data", data, "--events", *extra, path)
        check(rc == 0, "ndjson import", err)
        return json.loads(out) if rc == 0 else {}

    s = ndimp(f)
    check(s.get("events") == 25, "ndjson: first part", str(s))
    write(f, "".join(lines[25:]), "a")
    s = ndimp(f)
    check(s.get("events") == len(lines) - 25 and s.get("resumed_at_line") == 25,
          "ndjson: grown, only the new lines", str(s))
    with open(f, "rb") as r, gzip.open(f + ".gz", "wb") as w:
        w.write(r.read())
    s = ndimp(f + ".gz")
    check(s.get("already_done") is True, "ndjson: gzip copy recognised", str(s))
    write(f, '{"type":"track","userId":"u1","event":"vis', "a")
    s = ndimp(f)
    check(s.get("events") == 0 and s.get("held_back_bytes", 0) > 0, "ndjson: partial line held",
          str(s))
    write(f, 'it","timestamp":"2024-03-30T10:00:00Z"}\n', "a")
    s = ndimp(f)
    check(s.get("events") == 1, "ndjson: completed line imported", str(s))
    check(count(data, "did(visit) >= 1") == 7, "ndjson: users")
    # six visits each; u3 also the repeat of line 3, u1 the completed line
    check(count(data, "did(visit) >= 7") == 2, "ndjson: exact per-user counts")
    check(count(data, "did(visit) >= 8") == 0, "ndjson: nothing counted twice")


def test():
    tmp = tempdir("cp-incr-")
    header, rows = test_csv(tmp)
    test_dedup_rows(tmp, header, rows)
    test_ndjson(tmp)


if __name__ == "__main__":
    main(test)
