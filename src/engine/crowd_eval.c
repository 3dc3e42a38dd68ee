/* crowd_eval.c — evaluating crowds: one crowd's expression, every dynamic
 * crowd in dependency order after a write, and crowd members at open. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"

/* ------------------------------------------------------------ evaluation */

/* Parses a crowd's stored canonical text and evaluates it. */
cp_status eval_crowd(cp_db_t *db, const crowd_rec_t *c, roaring_bitmap_t **out, cp_error_t *err)
{
    expr_t *e = NULL;
    cp_status rc = db_parse_text(c->expr, &e, err);
    /* A crowd made as of a day stays a view of that day. */
    if (rc == CP_OK)
        rc = db_eval_tree_as_of(db, expr_root(e), c->as_of_day, out, err);
    expr_free(e);
    if (rc)
        error_prefix(err, "crowd \"%s\": ", c->name);
    return rc;
}

cp_status crowds_eval_one(cp_db_t *db, const crowd_rec_t *c, roaring_bitmap_t **out,
                          cp_error_t *err)
{
    return eval_crowd(db, c, out, err);
}

static void topo_visit(cp_db_t *db, const crowd_rec_t *c, uint8_t *mark, const crowd_rec_t **order,
                       size_t *n, int depth)
{
    if (mark[c->id] || depth > (int)CROWD_MAX_COUNT)
        return;
    mark[c->id] = 1; /* in progress; cycles cannot exist but must not loop */
    for (size_t i = 0; i < c->ncrowd_refs; i++) {
        const crowd_rec_t *d = crowd_set_find(&db->crowds, c->crowd_refs[i]);
        if (d)
            topo_visit(db, d, mark, order, n, depth + 1);
    }
    order[(*n)++] = c;
}

static cp_status reeval_dynamic(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    size_t total = db->crowds.n, n = 0;
    int any = 0;
    for (size_t i = 0; i < total; i++)
        any |= db->crowds.items[i]->kind == CP_CROWD_DYNAMIC;
    if (!any)
        return CP_OK;
    const crowd_rec_t **order = malloc(total * sizeof *order);
    uint8_t *mark = calloc(db->crowds.next_id + 1, 1);
    cp_status rc = CP_OK;
    if (order == NULL || mark == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory re-evaluating crowds");
        goto out;
    }
    for (size_t i = 0; i < total; i++)
        topo_visit(db, db->crowds.items[i], mark, order, &n, 0);
    int64_t now = time_now_ms();
    for (size_t i = 0; i < n && rc == CP_OK; i++) {
        crowd_rec_t *c = (crowd_rec_t *)order[i];
        if (c->kind != CP_CROWD_DYNAMIC || c->frozen)
            continue;
        roaring_bitmap_t *bm = NULL;
        if ((rc = eval_crowd(db, c, &bm, err)))
            break;
        const roaring_bitmap_t *old = index_crowd(db->ix, c->id);
        if (old && roaring_bitmap_equals(old, bm)) {
            index_bm_free(bm);
            continue;
        }
        c->size = roaring_bitmap_get_cardinality(bm);
        c->version++;
        c->updated = now;
        if (index_crowd_set(db->ix, c->id, bm)) {
            index_bm_free(bm);
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            break;
        }
        if (crowd_history_note(c, now, 1)) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            break;
        }
        rc = crowd_store_put(txn, c, err);
    }
out:
    free(order);
    free(mark);
    return rc;
}

/*
 * A crowd's record says how many members it has, but members also leave
 * outside this file: a deleted user, or one absorbed by a merge, is taken
 * out of every crowd bitmap by the index (static crowds included), and a
 * dynamic crowd whose re-evaluation finds the bitmap already equal to its
 * answer does not rewrite its record. So after every write that changed
 * data, each record whose size differs from its members is brought back
 * to them (a new version: the members did change).
 */
static cp_status sync_sizes(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    int64_t now = time_now_ms();
    for (size_t i = 0; i < db->crowds.n; i++) {
        crowd_rec_t *c = db->crowds.items[i];
        const roaring_bitmap_t *bm = index_crowd(db->ix, c->id);
        uint64_t size = bm ? roaring_bitmap_get_cardinality(bm) : 0;
        if (size == c->size)
            continue;
        c->size = size;
        c->version++;
        c->updated = now;
        cp_status rc = crowd_store_put(txn, c, err);
        if (rc)
            return rc;
    }
    return CP_OK;
}

cp_status crowds_reeval_dynamic(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    cp_status rc = reeval_dynamic(db, txn, err);
    return rc ? rc : sync_sizes(db, txn, err);
}

cp_status crowds_load_members(cp_db_t *db, cp_error_t *err)
{
    for (size_t i = 0; i < db->crowds.n; i++) {
        crowd_rec_t *c = db->crowds.items[i];
        const roaring_bitmap_t *bm = index_crowd(db->ix, c->id);
        if (bm == NULL) {
            /* An empty crowd has no chunks on disk. */
            roaring_bitmap_t *empty = roaring_bitmap_create();
            if (empty == NULL || index_crowd_set(db->ix, c->id, empty)) {
                index_bm_free(empty);
                return CP_ERR(err, CP_ENOMEM, "out of memory loading crowd \"%s\"", c->name);
            }
            bm = empty;
        }
        /* The members are the truth; a record written before a light
         * (event) commit took members out may lag them until the next
         * checkpoint, and a crash in between leaves it so. */
        c->size = roaring_bitmap_get_cardinality(bm);
    }
    return CP_OK;
}
