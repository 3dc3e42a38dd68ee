/*
 * ortb_resp.c — the BidResponse (ortb.h), written by hand into a buf_t:
 * a response is a few hundred bytes built once per winning request, and
 * building a json_t tree for it would cost more allocations than the
 * parse did.
 *
 * Money: prices are whole fen CPM inside crowdpack and yuan CPM on the
 * wire, written with exactly two decimals from the integer (1200 fen ->
 * 12.00), never through a double, so what the exchange reads is what the
 * ledger reserved.
 */
#include <stdio.h>
#include <string.h>

#include "activate/ortb.h"

#define LIT(b, s) buf_append((b), (s), sizeof(s) - 1)

/* Appends s as a JSON string: quotes, backslash and control characters
 * escaped; UTF-8 passes through (checked first: a response must be valid
 * JSON whatever a campaign's markup holds). */
static cp_status put_str(buf_t *b, const char *s, cp_error_t *err, const char *what)
{
    size_t n = strlen(s);
    if (!utf8_valid(s, n))
        return CP_ERR(err, CP_EINVAL, "BidResponse: %s is not valid UTF-8", what);
    return json_buf_str(b, s, n);
}

/* ,"key":"value" when value is not NULL. */
static cp_status put_field(buf_t *b, const char *key, const char *value, cp_error_t *err)
{
    if (value == NULL)
        return CP_OK;
    cp_status st = buf_printf(b, ",\"%s\":", key);
    return st == CP_OK ? put_str(b, value, err, key) : st;
}

/* ,"key":["a","b"] when the list is not empty. */
static cp_status put_list(buf_t *b, const char *key, const ortb_strs_t *l, cp_error_t *err)
{
    if (l->n == 0)
        return CP_OK;
    cp_status st = buf_printf(b, ",\"%s\":[", key);
    for (size_t i = 0; i < l->n && st == CP_OK; i++) {
        if (i > 0)
            st = buf_append(b, ",", 1);
        if (st == CP_OK)
            st = put_str(b, l->v[i] != NULL ? l->v[i] : "", err, key);
    }
    return st == CP_OK ? buf_append(b, "]", 1) : st;
}

static cp_status put_bid(buf_t *b, const ortb_bid_t *bid, size_t index, cp_error_t *err)
{
    if (bid->imp_id == NULL)
        return CP_ERR(err, CP_EINVAL, "BidResponse: bid %zu has no imp id", index);
    if (bid->price_fen < 0)
        return CP_ERR(err, CP_EINVAL, "BidResponse: bid %zu has a negative price (%lld fen)", index,
                      (long long)bid->price_fen);
    /* The bid's own id: its position, unique within the response. */
    cp_status st = buf_printf(b, "%s{\"id\":\"%zu\",\"impid\":", index > 0 ? "," : "", index + 1);
    if (st == CP_OK)
        st = put_str(b, bid->imp_id, err, "impid");
    if (st == CP_OK)
        st = buf_printf(b, ",\"price\":%lld.%02lld", (long long)(bid->price_fen / 100),
                        (long long)(bid->price_fen % 100));
    if (st == CP_OK)
        st = put_field(b, "adm", bid->adm, err);
    if (st == CP_OK)
        st = put_field(b, "nurl", bid->nurl, err);
    if (st == CP_OK)
        st = put_field(b, "burl", bid->burl, err);
    if (st == CP_OK)
        st = put_field(b, "lurl", bid->lurl, err);
    if (st == CP_OK)
        st = put_field(b, "adid", bid->adid, err);
    if (st == CP_OK)
        st = put_list(b, "adomain", &bid->adomain, err);
    if (st == CP_OK)
        st = put_field(b, "iurl", bid->iurl, err);
    if (st == CP_OK)
        st = put_field(b, "cid", bid->cid, err);
    if (st == CP_OK)
        st = put_field(b, "crid", bid->crid, err);
    if (st == CP_OK)
        st = put_list(b, "cat", &bid->cat, err);
    if (st == CP_OK)
        st = put_field(b, "dealid", bid->dealid, err);
    if (st == CP_OK && bid->w > 0 && bid->h > 0)
        st = buf_printf(b, ",\"w\":%d,\"h\":%d", (int)bid->w, (int)bid->h);
    if (st == CP_OK && bid->mtype > 0)
        st = buf_printf(b, ",\"mtype\":%d", bid->mtype);
    return st == CP_OK ? buf_append(b, "}", 1) : st;
}

cp_status ortb_response_write(buf_t *out, const ortb_request_t *req, const char *bidid,
                              const char *seat, const ortb_bid_t *bids, size_t nbids,
                              cp_error_t *err)
{
    size_t mark = out->len;
    cp_status st = LIT(out, "{\"id\":");
    if (st == CP_OK)
        st = put_str(out, req->id != NULL ? req->id : "", err, "id");
    /* No bids: the bare {"id":...}, which the specification accepts as a
     * no-bid (the bidder usually answers 204 instead). */
    if (st == CP_OK && nbids > 0) {
        st = put_field(out, "bidid", bidid, err);
        if (st == CP_OK)
            st = LIT(out, ",\"cur\":\"CNY\",\"seatbid\":[{");
        if (st == CP_OK && seat != NULL) {
            st = LIT(out, "\"seat\":");
            if (st == CP_OK)
                st = put_str(out, seat, err, "seat");
            if (st == CP_OK)
                st = buf_append(out, ",", 1);
        }
        if (st == CP_OK)
            st = LIT(out, "\"bid\":[");
        for (size_t i = 0; i < nbids && st == CP_OK; i++)
            st = put_bid(out, &bids[i], i, err);
        if (st == CP_OK)
            st = LIT(out, "]}]");
    }
    if (st == CP_OK)
        st = buf_append(out, "}", 1);
    if (st != CP_OK) {
        out->len = mark; /* nothing half-written stays behind */
        /* Refusals (CP_EINVAL) named themselves; the buffer's limit and
         * memory did not. */
        if (st != CP_EINVAL)
            CP_ERR(err, st, "BidResponse: %s while writing the response", cp_strerror(st));
    }
    return st;
}
