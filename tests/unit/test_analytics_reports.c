/* test_analytics_reports.c — insight, overlap, clustering and tiers on a
 * generated population spread over several 65,536-user chunks, compared
 * with naive per-user loops over the data the test generated; plus bad
 * input (unknown crowds, too many crowds, bad buckets, k out of range). */
#include <math.h>
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

#include "analytics/analytics.h"

#define NU 150000 /* users: three chunks */

/* Tags: 0 = a, 1 = a/x, 2 = a/y, 3 = b, 4 = b/z (direct tags: 1, 2, 3, 4). */
static const char *const TAGS[] = {"a", "a/x", "a/y", "b", "b/z"};
#define NT 5

typedef struct user {
    int age;         /* -1 = none */
    int gender;      /* 0 f, 1 m, 2 none */
    int points;      /* -1 = none */
    int x, y;        /* cluster coordinates; x = INT32_MIN: none */
    int64_t seen;    /* timestamp */
    unsigned direct; /* bits over TAGS: 1 = a/x, 2 = a/y, 3 = b, 4 = b/z */
} user_t;

static user_t U[NU];
static char g_dir[256];
static cp_db_t *g_db;

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fprintf(stderr, "unexpected: %s\n", err->message);
    assert_int_equal(rc, CP_OK);
}

static int has_tag(const user_t *u, int t)
{
    switch (t) {
    case 0:
        return (u->direct & (2u | 4u)) != 0;
    case 3:
        return (u->direct & (8u | 16u)) != 0;
    default:
        return (u->direct & (1u << t)) != 0;
    }
}

/* Crowds used below, as predicates. */
static int in_crowd_a(const user_t *u)
{
    return has_tag(u, 0);
}
static int in_old(const user_t *u)
{
    return u->age >= 40;
}
static int in_f(const user_t *u)
{
    return u->gender == 0;
}

static json_t *call(cp_status (*fn)(cp_db_t *, const char *, size_t, char **, cp_error_t *),
                    const char *req)
{
    char *out = NULL;
    cp_error_t err = {0};
    ok(fn(g_db, req, strlen(req), &out, &err), &err);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    assert_non_null(j);
    cp_free(out);
    return j;
}

static cp_status call_err(cp_status (*fn)(cp_db_t *, const char *, size_t, char **, cp_error_t *),
                          const char *req, cp_error_t *err)
{
    char *out = NULL;
    cp_status rc = fn(g_db, req, strlen(req), &out, err);
    assert_null(out);
    return rc;
}

static uint64_t count(const char *expr)
{
    uint64_t n = 0;
    cp_error_t err = {0};
    ok(cp_count(g_db, expr, &n, &err), &err);
    return n;
}

static void set_min_count(unsigned n)
{
    char b[64];
    cp_error_t err = {0};
    snprintf(b, sizeof b, "{\"min_count\":%u}", n);
    ok(cp_analytics_settings_set_json(g_db, b, strlen(b), &err), &err);
}

static int setup(void **state)
{
    (void)state;
    test_tmpdir(g_dir, sizeof g_dir, "analytics");
    cp_open_options_t o = {.size = sizeof(cp_open_options_t),
                           .flags = CP_OPEN_CREATE,
                           .map_size = 1u << 30,
                           .threads = 2};
    cp_error_t err = {0};
    ok(cp_db_open(g_dir, &o, &g_db, &err), &err);
    const char *schema = "{\"attributes\":[{\"name\":\"age\",\"type\":\"int\"},"
                         "{\"name\":\"gender\",\"type\":\"enum\"},"
                         "{\"name\":\"points\",\"type\":\"int\"},"
                         "{\"name\":\"px\",\"type\":\"int\"},{\"name\":\"py\",\"type\":\"int\"},"
                         "{\"name\":\"seen\",\"type\":\"timestamp\"},"
                         "{\"name\":\"note\",\"type\":\"string\"}]}";
    ok(cp_schema_load_json(g_db, schema, strlen(schema), &err), &err);
    const char *tax = "{\"tags\":[{\"path\":\"a/x\"},{\"path\":\"a/y\"},{\"path\":\"b/z\"}]}";
    ok(cp_taxonomy_load_json(g_db, tax, strlen(tax), &err), &err);
    int32_t th[NT], ah[7];
    for (int t = 0; t < NT; t++)
        ok(cp_tag_handle(g_db, TAGS[t], &th[t], &err), &err);
    const char *an[] = {"age", "gender", "points", "px", "py", "seen", "note"};
    for (int a = 0; a < 7; a++)
        ok(cp_attr_handle(g_db, an[a], &ah[a], &err), &err);
    uint64_t st = 7;
    cp_batch_t *b = NULL;
    for (int i = 0; i < NU; i++) {
        if (b == NULL)
            ok(cp_batch_begin(g_db, &b, &err), &err);
        user_t *u = &U[i];
        uint64_t r = rand_next(&st);
        u->age = r % 10 == 0 ? -1 : (int)(rand_next(&st) % 80) + ((i >= 70000) ? 10 : 0);
        u->gender = (int)(rand_next(&st) % 3);
        u->points = r % 7 == 0 ? -1 : (int)(rand_next(&st) % 30000);
        /* three blobs far apart; every 13th user lacks px */
        int blob = (int)(rand_next(&st) % 3);
        u->x = i % 13 == 0 ? INT32_MIN : blob * 1000 + (int)(rand_next(&st) % 50);
        u->y = blob * -500 + (int)(rand_next(&st) % 40);
        u->seen = 1500000000 + (int64_t)(rand_next(&st) % (6 * 31536000ull));
        /* tag densities differ by tag and by chunk */
        u->direct = 0;
        if (rand_next(&st) % 4 == 0)
            u->direct |= 2;
        if (rand_next(&st) % (i < 65536 ? 9 : 3) == 0)
            u->direct |= 4;
        if (rand_next(&st) % 50 == 0)
            u->direct |= 8;
        if ((u->direct & 4) && rand_next(&st) % 2 == 0)
            u->direct |= 16;
        char id[32];
        snprintf(id, sizeof id, "u%d", i);
        ok(cp_batch_user(b, id, &err), &err);
        for (int t = 1; t < NT; t++)
            if (u->direct & (1u << t))
                ok(cp_batch_tag(b, th[t], &err), &err);
        if (u->age >= 0)
            ok(cp_batch_int(b, ah[0], u->age, &err), &err);
        if (u->gender < 2)
            ok(cp_batch_str(b, ah[1], u->gender ? "m" : "f", &err), &err);
        if (u->points >= 0)
            ok(cp_batch_int(b, ah[2], u->points, &err), &err);
        if (u->x != INT32_MIN)
            ok(cp_batch_int(b, ah[3], u->x, &err), &err);
        ok(cp_batch_int(b, ah[4], u->y, &err), &err);
        ok(cp_batch_int(b, ah[5], u->seen, &err), &err);
        ok(cp_batch_str(b, ah[6], i % 2 ? "odd \"q\"" : "even", &err), &err);
        if ((i + 1) % 50000 == 0) {
            ok(cp_batch_commit(b, &err), &err);
            b = NULL;
        }
    }
    if (b)
        ok(cp_batch_commit(b, &err), &err);
    ok(cp_crowd_create(g_db, "crowd_a", "tag:a", CP_CROWD_STATIC, NULL, &err), &err);
    ok(cp_crowd_create(g_db, "old", "age >= 40", CP_CROWD_STATIC, NULL, &err), &err);
    ok(cp_crowd_create(g_db, "women", "gender = \"f\"", CP_CROWD_DYNAMIC, NULL, &err), &err);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cp_db_close(g_db, NULL);
    test_rmtree(g_dir);
    return 0;
}

/* Finds a cell of a report by tag path or attribute + value label. */
static json_t *find_cell(json_t *cells, const char *tag, const char *attr, const char *value)
{
    size_t i;
    json_t *c;
    json_array_foreach(cells, i, c)
    {
        const char *t = json_string_value(json_object_get(c, "tag"));
        const char *a = json_string_value(json_object_get(c, "attribute"));
        const char *v = json_string_value(json_object_get(c, "value"));
        if (tag && t && strcmp(t, tag) == 0)
            return c;
        if (attr && a && v && strcmp(a, attr) == 0 && strcmp(v, value) == 0)
            return c;
    }
    return NULL;
}

static void check_cell(json_t *c, uint64_t nc, uint64_t nb, uint64_t csize, uint64_t bsize)
{
    assert_non_null(c);
    assert_int_equal(json_integer_value(json_object_get(c, "members")), nc);
    assert_int_equal(json_integer_value(json_object_get(c, "baseline_members")), nb);
    double tgi = ((double)nc / csize) / ((double)nb / bsize) * 100;
    double got = json_real_value(json_object_get(c, "tgi"));
    assert_true(fabs(got - tgi) <= 1e-4 * tgi + 1e-9);
}

/* Insight against all users and against another crowd, every cell. */
static void test_insight_naive(void **state)
{
    (void)state;
    set_min_count(0);
    static const int lo[] = {0, 18, 25, 30, 35, 40, 50, 60};
    for (int pass = 0; pass < 2; pass++) {
        json_t *r = call(cp_insight_json,
                         pass == 0 ? "{\"crowd\":\"crowd_a\",\"top\":3}"
                                   : "{\"crowd\":{\"expression\":\"tag:a\"},\"baseline\":\"women\","
                                     "\"sort\":\"count\"}");
        json_t *cells = json_object_get(r, "cells");
        uint64_t csize = 0, bsize = 0;
        for (int i = 0; i < NU; i++) {
            csize += in_crowd_a(&U[i]);
            bsize += pass == 0 ? 1 : in_f(&U[i]);
        }
        assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "crowd"), "size")),
                         csize);
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(r, "baseline"), "size")), bsize);
        for (int t = 0; t < NT; t++) {
            uint64_t nc = 0, nb = 0;
            for (int i = 0; i < NU; i++) {
                nc += in_crowd_a(&U[i]) && has_tag(&U[i], t);
                nb += (pass == 0 || in_f(&U[i])) && has_tag(&U[i], t);
            }
            json_t *c = find_cell(cells, TAGS[t], NULL, NULL);
            assert_non_null(c);
            if (nc == 0 || nb == 0) {
                assert_int_equal(json_integer_value(json_object_get(c, "members")), nc);
                continue;
            }
            check_cell(c, nc, nb, csize, bsize);
        }
        /* age buckets (default age bounds) */
        for (int k = 0; k < 8; k++) {
            int hi = k < 7 ? lo[k + 1] - 1 : 1 << 30;
            uint64_t nc = 0, nb = 0;
            for (int i = 0; i < NU; i++) {
                int in = U[i].age >= lo[k] && U[i].age <= hi;
                nc += in && in_crowd_a(&U[i]);
                nb += in && (pass == 0 || in_f(&U[i]));
            }
            char label[32];
            if (k < 7)
                snprintf(label, sizeof label, "%d-%d", lo[k], hi);
            else
                snprintf(label, sizeof label, "%d+", lo[k]);
            check_cell(find_cell(cells, NULL, "age", label), nc, nb, csize, bsize);
        }
        /* enum values */
        uint64_t nc = 0, nb = 0;
        for (int i = 0; i < NU; i++) {
            nc += U[i].gender == 1 && in_crowd_a(&U[i]);
            nb += U[i].gender == 1 && (pass == 0 || in_f(&U[i]));
        }
        if (pass == 0)
            check_cell(find_cell(cells, NULL, "gender", "m"), nc, nb, csize, bsize);
        else
            assert_true(
                json_is_null(json_object_get(find_cell(cells, NULL, "gender", "m"), "tgi")));
        /* timestamp by year: 2018 */
        nc = nb = 0;
        for (int i = 0; i < NU; i++) {
            int in = U[i].seen >= 1514764800 && U[i].seen < 1546300800;
            nc += in && in_crowd_a(&U[i]);
            nb += in && (pass == 0 || in_f(&U[i]));
        }
        check_cell(find_cell(cells, NULL, "seen", "2018"), nc, nb, csize, bsize);
        /* every cell's expression selects exactly its members */
        size_t i;
        json_t *c;
        int checked = 0;
        json_array_foreach(cells, i, c)
        {
            if (json_object_get(c, "members") == NULL || checked >= 40)
                continue;
            char q[1024];
            snprintf(q, sizeof q, "tag:a AND (%s)",
                     json_string_value(json_object_get(c, "expression")));
            assert_int_equal(count(q), json_integer_value(json_object_get(c, "members")));
            checked++;
        }
        assert_true(checked > 10);
        /* top_over: TGI > 100, descending */
        json_t *over = json_object_get(r, "top_over");
        double prev = 1e300;
        json_array_foreach(over, i, c)
        {
            double t = json_real_value(json_object_get(c, "tgi"));
            assert_true(t > 100 && t <= prev);
            prev = t;
        }
        if (pass == 0)
            assert_true(json_array_size(over) <= 3);
        json_decref(r);
    }
}

static void test_insight_buckets_and_suppression(void **state)
{
    (void)state;
    set_min_count(0);
    json_t *r =
        call(cp_insight_json, "{\"crowd\":\"old\",\"tags\":[\"b\"],\"attributes\":[\"points\"],"
                              "\"buckets\":{\"points\":[1000,20000]},\"min_count\":9000}");
    json_t *cells = json_object_get(r, "cells");
    assert_int_equal(json_integer_value(json_object_get(r, "min_count")), 9000);
    /* tags b and b/z, points <1000, 1000-19999, 20000+ */
    assert_int_equal(json_array_size(cells), 5);
    uint64_t csize = 0;
    for (int i = 0; i < NU; i++)
        csize += in_old(&U[i]);
    const char *labels[] = {"<1000", "1000-19999", "20000+"};
    int lo[] = {INT32_MIN, 1000, 20000}, hi[] = {999, 19999, INT32_MAX};
    for (int k = 0; k < 3; k++) {
        uint64_t nc = 0, nb = 0;
        for (int i = 0; i < NU; i++) {
            int in = U[i].points >= 0 && U[i].points >= lo[k] && U[i].points <= hi[k];
            nc += in && in_old(&U[i]);
            nb += in;
        }
        json_t *c = find_cell(cells, NULL, "points", labels[k]);
        assert_non_null(c);
        if (nc < 9000 || nb < 9000) {
            assert_true(json_is_true(json_object_get(c, "suppressed")));
            assert_null(json_object_get(c, "members"));
            assert_null(json_object_get(c, "tgi"));
        } else {
            check_cell(c, nc, nb, csize, NU);
        }
    }
    json_decref(r);
    /* The database setting is a floor a request cannot lower. */
    set_min_count(1000000);
    r = call(cp_insight_json, "{\"crowd\":\"old\",\"tags\":\"a\",\"attributes\":false,"
                              "\"min_count\":1}");
    assert_int_equal(json_integer_value(json_object_get(r, "min_count")), 1000000);
    assert_int_equal(json_integer_value(json_object_get(r, "suppressed")),
                     json_array_size(json_object_get(r, "cells")));
    json_decref(r);
    set_min_count(0);
}

static void test_insight_bad_input(void **state)
{
    (void)state;
    cp_error_t err = {0};
    assert_int_equal(call_err(cp_insight_json, "{\"crowd\":\"nope\"}", &err), CP_ENOTFOUND);
    assert_non_null(strstr(err.message, "nope"));
    assert_int_equal(call_err(cp_insight_json, "{}", &err), CP_EINVAL);
    assert_int_equal(
        call_err(cp_insight_json, "{\"crowd\":\"old\",\"baseline\":{\"crowd\":\"x\"}}", &err),
        CP_ENOTFOUND);
    assert_int_equal(
        call_err(cp_insight_json, "{\"crowd\":\"old\",\"buckets\":{\"age\":[30,20]}}", &err),
        CP_EINVAL);
    assert_non_null(strstr(err.message, "ascending"));
    assert_int_equal(
        call_err(cp_insight_json, "{\"crowd\":\"old\",\"buckets\":{\"gender\":[1]}}", &err),
        CP_EINVAL);
    assert_int_equal(
        call_err(cp_insight_json, "{\"crowd\":\"old\",\"buckets\":{\"nosuch\":[1]}}", &err),
        CP_ENOTFOUND);
    assert_int_equal(call_err(cp_insight_json, "{\"crowd\":\"old\",\"tags\":\"zz\"}", &err),
                     CP_ENOTFOUND);
    assert_int_equal(call_err(cp_insight_json, "{\"crowd\":\"old\",\"sort\":\"x\"}", &err),
                     CP_EINVAL);
    assert_int_equal(call_err(cp_insight_json, "{\"crowd\":\"old\",\"bogus\":1}", &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "bogus"));
    assert_int_equal(call_err(cp_insight_json, "{\"crowd\":{\"expression\":\"age >\"}}", &err),
                     CP_ESYNTAX);
    assert_int_equal(call_err(cp_insight_json, "[1]", &err), CP_EINVAL);
}

static void test_overlap_naive(void **state)
{
    (void)state;
    set_min_count(0);
    json_t *r = call(cp_overlap_json,
                     "{\"crowds\":[\"crowd_a\",\"old\",{\"expression\":\"gender = \\\"f\\\"\"}]}");
    int (*pred[3])(const user_t *) = {in_crowd_a, in_old, in_f};
    uint64_t region[8] = {0}, size[3] = {0};
    for (int i = 0; i < NU; i++) {
        int m = 0;
        for (int c = 0; c < 3; c++)
            if (pred[c](&U[i])) {
                m |= 1 << c;
                size[c]++;
            }
        region[m]++;
    }
    json_t *venn = json_object_get(r, "venn");
    assert_int_equal(json_array_size(venn), 7);
    for (int m = 1; m < 8; m++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(venn, m - 1), "count")),
                         region[m]);
    uint64_t uni = 0;
    for (int m = 1; m < 8; m++)
        uni += region[m];
    assert_int_equal(json_integer_value(json_object_get(r, "union")), uni);
    json_t *pairs = json_object_get(r, "pairs");
    int p = 0;
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++, p++) {
            uint64_t x = 0;
            for (int m = 1; m < 8; m++)
                if ((m & (1 << a)) && (m & (1 << b)))
                    x += region[m];
            json_t *o = json_array_get(pairs, (size_t)p);
            assert_int_equal(json_integer_value(json_object_get(o, "intersection")), x);
            double jac = (double)x / (double)(size[a] + size[b] - x);
            assert_true(fabs(json_real_value(json_object_get(o, "jaccard")) - jac) < 1e-5 * jac);
            double ain = (double)x / size[a];
            assert_true(fabs(json_real_value(json_object_get(o, "a_in_b")) - ain) < 1e-5 * ain);
        }
    json_t *cr = json_object_get(r, "crowds");
    for (int c = 0; c < 3; c++) {
        assert_int_equal(json_integer_value(json_object_get(json_array_get(cr, c), "size")),
                         size[c]);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(cr, c), "unique")),
                         region[1 << c]);
    }
    json_decref(r);

    /* ten crowds: pairwise only */
    char req[2048] = "{\"crowds\":[";
    for (int c = 0; c < 10; c++) {
        char e[128];
        snprintf(e, sizeof e, "%s{\"expression\":\"age BETWEEN %d AND %d\"}", c ? "," : "", c * 8,
                 c * 8 + 20);
        strcat(req, e);
    }
    strcat(req, "]}");
    r = call(cp_overlap_json, req);
    assert_null(json_object_get(r, "venn"));
    pairs = json_object_get(r, "pairs");
    assert_int_equal(json_array_size(pairs), 45);
    p = 0;
    for (int a = 0; a < 10; a++)
        for (int b = a + 1; b < 10; b++, p++) {
            uint64_t x = 0;
            for (int i = 0; i < NU; i++)
                x += U[i].age >= b * 8 && U[i].age <= a * 8 + 20;
            json_t *o = json_array_get(pairs, (size_t)p);
            assert_int_equal(json_integer_value(json_object_get(o, "intersection")), x);
        }
    json_decref(r);

    cp_error_t err = {0};
    char big[2048] = "{\"crowds\":[";
    for (int c = 0; c < 11; c++)
        strcat(big, c ? ",\"old\"" : "\"old\"");
    strcat(big, "]}");
    assert_int_equal(call_err(cp_overlap_json, big, &err), CP_ELIMIT);
    assert_int_equal(call_err(cp_overlap_json, "{\"crowds\":[\"old\"]}", &err), CP_EINVAL);
    assert_int_equal(call_err(cp_overlap_json, "{\"crowds\":[\"old\",\"ghost\"]}", &err),
                     CP_ENOTFOUND);
    assert_non_null(strstr(err.message, "crowds[1]"));
    assert_int_equal(call_err(cp_overlap_json, "{\"crowds\":[\"old\",5]}", &err), CP_EINVAL);

    /* suppression */
    set_min_count(60000);
    r = call(cp_overlap_json, "{\"crowds\":[\"crowd_a\",\"old\"]}");
    json_t *o = json_array_get(json_object_get(r, "pairs"), 0);
    uint64_t x = 0;
    for (int i = 0; i < NU; i++)
        x += in_crowd_a(&U[i]) && in_old(&U[i]);
    if (x < 60000) {
        assert_true(json_is_true(json_object_get(o, "suppressed")));
        assert_null(json_object_get(o, "intersection"));
    }
    json_decref(r);
    set_min_count(0);
}

/* Clusters: three separated blobs; centroids equal naive member means;
 * deterministic; stored as tags; smaller k empties the old extra tag. */
static void test_cluster(void **state)
{
    (void)state;
    set_min_count(0);
    const char *req = "{\"attributes\":[\"px\",\"py\"],\"k\":3,\"root\":\"cluster/blobs\","
                      "\"sample\":20000,\"elbow\":[1,4]}";
    json_t *r = call(cp_cluster_json, req);
    uint64_t excluded = 0;
    for (int i = 0; i < NU; i++)
        excluded += U[i].x == INT32_MIN;
    assert_int_equal(json_integer_value(json_object_get(r, "excluded")), excluded);
    assert_int_equal(json_integer_value(json_object_get(r, "population")), NU - excluded);
    assert_true(json_is_true(json_object_get(r, "stored")));
    json_t *cl = json_object_get(r, "clusters");
    assert_int_equal(json_array_size(cl), 3);
    uint64_t total = 0;
    for (int j = 0; j < 3; j++) {
        json_t *o = json_array_get(cl, (size_t)j);
        char path[64];
        snprintf(path, sizeof path, "tag:cluster/blobs/c%d", j + 1);
        uint64_t size = (uint64_t)json_integer_value(json_object_get(o, "size"));
        assert_int_equal(count(path), size);
        total += size;
        /* naive mean of the blob this cluster holds */
        double cx = json_real_value(json_object_get(json_object_get(o, "centroid"), "px"));
        int blob = (int)lround(cx / 1000.0);
        double sx = 0, sy = 0;
        uint64_t n = 0;
        for (int i = 0; i < NU; i++)
            if (U[i].x != INT32_MIN && U[i].x / 1000 == blob) {
                sx += U[i].x;
                sy += U[i].y;
                n++;
            }
        assert_int_equal(n, size);
        assert_true(fabs(cx - sx / n) <= 1e-5 * fabs(sx / n) + 1e-9);
        double cy = json_real_value(json_object_get(json_object_get(o, "centroid"), "py"));
        assert_true(fabs(cy - sy / n) <= 1e-5 * fabs(sy / n) + 1e-9);
        assert_true(json_is_array(json_object_get(o, "top_tags")));
    }
    assert_int_equal(total, NU - excluded);
    /* elbow: inertia falls until k = 3, then flattens */
    json_t *el = json_object_get(r, "elbow");
    assert_int_equal(json_array_size(el), 4);
    double i1 = json_real_value(json_object_get(json_array_get(el, 0), "inertia"));
    double i3 = json_real_value(json_object_get(json_array_get(el, 2), "inertia"));
    double i4 = json_real_value(json_object_get(json_array_get(el, 3), "inertia"));
    assert_true(i3 < i1 / 50);
    assert_true(i4 <= i3 * 1.0001);
    /* deterministic: the same request gives the same clusters */
    json_t *r2 = call(cp_cluster_json, req);
    assert_true(json_equal(json_object_get(r, "elbow"), json_object_get(r2, "elbow")));
    for (size_t j = 0; j < 3; j++) {
        json_t *a = json_array_get(json_object_get(r, "clusters"), j),
               *b = json_array_get(json_object_get(r2, "clusters"), j);
        assert_true(json_equal(json_object_get(a, "centroid"), json_object_get(b, "centroid")));
        assert_true(json_equal(json_object_get(a, "size"), json_object_get(b, "size")));
    }
    json_decref(r);
    json_decref(r2);
    /* the tag description holds the centroid */
    char *tj = NULL;
    cp_error_t err = {0};
    ok(cp_tag_json(g_db, "cluster/blobs/c1", &tj, &err), &err);
    assert_non_null(strstr(tj, "centroid: px="));
    cp_free(tj);
    /* k = 2 on a crowd: c3 is emptied, not deleted */
    r = call(cp_cluster_json, "{\"attributes\":[\"px\"],\"k\":2,\"root\":\"cluster/blobs\","
                              "\"crowd\":\"old\"}");
    assert_int_equal(count("tag:cluster/blobs/c3"), 0);
    assert_int_equal(count("tag:cluster/blobs"), count("crowd:old AND px >= -1000000000"));
    assert_int_equal(count("tag:cluster/blobs"),
                     json_integer_value(json_object_get(r, "population")));
    json_decref(r);
    /* preview (no root) stores nothing */
    r = call(cp_cluster_json, "{\"attributes\":[\"age\",\"seen\"],\"k\":4}");
    assert_true(json_is_false(json_object_get(r, "stored")));
    json_decref(r);

    assert_int_equal(call_err(cp_cluster_json, "{\"attributes\":[\"px\"],\"k\":0}", &err),
                     CP_EINVAL);
    assert_int_equal(call_err(cp_cluster_json, "{\"attributes\":[\"px\"],\"k\":65}", &err),
                     CP_EINVAL);
    assert_int_equal(call_err(cp_cluster_json, "{\"attributes\":[\"px\"]}", &err), CP_EINVAL);
    assert_int_equal(call_err(cp_cluster_json, "{\"attributes\":[\"gender\"],\"k\":2}", &err),
                     CP_ETYPE);
    assert_int_equal(call_err(cp_cluster_json, "{\"attributes\":[\"nosuch\"],\"k\":2}", &err),
                     CP_ENOTFOUND);
    assert_int_equal(
        call_err(cp_cluster_json, "{\"attributes\":[\"px\"],\"k\":2,\"crowd\":\"ghost\"}", &err),
        CP_ENOTFOUND);
    assert_int_equal(call_err(cp_cluster_json,
                              "{\"attributes\":[\"px\"],\"k\":3,\"crowd\":{\"expression\":"
                              "\"px = 5 AND px = 6\"}}",
                              &err),
                     CP_EINVAL);
    assert_int_equal(call_err(cp_cluster_json, "{\"attributes\":[\"px\"],\"elbow\":[3,1]}", &err),
                     CP_EINVAL);
}

static void test_tiers(void **state)
{
    (void)state;
    set_min_count(0);
    cp_error_t err = {0};
    char *out = NULL;
    assert_int_equal(cp_tiers_json(g_db, &out, &err), CP_ENOTFOUND);
    const char *cfg = "{\"attribute\":\"points\",\"tiers\":[{\"name\":\"silver\",\"min\":2000},"
                      "{\"name\":\"gold\",\"min\":6000},{\"name\":\"platinum\",\"min\":20000}]}";
    ok(cp_tiers_set_json(g_db, cfg, strlen(cfg), &out, &err), &err);
    cp_free(out);
    ok(cp_tiers_json(g_db, &out, &err), &err);
    json_t *r = json_loads(out, 0, NULL);
    cp_free(out);
    int mins[] = {2000, 6000, 20000, 1 << 30};
    json_t *tiers = json_object_get(r, "tiers");
    for (int t = 0; t < 3; t++) {
        uint64_t n = 0;
        for (int i = 0; i < NU; i++)
            n += U[i].points >= mins[t] && U[i].points < mins[t + 1];
        assert_int_equal(json_integer_value(json_object_get(json_array_get(tiers, t), "members")),
                         n);
    }
    uint64_t below = 0;
    for (int i = 0; i < NU; i++)
        below += U[i].points >= 0 && U[i].points < 2000;
    assert_int_equal(json_integer_value(json_object_get(r, "below_first_tier")), below);
    json_decref(r);

    r = call(cp_tiers_nudge_json, "{\"within\":2000}");
    const char *ex = json_string_value(json_object_get(r, "expression"));
    assert_string_equal(ex, "points BETWEEN 0 AND 1999 OR points BETWEEN 4000 AND 5999 OR "
                            "points BETWEEN 18000 AND 19999");
    uint64_t n = 0;
    for (int i = 0; i < NU; i++) {
        int p = U[i].points;
        n += (p >= 0 && p < 2000) || (p >= 4000 && p < 6000) || (p >= 18000 && p < 20000);
    }
    assert_int_equal(json_integer_value(json_object_get(r, "members")), n);
    assert_int_equal(count(ex), n);
    json_decref(r);
    /* within larger than a tier: clamped to the tier below */
    r = call(cp_tiers_nudge_json, "{\"within\":5000,\"tiers\":[\"gold\"]}");
    assert_string_equal(json_string_value(json_object_get(r, "expression")),
                        "points BETWEEN 2000 AND 5999");
    json_decref(r);

    const char *bad[] = {
        "{\"attribute\":\"points\",\"tiers\":[{\"name\":\"a\",\"min\":5},{\"name\":\"b\",\"min\":5}"
        "]}",
        "{\"attribute\":\"points\",\"tiers\":[]}",
        "{\"attribute\":\"points\",\"tiers\":[{\"name\":\"A B\",\"min\":5}]}",
        "{\"attribute\":\"points\",\"tiers\":[{\"name\":\"a\",\"min\":\"5\"}]}",
        "{\"attribute\":\"points\",\"tiers\":[{\"name\":\"a\",\"min\":1},{\"name\":\"a\",\"min\":2}"
        "]}",
        "{\"tiers\":[{\"name\":\"a\",\"min\":1}]}",
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(bad); i++) {
        out = NULL;
        assert_int_equal(cp_tiers_set_json(g_db, bad[i], strlen(bad[i]), &out, &err), CP_EINVAL);
    }
    const char *nf = "{\"attribute\":\"nosuch\",\"tiers\":[{\"name\":\"a\",\"min\":1}]}";
    assert_int_equal(cp_tiers_set_json(g_db, nf, strlen(nf), &out, &err), CP_ENOTFOUND);
    const char *ty = "{\"attribute\":\"gender\",\"tiers\":[{\"name\":\"a\",\"min\":1}]}";
    assert_int_equal(cp_tiers_set_json(g_db, ty, strlen(ty), &out, &err), CP_ETYPE);
    assert_int_equal(call_err(cp_tiers_nudge_json, "{\"within\":0}", &err), CP_EINVAL);
    assert_int_equal(call_err(cp_tiers_nudge_json, "{\"within\":5,\"tiers\":[\"tin\"]}", &err),
                     CP_ENOTFOUND);
    /* the stored setting survived the bad attempts */
    ok(cp_tiers_json(g_db, &out, &err), &err);
    assert_non_null(strstr(out, "platinum"));
    cp_free(out);
}

/* The counting core against a naive loop, over all container kinds. */
static void test_count_cells_core(void **state)
{
    (void)state;
    roaring_bitmap_t *uni = roaring_bitmap_create(), *crowd = roaring_bitmap_create(),
                     *base = roaring_bitmap_create(), *cells[4];
    for (int i = 0; i < 4; i++)
        cells[i] = roaring_bitmap_create();
    uint64_t st = 99;
    const uint32_t N = 5 * 65536;
    for (uint32_t u = 0; u < N; u++) {
        roaring_bitmap_add(uni, u);
        if (rand_next(&st) % 3 == 0)
            roaring_bitmap_add(crowd, u);
        if (rand_next(&st) % 2 == 0)
            roaring_bitmap_add(base, u);
        if (rand_next(&st) % 100 == 0)
            roaring_bitmap_add(cells[0], u); /* arrays */
        if (rand_next(&st) % 2 == 0)
            roaring_bitmap_add(cells[1], u); /* bitsets */
        if ((u / 1000) % 3 == 0)
            roaring_bitmap_add(cells[2], u); /* runs */
    }
    roaring_bitmap_run_optimize(cells[2]);
    ana_cell_t c[4] = {{.bm = cells[0]}, {.bm = cells[1]}, {.bm = cells[2]}, {.bm = cells[3]}};
    for (int withbase = 0; withbase < 2; withbase++)
        for (int threads = 1; threads <= 3; threads++) {
            assert_int_equal(ana_count_cells(crowd, withbase ? base : NULL, uni, c, 4, threads),
                             CP_OK);
            for (int i = 0; i < 4; i++) {
                uint64_t nc = roaring_bitmap_and_cardinality(crowd, cells[i]);
                uint64_t nb = roaring_bitmap_and_cardinality(withbase ? base : uni, cells[i]);
                assert_int_equal(c[i].n_crowd, nc);
                assert_int_equal(c[i].n_base, nb);
            }
        }
    roaring_bitmap_free(uni);
    roaring_bitmap_free(crowd);
    roaring_bitmap_free(base);
    for (int i = 0; i < 4; i++)
        roaring_bitmap_free(cells[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_cells_core),
        cmocka_unit_test(test_insight_naive),
        cmocka_unit_test(test_insight_buckets_and_suppression),
        cmocka_unit_test(test_insight_bad_input),
        cmocka_unit_test(test_overlap_naive),
        cmocka_unit_test(test_cluster),
        cmocka_unit_test(test_tiers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
