/*
 * test_server_limits.c — the server's defences without sockets: bounded
 * inflating of gzip/deflate bodies, body decoding replies, the Origin
 * allow-list, the cross-site rules and CORS preflights through dispatch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "server/srv.h"

/* Compresses `in` with zlib's deflate: wbits 15+16 gzip, 15 zlib, -15 raw. */
static unsigned char *squeeze(const void *in, size_t len, int wbits, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, (uLong)len) + 64;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static const char *const DOC =
    "{\"userId\":\"u1\",\"traits\":{\"city\":\"\xe6\xb7\xb1\xe5\x9c\xb3\"}}";

static void test_inflate_formats(void **state)
{
    (void)state;
    static const struct {
        const char *enc;
        int wbits;
    } cases[] = {
        {"gzip", 15 + 16}, {"x-gzip", 15 + 16}, {"GZIP", 15 + 16},
        {"deflate", 15},   {"deflate", -15},    {" deflate ", 15},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        size_t zl;
        unsigned char *z = squeeze(DOC, strlen(DOC), cases[i].wbits, &zl);
        char *out = NULL;
        size_t n = 0;
        cp_error_t err = {0};
        assert_int_equal(srv_inflate(cases[i].enc, (const char *)z, zl, 1024, &out, &n, &err),
                         CP_OK);
        assert_int_equal(n, strlen(DOC));
        assert_string_equal(out, DOC); /* NUL-terminated */
        free(out);
        free(z);
    }
}

static void test_inflate_concatenated_gzip(void **state)
{
    (void)state;
    size_t l1, l2;
    unsigned char *a = squeeze("{\"a\":", 5, 15 + 16, &l1);
    unsigned char *b = squeeze("1}", 2, 15 + 16, &l2);
    unsigned char *ab = malloc(l1 + l2);
    memcpy(ab, a, l1);
    memcpy(ab + l1, b, l2);
    char *out = NULL;
    size_t n;
    cp_error_t err = {0};
    assert_int_equal(srv_inflate("gzip", (const char *)ab, l1 + l2, 100, &out, &n, &err), CP_OK);
    assert_string_equal(out, "{\"a\":1}");
    free(out);
    free(ab);
    free(a);
    free(b);
}

/* The bound holds while inflating: a 32 MiB bomb against a 1 MiB limit is
 * refused, and exactly at the limit a body passes. */
static void test_inflate_bound(void **state)
{
    (void)state;
    size_t big = 32u << 20;
    char *zeros = calloc(1, big);
    assert_non_null(zeros);
    size_t zl;
    unsigned char *z = squeeze(zeros, big, 15 + 16, &zl);
    free(zeros);
    assert_true(zl < 64 * 1024);
    char *out = NULL;
    size_t n = 0;
    cp_error_t err = {0};
    assert_int_equal(srv_inflate("gzip", (const char *)z, zl, 1u << 20, &out, &n, &err), CP_ELIMIT);
    assert_null(out);
    assert_non_null(strstr(err.message, "1048576"));
    free(z);

    /* Exactly max bytes fit; max + 1 do not. */
    char buf[1000];
    memset(buf, 'a', sizeof buf);
    z = squeeze(buf, sizeof buf, 15, &zl);
    assert_int_equal(srv_inflate("deflate", (const char *)z, zl, 1000, &out, &n, &err), CP_OK);
    assert_int_equal(n, 1000);
    free(out);
    assert_int_equal(srv_inflate("deflate", (const char *)z, zl, 999, &out, &n, &err), CP_ELIMIT);
    free(z);
}

static void test_inflate_damage(void **state)
{
    (void)state;
    size_t zl;
    unsigned char *z = squeeze(DOC, strlen(DOC), 15 + 16, &zl);
    char *out = NULL;
    size_t n;
    cp_error_t err = {0};
    /* Truncated anywhere: a clear "truncated" error, never a crash. */
    for (size_t cut = 1; cut < zl; cut++) {
        memset(&err, 0, sizeof err);
        cp_status st = srv_inflate("gzip", (const char *)z, cut, 1024, &out, &n, &err);
        assert_int_equal(st, CP_EINVAL);
        assert_null(out);
        assert_true(err.message[0] != '\0');
    }
    assert_int_equal(srv_inflate("gzip", (const char *)z, zl / 2, 1024, &out, &n, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "truncated"));
    /* Trailing junk after the stream. */
    unsigned char *junk = malloc(zl + 4);
    memcpy(junk, z, zl);
    memcpy(junk + zl, "junk", 4);
    assert_int_equal(srv_inflate("gzip", (const char *)junk, zl + 4, 1024, &out, &n, &err),
                     CP_EINVAL);
    assert_non_null(strstr(err.message, "after the end"));
    free(junk);
    /* Flipped bytes: an error or (rarely) a CRC-checked success, never more. */
    for (size_t i = 10; i < zl; i++) {
        unsigned char *bad = malloc(zl);
        memcpy(bad, z, zl);
        bad[i] ^= 0x5a;
        cp_status st = srv_inflate("gzip", (const char *)bad, zl, 1024, &out, &n, &err);
        assert_true(st == CP_EINVAL || st == CP_OK);
        free(out);
        out = NULL;
        free(bad);
    }
    /* Plain text under gzip, and an unknown coding. */
    assert_int_equal(srv_inflate("gzip", "{}", 2, 1024, &out, &n, &err), CP_EINVAL);
    assert_int_equal(srv_inflate("br", "{}", 2, 1024, &out, &n, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "unsupported"));
    free(z);
}

static void test_body_decode_replies(void **state)
{
    (void)state;
    size_t zl;
    unsigned char *z = squeeze(DOC, strlen(DOC), 15 + 16, &zl);
    static const struct {
        const char *enc;
        size_t len_div; /* 1 = whole, 2 = truncated */
        size_t max;
        int status;
        const char *needle;
    } cases[] = {
        {"gzip", 1, 1024, 0, NULL},
        {"identity", 1, 1024, 0, NULL},
        {"gzip", 2, 1024, 400, "\"malformed_compressed_body\""},
        {"gzip", 1, 10, 413, "\"too_large\""},
        {"zstd", 1, 1024, 415, "\"unsupported_media_type\""},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        srv_req_t req;
        srv_resp_t resp;
        srv_req_init(&req);
        srv_resp_init(&resp);
        req.body = (const char *)z;
        req.body_len = zl / cases[i].len_div;
        req.content_encoding = cases[i].enc;
        cp_status st = srv_body_decode(&req, &resp, cases[i].max);
        if (cases[i].status == 0) {
            assert_int_equal(st, CP_OK);
            if (strcmp(cases[i].enc, "gzip") == 0)
                assert_string_equal(req.body, DOC);
        } else {
            assert_int_not_equal(st, CP_OK);
            assert_int_equal(resp.status, cases[i].status);
            assert_non_null(strstr(resp.body, cases[i].needle));
        }
        srv_resp_free(&resp);
        srv_req_free(&req);
    }
    free(z);

    /* No body: nothing to decode, whatever the header says. */
    srv_req_t req;
    srv_resp_t resp;
    srv_req_init(&req);
    srv_resp_init(&resp);
    req.content_encoding = "gzip";
    assert_int_equal(srv_body_decode(&req, &resp, 1024), CP_OK);
    assert_int_equal(req.body_len, 0);
    srv_resp_free(&resp);
    srv_req_free(&req);
}

static void test_origins(void **state)
{
    (void)state;
    const char *list[] = {"https://app.example", "http://localhost:3000/"};
    srv_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.allow_origins = list;
    ctx.nallow_origins = 2;
    assert_true(srv_origin_allowed(&ctx, "https://app.example"));
    assert_true(srv_origin_allowed(&ctx, "HTTPS://APP.EXAMPLE"));
    assert_true(srv_origin_allowed(&ctx, "https://app.example/"));
    assert_true(srv_origin_allowed(&ctx, "http://localhost:3000"));
    assert_false(srv_origin_allowed(&ctx, "http://app.example"));
    assert_false(srv_origin_allowed(&ctx, "https://app.example.evil"));
    assert_false(srv_origin_allowed(&ctx, "https://app.exampl"));
    assert_false(srv_origin_allowed(&ctx, "null"));
    assert_false(srv_origin_allowed(&ctx, NULL));
    cp_error_t err = {0};
    assert_int_equal(srv_origin_parse_check("https://a.example:8443", &err), CP_OK);
    assert_int_equal(srv_origin_parse_check("http://127.0.0.1:3000/", &err), CP_OK);
    assert_int_equal(srv_origin_parse_check("a.example", &err), CP_EINVAL);
    assert_int_equal(srv_origin_parse_check("https://", &err), CP_EINVAL);
    assert_int_equal(srv_origin_parse_check("https://a.example/path", &err), CP_EINVAL);
    assert_int_equal(srv_origin_parse_check("*", &err), CP_EINVAL);
}

static void test_cross_site_rules(void **state)
{
    (void)state;
    const char *list[] = {"https://app.example"};
    srv_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.allow_origins = list;
    ctx.nallow_origins = 1;
    static const struct {
        srv_method m;
        const char *ctype, *enc, *auth, *origin;
        int ok; /* 1 allowed */
        int status;
    } cases[] = {
        {SRV_GET, NULL, NULL, NULL, "https://evil.example", 1, 0},
        {SRV_POST, "application/json", NULL, NULL, NULL, 1, 0},
        {SRV_POST, "application/json; charset=utf-8", NULL, NULL, NULL, 1, 0},
        {SRV_POST, "application/x-ndjson", NULL, NULL, NULL, 1, 0},
        {SRV_POST, "text/plain", NULL, NULL, NULL, 0, 415},
        {SRV_POST, "application/x-www-form-urlencoded", NULL, NULL, NULL, 0, 415},
        {SRV_POST, "multipart/form-data; boundary=x", NULL, NULL, NULL, 0, 415},
        {SRV_POST, NULL, NULL, NULL, NULL, 0, 415},
        {SRV_DELETE, NULL, NULL, NULL, NULL, 0, 415},
        {SRV_PUT, NULL, NULL, NULL, NULL, 0, 415},
        {SRV_PATCH, "text/plain", NULL, NULL, NULL, 0, 415},
        /* RudderStack: gzip under a form type. */
        {SRV_POST, "application/x-www-form-urlencoded", "gzip", NULL, NULL, 1, 0},
        /* A Bearer key cannot come from a form; Basic can (browsers replay it). */
        {SRV_POST, NULL, NULL, "Bearer k", NULL, 1, 0},
        {SRV_DELETE, NULL, NULL, "bearer k", NULL, 1, 0},
        {SRV_POST, "text/plain", NULL, "Basic a2V5Og==", NULL, 0, 415},
        /* Origins, keyed or not. */
        {SRV_POST, "application/json", NULL, NULL, "https://evil.example", 0, 403},
        {SRV_POST, "application/json", NULL, "Bearer k", "null", 0, 403},
        {SRV_POST, "application/json", NULL, NULL, "https://app.example", 1, 0},
        {SRV_POST, "text/plain", NULL, NULL, "https://app.example", 0, 415},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        srv_req_t req;
        srv_resp_t resp;
        srv_req_init(&req);
        srv_resp_init(&resp);
        req.method = cases[i].m;
        req.path = "/v1/identify";
        req.content_type = cases[i].ctype;
        req.content_encoding = cases[i].enc;
        req.authorization = cases[i].auth;
        req.origin = cases[i].origin;
        int ok = srv_cross_site_check(&ctx, &req, &resp);
        if (ok != cases[i].ok)
            fail_msg("case %zu: got %d", i, ok);
        if (!ok) {
            assert_int_equal(resp.status, cases[i].status);
            assert_non_null(strstr(resp.body, cases[i].status == 403
                                                  ? "\"forbidden_origin\""
                                                  : "\"unsupported_media_type\""));
        }
        srv_resp_free(&resp);
        srv_req_free(&req);
    }
}

static void test_preflight(void **state)
{
    (void)state;
    const char *list[] = {"https://app.example"};
    srv_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.allow_origins = list;
    ctx.nallow_origins = 1;
    assert_int_equal(srv_metrics_init(&ctx.metrics, srv_nroutes), CP_OK);
    static const struct {
        const char *origin;
        int status;
        int cors;
    } cases[] = {
        {"https://app.example", 204, 1},
        {"https://evil.example", 403, 0},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        srv_req_t req;
        srv_resp_t resp;
        srv_req_init(&req);
        srv_resp_init(&resp);
        req.method = srv_method_parse("OPTIONS");
        req.method_name = "OPTIONS";
        req.path = "/v1/identify";
        req.origin = cases[i].origin;
        srv_dispatch(&ctx, &req, &resp);
        assert_int_equal(resp.status, cases[i].status);
        assert_int_equal(resp.cors_preflight, cases[i].cors);
        assert_int_equal(resp.cors_origin != NULL, cases[i].cors);
        srv_resp_free(&resp);
        srv_req_free(&req);
    }
    srv_metrics_free(&ctx.metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inflate_formats),
        cmocka_unit_test(test_inflate_concatenated_gzip),
        cmocka_unit_test(test_inflate_bound),
        cmocka_unit_test(test_inflate_damage),
        cmocka_unit_test(test_body_decode_replies),
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_cross_site_rules),
        cmocka_unit_test(test_preflight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
