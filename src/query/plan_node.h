/*
 * plan_node.h — private to the planner (plan.c, plan_node.c): the state a
 * plan is built in, and the node constructors of plan_node.c. Every
 * constructor allocates in the plan's arena, computes the node's estimate
 * and height, and applies the rewrite rules (folding, flattening,
 * ordering); errors carry the planner's message in b->err.
 */
#ifndef CP_QUERY_PLAN_NODE_H
#define CP_QUERY_PLAN_NODE_H

#include "query/plan_int.h"

/* A growable array of nodes (malloc'ed: freed with plan__nvec_free). */

typedef struct nvec {
    pnode_t **v;
    size_t n, cap;
} nvec_t;

/* One plan_build call: the plan being built, the resolver, where errors
 * go, and the universe's size (the bound of every estimate). */

typedef struct builder {
    plan_t *p;
    const plan_resolver_t *r;
    cp_error_t *err;
    uint64_t ucard; /* universe cardinality */
} builder_t;

/* A bitmap leaf (the universe included): bitmap nodes carry a cursor slot. */
static inline int plan__is_leaf(const pnode_t *n)
{
    return n->kind == PN_ALL || n->kind == PN_BITMAP;
}

/* Appends n (CP_ENOMEM, without a message). */
cp_status plan__nvec_push(nvec_t *v, pnode_t *n);
void plan__nvec_free(nvec_t *v);
/* A zeroed node of `kind` in the plan's arena (slot -1); NULL on ENOMEM. */
pnode_t *plan__node_new(builder_t *b, pnode_kind kind);
/* CP_ENOMEM with the planner's message. */
cp_status plan__oom(builder_t *b);

/* Leaves: the empty set, the universe, a bitmap borrowed or owned by the
 * plan (NULL or empty: the empty set), users whose value is in [lo, hi]. */
cp_status plan__mk_empty(builder_t *b, pnode_t **out);
cp_status plan__mk_all(builder_t *b, pnode_t **out);
cp_status plan__mk_bitmap(builder_t *b, const roaring_bitmap_t *bm, pnode_t **out);
cp_status plan__mk_range(builder_t *b, const bsi_t *bsi, int64_t lo, int64_t hi, pnode_t **out);

/* Adds n to an AND being assembled as a positive or negative term,
 * splicing nested ANDs, NOT OR (De Morgan) and NOT NOT. CP_ENOMEM. */
cp_status plan__and_add(nvec_t *pos, nvec_t *neg, pnode_t *n, int positive);
/* pos[0] AND pos[1] ... ANDNOT neg[0] ...; the vectors stay the caller's. */
cp_status plan__mk_and(builder_t *b, nvec_t *pos, nvec_t *neg, pnode_t **out);
/* in[0] OR in[1] ...; the vector stays the caller's. */
cp_status plan__mk_or(builder_t *b, nvec_t *in, pnode_t **out);
/* The universe ANDNOT x. */
cp_status plan__mk_not(builder_t *b, pnode_t *x, pnode_t **out);
/* a ANDNOT x. */
cp_status plan__mk_andnot(builder_t *b, pnode_t *a, pnode_t *x, pnode_t **out);
/* The root over x: an AND including the universe; *out NULL when x is
 * the empty set. */
cp_status plan__make_root(builder_t *b, pnode_t *x, pnode_t **out);

#endif /* CP_QUERY_PLAN_NODE_H */
