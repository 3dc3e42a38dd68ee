/* mapping_event.c — one CSV row straight into a typed event
 * (mapping_row_event, mapping.h): the row converted by mapping_row.c, then
 * checked by the same rules as a Segment event (rules.h), then copied into
 * the batch's arena in one block. No JSON is built unless the event may be
 * over the size limit. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"
#include "ingest/mapping.h"
#include "ingest/rules.h"
#include "util/text.h"
#include "util/util.h"

/* A rule's message for the row at `line` ("line 7: ..."), as mapping_row
 * and segment_parse_event together would give it. */
static cp_status at_line(cp_status rc, uint64_t line, cp_error_t *err)
{
    if (rc)
        error_prefix(err, "line %llu: ", (unsigned long long)line);
    return rc;
}

/* A printf-formatted rejection of the row at `line`. */
static cp_status row_err(cp_error_t *err, cp_status code, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static cp_status row_err(cp_error_t *err, cp_status code, uint64_t line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return CP_ERR(err, code, "line %llu: %s", (unsigned long long)line, msg);
}

/*
 * Identifier v of the row (found at `field`) through the rules (rules.h),
 * added to e->ids as `type` when they take it. `buf` (INGEST_ID_MAX + 1
 * bytes) holds its text when the value is not already text in the row: an
 * integer, or a lower-cased cell. *used (may be NULL): added.
 */
static cp_status row_ident(ingest_batch_t *b, ingest_event_t *e, const rval_t *v,
                           rule_id_where where, const char *field, const char *type, size_t tlen,
                           const char *idfield, char *buf, int *used, uint64_t line,
                           cp_error_t *err)
{
    static const char *const kinds[] = {"null", "a string", "an integer", "a number", "a boolean"};
    const char *s = NULL, *not_text = NULL;
    size_t len = 0;
    int use = 0;
    if (used)
        *used = 0;
    if (v->kind == PV_NONE)
        return CP_OK; /* an empty cell: no identifier */
    if (v->kind == PV_INT) {
        len = maprow_fmt_i64(v->i, buf);
        s = buf;
    } else if (v->kind == PV_STR) {
        s = maprow_str(v);
        len = v->slen;
    } else {
        not_text = kinds[v->kind];
    }
    /* lower-casing keeps the length and the control bytes as they are */
    cp_status rc = rule_id_value(b, e->index, where, field, s, len, not_text, v->print, &use, err);
    if (rc || !use)
        return at_line(rc, line, err);
    if (v->kind == PV_STR && v->gen == G_LOWER) {
        for (size_t i = 0; i < len; i++) /* len <= INGEST_ID_MAX: the rules said so */
            buf[i] = (char)text_lower((unsigned char)s[i]);
        s = buf;
    }
    if (used)
        *used = 1;
    /* e->ids is the row's buffer until the event is copied into the arena */
    return at_line(
        rule_id_add((ingest_ident_t *)e->ids, &e->nids, type, tlen, s, len, idfield, err), line,
        err);
}

/* Upper bound of the compact JSON text of a value / a key. */
static size_t rv_bound(const rval_t *v)
{
    switch (v->kind) {
    case PV_STR:
        return 2 + 6 * v->slen; /* every byte escaped as \u00XX at worst */
    case PV_INT:
        return 20;
    case PV_REAL:
        return 32; /* "%.17g" is at most 24 */
    default:
        return 5;
    }
}

static size_t row_bound(const row_t *r)
{
    size_t b = 256; /* braces, "type", "traits", "properties", "context", "timestamp" */
    b += 16 + rv_bound(&r->uid) + 16 + rv_bound(&r->anon);
    b += 12 + 6 * r->evlen + 16 + 6 * r->msgid_len;
    for (size_t i = 0; i < r->ntv; i++)
        b += 4 + 6 * r->tv[i].d->nlen + rv_bound(&r->tv[i]);
    for (size_t i = 0; i < r->npv; i++)
        b += 4 + 6 * r->pv[i].d->nlen + rv_bound(&r->pv[i]);
    return b;
}

/* An upper bound of row_bound: m->bound_fixed covers everything but the
 * strings' bytes (assign_keys); strs are those of the traits and
 * properties. */
static size_t quick_bound(const mapping_t *m, const row_t *r, size_t strs)
{
    /* strs counts a NUL per string: more than needed, still a bound */
    size_t sb = r->evlen + r->msgid_len + strs;
    if (r->uid.kind == PV_STR)
        sb += r->uid.slen;
    if (r->anon.kind == PV_STR)
        sb += r->anon.slen;
    return m->bound_fixed + 6 * sb;
}

static int trait_is_ident(const segment_opts_t *o, const map_field_t *d)
{
    if (o->id_types.names == NULL)
        return d->builtin_ident;
    return ingest_trait_is_ident(&o->id_types, d->name);
}

/* Copies n bytes (lower-cased if asked) into the arena block at *p. */
static const char *put(char **p, const char *s, size_t n, int lower)
{
    char *d = *p;
    if (lower)
        for (size_t i = 0; i < n; i++)
            d[i] = (char)text_lower((unsigned char)s[i]);
    else if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    *p = d + n + 1;
    return d;
}

/*
 * The record block: when the row's fields lie one after the other, each
 * NUL-terminated (as csv_next returns them), untransformed string values
 * are NUL-terminated texts inside it, and one copy of the block into the
 * arena replaces a copy per value. Used only when the values make up a
 * good part of it (a wide file mapped for two columns copies those).
 */
typedef struct block {
    uintptr_t lo;    /* first byte, 0 = no block */
    size_t len;      /* through the last field's NUL */
    const char *dst; /* its copy */
} block_t;

static void block_find(const csv_field_t *f, size_t n, block_t *bk)
{
    bk->lo = 0;
    bk->len = 0;
    bk->dst = NULL;
    if (n == 0 || f[0].p[f[0].len] != '\0')
        return;
    for (size_t i = 1; i < n; i++)
        if (f[i].p != f[i - 1].p + f[i - 1].len + 1 || f[i].p[f[i].len] != '\0')
            return;
    bk->lo = (uintptr_t)f[0].p;
    bk->len = (size_t)((uintptr_t)(f[n - 1].p + f[n - 1].len + 1) - bk->lo);
}

/* 1 if a value is a whole cell: with a block, a NUL-terminated text of it
 * (then the block's copy holds it). */
static inline int in_block(const block_t *bk, const rval_t *v)
{
    return bk->lo && v->kind == PV_STR && v->whole;
}

static inline void put_prop(char **p, const rval_t *v, const char *names, const block_t *bk,
                            ev_prop_t *out)
{
    out->name = names + v->d->name_off;
    out->nlen = v->d->nlen;
    out->kind = v->kind;
    out->s = NULL;
    out->slen = 0;
    out->i = 0;
    out->d = 0;
    switch (v->kind) {
    case PV_STR:
        if (bk->dst && in_block(bk, v))
            out->s = bk->dst + ((uintptr_t)v->s - bk->lo);
        else
            out->s = put(p, maprow_str(v), v->slen, v->gen == G_LOWER);
        out->slen = v->slen;
        break;
    case PV_INT:
    case PV_BOOL:
        out->i = v->i;
        break;
    case PV_REAL:
        out->d = v->x;
        break;
    case PV_NONE:
        break;
    }
}

/* A row's tags (mapping "tags"): paths found, and how many ids no
 * dictionary knows. `copy[i]` = 1 when paths[i] points into the cell (to
 * be copied into the arena), 0 when into the mapping's dictionary. */
typedef struct row_tags {
    const char *paths[MAPPING_MAX_TAGS];
    uint16_t lens[MAPPING_MAX_TAGS];
    uint8_t copy[MAPPING_MAX_TAGS];
    uint32_t n, unknown;
    size_t bytes; /* of the paths to copy, NULs included */
} row_tags_t;

/* Splits the row's tag cells. CP_ELIMIT past MAPPING_MAX_TAGS tags in a row. */
static cp_status row_tags(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                          row_tags_t *t, cp_error_t *err)
{
    t->n = t->unknown = 0;
    t->bytes = 0;
    for (size_t i = 0; i < m->ntags; i++) {
        const map_tags_t *d = &m->tags[i];
        const csv_field_t *c = maprow_cell(&d->col, f, n);
        const char *p = c->p, *end = c->p + c->len;
        while (p <= end) {
            const char *q = memchr(p, d->sep, (size_t)(end - p));
            if (q == NULL)
                q = end;
            csv_field_t piece = {.p = p, .len = (size_t)(q - p)};
            const char *s;
            size_t len;
            maprow_trimmed(&piece, &s, &len);
            p = q + 1;
            if (len == 0)
                continue; /* empty cells and ",," are fine */
            if (t->n + t->unknown >= MAPPING_MAX_TAGS)
                return row_err(err, CP_ELIMIT, line, "column %s: more than %d tags in one row",
                               d->col.name ? d->col.name : "(by position)", MAPPING_MAX_TAGS);
            if (len > MAPPING_TAG_MAX || memchr(s, 0, len)) {
                t->unknown++;
                continue;
            }
            if (d->dict) {
                const char *path = json_string_value(json_object_getn(d->dict, s, len));
                if (path == NULL) {
                    t->unknown++;
                    continue;
                }
                t->paths[t->n] = path;
                t->lens[t->n] = (uint16_t)strlen(path);
                t->copy[t->n++] = 0;
            } else {
                t->paths[t->n] = s;
                t->lens[t->n] = (uint16_t)len;
                t->copy[t->n++] = 1;
                t->bytes += len + 1;
            }
        }
    }
    return CP_OK;
}

cp_status mapping_row_event(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                            const char *msgid_prefix, const segment_opts_t *o, ingest_batch_t *b,
                            map_result *res, cp_error_t *err)
{
    rule_warn_mark_t mark = rule_warn_mark(b);
    static const segment_opts_t defaults = {0};
    if (o == NULL)
        o = &defaults;
    row_t r;
    row_tags_t *tg = NULL;
    cp_status rc = maprow_init(&r, m, err);
    if (rc)
        return rc;
    if ((rc = maprow_build(m, f, n, line, msgid_prefix, &r, res, err)) || *res == MAP_SKIP)
        goto out;

    /* The strings' bytes: for the size bound, and for the arena block
     * (the record block if it pays, the other strings one by one). */
    block_t bk;
    block_find(f, n, &bk);
    size_t strs = 0, inblk = 0;
    for (size_t i = 0; i < r.npv + r.ntv; i++) {
        const rval_t *v = i < r.npv ? &r.pv[i] : &r.tv[i - r.npv];
        if (v->kind != PV_STR)
            continue;
        if (in_block(&bk, v))
            inblk += v->slen + 1;
        else
            strs += v->slen + 1;
    }
    /* The rules (rules.h), in the order segment_parse_event applies them. The exact size of
     * the event's JSON is needed only past a bound that rarely is. */
    if (quick_bound(m, &r, strs + inblk) > INGEST_EVENT_MAX && row_bound(&r) > INGEST_EVENT_MAX) {
        json_t *doc = maprow_json(m, &r);
        if (doc == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        size_t bytes = json_dumpb_checked(doc, NULL, 0, JSON_COMPACT);
        json_decref(doc);
        if ((rc = at_line(rule_event_size(bytes, err), line, err)))
            goto out;
    }
    if ((rc = ingest_batch_grow(b))) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    ingest_event_t *e = &b->events[b->n];
    memset(e, 0, offsetof(ingest_event_t, ids));
    ingest_ident_t idbuf[INGEST_MAX_IDS]; /* copied into the arena below */
    e->ids = idbuf;
    e->nids = 0;
    e->properties = e->traits = e->ctx_traits = e->group_traits = e->raw = NULL;
    e->index = (uint32_t)b->n;
    e->type = m->has_event ? ING_TRACK : ING_IDENTIFY;
    /* Identifiers' texts that are not in the row already (integers,
     * lower-cased cells), by candidate position: a value not added leaves
     * its slot to the next. */
    char ibuf[INGEST_MAX_IDS + 1][INGEST_ID_MAX + 1];
    int has_uid, has_anon;
    if ((rc = row_ident(b, e, &r.uid, RULE_ID_ENVELOPE, "userId", "user_id", 7, "userId",
                        ibuf[e->nids], &has_uid, line, err)) ||
        (rc = row_ident(b, e, &r.anon, RULE_ID_ENVELOPE, "anonymousId", "anonymous_id", 12,
                        "anonymousId", ibuf[e->nids], &has_anon, line, err)))
        goto out;
    const char *tfield = m->has_event ? "context.traits" : "traits";
    for (size_t i = 0; i < r.ntv; i++) {
        const map_field_t *d = r.tv[i].d;
        if (!trait_is_ident(o, d))
            continue;
        char fname[80];
        snprintf(fname, sizeof fname, "%s.%s", tfield, d->name);
        if ((rc = row_ident(b, e, &r.tv[i], RULE_ID_ELSEWHERE, fname, d->name, d->nlen, tfield,
                            ibuf[e->nids], NULL, line, err)))
            goto out;
    }
    if ((rc = at_line(rule_id_required(has_uid, has_anon, e->nids, o, err), line, err)))
        goto out;
    if (m->has_event &&
        (rc = at_line(rule_text("event", r.ev, r.evlen, INGEST_NAME_MAX, 0, r.ev_printable, err),
                      line, err)))
        goto out;
    int64_t recv = o->received_at_ms > 0 ? o->received_at_ms / 1000 : 0;
    if (r.has_ts && (r.ts < RULE_TS_MIN || r.ts > RULE_TS_MAX)) {
        /* what the JSON path's ISO text of this time would fail as */
        char iso[40];
        time_format(r.ts, iso, sizeof iso);
        rc = at_line(rule_time_bad("timestamp", iso, err), line, err);
        goto out;
    }
    /* No sentAt on a row: the time is used as it is. */
    if ((rc = at_line(rule_event_time(r.has_ts, r.ts, 0, 0, recv, 1, &e->ts, err), line, err)))
        goto out;
    e->received_at = recv;
    if ((rc = at_line(rule_text("messageId", r.msgid, r.msgid_len, INGEST_MSGID_MAX, 1,
                                r.msgid_printable, err),
                      line, err)))
        goto out;

    if (m->ntags) {
        if ((tg = malloc(sizeof *tg)) == NULL) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = row_tags(m, f, n, line, tg, err)))
            goto out;
    }

    /* Valid: one arena block for the typed values and every string: the
     * record block if it pays, the other strings one by one. Names point
     * into m->names (mapping.h): a copy per event would only add to the
     * batch's memory. */
    if (bk.lo && bk.len > 128 && bk.len > 2 * inblk) {
        strs += inblk; /* copy those values one by one instead */
        bk.lo = 0;
    }
    size_t ntg = tg ? tg->n : 0;
    size_t bytes = (r.npv + r.ntv) * sizeof(ev_prop_t) + e->nids * sizeof(ingest_ident_t) +
                   ntg * sizeof(char *) + (tg ? tg->bytes : 0) + (bk.lo ? bk.len : 0) + strs +
                   r.evlen + 1 + r.msgid_len + 1;
    for (size_t i = 0; i < e->nids; i++)
        bytes += idbuf[i].len + 1;
    ev_prop_t *props = arena_alloc(&b->arena, bytes);
    if (props == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory (batch arena)");
        goto out;
    }
    ev_prop_t *traits = props + r.npv;
    ingest_ident_t *ids = (ingest_ident_t *)(traits + r.ntv); /* 8-byte aligned: 56-byte props */
    const char **tpaths = (const char **)(ids + e->nids);     /* 8-byte aligned, as ids */
    char *p = (char *)(tpaths + ntg);
    const char *names = m->names;
    if (bk.lo) {
        memcpy(p, (const char *)bk.lo, bk.len);
        bk.dst = p;
        p += bk.len;
    }
    for (size_t i = 0; i < r.npv; i++)
        put_prop(&p, &r.pv[i], names, &bk, &props[i]);
    for (size_t i = 0; i < r.ntv; i++)
        put_prop(&p, &r.tv[i], names, &bk, &traits[i]);
    for (size_t i = 0; i < e->nids; i++) {
        ids[i] = idbuf[i];
        ids[i].value = put(&p, idbuf[i].value, idbuf[i].len, 0);
    }
    e->ids = e->nids ? ids : NULL;
    for (size_t i = 0; i < ntg; i++)
        tpaths[i] = tg->copy[i] ? put(&p, tg->paths[i], tg->lens[i], 0) : tg->paths[i];
    e->tags = ntg ? tpaths : NULL;
    e->ntags = (uint32_t)ntg;
    e->ntags_unknown = tg ? tg->unknown : 0;
    e->tprops = r.npv ? props : NULL;
    e->ntprops = r.npv;
    e->ttraits = r.ntv ? traits : NULL;
    e->nttraits = r.ntv;
    if (m->has_event) {
        e->event = put(&p, r.ev, r.evlen, 0);
        e->event_len = r.evlen;
    }
    e->message_id = put(&p, r.msgid, r.msgid_len, 0);
    e->message_id_len = r.msgid_len;
    e->message_id_derived = 0;
    e->message_hash = rule_message_hash(e->message_id, e->message_id_len);
    e->no_dedup = o->no_dedup;
    b->n++;
out:
    if (rc) {
        rule_warn_drop(b, mark); /* the warnings of a rejected row go with it */
    }
    free(tg);
    maprow_free(&r);
    return rc;
}
