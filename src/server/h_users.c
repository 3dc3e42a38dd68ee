/* h_users.c — handlers for users: bulk upsert, show, delete, tag removal. */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

/*
 * Re-encodes {"users":[...]} or a single user object as NDJSON, one compact
 * line per user, so that every body form goes through the same strict
 * loader and line N of the error is element N of the array.
 */
static cp_status users_to_ndjson(json_t *body, buf_t *out, int *is_array, srv_resp_t *resp)
{
    json_t *users = json_object_get(body, "users");
    *is_array = users != NULL;
    if (users == NULL) {
        char *line = json_dumps(body, JSON_COMPACT);
        if (line == NULL)
            return CP_ENOMEM;
        cp_status st = buf_append(out, line, strlen(line));
        free(line);
        return st;
    }
    if (!json_is_array(users)) {
        srv_reply_error(resp, 400, "wrong_type", json_pack("{s:s}", "field", "users"),
                        "request body: field \"users\" must be an array of user objects");
        return CP_EINVAL;
    }
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u)
    {
        if (!json_is_object(u)) {
            srv_reply_error(
                resp, 400, "invalid",
                json_pack("{s:I,s:I}", "record", (json_int_t)i + 1, "index", (json_int_t)i),
                "request body: users[%zu] must be an object", i);
            return CP_EINVAL;
        }
        char *line = json_dumps(u, JSON_COMPACT);
        if (line == NULL)
            return CP_ENOMEM;
        cp_status st = buf_append(out, line, strlen(line));
        free(line);
        if (st == CP_OK)
            st = buf_append(out, "\n", 1);
        if (st != CP_OK)
            return st;
    }
    return CP_OK;
}

void srv_h_users_load(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    buf_t nd;
    buf_init(&nd, 0);
    cp_error_t err = {0};
    cp_load_stats_t stats = CP_LOAD_STATS_INIT;
    const char *data;
    size_t len;
    int is_array = 0;
    cp_load_options_t lo = CP_LOAD_OPTIONS_INIT;
    lo.flags = CP_LOAD_STRICT;

    if (srv_ctype_is_ndjson(req->content_type)) {
        size_t off;
        if (srv_json_too_deep(req->body, req->body_len, SRV_MAX_JSON_DEPTH, 1, &off)) {
            int line, col;
            srv_text_position(req->body, off, &line, &col);
            srv_reply_error(resp, 400, "json_too_deep",
                            json_pack("{s:i,s:i,s:i}", "record", line, "line", line, "column", col),
                            "request body: line %d, column %d: JSON nested deeper than %d "
                            "levels",
                            line, col, SRV_MAX_JSON_DEPTH);
            goto out;
        }
        data = req->body;
        len = req->body_len;
    } else {
        if (!srv_ctype_is_json(req->content_type)) {
            srv_reply_error(resp, 415, "unsupported_media_type", NULL,
                            "request body: content type \"%s\" is not accepted by POST "
                            "/v1/users; send application/json or application/x-ndjson",
                            req->content_type != NULL ? req->content_type : "(none)");
            goto out;
        }
        if (srv_body_object(req, resp, &body) != CP_OK)
            goto out;
        cp_status st = users_to_ndjson(body, &nd, &is_array, resp);
        if (st == CP_EINVAL)
            goto out;
        if (st != CP_OK) {
            srv_reply_cp(resp, st, NULL, 0);
            goto out;
        }
        data = buf_cstr(&nd);
        len = nd.len;
    }

    cp_status st = cp_load_ndjson_buf(srv->db, data, len, &lo, &stats, &err);
    if (st == CP_OK && stats.rejected > 0) {
        /* STRICT promises the first bad line fails the call; never claim
         * success while lines were dropped. */
        st = CP_ERR(&err, CP_EINTERNAL, "%llu lines were rejected in a strict load",
                    (unsigned long long)stats.rejected);
    }
    if (st != CP_OK) {
        json_t *extra = NULL;
        if (err.record > 0 && is_array)
            extra = json_pack("{s:I}", "index", (json_int_t)err.record - 1);
        srv_reply_cp_extra(resp, st, &err, SRV_ERR_BODY_REFS, extra);
        goto out;
    }
    srv_reply_json(resp, 200,
                   json_pack("{s:I,s:I,s:I}", "created", (json_int_t)stats.users_created, "updated",
                             (json_int_t)stats.users_updated, "tags_assigned",
                             (json_int_t)stats.tags_assigned));
out:
    json_decref(body);
    buf_free(&nd);
}

void srv_h_user_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_user_json(srv->db, req->params[0], &text, &err);
    if (st != CP_OK) {
        cp_free(text);
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_text(resp, 200, text, cp_free);
}

void srv_h_user_delete(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    cp_status st = cp_user_delete(srv->db, req->params[0], &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_json(resp, 200, json_pack("{s:s}", "deleted", req->params[0]));
}

static void remove_tags(srv_ctx_t *srv, srv_resp_t *resp, const char *id, const char *const *paths,
                        size_t n)
{
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_user_remove_tags(srv->db, id, paths, n, &err);
    if (st == CP_OK)
        st = cp_user_json(srv->db, id, &text, &err);
    if (st != CP_OK) {
        cp_free(text);
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_text(resp, 200, text, cp_free);
}

void srv_h_user_tags_remove(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    const char **paths = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    json_t *tags = json_object_get(body, "tags");
    if (!json_is_array(tags)) {
        srv_reply_error(resp, 400, tags == NULL ? "missing_field" : "wrong_type",
                        json_pack("{s:s}", "field", "tags"),
                        "request body: field \"tags\" must be an array of tag paths");
        goto out;
    }
    size_t n = json_array_size(tags);
    paths = calloc(n + 1, sizeof *paths);
    if (paths == NULL) {
        srv_reply_cp(resp, CP_ENOMEM, NULL, 0);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tags, i);
        if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t)) {
            srv_reply_error(resp, 400, "wrong_type", json_pack("{s:s}", "field", "tags"),
                            "request body: tags[%zu] must be a tag path string", i);
            goto out;
        }
        paths[i] = json_string_value(t);
    }
    remove_tags(srv, resp, req->params[0], paths, n);
out:
    free(paths);
    json_decref(body);
}

void srv_h_user_tag_delete(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    const char *path = req->params[1];
    remove_tags(srv, resp, req->params[0], &path, 1);
}
