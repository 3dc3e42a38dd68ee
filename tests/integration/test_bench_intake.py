#!/usr/bin/env python3
"""`crowdpack bench --intake` at tiny sizes (src/cli/bench_intake.c): the
shape of the JSON report and of the table, and that its counts agree with
each other and with the generator — never its timings (no timed
assertions: this machine is shared).

Checked: both synthetic imports (CSV with a mapping, the same events as
NDJSON) applied every generated event and created exactly the distinct
users the generator reports; each floor read as many records as there are
events; the per-CPU-second rates are the counts over the CPU seconds
reported; the HTTP run acknowledged requests x batch events, the answers'
"applied" add up to them, the server's event count equals them and there
were no errors; latency percentiles are ordered. Usage errors exit 2.
Online Retail is imported only with CP_BENCH_INTAKE_RETAIL=1 (about 10-20
s); then a missing file is reported on one SKIP line (exit 77).

Environment: CROWDPACK (binary), CP_SOURCE_DIR (repo root). Prints
"N passed, M failed"; exits 0 only when every check passes.
"""
import json
import math
import os

import harness
from harness import check, main, shared


def run(*args, timeout=600):
    return harness.run("bench", "--intake", *args, timeout=timeout)


def close(a, b, rel=1e-6):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def check_import(imp, events, distinct):
    name = imp.get("name")
    check(imp.get("events") == events, name + ": every generated event applied", imp)
    check(imp.get("lines") == events, name + ": one line per event", imp)
    check(imp.get("rejected") == 0 and imp.get("duplicates") == 0 and imp.get("skipped_rows") == 0,
          name + ": nothing rejected, duplicated or skipped", imp)
    check(imp.get("users_created") == distinct, name + ": users created = distinct users", imp)
    check(imp.get("file_bytes", 0) > 0, name + ": file size reported", imp)
    cpu, wall = imp.get("cpu_seconds", 0), imp.get("wall_seconds", 0)
    check(cpu > 0 and wall > 0, name + ": CPU and wall time reported", imp)
    if cpu > 0:
        check(close(imp["events_per_cpu_second"], events / cpu, 1e-3),
              name + ": events per CPU second = events / CPU seconds", imp)
    if wall > 0:
        check(close(imp["events_per_second_wall"], events / wall, 1e-3),
              name + ": events per second = events / wall seconds", imp)
    beh = imp.get("beh_updates", 0)
    allu = beh + imp.get("attr_updates", 0) + imp.get("meas_updates", 0)
    if beh == 0:
        check(imp.get("beh_updates_per_cpu_second") is None,
              name + ": behaviour rate null while the engine reports no updates", imp)
    elif cpu > 0:
        check(close(imp["beh_updates_per_cpu_second"], beh / cpu, 1e-3),
              name + ": behaviour updates per CPU second consistent", imp)
        check(beh >= events, name + ": at least one behaviour update per event", imp)
    if allu == 0:
        check(imp.get("updates_per_cpu_second") is None, name + ": update rate null", imp)
    elif cpu > 0:
        check(close(imp["updates_per_cpu_second"], allu / cpu, 1e-3),
              name + ": all updates per CPU second consistent", imp)
    fl = imp.get("floor", {})
    # Small files are read several times, until the CPU clock can time them.
    passes = fl.get("passes", 0)
    check(passes >= 1 and fl.get("records") == events * passes,
          name + ": the floor read one record per event per pass", fl)
    check(fl.get("cpu_seconds", 0) > 0 and fl.get("what") in ("csv_next", "json_loadb"),
          name + ": floor timed", fl)
    if fl.get("cpu_seconds", 0) > 0 and cpu > 0:
        check(close(imp["cpu_over_floor"], cpu / fl["cpu_seconds"], 1e-3),
              name + ": CPU / floor consistent", imp)


def test():
    events, users, batch, conns = 20000, 5000, 50, 2
    rc, out, err = run("--events", str(events), "--users", str(users), "--seconds", "2",
                       "--connections", str(conns), "--batch", str(batch), "--fsyncs", "20",
                       "--online-retail", "off", "--json")
    check(rc == 0, "bench --intake --json exits 0", err)
    try:
        rep = json.loads(out)
    except ValueError as e:
        check(False, "the JSON report parses", "%s: %s" % (e, out[:300]))
        rep = None
    if rep:
        for k in ("version", "machine", "synthetic", "imports", "http"):
            check(k in rep, "report has " + k, list(rep))
        syn = rep.get("synthetic", {})
        check(syn.get("events") == events and syn.get("users") == users,
              "synthetic sizes as asked", syn)
        distinct = syn.get("distinct_users", 0)
        check(0 < distinct <= users, "distinct users within 1..U", syn)
        check(rep.get("machine", {}).get("cpus", 0) >= 1 and
              len(rep.get("machine", {}).get("load_average", [])) == 3, "machine context", rep.get("machine"))
        imps = rep.get("imports", [])
        check([i.get("name") for i in imps] == ["Online Retail (preset)", "synthetic CSV (mapping)",
                                                "synthetic NDJSON (Segment)"],
              "three import rows in order", imps)
        if len(imps) == 3:
            check(imps[0].get("skipped") == "--online-retail off", "Online Retail skipped", imps[0])
            check(imps[1].get("floor", {}).get("what") == "csv_next", "CSV floor is csv_next", imps[1])
            check(imps[2].get("floor", {}).get("what") == "json_loadb", "NDJSON floor is json_loadb",
                  imps[2])
            for imp in imps[1:]:
                check_import(imp, events, distinct)
            # The same events either way: the same users, the same index work.
            check(imps[1].get("beh_updates") == imps[2].get("beh_updates"),
                  "CSV and NDJSON feed the same behaviour updates", (imps[1], imps[2]))
        h = rep.get("http", {})
        check(h.get("connections") == conns and h.get("batch") == batch and h.get("auth") is True,
              "HTTP parameters as asked", h)
        check(h.get("errors") == 0 and h.get("unknown_outcome") == 0, "no HTTP errors", h)
        check(h.get("requests", 0) > 0, "some requests acknowledged", h)
        check(h.get("events") == h.get("requests", -1) * batch, "events = requests x batch", h)
        check(h.get("applied") == h.get("events"), "answers' applied add up to the events", h)
        check(h.get("server_events") == h.get("events") and h.get("verified") is True,
              "server count = acknowledged events", h)
        lat = h.get("ack_latency_ms", {})
        check(0 < lat.get("p50", 0) <= lat.get("p99", 0) <= lat.get("max", 0),
              "latency p50 <= p99 <= max", lat)
        if h.get("seconds", 0) > 0:
            check(close(h.get("events_per_second", 0), h["events"] / h["seconds"], 1e-3),
                  "events/s = events / seconds", h)
        fs = h.get("fsync", {})
        check(fs.get("calls", 0) >= 1 and fs.get("per_second", 0) > 0, "fsync floor measured", fs)

    # The table: both parts, the floor note, the verification line.
    rc, out, err = run("--events", "3000", "--users", "1000", "--seconds", "1", "--connections",
                       "1", "--fsyncs", "5", "--online-retail", "off", "--skip", "ndjson",
                       "--no-auth")
    check(rc == 0, "bench --intake (table) exits 0", err)
    for s in ("Bulk import", "synthetic CSV (mapping)", "skipped: --skip ndjson",
              "skipped: --online-retail off", "EVENTS/S/CORE", "FLOOR REC/S/CORE",
              "HTTP batch intake", "ack latency per request: p50", "fdatasync/s",
              "equals the acknowledged events", "no API key"):
        check(s in out, "table shows " + repr(s), out[-2000:])

    # Usage errors.
    for bad in (["--batch", "0"], ["--batch", "5000"], ["--skip", "nope"], ["--connections", "x"]):
        rc, _, err = run(*bad)
        check(rc == 2, "usage error exits 2: " + " ".join(bad), err)
    p = harness.run("bench", "--help", timeout=60)
    check(p.returncode == 0 and "--intake" in p.stdout, "bench --help mentions --intake", p.stdout)

    retail = None
    if os.environ.get("CP_BENCH_INTAKE_RETAIL") == "1":
        retail = shared("online-retail/online_retail.csv.gz", "the Online Retail bench",
                        env="CP_ONLINE_RETAIL")
    if retail:
        rc, out, err = run("--online-retail", retail, "--skip", "csv,ndjson,http", "--json")
        check(rc == 0, "Online Retail bench exits 0", err)
        r = json.loads(out)["imports"][0] if rc == 0 else {}
        check(r.get("events") == 406829 and r.get("users_created") == 4372 and
              r.get("skipped_rows") == 135080 and r.get("rejected") == 0,
              "Online Retail: 406,829 events, 4,372 users, 135,080 rows without a customer", r)
        check(r.get("floor", {}).get("records") == 541909, "Online Retail floor: 541,909 records", r)
    elif retail is None and os.environ.get("CP_BENCH_INTAKE_RETAIL") != "1":
        print("Online Retail part not asked for (CP_BENCH_INTAKE_RETAIL=1 runs it)")


if __name__ == "__main__":
    main(test)
