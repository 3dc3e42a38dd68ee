/*
 * users.c — every user write: upsert of one JSON user, NDJSON loads
 * (streamed or strict), the binary batch API, tag removal, deletion, and
 * the user JSON view.
 *
 * One path for all writers: a user is first *staged* (parsed and checked
 * against the schema and taxonomy into a compact record, nothing touched),
 * then *applied* to the index and the write transaction. A bad line
 * therefore never leaves a trace.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"
#include "model/codec.h"

/* ---------------------------------------------------------------- stage */

enum { SV_CLEAR = 1, SV_INT, SV_STR, SV_GEO };

typedef struct sv {
    uint32_t attr;
    uint8_t kind;
    int64_t i;
    double lat, lon;
    size_t soff;
    uint32_t slen;
} sv_t;

typedef struct su {
    size_t idoff;
    uint32_t idlen;
    size_t first_sv, nsv;
    size_t first_tag, ntags;
} su_t;

typedef struct stage {
    buf_t str; /* ids and string values */
    sv_t *svs;
    size_t nsv, capsv;
    uint32_t *tags;
    size_t ntag, captag;
    su_t *users;
    size_t nusers, capusers;
} stage_t;

#define STAGE_MAX_BYTES ((size_t)2 << 30)

static void stage_init(stage_t *s)
{
    memset(s, 0, sizeof *s);
    buf_init(&s->str, STAGE_MAX_BYTES);
}

static void stage_free(stage_t *s)
{
    buf_free(&s->str);
    free(s->svs);
    free(s->tags);
    free(s->users);
    memset(s, 0, sizeof *s);
}

static void stage_reset(stage_t *s)
{
    buf_reset(&s->str);
    s->nsv = s->ntag = s->nusers = 0;
}

/* A mark to roll a half-staged user back to. */
typedef struct stage_mark {
    size_t str, nsv, ntag, nusers;
} stage_mark_t;

static stage_mark_t stage_mark(const stage_t *s)
{
    return (stage_mark_t){s->str.len, s->nsv, s->ntag, s->nusers};
}

static void stage_rollback(stage_t *s, stage_mark_t m)
{
    s->str.len = m.str;
    s->nsv = m.nsv;
    s->ntag = m.ntag;
    s->nusers = m.nusers;
}

static cp_status stage_user(stage_t *s, const char *id, size_t len)
{
    if (arr_grow((void **)&s->users, &s->capusers, s->nusers + 1, sizeof *s->users, 64))
        return CP_ENOMEM;
    su_t *u = &s->users[s->nusers];
    u->idoff = s->str.len;
    u->idlen = (uint32_t)len;
    cp_status rc = buf_append(&s->str, id, len);
    if (rc)
        return rc;
    u->first_sv = s->nsv;
    u->nsv = 0;
    u->first_tag = s->ntag;
    u->ntags = 0;
    s->nusers++;
    return CP_OK;
}

static cp_status stage_sv(stage_t *s, const sv_t *v, const char *str, size_t slen)
{
    if (arr_grow((void **)&s->svs, &s->capsv, s->nsv + 1, sizeof *s->svs, 64))
        return CP_ENOMEM;
    sv_t *d = &s->svs[s->nsv];
    *d = *v;
    if (str) {
        d->soff = s->str.len;
        d->slen = (uint32_t)slen;
        cp_status rc = buf_append(&s->str, str, slen);
        if (rc)
            return rc;
    }
    s->nsv++;
    s->users[s->nusers - 1].nsv++;
    return CP_OK;
}

static cp_status stage_tag(stage_t *s, uint32_t tag)
{
    if (arr_grow((void **)&s->tags, &s->captag, s->ntag + 1, sizeof *s->tags, 64))
        return CP_ENOMEM;
    s->tags[s->ntag++] = tag;
    s->users[s->nusers - 1].ntags++;
    return CP_OK;
}

/* A JSON value as short text for error messages. */
static void value_text(const json_t *v, char *buf, size_t cap)
{
    char *s = json_dumps_checked(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s == NULL) {
        snprintf(buf, cap, "(value)");
        return;
    }
    if (strlen(s) > 64)
        snprintf(buf, cap, "%.60s...", s);
    else
        snprintf(buf, cap, "%s", s);
    free(s);
}

static cp_status type_err(cp_error_t *err, const char *uid, const schema_attr_t *a, const json_t *v,
                          const char *expects)
{
    char t[80];
    value_text(v, t, sizeof t);
    return CP_ERR(err, CP_ETYPE, "user \"%s\": attribute \"%s\" expects %s, got %s", uid, a->name,
                  expects, t);
}

/* Checks one attribute value and stages it. */
static cp_status stage_attr(stage_t *s, const schema_attr_t *a, const json_t *v, const char *uid,
                            cp_error_t *err)
{
    sv_t sv = {0};
    sv.attr = a->id;
    if (json_is_null(v)) {
        sv.kind = SV_CLEAR;
        return stage_sv(s, &sv, NULL, 0) ? CP_ERR(err, CP_ENOMEM, "out of memory") : CP_OK;
    }
    const char *str = NULL;
    size_t slen = 0;
    switch (a->type) {
    case CP_ATTR_INT:
        /* Strict: only JSON integers (no 3.0, no "3"). */
        if (!json_is_integer(v))
            return type_err(err, uid, a, v, "int");
        sv.kind = SV_INT;
        sv.i = json_integer_value(v);
        break;
    case CP_ATTR_TIMESTAMP:
        if (json_is_integer(v)) {
            sv.i = json_integer_value(v);
        } else if (!json_is_string(v) ||
                   time_parse(json_string_value(v), json_string_length(v), &sv.i) != 0) {
            return type_err(err, uid, a, v,
                            "a timestamp (ISO 8601 such as \"2024-01-01T10:20:30Z\", or epoch "
                            "seconds)");
        }
        sv.kind = SV_INT;
        break;
    case CP_ATTR_BOOL:
        if (!json_is_boolean(v))
            return type_err(err, uid, a, v, "bool (true or false)");
        sv.kind = SV_STR;
        str = json_is_true(v) ? "true" : "false";
        slen = strlen(str);
        break;
    case CP_ATTR_ENUM:
    case CP_ATTR_STRING:
        if (!json_is_string(v))
            return type_err(err, uid, a, v,
                            a->type == CP_ATTR_ENUM ? "an enum string" : "a string");
        str = json_string_value(v);
        slen = json_string_length(v);
        if (slen > SCHEMA_MAX_VALUE)
            return CP_ERR(err, CP_ELIMIT,
                          "user \"%s\": attribute \"%s\": value longer than %d bytes", uid, a->name,
                          SCHEMA_MAX_VALUE);
        if (memchr(str, '\0', slen))
            return CP_ERR(err, CP_EINVAL, "user \"%s\": attribute \"%s\": value contains NUL", uid,
                          a->name);
        if (schema_value_find(a, str, slen) == 0) {
            uint32_t max =
                a->type == CP_ATTR_STRING ? SCHEMA_MAX_STRING_VALUES : SCHEMA_MAX_ENUM_VALUES;
            if (a->nvalues >= max)
                return CP_ERR(err, CP_ELIMIT,
                              "user \"%s\": attribute \"%s\" has too many distinct values "
                              "(limit %u)",
                              uid, a->name, max);
        }
        sv.kind = SV_STR;
        break;
    case CP_ATTR_GEO: {
        json_t *la = json_array_get(v, 0), *lo = json_array_get(v, 1);
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_number(la) ||
            !json_is_number(lo))
            return type_err(err, uid, a, v, "[lat, lon]");
        sv.lat = json_number_value(la);
        sv.lon = json_number_value(lo);
        if (!(sv.lat >= -90 && sv.lat <= 90 && sv.lon >= -180 && sv.lon <= 180))
            return type_err(err, uid, a, v, "[lat, lon] with -90 <= lat <= 90, -180 <= lon <= 180");
        sv.kind = SV_GEO;
        break;
    }
    }
    if (stage_sv(s, &sv, str, slen))
        return CP_ERR(err, CP_ENOMEM, "out of memory staging user \"%s\"", uid);
    return CP_OK;
}

/*
 * Parses and checks one JSON user into the stage. On failure the stage is
 * exactly as before and err names the user, attribute and value.
 * The caller holds the database lock (reads schema and taxonomy).
 */
static cp_status stage_json(cp_db_t *db, stage_t *s, const char *text, size_t len, cp_error_t *err)
{
    stage_mark_t mark = stage_mark(s);
    json_error_t je;
    cp_status rc = CP_OK;
    if (len > CP_LINE_MAX)
        return CP_ERR(err, CP_ELIMIT, "user record longer than %u bytes", CP_LINE_MAX);
    json_t *j = json_loadb_checked(text, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading the user document");
    if (j == NULL)
        return CP_ERR(err, CP_EINVAL, "invalid JSON at column %d: %s", je.column, je.text);
    if (!json_is_object(j)) {
        rc = CP_ERR(err, CP_EINVAL, "expected a JSON object, got %s", json_kind(j));
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        if (strcmp(k, "id") && strcmp(k, "attrs") && strcmp(k, "tags")) {
            rc = CP_ERR(err, CP_EINVAL, "unknown field \"%.64s\" (expected id, attrs, tags)",
                        utf8_valid(k, strlen(k)) ? k : "?");
            goto out;
        }
    }
    json_t *jid = json_object_get(j, "id");
    if (jid == NULL) {
        rc = CP_ERR(err, CP_EINVAL, "missing \"id\"");
        goto out;
    }
    if (!json_is_string(jid)) {
        rc = CP_ERR(err, CP_EINVAL, "\"id\" must be a string, got %s", json_kind(jid));
        goto out;
    }
    const char *uid = json_string_value(jid);
    size_t uidlen = json_string_length(jid);
    if ((rc = users_validate_id(uid, uidlen, err)) || memchr(uid, '\0', uidlen)) {
        if (rc == CP_OK)
            rc = CP_ERR(err, CP_EINVAL, "user id contains NUL");
        goto out;
    }
    if (stage_user(s, uid, uidlen)) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory staging user \"%s\"", uid);
        goto out;
    }
    json_t *attrs = json_object_get(j, "attrs");
    if (attrs && !json_is_null(attrs)) {
        if (!json_is_object(attrs)) {
            rc = CP_ERR(err, CP_EINVAL, "user \"%s\": \"attrs\" must be an object, got %s", uid,
                        json_kind(attrs));
            goto out;
        }
        json_object_foreach(attrs, k, v)
        {
            const schema_attr_t *a = schema_find(&db->sch, k, strlen(k));
            if (a == NULL) {
                rc = CP_ERR(err, CP_ENOTFOUND, "user \"%s\": unknown attribute \"%.64s\"", uid,
                            utf8_valid(k, strlen(k)) ? k : "?");
                goto out;
            }
            if ((rc = stage_attr(s, a, v, uid, err)))
                goto out;
        }
    }
    json_t *tags = json_object_get(j, "tags");
    if (tags && !json_is_null(tags)) {
        if (!json_is_array(tags)) {
            rc = CP_ERR(err, CP_EINVAL, "user \"%s\": \"tags\" must be an array of tag paths", uid);
            goto out;
        }
        if (json_array_size(tags) > CP_USER_MAX_TAGS) {
            rc = CP_ERR(err, CP_ELIMIT, "user \"%s\": more than %d tags in one record", uid,
                        CP_USER_MAX_TAGS);
            goto out;
        }
        size_t i;
        json_array_foreach(tags, i, v)
        {
            if (!json_is_string(v)) {
                char t[80];
                value_text(v, t, sizeof t);
                rc = CP_ERR(err, CP_EINVAL, "user \"%s\": tags[%zu] must be a tag path, got %s",
                            uid, i, t);
                goto out;
            }
            uint32_t id = tax_find(&db->tax, json_string_value(v), json_string_length(v));
            if (id == 0) {
                char t[80];
                value_text(v, t, sizeof t);
                rc = CP_ERR(err, CP_ENOTFOUND, "user \"%s\": unknown tag %s", uid, t);
                goto out;
            }
            if (stage_tag(s, id)) {
                rc = CP_ERR(err, CP_ENOMEM, "out of memory staging user \"%s\"", uid);
                goto out;
            }
        }
    }
out:
    if (rc)
        stage_rollback(s, mark);
    json_decref(j);
    return rc;
}

/* ---------------------------------------------------------------- apply */

typedef struct apply_stats {
    uint64_t created, updated, tags;
} apply_stats_t;

/* Applies staged user i. Any failure here is after memory changed. */
static cp_status apply_user(cp_db_t *db, store_txn_t *txn, const stage_t *s, size_t i,
                            apply_stats_t *as, cp_error_t *err)
{
    const su_t *u = &s->users[i];
    const char *id = s->str.data + u->idoff;
    uint32_t ord;
    cp_status rc = db_user_lookup(txn, id, u->idlen, &ord, err);
    if (rc == CP_ENOTFOUND) {
        if (db->next_ordinal > USERS_MAX_ORDINAL)
            return CP_ERR(err, CP_ELIMIT, "no user ordinals left");
        ord = db->next_ordinal++;
        if ((rc = users_add(txn, id, u->idlen, ord, err)))
            return rc;
        index_user_add(db->ix, ord);
        as->created++;
    } else if (rc) {
        return rc;
    } else {
        as->updated++;
    }
    for (size_t k = 0; k < u->nsv; k++) {
        const sv_t *v = &s->svs[u->first_sv + k];
        switch (v->kind) {
        case SV_CLEAR:
            index_clear(db->ix, v->attr, ord);
            break;
        case SV_INT:
            rc = index_set_int(db->ix, v->attr, ord, v->i);
            break;
        case SV_GEO:
            rc = index_set_geo(db->ix, v->attr, ord, v->lat, v->lon);
            break;
        case SV_STR: {
            schema_attr_t *a = schema_get(&db->sch, v->attr);
            uint32_t vid;
            if ((rc = schema_value_intern(a, txn, s->str.data + v->soff, v->slen, &vid, err)))
                return rc;
            rc = index_set_value(db->ix, v->attr, ord, vid);
            break;
        }
        }
        if (rc)
            return CP_ERR(err, rc, "applying user \"%.*s\": %s", (int)u->idlen, id,
                          cp_strerror(rc));
    }
    for (size_t k = 0; k < u->ntags; k++)
        as->tags += (uint64_t)index_tag_assign(db->ix, &db->tax, ord, s->tags[u->first_tag + k]);
    return CP_OK;
}

cp_status cp_user_upsert_json(cp_db_t *db, const char *json, size_t len, cp_error_t *err)
{
    if (json == NULL)
        return CP_ERR(err, CP_EINVAL, "no JSON given");
    stage_t s;
    stage_init(&s);
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        goto out;
    if ((rc = stage_json(db, &s, json, len, err))) {
        db_write_abort(db, txn);
        goto out;
    }
    apply_stats_t as = {0};
    if ((rc = apply_user(db, txn, &s, 0, &as, err))) {
        rc = db_write_fail(db, txn, rc, err);
        goto out;
    }
    rc = db_write_end(db, txn, err);
out:
    stage_free(&s);
    return rc;
}

/* ----------------------------------------------------------------- loads */

typedef struct loader {
    cp_db_t *db;
    cp_load_options_t o;
    cp_load_stats_t st;
    cp_error_t *err;
    int strict;
    store_txn_t *txn; /* open write (lock held) */
    uint64_t batch_lines, in_batch;
    stage_t stage;
    apply_stats_t as;
} loader_t;

static int is_blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

static cp_status ld_commit(loader_t *ld)
{
    if (ld->txn == NULL)
        return CP_OK;
    store_txn_t *txn = ld->txn;
    ld->txn = NULL;
    ld->in_batch = 0;
    cp_status rc = db_write_end(ld->db, txn, ld->err);
    if (rc == CP_OK) {
        ld->st.users_created += ld->as.created;
        ld->st.users_updated += ld->as.updated;
        ld->st.tags_assigned += ld->as.tags;
    }
    memset(&ld->as, 0, sizeof ld->as);
    if (rc == CP_OK && ld->o.on_progress)
        ld->o.on_progress(ld->o.ud, ld->st.bytes, ld->st.lines);
    return rc;
}

/* One input line (without its newline). `consumed` counts the newline. */
static cp_status ld_line(loader_t *ld, const char *line, size_t len, size_t consumed, int too_long)
{
    ld->st.lines++;
    ld->st.bytes += consumed;
    uint64_t lineno = ld->st.lines;
    if (!too_long && is_blank(line, len))
        return CP_OK;
    cp_status rc;
    if (ld->txn == NULL && (rc = db_write_begin(ld->db, &ld->txn, ld->err)))
        return rc;
    cp_error_t le = {0};
    if (too_long)
        rc = CP_ERR(&le, CP_ELIMIT, "line longer than %u bytes", CP_LINE_MAX);
    else
        rc = stage_json(ld->db, &ld->stage, line, len, &le);
    if (rc) {
        error_prefix(&le, "line %llu: ", (unsigned long long)lineno);
        le.record = lineno;
        if (rc == CP_ENOMEM || ld->strict) {
            if (ld->err) {
                *ld->err = le;
                ld->err->code = rc;
            }
            ld->st.rejected++;
            return rc;
        }
        ld->st.rejected++;
        if (ld->o.on_reject)
            ld->o.on_reject(ld->o.ud, &le);
    } else if (!ld->strict) {
        rc = apply_user(ld->db, ld->txn, &ld->stage, 0, &ld->as, ld->err);
        stage_reset(&ld->stage);
        if (rc) {
            store_txn_t *t = ld->txn;
            ld->txn = NULL;
            return db_write_fail(ld->db, t, rc, ld->err);
        }
    }
    if (!ld->strict && ++ld->in_batch >= ld->batch_lines)
        return ld_commit(ld);
    return CP_OK;
}

/* Starts a load, for both entry points: checks and zeroes the caller's
 * stats, refuses a missing input (`noinput` names it; NULL when the input
 * is there) and a read-only handle, and reads the options. */
static cp_status ld_init(loader_t *ld, cp_db_t *db, const cp_load_options_t *opts,
                         cp_load_stats_t *stats, const char *noinput, cp_error_t *err)
{
    memset(ld, 0, sizeof *ld);
    ld->db = db;
    cp_status rc;
    if (stats) {
        cp_load_stats_t zero = {0};
        if ((rc = sized_out_check(stats, CP_SIZE_THROUGH(cp_load_stats_t, bytes), "cp_load_stats_t",
                                  err)))
            return rc;
        sized_out(stats, &zero, sizeof zero);
    }
    if (noinput)
        return CP_ERR(err, CP_EINVAL, "%s", noinput);
    if ((rc = db_check(db, err)))
        return rc;
    if (db->readonly)
        return CP_ERR(err, CP_EREADONLY, "data directory %s is open read-only", store_dir(db->st));
    if (opts &&
        (rc = sized_in(&ld->o, sizeof ld->o, opts, CP_SIZE_THROUGH(cp_load_options_t, batch_lines),
                       "cp_load_options_t", err)))
        return rc;
    ld->err = err;
    ld->strict = (ld->o.flags & CP_LOAD_STRICT) != 0;
    ld->batch_lines = ld->o.batch_lines ? ld->o.batch_lines : CP_DEFAULT_BATCH_LINES;
    stage_init(&ld->stage);
    return CP_OK;
}

/* Ends a load: in strict mode applies everything staged; commits. */
static cp_status ld_finish(loader_t *ld, cp_status rc, cp_load_stats_t *stats)
{
    if (rc == CP_OK && ld->strict && ld->txn) {
        for (size_t i = 0; i < ld->stage.nusers && rc == CP_OK; i++)
            rc = apply_user(ld->db, ld->txn, &ld->stage, i, &ld->as, ld->err);
        if (rc) {
            store_txn_t *t = ld->txn;
            ld->txn = NULL;
            rc = db_write_fail(ld->db, t, rc, ld->err);
        }
    }
    if (rc == CP_OK)
        rc = ld_commit(ld);
    if (ld->txn) {
        /* Failed before applying anything of this batch? Strict loads
         * never apply before the end; non-strict batches applied lines. */
        store_txn_t *t = ld->txn;
        ld->txn = NULL;
        if (ld->strict || ld->as.created + ld->as.updated == 0)
            db_write_abort(ld->db, t);
        else
            db_write_fail(ld->db, t, rc, ld->err);
    }
    if (ld->strict && rc != CP_OK) {
        ld->st.users_created = ld->st.users_updated = ld->st.tags_assigned = 0;
    }
    stage_free(&ld->stage);
    if (stats)
        sized_out(stats, &ld->st, sizeof ld->st);
    return rc;
}

cp_status cp_load_ndjson_buf(cp_db_t *db, const char *buf, size_t len,
                             const cp_load_options_t *opts, cp_load_stats_t *stats, cp_error_t *err)
{
    loader_t ld;
    cp_status rc =
        ld_init(&ld, db, opts, stats, buf == NULL && len ? "no buffer given" : NULL, err);
    if (rc)
        return rc;
    size_t pos = 0;
    while (rc == CP_OK && pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len;
        size_t n = end - pos;
        size_t consumed = n + (nl ? 1 : 0);
        size_t content = n;
        if (content && buf[pos + content - 1] == '\r')
            content--;
        rc = ld_line(&ld, buf + pos, content, consumed, content > CP_LINE_MAX);
        pos += consumed;
    }
    return ld_finish(&ld, rc, stats);
}

cp_status cp_load_ndjson(cp_db_t *db, FILE *in, const cp_load_options_t *opts,
                         cp_load_stats_t *stats, cp_error_t *err)
{
    loader_t ld;
    cp_status rc = ld_init(&ld, db, opts, stats, in == NULL ? "no input stream given" : NULL, err);
    if (rc)
        return rc;
    buf_t line;
    buf_init(&line, CP_LINE_MAX);
    char *chunk = malloc(65536);
    if (chunk == NULL) {
        buf_free(&line);
        return ld_finish(&ld, CP_ERR(err, CP_ENOMEM, "out of memory"), stats);
    }
    int too_long = 0;
    size_t raw = 0; /* bytes of the current line including overflow */
    size_t got;
    while (rc == CP_OK && (got = fread(chunk, 1, 65536, in)) > 0) {
        size_t pos = 0;
        while (rc == CP_OK && pos < got) {
            const char *nl = memchr(chunk + pos, '\n', got - pos);
            size_t n = nl ? (size_t)(nl - (chunk + pos)) : got - pos;
            raw += n;
            if (!too_long && buf_append(&line, chunk + pos, n) != CP_OK) {
                /* Over the limit (or no memory): skip to the newline. */
                too_long = 1;
                buf_reset(&line);
            }
            pos += n;
            if (nl) {
                size_t content = line.len;
                if (content && line.data[content - 1] == '\r')
                    content--;
                rc = ld_line(&ld, line.data ? line.data : "", content, raw + 1, too_long);
                buf_reset(&line);
                too_long = 0;
                raw = 0;
                pos++;
            }
        }
    }
    if (rc == CP_OK && ferror(in))
        rc = CP_ERR(err, CP_EIO, "reading the input failed after line %llu",
                    (unsigned long long)ld.st.lines);
    if (rc == CP_OK && (line.len || too_long)) {
        size_t content = line.len;
        if (content && line.data[content - 1] == '\r')
            content--;
        rc = ld_line(&ld, line.data ? line.data : "", content, raw, too_long);
    }
    free(chunk);
    buf_free(&line);
    return ld_finish(&ld, rc, stats);
}

/* ----------------------------------------------------------------- batch */

struct cp_batch {
    cp_db_t *db;
    stage_t stage;
};

cp_status cp_batch_begin(cp_db_t *db, cp_batch_t **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_check(db, err);
    if (rc)
        return rc;
    if (db->readonly)
        return CP_ERR(err, CP_EREADONLY, "data directory %s is open read-only", store_dir(db->st));
    cp_batch_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    b->db = db;
    stage_init(&b->stage);
    *out = b;
    return CP_OK;
}

void cp_batch_abort(cp_batch_t *b)
{
    if (b == NULL)
        return;
    stage_free(&b->stage);
    free(b);
}

cp_status cp_batch_user(cp_batch_t *b, const char *id, cp_error_t *err)
{
    if (b == NULL || id == NULL)
        return CP_ERR(err, CP_EINVAL, "batch or id is NULL");
    size_t len = strnlen(id, USERS_MAX_ID + 1);
    cp_status rc = users_validate_id(id, len, err);
    if (rc)
        return rc;
    if (stage_user(&b->stage, id, len))
        return CP_ERR(err, CP_ENOMEM, "out of memory (batch too large?)");
    return CP_OK;
}

cp_status cp_batch_tag(cp_batch_t *b, int32_t tag_handle, cp_error_t *err)
{
    if (b == NULL || b->stage.nusers == 0)
        return CP_ERR(err, CP_EINVAL, "cp_batch_tag before cp_batch_user");
    cp_status rc = db_read_begin(b->db, err);
    if (rc)
        return rc;
    int ok = tag_handle > 0 && tax_get(&b->db->tax, (uint32_t)tag_handle) != NULL;
    db_read_end(b->db);
    if (!ok)
        return CP_ERR(err, CP_ENOTFOUND, "no tag with handle %d", (int)tag_handle);
    if (b->stage.users[b->stage.nusers - 1].ntags >= CP_USER_MAX_TAGS * 16u)
        return CP_ERR(err, CP_ELIMIT, "too many tags for one user");
    return stage_tag(&b->stage, (uint32_t)tag_handle) ? CP_ERR(err, CP_ENOMEM, "out of memory")
                                                      : CP_OK;
}

/* Looks an attribute handle up under the read lock and checks its type. */
static cp_status batch_attr(cp_batch_t *b, int32_t h, cp_attr_type want1, cp_attr_type want2,
                            const char *what, cp_attr_type *type, cp_error_t *err)
{
    if (b == NULL || b->stage.nusers == 0)
        return CP_ERR(err, CP_EINVAL, "attribute value before cp_batch_user");
    cp_status rc = db_read_begin(b->db, err);
    if (rc)
        return rc;
    const schema_attr_t *a = h > 0 ? schema_get(&b->db->sch, (uint32_t)h) : NULL;
    cp_attr_type t = a ? a->type : (cp_attr_type)0;
    char name[SCHEMA_MAX_NAME + 1] = "";
    if (a)
        snprintf(name, sizeof name, "%s", a->name);
    db_read_end(b->db);
    if (a == NULL)
        return CP_ERR(err, CP_ENOTFOUND, "no attribute with handle %d", (int)h);
    if (t != want1 && t != want2)
        return CP_ERR(err, CP_ETYPE, "attribute \"%s\" is %s, not %s", name, cp_attr_type_name(t),
                      what);
    *type = t;
    return CP_OK;
}

cp_status cp_batch_int(cp_batch_t *b, int32_t h, int64_t v, cp_error_t *err)
{
    cp_attr_type t;
    cp_status rc = batch_attr(b, h, CP_ATTR_INT, CP_ATTR_TIMESTAMP, "an int", &t, err);
    if (rc)
        return rc;
    sv_t sv = {.attr = (uint32_t)h, .kind = SV_INT, .i = v};
    return stage_sv(&b->stage, &sv, NULL, 0) ? CP_ERR(err, CP_ENOMEM, "out of memory") : CP_OK;
}

cp_status cp_batch_str(cp_batch_t *b, int32_t h, const char *v, cp_error_t *err)
{
    cp_attr_type t;
    if (v == NULL)
        return CP_ERR(err, CP_EINVAL, "value is NULL");
    cp_status rc = batch_attr(b, h, CP_ATTR_ENUM, CP_ATTR_STRING, "a string", &t, err);
    if (rc == CP_ETYPE) {
        /* Timestamps as text are strings too. */
        int64_t secs;
        cp_attr_type t2;
        if (batch_attr(b, h, CP_ATTR_TIMESTAMP, CP_ATTR_TIMESTAMP, "", &t2, NULL) == CP_OK) {
            if (time_parse(v, strlen(v), &secs) != 0)
                return CP_ERR(err, CP_ETYPE, "\"%.64s\" is not an ISO 8601 timestamp", v);
            return cp_batch_int(b, h, secs, err);
        }
    }
    if (rc)
        return rc;
    size_t len = strnlen(v, SCHEMA_MAX_VALUE + 1);
    if (len > SCHEMA_MAX_VALUE)
        return CP_ERR(err, CP_ELIMIT, "value longer than %d bytes", SCHEMA_MAX_VALUE);
    if (!utf8_valid(v, len))
        return CP_ERR(err, CP_EINVAL, "value is not valid UTF-8");
    sv_t sv = {.attr = (uint32_t)h, .kind = SV_STR};
    return stage_sv(&b->stage, &sv, v, len) ? CP_ERR(err, CP_ENOMEM, "out of memory") : CP_OK;
}

cp_status cp_batch_bool(cp_batch_t *b, int32_t h, int v, cp_error_t *err)
{
    cp_attr_type t;
    cp_status rc = batch_attr(b, h, CP_ATTR_BOOL, CP_ATTR_BOOL, "a bool", &t, err);
    if (rc)
        return rc;
    sv_t sv = {.attr = (uint32_t)h, .kind = SV_STR};
    const char *s = v ? "true" : "false";
    return stage_sv(&b->stage, &sv, s, strlen(s)) ? CP_ERR(err, CP_ENOMEM, "out of memory") : CP_OK;
}

cp_status cp_batch_geo(cp_batch_t *b, int32_t h, double lat, double lon, cp_error_t *err)
{
    cp_attr_type t;
    cp_status rc = batch_attr(b, h, CP_ATTR_GEO, CP_ATTR_GEO, "a geo point", &t, err);
    if (rc)
        return rc;
    if (!(lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180))
        return CP_ERR(err, CP_EINVAL, "point (%g, %g) is out of range", lat, lon);
    sv_t sv = {.attr = (uint32_t)h, .kind = SV_GEO, .lat = lat, .lon = lon};
    return stage_sv(&b->stage, &sv, NULL, 0) ? CP_ERR(err, CP_ENOMEM, "out of memory") : CP_OK;
}

cp_status cp_batch_commit(cp_batch_t *b, cp_error_t *err)
{
    if (b == NULL)
        return CP_ERR(err, CP_EINVAL, "batch is NULL");
    cp_db_t *db = b->db;
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        goto out;
    /* Tags may have been deleted since they were added to the batch. */
    for (size_t i = 0; i < b->stage.ntag; i++)
        if (tax_get(&db->tax, b->stage.tags[i]) == NULL) {
            rc = CP_ERR(err, CP_ENOTFOUND, "tag handle %u was deleted during the batch",
                        b->stage.tags[i]);
            db_write_abort(db, txn);
            goto out;
        }
    apply_stats_t as = {0};
    for (size_t i = 0; i < b->stage.nusers && rc == CP_OK; i++)
        rc = apply_user(db, txn, &b->stage, i, &as, err);
    if (rc) {
        rc = db_write_fail(db, txn, rc, err);
        goto out;
    }
    rc = db_write_end(db, txn, err);
out:
    cp_batch_abort(b);
    return rc;
}

/* ------------------------------------------------------- other user ops */

/* A user by its id, or else by the identifier user_id:<id>: the id a CRM
 * sends (crm-200) names a user whose dictionary id may be another
 * identifier of the same person (an anonymous id seen first), as whois
 * finds it. */
static cp_status user_find(cp_db_t *db, store_txn_t *txn, const char *id, uint32_t *ord,
                           cp_error_t *err)
{
    cp_status rc = db_user_lookup(txn, id, strlen(id), ord, err);
    if (rc != CP_ENOTFOUND)
        return rc;
    char key[IDENT_MAX_KEY + 1];
    size_t kl = 0;
    if (ident_key(&db->idc, "user_id", 7, id, strlen(id), key, &kl, NULL) == CP_OK)
        rc = identity_lookup(txn, key, kl, ord, NULL);
    if (rc == CP_ENOTFOUND)
        rc = CP_ERR(err, CP_ENOTFOUND, "user \"%.256s\" not found", id);
    return rc;
}

cp_status cp_user_remove_tags(cp_db_t *db, const char *id, const char *const *paths, size_t n,
                              cp_error_t *err)
{
    if (id == NULL || (paths == NULL && n))
        return CP_ERR(err, CP_EINVAL, "id or paths is NULL");
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    uint32_t ord;
    rc = user_find(db, txn, id, &ord, err);
    for (size_t i = 0; rc == CP_OK && i < n; i++)
        if (paths[i] == NULL || tax_find(&db->tax, paths[i], strlen(paths[i])) == 0)
            rc = CP_ERR(err, CP_ENOTFOUND, "tag \"%.512s\" not found",
                        paths[i] ? paths[i] : "(null)");
    if (rc) {
        db_write_abort(db, txn);
        return rc;
    }
    /* Removing a tag removes the user from it: its descendants too, since
     * a member of interest/beauty/makeup is a member of interest/beauty. */
    for (size_t i = 0; i < n; i++) {
        uint32_t *sub = NULL;
        size_t nsub = 0;
        if (tax_subtree(&db->tax, tax_find(&db->tax, paths[i], strlen(paths[i])), &sub, &nsub)) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory removing tags of user \"%.256s\"", id);
            break;
        }
        for (size_t k = 0; k < nsub; k++)
            (void)index_tag_unassign(db->ix, &db->tax, ord, sub[k]);
        free(sub);
    }
    if (rc)
        return db_write_fail(db, txn, rc, err);
    return db_write_end(db, txn, err);
}

cp_status cp_user_json(cp_db_t *db, const char *id, char **out, cp_error_t *err)
{
    if (id == NULL || out == NULL)
        return CP_ERR(err, CP_EINVAL, "id or out is NULL");
    *out = NULL;
    cp_status rc = db_flush(db, err);
    if (rc || (rc = db_read_begin(db, err)))
        return rc;
    store_txn_t *txn = NULL;
    json_t *o = NULL;
    uint32_t ord;
    if ((rc = store_txn_begin(db->st, 0, &txn, err)))
        goto out;
    if ((rc = user_find(db, txn, id, &ord, err)))
        goto out;
    /* The dictionary id, which differs from `id` when found by user_id. */
    const char *uid = NULL;
    size_t uidl = 0;
    if (users_id_of(txn, ord, &uid, &uidl, NULL) != CP_OK || uid == NULL) {
        uid = id;
        uidl = strlen(id);
    }
    json_t *attrs = json_object(), *tags = json_array(), *crowds = json_array();
    o = json_pack("{s:s%,s:I,s:o*,s:o*,s:o*}", "id", uid, uidl, "ordinal", (json_int_t)ord, "attrs",
                  attrs, "tags", tags, "crowds", crowds);
    if (o == NULL || !attrs || !tags || !crowds) {
        json_decref(o);
        o = NULL;
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if (user_view_fill(db, ord, 1, attrs, tags, crowds))
        rc = CP_ERR(err, CP_ENOMEM, "out of memory building user \"%s\"", id);
out:
    store_txn_abort(txn);
    db_read_end(db);
    if (rc) {
        json_decref(o);
        return rc;
    }
    return db_json_out(o, out, err);
}
