/*
 * import.c — bulk import of event files (`crowdpack import`): NDJSON
 * Segment events, CSV with a column mapping or a preset, plain or gzip.
 *
 * Streaming in constant memory: rows are parsed into a batch of events
 * (batch_lines at a time), applied under the write lock through the same
 * path as HTTP events, and committed in one LMDB transaction together with
 * the input position ("imp/<file id>" in STORE_INTAKE: uncompressed byte
 * offset and line after the batch). A file is identified by its size and a
 * hash of its first MiB, so a rerun of an interrupted import (even renamed)
 * resumes after the last committed batch and applies nothing twice. Each
 * batch commit is durable by itself (LMDB fsync), so imports need no WAL
 * record: they are checkpoints.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "engine/engine.h"
#include "ingest/csv.h"
#include "ingest/mapping.h"

cp_status intake_import_batch(cp_db_t *db, store_txn_t *txn, ingest_batch_t *b,
                              const uint64_t *lines, cp_reject_fn on_reject, void *ud,
                              int64_t now_ms, uint64_t *counts, cp_error_t *err);

#define FIRST_MIB (1u << 20)

typedef struct importer {
    cp_db_t *db;
    cp_import_options_t o;
    cp_import_stats_t *st;
    cp_error_t *err;
    char key[40];  /* imp/<16 hex> */
    char src[96];  /* messageId prefix of CSV rows */
    ingest_batch_t b;
    json_t **docs; /* NDJSON documents the batch borrows */
    size_t ndocs, capdocs;
    uint64_t *lines; /* line of each event of the batch */
    size_t n, cap;   /* events in the batch */
    int64_t now_ms;
    segment_opts_t so;
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
    uint64_t h = cp_hash64(buf, got, size);
    free(buf);
    snprintf(key, cap, "imp/%016llx", (unsigned long long)h);
    return CP_OK;
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
    if (im->b.n > im->cap) {
        size_t nc = im->cap ? im->cap * 2 : 1024;
        while (nc < im->b.n)
            nc *= 2;
        uint64_t *l = realloc(im->lines, nc * sizeof *l);
        if (l == NULL)
            return CP_ENOMEM;
        im->lines = l;
        im->cap = nc;
    }
    im->lines[im->b.n - 1] = line;
    im->n = im->b.n;
    if (doc) {
        if (im->ndocs == im->capdocs) {
            size_t nc = im->capdocs ? im->capdocs * 2 : 1024;
            json_t **d = realloc(im->docs, nc * sizeof *d);
            if (d == NULL)
                return CP_ENOMEM;
            im->docs = d;
            im->capdocs = nc;
        }
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
static cp_status im_event(importer_t *im, json_t *doc, uint64_t line)
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
        cp__error_prefix(&e, "line %llu: ", (unsigned long long)line);
        reject(im, line, &e);
        json_decref(doc);
        return CP_OK;
    }
    /* Derived ids (no messageId in the file): resuming handles reruns. */
    ingest_event_t *ev = &im->b.events[before];
    if (ev->message_id_derived)
        ev->no_dedup = 1;
    return im_push(im, doc, line) ? CP_ERR(im->err, CP_ENOMEM, "out of memory") : CP_OK;
}

/* Applies the batch and commits it with the position after it. */
static cp_status im_commit(importer_t *im, uint64_t offset, uint64_t line, int done)
{
    cp_db_t *db = im->db;
    cp_status rc;
    db_lock_wr(db);
    if ((rc = db_check(db, im->err))) {
        pthread_rwlock_unlock(&db->lock);
        return rc;
    }
    uint64_t counts[5] = {0};
    uint64_t beh0 = db->acc_stats.beh, attr0 = db->acc_stats.attr, meas0 = db->acc_stats.meas;
    store_txn_t *txn = NULL;
    if ((rc = store_txn_begin(db->st, 1, &txn, im->err))) {
        pthread_rwlock_unlock(&db->lock);
        return rc;
    }
    rc = intake_import_batch(db, txn, &im->b, im->lines, im->o.on_reject, im->o.ud, im->now_ms,
                             counts, im->err);
    if (rc == CP_OK) {
        json_t *pos = json_pack("{s:I,s:I,s:b,s:I}", "offset", (json_int_t)offset, "line",
                                (json_int_t)line, "done", done, "time", (json_int_t)cp_now_ms());
        char *s = pos ? json_dumps(pos, JSON_COMPACT) : NULL;
        json_decref(pos);
        rc = s ? store_put(txn, STORE_INTAKE, im->key, strlen(im->key), s, strlen(s), im->err)
               : CP_ERR(im->err, CP_ENOMEM, "out of memory");
        free(s);
    }
    if (rc)
        return db_write_fail(db, txn, rc, im->err); /* unlocks */
    /* A batch is a checkpoint: committed with fsync, position included. */
    db->data_changed = 1;
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
        static const char *const names[] = {NULL, "int", "enum", "string", "bool", "timestamp", "geo"};
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
        for (size_t k = 0; k < im->db->cfg.nindexed; k++)
            json_array_append_new(list, json_string(im->db->cfg.indexed[k]));
        pthread_rwlock_unlock(&im->db->lock);
        int added = 0;
        json_array_foreach(m->indexed, i, a)
        {
            size_t k;
            json_t *x;
            int have = 0;
            json_array_foreach(list, k, x) have |= json_equal(x, a);
            if (!have) {
                json_array_append(list, a);
                added = 1;
            }
        }
        rc = CP_OK;
        if (added) {
            json_t *cfg = json_pack("{s:o}", "indexed_properties", list);
            char *s = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
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
    csv_opts_t co = {.delim = m->delim};
    if ((rc = csv_open(path, &co, &r, im->err)))
        goto out;
    const csv_field_t *f;
    size_t n;
    uint64_t hdr_end = 0;
    if (m->header) {
        if ((rc = csv_next(r, &f, &n, im->err)))
            goto out;
        if (f == NULL) {
            rc = CP_ERR(im->err, CP_EINVAL, "%s is empty (no header)", path);
            goto out;
        }
        if ((rc = mapping_bind(m, f, n, im->err)))
            goto out;
        hdr_end = csv_offset(r);
    } else if ((rc = mapping_bind(m, NULL, 0, im->err))) {
        goto out;
    }
    if (off0 > hdr_end) {
        csv_close(r);
        r = NULL;
        if ((rc = csv_open(path, &co, &r, im->err)) || (rc = csv_seek(r, off0, line0, im->err)))
            goto out;
        im->st->resumed_at_line = line0;
    }
    im->so.allow_other_ids = 1;
    im->so.no_dedup = !m->has_msgid;
    uint64_t since = 0;
    for (;;) {
        cp_error_t e;
        acc_err_reset(&e);
        rc = csv_next(r, &f, &n, &e);
        if (rc == CP_EIO || rc == CP_ENOMEM) {
            if (im->err)
                *im->err = e;
            goto out;
        }
        if (rc) {
            im->st->lines++;
            reject(im, e.record, &e);
            rc = CP_OK;
            continue;
        }
        if (f == NULL)
            break;
        im->st->lines++;
        uint64_t line = csv_line(r);
        if (n == 1 && f[0].len == 0)
            continue; /* blank line */
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
        } else if ((rc = im_push(im, NULL, line))) {
            rc = CP_ERR(im->err, rc, "out of memory");
            goto out;
        }
        /* Long rows could fill the batch's arena (64 MiB) before
         * batch_lines: commit early instead. */
        if (im->n >= im->o.batch_lines || im->b.arena.total > (40u << 20)) {
            if ((rc = im_commit(im, csv_offset(r), line, 0)))
                goto out;
        }
        if (im->o.on_progress && ++since >= 20000) {
            since = 0;
            im->o.on_progress(im->o.ud, csv_raw_offset(r), im->st->lines);
        }
    }
    rc = im_commit(im, csv_offset(r), csv_line(r), 1);
    if (rc == CP_OK && im->o.on_progress)
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
    cp_buf_t line;
    cp_buf_init(&line, CP_LINE_MAX);
    char *chunk = malloc(65536);
    if (chunk == NULL) {
        gzclose(g);
        return CP_ERR(im->err, CP_ENOMEM, "out of memory");
    }
    uint64_t off = 0, lineno = 0;
    if (off0) {
        if (gzseek(g, (z_off_t)off0, SEEK_SET) != (z_off_t)off0) {
            rc = CP_ERR(im->err, CP_EIO, "cannot resume %s at byte %llu", path,
                        (unsigned long long)off0);
            goto out;
        }
        off = off0;
        lineno = line0;
        im->st->resumed_at_line = line0;
    }
    im->so.allow_other_ids = 0;
    im->so.no_dedup = 0;
    int too_long = 0;
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
        while (pos < (size_t)got || (eof && (line.len || too_long))) {
            const char *nl = eof ? NULL : memchr(chunk + pos, '\n', (size_t)got - pos);
            size_t take = eof ? 0 : nl ? (size_t)(nl - (chunk + pos)) : (size_t)got - pos;
            if (!too_long && take && cp_buf_append(&line, chunk + pos, take) != CP_OK) {
                too_long = 1;
                cp_buf_reset(&line);
            }
            pos += take;
            off += take;
            if (!nl && !eof)
                break;
            if (nl) {
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
                CP_ERR(&e, CP_ELIMIT, "line %llu: longer than %u bytes",
                       (unsigned long long)lineno, CP_LINE_MAX);
                reject(im, lineno, &e);
            } else if (len) {
                int blank = 1;
                for (size_t i = 0; i < len && blank; i++)
                    blank = line.data[i] == ' ' || line.data[i] == '\t';
                if (!blank) {
                    json_error_t je;
                    json_t *doc = json_loadb(line.data, len, JSON_REJECT_DUPLICATES, &je);
                    if (doc == NULL) {
                        CP_ERR(&e, CP_EINVAL, "line %llu: malformed JSON at column %d: %s",
                               (unsigned long long)lineno, je.column, je.text);
                        reject(im, lineno, &e);
                    } else if ((rc = im_event(im, doc, lineno))) {
                        goto out;
                    }
                }
            }
            cp_buf_reset(&line);
            too_long = 0;
            if (im->n >= im->o.batch_lines && (rc = im_commit(im, off, lineno, 0)))
                goto out;
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
    rc = im_commit(im, off, lineno, 1);
    if (rc == CP_OK && im->o.on_progress)
        im->o.on_progress(im->o.ud, im->st->file_bytes, im->st->lines);
out:
    free(chunk);
    cp_buf_free(&line);
    gzclose(g);
    return rc;
}

cp_status cp_import_file(cp_db_t *db, const char *path, const cp_import_options_t *opts,
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
    im.now_ms = cp_now_ms();
    stats->file_bytes = (uint64_t)sb.st_size;
    ingest_batch_init(&im.b);
    im.so.received_at_ms = im.now_ms;
    im.so.no_skew_correction = !db->cfg.skew_correction;
    if ((rc = file_id(path, (uint64_t)sb.st_size, im.key, sizeof im.key, err)))
        goto out;
    const char *base = strrchr(path, '/');
    snprintf(im.src, sizeof im.src, "import:%.40s:%.35s", base ? base + 1 : path, im.key + 4);
    /* Where a previous run of this file stopped. */
    uint64_t off0 = 0, line0 = 0;
    if (!(opts->flags & CP_IMPORT_RESTART)) {
        if ((rc = db_flush(db, err)))
            goto out;
        store_txn_t *t = NULL;
        if ((rc = store_txn_begin(db->st, 0, &t, err)))
            goto out;
        const void *v;
        size_t vl;
        rc = store_get(t, STORE_INTAKE, im.key, strlen(im.key), &v, &vl, err);
        if (rc == CP_OK) {
            json_t *j = json_loadb(v, vl, 0, NULL);
            off0 = (uint64_t)json_integer_value(json_object_get(j, "offset"));
            line0 = (uint64_t)json_integer_value(json_object_get(j, "line"));
            stats->already_done = json_is_true(json_object_get(j, "done"));
            json_decref(j);
        }
        store_txn_abort(t);
        if (rc && rc != CP_ENOTFOUND)
            goto out;
        rc = CP_OK;
        if (stats->already_done)
            goto out;
    }
    rc = opts->format == CP_IMPORT_CSV ? import_csv(&im, path, off0, line0)
                                       : import_ndjson(&im, path, off0, line0);
out:
    im_reset(&im);
    ingest_batch_free(&im.b);
    free(im.docs);
    free(im.lines);
    return rc;
}
