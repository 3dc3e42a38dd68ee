/* index.c — in-memory tag, attribute and crowd bitmaps; see index.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "index/member_list.h"
#include "util/util.h"

#define KEY_MAX 64

/* Dirty chunk sets: a bitmap of chunk numbers (ordinal >> 16), created on
 * first use. A set that cannot be created would lose a change on disk, so
 * the failure is remembered and the next index_persist() fails (which puts
 * the handle into its failed state). */
#define mark(d, ord) mark_((d), (ord), &ix->mark_failed)
#define mark_all(d, bm) mark_all_((d), (bm), &ix->mark_failed)

static void mark_(roaring_bitmap_t **d, uint32_t ord, int *failed)
{
    if (*d == NULL && (*d = roaring_bitmap_create()) == NULL) {
        *failed = 1;
        return;
    }
    roaring_bitmap_add(*d, ord >> 16);
}

/* Marks every chunk in which bm has members. */
static void mark_all_(roaring_bitmap_t **d, const roaring_bitmap_t *bm, int *failed)
{
    if (bm == NULL)
        return;
    if (*d == NULL && (*d = roaring_bitmap_create()) == NULL) {
        *failed = 1;
        return;
    }
    int32_t n = bm_chunk_count(bm);
    for (int32_t i = 0; i < n; i++)
        roaring_bitmap_add(*d, bm_chunk_key(bm, i));
}

cp_status index_create(index_t **out)
{
    *out = NULL;
    index_t *ix = calloc(1, sizeof *ix);
    if (ix == NULL)
        return CP_ENOMEM;
    ix->universe = roaring_bitmap_create();
    if (ix->universe == NULL) {
        free(ix);
        return CP_ENOMEM;
    }
    *out = ix;
    return CP_OK;
}

static void attr_release(idx_attr_t *a)
{
    bsi_free(a->bsi);
    index_bm_free(a->exists);
    for (uint32_t v = 0; v < a->capvals; v++)
        index_bm_free(a->vals[v]);
    free(a->vals);
    free(a->vdirty);
    free(a->col);
    geo_index_free(a->geo);
    index_bm_free(a->dirty);
    memset(a, 0, sizeof *a);
}

void index_free(index_t *ix)
{
    if (ix == NULL)
        return;
    index_bm_free(ix->universe);
    index_bm_free(ix->universe_dirty);
    for (uint32_t i = 0; i < ix->ntags; i++) {
        index_bm_free(ix->tags[i].direct);
        index_bm_free(ix->tags[i].eff);
        index_bm_free(ix->tags[i].dirty);
    }
    free(ix->tags);
    for (uint32_t i = 0; i < ix->nattrs; i++)
        attr_release(&ix->attrs[i]);
    free(ix->attrs);
    for (uint32_t i = 0; i < ix->ncrowds; i++) {
        index_bm_free(ix->crowds[i]);
        index_bm_free(ix->crowd_dirty[i]);
    }
    free(ix->crowds);
    free(ix->crowd_dirty);
    ixchg_free(&ix->chg);
    member_list_free(ix);
    free(ix);
}

/* Grows a zero-initialised array of `size`-byte items to hold index i. */
static cp_status grow(void **arr, uint32_t *n, size_t size, uint32_t i)
{
    if (i < *n)
        return CP_OK;
    uint32_t nn = *n ? *n : 16;
    while (nn <= i)
        nn *= 2;
    void *p = realloc(*arr, (size_t)nn * size);
    if (p == NULL)
        return CP_ENOMEM;
    memset((char *)p + (size_t)*n * size, 0, (size_t)(nn - *n) * size);
    *arr = p;
    *n = nn;
    return CP_OK;
}

cp_status index_tag_add(index_t *ix, uint32_t tag)
{
    if (grow((void **)&ix->tags, &ix->ntags, sizeof *ix->tags, tag))
        return CP_ENOMEM;
    idx_tag_t *t = &ix->tags[tag];
    if (t->direct == NULL)
        t->direct = roaring_bitmap_create();
    if (t->eff == NULL)
        t->eff = roaring_bitmap_create();
    return t->direct && t->eff ? CP_OK : CP_ENOMEM;
}

cp_status index_attr_add(index_t *ix, uint32_t attr, cp_attr_type type)
{
    if (grow((void **)&ix->attrs, &ix->nattrs, sizeof *ix->attrs, attr))
        return CP_ENOMEM;
    idx_attr_t *a = &ix->attrs[attr];
    if (a->type)
        return a->type == type ? CP_OK : CP_EINTERNAL;
    a->type = type;
    switch (type) {
    case CP_ATTR_INT:
    case CP_ATTR_TIMESTAMP:
        a->bsi = bsi_create();
        return a->bsi ? CP_OK : CP_ENOMEM;
    case CP_ATTR_GEO:
        a->geo = geo_index_create();
        return a->geo ? CP_OK : CP_ENOMEM;
    default:
        a->exists = roaring_bitmap_create();
        return a->exists ? CP_OK : CP_ENOMEM;
    }
}

cp_status index_tag_drop(index_t *ix, store_txn_t *txn, uint32_t tag, cp_error_t *err)
{
    if (tag < ix->ntags) {
        ix->chg.data = 1;
        if (tag)
            member_list_set_all(ix, ix->tags[tag].eff, MLIST_CODE(tag, MLIST_TAG), 0);
        if (ixchg_touch(&ix->chg, &ix->chg.tags, tag, ix->tags[tag].eff, 1))
            ix->tags[tag].eff = NULL; /* the before-image now */
        index_bm_free(ix->tags[tag].direct);
        index_bm_free(ix->tags[tag].eff);
        index_bm_free(ix->tags[tag].dirty);
        memset(&ix->tags[tag], 0, sizeof ix->tags[tag]);
    }
    char key[KEY_MAX];
    int n = snprintf(key, sizeof key, "t/%u#", tag);
    return store_del_prefix(txn, STORE_BITMAPS, key, (size_t)n, err);
}

const idx_tag_t *index_tag(const index_t *ix, uint32_t tag)
{
    return tag < ix->ntags && ix->tags[tag].direct ? &ix->tags[tag] : NULL;
}

const idx_attr_t *index_attr(const index_t *ix, uint32_t attr)
{
    return attr < ix->nattrs && ix->attrs[attr].type ? &ix->attrs[attr] : NULL;
}

const roaring_bitmap_t *index_attr_exists(const index_t *ix, uint32_t attr)
{
    const idx_attr_t *a = index_attr(ix, attr);
    if (a == NULL)
        return NULL;
    if (a->bsi)
        return a->bsi->exists;
    if (a->geo)
        return geo_index_exists(a->geo);
    return a->exists;
}

void index_user_add(index_t *ix, uint32_t ord)
{
    if (roaring_bitmap_add_checked(ix->universe, ord)) {
        mark(&ix->universe_dirty, ord);
        ix->chg.data = 1;
    }
}

void index_user_delete(index_t *ix, const taxonomy_t *tax, uint32_t ord)
{
    (void)tax;
    /* Every set below loses the user: so does the user's list. */
    member_list_clear_user(ix, ord);
    if (roaring_bitmap_remove_checked(ix->universe, ord)) {
        mark(&ix->universe_dirty, ord);
        ix->chg.data = 1;
    }
    for (uint32_t i = 0; i < ix->ntags; i++) {
        idx_tag_t *t = &ix->tags[i];
        if (t->direct && roaring_bitmap_remove_checked(t->direct, ord))
            mark(&t->dirty, ord);
        if (t->eff && ix->chg.record && roaring_bitmap_contains(t->eff, ord))
            ixchg_touch(&ix->chg, &ix->chg.tags, i, t->eff, 0);
        if (t->eff)
            roaring_bitmap_remove(t->eff, ord);
    }
    for (uint32_t i = 0; i < ix->nattrs; i++)
        if (ix->attrs[i].type)
            index_clear(ix, i, ord);
    for (uint32_t i = 0; i < ix->ncrowds; i++) {
        if (ix->crowds[i] == NULL || !roaring_bitmap_contains(ix->crowds[i], ord))
            continue;
        ixchg_touch(&ix->chg, &ix->chg.crowd, i, ix->crowds[i], 0);
        roaring_bitmap_remove(ix->crowds[i], ord);
        mark(&ix->crowd_dirty[i], ord);
        ix->chg.crowds = 1;
    }
}

int index_tag_assign(index_t *ix, const taxonomy_t *tax, uint32_t ord, uint32_t tag)
{
    if (tag >= ix->ntags || ix->tags[tag].direct == NULL)
        return 0;
    if (!roaring_bitmap_add_checked(ix->tags[tag].direct, ord))
        return 0;
    mark(&ix->tags[tag].dirty, ord);
    ix->chg.data = 1;
    /* Members of a tag include its descendants': walk up the chain until an
     * ancestor already has the user (then all above it have it too). */
    for (uint32_t cur = tag; cur != 0;) {
        if (cur >= ix->ntags || ix->tags[cur].eff == NULL)
            break;
        roaring_bitmap_t *eff = ix->tags[cur].eff;
        if (ix->chg.record && !roaring_bitmap_contains(eff, ord))
            ixchg_touch(&ix->chg, &ix->chg.tags, cur, eff, 0);
        if (!roaring_bitmap_add_checked(eff, ord))
            break;
        member_list_set(ix, ord, MLIST_CODE(cur, MLIST_TAG), 1);
        const tax_tag_t *g = tax_get(tax, cur);
        cur = g ? g->parent : 0;
    }
    return 1;
}

int index_tag_unassign(index_t *ix, const taxonomy_t *tax, uint32_t ord, uint32_t tag)
{
    if (tag >= ix->ntags || ix->tags[tag].direct == NULL)
        return 0;
    if (!roaring_bitmap_remove_checked(ix->tags[tag].direct, ord))
        return 0;
    mark(&ix->tags[tag].dirty, ord);
    ix->chg.data = 1;
    /* Recompute the user's effective membership bottom-up along the chain;
     * stop at the first tag that still holds the user for another reason. */
    for (uint32_t cur = tag; cur != 0;) {
        const tax_tag_t *g = tax_get(tax, cur);
        idx_tag_t *t = &ix->tags[cur];
        if (g == NULL || t->eff == NULL)
            break;
        int keep = roaring_bitmap_contains(t->direct, ord);
        for (uint32_t c = 0; !keep && c < g->nchildren; c++) {
            uint32_t ch = g->children[c];
            keep = ch < ix->ntags && ix->tags[ch].eff &&
                   roaring_bitmap_contains(ix->tags[ch].eff, ord);
        }
        if (keep)
            break;
        ixchg_touch(&ix->chg, &ix->chg.tags, cur, t->eff, 0);
        roaring_bitmap_remove(t->eff, ord);
        member_list_set(ix, ord, MLIST_CODE(cur, MLIST_TAG), 0);
        cur = g->parent;
    }
    return 1;
}

cp_status index_recompute_effective(index_t *ix, const taxonomy_t *tax)
{
    uint32_t *order = NULL;
    size_t n = 0;
    if (tax_subtree(tax, 0, &order, &n))
        return CP_ENOMEM;
    ix->chg.data = 1;
    /* Reverse pre-order visits children before their parents. */
    for (size_t i = n; i > 0; i--) {
        uint32_t id = order[i - 1];
        const tax_tag_t *g = tax_get(tax, id);
        if (id >= ix->ntags || ix->tags[id].direct == NULL) {
            if (index_tag_add(ix, id)) {
                free(order);
                return CP_ENOMEM;
            }
        }
        idx_tag_t *t = &ix->tags[id];
        roaring_bitmap_t *eff = roaring_bitmap_copy(t->direct);
        if (eff == NULL) {
            free(order);
            return CP_ENOMEM;
        }
        for (uint32_t c = 0; c < g->nchildren; c++) {
            uint32_t ch = g->children[c];
            if (ch < ix->ntags && ix->tags[ch].eff)
                roaring_bitmap_or_inplace(eff, ix->tags[ch].eff);
        }
        roaring_bitmap_run_optimize(eff);
        if (id) /* a move: only the users whose tags changed */
            member_list_diff(ix, t->eff, eff, MLIST_CODE(id, MLIST_TAG));
        if (!ixchg_touch(&ix->chg, &ix->chg.tags, id, t->eff, 1))
            index_bm_free(t->eff);
        t->eff = eff;
    }
    free(order);
    return CP_OK;
}

static idx_attr_t *attr_of(index_t *ix, uint32_t attr)
{
    return attr < ix->nattrs && ix->attrs[attr].type ? &ix->attrs[attr] : NULL;
}

cp_status index_set_int(index_t *ix, uint32_t attr, uint32_t ord, int64_t v)
{
    idx_attr_t *a = attr_of(ix, attr);
    if (a == NULL || a->bsi == NULL)
        return CP_EINTERNAL;
    int before = a->bsi->nslices;
    cp_status rc = bsi_set(a->bsi, ord, v);
    mark(&a->dirty, ord);
    ix->chg.data = 1;
    /* New slices are sign-extended copies: they differ in every chunk. */
    if (a->bsi->nslices != before)
        mark_all(&a->dirty, a->bsi->exists);
    return rc;
}

/* The bitmap slot of value vid, created empty if needed; vals and vdirty
 * grow together. NULL on ENOMEM. */
static roaring_bitmap_t **value_slot(idx_attr_t *a, uint32_t vid)
{
    if (vid >= a->capvals) {
        uint32_t old = a->capvals, cap = old;
        if (grow((void **)&a->vals, &cap, sizeof *a->vals, vid))
            return NULL;
        uint8_t *d = realloc(a->vdirty, cap);
        if (d == NULL) {
            /* vals grew but stays consistent: capvals still says old. */
            return NULL;
        }
        memset(d + old, 0, cap - old);
        a->vdirty = d;
        a->capvals = cap;
    }
    if (a->vals[vid] == NULL && (a->vals[vid] = roaring_bitmap_create()) == NULL)
        return NULL;
    return &a->vals[vid];
}

cp_status index_set_value(index_t *ix, uint32_t attr, uint32_t ord, uint32_t vid)
{
    idx_attr_t *a = attr_of(ix, attr);
    if (a == NULL || a->exists == NULL || vid == 0)
        return CP_EINTERNAL;
    if (value_slot(a, vid) == NULL)
        return CP_ENOMEM;
    if (grow((void **)&a->col, &a->capcol, sizeof *a->col, ord))
        return CP_ENOMEM;
    uint32_t old = a->col[ord];
    if (old == vid)
        return CP_OK;
    if (old && old < a->capvals && a->vals[old]) {
        roaring_bitmap_remove(a->vals[old], ord);
        a->vdirty[old] = 1;
    }
    roaring_bitmap_add(a->vals[vid], ord);
    a->vdirty[vid] = 1;
    a->col[ord] = vid;
    if (old == 0)
        roaring_bitmap_add(a->exists, ord);
    mark(&a->dirty, ord);
    ix->chg.data = 1;
    return CP_OK;
}

cp_status index_value_move(index_t *ix, uint32_t attr, uint32_t from, uint32_t to, uint64_t *moved)
{
    *moved = 0;
    const roaring_bitmap_t *src = index_value_bitmap(ix, attr, from);
    if (src == NULL || from == to)
        return CP_OK;
    /* A copy: index_set_value removes each user from `src` as it goes. */
    roaring_bitmap_t *users = roaring_bitmap_copy(src);
    if (users == NULL)
        return CP_ENOMEM;
    cp_status rc = CP_OK;
    roaring_uint32_iterator_t it;
    roaring_init_iterator(users, &it);
    for (; it.has_value && rc == CP_OK; roaring_advance_uint32_iterator(&it)) {
        rc = index_set_value(ix, attr, it.current_value, to);
        *moved += rc == CP_OK;
    }
    roaring_bitmap_free(users);
    return rc;
}

cp_status index_set_geo(index_t *ix, uint32_t attr, uint32_t ord, double lat, double lon)
{
    idx_attr_t *a = attr_of(ix, attr);
    if (a == NULL || a->geo == NULL)
        return CP_EINTERNAL;
    cp_status rc = geo_index_set(a->geo, ord, lat, lon);
    if (rc == CP_OK) {
        mark(&a->dirty, ord);
        ix->chg.data = 1;
    }
    return rc;
}

void index_clear(index_t *ix, uint32_t attr, uint32_t ord)
{
    idx_attr_t *a = attr_of(ix, attr);
    if (a == NULL)
        return;
    if (a->bsi) {
        if (roaring_bitmap_contains(a->bsi->exists, ord)) {
            bsi_clear(a->bsi, ord);
            mark(&a->dirty, ord);
            ix->chg.data = 1;
        }
    } else if (a->geo) {
        if (roaring_bitmap_contains(geo_index_exists(a->geo), ord)) {
            geo_index_clear(a->geo, ord);
            mark(&a->dirty, ord);
            ix->chg.data = 1;
        }
    } else if (ord < a->capcol && a->col[ord]) {
        uint32_t old = a->col[ord];
        if (old < a->capvals && a->vals[old]) {
            roaring_bitmap_remove(a->vals[old], ord);
            a->vdirty[old] = 1;
        }
        a->col[ord] = 0;
        roaring_bitmap_remove(a->exists, ord);
        mark(&a->dirty, ord);
        ix->chg.data = 1;
    }
}

int index_get_int(const index_t *ix, uint32_t attr, uint32_t ord, int64_t *v)
{
    const idx_attr_t *a = index_attr(ix, attr);
    return a && a->bsi ? bsi_get(a->bsi, ord, v) : 0;
}

uint32_t index_get_value(const index_t *ix, uint32_t attr, uint32_t ord)
{
    const idx_attr_t *a = index_attr(ix, attr);
    return a && a->col && ord < a->capcol ? a->col[ord] : 0;
}

int index_get_geo(const index_t *ix, uint32_t attr, uint32_t ord, double *lat, double *lon)
{
    const idx_attr_t *a = index_attr(ix, attr);
    return a && a->geo ? geo_index_get(a->geo, ord, lat, lon) : 0;
}

const roaring_bitmap_t *index_value_bitmap(const index_t *ix, uint32_t attr, uint32_t vid)
{
    const idx_attr_t *a = index_attr(ix, attr);
    if (a == NULL || vid == 0 || vid >= a->capvals)
        return NULL;
    return a->vals[vid];
}

cp_status index_crowd_set(index_t *ix, uint32_t crowd, roaring_bitmap_t *bm)
{
    uint32_t old = ix->ncrowds;
    if (grow((void **)&ix->crowds, &ix->ncrowds, sizeof *ix->crowds, crowd))
        return CP_ENOMEM;
    if (ix->ncrowds != old) {
        roaring_bitmap_t **d = realloc(ix->crowd_dirty, ix->ncrowds * sizeof *d);
        if (d == NULL) {
            ix->ncrowds = old; /* crowds grew but stays consistent */
            return CP_ENOMEM;
        }
        memset(d + old, 0, (ix->ncrowds - old) * sizeof *d);
        ix->crowd_dirty = d;
    }
    roaring_bitmap_run_optimize(bm);
    /* Only the chunks where old and new members differ are rewritten. */
    if (ix->crowds[crowd]) {
        roaring_bitmap_t *x = roaring_bitmap_xor(ix->crowds[crowd], bm);
        if (x == NULL)
            return CP_ENOMEM;
        mark_all(&ix->crowd_dirty[crowd], x);
        /* The same difference tells the members' lists what changed. */
        member_list_apply_xor(ix, x, bm, MLIST_CODE(crowd, MLIST_CROWD));
        roaring_bitmap_free(x);
    } else {
        mark_all(&ix->crowd_dirty[crowd], bm);
        member_list_set_all(ix, bm, MLIST_CODE(crowd, MLIST_CROWD), 1);
    }
    /* A new crowd is referenced by none yet: only a replaced one makes
     * the dynamic crowds built on it stale. */
    if (ix->crowds[crowd])
        ix->chg.crowds = 1;
    if (!ixchg_touch(&ix->chg, &ix->chg.crowd, crowd, ix->crowds[crowd], 1))
        index_bm_free(ix->crowds[crowd]);
    ix->crowds[crowd] = bm;
    return CP_OK;
}

const roaring_bitmap_t *index_crowd(const index_t *ix, uint32_t crowd)
{
    return crowd < ix->ncrowds ? ix->crowds[crowd] : NULL;
}

cp_status index_crowd_drop(index_t *ix, store_txn_t *txn, uint32_t crowd, cp_error_t *err)
{
    if (crowd < ix->ncrowds) {
        /* No dirtiness: a crowd others reference cannot be dropped. */
        member_list_set_all(ix, ix->crowds[crowd], MLIST_CODE(crowd, MLIST_CROWD), 0);
        if (!ixchg_touch(&ix->chg, &ix->chg.crowd, crowd, ix->crowds[crowd], 1))
            index_bm_free(ix->crowds[crowd]);
        index_bm_free(ix->crowd_dirty[crowd]);
        ix->crowds[crowd] = NULL;
        ix->crowd_dirty[crowd] = NULL;
    }
    char key[KEY_MAX];
    int n = snprintf(key, sizeof key, "c/%u#", crowd);
    return store_del_prefix(txn, STORE_BITMAPS, key, (size_t)n, err);
}

/* ------------------------------------------------------------ persistence */

/* "<base>#<chunk as 4 hex digits>": lexical order is chunk order, so a load
 * appends containers in order. */
static int chunk_key(char *key, size_t cap, const char *base, uint32_t chunk)
{
    return snprintf(key, cap, "%s#%04x", base, chunk);
}

/* Writes chunk `chunk` of bm under base (deletes the key when empty). */
static cp_status put_chunk(store_txn_t *txn, const char *base, const roaring_bitmap_t *bm,
                           uint32_t chunk, cp_error_t *err)
{
    char key[KEY_MAX];
    int kl = chunk_key(key, sizeof key, base, chunk);
    uint64_t lo = (uint64_t)chunk << 16;
    if (bm == NULL || roaring_bitmap_range_cardinality(bm, lo, lo + 65536) == 0)
        return store_del(txn, STORE_BITMAPS, key, (size_t)kl, err);
    roaring_bitmap_t *range = roaring_bitmap_from_range(lo, lo + 65536, 1);
    roaring_bitmap_t *part = range ? roaring_bitmap_and(bm, range) : NULL;
    index_bm_free(range);
    if (part == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory writing %s", key);
    roaring_bitmap_run_optimize(part);
    size_t n = roaring_bitmap_portable_size_in_bytes(part);
    void *dst = NULL;
    cp_status rc = store_reserve(txn, STORE_BITMAPS, key, (size_t)kl, n, &dst, err);
    if (rc == CP_OK && roaring_bitmap_portable_serialize(part, dst) != n)
        rc = CP_ERR(err, CP_EINTERNAL, "bitmap %s: serialized size changed", key);
    roaring_bitmap_free(part);
    return rc;
}

/* Writes the chunks of bm listed in dirty. */
static cp_status put_dirty(store_txn_t *txn, const char *base, const roaring_bitmap_t *bm,
                           const roaring_bitmap_t *dirty, cp_error_t *err)
{
    roaring_uint32_iterator_t it;
    roaring_init_iterator(dirty, &it);
    for (; it.has_value; roaring_advance_uint32_iterator(&it)) {
        cp_status rc = put_chunk(txn, base, bm, it.current_value, err);
        if (rc)
            return rc;
    }
    return CP_OK;
}

/* The coordinates of the present users of one chunk, in ordinal order. */
static cp_status put_geo_chunk(store_txn_t *txn, const idx_attr_t *a, uint32_t attr, uint32_t chunk,
                               cp_error_t *err)
{
    char key[KEY_MAX];
    snprintf(key, sizeof key, "col/%u/%u", attr, chunk);
    const roaring_bitmap_t *ex = geo_index_exists(a->geo);
    uint64_t lo = (uint64_t)chunk << 16, hi = lo + 65536;
    uint64_t n = roaring_bitmap_range_cardinality(ex, lo, hi);
    if (n == 0)
        return store_del(txn, STORE_BITMAPS, key, strlen(key), err);
    void *dst = NULL;
    cp_status rc = store_reserve(txn, STORE_BITMAPS, key, strlen(key), n * 16, &dst, err);
    if (rc)
        return rc;
    unsigned char *p = dst;
    roaring_uint32_iterator_t it;
    roaring_init_iterator(ex, &it);
    roaring_move_uint32_iterator_equalorlarger(&it, (uint32_t)lo);
    uint64_t i = 0;
    while (it.has_value && it.current_value < hi && i < n) {
        double c[2] = {0, 0};
        geo_index_get(a->geo, it.current_value, &c[0], &c[1]);
        memcpy(p + i * 16, c, 16);
        i++;
        roaring_advance_uint32_iterator(&it);
    }
    return i == n ? CP_OK
                  : CP_ERR(err, CP_EINTERNAL, "geo chunk %s: %" PRIu64 " of %" PRIu64 " users", key,
                           i, n);
}

static cp_status persist_attr(idx_attr_t *a, uint32_t id, store_txn_t *txn, cp_error_t *err)
{
    char base[KEY_MAX];
    cp_status rc = CP_OK;
    if (a->dirty == NULL || roaring_bitmap_is_empty(a->dirty))
        return CP_OK;
    if (a->bsi) {
        snprintf(base, sizeof base, "a/%u/ns", id);
        unsigned char ns = (unsigned char)a->bsi->nslices;
        if ((rc = store_put(txn, STORE_BITMAPS, base, strlen(base), &ns, 1, err)))
            return rc;
        snprintf(base, sizeof base, "a/%u/e", id);
        if ((rc = put_dirty(txn, base, a->bsi->exists, a->dirty, err)))
            return rc;
        snprintf(base, sizeof base, "a/%u/sign", id);
        if ((rc = put_dirty(txn, base, a->bsi->sign, a->dirty, err)))
            return rc;
        for (int i = 0; i < a->bsi->nslices; i++) {
            snprintf(base, sizeof base, "a/%u/s/%d", id, i);
            if ((rc = put_dirty(txn, base, a->bsi->slices[i], a->dirty, err)))
                return rc;
        }
    } else if (a->geo) {
        snprintf(base, sizeof base, "a/%u/e", id);
        if ((rc = put_dirty(txn, base, geo_index_exists(a->geo), a->dirty, err)))
            return rc;
        roaring_uint32_iterator_t it;
        roaring_init_iterator(a->dirty, &it);
        for (; it.has_value; roaring_advance_uint32_iterator(&it))
            if ((rc = put_geo_chunk(txn, a, id, it.current_value, err)))
                return rc;
    } else if (schema_type_has_dict(a->type)) {
        snprintf(base, sizeof base, "a/%u/e", id);
        if ((rc = put_dirty(txn, base, a->exists, a->dirty, err)))
            return rc;
        for (uint32_t v = 1; v < a->capvals; v++) {
            if (!a->vdirty[v])
                continue;
            snprintf(base, sizeof base, "a/%u/v/%u", id, v);
            if ((rc = put_dirty(txn, base, a->vals[v], a->dirty, err)))
                return rc;
            a->vdirty[v] = 0;
        }
    }
    roaring_bitmap_clear(a->dirty);
    return CP_OK;
}

cp_status index_persist(index_t *ix, store_txn_t *txn, cp_error_t *err)
{
    cp_status rc;
    char base[KEY_MAX];
    if (ix->mark_failed)
        return CP_ERR(err, CP_ENOMEM, "out of memory tracking changed bitmaps");
    if (ix->universe_dirty) {
        if ((rc = put_dirty(txn, "u", ix->universe, ix->universe_dirty, err)))
            return rc;
        roaring_bitmap_clear(ix->universe_dirty);
    }
    for (uint32_t i = 0; i < ix->ntags; i++) {
        idx_tag_t *t = &ix->tags[i];
        if (t->dirty == NULL || t->direct == NULL)
            continue;
        snprintf(base, sizeof base, "t/%u", i);
        if ((rc = put_dirty(txn, base, t->direct, t->dirty, err)))
            return rc;
        roaring_bitmap_clear(t->dirty);
    }
    for (uint32_t i = 0; i < ix->nattrs; i++)
        if (ix->attrs[i].type && (rc = persist_attr(&ix->attrs[i], i, txn, err)))
            return rc;
    for (uint32_t i = 0; i < ix->ncrowds; i++) {
        if (ix->crowd_dirty[i] == NULL || ix->crowds[i] == NULL)
            continue;
        snprintf(base, sizeof base, "c/%u", i);
        if ((rc = put_dirty(txn, base, ix->crowds[i], ix->crowd_dirty[i], err)))
            return rc;
        roaring_bitmap_clear(ix->crowd_dirty[i]);
    }
    return CP_OK;
}

void index_mark_all_dirty(index_t *ix)
{
    mark_all(&ix->universe_dirty, ix->universe);
    for (uint32_t i = 0; i < ix->ntags; i++)
        if (ix->tags[i].direct)
            mark_all(&ix->tags[i].dirty, ix->tags[i].direct);
    for (uint32_t i = 0; i < ix->nattrs; i++) {
        idx_attr_t *a = &ix->attrs[i];
        if (!a->type)
            continue;
        mark_all(&a->dirty, index_attr_exists(ix, i));
        if (a->vdirty)
            memset(a->vdirty, 1, a->capvals);
    }
    for (uint32_t i = 0; i < ix->ncrowds; i++)
        if (ix->crowds[i])
            mark_all(&ix->crowd_dirty[i], ix->crowds[i]);
}

/* ----------------------------------------------------------------- load */

typedef struct load_ctx {
    index_t *ix;
    const taxonomy_t *tax;
    const schema_t *sch;
} load_ctx_t;

static int parse_u32(const char **p, const char *end, uint32_t *out)
{
    uint64_t v = 0;
    const char *s = *p;
    if (s >= end || *s < '0' || *s > '9')
        return 0;
    while (s < end && *s >= '0' && *s <= '9') {
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return 0;
        s++;
    }
    *p = s;
    *out = (uint32_t)v;
    return 1;
}

static int eat(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

static cp_status fill_column(idx_attr_t *a, uint32_t vid)
{
    const roaring_bitmap_t *bm = a->vals[vid];
    if (roaring_bitmap_is_empty(bm))
        return CP_OK;
    uint32_t max = roaring_bitmap_maximum(bm);
    if (grow((void **)&a->col, &a->capcol, sizeof *a->col, max))
        return CP_ENOMEM;
    roaring_uint32_iterator_t it;
    roaring_init_iterator(bm, &it);
    uint32_t buf[1024];
    uint32_t got;
    while ((got = roaring_read_uint32_iterator(&it, buf, 1024)) > 0)
        for (uint32_t i = 0; i < got; i++)
            a->col[buf[i]] = vid;
    return CP_OK;
}

static cp_status load_geo_chunk(idx_attr_t *a, uint32_t chunk, const void *v, size_t vl,
                                const char *key, cp_error_t *err)
{
    /* a/<id>/e#... sorts before col/..., so the exists bitmap is loaded. */
    const roaring_bitmap_t *ex = a->exists;
    uint64_t lo = (uint64_t)chunk << 16, hi = lo + 65536;
    if (ex == NULL || chunk > 0xFFFF || vl % 16 != 0 ||
        roaring_bitmap_range_cardinality(ex, lo, hi) != vl / 16)
        return CP_ERR(err, CP_EIO, "corrupt geo coordinates under key %s", key);
    roaring_uint32_iterator_t it;
    roaring_init_iterator(ex, &it);
    roaring_move_uint32_iterator_equalorlarger(&it, (uint32_t)lo);
    const unsigned char *p = v;
    for (size_t i = 0; i < vl / 16; i++) {
        double c[2];
        memcpy(c, p + i * 16, 16);
        cp_status rc = geo_index_set(a->geo, it.current_value, c[0], c[1]);
        if (rc == CP_ENOMEM)
            return CP_ERR(err, CP_ENOMEM, "out of memory loading %s", key);
        if (rc)
            return CP_ERR(err, CP_EIO, "corrupt geo coordinates under key %s", key);
        roaring_advance_uint32_iterator(&it);
    }
    return CP_OK;
}

/* Grows a BSI to n slices during a load. New slices start empty: they are
 * filled from disk only (bsi_ensure_slices would sign-extend them from a
 * sign bitmap that is not loaded yet). */
static cp_status load_slices(bsi_t *b, int n)
{
    int before = b->nslices;
    if (n <= before)
        return CP_OK;
    if (bsi_ensure_slices(b, n))
        return CP_ENOMEM;
    for (int i = before; i < b->nslices; i++)
        roaring_bitmap_clear(b->slices[i]);
    return CP_OK;
}

static cp_status load_one(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                          cp_error_t *err)
{
    load_ctx_t *c = ud;
    index_t *ix = c->ix;
    char key[KEY_MAX];
    if (kl >= KEY_MAX)
        return CP_ERR(err, CP_EIO, "unexpected bitmap key of %zu bytes", kl);
    memcpy(key, k, kl);
    key[kl] = '\0';
    const char *p = key, *end = key + kl;
    uint32_t id = 0, sub = 0;
    idx_attr_t *a;

    if (eat(&p, end, "col/")) {
        if (!parse_u32(&p, end, &id) || !eat(&p, end, "/") || !parse_u32(&p, end, &sub) ||
            p != end || (a = attr_of(ix, id)) == NULL || a->geo == NULL)
            return CP_ERR(err, CP_EIO, "unexpected bitmap key %s", key);
        return load_geo_chunk(a, sub, v, vl, key, err);
    }
    /* a/<id>/ns: the slice count of a bit-sliced index. */
    {
        const char *q = key;
        if (eat(&q, end, "a/") && parse_u32(&q, end, &id) && eat(&q, end, "/ns") && q == end) {
            if ((a = attr_of(ix, id)) == NULL || a->bsi == NULL || vl != 1 ||
                *(const unsigned char *)v > BSI_MAX_SLICES)
                return CP_ERR(err, CP_EIO, "corrupt slice count under key %s", key);
            if (load_slices(a->bsi, *(const unsigned char *)v))
                return CP_ERR(err, CP_ENOMEM, "out of memory loading %s", key);
            return CP_OK;
        }
    }

    /* Everything else is one chunk of a bitmap: <base>#<chunk hex>. */
    const char *hash = memchr(key, '#', kl);
    uint32_t chunk = 0;
    if (hash == NULL || end - hash != 5)
        return CP_ERR(err, CP_EIO, "unexpected bitmap key %s", key);
    for (const char *h = hash + 1; h < end; h++) {
        int d = (*h >= '0' && *h <= '9') ? *h - '0' : (*h >= 'a' && *h <= 'f') ? *h - 'a' + 10 : -1;
        if (d < 0)
            return CP_ERR(err, CP_EIO, "unexpected bitmap key %s", key);
        chunk = chunk * 16 + (uint32_t)d;
    }
    end = hash;

    roaring_bitmap_t *bm = bm_deserialize_safe(v, vl);
    if (bm == NULL)
        return CP_ERR(err, CP_EIO, "corrupt bitmap under key %s (%zu bytes)", key, vl);
    if (roaring_bitmap_is_empty(bm) || roaring_bitmap_minimum(bm) >> 16 != chunk ||
        roaring_bitmap_maximum(bm) >> 16 != chunk) {
        roaring_bitmap_free(bm);
        return CP_ERR(err, CP_EIO, "bitmap under key %s holds users outside its chunk", key);
    }
    roaring_bitmap_t **slot = NULL;
    size_t blen = (size_t)(end - key);

    if (blen == 1 && key[0] == 'u') {
        slot = &ix->universe;
    } else if (eat(&p, end, "t/")) {
        if (parse_u32(&p, end, &id) && p == end && tax_get(c->tax, id) && id < ix->ntags)
            slot = &ix->tags[id].direct;
    } else if (eat(&p, end, "c/")) {
        if (parse_u32(&p, end, &id) && p == end && id < 0x7fffffff) {
            if (id >= ix->ncrowds || ix->crowds[id] == NULL) {
                roaring_bitmap_t *empty = roaring_bitmap_create();
                if (empty == NULL || index_crowd_set(ix, id, empty)) {
                    index_bm_free(empty);
                    roaring_bitmap_free(bm);
                    return CP_ERR(err, CP_ENOMEM, "out of memory loading %s", key);
                }
            }
            slot = &ix->crowds[id];
        }
    } else if (eat(&p, end, "a/")) {
        if (parse_u32(&p, end, &id) && eat(&p, end, "/") && (a = attr_of(ix, id)) != NULL) {
            if ((size_t)(end - p) == 1 && *p == 'e') {
                if (a->bsi)
                    slot = &a->bsi->exists;
                else
                    slot = &a->exists; /* geo: kept until the coordinates are read */
            } else if (a->bsi && (size_t)(end - p) == 4 && memcmp(p, "sign", 4) == 0) {
                slot = &a->bsi->sign;
            } else if (a->bsi && eat(&p, end, "s/") && parse_u32(&p, end, &sub) && p == end &&
                       sub < BSI_MAX_SLICES) {
                if (load_slices(a->bsi, (int)sub + 1)) {
                    roaring_bitmap_free(bm);
                    return CP_ERR(err, CP_ENOMEM, "out of memory loading %s", key);
                }
                slot = &a->bsi->slices[sub];
            } else if (schema_type_has_dict(a->type) && eat(&p, end, "v/") &&
                       parse_u32(&p, end, &sub) && p == end && sub > 0) {
                const schema_attr_t *sa = schema_get(c->sch, id);
                if (sa != NULL && sub <= sa->nvalues) {
                    if (value_slot(a, sub) == NULL) {
                        roaring_bitmap_free(bm);
                        return CP_ERR(err, CP_ENOMEM, "out of memory loading %s", key);
                    }
                    slot = &a->vals[sub];
                }
            }
        }
    }
    if (slot == NULL) {
        roaring_bitmap_free(bm);
        return CP_ERR(err, CP_EIO, "unexpected bitmap key %s (unknown tag, attribute or value)",
                      key);
    }
    if (*slot == NULL) {
        *slot = bm;
        return CP_OK;
    }
    if (roaring_bitmap_range_cardinality(*slot, (uint64_t)chunk << 16,
                                         ((uint64_t)chunk << 16) + 65536) != 0) {
        roaring_bitmap_free(bm);
        return CP_ERR(err, CP_EIO, "bitmap chunk %s stored twice", key);
    }
    roaring_bitmap_or_inplace(*slot, bm);
    roaring_bitmap_free(bm);
    return CP_OK;
}

cp_status index_load(index_t *ix, const taxonomy_t *tax, const schema_t *sch, store_txn_t *txn,
                     cp_error_t *err)
{
    cp_status rc;
    for (uint32_t id = 1; id < tax->next_id; id++)
        if (tax_get(tax, id) && index_tag_add(ix, id))
            return CP_ERR(err, CP_ENOMEM, "out of memory loading tags");
    for (uint32_t id = 1; id <= sch->n; id++) {
        const schema_attr_t *a = schema_get(sch, id);
        if (a && index_attr_add(ix, id, a->type))
            return CP_ERR(err, CP_ENOMEM, "out of memory loading attributes");
    }
    load_ctx_t c = {ix, tax, sch};
    if ((rc = store_each(txn, STORE_BITMAPS, NULL, 0, load_one, &c, err)))
        return rc;
    for (uint32_t id = 0; id < ix->nattrs; id++) {
        idx_attr_t *a = &ix->attrs[id];
        if (a->geo) {
            /* The geo index owns presence; the loaded copy only guided the
             * chunk reads. */
            if (a->exists && roaring_bitmap_get_cardinality(a->exists) !=
                                 roaring_bitmap_get_cardinality(geo_index_exists(a->geo)))
                return CP_ERR(err, CP_EIO, "geo attribute %u: coordinates missing", id);
            index_bm_free(a->exists);
            a->exists = NULL;
        } else if (a->exists) {
            for (uint32_t v = 1; v < a->capvals; v++)
                if (a->vals[v] && fill_column(a, v))
                    return CP_ERR(err, CP_ENOMEM, "out of memory loading attribute %u", id);
        }
    }
    /* What was just read is what is on disk: nothing is dirty. */
    for (uint32_t i = 0; i < ix->ncrowds; i++)
        if (ix->crowd_dirty[i])
            roaring_bitmap_clear(ix->crowd_dirty[i]);
    if ((rc = index_recompute_effective(ix, tax)))
        return CP_ERR(err, rc, "out of memory computing tag members");
    return CP_OK;
}

void index_memory(const index_t *ix, uint64_t *bitmap_bytes, uint64_t *column_bytes)
{
    uint64_t b = roaring_bitmap_portable_size_in_bytes(ix->universe), col = 0;
    for (uint32_t i = 0; i < ix->ntags; i++) {
        if (ix->tags[i].direct)
            b += roaring_bitmap_portable_size_in_bytes(ix->tags[i].direct);
        if (ix->tags[i].eff)
            b += roaring_bitmap_portable_size_in_bytes(ix->tags[i].eff);
    }
    for (uint32_t i = 0; i < ix->nattrs; i++) {
        const idx_attr_t *a = &ix->attrs[i];
        if (a->bsi)
            b += bsi_size_in_bytes(a->bsi);
        if (a->exists)
            b += roaring_bitmap_portable_size_in_bytes(a->exists);
        for (uint32_t v = 0; v < a->capvals; v++)
            if (a->vals[v])
                b += roaring_bitmap_portable_size_in_bytes(a->vals[v]);
        col += (uint64_t)a->capcol * sizeof *a->col;
        if (a->geo)
            col += geo_index_size_in_bytes(a->geo);
    }
    for (uint32_t i = 0; i < ix->ncrowds; i++)
        if (ix->crowds[i])
            b += roaring_bitmap_portable_size_in_bytes(ix->crowds[i]);
    *bitmap_bytes = b;
    *column_bytes = col + member_list_memory(ix);
}
