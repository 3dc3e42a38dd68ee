/*
 * test_bitmap_bsi.c — the bit-sliced index against a naive array of values:
 * thousands of random values (negatives, INT64 extremes), slice growth after
 * negatives exist (sign extension), overwrites and clears, random ranges
 * including unbounded and empty ones, over array, bitset and run
 * containers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bitmap/bitmap.h"
#include "util/util.h"

#define MAXU 300000u /* users span five chunks */

typedef struct naive {
    uint8_t *has;
    int64_t *val;
} naive_t;

static naive_t naive_new(void)
{
    naive_t n = {calloc(MAXU, 1), calloc(MAXU, sizeof(int64_t))};
    assert_non_null(n.has);
    assert_non_null(n.val);
    return n;
}

static void naive_free(naive_t *n)
{
    free(n->has);
    free(n->val);
}

static int64_t random_value(uint64_t *rng)
{
    uint64_t r = rand_next(rng);
    switch (r % 10) {
    case 0:
        return INT64_MIN + (int64_t)(r >> 60);
    case 1:
        return INT64_MAX - (int64_t)(r >> 60);
    case 2:
        return (int64_t)rand_next(rng); /* any 64-bit */
    case 3:
        return -(int64_t)(r >> 40);
    case 4:
        return (int64_t)(r >> 50) - 8000;
    case 5:
        return 0;
    case 6:
        return -1;
    default:
        return (int64_t)(r >> 44) - 100000; /* mostly small */
    }
}

static uint32_t random_user(uint64_t *rng)
{
    uint64_t r = rand_next(rng);
    switch (r % 4) {
    case 0:
        return (uint32_t)((r >> 8) % 70000); /* dense: chunk 0/1 */
    case 1:
        return 131072 + (uint32_t)((r >> 8) % 3000); /* a narrow band: runs */
    default:
        return (uint32_t)((r >> 8) % MAXU); /* sparse elsewhere */
    }
}

static void check_all_gets(const bsi_t *b, const naive_t *n)
{
    for (uint32_t u = 0; u < MAXU; u++) {
        int64_t v = 12345;
        int has = bsi_get(b, u, &v);
        assert_int_equal(has, n->has[u]);
        if (has)
            assert_true(v == n->val[u]);
    }
}

static void check_range(const bsi_t *b, const naive_t *n, int64_t lo, int64_t hi)
{
    roaring_bitmap_t *got = bsi_range(b, lo, hi);
    assert_non_null(got);
    roaring_bitmap_t *want = roaring_bitmap_create();
    for (uint32_t u = 0; u < MAXU; u++)
        if (n->has[u] && n->val[u] >= lo && n->val[u] <= hi)
            roaring_bitmap_add(want, u);
    if (!roaring_bitmap_equals(got, want))
        fail_msg("range [%lld, %lld]: got %llu users, want %llu", (long long)lo, (long long)hi,
                 (unsigned long long)roaring_bitmap_get_cardinality(got),
                 (unsigned long long)roaring_bitmap_get_cardinality(want));
    roaring_bitmap_free(got);
    roaring_bitmap_free(want);
}

static int64_t pick_bound(const naive_t *n, uint64_t *rng)
{
    uint64_t r = rand_next(rng);
    if (r % 3 == 0) {
        /* an existing value, maybe +-1 */
        for (int tries = 0; tries < 1000; tries++) {
            uint32_t u = (uint32_t)(rand_next(rng) % MAXU);
            if (n->has[u]) {
                int64_t v = n->val[u];
                int d = (int)(rand_next(rng) % 3) - 1;
                if (d < 0 && v > INT64_MIN)
                    return v - 1;
                if (d > 0 && v < INT64_MAX)
                    return v + 1;
                return v;
            }
        }
    }
    return random_value(rng);
}

static void check_random_ranges(const bsi_t *b, const naive_t *n, uint64_t *rng, int count)
{
    check_range(b, n, INT64_MIN, INT64_MAX);
    check_range(b, n, INT64_MIN, -1);
    check_range(b, n, 0, INT64_MAX);
    check_range(b, n, 0, 0);
    check_range(b, n, -1, -1);
    check_range(b, n, INT64_MIN, INT64_MIN);
    check_range(b, n, INT64_MAX, INT64_MAX);
    check_range(b, n, 5, 4); /* empty */
    check_range(b, n, INT64_MAX, INT64_MIN);
    for (int i = 0; i < count; i++) {
        int64_t lo = pick_bound(n, rng), hi = pick_bound(n, rng);
        if (rand_next(rng) % 8 != 0 && lo > hi) {
            int64_t t = lo;
            lo = hi;
            hi = t;
        }
        check_range(b, n, lo, hi);
    }
}

static void optimize_all(bsi_t *b)
{
    roaring_bitmap_run_optimize(b->exists);
    roaring_bitmap_run_optimize(b->sign);
    for (int i = 0; i < b->nslices; i++)
        roaring_bitmap_run_optimize(b->slices[i]);
}

static void test_random(void **state)
{
    (void)state;
    uint64_t rng = 77;
    naive_t n = naive_new();
    bsi_t *b = bsi_create();
    assert_non_null(b);
    assert_int_equal(b->nslices, 0);

    for (int i = 0; i < 6000; i++) {
        uint32_t u = random_user(&rng);
        int64_t v = random_value(&rng);
        assert_int_equal(bsi_set(b, u, v), CP_OK);
        n.has[u] = 1;
        n.val[u] = v;
    }
    /* overwrites and clears */
    for (int i = 0; i < 1500; i++) {
        uint32_t u = random_user(&rng);
        if (i % 3 == 0) {
            bsi_clear(b, u);
            n.has[u] = 0;
        } else {
            int64_t v = random_value(&rng);
            assert_int_equal(bsi_set(b, u, v), CP_OK);
            n.has[u] = 1;
            n.val[u] = v;
        }
    }
    assert_true(b->nslices <= 64);
    check_all_gets(b, &n);
    check_random_ranges(b, &n, &rng, 150);
    optimize_all(b); /* the same with run containers */
    check_random_ranges(b, &n, &rng, 50);
    assert_true(bsi_size_in_bytes(b) > 0);

    bsi_free(b);
    naive_free(&n);
}

/* Small values only: nslices stays small, so bounds far outside the
 * representable range exercise the clamping. */
static void test_small_values_and_clamping(void **state)
{
    (void)state;
    uint64_t rng = 5;
    naive_t n = naive_new();
    bsi_t *b = bsi_create();
    for (int i = 0; i < 5000; i++) {
        uint32_t u = random_user(&rng);
        int64_t v = (int64_t)(rand_next(&rng) % 41) - 20;
        assert_int_equal(bsi_set(b, u, v), CP_OK);
        n.has[u] = 1;
        n.val[u] = v;
    }
    assert_int_equal(b->nslices, 5); /* -20..20 fits in [-32, 31] */
    check_all_gets(b, &n);
    for (int64_t lo = -40; lo <= 40; lo += 3)
        for (int64_t hi = lo - 2; hi <= 40; hi += 5)
            check_range(b, &n, lo, hi);
    check_range(b, &n, INT64_MIN, -33);
    check_range(b, &n, -33, -32);
    check_range(b, &n, 32, INT64_MAX);
    check_range(b, &n, 31, INT64_MAX);
    check_range(b, &n, INT64_MIN, 0);
    check_random_ranges(b, &n, &rng, 40);
    bsi_free(b);
    naive_free(&n);
}

/* Negatives stored while nslices is small must stay negative when a large
 * value grows nslices: their new high slices are sign-extended. */
static void test_growth_sign_extension(void **state)
{
    (void)state;
    naive_t n = naive_new();
    bsi_t *b = bsi_create();
    const int64_t first[] = {-1, -2, -3, 1, 2, 0, -4};
    for (uint32_t i = 0; i < CP_ARRAY_LEN(first); i++) {
        assert_int_equal(bsi_set(b, i * 10000, first[i]), CP_OK);
        n.has[i * 10000] = 1;
        n.val[i * 10000] = first[i];
    }
    assert_int_equal(b->nslices, 2);
    int64_t v;
    assert_true(bsi_get(b, 0, &v) && v == -1);

    int64_t step_values[] = {1000, -100000, INT64_C(1) << 40, INT64_MAX, INT64_MIN};
    for (uint32_t i = 0; i < CP_ARRAY_LEN(step_values); i++) {
        uint32_t u = 200000 + i;
        assert_int_equal(bsi_set(b, u, step_values[i]), CP_OK);
        n.has[u] = 1;
        n.val[u] = step_values[i];
        check_all_gets(b, &n);
        check_range(b, &n, INT64_MIN, -1);
        check_range(b, &n, -3, 1);
        check_range(b, &n, -4, -4);
        check_range(b, &n, 0, INT64_MAX);
        check_range(b, &n, INT64_MIN, INT64_MIN);
        check_range(b, &n, INT64_MAX, INT64_MAX);
    }
    assert_int_equal(b->nslices, 63);

    /* bsi_ensure_slices: growth for loading, and its bound. */
    assert_int_equal(bsi_ensure_slices(b, 64), CP_OK);
    assert_int_equal(b->nslices, 64);
    check_all_gets(b, &n);
    check_range(b, &n, -3, 1);
    check_range(b, &n, INT64_MIN, INT64_MIN + 1);
    assert_int_equal(bsi_ensure_slices(b, 65), CP_EINVAL);
    bsi_free(b);
    naive_free(&n);
}

/* bsi_range_chunk on its own: absent chunks, an empty index. */
static void test_chunk_form(void **state)
{
    (void)state;
    uint64_t *dst = aligned_alloc(64, CP_CHUNK_WORDS * 8);
    uint64_t *scratch = aligned_alloc(64, 3 * CP_CHUNK_WORDS * 8);
    bsi_t *b = bsi_create();
    memset(dst, 0xff, CP_CHUNK_WORDS * 8);
    bsi_range_chunk(b, 0, INT64_MIN, INT64_MAX, dst, scratch);
    assert_false(dense_any(dst));
    roaring_bitmap_t *r = bsi_range(b, INT64_MIN, INT64_MAX);
    assert_true(roaring_bitmap_is_empty(r));
    roaring_bitmap_free(r);

    assert_int_equal(bsi_set(b, 65536 + 5, 7), CP_OK);
    assert_int_equal(bsi_set(b, 65536 + 65535, -7), CP_OK);
    memset(dst, 0xff, CP_CHUNK_WORDS * 8);
    bsi_range_chunk(b, 0, INT64_MIN, INT64_MAX, dst, scratch);
    assert_false(dense_any(dst));
    bsi_range_chunk(b, 1, -7, 7, dst, scratch);
    assert_int_equal(dense_popcount(dst), 2);
    assert_true(dst[1023] >> 63);
    bsi_range_chunk(b, 1, 0, 7, dst, scratch);
    assert_int_equal(dense_popcount(dst), 1);
    assert_int_equal(dst[0], UINT64_C(1) << 5);
    bsi_range_chunk(b, 1, -8, -7, dst, scratch);
    assert_int_equal(dense_popcount(dst), 1);
    bsi_range_chunk(b, 1, 8, INT64_MAX, dst, scratch);
    assert_false(dense_any(dst));

    bsi_free(b);
    bsi_free(NULL);
    free(dst);
    free(scratch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_small_values_and_clamping),
        cmocka_unit_test(test_growth_sign_extension),
        cmocka_unit_test(test_chunk_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
