/* tags.c — the public tag and attribute API: create, update, delete, bulk
 * loads, handles and the JSON views. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

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

/* Creates path and its missing parents, persisting each; validation of the
 * whole path happens before anything changes. *touched says whether memory
 * changed (then a failure is fatal for the handle). */
static cp_status create_with_parents(cp_db_t *db, store_txn_t *txn, const char *path,
                                     const char *name, const char *description, int *touched,
                                     uint32_t *id_out, cp_error_t *err)
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
    rc = create_with_parents(db, txn, path, name, description, &touched, &id, err);
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
        db->data_changed = 1;
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
    db->data_changed = 1;
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

static cp_status parse_doc(const char *json, size_t len, const char *key, json_t **doc,
                           json_t **arr, cp_error_t *err)
{
    *doc = NULL;
    if (json == NULL)
        return CP_ERR(err, CP_EINVAL, "no JSON given");
    if (len > CP_BODY_MAX)
        return CP_ERR(err, CP_ELIMIT, "JSON document larger than %u bytes", CP_BODY_MAX);
    json_error_t je;
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
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
            rc = create_with_parents(db, txn, path, name, desc, &touched, &id, err);
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

cp_status db_tag_resolve(cp_db_t *db, const char *path, uint32_t *id, cp_error_t *err)
{
    *id = tax_find(&db->tax, path, strlen(path));
    if (*id)
        return CP_OK;
    uint32_t ids[8];
    size_t n = 0;
    if (tax_find_display(&db->tax, path, strlen(path), ids, 8, &n))
        return CP_ERR(err, CP_ENOMEM, "out of memory resolving tag \"%.200s\"", path);
    if (n == 1) {
        *id = ids[0];
        return CP_OK;
    }
    if (n == 0)
        return CP_ERR(err, CP_ENOTFOUND, "tag \"%.200s\" not found", path);
    char list[320];
    size_t off = 0;
    for (size_t i = 0; i < n && i < 8 && off < sizeof list; i++) {
        int w = snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "",
                         tax_get(&db->tax, ids[i])->path);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    return CP_ERR(err, CP_EINVAL,
                  "tag \"%.200s\" is ambiguous: it is the display path of %zu tags (%s%s); "
                  "write the slug path",
                  path, n, list, n > 8 ? ", ..." : "");
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
    for (uint32_t i = 0; kids && i < g->nchildren; i++)
        json_array_append_new(kids, json_string(tax_get(&db->tax, g->children[i])->path));
    const idx_tag_t *t = index_tag(db->ix, id);
    if (o && kids) {
        json_object_set_new(o, "direct_count",
                            json_integer((json_int_t)roaring_bitmap_get_cardinality(t->direct)));
        json_object_set_new(o, "children", kids);
        kids = NULL;
    } else {
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

/* ----------------------------------------------------------- attributes */

cp_status cp_attr_define(cp_db_t *db, const char *name, cp_attr_type type, cp_error_t *err)
{
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    uint32_t id;
    int created = 0;
    rc = schema_define(&db->sch, txn, name, type, &id, &created, err);
    if (rc || !created) {
        db_write_abort(db, txn);
        return rc;
    }
    if (index_attr_add(db->ix, id, type))
        return db_write_fail(db, txn, CP_ENOMEM, err);
    return db_write_end(db, txn, err);
}

cp_status cp_schema_load_json(cp_db_t *db, const char *json, size_t len, cp_error_t *err)
{
    json_t *doc, *arr;
    store_txn_t *txn;
    cp_status rc = parse_doc(json, len, "attributes", &doc, &arr, err);
    if (rc)
        return rc;
    size_t n = json_array_size(arr);
    if ((rc = db_write_begin(db, &txn, err)))
        goto out;
    /* Validate all against the current schema and each other first. */
    for (size_t i = 0; i < n && rc == CP_OK; i++) {
        json_t *e = json_array_get(arr, i);
        const char *name = NULL, *type = NULL;
        if (!json_is_object(e) || json_unpack(e, "{s:s,s:s}", "name", &name, "type", &type)) {
            rc = CP_ERR(err, CP_EINVAL,
                        "attributes[%zu]: expected {\"name\": string, \"type\": string}", i);
            break;
        }
        if (json_object_size(e) != 2) {
            rc = CP_ERR(err, CP_EINVAL, "attributes[%zu]: only \"name\" and \"type\" are allowed",
                        i);
            break;
        }
        cp_attr_type t = schema_type_parse(type);
        if (!t) {
            rc = CP_ERR(err, CP_EINVAL,
                        "attributes[%zu]: unknown type \"%.32s\" (int, enum, string, bool, "
                        "timestamp, geo)",
                        i, type);
            break;
        }
        if ((rc = schema_validate_name(name, err))) {
            error_prefix(err, "attributes[%zu]: ", i);
            break;
        }
        const schema_attr_t *a = schema_find(&db->sch, name, strlen(name));
        if (a && a->type != t) {
            rc = CP_ERR(err, CP_ECONFLICT,
                        "attributes[%zu]: \"%s\" is already defined as %s, not %s", i, name,
                        cp_attr_type_name(a->type), type);
            break;
        }
        for (size_t j = 0; j < i; j++) {
            json_t *o = json_array_get(arr, j);
            if (strcmp(json_string_value(json_object_get(o, "name")), name) == 0 &&
                strcmp(json_string_value(json_object_get(o, "type")), type) != 0) {
                rc = CP_ERR(err, CP_ECONFLICT, "attributes[%zu]: \"%s\" declared twice", i, name);
                break;
            }
        }
    }
    if (rc == CP_OK && db->sch.n + n > SCHEMA_MAX_ATTRS)
        rc = CP_ERR(err, CP_ELIMIT, "too many attributes (limit %u)", SCHEMA_MAX_ATTRS);
    if (rc) {
        db_write_abort(db, txn);
        goto out;
    }
    for (size_t i = 0; i < n && rc == CP_OK; i++) {
        json_t *e = json_array_get(arr, i);
        const char *name = json_string_value(json_object_get(e, "name"));
        cp_attr_type t = schema_type_parse(json_string_value(json_object_get(e, "type")));
        uint32_t id;
        int created;
        if ((rc = schema_define(&db->sch, txn, name, t, &id, &created, err)) == CP_OK && created &&
            index_attr_add(db->ix, id, t))
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    if (rc) {
        rc = db_write_fail(db, txn, rc, err);
        goto out;
    }
    rc = db_write_end(db, txn, err);
out:
    json_decref(doc);
    return rc;
}

cp_status cp_schema_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    json_t *arr = json_array();
    for (uint32_t i = 1; arr && i <= db->sch.n; i++) {
        const schema_attr_t *a = schema_get(&db->sch, i);
        if (a == NULL)
            continue;
        const roaring_bitmap_t *ex = index_attr_exists(db->ix, i);
        json_t *o =
            json_pack("{s:s,s:s,s:I,s:I}", "name", a->name, "type", cp_attr_type_name(a->type),
                      "count", (json_int_t)(ex ? roaring_bitmap_get_cardinality(ex) : 0), "values",
                      (json_int_t)schema_value_count(a));
        if (o == NULL || json_array_append_new(arr, o)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    db_read_end(db);
    return db_json_out(arr ? json_pack("{s:o}", "attributes", arr) : NULL, out, err);
}

cp_status cp_attr_handle(cp_db_t *db, const char *name, int32_t *out, cp_error_t *err)
{
    if (name == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "name or out is NULL");
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    const schema_attr_t *a = schema_find(&db->sch, name, strlen(name));
    db_read_end(db);
    if (a == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "attribute \"%s\" not found", name);
    *out = (int32_t)a->id;
    return CP_OK;
}

/* ---------------------------------------------------- attribute values */

typedef struct val_count {
    uint32_t vid;
    uint64_t count;
} val_count_t;

static int by_count_desc(const void *x, const void *y)
{
    const val_count_t *a = x, *b = y;
    if (a->count != b->count)
        return a->count < b->count ? 1 : -1;
    return a->vid < b->vid ? -1 : a->vid > b->vid;
}

#define ATTR_VALUES_DEFAULT 100
#define ATTR_VALUES_MAX 100000

/* The dictionary attribute `name` (read or write lock held). */
static cp_status dict_attr(cp_db_t *db, const char *name, schema_attr_t **out, cp_error_t *err)
{
    schema_attr_t *a = name ? schema_find(&db->sch, name, strlen(name)) : NULL;
    if (a == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "unknown attribute \"%.64s\"", name ? name : "(null)");
    if (!schema_type_has_dict(a->type))
        return CP_ERR(err, CP_ETYPE,
                      "attribute \"%s\" is %s: only enum, string and bool attributes have a list "
                      "of values",
                      a->name, cp_attr_type_name(a->type));
    *out = a;
    return CP_OK;
}

cp_status cp_attr_values_json(cp_db_t *db, const char *name, size_t limit, char **out,
                              cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    if (limit == 0)
        limit = ATTR_VALUES_DEFAULT;
    if (limit > ATTR_VALUES_MAX)
        limit = ATTR_VALUES_MAX;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    schema_attr_t *a = NULL;
    val_count_t *vc = NULL;
    json_t *res = NULL;
    if ((rc = dict_attr(db, name, &a, err)))
        goto out;
    vc = malloc(((size_t)a->nvalues + 1) * sizeof *vc);
    if (vc == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory listing values of \"%s\"", a->name);
        goto out;
    }
    size_t n = 0;
    for (uint32_t v = 1; v <= a->nvalues; v++) {
        /* A spelling made an alias is listed under "aliases", not here;
         * a value removed with the last user holding it is gone. */
        if (a->values[v] == NULL || schema_alias_find(a, a->values[v], a->value_lens[v]) != 0)
            continue;
        const roaring_bitmap_t *bm = index_value_bitmap(db->ix, a->id, v);
        vc[n++] = (val_count_t){v, bm ? roaring_bitmap_get_cardinality(bm) : 0};
    }
    qsort(vc, n, sizeof *vc, by_count_desc);
    const roaring_bitmap_t *ex = index_attr_exists(db->ix, a->id);
    json_t *vals = json_array(), *aliases = json_array();
    res = json_pack("{s:s,s:s,s:I,s:I,s:o*,s:b,s:o*}", "attribute", a->name, "type",
                    cp_attr_type_name(a->type), "distinct", (json_int_t)n, "users",
                    (json_int_t)(ex ? roaring_bitmap_get_cardinality(ex) : 0), "values", vals,
                    "truncated", n > limit, "aliases", aliases);
    if (res == NULL || vals == NULL || aliases == NULL)
        goto nomem;
    for (size_t i = 0; i < n && i < limit; i++) {
        json_t *o = json_pack("{s:s%,s:I}", "value", a->values[vc[i].vid],
                              (size_t)a->value_lens[vc[i].vid], "count", (json_int_t)vc[i].count);
        if (o == NULL || json_array_append_new(vals, o))
            goto nomem;
    }
    for (uint32_t i = 0; i < a->nalias; i++) {
        uint32_t t = a->alias_vid[i];
        json_t *o = json_pack("{s:s,s:s%}", "alias", a->alias_text[i], "value", a->values[t],
                              (size_t)a->value_lens[t]);
        if (o == NULL || json_array_append_new(aliases, o))
            goto nomem;
    }
    goto out;
nomem:
    json_decref(res);
    res = NULL;
    rc = CP_ERR(err, CP_ENOMEM, "out of memory listing values of \"%s\"", a->name);
out:
    free(vc);
    db_read_end(db);
    if (rc) {
        json_decref(res);
        return rc;
    }
    return db_json_out(res, out, err);
}

cp_status cp_attr_alias_set(cp_db_t *db, const char *name, const char *alias, const char *value,
                            cp_error_t *err)
{
    if (alias == NULL || value == NULL)
        return CP_ERR(err, CP_EINVAL, "alias or value is NULL");
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    schema_attr_t *a = NULL;
    size_t al = strlen(alias), vl = strlen(value);
    if ((rc = dict_attr(db, name, &a, err)))
        goto abort;
    if (a->type == CP_ATTR_BOOL) {
        rc = CP_ERR(err, CP_ETYPE, "attribute \"%s\" is bool: its values are true and false",
                    a->name);
        goto abort;
    }
    if (al == vl && memcmp(alias, value, al) == 0) {
        rc = CP_ERR(err, CP_EINVAL, "attribute \"%s\": \"%s\" cannot be an alias of itself",
                    a->name, value);
        goto abort;
    }
    /* The target is a value in its own right, not another alias: chains
     * would make the meaning of a spelling depend on the order of edits. */
    uint32_t target = 0;
    if (schema_alias_find(a, value, vl) != 0) {
        rc = CP_ERR(err, CP_EINVAL, "attribute \"%s\": \"%.200s\" is itself an alias of \"%s\"",
                    a->name, value, a->values[schema_alias_find(a, value, vl)]);
        goto abort;
    }
    if (strmap_get(&a->by_value, value, vl, &target) == 0 || target == 0) {
        char hint[256];
        db_value_suggest(a, value, vl, hint, sizeof hint);
        rc = CP_ERR(err, CP_ENOTFOUND, "attribute \"%s\" has no value \"%.200s\"%s", a->name, value,
                    hint);
        goto abort;
    }
    uint32_t old = 0;
    if (!strmap_get(&a->by_value, alias, al, &old))
        old = 0;
    for (uint32_t i = 0; i < a->nalias; i++)
        if (a->alias_vid[i] == old && old != 0) {
            rc = CP_ERR(
                err, CP_EINVAL,
                "attribute \"%s\": \"%.200s\" is the value other aliases stand for (\"%s\"); "
                "remove those aliases first",
                a->name, alias, a->alias_text[i]);
            goto abort;
        }
    if ((rc = schema_alias_set(a, txn, alias, al, target, err)))
        goto fail;
    if (old != 0 && old != target) {
        /* The spelling was stored as a value of its own: its users take
         * the value it now stands for, so the two never coexist. */
        uint64_t moved = 0;
        if ((rc = index_value_move(db->ix, a->id, old, target, &moved))) {
            rc =
                CP_ERR(err, rc, "out of memory moving users of \"%.200s\" to \"%s\"", alias, value);
            goto fail;
        }
        if (moved)
            db->data_changed = 1;
    }
    return db_write_end(db, txn, err);
fail:
    return db_write_fail(db, txn, rc, err);
abort:
    db_write_abort(db, txn);
    return rc;
}

cp_status cp_attr_alias_remove(cp_db_t *db, const char *name, const char *alias, cp_error_t *err)
{
    if (alias == NULL)
        return CP_ERR(err, CP_EINVAL, "alias is NULL");
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    schema_attr_t *a = NULL;
    if ((rc = dict_attr(db, name, &a, err)) ||
        (rc = schema_alias_remove(a, txn, alias, strlen(alias), err))) {
        db_write_abort(db, txn);
        return rc;
    }
    return db_write_end(db, txn, err);
}
