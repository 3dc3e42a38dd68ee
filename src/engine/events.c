/*
 * events.c — applying validated events (src/ingest/) to a database:
 * identifiers -> normalised keys -> identity resolution (merges move the
 * absorbed user's data into the survivor and keep a snapshot in the
 * lineage), traits -> attributes per the schema (unknown traits kept per
 * user and catalogued), track/page/screen/group -> the behaviour index,
 * first_seen / last_seen, messageId dedup; the intake configuration; whois,
 * unmerge and deletion by identifier; the catalog views.
 *
 * Every write path here holds the write lock. A request is prepared whole
 * first (keys normalised, traits checked against the schema) so a bad
 * event rejects the request before anything changes.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/feed.h"
#include "model/codec.h"

#define TRAITS_MAX_BYTES (64u * 1024) /* unindexed traits kept per user */

/* ---------------------------------------------------------------- config */

static void cfg_clear(intake_cfg_t *c)
{
    for (size_t i = 0; i < c->nindexed; i++)
        free(c->indexed[i]);
    for (size_t i = 0; i < c->nblocklist; i++)
        free(c->blocklist[i]);
    memset(c, 0, sizeof *c);
}

static void cfg_defaults(intake_cfg_t *c)
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
    json_t *types = json_array(), *idx = json_array();
    for (size_t i = 0; i < db->idc.ic_ntypes; i++)
        json_array_append_new(
            types, json_pack("{s:s,s:b}", "name", db->idc.ic_types[i], "pii",
                             ident_type_hashed(&db->idc, (int)i) || ((db->idc.ic_pii >> i) & 1)));
    for (size_t i = 0; i < c->nindexed; i++)
        json_array_append_new(idx, json_string(c->indexed[i]));
    json_t *block = json_array();
    for (size_t i = 0; block && i < c->nblocklist; i++)
        if (json_array_append_new(block, json_string(c->blocklist[i])) != 0) {
            json_decref(block);
            block = NULL;
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
static cp_status cfg_apply_json(const json_t *j, intake_cfg_t *c, ident_config_t *idc,
                                cp_error_t *err)
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
    cp_status rc;
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
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
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
    char *s = all ? json_dumps(all, JSON_COMPACT) : NULL;
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

/* ---------------------------------------------------------------- open */

cp_status intake_open(cp_db_t *db, store_txn_t *rtxn, cp_error_t *err)
{
    cp_status rc;
    pthread_mutex_init(&db->ckpt_mu, NULL);
    pthread_cond_init(&db->ckpt_cv, NULL);
    pthread_mutex_init(&db->grp_mu, NULL);
    pthread_cond_init(&db->grp_cv, NULL);
    cfg_defaults(&db->cfg);
    ident_config_init(&db->idc);
    const void *v;
    size_t vl;
    rc = store_get(rtxn, STORE_META, "intake_config", 13, &v, &vl, err);
    if (rc == CP_OK) {
        json_error_t je;
        json_t *j = json_loadb(v, vl, 0, &je);
        if (j == NULL)
            return CP_ERR(err, CP_EIO, "data directory %s: corrupt intake_config",
                          store_dir(db->st));
        rc = cfg_apply_json(j, &db->cfg, &db->idc, err);
        json_decref(j);
        if (rc)
            return rc;
    } else if (rc != CP_ENOTFOUND) {
        return rc;
    }
    rc = ident_config_bind(rtxn, &db->idc, 0, err);
    if (rc && rc != CP_ENOTFOUND)
        return rc;
    if ((rc = beh_create(&db->beh)) || (rc = acc_init(db)))
        return CP_ERR(err, rc, "out of memory");
    if ((rc = beh_load(db->beh, rtxn, STORE_INTAKE, err)))
        return rc;
    if ((rc = meas_create(&db->meas)) ||
        (rc = meas_load(db->meas, rtxn, STORE_INTAKE, err))) /* event measures (RFM) */
        return rc == CP_ENOMEM ? CP_ERR(err, rc, "out of memory") : rc;
    if (dedup_create(db->cfg.dedup_window_ms, (size_t)db->cfg.dedup_max, &db->dedup))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    if ((rc = dedup_load(db->dedup, rtxn, STORE_INTAKE, time_now_ms(), err)))
        return rc;
    rc = store_get(rtxn, STORE_INTAKE, "catalog", 7, &v, &vl, err);
    if (rc == CP_OK) {
        db->catalog = json_loadb(v, vl, 0, NULL);
        if (!json_is_object(db->catalog))
            return CP_ERR(err, CP_EIO, "data directory %s: corrupt event catalog",
                          store_dir(db->st));
    } else if (rc != CP_ENOTFOUND) {
        return rc;
    } else {
        db->catalog = json_pack("{s:{},s:{},s:{}}", "traits", "properties", "events");
        if (db->catalog == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    uint64_t lsn = 0;
    rc = store_meta_get_u64(rtxn, "wal_lsn", &lsn, err);
    if (rc && rc != CP_ENOTFOUND)
        return rc;
    db->ckpt_lsn = db->applied_lsn = lsn;
    group_set_init(&db->groups);
    if ((rc = group_set_load(&db->groups, rtxn, err)))
        return rc;
    const schema_attr_t *a = schema_find(&db->sch, "first_seen", 10);
    db->attr_first_seen = a && a->type == CP_ATTR_TIMESTAMP ? a->id : 0;
    a = schema_find(&db->sch, "last_seen", 9);
    db->attr_last_seen = a && a->type == CP_ATTR_TIMESTAMP ? a->id : 0;
    return CP_OK;
}

void intake_free(cp_db_t *db)
{
    acc_free(db);
    beh_free(db->beh);
    db->beh = NULL;
    meas_free(db->meas);
    db->meas = NULL;
    dedup_free(db->dedup);
    db->dedup = NULL;
    json_decref(db->catalog);
    db->catalog = NULL;
    group_set_free(&db->groups);
    cfg_clear(&db->cfg);
}

cp_status db_user_lookup(store_txn_t *txn, const char *id, size_t len, uint32_t *ord,
                         cp_error_t *err)
{
    uint32_t o;
    cp_status rc = users_lookup(txn, id, len, &o, err);
    if (rc)
        return rc;
    if ((rc = identity_canonical(txn, o, ord, err)) == CP_ENOTFOUND) {
        *ord = o;
        rc = CP_OK;
    }
    return rc;
}

/* ------------------------------------------------------ attribute values */

/* A trait as a value of attribute a; *why gets the reason on failure. */
typedef struct tval {
    int kind; /* 0 clear, 1 int, 2 str, 3 geo */
    int64_t i;
    char sbuf[64];
    const char *s;
    size_t slen;
    double lat, lon;
} tval_t;

/*
 * A trait as a value of attribute a; *why gets the reason on failure. v is
 * the typed value; raw its JSON when it came from JSON (NULL for CSV rows):
 * a JSON null clears the attribute, and geo values need the JSON ([lat,
 * lon] or {"lat","lon"}).
 */
static int trait_value(const schema_attr_t *a, const ev_prop_t *v, const json_t *raw, tval_t *o,
                       char *why, size_t cap)
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

static int trait_value_json(const schema_attr_t *a, const json_t *v, tval_t *o, char *why,
                            size_t cap)
{
    ev_prop_t pv;
    pv_from_json(a->name, strlen(a->name), v, &pv);
    return trait_value(a, &pv, v, o, why, cap);
}

static cp_status set_value(cp_db_t *db, store_txn_t *txn, const schema_attr_t *a, uint32_t ord,
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

/* A user's value of an attribute as JSON (NULL if none). */
static json_t *attr_json(const cp_db_t *db, const schema_attr_t *a, uint32_t ord, int typed)
{
    int64_t x;
    double lat, lon;
    switch (a->type) {
    case CP_ATTR_INT:
        return index_get_int(db->ix, a->id, ord, &x) ? json_integer(x) : NULL;
    case CP_ATTR_TIMESTAMP:
        if (!index_get_int(db->ix, a->id, ord, &x))
            return NULL;
        if (!typed)
            return json_integer(x);
        char buf[40];
        time_format(x, buf, sizeof buf);
        return json_string(buf);
    case CP_ATTR_GEO:
        return index_get_geo(db->ix, a->id, ord, &lat, &lon) ? json_pack("[f,f]", lat, lon) : NULL;
    default: {
        uint32_t vid = index_get_value(db->ix, a->id, ord);
        if (vid == 0 || vid > a->nvalues)
            return NULL;
        if (a->type == CP_ATTR_BOOL && typed)
            return json_boolean(strcmp(a->values[vid], "true") == 0);
        return json_stringn(a->values[vid], a->value_lens[vid]);
    }
    }
}

/* ------------------------------------------------------- per-user traits */

static void ut_key(unsigned char k[7], uint32_t ord)
{
    memcpy(k, "ut/", 3);
    be32_put(k + 3, ord);
}

/* The user's unindexed traits (new object; empty if none). */
static cp_status traits_get(store_txn_t *txn, uint32_t ord, json_t **out, cp_error_t *err)
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
    *out = json_loadb(v, vl, 0, NULL);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return CP_ERR(err, CP_EIO, "corrupt traits of user ordinal %u", ord);
    }
    return CP_OK;
}

static cp_status traits_put(store_txn_t *txn, uint32_t ord, json_t *t, cp_error_t *err)
{
    unsigned char k[7];
    ut_key(k, ord);
    if (json_object_size(t) == 0)
        return store_del(txn, STORE_INTAKE, k, 7, err);
    char *s = json_dumps(t, JSON_COMPACT | JSON_SORT_KEYS);
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
 * behaviour. For merge lineage (and unmerge). */
static json_t *user_own(cp_db_t *db, store_txn_t *txn, uint32_t ord)
{
    json_t *attrs = json_object(), *tags = json_array(), *beh = json_array();
    json_t *traits = NULL;
    if (traits_get(txn, ord, &traits, NULL))
        traits = json_object();
    for (uint32_t i = 1; i <= db->sch.n; i++) {
        const schema_attr_t *a = schema_get(&db->sch, i);
        json_t *v = a ? attr_json(db, a, ord, 0) : NULL;
        if (v)
            json_object_set_new(attrs, a->name, v);
    }
    for (uint32_t t = 1; t < db->tax.next_id; t++) {
        const idx_tag_t *it = index_tag(db->ix, t);
        const tax_tag_t *g = tax_get(&db->tax, t);
        if (it && g && roaring_bitmap_contains(it->direct, ord))
            json_array_append_new(tags, json_string(g->path));
    }
    beh_entry_t *e = NULL;
    size_t n = 0;
    if (beh_user_extract(db->beh, ord, &e, &n) == CP_OK)
        for (size_t i = 0; i < n; i++)
            json_array_append_new(beh, json_pack("[I,i,I]", (json_int_t)e[i].series, (int)e[i].day,
                                                 (json_int_t)e[i].count));
    free(e);
    return json_pack("{s:o,s:o,s:o,s:o}", "attrs", attrs, "tags", tags, "traits", traits, "beh",
                     beh);
}

/* Sets a user's own data from a snapshot side (a restored user). */
static cp_status user_restore(cp_db_t *db, store_txn_t *txn, uint32_t ord, const json_t *own,
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

/* ------------------------------------------------------------ merge */

static int is_seen_attr(const cp_db_t *db, uint32_t id)
{
    return id && (id == db->attr_first_seen || id == db->attr_last_seen);
}

/*
 * Moves absorbed's data into survivor (survivor's values win where both
 * have one; first_seen takes the minimum, last_seen the maximum), records
 * the merge with both sides' own data as the snapshot.
 */
static cp_status do_merge(cp_db_t *db, store_txn_t *txn, uint32_t s, uint32_t a,
                          const char *const *keys, size_t nkeys, const ingest_event_t *e,
                          cp_error_t *err)
{
    /* Queued updates first: the snapshot and the move see all of both. */
    cp_status rc = acc_flush(db, err);
    if (rc)
        return rc;
    idcache_clear(db);
    json_t *snap =
        json_pack("{s:i,s:o,s:o}", "v", 1, "a", user_own(db, txn, a), "s", user_own(db, txn, s));
    char *blob = snap ? json_dumps(snap, JSON_COMPACT) : NULL;
    json_decref(snap);
    if (blob == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    identity_merge_info_t info = {0};
    info.time_ms = e->received_at ? e->received_at * 1000 : time_now_ms();
    info.keys = keys;
    info.nkeys = nkeys;
    char mid[INGEST_MSGID_MAX + 1];
    snprintf(mid, sizeof mid, "%.*s", (int)e->message_id_len, e->message_id);
    info.message_id = mid;
    info.source = ingest_type_name(e->type);
    info.snapshot = blob;
    info.snapshot_len = strlen(blob);
    uint64_t merge_id;
    rc = identity_record_merge(txn, s, a, &info, &merge_id, err);
    free(blob);
    if (rc)
        return rc;
    /* attributes */
    for (uint32_t i = 1; i <= db->sch.n; i++) {
        const schema_attr_t *at = schema_get(&db->sch, i);
        if (at == NULL)
            continue;
        if (at->type == CP_ATTR_INT || at->type == CP_ATTR_TIMESTAMP) {
            int64_t va, vs;
            if (!index_get_int(db->ix, i, a, &va))
                continue;
            int hs = index_get_int(db->ix, i, s, &vs);
            if (!hs || (i == db->attr_first_seen && va < vs) ||
                (i == db->attr_last_seen && va > vs))
                if ((rc = index_set_int(db->ix, i, s, va)))
                    return CP_ERR(err, rc, "merging attribute \"%s\"", at->name);
        } else if (at->type == CP_ATTR_GEO) {
            double la, lo, x, y;
            if (index_get_geo(db->ix, i, a, &la, &lo) && !index_get_geo(db->ix, i, s, &x, &y))
                if ((rc = index_set_geo(db->ix, i, s, la, lo)))
                    return CP_ERR(err, rc, "merging attribute \"%s\"", at->name);
        } else {
            uint32_t va = index_get_value(db->ix, i, a);
            if (va && !index_get_value(db->ix, i, s))
                if ((rc = index_set_value(db->ix, i, s, va)))
                    return CP_ERR(err, rc, "merging attribute \"%s\"", at->name);
        }
    }
    (void)is_seen_attr;
    /* tags */
    for (uint32_t t = 1; t < db->tax.next_id; t++) {
        const idx_tag_t *it = index_tag(db->ix, t);
        if (it && roaring_bitmap_contains(it->direct, a))
            index_tag_assign(db->ix, &db->tax, s, t);
    }
    /* unindexed traits: the survivor's win */
    json_t *ta = NULL, *ts = NULL;
    if ((rc = traits_get(txn, a, &ta, err)) || (rc = traits_get(txn, s, &ts, err))) {
        json_decref(ta);
        return rc;
    }
    if (json_object_size(ta)) {
        json_object_update_missing(ts, ta);
        rc = traits_put(txn, s, ts, err);
        if (rc == CP_OK) {
            json_object_clear(ta);
            rc = traits_put(txn, a, ta, err);
        }
    }
    json_decref(ta);
    json_decref(ts);
    if (rc)
        return rc;
    if ((rc = beh_user_move(db->beh, a, s)))
        return CP_ERR(err, rc, "merging behaviour: %s", cp_strerror(rc));
    if ((rc = meas_user_move(db->meas, a, s))) /* event measures: not split again by unmerge */
        return CP_ERR(err, rc, "merging event measures: %s", cp_strerror(rc));
    /* group memberships: the survivor is the member now (unmerge keeps them) */
    if ((rc = group_move_member(&db->groups, txn, a, s, err)))
        return rc;
    index_user_delete(db->ix, &db->tax, a);
    db->data_changed = 1;
    return CP_OK;
}

/* ------------------------------------------------------------- prepare */

#define HOT_TRAITS 16 /* trait positions of the bulk import memo (hot_t) */

struct prep {
    const char *keys[IDENTITY_MAX_EVENT_KEYS];
    size_t nkeys;
    int cached;                        /* bulk imports: slot[] holds every key's cache slot */
    const char *prev_user, *prev_anon; /* alias: candidate keys of previousId */
    const char *display;               /* id in the user dictionary for a new user */
    size_t display_len;                /* (borrowed from the event or a key) */
    /* Typed properties and traits (traits in application order: context
     * traits, then traits, which win); *raw is the JSON of each, NULL for
     * typed events (CSV rows). Identifier-typed traits are left out. */
    const ev_prop_t *props;
    const json_t *const *praw;
    size_t nprops;
    const ev_prop_t *traits;
    const json_t *const *traw;
    size_t ntraits;
    /* Each key's slot in the identifier key cache (acc.c; UINT32_MAX: not
     * cached); valid below nkeys. */
    uint32_t slot[IDENTITY_MAX_EVENT_KEYS];
    /* Bulk imports (prepared with the batch memo): per typed trait
     * position below HOT_TRAITS, hot_value's answer for it, which
     * apply_traits, right after, would get again. */
    uint32_t tvid[HOT_TRAITS];
    int skip; /* rejected by prep_event: apply_batch passes over it */
};

void bp_free(batch_prep_t *bp)
{
    free(bp->p);
    arena_free(&bp->arena);
}

/*
 * What a bulk import's rows repeat, event after event, resolved once per
 * batch (intake_import_batch): per trait position, whether the name is an
 * identifier type and which attribute it sets, and the dictionary value it
 * set last; the last event name found usable. The write lock is held for
 * the whole batch, so identifier types and the intake config cannot change
 * under it; attributes can only be added (first_seen / last_seen), which
 * the schema's highest id tells. Names are borrowed from events of the
 * batch (alive until it ends) and always compared by content.
 */
typedef struct hot_trait {
    const char *name; /* NULL = nothing known */
    size_t nlen;
    int is_ident;
    uint32_t attr; /* 0 = no attribute of that name */
    uint32_t vid;  /* STRING/ENUM: value last set from here (0 = none) */
} hot_trait_t;
typedef struct hot {
    uint32_t sch_n;
    hot_trait_t tr[HOT_TRAITS];
    const char *event; /* last event name found usable */
    size_t event_len;
} hot_t;

/* The memo of trait position i for t (filled if unknown); NULL past the
 * positions kept. */
static inline hot_trait_t *hot_trait(cp_db_t *db, hot_t *h, size_t i, const ev_prop_t *t)
{
    if (h == NULL || i >= HOT_TRAITS)
        return NULL;
    if (h->sch_n != db->sch.n) { /* an attribute was added: forget what was not one */
        memset(h->tr, 0, sizeof h->tr);
        h->sch_n = db->sch.n;
    }
    hot_trait_t *m = &h->tr[i];
    if (m->name && m->nlen == t->nlen && (m->name == t->name || mem_eq(m->name, t->name, t->nlen)))
        return m;
    const schema_attr_t *a = schema_find(&db->sch, t->name, t->nlen);
    *m = (hot_trait_t){t->name, t->nlen, ident_type_find(&db->idc, t->name, t->nlen) >= 0,
                       a ? a->id : 0, 0};
    return m;
}

/* The dictionary id of t's value when it is the one last set from memo m
 * (then trait_value would accept it and schema_value_intern return it). */
static inline uint32_t hot_value(const schema_attr_t *a, const hot_trait_t *m, const ev_prop_t *t)
{
    if (m == NULL || m->vid == 0 || t->kind != PV_STR || m->vid > a->nvalues ||
        (a->type != CP_ATTR_STRING && a->type != CP_ATTR_ENUM))
        return 0;
    return a->value_lens[m->vid] == t->slen && mem_eq(a->values[m->vid], t->s, t->slen) ? m->vid
                                                                                        : 0;
}

static cp_status make_key(cp_db_t *db, arena_t *ar, const char *type, const char *v, size_t vl,
                          const char **out, cp_error_t *err)
{
    char buf[IDENT_MAX_KEY + 1];
    size_t n;
    cp_status rc = ident_key(&db->idc, type, strlen(type), v, vl, buf, &n, err);
    if (rc)
        return rc;
    *out = arena_strndup(ar, buf, n);
    return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
}

static int is_traits_ident(cp_db_t *db, const char *k, size_t klen)
{
    return ident_type_find(&db->idc, k, klen) >= 0;
}

void intake_count_warning(cp_db_t *db, const char *reason)
{
    atomic_uint_least64_t *c = !strcmp(reason, INGEST_WARN_PLACEHOLDER)   ? &db->warn_placeholder
                               : !strcmp(reason, INGEST_WARN_BLOCKLISTED) ? &db->warn_blocklisted
                               : !strcmp(reason, INGEST_WARN_TYPE)        ? &db->warn_type
                                                                          : &db->warn_invalid;
    atomic_fetch_add(c, 1);
}

/*
 * A value of event e that is not used (an identifier or a trait): a
 * warning in b (requests), or for imports (b NULL) only the counters.
 * `field` names where it was; identifiers found in a traits object get
 * their key appended ("traits" + "email" -> "traits.email").
 */
static void warn_value(cp_db_t *db, ingest_batch_t *b, const ingest_event_t *e, const char *field,
                       const char *key, size_t klen, const char *reason)
{
    char f[64];
    if (key)
        snprintf(f, sizeof f, "%s.%.*s", field, (int)klen, key);
    else
        snprintf(f, sizeof f, "%s", field);
    if (b) {
        ingest_batch_warn(b, e->index, f, reason);
        return;
    }
    intake_count_warning(db, reason);
}

/* 0, or the reason (INGEST_WARN_*) why identifier i of e is not used for
 * identity: a placeholder or a blocklisted value. */
static const char *id_unusable(const cp_db_t *db, const ingest_ident_t *id)
{
    int why = ident_value_unusable(id->value, id->len, (const char *const *)db->cfg.blocklist,
                                   db->cfg.nblocklist);
    return why == IDENT_PLACEHOLDER   ? INGEST_WARN_PLACEHOLDER
           : why == IDENT_BLOCKLISTED ? INGEST_WARN_BLOCKLISTED
                                      : NULL;
}

/* The field of identifier id in warnings: "traits" -> "traits.email". */
static void id_warn(cp_db_t *db, ingest_batch_t *b, const ingest_event_t *e,
                    const ingest_ident_t *id, const char *reason)
{
    int in_traits = !strcmp(id->field, "traits") || !strcmp(id->field, "context.traits");
    warn_value(db, b, e, id->field, in_traits ? id->type : NULL, strlen(id->type), reason);
}

/* The typed form of a JSON event's properties and traits, in the arena. */
static cp_status prep_typed(cp_db_t *db, const ingest_event_t *e, prep_t *p, arena_t *ar)
{
    if (e->properties == NULL && e->traits == NULL && e->ctx_traits == NULL) {
        p->props = e->tprops;
        p->nprops = e->ntprops;
        p->traits = e->ttraits;
        p->ntraits = e->nttraits;
        return CP_OK;
    }
    size_t np = json_object_size(e->properties);
    size_t nt = json_object_size(e->traits) + json_object_size(e->ctx_traits);
    ev_prop_t *pv = arena_alloc(ar, (np + nt + 1) * sizeof *pv);
    const json_t **raw = arena_alloc(ar, (np + nt + 1) * sizeof *raw);
    if (pv == NULL || raw == NULL)
        return CP_ENOMEM;
    const char *k;
    json_t *v;
    size_t n = 0;
    json_object_foreach((json_t *)e->properties, k, v)
    {
        raw[n] = v;
        pv_from_json(k, strlen(k), v, &pv[n++]);
    }
    p->props = pv;
    p->praw = raw;
    p->nprops = n;
    const json_t *objs[2] = {e->ctx_traits, e->traits}; /* traits win over context.traits */
    for (int w = 0; w < 2; w++)
        json_object_foreach((json_t *)objs[w], k, v)
        {
            size_t kl = strlen(k);
            if (is_traits_ident(db, k, kl))
                continue;
            raw[n] = v;
            pv_from_json(k, kl, v, &pv[n++]);
        }
    p->traits = pv + p->nprops;
    p->traw = raw + p->nprops;
    p->ntraits = n - p->nprops;
    return CP_OK;
}

/* The key of identifier i of e through the identifier key cache. */
static cp_status cached_key(cp_db_t *db, const ingest_event_t *e, size_t i, prep_t *p, arena_t *ar,
                            const char **unusable, cp_error_t *err)
{
    const ingest_ident_t *id = &e->ids[i];
    uint32_t slot;
    const char *hk = idraw_hint(db, i, id->type, id->value, id->len, &slot);
    if (hk) { /* the same identifier as at this position of the event before */
        p->keys[p->nkeys] = hk;
        p->slot[p->nkeys++] = slot;
        return CP_OK;
    }
    size_t tlen = strnlen(id->type, sizeof id->type), klen;
    if (idraw_get(db, i, id->type, tlen, id->value, id->len, &slot)) {
        p->keys[p->nkeys] = idraw_key(db, slot, &klen);
        p->slot[p->nkeys++] = slot;
        return CP_OK;
    }
    if (ident_type_find(&db->idc, id->type, tlen) < 0)
        return CP_ENOTFOUND; /* not a configured type: skipped */
    /* Only values accepted here enter the cache, so its hits above need
     * no placeholder check. */
    if ((*unusable = id_unusable(db, id)) != NULL)
        return CP_ENOTFOUND;
    char buf[IDENT_MAX_KEY + 1];
    cp_status rc = ident_key(&db->idc, id->type, tlen, id->value, id->len, buf, &klen, err);
    if (rc)
        return rc;
    if ((rc = idraw_put(db, i, id->type, tlen, id->value, id->len, buf, klen, &slot)))
        return CP_ERR(err, rc, "out of memory");
    if (slot == UINT32_MAX) {
        p->cached = 0;
        p->keys[p->nkeys] = arena_strndup(ar, buf, klen);
        if (p->keys[p->nkeys] == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
    } else {
        p->keys[p->nkeys] = idraw_key(db, slot, &klen);
    }
    p->slot[p->nkeys++] = slot;
    return CP_OK;
}

/*
 * Checks one event against the schema and identity config (lock held).
 * h: the batch memo of a bulk import, or NULL. wb: where warnings go (a
 * request's batch), NULL for imports (counters only). A value that cannot
 * be used (an unusable or unnormalisable identifier, a trait that does not
 * fit its attribute) is a warning, not an error; errors are what makes the
 * event itself unusable (no identifier left, an unusable event name).
 */
static cp_status prep_event(cp_db_t *db, const ingest_event_t *e, prep_t *p, arena_t *ar, hot_t *h,
                            ingest_batch_t *wb, cp_error_t *err)
{
    cp_status rc;
    /* Field by field: keys[] and slot[] are read only below nkeys. */
    p->nkeys = 0;
    p->prev_user = p->prev_anon = NULL;
    p->display = NULL;
    p->display_len = 0;
    p->props = p->traits = NULL;
    p->praw = p->traw = NULL;
    p->nprops = p->ntraits = 0;
    p->skip = 0;
    /* The key cache is by raw value: a locale hint could change a phone's key. */
    p->cached = h != NULL && e->type != ING_ALIAS && e->phone_cc[0] == '\0';
    uint32_t used = 0; /* identifiers of e that became keys (bit i: e->ids[i]) */
    size_t dropped = 0;
    for (size_t i = 0; i < e->nids; i++) {
        const ingest_ident_t *id = &e->ids[i];
        if (p->cached) {
            const char *why = NULL;
            rc = cached_key(db, e, i, p, ar, &why, NULL);
            if (rc == CP_ENOMEM)
                return CP_ERR(err, rc, "out of memory");
            if (rc == CP_ENOTFOUND && why == NULL)
                continue; /* not a configured type */
            if (rc) {
                id_warn(db, wb, e, id, why ? why : INGEST_WARN_INVALID);
                dropped++;
                continue;
            }
            used |= 1u << i;
            continue;
        }
        if (ident_type_find(&db->idc, id->type, strlen(id->type)) < 0)
            continue;
        const char *why = id_unusable(db, id);
        if (why) {
            id_warn(db, wb, e, id, why);
            dropped++;
            continue;
        }
        char buf[IDENT_MAX_KEY + 1];
        size_t kl;
        cp_error_t ke;
        rc = ident_key_hint(&db->idc, id->type, strlen(id->type), id->value, id->len, e->phone_cc,
                            buf, &kl, &ke);
        if (rc == CP_EINVAL || rc == CP_ELIMIT) {
            id_warn(db, wb, e, id, INGEST_WARN_INVALID);
            dropped++;
            continue;
        }
        if (rc) {
            error_prefix(&ke, "%s: ", id->field);
            return CP_ERR(err, rc, "%s", ke.message);
        }
        if ((p->keys[p->nkeys] = arena_strndup(ar, buf, kl)) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        p->nkeys++;
        used |= 1u << i;
    }
    if (e->type == ING_ALIAS) {
        if ((rc = make_key(db, ar, "user_id", e->previous_id, e->previous_id_len, &p->prev_user,
                           err)) ||
            (rc = make_key(db, ar, "anonymous_id", e->previous_id, e->previous_id_len,
                           &p->prev_anon, err)))
            return rc;
        if (p->nkeys >= IDENTITY_MAX_EVENT_KEYS)
            return CP_ERR(err, CP_ELIMIT, "too many identifiers");
    }
    if (p->nkeys == 0)
        return dropped ? CP_ERR(err, CP_EINVAL,
                                "no usable identifier (%zu unusable value%s, see warnings)",
                                dropped, dropped == 1 ? "" : "s")
                       : CP_ERR(err, CP_EINVAL, "no identifier of a configured type");
    /* The id of a new user: its user_id, else its first identifier key
     * (borrowed: the event and the keys outlive the apply). */
    for (size_t i = 0; i < e->nids; i++)
        if ((used >> i & 1) &&
            !memcmp(e->ids[i].type, "user_id", 8)) { /* with its NUL; type[] has 32 bytes */
            p->display = e->ids[i].value;
            p->display_len = e->ids[i].len;
            break;
        }
    if (p->display == NULL) {
        p->display = p->keys[0];
        p->display_len = strlen(p->keys[0]);
    }
    if (prep_typed(db, e, p, ar))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    for (size_t i = 0; i < p->ntraits; i++) {
        const ev_prop_t *t = &p->traits[i];
        const hot_trait_t *m = hot_trait(db, h, i, t);
        if (p->traw == NULL && (m ? m->is_ident : is_traits_ident(db, t->name, t->nlen)))
            continue;
        const schema_attr_t *a =
            m ? schema_get(&db->sch, m->attr) : schema_find(&db->sch, t->name, t->nlen);
        if (a == NULL)
            continue;
        uint32_t vid = p->traw == NULL ? hot_value(a, m, t) : 0;
        if (m)
            p->tvid[i] = vid;
        tval_t tv;
        char why[160];
        /* kept unindexed by apply_traits, with this warning */
        if (!vid && trait_value(a, t, p->traw ? p->traw[i] : NULL, &tv, why, sizeof why))
            warn_value(db, wb, e, "traits", t->name, t->nlen, INGEST_WARN_TYPE);
    }
    if (e->event && !(h && h->event && h->event_len == e->event_len &&
                      (h->event == e->event || mem_eq(h->event, e->event, e->event_len)))) {
        uint8_t key[BEH_KEY_MAX];
        size_t kl;
        if ((rc = beh_series_key(e->event, e->event_len, NULL, 0, key, &kl)))
            return CP_ERR(err, rc, "event name \"%.64s\" is not usable: too long or empty",
                          e->event);
        if (h) {
            h->event = e->event;
            h->event_len = e->event_len;
        }
    }
    return CP_OK;
}

cp_status prep_batch(cp_db_t *db, ingest_batch_t *b, batch_prep_t *bp, int strict, cp_error_t *err)
{
    memset(bp, 0, sizeof *bp);
    arena_init(&bp->arena, 256u << 20);
    bp->p = calloc(b->n ? b->n : 1, sizeof *bp->p);
    if (bp->p == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    size_t skipped = 0;
    for (size_t i = 0; i < b->n; i++) {
        cp_error_t ee = {0};
        const ingest_event_t *e = &b->events[i];
        /* The warnings of an event rejected here go with it. */
        size_t w0 = b->warned, nw0 = b->nwarnings;
        cp_status rc = prep_event(db, e, &bp->p[i], &bp->arena, NULL, b, &ee);
        if (rc == CP_ENOMEM)
            return CP_ERR(err, rc, "out of memory");
        if (rc) {
            b->warned = w0;
            b->nwarnings = nw0;
            ingest_batch_reject(b, e->index, rc, "%s", ee.message);
            bp->p[i].skip = 1;
            skipped++;
        }
    }
    if (b->rejected && (strict || skipped == b->n))
        return CP_ERR(err, CP_EINVAL, "%zu of %zu events are invalid; nothing was applied",
                      b->rejected, b->n + b->rejected - skipped);
    return CP_OK;
}

/* ---------------------------------------------------------------- apply */

static cp_status ensure_seen_attrs(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    static const char *const names[2] = {"first_seen", "last_seen"};
    uint32_t *ids[2] = {&db->attr_first_seen, &db->attr_last_seen};
    for (int i = 0; i < 2; i++) {
        if (*ids[i])
            continue;
        int created;
        uint32_t id;
        cp_status rc =
            schema_define(&db->sch, txn, names[i], CP_ATTR_TIMESTAMP, &id, &created, err);
        if (rc == CP_ECONFLICT)
            continue; /* declared with another type by the user: leave it alone */
        if (rc)
            return rc;
        if (created && (rc = index_attr_add(db->ix, id, CP_ATTR_TIMESTAMP)))
            return CP_ERR(err, rc, "out of memory");
        *ids[i] = id;
    }
    return CP_OK;
}

static int is_indexed(const cp_db_t *db, const char *k, size_t klen)
{
    for (size_t i = 0; i < db->cfg.nindexed; i++)
        if (strlen(db->cfg.indexed[i]) == klen && !memcmp(db->cfg.indexed[i], k, klen))
            return 1;
    return 0;
}

/*
 * The user an event belongs to: resolves its keys (creating the user or
 * merging users as identity_resolve plans), or takes them from the
 * identity cache when every key is known under one user.
 */
static cp_status resolve_user(cp_db_t *db, store_txn_t *txn, const ingest_event_t *e,
                              const prep_t *p, uint32_t *out, apply_counts_t *c, cp_error_t *err)
{
    cp_status rc;
    const char *keys[IDENTITY_MAX_EVENT_KEYS];
    size_t nk = p->nkeys;
    if (p->cached) { /* bulk import: ordinals kept beside the keys */
        uint32_t o0 = 0, o;
        size_t hit = 0;
        for (; hit < nk; hit++)
            if (p->slot[hit] == UINT32_MAX || !idraw_ord(db, p->slot[hit], &o) || (hit && o != o0))
                break;
            else
                o0 = o;
        if (hit == nk) {
            *out = o0;
            return CP_OK;
        }
    }
    memcpy(keys, p->keys, nk * sizeof *keys);
    if (e->type != ING_ALIAS) {
        uint32_t o0 = 0, o;
        size_t hit = 0;
        for (; hit < nk; hit++)
            if (!idcache_get(db, keys[hit], strlen(keys[hit]), &o) || (hit && o != o0))
                break;
            else
                o0 = o;
        if (hit == nk) {
            *out = o0;
            return CP_OK;
        }
    }
    if (e->type == ING_ALIAS) {
        uint32_t o;
        rc = identity_lookup(txn, p->prev_user, strlen(p->prev_user), &o, err);
        if (rc && rc != CP_ENOTFOUND)
            return rc;
        keys[nk++] = rc == CP_OK ? p->prev_user : p->prev_anon;
    }
    /* Users loaded through the user API before they had events: their id
     * is their user_id. */
    for (size_t i = 0; i < nk; i++) {
        if (strncmp(keys[i], "user_id:", 8) != 0)
            continue;
        uint32_t o;
        rc = identity_lookup(txn, keys[i], strlen(keys[i]), &o, err);
        if (rc != CP_ENOTFOUND) {
            if (rc)
                return rc;
            continue;
        }
        if ((rc = db_user_lookup(txn, keys[i] + 8, strlen(keys[i] + 8), &o, err)) == CP_OK) {
            if ((rc = identity_attach(txn, o, &keys[i], 1, err)))
                return rc;
        } else if (rc != CP_ENOTFOUND) {
            return rc;
        }
    }
    identity_resolution_t r;
    if ((rc = identity_resolve(txn, keys, nk, &r, err)))
        return rc;
    uint32_t ord;
    if (r.ir_new) {
        if (db->next_ordinal > USERS_MAX_ORDINAL)
            return CP_ERR(err, CP_ELIMIT, "no user ordinals left");
        ord = db->next_ordinal++;
        uint32_t other;
        const char *id = p->display;
        size_t idl = p->display_len;
        char alt[32];
        if (users_lookup(txn, id, idl, &other, NULL) == CP_OK) {
            snprintf(alt, sizeof alt, "#%u", ord);
            id = alt;
            idl = strlen(alt);
        }
        if ((rc = users_add(txn, id, idl, ord, err)) ||
            (rc = identity_attach(txn, ord, keys, nk, err)))
            return rc;
        index_user_add(db->ix, ord);
        c->created++;
    } else {
        for (size_t m = 0; m < r.ir_nmerges; m++) {
            const char *cause[IDENTITY_MAX_EVENT_KEYS];
            size_t nc = 0;
            for (size_t i = 0; i < nk; i++)
                if (r.ir_merges[m].cause_mask & (1u << i))
                    cause[nc++] = keys[i];
            if ((rc = do_merge(db, txn, r.ir_merges[m].survivor, r.ir_merges[m].absorbed, cause, nc,
                               e, err)))
                return rc;
            c->merges++;
        }
        if ((rc = identity_attach(txn, r.ir_attach_to, keys, nk, err)))
            return rc;
        ord = r.ir_ordinal;
    }
    for (size_t i = 0; i < nk; i++)
        idcache_put(db, keys[i], strlen(keys[i]), ord);
    if (p->cached) /* after idcache_put: it may clear (and so outdate) the cache */
        for (size_t i = 0; i < p->nkeys; i++)
            if (p->slot[i] != UINT32_MAX)
                idraw_set_ord(db, p->slot[i], ord);
    *out = ord;
    return CP_OK;
}

static cp_status apply_traits(cp_db_t *db, store_txn_t *txn, const prep_t *p, uint32_t ord,
                              hot_t *h, cp_error_t *err)
{
    cp_status rc;
    json_t *ut = NULL;
    /* h: prep_event just filled the memo for these traits, and p->tvid;
     * both hold while no attribute was added since (hot_trait). */
    int carried = h && h->sch_n == db->sch.n;
    for (size_t i = 0; i < p->ntraits; i++) {
        const ev_prop_t *t = &p->traits[i];
        const json_t *raw = p->traw ? p->traw[i] : NULL;
        hot_trait_t *m = carried && i < HOT_TRAITS ? &h->tr[i] : hot_trait(db, h, i, t);
        if (raw == NULL && (m ? m->is_ident : is_traits_ident(db, t->name, t->nlen)))
            continue;
        schema_attr_t *a =
            m ? schema_get(&db->sch, m->attr) : schema_find(&db->sch, t->name, t->nlen);
        if (a) {
            tval_t tv;
            char why[160];
            uint32_t vid = raw != NULL ? 0 : carried && m ? p->tvid[i] : hot_value(a, m, t);
            if (vid) { /* the value set from here last time: known good */
                /* index_set_value would find it unchanged too, at more cost */
                if (index_get_value(db->ix, a->id, ord) != vid &&
                    (rc = index_set_value(db->ix, a->id, ord, vid))) {
                    json_decref(ut);
                    return CP_ERR(err, rc, "setting attribute \"%s\": %s", a->name,
                                  cp_strerror(rc));
                }
                db->acc_stats.attr++;
                continue;
            } else if (trait_value(a, t, raw, &tv, why, sizeof why) == 0) {
                if ((rc = set_value(db, txn, a, ord, &tv, &vid, err))) {
                    json_decref(ut);
                    return rc;
                }
                if (m && raw == NULL && tv.kind == 2)
                    m->vid = vid;
                db->acc_stats.attr++;
                continue;
            }
            /* Does not fit the attribute (prep_event warned): kept with
             * the user's unindexed traits, never clamped into the index. */
        }
        json_t *v = raw ? json_incref((json_t *)raw) : pv_to_json(t);
        if (v == NULL)
            continue;
        if (ut == NULL && (rc = traits_get(txn, ord, &ut, err))) {
            json_decref(v);
            return rc;
        }
        char name[BEH_NAME_MAX + 1];
        snprintf(name, sizeof name, "%.*s", (int)t->nlen, t->name);
        if (json_object_set_new(ut, name, v) != 0) {
            json_decref(ut);
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        }
        if (a == NULL && (rc = acc_catalog_at(db, CAT_TRAITS, i, t->name, t->nlen, t, raw, NULL))) {
            json_decref(ut);
            return CP_ERR(err, rc, "out of memory");
        }
    }
    if (ut) {
        rc = traits_put(txn, ord, ut, err);
        json_decref(ut);
        if (rc)
            return rc;
    }
    return CP_OK;
}

/*
 * did() sum(): the numeric properties that sum measures take from this
 * event, added per user and day to the behaviour index in fixed point (the
 * measure's scale), positive and negative parts in two count series
 * (beh_sum_series_key) so both stay exact unsigned counts. A part beyond
 * 2^32 units per user and day saturates (the count series' bound: at scale
 * 2, 42.9 million a day).
 */
cp_status db_daysum_flush(cp_db_t *db)
{
    if (!db->daysum.on)
        return CP_OK;
    db->daysum.on = 0;
    return beh_record(db->beh, db->daysum.series, db->daysum.day, db->daysum.ord, db->daysum.mag);
}

static cp_status apply_day_sums(cp_db_t *db, const ingest_event_t *e, const prep_t *p, uint32_t ord,
                                cp_error_t *err)
{
    meas_sum_value_t sums[8];
    size_t ns = meas_event_sums(db->meas, e->event, e->event_len, p->props, p->nprops, sums,
                                CP_ARRAY_LEN(sums));
    for (size_t i = 0; i < ns; i++) {
        uint8_t key[BEH_KEY_MAX];
        size_t klen;
        uint32_t sid;
        int64_t v = sums[i].v;
        if (v == 0)
            continue;
        uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        cp_status rc = beh_sum_series_key(e->event, e->event_len, sums[i].prop, sums[i].plen, v < 0,
                                          key, &klen);
        if (rc == CP_OK)
            rc = beh_series_intern(db->beh, key, klen, &sid);
        int32_t day = beh_day_of(e->ts);
        if (rc == CP_OK && db->daysum.on && db->daysum.series == sid && db->daysum.day == day &&
            db->daysum.ord == ord) {
            db->daysum.mag = db->daysum.mag + mag < mag ? UINT64_MAX : db->daysum.mag + mag;
            continue;
        }
        if (rc == CP_OK)
            rc = db_daysum_flush(db);
        if (rc == CP_OK) {
            db->daysum.series = sid;
            db->daysum.day = day;
            db->daysum.ord = ord;
            db->daysum.mag = mag;
            db->daysum.on = 1;
        }
        if (rc == CP_EINVAL) /* a name too long for a series key: no day sums */
            continue;
        if (rc)
            return CP_ERR(err, rc, "recording the day sum of \"%.64s\": %s", sums[i].prop,
                          cp_strerror(rc));
    }
    return CP_OK;
}

static cp_status apply_behaviour(cp_db_t *db, const ingest_event_t *e, const prep_t *p,
                                 uint32_t ord, cp_error_t *err)
{
    cp_status rc;
    beh_prop_t props[BEH_MAX_PROPS];
    char bufs[BEH_MAX_PROPS][PV_TEXT_MAX];
    size_t np = 0;
    uint8_t idx[64];
    for (size_t at = 0; at < p->nprops; at += sizeof idx) { /* catalog notes, 64 at a time */
        size_t k = p->nprops - at < sizeof idx ? p->nprops - at : sizeof idx;
        if ((rc = acc_catalog_props(db, at, p->props + at, p->praw ? p->praw + at : NULL, k, idx)))
            return CP_ERR(err, rc, "out of memory");
        for (size_t j = 0; j < k; j++) {
            const ev_prop_t *v = &p->props[at + j];
            if (!idx[j] || np >= BEH_MAX_PROPS || v->nlen > BEH_NAME_MAX)
                continue;
            const char *s;
            size_t n = pv_text(v, bufs[np], &s);
            if (n == 0 || n > BEH_NAME_MAX)
                continue;
            props[np++] = (beh_prop_t){v->name, v->nlen, s, n};
        }
    }
    /* page/screen: their name is a property too */
    if (e->name && np < BEH_MAX_PROPS && e->name_len <= BEH_NAME_MAX && is_indexed(db, "name", 4))
        props[np++] = (beh_prop_t){"name", 4, e->name, e->name_len};
    if (e->group_id && np < BEH_MAX_PROPS)
        props[np++] = (beh_prop_t){"group_id", 8, e->group_id, e->group_id_len};
    uint32_t series[BEH_MAX_EVENT_SERIES];
    size_t ns;
    if ((rc = beh_event_series(db->beh, e->event, e->event_len, props, np, series,
                               BEH_MAX_EVENT_SERIES, &ns)) ||
        (rc = acc_beh(db, series, ns, beh_day_of(e->ts), ord)))
        return CP_ERR(err, rc, "recording event \"%.64s\": %s", e->event, cp_strerror(rc));
    if ((rc = acc_catalog_at(db, CAT_EVENTS, 0, e->event, e->event_len, NULL, NULL, NULL)))
        return CP_ERR(err, rc, "out of memory");
    /* Event measures (index/measure.h): per-user sums, distinct counts
     * and first/last times for RFM and AIPL; bad values are skipped. */
    if ((rc = meas_record(db->meas, ord, e->event, e->event_len, p->props, p->nprops, e->ts)))
        return CP_ERR(err, rc, "recording event measures: %s", cp_strerror(rc));
    db->acc_stats.meas++;
    return apply_day_sums(db, e, p, ord, err);
}

static cp_status apply_event(cp_db_t *db, store_txn_t *txn, const ingest_event_t *e,
                             const prep_t *p, hot_t *h, int64_t now_ms, apply_counts_t *c,
                             cp_error_t *err)
{
    cp_status rc;
    if (!e->no_dedup) {
        if (dedup_check(db->dedup, e->message_hash, now_ms)) {
            c->duplicates++;
            return CP_OK;
        }
        if (dedup_insert(db->dedup, e->message_hash, now_ms))
            return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    if (!db->idc.ic_have_salt && (rc = ident_config_bind(txn, &db->idc, 1, err)))
        return rc;
    uint32_t ord;
    if ((rc = resolve_user(db, txn, e, p, &ord, c, err)))
        return rc;
    feed_note_event(db, e, ord);
    db->data_changed = 1;
    if ((rc = apply_traits(db, txn, p, ord, h, err)))
        return rc;
    /* A mapping's "tags": the taxonomy is not extended by data (a typo in a
     * dictionary would create tags); paths it lacks are counted. */
    for (uint32_t k = 0; k < e->ntags; k++) {
        uint32_t tag = tax_find(&db->tax, e->tags[k], strlen(e->tags[k]));
        if (tag == 0)
            db->acc_stats.tags_unknown++;
        else
            db->acc_stats.tags += (uint64_t)index_tag_assign(db->ix, &db->tax, ord, tag);
    }
    db->acc_stats.tags_unknown += e->ntags_unknown;
    if (e->type == ING_GROUP && e->group_id &&
        (rc =
             group_join(&db->groups, txn, e->group_id, e->group_id_len, ord, e->group_traits, err)))
        return rc;
    if (e->event && (rc = apply_behaviour(db, e, p, ord, err)))
        return rc;
    if ((!db->attr_first_seen || !db->attr_last_seen) && (rc = ensure_seen_attrs(db, txn, err)))
        return rc;
    if ((db->attr_first_seen || db->attr_last_seen) && (rc = acc_seen(db, ord, e->ts)))
        return CP_ERR(err, rc, "out of memory");
    c->applied++;
    return CP_OK;
}

cp_status apply_batch(cp_db_t *db, store_txn_t *txn, ingest_batch_t *b, const batch_prep_t *bp,
                      int64_t now_ms, apply_counts_t *c, cp_error_t *err)
{
    for (size_t i = 0; i < b->n; i++) {
        if (bp->p[i].skip)
            continue;
        cp_status rc = apply_event(db, txn, &b->events[i], &bp->p[i], NULL, now_ms, c, err);
        if (rc) {
            error_prefix(err, "event %zu: ", i);
            return rc;
        }
    }
    return CP_OK;
}

/* Validates one event against the schema/identity config without applying
 * (imports reject bad lines one by one). Lock held. */
cp_status intake_check_event(cp_db_t *db, const ingest_event_t *e, cp_error_t *err)
{
    arena_t ar;
    arena_init(&ar, 1u << 20);
    prep_t p;
    cp_status rc = prep_event(db, e, &p, &ar, NULL, NULL, err);
    arena_free(&ar);
    return rc;
}

/* ---------------------------------------------------------------- whois */

static cp_status key_of(cp_db_t *db, const char *type, const char *value, char *key, size_t *klen,
                        cp_error_t *err)
{
    if (type == NULL || value == NULL)
        return CP_ERR(err, CP_EINVAL, "identifier type or value is NULL");
    return ident_key(&db->idc, type, strlen(type), value, strlen(value), key, klen, err);
}

/* The canonical ordinal of an identifier (user_id falls back on the user
 * dictionary). CP_ENOTFOUND with a message. */
static cp_status find_user(cp_db_t *db, store_txn_t *txn, const char *type, const char *value,
                           uint32_t *ord, cp_error_t *err)
{
    char key[IDENT_MAX_KEY + 1];
    size_t kl;
    cp_status rc = key_of(db, type, value, key, &kl, err);
    if (rc)
        return rc;
    rc = identity_lookup(txn, key, kl, ord, err);
    if (rc == CP_ENOTFOUND && !strcmp(type, "user_id"))
        rc = db_user_lookup(txn, value, strlen(value), ord, err);
    if (rc == CP_ENOTFOUND)
        return CP_ERR(err, CP_ENOTFOUND, "no user has %s \"%.200s\"", type, value);
    return rc;
}

static cp_status whois_key(void *ud, const char *key, size_t klen, uint32_t original,
                           cp_error_t *err)
{
    json_t *arr = ud;
    const char *colon = memchr(key, ':', klen);
    if (colon == NULL)
        return CP_OK;
    json_t *o = json_pack("{s:s%,s:I}", "type", key, (size_t)(colon - key), "original",
                          (json_int_t)original);
    if (o == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    if (ident_key_is_hashed(key, klen))
        json_object_set_new(o, "hash", json_stringn(colon + 2, klen - (size_t)(colon - key) - 2));
    else
        json_object_set_new(o, "value", json_stringn(colon + 1, klen - (size_t)(colon - key) - 1));
    json_array_append_new(arr, o);
    return CP_OK;
}

static json_t *lineage_json(const identity_lineage_t *l)
{
    json_t *keys = json_array();
    for (size_t i = 0; i < l->il_nkeys; i++)
        json_array_append_new(keys, json_string(l->il_keys[i]));
    char t[40], u[40];
    time_format(l->il_time_ms / 1000, t, sizeof t);
    json_t *o =
        json_pack("{s:I,s:s,s:I,s:I,s:o,s:s,s:s}", "merge_id", (json_int_t)l->il_id, "time", t,
                  "survivor", (json_int_t)l->il_survivor, "absorbed", (json_int_t)l->il_absorbed,
                  "identifiers", keys, "message_id", l->il_message_id ? l->il_message_id : "",
                  "source", l->il_source ? l->il_source : "");
    if (o && l->il_undone_ms) {
        time_format(l->il_undone_ms / 1000, u, sizeof u);
        json_object_set_new(o, "undone", json_string(u));
    }
    return o;
}

cp_status cp_whois_json(cp_db_t *db, const char *type, const char *value, char **out,
                        cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_flush(db, err);
    if (rc || (rc = db_read_begin(db, err)))
        return rc;
    store_txn_t *txn = NULL;
    json_t *o = NULL;
    uint64_t *ids = NULL;
    size_t nids = 0;
    uint32_t ord;
    if ((rc = store_txn_begin(db->st, 0, &txn, err)) ||
        (rc = find_user(db, txn, type, value, &ord, err)))
        goto out;
    const char *id = "";
    size_t idl = 0;
    if (users_id_of(txn, ord, &id, &idl, NULL) != CP_OK) {
        id = "";
        idl = 0;
    }
    json_t *idents = json_array(), *attrs = json_object(), *tags = json_array(),
           *crowds = json_array(), *lineage = json_array(), *traits = NULL;
    if ((rc = traits_get(txn, ord, &traits, err)))
        traits = json_object();
    rc = CP_OK;
    o = json_pack("{s:{s:s%,s:I},s:o,s:o,s:o,s:o,s:o,s:o}", "user", "id", id, idl, "ordinal",
                  (json_int_t)ord, "identifiers", idents, "attrs", attrs, "traits", traits, "tags",
                  tags, "crowds", crowds, "lineage", lineage);
    if (o == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = identity_each_key(txn, ord, 1, whois_key, idents, err)))
        goto out;
    for (uint32_t i = 1; i <= db->sch.n; i++) {
        const schema_attr_t *a = schema_get(&db->sch, i);
        json_t *v = a ? attr_json(db, a, ord, 1) : NULL;
        if (v)
            json_object_set_new(attrs, a->name, v);
    }
    for (uint32_t t = 1; t < db->tax.next_id; t++) {
        const idx_tag_t *it = index_tag(db->ix, t);
        const tax_tag_t *g = tax_get(&db->tax, t);
        if (it && g && roaring_bitmap_contains(it->direct, ord))
            json_array_append_new(tags, json_string(g->path));
    }
    for (size_t c = 0; c < db->crowds.n; c++) {
        const crowd_rec_t *cr = db->crowds.items[c];
        const roaring_bitmap_t *bm = index_crowd(db->ix, cr->id);
        if (bm && roaring_bitmap_contains(bm, ord))
            json_array_append_new(crowds, json_string(cr->name));
    }
    if ((rc = identity_lineage_list(txn, ord, &ids, &nids, err)))
        goto out;
    for (size_t i = 0; i < nids; i++) {
        identity_lineage_t *l = NULL;
        if ((rc = identity_lineage_get(txn, ids[i], 0, &l, err)))
            goto out;
        json_array_append_new(lineage, lineage_json(l));
        identity_lineage_free(l);
    }
out:
    free(ids);
    store_txn_abort(txn);
    db_read_end(db);
    if (rc) {
        json_decref(o);
        return rc;
    }
    return db_json_out(o, out, err);
}

/* -------------------------------------------------------------- unmerge */

/* Takes back from the survivor what the absorbed side brought (snapshot
 * side a) unless the survivor had it itself before (side s). */
static cp_status survivor_strip(cp_db_t *db, store_txn_t *txn, uint32_t s, const json_t *a,
                                const json_t *sb, cp_error_t *err)
{
    cp_status rc;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(a, "attrs"), k, v)
    {
        const schema_attr_t *at = schema_find(&db->sch, k, strlen(k));
        if (at == NULL)
            continue;
        json_t *now = attr_json(db, at, s, 0);
        const json_t *before = json_object_get(json_object_get(sb, "attrs"), k);
        int took = now && json_equal(now, v) && !(before && json_equal(before, v));
        json_decref(now);
        if (!took)
            continue;
        tval_t t;
        char why[128];
        if (before && trait_value_json(at, before, &t, why, sizeof why) == 0)
            rc = set_value(db, txn, at, s, &t, NULL, err);
        else {
            index_clear(db->ix, at->id, s);
            rc = CP_OK;
        }
        if (rc)
            return rc;
    }
    size_t i;
    json_array_foreach(json_object_get(a, "tags"), i, v)
    {
        int had = 0;
        size_t j;
        json_t *w;
        json_array_foreach(json_object_get(sb, "tags"), j, w) had |= json_equal(v, w);
        uint32_t id = tax_find(&db->tax, json_string_value(v), json_string_length(v));
        if (!had && id)
            index_tag_unassign(db->ix, &db->tax, s, id);
    }
    json_t *tr = NULL;
    if ((rc = traits_get(txn, s, &tr, err)))
        return rc;
    int changed = 0;
    json_object_foreach(json_object_get(a, "traits"), k, v)
    {
        const json_t *before = json_object_get(json_object_get(sb, "traits"), k);
        if (json_equal(json_object_get(tr, k), v) && !before) {
            json_object_del(tr, k);
            changed = 1;
        }
    }
    rc = changed ? traits_put(txn, s, tr, err) : CP_OK;
    json_decref(tr);
    if (rc)
        return rc;
    /* behaviour: survivor's counts minus the absorbed side's */
    beh_entry_t *e = NULL;
    size_t n = 0;
    if ((rc = beh_user_extract(db->beh, s, &e, &n)))
        return CP_ERR(err, rc, "out of memory");
    json_array_foreach(json_object_get(a, "beh"), i, v)
    {
        uint32_t se = (uint32_t)json_integer_value(json_array_get(v, 0));
        int32_t day = (int32_t)json_integer_value(json_array_get(v, 1));
        uint64_t cnt = (uint64_t)json_integer_value(json_array_get(v, 2));
        for (size_t x = 0; x < n; x++)
            if (e[x].series == se && e[x].day == day) {
                e[x].count = e[x].count > cnt ? e[x].count - cnt : 0;
                break;
            }
    }
    size_t m = 0;
    for (size_t x = 0; x < n; x++)
        if (e[x].count)
            e[m++] = e[x];
    beh_user_remove(db->beh, s);
    rc = m ? beh_user_insert(db->beh, s, e, m) : CP_OK;
    free(e);
    return rc ? CP_ERR(err, rc, "restoring behaviour: %s", cp_strerror(rc)) : CP_OK;
}

cp_status cp_unmerge(cp_db_t *db, uint64_t merge_id, char **out, cp_error_t *err)
{
    if (out)
        *out = NULL;
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    identity_unmerge_t u;
    memset(&u, 0, sizeof u);
    idcache_clear(db);
    if ((rc = identity_unmerge(txn, merge_id, time_now_ms(), &u, err))) {
        db_write_abort(db, txn);
        return rc;
    }
    json_t *snap = NULL;
    const identity_lineage_t *l = u.iu_lineage;
    if (l && l->il_snapshot && l->il_snapshot_len)
        snap = json_loadb(l->il_snapshot, l->il_snapshot_len, 0, NULL);
    uint32_t a = u.iu_absorbed, s = u.iu_survivor_root;
    index_user_add(db->ix, a);
    db->data_changed = 1;
    if (snap) {
        if ((rc = survivor_strip(db, txn, s, json_object_get(snap, "a"), json_object_get(snap, "s"),
                                 err)) ||
            (rc = user_restore(db, txn, a, json_object_get(snap, "a"), err))) {
            json_decref(snap);
            identity_unmerge_free(&u);
            return db_write_fail(db, txn, rc, err);
        }
    }
    json_decref(snap);
    if (out) {
        json_t *j = json_pack("{s:I,s:I,s:I}", "merge_id", (json_int_t)merge_id, "survivor",
                              (json_int_t)s, "restored", (json_int_t)a);
        char *str = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        *out = str;
    }
    identity_unmerge_free(&u);
    return db_write_end(db, txn, err);
}

/* ------------------------------------------------------------- deletion */

cp_status intake_user_purge(cp_db_t *db, store_txn_t *txn, const uint32_t *ords, size_t n,
                            cp_error_t *err)
{
    cp_status rc;
    idcache_clear(db);
    for (size_t i = 0; i < n; i++) {
        uint32_t o = ords[i];
        if ((rc = user_index_drop(db, txn, o, err)) ||
            (rc = beh_user_forget(db->beh, o, txn, STORE_INTAKE, err)))
            return rc;
        meas_user_remove(db->meas, o);
        const char *id;
        size_t idl;
        rc = users_id_of(txn, o, &id, &idl, err);
        if (rc == CP_OK) {
            char buf[USERS_MAX_ID + 1];
            memcpy(buf, id, idl);
            if ((rc = users_remove(txn, buf, idl, o, err)))
                return rc;
        } else if (rc != CP_ENOTFOUND) {
            return rc;
        }
        unsigned char k[7];
        ut_key(k, o);
        if ((rc = store_del(txn, STORE_INTAKE, k, 7, err)) ||
            (rc = group_remove_member(&db->groups, txn, o, err)))
            return rc;
    }
    /* The catalog's example values may be anything the user ever sent (a
     * trait since overwritten, an event property): they are not traced to
     * users, so every example goes; later events bring new ones. */
    const char *kinds[] = {"traits", "properties"};
    for (size_t x = 0; x < 2; x++) {
        const char *ck;
        json_t *cv;
        json_object_foreach(json_object_get(db->catalog, kinds[x]), ck, cv)
        {
            json_t *ex = json_object_get(cv, "examples");
            if (json_array_size(ex)) {
                json_array_clear(ex);
                db->catalog_dirty = 1;
            }
        }
    }
    db->data_changed = 1;
    return CP_OK;
}

static cp_status delete_ord(cp_db_t *db, store_txn_t *txn, uint32_t ord, cp_error_t *err)
{
    uint32_t *ords = NULL;
    size_t n = 0;
    cp_status rc = identity_delete(txn, ord, &ords, &n, err);
    if (rc)
        return rc;
    rc = intake_user_purge(db, txn, ords, n, err);
    free(ords);
    return rc;
}

/*
 * Write lock held via db_write_begin: deletes, commits (synced: the WAL
 * can go whole after it), drops every WAL segment (they hold the user's
 * events), unlocks. The bytes left in data.mdb's free pages are erased by
 * a compaction in the background (compact.c): the deletion never waits for
 * readers, and the user is gone from every answer when it returns.
 */
static cp_status delete_commit(cp_db_t *db, store_txn_t *txn, uint32_t ord, cp_error_t *err)
{
    cp_status rc = delete_ord(db, txn, ord, err);
    if (rc == CP_OK)
        rc = compact_mark(db, txn, err);
    if (rc)
        return db_write_fail(db, txn, rc, err);
    if ((rc = db_commit_locked(db, txn, err))) {
        pthread_rwlock_unlock(&db->lock);
        return rc;
    }
    atomic_fetch_add(&db->del_gen, 1);
    if (db->wal) {
        /* Every record is in LMDB now: drop every segment, the deleted
         * user's events with them. */
        if ((rc = store_sync(db->st, err)) == CP_OK &&
            (rc = wal_rotate(db->wal, NULL, err)) == CP_OK)
            rc = wal_truncate_before(db->wal, wal_last_lsn(db->wal), NULL, err);
    }
    pthread_rwlock_unlock(&db->lock);
    compact_kick(db);
    return rc;
}

cp_status cp_user_delete_by_identifier(cp_db_t *db, const char *type, const char *value,
                                       cp_error_t *err)
{
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    uint32_t ord;
    if ((rc = find_user(db, txn, type, value, &ord, err))) {
        db_write_abort(db, txn);
        return rc;
    }
    return delete_commit(db, txn, ord, err);
}

/* cp_user_delete (ingest.c) by user-dictionary id: the whole merged user. */
cp_status intake_delete_by_id(cp_db_t *db, const char *id, cp_error_t *err)
{
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    uint32_t ord;
    rc = db_user_lookup(txn, id, strlen(id), &ord, err);
    if (rc) {
        if (rc == CP_ENOTFOUND)
            rc = CP_ERR(err, CP_ENOTFOUND, "user \"%.256s\" not found", id);
        db_write_abort(db, txn);
        return rc;
    }
    return delete_commit(db, txn, ord, err);
}

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

/* ------------------------------------------------------------- imports */

/*
 * Imports: applies a batch of parsed file events into txn,
 * checking each on its own: a bad one is reported through on_reject with
 * its line (lines[i]) and skipped, the others applied. Lock held.
 */
cp_status intake_import_batch(cp_db_t *db, store_txn_t *txn, ingest_batch_t *b,
                              const uint64_t *lines, cp_reject_fn on_reject, void *ud,
                              int64_t now_ms, uint64_t *counts, cp_error_t *err)
{
    arena_t *ar = acc_scratch(db);
    apply_counts_t c = {0};
    cp_status rc = CP_OK;
    hot_t hot;
    memset(&hot, 0, sizeof hot);
    hot.sch_n = db->sch.n;
    idraw_sync(db, 1);
    for (size_t i = 0; rc == CP_OK && i < b->n; i++) {
        prep_t p;
        cp_error_t ee;
        acc_err_reset(&ee);
        idraw_sync(db, 0); /* no key of the cache in use here */
        cp_status pr = prep_event(db, &b->events[i], &p, ar, &hot, NULL, &ee);
        if (pr == CP_ENOMEM) {
            rc = CP_ERR(err, pr, "out of memory");
            break;
        }
        if (pr) {
            error_prefix(&ee, "line %llu: ", (unsigned long long)lines[i]);
            ee.record = lines[i];
            counts[3]++;
            if (on_reject)
                on_reject(ud, &ee);
            continue;
        }
        rc = apply_event(db, txn, &b->events[i], &p, &hot, now_ms, &c, err);
        if (rc)
            error_prefix(err, "line %llu: ", (unsigned long long)lines[i]);
        if (ar->total > (64u << 20))
            arena_reset(ar);
    }
    if (rc == CP_OK)
        rc = acc_flush(db, err);
    arena_reset(ar);
    counts[0] += c.applied;
    counts[1] += c.duplicates;
    counts[2] += c.created;
    counts[4] += c.merges;
    return rc;
}
