/*
 * test_server_rtb.c — the OpenRTB routes (h_rtb.c) through srv_dispatch,
 * without sockets: a bid at the documented price, 204, 400 with a reason
 * for unreadable requests, 415 for a non-JSON body, the key rule of the
 * bid route, notices open but MAC-checked (400 for a forged or missing
 * token), the impression pixel, the click's 302 kept on the advertiser's
 * domains, 503 without a bidder, and crowdpack_bid_seconds in /metrics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cp_test.h"

#include "server/srv.h"

typedef struct fixture {
    char dir[256];
    cp_db_t *db;
    cp_activate_t *act;
    srv_ctx_t ctx;
} fixture_t;

typedef struct qargs {
    char buf[1024];
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

typedef struct reply {
    int status;
    json_t *json;
    char *text;
    size_t len;
    char location[512];
    const char *ctype;
} reply_t;

static void reply_free(reply_t *r)
{
    json_decref(r->json);
    free(r->text);
    memset(r, 0, sizeof *r);
}

static reply_t call(fixture_t *f, srv_method m, const char *path, const char *ctype,
                    const char *body, int loopback)
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
            if (eq)
                *eq++ = '\0';
            q.k[q.n] = tok;
            q.v[q.n] = eq ? eq : "";
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
    req.host = "127.0.0.1";
    req.body = body ? body : "";
    req.body_len = strlen(req.body);
    req.query = q_lookup;
    req.query_ud = &q;
    req.client_loopback = loopback;
    srv_dispatch(&f->ctx, &req, &resp);
    out.status = resp.status;
    out.ctype = resp.content_type;
    if (resp.location)
        snprintf(out.location, sizeof out.location, "%s", resp.location);
    out.text = malloc(resp.len + 1);
    if (resp.len)
        memcpy(out.text, resp.body, resp.len);
    out.text[resp.len] = '\0';
    out.len = resp.len;
    if (resp.len && resp.content_type && strcmp(resp.content_type, "application/json") == 0)
        out.json = json_loadb(resp.body, resp.len, 0, NULL);
    srv_resp_free(&resp);
    srv_req_free(&req);
    return out;
}

static const char *err_code(const reply_t *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    test_tmpdir(f->dir, sizeof f->dir, "server-rtb");
    char data[300], act[300];
    snprintf(data, sizeof data, "%s/data", f->dir);
    snprintf(act, sizeof act, "%s/activate", f->dir);
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = CP_OPEN_CREATE;
    f->db = test_open_db(data, &o);
    cp_error_t err = {0};
    const char *users = "{\"id\":\"k1\"}\n";
    assert_int_equal(cp_load_ndjson_buf(f->db, users, strlen(users), NULL, NULL, &err), CP_OK);
    cp_activate_options_t ao = CP_ACTIVATE_OPTIONS_INIT;
    ao.flags = CP_ACTIVATE_MANUAL_TICK;
    ao.notice_base = "https://bid.example.com/";
    assert_int_equal(cp_activate_open(f->db, act, &ao, &f->act, &err), CP_OK);
    const char *doc =
        "{\"id\":\"c\",\"advertiser\":\"acme\",\"schedule\":{\"start\":\"2020-01-01\"},"
        "\"lines\":[{\"id\":\"l\",\"billing\":\"cpm\",\"bid\":4.50,\"targeting\":\"\","
        "\"creatives\":[{\"id\":\"cr\",\"w\":300,\"h\":250,\"adomain\":[\"acme.com\"],"
        "\"adm\":\"<a href=\\\"${CLICK_URL}\\\">x</a>\"}]}]}";
    cp_status st = cp_campaign_put_json(f->act, "c", doc, strlen(doc), NULL, &err);
    if (st != CP_OK)
        fail_msg("put: %s", err.message);
    f->ctx.db = f->db;
    f->ctx.act = f->act;
    f->ctx.max_body = SRV_DEFAULT_MAX_BODY;
    assert_int_equal(srv_metrics_init(&f->ctx.metrics, srv_nroutes), CP_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    srv_metrics_free(&f->ctx.metrics);
    assert_int_equal(cp_activate_close(f->act, NULL), CP_OK);
    assert_int_equal(cp_db_close(f->db, NULL), CP_OK);
    test_rmtree(f->dir);
    free(f);
    return 0;
}

#define REQ(user)                                                                                  \
    "{\"id\":\"a1\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":300,\"h\":250}}],"  \
    "\"user\":{\"buyeruid\":\"" user "\"}}"

/* The value of `key` in a URL's query, or "" (no decoding needed here). */
static void url_arg(const char *url, const char *key, char *out, size_t cap)
{
    char pat[16];
    snprintf(pat, sizeof pat, "?%s=", key);
    const char *p = strstr(url, pat);
    if (p == NULL) {
        snprintf(pat, sizeof pat, "&%s=", key);
        p = strstr(url, pat);
    }
    assert_non_null(p);
    p += strlen(pat);
    size_t n = strcspn(p, "&\"");
    assert_true(n < cap);
    memcpy(out, p, n);
    out[n] = '\0';
}

static void test_bid_and_notices(void **state)
{
    fixture_t *f = *state;
    reply_t r = call(f, SRV_POST, "/openrtb2/bid", "application/json", REQ("k1"), 1);
    assert_int_equal(r.status, 200);
    json_t *bid = json_array_get(
        json_object_get(json_array_get(json_object_get(r.json, "seatbid"), 0), "bid"), 0);
    assert_true(json_real_value(json_object_get(bid, "price")) == 4.5);
    const char *nurl = json_string_value(json_object_get(bid, "nurl"));
    assert_non_null(nurl);
    /* The trailing slash of the public URL is not doubled. */
    assert_true(strncmp(nurl, "https://bid.example.com/openrtb2/win?t=", 39) == 0);
    char tok[600], path[900];
    url_arg(nurl, "t", tok, sizeof tok);
    reply_free(&r);

    snprintf(path, sizeof path, "/openrtb2/win?t=%s&p=3.20", tok);
    r = call(f, SRV_GET, path, NULL, NULL, 0); /* no key, not loopback: notices are open */
    assert_int_equal(r.status, 204);
    reply_free(&r);
    r = call(f, SRV_GET, path, NULL, NULL, 0);
    assert_int_equal(r.status, 204); /* a repeat, counted once */
    reply_free(&r);
    snprintf(path, sizeof path, "/openrtb2/bill?t=%s&p=${AUCTION_PRICE}", tok);
    r = call(f, SRV_GET, path, NULL, NULL, 0);
    assert_int_equal(r.status, 204); /* an unsubstituted macro: no price */
    reply_free(&r);
    snprintf(path, sizeof path, "/openrtb2/loss?t=%s&p=1.00&r=x", tok);
    r = call(f, SRV_GET, path, NULL, NULL, 0);
    assert_int_equal(r.status, 400);
    assert_string_equal(err_code(&r), "bad_loss_reason");
    reply_free(&r);
    snprintf(path, sizeof path, "/openrtb2/imp?t=%s", tok);
    r = call(f, SRV_GET, path, NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "image/gif");
    assert_int_equal(r.len, 43);
    assert_memory_equal(r.text, "GIF89a", 6);
    reply_free(&r);

    /* Clicks land on the advertiser's domains only. */
    snprintf(path, sizeof path, "/openrtb2/click?t=%s&u=https://www.acme.com/spring", tok);
    r = call(f, SRV_GET, path, NULL, NULL, 0);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, "https://www.acme.com/spring");
    reply_free(&r);
    snprintf(path, sizeof path, "/openrtb2/click?t=%s&u=https://evil.example/acme.com", tok);
    r = call(f, SRV_GET, path, NULL, NULL, 0);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, "https://acme.com/");
    reply_free(&r);
    snprintf(path, sizeof path, "/openrtb2/click?t=%s&u=https://acme.com.evil.example/", tok);
    r = call(f, SRV_GET, path, NULL, NULL, 0);
    assert_string_equal(r.location, "https://acme.com/");
    reply_free(&r);

    /* Forged, damaged or missing tokens. */
    r = call(f, SRV_GET, "/openrtb2/win?t=AAAA&p=1.00", NULL, NULL, 0);
    assert_int_equal(r.status, 400);
    assert_string_equal(err_code(&r), "bad_token");
    reply_free(&r);
    tok[10] = tok[10] == 'A' ? 'B' : 'A';
    snprintf(path, sizeof path, "/openrtb2/imp?t=%s", tok);
    r = call(f, SRV_GET, path, NULL, NULL, 0);
    assert_int_equal(r.status, 400);
    reply_free(&r);
    r = call(f, SRV_GET, "/openrtb2/click", NULL, NULL, 0);
    assert_int_equal(r.status, 400);
    reply_free(&r);

    /* /metrics has the bid histogram. */
    r = call(f, SRV_GET, "/metrics", NULL, NULL, 1);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.text, "# TYPE crowdpack_bid_seconds histogram"));
    assert_non_null(strstr(r.text, "crowdpack_bid_seconds_count 1\n"));
    reply_free(&r);
}

static void test_refusals(void **state)
{
    fixture_t *f = *state;
    /* Unknown user, targeting "" matches everyone: but a request without
     * CNY gets no bid. */
    reply_t r = call(f, SRV_POST, "/openrtb2/bid", "application/json",
                     "{\"id\":\"a\",\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":300,\"h\":250}}]}", 1);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.len, 0);
    reply_free(&r);
    static const char *const bad[] = {
        "{",
        "[]",
        "{\"id\":\"a\",\"imp\":[]}",
        "{\"id\":\"a\",\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":-3,\"h\":250}}]}",
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(bad); i++) {
        r = call(f, SRV_POST, "/openrtb2/bid", "application/json", bad[i], 1);
        if (r.status != 400)
            fail_msg("%s: %d", bad[i], r.status);
        assert_string_equal(err_code(&r), "invalid_bid_request");
        assert_non_null(json_object_get(json_object_get(r.json, "error"), "message"));
        reply_free(&r);
    }
    r = call(f, SRV_POST, "/openrtb2/bid", "text/plain", REQ("k1"), 1);
    assert_int_equal(r.status, 415);
    reply_free(&r);
    /* Not loopback and no key: refused like a /v1 write. */
    r = call(f, SRV_POST, "/openrtb2/bid", "application/json", REQ("k1"), 0);
    assert_true(r.status == 401 || r.status == 403);
    reply_free(&r);
    /* Without a bidder: 503. */
    f->ctx.act = NULL;
    r = call(f, SRV_POST, "/openrtb2/bid", "application/json", REQ("k1"), 1);
    assert_int_equal(r.status, 503);
    assert_string_equal(err_code(&r), "activation_off");
    reply_free(&r);
    r = call(f, SRV_GET, "/openrtb2/win?t=x", NULL, NULL, 1);
    assert_int_equal(r.status, 503);
    reply_free(&r);
    f->ctx.act = f->act;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bid_and_notices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
