/*
 * sys_floor.c — the hardware floor: the effective membership of every tag
 * as plain dense arrays of 64-bit words, combined with AND/OR/ANDNOT and
 * counted with popcount on one core. Nothing can count these sets faster
 * than reading the words once; crowdpack ÷ floor says how close it gets.
 *
 * The 5-term query runs as one fused loop (popcount(((a&b&c)&~d)|e)), the
 * floor proper. Other boolean queries run block by block (256 words, L1
 * resident): a tag operand is folded straight from its array, only nested
 * operators use a scratch block. Attribute and geo predicates have no
 * dense form here and are skipped. This file is built with -O3
 * -march=native: it measures this machine.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers.h"

#define BLK 256

typedef struct floor_ctx {
    uint64_t *crowd; /* TGI crowd, dense */
} floor_ctx_t;

static int is_dense(const node_t *n)
{
    if (n->k == N_AGE || n->k == N_NEAR)
        return 0;
    for (int i = 0; i < n->n; i++)
        if (!is_dense(n->kid[i]))
            return 0;
    return 1;
}

static const uint64_t *leaf(const pop_t *p, const node_t *n)
{
    return n->k == N_TAG ? p->dense[n->tag] : n->k == N_ALL ? p->all : NULL;
}

/* out[0..nw) = node over words [w0, w0+nw). */
static void eval_block(const pop_t *p, const node_t *n, uint64_t w0, size_t nw, uint64_t *out)
{
    const uint64_t *l = leaf(p, n);
    if (l) {
        memcpy(out, l + w0, nw * 8);
        return;
    }
    if (n->k == N_NOT) {
        eval_block(p, n->kid[0], w0, nw, out);
        for (size_t i = 0; i < nw; i++)
            out[i] = ~out[i] & p->all[w0 + i];
        return;
    }
    uint64_t tmp[BLK];
    eval_block(p, n->kid[0], w0, nw, out);
    for (int k = 1; k < n->n; k++) {
        const node_t *c = n->kid[k];
        const uint64_t *src = leaf(p, c);
        if (n->k == N_AND && c->k == N_NOT && leaf(p, c->kid[0])) {
            const uint64_t *s = leaf(p, c->kid[0]) + w0;
            for (size_t i = 0; i < nw; i++)
                out[i] &= ~s[i];
            continue;
        }
        if (src)
            src += w0;
        else {
            eval_block(p, c, w0, nw, tmp);
            src = tmp;
        }
        if (n->k == N_AND)
            for (size_t i = 0; i < nw; i++)
                out[i] &= src[i];
        else
            for (size_t i = 0; i < nw; i++)
                out[i] |= src[i];
    }
}

/* The fused 5-term loop, when the query has exactly that shape. */
static int five_fused(const pop_t *p, const node_t *n, uint64_t *count)
{
    if (n->k != N_OR || n->n != 2 || n->kid[0]->k != N_AND || n->kid[0]->n != 2 ||
        n->kid[1]->k != N_TAG)
        return 0;
    const node_t *abc = n->kid[0]->kid[0], *nd = n->kid[0]->kid[1];
    if (abc->k != N_AND || abc->n != 3 || nd->k != N_NOT || nd->kid[0]->k != N_TAG)
        return 0;
    for (int i = 0; i < 3; i++)
        if (abc->kid[i]->k != N_TAG)
            return 0;
    const uint64_t *a = p->dense[abc->kid[0]->tag], *b = p->dense[abc->kid[1]->tag],
                   *c = p->dense[abc->kid[2]->tag], *d = p->dense[nd->kid[0]->tag],
                   *e = p->dense[n->kid[1]->tag];
    uint64_t words = pop_words(p), sum = 0;
    for (uint64_t i = 0; i < words; i++)
        sum += (uint64_t)__builtin_popcountll(((a[i] & b[i] & c[i]) & ~d[i]) | e[i]);
    *count = sum;
    return 1;
}

static uint64_t count_node(const pop_t *p, const node_t *n, uint64_t *dense_out)
{
    uint64_t words = pop_words(p), sum = 0, buf[BLK];
    for (uint64_t w = 0; w < words; w += BLK) {
        size_t nw = words - w < BLK ? (size_t)(words - w) : BLK;
        uint64_t *out = dense_out ? dense_out + w : buf;
        eval_block(p, n, w, nw, out);
        for (size_t i = 0; i < nw; i++)
            sum += (uint64_t)__builtin_popcountll(out[i]);
    }
    return sum;
}

static const char *floor_skip(peer_sys_t *s, const query_t *q)
{
    (void)s;
    /* TGI: the crowd is materialised outside the timed loop, so any crowd
     * expression will do; the timed part is dense. */
    return q->kind == Q_TGI || is_dense(q->expr) ? NULL : "no dense form for attributes or geo";
}

/* One user against a tree, the slow obvious way: used to materialise a
 * crowd outside the timed loop (and an independent check of it). */
static int user_in(const pop_t *p, const node_t *n, uint64_t i)
{
    switch (n->k) {
    case N_ALL:
        return 1;
    case N_TAG:
        return (int)(p->dense[n->tag][i / 64] >> (i % 64) & 1);
    case N_AGE:
        return p->age[i] != INT32_MIN && p->age[i] >= n->lo && p->age[i] <= n->hi;
    case N_NEAR:
        return !isnan(p->lat[i]) &&
               peers_haversine_m(n->lat, n->lon, p->lat[i], p->lon[i]) <= n->km * 1000.0;
    case N_NOT:
        return !user_in(p, n->kid[0], i);
    case N_AND:
        for (int k = 0; k < n->n; k++)
            if (!user_in(p, n->kid[k], i))
                return 0;
        return 1;
    case N_OR:
        for (int k = 0; k < n->n; k++)
            if (user_in(p, n->kid[k], i))
                return 1;
        return 0;
    }
    return 0;
}

static int floor_prepare(peer_sys_t *s, const pop_t *p, const query_t *q, char *err, size_t errlen)
{
    floor_ctx_t *c = s->ctx;
    if (q->kind != Q_TGI)
        return 0;
    free(c->crowd);
    c->crowd = aligned_alloc(64, ((pop_words(p) * 8 + 63) / 64) * 64);
    if (!c->crowd) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memset(c->crowd, 0, pop_words(p) * 8);
    for (uint64_t i = 0; i < p->n; i++)
        if (user_in(p, q->expr, i))
            c->crowd[i / 64] |= 1ull << (i % 64);
    return 0;
}

static int floor_run(peer_sys_t *s, const pop_t *p, const query_t *q, int variant, answer_t *out,
                     char *err, size_t errlen)
{
    (void)variant; /* one way of answering each query */
    floor_ctx_t *c = s->ctx;
    uint64_t words = pop_words(p);
    memset(out, 0, sizeof *out);
    if (q->kind == Q_COUNT) {
        if (!five_fused(p, q->expr, &out->count))
            out->count = count_node(p, q->expr, NULL);
        return 0;
    }
    if (q->kind == Q_TGI) {
        for (int t = 0; t < p->ntags; t++) {
            const uint64_t *d = p->dense[t];
            uint64_t in = 0;
            for (uint64_t i = 0; i < words; i++)
                in += (uint64_t)__builtin_popcountll(d[i] & c->crowd[i]);
            answer_tgi_add(out, t, in, p->count[t]);
        }
        return 0;
    }
    /* Export: the set's ids, decoded from the words. */
    uint64_t buf[BLK];
    for (uint64_t w = 0; w < words; w += BLK) {
        size_t nw = words - w < BLK ? (size_t)(words - w) : BLK;
        eval_block(p, q->expr, w, nw, buf);
        for (size_t i = 0; i < nw; i++)
            for (uint64_t x = buf[i]; x; x &= x - 1)
                answer_id_add(out, (w + i) * 64 + (uint64_t)__builtin_ctzll(x) + 1);
    }
    (void)err;
    (void)errlen;
    return 0;
}

static void floor_measure(peer_sys_t *s, const pop_t *p)
{
    s->mem_bytes = (uint64_t)p->ntags * pop_words(p) * 8;
    s->disk_bytes = 0;
}

static void floor_close(peer_sys_t *s)
{
    floor_ctx_t *c = s->ctx;
    if (c)
        free(c->crowd);
    free(c);
    s->ctx = NULL;
}

int sys_floor_init(peer_sys_t *s, const sys_options_t *o)
{
    memset(s, 0, sizeof *s);
    s->name = "floor";
    s->ctx = calloc(1, sizeof(floor_ctx_t));
    snprintf(s->version, sizeof s->version, "dense uint64 words, -O3 -march=native, 1 core");
    snprintf(s->notes, sizeof s->notes,
             "effective membership of every tag as dense words (built from the extracted "
             "population; load time not comparable)");
    s->skip = floor_skip;
    s->prepare = floor_prepare;
    s->run = floor_run;
    s->measure = floor_measure;
    s->close = floor_close;
    (void)o;
    return s->ctx ? 0 : -1;
}
