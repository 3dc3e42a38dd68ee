#!/usr/bin/env python3
"""Quick mode of the side-by-side benchmark (bench/peers/run.sh --quick).

A 20,000-user demo population is loaded into crowdpack, SQLite and - when
installed - Redis and PostgreSQL; every system must return crowdpack's
answer for every query it runs (counts, the TGI vector, the exported ids).
Nothing about time is asserted.

Env: CROWDPACK = path of the built binary (its directory holds the layer
libraries libcp_*.a the harness links), CP_SOURCE_DIR = repository root.
SQLite (libsqlite3-dev) is required; Redis and PostgreSQL are skipped,
with a message, when their server binaries or client libraries are absent.
"""
import json
import os
import shutil
import subprocess
import sys

from harness import CP, SRC, check, main, tempdir


def have_pkg(name):
    return subprocess.run(["pkg-config", "--exists", name]).returncode == 0


def test():
    src = SRC
    build = os.path.dirname(os.path.abspath(CP))
    if not have_pkg("sqlite3"):
        print("FAIL: SQLite development files missing: install libsqlite3-dev "
              "(scripts/install-deps.sh should list it)", file=sys.stderr)
        return 1
    work = tempdir("cp-peers-quick-")
    run = subprocess.run([os.path.join(src, "bench", "peers", "run.sh"), "--quick",
                          "--build-dir", build, "--work", work],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=600)
    log = run.stdout
    check(run.returncode == 0, "run.sh --quick exited %d:\n%s" % (run.returncode, log[-4000:]))
    path = os.path.join(work, "results-20000.json")
    if not os.path.exists(path):
        print(log[-4000:], file=sys.stderr)
        check(False, "no results file")
        return 1
    r = json.load(open(path))
    check(r["users"] == 20000, "population of 20,000 users")
    check(r["mismatches"] == 0, "no mismatches (got %d)" % r["mismatches"])
    systems = {s["name"]: s for s in r["systems"]}
    required = ["crowdpack", "sqlite"]
    optional = []
    for name, server in (("redis", "redis-server"), ("postgresql", None)):
        s = systems.get(name)
        present = shutil.which(server) if server else any(
            os.path.exists("/usr/lib/postgresql/%s/bin/initdb" % v)
            for v in os.listdir("/usr/lib/postgresql")) if os.path.isdir(
                "/usr/lib/postgresql") else False
        if not present or s is None:
            print("skipped %s: server not installed" % name)
        elif s["error"] and "built without" in s["error"]:
            print("skipped %s: %s" % (name, s["error"]))
        else:
            optional.append(name)
    for name in required + optional:
        s = systems.get(name)
        check(s is not None and not s["error"], "%s available (%s)" % (
            name, s["error"] if s else "absent"))
    for q in r["queries"]:
        cp = q["results"]["crowdpack"]
        check(cp["ran"], "crowdpack ran %s" % q["name"])
        for name in ["sqlite"] + optional + ["floor"]:
            res = q["results"].get(name)
            if res is None or (not res["ran"] and res["skipped"]):
                continue  # e.g. Redis geo, floor attributes: stated skips
            check(res["ran"] and res["match"] and res["count"] == cp["count"],
                  "%s / %s: count %s vs crowdpack %s (%s)" % (
                      name, q["name"], res["count"], cp["count"], res["error"]))
    # SQLite must have answered every query (it is the embedded baseline).
    check(all(q["results"]["sqlite"]["ran"] for q in r["queries"]),
          "sqlite answered every query")


if __name__ == "__main__":
    main(test)
