/*
 * fuzz_bitmap.c — libFuzzer target for the validation of stored bitmaps
 * (bm_deserialize_safe, src/bitmap/chunk.c): the bytes every bitmap read
 * from LMDB goes through before the index uses it. Contract: untrusted
 * bytes either give NULL or a bitmap whose every container keeps the
 * invariants the dense kernels rely on — keys strictly increasing, array
 * values sorted and unique, runs sorted, inside the chunk and not touching,
 * bitset cardinalities exact — so that loading each chunk densely agrees
 * with CRoaring's own count and iteration, and serialising it again gives
 * bytes that validate to the same set. Corpus: tests/fuzz/bitmap/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/bitmap.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_bitmap: %s\n", what);
    abort();
}

static _Alignas(64) uint64_t dense[CP_CHUNK_WORDS];
static _Alignas(64) uint64_t other[CP_CHUNK_WORDS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    roaring_bitmap_t *bm = bm_deserialize_safe(data, size);
    if (bm == NULL)
        return 0;
    uint64_t card = roaring_bitmap_get_cardinality(bm), sum = 0;
    int32_t n = bm_chunk_count(bm);
    uint32_t prev_key = 0;
    /* Iterating a few hundred full run chunks would take seconds per input:
     * the value-by-value comparison is for sets of up to a million. */
    int walk = card <= (1u << 20);
    roaring_uint32_iterator_t *it = roaring_create_iterator(bm);
    if (it == NULL)
        die("iterator");
    for (int32_t i = 0; i < n; i++) {
        uint16_t key = bm_chunk_key(bm, i);
        if (i > 0 && key <= prev_key)
            die("keys not increasing");
        prev_key = key;
        bm_chunk_t ch;
        bm_chunk_at(bm, i, &ch);
        chunk_load(&ch, dense);
        uint64_t pc = dense_popcount(dense);
        if (pc == 0 || pc != chunk_cardinality(&ch))
            die("chunk cardinality");
        sum += pc;
        /* The dense chunk holds exactly the values CRoaring iterates. */
        dense_zero(other);
        for (uint64_t k = 0; walk && k < pc; k++) {
            if (!it->has_value || it->current_value >> 16 != key)
                die("iteration and chunk disagree");
            uint32_t low = it->current_value & 0xFFFF;
            other[low >> 6] |= 1ull << (low & 63);
            roaring_advance_uint32_iterator(it);
        }
        for (uint32_t w = 0; walk && w < CP_CHUNK_WORDS; w++)
            if (other[w] != dense[w])
                die("dense chunk differs from the iterated values");
        dense_copy(other, dense);
        chunk_or(&ch, other);
        chunk_and(&ch, other);
        chunk_andnot(&ch, other);
        if (dense_any(other))
            die("x & ~x is not empty");
    }
    if (walk && it->has_value)
        die("values past the last chunk");
    roaring_free_uint32_iterator(it);
    if (sum != card)
        die("cardinality");
    /* Serialised again (in whatever form CRoaring picks), it validates. */
    size_t len = roaring_bitmap_portable_size_in_bytes(bm);
    char *buf = malloc(len);
    if (buf == NULL)
        die("malloc");
    if (roaring_bitmap_portable_serialize(bm, buf) != len)
        die("serialised size");
    roaring_bitmap_t *again = bm_deserialize_safe(buf, len);
    if (again == NULL || !roaring_bitmap_equals(bm, again))
        die("round trip");
    roaring_bitmap_free(again);
    free(buf);
    roaring_bitmap_free(bm);
    return 0;
}
