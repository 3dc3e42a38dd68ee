/* keys.c — the public API key calls over model/apikey.c. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"

cp_status cp_key_create(cp_db_t *db, cp_role role, const char *label, char **key_out,
                        cp_error_t *err)
{
    if (key_out == NULL)
        return CP_ERR(err, CP_EINVAL, "key_out is NULL");
    *key_out = NULL;
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    if ((rc = apikey_create(&db->keys, txn, role, label, key_out, err))) {
        db_write_abort(db, txn);
        return rc;
    }
    rc = db_write_end(db, txn, err);
    if (rc) {
        free(*key_out);
        *key_out = NULL;
    }
    return rc;
}

cp_status cp_key_check(cp_db_t *db, const char *key, cp_role *role_out, cp_error_t *err)
{
    cp_status rc = db_read_begin_mem(db, err);
    if (rc)
        return rc;
    rc = apikey_check(&db->keys, key, role_out);
    db_read_end(db);
    /* Which check failed is not said: the message must not help guessing. */
    if (rc == CP_EAUTH)
        return CP_ERR(err, CP_EAUTH, "unknown or revoked API key");
    return rc ? CP_ERR(err, rc, "checking an API key: %s", cp_strerror(rc)) : CP_OK;
}

cp_status cp_key_count(cp_db_t *db, uint64_t *n, cp_error_t *err)
{
    if (n == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_key_count: n is NULL");
    cp_status rc = db_read_begin_mem(db, err);
    if (rc)
        return rc;
    *n = db->keys.n;
    db_read_end(db);
    return CP_OK;
}

cp_status cp_keys_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < db->keys.n; i++) {
        const apikey_t *k = &db->keys.items[i];
        json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "id", k->id, "role", cp_role_name(k->role),
                              "label", k->label, "created", (json_int_t)k->created);
        if (o == NULL || json_array_append_new(arr, o)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    db_read_end(db);
    return db_json_out(arr ? json_pack("{s:o}", "keys", arr) : NULL, out, err);
}

cp_status cp_key_revoke(cp_db_t *db, const char *key_id, cp_error_t *err)
{
    if (key_id == NULL)
        return CP_ERR(err, CP_EINVAL, "no key id");
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    /* Revoking removes the record first; memory changes only after. */
    if ((rc = apikey_revoke(&db->keys, txn, key_id, err))) {
        db_write_abort(db, txn);
        return rc;
    }
    return db_write_end(db, txn, err);
}
