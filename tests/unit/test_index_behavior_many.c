/*
 * test_index_behavior_many.c — the bulk write path of the behaviour index
 * against the one-record-at-a-time path:
 *
 *  - beh_event_series returns exactly the series beh_record_event records
 *    (each one resolvable with beh_resolve, the order of props free), and
 *    refuses what beh_record_event refuses without creating anything;
 *  - beh_record_many on one index and the naive loop of beh_record(…, 1)
 *    on another, fed the same records, leave identical indexes: every
 *    user's (series, day, count) entries (beh_user_extract), the dirty
 *    marks (cells and chunks), the bytes beh_persist writes, and what
 *    beh_load reads back. Batches mix users repeated within the batch,
 *    users already in a cell, several 65,536-user chunks, negative days,
 *    counts crossing slice boundaries (a user repeated up to 2^20 times)
 *    and saturation at 2^32; ranges too wide for the 64-bit sort key
 *    take the comparison-sort path;
 *  - an unknown series anywhere in a batch is CP_EINVAL with nothing
 *    changed.
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

/* ------------------------------------------------------------ helpers */

static char g_dir[2][256];

static store_t *fresh_store(int which)
{
    test_tmpdir(g_dir[which], sizeof g_dir[which], which ? "behmany-1" : "behmany-0");
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
    assert_int_equal(beh_dirty_count(b), 0);
}

typedef struct dump {
    uint8_t *p;
    size_t len, cap;
} dump_t;

static void dump_add(dump_t *d, const void *x, size_t n)
{
    if (d->len + n + 8 > d->cap) {
        d->cap = (d->len + n + 8) * 2;
        d->p = realloc(d->p, d->cap);
        assert_non_null(d->p);
    }
    uint64_t l = n;
    memcpy(d->p + d->len, &l, 8);
    memcpy(d->p + d->len + 8, x, n);
    d->len += n + 8;
}

static cp_status dump_one(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                          cp_error_t *err)
{
    (void)err;
    dump_add(ud, k, kl);
    dump_add(ud, v, vl);
    return CP_OK;
}

/* Every key and value under "beh/" in order. */
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

static beh_t *reload(store_t *st)
{
    beh_t *b = NULL;
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(beh_create(&b), CP_OK);
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    if (beh_load(b, t, STORE_META, &err) != CP_OK)
        fail_msg("load: %s", err.message);
    store_txn_abort(t);
    return b;
}

/* The same series 0..n-1 in both indexes ("e" + k=i). */
static void intern_series(beh_t *a, beh_t *b, uint32_t n)
{
    for (uint32_t i = beh_series_count(a); i < n; i++) {
        uint8_t key[BEH_KEY_MAX];
        char v[16];
        size_t kl;
        snprintf(v, sizeof v, "%u", i);
        beh_prop_t p = {"k", 1, v, strlen(v)};
        uint32_t ia, ib;
        assert_int_equal(beh_series_key("e", 1, &p, 1, key, &kl), CP_OK);
        assert_int_equal(beh_series_intern(a, key, kl, &ia), CP_OK);
        assert_int_equal(beh_series_intern(b, key, kl, &ib), CP_OK);
        assert_int_equal(ia, i);
        assert_int_equal(ib, i);
    }
}

/* Records into a with the naive loop and into b with beh_record_many
 * (from a copy: it may reorder). */
static void feed(beh_t *a, beh_t *b, const beh_rec_t *recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(beh_record(a, recs[i].series, recs[i].day, recs[i].user, 1), CP_OK);
    beh_rec_t *copy = malloc((n ? n : 1) * sizeof *copy);
    assert_non_null(copy);
    memcpy(copy, recs, n * sizeof *copy);
    assert_int_equal(beh_record_many(b, copy, n), CP_OK);
    free(copy);
}

static void same_user(const beh_t *a, const beh_t *b, uint32_t u)
{
    beh_entry_t *ea = NULL, *eb = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(beh_user_extract(a, u, &ea, &na), CP_OK);
    assert_int_equal(beh_user_extract(b, u, &eb, &nb), CP_OK);
    if (na != nb)
        fail_msg("user %u: %zu entries one by one, %zu in bulk", u, na, nb);
    for (size_t i = 0; i < na; i++)
        if (ea[i].series != eb[i].series || ea[i].day != eb[i].day || ea[i].count != eb[i].count)
            fail_msg("user %u entry %zu: %u/%d/%llu one by one, %u/%d/%llu in bulk", u, i,
                     ea[i].series, ea[i].day, (unsigned long long)ea[i].count, eb[i].series,
                     eb[i].day, (unsigned long long)eb[i].count);
    free(ea);
    free(eb);
}

/* The users a test touched (sorted, unique at check time). */
typedef struct uset {
    uint32_t *u;
    size_t n, cap;
} uset_t;

static void uset_add(uset_t *s, uint32_t u)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->u = realloc(s->u, s->cap * sizeof *s->u);
        assert_non_null(s->u);
    }
    s->u[s->n++] = u;
}

static int u32_cmp(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

static void uset_norm(uset_t *s)
{
    if (s->n == 0)
        return;
    qsort(s->u, s->n, sizeof *s->u, u32_cmp);
    size_t k = 1;
    for (size_t i = 1; i < s->n; i++)
        if (s->u[i] != s->u[k - 1])
            s->u[k++] = s->u[i];
    s->n = k;
}

/* Everything observable is the same in a and b; then both are persisted
 * (identical bytes) and b read back equals a. */
static void check_same(beh_t *a, beh_t *b, uset_t *users, store_t *sa, store_t *sb)
{
    uset_norm(users);
    assert_int_equal(beh_series_count(a), beh_series_count(b));
    assert_int_equal(beh_dirty_count(a), beh_dirty_count(b));
    assert_int_equal(beh_dirty_chunk_count(a), beh_dirty_chunk_count(b));
    uint64_t ba, ca, bb, cb;
    beh_memory(a, &ba, &ca);
    beh_memory(b, &bb, &cb);
    assert_int_equal(ca, cb);
    int32_t fa = 0, la = 0, fb = 0, lb = 0;
    assert_int_equal(beh_day_range(a, &fa, &la), beh_day_range(b, &fb, &lb));
    assert_int_equal(fa, fb);
    assert_int_equal(la, lb);
    for (size_t i = 0; i < users->n; i++)
        same_user(a, b, users->u[i]);
    same_user(a, b, 123456789u); /* nobody */
    persist(sa, a);
    persist(sb, b);
    dump_t da = dump_store(sa), db = dump_store(sb);
    assert_true(da.len > 0);
    if (da.len != db.len || memcmp(da.p, db.p, da.len) != 0)
        fail_msg("persisted bytes differ (%zu and %zu bytes)", da.len, db.len);
    free(da.p);
    free(db.p);
    beh_t *back = reload(sb);
    for (size_t i = 0; i < users->n; i += 1 + users->n / 500)
        same_user(a, back, users->u[i]);
    beh_free(back);
}

/* ---------------------------------------------------------------- tests */

static void test_event_series(void **state)
{
    (void)state;
    beh_t *a = NULL, *b = NULL;
    assert_int_equal(beh_create(&a), CP_OK);
    assert_int_equal(beh_create(&b), CP_OK);
    uint64_t rs = 0xe5e71e5;
    uint32_t ids[BEH_MAX_EVENT_SERIES];
    size_t nids;
    for (int round = 0; round < 300; round++) {
        beh_prop_t props[BEH_MAX_PROPS];
        /* values of every length class the memo compares (short, 4 .. 7,
         * 8 .. 16, longer), pairs differing only at one end */
        static const char *const pool[] = {"0",
                                           "1",
                                           "abc1",
                                           "abc2",
                                           "1bcdef",
                                           "2bcdef",
                                           "abcdefgh1",
                                           "abcdefgh2",
                                           "2bcdefgh1",
                                           "0123456789abcdef",
                                           "0123456789abcdeg",
                                           "xxxxxxxxxxxxxxxxxxxx1",
                                           "xxxxxxxxxxxxxxxxxxxx2"};
        const char *vals[BEH_MAX_PROPS];
        /* runs of rounds with the same event and property names, values
         * from 3 (so beh_event_series' memo of its previous call is
         * hit, partly and wholly) */
        size_t n = round % 13 == 12 ? (size_t)(rand_next(&rs) % (BEH_MAX_PROPS + 1))
                                    : (size_t)(round / 6) % (BEH_MAX_PROPS + 1);
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rand_next(&rs) % 4;
            vals[i] = pool[r == 3 ? rand_next(&rs) % (sizeof pool / sizeof *pool) : r];
            props[i] = (beh_prop_t){&"abcdefgh"[i], 1, vals[i], strlen(vals[i])};
        }
        for (size_t i = n; i > 1; i--) { /* any order */
            size_t j = (size_t)(rand_next(&rs) % i);
            beh_prop_t t = props[i - 1];
            props[i - 1] = props[j];
            props[j] = t;
        }
        const char *ev = round % 11 < 4    ? "view"
                         : round % 23 == 5 ? "a_rather_long_event_name"
                                           : "purchase";
        int32_t day = (int32_t)(round % 5) - 2;
        uint32_t user = (uint32_t)round * 977u;
        assert_int_equal(beh_record_event(a, ev, strlen(ev), props, n, day, user, 1), CP_OK);
        assert_int_equal(
            beh_event_series(b, ev, strlen(ev), props, n, ids, BEH_MAX_EVENT_SERIES, &nids), CP_OK);
        size_t expect = 1 + n + n * (n - (n > 0)) / 2 + (n >= 3 ? n * (n - 1) * (n - 2) / 6 : 0);
        assert_int_equal(nids, expect);
        for (size_t i = 0; i < nids; i++)
            assert_int_equal(beh_record(b, ids[i], day, user, 1), CP_OK);
        assert_int_equal(beh_series_count(a), beh_series_count(b));
        /* the bare event first; each id is the series of its key in a */
        uint32_t s;
        assert_int_equal(beh_resolve(a, ev, strlen(ev), NULL, 0, &s), CP_OK);
        assert_int_equal(ids[0], s);
        /* every id is the series of one subset's key (computed here from
         * the properties), each subset once */
        int seen[BEH_MAX_EVENT_SERIES] = {0};
        size_t nsub = 0;
        for (uint32_t mask = 0; mask < (1u << n); mask++) {
            beh_prop_t sub[BEH_MAX_FILTERS];
            size_t k = 0;
            for (size_t i = 0; i < n && k <= BEH_MAX_FILTERS; i++)
                if (mask & (1u << i)) {
                    if (k < BEH_MAX_FILTERS)
                        sub[k] = props[i];
                    k++;
                }
            if (k > BEH_MAX_FILTERS)
                continue;
            uint8_t key[BEH_KEY_MAX];
            size_t kl;
            assert_int_equal(beh_series_key(ev, strlen(ev), sub, k, key, &kl), CP_OK);
            uint32_t want;
            assert_true(beh_series_lookup(b, key, kl, &want));
            size_t at = 0;
            while (at < nids && ids[at] != want)
                at++;
            assert_true(at < nids && !seen[at]);
            seen[at] = 1;
            nsub++;
        }
        assert_int_equal(nsub, nids);
        for (size_t i = 0; i < nids; i++) {
            size_t kl = 0, kb = 0;
            const uint8_t *k = beh_series_key_of(a, ids[i], &kl);
            const uint8_t *k2 = beh_series_key_of(b, ids[i], &kb);
            assert_non_null(k);
            assert_true(kl == kb && memcmp(k, k2, kl) == 0);
            assert_int_equal(beh_count(a, ids[i], day, user), beh_count(b, ids[i], day, user));
            for (size_t j = 0; j < i; j++)
                assert_true(ids[j] != ids[i]);
        }
    }
    /* Refusals create nothing. */
    uint32_t before = beh_series_count(b);
    beh_prop_t dup[2] = {{"brand", 5, "y", 1}, {"brand", 5, "z", 1}};
    assert_int_equal(beh_event_series(b, "new", 3, dup, 2, ids, BEH_MAX_EVENT_SERIES, &nids),
                     CP_EINVAL);
    assert_int_equal(nids, 0);
    beh_prop_t nine[9];
    for (int i = 0; i < 9; i++)
        nine[i] = (beh_prop_t){&"abcdefghi"[i], 1, "v", 1};
    assert_int_equal(beh_event_series(b, "new", 3, nine, 9, ids, BEH_MAX_EVENT_SERIES, &nids),
                     CP_ELIMIT);
    assert_int_equal(beh_event_series(b, "", 0, NULL, 0, ids, BEH_MAX_EVENT_SERIES, &nids),
                     CP_EINVAL);
    beh_prop_t empty_name = {"", 0, "v", 1};
    assert_int_equal(beh_event_series(b, "new", 3, &empty_name, 1, ids, 93, &nids), CP_EINVAL);
    char big[300];
    memset(big, 'x', sizeof big);
    beh_prop_t long_value = {"p", 1, big, 256};
    assert_int_equal(beh_event_series(b, "new", 3, &long_value, 1, ids, 93, &nids), CP_EINVAL);
    /* cap: 3 props need 8 ids */
    assert_int_equal(beh_event_series(b, "new", 3, nine, 3, ids, 7, &nids), CP_EINVAL);
    assert_int_equal(beh_series_count(b), before);
    assert_int_equal(beh_event_series(b, "new", 3, nine, 3, ids, 8, &nids), CP_OK);
    assert_int_equal(nids, 8);
    assert_int_equal(beh_series_count(b), before + 8);
    assert_int_equal(beh_event_series(b, "new", 3, nine, 8, ids, BEH_MAX_EVENT_SERIES, &nids),
                     CP_OK);
    assert_int_equal(nids, BEH_MAX_EVENT_SERIES);
    assert_int_equal(beh_record_event(b, "new", 3, nine, 2, 0, 1, 0), CP_EINVAL); /* delta 0 */
    beh_free(a);
    beh_free(b);
}

/* A user of a batch: a small pool (so users repeat within a batch and
 * across batches) spread over several chunks, or anyone. */
static uint32_t pick_user(uint64_t *rs, int pool)
{
    uint32_t i = (uint32_t)(rand_next(rs) % (uint64_t)pool);
    return (i % 5) * 65536u * 3 + i * 7u;
}

static void test_many_against_loop(void **state)
{
    (void)state;
    beh_t *a = NULL, *b = NULL;
    assert_int_equal(beh_create(&a), CP_OK);
    assert_int_equal(beh_create(&b), CP_OK);
    store_t *sa = fresh_store(0), *sb = fresh_store(1);
    uset_t users = {0};
    uint64_t rs = 0xb01c;
    const size_t N = 30000;
    beh_rec_t *recs = malloc(N * sizeof *recs);
    assert_non_null(recs);
    intern_series(a, b, 60);
    for (int round = 0; round < 8; round++) {
        /* Some users already have counts in some cells. */
        for (int i = 0; i < 300; i++) {
            uint32_t s = (uint32_t)(rand_next(&rs) % 60), u = pick_user(&rs, 3000);
            int32_t d = (int32_t)(rand_next(&rs) % 12) - 4;
            uint64_t delta = 1 + rand_next(&rs) % (i % 10 == 0 ? 100000 : 5);
            assert_int_equal(beh_record(a, s, d, u, delta), CP_OK);
            assert_int_equal(beh_record(b, s, d, u, delta), CP_OK);
            uset_add(&users, u);
        }
        size_t n = (size_t)(rand_next(&rs) % N) + 1;
        int pool = round % 2 ? 3000 : 400000; /* repeats, or mostly distinct */
        for (size_t i = 0; i < n; i++) {
            if (i > 0 && rand_next(&rs) % 4 == 0) {
                recs[i] = recs[rand_next(&rs) % i]; /* a duplicate */
                continue;
            }
            recs[i].series = (uint32_t)(rand_next(&rs) % (round < 4 ? 8 : 60));
            recs[i].day = (int32_t)(rand_next(&rs) % 12) - 4;
            recs[i].user = pick_user(&rs, pool);
            uset_add(&users, recs[i].user);
        }
        feed(a, b, recs, n);
        if (round % 3 == 2)
            check_same(a, b, &users, sa, sb);
    }
    check_same(a, b, &users, sa, sb);
    free(recs);
    free(users.u);
    beh_free(a);
    beh_free(b);
    drop_store(sa, 0);
    drop_store(sb, 1);
}

static void test_many_repeats_and_saturation(void **state)
{
    (void)state;
    beh_t *a = NULL, *b = NULL;
    assert_int_equal(beh_create(&a), CP_OK);
    assert_int_equal(beh_create(&b), CP_OK);
    store_t *sa = fresh_store(0), *sb = fresh_store(1);
    uset_t users = {0};
    intern_series(a, b, 4);
    /* A user near saturation before the batch. */
    uint64_t near = ((uint64_t)1 << 32) - 3;
    assert_int_equal(beh_record(a, 1, 7, 70000, near), CP_OK);
    assert_int_equal(beh_record(b, 1, 7, 70000, near), CP_OK);
    assert_int_equal(beh_record(a, 2, 7, 5, 255), CP_OK);
    assert_int_equal(beh_record(b, 2, 7, 5, 255), CP_OK);
    size_t big = (size_t)1 << 20, n = 0, cap = big + 8192;
    beh_rec_t *recs = malloc(cap * sizeof *recs);
    assert_non_null(recs);
    for (size_t i = 0; i < big; i++) /* one user 2^20 times */
        recs[n++] = (beh_rec_t){0, 7, 1000};
    static const int reps[] = {1, 2, 3, 4, 7, 8, 9, 255, 256, 257, 1023, 1024};
    for (size_t r = 0; r < sizeof reps / sizeof *reps; r++)
        for (int i = 0; i < reps[r]; i++) {
            recs[n++] = (beh_rec_t){3, -1, 200000u + (uint32_t)r};
            recs[n++] = (beh_rec_t){0, 7, 2000u + (uint32_t)r}; /* same cell as the big one */
        }
    for (int i = 0; i < 10; i++)
        recs[n++] = (beh_rec_t){1, 7, 70000}; /* saturates */
    recs[n++] = (beh_rec_t){2, 7, 5};         /* 256: one more slice */
    assert_true(n <= cap);
    uset_add(&users, 1000);
    uset_add(&users, 70000);
    uset_add(&users, 5);
    for (uint32_t r = 0; r < 12; r++) {
        uset_add(&users, 200000u + r);
        uset_add(&users, 2000u + r);
    }
    /* shuffle */
    uint64_t rs = 0x5a7;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rand_next(&rs) % i);
        beh_rec_t t = recs[i - 1];
        recs[i - 1] = recs[j];
        recs[j] = t;
    }
    feed(a, b, recs, n);
    assert_int_equal(beh_count(b, 0, 7, 1000), (uint64_t)big);
    assert_int_equal(beh_count(b, 1, 7, 70000), (uint64_t)1 << 32);
    assert_int_equal(beh_count(b, 2, 7, 5), 256);
    assert_int_equal(beh_count(b, 3, -1, 200000 + 11), 1024);
    check_same(a, b, &users, sa, sb);
    /* The same again on top: present users with large counts. */
    feed(a, b, recs, n);
    assert_int_equal(beh_count(b, 0, 7, 1000), (uint64_t)big * 2);
    check_same(a, b, &users, sa, sb);
    free(recs);
    free(users.u);
    beh_free(a);
    beh_free(b);
    drop_store(sa, 0);
    drop_store(sb, 1);
}

/* Days over the whole int32 range and users over the whole uint32 range
 * do not fit a 64-bit key: the comparison-sort path. */
static void test_many_wide_ranges(void **state)
{
    (void)state;
    beh_t *a = NULL, *b = NULL;
    assert_int_equal(beh_create(&a), CP_OK);
    assert_int_equal(beh_create(&b), CP_OK);
    store_t *sa = fresh_store(0), *sb = fresh_store(1);
    uset_t users = {0};
    intern_series(a, b, 300);
    uint64_t rs = 0x31de;
    static const int32_t days[] = {INT32_MIN, INT32_MIN + 1, -1, 0, 1, 15000, INT32_MAX};
    static const uint32_t edge[] = {0, 1, 65535, 65536, UINT32_MAX - 1, UINT32_MAX};
    for (int round = 0; round < 4; round++) {
        size_t n = 5000;
        beh_rec_t recs[5000];
        for (size_t i = 0; i < n; i++) {
            if (i > 0 && rand_next(&rs) % 3 == 0) {
                recs[i] = recs[rand_next(&rs) % i];
                continue;
            }
            recs[i].series = (uint32_t)(rand_next(&rs) % 300);
            recs[i].day = days[rand_next(&rs) % 7];
            recs[i].user = rand_next(&rs) % 4 == 0 ? edge[rand_next(&rs) % 6]
                                                   : (uint32_t)rand_next(&rs) % 64 * 67108864u +
                                                         (uint32_t)(rand_next(&rs) % 50);
            uset_add(&users, recs[i].user);
        }
        if (round == 3) { /* only the extremes of one cell: ub = 32, fits */
            for (size_t i = 0; i < n; i++)
                recs[i] = (beh_rec_t){299, INT32_MAX, i % 2 ? UINT32_MAX : 0};
        }
        feed(a, b, recs, n);
        check_same(a, b, &users, sa, sb);
    }
    /* An empty batch changes nothing. */
    assert_int_equal(beh_record_many(b, NULL, 0), CP_OK);
    assert_int_equal(beh_dirty_count(b), 0);
    free(users.u);
    beh_free(a);
    beh_free(b);
    drop_store(sa, 0);
    drop_store(sb, 1);
}

static void test_many_refuses_unknown_series(void **state)
{
    (void)state;
    beh_t *a = NULL, *b = NULL;
    assert_int_equal(beh_create(&a), CP_OK);
    assert_int_equal(beh_create(&b), CP_OK);
    intern_series(a, b, 3);
    beh_rec_t recs[100];
    for (int i = 0; i < 100; i++)
        recs[i] = (beh_rec_t){(uint32_t)i % 3, i % 4, (uint32_t)i * 1000u};
    recs[57].series = 3;
    assert_int_equal(beh_record_many(b, recs, 100), CP_EINVAL);
    assert_int_equal(beh_dirty_count(b), 0);
    uint64_t bytes, cells;
    beh_memory(b, &bytes, &cells);
    assert_int_equal(cells, 0);
    recs[57].series = BEH_NO_SERIES;
    assert_int_equal(beh_record_many(b, recs, 100), CP_EINVAL);
    recs[57].series = 2;
    assert_int_equal(beh_record_many(b, recs, 100), CP_OK);
    assert_int_equal(beh_count(b, 2, 57 % 4, 57000), 1);
    beh_free(a);
    beh_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_series),
        cmocka_unit_test(test_many_against_loop),
        cmocka_unit_test(test_many_repeats_and_saturation),
        cmocka_unit_test(test_many_wide_ranges),
        cmocka_unit_test(test_many_refuses_unknown_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
