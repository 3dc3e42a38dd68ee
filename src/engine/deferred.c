/*
 * deferred.c — the deferred part of applying events (the acc_* queue), and
 * the identity caches.
 *
 * Applied one event at a time, an event costs a behaviour increment per
 * series (a cell look-up and a roaring insert each), a BSI read and write
 * for first_seen and again for last_seen, JSON object updates of the
 * catalog per property, and LMDB look-ups to resolve the identifiers. Most
 * of that commutes: counts add, first/last take a minimum/maximum, catalog
 * counts add. So apply_event() (apply.c) only resolves the user and queues
 * the rest here; acc_flush() applies the
 * queue per batch — behaviour sorted per cell (beh_record_many), one BSI
 * read/write per user and attribute, one catalog update per key.
 *
 * The queue must be flushed before anything that reads or moves a user's
 * data: a merge (do_merge flushes first, so the absorbed user's events
 * move with it), and the end of every batch (before its commit). Nothing
 * else reads these states while the write lock is held by intake.
 *
 * Identity cache: key ("user_id:17850") -> canonical ordinal, filled after
 * each full resolution. An event whose keys are all cached under one
 * ordinal needs no LMDB look-up and attaches nothing (its keys are already
 * that user's). Anything that changes which ordinal a key resolves to — a
 * merge, an unmerge, a deletion, a failed write — clears it.
 *
 * Identifier key cache (bulk imports): raw (type, value) -> its key, so a
 * customer seen again is not normalised, hashed and copied again, plus the
 * ordinal the key resolved to, valid while the identity cache is (a
 * generation bumped by idcache_clear). Keys depend on the identity config
 * only (ident_key is a pure function of it): the cache keeps a copy and
 * drops everything when it differs (idraw_sync, between events).
 *
 * Catalog notes by position: an import's rows name the same properties in
 * the same order, so a note remembers, per position, the entry it went to
 * last time and checks the name against it before any hash look-up.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"

#define IDCACHE_MAX (1u << 20) /* keys; cleared when full (~100 MiB at most) */
#define IDRAW_MAX (1u << 20)   /* identifier key cache entries; cleared when full */
#define CAT_HINTS 64           /* positions remembered per catalog kind */
#define SEEN_MIN_CAP 1024

typedef struct seen {
    uint32_t key; /* ordinal + 1; 0 = empty */
    int64_t lo, hi;
} seen_t;

typedef struct idraw {
    const char *raw; /* type '\0' value (in idar) */
    uint32_t rawlen;
    uint32_t tlen; /* of the type */
    uint32_t klen;
    const char *key; /* NUL-terminated (in idar) */
    uint32_t ord;    /* valid when gen == the cache's idgen */
    uint32_t gen;    /* 0 = no ordinal */
} idraw_t;

typedef struct cat_ent {
    char *key; /* the name, NUL-terminated (owned) */
    int kind;
    int is_idx;       /* CAT_PROPERTIES: the name is an indexed property */
    const char *name; /* into key */
    size_t nlen;
    uint64_t count;
    int indexed;
    int nex;  /* candidates below */
    int full; /* the catalog has enough examples already */
    json_t *ex[CATALOG_EXAMPLES];
} cat_ent_t;

struct apply_acc {
    beh_rec_t *recs;
    size_t nrecs, caprecs;
    seen_t *seen;
    size_t seen_cap, seen_n;
    size_t seen_last; /* slot + 1 of the last acc_seen (rows repeat a customer); 0 = none */
    strmap_t cat;     /* key -> index into ents */
    cat_ent_t *ents;
    size_t nents, capents;
    uint32_t hint[3][CAT_HINTS]; /* per kind and position: entry index + 1 (of this batch's) */
    arena_t scratch;             /* acc_scratch() */
    /* identifier key cache */
    strmap_t raw; /* type '\0' value -> index into ids */
    idraw_t *ids;
    size_t nids, capids;
    arena_t idar;                /* the keys and raw copies of ids */
    uint32_t idgen;              /* bumped by idcache_clear: ids' ordinals older are stale */
    uint32_t idpos[IDRAW_HINTS]; /* per identifier position: last entry + 1 */
    ident_config_t idc;          /* the config the keys were made with */
    int have_idc;
};

static const char *const cat_kind[] = {"traits", "properties", "events"};

cp_status acc_init(cp_db_t *db)
{
    db->acc = calloc(1, sizeof *db->acc);
    if (db->acc == NULL)
        return CP_ENOMEM;
    strmap_init(&db->acc->cat);
    strmap_init(&db->idcache);
    arena_init(&db->acc->scratch, 256u << 20);
    strmap_init(&db->acc->raw);
    arena_init(&db->acc->idar, 1u << 30);
    db->acc->idgen = 1;
    return CP_OK;
}

arena_t *acc_scratch(cp_db_t *db)
{
    return &db->acc->scratch;
}

static void cat_reset(apply_acc_t *a)
{
    for (size_t i = 0; i < a->nents; i++) {
        for (int k = 0; k < a->ents[i].nex; k++)
            json_decref(a->ents[i].ex[k]);
        free(a->ents[i].key);
    }
    a->nents = 0;
    strmap_free(&a->cat);
    strmap_init(&a->cat);
    memset(a->hint, 0, sizeof a->hint); /* entries are reused by index for any kind */
}

void acc_discard(cp_db_t *db)
{
    apply_acc_t *a = db->acc;
    db->daysum.on = 0;
    if (a == NULL)
        return;
    a->nrecs = 0;
    if (a->seen_n)
        memset(a->seen, 0, a->seen_cap * sizeof *a->seen);
    a->seen_n = 0;
    a->seen_last = 0;
    cat_reset(a);
}

void acc_free(cp_db_t *db)
{
    apply_acc_t *a = db->acc;
    if (a) {
        cat_reset(a);
        strmap_free(&a->cat);
        free(a->ents);
        free(a->recs);
        free(a->seen);
        arena_free(&a->scratch);
        strmap_free(&a->raw);
        free(a->ids);
        arena_free(&a->idar);
        free(a);
    }
    db->acc = NULL;
    strmap_free(&db->idcache);
}

/* ------------------------------------------------------------ behaviour */

cp_status acc_beh(cp_db_t *db, const uint32_t *series, size_t n, int32_t day, uint32_t ord)
{
    apply_acc_t *a = db->acc;
    if (arr_grow((void **)&a->recs, &a->caprecs, a->nrecs + n, sizeof *a->recs, 65536))
        return CP_ENOMEM;
    for (size_t i = 0; i < n; i++)
        a->recs[a->nrecs++] = (beh_rec_t){series[i], day, ord};
    db->acc_stats.beh += n;
    return CP_OK;
}

/* --------------------------------------------------------- first / last */

static size_t seen_slot(const apply_acc_t *a, uint32_t key)
{
    size_t mask = a->seen_cap - 1;
    size_t i = (size_t)(key * 0x9E3779B1u) & mask;
    while (a->seen[i].key && a->seen[i].key != key)
        i = (i + 1) & mask;
    return i;
}

static int seen_grow(apply_acc_t *a)
{
    size_t nc = a->seen_cap ? a->seen_cap * 2 : SEEN_MIN_CAP;
    seen_t *old = a->seen;
    size_t oc = a->seen_cap;
    seen_t *s = calloc(nc, sizeof *s);
    if (s == NULL)
        return -1;
    a->seen = s;
    a->seen_cap = nc;
    a->seen_last = 0;
    for (size_t i = 0; i < oc; i++)
        if (old[i].key)
            a->seen[seen_slot(a, old[i].key)] = old[i];
    free(old);
    return 0;
}

cp_status acc_seen(cp_db_t *db, uint32_t ord, int64_t ts)
{
    apply_acc_t *a = db->acc;
    uint32_t key = ord + 1;
    seen_t *s;
    if (a->seen_last && a->seen[a->seen_last - 1].key == key) {
        s = &a->seen[a->seen_last - 1];
    } else {
        if ((a->seen_n + 1) * 2 > a->seen_cap && seen_grow(a))
            return CP_ENOMEM;
        size_t i = seen_slot(a, key);
        a->seen_last = i + 1;
        s = &a->seen[i];
    }
    if (s->key == 0) {
        *s = (seen_t){key, ts, ts};
        a->seen_n++;
    } else {
        if (ts < s->lo)
            s->lo = ts;
        if (ts > s->hi)
            s->hi = ts;
    }
    return CP_OK;
}

/* -------------------------------------------------------------- catalog */

static json_t *example_of(const ev_prop_t *v, const json_t *raw)
{
    if (raw) {
        if (json_is_null(raw))
            return NULL;
        if (json_is_string(raw) && json_string_length(raw) > 64)
            return json_stringn(json_string_value(raw), 64);
        if (json_is_object(raw) || json_is_array(raw))
            return json_string(json_is_object(raw) ? "(object)" : "(array)");
        return json_copy((json_t *)raw);
    }
    if (v == NULL)
        return NULL;
    if (v->kind == PV_STR && v->slen > 64)
        return json_stringn(v->s, 64);
    return pv_to_json(v);
}

static int has_example(const json_t *arr, json_t *const *ex, int nex, const json_t *val)
{
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) if (json_equal(x, val)) return 1;
    for (int k = 0; k < nex; k++)
        if (json_equal(ex[k], val))
            return 1;
    return 0;
}

static cat_ent_t *cat_ent(cp_db_t *db, int kind, const char *name, size_t nlen)
{
    apply_acc_t *a = db->acc;
    char key[1 + 1 + 1024];
    if (nlen > 1024)
        nlen = 1024;
    key[0] = (char)('0' + kind);
    key[1] = '\0';
    memcpy(key + 2, name, nlen);
    uint32_t idx;
    if (strmap_get(&a->cat, key, nlen + 2, &idx))
        return &a->ents[idx];
    if (arr_grow((void **)&a->ents, &a->capents, a->nents + 1, sizeof *a->ents, 64))
        return NULL;
    if (strmap_put(&a->cat, key, nlen + 2, (uint32_t)a->nents))
        return NULL;
    cat_ent_t *e = &a->ents[a->nents++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->nlen = nlen;
    e->key = malloc(nlen + 1);
    if (e->key == NULL) {
        a->nents--;
        strmap_del(&a->cat, key, nlen + 2);
        return NULL;
    }
    memcpy(e->key, name, nlen);
    e->key[nlen] = '\0';
    e->name = e->key;
    if (kind == CAT_PROPERTIES)
        for (size_t i = 0; i < db->cfg.nindexed && !e->is_idx; i++)
            e->is_idx =
                strlen(db->cfg.indexed[i]) == nlen && !memcmp(db->cfg.indexed[i], name, nlen);
    if (kind != CAT_EVENTS) {
        const json_t *ce = json_object_get(json_object_get(db->catalog, cat_kind[kind]), e->key);
        e->full = json_array_size(json_object_get(ce, "examples")) >= CATALOG_EXAMPLES;
    } else {
        e->full = 1;
    }
    return e;
}

/* An example for e (cat_note's slow part: entries still short of them). */
static void cat_example(cp_db_t *db, cat_ent_t *e, int kind, const ev_prop_t *v, const json_t *raw)
{
    json_t *val = example_of(v, raw);
    if (val == NULL)
        return;
    const json_t *ce = json_object_get(json_object_get(db->catalog, cat_kind[kind]), e->name);
    if (has_example(json_object_get(ce, "examples"), e->ex, e->nex, val))
        json_decref(val);
    else
        e->ex[e->nex++] = val;
}

static inline void cat_note(cp_db_t *db, cat_ent_t *e, int kind, const ev_prop_t *v,
                            const json_t *raw, int indexed)
{
    e->count++;
    e->indexed |= indexed;
    if (!e->full && e->nex < CATALOG_EXAMPLES)
        cat_example(db, e, kind, v, raw);
}

/* The entry of the note at position pos of an event: the one that
 * position went to last time when the name is the same (cut as cat_ent
 * cuts it), else the name's, then remembered for pos. NULL on ENOMEM. */
static inline cat_ent_t *cat_ent_at(cp_db_t *db, int kind, size_t pos, const char *name,
                                    size_t nlen)
{
    apply_acc_t *a = db->acc;
    /* A hint is an entry of this kind (hints are cleared with the entries);
     * names cut by cat_ent (past 1024 bytes) never match here. */
    if (pos < CAT_HINTS) {
        uint32_t h = a->hint[kind][pos];
        if (h) {
            cat_ent_t *c = &a->ents[h - 1];
            if (c->nlen == nlen && mem_eq(c->name, name, nlen))
                return c;
        }
    }
    cat_ent_t *e = cat_ent(db, kind, name, nlen);
    if (e && pos < CAT_HINTS)
        a->hint[kind][pos] = (uint32_t)(e - a->ents) + 1;
    return e;
}

cp_status acc_catalog_at(cp_db_t *db, int kind, size_t pos, const char *name, size_t nlen,
                         const ev_prop_t *v, const json_t *raw, int *indexed)
{
    cat_ent_t *e = cat_ent_at(db, kind, pos, name, nlen);
    if (e == NULL)
        return CP_ENOMEM;
    int ix = kind == CAT_PROPERTIES && e->is_idx;
    if (indexed)
        *indexed = ix;
    cat_note(db, e, kind, v, raw, ix);
    return CP_OK;
}

cp_status acc_catalog_props(cp_db_t *db, size_t pos, const ev_prop_t *props,
                            const json_t *const *raw, size_t n, uint8_t *indexed)
{
    for (size_t i = 0; i < n; i++) {
        const ev_prop_t *v = &props[i];
        cat_ent_t *e = cat_ent_at(db, CAT_PROPERTIES, pos + i, v->name, v->nlen);
        if (e == NULL)
            return CP_ENOMEM;
        indexed[i] = (uint8_t)e->is_idx;
        cat_note(db, e, CAT_PROPERTIES, v, raw ? raw[i] : NULL, e->is_idx);
    }
    return CP_OK;
}

/* One key's counts into the catalog JSON: what catalog_note did per event.
 * Non-zero when jansson ran out of memory (the catalog may then hold part
 * of the batch: acc_flush fails, and so does the write). */
static int cat_apply(cp_db_t *db, cat_ent_t *c)
{
    json_t *m = json_object_get(db->catalog, cat_kind[c->kind]);
    db->catalog_dirty = 1;
    if (c->kind == CAT_EVENTS)
        return json_object_set_new(
            m, c->name,
            json_integer(json_integer_value(json_object_get(m, c->name)) + (json_int_t)c->count));
    json_t *e = json_object_get(m, c->name);
    if (e == NULL) {
        if (json_object_size(m) >= CATALOG_MAX_KEYS) {
            json_t *o = json_object_get(db->catalog, "other_keys");
            return json_object_set_new(db->catalog, "other_keys",
                                       json_integer(json_integer_value(o) + (json_int_t)c->count));
        }
        e = json_pack("{s:I,s:[]}", "count", (json_int_t)0, "examples");
        if (e == NULL || json_object_set_new(m, c->name, e))
            return -1;
    }
    if (json_object_set_new(
            e, "count",
            json_integer(json_integer_value(json_object_get(e, "count")) + (json_int_t)c->count)))
        return -1;
    if (c->indexed && json_object_set_new(e, "indexed", json_true()))
        return -1;
    json_t *ex = json_object_get(e, "examples");
    for (int k = 0; k < c->nex && json_array_size(ex) < CATALOG_EXAMPLES; k++)
        if (!has_example(ex, NULL, 0, c->ex[k]) && json_array_append(ex, c->ex[k]))
            return -1;
    return 0;
}

cp_status acc_flush(cp_db_t *db, cp_error_t *err)
{
    apply_acc_t *a = db->acc;
    cp_status rc;
    if ((rc = db_daysum_flush(db)))
        return CP_ERR(err, rc, "recording day sums: %s", cp_strerror(rc));
    if (a == NULL)
        return CP_OK;
    if (a->nrecs) {
        if ((rc = beh_record_many(db->beh, a->recs, a->nrecs)))
            return CP_ERR(err, rc, "recording behaviour: %s", cp_strerror(rc));
        a->nrecs = 0;
    }
    if (a->seen_n) {
        for (size_t i = 0; i < a->seen_cap; i++) {
            seen_t *s = &a->seen[i];
            if (s->key == 0)
                continue;
            uint32_t ord = s->key - 1;
            int64_t v;
            if (db->attr_first_seen &&
                (!index_get_int(db->ix, db->attr_first_seen, ord, &v) || s->lo < v)) {
                if ((rc = index_set_int(db->ix, db->attr_first_seen, ord, s->lo)))
                    return CP_ERR(err, rc, "setting first_seen");
                db->acc_stats.attr++;
            }
            if (db->attr_last_seen &&
                (!index_get_int(db->ix, db->attr_last_seen, ord, &v) || s->hi > v)) {
                if ((rc = index_set_int(db->ix, db->attr_last_seen, ord, s->hi)))
                    return CP_ERR(err, rc, "setting last_seen");
                db->acc_stats.attr++;
            }
        }
        /* Keep the table near the size one batch needs. */
        if (a->seen_cap > SEEN_MIN_CAP && a->seen_n * 8 < a->seen_cap) {
            free(a->seen);
            a->seen = NULL;
            a->seen_cap = 0;
            if (seen_grow(a))
                return CP_ERR(err, CP_ENOMEM, "out of memory");
        } else {
            memset(a->seen, 0, a->seen_cap * sizeof *a->seen);
        }
        a->seen_n = 0;
        a->seen_last = 0;
    }
    for (size_t i = 0; i < a->nents; i++)
        if (cat_apply(db, &a->ents[i]))
            return CP_ERR(err, CP_ENOMEM, "out of memory updating the event catalog");
    cat_reset(a);
    return CP_OK;
}

/* ------------------------------------------------------- identity cache */

int idcache_get(const cp_db_t *db, const char *key, size_t klen, uint32_t *ord)
{
    return strmap_get(&db->idcache, key, klen, ord);
}

void idcache_put(cp_db_t *db, const char *key, size_t klen, uint32_t ord)
{
    if (db->idcache.used >= IDCACHE_MAX)
        idcache_clear(db);
    (void)strmap_put(&db->idcache, key, klen, ord); /* a miss later only costs a look-up */
}

void idcache_clear(cp_db_t *db)
{
    apply_acc_t *a = db->acc;
    if (a && ++a->idgen == 0) { /* wrapped: no entry may look current */
        for (size_t i = 0; i < a->nids; i++)
            a->ids[i].gen = 0;
        a->idgen = 1;
    }
    if (db->idcache.used == 0 && db->idcache.tombs == 0)
        return;
    strmap_free(&db->idcache);
    strmap_init(&db->idcache);
}

/* ------------------------------------------------- identifier key cache */

/* The fields of an identity config that keys depend on. */
static int idc_same(const ident_config_t *a, const ident_config_t *b)
{
    if (a->ic_hash_pii != b->ic_hash_pii || a->ic_pii != b->ic_pii ||
        a->ic_ntypes != b->ic_ntypes || a->ic_have_salt != b->ic_have_salt ||
        strcmp(a->ic_country, b->ic_country) != 0 ||
        memcmp(a->ic_salt, b->ic_salt, IDENT_SALT_LEN) != 0)
        return 0;
    for (size_t i = 0; i < a->ic_ntypes; i++)
        if (strcmp(a->ic_types[i], b->ic_types[i]) != 0)
            return 0;
    return 1;
}

static void idraw_drop(apply_acc_t *a)
{
    strmap_free(&a->raw);
    strmap_init(&a->raw);
    a->nids = 0;
    arena_reset(&a->idar);
    memset(a->idpos, 0, sizeof a->idpos);
}

void idraw_sync(cp_db_t *db, int full)
{
    apply_acc_t *a = db->acc;
    /* Within a batch the config can only gain its salt (apply_event binds
     * it): the cheap check; a full one between batches. */
    if (a->have_idc && a->nids < IDRAW_MAX && a->idc.ic_have_salt == db->idc.ic_have_salt &&
        (!full || idc_same(&a->idc, &db->idc)))
        return;
    idraw_drop(a);
    a->idc = db->idc;
    a->have_idc = 1;
}

/* type: tlen bytes and a NUL (tlen < INGEST_TYPE_MAX). */
static inline int raw_is(const idraw_t *r, const char *type, size_t tlen, const char *v, size_t vl)
{
    return r->rawlen == tlen + 1 + vl && mem_eq(r->raw + tlen + 1, v, vl) &&
           mem_eq(r->raw, type, tlen + 1);
}

int idraw_get(cp_db_t *db, size_t pos, const char *type, size_t tlen, const char *v, size_t vl,
              uint32_t *slot)
{
    apply_acc_t *a = db->acc;
    if (tlen >= INGEST_TYPE_MAX || vl > IDENT_MAX_VALUE)
        return 0; /* never cached (idraw_put) */
    if (pos < IDRAW_HINTS && a->idpos[pos]) {
        uint32_t h = a->idpos[pos] - 1;
        if (raw_is(&a->ids[h], type, tlen, v, vl)) {
            *slot = h;
            return 1;
        }
    }
    char buf[INGEST_TYPE_MAX + 1 + IDENT_MAX_VALUE];
    memcpy(buf, type, tlen);
    buf[tlen] = '\0';
    memcpy(buf + tlen + 1, v, vl);
    uint32_t h;
    if (!strmap_get(&a->raw, buf, tlen + 1 + vl, &h))
        return 0;
    if (pos < IDRAW_HINTS)
        a->idpos[pos] = h + 1;
    *slot = h;
    return 1;
}

cp_status idraw_put(cp_db_t *db, size_t pos, const char *type, size_t tlen, const char *v,
                    size_t vl, const char *key, size_t klen, uint32_t *slot)
{
    apply_acc_t *a = db->acc;
    *slot = UINT32_MAX;
    if (tlen >= INGEST_TYPE_MAX || vl > IDENT_MAX_VALUE || a->nids >= IDRAW_MAX)
        return CP_OK; /* not cached: the caller keeps its own copy */
    if (arr_grow((void **)&a->ids, &a->capids, a->nids + 1, sizeof *a->ids, 1024))
        return CP_ENOMEM;
    char *raw = arena_alloc(&a->idar, tlen + 1 + vl + 1 + klen + 1);
    if (raw == NULL)
        return CP_ENOMEM;
    memcpy(raw, type, tlen);
    memcpy(raw + tlen + 1, v, vl);
    char *k = raw + tlen + 1 + vl + 1;
    memcpy(k, key, klen);
    if (strmap_put(&a->raw, raw, tlen + 1 + vl, (uint32_t)a->nids))
        return CP_ENOMEM;
    a->ids[a->nids] =
        (idraw_t){raw, (uint32_t)(tlen + 1 + vl), (uint32_t)tlen, (uint32_t)klen, k, 0, 0};
    *slot = (uint32_t)a->nids++;
    if (pos < IDRAW_HINTS)
        a->idpos[pos] = *slot + 1;
    return CP_OK;
}

const char *idraw_hint(cp_db_t *db, size_t pos, const char *type, const char *v, size_t vl,
                       uint32_t *slot)
{
    apply_acc_t *a = db->acc;
    if (pos >= IDRAW_HINTS || a->idpos[pos] == 0)
        return NULL;
    uint32_t h = a->idpos[pos] - 1;
    const idraw_t *r = &a->ids[h];
    /* the entry's type and its NUL (r->tlen < INGEST_TYPE_MAX): type is
     * the same string; then the value */
    if (r->rawlen != r->tlen + 1 + vl || !mem_eq(r->raw, type, r->tlen + 1) ||
        !mem_eq(r->raw + r->tlen + 1, v, vl))
        return NULL;
    *slot = h;
    return r->key;
}

const char *idraw_key(const cp_db_t *db, uint32_t slot, size_t *klen)
{
    const idraw_t *r = &db->acc->ids[slot];
    *klen = r->klen;
    return r->key;
}

int idraw_ord(const cp_db_t *db, uint32_t slot, uint32_t *ord)
{
    const idraw_t *r = &db->acc->ids[slot];
    if (r->gen == 0 || r->gen != db->acc->idgen)
        return 0;
    *ord = r->ord;
    return 1;
}

void idraw_set_ord(cp_db_t *db, uint32_t slot, uint32_t ord)
{
    idraw_t *r = &db->acc->ids[slot];
    r->ord = ord;
    r->gen = db->acc->idgen;
}

/*
 * did() sum(): the numeric properties that sum measures take from this
 * event, added per user and day to the behaviour index in fixed point (the
 * measure's scale), positive and negative parts in two count series
 * (beh_sum_series_key) so both stay exact unsigned counts. A part beyond
 * 2^32 units per user and day saturates (the count series' bound: at scale
 * 2, 42.9 million a day).
 */
cp_status db_daysum_flush(cp_db_t *db)
{
    if (!db->daysum.on)
        return CP_OK;
    db->daysum.on = 0;
    return beh_record(db->beh, db->daysum.series, db->daysum.day, db->daysum.ord, db->daysum.mag);
}
