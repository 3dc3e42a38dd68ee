/*
 * plan_node.c — the nodes of a plan (plan_int.h) and the rewrite rules
 * applied as they are built: leaves that fold to the empty set or the
 * universe, ANDs flattened with their positive terms ordered by estimate
 * and their negative terms subtracted (De Morgan for NOT OR, NOT NOT
 * spliced), ORs flattened with ranges on one BSI coalesced, complements
 * against the universe, and the root that clips to the live users; then
 * the compact description tests and EXPLAIN print. What each rule is for
 * is in plan.c's header comment.
 */
#include <stdlib.h>
#include <string.h>

#include "query/plan_node.h"

cp_status plan__nvec_push(nvec_t *v, pnode_t *n)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        pnode_t **nv = realloc(v->v, cap * sizeof *nv);
        if (nv == NULL)
            return CP_ENOMEM;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = n;
    return CP_OK;
}

void plan__nvec_free(nvec_t *v)
{
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a + b < a ? UINT64_MAX : a + b;
}

pnode_t *plan__node_new(builder_t *b, pnode_kind kind)
{
    pnode_t *n = arena_alloc(&b->p->arena, sizeof *n);
    if (n != NULL) {
        n->kind = kind;
        n->slot = -1;
    }
    return n;
}

cp_status plan__oom(builder_t *b)
{
    return CP_ERR(b->err, CP_ENOMEM, "out of memory while planning the expression");
}

/* ---------------------------------------------------------------- leaves */

cp_status plan__mk_empty(builder_t *b, pnode_t **out)
{
    *out = plan__node_new(b, PN_EMPTY);
    return *out ? CP_OK : plan__oom(b);
}

cp_status plan__mk_all(builder_t *b, pnode_t **out)
{
    pnode_t *n = plan__node_new(b, PN_ALL);
    if (n == NULL)
        return plan__oom(b);
    n->bm = b->r->universe;
    n->est = b->ucard;
    *out = n;
    return CP_OK;
}

/* A borrowed (or plan-owned) bitmap; NULL or empty is the empty set. */
cp_status plan__mk_bitmap(builder_t *b, const roaring_bitmap_t *bm, pnode_t **out)
{
    uint64_t card = bm ? roaring_bitmap_get_cardinality(bm) : 0;
    if (card == 0)
        return plan__mk_empty(b, out);
    if (bm == b->r->universe)
        return plan__mk_all(b, out);
    pnode_t *n = plan__node_new(b, PN_BITMAP);
    if (n == NULL)
        return plan__oom(b);
    n->bm = bm;
    n->est = card;
    *out = n;
    return CP_OK;
}

/* Users whose value is in [lo, hi]; a range covering every int64 is the
 * exists bitmap itself (no BSI work at all). */
cp_status plan__mk_range(builder_t *b, const bsi_t *bsi, int64_t lo, int64_t hi, pnode_t **out)
{
    if (bsi == NULL || bsi->exists == NULL || lo > hi)
        return plan__mk_empty(b, out);
    uint64_t card = roaring_bitmap_get_cardinality(bsi->exists);
    if (card == 0)
        return plan__mk_empty(b, out);
    if (lo == INT64_MIN && hi == INT64_MAX)
        return plan__mk_bitmap(b, bsi->exists, out);
    pnode_t *n = plan__node_new(b, PN_RANGE);
    if (n == NULL)
        return plan__oom(b);
    n->bsi = bsi;
    n->lo = lo;
    n->hi = hi;
    n->est = card;
    *out = n;
    return CP_OK;
}

/* ------------------------------------------------------------ AND and OR */

/* Evaluation order inside an AND: smallest estimate first; on ties bitmap
 * leaves (cheap, and their absence skips a chunk) before ranges before
 * compound terms, and the universe last: its chunks are mostly full, and
 * the evaluator skips a full universe chunk entirely. */
static int kind_rank(const pnode_t *n)
{
    switch (n->kind) {
    case PN_BITMAP:
        return 0;
    case PN_RANGE:
        return 1;
    case PN_ALL:
        return 3;
    default:
        return 2;
    }
}

static int cmp_pos(const void *a, const void *b)
{
    const pnode_t *x = *(pnode_t *const *)a, *y = *(pnode_t *const *)b;
    if (x->est != y->est)
        return x->est < y->est ? -1 : 1;
    return kind_rank(x) - kind_rank(y);
}

static int height_of(pnode_t **kids, size_t n)
{
    int h = 0;
    for (size_t i = 0; i < n; i++)
        if (kids[i]->height > h)
            h = kids[i]->height;
    return h + 1;
}

/* Adds `n` to an AND being assembled, as a positive or a negative term,
 * splicing what can be spliced:
 *   pos AND(p.., -n..)    -> p.. positive, n.. negative
 *   neg OR(a, b, ..)      -> a, b, .. negative (De Morgan)
 *   neg AND(all, -x)      -> x positive (NOT NOT x) */
cp_status plan__and_add(nvec_t *pos, nvec_t *neg, pnode_t *n, int positive)
{
    cp_status st = CP_OK;
    if (n->kind == PN_AND && positive) {
        for (uint32_t i = 0; i < n->nkids && st == CP_OK; i++)
            st = plan__nvec_push(i < n->npos ? pos : neg, n->kids[i]);
        return st;
    }
    if (n->kind == PN_AND && !positive && n->npos == 1 && n->nkids == 2 &&
        n->kids[0]->kind == PN_ALL)
        return plan__and_add(pos, neg, n->kids[1], 1);
    if (n->kind == PN_OR && !positive) {
        for (uint32_t i = 0; i < n->nkids && st == CP_OK; i++)
            st = plan__and_add(pos, neg, n->kids[i], 0);
        return st;
    }
    return plan__nvec_push(positive ? pos : neg, n);
}

/* Removes repeated bitmap leaves (x AND x); O(n^2), so only for short
 * lists. Returns 1 if some leaf is in both lists (x AND NOT x = empty). */
static int dedupe_leaves(nvec_t *pos, nvec_t *neg)
{
    nvec_t *lists[2] = {pos, neg};
    for (int l = 0; l < 2; l++) {
        nvec_t *v = lists[l];
        if (v->n > 64)
            continue;
        size_t k = 0;
        for (size_t i = 0; i < v->n; i++) {
            int dup = 0;
            for (size_t j = 0; j < k && !dup; j++)
                dup =
                    plan__is_leaf(v->v[i]) && plan__is_leaf(v->v[j]) && v->v[i]->bm == v->v[j]->bm;
            if (!dup)
                v->v[k++] = v->v[i];
        }
        v->n = k;
    }
    if (pos->n <= 64 && neg->n <= 64)
        for (size_t i = 0; i < pos->n; i++)
            for (size_t j = 0; j < neg->n; j++)
                if (plan__is_leaf(pos->v[i]) && plan__is_leaf(neg->v[j]) &&
                    pos->v[i]->bm == neg->v[j]->bm)
                    return 1;
    return 0;
}

/* Builds (pos[0] AND pos[1] ...) ANDNOT neg[0] ANDNOT neg[1] ... with
 * folding. Consumes nothing: the vectors stay the caller's. */
cp_status plan__mk_and(builder_t *b, nvec_t *pos, nvec_t *neg, pnode_t **out)
{
    size_t k = 0;
    for (size_t i = 0; i < pos->n; i++) {
        if (pos->v[i]->kind == PN_EMPTY)
            return plan__mk_empty(b, out);
        if (pos->v[i]->kind != PN_ALL) /* x AND all = x (the root clips) */
            pos->v[k++] = pos->v[i];
    }
    pos->n = k;
    k = 0;
    for (size_t i = 0; i < neg->n; i++) {
        if (neg->v[i]->kind == PN_ALL)
            return plan__mk_empty(b, out);
        if (neg->v[i]->kind != PN_EMPTY)
            neg->v[k++] = neg->v[i];
    }
    neg->n = k;
    if (dedupe_leaves(pos, neg))
        return plan__mk_empty(b, out);
    if (pos->n == 0) { /* only negative terms: complement within the universe */
        pnode_t *all = NULL;
        cp_status st = plan__mk_all(b, &all);
        if (st == CP_OK && plan__nvec_push(pos, all) != CP_OK)
            st = plan__oom(b);
        if (st != CP_OK)
            return st;
    }
    if (pos->n == 1 && neg->n == 0) {
        *out = pos->v[0];
        return CP_OK;
    }
    qsort(pos->v, pos->n, sizeof *pos->v, cmp_pos);

    pnode_t *n = plan__node_new(b, PN_AND);
    if (n == NULL)
        return plan__oom(b);
    n->nkids = (uint32_t)(pos->n + neg->n);
    n->npos = (uint32_t)pos->n;
    n->kids = arena_alloc(&b->p->arena, n->nkids * sizeof *n->kids);
    if (n->kids == NULL)
        return plan__oom(b);
    memcpy(n->kids, pos->v, pos->n * sizeof *n->kids);
    if (neg->n > 0) /* neg->v may be NULL */
        memcpy(n->kids + pos->n, neg->v, neg->n * sizeof *n->kids);
    n->height = height_of(n->kids, n->nkids);
    /* The smallest positive term bounds the result. Negative terms are
     * not subtracted: a bitmap may still count users outside the universe
     * (a stale crowd), so "universe - |x|" would not be an upper bound; a
     * complement is estimated as the whole universe, which is harmless for
     * ordering because complements never stand as terms of an AND (they
     * are spliced into it as ANDNOT terms). */
    n->est = pos->v[0]->est;
    *out = n;
    return CP_OK;
}

static int cmp_range(const void *a, const void *b)
{
    const pnode_t *x = *(pnode_t *const *)a, *y = *(pnode_t *const *)b;
    if (x->bsi != y->bsi)
        return (uintptr_t)x->bsi < (uintptr_t)y->bsi ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Coalesces ranges of one BSI that overlap or touch: `age IN (1, 2, 3, 7)`
 * costs two range evaluations instead of four. */
static cp_status merge_ranges(builder_t *b, nvec_t *kids)
{
    nvec_t ranges = {0};
    cp_status st = CP_OK;
    size_t k = 0;
    for (size_t i = 0; i < kids->n; i++) {
        if (kids->v[i]->kind == PN_RANGE) {
            if ((st = plan__nvec_push(&ranges, kids->v[i])) != CP_OK)
                goto out;
        } else {
            kids->v[k++] = kids->v[i];
        }
    }
    kids->n = k;
    if (ranges.n > 1)
        qsort(ranges.v, ranges.n, sizeof *ranges.v, cmp_range);
    for (size_t i = 0; i < ranges.n;) {
        const bsi_t *bsi = ranges.v[i]->bsi;
        int64_t lo = ranges.v[i]->lo, hi = ranges.v[i]->hi;
        size_t j = i + 1;
        while (j < ranges.n && ranges.v[j]->bsi == bsi &&
               (hi == INT64_MAX || ranges.v[j]->lo <= hi + 1)) {
            if (ranges.v[j]->hi > hi)
                hi = ranges.v[j]->hi;
            j++;
        }
        pnode_t *n = ranges.v[i];
        if (j > i + 1 && (st = plan__mk_range(b, bsi, lo, hi, &n)) != CP_OK)
            goto out;
        if ((st = plan__nvec_push(kids, n)) != CP_OK)
            goto out;
        i = j;
    }
out:
    plan__nvec_free(&ranges);
    return st == CP_ENOMEM ? plan__oom(b) : st;
}

cp_status plan__mk_or(builder_t *b, nvec_t *in, pnode_t **out)
{
    nvec_t kids = {0};
    cp_status st = CP_OK;
    for (size_t i = 0; i < in->n; i++) {
        pnode_t *c = in->v[i];
        if (c->kind == PN_ALL) {
            st = plan__mk_all(b, out);
            goto out;
        }
        if (c->kind == PN_EMPTY)
            continue;
        if (c->kind == PN_OR) {
            for (uint32_t j = 0; j < c->nkids; j++)
                if ((st = plan__nvec_push(&kids, c->kids[j])) != CP_OK)
                    goto out;
        } else if ((st = plan__nvec_push(&kids, c)) != CP_OK) {
            goto out;
        }
    }
    if ((st = merge_ranges(b, &kids)) != CP_OK)
        goto out;
    if (kids.n <= 64) { /* x OR x = x */
        size_t k = 0;
        for (size_t i = 0; i < kids.n; i++) {
            int dup = 0;
            for (size_t j = 0; j < k && !dup; j++)
                dup = kids.v[i]->kind == PN_BITMAP && kids.v[j]->kind == PN_BITMAP &&
                      kids.v[i]->bm == kids.v[j]->bm;
            if (!dup)
                kids.v[k++] = kids.v[i];
        }
        kids.n = k;
    }
    for (size_t i = 0; i < kids.n; i++) {
        if (kids.v[i]->kind == PN_ALL) { /* a merged range can cover everyone */
            st = plan__mk_all(b, out);
            goto out;
        }
    }
    if (kids.n == 0) {
        st = plan__mk_empty(b, out);
        goto out;
    }
    if (kids.n == 1) {
        *out = kids.v[0];
        goto out;
    }
    pnode_t *n = plan__node_new(b, PN_OR);
    if (n == NULL || (n->kids = arena_alloc(&b->p->arena, kids.n * sizeof *n->kids)) == NULL) {
        st = CP_ENOMEM;
        goto out;
    }
    n->nkids = n->npos = (uint32_t)kids.n;
    memcpy(n->kids, kids.v, kids.n * sizeof *n->kids);
    n->height = height_of(n->kids, n->nkids);
    for (size_t i = 0; i < kids.n; i++)
        n->est = sat_add(n->est, kids.v[i]->est);
    if (n->est > b->ucard)
        n->est = b->ucard;
    *out = n;
out:
    plan__nvec_free(&kids);
    return st == CP_ENOMEM ? plan__oom(b) : st;
}

/* NOT x as "universe ANDNOT x" (with the folding of mk_and). */
cp_status plan__mk_not(builder_t *b, pnode_t *x, pnode_t **out)
{
    nvec_t pos = {0}, neg = {0};
    cp_status st = plan__and_add(&pos, &neg, x, 0);
    if (st == CP_OK)
        st = plan__mk_and(b, &pos, &neg, out);
    else
        st = plan__oom(b);
    plan__nvec_free(&pos);
    plan__nvec_free(&neg);
    return st;
}

/* a ANDNOT x, for `attr != v`. */
cp_status plan__mk_andnot(builder_t *b, pnode_t *a, pnode_t *x, pnode_t **out)
{
    nvec_t pos = {0}, neg = {0};
    cp_status st = plan__and_add(&pos, &neg, a, 1);
    if (st == CP_OK)
        st = plan__and_add(&pos, &neg, x, 0);
    if (st == CP_OK)
        st = plan__mk_and(b, &pos, &neg, out);
    else
        st = plan__oom(b);
    plan__nvec_free(&pos);
    plan__nvec_free(&neg);
    return st;
}

/* The root: an AND that includes the universe (clipping every result to
 * the live users), built without folding the universe away. */
cp_status plan__make_root(builder_t *b, pnode_t *x, pnode_t **out)
{
    if (x->kind == PN_EMPTY) {
        *out = NULL;
        return CP_OK;
    }
    pnode_t *all = NULL;
    cp_status st = plan__mk_all(b, &all);
    if (st != CP_OK)
        return st;
    pnode_t *n = plan__node_new(b, PN_AND);
    if (n == NULL)
        return plan__oom(b);
    uint32_t npos = 1, nneg = 0;
    int has_all = x->kind == PN_ALL;
    if (x->kind == PN_AND) {
        npos = x->npos;
        nneg = x->nkids - x->npos;
        for (uint32_t i = 0; i < x->npos; i++)
            has_all |= x->kids[i]->kind == PN_ALL;
    }
    n->npos = npos + !has_all;
    n->nkids = n->npos + nneg;
    if ((n->kids = arena_alloc(&b->p->arena, n->nkids * sizeof *n->kids)) == NULL)
        return plan__oom(b);
    if (x->kind == PN_AND) {
        memcpy(n->kids, x->kids, npos * sizeof *n->kids);
        memcpy(n->kids + n->npos, x->kids + npos, nneg * sizeof *n->kids);
    } else {
        n->kids[0] = x;
    }
    if (!has_all)
        n->kids[npos] = all;
    qsort(n->kids, n->npos, sizeof *n->kids, cmp_pos);
    n->height = height_of(n->kids, n->nkids);
    n->est = x->est < b->ucard ? x->est : b->ucard;
    *out = n;
    return CP_OK;
}

static cp_status describe(const pnode_t *n, buf_t *out)
{
    cp_status st = CP_OK;
    switch (n->kind) {
    case PN_EMPTY:
        return buf_printf(out, "empty");
    case PN_ALL:
        return buf_printf(out, "all");
    case PN_BITMAP:
        return buf_printf(out, "bm%llu", (unsigned long long)n->est);
    case PN_RANGE:
        return buf_printf(out, "range[%lld,%lld]", (long long)n->lo, (long long)n->hi);
    case PN_DID: {
        static const char *const ops[] = {"?", "=", "!=", "<", "<=", ">", ">="};
        return buf_printf(out, "did[%u days %s %llu]", n->win.ncells,
                          ops[(unsigned)n->cmp < 7 ? n->cmp : 0], (unsigned long long)n->k);
    }
    case PN_AND:
    case PN_OR:
        st = buf_printf(out, "%s(", n->kind == PN_AND ? "and" : "or");
        for (uint32_t i = 0; i < n->nkids && st == CP_OK; i++) {
            if (i > 0)
                st = buf_printf(out, ", ");
            if (st == CP_OK && n->kind == PN_AND && i >= n->npos)
                st = buf_printf(out, "-");
            if (st == CP_OK)
                st = describe(n->kids[i], out);
        }
        return st == CP_OK ? buf_printf(out, ")") : st;
    }
    return CP_EINTERNAL;
}

char *plan_describe(const plan_t *p)
{
    buf_t b;
    buf_init(&b, 1 << 20);
    cp_status st = p && p->root ? describe(p->root, &b) : buf_printf(&b, "empty");
    if (st != CP_OK) {
        buf_free(&b);
        return NULL;
    }
    const char *s = buf_cstr(&b);
    char *r = strdup(s);
    buf_free(&b);
    return r;
}
