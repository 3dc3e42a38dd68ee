/*
 * h_campaigns.c — /v1/campaigns: the campaign model of docs/activation.md
 * over the public cp_campaign_* API. The documents go to the library as
 * they came (it parses, validates and answers 400 naming the field); the
 * server only checks that the body is JSON, so a malformed body gets the
 * same line/column answer as everywhere else.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

/* The activation handle, or a 503 when this server has none (read-only
 * servers do not bid and do not keep campaigns). */
static cp_activate_t *activation(srv_ctx_t *srv, srv_resp_t *resp)
{
    if (srv->act == NULL)
        srv_reply_error(resp, 503, "activation_off", NULL,
                        "campaigns are not available on this server (it was started --read-only; "
                        "crowdpack serve opens them)");
    return srv->act;
}

/* A library error; a 400 about the document also carries "field", the
 * JSON path its message starts with ("lines[0].creatives[0].w"). */
static void reply_campaign_error(srv_resp_t *resp, cp_status st, const cp_error_t *err)
{
    json_t *extra = NULL;
    if (st == CP_EINVAL || st == CP_ELIMIT) {
        const char *m = err->message, *colon = strstr(m, ": ");
        size_t n = colon ? (size_t)(colon - m) : 0;
        if (n > 0 && n < 200 && memchr(m, ' ', n) == NULL) {
            extra = json_object();
            if (extra != NULL && json_object_set_new(extra, "field", json_stringn(m, n)) != 0) {
                json_decref(extra);
                extra = NULL;
            }
        }
    }
    srv_reply_cp_extra(resp, st, err, 0, extra);
}

static void reply_lib(srv_resp_t *resp, cp_status st, char *text, const cp_error_t *err)
{
    if (st != CP_OK) {
        cp_free(text);
        reply_campaign_error(resp, st, err);
        return;
    }
    srv_reply_text(resp, 200, text, cp_free);
}

/* GET /v1/campaigns */
void srv_h_campaigns_list(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_activate_t *a = activation(srv, resp);
    if (a == NULL)
        return;
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_campaigns_json(a, &text, &err);
    reply_lib(resp, st, text, &err);
    (void)req;
}

/* GET /v1/campaigns/{id} */
void srv_h_campaign_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_activate_t *a = activation(srv, resp);
    if (a == NULL)
        return;
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_campaign_json(a, req->params[0], &text, &err);
    reply_lib(resp, st, text, &err);
}

/* PUT /v1/campaigns/{id}: answers {"id","version"}. */
void srv_h_campaign_put(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_activate_t *a = activation(srv, resp);
    if (a == NULL)
        return;
    json_t *body = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    json_decref(body);
    cp_error_t err = {0};
    uint64_t version = 0;
    cp_status st =
        cp_campaign_put_json(a, req->params[0], req->body, req->body_len, &version, &err);
    if (st != CP_OK) {
        reply_campaign_error(resp, st, &err);
        return;
    }
    srv_reply_json(resp, 200,
                   json_pack("{s:s,s:I}", "id", req->params[0], "version", (json_int_t)version));
}

/* GET /v1/contact-cap */
void srv_h_contact_cap_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_activate_t *a = activation(srv, resp);
    if (a == NULL)
        return;
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_contact_cap_json(a, &text, &err);
    reply_lib(resp, st, text, &err);
    (void)req;
}

/* PUT /v1/contact-cap {"count":N,"per":"day"}: answers the cap in force. */
void srv_h_contact_cap_put(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_activate_t *a = activation(srv, resp);
    if (a == NULL)
        return;
    json_t *body = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    json_decref(body);
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_contact_cap_set_json(a, req->body, req->body_len, &err);
    if (st == CP_OK)
        st = cp_contact_cap_json(a, &text, &err);
    reply_lib(resp, st, text, &err);
}

/* DELETE /v1/campaigns/{id}: the history keeps every version. */
void srv_h_campaign_delete(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_activate_t *a = activation(srv, resp);
    if (a == NULL)
        return;
    cp_error_t err = {0};
    cp_status st = cp_campaign_delete(a, req->params[0], &err);
    if (st != CP_OK) {
        reply_campaign_error(resp, st, &err);
        return;
    }
    srv_reply_json(resp, 200, json_pack("{s:s,s:b}", "id", req->params[0], "deleted", 1));
}

/* GET /v1/campaigns/{id}/history */
void srv_h_campaign_history(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_activate_t *a = activation(srv, resp);
    if (a == NULL)
        return;
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_campaign_history_json(a, req->params[0], &text, &err);
    reply_lib(resp, st, text, &err);
}

/* GET /v1/campaigns/{id}/delivery */
void srv_h_campaign_delivery(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_activate_t *a = activation(srv, resp);
    if (a == NULL)
        return;
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_campaign_delivery_json(a, req->params[0], 0, &text, &err);
    reply_lib(resp, st, text, &err);
}
