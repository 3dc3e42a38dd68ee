/*
 * import.c — bulk import of event files (`crowdpack import`): NDJSON
 * Segment events, CSV with a column mapping or a preset, plain or gzip.
 *
 * Streaming in constant memory: rows are parsed into a batch of events
 * (batch_lines at a time), applied under the write lock through the same
 * path as HTTP events, and committed in one LMDB transaction together with
 * a record of the content imported so far. Each batch commit is durable by
 * itself (LMDB fsync), so imports need no WAL record: they are checkpoints.
 *
 * Why content, not names: files grow (a daily export appended to), get
 * renamed, moved and gzipped. A range record ("impr/<hash>" in
 * STORE_INTAKE) names the XXH3-128 of the uncompressed bytes [0, len) of
 * what was imported, with the line count there. A new run looks for the
 * longest record whose bytes are a prefix of this file's uncompressed
 * stream and resumes after it: a renamed or gzipped copy matches whole
 * (nothing to do), a file that grew imports only its new rows, an
 * interrupted run continues. Records never expire, so a re-import months
 * later still counts nothing twice. Every run keeps the record of its end
 * (and of its start), so an older, shorter snapshot of a grown file is
 * recognised too; intermediate batch records are replaced as the run goes.
 * A record is found cheaply: it also holds the hash of the first
 * min(len, 64 KiB) bytes, compared against this file's head before any
 * full verification.
 *
 * Rows without a message id, with CP_IMPORT_DEDUP_ROWS, get one from
 * their content, not their place: "row:" + a hash of the mapping, the
 * row's cells (an NDJSON line's text) and the row's ordinal among
 * identical rows of the file (two identical purchase rows stay two events;
 * a resumed run first counts the rows before its start). Those ids go
 * through the messageId dedup window, so a file that repeats rows of
 * another import in another order (a re-sorted export, an overlapping
 * "last 7 days" dump) is deduplicated too while the window holds them.
 * Opt-in, because every such row takes a place in the window (whose bound,
 * dedup.max_entries, also protects HTTP retries: a large import would
 * push them out) and a key in LMDB: Online Retail's 407k rows took about
 * three times the CPU. The range records are what holds past the window, and
 * they need no id.
 *
 * A plain file whose last line has no line break may still be being
 * written: that line is held back (not imported, the position stays
 * before it) until it is complete, unless CP_IMPORT_FINAL says the file is
 * finished. A gzip stream ends where it ends: its last line is imported.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>
#include <zlib.h>

#include "engine/engine_int.h"
#include "engine/feed.h"
#include "ingest/csv.h"
#include "ingest/mapping.h"

#define FIRST_MIB (1u << 20)
#define HEAD_BYTES (64u * 1024) /* the anchor: a record's first bytes */
#define RANGE_PREFIX "impr/"
/* Row ordinals: distinct rows remembered per run (16 bytes a slot, half
 * full at most: 64 MiB at the cap). Past it a row's id takes its offset
 * instead: still unique, no longer found again in another file. */
#define ORD_MAX_SLOTS (1u << 22)

/* One range record: the uncompressed bytes [0, len) of an imported file. */
typedef struct range {
    uint64_t len, line;
    uint64_t anchor;    /* XXH3-64 of the first min(len, HEAD_BYTES) bytes */
    XXH128_hash_t hash; /* XXH3-128 of the first len bytes */
    int legacy;         /* an older "imp/" position record: no hash to check */
} range_t;

/* Identical-row counts of a run: content hash -> rows seen (open addressing). */
typedef struct ordslot {
    uint64_t key; /* 0 = empty */
    uint64_t count;
} ordslot_t;
typedef struct ordmap {
    ordslot_t *s;
    size_t cap, n;
    int full;
} ordmap_t;

/* data.mdb bytes reserved per event of a batch before it is applied: an
 * import writes ~200 bytes per event (Online Retail, synthetic NDJSON), plus
 * the copied pages of the commit. */
#define IMPORT_ROOM_PER_EVENT 256u

typedef struct importer {
    cp_db_t *db;
    cp_import_options_t o;
    cp_import_stats_t *st;
    cp_error_t *err;
    char key[40]; /* legacy "imp/<16 hex>" of this file (size + first MiB) */
    char src[96]; /* messageId prefix of CSV rows (replaced by row ids) */
    ingest_batch_t b;
    json_t **docs; /* NDJSON documents the batch borrows */
    size_t ndocs, capdocs;
    uint64_t *lines; /* line of each event of the batch */
    size_t n, cap;   /* events in the batch */
    int64_t now_ms;
    segment_opts_t so;
    /* content recognition */
    char *head; /* the first HEAD_BYTES uncompressed bytes (fewer if shorter) */
    size_t headlen;
    char name[64];      /* the file's base name, for the record */
    char start_key[40]; /* the record this run resumed from: kept */
    char prev_key[40];  /* this run's last intermediate record: replaced */
    XXH3_state_t *hs;   /* prefix hash state at the resume point (then NDJSON's) */
    XXH3_state_t *tmp;  /* scratch state for digests */
    uint64_t mapping_seed;
    ordmap_t ord;
    int row_ids;        /* rows without ids get content ids, deduplicated */
    uint64_t total_len; /* uncompressed size if known, else UINT64_MAX */
    int at_end;         /* the recognised prefix is the whole file */
} importer_t;

static cp_status file_id(const char *path, uint64_t size, char *key, size_t cap, cp_error_t *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return CP_ERR(err, errno == ENOENT ? CP_ENOTFOUND : CP_EIO, "cannot open %s: %s", path,
                      strerror(errno));
    char *buf = malloc(FIRST_MIB);
    if (buf == NULL) {
        fclose(f);
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    size_t got = fread(buf, 1, FIRST_MIB, f);
    fclose(f);
    uint64_t h = hash64(buf, got, size);
    free(buf);
    snprintf(key, cap, "imp/%016llx", (unsigned long long)h);
    return CP_OK;
}

static uint64_t anchor_of(const importer_t *im, uint64_t len)
{
    return XXH3_64bits(im->head, len < im->headlen ? (size_t)len : im->headlen);
}

static void range_key(const XXH128_hash_t *h, char *key, size_t cap)
{
    snprintf(key, cap, RANGE_PREFIX "%016llx%016llx", (unsigned long long)h->high64,
             (unsigned long long)h->low64);
}

/* ----------------------------------------------------------- ordinals */

static void ord_free(ordmap_t *m)
{
    free(m->s);
    memset(m, 0, sizeof *m);
}

static int ord_grow(ordmap_t *m)
{
    size_t nc = m->cap ? m->cap * 2 : 1u << 16;
    ordslot_t *t = calloc(nc, sizeof *t);
    if (t == NULL)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->s[i].key == 0)
            continue;
        size_t j = (size_t)m->s[i].key & (nc - 1);
        while (t[j].key)
            j = (j + 1) & (nc - 1);
        t[j] = m->s[i];
    }
    free(m->s);
    m->s = t;
    m->cap = nc;
    return 0;
}

/* The number of rows with this content hash seen before in the run (and
 * counts this one); UINT64_MAX when the map is full and does not hold it. */
static uint64_t ord_next(ordmap_t *m, uint64_t h)
{
    if (h == 0)
        h = 1;
    if (m->n * 2 >= m->cap && !m->full && (m->cap >= ORD_MAX_SLOTS || ord_grow(m)))
        m->full = 1;
    if (m->cap == 0)
        return UINT64_MAX;
    size_t j = (size_t)h & (m->cap - 1);
    while (m->s[j].key && m->s[j].key != h)
        j = (j + 1) & (m->cap - 1);
    if (m->s[j].key == h)
        return m->s[j].count++;
    if ((m->n + 1) * 2 > m->cap)
        return UINT64_MAX; /* full */
    m->s[j].key = h;
    m->s[j].count = 1;
    m->n++;
    return 0;
}

/* The ordinal of a row with this content among the identical rows of the
 * file so far; `at`, the row's offset, stands in past the map's bound. */
static uint64_t im_ordinal(importer_t *im, XXH128_hash_t content, uint64_t at)
{
    uint64_t k = ord_next(&im->ord, content.low64 ^ content.high64);
    return k == UINT64_MAX ? (1ull << 63) | at : k;
}

/*
 * Gives the event just parsed (the batch's last) the id of its content:
 * "row:" + 32 hex of (content hash, ordinal k among identical rows).
 */
static cp_status im_row_id(importer_t *im, XXH128_hash_t content, uint64_t k)
{
    ingest_event_t *ev = &im->b.events[im->b.n - 1];
    uint64_t mix[3] = {content.low64, content.high64, k};
    XXH128_hash_t id = XXH3_128bits_withSeed(mix, sizeof mix, 0x726f7773);
    char buf[40];
    int n = snprintf(buf, sizeof buf, "row:%016llx%016llx", (unsigned long long)id.high64,
                     (unsigned long long)id.low64);
    char *s = arena_strndup(&im->b.arena, buf, (size_t)n);
    if (s == NULL)
        return CP_ENOMEM;
    ev->message_id = s;
    ev->message_id_len = (size_t)n;
    ev->message_id_derived = 1;
    ev->message_hash = hash64(s, (size_t)n, 0x6d736764);
    ev->no_dedup = 0;
    return CP_OK;
}

/* The content hash of a CSV row: its cells as parsed (quoting undone), each
 * followed by a NUL, under the mapping's seed. */
static XXH128_hash_t row_content(importer_t *im, const csv_field_t *f, size_t n, XXH3_state_t *st)
{
    /* cells cut in place lie one after the other, NUL between: one call */
    int contiguous = 1;
    for (size_t i = 0; i + 1 < n && contiguous; i++)
        contiguous = f[i].p + f[i].len + 1 == f[i + 1].p;
    if (contiguous && n)
        return XXH3_128bits_withSeed(f[0].p, (size_t)(f[n - 1].p - f[0].p) + f[n - 1].len + 1,
                                     im->mapping_seed);
    XXH3_128bits_reset_withSeed(st, im->mapping_seed);
    for (size_t i = 0; i < n; i++)
        XXH3_128bits_update(st, f[i].p, f[i].len + 1); /* p is NUL-terminated */
    return XXH3_128bits_digest(st);
}

static void im_reset(importer_t *im)
{
    ingest_batch_reset(&im->b);
    for (size_t i = 0; i < im->ndocs; i++)
        json_decref(im->docs[i]);
    im->ndocs = 0;
    im->n = 0;
}

/* Notes the line of the event just appended to the batch, and the
 * document it borrows (NULL for typed CSV events). */
static cp_status im_push(importer_t *im, json_t *doc, uint64_t line)
{
    if (arr_grow((void **)&im->lines, &im->cap, im->b.n, sizeof *im->lines, 1024))
        return CP_ENOMEM;
    im->lines[im->b.n - 1] = line;
    im->n = im->b.n;
    if (doc) {
        if (arr_grow((void **)&im->docs, &im->capdocs, im->ndocs + 1, sizeof *im->docs, 1024))
            return CP_ENOMEM;
        im->docs[im->ndocs++] = doc;
    }
    return CP_OK;
}

static void reject(importer_t *im, uint64_t line, cp_error_t *e)
{
    im->st->rejected++;
    e->record = line;
    if (im->o.on_reject)
        im->o.on_reject(im->o.ud, e);
}

/* Parses one event document (CSV row or NDJSON line) into the batch. */
static cp_status im_event(importer_t *im, json_t *doc, uint64_t line, XXH128_hash_t content,
                          uint64_t k)
{
    cp_error_t e;
    acc_err_reset(&e);
    size_t before = im->b.n;
    cp_status rc = segment_parse_event(doc, ING_NONE, NULL, -1, &im->so, &im->b, &e);
    if (rc == CP_ENOMEM) {
        json_decref(doc);
        return CP_ERR(im->err, rc, "out of memory");
    }
    if (rc) {
        error_prefix(&e, "line %llu: ", (unsigned long long)line);
        reject(im, line, &e);
        json_decref(doc);
        return CP_OK;
    }
    /* No messageId in the line: the id of its text and its ordinal among
     * identical lines. */
    ingest_event_t *ev = &im->b.events[before];
    if (ev->message_id_derived && !im->row_ids)
        ev->no_dedup = 1; /* the range records keep reruns exact */
    else if (ev->message_id_derived && im_row_id(im, content, k)) {
        json_decref(doc);
        return CP_ERR(im->err, CP_ENOMEM, "out of memory");
    }
    return im_push(im, doc, line) ? CP_ERR(im->err, CP_ENOMEM, "out of memory") : CP_OK;
}

/*
 * Writes the range record of the first `offset` bytes (hash state `st`)
 * and drops the run's previous intermediate one (the record the run
 * started from and the final one of each run stay: a shorter snapshot of
 * the file is recognised by them).
 */
static cp_status im_record(importer_t *im, store_txn_t *txn, uint64_t offset, uint64_t line,
                           int done, XXH3_state_t *st)
{
    XXH128_hash_t h = XXH3_128bits_digest(st);
    char key[40];
    range_key(&h, key, sizeof key);
    cp_status rc;
    if (im->prev_key[0] && strcmp(im->prev_key, key) && strcmp(im->prev_key, im->start_key) &&
        (rc = store_del(txn, STORE_INTAKE, im->prev_key, strlen(im->prev_key), im->err)))
        return rc;
    char anchor[20];
    snprintf(anchor, sizeof anchor, "%016llx", (unsigned long long)anchor_of(im, offset));
    json_t *pos = json_pack("{s:I,s:I,s:s,s:b,s:I,s:s}", "len", (json_int_t)offset, "line",
                            (json_int_t)line, "anchor", anchor, "done", done, "time",
                            (json_int_t)time_now_ms(), "name", im->name);
    char *txt = pos ? json_dumps_checked(pos, JSON_COMPACT) : NULL;
    json_decref(pos);
    rc = txt ? store_put(txn, STORE_INTAKE, key, strlen(key), txt, strlen(txt), im->err)
             : CP_ERR(im->err, CP_ENOMEM, "out of memory");
    free(txt);
    if (rc == CP_OK)
        snprintf(im->prev_key, sizeof im->prev_key, "%s", done ? "" : key);
    return rc;
}

/* Applies the batch and commits it with the record of the content through
 * `offset` (state `st`). */
static cp_status im_commit(importer_t *im, uint64_t offset, uint64_t line, int done,
                           XXH3_state_t *st)
{
    cp_db_t *db = im->db;
    cp_status rc;
    /* Like every write: a batch waits while the change feed is too far
     * behind, so a slow subscriber slows the import instead of letting the
     * feed's queue grow with every batch. */
    feed_wait_room(db);
    db_lock_wr(db);
    if ((rc = db_check(db, im->err))) {
        pthread_rwlock_unlock(&db->lock);
        return rc;
    }
    uint64_t counts[5] = {0};
    uint64_t beh0 = db->acc_stats.beh, attr0 = db->acc_stats.attr, meas0 = db->acc_stats.meas;
    uint64_t tags0 = db->acc_stats.tags, tagsu0 = db->acc_stats.tags_unknown;
    store_txn_t *txn = NULL;
    /* Room for the batch's pages before memory changes: on a full disk the
     * batch is refused here (CP_ENOSPC), the handle stays usable, and a
     * rerun resumes after the last committed batch. A failed commit, by
     * contrast, leaves memory ahead of the disk and the handle failed. */
    uint64_t room = DB_WRITE_ROOM + (uint64_t)im->n * IMPORT_ROOM_PER_EVENT;
    if ((rc = store_ensure_room(db->st, room, im->err)) ||
        (rc = store_txn_begin(db->st, 1, &txn, im->err))) {
        pthread_rwlock_unlock(&db->lock);
        return rc;
    }
    rc = intake_import_batch(db, txn, &im->b, im->lines, im->o.on_reject, im->o.ud, im->now_ms,
                             counts, im->err);
    if (rc == CP_OK)
        rc = im_record(im, txn, offset, line, done, st);
    if (rc)
        return db_write_fail(db, txn, rc, im->err); /* unlocks */
    /* A batch is a checkpoint: committed with fsync, position included. */
    rc = db_commit_locked(db, txn, im->err);
    pthread_rwlock_unlock(&db->lock);
    if (rc)
        return rc;
    im->st->events += counts[0];
    im->st->duplicates += counts[1];
    im->st->users_created += counts[2];
    im->st->rejected += counts[3];
    im->st->merges += counts[4];
    im->st->beh_updates += db->acc_stats.beh - beh0;
    im->st->attr_updates += db->acc_stats.attr - attr0;
    im->st->meas_updates += db->acc_stats.meas - meas0;
    im->st->tags_assigned += db->acc_stats.tags - tags0;
    im->st->tags_unknown += db->acc_stats.tags_unknown - tagsu0;
    im_reset(im);
    return CP_OK;
}

/* Declares the mapping's attributes and indexed properties. */
static cp_status im_prepare_mapping(importer_t *im, const mapping_t *m)
{
    cp_status rc;
    size_t i;
    json_t *a;
    json_array_foreach(m->attributes, i, a)
    {
        const char *name = json_string_value(json_object_get(a, "name"));
        const char *type = json_string_value(json_object_get(a, "type"));
        cp_attr_type t = 0;
        static const char *const names[] = {NULL,   "int",       "enum", "string",
                                            "bool", "timestamp", "geo"};
        for (int k = 1; k <= 6 && type; k++)
            if (!strcmp(type, names[k]))
                t = (cp_attr_type)k;
        if (name == NULL || t == 0)
            return CP_ERR(im->err, CP_EINVAL, "mapping: attributes[%zu] needs a name and a type",
                          i);
        rc = cp_attr_define(im->db, name, t, im->err);
        if (rc && rc != CP_EEXIST)
            return rc;
    }
    if (json_array_size(m->indexed)) {
        /* Add to the configured list (keeping what is there). */
        db_lock_rd(im->db);
        json_t *list = json_array();
        int bad = list == NULL;
        for (size_t k = 0; k < im->db->cfg.nindexed; k++)
            bad |= json_array_append_new(list, json_string(im->db->cfg.indexed[k]));
        pthread_rwlock_unlock(&im->db->lock);
        if (bad) { /* a partial list would drop configured properties */
            json_decref(list);
            return CP_ERR(im->err, CP_ENOMEM, "out of memory reading the indexed properties");
        }
        int added = 0;
        json_array_foreach(m->indexed, i, a)
        {
            size_t k;
            json_t *x;
            int have = 0;
            json_array_foreach(list, k, x) have |= json_equal(x, a);
            if (!have) {
                if (json_array_append(list, a)) {
                    json_decref(list);
                    return CP_ERR(im->err, CP_ENOMEM,
                                  "out of memory adding the mapping's indexed properties");
                }
                added = 1;
            }
        }
        rc = CP_OK;
        if (added) {
            json_t *cfg = json_pack("{s:o}", "indexed_properties", list);
            char *s = cfg ? json_dumps_checked(cfg, JSON_COMPACT) : NULL;
            json_decref(cfg);
            rc = s ? cp_intake_config_set_json(im->db, s, strlen(s), im->err)
                   : CP_ERR(im->err, CP_ENOMEM, "out of memory");
            free(s);
        } else {
            json_decref(list);
        }
        if (rc)
            return rc;
    }
    return CP_OK;
}

/*
 * Resuming at off0: counts the identical rows of the part imported before,
 * so a row after it that repeats one before it gets the next ordinal (not
 * the id of the earlier row, which the dedup would drop). One more read of
 * that part.
 */
static cp_status csv_ordinals(importer_t *im, const char *path, const csv_opts_t *co, int header,
                              uint64_t off0)
{
    csv_reader_t *r = NULL;
    cp_status rc = csv_open(path, co, &r, im->err);
    const csv_field_t *f;
    size_t n;
    int first = header;
    while (rc == CP_OK && csv_offset(r) < off0) {
        cp_error_t e;
        acc_err_reset(&e);
        uint64_t at = csv_offset(r);
        cp_status x = csv_next(r, &f, &n, &e);
        if (x == CP_EIO || x == CP_ENOMEM) {
            rc = CP_ERR(im->err, x, "%s", e.message);
            break;
        }
        if (x || f == NULL || first || (n == 1 && f[0].len == 0)) {
            first = 0;
            if (x == CP_OK && f == NULL)
                break;
            continue;
        }
        im_ordinal(im, row_content(im, f, n, im->tmp), at);
    }
    csv_close(r);
    return rc;
}

/* Resuming at off0: counts the identical lines before it (csv_ordinals). */
static cp_status ndjson_ordinals(importer_t *im, const char *path, uint64_t off0)
{
    gzFile g = gzopen(path, "rb");
    if (g == NULL)
        return CP_ERR(im->err, CP_EIO, "cannot open %s: %s", path, strerror(errno));
    gzbuffer(g, 128u * 1024);
    cp_status rc = CP_OK;
    buf_t line;
    buf_init(&line, CP_LINE_MAX);
    uint64_t off = 0;
    int too_long = 0;
    while (off < off0) {
        int c = gzgetc(g);
        if (c < 0)
            break;
        off++;
        if (c != '\n') {
            if (!too_long && buf_append(&line, (char[]){(char)c}, 1) != CP_OK)
                too_long = 1;
            continue;
        }
        size_t len = line.len;
        if (len && line.data[len - 1] == '\r')
            len--;
        int blank = 1;
        for (size_t i = 0; i < len && blank; i++)
            blank = line.data[i] == ' ' || line.data[i] == '\t';
        if (!too_long && !blank)
            im_ordinal(im, XXH3_128bits(line.data, len), off);
        buf_reset(&line);
        too_long = 0;
    }
    buf_free(&line);
    gzclose(g);
    return rc;
}

/* 1 when an unterminated last line must wait (see the file's comment). */
static int hold_back(const importer_t *im, int compressed)
{
    return !compressed && !(im->o.flags & CP_IMPORT_FINAL);
}

static cp_status import_csv(importer_t *im, const char *path, uint64_t off0, uint64_t line0)
{
    cp_status rc;
    mapping_t *m = NULL;
    csv_reader_t *r = NULL;
    if (im->o.mapping_json)
        rc = mapping_parse(im->o.mapping_json, im->o.mapping_len, &m, im->err);
    else
        rc = mapping_preset(im->o.preset ? im->o.preset : "", &m, im->err);
    if (rc)
        return rc;
    if ((rc = im_prepare_mapping(im, m)))
        goto out;
    /* Row ids depend on the mapping (the same cells mean other events under
     * another mapping): its text, or the preset's name. */
    im->mapping_seed = im->o.mapping_json ? XXH3_64bits(im->o.mapping_json, im->o.mapping_len)
                                          : XXH3_64bits(im->o.preset, strlen(im->o.preset));
    im->row_ids = !m->has_msgid && (im->o.flags & CP_IMPORT_DEDUP_ROWS);
    csv_opts_t co = {.delim = m->delim};
    if ((rc = csv_open(path, &co, &r, im->err)))
        goto out;
    /* The prefix hash starts at the resume point: 0, or off0 with the
     * state the recognition computed (im->hs). */
    if (off0 == 0 && (rc = csv_hash_start(r, NULL, im->err)))
        goto out;
    const csv_field_t *f;
    size_t n;
    if (m->header) {
        if ((rc = csv_next(r, &f, &n, im->err)))
            goto out;
        if (f == NULL) {
            rc = CP_ERR(im->err, CP_EINVAL, "%s is empty (no header)", path);
            goto out;
        }
        if ((rc = mapping_bind(m, f, n, im->err)))
            goto out;
    } else if ((rc = mapping_bind(m, NULL, 0, im->err))) {
        goto out;
    }
    uint64_t last_off = csv_offset(r), last_line = csv_line(r);
    if (off0) {
        csv_close(r);
        r = NULL;
        if (im->row_ids && (rc = csv_ordinals(im, path, &co, m->header, off0)))
            goto out;
        if ((rc = csv_open(path, &co, &r, im->err)) || (rc = csv_seek(r, off0, line0, im->err)) ||
            (rc = csv_hash_start(r, im->hs, im->err)))
            goto out;
        im->st->resumed_at_line = line0;
        last_off = off0;
        last_line = line0;
    }
    im->so.allow_other_ids = 1;
    im->so.no_dedup = !m->has_msgid;
    int compressed = csv_compressed(r);
    uint64_t since = 0;
    int held = 0;
    for (;;) {
        cp_error_t e;
        acc_err_reset(&e);
        rc = csv_next(r, &f, &n, &e);
        if (rc == CP_EIO || rc == CP_ENOMEM) {
            if (im->err)
                *im->err = e;
            goto out;
        }
        if ((rc || f) && !csv_last_closed(r) && hold_back(im, compressed)) {
            /* a line still being written: the position stays before it */
            im->st->held_back = csv_offset(r) - last_off;
            held = 1;
            rc = CP_OK;
            break;
        }
        if (rc) {
            im->st->lines++;
            reject(im, e.record, &e);
            rc = CP_OK;
            last_off = csv_offset(r);
            last_line = csv_line(r);
            continue;
        }
        if (f == NULL)
            break;
        im->st->lines++;
        uint64_t line = csv_line(r), at = last_off;
        last_off = csv_offset(r);
        last_line = line;
        if (n == 1 && f[0].len == 0)
            continue; /* blank line */
        XXH128_hash_t content = {0, 0};
        uint64_t k = 0;
        if (im->row_ids) {
            content = row_content(im, f, n, im->tmp);
            k = im_ordinal(im, content, at);
        }
        map_result res;
        rc = mapping_row_event(m, f, n, line, im->src, &im->so, &im->b, &res, &e);
        if (rc == CP_ENOMEM) {
            rc = CP_ERR(im->err, rc, "out of memory");
            goto out;
        }
        if (rc) {
            reject(im, line, &e);
            rc = CP_OK;
        } else if (res == MAP_SKIP) {
            im->st->skipped++;
        } else if ((im->row_ids && im_row_id(im, content, k)) || im_push(im, NULL, line)) {
            rc = CP_ERR(im->err, CP_ENOMEM, "out of memory");
            goto out;
        }
        /* Long rows could fill the batch's arena (64 MiB) before
         * batch_lines: commit early instead. */
        if (im->n >= im->o.batch_lines || im->b.arena.total > (40u << 20)) {
            if ((rc = csv_hash_at(r, last_off, im->tmp, im->err)) ||
                (rc = im_commit(im, last_off, last_line, 0, im->tmp)))
                goto out;
        }
        if (im->o.on_progress && ++since >= 20000) {
            since = 0;
            im->o.on_progress(im->o.ud, csv_raw_offset(r), im->st->lines);
        }
    }
    if ((rc = csv_hash_at(r, last_off, im->tmp, im->err)) ||
        (rc = im_commit(im, last_off, last_line, !held, im->tmp)))
        goto out;
    if (im->o.on_progress)
        im->o.on_progress(im->o.ud, im->st->file_bytes, im->st->lines);
out:
    csv_close(r);
    mapping_free(m);
    return rc;
}

static cp_status import_ndjson(importer_t *im, const char *path, uint64_t off0, uint64_t line0)
{
    cp_status rc = CP_OK;
    gzFile g = gzopen(path, "rb");
    if (g == NULL)
        return CP_ERR(im->err, CP_EIO, "cannot open %s: %s", path, strerror(errno));
    gzbuffer(g, 128u * 1024);
    buf_t line;
    buf_init(&line, CP_LINE_MAX);
    char *chunk = malloc(65536);
    if (chunk == NULL) {
        gzclose(g);
        return CP_ERR(im->err, CP_ENOMEM, "out of memory");
    }
    uint64_t off = 0, lineno = 0;
    im->row_ids = (im->o.flags & CP_IMPORT_DEDUP_ROWS) != 0;
    if (off0 && im->row_ids && (rc = ndjson_ordinals(im, path, off0)))
        goto out;
    if (off0) {
        if (gzseek(g, (z_off_t)off0, SEEK_SET) != (z_off_t)off0) {
            rc = CP_ERR(im->err, CP_EIO, "cannot resume %s at byte %llu", path,
                        (unsigned long long)off0);
            goto out;
        }
        off = off0;
        lineno = line0;
        im->st->resumed_at_line = line0;
    } else {
        XXH3_128bits_reset(im->hs);
    }
    im->so.allow_other_ids = 0;
    im->so.no_dedup = 0;
    /* im->hs absorbs each line with its line break once the line is whole
     * (a too-long line as it streams past), so at a line end it holds
     * exactly the bytes [0, off). */
    int too_long = 0, compressed = !gzdirect(g);
    uint64_t since = 0;
    for (;;) {
        int got = gzread(g, chunk, 65536);
        if (got < 0) {
            int en;
            rc = CP_ERR(im->err, CP_EIO, "reading %s: %s", path, gzerror(g, &en));
            goto out;
        }
        size_t pos = 0;
        int eof = got == 0;
        if (eof && line.len && !too_long && hold_back(im, compressed)) {
            im->st->held_back = line.len;
            off -= line.len; /* the position stays before it */
            break;
        }
        while (pos < (size_t)got || (eof && (line.len || too_long))) {
            const char *nl = eof ? NULL : memchr(chunk + pos, '\n', (size_t)got - pos);
            size_t take = eof ? 0 : nl ? (size_t)(nl - (chunk + pos)) : (size_t)got - pos;
            if (!too_long && take && buf_append(&line, chunk + pos, take) != CP_OK) {
                too_long = 1;
                XXH3_128bits_update(im->hs, line.data, line.len);
                buf_reset(&line);
            }
            if (too_long)
                XXH3_128bits_update(im->hs, chunk + pos, take);
            pos += take;
            off += take;
            if (!nl && !eof)
                break;
            if (!too_long)
                XXH3_128bits_update(im->hs, line.data, line.len);
            if (nl) {
                XXH3_128bits_update(im->hs, "\n", 1);
                pos++;
                off++;
            }
            lineno++;
            im->st->lines++;
            size_t len = line.len;
            if (len && line.data[len - 1] == '\r')
                len--;
            cp_error_t e;
            acc_err_reset(&e);
            if (too_long) {
                CP_ERR(&e, CP_ELIMIT, "line %llu: longer than %u bytes", (unsigned long long)lineno,
                       CP_LINE_MAX);
                reject(im, lineno, &e);
            } else if (len) {
                int blank = 1;
                for (size_t i = 0; i < len && blank; i++)
                    blank = line.data[i] == ' ' || line.data[i] == '\t';
                if (!blank) {
                    json_error_t je;
                    XXH128_hash_t content = {0, 0};
                    uint64_t k = 0;
                    if (im->row_ids) {
                        content = XXH3_128bits(line.data, len);
                        k = im_ordinal(im, content, off);
                    }
                    json_t *doc = json_loadb_checked(line.data, len, JSON_REJECT_DUPLICATES, &je);
                    if (doc == NULL && json_is_oom(&je)) {
                        rc = CP_ERR(im->err, CP_ENOMEM, "out of memory reading line %llu",
                                    (unsigned long long)lineno);
                        goto out;
                    } else if (doc == NULL) {
                        CP_ERR(&e, CP_EINVAL, "line %llu: malformed JSON at column %d: %s",
                               (unsigned long long)lineno, je.column, je.text);
                        reject(im, lineno, &e);
                    } else if ((rc = im_event(im, doc, lineno, content, k))) {
                        goto out;
                    }
                }
            }
            buf_reset(&line);
            too_long = 0;
            if (im->n >= im->o.batch_lines) {
                XXH3_copyState(im->tmp, im->hs);
                if ((rc = im_commit(im, off, lineno, 0, im->tmp)))
                    goto out;
            }
            if (im->o.on_progress && ++since >= 20000) {
                since = 0;
                z_off_t raw = gzoffset(g);
                im->o.on_progress(im->o.ud, raw > 0 ? (uint64_t)raw : 0, im->st->lines);
            }
            if (eof)
                break;
        }
        if (eof)
            break;
    }
    XXH3_copyState(im->tmp, im->hs);
    rc = im_commit(im, off, lineno, im->st->held_back == 0, im->tmp);
    if (rc == CP_OK && im->o.on_progress)
        im->o.on_progress(im->o.ud, im->st->file_bytes, im->st->lines);
out:
    free(chunk);
    buf_free(&line);
    gzclose(g);
    return rc;
}

/* ------------------------------------------------------ recognition */

typedef struct ranges {
    range_t *v;
    size_t n, cap;
} ranges_t;

static cp_status ranges_push(ranges_t *rs, const range_t *r, cp_error_t *err)
{
    if (arr_grow((void **)&rs->v, &rs->cap, rs->n + 1, sizeof *rs->v, 64))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    rs->v[rs->n++] = *r;
    return CP_OK;
}

static cp_status range_collect(void *ud, const void *k, size_t klen, const void *v, size_t vlen,
                               cp_error_t *err)
{
    const size_t pl = sizeof RANGE_PREFIX - 1;
    if (klen != pl + 32)
        return CP_OK; /* not a range record */
    char hi[17], lo[17];
    memcpy(hi, (const char *)k + pl, 16);
    hi[16] = '\0';
    memcpy(lo, (const char *)k + pl + 16, 16);
    lo[16] = '\0';
    json_error_t je;
    json_t *j = json_loadb_checked(v, vlen, 0, &je);
    if (j == NULL && json_is_oom(&je)) /* not damaged: the position must not be lost */
        return CP_ERR(err, CP_ENOMEM, "out of memory reading import positions");
    const char *an = json_string_value(json_object_get(j, "anchor"));
    range_t r = {0};
    r.hash.high64 = strtoull(hi, NULL, 16);
    r.hash.low64 = strtoull(lo, NULL, 16);
    r.len = (uint64_t)json_integer_value(json_object_get(j, "len"));
    r.line = (uint64_t)json_integer_value(json_object_get(j, "line"));
    r.anchor = an ? strtoull(an, NULL, 16) : 0;
    int ok = an != NULL;
    json_decref(j);
    return ok ? ranges_push(ud, &r, err) : CP_OK; /* damaged: recognises nothing */
}

static int range_cmp(const void *a, const void *b)
{
    const range_t *x = a, *y = b;
    return x->len < y->len ? -1 : x->len > y->len;
}

/*
 * Finds the longest earlier import whose content is a prefix of this
 * file's uncompressed stream (see the file's comment): *best gets it
 * (len 0: none), im->hs the hash state after its len bytes, im->at_end
 * whether the file ends there. Reads the file once, only as far as the
 * longest candidate whose head matches.
 */
static cp_status im_recognise(importer_t *im, const char *path, range_t *best)
{
    cp_db_t *db = im->db;
    cp_error_t *err = im->err;
    ranges_t rs = {0};
    gzFile g = NULL;
    char *buf = NULL;
    store_txn_t *t = NULL;
    cp_status rc;
    memset(best, 0, sizeof *best);
    if ((rc = db_flush(db, err)) || (rc = store_txn_begin(db->st, 0, &t, err)))
        goto out;
    if ((rc = store_each(t, STORE_INTAKE, RANGE_PREFIX, sizeof RANGE_PREFIX - 1, range_collect, &rs,
                         err)))
        goto out;
    /* A position of the format before range records (size + first MiB of
     * this very file): trusted as it was, to the byte it names. */
    const void *v;
    size_t vl;
    rc = store_get(t, STORE_INTAKE, im->key, strlen(im->key), &v, &vl, err);
    if (rc == CP_OK) {
        json_error_t je;
        json_t *j = json_loadb_checked(v, vl, 0, &je);
        if (j == NULL && json_is_oom(&je)) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory reading the import position");
            goto out;
        }
        range_t r = {0};
        r.len = (uint64_t)json_integer_value(json_object_get(j, "offset"));
        r.line = (uint64_t)json_integer_value(json_object_get(j, "line"));
        r.legacy = 1;
        json_decref(j);
        if (r.len && (rc = ranges_push(&rs, &r, err)))
            goto out;
    } else if (rc != CP_ENOTFOUND) {
        goto out;
    }
    rc = CP_OK;
    store_txn_abort(t);
    t = NULL;
    /* The head decides most candidates. */
    size_t keep = 0;
    for (size_t i = 0; i < rs.n; i++)
        if (rs.v[i].legacy ||
            (rs.v[i].len <= im->total_len && rs.v[i].anchor == anchor_of(im, rs.v[i].len)))
            rs.v[keep++] = rs.v[i];
    rs.n = keep;
    if (rs.n == 0)
        goto out;
    qsort(rs.v, rs.n, sizeof *rs.v, range_cmp);
    if ((g = gzopen(path, "rb")) == NULL) {
        rc = CP_ERR(err, CP_EIO, "cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    if ((buf = malloc(65536)) == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    gzbuffer(g, 128u * 1024);
    XXH3_state_t *st = im->tmp;
    XXH3_128bits_reset(st);
    uint64_t at = 0;
    size_t next = 0;
    while (next < rs.n) {
        const range_t *c = &rs.v[next];
        if (c->len == at) {
            if (c->legacy || XXH128_isEqual(XXH3_128bits_digest(st), c->hash)) {
                *best = *c;
                XXH3_copyState(im->hs, st);
            }
            next++;
            continue;
        }
        uint64_t want = c->len - at;
        int got = gzread(g, buf, want < 65536 ? (unsigned)want : 65536u);
        if (got <= 0)
            break; /* shorter than the candidates left (a read error: the import says) */
        XXH3_128bits_update(st, buf, (size_t)got);
        at += (uint64_t)got;
    }
    /* Nothing after the best match: the whole file was imported before. */
    if (best->len && gzseek(g, (z_off_t)best->len, SEEK_SET) == (z_off_t)best->len)
        im->at_end = gzread(g, buf, 1) == 0;
out:
    store_txn_abort(t);
    if (g)
        gzclose(g);
    free(buf);
    free(rs.v);
    return rc;
}

/* Reads the first HEAD_BYTES uncompressed bytes (the anchor of records). */
static cp_status im_head(importer_t *im, const char *path)
{
    gzFile g = gzopen(path, "rb");
    if (g == NULL)
        return CP_ERR(im->err, CP_EIO, "cannot open %s: %s", path, strerror(errno));
    gzbuffer(g, 128u * 1024);
    cp_status rc = CP_OK;
    if ((im->head = malloc(HEAD_BYTES)) == NULL) {
        rc = CP_ERR(im->err, CP_ENOMEM, "out of memory");
        goto out;
    }
    int got = gzread(g, im->head, HEAD_BYTES);
    if (got < 0) {
        int en;
        rc = CP_ERR(im->err, CP_EIO, "reading %s: %s", path, gzerror(g, &en));
        goto out;
    }
    im->headlen = (size_t)got;
    /* Only records this long or shorter can match; gzip does not say its
     * size reliably, so the recognition finds out as it reads. */
    im->total_len = got < (int)HEAD_BYTES ? (uint64_t)got
                    : gzdirect(g)         ? im->st->file_bytes
                                          : UINT64_MAX;
out:
    gzclose(g);
    return rc;
}

static cp_status import_run(cp_db_t *db, const char *path, const cp_import_options_t *opts,
                            cp_import_stats_t *stats, cp_error_t *err);

/* Options and stats of any known size. Stats the caller's size can hold
 * whole are filled in place, as the import runs (its callbacks may read
 * them); an older, smaller struct gets a copy at the end. */
cp_status cp_import_file(cp_db_t *db, const char *path, const cp_import_options_t *opts,
                         cp_import_stats_t *stats, cp_error_t *err)
{
    cp_import_options_t o;
    cp_status rc;
    if (opts == NULL)
        return CP_ERR(err, CP_EINVAL, "path or options is NULL");
    if ((rc = sized_in(&o, sizeof o, opts, CP_SIZE_THROUGH(cp_import_options_t, batch_lines),
                       "cp_import_options_t", err)))
        return rc;
    if (stats && (rc = sized_out_check(stats, CP_SIZE_THROUGH(cp_import_stats_t, tags_unknown),
                                       "cp_import_stats_t", err)))
        return rc;
    cp_import_stats_t full = {0};
    size_t n = stats ? stats->size : 0;
    int direct = n >= sizeof full;
    rc = import_run(db, path, &o, direct ? stats : &full, err);
    if (direct) {
        stats->size = n;
        memset((unsigned char *)stats + sizeof full, 0, n - sizeof full);
    } else if (stats) {
        sized_out(stats, &full, sizeof full);
    }
    return rc;
}

static cp_status import_run(cp_db_t *db, const char *path, const cp_import_options_t *opts,
                            cp_import_stats_t *stats, cp_error_t *err)
{
    cp_import_stats_t dummy;
    if (stats == NULL)
        stats = &dummy;
    memset(stats, 0, sizeof *stats);
    if (path == NULL || opts == NULL)
        return CP_ERR(err, CP_EINVAL, "path or options is NULL");
    if (opts->format != CP_IMPORT_NDJSON && opts->format != CP_IMPORT_CSV)
        return CP_ERR(err, CP_EINVAL, "unknown import format %d", (int)opts->format);
    if (opts->format == CP_IMPORT_CSV && opts->mapping_json == NULL && opts->preset == NULL)
        return CP_ERR(err, CP_EINVAL, "a CSV import needs a mapping or a preset");
    cp_status rc = db_check(db, err);
    if (rc)
        return rc;
    if (db->readonly)
        return CP_ERR(err, CP_EREADONLY, "data directory %s is open read-only", store_dir(db->st));
    struct stat sb;
    if (stat(path, &sb) != 0)
        return CP_ERR(err, errno == ENOENT ? CP_ENOTFOUND : CP_EIO, "cannot open %s: %s", path,
                      strerror(errno));
    importer_t im;
    memset(&im, 0, sizeof im);
    im.db = db;
    im.o = *opts;
    if (im.o.batch_lines == 0)
        im.o.batch_lines = CP_DEFAULT_BATCH_LINES;
    im.st = stats;
    im.err = err;
    im.now_ms = time_now_ms();
    stats->file_bytes = (uint64_t)sb.st_size;
    ingest_batch_init(&im.b);
    im.so.received_at_ms = im.now_ms;
    im.so.no_skew_correction = !db->cfg.skew_correction;
    if ((im.hs = XXH3_createState()) == NULL || (im.tmp = XXH3_createState()) == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = file_id(path, (uint64_t)sb.st_size, im.key, sizeof im.key, err)) ||
        (rc = im_head(&im, path)))
        goto out;
    const char *base = strrchr(path, '/');
    snprintf(im.name, sizeof im.name, "%.63s", base ? base + 1 : path);
    snprintf(im.src, sizeof im.src, "import:%.40s:%.35s", im.name, im.key + 4);
    /* What of this file was imported before, by content. */
    range_t best = {0};
    if (!(opts->flags & CP_IMPORT_RESTART)) {
        if ((rc = im_recognise(&im, path, &best)))
            goto out;
        if (best.len && !best.legacy) {
            XXH128_hash_t h = XXH3_128bits_digest(im.hs);
            range_key(&h, im.start_key, sizeof im.start_key);
        }
        stats->resumed_at_offset = best.len;
        if (best.len && im.at_end) {
            stats->already_done = 1;
            stats->resumed_at_line = best.line;
            goto out;
        }
    }
    rc = opts->format == CP_IMPORT_CSV ? import_csv(&im, path, best.len, best.line)
                                       : import_ndjson(&im, path, best.len, best.line);
out:
    im_reset(&im);
    ingest_batch_free(&im.b);
    free(im.docs);
    free(im.lines);
    free(im.head);
    ord_free(&im.ord);
    XXH3_freeState(im.hs);
    XXH3_freeState(im.tmp);
    return rc;
}
