/*
 * fused.c — one-pass kernels for AND terms whose chunks are all bitsets.
 *
 * Evaluating `A AND B AND C AND NOT D` term by term reads and writes the
 * 8 KiB destination once per term; on dense data the chunk is then bound
 * by those extra passes, not by reading the sources. Fusing the terms into
 * one pass (one store per word) is what brings the evaluator close to the
 * hardware floor (docs/benchmarks.md). Up to 4 positive and 2 negative
 * terms go in one pass; more terms take extra passes.
 */
#include "bitmap/bitmap.h"

#if defined(__clang__)
#define FUSED_KERNEL
#else
#define FUSED_KERNEL __attribute__((target_clones("avx2", "default"), optimize("O3")))
#endif

/* NP positive (1..4) and NN negative (0..2) sources as compile-time
 * constants, so each instance is a branch-free loop GCC vectorises. */
#define FUSED_BODY(NP, NN)                                                                         \
    do {                                                                                           \
        const uint64_t *p0 = p[0], *p1 = p[NP > 1 ? 1 : 0], *p2 = p[NP > 2 ? 2 : 0],               \
                       *p3 = p[NP > 3 ? 3 : 0];                                                    \
        const uint64_t *n0 = NN > 0 ? n[0] : p0, *n1 = NN > 1 ? n[1] : p0;                         \
        for (size_t i = 0; i < CP_CHUNK_WORDS; i++) {                                              \
            uint64_t v = p0[i];                                                                    \
            if (NP > 1)                                                                            \
                v &= p1[i];                                                                        \
            if (NP > 2)                                                                            \
                v &= p2[i];                                                                        \
            if (NP > 3)                                                                            \
                v &= p3[i];                                                                        \
            if (NN > 0)                                                                            \
                v &= ~n0[i];                                                                       \
            if (NN > 1)                                                                            \
                v &= ~n1[i];                                                                       \
            dst[i] = v;                                                                            \
        }                                                                                          \
    } while (0)

FUSED_KERNEL static void fused_pass(uint64_t *dst, const uint64_t *const *p, int np,
                                    const uint64_t *const *n, int nn)
{
    switch (np * 3 + nn) {
    case 1 * 3 + 0:
        FUSED_BODY(1, 0);
        break;
    case 1 * 3 + 1:
        FUSED_BODY(1, 1);
        break;
    case 1 * 3 + 2:
        FUSED_BODY(1, 2);
        break;
    case 2 * 3 + 0:
        FUSED_BODY(2, 0);
        break;
    case 2 * 3 + 1:
        FUSED_BODY(2, 1);
        break;
    case 2 * 3 + 2:
        FUSED_BODY(2, 2);
        break;
    case 3 * 3 + 0:
        FUSED_BODY(3, 0);
        break;
    case 3 * 3 + 1:
        FUSED_BODY(3, 1);
        break;
    case 3 * 3 + 2:
        FUSED_BODY(3, 2);
        break;
    case 4 * 3 + 0:
        FUSED_BODY(4, 0);
        break;
    case 4 * 3 + 1:
        FUSED_BODY(4, 1);
        break;
    default:
        FUSED_BODY(4, 2);
        break;
    }
}

void dense_and_fused(uint64_t *dst, const uint64_t *const *pos, int np, const uint64_t *const *neg,
                     int nn)
{
    int p1 = np < 4 ? np : 4, n1 = nn < 2 ? nn : 2;
    fused_pass(dst, pos, p1, neg, n1);
    for (int i = p1; i < np; i++)
        dense_and(dst, pos[i]);
    for (int i = n1; i < nn; i++)
        dense_andnot(dst, neg[i]);
}
