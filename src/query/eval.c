/*
 * eval.c — the chunked evaluator of plans and the engine of worker
 * threads and scratch buffers it runs on (DESIGN.md §5).
 *
 * A query walks the chunk keys of the universe in increasing order. Per
 * chunk the plan is evaluated into a dense buffer of 1,024 words:
 *
 *  - an AND first looks up the containers of its positive bitmap leaves;
 *    if any is absent the chunk is empty and nothing else is done. Then it
 *    loads its smallest term and applies the others in place with
 *    chunk_and / chunk_andnot (bitmap leaves, no copy) or through a
 *    temporary buffer (ranges on a BSI, sub-expressions), checking for an
 *    empty running result before each expensive term;
 *  - an OR loads its first present term and ORs the others in;
 *  - a did() term sums the counts of its window's days for the chunk
 *    (beh_window_chunk, with its accumulator in the scratch);
 *  - the count is the sum of the per-chunk popcounts, plan_eval appends
 *    every non-empty chunk to the output bitmap.
 *
 * Everything mutable during a scan (bm_chunk_find cursors, the container
 * views found, the buffer stack — one buffer per level of the plan — and
 * BSI scratch) is in a scratch_t that a thread takes from the engine's
 * free list, so one plan can be evaluated by many threads at once. Scratch
 * sets are allocated on first need, grown when a deeper or wider plan
 * arrives, and kept: after warm-up a query allocates nothing but its
 * output.
 *
 * A universe of more than `split_min` chunks (default 32, ~2M users) is
 * cut into contiguous chunk ranges, one per thread of the engine; the
 * calling thread takes ranges too, so a query completes even when every
 * worker is busy with other queries. Partial counts are summed; partial
 * bitmaps cover disjoint increasing key ranges and are merged in order.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "query/plan_int.h"

#define EVAL_MAX_THREADS 64
#define EVAL_DEFAULT_SPLIT 32

typedef struct scratch scratch_t;
struct scratch {
    scratch_t *next;
    uint64_t *bufs; /* nbufs * CP_CHUNK_WORDS, 64-byte aligned */
    int nbufs;
    uint64_t *bsi; /* 3 * CP_CHUNK_WORDS for bsi_range_chunk */
    uint64_t *beh; /* beh_window_chunk scratch (kept zeroed), behwords */
    size_t behwords;
    int32_t *cursors;   /* per leaf slot */
    bm_chunk_t *chunks; /* per leaf slot: the container found this chunk */
    int32_t nslots;
};

typedef struct job job_t;
struct job {
    job_t *next; /* in the engine's queue */
    const plan_t *p;
    roaring_bitmap_t **parts; /* plan_eval: output per range; NULL for counts */
    int32_t nchunks, nranges;
    int32_t claimed, done; /* under the engine mutex */
    uint64_t counts[EVAL_MAX_THREADS];
    cp_status st[EVAL_MAX_THREADS];
    pthread_cond_t done_cv;
};

struct eval_engine {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a job was queued, or stop */
    int nthreads;        /* participants per query, the caller included */
    int nworkers;
    pthread_t *workers;
    int stop;
    job_t *queue;    /* jobs with unclaimed ranges */
    scratch_t *free; /* idle scratch sets */
    size_t nscratch;
    int32_t split_min;
};

/* -------------------------------------------------------------- scratch */

static void scratch_free(scratch_t *s)
{
    if (s == NULL)
        return;
    free(s->bufs);
    free(s->bsi);
    free(s->beh);
    free(s->cursors);
    free(s->chunks);
    free(s);
}

/* Grows `s` to hold a plan of `nbufs` levels, `nslots` leaves and did()
 * terms needing `behwords` words. */
static cp_status scratch_reserve(scratch_t *s, int nbufs, int32_t nslots, size_t behwords)
{
    if (behwords > s->behwords) {
        /* Zeroed once: beh_window_chunk leaves it zeroed after every call. */
        uint64_t *w = aligned_alloc(64, behwords * sizeof(uint64_t));
        if (w == NULL)
            return CP_ENOMEM;
        memset(w, 0, behwords * sizeof(uint64_t));
        free(s->beh);
        s->beh = w;
        s->behwords = behwords;
    }
    if (s->bsi == NULL) {
        s->bsi = aligned_alloc(64, 3 * CP_CHUNK_WORDS * sizeof(uint64_t));
        if (s->bsi == NULL)
            return CP_ENOMEM;
    }
    if (nbufs > s->nbufs) {
        int n = nbufs < 8 ? 8 : nbufs;
        uint64_t *b = aligned_alloc(64, (size_t)n * CP_CHUNK_WORDS * sizeof(uint64_t));
        if (b == NULL)
            return CP_ENOMEM;
        free(s->bufs);
        s->bufs = b;
        s->nbufs = n;
    }
    if (nslots > s->nslots) {
        int32_t n = nslots < 64 ? 64 : nslots;
        int32_t *c = malloc((size_t)n * sizeof *c);
        bm_chunk_t *ch = malloc((size_t)n * sizeof *ch);
        if (c == NULL || ch == NULL) {
            free(c);
            free(ch);
            return CP_ENOMEM;
        }
        free(s->cursors);
        free(s->chunks);
        s->cursors = c;
        s->chunks = ch;
        s->nslots = n;
    }
    return CP_OK;
}

static cp_status scratch_get(eval_engine_t *e, const plan_t *p, scratch_t **out)
{
    scratch_t *s = NULL;
    if (e != NULL) {
        pthread_mutex_lock(&e->mu);
        if ((s = e->free) != NULL)
            e->free = s->next;
        pthread_mutex_unlock(&e->mu);
    }
    if (s == NULL) {
        if ((s = calloc(1, sizeof *s)) == NULL)
            return CP_ENOMEM;
        if (e != NULL) {
            pthread_mutex_lock(&e->mu);
            e->nscratch++;
            pthread_mutex_unlock(&e->mu);
        }
    }
    cp_status st = scratch_reserve(s, p->height + 1, p->nleaves, p->beh_words);
    if (st != CP_OK) {
        /* keep what was allocated for the next query */
        if (e != NULL) {
            pthread_mutex_lock(&e->mu);
            s->next = e->free;
            e->free = s;
            pthread_mutex_unlock(&e->mu);
        } else {
            scratch_free(s);
        }
        return st;
    }
    *out = s;
    return CP_OK;
}

static void scratch_put(eval_engine_t *e, scratch_t *s)
{
    if (e == NULL) {
        scratch_free(s);
        return;
    }
    pthread_mutex_lock(&e->mu);
    s->next = e->free;
    e->free = s;
    pthread_mutex_unlock(&e->mu);
}

/* ------------------------------------------------------ per chunk eval */

typedef struct ectx {
    scratch_t *s;
    uint16_t key;
    int universe_full; /* the universe's container of this chunk holds all 65,536 */
} ectx_t;

static inline uint64_t *buf_at(const ectx_t *x, int level)
{
    return x->s->bufs + (size_t)level * CP_CHUNK_WORDS;
}

static inline int leaf_find(const ectx_t *x, const pnode_t *n, bm_chunk_t *ch)
{
    return bm_chunk_find(n->bm, x->key, &x->s->cursors[n->slot], ch);
}

static int eval_node(const ectx_t *x, const pnode_t *n, uint64_t *dst, int level);

/* dst = n (n a leaf of any kind or a compound term). Returns 0 when the
 * result is known to be empty without writing dst. */
static int eval_into(const ectx_t *x, const pnode_t *n, uint64_t *dst, int level)
{
    bm_chunk_t ch;
    switch (n->kind) {
    case PN_ALL:
    case PN_BITMAP:
        if (!leaf_find(x, n, &ch))
            return 0;
        chunk_load(&ch, dst);
        return 1;
    case PN_RANGE:
        bsi_range_chunk(n->bsi, x->key, n->lo, n->hi, dst, x->s->bsi);
        return 1;
    case PN_DID:
        return beh_window_chunk(&n->win, x->key, n->cmp, n->k, dst, x->s->beh);
    default:
        return eval_node(x, n, dst, level);
    }
}

#define FUSE_MAX 8

/*
 * The dense case in one pass: when every positive term of the AND is a
 * bitmap leaf whose chunk is a bitset (a full universe chunk counts as
 * absent), and every negative term is a bitmap leaf whose chunk is a
 * bitset or absent, dst = AND(positives) & ~OR(negatives) with
 * dense_and_fused instead of one pass per term. The positive chunks were
 * already found (in x->s->chunks) by the caller. Returns 0, touching
 * nothing but cursors of negative leaves, when the AND does not qualify.
 */
static int and_fused(const ectx_t *x, const pnode_t *n, uint64_t *dst)
{
    const uint64_t *pos[FUSE_MAX], *neg[FUSE_MAX];
    int np = 0, nn = 0;
    bm_chunk_t *chunks = x->s->chunks;
    if (n->nkids > FUSE_MAX)
        return 0;
    for (uint32_t i = 0; i < n->npos; i++) {
        const pnode_t *k = n->kids[i];
        if (k->kind == PN_ALL && x->universe_full)
            continue;
        if (k->kind != PN_BITMAP && k->kind != PN_ALL)
            return 0;
        if ((pos[np] = chunk_bitset_words(&chunks[k->slot])) == NULL)
            return 0;
        np++;
    }
    if (np == 0)
        return 0;
    for (uint32_t i = n->npos; i < n->nkids; i++) {
        const pnode_t *k = n->kids[i];
        if (k->kind != PN_BITMAP && k->kind != PN_ALL)
            return 0;
    }
    /* Negative leaves are looked up once per chunk either way; keep what
     * was found so the term-by-term path can reuse it. */
    for (uint32_t i = n->npos; i < n->nkids; i++) {
        const pnode_t *k = n->kids[i];
        bm_chunk_t *ch = &chunks[k->slot];
        if (!leaf_find(x, k, ch)) {
            ch->type = 0;
            continue;
        }
        if ((neg[nn] = chunk_bitset_words(ch)) == NULL) {
            /* A negative array/run chunk: fuse the rest, apply it after. */
            continue;
        }
        nn++;
    }
    dense_and_fused(dst, pos, np, neg, nn);
    for (uint32_t i = n->npos; i < n->nkids; i++) {
        const bm_chunk_t *ch = &chunks[n->kids[i]->slot];
        if (ch->type != 0 && chunk_bitset_words(ch) == NULL)
            chunk_andnot(ch, dst);
    }
    return 1;
}

static int eval_and(const ectx_t *x, const pnode_t *n, uint64_t *dst, int level)
{
    bm_chunk_t *chunks = x->s->chunks;
    uint64_t *tmp = buf_at(x, level + 1);
    uint32_t i;

    /* A chunk that any positive bitmap term lacks is empty: decide that
     * before touching any words. */
    for (i = 0; i < n->npos; i++) {
        const pnode_t *k = n->kids[i];
        if ((k->kind == PN_BITMAP || k->kind == PN_ALL) && !leaf_find(x, k, &chunks[k->slot]))
            return 0;
    }
    if (and_fused(x, n, dst))
        return 1;
    /* The first term is loaded into dst, the others applied to it. A full
     * universe chunk is a no-op term: skip it (unless it is the only one). */
    uint32_t first = 0;
    while (first + 1 < n->npos && n->kids[first]->kind == PN_ALL && x->universe_full)
        first++;
    const pnode_t *k0 = n->kids[first];
    if (k0->kind == PN_BITMAP || k0->kind == PN_ALL) {
        if (k0->kind == PN_ALL && x->universe_full)
            dense_fill(dst);
        else
            chunk_load(&chunks[k0->slot], dst);
    } else if (!eval_into(x, k0, dst, level)) {
        return 0;
    }
    for (i = 0; i < n->npos; i++) {
        if (i == first)
            continue;
        const pnode_t *k = n->kids[i];
        if (k->kind == PN_ALL) {
            if (!x->universe_full)
                chunk_and(&chunks[k->slot], dst);
        } else if (k->kind == PN_BITMAP) {
            chunk_and(&chunks[k->slot], dst);
        } else {
            if (!dense_any(dst) || !eval_into(x, k, tmp, level + 1))
                return 0;
            dense_and(dst, tmp);
        }
    }
    for (i = n->npos; i < n->nkids; i++) {
        const pnode_t *k = n->kids[i];
        if (k->kind == PN_BITMAP || k->kind == PN_ALL) {
            bm_chunk_t ch;
            if (leaf_find(x, k, &ch))
                chunk_andnot(&ch, dst);
        } else {
            if (!dense_any(dst))
                return 0;
            if (eval_into(x, k, tmp, level + 1))
                dense_andnot(dst, tmp);
        }
    }
    return 1;
}

/* dst = OR of n's kids except kid `skip` (-1: none). Returns 0 when empty. */
static int eval_or_except(const ectx_t *x, const pnode_t *n, int64_t skip, uint64_t *dst, int level)
{
    uint64_t *tmp = buf_at(x, level + 1);
    int have = 0;
    for (uint32_t i = 0; i < n->nkids; i++) {
        if ((int64_t)i == skip)
            continue;
        const pnode_t *k = n->kids[i];
        if (k->kind == PN_BITMAP || k->kind == PN_ALL) {
            bm_chunk_t ch;
            if (!leaf_find(x, k, &ch))
                continue;
            if (have) {
                chunk_or(&ch, dst);
            } else {
                chunk_load(&ch, dst);
                have = 1;
            }
        } else if (!have) {
            have = eval_into(x, k, dst, level);
        } else if (eval_into(x, k, tmp, level + 1)) {
            dense_or(dst, tmp);
        }
    }
    return have;
}

static int eval_or(const ectx_t *x, const pnode_t *n, uint64_t *dst, int level)
{
    return eval_or_except(x, n, -1, dst, level);
}

/*
 * Counting `... OR E` where E's chunk is a bitset and the universe chunk is
 * full: OR the other terms into dst and count popcount(dst | E) in one pass
 * (dense_or_popcount) instead of an OR pass plus a popcount pass. Returns 0
 * when the chunk does not have that shape (the caller evaluates normally).
 */
static int count_or_tail(const ectx_t *x, const pnode_t *root, uint64_t *dst, uint64_t *count)
{
    if (!x->universe_full || root->kind != PN_AND || root->nkids != 2 || root->npos != 2)
        return 0;
    const pnode_t *o = root->kids[0]->kind == PN_ALL   ? root->kids[1]
                       : root->kids[1]->kind == PN_ALL ? root->kids[0]
                                                       : NULL;
    if (o == NULL || o->kind != PN_OR || o->nkids < 2)
        return 0;
    int64_t t = -1;
    for (int64_t i = (int64_t)o->nkids - 1; i >= 0; i--) {
        if (o->kids[i]->kind == PN_BITMAP) {
            t = i;
            break;
        }
    }
    if (t < 0)
        return 0;
    bm_chunk_t ch;
    if (!leaf_find(x, o->kids[t], &ch))
        return 0;
    const uint64_t *w = chunk_bitset_words(&ch);
    if (w == NULL)
        return 0;
    if (eval_or_except(x, o, t, dst, 0))
        *count += dense_or_popcount(dst, w);
    else
        *count += chunk_cardinality(&ch);
    return 1;
}

static int eval_node(const ectx_t *x, const pnode_t *n, uint64_t *dst, int level)
{
    return n->kind == PN_AND ? eval_and(x, n, dst, level) : eval_or(x, n, dst, level);
}

/* Evaluates chunks [begin, end) of the universe (indexes into its
 * container array) with scratch `s`; adds the count to *count and, if
 * `out` is given, appends the chunks to it. */
static cp_status scan(const plan_t *p, scratch_t *s, int32_t begin, int32_t end, uint64_t *count,
                      roaring_bitmap_t *out)
{
    ectx_t x = {.s = s};
    uint64_t total = 0;
    uint64_t *dst = buf_at(&x, 0);
    cp_status st = CP_OK;

    /* Cursors gallop forward (bm_chunk_find), so starting every leaf at 0
     * costs O(log n) for a range that starts mid-bitmap. */
    for (int32_t i = 0; i < p->nleaves; i++)
        s->cursors[i] = 0;
    for (int32_t i = begin; i < end; i++) {
        bm_chunk_t uch;
        bm_chunk_at(p->universe, i, &uch);
        x.key = bm_chunk_key(p->universe, i);
        x.universe_full = chunk_cardinality(&uch) == CP_CHUNK_BITS;
        if (out == NULL && count_or_tail(&x, p->root, dst, &total))
            continue;
        if (!eval_node(&x, p->root, dst, 0))
            continue;
        if (out != NULL) {
            if ((st = bm_append_dense(out, x.key, dst)) != CP_OK)
                break;
        } else {
            total += dense_popcount(dst);
        }
    }
    *count += total;
    return st;
}

/* --------------------------------------------------------------- engine */

static void job_dequeue(eval_engine_t *e, job_t *j)
{
    for (job_t **pp = &e->queue; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            return;
        }
    }
}

static void run_range(eval_engine_t *e, job_t *j, int32_t r)
{
    int32_t begin = (int32_t)((int64_t)j->nchunks * r / j->nranges);
    int32_t end = (int32_t)((int64_t)j->nchunks * (r + 1) / j->nranges);
    scratch_t *s = NULL;
    cp_status st = scratch_get(e, j->p, &s);
    if (st == CP_OK) {
        st = scan(j->p, s, begin, end, &j->counts[r], j->parts ? j->parts[r] : NULL);
        scratch_put(e, s);
    }
    j->st[r] = st;
}

/* Claims the next range of `j` (engine mutex held); -1 when none is left. */
static int32_t job_claim(eval_engine_t *e, job_t *j)
{
    if (j->claimed >= j->nranges)
        return -1;
    int32_t r = j->claimed++;
    if (j->claimed == j->nranges)
        job_dequeue(e, j);
    return r;
}

static void *worker_main(void *arg)
{
    eval_engine_t *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && e->queue == NULL)
            pthread_cond_wait(&e->work, &e->mu);
        if (e->stop)
            break;
        job_t *j = e->queue;
        int32_t r = job_claim(e, j);
        pthread_mutex_unlock(&e->mu);
        run_range(e, j, r);
        pthread_mutex_lock(&e->mu);
        if (++j->done == j->nranges)
            pthread_cond_signal(&j->done_cv);
        /* j may be gone from here on: its owner was waiting for this. */
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

eval_engine_t *eval_engine_create(int threads)
{
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    if (threads > EVAL_MAX_THREADS)
        threads = EVAL_MAX_THREADS;
    eval_engine_t *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work, NULL);
    e->nthreads = threads;
    e->split_min = EVAL_DEFAULT_SPLIT;
    if (threads > 1) {
        e->workers = calloc((size_t)threads - 1, sizeof *e->workers);
        if (e->workers == NULL) {
            eval_engine_free(e);
            return NULL;
        }
        for (int i = 0; i < threads - 1; i++) {
            if (pthread_create(&e->workers[i], NULL, worker_main, e) != 0) {
                eval_engine_free(e);
                return NULL;
            }
            e->nworkers++;
        }
    }
    return e;
}

void eval_engine_free(eval_engine_t *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->nworkers; i++)
        pthread_join(e->workers[i], NULL);
    free(e->workers);
    while (e->free) {
        scratch_t *s = e->free;
        e->free = s->next;
        scratch_free(s);
    }
    pthread_cond_destroy(&e->work);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

void eval_engine_set_split(eval_engine_t *e, int32_t min_chunks)
{
    pthread_mutex_lock(&e->mu);
    e->split_min = min_chunks < 0 ? 0 : min_chunks;
    pthread_mutex_unlock(&e->mu);
}

size_t eval_engine_scratch_count(eval_engine_t *e)
{
    pthread_mutex_lock(&e->mu);
    size_t n = e->nscratch;
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* Runs `p` over the whole universe: one range on the calling thread, or
 * one range per engine thread for large universes. */
static cp_status run(const plan_t *p, eval_engine_t *e, uint64_t *count, roaring_bitmap_t *out)
{
    roaring_bitmap_t *parts[EVAL_MAX_THREADS] = {NULL};
    cp_status st = CP_OK;
    job_t j;
    int32_t nchunks = bm_chunk_count(p->universe);
    int32_t nranges = 1;

    *count = 0;
    if (p->root == NULL || nchunks == 0)
        return CP_OK;
    if (e != NULL && e->nworkers > 0) {
        pthread_mutex_lock(&e->mu);
        int32_t split_min = e->split_min;
        pthread_mutex_unlock(&e->mu);
        if (nchunks > split_min)
            nranges = nchunks < e->nthreads ? nchunks : e->nthreads;
    }
    if (nranges == 1) {
        scratch_t *s = NULL;
        if ((st = scratch_get(e, p, &s)) != CP_OK)
            return st;
        st = scan(p, s, 0, nchunks, count, out);
        scratch_put(e, s);
        return st;
    }

    memset(&j, 0, sizeof j);
    j.p = p;
    j.nchunks = nchunks;
    j.nranges = nranges;
    if (out != NULL) {
        parts[0] = out;
        for (int32_t r = 1; r < nranges; r++)
            if ((parts[r] = roaring_bitmap_create()) == NULL) {
                st = CP_ENOMEM;
                goto out;
            }
        j.parts = parts;
    }
    pthread_cond_init(&j.done_cv, NULL);
    pthread_mutex_lock(&e->mu);
    j.next = e->queue;
    e->queue = &j;
    pthread_cond_broadcast(&e->work);
    for (;;) { /* the caller works too */
        int32_t r = job_claim(e, &j);
        if (r < 0)
            break;
        pthread_mutex_unlock(&e->mu);
        run_range(e, &j, r);
        pthread_mutex_lock(&e->mu);
        j.done++;
    }
    while (j.done < j.nranges)
        pthread_cond_wait(&j.done_cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
    pthread_cond_destroy(&j.done_cv);

    for (int32_t r = 0; r < nranges; r++) {
        *count += j.counts[r];
        if (st == CP_OK)
            st = j.st[r];
    }
    /* Ranges cover increasing, disjoint keys: OR-ing them in order only
     * appends containers. */
    for (int32_t r = 1; out != NULL && st == CP_OK && r < nranges; r++)
        roaring_bitmap_or_inplace(out, parts[r]);
out:
    for (int32_t r = 1; r < nranges; r++)
        if (parts[r] != NULL) /* CRoaring 0.2.66 does not accept NULL */
            roaring_bitmap_free(parts[r]);
    return st;
}

cp_status plan_count(const plan_t *p, eval_engine_t *e, uint64_t *count)
{
    if (p == NULL || count == NULL)
        return CP_EINVAL;
    return run(p, e, count, NULL);
}

cp_status plan_eval(const plan_t *p, eval_engine_t *e, roaring_bitmap_t *out)
{
    uint64_t ignored;
    if (p == NULL || out == NULL || !roaring_bitmap_is_empty(out))
        return CP_EINVAL;
    return run(p, e, &ignored, out);
}
