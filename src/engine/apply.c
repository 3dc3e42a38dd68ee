/*
 * apply.c — applying validated events (src/ingest/) to a database:
 * identifiers -> normalised keys -> identity resolution (merges move the
 * absorbed user's data into the survivor and keep a snapshot in the
 * lineage), traits -> attributes per the schema (unknown traits kept per
 * user and catalogued), track/page/screen/group -> the behaviour index,
 * first_seen / last_seen, messageId dedup.
 *
 * Every write path here holds the write lock. A request is prepared whole
 * first (keys normalised, traits checked against the schema) so a bad
 * event rejects the request before anything changes.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"
#include "engine/feed.h"
#include "model/codec.h"

/* ------------------------------------------------------------ merge */

static int is_seen_attr(const cp_db_t *db, uint32_t id)
{
    return id && (id == db->attr_first_seen || id == db->attr_last_seen);
}

/*
 * Moves absorbed's data into survivor (survivor's values win where both
 * have one; first_seen takes the minimum, last_seen the maximum), records
 * the merge with both sides' own data as the snapshot.
 */
static cp_status do_merge(cp_db_t *db, store_txn_t *txn, uint32_t s, uint32_t a,
                          const char *const *keys, size_t nkeys, const ingest_event_t *e,
                          cp_error_t *err)
{
    /* Queued updates first: the snapshot and the move see all of both. */
    cp_status rc = acc_flush(db, err);
    if (rc)
        return rc;
    idcache_clear(db);
    json_t *snap =
        json_pack("{s:i,s:o,s:o}", "v", 1, "a", user_own(db, txn, a), "s", user_own(db, txn, s));
    char *blob = snap ? json_dumps_checked(snap, JSON_COMPACT) : NULL;
    json_decref(snap);
    if (blob == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    identity_merge_info_t info = {0};
    info.time_ms = e->received_at ? e->received_at * 1000 : time_now_ms();
    info.keys = keys;
    info.nkeys = nkeys;
    char mid[INGEST_MSGID_MAX + 1];
    snprintf(mid, sizeof mid, "%.*s", (int)e->message_id_len, e->message_id);
    info.message_id = mid;
    info.source = ingest_type_name(e->type);
    info.snapshot = blob;
    info.snapshot_len = strlen(blob);
    uint64_t merge_id;
    rc = identity_record_merge(txn, s, a, &info, &merge_id, err);
    free(blob);
    if (rc)
        return rc;
    /* attributes */
    for (uint32_t i = 1; i <= db->sch.n; i++) {
        const schema_attr_t *at = schema_get(&db->sch, i);
        if (at == NULL)
            continue;
        if (at->type == CP_ATTR_INT || at->type == CP_ATTR_TIMESTAMP) {
            int64_t va, vs;
            if (!index_get_int(db->ix, i, a, &va))
                continue;
            int hs = index_get_int(db->ix, i, s, &vs);
            if (!hs || (i == db->attr_first_seen && va < vs) ||
                (i == db->attr_last_seen && va > vs))
                if ((rc = index_set_int(db->ix, i, s, va)))
                    return CP_ERR(err, rc, "merging attribute \"%s\"", at->name);
        } else if (at->type == CP_ATTR_GEO) {
            double la, lo, x, y;
            if (index_get_geo(db->ix, i, a, &la, &lo) && !index_get_geo(db->ix, i, s, &x, &y))
                if ((rc = index_set_geo(db->ix, i, s, la, lo)))
                    return CP_ERR(err, rc, "merging attribute \"%s\"", at->name);
        } else {
            uint32_t va = index_get_value(db->ix, i, a);
            if (va && !index_get_value(db->ix, i, s))
                if ((rc = index_set_value(db->ix, i, s, va)))
                    return CP_ERR(err, rc, "merging attribute \"%s\"", at->name);
        }
    }
    (void)is_seen_attr;
    /* tags */
    for (uint32_t t = 1; t < db->tax.next_id; t++) {
        const idx_tag_t *it = index_tag(db->ix, t);
        if (it && roaring_bitmap_contains(it->direct, a))
            index_tag_assign(db->ix, &db->tax, s, t);
    }
    /* unindexed traits: the survivor's win */
    json_t *ta = NULL, *ts = NULL;
    if ((rc = traits_get(txn, a, &ta, err)) || (rc = traits_get(txn, s, &ts, err))) {
        json_decref(ta);
        return rc;
    }
    if (json_object_size(ta)) {
        if (json_object_update_missing(ts, ta)) {
            json_decref(ta);
            json_decref(ts);
            return CP_ERR(err, CP_ENOMEM, "out of memory merging the traits of user %u into %u",
                          (unsigned)a, (unsigned)s);
        }
        rc = traits_put(txn, s, ts, err);
        if (rc == CP_OK) {
            json_object_clear(ta);
            rc = traits_put(txn, a, ta, err);
        }
    }
    json_decref(ta);
    json_decref(ts);
    if (rc)
        return rc;
    if ((rc = beh_user_move(db->beh, a, s)))
        return CP_ERR(err, rc, "merging behaviour: %s", cp_strerror(rc));
    if ((rc = meas_user_move(db->meas, a, s))) /* event measures: not split again by unmerge */
        return CP_ERR(err, rc, "merging event measures: %s", cp_strerror(rc));
    /* group memberships: the survivor is the member now (unmerge keeps them) */
    if ((rc = group_move_member(&db->groups, txn, a, s, err)))
        return rc;
    index_user_delete(db->ix, &db->tax, a);
    return CP_OK;
}

/* ------------------------------------------------------------- prepare */

#define HOT_TRAITS 16 /* trait positions of the bulk import memo (hot_t) */

struct prep {
    const char *keys[IDENTITY_MAX_EVENT_KEYS];
    size_t nkeys;
    int cached;                        /* bulk imports: slot[] holds every key's cache slot */
    const char *prev_user, *prev_anon; /* alias: candidate keys of previousId */
    const char *display;               /* id in the user dictionary for a new user */
    size_t display_len;                /* (borrowed from the event or a key) */
    /* Typed properties and traits (traits in application order: context
     * traits, then traits, which win); *raw is the JSON of each, NULL for
     * typed events (CSV rows). Identifier-typed traits are left out. */
    const ev_prop_t *props;
    const json_t *const *praw;
    size_t nprops;
    const ev_prop_t *traits;
    const json_t *const *traw;
    size_t ntraits;
    /* Each key's slot in the identifier key cache (deferred.c; UINT32_MAX: not
     * cached); valid below nkeys. */
    uint32_t slot[IDENTITY_MAX_EVENT_KEYS];
    /* Bulk imports (prepared with the batch memo): per typed trait
     * position below HOT_TRAITS, hot_value's answer for it, which
     * apply_traits, right after, would get again. */
    uint32_t tvid[HOT_TRAITS];
    int skip; /* rejected by prep_event: apply_batch passes over it */
};

void bp_free(batch_prep_t *bp)
{
    free(bp->p);
    arena_free(&bp->arena);
}

/*
 * What a bulk import's rows repeat, event after event, resolved once per
 * batch (intake_import_batch): per trait position, whether the name is an
 * identifier type and which attribute it sets, and the dictionary value it
 * set last; the last event name found usable. The write lock is held for
 * the whole batch, so identifier types and the intake config cannot change
 * under it; attributes can only be added (first_seen / last_seen), which
 * the schema's highest id tells. Names are borrowed from events of the
 * batch (alive until it ends) and always compared by content.
 */
typedef struct hot_trait {
    const char *name; /* NULL = nothing known */
    size_t nlen;
    int is_ident;
    uint32_t attr; /* 0 = no attribute of that name */
    uint32_t vid;  /* STRING/ENUM: value last set from here (0 = none) */
} hot_trait_t;
typedef struct hot {
    uint32_t sch_n;
    hot_trait_t tr[HOT_TRAITS];
    const char *event; /* last event name found usable */
    size_t event_len;
} hot_t;

/* The memo of trait position i for t (filled if unknown); NULL past the
 * positions kept. */
static inline hot_trait_t *hot_trait(cp_db_t *db, hot_t *h, size_t i, const ev_prop_t *t)
{
    if (h == NULL || i >= HOT_TRAITS)
        return NULL;
    if (h->sch_n != db->sch.n) { /* an attribute was added: forget what was not one */
        memset(h->tr, 0, sizeof h->tr);
        h->sch_n = db->sch.n;
    }
    hot_trait_t *m = &h->tr[i];
    if (m->name && m->nlen == t->nlen && (m->name == t->name || mem_eq(m->name, t->name, t->nlen)))
        return m;
    const schema_attr_t *a = schema_find(&db->sch, t->name, t->nlen);
    *m = (hot_trait_t){t->name, t->nlen, ident_type_find(&db->idc, t->name, t->nlen) >= 0,
                       a ? a->id : 0, 0};
    return m;
}

/* The dictionary id of t's value when it is the one last set from memo m
 * (then trait_value would accept it and schema_value_intern return it). */
static inline uint32_t hot_value(const schema_attr_t *a, const hot_trait_t *m, const ev_prop_t *t)
{
    if (m == NULL || m->vid == 0 || t->kind != PV_STR || m->vid > a->nvalues ||
        (a->type != CP_ATTR_STRING && a->type != CP_ATTR_ENUM))
        return 0;
    return a->value_lens[m->vid] == t->slen && mem_eq(a->values[m->vid], t->s, t->slen) ? m->vid
                                                                                        : 0;
}

static cp_status make_key(cp_db_t *db, arena_t *ar, const char *type, const char *v, size_t vl,
                          const char **out, cp_error_t *err)
{
    char buf[IDENT_MAX_KEY + 1];
    size_t n;
    cp_status rc = ident_key(&db->idc, type, strlen(type), v, vl, buf, &n, err);
    if (rc)
        return rc;
    *out = arena_strndup(ar, buf, n);
    return *out ? CP_OK : CP_ERR(err, CP_ENOMEM, "out of memory");
}

static int is_traits_ident(cp_db_t *db, const char *k, size_t klen)
{
    return ident_type_find(&db->idc, k, klen) >= 0;
}

void intake_count_warning(cp_db_t *db, const char *reason)
{
    atomic_uint_least64_t *c = !strcmp(reason, INGEST_WARN_PLACEHOLDER)   ? &db->warn_placeholder
                               : !strcmp(reason, INGEST_WARN_BLOCKLISTED) ? &db->warn_blocklisted
                               : !strcmp(reason, INGEST_WARN_TYPE)        ? &db->warn_type
                                                                          : &db->warn_invalid;
    atomic_fetch_add(c, 1);
}

/*
 * A value of event e that is not used (an identifier or a trait): a
 * warning in b (requests), or for imports (b NULL) only the counters.
 * `field` names where it was; identifiers found in a traits object get
 * their key appended ("traits" + "email" -> "traits.email").
 */
static void warn_value(cp_db_t *db, ingest_batch_t *b, const ingest_event_t *e, const char *field,
                       const char *key, size_t klen, const char *reason)
{
    char f[64];
    if (key)
        snprintf(f, sizeof f, "%s.%.*s", field, (int)klen, key);
    else
        snprintf(f, sizeof f, "%s", field);
    if (b) {
        ingest_batch_warn(b, e->index, f, reason);
        return;
    }
    intake_count_warning(db, reason);
}

/* 0, or the reason (INGEST_WARN_*) why identifier i of e is not used for
 * identity: a placeholder or a blocklisted value. */
static const char *id_unusable(const cp_db_t *db, const ingest_ident_t *id)
{
    int why = ident_value_unusable(id->value, id->len, (const char *const *)db->cfg.blocklist,
                                   db->cfg.nblocklist);
    return why == IDENT_PLACEHOLDER   ? INGEST_WARN_PLACEHOLDER
           : why == IDENT_BLOCKLISTED ? INGEST_WARN_BLOCKLISTED
                                      : NULL;
}

/* The field of identifier id in warnings: "traits" -> "traits.email". */
static void id_warn(cp_db_t *db, ingest_batch_t *b, const ingest_event_t *e,
                    const ingest_ident_t *id, const char *reason)
{
    int in_traits = !strcmp(id->field, "traits") || !strcmp(id->field, "context.traits");
    warn_value(db, b, e, id->field, in_traits ? id->type : NULL, strlen(id->type), reason);
}

/* The typed form of a JSON event's properties and traits, in the arena. */
static cp_status prep_typed(cp_db_t *db, const ingest_event_t *e, prep_t *p, arena_t *ar)
{
    if (e->properties == NULL && e->traits == NULL && e->ctx_traits == NULL) {
        p->props = e->tprops;
        p->nprops = e->ntprops;
        p->traits = e->ttraits;
        p->ntraits = e->nttraits;
        return CP_OK;
    }
    size_t np = json_object_size(e->properties);
    size_t nt = json_object_size(e->traits) + json_object_size(e->ctx_traits);
    ev_prop_t *pv = arena_alloc(ar, (np + nt + 1) * sizeof *pv);
    const json_t **raw = arena_alloc(ar, (np + nt + 1) * sizeof *raw);
    if (pv == NULL || raw == NULL)
        return CP_ENOMEM;
    const char *k;
    json_t *v;
    size_t n = 0;
    json_object_foreach((json_t *)e->properties, k, v)
    {
        raw[n] = v;
        pv_from_json(k, strlen(k), v, &pv[n++]);
    }
    p->props = pv;
    p->praw = raw;
    p->nprops = n;
    const json_t *objs[2] = {e->ctx_traits, e->traits}; /* traits win over context.traits */
    for (int w = 0; w < 2; w++)
        json_object_foreach((json_t *)objs[w], k, v)
        {
            size_t kl = strlen(k);
            if (is_traits_ident(db, k, kl))
                continue;
            raw[n] = v;
            pv_from_json(k, kl, v, &pv[n++]);
        }
    p->traits = pv + p->nprops;
    p->traw = raw + p->nprops;
    p->ntraits = n - p->nprops;
    return CP_OK;
}

/* The key of identifier i of e through the identifier key cache. */
static cp_status cached_key(cp_db_t *db, const ingest_event_t *e, size_t i, prep_t *p, arena_t *ar,
                            const char **unusable, cp_error_t *err)
{
    const ingest_ident_t *id = &e->ids[i];
    uint32_t slot;
    const char *hk = idraw_hint(db, i, id->type, id->value, id->len, &slot);
    if (hk) { /* the same identifier as at this position of the event before */
        p->keys[p->nkeys] = hk;
        p->slot[p->nkeys++] = slot;
        return CP_OK;
    }
    size_t tlen = strnlen(id->type, sizeof id->type), klen;
    if (idraw_get(db, i, id->type, tlen, id->value, id->len, &slot)) {
        p->keys[p->nkeys] = idraw_key(db, slot, &klen);
        p->slot[p->nkeys++] = slot;
        return CP_OK;
    }
    if (ident_type_find(&db->idc, id->type, tlen) < 0)
        return CP_ENOTFOUND; /* not a configured type: skipped */
    /* Only values accepted here enter the cache, so its hits above need
     * no placeholder check. */
    if ((*unusable = id_unusable(db, id)) != NULL)
        return CP_ENOTFOUND;
    char buf[IDENT_MAX_KEY + 1];
    cp_status rc = ident_key(&db->idc, id->type, tlen, id->value, id->len, buf, &klen, err);
    if (rc)
        return rc;
    if ((rc = idraw_put(db, i, id->type, tlen, id->value, id->len, buf, klen, &slot)))
        return CP_ERR(err, rc, "out of memory");
    if (slot == UINT32_MAX) {
        p->cached = 0;
        p->keys[p->nkeys] = arena_strndup(ar, buf, klen);
        if (p->keys[p->nkeys] == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
    } else {
        p->keys[p->nkeys] = idraw_key(db, slot, &klen);
    }
    p->slot[p->nkeys++] = slot;
    return CP_OK;
}

/*
 * Checks one event against the schema and identity config (lock held).
 * h: the batch memo of a bulk import, or NULL. wb: where warnings go (a
 * request's batch), NULL for imports (counters only). A value that cannot
 * be used (an unusable or unnormalisable identifier, a trait that does not
 * fit its attribute) is a warning, not an error; errors are what makes the
 * event itself unusable (no identifier left, an unusable event name).
 */
static cp_status prep_event(cp_db_t *db, const ingest_event_t *e, prep_t *p, arena_t *ar, hot_t *h,
                            ingest_batch_t *wb, cp_error_t *err)
{
    cp_status rc;
    /* Field by field: keys[] and slot[] are read only below nkeys. */
    p->nkeys = 0;
    p->prev_user = p->prev_anon = NULL;
    p->display = NULL;
    p->display_len = 0;
    p->props = p->traits = NULL;
    p->praw = p->traw = NULL;
    p->nprops = p->ntraits = 0;
    p->skip = 0;
    /* The key cache is by raw value: a locale hint could change a phone's key. */
    p->cached = h != NULL && e->type != ING_ALIAS && e->phone_cc[0] == '\0';
    uint32_t used = 0; /* identifiers of e that became keys (bit i: e->ids[i]) */
    size_t dropped = 0;
    for (size_t i = 0; i < e->nids; i++) {
        const ingest_ident_t *id = &e->ids[i];
        if (p->cached) {
            const char *why = NULL;
            rc = cached_key(db, e, i, p, ar, &why, NULL);
            if (rc == CP_ENOMEM)
                return CP_ERR(err, rc, "out of memory");
            if (rc == CP_ENOTFOUND && why == NULL)
                continue; /* not a configured type */
            if (rc) {
                id_warn(db, wb, e, id, why ? why : INGEST_WARN_INVALID);
                dropped++;
                continue;
            }
            used |= 1u << i;
            continue;
        }
        if (ident_type_find(&db->idc, id->type, strlen(id->type)) < 0)
            continue;
        const char *why = id_unusable(db, id);
        if (why) {
            id_warn(db, wb, e, id, why);
            dropped++;
            continue;
        }
        char buf[IDENT_MAX_KEY + 1];
        size_t kl;
        cp_error_t ke;
        rc = ident_key_hint(&db->idc, id->type, strlen(id->type), id->value, id->len, e->phone_cc,
                            buf, &kl, &ke);
        if (rc == CP_EINVAL || rc == CP_ELIMIT) {
            id_warn(db, wb, e, id, INGEST_WARN_INVALID);
            dropped++;
            continue;
        }
        if (rc) {
            error_prefix(&ke, "%s: ", id->field);
            return CP_ERR(err, rc, "%s", ke.message);
        }
        if ((p->keys[p->nkeys] = arena_strndup(ar, buf, kl)) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        p->nkeys++;
        used |= 1u << i;
    }
    if (e->type == ING_ALIAS) {
        if ((rc = make_key(db, ar, "user_id", e->previous_id, e->previous_id_len, &p->prev_user,
                           err)) ||
            (rc = make_key(db, ar, "anonymous_id", e->previous_id, e->previous_id_len,
                           &p->prev_anon, err)))
            return rc;
        if (p->nkeys >= IDENTITY_MAX_EVENT_KEYS)
            return CP_ERR(err, CP_ELIMIT, "too many identifiers");
    }
    if (p->nkeys == 0)
        return dropped ? CP_ERR(err, CP_EINVAL,
                                "no usable identifier (%zu unusable value%s, see warnings)",
                                dropped, dropped == 1 ? "" : "s")
                       : CP_ERR(err, CP_EINVAL, "no identifier of a configured type");
    /* The id of a new user: its user_id, else its first identifier key
     * (borrowed: the event and the keys outlive the apply). */
    for (size_t i = 0; i < e->nids; i++)
        if ((used >> i & 1) &&
            !memcmp(e->ids[i].type, "user_id", 8)) { /* with its NUL; type[] has 32 bytes */
            p->display = e->ids[i].value;
            p->display_len = e->ids[i].len;
            break;
        }
    if (p->display == NULL) {
        p->display = p->keys[0];
        p->display_len = strlen(p->keys[0]);
    }
    if (prep_typed(db, e, p, ar))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    for (size_t i = 0; i < p->ntraits; i++) {
        const ev_prop_t *t = &p->traits[i];
        const hot_trait_t *m = hot_trait(db, h, i, t);
        if (p->traw == NULL && (m ? m->is_ident : is_traits_ident(db, t->name, t->nlen)))
            continue;
        const schema_attr_t *a =
            m ? schema_get(&db->sch, m->attr) : schema_find(&db->sch, t->name, t->nlen);
        if (a == NULL)
            continue;
        uint32_t vid = p->traw == NULL ? hot_value(a, m, t) : 0;
        if (m)
            p->tvid[i] = vid;
        tval_t tv;
        char why[160];
        /* kept unindexed by apply_traits, with this warning */
        if (!vid && trait_value(a, t, p->traw ? p->traw[i] : NULL, &tv, why, sizeof why))
            warn_value(db, wb, e, "traits", t->name, t->nlen, INGEST_WARN_TYPE);
    }
    if (e->event && !(h && h->event && h->event_len == e->event_len &&
                      (h->event == e->event || mem_eq(h->event, e->event, e->event_len)))) {
        uint8_t key[BEH_KEY_MAX];
        size_t kl;
        if ((rc = beh_series_key(e->event, e->event_len, NULL, 0, key, &kl)))
            return CP_ERR(err, rc, "event name \"%.64s\" is not usable: too long or empty",
                          e->event);
        if (h) {
            h->event = e->event;
            h->event_len = e->event_len;
        }
    }
    return CP_OK;
}

cp_status prep_batch(cp_db_t *db, ingest_batch_t *b, batch_prep_t *bp, int strict, cp_error_t *err)
{
    memset(bp, 0, sizeof *bp);
    arena_init(&bp->arena, 256u << 20);
    bp->p = calloc(b->n ? b->n : 1, sizeof *bp->p);
    if (bp->p == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    size_t skipped = 0;
    for (size_t i = 0; i < b->n; i++) {
        cp_error_t ee = {0};
        const ingest_event_t *e = &b->events[i];
        /* The warnings of an event rejected here go with it. */
        size_t w0 = b->warned, nw0 = b->nwarnings;
        cp_status rc = prep_event(db, e, &bp->p[i], &bp->arena, NULL, b, &ee);
        if (rc == CP_ENOMEM)
            return CP_ERR(err, rc, "out of memory");
        if (rc) {
            b->warned = w0;
            b->nwarnings = nw0;
            ingest_batch_reject(b, e->index, rc, "%s", ee.message);
            bp->p[i].skip = 1;
            skipped++;
        }
    }
    if (b->rejected && (strict || skipped == b->n))
        return CP_ERR(err, CP_EINVAL, "%zu of %zu events are invalid; nothing was applied",
                      b->rejected, b->n + b->rejected - skipped);
    return CP_OK;
}

/* ---------------------------------------------------------------- apply */

static cp_status ensure_seen_attrs(cp_db_t *db, store_txn_t *txn, cp_error_t *err)
{
    static const char *const names[2] = {"first_seen", "last_seen"};
    uint32_t *ids[2] = {&db->attr_first_seen, &db->attr_last_seen};
    for (int i = 0; i < 2; i++) {
        if (*ids[i])
            continue;
        int created;
        uint32_t id;
        cp_status rc =
            schema_define(&db->sch, txn, names[i], CP_ATTR_TIMESTAMP, &id, &created, err);
        if (rc == CP_ECONFLICT)
            continue; /* declared with another type by the user: leave it alone */
        if (rc)
            return rc;
        if (created && (rc = index_attr_add(db->ix, id, CP_ATTR_TIMESTAMP)))
            return CP_ERR(err, rc, "out of memory");
        *ids[i] = id;
    }
    return CP_OK;
}

static int is_indexed(const cp_db_t *db, const char *k, size_t klen)
{
    for (size_t i = 0; i < db->cfg.nindexed; i++)
        if (strlen(db->cfg.indexed[i]) == klen && !memcmp(db->cfg.indexed[i], k, klen))
            return 1;
    return 0;
}

/*
 * The user an event belongs to: resolves its keys (creating the user or
 * merging users as identity_resolve plans), or takes them from the
 * identity cache when every key is known under one user.
 */
static cp_status resolve_user(cp_db_t *db, store_txn_t *txn, const ingest_event_t *e,
                              const prep_t *p, uint32_t *out, apply_counts_t *c, cp_error_t *err)
{
    cp_status rc;
    const char *keys[IDENTITY_MAX_EVENT_KEYS];
    size_t nk = p->nkeys;
    if (p->cached) { /* bulk import: ordinals kept beside the keys */
        uint32_t o0 = 0, o;
        size_t hit = 0;
        for (; hit < nk; hit++)
            if (p->slot[hit] == UINT32_MAX || !idraw_ord(db, p->slot[hit], &o) || (hit && o != o0))
                break;
            else
                o0 = o;
        if (hit == nk) {
            *out = o0;
            return CP_OK;
        }
    }
    memcpy(keys, p->keys, nk * sizeof *keys);
    if (e->type != ING_ALIAS) {
        uint32_t o0 = 0, o;
        size_t hit = 0;
        for (; hit < nk; hit++)
            if (!idcache_get(db, keys[hit], strlen(keys[hit]), &o) || (hit && o != o0))
                break;
            else
                o0 = o;
        if (hit == nk) {
            *out = o0;
            return CP_OK;
        }
    }
    if (e->type == ING_ALIAS) {
        uint32_t o;
        rc = identity_lookup(txn, p->prev_user, strlen(p->prev_user), &o, err);
        if (rc && rc != CP_ENOTFOUND)
            return rc;
        keys[nk++] = rc == CP_OK ? p->prev_user : p->prev_anon;
    }
    /* Users loaded through the user API before they had events: their id
     * is their user_id. */
    for (size_t i = 0; i < nk; i++) {
        if (strncmp(keys[i], "user_id:", 8) != 0)
            continue;
        uint32_t o;
        rc = identity_lookup(txn, keys[i], strlen(keys[i]), &o, err);
        if (rc != CP_ENOTFOUND) {
            if (rc)
                return rc;
            continue;
        }
        if ((rc = db_user_lookup(txn, keys[i] + 8, strlen(keys[i] + 8), &o, err)) == CP_OK) {
            if ((rc = identity_attach(txn, o, &keys[i], 1, err)))
                return rc;
        } else if (rc != CP_ENOTFOUND) {
            return rc;
        }
    }
    identity_resolution_t r;
    if ((rc = identity_resolve(txn, keys, nk, &r, err)))
        return rc;
    uint32_t ord;
    if (r.ir_new) {
        if (db->next_ordinal > USERS_MAX_ORDINAL)
            return CP_ERR(err, CP_ELIMIT, "no user ordinals left");
        ord = db->next_ordinal++;
        uint32_t other;
        const char *id = p->display;
        size_t idl = p->display_len;
        char alt[32];
        if (users_lookup(txn, id, idl, &other, NULL) == CP_OK) {
            snprintf(alt, sizeof alt, "#%u", ord);
            id = alt;
            idl = strlen(alt);
        }
        if ((rc = users_add(txn, id, idl, ord, err)) ||
            (rc = identity_attach(txn, ord, keys, nk, err)))
            return rc;
        index_user_add(db->ix, ord);
        c->created++;
    } else {
        for (size_t m = 0; m < r.ir_nmerges; m++) {
            const char *cause[IDENTITY_MAX_EVENT_KEYS];
            size_t nc = 0;
            for (size_t i = 0; i < nk; i++)
                if (r.ir_merges[m].cause_mask & (1u << i))
                    cause[nc++] = keys[i];
            if ((rc = do_merge(db, txn, r.ir_merges[m].survivor, r.ir_merges[m].absorbed, cause, nc,
                               e, err)))
                return rc;
            c->merges++;
        }
        if ((rc = identity_attach(txn, r.ir_attach_to, keys, nk, err)))
            return rc;
        ord = r.ir_ordinal;
    }
    for (size_t i = 0; i < nk; i++)
        idcache_put(db, keys[i], strlen(keys[i]), ord);
    if (p->cached) /* after idcache_put: it may clear (and so outdate) the cache */
        for (size_t i = 0; i < p->nkeys; i++)
            if (p->slot[i] != UINT32_MAX)
                idraw_set_ord(db, p->slot[i], ord);
    *out = ord;
    return CP_OK;
}

static cp_status apply_traits(cp_db_t *db, store_txn_t *txn, const prep_t *p, uint32_t ord,
                              hot_t *h, cp_error_t *err)
{
    cp_status rc;
    json_t *ut = NULL;
    /* h: prep_event just filled the memo for these traits, and p->tvid;
     * both hold while no attribute was added since (hot_trait). */
    int carried = h && h->sch_n == db->sch.n;
    for (size_t i = 0; i < p->ntraits; i++) {
        const ev_prop_t *t = &p->traits[i];
        const json_t *raw = p->traw ? p->traw[i] : NULL;
        hot_trait_t *m = carried && i < HOT_TRAITS ? &h->tr[i] : hot_trait(db, h, i, t);
        if (raw == NULL && (m ? m->is_ident : is_traits_ident(db, t->name, t->nlen)))
            continue;
        schema_attr_t *a =
            m ? schema_get(&db->sch, m->attr) : schema_find(&db->sch, t->name, t->nlen);
        if (a) {
            tval_t tv;
            char why[160];
            uint32_t vid = raw != NULL ? 0 : carried && m ? p->tvid[i] : hot_value(a, m, t);
            if (vid) { /* the value set from here last time: known good */
                /* index_set_value would find it unchanged too, at more cost */
                if (index_get_value(db->ix, a->id, ord) != vid &&
                    (rc = index_set_value(db->ix, a->id, ord, vid))) {
                    json_decref(ut);
                    return CP_ERR(err, rc, "setting attribute \"%s\": %s", a->name,
                                  cp_strerror(rc));
                }
                db->acc_stats.attr++;
                continue;
            } else if (trait_value(a, t, raw, &tv, why, sizeof why) == 0) {
                if ((rc = set_value(db, txn, a, ord, &tv, &vid, err))) {
                    json_decref(ut);
                    return rc;
                }
                if (m && raw == NULL && tv.kind == 2)
                    m->vid = vid;
                db->acc_stats.attr++;
                continue;
            }
            /* Does not fit the attribute (prep_event warned): kept with
             * the user's unindexed traits, never clamped into the index. */
        }
        json_t *v = raw ? json_incref((json_t *)raw) : pv_to_json(t);
        if (v == NULL)
            continue;
        if (ut == NULL && (rc = traits_get(txn, ord, &ut, err))) {
            json_decref(v);
            return rc;
        }
        char name[BEH_NAME_MAX + 1];
        snprintf(name, sizeof name, "%.*s", (int)t->nlen, t->name);
        if (json_object_set_new(ut, name, v) != 0) {
            json_decref(ut);
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        }
        if (a == NULL && (rc = acc_catalog_at(db, CAT_TRAITS, i, t->name, t->nlen, t, raw, NULL))) {
            json_decref(ut);
            return CP_ERR(err, rc, "out of memory");
        }
    }
    if (ut) {
        rc = traits_put(txn, ord, ut, err);
        json_decref(ut);
        if (rc)
            return rc;
    }
    return CP_OK;
}

static cp_status apply_day_sums(cp_db_t *db, const ingest_event_t *e, const prep_t *p, uint32_t ord,
                                cp_error_t *err)
{
    meas_sum_value_t sums[8];
    size_t ns = meas_event_sums(db->meas, e->event, e->event_len, p->props, p->nprops, sums,
                                CP_ARRAY_LEN(sums));
    for (size_t i = 0; i < ns; i++) {
        uint8_t key[BEH_KEY_MAX];
        size_t klen;
        uint32_t sid;
        int64_t v = sums[i].v;
        if (v == 0)
            continue;
        uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        cp_status rc = beh_sum_series_key(e->event, e->event_len, sums[i].prop, sums[i].plen, v < 0,
                                          key, &klen);
        if (rc == CP_OK)
            rc = beh_series_intern(db->beh, key, klen, &sid);
        int32_t day = beh_day_of(e->ts);
        if (rc == CP_OK && db->daysum.on && db->daysum.series == sid && db->daysum.day == day &&
            db->daysum.ord == ord) {
            db->daysum.mag = db->daysum.mag + mag < mag ? UINT64_MAX : db->daysum.mag + mag;
            continue;
        }
        if (rc == CP_OK)
            rc = db_daysum_flush(db);
        if (rc == CP_OK) {
            db->daysum.series = sid;
            db->daysum.day = day;
            db->daysum.ord = ord;
            db->daysum.mag = mag;
            db->daysum.on = 1;
        }
        if (rc == CP_EINVAL) /* a name too long for a series key: no day sums */
            continue;
        if (rc)
            return CP_ERR(err, rc, "recording the day sum of \"%.64s\": %s", sums[i].prop,
                          cp_strerror(rc));
    }
    return CP_OK;
}

static cp_status apply_behaviour(cp_db_t *db, const ingest_event_t *e, const prep_t *p,
                                 uint32_t ord, cp_error_t *err)
{
    cp_status rc;
    beh_prop_t props[BEH_MAX_PROPS];
    char bufs[BEH_MAX_PROPS][PV_TEXT_MAX];
    size_t np = 0;
    uint8_t idx[64];
    for (size_t at = 0; at < p->nprops; at += sizeof idx) { /* catalog notes, 64 at a time */
        size_t k = p->nprops - at < sizeof idx ? p->nprops - at : sizeof idx;
        if ((rc = acc_catalog_props(db, at, p->props + at, p->praw ? p->praw + at : NULL, k, idx)))
            return CP_ERR(err, rc, "out of memory");
        for (size_t j = 0; j < k; j++) {
            const ev_prop_t *v = &p->props[at + j];
            if (!idx[j] || np >= BEH_MAX_PROPS || v->nlen > BEH_NAME_MAX)
                continue;
            const char *s;
            size_t n = pv_text(v, bufs[np], &s);
            if (n == 0 || n > BEH_NAME_MAX)
                continue;
            props[np++] = (beh_prop_t){v->name, v->nlen, s, n};
        }
    }
    /* page/screen: their name is a property too */
    if (e->name && np < BEH_MAX_PROPS && e->name_len <= BEH_NAME_MAX && is_indexed(db, "name", 4))
        props[np++] = (beh_prop_t){"name", 4, e->name, e->name_len};
    if (e->group_id && np < BEH_MAX_PROPS)
        props[np++] = (beh_prop_t){"group_id", 8, e->group_id, e->group_id_len};
    uint32_t series[BEH_MAX_EVENT_SERIES];
    size_t ns;
    if ((rc = beh_event_series(db->beh, e->event, e->event_len, props, np, series,
                               BEH_MAX_EVENT_SERIES, &ns)) ||
        (rc = acc_beh(db, series, ns, beh_day_of(e->ts), ord)))
        return CP_ERR(err, rc, "recording event \"%.64s\": %s", e->event, cp_strerror(rc));
    if ((rc = acc_catalog_at(db, CAT_EVENTS, 0, e->event, e->event_len, NULL, NULL, NULL)))
        return CP_ERR(err, rc, "out of memory");
    /* Event measures (index/measure.h): per-user sums, distinct counts
     * and first/last times for RFM and AIPL; bad values are skipped. */
    if ((rc = meas_record(db->meas, ord, e->event, e->event_len, p->props, p->nprops, e->ts)))
        return CP_ERR(err, rc, "recording event measures: %s", cp_strerror(rc));
    db->acc_stats.meas++;
    return apply_day_sums(db, e, p, ord, err);
}

static cp_status apply_event(cp_db_t *db, store_txn_t *txn, const ingest_event_t *e,
                             const prep_t *p, hot_t *h, int64_t now_ms, apply_counts_t *c,
                             cp_error_t *err)
{
    cp_status rc;
    if (!e->no_dedup) {
        if (dedup_check(db->dedup, e->message_hash, now_ms)) {
            c->duplicates++;
            return CP_OK;
        }
        if (dedup_insert(db->dedup, e->message_hash, now_ms))
            return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    if (!db->idc.ic_have_salt && (rc = ident_config_bind(txn, &db->idc, 1, err)))
        return rc;
    uint32_t ord;
    if ((rc = resolve_user(db, txn, e, p, &ord, c, err)))
        return rc;
    feed_note_event(db, e, ord);
    if ((rc = apply_traits(db, txn, p, ord, h, err)))
        return rc;
    /* A mapping's "tags": the taxonomy is not extended by data (a typo in a
     * dictionary would create tags); paths it lacks are counted. */
    for (uint32_t k = 0; k < e->ntags; k++) {
        uint32_t tag = tax_find(&db->tax, e->tags[k], strlen(e->tags[k]));
        if (tag == 0)
            db->acc_stats.tags_unknown++;
        else
            db->acc_stats.tags += (uint64_t)index_tag_assign(db->ix, &db->tax, ord, tag);
    }
    db->acc_stats.tags_unknown += e->ntags_unknown;
    if (e->type == ING_GROUP && e->group_id &&
        (rc =
             group_join(&db->groups, txn, e->group_id, e->group_id_len, ord, e->group_traits, err)))
        return rc;
    if (e->event && (rc = apply_behaviour(db, e, p, ord, err)))
        return rc;
    if ((!db->attr_first_seen || !db->attr_last_seen) && (rc = ensure_seen_attrs(db, txn, err)))
        return rc;
    if ((db->attr_first_seen || db->attr_last_seen) && (rc = acc_seen(db, ord, e->ts)))
        return CP_ERR(err, rc, "out of memory");
    c->applied++;
    return CP_OK;
}

cp_status apply_batch(cp_db_t *db, store_txn_t *txn, ingest_batch_t *b, const batch_prep_t *bp,
                      int64_t now_ms, apply_counts_t *c, cp_error_t *err)
{
    for (size_t i = 0; i < b->n; i++) {
        if (bp->p[i].skip)
            continue;
        cp_status rc = apply_event(db, txn, &b->events[i], &bp->p[i], NULL, now_ms, c, err);
        if (rc) {
            error_prefix(err, "event %zu: ", i);
            return rc;
        }
    }
    return CP_OK;
}

/* ------------------------------------------------------------- imports */

/*
 * Imports: applies a batch of parsed file events into txn,
 * checking each on its own: a bad one is reported through on_reject with
 * its line (lines[i]) and skipped, the others applied. Lock held.
 */
cp_status intake_import_batch(cp_db_t *db, store_txn_t *txn, ingest_batch_t *b,
                              const uint64_t *lines, cp_reject_fn on_reject, void *ud,
                              int64_t now_ms, uint64_t *counts, cp_error_t *err)
{
    arena_t *ar = acc_scratch(db);
    apply_counts_t c = {0};
    cp_status rc = CP_OK;
    hot_t hot;
    memset(&hot, 0, sizeof hot);
    hot.sch_n = db->sch.n;
    idraw_sync(db, 1);
    for (size_t i = 0; rc == CP_OK && i < b->n; i++) {
        prep_t p;
        cp_error_t ee;
        acc_err_reset(&ee);
        idraw_sync(db, 0); /* no key of the cache in use here */
        cp_status pr = prep_event(db, &b->events[i], &p, ar, &hot, NULL, &ee);
        if (pr == CP_ENOMEM) {
            rc = CP_ERR(err, pr, "out of memory");
            break;
        }
        if (pr) {
            error_prefix(&ee, "line %llu: ", (unsigned long long)lines[i]);
            ee.record = lines[i];
            counts[3]++;
            if (on_reject)
                on_reject(ud, &ee);
            continue;
        }
        rc = apply_event(db, txn, &b->events[i], &p, &hot, now_ms, &c, err);
        if (rc)
            error_prefix(err, "line %llu: ", (unsigned long long)lines[i]);
        if (ar->total > (64u << 20))
            arena_reset(ar);
    }
    if (rc == CP_OK)
        rc = acc_flush(db, err);
    arena_reset(ar);
    counts[0] += c.applied;
    counts[1] += c.duplicates;
    counts[2] += c.created;
    counts[4] += c.merges;
    return rc;
}

cp_status db_user_lookup(store_txn_t *txn, const char *id, size_t len, uint32_t *ord,
                         cp_error_t *err)
{
    uint32_t o;
    cp_status rc = users_lookup(txn, id, len, &o, err);
    if (rc)
        return rc;
    if ((rc = identity_canonical(txn, o, ord, err)) == CP_ENOTFOUND) {
        *ord = o;
        rc = CP_OK;
    }
    return rc;
}
