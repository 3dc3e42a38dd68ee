/* h_meta.c — health, metrics, statistics and API key handlers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

/*
 * The readings both probes report. checkpoint_age_seconds is null before
 * the first checkpoint of this process.
 */
static json_t *health_json(const cp_health_t *h, int ok)
{
    json_t *j = json_object();
    if (j == NULL)
        return NULL;
    int bad = 0;
    bad |= json_object_set_new(j, "status", json_string(ok ? "ok" : "unavailable"));
    if (h->reason[0] != '\0') {
        bad |= json_object_set_new(j, "reason", json_string(h->reason));
        bad |= json_object_set_new(j, "message", json_string(h->detail[0] ? h->detail : h->reason));
    }
    bad |= json_object_set_new(j, "readable", json_boolean(h->readable));
    bad |= json_object_set_new(j, "writable", json_boolean(h->writable));
    bad |= json_object_set_new(j, "wal_bytes", json_integer((json_int_t)h->wal_bytes));
    bad |= json_object_set_new(j, "wal_records", json_integer((json_int_t)h->wal_records));
    bad |= json_object_set_new(
        j, "checkpoint_age_seconds",
        h->checkpoint_age_ms < 0 ? json_null() : json_real((double)h->checkpoint_age_ms / 1000.0));
    bad |= json_object_set_new(j, "disk_free_bytes", json_integer((json_int_t)h->disk_free_bytes));
    bad |= json_object_set_new(j, "disk_used_bytes", json_integer((json_int_t)h->disk_used_bytes));
    if (bad) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Fills *h; a handle that cannot even report is "failed". */
static void health_read(srv_ctx_t *srv, cp_health_t *h)
{
    if (srv->db == NULL || cp_db_health(srv->db, h, NULL) != CP_OK) {
        memset(h, 0, sizeof *h);
        h->checkpoint_age_ms = -1;
        snprintf(h->reason, sizeof h->reason, "failed");
        snprintf(h->detail, sizeof h->detail, "the database handle cannot report its health");
    }
}

/* GET /healthz: 200 only when reads and writes both work, else 503 with
 * the reason (read_only, storage_full, wal_error, failed). */
void srv_h_healthz(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    cp_health_t h = CP_HEALTH_INIT;
    health_read(srv, &h);
    int ok = h.readable && h.writable;
    srv_reply_json(resp, ok ? 200 : 503, health_json(&h, ok));
}

/* GET /readyz: may a load balancer send traffic here? Yes while reads
 * answer and the server takes writes; also for a server started with
 * --read-only, whose job is to answer reads. No after a write fault
 * (storage_full, wal_error) or when the handle failed. */
void srv_h_readyz(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    cp_health_t h = CP_HEALTH_INIT;
    health_read(srv, &h);
    int ok = h.readable && (h.writable || strcmp(h.reason, "read_only") == 0);
    srv_reply_json(resp, ok ? 200 : 503, health_json(&h, ok));
}

void srv_h_metrics(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    char *text = NULL;
    size_t len = 0;
    cp_status st = srv_metrics_render(&srv->metrics, srv->db, &text, &len);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, NULL, 0);
        return;
    }
    srv_reply_text(resp, 200, text, free);
    resp->len = len;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* GET /v1/stats: sizes and counters of the data directory, the fields of
 * cp_db_stats_t (what `crowdpack stats --json` prints). */
void srv_h_stats(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    cp_db_stats_t s = CP_DB_STATS_INIT;
    cp_error_t err = {0};
    cp_status st = cp_db_stats(srv->db, &s, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_json(resp, 200,
                   json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "users",
                             (json_int_t)s.users, "ordinals", (json_int_t)s.ordinals, "tags",
                             (json_int_t)s.tags, "attributes", (json_int_t)s.attributes, "crowds",
                             (json_int_t)s.crowds, "bitmap_bytes", (json_int_t)s.bitmap_bytes,
                             "column_bytes", (json_int_t)s.column_bytes, "disk_bytes",
                             (json_int_t)s.disk_bytes, "queries", (json_int_t)s.queries, "writes",
                             (json_int_t)s.writes, "compact_pending", (json_int_t)s.compact_pending,
                             "compactions", (json_int_t)s.compactions));
}

void srv_h_keys_list(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_keys_json(srv->db, &text, &err);
    if (st != CP_OK) {
        cp_free(text);
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_text(resp, 200, text, cp_free);
}

void srv_h_keys_create(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    const char *role_s, *label;
    char *key = NULL;
    cp_error_t err = {0};
    cp_role role = CP_ROLE_READ;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    if (srv_field_str_req(body, "role", resp, &role_s) != CP_OK ||
        srv_field_str(body, "label", resp, &label) != CP_OK)
        goto out;
    if (strcmp(role_s, "read") == 0) {
        role = CP_ROLE_READ;
    } else if (strcmp(role_s, "write") == 0) {
        role = CP_ROLE_WRITE;
    } else if (strcmp(role_s, "admin") == 0) {
        role = CP_ROLE_ADMIN;
    } else {
        srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "field", "role"),
                        "request body: field \"role\": expected read, write or admin, got \"%s\"",
                        role_s);
        goto out;
    }
    cp_status st = cp_key_create(srv->db, role, label, &key, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        goto out;
    }
    json_t *j = json_pack("{s:s,s:s}", "key", key, "role", role_s);
    if (j != NULL && label != NULL && json_object_set_new(j, "label", json_string(label))) {
        json_decref(j);
        j = NULL; /* srv_reply_json: 500 out_of_memory, not a body without the label */
    }
    srv_reply_json(resp, 201, j);
out:
    if (key != NULL) {
        /* The only copy of the secret outside the response: wipe it. */
        memset(key, 0, strlen(key));
        cp_free(key);
    }
    json_decref(body);
}

void srv_h_key_delete(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    cp_status st = cp_key_revoke(srv->db, req->params[0], &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_json(resp, 200, json_pack("{s:s}", "deleted", req->params[0]));
}
