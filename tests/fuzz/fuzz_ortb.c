/*
 * fuzz_ortb.c — libFuzzer target for the OpenRTB BidRequest parser
 * (src/activate/ortb.c) and the BidResponse writer (ortb_resp.c). The bytes
 * are a request body. Checks the contract: success means 1..ORTB_MAX_IMPS
 * imps with distinct non-empty ids, positive sizes, non-negative floors,
 * lists within ORTB_MAX_LIST and no NULL entry, `at` 1, 2 or > 500; failure
 * means a message and a zeroed request. Every parsed request is answered
 * with one bid per imp, and the response must be JSON that jansson reads
 * back with the request's id and every imp id. Corpus: tests/fuzz/ortb/
 * (the specification's examples, compacted, and a few CNY requests).
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activate/ortb.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_ortb: %s\n", what);
    abort();
}

static void check_strs(const ortb_strs_t *l)
{
    if (l->n > ORTB_MAX_LIST || (l->n > 0 && l->v == NULL))
        die("list length");
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i] == NULL)
            die("NULL list entry");
}

static void check(const ortb_request_t *r)
{
    if (r->id == NULL || r->id[0] == '\0')
        die("no request id");
    if (r->nimps == 0 || r->nimps > ORTB_MAX_IMPS)
        die("imp count");
    if (r->at != 1 && r->at != 2 && r->at <= 500)
        die("at");
    if (r->tmax < 0)
        die("tmax");
    for (size_t i = 0; i < r->nimps; i++) {
        const ortb_imp_t *imp = &r->imps[i];
        if (imp->id == NULL || imp->id[0] == '\0')
            die("no imp id");
        for (size_t k = 0; k < i; k++)
            if (strcmp(r->imps[k].id, imp->id) == 0)
                die("duplicate imp ids");
        for (size_t f = 0; f < imp->nformats; f++)
            if (imp->formats[f].w <= 0 || imp->formats[f].h <= 0)
                die("format size");
        if (imp->bidfloor_fen < 0 || imp->bidfloorcur == NULL)
            die("floor");
        if (imp->has_video && imp->video_mimes.n == 0)
            die("video without mimes");
        if (imp->has_audio && imp->audio_mimes.n == 0)
            die("audio without mimes");
        if (imp->has_native && imp->native_request == NULL)
            die("native without request");
        check_strs(&imp->video_mimes);
        check_strs(&imp->audio_mimes);
        for (size_t d = 0; d < imp->ndeals; d++) {
            if (imp->deals[d].id == NULL || imp->deals[d].bidfloor_fen < 0)
                die("deal");
            check_strs(&imp->deals[d].wseat);
        }
    }
    check_strs(&r->cat);
    check_strs(&r->cur);
    check_strs(&r->bcat);
    check_strs(&r->badv);
    check_strs(&r->bapp);
    for (size_t i = 0; i < r->neids; i++)
        check_strs(&r->eids[i].uids);
    for (size_t i = 0; i < r->ndata; i++)
        check_strs(&r->data[i].segments);
    if (r->gdpr < -1 || r->gdpr > 1 || r->coppa < -1 || r->coppa > 1)
        die("regs");
}

static void respond(const ortb_request_t *r)
{
    ortb_bid_t bids[ORTB_MAX_IMPS];
    memset(bids, 0, sizeof bids);
    for (size_t i = 0; i < r->nimps; i++) {
        bids[i].imp_id = r->imps[i].id;
        bids[i].price_fen = r->imps[i].bidfloor_fen;
        bids[i].adm = r->imps[i].native_request; /* any text the request carried */
        bids[i].adomain = r->badv;
        bids[i].crid = r->user_id;
        bids[i].dealid = r->imps[i].ndeals > 0 ? r->imps[i].deals[0].id : NULL;
        if (r->imps[i].nformats > 0) {
            bids[i].w = r->imps[i].formats[0].w;
            bids[i].h = r->imps[i].formats[0].h;
        }
    }
    buf_t b;
    buf_init(&b, 0);
    cp_error_t err = {0};
    if (ortb_response_write(&b, r, r->id, "seat", bids, r->nimps, &err) != CP_OK)
        die("response refused for a parsed request");
    json_error_t jerr;
    json_t *j = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        die("response is not JSON");
    if (strcmp(json_string_value(json_object_get(j, "id")), r->id) != 0)
        die("response id");
    json_t *arr = json_object_get(json_array_get(json_object_get(j, "seatbid"), 0), "bid");
    if (json_array_size(arr) != r->nimps)
        die("bid count");
    for (size_t i = 0; i < r->nimps; i++) {
        json_t *bid = json_array_get(arr, i);
        if (strcmp(json_string_value(json_object_get(bid, "impid")), r->imps[i].id) != 0)
            die("impid");
        double price = json_number_value(json_object_get(bid, "price"));
        double want = (double)r->imps[i].bidfloor_fen / 100.0;
        if (price < want - 0.005 || price > want + 0.005)
            die("price");
    }
    json_decref(j);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    arena_t a;
    arena_init(&a, 0);
    ortb_request_t r;
    cp_error_t err = {0};
    cp_status st = ortb_parse((const char *)data, size, &a, &r, &err);
    if (st == CP_OK) {
        check(&r);
        respond(&r);
    } else {
        if (err.message[0] == '\0')
            die("refusal without a message");
        if (r.id != NULL || r.nimps != 0 || r.imps != NULL)
            die("refused request left filled");
    }
    arena_free(&a);
    return 0;
}
