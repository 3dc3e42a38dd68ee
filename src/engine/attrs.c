/* attrs.c — the public attribute API: definitions, schema loads, handles,
 * value listings and value aliases. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"

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
