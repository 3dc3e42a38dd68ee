/*
 * bsi.c — bit-sliced index of signed 64-bit values (bitmap.h, "bit-sliced
 * index").
 *
 * Representation. With n = nslices, a user's value v is stored as the low n
 * bits of its two's complement (slices[0..n-1]) plus `sign` (v < 0), which
 * acts as bit n and every bit above it (sign extension). So the
 * representable range is [-2^n, 2^n - 1]; n grows on demand and never
 * shrinks. When it grows, the new high slices of the negative users must be
 * 1 (sign extension): a new slice starts as a copy of `sign`.
 *
 * Comparisons. Flipping the sign bit turns an (n+1)-bit two's complement
 * number into offset binary, whose order is plain unsigned order: u = v +
 * 2^n, top bit !sign, low bits the slices. O'Neil & Quass's algorithm then
 * walks the bits from the top keeping "equal so far" and "less (or
 * greater) already" sets, O(n) bitmap operations per bound, independent of
 * the number of users; per chunk, over dense words, without allocation.
 */
#include <stdlib.h>

#include "bitmap/bitmap.h"

bsi_t *bsi_create(void)
{
    bsi_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->exists = roaring_bitmap_create();
    b->sign = roaring_bitmap_create();
    if (!b->exists || !b->sign) {
        bsi_free(b);
        return NULL;
    }
    return b;
}

/* CRoaring 0.2.66's roaring_bitmap_free does not accept NULL. */
static void free_bm(roaring_bitmap_t *bm)
{
    if (bm)
        roaring_bitmap_free(bm);
}

void bsi_free(bsi_t *b)
{
    if (!b)
        return;
    free_bm(b->exists);
    free_bm(b->sign);
    for (int i = 0; i < b->nslices; i++)
        free_bm(b->slices[i]);
    free(b);
}

/* Slices needed so that -2^n <= v <= 2^n - 1. */
static int slices_needed(int64_t v)
{
    uint64_t m = v < 0 ? ~(uint64_t)v : (uint64_t)v; /* ~v == -v - 1, no overflow */
    return m == 0 ? 0 : 64 - __builtin_clzll(m);
}

cp_status bsi_ensure_slices(bsi_t *b, int n)
{
    if (n < 0 || n > BSI_MAX_SLICES)
        return CP_EINVAL;
    while (b->nslices < n) {
        /* Sign extension: the negative users have a 1 in every new slice. */
        roaring_bitmap_t *s = roaring_bitmap_copy(b->sign);
        if (!s)
            return CP_ENOMEM;
        b->slices[b->nslices++] = s;
    }
    return CP_OK;
}

static void put(roaring_bitmap_t *bm, uint32_t user, int on)
{
    if (on)
        roaring_bitmap_add(bm, user);
    else
        roaring_bitmap_remove(bm, user);
}

cp_status bsi_set(bsi_t *b, uint32_t user, int64_t v)
{
    cp_status st = bsi_ensure_slices(b, slices_needed(v));
    if (st != CP_OK)
        return st;
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < b->nslices; i++)
        put(b->slices[i], user, (int)((u >> i) & 1));
    put(b->sign, user, v < 0);
    roaring_bitmap_add(b->exists, user);
    return CP_OK;
}

int bsi_get(const bsi_t *b, uint32_t user, int64_t *v)
{
    if (!roaring_bitmap_contains(b->exists, user))
        return 0;
    uint64_t u = 0;
    for (int i = 0; i < b->nslices; i++)
        if (roaring_bitmap_contains(b->slices[i], user))
            u |= UINT64_C(1) << i;
    if (b->nslices < 64 && roaring_bitmap_contains(b->sign, user))
        u |= ~UINT64_C(0) << b->nslices;
    *v = (int64_t)u;
    return 1;
}

void bsi_clear(bsi_t *b, uint32_t user)
{
    roaring_bitmap_remove(b->exists, user);
    roaring_bitmap_remove(b->sign, user);
    for (int i = 0; i < b->nslices; i++)
        roaring_bitmap_remove(b->slices[i], user);
}

/* ------------------------------------------------------------ ranges */

static void find(const roaring_bitmap_t *bm, uint16_t key, bm_chunk_t *ch)
{
    int32_t cursor = 0;
    bm_chunk_find(bm, key, &cursor, ch);
}

/*
 * lt (or gt) |= eq & (bit == want_other); eq &= (bit == c_bit), for one bit
 * position whose value bits are the container `bit` (`inverted`: the value
 * bit is NOT the container, as for the top bit, !sign).
 *
 * For "<= c": where c has a 1 and the value a 0, the value is less.
 * For ">= c": where c has a 0 and the value a 1, the value is greater.
 */
static void step(const bm_chunk_t *bit, int inverted, int c_bit, int less, uint64_t *acc,
                 uint64_t *eq, uint64_t *tmp)
{
    /* Does this position decide something into acc? For "<=": c=1, v=0.
     * For ">=": c=0, v=1. */
    int decides = less ? c_bit : !c_bit;
    if (decides) {
        /* tmp = eq & (value bit == !c_bit) */
        dense_copy(tmp, eq);
        int value_bit_wanted = !c_bit;
        if (value_bit_wanted ^ inverted)
            chunk_and(bit, tmp);
        else
            chunk_andnot(bit, tmp);
        dense_or(acc, tmp);
    }
    /* eq &= (value bit == c_bit) */
    if (c_bit ^ inverted)
        chunk_and(bit, eq);
    else
        chunk_andnot(bit, eq);
}

/*
 * out = users of the chunk (among `eq`, which holds the chunk's existing
 * users on entry and is consumed) whose value is <= c (less = 1) or >= c
 * (less = 0). c must be representable: -2^n <= c <= 2^n - 1.
 */
static void compare(const bsi_t *b, uint16_t key, int64_t c, int less, uint64_t *out, uint64_t *eq,
                    uint64_t *tmp)
{
    bm_chunk_t ch;
    uint64_t uc = (uint64_t)c;
    dense_zero(out);
    find(b->sign, key, &ch);
    step(&ch, 1, c >= 0, less, out, eq, tmp);
    for (int i = b->nslices - 1; i >= 0; i--) {
        if (!dense_any(eq))
            break;
        find(b->slices[i], key, &ch);
        step(&ch, 0, (int)((uc >> i) & 1), less, out, eq, tmp);
    }
    dense_or(out, eq);
}

void bsi_range_chunk(const bsi_t *b, uint16_t key, int64_t lo, int64_t hi, uint64_t *dst,
                     uint64_t *scratch)
{
    uint64_t *s0 = scratch, *s1 = scratch + CP_CHUNK_WORDS, *s2 = scratch + 2 * CP_CHUNK_WORDS;
    bm_chunk_t ex;
    int n = b->nslices;
    int64_t rmin = n >= 64 ? INT64_MIN : (int64_t)(~UINT64_C(0) << n);
    int64_t rmax = n >= 64 ? INT64_MAX : (int64_t)((UINT64_C(1) << n) - 1);

    find(b->exists, key, &ex);
    if (lo > hi || hi < rmin || lo > rmax || ex.type == 0) {
        dense_zero(dst);
        return;
    }
    /* Every stored value is within [rmin, rmax]: bounds past it are no
     * bounds, and clamped bounds are representable. */
    if (lo < rmin)
        lo = rmin;
    if (hi > rmax)
        hi = rmax;

    if (hi < rmax) {
        chunk_load(&ex, s0);
        compare(b, key, hi, 1, dst, s0, s1);
    } else {
        chunk_load(&ex, dst);
    }
    if (lo > rmin && dense_any(dst)) {
        dense_copy(s0, dst); /* only users still in can matter */
        compare(b, key, lo, 0, s1, s0, s2);
        dense_and(dst, s1);
    }
}

roaring_bitmap_t *bsi_range(const bsi_t *b, int64_t lo, int64_t hi)
{
    roaring_bitmap_t *out = roaring_bitmap_create();
    uint64_t *buf = aligned_alloc(64, 4 * CP_CHUNK_WORDS * sizeof(uint64_t));
    if (!out || !buf)
        goto fail;
    for (int32_t i = 0; i < bm_chunk_count(b->exists); i++) {
        uint16_t key = bm_chunk_key(b->exists, i);
        bsi_range_chunk(b, key, lo, hi, buf, buf + CP_CHUNK_WORDS);
        if (bm_append_dense(out, key, buf) != CP_OK)
            goto fail;
    }
    free(buf);
    return out;
fail:
    free(buf);
    free_bm(out);
    return NULL;
}

size_t bsi_size_in_bytes(const bsi_t *b)
{
    size_t n = sizeof *b + roaring_bitmap_portable_size_in_bytes(b->exists) +
               roaring_bitmap_portable_size_in_bytes(b->sign);
    for (int i = 0; i < b->nslices; i++)
        n += roaring_bitmap_portable_size_in_bytes(b->slices[i]);
    return n;
}
