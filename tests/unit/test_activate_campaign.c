/* test_activate_campaign.c — the campaign document: the example
 * parses exactly as written, the canonical form round-trips byte for byte,
 * money is exact to the fen (and more decimals are refused, never rounded),
 * and every bad document is refused with the JSON path of its field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "activate/campaign.h"

/* The example of docs/activation.md and the issue, verbatim. */
static const char EXAMPLE[] =
    "{\"id\":\"spring-sale\",\"advertiser\":\"acme\",\"budget\":{\"total\":100000,\"daily\":5000,"
    "\"currency\":\"CNY\"},\n"
    " \"schedule\":{\"start\":\"2026-12-01\",\"end\":\"2026-12-31\",\"timezone\":\"Asia/"
    "Shanghai\"},\"pacing\":\"even\",\n"
    " \"lines\":[{\"id\":\"retarget\",\"billing\":\"cpm\",\"bid\":8.00,\n"
    "   \"targeting\":\"tag:interest/finance AND age BETWEEN 25 AND 40\",\n"
    "   \"premiums\":[{\"crowd\":\"high_value\",\"pct\":50}],\n"
    "   \"caps\":[{\"count\":3,\"per\":\"day\"}],\n"
    "   \"creatives\":[{\"id\":\"c1\",\"w\":300,\"h\":250,\"adomain\":[\"acme.com\"],\"adm\":\"<a "
    "href=\\\"${CLICK_URL}\\\"><img src=\\\"https://cdn.acme.com/c1.png\\\"></a>\"}]}]}";

/* Every field the document has, for the round trip. */
static const char FULL[] =
    "{\"id\":\"s11-x\",\"advertiser\":\"阿克米 \\\"Acme\\\" 公司\",\"paused\":true,"
    "\"budget\":{\"total\":99999.99,\"daily\":0.1},"
    "\"schedule\":{\"start\":\"2026-03-01\",\"timezone\":\"America/New_York\","
    "\"dayparting\":{\"mon\":[[9,12],[11,18]],\"sat\":[[0,24]],\"sun\":[[22,24]]}},"
    "\"pacing\":\"asap\",\"caps\":[{\"count\":10,\"per\":\"week\"},{\"count\":20,\"per\":"
    "\"lifetime\"}],"
    "\"lines\":[{\"id\":\"cpc\",\"billing\":\"cpc\",\"bid\":0.35,\"max_cpm\":20,"
    "\"targeting\":\"crowd:high_value OR tag:兴趣/理财\","
    "\"request\":{\"site_cats\":[\"IAB2\",\"IAB2-3\"],\"device_types\":[4,5],\"os\":[\"iOS\"],"
    "\"countries\":[\"chn\"],\"regions\":[\"Zhejiang\"],\"cities\":[\"杭州\"],\"formats\":"
    "[\"banner\",\"video\"],\"sizes\":[[300,250],[728,90]],\"deals\":[\"d-1\"],\"app_only\":true},"
    "\"premiums\":[{\"crowd\":\"high_value\",\"pct\":50},{\"crowd\":\"流失\",\"pct\":-20}],"
    "\"caps\":[{\"count\":1,\"per\":\"hour\"}],"
    "\"creatives\":[{\"id\":\"b\",\"w\":300,\"h\":250,\"adomain\":[\"ACME.com\"],\"cat\":"
    "[\"IAB2\"],\"iurl\":\"https://cdn.acme.com/b.png\",\"adm\":\"<b>\\u0001\\t</b>\"},"
    "{\"id\":\"v\",\"format\":\"video\",\"w\":640,\"h\":360,\"adomain\":[\"acme.com\"],\"mimes\":"
    "[\"video/mp4\"],\"duration\":15,\"adm\":\"<VAST version=\\\"4.0\\\"/>\"}]},"
    "{\"id\":\"cpa\",\"paused\":false,\"billing\":\"cpa\",\"max_cpm\":12.5,\"goal\":30,"
    "\"creatives\":[{\"id\":\"n\",\"format\":\"native\",\"adomain\":[\"acme.com\"],\"adm\":"
    "\"{\\\"native\\\":{}}\"}]},"
    "{\"id\":\"cps\",\"billing\":\"cps\",\"max_cpm\":5,\"goal\":5.5,\"creatives\":[{\"id\":\"a\","
    "\"format\":\"audio\",\"adomain\":[\"acme.com\"],\"mimes\":[\"audio/mp4\"],\"duration\":30,"
    "\"adm\":\"<VAST/>\"}]},"
    "{\"id\":\"cpd\",\"billing\":\"cpd\",\"bid\":50000,\"max_cpm\":100,\"creatives\":[{\"id\":"
    "\"c\","
    "\"w\":1,\"h\":1,\"adomain\":[\"acme.com\"],\"adm\":\"x\"}]}]}";

static act_campaign_t *parse_ok(const char *json, const char *id)
{
    act_campaign_t *c = NULL;
    cp_error_t err = {0};
    cp_status st = campaign_parse(json, strlen(json), id, &c, &err);
    if (st != CP_OK)
        fail_msg("campaign_parse: %s: %s", cp_strerror(st), err.message);
    return c;
}

static char *to_json(const act_campaign_t *c)
{
    char *out = NULL;
    cp_error_t err = {0};
    if (campaign_to_json(c, &out, &err) != CP_OK)
        fail_msg("campaign_to_json: %s", err.message);
    return out;
}

static void test_example(void **state)
{
    (void)state;
    act_campaign_t *c = parse_ok(EXAMPLE, NULL);
    assert_string_equal(c->id, "spring-sale");
    assert_string_equal(c->advertiser, "acme");
    assert_int_equal(c->total_fen, 10000000);
    assert_int_equal(c->daily_fen, 500000);
    assert_string_equal(c->currency, "CNY");
    assert_string_equal(c->timezone, "Asia/Shanghai");
    assert_non_null(c->tz);
    assert_int_equal(c->start_ms, 1796054400000LL); /* 2026-12-01T00:00+08:00 */
    assert_int_equal(c->end_ms, 1798732800000LL);   /* 2027-01-01T00:00+08:00, exclusive */
    assert_int_equal(c->pacing, ACT_PACE_EVEN);
    for (size_t i = 0; i < sizeof c->hours; i++)
        assert_int_equal(c->hours[i], 0xff);
    assert_int_equal(c->ncaps, 0);
    assert_int_equal(c->paused, 0);
    assert_int_equal(c->nlines, 1);
    act_line_t *l = &c->lines[0];
    assert_ptr_equal(l->campaign, c);
    assert_string_equal(l->id, "retarget");
    assert_int_equal(l->billing, ACT_BILL_CPM);
    assert_int_equal(l->bid_fen, 800);
    assert_int_equal(l->max_cpm_fen, 0);
    assert_string_equal(l->targeting, "tag:interest/finance AND age BETWEEN 25 AND 40");
    assert_int_equal(l->npremiums, 1);
    assert_string_equal(l->premiums[0].crowd, "high_value");
    assert_int_equal(l->premiums[0].pct, 50);
    assert_int_equal(l->ncaps, 1);
    assert_int_equal(l->caps[0].count, 3);
    assert_int_equal(l->caps[0].per, ACT_PER_DAY);
    assert_int_equal(l->req.formats, 0);
    assert_int_equal(l->ncreatives, 1);
    act_creative_t *k = &l->creatives[0];
    assert_string_equal(k->id, "c1");
    assert_int_equal(k->format, ACT_FMT_BANNER);
    assert_int_equal(k->w, 300);
    assert_int_equal(k->h, 250);
    assert_int_equal(k->nadomain, 1);
    assert_string_equal(k->adomain[0], "acme.com");
    assert_null(k->iurl);
    assert_string_equal(k->adm,
                        "<a href=\"${CLICK_URL}\"><img src=\"https://cdn.acme.com/c1.png\"></a>");
    char *j = to_json(c);
    assert_non_null(strstr(j, "\"bid\":8.00,"));
    assert_non_null(strstr(j, "\"total\":100000.00,\"daily\":5000.00,\"currency\":\"CNY\""));
    assert_non_null(strstr(j, "\"start\":\"2026-12-01\",\"end\":\"2026-12-31\""));
    free(j);
    campaign_free(c);
}

static void round_trip(const char *doc)
{
    act_campaign_t *c = parse_ok(doc, NULL);
    c->version = 7;
    c->updated_ms = 1796054400123LL;
    char *a = to_json(c);
    act_campaign_t *d = parse_ok(a, NULL);
    assert_int_equal(d->version, 7);
    assert_int_equal(d->updated_ms, 1796054400000LL); /* seconds in the document */
    char *b = to_json(d);
    assert_string_equal(a, b);
    /* Valid JSON that jansson reads back. */
    json_error_t je;
    json_t *v = json_loads(a, 0, &je);
    if (v == NULL)
        fail_msg("canonical form is not JSON: %s: %s", je.text, a);
    json_decref(v);
    campaign_free(c);
    campaign_free(d);
    free(a);
    free(b);
}

static void test_round_trip(void **state)
{
    (void)state;
    round_trip(EXAMPLE);
    round_trip(FULL);
}

static void test_full_document(void **state)
{
    (void)state;
    act_campaign_t *c = parse_ok(FULL, NULL);
    assert_string_equal(c->id, "s11-x");
    assert_string_equal(c->advertiser, "阿克米 \"Acme\" 公司");
    assert_int_equal(c->paused, 1);
    assert_int_equal(c->total_fen, 9999999);
    assert_int_equal(c->daily_fen, 10);
    assert_string_equal(c->currency, "CNY");
    assert_int_equal(c->end_ms, 0);
    assert_int_equal(c->start_ms, 1772341200000LL); /* 2026-03-01T00:00-05:00 */
    assert_int_equal(c->pacing, ACT_PACE_ASAP);
    assert_int_equal(c->ncaps, 2);
    assert_int_equal(c->caps[1].per, ACT_PER_LIFETIME);
    /* Dayparting: Monday 9..18 (overlapping ranges merged), Saturday all
     * day, Sunday 22..24, nothing else. */
    for (int bit = 0; bit < 168; bit++) {
        int on = (c->hours[bit / 8] >> (bit % 8)) & 1;
        int day = bit / 24, h = bit % 24;
        int want = (day == 0 && h >= 9 && h < 18) || day == 5 || (day == 6 && h >= 22);
        if (on != want)
            fail_msg("hour of week %d: %d, want %d", bit, on, want);
    }
    assert_int_equal(c->nlines, 4);
    act_line_t *l = &c->lines[0];
    assert_int_equal(l->billing, ACT_BILL_CPC);
    assert_int_equal(l->bid_fen, 35);
    assert_int_equal(l->max_cpm_fen, 2000);
    assert_int_equal(l->req.nsite_cats, 2);
    assert_int_equal(l->req.ndevice_types, 2);
    assert_int_equal(l->req.device_types[1], 5);
    assert_string_equal(l->req.countries[0], "CHN"); /* upper-cased */
    assert_string_equal(l->req.cities[0], "杭州");
    assert_int_equal(l->req.formats, (1u << ACT_FMT_BANNER) | (1u << ACT_FMT_VIDEO));
    assert_int_equal(l->req.nsizes, 2);
    assert_int_equal(l->req.sizes[1].w, 728);
    assert_int_equal(l->req.app_only, 1);
    assert_int_equal(l->premiums[1].pct, -20);
    assert_string_equal(l->creatives[0].adomain[0], "acme.com"); /* lower-cased */
    assert_string_equal(l->creatives[0].adm, "<b>\001\t</b>");
    assert_int_equal(l->creatives[1].format, ACT_FMT_VIDEO);
    assert_int_equal(l->creatives[1].duration, 15);
    assert_int_equal(c->lines[1].billing, ACT_BILL_CPA);
    assert_int_equal(c->lines[1].goal_fen, 3000);
    assert_int_equal(c->lines[1].max_cpm_fen, 1250);
    assert_int_equal(c->lines[1].bid_fen, 0);
    assert_int_equal(c->lines[1].creatives[0].format, ACT_FMT_NATIVE);
    assert_int_equal(c->lines[1].creatives[0].w, 0);
    assert_int_equal(c->lines[2].goal_fen, 550); /* 5.5 % = 550 basis points */
    assert_int_equal(c->lines[2].creatives[0].format, ACT_FMT_AUDIO);
    assert_int_equal(c->lines[3].billing, ACT_BILL_CPD);
    assert_int_equal(c->lines[3].bid_fen, 5000000);
    char *j = to_json(c);
    assert_non_null(strstr(j, "\"dayparting\":{\"mon\":[[9,18]],\"tue\":[],"));
    assert_non_null(strstr(j, "\"sat\":[[0,24]],\"sun\":[[22,24]]}"));
    assert_non_null(strstr(j, "\"adm\":\"<b>\\u0001\\t</b>\""));
    assert_non_null(strstr(j, "\"end\":null"));
    free(j);
    campaign_free(c);
}

/* A document whose line bids `bid` (the JSON text of the number). */
static cp_status parse_bid(const char *bid, int64_t *fen, cp_error_t *err)
{
    char doc[512];
    snprintf(doc, sizeof doc,
             "{\"id\":\"m\",\"advertiser\":\"a\",\"schedule\":{\"start\":\"2026-12-01\"},"
             "\"lines\":[{\"id\":\"l\",\"bid\":%s,\"creatives\":[{\"id\":\"c\",\"w\":1,\"h\":1,"
             "\"adomain\":[\"a.com\"],\"adm\":\"x\"}]}]}",
             bid);
    act_campaign_t *c = NULL;
    cp_status st = campaign_parse(doc, strlen(doc), NULL, &c, err);
    *fen = st == CP_OK ? c->lines[0].bid_fen : -1;
    campaign_free(c);
    return st;
}

static void test_money(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t fen; /* -1: refused */
    } cases[] = {
        {"0.1", 10},      {"8.00", 800},
        {"8", 800},       {"99.99", 9999},
        {"0.07", 7},      {"0.29", 29},
        {"1.15", 115},    {"0.01", 1},
        {"1e2", 10000},   {"12345678.91", 1234567891},
        {"0.005", -1},    {"1.005", -1},
        {"0.001", -1},    {"99.999", -1},
        {"0", -1},        {"0.00", -1},
        {"-1", -1},       {"-0.5", -1},
        {"1e-3", -1},     {"100000000000.01", -1},
        {"\"8.00\"", -1}, {"true", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t fen;
        cp_error_t err = {0};
        cp_status st = parse_bid(cases[i].text, &fen, &err);
        if (cases[i].fen < 0) {
            if (st != CP_EINVAL)
                fail_msg("bid %s: %s, want refused", cases[i].text, cp_strerror(st));
            assert_non_null(strstr(err.message, "lines[0].bid: "));
        } else if (st != CP_OK || fen != cases[i].fen) {
            fail_msg("bid %s: %s (%s), fen %lld, want %lld", cases[i].text, cp_strerror(st),
                     err.message, (long long)fen, (long long)cases[i].fen);
        }
    }
    /* Every amount with two decimals up to 100 yuan, and a spread of large
     * ones, reads back to the exact fen. */
    for (int64_t k = 1; k <= 10000; k += (k < 2000 ? 1 : 37)) {
        char text[32];
        int64_t fen;
        cp_error_t err = {0};
        snprintf(text, sizeof text, "%lld.%02lld", (long long)(k / 100), (long long)(k % 100));
        if (parse_bid(text, &fen, &err) != CP_OK || fen != k)
            fail_msg("bid %s: fen %lld (%s)", text, (long long)fen, err.message);
    }
    for (int64_t k = 999999999999LL; k > 0; k /= 7) {
        char text[32];
        int64_t fen;
        cp_error_t err = {0};
        snprintf(text, sizeof text, "%lld.%02lld", (long long)(k / 100), (long long)(k % 100));
        if (parse_bid(text, &fen, &err) != CP_OK || fen != k)
            fail_msg("bid %s: fen %lld (%s)", text, (long long)fen, err.message);
    }
}

/* ------------------------------------------------------ bad documents */

/* Sets (or with value NULL removes) the member at `path` of doc:
 * "lines[0].creatives[0].w". */
static void mutate(json_t *doc, const char *path, const char *value)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = doc;
    char *tok = buf;
    for (;;) {
        char *dot = strchr(tok, '.');
        if (dot != NULL)
            *dot = '\0';
        char *br = strchr(tok, '[');
        long idx = -1;
        if (br != NULL) {
            idx = strtol(br + 1, NULL, 10);
            *br = '\0';
        }
        if (dot == NULL && idx < 0) {
            if (value == NULL) {
                json_object_del(cur, tok);
            } else {
                json_error_t je;
                json_t *v = json_loads(value, JSON_DECODE_ANY, &je);
                if (v == NULL)
                    fail_msg("bad test value %s", value);
                json_object_set_new(cur, tok, v);
            }
            return;
        }
        cur = json_object_get(cur, tok);
        if (idx >= 0)
            cur = json_array_get(cur, (size_t)idx);
        if (cur == NULL)
            fail_msg("bad test path %s", path);
        if (dot == NULL)
            fail_msg("bad test path %s (ends in an index)", path);
        tok = dot + 1;
    }
}

static const struct bad {
    const char *path;  /* field to change */
    const char *value; /* its new JSON value; NULL removes it */
    cp_status code;
    const char *msg; /* the start of the message */
} BAD[] = {
    {"idd", "\"x\"", CP_EINVAL, "idd: unknown field"},
    {"lines[0].targting", "\"x\"", CP_EINVAL, "lines[0].targting: unknown field"},
    {"lines[0].creatives[0].adomian", "[]", CP_EINVAL, "lines[0].creatives[0].adomian: unknown"},
    {"budget.totl", "1", CP_EINVAL, "budget.totl: unknown field"},
    {"id", NULL, CP_EINVAL, "id: required"},
    {"id", "\"a b\"", CP_EINVAL, "id: \"a b\" is not an id"},
    {"id",
     "\"" /* 65 bytes */ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
     CP_ELIMIT, "id: longer than 64 bytes"},
    {"id", "7", CP_EINVAL, "id: must be a string"},
    {"advertiser", NULL, CP_EINVAL, "advertiser: required"},
    {"advertiser", "\"\"", CP_EINVAL, "advertiser: must not be empty"},
    {"advertiser", "\"a\\nb\"", CP_EINVAL, "advertiser: must not contain control"},
    {"paused", "1", CP_EINVAL, "paused: must be true or false"},
    {"budget", "[]", CP_EINVAL, "budget: must be an object"},
    {"budget.total", "0", CP_EINVAL, "budget.total: must be more than 0"},
    {"budget.total", "-5", CP_EINVAL, "budget.total: must be more than 0"},
    {"budget.daily", "0.005", CP_EINVAL, "budget.daily: 0.005 has more than 2"},
    {"budget.daily", "200000", CP_EINVAL, "budget.daily: more than budget.total"},
    {"budget.currency", "\"cny\"", CP_EINVAL, "budget.currency: must be an ISO 4217"},
    {"schedule", NULL, CP_EINVAL, "schedule: required"},
    {"schedule.start", NULL, CP_EINVAL, "schedule.start: required"},
    {"schedule.start", "\"2026-13-01\"", CP_EINVAL, "schedule.start: \"2026-13-01\" is not a date"},
    {"schedule.start", "\"2026-02-29\"", CP_EINVAL, "schedule.start: \"2026-02-29\" is not a date"},
    {"schedule.start", "\"2026-12-1\"", CP_EINVAL, "schedule.start: \"2026-12-1\" is not a date"},
    {"schedule.end", "\"2026-11-30\"", CP_EINVAL, "schedule.end: \"2026-11-30\" is before"},
    {"schedule.timezone", "\"Asia/Shanghaj\"", CP_EINVAL, "schedule.timezone: unknown time zone"},
    {"schedule.timezone", "\"../../etc/passwd\"", CP_EINVAL, "schedule.timezone: unknown time"},
    {"schedule.dayparting", "{}", CP_EINVAL, "schedule.dayparting: no hour is on"},
    {"schedule.dayparting", "{\"monday\":[[9,18]]}", CP_EINVAL,
     "schedule.dayparting.monday: unknown field"},
    {"schedule.dayparting", "{\"mon\":[[18,9]]}", CP_EINVAL,
     "schedule.dayparting.mon[0]: [18,9] ends before"},
    {"schedule.dayparting", "{\"mon\":[[9,25]]}", CP_EINVAL,
     "schedule.dayparting.mon[0][1]: must be an integer from 1 to 24"},
    {"schedule.dayparting", "{\"mon\":[9,18]}", CP_EINVAL,
     "schedule.dayparting.mon[0]: must be an hour range"},
    {"pacing", "\"fast\"", CP_EINVAL, "pacing: \"fast\" is not one of \"even\", \"asap\""},
    {"caps", "[{\"count\":0,\"per\":\"day\"}]", CP_EINVAL,
     "caps[0].count: must be a positive integer"},
    {"caps", "[{\"count\":1,\"per\":\"month\"}]", CP_EINVAL, "caps[0].per: \"month\" is not one"},
    {"caps", "[{\"count\":1,\"per\":\"day\"},{\"count\":2,\"per\":\"day\"}]", CP_EINVAL,
     "caps[1].per: a cap per day is already given"},
    {"caps", "[3]", CP_EINVAL, "caps[0]: must be an object"},
    {"lines", "[]", CP_EINVAL, "lines: required: at least one line item"},
    {"lines", NULL, CP_EINVAL, "lines: required"},
    {"lines", "{}", CP_EINVAL, "lines: must be an array"},
    {"lines[0].id", NULL, CP_EINVAL, "lines[0].id: required"},
    {"lines[0].billing", "\"cpx\"", CP_EINVAL, "lines[0].billing: \"cpx\" is not one of"},
    {"lines[0].bid", NULL, CP_EINVAL, "lines[0].bid: required"},
    {"lines[0].bid", "8.001", CP_EINVAL, "lines[0].bid: 8.001 has more than 2"},
    {"lines[0].max_cpm", "10", CP_EINVAL, "lines[0].max_cpm: not for cpm lines"},
    {"lines[0].goal", "10", CP_EINVAL, "lines[0].goal: only for cpa and cps lines"},
    {"lines[0].targeting", "\"tag:a AND (\"", CP_EINVAL, "lines[0].targeting: "},
    {"lines[0].targeting", "\"age BETWEEN\"", CP_EINVAL, "lines[0].targeting: "},
    {"lines[0].targeting", "42", CP_EINVAL, "lines[0].targeting: must be a crowd expression"},
    {"lines[0].premiums", "[{\"crowd\":\"high_value\",\"pct\":901}]", CP_EINVAL,
     "lines[0].premiums[0].pct: must be an integer from -90 to 900"},
    {"lines[0].premiums", "[{\"crowd\":\"high_value\",\"pct\":-91}]", CP_EINVAL,
     "lines[0].premiums[0].pct: must be an integer from -90 to 900"},
    {"lines[0].premiums", "[{\"crowd\":\"high_value\",\"pct\":1.5}]", CP_EINVAL,
     "lines[0].premiums[0].pct: must be an integer"},
    {"lines[0].premiums", "[{\"crowd\":\"a\",\"pct\":1},{\"crowd\":\"a\",\"pct\":2}]", CP_EINVAL,
     "lines[0].premiums[1].crowd: crowd \"a\" has a premium at lines[0].premiums[0]"},
    {"lines[0].premiums", "[{\"pct\":1}]", CP_EINVAL, "lines[0].premiums[0].crowd: required"},
    {"lines[0].caps", "[{\"count\":3}]", CP_EINVAL, "lines[0].caps[0].per: required"},
    {"lines[0].request", "{\"formats\":[\"video\"]}", CP_EINVAL,
     "lines[0].request.formats: \"video\" is listed but the line has no video creative"},
    {"lines[0].request", "{\"formats\":[\"popup\"]}", CP_EINVAL,
     "lines[0].request.formats[0]: \"popup\" is not one of"},
    {"lines[0].request", "{\"device_types\":[9]}", CP_EINVAL,
     "lines[0].request.device_types[0]: must be an integer from 1 to 8"},
    {"lines[0].request", "{\"countries\":[\"CN\"]}", CP_EINVAL,
     "lines[0].request.countries[0]: \"CN\" is not an ISO 3166-1 alpha-3"},
    {"lines[0].request", "{\"sizes\":[[300]]}", CP_EINVAL,
     "lines[0].request.sizes[0]: must be a size [w, h]"},
    {"lines[0].request", "{\"sizes\":[[300,-250]]}", CP_EINVAL,
     "lines[0].request.sizes[0][1]: must be a positive integer"},
    {"lines[0].request", "{\"app_only\":true,\"site_only\":true}", CP_EINVAL,
     "lines[0].request.site_only: app_only and site_only cannot both be true"},
    {"lines[0].request", "{\"deals\":[\"d\",\"d\"]}", CP_EINVAL,
     "lines[0].request.deals[1]: \"d\" is listed twice"},
    {"lines[0].request", "{\"site_cats\":[\"IAB 2\"]}", CP_EINVAL,
     "lines[0].request.site_cats[0]: \"IAB 2\" is not a category code"},
    {"lines[0].request", "{\"domains\":[\"a.com\"]}", CP_EINVAL,
     "lines[0].request.domains: unknown field"},
    {"lines[0].creatives", "[]", CP_EINVAL, "lines[0].creatives: required: at least one creative"},
    {"lines[0].creatives[0].w", "0", CP_EINVAL,
     "lines[0].creatives[0].w: must be a positive integer"},
    {"lines[0].creatives[0].w", "300.0", CP_EINVAL,
     "lines[0].creatives[0].w: must be a positive integer"},
    {"lines[0].creatives[0].h", NULL, CP_EINVAL, "lines[0].creatives[0].h: required"},
    {"lines[0].creatives[0].id", "\"c/1\"", CP_EINVAL,
     "lines[0].creatives[0].id: \"c/1\" is not an id"},
    {"lines[0].creatives[0].adomain", "[]", CP_EINVAL,
     "lines[0].creatives[0].adomain: required: at least one"},
    {"lines[0].creatives[0].adomain", "[\"https://acme.com/\"]", CP_EINVAL,
     "lines[0].creatives[0].adomain[0]: \"https://acme.com/\" is not a domain"},
    {"lines[0].creatives[0].adm", NULL, CP_EINVAL, "lines[0].creatives[0].adm: required"},
    {"lines[0].creatives[0].adm", "\"\"", CP_EINVAL,
     "lines[0].creatives[0].adm: must not be empty"},
    {"lines[0].creatives[0].iurl", "\"cdn.acme.com/x.png\"", CP_EINVAL,
     "lines[0].creatives[0].iurl: \"cdn.acme.com/x.png\" is not an http(s) URL"},
    {"lines[0].creatives[0].format", "\"native\"", CP_EINVAL,
     "lines[0].creatives[0].w: only for banner and video creatives"},
    {"lines[0].creatives[0].format", "\"video\"", CP_EINVAL,
     "lines[0].creatives[0].mimes: required for video"},
    {"lines[0].creatives[0].duration", "15", CP_EINVAL,
     "lines[0].creatives[0].duration: only for video and audio creatives"},
    {"lines[0].creatives[0].cat", "\"IAB2\"", CP_EINVAL,
     "lines[0].creatives[0].cat: must be an array"},
};

static void test_bad_documents(void **state)
{
    (void)state;
    assert_true(sizeof BAD / sizeof BAD[0] >= 30);
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        json_error_t je;
        json_t *doc = json_loads(EXAMPLE, 0, &je);
        assert_non_null(doc);
        mutate(doc, BAD[i].path, BAD[i].value);
        char *text = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        act_campaign_t *c = NULL;
        cp_error_t err = {0};
        cp_status st = campaign_parse(text, strlen(text), NULL, &c, &err);
        if (st != BAD[i].code || strncmp(err.message, BAD[i].msg, strlen(BAD[i].msg)) != 0)
            fail_msg("bad document %zu (%s = %s): %s \"%s\", want %s \"%s...\"", i, BAD[i].path,
                     BAD[i].value ? BAD[i].value : "(removed)", cp_strerror(st), err.message,
                     cp_strerror(BAD[i].code), BAD[i].msg);
        assert_null(c);
        free(text);
    }
}

/* Lines that fit their billing model's money and those that do not. */
static void test_billing_models(void **state)
{
    (void)state;
    static const struct {
        const char *line; /* members of lines[0] besides id and creatives */
        const char *msg;  /* NULL: valid */
    } cases[] = {
        {"\"billing\":\"cpc\",\"bid\":0.5", NULL},
        {"\"billing\":\"cpc\",\"bid\":0.5,\"max_cpm\":30", NULL},
        {"\"billing\":\"cpd\",\"bid\":10000", "lines[0].max_cpm: required for cpd lines"},
        {"\"billing\":\"cpa\",\"max_cpm\":10", "lines[0].goal: required"},
        {"\"billing\":\"cpa\",\"goal\":10", "lines[0].max_cpm: required for cpa lines"},
        {"\"billing\":\"cpa\",\"goal\":10,\"max_cpm\":10,\"bid\":1", "lines[0].bid: cpa lines"},
        {"\"billing\":\"cps\",\"goal\":100.01,\"max_cpm\":10", "lines[0].goal: must be more"},
        {"\"billing\":\"cps\",\"goal\":100,\"max_cpm\":10", NULL},
        {"\"billing\":\"cpc\",\"bid\":1,\"goal\":3", "lines[0].goal: only for cpa and cps"},
        {"\"bid\":1,\"paused\":true", NULL},
        {"\"bid\":1,\"targeting\":\"\"", NULL},
        {"\"bid\":1,\"targeting\":null,\"request\":null,\"caps\":null", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char doc[1024];
        snprintf(doc, sizeof doc,
                 "{\"id\":\"m\",\"advertiser\":\"a\",\"schedule\":{\"start\":\"2026-12-01\"},"
                 "\"lines\":[{\"id\":\"l\",%s,\"creatives\":[{\"id\":\"c\",\"w\":1,\"h\":1,"
                 "\"adomain\":[\"a.com\"],\"adm\":\"x\"}]}]}",
                 cases[i].line);
        act_campaign_t *c = NULL;
        cp_error_t err = {0};
        cp_status st = campaign_parse(doc, strlen(doc), NULL, &c, &err);
        if (cases[i].msg == NULL && st != CP_OK)
            fail_msg("case %zu: %s", i, err.message);
        if (cases[i].msg != NULL &&
            (st != CP_EINVAL || strncmp(err.message, cases[i].msg, strlen(cases[i].msg)) != 0))
            fail_msg("case %zu: %s \"%s\", want \"%s\"", i, cp_strerror(st), err.message,
                     cases[i].msg);
        if (st == CP_OK)
            round_trip(doc);
        campaign_free(c);
    }
}

static void test_url_id(void **state)
{
    (void)state;
    act_campaign_t *c = parse_ok(EXAMPLE, "spring-sale");
    campaign_free(c);
    cp_error_t err = {0};
    assert_int_equal(campaign_parse(EXAMPLE, strlen(EXAMPLE), "autumn", &c, &err), CP_EINVAL);
    assert_string_equal(err.message, "id: \"spring-sale\" is not the id in the URL (\"autumn\")");
    /* Without "id", the URL's. */
    json_t *doc = json_loads(EXAMPLE, 0, NULL);
    json_object_del(doc, "id");
    char *text = json_dumps(doc, 0);
    json_decref(doc);
    c = parse_ok(text, "autumn");
    assert_string_equal(c->id, "autumn");
    campaign_free(c);
    assert_int_equal(campaign_parse(text, strlen(text), "a/b", &c, &err), CP_EINVAL);
    assert_int_equal(campaign_parse(text, strlen(text), NULL, &c, &err), CP_EINVAL);
    assert_string_equal(err.message, "id: required");
    free(text);
}

static void test_limits_and_syntax(void **state)
{
    (void)state;
    act_campaign_t *c = NULL;
    cp_error_t err = {0};
    /* Not JSON, not an object, duplicate keys, too large. */
    assert_int_equal(campaign_parse("{", 1, NULL, &c, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "invalid JSON at line 1"));
    assert_int_equal(campaign_parse("[]", 2, NULL, &c, &err), CP_EINVAL);
    const char *dup = "{\"id\":\"a\",\"id\":\"b\"}";
    assert_int_equal(campaign_parse(dup, strlen(dup), NULL, &c, &err), CP_EINVAL);
    char *big = malloc(ACT_MAX_DOC + 2);
    memset(big, ' ', ACT_MAX_DOC + 1);
    big[ACT_MAX_DOC + 1] = '\0';
    assert_int_equal(campaign_parse(big, ACT_MAX_DOC + 1, NULL, &c, &err), CP_ELIMIT);
    free(big);

    json_t *doc = json_loads(EXAMPLE, 0, NULL);
    json_t *lines = json_object_get(doc, "lines");
    json_t *line = json_array_get(lines, 0);
    /* 65 KiB of markup. */
    json_t *k = json_array_get(json_object_get(line, "creatives"), 0);
    char *adm = malloc(ACT_MAX_ADM + 2);
    memset(adm, 'x', ACT_MAX_ADM + 1);
    adm[ACT_MAX_ADM + 1] = '\0';
    json_object_set_new(k, "adm", json_string(adm));
    free(adm);
    char *text = json_dumps(doc, 0);
    assert_int_equal(campaign_parse(text, strlen(text), NULL, &c, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "lines[0].creatives[0].adm: longer than"));
    free(text);
    json_object_set_new(k, "adm", json_string("x"));
    /* 257 lines. */
    for (int i = 1; i <= ACT_MAX_LINES; i++) {
        json_t *copy = json_deep_copy(line);
        char id[16];
        snprintf(id, sizeof id, "l%d", i);
        json_object_set_new(copy, "id", json_string(id));
        json_array_append_new(lines, copy);
    }
    text = json_dumps(doc, 0);
    assert_int_equal(campaign_parse(text, strlen(text), NULL, &c, &err), CP_ELIMIT);
    assert_string_equal(err.message, "lines: more than 256 entries");
    free(text);
    /* 256 lines, two with one id. */
    json_array_remove(lines, ACT_MAX_LINES);
    json_object_set_new(json_array_get(lines, 200), "id", json_string("l3"));
    text = json_dumps(doc, 0);
    assert_int_equal(campaign_parse(text, strlen(text), NULL, &c, &err), CP_EINVAL);
    assert_string_equal(err.message, "lines[200].id: \"l3\" is also the id of lines[3]");
    free(text);
    json_object_set_new(json_array_get(lines, 200), "id", json_string("l200"));
    text = json_dumps(doc, 0);
    c = parse_ok(text, NULL);
    assert_int_equal(c->nlines, ACT_MAX_LINES);
    campaign_free(c);
    free(text);
    json_decref(doc);

    /* A syntax error in targeting keeps its position. */
    doc = json_loads(EXAMPLE, 0, NULL);
    line = json_array_get(json_object_get(doc, "lines"), 0);
    json_object_set_new(line, "targeting", json_string("tag:a AND AND tag:b"));
    text = json_dumps(doc, 0);
    c = NULL;
    assert_int_equal(campaign_parse(text, strlen(text), NULL, &c, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "lines[0].targeting: 1:"));
    free(text);
    json_decref(doc);
}

/* Documents with a few bytes changed: each is refused with a message or
 * parses, and then its canonical form round-trips (ASan builds check the
 * error paths free what they allocated). */
static void test_mutations(void **state)
{
    (void)state;
    const char *bases[] = {EXAMPLE, FULL};
    static const char alphabet[] = "{}[]\",:0123456789.-eE \\ntfalsu";
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    size_t ok = 0;
    for (int iter = 0; iter < 4000; iter++) {
        const char *base = bases[iter % 2];
        size_t n = strlen(base);
        char *doc = malloc(n + 1);
        memcpy(doc, base, n + 1);
        int edits = 1 + (int)(seed % 3);
        for (int e = 0; e < edits; e++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t at = (size_t)(seed >> 33) % n;
            doc[at] = alphabet[(seed >> 13) % (sizeof alphabet - 1)];
        }
        act_campaign_t *c = NULL;
        cp_error_t err = {0};
        cp_status st = campaign_parse(doc, n, NULL, &c, &err);
        if (st == CP_OK) {
            round_trip(doc);
            ok++;
        } else {
            assert_null(c);
            assert_true(err.message[0] != '\0');
        }
        campaign_free(c);
        free(doc);
    }
    assert_true(ok > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example),       cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_full_document), cmocka_unit_test(test_money),
        cmocka_unit_test(test_bad_documents), cmocka_unit_test(test_billing_models),
        cmocka_unit_test(test_url_id),        cmocka_unit_test(test_limits_and_syntax),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
