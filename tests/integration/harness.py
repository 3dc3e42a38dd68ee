"""harness.py: what every integration test shares (python3 stdlib only).

A test imports it (`from harness import ...`), puts its body in a function
and ends with `main(test)`, which runs it, cleans up and exits. It gets:

- CP, SRC, SHARED: the binary under test (env CROWDPACK, else build/crowdpack
  of CP_SOURCE_DIR), the source tree, and ../shared/data beside it (the public
  data sets of the README's "Test data"; env CP_SHARED_DATA overrides).
- check(cond, what, detail) and check_eq(got, want, what): count a pass or
  print one FAIL line saying what differed; fail(what); section(fn) runs a
  part, timed, an exception counting as one failure; main() prints
  "N passed, M failed" and exits 1 on any failure.
- run(*args): one CLI call of the binary, returning (rc, out, err) that is
  also a CompletedProcess (.returncode, .stdout, .stderr); must(*args) raises
  when the command fails; new_key(data, role) creates a key.
- Server(tmp, data, *args): `crowdpack serve` on a free loopback port (port 0
  and --port-file, so no race for the port); start() waits until it listens,
  stop() sends SIGTERM and, after a grace period, SIGKILL. Every server still
  running when the test ends (pass, fail, exception, SIGTERM from ctest) is
  stopped the same way.
- Server.call() and request(port, ...): one HTTP request; JSON in and out,
  raw bytes, gzip, Bearer keys and Basic auth (basic(key)); expect=OK raises
  on any answer but 2xx.
- tempdir(prefix): a temporary directory removed when the test ends (kept for
  inspection when asked to and something failed).
- Skips: shared(rel, what) returns a file of ../shared/data or, when it is
  missing, None after recording what was not run; skip(why) ends the whole
  test. Either way the test prints ONE line starting "SKIP:" naming what is
  missing and exits SKIP_CODE (77), which CMakeLists.txt declares as the
  integration tests' SKIP_RETURN_CODE so ctest reports them as skipped. A
  failure outranks a skip: exit 1.
"""
import atexit
import base64
import gzip as gzip_mod
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

SRC = os.path.abspath(os.environ.get("CP_SOURCE_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CP = os.environ.get("CROWDPACK") or os.path.join(SRC, "build", "crowdpack")
SHARED = os.environ.get("CP_SHARED_DATA") or os.path.join(SRC, "..", "shared", "data")
SKIP_CODE = 77

PASSED = 0
FAILED = 0
_missing = []  # (what was not run, missing path)
_servers = []  # every Server started and not yet stopped
_tempdirs = []  # (path, keep when something failed)


# ------------------------------------------------------------------ checks

def check(cond, what, detail=None, limit=800):
    """Counts one check; on failure prints `FAIL: what: detail`. Returns cond."""
    global PASSED, FAILED
    if cond:
        PASSED += 1
    else:
        FAILED += 1
        tail = "" if detail is None or detail == "" else ": " + str(detail)[:limit]
        print("FAIL: %s%s" % (what, tail), file=sys.stderr, flush=True)
    return cond


def check_eq(got, want, what):
    """check(got == want) printing both values when they differ."""
    return check(got == want, what, "got %r, want %r" % (got, want))


def fail(what, detail=None):
    return check(False, what, detail)


def failed():
    return FAILED


def section(fn):
    """Runs one part of a test, timed; an exception is one failure, and the
    test goes on with the next part."""
    def part(*a, **kw):
        global FAILED
        t0 = time.time()
        try:
            fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - report and go on
            FAILED += 1
            traceback.print_exc()
            print("FAIL: %s raised %r" % (fn.__name__, e), file=sys.stderr, flush=True)
        print("  %-28s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
    part.__name__ = fn.__name__
    return part


# ------------------------------------------------------------------- skips

def shared(rel, what, env=None):
    """The path of ../shared/data/<rel> (or of the file named by the
    environment variable `env`, when set) if it exists; else None, and
    `what` (the part of the test that needs it) is reported as not run."""
    path = (env and os.environ.get(env)) or os.path.join(SHARED, rel)
    if os.path.exists(path):
        return path
    _missing.append((what, os.path.normpath(path)))
    return None


def _skip_line():
    parts = "; ".join(w for w, _ in _missing)
    paths = ", ".join(sorted(set(p for _, p in _missing)))
    return "SKIP: not run: %s (missing %s: public data beside the repository, " \
        "see README.md \"Test data\")" % (parts, paths)


def skip(why):
    """Ends the whole test as skipped, printing `SKIP: why`."""
    print("SKIP: %s" % why, flush=True)
    _cleanup()
    sys.exit(SKIP_CODE)


def finish():
    """Prints the tally (and the SKIP line) and returns the exit status:
    1 on any failure, SKIP_CODE when a part was skipped, else 0."""
    print("%d passed, %d failed" % (PASSED, FAILED), flush=True)
    if _missing:
        print(_skip_line(), flush=True)
    if FAILED:
        return 1
    return SKIP_CODE if _missing else 0


def main(body):
    """Runs body() and exits: a raised exception or a non-zero int returned
    counts as a failure; servers and temp dirs are cleaned up either way."""
    global FAILED
    if not os.path.exists(CP):
        print("FAIL: the crowdpack binary is not at %s (set CROWDPACK)" % CP, file=sys.stderr)
        sys.exit(1)
    try:
        rc = body()
        if rc:
            FAILED += 1
            print("FAIL: %s returned %r" % (getattr(body, "__name__", "test"), rc),
                  file=sys.stderr, flush=True)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - report, clean up, fail
        FAILED += 1
        traceback.print_exc()
        print("FAIL: raised %r" % (e,), file=sys.stderr, flush=True)
    finally:
        _cleanup()
    sys.exit(finish())


# --------------------------------------------------------------- processes

class Result(tuple):
    """(returncode, stdout, stderr), also readable as a CompletedProcess."""

    returncode = property(lambda self: self[0])
    stdout = property(lambda self: self[1])
    stderr = property(lambda self: self[2])


def cli_env(env=None):
    """The environment of a CLI call: the developer's own CROWDPACK_DATA,
    _KEY and _SERVER never leak into a test."""
    e = dict(os.environ)
    for k in ("CROWDPACK_DATA", "CROWDPACK_KEY", "CROWDPACK_SERVER"):
        e.pop(k, None)
    if env:
        e.update(env)
    return e


def run(*args, stdin=None, env=None, timeout=120, ok=False, cwd=None):
    """Runs `crowdpack args...`; returns Result (rc, out, err) with the output
    as text (UTF-8; undecodable bytes replaced). ok=True raises RuntimeError
    naming the command and its stderr when it exits non-zero."""
    if isinstance(stdin, str):
        stdin = stdin.encode("utf-8")
    p = subprocess.run([CP] + [str(a) for a in args], input=stdin, capture_output=True,
                       timeout=timeout, env=cli_env(env), cwd=cwd)
    r = Result((p.returncode, p.stdout.decode("utf-8", "replace"),
                p.stderr.decode("utf-8", "replace")))
    if ok and r.returncode != 0:
        raise RuntimeError("crowdpack %s: exit %d: %s" % (" ".join(map(str, args)),
                                                          r.returncode, r.stderr.strip()))
    return r


def must(*args, **kw):
    """run() that raises when the command fails."""
    return run(*args, ok=True, **kw)


def new_key(data, role, *extra):
    """Creates a key of `role` on a data directory (no server running);
    returns the secret."""
    out = must("keys", "create", "--data", data, "--role", role, *extra).stdout
    return out.strip().splitlines()[-1].strip()


def basic(key):
    """The Authorization value of HTTP Basic with the key as user name."""
    return "Basic " + base64.b64encode((key + ":").encode()).decode()


class StartError(RuntimeError):
    """The server exited before listening: .returncode and .stderr say why."""

    def __init__(self, returncode, stderr):
        RuntimeError.__init__(self, "server exited with %s before listening: %s"
                              % (returncode, stderr[-2000:]))
        self.returncode, self.stderr = returncode, stderr


class Reply(tuple):
    """(status, body) of Server.call, with .status, .body, .headers and
    .raw (the bytes as received). body is the parsed JSON, else the text,
    or None when empty."""

    status = property(lambda self: self[0])
    body = property(lambda self: self[1])


_AUTO = object()
OK = range(200, 300)  # Server.call(expect=OK): any 2xx


class Server:
    """`crowdpack serve --data data args...` on 127.0.0.1, port chosen by the
    kernel. Its stderr goes to tmp/<name>.log (appended across restarts)."""

    def __init__(self, tmp, data, *args, name="server", env=None, threads=None,
                 json_type=True, timeout=30):
        self.tmp, self.data, self.args, self.name = tmp, data, [str(a) for a in args], name
        self.env, self.threads, self.json_type = env, threads, json_type
        self.start_timeout = timeout
        self.proc = self.port = self.base = None
        self.logpath = os.path.join(tmp, name + ".log")
        self.errpath = self.logpath
        self._log, self._log_from = None, 0

    def start(self, timeout=None):
        """Starts and waits until the port file names the port; returns self.
        Raises StartError when the server exits first, RuntimeError when it
        does not listen within the timeout (then it is killed)."""
        pf = os.path.join(self.tmp, self.name + ".port")
        if os.path.exists(pf):
            os.unlink(pf)
        self._log_from = os.path.getsize(self.logpath) if os.path.exists(self.logpath) else 0
        self._log = open(self.logpath, "a")
        cmd = [CP, "serve", "--data", self.data, "--listen", "127.0.0.1:0", "--port-file", pf]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        self.proc = subprocess.Popen(cmd + self.args, stdout=subprocess.DEVNULL,
                                     stderr=self._log, env=cli_env(self.env))
        _servers.append(self)
        deadline = time.time() + (timeout or self.start_timeout)
        while time.time() < deadline:
            text = open(pf).read().strip() if os.path.exists(pf) else ""
            if text:
                self.port = int(text)
                self.base = "http://127.0.0.1:%d" % self.port
                return self
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._close()
                raise StartError(rc, self.stderr(this_start=True))
            time.sleep(0.02)
        self.kill9()
        raise RuntimeError("server did not listen within %ss: %s"
                           % (timeout or self.start_timeout, self.stderr()[-2000:]))

    def try_start(self, timeout=None):
        """start() for a server that may refuse to: None when it listens,
        else (exit status, what it wrote to stderr this time)."""
        try:
            self.start(timeout)
            return None
        except StartError as e:
            return e.returncode, e.stderr

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self, this_start=False):
        """What the server wrote to stderr: since the last start, or in all."""
        if self._log:
            self._log.flush()
        try:
            with open(self.logpath, "rb") as f:
                f.seek(self._log_from if this_start else 0)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _close(self):
        if self in _servers:
            _servers.remove(self)
        if self._log:
            self._log.close()
            self._log = None

    def stop(self, grace=60):
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit
        status (None when it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()
        return self.proc.returncode

    def kill9(self):
        """SIGKILL, as a crash would; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()
        return self.proc.returncode

    def call(self, method, path, body=None, **kw):
        """request() to this server (see there); JSON typed by default
        unless the server was made with json_type=False."""
        kw.setdefault("json_type", self.json_type)
        return request(self.port, method, path, body, **kw)


def request(port, method, path, body=None, raw=None, key=None, auth=None, headers=None,
            ctype=_AUTO, gzip=False, timeout=60, expect=None, ensure_ascii=True,
            json_type=True):
    """One HTTP request to 127.0.0.1:port on a fresh connection. body is sent
    as JSON (ASCII with escapes; ensure_ascii=False: UTF-8), raw as given;
    gzip=True compresses either (Content-Encoding: gzip). key sends
    `Authorization: Bearer key`, auth the header as given. Content-Type:
    ctype when given (None: none); by default application/json on a body or
    any non-GET (the cross-site rule for keyless servers), unless headers
    name one or json_type is False. Returns Reply (status, body); with
    expect (a status, or a container such as OK) any other status raises."""
    data = raw if raw is not None else (
        json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8") if body is not None
        else None)
    if isinstance(data, str):
        data = data.encode("utf-8")
    h = {}
    if gzip and data is not None:
        data = gzip_mod.compress(data)
        h["Content-Encoding"] = "gzip"
    given = {k.lower() for k in (headers or {})}
    if ctype is _AUTO:
        ctype = "application/json" if json_type and "content-type" not in given and (
            data is not None or method != "GET") else None
    if ctype:
        h["Content-Type"] = ctype
    if key:
        h["Authorization"] = "Bearer " + key
    if auth:
        h["Authorization"] = auth
    h.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        rawb = r.read()
        rh = r.headers
    finally:
        c.close()
    text = rawb.decode("utf-8", "replace")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    rep = Reply((r.status, parsed))
    rep.headers, rep.raw = rh, rawb
    if expect is not None and r.status not in ((expect,) if isinstance(expect, int) else expect):
        raise RuntimeError("%s %s: HTTP %d, expected %r: %s"
                           % (method, path, r.status, expect, text[:500]))
    return rep


# ------------------------------------------------------------- data files

def file_contains(path, nb):
    """Whether the bytes nb are in the file, reading only its allocated
    extents (data.mdb is sparse up to its map size)."""
    with open(path, "rb") as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                return False
            try:
                end = os.lseek(fd, start, os.SEEK_HOLE)
            except OSError:
                end = size
            pos = start
            while pos < end:
                n = min(end - pos, 8 << 20)
                os.lseek(fd, max(start, pos - len(nb)), os.SEEK_SET)
                chunk = os.read(fd, n + (pos - max(start, pos - len(nb))))
                if nb in chunk:
                    return True
                pos += n
            off = end
    return False


def files_containing(d, nb):
    """The files under directory d that hold the bytes nb."""
    found = []
    for root, _, files in os.walk(d):
        for f in files:
            if file_contains(os.path.join(root, f), nb):
                found.append(os.path.join(root, f))
    return found


# ---------------------------------------------------------------- temp dirs

def tempdir(prefix="cp-test-", keep_on_failure=False):
    """A new temporary directory, removed when the test ends; with
    keep_on_failure it stays (and its path is printed) if a check failed."""
    d = tempfile.mkdtemp(prefix=prefix)
    _tempdirs.append((d, keep_on_failure))
    return d


def _cleanup():
    for srv in list(_servers):
        try:
            srv.stop(grace=20)
        except Exception:  # noqa: BLE001 - cleanup goes on
            traceback.print_exc()
    while _tempdirs:
        d, keep = _tempdirs.pop()
        if keep and FAILED:
            print("kept %s for inspection" % d, file=sys.stderr, flush=True)
        else:
            shutil.rmtree(d, ignore_errors=True)


def _on_sigterm(signum, frame):
    # ctest's timeout, or a developer's kill: stop the servers on the way out.
    raise SystemExit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_sigterm)
