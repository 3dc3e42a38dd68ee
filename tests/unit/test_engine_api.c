/* test_engine_api.c — the public API end to end on real data directories:
 * open errors and locking, NDJSON loads with bad lines, types, overwrite
 * semantics, tag descendants and removal, user deletion leaving no trace,
 * restart, crowds (static/dynamic, refresh, cycles, delete, export,
 * sample), batches and API keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cp_test.h"

#include "engine/engine.h"

static char g_dir[256];

static void rm_dir(const char *d)
{
    test_rmtree(d);
}

static cp_db_t *open_db(unsigned flags)
{
    return test_open_db(g_dir, &(cp_open_options_t){.size = sizeof(cp_open_options_t),
                                                    .flags = flags,
                                                    .map_size = 1u << 28,
                                                    .threads = 2});
}

static cp_db_t *fresh(void)
{
    test_tmpdir(g_dir, sizeof g_dir, "engine");
    return open_db(CP_OPEN_CREATE);
}

static uint64_t count(cp_db_t *db, const char *expr)
{
    uint64_t n = 0;
    cp_error_t err = {0};
    cp_status rc = cp_count(db, expr, &n, &err);
    if (rc)
        fprintf(stderr, "count %s: %s\n", expr, err.message);
    assert_int_equal(rc, CP_OK);
    return n;
}

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fprintf(stderr, "unexpected: %s\n", err->message);
    assert_int_equal(rc, CP_OK);
}

static void setup_model(cp_db_t *db)
{
    cp_error_t err = {0};
    const char *schema = "{\"attributes\":[{\"name\":\"age\",\"type\":\"int\"},"
                         "{\"name\":\"gender\",\"type\":\"enum\"},"
                         "{\"name\":\"city\",\"type\":\"string\"},"
                         "{\"name\":\"vip\",\"type\":\"bool\"},"
                         "{\"name\":\"seen\",\"type\":\"timestamp\"},"
                         "{\"name\":\"loc\",\"type\":\"geo\"}]}";
    ok(cp_schema_load_json(db, schema, strlen(schema), &err), &err);
    const char *tax = "{\"tags\":[{\"path\":\"interest/finance/consulting\",\"name\":\"融资咨询\"},"
                      "{\"path\":\"interest/finance/loans\"},"
                      "{\"path\":\"interest/sports\",\"name\":\"运动\"},"
                      "{\"path\":\"life/parent\"}]}";
    ok(cp_taxonomy_load_json(db, tax, strlen(tax), &err), &err);
}

typedef struct rejects {
    int n;
    uint64_t lines[16];
    char msgs[16][512];
} rejects_t;

static void on_reject(void *ud, const cp_error_t *e)
{
    rejects_t *r = ud;
    if (r->n < 16) {
        r->lines[r->n] = e->record;
        snprintf(r->msgs[r->n], sizeof r->msgs[0], "%s", e->message);
    }
    r->n++;
}

static const char *USERS =
    "{\"id\":\"u1\",\"attrs\":{\"age\":31,\"gender\":\"female\",\"city\":\"广州\",\"vip\":true,"
    "\"seen\":\"2024-01-02T00:00:00Z\",\"loc\":[23.02,113.12]},\"tags\":[\"interest/finance/"
    "consulting\"]}\n"
    "{\"id\":\"u2\",\"attrs\":{\"age\":45,\"gender\":\"male\",\"vip\":false,\"seen\":1700000000},"
    "\"tags\":[\"interest/sports\",\"life/parent\"]}\n"
    "\n"
    "{\"id\":\"u3\",\"attrs\":{\"age\":\"abc\"},\"tags\":[\"interest/sports\"]}\n" /* line 4 bad */
    "{\"id\":\"u4\",\"attrs\":{\"age\":20},\"tags\":[\"interest/nope\"]}\n"        /* line 5 bad */
    "{\"id\":\"u5\",\"attrs\":{\"age\":25,\"gender\":\"female\",\"loc\":[23.1,113.2]},"
    "\"tags\":[\"interest/finance/loans\"]}\r\n"
    "not json\n"                                                   /* line 7 bad */
    "{\"id\":\"u6\",\"attrs\":{\"age\":3.5}}\n"                    /* line 8 bad: strict ints */
    "{\"id\":\"u7\",\"attrs\":{\"nope\":1}}\n"                     /* line 9 bad */
    "{\"id\":\"u8\",\"attrs\":{\"loc\":[91,0]}}\n"                 /* line 10 bad */
    "{\"id\":\"u9\",\"tags\":[\"life\"],\"extra\":1}\n"            /* line 11 bad */
    "{\"id\":\"u10\",\"attrs\":{\"age\":-5},\"tags\":[\"life\"]}"; /* line 12, no newline */

static void load_users(cp_db_t *db, rejects_t *r, cp_load_stats_t *st)
{
    cp_error_t err = {0};
    cp_load_options_t o = {
        .size = sizeof(cp_load_options_t), .on_reject = on_reject, .ud = r, .batch_lines = 3};
    ok(cp_load_ndjson_buf(db, USERS, strlen(USERS), &o, st, &err), &err);
}

static void test_load_and_query(void **state)
{
    (void)state;
    cp_db_t *db = fresh();
    setup_model(db);
    rejects_t r = {0};
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    load_users(db, &r, &st);
    assert_int_equal(st.lines, 12);
    assert_int_equal(st.rejected, 7);
    assert_int_equal(st.users_created, 4); /* u1 u2 u5 u10 */
    assert_int_equal(st.tags_assigned, 5);
    assert_int_equal(st.bytes, strlen(USERS));
    assert_int_equal(r.n, 7);
    uint64_t want[] = {4, 5, 7, 8, 9, 10, 11};
    for (int i = 0; i < 7; i++)
        assert_int_equal(r.lines[i], want[i]);
    assert_non_null(
        strstr(r.msgs[0], "line 4: user \"u3\": attribute \"age\" expects int, got \"abc\""));
    assert_non_null(strstr(r.msgs[1], "unknown tag \"interest/nope\""));
    assert_non_null(strstr(r.msgs[3], "got 3.5"));
    assert_non_null(strstr(r.msgs[4], "unknown attribute \"nope\""));
    assert_non_null(strstr(r.msgs[6], "unknown field \"extra\""));

    /* Nothing of a bad line applied: u3, u4 do not exist. */
    char *j = NULL;
    cp_error_t err = {0};
    assert_int_equal(cp_user_json(db, "u3", &j, &err), CP_ENOTFOUND);
    assert_int_equal(cp_user_json(db, "u4", &j, &err), CP_ENOTFOUND);

    assert_int_equal(count(db, "all"), 4);
    assert_int_equal(count(db, "tag:interest"), 3);
    assert_int_equal(count(db, "tag:interest/finance"), 2);
    assert_int_equal(count(db, "tag:interest/sports"), 1);
    assert_int_equal(count(db, "tag:life"), 2);
    assert_int_equal(count(db, "age BETWEEN 25 AND 40"), 2);
    assert_int_equal(count(db, "age < 0"), 1);
    assert_int_equal(count(db, "gender = \"female\""), 2);
    assert_int_equal(count(db, "gender != \"female\""), 1);
    {
        /* A value never seen is an error, not a silent zero. */
        uint64_t none = 0;
        cp_error_t e2 = {0};
        assert_int_equal(cp_count(db, "gender = \"other\"", &none, &e2), CP_ENOTFOUND);
        assert_non_null(strstr(e2.message, "no value \"other\""));
    }
    assert_int_equal(count(db, "city = \"广州\""), 1);
    assert_int_equal(count(db, "vip = true"), 1);
    assert_int_equal(count(db, "vip = false"), 1);
    assert_int_equal(count(db, "seen >= \"2024-01-01\""), 1);
    assert_int_equal(count(db, "seen < \"2024-01-01\""), 1);
    assert_int_equal(count(db, "near(23.02, 113.12, 5km)"), 1);
    assert_int_equal(count(db, "near(23.02, 113.12, 50km)"), 2);
    assert_int_equal(count(db, "NOT tag:interest"), 1);
    assert_int_equal(count(db, "tag:interest AND NOT gender = \"female\""), 1);

    /* Unknown names are errors with positions. */
    uint64_t n;
    assert_int_equal(cp_count(db, "tag:interest AND tag:nope", &n, &err), CP_ENOTFOUND);
    assert_int_equal(err.column, 18);
    assert_int_equal(cp_count(db, "age = \"x\"", &n, &err), CP_ETYPE);
    assert_int_equal(cp_count(db, "age = ", &n, &err), CP_ESYNTAX);

    /* JSON tree form. */
    const char *tree =
        "{\"and\":[{\"tag\":\"interest\"},{\"attr\":\"age\",\"op\":\">\",\"value\":30}]}";
    ok(cp_count_json(db, tree, strlen(tree), &n, &err), &err);
    assert_int_equal(n, 2); /* u1 (31), u2 (45) */

    /* User view. */
    ok(cp_user_json(db, "u1", &j, &err), &err);
    assert_non_null(strstr(j, "\"age\":31"));
    assert_non_null(strstr(j, "\"vip\":true"));
    assert_non_null(strstr(j, "\"seen\":\"2024-01-02T00:00:00Z\""));
    assert_non_null(strstr(j, "\"tags\":[\"interest/finance/consulting\"]"));
    cp_free(j);

    /* Overwrite semantics: attrs overwrite, null removes, tags add. */
    const char *up = "{\"id\":\"u1\",\"attrs\":{\"age\":50,\"gender\":null,\"vip\":false},"
                     "\"tags\":[\"interest/sports\"]}";
    ok(cp_user_upsert_json(db, up, strlen(up), &err), &err);
    assert_int_equal(count(db, "age = 31"), 0);
    assert_int_equal(count(db, "age = 50"), 1);
    assert_int_equal(count(db, "gender = \"female\""), 1);
    assert_int_equal(count(db, "vip = false"), 2);
    assert_int_equal(count(db, "vip = true"), 0);
    assert_int_equal(count(db, "tag:interest/sports"), 2);
    assert_int_equal(count(db, "tag:interest/finance/consulting"), 1);
    /* A bad upsert changes nothing. */
    const char *bad = "{\"id\":\"u1\",\"attrs\":{\"age\":60,\"gender\":7}}";
    assert_int_equal(cp_user_upsert_json(db, bad, strlen(bad), &err), CP_ETYPE);
    assert_non_null(strstr(err.message, "user \"u1\": attribute \"gender\""));
    assert_int_equal(count(db, "age = 50"), 1);

    /* Iterate a result. */
    cp_result_t *res = NULL;
    ok(cp_eval(db, "tag:interest", &res, &err), &err);
    assert_int_equal(cp_result_count(res), 3);
    cp_iter_t *it = NULL;
    ok(cp_iter_open(db, res, &it, &err), &err);
    const char *id;
    char seen[64] = "";
    while (cp_iter_next(it, &id, &err) == CP_OK && id) {
        strcat(seen, id);
        strcat(seen, ",");
    }
    assert_string_equal(seen, "u1,u2,u5,");
    cp_iter_close(it);
    cp_result_free(res);

    cp_db_stats_t s = CP_DB_STATS_INIT;
    ok(cp_db_stats(db, &s, &err), &err);
    assert_int_equal(s.users, 4);
    assert_int_equal(s.ordinals, 4);
    assert_int_equal(s.tags, 7);
    assert_int_equal(s.attributes, 6);
    assert_true(s.bitmap_bytes > 0);
    cp_db_close(db, NULL);
    rm_dir(g_dir);
}

static void test_strict_and_stream(void **state)
{
    (void)state;
    cp_db_t *db = fresh();
    setup_model(db);
    cp_error_t err = {0};
    cp_load_options_t o = {.size = sizeof(cp_load_options_t), .flags = CP_LOAD_STRICT};
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    assert_int_equal(cp_load_ndjson_buf(db, USERS, strlen(USERS), &o, &st, &err), CP_ETYPE);
    assert_int_equal(err.record, 4);
    assert_non_null(strstr(err.message, "line 4:"));
    assert_int_equal(count(db, "all"), 0);
    const char *good = "{\"id\":\"a\",\"tags\":[\"life\"]}\n{\"id\":\"b\"}\n";
    ok(cp_load_ndjson_buf(db, good, strlen(good), &o, &st, &err), &err);
    assert_int_equal(count(db, "all"), 2);
    assert_int_equal(st.users_created, 2);

    /* Streaming from a FILE, with a line over 1 MiB skipped. */
    FILE *f = tmpfile();
    assert_non_null(f);
    fputs("{\"id\":\"s1\",\"tags\":[\"life/parent\"]}\n", f);
    fputs("{\"id\":\"big\",\"attrs\":{\"city\":\"", f);
    for (int i = 0; i < (1 << 20); i++)
        fputc('x', f);
    fputs("\"}}\n", f);
    fputs("{\"id\":\"s2\",\"attrs\":{\"age\":1}}", f);
    rewind(f);
    rejects_t r = {0};
    cp_load_options_t o2 = {.size = sizeof(cp_load_options_t), .on_reject = on_reject, .ud = &r};
    ok(cp_load_ndjson(db, f, &o2, &st, &err), &err);
    fclose(f);
    assert_int_equal(st.lines, 3);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(r.lines[0], 2);
    assert_non_null(strstr(r.msgs[0], "longer than"));
    assert_int_equal(count(db, "all"), 4);
    assert_int_equal(count(db, "age = 1"), 1);
    cp_db_close(db, NULL);
    rm_dir(g_dir);
}

static void test_tags_ops(void **state)
{
    (void)state;
    cp_db_t *db = fresh();
    setup_model(db);
    rejects_t r = {0};
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    load_users(db, &r, &st);
    cp_error_t err = {0};
    /* Remove tags. */
    const char *paths[] = {"interest/finance/consulting"};
    ok(cp_user_remove_tags(db, "u1", paths, 1, &err), &err);
    assert_int_equal(count(db, "tag:interest/finance"), 1);
    assert_int_equal(count(db, "tag:interest"), 2);
    const char *nope[] = {"interest/zzz"};
    assert_int_equal(cp_user_remove_tags(db, "u1", nope, 1, &err), CP_ENOTFOUND);
    assert_int_equal(cp_user_remove_tags(db, "zz", paths, 1, &err), CP_ENOTFOUND);
    /* Keep effective membership through another child. */
    const char *up = "{\"id\":\"u5\",\"tags\":[\"interest/finance/consulting\"]}";
    ok(cp_user_upsert_json(db, up, strlen(up), &err), &err);
    const char *loans[] = {"interest/finance/loans"};
    ok(cp_user_remove_tags(db, "u5", loans, 1, &err), &err);
    assert_int_equal(count(db, "tag:interest/finance"), 1);
    assert_int_equal(count(db, "tag:interest/finance/loans"), 0);

    /* Create, rename, move. */
    assert_int_equal(cp_tag_create(db, "interest/sports", NULL, NULL, &err), CP_EEXIST);
    assert_int_equal(cp_tag_create(db, "Bad Path", NULL, NULL, &err), CP_EINVAL);
    ok(cp_tag_create(db, "x/y/z", "Zed", "deep", &err), &err);
    ok(cp_tag_update(db, "interest/sports", "life/sports", "体育", NULL, &err), &err);
    assert_int_equal(count(db, "tag:life"), 2);
    assert_int_equal(count(db, "tag:interest"), 1);
    assert_int_equal(count(db, "tag:life/sports"), 1);
    uint64_t n;
    assert_int_equal(cp_count(db, "tag:interest/sports", &n, &err), CP_ENOTFOUND);
    char *j = NULL;
    ok(cp_tag_json(db, "life/sports", &j, &err), &err);
    assert_non_null(strstr(j, "\"name\":\"体育\""));
    assert_non_null(strstr(j, "\"count\":1"));
    assert_non_null(strstr(j, "\"parent\":\"life\""));
    cp_free(j);
    ok(cp_tags_json(db, NULL, &j, &err), &err);
    assert_non_null(strstr(j, "\"path\":\"x/y/z\""));
    cp_free(j);

    /* Crowds block deletes and moves of referenced tags. */
    ok(cp_crowd_create(db, "parents", "tag:life/parent", CP_CROWD_STATIC, NULL, &err), &err);
    assert_int_equal(cp_tag_delete(db, "life", 1, &err), CP_ECONFLICT);
    assert_non_null(strstr(err.message, "\"parents\""));
    assert_int_equal(cp_tag_update(db, "life/parent", "x/parent", NULL, NULL, &err), CP_ECONFLICT);
    assert_int_equal(cp_tag_delete(db, "life/sports", 0, &err), CP_OK);
    assert_int_equal(count(db, "tag:life"), 2);
    assert_int_equal(cp_tag_delete(db, "x", 0, &err), CP_ECONFLICT);
    ok(cp_tag_delete(db, "x", 1, &err), &err);
    cp_db_stats_t s = CP_DB_STATS_INIT;
    cp_db_stats(db, &s, NULL);
    assert_int_equal(s.tags, 6);
    cp_db_close(db, NULL);

    /* Everything survives a restart. */
    db = open_db(0);
    assert_int_equal(count(db, "tag:life"), 2);
    assert_int_equal(count(db, "tag:interest/finance"), 1);
    assert_int_equal(cp_count(db, "tag:x", &n, &err), CP_ENOTFOUND);
    assert_int_equal(cp_count(db, "tag:life/sports", &n, &err), CP_ENOTFOUND);
    cp_db_close(db, NULL);
    rm_dir(g_dir);
}

static int contains_any(const index_t *ix, uint32_t ord)
{
    if (roaring_bitmap_contains(ix->universe, ord))
        return 1;
    for (uint32_t i = 0; i < ix->ntags; i++)
        if ((ix->tags[i].direct && roaring_bitmap_contains(ix->tags[i].direct, ord)) ||
            (ix->tags[i].eff && roaring_bitmap_contains(ix->tags[i].eff, ord)))
            return 1;
    for (uint32_t i = 0; i < ix->nattrs; i++) {
        const idx_attr_t *a = &ix->attrs[i];
        if (!a->type)
            continue;
        if (a->bsi) {
            if (roaring_bitmap_contains(a->bsi->exists, ord) ||
                roaring_bitmap_contains(a->bsi->sign, ord))
                return 1;
            for (int s = 0; s < a->bsi->nslices; s++)
                if (roaring_bitmap_contains(a->bsi->slices[s], ord))
                    return 1;
        }
        if (a->exists && roaring_bitmap_contains(a->exists, ord))
            return 1;
        for (uint32_t v = 0; v < a->capvals; v++)
            if (a->vals[v] && roaring_bitmap_contains(a->vals[v], ord))
                return 1;
        if (a->col && ord < a->capcol && a->col[ord])
            return 1;
        if (a->geo && roaring_bitmap_contains(geo_index_exists(a->geo), ord))
            return 1;
    }
    for (uint32_t i = 0; i < ix->ncrowds; i++)
        if (ix->crowds[i] && roaring_bitmap_contains(ix->crowds[i], ord))
            return 1;
    return 0;
}

static void test_user_delete(void **state)
{
    (void)state;
    cp_db_t *db = fresh();
    setup_model(db);
    rejects_t r = {0};
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    load_users(db, &r, &st);
    cp_error_t err = {0};
    ok(cp_crowd_create(db, "everyone", "all", CP_CROWD_STATIC, NULL, &err), &err);
    ok(cp_crowd_create(db, "dyn", "tag:interest", CP_CROWD_DYNAMIC, NULL, &err), &err);
    char *j = NULL;
    ok(cp_user_json(db, "u1", &j, &err), &err);
    assert_non_null(strstr(j, "\"ordinal\":0"));
    assert_non_null(strstr(j, "\"crowds\":[\"everyone\",\"dyn\"]"));
    cp_free(j);
    assert_true(contains_any(db->ix, 0));
    ok(cp_user_delete(db, "u1", &err), &err);
    assert_false(contains_any(db->ix, 0));
    assert_int_equal(cp_user_delete(db, "u1", &err), CP_ENOTFOUND);
    assert_int_equal(cp_user_json(db, "u1", &j, &err), CP_ENOTFOUND);
    assert_int_equal(count(db, "crowd:everyone"), 3);
    cp_db_close(db, NULL);
    db = open_db(0);
    assert_false(contains_any(db->ix, 0));
    assert_int_equal(count(db, "all"), 3);
    /* Re-adding the id gets a new ordinal: ordinals are never reused. */
    const char *up = "{\"id\":\"u1\"}";
    ok(cp_user_upsert_json(db, up, strlen(up), &err), &err);
    ok(cp_user_json(db, "u1", &j, &err), &err);
    assert_non_null(strstr(j, "\"ordinal\":4"));
    cp_free(j);
    cp_db_close(db, NULL);
    rm_dir(g_dir);
}

static const char *EXPRS[] = {
    "all",
    "tag:interest",
    "tag:interest/finance AND age >= 25",
    "gender = \"female\" OR vip = false",
    "NOT (tag:life OR age BETWEEN 20 AND 40)",
    "seen >= \"2023-01-01\" AND NOT city = \"广州\"",
    "near(23.0, 113.1, 30km) OR age IN (45, -5)",
};

static void test_restart(void **state)
{
    (void)state;
    cp_db_t *db = fresh();
    setup_model(db);
    rejects_t r = {0};
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    load_users(db, &r, &st);
    uint64_t before[CP_ARRAY_LEN(EXPRS)];
    for (size_t i = 0; i < CP_ARRAY_LEN(EXPRS); i++)
        before[i] = count(db, EXPRS[i]);
    cp_error_t err = {0};
    ok(cp_crowd_create(db, "c1", EXPRS[3], CP_CROWD_STATIC, "desc", &err), &err);
    cp_db_close(db, NULL);
    db = open_db(CP_OPEN_READONLY);
    for (size_t i = 0; i < CP_ARRAY_LEN(EXPRS); i++)
        assert_int_equal(count(db, EXPRS[i]), before[i]);
    assert_int_equal(count(db, "crowd:c1"), before[3]);
    assert_int_equal(cp_tag_create(db, "q", NULL, NULL, &err), CP_EREADONLY);
    cp_db_close(db, NULL);
    rm_dir(g_dir);
}

static void test_open_errors(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "engine");
    rm_dir(g_dir); /* a directory that does not exist yet */
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    assert_int_equal(cp_db_open(g_dir, NULL, &db, &err), CP_ENOTFOUND);
    db = open_db(CP_OPEN_CREATE);
    pid_t pid = fork();
    if (pid == 0) {
        cp_db_t *d2 = NULL;
        cp_error_t e2 = {0};
        cp_status rc = cp_db_open(g_dir, NULL, &d2, &e2);
        _exit(rc == CP_ELOCKED && strstr(e2.message, "locked for writing") ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cp_db_close(db, NULL);
    /* Bump the format version behind its back. */
    store_t *st = NULL;
    store_txn_t *t = NULL;
    assert_int_equal(store_open(g_dir, 0, 1u << 28, 1, &st, &err), CP_OK);
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    assert_int_equal(store_meta_put_u64(t, "format_version", 99, &err), CP_OK);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
    store_close(st);
    assert_int_equal(cp_db_open(g_dir, NULL, &db, &err), CP_EVERSION);
    assert_non_null(strstr(err.message, "format version 99"));
    assert_int_equal(cp_format_version(), 1);
    rm_dir(g_dir);
}

typedef struct sink {
    char buf[4096];
    size_t len;
} sink_t;

static int sink_write(void *ud, const char *b, size_t n)
{
    sink_t *s = ud;
    if (s->len + n >= sizeof s->buf)
        return 1;
    memcpy(s->buf + s->len, b, n);
    s->len += n;
    s->buf[s->len] = '\0';
    return 0;
}

static void test_crowds(void **state)
{
    (void)state;
    cp_db_t *db = fresh();
    setup_model(db);
    rejects_t r = {0};
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    load_users(db, &r, &st);
    cp_error_t err = {0};
    ok(cp_crowd_create(db, "fin_static", "tag:interest/finance", CP_CROWD_STATIC, NULL, &err),
       &err);
    ok(cp_crowd_create(db, "fin_dyn", "tag:interest/finance", CP_CROWD_DYNAMIC, "d", &err), &err);
    ok(cp_crowd_create(db, "fin_or_parent", "crowd:fin_dyn OR tag:life/parent", CP_CROWD_DYNAMIC,
                       NULL, &err),
       &err);
    assert_int_equal(cp_crowd_create(db, "fin_dyn", "all", CP_CROWD_STATIC, NULL, &err), CP_EEXIST);
    assert_int_equal(cp_crowd_create(db, "bad name", "all", CP_CROWD_STATIC, NULL, &err),
                     CP_EINVAL);
    assert_int_equal(cp_crowd_create(db, "x", "crowd:nope", CP_CROWD_STATIC, NULL, &err),
                     CP_ENOTFOUND);
    assert_int_equal(count(db, "crowd:fin_static"), 2);
    assert_int_equal(count(db, "crowd:fin_or_parent"), 3);

    const char *up = "{\"id\":\"n1\",\"tags\":[\"interest/finance/loans\"]}";
    ok(cp_user_upsert_json(db, up, strlen(up), &err), &err);
    assert_int_equal(count(db, "crowd:fin_static"), 2);
    assert_int_equal(count(db, "crowd:fin_dyn"), 3);
    assert_int_equal(count(db, "crowd:fin_or_parent"), 4);
    ok(cp_crowd_refresh(db, "fin_static", &err), &err);
    assert_int_equal(count(db, "crowd:fin_static"), 3);
    char *j = NULL;
    ok(cp_crowd_json(db, "fin_static", &j, &err), &err);
    assert_non_null(strstr(j, "\"version\":2"));
    assert_non_null(strstr(j, "\"size\":3"));
    assert_non_null(strstr(j, "\"tree\":{"));
    cp_free(j);
    ok(cp_crowds_json(db, &j, &err), &err);
    assert_non_null(strstr(j, "\"name\":\"fin_or_parent\""));
    cp_free(j);

    /* Cycles and references. */
    assert_int_equal(cp_crowd_update(db, "fin_dyn", "crowd:fin_or_parent", &err), CP_ECYCLE);
    assert_int_equal(cp_crowd_update(db, "fin_dyn", "crowd:fin_dyn OR all", &err), CP_ECYCLE);
    assert_int_equal(cp_crowd_delete(db, "fin_dyn", &err), CP_ECONFLICT);
    assert_non_null(strstr(err.message, "\"fin_or_parent\""));
    ok(cp_crowd_update(db, "fin_dyn", "tag:interest/sports", &err), &err);
    assert_int_equal(count(db, "crowd:fin_dyn"), 1);
    assert_int_equal(count(db, "crowd:fin_or_parent"), 1);

    /* Export and sample. */
    sink_t s = {0};
    ok(cp_crowd_export(db, "fin_static", CP_EXPORT_NDJSON, sink_write, &s, &err), &err);
    assert_string_equal(s.buf, "{\"id\":\"u1\"}\n{\"id\":\"u5\"}\n{\"id\":\"n1\"}\n");
    s.len = 0;
    ok(cp_crowd_export(db, "fin_static", CP_EXPORT_CSV, sink_write, &s, &err), &err);
    assert_string_equal(s.buf, "id\nu1\nu5\nn1\n");
    char *a = NULL, *b = NULL, *c = NULL;
    ok(cp_crowd_sample_json(db, "fin_static", 2, 42, &a, &err), &err);
    ok(cp_crowd_sample_json(db, "fin_static", 2, 42, &b, &err), &err);
    assert_string_equal(a, b);
    assert_non_null(strstr(a, "\"size\":3"));
    ok(cp_crowd_sample_json(db, "fin_static", 10, 1, &c, &err), &err);
    assert_non_null(strstr(c, "[\"u1\",\"u5\",\"n1\"]"));
    cp_free(a);
    cp_free(b);
    cp_free(c);
    /* Each id is drawn about equally often. */
    int hits[3] = {0};
    for (uint64_t seed = 0; seed < 300; seed++) {
        ok(cp_crowd_sample_json(db, "fin_static", 1, seed, &a, &err), &err);
        hits[0] += strstr(a, "\"u1\"") != NULL;
        hits[1] += strstr(a, "\"u5\"") != NULL;
        hits[2] += strstr(a, "\"n1\"") != NULL;
        cp_free(a);
    }
    for (int i = 0; i < 3; i++)
        assert_true(hits[i] > 60 && hits[i] < 140);

    cp_result_t *m = NULL;
    ok(cp_crowd_members(db, "fin_or_parent", &m, &err), &err);
    assert_int_equal(cp_result_count(m), 1);
    cp_result_free(m);

    ok(cp_crowd_delete(db, "fin_or_parent", &err), &err);
    ok(cp_crowd_delete(db, "fin_dyn", &err), &err);
    assert_int_equal(cp_crowd_delete(db, "fin_dyn", &err), CP_ENOTFOUND);
    cp_db_close(db, NULL);
    db = open_db(0);
    assert_int_equal(count(db, "crowd:fin_static"), 3);
    uint64_t n;
    assert_int_equal(cp_count(db, "crowd:fin_dyn", &n, &err), CP_ENOTFOUND);
    cp_db_close(db, NULL);
    rm_dir(g_dir);
}

static void test_batch_and_keys(void **state)
{
    (void)state;
    cp_db_t *db = fresh();
    setup_model(db);
    cp_error_t err = {0};
    int32_t age, gender, vip, loc, seen, tag;
    ok(cp_attr_handle(db, "age", &age, &err), &err);
    ok(cp_attr_handle(db, "gender", &gender, &err), &err);
    ok(cp_attr_handle(db, "vip", &vip, &err), &err);
    ok(cp_attr_handle(db, "loc", &loc, &err), &err);
    ok(cp_attr_handle(db, "seen", &seen, &err), &err);
    ok(cp_tag_handle(db, "interest/sports", &tag, &err), &err);
    assert_int_equal(cp_tag_handle(db, "nope", &tag, &err), CP_ENOTFOUND);
    cp_batch_t *b = NULL;
    ok(cp_batch_begin(db, &b, &err), &err);
    assert_int_equal(cp_batch_tag(b, tag, &err), CP_EINVAL);
    for (int i = 0; i < 1000; i++) {
        char id[32];
        snprintf(id, sizeof id, "b%d", i);
        ok(cp_batch_user(b, id, &err), &err);
        ok(cp_batch_int(b, age, i % 100, &err), &err);
        ok(cp_batch_str(b, gender, i % 2 ? "male" : "female", &err), &err);
        ok(cp_batch_bool(b, vip, i % 3 == 0, &err), &err);
        ok(cp_batch_str(b, seen, "2024-05-01", &err), &err);
        ok(cp_batch_geo(b, loc, 10 + (i % 10) * 0.001, 20, &err), &err);
        if (i % 4 == 0)
            ok(cp_batch_tag(b, tag, &err), &err);
    }
    assert_int_equal(cp_batch_int(b, gender, 1, &err), CP_ETYPE);
    assert_int_equal(cp_batch_geo(b, loc, 100, 0, &err), CP_EINVAL);
    ok(cp_batch_commit(b, &err), &err);
    assert_int_equal(count(db, "all"), 1000);
    assert_int_equal(count(db, "age < 10"), 100);
    assert_int_equal(count(db, "gender = \"male\""), 500);
    assert_int_equal(count(db, "vip = true"), 334);
    assert_int_equal(count(db, "tag:interest"), 250);
    assert_int_equal(count(db, "seen = \"2024-05-01\""), 1000);
    assert_int_equal(count(db, "near(10, 20, 2km)"), 1000);
    cp_batch_abort(NULL);
    ok(cp_batch_begin(db, &b, &err), &err);
    ok(cp_batch_user(b, "never", &err), &err);
    cp_batch_abort(b);
    assert_int_equal(count(db, "all"), 1000);

    /* Keys. */
    char *k1 = NULL, *k2 = NULL;
    ok(cp_key_create(db, CP_ROLE_WRITE, "ci", &k1, &err), &err);
    ok(cp_key_create(db, CP_ROLE_ADMIN, NULL, &k2, &err), &err);
    uint64_t nk;
    ok(cp_key_count(db, &nk, &err), &err);
    assert_int_equal(nk, 2);
    cp_role role;
    ok(cp_key_check(db, k1, &role, &err), &err);
    assert_int_equal(role, CP_ROLE_WRITE);
    assert_int_equal(cp_key_check(db, "cpk_nope", &role, NULL), CP_EAUTH);
    char *j = NULL;
    ok(cp_keys_json(db, &j, &err), &err);
    assert_null(strstr(j, k1 + 21)); /* never the secret */
    assert_non_null(strstr(j, "\"role\":\"write\""));
    cp_free(j);
    cp_db_close(db, NULL);
    db = open_db(0);
    ok(cp_key_check(db, k2, &role, &err), &err);
    assert_int_equal(role, CP_ROLE_ADMIN);
    char id[17];
    memcpy(id, k1 + 4, 16);
    id[16] = '\0';
    ok(cp_key_revoke(db, id, &err), &err);
    assert_int_equal(cp_key_check(db, k1, &role, NULL), CP_EAUTH);
    assert_int_equal(cp_key_revoke(db, id, &err), CP_ENOTFOUND);
    assert_string_equal(cp_role_name(CP_ROLE_READ), "read");
    assert_string_equal(cp_attr_type_name(CP_ATTR_GEO), "geo");
    cp_free(k1);
    cp_free(k2);

    /* Expression conversions. */
    char *jt = NULL, *tx = NULL;
    ok(cp_expr_to_json("tag:a AND age > 3", &jt, &err), &err);
    ok(cp_expr_from_json(jt, strlen(jt), &tx, &err), &err);
    assert_string_equal(tx, "tag:a AND age > 3");
    cp_free(jt);
    cp_free(tx);
    cp_db_close(db, NULL);
    rm_dir(g_dir);
}

/* A commit that fails after memory changed (here: the map is full) puts
 * the handle into the failed state; reopening gives the last commit. */
static void test_failed_state(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "engine");
    cp_open_options_t o = {.size = sizeof(cp_open_options_t),
                           .flags = CP_OPEN_CREATE,
                           .map_size = 1u << 20,
                           .threads = 1};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    ok(cp_db_open(g_dir, &o, &db, &err), &err);
    setup_model(db);
    buf_t b;
    buf_init(&b, 0);
    for (int i = 0; i < 20000; i++)
        buf_printf(&b,
                   "{\"id\":\"user-with-a-longish-id-%06d\",\"attrs\":{\"age\":%d},"
                   "\"tags\":[\"interest/sports\"]}\n",
                   i, i % 90);
    cp_load_options_t lo = {.size = sizeof(cp_load_options_t), .batch_lines = 500};
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    cp_status rc = cp_load_ndjson_buf(db, b.data, b.len, &lo, &st, &err);
    assert_int_equal(rc, CP_EIO);
    assert_non_null(strstr(err.message, "reopen the data directory"));
    uint64_t committed = st.users_created;
    assert_true(committed % 500 == 0 && committed < 20000);
    uint64_t n;
    assert_int_equal(cp_count(db, "all", &n, &err), CP_EIO);
    assert_int_equal(cp_tag_create(db, "zz", NULL, NULL, &err), CP_EIO);
    cp_db_close(db, NULL);
    o.flags = 0;
    o.map_size = 1u << 28;
    ok(cp_db_open(g_dir, &o, &db, &err), &err);
    assert_int_equal(count(db, "all"), committed);
    assert_int_equal(count(db, "tag:interest"), committed);
    /* And it takes writes again. */
    ok(cp_load_ndjson_buf(db, b.data, b.len, &lo, &st, &err), &err);
    assert_int_equal(count(db, "all"), 20000);
    uint64_t young = 0;
    for (int i = 0; i < 20000; i++)
        young += i % 90 < 45;
    assert_int_equal(count(db, "age < 45"), young);
    buf_free(&b);
    cp_db_close(db, NULL);
    rm_dir(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_load_and_query),
        cmocka_unit_test(test_strict_and_stream),
        cmocka_unit_test(test_tags_ops),
        cmocka_unit_test(test_user_delete),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_crowds),
        cmocka_unit_test(test_batch_and_keys),
        cmocka_unit_test(test_failed_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
