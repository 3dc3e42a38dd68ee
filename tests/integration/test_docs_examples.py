#!/usr/bin/env python3
"""Every curl example in docs/*.md runs against a real server.

For each documentation file, a fresh data directory is seeded with the data
the examples talk about (tags, attributes, users, crowds and events), an
admin key is created, `crowdpack serve` starts on a free loopback port, and
the file's curl commands run in order in a shell with B, KEY, K and J set
as docs/api.md defines them. A command must exit 0 and answer 2xx; when
the example's next line is an answer comment (`# {...}`) that parses as
JSON, the answer must be JSON with the same top-level keys, and an
expected `{"error": ...}` answer must come back as a 4xx with that code.

Placeholders that cannot be known in advance (a key id in the text) are
replaced before running: see SUBSTITUTIONS. Prints "N passed, M failed".

Environment: CROWDPACK = path of the binary; CP_SOURCE_DIR = the source tree.
"""
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import time

from harness import OK, SRC, Server, check, main, run, skip, tempdir

DOCS = os.path.join(SRC, "docs")

# ----------------------------------------------------------- extraction

def examples(path):
    """Yields (line, command, expected-answer text or None) for each curl
    command in the file's ```sh blocks. Continuation lines (a trailing
    backslash, or an open quote) are joined as the shell would."""
    lines = open(path, encoding="utf-8").read().split("\n")
    i, in_sh = 0, False
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("```"):
            in_sh = (not in_sh) and ln.strip() in ("```sh", "```bash", "```shell")
            i += 1
            continue
        if not in_sh or not ln.startswith("curl "):
            i += 1
            continue
        start = i + 1
        cmd = ln
        while True:
            complete = not cmd.rstrip().endswith("\\")
            if complete:
                try:
                    shlex.split(cmd, comments=True)
                except ValueError:
                    complete = False
            if complete or i + 1 >= len(lines):
                break
            i += 1
            cmd += "\n" + lines[i]
        i += 1
        # The answer comment right below, possibly over several lines.
        expect = None
        if i < len(lines) and lines[i].startswith("# {"):
            parts = []
            while i < len(lines) and lines[i].startswith("#"):
                parts.append(lines[i][1:].strip())
                i += 1
            expect = " ".join(parts)
        yield start, cmd, expect


def strip_comment(cmd):
    """The command without a trailing `# ...` comment (outside quotes)."""
    out, q = [], None
    for k, ch in enumerate(cmd):
        if q:
            if ch == q:
                q = None
        elif ch in "'\"":
            q = ch
        elif ch == "#" and (k == 0 or cmd[k - 1] in " \t"):
            break
        out.append(ch)
    return "".join(out).rstrip()


# --------------------------------------------------------------- server

def api(srv, key, method, path, body=None):
    """A request the examples' setting needs; any answer but 2xx raises."""
    return srv.call(method, path, body, key=key or None, expect=OK).body or {}


TAGS = ["interest/finance/consulting", "interest/finance/stocks", "interest/finance/loans",
        "interest/sports", "interest/travel", "life/pets", "life/baby", "shopping/beauty"]
CITIES = ["guangzhou", "shenzhen", "shanghai", "beijing"]


def seed(srv, key, tmp, keyless=False):
    """The population the examples assume: tags, typed attributes, users
    (including u1 and user/1), crowds and events for the value models. The
    server without keys also gets the crowds that the keyed examples
    create before its own examples use them."""
    api(srv, key, "POST", "/v1/taxonomy", {"tags": [{"path": t} for t in TAGS]})
    api(srv, key, "POST", "/v1/attributes", {"attributes": [
        {"name": "age", "type": "int"}, {"name": "gender", "type": "enum"},
        {"name": "vip", "type": "bool"}, {"name": "points", "type": "int"},
        {"name": "is_member", "type": "bool"}, {"name": "city", "type": "enum"},
        {"name": "loc", "type": "geo"}]})
    rnd = random.Random(7)
    users = []
    for n in range(600):
        uid = "user/1" if n == 0 else "u%d" % n
        tags = rnd.sample(TAGS, rnd.randint(1, 3))
        if uid == "u2":
            tags = sorted(set(tags) | {"life/baby", "life/pets"})
        users.append({"id": uid, "attrs": {
            "age": rnd.randint(18, 65), "gender": rnd.choice(["female", "male"]),
            "vip": rnd.random() < 0.3, "points": rnd.randint(0, 9000),
            "is_member": rnd.random() < 0.4, "city": rnd.choice(CITIES),
            "loc": [23.0 + rnd.random(), 113.0 + rnd.random()]},
            "tags": tags})
    api(srv, key, "POST", "/v1/users", {"users": users})
    with open(os.path.join(tmp, "users.ndjson"), "w") as f:
        for n in range(600, 700):
            f.write(json.dumps({"id": "u%d" % n, "attrs": {"age": 30 + n % 20},
                                "tags": ["interest/finance/loans"]}) + "\n")
    crowds = [("customers", "vip = true"), ("women", 'gender = "female"'),
              ("young_finance", "tag:interest/finance AND age < 40"),
              ("loyal", "points >= 5000"), ("vip", "vip = true"),
              ("high_value", "points >= 5000")]  # the premium crowd of docs/activation.md
    if keyless:
        crowds += [("fin_young", "tag:interest/finance AND age < 35"),
                   ("reach", "crowd:fin_young OR crowd:women")]
    for name, expr in crowds:
        api(srv, key, "POST", "/v1/crowds", {"name": name, "expression": expr})
    # Events for RFM, AIPL and funnels: the last weeks of 2011, as in the
    # Online Retail data the value-model examples are written for.
    api(srv, key, "PUT", "/v1/intake/config", {"indexed_properties": ["brand"]})
    now = 1323043200  # 2011-12-05
    batch = []
    for n in range(1, 400):
        uid = "u%d" % n
        for step, p in [("exposure", 1.0), ("page", 0.8), ("click", 0.6),
                        ("add_to_cart", 0.4), ("payment", 0.3), ("purchase", 0.3)]:
            if rnd.random() < p:
                ts = now - rnd.randint(0, 20) * 86400 - rnd.randint(0, 80000)
                batch.append({"type": "track", "userId": uid, "event": step,
                              "messageId": "m-%s-%s" % (uid, step),
                              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
                              "properties": {"brand": rnd.choice(["acme", "other"]),
                                             "revenue": rnd.randint(10, 500)}})
        if len(batch) > 400:
            api(srv, key, "POST", "/v1/batch", {"batch": batch})
            batch = []
    if batch:
        api(srv, key, "POST", "/v1/batch", {"batch": batch})
    # Two accounts (Segment groups) for the group predicates.
    api(srv, key, "POST", "/v1/batch", {"batch": [
        {"type": "group", "userId": "u%d" % n, "groupId": g, "messageId": "g-%d" % n,
         "traits": {"name": g.title() + " Inc", "plan": plan}}
        for n, (g, plan) in enumerate([("acme", "enterprise")] * 5 + [("globex", "free")] * 5, 1)]})


def example_campaign():
    """The example campaign of docs/activation.md (its first ```json block),
    which the campaign examples send as spring-sale.json."""
    with open(os.path.join(DOCS, "activation.md"), encoding="utf-8") as f:
        m = re.search(r"```json\n(.*?)```", f.read(), re.S)
    return m.group(1) if m else "{}"


# ------------------------------------------------------- substitutions

def sub_key_id(srv, key, cmd):
    """A literal key id in a revoke example: the id of the last key created."""
    keys = api(srv, key, "GET", "/v1/keys")["keys"]
    others = [k for k in keys if k.get("label") != "docs-admin"]
    if others:
        cmd = re.sub(r"/v1/keys/[0-9a-f]{16}", "/v1/keys/" + others[-1]["id"], cmd)
    return cmd


SUBSTITUTIONS = [
    (re.compile(r"/v1/keys/[0-9a-f]{16}"), sub_key_id),
]


# ---------------------------------------------------------------- main

def uses_key(cmd):
    return "$K" in cmd or "$KEY" in cmd or " -u " in cmd


def run_file(path):
    """Runs one file's examples: those that send a key ($K, $KEY, -u)
    against a server with keys, the others against one without any key
    (loopback, the documented default), each seeded alike."""
    name = os.path.basename(path)
    found = list(examples(path))
    if not found:
        return
    tmp = tempdir("cp-docs-")
    procs = []
    try:
        servers = {}
        key = ""
        for keyed in (True, False):
            if not any(uses_key(c) == keyed for _, c, _ in found):
                continue
            sub = os.path.join(tmp, "keyed" if keyed else "open")
            os.mkdir(sub)
            with open(os.path.join(sub, "spring-sale.json"), "w", encoding="utf-8") as f:
                f.write(example_campaign())
            data = os.path.join(sub, "dmp")
            r = run("init", "--data", data)
            if not check(r.returncode == 0, "%s: init: %s" % (name, r.stderr)):
                return
            k = ""
            if keyed:
                r = run("keys", "create", "--data", data, "--role", "admin",
                        "--label", "docs-admin")
                k = key = (r.stdout.strip().split() or [""])[-1]
                check(r.returncode == 0 and k.startswith("cpk_"),
                      "%s: key: %r %r" % (name, r.stdout, r.stderr))
            srv = Server(sub, data, threads=2).start()
            procs.append(srv)
            seed(srv, k, sub, keyless=not keyed)
            servers[keyed] = (srv, sub)
        for line, cmd, expect in found:
            where = "%s:%d" % (name, line)
            srv, cwd = servers[uses_key(cmd)]
            base = srv.base
            env = dict(os.environ, B=base, KEY=key, K="Authorization: Bearer " + key,
                       J="Content-Type: application/json")
            cmd = strip_comment(cmd).replace("localhost:8080", base.replace("http://", ""))
            for rx, fn in SUBSTITUTIONS:
                if rx.search(cmd):
                    cmd = fn(srv, key, cmd)
            piped = "|" in cmd.split("-d", 1)[0] or re.search(r"\|\s*\w+\s*[^']*$", cmd)
            full = cmd if piped else cmd + " -w '\\n%{http_code}'"
            r = subprocess.run(["bash", "-c", full], capture_output=True, text=True,
                               cwd=cwd, env=env, timeout=60)
            if not check(r.returncode == 0, "%s: exit %d: %s\n  %s" % (where, r.returncode, cmd, r.stderr)):
                continue
            if piped:
                check(r.stdout.strip() != "", "%s: no output: %s" % (where, cmd))
                continue
            body, _, status = r.stdout.rpartition("\n")
            status = int(status or 0)
            exp = None
            if expect is not None:
                try:
                    exp = json.loads(expect)
                except ValueError:
                    exp = None
            want_error = isinstance(exp, dict) and "error" in exp
            if want_error:
                check(400 <= status < 500, "%s: expected an error, got %d: %s" % (where, status, body))
            else:
                check(200 <= status < 300, "%s: HTTP %d: %s\n  %s" % (where, status, body[:300], cmd))
            if isinstance(exp, dict) and " -o " not in cmd:
                try:
                    got = json.loads(body)
                except ValueError:
                    check(False, "%s: answer is not JSON: %s" % (where, body[:200]))
                    continue
                if want_error:
                    check(got.get("error", {}).get("code") == exp["error"].get("code"),
                          "%s: error code %r, documented %r" % (where, got.get("error"), exp["error"]))
                else:
                    check(set(exp) <= set(got),
                          "%s: documented keys %s missing from %s" % (where, sorted(set(exp) - set(got)), body[:300]))
    finally:
        for srv in procs:
            srv.stop(grace=20)
        shutil.rmtree(tmp, ignore_errors=True)




def test():
    if shutil.which("curl") is None:
        skip("curl is not installed (scripts/install-deps.sh installs it)")
    for f in sorted(os.listdir(DOCS)):
        if f.endswith(".md"):
            run_file(os.path.join(DOCS, f))


if __name__ == "__main__":
    main(test)
