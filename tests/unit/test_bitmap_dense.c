/*
 * test_bitmap_dense.c — the dense kernels against naive word loops, over
 * empty, sparse, dense and full chunks, and dense_floor5 over odd lengths
 * and unaligned starts.
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

#define W CP_CHUNK_WORDS

static uint64_t *chunk_alloc(void)
{
    uint64_t *p = aligned_alloc(64, W * sizeof(uint64_t));
    assert_non_null(p);
    return p;
}

/* Fills with a pattern: 0 empty, 1 sparse, 2 half, 3 dense, 4 full, 5 runs. */
static void fill_pattern(uint64_t *w, size_t n, int kind, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rand_next(rng);
        switch (kind) {
        case 0:
            w[i] = 0;
            break;
        case 1:
            w[i] = (r % 13 == 0) ? (UINT64_C(1) << (r >> 58)) : 0;
            break;
        case 2:
            w[i] = r;
            break;
        case 3:
            w[i] = r | rand_next(rng);
            break;
        case 4:
            w[i] = ~UINT64_C(0);
            break;
        default:
            w[i] = ((i / 37) & 1) ? ~UINT64_C(0) : (r & 1 ? r : 0);
            break;
        }
    }
}

static uint64_t naive_pop(const uint64_t *w, size_t n)
{
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 64; b++)
            c += (w[i] >> b) & 1;
    return c;
}

static void test_kernels(void **state)
{
    (void)state;
    uint64_t rng = 42;
    uint64_t *a = chunk_alloc(), *b = chunk_alloc(), *d = chunk_alloc(), *u = chunk_alloc();
    uint64_t *ref = chunk_alloc();
    for (int ka = 0; ka < 6; ka++) {
        for (int kb = 0; kb < 6; kb++) {
            fill_pattern(a, W, ka, &rng);
            fill_pattern(b, W, kb, &rng);
            fill_pattern(u, W, 3, &rng);

            dense_copy(d, a);
            assert_memory_equal(d, a, W * 8);
            assert_int_equal(dense_popcount(a), naive_pop(a, W));
            assert_int_equal(dense_any(a) != 0, naive_pop(a, W) != 0);

            dense_copy(d, a);
            dense_and(d, b);
            for (size_t i = 0; i < W; i++)
                ref[i] = a[i] & b[i];
            assert_memory_equal(d, ref, W * 8);

            dense_copy(d, a);
            dense_or(d, b);
            for (size_t i = 0; i < W; i++)
                ref[i] = a[i] | b[i];
            assert_memory_equal(d, ref, W * 8);

            dense_copy(d, a);
            dense_andnot(d, b);
            for (size_t i = 0; i < W; i++)
                ref[i] = a[i] & ~b[i];
            assert_memory_equal(d, ref, W * 8);

            dense_copy(d, a);
            dense_not(d, u);
            for (size_t i = 0; i < W; i++)
                ref[i] = u[i] & ~a[i];
            assert_memory_equal(d, ref, W * 8);
        }
    }
    /* Aliased source and destination. */
    fill_pattern(a, W, 2, &rng);
    dense_copy(d, a);
    dense_and(d, d);
    assert_memory_equal(d, a, W * 8);
    dense_andnot(d, d);
    assert_false(dense_any(d));

    dense_fill(d);
    assert_int_equal(dense_popcount(d), CP_CHUNK_BITS);
    dense_zero(d);
    assert_int_equal(dense_popcount(d), 0);
    assert_false(dense_any(d));
    d[W - 1] = UINT64_C(1) << 63;
    assert_true(dense_any(d));
    assert_int_equal(dense_popcount(d), 1);

    free(a);
    free(b);
    free(d);
    free(u);
    free(ref);
}

/* dense_and_fused against term-by-term naive loops, for every count of
 * positive (1..7) and negative (0..5) terms and every fill pattern. */
static void test_and_fused(void **state)
{
    (void)state;
    uint64_t rng = 7;
    uint64_t *src[12], *dst = chunk_alloc(), *want = chunk_alloc();
    for (int i = 0; i < 12; i++)
        src[i] = chunk_alloc();
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 12; i++)
            fill_pattern(src[i], W, (int)(rand_next(&rng) % 6), &rng);
        for (int np = 1; np <= 7; np++) {
            for (int nn = 0; nn <= 5; nn++) {
                const uint64_t *pos[7], *neg[5];
                for (int i = 0; i < np; i++)
                    pos[i] = src[i];
                for (int i = 0; i < nn; i++)
                    neg[i] = src[7 + i];
                for (size_t w = 0; w < W; w++) {
                    uint64_t v = ~UINT64_C(0);
                    for (int i = 0; i < np; i++)
                        v &= pos[i][w];
                    for (int i = 0; i < nn; i++)
                        v &= ~neg[i][w];
                    want[w] = v;
                }
                memset(dst, 0xA5, W * sizeof(uint64_t));
                dense_and_fused(dst, pos, np, neg, nn);
                assert_memory_equal(dst, want, W * sizeof(uint64_t));
            }
        }
    }
    for (int i = 0; i < 12; i++)
        free(src[i]);
    free(dst);
    free(want);
}

static void test_floor5(void **state)
{
    (void)state;
    uint64_t rng = 7;
    const size_t cap = 3000;
    uint64_t *s[5];
    for (int k = 0; k < 5; k++) {
        s[k] = malloc((cap + 1) * sizeof(uint64_t));
        assert_non_null(s[k]);
    }
    const size_t lens[] = {0, 1, 3, 7, 8, 9, 31, 64, 1023, 1024, 1025, 2999};
    for (int kind = 0; kind < 6; kind++) {
        for (int k = 0; k < 5; k++)
            fill_pattern(s[k], cap + 1, (kind + k) % 6, &rng);
        for (size_t li = 0; li < CP_ARRAY_LEN(lens); li++) {
            for (size_t off = 0; off < 2; off++) { /* off 1: 8-byte aligned only */
                size_t n = lens[li];
                uint64_t want = 0;
                for (size_t i = 0; i < n; i++) {
                    uint64_t x =
                        ((s[0][i + off] & s[1][i + off] & s[2][i + off]) & ~s[3][i + off]) |
                        s[4][i + off];
                    want += naive_pop(&x, 1);
                }
                uint64_t got =
                    dense_floor5(s[0] + off, s[1] + off, s[2] + off, s[3] + off, s[4] + off, n);
                assert_int_equal(got, want);
            }
        }
    }
    for (int k = 0; k < 5; k++)
        free(s[k]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels),
        cmocka_unit_test(test_floor5),
        cmocka_unit_test(test_and_fused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
