/* test_engine_events.c — Segment events through the engine: the shared
 * payloads, retries, traits and the catalog, behaviour and did() with
 * as_of, identity merges with lineage and unmerge, deletion that leaves no
 * byte of the user in the data directory, and recovery of acknowledged
 * events from the write-ahead log after the process dies without closing. */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cp_test.h"
#include <jansson.h>

#include "crowdpack.h"
#include "util/util.h"

static cp_db_t *open_db(const char *dir)
{
    return test_open_db(dir, &(cp_open_options_t){.size = sizeof(cp_open_options_t),
                                                  .flags = CP_OPEN_CREATE,
                                                  .map_size = 1ull << 28,
                                                  .threads = 1});
}

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fail_msg("%s: %s", cp_strerror(rc), err->message);
}

static cp_ingest_result_t send(cp_db_t *db, cp_event_type t, const char *json)
{
    cp_ingest_result_t r = CP_INGEST_RESULT_INIT;
    cp_error_t err = {0};
    cp_status rc = cp_ingest_segment(db, t, json, strlen(json), &r, &err);
    if (rc)
        fail_msg("ingest %s: %s %s", json, err.message, r.errors_json ? r.errors_json : "");
    return r;
}

static uint64_t count(cp_db_t *db, const char *expr, const char *as_of)
{
    uint64_t n = 0;
    cp_error_t err = {0};
    ok(cp_count_as_of(db, expr, as_of, &n, &err), &err);
    return n;
}

static void j_check_rejects(const char *js, size_t n)
{
    assert_non_null(js);
    json_t *j = json_loads(js, 0, NULL);
    assert_int_equal(json_array_size(j), n);
    json_decref(j);
}

static void setup_db(cp_db_t *db)
{
    cp_error_t err = {0};
    const char *cfg = "{\"indexed_properties\":[\"category\",\"sku\"]}";
    ok(cp_intake_config_set_json(db, cfg, strlen(cfg), &err), &err);
    ok(cp_attr_define(db, "age", CP_ATTR_INT, &err), &err);
    ok(cp_attr_define(db, "country", CP_ATTR_STRING, &err), &err);
    ok(cp_tag_create(db, "vip", NULL, NULL, &err), &err);
}

static void test_shared_payloads_and_retries(void **state)
{
    (void)state;
    char sdir[1200];
    if (!test_shared_data("segment-events", sdir, sizeof sdir))
        skip();
    char dir[256];
    test_tmpdir(dir, sizeof dir, "shared");
    cp_db_t *db = open_db(dir);
    setup_db(db);
    DIR *d = opendir(sdir);
    assert_non_null(d);
    struct dirent *e;
    uint64_t applied = 0, dups = 0;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".json") == NULL)
            continue;
        char path[2800];
        snprintf(path, sizeof path, "%s/%s", sdir, e->d_name);
        size_t len;
        char *body = test_read_file(path, &len);
        cp_ingest_result_t r = send(db, CP_EVENT_BATCH, body);
        applied += r.applied;
        dups += r.duplicates;
        assert_true(r.lsn > 0);
        free(body);
    }
    closedir(d);
    /* Every file but one uses messageId "I'm unique": the first is applied,
     * the rest (and the 2nd/3rd event of test-many) are retries. */
    assert_int_equal(applied, 2);
    assert_int_equal(dups, 14 - 2);
    cp_error_t err = {0};
    char *who = NULL;
    ok(cp_whois_json(db, "user_id", "123456", &who, &err), &err);
    assert_non_null(strstr(who, "\"user_id\""));
    cp_free(who);

    /* A retried batch changes nothing. */
    const char *batch = "{\"batch\":[{\"type\":\"track\",\"userId\":\"r1\",\"event\":\"buy\","
                        "\"messageId\":\"m1\",\"timestamp\":\"2024-01-02T00:00:00Z\"},"
                        "{\"type\":\"track\",\"userId\":\"r1\",\"event\":\"buy\",\"messageId\":"
                        "\"m2\",\"timestamp\":\"2024-01-02T00:00:00Z\"}]}";
    cp_ingest_result_t r = send(db, CP_EVENT_BATCH, batch);
    assert_int_equal(r.applied, 2);
    r = send(db, CP_EVENT_BATCH, batch);
    assert_int_equal(r.applied, 0);
    assert_int_equal(r.duplicates, 2);
    assert_int_equal(count(db, "did(buy) = 2", "2024-01-02"), 1);
    assert_int_equal(count(db, "did(buy) >= 3", "2024-01-02"), 0);
    /* ... also after a restart (the window is persisted). */
    cp_db_close(db, NULL);
    db = open_db(dir);
    r = send(db, CP_EVENT_BATCH, batch);
    assert_int_equal(r.duplicates, 2);
    assert_int_equal(count(db, "did(buy) = 2", "2024-01-02"), 1);
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

static void test_bad_requests_apply_nothing(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "bad");
    cp_db_t *db = open_db(dir);
    setup_db(db);
    /* one structural fault (no userId/anonymousId) and two odd values */
    const char *batch = "{\"batch\":[{\"type\":\"track\",\"userId\":\"ok\",\"event\":\"e\"},"
                        "{\"type\":\"identify\",\"userId\":\"u\",\"traits\":{\"age\":\"old\"}},"
                        "{\"type\":\"identify\",\"userId\":\"u\",\"traits\":{\"phone\":\"12\"}},"
                        "{\"type\":\"track\",\"event\":\"e\"}]}";
    cp_ingest_result_t r = CP_INGEST_RESULT_INIT;
    cp_error_t err = {0};
    /* strict: all or nothing */
    assert_int_equal(
        cp_ingest_segment_ex(db, CP_EVENT_BATCH, batch, strlen(batch), CP_INGEST_STRICT, &r, &err),
        CP_EINVAL);
    assert_non_null(r.errors_json);
    assert_non_null(strstr(r.errors_json, "\"index\":3"));
    assert_int_equal(r.rejected, 1);
    assert_null(r.warnings_json);
    cp_ingest_result_clear(&r);
    cp_db_stats_t st = CP_DB_STATS_INIT;
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 0);
    /* a request where nothing is valid fails whole, strict or not */
    const char *none = "{\"batch\":[{\"type\":\"track\",\"event\":\"e\"},"
                       "{\"type\":\"identify\",\"userId\":\"n/a\"}]}";
    assert_int_equal(cp_ingest_segment(db, CP_EVENT_BATCH, none, strlen(none), &r, &err),
                     CP_EINVAL);
    j_check_rejects(r.errors_json, 2);
    cp_ingest_result_clear(&r);
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 0);

    /* lenient (the default): the valid events go in, the rejected one is
     * listed, odd values are warnings */
    ok(cp_ingest_segment(db, CP_EVENT_BATCH, batch, strlen(batch), &r, &err), &err);
    assert_int_equal(r.events, 4);
    assert_int_equal(r.applied, 3);
    assert_int_equal(r.rejected, 1);
    assert_int_equal(r.warnings, 2);
    json_t *j = json_loads(r.errors_json, 0, NULL);
    assert_int_equal(json_array_size(j), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "index")), 3);
    json_decref(j);
    j = json_loads(r.warnings_json, 0, NULL);
    assert_int_equal(json_array_size(j), 2);
    json_t *w = json_array_get(j, 0);
    assert_int_equal(json_integer_value(json_object_get(w, "index")), 1);
    assert_string_equal(json_string_value(json_object_get(w, "field")), "traits.age");
    assert_string_equal(json_string_value(json_object_get(w, "reason")), "type_mismatch");
    w = json_array_get(j, 1);
    assert_int_equal(json_integer_value(json_object_get(w, "index")), 2);
    assert_string_equal(json_string_value(json_object_get(w, "field")), "traits.phone");
    assert_string_equal(json_string_value(json_object_get(w, "reason")), "invalid");
    json_decref(j);
    cp_ingest_result_clear(&r);
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 2);
    /* the odd age is kept unindexed, never in the index */
    char *who = NULL;
    ok(cp_whois_json(db, "user_id", "u", &who, &err), &err);
    j = json_loads(who, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "traits"), "age")),
                        "old");
    assert_null(json_object_get(json_object_get(j, "attrs"), "age"));
    json_decref(j);
    cp_free(who);
    cp_intake_counters_t ic = CP_INTAKE_COUNTERS_INIT;
    ok(cp_intake_counters(db, &ic, &err), &err);
    assert_int_equal(ic.warn_type_mismatch, 1);
    assert_int_equal(ic.warn_invalid, 1);
    assert_int_equal(ic.rejected_events, 1 + 1 + 2);
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

/*
 * The reproducer of the lost batch: nine good events and one identify
 * with odd values (placeholders, a US national phone under the +86
 * default, a fractional age, the all-zero advertising id, an integer
 * trait too big for int64): all ten applied, the odd values warned about
 * and never used for identity.
 */
static void test_odd_values_lose_nothing(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "odd");
    cp_db_t *db = open_db(dir);
    setup_db(db);
    cp_error_t err = {0};
    const char *cfg = "{\"identity\":{\"blocklist\":[\"test@example.com\"]}}";
    ok(cp_intake_config_set_json(db, cfg, strlen(cfg), &err), &err);
    buf_t b;
    buf_init(&b, 0);
    buf_printf(&b, "{\"batch\":[");
    for (int i = 0; i < 9; i++)
        buf_printf(&b,
                   "{\"type\":\"track\",\"userId\":\"g%d\",\"event\":\"buy\","
                   "\"timestamp\":\"2024-01-02T00:00:00Z\"},",
                   i);
    buf_printf(&b, "{\"type\":\"identify\",\"anonymousId\":\"anon-1\","
                   "\"timestamp\":\"2024-01-02T00:00:00Z\","
                   "\"traits\":{\"email\":\"n/a\",\"phone\":\"unknown\",\"age\":31.5,"
                   "\"member_id\":\"test@example.com\",\"openid\":\"\"},"
                   "\"context\":{\"device\":{\"type\":\"ios\","
                   "\"advertisingId\":\"00000000-0000-0000-0000-000000000000\"}}}]}");
    cp_ingest_result_t r = CP_INGEST_RESULT_INIT;
    ok(cp_ingest_segment(db, CP_EVENT_BATCH, buf_cstr(&b), b.len, &r, &err), &err);
    assert_int_equal(r.applied, 10);
    assert_int_equal(r.rejected, 0);
    assert_null(r.errors_json);
    assert_int_equal(r.warnings, 6);
    assert_non_null(strstr(r.warnings_json, "{\"index\":9,\"field\":\"traits.email\","
                                            "\"reason\":\"placeholder\"}"));
    assert_non_null(strstr(r.warnings_json, "\"field\":\"traits.member_id\","
                                            "\"reason\":\"blocklisted\""));
    assert_non_null(strstr(r.warnings_json, "\"field\":\"context.device.advertisingId\","
                                            "\"reason\":\"placeholder\""));
    assert_non_null(strstr(r.warnings_json, "\"field\":\"traits.age\","
                                            "\"reason\":\"type_mismatch\""));
    cp_ingest_result_clear(&r);
    buf_free(&b);
    assert_int_equal(count(db, "did(buy) >= 1", "2024-01-02"), 9);
    cp_db_stats_t st = CP_DB_STATS_INIT;
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 10);
    /* a second person with the same placeholders is not merged into the first */
    const char *other = "{\"anonymousId\":\"anon-2\",\"timestamp\":\"2024-01-02T00:00:00Z\","
                        "\"traits\":{\"email\":\"N/A\",\"phone\":\"unknown\"},"
                        "\"context\":{\"device\":{\"type\":\"ios\",\"advertisingId\":"
                        "\"00000000-0000-0000-0000-000000000000\"}}}";
    ok(cp_ingest_segment(db, CP_EVENT_IDENTIFY, other, strlen(other), &r, &err), &err);
    assert_int_equal(r.merges, 0);
    cp_ingest_result_clear(&r);
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 11);

    /* phones: a US national number under the +86 default becomes +1 with
     * the locale's hint; without a hint it is a warning, not a loss */
    const char *us =
        "{\"userId\":\"us1\",\"timestamp\":\"2024-01-02T00:00:00Z\","
        "\"traits\":{\"phone\":\"(415) 555-0132\"},\"context\":{\"locale\":\"en-US\"}}";
    ok(cp_ingest_segment(db, CP_EVENT_IDENTIFY, us, strlen(us), &r, &err), &err);
    assert_int_equal(r.warnings, 0);
    cp_ingest_result_clear(&r);
    char *who = NULL;
    ok(cp_whois_json(db, "phone", "+14155550132", &who, &err), &err);
    assert_non_null(strstr(who, "\"us1\""));
    cp_free(who);
    const char *nohint = "{\"userId\":\"us2\",\"timestamp\":\"2024-01-02T00:00:00Z\","
                         "\"traits\":{\"phone\":\"(415) 555-0199\"}}";
    ok(cp_ingest_segment(db, CP_EVENT_IDENTIFY, nohint, strlen(nohint), &r, &err), &err);
    assert_int_equal(r.applied, 1);
    assert_int_equal(r.warnings, 1);
    assert_non_null(strstr(r.warnings_json, "\"reason\":\"invalid\""));
    cp_ingest_result_clear(&r);

    /* an int trait out of int64's range is kept unindexed, never clamped */
    const char *big = "{\"userId\":\"big\",\"timestamp\":\"2024-01-02T00:00:00Z\","
                      "\"traits\":{\"age\":\"99999999999999999999999\"}}";
    ok(cp_ingest_segment(db, CP_EVENT_IDENTIFY, big, strlen(big), &r, &err), &err);
    assert_int_equal(r.warnings, 1);
    cp_ingest_result_clear(&r);
    assert_int_equal(count(db, "age > 1000", NULL), 0);
    ok(cp_whois_json(db, "user_id", "big", &who, &err), &err);
    assert_non_null(strstr(who, "\"age\":\"99999999999999999999999\""));
    cp_free(who);

    /* the same survives recovery from the log (replays are lenient too) */
    cp_db_close(db, NULL);
    db = open_db(dir);
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 14);
    cp_intake_counters_t ic = CP_INTAKE_COUNTERS_INIT;
    ok(cp_intake_counters(db, &ic, &err), &err); /* counters are since open */
    assert_int_equal(ic.warn_placeholder + ic.warn_invalid + ic.warn_type_mismatch, 0);
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

/*
 * group: the traits are the group's. Two people of account "acme" sent
 * with the company's billing email stay two people, their names stay
 * theirs, and expressions select them by group and group trait.
 */
static void test_groups_are_entities(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "groups");
    cp_db_t *db = open_db(dir);
    setup_db(db);
    cp_error_t err = {0};
    const char *batch =
        "{\"batch\":["
        "{\"type\":\"identify\",\"userId\":\"alice\",\"traits\":{\"name\":\"Alice\"}},"
        "{\"type\":\"identify\",\"userId\":\"bob\",\"traits\":{\"name\":\"Bob\"}},"
        "{\"type\":\"group\",\"userId\":\"alice\",\"groupId\":\"acme\","
        "\"traits\":{\"name\":\"Acme "
        "Inc\",\"email\":\"billing@acme.com\",\"plan\":\"enterprise\"}},"
        "{\"type\":\"group\",\"userId\":\"bob\",\"groupId\":\"acme\","
        "\"traits\":{\"name\":\"Acme Inc\",\"email\":\"billing@acme.com\"},"
        "\"context\":{\"traits\":{\"title\":\"cto\"}}},"
        "{\"type\":\"group\",\"userId\":\"carol\",\"groupId\":\"globex\","
        "\"traits\":{\"plan\":\"free\",\"seats\":3}},"
        "{\"type\":\"group\",\"userId\":\"carol\",\"groupId\":\"initech\","
        "\"traits\":{\"plan\":\"enterprise\"}}"
        "]}";
    cp_ingest_result_t r = CP_INGEST_RESULT_INIT;
    ok(cp_ingest_segment(db, CP_EVENT_BATCH, batch, strlen(batch), &r, &err), &err);
    assert_int_equal(r.applied, 6);
    assert_int_equal(r.merges, 0);
    cp_ingest_result_clear(&r);
    for (int pass = 0; pass < 2; pass++) { /* live, then after reopening */
        cp_db_stats_t st = CP_DB_STATS_INIT;
        ok(cp_db_stats(db, &st, &err), &err);
        assert_int_equal(st.users, 3);
        char *who = NULL;
        ok(cp_whois_json(db, "user_id", "alice", &who, &err), &err);
        assert_non_null(strstr(who, "\"Alice\""));
        assert_null(strstr(who, "Acme"));
        assert_null(strstr(who, "billing"));
        cp_free(who);
        ok(cp_whois_json(db, "user_id", "bob", &who, &err), &err);
        assert_non_null(strstr(who, "\"cto\"")); /* context.traits are the user's */
        cp_free(who);
        assert_int_equal(count(db, "group:acme", NULL), 2);
        assert_int_equal(count(db, "group:globex OR group:initech", NULL), 1);
        assert_int_equal(count(db, "group.plan = \"enterprise\"", NULL), 3);
        assert_int_equal(count(db, "group.plan != \"enterprise\"", NULL), 1);
        assert_int_equal(count(db, "group.plan IN (\"free\", \"trial\")", NULL), 1);
        assert_int_equal(count(db, "group.seats = 3", NULL), 1);
        assert_int_equal(count(db, "group:acme AND NOT group.plan = \"enterprise\"", NULL), 0);
        uint64_t n = 0;
        assert_int_equal(cp_count_as_of(db, "group:nosuch", NULL, &n, &err), CP_ENOTFOUND);
        assert_int_equal(cp_count_as_of(db, "group.nosuch = 1", NULL, &n, &err), CP_ENOTFOUND);
        cp_db_close(db, NULL);
        db = open_db(dir);
    }
    /* deletion leaves the group but not the member */
    ok(cp_user_delete_by_identifier(db, "user_id", "bob", &err), &err);
    assert_int_equal(count(db, "group:acme", NULL), 1);
    cp_db_close(db, NULL);
    db = open_db(dir);
    assert_int_equal(count(db, "group:acme", NULL), 1);
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

static void test_traits_behaviour_and_catalog(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "traits");
    cp_db_t *db = open_db(dir);
    setup_db(db);
    send(db, CP_EVENT_IDENTIFY,
         "{\"userId\":\"u1\",\"traits\":{\"age\":31,\"country\":\"CN\",\"nickname\":\"Ann\","
         "\"email\":\"Ann@Example.com\"},\"timestamp\":\"2024-03-01T10:00:00Z\"}");
    for (int i = 0; i < 3; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"userId\":\"u1\",\"event\":\"purchase\",\"properties\":{\"category\":"
                 "\"milk\",\"price\":9.5},\"messageId\":\"p%d\",\"timestamp\":"
                 "\"2024-03-05T10:00:00Z\"}",
                 i);
        send(db, CP_EVENT_TRACK, body);
    }
    /* Without a messageId, the derived one makes an identical payload a retry. */
    cp_ingest_result_t same = send(db, CP_EVENT_TRACK,
                                   "{\"userId\":\"u1\",\"event\":\"view\",\"timestamp\":"
                                   "\"2024-03-05T10:00:00Z\"}");
    assert_int_equal(same.applied, 1);
    same = send(db, CP_EVENT_TRACK,
                "{\"userId\":\"u1\",\"event\":\"view\",\"timestamp\":\"2024-03-05T10:00:00Z\"}");
    assert_int_equal(same.duplicates, 1);
    send(db, CP_EVENT_TRACK,
         "{\"anonymousId\":\"a9\",\"event\":\"purchase\",\"properties\":{\"category\":\"tea\"},"
         "\"timestamp\":\"2024-02-01T10:00:00Z\"}");
    send(db, CP_EVENT_PAGE,
         "{\"anonymousId\":\"a9\",\"name\":\"Home\",\"timestamp\":\"2024-03-05T10:00:00Z\"}");
    assert_int_equal(count(db, "age = 31 AND country = \"CN\"", NULL), 1);
    assert_int_equal(count(db, "did(purchase, category = \"milk\") >= 3", "2024-03-31"), 1);
    assert_int_equal(count(db, "did(purchase, category = \"milk\") >= 4", "2024-03-31"), 0);
    assert_int_equal(count(db, "did(purchase, last 30d)", "2024-03-05"), 1);
    assert_int_equal(count(db, "did(purchase, last 60d)", "2024-03-05"), 2);
    assert_int_equal(count(db, "did(purchase, between 2024-02-01 and 2024-02-01)", NULL), 1);
    assert_int_equal(count(db, "did(page)", "2024-03-05"), 1);
    /* as_of before the events: nothing yet */
    assert_int_equal(count(db, "did(purchase)", "2024-01-01"), 0);
    /* first_seen / last_seen */
    assert_int_equal(count(db, "first_seen < \"2024-03-02\" AND last_seen >= \"2024-03-05\"", NULL),
                     2);
    assert_int_equal(count(db,
                           "first_seen < \"2024-03-02\" AND last_seen >= \"2024-03-05\" AND "
                           "age = 31",
                           NULL),
                     1);
    /* unknown traits and properties are kept and listed */
    cp_error_t err = {0};
    char *s = NULL;
    ok(cp_properties_json(db, &s, &err), &err);
    json_t *j = json_loads(s, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(j, "traits"), "nickname"), "count")),
                     1);
    json_t *price = json_object_get(json_object_get(j, "properties"), "price");
    assert_int_equal(json_integer_value(json_object_get(price, "count")), 3);
    assert_true(json_is_true(
        json_object_get(json_object_get(json_object_get(j, "properties"), "category"), "indexed")));
    assert_null(json_object_get(json_object_get(j, "traits"), "email")); /* an identifier */
    json_decref(j);
    cp_free(s);
    ok(cp_events_json(db, &s, &err), &err);
    assert_non_null(strstr(s, "{\"name\":\"purchase\",\"count\":4,\"users\":2}"));
    assert_non_null(strstr(s, "{\"name\":\"view\",\"count\":1,\"users\":1}"));
    cp_free(s);
    /* whois by the (hashed) email finds u1 with its traits */
    ok(cp_whois_json(db, "email", "  ann@EXAMPLE.com", &s, &err), &err);
    j = json_loads(s, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "user"), "id")), "u1");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "traits"), "nickname")), "Ann");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "attrs"), "age")), 31);
    assert_null(strstr(s, "example.com")); /* PII only as a hash */
    json_decref(j);
    cp_free(s);
    /* did() on a property that is not indexed is an error naming it */
    uint64_t n;
    assert_int_not_equal(cp_count_as_of(db, "did(purchase, price = 9.5)", NULL, &n, &err), CP_OK);
    assert_int_equal(cp_count_as_of(db, "did(nosuch)", NULL, &n, &err), CP_ENOTFOUND);
    /* the user API still sees event users by their user_id */
    ok(cp_user_json(db, "u1", &s, &err), &err);
    assert_non_null(strstr(s, "\"age\":31"));
    cp_free(s);
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

static void test_merge_unmerge(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "merge");
    cp_db_t *db = open_db(dir);
    setup_db(db);
    cp_error_t err = {0};
    /* user A: anonymous browsing, 2 purchases */
    send(db, CP_EVENT_TRACK,
         "{\"anonymousId\":\"anon-1\",\"event\":\"purchase\",\"properties\":{\"sku\":\"x\"},"
         "\"messageId\":\"a-1\",\"timestamp\":\"2024-05-01T00:00:00Z\"}");
    send(db, CP_EVENT_TRACK,
         "{\"anonymousId\":\"anon-1\",\"event\":\"purchase\",\"properties\":{\"sku\":\"x\"},"
         "\"messageId\":\"a-2\",\"timestamp\":\"2024-05-01T00:00:00Z\"}");
    send(db, CP_EVENT_IDENTIFY,
         "{\"anonymousId\":\"anon-1\",\"traits\":{\"age\":20},\"timestamp\":\"2024-05-01T00:00:"
         "00Z\"}");
    /* user B: a member with a phone, 1 purchase, a tag through the user API */
    send(db, CP_EVENT_IDENTIFY,
         "{\"userId\":\"member-7\",\"traits\":{\"phone\":\"138 0013 8000\",\"country\":\"CN\"},"
         "\"timestamp\":\"2024-04-01T00:00:00Z\"}");
    send(db, CP_EVENT_TRACK,
         "{\"userId\":\"member-7\",\"event\":\"purchase\",\"properties\":{\"sku\":\"x\"},"
         "\"timestamp\":\"2024-05-02T00:00:00Z\"}");
    const char *u = "{\"id\":\"member-7\",\"tags\":[\"vip\"]}";
    ok(cp_user_upsert_json(db, u, strlen(u), &err), &err);
    cp_db_stats_t st = CP_DB_STATS_INIT;
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 2);
    assert_int_equal(count(db, "did(purchase, sku = \"x\") >= 3", "2024-05-31"), 0);
    /* The anonymous user logs in with the same phone: one person. */
    cp_ingest_result_t r = send(db, CP_EVENT_IDENTIFY,
                                "{\"anonymousId\":\"anon-1\",\"traits\":{\"phone\":"
                                "\"+8613800138000\"},\"messageId\":\"login-1\","
                                "\"timestamp\":\"2024-05-03T00:00:00Z\"}");
    assert_int_equal(r.merges, 1);
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 1);
    assert_int_equal(count(db, "did(purchase, sku = \"x\") >= 3", "2024-05-31"), 1);
    assert_int_equal(count(db, "tag:vip AND age = 20 AND country = \"CN\"", NULL), 1);
    char *s = NULL;
    ok(cp_whois_json(db, "anonymous_id", "anon-1", &s, &err), &err);
    json_t *j = json_loads(s, 0, NULL);
    json_t *lin = json_object_get(j, "lineage");
    assert_int_equal(json_array_size(lin), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(lin, 0), "message_id")),
                        "login-1");
    uint64_t mid =
        (uint64_t)json_integer_value(json_object_get(json_array_get(lin, 0), "merge_id"));
    assert_int_equal(json_array_size(json_object_get(j, "identifiers")), 3);
    json_decref(j);
    cp_free(s);
    /* the merged user answers to every id */
    ok(cp_whois_json(db, "phone", "13800138000", &s, &err), &err);
    cp_free(s);
    ok(cp_user_json(db, "member-7", &s, &err), &err);
    assert_non_null(strstr(s, "\"age\":20"));
    cp_free(s);

    /* Undo: both sides get their own data back. */
    ok(cp_unmerge(db, mid, &s, &err), &err);
    cp_free(s);
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 2);
    assert_int_equal(count(db, "did(purchase, sku = \"x\") = 2", "2024-05-31"), 1);
    assert_int_equal(count(db, "did(purchase, sku = \"x\") = 1", "2024-05-31"), 1);
    assert_int_equal(count(db, "tag:vip AND age = 20", NULL), 0);
    assert_int_equal(count(db, "tag:vip", NULL), 1);
    assert_int_equal(count(db, "age = 20", NULL), 1);
    ok(cp_whois_json(db, "anonymous_id", "anon-1", &s, &err), &err);
    j = json_loads(s, 0, NULL);
    assert_non_null(json_object_get(json_array_get(json_object_get(j, "lineage"), 0), "undone"));
    json_decref(j);
    cp_free(s);
    assert_int_equal(cp_unmerge(db, mid, NULL, &err), CP_ECONFLICT);
    /* and it survives a restart */
    cp_db_close(db, NULL);
    db = open_db(dir);
    assert_int_equal(count(db, "did(purchase, sku = \"x\") = 2", "2024-05-31"), 1);
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 2);
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

/* 1 if the file holds the bytes; reads only its allocated extents
 * (data.mdb is sparse up to the map size). */
static int file_contains(const char *path, const void *needle, size_t n)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    struct stat sb;
    int found = 0;
    size_t cap = (1u << 20) + n;
    char *buf = malloc(cap);
    assert_non_null(buf);
    if (fstat(fd, &sb) == 0) {
        off_t off = 0;
        while (!found && off < sb.st_size) {
            off_t start = lseek(fd, off, SEEK_DATA);
            if (start < 0)
                break;
            off_t end = lseek(fd, start, SEEK_HOLE);
            if (end < 0)
                end = sb.st_size;
            for (off_t pos = start; !found && pos < end; pos += 1 << 20) {
                off_t from = pos - (off_t)n > start ? pos - (off_t)n : start;
                size_t want = (size_t)((end - from) < (off_t)cap ? end - from : (off_t)cap);
                ssize_t got = pread(fd, buf, want, from);
                if (got > 0 && memmem(buf, (size_t)got, needle, n))
                    found = 1;
            }
            off = end;
        }
    }
    free(buf);
    close(fd);
    return found;
}

/* 1 if any file under dir (two levels: the WAL is in a subdirectory)
 * contains the bytes. */
static int dir_contains(const char *dir, const void *needle, size_t n)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0)
            continue;
        found =
            S_ISDIR(sb.st_mode) ? dir_contains(path, needle, n) : file_contains(path, needle, n);
    }
    closedir(d);
    return found;
}

static void test_delete_leaves_nothing(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "delete");
    cp_db_t *db = open_db(dir);
    setup_db(db);
    cp_error_t err = {0};
    const char *cfg = "{\"identity\":{\"hash_pii\":true}}";
    ok(cp_intake_config_set_json(db, cfg, strlen(cfg), &err), &err);
    /* the victim: raw ids, a hashed email, merged with a second identity */
    send(db, CP_EVENT_IDENTIFY,
         "{\"userId\":\"victim-user-8271\",\"anonymousId\":\"victim-anon-5512\",\"traits\":"
         "{\"email\":\"victim.person@example.org\",\"nickname\":\"victim-nick-3391\"},"
         "\"timestamp\":\"2024-01-01T00:00:00Z\"}");
    send(db, CP_EVENT_TRACK,
         "{\"anonymousId\":\"victim-device-7730\",\"event\":\"view\",\"timestamp\":"
         "\"2024-01-02T00:00:00Z\"}");
    send(db, CP_EVENT_ALIAS,
         "{\"userId\":\"victim-user-8271\",\"previousId\":\"victim-device-7730\",\"timestamp\":"
         "\"2024-01-02T00:00:00Z\"}");
    /* a bystander */
    send(db, CP_EVENT_IDENTIFY,
         "{\"userId\":\"bystander-1\",\"traits\":{\"age\":40},\"timestamp\":\"2024-01-01T00:00:"
         "00Z\"}");
    ok(cp_checkpoint(db, &err), &err);
    char *s = NULL;
    ok(cp_whois_json(db, "user_id", "victim-user-8271", &s, &err), &err);
    json_t *j = json_loads(s, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "lineage")), 1);
    /* the stored (hashed) email key */
    char hashed[128] = "";
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(j, "identifiers"), i, x)
    {
        if (!strcmp(json_string_value(json_object_get(x, "type")), "email"))
            snprintf(hashed, sizeof hashed, "%s", json_string_value(json_object_get(x, "hash")));
    }
    json_decref(j);
    cp_free(s);
    assert_int_equal(strlen(hashed), 64);
    assert_true(dir_contains(dir, "victim-user-8271", 16));
    assert_true(dir_contains(dir, hashed, 64));

    ok(cp_user_delete_by_identifier(db, "email", "Victim.Person@example.org", &err), &err);
    /* the bytes go with the compaction (background; done here at once) */
    ok(cp_db_compact(db, &err), &err);
    assert_int_equal(cp_whois_json(db, "user_id", "victim-user-8271", &s, &err), CP_ENOTFOUND);
    assert_int_equal(cp_whois_json(db, "anonymous_id", "victim-device-7730", &s, &err),
                     CP_ENOTFOUND);
    cp_db_stats_t st = CP_DB_STATS_INIT;
    ok(cp_db_stats(db, &st, &err), &err);
    assert_int_equal(st.users, 1);
    assert_int_equal(count(db, "did(view)", "2024-01-31"), 0);
    const char *needles[] = {"victim-user-8271", "victim-anon-5512",          "victim-device-7730",
                             "victim-nick-3391", "victim.person@example.org", hashed};
    for (size_t k = 0; k < (sizeof needles / sizeof needles[0]); k++)
        if (dir_contains(dir, needles[k], strlen(needles[k])))
            fail_msg("\"%s\" is still in %s", needles[k], dir);
    /* the bystander is intact, also after reopening */
    cp_db_close(db, NULL);
    db = open_db(dir);
    assert_int_equal(count(db, "age = 40", NULL), 1);
    for (size_t k = 0; k < (sizeof needles / sizeof needles[0]); k++)
        assert_false(dir_contains(dir, needles[k], strlen(needles[k])));
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

/* The child acknowledges events and dies without closing (no checkpoint):
 * the parent finds every acknowledged event exactly once. */
static void test_recovery_after_crash(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "crash");
    cp_db_t *db = open_db(dir);
    setup_db(db);
    cp_error_t err = {0};
    const char *cfg = "{\"checkpoint\":{\"interval_ms\":3600000,\"records\":1000000}}";
    ok(cp_intake_config_set_json(db, cfg, strlen(cfg), &err), &err);
    cp_db_close(db, NULL);
    int n = 50;
    pid_t pid = fork();
    if (pid == 0) {
        cp_db_t *c = NULL;
        cp_open_options_t o = {
            .size = sizeof(cp_open_options_t), .flags = 0, .map_size = 1ull << 28, .threads = 1};
        if (cp_db_open(dir, &o, &c, NULL))
            _exit(2);
        for (int i = 0; i < n; i++) {
            char body[256];
            snprintf(body, sizeof body,
                     "{\"userId\":\"c%d\",\"event\":\"tick\",\"messageId\":\"t%d\","
                     "\"timestamp\":\"2024-06-01T00:00:00Z\"}",
                     i % 5, i);
            if (cp_ingest_segment(c, CP_EVENT_TRACK, body, strlen(body), NULL, NULL))
                _exit(3);
        }
        _exit(0); /* acknowledged, never checkpointed, never closed */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    db = open_db(dir);
    assert_int_equal(count(db, "did(tick) = 10", "2024-06-01"), 5);
    /* replays are not counted twice: resending is deduplicated */
    char body[256];
    snprintf(body, sizeof body,
             "{\"userId\":\"c0\",\"event\":\"tick\",\"messageId\":\"t0\",\"timestamp\":"
             "\"2024-06-01T00:00:00Z\"}");
    cp_ingest_result_t r = send(db, CP_EVENT_TRACK, body);
    assert_int_equal(r.duplicates, 1);
    cp_db_close(db, NULL);
    db = open_db(dir);
    assert_int_equal(count(db, "did(tick) = 10", "2024-06-01"), 5);
    cp_db_close(db, NULL);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_payloads_and_retries),
        cmocka_unit_test(test_bad_requests_apply_nothing),
        cmocka_unit_test(test_odd_values_lose_nothing),
        cmocka_unit_test(test_groups_are_entities),
        cmocka_unit_test(test_traits_behaviour_and_catalog),
        cmocka_unit_test(test_merge_unmerge),
        cmocka_unit_test(test_delete_leaves_nothing),
        cmocka_unit_test(test_recovery_after_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
