/* test_engine_values.c — no silent zeros and Chinese through the public
 * API: a value never seen is CP_ENOTFOUND at its line:column with "did you
 * mean" suggestions (`!=` accepts it); value aliases at intake and in
 * expressions, merging a spelling stored before; value lists with counts;
 * tags by display path (ambiguity named), tag search; untag taking the
 * tag's descendants; crowds with Chinese names; UTF-8 JSON. */
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

#include "crowdpack.h"

static char g_dir[256];

static void rm_dir(void)
{
    test_rmtree(g_dir);
}

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fprintf(stderr, "unexpected: %s\n", err->message);
    assert_int_equal(rc, CP_OK);
}

static uint64_t count(cp_db_t *db, const char *expr)
{
    uint64_t n = 0;
    cp_error_t err = {0};
    ok(cp_count(db, expr, &n, &err), &err);
    return n;
}

static cp_db_t *seeded(void)
{
    test_tmpdir(g_dir, sizeof g_dir, "values");
    cp_open_options_t o = {.size = sizeof(cp_open_options_t),
                           .flags = CP_OPEN_CREATE,
                           .map_size = 1u << 28,
                           .threads = 2};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    ok(cp_db_open(g_dir, &o, &db, &err), &err);
    const char *schema = "{\"attributes\":[{\"name\":\"city\",\"type\":\"enum\"},"
                         "{\"name\":\"note\",\"type\":\"string\"},"
                         "{\"name\":\"age\",\"type\":\"int\"}]}";
    ok(cp_schema_load_json(db, schema, strlen(schema), &err), &err);
    const char *tax = "{\"tags\":[{\"path\":\"兴趣\"},{\"path\":\"兴趣/金融\"},"
                      "{\"path\":\"兴趣/金融/理财\"},"
                      "{\"path\":\"interest\",\"name\":\"兴趣爱好\"},"
                      "{\"path\":\"interest/beauty\",\"name\":\"美妆\"},"
                      "{\"path\":\"interest/beauty/makeup\",\"name\":\"彩妆\"},"
                      "{\"path\":\"industry\",\"name\":\"行业\"},"
                      "{\"path\":\"industry/finance\",\"name\":\"金融\"}]}";
    ok(cp_taxonomy_load_json(db, tax, strlen(tax), &err), &err);
    const char *users =
        "{\"id\":\"u1\",\"attrs\":{\"city\":\"shenzhen\",\"age\":30},\"tags\":[\"兴趣/金融/"
        "理财\"]}\n"
        "{\"id\":\"u2\",\"attrs\":{\"city\":\"guangzhou\",\"note\":\"hello\"},"
        "\"tags\":[\"interest/beauty/makeup\"]}\n"
        "{\"id\":\"u3\",\"attrs\":{\"city\":\"广州\"},\"tags\":[\"industry/finance\"]}\n"
        "{\"id\":\"u42\",\"attrs\":{\"city\":\"shenzhen\"},"
        "\"tags\":[\"interest/beauty\",\"interest/beauty/makeup\"]}\n";
    cp_load_options_t lo = CP_LOAD_OPTIONS_INIT;
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    ok(cp_load_ndjson_buf(db, users, strlen(users), &lo, &st, &err), &err);
    assert_int_equal(st.rejected, 0);
    return db;
}

static void test_never_seen(void **state)
{
    (void)state;
    cp_db_t *db = seeded();
    cp_error_t err = {0};
    uint64_t n = 0;
    assert_int_equal(count(db, "city = \"shenzhen\""), 2);
    assert_int_equal(cp_count(db, "age > 1 AND city = \"Shenzhen\"", &n, &err), CP_ENOTFOUND);
    assert_int_equal(err.line, 1);
    assert_int_equal(err.column, 13);
    assert_non_null(strstr(err.message, "no value \"Shenzhen\""));
    assert_non_null(strstr(err.message, "did you mean \"shenzhen\""));
    assert_int_equal(cp_count(db, "city IN (\"guangzhou\", \"shenzen\")", &n, &err), CP_ENOTFOUND);
    assert_non_null(strstr(err.message, "\"shenzhen\""));
    /* CJK by code points: 广州市 is one edit from 广州. */
    assert_int_equal(cp_count(db, "city = \"广州市\"", &n, &err), CP_ENOTFOUND);
    assert_non_null(strstr(err.message, "did you mean \"广州\""));
    /* Nothing near: no suggestion, a pointer to the list instead. */
    assert_int_equal(cp_count(db, "city = \"深圳\"", &n, &err), CP_ENOTFOUND);
    assert_null(strstr(err.message, "did you mean"));
    assert_int_equal(cp_count(db, "note = \"hellp\"", &n, &err), CP_ENOTFOUND);
    /* `!=` accepts a value never seen, with a warning beside the count. */
    assert_int_equal(count(db, "city != \"深圳\""), 4);
    char *w = NULL;
    ok(cp_expr_warnings_json(db, "age > 1 AND city != \"Shenzhen\"", NULL, 0, &w, &err), &err);
    assert_non_null(strstr(w, "\"code\":\"unknown_value\""));
    assert_non_null(strstr(w, "\"column\":13"));
    assert_non_null(strstr(w, "did you mean \\\"shenzhen\\\""));
    cp_free(w);
    const char *tree = "{\"attr\":\"city\",\"op\":\"!=\",\"value\":\"shenzhen\"}";
    ok(cp_expr_warnings_json(db, NULL, tree, strlen(tree), &w, &err), &err);
    assert_string_equal(w, "{\"warnings\":[]}");
    cp_free(w);
    assert_int_equal(cp_expr_warnings_json(db, "city !=", NULL, 0, &w, &err), CP_ESYNTAX);
    /* Crowds are checked too; evaluation as well. */
    assert_int_equal(cp_crowd_create(db, "typo", "city = \"shenzen\"", CP_CROWD_STATIC, NULL, &err),
                     CP_ENOTFOUND);
    cp_result_t *r = NULL;
    assert_int_equal(cp_eval(db, "city = \"shenzen\"", &r, &err), CP_ENOTFOUND);
    cp_db_close(db, NULL);
    rm_dir();
}

static void test_aliases(void **state)
{
    (void)state;
    cp_db_t *db = seeded();
    cp_error_t err = {0};
    char *j = NULL;
    ok(cp_attr_values_json(db, "city", 0, &j, &err), &err);
    assert_non_null(strstr(j, "{\"value\":\"shenzhen\",\"count\":2}"));
    assert_non_null(strstr(j, "\"广州\"")); /* UTF-8, not \u escapes */
    cp_free(j);
    assert_int_equal(cp_attr_alias_set(db, "city", "广州", "guangzou", &err), CP_ENOTFOUND);
    assert_non_null(strstr(err.message, "did you mean \"guangzhou\""));
    assert_int_equal(cp_attr_alias_set(db, "age", "x", "y", &err), CP_ETYPE);
    ok(cp_attr_alias_set(db, "city", "广州", "guangzhou", &err), &err);
    /* The spelling stored before moved: one value, two users. */
    assert_int_equal(count(db, "city = \"guangzhou\""), 2);
    assert_int_equal(count(db, "city = \"广州\""), 2);
    assert_int_equal(cp_attr_alias_set(db, "city", "guangzhou", "广州", &err), CP_EINVAL);
    ok(cp_attr_values_json(db, "city", 1, &j, &err), &err);
    assert_non_null(strstr(j, "\"distinct\":2"));
    assert_non_null(strstr(j, "\"truncated\":true"));
    assert_non_null(strstr(j, "{\"alias\":\"广州\",\"value\":\"guangzhou\"}"));
    cp_free(j);
    /* Intake stores the alias as its value. */
    const char *more = "{\"id\":\"u9\",\"attrs\":{\"city\":\"广州\"}}\n";
    cp_load_options_t lo = CP_LOAD_OPTIONS_INIT;
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    ok(cp_load_ndjson_buf(db, more, strlen(more), &lo, &st, &err), &err);
    assert_int_equal(count(db, "city = \"guangzhou\""), 3);
    /* Survives a restart. */
    cp_db_close(db, NULL);
    cp_open_options_t o = {.size = sizeof(cp_open_options_t), .map_size = 1u << 28, .threads = 2};
    ok(cp_db_open(g_dir, &o, &db, &err), &err);
    assert_int_equal(count(db, "city = \"广州\""), 3);
    ok(cp_attr_alias_remove(db, "city", "广州", &err), &err);
    assert_int_equal(cp_attr_alias_remove(db, "city", "广州", &err), CP_ENOTFOUND);
    assert_int_equal(count(db, "city = \"guangzhou\""), 3);
    cp_db_close(db, NULL);
    rm_dir();
}

static void test_tags_chinese(void **state)
{
    (void)state;
    cp_db_t *db = seeded();
    cp_error_t err = {0};
    uint64_t n = 0;
    assert_int_equal(count(db, "tag:兴趣/金融/理财"), 1);
    assert_int_equal(count(db, "tag:金融/理财"), 1);
    assert_int_equal(count(db, "tag:彩妆"), 2);
    assert_int_equal(count(db, "tag:美妆/彩妆 AND tag:兴趣爱好"), 2);
    assert_int_equal(cp_count(db, "age > 0 OR tag:金融", &n, &err), CP_EINVAL);
    assert_int_equal(err.column, 12);
    assert_non_null(strstr(err.message, "兴趣/金融"));
    assert_non_null(strstr(err.message, "industry/finance"));
    assert_int_equal(count(db, "tag:行业/金融"), 1);
    char *j = NULL;
    ok(cp_tag_json(db, "彩妆", &j, &err), &err);
    assert_non_null(strstr(j, "\"path\":\"interest/beauty/makeup\""));
    assert_non_null(strstr(j, "\"display_path\":\"兴趣爱好/美妆/彩妆\""));
    cp_free(j);
    ok(cp_tags_search_json(db, "BEAUTY", 0, &j, &err), &err);
    assert_non_null(strstr(j, "\"matched\":2"));
    cp_free(j);
    ok(cp_tags_search_json(db, "金融", 1, &j, &err), &err);
    assert_non_null(strstr(j, "\"matched\":3")); /* 兴趣/金融, its child, industry/finance */
    assert_non_null(strstr(j, "\"truncated\":true"));
    cp_free(j);
    /* Crowds in any script, referenced bare. */
    ok(cp_crowd_create(db, "广州理财", "tag:金融/理财 OR tag:彩妆", CP_CROWD_STATIC, NULL, &err),
       &err);
    assert_int_equal(count(db, "crowd:广州理财"), 3);
    /* Its display-path reference protects the tag it resolves to. */
    assert_int_equal(cp_tag_delete(db, "兴趣/金融/理财", 0, &err), CP_ECONFLICT);
    assert_non_null(strstr(err.message, "广州理财"));
    /* Untagging a tag takes its descendants too. */
    const char *beauty[] = {"interest/beauty"};
    ok(cp_user_remove_tags(db, "u42", beauty, 1, &err), &err);
    assert_int_equal(count(db, "tag:interest/beauty"), 1);
    cp_db_close(db, NULL);
    rm_dir();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_seen),
        cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_tags_chinese),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
