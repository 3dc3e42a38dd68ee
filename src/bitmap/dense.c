/*
 * dense.c — the dense chunk kernels (bitmap.h, "dense kernels").
 *
 * Debian's CRoaring is built without SIMD, so the hot loops of query
 * evaluation (AND/OR/ANDNOT + popcount over 1,024-word chunks) live here.
 * They are plain loops written so that GCC vectorises them, and each is
 * compiled several times with target_clones; the ifunc resolver picks the
 * best clone for the running CPU once, at load time:
 *
 *   arch=icelake-server  AVX-512 with VPOPCNTQ: popcount is vectorised too
 *   arch=x86-64-v3       AVX2 (+POPCNT, BMI): 256-bit logic, scalar popcnt
 *   popcnt               SSE2 logic plus the popcnt instruction
 *   default              baseline x86-64 (popcount via a bit-twiddling call)
 *
 * optimize("O3") because GCC 12's -O2 uses the "very cheap" vectoriser cost
 * model, which does not vectorise the popcount reductions at all; with it
 * the kernels are vectorised whatever the build type (Debug included), so
 * tests exercise the same code that ships.
 *
 * No __builtin_assume_aligned although bitmap.h asks for 64-byte aligned
 * buffers: container bitsets (and frozen views) are only 32-byte aligned and
 * chunk.c passes them straight in; unaligned vector loads of aligned data
 * cost nothing on the CPUs we target.
 *
 * Buffers are not declared restrict: callers may pass the same buffer as
 * source and destination (dense_and(x, x) is legal); GCC then emits a
 * cheap runtime overlap check before the vector loop.
 */
#include "bitmap/bitmap.h"

#define KERNEL                                                                            \
    __attribute__((target_clones("arch=icelake-server", "arch=x86-64-v3", "popcnt", "default"), \
                   optimize("O3")))


KERNEL void dense_zero(uint64_t *dst)
{
    uint64_t *d = dst;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        d[i] = 0;
}

KERNEL void dense_fill(uint64_t *dst)
{
    uint64_t *d = dst;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        d[i] = ~UINT64_C(0);
}

KERNEL void dense_copy(uint64_t *dst, const uint64_t *src)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        d[i] = s[i];
}

KERNEL void dense_and(uint64_t *dst, const uint64_t *src)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        d[i] &= s[i];
}

KERNEL void dense_or(uint64_t *dst, const uint64_t *src)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        d[i] |= s[i];
}

KERNEL void dense_andnot(uint64_t *dst, const uint64_t *src)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        d[i] &= ~s[i];
}

KERNEL void dense_not(uint64_t *dst, const uint64_t *universe)
{
    uint64_t *d = dst;
    const uint64_t *u = universe;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        d[i] = u[i] & ~d[i];
}

KERNEL uint64_t dense_popcount(const uint64_t *src)
{
    const uint64_t *s = src;
    uint64_t n = 0;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        n += (uint64_t)__builtin_popcountll(s[i]);
    return n;
}

/* OR-reduction rather than an early exit: branch-free and vectorised, and a
 * whole chunk is only 8 KiB, so stopping early would save little. */
KERNEL int dense_any(const uint64_t *src)
{
    const uint64_t *s = src;
    uint64_t acc = 0;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        acc |= s[i];
    return acc != 0;
}

/* The benchmark's hardware floor: one pass, five streams, no stores. The
 * inputs may have any alignment and length. */
KERNEL uint64_t dense_floor5(const uint64_t *a, const uint64_t *b, const uint64_t *c,
                             const uint64_t *d, const uint64_t *e, size_t n)
{
    uint64_t cnt = 0;
    for (size_t i = 0; i < n; i++)
        cnt += (uint64_t)__builtin_popcountll(((a[i] & b[i] & c[i]) & ~d[i]) | e[i]);
    return cnt;
}
