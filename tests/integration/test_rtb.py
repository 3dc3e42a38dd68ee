#!/usr/bin/env python3
"""The OpenRTB bidder over HTTP (docs/activation.md): the issue's example
campaign PUT through /v1/campaigns, every OpenRTB 2.5/2.6 specification
example request answered 200 or 204 (never refused), a known user's
variant bid at 8.00 x 1.5 for a high_value member and 8.00 otherwise,
malformed requests 400 with a reason, ?debug=1 reasons, win and impression
notices recorded once, a frequency cap of 3 a day reached by one person
under two ids (user_id and idfa merged by an identify), and caps and
spend kept across a restart. /metrics exports crowdpack_bid_seconds."""
import copy
import glob
import json
import os
import time
import urllib.parse

from harness import (Server, check, check_eq, main, must, section, shared, skip, tempdir)

# The example exactly as written (accepted as is) ...
EXAMPLE = {
    "id": "spring-sale", "advertiser": "acme",
    "budget": {"total": 100000, "daily": 5000, "currency": "CNY"},
    "schedule": {"start": "2026-12-01", "end": "2026-12-31", "timezone": "Asia/Shanghai"},
    "pacing": "even",
    "lines": [{"id": "retarget", "billing": "cpm", "bid": 8.00,
               "targeting": "tag:interest/finance AND age BETWEEN 25 AND 40",
               "premiums": [{"crowd": "high_value", "pct": 50}],
               "caps": [{"count": 3, "per": "day"}],
               "creatives": [{"id": "c1", "w": 300, "h": 250, "adomain": ["acme.com"],
                              "adm": "<a href=\"${CLICK_URL}\"><img "
                                     "src=\"https://cdn.acme.com/c1.png\"></a>"}]}]}

# ... and the version the test bids with: a schedule that holds whenever the
# test runs, and asap pacing, whose answers do not depend on a throttle's draw.
CAMPAIGN = {
    "id": "spring-sale", "advertiser": "acme",
    "budget": {"total": 100000, "daily": 5000, "currency": "CNY"},
    "schedule": {"start": "2026-01-01", "end": "2036-12-31", "timezone": "Asia/Shanghai"},
    "pacing": "asap",
    "lines": [{"id": "retarget", "billing": "cpm", "bid": 8.00,
               "targeting": "tag:interest/finance AND age BETWEEN 25 AND 40",
               "premiums": [{"crowd": "high_value", "pct": 50}],
               "caps": [{"count": 3, "per": "day"}],
               "creatives": [{"id": "c1", "w": 300, "h": 250, "adomain": ["acme.com"],
                              "adm": "<a href=\"${CLICK_URL}\"><img "
                                     "src=\"https://cdn.acme.com/c1.png\"></a>"}]}]}

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"


def request_for(uid=None, n=0, ifa=None):
    r = {"id": "req-%d" % n, "cur": ["CNY"], "tmax": 500,
         "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 1.0,
                  "bidfloorcur": "CNY"}],
         "site": {"id": "s1", "page": "https://news.example/"}}
    if uid:
        r["user"] = {"buyeruid": uid}
    if ifa:
        r["device"] = {"os": "iOS", "ifa": ifa}
    return r


def bid(srv, req, debug=False):
    return srv.call("POST", "/openrtb2/bid" + ("?debug=1" if debug else ""), req)


def the_bid(rep):
    return rep.body["seatbid"][0]["bid"][0]


def path_of(url):
    u = urllib.parse.urlsplit(url)
    return u.path + "?" + u.query


def notice(srv, url, price="5.00"):
    return srv.call("GET", path_of(url.replace("${AUCTION_PRICE}", price)
                                   .replace("${AUCTION_LOSS}", "102")))


def delivery(srv):
    r = srv.call("GET", "/v1/campaigns/spring-sale/delivery")
    check(r.status == 200, "delivery: %d %r" % (r.status, r.body))
    return r.body


def wait_bid(srv, req, want, what, timeout=15):
    """Bids until the answer is `want` (identity and crowd changes reach the
    bidder within a refresh); returns the last reply."""
    end = time.time() + timeout
    while True:
        r = bid(srv, req)
        if r.status == want or time.time() > end:
            check_eq(r.status, want, what)
            return r
        time.sleep(0.3)


def setup(srv):
    srv.call("POST", "/v1/attributes", {"name": "age", "type": "int"}, expect=range(200, 300))
    srv.call("POST", "/v1/taxonomy", {"tags": [{"path": "interest/finance"}]}, expect=range(200, 300))
    srv.call("POST", "/v1/users", {"users": [
        {"id": "k1", "attrs": {"age": 30}, "tags": ["interest/finance"]},
        {"id": "k2", "attrs": {"age": 38}, "tags": ["interest/finance"]},
        {"id": "k3", "attrs": {"age": 60}, "tags": ["interest/finance"]},
        {"id": "p1", "attrs": {"age": 29}, "tags": ["interest/finance"]}]}, expect=200)
    srv.call("POST", "/v1/crowds", {"name": "high_value", "expression": "age BETWEEN 25 AND 32",
                                    "kind": "static"}, expect=range(200, 300))


def test():
    tmp = tempdir("cp-rtb-")
    data = os.path.join(tmp, "data")
    must("init", "--data", data)
    srv = Server(tmp, data, threads=2).start()
    setup(srv)
    r = srv.call("PUT", "/v1/campaigns/spring-sale", EXAMPLE)
    if r.status in (404, 405):
        skip("PUT /v1/campaigns/ID is not served by this build (the campaign routes)")
    check(r.status in (200, 201), "PUT the example campaign: %d %r" % (r.status, r.body))
    r = srv.call("PUT", "/v1/campaigns/spring-sale", CAMPAIGN)
    check(r.status in (200, 201), "PUT its test version: %d %r" % (r.status, r.body))

    @section
    def examples():
        d = shared("openrtb/openrtb2/bid-request", "the OpenRTB specification examples")
        if d is None:
            return
        files = sorted(glob.glob(os.path.join(d, "2.*", "*.json")))
        check(len(files) >= 10, "spec examples found: %d" % len(files))
        for f in files:
            name = os.path.relpath(f, d)
            with open(f, encoding="utf-8") as fh:
                req = json.load(fh)
            rep = bid(srv, req)
            # Unknown users, USD only: answered, no bid.
            check_eq(rep.status, 204, "%s as given" % name)
            # The same request from a known user, bidding in CNY.
            v = copy.deepcopy(req)
            v["cur"] = ["CNY"]
            v.setdefault("user", {})["buyeruid"] = "k1"
            v.pop("regs", None)
            for imp in v["imp"]:
                imp["bidfloorcur"] = "CNY"
                imp.pop("pmp", None)
            rep = bid(srv, v, debug=True)
            check_eq(rep.status, 200, "%s from k1 in CNY" % name)
            banner = any("banner" in imp and imp["banner"].get("w", 300) == 300 and
                         imp["banner"].get("h", 250) == 250 for imp in v["imp"])
            if banner and "seatbid" in (rep.body or {}):
                check_eq(the_bid(rep)["price"], 12.0, "%s: 8.00 x 1.5 for high_value" % name)
            elif not banner:
                reasons = {e["reason"] for e in rep.body["ext"]["debug"]}
                check(reasons & {"format", "size"}, "%s: no 300x250 banner: %r" % (name, reasons))

    examples()

    @section
    def prices():
        rep = bid(srv, request_for("k1", 1))
        check_eq(rep.status, 200, "k1 (high_value) bids")
        b = the_bid(rep)
        check_eq(b["price"], 12.0, "k1: 8.00 x 1.5")
        check_eq(b["crid"], "c1", "crid")
        check_eq(b["adomain"], ["acme.com"], "adomain")
        check(b["nurl"].endswith("&p=${AUCTION_PRICE}") and "/openrtb2/win?t=" in b["nurl"],
              "nurl: %s" % b["nurl"])
        check("/openrtb2/bill?t=" in b["burl"], "burl: %s" % b["burl"])
        check("${AUCTION_LOSS}" in b["lurl"], "lurl: %s" % b["lurl"])
        check("${CLICK_URL}" not in b["adm"] and "/openrtb2/click?t=" in b["adm"] and
              "/openrtb2/imp?t=" in b["adm"], "adm expanded: %s" % b["adm"])
        rep = bid(srv, request_for("k2", 2))
        check_eq(rep.status, 200, "k2 (not high_value) bids")
        check_eq(the_bid(rep)["price"], 8.0, "k2: 8.00 x 1")
        check_eq(bid(srv, request_for("k3", 3)).status, 204, "k3 (60) is not targeted")
        check_eq(bid(srv, request_for("nobody", 4)).status, 204, "an unknown user")
        rep = bid(srv, request_for("k3", 5), debug=True)
        check(rep.status == 200 and rep.body["ext"]["debug"][0]["reason"] == "crowd",
              "debug names the crowd: %r" % (rep.body,))
        rep = bid(srv, request_for("k2", 6), debug=True)
        check(rep.status == 200 and rep.body["ext"]["debug"][0]["reason"] == "eligible",
              "debug of a bid: %r" % (rep.body,))
        low = request_for("k2", 7)
        low["imp"][0]["bidfloor"] = 9.0
        rep = bid(srv, low, debug=True)
        check(rep.status == 200 and rep.body["ext"]["debug"][0]["reason"] == "floor",
              "floor 9.00 over 8.00: %r" % (rep.body,))

    prices()

    @section
    def refusals():
        bad = [("not JSON", b"{"), ("no imp", json.dumps({"id": "x", "imp": []}).encode()),
               ("negative size", json.dumps({"id": "x", "imp": [
                   {"id": "1", "banner": {"w": -1, "h": 250}}]}).encode()),
               ("empty mimes", json.dumps({"id": "x", "imp": [
                   {"id": "1", "video": {"mimes": []}}]}).encode()),
               ("too deep", b'{"id":"x","imp":[{"id":"1","ext":' + b"[" * 100 + b"]" * 100
                + b"}]}")]
        for what, raw in bad:
            rep = srv.call("POST", "/openrtb2/bid", raw=raw)
            check(rep.status == 400 and isinstance(rep.body, dict) and
                  rep.body.get("error", {}).get("message"),
                  "%s: 400 with a reason: %d %r" % (what, rep.status, rep.body))
        rep = srv.call("POST", "/openrtb2/bid", raw=b"{}", ctype="text/plain")
        check(rep.status in (400, 415), "text/plain body refused: %d" % rep.status)
        check_eq(srv.call("GET", "/openrtb2/win?t=forged&p=1.00").status, 400, "forged token")
        check_eq(srv.call("GET", "/openrtb2/win").status, 400, "no token")

    refusals()
    state = {}

    @section
    def notices_and_caps():
        # p1 shows up on an iPhone with its IDFA: one person, two ids.
        srv.call("POST", "/v1/identify", {
            "userId": "p1", "context": {"os": {"name": "iOS"},
                                        "device": {"advertisingId": IDFA}}}, expect=200)
        before = delivery(srv)
        wait_bid(srv, request_for(None, 10, ifa=IDFA), 200, "p1 by IDFA bids once identified")
        shown = 0
        for n, (uid, ifa) in enumerate([("p1", None), (None, IDFA), ("p1", None)]):
            rep = bid(srv, request_for(uid, 20 + n, ifa))
            check_eq(rep.status, 200, "bid %d for p1" % (n + 1))
            if rep.status != 200:
                continue
            b = the_bid(rep)
            check_eq(notice(srv, b["nurl"]).status, 204, "win notice %d" % (n + 1))
            imp_url = b["adm"].split('<img src="')[-1].split('"')[0]
            r = srv.call("GET", path_of(imp_url))
            check(r.status == 200 and r.headers.get("Content-Type") == "image/gif" and
                  r.raw.startswith(b"GIF89a"), "impression pixel %d: %d" % (n + 1, r.status))
            shown += 1
            if n == 0:
                # Repeats count once.
                check_eq(notice(srv, b["nurl"]).status, 204, "repeated win")
                check_eq(srv.call("GET", path_of(imp_url)).status, 200, "repeated pixel")
                click = srv.call("GET", path_of(b["adm"].split('href="')[1].split('"')[0]))
                check(click.status == 302 and
                      click.headers.get("Location", "").startswith("https://acme.com/"),
                      "click redirects to the advertiser: %d %s"
                      % (click.status, click.headers.get("Location")))
        check_eq(shown, 3, "three impressions")
        check_eq(bid(srv, request_for(None, 30, ifa=IDFA)).status, 204, "4th by IDFA: capped")
        rep = bid(srv, request_for("p1", 31), debug=True)
        check(rep.status == 200 and rep.body["ext"]["debug"][0].get("ledger") == "cap_line",
              "debug names the cap: %r" % (rep.body,))
        after = delivery(srv)
        check(json.dumps(after) != json.dumps(before), "delivery moved: %r" % (after,))
        line = (after.get("lines") or [{}])[0]
        # Three wins at 5.00 CPM, the repeats not counted: 3 x 500 millifen.
        check_eq((line.get("wins"), line.get("impressions")), (3, 3),
                 "wins and impressions counted once each")
        check_eq(after.get("today", {}).get("spent_millifen"), 1500, "spend of three wins")
        state["after"] = after

    notices_and_caps()

    @section
    def restart():
        srv.stop()
        srv.start()
        check_eq(bid(srv, request_for("p1", 40)).status, 204, "cap kept across a restart")
        check_eq(bid(srv, request_for(None, 41, ifa=IDFA)).status, 204,
                 "cap kept across a restart (IDFA)")
        again = delivery(srv)
        after = state.get("after")
        for k in ("today", "total"):
            if after and k in after:
                check_eq((again.get(k) or {}).get("spent"), after[k].get("spent"),
                         "%s spend kept across a restart" % k)

    @section
    def metrics():
        r = srv.call("GET", "/metrics")
        text = r.body if isinstance(r.body, str) else r.raw.decode()
        check("# TYPE crowdpack_bid_seconds histogram" in text, "crowdpack_bid_seconds exported")
        check('crowdpack_bid_seconds_bucket{le="0.0001"}' in text and
              'crowdpack_bid_seconds_bucket{le="+Inf"}' in text, "sub-millisecond buckets")
        check('route="/openrtb2/bid"' in text, "the per-route histogram has the bid route")

    restart()
    metrics()

    srv.stop()


if __name__ == "__main__":
    main(test)
