/* test_activate_bid.c — the bidder through the public activation API
 * (cp_activate_open, cp_campaign_put_json, cp_rtb_bid, cp_rtb_notice):
 *
 *  - property: random line items (crowd targeting over tags, an attribute
 *    and crowds; premiums; request targeting; sizes; blocks; floors) and
 *    random requests (known, unknown and absent users), >= 500 cases; the
 *    line and price each imp gets are compared with a naive function that
 *    applies bid.h's rules to the user's generated data directly, with no
 *    materialised targeting and no expression engine;
 *  - caps across several ids of one person (user_id and idfa merged by an
 *    identify), kept across a reopen, and ?debug=1 naming the cap.
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

#include <jansson.h>
#include <strings.h>

#include "activate/bid.h"
#include "util/util.h"

/* 2026-06-15 12:00 UTC: inside every generated schedule, a Monday. */
#define NOW_MS 1781524800000LL

#define NUSERS 60
#define NWORLDS 60
#define NREQ 10 /* requests per world: 600 cases */

typedef struct user {
    int age; /* 0 = none */
    int tag_a, tag_b;
} user_t;

static user_t g_users[NUSERS];

/* Targeting expressions and their meaning, evaluated naively. */
static const char *const g_exprs[] = {
    "",
    "tag:interest/a",
    "age BETWEEN 25 AND 40",
    "tag:interest/a AND age BETWEEN 25 AND 40",
    "tag:interest/b OR age >= 50",
    "crowd:c1 AND NOT tag:interest/b",
};

static int in_c1(const user_t *u)
{
    return u->age >= 20 && u->age <= 35;
}

static int in_c2(const user_t *u)
{
    return u->tag_b;
}

static int expr_match(int e, const user_t *u)
{
    switch (e) {
    case 0:
        return 1;
    case 1:
        return u->tag_a;
    case 2:
        return u->age >= 25 && u->age <= 40;
    case 3:
        return u->tag_a && u->age >= 25 && u->age <= 40;
    case 4:
        return u->tag_b || u->age >= 50;
    case 5:
        return in_c1(u) && !u->tag_b;
    }
    return 0;
}

static const struct {
    int w, h;
} g_sizes[] = {{300, 250}, {728, 90}, {320, 50}};

static const char *const g_domains[] = {"acme.com", "shop.example"};

typedef struct creative {
    int size;   /* index into g_sizes */
    int domain; /* index into g_domains */
    int cat;    /* 1: "IAB3-1" */
} creative_t;

typedef struct line {
    int paused;
    int cpc;
    int bid_fen;
    int expr;
    int nprem;
    int prem_crowd[2]; /* 1 = c1, 2 = c2 */
    int prem_pct[2];
    int os;      /* 0 any, 1 iOS, 2 Android */
    int country; /* 0 any, 1 CHN */
    int ncr;
    creative_t cr[2];
} line_t;

typedef struct imp {
    int nsizes;
    int sizes[3];
    int floor_fen;
} imp_t;

typedef struct req {
    int user; /* -1 unknown id, -2 none */
    int os;   /* 0 none, 1 iOS, 2 Android */
    int country;
    int bcat, badv;
    int nimps;
    imp_t imp[2];
} req_t;

static char g_dir[512];

static uint32_t rnd(uint64_t *s, uint32_t n)
{
    return (uint32_t)(rand_next(s) % n);
}

static cp_db_t *make_db(uint64_t *seed)
{
    char data[600];
    snprintf(data, sizeof data, "%s/data", g_dir);
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = CP_OPEN_CREATE;
    cp_db_t *db = test_open_db(data, &o);
    cp_error_t err = {0};
    const char *schema = "{\"attributes\":[{\"name\":\"age\",\"type\":\"int\"}]}";
    assert_int_equal(cp_schema_load_json(db, schema, strlen(schema), &err), CP_OK);
    const char *tax = "{\"tags\":[{\"path\":\"interest/a\"},{\"path\":\"interest/b\"}]}";
    assert_int_equal(cp_taxonomy_load_json(db, tax, strlen(tax), &err), CP_OK);
    buf_t b;
    buf_init(&b, 0);
    for (int i = 0; i < NUSERS; i++) {
        user_t *u = &g_users[i];
        u->age = rnd(seed, 10) == 0 ? 0 : 15 + (int)rnd(seed, 46);
        u->tag_a = rnd(seed, 2);
        u->tag_b = rnd(seed, 3) == 0;
        buf_printf(&b, "{\"id\":\"u%d\"", i);
        if (u->age)
            buf_printf(&b, ",\"attrs\":{\"age\":%d}", u->age);
        buf_printf(&b, ",\"tags\":[%s%s%s]}\n", u->tag_a ? "\"interest/a\"" : "",
                   u->tag_a && u->tag_b ? "," : "", u->tag_b ? "\"interest/b\"" : "");
    }
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    assert_int_equal(cp_load_ndjson_buf(db, b.data, b.len, NULL, &st, &err), CP_OK);
    assert_int_equal(st.users_created, NUSERS);
    buf_free(&b);
    assert_int_equal(
        cp_crowd_create(db, "c1", "age BETWEEN 20 AND 35", CP_CROWD_STATIC, NULL, &err), CP_OK);
    assert_int_equal(cp_crowd_create(db, "c2", "tag:interest/b", CP_CROWD_STATIC, NULL, &err),
                     CP_OK);
    return db;
}

static cp_activate_t *open_act(cp_db_t *db)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/activate", g_dir);
    cp_activate_options_t o = CP_ACTIVATE_OPTIONS_INIT;
    o.flags = CP_ACTIVATE_MANUAL_TICK;
    o.notice_base = "http://bid.test";
    cp_activate_t *a = NULL;
    cp_error_t err = {0};
    cp_status st = cp_activate_open(db, dir, &o, &a, &err);
    if (st != CP_OK)
        fail_msg("cp_activate_open: %s: %s", cp_strerror(st), err.message);
    return a;
}

static void gen_line(uint64_t *s, line_t *l)
{
    memset(l, 0, sizeof *l);
    l->paused = rnd(s, 12) == 0;
    l->cpc = rnd(s, 5) == 0;
    l->bid_fen = 100 + (int)rnd(s, 1900);
    l->expr = (int)rnd(s, CP_ARRAY_LEN(g_exprs));
    l->nprem = (int)rnd(s, 3);
    static const int pcts[] = {-50, 0, 20, 50, 100, 900};
    for (int p = 0; p < l->nprem; p++) {
        l->prem_crowd[p] = p + 1;
        l->prem_pct[p] = pcts[rnd(s, CP_ARRAY_LEN(pcts))];
    }
    if (l->nprem == 1 && rnd(s, 2))
        l->prem_crowd[0] = 2;
    l->os = rnd(s, 3) == 0 ? 1 + (int)rnd(s, 2) : 0;
    l->country = rnd(s, 4) == 0;
    l->ncr = 1 + (int)rnd(s, 2);
    for (int c = 0; c < l->ncr; c++) {
        l->cr[c].size = (int)rnd(s, CP_ARRAY_LEN(g_sizes));
        l->cr[c].domain = (int)rnd(s, 2);
        l->cr[c].cat = rnd(s, 3) == 0;
    }
}

static void campaign_doc(buf_t *b, const line_t *lines, int n)
{
    buf_reset(b);
    buf_printf(b, "{\"id\":\"prop\",\"advertiser\":\"acme\","
                  "\"budget\":{\"total\":10000000,\"daily\":1000000},"
                  "\"schedule\":{\"start\":\"2026-01-01\",\"end\":\"2027-12-31\"},"
                  "\"pacing\":\"asap\",\"lines\":[");
    for (int i = 0; i < n; i++) {
        const line_t *l = &lines[i];
        buf_printf(b, "%s{\"id\":\"L%d\",\"billing\":\"%s\",\"bid\":%d.%02d,\"targeting\":\"%s\"",
                   i ? "," : "", i, l->cpc ? "cpc" : "cpm", l->bid_fen / 100, l->bid_fen % 100,
                   g_exprs[l->expr]);
        if (l->paused)
            buf_printf(b, ",\"paused\":true");
        if (l->nprem) {
            buf_printf(b, ",\"premiums\":[");
            for (int p = 0; p < l->nprem; p++)
                buf_printf(b, "%s{\"crowd\":\"c%d\",\"pct\":%d}", p ? "," : "", l->prem_crowd[p],
                           l->prem_pct[p]);
            buf_printf(b, "]");
        }
        if (l->os || l->country) {
            buf_printf(b, ",\"request\":{");
            if (l->os)
                buf_printf(b, "\"os\":[\"%s\"]%s", l->os == 1 ? "iOS" : "Android",
                           l->country ? "," : "");
            if (l->country)
                buf_printf(b, "\"countries\":[\"CHN\"]");
            buf_printf(b, "}");
        }
        buf_printf(b, ",\"creatives\":[");
        for (int c = 0; c < l->ncr; c++) {
            const creative_t *cr = &l->cr[c];
            buf_printf(b,
                       "%s{\"id\":\"L%dc%d\",\"w\":%d,\"h\":%d,\"adomain\":[\"%s\"],%s"
                       "\"adm\":\"<a href=\\\"${CLICK_URL}\\\">x</a>\"}",
                       c ? "," : "", i, c, g_sizes[cr->size].w, g_sizes[cr->size].h,
                       g_domains[cr->domain], cr->cat ? "\"cat\":[\"IAB3-1\"]," : "");
        }
        buf_printf(b, "]}");
    }
    buf_printf(b, "]}");
}

static void gen_req(uint64_t *s, req_t *r)
{
    memset(r, 0, sizeof *r);
    uint32_t k = rnd(s, 10);
    r->user = k < 7 ? (int)rnd(s, NUSERS) : k < 9 ? -1 : -2;
    r->os = (int)rnd(s, 3);
    r->country = (int)rnd(s, 3);
    r->bcat = rnd(s, 4) == 0;
    r->badv = rnd(s, 4) == 0;
    r->nimps = 1 + (int)rnd(s, 2);
    for (int i = 0; i < r->nimps; i++) {
        imp_t *m = &r->imp[i];
        m->nsizes = 1 + (int)rnd(s, 3);
        for (int z = 0; z < m->nsizes; z++)
            m->sizes[z] = (int)rnd(s, CP_ARRAY_LEN(g_sizes));
        m->floor_fen = rnd(s, 3) == 0 ? 0 : (int)rnd(s, 1500);
    }
}

static void request_doc(buf_t *b, const req_t *r, int n)
{
    buf_reset(b);
    buf_printf(b, "{\"id\":\"auction-%d\",\"cur\":[\"CNY\"],\"imp\":[", n);
    for (int i = 0; i < r->nimps; i++) {
        const imp_t *m = &r->imp[i];
        buf_printf(b, "%s{\"id\":\"%d\",\"banner\":{\"format\":[", i ? "," : "", i + 1);
        for (int z = 0; z < m->nsizes; z++)
            buf_printf(b, "%s{\"w\":%d,\"h\":%d}", z ? "," : "", g_sizes[m->sizes[z]].w,
                       g_sizes[m->sizes[z]].h);
        buf_printf(b, "]},\"bidfloor\":%d.%02d,\"bidfloorcur\":\"CNY\"}", m->floor_fen / 100,
                   m->floor_fen % 100);
    }
    buf_printf(b, "],\"site\":{\"id\":\"s1\",\"page\":\"https://news.example/\"}");
    buf_printf(b, ",\"device\":{\"ua\":\"x\"");
    if (r->os)
        buf_printf(b, ",\"os\":\"%s\"", r->os == 1 ? "iOS" : "Android");
    if (r->country)
        buf_printf(b, ",\"geo\":{\"country\":\"%s\"}", r->country == 1 ? "CHN" : "USA");
    buf_printf(b, "}");
    if (r->user >= 0)
        buf_printf(b, ",\"user\":{\"buyeruid\":\"u%d\"}", r->user);
    else if (r->user == -1)
        buf_printf(b, ",\"user\":{\"buyeruid\":\"nobody-%d\"}", n);
    if (r->bcat)
        buf_printf(b, ",\"bcat\":[\"IAB3\"]");
    if (r->badv)
        buf_printf(b, ",\"badv\":[\"acme.com\"]");
    buf_printf(b, "}");
}

/* The naive decision: line index and price for imp i, or -1. */
static int naive(const line_t *lines, int n, const req_t *r, int i, int64_t *price, int *crid)
{
    const user_t *u = r->user >= 0 ? &g_users[r->user] : NULL;
    int best = -1;
    int64_t best_price = 0;
    *crid = -1;
    for (int l = 0; l < n; l++) {
        const line_t *ln = &lines[l];
        if (ln->paused)
            continue;
        int cr = -1;
        for (int c = 0; c < ln->ncr && cr < 0; c++) {
            int fits = 0;
            for (int z = 0; z < r->imp[i].nsizes; z++)
                fits |= g_sizes[r->imp[i].sizes[z]].w == g_sizes[ln->cr[c].size].w &&
                        g_sizes[r->imp[i].sizes[z]].h == g_sizes[ln->cr[c].size].h;
            int blocked = (r->bcat && ln->cr[c].cat) || (r->badv && ln->cr[c].domain == 0);
            if (fits && !blocked)
                cr = c;
        }
        if (cr < 0)
            continue;
        if (ln->os && ln->os != r->os)
            continue;
        if (ln->country && r->country != 1)
            continue;
        if (ln->expr != 0 && (u == NULL || !expr_match(ln->expr, u)))
            continue;
        int any = 0, pct = 0;
        for (int p = 0; u && p < ln->nprem; p++) {
            int in = ln->prem_crowd[p] == 1 ? in_c1(u) : in_c2(u);
            if (in && (!any || ln->prem_pct[p] > pct))
                pct = ln->prem_pct[p];
            any |= in;
        }
        int64_t bp = 10000 + (int64_t)pct * 100;
        /* CPC: bid x pCTR x 1000 with the prior pCTR 1/1000 = the bid. */
        int64_t p = ((int64_t)ln->bid_fen * bp + 5000) / 10000;
        if (p <= 0 || p < r->imp[i].floor_fen)
            continue;
        if (best < 0 || p > best_price) {
            best = l;
            best_price = p;
            *crid = cr;
        }
    }
    *price = best_price;
    return best;
}

static void check_answer(const line_t *lines, int n, const req_t *r, const cp_bid_reply_t *rep,
                         const char *reqtext)
{
    int any = 0;
    int64_t want_price[2];
    int want_line[2], want_cr[2];
    for (int i = 0; i < r->nimps; i++) {
        want_line[i] = naive(lines, n, r, i, &want_price[i], &want_cr[i]);
        any |= want_line[i] >= 0;
    }
    if (!any) {
        if (rep->status != 204)
            fail_msg("want no bid, got %d %.*s\nrequest %s", rep->status, (int)rep->len,
                     rep->body ? rep->body : "", reqtext);
        return;
    }
    if (rep->status != 200)
        fail_msg("want a bid (imp 1 line %d, imp 2 line %d), got %d\nrequest %s", want_line[0],
                 r->nimps > 1 ? want_line[1] : -1, rep->status, reqtext);
    json_error_t je;
    json_t *j = json_loadb(rep->body, rep->len, 0, &je);
    assert_non_null(j);
    json_t *bids = json_object_get(json_array_get(json_object_get(j, "seatbid"), 0), "bid");
    int got[2] = {-1, -1}, got_cr[2] = {-1, -1};
    int64_t got_price[2] = {0, 0};
    size_t k;
    json_t *bd;
    json_array_foreach(bids, k, bd)
    {
        int imp = atoi(json_string_value(json_object_get(bd, "impid"))) - 1;
        assert_true(imp >= 0 && imp < r->nimps);
        const char *crid = json_string_value(json_object_get(bd, "crid"));
        assert_non_null(crid);
        assert_int_equal(sscanf(crid, "L%dc%d", &got[imp], &got_cr[imp]), 2);
        got_price[imp] = (int64_t)(json_real_value(json_object_get(bd, "price")) * 100 + 0.5);
        const char *nurl = json_string_value(json_object_get(bd, "nurl"));
        assert_non_null(nurl);
        assert_true(strncmp(nurl, "http://bid.test/openrtb2/win?t=", 31) == 0);
        assert_non_null(strstr(nurl, "${AUCTION_PRICE}"));
        const char *adm = json_string_value(json_object_get(bd, "adm"));
        assert_non_null(adm);
        assert_null(strstr(adm, "${CLICK_URL}"));
        assert_non_null(strstr(adm, "http://bid.test/openrtb2/click?t="));
        assert_non_null(strstr(adm, "http://bid.test/openrtb2/imp?t="));
    }
    for (int i = 0; i < r->nimps; i++) {
        if (got[i] != want_line[i] || got_price[i] != want_price[i] || got_cr[i] != want_cr[i])
            fail_msg("imp %d: got line %d creative %d at %lld fen, want line %d creative %d at "
                     "%lld fen\nrequest %s\nresponse %.*s",
                     i + 1, got[i], got_cr[i], (long long)got_price[i], want_line[i], want_cr[i],
                     (long long)want_price[i], reqtext, (int)rep->len, rep->body);
    }
    json_decref(j);
}

static void test_property(void **state)
{
    (void)state;
    uint64_t seed = 0x5eed0013;
    test_tmpdir(g_dir, sizeof g_dir, "activate-bid");
    cp_db_t *db = make_db(&seed);
    cp_activate_t *a = open_act(db);
    buf_t doc, rq;
    buf_init(&doc, 0);
    buf_init(&rq, 0);
    int cases = 0, bids = 0;
    for (int w = 0; w < NWORLDS; w++) {
        line_t lines[8];
        int n = 1 + (int)rnd(&seed, 8);
        for (int l = 0; l < n; l++)
            gen_line(&seed, &lines[l]);
        campaign_doc(&doc, lines, n);
        cp_error_t err = {0};
        cp_status st = cp_campaign_put_json(a, "prop", doc.data, doc.len, NULL, &err);
        if (st != CP_OK)
            fail_msg("put: %s: %s\n%s", cp_strerror(st), err.message, buf_cstr(&doc));
        for (int q = 0; q < NREQ; q++) {
            req_t r;
            gen_req(&seed, &r);
            request_doc(&rq, &r, cases);
            cp_bid_reply_t rep = CP_BID_REPLY_INIT;
            st = cp_rtb_bid(a, rq.data, rq.len, NOW_MS, 0, &rep, &err);
            if (st != CP_OK)
                fail_msg("bid: %s: %s\n%s", cp_strerror(st), err.message, buf_cstr(&rq));
            check_answer(lines, n, &r, &rep, buf_cstr(&rq));
            bids += rep.status == 200;
            cp_free(rep.body);
            cases++;
        }
    }
    assert_true(cases >= 500);
    /* The generator must exercise both answers. */
    assert_true(bids > cases / 5 && bids < cases - cases / 5);
    buf_free(&doc);
    buf_free(&rq);
    assert_int_equal(cp_activate_close(a, NULL), CP_OK);
    assert_int_equal(cp_db_close(db, NULL), CP_OK);
    test_rmtree(g_dir);
}

/* The token of a notice URL ("...?t=TOKEN&..."), copied into buf. */
static const char *url_token(const char *url, char *buf, size_t cap)
{
    const char *t = strstr(url, "?t=");
    assert_non_null(t);
    t += 3;
    size_t n = strcspn(t, "&");
    assert_true(n < cap);
    memcpy(buf, t, n);
    buf[n] = '\0';
    return buf;
}

/* One bid for `who` ("buyeruid" or "ifa"); 1 with the win and impression
 * notices sent, 0 when no bid. */
static int bid_and_show(cp_activate_t *a, int ifa, int n, int64_t now)
{
    char body[512];
    if (ifa)
        snprintf(
            body, sizeof body,
            "{\"id\":\"cap-%d\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":300,"
            "\"h\":250}}],\"app\":{\"id\":\"a\",\"bundle\":\"com.x\"},\"device\":{\"os\":"
            "\"iOS\",\"ifa\":\"6D92078A-8246-4BA4-AE5B-76104861E7DC\"}}",
            n);
    else
        snprintf(
            body, sizeof body,
            "{\"id\":\"cap-%d\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":300,"
            "\"h\":250}}],\"site\":{\"id\":\"s\"},\"user\":{\"buyeruid\":\"p1\"}}",
            n);
    cp_bid_reply_t rep = CP_BID_REPLY_INIT;
    cp_error_t err = {0};
    cp_status st = cp_rtb_bid(a, body, strlen(body), now, 0, &rep, &err);
    if (st != CP_OK)
        fail_msg("bid: %s: %s", cp_strerror(st), err.message);
    if (rep.status == 204)
        return 0;
    json_t *j = json_loadb(rep.body, rep.len, 0, NULL);
    assert_non_null(j);
    json_t *bd =
        json_array_get(json_object_get(json_array_get(json_object_get(j, "seatbid"), 0), "bid"), 0);
    /* 8.00 x 1.5: p1 is in high_value. */
    assert_int_equal((int64_t)(json_real_value(json_object_get(bd, "price")) * 100 + 0.5), 1200);
    char tok[LEDGER_TOKEN_MAX + 1];
    url_token(json_string_value(json_object_get(bd, "nurl")), tok, sizeof tok);
    int dup = -1;
    assert_int_equal(cp_rtb_notice(a, CP_NOTICE_WIN, tok, "5.00", 0, now, &dup, &err), CP_OK);
    assert_int_equal(dup, 0);
    assert_int_equal(cp_rtb_notice(a, CP_NOTICE_IMPRESSION, tok, NULL, 0, now, &dup, &err), CP_OK);
    assert_int_equal(dup, 0);
    /* A repeat changes nothing. */
    assert_int_equal(cp_rtb_notice(a, CP_NOTICE_IMPRESSION, tok, NULL, 0, now, &dup, &err), CP_OK);
    assert_int_equal(dup, 1);
    json_decref(j);
    cp_free(rep.body);
    return 1;
}

static void test_caps_across_ids(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "activate-caps");
    char data[600];
    snprintf(data, sizeof data, "%s/data", g_dir);
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = CP_OPEN_CREATE;
    cp_db_t *db = test_open_db(data, &o);
    cp_error_t err = {0};
    const char *schema = "{\"attributes\":[{\"name\":\"age\",\"type\":\"int\"}]}";
    assert_int_equal(cp_schema_load_json(db, schema, strlen(schema), &err), CP_OK);
    const char *tax = "{\"tags\":[{\"path\":\"interest/finance\"}]}";
    assert_int_equal(cp_taxonomy_load_json(db, tax, strlen(tax), &err), CP_OK);
    const char *users = "{\"id\":\"p1\",\"attrs\":{\"age\":30},\"tags\":[\"interest/finance\"]}\n"
                        "{\"id\":\"p2\",\"attrs\":{\"age\":50},\"tags\":[\"interest/finance\"]}\n";
    assert_int_equal(cp_load_ndjson_buf(db, users, strlen(users), NULL, NULL, &err), CP_OK);
    assert_int_equal(cp_crowd_create(db, "high_value", "age < 35", CP_CROWD_STATIC, NULL, &err),
                     CP_OK);
    /* p1's phone shows up with its IDFA. */
    const char *ident = "{\"userId\":\"p1\",\"context\":{\"os\":{\"name\":\"iOS\"},\"device\":{"
                        "\"advertisingId\":\"6D92078A-8246-4BA4-AE5B-76104861E7DC\"}}}";
    cp_status st = cp_ingest_segment(db, CP_EVENT_IDENTIFY, ident, strlen(ident), NULL, &err);
    if (st != CP_OK)
        fail_msg("identify: %s", err.message);
    assert_int_equal(cp_checkpoint(db, &err), CP_OK);
    uint32_t o1, o2;
    assert_int_equal(cp_user_ordinal(db, "user_id", "p1", &o1, &err), CP_OK);
    assert_int_equal(cp_user_ordinal(db, "idfa", "6D92078A-8246-4BA4-AE5B-76104861E7DC", &o2, &err),
                     CP_OK);
    assert_int_equal(o1, o2);

    cp_activate_t *a = open_act(db);
    const char *doc =
        "{\"id\":\"spring-sale\",\"advertiser\":\"acme\",\"budget\":{\"total\":100000,"
        "\"daily\":5000,\"currency\":\"CNY\"},\"schedule\":{\"start\":\"2026-01-01\",\"end\":"
        "\"2027-12-31\",\"timezone\":\"Asia/Shanghai\"},\"pacing\":\"asap\",\"lines\":[{\"id\":"
        "\"retarget\",\"billing\":\"cpm\",\"bid\":8.00,\"targeting\":\"tag:interest/finance AND "
        "age BETWEEN 25 AND 40\",\"premiums\":[{\"crowd\":\"high_value\",\"pct\":50}],\"caps\":[{"
        "\"count\":3,\"per\":\"day\"}],\"creatives\":[{\"id\":\"c1\",\"w\":300,\"h\":250,"
        "\"adomain\":[\"acme.com\"],\"adm\":\"<a href=\\\"${CLICK_URL}\\\"><img "
        "src=\\\"https://cdn.acme.com/c1.png\\\"></a>\"}]}]}";
    st = cp_campaign_put_json(a, "spring-sale", doc, strlen(doc), NULL, &err);
    if (st != CP_OK)
        fail_msg("put: %s", err.message);
    /* Two imps of one page: a capped line bids on one of them only. */
    const char *two = "{\"id\":\"two\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{"
                      "\"w\":300,\"h\":250}},{\"id\":\"2\",\"banner\":{\"w\":300,\"h\":250}}],"
                      "\"user\":{\"buyeruid\":\"p1\"}}";
    cp_bid_reply_t two_rep = CP_BID_REPLY_INIT;
    assert_int_equal(cp_rtb_bid(a, two, strlen(two), NOW_MS, CP_BID_DEBUG, &two_rep, &err), CP_OK);
    assert_int_equal(two_rep.status, 200);
    json_t *tj = json_loadb(two_rep.body, two_rep.len, 0, NULL);
    assert_non_null(tj);
    assert_int_equal(
        json_array_size(json_object_get(json_array_get(json_object_get(tj, "seatbid"), 0), "bid")),
        1);
    json_t *dbg = json_object_get(json_object_get(tj, "ext"), "debug");
    assert_int_equal(json_array_size(dbg), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(dbg, 1), "ledger")),
                        "cap_line");
    json_decref(tj);
    cp_free(two_rep.body);

    /* Three impressions under two ids of one person, then the cap. */
    int64_t now = NOW_MS;
    assert_int_equal(bid_and_show(a, 0, 1, now), 1);
    assert_int_equal(bid_and_show(a, 1, 2, now + 1000), 1);
    assert_int_equal(bid_and_show(a, 0, 3, now + 2000), 1);
    assert_int_equal(bid_and_show(a, 1, 4, now + 3000), 0);
    assert_int_equal(bid_and_show(a, 0, 5, now + 4000), 0);

    /* ?debug=1 says why. */
    const char *body = "{\"id\":\"dbg\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{"
                       "\"w\":300,\"h\":250}}],\"user\":{\"buyeruid\":\"p1\"}}";
    cp_bid_reply_t rep = CP_BID_REPLY_INIT;
    assert_int_equal(cp_rtb_bid(a, body, strlen(body), now + 5000, CP_BID_DEBUG, &rep, &err),
                     CP_OK);
    assert_int_equal(rep.status, 200);
    assert_non_null(strstr(rep.body, "\"reason\":\"ledger\""));
    assert_non_null(strstr(rep.body, "\"ledger\":\"cap_line\""));
    cp_free(rep.body);

    /* Kept across a reopen. */
    assert_int_equal(cp_activate_close(a, &err), CP_OK);
    a = open_act(db);
    assert_int_equal(bid_and_show(a, 1, 6, now + 6000), 0);
    /* The next local day (Asia/Shanghai) starts a new count. */
    assert_int_equal(bid_and_show(a, 1, 7, now + 24 * 3600 * 1000LL), 1);

    assert_int_equal(cp_activate_close(a, &err), CP_OK);
    assert_int_equal(cp_db_close(db, NULL), CP_OK);
    test_rmtree(g_dir);
}

static int bid_status(cp_activate_t *a, const char *body, unsigned flags, char **out)
{
    cp_bid_reply_t rep = CP_BID_REPLY_INIT;
    cp_error_t err = {0};
    cp_status st = cp_rtb_bid(a, body, strlen(body), NOW_MS, flags, &rep, &err);
    if (st != CP_OK)
        fail_msg("bid: %s: %s", cp_strerror(st), err.message);
    if (out)
        *out = rep.body;
    else
        cp_free(rep.body);
    return rep.status;
}

/* Targeting follows data changes through the change feed at the next tick
 * past refresh_ms; COPPA and GDPR requests are anonymous; a request whose
 * cur does not allow CNY gets no bid. */
static void test_refresh_privacy_currency(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "activate-refresh");
    char data[600];
    snprintf(data, sizeof data, "%s/data", g_dir);
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = CP_OPEN_CREATE;
    cp_db_t *db = test_open_db(data, &o);
    cp_error_t err = {0};
    const char *tax = "{\"tags\":[{\"path\":\"interest/finance\"}]}";
    assert_int_equal(cp_taxonomy_load_json(db, tax, strlen(tax), &err), CP_OK);
    const char *u1 = "{\"id\":\"q1\",\"tags\":[\"interest/finance\"]}\n{\"id\":\"q2\"}\n";
    assert_int_equal(cp_load_ndjson_buf(db, u1, strlen(u1), NULL, NULL, &err), CP_OK);
    cp_activate_t *a = open_act(db);
    const char *doc =
        "{\"id\":\"fin\",\"advertiser\":\"acme\",\"schedule\":{\"start\":\"2026-01-01\"},"
        "\"pacing\":\"asap\",\"lines\":[{\"id\":\"l\",\"billing\":\"cpm\",\"bid\":3.00,"
        "\"targeting\":\"tag:interest/finance\",\"creatives\":[{\"id\":\"c\",\"w\":300,"
        "\"h\":250,\"adomain\":[\"acme.com\"],\"adm\":\"${AUCTION_ID}|${AUCTION_IMP_ID}|${AUCTION_"
        "PRICE}|${OTHER}\"}]}]}";
    cp_status st = cp_campaign_put_json(a, "fin", doc, strlen(doc), NULL, &err);
    if (st != CP_OK)
        fail_msg("put: %s", err.message);
    const char *for_q1 = "{\"id\":\"r1\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{"
                         "\"w\":300,\"h\":250}}],\"user\":{\"buyeruid\":\"q1\"}}";
    const char *for_q2 = "{\"id\":\"r2\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{"
                         "\"w\":300,\"h\":250}}],\"user\":{\"buyeruid\":\"q2\"}}";
    char *body = NULL;
    assert_int_equal(bid_status(a, for_q1, 0, &body), 200);
    /* Our macros expanded, the exchange's left alone. */
    assert_non_null(strstr(body, "r1|1|${AUCTION_PRICE}|${OTHER}"));
    cp_free(body);
    assert_int_equal(bid_status(a, for_q2, 0, NULL), 204);

    /* q2 takes the tag: not seen until a tick past refresh_ms. */
    const char *u2 = "{\"id\":\"q2\",\"tags\":[\"interest/finance\"]}\n";
    assert_int_equal(cp_load_ndjson_buf(db, u2, strlen(u2), NULL, NULL, &err), CP_OK);
    assert_int_equal(cp_feed_flush(db, &err), CP_OK);
    assert_int_equal(bid_status(a, for_q2, 0, NULL), 204);
    assert_int_equal(cp_activate_tick(a, time_now_ms() + 5000, &err), CP_OK);
    assert_int_equal(bid_status(a, for_q2, 0, NULL), 200);

    /* An attribute alone (no tag or crowd change in the commit) refreshes
     * too. */
    const char *schema = "{\"attributes\":[{\"name\":\"age\",\"type\":\"int\"}]}";
    assert_int_equal(cp_schema_load_json(db, schema, strlen(schema), &err), CP_OK);
    const char *old =
        "{\"id\":\"old\",\"advertiser\":\"acme\",\"schedule\":{\"start\":\"2026-01-01\"},"
        "\"lines\":[{\"id\":\"l\",\"billing\":\"cpm\",\"bid\":2.00,\"targeting\":\"age >= 50\","
        "\"creatives\":[{\"id\":\"w\",\"w\":728,\"h\":90,\"adomain\":[\"acme.com\"],"
        "\"adm\":\"x\"}]}]}";
    st = cp_campaign_put_json(a, "old", old, strlen(old), NULL, &err);
    if (st != CP_OK)
        fail_msg("put: %s", err.message);
    const char *wide = "{\"id\":\"r6\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{"
                       "\"w\":728,\"h\":90}}],\"user\":{\"buyeruid\":\"q2\"}}";
    assert_int_equal(bid_status(a, wide, 0, NULL), 204);
    const char *aged = "{\"id\":\"q2\",\"attrs\":{\"age\":61}}\n";
    assert_int_equal(cp_load_ndjson_buf(db, aged, strlen(aged), NULL, NULL, &err), CP_OK);
    assert_int_equal(cp_feed_flush(db, &err), CP_OK);
    assert_int_equal(cp_activate_tick(a, time_now_ms() + 10000, &err), CP_OK);
    assert_int_equal(bid_status(a, wide, 0, NULL), 200);

    /* COPPA and GDPR: no OneID lookup, so no crowd targeting. */
    const char *coppa = "{\"id\":\"r3\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{"
                        "\"w\":300,\"h\":250}}],\"user\":{\"buyeruid\":\"q1\"},\"regs\":{"
                        "\"coppa\":1}}";
    const char *gdpr = "{\"id\":\"r4\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{"
                       "\"w\":300,\"h\":250}}],\"user\":{\"buyeruid\":\"q1\"},\"regs\":{"
                       "\"gdpr\":1}}";
    assert_int_equal(bid_status(a, coppa, 0, NULL), 204);
    assert_int_equal(bid_status(a, gdpr, 0, NULL), 204);
    assert_int_equal(bid_status(a, coppa, CP_BID_DEBUG, &body), 200);
    assert_non_null(strstr(body, "\"reason\":\"crowd\""));
    cp_free(body);

    /* No cur means USD only: no bid, and debug says why. */
    const char *usd = "{\"id\":\"r5\",\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":300,"
                      "\"h\":250}}],\"user\":{\"buyeruid\":\"q1\"}}";
    assert_int_equal(bid_status(a, usd, 0, NULL), 204);
    assert_int_equal(bid_status(a, usd, CP_BID_DEBUG, &body), 200);
    assert_non_null(strstr(body, "\"reason\":\"floor\""));
    assert_non_null(strstr(body, "CNY"));
    cp_free(body);

    assert_int_equal(cp_activate_close(a, &err), CP_OK);
    assert_int_equal(cp_db_close(db, NULL), CP_OK);
    test_rmtree(g_dir);
}

/* A CPC line bids bid x pCTR x 1000 with pCTR smoothed from its own
 * impressions and clicks: the prior alone first (1.00 per click -> 1.00
 * CPM), then (1 + 1) / (1 + 1000) after an impression with a click. */
static void test_cpc_ctr(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "activate-cpc");
    char data[600];
    snprintf(data, sizeof data, "%s/data", g_dir);
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = CP_OPEN_CREATE;
    cp_db_t *db = test_open_db(data, &o);
    cp_error_t err = {0};
    const char *u = "{\"id\":\"c1\"}\n";
    assert_int_equal(cp_load_ndjson_buf(db, u, strlen(u), NULL, NULL, &err), CP_OK);
    cp_activate_t *a = open_act(db);
    const char *doc =
        "{\"id\":\"cpc\",\"advertiser\":\"acme\",\"schedule\":{\"start\":\"2026-01-01\"},"
        "\"lines\":[{\"id\":\"l\",\"billing\":\"cpc\",\"bid\":1.00,\"creatives\":[{\"id\":"
        "\"c\",\"w\":300,\"h\":250,\"adomain\":[\"acme.com\"],\"adm\":\"x\"}]}]}";
    cp_status st = cp_campaign_put_json(a, "cpc", doc, strlen(doc), NULL, &err);
    if (st != CP_OK)
        fail_msg("put: %s", err.message);
    const char *req = "{\"id\":\"r\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"banner\":{"
                      "\"w\":300,\"h\":250}}],\"user\":{\"buyeruid\":\"c1\"}}";
    int64_t prices[2];
    for (int round = 0; round < 2; round++) {
        cp_bid_reply_t rep = CP_BID_REPLY_INIT;
        assert_int_equal(cp_rtb_bid(a, req, strlen(req), NOW_MS, 0, &rep, &err), CP_OK);
        assert_int_equal(rep.status, 200);
        json_t *j = json_loadb(rep.body, rep.len, 0, NULL);
        json_t *bd = json_array_get(
            json_object_get(json_array_get(json_object_get(j, "seatbid"), 0), "bid"), 0);
        prices[round] = (int64_t)(json_real_value(json_object_get(bd, "price")) * 100 + 0.5);
        char tok[LEDGER_TOKEN_MAX + 1];
        url_token(json_string_value(json_object_get(bd, "nurl")), tok, sizeof tok);
        assert_int_equal(cp_rtb_notice(a, CP_NOTICE_IMPRESSION, tok, NULL, 0, NOW_MS, NULL, &err),
                         CP_OK);
        assert_int_equal(cp_rtb_notice(a, CP_NOTICE_CLICK, tok, NULL, 0, NOW_MS, NULL, &err),
                         CP_OK);
        json_decref(j);
        cp_free(rep.body);
    }
    assert_int_equal(prices[0], 100);
    assert_int_equal(prices[1], 100 * 1000 * 2 / 1001); /* 199 fen */
    assert_int_equal(cp_activate_close(a, &err), CP_OK);
    assert_int_equal(cp_db_close(db, NULL), CP_OK);
    test_rmtree(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_property),
        cmocka_unit_test(test_caps_across_ids),
        cmocka_unit_test(test_refresh_privacy_currency),
        cmocka_unit_test(test_cpc_ctr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
