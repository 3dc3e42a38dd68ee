/*
 * traits.c — a user's attributes as events set them: a trait's value typed
 * by the schema, the per-user record of unindexed traits, and snapshots of
 * a user's own data (kept in a merge's lineage, restored by an unmerge).
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"
#include "model/codec.h"

#define TRAITS_MAX_BYTES (64u * 1024) /* unindexed traits kept per user */

/* ------------------------------------------------------ attribute values */

/*
 * A trait as a value of attribute a; *why gets the reason on failure. v is
 * the typed value; raw its JSON when it came from JSON (NULL for CSV rows):
 * a JSON null clears the attribute, and geo values need the JSON ([lat,
 * lon] or {"lat","lon"}).
 */
int trait_value(const schema_attr_t *a, const ev_prop_t *v, const json_t *raw, tval_t *o, char *why,
                size_t cap)
{
    memset(o, 0, sizeof *o);
    if (raw && json_is_null(raw))
        return 0;
    char num[64];
    switch (a->type) {
    case CP_ATTR_INT:
        o->kind = 1;
        if (v->kind == PV_INT) {
            o->i = v->i;
            return 0;
        }
        if (v->kind == PV_REAL && v->d == floor(v->d) && fabs(v->d) < 9e15) {
            o->i = (int64_t)v->d;
            return 0;
        }
        if (v->kind == PV_STR && v->slen > 0 && v->slen < sizeof num) {
            memcpy(num, v->s, v->slen);
            num[v->slen] = '\0';
            char *end;
            errno = 0;
            long long x = strtoll(num, &end, 10);
            /* out of range is a mismatch, never INT64_MAX (strtoll clamps) */
            if (*end == '\0' && end != num && errno != ERANGE) {
                o->i = x;
                return 0;
            }
        }
        snprintf(why, cap, "trait \"%s\" is an int attribute", a->name);
        return -1;
    case CP_ATTR_TIMESTAMP:
        o->kind = 1;
        if (v->kind == PV_INT) {
            o->i = v->i;
            return 0;
        }
        if (v->kind == PV_STR && time_parse(v->s, v->slen, &o->i) == 0)
            return 0;
        snprintf(why, cap, "trait \"%s\" is a timestamp attribute (ISO 8601 or epoch seconds)",
                 a->name);
        return -1;
    case CP_ATTR_BOOL:
        o->kind = 2;
        if (v->kind == PV_BOOL ||
            (v->kind == PV_STR && ((v->slen == 4 && !memcmp(v->s, "true", 4)) ||
                                   (v->slen == 5 && !memcmp(v->s, "false", 5))))) {
            o->slen = pv_text(v, o->sbuf, &o->s);
            return 0;
        }
        snprintf(why, cap, "trait \"%s\" is a bool attribute", a->name);
        return -1;
    case CP_ATTR_ENUM:
    case CP_ATTR_STRING:
        o->kind = 2;
        if (v->kind == PV_NONE) {
            snprintf(why, cap, "trait \"%s\" is a string attribute", a->name);
            return -1;
        }
        o->slen = pv_text(v, o->sbuf, &o->s);
        if (o->slen > SCHEMA_MAX_VALUE || memchr(o->s, '\0', o->slen)) {
            snprintf(why, cap, "trait \"%s\": value longer than %d bytes or with NUL", a->name,
                     SCHEMA_MAX_VALUE);
            return -1;
        }
        if (schema_value_find(a, o->s, o->slen) == 0 &&
            a->nvalues >=
                (a->type == CP_ATTR_STRING ? SCHEMA_MAX_STRING_VALUES : SCHEMA_MAX_ENUM_VALUES)) {
            snprintf(why, cap, "trait \"%s\": too many distinct values", a->name);
            return -1;
        }
        return 0;
    case CP_ATTR_GEO: {
        o->kind = 3;
        const json_t *la = NULL, *lo = NULL;
        if (json_is_array(raw) && json_array_size(raw) == 2) {
            la = json_array_get(raw, 0);
            lo = json_array_get(raw, 1);
        } else if (json_is_object(raw)) {
            la = json_object_get(raw, "lat");
            lo = json_object_get(raw, "lon");
        }
        if (json_is_number(la) && json_is_number(lo)) {
            o->lat = json_number_value(la);
            o->lon = json_number_value(lo);
            if (o->lat >= -90 && o->lat <= 90 && o->lon >= -180 && o->lon <= 180)
                return 0;
        }
        snprintf(why, cap, "trait \"%s\" is a geo attribute ([lat, lon])", a->name);
        return -1;
    }
    }
    snprintf(why, cap, "trait \"%s\": unsupported attribute type", a->name);
    return -1;
}

int trait_value_json(const schema_attr_t *a, const json_t *v, tval_t *o, char *why, size_t cap)
{
    ev_prop_t pv;
    pv_from_json(a->name, strlen(a->name), v, &pv);
    return trait_value(a, &pv, v, o, why, cap);
}

cp_status set_value(cp_db_t *db, store_txn_t *txn, const schema_attr_t *a, uint32_t ord,
                    const tval_t *t, uint32_t *vid_out, cp_error_t *err)
{
    cp_status rc = CP_OK;
    switch (t->kind) {
    case 0:
        index_clear(db->ix, a->id, ord);
        break;
    case 1:
        rc = index_set_int(db->ix, a->id, ord, t->i);
        break;
    case 3:
        rc = index_set_geo(db->ix, a->id, ord, t->lat, t->lon);
        break;
    case 2: {
        uint32_t vid;
        if ((rc = schema_value_intern((schema_attr_t *)a, txn, t->s, t->slen, &vid, err)))
            return rc;
        rc = index_set_value(db->ix, a->id, ord, vid);
        if (vid_out)
            *vid_out = vid;
        break;
    }
    }
    return rc ? CP_ERR(err, rc, "setting attribute \"%s\": %s", a->name, cp_strerror(rc)) : CP_OK;
}

/* A user's value of an attribute as JSON: NULL if the user has none, or
 * if building it ran out of memory, which sets *oom (when not NULL) so
 * that a caller can tell a missing value from a lost one. */
json_t *attr_json(const cp_db_t *db, const schema_attr_t *a, uint32_t ord, int typed, int *oom)
{
    int64_t x;
    double lat, lon;
    json_t *v = NULL;
    int has = 0;
    switch (a->type) {
    case CP_ATTR_INT:
        if ((has = index_get_int(db->ix, a->id, ord, &x)))
            v = json_integer(x);
        break;
    case CP_ATTR_TIMESTAMP:
        if (!(has = index_get_int(db->ix, a->id, ord, &x)))
            break;
        if (typed) {
            char buf[40];
            time_format(x, buf, sizeof buf);
            v = json_string(buf);
        } else
            v = json_integer(x);
        break;
    case CP_ATTR_GEO:
        if ((has = index_get_geo(db->ix, a->id, ord, &lat, &lon)))
            v = json_pack("[f,f]", lat, lon);
        break;
    default: {
        uint32_t vid = index_get_value(db->ix, a->id, ord);
        if (!(has = vid != 0 && vid <= a->nvalues))
            break;
        if (a->type == CP_ATTR_BOOL && typed)
            v = json_boolean(strcmp(a->values[vid], "true") == 0);
        else
            v = json_stringn(a->values[vid], a->value_lens[vid]);
    }
    }
    if (has && v == NULL && oom)
        *oom = 1;
    return v;
}

/* One walk over a user for every view of it, so that the views cannot
 * drift apart: its attributes into `attrs` (typed: timestamps as text and
 * booleans as JSON booleans, as cp_user_json and whois answer; untyped: as
 * stored, for merge snapshots), the paths of its direct tags into `tags`
 * and, when `crowds` is not NULL, the names of the crowds it is in.
 * Returns nonzero when an allocation failed: the view then misses part of
 * the user and must not be used. */
int user_view_fill(const cp_db_t *db, uint32_t ord, int typed, json_t *attrs, json_t *tags,
                   json_t *crowds)
{
    int bad = attrs == NULL || tags == NULL;
    for (uint32_t i = 1; !bad && i <= db->sch.n; i++) {
        const schema_attr_t *a = schema_get(&db->sch, i);
        json_t *v = a ? attr_json(db, a, ord, typed, &bad) : NULL;
        if (v)
            bad |= json_object_set_new(attrs, a->name, v);
    }
    for (uint32_t t = 1; !bad && t < db->tax.next_id; t++) {
        const idx_tag_t *it = index_tag(db->ix, t);
        const tax_tag_t *g = tax_get(&db->tax, t);
        if (it && g && roaring_bitmap_contains(it->direct, ord))
            bad |= json_array_append_new(tags, json_string(g->path));
    }
    for (size_t c = 0; !bad && crowds && c < db->crowds.n; c++) {
        const crowd_rec_t *cr = db->crowds.items[c];
        const roaring_bitmap_t *bm = index_crowd(db->ix, cr->id);
        if (bm && roaring_bitmap_contains(bm, ord))
            bad |= json_array_append_new(crowds, json_string(cr->name));
    }
    return bad;
}

/* ------------------------------------------------------- per-user traits */

void ut_key(unsigned char k[7], uint32_t ord)
{
    memcpy(k, "ut/", 3);
    be32_put(k + 3, ord);
}

/* The user's unindexed traits (new object; empty if none). */
cp_status traits_get(store_txn_t *txn, uint32_t ord, json_t **out, cp_error_t *err)
{
    unsigned char k[7];
    ut_key(k, ord);
    const void *v;
    size_t vl;
    *out = NULL;
    cp_status rc = store_get(txn, STORE_INTAKE, k, 7, &v, &vl, err);
    if (rc == CP_ENOTFOUND) {
        *out = json_object();
        return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    if (rc)
        return rc;
    json_error_t je;
    *out = json_loadb_checked(v, vl, 0, &je);
    if (*out == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading traits of user ordinal %u", ord);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return CP_ERR(err, CP_EIO, "corrupt traits of user ordinal %u", ord);
    }
    return CP_OK;
}

cp_status traits_put(store_txn_t *txn, uint32_t ord, json_t *t, cp_error_t *err)
{
    unsigned char k[7];
    ut_key(k, ord);
    if (json_object_size(t) == 0)
        return store_del(txn, STORE_INTAKE, k, 7, err);
    char *s = json_dumps_checked(t, JSON_COMPACT | JSON_SORT_KEYS);
    if (s == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    size_t n = strlen(s);
    cp_status rc =
        n > TRAITS_MAX_BYTES
            ? CP_ERR(err, CP_ELIMIT, "unindexed traits of a user exceed %u bytes", TRAITS_MAX_BYTES)
            : store_put(txn, STORE_INTAKE, k, 7, s, n, err);
    free(s);
    return rc;
}

/* ------------------------------------------------------------ snapshots */

/* What a user holds of its own: attributes, direct tags, unindexed traits,
 * behaviour. For merge lineage (and unmerge). NULL when out of memory. */
json_t *user_own(cp_db_t *db, store_txn_t *txn, uint32_t ord)
{
    json_t *attrs = json_object(), *tags = json_array(), *beh = json_array();
    json_t *traits = NULL;
    cp_status trc = traits_get(txn, ord, &traits, NULL);
    int bad = trc == CP_ENOMEM;
    if (trc && !bad)
        traits = json_object(); /* damaged traits: the snapshot has none */
    bad |= user_view_fill(db, ord, 0, attrs, tags, NULL);
    beh_entry_t *e = NULL;
    size_t n = 0;
    if (beh_user_extract(db->beh, ord, &e, &n) == CP_OK)
        for (size_t i = 0; i < n; i++)
            bad |= json_array_append_new(beh, json_pack("[I,i,I]", (json_int_t)e[i].series,
                                                        (int)e[i].day, (json_int_t)e[i].count));
    free(e);
    if (bad) { /* a snapshot missing part of the user could not undo the merge */
        json_decref(attrs);
        json_decref(tags);
        json_decref(traits);
        json_decref(beh);
        return NULL;
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "attrs", attrs, "tags", tags, "traits", traits, "beh",
                     beh);
}

/* Sets a user's own data from a snapshot side (a restored user). */
cp_status user_restore(cp_db_t *db, store_txn_t *txn, uint32_t ord, const json_t *own,
                       cp_error_t *err)
{
    cp_status rc;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(own, "attrs"), k, v)
    {
        const schema_attr_t *a = schema_find(&db->sch, k, strlen(k));
        tval_t t;
        char why[128];
        if (a == NULL || trait_value_json(a, v, &t, why, sizeof why))
            continue; /* the attribute was dropped or retyped since */
        if ((rc = set_value(db, txn, a, ord, &t, NULL, err)))
            return rc;
    }
    size_t i;
    json_array_foreach(json_object_get(own, "tags"), i, v)
    {
        uint32_t id = tax_find(&db->tax, json_string_value(v), json_string_length(v));
        if (id)
            index_tag_assign(db->ix, &db->tax, ord, id);
    }
    json_t *tr = json_object_get(own, "traits");
    if (json_object_size(tr) && (rc = traits_put(txn, ord, tr, err)))
        return rc;
    const json_t *beh = json_object_get(own, "beh");
    size_t n = json_array_size(beh);
    if (n) {
        beh_entry_t *e = calloc(n, sizeof *e);
        if (e == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        size_t m = 0;
        json_array_foreach(beh, i, v)
        {
            uint64_t s = (uint64_t)json_integer_value(json_array_get(v, 0));
            if (s >= beh_series_count(db->beh))
                continue;
            e[m].series = (uint32_t)s;
            e[m].day = (int32_t)json_integer_value(json_array_get(v, 1));
            e[m].count = (uint64_t)json_integer_value(json_array_get(v, 2));
            if (e[m].count)
                m++;
        }
        rc = beh_user_insert(db->beh, ord, e, m);
        free(e);
        if (rc)
            return CP_ERR(err, rc, "restoring behaviour: %s", cp_strerror(rc));
    }
    return CP_OK;
}
