/* beh_cell.c — the behaviour index's cells: the index itself, a cell's two
 * forms (a sorted array of at most SMALL_MAX users, or roaring bitmaps),
 * dirty marks for the next persist, writes of one event at a time,
 * retention and sizes; see behavior.h and beh_int.h. */
#include <stdlib.h>
#include <string.h>

#include "index/beh_int.h"

/* Frees what the cell's form holds (not dchunks) and leaves it an empty
 * small cell. */
void beh__cell_form_release(beh_cell_t *c)
{
    if (c->small) {
        if (c->cap > SMALL_INLINE)
            free(c->heap);
    } else {
        bm_free(c->exists);
        for (int j = 0; j < c->nslices; j++)
            bm_free(c->slices[j]);
        free(c->slices);
    }
    memset(c->in, 0, sizeof c->in);
    c->small = 1;
    c->n = 0;
    c->cap = SMALL_INLINE;
    c->nslices = 0;
}

void beh__cell_release(beh_cell_t *c)
{
    beh__cell_form_release(c);
    bm_free(c->dchunks);
    memset(c, 0, sizeof *c);
}

cp_status beh_create(beh_t **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? CP_OK : CP_ENOMEM;
}

void beh_free(beh_t *b)
{
    if (b == NULL)
        return;
    for (uint32_t s = 0; s < b->nseries; s++) {
        series_t *se = &b->series[s];
        for (uint32_t i = 0; i < se->ncells; i++)
            beh__cell_release(&se->cells[i]);
        free(se->cells);
        free(se->key);
        bm_free(se->ever);
    }
    free(b->series);
    free(b->slots);
    free(b->dirty);
    free(b->packs);
    free(b->memo);
    beh__scratch_free(b);
    free(b);
}

int32_t beh_day_of(int64_t secs)
{
    int64_t d = secs >= 0 ? secs / 86400 : -((-(secs + 1)) / 86400) - 1;
    return d < INT32_MIN ? INT32_MIN : d > INT32_MAX ? INT32_MAX : (int32_t)d;
}

/* ---------------------------------------------------------------- cells */

void beh__mark_dirty(beh_t *b, uint32_t series, int32_t day, int wipe)
{
    if (b->ndirty == b->capdirty) {
        size_t cap = b->capdirty ? b->capdirty * 2 : 64;
        dirty_t *v = realloc(b->dirty, cap * sizeof *v);
        if (v == NULL) {
            b->failed = 1;
            return;
        }
        b->dirty = v;
        b->capdirty = cap;
    }
    b->dirty[b->ndirty++] = (dirty_t){series, day, wipe, NULL};
}

/* The chunk of `user` in cell c changed. */
void beh__mark_cell(beh_t *b, uint32_t series, beh_cell_t *c, uint32_t user)
{
    uint16_t ch = (uint16_t)(user >> 16);
    if (!c->dirty) {
        c->dirty = 1;
        c->nd = 1;
        c->d1 = ch;
        beh__mark_dirty(b, series, c->day, 0);
        return;
    }
    if (c->nd == 0 || (c->nd == 1 && c->d1 == ch))
        return; /* rewritten whole, or that chunk already */
    if (c->nd == 1) {
        if ((c->dchunks = roaring_bitmap_create()) == NULL) {
            b->failed = 1;
            return;
        }
        roaring_bitmap_add(c->dchunks, c->d1);
        c->nd = 2;
    }
    roaring_bitmap_add(c->dchunks, ch);
}

/* Cell c will be rewritten whole (a wipe entry is queued for it). */
void beh__mark_cell_whole(beh_t *b, uint32_t series, beh_cell_t *c)
{
    bm_free(c->dchunks);
    c->dchunks = NULL;
    c->nd = 0;
    c->dirty = 1;
    beh__mark_dirty(b, series, c->day, 1);
}

/* First index of se->cells with day >= day. */
uint32_t beh__lower_day(const series_t *se, int32_t day)
{
    uint32_t lo = 0, hi = se->ncells;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (se->cells[mid].day < day)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

beh_cell_t *beh__cell_find(const series_t *se, int32_t day)
{
    uint32_t i =
        se->ncells && se->cells[se->ncells - 1].day < day ? se->ncells : beh__lower_day(se, day);
    return i < se->ncells && se->cells[i].day == day ? &se->cells[i] : NULL;
}

/* The cell of `day`, created (an empty small cell: no allocation) if
 * missing. */
cp_status beh__cell_get(series_t *se, int32_t day, beh_cell_t **out)
{
    uint32_t i =
        se->ncells && se->cells[se->ncells - 1].day < day ? se->ncells : beh__lower_day(se, day);
    if (i < se->ncells && se->cells[i].day == day) {
        *out = &se->cells[i];
        return CP_OK;
    }
    if (se->ncells == se->cap) {
        uint32_t cap = se->cap ? se->cap * 2 : 4;
        beh_cell_t *v = realloc(se->cells, (size_t)cap * sizeof *v);
        if (v == NULL)
            return CP_ENOMEM;
        se->cells = v;
        se->cap = cap;
    }
    memmove(&se->cells[i + 1], &se->cells[i], (size_t)(se->ncells - i) * sizeof *se->cells);
    se->ncells++;
    beh_cell_t *c = &se->cells[i];
    memset(c, 0, sizeof *c);
    c->day = day;
    c->small = 1;
    c->cap = SMALL_INLINE;
    *out = c;
    return CP_OK;
}

/* Room for need (<= SMALL_MAX) users in a small cell (CP_ENOMEM). */
cp_status beh__sm_reserve(beh_cell_t *c, uint32_t need)
{
    if (need <= c->cap)
        return CP_OK;
    uint32_t cap = need <= 4 ? 4 : need <= 8 ? 8 : SMALL_MAX;
    uint32_t *v = malloc((size_t)cap * 2 * sizeof *v);
    if (v == NULL)
        return CP_ENOMEM;
    memcpy(v, sm_users(c), c->n * sizeof *v);
    memcpy(v + cap, sm_vals(c), c->n * sizeof *v);
    if (c->cap > SMALL_INLINE)
        free(c->heap);
    c->heap = v;
    c->cap = (uint8_t)cap;
    return CP_OK;
}

/* nslices of a small cell from its values. */
void beh__sm_retop(beh_cell_t *c)
{
    const uint32_t *v = sm_vals(c);
    uint32_t top = 0;
    for (uint32_t i = 0; i < c->n; i++)
        top |= v[i];
    c->nslices = (uint8_t)bitlen(top);
}

/* A small cell into the roaring form (CP_ENOMEM leaves it small). */
cp_status beh__cell_promote(beh_cell_t *c)
{
    const uint32_t *u = sm_users(c), *v = sm_vals(c);
    int ns = c->nslices;
    roaring_bitmap_t *ex = roaring_bitmap_create(), **sl = NULL;
    if (ex == NULL)
        return CP_ENOMEM;
    if (ns > 0 && (sl = calloc((size_t)ns, sizeof *sl)) == NULL)
        goto nomem;
    for (int j = 0; j < ns; j++)
        if ((sl[j] = roaring_bitmap_create()) == NULL)
            goto nomem;
    roaring_bitmap_add_many(ex, c->n, u);
    for (uint32_t i = 0; i < c->n; i++)
        for (uint32_t x = v[i], j = 0; x; j++, x >>= 1)
            if (x & 1)
                roaring_bitmap_add(sl[j], u[i]);
    if (c->cap > SMALL_INLINE)
        free(c->heap);
    c->small = 0;
    c->n = 0;
    c->cap = 0;
    c->exists = ex;
    c->slices = sl;
    return CP_OK;
nomem:
    for (int j = 0; sl && j < ns; j++)
        bm_free(sl[j]);
    free(sl);
    bm_free(ex);
    return CP_ENOMEM;
}

/* count - 1 of a user present in a roaring cell. */
uint64_t beh__cell_value(const beh_cell_t *c, uint32_t user)
{
    uint64_t v = 0;
    for (int j = 0; j < c->nslices; j++)
        if (roaring_bitmap_contains(c->slices[j], user))
            v |= (uint64_t)1 << j;
    return v;
}

/* 1 and *v = count - 1 if the user is in the cell (either form). */
int beh__cell_lookup(const beh_cell_t *c, uint32_t user, uint64_t *v)
{
    if (c->small) {
        uint32_t i = sm_lower(c, user);
        if (i == c->n || sm_users(c)[i] != user)
            return 0;
        *v = sm_vals(c)[i];
        return 1;
    }
    if (!roaring_bitmap_contains(c->exists, user))
        return 0;
    *v = beh__cell_value(c, user);
    return 1;
}

/* A roaring cell of 1 .. SMALL_MAX users into the small form (for the
 * memory; CP_ENOMEM leaves it as it is, which is harmless). */
void beh__cell_demote(beh_cell_t *c)
{
    uint64_t n = c->small ? 0 : roaring_bitmap_get_cardinality(c->exists);
    if (n == 0 || n > SMALL_MAX)
        return;
    uint32_t u[SMALL_MAX], v[SMALL_MAX], *heap = NULL;
    roaring_bitmap_to_uint32_array(c->exists, u);
    for (uint64_t i = 0; i < n; i++)
        v[i] = (uint32_t)beh__cell_value(c, u[i]);
    uint32_t cap = n <= SMALL_INLINE ? SMALL_INLINE : n <= 4 ? 4 : n <= 8 ? 8 : SMALL_MAX;
    if (cap > SMALL_INLINE && (heap = malloc((size_t)cap * 2 * sizeof *heap)) == NULL)
        return;
    beh__cell_form_release(c);
    if (heap)
        c->heap = heap;
    c->cap = (uint8_t)cap;
    c->n = (uint8_t)n;
    memcpy(sm_users(c), u, n * sizeof *u);
    memcpy(sm_vals(c), v, n * sizeof *v);
    beh__sm_retop(c);
}

cp_status beh__cell_grow(beh_cell_t *c, int n)
{
    if (n <= c->nslices)
        return CP_OK;
    roaring_bitmap_t **v = realloc(c->slices, (size_t)n * sizeof *v);
    if (v == NULL)
        return CP_ENOMEM;
    c->slices = v;
    while (c->nslices < n) {
        if ((v[c->nslices] = roaring_bitmap_create()) == NULL)
            return CP_ENOMEM;
        c->nslices++;
    }
    return CP_OK;
}

/* Drops empty top slices, so the accumulator bound stays tight. */
void beh__cell_trim(beh_cell_t *c)
{
    while (c->nslices > 0 && roaring_bitmap_is_empty(c->slices[c->nslices - 1]))
        roaring_bitmap_free(c->slices[--c->nslices]);
    if (c->nslices == 0) {
        free(c->slices);
        c->slices = NULL;
    }
}

/* Adds delta (>= 1) to user's count in cell c. The caller has marked
 * the user's chunk dirty and put the user in the series' `ever`. */
cp_status beh__cell_add(beh_cell_t *c, uint32_t user, uint64_t delta)
{
    uint64_t old = 0, nv;
    cp_status st;
    if (c->small) {
        uint32_t i = sm_lower(c, user);
        if (i < c->n && sm_users(c)[i] == user) {
            nv = value_add(sm_vals(c)[i], delta);
            sm_vals(c)[i] = (uint32_t)nv;
            if (bitlen(nv) > c->nslices)
                c->nslices = (uint8_t)bitlen(nv);
            return CP_OK;
        }
        if (c->n < SMALL_MAX) {
            if ((st = beh__sm_reserve(c, c->n + 1u)) != CP_OK)
                return st;
            uint32_t *u = sm_users(c), *v = sm_vals(c);
            memmove(u + i + 1, u + i, (c->n - i) * sizeof *u);
            memmove(v + i + 1, v + i, (c->n - i) * sizeof *v);
            nv = value_add(0, delta - 1);
            u[i] = user;
            v[i] = (uint32_t)nv;
            c->n++;
            if (bitlen(nv) > c->nslices)
                c->nslices = (uint8_t)bitlen(nv);
            return CP_OK;
        }
        if ((st = beh__cell_promote(c)) != CP_OK)
            return st;
    }
    if (roaring_bitmap_add_checked(c->exists, user)) {
        if (delta == 1)
            return CP_OK; /* count 1: exists alone */
        nv = value_add(0, delta - 1);
    } else {
        old = beh__cell_value(c, user);
        nv = value_add(old, delta);
    }
    st = beh__cell_grow(c, bitlen(nv));
    if (st != CP_OK) {
        beh__cell_trim(c); /* keep the cell consistent: the user counts its old value */
        return st;
    }
    for (int j = 0; j < c->nslices; j++) {
        uint64_t bit = (uint64_t)1 << j;
        if ((nv & bit) && !(old & bit))
            roaring_bitmap_add(c->slices[j], user);
        else if (!(nv & bit) && (old & bit))
            roaring_bitmap_remove(c->slices[j], user);
    }
    return CP_OK;
}

cp_status beh_record(beh_t *b, uint32_t series, int32_t day, uint32_t user, uint64_t delta)
{
    if (delta == 0 || series >= b->nseries)
        return CP_EINVAL;
    series_t *se = &b->series[series];
    beh_cell_t *c;
    cp_status st;
    if (se->ever == NULL && (se->ever = roaring_bitmap_create()) == NULL)
        return CP_ENOMEM;
    if ((st = beh__cell_get(se, day, &c)) != CP_OK)
        return st;
    roaring_bitmap_add(se->ever, user);
    beh__mark_cell(b, series, c, user);
    return beh__cell_add(c, user, delta);
}

cp_status beh_record_event(beh_t *b, const char *event, size_t elen, const beh_prop_t *props,
                           size_t n, int32_t day, uint32_t user, uint64_t delta)
{
    uint32_t ids[BEH_MAX_EVENT_SERIES];
    size_t nids = 0;
    if (delta == 0)
        return CP_EINVAL;
    cp_status st = beh_event_series(b, event, elen, props, n, ids, BEH_MAX_EVENT_SERIES, &nids);
    for (size_t i = 0; i < nids && st == CP_OK; i++)
        st = beh_record(b, ids[i], day, user, delta);
    return st;
}

size_t beh_retain(beh_t *b, int32_t cutoff)
{
    size_t dropped = 0;
    for (uint32_t s = 0; s < b->nseries; s++) {
        series_t *se = &b->series[s];
        uint32_t k = beh__lower_day(se, cutoff);
        if (k == 0)
            continue;
        for (uint32_t i = 0; i < k; i++) {
            beh__mark_dirty(b, s, se->cells[i].day, 1);
            beh__cell_release(&se->cells[i]);
        }
        memmove(se->cells, se->cells + k, (size_t)(se->ncells - k) * sizeof *se->cells);
        se->ncells -= k;
        dropped += k;
        /* `ever` is only a filter for per-user scans; rebuild it tight. */
        roaring_bitmap_t *ever = roaring_bitmap_create();
        if (ever != NULL) {
            for (uint32_t i = 0; i < se->ncells; i++) {
                const beh_cell_t *c = &se->cells[i];
                if (c->small)
                    roaring_bitmap_add_many(ever, c->n, sm_users(c));
                else
                    roaring_bitmap_or_inplace(ever, c->exists);
            }
            bm_free(se->ever);
            se->ever = ever;
        }
    }
    return dropped;
}

uint64_t beh_count(const beh_t *b, uint32_t series, int32_t day, uint32_t user)
{
    if (series >= b->nseries)
        return 0;
    const beh_cell_t *c = beh__cell_find(&b->series[series], day);
    uint64_t v;
    return c != NULL && beh__cell_lookup(c, user, &v) ? v + 1 : 0;
}

int beh_day_range(const beh_t *b, int32_t *first, int32_t *last)
{
    int any = 0;
    for (uint32_t s = 0; s < b->nseries; s++) {
        const series_t *se = &b->series[s];
        if (se->ncells == 0)
            continue;
        if (!any || se->cells[0].day < *first)
            *first = se->cells[0].day;
        if (!any || se->cells[se->ncells - 1].day > *last)
            *last = se->cells[se->ncells - 1].day;
        any = 1;
    }
    return any;
}

void beh_memory(const beh_t *b, uint64_t *bitmap_bytes, uint64_t *cells)
{
    uint64_t bytes = 0, n = 0;
    for (uint32_t s = 0; s < b->nseries; s++) {
        const series_t *se = &b->series[s];
        n += se->ncells;
        if (se->ever)
            bytes += roaring_bitmap_portable_size_in_bytes(se->ever);
        for (uint32_t i = 0; i < se->ncells; i++) {
            const beh_cell_t *c = &se->cells[i];
            if (c->small) { /* inline ones are in sizeof(beh_cell_t) below */
                bytes += c->cap > SMALL_INLINE ? (uint64_t)c->cap * 2 * sizeof(uint32_t) : 0;
                continue;
            }
            bytes += roaring_bitmap_portable_size_in_bytes(c->exists);
            for (int j = 0; j < c->nslices; j++)
                bytes += roaring_bitmap_portable_size_in_bytes(c->slices[j]);
        }
        bytes += sizeof *se + (uint64_t)se->cap * sizeof(beh_cell_t) + se->klen;
    }
    *bitmap_bytes = bytes;
    *cells = n;
}

void beh_cell_forms(const beh_t *b, uint64_t *small, uint64_t *roaring)
{
    uint64_t ns = 0, nr = 0;
    for (uint32_t s = 0; s < b->nseries; s++)
        for (uint32_t i = 0; i < b->series[s].ncells; i++) {
            if (b->series[s].cells[i].small)
                ns++;
            else
                nr++;
        }
    *small = ns;
    *roaring = nr;
}
