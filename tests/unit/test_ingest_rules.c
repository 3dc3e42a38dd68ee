/*
 * test_ingest_rules.c — every intake validation rule (src/ingest/rules.h)
 * through both paths that make events: a Segment event (segment_parse_event)
 * and a CSV row through a column mapping (mapping_row_event). Each case is
 * one input written both ways; both must give the same outcome: the same
 * status and message (the row's prefixed with its line), the same
 * identifiers, the same warnings, and the outcome the case expects.
 *
 * Rules the engine applies with the schema and identity config (placeholder
 * and blocklisted values, a trait that does not fit its attribute) cannot
 * differ between the paths if both hand the engine the same identifiers and
 * typed traits: the cases for them check exactly that, plus the model's
 * verdict on the value (ident_value_unusable).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ingest/csv.h"
#include "ingest/event.h"
#include "ingest/mapping.h"
#include "model/normalize.h"
#include "model/propval.h"

#define RECV_MS 1700000000000ll

typedef struct outcome {
    cp_status rc;
    char msg[512];
    ingest_batch_t b;
    json_t *doc;
} outcome_t;

/* The Segment path: one event object, as a batch item. */
static void run_json(const char *json, const segment_opts_t *o, outcome_t *out)
{
    cp_error_t err = {0};
    json_error_t je;
    ingest_batch_init(&out->b);
    out->doc = json_loads(json, 0, &je);
    if (out->doc == NULL)
        fail_msg("test input: bad JSON %s: %s", json, je.text);
    out->rc = segment_parse_event(out->doc, ING_NONE, NULL, -1, o, &out->b, &err);
    snprintf(out->msg, sizeof out->msg, "%s", out->rc ? err.message : "");
}

/* The mapping path: the header and one row (file line 2). */
static void run_row(const char *mapping, const char *csv, const segment_opts_t *o, outcome_t *out)
{
    cp_error_t err = {0};
    mapping_t *m = NULL;
    csv_reader_t *r = NULL;
    const csv_field_t *f;
    size_t n;
    map_result res;
    ingest_batch_init(&out->b);
    out->doc = NULL;
    if (mapping_parse(mapping, strlen(mapping), &m, &err) != CP_OK)
        fail_msg("test input: bad mapping: %s", err.message);
    csv_opts_t co = {.delim = m->delim};
    assert_int_equal(csv_open_mem(csv, strlen(csv), &co, &r, &err), CP_OK);
    assert_int_equal(csv_next(r, &f, &n, &err), CP_OK);
    assert_int_equal(mapping_bind(m, f, n, &err), CP_OK);
    assert_int_equal(csv_next(r, &f, &n, &err), CP_OK);
    assert_non_null(f);
    out->rc = mapping_row_event(m, f, n, csv_line(r), "imp", o, &out->b, &res, &err);
    snprintf(out->msg, sizeof out->msg, "%s", out->rc ? err.message : "");
    if (out->rc == CP_OK)
        assert_int_equal(res, MAP_EVENT);
    csv_close(r);
    /* the event's property and trait names point into the mapping: the
     * comparisons below read only identifiers, values and warnings */
    out->doc = NULL;
    mapping_free(m);
}

static void outcome_free(outcome_t *o)
{
    ingest_batch_free(&o->b);
    json_decref(o->doc);
}

/* Both outcomes agree with each other and with what the case expects. */
static void same_outcome(const char *name, const outcome_t *js, const outcome_t *row,
                         cp_status want_rc, const char *want_warning, size_t want_nids)
{
    if (js->rc != want_rc || row->rc != want_rc)
        fail_msg("%s: Segment %d \"%s\", mapping %d \"%s\"; expected %d", name, js->rc, js->msg,
                 row->rc, row->msg, want_rc);
    if (want_rc) {
        char prefixed[600];
        snprintf(prefixed, sizeof prefixed, "line 2: %s", js->msg);
        if (strcmp(prefixed, row->msg))
            fail_msg("%s: messages differ:\n Segment \"%s\"\n mapping \"%s\"", name, js->msg,
                     row->msg);
        assert_int_equal(js->b.n, 0);
        assert_int_equal(row->b.n, 0);
        assert_int_equal(js->b.warned, 0); /* a rejected event's warnings go with it */
        assert_int_equal(row->b.warned, 0);
        return;
    }
    assert_int_equal(js->b.n, 1);
    assert_int_equal(row->b.n, 1);
    const ingest_event_t *a = &js->b.events[0], *b = &row->b.events[0];
    if (a->nids != want_nids || b->nids != want_nids)
        fail_msg("%s: %zu and %zu identifiers, expected %zu", name, a->nids, b->nids, want_nids);
    for (size_t i = 0; i < a->nids; i++) {
        assert_string_equal(a->ids[i].type, b->ids[i].type);
        assert_int_equal(a->ids[i].len, b->ids[i].len);
        assert_memory_equal(a->ids[i].value, b->ids[i].value, a->ids[i].len);
        assert_string_equal(a->ids[i].field, b->ids[i].field);
    }
    assert_true(a->ts == b->ts);
    assert_int_equal(js->b.nwarnings, row->b.nwarnings);
    for (size_t i = 0; i < js->b.nwarnings; i++) {
        assert_string_equal(js->b.warnings[i].field, row->b.warnings[i].field);
        assert_string_equal(js->b.warnings[i].reason, row->b.warnings[i].reason);
    }
    if (want_warning) {
        if (js->b.nwarnings != 1)
            fail_msg("%s: %zu warnings, expected one \"%s\"", name, js->b.nwarnings, want_warning);
        assert_string_equal(js->b.warnings[0].reason, want_warning);
    } else {
        assert_int_equal(js->b.nwarnings, 0);
    }
}

typedef struct rule_case {
    const char *name;
    const char *mapping;
    const char *csv;
    const char *json;
    cp_status rc;
    const char *warning;
    size_t nids;
    int allow_other_ids;
    int no_receive_time;
} rule_case_t;

#define M_IDENTIFY_EMAIL                                                                           \
    "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"}],"                                \
    "\"traits\":[{\"column\":\"email\",\"name\":\"email\"}]}"
#define M_IDS_EMAIL                                                                                \
    "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"},"                                 \
    "{\"column\":\"email\",\"type\":\"email\"}]}"
#define M_TRACK                                                                                    \
    "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"}],"                                \
    "\"event\":{\"name\":{\"column\":\"ev\"},\"timestamp\":{\"column\":\"ts\",\"format\":"         \
    "\"epoch\"},\"message_id\":{\"column\":\"mid\"}}}"
#define M_TRACK_NO_TS                                                                              \
    "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"}],"                                \
    "\"event\":{\"name\":\"buy\",\"message_id\":{\"column\":\"mid\"}}}"

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void run_case(const rule_case_t *c)
{
    segment_opts_t o = {.received_at_ms = c->no_receive_time ? 0 : RECV_MS,
                        .allow_other_ids = c->allow_other_ids};
    outcome_t js, row;
    run_json(c->json, &o, &js);
    run_row(c->mapping, c->csv, &o, &row);
    same_outcome(c->name, &js, &row, c->rc, c->warning, c->nids);
    outcome_free(&js);
    outcome_free(&row);
}

/* Identifiers: what a bad value costs depends on where it was found. */
static void test_identifier_rules(void **state)
{
    (void)state;
    char *long_id = repeat('x', INGEST_ID_MAX + 1), *max_id = repeat('y', INGEST_ID_MAX);
    char m[2048], csv[1024], json[1024];
    static const rule_case_t fixed[] = {
        {"usable trait identifier", M_IDENTIFY_EMAIL, "uid,email\nu1,a@b.c\n",
         "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"a@b.c\"}}", CP_OK, NULL,
         2, 0, 0},
        {"control byte in a trait identifier: a warning", M_IDENTIFY_EMAIL,
         "uid,email\nu1,\"a\tb@c.d\"\n",
         "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"a\\tb@c.d\"}}", CP_OK,
         INGEST_WARN_INVALID, 1, 0, 0},
        {"control byte in userId: rejected", M_IDENTIFY_EMAIL, "uid,email\n\"u\x01\",\n",
         "{\"type\":\"identify\",\"userId\":\"u\\u0001\"}", CP_EINVAL, NULL, 0, 0, 0},
        {"no userId or anonymousId: rejected", M_IDS_EMAIL, "uid,email\n,a@b.c\n",
         "{\"type\":\"identify\",\"traits\":{\"email\":\"a@b.c\"}}", CP_EINVAL, NULL, 0, 0, 0},
        {"any identifier will do for imports", M_IDS_EMAIL, "uid,email\n,a@b.c\n",
         "{\"type\":\"identify\",\"traits\":{\"email\":\"a@b.c\"}}", CP_OK, NULL, 1, 1, 0},
        {"the same identifier twice counts once",
         "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"},"
         "{\"column\":\"uid2\",\"type\":\"user_id\"}]}",
         "uid,uid2\nu1,u1\n",
         "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"user_id\":\"u1\"}}", CP_OK, NULL,
         1, 0, 0},
        {"an integer identifier is its decimal text",
         "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\",\"transform\":\"integer\"}]}",
         "uid\n17850.0\n", "{\"type\":\"identify\",\"userId\":17850}", CP_OK, NULL, 1, 0, 0},
        {"a lower-cased identifier",
         "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"},"
         "{\"column\":\"mail\",\"type\":\"email\",\"transform\":\"lower\"}]}",
         "uid,mail\nu1,A@B.C\n",
         "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"a@b.c\"}}", CP_OK, NULL,
         2, 0, 0},
        {"warnings of a rejected event go with it",
         "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"}],"
         "\"traits\":[{\"column\":\"email\",\"name\":\"email\"}],"
         "\"event\":{\"name\":{\"column\":\"ev\"},\"timestamp\":{\"column\":\"ts\",\"format\":"
         "\"epoch\"},\"message_id\":{\"column\":\"mid\"}}}",
         "uid,email,ev,ts,mid\nu1,\"\x02\",\"b\x01\",1700000000,m1\n",
         "{\"type\":\"track\",\"userId\":\"u1\",\"context\":{\"traits\":{\"email\":\"\\u0002\"}},"
         "\"event\":\"b\\u0001\",\"timestamp\":\"2023-11-14T22:13:20Z\",\"messageId\":\"m1\"}",
         CP_EINVAL, NULL, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        run_case(&fixed[i]);

    /* lengths: INGEST_ID_MAX bytes is an identifier, one more is not */
    snprintf(csv, sizeof csv, "uid,email\n%s,%s\n", max_id, long_id);
    snprintf(json, sizeof json,
             "{\"type\":\"identify\",\"userId\":\"%s\",\"traits\":{\"email\":\"%s\"}}", max_id,
             long_id);
    rule_case_t c = {"overlong trait identifier: a warning",
                     M_IDENTIFY_EMAIL,
                     csv,
                     json,
                     CP_OK,
                     INGEST_WARN_INVALID,
                     1,
                     0,
                     0};
    run_case(&c);
    snprintf(csv, sizeof csv, "uid,email\n%s,\n", long_id);
    snprintf(json, sizeof json, "{\"type\":\"identify\",\"userId\":\"%s\"}", long_id);
    c = (rule_case_t){
        "overlong userId: rejected", M_IDENTIFY_EMAIL, csv, json, CP_ELIMIT, NULL, 0, 0, 0};
    run_case(&c);

    /* at most INGEST_MAX_IDS identifiers on one event */
    for (int extra = INGEST_MAX_IDS - 1; extra <= INGEST_MAX_IDS; extra++) {
        static const char *names[INGEST_MAX_IDS + 1];
        static char buf[INGEST_MAX_IDS + 1][16];
        size_t mo = (size_t)snprintf(m, sizeof m,
                                     "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"}");
        size_t co = (size_t)snprintf(csv, sizeof csv, "uid");
        size_t jo = (size_t)snprintf(json, sizeof json,
                                     "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{");
        names[0] = "user_id";
        for (int k = 0; k < extra; k++) {
            snprintf(buf[k + 1], sizeof buf[k + 1], "id%d", k);
            names[k + 1] = buf[k + 1];
            mo += (size_t)snprintf(m + mo, sizeof m - mo, ",{\"column\":\"c%d\",\"type\":\"id%d\"}",
                                   k, k);
            co += (size_t)snprintf(csv + co, sizeof csv - co, ",c%d", k);
            jo += (size_t)snprintf(json + jo, sizeof json - jo, "%s\"id%d\":\"v%d\"", k ? "," : "",
                                   k, k);
        }
        snprintf(m + mo, sizeof m - mo, "]}");
        snprintf(json + jo, sizeof json - jo, "}}");
        co += (size_t)snprintf(csv + co, sizeof csv - co, "\nu1");
        for (int k = 0; k < extra; k++)
            co += (size_t)snprintf(csv + co, sizeof csv - co, ",v%d", k);
        snprintf(csv + co, sizeof csv - co, "\n");
        segment_opts_t o = {.received_at_ms = RECV_MS,
                            .id_types = {.names = names, .n = (size_t)extra + 1}};
        outcome_t js, row;
        run_json(json, &o, &js);
        run_row(m, csv, &o, &row);
        int over = extra + 1 > INGEST_MAX_IDS;
        same_outcome(over ? "one identifier too many" : "as many identifiers as allowed", &js, &row,
                     over ? CP_ELIMIT : CP_OK, NULL, (size_t)extra + 1);
        outcome_free(&js);
        outcome_free(&row);
    }
    free(long_id);
    free(max_id);
}

/*
 * Placeholders ("n/a", "unknown", all-zero advertising ids, "" in JSON) and
 * blocklisted values are the engine's to judge (it holds the blocklist):
 * both paths must hand it the same identifier, which the model then calls
 * a placeholder. An empty CSV cell is no value at all (mapping.h), so the
 * one placeholder ingest itself sees, the empty string, has no CSV form.
 */
static void test_placeholders_reach_the_engine_alike(void **state)
{
    (void)state;
    static const char *const values[] = {
        "n/a", "N/A", "unknown", "null", "undefined", "-", "00000000-0000-0000-0000-000000000000"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char csv[256], json[256];
        snprintf(csv, sizeof csv, "uid,email\nu1,%s\n", values[i]);
        snprintf(json, sizeof json,
                 "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"%s\"}}",
                 values[i]);
        rule_case_t c = {values[i], M_IDENTIFY_EMAIL, csv, json, CP_OK, NULL, 2, 0, 0};
        segment_opts_t o = {.received_at_ms = RECV_MS};
        outcome_t js, row;
        run_json(c.json, &o, &js);
        run_row(c.mapping, c.csv, &o, &row);
        same_outcome(c.name, &js, &row, CP_OK, NULL, 2);
        const ingest_ident_t *a = &js.b.events[0].ids[1], *b = &row.b.events[0].ids[1];
        assert_int_equal(ident_value_unusable(a->value, a->len, NULL, 0), IDENT_PLACEHOLDER);
        assert_int_equal(ident_value_unusable(b->value, b->len, NULL, 0), IDENT_PLACEHOLDER);
        outcome_free(&js);
        outcome_free(&row);
    }
}

/* A trait that does not fit its attribute (age 31.5 on an int) is judged
 * by the engine: both paths must hand it the same typed value. */
static void test_trait_values_reach_the_engine_alike(void **state)
{
    (void)state;
    segment_opts_t o = {.received_at_ms = RECV_MS};
    outcome_t js, row;
    run_json("{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"age\":31.5}}", &o, &js);
    run_row("{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"}],"
            "\"traits\":[{\"column\":\"age\",\"name\":\"age\",\"type\":\"number\"}]}",
            "uid,age\nu1,31.5\n", &o, &row);
    same_outcome("age 31.5", &js, &row, CP_OK, NULL, 1);
    ev_prop_t pj;
    pv_from_json("age", 3, json_object_get(js.b.events[0].traits, "age"), &pj);
    assert_int_equal(row.b.events[0].nttraits, 1);
    const ev_prop_t *pr = &row.b.events[0].ttraits[0];
    assert_int_equal(pj.kind, pr->kind);
    assert_true(pj.d == pr->d);
    outcome_free(&js);
    outcome_free(&row);
}

/* Event names, messageIds, times and size. */
static void test_event_rules(void **state)
{
    (void)state;
    char *long_name = repeat('e', INGEST_NAME_MAX + 1),
         *long_mid = repeat('m', INGEST_MSGID_MAX + 1);
    char csv[2048], json[2048];
    static const rule_case_t fixed[] = {
        {"a track event", M_TRACK, "uid,ev,ts,mid\nu1,buy,1700000000,m1\n",
         "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"buy\",\"timestamp\":"
         "\"2023-11-14T22:13:20Z\",\"messageId\":\"m1\"}",
         CP_OK, NULL, 1, 0, 0},
        {"control byte in the event name", M_TRACK, "uid,ev,ts,mid\nu1,\"b\x01y\",1700000000,m1\n",
         "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"b\\u0001y\",\"timestamp\":"
         "\"2023-11-14T22:13:20Z\",\"messageId\":\"m1\"}",
         CP_EINVAL, NULL, 0, 0, 0},
        {"control byte in the messageId", M_TRACK, "uid,ev,ts,mid\nu1,buy,1700000000,\"m\x7f\"\n",
         "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"buy\",\"timestamp\":"
         "\"2023-11-14T22:13:20Z\",\"messageId\":\"m\\u007f\"}",
         CP_EINVAL, NULL, 0, 0, 0},
        {"a time past 9999", M_TRACK, "uid,ev,ts,mid\nu1,buy,253402300800,m1\n",
         "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"buy\",\"timestamp\":"
         "\"10000-01-01T00:00:00Z\",\"messageId\":\"m1\"}",
         CP_EINVAL, NULL, 0, 0, 0},
        {"no time, received now", M_TRACK_NO_TS, "uid,mid\nu1,m1\n",
         "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"buy\",\"messageId\":\"m1\"}", CP_OK,
         NULL, 1, 0, 0},
        {"no time and no receive time", M_TRACK_NO_TS, "uid,mid\nu1,m1\n",
         "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"buy\",\"messageId\":\"m1\"}", CP_EINVAL,
         NULL, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        run_case(&fixed[i]);
    snprintf(csv, sizeof csv, "uid,ev,ts,mid\nu1,%s,1700000000,m1\n", long_name);
    snprintf(json, sizeof json,
             "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"%s\",\"timestamp\":"
             "\"2023-11-14T22:13:20Z\",\"messageId\":\"m1\"}",
             long_name);
    rule_case_t c = {"overlong event name", M_TRACK, csv, json, CP_ELIMIT, NULL, 0, 0, 0};
    run_case(&c);
    snprintf(csv, sizeof csv, "uid,ev,ts,mid\nu1,buy,1700000000,%s\n", long_mid);
    snprintf(json, sizeof json,
             "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"buy\",\"timestamp\":"
             "\"2023-11-14T22:13:20Z\",\"messageId\":\"%s\"}",
             long_mid);
    c = (rule_case_t){"overlong messageId", M_TRACK, csv, json, CP_ELIMIT, NULL, 0, 0, 0};
    run_case(&c);
    free(long_name);
    free(long_mid);

    /* the 32 KB event limit, on the same JSON both ways */
    char *big = repeat('d', INGEST_EVENT_MAX);
    size_t cap = INGEST_EVENT_MAX + 512;
    char *bcsv = malloc(cap), *bjson = malloc(cap);
    assert_non_null(bcsv);
    assert_non_null(bjson);
    snprintf(bcsv, cap, "uid,desc\nu1,%s\n", big);
    /* the row's default messageId is "<prefix>:<line>" */
    snprintf(bjson, cap,
             "{\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"desc\":\"%s\"},"
             "\"messageId\":\"imp:2\"}",
             big);
    c = (rule_case_t){"an event over 32 KB",
                      "{\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"}],"
                      "\"traits\":[{\"column\":\"desc\",\"name\":\"desc\"}]}",
                      bcsv,
                      bjson,
                      CP_ELIMIT,
                      NULL,
                      0,
                      0,
                      0};
    run_case(&c);
    free(big);
    free(bcsv);
    free(bjson);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identifier_rules),
        cmocka_unit_test(test_placeholders_reach_the_engine_alike),
        cmocka_unit_test(test_trait_values_reach_the_engine_alike),
        cmocka_unit_test(test_event_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
