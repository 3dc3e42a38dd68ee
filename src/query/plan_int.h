/*
 * plan_int.h — the private side of plan.h, shared by plan.c and
 * plan_node.c (the planner) and eval.c (the chunked evaluator), and by the
 * planner's tests.
 *
 * A plan is a tree of pnode_t built in the plan's arena. After
 * plan_build() it is immutable, so any number of threads may evaluate it
 * at once; everything that changes during a scan (bm_chunk_find cursors,
 * dense buffers) lives in per-thread scratch owned by the eval_engine.
 *
 * Shape invariants established by the planner (eval.c relies on them):
 *  - the root is NULL (the empty set) or a PN_AND;
 *  - a PN_AND has npos >= 1 positive children, sorted by estimate
 *    (smallest first), followed by nkids - npos negative children that are
 *    subtracted (ANDNOT) from the running result;
 *  - a PN_OR has nkids >= 2 children, none of them PN_OR;
 *  - no PN_EMPTY node appears below the root (folded away);
 *  - the root AND includes the universe among its positive terms, so
 *    every result is clipped to the live users.
 */
#ifndef CP_QUERY_PLAN_INT_H
#define CP_QUERY_PLAN_INT_H

#include "query/plan.h"
#include "util/util.h"

typedef enum pnode_kind {
    PN_EMPTY = 1, /* the empty set (only during planning) */
    PN_ALL,       /* the universe; evaluated like PN_BITMAP over it */
    PN_BITMAP,    /* a borrowed or plan-owned bitmap */
    PN_RANGE,     /* users whose BSI value is in [lo, hi] */
    PN_AND,       /* kids[0..npos) AND ... ANDNOT kids[npos..nkids) */
    PN_OR,        /* kids[0..nkids) */
    PN_DID,       /* users whose count over a behaviour window satisfies cmp k */
} pnode_kind;

typedef struct pnode pnode_t;
struct pnode {
    pnode_kind kind;
    uint64_t est; /* upper bound of the size (for ordering) */
    int height;   /* 0 for leaves; buffers needed below this node */
    /* PN_ALL, PN_BITMAP */
    const roaring_bitmap_t *bm;
    int32_t slot; /* index of this leaf's cursor in the scratch */
    /* PN_RANGE */
    const bsi_t *bsi;
    int64_t lo, hi;
    /* PN_DID (may set bits of users outside the universe: the root clips) */
    beh_window_t win;
    beh_cmp cmp;
    uint64_t k;
    /* PN_AND, PN_OR */
    pnode_t **kids;
    uint32_t nkids, npos;
};

struct plan {
    arena_t arena; /* every pnode and kid array */
    pnode_t *root; /* NULL = empty result */
    const roaring_bitmap_t *universe;
    const roaring_bitmap_t **leaves; /* slot -> bitmap, for cursor setup */
    int32_t nleaves;
    int height;               /* root height: scratch buffers = height + 1 */
    roaring_bitmap_t **owned; /* materialised near() results (malloc) */
    size_t beh_words;         /* scratch words of the widest PN_DID (0: none) */
    size_t nowned, owned_cap;
};

/* Test hook: queries whose universe has more than `min_chunks` chunks are
 * split over the engine's threads (default 32, about 2M users). */
void eval_engine_set_split(eval_engine_t *e, int32_t min_chunks);

/* Number of scratch sets the engine has allocated so far (for tests that
 * check that nothing is allocated per query after warm-up). */
size_t eval_engine_scratch_count(eval_engine_t *e);

/* The plan in a compact prefix form for tests and EXPLAIN, e.g.
 * "and(bm#12, range[18,30], -bm#3)". Caller frees with free(). */
char *plan_describe(const plan_t *p);

#endif /* CP_QUERY_PLAN_INT_H */
