"""Integration test of `crowdpack bench --rtb` (src/cli/bench_rtb.c): a
tiny run (3,000 users, 50 crowds, 20 line items, 1 s per wrk run) must
finish, answer every bid request (no 400), bid on some and not on others,
and report the figures it promises. Timings are never checked. Skips when
wrk (Debian package) is not installed.
"""
import json
import shutil

import harness
from harness import check, check_eq, main, run


def test():
    if shutil.which("wrk") is None:
        harness.skip("wrk is not installed (apt-get install wrk)")
    tmp = harness.tempdir("cp-bench-rtb-")
    r = run("bench", "--rtb", "--users", "3000", "--crowds", "50", "--lines", "20",
            "--bodies", "500", "--seconds", "1", "--conns", "4", "--dir", tmp, "--json",
            timeout=300)
    if not check_eq(r.returncode, 0, "bench --rtb exit status"):
        print(r.stderr)
        return
    out = json.loads(r.stdout)
    check_eq(out["users"], 3000, "users")
    check_eq(out["lines"], 20, "line items")
    check_eq(out["crowds"], 50, "crowds")
    bid, floor = out["bid"], out["floor"]
    check(floor["requests_per_sec"] > 0, "the floor ran", floor)
    check(bid["requests_per_sec"] > 0, "the bidder ran", bid)
    check_eq(bid["answered_400"], 0, "no bid request refused")
    check(bid["answered_200"] > 0, "some requests got a bid", bid)
    check(bid["answered_204"] > 0, "some requests got none", bid)
    check(bid["handled"] >= bid["answered_200"] + bid["answered_204"],
          "the histogram counts every answer", bid)
    check(0 < bid["server_p50_ms"] <= bid["server_p99_ms"], "server p50 <= p99", bid)
    check(bid["requests_per_server_cpu_second"] > 0, "per CPU-second figure", bid)


if __name__ == "__main__":
    main(test)
