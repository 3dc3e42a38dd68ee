/* beh_window.c — behaviour queries: the cells of a window of days, and per
 * 65,536-user chunk the users whose sum of counts over it compares with k
 * (a bit-sliced accumulator and O'Neil's comparison); see behavior.h. */
#include <stdlib.h>
#include <string.h>

#include "index/beh_int.h"

void beh_window_init(const beh_t *b, uint32_t series, int32_t d0, int32_t d1, beh_window_t *w)
{
    memset(w, 0, sizeof *w);
    if (series >= b->nseries || d0 > d1)
        return;
    const series_t *se = &b->series[series];
    uint32_t i0 = beh__lower_day(se, d0);
    uint32_t i1 = d1 == INT32_MAX ? se->ncells : beh__lower_day(se, d1 + 1);
    if (i0 >= i1)
        return;
    w->cells = se->cells + i0;
    w->ncells = i1 - i0;
    /* A cell's count is at most 2^nslices, so the window's sum is at most
     * bound < 2^bitlen(bound) (ncells < 2^32, nslices <= 32: no overflow). */
    uint64_t bound = 0;
    for (uint32_t i = 0; i < w->ncells; i++)
        bound += (uint64_t)1 << w->cells[i].nslices;
    w->slices = bitlen(bound);
}

void beh_window_foreach(const beh_window_t *w, void (*fn)(void *ctx, uint32_t user, uint64_t count),
                        void *ctx)
{
    for (uint32_t i = 0; i < w->ncells; i++) {
        const beh_cell_t *c = &w->cells[i];
        if (c->small) {
            const uint32_t *u = sm_users(c), *v = sm_vals(c);
            for (uint32_t k = 0; k < c->n; k++)
                fn(ctx, u[k], (uint64_t)v[k] + 1);
            continue;
        }
        roaring_uint32_iterator_t it;
        roaring_init_iterator(c->exists, &it);
        for (; it.has_value; roaring_advance_uint32_iterator(&it))
            fn(ctx, it.current_value, 1);
        for (int j = 0; j < c->nslices; j++) {
            roaring_init_iterator(c->slices[j], &it);
            for (; it.has_value; roaring_advance_uint32_iterator(&it))
                fn(ctx, it.current_value, (uint64_t)1 << j);
        }
    }
}

void beh_window_days(beh_window_t *w)
{
    w->days = 1;
    w->slices = bitlen(w->ncells); /* at most one per day */
}

int beh_cmp_zero(beh_cmp op, uint64_t k)
{
    switch (op) {
    case BEH_EQ:
        return k == 0;
    case BEH_NE:
        return k != 0;
    case BEH_LT:
        return k > 0;
    case BEH_LE:
        return 1;
    case BEH_GT:
        return 0;
    case BEH_GE:
        return k == 0;
    }
    return 0;
}

uint64_t beh_window_estimate(const beh_window_t *w, beh_cmp op, uint64_t k)
{
    if (beh_cmp_zero(op, k))
        return UINT64_MAX;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < w->ncells; i++) {
        uint64_t c = cell_users(&w->cells[i]);
        sum = sum + c < sum ? UINT64_MAX : sum + c;
    }
    return sum;
}

/* Scratch: one chunk of carries, then the accumulator, slice-major
 * (slice i of the chunk's sums at acc + i * CP_CHUNK_WORDS). */
#define SCR_ACC CP_CHUNK_WORDS

size_t beh_window_scratch_words(const beh_window_t *w)
{
    return SCR_ACC + (size_t)CP_CHUNK_WORDS * (size_t)(w->slices > 0 ? w->slices : 1);
}

/* Which comparisons are a plain "did it at all" or "did not". */
static int is_any(beh_cmp op, uint64_t k)
{
    return (op == BEH_GE && k == 1) || (op == BEH_GT && k == 0) || (op == BEH_NE && k == 0);
}

static int is_none(beh_cmp op, uint64_t k)
{
    return (op == BEH_EQ && k == 0) || (op == BEH_LT && k == 1) || (op == BEH_LE && k == 0);
}

/*
 * acc += carry << pos for the 65,536 users of the chunk at once: a
 * word-level ripple-carry adder, one slice of 1,024 words per step (a
 * loop the compiler vectorises), stopping at the first slice where no
 * carry is left. Sparse days stop after a slice or two. Returns the
 * highest slice written. `carry` is consumed.
 */
static int ripple_add(uint64_t *acc, int S, uint64_t *carry, int pos)
{
    int i = pos;
    for (; i < S; i++) {
        uint64_t *a = acc + (size_t)i * CP_CHUNK_WORDS;
        uint64_t any = 0;
        for (uint32_t w = 0; w < CP_CHUNK_WORDS; w++) {
            uint64_t t = a[w] & carry[w];
            a[w] ^= carry[w];
            carry[w] = t;
            any |= t;
        }
        if (any == 0)
            return i;
    }
    return S - 1; /* not reached: S bounds every sum of the window */
}

/* The users [*lo, *hi) of a small cell that lie in chunk `key`; 0 if none. */
static int sm_chunk(const beh_cell_t *c, uint16_t key, uint32_t *lo, uint32_t *hi)
{
    const uint32_t *u = sm_users(c);
    uint32_t i = 0, j;
    while (i < c->n && u[i] >> 16 < key)
        i++;
    for (j = i; j < c->n && u[j] >> 16 == key; j++)
        ;
    *lo = i;
    *hi = j;
    return j > i;
}

/*
 * The sum of one user (bit `low` of the chunk) += count, bit by bit in
 * the slice-major accumulator: a small cell's few users cost a few word
 * updates each instead of a ripple over whole slices. Returns the highest
 * slice written (-1 if none).
 */
static int acc_add_user(uint64_t *acc, int S, uint32_t low, uint64_t count)
{
    size_t w = low >> 6;
    uint64_t m = (uint64_t)1 << (low & 63), carry = 0;
    int top = -1;
    for (int i = 0; i < S && (count || carry); i++, count >>= 1) {
        uint64_t *a = &acc[(size_t)i * CP_CHUNK_WORDS + w];
        uint64_t sum = ((*a & m) != 0) + (count & 1) + carry;
        *a = sum & 1 ? *a | m : *a & ~m;
        carry = sum >> 1;
        top = i;
    }
    return top;
}

int beh_window_chunk(const beh_window_t *w, uint16_t key, beh_cmp op, uint64_t k, uint64_t *dst,
                     uint64_t *scratch)
{
    uint32_t lo, hi;
    bm_chunk_t ch;
    int32_t cur;
    if (is_any(op, k) || is_none(op, k)) {
        int have = 0;
        for (uint32_t i = 0; i < w->ncells; i++) {
            const beh_cell_t *c = &w->cells[i];
            if (c->small) {
                if (!sm_chunk(c, key, &lo, &hi))
                    continue;
                if (!have)
                    dense_zero(dst);
                have = 1;
                for (const uint32_t *u = sm_users(c); lo < hi; lo++)
                    dst[(u[lo] & 0xFFFF) >> 6] |= (uint64_t)1 << (u[lo] & 63);
                continue;
            }
            cur = 0;
            if (!bm_chunk_find(c->exists, key, &cur, &ch))
                continue;
            if (have)
                chunk_or(&ch, dst);
            else
                chunk_load(&ch, dst);
            have = 1;
        }
        if (is_any(op, k)) {
            if (!have)
                dense_zero(dst);
            return have && dense_any(dst);
        }
        if (!have) {
            dense_fill(dst);
            return 1;
        }
        for (uint32_t i = 0; i < CP_CHUNK_WORDS; i++)
            dst[i] = ~dst[i];
        return dense_any(dst);
    }

    const int S = w->slices;
    uint64_t *carry = scratch, *acc = scratch + SCR_ACC;
    int top = -1;
    for (uint32_t i = 0; i < w->ncells; i++) {
        const beh_cell_t *c = &w->cells[i];
        if (c->small) {
            const uint32_t *u = sm_users(c), *v = sm_vals(c);
            if (!sm_chunk(c, key, &lo, &hi))
                continue;
            for (; lo < hi; lo++) {
                int t = acc_add_user(acc, S, u[lo] & 0xFFFF, w->days ? 1 : (uint64_t)v[lo] + 1);
                top = t > top ? t : top;
            }
            continue;
        }
        cur = 0;
        if (!bm_chunk_find(c->exists, key, &cur, &ch))
            continue;
        chunk_load(&ch, carry);
        int t = ripple_add(acc, S, carry, 0);
        top = t > top ? t : top;
        for (int j = 0; j < c->nslices && !w->days; j++) {
            cur = 0;
            if (!bm_chunk_find(c->slices[j], key, &cur, &ch))
                continue;
            chunk_load(&ch, carry);
            t = ripple_add(acc, S, carry, j);
            top = t > top ? t : top;
        }
    }
    if (top < 0) { /* nobody of this chunk: every sum is 0 */
        int zero = beh_cmp_zero(op, k);
        if (zero)
            dense_fill(dst);
        else
            dense_zero(dst);
        return zero;
    }
    /* O'Neil's comparison from the top slice down: gt (in dst) and eq (in
     * carry) per user. Sums are below 2^(top + 1). */
    uint64_t *gt = dst, *eq = carry;
    dense_zero(gt);
    if (top < 63 && (k >> (top + 1)) != 0) {
        dense_zero(eq); /* every sum < k */
    } else {
        dense_fill(eq);
        for (int i = top; i >= 0; i--) {
            const uint64_t *a = acc + (size_t)i * CP_CHUNK_WORDS;
            uint64_t kb = (k >> i) & 1 ? ~(uint64_t)0 : 0;
            for (uint32_t x = 0; x < CP_CHUNK_WORDS; x++) {
                gt[x] |= eq[x] & a[x] & ~kb;
                eq[x] &= ~(a[x] ^ kb);
            }
        }
    }
    uint64_t any = 0;
    for (uint32_t x = 0; x < CP_CHUNK_WORDS; x++) {
        uint64_t g = gt[x], e = eq[x], r = 0;
        switch (op) {
        case BEH_EQ:
            r = e;
            break;
        case BEH_NE:
            r = ~e;
            break;
        case BEH_LT:
            r = ~(g | e);
            break;
        case BEH_LE:
            r = ~g;
            break;
        case BEH_GT:
            r = g;
            break;
        case BEH_GE:
            r = g | e;
            break;
        }
        dst[x] = r;
        any |= r;
    }
    /* leave the scratch zeroed for the next call */
    memset(acc, 0, (size_t)(top + 1) * CP_CHUNK_WORDS * sizeof *acc);
    dense_zero(carry);
    return any != 0;
}

cp_status beh_window_eval(const beh_window_t *w, beh_cmp op, uint64_t k,
                          const roaring_bitmap_t *universe, roaring_bitmap_t *out)
{
    size_t words = beh_window_scratch_words(w) + CP_CHUNK_WORDS;
    uint64_t *scratch = aligned_alloc(64, words * sizeof(uint64_t));
    cp_status st = CP_OK;
    if (scratch == NULL)
        return CP_ENOMEM;
    memset(scratch, 0, words * sizeof(uint64_t));
    uint64_t *dst = scratch + beh_window_scratch_words(w);
    int32_t n = bm_chunk_count(universe);
    for (int32_t i = 0; i < n && st == CP_OK; i++) {
        bm_chunk_t uch;
        uint16_t key = bm_chunk_key(universe, i);
        if (!beh_window_chunk(w, key, op, k, dst, scratch))
            continue;
        bm_chunk_at(universe, i, &uch);
        chunk_and(&uch, dst);
        st = bm_append_dense(out, key, dst);
    }
    free(scratch);
    return st;
}
