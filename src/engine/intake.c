/*
 * intake.c — event requests: the Segment endpoints' requests are parsed on
 * the caller's thread, applied in arrival order by one intake writer and
 * acknowledged once their write-ahead log record is on disk; recovery
 * replays logged requests the same way.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/feed.h"
/* ------------------------------------------------------------ requests */

/* WAL payload: u8 version, u8 endpoint, u8 flags, i64 LE receive time (ms), body. */
#define REC_HDR 11

static segment_opts_t seg_opts(const cp_db_t *db, int64_t recv_ms)
{
    segment_opts_t o = {0};
    o.received_at_ms = recv_ms;
    o.no_skew_correction = !db->cfg.skew_correction;
    o.id_types.names = NULL;
    return o;
}

/* Parses and applies one logged request (recovery). Lock held. Replays
 * are lenient: a lenient request's log record is its whole body, and
 * parsing and preparing it again skips the same rejected events; a strict
 * request is logged only when nothing of it was rejected. */
cp_status intake_apply_record(cp_db_t *db, const void *payload, size_t len, uint64_t lsn,
                              cp_error_t *err)
{
    const unsigned char *p = payload;
    if (len < REC_HDR || p[0] != 1)
        return CP_ERR(err, CP_EIO, "write-ahead log record %llu is malformed",
                      (unsigned long long)lsn);
    int64_t recv = 0;
    for (int i = 7; i >= 0; i--)
        recv = (int64_t)(((uint64_t)recv << 8) | p[3 + i]);
    ingest_batch_t b;
    ingest_batch_init(&b);
    segment_opts_t o = seg_opts(db, recv);
    cp_error_t pe = {0};
    batch_prep_t bp = {0};
    store_txn_t *txn;
    apply_counts_t c = {0};
    cp_status rc =
        segment_parse((ingest_type)p[1], (const char *)p + REC_HDR, len - REC_HDR, &o, &b, &pe);
    if (rc == CP_OK)
        rc = prep_batch(db, &b, &bp, 0, &pe);
    if (rc) {
        rc = CP_ERR(err, CP_EIO, "write-ahead log record %llu no longer applies: %s",
                    (unsigned long long)lsn, pe.message);
        goto out;
    }
    if ((rc = store_txn_begin(db->st, 1, &txn, err)))
        goto out;
    if ((rc = apply_batch(db, txn, &b, &bp, recv, &c, err)) || (rc = acc_flush(db, err))) {
        acc_discard(db);
        idcache_clear(db);
        store_txn_abort(txn);
        goto out;
    }
    db->applied_lsn = lsn;
    db->pend_records++;
    rc = intake_commit_light(db, txn, err);
out:
    bp_free(&bp);
    ingest_batch_free(&b);
    return rc;
}

static char *rejects_json(const ingest_batch_t *b)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < b->nrejects; i++)
        if (json_array_append_new(a,
                                  json_pack("{s:I,s:s}", "index", (json_int_t)b->rejects[i].index,
                                            "reason", b->rejects[i].reason)) != 0) {
            json_decref(a);
            a = NULL;
        }
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

static char *warnings_json(const ingest_batch_t *b)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < b->nwarnings; i++)
        if (json_array_append_new(
                a, json_pack("{s:I,s:s,s:s}", "index", (json_int_t)b->warnings[i].index, "field",
                             b->warnings[i].field, "reason", b->warnings[i].reason)) != 0) {
            json_decref(a);
            a = NULL;
        }
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

void cp_ingest_result_clear(cp_ingest_result_t *res)
{
    if (res == NULL)
        return;
    free(res->errors_json);
    free(res->warnings_json);
    memset(res, 0, sizeof *res);
}

cp_status cp_intake_counters(cp_db_t *db, cp_intake_counters_t *out)
{
    if (db == NULL || out == NULL)
        return CP_EINVAL;
    out->warn_placeholder = atomic_load(&db->warn_placeholder);
    out->warn_blocklisted = atomic_load(&db->warn_blocklisted);
    out->warn_invalid = atomic_load(&db->warn_invalid);
    out->warn_type_mismatch = atomic_load(&db->warn_type);
    out->rejected_events = atomic_load(&db->rejected_events);
    return CP_OK;
}

/* The request's outcome into res and the handle's counters. Warnings
 * past the INGEST_MAX_REPORTED kept are counted as "invalid" (their
 * reason is not kept). */
static void report(cp_db_t *db, const ingest_batch_t *b, cp_ingest_result_t *res)
{
    res->rejected = b->rejected;
    res->warnings = b->warned;
    if (b->nrejects && res->errors_json == NULL)
        res->errors_json = rejects_json(b);
    if (b->nwarnings && res->warnings_json == NULL)
        res->warnings_json = warnings_json(b);
    atomic_fetch_add(&db->rejected_events, b->rejected);
    for (size_t i = 0; i < b->nwarnings; i++)
        intake_count_warning(db, b->warnings[i].reason);
    for (size_t i = b->nwarnings; i < b->warned; i++)
        intake_count_warning(db, INGEST_WARN_INVALID);
}

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

typedef struct intake_req {
    struct intake_req *next;
    ingest_batch_t *b;
    batch_prep_t *bp;
    const unsigned char *rec; /* the WAL record */
    size_t reclen;
    int64_t recv;
    apply_counts_t c;
    uint64_t lsn;
    cp_status rc;
    cp_error_t *err;   /* the requester's (may be NULL) */
    int strict;        /* CP_INGEST_STRICT */
    int done;          /* set by the writer under grp_mu; the request is the requester's again */
    pthread_cond_t cv; /* its requester waits here: only it is woken */
} intake_req_t;

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
static void group_submit(cp_db_t *db, intake_req_t *req)
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
static void iw_wait_closed(cp_db_t *db, int *wanting)
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

static void iw_unwant(cp_db_t *db)
{
    pthread_mutex_lock(&db->grp_mu);
    db->iw_want--;
    pthread_mutex_unlock(&db->grp_mu);
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

cp_status cp_ingest_segment(cp_db_t *db, cp_event_type type, const char *json, size_t len,
                            cp_ingest_result_t *res, cp_error_t *err)
{
    return cp_ingest_segment_ex(db, type, json, len, 0, res, err);
}

cp_status cp_ingest_segment_ex(cp_db_t *db, cp_event_type type, const char *json, size_t len,
                               unsigned flags, cp_ingest_result_t *res, cp_error_t *err)
{
    feed_wait_room(db);
    cp_ingest_result_t dummy;
    if (res == NULL)
        res = &dummy;
    memset(res, 0, sizeof *res);
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    if ((int)type < 0 || type > CP_EVENT_ALIAS)
        return CP_ERR(err, CP_EINVAL, "unknown event type %d", (int)type);
    if (db->readonly)
        return CP_ERR(err, CP_EREADONLY, "data directory %s is open read-only", store_dir(db->st));
    int64_t recv = time_now_ms();
    ingest_batch_t b;
    ingest_batch_init(&b);
    batch_prep_t bp = {0};
    unsigned char *rec = NULL;
    uint64_t lsn = 0;
    segment_opts_t o = seg_opts(db, recv);
    o.strict = (flags & CP_INGEST_STRICT) != 0;
    cp_status rc = segment_parse((ingest_type)type, json, len, &o, &b, err);
    if (rc) {
        b.nwarnings = b.warned = 0; /* nothing applied: nothing was left out of it */
        report(db, &b, res);
        goto out;
    }
    res->events = b.n + b.rejected;
    /* The log record: the request as received, with its receive time. */
    rec = malloc(REC_HDR + len);
    if (rec == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    rec[0] = 1;
    rec[1] = (unsigned char)type;
    rec[2] = (unsigned char)(flags & CP_INGEST_STRICT); /* replays are lenient: see
                                                         * intake_apply_record */
    for (int i = 0; i < 8; i++)
        rec[3 + i] = (unsigned char)((uint64_t)recv >> (8 * i));
    memcpy(rec + REC_HDR, json, len);

    /* Applied by the intake writer with whatever else is waiting. */
    intake_req_t req = {0};
    req.b = &b;
    req.bp = &bp;
    req.rec = rec;
    req.reclen = REC_HDR + len;
    req.recv = recv;
    req.err = err;
    req.strict = o.strict;
    pthread_cond_init(&req.cv, NULL);
    group_submit(db, &req);
    pthread_cond_destroy(&req.cv);
    rc = req.rc;
    if (rc) {
        if (rc == CP_EINVAL)
            b.nwarnings = b.warned = 0;
        report(db, &b, res);
        goto out;
    }
    report(db, &b, res);
    lsn = req.lsn;
    res->applied = req.c.applied;
    res->duplicates = req.c.duplicates;
    res->users_created = req.c.created;
    res->merges = req.c.merges;
    res->lsn = lsn;
    /* Group commit: concurrent requests share one fdatasync. */
    rc = wal_sync(db->wal, lsn, err);
    db_note_write(db, rc, err);
out:
    free(rec);
    bp_free(&bp);
    ingest_batch_free(&b);
    return rc;
}
