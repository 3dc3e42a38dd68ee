/*
 * events.c — the Segment event API: a request is parsed on the caller's
 * thread, applied in arrival order by the intake writer (writer.c) and
 * acknowledged once its write-ahead log record is on disk; recovery
 * replays logged requests through intake_apply_record the same way.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine_int.h"
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
    char *s = a ? json_dumps_checked(a, JSON_COMPACT) : NULL;
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
    char *s = a ? json_dumps_checked(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

void cp_ingest_result_clear(cp_ingest_result_t *res)
{
    /* Every size since the first holds both texts; a smaller one was
     * refused by cp_ingest_segment_ex, so it never holds any. */
    if (res == NULL || res->size < CP_SIZE_THROUGH(cp_ingest_result_t, warnings_json))
        return;
    free(res->errors_json);
    free(res->warnings_json);
    cp_ingest_result_t empty = {0};
    sized_out(res, &empty, sizeof empty);
}

cp_status cp_intake_counters(cp_db_t *db, cp_intake_counters_t *out, cp_error_t *err)
{
    if (db == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_intake_counters: no handle or out is NULL");
    cp_status rc = sized_out_check(out, CP_SIZE_THROUGH(cp_intake_counters_t, rejected_events),
                                   "cp_intake_counters_t", err);
    if (rc)
        return rc;
    cp_intake_counters_t c = {0};
    c.warn_placeholder = atomic_load(&db->warn_placeholder);
    c.warn_blocklisted = atomic_load(&db->warn_blocklisted);
    c.warn_invalid = atomic_load(&db->warn_invalid);
    c.warn_type_mismatch = atomic_load(&db->warn_type);
    c.rejected_events = atomic_load(&db->rejected_events);
    sized_out(out, &c, sizeof c);
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

cp_status cp_ingest_segment(cp_db_t *db, cp_event_type type, const char *json, size_t len,
                            cp_ingest_result_t *res, cp_error_t *err)
{
    return cp_ingest_segment_ex(db, type, json, len, 0, res, err);
}

static cp_status ingest_segment(cp_db_t *db, cp_event_type type, const char *json, size_t len,
                                unsigned flags, cp_ingest_result_t *res, cp_error_t *err);

/* The caller's result may be of an older, smaller size: the request runs
 * on a whole one and what the caller's holds is copied back. */
cp_status cp_ingest_segment_ex(cp_db_t *db, cp_event_type type, const char *json, size_t len,
                               unsigned flags, cp_ingest_result_t *res, cp_error_t *err)
{
    cp_status rc;
    if (res && (rc = sized_out_check(res, CP_SIZE_THROUGH(cp_ingest_result_t, warnings_json),
                                     "cp_ingest_result_t", err)))
        return rc;
    cp_ingest_result_t full = CP_INGEST_RESULT_INIT;
    rc = ingest_segment(db, type, json, len, flags, &full, err);
    if (res)
        sized_out(res, &full, sizeof full);
    else
        cp_ingest_result_clear(&full);
    return rc;
}

static cp_status ingest_segment(cp_db_t *db, cp_event_type type, const char *json, size_t len,
                                unsigned flags, cp_ingest_result_t *res, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    feed_wait_room(db); /* a slow change feed holds new requests back */
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
