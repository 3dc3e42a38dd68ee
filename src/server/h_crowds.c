/* h_crowds.c — handlers for crowds (audience packs) and expressions. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

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

/*
 * The expression of a request body: exactly one of "expression" (text) or
 * "tree" (JSON form). On success either *text is set (borrowed from body)
 * or *tree_json (caller frees with free()). Replies and returns non-OK on
 * a bad body. `required`: neither present is an error.
 */
static cp_status body_expression(json_t *body, srv_resp_t *resp, int required, const char **text,
                                 char **tree_json)
{
    *text = NULL;
    *tree_json = NULL;
    cp_status st = srv_field_str(body, "expression", resp, text);
    if (st != CP_OK)
        return st;
    json_t *tree = json_object_get(body, "tree");
    if (tree != NULL && json_is_null(tree))
        tree = NULL;
    if (*text != NULL && tree != NULL) {
        srv_reply_error(resp, 400, "invalid", NULL,
                        "request body: give either \"expression\" or \"tree\", not both");
        return CP_EINVAL;
    }
    if (*text != NULL) {
        size_t n = strlen(*text);
        if (n > CP_EXPR_MAX_LEN) {
            srv_reply_error(resp, 413, "expression_too_long",
                            json_pack("{s:s}", "field", "expression"),
                            "request body: field \"expression\" is %zu bytes, longer than the "
                            "limit of %d",
                            n, CP_EXPR_MAX_LEN);
            return CP_ELIMIT;
        }
        return CP_OK;
    }
    if (tree != NULL) {
        if (!json_is_object(tree)) {
            srv_reply_error(resp, 400, "wrong_type", json_pack("{s:s}", "field", "tree"),
                            "request body: field \"tree\" must be an expression object");
            return CP_EINVAL;
        }
        *tree_json = json_dumps(tree, JSON_COMPACT);
        if (*tree_json == NULL) {
            srv_reply_cp(resp, CP_ENOMEM, NULL, 0);
            return CP_ENOMEM;
        }
        return CP_OK;
    }
    if (required) {
        srv_reply_error(resp, 400, "missing_field", json_pack("{s:s}", "field", "expression"),
                        "request body: field \"expression\" (text) or \"tree\" (JSON) is "
                        "required");
        return CP_EINVAL;
    }
    return CP_OK;
}

/* Canonical text of an expression given as text or tree; caller cp_frees. */
static cp_status canonical_text(const char *text, const char *tree_json, char **out,
                                cp_error_t *err)
{
    *out = NULL;
    char *tree = NULL;
    cp_status st;
    if (tree_json == NULL) {
        st = cp_expr_to_json(text, &tree, err);
        if (st != CP_OK)
            return st;
        tree_json = tree;
    }
    st = cp_expr_from_json(tree_json, strlen(tree_json), out, err);
    cp_free(tree);
    return st;
}

json_t *srv_with_warnings(cp_db_t *db, const char *text, const char *tree, json_t *answer)
{
    char *w = NULL;
    cp_error_t err = {0};
    if (answer == NULL ||
        cp_expr_warnings_json(db, text, tree, tree ? strlen(tree) : 0, &w, &err) != CP_OK)
        return answer; /* the count stands; warnings are advice */
    json_t *j = json_loads(w, 0, NULL);
    json_t *arr = json_object_get(j, "warnings");
    if (json_array_size(arr) > 0 && json_object_set(answer, "warnings", arr) != 0) {
        json_decref(answer);
        answer = NULL;
    }
    json_decref(j);
    cp_free(w);
    return answer;
}

void srv_h_crowds_estimate(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    const char *text;
    char *tree = NULL, *canon = NULL;
    cp_error_t err = {0};
    uint64_t count = 0;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    const char *as_of = NULL;
    if (body_expression(body, resp, 1, &text, &tree) != CP_OK ||
        srv_field_str(body, "as_of", resp, &as_of) != CP_OK)
        goto out;
    uint64_t t0 = time_mono_ns();
    cp_status st = text != NULL
                       ? cp_count_as_of(srv->db, text, as_of, &count, &err)
                       : cp_count_json_as_of(srv->db, tree, strlen(tree), as_of, &count, &err);
    uint64_t t1 = time_mono_ns();
    if (st == CP_OK)
        st = canonical_text(text, tree, &canon, &err);
    if (st != CP_OK) {
        if (tree != NULL)
            error_prefix(&err, "request body: field \"tree\": ");
        srv_reply_cp(resp, st, &err, SRV_ERR_BODY_REFS);
        goto out;
    }
    srv_reply_json(resp, 200,
                   srv_with_warnings(srv->db, text, tree,
                                     json_pack("{s:I,s:f,s:s,s:s?}", "count", (json_int_t)count,
                                               "took_ms", (double)(t1 - t0) / 1e6, "expression",
                                               canon, "as_of", as_of && *as_of ? as_of : NULL)));
out:
    cp_free(canon);
    free(tree);
    json_decref(body);
}

static int crowd_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

cp_status srv_setop_expr(const char *op, const char *const *names, size_t n, char **out,
                         cp_error_t *err)
{
    *out = NULL;
    const char *join;
    if (strcmp(op, "union") == 0)
        join = " OR ";
    else if (strcmp(op, "intersect") == 0)
        join = " AND ";
    else if (strcmp(op, "difference") == 0)
        join = " AND NOT ";
    else
        return CP_ERR(err, CP_EINVAL,
                      "request body: field \"op\": unknown set operation \"%s\" (expected "
                      "union, intersect or difference)",
                      op);
    if (n == 0)
        return CP_ERR(err, CP_EINVAL,
                      "request body: field \"crowds\" must name at least one crowd");
    buf_t b;
    buf_init(&b, CP_EXPR_MAX_LEN);
    cp_status st = CP_OK;
    for (size_t i = 0; i < n && st == CP_OK; i++) {
        if (names[i] == NULL || !crowd_name_ok(names[i])) {
            buf_free(&b);
            return CP_ERR(err, CP_EINVAL,
                          "request body: crowds[%zu]: \"%s\" is not a crowd name "
                          "([A-Za-z0-9_-], 1 to 128 characters)",
                          i, names[i] != NULL ? names[i] : "(null)");
        }
        if (i > 0)
            st = buf_append(&b, join, strlen(join));
        if (st == CP_OK)
            st = buf_printf(&b, "crowd:%s", names[i]);
    }
    if (st != CP_OK) {
        buf_free(&b);
        return st == CP_ELIMIT ? CP_ERR(err, CP_ELIMIT,
                                        "request body: the set operation's "
                                        "expression is longer than %d bytes",
                                        CP_EXPR_MAX_LEN)
                               : CP_ERR(err, st, "out of memory building the expression");
    }
    buf_cstr(&b);
    *out = b.data;
    return CP_OK;
}

static cp_status setop_from_body(json_t *body, srv_resp_t *resp, char **out)
{
    const char *op;
    cp_error_t err = {0};
    const char **names = NULL;
    cp_status st = srv_field_str_req(body, "op", resp, &op);
    if (st != CP_OK)
        return st;
    json_t *crowds = json_object_get(body, "crowds");
    if (!json_is_array(crowds)) {
        srv_reply_error(resp, 400, crowds == NULL ? "missing_field" : "wrong_type",
                        json_pack("{s:s}", "field", "crowds"),
                        "request body: field \"crowds\" must be an array of crowd names");
        return CP_EINVAL;
    }
    size_t n = json_array_size(crowds);
    names = calloc(n + 1, sizeof *names);
    if (names == NULL) {
        srv_reply_cp(resp, CP_ENOMEM, NULL, 0);
        return CP_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        names[i] = json_string_value(json_array_get(crowds, i)); /* NULL if not a string */
    st = srv_setop_expr(op, names, n, out, &err);
    free(names);
    if (st != CP_OK)
        srv_reply_cp(resp, st, &err, 0);
    return st;
}

/* The schedule fields a create body may carry, as the settings object of
 * cp_crowd_create_spec (stored in the crowd's first commit). *out NULL
 * when there are none; else free(). */
static cp_status crowd_create_settings(json_t *body, char **out, cp_error_t *err)
{
    static const char *const keys[] = {"refresh", "timezone", "expire_after_days"};
    json_t *set = json_object();
    int any = 0, bad = set == NULL;
    *out = NULL;
    for (size_t i = 0; !bad && i < 3; i++) {
        json_t *v = json_object_get(body, keys[i]);
        if (v != NULL) {
            bad |= json_object_set(set, keys[i], v);
            any = 1;
        }
    }
    if (!bad && any)
        bad = (*out = json_dumps(set, JSON_COMPACT)) == NULL;
    json_decref(set);
    return bad ? CP_ERR(err, CP_ENOMEM, "out of memory") : CP_OK;
}

void srv_h_crowds_create(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    const char *name, *kind_s, *desc, *text = NULL;
    char *tree = NULL, *setop = NULL, *out_text = NULL;
    cp_error_t err = {0};
    cp_crowd_kind kind = CP_CROWD_STATIC;
    cp_status st;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    const char *as_of = NULL;
    if (srv_field_str_req(body, "name", resp, &name) != CP_OK ||
        srv_field_str(body, "kind", resp, &kind_s) != CP_OK ||
        srv_field_str(body, "description", resp, &desc) != CP_OK ||
        srv_field_str(body, "as_of", resp, &as_of) != CP_OK)
        goto out;
    if (kind_s != NULL) {
        if (strcmp(kind_s, "static") == 0) {
            kind = CP_CROWD_STATIC;
        } else if (strcmp(kind_s, "dynamic") == 0) {
            kind = CP_CROWD_DYNAMIC;
        } else {
            srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "field", "kind"),
                            "request body: field \"kind\": expected \"static\" or \"dynamic\", "
                            "got \"%s\"",
                            kind_s);
            goto out;
        }
    }
    if (json_object_get(body, "op") != NULL) {
        if (json_object_get(body, "expression") != NULL || json_object_get(body, "tree") != NULL) {
            srv_reply_error(resp, 400, "invalid", NULL,
                            "request body: give either \"op\" with \"crowds\" or an "
                            "expression, not both");
            goto out;
        }
        if (setop_from_body(body, resp, &setop) != CP_OK)
            goto out;
        text = setop;
    } else if (body_expression(body, resp, 1, &text, &tree) != CP_OK) {
        goto out;
    }
    char *settings = NULL;
    st = crowd_create_settings(body, &settings, &err);
    if (st == CP_OK) {
        cp_crowd_spec_t spec = {.size = sizeof spec,
                                .name = name,
                                .expression = text,
                                .tree = tree,
                                .tree_len = tree ? strlen(tree) : 0,
                                .kind = kind,
                                .description = desc,
                                .as_of = as_of,
                                .settings = settings,
                                .settings_len = settings ? strlen(settings) : 0};
        st = cp_crowd_create_spec(srv->db, &spec, &err);
        if (st != CP_OK && tree != NULL && strncmp(err.message, "crowd settings", 14) != 0)
            error_prefix(&err, "request body: field \"tree\": ");
        else if (st != CP_OK && strncmp(err.message, "crowd settings", 14) == 0)
            error_prefix(&err, "request body: ");
    }
    free(settings);
    if (st == CP_OK)
        st = cp_crowd_json(srv->db, name, &out_text, &err);
    reply_lib(resp, 201, st, out_text, &err, SRV_ERR_BODY_REFS);
out:
    free(setop);
    free(tree);
    json_decref(body);
}

void srv_h_crowds_list(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(req);
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_crowds_json(srv->db, &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
}

void srv_h_crowd_get(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_crowd_json(srv->db, req->params[0], &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
}

void srv_h_crowd_update(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    const char *text;
    char *tree = NULL, *from_tree = NULL, *out_text = NULL;
    cp_error_t err = {0};
    cp_status st;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    if (body_expression(body, resp, 1, &text, &tree) != CP_OK)
        goto out;
    if (text == NULL) {
        st = cp_expr_from_json(tree, strlen(tree), &from_tree, &err);
        if (st != CP_OK) {
            error_prefix(&err, "request body: field \"tree\": ");
            srv_reply_cp(resp, st, &err, SRV_ERR_BODY_REFS);
            goto out;
        }
        text = from_tree;
    }
    /* The crowd in the URL must exist: say 404 for it, and keep 400 for
     * unknown names inside the expression. */
    st = cp_crowd_json(srv->db, req->params[0], &out_text, &err);
    cp_free(out_text);
    out_text = NULL;
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        goto out;
    }
    st = cp_crowd_update(srv->db, req->params[0], text, &err);
    if (st == CP_OK)
        st = cp_crowd_json(srv->db, req->params[0], &out_text, &err);
    reply_lib(resp, 200, st, out_text, &err, SRV_ERR_BODY_REFS);
out:
    cp_free(from_tree);
    free(tree);
    json_decref(body);
}

/* GET /v1/crowds/{name}/history: the crowd's size at each refresh. */
void srv_h_crowd_history(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_crowd_history_json(srv->db, req->params[0], &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
}

/* PUT /v1/crowds/{name}/schedule: {"refresh","timezone","expire_after_days",
 * "frozen"} (cp_crowd_settings_json); answers the crowd. */
void srv_h_crowd_schedule(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    cp_error_t err = {0};
    char *text = NULL, *s = NULL;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    s = json_dumps(body, JSON_COMPACT);
    cp_status st = s ? cp_crowd_settings_json(srv->db, req->params[0], s, strlen(s), &err)
                     : CP_ERR(&err, CP_ENOMEM, "out of memory");
    if (st == CP_OK)
        st = cp_crowd_json(srv->db, req->params[0], &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
    free(s);
    json_decref(body);
}

void srv_h_crowd_refresh(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    char *text = NULL;
    cp_status st = cp_crowd_refresh(srv->db, req->params[0], &err);
    if (st == CP_OK)
        st = cp_crowd_json(srv->db, req->params[0], &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
}

void srv_h_crowd_delete(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    cp_error_t err = {0};
    cp_status st = cp_crowd_delete(srv->db, req->params[0], &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    srv_reply_json(resp, 200, json_pack("{s:s}", "deleted", req->params[0]));
}

/* Parses an optional unsigned query argument; replies and returns -1 on a
 * bad one. */
static int query_u64(srv_req_t *req, srv_resp_t *resp, const char *key, uint64_t def, uint64_t max,
                     uint64_t *out)
{
    const char *v = NULL;
    cp_error_t err = {0};
    cp_status st = srv_query(req, key, &v, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return -1;
    }
    *out = def;
    if (v == NULL)
        return 0;
    uint64_t x = 0;
    int ok = v[0] != '\0';
    for (const char *p = v; ok && *p; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        /* x * 10 + d <= UINT64_MAX, so the maximum itself parses. */
        if (*p < '0' || *p > '9' || x > (UINT64_MAX - d) / 10)
            ok = 0;
        else
            x = x * 10 + d;
    }
    if (!ok || x > max) {
        srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "parameter", key),
                        "query argument \"%s\": expected an integer from 0 to %" PRIu64
                        ", got \"%s\"",
                        key, max, v);
        return -1;
    }
    *out = x;
    return 0;
}

void srv_h_crowd_sample(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    uint64_t n, seed;
    cp_error_t err = {0};
    char *text = NULL;
    if (query_u64(req, resp, "n", 100, SRV_MAX_SAMPLE, &n) < 0 ||
        query_u64(req, resp, "seed", 1, UINT64_MAX, &seed) < 0)
        return;
    cp_status st = cp_crowd_sample_json(srv->db, req->params[0], n, seed, &text, &err);
    reply_lib(resp, 200, st, text, &err, 0);
}

/* The format of an id stream: ndjson (the default), csv, or with text_ok
 * text; 0 for anything else. */
static int id_format(const char *format, int text_ok)
{
    if (format == NULL || strcmp(format, "ndjson") == 0)
        return CP_EXPORT_NDJSON;
    if (strcmp(format, "csv") == 0)
        return CP_EXPORT_CSV;
    if (text_ok && strcmp(format, "text") == 0)
        return SRV_FORMAT_TEXT;
    return 0;
}

void srv_h_crowd_export(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    const char *format = NULL;
    cp_error_t err = {0};
    cp_export_format fmt = CP_EXPORT_NDJSON;
    cp_status st = srv_query(req, "format", &format, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    if ((fmt = (cp_export_format)id_format(format, 0)) == 0) {
        srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "parameter", "format"),
                        "query argument \"format\": expected ndjson or csv, got \"%s\"", format);
        return;
    }
    srv_stream_t *stream = NULL;
    st = srv_export_open(srv->db, req->params[0], fmt, &stream, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        return;
    }
    resp->status = 200;
    resp->stream = stream;
    resp->content_type = fmt == CP_EXPORT_CSV ? "text/csv; charset=utf-8" : "application/x-ndjson";
    size_t cap = strlen(req->params[0]) + 64;
    char *disp = arena_alloc(&req->arena, cap);
    if (disp != NULL) {
        snprintf(disp, cap, "attachment; filename=\"%s.%s\"", req->params[0],
                 fmt == CP_EXPORT_CSV ? "csv" : "ndjson");
        resp->disposition = disp;
    }
}

/* POST /v1/eval: the ids of the users an expression matches, streamed from
 * one snapshot: {"expression" | "tree", "as_of", "limit", "format"} with
 * format ndjson (default, as crowd exports), csv or text (one raw id per
 * line, as `crowdpack eval` prints). */
void srv_h_eval(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    json_t *body = NULL;
    const char *text, *as_of = NULL, *format = NULL;
    char *tree = NULL;
    cp_error_t err = {0};
    cp_result_t *r = NULL;
    uint64_t limit = UINT64_MAX;
    int fmt = CP_EXPORT_NDJSON;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    if (body_expression(body, resp, 1, &text, &tree) != CP_OK ||
        srv_field_str(body, "as_of", resp, &as_of) != CP_OK ||
        srv_field_str(body, "format", resp, &format) != CP_OK)
        goto out;
    json_t *lim = json_object_get(body, "limit");
    if (lim != NULL && !json_is_null(lim)) {
        if (!json_is_integer(lim) || json_integer_value(lim) < 0) {
            srv_reply_error(resp, 400, "wrong_type", json_pack("{s:s}", "field", "limit"),
                            "request body: field \"limit\" must be a non-negative integer");
            goto out;
        }
        limit = (uint64_t)json_integer_value(lim);
    }
    if ((fmt = id_format(format, 1)) == 0) {
        srv_reply_error(resp, 400, "invalid", json_pack("{s:s}", "field", "format"),
                        "request body: field \"format\": expected ndjson, csv or text, got "
                        "\"%s\"",
                        format);
        goto out;
    }
    cp_status st = text != NULL ? cp_eval_as_of(srv->db, text, as_of, &r, &err)
                                : cp_eval_json_as_of(srv->db, tree, strlen(tree), as_of, &r, &err);
    if (st != CP_OK) {
        if (tree != NULL)
            error_prefix(&err, "request body: field \"tree\": ");
        srv_reply_cp(resp, st, &err, SRV_ERR_BODY_REFS);
        goto out;
    }
    srv_stream_t *stream = NULL;
    st = srv_result_stream_open(srv->db, r, fmt, limit, &stream, &err);
    if (st != CP_OK) {
        srv_reply_cp(resp, st, &err, 0);
        goto out;
    }
    resp->status = 200;
    resp->stream = stream;
    resp->content_type = fmt == CP_EXPORT_CSV      ? "text/csv; charset=utf-8"
                         : fmt == CP_EXPORT_NDJSON ? "application/x-ndjson"
                                                   : "text/plain; charset=utf-8";
out:
    free(tree);
    json_decref(body);
}

void srv_h_expr_parse(srv_ctx_t *srv, srv_req_t *req, srv_resp_t *resp)
{
    CP_UNUSED(srv);
    json_t *body = NULL;
    const char *text;
    char *tree = NULL, *lib_tree = NULL, *canon = NULL;
    cp_error_t err = {0};
    cp_status st;
    if (srv_body_object(req, resp, &body) != CP_OK)
        return;
    if (body_expression(body, resp, 1, &text, &tree) != CP_OK)
        goto out;
    if (text != NULL) {
        st = cp_expr_to_json(text, &lib_tree, &err);
        if (st == CP_OK)
            st = cp_expr_from_json(lib_tree, strlen(lib_tree), &canon, &err);
        if (st != CP_OK) {
            srv_reply_cp(resp, st, &err, SRV_ERR_BODY_REFS);
            goto out;
        }
        json_error_t jerr;
        json_t *t = json_loads(lib_tree, 0, &jerr);
        if (t == NULL) {
            srv_reply_error(resp, 500, "internal", NULL,
                            "the expression library returned a tree that is not JSON: %s",
                            jerr.text);
            goto out;
        }
        srv_reply_json(resp, 200, json_pack("{s:o,s:s}", "tree", t, "expression", canon));
    } else {
        st = cp_expr_from_json(tree, strlen(tree), &canon, &err);
        if (st != CP_OK) {
            error_prefix(&err, "request body: field \"tree\": ");
            srv_reply_cp(resp, st, &err, SRV_ERR_BODY_REFS);
            goto out;
        }
        srv_reply_json(resp, 200, json_pack("{s:s}", "expression", canon));
    }
out:
    cp_free(canon);
    cp_free(lib_tree);
    free(tree);
    json_decref(body);
}
