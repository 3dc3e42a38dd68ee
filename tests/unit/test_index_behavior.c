/*
 * test_index_behavior.c — the behaviour index against a naive table of
 * counts per (series, day, user).
 *
 * The population mixes a dense block of users inside one chunk (bitset
 * containers, every day) with users scattered over five chunks (array
 * containers), days on both sides of 1970-01-01, deltas of 1 (most),
 * small ones, and huge ones that grow the bit slices to the top and
 * saturate at 2^32. Every comparison (= != < <= > >=, k from 0 to past
 * any sum) over random windows (empty, one day, all time) is checked in
 * both the chunk form and the whole-bitmap form, against the naive sums
 * clipped to a universe with deleted users. Then: retention, deletion of
 * users, identity moves (counts add up), extract / encode / decode /
 * re-insert, persistence round trip through LMDB with an unchanged
 * answer to every query, dirty tracking of single writes, and corrupt
 * blobs, keys and dictionary entries rejected with CP_EIO.
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

#include "index/behavior.h"
#include "util/util.h"

#define NS 5      /* series */
#define ND 24     /* days */
#define DAY0 (-4) /* first day */
#define NDENSE 7000
#define NSCAT 3000
#define NU (NDENSE + NSCAT)
#define MAXU 330000u
#define SAT ((uint64_t)1 << 32)

typedef struct model {
    beh_t *b;
    uint32_t sid[NS];
    uint32_t uord[NU];
    uint64_t *cnt; /* [NS][ND][NU] */
    roaring_bitmap_t *universe;
    uint8_t *live; /* by user index */
} model_t;

static uint64_t *at(model_t *m, int s, int d, int u)
{
    return &m->cnt[((size_t)s * ND + (size_t)d) * NU + (size_t)u];
}

static uint32_t rnd(uint64_t *s, uint32_t n)
{
    return (uint32_t)(rand_next(s) % n);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    assert_non_null(p);
    return p;
}

static uint64_t pick_delta(uint64_t *s)
{
    uint32_t r = rnd(s, 100);
    if (r < 75)
        return 1;
    if (r < 93)
        return 2 + rnd(s, 6);
    if (r < 98)
        return 1 + rnd(s, 5000);
    return r == 98 ? ((uint64_t)1 << 31) + rnd(s, 1000) : SAT + rnd(s, 1000);
}

static void rec(model_t *m, int s, int d, int u, uint64_t delta)
{
    assert_int_equal(beh_record(m->b, m->sid[s], DAY0 + d, m->uord[u], delta), CP_OK);
    uint64_t *c = at(m, s, d, u);
    *c = *c + delta > SAT ? SAT : *c + delta;
}

static model_t *model_new(uint64_t *rng)
{
    model_t *m = xcalloc(1, sizeof *m);
    assert_int_equal(beh_create(&m->b), CP_OK);
    m->cnt = xcalloc((size_t)NS * ND * NU, sizeof(uint64_t));
    m->live = xcalloc(NU, 1);
    /* Dense block inside chunk 1, scattered users everywhere else. */
    for (int u = 0; u < NDENSE; u++)
        m->uord[u] = 65536 + 3 + (uint32_t)u;
    for (int u = NDENSE; u < NU; u++) {
        uint32_t o;
        int dup;
        do {
            o = rnd(rng, MAXU);
            dup = o >= 65536 && o < 65536 + 3 + NDENSE;
            for (int v = NDENSE; v < u && !dup; v++)
                dup = m->uord[v] == o;
        } while (dup);
        m->uord[u] = o;
    }
    for (int s = 0; s < NS; s++) {
        char name[32];
        beh_prop_t p = {"sku", 3, name, 0};
        uint8_t key[BEH_KEY_MAX];
        size_t klen;
        snprintf(name, sizeof name, "v%d", s);
        p.vlen = strlen(name);
        assert_int_equal(beh_series_key("purchase", 8, &p, s == 0 ? 0 : 1, key, &klen), CP_OK);
        assert_int_equal(beh_series_intern(m->b, key, klen, &m->sid[s]), CP_OK);
    }
    /* Universe: every modelled user but ~10%, plus users with no behaviour. */
    m->universe = roaring_bitmap_create();
    for (int u = 0; u < NU; u++) {
        m->live[u] = rnd(rng, 10) != 0;
        if (m->live[u])
            roaring_bitmap_add(m->universe, m->uord[u]);
    }
    for (int i = 0; i < 20000; i++)
        roaring_bitmap_add(m->universe, rnd(rng, MAXU));
    for (int u = 0; u < NU; u++) /* the extra ones must not be modelled dead users */
        if (!m->live[u])
            roaring_bitmap_remove(m->universe, m->uord[u]);

    for (int s = 0; s < NS; s++) {
        for (int d = 0; d < ND; d++) {
            if (s == 0 || (s == 1 && d % 3 == 0)) { /* dense days: bitset containers */
                for (int u = 0; u < NDENSE; u++)
                    if (rnd(rng, 10) < 6)
                        rec(m, s, d, u, pick_delta(rng));
            }
            if (s == 4 && d % 2) /* a series with holes */
                continue;
            int k = (int)rnd(rng, 400);
            for (int i = 0; i < k; i++)
                rec(m, s, d, NDENSE + (int)rnd(rng, NSCAT), pick_delta(rng));
        }
    }
    return m;
}

static void model_free(model_t *m)
{
    beh_free(m->b);
    free(m->cnt);
    free(m->live);
    roaring_bitmap_free(m->universe);
    free(m);
}

static int naive_cmp(beh_cmp op, uint64_t x, uint64_t k)
{
    switch (op) {
    case BEH_EQ:
        return x == k;
    case BEH_NE:
        return x != k;
    case BEH_LT:
        return x < k;
    case BEH_LE:
        return x <= k;
    case BEH_GT:
        return x > k;
    case BEH_GE:
        return x >= k;
    }
    return 0;
}

/* The expected members: universe users whose sum over [d0, d1] op k
 * (with g_days: the number of days with a count, beh_window_days). */
static int g_days;

static roaring_bitmap_t *naive(model_t *m, int s, int32_t d0, int32_t d1, beh_cmp op, uint64_t k)
{
    roaring_bitmap_t *bm = roaring_bitmap_create();
    uint8_t *modelled = xcalloc(MAXU, 1);
    for (int u = 0; u < NU; u++) {
        modelled[m->uord[u]] = 1;
        if (!m->live[u])
            continue;
        uint64_t sum = 0;
        for (int d = 0; d < ND; d++)
            if (DAY0 + d >= d0 && DAY0 + d <= d1)
                sum += g_days ? *at(m, s, d, u) != 0 : *at(m, s, d, u);
        if (naive_cmp(op, sum, k))
            roaring_bitmap_add(bm, m->uord[u]);
    }
    /* universe users outside the model have the sum 0 */
    if (naive_cmp(op, 0, k)) {
        roaring_uint32_iterator_t it;
        roaring_init_iterator(m->universe, &it);
        for (; it.has_value; roaring_advance_uint32_iterator(&it))
            if (!modelled[it.current_value])
                roaring_bitmap_add(bm, it.current_value);
    }
    free(modelled);
    return bm;
}

static void check_query(model_t *m, int s, int32_t d0, int32_t d1, beh_cmp op, uint64_t k)
{
    beh_window_t w;
    beh_window_init(m->b, m->sid[s], d0, d1, &w);
    if (g_days)
        beh_window_days(&w);
    roaring_bitmap_t *want = naive(m, s, d0, d1, op, k);
    roaring_bitmap_t *got = roaring_bitmap_create();
    assert_int_equal(beh_window_eval(&w, op, k, m->universe, got), CP_OK);
    if (!roaring_bitmap_equals(want, got))
        fail_msg("series %d [%d, %d] op %d k %llu: got %llu users, want %llu", s, d0, d1, op,
                 (unsigned long long)k, (unsigned long long)roaring_bitmap_get_cardinality(got),
                 (unsigned long long)roaring_bitmap_get_cardinality(want));
    uint64_t est = beh_window_estimate(&w, op, k);
    assert_true(est >= roaring_bitmap_get_cardinality(want));
    roaring_bitmap_free(want);
    roaring_bitmap_free(got);
}

static uint64_t pick_k(uint64_t *rng)
{
    static const uint64_t ks[] = {0,   1,       2,       3,          4,
                                  5,   7,       12,      100,        5000,
                                  SAT, SAT + 1, 3 * SAT, UINT64_MAX, ((uint64_t)1 << 63) + 1};
    return ks[rnd(rng, CP_ARRAY_LEN(ks))];
}

static void random_queries(model_t *m, uint64_t *rng, int n)
{
    for (int i = 0; i < n; i++) {
        int s = (int)rnd(rng, NS);
        int32_t d0, d1;
        switch (rnd(rng, 5)) {
        case 0:
            d0 = INT32_MIN, d1 = INT32_MAX;
            break;
        case 1:
            d0 = d1 = DAY0 + (int32_t)rnd(rng, ND);
            break;
        case 2: /* possibly empty or outside the data */
            d0 = DAY0 - 5 + (int32_t)rnd(rng, ND + 10);
            d1 = d0 - 3 + (int32_t)rnd(rng, 6);
            break;
        default:
            d0 = DAY0 - 2 + (int32_t)rnd(rng, ND + 2);
            d1 = d0 + (int32_t)rnd(rng, ND);
        }
        check_query(m, s, d0, d1, (beh_cmp)(1 + rnd(rng, 6)), pick_k(rng));
    }
}

static void check_counts(model_t *m)
{
    for (int s = 0; s < NS; s++)
        for (int d = 0; d < ND; d++)
            for (int u = 0; u < NU; u += 7)
                assert_true(beh_count(m->b, m->sid[s], DAY0 + d, m->uord[u]) == *at(m, s, d, u));
}

static void test_queries(void **state)
{
    (void)state;
    uint64_t rng = 0xbe4a01;
    model_t *m = model_new(&rng);
    check_counts(m);
    /* every op with every small k on the all-time window and one day */
    for (int op = BEH_EQ; op <= BEH_GE; op++)
        for (uint64_t k = 0; k < 4; k++) {
            check_query(m, 0, INT32_MIN, INT32_MAX, (beh_cmp)op, k);
            check_query(m, 3, DAY0 + 2, DAY0 + 9, (beh_cmp)op, k);
        }
    random_queries(m, &rng, 150);
    /* the number of active days (did(...) days op k) */
    g_days = 1;
    for (int op = BEH_EQ; op <= BEH_GE; op++)
        for (uint64_t k = 0; k < 4; k++) {
            check_query(m, 0, INT32_MIN, INT32_MAX, (beh_cmp)op, k);
            check_query(m, 3, DAY0 + 2, DAY0 + 9, (beh_cmp)op, k);
            check_query(m, 1, INT32_MIN, INT32_MAX, (beh_cmp)op, (uint64_t)ND / 3 + k - 1);
        }
    random_queries(m, &rng, 60);
    g_days = 0;

    /* the chunk form leaves its scratch zeroed and reports emptiness */
    beh_window_t w;
    beh_window_init(m->b, m->sid[0], INT32_MIN, INT32_MAX, &w);
    assert_true(w.ncells == ND && w.slices > 30);
    size_t words = beh_window_scratch_words(&w);
    uint64_t *scr = aligned_alloc(64, words * 8), *dst = aligned_alloc(64, CP_CHUNK_WORDS * 8);
    memset(scr, 0, words * 8);
    assert_int_equal(beh_window_chunk(&w, 1, BEH_GE, 3, dst, scr), 1);
    for (size_t i = 0; i < words; i++)
        assert_true(scr[i] == 0);
    assert_int_equal(beh_window_chunk(&w, 9, BEH_GE, 3, dst, scr), 0); /* nobody there */
    assert_int_equal(beh_window_chunk(&w, 9, BEH_LT, 3, dst, scr), 1); /* everyone (0 < 3) */
    assert_true(dense_popcount(dst) == CP_CHUNK_BITS);
    free(scr);
    free(dst);

    /* unknown series and empty windows: everybody has 0 */
    beh_window_init(m->b, BEH_NO_SERIES, 0, 10, &w);
    assert_int_equal(w.ncells, 0);
    roaring_bitmap_t *out = roaring_bitmap_create();
    assert_int_equal(beh_window_eval(&w, BEH_EQ, 0, m->universe, out), CP_OK);
    assert_true(roaring_bitmap_equals(out, m->universe));
    roaring_bitmap_free(out);
    model_free(m);
}

/* beh_window_foreach: the pieces it reports add up to each user's sum. */
static void sum_piece(void *ctx, uint32_t user, uint64_t count)
{
    uint64_t *sums = ctx;
    sums[user] += count;
}

static void test_window_foreach(void **state)
{
    (void)state;
    uint64_t rng = 0xf0ea;
    model_t *m = model_new(&rng);
    uint64_t *sums = xcalloc(MAXU, sizeof *sums);
    for (int q = 0; q < 30; q++) {
        int s = (int)rnd(&rng, NS);
        int32_t d0 = DAY0 - 2 + (int32_t)rnd(&rng, ND + 2), d1 = d0 + (int32_t)rnd(&rng, ND);
        beh_window_t w;
        beh_window_init(m->b, m->sid[s], d0, d1, &w);
        memset(sums, 0, MAXU * sizeof *sums);
        beh_window_foreach(&w, sum_piece, sums);
        for (int u = 0; u < NU; u++) {
            uint64_t want = 0;
            for (int d = 0; d < ND; d++)
                if (DAY0 + d >= d0 && DAY0 + d <= d1)
                    want += *at(m, s, d, u);
            if (sums[m->uord[u]] != want)
                fail_msg("series %d [%d, %d] user %u: %llu, want %llu", s, d0, d1, m->uord[u],
                         (unsigned long long)sums[m->uord[u]], (unsigned long long)want);
        }
    }
    /* the day-sum series keys: distinct per sign, and never a filter's */
    uint8_t k1[BEH_KEY_MAX], k2[BEH_KEY_MAX], k3[BEH_KEY_MAX];
    size_t l1, l2, l3;
    beh_prop_t amount = {"amount", 6, "x", 1};
    assert_int_equal(beh_sum_series_key("purchase", 8, "amount", 6, 0, k1, &l1), CP_OK);
    assert_int_equal(beh_sum_series_key("purchase", 8, "amount", 6, 1, k2, &l2), CP_OK);
    assert_int_equal(beh_series_key("purchase", 8, &amount, 1, k3, &l3), CP_OK);
    assert_false(l1 == l2 && memcmp(k1, k2, l1) == 0);
    assert_false(l1 == l3 && memcmp(k1, k3, l1) == 0);
    free(sums);
    model_free(m);
}

static void test_saturation_and_args(void **state)
{
    (void)state;
    beh_t *b = NULL;
    uint32_t id;
    assert_int_equal(beh_create(&b), CP_OK);
    assert_int_equal(beh_series_intern(b, (const uint8_t *)"\x01x", 2, &id), CP_OK);
    assert_int_equal(beh_record(b, id, 5, 7, 0), CP_EINVAL);
    assert_int_equal(beh_record(b, id + 1, 5, 7, 1), CP_EINVAL);
    assert_int_equal(beh_record(b, id, 5, 7, UINT64_MAX), CP_OK);
    assert_true(beh_count(b, id, 5, 7) == SAT);
    assert_int_equal(beh_record(b, id, 5, 7, 1), CP_OK);
    assert_true(beh_count(b, id, 5, 7) == SAT);
    assert_int_equal(beh_record(b, id, 5, 8, 1), CP_OK);
    assert_int_equal(beh_record(b, id, 5, 8, 2), CP_OK);
    assert_true(beh_count(b, id, 5, 8) == 3);
    assert_true(beh_count(b, id, 6, 8) == 0);
    assert_true(beh_count(b, 99, 5, 8) == 0);
    assert_int_equal(beh_day_of(0), 0);
    assert_int_equal(beh_day_of(86399), 0);
    assert_int_equal(beh_day_of(-1), -1);
    assert_int_equal(beh_day_of(-86400), -1);
    assert_int_equal(beh_day_of(-86401), -2);
    assert_int_equal(beh_day_of(1293840000), 14975); /* 2011-01-01 */
    beh_free(b);
    beh_free(NULL);
}

static void test_keys_and_events(void **state)
{
    (void)state;
    beh_t *b = NULL;
    uint8_t k1[BEH_KEY_MAX], k2[BEH_KEY_MAX];
    size_t l1, l2;
    beh_prop_t ab[2] = {{"category", 8, "x", 1}, {"brand", 5, "y", 1}};
    beh_prop_t ba[2] = {{"brand", 5, "y", 1}, {"category", 8, "x", 1}};
    assert_int_equal(beh_series_key("purchase", 8, ab, 2, k1, &l1), CP_OK);
    assert_int_equal(beh_series_key("purchase", 8, ba, 2, k2, &l2), CP_OK);
    assert_true(l1 == l2 && memcmp(k1, k2, l1) == 0);
    beh_prop_t dup[2] = {{"brand", 5, "y", 1}, {"brand", 5, "z", 1}};
    assert_int_equal(beh_series_key("purchase", 8, dup, 2, k1, &l1), CP_EINVAL);
    assert_int_equal(beh_series_key("", 0, NULL, 0, k1, &l1), CP_EINVAL);
    char big[300];
    memset(big, 'a', sizeof big);
    assert_int_equal(beh_series_key(big, 256, NULL, 0, k1, &l1), CP_EINVAL);
    beh_prop_t four[4] = {{"a", 1, "1", 1}, {"b", 1, "1", 1}, {"c", 1, "1", 1}, {"d", 1, "", 0}};
    assert_int_equal(beh_series_key("e", 1, four, 4, k1, &l1), CP_ELIMIT);
    /* a value "a\x01b" must not collide with a different split of bytes */
    beh_prop_t p1 = {"p", 1, "a\x01q\x01z", 5}, p2 = {"p", 1, "a", 1};
    assert_int_equal(beh_series_key("e", 1, &p1, 1, k1, &l1), CP_OK);
    assert_int_equal(beh_series_key("e", 1, &p2, 1, k2, &l2), CP_OK);
    assert_false(l1 == l2 && memcmp(k1, k2, l1) == 0);

    assert_int_equal(beh_create(&b), CP_OK);
    uint32_t s;
    assert_int_equal(beh_resolve(b, "purchase", 8, NULL, 0, &s), CP_ENOTFOUND);
    /* 3 indexed properties: 8 series; 4: 1 + 4 + 6 + 4 = 15 */
    beh_prop_t three[3] = {
        {"stock_code", 10, "85123A", 6}, {"category", 8, "x", 1}, {"brand", 5, "y", 1}};
    assert_int_equal(beh_record_event(b, "purchase", 8, three, 3, 100, 42, 2), CP_OK);
    assert_int_equal(beh_series_count(b), 8);
    assert_int_equal(beh_record_event(b, "view", 4, four, 4, 100, 42, 1), CP_OK);
    assert_int_equal(beh_series_count(b), 8 + 15);
    assert_int_equal(beh_record_event(b, "view", 4, dup, 2, 100, 42, 1), CP_EINVAL);
    assert_int_equal(beh_series_count(b), 8 + 15);
    beh_prop_t nine[9];
    for (int i = 0; i < 9; i++)
        nine[i] = (beh_prop_t){&"abcdefghi"[i], 1, "v", 1};
    assert_int_equal(beh_record_event(b, "x", 1, nine, 9, 1, 1, 1), CP_ELIMIT);

    assert_int_equal(beh_resolve(b, "purchase", 8, NULL, 0, &s), CP_OK);
    assert_true(beh_count(b, s, 100, 42) == 2);
    assert_int_equal(beh_resolve(b, "purchase", 8, ba, 2, &s), CP_OK);
    assert_true(s != BEH_NO_SERIES && beh_count(b, s, 100, 42) == 2);
    beh_prop_t other = {"brand", 5, "zz", 2};
    assert_int_equal(beh_resolve(b, "purchase", 8, &other, 1, &s), CP_OK);
    assert_true(s == BEH_NO_SERIES);
    assert_int_equal(beh_resolve(b, "purchase", 8, dup, 2, &s), CP_EINVAL);
    beh_prop_t all3[3] = {three[2], three[0], three[1]};
    assert_int_equal(beh_resolve(b, "purchase", 8, all3, 3, &s), CP_OK);
    assert_true(s != BEH_NO_SERIES && beh_count(b, s, 100, 42) == 2);
    size_t kl;
    assert_non_null(beh_series_key_of(b, s, &kl));
    assert_null(beh_series_key_of(b, 1000, &kl));
    int32_t f, l;
    assert_int_equal(beh_day_range(b, &f, &l), 1);
    assert_int_equal(f, 100); /* the refused event left nothing */
    assert_int_equal(l, 100);
    beh_free(b);
}

static void test_retention(void **state)
{
    (void)state;
    uint64_t rng = 0xbe4a02;
    model_t *m = model_new(&rng);
    int32_t cutoff = DAY0 + 9;
    size_t before = beh_dirty_count(m->b);
    size_t dropped = beh_retain(m->b, cutoff);
    assert_true(dropped > 0);
    /* each dropped cell queues the deletion of its keys (it may have been
     * written before, and may be created again before the next persist) */
    assert_true(beh_dirty_count(m->b) == before + dropped);
    for (int s = 0; s < NS; s++)
        for (int d = 0; d < ND && DAY0 + d < cutoff; d++)
            memset(at(m, s, d, 0), 0, NU * sizeof(uint64_t));
    check_counts(m);
    random_queries(m, &rng, 60);
    assert_int_equal(beh_retain(m->b, cutoff), 0);
    model_free(m);
}

static void test_remove_move_extract(void **state)
{
    (void)state;
    uint64_t rng = 0xbe4a03;
    model_t *m = model_new(&rng);
    /* deletion */
    for (int i = 0; i < 200; i++) {
        int u = (int)rnd(&rng, NU);
        beh_user_remove(m->b, m->uord[u]);
        for (int s = 0; s < NS; s++)
            for (int d = 0; d < ND; d++)
                *at(m, s, d, u) = 0;
        beh_entry_t *e = NULL;
        size_t n = 1;
        assert_int_equal(beh_user_extract(m->b, m->uord[u], &e, &n), CP_OK);
        assert_int_equal(n, 0);
        assert_null(e);
    }
    /* identity merges: counts add up (saturating) */
    for (int i = 0; i < 200; i++) {
        int from = (int)rnd(&rng, NU), to = (int)rnd(&rng, NU);
        assert_int_equal(beh_user_move(m->b, m->uord[from], m->uord[to]), CP_OK);
        if (from == to)
            continue;
        for (int s = 0; s < NS; s++)
            for (int d = 0; d < ND; d++) {
                uint64_t *a = at(m, s, d, from), *c = at(m, s, d, to);
                *c = *c + *a > SAT ? SAT : *c + *a;
                *a = 0;
            }
    }
    check_counts(m);
    random_queries(m, &rng, 60);

    /* extract -> encode -> decode -> remove -> re-insert is the identity */
    for (int i = 0; i < 100; i++) {
        int u = (int)rnd(&rng, NU);
        beh_entry_t *e = NULL, *e2 = NULL;
        size_t n = 0, n2 = 0, len = 0;
        uint8_t *buf = NULL;
        assert_int_equal(beh_user_extract(m->b, m->uord[u], &e, &n), CP_OK);
        size_t want = 0;
        for (int s = 0; s < NS; s++)
            for (int d = 0; d < ND; d++)
                want += *at(m, s, d, u) != 0;
        assert_int_equal(n, want);
        for (size_t j = 0; j < n; j++) {
            int s = 0;
            while (m->sid[s] != e[j].series)
                s++;
            assert_true(e[j].count == *at(m, s, e[j].day - DAY0, u));
        }
        assert_int_equal(beh_entries_encode(e, n, &buf, &len), CP_OK);
        assert_int_equal(beh_entries_decode(buf, len, &e2, &n2), CP_OK);
        assert_int_equal(n2, n);
        if (n)
            assert_memory_equal(e, e2, n * sizeof *e);
        free(e2);
        /* truncated bytes are refused */
        assert_int_equal(beh_entries_decode(buf, len - 1, &e2, &n2), CP_EIO);
        free(e2);
        e2 = NULL;
        beh_user_remove(m->b, m->uord[u]);
        assert_int_equal(beh_user_insert(m->b, m->uord[u], e, n), CP_OK);
        free(e);
        free(buf);
    }
    check_counts(m);
    beh_entry_t bad = {9999, 1, 1};
    assert_int_equal(beh_user_insert(m->b, 1, &bad, 1), CP_EINVAL);
    bad = (beh_entry_t){m->sid[0], 1, 0};
    assert_int_equal(beh_user_insert(m->b, 1, &bad, 1), CP_EINVAL);
    uint8_t junk[23] = {'B', 'E', 1, 1, 0, 0, 0};
    beh_entry_t *e = NULL;
    size_t n;
    assert_int_equal(beh_entries_decode(junk, sizeof junk, &e, &n), CP_EIO); /* count 0 */
    assert_int_equal(beh_entries_decode("XE\x01\0\0\0\0", 7, &e, &n), CP_EIO);
    assert_int_equal(beh_entries_decode("BE\x01\0\0\0\0", 7, &e, &n), CP_OK);
    assert_int_equal(n, 0);
    model_free(m);
}

/* ---------------------------------------------------------- persistence */

static char g_dir[256];

static store_t *fresh_store(void)
{
    test_tmpdir(g_dir, sizeof g_dir, "behavior");
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(g_dir, STORE_CREATE, 1u << 28, 1, &st, &err), CP_OK);
    return st;
}

static void drop_store(store_t *st)
{
    store_close(st);
    test_rmtree(g_dir);
}

static void persist(store_t *st, beh_t *b)
{
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    if (beh_persist(b, t, STORE_META, &err) != CP_OK)
        fail_msg("persist: %s", err.message);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
    assert_int_equal(beh_dirty_count(b), 0);
}

static cp_status reload(store_t *st, beh_t **out, cp_error_t *err)
{
    store_txn_t *t = NULL;
    assert_int_equal(store_txn_begin(st, 0, &t, err), CP_OK);
    assert_int_equal(beh_create(out), CP_OK);
    cp_status rc = beh_load(*out, t, STORE_META, err);
    store_txn_abort(t);
    return rc;
}

static void put_raw(store_t *st, const void *k, size_t kl, const void *v, size_t vl)
{
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    assert_int_equal(store_put(t, STORE_META, k, kl, v, vl, &err), CP_OK);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
}

static void expect_corrupt(store_t *st, const char *frag)
{
    beh_t *b = NULL;
    cp_error_t err = {0};
    assert_int_equal(reload(st, &b, &err), CP_EIO);
    if (strstr(err.message, frag) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err.message, frag);
    beh_free(b);
}

static void test_persistence(void **state)
{
    (void)state;
    uint64_t rng = 0xbe4a04;
    model_t *m = model_new(&rng);
    store_t *st = fresh_store();
    persist(st, m->b);

    /* single writes after the first persist touch only their cells */
    beh_user_remove(m->b, m->uord[NDENSE + 1]);
    for (int s = 0; s < NS; s++)
        for (int d = 0; d < ND; d++)
            *at(m, s, d, NDENSE + 1) = 0;
    rec(m, 2, 3, NDENSE + 5, 9);
    rec(m, 2, 3, 17, 1);
    beh_retain(m->b, DAY0 + 1);
    for (int s = 0; s < NS; s++)
        memset(at(m, s, 0, 0), 0, NU * sizeof(uint64_t));
    assert_true(beh_dirty_count(m->b) > 0 && beh_dirty_count(m->b) < 3 * NS + 2 * ND * NS);
    persist(st, m->b);

    beh_t *old = m->b;
    cp_error_t err = {0};
    if (reload(st, &m->b, &err) != CP_OK)
        fail_msg("reload: %s", err.message);
    assert_int_equal(beh_series_count(m->b), beh_series_count(old));
    uint64_t b1, c1, b2, c2;
    beh_memory(old, &b1, &c1);
    beh_memory(m->b, &b2, &c2);
    assert_true(c1 == c2 && c1 > 0);
    beh_free(old);
    check_counts(m);
    random_queries(m, &rng, 60);
    /* loading into a non-empty index is refused */
    store_txn_t *t = NULL;
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    assert_int_equal(beh_load(m->b, t, STORE_META, &err), CP_EINVAL);
    store_txn_abort(t);
    /* mark_all_dirty rewrites everything to the same bytes */
    beh_mark_all_dirty(m->b);
    assert_true(beh_dirty_count(m->b) == c2);
    persist(st, m->b);
    beh_t *again = NULL;
    assert_int_equal(reload(st, &again, &err), CP_OK);
    beh_free(again);

    /* corrupt data: a cell blob that is not one, a slice outside exists, a
     * cell of an unknown series, a dictionary gap, a bad dictionary key */
    /* version 1 (a whole cell under the 14-byte key) of day 100, where the
     * model has no data */
    uint8_t key[14] = {'b', 'e', 'h', '/', 'd', '/', 0, 0, 0, 0, 0x80, 0, 0, 100};
    put_raw(st, key, sizeof key, "BC\x01\x00\x05\x00\x00\x00garbage", 15);
    expect_corrupt(st, "corrupt behaviour cell 0/100");
    {
        /* exists {1}, slice {2} */
        roaring_bitmap_t *a = roaring_bitmap_of(1, 1), *s2 = roaring_bitmap_of(1, 2);
        size_t la = roaring_bitmap_portable_size_in_bytes(a);
        size_t ls = roaring_bitmap_portable_size_in_bytes(s2);
        uint8_t blob[256] = {'B', 'C', 1, 1};
        size_t o = 4;
        blob[o] = (uint8_t)la;
        roaring_bitmap_portable_serialize(a, (char *)blob + o + 4);
        o += 4 + la;
        blob[o] = (uint8_t)ls;
        roaring_bitmap_portable_serialize(s2, (char *)blob + o + 4);
        o += 4 + ls;
        put_raw(st, key, sizeof key, blob, o);
        expect_corrupt(st, "corrupt behaviour cell 0/100");
        blob[3] = 0; /* now a trailing byte mismatch */
        put_raw(st, key, sizeof key, blob, o);
        expect_corrupt(st, "corrupt behaviour cell 0/100");
        /* a valid blob (slice {1}) is accepted, but not under an unknown series */
        blob[3] = 1;
        roaring_bitmap_portable_serialize(a, (char *)blob + 4 + 4 + la + 4);
        put_raw(st, key, sizeof key, blob, o);
        beh_t *ok = NULL;
        assert_int_equal(reload(st, &ok, &err), CP_OK);
        assert_true(beh_count(ok, 0, 100, 1) == 2);
        /* the next persist rewrites it per chunk: the 14-byte key goes */
        assert_int_equal(beh_dirty_chunk_count(ok), 1);
        persist(st, ok);
        beh_free(ok);
        assert_int_equal(reload(st, &ok, &err), CP_OK);
        assert_true(beh_count(ok, 0, 100, 1) == 2 && beh_dirty_count(ok) == 0);
        beh_free(ok);
        {
            store_txn_t *rt = NULL;
            const void *v;
            size_t vl;
            assert_int_equal(store_txn_begin(st, 0, &rt, &err), CP_OK);
            assert_int_equal(store_get(rt, STORE_META, key, sizeof key, &v, &vl, &err),
                             CP_ENOTFOUND);
            store_txn_abort(rt);
        }
        /* version 2 chunk blobs: a bitmap outside its chunk, garbage */
        uint8_t ckey[16];
        memcpy(ckey, key, 14);
        ckey[13] = 101;
        ckey[14] = 0;
        ckey[15] = 2; /* chunk 2: users 131072.. */
        blob[2] = 2;
        put_raw(st, ckey, sizeof ckey, blob, o); /* users 1: not in chunk 2 */
        expect_corrupt(st, "corrupt behaviour cell 0/101 chunk 2");
        put_raw(st, ckey, sizeof ckey, "BC\x02\x00\x01\x00\x00\x00x", 9);
        expect_corrupt(st, "corrupt behaviour cell 0/101 chunk 2");
        {
            store_txn_t *wt = NULL;
            assert_int_equal(store_txn_begin(st, 1, &wt, &err), CP_OK);
            assert_int_equal(store_del(wt, STORE_META, ckey, sizeof ckey, &err), CP_OK);
            assert_int_equal(store_txn_commit(wt, &err), CP_OK);
        }
        blob[2] = 1;
        key[9] = 200;
        put_raw(st, key, sizeof key, blob, o);
        expect_corrupt(st, "unknown series 200");
        roaring_bitmap_free(a);
        roaring_bitmap_free(s2);
    }
    uint8_t dkey[10] = {'b', 'e', 'h', '/', 's', '/', 0, 0, 0, 0};
    dkey[9] = 0;
    put_raw(st, dkey, sizeof dkey,
            "\x03"
            "ab",
            3); /* length byte past the end */
    expect_corrupt(st, "corrupt key of series 0");
    put_raw(st, dkey, sizeof dkey,
            "\x01x\x01z\x00\x01"
            "a\x00",
            8); /* names out of order */
    expect_corrupt(st, "corrupt key of series 0");
    put_raw(st, dkey, sizeof dkey, "\x08purchase", 9); /* the original */
    assert_int_equal(m->sid[0], 0);
    dkey[9] = 250;
    put_raw(st, dkey, sizeof dkey, "\x01x", 2);
    expect_corrupt(st, "behaviour dictionary");
    drop_store(st);
    model_free(m);
}

static int chunk_key_present(store_t *st, uint32_t series, int32_t day, uint32_t chunk)
{
    uint8_t k[16] = {'b', 'e', 'h', '/', 'd', '/'};
    uint32_t d = (uint32_t)day ^ 0x80000000u;
    for (int i = 0; i < 4; i++) {
        k[6 + i] = (uint8_t)(series >> (24 - 8 * i));
        k[10 + i] = (uint8_t)(d >> (24 - 8 * i));
    }
    k[14] = (uint8_t)(chunk >> 8);
    k[15] = (uint8_t)chunk;
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    const void *v;
    size_t vl;
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    cp_status rc = store_get(t, STORE_META, k, sizeof k, &v, &vl, &err);
    store_txn_abort(t);
    assert_true(rc == CP_OK || rc == CP_ENOTFOUND);
    return rc == CP_OK;
}

static void del_chunk_key(store_t *st, uint32_t series, int32_t day, uint32_t chunk)
{
    uint8_t k[16] = {'b', 'e', 'h', '/', 'd', '/'};
    uint32_t d = (uint32_t)day ^ 0x80000000u;
    for (int i = 0; i < 4; i++) {
        k[6 + i] = (uint8_t)(series >> (24 - 8 * i));
        k[10 + i] = (uint8_t)(d >> (24 - 8 * i));
    }
    k[14] = (uint8_t)(chunk >> 8);
    k[15] = (uint8_t)chunk;
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    assert_int_equal(store_del(t, STORE_META, k, sizeof k, &err), CP_OK);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
}

/*
 * Chunk-level persistence: a write dirties the one chunk of the user it
 * touches and a persist rewrites only that chunk (a chunk key deleted
 * behind the index's back stays deleted); then rounds of random writes,
 * user deletions, retention and writes to dropped days (a cell emptied
 * and created again before the persist) each persisted and reloaded,
 * against the model.
 */
static void test_chunk_persistence(void **state)
{
    (void)state;
    uint64_t rng = 0xbe4a05;
    model_t *m = model_new(&rng);
    store_t *st = fresh_store();
    cp_error_t err = {0};
    persist(st, m->b);

    /* a scattered user with a count in cell (0, day 2) outside chunk 1 */
    int u = -1;
    for (int i = NDENSE; i < NU && u < 0; i++)
        if (*at(m, 0, 2, i) && (m->uord[i] >> 16) != 1)
            u = i;
    assert_true(u >= 0);
    uint32_t cu = m->uord[u] >> 16;
    assert_true(chunk_key_present(st, m->sid[0], DAY0 + 2, cu));
    assert_true(chunk_key_present(st, m->sid[0], DAY0 + 2, 1));
    rec(m, 0, 2, 0, 1); /* dense block: chunk 1 */
    rec(m, 0, 2, 1, 3);
    assert_int_equal(beh_dirty_count(m->b), 1);
    assert_int_equal(beh_dirty_chunk_count(m->b), 1);
    del_chunk_key(st, m->sid[0], DAY0 + 2, cu);
    persist(st, m->b);
    assert_false(chunk_key_present(st, m->sid[0], DAY0 + 2, cu)); /* not rewritten */
    assert_true(chunk_key_present(st, m->sid[0], DAY0 + 2, 1));
    rec(m, 0, 2, u, 1);
    rec(m, 1, 2, u, 1);
    assert_int_equal(beh_dirty_count(m->b), 2);
    assert_int_equal(beh_dirty_chunk_count(m->b), 2);
    persist(st, m->b);
    assert_true(chunk_key_present(st, m->sid[0], DAY0 + 2, cu));

    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < 300; i++) {
            int s = (int)rnd(&rng, NS), d = (int)rnd(&rng, ND);
            int v = rnd(&rng, 4) == 0 ? (int)rnd(&rng, NDENSE) : NDENSE + (int)rnd(&rng, NSCAT);
            rec(m, s, d, v, pick_delta(&rng));
        }
        for (int i = 0; i < 20; i++) {
            int v = (int)rnd(&rng, NU);
            beh_user_remove(m->b, m->uord[v]);
            for (int s = 0; s < NS; s++)
                for (int d = 0; d < ND; d++)
                    *at(m, s, d, v) = 0;
        }
        if (round % 2 == 1) {
            int cut = round + 1;
            beh_retain(m->b, DAY0 + cut);
            for (int s = 0; s < NS; s++)
                for (int d = 0; d < cut; d++)
                    memset(at(m, s, d, 0), 0, NU * sizeof(uint64_t));
            /* dropped cells created again before the persist */
            for (int i = 0; i < 40; i++)
                rec(m, (int)rnd(&rng, NS), (int)rnd(&rng, cut), (int)rnd(&rng, NU), 1);
        }
        persist(st, m->b);
        beh_t *old = m->b;
        if (reload(st, &m->b, &err) != CP_OK)
            fail_msg("reload: %s", err.message);
        uint64_t b1, c1, b2, c2;
        beh_memory(old, &b1, &c1);
        beh_memory(m->b, &b2, &c2);
        assert_true(c1 == c2);
        beh_free(old);
        for (int s = 0; s < NS; s++)
            for (int d = 0; d < ND; d++)
                for (int v = 0; v < NU; v += 3)
                    assert_true(beh_count(m->b, m->sid[s], DAY0 + d, m->uord[v]) ==
                                *at(m, s, d, v));
    }
    random_queries(m, &rng, 30);
    drop_store(st);
    model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_saturation_and_args),
        cmocka_unit_test(test_keys_and_events),
        cmocka_unit_test(test_queries),
        cmocka_unit_test(test_window_foreach),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_remove_move_extract),
        cmocka_unit_test(test_persistence),
        cmocka_unit_test(test_chunk_persistence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
