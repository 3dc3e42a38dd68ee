/* h_analytics.c — handlers for the analytics reports (docs/analytics.md):
 * insight, overlap, clusters, member tiers and the analytics settings.
 * The request body is the report's JSON request as the C API takes it;
 * the answer is the report as the C API returns it. */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

typedef cp_status (*report_fn)(cp_db_t *, const char *, size_t, char **, cp_error_t *);

/* Validates the body as a JSON object (415/400 replies), then runs fn. */
static void run_report(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp, report_fn fn)
{
    json_t *body = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    json_decref(body);
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st = fn(srv->db, req->body, req->body_len, &out, &err);
    if (st != CP_OK) {
        cp_free(out);
        /* Unknown crowds, tags and attributes are named in the body: 400. */
        srv_reply_cp(resp, st, &err, SRV_ERR_BODY_REFS);
        return;
    }
    srv_reply_text(resp, 200, out, cp_free);
}

void srv_h_insight(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    run_report(srv, req, resp, cp_insight_json);
}

void srv_h_overlap(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    run_report(srv, req, resp, cp_overlap_json);
}

/* A read key may preview clusters and elbows; storing them ("root")
 * writes tags and needs a write key. */
void srv_h_clusters(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    json_t *root = json_object_get(body, "root");
    int writes = root != NULL && !json_is_null(root);
    json_decref(body);
    if (writes && (int)req->role < CP_ROLE_WRITE) {
        srv_reply_error(resp, 403, "forbidden", NULL,
                        "POST /v1/clusters with \"root\" stores tags and needs a key with role "
                        "\"write\"; leave \"root\" out for a preview");
        return;
    }
    run_report(srv, req, resp, cp_cluster_json);
}

void srv_h_tiers_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st = cp_tiers_json(srv->db, &out, &err);
    if (st != CP_OK) {
        cp_free(out);
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_text(resp, 200, out, cp_free);
}

static cp_status tiers_set(cp_db_t *db, const char *b, size_t n, char **out, cp_error_t *err)
{
    return cp_tiers_set_json(db, b, n, out, err);
}

void srv_h_tiers_put(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    run_report(srv, req, resp, tiers_set);
}

void srv_h_tiers_nudge(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    run_report(srv, req, resp, cp_tiers_nudge_json);
}

void srv_h_analytics_settings_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st = cp_analytics_settings_json(srv->db, &out, &err);
    if (st != CP_OK) {
        cp_free(out);
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_text(resp, 200, out, cp_free);
}

static cp_status settings_set(cp_db_t *db, const char *b, size_t n, char **out, cp_error_t *err)
{
    cp_status st = cp_analytics_settings_set_json(db, b, n, err);
    return st != CP_OK ? st : cp_analytics_settings_json(db, out, err);
}

void srv_h_analytics_settings_put(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    run_report(srv, req, resp, settings_set);
}
