/*
 * test_index_behavior_pack.c — small cells (at most 16 users) persisted in
 * packs (cell version 3) beside large cells under chunk keys (version 2),
 * against a naive model (a dense array of counts):
 *
 *  - rounds of random single records (deltas up to saturation), bulk
 *    batches, user removals, merges (beh_user_move) and retention make
 *    cells cross the small/large boundary both ways, across negative days,
 *    several pack windows and blocks and users in several chunks; every
 *    round is persisted, and reloaded every other round: counts and
 *    window evaluations (every comparison) equal the model's;
 *  - cells through every change of in-memory form (small array inline
 *    or allocated, roaring; promotions by single and bulk records,
 *    demotions by removals) against the same model;
 *  - the bytes persisted, reloaded and written again whole
 *    (beh_mark_all_dirty) into a fresh store are the same bytes;
 *  - a small cell still under a version 2 chunk key (an older data
 *    directory) loads, stays out of its neighbours' pack, and moves into
 *    the pack (its chunk key deleted) when it changes;
 *  - corrupt packs are CP_EIO naming the pack: bad header, users out of
 *    order, trailing bytes, a cell also under a chunk key, an unknown
 *    series.
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

#define NS 40 /* series: 3 pack blocks */
#define ND 50 /* days D0 .. D0 + 49: 4 pack windows, negative ones included */
#define NU 48 /* users spread over 3 chunks */
#define D0 (-20)
#define SAT ((uint64_t)1 << 32)

static char g_dir[2][256];

static store_t *fresh_store(int which)
{
    test_tmpdir(g_dir[which], sizeof g_dir[which], which ? "behpack-1" : "behpack-0");
    store_t *st = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(g_dir[which], STORE_CREATE, 1u << 29, 1, &st, &err), CP_OK);
    return st;
}

static void drop_store(store_t *st, int which)
{
    store_close(st);
    test_rmtree(g_dir[which]);
}

static void persist(store_t *st, beh_t *b)
{
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    if (beh_persist(b, t, STORE_META, &err) != CP_OK)
        fail_msg("persist: %s", err.message);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
}

static cp_status try_reload(store_t *st, beh_t **out, cp_error_t *err)
{
    store_txn_t *t = NULL;
    assert_int_equal(beh_create(out), CP_OK);
    assert_int_equal(store_txn_begin(st, 0, &t, err), CP_OK);
    cp_status rc = beh_load(*out, t, STORE_META, err);
    store_txn_abort(t);
    return rc;
}

static beh_t *reload(store_t *st)
{
    beh_t *b = NULL;
    cp_error_t err = {0};
    if (try_reload(st, &b, &err) != CP_OK)
        fail_msg("load: %s", err.message);
    return b;
}

static void put_raw(store_t *st, const void *k, size_t kl, const void *v, size_t vl)
{
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    assert_int_equal(store_put(t, STORE_META, k, kl, v, vl, &err), CP_OK);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
}

static int key_present(store_t *st, const void *k, size_t kl)
{
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    const void *v;
    size_t vl;
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    cp_status rc = store_get(t, STORE_META, k, kl, &v, &vl, &err);
    store_txn_abort(t);
    return rc == CP_OK;
}

typedef struct dump {
    uint8_t *p;
    size_t len, cap;
} dump_t;

static cp_status dump_one(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                          cp_error_t *err)
{
    (void)err;
    dump_t *d = ud;
    if (d->len + kl + vl + 16 > d->cap) {
        d->cap = (d->len + kl + vl + 16) * 2;
        d->p = realloc(d->p, d->cap);
        assert_non_null(d->p);
    }
    uint64_t l = kl;
    memcpy(d->p + d->len, &l, 8);
    memcpy(d->p + d->len + 8, k, kl);
    d->len += 8 + kl;
    l = vl;
    memcpy(d->p + d->len, &l, 8);
    memcpy(d->p + d->len + 8, v, vl);
    d->len += 8 + vl;
    return CP_OK;
}

static dump_t dump_store(store_t *st)
{
    dump_t d = {0};
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    assert_int_equal(store_each(t, STORE_META, "beh/", 4, dump_one, &d, &err), CP_OK);
    store_txn_abort(t);
    return d;
}

static uint64_t rnd(uint64_t *s, uint64_t n)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s % n;
}

/* --------------------------------------------------------------- model */

typedef struct model {
    beh_t *b;
    uint32_t sid[NS];
    uint64_t cnt[NS][ND][NU];
} model_t;

static uint32_t uord(int u)
{
    return (uint32_t)(u % 3) * 65536u + (uint32_t)u * 97u; /* 3 chunks */
}

static void add(model_t *m, int s, int d, int u, uint64_t delta)
{
    uint64_t *c = &m->cnt[s][d][u];
    *c = *c + delta > SAT ? SAT : *c + delta;
}

static void rec(model_t *m, int s, int d, int u, uint64_t delta)
{
    assert_int_equal(beh_record(m->b, m->sid[s], D0 + d, uord(u), delta), CP_OK);
    add(m, s, d, u, delta);
}

static model_t *model_new(void)
{
    model_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    assert_int_equal(beh_create(&m->b), CP_OK);
    for (int s = 0; s < NS; s++) {
        uint8_t key[BEH_KEY_MAX];
        char v[16];
        size_t kl;
        snprintf(v, sizeof v, "%d", s);
        beh_prop_t p = {"k", 1, v, strlen(v)};
        assert_int_equal(beh_series_key("e", 1, &p, 1, key, &kl), CP_OK);
        assert_int_equal(beh_series_intern(m->b, key, kl, &m->sid[s]), CP_OK);
    }
    return m;
}

static const uint64_t ks[] = {0, 1, 2, 3, 5, 17, SAT, SAT + 1};

/* beh_window_eval of series s over days [d0, d1] with `op k` against the
 * model's sums, clipped to the users uni. */
static void check_window(model_t *m, const roaring_bitmap_t *uni, int s, int d0, int d1, beh_cmp op,
                         uint64_t k)
{
    beh_window_t w;
    beh_window_init(m->b, m->sid[s], D0 + d0, D0 + d1, &w);
    roaring_bitmap_t *out = roaring_bitmap_create();
    assert_int_equal(beh_window_eval(&w, op, k, uni, out), CP_OK);
    for (int u = 0; u < NU; u++) {
        uint64_t sum = 0;
        for (int d = d0; d <= d1 && d < ND; d++)
            sum += m->cnt[s][d][u];
        int want = op == BEH_EQ   ? sum == k
                   : op == BEH_NE ? sum != k
                   : op == BEH_LT ? sum < k
                   : op == BEH_LE ? sum <= k
                   : op == BEH_GT ? sum > k
                                  : sum >= k;
        if (roaring_bitmap_contains(out, uord(u)) != want)
            fail_msg("window s%d [%d,%d] op %d k %llu user %d: sum %llu", s, d0, d1, op,
                     (unsigned long long)k, u, (unsigned long long)sum);
    }
    roaring_bitmap_free(out);
}

static roaring_bitmap_t *all_users(void)
{
    roaring_bitmap_t *uni = roaring_bitmap_create();
    for (int u = 0; u < NU; u++)
        roaring_bitmap_add(uni, uord(u));
    return uni;
}

static void check(model_t *m, uint64_t *rng)
{
    for (int s = 0; s < NS; s++)
        for (int d = 0; d < ND; d++)
            for (int u = 0; u < NU; u++)
                if (beh_count(m->b, m->sid[s], D0 + d, uord(u)) != m->cnt[s][d][u])
                    fail_msg("count s%d d%d u%d: %llu, model %llu", s, d, u,
                             (unsigned long long)beh_count(m->b, m->sid[s], D0 + d, uord(u)),
                             (unsigned long long)m->cnt[s][d][u]);
    roaring_bitmap_t *uni = all_users();
    for (int q = 0; q < 40; q++) {
        int s = (int)rnd(rng, NS), d0 = (int)rnd(rng, ND), d1 = d0 + (int)rnd(rng, 20);
        beh_cmp op = (beh_cmp)(1 + rnd(rng, 6));
        check_window(m, uni, s, d0, d1, op, ks[rnd(rng, sizeof ks / sizeof *ks)]);
    }
    roaring_bitmap_free(uni);
}

/* Bytes on disk, reloaded and written again whole into a fresh store:
 * the same bytes. */
static void check_rewrite(store_t *st)
{
    beh_t *b = reload(st);
    store_t *st2 = fresh_store(1);
    beh_mark_all_dirty(b);
    persist(st2, b);
    dump_t x = dump_store(st), y = dump_store(st2);
    assert_true(x.len == y.len && memcmp(x.p, y.p, x.len) == 0);
    free(x.p);
    free(y.p);
    beh_free(b);
    drop_store(st2, 1);
}

static void test_pack_rounds(void **state)
{
    (void)state;
    uint64_t rng = 0x9ac4b17;
    model_t *m = model_new();
    store_t *st = fresh_store(0);
    beh_rec_t recs[600];
    for (int round = 0; round < 24; round++) {
        /* series s is dense (cells past 16 users) in rounds where
         * (s + round) % 4 == 0, sparse otherwise */
        for (int i = 0; i < 400; i++) {
            int s = (int)rnd(&rng, NS), d = (int)rnd(&rng, ND);
            int dense = (s + round) % 4 == 0;
            int u = (int)rnd(&rng, dense ? NU : 6);
            uint64_t delta = rnd(&rng, 50) == 0 ? SAT - 3 : 1 + rnd(&rng, rnd(&rng, 3) ? 1 : 9);
            rec(m, s, d, u, delta);
        }
        size_t n = 0;
        for (; n < 600; n++) {
            int s = (int)rnd(&rng, NS), d = (int)rnd(&rng, ND), u = (int)rnd(&rng, NU);
            if ((s + round) % 4 != 0)
                u = (int)rnd(&rng, 8);
            recs[n] = (beh_rec_t){m->sid[s], D0 + d, uord(u)};
            add(m, s, d, u, 1);
        }
        assert_int_equal(beh_record_many(m->b, recs, n), CP_OK);
        /* removals and merges shrink cells below the threshold */
        for (int i = 0; i < 6; i++) {
            int u = (int)rnd(&rng, NU);
            beh_user_remove(m->b, uord(u));
            for (int s = 0; s < NS; s++)
                for (int d = 0; d < ND; d++)
                    m->cnt[s][d][u] = 0;
        }
        for (int i = 0; i < 3; i++) {
            int from = (int)rnd(&rng, NU), to = (int)rnd(&rng, NU);
            assert_int_equal(beh_user_move(m->b, uord(from), uord(to)), CP_OK);
            if (from == to)
                continue;
            for (int s = 0; s < NS; s++)
                for (int d = 0; d < ND; d++) {
                    add(m, s, d, to, m->cnt[s][d][from]);
                    m->cnt[s][d][from] = 0;
                }
        }
        if (round % 5 == 4) {
            int cut = round / 5 * 4;
            beh_retain(m->b, D0 + cut);
            for (int s = 0; s < NS; s++)
                for (int d = 0; d < cut; d++)
                    memset(m->cnt[s][d], 0, sizeof m->cnt[s][d]);
            for (int i = 0; i < 30; i++) /* dropped cells created again */
                rec(m, (int)rnd(&rng, NS), (int)rnd(&rng, cut + 1), (int)rnd(&rng, NU), 1);
        }
        persist(st, m->b);
        if (round % 2 == 1) {
            beh_free(m->b);
            m->b = reload(st);
        }
        check(m, &rng);
    }
    check_rewrite(st);
    beh_free(m->b);
    free(m);
    drop_store(st, 0);
}

/* Counts of every cell, then every comparison over windows of series
 * 0 .. 2 around days 4 .. 7 (where test_small_forms writes). */
static void check_all(model_t *m, uint64_t *rng)
{
    check(m, rng);
    roaring_bitmap_t *uni = all_users();
    for (int s = 0; s < 3; s++)
        for (int d0 = 4; d0 <= 6; d0++)
            for (int d1 = d0; d1 <= 7; d1 += 2)
                for (int op = BEH_EQ; op <= BEH_GE; op++)
                    for (size_t k = 0; k < sizeof ks / sizeof *ks; k++)
                        check_window(m, uni, s, d0, d1, (beh_cmp)op, ks[k]);
    roaring_bitmap_free(uni);
}

static void forms(model_t *m, uint64_t small, uint64_t roaring)
{
    uint64_t ns, nr;
    beh_cell_forms(m->b, &ns, &nr);
    if (ns != small || nr != roaring)
        fail_msg("forms: %llu small, %llu roaring; expected %llu, %llu", (unsigned long long)ns,
                 (unsigned long long)nr, (unsigned long long)small, (unsigned long long)roaring);
}

static void move(model_t *m, int from, int to)
{
    assert_int_equal(beh_user_move(m->b, uord(from), uord(to)), CP_OK);
    for (int s = 0; s < NS; s++)
        for (int d = 0; d < ND; d++) {
            add(m, s, d, to, m->cnt[s][d][from]);
            m->cnt[s][d][from] = 0;
        }
}

static void remove_user(model_t *m, int u)
{
    beh_user_remove(m->b, uord(u));
    for (int s = 0; s < NS; s++)
        for (int d = 0; d < ND; d++)
            m->cnt[s][d][u] = 0;
}

/*
 * Cells through every change of in-memory form, against the model:
 * inline (up to 2 users), one array (3 .. 16), promoted by beh_record (a
 * 17th user) and by beh_record_many (a new cell of 20 users; a batch
 * taking a small cell past 16), demoted by a removal, a merge that keeps
 * the cell large, counts saturating in both forms; checked at every
 * stage, persisted and reloaded (the same bytes written again), retained.
 */
static void test_small_forms(void **state)
{
    (void)state;
    uint64_t rng = 0x51a11;
    model_t *m = model_new();
    store_t *st = fresh_store(0);
    rec(m, 0, 5, 0, 1);
    rec(m, 0, 5, 1, 2);
    forms(m, 1, 0);
    rec(m, 0, 5, 0, SAT); /* saturates */
    rec(m, 0, 5, 0, 1);
    check_all(m, &rng);
    for (int u = 2; u < 16; u++)
        rec(m, 0, 5, u, 1 + (uint64_t)u % 3);
    rec(m, 0, 5, 7, 1);
    forms(m, 1, 0);
    check_all(m, &rng);
    persist(st, m->b);
    rec(m, 0, 5, 16, 1); /* the 17th user */
    forms(m, 0, 1);
    check_all(m, &rng);
    remove_user(m, 16); /* back to 16: small again */
    forms(m, 1, 0);
    check_all(m, &rng);
    rec(m, 2, 5, 9, 1);
    rec(m, 2, 5, 10, 4);
    persist(st, m->b);

    beh_rec_t recs[64];
    size_t n = 0;
    for (int u = 20; u < 40; u++) /* a new cell of 20 users */
        recs[n++] = (beh_rec_t){m->sid[0], D0 + 6, uord(u)};
    for (int i = 0; i < 3; i++) { /* 16 + 2 users, repeats */
        recs[n++] = (beh_rec_t){m->sid[0], D0 + 5, uord(16 + (i & 1))};
        recs[n++] = (beh_rec_t){m->sid[0], D0 + 5, uord(3)};
    }
    for (int i = 0; i < 10; i++) /* a new small cell, repeats */
        recs[n++] = (beh_rec_t){m->sid[1], D0 + 5, uord(40 + i % 5)};
    recs[n++] = (beh_rec_t){m->sid[2], D0 + 5, uord(10)}; /* merged into 2 users */
    recs[n++] = (beh_rec_t){m->sid[2], D0 + 5, uord(11)};
    recs[n++] = (beh_rec_t){m->sid[2], D0 + 5, uord(2)};
    recs[n++] = (beh_rec_t){m->sid[2], D0 + 5, uord(2)};
    for (size_t i = 0; i < n; i++) {
        int s = recs[i].series == m->sid[0] ? 0 : recs[i].series == m->sid[1] ? 1 : 2;
        int u = 0;
        while (uord(u) != recs[i].user)
            u++;
        add(m, s, recs[i].day - D0, u, 1);
    }
    assert_int_equal(beh_record_many(m->b, recs, n), CP_OK);
    forms(m, 2, 2);
    check_all(m, &rng);
    move(m, 17, 3); /* 17 users: still large */
    forms(m, 2, 2);
    check_all(m, &rng);
    remove_user(m, 16);
    forms(m, 3, 1);
    check_all(m, &rng);
    move(m, 0, 45); /* a saturated count moves into a small cell */
    check_all(m, &rng);
    persist(st, m->b);
    beh_free(m->b);
    m->b = reload(st);
    forms(m, 3, 1);
    check_all(m, &rng);
    check_rewrite(st);
    beh_retain(m->b, D0 + 6);
    for (int s = 0; s < NS; s++)
        memset(m->cnt[s][5], 0, sizeof m->cnt[s][5]);
    forms(m, 0, 1);
    check_all(m, &rng);
    persist(st, m->b);
    beh_free(m->b);
    m->b = reload(st);
    check_all(m, &rng);
    uint64_t bytes, cells;
    beh_memory(m->b, &bytes, &cells);
    assert_true(cells == 1 && bytes > 0);
    beh_free(m->b);
    free(m);
    drop_store(st, 0);
}

static void cell_key16(uint8_t *k, uint32_t series, int32_t day, uint16_t chunk)
{
    uint32_t d = (uint32_t)day ^ 0x80000000u;
    memcpy(k, "beh/d/", 6);
    for (int i = 0; i < 4; i++) {
        k[6 + i] = (uint8_t)(series >> (24 - 8 * i));
        k[10 + i] = (uint8_t)(d >> (24 - 8 * i));
    }
    k[14] = (uint8_t)(chunk >> 8);
    k[15] = (uint8_t)chunk;
}

static void pack_key(uint8_t *k, uint32_t series, int32_t day)
{
    uint32_t blk = series >> 4, w = (uint32_t)(day >> 4) ^ 0x80000000u;
    memcpy(k, "beh/p/", 6);
    for (int i = 0; i < 4; i++) {
        k[6 + i] = (uint8_t)(blk >> (24 - 8 * i));
        k[10 + i] = (uint8_t)(w >> (24 - 8 * i));
    }
}

static void expect_corrupt(store_t *st, const char *frag)
{
    beh_t *b = NULL;
    cp_error_t err = {0};
    assert_int_equal(try_reload(st, &b, &err), CP_EIO);
    if (strstr(err.message, frag) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err.message, frag);
    beh_free(b);
}

static void test_pack_legacy_and_corrupt(void **state)
{
    (void)state;
    model_t *m = model_new();
    store_t *st = fresh_store(0);
    rec(m, 1, 3, 0, 1); /* series 1, day D0 + 3 = -17: pack window -2 */
    persist(st, m->b);
    uint8_t pk[14];
    pack_key(pk, m->sid[1], D0 + 3);
    assert_true(key_present(st, pk, sizeof pk));
    uint8_t ck[16];
    cell_key16(ck, m->sid[1], D0 + 3, 0);
    assert_false(key_present(st, ck, sizeof ck));

    /* a version 2 chunk value of one user (5, count 3) for cell (2, day 4) */
    roaring_bitmap_t *ex = roaring_bitmap_of(1, 5), *sl = roaring_bitmap_of(1, 5);
    uint8_t blob[128] = {'B', 'C', 2, 2};
    size_t o = 4, le = roaring_bitmap_portable_size_in_bytes(ex);
    for (int j = 0; j < 3; j++) {
        roaring_bitmap_t *bm = j == 0 ? ex : j == 1 ? roaring_bitmap_create() : sl;
        size_t l = roaring_bitmap_portable_size_in_bytes(bm);
        blob[o] = (uint8_t)l;
        roaring_bitmap_portable_serialize(bm, (char *)blob + o + 4);
        o += 4 + l;
        if (j == 1)
            roaring_bitmap_free(bm);
    }
    (void)le;
    cell_key16(ck, m->sid[2], D0 + 4, 0);
    put_raw(st, ck, sizeof ck, blob, o);
    beh_t *b = reload(st);
    assert_true(beh_count(b, m->sid[2], D0 + 4, 5) == 3);
    /* a neighbour in the same pack changes: the old cell stays a chunk key */
    assert_int_equal(beh_record(b, m->sid[1], D0 + 3, 7, 1), CP_OK);
    persist(st, b);
    assert_true(key_present(st, ck, sizeof ck));
    beh_free(b);
    b = reload(st);
    assert_true(beh_count(b, m->sid[2], D0 + 4, 5) == 3 && beh_count(b, m->sid[1], D0 + 3, 7) == 1);
    /* it changes: into the pack, its chunk key gone */
    assert_int_equal(beh_record(b, m->sid[2], D0 + 4, 5, 2), CP_OK);
    persist(st, b);
    assert_false(key_present(st, ck, sizeof ck));
    beh_free(b);
    b = reload(st);
    assert_true(beh_count(b, m->sid[2], D0 + 4, 5) == 5);
    beh_free(b);

    /* the cell also under a chunk key */
    put_raw(st, ck, sizeof ck, blob, o);
    expect_corrupt(st, "corrupt behaviour pack 0/-16");
    {
        store_txn_t *t = NULL;
        cp_error_t err = {0};
        assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
        assert_int_equal(store_del(t, STORE_META, ck, sizeof ck, &err), CP_OK);
        assert_int_equal(store_txn_commit(t, &err), CP_OK);
    }
    b = reload(st);
    beh_free(b);
    /* hand-made packs: header, order of users, trailing bytes, series */
    uint8_t p[64] = {'B', 'C', 3, 0, 1, 0, 0, 0, /* one cell */
                     3,   1,   2, 0, 9, 0, 0, 0, 8, 0, 0, 0};
    put_raw(st, pk, sizeof pk, p, 20);
    expect_corrupt(st, "corrupt behaviour pack 0/-32");
    p[12] = 7; /* users 7, 8: fine */
    put_raw(st, pk, sizeof pk, p, 20);
    b = reload(st);
    assert_true(beh_count(b, m->sid[3], -31, 7) == 1 && beh_count(b, m->sid[3], -31, 8) == 1);
    assert_true(beh_count(b, m->sid[1], D0 + 3, 0) == 0); /* that pack was replaced */
    beh_free(b);
    put_raw(st, pk, sizeof pk, p, 21);
    expect_corrupt(st, "corrupt behaviour pack 0/-32");
    p[2] = 4;
    put_raw(st, pk, sizeof pk, p, 20);
    expect_corrupt(st, "corrupt behaviour pack 0/-32");
    p[2] = 3;
    put_raw(st, pk, sizeof pk, p, 20);
    uint8_t pk2[14];
    pack_key(pk2, 16 * 5, D0 + 3); /* block 5: series 80.. unknown */
    put_raw(st, pk2, sizeof pk2, p, 20);
    expect_corrupt(st, "unknown series 83");
    roaring_bitmap_free(ex);
    roaring_bitmap_free(sl);
    beh_free(m->b);
    free(m);
    drop_store(st, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_rounds),
        cmocka_unit_test(test_small_forms),
        cmocka_unit_test(test_pack_legacy_and_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
