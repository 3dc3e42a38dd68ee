/* test_ingest_dedup.c — the messageId window against a naive reference
 * (every key with its first-seen time), bounded memory with oldest-first
 * eviction, and persistence across a reopen of the data directory. */
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

#include "ingest/dedup.h"
#include "util/util.h"

/* Naive reference: a list of (hash, time) in insertion order. */
typedef struct ref {
    uint64_t *h;
    int64_t *t;
    size_t n, cap;
} ref_t;

static int ref_seen(const ref_t *r, uint64_t h, int64_t now, int64_t window)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->h[i] == h && r->t[i] > now - window)
            return 1;
    return 0;
}

static void ref_insert(ref_t *r, uint64_t h, int64_t now, int64_t window, size_t max)
{
    /* drop expired, then oldest past max; keep first sight */
    size_t w = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->t[i] > now - window) {
            r->h[w] = r->h[i];
            r->t[w++] = r->t[i];
        }
    r->n = w;
    if (ref_seen(r, h, now, window))
        return;
    if (r->n >= max) {
        size_t drop = r->n - max + 1;
        memmove(r->h, r->h + drop, (r->n - drop) * sizeof *r->h);
        memmove(r->t, r->t + drop, (r->n - drop) * sizeof *r->t);
        r->n -= drop;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->h = realloc(r->h, r->cap * sizeof *r->h);
        r->t = realloc(r->t, r->cap * sizeof *r->t);
    }
    r->h[r->n] = h;
    r->t[r->n++] = now;
}

static void run_random(size_t max, int64_t window, uint64_t seed, int steps)
{
    dedup_t *d = NULL;
    assert_int_equal(dedup_create(window, max, &d), CP_OK);
    ref_t r = {0};
    int64_t now = 1000;
    uint64_t st = seed;
    size_t keyspace = max * 3 + 7;
    for (int i = 0; i < steps; i++) {
        now += (int64_t)(rand_next(&st) % 50);
        uint64_t h = rand_next(&st) % keyspace + 1;
        int a = dedup_check(d, h, now), b = ref_seen(&r, h, now, window);
        if (a != b)
            fail_msg("step %d: key %llu at %lld: dedup %d, reference %d", i, (unsigned long long)h,
                     (long long)now, a, b);
        if (!a) {
            assert_int_equal(dedup_insert(d, h, now), CP_OK);
            ref_insert(&r, h, now, window, max);
        }
        dedup_stats_t s;
        dedup_stats(d, &s);
        assert_true(s.entries <= max);
    }
    free(r.h);
    free(r.t);
    dedup_free(d);
}

static void test_against_reference(void **state)
{
    (void)state;
    run_random(100, 2000, 1, 20000);   /* window-bound */
    run_random(50, 1000000, 2, 20000); /* count-bound: oldest first */
    run_random(3000, 5000, 3, 30000);  /* growth of ring and table */
    run_random(1, 100, 4, 2000);
}

static void test_window_and_bound(void **state)
{
    (void)state;
    dedup_t *d = NULL;
    assert_int_equal(dedup_create(1000, 3, &d), CP_OK);
    assert_int_equal(dedup_check(d, 7, 0), 0);
    assert_int_equal(dedup_insert(d, 7, 0), CP_OK);
    assert_int_equal(dedup_check(d, 7, 999), 1);
    assert_int_equal(dedup_check(d, 7, 1000), 0); /* the window is [now - 1000, now) exclusive */
    /* A hash of 0 works like any other. */
    assert_int_equal(dedup_insert(d, 0, 10), CP_OK);
    assert_int_equal(dedup_check(d, 0, 11), 1);
    assert_int_equal(dedup_insert(d, 8, 20), CP_OK);
    assert_int_equal(dedup_insert(d, 9, 30), CP_OK); /* evicts 7, the oldest */
    assert_int_equal(dedup_check(d, 7, 31), 0);
    assert_int_equal(dedup_check(d, 8, 31), 1);
    dedup_stats_t s;
    dedup_stats(d, &s);
    assert_int_equal(s.evicted, 1);
    assert_int_equal(s.entries, 3);
    /* time going backwards is treated as no time passing */
    assert_int_equal(dedup_check(d, 9, 5), 1);
    dedup_free(d);
}

static cp_status count_key(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *e)
{
    (void)k;
    (void)v;
    (void)vl;
    (void)e;
    assert_int_equal(kl, 22);
    (*(size_t *)ud)++;
    return CP_OK;
}

static size_t stored_keys(store_t *st)
{
    store_txn_t *t = NULL;
    assert_int_equal(store_txn_begin(st, 0, &t, NULL), CP_OK);
    size_t n = 0;
    assert_int_equal(store_each(t, STORE_META, "dedup/", 6, count_key, &n, NULL), CP_OK);
    store_txn_abort(t);
    return n;
}

static void persist(dedup_t *d, store_t *st)
{
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    assert_int_equal(dedup_persist(d, t, STORE_META, &err), CP_OK);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
}

static void test_persistence(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "dedup");
    store_t *st = NULL;
    cp_error_t err = {0};
    if (store_open(dir, STORE_CREATE, 1u << 26, 1, &st, &err))
        fail_msg("%s", err.message);
    dedup_t *d = NULL;
    assert_int_equal(dedup_create(10000, 100, &d), CP_OK);
    for (uint64_t h = 1; h <= 50; h++)
        assert_int_equal(dedup_insert(d, h * 7919, (int64_t)h * 10), CP_OK);
    persist(d, st);
    assert_int_equal(stored_keys(st), 50);
    /* 80 more: 30 of the first are evicted (bound 100) and deleted from disk */
    for (uint64_t h = 51; h <= 130; h++)
        assert_int_equal(dedup_insert(d, h * 7919, (int64_t)h * 10), CP_OK);
    persist(d, st);
    assert_int_equal(stored_keys(st), 100);
    dedup_free(d);

    /* "Restart": a new structure loads what is within the window. */
    d = NULL;
    assert_int_equal(dedup_create(10000, 100, &d), CP_OK);
    store_txn_t *t = NULL;
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    assert_int_equal(dedup_load(d, t, STORE_META, 1300, &err), CP_OK);
    store_txn_abort(t);
    for (uint64_t h = 1; h <= 130; h++)
        assert_int_equal(dedup_check(d, h * 7919, 1300), h > 30);
    /* Later, the window has moved: entries older than 5000 are gone, and the
     * next persist prunes them from disk. */
    assert_int_equal(dedup_check(d, 31 * 7919, 10000 + 311), 0);
    assert_int_equal(dedup_insert(d, 999999, 10000 + 1000), CP_OK);
    persist(d, st);
    assert_int_equal(stored_keys(st), 31); /* h 100..130 (t 1000..1300) + the new one */
    dedup_clear(d);
    persist(d, st);
    assert_int_equal(stored_keys(st), 0);
    dedup_free(d);
    store_close(st);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_window_and_bound),
        cmocka_unit_test(test_persistence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
