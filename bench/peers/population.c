/*
 * population.c — reads a demo population out of a crowdpack data directory
 * through the public C API, so that every peer loads exactly the data
 * crowdpack holds.
 *
 * Tags come from cp_tags_json (paths, parents, levels, effective counts).
 * Users come from cp_user_json("uK") for K = 1..n: the only public call
 * that returns exact coordinates and the direct tags of a user. It costs
 * ~60-90 us per user, so the reads are split over threads (the handle
 * allows concurrent reads). Effective membership is then built as dense
 * bitmaps from direct tags plus ancestors, and every tag's popcount is
 * checked against crowdpack's own count: a mismatch stops the run.
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers.h"

/* Small open-addressing map from tag path to id (built once, read-only
 * while the reader threads run). */
typedef struct tagmap {
    size_t cap;
    int *slot; /* tag id + 1, 0 = empty */
    const pop_t *p;
} tagmap_t;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int tagmap_get(const tagmap_t *m, const char *path)
{
    for (size_t i = hash_str(path) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int v = m->slot[i];
        if (!v)
            return -1;
        if (!strcmp(m->p->path[v - 1], path))
            return v - 1;
    }
}

static tagmap_t g_tagmap; /* set by pop_extract; used by pop_tag_id */

int pop_tag_id(const pop_t *p, const char *path)
{
    if (g_tagmap.p != p)
        return -1;
    return tagmap_get(&g_tagmap, path);
}

static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;

/* Interns an enum value; -1 when the table is full. */
static int intern(pop_enum_t *e, const char *v)
{
    int id = -1;
    pthread_mutex_lock(&intern_lock);
    for (int i = 0; i < e->n; i++)
        if (!strcmp(e->v[i], v)) {
            id = i;
            goto out;
        }
    if (e->n < POP_MAX_VALUES && (e->v[e->n] = strdup(v)) != NULL)
        id = e->n++;
out:
    pthread_mutex_unlock(&intern_lock);
    return id;
}

typedef struct reader {
    cp_db_t *db;
    pop_t *p;
    uint64_t from, to; /* K range [from, to) */
    uint16_t *tags;    /* direct tags of users in range, CSR via cnt */
    uint64_t ntags, captags;
    uint32_t *cnt; /* per user in range */
    char err[600];
} reader_t;

static int get_int(json_t *attrs, const char *name, int32_t *out)
{
    json_t *v = json_object_get(attrs, name);
    if (!v || json_is_null(v)) {
        *out = INT32_MIN;
        return 0;
    }
    if (!json_is_integer(v))
        return -1;
    *out = (int32_t)json_integer_value(v);
    return 0;
}

static int get_enum(json_t *attrs, const char *name, pop_enum_t *e, int16_t *out)
{
    json_t *v = json_object_get(attrs, name);
    if (!v || json_is_null(v)) {
        *out = -1;
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    int id = intern(e, json_string_value(v));
    if (id < 0)
        return -1;
    *out = (int16_t)id;
    return 0;
}

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    pop_t *p = r->p;
    cp_error_t e;
    for (uint64_t k = r->from; k < r->to; k++) {
        char id[32], *js = NULL;
        snprintf(id, sizeof id, "u%llu", (unsigned long long)k);
        if (cp_user_json(r->db, id, &js, &e) != CP_OK) {
            snprintf(r->err, sizeof r->err, "user %s: %s (is this a `crowdpack demo` directory?)",
                     id, e.message);
            return r;
        }
        json_error_t je;
        json_t *u = json_loads(js, 0, &je);
        cp_free(js);
        if (!u) {
            snprintf(r->err, sizeof r->err, "user %s: bad JSON: %s", id, je.text);
            return r;
        }
        uint64_t i = k - 1;
        json_t *a = json_object_get(u, "attrs"), *tags = json_object_get(u, "tags");
        int bad = !a || !json_is_array(tags);
        bad = bad || get_int(a, "age", &p->age[i]) || get_int(a, "points", &p->points[i]);
        bad = bad || get_enum(a, "gender", &p->genders, &p->gender[i]) ||
              get_enum(a, "city", &p->cities, &p->city[i]) ||
              get_enum(a, "member_tier", &p->tiers, &p->tier[i]);
        json_t *m = a ? json_object_get(a, "is_member") : NULL;
        p->is_member[i] = json_is_boolean(m) ? (int8_t)json_is_true(m) : -1;
        json_t *loc = a ? json_object_get(a, "loc") : NULL;
        p->lat[i] = p->lon[i] = NAN;
        if (json_is_array(loc) && json_array_size(loc) == 2) {
            p->lat[i] = json_number_value(json_array_get(loc, 0));
            p->lon[i] = json_number_value(json_array_get(loc, 1));
        }
        size_t nt = bad ? 0 : json_array_size(tags);
        if (!bad && r->ntags + nt > r->captags) {
            size_t cap = (r->captags ? r->captags * 2 : 1 << 20) + nt;
            uint16_t *t = realloc(r->tags, cap * sizeof *t);
            if (!t) {
                json_decref(u);
                snprintf(r->err, sizeof r->err, "out of memory reading user tags");
                return r;
            }
            r->tags = t;
            r->captags = cap;
        }
        for (size_t j = 0; !bad && j < nt; j++) {
            json_t *t = json_array_get(tags, j);
            int tid = json_is_string(t) ? tagmap_get(&g_tagmap, json_string_value(t)) : -1;
            if (tid < 0)
                bad = 1;
            else
                r->tags[r->ntags++] = (uint16_t)tid;
        }
        r->cnt[k - r->from] = (uint32_t)nt;
        json_decref(u);
        if (bad) {
            snprintf(r->err, sizeof r->err, "user %s: unexpected JSON shape or unknown tag", id);
            return r;
        }
    }
    return NULL;
}

static int load_tags(cp_db_t *db, pop_t *p, char *err, size_t errlen)
{
    char *js = NULL;
    cp_error_t e;
    json_t *root = NULL;
    int rc = -1;
    if (cp_tags_json(db, NULL, &js, &e) != CP_OK) {
        snprintf(err, errlen, "cp_tags_json: %s", e.message);
        goto out;
    }
    json_error_t je;
    root = json_loads(js, 0, &je);
    json_t *arr = root ? json_object_get(root, "tags") : NULL;
    size_t n = json_array_size(arr);
    if (!n || n > POP_MAX_TAGS) {
        snprintf(err, errlen, "cp_tags_json: %zu tags (expected 1..%d)", n, POP_MAX_TAGS);
        goto out;
    }
    p->ntags = (int)n;
    p->path = calloc(n, sizeof *p->path);
    p->parent = calloc(n, sizeof *p->parent);
    p->level = calloc(n, sizeof *p->level);
    p->count = calloc(n, sizeof *p->count);
    p->desc = calloc(n, sizeof *p->desc);
    p->ndesc = calloc(n, sizeof *p->ndesc);
    g_tagmap.cap = 1;
    while (g_tagmap.cap < 4 * n)
        g_tagmap.cap <<= 1;
    free(g_tagmap.slot);
    g_tagmap.slot = calloc(g_tagmap.cap, sizeof *g_tagmap.slot);
    g_tagmap.p = p;
    if (!p->path || !p->parent || !p->level || !p->count || !p->desc || !p->ndesc ||
        !g_tagmap.slot) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(arr, i);
        const char *path = json_string_value(json_object_get(t, "path"));
        if (!path || !(p->path[i] = strdup(path))) {
            snprintf(err, errlen, "cp_tags_json: tag %zu has no path", i);
            goto out;
        }
        p->level[i] = (int)json_integer_value(json_object_get(t, "level"));
        p->count[i] = (uint64_t)json_integer_value(json_object_get(t, "count"));
        size_t s = hash_str(path) & (g_tagmap.cap - 1);
        while (g_tagmap.slot[s])
            s = (s + 1) & (g_tagmap.cap - 1);
        g_tagmap.slot[s] = (int)i + 1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *par = json_object_get(json_array_get(arr, i), "parent");
        p->parent[i] = json_is_string(par) ? tagmap_get(&g_tagmap, json_string_value(par)) : -1;
        if (json_is_string(par) && p->parent[i] < 0) {
            snprintf(err, errlen, "tag %s: unknown parent %s", p->path[i], json_string_value(par));
            goto out;
        }
    }
    /* Closure: each tag is a descendant-or-self of itself and its ancestors. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++)
            for (int a = (int)i; a >= 0; a = p->parent[a]) {
                if (pass)
                    p->desc[a][p->ndesc[a]] = (int)i;
                p->ndesc[a]++;
            }
        for (size_t i = 0; i < n && !pass; i++) {
            p->desc[i] = malloc(sizeof(int) * (size_t)p->ndesc[i]);
            p->ndesc[i] = 0;
            if (!p->desc[i]) {
                snprintf(err, errlen, "out of memory");
                goto out;
            }
        }
    }
    rc = 0;
out:
    json_decref(root);
    cp_free(js);
    return rc;
}

int pop_extract(cp_db_t *db, int threads, pop_t *p, char *err, size_t errlen)
{
    double t0 = peers_now();
    cp_db_stats_t st = CP_DB_STATS_INIT;
    reader_t *rd = NULL;
    pthread_t *tid = NULL;
    int rc = -1, started = 0;
    memset(p, 0, sizeof *p);
    if (cp_db_stats(db, &st, NULL) != CP_OK || st.users == 0 || st.users != st.ordinals) {
        snprintf(err, errlen, "the data directory has no users, or deleted ones (not a demo)");
        return -1;
    }
    p->n = st.users;
    if (load_tags(db, p, err, errlen))
        return -1;
    uint64_t n = p->n;
    p->age = malloc(n * sizeof *p->age);
    p->points = malloc(n * sizeof *p->points);
    p->gender = malloc(n * sizeof *p->gender);
    p->city = malloc(n * sizeof *p->city);
    p->tier = malloc(n * sizeof *p->tier);
    p->is_member = malloc(n * sizeof *p->is_member);
    p->lat = malloc(n * sizeof *p->lat);
    p->lon = malloc(n * sizeof *p->lon);
    p->toff = malloc((n + 1) * sizeof *p->toff);
    if (threads < 1)
        threads = 1;
    if ((uint64_t)threads > n)
        threads = (int)n;
    rd = calloc((size_t)threads, sizeof *rd);
    tid = calloc((size_t)threads, sizeof *tid);
    if (!p->age || !p->points || !p->gender || !p->city || !p->tier || !p->is_member || !p->lat ||
        !p->lon || !p->toff || !rd || !tid) {
        snprintf(err, errlen, "out of memory for %llu users", (unsigned long long)n);
        goto out;
    }
    for (int t = 0; t < threads; t++) {
        rd[t].db = db;
        rd[t].p = p;
        rd[t].from = 1 + n * (uint64_t)t / (uint64_t)threads;
        rd[t].to = 1 + n * (uint64_t)(t + 1) / (uint64_t)threads;
        rd[t].cnt = malloc((rd[t].to - rd[t].from + 1) * sizeof *rd[t].cnt);
        if (!rd[t].cnt) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    for (; started < threads; started++)
        if (pthread_create(&tid[started], NULL, reader_main, &rd[started])) {
            snprintf(err, errlen, "pthread_create failed");
            break;
        }
    int failed = started < threads;
    for (int t = 0; t < started; t++) {
        void *res;
        pthread_join(tid[t], &res);
        if (res && !failed) {
            snprintf(err, errlen, "%s", rd[t].err);
            failed = 1;
        }
    }
    if (failed)
        goto out;
    /* Stitch the per-thread tag lists into one CSR. */
    uint64_t total = 0;
    for (int t = 0; t < threads; t++)
        total += rd[t].ntags;
    p->tagv = malloc((total ? total : 1) * sizeof *p->tagv);
    if (!p->tagv) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    uint64_t off = 0;
    for (int t = 0; t < threads; t++) {
        memcpy(p->tagv + off, rd[t].tags, rd[t].ntags * sizeof *p->tagv);
        uint64_t o = off;
        for (uint64_t k = rd[t].from; k < rd[t].to; k++) {
            p->toff[k - 1] = o;
            o += rd[t].cnt[k - rd[t].from];
        }
        off += rd[t].ntags;
    }
    p->toff[n] = off;
    /* Effective membership, checked against crowdpack's counts. */
    uint64_t words = pop_words(p);
    p->dense = calloc((size_t)p->ntags, sizeof *p->dense);
    p->all = aligned_alloc(64, ((words * 8 + 63) / 64) * 64);
    if (!p->dense || !p->all) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memset(p->all, 0, words * 8);
    for (uint64_t i = 0; i < n; i++)
        p->all[i / 64] |= 1ull << (i % 64);
    for (int t = 0; t < p->ntags; t++) {
        p->dense[t] = aligned_alloc(64, ((words * 8 + 63) / 64) * 64);
        if (!p->dense[t]) {
            snprintf(err, errlen, "out of memory for dense bitmaps (%d tags x %llu words)",
                     p->ntags, (unsigned long long)words);
            goto out;
        }
        memset(p->dense[t], 0, words * 8);
    }
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = p->toff[i]; j < p->toff[i + 1]; j++)
            for (int a = p->tagv[j]; a >= 0; a = p->parent[a])
                p->dense[a][i / 64] |= 1ull << (i % 64);
    for (int t = 0; t < p->ntags; t++) {
        uint64_t c = 0;
        for (uint64_t w = 0; w < words; w++)
            c += (uint64_t)__builtin_popcountll(p->dense[t][w]);
        if (c != p->count[t]) {
            snprintf(err, errlen,
                     "tag %s: %llu members from direct tags + ancestors, crowdpack counts %llu",
                     p->path[t], (unsigned long long)c, (unsigned long long)p->count[t]);
            goto out;
        }
    }
    p->extract_secs = peers_now() - t0;
    rc = 0;
out:
    for (int t = 0; rd && t < threads; t++) {
        free(rd[t].tags);
        free(rd[t].cnt);
    }
    free(rd);
    free(tid);
    return rc;
}

void pop_free(pop_t *p)
{
    for (int t = 0; t < p->ntags; t++) {
        free(p->path ? p->path[t] : NULL);
        free(p->desc ? p->desc[t] : NULL);
        free(p->dense ? p->dense[t] : NULL);
    }
    free(p->path);
    free(p->parent);
    free(p->level);
    free(p->count);
    free(p->desc);
    free(p->ndesc);
    free(p->dense);
    free(p->all);
    free(p->age);
    free(p->points);
    free(p->gender);
    free(p->city);
    free(p->tier);
    free(p->is_member);
    free(p->lat);
    free(p->lon);
    free(p->toff);
    free(p->tagv);
    pop_enum_t *es[] = {&p->genders, &p->cities, &p->tiers};
    for (int e = 0; e < 3; e++)
        for (int i = 0; i < es[e]->n; i++)
            free(es[e]->v[i]);
    free(g_tagmap.slot);
    memset(&g_tagmap, 0, sizeof g_tagmap);
    memset(p, 0, sizeof *p);
}
