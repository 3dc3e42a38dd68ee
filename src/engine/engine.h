/*
 * engine.h — the private side of the public cp_db_t: store + model + index
 * + query tied together (src/engine/ exists because crowds need the query
 * layer, which sits above model/ and index/).
 *
 * Concurrency: one pthread rwlock per handle. Queries, JSON views, key
 * checks and exports hold it shared; every write holds it exclusively from
 * validation to commit. A write is: validate everything (nothing touched),
 * then apply to memory and to one LMDB write transaction, re-evaluate the
 * dynamic crowds, persist the dirty bitmaps, commit. If anything fails
 * after memory was touched, memory and disk have diverged: the handle
 * enters a failed state and every later call returns CP_EIO ("reopen the
 * data directory"), which reloads the last committed state.
 */
#ifndef CP_ENGINE_H
#define CP_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>

#include "crowdpack.h"
#include "index/behavior.h"
#include "index/index.h"
#include "index/measure.h"
#include "ingest/dedup.h"
#include "ingest/event.h"
#include "model/apikey.h"
#include "model/crowd.h"
#include "model/group.h"
#include "model/identity.h"
#include "model/normalize.h"
#include "model/propval.h"
#include "model/schema.h"
#include "model/strmap.h"
#include "model/taxonomy.h"
#include "model/users.h"
#include "query/ast.h"
#include "query/plan.h"
#include "store/store.h"
#include "store/wal.h"
#include "util/util.h"

#define CP_FORMAT_VERSION 1u
#define CP_LINE_MAX (1u << 20)   /* NDJSON line / JSON document limit */
#define CP_BODY_MAX (256u << 20) /* taxonomy/schema JSON documents */
#define CP_USER_MAX_TAGS 4096    /* tags in one user record */
#define CP_SAMPLE_MAX 1000000u
#define CP_DEFAULT_BATCH_LINES 50000u

/* Intake settings (cp_intake_config_json; meta "intake_config"). */
#define INTAKE_MAX_INDEXED 64
#define INTAKE_MAX_BLOCKLIST 256
typedef struct intake_cfg {
    char *indexed[INTAKE_MAX_INDEXED]; /* indexed event properties */
    size_t nindexed;
    int64_t dedup_window_ms;
    uint64_t dedup_max;
    int32_t retention_days; /* 0 = keep every day */
    int64_t ckpt_interval_ms;
    uint64_t ckpt_records;
    int skew_correction;
    char *blocklist[INTAKE_MAX_BLOCKLIST]; /* identifier values never used for identity */
    size_t nblocklist;
} intake_cfg_t;

struct cp_db {
    store_t *st;
    int readonly;
    taxonomy_t tax;
    schema_t sch;
    crowd_set_t crowds;
    apikey_set_t keys;
    index_t *ix;
    eval_engine_t *ev;
    pthread_rwlock_t lock;
    uint32_t next_ordinal;
    int data_changed; /* re-evaluate dynamic crowds at this commit whatever changed (a
                         checkpoint); changes themselves are recorded by the index */
    atomic_int failed;
    char failed_msg[256];
    atomic_uint_least64_t queries;
    atomic_uint_least64_t writes;
    /* ---- event intake (events.c, durable.c) ---- */
    beh_t *beh;         /* behaviour index */
    meas_t *meas;       /* event measures per user (index/measure.h; RFM) */
    ident_config_t idc; /* identifier normalisation and hashing */
    intake_cfg_t cfg;
    dedup_t *dedup;
    wal_t *wal;         /* NULL when read-only */
    atomic_int pending; /* events committed since the last checkpoint */
    atomic_int
        crowds_stale; /* dynamic crowds not re-evaluated since events (read unlocked by db_flush) */
    uint64_t pend_records;
    int64_t pend_since_ms;
    uint64_t applied_lsn; /* last WAL record applied in memory */
    uint64_t ckpt_lsn;    /* last WAL record in LMDB */
    json_t *catalog;      /* {"traits":{},"properties":{},"events":{}} */
    group_set_t groups;   /* Segment groups: traits and members (model/group.h) */
    /* intake outcomes since open (cp_intake_counters): warnings by reason
     * (INGEST_WARN_* order of cp_intake_counters_t), rejected events */
    atomic_uint_least64_t warn_placeholder, warn_blocklisted, warn_invalid, warn_type;
    atomic_uint_least64_t rejected_events;
    int catalog_dirty;
    uint32_t attr_first_seen, attr_last_seen; /* 0 until declared */
    pthread_t ckpt_thread;
    int ckpt_started;
    pthread_mutex_t ckpt_mu;
    pthread_cond_t ckpt_cv;
    int ckpt_stop;
    /* the intake writer (intake.c): event requests queue under grp_mu */
    pthread_mutex_t grp_mu;
    pthread_cond_t grp_cv;                  /* iw_open went 0 (requests have their own) */
    pthread_cond_t iw_cv;                   /* work for the writer */
    struct intake_req *grp_head, *grp_tail; /* waiting, in arrival order */
    pthread_t iw_thread;
    int iw_started, iw_stop;        /* under grp_mu */
    store_txn_t *iw_txn;            /* the writer's open transaction */
    atomic_int iw_open;             /* iw_txn != NULL (changed under the write lock) */
    atomic_int iw_want;             /* threads waiting for it to commit */
    int64_t iw_since_ms;            /* when iw_txn began */
    uint64_t iw_records, iw_events; /* applied into iw_txn */
    uint64_t iw_room;               /* bytes of data.mdb asked for iw_txn */
    atomic_int iters;               /* open cp_iter (they hold LMDB read txns) */
    /* health (cp_db_health): set by the write paths, read unlocked */
    atomic_int nospc;                  /* last write failed CP_ENOSPC; cleared by a
                                          write that succeeds */
    char nospc_msg[256];               /* its message (written before nospc is set) */
    atomic_int_least64_t last_ckpt_ms; /* wall clock of the last checkpoint, 0 = none */
    /* compaction after deletions (compact.c) */
    atomic_uint_least64_t compact_pending; /* deletions not yet compacted out of data.mdb */
    atomic_uint_least64_t compactions;     /* compactions done since open */
    atomic_uint_least64_t del_gen;         /* bumped by each committed deletion */
    pthread_t cmp_thread;
    pthread_mutex_t cmp_mu;
    pthread_cond_t cmp_cv;
    int cmp_started, cmp_stop, cmp_paused; /* under cmp_mu */
    /* deferred event updates and the identity cache (acc.c) */
    struct apply_acc *acc;
    _Atomic(struct feed *) feed; /* change feed (feed.c); NULL until a subscription */
    /* did() sum(): the day sum last applied and not yet in the behaviour
     * index (events.c apply_day_sums); acc_flush adds it, so a run of one
     * user's lines on one day costs one beh_record. */
    struct {
        uint32_t series, ord;
        int32_t day;
        uint64_t mag; /* saturates at UINT64_MAX; beh_record saturates lower */
        int on;
    } daysum;
    strmap_t idcache;
    struct {
        uint64_t beh, attr, meas;    /* updates queued or written (import stats) */
        uint64_t tags, tags_unknown; /* mapping "tags": assigned, not found (import stats) */
    } acc_stats;
};

/* ------------------------------------------- deferred event updates (acc.c) */

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
/* Queues a catalog note (kind CAT_*): v typed, raw its JSON if any. */
cp_status acc_catalog(cp_db_t *db, int kind, const char *name, size_t nlen, const ev_prop_t *v,
                      const json_t *raw, int indexed);
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

/* CP_EIO if the handle is in the failed state. */
cp_status db_check(cp_db_t *db, cp_error_t *err);

/* Exclusive lock + failed/readonly checks + a write transaction. On
 * success the caller must end with db_write_end or db_write_abort. */
cp_status db_write_begin(cp_db_t *db, store_txn_t **txn, cp_error_t *err);
/*
 * Re-evaluates dynamic crowds if data changed, persists the dirty index
 * and the model counters, commits, unlocks. On failure the handle enters
 * the failed state (memory was touched). `rc` != CP_OK means the
 * operation itself failed after touching memory: same treatment.
 */
cp_status db_write_end(cp_db_t *db, store_txn_t *txn, cp_error_t *err);
/* Aborts a write that touched nothing in memory; unlocks. */
void db_write_abort(cp_db_t *db, store_txn_t *txn);
/* Aborts a write that did touch memory: enters the failed state. The
 * original error in err is kept (suffixed); returns CP_EIO. */
cp_status db_write_fail(cp_db_t *db, store_txn_t *txn, cp_status rc, cp_error_t *err);

/* Persists the dirty state of a write (index, behaviour, dedup, catalog,
 * counters) and commits txn; the lock stays held. On failure the handle
 * enters the failed state (the lock stays held too). */
cp_status db_commit_locked(cp_db_t *db, store_txn_t *txn, cp_error_t *err);

/* Health after a write (cp_db_health): CP_ENOSPC sets db->nospc with the
 * message in err (may be NULL), CP_OK clears it, other statuses leave it. */
void db_note_write(cp_db_t *db, cp_status rc, const cp_error_t *err);
/* Room in data.mdb asked before an ordinary write transaction begins. */
#define DB_WRITE_ROOM (4ull << 20)

/* The handle's lock, taken with no intake transaction open (the intake
 * writer is asked to commit first: intake.c). Every lock of db->lock
 * outside the writer goes through these. Unlock with
 * pthread_rwlock_unlock. */
void db_lock_rd(cp_db_t *db);
void db_lock_wr(cp_db_t *db);
/* At open (before anything can fail) and at close (before intake_close:
 * commits and joins the writer; later requests fail). */
void intake_writer_init(cp_db_t *db);
void intake_writer_stop(cp_db_t *db);

/* Shared lock + failed check. */
cp_status db_read_begin(cp_db_t *db, cp_error_t *err);
/* The same for reads of memory only (the index, keys, taxonomy): they may
 * run while the intake writer holds an open transaction, so they must not
 * read LMDB (which lags memory until the writer commits). */
cp_status db_read_begin_mem(cp_db_t *db, cp_error_t *err);
void db_read_end(cp_db_t *db);

/* The resolver over this database's index (caller holds the lock). */
void db_resolver(cp_db_t *db, plan_resolver_t *r);

/* Plans and evaluates a parsed tree into a new bitmap (caller holds the
 * lock). Positions in errors are the tree's. */
cp_status db_eval_tree(cp_db_t *db, const expr_node_t *root, roaring_bitmap_t **out,
                       cp_error_t *err);

/* A tag by slug path, or else by display path (tax_find_display): one
 * match is the tag; none CP_ENOTFOUND; several CP_EINVAL naming them
 * (caller holds the lock). */
cp_status db_tag_resolve(cp_db_t *db, const char *path, uint32_t *id, cp_error_t *err);

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

/* Re-evaluates every dynamic crowd in dependency order, then brings every
 * crowd record's size back to its members (write lock held). */
cp_status crowds_reeval_dynamic(cp_db_t *db, store_txn_t *txn, cp_error_t *err);
/* At open, after the index: an empty bitmap for each crowd without chunks
 * on disk (an empty crowd has none), and each size from its members. */
cp_status crowds_load_members(cp_db_t *db, cp_error_t *err);
/* Evaluates a crowd's stored expression into a new bitmap (lock held). */
cp_status crowds_eval_one(cp_db_t *db, const crowd_rec_t *c, roaring_bitmap_t **out,
                          cp_error_t *err);
/* crowd_keep.c: notes that a crowd was used now (any lock held; written by
 * the next tick), and adds its schedule/expiry fields to its JSON view
 * (non-zero on ENOMEM). */
void crowds_mark_used(const crowd_rec_t *c, int64_t now_ms);
int crowds_obj_keep(json_t *o, const crowd_rec_t *c);

/* Parses an expression (text / JSON tree form) with the public limits. */
cp_status db_parse_text(const char *expr, expr_t **out, cp_error_t *err);
cp_status db_parse_json(const char *json, size_t len, expr_t **out, cp_error_t *err);

/* Wraps a bitmap as a result; ownership of bm passes (freed on failure). */
cp_status result_wrap(roaring_bitmap_t *bm, cp_result_t **out);

/* JSON helpers: appends a JSON string literal (escaped) to a buffer. */
cp_status json_buf_str(buf_t *b, const char *s, size_t len);
/* Serialises j (compact) into a malloc'ed string; CP_ENOMEM. */
cp_status db_json_out(json_t *j, char **out, cp_error_t *err);

/* ---------------------------------------------------------- intake */

/* At open, after the index: behaviour, config, dedup, catalog, identity
 * config; then (read-write) the WAL with recovery. */
cp_status intake_open(cp_db_t *db, store_txn_t *rtxn, cp_error_t *err);
cp_status intake_recover(cp_db_t *db, cp_error_t *err);
/* At close: final checkpoint, stops the checkpointer, closes the WAL. */
void intake_close(cp_db_t *db);
void intake_free(cp_db_t *db);
/* Writes the intake state into a write txn (from db_commit_locked). */
cp_status intake_persist(cp_db_t *db, store_txn_t *txn, cp_error_t *err);
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
/* Takes user ord out of the index (every tag, attribute and crowd) and
 * removes from the dictionaries the string/enum/bool values no other user
 * holds (ingest.c; write lock held, txn open). */
cp_status user_index_drop(cp_db_t *db, store_txn_t *txn, uint32_t ord, cp_error_t *err);
/* Deletes every trace of the users `ords` (write lock held, txn open). */
cp_status intake_user_purge(cp_db_t *db, store_txn_t *txn, const uint32_t *ords, size_t n,
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
/* A batch of events prepared whole before any is applied (events.c):
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

/* Plans/evaluates with did() windows ending on as_of_day (0 = today). */
cp_status db_eval_tree_as_of(cp_db_t *db, const expr_node_t *root, int32_t as_of_day,
                             roaring_bitmap_t **out, cp_error_t *err);
/* Adds the pending day sum (db->daysum) to the behaviour index; acc_flush
 * calls it. CP_ENOMEM. */
cp_status db_daysum_flush(cp_db_t *db);
/* The as-of day of an API "as_of" ("2011-06-30" or an ISO 8601 time, UTC)
 * as the planner takes it: 0 for NULL or "" (today), INT32_MIN for
 * 1970-01-01. CP_EINVAL naming the text otherwise. */
cp_status db_as_of_day(const char *as_of, int32_t *day, cp_error_t *err);

#endif /* CP_ENGINE_H */
