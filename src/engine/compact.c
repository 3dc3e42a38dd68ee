/*
 * compact.c — erasing the bytes of deleted users from data.mdb.
 *
 * LMDB does not overwrite a page when a record is deleted: the page goes
 * to the free list with the bytes still in it, and a reader's snapshot
 * keeps pages alive however old. Only a compacting copy (live pages only)
 * leaves nothing behind. A deletion therefore commits at once (the user is
 * gone from every answer when it returns) and records in meta
 * "compact_pending" that data.mdb still holds erased bytes; a background
 * thread then compacts as soon as nothing pins the old file: no iterator
 * (an export) of this handle, no transaction, no other process with
 * data.mdb open (store_compact refuses then). Until it succeeds it tries
 * again, backing off up to COMPACT_RETRY_MAX_MS; the flag survives restarts
 * (an open with it set starts the thread), and a compaction that died
 * half-way leaves only data.mdb.compact, removed at the next open.
 *
 * The copy runs under the handle's write lock (a write committed during
 * it would be lost by the swap), so reads and writes wait for it: roughly
 * the time to copy the live data once.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine_int.h"

#define COMPACT_META "compact_pending"
#define COMPACT_DELAY_MS 100
#define COMPACT_RETRY_MIN_MS 50
#define COMPACT_RETRY_MAX_MS 2000

cp_status compact_mark(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    uint64_t n = 0;
    cp_status rc = store_meta_get_u64(txn, COMPACT_META, &n, err);
    if (rc && rc != CP_ENOTFOUND)
        return rc;
    if ((rc = store_meta_put_u64(txn, COMPACT_META, n + 1, err)))
        return rc;
    atomic_store(&db->compact_pending, n + 1);
    return CP_OK;
}

/*
 * One attempt (no lock held by the caller). CP_OK when data.mdb is
 * compacted and the flag cleared (or nothing was pending); CP_ECONFLICT or
 * CP_ELOCKED while something still pins the old file; other statuses are
 * failures. A compaction that could not reopen the environment fails the
 * handle. force: compact even with nothing pending.
 */
static cp_status compact_try(cp_db_t *db, int force, cp_error_t *err)
{
    if (atomic_load(&db->iters) > 0)
        return CP_ERR(err, CP_ECONFLICT,
                      "%d result iterators (exports) are open; data.mdb is compacted when they "
                      "close",
                      atomic_load(&db->iters));
    db_lock_wr(db);
    cp_status rc = db_check(db, err);
    if (rc || (!force && atomic_load(&db->compact_pending) == 0))
        goto out;
    if (atomic_load(&db->iters) > 0) {
        rc = CP_ERR(err, CP_ECONFLICT,
                    "%d result iterators (exports) are open; data.mdb is compacted when they "
                    "close",
                    atomic_load(&db->iters));
        goto out;
    }
    rc = store_compact(db->st, err);
    if (!store_usable(db->st)) {
        snprintf(db->failed_msg, sizeof db->failed_msg,
                 "compacting data.mdb of %s failed and it could not be reopened; reopen the data "
                 "directory",
                 store_dir(db->st));
        atomic_store(&db->failed, 1);
        goto out;
    }
    if (rc)
        goto out;
    /* The copy holds the flag as it was: clear it in the new file. */
    store_txn_t *txn = NULL;
    if ((rc = store_txn_begin(db->st, 1, &txn, err)))
        goto out;
    if ((rc = store_meta_put_u64(txn, COMPACT_META, 0, err))) {
        store_txn_abort(txn);
        goto out;
    }
    if ((rc = store_txn_commit(txn, err)))
        goto out;
    atomic_store(&db->compact_pending, 0);
    atomic_fetch_add(&db->compactions, 1);
out:
    pthread_rwlock_unlock(&db->lock);
    return rc;
}

/* Realtime milliseconds: what pthread_cond_timedwait's deadline counts. */
static int64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The first attempt waits COMPACT_DELAY_MS after the deletion that made
 * one pending (a burst of deletions then costs one compaction, not one
 * each; later kicks do not push it back); busy attempts back off.
 */
static void *compact_main(void *arg)
{
    cp_db_t *db = arg;
    int64_t next_ms = 0, backoff = 0; /* next_ms 0: nothing scheduled */
    pthread_mutex_lock(&db->cmp_mu);
    while (!db->cmp_stop) {
        if (atomic_load(&db->compact_pending) == 0 || db->cmp_paused) {
            next_ms = backoff = 0;
            pthread_cond_wait(&db->cmp_cv, &db->cmp_mu);
            continue;
        }
        int64_t now = clock_ms();
        if (next_ms == 0)
            next_ms = now + COMPACT_DELAY_MS;
        if (now < next_ms) {
            struct timespec ts = {.tv_sec = next_ms / 1000, .tv_nsec = (next_ms % 1000) * 1000000L};
            (void)pthread_cond_timedwait(&db->cmp_cv, &db->cmp_mu, &ts);
            continue; /* woken early (a kick, stop): look again */
        }
        pthread_mutex_unlock(&db->cmp_mu);
        cp_error_t err = {0};
        cp_status rc = compact_try(db, 0, &err);
        pthread_mutex_lock(&db->cmp_mu);
        if (rc == CP_OK) {
            next_ms = backoff = 0;
        } else if (rc == CP_ECONFLICT || rc == CP_ELOCKED) {
            /* Readers: back off, they end on their own. */
            backoff = backoff ? backoff * 2 : COMPACT_RETRY_MIN_MS;
            if (backoff > COMPACT_RETRY_MAX_MS)
                backoff = COMPACT_RETRY_MAX_MS;
            next_ms = clock_ms() + backoff;
        } else {
            if (!atomic_load(&db->failed))
                fprintf(stderr, "crowdpack: compacting data.mdb failed (tried again later): %s\n",
                        err.message);
            next_ms = clock_ms() + COMPACT_RETRY_MAX_MS * 5;
        }
    }
    pthread_mutex_unlock(&db->cmp_mu);
    return NULL;
}

void compact_init(cp_db_t *db)
{
    pthread_mutex_init(&db->cmp_mu, NULL);
    pthread_cond_init(&db->cmp_cv, NULL);
}

void compact_kick(cp_db_t *db)
{
    if (db->readonly || atomic_load(&db->compact_pending) == 0)
        return;
    pthread_mutex_lock(&db->cmp_mu);
    if (!db->cmp_started && !db->cmp_stop) {
        /* Without the thread the flag stays set: the next open retries. */
        if (pthread_create(&db->cmp_thread, NULL, compact_main, db) == 0)
            db->cmp_started = 1;
    }
    pthread_cond_signal(&db->cmp_cv);
    pthread_mutex_unlock(&db->cmp_mu);
}

cp_status compact_open(cp_db_t *db, cp_error_t *err)
{
    if (!db->readonly && store_compact_cleanup(db->st))
        fprintf(stderr,
                "crowdpack: removed %s/data.mdb.compact left by an interrupted "
                "compaction\n",
                store_dir(db->st));
    store_txn_t *txn = NULL;
    cp_status rc = store_txn_begin(db->st, 0, &txn, err);
    if (rc)
        return rc;
    uint64_t n = 0;
    rc = store_meta_get_u64(txn, COMPACT_META, &n, err);
    store_txn_abort(txn);
    if (rc && rc != CP_ENOTFOUND)
        return rc;
    atomic_store(&db->compact_pending, n);
    compact_kick(db);
    return CP_OK;
}

void compact_stop(cp_db_t *db)
{
    pthread_mutex_lock(&db->cmp_mu);
    db->cmp_stop = 1;
    int started = db->cmp_started;
    pthread_cond_broadcast(&db->cmp_cv);
    pthread_mutex_unlock(&db->cmp_mu);
    if (started)
        pthread_join(db->cmp_thread, NULL);
    db->cmp_started = 0;
}

void compact_free(cp_db_t *db)
{
    pthread_mutex_destroy(&db->cmp_mu);
    pthread_cond_destroy(&db->cmp_cv);
}

cp_status cp_db_compact(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    if (db->readonly)
        return CP_ERR(err, CP_EREADONLY, "data directory %s is open read-only", store_dir(db->st));
    /* Hold the thread off so the answer is this attempt's. */
    pthread_mutex_lock(&db->cmp_mu);
    db->cmp_paused++;
    pthread_mutex_unlock(&db->cmp_mu);
    cp_status rc = compact_try(db, 1, err);
    pthread_mutex_lock(&db->cmp_mu);
    db->cmp_paused--;
    pthread_cond_signal(&db->cmp_cv);
    pthread_mutex_unlock(&db->cmp_mu);
    return rc;
}
