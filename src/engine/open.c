/*
 * open.c — opening and closing a database: the store, the model, the
 * index, the intake state and the WAL with recovery; statistics and
 * health.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "engine/engine_int.h"
#include "engine/feed.h"
#include "index/member_list.h"
#include "model/codec.h"

/* ---------------------------------------------------------------- open */

/* At open, after the index: behaviour, config, dedup, catalog, identity
 * config (recovery comes later: intake_recover). */
static cp_status intake_open(cp_db_t *db, store_txn_t *rtxn, cp_error_t *err)
{
    cp_status rc;
    pthread_mutex_init(&db->ckpt.mu, NULL);
    pthread_cond_init(&db->ckpt.cv, NULL);
    pthread_mutex_init(&db->iw.mu, NULL);
    pthread_cond_init(&db->iw.closed_cv, NULL);
    cfg_defaults(&db->cfg);
    ident_config_init(&db->idc);
    const void *v;
    size_t vl;
    rc = store_get(rtxn, STORE_META, "intake_config", 13, &v, &vl, err);
    if (rc == CP_OK) {
        json_error_t je;
        json_t *j = json_loadb_checked(v, vl, 0, &je);
        if (j == NULL && json_is_oom(&je))
            return CP_ERR(err, CP_ENOMEM, "out of memory reading intake_config");
        if (j == NULL)
            return CP_ERR(err, CP_EIO, "data directory %s: corrupt intake_config",
                          store_dir(db->st));
        rc = cfg_apply_json(j, &db->cfg, &db->idc, err);
        json_decref(j);
        if (rc)
            return rc;
    } else if (rc != CP_ENOTFOUND) {
        return rc;
    }
    rc = ident_config_bind(rtxn, &db->idc, 0, err);
    if (rc && rc != CP_ENOTFOUND)
        return rc;
    if ((rc = beh_create(&db->beh)) || (rc = acc_init(db)))
        return CP_ERR(err, rc, "out of memory");
    if ((rc = beh_load(db->beh, rtxn, STORE_INTAKE, err)))
        return rc;
    if ((rc = meas_create(&db->meas)) ||
        (rc = meas_load(db->meas, rtxn, STORE_INTAKE, err))) /* event measures (RFM) */
        return rc == CP_ENOMEM ? CP_ERR(err, rc, "out of memory") : rc;
    if (dedup_create(db->cfg.dedup_window_ms, (size_t)db->cfg.dedup_max, &db->dedup))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    if ((rc = dedup_load(db->dedup, rtxn, STORE_INTAKE, time_now_ms(), err)))
        return rc;
    rc = store_get(rtxn, STORE_INTAKE, "catalog", 7, &v, &vl, err);
    if (rc == CP_OK) {
        json_error_t je;
        db->catalog = json_loadb_checked(v, vl, 0, &je);
        if (db->catalog == NULL && json_is_oom(&je))
            return CP_ERR(err, CP_ENOMEM, "out of memory reading the event catalog");
        if (!json_is_object(db->catalog))
            return CP_ERR(err, CP_EIO, "data directory %s: corrupt event catalog",
                          store_dir(db->st));
    } else if (rc != CP_ENOTFOUND) {
        return rc;
    } else {
        db->catalog = json_pack("{s:{},s:{},s:{}}", "traits", "properties", "events");
        if (db->catalog == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    uint64_t lsn = 0;
    rc = store_meta_get_u64(rtxn, "wal_lsn", &lsn, err);
    if (rc && rc != CP_ENOTFOUND)
        return rc;
    db->ckpt_lsn = db->applied_lsn = lsn;
    group_set_init(&db->groups);
    if ((rc = group_set_load(&db->groups, rtxn, err)))
        return rc;
    const schema_attr_t *a = schema_find(&db->sch, "first_seen", 10);
    db->attr_first_seen = a && a->type == CP_ATTR_TIMESTAMP ? a->id : 0;
    a = schema_find(&db->sch, "last_seen", 9);
    db->attr_last_seen = a && a->type == CP_ATTR_TIMESTAMP ? a->id : 0;
    return CP_OK;
}

/* At close, last: frees what intake_open loaded. */
static void intake_free(cp_db_t *db)
{
    acc_free(db);
    beh_free(db->beh);
    db->beh = NULL;
    meas_free(db->meas);
    db->meas = NULL;
    dedup_free(db->dedup);
    db->dedup = NULL;
    json_decref(db->catalog);
    db->catalog = NULL;
    group_set_free(&db->groups);
    cfg_clear(&db->cfg);
}

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

/* At open, read-write only: binds the PII salt, opens the WAL and replays
 * what data.mdb lacks, then starts the checkpointer. */
static cp_status intake_recover(cp_db_t *db, cp_error_t *err)
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
    if (pthread_create(&db->ckpt.thread, NULL, ckpt_main, db) != 0)
        return CP_ERR(err, CP_ENOMEM, "cannot start the checkpoint thread");
    db->ckpt.started = 1;
    return CP_OK;
}

/* At close: stops the checkpointer, final checkpoint, closes the WAL. */
static void intake_close(cp_db_t *db)
{
    if (db->ckpt.started) {
        pthread_mutex_lock(&db->ckpt.mu);
        db->ckpt.stop = 1;
        pthread_cond_signal(&db->ckpt.cv);
        pthread_mutex_unlock(&db->ckpt.mu);
        pthread_join(db->ckpt.thread, NULL);
        db->ckpt.started = 0;
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

uint32_t cp_format_version(void)
{
    return CP_FORMAT_VERSION;
}

/* ------------------------------------------------------------------ open */
cp_status cp_db_open(const char *dir, const cp_open_options_t *opts, cp_db_t **out, cp_error_t *err)
{
    cp_status rc = CP_OK;
    cp_db_t *db = NULL;
    store_txn_t *txn = NULL;
    int lock_init = 0;
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_db_open: out is NULL");
    *out = NULL;
    /* Before anything is parsed or printed: jansson's allocations reported
     * to the checked parse and print (util.h), so that running out of
     * memory can never store or return JSON with a key missing. */
    json_guard_install();
    cp_open_options_t o = {0};
    if (opts && (rc = sized_in(&o, sizeof o, opts, CP_SIZE_THROUGH(cp_open_options_t, threads),
                               "cp_open_options_t", err)))
        return rc;
    db = calloc(1, sizeof *db);
    if (db == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory opening %s", dir ? dir : "(null)");
    if (tax_init(&db->tax)) {
        free(db);
        return CP_ERR(err, CP_ENOMEM, "out of memory opening %s", dir ? dir : "(null)");
    }
    schema_init(&db->sch);
    crowd_set_init(&db->crowds);
    apikey_set_init(&db->keys);
    if (pthread_rwlock_init(&db->lock, NULL) != 0) {
        rc = CP_ERR(err, CP_ENOMEM, "cannot create a lock");
        goto out;
    }
    lock_init = 1;
    intake_writer_init(db);
    compact_init(db);
    unsigned sflags = 0;
    if (o.flags & CP_OPEN_CREATE)
        sflags |= STORE_CREATE;
    if (o.flags & CP_OPEN_READONLY)
        sflags |= STORE_READONLY;
    db->readonly = (o.flags & CP_OPEN_READONLY) != 0;
    if ((rc = store_open(dir, sflags, o.map_size, CP_FORMAT_VERSION, &db->st, err)))
        goto out;
    if ((rc = store_txn_begin(db->st, 0, &txn, err)))
        goto out;
    if ((rc = tax_load(&db->tax, txn, err)) || (rc = schema_load(&db->sch, txn, err)) ||
        (rc = crowd_set_load(&db->crowds, txn, err)) || (rc = apikey_load(&db->keys, txn, err)))
        goto out;
    uint64_t next = 0;
    rc = store_meta_get_u64(txn, "next_ordinal", &next, err);
    if (rc == CP_ENOTFOUND)
        rc = CP_OK;
    if (rc)
        goto out;
    if (next > (uint64_t)USERS_MAX_ORDINAL + 1) {
        rc = CP_ERR(err, CP_EIO, "corrupt next_ordinal %llu", (unsigned long long)next);
        goto out;
    }
    db->next_ordinal = (uint32_t)next;
    if ((rc = index_create(&db->ix))) {
        rc = CP_ERR(err, rc, "out of memory opening %s", dir);
        goto out;
    }
    if ((rc = index_load(db->ix, &db->tax, &db->sch, txn, err)))
        goto out;
    if ((rc = crowds_load_members(db, err)))
        goto out;
    if ((rc = intake_open(db, txn, err)))
        goto out;
    store_txn_abort(txn);
    txn = NULL;
    db->ev = eval_engine_create(o.threads);
    if (db->ev == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "cannot start the query threads");
        goto out;
    }
    if ((rc = intake_recover(db, err)) || (rc = compact_open(db, err)))
        goto out;
    ixchg_clear(&db->ix->chg); /* loading is no change for the first write */
    /* Each user's crowds and tags, for membership lookups. Out of memory
     * is no failure: lookups answer from the sets, and the next commit
     * tries again. */
    member_list_repair(db->ix);
    *out = db;
    db = NULL;
out:
    store_txn_abort(txn);
    if (db) {
        if (!lock_init)
            pthread_rwlock_init(&db->lock, NULL);
        cp_db_close(db, NULL);
    }
    return rc;
}

/* The handle's iterators hold read transactions and point at it: freeing
 * it under them would leave each a dangling handle (the use after free
 * this check exists for). The caller closes them and calls again. */
cp_status cp_db_close(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_OK;
    int iters = atomic_load(&db->iters);
    if (iters > 0)
        return CP_ERR(err, CP_ECONFLICT,
                      "cannot close the database %s: %d result iterator%s still open "
                      "(cp_iter_close them first); nothing was closed",
                      store_dir(db->st), iters, iters == 1 ? " is" : "s are");
    compact_stop(db);
    intake_writer_stop(db);
    intake_close(db);
    feed_close(db);
    eval_engine_free(db->ev);
    index_free(db->ix);
    apikey_set_free(&db->keys);
    crowd_set_free(&db->crowds);
    schema_free(&db->sch);
    tax_free(&db->tax);
    intake_free(db);
    store_close(db->st);
    compact_free(db);
    pthread_rwlock_destroy(&db->lock);
    free(db);
    return CP_OK;
}

cp_status cp_db_stats(cp_db_t *db, cp_db_stats_t *out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_db_stats: out is NULL");
    cp_status rc =
        sized_out_check(out, CP_SIZE_THROUGH(cp_db_stats_t, compactions), "cp_db_stats_t", err);
    if (rc || (rc = db_read_begin(db, err)))
        return rc;
    cp_db_stats_t s = {0};
    s.users = roaring_bitmap_get_cardinality(db->ix->universe);
    s.ordinals = db->next_ordinal;
    s.tags = db->tax.count;
    s.attributes = 0;
    for (uint32_t i = 1; i <= db->sch.n; i++)
        s.attributes += schema_get(&db->sch, i) != NULL;
    s.crowds = db->crowds.n;
    index_memory(db->ix, &s.bitmap_bytes, &s.column_bytes);
    s.disk_bytes = store_disk_bytes(db->st);
    s.queries = atomic_load(&db->queries);
    s.writes = atomic_load(&db->writes);
    s.compact_pending = atomic_load(&db->compact_pending);
    s.compactions = atomic_load(&db->compactions);
    db_read_end(db);
    sized_out(out, &s, sizeof s);
    return CP_OK;
}

/* Bytes of the WAL's segment files: apparent and allocated. */
static void wal_dir_bytes(const char *dir, uint64_t *size, uint64_t *alloc)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/wal", dir);
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat sb;
        if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &sb, 0) || !S_ISREG(sb.st_mode))
            continue;
        *size += (uint64_t)sb.st_size;
        *alloc += (uint64_t)sb.st_blocks * 512u;
    }
    closedir(d);
}

cp_status cp_db_health(cp_db_t *db, cp_health_t *out, cp_error_t *err)
{
    if (db == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "cp_db_health: no handle or out is NULL");
    cp_status rc =
        sized_out_check(out, CP_SIZE_THROUGH(cp_health_t, disk_used_bytes), "cp_health_t", err);
    if (rc)
        return rc;
    cp_health_t h = {0};
    const char *dir = store_dir(db->st);
    int failed = atomic_load(&db->failed);
    h.readable = !failed;
    h.writable = 0;
    if (failed) {
        snprintf(h.reason, sizeof h.reason, "failed");
        snprintf(h.detail, sizeof h.detail, "%s", db->failed_msg);
    } else if (db->readonly) {
        snprintf(h.reason, sizeof h.reason, "read_only");
        snprintf(h.detail, sizeof h.detail, "data directory %s is open read-only", dir);
    } else if (atomic_load(&db->nospc)) {
        snprintf(h.reason, sizeof h.reason, "storage_full");
        snprintf(h.detail, sizeof h.detail, "%s", db->nospc_msg);
    } else if (db->wal != NULL && wal_failed(db->wal)) {
        snprintf(h.reason, sizeof h.reason, "wal_error");
        snprintf(h.detail, sizeof h.detail,
                 "the write-ahead log in %s/wal failed; writes are refused until a restart", dir);
    } else {
        h.writable = 1;
    }
    uint64_t wsize = 0, walloc = 0;
    wal_dir_bytes(dir, &wsize, &walloc);
    h.wal_bytes = wsize;
    h.wal_records = db->wal ? wal_last_lsn(db->wal) - db->ckpt_lsn : 0;
    if (db->wal && wal_last_lsn(db->wal) < db->ckpt_lsn)
        h.wal_records = 0;
    /* Read-only beside a writer: what the writer logged and has not yet
     * checkpointed into LMDB, which this handle cannot see. */
    if (db->wal == NULL && db->readonly && wal_peek_count(dir, db->ckpt_lsn, &h.wal_records))
        h.wal_records = 0;
    int64_t last = atomic_load(&db->last_ckpt_ms);
    h.checkpoint_age_ms = last ? time_now_ms() - last : -1;
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0)
        h.disk_free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(path, &sb) == 0)
        h.disk_used_bytes = (uint64_t)sb.st_blocks * 512u;
    h.disk_used_bytes += walloc;
    sized_out(out, &h, sizeof h);
    return CP_OK;
}
