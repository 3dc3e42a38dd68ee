/*
 * test_engine_crowd_keep.c — keeping crowds true (src/engine/crowd_schedule.c):
 * a refresh reaches the dynamic crowds built on it (in dependency order,
 * through two levels) while static dependents stay snapshots; size
 * history points (create, refresh, automatic re-evaluation; survive a
 * reopen); a daily schedule in a fixed-offset and an IANA time zone runs
 * once when due and not before; expiry freezes an unused crowd (frozen
 * crowds are not re-evaluated) and a refresh thaws it; bad settings name
 * the field.
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
#include <jansson.h>

#include "crowdpack.h"

#define DAY_MS (86400ll * 1000)

static char g_dir[256];

static cp_db_t *open_db(unsigned flags)
{
    return test_open_db(g_dir, &(cp_open_options_t){.size = sizeof(cp_open_options_t),
                                                    .flags = flags,
                                                    .map_size = 1u << 28,
                                                    .threads = 1});
}

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fprintf(stderr, "unexpected: %s\n", err->message);
    assert_int_equal(rc, CP_OK);
}

static void user(cp_db_t *db, int i, const char *tag)
{
    char j[200];
    cp_error_t err = {0};
    snprintf(j, sizeof j, "{\"id\":\"u%d\",\"tags\":[\"%s\"]}", i, tag);
    ok(cp_user_upsert_json(db, j, strlen(j), &err), &err);
}

static json_t *crowd(cp_db_t *db, const char *name)
{
    char *s = NULL;
    cp_error_t err = {0};
    ok(cp_crowd_json(db, name, &s, &err), &err);
    json_t *j = json_loads(s, 0, NULL);
    cp_free(s);
    assert_non_null(j);
    return j;
}

static int64_t num(cp_db_t *db, const char *name, const char *field)
{
    json_t *j = crowd(db, name);
    int64_t v = json_integer_value(json_object_get(j, field));
    json_decref(j);
    return v;
}

static int frozen(cp_db_t *db, const char *name)
{
    json_t *j = crowd(db, name);
    int f = json_is_true(json_object_get(j, "frozen"));
    json_decref(j);
    return f;
}

static json_t *history(cp_db_t *db, const char *name)
{
    char *s = NULL;
    cp_error_t err = {0};
    ok(cp_crowd_history_json(db, name, &s, &err), &err);
    json_t *j = json_loads(s, 0, NULL);
    cp_free(s);
    assert_non_null(j);
    json_t *pts = json_incref(json_object_get(j, "points"));
    json_decref(j);
    return pts;
}

static void settings(cp_db_t *db, const char *name, const char *json)
{
    cp_error_t err = {0};
    ok(cp_crowd_settings_json(db, name, json, strlen(json), &err), &err);
}

static void test_cascade_and_history(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "crowdkeep");
    cp_db_t *db = open_db(CP_OPEN_CREATE);
    cp_error_t err = {0};
    const char *tax = "{\"tags\":[{\"path\":\"a\"},{\"path\":\"b\"}]}";
    ok(cp_taxonomy_load_json(db, tax, strlen(tax), &err), &err);
    for (int i = 0; i < 10; i++)
        user(db, i, i < 6 ? "a" : "b");
    ok(cp_crowd_create(db, "base", "tag:a", CP_CROWD_STATIC, NULL, &err), &err);
    ok(cp_crowd_create(db, "mid", "crowd:base OR tag:b", CP_CROWD_DYNAMIC, NULL, &err), &err);
    ok(cp_crowd_create(db, "top", "crowd:mid AND NOT tag:b", CP_CROWD_DYNAMIC, NULL, &err), &err);
    ok(cp_crowd_create(db, "snap", "crowd:base", CP_CROWD_STATIC, NULL, &err), &err);
    assert_int_equal(num(db, "mid", "size"), 10);
    assert_int_equal(num(db, "top", "size"), 6);
    /* More "a" users: the static base keeps its snapshot until refreshed. */
    for (int i = 10; i < 14; i++)
        user(db, i, "a");
    assert_int_equal(num(db, "base", "size"), 6);
    assert_int_equal(num(db, "top", "size"), 6);
    ok(cp_crowd_refresh(db, "base", &err), &err);
    assert_int_equal(num(db, "base", "size"), 10);
    assert_int_equal(num(db, "mid", "size"), 14); /* dynamic: followed */
    assert_int_equal(num(db, "top", "size"), 10); /* two levels up: followed */
    assert_int_equal(num(db, "snap", "size"), 6); /* static: a snapshot */
    json_t *h = history(db, "base");
    assert_int_equal(json_array_size(h), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(h, 0), "size")), 6);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(h, 1), "size")), 10);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(h, 1), "version")), 2);
    json_decref(h);
    h = history(db, "top");
    assert_true(json_array_size(h) >= 1);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(h, json_array_size(h) - 1), "size")), 10);
    json_decref(h);
    cp_db_close(db, NULL);

    /* History and settings survive a reopen. */
    db = open_db(0);
    settings(db, "base", "{\"refresh\":\"daily 02:00\",\"timezone\":\"+08:00\"}");
    cp_db_close(db, NULL);
    db = open_db(0);
    h = history(db, "base");
    assert_int_equal(json_array_size(h), 2);
    json_decref(h);
    json_t *j = crowd(db, "base");
    assert_string_equal(json_string_value(json_object_get(j, "refresh")), "daily 02:00");
    assert_string_equal(json_string_value(json_object_get(j, "timezone")), "+08:00");
    json_decref(j);

    /* Bad settings name what is wrong. */
    const char *bad[] = {"{\"refresh\":\"weekly\"}", "{\"timezone\":\"Mars/Base\"}",
                         "{\"expire_after_days\":-1}", "{\"colour\":1}", "{\"frozen\":true}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cp_error_t e = {0};
        assert_int_equal(cp_crowd_settings_json(db, "base", bad[i], strlen(bad[i]), &e), CP_EINVAL);
        assert_true(e.message[0] != '\0');
    }
    cp_error_t e = {0};
    assert_int_equal(cp_crowd_settings_json(db, "nope", "{}", 2, &e), CP_ENOTFOUND);
    cp_db_close(db, NULL);
}

/* The next instant after t whose UTC clock reads hh:mm. */
static int64_t next_utc(int64_t t, int hh, int mm)
{
    int64_t day = t - t % DAY_MS;
    int64_t at = day + ((int64_t)hh * 60 + mm) * 60000;
    return at > t ? at : at + DAY_MS;
}

static void test_schedule_and_expiry(void **state)
{
    (void)state;
    cp_db_t *db = open_db(0);
    cp_error_t err = {0};
    int ran = 0;
    /* base: daily 02:00 at +08:00 = 18:00 UTC, set (last run) just now */
    int64_t set = num(db, "base", "last_scheduled_refresh");
    assert_true(set > 0);
    for (int i = 20; i < 23; i++)
        user(db, i, "a");
    uint64_t v0 = (uint64_t)num(db, "base", "version");
    int64_t due = next_utc(set, 18, 0);
    ok(cp_crowds_tick(db, due - 60000, &ran, &err), &err);
    assert_int_equal(ran, 0);
    assert_int_equal(num(db, "base", "version"), (int64_t)v0);
    ok(cp_crowds_tick(db, due + 60000, &ran, &err), &err);
    assert_int_equal(ran, 1);
    assert_int_equal(num(db, "base", "version"), (int64_t)v0 + 1);
    assert_int_equal(num(db, "base", "size"), 13);
    assert_int_equal(num(db, "top", "size"), 13); /* dynamic dependents follow */
    ok(cp_crowds_tick(db, due + 120000, &ran, &err), &err);
    assert_int_equal(ran, 0); /* once a day */
    ok(cp_crowds_tick(db, due + DAY_MS + 60000, &ran, &err), &err);
    assert_int_equal(ran, 1);

    /* An IANA zone: Asia/Shanghai is UTC+8 (no daylight saving since 1991). */
    settings(db, "snap", "{\"refresh\":\"daily 02:00\",\"timezone\":\"Asia/Shanghai\"}");
    set = num(db, "snap", "last_scheduled_refresh");
    due = next_utc(set, 18, 0);
    ok(cp_crowds_tick(db, due - 60000, &ran, &err), &err);
    assert_int_equal(num(db, "snap", "version"), 1);
    ok(cp_crowds_tick(db, due + 60000, &ran, &err), &err);
    assert_int_equal(num(db, "snap", "version"), 2);

    /* Expiry: unused for the days given, frozen; frozen crowds stay put. */
    settings(db, "top", "{\"expire_after_days\":3}");
    int64_t now = num(db, "top", "last_used");
    ok(cp_crowds_tick(db, now + 2 * DAY_MS, &ran, &err), &err);
    assert_false(frozen(db, "top"));
    ok(cp_crowds_tick(db, now + 4 * DAY_MS, &ran, &err), &err);
    assert_true(frozen(db, "top"));
    int64_t size = num(db, "top", "size");
    for (int i = 30; i < 35; i++)
        user(db, i, "a");
    ok(cp_crowd_refresh(db, "base", &err), &err);
    assert_int_equal(num(db, "mid", "size"), num(db, "base", "size") + 4);
    assert_int_equal(num(db, "top", "size"), size); /* frozen: not re-evaluated */
    ok(cp_crowd_refresh(db, "top", &err), &err);    /* by hand: thawed */
    assert_false(frozen(db, "top"));
    assert_int_equal(num(db, "top", "size"), num(db, "base", "size"));
    /* Used (evaluated by a count) keeps it alive. */
    uint64_t n = 0;
    int64_t t0 = num(db, "top", "last_used");
    usleep(2000);
    ok(cp_count(db, "crowd:top", &n, &err), &err);
    ok(cp_crowds_tick(db, t0 + 1, &ran, &err), &err);
    assert_true(num(db, "top", "last_used") > t0);
    cp_db_close(db, NULL);
    test_rmtree(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cascade_and_history),
        cmocka_unit_test(test_schedule_and_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
