/*
 * intake.c — event requests: the Segment endpoints' requests are parsed on
 * the caller's thread, applied in arrival order by one intake writer and
 * acknowledged once their write-ahead log record is on disk; recovery
 * replays logged requests the same way.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
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

/* Parses and applies one logged request (recovery). Lock held. */
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
    cp_status rc = segment_parse((ingest_type)p[1], (const char *)p + REC_HDR, len - REC_HDR, &o,
                                 &b, &pe);
    if (rc == CP_OK)
        rc = prep_batch(db, &b, &bp, &pe);
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
    rc = intake_commit_light(db, txn, err);
out:
    bp_free(&bp);
    ingest_batch_free(&b);
    return rc;
}

static char *rejects_json(const ingest_batch_t *b)
{
    json_t *a = json_array();
    for (size_t i = 0; i < b->nrejects; i++)
        json_array_append_new(a, json_pack("{s:I,s:s}", "index", (json_int_t)b->rejects[i].index,
                                           "reason", b->rejects[i].reason));
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

void cp_ingest_result_clear(cp_ingest_result_t *res)
{
    if (res == NULL)
        return;
    free(res->errors_json);
    memset(res, 0, sizeof *res);
}

/*
 * Group apply. Every event request used to take the write lock, apply
 * itself and commit its own LMDB transaction (dirty attribute and behaviour
 * chunks, dedup window, catalog, meta) — most of a request's time, spent
 * once per request while the others queue on the lock. Instead, requests
 * queue here; one of them (the leader) applies every request waiting, each
 * validated on its own (a 400 skips only that request) and appended to the
 * WAL as its own record in apply order, then commits them all in one
 * transaction whose "wal_lsn" is the last record's: still a state of
 * data.mdb after a whole number of WAL records, which recovery needs. The
 * dirty chunks many requests share are written once per group. Each
 * request then waits for its own record's fsync (wal_sync, itself a group
 * commit) before it is acknowledged, as before.
 *
 * LMDB's write transaction belongs to the thread that began it, so the
 * leader begins and commits it. Leadership passes on after the leader's
 * own group, so no requester serves others indefinitely.
 */
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
    cp_error_t *err; /* the requester's (may be NULL) */
    int done;        /* set by the leader under grp_mu; the request is the requester's again */
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

/* Write lock taken and released here. */
static void group_apply(cp_db_t *db, intake_req_t *list)
{
    cp_error_t e = {0};
    store_txn_t *txn = NULL;
    size_t nvalid = 0;
    pthread_rwlock_wrlock(&db->lock);
    cp_status rc = db_check(db, &e);
    if (rc) {
        group_fail_each(db, list, NULL, rc, &e);
        pthread_rwlock_unlock(&db->lock);
        return;
    }
    for (intake_req_t *r = list; r; r = r->next)
        if ((r->rc = prep_batch(db, r->b, r->bp, r->err)) == CP_OK)
            nvalid++;
    if (nvalid == 0) {
        pthread_rwlock_unlock(&db->lock);
        return;
    }
    if ((rc = store_txn_begin(db->st, 1, &txn, &e))) {
        group_fail_each(db, list, NULL, rc, &e);
        pthread_rwlock_unlock(&db->lock);
        return;
    }
    for (intake_req_t *r = list; r; r = r->next) {
        if (r->rc != CP_OK)
            continue;
        rc = apply_batch(db, txn, r->b, r->bp, r->recv, &r->c, r->err);
        if (rc == CP_OK)
            rc = wal_append(db->wal, 1, r->rec, r->reclen, &r->lsn, r->err);
        if (rc) {
            /* Memory holds part of it: fail the handle (reopen replays). */
            r->rc = db_write_fail(db, txn, rc, r->err); /* unlocks */
            group_fail_each(db, list, r, CP_EIO, NULL);
            return;
        }
        db->applied_lsn = r->lsn;
    }
    if ((rc = acc_flush(db, &e))) {
        rc = db_write_fail(db, txn, rc, &e); /* unlocks */
        group_fail_each(db, list, NULL, rc, &e);
        return;
    }
    rc = intake_commit_light(db, txn, &e);
    if (rc == CP_OK)
        db->pend_records += nvalid - 1; /* checkpoints count requests */
    pthread_rwlock_unlock(&db->lock);
    if (rc)
        group_fail_each(db, list, NULL, rc, &e);
}

/* Queues req and returns once it was applied (req->rc, req->lsn). */
static void group_submit(cp_db_t *db, intake_req_t *req)
{
    pthread_mutex_lock(&db->grp_mu);
    if (db->grp_tail)
        db->grp_tail->next = req;
    else
        db->grp_head = req;
    db->grp_tail = req;
    while (!req->done && db->grp_leader)
        pthread_cond_wait(&db->grp_cv, &db->grp_mu);
    if (!req->done) {
        /* Lead: apply everything queued, up to and including req. */
        db->grp_leader = 1;
        while (!req->done) {
            intake_req_t *list = db->grp_head;
            db->grp_head = db->grp_tail = NULL;
            pthread_mutex_unlock(&db->grp_mu);
            group_apply(db, list);
            pthread_mutex_lock(&db->grp_mu);
            for (intake_req_t *r = list, *next; r; r = next) {
                next = r->next; /* r belongs to its requester once done */
                r->done = 1;
            }
        }
        db->grp_leader = 0;
        pthread_cond_broadcast(&db->grp_cv);
    }
    pthread_mutex_unlock(&db->grp_mu);
}

cp_status cp_ingest_segment(cp_db_t *db, cp_event_type type, const char *json, size_t len,
                            cp_ingest_result_t *res, cp_error_t *err)
{
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
    int64_t recv = cp_now_ms();
    ingest_batch_t b;
    ingest_batch_init(&b);
    batch_prep_t bp = {0};
    unsigned char *rec = NULL;
    uint64_t lsn = 0;
    segment_opts_t o = seg_opts(db, recv);
    cp_status rc = segment_parse((ingest_type)type, json, len, &o, &b, err);
    if (rc) {
        if (b.nrejects)
            res->errors_json = rejects_json(&b);
        goto out;
    }
    res->events = b.n;
    /* The log record: the request as received, with its receive time. */
    rec = malloc(REC_HDR + len);
    if (rec == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    rec[0] = 1;
    rec[1] = (unsigned char)type;
    rec[2] = 0;
    for (int i = 0; i < 8; i++)
        rec[3 + i] = (unsigned char)((uint64_t)recv >> (8 * i));
    memcpy(rec + REC_HDR, json, len);

    /* Applied with whatever other requests are waiting, in one LMDB
     * transaction (group_apply). */
    intake_req_t req = {0};
    req.b = &b;
    req.bp = &bp;
    req.rec = rec;
    req.reclen = REC_HDR + len;
    req.recv = recv;
    req.err = err;
    group_submit(db, &req);
    rc = req.rc;
    if (rc) {
        if (b.nrejects)
            res->errors_json = rejects_json(&b);
        goto out;
    }
    lsn = req.lsn;
    res->applied = req.c.applied;
    res->duplicates = req.c.duplicates;
    res->users_created = req.c.created;
    res->merges = req.c.merges;
    res->lsn = lsn;
    /* Group commit: concurrent requests share one fdatasync. */
    rc = wal_sync(db->wal, lsn, err);
out:
    free(rec);
    bp_free(&bp);
    ingest_batch_free(&b);
    return rc;
}

