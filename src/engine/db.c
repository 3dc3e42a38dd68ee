/* db.c — opening and closing a database, the write/read protocol of
 * engine.h, statistics, and the plan resolver over the index. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "engine/engine.h"
#include "engine/feed.h"

uint32_t cp_format_version(void)
{
    return CP_FORMAT_VERSION;
}

cp_status db_check(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    if (atomic_load(&db->failed))
        return CP_ERR(err, CP_EIO, "%s", db->failed_msg);
    return CP_OK;
}

cp_status db_read_begin(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    db_lock_rd(db);
    cp_status rc = db_check(db, err);
    if (rc)
        pthread_rwlock_unlock(&db->lock);
    return rc;
}

cp_status db_read_begin_mem(cp_db_t *db, cp_error_t *err)
{
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    /* Memory is whole between the intake writer's groups: no commit needed. */
    pthread_rwlock_rdlock(&db->lock);
    cp_status rc = db_check(db, err);
    if (rc)
        pthread_rwlock_unlock(&db->lock);
    return rc;
}

void db_read_end(cp_db_t *db)
{
    pthread_rwlock_unlock(&db->lock);
}

cp_status db_write_begin(cp_db_t *db, store_txn_t **txn, cp_error_t *err)
{
    *txn = NULL;
    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "no database handle");
    if (db->readonly)
        return CP_ERR(err, CP_EREADONLY, "data directory %s is open read-only", store_dir(db->st));
    feed_wait_room(db);
    db_lock_wr(db);
    cp_status rc = db_check(db, err);
    /* A full disk refuses the write here, before memory changes. */
    if (rc == CP_OK && (rc = store_ensure_room(db->st, DB_WRITE_ROOM, err)) == CP_ENOSPC)
        db_note_write(db, rc, err);
    if (rc == CP_OK)
        rc = store_txn_begin(db->st, 1, txn, err);
    if (rc) {
        pthread_rwlock_unlock(&db->lock);
        return rc;
    }
    db->data_changed = 0;
    return CP_OK;
}

void db_note_write(cp_db_t *db, cp_status rc, const cp_error_t *err)
{
    if (rc == CP_OK) {
        if (atomic_load(&db->nospc))
            atomic_store(&db->nospc, 0);
    } else if (rc == CP_ENOSPC) {
        const char *m = err && err->message[0] ? err->message : "the data directory's disk is full";
        size_t n = strnlen(m, sizeof db->nospc_msg - 1);
        memcpy(db->nospc_msg, m, n);
        db->nospc_msg[n] = '\0';
        atomic_store(&db->nospc, 1);
    }
}

void db_write_abort(cp_db_t *db, store_txn_t *txn)
{
    store_txn_abort(txn);
    db->data_changed = 0;
    feed_discard(db);
    pthread_rwlock_unlock(&db->lock);
}

cp_status db_write_fail(cp_db_t *db, store_txn_t *txn, cp_status rc, cp_error_t *err)
{
    store_txn_abort(txn);
    acc_discard(db);
    idcache_clear(db);
    snprintf(db->failed_msg, sizeof db->failed_msg,
             "a write to data directory %s failed after changing memory (%s); reopen the data "
             "directory",
             store_dir(db->st), cp_strerror(rc));
    atomic_store(&db->failed, 1);
    db->data_changed = 0;
    feed_discard(db);
    pthread_rwlock_unlock(&db->lock);
    if (err && err->message[0])
        error_prefix(err, "%s; reopen the data directory: ", cp_strerror(rc));
    else
        CP_ERR(err, CP_EIO, "%s", db->failed_msg);
    if (err)
        err->code = CP_EIO;
    return CP_EIO;
}

cp_status db_commit_locked(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    cp_status rc = CP_OK;
    if ((db->data_changed && (rc = crowds_reeval_dynamic(db, txn, err))) ||
        (rc = index_persist(db->ix, txn, err)) || (rc = intake_persist(db, txn, err)) ||
        (rc = store_meta_put_u64(txn, "next_ordinal", db->next_ordinal, err)) ||
        (rc = store_meta_put_u64(txn, "next_tag_id", db->tax.next_id, err)) ||
        (rc = store_meta_put_u64(txn, "next_crowd_id", db->crowds.next_id, err))) {
        store_txn_abort(txn);
        snprintf(db->failed_msg, sizeof db->failed_msg,
                 "a write to data directory %s failed after changing memory (%s); reopen the "
                 "data directory",
                 store_dir(db->st), cp_strerror(rc));
        atomic_store(&db->failed, 1);
        db->data_changed = 0;
        feed_discard(db);
        if (err && err->message[0])
            error_prefix(err, "%s; reopen the data directory: ", cp_strerror(rc));
        if (err)
            err->code = CP_EIO;
        return CP_EIO;
    }
    rc = store_txn_commit(txn, err);
    db->data_changed = 0;
    if (rc) {
        feed_discard(db);
        /* The transaction is gone already. */
        snprintf(db->failed_msg, sizeof db->failed_msg,
                 "a commit to data directory %s failed (%s); reopen the data directory",
                 store_dir(db->st), cp_strerror(rc));
        atomic_store(&db->failed, 1);
        if (err)
            err->code = CP_EIO;
        return CP_EIO;
    }
    feed_commit(db, atomic_fetch_add(&db->writes, 1) + 1);
    return CP_OK;
}

cp_status db_write_end(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    cp_status rc = db_commit_locked(db, txn, err);
    db_note_write(db, rc, err);
    pthread_rwlock_unlock(&db->lock);
    return rc;
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
    cp_open_options_t o = {0};
    if (opts)
        o = *opts;
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
    *out = db;
    db = NULL;
out:
    store_txn_abort(txn);
    if (db) {
        if (!lock_init)
            pthread_rwlock_init(&db->lock, NULL);
        cp_db_close(db);
    }
    return rc;
}

void cp_db_close(cp_db_t *db)
{
    if (db == NULL)
        return;
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
}

cp_status cp_db_stats(cp_db_t *db, cp_db_stats_t *out)
{
    if (out == NULL)
        return CP_EINVAL;
    memset(out, 0, sizeof *out);
    cp_status rc = db_read_begin(db, NULL);
    if (rc)
        return rc;
    out->users = roaring_bitmap_get_cardinality(db->ix->universe);
    out->ordinals = db->next_ordinal;
    out->tags = db->tax.count;
    out->attributes = 0;
    for (uint32_t i = 1; i <= db->sch.n; i++)
        out->attributes += schema_get(&db->sch, i) != NULL;
    out->crowds = db->crowds.n;
    index_memory(db->ix, &out->bitmap_bytes, &out->column_bytes);
    out->disk_bytes = store_disk_bytes(db->st);
    out->queries = atomic_load(&db->queries);
    out->writes = atomic_load(&db->writes);
    out->compact_pending = atomic_load(&db->compact_pending);
    out->compactions = atomic_load(&db->compactions);
    db_read_end(db);
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

cp_status cp_db_health(cp_db_t *db, cp_health_t *out)
{
    if (db == NULL || out == NULL)
        return CP_EINVAL;
    memset(out, 0, sizeof *out);
    const char *dir = store_dir(db->st);
    int failed = atomic_load(&db->failed);
    out->readable = !failed;
    out->writable = 0;
    if (failed) {
        snprintf(out->reason, sizeof out->reason, "failed");
        snprintf(out->detail, sizeof out->detail, "%s", db->failed_msg);
    } else if (db->readonly) {
        snprintf(out->reason, sizeof out->reason, "read_only");
        snprintf(out->detail, sizeof out->detail, "data directory %s is open read-only", dir);
    } else if (atomic_load(&db->nospc)) {
        snprintf(out->reason, sizeof out->reason, "storage_full");
        snprintf(out->detail, sizeof out->detail, "%s", db->nospc_msg);
    } else if (db->wal != NULL && wal_failed(db->wal)) {
        snprintf(out->reason, sizeof out->reason, "wal_error");
        snprintf(out->detail, sizeof out->detail,
                 "the write-ahead log in %s/wal failed; writes are refused until a restart", dir);
    } else {
        out->writable = 1;
    }
    uint64_t wsize = 0, walloc = 0;
    wal_dir_bytes(dir, &wsize, &walloc);
    out->wal_bytes = wsize;
    out->wal_records = db->wal ? wal_last_lsn(db->wal) - db->ckpt_lsn : 0;
    if (db->wal && wal_last_lsn(db->wal) < db->ckpt_lsn)
        out->wal_records = 0;
    /* Read-only beside a writer: what the writer logged and has not yet
     * checkpointed into LMDB, which this handle cannot see. */
    if (db->wal == NULL && db->readonly && wal_peek_count(dir, db->ckpt_lsn, &out->wal_records))
        out->wal_records = 0;
    int64_t last = atomic_load(&db->last_ckpt_ms);
    out->checkpoint_age_ms = last ? time_now_ms() - last : -1;
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0)
        out->disk_free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(path, &sb) == 0)
        out->disk_used_bytes = (uint64_t)sb.st_blocks * 512u;
    out->disk_used_bytes += walloc;
    return CP_OK;
}

/* -------------------------------------------------------------- resolver */

static cp_status r_tag(void *ctx, const char *path, const roaring_bitmap_t **out)
{
    cp_db_t *db = ctx;
    uint32_t id = 0;
    /* A slug path, else a display path naming exactly one tag (an
     * ambiguous one was reported by db_check_names). */
    if (db_tag_resolve(db, path, &id, NULL) != CP_OK)
        id = 0;
    const idx_tag_t *t = id ? index_tag(db->ix, id) : NULL;
    if (t == NULL)
        return CP_ENOTFOUND;
    *out = t->eff;
    return CP_OK;
}

static cp_status r_crowd(void *ctx, const char *name, const roaring_bitmap_t **out)
{
    cp_db_t *db = ctx;
    const crowd_rec_t *c = crowd_set_find(&db->crowds, name);
    const roaring_bitmap_t *bm = c ? index_crowd(db->ix, c->id) : NULL;
    if (bm == NULL)
        return CP_ENOTFOUND;
    crowds_mark_used(c, time_now_ms()); /* expiry: evaluated counts as used */
    *out = bm;
    return CP_OK;
}

static cp_status r_attr(void *ctx, const char *name, plan_attr_t *out)
{
    cp_db_t *db = ctx;
    const schema_attr_t *a = NULL;
    if (name == NULL) {
        /* near() without an attribute: the first geo attribute defined. */
        for (uint32_t i = 1; i <= db->sch.n && a == NULL; i++) {
            const schema_attr_t *x = schema_get(&db->sch, i);
            if (x && x->type == CP_ATTR_GEO)
                a = x;
        }
    } else {
        a = schema_find(&db->sch, name, strlen(name));
    }
    const idx_attr_t *ia = a ? index_attr(db->ix, a->id) : NULL;
    if (ia == NULL)
        return CP_ENOTFOUND;
    memset(out, 0, sizeof *out);
    out->type = a->type;
    out->handle = (int32_t)a->id;
    out->exists = index_attr_exists(db->ix, a->id);
    out->bsi = ia->bsi;
    out->geo = ia->geo;
    return CP_OK;
}

static const roaring_bitmap_t *r_value(void *ctx, int32_t handle, const char *v, size_t len)
{
    cp_db_t *db = ctx;
    const schema_attr_t *a = schema_get(&db->sch, (uint32_t)handle);
    if (a == NULL)
        return NULL;
    uint32_t vid = schema_value_find(a, v, len);
    return vid ? index_value_bitmap(db->ix, a->id, vid) : NULL;
}

/* STARTS WITH: a scan of the attribute's value dictionary (a memcmp per
 * value: ~16M values of the largest STRING dictionary take tens of ms). */
static cp_status r_prefix(void *ctx, int32_t handle, const char *prefix, size_t len,
                          roaring_bitmap_t *out)
{
    cp_db_t *db = ctx;
    const schema_attr_t *a = schema_get(&db->sch, (uint32_t)handle);
    if (a == NULL)
        return CP_OK;
    for (uint32_t vid = 1; vid <= a->nvalues; vid++) {
        if (a->value_lens[vid] < len || memcmp(a->values[vid], prefix, len) != 0)
            continue;
        const roaring_bitmap_t *bm = index_value_bitmap(db->ix, a->id, vid);
        if (bm != NULL)
            roaring_bitmap_or_inplace(out, bm);
    }
    return CP_OK;
}

static cp_status r_did(void *ctx, const char *event, const beh_prop_t *filters, size_t n,
                       const beh_t **beh, uint32_t *series, size_t *bad)
{
    cp_db_t *db = ctx;
    for (size_t i = 0; i < n; i++) {
        int ok = 0;
        for (size_t k = 0; k < db->cfg.nindexed && !ok; k++)
            ok = strlen(db->cfg.indexed[k]) == filters[i].nlen &&
                 memcmp(db->cfg.indexed[k], filters[i].name, filters[i].nlen) == 0;
        if (!ok) {
            *bad = i;
            return CP_EINVAL;
        }
    }
    *beh = db->beh;
    return beh_resolve(db->beh, event, strlen(event), filters, n, series);
}

/* 1 if group g's trait `trait` matches (plan.h: r_group's contract). */
static int group_matches(const group_rec_t *g, const char *trait, int negate,
                         const char *const *values, const size_t *lens, size_t n, int *has)
{
    const json_t *v = json_object_get(g->traits, trait);
    char buf[64];
    const char *s;
    size_t len;
    *has = v != NULL && !json_is_null(v);
    if (!*has || !group_trait_text(v, buf, sizeof buf, &s, &len))
        return 0;
    int eq = 0;
    for (size_t i = 0; i < n && !eq; i++)
        eq = lens[i] == len && memcmp(values[i], s, len) == 0;
    return negate ? !eq : eq;
}

/* Read lock held: the members of a group, or of the groups a trait
 * selects, as a new bitmap (a scan of the groups: there are few next to
 * users). */
static cp_status r_group(void *ctx, const char *name, const char *trait, int negate,
                         const char *const *values, const size_t *lens, size_t n,
                         roaring_bitmap_t **out)
{
    cp_db_t *db = ctx;
    *out = NULL;
    if (trait == NULL) {
        const group_rec_t *g = group_find(&db->groups, name, strlen(name));
        if (g == NULL)
            return CP_ENOTFOUND;
        *out = roaring_bitmap_copy(g->members);
        return *out ? CP_OK : CP_ENOMEM;
    }
    roaring_bitmap_t *bm = roaring_bitmap_create();
    if (bm == NULL)
        return CP_ENOMEM;
    int any = 0;
    for (size_t i = 0; i < db->groups.n; i++) {
        const group_rec_t *g = &db->groups.items[i];
        int has;
        if (group_matches(g, trait, negate, values, lens, n, &has))
            roaring_bitmap_or_inplace(bm, g->members);
        any |= has;
    }
    if (!any) {
        roaring_bitmap_free(bm);
        return CP_ENOTFOUND;
    }
    *out = bm;
    return CP_OK;
}

/* ---------------------------------------------------- names and values */

#define SUGGEST_MAX_CP 64        /* longer texts are not compared */
#define SUGGEST_MAX_SCAN 200000u /* dictionary entries compared per value */

/* Code points of s (ASCII lower-cased) into cp[]; -1 when longer than
 * SUGGEST_MAX_CP or not UTF-8. Chinese compares character by character,
 * not byte by byte, so 深圳 and 深圳市 are one edit apart. */
static int code_points(const char *s, size_t len, uint32_t *cp)
{
    int n = 0;
    for (size_t i = 0; i < len; n++) {
        if (n == SUGGEST_MAX_CP)
            return -1;
        unsigned char c = (unsigned char)s[i];
        uint32_t u;
        size_t w = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        if (i + w > len)
            return -1;
        u = w == 1 ? c : w == 2 ? c & 0x1f : w == 3 ? c & 0x0f : c & 0x07;
        for (size_t k = 1; k < w; k++)
            u = u << 6 | ((unsigned char)s[i + k] & 0x3f);
        cp[n] = u >= 'A' && u <= 'Z' ? u + 32 : u;
        i += w;
    }
    return n;
}

/* Levenshtein distance of two code point strings. */
static int edit_distance(const uint32_t *a, int na, const uint32_t *b, int nb)
{
    int row[SUGGEST_MAX_CP + 1];
    for (int j = 0; j <= nb; j++)
        row[j] = j;
    for (int i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= nb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

typedef struct suggest {
    const char *text[3];
    int dist[3];
    int n;
} suggest_t;

static void suggest_offer(suggest_t *sg, const uint32_t *v, int nv, const char *cand, size_t cl)
{
    uint32_t c[SUGGEST_MAX_CP];
    int nc = code_points(cand, cl, c);
    if (nc < 0)
        return;
    int longest = nv > nc ? nv : nc;
    /* The length difference bounds the distance from below: most of a
     * large dictionary is skipped without the quadratic comparison. */
    if (abs(nv - nc) > 1 + longest / 4)
        return;
    int d = edit_distance(v, nv, c, nc);
    if (d > 1 + longest / 4 || d >= longest)
        return;
    for (int i = 0; i < sg->n; i++)
        if (strcmp(sg->text[i], cand) == 0)
            return;
    int at = sg->n < 3 ? sg->n++ : 3;
    while (at > 0 && sg->dist[at - 1] > d) {
        if (at < 3) {
            sg->text[at] = sg->text[at - 1];
            sg->dist[at] = sg->dist[at - 1];
        }
        at--;
    }
    if (at < 3) {
        sg->text[at] = cand;
        sg->dist[at] = d;
    }
}

void db_value_suggest(const schema_attr_t *a, const char *v, size_t len, char *buf, size_t cap)
{
    suggest_t sg = {0};
    uint32_t cv[SUGGEST_MAX_CP];
    int nv = code_points(v, len, cv);
    buf[0] = '\0';
    if (nv <= 0)
        return;
    uint32_t scan = a->nvalues < SUGGEST_MAX_SCAN ? a->nvalues : SUGGEST_MAX_SCAN;
    for (uint32_t i = 1; i <= scan; i++)
        if (a->values[i] != NULL && schema_alias_find(a, a->values[i], a->value_lens[i]) == 0)
            suggest_offer(&sg, cv, nv, a->values[i], a->value_lens[i]);
    for (uint32_t i = 0; i < a->nalias && i < SUGGEST_MAX_SCAN; i++)
        suggest_offer(&sg, cv, nv, a->alias_text[i], strlen(a->alias_text[i]));
    if (sg.n == 0)
        return;
    size_t off = (size_t)snprintf(buf, cap, "; did you mean ");
    for (int i = 0; i < sg.n && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s\"%.60s\"",
                                i == 0          ? ""
                                : i == sg.n - 1 ? " or "
                                                : ", ",
                                sg.text[i]);
    if (off < cap)
        snprintf(buf + off, cap - off, "?");
}

/* The "never seen" check of one ENUM/STRING value in node n. */
static cp_status check_value(cp_db_t *db, const expr_node_t *n, const schema_attr_t *a,
                             const expr_value_t *v, cp_error_t *err)
{
    if (v->kind != VAL_STRING || v->s == NULL || schema_value_find(a, v->s, v->slen) != 0)
        return CP_OK; /* wrong types are the planner's to report */
    char hint[256];
    db_value_suggest(a, v->s, v->slen, hint, sizeof hint);
    return CP_ERR_AT(err, CP_ENOTFOUND, n->line, n->column,
                     "attribute \"%s\" has no value \"%.*s\"%s%s", a->name,
                     (int)(v->slen > 200 ? 200 : v->slen), v->s, hint,
                     hint[0] ? "" : " (crowdpack attrs show lists its values)");
}

cp_status db_check_names(cp_db_t *db, const expr_node_t *n, cp_error_t *err)
{
    cp_status rc = CP_OK;
    if (n == NULL)
        return CP_OK;
    switch (n->kind) {
    case EXPR_AND:
    case EXPR_OR:
    case EXPR_NOT:
        for (size_t i = 0; i < n->nargs && rc == CP_OK; i++)
            rc = db_check_names(db, n->args[i], err);
        return rc;
    case EXPR_TAG: {
        uint32_t id = 0;
        if (n->name == NULL || tax_find(&db->tax, n->name, strlen(n->name)))
            return CP_OK;
        rc = db_tag_resolve(db, n->name, &id, err);
        if (rc == CP_ENOTFOUND)
            return CP_OK; /* the planner says "unknown tag" at the same place */
        if (rc && err) {
            err->line = n->line;
            err->column = n->column;
        }
        return rc;
    }
    case EXPR_CMP:
    case EXPR_IN: {
        /* `=` and IN: a value never seen is a typo or another spelling,
         * never an intended empty set. `!=` is left alone: "everyone with
         * a city but X" is meaningful even before X is seen. */
        if (n->name == NULL || (n->kind == EXPR_CMP && n->op != OP_EQ))
            return CP_OK;
        const schema_attr_t *a = schema_find(&db->sch, n->name, strlen(n->name));
        if (a == NULL || (a->type != CP_ATTR_ENUM && a->type != CP_ATTR_STRING))
            return CP_OK;
        for (size_t i = 0; i < n->nvalues && rc == CP_OK; i++)
            rc = check_value(db, n, a, &n->values[i], err);
        return rc;
    }
    default:
        return CP_OK;
    }
}

static cp_status r_did_sum(void *ctx, const char *event, const char *prop, const beh_t **beh,
                           uint32_t *pos, uint32_t *neg, int *scale)
{
    cp_db_t *db = ctx;
    uint32_t bare;
    size_t elen = strlen(event), plen = strlen(prop);
    cp_status rc = beh_resolve(db->beh, event, elen, NULL, 0, &bare);
    if (rc)
        return rc;
    if (!meas_sum_scale(db->meas, event, elen, prop, plen, scale))
        return CP_EINVAL;
    uint32_t *ids[2] = {pos, neg};
    for (int k = 0; k < 2; k++) {
        uint8_t key[BEH_KEY_MAX];
        size_t klen;
        *ids[k] = BEH_NO_SERIES;
        if (beh_sum_series_key(event, elen, prop, plen, k, key, &klen) == CP_OK &&
            !beh_series_lookup(db->beh, key, klen, ids[k]))
            *ids[k] = BEH_NO_SERIES;
    }
    *beh = db->beh;
    return CP_OK;
}

void db_resolver(cp_db_t *db, plan_resolver_t *r)
{
    memset(r, 0, sizeof *r);
    r->ctx = db;
    r->universe = db->ix->universe;
    r->tag = r_tag;
    r->crowd = r_crowd;
    r->attr = r_attr;
    r->value = r_value;
    r->did = db->beh ? r_did : NULL;
    r->group = r_group;
    r->prefix = r_prefix;
    r->did_sum = db->beh && db->meas ? r_did_sum : NULL;
}

cp_status db_eval_tree(cp_db_t *db, const expr_node_t *root, roaring_bitmap_t **out,
                       cp_error_t *err)
{
    return db_eval_tree_as_of(db, root, 0, out, err);
}

cp_status db_eval_tree_as_of(cp_db_t *db, const expr_node_t *root, int32_t as_of_day,
                             roaring_bitmap_t **out, cp_error_t *err)
{
    *out = NULL;
    plan_resolver_t r;
    db_resolver(db, &r);
    r.as_of_day = as_of_day;
    plan_t *p = NULL;
    cp_status rc = plan_build(root, &r, &p, err);
    if (rc)
        return rc;
    roaring_bitmap_t *bm = roaring_bitmap_create();
    if (bm == NULL) {
        plan_free(p);
        return CP_ERR(err, CP_ENOMEM, "out of memory evaluating an expression");
    }
    rc = plan_eval(p, db->ev, bm);
    plan_free(p);
    if (rc) {
        index_bm_free(bm);
        return CP_ERR(err, rc, "evaluating an expression failed: %s", cp_strerror(rc));
    }
    atomic_fetch_add(&db->queries, 1);
    *out = bm;
    return CP_OK;
}

/* ------------------------------------------------------------------ JSON */

cp_status json_buf_str(buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    cp_status rc = buf_append(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; rc == CP_OK && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > start && (rc = buf_append(b, s + start, i - start)))
            break;
        char esc[8];
        size_t n = 2;
        esc[0] = '\\';
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        rc = buf_append(b, esc, n);
        start = i + 1;
    }
    if (rc == CP_OK && len > start)
        rc = buf_append(b, s + start, len - start);
    if (rc == CP_OK)
        rc = buf_append(b, "\"", 1);
    return rc;
}

cp_status db_json_out(json_t *j, char **out, cp_error_t *err)
{
    *out = NULL;
    if (j == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory building JSON");
    /* 15 significant digits: reports say 0.201672, not 0.20167199999999999
     * (jansson's default of 17 shows the binary rounding). */
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(j);
    if (s == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory building JSON");
    *out = s;
    return CP_OK;
}
