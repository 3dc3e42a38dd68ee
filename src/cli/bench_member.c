/*
 * bench_member.c — `crowdpack bench --membership`: latency of the
 * membership lookup (cp_member_lookup_ord: which crowds and tags is this
 * user in) at 1M demo users and 1,000 crowds, beside a floor measured in
 * the same run.
 *
 * The population comes from the demo generator; the crowds are dynamic
 * crowds of varied expressions (one tag, AND/OR/AND NOT of two tags, a tag
 * with an age range or a gender, crowds built on crowds), all evaluated
 * and materialised by the engine. Each lookup is timed alone on random
 * live users.
 *
 * The floor: what answering by probing every set would cost at best — one
 * probe per crowd and per tag over plain dense bit arrays (one bit per
 * user), with no lock: the probes' memory accesses alone. The lookup reads
 * the user's own list instead (index/member_list.h), so it should beat
 * the floor. Every lookup's answer is checked against the floor's (the
 * floor doubles as a reference): a mismatch fails the bench. Memory: the
 * process's resident set once the crowds are defined, and the lists' own
 * bytes.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/bench_member.h"
#include "cli/cli.h"
#include "cli/demo.h"
#include "engine/engine.h"
#include "index/member_list.h"
#include "util/util.h"

#define BM_MAX_LIST 4096

typedef struct bm_stats {
    double p50, p99, max, mean; /* microseconds */
} bm_stats_t;

static bm_stats_t stats_of(double *t, size_t n)
{
    bm_stats_t s = {0};
    if (n == 0)
        return s;
    qsort(t, n, sizeof *t, cli_cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += t[i];
    s.p50 = t[n / 2];
    s.p99 = t[(size_t)((double)(n - 1) * 0.99)];
    s.max = t[n - 1];
    s.mean = sum / (double)n;
    return s;
}

/* Paths of the demo taxonomy (level >= 2 keeps the crowds selective). */
static int tag_paths(cp_db_t *db, char ***out, size_t *n)
{
    char *text = NULL;
    cp_error_t err = {0};
    cp_status st = cp_tags_json(db, NULL, &text, &err);
    if (st != CP_OK)
        return cli_fail(st, &err);
    json_t *j = json_loads(text, 0, NULL);
    cp_free(text);
    json_t *tags = json_object_get(j, "tags");
    size_t nt = json_array_size(tags), k = 0;
    char **p = calloc(nt ? nt : 1, sizeof *p);
    for (size_t i = 0; p && i < nt; i++) {
        json_t *x = json_array_get(tags, i);
        const char *s = json_string_value(json_object_get(x, "path"));
        if (s && json_integer_value(json_object_get(x, "level")) >= 2 &&
            json_integer_value(json_object_get(x, "count")) > 0)
            p[k++] = strdup(s);
    }
    json_decref(j);
    if (p == NULL || k == 0) {
        free(p);
        return cli_failf("bench: the demo taxonomy has no tags to build crowds from");
    }
    *out = p;
    *n = k;
    return CLI_OK;
}

/* The expression of crowd i (its references point at earlier crowds). */
static void crowd_expr(char *buf, size_t cap, size_t i, uint64_t *rng, char **paths, size_t np)
{
    const char *a = paths[rand_next(rng) % np], *b = paths[rand_next(rng) % np];
    int lo = 18 + (int)(rand_next(rng) % 30), hi = lo + 5 + (int)(rand_next(rng) % 20);
    switch (i < 10 ? i % 6 : rand_next(rng) % 7) {
    case 0:
        snprintf(buf, cap, "tag:%s", a);
        break;
    case 1:
        snprintf(buf, cap, "tag:%s AND tag:%s", a, b);
        break;
    case 2:
        snprintf(buf, cap, "tag:%s OR tag:%s", a, b);
        break;
    case 3:
        snprintf(buf, cap, "tag:%s AND age BETWEEN %d AND %d", a, lo, hi);
        break;
    case 4:
        snprintf(buf, cap, "gender = \"%s\" AND tag:%s", rand_next(rng) % 2 ? "female" : "male", a);
        break;
    case 5:
        snprintf(buf, cap, "tag:%s AND NOT tag:%s", a, b);
        break;
    default:
        snprintf(buf, cap, "crowd:c%zu OR (tag:%s AND age >= %d)", (size_t)(rand_next(rng) % i), a,
                 lo);
        break;
    }
}

/* One dense bit array per crowd and tag (NULL where the set is absent). */
typedef struct floor_sets {
    uint64_t **crowd, **tag;
    uint32_t ncrowd, ntag;
    size_t words;
} floor_sets_t;

static uint64_t *dense_of(const roaring_bitmap_t *bm, size_t words)
{
    uint64_t *w = calloc(words, sizeof *w);
    if (w == NULL || bm == NULL)
        return w;
    roaring_uint32_iterator_t it;
    roaring_init_iterator(bm, &it);
    for (; it.has_value; roaring_advance_uint32_iterator(&it))
        if (it.current_value / 64 < words)
            w[it.current_value / 64] |= 1ull << (it.current_value % 64);
    return w;
}

static int floor_build(cp_db_t *db, uint64_t ordinals, floor_sets_t *f)
{
    const index_t *ix = db->ix;
    f->words = (size_t)(ordinals + 63) / 64;
    f->ncrowd = ix->ncrowds;
    f->ntag = ix->ntags;
    f->crowd = calloc(f->ncrowd + 1, sizeof *f->crowd);
    f->tag = calloc(f->ntag + 1, sizeof *f->tag);
    if (!f->crowd || !f->tag)
        return cli_failf("out of memory");
    for (uint32_t c = 0; c < f->ncrowd; c++)
        if (ix->crowds[c] && (f->crowd[c] = dense_of(ix->crowds[c], f->words)) == NULL)
            return cli_failf("out of memory");
    for (uint32_t t = 1; t < f->ntag; t++)
        if (ix->tags[t].direct && (f->tag[t] = dense_of(ix->tags[t].eff, f->words)) == NULL)
            return cli_failf("out of memory");
    return CLI_OK;
}

static void floor_free(floor_sets_t *f)
{
    for (uint32_t c = 0; f->crowd && c < f->ncrowd; c++)
        free(f->crowd[c]);
    for (uint32_t t = 0; f->tag && t < f->ntag; t++)
        free(f->tag[t]);
    free(f->crowd);
    free(f->tag);
}

/* The floor's lookup: the same answer as cp_member_lookup_ord. */
static void floor_lookup(const floor_sets_t *f, uint32_t ord, uint32_t *crowds, size_t *nc,
                         uint32_t *tags, size_t *nt)
{
    size_t w = ord / 64;
    uint64_t bit = 1ull << (ord % 64);
    size_t n = 0;
    for (uint32_t c = 0; c < f->ncrowd; c++)
        if (f->crowd[c] && (f->crowd[c][w] & bit) && n < BM_MAX_LIST)
            crowds[n++] = c;
    *nc = n;
    n = 0;
    for (uint32_t t = 1; t < f->ntag; t++)
        if (f->tag[t] && (f->tag[t][w] & bit) && n < BM_MAX_LIST)
            tags[n++] = t;
    *nt = n;
}

/* The process's resident set in bytes (0 if /proc cannot say). */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return (uint64_t)kb * 1024;
}

static const cli_opt_t member_opts[] = {
    {"membership", 0, OPT_FLAG, NULL, "this benchmark"},
    {"users", 'n', OPT_VALUE, "N", "demo users (default 1M)"},
    {"crowds", 0, OPT_VALUE, "C", "dynamic crowds to define (default 1000)"},
    {"lookups", 0, OPT_VALUE, "L", "timed lookups (default 100000)"},
    {"seed", 0, OPT_VALUE, "S", "random seed (default 42)"},
    {"dir", 0, OPT_VALUE, "DIR",
     "where the temporary data directory goes (default $TMPDIR or /tmp)"},
    {"keep", 0, OPT_FLAG, NULL, "keep the temporary data directory"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t member_spec = {
    "bench --membership",
    "",
    "Measure the membership lookup (a user's crowds and tags) at 1M users and 1,000 crowds.",
    "Generates the demo population into a temporary data directory, defines dynamic crowds of\n"
    "varied expressions, then times cp_member_lookup_ord on random users (p50/p99/max) beside a\n"
    "floor: the same probes over plain dense bit arrays. Every answer is checked against the\n"
    "floor's.\n\nExamples:\n  crowdpack bench --membership\n"
    "  crowdpack bench --membership --users 100k --crowds 200 --json",
    member_opts,
    CONN_JSON,
    0,
    0};

int cmd_bench_membership(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&member_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t users = 1000000, ncrowds = 1000, lookups = 100000, seed = 42;
    if ((cli_get(&a, "users") &&
         (cli_parse_u64(cli_get(&a, "users"), &users) || users < 1000 || users > 100000000)) ||
        (cli_get(&a, "crowds") &&
         (cli_parse_u64(cli_get(&a, "crowds"), &ncrowds) || ncrowds < 1 || ncrowds > 100000)) ||
        (cli_get(&a, "lookups") && (cli_parse_u64(cli_get(&a, "lookups"), &lookups) ||
                                    lookups < 100 || lookups > 100000000)) ||
        (cli_get(&a, "seed") && cli_parse_u64(cli_get(&a, "seed"), &seed)))
        return cli_usage_error(&member_spec, "expected --users 1000..100M, --crowds 1..100000, "
                                             "--lookups 100..100M and a numeric --seed");
    char dir[4096];
    const char *tmp = cli_get(&a, "dir") ? cli_get(&a, "dir") : getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/crowdpack-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return cli_failf("cannot create a directory under %s: %s", tmp ? tmp : "/tmp",
                         strerror(errno));
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    char **paths = NULL;
    size_t npaths = 0;
    floor_sets_t fl = {0};
    double *t_look = malloc(lookups * sizeof *t_look), *t_floor = malloc(lookups * sizeof *t_floor);
    uint32_t *lc = malloc(2 * BM_MAX_LIST * sizeof *lc), *fc = malloc(2 * BM_MAX_LIST * sizeof *fc);
    json_t *out = NULL;
    if (!t_look || !t_floor || !lc || !fc) {
        rc = cli_failf("out of memory");
        goto out;
    }
    cp_open_options_t oo = CP_OPEN_OPTIONS_INIT;
    oo.flags = CP_OPEN_CREATE;
    oo.threads = 1;
    cp_status st = cp_db_open(dir, &oo, &db, &err);
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    demo_options_t dopt = {.users = users, .seed = seed, .progress = isatty(STDERR_FILENO)};
    uint64_t t0 = time_mono_ns();
    if ((st = demo_generate(db, &dopt, &err)) != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    double load_s = (double)(time_mono_ns() - t0) / 1e9;
    if ((rc = tag_paths(db, &paths, &npaths)) != CLI_OK)
        goto out;
    uint64_t rng = seed;
    t0 = time_mono_ns();
    for (size_t i = 0; i < ncrowds; i++) {
        char name[32], expr[1200];
        snprintf(name, sizeof name, "c%zu", i);
        crowd_expr(expr, sizeof expr, i, &rng, paths, npaths);
        if ((st = cp_crowd_create(db, name, expr, CP_CROWD_DYNAMIC, NULL, &err)) != CP_OK) {
            rc = cli_fail_expr(st, &err, expr);
            goto out;
        }
    }
    double crowds_s = (double)(time_mono_ns() - t0) / 1e9;
    cp_db_stats_t ds = CP_DB_STATS_INIT;
    if ((st = cp_db_stats(db, &ds, NULL)) != CP_OK) {
        rc = cli_fail(st, NULL);
        goto out;
    }
    /* Before the floor's bit arrays exist: the engine's memory alone. */
    uint64_t rss = rss_bytes(), list_bytes = 0;
    if (db_read_begin(db, NULL) == CP_OK) {
        list_bytes = member_list_ready(db->ix) ? member_list_memory(db->ix) : 0;
        db_read_end(db);
    }
    if ((rc = floor_build(db, ds.ordinals, &fl)) != CLI_OK)
        goto out;
    cp_membership_t m = {.size = sizeof m,
                         .crowds = lc,
                         .crowds_cap = BM_MAX_LIST,
                         .tags = lc + BM_MAX_LIST,
                         .tags_cap = BM_MAX_LIST};
    uint64_t sum_c = 0, sum_t = 0;
    size_t n = 0, misses = 0;
    /* Warm-up, then each lookup timed alone; the floor right after it on
     * the same user, and the two answers compared. */
    for (uint64_t i = 0; i < lookups + 1000 && n < lookups;) {
        uint32_t ord = (uint32_t)(rand_next(&rng) % ds.ordinals);
        uint64_t a0 = time_mono_ns();
        st = cp_member_lookup_ord(db, ord, &m, &err);
        uint64_t a1 = time_mono_ns();
        if (st == CP_ENOTFOUND)
            continue;
        if (st != CP_OK) {
            rc = cli_fail(st, &err);
            goto out;
        }
        size_t nc = 0, nt = 0;
        uint64_t b0 = time_mono_ns();
        floor_lookup(&fl, ord, fc, &nc, fc + BM_MAX_LIST, &nt);
        uint64_t b1 = time_mono_ns();
        if (nc != m.ncrowds || nt != m.ntags || memcmp(fc, lc, nc * sizeof *fc) != 0 ||
            memcmp(fc + BM_MAX_LIST, lc + BM_MAX_LIST, nt * sizeof *fc) != 0)
            misses++;
        if (i++ < 1000)
            continue;
        t_look[n] = (double)(a1 - a0) / 1e3;
        t_floor[n] = (double)(b1 - b0) / 1e3;
        sum_c += m.ncrowds;
        sum_t += m.ntags;
        n++;
    }
    bm_stats_t sl = stats_of(t_look, n), sf = stats_of(t_floor, n);
    double avg_c = n ? (double)sum_c / (double)n : 0, avg_t = n ? (double)sum_t / (double)n : 0;
    if (a.json) {
        out = json_pack("{s:s,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:{s:f,s:f,s:f,s:f},"
                        "s:{s:f,s:f,s:f,s:f},s:I,s:I,s:I}",
                        "version", CP_VERSION_STRING, "users", (json_int_t)ds.users, "crowds",
                        (json_int_t)ncrowds, "tags", (json_int_t)ds.tags, "lookups", (json_int_t)n,
                        "load_s", load_s, "crowds_s", crowds_s, "avg_crowds", avg_c, "avg_tags",
                        avg_t, "lookup_us", "p50", sl.p50, "p99", sl.p99, "max", sl.max, "mean",
                        sl.mean, "floor_us", "p50", sf.p50, "p99", sf.p99, "max", sf.max, "mean",
                        sf.mean, "mismatches", (json_int_t)misses, "rss_bytes", (json_int_t)rss,
                        "list_bytes", (json_int_t)list_bytes);
        char *s = out ? json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        puts(s ? s : "{}");
        free(s);
    } else {
        printf("crowdpack %s bench --membership — cp_member_lookup_ord, one thread\n",
               CP_VERSION_STRING);
        printf("  users %llu, tags %llu, dynamic crowds %llu (load %.1f s, crowds defined in "
               "%.1f s)\n",
               (unsigned long long)ds.users, (unsigned long long)ds.tags,
               (unsigned long long)ncrowds, load_s, crowds_s);
        printf("  a user is in %.1f crowds and %.1f tags on average (%zu lookups)\n", avg_c, avg_t,
               n);
        printf("  %-28s %9s %9s %9s %9s\n", "", "p50", "p99", "max", "mean");
        printf("  %-28s %7.1fus %7.1fus %7.1fus %7.1fus\n", "lookup (cp_member_lookup_ord)", sl.p50,
               sl.p99, sl.max, sl.mean);
        printf("  %-28s %7.1fus %7.1fus %7.1fus %7.1fus\n", "floor (probe every set)", sf.p50,
               sf.p99, sf.max, sf.mean);
        char b1[32], b2[32];
        printf("  memory: resident %s with the crowds defined; the per-user lists %s\n",
               cli_bytes((double)rss, b1), cli_bytes((double)list_bytes, b2));
        printf("  lookup/floor p50 %.2fx; answers differing from the floor: %zu\n",
               sf.p50 > 0 ? sl.p50 / sf.p50 : 0.0, misses);
    }
    if (misses)
        rc = cli_failf("bench: %zu lookups differ from the floor's answer (a bug)", misses);
out:
    json_decref(out);
    floor_free(&fl);
    for (size_t i = 0; paths && i < npaths; i++)
        free(paths[i]);
    free(paths);
    cp_db_close(db, NULL);
    if (!cli_has(&a, "keep"))
        cli_rmtree(dir);
    else
        fprintf(stderr, "kept %s\n", dir);
    free(t_look);
    free(t_floor);
    free(lc);
    free(fc);
    return rc;
}
