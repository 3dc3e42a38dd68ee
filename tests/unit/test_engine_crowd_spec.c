/*
 * test_engine_crowd_spec.c — cp_crowd_create_spec: the crowd and its
 * schedule are one commit (a bad setting creates nothing; a good one is in
 * the crowd's first record, so it survives a reopen without any later
 * write); a static crowd made as of a day stays a view of that day through
 * refreshes and reopens and says so in its view; specs with a wrong size,
 * both or neither expression forms, or as_of on a dynamic crowd are
 * refused with nothing written.
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
#include <jansson.h>

#include "crowdpack.h"

static char g_dir[256];

static cp_db_t *open_db(unsigned flags)
{
    cp_open_options_t o = {
        .size = sizeof(cp_open_options_t), .flags = flags, .map_size = 1u << 28, .threads = 1};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    cp_status rc = cp_db_open(g_dir, &o, &db, &err);
    if (rc)
        fprintf(stderr, "open: %s\n", err.message);
    assert_int_equal(rc, CP_OK);
    return db;
}

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fprintf(stderr, "unexpected: %s\n", err->message);
    assert_int_equal(rc, CP_OK);
}

static void buy(cp_db_t *db, const char *user, const char *day)
{
    char j[300];
    cp_error_t err = {0};
    int n = snprintf(j, sizeof j,
                     "{\"userId\":\"%s\",\"event\":\"buy\",\"messageId\":\"%s-%s\","
                     "\"timestamp\":\"%sT10:00:00Z\"}",
                     user, user, day, day);
    ok(cp_ingest_segment(db, CP_EVENT_TRACK, j, (size_t)n, NULL, &err), &err);
}

static json_t *view(cp_db_t *db, const char *name)
{
    char *s = NULL;
    cp_error_t err = {0};
    ok(cp_crowd_json(db, name, &s, &err), &err);
    json_t *j = json_loads(s, 0, NULL);
    cp_free(s);
    assert_non_null(j);
    return j;
}

static int exists(cp_db_t *db, const char *name)
{
    char *s = NULL;
    cp_error_t err = {0};
    cp_status rc = cp_crowd_json(db, name, &s, &err);
    cp_free(s);
    return rc == CP_OK;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/cp-test-crowd-spec-%ld", (long)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_settings_in_one_commit(void **state)
{
    (void)state;
    cp_db_t *db = open_db(CP_OPEN_CREATE);
    buy(db, "a", "2024-06-01");
    cp_error_t err = {0};
    const char *bad = "{\"refresh\":\"daily 02:00\",\"timezone\":\"Mars/Olympus\"}";
    cp_crowd_spec_t spec = {.size = sizeof spec,
                            .name = "buyers",
                            .expression = "did(buy) >= 1",
                            .settings = bad,
                            .settings_len = strlen(bad)};
    assert_int_equal(cp_crowd_create_spec(db, &spec, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "crowd settings"));
    assert_int_equal(exists(db, "buyers"), 0); /* nothing half made */

    const char *good =
        "{\"refresh\":\"daily 02:00\",\"timezone\":\"+08:00\",\"expire_after_days\":30}";
    spec.settings = good;
    spec.settings_len = strlen(good);
    memset(&err, 0, sizeof err);
    ok(cp_crowd_create_spec(db, &spec, &err), &err);
    cp_db_close(db, NULL);

    /* The first record holds the schedule: a reopen finds it. */
    db = open_db(0);
    json_t *v = view(db, "buyers");
    assert_string_equal(json_string_value(json_object_get(v, "refresh")), "daily 02:00");
    assert_string_equal(json_string_value(json_object_get(v, "timezone")), "+08:00");
    assert_int_equal(json_integer_value(json_object_get(v, "expire_after_days")), 30);
    assert_int_equal(json_integer_value(json_object_get(v, "size")), 1);
    assert_null(json_object_get(v, "as_of"));
    json_decref(v);

    /* Refused specs write nothing. */
    cp_crowd_spec_t small = spec;
    small.size = sizeof small - 1;
    small.name = "x1";
    assert_int_equal(cp_crowd_create_spec(db, &small, &err), CP_EINVAL);
    cp_crowd_spec_t both = spec;
    both.name = "x2";
    both.tree = "{\"all\":true}";
    both.tree_len = strlen(both.tree);
    assert_int_equal(cp_crowd_create_spec(db, &both, &err), CP_EINVAL);
    cp_crowd_spec_t dyn = {.size = sizeof dyn,
                           .name = "x3",
                           .expression = "did(buy) >= 1",
                           .kind = CP_CROWD_DYNAMIC,
                           .as_of = "2024-06-01"};
    assert_int_equal(cp_crowd_create_spec(db, &dyn, &err), CP_EINVAL);
    assert_int_equal(exists(db, "x1") + exists(db, "x2") + exists(db, "x3"), 0);
    cp_db_close(db, NULL);
}

static void test_as_of_stays(void **state)
{
    (void)state;
    cp_db_t *db = open_db(CP_OPEN_CREATE);
    buy(db, "a", "2024-06-01");
    buy(db, "b", "2024-06-10");
    cp_error_t err = {0};
    cp_crowd_spec_t spec = {
        .size = sizeof spec, .name = "early", .expression = "did(buy) >= 1", .as_of = "2024-06-05"};
    ok(cp_crowd_create_spec(db, &spec, &err), &err);
    json_t *v = view(db, "early");
    assert_int_equal(json_integer_value(json_object_get(v, "size")), 1);
    assert_string_equal(json_string_value(json_object_get(v, "as_of")), "2024-06-05");
    json_decref(v);

    /* A late event of the day before as_of joins at the refresh; one after
     * it never does. */
    buy(db, "c", "2024-06-04");
    buy(db, "d", "2024-06-20");
    ok(cp_crowd_refresh(db, "early", &err), &err);
    v = view(db, "early");
    assert_int_equal(json_integer_value(json_object_get(v, "size")), 2);
    assert_int_equal(json_integer_value(json_object_get(v, "version")), 2);
    json_decref(v);
    cp_db_close(db, NULL);

    db = open_db(0);
    ok(cp_crowd_refresh(db, "early", &err), &err);
    v = view(db, "early");
    assert_int_equal(json_integer_value(json_object_get(v, "size")), 2);
    assert_string_equal(json_string_value(json_object_get(v, "as_of")), "2024-06-05");
    json_decref(v);
    uint64_t n = 0;
    ok(cp_count(db, "crowd:early", &n, &err), &err);
    assert_int_equal(n, 2);
    cp_db_close(db, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_settings_in_one_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_as_of_stays, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
