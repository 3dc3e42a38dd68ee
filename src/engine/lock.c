/*
 * lock.c — the handle's lock and the write protocol of engine.h: reads
 * hold the lock shared, writes exclusively from validation to commit; a
 * write that fails after memory changed puts the handle in the failed
 * state. Taking the lock first asks the intake writer (writer.c) to commit
 * its open transaction.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "engine/engine_int.h"

cp_status db_check(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    if (atomic_load(&db->failed))
        return CP_ERR(err, CP_EIO, "%s", db->failed_msg);
    return CP_OK;
}

cp_status db_read_begin(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    db_lock_rd(db);
    cp_status rc = db_check(db, err);
    if (rc)
        pthread_rwlock_unlock(&db->lock);
    return rc;
}

cp_status db_read_begin_mem(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    /* Memory is whole between the intake writer's groups: no commit needed. */
    pthread_rwlock_rdlock(&db->lock);
    cp_status rc = db_check(db, err);
    if (rc)
        pthread_rwlock_unlock(&db->lock);
    return rc;
}

void db_read_end(cp_db_t *db)
{
    pthread_rwlock_unlock(&db->lock);
}

cp_status db_write_begin(cp_db_t *db, store_txn_t **txn, cp_error_t *err)
{
    *txn = NULL;
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    if (db->readonly)
        return CP_ERR(err, CP_EREADONLY, "data directory %s is open read-only", store_dir(db->st));
    db_lock_wr(db);
    cp_status rc = db_check(db, err);
    /* A full disk refuses the write here, before memory changes. */
    if (rc == CP_OK && (rc = store_ensure_room(db->st, DB_WRITE_ROOM, err)) == CP_ENOSPC)
        db_note_write(db, rc, err);
    if (rc == CP_OK)
        rc = store_txn_begin(db->st, 1, txn, err);
    if (rc) {
        pthread_rwlock_unlock(&db->lock);
        return rc;
    }
    db->data_changed = 0;
    return CP_OK;
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

void db_write_abort(cp_db_t *db, store_txn_t *txn)
{
    store_txn_abort(txn);
    db->data_changed = 0;
    pthread_rwlock_unlock(&db->lock);
}

cp_status db_write_fail(cp_db_t *db, store_txn_t *txn, cp_status rc, cp_error_t *err)
{
    store_txn_abort(txn);
    acc_discard(db);
    idcache_clear(db);
    snprintf(db->failed_msg, sizeof db->failed_msg,
             "a write to data directory %s failed after changing memory (%s); reopen the data "
             "directory",
             store_dir(db->st), cp_strerror(rc));
    atomic_store(&db->failed, 1);
    db->data_changed = 0;
    pthread_rwlock_unlock(&db->lock);
    if (err && err->message[0])
        error_prefix(err, "%s; reopen the data directory: ", cp_strerror(rc));
    else
        CP_ERR(err, CP_EIO, "%s", db->failed_msg);
    if (err)
        err->code = CP_EIO;
    return CP_EIO;
}

cp_status db_write_end(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    cp_status rc = db_commit_locked(db, txn, err);
    db_note_write(db, rc, err);
    pthread_rwlock_unlock(&db->lock);
    return rc;
}

/* The lock, shared or exclusive, with no intake transaction open. */
static void lock_quiet(cp_db_t *db, int exclusive)
{
    int wanting = 0;
    for (;;) {
        if (exclusive)
            pthread_rwlock_wrlock(&db->lock);
        else
            pthread_rwlock_rdlock(&db->lock);
        if (!atomic_load(&db->iw_open))
            break;
        pthread_rwlock_unlock(&db->lock);
        iw_wait_closed(db, &wanting);
    }
    if (wanting)
        iw_unwant(db);
}

void db_lock_rd(cp_db_t *db)
{
    lock_quiet(db, 0);
}

void db_lock_wr(cp_db_t *db)
{
    lock_quiet(db, 1);
}
