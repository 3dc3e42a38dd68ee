/* checkpoint.c — the checkpointer thread, explicit checkpoints
 * (cp_checkpoint) and db_flush: each takes the write lock and runs
 * intake_checkpoint_locked (commit.c). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine_int.h"

cp_status db_flush(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL || db->readonly || !db->crowds_stale)
        return CP_OK;
    db_lock_wr(db);
    cp_status rc = db_check(db, err);
    if (rc == CP_OK && db->crowds_stale)
        rc = intake_checkpoint_locked(db, err);
    pthread_rwlock_unlock(&db->lock);
    return rc;
}

cp_status cp_checkpoint(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    if (db->readonly)
        return CP_OK;
    db_lock_wr(db);
    cp_status rc = db_check(db, err);
    if (rc == CP_OK)
        rc = intake_checkpoint_locked(db, err);
    pthread_rwlock_unlock(&db->lock);
    return rc;
}

/* ------------------------------------------------------- checkpointer */

/*
 * A checkpoint as intake_checkpoint_locked, but data.mdb's fsync runs
 * without the lock, so the intake writer goes on applying (it used to wait
 * for the whole sync). Under the lock: the writer's transaction committed
 * (db_lock_wr), stale dynamic crowds re-evaluated and committed, the LSN
 * noted. Then the sync, which covers every commit made before it began,
 * that one included; then the log before that LSN can go. Commits made
 * meanwhile stay pending for the next checkpoint.
 */
static cp_status ckpt_background(cp_db_t *db, cp_error_t *err)
{
    cp_status rc = CP_OK;
    db_lock_wr(db); /* the writer commits first: pending is set */
    if (!atomic_load(&db->pending) || atomic_load(&db->failed)) {
        pthread_rwlock_unlock(&db->lock);
        return CP_OK;
    }
    if (db->crowds_stale && ckpt_room(db)) {
        store_txn_t *txn = NULL;
        if ((rc = store_txn_begin(db->st, 1, &txn, err))) {
            pthread_rwlock_unlock(&db->lock);
            return rc;
        }
        db->data_changed = 1;
        db->crowds_stale = 0;
        (void)store_set_lazy_commit(db->st, 1, NULL); /* meta synced below */
        rc = db_commit_locked(db, txn, err);
        cp_status rc2 = store_set_lazy_commit(db->st, 0, NULL);
        if (rc == CP_OK && rc2)
            rc = CP_ERR(err, rc2, "cannot turn LMDB syncing back on");
        if (rc) {
            pthread_rwlock_unlock(&db->lock);
            return rc;
        }
    }
    uint64_t lsn = db->applied_lsn;
    atomic_store(&db->pending, 0);
    db->pend_records = 0;
    pthread_rwlock_unlock(&db->lock);
    if ((rc = store_sync(db->st, err))) {
        atomic_store(&db->pending, 1); /* try again next time */
        return rc;
    }
    return wal_trim(db, lsn, err);
}

void *ckpt_main(void *arg)
{
    cp_db_t *db = arg;
    pthread_mutex_lock(&db->ckpt_mu);
    while (!db->ckpt_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&db->ckpt_cv, &db->ckpt_mu, &ts);
        if (db->ckpt_stop)
            break;
        if ((!atomic_load(&db->pending) && !atomic_load(&db->iw_open)) || atomic_load(&db->failed))
            continue;
        pthread_mutex_unlock(&db->ckpt_mu);
        /* Due? Asked under a plain shared lock: db_lock_* would make the
         * intake writer commit every tick. */
        pthread_rwlock_rdlock(&db->lock);
        int due = time_now_ms() - db->pend_since_ms >= db->cfg.ckpt_interval_ms ||
                  db->pend_records >= db->cfg.ckpt_records;
        pthread_rwlock_unlock(&db->lock);
        cp_error_t e = {0};
        if (due && ckpt_background(db, &e))
            fprintf(stderr, "crowdpack: checkpoint failed: %s\n", e.message);
        pthread_mutex_lock(&db->ckpt_mu);
    }
    pthread_mutex_unlock(&db->ckpt_mu);
    return NULL;
}
