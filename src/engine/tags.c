/* tags.c — the public tag API: create, update, delete, taxonomy loads,
 * search, handles and the JSON views. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"

/* Names of crowds whose expression references `path` or a tag below it, as
 * a ", "-separated list in b. Returns the number of such crowds. */
static size_t crowds_using_tag(cp_db_t *db, const char *path, buf_t *b)
{
    size_t plen = strlen(path), n = 0;
    for (size_t i = 0; i < db->crowds.n; i++) {
        const crowd_rec_t *c = db->crowds.items[i];
        for (size_t j = 0; j < c->ntag_refs; j++) {
            const char *r = c->tag_refs[j];
            uint32_t id = 0;
            /* A crowd written with a display path (tag:金融/理财) uses the
             * tag it resolves to. */
            if (tax_find(&db->tax, r, strlen(r)) == 0 && db_tag_resolve(db, r, &id, NULL) == CP_OK)
                r = tax_get(&db->tax, id)->path;
            if (strncmp(r, path, plen) == 0 && (r[plen] == '\0' || r[plen] == '/')) {
                if (n < 10)
                    buf_printf(b, "%s\"%s\"", n ? ", " : "", c->name);
                n++;
                break;
            }
        }
    }
    if (n > 10)
        buf_printf(b, " and %zu more", n - 10);
    return n;
}

/* The one "create a tag path with its parents" of the tree (engine.h): the
 * tag API here, and analytics writing back RFM, AIPL, funnel and cluster
 * tags. */
cp_status db_ensure_tag(cp_db_t *db, store_txn_t *txn, const char *path, const char *name,
                        const char *description, uint32_t *id_out, int *touched, cp_error_t *err)
{
    cp_status rc;
    size_t len = strlen(path);
    if ((rc = tax_validate_path(path, len, err)) ||
        (rc = tax_validate_text("tag name", name, TAX_MAX_NAME, err)) ||
        (rc = tax_validate_text("tag description", description, TAX_MAX_DESCRIPTION, err)))
        return rc;
    if (name && name[0] == '\0')
        return CP_ERR(err, CP_EINVAL, "tag \"%s\": empty name", path);
    int missing = 0;
    for (size_t i = 0; i <= len; i++)
        if ((i == len || path[i] == '/') && !tax_find(&db->tax, path, i))
            missing++;
    if (db->tax.count + (uint32_t)missing > TAX_MAX_TAGS)
        return CP_ERR(err, CP_ELIMIT, "too many tags (limit %u)", TAX_MAX_TAGS);
    char buf[TAX_MAX_PATH + 1];
    memcpy(buf, path, len + 1);
    int64_t now = time_now_ms();
    uint32_t id = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i != len && path[i] != '/')
            continue;
        buf[i] = '\0';
        id = tax_find(&db->tax, buf, i);
        if (id == 0) {
            int last = i == len;
            *touched = 1;
            if ((rc = tax_add(&db->tax, buf, last ? name : NULL, last ? description : NULL, now,
                              &id, err)))
                return rc;
            if (index_tag_add(db->ix, id))
                return CP_ERR(err, CP_ENOMEM, "out of memory creating tag \"%s\"", buf);
            if ((rc = tax_store_put(txn, tax_get(&db->tax, id), err)))
                return rc;
        } else if (i == len && name != NULL) {
            /* A tag made before it had a display name still carries its
             * slug as name: give it the name, but never overwrite one a
             * user chose. */
            tax_tag_t *g = tax_get(&db->tax, id);
            const char *slug = strrchr(g->path, '/');
            slug = slug ? slug + 1 : g->path;
            if (strcmp(g->name, slug) == 0 && strcmp(g->name, name) != 0) {
                *touched = 1;
                if ((rc = tax_set_text(&db->tax, id, name, NULL, err)) ||
                    (rc = tax_store_put(txn, g, err)))
                    return rc;
            }
        }
        if (i != len)
            buf[i] = '/';
    }
    *id_out = id;
    return CP_OK;
}

cp_status cp_tag_create(cp_db_t *db, const char *path, const char *name, const char *description,
                        cp_error_t *err)
{
    store_txn_t *txn;
    if (path == NULL)
        return CP_ERR(err, CP_EINVAL, "no tag path");
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    if (tax_find(&db->tax, path, strlen(path))) {
        db_write_abort(db, txn);
        return CP_ERR(err, CP_EEXIST, "tag \"%s\" already exists", path);
    }
    int touched = 0;
    uint32_t id;
    rc = db_ensure_tag(db, txn, path, name, description, &id, &touched, err);
    if (rc) {
        if (!touched) {
            db_write_abort(db, txn);
            return rc;
        }
        return db_write_fail(db, txn, rc, err);
    }
    return db_write_end(db, txn, err);
}

cp_status cp_tag_update(cp_db_t *db, const char *path, const char *new_path, const char *name,
                        const char *description, cp_error_t *err)
{
    store_txn_t *txn;
    buf_t b;
    buf_init(&b, 4096);
    if (path == NULL)
        return CP_ERR(err, CP_EINVAL, "no tag path");
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    uint32_t id = tax_find(&db->tax, path, strlen(path));
    if (id == 0) {
        rc = CP_ERR(err, CP_ENOTFOUND, "tag \"%s\" not found", path);
        goto abort;
    }
    if ((rc = tax_validate_text("tag name", name, TAX_MAX_NAME, err)) ||
        (rc = tax_validate_text("tag description", description, TAX_MAX_DESCRIPTION, err)))
        goto abort;
    if (name && name[0] == '\0') {
        rc = CP_ERR(err, CP_EINVAL, "tag \"%s\": empty name", path);
        goto abort;
    }
    int moving = new_path && strcmp(new_path, path) != 0;
    if (moving) {
        /* Expressions name tags by path; moving one would silently break
         * every crowd that names it or something below it. */
        if (crowds_using_tag(db, path, &b)) {
            rc = CP_ERR(err, CP_ECONFLICT,
                        "tag \"%s\" cannot be moved: crowds %s reference it or a tag below it",
                        path, buf_cstr(&b));
            goto abort;
        }
        uint32_t *changed = NULL;
        size_t nchanged = 0;
        rc = tax_move(&db->tax, id, new_path, &changed, &nchanged, err);
        if (rc) {
            /* tax_move validates before changing anything, except ENOMEM. */
            if (rc == CP_ENOMEM && nchanged)
                return db_write_fail(db, txn, rc, err);
            goto abort;
        }
        for (size_t i = 0; i < nchanged && rc == CP_OK; i++)
            rc = tax_store_put(txn, tax_get(&db->tax, changed[i]), err);
        free(changed);
        if (rc == CP_OK && index_recompute_effective(db->ix, &db->tax))
            rc = CP_ERR(err, CP_ENOMEM, "out of memory recomputing tag members");
        if (rc)
            return db_write_fail(db, txn, rc, err);
    }
    if (name || description) {
        if ((rc = tax_set_text(&db->tax, id, name, description, err))) {
            if (moving)
                return db_write_fail(db, txn, rc, err);
            goto abort;
        }
        if ((rc = tax_store_put(txn, tax_get(&db->tax, id), err)))
            return db_write_fail(db, txn, rc, err);
    }
    buf_free(&b);
    return db_write_end(db, txn, err);
abort:
    buf_free(&b);
    db_write_abort(db, txn);
    return rc;
}

cp_status cp_tag_delete(cp_db_t *db, const char *path, int recursive, cp_error_t *err)
{
    store_txn_t *txn;
    buf_t b;
    buf_init(&b, 4096);
    uint32_t *sub = NULL;
    size_t nsub = 0;
    if (path == NULL)
        return CP_ERR(err, CP_EINVAL, "no tag path");
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    uint32_t id = tax_find(&db->tax, path, strlen(path));
    if (id == 0) {
        rc = CP_ERR(err, CP_ENOTFOUND, "tag \"%s\" not found", path);
        goto abort;
    }
    const tax_tag_t *g = tax_get(&db->tax, id);
    if (g->nchildren && !recursive) {
        rc = CP_ERR(err, CP_ECONFLICT,
                    "tag \"%s\" has %u children; delete them first or delete recursively", path,
                    g->nchildren);
        goto abort;
    }
    if (crowds_using_tag(db, path, &b)) {
        rc = CP_ERR(err, CP_ECONFLICT,
                    "tag \"%s\" cannot be deleted: crowds %s reference it or a tag below it", path,
                    buf_cstr(&b));
        goto abort;
    }
    if (tax_subtree(&db->tax, id, &sub, &nsub)) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto abort;
    }
    /* Children first (reverse pre-order): tax_remove takes leaves only. */
    for (size_t i = nsub; i > 0 && rc == CP_OK; i--) {
        uint32_t t = sub[i - 1];
        if ((rc = index_tag_drop(db->ix, txn, t, err)) || (rc = tax_store_del(txn, t, err)) ||
            (rc = tax_remove(&db->tax, t, err)))
            break;
    }
    free(sub);
    if (rc == CP_OK && index_recompute_effective(db->ix, &db->tax))
        rc = CP_ERR(err, CP_ENOMEM, "out of memory recomputing tag members");
    if (rc)
        return db_write_fail(db, txn, rc, err);
    buf_free(&b);
    return db_write_end(db, txn, err);
abort:
    buf_free(&b);
    db_write_abort(db, txn);
    return rc;
}

cp_status parse_doc(const char *json, size_t len, const char *key, json_t **doc, json_t **arr,
                    cp_error_t *err)
{
    *doc = NULL;
    if (json == NULL)
        return CP_ERR(err, CP_EINVAL, "no JSON given");
    if (len > CP_BODY_MAX)
        return CP_ERR(err, CP_ELIMIT, "JSON document larger than %u bytes", CP_BODY_MAX);
    json_error_t je;
    json_t *j = json_loadb_checked(json, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading the request");
    if (j == NULL)
        return CP_ERR(err, CP_EINVAL, "invalid JSON at line %d, column %d: %s", je.line, je.column,
                      je.text);
    json_t *a = json_object_get(j, key);
    if (!json_is_object(j) || !json_is_array(a)) {
        json_decref(j);
        return CP_ERR(err, CP_EINVAL, "expected an object {\"%s\":[...]}", key);
    }
    *doc = j;
    *arr = a;
    return CP_OK;
}

static cp_status opt_string(json_t *e, const char *field, size_t i, const char *arr,
                            const char **out, cp_error_t *err)
{
    json_t *v = json_object_get(e, field);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return CP_OK;
    if (!json_is_string(v))
        return CP_ERR(err, CP_EINVAL, "%s[%zu].%s: expected a string", arr, i, field);
    *out = json_string_value(v);
    if (strlen(*out) != json_string_length(v))
        return CP_ERR(err, CP_EINVAL, "%s[%zu].%s: contains a NUL character", arr, i, field);
    return CP_OK;
}

cp_status cp_taxonomy_load_json(cp_db_t *db, const char *json, size_t len, cp_error_t *err)
{
    json_t *doc, *arr;
    store_txn_t *txn;
    cp_status rc = parse_doc(json, len, "tags", &doc, &arr, err);
    if (rc)
        return rc;
    size_t n = json_array_size(arr);
    /* Validate every entry before touching anything. */
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        const char *path, *name, *desc;
        if (!json_is_object(e)) {
            rc = CP_ERR(err, CP_EINVAL, "tags[%zu]: expected an object", i);
            goto out;
        }
        const char *k;
        json_t *v;
        json_object_foreach(e, k, v)
        {
            if (strcmp(k, "path") && strcmp(k, "name") && strcmp(k, "description")) {
                rc = CP_ERR(err, CP_EINVAL, "tags[%zu]: unknown field \"%.64s\"", i, k);
                goto out;
            }
        }
        if ((rc = opt_string(e, "path", i, "tags", &path, err)) ||
            (rc = opt_string(e, "name", i, "tags", &name, err)) ||
            (rc = opt_string(e, "description", i, "tags", &desc, err)))
            goto out;
        if (path == NULL) {
            rc = CP_ERR(err, CP_EINVAL, "tags[%zu]: missing \"path\"", i);
            goto out;
        }
        if ((rc = tax_validate_path(path, strlen(path), err)) ||
            (rc = tax_validate_text("tag name", name, TAX_MAX_NAME, err)) ||
            (rc = tax_validate_text("tag description", desc, TAX_MAX_DESCRIPTION, err))) {
            error_prefix(err, "tags[%zu]: ", i);
            goto out;
        }
        if (name && name[0] == '\0') {
            rc = CP_ERR(err, CP_EINVAL, "tags[%zu]: empty name", i);
            goto out;
        }
    }
    if (db->tax.count + n > TAX_MAX_TAGS) {
        rc = CP_ERR(err, CP_ELIMIT, "too many tags (limit %u)", TAX_MAX_TAGS);
        goto out;
    }
    if ((rc = db_write_begin(db, &txn, err)))
        goto out;
    int touched = 0;
    for (size_t i = 0; i < n && rc == CP_OK; i++) {
        json_t *e = json_array_get(arr, i);
        const char *path = json_string_value(json_object_get(e, "path"));
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *desc = json_string_value(json_object_get(e, "description"));
        uint32_t id = tax_find(&db->tax, path, strlen(path));
        if (id) {
            if (name || desc) {
                touched = 1;
                if ((rc = tax_set_text(&db->tax, id, name, desc, err)) == CP_OK)
                    rc = tax_store_put(txn, tax_get(&db->tax, id), err);
            }
        } else {
            rc = db_ensure_tag(db, txn, path, name, desc, &id, &touched, err);
        }
        if (rc)
            error_prefix(err, "tags[%zu]: ", i);
    }
    if (rc) {
        if (touched)
            rc = db_write_fail(db, txn, rc, err);
        else
            db_write_abort(db, txn);
        goto out;
    }
    rc = db_write_end(db, txn, err);
out:
    json_decref(doc);
    return rc;
}

/* The names of a tag and its ancestors joined by '/' (兴趣/金融/理财). */
static char *display_path(cp_db_t *db, const tax_tag_t *g)
{
    const tax_tag_t *chain[TAX_MAX_DEPTH + 1];
    int n = 0;
    size_t len = 0;
    for (const tax_tag_t *x = g; x != NULL && n <= TAX_MAX_DEPTH;
         x = tax_get(&db->tax, x->parent)) {
        chain[n++] = x;
        len += strlen(x->name) + 1;
    }
    char *s = malloc(len + 1), *p = s;
    if (s == NULL)
        return NULL;
    for (int i = n; i > 0; i--) {
        size_t l = strlen(chain[i - 1]->name);
        memcpy(p, chain[i - 1]->name, l);
        p += l;
        if (i > 1)
            *p++ = '/';
    }
    *p = '\0';
    return s;
}

static json_t *tag_obj(cp_db_t *db, const tax_tag_t *g)
{
    const tax_tag_t *p = tax_get(&db->tax, g->parent);
    const idx_tag_t *t = index_tag(db->ix, g->id);
    char *dp = display_path(db, g);
    json_t *o = dp == NULL
                    ? NULL
                    : json_pack("{s:s,s:s,s:s,s:s,s:i,s:s?,s:I}", "path", g->path, "name", g->name,
                                "display_path", dp, "description", g->description, "level",
                                g->level, "parent", p ? p->path : NULL, "count",
                                (json_int_t)(t ? roaring_bitmap_get_cardinality(t->eff) : 0));
    free(dp);
    return o;
}

/* 1 if `needle` occurs in `hay`, ASCII letters in any case. */
static int ci_contains(const char *hay, const char *needle, size_t nl)
{
    size_t hl = strlen(hay);
    for (size_t i = 0; i + nl <= hl; i++) {
        size_t k = 0;
        while (k < nl) {
            unsigned char a = (unsigned char)hay[i + k], b = (unsigned char)needle[k];
            if (a != b && !(a < 0x80 && b < 0x80 && tolower(a) == tolower(b)))
                break;
            k++;
        }
        if (k == nl)
            return 1;
    }
    return 0;
}

cp_status cp_tags_search_json(cp_db_t *db, const char *q, size_t limit, char **out, cp_error_t *err)
{
    if (out == NULL || q == NULL)
        return CP_ERR(err, CP_EINVAL, "q or out is NULL");
    *out = NULL;
    if (limit == 0 || limit > CP_TAGS_SEARCH_MAX)
        limit = CP_TAGS_SEARCH_MAX;
    size_t ql = 0;
    char *nq = tax_nfc(q, strnlen(q, TAX_MAX_PATH + 1), &ql);
    if (nq == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    cp_status rc = db_read_begin(db, err);
    if (rc) {
        free(nq);
        return rc;
    }
    uint32_t *sub = NULL;
    size_t n = 0, found = 0;
    json_t *arr = json_array();
    if (arr == NULL || tax_subtree(&db->tax, 0, &sub, &n)) {
        json_decref(arr);
        arr = NULL;
        n = 0;
    }
    for (size_t i = 0; arr && i < n; i++) {
        const tax_tag_t *g = tax_get(&db->tax, sub[i]);
        char *dp = display_path(db, g);
        if (dp == NULL) {
            json_decref(arr);
            arr = NULL;
            break;
        }
        int hit =
            ci_contains(g->path, nq, ql) || ci_contains(g->name, nq, ql) || ci_contains(dp, nq, ql);
        free(dp);
        if (!hit)
            continue;
        if (found++ >= limit)
            continue; /* counted, not listed */
        json_t *o = tag_obj(db, g);
        if (o == NULL || json_object_set_new(o, "children", json_integer(g->nchildren)) ||
            json_array_append_new(arr, o)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(sub);
    db_read_end(db);
    json_t *res = arr ? json_pack("{s:s,s:o,s:I,s:b}", "q", nq, "tags", arr, "matched",
                                  (json_int_t)found, "truncated", found > limit)
                      : NULL;
    free(nq);
    return db_json_out(res, out, err);
}

cp_status cp_tags_json(cp_db_t *db, const char *root, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    uint32_t id = 0;
    if (root && root[0] && (rc = db_tag_resolve(db, root, &id, err))) {
        db_read_end(db);
        return rc;
    }
    uint32_t *sub = NULL;
    size_t n = 0;
    json_t *arr = json_array();
    if (arr == NULL || tax_subtree(&db->tax, id, &sub, &n)) {
        json_decref(arr);
        db_read_end(db);
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const tax_tag_t *g = tax_get(&db->tax, sub[i]);
        json_t *o = tag_obj(db, g);
        if (o == NULL || json_object_set_new(o, "children", json_integer(g->nchildren)) ||
            json_array_append_new(arr, o)) {
            json_decref(arr);
            arr = NULL;
            break;
        }
    }
    free(sub);
    db_read_end(db);
    return db_json_out(arr ? json_pack("{s:o}", "tags", arr) : NULL, out, err);
}

cp_status cp_tag_json(cp_db_t *db, const char *path, char **out, cp_error_t *err)
{
    if (out == NULL || path == NULL)
        return CP_ERR(err, CP_EINVAL, "path or out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    uint32_t id = 0;
    if ((rc = db_tag_resolve(db, path, &id, err))) {
        db_read_end(db);
        return rc;
    }
    const tax_tag_t *g = tax_get(&db->tax, id);
    json_t *o = tag_obj(db, g);
    json_t *kids = json_array();
    int bad = kids == NULL;
    for (uint32_t i = 0; kids && i < g->nchildren; i++)
        bad |= json_array_append_new(kids, json_string(tax_get(&db->tax, g->children[i])->path));
    const idx_tag_t *t = index_tag(db->ix, id);
    if (o && !bad &&
        !json_object_set_new(o, "direct_count",
                             json_integer((json_int_t)roaring_bitmap_get_cardinality(t->direct)))) {
        bad = json_object_set_new(o, "children", kids);
        kids = NULL; /* taken, even on failure */
    } else {
        bad = 1;
    }
    if (bad) { /* db_json_out answers CP_ENOMEM */
        json_decref(o);
        o = NULL;
    }
    json_decref(kids);
    db_read_end(db);
    return db_json_out(o, out, err);
}

cp_status cp_tag_handle(cp_db_t *db, const char *path, int32_t *out, cp_error_t *err)
{
    if (path == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "path or out is NULL");
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    uint32_t id = 0;
    rc = db_tag_resolve(db, path, &id, err);
    db_read_end(db);
    if (rc)
        return rc;
    *out = (int32_t)id;
    return CP_OK;
}
