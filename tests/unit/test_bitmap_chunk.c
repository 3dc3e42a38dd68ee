/*
 * test_bitmap_chunk.c — container views against naive bit arrays, over
 * every container form CRoaring 0.2.66 has (array, bitset, run, and shared
 * copy-on-write wrappers of each), sparse/dense/empty/full chunks; the
 * galloping cursor; bm_append_dense round trips; bm_deserialize_safe on
 * valid, truncated and corrupt bytes.
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
#define NBITS CP_CHUNK_BITS

static uint64_t *chunk_alloc(void)
{
    uint64_t *p = aligned_alloc(64, W * sizeof(uint64_t));
    assert_non_null(p);
    return p;
}

static int bit(const uint64_t *w, uint32_t i)
{
    return (int)((w[i >> 6] >> (i & 63)) & 1);
}

static void set_bit(uint64_t *w, uint32_t i)
{
    w[i >> 6] |= UINT64_C(1) << (i & 63);
}

/* Kinds of chunk content, chosen to land in each container form. */
enum {
    K_EMPTY,
    K_SINGLE_EDGES, /* bits 0 and 65535 */
    K_SPARSE,       /* ~200 random bits: array */
    K_ARRAY_MAX,    /* exactly 4096 bits: largest array */
    K_BITSET_MIN,   /* 4097 bits: smallest bitset */
    K_DENSE,        /* ~50% random: bitset */
    K_RUNS,         /* a few long ranges: run after run_optimize */
    K_FULL,         /* every bit */
    K_RUNS_EDGES,   /* ranges touching both ends */
    K_COUNT
};

static void make_chunk(uint64_t *w, int kind, uint64_t *rng)
{
    memset(w, 0, W * 8);
    switch (kind) {
    case K_EMPTY:
        break;
    case K_SINGLE_EDGES:
        set_bit(w, 0);
        set_bit(w, NBITS - 1);
        break;
    case K_SPARSE:
        for (int i = 0; i < 200; i++)
            set_bit(w, (uint32_t)(rand_next(rng) % NBITS));
        break;
    case K_ARRAY_MAX:
    case K_BITSET_MIN: {
        uint32_t want = kind == K_ARRAY_MAX ? 4096 : 4097, have = 0;
        while (have < want) {
            uint32_t i = (uint32_t)(rand_next(rng) % NBITS);
            if (!bit(w, i)) {
                set_bit(w, i);
                have++;
            }
        }
        break;
    }
    case K_DENSE:
        for (uint32_t i = 0; i < W; i++)
            w[i] = rand_next(rng);
        break;
    case K_RUNS:
    case K_RUNS_EDGES: {
        int nr = 1 + (int)(rand_next(rng) % 20);
        for (int r = 0; r < nr; r++) {
            uint32_t s = (uint32_t)(rand_next(rng) % NBITS);
            uint32_t len = 1 + (uint32_t)(rand_next(rng) % 3000);
            for (uint32_t i = s; i < s + len && i < NBITS; i++)
                set_bit(w, i);
        }
        if (kind == K_RUNS_EDGES) {
            for (uint32_t i = 0; i < 100; i++)
                set_bit(w, i);
            for (uint32_t i = NBITS - 77; i < NBITS; i++)
                set_bit(w, i);
        }
        break;
    }
    case K_FULL:
        memset(w, 0xff, W * 8);
        break;
    }
}

static void add_chunk(roaring_bitmap_t *bm, uint16_t key, const uint64_t *w)
{
    for (uint32_t i = 0; i < NBITS; i++)
        if (bit(w, i))
            roaring_bitmap_add(bm, ((uint32_t)key << 16) | i);
}

static void random_dst(uint64_t *d, uint64_t *rng)
{
    int kind = (int)(rand_next(rng) % 3);
    for (uint32_t i = 0; i < W; i++)
        d[i] = kind == 0   ? rand_next(rng)
               : kind == 1 ? ~UINT64_C(0)
                           : rand_next(rng) & rand_next(rng);
}

/* Checks every chunk operation of view `ch` against the naive words `ref`. */
static void check_view(const bm_chunk_t *ch, const uint64_t *ref, uint64_t *rng)
{
    uint64_t *d = chunk_alloc(), *orig = chunk_alloc(), *want = chunk_alloc();

    random_dst(d, rng);
    chunk_load(ch, d);
    assert_memory_equal(d, ref, W * 8);

    uint64_t n = 0;
    for (uint32_t i = 0; i < W; i++)
        n += (uint64_t)__builtin_popcountll(ref[i]);
    assert_int_equal(chunk_cardinality(ch), n);

    for (int rep = 0; rep < 3; rep++) {
        random_dst(orig, rng);

        memcpy(d, orig, W * 8);
        chunk_and(ch, d);
        for (uint32_t i = 0; i < W; i++)
            want[i] = orig[i] & ref[i];
        assert_memory_equal(d, want, W * 8);

        memcpy(d, orig, W * 8);
        chunk_or(ch, d);
        for (uint32_t i = 0; i < W; i++)
            want[i] = orig[i] | ref[i];
        assert_memory_equal(d, want, W * 8);

        memcpy(d, orig, W * 8);
        chunk_andnot(ch, d);
        for (uint32_t i = 0; i < W; i++)
            want[i] = orig[i] & ~ref[i];
        assert_memory_equal(d, want, W * 8);
    }
    free(d);
    free(orig);
    free(want);
}

static uint8_t expected_type(const uint64_t *w)
{
    uint64_t card = 0, runs = 0, carry = 0;
    for (uint32_t i = 0; i < W; i++) {
        card += (uint64_t)__builtin_popcountll(w[i]);
        for (int b = 0; b < 64; b++) {
            uint64_t v = (w[i] >> b) & 1;
            if (v && !carry)
                runs++;
            carry = v;
        }
    }
    uint64_t other = card <= 4096 ? 2 + 2 * card : 8192;
    if (2 + 4 * runs < other)
        return RUN_CONTAINER_TYPE_CODE;
    return card <= 4096 ? ARRAY_CONTAINER_TYPE_CODE : BITSET_CONTAINER_TYPE_CODE;
}

/*
 * One bitmap with a chunk of every kind at keys 0, 3, 6, ... (absent keys
 * between), checked as built, after run_optimize, and as a copy-on-write
 * copy whose containers are shared.
 */
static void test_views_all_forms(void **state)
{
    (void)state;
    uint64_t rng = 1234;
    uint64_t *ref[K_COUNT];
    uint64_t *zero = chunk_alloc();
    memset(zero, 0, W * 8);
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (int k = 0; k < K_COUNT; k++) {
        ref[k] = chunk_alloc();
        make_chunk(ref[k], k, &rng);
        add_chunk(bm, (uint16_t)(3 * k), ref[k]);
    }

    for (int form = 0; form < 3; form++) {
        roaring_bitmap_t *view = bm;
        roaring_bitmap_t *cow = NULL, *cow2 = NULL;
        if (form == 1)
            roaring_bitmap_run_optimize(bm);
        if (form == 2) {
            roaring_bitmap_set_copy_on_write(bm, true);
            cow = roaring_bitmap_copy(bm);
            cow2 = roaring_bitmap_copy(cow);
            assert_non_null(cow);
            view = cow;
            int shared = 0;
            for (int32_t i = 0; i < view->high_low_container.size; i++)
                shared += view->high_low_container.typecodes[i] == SHARED_CONTAINER_TYPE_CODE;
            assert_true(shared > 0);
        }
        int seen[4] = {0};
        int32_t cursor = 0;
        for (int k = 0; k < K_COUNT; k++) {
            bm_chunk_t ch;
            /* The absent key before each present one. */
            if (k > 0) {
                assert_int_equal(bm_chunk_find(view, (uint16_t)(3 * k - 1), &cursor, &ch), 0);
                assert_int_equal(ch.type, 0);
                check_view(&ch, zero, &rng);
            }
            int present = bm_chunk_find(view, (uint16_t)(3 * k), &cursor, &ch);
            assert_int_equal(present, k != K_EMPTY);
            if (present) {
                assert_true(ch.type >= 1 && ch.type <= 3);
                seen[ch.type]++;
            }
            check_view(&ch, ref[k], &rng);
        }
        assert_true(seen[ARRAY_CONTAINER_TYPE_CODE] > 0);
        assert_true(seen[BITSET_CONTAINER_TYPE_CODE] > 0);
        if (form >= 1)
            assert_true(seen[RUN_CONTAINER_TYPE_CODE] > 0);

        /* bm_chunk_at / key walk agrees with find. */
        assert_int_equal(bm_chunk_count(view), K_COUNT - 1);
        for (int32_t i = 0; i < bm_chunk_count(view); i++) {
            bm_chunk_t a, b;
            int32_t c = 0;
            bm_chunk_at(view, i, &a);
            assert_int_equal(bm_chunk_find(view, bm_chunk_key(view, i), &c, &b), 1);
            assert_int_equal(a.type, b.type);
            assert_ptr_equal(a.c, b.c);
        }
        if (cow) { /* CRoaring 0.2.66's free does not accept NULL */
            roaring_bitmap_free(cow);
            roaring_bitmap_free(cow2);
        }
    }
    for (int k = 0; k < K_COUNT; k++)
        free(ref[k]);
    free(zero);
    roaring_bitmap_free(bm);
}

/* The cursor: monotone scans over random key sets, restarts, overshoots. */
static void test_find_cursor(void **state)
{
    (void)state;
    uint64_t rng = 99;
    for (int trial = 0; trial < 50; trial++) {
        roaring_bitmap_t *bm = roaring_bitmap_create();
        static uint8_t present[65536];
        memset(present, 0, sizeof present);
        int n = (int)(rand_next(&rng) % 3000);
        for (int i = 0; i < n; i++) {
            uint16_t k = (uint16_t)(trial % 2 ? rand_next(&rng) % 65536 : rand_next(&rng) % 5000);
            present[k] = 1;
            roaring_bitmap_add(bm, ((uint32_t)k << 16) | (uint32_t)(rand_next(&rng) & 0xffff));
        }
        int32_t cursor = 0;
        uint32_t key = 0;
        while (key < 65536) {
            bm_chunk_t ch;
            int got = bm_chunk_find(bm, (uint16_t)key, &cursor, &ch);
            assert_int_equal(got, present[key]);
            assert_true(cursor >= 0 && cursor <= bm_chunk_count(bm));
            if (got)
                assert_int_equal(bm_chunk_key(bm, cursor), key);
            key += 1 + (uint32_t)(rand_next(&rng) % (trial % 3 == 0 ? 3 : 700));
        }
        /* Non-monotone lookups still answer correctly. */
        for (int i = 0; i < 200; i++) {
            bm_chunk_t ch;
            uint16_t k = (uint16_t)(rand_next(&rng) % 65536);
            if (i % 2)
                cursor = (int32_t)(rand_next(&rng) % (uint64_t)(bm_chunk_count(bm) + 3)) - 1;
            assert_int_equal(bm_chunk_find(bm, k, &cursor, &ch), present[k]);
        }
        roaring_bitmap_free(bm);
    }
}

static void test_append_dense(void **state)
{
    (void)state;
    uint64_t rng = 555;
    uint64_t *w = chunk_alloc(), *back = chunk_alloc();
    for (int round = 0; round < 4; round++) {
        roaring_bitmap_t *bm = roaring_bitmap_create();
        roaring_bitmap_t *want = roaring_bitmap_create();
        uint16_t key = (uint16_t)round;
        for (int i = 0; i < 40; i++) {
            int kind = (int)(rand_next(&rng) % K_COUNT);
            make_chunk(w, kind, &rng);
            uint32_t before = (uint32_t)bm_chunk_count(bm);
            assert_int_equal(bm_append_dense(bm, key, w), CP_OK);
            add_chunk(want, key, w);
            if (kind == K_EMPTY) {
                assert_int_equal(bm_chunk_count(bm), before);
            } else {
                bm_chunk_t ch;
                bm_chunk_at(bm, (int32_t)before, &ch);
                assert_int_equal(bm_chunk_key(bm, (int32_t)before), key);
                assert_int_equal(ch.type, expected_type(w));
                chunk_load(&ch, back);
                assert_memory_equal(back, w, W * 8);
            }
            key = (uint16_t)(key + 1 + rand_next(&rng) % 1500);
            if (key < (uint16_t)round + 40u) /* wrapped */
                break;
        }
        assert_true(roaring_bitmap_equals(bm, want));
        assert_int_equal(roaring_bitmap_get_cardinality(bm), roaring_bitmap_get_cardinality(want));
        /* It is a proper bitmap: CRoaring's own operations work on it. */
        roaring_bitmap_t *u = roaring_bitmap_or(bm, want);
        assert_true(roaring_bitmap_equals(u, want));
        roaring_bitmap_free(u);
        size_t sz = roaring_bitmap_portable_size_in_bytes(bm);
        char *buf = malloc(sz);
        assert_int_equal(roaring_bitmap_portable_serialize(bm, buf), sz);
        roaring_bitmap_t *again = bm_deserialize_safe(buf, sz);
        assert_non_null(again);
        assert_true(roaring_bitmap_equals(again, want));
        roaring_bitmap_free(again);
        free(buf);

        /* Keys must increase. */
        make_chunk(w, K_SPARSE, &rng);
        if (bm_chunk_count(bm) > 0) {
            uint16_t last = bm_chunk_key(bm, bm_chunk_count(bm) - 1);
            assert_int_equal(bm_append_dense(bm, last, w), CP_EINVAL);
        }
        roaring_bitmap_free(bm);
        roaring_bitmap_free(want);
    }
    free(w);
    free(back);
}

static roaring_bitmap_t *sample_bitmap(uint64_t *rng, int run_opt)
{
    roaring_bitmap_t *bm = roaring_bitmap_create();
    uint64_t *w = chunk_alloc();
    for (int k = 0; k < K_COUNT; k++) {
        make_chunk(w, k, rng);
        add_chunk(bm, (uint16_t)(k * 7 + 1), w);
    }
    free(w);
    if (run_opt)
        roaring_bitmap_run_optimize(bm);
    return bm;
}

static void test_deserialize_safe(void **state)
{
    (void)state;
    uint64_t rng = 2024;
    for (int run_opt = 0; run_opt < 2; run_opt++) {
        roaring_bitmap_t *bm = sample_bitmap(&rng, run_opt);
        size_t sz = roaring_bitmap_portable_size_in_bytes(bm);
        char *buf = malloc(sz + 16);
        assert_int_equal(roaring_bitmap_portable_serialize(bm, buf), sz);

        roaring_bitmap_t *ok = bm_deserialize_safe(buf, sz);
        assert_non_null(ok);
        assert_true(roaring_bitmap_equals(ok, bm));
        roaring_bitmap_free(ok);

        /* Every truncation, and trailing garbage, is rejected. Each
         * truncated copy lives in its own exact-size allocation so that
         * ASan catches any read past the end. */
        for (size_t len = 0; len < sz; len += (len < 256 ? 1 : 97)) {
            char *t = malloc(len ? len : 1);
            memcpy(t, buf, len);
            assert_null(bm_deserialize_safe(t, len));
            free(t);
        }
        memset(buf + sz, 0, 16);
        assert_null(bm_deserialize_safe(buf, sz + 16));

        /* Random corruption: never a crash; anything accepted is a proper
         * bitmap (sorted keys, valid containers, CRoaring can use it). */
        char *c = malloc(sz);
        for (int i = 0; i < 3000; i++) {
            memcpy(c, buf, sz);
            int flips = 1 + (int)(rand_next(&rng) % 4);
            for (int f = 0; f < flips; f++) {
                size_t pos = (i % 2) ? rand_next(&rng) % (sz < 64 ? sz : 64) : rand_next(&rng) % sz;
                c[pos] = (char)rand_next(&rng);
            }
            roaring_bitmap_t *r = bm_deserialize_safe(c, sz);
            if (r) {
                const roaring_array_t *ra = &r->high_low_container;
                for (int32_t k = 1; k < ra->size; k++)
                    assert_true(ra->keys[k] > ra->keys[k - 1]);
                uint64_t card = 0;
                for (int32_t k = 0; k < ra->size; k++) {
                    bm_chunk_t ch;
                    bm_chunk_at(r, k, &ch);
                    card += chunk_cardinality(&ch);
                }
                assert_int_equal(card, roaring_bitmap_get_cardinality(r));
                roaring_bitmap_t *u = roaring_bitmap_or(r, bm);
                roaring_bitmap_free(u);
                roaring_bitmap_free(r);
            }
        }
        free(c);
        free(buf);
        roaring_bitmap_free(bm);
    }
    assert_null(bm_deserialize_safe(NULL, 10));
    assert_null(bm_deserialize_safe("x", 0));
}

/* Hand-made bytes that CRoaring's reader accepts but that break container
 * invariants: an unsorted array and overlapping runs. */
static void test_deserialize_invariants(void **state)
{
    (void)state;
    roaring_bitmap_t *bm = roaring_bitmap_create();
    roaring_bitmap_add(bm, 10);
    roaring_bitmap_add(bm, 20);
    roaring_bitmap_add(bm, 30);
    size_t sz = roaring_bitmap_portable_size_in_bytes(bm);
    uint8_t *buf = malloc(sz);
    roaring_bitmap_portable_serialize(bm, (char *)buf);
    /* No-run cookie: 4 cookie + 4 count + 4 (key, card-1) + 4 offset, then values. */
    assert_int_equal(sz, 16 + 6);
    roaring_bitmap_t *ok = bm_deserialize_safe(buf, sz);
    assert_non_null(ok);
    roaring_bitmap_free(ok);
    uint16_t v = 5; /* 10, 20, 30 -> 10, 5, 30 */
    memcpy(buf + 18, &v, 2);
    assert_null(bm_deserialize_safe(buf, sz));
    v = 10; /* duplicate */
    memcpy(buf + 18, &v, 2);
    assert_null(bm_deserialize_safe(buf, sz));
    free(buf);
    roaring_bitmap_free(bm);

    /* Runs: [100, 199] and [300, 399]; then make them overlap / overflow. */
    bm = roaring_bitmap_create();
    roaring_bitmap_add_range(bm, 100, 200);
    roaring_bitmap_add_range(bm, 300, 400);
    roaring_bitmap_run_optimize(bm);
    sz = roaring_bitmap_portable_size_in_bytes(bm);
    buf = malloc(sz);
    roaring_bitmap_portable_serialize(bm, (char *)buf);
    /* Run cookie: 2 cookie + 2 (n-1) + 1 run flags + 4 (key, card-1), then
     * n_runs (2) and the runs {value, length}. */
    assert_int_equal(sz, 9 + 2 + 8);
    ok = bm_deserialize_safe(buf, sz);
    assert_non_null(ok);
    assert_true(roaring_bitmap_equals(ok, bm));
    roaring_bitmap_free(ok);
    uint16_t start = 150;
    memcpy(buf + 15, &start, 2); /* second run starts inside the first */
    assert_null(bm_deserialize_safe(buf, sz));
    start = 65500; /* 65500 + 99 runs past the chunk */
    memcpy(buf + 15, &start, 2);
    assert_null(bm_deserialize_safe(buf, sz));
    free(buf);
    roaring_bitmap_free(bm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_views_all_forms),        cmocka_unit_test(test_find_cursor),
        cmocka_unit_test(test_append_dense),           cmocka_unit_test(test_deserialize_safe),
        cmocka_unit_test(test_deserialize_invariants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
