/*
 * measure.c — event measures (measure.h): a configuration of up to
 * MEAS_MAX measures and, per user with a value, one record of slots (one
 * slot per configured measure).
 *
 * Records live in one array (record r's slots are slots[r * nd ..]) and
 * are found from an ordinal through a two-level directory (65,536 chunks
 * of 65,536 record numbers, allocated when a chunk first gets a user), so
 * a lookup is two loads and users without events cost nothing. Freed
 * records go on a free list. Distinct sets are open-addressing tables of
 * 64-bit hashes (0 marks an empty bucket; a hash of 0 is stored as 1).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index/measure.h"
#include "model/propval.h"
#include "util/util.h"

#define DIR_CHUNKS 65536u
#define CHUNK_USERS 65536u
#define REC_MAGIC0 'M'
#define REC_MAGIC1 'U'
#define REC_VERSION 1
#define KEY_CONFIG "meas/config"
#define KEY_USER "meas/u/"
#define KEY_USER_LEN 11                /* "meas/u/" + u32 BE */
#define HASH_SEED UINT64_C(0x6d656173) /* "meas" */

typedef struct mdef {
    uint16_t id;
    meas_kind kind;
    char name[MEAS_NAME_MAX + 1];
    char *events[MEAS_MAX_EVENTS];
    size_t evlen[MEAS_MAX_EVENTS]; /* strlen(events[i]): no strlen per event */
    size_t nevents;
    char *prop; /* sum, distinct */
    size_t proplen;
    int scale; /* sum */
} mdef_t;

typedef struct slot {
    int64_t v;     /* sum, distinct size, first/last time */
    uint64_t n;    /* events */
    uint64_t *set; /* distinct: cap buckets */
    uint32_t cap;
    uint32_t flags;
} slot_t;

struct meas {
    mdef_t defs[MEAS_MAX];
    size_t nd;
    uint16_t next_id;
    int config_dirty;
    uint32_t **dir;        /* DIR_CHUNKS chunk pointers; entries are record + 1 */
    slot_t *slots;         /* caprec * nd */
    uint32_t nrec, caprec; /* records used (incl. free ones) / allocated */
    uint32_t *freel;
    uint32_t nfree, capfree;
    roaring_bitmap_t *users;
    roaring_bitmap_t *dirty;
    uint64_t skipped;
    uint64_t set_bytes;
    /* Bulk imports send runs of one event name and of one user: the
     * measures listening to the last event name (a bit per definition)
     * and the last user marked dirty save the scans and bitmap inserts.
     * Both are forgotten whenever the definitions or the marks change. */
    char last_event[MEAS_EVENT_MAX];
    size_t last_elen;
    uint32_t last_mask;
    int last_event_ok;
    uint32_t last_dirty;
    int last_dirty_ok;
};

/* ------------------------------------------------------------- config */

static void def_clear(mdef_t *d)
{
    for (size_t i = 0; i < d->nevents; i++)
        free(d->events[i]);
    free(d->prop);
    memset(d, 0, sizeof *d);
}

const char *meas_kind_name(meas_kind k)
{
    switch (k) {
    case MEAS_SUM:
        return "sum";
    case MEAS_COUNT:
        return "count";
    case MEAS_DISTINCT:
        return "distinct";
    case MEAS_FIRST:
        return "first";
    case MEAS_LAST:
        return "last";
    }
    return "?";
}

static int kind_of(const char *s, meas_kind *k)
{
    for (int i = MEAS_SUM; i <= MEAS_LAST; i++)
        if (strcmp(s, meas_kind_name((meas_kind)i)) == 0) {
            *k = (meas_kind)i;
            return 1;
        }
    return 0;
}

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n > MEAS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Parses one measure object into d (zeroed on entry). with_id: the
 * persisted form (ids required). */
static cp_status def_parse(const json_t *o, size_t i, int with_id, mdef_t *d, cp_error_t *err)
{
    if (!json_is_object(o))
        return CP_ERR(err, CP_EINVAL, "measures[%zu]: expected an object", i);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        if (strcmp(k, "name") && strcmp(k, "kind") && strcmp(k, "events") &&
            strcmp(k, "property") && strcmp(k, "scale") && strcmp(k, "id") && strcmp(k, "users"))
            return CP_ERR(err, CP_EINVAL,
                          "measures[%zu]: unknown field \"%.64s\" (known: name, kind, events, "
                          "property, scale)",
                          i, k);
    }
    const json_t *nm = json_object_get(o, "name"), *kd = json_object_get(o, "kind"),
                 *ev = json_object_get(o, "events"), *pr = json_object_get(o, "property"),
                 *sc = json_object_get(o, "scale"), *id = json_object_get(o, "id");
    if (!json_is_string(nm) || !name_ok(json_string_value(nm), json_string_length(nm)))
        return CP_ERR(err, CP_EINVAL,
                      "measures[%zu].name: expected 1 to %d characters of a-z, 0-9, _", i,
                      MEAS_NAME_MAX);
    memcpy(d->name, json_string_value(nm), json_string_length(nm) + 1);
    if (!json_is_string(kd) || !kind_of(json_string_value(kd), &d->kind))
        return CP_ERR(err, CP_EINVAL,
                      "measures[%zu] (%s).kind: expected sum, count, distinct, first or last", i,
                      d->name);
    if (!json_is_array(ev) || json_array_size(ev) == 0 || json_array_size(ev) > MEAS_MAX_EVENTS)
        return CP_ERR(err, CP_EINVAL, "measures[%zu] (%s).events: expected 1 to %d event names", i,
                      d->name, MEAS_MAX_EVENTS);
    size_t j;
    json_t *e;
    json_array_foreach(ev, j, e)
    {
        if (!json_is_string(e) || json_string_length(e) == 0 ||
            json_string_length(e) > MEAS_EVENT_MAX)
            return CP_ERR(err, CP_EINVAL, "measures[%zu] (%s).events[%zu]: expected an event name",
                          i, d->name, j);
        if ((d->events[d->nevents] = strdup(json_string_value(e))) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        d->evlen[d->nevents] = json_string_length(e);
        d->nevents++;
    }
    int needs_prop = d->kind == MEAS_SUM || d->kind == MEAS_DISTINCT;
    if (needs_prop != (pr != NULL))
        return CP_ERR(err, CP_EINVAL, "measures[%zu] (%s): a %s measure %s \"property\"", i,
                      d->name, meas_kind_name(d->kind), needs_prop ? "needs a" : "takes no");
    if (pr) {
        if (!json_is_string(pr) || json_string_length(pr) == 0 ||
            json_string_length(pr) > MEAS_EVENT_MAX)
            return CP_ERR(err, CP_EINVAL, "measures[%zu] (%s).property: expected a property name",
                          i, d->name);
        if ((d->prop = strdup(json_string_value(pr))) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        d->proplen = json_string_length(pr);
    }
    d->scale = d->kind == MEAS_SUM ? 2 : 0;
    if (sc) {
        if (d->kind != MEAS_SUM || !json_is_integer(sc) || json_integer_value(sc) < 0 ||
            json_integer_value(sc) > MEAS_MAX_SCALE)
            return CP_ERR(err, CP_EINVAL,
                          "measures[%zu] (%s).scale: only sums have a scale, 0 to %d decimals", i,
                          d->name, MEAS_MAX_SCALE);
        d->scale = (int)json_integer_value(sc);
    }
    if (with_id) {
        if (!json_is_integer(id) || json_integer_value(id) < 1 || json_integer_value(id) > 65535)
            return CP_ERR(err, CP_EIO, "measures[%zu] (%s): missing or bad id", i, d->name);
        d->id = (uint16_t)json_integer_value(id);
    }
    return CP_OK;
}

static int def_same(const mdef_t *a, const mdef_t *b)
{
    if (strcmp(a->name, b->name) || a->kind != b->kind || a->scale != b->scale ||
        a->nevents != b->nevents || (a->prop == NULL) != (b->prop == NULL) ||
        (a->prop && strcmp(a->prop, b->prop)))
        return 0;
    for (size_t i = 0; i < a->nevents; i++)
        if (strcmp(a->events[i], b->events[i]))
            return 0;
    return 1;
}

/* Parses a whole configuration into defs (cleared by the caller on any
 * outcome). */
static cp_status config_parse(const json_t *cfg, int with_id, mdef_t *defs, size_t *nd,
                              cp_error_t *err)
{
    *nd = 0;
    if (!json_is_object(cfg))
        return CP_ERR(err, CP_EINVAL, "measures: expected {\"measures\": [...]}");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)cfg, k, v)
    {
        if (strcmp(k, "measures"))
            return CP_ERR(err, CP_EINVAL, "measures: unknown field \"%.64s\"", k);
    }
    const json_t *a = json_object_get(cfg, "measures");
    if (!json_is_array(a) || json_array_size(a) > MEAS_MAX)
        return CP_ERR(err, CP_EINVAL, "measures: \"measures\" must be an array of at most %d",
                      MEAS_MAX);
    size_t i;
    json_array_foreach(a, i, v)
    {
        cp_status rc = def_parse(v, i, with_id, &defs[i], err);
        *nd = i + 1;
        if (rc)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(defs[j].name, defs[i].name) || (with_id && defs[j].id == defs[i].id))
                return CP_ERR(err, with_id ? CP_EIO : CP_EINVAL,
                              "measures[%zu]: the name \"%s\" is used twice", i, defs[i].name);
    }
    return CP_OK;
}

/* ------------------------------------------------------------ records */

static slot_t *rec_slots(const meas_t *m, uint32_t rec)
{
    return m->slots + (size_t)rec * m->nd;
}

static int rec_of(const meas_t *m, uint32_t user, uint32_t *rec)
{
    const uint32_t *c = m->dir ? m->dir[user >> 16] : NULL;
    if (c == NULL || c[user & 0xFFFF] == 0)
        return 0;
    *rec = c[user & 0xFFFF] - 1;
    return 1;
}

static void slot_release(meas_t *m, slot_t *s)
{
    if (s->set)
        m->set_bytes -= (uint64_t)s->cap * sizeof *s->set;
    free(s->set);
    memset(s, 0, sizeof *s);
}

/* The record of user, created empty when absent. NULL on ENOMEM. */
static slot_t *rec_get(meas_t *m, uint32_t user)
{
    uint32_t r;
    if (rec_of(m, user, &r))
        return rec_slots(m, r);
    if (m->dir == NULL && (m->dir = calloc(DIR_CHUNKS, sizeof *m->dir)) == NULL)
        return NULL;
    uint32_t **c = &m->dir[user >> 16];
    if (*c == NULL && (*c = calloc(CHUNK_USERS, sizeof **c)) == NULL)
        return NULL;
    if (m->nfree) {
        r = m->freel[--m->nfree];
    } else {
        if (m->nrec == m->caprec) {
            uint32_t cap = m->caprec ? m->caprec * 2 : 256;
            if (cap < m->caprec || (size_t)cap * (m->nd ? m->nd : 1) > SIZE_MAX / sizeof(slot_t))
                return NULL;
            slot_t *s = realloc(m->slots, (size_t)cap * (m->nd ? m->nd : 1) * sizeof *s);
            if (s == NULL)
                return NULL;
            m->slots = s;
            m->caprec = cap;
        }
        r = m->nrec++;
    }
    memset(rec_slots(m, r), 0, m->nd * sizeof(slot_t));
    (*c)[user & 0xFFFF] = r + 1;
    roaring_bitmap_add(m->users, user);
    return rec_slots(m, r);
}

static void rec_remove(meas_t *m, uint32_t user)
{
    uint32_t r;
    if (!rec_of(m, user, &r))
        return;
    slot_t *s = rec_slots(m, r);
    for (size_t i = 0; i < m->nd; i++)
        slot_release(m, &s[i]);
    m->dir[user >> 16][user & 0xFFFF] = 0;
    roaring_bitmap_remove(m->users, user);
    if (m->nfree == m->capfree) {
        uint32_t cap = m->capfree ? m->capfree * 2 : 64;
        uint32_t *f = realloc(m->freel, (size_t)cap * sizeof *f);
        if (f == NULL)
            return; /* the record leaks inside the array until the index is freed */
        m->freel = f;
        m->capfree = cap;
    }
    m->freel[m->nfree++] = r;
}

/* Inserts hash h into a distinct set; 1 if it was new. CP_ENOMEM as -1. */
static int set_insert(meas_t *m, slot_t *s, uint64_t h)
{
    if (h == 0)
        h = 1;
    if ((uint64_t)s->v >= MEAS_DISTINCT_MAX) {
        /* Full: a value already in the set is still recognised. */
        for (uint32_t i = (uint32_t)(h & (s->cap - 1));; i = (i + 1) & (s->cap - 1)) {
            if (s->set[i] == h)
                return 0;
            if (s->set[i] == 0)
                break;
        }
        s->flags |= MEAS_FLAG_SATURATED;
        return 0;
    }
    if ((uint64_t)(s->v + 1) * 2 > s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 8;
        uint64_t *t = calloc(cap, sizeof *t);
        if (t == NULL)
            return -1;
        for (uint32_t i = 0; i < s->cap; i++) {
            uint64_t x = s->set[i];
            if (x == 0)
                continue;
            uint32_t j = (uint32_t)(x & (cap - 1));
            while (t[j])
                j = (j + 1) & (cap - 1);
            t[j] = x;
        }
        m->set_bytes += (uint64_t)(cap - s->cap) * sizeof *t;
        free(s->set);
        s->set = t;
        s->cap = cap;
    }
    uint32_t i = (uint32_t)(h & (s->cap - 1));
    while (s->set[i]) {
        if (s->set[i] == h)
            return 0;
        i = (i + 1) & (s->cap - 1);
    }
    s->set[i] = h;
    s->v++;
    return 1;
}

/* ------------------------------------------------------------ life */

cp_status meas_create(meas_t **out)
{
    *out = NULL;
    meas_t *m = calloc(1, sizeof *m);
    if (m == NULL || (m->users = roaring_bitmap_create()) == NULL ||
        (m->dirty = roaring_bitmap_create()) == NULL) {
        meas_free(m);
        return CP_ENOMEM;
    }
    json_t *j = json_loads_checked(MEAS_DEFAULT_JSON, 0, NULL);
    cp_status rc = j ? config_parse(j, 0, m->defs, &m->nd, NULL) : CP_ENOMEM;
    json_decref(j);
    if (rc) {
        meas_free(m);
        return CP_ENOMEM; /* the default parses: only memory can fail */
    }
    for (size_t i = 0; i < m->nd; i++)
        m->defs[i].id = (uint16_t)(i + 1);
    m->next_id = (uint16_t)(m->nd + 1);
    m->config_dirty = 1;
    *out = m;
    return CP_OK;
}

void meas_free(meas_t *m)
{
    if (m == NULL)
        return;
    for (uint32_t r = 0; m->slots && r < m->nrec; r++)
        for (size_t i = 0; i < m->nd; i++)
            free(rec_slots(m, r)[i].set);
    for (size_t i = 0; i < MEAS_MAX; i++)
        def_clear(&m->defs[i]);
    if (m->dir)
        for (uint32_t c = 0; c < DIR_CHUNKS; c++)
            free(m->dir[c]);
    free(m->dir);
    free(m->slots);
    free(m->freel);
    if (m->users)
        roaring_bitmap_free(m->users);
    if (m->dirty)
        roaring_bitmap_free(m->dirty);
    free(m);
}

size_t meas_count(const meas_t *m)
{
    return m->nd;
}

int meas_find(const meas_t *m, const char *name, meas_kind *kind, int *scale)
{
    for (size_t i = 0; i < m->nd; i++)
        if (strcmp(m->defs[i].name, name) == 0) {
            if (kind)
                *kind = m->defs[i].kind;
            if (scale)
                *scale = m->defs[i].scale;
            return (int)i;
        }
    return -1;
}

/* Re-lays every record out for new definitions: map[i] is the old index
 * of new measure i or -1. Frees what dropped measures held. */
static cp_status relayout(meas_t *m, const mdef_t *nd_defs, size_t nnew, const int *map)
{
    slot_t *ns = NULL;
    size_t per = nnew ? nnew : 1;
    if (m->caprec && (ns = calloc((size_t)m->caprec * per, sizeof *ns)) == NULL)
        return CP_ENOMEM;
    for (uint32_t r = 0; r < m->nrec; r++) {
        slot_t *old = rec_slots(m, r);
        int used[MEAS_MAX] = {0};
        for (size_t i = 0; i < nnew; i++)
            if (map[i] >= 0) {
                ns[(size_t)r * per + i] = old[map[i]];
                used[map[i]] = 1;
            }
        for (size_t j = 0; j < m->nd; j++)
            if (!used[j])
                slot_release(m, &old[j]);
    }
    free(m->slots);
    m->slots = ns;
    (void)nd_defs;
    return CP_OK;
}

cp_status meas_config_set_json(meas_t *m, const json_t *cfg, cp_error_t *err)
{
    mdef_t defs[MEAS_MAX];
    memset(defs, 0, sizeof defs);
    size_t n = 0;
    cp_status rc = config_parse(cfg, 0, defs, &n, err);
    int map[MEAS_MAX];
    if (rc)
        goto out;
    uint16_t next = m->next_id;
    for (size_t i = 0; i < n; i++) {
        map[i] = -1;
        for (size_t j = 0; j < m->nd; j++)
            if (def_same(&defs[i], &m->defs[j])) {
                map[i] = (int)j;
                defs[i].id = m->defs[j].id;
            }
        if (map[i] < 0) {
            if (next == UINT16_MAX) {
                rc = CP_ERR(err, CP_ELIMIT, "measures: no measure ids left");
                goto out;
            }
            defs[i].id = next++;
        }
    }
    if ((rc = relayout(m, defs, n, map))) {
        CP_ERR(err, rc, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m->nd; i++)
        def_clear(&m->defs[i]);
    memcpy(m->defs, defs, sizeof defs);
    memset(defs, 0, sizeof defs);
    m->nd = n;
    m->last_event_ok = 0;
    m->next_id = next;
    m->config_dirty = 1;
    /* Users whose every value was dropped go; the rest are rewritten. */
    roaring_bitmap_t *all = roaring_bitmap_copy(m->users);
    if (all == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    roaring_uint32_iterator_t it;
    roaring_init_iterator(all, &it);
    for (; it.has_value; roaring_advance_uint32_iterator(&it)) {
        uint32_t r;
        if (!rec_of(m, it.current_value, &r))
            continue;
        int any = 0;
        for (size_t i = 0; i < m->nd && !any; i++)
            any = rec_slots(m, r)[i].n > 0;
        if (!any)
            rec_remove(m, it.current_value);
        roaring_bitmap_add(m->dirty, it.current_value);
    }
    roaring_bitmap_free(all);
out:
    for (size_t i = 0; i < MEAS_MAX; i++)
        def_clear(&defs[i]);
    return rc;
}

/*
 * The configuration as JSON, or NULL when an allocation fails: never a
 * document missing a field, which meas_persist would store as a different
 * configuration. Every set and append is checked (they take their value's
 * reference even when they fail, so nothing leaks).
 */
static json_t *config_json(const meas_t *m, int with_id)
{
    json_t *o = json_object(), *a = json_array();
    if (json_object_set_new(o, "measures", a) != 0)
        goto fail;
    for (size_t i = 0; i < m->nd; i++) {
        const mdef_t *d = &m->defs[i];
        json_t *x = json_object(), *ev = json_array();
        if (json_array_append_new(a, x) != 0) {
            json_decref(ev);
            goto fail;
        }
        if (json_object_set_new(x, "name", json_string(d->name)) != 0 ||
            json_object_set_new(x, "kind", json_string(meas_kind_name(d->kind))) != 0) {
            json_decref(ev);
            goto fail;
        }
        if (json_object_set_new(x, "events", ev) != 0)
            goto fail;
        for (size_t j = 0; j < d->nevents; j++)
            if (json_array_append_new(ev, json_string(d->events[j])) != 0)
                goto fail;
        if (d->prop && json_object_set_new(x, "property", json_string(d->prop)) != 0)
            goto fail;
        if (d->kind == MEAS_SUM && json_object_set_new(x, "scale", json_integer(d->scale)) != 0)
            goto fail;
        if (with_id) {
            if (json_object_set_new(x, "id", json_integer(d->id)) != 0)
                goto fail;
        } else {
            uint64_t users = 0;
            for (uint32_t r = 0; r < m->nrec; r++)
                users += rec_slots(m, r)[i].n > 0;
            if (json_object_set_new(x, "users", json_integer((json_int_t)users)) != 0)
                goto fail;
        }
    }
    return o;
fail:
    json_decref(o);
    return NULL;
}

json_t *meas_config_json(const meas_t *m)
{
    return config_json(m, 0);
}

/* --------------------------------------------------------------- writes */

/*
 * Exact decimal text to fixed point with `scale` decimals, rounded half
 * away from zero: "12.345" at scale 2 is 1235. 0 on success.
 */
static int decimal_fixed(const char *s, size_t n, int scale, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    uint64_t v = 0;
    int digits = 0, frac = -1, round_up = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '.' && frac < 0) {
            frac = 0;
            continue;
        }
        if (c < '0' || c > '9')
            return -1;
        digits++;
        if (frac >= 0 && frac >= scale) {
            if (frac == scale)
                round_up = c >= '5';
            frac++;
            continue;
        }
        if (v > (UINT64_C(1) << 62) / 10)
            return -1;
        v = v * 10 + (uint64_t)(c - '0');
        if (frac >= 0)
            frac++;
    }
    if (digits == 0)
        return -1;
    for (int f = frac < 0 ? 0 : frac; f < scale; f++) {
        if (v > (UINT64_C(1) << 62) / 10)
            return -1;
        v *= 10;
    }
    v += (uint64_t)round_up;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

static const int64_t pow10_tab[MEAS_MAX_SCALE + 1] = {1, 10, 100, 1000, 10000, 100000, 1000000};

int meas_real_fixed_slow(double d, int scale, int64_t *out)
{
    if (scale < 0 || scale > MEAS_MAX_SCALE)
        return -1;
    /* The shortest text that reads back as the double is what the sender
     * wrote (15.3, not 15.2999...): round that exactly. */
    char buf[40];
    fmt_double(d, buf, sizeof buf);
    if (decimal_fixed(buf, strlen(buf), scale, out) == 0)
        return 0;
    /* Exponent notation (1e-07, 2.5e+20): round the product. */
    double x = d * (double)pow10_tab[scale];
    if (!isfinite(x) || fabs(x) >= 9.2e18)
        return -1;
    *out = (int64_t)llround(x);
    return 0;
}

/*
 * The same answer as meas_real_fixed_slow without formatting text, for
 * every value not within a hair of a rounding boundary (2.55, and also
 * 6 * 2.55 = 15.299999999999999, the Online Retail amounts).
 *
 * Why it is exact. Let p = 10^scale, x the exact value of d, T the text
 * the slow path rounds (fmt_double: a decimal that reads back as d,
 * so |T - x| <= ulp(d) / 2 <= 2^-53 |x|) and y = fl(x * p), so |y - x p|
 * <= 2^-53 |x p|. Then |T p - y| <= 2^-52 |x p| < 2^-51 |y|. The slow path
 * rounds T p half away from zero (decimal_fixed), or, when T has an
 * exponent (|d| < 1e-4), returns llround(y). If the distance from |y| to
 * the nearest half-integer exceeds 2^-50 |y|, T p, x p and y all lie
 * strictly between the same two half-integers, so every one of those
 * roundings is the integer nearest to y, which is what is returned. With
 * |y| < 1e15 the integer part is exact, T is printed without exponent for
 * |d| >= 1e-4 and decimal_fixed cannot overflow. Values at or near a half
 * (0.125, 2.675, whose shortest text is the half itself) and huge ones
 * take the slow path. The unit test compares both on millions of doubles.
 */
int meas_real_fixed(double d, int scale, int64_t *out)
{
    if (scale < 0 || scale > MEAS_MAX_SCALE)
        return -1;
    double y = d * (double)pow10_tab[scale];
    double a = fabs(y);
    if (a < 1e15) {                        /* false for NaN */
        double fl = floor(a), fr = a - fl; /* exact: Sterbenz, or fl = 0 */
        if (fabs(fr - 0.5) > 0x1p-50 * a) {
            int64_t r = (int64_t)fl + (fr > 0.5);
            *out = y < 0 ? -r : r;
            return 0;
        }
    }
    return meas_real_fixed_slow(d, scale, out);
}

/* A property value in fixed point: integers exactly, reals through
 * meas_real_fixed, numeric strings through decimal_fixed. 0 on success. */
static int value_fixed(const ev_prop_t *p, int scale, int64_t *out)
{
    switch (p->kind) {
    case PV_INT:
        if (p->i > INT64_MAX / pow10_tab[scale] || p->i < -(INT64_MAX / pow10_tab[scale]))
            return -1;
        *out = p->i * pow10_tab[scale];
        return 0;
    case PV_REAL:
        return meas_real_fixed(p->d, scale, out);
    case PV_STR:
        return decimal_fixed(p->s, p->slen, scale, out);
    case PV_BOOL:
    case PV_NONE:
        break;
    }
    return -1;
}

int meas_number_fixed(const ev_prop_t *p, int scale, int64_t *out)
{
    if (scale < 0 || scale > MEAS_MAX_SCALE)
        return -1;
    return value_fixed(p, scale, out);
}

static int def_listens(const mdef_t *d, const char *event, size_t elen)
{
    for (size_t j = 0; j < d->nevents; j++)
        if (d->evlen[j] == elen && memcmp(d->events[j], event, elen) == 0)
            return 1;
    return 0;
}

size_t meas_event_sums(const meas_t *m, const char *event, size_t elen, const ev_prop_t *props,
                       size_t n, meas_sum_value_t *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < m->nd && k < cap; i++) {
        const mdef_t *d = &m->defs[i];
        if (d->kind != MEAS_SUM || !def_listens(d, event, elen))
            continue;
        int seen = 0;
        for (size_t j = 0; j < k && !seen; j++)
            seen = out[j].plen == d->proplen && memcmp(out[j].prop, d->prop, d->proplen) == 0;
        const ev_prop_t *pv = seen ? NULL : pv_find(props, n, d->prop, d->proplen);
        int64_t x;
        if (pv == NULL || value_fixed(pv, d->scale, &x))
            continue;
        out[k++] = (meas_sum_value_t){d->prop, d->proplen, d->scale, x};
    }
    return k;
}

int meas_sum_scale(const meas_t *m, const char *event, size_t elen, const char *prop, size_t plen,
                   int *scale)
{
    for (size_t i = 0; i < m->nd; i++) {
        const mdef_t *d = &m->defs[i];
        if (d->kind == MEAS_SUM && d->proplen == plen && memcmp(d->prop, prop, plen) == 0 &&
            def_listens(d, event, elen)) {
            *scale = d->scale;
            return 1;
        }
    }
    return 0;
}

/* A bit per definition listening to `event`. */
static uint32_t listeners(meas_t *m, const char *event, size_t elen)
{
    if (m->last_event_ok && m->last_elen == elen && memcmp(m->last_event, event, elen) == 0)
        return m->last_mask;
    uint32_t mask = 0;
    for (size_t i = 0; i < m->nd; i++) {
        const mdef_t *d = &m->defs[i];
        for (size_t j = 0; j < d->nevents; j++)
            if (d->evlen[j] == elen && memcmp(d->events[j], event, elen) == 0) {
                mask |= 1u << i;
                break;
            }
    }
    if (elen <= sizeof m->last_event) { /* longer names listen to nothing: not cached */
        memcpy(m->last_event, event, elen);
        m->last_elen = elen;
        m->last_mask = mask;
        m->last_event_ok = 1;
    }
    return mask;
}

static void mark_user(meas_t *m, uint32_t user)
{
    if (m->last_dirty_ok && m->last_dirty == user)
        return;
    roaring_bitmap_add(m->dirty, user);
    m->last_dirty = user;
    m->last_dirty_ok = 1;
}

static int64_t sat_add(int64_t a, int64_t b, uint32_t *flags)
{
    if ((b > 0 && a > INT64_MAX - b) || (b < 0 && a < INT64_MIN - b)) {
        *flags |= MEAS_FLAG_SATURATED;
        return b > 0 ? INT64_MAX : INT64_MIN;
    }
    return a + b;
}

cp_status meas_record(meas_t *m, uint32_t user, const char *event, size_t elen,
                      const ev_prop_t *props, size_t n, int64_t ts)
{
    uint32_t mask = listeners(m, event, elen);
    slot_t *rec = NULL;
    while (mask) {
        size_t i = (size_t)__builtin_ctz(mask);
        mask &= mask - 1;
        const mdef_t *d = &m->defs[i];
        const ev_prop_t *pv = d->prop ? pv_find(props, n, d->prop, d->proplen) : NULL;
        int64_t x = 0;
        uint64_t h = 0;
        if (d->kind == MEAS_SUM) {
            if (pv == NULL || value_fixed(pv, d->scale, &x)) {
                m->skipped++;
                continue;
            }
        } else if (d->kind == MEAS_DISTINCT) {
            if (pv == NULL || pv->kind == PV_NONE) {
                m->skipped++;
                continue;
            }
            char buf[PV_TEXT_MAX];
            const char *txt;
            size_t tl = pv_text(pv, buf, &txt);
            h = hash64(txt, tl, HASH_SEED);
        }
        if (rec == NULL && (rec = rec_get(m, user)) == NULL)
            return CP_ENOMEM;
        slot_t *s = &rec[i];
        switch (d->kind) {
        case MEAS_SUM:
            s->v = sat_add(s->v, x, &s->flags);
            break;
        case MEAS_COUNT:
            s->v = (int64_t)(s->n + 1);
            break;
        case MEAS_DISTINCT:
            if (set_insert(m, s, h) < 0)
                return CP_ENOMEM;
            break;
        case MEAS_FIRST:
            if (s->n == 0 || ts < s->v)
                s->v = ts;
            break;
        case MEAS_LAST:
            if (s->n == 0 || ts > s->v)
                s->v = ts;
            break;
        }
        s->n++;
    }
    if (rec)
        mark_user(m, user);
    return CP_OK;
}

cp_status meas_record_event(meas_t *m, uint32_t user, const char *event, size_t elen,
                            const json_t *props, int64_t ts)
{
    /* Only the properties some measure reads matter: at most one per
     * definition, looked up in the object as the typed path would. */
    ev_prop_t pv[MEAS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < m->nd && props; i++) {
        const mdef_t *d = &m->defs[i];
        const json_t *v = d->prop ? json_object_get(props, d->prop) : NULL;
        if (v != NULL)
            pv_from_json(d->prop, d->proplen, v, &pv[n++]);
    }
    return meas_record(m, user, event, elen, pv, n, ts);
}

void meas_user_remove(meas_t *m, uint32_t user)
{
    uint32_t r;
    if (!rec_of(m, user, &r))
        return;
    rec_remove(m, user);
    roaring_bitmap_add(m->dirty, user);
}

cp_status meas_user_move(meas_t *m, uint32_t from, uint32_t to)
{
    uint32_t rf = 0;
    if (from == to || !rec_of(m, from, &rf))
        return CP_OK;
    if (rec_get(m, to) == NULL) /* may move m->slots: index again below */
        return CP_ENOMEM;
    uint32_t rt = 0;
    rec_of(m, to, &rt);
    rec_of(m, from, &rf);
    for (size_t i = 0; i < m->nd; i++) {
        slot_t *a = &rec_slots(m, rf)[i], *b = &rec_slots(m, rt)[i];
        if (a->n == 0)
            continue;
        switch (m->defs[i].kind) {
        case MEAS_SUM:
            b->v = sat_add(b->v, a->v, &b->flags);
            break;
        case MEAS_COUNT:
            b->v = (int64_t)(b->n + a->n);
            break;
        case MEAS_DISTINCT:
            for (uint32_t j = 0; j < a->cap; j++)
                if (a->set[j] && set_insert(m, b, a->set[j]) < 0)
                    return CP_ENOMEM;
            break;
        case MEAS_FIRST:
            if (b->n == 0 || a->v < b->v)
                b->v = a->v;
            break;
        case MEAS_LAST:
            if (b->n == 0 || a->v > b->v)
                b->v = a->v;
            break;
        }
        b->flags |= a->flags;
        b->n += a->n;
    }
    rec_remove(m, from);
    roaring_bitmap_add(m->dirty, from);
    roaring_bitmap_add(m->dirty, to);
    return CP_OK;
}

/* ---------------------------------------------------------------- reads */

int meas_get(const meas_t *m, int idx, uint32_t user, meas_value_t *out)
{
    uint32_t r;
    if (idx < 0 || (size_t)idx >= m->nd || !rec_of(m, user, &r))
        return 0;
    const slot_t *s = &rec_slots(m, r)[idx];
    if (s->n == 0)
        return 0;
    out->v = s->v;
    out->n = s->n;
    out->flags = s->flags;
    return 1;
}

const roaring_bitmap_t *meas_users(const meas_t *m)
{
    return m->users;
}

uint64_t meas_skipped(const meas_t *m)
{
    return m->skipped;
}

uint64_t meas_memory(const meas_t *m)
{
    uint64_t b = (uint64_t)m->caprec * (m->nd ? m->nd : 1) * sizeof(slot_t) + m->set_bytes;
    if (m->dir) {
        b += DIR_CHUNKS * sizeof *m->dir;
        for (uint32_t c = 0; c < DIR_CHUNKS; c++)
            b += m->dir[c] ? CHUNK_USERS * sizeof(uint32_t) : 0;
    }
    return b;
}

size_t meas_dirty_count(const meas_t *m)
{
    return (size_t)roaring_bitmap_get_cardinality(m->dirty);
}

/* ---------------------------------------------------------- persistence */

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void user_key(uint8_t k[KEY_USER_LEN], uint32_t user)
{
    memcpy(k, KEY_USER, 7);
    k[7] = (uint8_t)(user >> 24);
    k[8] = (uint8_t)(user >> 16);
    k[9] = (uint8_t)(user >> 8);
    k[10] = (uint8_t)user;
}

/* One record's bytes into b. */
static cp_status rec_encode(const meas_t *m, const slot_t *rec, buf_t *b)
{
    uint8_t hdr[4] = {REC_MAGIC0, REC_MAGIC1, REC_VERSION, 0};
    for (size_t i = 0; i < m->nd; i++)
        hdr[3] += rec[i].n > 0;
    if (buf_append(b, hdr, 4))
        return CP_ENOMEM;
    for (size_t i = 0; i < m->nd; i++) {
        const slot_t *s = &rec[i];
        if (s->n == 0)
            continue;
        uint8_t x[20];
        x[0] = (uint8_t)m->defs[i].id;
        x[1] = (uint8_t)(m->defs[i].id >> 8);
        x[2] = (uint8_t)m->defs[i].kind;
        x[3] = (uint8_t)s->flags;
        put_le64(x + 4, (uint64_t)s->v);
        if (buf_append(b, x, 12))
            return CP_ENOMEM;
        put_le64(x, s->n);
        if (buf_append(b, x, 8))
            return CP_ENOMEM;
        if (m->defs[i].kind != MEAS_DISTINCT)
            continue;
        uint32_t k = (uint32_t)s->v;
        uint8_t kb[4] = {(uint8_t)k, (uint8_t)(k >> 8), (uint8_t)(k >> 16), (uint8_t)(k >> 24)};
        if (buf_append(b, kb, 4))
            return CP_ENOMEM;
        for (uint32_t j = 0; j < s->cap; j++) {
            if (s->set[j] == 0)
                continue;
            put_le64(x, s->set[j]);
            if (buf_append(b, x, 8))
                return CP_ENOMEM;
        }
    }
    return CP_OK;
}

cp_status meas_persist(meas_t *m, store_txn_t *txn, store_db db, cp_error_t *err)
{
    cp_status rc = CP_OK;
    buf_t b;
    buf_init(&b, 64u << 20);
    if (m->config_dirty) {
        json_t *j = config_json(m, 1);
        char *s = j ? json_dumps_checked(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (s == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory saving the measures configuration");
        rc = store_put(txn, db, KEY_CONFIG, strlen(KEY_CONFIG), s, strlen(s), err);
        free(s);
        if (rc)
            return rc;
    }
    roaring_uint32_iterator_t it;
    roaring_init_iterator(m->dirty, &it);
    for (; it.has_value; roaring_advance_uint32_iterator(&it)) {
        uint8_t k[KEY_USER_LEN];
        uint32_t r;
        user_key(k, it.current_value);
        if (!rec_of(m, it.current_value, &r)) {
            rc = store_del(txn, db, k, sizeof k, err);
        } else {
            b.len = 0;
            if ((rc = rec_encode(m, rec_slots(m, r), &b))) {
                rc = CP_ERR(err, rc, "out of memory saving measures");
                break;
            }
            rc = store_put(txn, db, k, sizeof k, b.data, b.len, err);
        }
        if (rc)
            break;
    }
    buf_free(&b);
    if (rc)
        return rc;
    /* Everything is in the transaction: clear the marks. */
    roaring_bitmap_clear(m->dirty);
    m->last_dirty_ok = 0;
    m->config_dirty = 0;
    return CP_OK;
}

typedef struct load_ctx {
    meas_t *m;
} load_ctx_t;

static cp_status load_user(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *err)
{
    meas_t *m = ((load_ctx_t *)ud)->m;
    const uint8_t *kp = k, *p = v;
    if (kl != KEY_USER_LEN)
        return CP_ERR(err, CP_EIO, "measures: unexpected key of %zu bytes", kl);
    uint32_t user = (uint32_t)kp[7] << 24 | (uint32_t)kp[8] << 16 | (uint32_t)kp[9] << 8 | kp[10];
    if (vl < 4 || p[0] != REC_MAGIC0 || p[1] != REC_MAGIC1 || p[2] != REC_VERSION)
        return CP_ERR(err, CP_EIO, "measures of user %u: corrupt record header", user);
    uint32_t r;
    if (rec_of(m, user, &r))
        return CP_ERR(err, CP_EIO, "measures of user %u: stored twice", user);
    size_t ns = p[3], o = 4;
    slot_t *rec = NULL;
    for (size_t i = 0; i < ns; i++) {
        if (vl - o < 20)
            return CP_ERR(err, CP_EIO, "measures of user %u: truncated slot %zu", user, i);
        uint16_t id = (uint16_t)(p[o] | p[o + 1] << 8);
        meas_kind kind = (meas_kind)p[o + 2];
        uint32_t flags = p[o + 3];
        int64_t val = (int64_t)get_le64(p + o + 4);
        uint64_t n = get_le64(p + o + 12);
        o += 20;
        if (kind < MEAS_SUM || kind > MEAS_LAST || n == 0 || (flags & ~MEAS_FLAG_SATURATED))
            return CP_ERR(err, CP_EIO, "measures of user %u: corrupt slot %zu", user, i);
        size_t idx = m->nd;
        for (size_t j = 0; j < m->nd; j++)
            if (m->defs[j].id == id)
                idx = j;
        uint32_t cnt = 0;
        if (kind == MEAS_DISTINCT) {
            if (vl - o < 4)
                return CP_ERR(err, CP_EIO, "measures of user %u: truncated slot %zu", user, i);
            cnt = (uint32_t)(p[o] | p[o + 1] << 8 | p[o + 2] << 16 | (uint32_t)p[o + 3] << 24);
            o += 4;
            if (cnt == 0 || cnt > MEAS_DISTINCT_MAX || (uint64_t)cnt != (uint64_t)val ||
                (vl - o) / 8 < cnt)
                return CP_ERR(err, CP_EIO, "measures of user %u: corrupt distinct set in slot %zu",
                              user, i);
        }
        if (idx == m->nd || m->defs[idx].kind != kind) {
            o += (size_t)cnt * 8; /* a measure no longer configured */
            continue;
        }
        if (rec == NULL && (rec = rec_get(m, user)) == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory loading measures");
        slot_t *s = &rec[idx];
        if (s->n)
            return CP_ERR(err, CP_EIO, "measures of user %u: measure %u twice", user, id);
        if (kind == MEAS_DISTINCT) {
            for (uint32_t j = 0; j < cnt; j++, o += 8) {
                int fresh = set_insert(m, s, get_le64(p + o));
                if (fresh < 0)
                    return CP_ERR(err, CP_ENOMEM, "out of memory loading measures");
                if (fresh == 0)
                    return CP_ERR(err, CP_EIO, "measures of user %u: repeated hash in slot %zu",
                                  user, i);
            }
        } else {
            s->v = kind == MEAS_COUNT ? (int64_t)n : val;
        }
        s->n = n;
        s->flags = flags;
    }
    if (o != vl)
        return CP_ERR(err, CP_EIO, "measures of user %u: %zu trailing bytes", user, vl - o);
    return CP_OK;
}

cp_status meas_load(meas_t *m, store_txn_t *txn, store_db db, cp_error_t *err)
{
    if (m->nrec)
        return CP_ERR(err, CP_EINVAL, "measures: load into a non-empty index");
    const void *v;
    size_t vl;
    cp_status rc = store_get(txn, db, KEY_CONFIG, strlen(KEY_CONFIG), &v, &vl, err);
    if (rc == CP_OK) {
        json_error_t je;
        json_t *j = json_loadb_checked(v, vl, 0, &je);
        if (j == NULL && json_is_oom(&je))
            return CP_ERR(err, CP_ENOMEM, "out of memory reading measures (meas/config)");
        mdef_t defs[MEAS_MAX];
        memset(defs, 0, sizeof defs);
        size_t n = 0;
        rc = j ? config_parse(j, 1, defs, &n, err) : CP_EIO;
        json_decref(j);
        if (rc) {
            for (size_t i = 0; i < MEAS_MAX; i++)
                def_clear(&defs[i]);
            return CP_ERR(err, CP_EIO, "measures: corrupt configuration (meas/config)");
        }
        for (size_t i = 0; i < MEAS_MAX; i++)
            def_clear(&m->defs[i]);
        memcpy(m->defs, defs, sizeof defs);
        m->nd = n;
        m->last_event_ok = 0;
        m->next_id = 1;
        for (size_t i = 0; i < n; i++)
            if (defs[i].id >= m->next_id)
                m->next_id = (uint16_t)(defs[i].id + 1);
        m->config_dirty = 0;
    } else if (rc != CP_ENOTFOUND) {
        return rc;
    }
    load_ctx_t c = {m};
    if ((rc = store_each(txn, db, KEY_USER, 7, load_user, &c, err)))
        return rc;
    roaring_bitmap_clear(m->dirty);
    m->last_dirty_ok = 0;
    return CP_OK;
}
