/* crowds.c — crowds (audience packs): create, update, refresh, delete,
 * JSON views, members, sampling and export. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"

/* ------------------------------------------------------------ references */

typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist_t;

static void strlist_free(strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static cp_status strlist_add_unique(strlist_t *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return CP_OK;
    if (arr_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v, 8))
        return CP_ENOMEM;
    if ((l->v[l->n] = strdup(s)) == NULL)
        return CP_ENOMEM;
    l->n++;
    return CP_OK;
}

static cp_status collect_refs(const expr_node_t *n, strlist_t *crowds, strlist_t *tags, int depth)
{
    if (n == NULL || depth > CP_EXPR_MAX_DEPTH + 8)
        return CP_OK;
    cp_status rc = CP_OK;
    if (n->kind == EXPR_CROWD && n->name)
        rc = strlist_add_unique(crowds, n->name);
    else if (n->kind == EXPR_TAG && n->name)
        rc = strlist_add_unique(tags, n->name);
    for (size_t i = 0; rc == CP_OK && i < n->nargs; i++)
        rc = collect_refs(n->args[i], crowds, tags, depth + 1);
    return rc;
}

/* 1 if crowd `from` references `target` directly or through others. */
static int reaches(cp_db_t *db, const char *from, const char *target)
{
    size_t cap = db->crowds.n + 1, sp = 0;
    const crowd_rec_t **stack = malloc(cap * sizeof *stack);
    uint8_t *seen = calloc(db->crowds.next_id + 1, 1);
    int found = 0;
    const crowd_rec_t *c = crowd_set_find(&db->crowds, from);
    if (stack == NULL || seen == NULL) {
        found = 1; /* fail closed: refuse rather than risk a cycle */
        goto out;
    }
    if (c)
        stack[sp++] = c;
    while (sp && !found) {
        c = stack[--sp];
        if (strcmp(c->name, target) == 0) {
            found = 1;
            break;
        }
        if (c->id <= db->crowds.next_id) {
            if (seen[c->id])
                continue;
            seen[c->id] = 1;
        }
        for (size_t i = 0; i < c->ncrowd_refs; i++) {
            const crowd_rec_t *d = crowd_set_find(&db->crowds, c->crowd_refs[i]);
            if (d && sp < cap && !(d->id <= db->crowds.next_id && seen[d->id]))
                stack[sp++] = d;
        }
    }
out:
    free(stack);
    free(seen);
    return found;
}

/* ---------------------------------------------------------------- create */

static cp_status check_common(const char *name, cp_crowd_kind kind, const char *description,
                              cp_error_t *err)
{
    cp_status rc = crowd_validate_name(name, err);
    if (rc)
        return rc;
    if (kind != CP_CROWD_STATIC && kind != CP_CROWD_DYNAMIC)
        return CP_ERR(err, CP_EINVAL, "crowd \"%s\": kind must be static or dynamic", name);
    return tax_validate_text("crowd description", description, CROWD_MAX_DESCRIPTION, err);
}

/* The canonical text and compact JSON of a tree, and its references. */
static cp_status describe(const expr_t *e, char **text, char **tree, strlist_t *crowds,
                          strlist_t *tags, cp_error_t *err)
{
    *text = expr_to_text(expr_root(e));
    json_t *j = expr_to_json(expr_root(e));
    *tree = j ? json_dumps_checked(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (*text == NULL || *tree == NULL || collect_refs(expr_root(e), crowds, tags, 0))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    return CP_OK;
}

static cp_status create_tree(cp_db_t *db, const char *name, const expr_t *e, cp_crowd_kind kind,
                             const char *description, int32_t as_of_day, crowd_settings_t *set,
                             cp_error_t *err)
{
    char *text = NULL, *tree = NULL;
    strlist_t crowds = {0}, tags = {0};
    roaring_bitmap_t *bm = NULL;
    crowd_rec_t *c = NULL;
    store_txn_t *txn = NULL;
    cp_status rc = check_common(name, kind, description, err);
    if (rc || (rc = describe(e, &text, &tree, &crowds, &tags, err)))
        goto out;
    if ((rc = db_write_begin(db, &txn, err)))
        goto out;
    if (crowd_set_find(&db->crowds, name)) {
        rc = CP_ERR(err, CP_EEXIST, "crowd \"%s\" already exists", name);
        goto abort;
    }
    if (db->crowds.n >= CROWD_MAX_COUNT || db->crowds.next_id >= 0x7fffffff) {
        rc = CP_ERR(err, CP_ELIMIT, "too many crowds (limit %u)", CROWD_MAX_COUNT);
        goto abort;
    }
    if ((rc = db_check_names(db, expr_root(e), err)) ||
        (rc = db_eval_tree_as_of(db, expr_root(e), as_of_day, &bm, err)))
        goto abort;
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto abort;
    }
    c->id = db->crowds.next_id;
    c->name = strdup(name);
    c->description = strdup(description ? description : "");
    c->kind = kind;
    c->expr = text;
    c->tree = tree;
    text = tree = NULL;
    c->size = roaring_bitmap_get_cardinality(bm);
    c->version = 1;
    c->created = c->updated = time_now_ms();
    c->as_of_day = as_of_day;
    if (set != NULL)
        crowd_settings_apply(c, set, c->created);
    c->crowd_refs = crowds.v;
    c->ncrowd_refs = crowds.n;
    c->tag_refs = tags.v;
    c->ntag_refs = tags.n;
    memset(&crowds, 0, sizeof crowds);
    memset(&tags, 0, sizeof tags);
    if (c->name == NULL || c->description == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto abort;
    }
    if (crowd_history_note(c, c->created, 0)) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto abort;
    }
    if ((rc = crowd_store_put(txn, c, err)))
        goto abort;
    /* From here memory changes. */
    uint32_t id = c->id;
    if (crowd_set_add(&db->crowds, c)) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto abort;
    }
    c = NULL;
    if (index_crowd_set(db->ix, id, bm)) {
        rc = db_write_fail(db, txn, CP_ENOMEM, err);
        goto out;
    }
    bm = NULL;
    rc = db_write_end(db, txn, err);
    goto out;
abort:
    db_write_abort(db, txn);
out:
    index_bm_free(bm);
    crowd_rec_free(c);
    free(text);
    free(tree);
    strlist_free(&crowds);
    strlist_free(&tags);
    return rc;
}

cp_status cp_crowd_create(cp_db_t *db, const char *name, const char *expr, cp_crowd_kind kind,
                          const char *description, cp_error_t *err)
{
    expr_t *e;
    cp_status rc = db_parse_text(expr, &e, err);
    if (rc)
        return rc;
    rc = create_tree(db, name, e, kind, description, 0, NULL, err);
    expr_free(e);
    return rc;
}

cp_status cp_crowd_create_spec(cp_db_t *db, const cp_crowd_spec_t *spec, cp_error_t *err)
{
    if (spec == NULL || spec->size < sizeof(cp_crowd_spec_t))
        return CP_ERR(err, CP_EINVAL, "crowd spec: NULL or size %zu, expected %zu",
                      spec ? spec->size : 0, sizeof(cp_crowd_spec_t));
    const char *name = spec->name ? spec->name : "";
    cp_crowd_kind kind = spec->kind ? spec->kind : CP_CROWD_STATIC;
    expr_t *e = NULL;
    int32_t day;
    crowd_settings_t set = {0};
    cp_status rc = db_as_of_day(spec->as_of, &day, err);
    if (rc)
        return rc;
    if (day != 0 && kind == CP_CROWD_DYNAMIC)
        return CP_ERR(err, CP_EINVAL,
                      "crowd \"%s\": as_of applies to static crowds only (a dynamic crowd is "
                      "re-evaluated on the current data after every write)",
                      name);
    if ((spec->expression == NULL) == (spec->tree == NULL))
        return CP_ERR(err, CP_EINVAL, "crowd \"%s\": give the expression as text or as a tree",
                      name);
    if (spec->settings != NULL &&
        (rc = crowd_settings_parse(spec->settings, spec->settings_len, &set, err)))
        return rc;
    rc = spec->expression ? db_parse_text(spec->expression, &e, err)
                          : db_parse_json(spec->tree, spec->tree_len, &e, err);
    if (rc == CP_OK)
        rc = create_tree(db, spec->name, e, kind, spec->description, day,
                         spec->settings ? &set : NULL, err);
    expr_free(e);
    crowd_settings_free(&set);
    return rc;
}

cp_status cp_crowd_create_as_of(cp_db_t *db, const char *name, const char *expr,
                                const char *json_tree, size_t len, cp_crowd_kind kind,
                                const char *description, const char *as_of, cp_error_t *err)
{
    cp_crowd_spec_t spec = {.size = sizeof spec,
                            .name = name,
                            .expression = expr,
                            .tree = json_tree,
                            .tree_len = len,
                            .kind = kind,
                            .description = description,
                            .as_of = as_of};
    return cp_crowd_create_spec(db, &spec, err);
}

cp_status cp_crowd_create_json(cp_db_t *db, const char *name, const char *json_tree, size_t len,
                               cp_crowd_kind kind, const char *description, cp_error_t *err)
{
    expr_t *e;
    cp_status rc = db_parse_json(json_tree, len, &e, err);
    if (rc)
        return rc;
    rc = create_tree(db, name, e, kind, description, 0, NULL, err);
    expr_free(e);
    return rc;
}

/* -------------------------------------------------------- update/refresh */

cp_status cp_crowd_update(cp_db_t *db, const char *name, const char *expr, cp_error_t *err)
{
    expr_t *e = NULL;
    char *text = NULL, *tree = NULL;
    strlist_t crowds = {0}, tags = {0};
    roaring_bitmap_t *bm = NULL;
    store_txn_t *txn = NULL;
    if (name == NULL)
        return CP_ERR(err, CP_EINVAL, "no crowd name");
    cp_status rc = db_parse_text(expr, &e, err);
    if (rc || (rc = describe(e, &text, &tree, &crowds, &tags, err)))
        goto out;
    if ((rc = db_write_begin(db, &txn, err)))
        goto out;
    crowd_rec_t *c = crowd_set_find(&db->crowds, name);
    if (c == NULL) {
        rc = CP_ERR(err, CP_ENOTFOUND, "crowd \"%s\" not found", name);
        goto abort;
    }
    for (size_t i = 0; i < crowds.n; i++) {
        if (strcmp(crowds.v[i], name) == 0) {
            rc = CP_ERR(err, CP_ECYCLE, "crowd \"%s\" cannot reference itself", name);
            goto abort;
        }
        if (reaches(db, crowds.v[i], name)) {
            rc = CP_ERR(err, CP_ECYCLE,
                        "crowd \"%s\" cannot reference \"%s\": \"%s\" already depends on \"%s\"",
                        name, crowds.v[i], crowds.v[i], name);
            goto abort;
        }
    }
    if ((rc = db_check_names(db, expr_root(e), err)) ||
        (rc = db_eval_tree(db, expr_root(e), &bm, err)))
        goto abort;
    /* Memory changes from here. */
    free(c->expr);
    free(c->tree);
    c->expr = text;
    c->tree = tree;
    text = tree = NULL;
    for (size_t i = 0; i < c->ncrowd_refs; i++)
        free(c->crowd_refs[i]);
    free(c->crowd_refs);
    for (size_t i = 0; i < c->ntag_refs; i++)
        free(c->tag_refs[i]);
    free(c->tag_refs);
    c->crowd_refs = crowds.v;
    c->ncrowd_refs = crowds.n;
    c->tag_refs = tags.v;
    c->ntag_refs = tags.n;
    memset(&crowds, 0, sizeof crowds);
    memset(&tags, 0, sizeof tags);
    c->size = roaring_bitmap_get_cardinality(bm);
    c->version++;
    c->updated = time_now_ms();
    if (index_crowd_set(db->ix, c->id, bm)) {
        rc = db_write_fail(db, txn, CP_ENOMEM, err);
        goto out;
    }
    bm = NULL;
    if ((rc = crowd_store_put(txn, c, err))) {
        rc = db_write_fail(db, txn, rc, err);
        goto out;
    }
    rc = db_write_end(db, txn, err);
    goto out;
abort:
    db_write_abort(db, txn);
out:
    expr_free(e);
    index_bm_free(bm);
    free(text);
    free(tree);
    strlist_free(&crowds);
    strlist_free(&tags);
    return rc;
}

cp_status cp_crowd_refresh(cp_db_t *db, const char *name, cp_error_t *err)
{
    store_txn_t *txn;
    if (name == NULL)
        return CP_ERR(err, CP_EINVAL, "no crowd name");
    crowd_rec_t *c;
    roaring_bitmap_t *bm = NULL;
    cp_status rc = crowd_write_find(db, name, &txn, &c, err);
    if (rc)
        return rc;
    if ((rc = eval_crowd(db, c, &bm, err))) {
        db_write_abort(db, txn);
        return rc;
    }
    c->size = roaring_bitmap_get_cardinality(bm);
    c->version++;
    c->updated = time_now_ms();
    if (index_crowd_set(db->ix, c->id, bm)) {
        index_bm_free(bm);
        return db_write_fail(db, txn, CP_ENOMEM, err);
    }
    /* A refresh by hand thaws a frozen crowd and counts as a use. */
    c->frozen = 0;
    crowds_mark_used(c, c->updated);
    if (crowd_history_note(c, c->updated, 0))
        return db_write_fail(db, txn, CP_ENOMEM, err);
    if ((rc = crowd_store_put(txn, c, err)))
        return db_write_fail(db, txn, rc, err);
    return db_write_end(db, txn, err);
}

cp_status cp_crowd_delete(cp_db_t *db, const char *name, cp_error_t *err)
{
    store_txn_t *txn;
    if (name == NULL)
        return CP_ERR(err, CP_EINVAL, "no crowd name");
    crowd_rec_t *c;
    cp_status rc = crowd_write_find(db, name, &txn, &c, err);
    if (rc)
        return rc;
    buf_t b;
    buf_init(&b, 4096);
    size_t nref = 0;
    for (size_t i = 0; i < db->crowds.n; i++) {
        const crowd_rec_t *o = db->crowds.items[i];
        for (size_t j = 0; j < o->ncrowd_refs; j++)
            if (strcmp(o->crowd_refs[j], name) == 0) {
                if (nref < 10)
                    buf_printf(&b, "%s\"%s\"", nref ? ", " : "", o->name);
                nref++;
                break;
            }
    }
    if (nref) {
        rc = CP_ERR(err, CP_ECONFLICT, "crowd \"%s\" is referenced by crowd%s %s%s", name,
                    nref > 1 ? "s" : "", buf_cstr(&b), nref > 10 ? " and more" : "");
        buf_free(&b);
        db_write_abort(db, txn);
        return rc;
    }
    buf_free(&b);
    uint32_t id = c->id;
    if ((rc = crowd_store_del(txn, name, err))) {
        db_write_abort(db, txn);
        return rc;
    }
    crowd_set_remove(&db->crowds, name);
    if ((rc = index_crowd_drop(db->ix, txn, id, err)))
        return db_write_fail(db, txn, rc, err);
    return db_write_end(db, txn, err);
}

/* ------------------------------------------------------------------ views */

/* The size shown is the members' count, not the record's: between an event
 * commit that took members out (merges) and the next checkpoint the record
 * lags them. */
static json_t *crowd_obj(const cp_db_t *db, const crowd_rec_t *c)
{
    const roaring_bitmap_t *bm = index_crowd(db->ix, c->id);
    uint64_t size = bm ? roaring_bitmap_get_cardinality(bm) : c->size;
    json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:s}", "name", c->name, "kind",
                          crowd_kind_name(c->kind), "expression", c->expr, "size", (json_int_t)size,
                          "version", (json_int_t)c->version, "created", (json_int_t)c->created,
                          "updated", (json_int_t)c->updated, "description", c->description);
    if (o && crowds_obj_keep(o, c)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

cp_status cp_crowds_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < db->crowds.n; i++) {
        json_t *o = crowd_obj(db, db->crowds.items[i]);
        if (o == NULL || json_array_append_new(arr, o)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    db_read_end(db);
    return db_json_out(arr ? json_pack("{s:o}", "crowds", arr) : NULL, out, err);
}

static json_t *strs(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(v[i]))) {
            json_decref(a);
            return NULL; /* the caller's set fails on it */
        }
    return a;
}

cp_status cp_crowd_json(cp_db_t *db, const char *name, char **out, cp_error_t *err)
{
    if (out == NULL || name == NULL)
        return CP_ERR(err, CP_EINVAL, "name or out is NULL");
    *out = NULL;
    const crowd_rec_t *c;
    cp_status rc = crowd_read_find(db, name, &c, err);
    if (rc)
        return rc;
    json_t *o = crowd_obj(db, c);
    json_error_t je;
    json_t *tree = json_loads_checked(c->tree, 0, &je);
    if (o && tree) {
        if (json_object_set_new(o, "tree", tree) ||
            json_object_set_new(o, "references", strs(c->crowd_refs, c->ncrowd_refs)) ||
            json_object_set_new(o, "tags", strs(c->tag_refs, c->ntag_refs))) {
            json_decref(o);
            o = NULL; /* db_json_out answers CP_ENOMEM */
        }
    } else {
        json_decref(tree);
        json_decref(o);
        o = NULL;
    }
    db_read_end(db);
    return db_json_out(o, out, err);
}

/* A copy of a crowd's members under the read lock. */
static cp_status members_copy(cp_db_t *db, const char *name, roaring_bitmap_t **out,
                              cp_error_t *err)
{
    *out = NULL;
    if (name == NULL)
        return CP_ERR(err, CP_EINVAL, "no crowd name");
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    const crowd_rec_t *c = crowd_set_find(&db->crowds, name);
    const roaring_bitmap_t *bm = c ? index_crowd(db->ix, c->id) : NULL;
    if (bm == NULL)
        rc = CP_ERR(err, CP_ENOTFOUND, "crowd \"%s\" not found", name);
    else if ((*out = roaring_bitmap_copy(bm)) == NULL)
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
    else
        crowds_mark_used(c, time_now_ms()); /* members, samples, exports: used */
    db_read_end(db);
    return rc;
}

cp_status cp_crowd_members(cp_db_t *db, const char *name, cp_result_t **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    roaring_bitmap_t *bm;
    cp_status rc = members_copy(db, name, &bm, err);
    if (rc)
        return rc;
    if (result_wrap(bm, out))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    return CP_OK;
}

cp_status cp_crowd_sample_json(cp_db_t *db, const char *name, uint64_t n, uint64_t seed, char **out,
                               cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    if (n > CP_SAMPLE_MAX)
        return CP_ERR(err, CP_ELIMIT, "sample of %llu ids is over the limit of %u",
                      (unsigned long long)n, CP_SAMPLE_MAX);
    roaring_bitmap_t *bm = NULL, *ranks = NULL;
    buf_t b;
    buf_init(&b, 0);
    cp_iter_t *it = NULL;
    cp_status rc = members_copy(db, name, &bm, err);
    if (rc)
        return rc;
    uint64_t size = roaring_bitmap_get_cardinality(bm);
    cp_result_t *res = NULL;
    if (n < size) {
        /* Floyd's algorithm: n distinct ranks in [0, size), uniform,
         * deterministic for the seed; then rank -> member by select. */
        ranks = roaring_bitmap_create();
        uint64_t state = seed;
        for (uint64_t j = size - n; ranks && j < size; j++) {
            uint64_t t = rand_next(&state) % (j + 1);
            if (!roaring_bitmap_add_checked(ranks, (uint32_t)t))
                roaring_bitmap_add(ranks, (uint32_t)j);
        }
        roaring_bitmap_t *pick = roaring_bitmap_create();
        if (ranks == NULL || pick == NULL) {
            index_bm_free(pick);
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        roaring_uint32_iterator_t ri;
        roaring_init_iterator(ranks, &ri);
        for (; ri.has_value; roaring_advance_uint32_iterator(&ri)) {
            uint32_t el;
            if (roaring_bitmap_select(bm, ri.current_value, &el))
                roaring_bitmap_add(pick, el);
        }
        index_bm_free(bm);
        bm = pick;
    }
    if ((rc = result_wrap(bm, &res))) {
        bm = NULL;
        rc = CP_ERR(err, rc, "out of memory");
        goto out;
    }
    bm = NULL;
    if ((rc = cp_iter_open(db, res, &it, err)))
        goto out;
    cp_status w = buf_printf(&b, "{\"crowd\":");
    w = w ? w : json_buf_str(&b, name, strlen(name));
    w = w ? w : buf_printf(&b, ",\"size\":%llu,\"ids\":[", (unsigned long long)size);
    const char *id;
    int first = 1;
    while (w == CP_OK && (rc = cp_iter_next(it, &id, err)) == CP_OK && id) {
        if (!first)
            w = buf_append(&b, ",", 1);
        first = 0;
        w = w ? w : json_buf_str(&b, id, strlen(id));
    }
    w = w ? w : buf_append(&b, "]}", 2);
    if (rc == CP_OK && w)
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
    if (rc == CP_OK) {
        buf_cstr(&b);
        *out = b.data;
        b.data = NULL;
    }
out:
    cp_iter_close(it);
    cp_result_free(res);
    index_bm_free(bm);
    index_bm_free(ranks);
    buf_free(&b);
    return rc;
}

/* CSV needs quotes around ids holding separators, quotes or line breaks. */
static cp_status csv_field(buf_t *b, const char *s, size_t len)
{
    if (strcspn(s, ",\"\r\n") == len)
        return buf_append(b, s, len);
    cp_status rc = buf_append(b, "\"", 1);
    for (size_t i = 0; rc == CP_OK && i < len; i++)
        rc = s[i] == '"' ? buf_append(b, "\"\"", 2) : buf_append(b, s + i, 1);
    return rc ? rc : buf_append(b, "\"", 1);
}

cp_status cp_crowd_export(cp_db_t *db, const char *name, cp_export_format fmt, cp_write_fn write,
                          void *ud, cp_error_t *err)
{
    if (write == NULL)
        return CP_ERR(err, CP_EINVAL, "no write callback");
    if (fmt != CP_EXPORT_NDJSON && fmt != CP_EXPORT_CSV)
        return CP_ERR(err, CP_EINVAL, "unknown export format %d", (int)fmt);
    cp_result_t *res = NULL;
    cp_iter_t *it = NULL;
    buf_t b;
    buf_init(&b, 0);
    cp_status rc = cp_crowd_members(db, name, &res, err);
    if (rc)
        return rc;
    if ((rc = cp_iter_open(db, res, &it, err)))
        goto out;
    if (fmt == CP_EXPORT_CSV)
        buf_append(&b, "id\n", 3);
    const char *id;
    while ((rc = cp_iter_next(it, &id, err)) == CP_OK && id) {
        size_t len = strlen(id);
        cp_status w;
        if (fmt == CP_EXPORT_NDJSON) {
            w = buf_append(&b, "{\"id\":", 6);
            w = w ? w : json_buf_str(&b, id, len);
            w = w ? w : buf_append(&b, "}\n", 2);
        } else {
            w = csv_field(&b, id, len);
            w = w ? w : buf_append(&b, "\n", 1);
        }
        if (w) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            break;
        }
        /* Constant memory: hand over every ~64 KiB. */
        if (b.len >= 65536) {
            if (write(ud, b.data, b.len) != 0) {
                rc = CP_ERR(err, CP_EIO, "export of crowd \"%s\" stopped by the writer", name);
                break;
            }
            buf_reset(&b);
        }
    }
    if (rc == CP_OK && b.len && write(ud, b.data, b.len) != 0)
        rc = CP_ERR(err, CP_EIO, "export of crowd \"%s\" stopped by the writer", name);
out:
    cp_iter_close(it);
    cp_result_free(res);
    buf_free(&b);
    return rc;
}
