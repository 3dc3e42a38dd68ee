#!/usr/bin/env python3
"""Campaigns over HTTP and the CLI (docs/activation.md, src/server/h_campaigns.c,
src/cli/cmd_campaign.c).

The example of docs/activation.md, read from the document itself, is PUT as
written: 200 with version 1, read back in canonical form, PUT again for
version 2, listed, with both versions in its history. Bad documents get 400
naming the field (and "field" in the error body); an unknown tag or crowd is
a 400 too; a read key may not PUT. The server restarts with everything
kept; DELETE keeps the history. The CLI does the same with --server and on
a data directory (`crowdpack campaign load --data DIR example.json`), and
the curl examples of the document run as written against the server.
"""
import json
import os
import re
import subprocess

from harness import SRC, Server, check, check_eq, main, must, new_key, run, section, tempdir

DOC = os.path.join(SRC, "docs", "activation.md")


def doc_text():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def example():
    """The first ```json block of docs/activation.md: the example, verbatim."""
    m = re.search(r"```json\n(.*?)```", doc_text(), re.S)
    return m.group(1)


def curl_examples():
    """The ```sh block of the "HTTP API" section, one command per line."""
    text = doc_text().split("## HTTP API", 1)[1]
    m = re.search(r"```sh\n(.*?)```", text, re.S)
    return [l for l in m.group(1).splitlines() if l.strip()]


def prepare(data):
    """A data directory with the names the example targets."""
    must("init", "--data", data)
    must("attrs", "define", "--data", data, "age", "int")
    must("tags", "create", "--data", data, "interest/finance")
    must("crowd", "create", "--data", data, "high_value", "age >= 30")


def with_field(doc, path, value):
    """A copy of doc with the field at path ("lines.0.bid") set to value
    (None removes it)."""
    d = json.loads(json.dumps(doc))
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    cur = d
    for k in keys[:-1]:
        cur = cur[k]
    if value is None:
        del cur[keys[-1]]
    else:
        cur[keys[-1]] = value
    return d


BAD = [
    # (path, value, status, field, message start)
    ("lines.0.targting", "x", 400, "lines[0].targting", "lines[0].targting: unknown field"),
    ("lines.0.creatives.0.w", 0, 400, "lines[0].creatives[0].w",
     "lines[0].creatives[0].w: must be a positive integer"),
    ("lines.0.bid", 0.005, 400, "lines[0].bid", "lines[0].bid: 0.005 has more than 2 decimals"),
    ("schedule.timezone", "Mars/Base", 400, "schedule.timezone",
     "schedule.timezone: unknown time zone"),
    ("schedule.end", "2026-11-30", 400, "schedule.end", "schedule.end: \"2026-11-30\" is before"),
    ("budget.currency", 5, 400, "budget.currency", "budget.currency: must be an ISO 4217"),
    ("lines.0.premiums.0.pct", 1000, 400, "lines[0].premiums[0].pct",
     "lines[0].premiums[0].pct: must be an integer from -90 to 900"),
    ("lines.0.targeting", "tag:interest/sports", 400, "lines[0].targeting",
     "lines[0].targeting: "),
    ("lines.0.targeting", "tag:interest/finance AND (", 400, "lines[0].targeting",
     "lines[0].targeting: "),
    ("lines.0.premiums.0.crowd", "low_value", 400, "lines[0].premiums[0].crowd",
     "lines[0].premiums[0].crowd: unknown crowd \"low_value\""),
    ("id", "autumn", 400, "id", "id: \"autumn\" is not the id in the URL (\"spring-sale\")"),
    ("lines.0.creatives.0.adm", "x" * (65 * 1024), 413, "lines[0].creatives[0].adm",
     "lines[0].creatives[0].adm: longer than"),
]


def test():
    tmp = tempdir("cp-campaigns-")
    text = example()
    ex = json.loads(text)
    path = os.path.join(tmp, "spring-sale.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)

    data = os.path.join(tmp, "srv")
    prepare(data)
    srv = Server(tmp, data, threads=2).start()
    state = {}

    @section
    def put_get_history():
        r = srv.call("PUT", "/v1/campaigns/spring-sale", raw=text)
        check_eq((r.status, r.body), (200, {"id": "spring-sale", "version": 1}), "PUT the example")
        r = srv.call("GET", "/v1/campaigns/spring-sale")
        check(r.status == 200 and r.body.get("version") == 1, "GET it back", r.body)
        got = r.body if r.status == 200 else {}
        line = (got.get("lines") or [{}])[0]
        check_eq(line.get("bid"), 8.0, "the bid reads back")
        check('"bid":8.00,' in r.raw.decode(), "money comes back with two decimals",
              r.raw[:300])
        check_eq(got.get("budget"), {"total": 100000.0, "daily": 5000.0, "currency": "CNY"},
                 "the budget reads back")
        check_eq((got.get("schedule") or {}).get("end"), "2026-12-31", "the end date reads back")
        check_eq(line.get("creatives", [{}])[0].get("adm"), ex["lines"][0]["creatives"][0]["adm"],
                 "the markup is kept as given")
        # the canonical form is a document the API takes back as it is
        r = srv.call("PUT", "/v1/campaigns/spring-sale", body=got)
        check_eq((r.status, r.body), (200, {"id": "spring-sale", "version": 2}), "PUT again")
        r = srv.call("GET", "/v1/campaigns/spring-sale/history")
        vs = r.body.get("versions", []) if r.status == 200 else []
        check_eq([v["version"] for v in vs], [1, 2], "history lists both versions")
        check(all(v["campaign"]["lines"][0]["id"] == "retarget" for v in vs),
              "each version has its document", r.body)
        r = srv.call("GET", "/v1/campaigns")
        check(r.status == 200 and [c["id"] for c in r.body["campaigns"]] == ["spring-sale"],
              "GET /v1/campaigns lists it", r.body)
        state["doc"] = srv.call("GET", "/v1/campaigns/spring-sale").raw

    @section
    def bad_documents():
        for p, v, status, field, msg in BAD:
            r = srv.call("PUT", "/v1/campaigns/spring-sale", body=with_field(ex, p, v))
            err = (r.body or {}).get("error", {}) if isinstance(r.body, dict) else {}
            ok = (r.status == status and err.get("field") == field
                  and err.get("message", "").startswith(msg))
            check(ok, "bad document %s=%r: %d naming %s" % (p, str(v)[:20], status, field),
                  "%d %r" % (r.status, r.body))
        r = srv.call("PUT", "/v1/campaigns/spring-sale", raw='{"id":')
        check(r.status == 400 and r.body["error"].get("line") == 1, "malformed JSON: 400 with "
              "its position", r.body)
        r = srv.call("PUT", "/v1/campaigns/spring-sale", raw=text, ctype="text/plain")
        check_eq(r.status, 415, "a non-JSON content type")
        r = srv.call("GET", "/v1/campaigns/spring-sale/history")
        check_eq(len(r.body["versions"]), 2, "refused documents stored nothing")
        for method, p in (("GET", "/v1/campaigns/nope"), ("DELETE", "/v1/campaigns/nope"),
                          ("GET", "/v1/campaigns/nope/history")):
            r = srv.call(method, p)
            check_eq(r.status, 404, "%s %s" % (method, p))
        r = srv.call("GET", "/v1/campaigns/spring-sale/delivery")
        check(r.status == 200 and isinstance(r.body, dict), "delivery", r.body)

    @section
    def cli_with_server():
        S = ("--server", srv.base)
        rc, out, err = run("campaign", "list", *S)
        check(rc == 0 and "spring-sale" in out and "acme" in out, "campaign list --server",
              out + err)
        rc, out, err = run("campaign", "show", *S, "spring-sale")
        check(rc == 0 and json.loads(out)["version"] == 2, "campaign show --server", out + err)
        rc, out, err = run("campaign", "history", *S, "--json", "spring-sale")
        check(rc == 0 and len(json.loads(out)["versions"]) == 2, "campaign history --server",
              out + err)
        rc, out, err = run("campaign", "load", *S, path)
        check(rc == 0 and "version 3" in out, "campaign load --server", out + err)
        bad = os.path.join(tmp, "bad.json")
        with open(bad, "w") as f:
            json.dump(with_field(ex, "lines.0.creatives.0.w", 0), f)
        rc, out, err = run("campaign", "load", *S, bad)
        check(rc == 1 and "lines[0].creatives[0].w: must be a positive integer" in err,
              "campaign load --server of a bad document names the field", err)

    @section
    def curl_examples_run():
        # The document's curl lines as written, against this server; the
        # last one deletes the campaign.
        base = srv.base
        outs = []
        for line in curl_examples():
            if line.startswith(("B=", "J=")):
                continue
            script = 'B=%s\nJ="Content-Type: application/json"\n%s' % (base, line)
            p = subprocess.run(["bash", "-c", script], cwd=tmp, capture_output=True, timeout=60)
            out = p.stdout.decode("utf-8", "replace")
            body = None
            try:
                body = json.loads(out)
            except ValueError:
                pass
            check(p.returncode == 0 and isinstance(body, dict) and "error" not in body,
                  "docs: %s" % line, out[:300] + p.stderr.decode()[:300])
            outs.append(body)
        check(len(outs) >= 6, "the document has the curl examples", len(outs))
        check(outs[0] == {"id": "spring-sale", "version": 4}, "docs: the PUT answers the version",
              outs[0])
        r = srv.call("GET", "/v1/campaigns/spring-sale")
        check_eq(r.status, 404, "docs: the DELETE example deleted it")

    @section
    def restart_keeps_everything():
        srv.stop()
        srv.start()
        r = srv.call("GET", "/v1/campaigns/spring-sale/history")
        vs = r.body.get("versions", []) if r.status == 200 else []
        check_eq([(v["version"], v["deleted"]) for v in vs],
                 [(1, False), (2, False), (3, False), (4, False), (5, True)],
                 "restart keeps every version")
        r = srv.call("PUT", "/v1/campaigns/spring-sale", raw=text)
        check_eq((r.status, r.body), (200, {"id": "spring-sale", "version": 6}),
                 "a PUT after the delete continues the versions")
        srv.stop()
        srv.start()
        r = srv.call("GET", "/v1/campaigns/spring-sale")
        check(r.status == 200 and r.body["version"] == 6, "and the restart keeps it", r.body)

    @section
    def contact_cap():
        r = srv.call("GET", "/v1/contact-cap")
        check_eq((r.status, r.body), (200, {"count": 0, "per": "day"}), "no contact cap at first")
        r = srv.call("PUT", "/v1/contact-cap", raw='{"count":2,"per":"week"}')
        check_eq((r.status, r.body), (200, {"count": 2, "per": "week"}), "PUT a contact cap")
        for body, field in [('{"count":-1}', "count"), ('{"count":1.5}', "count"),
                            ('{"per":"day"}', "count"), ('{"count":1,"per":"month"}', "per"),
                            ('{"count":1,"every":"day"}', "every"), ('[1]', "object")]:
            r = srv.call("PUT", "/v1/contact-cap", raw=body)
            msg = r.body.get("error", {}).get("message", "") if isinstance(r.body, dict) else ""
            check(r.status == 400 and field in msg, "contact cap %s: 400 naming %s" % (body, field),
                  r.body)
        srv.stop()
        srv.start()
        r = srv.call("GET", "/v1/contact-cap")
        check_eq((r.status, r.body), (200, {"count": 2, "per": "week"}),
                 "a restart keeps the contact cap")

    @section
    def read_only_server():
        ro = Server(tmp, data, "--read-only", name="ro", threads=1).start()
        r = ro.call("GET", "/v1/campaigns")
        check(r.status == 503 and r.body["error"]["code"] == "activation_off",
              "a read-only server keeps no campaigns: 503", r.body)
        ro.stop()

    @section
    def damaged_log_refuses():
        srv.stop()
        log = os.path.join(data, "activate", "campaigns.log")
        with open(log, "r+b") as f:
            f.seek(200)
            b = f.read(1)
            f.seek(200)
            f.write(bytes([b[0] ^ 0x20]))
        res = srv.try_start()
        check(res is not None and res[0] != 0 and "campaigns.log: damaged record" in res[1],
              "a damaged campaigns.log stops the server, naming the file", res)
        with open(log, "r+b") as f:
            f.seek(200)
            f.write(b)
        srv.start()
        r = srv.call("GET", "/v1/campaigns/spring-sale")
        check(r.status == 200 and r.body["version"] == 6, "repaired, it starts again", r.body)

    put_get_history()
    read_only_server()
    bad_documents()
    cli_with_server()
    curl_examples_run()
    restart_keeps_everything()
    contact_cap()
    damaged_log_refuses()
    srv.stop()

    @section
    def roles():
        d = os.path.join(tmp, "keys")
        prepare(d)
        rk, wk = new_key(d, "read"), new_key(d, "write")
        s = Server(tmp, d, name="keys", threads=2).start()
        r = s.call("PUT", "/v1/campaigns/spring-sale", raw=text, key=rk)
        check_eq(r.status, 403, "a read key may not PUT")
        r = s.call("PUT", "/v1/campaigns/spring-sale", raw=text, key=wk)
        check_eq(r.status, 200, "a write key may")
        r = s.call("GET", "/v1/campaigns/spring-sale", key=rk)
        check_eq(r.status, 200, "a read key may GET")
        r = s.call("DELETE", "/v1/campaigns/spring-sale", key=rk)
        check_eq(r.status, 403, "a read key may not DELETE")
        s.stop()

    @section
    def embedded():
        d = os.path.join(tmp, "emb")
        prepare(d)
        rc, out, err = run("campaign", "load", "--data", d, path)
        check(rc == 0 and out.strip() == "campaign spring-sale: version 1",
              "campaign load --data DIR example.json", out + err)
        rc, out, err = run("campaign", "load", "--data", d, "--json", "-", stdin=text)
        check(rc == 0 and json.loads(out) == {"id": "spring-sale", "version": 2},
              "campaign load from stdin", out + err)
        rc, out, err = run("campaign", "list", "--data", d)
        check(rc == 0 and "spring-sale" in out and "100000.00" in out, "campaign list --data",
              out + err)
        rc, out, err = run("campaign", "history", "--data", d)
        check(rc == 2, "campaign history needs an id", err)
        rc, out, err = run("campaign", "history", "--data", d, "spring-sale")
        check(rc == 0 and len([l for l in out.splitlines() if "active" in l]) == 2,
              "campaign history --data", out + err)
        rc, out, err = run("campaign", "show", "--data", d, "spring-sale")
        check(rc == 0 and json.loads(out)["lines"][0]["bid"] == 8.0, "campaign show --data",
              out + err)
        nope = with_field(ex, "lines.0.premiums.0.crowd", "nope")
        bad = os.path.join(tmp, "nope.json")
        with open(bad, "w") as f:
            json.dump(nope, f)
        rc, out, err = run("campaign", "load", "--data", d, bad)
        check(rc == 1 and "lines[0].premiums[0].crowd: unknown crowd \"nope\"" in err,
              "campaign load --data: unknown crowd", err)
        rc, out, err = run("campaign", "delete", "--data", d, "spring-sale")
        check(rc == 0 and "deleted" in out, "campaign delete --data", out + err)
        rc, out, err = run("campaign", "show", "--data", d, "spring-sale")
        check(rc == 1 and "not found" in err, "campaign show after delete", err)
        # The server sees what the CLI stored.
        s = Server(tmp, d, name="emb", threads=2).start()
        r = s.call("GET", "/v1/campaigns/spring-sale/history")
        check(r.status == 200 and len(r.body["versions"]) == 3, "the server reads the CLI's "
              "campaigns", r.body)
        s.stop()

    roles()
    embedded()


if __name__ == "__main__":
    main(test)
