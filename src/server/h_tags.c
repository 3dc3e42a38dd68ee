/* h_tags.c — handlers for tags, the taxonomy and attributes. */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

/* Replies with a library JSON text (taken, freed with cp_free) or the error. */
static void reply_lib(srv_resp_t *resp, int status, cp_status st, char *text, const cp_error_t *err,
                      unsigned flags)
{
    if (st != CP_OK) {
        cp_free(text);
        srv_reply_cp(resp, st, err, flags);
        return;
    }
    srv_reply_text(resp, status, text, cp_free);
}

/* A boolean query flag: absent = 0; "true"/"1"/"yes" = 1; "false"/"0"/"no"
 * = 0; anything else a 400. Returns -1 after replying. */
static int query_flag(srv_req_t *req, srv_resp_t *resp, const char *key)
{
    const char *v = NULL;
    cp_error_t err = {0};
    cp_status st = srv_query(req, key, &v, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return -1;
    }
    if (v == NULL || strcmp(v, "false") == 0 || strcmp(v, "0") == 0 || strcmp(v, "no") == 0)
        return 0;
    if (v[0] == '\0' || strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "yes") == 0)
        return 1;
    srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "parameter", key),
                    "query argument \"%s\": expected true or false, got \"%s\"", key, v);
    return -1;
}

/* ?limit=N (1..max); absent = 0 (the library's default). Returns -1 after
 * replying 400. */
static long query_limit(srv_req_t *req, srv_resp_t *resp, long max)
{
    const char *v = NULL;
    cp_error_t err = {0};
    cp_status st = srv_query(req, "limit", &v, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return -1;
    }
    if (v == NULL)
        return 0;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (end == v || *end != '\0' || n < 1 || n > max) {
        srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "parameter", "limit"),
                        "query argument \"limit\": expected an integer from 1 to %ld, got \"%s\"",
                        max, v);
        return -1;
    }
    return n;
}

void srv_h_tags_list(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    const char *root = NULL, *q = NULL;
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = srv_query(req, "root", &root, &err);
    if (st == CP_OK)
        st = srv_query(req, "q", &q, &err);
    if (st == CP_OK && q != NULL) {
        /* ?q= searches slugs, names and display paths (substring). */
        long limit = query_limit(req, resp, CP_TAGS_SEARCH_MAX);
        if (limit < 0)
            return;
        st = cp_tags_search_json(srv->db, q, (size_t)limit, &text, &err);
    } else if (st == CP_OK) {
        st = cp_tags_json(srv->db, root, &text, &err);
    }
    reply_lib(resp, 200, st, text, &err, 0);
}

void srv_h_tags_create(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    const char *path, *name, *desc;
    cp_error_t err = {0};
    char *text = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    if (srv_field_str_req(body, "path", resp, &path) != CP_OK ||
        srv_field_str(body, "name", resp, &name) != CP_OK ||
        srv_field_str(body, "description", resp, &desc) != CP_OK)
        goto out;
    cp_status st = cp_tag_create(srv->db, path, name, desc, &err);
    if (st == CP_OK)
        st = cp_tag_json(srv->db, path, &text, &err);
    reply_lib(resp, 201, st, text, &err, SRV_ERR_BODY_REFS);
out:
    json_decref(body);
}

void srv_h_tag_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_tag_json(srv->db, req->params[0], &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
}

void srv_h_tag_patch(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    const char *new_path, *name, *desc;
    cp_error_t err = {0};
    char *text = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    if (srv_field_str(body, "path", resp, &new_path) != CP_OK ||
        srv_field_str(body, "name", resp, &name) != CP_OK ||
        srv_field_str(body, "description", resp, &desc) != CP_OK)
        goto out;
    if (new_path != NULL && strcmp(new_path, req->params[0]) == 0)
        new_path = NULL;
    cp_status st = cp_tag_update(srv->db, req->params[0], new_path, name, desc, &err);
    if (st == CP_OK)
        st = cp_tag_json(srv->db, new_path != NULL ? new_path : req->params[0], &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
out:
    json_decref(body);
}

void srv_h_tag_delete(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    int recursive = query_flag(req, resp, "recursive");
    if (recursive < 0)
        return;
    cp_status st = cp_tag_delete(srv->db, req->params[0], recursive, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_json(resp, 200, json_pack("{s:s}", "deleted", req->params[0]));
}

void srv_h_taxonomy_load(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    cp_error_t err = {0};
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    json_t *tags = json_object_get(body, "tags");
    if (!json_is_array(tags)) {
        srv_reply_error(resp, 400, tags == NULL ? "missing_field" : "wrong_type",
                        json_pack("{s:s}", "field", "tags"),
                        "request body: field \"tags\" must be an array of tag objects");
        goto out;
    }
    /* The library parses the same bytes again; it owns the validation of
     * each tag, the pre-parse above only checked the envelope. */
    cp_status st = cp_taxonomy_load_json(srv->db, req->body, req->body_len, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, SRV_ERR_BODY_REFS);
        goto out;
    }
    srv_reply_json(resp, 200, json_pack("{s:I}", "loaded", (json_int_t)json_array_size(tags)));
out:
    json_decref(body);
}

void srv_h_attrs_list(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_schema_json(srv->db, &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
}

static int attr_type_parse(const char *s, cp_attr_type *out)
{
    for (int t = CP_ATTR_INT; t <= CP_ATTR_GEO; t++) {
        const char *n = cp_attr_type_name((cp_attr_type)t);
        if (n != NULL && strcmp(n, s) == 0) {
            *out = (cp_attr_type)t;
            return 1;
        }
    }
    return 0;
}

void srv_h_attrs_create(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    json_t *attrs = json_object_get(body, "attributes");
    if (attrs != NULL) {
        if (!json_is_array(attrs)) {
            srv_reply_error(resp, 400, "wrong_type", json_pack("{s:s}", "field", "attributes"),
                            "request body: field \"attributes\" must be an array of "
                            "{\"name\",\"type\"} objects");
            goto out;
        }
        st = cp_schema_load_json(srv->db, req->body, req->body_len, &err);
    } else {
        const char *name, *type;
        cp_attr_type t;
        if (srv_field_str_req(body, "name", resp, &name) != CP_OK ||
            srv_field_str_req(body, "type", resp, &type) != CP_OK)
            goto out;
        if (!attr_type_parse(type, &t)) {
            srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "field", "type"),
                            "request body: attribute \"%s\": unknown type \"%s\" (expected int, "
                            "enum, string, bool, timestamp or geo)",
                            name, type);
            goto out;
        }
        st = cp_attr_define(srv->db, name, t, &err);
    }
    if (st == CP_OK)
        st = cp_schema_json(srv->db, &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
out:
    json_decref(body);
}

void srv_h_attr_values(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    char *text = NULL;
    long limit = query_limit(req, resp, 100000);
    if (limit < 0)
        return;
    cp_status st = cp_attr_values_json(srv->db, req->params[0], (size_t)limit, &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
}

/* PUT /v1/attributes/{name}/aliases {"aliases":{"广州":"guangzhou","穗":null}}:
 * each alias set (or, with null, removed) in order; the first failure
 * stops and is the answer (those before it stay applied). */
void srv_h_attr_aliases_put(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = CP_OK;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    json_t *al = json_object_get(body, "aliases");
    if (!json_is_object(al) || json_object_size(al) == 0) {
        srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "field", "aliases"),
                        "request body: field \"aliases\" must be an object of alias -> value "
                        "(null removes the alias)");
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(al, k, v)
    {
        if (json_is_null(v)) {
            st = cp_attr_alias_remove(srv->db, req->params[0], k, &err);
        } else if (json_is_string(v)) {
            st = cp_attr_alias_set(srv->db, req->params[0], k, json_string_value(v), &err);
        } else {
            srv_reply_error(resp, 400, "wrong_type", json_pack("{s:s}", "field", "aliases"),
                            "request body: aliases.%s must be a string value or null", k);
            goto out;
        }
        if (st != CP_OK)
            break;
    }
    if (st == CP_OK)
        st = cp_attr_values_json(srv->db, req->params[0], 0, &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
out:
    json_decref(body);
}
