/*
 * plan.h — planner and evaluator of crowd expressions (DESIGN.md §5).
 *
 * plan_build() resolves the names of a tree through a resolver (so the
 * query layer needs no knowledge of how the index stores things), checks
 * value types, and orders the tree for evaluation: AND terms by estimated
 * size, `A AND NOT B` as ANDNOT, `attr != v` as exists ANDNOT value, IN as
 * OR of value bitmaps. Evaluation walks the universe chunk by chunk
 * (65,536 users) into preallocated dense buffers with the kernels of
 * bitmap.h, skips chunks where an AND term is empty, and splits chunks over
 * the evaluator's worker threads for large universes. Evaluation allocates
 * nothing per query (plan_eval allocates only the output bitmap's
 * containers).
 */
#ifndef CP_QUERY_PLAN_H
#define CP_QUERY_PLAN_H

#include <roaring/roaring.h>

#include "bitmap/bitmap.h"
#include "crowdpack.h"
#include "index/behavior.h"
#include "query/ast.h"

/* What the resolver knows of one attribute. Pointers are borrowed from the
 * index and must stay valid (unmodified) until the plan is freed. */
typedef struct plan_attr {
    cp_attr_type type;
    int32_t handle;                 /* passed back to value() */
    const roaring_bitmap_t *exists; /* users having a value */
    const bsi_t *bsi;               /* INT, TIMESTAMP */
    const geo_index_t *geo;         /* GEO */
} plan_attr_t;

typedef struct plan_resolver {
    void *ctx;
    const roaring_bitmap_t *universe; /* live users; NOT complements within it */
    /* Effective members of a tag (descendants included). CP_ENOTFOUND if unknown. */
    cp_status (*tag)(void *ctx, const char *path, const roaring_bitmap_t **out);
    /* Members of a crowd. CP_ENOTFOUND if unknown. */
    cp_status (*crowd)(void *ctx, const char *name, const roaring_bitmap_t **out);
    /* An attribute by name; name NULL = the default geo attribute (for
     * near() without a name). CP_ENOTFOUND if unknown. */
    cp_status (*attr)(void *ctx, const char *name, plan_attr_t *out);
    /* ENUM/STRING/BOOL: users whose value equals v (bool: "true"/"false").
     * NULL when no user has that value (an empty set, not an error). */
    const roaring_bitmap_t *(*value)(void *ctx, int32_t attr_handle, const char *v, size_t len);
    /*
     * did(): resolves an event and its property filters to a behaviour
     * series. Filter values come as text: strings as they are, integers in
     * decimal, booleans "true" / "false" (what beh_record_event must have
     * been given). Returns CP_OK with *beh (borrowed, unmodified until the
     * plan is freed) and *series — BEH_NO_SERIES when the event is known but
     * nobody ever did that combination; CP_ENOTFOUND for an unknown event;
     * CP_EINVAL with *bad = i when filters[i] is not an indexed property of
     * the event. beh_resolve() does all but the indexed-property check.
     * NULL: every did() is an unknown event.
     */
    cp_status (*did)(void *ctx, const char *event, const beh_prop_t *filters, size_t nfilters,
                     const beh_t **beh, uint32_t *series, size_t *bad);
    /* The day did() windows end on (`last 30d` = the 30 days up to and
     * including it; every window is cut there), in days since 1970-01-01
     * UTC. 0 or INT32_MIN: the current UTC day. */
    int32_t as_of_day;
    /*
     * Segment groups (group:ID, group.TRAIT = / != / IN). trait NULL: the
     * members of group `name`. trait set: the members of every group whose
     * trait `trait` equals one of values[0..nvalues) (negate 0), or has the
     * trait with a value equal to none of them (negate 1). Values and
     * traits compare as text: strings as they are, integers in decimal,
     * reals as fmt_double prints them, booleans "true" / "false".
     * CP_ENOTFOUND for an unknown group, or a trait no group has. *out is a
     * new bitmap owned by the caller (the plan frees it). NULL: every group
     * predicate is CP_ENOTFOUND.
     */
    cp_status (*group)(void *ctx, const char *name, const char *trait, int negate,
                       const char *const *values, const size_t *lens, size_t nvalues,
                       roaring_bitmap_t **out);
    /*
     * STARTS WITH: ORs into `out` the users of every value of the
     * ENUM/STRING attribute whose text begins with the len bytes of
     * `prefix` (bytes compared as they are, as value() compares). CP_ENOMEM.
     * NULL: STARTS WITH is not supported by this resolver.
     */
    cp_status (*prefix)(void *ctx, int32_t attr_handle, const char *prefix, size_t len,
                        roaring_bitmap_t *out);
    /*
     * did() sum(prop): the day-sum series of `prop` for `event`
     * (beh_sum_series_key: *pos the positive parts, *neg the negative,
     * each BEH_NO_SERIES when never recorded) and the fixed-point scale of
     * the values. CP_ENOTFOUND for an unknown event, CP_EINVAL when no sum
     * measure of the event sums `prop`. NULL: sum() is not supported.
     */
    cp_status (*did_sum)(void *ctx, const char *event, const char *prop, const beh_t **beh,
                         uint32_t *pos, uint32_t *neg, int *scale);
} plan_resolver_t;

typedef struct plan plan_t;

/* Worker threads and scratch buffers shared by all queries of a database.
 * Thread-safe: many threads may evaluate plans at once. */
typedef struct eval_engine eval_engine_t;

/* threads <= 0: one per CPU. NULL on ENOMEM. */
eval_engine_t *eval_engine_create(int threads);
void eval_engine_free(eval_engine_t *e); /* NULL fine; joins workers */

/*
 * Resolves and plans `root`. Unknown tags, crowds and attributes are
 * CP_ENOTFOUND, wrong value types CP_ETYPE, both with err->line/column of
 * the offending node and a message naming it; did() on an unknown event is
 * CP_ENOTFOUND, a filter on a property that is not indexed CP_EINVAL. Materialises what cannot be
 * evaluated chunk-wise (near()) into bitmaps owned by the plan.
 * On success *out is owned by the caller: plan_free().
 */
cp_status plan_build(const expr_node_t *root, const plan_resolver_t *r, plan_t **out,
                     cp_error_t *err);
void plan_free(plan_t *p); /* NULL fine */

/* Estimated result size (upper bound) used for ordering. */
uint64_t plan_estimate(const plan_t *p);

cp_status plan_count(const plan_t *p, eval_engine_t *e, uint64_t *count);
/* out (empty on entry) receives the members. */
cp_status plan_eval(const plan_t *p, eval_engine_t *e, roaring_bitmap_t *out);

#endif /* CP_QUERY_PLAN_H */
