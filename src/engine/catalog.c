/* catalog.c — the catalog views: traits, properties and events seen. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"
#include "model/codec.h"

/* --------------------------------------------------------------- views */

cp_status cp_properties_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    json_t *j = json_pack("{s:O,s:O}", "traits", json_object_get(db->catalog, "traits"),
                          "properties", json_object_get(db->catalog, "properties"));
    if (j) {
        json_t *ix = json_array();
        for (size_t i = 0; i < db->cfg.nindexed; i++)
            json_array_append_new(ix, json_string(db->cfg.indexed[i]));
        json_object_set_new(j, "indexed_properties", ix);
        const json_t *other = json_object_get(db->catalog, "other_keys");
        if (other)
            json_object_set(j, "other_keys", (json_t *)other);
        /* deep copy: the catalog changes under later writes */
        json_t *c = json_deep_copy(j);
        json_decref(j);
        j = c;
    }
    db_read_end(db);
    return db_json_out(j, out, err);
}

cp_status cp_events_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    json_t *arr = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(db->catalog, "events"), k, v)
    {
        uint32_t series;
        uint64_t users = 0;
        if (beh_resolve(db->beh, k, strlen(k), NULL, 0, &series) == CP_OK &&
            series != BEH_NO_SERIES) {
            beh_window_t w;
            beh_window_init(db->beh, series, INT32_MIN / 2, INT32_MAX / 2, &w);
            roaring_bitmap_t *bm = roaring_bitmap_create();
            if (bm && beh_window_eval(&w, BEH_GE, 1, db->ix->universe, bm) == CP_OK)
                users = roaring_bitmap_get_cardinality(bm);
            index_bm_free(bm);
        }
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I}", "name", k, "count",
                                             json_integer_value(v), "users", (json_int_t)users));
    }
    int32_t first = 0, last = 0;
    json_t *o = json_pack("{s:o}", "events", arr);
    if (o && beh_day_range(db->beh, &first, &last)) {
        char a[40], b[40];
        time_format((int64_t)first * 86400, a, sizeof a);
        time_format((int64_t)last * 86400, b, sizeof b);
        json_object_set_new(o, "first_day", json_stringn(a, 10));
        json_object_set_new(o, "last_day", json_stringn(b, 10));
    }
    db_read_end(db);
    return db_json_out(o, out, err);
}
