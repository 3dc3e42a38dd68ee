/* count.c — counts, evaluations, results and their iterators, and the
 * expression text/JSON conversions of the public API. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"

struct cp_result {
    roaring_bitmap_t *bm;
};

struct cp_iter {
    cp_db_t *db;
    store_txn_t *txn;
    store_cursor_t *cur;
    roaring_uint32_iterator_t it;
    roaring_bitmap_t *bm;   /* owned copy: the result may be freed first */
    int counted;            /* in db->iters */
    uint64_t del_gen;       /* db->del_gen when `gone` was last brought up to date */
    roaring_bitmap_t *gone; /* members of bm deleted since the iterator opened */
    char id[USERS_MAX_ID + 1];
};

/*
 * Every count and evaluation of the public API ends here (cp_count*,
 * cp_eval*, their _as_of forms, crowd creation): one place where the
 * as-of day reaches the planner, so no entry point can forget it.
 * as_of_day as db_as_of_day gives it (0 = today).
 */
static cp_status count_tree(cp_db_t *db, const expr_t *e, int32_t as_of_day, uint64_t *count,
                            cp_error_t *err)
{
    cp_status rc = db_read_begin_mem(db, err);
    if (rc)
        return rc;
    plan_resolver_t r;
    db_resolver(db, &r);
    r.as_of_day = as_of_day;
    plan_t *p = NULL;
    rc = db_check_names(db, expr_root(e), err);
    if (rc == CP_OK)
        rc = plan_build(expr_root(e), &r, &p, err);
    if (rc == CP_OK) {
        rc = plan_count(p, db->ev, count);
        if (rc)
            CP_ERR(err, rc, "counting failed: %s", cp_strerror(rc));
        else
            atomic_fetch_add(&db->queries, 1);
    }
    plan_free(p);
    db_read_end(db);
    return rc;
}

/* The tree of exactly one of `expr` (text) and `json_tree` (len bytes). */
static cp_status parse_either(const char *expr, const char *json_tree, size_t len, expr_t **out,
                              cp_error_t *err)
{
    if (json_tree != NULL)
        return db_parse_json(json_tree, len, out, err);
    return db_parse_text(expr, out, err);
}

static cp_status count_any(cp_db_t *db, const char *expr, const char *json_tree, size_t len,
                           const char *as_of, uint64_t *count, cp_error_t *err)
{
    if (count == NULL)
        return CP_ERR(err, CP_EINVAL, "count is NULL");
    *count = 0;
    int32_t day;
    expr_t *e;
    cp_status rc = db_as_of_day(as_of, &day, err);
    if (rc || (rc = parse_either(expr, json_tree, len, &e, err)))
        return rc;
    rc = count_tree(db, e, day, count, err);
    expr_free(e);
    return rc;
}

cp_status cp_count(cp_db_t *db, const char *expr, uint64_t *count, cp_error_t *err)
{
    return count_any(db, expr, NULL, 0, NULL, count, err);
}

cp_status cp_count_json(cp_db_t *db, const char *json_tree, size_t len, uint64_t *count,
                        cp_error_t *err)
{
    if (json_tree == NULL)
        return CP_ERR(err, CP_EINVAL, "no expression given");
    return count_any(db, NULL, json_tree, len, NULL, count, err);
}

cp_status cp_count_as_of(cp_db_t *db, const char *expr, const char *as_of, uint64_t *count,
                         cp_error_t *err)
{
    return count_any(db, expr, NULL, 0, as_of, count, err);
}

cp_status cp_count_json_as_of(cp_db_t *db, const char *json_tree, size_t len, const char *as_of,
                              uint64_t *count, cp_error_t *err)
{
    if (json_tree == NULL)
        return CP_ERR(err, CP_EINVAL, "no expression given");
    return count_any(db, NULL, json_tree, len, as_of, count, err);
}

static cp_status eval_any(cp_db_t *db, const char *expr, const char *json_tree, size_t len,
                          const char *as_of, cp_result_t **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    int32_t day;
    expr_t *e = NULL;
    cp_result_t *r = NULL;
    cp_status rc = db_as_of_day(as_of, &day, err);
    if (rc || (rc = parse_either(expr, json_tree, len, &e, err)))
        return rc;
    if ((r = calloc(1, sizeof *r)) == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = db_read_begin_mem(db, err)) != CP_OK)
        goto out;
    rc = db_check_names(db, expr_root(e), err);
    if (rc == CP_OK)
        rc = db_eval_tree_as_of(db, expr_root(e), day, &r->bm, err);
    db_read_end(db);
    if (rc == CP_OK) {
        *out = r;
        r = NULL;
    }
out:
    free(r);
    expr_free(e);
    return rc;
}

cp_status cp_eval(cp_db_t *db, const char *expr, cp_result_t **out, cp_error_t *err)
{
    return eval_any(db, expr, NULL, 0, NULL, out, err);
}

cp_status cp_eval_json(cp_db_t *db, const char *json_tree, size_t len, cp_result_t **out,
                       cp_error_t *err)
{
    if (json_tree == NULL)
        return CP_ERR(err, CP_EINVAL, "no expression given");
    return eval_any(db, NULL, json_tree, len, NULL, out, err);
}

cp_status cp_eval_as_of(cp_db_t *db, const char *expr, const char *as_of, cp_result_t **out,
                        cp_error_t *err)
{
    return eval_any(db, expr, NULL, 0, as_of, out, err);
}

cp_status cp_eval_json_as_of(cp_db_t *db, const char *json_tree, size_t len, const char *as_of,
                             cp_result_t **out, cp_error_t *err)
{
    if (json_tree == NULL)
        return CP_ERR(err, CP_EINVAL, "no expression given");
    return eval_any(db, NULL, json_tree, len, as_of, out, err);
}

uint64_t cp_result_count(const cp_result_t *r)
{
    return r && r->bm ? roaring_bitmap_get_cardinality(r->bm) : 0;
}

int cp_result_contains(const cp_result_t *r, uint32_t ord)
{
    return r && r->bm && roaring_bitmap_contains(r->bm, ord);
}

cp_status cp_result_ordinals(const cp_result_t *r, uint64_t offset, uint32_t *out, size_t cap,
                             size_t *n, cp_error_t *err)
{
    if (n == NULL || r == NULL || (out == NULL && cap > 0))
        return CP_ERR(err, CP_EINVAL, "cp_result_ordinals: NULL result, array or count");
    *n = 0;
    uint64_t card = r->bm ? roaring_bitmap_get_cardinality(r->bm) : 0;
    if (offset >= card || cap == 0)
        return CP_OK;
    size_t take = card - offset < cap ? (size_t)(card - offset) : cap;
    if (!roaring_bitmap_range_uint32_array(r->bm, (size_t)offset, take, out))
        return CP_ERR(err, CP_ENOMEM, "cp_result_ordinals: out of memory");
    *n = take;
    return CP_OK;
}

void cp_result_free(cp_result_t *r)
{
    if (r == NULL)
        return;
    index_bm_free(r->bm);
    free(r);
}

cp_status result_wrap(roaring_bitmap_t *bm, cp_result_t **out)
{
    cp_result_t *r = calloc(1, sizeof *r);
    if (r == NULL) {
        index_bm_free(bm);
        return CP_ENOMEM;
    }
    r->bm = bm;
    *out = r;
    return CP_OK;
}

cp_status cp_iter_open(cp_db_t *db, const cp_result_t *r, cp_iter_t **out, cp_error_t *err)
{
    if (r == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "result or out is NULL");
    *out = NULL;
    /* Ids of users created by events are on disk after a checkpoint. */
    cp_status rc = db_flush(db, err);
    if (rc || (rc = db_check(db, err)))
        return rc;
    cp_iter_t *it = calloc(1, sizeof *it);
    if (it == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    it->db = db;
    it->bm = roaring_bitmap_copy(r->bm);
    if (it->bm == NULL) {
        free(it);
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    /* One read transaction for the iterator's life: a consistent view of
     * the id dictionary without taking the database lock per id. */
    if ((rc = store_txn_begin(db->st, 0, &it->txn, err)) ||
        (rc = store_cursor_open(it->txn, STORE_UORD, &it->cur, err))) {
        cp_iter_close(it);
        return rc;
    }
    roaring_init_iterator(it->bm, &it->it);
    it->del_gen = atomic_load(&db->del_gen);
    atomic_fetch_add(&db->iters, 1);
    it->counted = 1;
    *out = it;
    return CP_OK;
}

cp_status cp_iter_next(cp_iter_t *it, const char **id, cp_error_t *err)
{
    if (it == NULL || id == NULL)
        return CP_ERR(err, CP_EINVAL, "iterator or id is NULL");
    *id = NULL;
    /* The read transaction is a snapshot: a user deleted after it began is
     * still in it. A deletion must leave every answer at once, exports in
     * progress included, so the members deleted since are skipped. */
    uint64_t gen = atomic_load(&it->db->del_gen);
    if (gen != it->del_gen) {
        cp_status rc = db_read_begin_mem(it->db, err);
        if (rc)
            return rc;
        roaring_bitmap_t *gone = roaring_bitmap_andnot(it->bm, it->db->ix->universe);
        db_read_end(it->db);
        if (gone == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        index_bm_free(it->gone);
        it->gone = gone;
        it->del_gen = gen;
    }
    while (it->it.has_value) {
        uint32_t ord = it->it.current_value;
        roaring_advance_uint32_iterator(&it->it);
        if (it->gone && roaring_bitmap_contains(it->gone, ord))
            continue;
        const void *v;
        size_t vl;
        cp_status rc = store_cursor_seek(it->cur, &ord, 4, &v, &vl, err);
        if (rc == CP_ENOTFOUND)
            continue; /* deleted since the snapshot */
        if (rc)
            return rc;
        if (vl > USERS_MAX_ID)
            return CP_ERR(err, CP_EIO, "corrupt id of user ordinal %u", ord);
        memcpy(it->id, v, vl);
        it->id[vl] = '\0';
        *id = it->id;
        return CP_OK;
    }
    return CP_OK;
}

void cp_iter_close(cp_iter_t *it)
{
    if (it == NULL)
        return;
    store_cursor_close(it->cur);
    store_txn_abort(it->txn);
    if (it->counted)
        atomic_fetch_sub(&it->db->iters, 1);
    index_bm_free(it->bm);
    index_bm_free(it->gone);
    free(it);
}

cp_status cp_expr_to_json(const char *expr, char **json_out, cp_error_t *err)
{
    if (json_out == NULL)
        return CP_ERR(err, CP_EINVAL, "json_out is NULL");
    *json_out = NULL;
    expr_t *e;
    cp_status rc = db_parse_text(expr, &e, err);
    if (rc)
        return rc;
    json_t *j = expr_to_json(expr_root(e));
    expr_free(e);
    return db_json_out(j, json_out, err);
}

cp_status cp_expr_from_json(const char *json, size_t len, char **expr_out, cp_error_t *err)
{
    if (expr_out == NULL)
        return CP_ERR(err, CP_EINVAL, "expr_out is NULL");
    *expr_out = NULL;
    expr_t *e;
    cp_status rc = db_parse_json(json, len, &e, err);
    if (rc)
        return rc;
    char *t = expr_to_text(expr_root(e));
    expr_free(e);
    if (t == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    *expr_out = t;
    return CP_OK;
}
