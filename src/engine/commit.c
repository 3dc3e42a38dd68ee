/*
 * commit.c — how intake survives kill -9 and power loss (docs/intake.md
 * "Durability"):
 *
 *  - an event request is validated, applied in memory and into an LMDB
 *    write transaction, appended to the write-ahead log, and the
 *    transaction (dirty index, behaviour, dedup window, catalog and meta
 *    "wal_lsn" = the record's LSN) committed with MDB_NOMETASYNC (pages
 *    fdatasynced, the meta page left for the next sync: a power cut loses
 *    at most that commit, never the file's integrity; MDB_NOSYNC could
 *    leave a meta page pointing at pages later commits reused), all
 *    under the write lock and on one thread (LMDB's writer mutex belongs
 *    to the thread that began the transaction), so WAL order = apply
 *    order; the caller then waits in wal_sync() (group commit) and only
 *    then answers;
 *  - a checkpoint (every interval_ms or `records` requests, and on close)
 *    re-evaluates the dynamic crowds the events made stale, fsyncs
 *    data.mdb (mdb_env_sync), then rotates the WAL and deletes the
 *    segments it covers;
 *  - at open, LMDB holds every transaction up to some "wal_lsn" (after a
 *    kill -9 all of them; after a power loss, at least those of the last
 *    checkpoint, each transaction being atomic; segments are deleted only
 *    after the sync that covers them, so the log holds the rest); the WAL records after it
 *    are replayed through the same apply path (their receive times are in
 *    the records, so dedup decides the same way), a torn tail having been
 *    cut by wal_open.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "engine/engine_int.h"
#include "engine/feed.h"
#include "index/member_list.h"

static cp_status catalog_persist(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    if (!db->catalog_dirty || db->catalog == NULL)
        return CP_OK;
    char *s = json_dumps_checked(db->catalog, JSON_COMPACT);
    if (s == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory saving the catalog");
    cp_status rc = store_put(txn, STORE_INTAKE, "catalog", 7, s, strlen(s), err);
    free(s);
    if (rc == CP_OK)
        db->catalog_dirty = 0;
    return rc;
}

/* Writes the intake state into a write txn (from db_commit_locked). */
static cp_status intake_persist(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    cp_status rc = CP_OK;
    if (db->beh == NULL)
        return CP_OK;
    if (db->cfg.retention_days > 0)
        beh_retain(db->beh, (int32_t)(time_now_ms() / 86400000) - db->cfg.retention_days + 1);
    if ((rc = beh_persist(db->beh, txn, STORE_INTAKE, err)) ||
        (db->meas && (rc = meas_persist(db->meas, txn, STORE_INTAKE, err))) ||
        (rc = dedup_persist(db->dedup, txn, STORE_INTAKE, err)) ||
        (rc = catalog_persist(db, txn, err)) ||
        (rc = store_meta_put_u64(txn, "wal_lsn", db->applied_lsn, err)))
        return rc;
    return CP_OK;
}

/*
 * Whether the write changed what dynamic crowds are evaluated over. Not
 * set by hand at each write path: the index records changes of users, tag
 * members, attribute values and replaced crowd members (index/change.h),
 * and the behaviour index and event measures keep dirty marks until this
 * commit persists them. db->data_changed asks for a re-evaluation
 * regardless (a checkpoint catching up with crowds left stale by events).
 */
static int write_changed_data(const cp_db_t *db)
{
    return db->data_changed || db->ix->chg.data || db->ix->chg.crowds ||
           (db->beh && beh_dirty_count(db->beh)) || (db->meas && meas_dirty_count(db->meas));
}

/* db_commit_locked, with the dynamic crowds re-evaluated when `reeval`. */
static cp_status commit_locked(cp_db_t *db, store_txn_t *txn, int reeval, cp_error_t *err)
{
    cp_status rc = CP_OK;
    if ((reeval && (rc = crowds_reeval_dynamic(db, txn, err))) ||
        (rc = index_persist(db->ix, txn, err)) || (rc = intake_persist(db, txn, err)) ||
        (rc = store_meta_put_u64(txn, "next_ordinal", db->next_ordinal, err)) ||
        (rc = store_meta_put_u64(txn, "next_tag_id", db->tax.next_id, err)) ||
        (rc = store_meta_put_u64(txn, "next_crowd_id", db->crowds.next_id, err))) {
        store_txn_abort(txn);
        snprintf(db->failed_msg, sizeof db->failed_msg,
                 "a write to data directory %s failed after changing memory (%s); reopen the "
                 "data directory",
                 store_dir(db->st), cp_strerror(rc));
        atomic_store(&db->failed, 1);
        db->data_changed = 0;
        feed_discard(db);
        if (err && err->message[0])
            error_prefix(err, "%s; reopen the data directory: ", cp_strerror(rc));
        if (err)
            err->code = CP_EIO;
        return CP_EIO;
    }
    rc = store_txn_commit(txn, err);
    db->data_changed = 0;
    if (rc) {
        feed_discard(db);
        /* The transaction is gone already. */
        snprintf(db->failed_msg, sizeof db->failed_msg,
                 "a commit to data directory %s failed (%s); reopen the data directory",
                 store_dir(db->st), cp_strerror(rc));
        atomic_store(&db->failed, 1);
        if (err)
            err->code = CP_EIO;
        return CP_EIO;
    }
    /* Membership lists that an edit could not keep (out of memory) are
     * rebuilt here; lookups answer from the sets meanwhile. */
    member_list_repair(db->ix);
    /* The change feed's record of this commit (it clears the index's
     * record of the write either way). */
    feed_commit(db, atomic_fetch_add(&db->writes, 1) + 1);
    return CP_OK;
}

cp_status db_commit_locked(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    return commit_locked(db, txn, write_changed_data(db), err);
}

cp_status intake_commit_light(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    /* Re-evaluating every dynamic crowd per request would dominate
     * intake: the checkpoint does it. */
    if (write_changed_data(db))
        db->crowds_stale = 1;
    db->data_changed = 0;
    /* A failure to set the flag only costs a sync of the meta page. */
    (void)store_set_lazy_commit(db->st, 1, NULL);
    cp_status rc = commit_locked(db, txn, 0, err);
    cp_status rc2 = store_set_lazy_commit(db->st, 0, NULL);
    if (rc == CP_OK && rc2)
        rc = CP_ERR(err, rc2, "cannot turn LMDB syncing back on");
    if (rc == CP_OK) {
        /* The intake writer set it when its transaction began. */
        if (!atomic_load(&db->pending) && !atomic_load(&db->iw.open))
            db->pend_since_ms = time_now_ms();
        atomic_store(&db->pending, 1);
    }
    return rc;
}

/* data.mdb is durable up to lsn: the log before it can go. Serialised by
 * ckpt.mu (the checkpointer trims without the handle's lock, and
 * wal_truncate_before must not run twice at once). */
cp_status wal_trim(cp_db_t *db, uint64_t lsn, cp_error_t *err)
{
    cp_status rc = CP_OK;
    pthread_mutex_lock(&db->ckpt.mu);
    if (lsn > db->ckpt_lsn)
        db->ckpt_lsn = lsn;
    lsn = db->ckpt_lsn;
    wal_stats_t ws = {0};
    if (db->wal)
        wal_stats(db->wal, &ws);
    if (db->wal && lsn && ws.first_lsn && ws.first_lsn <= lsn) {
        /* A new segment, so the ones the checkpoint covers can go whole. */
        if ((rc = wal_rotate(db->wal, NULL, err)) == CP_OK)
            rc = wal_truncate_before(db->wal, lsn, NULL, err);
    }
    pthread_mutex_unlock(&db->ckpt.mu);
    return rc;
}

/*
 * Room for the checkpoint's own commit (dynamic crowds re-evaluated). On a
 * full disk that commit waits for space (the crowds stay stale, which the
 * next checkpoint retries) while the sync and the WAL trim still run.
 */
#define CKPT_ROOM (1ull << 20)

int ckpt_room(cp_db_t *db)
{
    cp_error_t e = {0};
    cp_status rc = store_ensure_room(db->st, CKPT_ROOM, &e);
    if (rc == CP_ENOSPC)
        db_note_write(db, rc, &e);
    return rc == CP_OK;
}

cp_status intake_checkpoint_locked(cp_db_t *db, cp_error_t *err)
{
    cp_status rc;
    if (db->crowds_stale && ckpt_room(db)) {
        store_txn_t *txn = NULL;
        if ((rc = store_txn_begin(db->st, 1, &txn, err)))
            return rc;
        db->data_changed = 1;
        db->crowds_stale = 0;
        if ((rc = db_commit_locked(db, txn, err))) /* synced */
            return rc;
    } else if (atomic_load(&db->pending) && (rc = store_sync(db->st, err))) {
        return rc;
    }
    atomic_store(&db->pending, 0);
    db->pend_records = 0;
    atomic_store(&db->last_ckpt_ms, time_now_ms());
    return wal_trim(db, db->applied_lsn, err);
}

void db_note_write(cp_db_t *db, cp_status rc, const cp_error_t *err)
{
    if (rc == CP_OK) {
        if (atomic_load(&db->nospc))
            atomic_store(&db->nospc, 0);
    } else if (rc == CP_ENOSPC) {
        const char *m = err && err->message[0] ? err->message : "the data directory's disk is full";
        size_t n = strnlen(m, sizeof db->nospc_msg - 1);
        memcpy(db->nospc_msg, m, n);
        db->nospc_msg[n] = '\0';
        atomic_store(&db->nospc, 1);
    }
}
