/*
 * writer.c — the intake writer: one thread applies queued event requests
 * in arrival order, in groups sharing one LMDB transaction, and commits it
 * when asked (a lock taker is waiting), when it is large or old enough.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine_int.h"

/*
 * The intake writer. Requests queue here in arrival order; one thread, the
 * writer, applies whatever is waiting as a group: each request validated
 * on its own (a 400 skips only that request), applied, and appended to the
 * WAL as its own record in apply order. Each requester then waits for its
 * own record's fsync (wal_sync, itself a group commit) before it is
 * acknowledged: the log is the durable copy.
 *
 * The writer keeps one LMDB write transaction open across groups and
 * commits it (without LMDB's fsync) only every IW_COMMIT_MS or
 * IW_COMMIT_EVENTS, or when someone else needs the store. Committing per
 * group wrote every page the group dirtied — with new users, one B-tree
 * leaf per identifier at random keys — and serialised every dirty bitmap
 * chunk and the catalog, once per group; held open, a page dirtied once
 * absorbs the next groups' inserts. The transaction's "wal_lsn" is set at
 * commit, so data.mdb still holds a whole number of WAL records, which
 * recovery needs.
 *
 * LMDB ties a write transaction to the thread that began it (and allows one
 * at a time), so only the writer begins and commits it. Everyone else
 * takes the handle's lock through db_lock_rd / db_lock_wr, which return
 * with no intake transaction open: they ask the writer to commit first
 * (iw_want), so a reader never sees memory ahead of data.mdb and another
 * writer never waits on LMDB's writer mutex while holding the lock the
 * intake writer needs. The writer only ever leaves a transaction open
 * while iw_want is 0.
 */
#define IW_COMMIT_MS 2000
#define IW_COMMIT_EVENTS 200000

/* A copy of the handle's failure for the other requests of a group. */
static cp_status group_fail_each(cp_db_t *db, intake_req_t *list, intake_req_t *except,
                                 cp_status rc, const cp_error_t *why)
{
    for (intake_req_t *r = list; r; r = r->next) {
        if (r == except || r->rc != CP_OK)
            continue;
        r->rc = CP_ERR(r->err, rc, "%s", why && why->message[0] ? why->message : db->failed_msg);
    }
    return rc;
}

/* The open transaction is gone (committed, aborted or failed): tell the
 * threads waiting in db_lock_*. Write lock held. */
static void iw_closed(cp_db_t *db)
{
    db->iw_txn = NULL;
    pthread_mutex_lock(&db->grp_mu);
    atomic_store(&db->iw_open, 0);
    pthread_cond_broadcast(&db->grp_cv);
    pthread_mutex_unlock(&db->grp_mu);
}

/* Write lock held, transaction open: commits it. */
static cp_status iw_commit(cp_db_t *db, cp_error_t *err)
{
    /* Small records wait in the log's buffer until a wal_sync. LMDB's
     * "wal_lsn" must not run ahead of what the log's files hold, or a
     * kill -9 right after this commit leaves a log that looks emptied
     * (open refuses it as damaged; `crowdpack recover` would be needed
     * though nothing acknowledged was lost): write them out first. If
     * that fails (the log failed, or ENOSPC despite the room reserved per
     * request), commit anyway: the requests waiting on wal_sync get the
     * error, and the window above is all that is at stake. */
    if (db->wal)
        (void)wal_write_out(db->wal, NULL);
    cp_status rc = intake_commit_light(db, db->iw_txn, err);
    db->iw_records = 0;
    db->iw_events = 0;
    db->iw_room = 0;
    iw_closed(db);
    return rc;
}

/*
 * Disk space is asked for before a request changes memory, so a full disk
 * refuses requests (CP_ENOSPC, HTTP 507) instead of failing a commit
 * whose changes memory already holds. What a request will dirty in
 * data.mdb is not known in advance: IW_ROOM_PER_EVENT per event plus
 * twice its bytes is a generous bound for Segment events (a user record, a
 * few identity rows, bitmap chunks shared with the rest of the group).
 * The open transaction commits early once its estimate passes IW_ROOM_TXN,
 * so the room asked for stays bounded.
 */
#define IW_ROOM_PER_EVENT 1024u
#define IW_ROOM_TXN (32ull << 20)

static uint64_t room_estimate(const intake_req_t *r)
{
    return 2 * (uint64_t)r->reclen + (uint64_t)r->b->n * IW_ROOM_PER_EVENT + 4096;
}

/* Room in data.mdb and the WAL for r, or CP_ENOSPC in r->err. Write lock held. */
static cp_status request_room(cp_db_t *db, intake_req_t *r, uint64_t est)
{
    cp_error_t e = {0};
    cp_status rc = store_ensure_room(db->st, db->iw_room + est, &e);
    if (rc == CP_OK)
        rc = wal_reserve(db->wal, r->reclen, &e);
    if (rc == CP_OK)
        return CP_OK;
    db_note_write(db, rc, &e);
    if (r->err)
        *r->err = e;
    return rc;
}

/* Applies list (may be NULL: only decides whether to commit). Write lock
 * taken and released here. Failures after memory changed fail the handle:
 * reopening replays the log, which holds every acknowledged request. */
static void group_apply(cp_db_t *db, intake_req_t *list)
{
    cp_error_t e = {0};
    size_t nvalid = 0;
    pthread_rwlock_wrlock(&db->lock);
    cp_status rc = db_check(db, &e);
    if (rc) {
        group_fail_each(db, list, NULL, rc, &e);
        if (db->iw_txn) {
            store_txn_abort(db->iw_txn);
            iw_closed(db);
        }
        pthread_rwlock_unlock(&db->lock);
        return;
    }
    uint64_t group_room = 0;
    for (intake_req_t *r = list; r; r = r->next)
        if ((r->rc = prep_batch(db, r->b, r->bp, r->strict, r->err)) == CP_OK) {
            nvalid++;
            group_room += room_estimate(r);
        }
    if (nvalid && db->iw_txn && db->iw_room + group_room > IW_ROOM_TXN) {
        (void)iw_commit(db, &e); /* a failure fails the handle; the log has everything */
        if (db_check(db, NULL) != CP_OK) {
            group_fail_each(db, list, NULL, CP_EIO, NULL);
            pthread_rwlock_unlock(&db->lock);
            return;
        }
    }
    size_t napplied = 0;
    for (intake_req_t *r = list; r; r = r->next) {
        if (r->rc != CP_OK)
            continue;
        /* Space is asked for before the request changes memory, after the
         * requests before it were applied and appended, so the asks add up. */
        uint64_t est = room_estimate(r);
        if ((r->rc = request_room(db, r, est)) != CP_OK)
            continue;
        if (db->iw_txn == NULL) {
            /* Nothing of this group is applied yet (the first applied
             * request begins the transaction). */
            if ((rc = store_txn_begin(db->st, 1, &db->iw_txn, &e))) {
                db->iw_txn = NULL;
                group_fail_each(db, list, NULL, rc, &e);
                pthread_rwlock_unlock(&db->lock);
                return;
            }
            db->iw_since_ms = time_now_ms();
            if (!atomic_load(&db->pending))
                db->pend_since_ms = db->iw_since_ms; /* the checkpointer's clock */
            atomic_store(&db->iw_open, 1);
        }
        rc = apply_batch(db, db->iw_txn, r->b, r->bp, r->recv, &r->c, r->err);
        if (rc == CP_OK)
            rc = wal_append(db->wal, 1, r->rec, r->reclen, &r->lsn, r->err);
        if (rc) {
            /* Memory holds part of it: fail the handle (reopen replays). */
            store_txn_t *t = db->iw_txn;
            iw_closed(db);
            r->rc = db_write_fail(db, t, rc, r->err); /* unlocks */
            group_fail_each(db, list, r, CP_EIO, NULL);
            return;
        }
        db->applied_lsn = r->lsn;
        db->iw_room += est;
        db->pend_records++; /* checkpoints count requests */
        db->iw_records++;
        db->iw_events += r->b->n;
        napplied++;
    }
    /* Readers see memory between groups: the queued updates go in now. */
    if (napplied && (rc = acc_flush(db, &e))) {
        store_txn_t *t = db->iw_txn;
        iw_closed(db);
        rc = db_write_fail(db, t, rc, &e); /* unlocks */
        group_fail_each(db, list, NULL, rc, &e);
        return;
    }
    if (db->iw_txn &&
        (atomic_load(&db->iw_want) || db->iw_stop || db->iw_events >= IW_COMMIT_EVENTS ||
         time_now_ms() - db->iw_since_ms >= IW_COMMIT_MS))
        (void)iw_commit(db, &e); /* a failure fails the handle; the log has everything */
    pthread_rwlock_unlock(&db->lock);
}

static void *iw_main(void *arg)
{
    cp_db_t *db = arg;
    pthread_setname_np(pthread_self(), "cp-intake");
    pthread_mutex_lock(&db->grp_mu);
    for (;;) {
        while (db->grp_head == NULL && !db->iw_stop &&
               !(atomic_load(&db->iw_open) && atomic_load(&db->iw_want))) {
            if (!atomic_load(&db->iw_open)) {
                pthread_cond_wait(&db->iw_cv, &db->grp_mu);
                continue;
            }
            int64_t due = db->iw_since_ms + IW_COMMIT_MS;
            if (time_now_ms() >= due)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = (int64_t)ts.tv_nsec + (due - time_now_ms()) * 1000000;
            ts.tv_sec += (time_t)(ns / 1000000000);
            ts.tv_nsec = (long)(ns % 1000000000);
            pthread_cond_timedwait(&db->iw_cv, &db->grp_mu, &ts);
        }
        if (db->iw_stop && db->grp_head == NULL && !atomic_load(&db->iw_open))
            break;
        intake_req_t *list = db->grp_head;
        db->grp_head = db->grp_tail = NULL;
        pthread_mutex_unlock(&db->grp_mu);
        group_apply(db, list);
        pthread_mutex_lock(&db->grp_mu);
        for (intake_req_t *r = list, *next; r; r = next) {
            next = r->next; /* r belongs to its requester once done */
            r->done = 1;
            pthread_cond_signal(&r->cv);
        }
    }
    pthread_mutex_unlock(&db->grp_mu);
    return NULL;
}

/* Queues req and returns once the writer applied it (req->rc, req->lsn). */
void group_submit(cp_db_t *db, intake_req_t *req)
{
    pthread_mutex_lock(&db->grp_mu);
    if (!db->iw_started && !db->iw_stop) {
        if (pthread_create(&db->iw_thread, NULL, iw_main, db) != 0) {
            pthread_mutex_unlock(&db->grp_mu);
            req->rc = CP_ERR(req->err, CP_ENOMEM, "cannot start the intake writer thread");
            return;
        }
        db->iw_started = 1;
    }
    if (db->iw_stop) {
        pthread_mutex_unlock(&db->grp_mu);
        req->rc = CP_ERR(req->err, CP_EIO, "data directory %s is closing", store_dir(db->st));
        return;
    }
    if (db->grp_tail)
        db->grp_tail->next = req;
    else
        db->grp_head = req;
    db->grp_tail = req;
    pthread_cond_signal(&db->iw_cv);
    while (!req->done)
        pthread_cond_wait(&req->cv, &db->grp_mu);
    pthread_mutex_unlock(&db->grp_mu);
}

/* Lock not held: waits until the writer has no transaction open, keeping
 * iw_want raised (*wanting) until the caller holds the lock. */
void iw_wait_closed(cp_db_t *db, int *wanting)
{
    pthread_mutex_lock(&db->grp_mu);
    if (!*wanting) {
        db->iw_want++;
        *wanting = 1;
    }
    pthread_cond_signal(&db->iw_cv);
    while (atomic_load(&db->iw_open))
        pthread_cond_wait(&db->grp_cv, &db->grp_mu);
    pthread_mutex_unlock(&db->grp_mu);
}

void iw_unwant(cp_db_t *db)
{
    pthread_mutex_lock(&db->grp_mu);
    db->iw_want--;
    pthread_mutex_unlock(&db->grp_mu);
}

void intake_writer_init(cp_db_t *db)
{
    pthread_cond_init(&db->iw_cv, NULL);
}

void intake_writer_stop(cp_db_t *db)
{
    pthread_mutex_lock(&db->grp_mu);
    db->iw_stop = 1;
    int started = db->iw_started;
    pthread_cond_signal(&db->iw_cv);
    pthread_mutex_unlock(&db->grp_mu);
    if (started) {
        pthread_join(db->iw_thread, NULL);
        db->iw_started = 0;
    }
}
