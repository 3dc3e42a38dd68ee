#!/usr/bin/env python3
"""The HTTP server's defences, against the real binary over real sockets:
compressed bodies (gzip, deflate, a zip bomb, truncated data), the
cross-site rules (content type, Origin, CORS), slow clients (1,100 trickling
connections, the request deadline, the per-IP limit, a stalled export
reader), honest health (/healthz, /readyz, metrics, a read-only server) and
the small items (one status line per answer, the largest seed, per-event
size limits, malformed JSON positions).

Exits 0 only when every check passes; prints "N passed, M failed".
Environment: CROWDPACK = path of the binary (default: build/crowdpack).
"""
import gzip
import json
import os
import resource
import selectors
import socket
import time
import zlib

import harness
from harness import check, main, must, section, tempdir

MAX_BODY = 1 << 20



class Server(harness.Server):
    """The server under test with --max-body MAX_BODY; call() sends exactly
    the headers given (no Content-Type added) and returns (status, body,
    headers)."""

    def __init__(self, tmp, data, name, *extra):
        harness.Server.__init__(self, tmp, data, "--max-body", MAX_BODY, *extra, name=name,
                                threads=2, json_type=False)

    def call(self, method, path, raw=None, body=None, headers=None, timeout=30):
        r = harness.Server.call(self, method, path, body, raw=raw, headers=headers,
                                timeout=timeout)
        return r.status, r.body, r.headers


JSON = {"Content-Type": "application/json"}


def code_of(body):
    return body.get("error", {}).get("code") if isinstance(body, dict) else None


def raw_exchange(port, data, wait=3.0, src=None):
    """Sends raw bytes, reads until the server closes or `wait` passes."""
    s = socket.socket()
    if src:
        s.bind((src, 0))
    s.settimeout(wait)
    s.connect(("127.0.0.1", port))
    out = b""
    try:
        s.sendall(data)
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        pass
    s.close()
    return out


# ----------------------------------------------------------- compression

@section
def test_compression(srv):
    ev = {"userId": "gz1", "traits": {"email": "gz1@example.com"}}
    # RudderStack's Node SDK: gzip under a form content type, on every Segment endpoint.
    form_gz = {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"}
    st, b, _ = srv.call("POST", "/v1/identify", raw=gzip.compress(json.dumps(ev).encode()),
                        headers=form_gz)
    check(st == 200 and b.get("success"), "gzip identify under a form type: %r %r" % (st, b))
    batch = {"batch": [{"type": "track", "userId": "gz1", "event": "Viewed"},
                       {"type": "identify", "userId": "gz2", "traits": {"age": 3}}]}
    st, b, _ = srv.call("POST", "/v1/batch", raw=gzip.compress(json.dumps(batch).encode()),
                        headers=form_gz)
    check(st == 200 and b.get("applied") == 2, "gzip batch: %r %r" % (st, b))
    # deflate as zlib (RFC 9110) and as raw deflate (what some clients send).
    for name, data in (("zlib", zlib.compress(json.dumps({"userId": "df1"}).encode())),
                       ("raw", zlib.compressobj(6, zlib.DEFLATED, -15).compress(
                           json.dumps({"userId": "df2"}).encode()) + b"")):
        if name == "raw":
            co = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = co.compress(json.dumps({"userId": "df2"}).encode()) + co.flush()
        st, b, _ = srv.call("POST", "/v1/identify", raw=data,
                            headers={"Content-Type": "application/json",
                                     "Content-Encoding": "deflate"})
        check(st == 200, "deflate (%s) identify: %r %r" % (name, st, b))
    # Every JSON endpoint, not just intake.
    st, b, _ = srv.call("POST", "/v1/tags", raw=gzip.compress(b'{"path":"gzipped"}'),
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st in (200, 201), "gzip body on POST /v1/tags: %r %r" % (st, b))
    st, b, _ = srv.call("POST", "/v1/crowds/estimate",
                        raw=gzip.compress(b'{"expression":"all"}'),
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st == 200 and "count" in json.dumps(b), "gzip estimate: %r %r" % (st, b))
    # Concatenated gzip members are one body.
    two = gzip.compress(b'{"userId":') + gzip.compress(b'"gzcat"}')
    st, b, _ = srv.call("POST", "/v1/identify", raw=two,
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st == 200, "concatenated gzip members: %r %r" % (st, b))
    # A zip bomb: 64 MiB of spaces in ~64 KiB, refused while inflating.
    bomb = gzip.compress(b" " * (64 << 20), 9)
    check(len(bomb) < MAX_BODY, "the bomb fits the raw limit (%d bytes)" % len(bomb))
    t0 = time.time()
    st, b, _ = srv.call("POST", "/v1/batch", raw=bomb,
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st == 413 and code_of(b) == "too_large" and b["error"].get("limit") == MAX_BODY,
          "zip bomb: %r %r" % (st, b))
    check(time.time() - t0 < 10, "the bomb is refused quickly (%.1fs)" % (time.time() - t0))
    # Truncated gzip: 400 naming the problem.
    full = gzip.compress(json.dumps({"userId": "trunc", "traits": {"x": "y" * 200}}).encode())
    st, b, _ = srv.call("POST", "/v1/identify", raw=full[:len(full) // 2],
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st == 400 and code_of(b) == "malformed_compressed_body"
          and "truncated" in b["error"]["message"], "truncated gzip: %r %r" % (st, b))
    # Not gzip at all.
    st, b, _ = srv.call("POST", "/v1/identify", raw=b'{"userId":"plain"}',
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st == 400 and code_of(b) == "malformed_compressed_body", "not gzip: %r %r" % (st, b))
    # Trailing garbage after the stream.
    st, b, _ = srv.call("POST", "/v1/identify", raw=gzip.compress(b'{"userId":"t"}') + b"junk",
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st == 400 and "after the end" in json.dumps(b), "trailing bytes: %r %r" % (st, b))
    # Unknown codings: 415.
    st, b, _ = srv.call("POST", "/v1/identify", raw=b"xx",
                        headers={"Content-Type": "application/json", "Content-Encoding": "br"})
    check(st == 415 and code_of(b) == "unsupported_media_type" and "br" in json.dumps(b),
          "brotli refused: %r %r" % (st, b))
    # The form type is accepted only where Segment SDKs send it.
    st, b, _ = srv.call("POST", "/v1/tags", raw=gzip.compress(b'{"path":"formgz"}'),
                        headers=form_gz)
    check(st == 415, "gzip under a form type on POST /v1/tags: %r %r" % (st, b))
    # Malformed JSON inside a good gzip: the position is of the inflated text.
    st, b, _ = srv.call("POST", "/v1/identify", raw=gzip.compress(b'{"userId":\n  "a",,}'),
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st == 400 and code_of(b) == "malformed_json" and b["error"].get("line") == 2,
          "malformed JSON in gzip: %r %r" % (st, b))


# ------------------------------------------------------------ cross-site

@section
def test_cross_site(srv):
    # Segment endpoints: text/plain, form and untyped bodies are refused.
    for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
               None):
        h = {"Content-Type": ct} if ct else {}
        st, b, _ = srv.call("POST", "/v1/identify", raw=b'{"userId":"csrf"}', headers=h)
        check(st == 415 and code_of(b) == "unsupported_media_type",
              "identify with %r: %r %r" % (ct, st, b))
    st, b, _ = srv.call("GET", "/v1/users/user_id/csrf")
    check(st == 404, "nothing of the refused requests landed: %r" % st)
    # Body-less POSTs too (a form can post nothing).
    st, b, _ = srv.call("POST", "/v1/crowds", body={"name": "cs", "expression": "all"},
                        headers=JSON)
    check(st in (200, 201), "crowd create: %r %r" % (st, b))
    st, b, _ = srv.call("POST", "/v1/crowds/cs/refresh")
    check(st == 415 and "application/json" in json.dumps(b),
          "body-less refresh without a type: %r %r" % (st, b))
    st, b, _ = srv.call("POST", "/v1/crowds/cs/refresh", headers=JSON)
    check(st == 200, "body-less refresh with the JSON type: %r %r" % (st, b))
    st, b, _ = srv.call("DELETE", "/v1/crowds/cs")
    check(st == 415, "DELETE without a type: %r %r" % (st, b))
    # Foreign origins are refused even with the JSON type.
    st, b, _ = srv.call("POST", "/v1/identify", body={"userId": "csrf2"},
                        headers={"Content-Type": "application/json",
                                 "Origin": "https://evil.example"})
    check(st == 403 and code_of(b) == "forbidden_origin", "foreign origin: %r %r" % (st, b))
    st, b, h = srv.call("POST", "/v1/identify", body={"userId": "csrf3"},
                        headers={"Content-Type": "application/json",
                                 "Origin": "https://app.example"})
    check(st == 200 and h.get("Access-Control-Allow-Origin") == "https://app.example",
          "allow-listed origin: %r %r %r" % (st, b, dict(h)))
    # CORS only for allow-listed origins.
    st, b, h = srv.call("GET", "/v1/tags", headers={"Origin": "https://evil.example"})
    check(st == 200 and h.get("Access-Control-Allow-Origin") is None,
          "no CORS header for a foreign origin: %r" % dict(h))
    st, b, h = srv.call("OPTIONS", "/v1/identify",
                        headers={"Origin": "https://app.example",
                                 "Access-Control-Request-Method": "POST",
                                 "Access-Control-Request-Headers": "content-type"})
    check(st == 204 and h.get("Access-Control-Allow-Origin") == "https://app.example"
          and "POST" in (h.get("Access-Control-Allow-Methods") or "")
          and "Content-Type" in (h.get("Access-Control-Allow-Headers") or ""),
          "preflight for an allow-listed origin: %r %r" % (st, dict(h)))
    st, b, h = srv.call("OPTIONS", "/v1/identify",
                        headers={"Origin": "https://evil.example",
                                 "Access-Control-Request-Method": "POST"})
    check(st == 403 and h.get("Access-Control-Allow-Origin") is None,
          "preflight for a foreign origin: %r %r" % (st, b))


@section
def test_cross_site_keys(tmp):
    """With keys, a Bearer key is enough; Basic (which browsers replay) is not."""
    data = os.path.join(tmp, "keyed")
    must("init", "--data", data)
    out = must("keys", "create", "--data", data, "--role", "admin", "--json").stdout
    key = json.loads(out)["key"]
    srv = Server(tmp, data, "keyed").start()
    try:
        st, b, _ = srv.call("POST", "/v1/crowds", body={"name": "k", "expression": "all"},
                            headers={"Authorization": "Bearer " + key,
                                     "Content-Type": "application/json"})
        check(st in (200, 201), "create with a key: %r %r" % (st, b))
        st, b, _ = srv.call("POST", "/v1/crowds/k/refresh",
                            headers={"Authorization": "Bearer " + key})
        check(st == 200, "body-less POST with a Bearer key needs no type: %r %r" % (st, b))
        import base64
        basic = "Basic " + base64.b64encode((key + ":").encode()).decode()
        st, b, _ = srv.call("POST", "/v1/identify", raw=b'{"userId":"b1"}',
                            headers={"Authorization": basic, "Content-Type": "text/plain"})
        check(st == 415, "Basic auth with text/plain: %r %r" % (st, b))
        st, b, _ = srv.call("POST", "/v1/identify", raw=gzip.compress(b'{"userId":"b2"}'),
                            headers={"Authorization": basic, "Content-Encoding": "gzip",
                                     "Content-Type": "application/x-www-form-urlencoded"})
        check(st == 200, "RudderStack-style request with Basic auth: %r %r" % (st, b))
    finally:
        srv.stop()


# ---------------------------------------------------------- slow clients

def raise_fd_limit(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= n


def good_request(port, src="127.0.0.1"):
    """One well-behaved request; returns its duration or None on failure."""
    t0 = time.time()
    out = raw_exchange(port, b"GET /v1/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Connection: close\r\n\r\n", wait=5, src=src)
    return time.time() - t0 if out.startswith(b"HTTP/1.1 200") else None


@section
def test_trickle(tmp, data):
    n = 1100
    if not check(raise_fd_limit(n + 200), "RLIMIT_NOFILE allows %d sockets" % n):
        return
    srv = Server(tmp, data, "trickle", "--request-timeout", "4").start()
    sel = selectors.DefaultSelector()
    socks = []
    try:
        # 100 connections from each of 11 loopback addresses (the per-IP
        # limit is 128), each sending its request one byte at a time.
        for i in range(n):
            s = socket.socket()
            s.bind(("127.0.0.%d" % (2 + i % 11), 0))
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", srv.port))
            socks.append(s)
        time.sleep(0.5)
        req = b"POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        closed = set()
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        t0 = time.time()
        pos = 0
        worst = 0.0
        ok = 0
        tries = 0
        while time.time() - t0 < 9:
            # one byte on every connection every ~2 s
            if pos < len(req):
                for s in socks:
                    if s.fileno() not in closed:
                        try:
                            s.send(req[pos:pos + 1])
                        except OSError:
                            closed.add(s.fileno())
                pos += 1
            d = good_request(srv.port)
            tries += 1
            if d is not None:
                ok += 1
                worst = max(worst, d)
            end = time.time() + 1.5
            while time.time() < end:
                for key, _ in sel.select(timeout=0.2):
                    try:
                        if not key.fileobj.recv(4096):
                            closed.add(key.fileobj.fileno())
                            sel.unregister(key.fileobj)
                    except OSError:
                        closed.add(key.fileobj.fileno())
                        sel.unregister(key.fileobj)
        check(ok == tries and worst < 3.0,
              "well-behaved requests during 1,100 trickling connections: %d/%d ok, worst %.2fs"
              % (ok, tries, worst))
        check(len(closed) >= n * 0.95,
              "trickling connections cut by the 4 s request deadline: %d of %d" % (len(closed), n))
        st, text, _ = srv.call("GET", "/metrics")
        line = [ln for ln in text.splitlines()
                if ln.startswith('crowdpack_http_connections_cut_total{reason="deadline"}')]
        check(line and int(line[0].split()[-1]) >= n * 0.9, "deadline cuts counted: %r" % line)
        print("    1,100 trickling connections: %d/%d good requests, worst %.2fs; %d cut"
              % (ok, tries, worst, len(closed)), flush=True)
    finally:
        for s in socks:
            s.close()
        sel.close()
        srv.stop()


@section
def test_per_ip_limit(tmp, data):
    srv = Server(tmp, data, "perip", "--max-connections-per-ip", "20").start()
    socks = []
    try:
        for _ in range(20):
            s = socket.socket()
            s.bind(("127.0.0.30", 0))
            s.connect(("127.0.0.1", srv.port))
            s.sendall(b"GET /v1/tags HTTP/1.1\r\n")  # and never finish
            socks.append(s)
        time.sleep(0.5)
        out = raw_exchange(srv.port, b"GET /v1/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                           wait=3, src="127.0.0.30")
        check(out == b"", "21st connection from one address is refused: %r" % out[:80])
        check(good_request(srv.port, src="127.0.0.31") is not None,
              "another address is still served")
    finally:
        for s in socks:
            s.close()
        srv.stop()


@section
def test_slow_body_408(tmp, data):
    srv = Server(tmp, data, "slowbody", "--request-timeout", "2").start()
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        out = b""
        t0 = time.time()
        try:
            while time.time() - t0 < 8:
                time.sleep(0.7)
                s.sendall(b" ")
                s.settimeout(0.1)
                try:
                    b = s.recv(4096)
                    if not b:
                        break
                    out += b
                except socket.timeout:
                    pass
        except OSError:
            pass
        s.close()
        el = time.time() - t0
        check(el < 5, "a trickled body is cut near the 2 s deadline (%.1fs)" % el)
        check(out == b"" or out.startswith(b"HTTP/1.1 408"), "answer is 408 or a close: %r"
              % out[:100])
    finally:
        srv.stop()


@section
def test_stalled_export(tmp, data):
    srv = Server(tmp, data, "stall", "--stall-timeout", "2").start()
    try:
        # An export (~7.6 MB) larger than the socket buffers can hold, so a
        # reader that takes nothing leaves it unfinished: long ids.
        for part in range(10):
            lines = "".join(json.dumps({"id": "%06d-" % i + "x" * 240}) + "\n"
                            for i in range(part * 3000, (part + 1) * 3000))
            st, b, _ = srv.call("POST", "/v1/users", raw=lines.encode(),
                                headers={"Content-Type": "application/x-ndjson"})
            if not check(st == 200, "loading long-id users: %r %r" % (st, b)):
                return
        st, b, _ = srv.call("POST", "/v1/crowds", body={"name": "everyone", "expression": "all"},
                            headers=JSON)
        check(st in (200, 201, 409), "crowd for the export: %r %r" % (st, b))
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(b"GET /v1/crowds/everyone/export HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.5)
        got = s.recv(1024)
        check(got.startswith(b"HTTP/1.1 200"), "export started: %r" % got[:40])
        # Take nothing for a while: the server must cut the stream.
        cut = False
        t0 = time.time()
        while time.time() - t0 < 12:
            st, text, _ = srv.call("GET", "/metrics")
            line = [ln for ln in text.splitlines()
                    if ln.startswith('crowdpack_http_connections_cut_total{reason="stall"}')]
            if line and int(line[0].split()[-1]) >= 1:
                cut = True
                break
            time.sleep(0.5)
        check(cut, "a stalled export reader is cut off (%.1fs)" % (time.time() - t0))
        # Draining now ends early: the stream was cut, not completed.
        s.settimeout(5)
        total = len(got)
        try:
            while True:
                b = s.recv(1 << 16)
                if not b:
                    break
                total += len(b)
        except (socket.timeout, ConnectionResetError):
            pass
        s.close()
        check(not (total > 0 and b"0\r\n\r\n" == got[-5:]), "the cut stream is not complete")
        # The server still answers.
        check(good_request(srv.port) is not None, "server fine after the cut")
    finally:
        srv.stop()


# ---------------------------------------------------------------- health

@section
def test_health(tmp, srv):
    st, b, _ = srv.call("GET", "/healthz")
    check(st == 200 and b.get("status") == "ok" and b.get("writable") is True,
          "healthz ok: %r %r" % (st, b))
    for k in ("wal_bytes", "checkpoint_age_seconds", "disk_free_bytes"):
        check(k in b, "healthz reports %s" % k)
    check(b.get("disk_free_bytes", 0) > 0, "free disk is measured")
    st, b, _ = srv.call("GET", "/readyz")
    check(st == 200 and b.get("status") == "ok", "readyz ok: %r %r" % (st, b))
    st, text, _ = srv.call("GET", "/metrics")
    for m in ("crowdpack_writable 1", "crowdpack_wal_bytes ", "crowdpack_disk_free_bytes ",
              'crowdpack_unavailable{reason="storage_full"} 0'):
        check(m in text, "metrics have %r" % m)
    # A read-only server beside the writer: not healthy for writes, but ready for reads.
    ro = Server(tmp, srv.data, "ro", "--read-only").start()
    try:
        st, b, _ = ro.call("GET", "/healthz")
        check(st == 503 and b.get("reason") == "read_only" and b.get("writable") is False,
              "read-only healthz: %r %r" % (st, b))
        st, b, _ = ro.call("GET", "/readyz")
        check(st == 200 and b.get("writable") is False, "read-only readyz: %r %r" % (st, b))
        st, text, _ = ro.call("GET", "/metrics")
        check("crowdpack_writable 0" in text and
              'crowdpack_unavailable{reason="read_only"} 1' in text, "read-only metrics")
        st, b, _ = ro.call("GET", "/v1/tags")
        check(st == 200, "read-only server serves reads: %r" % st)
        st, b, _ = ro.call("POST", "/v1/identify", body={"userId": "ro"}, headers=JSON)
        check(st == 503 and code_of(b) == "read_only", "read-only refuses writes: %r %r"
              % (st, b))
    finally:
        ro.stop()


# ----------------------------------------------------------- small items

def status_lines(out):
    return out.count(b"HTTP/1.1 ") + out.count(b"HTTP/1.0 ")


@section
def test_single_status_line(srv):
    big = b"x" * 2000
    cases = {
        "413 declared": b"POST /v1/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                        b"application/json\r\nContent-Length: 99999999\r\n\r\n" + big,
        "413 declared + Expect": b"POST /v1/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                                 b"application/json\r\nContent-Length: 99999999\r\n"
                                 b"Expect: 100-continue\r\n\r\n",
        "415 + Expect": b"POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                        b"text/plain\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n",
        "404 + Expect": b"POST /v1/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                        b"application/json\r\nContent-Length: 2000\r\n"
                        b"Expect: 100-continue\r\n\r\n",
        "400 malformed": b"POST /v1/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n"
                         + b"{" * 2000,
        "413 intake + Expect": b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                               b"application/json\r\nContent-Length: 600000\r\n"
                               b"Expect: 100-continue\r\n\r\n",
        "431": b"GET /v1/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70000
               + b"\r\n\r\n",
        "413 chunked": b"POST /v1/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                       b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + (b"%x\r\n" % (MAX_BODY + 10)) + b"y" * (MAX_BODY + 10) + b"\r\n0\r\n\r\n",
    }
    for what, data in cases.items():
        out = raw_exchange(srv.port, data, wait=3)
        want = what.split()[0].encode()
        check(status_lines(out) == 1 and out.startswith(b"HTTP/1.1 " + want),
              "%s: exactly one status line: %r" % (what, out[:120]))


@section
def test_small_items(srv):
    srv.call("POST", "/v1/crowds", body={"name": "seeded", "expression": "all"}, headers=JSON)
    st, b, _ = srv.call("GET", "/v1/crowds/seeded/sample?n=3&seed=18446744073709551615")
    check(st == 200, "the largest seed is accepted: %r %r" % (st, b))
    st, b, _ = srv.call("GET", "/v1/crowds/seeded/sample?n=3&seed=18446744073709551616")
    check(st == 400 and "18446744073709551615" in json.dumps(b), "one past it: %r %r" % (st, b))
    # 32 KB per event on its compact JSON: a pretty-printed 20 KB event
    # padded past 32 KB raw is accepted; a 40 KB compact event is 413.
    ev = {"userId": "big1", "traits": {"note": "n" * 20000}}
    pretty = json.dumps(ev, indent=1).encode() + b" " * 20000
    st, b, _ = srv.call("POST", "/v1/identify", raw=pretty, headers=JSON)
    check(st == 200, "an event over 32 KB raw but not compact: %r %r" % (st, b))
    ev = {"userId": "big2", "traits": {"note": "n" * 40000}}
    st, b, _ = srv.call("POST", "/v1/identify", body=ev, headers=JSON)
    check(st == 413 and code_of(b) == "too_large", "a 40 KB event: %r %r" % (st, b))
    # The same limit after decompression.
    st, b, _ = srv.call("POST", "/v1/identify", raw=gzip.compress(json.dumps(ev).encode()),
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st == 413 and code_of(b) == "too_large", "a 40 KB event gzipped: %r %r" % (st, b))
    # Batches over 500 KB: 413, raw or inflated.
    batch = {"batch": [{"type": "track", "userId": "b%d" % i, "event": "E",
                        "properties": {"p": "v" * 1000}} for i in range(600)]}
    raw = json.dumps(batch).encode()
    st, b, _ = srv.call("POST", "/v1/batch", raw=raw, headers=JSON)
    check(st == 413 and code_of(b) == "too_large", "a 600 KB batch: %r %r" % (st, b))
    st, b, _ = srv.call("POST", "/v1/batch", raw=gzip.compress(raw),
                        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    check(st == 413 and code_of(b) == "too_large", "a 600 KB batch gzipped: %r %r" % (st, b))
    # Intake errors carry line and column like the other endpoints.
    st, b, _ = srv.call("POST", "/v1/track", raw=b'{"userId": "a",\n "event": }', headers=JSON)
    e = b.get("error", {}) if isinstance(b, dict) else {}
    check(st == 400 and e.get("code") == "malformed_json" and e.get("line") == 2
          and e.get("column") is not None, "malformed track: %r %r" % (st, b))
    st, b, _ = srv.call("PUT", "/v1/intake/config", raw=b'{\n\n  "x": [1,}', headers=JSON)
    e = b.get("error", {}) if isinstance(b, dict) else {}
    check(st == 400 and e.get("code") == "malformed_json" and e.get("line") == 3,
          "malformed intake config: %r %r" % (st, b))


def test():
    tmp = tempdir("cp-limits-")
    data = os.path.join(tmp, "data")
    must("init", "--data", data)
    srv = Server(tmp, data, "main", "--allow-origin", "https://app.example",
                 "--allow-origin=https://other.example").start()
    test_compression(srv)
    test_cross_site(srv)
    test_single_status_line(srv)
    test_small_items(srv)
    test_health(tmp, srv)
    srv.stop()
    test_cross_site_keys(tmp)
    test_stalled_export(tmp, data)
    test_slow_body_408(tmp, data)
    test_per_ip_limit(tmp, data)
    test_trickle(tmp, data)


if __name__ == "__main__":
    main(test)
