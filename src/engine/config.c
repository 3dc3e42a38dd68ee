/* config.c — the intake configuration (cp_intake_config_json,
 * cp_intake_config_set_json; meta "intake_config"). */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"
#include "model/codec.h"

/* ---------------------------------------------------------------- config */

void cfg_clear(intake_cfg_t *c)
{
    for (size_t i = 0; i < c->nindexed; i++)
        free(c->indexed[i]);
    for (size_t i = 0; i < c->nblocklist; i++)
        free(c->blocklist[i]);
    memset(c, 0, sizeof *c);
}

void cfg_defaults(intake_cfg_t *c)
{
    cfg_clear(c);
    c->dedup_window_ms = DEDUP_DEFAULT_WINDOW_MS;
    c->dedup_max = DEDUP_DEFAULT_MAX_ENTRIES;
    c->ckpt_interval_ms = 2000;
    c->ckpt_records = 10000;
    c->skew_correction = 1;
}

static json_t *cfg_to_json(const cp_db_t *db)
{
    const intake_cfg_t *c = &db->cfg;
    json_t *types = json_array(), *idx = json_array(), *block = json_array();
    int bad = 0;
    for (size_t i = 0; i < db->idc.ic_ntypes; i++)
        bad |= json_array_append_new(
            types, json_pack("{s:s,s:b}", "name", db->idc.ic_types[i], "pii",
                             ident_type_hashed(&db->idc, (int)i) || ((db->idc.ic_pii >> i) & 1)));
    for (size_t i = 0; i < c->nindexed; i++)
        bad |= json_array_append_new(idx, json_string(c->indexed[i]));
    for (size_t i = 0; i < c->nblocklist; i++)
        bad |= json_array_append_new(block, json_string(c->blocklist[i]));
    if (bad) { /* a missing entry would be stored as the configuration */
        json_decref(types);
        json_decref(idx);
        json_decref(block);
        return NULL;
    }
    return json_pack("{s:{s:s,s:b,s:o,s:o},s:o,s:{s:f,s:I},s:i,s:{s:I,s:I},s:b}", "identity",
                     "default_country", db->idc.ic_country, "hash_pii", db->idc.ic_hash_pii,
                     "types", types, "blocklist", block, "indexed_properties", idx, "dedup",
                     "window_hours", (double)c->dedup_window_ms / 3600000.0, "max_entries",
                     (json_int_t)c->dedup_max, "retention_days", (int)c->retention_days,
                     "checkpoint", "interval_ms", (json_int_t)c->ckpt_interval_ms, "records",
                     (json_int_t)c->ckpt_records, "clock_skew_correction", c->skew_correction);
}

/* Applies the fields of j over (c, idc). Validates everything; on failure
 * c and idc may be half-changed (callers work on copies). */
cp_status cfg_apply_json(const json_t *j, intake_cfg_t *c, ident_config_t *idc, cp_error_t *err)
{
    if (!json_is_object(j))
        return CP_ERR(err, CP_EINVAL, "intake config: expected a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)j, k, v)
    {
        if (strcmp(k, "identity") && strcmp(k, "indexed_properties") && strcmp(k, "dedup") &&
            strcmp(k, "retention_days") && strcmp(k, "checkpoint") &&
            strcmp(k, "clock_skew_correction"))
            return CP_ERR(err, CP_EINVAL, "intake config: unknown field \"%.64s\"", k);
    }
    cp_status rc = CP_OK;
    const json_t *id = json_object_get(j, "identity");
    if (id) {
        const json_t *bl = json_object_get(id, "blocklist");
        if (bl) {
            if (!json_is_array(bl) || json_array_size(bl) > INTAKE_MAX_BLOCKLIST)
                return CP_ERR(err, CP_EINVAL,
                              "intake config: identity.blocklist must be an array of at most %d "
                              "values",
                              INTAKE_MAX_BLOCKLIST);
            for (size_t i = 0; i < c->nblocklist; i++)
                free(c->blocklist[i]);
            c->nblocklist = 0;
            size_t i;
            json_t *x;
            json_array_foreach(bl, i, x)
            {
                if (!json_is_string(x) || json_string_length(x) == 0 ||
                    json_string_length(x) > IDENT_MAX_VALUE)
                    return CP_ERR(err, CP_EINVAL,
                                  "intake config: identity.blocklist[%zu] must be a value of "
                                  "1..%d bytes",
                                  i, IDENT_MAX_VALUE);
                if ((c->blocklist[c->nblocklist] = strdup(json_string_value(x))) == NULL)
                    return CP_ERR(err, CP_ENOMEM, "out of memory");
                c->nblocklist++;
            }
        }
        const json_t *cc = json_object_get(id, "default_country");
        if (cc && (!json_is_string(cc) ||
                   (rc = ident_config_set_country(idc, json_string_value(cc), err))))
            return json_is_string(cc) ? rc
                                      : CP_ERR(err, CP_EINVAL,
                                               "intake config: identity.default_country must be "
                                               "a string such as \"86\"");
        const json_t *h = json_object_get(id, "hash_pii");
        if (h) {
            if (!json_is_boolean(h))
                return CP_ERR(err, CP_EINVAL, "intake config: identity.hash_pii must be a bool");
            idc->ic_hash_pii = json_is_true(h);
        }
        const json_t *types = json_object_get(id, "types");
        if (types) {
            size_t i;
            json_t *t;
            if (!json_is_array(types))
                return CP_ERR(err, CP_EINVAL, "intake config: identity.types must be an array");
            json_array_foreach(types, i, t)
            {
                const char *name = json_string_value(json_object_get(t, "name"));
                const json_t *pii = json_object_get(t, "pii");
                if (name == NULL)
                    return CP_ERR(err, CP_EINVAL, "intake config: identity.types[%zu] needs a name",
                                  i);
                int p = pii ? json_is_true(pii) : 0;
                if (ident_type_find(idc, name, strlen(name)) < 0) {
                    if ((rc = ident_config_add_type(idc, name, p, err)))
                        return rc;
                } else if (pii && (rc = ident_config_set_pii(idc, name, p, err))) {
                    return rc;
                }
            }
        }
    }
    const json_t *ix = json_object_get(j, "indexed_properties");
    if (ix) {
        if (!json_is_array(ix) || json_array_size(ix) > INTAKE_MAX_INDEXED)
            return CP_ERR(err, CP_EINVAL,
                          "intake config: indexed_properties must be an array of at most %d names",
                          INTAKE_MAX_INDEXED);
        for (size_t i = 0; i < c->nindexed; i++)
            free(c->indexed[i]);
        c->nindexed = 0;
        size_t i;
        json_t *x;
        json_array_foreach(ix, i, x)
        {
            if (!json_is_string(x) || json_string_length(x) == 0 ||
                json_string_length(x) > BEH_NAME_MAX)
                return CP_ERR(err, CP_EINVAL,
                              "intake config: indexed_properties[%zu] must be a property name", i);
            if ((c->indexed[c->nindexed] = strdup(json_string_value(x))) == NULL)
                return CP_ERR(err, CP_ENOMEM, "out of memory");
            c->nindexed++;
        }
    }
    const json_t *dd = json_object_get(j, "dedup");
    if (dd) {
        const json_t *w = json_object_get(dd, "window_hours"),
                     *m = json_object_get(dd, "max_entries");
        if (w) {
            if (!json_is_number(w) || json_number_value(w) <= 0 || json_number_value(w) > 24 * 365)
                return CP_ERR(err, CP_EINVAL,
                              "intake config: dedup.window_hours must be a number in (0, 8760]");
            c->dedup_window_ms = (int64_t)(json_number_value(w) * 3600000.0);
        }
        if (m) {
            if (!json_is_integer(m) || json_integer_value(m) < 1 ||
                json_integer_value(m) > 100000000)
                return CP_ERR(err, CP_EINVAL,
                              "intake config: dedup.max_entries must be 1..100000000");
            c->dedup_max = (uint64_t)json_integer_value(m);
        }
    }
    const json_t *rd = json_object_get(j, "retention_days");
    if (rd) {
        if (!json_is_integer(rd) || json_integer_value(rd) < 0 || json_integer_value(rd) > 36600)
            return CP_ERR(err, CP_EINVAL,
                          "intake config: retention_days must be 0 (keep all) .. 36600");
        c->retention_days = (int32_t)json_integer_value(rd);
    }
    const json_t *ck = json_object_get(j, "checkpoint");
    if (ck) {
        const json_t *iv = json_object_get(ck, "interval_ms"),
                     *rc2 = json_object_get(ck, "records");
        if (iv) {
            if (!json_is_integer(iv) || json_integer_value(iv) < 10 ||
                json_integer_value(iv) > 3600000)
                return CP_ERR(err, CP_EINVAL,
                              "intake config: checkpoint.interval_ms must be 10..3600000");
            c->ckpt_interval_ms = json_integer_value(iv);
        }
        if (rc2) {
            if (!json_is_integer(rc2) || json_integer_value(rc2) < 1)
                return CP_ERR(err, CP_EINVAL, "intake config: checkpoint.records must be >= 1");
            c->ckpt_records = (uint64_t)json_integer_value(rc2);
        }
    }
    const json_t *sk = json_object_get(j, "clock_skew_correction");
    if (sk) {
        if (!json_is_boolean(sk))
            return CP_ERR(err, CP_EINVAL, "intake config: clock_skew_correction must be a bool");
        c->skew_correction = json_is_true(sk);
    }
    return CP_OK;
}

static cp_status cfg_copy(intake_cfg_t *dst, const intake_cfg_t *src)
{
    *dst = *src;
    dst->nblocklist = 0;
    for (size_t i = 0; i < src->nindexed; i++)
        if ((dst->indexed[i] = strdup(src->indexed[i])) == NULL) {
            dst->nindexed = i;
            return CP_ENOMEM;
        }
    for (size_t i = 0; i < src->nblocklist; i++) {
        if ((dst->blocklist[i] = strdup(src->blocklist[i])) == NULL)
            return CP_ENOMEM;
        dst->nblocklist = i + 1;
    }
    return CP_OK;
}

cp_status cp_intake_config_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    json_t *j = cfg_to_json(db);
    db_read_end(db);
    return db_json_out(j, out, err);
}

cp_status cp_intake_config_set_json(cp_db_t *db, const char *json, size_t len, cp_error_t *err)
{
    if (json == NULL)
        return CP_ERR(err, CP_EINVAL, "no JSON given");
    json_error_t je;
    json_t *j = json_loadb_checked(json, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading the intake config");
    if (j == NULL)
        return CP_ERR(err, CP_EINVAL, "intake config: malformed JSON at line %d, column %d: %s",
                      je.line, je.column, je.text);
    store_txn_t *txn;
    intake_cfg_t c = {0};
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc) {
        json_decref(j);
        return rc;
    }
    ident_config_t idc = db->idc;
    if ((rc = cfg_copy(&c, &db->cfg)) || (rc = cfg_apply_json(j, &c, &idc, err)) ||
        (idc.ic_have_salt && (rc = ident_config_bind(txn, &idc, 1, err)))) {
        if (rc == CP_ENOMEM)
            CP_ERR(err, rc, "out of memory");
        db_write_abort(db, txn);
        cfg_clear(&c);
        json_decref(j);
        return rc;
    }
    /* Commit the new settings with everything else. */
    cfg_clear(&db->cfg);
    db->cfg = c;
    db->idc = idc;
    dedup_configure(db->dedup, c.dedup_window_ms, (size_t)c.dedup_max);
    json_t *all = cfg_to_json(db);
    char *s = all ? json_dumps_checked(all, JSON_COMPACT) : NULL;
    json_decref(all);
    json_decref(j);
    if (s == NULL)
        return db_write_fail(db, txn, CP_ENOMEM, err);
    rc = store_put(txn, STORE_META, "intake_config", 13, s, strlen(s), err);
    free(s);
    if (rc)
        return db_write_fail(db, txn, rc, err);
    return db_write_end(db, txn, err);
}
