/*
 * test_engine_property.c — end-to-end property test: random populations
 * (random tag tree; int, enum, bool, timestamp and geo attributes; some
 * users updated, some deleted, some tags removed) loaded through
 * cp_load_ndjson_buf, random expressions of depth >= 4 over every
 * predicate kind (has()/IS NULL, NOT IN, STARTS WITH and WITHIN LAST /
 * OLDER THAN included) counted through cp_count and cp_count_as_of (at a
 * random as-of day, or today), compared with a naive per-user
 * evaluator over the plain data written here; then close, reopen and
 * compare again. Users also join Segment groups through group events
 * (group:ID, group.plan = / != / IN).
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

#include "bitmap/bitmap.h"
#include "crowdpack.h"
#include "util/util.h"

#define MAX_TAGS 40
#define NSEG 5

typedef struct user {
    int alive;
    int has_age, has_seg, has_vip, has_ts, has_loc, has_city;
    int64_t age, ts;
    int seg, vip, city;
    double lat, lon;
    uint64_t tags;   /* direct tags, bit per tag index */
    unsigned groups; /* Segment groups joined, bit per group index */
} user_t;

#define NGROUPS 4 /* groups g0..g3; plans p0..p2 (p2: nobody's) */

typedef struct world {
    int ntags;
    char path[MAX_TAGS][128];
    int parent[MAX_TAGS];       /* -1 = top */
    uint64_t subtree[MAX_TAGS]; /* bit set of the tag and its descendants */
    int nusers;
    user_t *u;
    uint64_t rng;
    int ncrowds;
    uint8_t *crowd[2];  /* naive members of static crowds */
    int gplan[NGROUPS]; /* group g's trait plan is "p<gplan>", -1 = no plan */
    int32_t as_of_day;  /* of the count at hand (days since 1970-01-01 UTC) */
} world_t;

static const char *SEGS[NSEG] = {"a", "b", "c", "d", "e"};
#define NCITY 7
static const char *CITIES[NCITY] = {"shenzhen", "shanghai", "shantou", "guangzhou",
                                    "guang",    "深圳",     "深圳湾"};
/* STARTS WITH prefixes: some match several values, one a whole value, one none */
#define NPREFIX 7
static const char *PREFIXES[NPREFIX] = {"sh", "shen", "guang", "", "x", "深", "shenzhen"};
static char g_dir[256];

static uint64_t rnd(world_t *w, uint64_t n)
{
    return rand_next(&w->rng) % n;
}

static void build_tags(world_t *w)
{
    w->ntags = 12 + (int)rnd(w, MAX_TAGS - 12);
    for (int i = 0; i < w->ntags; i++) {
        int p = i == 0 || rnd(w, 4) == 0 ? -1 : (int)rnd(w, (uint64_t)i);
        if (p >= 0 && strlen(w->path[p]) > 90)
            p = -1;
        w->parent[i] = p;
        if (p < 0)
            snprintf(w->path[i], sizeof w->path[i], "t%d", i);
        else {
            char parent[128];
            memcpy(parent, w->path[p], sizeof parent);
            int n = snprintf(w->path[i], sizeof w->path[i], "%.100s/t%d", parent, i);
            assert_true(n > 0 && n < (int)sizeof w->path[i]);
        }
    }
    for (int i = 0; i < w->ntags; i++) {
        w->subtree[i] = 0;
        for (int j = 0; j < w->ntags; j++)
            for (int a = j; a >= 0; a = w->parent[a])
                if (a == i)
                    w->subtree[i] |= 1ull << j;
    }
}

static void random_attrs(world_t *w, user_t *u, buf_t *b, int allow_null)
{
    int first = 1;
    buf_printf(b, ",\"attrs\":{");
#define SEP() (first ? (first = 0, "") : ",")
    if (rnd(w, 10) < 7) {
        if (allow_null && rnd(w, 5) == 0) {
            buf_printf(b, "%s\"age\":null", SEP());
            u->has_age = 0;
        } else {
            u->has_age = 1;
            u->age = (int64_t)rnd(w, 200) - 50;
            buf_printf(b, "%s\"age\":%lld", SEP(), (long long)u->age);
        }
    }
    if (rnd(w, 10) < 7) {
        if (allow_null && rnd(w, 5) == 0) {
            buf_printf(b, "%s\"seg\":null", SEP());
            u->has_seg = 0;
        } else {
            u->has_seg = 1;
            u->seg = (int)rnd(w, NSEG);
            buf_printf(b, "%s\"seg\":\"%s\"", SEP(), SEGS[u->seg]);
        }
    }
    if (rnd(w, 10) < 6) {
        u->has_vip = 1;
        u->vip = (int)rnd(w, 2);
        buf_printf(b, "%s\"vip\":%s", SEP(), u->vip ? "true" : "false");
    }
    if (rnd(w, 10) < 6) {
        u->has_ts = 1;
        u->ts = 1600000000 + (int64_t)rnd(w, 200000000);
        if (rnd(w, 2)) {
            char t[40];
            time_format(u->ts, t, sizeof t);
            buf_printf(b, "%s\"ts\":\"%s\"", SEP(), t);
        } else {
            buf_printf(b, "%s\"ts\":%lld", SEP(), (long long)u->ts);
        }
    }
    if (rnd(w, 10) < 6) {
        if (allow_null && rnd(w, 4) == 0) {
            buf_printf(b, "%s\"city\":null", SEP());
            u->has_city = 0;
        } else {
            u->has_city = 1;
            u->city = (int)rnd(w, NCITY);
            buf_printf(b, "%s\"city\":\"%s\"", SEP(), CITIES[u->city]);
        }
    }
    if (rnd(w, 10) < 6) {
        u->has_loc = 1;
        u->lat = 30 + rand_double(&w->rng) * 2 - 1;
        u->lon = 120 + rand_double(&w->rng) * 2 - 1;
        char la[32], lo[32];
        fmt_double(u->lat, la, sizeof la);
        fmt_double(u->lon, lo, sizeof lo);
        buf_printf(b, "%s\"loc\":[%s,%s]", SEP(), la, lo);
    }
#undef SEP
    buf_printf(b, "}");
}

static void random_tags(world_t *w, user_t *u, buf_t *b)
{
    int n = (int)rnd(w, 5);
    buf_printf(b, ",\"tags\":[");
    for (int k = 0; k < n; k++) {
        int t = (int)rnd(w, (uint64_t)w->ntags);
        u->tags |= 1ull << t;
        buf_printf(b, "%s\"%s\"", k ? "," : "", w->path[t]);
    }
    buf_printf(b, "]");
}

/* ------------------------------------------------------------ expressions */

typedef struct gen {
    buf_t text;
} gen_t;

enum {
    P_ALL,
    P_TAG,
    P_AGE,
    P_SEG,
    P_VIP,
    P_TS,
    P_NEAR,
    P_CROWD,
    P_HAS,    /* has(attr) / attr IS NULL / IS NOT NULL on age, seg, ts, city */
    P_NOTIN,  /* age, seg or city NOT IN (...) */
    P_PREFIX, /* city STARTS WITH */
    P_REL,    /* ts WITHIN LAST N d / OLDER THAN N d */
    P_GROUP,  /* group:gN */
    P_GPLAN,  /* group.plan = / != / IN */
    P_KINDS
};
static const char *HAS_ATTRS[4] = {"age", "seg", "ts", "city"};

typedef struct node {
    int kind; /* 0 pred, 1 and, 2 or, 3 not */
    int pred;
    int op; /* 0 = 1 != 2 < 3 <= 4 > 5 >= 6 between 7 in */
    int64_t a, b, c;
    int tag;
    double lat, lon, r;
    struct node *kid[3];
    int nkids;
} node_t;

static const char *OPS[] = {"=", "!=", "<", "<=", ">", ">="};

static node_t *gen_node(world_t *w, int depth, int min_depth)
{
    node_t *n = calloc(1, sizeof *n);
    if (depth < min_depth || (depth < 6 && rnd(w, 3) != 0)) {
        int k = (int)rnd(w, 3);
        n->kind = 1 + k;
        n->nkids = n->kind == 3 ? 1 : 2 + (int)rnd(w, 2);
        for (int i = 0; i < n->nkids; i++)
            n->kid[i] = gen_node(w, depth + 1, i == 0 ? min_depth : 0);
        return n;
    }
    n->kind = 0;
    n->pred = (int)rnd(w, P_KINDS);
    if (n->pred == P_CROWD && w->ncrowds == 0)
        n->pred = P_TAG;
    switch (n->pred) {
    case P_TAG:
        n->tag = (int)rnd(w, (uint64_t)w->ntags);
        break;
    case P_AGE:
        n->op = (int)rnd(w, 8);
        n->a = (int64_t)rnd(w, 220) - 60;
        n->b = n->a + (int64_t)rnd(w, 80);
        n->c = (int64_t)rnd(w, 200) - 50;
        break;
    case P_SEG:
        n->op = (int)rnd(w, 3);           /* = != in */
        n->a = (int64_t)rnd(w, NSEG + 1); /* NSEG = a value nobody has */
        n->b = (int64_t)rnd(w, NSEG);
        break;
    case P_VIP:
        n->op = (int)rnd(w, 2);
        n->a = (int64_t)rnd(w, 2);
        break;
    case P_TS:
        n->op = (int)rnd(w, 7);
        n->a = 1600000000 + (int64_t)rnd(w, 200000000);
        n->b = n->a + (int64_t)rnd(w, 50000000);
        break;
    case P_NEAR:
        n->lat = 30 + rand_double(&w->rng) * 2 - 1;
        n->lon = 120 + rand_double(&w->rng) * 2 - 1;
        n->r = 1 + (double)rnd(w, 60);
        break;
    case P_CROWD:
        n->a = (int64_t)rnd(w, (uint64_t)w->ncrowds);
        break;
    case P_GROUP:
        n->a = (int64_t)rnd(w, NGROUPS);
        break;
    case P_GPLAN:
        n->op = (int)rnd(w, 3); /* = != in */
        n->a = (int64_t)rnd(w, 3);
        n->b = (int64_t)rnd(w, 3);
        break;
    case P_HAS:
        n->a = (int64_t)rnd(w, 4); /* attribute */
        n->op = (int)rnd(w, 3);    /* 0 has() 1 IS NULL 2 IS NOT NULL */
        break;
    case P_NOTIN:
        n->op = (int)rnd(w, 3); /* 0 age 1 seg 2 city */
        n->a = (int64_t)rnd(w, 220) - 60;
        n->b = (int64_t)rnd(w, NSEG + 1);
        n->c = (int64_t)rnd(w, NCITY);
        if (n->op == 0)
            n->b = n->a + (int64_t)rnd(w, 5);
        break;
    case P_PREFIX:
        n->a = (int64_t)rnd(w, NPREFIX);
        break;
    case P_REL:
        n->op = (int)rnd(w, 2); /* 0 WITHIN LAST 1 OLDER THAN */
        n->a = 1 + (int64_t)rnd(w, 1500);
        break;
    }
    return n;
}

static void node_free(node_t *n)
{
    for (int i = 0; i < n->nkids; i++)
        node_free(n->kid[i]);
    free(n);
}

static void ts_text(int64_t s, char *buf, size_t cap)
{
    time_format(s, buf, cap);
}

static void print_node(world_t *w, const node_t *n, buf_t *b)
{
    char t1[40], t2[40];
    if (n->kind == 3) {
        buf_printf(b, "NOT (");
        print_node(w, n->kid[0], b);
        buf_printf(b, ")");
        return;
    }
    if (n->kind) {
        for (int i = 0; i < n->nkids; i++) {
            if (i)
                buf_printf(b, n->kind == 1 ? " AND " : " or ");
            buf_printf(b, "(");
            print_node(w, n->kid[i], b);
            buf_printf(b, ")");
        }
        return;
    }
    switch (n->pred) {
    case P_ALL:
        buf_printf(b, "all");
        break;
    case P_TAG:
        buf_printf(b, "tag:%s", w->path[n->tag]);
        break;
    case P_AGE:
        if (n->op < 6)
            buf_printf(b, "age %s %lld", OPS[n->op], (long long)n->a);
        else if (n->op == 6)
            buf_printf(b, "age BETWEEN %lld AND %lld", (long long)n->a, (long long)n->b);
        else
            buf_printf(b, "age IN (%lld, %lld, %lld)", (long long)n->a, (long long)n->b,
                       (long long)n->c);
        break;
    case P_SEG: {
        const char *va = n->a < NSEG ? SEGS[n->a] : "zz";
        if (n->op == 0)
            buf_printf(b, "seg = \"%s\"", va);
        else if (n->op == 1)
            buf_printf(b, "seg != \"%s\"", va);
        else
            buf_printf(b, "seg IN (\"%s\", \"%s\")", va, SEGS[n->b]);
        break;
    }
    case P_VIP:
        buf_printf(b, "vip %s %s", n->op ? "!=" : "=", n->a ? "true" : "false");
        break;
    case P_TS:
        ts_text(n->a, t1, sizeof t1);
        ts_text(n->b, t2, sizeof t2);
        if (n->op < 6)
            buf_printf(b, "ts %s \"%s\"", OPS[n->op], t1);
        else
            buf_printf(b, "ts BETWEEN \"%s\" AND \"%s\"", t1, t2);
        break;
    case P_NEAR: {
        char la[32], lo[32];
        fmt_double(n->lat, la, sizeof la);
        fmt_double(n->lon, lo, sizeof lo);
        buf_printf(b, "near(%s, %s, %gkm)", la, lo, n->r);
        break;
    }
    case P_CROWD:
        buf_printf(b, "crowd:c%lld", (long long)n->a);
        break;
    case P_GROUP:
        buf_printf(b, "group:g%lld", (long long)n->a);
        break;
    case P_GPLAN:
        if (n->op < 2)
            buf_printf(b, "group.plan %s \"p%lld\"", n->op ? "!=" : "=", (long long)n->a);
        else
            buf_printf(b, "group.plan IN (\"p%lld\", \"p%lld\")", (long long)n->a, (long long)n->b);
        break;
    case P_HAS:
        if (n->op == 0)
            buf_printf(b, "has(%s)", HAS_ATTRS[n->a]);
        else
            buf_printf(b, "%s IS %sNULL", HAS_ATTRS[n->a], n->op == 2 ? "NOT " : "");
        break;
    case P_NOTIN:
        if (n->op == 0)
            buf_printf(b, "age NOT IN (%lld, %lld)", (long long)n->a, (long long)n->b);
        else if (n->op == 1)
            buf_printf(b, "seg not in (\"%s\", \"%s\")", n->b < NSEG ? SEGS[n->b] : "zz",
                       SEGS[n->a % NSEG < 0 ? 0 : n->a % NSEG]);
        else
            buf_printf(b, "city NOT IN (\"%s\")", CITIES[n->c]);
        break;
    case P_PREFIX:
        buf_printf(b, "city STARTS WITH \"%s\"", PREFIXES[n->a]);
        break;
    case P_REL:
        buf_printf(b, "ts %s %lldd", n->op ? "OLDER THAN" : "within last", (long long)n->a);
        break;
    }
}

static int cmp_op(int op, int64_t v, int64_t a)
{
    switch (op) {
    case 0:
        return v == a;
    case 1:
        return v != a;
    case 2:
        return v < a;
    case 3:
        return v <= a;
    case 4:
        return v > a;
    case 5:
        return v >= a;
    }
    return 0;
}

static int eval_node(const world_t *w, const node_t *n, int i)
{
    const user_t *u = &w->u[i];
    if (n->kind == 3)
        return !eval_node(w, n->kid[0], i);
    if (n->kind == 1) {
        for (int k = 0; k < n->nkids; k++)
            if (!eval_node(w, n->kid[k], i))
                return 0;
        return 1;
    }
    if (n->kind == 2) {
        for (int k = 0; k < n->nkids; k++)
            if (eval_node(w, n->kid[k], i))
                return 1;
        return 0;
    }
    switch (n->pred) {
    case P_ALL:
        return 1;
    case P_TAG:
        return (u->tags & w->subtree[n->tag]) != 0;
    case P_AGE:
        if (!u->has_age)
            return 0;
        if (n->op < 6)
            return cmp_op(n->op, u->age, n->a);
        if (n->op == 6)
            return u->age >= n->a && u->age <= n->b;
        return u->age == n->a || u->age == n->b || u->age == n->c;
    case P_SEG:
        if (!u->has_seg)
            return 0;
        if (n->op == 0)
            return u->seg == n->a;
        if (n->op == 1)
            return u->seg != n->a;
        return u->seg == n->a || u->seg == n->b;
    case P_VIP:
        if (!u->has_vip)
            return 0;
        return n->op ? u->vip != n->a : u->vip == n->a;
    case P_TS:
        if (!u->has_ts)
            return 0;
        if (n->op < 6)
            return cmp_op(n->op, u->ts, n->a);
        return u->ts >= n->a && u->ts <= n->b;
    case P_NEAR:
        return u->has_loc && geo_haversine_m(n->lat, n->lon, u->lat, u->lon) <= n->r * 1000.0;
    case P_CROWD:
        return w->crowd[n->a][i];
    case P_GROUP:
        return (u->groups >> n->a) & 1;
    case P_GPLAN:
        /* any of the user's groups matches; != needs the trait */
        for (int g = 0; g < NGROUPS; g++) {
            int pl = w->gplan[g];
            if (!((u->groups >> g) & 1) || pl < 0)
                continue;
            if (n->op == 0 ? pl == n->a : n->op == 1 ? pl != n->a : pl == n->a || pl == n->b)
                return 1;
        }
        return 0;
    case P_HAS: {
        int has = n->a == 0   ? u->has_age
                  : n->a == 1 ? u->has_seg
                  : n->a == 2 ? u->has_ts
                              : u->has_city;
        return n->op == 1 ? !has : has;
    }
    case P_NOTIN:
        if (n->op == 0)
            return u->has_age && u->age != n->a && u->age != n->b;
        if (n->op == 1)
            return u->has_seg && u->seg != n->b &&
                   u->seg != (int)(n->a % NSEG < 0 ? 0 : n->a % NSEG);
        return u->has_city && u->city != n->c;
    case P_PREFIX: {
        const char *p = PREFIXES[n->a];
        return u->has_city && strncmp(CITIES[u->city], p, strlen(p)) == 0;
    }
    case P_REL: {
        int64_t start = ((int64_t)w->as_of_day - n->a + 1) * 86400;
        int64_t end = ((int64_t)w->as_of_day + 1) * 86400 - 1;
        if (!u->has_ts)
            return 0;
        return n->op ? u->ts < start : u->ts >= start && u->ts <= end;
    }
    }
    return 0;
}

static uint64_t naive_count(const world_t *w, const node_t *n)
{
    uint64_t c = 0;
    for (int i = 0; i < w->nusers; i++)
        if (w->u[i].alive && eval_node(w, n, i))
            c++;
    return c;
}

/* -------------------------------------------------------------- the test */

static cp_db_t *open_db(unsigned flags)
{
    return test_open_db(g_dir, &(cp_open_options_t){.size = sizeof(cp_open_options_t),
                                                    .flags = flags,
                                                    .map_size = 1u << 30,
                                                    .threads = 2});
}

static void check(cp_db_t *db, world_t *w, node_t **exprs, char **texts, int n)
{
    for (int e = 0; e < n; e++) {
        uint64_t got = 0;
        cp_error_t err = {0};
        cp_status rc;
        if (e % 2) {
            /* a day inside the timestamps' range (2020-09 .. 2027-01) */
            char day[40];
            w->as_of_day = 18600 + (int32_t)rnd(w, 2200);
            time_format((int64_t)w->as_of_day * 86400, day, sizeof day);
            day[10] = '\0';
            rc = cp_count_as_of(db, texts[e], day, &got, &err);
        } else {
            w->as_of_day = (int32_t)(time_now_ms() / 86400000);
            rc = cp_count(db, texts[e], &got, &err);
        }
        if (rc)
            fprintf(stderr, "count failed: %s\n  %s\n", err.message, texts[e]);
        assert_int_equal(rc, CP_OK);
        uint64_t want = naive_count(w, exprs[e]);
        if (got != want)
            fprintf(stderr, "mismatch: got %llu want %llu\n  %s\n", (unsigned long long)got,
                    (unsigned long long)want, texts[e]);
        assert_int_equal(got, want);
    }
}

static void run_world(uint64_t seed, int nusers, int nexprs)
{
    world_t w = {0};
    w.rng = seed;
    test_tmpdir(g_dir, sizeof g_dir, "engine-prop");
    cp_db_t *db = open_db(CP_OPEN_CREATE);
    cp_error_t err = {0};
    const char *schema =
        "{\"attributes\":[{\"name\":\"age\",\"type\":\"int\"},"
        "{\"name\":\"seg\",\"type\":\"enum\"},{\"name\":\"vip\",\"type\":\"bool\"},"
        "{\"name\":\"ts\",\"type\":\"timestamp\"},{\"name\":\"loc\",\"type\":\"geo\"},"
        "{\"name\":\"city\",\"type\":\"string\"}]}";
    assert_int_equal(cp_schema_load_json(db, schema, strlen(schema), &err), CP_OK);
    build_tags(&w);
    /* Create the tags in a shuffled order through the bulk loader (missing
     * parents are created on the way). */
    buf_t b;
    buf_init(&b, 0);
    buf_printf(&b, "{\"tags\":[");
    for (int i = w.ntags - 1; i >= 0; i--)
        buf_printf(&b, "{\"path\":\"%s\"}%s", w.path[i], i ? "," : "");
    buf_printf(&b, "]}");
    assert_int_equal(cp_taxonomy_load_json(db, b.data, b.len, &err), CP_OK);

    /* Every seg value, and "zz", seen once by a user deleted at once: a
     * value never seen is an error (test_engine_values.c), while "zz"
     * here stands for a value nobody has. */
    const char *dict = "{\"id\":\"dict\",\"attrs\":{\"seg\":\"a\"}}\n"
                       "{\"id\":\"dict\",\"attrs\":{\"seg\":\"b\"}}\n"
                       "{\"id\":\"dict\",\"attrs\":{\"seg\":\"c\"}}\n"
                       "{\"id\":\"dict\",\"attrs\":{\"seg\":\"d\"}}\n"
                       "{\"id\":\"dict\",\"attrs\":{\"seg\":\"e\"}}\n"
                       "{\"id\":\"dict\",\"attrs\":{\"seg\":\"zz\"}}\n";
    cp_load_stats_t seeded = CP_LOAD_STATS_INIT;
    assert_int_equal(cp_load_ndjson_buf(db, dict, strlen(dict), NULL, &seeded, &err), CP_OK);
    /* A deletion removes the values nobody else holds (issue: deletion
     * leaves nothing) unless an alias stands for them: one each keeps
     * them in the dictionary. */
    static const char *const kept[] = {"a", "b", "c", "d", "e", "zz"};
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++) {
        char alias[32];
        snprintf(alias, sizeof alias, "dict-%s", kept[i]);
        assert_int_equal(cp_attr_alias_set(db, "seg", alias, kept[i], &err), CP_OK);
    }
    assert_int_equal(cp_user_delete(db, "dict", &err), CP_OK);

    /* Population. */
    w.nusers = nusers;
    w.u = calloc((size_t)nusers, sizeof *w.u);
    buf_reset(&b);
    for (int i = 0; i < nusers; i++) {
        user_t *u = &w.u[i];
        u->alive = 1;
        buf_printf(&b, "{\"id\":\"user-%d\"", i);
        random_attrs(&w, u, &b, 0);
        random_tags(&w, u, &b);
        buf_printf(&b, "}\n");
    }
    cp_load_options_t lo = {.size = sizeof(cp_load_options_t),
                            .batch_lines = (uint64_t)nusers / 3 + 1};
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    assert_int_equal(cp_load_ndjson_buf(db, b.data, b.len, &lo, &st, &err), CP_OK);
    assert_int_equal(st.users_created, (uint64_t)nusers);
    assert_int_equal(st.rejected, 0);

    /* Segment groups: users 0..3 found one group each (so every group
     * exists), a third of the others join one or two; g0 always has a plan
     * (so group.plan is known). Sent as group events, before deletions. */
    for (int g = 0; g < NGROUPS; g++)
        w.gplan[g] = g == 0 ? 0 : (int)rnd(&w, 3) - 1;
    buf_reset(&b);
    int nev = 0;
    for (int i = 0; i < nusers; i++) {
        int joins = i < NGROUPS ? 1 : rnd(&w, 3) == 0 ? 1 + (int)rnd(&w, 2) : 0;
        for (int k = 0; k < joins; k++) {
            int g = i < NGROUPS ? i : (int)rnd(&w, NGROUPS);
            w.u[i].groups |= 1u << g;
            buf_printf(&b,
                       "%s{\"type\":\"group\",\"userId\":\"user-%d\",\"groupId\":\"g%d\","
                       "\"messageId\":\"grp-%d-%d\"",
                       nev ? "," : "{\"batch\":[", i, g, i, k);
            if (w.gplan[g] >= 0)
                buf_printf(&b, ",\"traits\":{\"plan\":\"p%d\",\"email\":\"billing@g%d.com\"}",
                           w.gplan[g], g);
            buf_printf(&b, "}");
            nev++;
        }
        if (nev > 0 && (nev >= 1500 || i == nusers - 1)) {
            buf_printf(&b, "]}");
            cp_ingest_result_t r = CP_INGEST_RESULT_INIT;
            assert_int_equal(cp_ingest_segment(db, CP_EVENT_BATCH, b.data, b.len, &r, &err), CP_OK);
            assert_int_equal(r.applied, (uint64_t)nev);
            assert_int_equal(r.merges, 0); /* the groups' billing email merges nobody */
            cp_ingest_result_clear(&r);
            buf_reset(&b);
            nev = 0;
        }
    }

    /* Updates: overwrites, nulls, more tags; with a few bad lines that
     * must leave no trace. */
    buf_reset(&b);
    for (int k = 0; k < nusers / 5; k++) {
        int i = (int)rnd(&w, (uint64_t)nusers);
        if (rnd(&w, 10) == 0) {
            buf_printf(&b, "{\"id\":\"user-%d\",\"attrs\":{\"age\":\"x\"},\"tags\":[\"%s\"]}\n", i,
                       w.path[0]);
            continue;
        }
        buf_printf(&b, "{\"id\":\"user-%d\"", i);
        random_attrs(&w, &w.u[i], &b, 1);
        random_tags(&w, &w.u[i], &b);
        buf_printf(&b, "}\n");
    }
    assert_int_equal(cp_load_ndjson_buf(db, b.data, b.len, NULL, &st, &err), CP_OK);
    assert_int_equal(st.users_created, 0);

    /* Deletions and tag removals (each one commits: keep them few). */
    int nmut = nusers / 20 + 1 < 150 ? nusers / 20 + 1 : 150;
    for (int k = 0; k < nmut; k++) {
        int i = (int)rnd(&w, (uint64_t)nusers);
        char id[32];
        snprintf(id, sizeof id, "user-%d", i);
        cp_status rc = cp_user_delete(db, id, &err);
        assert_int_equal(rc, w.u[i].alive ? CP_OK : CP_ENOTFOUND);
        w.u[i].alive = 0;
    }
    for (int k = 0; k < nmut; k++) {
        int i = (int)rnd(&w, (uint64_t)nusers);
        if (!w.u[i].alive)
            continue;
        char id[32];
        snprintf(id, sizeof id, "user-%d", i);
        const char *paths[2];
        int t1 = (int)rnd(&w, (uint64_t)w.ntags), t2 = (int)rnd(&w, (uint64_t)w.ntags);
        paths[0] = w.path[t1];
        paths[1] = w.path[t2];
        assert_int_equal(cp_user_remove_tags(db, id, paths, 2, &err), CP_OK);
        /* Removing a tag removes its descendants the user holds too. */
        for (int t = 0; t < w.ntags; t++)
            for (int r = 0; r < 2; r++) {
                size_t pl = strlen(paths[r]);
                if (strncmp(w.path[t], paths[r], pl) == 0 &&
                    (w.path[t][pl] == '\0' || w.path[t][pl] == '/'))
                    w.u[i].tags &= ~(1ull << t);
            }
    }

    /* Two static crowds from random expressions (the first evaluated today). */
    w.as_of_day = (int32_t)(time_now_ms() / 86400000);
    for (int c = 0; c < 2; c++) {
        node_t *n = gen_node(&w, 0, 3);
        buf_t t;
        buf_init(&t, 0);
        print_node(&w, n, &t);
        char name[8];
        snprintf(name, sizeof name, "c%d", c);
        /* the second as of a day in the past: crowd creation honours as_of */
        char day[40] = "";
        if (c == 1) {
            w.as_of_day = 18600 + (int32_t)rnd(&w, 2200);
            time_format((int64_t)w.as_of_day * 86400, day, sizeof day);
            day[10] = '\0';
        }
        cp_status rc = cp_crowd_create_as_of(db, name, buf_cstr(&t), NULL, 0, CP_CROWD_STATIC, NULL,
                                             day, &err);
        if (rc)
            fprintf(stderr, "crowd: %s\n", err.message);
        assert_int_equal(rc, CP_OK);
        w.crowd[c] = calloc((size_t)nusers, 1);
        for (int i = 0; i < nusers; i++)
            w.crowd[c][i] = w.u[i].alive && eval_node(&w, n, i);
        w.ncrowds = c + 1;
        node_free(n);
        buf_free(&t);
    }

    node_t **exprs = calloc((size_t)nexprs, sizeof *exprs);
    char **texts = calloc((size_t)nexprs, sizeof *texts);
    for (int e = 0; e < nexprs; e++) {
        exprs[e] = gen_node(&w, 0, 4);
        buf_t t;
        buf_init(&t, 0);
        print_node(&w, exprs[e], &t);
        buf_cstr(&t);
        texts[e] = t.data;
    }
    check(db, &w, exprs, texts, nexprs);
    cp_db_close(db, NULL);
    db = open_db(0);
    check(db, &w, exprs, texts, nexprs);
    cp_db_close(db, NULL);

    for (int e = 0; e < nexprs; e++) {
        node_free(exprs[e]);
        free(texts[e]);
    }
    free(exprs);
    free(texts);
    free(w.crowd[0]);
    free(w.crowd[1]);
    free(w.u);
    buf_free(&b);
    test_rmtree(g_dir);
}

static void test_small_worlds(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 4; seed++)
        run_world(seed * 7919, 1500, 150);
}

static void test_multi_chunk_world(void **state)
{
    (void)state;
    /* Ordinals beyond 65,536: several chunks of the evaluator. */
    run_world(424242, 140000, 40);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_worlds),
        cmocka_unit_test(test_multi_chunk_world),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
