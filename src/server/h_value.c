/* h_value.c — handlers of the value models and journeys (docs/api.md):
 * event measures, RFM and its schedule, AIPL stages and funnels. The
 * body is the C API's JSON request; the answer its JSON report. Runs that
 * store tags and attributes need a write key; previews ("store": false)
 * only read. */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

typedef cp_status (*value_fn)(cp_db_t *, const char *, size_t, char **, cp_error_t *);

/* Validates the body as a JSON object; when `store_field` is set, a
 * request that stores (the field absent or true) needs a write key. */
static void run(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp, value_fn fn,
                const char *store_field, const char *what)
{
    json_t *body = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    int writes = 0;
    if (store_field) {
        json_t *s = json_object_get(body, store_field);
        writes = s == NULL || json_is_true(s);
    }
    json_decref(body);
    if (writes && (int)req->role < CP_ROLE_WRITE) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "%s stores tags and attributes and needs a key with role \"write\"; send "
                 "\"%s\": false for a preview",
                 what, store_field);
        srv_reply_error(resp, 403, "forbidden", NULL, "%s", msg);
        return;
    }
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st = fn(srv->db, req->body, req->body_len, &out, &err);
    if (st != CP_OK) {
        cp_free(out);
        srv_reply_cp(resp, st, &err, SRV_ERR_BODY_REFS);
        return;
    }
    srv_reply_text(resp, 200, out, cp_free);
}

static void run_get(srv_resp_t *resp, cp_db_t *db,
                    cp_status (*fn)(cp_db_t *, char **, cp_error_t *))
{
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st = fn(db, &out, &err);
    if (st != CP_OK) {
        cp_free(out);
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_text(resp, 200, out, cp_free);
}

void srv_h_rfm(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    run(srv, req, resp, cp_rfm_json, "store", "POST /v1/rfm");
}

void srv_h_rfm_schedule_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    run_get(resp, srv->db, cp_rfm_schedule_json);
}

void srv_h_rfm_schedule_put(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    run(srv, req, resp, cp_rfm_schedule_set_json, NULL, NULL);
}

void srv_h_measures_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    run_get(resp, srv->db, cp_measures_json);
}

void srv_h_measures_put(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    run(srv, req, resp, cp_measures_set_json, NULL, NULL);
}

void srv_h_aipl(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    run(srv, req, resp, cp_aipl_json, "store", "POST /v1/aipl");
}

/* Funnels store tags only when asked ("store": true). */
void srv_h_funnels(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    int writes = json_is_true(json_object_get(body, "store"));
    json_decref(body);
    if (writes && (int)req->role < CP_ROLE_WRITE) {
        srv_reply_error(resp, 403, "forbidden", NULL, "%s",
                        "POST /v1/funnels with \"store\": true writes tags and needs a key with "
                        "role \"write\"");
        return;
    }
    run(srv, req, resp, cp_funnel_json, NULL, NULL);
}
