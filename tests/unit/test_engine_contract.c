/* test_engine_contract.c — the rules of crowdpack.h's header comment that
 * every function shares: a handle does not close under its open
 * iterators (that was a use after free), extensible structs are checked
 * by their size (old sizes served, unknown set bytes refused, output
 * written only as far as the caller's size), and `err` is filled by the
 * functions that used to take none. */
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
#include "engine/engine.h"

static char g_dir[512];

static int setup(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "contract");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_rmtree(g_dir);
    return 0;
}

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fail_msg("%s: %s", cp_strerror(rc), err->message);
}

static cp_db_t *open_db(void)
{
    cp_open_options_t o = {.size = sizeof o, .flags = CP_OPEN_CREATE, .threads = 1};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    ok(cp_db_open(g_dir, &o, &db, &err), &err);
    return db;
}

static cp_db_t *db_with_users(void)
{
    cp_db_t *db = open_db();
    cp_error_t err = {0};
    ok(cp_tag_create(db, "t", NULL, NULL, &err), &err);
    const char *users = "{\"id\":\"u1\",\"tags\":[\"t\"]}\n{\"id\":\"u2\",\"tags\":[\"t\"]}\n"
                        "{\"id\":\"用户3\",\"tags\":[\"t\"]}\n";
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    ok(cp_load_ndjson_buf(db, users, strlen(users), NULL, &st, &err), &err);
    assert_int_equal(st.users_created, 3);
    return db;
}

/* Before: cp_db_close freed the handle and cp_iter_close then used it. */
static void test_close_with_open_iterator(void **state)
{
    (void)state;
    cp_db_t *db = db_with_users();
    cp_error_t err = {0};
    cp_result_t *r = NULL;
    cp_iter_t *it = NULL;
    ok(cp_eval(db, "tag:t", &r, &err), &err);
    ok(cp_iter_open(db, r, &it, &err), &err);
    cp_result_free(r); /* the iterator keeps its own copy */
    const char *id = NULL;
    ok(cp_iter_next(it, &id, &err), &err);
    assert_string_equal(id, "u1");

    assert_int_equal(cp_db_close(db, &err), CP_ECONFLICT);
    assert_int_equal(err.code, CP_ECONFLICT);
    assert_non_null(strstr(err.message, "1 result iterator is still open"));
    /* Nothing was closed: the iterator and the handle go on working. */
    ok(cp_iter_next(it, &id, &err), &err);
    assert_string_equal(id, "u2");
    uint64_t n = 0;
    ok(cp_count(db, "tag:t", &n, &err), &err);
    assert_int_equal(n, 3);
    cp_iter_close(it);
    ok(cp_db_close(db, &err), &err);
    ok(cp_db_close(NULL, &err), &err);
}

/* cp_result_ordinals walks a result in batches, in order, agreeing with
 * cp_result_contains; bad arguments are CP_EINVAL. */
static void test_result_ordinals(void **state)
{
    (void)state;
    cp_db_t *db = db_with_users();
    cp_error_t err = {0};
    ok(cp_tag_create(db, "s", NULL, NULL, &err), &err);
    const char *more = "{\"id\":\"u4\"}\n{\"id\":\"u5\",\"tags\":[\"s\"]}\n";
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    ok(cp_load_ndjson_buf(db, more, strlen(more), NULL, &st, &err), &err);
    cp_result_t *r = NULL;
    ok(cp_eval(db, "tag:t OR tag:s", &r, &err), &err);
    uint32_t all[8], one[1];
    size_t n = 99;
    ok(cp_result_ordinals(r, 0, all, 8, &n, &err), &err);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_true(cp_result_contains(r, all[i]));
        if (i > 0)
            assert_true(all[i] > all[i - 1]);
        /* one at a time from each offset gives the same ordinals */
        size_t m = 0;
        ok(cp_result_ordinals(r, i, one, 1, &m, &err), &err);
        assert_int_equal(m, 1);
        assert_int_equal(one[0], all[i]);
    }
    ok(cp_result_ordinals(r, 4, all, 8, &n, &err), &err);
    assert_int_equal(n, 0);
    uint32_t u4 = 0;
    ok(cp_user_ordinal(db, "user_id", "u4", &u4, &err), &err);
    assert_false(cp_result_contains(r, u4));
    assert_false(cp_result_contains(NULL, u4));
    assert_int_equal(cp_result_ordinals(NULL, 0, all, 8, &n, &err), CP_EINVAL);
    assert_int_equal(cp_result_ordinals(r, 0, NULL, 8, &n, &err), CP_EINVAL);
    assert_int_equal(cp_result_ordinals(r, 0, all, 8, NULL, &err), CP_EINVAL);
    cp_result_free(r);
    ok(cp_db_close(db, &err), &err);
}

/* Output structs: written up to the caller's size, zeroed past ours. */
static void test_output_sizes(void **state)
{
    (void)state;
    cp_db_t *db = db_with_users();
    cp_error_t err = {0};
    struct {
        cp_db_stats_t s;
        uint64_t newer[3]; /* fields of a newer header */
    } big;
    memset(&big, 0xab, sizeof big);
    big.s.size = sizeof big;
    ok(cp_db_stats(db, &big.s, &err), &err);
    assert_int_equal(big.s.size, sizeof big);
    assert_int_equal(big.s.users, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(big.newer[i], 0);

    /* Exactly sizeof: the bytes after it are not the library's. */
    struct {
        cp_health_t h;
        uint64_t canary;
    } exact;
    memset(&exact, 0xab, sizeof exact);
    exact.h.size = sizeof exact.h;
    ok(cp_db_health(db, &exact.h, &err), &err);
    assert_int_equal(exact.h.readable, 1);
    assert_int_equal(exact.canary, 0xababababababababull);

    cp_db_stats_t zero = {0};
    assert_int_equal(cp_db_stats(db, &zero, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "cp_db_stats_t"));
    cp_db_stats_t small = {.size = offsetof(cp_db_stats_t, users)};
    assert_int_equal(cp_db_stats(db, &small, &err), CP_EINVAL);
    assert_int_equal(small.users, 0); /* nothing written */

    cp_intake_counters_t ic = {0};
    assert_int_equal(cp_intake_counters(db, &ic, &err), CP_EINVAL);
    ic.size = sizeof ic;
    ok(cp_intake_counters(db, &ic, &err), &err);

    cp_ingest_result_t res = {0};
    const char *ev = "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"seen\"}";
    assert_int_equal(cp_ingest_segment(db, CP_EVENT_TRACK, ev, strlen(ev), &res, &err), CP_EINVAL);
    res.size = sizeof res;
    ok(cp_ingest_segment(db, CP_EVENT_TRACK, ev, strlen(ev), &res, &err), &err);
    assert_int_equal(res.applied, 1);
    cp_ingest_result_clear(&res);
    assert_int_equal(res.size, sizeof res);
    assert_int_equal(res.applied, 0);
    ok(cp_db_close(db, &err), &err);
}

/* Input structs: a newer caller's unknown fields must be zero. */
static void test_input_sizes(void **state)
{
    (void)state;
    cp_error_t err = {0};
    cp_db_t *db = NULL;
    struct {
        cp_open_options_t o;
        uint64_t newer;
    } big;
    memset(&big, 0, sizeof big);
    big.o.size = sizeof big;
    big.o.flags = CP_OPEN_CREATE;
    big.o.threads = 1;
    big.newer = 1; /* something this library cannot honour */
    assert_int_equal(cp_db_open(g_dir, &big.o, &db, &err), CP_EINVAL);
    assert_null(db);
    assert_non_null(strstr(err.message, "cp_open_options_t"));
    big.newer = 0; /* left at its default: fine */
    ok(cp_db_open(g_dir, &big.o, &db, &err), &err);

    const char *users = "{\"id\":\"u1\"}\n";
    cp_load_options_t lo = {0};
    assert_int_equal(cp_load_ndjson_buf(db, users, strlen(users), &lo, NULL, &err), CP_EINVAL);
    lo.size = sizeof lo;
    ok(cp_load_ndjson_buf(db, users, strlen(users), &lo, NULL, &err), &err);
    ok(cp_db_close(db, &err), &err);

    cp_open_options_t unset = {.flags = CP_OPEN_CREATE};
    assert_int_equal(cp_db_open(g_dir, &unset, &db, &err), CP_EINVAL);
    assert_null(db);
}

/* The functions that took no err now fill it. */
static void test_err_everywhere(void **state)
{
    (void)state;
    cp_db_t *db = open_db();
    cp_error_t err = {0};
    cp_role role = 0;
    assert_int_equal(cp_key_check(db, "cpk_nope", &role, &err), CP_EAUTH);
    assert_int_equal(err.code, CP_EAUTH);
    assert_non_null(strstr(err.message, "API key"));
    assert_int_equal(cp_key_count(db, NULL, &err), CP_EINVAL);
    assert_int_equal(err.code, CP_EINVAL);
    assert_int_equal(cp_db_stats(db, NULL, &err), CP_EINVAL);
    assert_int_equal(cp_db_health(NULL, NULL, &err), CP_EINVAL);
    assert_int_equal(cp_intake_counters(NULL, NULL, &err), CP_EINVAL);
    assert_string_equal(cp_libversion(), CP_VERSION_STRING);
    ok(cp_db_close(db, &err), &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_close_with_open_iterator, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_ordinals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_input_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_err_everywhere, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
