/* index.c — in-memory tag, attribute and crowd bitmaps; see index.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/index.h"
#include "util/util.h"

#define KEY_MAX 64

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
    index_bm_free(a->geo_dirty);
    memset(a, 0, sizeof *a);
}

void index_free(index_t *ix)
{
    if (ix == NULL)
        return;
    index_bm_free(ix->universe);
    for (uint32_t i = 0; i < ix->ntags; i++) {
        index_bm_free(ix->tags[i].direct);
        index_bm_free(ix->tags[i].eff);
    }
    free(ix->tags);
    for (uint32_t i = 0; i < ix->nattrs; i++)
        attr_release(&ix->attrs[i]);
    free(ix->attrs);
    for (uint32_t i = 0; i < ix->ncrowds; i++)
        index_bm_free(ix->crowds[i]);
    free(ix->crowds);
    free(ix->crowd_dirty);
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
        a->geo_dirty = roaring_bitmap_create();
        return a->geo && a->geo_dirty ? CP_OK : CP_ENOMEM;
    default:
        a->exists = roaring_bitmap_create();
        return a->exists ? CP_OK : CP_ENOMEM;
    }
}

cp_status index_tag_drop(index_t *ix, store_txn_t *txn, uint32_t tag, cp_error_t *err)
{
    if (tag < ix->ntags) {
        index_bm_free(ix->tags[tag].direct);
        index_bm_free(ix->tags[tag].eff);
        memset(&ix->tags[tag], 0, sizeof ix->tags[tag]);
    }
    char key[KEY_MAX];
    int n = snprintf(key, sizeof key, "t/%u", tag);
    return store_del(txn, STORE_BITMAPS, key, (size_t)n, err);
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
    if (roaring_bitmap_add_checked(ix->universe, ord))
        ix->universe_dirty = 1;
}

void index_user_delete(index_t *ix, const taxonomy_t *tax, uint32_t ord)
{
    (void)tax;
    if (roaring_bitmap_remove_checked(ix->universe, ord))
        ix->universe_dirty = 1;
    for (uint32_t i = 0; i < ix->ntags; i++) {
        idx_tag_t *t = &ix->tags[i];
        if (t->direct && roaring_bitmap_remove_checked(t->direct, ord))
            t->dirty = 1;
        if (t->eff)
            roaring_bitmap_remove(t->eff, ord);
    }
    for (uint32_t i = 0; i < ix->nattrs; i++)
        if (ix->attrs[i].type)
            index_clear(ix, i, ord);
    for (uint32_t i = 0; i < ix->ncrowds; i++)
        if (ix->crowds[i] && roaring_bitmap_remove_checked(ix->crowds[i], ord))
            ix->crowd_dirty[i] = 1;
}

int index_tag_assign(index_t *ix, const taxonomy_t *tax, uint32_t ord, uint32_t tag)
{
    if (tag >= ix->ntags || ix->tags[tag].direct == NULL)
        return 0;
    if (!roaring_bitmap_add_checked(ix->tags[tag].direct, ord))
        return 0;
    ix->tags[tag].dirty = 1;
    /* Members of a tag include its descendants': walk up the chain until an
     * ancestor already has the user (then all above it have it too). */
    for (uint32_t cur = tag; cur != 0;) {
        if (cur >= ix->ntags || ix->tags[cur].eff == NULL)
            break;
        if (!roaring_bitmap_add_checked(ix->tags[cur].eff, ord))
            break;
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
    ix->tags[tag].dirty = 1;
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
            keep = ch < ix->ntags && ix->tags[ch].eff && roaring_bitmap_contains(ix->tags[ch].eff, ord);
        }
        if (keep)
            break;
        roaring_bitmap_remove(t->eff, ord);
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
    a->dirty = 1;
    return bsi_set(a->bsi, ord, v);
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
    if (old == 0) {
        roaring_bitmap_add(a->exists, ord);
        a->dirty = 1;
    }
    return CP_OK;
}

cp_status index_set_geo(index_t *ix, uint32_t attr, uint32_t ord, double lat, double lon)
{
    idx_attr_t *a = attr_of(ix, attr);
    if (a == NULL || a->geo == NULL)
        return CP_EINTERNAL;
    cp_status rc = geo_index_set(a->geo, ord, lat, lon);
    if (rc == CP_OK) {
        a->dirty = 1;
        roaring_bitmap_add(a->geo_dirty, ord >> 16);
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
            a->dirty = 1;
        }
    } else if (a->geo) {
        if (roaring_bitmap_contains(geo_index_exists(a->geo), ord)) {
            geo_index_clear(a->geo, ord);
            a->dirty = 1;
            roaring_bitmap_add(a->geo_dirty, ord >> 16);
        }
    } else if (ord < a->capcol && a->col[ord]) {
        uint32_t old = a->col[ord];
        if (old < a->capvals && a->vals[old]) {
            roaring_bitmap_remove(a->vals[old], ord);
            a->vdirty[old] = 1;
        }
        a->col[ord] = 0;
        roaring_bitmap_remove(a->exists, ord);
        a->dirty = 1;
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
        uint8_t *d = realloc(ix->crowd_dirty, ix->ncrowds);
        if (d == NULL)
            return CP_ENOMEM;
        memset(d + old, 0, ix->ncrowds - old);
        ix->crowd_dirty = d;
    }
    roaring_bitmap_run_optimize(bm);
    index_bm_free(ix->crowds[crowd]);
    ix->crowds[crowd] = bm;
    ix->crowd_dirty[crowd] = 1;
    return CP_OK;
}

const roaring_bitmap_t *index_crowd(const index_t *ix, uint32_t crowd)
{
    return crowd < ix->ncrowds ? ix->crowds[crowd] : NULL;
}

cp_status index_crowd_drop(index_t *ix, store_txn_t *txn, uint32_t crowd, cp_error_t *err)
{
    if (crowd < ix->ncrowds) {
        index_bm_free(ix->crowds[crowd]);
        ix->crowds[crowd] = NULL;
        ix->crowd_dirty[crowd] = 0;
    }
    char key[KEY_MAX];
    int n = snprintf(key, sizeof key, "c/%u", crowd);
    return store_del(txn, STORE_BITMAPS, key, (size_t)n, err);
}

/* ------------------------------------------------------------ persistence */

static cp_status put_bitmap(store_txn_t *txn, const char *key, roaring_bitmap_t *bm,
                            cp_error_t *err)
{
    roaring_bitmap_run_optimize(bm);
    size_t n = roaring_bitmap_portable_size_in_bytes(bm);
    void *dst = NULL;
    cp_status rc = store_reserve(txn, STORE_BITMAPS, key, strlen(key), n, &dst, err);
    if (rc)
        return rc;
    size_t w = roaring_bitmap_portable_serialize(bm, dst);
    if (w != n)
        return CP_ERR(err, CP_EINTERNAL, "bitmap %s: serialized %zu bytes, expected %zu", key, w,
                      n);
    return CP_OK;
}

/* The coordinates of the present users of one chunk, in ordinal order. */
static cp_status put_geo_chunk(store_txn_t *txn, const idx_attr_t *a, uint32_t attr,
                               uint32_t chunk, cp_error_t *err)
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
    char key[KEY_MAX];
    cp_status rc = CP_OK;
    if (a->bsi && a->dirty) {
        snprintf(key, sizeof key, "a/%u/e", id);
        if ((rc = put_bitmap(txn, key, a->bsi->exists, err)))
            return rc;
        snprintf(key, sizeof key, "a/%u/sign", id);
        if ((rc = put_bitmap(txn, key, a->bsi->sign, err)))
            return rc;
        for (int i = 0; i < a->bsi->nslices; i++) {
            snprintf(key, sizeof key, "a/%u/s/%d", id, i);
            if ((rc = put_bitmap(txn, key, a->bsi->slices[i], err)))
                return rc;
        }
    } else if (a->geo && a->dirty) {
        roaring_bitmap_t *ex = roaring_bitmap_copy(geo_index_exists(a->geo));
        if (ex == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        snprintf(key, sizeof key, "a/%u/e", id);
        rc = put_bitmap(txn, key, ex, err);
        index_bm_free(ex);
        if (rc)
            return rc;
        roaring_uint32_iterator_t it;
        roaring_init_iterator(a->geo_dirty, &it);
        for (; it.has_value; roaring_advance_uint32_iterator(&it))
            if ((rc = put_geo_chunk(txn, a, id, it.current_value, err)))
                return rc;
        roaring_bitmap_clear(a->geo_dirty);
    } else if (schema_type_has_dict(a->type)) {
        if (a->dirty) {
            snprintf(key, sizeof key, "a/%u/e", id);
            if ((rc = put_bitmap(txn, key, a->exists, err)))
                return rc;
        }
        for (uint32_t v = 1; v < a->capvals; v++) {
            if (!a->vdirty[v] || a->vals[v] == NULL)
                continue;
            snprintf(key, sizeof key, "a/%u/v/%u", id, v);
            if ((rc = put_bitmap(txn, key, a->vals[v], err)))
                return rc;
            a->vdirty[v] = 0;
        }
    }
    a->dirty = 0;
    return CP_OK;
}

cp_status index_persist(index_t *ix, store_txn_t *txn, cp_error_t *err)
{
    cp_status rc;
    char key[KEY_MAX];
    if (ix->universe_dirty) {
        if ((rc = put_bitmap(txn, "u", ix->universe, err)))
            return rc;
        ix->universe_dirty = 0;
    }
    for (uint32_t i = 0; i < ix->ntags; i++) {
        idx_tag_t *t = &ix->tags[i];
        if (!t->dirty || t->direct == NULL)
            continue;
        snprintf(key, sizeof key, "t/%u", i);
        if ((rc = put_bitmap(txn, key, t->direct, err)))
            return rc;
        t->dirty = 0;
    }
    for (uint32_t i = 0; i < ix->nattrs; i++)
        if (ix->attrs[i].type && (rc = persist_attr(&ix->attrs[i], i, txn, err)))
            return rc;
    for (uint32_t i = 0; i < ix->ncrowds; i++) {
        if (!ix->crowd_dirty[i] || ix->crowds[i] == NULL)
            continue;
        snprintf(key, sizeof key, "c/%u", i);
        if ((rc = put_bitmap(txn, key, ix->crowds[i], err)))
            return rc;
        ix->crowd_dirty[i] = 0;
    }
    return CP_OK;
}

void index_mark_all_dirty(index_t *ix)
{
    ix->universe_dirty = 1;
    for (uint32_t i = 0; i < ix->ntags; i++)
        ix->tags[i].dirty = ix->tags[i].direct != NULL;
    for (uint32_t i = 0; i < ix->nattrs; i++) {
        idx_attr_t *a = &ix->attrs[i];
        if (!a->type)
            continue;
        a->dirty = 1;
        if (a->vdirty)
            memset(a->vdirty, 1, a->capvals);
        if (a->geo) {
            const roaring_bitmap_t *ex = geo_index_exists(a->geo);
            roaring_uint32_iterator_t it;
            roaring_init_iterator(ex, &it);
            while (it.has_value) {
                uint32_t chunk = it.current_value >> 16;
                roaring_bitmap_add(a->geo_dirty, chunk);
                if (chunk == 0xFFFF)
                    break;
                roaring_move_uint32_iterator_equalorlarger(&it, (chunk + 1) << 16);
            }
        }
    }
    for (uint32_t i = 0; i < ix->ncrowds; i++)
        ix->crowd_dirty[i] = ix->crowds[i] != NULL;
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
    /* a/<id>/e sorts before col/..., so the exists bitmap is loaded. */
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

    if (eat(&p, end, "col/")) {
        idx_attr_t *a;
        if (!parse_u32(&p, end, &id) || !eat(&p, end, "/") || !parse_u32(&p, end, &sub) ||
            p != end || (a = attr_of(ix, id)) == NULL || a->geo == NULL)
            return CP_ERR(err, CP_EIO, "unexpected bitmap key %s", key);
        return load_geo_chunk(a, sub, v, vl, key, err);
    }

    roaring_bitmap_t *bm = bm_deserialize_safe(v, vl);
    if (bm == NULL)
        return CP_ERR(err, CP_EIO, "corrupt bitmap under key %s (%zu bytes)", key, vl);
    roaring_bitmap_t **slot = NULL;

    if (strcmp(key, "u") == 0) {
        slot = &ix->universe;
    } else if (eat(&p, end, "t/")) {
        if (parse_u32(&p, end, &id) && p == end && tax_get(c->tax, id) && id < ix->ntags)
            slot = &ix->tags[id].direct;
    } else if (eat(&p, end, "c/")) {
        if (parse_u32(&p, end, &id) && p == end && id < 0x7fffffff) {
            if (index_crowd_set(ix, id, bm)) {
                index_bm_free(bm);
                return CP_ERR(err, CP_ENOMEM, "out of memory loading %s", key);
            }
            ix->crowd_dirty[id] = 0;
            return CP_OK;
        }
    } else if (eat(&p, end, "a/")) {
        idx_attr_t *a;
        if (parse_u32(&p, end, &id) && eat(&p, end, "/") && (a = attr_of(ix, id)) != NULL) {
            if (strcmp(p, "e") == 0) {
                if (a->bsi)
                    slot = &a->bsi->exists;
                else if (a->geo) {
                    /* Kept until the coordinate chunks are read. */
                    slot = &a->exists;
                } else
                    slot = &a->exists;
            } else if (a->bsi && strcmp(p, "sign") == 0) {
                slot = &a->bsi->sign;
            } else if (a->bsi && eat(&p, end, "s/") && parse_u32(&p, end, &sub) && p == end &&
                       sub < BSI_MAX_SLICES) {
                if (bsi_ensure_slices(a->bsi, (int)sub + 1)) {
                    index_bm_free(bm);
                    return CP_ERR(err, CP_ENOMEM, "out of memory loading %s", key);
                }
                slot = &a->bsi->slices[sub];
            } else if (a->exists && !a->geo && eat(&p, end, "v/") && parse_u32(&p, end, &sub) &&
                       p == end && sub > 0) {
                const schema_attr_t *sa = schema_get(c->sch, id);
                if (sa == NULL || sub > sa->nvalues) {
                    slot = NULL;
                } else if (value_slot(a, sub) == NULL) {
                    index_bm_free(bm);
                    return CP_ERR(err, CP_ENOMEM, "out of memory loading %s", key);
                } else {
                    slot = &a->vals[sub];
                }
            }
        }
    }
    if (slot == NULL) {
        index_bm_free(bm);
        return CP_ERR(err, CP_EIO, "unexpected bitmap key %s (unknown tag, attribute or value)",
                      key);
    }
    index_bm_free(*slot);
    *slot = bm;
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
        } else if (a->bsi) {
            for (int i = 0; i < a->bsi->nslices; i++)
                if (a->bsi->slices[i] == NULL)
                    return CP_ERR(err, CP_EIO, "attribute %u: slice %d missing", id, i);
        }
    }
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
    *column_bytes = col;
}
