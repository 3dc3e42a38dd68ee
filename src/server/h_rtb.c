/*
 * h_rtb.c — the OpenRTB 2.5/2.6 bidder and its notices (docs/activation.md).
 *
 *   POST /openrtb2/bid          BidRequest -> 200 BidResponse | 204 | 400
 *                               (?debug=1: why each line item bid or not)
 *   GET  /openrtb2/win|bill|loss?t=TOKEN&p=PRICE[&r=LOSS]   204
 *   GET  /openrtb2/imp?t=TOKEN  the impression pixel: a 1x1 GIF
 *   GET  /openrtb2/click?t=TOKEN[&u=URL]   302 to the landing page
 *
 * Who may call: a bid request spends budget, so it needs a write key, or
 * comes from a loopback client when no key is configured (the server's
 * usual rules; exchanges that cannot send a key reach the bidder through
 * a local proxy that adds one). Notices need no key: the token is MACed
 * by the ledger, so only notices of bids this server made are accepted,
 * each recorded once. A notice the journal could not record answers 5xx,
 * so the exchange retries it.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

static int need_act(srv_ctx_t *srv, srv_resp_t *resp)
{
    if (srv->act != NULL)
        return 1;
    srv_reply_error(resp, 503, "activation_off", NULL,
                    "the bidder is not enabled on this server (crowdpack serve opens it)");
    return 0;
}

void srv_h_rtb_bid(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    uint64_t t0 = time_mono_ns();
    if (!need_act(srv, resp))
        return;
    if (!srv_ctype_is_json(req->content_type)) {
        srv_reply_error(resp, 415, "unsupported_media_type", NULL,
                        "a BidRequest is sent as application/json");
        return;
    }
    const char *debug = NULL;
    cp_error_t err = {0};
    if (srv_query(req, "debug", &debug, &err) != CP_OK) {
        srv_reply_cp(resp, CP_EINVAL, &err, 0);
        return;
    }
    unsigned flags = debug && strcmp(debug, "0") != 0 ? CP_BID_DEBUG : 0;
    cp_bid_reply_t r = CP_BID_REPLY_INIT;
    cp_status st = cp_rtb_bid(srv->act, req->body, req->body_len, 0, flags, &r, &err);
    if (st == CP_EINVAL || st == CP_ELIMIT) {
        /* OpenRTB: a request the bidder cannot read is a 400, whatever
         * the cause (malformed, too large, too deep). */
        srv_reply_error(resp, 400, "invalid_bid_request", NULL, "%s", err.message);
    } else if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
    } else if (r.status == 204 || r.body == NULL) {
        srv_reply_text(resp, 204, NULL, NULL);
        cp_free(r.body);
    } else {
        srv_reply_text(resp, r.status, r.body, cp_free);
        resp->len = r.len;
    }
    srv_metrics_bid_observe(&srv->metrics, time_mono_ns() - t0);
}

/* The token and the optional price of a notice; 0 with a 400 reply. */
static int notice_args(srv_req_t *req, srv_resp_t *resp, const char **token, const char **price)
{
    cp_error_t err = {0};
    if (srv_query(req, "t", token, &err) != CP_OK ||
        (price && srv_query(req, "p", price, &err) != CP_OK)) {
        srv_reply_cp(resp, CP_EINVAL, &err, 0);
        return 0;
    }
    if (*token == NULL || (*token)[0] == '\0') {
        srv_reply_error(resp, 400, "bad_token", NULL, "a notice needs its token: ?t=TOKEN");
        return 0;
    }
    /* An exchange that does not substitute the macro sends it back as is:
     * no price then, which the ledger settles at the bid price. */
    if (price && *price && strncmp(*price, "${", 2) == 0)
        *price = NULL;
    return 1;
}

/* Replies to a notice the ledger refused: 400 for a bad token or price,
 * 5xx (the exchange retries) when it could not be recorded. */
static void notice_error(srv_resp_t *resp, cp_status st, const cp_error_t *err)
{
    if (st == CP_EINVAL)
        srv_reply_error(resp, 400, "bad_token", NULL, "%s", err->message);
    else
        srv_reply_cp(resp, st, err, 0);
}

static void notice(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp, cp_notice_kind kind)
{
    if (!need_act(srv, resp))
        return;
    const char *token = NULL, *price = NULL, *reason = NULL;
    if (!notice_args(req, resp, &token, &price))
        return;
    cp_error_t err = {0};
    int loss = 0;
    if (kind == CP_NOTICE_LOSS) {
        if (srv_query(req, "r", &reason, &err) != CP_OK) {
            srv_reply_cp(resp, CP_EINVAL, &err, 0);
            return;
        }
        if (reason && reason[0] && strncmp(reason, "${", 2) != 0) {
            char *end;
            long v = strtol(reason, &end, 10);
            if (*end != '\0' || v < 0 || v > 100000) {
                srv_reply_error(resp, 400, "bad_loss_reason", NULL,
                                "r: the loss reason must be an OpenRTB loss code, got \"%s\"",
                                reason);
                return;
            }
            loss = (int)v;
        }
    }
    cp_status st = cp_rtb_notice(srv->act, kind, token, price, loss, 0, NULL, &err);
    if (st != CP_OK) {
        notice_error(resp, st, &err);
        return;
    }
    if (kind == CP_NOTICE_IMPRESSION) {
        /* The smallest transparent GIF (43 bytes). */
        static char gif[] = "GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
                            "\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00"
                            "\x01\x00\x00\x02\x02\x44\x01\x00\x3b";
        srv_reply_text(resp, 200, gif, NULL);
        resp->len = sizeof gif - 1;
        resp->content_type = "image/gif";
        return;
    }
    srv_reply_text(resp, 204, NULL, NULL);
}

void srv_h_rtb_win(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    notice(srv, req, resp, CP_NOTICE_WIN);
}

void srv_h_rtb_bill(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    notice(srv, req, resp, CP_NOTICE_BILLING);
}

void srv_h_rtb_loss(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    notice(srv, req, resp, CP_NOTICE_LOSS);
}

void srv_h_rtb_imp(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    notice(srv, req, resp, CP_NOTICE_IMPRESSION);
}

void srv_h_rtb_click(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    if (!need_act(srv, resp))
        return;
    const char *token = NULL, *url = NULL;
    cp_error_t err = {0};
    if (!notice_args(req, resp, &token, NULL))
        return;
    if (srv_query(req, "u", &url, &err) != CP_OK) {
        srv_reply_cp(resp, CP_EINVAL, &err, 0);
        return;
    }
    char *location = NULL;
    cp_status st = cp_rtb_click(srv->act, token, url, 0, NULL, &location, &err);
    if (st != CP_OK) {
        notice_error(resp, st, &err);
        return;
    }
    if (location == NULL) {
        srv_reply_error(resp, 404, "not_found", NULL,
                        "the click was recorded, but its line item no longer exists");
        return;
    }
    size_t n = strlen(location);
    char *loc = arena_strndup(&req->arena, location, n);
    cp_free(location);
    if (loc == NULL) {
        srv_reply_cp(resp, CP_ENOMEM, NULL, 0);
        return;
    }
    srv_reply_text(resp, 302, NULL, NULL);
    resp->location = loc;
}

/* POST /openrtb2/nobid: 204 at once, whatever the body. The floor that
 * `crowdpack bench --rtb` measures in the same run as the bidder: what
 * HTTP parsing, routing and auth cost before cp_rtb_bid is called. */
void srv_h_rtb_nobid(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    (void)srv;
    (void)req;
    srv_reply_text(resp, 204, NULL, NULL);
}
