/*
 * workload.c — the queries every system answers, chosen from the
 * population the same way `crowdpack bench` chooses them (src/cli/bench.c),
 * so the two reports talk about the same kind of query:
 *  - dense: the five most popular tags of the shallowest level that has
 *    five tags below 95% of the users (siblings, not an umbrella root);
 *  - sparse: the three rarest non-empty tags of the deepest level.
 * The queries are kept as small trees (node_t) so that each system can
 * translate them into its own language: crowdpack text, Redis BITOP
 * pipelines, SQL, or dense word loops.
 */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "peers.h"

static node_t *mk(workload_t *w, node_kind k)
{
    node_t *n = &w->pool[w->npool++];
    memset(n, 0, sizeof *n);
    n->k = k;
    return n;
}

static node_t *tag(workload_t *w, int t)
{
    node_t *n = mk(w, N_TAG);
    n->tag = t;
    return n;
}

static node_t *op(workload_t *w, node_kind k, int nk, node_t **kids)
{
    node_t *n = mk(w, k);
    n->n = nk;
    for (int i = 0; i < nk; i++)
        n->kid[i] = kids[i];
    return n;
}

static node_t *age(workload_t *w, int64_t lo, int64_t hi)
{
    node_t *n = mk(w, N_AGE);
    n->lo = lo;
    n->hi = hi;
    return n;
}

void node_text(const pop_t *p, const node_t *n, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    switch (n->k) {
    case N_ALL:
        snprintf(buf, len, "ALL");
        return;
    case N_TAG:
        snprintf(buf, len, "tag:%s", p->path[n->tag]);
        return;
    case N_AGE:
        snprintf(buf, len, "age BETWEEN %lld AND %lld", (long long)n->lo, (long long)n->hi);
        return;
    case N_NEAR:
        snprintf(buf, len, "near(%.10g, %.10g, %.10gkm)", n->lat, n->lon, n->km);
        return;
    case N_NOT: {
        char sub[1024];
        node_text(p, n->kid[0], sub, sizeof sub);
        snprintf(buf, len, "NOT (%s)", sub);
        return;
    }
    case N_AND:
    case N_OR:
        for (int i = 0; i < n->n && used < len; i++) {
            char sub[1024];
            node_text(p, n->kid[i], sub, sizeof sub);
            int k = snprintf(buf + used, len - used, "%s(%s)",
                             i ? (n->k == N_AND ? " AND " : " OR ") : "", sub);
            used += (size_t)(k > 0 ? k : 0);
        }
        return;
    }
}

static int cmp_count_desc(const void *a, const void *b, void *ctx)
{
    const pop_t *p = ctx;
    uint64_t x = p->count[*(const int *)a], y = p->count[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : *(const int *)a - *(const int *)b;
}

int workload_build(const pop_t *p, workload_t *w, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    int *order = malloc(sizeof(int) * (size_t)p->ntags), maxlevel = 0;
    if (!order) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < p->ntags; i++) {
        order[i] = i;
        if (p->level[i] > maxlevel)
            maxlevel = p->level[i];
    }
    qsort_r(order, (size_t)p->ntags, sizeof *order, cmp_count_desc, (void *)p);
    int d[5], nd = 0;
    for (int lv = 0; lv <= maxlevel && nd < 5; lv++) {
        nd = 0;
        for (int i = 0; i < p->ntags && nd < 5; i++)
            if (p->level[order[i]] == lv && (double)p->count[order[i]] < 0.95 * (double)p->n)
                d[nd++] = order[i];
    }
    int rare[3], nr = 0;
    for (int i = p->ntags - 1; i >= 0 && nr < 3; i--)
        if (p->level[order[i]] == maxlevel && p->count[order[i]] > 0)
            rare[nr++] = order[i];
    /* Export: about a million ids (all users when there are fewer). */
    uint64_t want = p->n < 1000000 ? p->n : 1000000;
    int exp_tag = -1;
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < p->ntags && p->n > 1000000; i++) {
        uint64_t c = p->count[i], diff = c > want ? c - want : want - c;
        if (diff < best) {
            best = diff;
            exp_tag = i;
        }
    }
    free(order);
    if (nd < 5 || nr < 3) {
        snprintf(err, errlen, "the population has too few dense (%d) or sparse (%d) tags", nd, nr);
        return -1;
    }
    node_t *k[8];
    query_t *q = w->q;
    q[w->nq++] = (query_t){.name = "one tag", .slug = "one_tag", .expr = tag(w, d[0])};
    for (int i = 0; i < 3; i++)
        k[i] = tag(w, d[i]);
    q[w->nq++] = (query_t){.name = "3-term AND", .slug = "and3", .expr = op(w, N_AND, 3, k)};
    for (int i = 0; i < 3; i++)
        k[i] = tag(w, d[i]);
    node_t *abc = op(w, N_AND, 3, k), *notd = mk(w, N_NOT);
    notd->n = 1;
    notd->kid[0] = tag(w, d[3]);
    node_t *and2[2] = {abc, notd};
    node_t *or2[2] = {op(w, N_AND, 2, and2), tag(w, d[4])};
    q[w->nq++] =
        (query_t){.name = "5-term AND/OR/NOT", .slug = "five", .expr = op(w, N_OR, 2, or2)};
    for (int i = 0; i < 3; i++)
        k[i] = tag(w, rare[i]);
    node_t *sp[2] = {op(w, N_OR, 3, k), tag(w, d[0])};
    q[w->nq++] = (query_t){.name = "sparse tags", .slug = "sparse", .expr = op(w, N_AND, 2, sp)};
    q[w->nq++] = (query_t){.name = "attribute range", .slug = "range", .expr = age(w, 25, 40)};
    node_t *near = mk(w, N_NEAR);
    near->lat = 23.13;
    near->lon = 113.26;
    near->km = 50;
    q[w->nq++] = (query_t){.name = "geo radius", .slug = "geo", .expr = near};
    node_t *crowd[2] = {tag(w, d[1]), age(w, 25, 40)};
    q[w->nq++] = (query_t){.name = "share+TGI, all tags",
                           .slug = "tgi",
                           .kind = Q_TGI,
                           .expr = op(w, N_AND, 2, crowd)};
    q[w->nq++] = (query_t){.name = "export ~1M ids",
                           .slug = "export",
                           .kind = Q_EXPORT,
                           .expr = exp_tag >= 0 ? tag(w, exp_tag) : mk(w, N_ALL)};
    for (int i = 0; i < w->nq; i++)
        node_text(p, q[i].expr, q[i].text, sizeof q[i].text);
    return 0;
}

double peers_haversine_m(double lat1, double lon1, double lat2, double lon2)
{
    const double deg = M_PI / 180.0;
    double p1 = lat1 * deg, p2 = lat2 * deg;
    double sdp = sin((p2 - p1) / 2), sdl = sin((lon2 - lon1) * deg / 2);
    double a = sdp * sdp + cos(p1) * cos(p2) * sdl * sdl;
    if (a > 1)
        a = 1;
    return 2 * PEERS_EARTH_RADIUS_M * asin(sqrt(a));
}

/* ---------------------------------------------------------------- util */

double peers_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t pss_of(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    FILE *f = fopen(path, "r");
    uint64_t kb = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Pss:", 4)) {
            kb = strtoull(line + 4, NULL, 10);
            break;
        }
    fclose(f);
    return kb * 1024;
}

/* Sums PSS (shared pages split between sharers, so PostgreSQL's shared
 * buffers are counted once) over pid and its direct children. */
uint64_t peers_pss_tree(int pid)
{
    if (pid <= 0)
        return 0;
    uint64_t total = pss_of(pid);
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int c = atoi(e->d_name);
        if (c <= 0 || c == pid)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", c);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t r = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[r] = 0;
        char *rp = strrchr(buf, ')');
        int ppid = 0;
        char state;
        if (rp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && ppid == pid)
            total += pss_of(c);
    }
    if (d)
        closedir(d);
    return total;
}

uint64_t peers_file_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) ? 0 : (uint64_t)st.st_size;
}

uint64_t peers_dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    uint64_t total = 0;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st))
            continue;
        total += S_ISDIR(st.st_mode) ? peers_dir_bytes(path) : (uint64_t)st.st_size;
    }
    if (d)
        closedir(d);
    return total;
}

void peers_desc_list(const pop_t *p, int tag, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < p->ndesc[tag] && used + 16 < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%d", i ? "," : "", p->desc[tag][i]);
}

void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (k < 0)
            abort();
        if (b->s && b->len + (size_t)k < b->cap) {
            b->len += (size_t)k;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char *s = realloc(b->s, cap);
        if (!s)
            abort();
        b->s = s;
        b->cap = cap;
    }
}

void sb_free(sbuf_t *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}
