/*
 * engine.h — what the layers above the engine (analytics, the CLI's
 * benchmark and tools, tests) use of a cp_db_t beyond the public API: the
 * handle's fields, the lock and write protocol, evaluation of parsed
 * trees, and JSON output. The engine's own files include engine_int.h.
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

/* Intake settings (config.c; meta "intake_config"). */
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
    /* ---- event intake (apply.c, commit.c, writer.c) ---- */
    beh_t *beh;         /* behaviour index */
    meas_t *meas;       /* event measures per user (index/measure.h; RFM) */
    ident_config_t idc; /* identifier normalisation and hashing */
    intake_cfg_t cfg;
    dedup_t *dedup;
    wal_t *wal;              /* NULL when read-only */
    atomic_int pending;      /* events committed since the last checkpoint */
    atomic_int crowds_stale; /* dynamic crowds not re-evaluated since events (read unlocked by
                                db_flush) */
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
    /* the checkpointer thread (checkpoint.c) */
    struct {
        pthread_t thread;
        int started;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        int stop; /* under mu */
    } ckpt;
    /* the intake writer (writer.c): event requests queue under iw.mu */
    struct {
        pthread_mutex_t mu;
        pthread_cond_t closed_cv;       /* open went 0 (requests have their own) */
        pthread_cond_t cv;              /* work for the writer */
        struct intake_req *head, *tail; /* waiting, in arrival order */
        pthread_t thread;
        int started, stop;        /* under mu */
        store_txn_t *txn;         /* the writer's open transaction */
        atomic_int open;          /* txn != NULL (changed under the write lock) */
        atomic_int want;          /* threads waiting for it to commit */
        int64_t since_ms;         /* when txn began */
        uint64_t records, events; /* applied into txn */
        uint64_t room;            /* bytes of data.mdb asked for txn */
    } iw;
    /* The lock's side of the hand-off to the intake writer, set at open
     * (intake_writer_init) so lock.c does not call writer.c: wait, with
     * the lock not held, until the writer has no transaction open,
     * keeping iw.want raised (*wanting) until the caller holds the lock;
     * then writer_unwant lowers it. */
    void (*writer_wait)(cp_db_t *db, int *wanting);
    void (*writer_unwant)(cp_db_t *db);
    atomic_int iters; /* open cp_iter (they hold LMDB read txns) */
    /* health (cp_db_health): set by the write paths, read unlocked */
    atomic_int nospc;                  /* last write failed CP_ENOSPC; cleared by a
                                          write that succeeds */
    char nospc_msg[256];               /* its message (written before nospc is set) */
    atomic_int_least64_t last_ckpt_ms; /* wall clock of the last checkpoint, 0 = none */
    /* compaction after deletions (compact.c) */
    atomic_uint_least64_t compact_pending; /* deletions not yet compacted out of data.mdb */
    atomic_uint_least64_t compactions;     /* compactions done since open */
    atomic_uint_least64_t del_gen;         /* bumped by each committed deletion */
    struct {
        pthread_t thread;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        int started, stop, paused; /* under mu */
    } cmp;
    /* deferred event updates and the identity cache (deferred.c) */
    struct apply_acc *acc;
    _Atomic(struct feed *) feed; /* change feed (feed.c); NULL until a subscription */
    /* did() sum(): the day sum last applied and not yet in the behaviour
     * index (apply.c apply_day_sums); acc_flush adds it, so a run of one
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

/* ------------------------------------------------ lock and writes (lock.c) */

/* Shared lock + failed check; end with db_read_end. */
cp_status db_read_begin(cp_db_t *db, cp_error_t *err);
void db_read_end(cp_db_t *db);

/* Exclusive lock + failed/readonly checks + a write transaction. On
 * success the caller must end with db_write_end or db_write_abort. */
cp_status db_write_begin(cp_db_t *db, store_txn_t **txn, cp_error_t *err);
/*
 * Re-evaluates dynamic crowds if data changed, persists the dirty index
 * and the model counters, commits, unlocks. On failure the handle enters
 * the failed state (memory was touched).
 */
cp_status db_write_end(cp_db_t *db, store_txn_t *txn, cp_error_t *err);
/* Aborts a write that touched nothing in memory; unlocks. */
void db_write_abort(cp_db_t *db, store_txn_t *txn);
/* Aborts a write that did touch memory: enters the failed state. The
 * original error in err is kept (suffixed); returns CP_EIO. */
cp_status db_write_fail(cp_db_t *db, store_txn_t *txn, cp_status rc, cp_error_t *err);

/* The handle's lock, taken with no intake transaction open (the intake
 * writer is asked to commit first). Every lock of db->lock outside the
 * writer goes through these. Unlock with pthread_rwlock_unlock. */
void db_lock_rd(cp_db_t *db);
void db_lock_wr(cp_db_t *db);

/* ------------------------------------------------------ evaluation (eval.c) */

/* Parses an expression (text form) with the public limits. */
cp_status db_parse_text(const char *expr, expr_t **out, cp_error_t *err);
/* Plans and evaluates a parsed tree into a new bitmap (caller holds the
 * lock). Positions in errors are the tree's. */
cp_status db_eval_tree(cp_db_t *db, const expr_node_t *root, roaring_bitmap_t **out,
                       cp_error_t *err);
/* Plans/evaluates with did() windows ending on as_of_day (0 = today). */
cp_status db_eval_tree_as_of(cp_db_t *db, const expr_node_t *root, int32_t as_of_day,
                             roaring_bitmap_t **out, cp_error_t *err);
/* The as-of day of an API "as_of" ("2011-06-30" or an ISO 8601 time, UTC)
 * as the planner takes it: 0 for NULL or "" (today), INT32_MIN for
 * 1970-01-01. CP_EINVAL naming the text otherwise. */
cp_status db_as_of_day(const char *as_of, int32_t *day, cp_error_t *err);
/* A tag by slug path, or else by display path (tax_find_display): one
 * match is the tag; none CP_ENOTFOUND; several CP_EINVAL naming them
 * (caller holds the lock). */
cp_status db_tag_resolve(cp_db_t *db, const char *path, uint32_t *id, cp_error_t *err);

/* ---------------------------------------------------------- tags (tags.c) */

/*
 * Creates `path` and its missing parents in the taxonomy, the index and
 * txn (write lock held). Checked whole before anything changes: the path,
 * the name and description, and the tag limit (CP_ELIMIT). A tag created
 * last gets `name` and `description` (NULL: its slug, none); a last tag
 * that exists keeps its description and gets `name` only while its name
 * is still its slug (a name a user chose stays). *id gets the last tag;
 * *touched is set once memory changed (a failure after that must fail the
 * write: db_write_fail).
 */
cp_status db_ensure_tag(cp_db_t *db, store_txn_t *txn, const char *path, const char *name,
                        const char *description, uint32_t *id, int *touched, cp_error_t *err);

/* -------------------------------------------------------------- JSON (json.c) */

/* Appends a JSON string literal (escaped) to a buffer. CP_ENOMEM. */
/* Serialises j (compact) into a malloc'ed string the caller frees; takes
 * j's reference (NULL, from a failed json_pack, is CP_ENOMEM). */
cp_status db_json_out(json_t *j, char **out, cp_error_t *err);

#endif /* CP_ENGINE_H */
