/* delete.c — deleting users: every trace of a user out of the index, the
 * behaviour, the identity graph and the dictionaries, then compaction. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"
#include "model/codec.h"

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

cp_status user_index_drop(cp_db_t *db, store_txn_t *txn, uint32_t ord, cp_error_t *err)
{
    /* The user's dictionary values first: after the index forgets the
     * user, the columns no longer say which they were. */
    uint32_t held[SCHEMA_MAX_ATTRS + 1];
    for (uint32_t i = 1; i <= db->sch.n && i <= SCHEMA_MAX_ATTRS; i++) {
        const schema_attr_t *a = schema_get(&db->sch, i);
        held[i] = a && schema_type_has_dict(a->type) ? index_get_value(db->ix, i, ord) : 0;
    }
    index_user_delete(db->ix, &db->tax, ord);
    for (uint32_t i = 1; i <= db->sch.n && i <= SCHEMA_MAX_ATTRS; i++) {
        if (held[i] == 0)
            continue;
        const roaring_bitmap_t *bm = index_value_bitmap(db->ix, i, held[i]);
        if (bm != NULL && !roaring_bitmap_is_empty(bm))
            continue; /* someone else holds it */
        cp_status rc = schema_value_remove(schema_get(&db->sch, i), txn, held[i], err);
        if (rc)
            return rc;
    }
    return CP_OK;
}

/* The whole (merged) user, its identifiers and lineage (events.c). */
cp_status cp_user_delete(cp_db_t *db, const char *id, cp_error_t *err)
{
    if (id == NULL)
        return CP_ERR(err, CP_EINVAL, "id is NULL");
    return intake_delete_by_id(db, id, err);
}
