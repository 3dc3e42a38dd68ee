/*
 * chunk.c — reading and writing CRoaring 0.2.66 containers in place
 * (bitmap.h, "container access").
 *
 * A roaring bitmap is a sorted array of (16-bit key, container) pairs in
 * `high_low_container`. Each container holds the low 16 bits of one chunk
 * of 65,536 users in one of three forms: a bitset (1,024 words), a sorted
 * array of uint16 (at most 4,096 values), or sorted runs {value, length}
 * meaning [value, value + length]. A fourth type code, SHARED, wraps one of
 * these with a reference count (copy-on-write copies); views unwrap it.
 *
 * The evaluator turns each container into dense words (or combines it into
 * dense words) without materialising a roaring copy, which is the point of
 * reading the internals: CRoaring's own operations allocate a new container
 * per call.
 */
#include <string.h>

#include "bitmap/bitmap.h"

/* ------------------------------------------------------------- lookup */

static void view_of(const roaring_array_t *ra, int32_t i, bm_chunk_t *out)
{
    uint8_t type = ra->typecodes[i];
    const void *c = container_unwrap_shared(ra->containers[i], &type);
    out->type = type;
    out->c = c;
}

int32_t bm_chunk_count(const roaring_bitmap_t *bm)
{
    return bm->high_low_container.size;
}

uint16_t bm_chunk_key(const roaring_bitmap_t *bm, int32_t i)
{
    return bm->high_low_container.keys[i];
}

void bm_chunk_at(const roaring_bitmap_t *bm, int32_t i, bm_chunk_t *out)
{
    view_of(&bm->high_low_container, i, out);
}

/* First index in [lo, hi) whose key is >= key (hi if none). */
static int32_t lower_bound(const uint16_t *keys, int32_t lo, int32_t hi, uint16_t key)
{
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (keys[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * Galloping search from the cursor: a scan over increasing keys touches
 * O(log gap) keys per call, so a full walk is linear in the number of
 * containers. A key below the cursor (a caller restarting a scan) falls
 * back to a binary search from the start, so results are never wrong.
 */
int bm_chunk_find(const roaring_bitmap_t *bm, uint16_t key, int32_t *cursor, bm_chunk_t *out)
{
    const roaring_array_t *ra = &bm->high_low_container;
    const int32_t n = ra->size;
    int32_t i = *cursor;

    if (i < 0 || i > n)
        i = 0;
    if (i > 0 && ra->keys[i - 1] >= key) {
        i = lower_bound(ra->keys, 0, i, key);
    } else if (i < n && ra->keys[i] < key) {
        /* keys[i] < key: gallop until keys[i + step] >= key or past the end. */
        int32_t lo = i + 1, step = 1, hi = i + 1;
        while (hi < n && ra->keys[hi] < key) {
            lo = hi + 1;
            step *= 2;
            hi = i + step;
        }
        if (hi > n)
            hi = n;
        i = lower_bound(ra->keys, lo, hi, key);
    }
    *cursor = i;
    if (i < n && ra->keys[i] == key) {
        view_of(ra, i, out);
        return 1;
    }
    out->type = 0;
    out->c = NULL;
    return 0;
}

int chunk_contains(const bm_chunk_t *ch, uint16_t low)
{
    return ch->type && container_contains(ch->c, low, ch->type);
}

/* ------------------------------------------------------ word helpers */

/* Words [w0, w1) of dst set to v. */
static inline void words_set(uint64_t *dst, uint32_t w0, uint32_t w1, uint64_t v)
{
    for (uint32_t w = w0; w < w1; w++)
        dst[w] = v;
}

/* Bits [start, last] (inclusive, 0 <= start <= last < 65536) set or cleared. */
static void range_set(uint64_t *dst, uint32_t start, uint32_t last)
{
    uint32_t w0 = start >> 6, w1 = last >> 6;
    uint64_t m0 = ~UINT64_C(0) << (start & 63);
    uint64_t m1 = ~UINT64_C(0) >> (63 - (last & 63));
    if (w0 == w1) {
        dst[w0] |= m0 & m1;
        return;
    }
    dst[w0] |= m0;
    words_set(dst, w0 + 1, w1, ~UINT64_C(0));
    dst[w1] |= m1;
}

static void range_clear(uint64_t *dst, uint32_t start, uint32_t last)
{
    uint32_t w0 = start >> 6, w1 = last >> 6;
    uint64_t m0 = ~UINT64_C(0) << (start & 63);
    uint64_t m1 = ~UINT64_C(0) >> (63 - (last & 63));
    if (w0 == w1) {
        dst[w0] &= ~(m0 & m1);
        return;
    }
    dst[w0] &= ~m0;
    words_set(dst, w0 + 1, w1, 0);
    dst[w1] &= ~m1;
}

/* ------------------------------------------------ container -> dense */

void chunk_load(const bm_chunk_t *ch, uint64_t *dst)
{
    switch (ch->type) {
    case BITSET_CONTAINER_TYPE_CODE:
        dense_copy(dst, ((const bitset_container_t *)ch->c)->array);
        return;
    case ARRAY_CONTAINER_TYPE_CODE: {
        const array_container_t *a = ch->c;
        dense_zero(dst);
        for (int32_t k = 0; k < a->cardinality; k++)
            dst[a->array[k] >> 6] |= UINT64_C(1) << (a->array[k] & 63);
        return;
    }
    case RUN_CONTAINER_TYPE_CODE: {
        const run_container_t *r = ch->c;
        dense_zero(dst);
        for (int32_t k = 0; k < r->n_runs; k++)
            range_set(dst, r->runs[k].value, (uint32_t)r->runs[k].value + r->runs[k].length);
        return;
    }
    default:
        dense_zero(dst);
        return;
    }
}

void chunk_or(const bm_chunk_t *ch, uint64_t *dst)
{
    switch (ch->type) {
    case BITSET_CONTAINER_TYPE_CODE:
        dense_or(dst, ((const bitset_container_t *)ch->c)->array);
        return;
    case ARRAY_CONTAINER_TYPE_CODE: {
        const array_container_t *a = ch->c;
        for (int32_t k = 0; k < a->cardinality; k++)
            dst[a->array[k] >> 6] |= UINT64_C(1) << (a->array[k] & 63);
        return;
    }
    case RUN_CONTAINER_TYPE_CODE: {
        const run_container_t *r = ch->c;
        for (int32_t k = 0; k < r->n_runs; k++)
            range_set(dst, r->runs[k].value, (uint32_t)r->runs[k].value + r->runs[k].length);
        return;
    }
    default:
        return;
    }
}

void chunk_andnot(const bm_chunk_t *ch, uint64_t *dst)
{
    switch (ch->type) {
    case BITSET_CONTAINER_TYPE_CODE:
        dense_andnot(dst, ((const bitset_container_t *)ch->c)->array);
        return;
    case ARRAY_CONTAINER_TYPE_CODE: {
        const array_container_t *a = ch->c;
        for (int32_t k = 0; k < a->cardinality; k++)
            dst[a->array[k] >> 6] &= ~(UINT64_C(1) << (a->array[k] & 63));
        return;
    }
    case RUN_CONTAINER_TYPE_CODE: {
        const run_container_t *r = ch->c;
        for (int32_t k = 0; k < r->n_runs; k++)
            range_clear(dst, r->runs[k].value, (uint32_t)r->runs[k].value + r->runs[k].length);
        return;
    }
    default:
        return;
    }
}

/*
 * AND with an array: walk the sorted values word by word, keeping in each
 * touched word only the bits the array has, and zeroing the words between.
 * O(1,024 + cardinality), in place, no scratch.
 */
static void and_array(const array_container_t *a, uint64_t *dst)
{
    uint32_t next = 0; /* first word not yet decided */
    int32_t k = 0;
    while (k < a->cardinality) {
        uint32_t w = a->array[k] >> 6;
        uint64_t mask = 0;
        while (k < a->cardinality && (uint32_t)(a->array[k] >> 6) == w) {
            mask |= UINT64_C(1) << (a->array[k] & 63);
            k++;
        }
        words_set(dst, next, w, 0);
        dst[w] &= mask;
        next = w + 1;
    }
    words_set(dst, next, CP_CHUNK_WORDS, 0);
}

/* AND with runs: clear every gap between runs (and before the first and
 * after the last); bits inside runs are kept as they are. */
static void and_run(const run_container_t *r, uint64_t *dst)
{
    uint32_t next = 0; /* first bit not yet decided */
    for (int32_t k = 0; k < r->n_runs; k++) {
        uint32_t start = r->runs[k].value;
        uint32_t last = start + r->runs[k].length;
        if (start > next)
            range_clear(dst, next, start - 1);
        next = last + 1;
    }
    if (next < CP_CHUNK_BITS)
        range_clear(dst, next, CP_CHUNK_BITS - 1);
}

void chunk_and(const bm_chunk_t *ch, uint64_t *dst)
{
    switch (ch->type) {
    case BITSET_CONTAINER_TYPE_CODE:
        dense_and(dst, ((const bitset_container_t *)ch->c)->array);
        return;
    case ARRAY_CONTAINER_TYPE_CODE:
        and_array(ch->c, dst);
        return;
    case RUN_CONTAINER_TYPE_CODE:
        and_run(ch->c, dst);
        return;
    default:
        dense_zero(dst);
        return;
    }
}

uint64_t chunk_cardinality(const bm_chunk_t *ch)
{
    switch (ch->type) {
    case BITSET_CONTAINER_TYPE_CODE: {
        const bitset_container_t *b = ch->c;
        /* Lazy CRoaring operations leave -1 (unknown) until repaired. */
        if (b->cardinality >= 0)
            return (uint64_t)b->cardinality;
        return dense_popcount(b->array);
    }
    case ARRAY_CONTAINER_TYPE_CODE:
        return (uint64_t)((const array_container_t *)ch->c)->cardinality;
    case RUN_CONTAINER_TYPE_CODE: {
        const run_container_t *r = ch->c;
        uint64_t n = 0;
        for (int32_t k = 0; k < r->n_runs; k++)
            n += (uint64_t)r->runs[k].length + 1;
        return n;
    }
    default:
        return 0;
    }
}

/* ------------------------------------------------ dense -> container */

/* Number of maximal runs of ones in the chunk. */
static uint32_t count_runs(const uint64_t *words)
{
    uint32_t runs = 0;
    uint64_t carry = 0; /* top bit of the previous word */
    for (uint32_t i = 0; i < CP_CHUNK_WORDS; i++) {
        uint64_t w = words[i];
        runs += (uint32_t)__builtin_popcountll(w & ~((w << 1) | carry));
        carry = w >> 63;
    }
    return runs;
}

static void fill_array(const uint64_t *words, uint16_t *out)
{
    int32_t k = 0;
    for (uint32_t i = 0; i < CP_CHUNK_WORDS; i++) {
        uint64_t w = words[i];
        while (w) {
            out[k++] = (uint16_t)(i * 64 + (uint32_t)__builtin_ctzll(w));
            w &= w - 1;
        }
    }
}

/* Writes the runs of the chunk; `out` holds count_runs(words) entries. */
static void fill_runs(const uint64_t *words, rle16_t *out)
{
    int32_t k = 0;
    uint32_t i = 0;
    uint64_t cur = words[0];
    for (;;) {
        while (cur == 0 && i + 1 < CP_CHUNK_WORDS)
            cur = words[++i];
        if (cur == 0)
            return;
        uint32_t start = i * 64 + (uint32_t)__builtin_ctzll(cur);
        /* Fill the zeros below the run start, then find the run's end. */
        uint64_t ones = cur | (cur - 1);
        while (ones == ~UINT64_C(0) && i + 1 < CP_CHUNK_WORDS)
            ones = words[++i];
        if (ones == ~UINT64_C(0)) {
            out[k].value = (uint16_t)start;
            out[k].length = (uint16_t)(CP_CHUNK_BITS - 1 - start);
            return;
        }
        uint32_t end = i * 64 + (uint32_t)__builtin_ctzll(~ones); /* exclusive */
        out[k].value = (uint16_t)start;
        out[k].length = (uint16_t)(end - 1 - start);
        k++;
        cur = ones & (ones + 1); /* drop the run just emitted */
    }
}

/*
 * Sizes as CRoaring serialises them decide the form, as in
 * roaring_bitmap_run_optimize: runs only when strictly smaller than both
 * the array (2 bytes per value, allowed up to 4,096 values) and the bitset.
 * The containers are created with CRoaring's own constructors so that
 * roaring_bitmap_free releases them with the matching allocator.
 */
cp_status bm_append_dense(roaring_bitmap_t *bm, uint16_t key, const uint64_t *words)
{
    roaring_array_t *ra = &bm->high_low_container;
    uint64_t card = dense_popcount(words);
    if (card == 0)
        return CP_OK;
    if (ra->flags & ROARING_FLAG_FROZEN)
        return CP_EINVAL;
    if (ra->size > 0 && ra->keys[ra->size - 1] >= key)
        return CP_EINVAL;

    uint32_t nruns = count_runs(words);
    uint64_t run_bytes = 2 + 4 * (uint64_t)nruns;
    uint64_t other_bytes = card <= DEFAULT_MAX_SIZE ? 2 + 2 * card : 8192;
    void *c = NULL;
    uint8_t type;

    if (run_bytes < other_bytes) {
        run_container_t *r = run_container_create_given_capacity((int32_t)nruns);
        if (!r)
            return CP_ENOMEM;
        fill_runs(words, r->runs);
        r->n_runs = (int32_t)nruns;
        c = r;
        type = RUN_CONTAINER_TYPE_CODE;
    } else if (card <= DEFAULT_MAX_SIZE) {
        array_container_t *a = array_container_create_given_capacity((int32_t)card);
        if (!a)
            return CP_ENOMEM;
        fill_array(words, a->array);
        a->cardinality = (int32_t)card;
        c = a;
        type = ARRAY_CONTAINER_TYPE_CODE;
    } else {
        bitset_container_t *b = bitset_container_create();
        if (!b)
            return CP_ENOMEM;
        memcpy(b->array, words, CP_CHUNK_WORDS * sizeof(uint64_t));
        b->cardinality = (int32_t)card;
        c = b;
        type = BITSET_CONTAINER_TYPE_CODE;
    }

    /* ra_append grows the key/container arrays itself and, like every
     * CRoaring insertion, cannot report a failed growth; nothing we can do
     * about that short of replacing CRoaring's array management. */
    ra_append(ra, key, c, type);
    return CP_OK;
}

/* ------------------------------------------------------- validation */

/* Checks one container's internal invariants (the parts CRoaring 0.2.66
 * does not check when deserialising). */
static int container_valid(const bm_chunk_t *ch)
{
    switch (ch->type) {
    case BITSET_CONTAINER_TYPE_CODE: {
        const bitset_container_t *b = ch->c;
        uint64_t pc = dense_popcount(b->array);
        return pc > 0 && b->cardinality >= 0 && (uint64_t)b->cardinality == pc;
    }
    case ARRAY_CONTAINER_TYPE_CODE: {
        const array_container_t *a = ch->c;
        if (a->cardinality <= 0 || a->cardinality > DEFAULT_MAX_SIZE)
            return 0;
        for (int32_t k = 1; k < a->cardinality; k++)
            if (a->array[k] <= a->array[k - 1])
                return 0;
        return 1;
    }
    case RUN_CONTAINER_TYPE_CODE: {
        const run_container_t *r = ch->c;
        if (r->n_runs <= 0)
            return 0;
        int64_t prev_end = -2; /* last value of the previous run */
        for (int32_t k = 0; k < r->n_runs; k++) {
            uint32_t start = r->runs[k].value;
            uint32_t last = start + r->runs[k].length;
            /* Runs must lie in the chunk, be sorted, and neither overlap
             * nor touch (touching runs are one run written twice). */
            if (last >= CP_CHUNK_BITS || (int64_t)start <= prev_end + 1)
                return 0;
            prev_end = last;
        }
        return 1;
    }
    default:
        return 0;
    }
}

roaring_bitmap_t *bm_deserialize_safe(const void *buf, size_t len)
{
    if (!buf || len == 0)
        return NULL;
    /* The declared size must be the whole buffer: trailing garbage or a
     * truncated body means the bytes are not what was written. */
    size_t declared = roaring_bitmap_portable_deserialize_size(buf, len);
    if (declared == 0 || declared != len)
        return NULL;
    roaring_bitmap_t *bm = roaring_bitmap_portable_deserialize_safe(buf, len);
    if (!bm)
        return NULL;
    const roaring_array_t *ra = &bm->high_low_container;
    if (roaring_bitmap_portable_size_in_bytes(bm) != len)
        goto bad;
    for (int32_t i = 0; i < ra->size; i++) {
        bm_chunk_t ch;
        if (i > 0 && ra->keys[i] <= ra->keys[i - 1])
            goto bad;
        view_of(ra, i, &ch);
        if (!container_valid(&ch))
            goto bad;
    }
    return bm;
bad:
    roaring_bitmap_free(bm);
    return NULL;
}

const uint64_t *chunk_bitset_words(const bm_chunk_t *ch)
{
    if (ch->type != BITSET_CONTAINER_TYPE_CODE)
        return NULL;
    return ((const bitset_container_t *)ch->c)->array;
}
