/* oneid.c — the OneID API: who an identifier is (cp_whois_json, with the
 * merge lineage) and undoing a merge (cp_unmerge). */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"
#include "model/codec.h"

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
cp_status find_user(cp_db_t *db, store_txn_t *txn, const char *type, const char *value,
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
    int bad;
    if (ident_key_is_hashed(key, klen))
        bad = json_object_set_new(o, "hash",
                                  json_stringn(colon + 2, klen - (size_t)(colon - key) - 2));
    else
        bad = json_object_set_new(o, "value",
                                  json_stringn(colon + 1, klen - (size_t)(colon - key) - 1));
    if (bad) {
        json_decref(o);
        return CP_ERR(err, CP_ENOMEM, "out of memory listing identifiers");
    }
    if (json_array_append_new(arr, o))
        return CP_ERR(err, CP_ENOMEM, "out of memory listing identifiers");
    return CP_OK;
}

/* One merge of the lineage as JSON; NULL when out of memory. */
static json_t *lineage_json(const identity_lineage_t *l)
{
    json_t *keys = json_array();
    for (size_t i = 0; keys && i < l->il_nkeys; i++)
        if (json_array_append_new(keys, json_string(l->il_keys[i]))) {
            json_decref(keys);
            return NULL;
        }
    char t[40], u[40];
    time_format(l->il_time_ms / 1000, t, sizeof t);
    json_t *o =
        json_pack("{s:I,s:s,s:I,s:I,s:o,s:s,s:s}", "merge_id", (json_int_t)l->il_id, "time", t,
                  "survivor", (json_int_t)l->il_survivor, "absorbed", (json_int_t)l->il_absorbed,
                  "identifiers", keys, "message_id", l->il_message_id ? l->il_message_id : "",
                  "source", l->il_source ? l->il_source : "");
    if (o && l->il_undone_ms) {
        time_format(l->il_undone_ms / 1000, u, sizeof u);
        if (json_object_set_new(o, "undone", json_string(u))) {
            json_decref(o);
            return NULL;
        }
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
    /* Damaged traits show as none; running out of memory is not hidden. */
    if ((rc = traits_get(txn, ord, &traits, err)) == CP_ENOMEM)
        traits = NULL;
    else if (rc)
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
    int bad = user_view_fill(db, ord, 1, attrs, tags, crowds);
    if (bad) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory building the whois answer");
        goto out;
    }
    if ((rc = identity_lineage_list(txn, ord, &ids, &nids, err)))
        goto out;
    for (size_t i = 0; i < nids; i++) {
        identity_lineage_t *l = NULL;
        if ((rc = identity_lineage_get(txn, ids[i], 0, &l, err)))
            goto out;
        bad = json_array_append_new(lineage, lineage_json(l));
        identity_lineage_free(l);
        if (bad) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory building the whois answer");
            goto out;
        }
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
        int oom = 0;
        json_t *now = attr_json(db, at, s, 0, &oom);
        if (oom)
            return CP_ERR(err, CP_ENOMEM, "out of memory reading attribute \"%s\"", at->name);
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
    if (l && l->il_snapshot && l->il_snapshot_len) {
        json_error_t je;
        snap = json_loadb_checked(l->il_snapshot, l->il_snapshot_len, 0, &je);
        if (snap == NULL && json_is_oom(&je)) { /* an unmerge without it would lose data */
            identity_unmerge_free(&u);
            db_write_abort(db, txn);
            return CP_ERR(err, CP_ENOMEM, "out of memory reading merge %llu's snapshot",
                          (unsigned long long)merge_id);
        }
    }
    uint32_t a = u.iu_absorbed, s = u.iu_survivor_root;
    index_user_add(db->ix, a);
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
        char *str = j ? json_dumps_checked(j, JSON_COMPACT) : NULL;
        json_decref(j);
        *out = str;
    }
    identity_unmerge_free(&u);
    return db_write_end(db, txn, err);
}
