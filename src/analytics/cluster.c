/*
 * cluster.c — cp_cluster_json: k-means over int/timestamp attributes.
 *
 * Population: the members of the crowd (default: every user) that have a
 * value for every chosen attribute; the others are excluded and counted.
 * Values are read chunk by chunk straight from the bit slices (no per-user
 * lookups), standardised to z-scores with the population's exact mean and
 * standard deviation (a constant attribute contributes nothing).
 *
 * Fitting: on a sample when the population is larger than "sample"
 * (default 100,000): each user is kept with probability sample/population
 * decided by a hash of its ordinal and the seed, so the sample is
 * deterministic and spread over the whole ordinal range. k-means++ seeding
 * (cp_rand with the seed), then Lloyd iterations until no point changes
 * cluster or "max_iterations". An emptied cluster takes the point farthest
 * from its centroid. Everything is single-threaded and in a fixed order, so
 * the same data and seed give the same clusters.
 *
 * Then everyone in the population is assigned to the nearest centroid;
 * sizes, centroids (the exact mean of the members, in original units) and
 * inertia come from that full pass. With "root", the clusters are stored
 * as tags ROOT/c1..ck (description: the centroid) through the engine's
 * write path: existing ROOT/c* tags are reused (their members replaced),
 * so crowds built on them stay valid. The elbow ("elbow": [kmin, kmax])
 * reports the sample inertia for each k and stores nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/analytics.h"

#define CL_MAX_ATTRS 16
#define CL_MAX_K 64
#define CL_MAX_ELBOW 32
#define CL_DEFAULT_SAMPLE 100000u
#define CL_MAX_SAMPLE 2000000u
#define CL_DEFAULT_ITER 100u

typedef struct cl_attr {
    const schema_attr_t *a;
    const bsi_t *bsi;
    double mean, sd;
} cl_attr_t;

typedef struct cl {
    cp_db_t *db;
    cl_attr_t at[CL_MAX_ATTRS];
    int d;
    roaring_bitmap_t *pop;
    uint64_t npop;
    uint64_t seed;
    /* per-chunk value buffers: vals[a * 65536 + pos] */
    int64_t *vals;
    uint64_t *buf; /* dense scratch: pop chunk, slice chunk */
} cl_t;

/* Reads the values of the chunk's population users into c->vals. */
static void chunk_values(cl_t *c, uint16_t key, const uint64_t *pd)
{
    uint64_t *sd = c->buf + CP_CHUNK_WORDS;
    for (int a = 0; a < c->d; a++) {
        const bsi_t *b = c->at[a].bsi;
        int64_t *v = c->vals + (size_t)a * CP_CHUNK_BITS;
        for (uint32_t w = 0; w < CP_CHUNK_WORDS; w++)
            for (uint64_t x = pd[w]; x; x &= x - 1)
                v[w * 64 + (uint32_t)__builtin_ctzll(x)] = 0;
        for (int s = -1; s < b->nslices; s++) {
            bm_chunk_t ch;
            int32_t cur = 0;
            const roaring_bitmap_t *bm = s < 0 ? b->sign : b->slices[s];
            if (!bm_chunk_find(bm, key, &cur, &ch))
                continue;
            chunk_load(&ch, sd);
            dense_and(sd, pd);
            uint64_t bits =
                s < 0 ? (b->nslices < 64 ? ~UINT64_C(0) << b->nslices : 0) : UINT64_C(1) << s;
            for (uint32_t w = 0; w < CP_CHUNK_WORDS; w++)
                for (uint64_t x = sd[w]; x; x &= x - 1)
                    v[w * 64 + (uint32_t)__builtin_ctzll(x)] |= (int64_t)bits;
        }
    }
}

/* Calls fn for every population user with its raw values. */
typedef void (*visit_fn)(void *ud, uint32_t ord, const double *x);

static void visit_all(cl_t *c, visit_fn fn, void *ud)
{
    uint64_t *pd = c->buf;
    double x[CL_MAX_ATTRS];
    for (int32_t i = 0; i < bm_chunk_count(c->pop); i++) {
        uint16_t key = bm_chunk_key(c->pop, i);
        bm_chunk_t ch;
        bm_chunk_at(c->pop, i, &ch);
        chunk_load(&ch, pd);
        chunk_values(c, key, pd);
        for (uint32_t w = 0; w < CP_CHUNK_WORDS; w++)
            for (uint64_t m = pd[w]; m; m &= m - 1) {
                uint32_t pos = w * 64 + (uint32_t)__builtin_ctzll(m);
                for (int a = 0; a < c->d; a++)
                    x[a] = (double)c->vals[(size_t)a * CP_CHUNK_BITS + pos];
                fn(ud, ((uint32_t)key << 16) | pos, x);
            }
    }
}

/* Pass 1: shifted sums for mean and variance, and the sample. */
typedef struct pass1 {
    cl_t *c;
    int have_shift;
    double shift[CL_MAX_ATTRS], s1[CL_MAX_ATTRS], s2[CL_MAX_ATTRS];
    uint64_t keep_below; /* hash threshold: keep when hash < keep_below */
    int keep_all;
    double *sample; /* raw values, d per point */
    size_t ns, cap;
    int oom;
} pass1_t;

static void p1_visit(void *ud, uint32_t ord, const double *x)
{
    pass1_t *p = ud;
    int d = p->c->d;
    if (!p->have_shift) {
        for (int a = 0; a < d; a++)
            p->shift[a] = x[a];
        p->have_shift = 1;
    }
    for (int a = 0; a < d; a++) {
        double y = x[a] - p->shift[a];
        p->s1[a] += y;
        p->s2[a] += y * y;
    }
    if (!p->keep_all && hash64(&ord, sizeof ord, p->c->seed) >= p->keep_below)
        return;
    if (p->ns == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 4096;
        double *s = realloc(p->sample, nc * (size_t)d * sizeof *s);
        if (s == NULL) {
            p->oom = 1;
            return;
        }
        p->sample = s;
        p->cap = nc;
    }
    memcpy(p->sample + p->ns * (size_t)d, x, (size_t)d * sizeof *x);
    p->ns++;
}

static double dist2(const double *a, const double *b, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++) {
        double t = a[i] - b[i];
        s += t * t;
    }
    return s;
}

static int nearest(const double *x, const double *cent, int k, int d, double *best_d)
{
    int best = 0;
    double bd = dist2(x, cent, d);
    for (int j = 1; j < k; j++) {
        double t = dist2(x, cent + (size_t)j * d, d);
        if (t < bd) {
            bd = t;
            best = j;
        }
    }
    if (best_d)
        *best_d = bd;
    return best;
}

/*
 * k-means on n standardised points z (d each) into cent (k*d). Returns
 * the inertia (sum of squared distances) and iterations through *iters.
 * CP_ENOMEM only.
 */
static cp_status kmeans(const double *z, size_t n, int d, int k, uint64_t seed, unsigned max_iter,
                        double *cent, double *inertia, unsigned *iters)
{
    double *dmin = malloc(n * sizeof *dmin);
    int *asg = malloc(n * sizeof *asg);
    double *sum = calloc((size_t)k * (size_t)d, sizeof *sum);
    uint64_t *cnt = calloc((size_t)k, sizeof *cnt);
    if (!dmin || !asg || !sum || !cnt) {
        free(dmin);
        free(asg);
        free(sum);
        free(cnt);
        return CP_ENOMEM;
    }
    uint64_t st = seed;
    /* k-means++: the first centre uniformly, each next one with probability
     * proportional to the squared distance to the nearest centre so far. */
    size_t first = (size_t)(rand_double(&st) * (double)n);
    memcpy(cent, z + first * (size_t)d, (size_t)d * sizeof *cent);
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        dmin[i] = dist2(z + i * (size_t)d, cent, d);
        total += dmin[i];
    }
    for (int j = 1; j < k; j++) {
        size_t pick = 0;
        if (total > 0) {
            double r = rand_double(&st) * total, acc = 0;
            pick = n - 1;
            for (size_t i = 0; i < n; i++) {
                acc += dmin[i];
                if (acc > r) {
                    pick = i;
                    break;
                }
            }
        } else {
            pick = (size_t)(rand_double(&st) * (double)n); /* all points equal */
        }
        double *cj = cent + (size_t)j * d;
        memcpy(cj, z + pick * (size_t)d, (size_t)d * sizeof *cj);
        total = 0;
        for (size_t i = 0; i < n; i++) {
            double t = dist2(z + i * (size_t)d, cj, d);
            if (t < dmin[i])
                dmin[i] = t;
            total += dmin[i];
        }
    }
    for (size_t i = 0; i < n; i++)
        asg[i] = -1;
    unsigned it = 0;
    double in = 0;
    for (;;) {
        size_t changed = 0;
        in = 0;
        for (size_t i = 0; i < n; i++) {
            double bd;
            int b = nearest(z + i * (size_t)d, cent, k, d, &bd);
            dmin[i] = bd;
            in += bd;
            if (b != asg[i]) {
                asg[i] = b;
                changed++;
            }
        }
        if (changed == 0 || it >= max_iter)
            break;
        it++;
        memset(sum, 0, (size_t)k * (size_t)d * sizeof *sum);
        memset(cnt, 0, (size_t)k * sizeof *cnt);
        for (size_t i = 0; i < n; i++) {
            cnt[asg[i]]++;
            for (int a = 0; a < d; a++)
                sum[(size_t)asg[i] * d + a] += z[i * (size_t)d + a];
        }
        for (int j = 0; j < k; j++) {
            if (cnt[j] == 0) {
                /* Empty cluster: move it to the point farthest from its centre. */
                size_t far = 0;
                for (size_t i = 1; i < n; i++)
                    if (dmin[i] > dmin[far])
                        far = i;
                memcpy(cent + (size_t)j * d, z + far * (size_t)d, (size_t)d * sizeof *cent);
                dmin[far] = 0;
                continue;
            }
            for (int a = 0; a < d; a++)
                cent[(size_t)j * d + a] = sum[(size_t)j * d + a] / (double)cnt[j];
        }
    }
    *inertia = in;
    *iters = it;
    free(dmin);
    free(asg);
    free(sum);
    free(cnt);
    return CP_OK;
}

/* Pass 2: assign everyone, build the cluster bitmaps chunk by chunk. */
typedef struct pass2 {
    cl_t *c;
    int k;
    const double *cent; /* standardised */
    uint64_t *dense;    /* k chunks */
    uint16_t key;
    int have_key;
    roaring_bitmap_t **bm;
    uint64_t size[CL_MAX_K];
    double sum[CL_MAX_K][CL_MAX_ATTRS];
    double inertia;
    cp_status rc;
} pass2_t;

static void p2_flush(pass2_t *p)
{
    if (!p->have_key)
        return;
    for (int j = 0; j < p->k; j++) {
        uint64_t *dj = p->dense + (size_t)j * CP_CHUNK_WORDS;
        if (p->rc == CP_OK && bm_append_dense(p->bm[j], p->key, dj) != CP_OK)
            p->rc = CP_ENOMEM;
        dense_zero(dj);
    }
    p->have_key = 0;
}

static void p2_visit(void *ud, uint32_t ord, const double *x)
{
    pass2_t *p = ud;
    cl_t *c = p->c;
    uint16_t key = (uint16_t)(ord >> 16);
    if (!p->have_key || key != p->key) {
        p2_flush(p);
        p->key = key;
        p->have_key = 1;
    }
    double z[CL_MAX_ATTRS] = {0};
    for (int a = 0; a < c->d; a++)
        z[a] = (x[a] - c->at[a].mean) / c->at[a].sd;
    double bd;
    int j = nearest(z, p->cent, p->k, c->d, &bd);
    p->inertia += bd;
    p->size[j]++;
    for (int a = 0; a < c->d; a++)
        p->sum[j][a] += x[a] - c->at[a].mean; /* centred: keeps precision for timestamps */
    uint32_t pos = ord & 0xFFFF;
    p->dense[(size_t)j * CP_CHUNK_WORDS + (pos >> 6)] |= UINT64_C(1) << (pos & 63);
}

/* ------------------------------------------------------------ storage */

/* Removes every direct member of a tag. */
static cp_status clear_tag(cp_db_t *db, uint32_t id)
{
    const idx_tag_t *t = index_tag(db->ix, id);
    if (t == NULL || t->direct == NULL || roaring_bitmap_is_empty(t->direct))
        return CP_OK;
    roaring_bitmap_t *old = roaring_bitmap_copy(t->direct);
    if (old == NULL)
        return CP_ENOMEM;
    roaring_uint32_iterator_t it;
    roaring_init_iterator(old, &it);
    for (; it.has_value; roaring_advance_uint32_iterator(&it))
        index_tag_unassign(db->ix, &db->tax, it.current_value, id);
    roaring_bitmap_free(old);
    return CP_OK;
}

static cp_status store_clusters(cp_db_t *db, const char *root, int k, roaring_bitmap_t **bm,
                                char **desc, const json_t *names, cp_error_t *err)
{
    store_txn_t *txn;
    cp_status rc = db_write_begin(db, &txn, err);
    if (rc)
        return rc;
    int touched = 0;
    char path[TAX_MAX_PATH + 1];
    uint32_t rid;
    if (strlen(root) + 8 > TAX_MAX_PATH) {
        db_write_abort(db, txn);
        return CP_ERR(err, CP_ELIMIT, "cluster root \"%.64s...\" is too long", root);
    }
    if ((rc = db_ensure_tag(db, txn, root, NULL, NULL, &rid, &touched, err)))
        goto fail;
    /* Old clusters under the root beyond k are emptied, not deleted:
     * crowds may reference them. */
    const tax_tag_t *rt = tax_get(&db->tax, rid);
    for (uint32_t i = 0; rt && i < rt->nchildren; i++) {
        tax_tag_t *ch = tax_get(&db->tax, rt->children[i]);
        const char *leaf = ch ? strrchr(ch->path, '/') : NULL;
        if (leaf == NULL || leaf[1] != 'c')
            continue;
        touched = 1;
        if ((rc = clear_tag(db, ch->id)))
            goto fail;
        int num = atoi(leaf + 2);
        if (num > k) {
            if ((rc = tax_set_text(&db->tax, ch->id, NULL,
                                   "empty: replaced by a later k-means run with fewer clusters",
                                   err)) ||
                (rc = tax_store_put(txn, ch, err)))
                goto fail;
        }
    }
    for (int j = 0; j < k; j++) {
        snprintf(path, sizeof path, "%s/c%d", root, j + 1);
        uint32_t id;
        if ((rc = db_ensure_tag(db, txn, path, NULL, NULL, &id, &touched, err)))
            goto fail;
        touched = 1;
        /* Display names from "names" (高价值, 沉睡 ...), else the slug: a
         * new run's clusters mean something else than an old run's. */
        char slug[16];
        snprintf(slug, sizeof slug, "c%d", j + 1);
        const char *nm = names ? json_string_value(json_array_get(names, (size_t)j)) : slug;
        if ((rc = clear_tag(db, id)) || (rc = tax_set_text(&db->tax, id, nm, desc[j], err)) ||
            (rc = tax_store_put(txn, tax_get(&db->tax, id), err)))
            goto fail;
        roaring_uint32_iterator_t it;
        roaring_init_iterator(bm[j], &it);
        for (; it.has_value; roaring_advance_uint32_iterator(&it))
            if (roaring_bitmap_contains(db->ix->universe, it.current_value))
                index_tag_assign(db->ix, &db->tax, it.current_value, id);
    }
    return db_write_end(db, txn, err);
fail:
    if (!touched) {
        db_write_abort(db, txn);
        return rc;
    }
    return db_write_fail(db, txn, rc, err);
}

/* ------------------------------------------------------------ request */

static json_t *value_json(cp_attr_type t, double v)
{
    if (t == CP_ATTR_TIMESTAMP) {
        char b[48];
        time_format((int64_t)llround(v), b, sizeof b);
        return json_string(b);
    }
    return json_real(ana_round(v));
}

cp_status cp_cluster_json(cp_db_t *db, const char *request, size_t len, char **out, cp_error_t *err)
{
    static const char *const fields[] = {
        "attributes",     "crowd",  "k",         "root", "elbow", "seed",
        "max_iterations", "sample", "min_count", "top",  "names", NULL};
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    uint64_t t0 = time_mono_ns();
    cl_t c = {.db = db};
    pass1_t p1 = {.c = &c};
    pass2_t *p2 = NULL;
    json_t *req = NULL, *clabel = NULL, *res = NULL;
    roaring_bitmap_t *bms[CL_MAX_K] = {0};
    char *desc[CL_MAX_K] = {0};
    double *z = NULL, *cent = NULL;
    int locked = 0;
    int bad = 0; /* a report field could not be added: out of memory */
    uint64_t k = 0, seed = 42, max_iter = CL_DEFAULT_ITER, sample = CL_DEFAULT_SAMPLE,
             min_count = 0, top = 5, kmin = 0, kmax = 0;
    const char *root = NULL;
    cp_status rc = ana_parse_request(request, len, &req, err);
    if (rc)
        return rc;
    if ((rc = ana_check_fields(req, "cluster", fields, err)) ||
        (rc = ana_get_uint(req, "k", CL_MAX_K, &k, err)) ||
        (rc = ana_get_uint(req, "seed", UINT64_C(1) << 53, &seed, err)) ||
        (rc = ana_get_uint(req, "max_iterations", 10000, &max_iter, err)) ||
        (rc = ana_get_uint(req, "sample", CL_MAX_SAMPLE, &sample, err)) ||
        (rc = ana_get_uint(req, "top", 100, &top, err)))
        goto out;
    c.seed = seed;
    const json_t *kv = json_object_get(req, "k"), *ev = json_object_get(req, "elbow");
    if (kv && !json_is_null(kv) && (k < 1 || k > CL_MAX_K)) {
        rc = CP_ERR(err, CP_EINVAL, "cluster: \"k\" must be from 1 to %d", CL_MAX_K);
        goto out;
    }
    if (ev && !json_is_null(ev)) {
        if (!json_is_array(ev) || json_array_size(ev) != 2 ||
            !json_is_integer(json_array_get(ev, 0)) || !json_is_integer(json_array_get(ev, 1))) {
            rc = CP_ERR(err, CP_EINVAL, "cluster: \"elbow\" must be [KMIN, KMAX]");
            goto out;
        }
        json_int_t a = json_integer_value(json_array_get(ev, 0)),
                   b = json_integer_value(json_array_get(ev, 1));
        if (a < 1 || b < a || b > CL_MAX_K || b - a + 1 > CL_MAX_ELBOW) {
            rc = CP_ERR(err, CP_EINVAL,
                        "cluster: \"elbow\" [%lld, %lld]: need 1 <= KMIN <= KMAX <= %d and at "
                        "most %d values of k",
                        (long long)a, (long long)b, CL_MAX_K, CL_MAX_ELBOW);
            goto out;
        }
        kmin = (uint64_t)a;
        kmax = (uint64_t)b;
    }
    if (k == 0 && kmax == 0) {
        rc = CP_ERR(err, CP_EINVAL,
                    "cluster: give \"k\" (clusters to make) or \"elbow\": [KMIN, KMAX]");
        goto out;
    }
    if (sample < 100) {
        rc = CP_ERR(err, CP_EINVAL, "cluster: \"sample\" must be at least 100");
        goto out;
    }
    const json_t *rv = json_object_get(req, "root");
    if (rv && !json_is_null(rv)) {
        if (!json_is_string(rv)) {
            rc = CP_ERR(err, CP_EINVAL,
                        "cluster: \"root\" must be a tag path such as \"cluster/value\"");
            goto out;
        }
        root = json_string_value(rv);
        if ((rc = tax_validate_path(root, strlen(root), err))) {
            error_prefix(err, "cluster: \"root\": ");
            goto out;
        }
        if (k == 0) {
            rc = CP_ERR(err, CP_EINVAL, "cluster: \"root\" needs \"k\"");
            goto out;
        }
    }
    /* "names": display names of the k clusters, in any script. */
    const json_t *names = json_object_get(req, "names");
    if (names && json_is_null(names))
        names = NULL;
    if (names) {
        if (!json_is_array(names) || k == 0 || json_array_size(names) != k) {
            rc = CP_ERR(err, CP_EINVAL, "cluster: \"names\" must be an array of k (%llu) names",
                        (unsigned long long)k);
            goto out;
        }
        for (size_t i = 0; i < k; i++) {
            const json_t *nv = json_array_get(names, i);
            char what[48];
            snprintf(what, sizeof what, "cluster: names[%zu]", i);
            if (!json_is_string(nv) || json_string_length(nv) == 0) {
                rc = CP_ERR(err, CP_EINVAL, "%s must be a non-empty string", what);
                goto out;
            }
            if ((rc = tax_validate_text(what, json_string_value(nv), TAX_MAX_NAME, err)))
                goto out;
        }
    }
    const json_t *av = json_object_get(req, "attributes");
    if (!json_is_array(av) || json_array_size(av) == 0 || json_array_size(av) > CL_MAX_ATTRS) {
        rc = CP_ERR(err, CP_EINVAL,
                    "cluster: \"attributes\" must name 1 to %d int or timestamp "
                    "attributes",
                    CL_MAX_ATTRS);
        goto out;
    }
    c.vals = malloc((size_t)json_array_size(av) * CP_CHUNK_BITS * sizeof *c.vals);
    c.buf = ana_dense_alloc(2);
    if (!c.vals || !c.buf) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = db_read_begin(db, err)))
        goto out;
    locked = 1;
    if ((rc = ana_min_count_request(db, req, &min_count, err)))
        goto out;
    for (size_t i = 0; i < json_array_size(av); i++) {
        const json_t *n = json_array_get(av, i);
        const char *name = json_is_string(n) ? json_string_value(n) : "";
        const schema_attr_t *a = schema_find(&db->sch, name, strlen(name));
        if (a == NULL) {
            rc = CP_ERR(err, CP_ENOTFOUND,
                        "cluster: \"attributes\"[%zu]: unknown attribute \"%.64s\"", i, name);
            goto out;
        }
        if (a->type != CP_ATTR_INT && a->type != CP_ATTR_TIMESTAMP) {
            rc = CP_ERR(err, CP_ETYPE,
                        "cluster: attribute \"%s\" is %s; k-means needs int or "
                        "timestamp attributes",
                        a->name, cp_attr_type_name(a->type));
            goto out;
        }
        for (int j = 0; j < c.d; j++)
            if (c.at[j].a == a) {
                rc = CP_ERR(err, CP_EINVAL, "cluster: attribute \"%s\" is named twice", a->name);
                goto out;
            }
        const idx_attr_t *ia = index_attr(db->ix, a->id);
        c.at[c.d].a = a;
        c.at[c.d].bsi = ia ? ia->bsi : NULL;
        c.d++;
    }
    const json_t *cspec = json_object_get(req, "crowd");
    if (cspec && !json_is_null(cspec)) {
        if ((rc = ana_set_eval_locked(db, cspec, "crowd", &c.pop, &clabel, err)))
            goto out;
    } else {
        c.pop = roaring_bitmap_copy(db->ix->universe);
        clabel = json_pack("{s:s}", "expression", "all");
    }
    if (c.pop == NULL || clabel == NULL) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    uint64_t crowd_size = roaring_bitmap_get_cardinality(c.pop);
    for (int a = 0; a < c.d; a++) {
        if (c.at[a].bsi == NULL)
            roaring_bitmap_clear(c.pop);
        else
            roaring_bitmap_and_inplace(c.pop, c.at[a].bsi->exists);
    }
    c.npop = roaring_bitmap_get_cardinality(c.pop);
    uint64_t need = k > kmax ? k : kmax;
    if (c.npop < need) {
        rc = CP_ERR(err, CP_EINVAL,
                    "cluster: k = %llu but only %llu users have every chosen attribute",
                    (unsigned long long)need, (unsigned long long)c.npop);
        goto out;
    }
    /* Pass 1 */
    p1.keep_all = c.npop <= sample;
    p1.keep_below = p1.keep_all
                        ? UINT64_MAX
                        : (uint64_t)((double)sample / (double)c.npop * 18446744073709551615.0);
    visit_all(&c, p1_visit, &p1);
    if (p1.oom) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory sampling");
        goto out;
    }
    if (p1.ns < need) {
        rc = CP_ERR(err, CP_EINVAL,
                    "cluster: the sample holds %zu users, fewer than k = %llu; "
                    "raise \"sample\"",
                    p1.ns, (unsigned long long)need);
        goto out;
    }
    for (int a = 0; a < c.d; a++) {
        double m = p1.s1[a] / (double)c.npop;
        double var = p1.s2[a] / (double)c.npop - m * m;
        c.at[a].mean = p1.shift[a] + m;
        c.at[a].sd = var > 0 ? sqrt(var) : 0;
        if (!(c.at[a].sd > 0))
            c.at[a].sd = 1; /* constant: z = 0 for everyone */
    }
    z = malloc(p1.ns * (size_t)c.d * sizeof *z);
    cent = malloc((size_t)CL_MAX_K * (size_t)c.d * sizeof *cent);
    res = json_object();
    if (!z || !cent || !res) {
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < p1.ns; i++)
        for (int a = 0; a < c.d; a++)
            z[i * (size_t)c.d + a] = (p1.sample[i * (size_t)c.d + a] - c.at[a].mean) / c.at[a].sd;

    json_t *attrs = json_array();
    for (int a = 0; a < c.d; a++)
        bad |= json_array_append_new(attrs,
                                     json_pack("{s:s,s:s,s:o,s:f}", "name", c.at[a].a->name, "type",
                                               cp_attr_type_name(c.at[a].a->type), "mean",
                                               value_json(c.at[a].a->type, c.at[a].mean), "sd",
                                               ana_round(c.at[a].sd)));
    bad |= json_object_set_new(clabel, "size", json_integer((json_int_t)crowd_size));
    bad |= json_object_set_new(res, "crowd", clabel);
    clabel = NULL;
    bad |= json_object_set_new(res, "attributes", attrs);
    bad |= json_object_set_new(res, "population", json_integer((json_int_t)c.npop));
    bad |= json_object_set_new(res, "excluded", json_integer((json_int_t)(crowd_size - c.npop)));
    bad |= json_object_set_new(res, "sample", json_integer((json_int_t)p1.ns));
    bad |= json_object_set_new(res, "seed", json_integer((json_int_t)seed));
    bad |= json_object_set_new(res, "min_count", json_integer((json_int_t)min_count));

    if (kmax) {
        json_t *el = json_array();
        /* Checked at once: a failed set frees `el`, which is filled below. */
        if (json_object_set_new(res, "elbow", el)) {
            rc = CP_ERR(err, CP_ENOMEM, "cluster: out of memory building the report");
            goto out;
        }
        for (uint64_t kk = kmin; kk <= kmax; kk++) {
            double in;
            unsigned its;
            if (kmeans(z, p1.ns, c.d, (int)kk, seed, (unsigned)max_iter, cent, &in, &its)) {
                rc = CP_ERR(err, CP_ENOMEM, "out of memory");
                goto out;
            }
            bad |= json_array_append_new(el, json_pack("{s:I,s:f,s:f,s:i}", "k", (json_int_t)kk,
                                                       "inertia", ana_round(in), "inertia_per_user",
                                                       ana_round(in / (double)p1.ns), "iterations",
                                                       its));
        }
    }
    if (k) {
        double in;
        unsigned its;
        if (kmeans(z, p1.ns, c.d, (int)k, seed, (unsigned)max_iter, cent, &in, &its)) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        p2 = calloc(1, sizeof *p2);
        uint64_t *dense = ana_dense_alloc((size_t)k);
        if (p2 == NULL || dense == NULL) {
            free(dense);
            rc = CP_ERR(err, CP_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t j = 0; j < k; j++) {
            dense_zero(dense + j * CP_CHUNK_WORDS);
            if ((bms[j] = roaring_bitmap_create()) == NULL)
                p2->rc = CP_ENOMEM;
        }
        p2->c = &c;
        p2->k = (int)k;
        p2->cent = cent;
        p2->dense = dense;
        p2->bm = bms;
        if (p2->rc == CP_OK)
            visit_all(&c, p2_visit, p2);
        p2_flush(p2);
        free(dense);
        if (p2->rc) {
            rc = CP_ERR(err, CP_ENOMEM, "out of memory assigning clusters");
            goto out;
        }
        json_t *cl = json_array();
        bad |= json_object_set_new(res, "k", json_integer((json_int_t)k));
        bad |= json_object_set_new(res, "iterations", json_integer(its));
        bad |= json_object_set_new(res, "inertia", json_real(ana_round(p2->inertia)));
        bad |= json_object_set_new(res, "sample_inertia", json_real(ana_round(in)));
        if (json_object_set_new(res, "clusters", cl)) {
            rc = CP_ERR(err, CP_ENOMEM, "cluster: out of memory building the report");
            goto out;
        }
        for (int j = 0; j < (int)k; j++) {
            json_t *o = json_object();
            char name[16];
            snprintf(name, sizeof name, "c%d", j + 1);
            bad |= json_object_set_new(o, "name", json_string(name));
            if (names)
                bad |= json_object_set_new(o, "display_name",
                                           json_deep_copy(json_array_get(names, (size_t)j)));
            if (root) {
                char path[TAX_MAX_PATH + 1];
                snprintf(path, sizeof path, "%s/%s", root, name);
                bad |= json_object_set_new(o, "tag", json_string(path));
            }
            buf_t d;
            buf_init(&d, TAX_MAX_DESCRIPTION);
            buf_printf(&d, "k-means cluster %d of %d; centroid:", j + 1, (int)k);
            json_t *cj = json_object(), *zj = json_object();
            for (int a = 0; a < c.d; a++) {
                const schema_attr_t *at = c.at[a].a;
                double mean = p2->size[j] ? c.at[a].mean + p2->sum[j][a] / (double)p2->size[j]
                                          : c.at[a].mean + cent[(size_t)j * c.d + a] * c.at[a].sd;
                json_t *v = value_json(at->type, mean);
                char vb[64];
                if (json_is_string(v))
                    snprintf(vb, sizeof vb, "%s", json_string_value(v));
                else
                    fmt_double(ana_round(mean), vb, sizeof vb);
                buf_printf(&d, "%s %s=%s", a ? "," : "", at->name, vb);
                bad |= json_object_set_new(cj, at->name, v);
                bad |= json_object_set_new(zj, at->name,
                                           json_real(ana_round(cent[(size_t)j * c.d + a])));
            }
            desc[j] = d.data ? strdup(buf_cstr(&d)) : NULL;
            buf_free(&d);
            if (desc[j] == NULL) {
                json_decref(cj);
                json_decref(zj);
                json_decref(o);
                rc = CP_ERR(err, CP_ENOMEM, "out of memory");
                goto out;
            }
            if (p2->size[j] < min_count) {
                json_decref(cj);
                json_decref(zj);
                bad |= json_object_set_new(o, "suppressed", json_true());
            } else {
                json_t *tt = NULL;
                if ((rc = ana_top_tags_locked(db, bms[j], c.pop, min_count, (size_t)top, &tt,
                                              err))) {
                    json_decref(cj);
                    json_decref(zj);
                    json_decref(o);
                    goto out;
                }
                bad |= json_object_set_new(o, "size", json_integer((json_int_t)p2->size[j]));
                bad |= json_object_set_new(
                    o, "share", json_real(ana_round((double)p2->size[j] / (double)c.npop)));
                bad |= json_object_set_new(o, "centroid", cj);
                bad |= json_object_set_new(o, "centroid_z", zj);
                bad |= json_object_set_new(o, "top_tags", tt);
            }
            bad |= json_array_append_new(cl, o);
        }
    }
    db_read_end(db);
    locked = 0;
    /* A report that lost a field must not store clusters and say CP_OK. */
    if (bad) {
        rc = CP_ERR(err, CP_ENOMEM, "cluster: out of memory building the report");
        goto out;
    }
    if (root) {
        if ((rc = store_clusters(db, root, (int)k, bms, desc, names, err)))
            goto out;
        bad |= json_object_set_new(res, "root", json_string(root));
        bad |= json_object_set_new(res, "stored", json_true());
    } else {
        bad |= json_object_set_new(res, "stored", json_false());
    }
    bad |= json_object_set_new(res, "took_ms",
                               json_real(ana_round((double)(time_mono_ns() - t0) / 1e6)));
    if (bad) {
        rc = CP_ERR(err, CP_ENOMEM, "cluster: out of memory building the report");
        goto out;
    }
    rc = db_json_out(res, out, err);
    res = NULL;
out:
    if (locked)
        db_read_end(db);
    for (int j = 0; j < CL_MAX_K; j++) {
        index_bm_free(bms[j]);
        free(desc[j]);
    }
    free(p2);
    free(z);
    free(cent);
    free(p1.sample);
    free(c.vals);
    free(c.buf);
    index_bm_free(c.pop);
    json_decref(clabel);
    json_decref(res);
    json_decref(req);
    return rc;
}
