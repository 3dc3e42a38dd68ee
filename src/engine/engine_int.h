/*
 * engine_int.h — declarations shared by the engine's own files only
 * (src/engine/), bottom to top as the files are (docs/architecture.md);
 * the layers above include engine.h.
 */
#ifndef CP_ENGINE_INT_H
#define CP_ENGINE_INT_H

#include "engine/engine.h"

#define CP_FORMAT_VERSION 1u
#define CP_LINE_MAX (1u << 20)   /* NDJSON line / JSON document limit */
#define CP_BODY_MAX (256u << 20) /* taxonomy/schema JSON documents */
#define CP_USER_MAX_TAGS 4096    /* tags in one user record */
#define CP_SAMPLE_MAX 1000000u
#define CP_DEFAULT_BATCH_LINES 50000u

/* --------------------------------------------------------- evaluation (eval.c) */

/* The resolver over this database's index (caller holds the lock). */
void db_resolver(cp_db_t *db, plan_resolver_t *r);
/* Checks the names of a tree before it is planned, where the planner
 * alone would answer a silent empty set: a tag display path naming
 * several tags (CP_EINVAL), and an ENUM/STRING value never seen in `=` or
 * IN (CP_ENOTFOUND with "did you mean" suggestions); both at the node's
 * line:column. `!=` accepts any value (docs/expressions.md). Caller holds
 * the lock. */
cp_status db_check_names(cp_db_t *db, const expr_node_t *root, cp_error_t *err);
/* "; did you mean "a", "b" or "c"?" for a value never seen, from the
 * attribute's values and aliases nearest by code-point edit distance
 * (ASCII case ignored); "" when none is near. */
void db_value_suggest(const schema_attr_t *a, const char *v, size_t len, char *buf, size_t cap);
cp_status db_parse_json(const char *json, size_t len, expr_t **out, cp_error_t *err);
/* crowd_eval.c / crowd_schedule.c */
/* Re-evaluates every dynamic crowd in dependency order, then brings every
 * crowd record's size back to its members (write lock held). */
cp_status crowds_reeval_dynamic(cp_db_t *db, store_txn_t *txn, cp_error_t *err);
/* At open, after the index: an empty bitmap for each crowd without chunks
 * on disk (an empty crowd has none), and each size from its members. */
cp_status crowds_load_members(cp_db_t *db, cp_error_t *err);
/* Evaluates a crowd's stored expression into a new bitmap (lock held). */
cp_status crowds_eval_one(cp_db_t *db, const crowd_rec_t *c, roaring_bitmap_t **out,
                          cp_error_t *err);
/* eval.c: notes that a crowd was used now (any lock held; written by
 * the next tick); crowd_schedule.c: adds its schedule/expiry fields to its JSON view
 * (non-zero on ENOMEM). */
void crowds_mark_used(const crowd_rec_t *c, int64_t now_ms);
int crowds_obj_keep(json_t *o, const crowd_rec_t *c);

/* ------------------------------------ deferred event updates (deferred.c) */

#define CATALOG_MAX_KEYS 10000 /* keys per catalog kind; more count as other_keys */
#define CATALOG_EXAMPLES 3     /* example values kept per key */
enum { CAT_TRAITS = 0, CAT_PROPERTIES = 1, CAT_EVENTS = 2 };

typedef struct apply_acc apply_acc_t;

/* The same record as `cp_error_t e = {0}` for every reader (the message
 * up to its NUL): per-row error records of imports, which are used only on
 * a reject, without clearing ~560 bytes per row. */
static inline void acc_err_reset(cp_error_t *e)
{
    e->code = CP_OK;
    e->line = e->column = 0;
    e->record = 0;
    e->message[0] = '\0';
    e->src_file = e->src_func = NULL;
    e->src_line = 0;
}

cp_status acc_init(cp_db_t *db); /* CP_ENOMEM */
void acc_free(cp_db_t *db);
/* Queues one event's behaviour series for ord on day. CP_ENOMEM. */
cp_status acc_beh(cp_db_t *db, const uint32_t *series, size_t n, int32_t day, uint32_t ord);
/* Queues an event time for first_seen / last_seen. CP_ENOMEM. */
cp_status acc_seen(cp_db_t *db, uint32_t ord, int64_t ts);
/* Applies everything queued: before a merge and at the end of a batch. */
cp_status acc_flush(cp_db_t *db, cp_error_t *err);
/* An arena for per-batch scratch (lock held; reset it after use: its
 * blocks are kept for the next batch). */
arena_t *acc_scratch(cp_db_t *db);
/* Drops the queue (a failed write: the handle is failed anyway). */
void acc_discard(cp_db_t *db);
/* Identifier key -> canonical ordinal, for events whose keys are known. */
int idcache_get(const cp_db_t *db, const char *key, size_t klen, uint32_t *ord);
void idcache_put(cp_db_t *db, const char *key, size_t klen, uint32_t ord);
void idcache_clear(cp_db_t *db); /* after merges, unmerges, deletions, failures */
/* Catalog note as acc_catalog, for the note at position pos of an event
 * (rows of an import repeat names by position: looked up once). For
 * CAT_PROPERTIES *indexed (may be NULL) gets whether the name is an indexed
 * property (the intake config's list, as of the batch). */
cp_status acc_catalog_at(cp_db_t *db, int kind, size_t pos, const char *name, size_t nlen,
                         const ev_prop_t *v, const json_t *raw, int *indexed);
/* acc_catalog_at(CAT_PROPERTIES, pos + i, ...) for n properties of an
 * event from position pos (raw NULL for typed rows, else raw[i] per
 * property); indexed[i] gets whether property i is an indexed one.
 * CP_ENOMEM. */
cp_status acc_catalog_props(cp_db_t *db, size_t pos, const ev_prop_t *props,
                            const json_t *const *raw, size_t n, uint8_t *indexed);
/*
 * Identifier key cache of bulk imports: (type, value) -> its key, and the
 * ordinal that key resolved to while the identity cache is unchanged.
 * idraw_sync at a point where no key of the cache is in use (it drops
 * them all if the identity config changed or the cache is full). pos is
 * the identifier's position in its event (a hint). A slot is valid until
 * the next idraw_sync; keys returned are NUL-terminated.
 */
#define IDRAW_HINTS 16
void idraw_sync(cp_db_t *db, int full); /* full: compare the whole config */
int idraw_get(cp_db_t *db, size_t pos, const char *type, size_t tlen, const char *v, size_t vl,
              uint32_t *slot);
/* Adds a key; *slot = UINT32_MAX when not cached (full, oversized). CP_ENOMEM. */
cp_status idraw_put(cp_db_t *db, size_t pos, const char *type, size_t tlen, const char *v,
                    size_t vl, const char *key, size_t klen, uint32_t *slot);
const char *idraw_key(const cp_db_t *db, uint32_t slot, size_t *klen);
/* idraw_get's first, cheapest step (no type length needed): the key of
 * the entry identifier position pos found last time when (type, v) is it,
 * with *slot; else NULL (then ask idraw_get). type: a NUL-terminated
 * array of INGEST_TYPE_MAX bytes (ingest_ident_t.type). */
const char *idraw_hint(cp_db_t *db, size_t pos, const char *type, const char *v, size_t vl,
                       uint32_t *slot);
int idraw_ord(const cp_db_t *db, uint32_t slot, uint32_t *ord);
void idraw_set_ord(cp_db_t *db, uint32_t slot, uint32_t ord);
/* Adds the pending day sum (db->daysum) to the behaviour index; acc_flush
 * calls it. CP_ENOMEM. */
cp_status db_daysum_flush(cp_db_t *db);

/* ----------------------------------------------- applying events (apply.c) */

/* A batch of events prepared whole before any is applied (apply.c):
 * identifier keys normalised, traits checked. */
typedef struct prep prep_t;
typedef struct batch_prep {
    prep_t *p; /* [b->n] */
    arena_t arena;
} batch_prep_t;
typedef struct apply_counts {
    uint64_t applied, duplicates, created, merges;
} apply_counts_t;
/* Prepares every event of b (lock held). An event that cannot be applied
 * (no usable identifier, an unusable event name) is rejected into b and
 * skipped by apply_batch; values that cannot be used are warnings in b.
 * CP_EINVAL when every event was rejected, or with `strict` when any was.
 * bp is the caller's to bp_free either way. */
cp_status prep_batch(cp_db_t *db, ingest_batch_t *b, batch_prep_t *bp, int strict, cp_error_t *err);
void bp_free(batch_prep_t *bp);
/* Counts one unused value by its reason (an INGEST_WARN_*; cp_intake_counters). */
void intake_count_warning(cp_db_t *db, const char *reason);
/* Applies a prepared batch in order (write lock held, txn open); counts
 * into c. On failure memory may hold part of it (the caller fails the
 * handle). */
cp_status apply_batch(cp_db_t *db, store_txn_t *txn, ingest_batch_t *b, const batch_prep_t *bp,
                      int64_t now_ms, apply_counts_t *c, cp_error_t *err);

/* ---------------------------------------------- commit and checkpoints */

/* Persists the dirty state of a write (index, behaviour, dedup, catalog,
 * counters) and commits txn; the lock stays held. On failure the handle
 * enters the failed state (the lock stays held too). */
cp_status db_commit_locked(cp_db_t *db, store_txn_t *txn, cp_error_t *err);
/* Health after a write (cp_db_health): CP_ENOSPC sets db->nospc with the
 * message in err (may be NULL), CP_OK clears it, other statuses leave it. */
void db_note_write(cp_db_t *db, cp_status rc, const cp_error_t *err);
/* Room in data.mdb asked before an ordinary write transaction begins. */
#define DB_WRITE_ROOM (4ull << 20)

/* ------------------------------------------------ lock (lock.c) */

/* CP_EIO if the handle is in the failed state. */
cp_status db_check(cp_db_t *db, cp_error_t *err);
/* The same for reads of memory only (the index, keys, taxonomy): they may
 * run while the intake writer holds an open transaction, so they must not
 * read LMDB (which lags memory until the writer commits). */
cp_status db_read_begin_mem(cp_db_t *db, cp_error_t *err);

/* ---------------------------------------- the intake writer (writer.c) */

/* At open (before anything can fail; sets the lock's hand-off pointers
 * db->writer_wait/writer_unwant) and at close (before intake_close:
 * commits and joins the writer; later requests fail). */
void intake_writer_init(cp_db_t *db);
void intake_writer_stop(cp_db_t *db);

/* ----------------------------------------------------------------- results */

/* Wraps a bitmap as a result; ownership of bm passes (freed on failure). */
cp_status result_wrap(roaring_bitmap_t *bm, cp_result_t **out);

/* ---------------------------------------- intake state, open and close */

/* Write lock held: re-evaluates stale dynamic crowds, makes data.mdb
 * durable (fsync) up to the last applied WAL record and trims the WAL. */
cp_status intake_checkpoint_locked(cp_db_t *db, cp_error_t *err);
/* Re-evaluates dynamic crowds left stale by events (before reads that
 * show crowd membership). */
cp_status db_flush(cp_db_t *db, cp_error_t *err);
/* Write lock held: commits an event write without LMDB's fsync (the WAL
 * record is the durable copy); dynamic crowds wait for the checkpoint.
 * On failure the handle enters the failed state. */
cp_status intake_commit_light(cp_db_t *db, store_txn_t *txn, cp_error_t *err);
/* The canonical ordinal of a user id of the user dictionary (merged users
 * resolve to their survivor). CP_ENOTFOUND silent. */
cp_status db_user_lookup(store_txn_t *txn, const char *id, size_t len, uint32_t *ord,
                         cp_error_t *err);

/* ---------------------------------------------- compaction (compact.c) */

/* Notes in txn that data.mdb holds bytes of a deletion (meta
 * "compact_pending"); compact_kick after the commit. */
cp_status compact_mark(cp_db_t *db, store_txn_t *txn, cp_error_t *err);
/* Wakes (starting it if needed) the thread that compacts data.mdb once
 * nothing pins the old file. No lock needed; no-op when nothing pends. */
void compact_kick(cp_db_t *db);
/* At open: the mutex and condition (before anything can fail). */
void compact_init(cp_db_t *db);
/* At open, after recovery: reads the pending count; read-write handles
 * also remove a leftover data.mdb.compact and resume the compaction. */
cp_status compact_open(cp_db_t *db, cp_error_t *err);
/* At close, first: stops and joins the thread. */
void compact_stop(cp_db_t *db);
void compact_free(cp_db_t *db);

/* ------------------------------------------------ event application */

/* apply.c: applies a batch of parsed file events into txn, each on its
 * own: a bad one is reported through on_reject with its line (lines[i])
 * and skipped, the others applied. Lock held. */
cp_status intake_import_batch(cp_db_t *db, store_txn_t *txn, ingest_batch_t *b,
                              const uint64_t *lines, cp_reject_fn on_reject, void *ud,
                              int64_t now_ms, uint64_t *counts, cp_error_t *err);
/* events.c: parses and applies one logged request (recovery). Lock held. */
cp_status intake_apply_record(cp_db_t *db, const void *payload, size_t len, uint64_t lsn,
                              cp_error_t *err);

/* ------------------------------------------------ traits (traits.c) */

/* A trait as a value of attribute a; *why gets the reason on failure. */
typedef struct tval {
    int kind; /* 0 clear, 1 int, 2 str, 3 geo */
    int64_t i;
    char sbuf[64];
    const char *s;
    size_t slen;
    double lat, lon;
} tval_t;

int trait_value(const schema_attr_t *a, const ev_prop_t *v, const json_t *raw, tval_t *o, char *why,
                size_t cap);
int trait_value_json(const schema_attr_t *a, const json_t *v, tval_t *o, char *why, size_t cap);
cp_status set_value(cp_db_t *db, store_txn_t *txn, const schema_attr_t *a, uint32_t ord,
                    const tval_t *t, uint32_t *vid_out, cp_error_t *err);
json_t *attr_json(const cp_db_t *db, const schema_attr_t *a, uint32_t ord, int typed, int *oom);
int user_view_fill(const cp_db_t *db, uint32_t ord, int typed, json_t *attrs, json_t *tags,
                   json_t *crowds);
void ut_key(unsigned char k[7], uint32_t ord);
cp_status traits_get(store_txn_t *txn, uint32_t ord, json_t **out, cp_error_t *err);
cp_status traits_put(store_txn_t *txn, uint32_t ord, json_t *t, cp_error_t *err);
json_t *user_own(cp_db_t *db, store_txn_t *txn, uint32_t ord);
cp_status user_restore(cp_db_t *db, store_txn_t *txn, uint32_t ord, const json_t *own,
                       cp_error_t *err);

/* ---------------------------------------------------- other files */

/* crowd_schedule.c: a crowd found under the write or read lock. */
cp_status crowd_write_find(cp_db_t *db, const char *name, store_txn_t **txn, crowd_rec_t **c,
                           cp_error_t *err);
cp_status crowd_read_find(cp_db_t *db, const char *name, const crowd_rec_t **c, cp_error_t *err);

void cfg_clear(intake_cfg_t *c);
void cfg_defaults(intake_cfg_t *c);
cp_status cfg_apply_json(const json_t *j, intake_cfg_t *c, ident_config_t *idc, cp_error_t *err);
cp_status eval_crowd(cp_db_t *db, const crowd_rec_t *c, roaring_bitmap_t **out, cp_error_t *err);
cp_status wal_trim(cp_db_t *db, uint64_t lsn, cp_error_t *err);
int ckpt_room(cp_db_t *db);
void *ckpt_main(void *arg);
cp_status find_user(cp_db_t *db, store_txn_t *txn, const char *type, const char *value,
                    uint32_t *ord, cp_error_t *err);
cp_status parse_doc(const char *json, size_t len, const char *key, json_t **doc, json_t **arr,
                    cp_error_t *err);

/* -------------------------------------------- the intake writer (writer.c) */

/* One event request queued for the intake writer (writer.c, events.c). */
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
    int done;          /* set by the writer under iw.mu; the request is the requester's again */
    pthread_cond_t cv; /* its requester waits here: only it is woken */
} intake_req_t;
void group_submit(cp_db_t *db, intake_req_t *req);

/* A crowd's schedule and expiry settings (cp_crowd_settings_json's
 * object), parsed and checked before any write, applied to a record in
 * memory: the create path stores them in the crowd's first record. */
typedef struct crowd_settings {
    int set_refresh, set_tz, set_expire, thaw;
    char *refresh; /* owned until applied; NULL = stop refreshing */
    int minute;
    char *tz; /* owned until applied; NULL = the server's zone */
    int expire_after_days;
} crowd_settings_t;
cp_status crowd_settings_parse(const char *json, size_t len, crowd_settings_t *s, cp_error_t *err);
/* Moves the strings into c; s then holds nothing to free. */
void crowd_settings_apply(crowd_rec_t *c, crowd_settings_t *s, int64_t now);
void crowd_settings_free(crowd_settings_t *s);

#endif /* CP_ENGINE_INT_H */
