/*
 * dense.c — the dense chunk kernels (bitmap.h, "dense kernels").
 *
 * Debian's CRoaring is built without SIMD, so the hot loops of query
 * evaluation (AND/OR/ANDNOT + popcount over 1,024-word chunks) live here.
 * They are plain loops written so that GCC vectorises them. The logic
 * kernels are compiled twice with target_clones (AVX2 and baseline SSE2);
 * the popcount kernels have their own three-way dispatch, see below. Either
 * way an ifunc resolver picks the variant for the running CPU once, at load
 * time.
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

/* Clang only builds the fuzzers: it has no optimize attribute (and
 * vectorises at -O2 anyway), and clang 14 does not emit the public symbol
 * of a target_clones function that its own file does not call, so there
 * the logic kernels are compiled once, for the baseline. */
#if defined(__clang__)
#define OPT_O3
#define OPT_O3_SCALAR
#define KERNEL
#else
#define OPT_O3 optimize("O3")
#define OPT_O3_SCALAR optimize("O3", "no-tree-vectorize")
#define KERNEL __attribute__((target_clones("avx2", "default"), OPT_O3))
#endif

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

/* ------------------------------------------------------- popcount
 *
 * The two popcount kernels are dispatched by hand (an ifunc, which is what
 * target_clones generates) because target_clones cannot name the feature
 * that matters: GCC 12 accepts "avx512vpopcntdq" only in target(), and its
 * arch= clones test the CPU model, so no arch= name selects AMD Zen 4.
 * Measured here (AMD EPYC with VPOPCNTQ), one hot chunk of floor5:
 * vectorised VPOPCNTQ 270 ns, scalar POPCNT 920 ns, baseline 2,350 ns; the
 * AVX2 clone that GCC vectorises by emulating popcount was slower than
 * scalar POPCNT, so the POPCNT variant keeps its loop scalar. Over 100M
 * users (memory-bound) all but baseline reach the same ~2.2 ms floor.
 */
/* Bodies shared by the variants; always inlined, so each variant compiles
 * them for its own target. */
static inline __attribute__((always_inline)) uint64_t popcount_n(const uint64_t *s, size_t n)
{
    uint64_t cnt = 0;
    for (size_t i = 0; i < n; i++)
        cnt += (uint64_t)__builtin_popcountll(s[i]);
    return cnt;
}

static inline __attribute__((always_inline)) uint64_t floor5_n(const uint64_t *a, const uint64_t *b,
                                                               const uint64_t *c, const uint64_t *d,
                                                               const uint64_t *e, size_t n)
{
    uint64_t cnt = 0;
    for (size_t i = 0; i < n; i++)
        cnt += (uint64_t)__builtin_popcountll(((a[i] & b[i] & c[i]) & ~d[i]) | e[i]);
    return cnt;
}

static inline __attribute__((always_inline)) uint64_t or_popcount_n(const uint64_t *a,
                                                                    const uint64_t *b, size_t n)
{
    uint64_t cnt = 0;
    for (size_t i = 0; i < n; i++)
        cnt += (uint64_t)__builtin_popcountll(a[i] | b[i]);
    return cnt;
}

#define VPOPCNT_TARGET __attribute__((target("avx512f,avx512vpopcntdq"), OPT_O3))
#define POPCNT_TARGET __attribute__((target("popcnt"), OPT_O3_SCALAR))
#define BASE_TARGET __attribute__((OPT_O3))

VPOPCNT_TARGET static uint64_t popcount_vpopcnt(const uint64_t *s)
{
    return popcount_n(s, CP_CHUNK_WORDS);
}

POPCNT_TARGET static uint64_t popcount_popcnt(const uint64_t *s)
{
    return popcount_n(s, CP_CHUNK_WORDS);
}

BASE_TARGET static uint64_t popcount_base(const uint64_t *s)
{
    return popcount_n(s, CP_CHUNK_WORDS);
}

VPOPCNT_TARGET static uint64_t floor5_vpopcnt(const uint64_t *a, const uint64_t *b,
                                              const uint64_t *c, const uint64_t *d,
                                              const uint64_t *e, size_t n)
{
    return floor5_n(a, b, c, d, e, n);
}

POPCNT_TARGET static uint64_t floor5_popcnt(const uint64_t *a, const uint64_t *b, const uint64_t *c,
                                            const uint64_t *d, const uint64_t *e, size_t n)
{
    return floor5_n(a, b, c, d, e, n);
}

BASE_TARGET static uint64_t floor5_base(const uint64_t *a, const uint64_t *b, const uint64_t *c,
                                        const uint64_t *d, const uint64_t *e, size_t n)
{
    return floor5_n(a, b, c, d, e, n);
}

VPOPCNT_TARGET static uint64_t or_popcount_vpopcnt(const uint64_t *a, const uint64_t *b)
{
    return or_popcount_n(a, b, CP_CHUNK_WORDS);
}

POPCNT_TARGET static uint64_t or_popcount_popcnt(const uint64_t *a, const uint64_t *b)
{
    return or_popcount_n(a, b, CP_CHUNK_WORDS);
}

BASE_TARGET static uint64_t or_popcount_base(const uint64_t *a, const uint64_t *b)
{
    return or_popcount_n(a, b, CP_CHUNK_WORDS);
}

/* 2 = VPOPCNTQ (with the OS saving AVX-512 state; libgcc checks XCR0),
 * 1 = POPCNT, 0 = baseline. Resolvers run during relocation, before the
 * sanitizer runtimes start, so they must not be instrumented. */
__attribute__((no_sanitize_address, no_sanitize("undefined"))) static int popcount_level(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"))
        return 2;
    if (__builtin_cpu_supports("popcnt"))
        return 1;
    return 0;
}

typedef uint64_t (*popcount_fn)(const uint64_t *);
typedef uint64_t (*floor5_fn)(const uint64_t *, const uint64_t *, const uint64_t *,
                              const uint64_t *, const uint64_t *, size_t);

__attribute__((used, no_sanitize_address, no_sanitize("undefined"))) static popcount_fn
resolve_popcount(void)
{
    int level = popcount_level();
    return level == 2 ? popcount_vpopcnt : level == 1 ? popcount_popcnt : popcount_base;
}

__attribute__((used, no_sanitize_address, no_sanitize("undefined"))) static floor5_fn
resolve_floor5(void)
{
    int level = popcount_level();
    return level == 2 ? floor5_vpopcnt : level == 1 ? floor5_popcnt : floor5_base;
}

uint64_t dense_popcount(const uint64_t *src) __attribute__((ifunc("resolve_popcount")));

typedef uint64_t (*or_popcount_fn)(const uint64_t *, const uint64_t *);

__attribute__((used, no_sanitize_address, no_sanitize("undefined"))) static or_popcount_fn
resolve_or_popcount(void)
{
    int level = popcount_level();
    return level == 2 ? or_popcount_vpopcnt : level == 1 ? or_popcount_popcnt : or_popcount_base;
}

/* popcount(a | b) over one chunk without storing: the last OR of a count
 * fused into the popcount pass (eval.c). */
uint64_t dense_or_popcount(const uint64_t *a, const uint64_t *b)
    __attribute__((ifunc("resolve_or_popcount")));

/* The benchmark's hardware floor: one pass, five streams, no stores. The
 * inputs may have any alignment and length. */
uint64_t dense_floor5(const uint64_t *a, const uint64_t *b, const uint64_t *c, const uint64_t *d,
                      const uint64_t *e, size_t n) __attribute__((ifunc("resolve_floor5")));
