/*
 * kernels.c — counting intersections of containers with dense chunks in
 * place (analytics.h, "kernels"), and the chunk-parallel counting core of
 * insight.
 *
 * Insight asks |crowd ∩ X| for thousands of X. Materialising each
 * intersection (CRoaring's and_cardinality included: it walks two
 * containers) would touch both sides per X; instead the crowd chunk is
 * loaded once into 1,024 dense words that stay in L1, and each X's
 * container is counted against it: bitsets by an AND+popcount kernel,
 * arrays by one bit test per element (branch-free), runs by popcounts of
 * word ranges. The popcount kernel is dispatched like dense.c's (an ifunc
 * choosing VPOPCNTQ, POPCNT or the baseline at load time).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analytics/analytics.h"

#if defined(__clang__)
#define OPT_O3
#define OPT_O3_SCALAR
#else
#define OPT_O3 optimize("O3")
#define OPT_O3_SCALAR optimize("O3", "no-tree-vectorize")
#endif

static inline __attribute__((always_inline)) uint64_t and_count_n(const uint64_t *a,
                                                                  const uint64_t *b)
{
    uint64_t cnt = 0;
    for (size_t i = 0; i < CP_CHUNK_WORDS; i++)
        cnt += (uint64_t)__builtin_popcountll(a[i] & b[i]);
    return cnt;
}

__attribute__((target("avx512f,avx512vpopcntdq"), OPT_O3)) static uint64_t
and_count_vpopcnt(const uint64_t *a, const uint64_t *b)
{
    return and_count_n(a, b);
}

__attribute__((target("popcnt"), OPT_O3_SCALAR)) static uint64_t and_count_popcnt(const uint64_t *a,
                                                                                  const uint64_t *b)
{
    return and_count_n(a, b);
}

__attribute__((OPT_O3)) static uint64_t and_count_base(const uint64_t *a, const uint64_t *b)
{
    return and_count_n(a, b);
}

typedef uint64_t (*and_count_fn)(const uint64_t *, const uint64_t *);

/* Runs during relocation, before sanitizer runtimes start: uninstrumented. */
__attribute__((used, no_sanitize_address, no_sanitize("undefined"))) static and_count_fn
resolve_and_count(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"))
        return and_count_vpopcnt;
    if (__builtin_cpu_supports("popcnt"))
        return and_count_popcnt;
    return and_count_base;
}

uint64_t ana_dense_and_count(const uint64_t *a, const uint64_t *b)
    __attribute__((ifunc("resolve_and_count")));

/* Bits set in d within [start, last] (0 <= start <= last < 65536). */
static uint64_t range_count(const uint64_t *d, uint32_t start, uint32_t last)
{
    uint32_t w0 = start >> 6, w1 = last >> 6;
    uint64_t m0 = ~UINT64_C(0) << (start & 63);
    uint64_t m1 = ~UINT64_C(0) >> (63 - (last & 63));
    if (w0 == w1)
        return (uint64_t)__builtin_popcountll(d[w0] & m0 & m1);
    uint64_t cnt = (uint64_t)__builtin_popcountll(d[w0] & m0);
    for (uint32_t w = w0 + 1; w < w1; w++)
        cnt += (uint64_t)__builtin_popcountll(d[w]);
    return cnt + (uint64_t)__builtin_popcountll(d[w1] & m1);
}

__attribute__((OPT_O3)) static uint64_t array_count(const uint16_t *v, int32_t n, const uint64_t *d)
{
    /* Four independent sums so the loads of the bit tests overlap. */
    uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    int32_t k = 0;
    for (; k + 4 <= n; k += 4) {
        c0 += (d[v[k] >> 6] >> (v[k] & 63)) & 1;
        c1 += (d[v[k + 1] >> 6] >> (v[k + 1] & 63)) & 1;
        c2 += (d[v[k + 2] >> 6] >> (v[k + 2] & 63)) & 1;
        c3 += (d[v[k + 3] >> 6] >> (v[k + 3] & 63)) & 1;
    }
    for (; k < n; k++)
        c0 += (d[v[k] >> 6] >> (v[k] & 63)) & 1;
    return c0 + c1 + c2 + c3;
}

uint64_t ana_chunk_and_count(const bm_chunk_t *ch, const uint64_t *d)
{
    switch (ch->type) {
    case BITSET_CONTAINER_TYPE_CODE:
        return ana_dense_and_count(((const bitset_container_t *)ch->c)->array, d);
    case ARRAY_CONTAINER_TYPE_CODE: {
        const array_container_t *a = ch->c;
        return array_count(a->array, a->cardinality, d);
    }
    case RUN_CONTAINER_TYPE_CODE: {
        const run_container_t *r = ch->c;
        uint64_t cnt = 0;
        for (int32_t k = 0; k < r->n_runs; k++)
            cnt += range_count(d, r->runs[k].value, (uint32_t)r->runs[k].value + r->runs[k].length);
        return cnt;
    }
    default:
        return 0;
    }
}

uint64_t *ana_dense_alloc(size_t n)
{
    size_t bytes = n * CP_CHUNK_WORDS * sizeof(uint64_t);
    if (n == 0 || bytes / n != CP_CHUNK_WORDS * sizeof(uint64_t))
        return NULL;
    return aligned_alloc(64, bytes);
}

int ana_threads_for(uint32_t chunks)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        cpus = 1;
    if (cpus > ANA_MAX_THREADS)
        cpus = ANA_MAX_THREADS;
    /* Below ~16 chunks (1M ordinals) a thread costs more than it saves. */
    long by_work = chunks / 16;
    if (by_work < 1)
        by_work = 1;
    return (int)(cpus < by_work ? cpus : by_work);
}

/* ------------------------------------------------------ counting core
 *
 * Loop order. The obvious order — for each chunk, load the crowd, then
 * visit every cell's container of that chunk — spends its time finding
 * containers: 1,000 cells x 153 chunks (10M users) are 153,000 searches
 * into 1,000 different key arrays, each a few cache misses, and
 * measured slower than the counting itself. So the crowd (and baseline)
 * chunks of a window of up to ANA_WINDOW chunks are made dense first
 * (1.25 MB for 10M users: it stays in L2/L3), and then each cell walks
 * its own containers in order — sequential metadata, prefetch-friendly —
 * counting each against the dense crowd chunk of the same key. Threads
 * split the cells, so no counts need merging. Windows bound the dense
 * memory for sparse ordinal spaces (64 MB per set at most).
 */
#define ANA_WINDOW 8192u

typedef struct win {
    const uint16_t *keys; /* this window's keys */
    uint32_t nkeys;
    const int32_t *slot;            /* by key: index into the dense arrays, or -1 */
    const uint64_t *cd, *bd;        /* crowd / baseline dense chunks by slot (bd NULL: none) */
    const uint8_t *have_c, *have_b; /* the set has that chunk */
    int base_bitmaps;               /* bitmap cells count the baseline too (one was given) */
} win_t;

typedef struct job {
    const win_t *w;
    ana_cell_t *cells;
    int32_t *pos; /* per cell: next container index (persists across windows) */
    size_t c0, c1;
    cp_status rc;
    int started;
} job_t;

static void *run_job(void *arg)
{
    job_t *j = arg;
    const win_t *w = j->w;
    uint16_t last = w->keys[w->nkeys - 1];
    uint64_t *buf = NULL;
    for (size_t i = j->c0; i < j->c1; i++) {
        ana_cell_t *c = &j->cells[i];
        if (c->bm) {
            int32_t n = bm_chunk_count(c->bm);
            int32_t p = j->pos[i];
            for (; p < n; p++) {
                uint16_t key = bm_chunk_key(c->bm, p);
                if (key > last)
                    break;
                int32_t s = w->slot[key];
                if (s < 0)
                    continue;
                bm_chunk_t ch;
                bm_chunk_at(c->bm, p, &ch);
                if (w->have_c[s])
                    c->n_crowd += ana_chunk_and_count(&ch, w->cd + (size_t)s * CP_CHUNK_WORDS);
                if (w->base_bitmaps && w->have_b[s])
                    c->n_base += ana_chunk_and_count(&ch, w->bd + (size_t)s * CP_CHUNK_WORDS);
            }
            j->pos[i] = p;
            continue;
        }
        /* A BSI range: built per chunk with the bit-slice kernels. */
        if (buf == NULL && (buf = ana_dense_alloc(4)) == NULL) {
            j->rc = CP_ENOMEM;
            return NULL;
        }
        for (uint32_t k = 0; k < w->nkeys; k++) {
            int32_t s = w->slot[w->keys[k]];
            if (!w->have_c[s] && !(w->bd && w->have_b[s]))
                continue;
            bsi_range_chunk(c->bsi, w->keys[k], c->lo, c->hi, buf, buf + CP_CHUNK_WORDS);
            if (w->have_c[s])
                c->n_crowd += ana_dense_and_count(buf, w->cd + (size_t)s * CP_CHUNK_WORDS);
            if (w->have_b[s])
                c->n_base += ana_dense_and_count(buf, w->bd + (size_t)s * CP_CHUNK_WORDS);
        }
    }
    free(buf);
    return NULL;
}

/* Sorted union of the chunk keys of a and b (b may be NULL). */
static uint16_t *union_keys(const roaring_bitmap_t *a, const roaring_bitmap_t *b, uint32_t *n)
{
    int32_t na = bm_chunk_count(a), nb = b ? bm_chunk_count(b) : 0;
    uint16_t *k = malloc(((size_t)na + (size_t)nb + 1) * sizeof *k);
    if (k == NULL)
        return NULL;
    int32_t i = 0, j = 0;
    uint32_t o = 0;
    while (i < na || j < nb) {
        uint16_t ka = i < na ? bm_chunk_key(a, i) : 0, kb = j < nb ? bm_chunk_key(b, j) : 0;
        if (j >= nb || (i < na && ka < kb)) {
            k[o++] = ka;
            i++;
        } else if (i >= na || kb < ka) {
            k[o++] = kb;
            j++;
        } else {
            k[o++] = ka;
            i++;
            j++;
        }
    }
    *n = o;
    return k;
}

/* Loads the window's chunks of `bm` into dense slots; have[s] = present. */
static void load_window(const roaring_bitmap_t *bm, const uint16_t *keys, uint32_t n,
                        uint64_t *dense, uint8_t *have)
{
    int32_t cur = 0;
    for (uint32_t k = 0; k < n; k++) {
        bm_chunk_t ch;
        have[k] = (uint8_t)bm_chunk_find(bm, keys[k], &cur, &ch);
        chunk_load(&ch, dense + (size_t)k * CP_CHUNK_WORDS);
    }
}

cp_status ana_count_cells(const roaring_bitmap_t *crowd, const roaring_bitmap_t *baseline,
                          const roaring_bitmap_t *universe, ana_cell_t *cells, size_t n,
                          int threads)
{
    cp_status rc = CP_OK;
    job_t *jobs = NULL;
    pthread_t *tids = NULL;
    int32_t *slot = NULL, *pos = NULL;
    uint64_t *cd = NULL, *bd = NULL;
    uint8_t *have_c = NULL, *have_b = NULL;
    int has_bsi = 0;
    for (size_t i = 0; i < n; i++) {
        cells[i].n_crowd = cells[i].n_base = 0;
        has_bsi |= cells[i].bm == NULL;
    }
    /* Bitmap cells need only the crowd's chunks (and the baseline's, when
     * one is given); BSI ranges need every chunk of the baseline. */
    const roaring_bitmap_t *bset = baseline ? baseline : universe;
    const roaring_bitmap_t *other = baseline ? baseline : has_bsi ? universe : NULL;
    uint32_t nkeys = 0;
    uint16_t *keys = union_keys(crowd, other, &nkeys);
    if (keys == NULL)
        return CP_ENOMEM;
    uint32_t wmax = nkeys < ANA_WINDOW ? (nkeys ? nkeys : 1) : ANA_WINDOW;
    int need_b = baseline != NULL || has_bsi;
    if (threads < 1)
        threads = 1;
    if ((size_t)threads > n)
        threads = n ? (int)n : 1;
    slot = malloc(65536 * sizeof *slot);
    pos = calloc(n ? n : 1, sizeof *pos);
    cd = ana_dense_alloc(wmax);
    bd = need_b ? ana_dense_alloc(wmax) : NULL;
    have_c = calloc(wmax, 1);
    have_b = calloc(wmax, 1);
    jobs = calloc((size_t)threads, sizeof *jobs);
    tids = calloc((size_t)threads, sizeof *tids);
    if (!slot || !pos || !cd || (need_b && !bd) || !have_c || !have_b || !jobs || !tids) {
        rc = CP_ENOMEM;
        goto out;
    }
    for (uint32_t k = 0; k < 65536; k++)
        slot[k] = -1;
    for (uint32_t w0 = 0; w0 < nkeys && rc == CP_OK; w0 += wmax) {
        uint32_t wn = nkeys - w0 < wmax ? nkeys - w0 : wmax;
        for (uint32_t k = 0; k < wn; k++)
            slot[keys[w0 + k]] = (int32_t)k;
        load_window(crowd, keys + w0, wn, cd, have_c);
        if (need_b)
            load_window(bset, keys + w0, wn, bd, have_b);
        win_t w = {.keys = keys + w0,
                   .nkeys = wn,
                   .slot = slot,
                   .cd = cd,
                   .bd = baseline || has_bsi ? bd : NULL,
                   .have_c = have_c,
                   .have_b = have_b,
                   .base_bitmaps = baseline != NULL};
        /* BSI cells count the baseline even without an explicit one; bitmap
         * cells then take theirs from their cardinality below. */
        for (int t = 0; t < threads; t++) {
            job_t *j = &jobs[t];
            memset(j, 0, sizeof *j);
            j->w = &w;
            j->cells = cells;
            j->pos = pos;
            j->c0 = n * (size_t)t / (size_t)threads;
            j->c1 = n * (size_t)(t + 1) / (size_t)threads;
        }
        /* Job 0 runs on the caller's thread; a thread that cannot start
         * makes the caller run its job too. */
        for (int t = 1; t < threads; t++) {
            jobs[t].started = pthread_create(&tids[t], NULL, run_job, &jobs[t]) == 0;
            if (!jobs[t].started)
                run_job(&jobs[t]);
        }
        run_job(&jobs[0]);
        for (int t = 1; t < threads; t++)
            if (jobs[t].started)
                pthread_join(tids[t], NULL);
        for (int t = 0; t < threads; t++)
            if (jobs[t].rc)
                rc = jobs[t].rc;
        for (uint32_t k = 0; k < wn; k++)
            slot[keys[w0 + k]] = -1;
    }
    if (!baseline)
        for (size_t i = 0; i < n; i++)
            if (cells[i].bm)
                cells[i].n_base = roaring_bitmap_get_cardinality(cells[i].bm);
out:
    free(keys);
    free(slot);
    free(pos);
    free(cd);
    free(bd);
    free(have_c);
    free(have_b);
    free(jobs);
    free(tids);
    return rc;
}
