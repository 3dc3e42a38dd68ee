#!/usr/bin/env python3
"""Chinese as a first-class language and no silent zeros, end to end: the
CLI on a data directory and `crowdpack serve` over real sockets.

Checks: tag paths in Chinese (tag:兴趣/金融/理财) and display paths
(tag:金融/理财, ambiguity named); tag search (CLI and GET /v1/tags?q=);
Chinese crowd and tier names; RFM and AIPL display names; JSON output in
UTF-8 (no \\u escapes) with 15 significant digits; a value never seen is a
404 with line:column and "did you mean"; value lists and aliases (CLI, GET
/v1/attributes/NAME/values, PUT /v1/attributes/NAME/aliases); and the small
items: untag takes descendants, `user show` finds a user by user_id,
`crowd export | head` ends quietly with exit 0, import prints the reasons
of rejected lines.

Environment: CROWDPACK = path of the binary (default: build/crowdpack).
Exits 0 only when every check passes.
"""
import json
import os
import re
import subprocess
import urllib.parse

from harness import CP, Server, check, main, run, tempdir


def cli_checks(tmp):
    d = os.path.join(tmp, "dmp")
    rc, _, err = run("init", "--data", d)
    check(rc == 0, "init: " + err)
    for name, typ in (("city", "enum"), ("age", "int"), ("points", "int")):
        run("attrs", "define", "--data", d, name, typ)
    rc, _, err = run("tags", "create", "--data", d, "兴趣/金融/理财")
    check(rc == 0, "a Chinese slug path is accepted: " + err)
    run("tags", "create", "--data", d, "interest/beauty/makeup", "--name", "彩妆")
    run("tags", "create", "--data", d, "行业/金融")
    users = [
        {"id": "u1", "attrs": {"city": "shenzhen", "age": 30, "points": 10},
         "tags": ["兴趣/金融/理财"]},
        {"id": "u2", "attrs": {"city": "guangzhou", "age": 40, "points": 500},
         "tags": ["interest/beauty/makeup"]},
        {"id": "u3", "attrs": {"city": "广州", "age": 22, "points": 2000}, "tags": ["行业/金融"]},
        {"id": "u42", "attrs": {"city": "shenzhen", "points": 90},
         "tags": ["interest/beauty", "interest/beauty/makeup"]},
    ] + [{"id": "x%d" % i, "attrs": {"age": 20}} for i in range(30000)]
    body = "".join(json.dumps(u, ensure_ascii=False) + "\n" for u in users).encode()
    rc, _, err = run("load", "--data", d, "-", stdin=body)
    check(rc == 0, "load: " + err)

    def count(expr):
        rc, out, err = run("count", "--data", d, expr)
        return (int(out.strip().replace(",", "")) if rc == 0 else None), err

    check(count("tag:兴趣/金融/理财")[0] == 1, "tag:兴趣/金融/理财")
    check(count("tag:金融/理财")[0] == 1, "tag:金融/理财 by display path")
    check(count("tag:彩妆")[0] == 2, "tag:彩妆 by display name")
    n, err = count("tag:金融")
    check(n is None and "ambiguous" in err and "兴趣/金融" in err and "行业/金融" in err,
          "an ambiguous display path names the candidates: " + err)
    n, err = count('city = "Shenzhen"')
    check(n is None and "1:1" in err and 'did you mean "shenzhen"' in err,
          "a value never seen is an error with a suggestion: " + err)
    n, err = count('city = "深圳"')
    check(n is None and 'no value "深圳"' in err, "深圳 never seen: " + err)
    check(count('city != "深圳"')[0] == 4, "!= accepts a value never seen")

    rc, out, err = run("tags", "search", "--data", d, "理财")
    check(rc == 0 and "兴趣/金融/理财" in out, "tags search 理财: " + out + err)
    rc, out, err = run("tags", "search", "--data", d, "BEAUTY", "--json")
    check(rc == 0 and json.loads(out)["matched"] == 2 and "\\u" not in out,
          "tags search is case-insensitive, JSON in UTF-8: " + out)
    rc, out, err = run("tags", "show", "--data", d, "彩妆")
    check(rc == 0 and "interest/beauty/makeup" in out, "tags show by display name: " + out + err)

    rc, out, err = run("attrs", "show", "--data", d, "city")
    check(rc == 0 and re.search(r"shenzhen\s+2", out) is not None, "attrs show counts: " + out)
    rc, out, err = run("attrs", "alias", "--data", d, "city", "广州", "guangzhou")
    check(rc == 0, "attrs alias: " + err)
    check(count('city = "广州"')[0] == 2 and count('city = "guangzhou"')[0] == 2,
          "广州 = guangzhou in expressions, the old spelling merged")

    rc, out, err = run("crowd", "create", "--data", d, "广州理财", 'city = "广州" OR tag:金融/理财')
    check(rc == 0, "a crowd named 广州理财: " + err)
    check(count("crowd:广州理财")[0] == 3, "crowd:广州理财 bare in an expression")
    tiers = json.dumps({"attribute": "points",
                        "tiers": [{"name": "白银", "min": 0}, {"name": "黄金", "min": 100}]},
                       ensure_ascii=False)
    tf = os.path.join(tmp, "tiers.json")
    with open(tf, "w", encoding="utf-8") as f:
        f.write(tiers)
    rc, out, err = run("tiers", "set", "--data", d, "--file", tf)
    check(rc == 0, "tiers named 白银 and 黄金: " + out + err)

    # Small items.
    rc, out, err = run("user", "untag", "--data", d, "u42", "interest/beauty")
    check(rc == 0 and count("tag:interest/beauty")[0] == 1,
          "untag interest/beauty also takes interest/beauty/makeup")
    rc, _, _ = run("crowd", "create", "--data", d, "young", "age = 20")
    p = subprocess.run(["/bin/bash", "-c", "'%s' crowd export --data '%s' young | head -1 "
                        ">/dev/null; echo ${PIPESTATUS[0]}" % (CP, d)],
                       capture_output=True, timeout=60)
    check(p.stdout.decode().strip() == "0" and b"Input/output" not in p.stderr,
          "crowd export | head ends quietly with 0: %r %r" % (p.stdout, p.stderr))

    ev = os.path.join(tmp, "ev.ndjson")
    with open(ev, "w") as f:
        f.write('{"type":"identify","anonymousId":"a1","traits":{"city":"shenzhen"},'
                '"messageId":"m1","timestamp":"2024-01-01T00:00:00Z"}\n')
        f.write('{"type":"identify","anonymousId":"a1","userId":"crm-200","messageId":"m2",'
                '"timestamp":"2024-01-01T00:00:01Z"}\n')
        f.write('{"type":"bogus"}\nnot json\n')
    rc, out, err = run("import", "--data", d, "--events", "-q", ev)
    check(rc == 0 and "2 lines rejected" in err and "line 3:" in err and "line 4:" in err,
          "import prints the reasons of rejected lines: " + err)
    rc, out, err = run("user", "show", "--data", d, "crm-200")
    check(rc == 0 and "shenzhen" in out, "user show finds a user by user_id: " + out + err)
    return d


def call(srv, method, path, body=None):
    r = srv.call(method, path, body, ensure_ascii=False)
    return r.status, r.raw


def q(s):
    return urllib.parse.quote(s, safe="")


def server_checks(tmp, d):
    srv = Server(tmp, d, threads=2)
    srv.start()
    try:
        st, raw = call(srv, "GET", "/v1/tags?q=" + q("理财"))
        j = json.loads(raw)
        check(st == 200 and j["matched"] == 1 and j["tags"][0]["path"] == "兴趣/金融/理财",
              "GET /v1/tags?q=理财: %s" % raw[:300])
        check(b"\\u" not in raw and "理财".encode() in raw, "JSON answers are UTF-8: %r" % raw[:200])
        st, raw = call(srv, "GET", "/v1/tags?q=" + q("金融") + "&limit=1")
        j = json.loads(raw)
        check(st == 200 and j["matched"] == 3 and len(j["tags"]) == 1 and j["truncated"],
              "tag search limit: %s" % raw[:300])
        st, raw = call(srv, "GET", "/v1/tags/" + q("彩妆"))
        check(st == 200 and json.loads(raw)["path"] == "interest/beauty/makeup",
              "GET /v1/tags/彩妆 by display name: %s" % raw[:200])
        st, raw = call(srv, "POST", "/v1/crowds/estimate",
                       {"expression": 'age > 1 AND city = "Guangzhou"'})
        j = json.loads(raw)
        check(st in (400, 404) and j["error"].get("line") == 1 and j["error"].get("column") == 13 and
              'did you mean "guangzhou"' in j["error"]["message"],
              "estimate with a value never seen: %s" % raw[:300])
        st, raw = call(srv, "GET", "/v1/attributes/city/values?limit=1")
        j = json.loads(raw)
        check(st == 200 and j["values"][0] == {"value": "shenzhen", "count": 3} and
              j["truncated"] and {"alias": "广州", "value": "guangzhou"} in j["aliases"],
              "GET /v1/attributes/city/values: %s" % raw[:300])
        st, raw = call(srv, "PUT", "/v1/attributes/city/aliases", {"aliases": {"深圳": "shenzhen"}})
        check(st == 200, "PUT /v1/attributes/city/aliases: %s" % raw[:300])
        st, raw = call(srv, "POST", "/v1/crowds/estimate", {"expression": 'city = "深圳"'})
        check(st == 200 and json.loads(raw)["count"] == 3, "深圳 now counts: %s" % raw[:200])
        st, raw = call(srv, "PUT", "/v1/attributes/city/aliases", {"aliases": {"x": "nowhere"}})
        check(st == 404, "an alias of a value never seen: %s" % raw[:200])
        st, raw = call(srv, "GET", "/v1/users/crm-200")
        check(st == 200, "GET /v1/users/crm-200 by user_id: %s" % raw[:200])

        # RFM and AIPL display names.
        evs = []
        # Three customers: shares of 1/3 are 0.333333, which jansson's
        # default 17 digits print as 0.33333299999999999.
        for i, (uid, n, amt) in enumerate([("b1", 5, 900), ("b2", 1, 10), ("b3", 3, 300)]):
            for k in range(n):
                evs.append({"type": "track", "userId": uid, "event": "purchase",
                            "messageId": "p-%s-%d" % (uid, k),
                            "timestamp": "2024-03-%02dT10:00:00Z" % (1 + k + i),
                            "properties": {"amount": amt, "invoice": "%s-%d" % (uid, k)}})
        st, raw = call(srv, "POST", "/v1/batch", {"batch": evs})
        check(st == 200, "purchases: %s" % raw[:200])
        st, raw = call(srv, "POST", "/v1/rfm", {"store": True})
        j = json.loads(raw) if st == 200 else {}
        names = {s["segment"]: s.get("name") for s in j.get("segments", [])}
        check(names.get("important_value") == "重要价值客户" and
              names.get("general_retain") == "一般挽留客户", "RFM names: %s" % raw[:400])
        check(b"0.333333" in raw and re.search(rb"\d\.\d{16,}", raw) is None,
              "reals have at most 15 digits: %r" % raw[:400])
        st, raw = call(srv, "GET", "/v1/tags/rfm/important_keep")
        check(st == 200 and json.loads(raw)["name"] == "重要保持客户",
              "the RFM tag carries its display name: %s" % raw[:200])
        st, raw = call(srv, "POST", "/v1/crowds/estimate", {"expression": "tag:重要价值客户"})
        check(st == 200, "tag:重要价值客户 by display name: %s" % raw[:200])
        st, raw = call(srv, "POST", "/v1/aipl", {
            "name": "brand", "store": True,
            "stages": {"awareness": ["page"], "interest": ["add_to_cart"],
                       "purchase": ["purchase"], "loyalty": {"repeat_purchases": 2}}})
        j = json.loads(raw) if st == 200 else {}
        stages = {s["stage"]: s.get("name") for s in j.get("stages", [])}
        check(stages.get("awareness") == "认知" and stages.get("loyalty") == "忠诚",
              "AIPL stage names: %s" % raw[:400])

        # Clusters under a Chinese root with Chinese display names.
        st, raw = call(srv, "POST", "/v1/clusters", {"attributes": ["age"], "k": 2,
                                                     "root": "客户分群/年龄",
                                                     "names": ["甲", "乙"]})
        j = json.loads(raw) if st == 200 else {}
        check(st == 200 and [c.get("display_name") for c in j.get("clusters", [])] == ["甲", "乙"],
              "clusters with Chinese names: %s" % raw[:300])
        st, raw = call(srv, "GET", "/v1/tags/" + q("客户分群") + "/" + q("年龄") + "/c2")
        check(st == 200 and json.loads(raw)["name"] == "乙", "cluster tag display name: %s"
              % raw[:200])
        st, raw = call(srv, "POST", "/v1/clusters", {"attributes": ["age"], "k": 2,
                                                     "names": ["甲"]})
        check(st == 400, "names must be k names: %s" % raw[:200])

        # The CLI on the server: export | head, tags search.
        p = subprocess.run(["/bin/bash", "-c", "'%s' crowd export --server %s young | head -1 "
                            ">/dev/null; echo ${PIPESTATUS[0]}" % (CP, srv.base)],
                           capture_output=True, timeout=60)
        check(p.stdout.decode().strip() == "0", "export --server | head: %r %r" % (p.stdout,
                                                                                   p.stderr))
        rc, out, err = run("tags", "search", "--server", srv.base, "金融")
        check(rc == 0 and "行业/金融" in out, "tags search --server: " + out + err)
    finally:
        srv.stop()


def test():
    tmp = tempdir("cp-chinese-")
    d = cli_checks(tmp)
    server_checks(tmp, d)
    # After the server: the CLI's RFM and AIPL tables name the segments.
    rc, out, err = run("rfm", "--data", d, "--preview")
    check(rc == 0 and "重要价值客户" in out and "rfm/important_value" in out,
          "rfm table shows display names beside tags: " + out + err)


if __name__ == "__main__":
    main(test)
