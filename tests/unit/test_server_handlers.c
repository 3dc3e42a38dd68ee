/*
 * test_server_handlers.c — the handlers over a real data directory, driven
 * through srv_dispatch without sockets: auth modes and roles, the body
 * forms of POST /v1/users, counts against a naive evaluation, the export
 * stream against cp_crowd_export byte for byte (read in tiny pieces), and
 * the error mapping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cp_test.h"

#include "server/srv.h"

typedef struct fixture {
    char dir[256];
    cp_db_t *db;
    srv_ctx_t ctx;
} fixture_t;

/* Query arguments "k=v&k2=v2" (raw, as MHD would hand them over). */
typedef struct qargs {
    char buf[512];
    const char *k[8], *v[8];
    int n;
} qargs_t;

static const char *q_lookup(void *ud, const char *key)
{
    qargs_t *q = ud;
    for (int i = 0; i < q->n; i++) {
        if (strcmp(q->k[i], key) == 0)
            return q->v[i];
    }
    return NULL;
}

static const char *host; /* Host header of the next calls */

typedef struct reply {
    int status;
    json_t *json; /* parsed body when JSON */
    char *text;   /* raw body (or the whole stream) */
    size_t len;
} reply_t;

static void reply_free(reply_t *r)
{
    json_decref(r->json);
    free(r->text);
    memset(r, 0, sizeof *r);
}

/* One request. `path` may carry "?query". `auth` is the Authorization header. */
static reply_t call(fixture_t *f, srv_method m, const char *path, const char *ctype,
                    const char *body, const char *auth, int loopback)
{
    reply_t out;
    memset(&out, 0, sizeof out);
    char p[1024];
    snprintf(p, sizeof p, "%s", path);
    qargs_t q;
    memset(&q, 0, sizeof q);
    char *qs = strchr(p, '?');
    if (qs != NULL) {
        *qs++ = '\0';
        snprintf(q.buf, sizeof q.buf, "%s", qs);
        for (char *tok = strtok(q.buf, "&"); tok && q.n < 8; tok = strtok(NULL, "&")) {
            char *eq = strchr(tok, '=');
            q.k[q.n] = tok;
            q.v[q.n] = eq ? (*eq = '\0', eq + 1) : "";
            q.n++;
        }
    }
    srv_req_t req;
    srv_resp_t resp;
    srv_req_init(&req);
    srv_resp_init(&resp);
    req.method = m;
    req.path = p;
    req.content_type = ctype;
    req.authorization = auth;
    req.host = host;
    req.body = body ? body : "";
    req.body_len = strlen(req.body);
    req.query = q_lookup;
    req.query_ud = &q;
    req.client_loopback = loopback;
    srv_dispatch(&f->ctx, &req, &resp);
    out.status = resp.status;
    if (resp.stream != NULL) {
        buf_t b;
        buf_init(&b, 0);
        char piece[4096];
        ssize_t n;
        while ((n = srv_stream_read(resp.stream, piece, sizeof piece)) > 0)
            assert_int_equal(buf_append(&b, piece, (size_t)n), CP_OK);
        assert_int_equal(n, -1);
        buf_cstr(&b);
        out.text = b.data;
        out.len = b.len;
    } else {
        out.text = malloc(resp.len + 1);
        memcpy(out.text, resp.body, resp.len);
        out.text[resp.len] = '\0';
        out.len = resp.len;
        if (strcmp(resp.content_type, "application/json") == 0) {
            out.json = json_loadb(resp.body, resp.len, 0, NULL);
            assert_non_null(out.json);
        }
    }
    srv_resp_free(&resp);
    srv_req_free(&req);
    return out;
}

#define GET(f, path) call((f), SRV_GET, (path), NULL, NULL, NULL, 1)
#define POST(f, path, body) call((f), SRV_POST, (path), "application/json", (body), NULL, 1)

static const char *err_code(const reply_t *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
}

static json_int_t jint(const reply_t *r, const char *k)
{
    return json_integer_value(json_object_get(r->json, k));
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    test_tmpdir(f->dir, sizeof f->dir, "server");
    strcat(f->dir, "/data");
    cp_open_options_t o = {
        .size = sizeof(cp_open_options_t), .flags = CP_OPEN_CREATE, .threads = 1};
    cp_error_t err = {0};
    if (cp_db_open(f->dir, &o, &f->db, &err) != CP_OK)
        fail_msg("cp_db_open: %s", err.message);
    f->ctx.db = f->db;
    f->ctx.max_body = SRV_DEFAULT_MAX_BODY;
    assert_int_equal(srv_metrics_init(&f->ctx.metrics, srv_nroutes), CP_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    srv_metrics_free(&f->ctx.metrics);
    cp_db_close(f->db, NULL);
    *strrchr(f->dir, '/') = '\0';
    test_rmtree(f->dir);
    free(f);
    return 0;
}

/* -------------------------------------------------------------- data */

#define NUSERS 300
static const char *TAGS[] = {"a", "a/x", "a/y", "b"};

typedef struct user {
    char id[32];
    int age;      /* -1 none */
    int tag_mask; /* bits over TAGS (direct) */
} user_t;

static user_t users[NUSERS];

static void make_users(void)
{
    uint64_t rng = 99;
    for (int i = 0; i < NUSERS; i++) {
        /* some ids need escaping in JSON, CSV and URLs */
        snprintf(users[i].id, sizeof users[i].id, i % 17 == 3 ? "u,\"%d\"/x" : "u%d", i);
        users[i].age = rand_next(&rng) % 10 == 0 ? -1 : (int)(18 + rand_next(&rng) % 50);
        users[i].tag_mask = (int)(rand_next(&rng) % 16);
    }
}

static int has_tag(const user_t *u, const char *path)
{
    for (size_t t = 0; t < CP_ARRAY_LEN(TAGS); t++) {
        if (!(u->tag_mask & (1 << t)))
            continue;
        size_t n = strlen(path);
        if (strcmp(TAGS[t], path) == 0 || (strncmp(TAGS[t], path, n) == 0 && TAGS[t][n] == '/'))
            return 1;
    }
    return 0;
}

static void load_all(fixture_t *f)
{
    reply_t r = POST(f, "/v1/attributes", "{\"attributes\":[{\"name\":\"age\",\"type\":\"int\"}]}");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = POST(
        f, "/v1/taxonomy",
        "{\"tags\":[{\"path\":\"a\"},{\"path\":\"a/x\"},{\"path\":\"a/y\"},{\"path\":\"b\"}]}");
    assert_int_equal(r.status, 200);
    reply_free(&r);
    make_users();
    /* First half as NDJSON, second half as {"users":[...]}. */
    json_t *arr = json_array();
    buf_t nd;
    buf_init(&nd, 0);
    for (int i = 0; i < NUSERS; i++) {
        json_t *tags = json_array();
        for (size_t t = 0; t < CP_ARRAY_LEN(TAGS); t++)
            if (users[i].tag_mask & (1 << t))
                json_array_append_new(tags, json_string(TAGS[t]));
        json_t *attrs = json_object();
        if (users[i].age >= 0)
            json_object_set_new(attrs, "age", json_integer(users[i].age));
        json_t *u = json_pack("{s:s,s:o,s:o}", "id", users[i].id, "attrs", attrs, "tags", tags);
        if (i < NUSERS / 2) {
            char *line = json_dumps(u, JSON_COMPACT);
            buf_printf(&nd, "%s\n", line);
            free(line);
            json_decref(u);
        } else {
            json_array_append_new(arr, u);
        }
    }
    r = call(f, SRV_POST, "/v1/users", "application/x-ndjson", buf_cstr(&nd), NULL, 1);
    assert_int_equal(r.status, 200);
    assert_int_equal(jint(&r, "created"), NUSERS / 2);
    reply_free(&r);
    json_t *wrap = json_pack("{s:o}", "users", arr);
    char *body = json_dumps(wrap, JSON_COMPACT);
    r = POST(f, "/v1/users", body);
    assert_int_equal(r.status, 200);
    assert_int_equal(jint(&r, "created"), NUSERS - NUSERS / 2);
    reply_free(&r);
    free(body);
    json_decref(wrap);
    buf_free(&nd);
}

/* ------------------------------------------------------------- tests */

static void test_counts_against_naive(void **state)
{
    fixture_t *f = *state;
    load_all(f);
    static const struct {
        const char *expr;
        int kind; /* which naive predicate */
    } cases[] = {
        {"all", 0},
        {"tag:a", 1},
        {"tag:a/x AND age >= 40", 2},
        {"NOT tag:a OR age < 25", 3},
        {"tag:b AND NOT tag:a/y", 4},
    };
    for (size_t c = 0; c < CP_ARRAY_LEN(cases); c++) {
        int want = 0;
        for (int i = 0; i < NUSERS; i++) {
            const user_t *u = &users[i];
            int in = 0;
            switch (cases[c].kind) {
            case 0:
                in = 1;
                break;
            case 1:
                in = has_tag(u, "a");
                break;
            case 2:
                in = has_tag(u, "a/x") && u->age >= 40;
                break;
            case 3:
                in = !has_tag(u, "a") || (u->age >= 0 && u->age < 25);
                break;
            case 4:
                in = has_tag(u, "b") && !has_tag(u, "a/y");
                break;
            }
            want += in;
        }
        char body[256];
        snprintf(body, sizeof body, "{\"expression\":\"%s\"}", cases[c].expr);
        reply_t r = POST(f, "/v1/crowds/estimate", body);
        assert_int_equal(r.status, 200);
        if (jint(&r, "count") != want)
            fail_msg("%s: %lld, want %d", cases[c].expr, (long long)jint(&r, "count"), want);
        reply_free(&r);
    }
}

static int collect(void *ud, const char *buf, size_t len)
{
    return buf_append(ud, buf, len) != CP_OK;
}

static void test_export_matches_library(void **state)
{
    fixture_t *f = *state;
    load_all(f);
    reply_t r = POST(f, "/v1/crowds", "{\"name\":\"ax\",\"expression\":\"tag:a/x OR age < 20\"}");
    assert_int_equal(r.status, 201);
    reply_free(&r);
    static const cp_export_format fmts[] = {CP_EXPORT_NDJSON, CP_EXPORT_CSV};
    for (size_t k = 0; k < 2; k++) {
        buf_t lib;
        buf_init(&lib, 0);
        cp_error_t err = {0};
        assert_int_equal(cp_crowd_export(f->db, "ax", fmts[k], collect, &lib, &err), CP_OK);
        /* Through the handler... */
        r = GET(f, fmts[k] == CP_EXPORT_CSV ? "/v1/crowds/ax/export?format=csv"
                                            : "/v1/crowds/ax/export");
        assert_int_equal(r.status, 200);
        assert_int_equal(r.len, lib.len);
        assert_memory_equal(r.text, lib.data, lib.len);
        reply_free(&r);
        /* ...and read directly in every small piece size. */
        for (size_t piece = 1; piece <= 7; piece++) {
            srv_stream_t *s = NULL;
            assert_int_equal(srv_export_open(f->db, "ax", fmts[k], &s, &err), CP_OK);
            buf_t got;
            buf_init(&got, 0);
            char buf[8];
            ssize_t n;
            while ((n = srv_stream_read(s, buf, piece)) > 0) {
                assert_true((size_t)n <= piece);
                buf_append(&got, buf, (size_t)n);
            }
            assert_int_equal(n, -1);
            assert_int_equal(got.len, lib.len);
            assert_memory_equal(got.data, lib.data, lib.len);
            buf_free(&got);
            srv_stream_free(s);
        }
        buf_free(&lib);
    }
    r = GET(f, "/v1/crowds/nope/export");
    assert_int_equal(r.status, 404);
    reply_free(&r);
}

static void test_errors(void **state)
{
    fixture_t *f = *state;
    load_all(f);
    reply_t r = POST(f, "/v1/crowds/estimate", "{\"expression\":\"tag:a AND tag:zz\"}");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_code(&r), "unknown_reference");
    json_t *e = json_object_get(r.json, "error");
    assert_int_equal(json_integer_value(json_object_get(e, "line")), 1);
    assert_int_equal(json_integer_value(json_object_get(e, "column")), 11);
    reply_free(&r);
    r = POST(f, "/v1/crowds/estimate", "{\"expression\":\"tag:a AND\"}");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_code(&r), "syntax_error");
    reply_free(&r);
    r = GET(f, "/v1/crowds/nope");
    assert_int_equal(r.status, 404);
    assert_string_equal(err_code(&r), "not_found");
    reply_free(&r);
    r = POST(f, "/v1/users",
             "{\"users\":[{\"id\":\"n1\"},{\"id\":\"n2\",\"attrs\":{\"age\":\"x\"}}]}");
    assert_int_equal(r.status, 400);
    e = json_object_get(r.json, "error");
    assert_int_equal(json_integer_value(json_object_get(e, "record")), 2);
    assert_int_equal(json_integer_value(json_object_get(e, "index")), 1);
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "age"));
    reply_free(&r);
    r = GET(f, "/v1/users/n1");
    assert_int_equal(r.status, 404);
    reply_free(&r);
    r = GET(f, "/v1/users/u%2C%223%22%2Fx"); /* u,"3"/x */
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "id")), "u,\"3\"/x");
    reply_free(&r);
    r = POST(f, "/v1/crowds", "{\"name\":\"c1\",\"op\":\"union\",\"crowds\":[\"nope\"]}");
    assert_int_equal(r.status, 400);
    assert_string_equal(err_code(&r), "unknown_reference");
    reply_free(&r);
}

static void test_auth_modes(void **state)
{
    fixture_t *f = *state;
    /* No keys: loopback is served as admin, anything else refused. */
    reply_t r = call(f, SRV_GET, "/v1/tags", NULL, NULL, NULL, 1);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = call(f, SRV_GET, "/v1/tags", NULL, NULL, NULL, 0);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    /* DNS rebinding: a loopback peer that came through another name. */
    host = "evil.example:8080";
    r = call(f, SRV_GET, "/v1/tags", NULL, NULL, NULL, 1);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.text, "evil.example"));
    reply_free(&r);
    host = "localhost:8080";
    r = call(f, SRV_GET, "/v1/tags", NULL, NULL, NULL, 1);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    host = NULL;
    r = POST(f, "/v1/keys", "{\"role\":\"admin\",\"label\":\"root\"}");
    assert_int_equal(r.status, 201);
    char admin[256], reader[256], hdr[300];
    snprintf(admin, sizeof admin, "Bearer %s", json_string_value(json_object_get(r.json, "key")));
    reply_free(&r);
    /* Now keys are needed, even on loopback. */
    r = call(f, SRV_GET, "/v1/tags", NULL, NULL, NULL, 1);
    assert_int_equal(r.status, 401);
    assert_string_equal(err_code(&r), "unauthorized");
    reply_free(&r);
    r = call(f, SRV_GET, "/v1/tags", NULL, NULL, "Bearer wrong", 1);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    r = call(f, SRV_GET, "/healthz", NULL, NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = call(f, SRV_POST, "/v1/keys", "application/json", "{\"role\":\"read\"}", admin, 0);
    assert_int_equal(r.status, 201);
    snprintf(reader, sizeof reader, "%s", json_string_value(json_object_get(r.json, "key")));
    reply_free(&r);
    snprintf(hdr, sizeof hdr, "Bearer %s", reader);
    r = call(f, SRV_GET, "/v1/tags", NULL, NULL, hdr, 0);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = call(f, SRV_POST, "/v1/crowds/estimate", "application/json", "{\"expression\":\"all\"}",
             hdr, 0);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = call(f, SRV_POST, "/v1/tags", "application/json", "{\"path\":\"q\"}", hdr, 0);
    assert_int_equal(r.status, 403);
    assert_string_equal(err_code(&r), "forbidden");
    reply_free(&r);
    r = call(f, SRV_GET, "/v1/keys", NULL, NULL, hdr, 0);
    assert_int_equal(r.status, 403);
    reply_free(&r);
    /* HTTP Basic with the key as user name. */
    char b64[400];
    {
        static const char tbl[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char plain[300];
        snprintf(plain, sizeof plain, "%s:", reader);
        size_t n = strlen(plain), o = 0;
        memcpy(b64, "Basic ", 6);
        o = 6;
        for (size_t i = 0; i < n; i += 3) {
            uint32_t v = (uint32_t)(unsigned char)plain[i] << 16;
            if (i + 1 < n)
                v |= (uint32_t)(unsigned char)plain[i + 1] << 8;
            if (i + 2 < n)
                v |= (unsigned char)plain[i + 2];
            b64[o++] = tbl[(v >> 18) & 63];
            b64[o++] = tbl[(v >> 12) & 63];
            b64[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
            b64[o++] = i + 2 < n ? tbl[v & 63] : '=';
        }
        b64[o] = '\0';
    }
    r = call(f, SRV_GET, "/v1/attributes", NULL, NULL, b64, 0);
    assert_int_equal(r.status, 200);
    reply_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counts_against_naive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export_matches_library, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_modes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
