/*
 * durable.c — how intake survives kill -9 and power loss (docs/intake.md
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
#include <time.h>

#include "engine/engine.h"

static cp_status catalog_persist(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    if (!db->catalog_dirty || db->catalog == NULL)
        return CP_OK;
    char *s = json_dumps(db->catalog, JSON_COMPACT);
    if (s == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory saving the catalog");
    cp_status rc = store_put(txn, STORE_INTAKE, "catalog", 7, s, strlen(s), err);
    free(s);
    if (rc == CP_OK)
        db->catalog_dirty = 0;
    return rc;
}

cp_status intake_persist(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
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

cp_status intake_commit_light(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    if (db->data_changed) {
        /* Re-evaluating every dynamic crowd per request would dominate
         * intake: the checkpoint does it. */
        db->crowds_stale = 1;
        db->data_changed = 0;
    }
    /* A failure to set the flag only costs a sync of the meta page. */
    (void)store_set_lazy_commit(db->st, 1, NULL);
    cp_status rc = db_commit_locked(db, txn, err);
    cp_status rc2 = store_set_lazy_commit(db->st, 0, NULL);
    if (rc == CP_OK && rc2)
        rc = CP_ERR(err, rc2, "cannot turn LMDB syncing back on");
    if (rc == CP_OK) {
        /* The intake writer set it when its transaction began. */
        if (!atomic_load(&db->pending) && !atomic_load(&db->iw_open))
            db->pend_since_ms = time_now_ms();
        atomic_store(&db->pending, 1);
    }
    return rc;
}

/* data.mdb is durable up to lsn: the log before it can go. Serialised by
 * ckpt_mu (the checkpointer trims without the handle's lock, and
 * wal_truncate_before must not run twice at once). */
static cp_status wal_trim(cp_db_t *db, uint64_t lsn, cp_error_t *err)
{
    cp_status rc = CP_OK;
    pthread_mutex_lock(&db->ckpt_mu);
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
    pthread_mutex_unlock(&db->ckpt_mu);
    return rc;
}

/*
 * Room for the checkpoint's own commit (dynamic crowds re-evaluated). On a
 * full disk that commit waits for space (the crowds stay stale, which the
 * next checkpoint retries) while the sync and the WAL trim still run.
 */
#define CKPT_ROOM (1ull << 20)

static int ckpt_room(cp_db_t *db)
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

static void *ckpt_main(void *arg)
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

/* ------------------------------------------------------------ recovery */

cp_status intake_apply_record(cp_db_t *db, const void *payload, size_t len, uint64_t lsn,
                              cp_error_t *err);

static cp_status replay_one(void *ud, uint64_t lsn, uint8_t type, const void *payload, size_t len,
                            cp_error_t *err)
{
    cp_db_t *db = ud;
    if (type == 2)
        return CP_OK; /* a no-op filling an LSN gap */
    if (type != 1)
        return CP_ERR(err, CP_EIO, "write-ahead log record %llu has unknown type %u",
                      (unsigned long long)lsn, type);
    db_lock_wr(db);
    cp_status rc = intake_apply_record(db, payload, len, lsn, err);
    pthread_rwlock_unlock(&db->lock);
    return rc;
}

static void wal_log(void *ud, const char *msg)
{
    (void)ud;
    fprintf(stderr, "crowdpack: %s\n", msg);
}

/* A damaged log stops the open; the message says how to go on. */
static cp_status wal_refusal(cp_db_t *db, cp_status rc, cp_error_t *err)
{
    if (rc != CP_ECORRUPT)
        return rc;
    char why[sizeof err->message];
    snprintf(why, sizeof why, "%s", err->message);
    return CP_ERR(err, CP_ECORRUPT,
                  "%s. Refusing to start: restore the log from a backup or run `crowdpack "
                  "recover --data %s`",
                  why, store_dir(db->st));
}

/*
 * data.mdb says the log held records (its "wal_lsn" is past 0) but DIR/wal
 * or every segment in it is gone: a deleted log, not a fresh one (the log
 * always keeps its active segment, even right after a checkpoint). Opening
 * would create an empty log and forget whatever it held past wal_lsn.
 */
static cp_status wal_presence_check(cp_db_t *db, cp_error_t *err)
{
    if (db->ckpt_lsn == 0)
        return CP_OK;
    char path[4200];
    snprintf(path, sizeof path, "%s/wal", store_dir(db->st));
    DIR *d = opendir(path);
    int segs = 0;
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            size_t n = strlen(de->d_name);
            if (n > 4 && strcmp(de->d_name + n - 4, ".wal") == 0)
                segs++;
        }
        closedir(d);
    } else if (errno != ENOENT) {
        return CP_ERR(err, CP_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    if (segs > 0)
        return CP_OK;
    cp_status rc = CP_ERR(err, CP_ECORRUPT,
                          "wal: %s %s, but data.mdb has applied write-ahead log records up to "
                          "LSN %llu: the acknowledged records logged after it are lost",
                          path, d == NULL ? "is missing" : "holds no segment",
                          (unsigned long long)db->ckpt_lsn);
    return wal_refusal(db, rc, err);
}

cp_status intake_recover(cp_db_t *db, cp_error_t *err)
{
    if (db->readonly)
        return CP_OK;
    cp_status rc;
    if (!db->idc.ic_have_salt) {
        /* PII keys need the salt before the first event is validated. */
        store_txn_t *t = NULL;
        if ((rc = store_txn_begin(db->st, 1, &t, err)))
            return rc;
        if ((rc = ident_config_bind(t, &db->idc, 1, err))) {
            store_txn_abort(t);
            return rc;
        }
        if ((rc = store_txn_commit(t, err)))
            return rc;
    }
    if ((rc = wal_presence_check(db, err)))
        return rc;
    wal_options_t wo = {0};
    wo.initial_lsn = db->ckpt_lsn + 1;
    wo.log = wal_log;
    const char *ns = getenv("CROWDPACK_WAL_NOSYNC"); /* tests on tmpfs-less CI only */
    if (ns && ns[0] == '1')
        wo.sync = WAL_SYNC_NONE;
    rc = wal_open(store_dir(db->st), &wo, &db->wal, err);
    if (rc)
        return wal_refusal(db, rc, err);
    uint64_t last = wal_last_lsn(db->wal);
    wal_stats_t ws = {0};
    wal_stats(db->wal, &ws);
    if (last < db->ckpt_lsn && last + 1 == ws.active_first_lsn &&
        ws.active_first_lsn <= db->ckpt_lsn && ws.truncated_bytes == 0) {
        /* The newest segment is empty although data.mdb applied records
         * from it: emptied, not torn (a torn one keeps its partial bytes).
         * What it held after data.mdb's last commit is gone. */
        rc = CP_ERR(err, CP_ECORRUPT,
                    "wal: segment %s/wal/%020llu.wal is empty, but data.mdb has applied its "
                    "records up to LSN %llu: the log was truncated, and the acknowledged "
                    "records it held after that are lost",
                    store_dir(db->st), (unsigned long long)ws.active_first_lsn,
                    (unsigned long long)db->ckpt_lsn);
        return wal_refusal(db, rc, err);
    }
    if (last > db->ckpt_lsn) {
        db->applied_lsn = db->ckpt_lsn;
        if ((rc = wal_replay(db->wal, db->ckpt_lsn, replay_one, db, err)))
            return wal_refusal(db, rc, err);
        db_lock_wr(db);
        rc = intake_checkpoint_locked(db, err);
        pthread_rwlock_unlock(&db->lock);
        if (rc)
            return rc;
    } else if (last < db->ckpt_lsn) {
        /* data.mdb has records the log lost (a power loss after an
         * unsynced, unacknowledged append): new records must still get
         * LSNs after what data.mdb holds, so fill the gap with no-ops. */
        while (wal_last_lsn(db->wal) < db->ckpt_lsn)
            if ((rc = wal_append(db->wal, 2, NULL, 0, NULL, err)))
                return rc;
        if ((rc = wal_sync(db->wal, UINT64_MAX, err)))
            return rc;
    }
    db->applied_lsn = wal_last_lsn(db->wal);
    if (pthread_create(&db->ckpt_thread, NULL, ckpt_main, db) != 0)
        return CP_ERR(err, CP_ENOMEM, "cannot start the checkpoint thread");
    db->ckpt_started = 1;
    return CP_OK;
}

void intake_close(cp_db_t *db)
{
    if (db->ckpt_started) {
        pthread_mutex_lock(&db->ckpt_mu);
        db->ckpt_stop = 1;
        pthread_cond_signal(&db->ckpt_cv);
        pthread_mutex_unlock(&db->ckpt_mu);
        pthread_join(db->ckpt_thread, NULL);
        db->ckpt_started = 0;
    }
    if (!db->readonly && db->st && (atomic_load(&db->pending) || db->crowds_stale)) {
        cp_error_t e = {0};
        db_lock_wr(db);
        if (!atomic_load(&db->failed) && intake_checkpoint_locked(db, &e))
            fprintf(stderr, "crowdpack: final checkpoint failed: %s\n", e.message);
        pthread_rwlock_unlock(&db->lock);
    }
    wal_close(db->wal);
    db->wal = NULL;
}
