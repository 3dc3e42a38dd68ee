#!/usr/bin/env python3
"""The official Segment and RudderStack Node SDKs, with their default
settings, against a real `crowdpack serve`.

Installs @segment/analytics-node and @rudderstack/rudder-sdk-node with
`npm ci` from tests/integration/sdk/package-lock.json into a temporary
directory (skipped, exit 0 with a message, when node/npm or the registry
is unreachable), then drives each SDK through a tiny proxy that forwards
its first batch to the server but answers the SDK 503, so the SDK retries
a batch the server already applied. Each SDK sends identify, track with
products, page, screen, group (two people of one account, with the
account's billing email), alias, and an identify full of placeholder
values. Checks: every event landed exactly once, the group did not merge
its members, group traits stayed the group's, placeholders came back as
warnings and lost nothing.

RudderStack's default is a gzip body with a form content type: it runs
with its defaults, and a gzip probe checks the server inflates first.

Environment: CROWDPACK = path of the binary (default: build/crowdpack).
"""
import gzip
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import harness
from harness import Server, check, main, must, new_key, skip, tempdir

SDK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sdk")

# ------------------------------------------------------------------- proxy

class Proxy:
    """Forwards every request to the server unchanged (body, Content-Type,
    Content-Encoding, Authorization). The first batch is forwarded too, but
    the SDK gets 503 instead of the server's answer: it must retry a batch
    that was already applied, which the messageId dedup has to absorb."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.seen = []        # (path, status from the server, its JSON answer)
        self.failed_one = False
        self.lock = threading.Lock()
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                req = urllib.request.Request(proxy.upstream + self.path, data=body,
                                             method="POST")
                for h in ("Content-Type", "Content-Encoding", "Authorization", "User-Agent"):
                    if self.headers.get(h):
                        req.add_header(h, self.headers.get(h))
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, text = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, text = e.code, e.read()
                try:
                    answer = json.loads(text)
                except ValueError:
                    answer = text.decode(errors="replace")
                with proxy.lock:
                    proxy.seen.append((self.path, status, answer))
                    fail = not proxy.failed_one and status == 200
                    if fail:
                        proxy.failed_one = True
                if fail:
                    status, text = 503, b'{"error":{"code":"unavailable","message":"forced"}}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- the SDKs

DRIVER = r"""
const which = process.argv[2], host = process.argv[3], key = process.argv[4];
const p = which === 'seg' ? 'seg' : 'rs';
const events = [
  ['identify', {userId: p + '-alice', traits: {name: 'Alice', email: p + '-alice@example.com'}}],
  ['identify', {userId: p + '-bob', traits: {name: 'Bob'}}],
  ['track', {userId: p + '-alice', event: 'Order Completed',
             properties: {order_id: p + '-o1', total: 30, currency: 'USD',
                          products: [{product_id: 'sku-1', price: 10, quantity: 1},
                                     {product_id: 'sku-2', price: 20, quantity: 1}]}}],
  ['page', {userId: p + '-alice', name: 'Home', properties: {path: '/'}}],
  ['screen', {userId: p + '-alice', name: 'Cart'}],
  ['group', {userId: p + '-alice', groupId: p + '-acme',
             traits: {name: 'Acme Inc', email: p + '-billing@acme.com', plan: 'enterprise'}}],
  ['group', {userId: p + '-bob', groupId: p + '-acme',
             traits: {name: 'Acme Inc', email: p + '-billing@acme.com'}}],
  ['alias', {userId: p + '-alice-2', previousId: p + '-alice'}],
  ['identify', {anonymousId: p + '-anon-1',
                traits: {email: 'n/a', phone: 'unknown'},
                context: {device: {type: 'ios',
                                   advertisingId: '00000000-0000-0000-0000-000000000000'}}}],
  ['identify', {anonymousId: p + '-anon-2',
                traits: {email: 'N/A', phone: 'unknown'},
                context: {device: {type: 'ios',
                                   advertisingId: '00000000-0000-0000-0000-000000000000'}}}],
];
async function main() {
  if (which === 'seg') {
    const {Analytics} = require('@segment/analytics-node');
    const a = new Analytics({writeKey: key, host});  // default settings otherwise
    a.on('error', (e) => console.error('segment error', e && e.reason || e));
    for (const [m, msg] of events) a[m](msg);
    await a.closeAndFlush({timeout: 60000});
  } else {
    const Analytics = require('@rudderstack/rudder-sdk-node');
    const opts = {dataPlaneUrl: host};
    const a = new Analytics(key, opts);
    for (const [m, msg] of events) a[m](msg);
    await a.flush();
  }
  console.log('sent', events.length);
}
main().catch((e) => { console.error('driver failed', e); process.exit(1); });
"""


def install_sdks(tmp):
    if shutil.which("node") is None or shutil.which("npm") is None:
        skip("node or npm is not installed")
    work = os.path.join(tmp, "sdk")
    os.makedirs(work)
    for f in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(SDK_DIR, f), work)
    try:
        r = subprocess.run(["npm", "ci", "--prefer-offline", "--ignore-scripts", "--no-audit",
                            "--no-fund", "--loglevel=error"], cwd=work, capture_output=True,
                           text=True, timeout=240)
    except subprocess.TimeoutExpired:
        skip("npm ci took longer than 240 s (registry unreachable?)")
    if r.returncode != 0:
        skip("npm ci failed (registry unreachable?): %s" % r.stderr.strip()[-400:])
    with open(os.path.join(work, "driver.js"), "w") as f:
        f.write(DRIVER)
    return work


def drive(work, which, host, key):
    args = ["node", "driver.js", which, host, key]
    r = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and "sent 10" in r.stdout, "%s driver runs" % which,
          r.stdout + r.stderr)


def server_inflates_gzip(srv, key):
    """Probe: does the server take a gzip body (Content-Encoding: gzip)?"""
    body = gzip.compress(json.dumps({"batch": [
        {"type": "track", "userId": "gzip-probe", "event": "probe",
         "messageId": "gzip-probe-1"}]}).encode())
    st, _ = srv.call("POST", "/v1/batch", raw=body, key=key,
                     headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    return st == 200


def test():
    tmp = tempdir("cp-sdks-")
    srv = None
    proxies = []
    try:
        work = install_sdks(tmp)
        data = os.path.join(tmp, "data")
        must("init", "--data", data, timeout=30)
        keys = {}
        for role in ("write", "admin"):
            keys[role] = new_key(data, role)
        srv = Server(tmp, data, threads=2)
        srv.start()
        admin = keys["admin"]

        def count(expr):
            st, j = srv.call("POST", "/v1/count", {"expression": expr}, key=admin)
            check(st == 200, "count %s" % expr, j)
            return j.get("count") if isinstance(j, dict) else None

        def whois(t, v):
            st, j = srv.call("GET", "/v1/users/%s/%s" % (t, v), key=admin)
            return j if st == 200 else None

        check(server_inflates_gzip(srv, keys["write"]),
              "the server takes a gzip body (RudderStack's default)")
        for which in ("seg", "rs"):
            px = Proxy(srv.base)
            proxies.append(px)
            t0 = time.time()
            drive(work, which, px.base, keys["write"])
            print("  %s: %d requests through the proxy, %.1fs" % (which, len(px.seen),
                                                                  time.time() - t0), flush=True)
            ok = [s for s in px.seen if s[1] == 200]
            check(px.failed_one and len(ok) >= 2,
                  "%s: the first batch was answered 503 and retried" % which, px.seen)
            check(all(s[1] == 200 for s in px.seen), "%s: every request was accepted" % which,
                  px.seen)
            dups = sum(s[2].get("duplicates", 0) for s in ok if isinstance(s[2], dict))
            applied = sum(s[2].get("applied", 0) for s in ok if isinstance(s[2], dict))
            check(applied == 10, "%s: ten events applied once" % which, (applied, px.seen))
            check(dups >= 1, "%s: the retry came back as duplicates" % which, px.seen)
            rejected = [s[2].get("rejected") for s in ok if isinstance(s[2], dict)
                        and s[2].get("rejected")]
            check(not rejected, "%s: nothing rejected" % which, rejected)
            warns = [w for s in ok if isinstance(s[2], dict) for w in s[2].get("warnings", [])]
            fields = sorted({(w["field"], w["reason"]) for w in warns})
            check(("traits.email", "placeholder") in fields and
                  ("traits.phone", "placeholder") in fields and
                  ("context.device.advertisingId", "placeholder") in fields,
                  "%s: placeholders came back as warnings" % which, warns)

            p = which
            check(count('did("Order Completed") = 1 AND group:%s-acme' % p) == 1,
                  "%s: the track landed exactly once" % p)
            check(count("did(page) = 1 AND did(screen) = 1 AND group:%s-acme" % p) == 1,
                  "%s: page and screen landed exactly once" % p)
            check(count("group:%s-acme" % p) == 2, "%s: both members in the group" % p)
            check(count('group:%s-acme AND group.plan = "enterprise"' % p) == 2,
                  "%s: group traits are the group's (plan)" % p)
            a, b = whois("user_id", p + "-alice"), whois("user_id", p + "-bob")
            check(a is not None and b is not None and
                  a["user"]["ordinal"] != b["user"]["ordinal"],
                  "%s: the account's billing email did not merge its members" % p, (a, b))
            check(a is not None and "Acme" not in json.dumps(a) and
                  "billing" not in json.dumps(a),
                  "%s: group traits are not the user's" % p, a)
            check(a is not None and a["traits"].get("name") == "Alice" or
                  (a is not None and "Alice" in json.dumps(a)),
                  "%s: alice keeps her name" % p, a)
            a2 = whois("user_id", p + "-alice-2")
            check(a2 is not None and a is not None and
                  a2["user"]["ordinal"] == a["user"]["ordinal"],
                  "%s: alias joined the new id to the user" % p, (a2, a))
            n1, n2 = whois("anonymous_id", p + "-anon-1"), whois("anonymous_id", p + "-anon-2")
            check(n1 is not None and n2 is not None and
                  n1["user"]["ordinal"] != n2["user"]["ordinal"],
                  "%s: two people with placeholder values stay two" % p, (n1, n2))
            px.close()
        if harness.failed() and srv:
            print(srv.stderr()[-3000:], file=sys.stderr)
    finally:
        for px in proxies:
            try:
                px.close()
            except Exception:  # noqa: BLE001 - already closed
                pass
        if srv:
            srv.stop()


if __name__ == "__main__":
    main(test)
