/*
 * main.c — peers-bench: runs the workload on every system and writes one
 * JSON result file (see README of run.sh / docs/benchmarks-peers.md).
 *
 *   peers-bench --data DIR --out FILE [--sqlite FILE] [--redis HOST:PORT]
 *               [--redis-pid PID] [--pg CONNINFO] [--pg-pid PID]
 *               [--cp-load-secs S] [--budget S] [--max-reps N]
 *               [--timeout S] [--threads N] [--extract-threads N]
 *               [--no-sqlite]
 *
 * crowdpack's answer is the reference: every other system must return the
 * same count (or TGI/export hash) for every query it runs, or the run
 * fails (exit status 2, results still written with "match": false).
 * Timing: one warm-up run, then runs until --budget seconds or --max-reps;
 * a query whose warm-up alone exceeds half the budget is reported from
 * that single run (reps = 1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers.h"

#define MAX_SYS 5

typedef struct qres {
    int ran;
    const char *skipped;
    char error[512];
    char variant[64];
    double p50, p99; /* seconds */
    int reps;
    answer_t ans;
    int match;
} qres_t;

typedef struct opts {
    const char *data, *out;
    double cp_load_secs, budget;
    int max_reps, extract_threads, no_sqlite;
    sys_options_t so;
} opts_t;

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

/* Times one variant of one query on one system. */
static int measure(peer_sys_t *s, const pop_t *p, const query_t *q, int v, const opts_t *o,
                   qres_t *r, double *samples)
{
    answer_t a;
    double t0 = peers_now();
    if (s->run(s, p, q, v, &a, r->error, sizeof r->error))
        return -1;
    double warm = peers_now() - t0;
    r->ans = a;
    int n = 0;
    if (warm * 2 > o->budget) {
        samples[n++] = warm;
    } else {
        double start = peers_now();
        while (n < o->max_reps && (n < 3 || peers_now() - start < o->budget)) {
            double t = peers_now();
            if (s->run(s, p, q, v, &a, r->error, sizeof r->error))
                return -1;
            samples[n++] = peers_now() - t;
            if (a.count != r->ans.count || a.hash != r->ans.hash) {
                snprintf(r->error, sizeof r->error, "answer changed between runs");
                return -1;
            }
        }
    }
    qsort(samples, (size_t)n, sizeof *samples, cmp_dbl);
    r->reps = n;
    r->p50 = samples[(n - 1) / 2];
    int i99 = (int)((double)n * 0.99 + 0.999999) - 1;
    r->p99 = samples[i99 < 0 ? 0 : i99 >= n ? n - 1 : i99];
    return 0;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->budget = 10;
    o->max_reps = 200;
    o->extract_threads = 2;
    o->so.cp_threads = 1;
    o->so.timeout_secs = 300;
    o->so.sqlite_path = "/tmp/peers-bench.sqlite";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && v && (i++, 1))
        if (OPT("--data"))
            o->data = v;
        else if (OPT("--out"))
            o->out = v;
        else if (OPT("--sqlite"))
            o->so.sqlite_path = v;
        else if (OPT("--redis"))
            o->so.redis_addr = v;
        else if (OPT("--redis-pid"))
            o->so.redis_pid = atoi(v);
        else if (OPT("--pg"))
            o->so.pg_conninfo = v;
        else if (OPT("--pg-pid"))
            o->so.pg_pid = atoi(v);
        else if (OPT("--cp-load-secs"))
            o->cp_load_secs = atof(v);
        else if (OPT("--budget"))
            o->budget = atof(v);
        else if (OPT("--max-reps"))
            o->max_reps = atoi(v);
        else if (OPT("--timeout"))
            o->so.timeout_secs = atof(v);
        else if (OPT("--threads"))
            o->so.cp_threads = atoi(v);
        else if (OPT("--extract-threads"))
            o->extract_threads = atoi(v);
        else if (!strcmp(a, "--no-sqlite"))
            o->no_sqlite = 1;
        else {
            fprintf(stderr, "peers-bench: unknown or incomplete option %s\n", a);
            return -1;
        }
    }
    if (!o->data || !o->out) {
        fprintf(stderr, "usage: peers-bench --data DIR --out FILE [options] (see main.c)\n");
        return -1;
    }
    if (o->max_reps < 1 || o->max_reps > 100000 || o->budget <= 0) {
        fprintf(stderr, "peers-bench: --max-reps must be 1..100000 and --budget > 0\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts_t o;
    cp_db_t *db = NULL;
    cp_error_t e;
    pop_t pop;
    static workload_t w;
    peer_sys_t sys[MAX_SYS];
    char syserr[MAX_SYS][600];
    static qres_t res[MAX_QUERIES][MAX_SYS];
    int nsys = 0, mismatches = 0, checks = 0, rc = 1;
    char err[1024];
    double *samples = NULL;
    memset(&pop, 0, sizeof pop);
    memset(syserr, 0, sizeof syserr);
    if (parse_args(argc, argv, &o))
        return 1;
    cp_open_options_t oo = {.size = sizeof(cp_open_options_t), .threads = o.so.cp_threads};
    if (cp_db_open(o.data, &oo, &db, &e) != CP_OK) {
        fprintf(stderr, "peers-bench: %s: %s\n", o.data, e.message);
        return 1;
    }
    fprintf(stderr, "peers-bench: extracting the population from %s ...\n", o.data);
    if (pop_extract(db, o.extract_threads, &pop, err, sizeof err)) {
        fprintf(stderr, "peers-bench: %s\n", err);
        goto out;
    }
    fprintf(stderr, "peers-bench: %llu users, %d tags, %llu direct tag rows (%.1f s)\n",
            (unsigned long long)pop.n, pop.ntags, (unsigned long long)pop.toff[pop.n],
            pop.extract_secs);
    if (workload_build(&pop, &w, err, sizeof err)) {
        fprintf(stderr, "peers-bench: %s\n", err);
        goto out;
    }
    samples = malloc(sizeof *samples * (size_t)(o.max_reps + 1));
    if (!samples)
        goto out;

    /* Systems: crowdpack first (the reference), then the floor, then peers. */
    sys_crowdpack_init(&sys[nsys], &o.so, db);
    sys[nsys++].load_secs = o.cp_load_secs;
    sys_floor_init(&sys[nsys++], &o.so);
    if (!o.no_sqlite) {
        if (sys_sqlite_init(&sys[nsys], &o.so, syserr[nsys], sizeof syserr[nsys]))
            sys[nsys].run = NULL;
        nsys++;
    }
    if (o.so.redis_addr) {
        if (sys_redis_init(&sys[nsys], &o.so, syserr[nsys], sizeof syserr[nsys]))
            sys[nsys].run = NULL;
        nsys++;
    }
    if (o.so.pg_conninfo) {
        if (sys_pg_init(&sys[nsys], &o.so, syserr[nsys], sizeof syserr[nsys]))
            sys[nsys].run = NULL;
        nsys++;
    }
    for (int s = 0; s < nsys; s++) {
        if (!sys[s].run) {
            fprintf(stderr, "peers-bench: %s: %s\n", sys[s].name, syserr[s]);
            continue;
        }
        if (sys[s].load) {
            fprintf(stderr, "peers-bench: loading %s ...\n", sys[s].name);
            double t0 = peers_now();
            if (sys[s].load(&sys[s], &pop, syserr[s], sizeof syserr[s])) {
                fprintf(stderr, "peers-bench: %s: %s\n", sys[s].name, syserr[s]);
                sys[s].run = NULL;
                continue;
            }
            sys[s].load_secs = peers_now() - t0;
            fprintf(stderr, "peers-bench: %s loaded in %.1f s\n", sys[s].name, sys[s].load_secs);
        }
    }
    for (int qi = 0; qi < w.nq; qi++) {
        const query_t *q = &w.q[qi];
        for (int s = 0; s < nsys; s++) {
            qres_t *r = &res[qi][s];
            peer_sys_t *S = &sys[s];
            if (!S->run) {
                r->skipped = "system unavailable";
                continue;
            }
            if (S->skip && (r->skipped = S->skip(S, q)) != NULL)
                continue;
            if (S->prepare && S->prepare(S, &pop, q, r->error, sizeof r->error)) {
                fprintf(stderr, "peers-bench: %s / %s: %s\n", S->name, q->name, r->error);
                continue;
            }
            int nv = S->nvariants ? S->nvariants(S, q) : 1;
            qres_t best = {0};
            int have = 0;
            for (int v = 0; v < nv; v++) {
                qres_t one = {0};
                if (S->variant_name)
                    snprintf(one.variant, sizeof one.variant, "%s", S->variant_name(S, q, v));
                if (measure(S, &pop, q, v, &o, &one, samples)) {
                    fprintf(stderr, "peers-bench: %s / %s%s%s: %s\n", S->name, q->name,
                            one.variant[0] ? " / " : "", one.variant, one.error);
                    if (!have)
                        best = one;
                    continue;
                }
                one.ran = 1;
                /* Every variant must agree with the reference. */
                const qres_t *ref = &res[qi][0];
                one.match = s == 0 || (ref->ran && ref->ans.count == one.ans.count &&
                                       ref->ans.hash == one.ans.hash);
                if (s) {
                    checks++;
                    if (!one.match) {
                        mismatches++;
                        fprintf(stderr,
                                "peers-bench: MISMATCH %s / %s%s%s: count %llu, crowdpack %llu\n",
                                S->name, q->name, one.variant[0] ? " / " : "", one.variant,
                                (unsigned long long)one.ans.count,
                                (unsigned long long)ref->ans.count);
                    }
                }
                if (!have || !best.ran || (one.match && (!best.match || one.p50 < best.p50)))
                    best = one;
                have = 1;
            }
            *r = best;
            if (r->ran)
                fprintf(stderr,
                        "peers-bench: %-10s %-20s p50 %10.3f ms  p99 %10.3f ms  (%d reps%s%s) -> "
                        "%llu\n",
                        S->name, q->name, r->p50 * 1e3, r->p99 * 1e3, r->reps,
                        r->variant[0] ? ", " : "", r->variant, (unsigned long long)r->ans.count);
        }
        if (!res[qi][0].ran) {
            fprintf(stderr, "peers-bench: crowdpack failed on %s: %s\n", q->name, res[qi][0].error);
            mismatches++;
        }
    }
    for (int s = 0; s < nsys; s++)
        if (sys[s].run && sys[s].measure)
            sys[s].measure(&sys[s], &pop);

    FILE *f = fopen(o.out, "w");
    if (!f) {
        fprintf(stderr, "peers-bench: cannot write %s\n", o.out);
        goto out;
    }
    fprintf(f,
            "{\"users\": %llu, \"tags\": %d, \"direct_tag_rows\": %llu, \"extract_secs\": %.3f,\n",
            (unsigned long long)pop.n, pop.ntags, (unsigned long long)pop.toff[pop.n],
            pop.extract_secs);
    fprintf(f, " \"budget_secs\": %.1f, \"max_reps\": %d, \"timeout_secs\": %.0f,\n", o.budget,
            o.max_reps, o.so.timeout_secs);
    fprintf(f, " \"checks\": %d, \"mismatches\": %d,\n \"systems\": [\n", checks, mismatches);
    for (int s = 0; s < nsys; s++) {
        fprintf(f, "  {\"name\": ");
        json_str(f, sys[s].name);
        fprintf(f, ", \"version\": ");
        json_str(f, sys[s].version);
        fprintf(f, ", \"notes\": ");
        json_str(f, sys[s].notes);
        fprintf(f, ", \"error\": ");
        json_str(f, syserr[s]);
        fprintf(f, ", \"load_secs\": %.3f, \"mem_bytes\": %llu, \"disk_bytes\": %llu}%s\n",
                sys[s].load_secs, (unsigned long long)sys[s].mem_bytes,
                (unsigned long long)sys[s].disk_bytes, s + 1 < nsys ? "," : "");
    }
    fprintf(f, " ],\n \"queries\": [\n");
    for (int qi = 0; qi < w.nq; qi++) {
        fprintf(f, "  {\"name\": ");
        json_str(f, w.q[qi].name);
        fprintf(f, ", \"slug\": ");
        json_str(f, w.q[qi].slug);
        fprintf(f, ", \"expr\": ");
        json_str(f, w.q[qi].text);
        fprintf(f, ", \"answer\": %llu, \"results\": {", (unsigned long long)res[qi][0].ans.count);
        for (int s = 0; s < nsys; s++) {
            qres_t *r = &res[qi][s];
            fprintf(f, "%s\n    ", s ? "," : "");
            json_str(f, sys[s].name);
            fprintf(f,
                    ": {\"ran\": %s, \"match\": %s, \"p50_us\": %.3f, \"p99_us\": %.3f, "
                    "\"reps\": %d, \"count\": %llu, \"variant\": ",
                    r->ran ? "true" : "false", r->match ? "true" : "false", r->p50 * 1e6,
                    r->p99 * 1e6, r->reps, (unsigned long long)r->ans.count);
            json_str(f, r->variant);
            fprintf(f, ", \"skipped\": ");
            json_str(f, r->skipped ? r->skipped : "");
            fprintf(f, ", \"error\": ");
            json_str(f, r->error);
            fprintf(f, "}");
        }
        fprintf(f, "}}%s\n", qi + 1 < w.nq ? "," : "");
    }
    fprintf(f, " ]}\n");
    fclose(f);
    fprintf(stderr, "peers-bench: %d answers checked against crowdpack, %d mismatch%s\n", checks,
            mismatches, mismatches == 1 ? "" : "es");
    rc = mismatches ? 2 : 0;
out:
    for (int s = 0; s < nsys; s++)
        if (sys[s].close)
            sys[s].close(&sys[s]);
    free(samples);
    pop_free(&pop);
    cp_db_close(db, NULL);
    return rc;
}
