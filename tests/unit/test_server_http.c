/*
 * test_server_http.c — the server's pure parts, no sockets, no database:
 * routing and percent-decoding, Authorization parsing, the JSON depth
 * pre-scan, content types, listen addresses, status mapping and error
 * bodies, set-operation expressions, CSV/JSON quoting, metrics text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/srv.h"

/* ------------------------------------------------------------ helpers */

static int route_index(const char *pattern, srv_method m)
{
    for (size_t i = 0; i < srv_nroutes; i++) {
        if (srv_routes[i].method == m && strcmp(srv_routes[i].pattern, pattern) == 0)
            return (int)i;
    }
    return -1;
}

typedef struct match {
    int idx;
    int status;
    const char *allow;
    int nparams;
    char params[SRV_MAX_PARAMS][256];
} match_t;

static match_t do_match(srv_method m, const char *path)
{
    match_t r;
    memset(&r, 0, sizeof r);
    srv_req_t req;
    srv_req_init(&req);
    req.method = m;
    req.path = path;
    r.idx = srv_route_match(&req, &r.status, &r.allow);
    r.nparams = req.nparams;
    for (int i = 0; i < req.nparams; i++)
        snprintf(r.params[i], sizeof r.params[i], "%s", req.params[i]);
    srv_req_free(&req);
    return r;
}

/* ---------------------------------------------------------- percent */

static void test_pct_decode(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    const char *out;
    cp_error_t err = {0};
    static const struct {
        const char *in, *want; /* want NULL = error */
    } cases[] = {
        {"plain", "plain"},
        {"a%2Fb", "a/b"},
        {"a%2fb", "a/b"},
        {"%20x%20", " x "},
        {"%C3%A9t%C3%A9", "\xC3\xA9t\xC3\xA9"},
        {"100%25", "100%"},
        {"", ""},
        {"%", NULL},
        {"%2", NULL},
        {"%zz", NULL},
        {"%g0", NULL},
        {"%00", NULL},
        {"%FF", NULL},       /* not UTF-8 */
        {"%C0%AF", NULL},    /* overlong '/' */
        {"%ED%A0%80", NULL}, /* surrogate */
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        cp_status st = srv_pct_decode(&a, cases[i].in, strlen(cases[i].in), &out, &err);
        if (cases[i].want == NULL) {
            assert_int_equal(st, CP_EINVAL);
            assert_true(strlen(err.message) > 0);
        } else {
            assert_int_equal(st, CP_OK);
            assert_string_equal(out, cases[i].want);
        }
    }
    arena_free(&a);
}

/* ----------------------------------------------------------- routing */

static void test_route_table(void **state)
{
    (void)state;
    static const struct {
        srv_method m;
        const char *path;
        const char *pattern; /* NULL: expect failure */
        int status;
        const char *p0, *p1;
    } cases[] = {
        {SRV_GET, "/healthz", "/healthz", 0, NULL, NULL},
        {SRV_GET, "/metrics", "/metrics", 0, NULL, NULL},
        {SRV_GET, "/v1/tags", "/v1/tags", 0, NULL, NULL},
        {SRV_GET, "/v1/tags/", "/v1/tags", 0, NULL, NULL},
        {SRV_POST, "/v1/tags", "/v1/tags", 0, NULL, NULL},
        {SRV_GET, "/v1/tags/interest", "/v1/tags/{path...}", 0, "interest", NULL},
        {SRV_GET, "/v1/tags/interest/finance/consulting", "/v1/tags/{path...}", 0,
         "interest/finance/consulting", NULL},
        {SRV_PATCH, "/v1/tags/a/b", "/v1/tags/{path...}", 0, "a/b", NULL},
        {SRV_DELETE, "/v1/tags/a/b/", "/v1/tags/{path...}", 0, "a/b", NULL},
        {SRV_POST, "/v1/taxonomy", "/v1/taxonomy", 0, NULL, NULL},
        {SRV_GET, "/v1/attributes", "/v1/attributes", 0, NULL, NULL},
        {SRV_POST, "/v1/users", "/v1/users", 0, NULL, NULL},
        {SRV_GET, "/v1/users/u1", "/v1/users/{id}", 0, "u1", NULL},
        {SRV_GET, "/v1/users/a%2Fb%20c", "/v1/users/{id}", 0, "a/b c", NULL},
        {SRV_DELETE, "/v1/users/u1", "/v1/users/{id}", 0, "u1", NULL},
        {SRV_POST, "/v1/users/u%3F1/tags/remove", "/v1/users/{id}/tags/remove", 0, "u?1", NULL},
        {SRV_DELETE, "/v1/users/u1/tags/a/b", "/v1/users/{id}/tags/{path...}", 0, "u1", "a/b"},
        {SRV_DELETE, "/v1/users/u1/tags/remove", "/v1/users/{id}/tags/{path...}", 0, "u1",
         "remove"},
        {SRV_POST, "/v1/crowds/estimate", "/v1/crowds/estimate", 0, NULL, NULL},
        {SRV_GET, "/v1/crowds/estimate", "/v1/crowds/{name}", 0, "estimate", NULL},
        {SRV_GET, "/v1/crowds", "/v1/crowds", 0, NULL, NULL},
        {SRV_POST, "/v1/crowds", "/v1/crowds", 0, NULL, NULL},
        {SRV_PUT, "/v1/crowds/vip", "/v1/crowds/{name}", 0, "vip", NULL},
        {SRV_PATCH, "/v1/crowds/vip", "/v1/crowds/{name}", 0, "vip", NULL},
        {SRV_POST, "/v1/crowds/vip/refresh", "/v1/crowds/{name}/refresh", 0, "vip", NULL},
        {SRV_GET, "/v1/crowds/vip/sample", "/v1/crowds/{name}/sample", 0, "vip", NULL},
        {SRV_GET, "/v1/crowds/vip/export", "/v1/crowds/{name}/export", 0, "vip", NULL},
        {SRV_POST, "/v1/expressions/parse", "/v1/expressions/parse", 0, NULL, NULL},
        {SRV_GET, "/v1/keys", "/v1/keys", 0, NULL, NULL},
        {SRV_DELETE, "/v1/keys/k1", "/v1/keys/{id}", 0, "k1", NULL},
        /* failures */
        {SRV_GET, "/", NULL, 404, NULL, NULL},
        {SRV_GET, "/v1", NULL, 404, NULL, NULL},
        {SRV_GET, "/v1/nothing", NULL, 404, NULL, NULL},
        {SRV_GET, "/v1/tagsx", NULL, 404, NULL, NULL},
        {SRV_GET, "/v1/users/a/b/c/d", NULL, 404, NULL, NULL},
        {SRV_GET, "/v1/crowds/a/b/c", NULL, 404, NULL, NULL},
        {SRV_PUT, "/v1/tags", NULL, 405, NULL, NULL},
        {SRV_GET, "/v1/users", NULL, 405, NULL, NULL},
        {SRV_POST, "/v1/users/u1", NULL, 405, NULL, NULL},
        {SRV_OTHER, "/healthz", NULL, 405, NULL, NULL},
        {SRV_POST, "/v1/crowds/vip/sample", NULL, 405, NULL, NULL},
        {SRV_GET, "/v1/users/%zz", NULL, 400, NULL, NULL},
        {SRV_GET, "/v1/users/a%00b", NULL, 400, NULL, NULL},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        match_t r = do_match(cases[i].m, cases[i].path);
        if (cases[i].pattern == NULL) {
            if (r.idx != -1 || r.status != cases[i].status)
                fail_msg("%s %s: got route %d status %d, want status %d",
                         srv_method_name(cases[i].m), cases[i].path, r.idx, r.status,
                         cases[i].status);
            if (r.status == 405)
                assert_non_null(r.allow);
            continue;
        }
        int want = route_index(cases[i].pattern, cases[i].m);
        assert_true(want >= 0);
        if (r.idx != want)
            fail_msg("%s %s: got route %d, want %d (%s)", srv_method_name(cases[i].m),
                     cases[i].path, r.idx, want, cases[i].pattern);
        if (cases[i].p0 != NULL)
            assert_string_equal(r.params[0], cases[i].p0);
        if (cases[i].p1 != NULL)
            assert_string_equal(r.params[1], cases[i].p1);
    }
}

static void test_route_allow_header(void **state)
{
    (void)state;
    match_t r = do_match(SRV_PUT, "/v1/tags");
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, HEAD, POST");
    r = do_match(SRV_POST, "/v1/crowds/x");
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, HEAD, PUT, PATCH, DELETE");
    r = do_match(SRV_GET, "/v1/users");
    assert_string_equal(r.allow, "POST");
}

/* Encodes every byte that is not unreserved, as a client would. */
static void pct_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && o + 4 < cap; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
}

/* Property: any user id, percent-encoded, comes back exactly as the {id}
 * parameter of every users route, whatever bytes it holds. */
static void test_route_user_ids_roundtrip(void **state)
{
    (void)state;
    static const char *alphabet[] = {"a",  "Z", "0",  "/",        "%",
                                     "?",  "#", " ",  "+",        "&",
                                     "=",  ".", "..", "\xC3\xA9", "\xE4\xBA\xBA",
                                     "\"", "'", ":"};
    uint64_t rng = 42;
    char id[128], enc[512], path[700];
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = 1 + rand_next(&rng) % 12;
        id[0] = '\0';
        for (size_t i = 0; i < n; i++)
            strcat(id, alphabet[rand_next(&rng) % CP_ARRAY_LEN(alphabet)]);
        pct_encode(id, enc, sizeof enc);
        snprintf(path, sizeof path, "/v1/users/%s", enc);
        match_t r = do_match(SRV_GET, path);
        assert_int_equal(r.idx, route_index("/v1/users/{id}", SRV_GET));
        assert_string_equal(r.params[0], id);
        snprintf(path, sizeof path, "/v1/users/%s/tags/remove", enc);
        r = do_match(SRV_POST, path);
        assert_int_equal(r.idx, route_index("/v1/users/{id}/tags/remove", SRV_POST));
        assert_string_equal(r.params[0], id);
        snprintf(path, sizeof path, "/v1/users/%s/tags/x/y", enc);
        r = do_match(SRV_DELETE, path);
        assert_int_equal(r.idx, route_index("/v1/users/{id}/tags/{path...}", SRV_DELETE));
        assert_string_equal(r.params[0], id);
        assert_string_equal(r.params[1], "x/y");
    }
}

static void test_method_parse(void **state)
{
    (void)state;
    assert_int_equal(srv_method_parse("GET"), SRV_GET);
    assert_int_equal(srv_method_parse("HEAD"), SRV_GET);
    assert_int_equal(srv_method_parse("POST"), SRV_POST);
    assert_int_equal(srv_method_parse("PUT"), SRV_PUT);
    assert_int_equal(srv_method_parse("PATCH"), SRV_PATCH);
    assert_int_equal(srv_method_parse("DELETE"), SRV_DELETE);
    assert_int_equal(srv_method_parse("get"), SRV_OTHER);
    assert_int_equal(srv_method_parse("OPTIONS"), SRV_OTHER);
    assert_int_equal(srv_method_parse(NULL), SRV_OTHER);
}

/* -------------------------------------------------------------- auth */

static void test_auth_header(void **state)
{
    (void)state;
    char key[64];
    assert_int_equal(srv_auth_key("Bearer abc123", key, sizeof key), CP_OK);
    assert_string_equal(key, "abc123");
    assert_int_equal(srv_auth_key("bearer   abc123  ", key, sizeof key), CP_OK);
    assert_string_equal(key, "abc123");
    /* "abc123:" in base64 (Segment: write key as user name, empty password) */
    assert_int_equal(srv_auth_key("Basic YWJjMTIzOg==", key, sizeof key), CP_OK);
    assert_string_equal(key, "abc123");
    /* unpadded */
    assert_int_equal(srv_auth_key("Basic YWJjMTIzOg", key, sizeof key), CP_OK);
    assert_string_equal(key, "abc123");
    /* "abc123:secret" */
    assert_int_equal(srv_auth_key("Basic YWJjMTIzOnNlY3JldA==", key, sizeof key), CP_OK);
    assert_string_equal(key, "abc123");
    /* ":abc123" (password only) */
    assert_int_equal(srv_auth_key("Basic OmFiYzEyMw==", key, sizeof key), CP_OK);
    assert_string_equal(key, "abc123");
    /* "abc123" without a colon */
    assert_int_equal(srv_auth_key("Basic YWJjMTIz", key, sizeof key), CP_OK);
    assert_string_equal(key, "abc123");

    assert_int_equal(srv_auth_key(NULL, key, sizeof key), CP_EAUTH);
    assert_int_equal(srv_auth_key("", key, sizeof key), CP_EAUTH);
    assert_int_equal(srv_auth_key("Bearer", key, sizeof key), CP_EAUTH);
    assert_int_equal(srv_auth_key("Bearer    ", key, sizeof key), CP_EAUTH);
    assert_int_equal(srv_auth_key("Token abc", key, sizeof key), CP_EAUTH);
    assert_int_equal(srv_auth_key("Basic !!!!", key, sizeof key), CP_EAUTH);
    assert_int_equal(srv_auth_key("Basic Og==", key, sizeof key), CP_EAUTH); /* ":" */
    /* too long for the buffer */
    char big[200];
    memset(big, 'k', sizeof big);
    memcpy(big, "Bearer ", 7);
    big[sizeof big - 1] = '\0';
    assert_int_equal(srv_auth_key(big, key, sizeof key), CP_EAUTH);
}

static void test_base64(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""},
             {"Zg==", "f"},
             {"Zm8=", "fo"},
             {"Zm9v", "foo"},
             {"Zm9vYg==", "foob"},
             {"Zm9vYmE=", "fooba"},
             {"Zm9vYmFy", "foobar"},
             {"Zm9vYg", "foob"}};
    unsigned char out[64];
    for (size_t i = 0; i < CP_ARRAY_LEN(v); i++) {
        ssize_t n = srv_base64_decode(v[i].in, strlen(v[i].in), out, sizeof out);
        assert_int_equal(n, (ssize_t)strlen(v[i].out));
        assert_memory_equal(out, v[i].out, (size_t)n);
    }
    assert_int_equal(srv_base64_decode("Z", 1, out, sizeof out), -1);
    assert_int_equal(srv_base64_decode("Zm9v*", 5, out, sizeof out), -1);
    assert_int_equal(srv_base64_decode("Zm9vYmFy", 8, out, 3), -1);
}

/* ------------------------------------------------------ JSON depth */

static char *nested(int depth, char open, char close, const char *sep)
{
    size_t n = (size_t)depth * (2 + strlen(sep)) + 8;
    char *s = malloc(n);
    size_t o = 0;
    for (int i = 0; i < depth; i++) {
        s[o++] = open;
        o += (size_t)sprintf(s + o, "%s", sep);
    }
    for (int i = 0; i < depth; i++)
        s[o++] = close;
    s[o] = '\0';
    return s;
}

static void test_json_depth(void **state)
{
    (void)state;
    size_t off = 0;
    char *s = nested(64, '[', ']', "");
    assert_int_equal(srv_json_too_deep(s, strlen(s), 64, 0, &off), 0);
    free(s);
    s = nested(65, '[', ']', "");
    assert_int_equal(srv_json_too_deep(s, strlen(s), 64, 0, &off), 1);
    assert_int_equal(off, 64);
    free(s);
    /* Pretty-printed JSON: newlines must not reset the count. */
    s = nested(65, '[', ']', "\n  ");
    assert_int_equal(srv_json_too_deep(s, strlen(s), 64, 0, &off), 1);
    free(s);
    /* Brackets inside strings, escaped quotes and backslashes do not count. */
    const char *str = "{\"a\":\"[[[[[[[[[[\\\"[[[[[[[[\\\\\",\"b\":[1,2]}";
    assert_int_equal(srv_json_too_deep(str, strlen(str), 2, 0, &off), 0);
    assert_int_equal(srv_json_too_deep(str, strlen(str), 1, 0, &off), 1);
    /* NDJSON: each line starts afresh. */
    const char *nd = "[[[\n[[[\n[[[\n";
    assert_int_equal(srv_json_too_deep(nd, strlen(nd), 3, 1, &off), 0);
    assert_int_equal(srv_json_too_deep(nd, strlen(nd), 3, 0, &off), 1);
    assert_int_equal(off, 4);
    /* Mixed objects and arrays. */
    s = nested(40, '{', '}', "\"k\":");
    assert_int_equal(srv_json_too_deep(s, strlen(s), 64, 0, &off), 0);
    free(s);
}

/* Property against a naive reference: random bracket soup. */
static void test_json_depth_random(void **state)
{
    (void)state;
    static const char alpha[] = "[]{}\"\\a\n";
    uint64_t rng = 7;
    char s[64];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = rand_next(&rng) % sizeof s;
        for (size_t i = 0; i < n; i++)
            s[i] = alpha[rand_next(&rng) % (sizeof alpha - 1)];
        int per_line = (int)(rand_next(&rng) & 1);
        int max = (int)(rand_next(&rng) % 5);
        /* Reference: explicit tokenizer into a list of structural chars. */
        int depth = 0, in_str = 0, want = 0;
        size_t want_off = 0;
        for (size_t i = 0; i < n && !want; i++) {
            if (per_line && s[i] == '\n') {
                depth = 0;
                in_str = 0;
            } else if (in_str && s[i] == '\\') {
                i++;
            } else if (in_str) {
                in_str = s[i] != '"';
            } else if (s[i] == '"') {
                in_str = 1;
            } else if (s[i] == '[' || s[i] == '{') {
                if (++depth > max) {
                    want = 1;
                    want_off = i;
                }
            } else if ((s[i] == ']' || s[i] == '}') && depth > 0) {
                depth--;
            }
        }
        size_t off = 0;
        assert_int_equal(srv_json_too_deep(s, n, max, per_line, &off), want);
        if (want)
            assert_int_equal(off, want_off);
    }
}

static void test_text_position(void **state)
{
    (void)state;
    int l, c;
    const char *s = "ab\ncd\n\xC3\xA9x";
    srv_text_position(s, 0, &l, &c);
    assert_int_equal(l, 1);
    assert_int_equal(c, 1);
    srv_text_position(s, 4, &l, &c);
    assert_int_equal(l, 2);
    assert_int_equal(c, 2);
    srv_text_position(s, 8, &l, &c); /* after é: the 'x' */
    assert_int_equal(l, 3);
    assert_int_equal(c, 2);
}

static void test_content_types(void **state)
{
    (void)state;
    assert_false(srv_ctype_is_json(NULL)); /* CSRF: browsers send untyped bodies freely */
    assert_false(srv_ctype_is_json(""));
    assert_true(srv_ctype_is_json("application/json"));
    assert_true(srv_ctype_is_json("Application/JSON; charset=utf-8"));
    assert_true(srv_ctype_is_json("application/vnd.api+json"));
    assert_false(srv_ctype_is_json("text/plain"));
    assert_false(srv_ctype_is_json("application/x-www-form-urlencoded"));
    assert_false(srv_ctype_is_json("application/jsonx"));
    assert_false(srv_ctype_is_json("application/x-ndjson"));
    assert_true(srv_ctype_is_ndjson("application/x-ndjson"));
    assert_true(srv_ctype_is_ndjson(" application/x-ndjson ; charset=utf-8"));
    assert_true(srv_ctype_is_ndjson("application/jsonl"));
    assert_false(srv_ctype_is_ndjson(NULL));
    assert_false(srv_ctype_is_ndjson("application/json"));
}

static void test_body_object(void **state)
{
    (void)state;
    static const struct {
        const char *ctype, *body;
        int status;
        const char *code;
    } cases[] = {
        {"application/json", "{\"a\":1}", 0, NULL},
        {NULL, "{\"a\":1}", 415, "unsupported_media_type"},
        {"application/json", " {\"a\":[1,{\"b\":2}]} ", 0, NULL},
        {"text/plain", "{}", 415, "unsupported_media_type"},
        {"application/json", "", 400, "empty_body"},
        {NULL, "  \n", 400, "empty_body"},
        {"application/json", "[1,2]", 400, "invalid"},
        {"application/json", "{\"a\":}", 400, "malformed_json"},
        {"application/json", "{\"a\":1,\"a\":2}", 400, "malformed_json"},
        {"text/json", "{\"a\":\"\xff\"}", 400, "malformed_json"},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        srv_req_t req;
        srv_resp_t resp;
        srv_req_init(&req);
        srv_resp_init(&resp);
        req.content_type = cases[i].ctype;
        req.body = cases[i].body;
        req.body_len = strlen(cases[i].body);
        json_t *j = NULL;
        cp_status st = srv_body_object(&req, &resp, &j);
        if (cases[i].status == 0) {
            assert_int_equal(st, CP_OK);
            assert_non_null(j);
        } else {
            assert_int_not_equal(st, CP_OK);
            assert_null(j);
            assert_int_equal(resp.status, cases[i].status);
            json_t *e = json_loadb(resp.body, resp.len, 0, NULL);
            assert_non_null(e);
            assert_string_equal(
                json_string_value(json_object_get(json_object_get(e, "error"), "code")),
                cases[i].code);
            json_decref(e);
        }
        json_decref(j);
        srv_resp_free(&resp);
        srv_req_free(&req);
    }
    /* Syntax errors carry line and column. */
    srv_req_t req;
    srv_resp_t resp;
    srv_req_init(&req);
    srv_resp_init(&resp);
    req.content_type = "application/json";
    req.body = "{\n  \"a\": tru\n}";
    req.body_len = strlen(req.body);
    json_t *j = NULL;
    srv_body_object(&req, &resp, &j);
    json_t *e = json_loadb(resp.body, resp.len, 0, NULL);
    json_t *inner = json_object_get(e, "error");
    assert_int_equal(json_integer_value(json_object_get(inner, "line")), 2);
    assert_true(json_integer_value(json_object_get(inner, "column")) > 0);
    assert_non_null(strstr(json_string_value(json_object_get(inner, "message")), "line 2"));
    json_decref(e);
    srv_resp_free(&resp);
    srv_req_free(&req);
}

static void test_fields(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s,s:i,s:n}", "s", "x", "i", 3, "nul", NULL);
    srv_resp_t resp;
    srv_resp_init(&resp);
    const char *v;
    assert_int_equal(srv_field_str(o, "s", &resp, &v), CP_OK);
    assert_string_equal(v, "x");
    assert_int_equal(srv_field_str(o, "absent", &resp, &v), CP_OK);
    assert_null(v);
    assert_int_equal(srv_field_str(o, "nul", &resp, &v), CP_OK);
    assert_null(v);
    assert_int_equal(srv_field_str_req(o, "absent", &resp, &v), CP_EINVAL);
    assert_int_equal(resp.status, 400);
    assert_non_null(strstr(resp.body, "\\\"absent\\\" is required"));
    assert_int_equal(srv_field_str(o, "i", &resp, &v), CP_EINVAL);
    assert_int_equal(resp.status, 400);
    assert_non_null(strstr(resp.body, "wrong_type"));
    assert_non_null(strstr(resp.body, "an integer"));
    srv_resp_free(&resp);
    json_decref(o);
}

/* ------------------------------------------------------------- listen */

static void test_listen_parse(void **state)
{
    (void)state;
    srv_addr_t a;
    cp_error_t err = {0};
    assert_int_equal(srv_listen_parse("127.0.0.1:8080", &a, &err), CP_OK);
    assert_int_equal(a.family, AF_INET);
    assert_int_equal(a.port, 8080);
    assert_string_equal(a.host, "127.0.0.1");
    assert_true(srv_sockaddr_is_loopback((struct sockaddr *)&a.ss));
    assert_int_equal(srv_listen_parse("[::1]:0", &a, &err), CP_OK);
    assert_int_equal(a.family, AF_INET6);
    assert_int_equal(a.port, 0);
    assert_string_equal(a.host, "::1");
    assert_true(srv_sockaddr_is_loopback((struct sockaddr *)&a.ss));
    assert_int_equal(srv_listen_parse("0.0.0.0:65535", &a, &err), CP_OK);
    assert_int_equal(a.port, 65535);
    assert_false(srv_sockaddr_is_loopback((struct sockaddr *)&a.ss));
    assert_int_equal(srv_listen_parse("[::]:80", &a, &err), CP_OK);
    assert_false(srv_sockaddr_is_loopback((struct sockaddr *)&a.ss));
    assert_int_equal(srv_listen_parse("127.1.2.3:1", &a, &err), CP_OK);
    assert_true(srv_sockaddr_is_loopback((struct sockaddr *)&a.ss));
    assert_int_equal(srv_listen_parse("[::ffff:127.0.0.1]:1", &a, &err), CP_OK);
    assert_true(srv_sockaddr_is_loopback((struct sockaddr *)&a.ss));
    assert_int_equal(srv_listen_parse("10.0.0.1:1", &a, &err), CP_OK);
    assert_false(srv_sockaddr_is_loopback((struct sockaddr *)&a.ss));
    assert_int_equal(srv_listen_parse(NULL, &a, &err), CP_OK);
    assert_int_equal(a.port, 8080);

    static const char *bad[] = {"nohost", ":80",     "1.2.3.4:", "1.2.3.4:99999", "1.2.3.4:8a",
                                "::1:80", "[::1]80", "[::1",     "[zz]:1",        "[]:1"};
    for (size_t i = 0; i < CP_ARRAY_LEN(bad); i++) {
        memset(&err, 0, sizeof err);
        if (srv_listen_parse(bad[i], &a, &err) != CP_EINVAL)
            fail_msg("listen \"%s\" should be rejected", bad[i]);
        assert_non_null(strstr(err.message, bad[i]));
    }
    assert_false(srv_sockaddr_is_loopback(NULL));
}

static void test_host_loopback(void **state)
{
    (void)state;
    static const char *yes[] = {"localhost",       "LOCALHOST:8080", "localhost.",
                                "app.localhost:1", "127.0.0.1",      "127.0.0.1:8080",
                                "127.9.9.9:80",    "[::1]",          "[::1]:8080"};
    static const char *no[] = {NULL,
                               "",
                               "example.com",
                               "localhost.example.com",
                               "127.0.0.1.nip.io",
                               "10.0.0.1:80",
                               "[::2]:80",
                               "::1",
                               "[::1",
                               "[::1]x",
                               "0.0.0.0",
                               "evil-localhost"};
    for (size_t i = 0; i < CP_ARRAY_LEN(yes); i++)
        if (!srv_host_is_loopback(yes[i]))
            fail_msg("%s should be loopback", yes[i]);
    for (size_t i = 0; i < CP_ARRAY_LEN(no); i++)
        if (srv_host_is_loopback(no[i]))
            fail_msg("%s should not be loopback", no[i] ? no[i] : "(null)");
}

/* ------------------------------------------------------------ errors */

static void test_status_mapping(void **state)
{
    (void)state;
    static const int allowed[] = {200, 400, 401, 403, 404, 409, 413, 500, 503};
    for (int s = CP_OK; s <= CP_EINTERNAL; s++) {
        int h = srv_status_http((cp_status)s, 0);
        int ok = 0;
        for (size_t i = 0; i < CP_ARRAY_LEN(allowed); i++)
            ok |= allowed[i] == h;
        assert_true(ok);
        const char *slug = srv_status_slug((cp_status)s, 0);
        assert_non_null(slug);
        for (const char *p = slug; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
    }
    assert_int_equal(srv_status_http(CP_EINVAL, 0), 400);
    assert_int_equal(srv_status_http(CP_ESYNTAX, 0), 400);
    assert_int_equal(srv_status_http(CP_ETYPE, 0), 400);
    assert_int_equal(srv_status_http(CP_ENOTFOUND, 0), 404);
    assert_int_equal(srv_status_http(CP_ENOTFOUND, SRV_ERR_BODY_REFS), 400);
    assert_string_equal(srv_status_slug(CP_ENOTFOUND, SRV_ERR_BODY_REFS), "unknown_reference");
    assert_int_equal(srv_status_http(CP_EEXIST, 0), 409);
    assert_int_equal(srv_status_http(CP_ECYCLE, 0), 409);
    assert_int_equal(srv_status_http(CP_ECONFLICT, 0), 409);
    assert_int_equal(srv_status_http(CP_ELIMIT, 0), 413);
    assert_int_equal(srv_status_http(CP_EAUTH, 0), 401);
    assert_int_equal(srv_status_http(CP_EPERM, 0), 403);
    assert_int_equal(srv_status_http(CP_ELOCKED, 0), 503);
    assert_int_equal(srv_status_http(CP_EIO, 0), 503);
    assert_int_equal(srv_status_http(CP_ENOMEM, 0), 500);
    assert_int_equal(srv_status_http(CP_EINTERNAL, 0), 500);
}

static void test_error_body(void **state)
{
    (void)state;
    srv_resp_t r;
    srv_resp_init(&r);
    cp_error_t err = {0};
    CP_ERR_AT(&err, CP_ESYNTAX, 2, 7, "2:7: expected a value after AND");
    err.record = 0;
    srv_reply_cp(&r, CP_ESYNTAX, &err, 0);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.content_type, "application/json");
    json_t *e = json_loadb(r.body, r.len, 0, NULL);
    json_t *in = json_object_get(e, "error");
    assert_string_equal(json_string_value(json_object_get(in, "code")), "syntax_error");
    assert_string_equal(json_string_value(json_object_get(in, "message")),
                        "2:7: expected a value after AND");
    assert_int_equal(json_integer_value(json_object_get(in, "line")), 2);
    assert_int_equal(json_integer_value(json_object_get(in, "column")), 7);
    assert_null(json_object_get(in, "record"));
    json_decref(e);
    /* A position only in the fields is added to the message. */
    CP_ERR_AT(&err, CP_ENOTFOUND, 3, 5, "unknown tag \"zz\"");
    srv_reply_cp(&r, CP_ENOTFOUND, &err, SRV_ERR_BODY_REFS);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"3:5: unknown tag \\\"zz\\\"\""));

    memset(&err, 0, sizeof err);
    CP_ERR(&err, CP_ETYPE, "line 3: attribute \"age\" of user \"u7\": expected int");
    err.record = 3;
    srv_reply_cp_extra(&r, CP_ETYPE, &err, SRV_ERR_BODY_REFS, json_pack("{s:i}", "index", 2));
    e = json_loadb(r.body, r.len, 0, NULL);
    in = json_object_get(e, "error");
    assert_string_equal(json_string_value(json_object_get(in, "code")), "wrong_type");
    assert_int_equal(json_integer_value(json_object_get(in, "record")), 3);
    assert_int_equal(json_integer_value(json_object_get(in, "index")), 2);
    assert_null(json_object_get(in, "line"));
    json_decref(e);

    /* A status without details falls back to cp_strerror. */
    srv_reply_cp(&r, CP_EIO, NULL, 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"storage_error\""));
    /* Invalid UTF-8 in a message still yields valid JSON. */
    srv_reply_error(&r, 400, "invalid", NULL, "bad id \"%s\"", "\xff\xfe");
    e = json_loadb(r.body, r.len, 0, NULL);
    assert_non_null(e);
    json_decref(e);
    srv_reply_error(&r, 401, "unauthorized", NULL, "no key");
    assert_true(r.www_authenticate);
    srv_resp_free(&r);
}

/* --------------------------------------------------------- set ops */

static void test_setop_expr(void **state)
{
    (void)state;
    const char *names[] = {"a", "b_2", "C-3"};
    char *out = NULL;
    cp_error_t err = {0};
    assert_int_equal(srv_setop_expr("union", names, 3, &out, &err), CP_OK);
    assert_string_equal(out, "crowd:a OR crowd:b_2 OR crowd:C-3");
    free(out);
    assert_int_equal(srv_setop_expr("intersect", names, 2, &out, &err), CP_OK);
    assert_string_equal(out, "crowd:a AND crowd:b_2");
    free(out);
    assert_int_equal(srv_setop_expr("difference", names, 3, &out, &err), CP_OK);
    assert_string_equal(out, "crowd:a AND NOT crowd:b_2 AND NOT crowd:C-3");
    free(out);
    assert_int_equal(srv_setop_expr("union", names, 1, &out, &err), CP_OK);
    assert_string_equal(out, "crowd:a");
    free(out);

    assert_int_equal(srv_setop_expr("xor", names, 2, &out, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "xor"));
    assert_int_equal(srv_setop_expr("union", names, 0, &out, &err), CP_EINVAL);
    const char *bad[] = {"a", "x OR all"};
    assert_int_equal(srv_setop_expr("union", bad, 2, &out, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "crowds[1]"));
    const char *nul[] = {"a", NULL};
    assert_int_equal(srv_setop_expr("union", nul, 2, &out, &err), CP_EINVAL);
    assert_null(out);
}

/* ------------------------------------------------------ quoting */

static void test_json_quote_roundtrip(void **state)
{
    (void)state;
    uint64_t rng = 3;
    for (int iter = 0; iter < 3000; iter++) {
        char s[40];
        size_t n = rand_next(&rng) % (sizeof s - 1);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)(1 + rand_next(&rng) % 127); /* ASCII incl. controls */
        s[n] = '\0';
        buf_t b;
        buf_init(&b, 0);
        assert_int_equal(srv_json_quote(&b, s), CP_OK);
        json_t *j = json_loadb(b.data, b.len, JSON_DECODE_ANY, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(j), s);
        json_decref(j);
        buf_free(&b);
    }
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(srv_json_quote(&b, "\xE4\xBA\xBA"), CP_OK); /* UTF-8 kept as is */
    assert_memory_equal(b.data, "\"\xE4\xBA\xBA\"", 5);
    buf_free(&b);
}

/* Naive CSV reader for one field (RFC 4180). */
static size_t csv_read_field(const char *s, char *out)
{
    size_t i = 0, o = 0;
    if (s[0] != '"') {
        while (s[i] && s[i] != ',' && s[i] != '\r' && s[i] != '\n')
            out[o++] = s[i++];
        out[o] = '\0';
        return i;
    }
    i = 1;
    for (;;) {
        if (s[i] == '"' && s[i + 1] == '"') {
            out[o++] = '"';
            i += 2;
        } else if (s[i] == '"') {
            i++;
            break;
        } else {
            out[o++] = s[i++];
        }
    }
    out[o] = '\0';
    return i;
}

static void test_csv_field(void **state)
{
    (void)state;
    static const char alpha[] = "ab,\"\r\n x";
    uint64_t rng = 5;
    for (int iter = 0; iter < 3000; iter++) {
        char s[20], back[64];
        size_t n = rand_next(&rng) % (sizeof s - 1);
        for (size_t i = 0; i < n; i++)
            s[i] = alpha[rand_next(&rng) % (sizeof alpha - 1)];
        s[n] = '\0';
        buf_t b;
        buf_init(&b, 0);
        assert_int_equal(srv_csv_field(&b, s), CP_OK);
        buf_cstr(&b);
        size_t used = csv_read_field(b.data, back);
        assert_int_equal(used, b.len);
        assert_string_equal(back, s);
        buf_free(&b);
    }
}

/* ----------------------------------------------------------- metrics */

static void test_metrics_render(void **state)
{
    (void)state;
    srv_metrics_t m;
    assert_int_equal(srv_metrics_init(&m, srv_nroutes), CP_OK);
    int r = route_index("/v1/tags", SRV_GET);
    srv_metrics_observe(&m, r, 200, 300000);  /* 0.3 ms */
    srv_metrics_observe(&m, r, 200, 2000000); /* 2 ms */
    srv_metrics_observe(&m, r, 404, 5000000000ull);
    srv_metrics_observe(&m, -1, 404, 1000);
    srv_metrics_observe(&m, r, 418, 1000);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(srv_metrics_render(&m, NULL, &text, &len), CP_OK);
    assert_int_equal(strlen(text), len);
    assert_non_null(strstr(text, "crowdpack_http_requests_total{method=\"GET\",route=\"/v1/tags\","
                                 "status=\"200\"} 2\n"));
    assert_non_null(strstr(text, "status=\"404\"} 1\n"));
    assert_non_null(strstr(text, "route=\"unmatched\",status=\"404\"} 1\n"));
    assert_non_null(strstr(text, "route=\"/v1/tags\",status=\"other\"} 1\n"));
    assert_non_null(strstr(text, "crowdpack_http_request_duration_seconds_bucket{method=\"GET\","
                                 "route=\"/v1/tags\",le=\"0.0005\"} 2\n"));
    assert_non_null(strstr(text, "route=\"/v1/tags\",le=\"0.0025\"} 3\n"));
    assert_non_null(strstr(text, "route=\"/v1/tags\",le=\"1\"} 3\n"));
    assert_non_null(strstr(text, "route=\"/v1/tags\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(text, "crowdpack_http_request_duration_seconds_count{method=\"GET\","
                                 "route=\"/v1/tags\"} 4\n"));
    assert_non_null(strstr(text, "crowdpack_http_request_duration_seconds_sum{method=\"GET\","
                                 "route=\"/v1/tags\"} 5.002301\n"));
    /* Every sample line is "name{labels} value" or "name value". */
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        assert_non_null(strchr(line, ' '));
        assert_true(strncmp(line, "crowdpack_", 10) == 0);
    }
    free(text);
    srv_metrics_free(&m);
}

/* --------------------------------------------------------- dispatch */

/* Open endpoints answer without touching the database. */
static void test_dispatch_open(void **state)
{
    (void)state;
    srv_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    assert_int_equal(srv_metrics_init(&ctx.metrics, srv_nroutes), CP_OK);
    static const struct {
        srv_method m;
        const char *path;
        int status;
        const char *needle;
    } cases[] = {
        /* No database handle: health cannot be read, so not healthy. */
        {SRV_GET, "/healthz", 503, "\"reason\":\"failed\""},
        {SRV_GET, "/readyz", 503, "\"status\":\"unavailable\""},
        {SRV_GET, "/metrics", 200, ""},
        {SRV_GET, "/nope", 404, "\"route_not_found\""},
        {SRV_POST, "/healthz", 405, "\"method_not_allowed\""},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        srv_req_t req;
        srv_resp_t resp;
        srv_req_init(&req);
        srv_resp_init(&resp);
        req.method = cases[i].m;
        req.path = cases[i].path;
        srv_dispatch(&ctx, &req, &resp);
        assert_int_equal(resp.status, cases[i].status);
        assert_non_null(strstr(resp.body, cases[i].needle));
        srv_resp_free(&resp);
        srv_req_free(&req);
    }
    /* An overlong URL is refused before anything else. */
    char *url = malloc(SRV_MAX_URL_LEN + 16);
    memset(url, 'a', SRV_MAX_URL_LEN + 15);
    url[0] = '/';
    url[SRV_MAX_URL_LEN + 15] = '\0';
    srv_req_t req;
    srv_resp_t resp;
    srv_req_init(&req);
    srv_resp_init(&resp);
    req.method = SRV_GET;
    req.path = url;
    srv_dispatch(&ctx, &req, &resp);
    assert_int_equal(resp.status, 414);
    srv_resp_free(&resp);
    srv_req_free(&req);
    free(url);
    srv_metrics_free(&ctx.metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_route_allow_header),
        cmocka_unit_test(test_route_user_ids_roundtrip),
        cmocka_unit_test(test_method_parse),
        cmocka_unit_test(test_auth_header),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_json_depth_random),
        cmocka_unit_test(test_text_position),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test(test_body_object),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_listen_parse),
        cmocka_unit_test(test_host_loopback),
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test(test_error_body),
        cmocka_unit_test(test_setop_expr),
        cmocka_unit_test(test_json_quote_roundtrip),
        cmocka_unit_test(test_csv_field),
        cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_dispatch_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
