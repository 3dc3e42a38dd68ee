/*
 * h_events.c — the Segment-compatible HTTP Tracking API (POST /v1/identify,
 * /v1/track, /v1/page, /v1/screen, /v1/group, /v1/alias, /v1/batch), whois
 * / unmerge / delete by identifier, the property catalog and the event
 * list. Auth is the router's: Segment SDKs send the write key as the HTTP
 * Basic user name, which maps to an API key with the write role.
 *
 * 200 {"success": true} only once the request's events are durable (the
 * write-ahead log is fsynced; concurrent requests share the fsync). A batch
 * applies its valid events: 200 lists the others in "rejected" [{"index",
 * "reason"}] and unused values in "warnings" [{"index","field","reason"}].
 * A request with nothing valid (or, with ?strict=1, anything rejected) is
 * 400 with {"error":{"code","message","events":[{"index","reason"}]}} and
 * nothing of it applied; 413 for oversized bodies.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

#define EV_EVENT_MAX (32u * 1024)  /* per event, its compact JSON (docs/intake.md) */
#define EV_BATCH_MAX (500u * 1024) /* per batch body, after decompression */

/*
 * The 32 KB limit is per event on its compact JSON, so a single event sent
 * pretty-printed (or with padding) over 32 KB raw is re-encoded compactly
 * before the engine sees it; only such bodies pay for the extra parse. A
 * body that is not JSON is passed on as it is, for the engine's message.
 */
static char *compact_event(const srv_req_t *req, size_t *len)
{
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (j == NULL)
        return NULL;
    char *out = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (out != NULL)
        *len = strlen(out);
    return out;
}

static void reply_batch_too_large(srv_resp_t *resp, size_t len)
{
    srv_reply_error(resp, 413, "too_large", json_pack("{s:I}", "limit", (json_int_t)EV_BATCH_MAX),
                    "request body is %zu bytes; the limit is %u bytes per request on the "
                    "Segment endpoints (32 KB per event)",
                    len, EV_BATCH_MAX);
}

int srv_intake_declared_too_large(int route, size_t declared, srv_resp_t *resp)
{
    if (route < 0 || (size_t)route >= srv_nroutes || declared <= EV_BATCH_MAX)
        return 0;
    srv_handler_fn h = srv_routes[route].handler;
    if (h != srv_h_ev_identify && h != srv_h_ev_track && h != srv_h_ev_page &&
        h != srv_h_ev_screen && h != srv_h_ev_group && h != srv_h_ev_alias && h != srv_h_ev_batch)
        return 0;
    reply_batch_too_large(resp, declared);
    return 1;
}

static void ingest(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp, cp_event_type t)
{
    /* Single events too: their 32 KB is checked per event, compact. */
    if (req->body_len > EV_BATCH_MAX) {
        reply_batch_too_large(resp, req->body_len);
        return;
    }
    /* ?strict=1: a request with any rejected event is refused whole */
    const char *strict = NULL;
    cp_error_t qerr = {0};
    if (srv_query(req, "strict", &strict, &qerr) != CP_OK) {
        srv_reply_cp(resp, CP_EINVAL, &qerr, 0);
        return;
    }
    unsigned flags =
        strict && (!strcmp(strict, "1") || !strcmp(strict, "true")) ? CP_INGEST_STRICT : 0;
    const char *body = req->body;
    size_t len = req->body_len;
    char *compact = NULL;
    if (t != CP_EVENT_BATCH && len > EV_EVENT_MAX && (compact = compact_event(req, &len)) != NULL)
        body = compact;
    cp_ingest_result_t r = CP_INGEST_RESULT_INIT;
    cp_error_t err = {0};
    cp_status st = cp_ingest_segment_ex(srv->db, t, body, len, flags, &r, &err);
    free(compact);
    if (st == CP_EINVAL && r.errors_json == NULL && srv_reply_if_malformed(req, resp)) {
        cp_ingest_result_clear(&r);
        return;
    }
    if (st != CP_OK) {
        json_t *extra = NULL;
        if (r.errors_json) {
            json_t *ev = json_loads(r.errors_json, 0, NULL);
            if (ev)
                extra = json_pack("{s:o}", "events", ev);
        }
        if (st == CP_ELIMIT)
            srv_reply_error(resp, 413, "too_large", extra, "%s", err.message);
        else
            srv_reply_cp_extra(resp, st, &err, 0, extra); /* takes `extra` */
        cp_ingest_result_clear(&r);
        return;
    }
    /* Lenient batches: the rejected events and the values not used are
     * listed by the event's index in the request. */
    json_t *ok = json_pack("{s:b,s:I,s:I}", "success", 1, "applied", (json_int_t)r.applied,
                           "duplicates", (json_int_t)r.duplicates);
    json_t *rej = r.errors_json ? json_loads(r.errors_json, 0, NULL) : NULL;
    json_t *warn = r.warnings_json ? json_loads(r.warnings_json, 0, NULL) : NULL;
    if (ok == NULL) {
        json_decref(rej);
        json_decref(warn);
    } else {
        /* Both calls run: set_new takes its value either way. */
        int bad = rej && json_object_set_new(ok, "rejected", rej) != 0;
        bad |= warn && json_object_set_new(ok, "warnings", warn) != 0;
        if (bad) {
            json_decref(ok);
            ok = NULL;
        }
    }
    srv_reply_json(resp, 200, ok); /* NULL: out of memory */
    cp_ingest_result_clear(&r);
}

void srv_h_ev_identify(srv_ctx_t *s, srv_req_t *q, srv_resp_t *r)
{
    ingest(s, q, r, CP_EVENT_IDENTIFY);
}
void srv_h_ev_track(srv_ctx_t *s, srv_req_t *q, srv_resp_t *r)
{
    ingest(s, q, r, CP_EVENT_TRACK);
}
void srv_h_ev_page(srv_ctx_t *s, srv_req_t *q, srv_resp_t *r)
{
    ingest(s, q, r, CP_EVENT_PAGE);
}
void srv_h_ev_screen(srv_ctx_t *s, srv_req_t *q, srv_resp_t *r)
{
    ingest(s, q, r, CP_EVENT_SCREEN);
}
void srv_h_ev_group(srv_ctx_t *s, srv_req_t *q, srv_resp_t *r)
{
    ingest(s, q, r, CP_EVENT_GROUP);
}
void srv_h_ev_alias(srv_ctx_t *s, srv_req_t *q, srv_resp_t *r)
{
    ingest(s, q, r, CP_EVENT_ALIAS);
}
void srv_h_ev_batch(srv_ctx_t *s, srv_req_t *q, srv_resp_t *r)
{
    ingest(s, q, r, CP_EVENT_BATCH);
}

static void reply_text_json(srv_resp_t *resp, cp_status st, const cp_error_t *err, char *out)
{
    if (st != CP_OK) {
        srv_reply_cp(resp, st, err, 0);
        return;
    }
    json_t *j = json_loads(out, 0, NULL);
    cp_free(out);
    srv_reply_json(resp, 200, j);
}

/* GET /v1/users/{type}/{value} */
void srv_h_whois(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st = cp_whois_json(srv->db, req->params[0], req->params[1], &out, &err);
    reply_text_json(resp, st, &err, out);
}

/* POST /v1/users/{type}/{value}/unmerge {"merge_id": N} */
void srv_h_unmerge(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    json_t *mid = json_object_get(body, "merge_id");
    if (!json_is_integer(mid) || json_integer_value(mid) <= 0) {
        srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "field", "merge_id"),
                        "request body: \"merge_id\" must be a positive integer (see the lineage "
                        "of GET /v1/users/%s/%s)",
                        req->params[0], req->params[1]);
        json_decref(body);
        return;
    }
    uint64_t id = (uint64_t)json_integer_value(mid);
    json_decref(body);
    /* The merge must concern this user: its lineage lists it. */
    char *who = NULL;
    cp_error_t err = {0};
    cp_status st = cp_whois_json(srv->db, req->params[0], req->params[1], &who, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    json_t *w = json_loads(who, 0, NULL);
    cp_free(who);
    int found = 0;
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(w, "lineage"), i, x) found |=
        (uint64_t)json_integer_value(json_object_get(x, "merge_id")) == id;
    json_decref(w);
    if (!found) {
        srv_reply_error(resp, 404, "not_found", NULL, "merge %llu is not in the lineage of %s:%s",
                        (unsigned long long)id, req->params[0], req->params[1]);
        return;
    }
    char *out = NULL;
    st = cp_unmerge(srv->db, id, &out, &err);
    reply_text_json(resp, st, &err, out);
}

/* DELETE /v1/users/{type}/{value} */
void srv_h_user_delete_ident(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    cp_status st = cp_user_delete_by_identifier(srv->db, req->params[0], req->params[1], &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_json(
        resp, 200,
        json_pack("{s:s,s:s}", "deleted_type", req->params[0], "deleted_value", req->params[1]));
}

void srv_h_properties(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    (void)req;
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st = cp_properties_json(srv->db, &out, &err);
    reply_text_json(resp, st, &err, out);
}

void srv_h_events_list(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    (void)req;
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st = cp_events_json(srv->db, &out, &err);
    reply_text_json(resp, st, &err, out);
}

/* GET/PUT /v1/intake/config */
void srv_h_intake_config_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    (void)req;
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st = cp_intake_config_json(srv->db, &out, &err);
    reply_text_json(resp, st, &err, out);
}

void srv_h_intake_config_put(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    cp_status st = cp_intake_config_set_json(srv->db, req->body, req->body_len, &err);
    if (st == CP_EINVAL && srv_reply_if_malformed(req, resp))
        return;
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_h_intake_config_get(srv, req, resp);
}

/* POST /v1/count {"expression": TEXT, "as_of": "2011-06-30"} */
void srv_h_count_as_of(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    const char *expr = json_string_value(json_object_get(body, "expression"));
    const char *as_of = json_string_value(json_object_get(body, "as_of"));
    if (expr == NULL) {
        srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "field", "expression"),
                        "request body: \"expression\" (text) is required");
        json_decref(body);
        return;
    }
    uint64_t n = 0;
    cp_error_t err = {0};
    cp_status st = cp_count_as_of(srv->db, expr, as_of, &n, &err);
    if (st != CP_OK)
        srv_reply_cp(resp, st, &err, 0);
    else
        srv_reply_json(resp, 200,
                       srv_with_warnings(srv->db, expr, NULL,
                                         json_pack("{s:s,s:s?,s:I}", "expression", expr, "as_of",
                                                   as_of, "count", (json_int_t)n)));
    json_decref(body);
}
