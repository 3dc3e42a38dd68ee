/*
 * cmd_analytics.c — `crowdpack insight`, `overlap`, `cluster`, `tiers` and
 * `analytics` (settings, bench). Each builds the report's JSON request,
 * runs it embedded (cp_insight_json ...) or over HTTP (/v1/insight ...)
 * and renders the same JSON answer as tables, or prints it with --json.
 *
 * A set of users on the command line is a crowd name when it looks like
 * one ([A-Za-z0-9_-]+ and letters of any script), otherwise an
 * expression: `young` is the crowd,
 * 'tag:interest/finance AND age < 30' an expression.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analytics/analytics.h"
#include "cli/cli.h"
#include "index/member_list.h"

#define CONN_ALL (CONN_DATA | CONN_SERVER | CONN_JSON)

int cmd_insight(int argc, char **argv);
int cmd_overlap(int argc, char **argv);
int cmd_cluster(int argc, char **argv);
int cmd_tiers(int argc, char **argv);
int cmd_analytics(int argc, char **argv);

/* A crowd name or an expression, as a request's set. */
static json_t *set_spec(const char *s)
{
    size_t n = strlen(s);
    int name = n > 0 && n <= 128;
    for (size_t i = 0; i < n && name; i++) {
        char c = s[i];
        name = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || (unsigned char)c >= 0x80; /* 广州理财 */
    }
    return name ? json_string(s) : json_pack("{s:s}", "expression", s);
}

/* Splits "a,b,c" into a JSON array of strings. */
static json_t *csv_strings(const char *s)
{
    json_t *a = json_array();
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n)
            json_array_append_new(a, json_stringn(p, n));
        p += n + (e != NULL);
    }
    return a;
}

static const char *pct(const json_t *v, char *buf)
{
    if (!json_is_number(v))
        return "-";
    snprintf(buf, 32, "%.2f%%", json_number_value(v) * 100);
    return buf;
}

static const char *num(const json_t *v, char *buf)
{
    if (!json_is_number(v))
        return "-";
    snprintf(buf, 32, "%.1f", json_number_value(v));
    return buf;
}

/* "tag interest/x" or "age 18-24". */
static const char *cell_name(const json_t *c, char *buf, size_t cap)
{
    const char *t = json_string_value(json_object_get(c, "tag"));
    if (t)
        snprintf(buf, cap, "%s", t);
    else
        snprintf(buf, cap, "%s = %s", json_string_value(json_object_get(c, "attribute")),
                 json_string_value(json_object_get(c, "value")));
    return buf;
}

static void cells_table(const char *title, json_t *cells, size_t limit)
{
    if (json_array_size(cells) == 0)
        return;
    printf("\n%s\n", title);
    const char *hdr[] = {"cell", "members", "crowd share", "baseline share", "TGI"};
    cli_table_t *t = cli_table_new(5, hdr);
    for (int i = 1; i < 5; i++)
        cli_table_right(t, i);
    size_t i;
    json_t *c;
    json_array_foreach(cells, i, c)
    {
        if (limit && i >= limit)
            break;
        char n[300], m[32], s1[32], s2[32], g[32];
        if (json_is_true(json_object_get(c, "suppressed"))) {
            const char *row[] = {cell_name(c, n, sizeof n), "suppressed", "-", "-", "-"};
            cli_table_row(t, row);
            continue;
        }
        const char *row[] = {
            cell_name(c, n, sizeof n), cli_json_count(json_object_get(c, "members"), m),
            pct(json_object_get(c, "crowd_share"), s1),
            pct(json_object_get(c, "baseline_share"), s2), num(json_object_get(c, "tgi"), g)};
        cli_table_row(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    if (limit && json_array_size(cells) > limit)
        printf("(%zu of %zu shown; --limit 0 shows all)\n", limit, json_array_size(cells));
}

static const char *set_label(const json_t *o, char *buf, size_t cap)
{
    const char *c = json_string_value(json_object_get(o, "crowd"));
    char b[32];
    snprintf(buf, cap, "%s %s (%s users)", c ? "crowd" : "expression",
             c ? c : json_string_value(json_object_get(o, "expression")),
             cli_json_count(json_object_get(o, "size"), b));
    return buf;
}

/* --------------------------------------------------------------- insight */

static const cli_opt_t insight_opts[] = {
    {"baseline", 'b', OPT_VALUE, "SET",
     "compare with this crowd or expression (default: all users)"},
    {"tags", 0, OPT_VALUE, "ROOTS", "only tags under these roots (comma-separated)"},
    {"no-tags", 0, OPT_FLAG, NULL, "leave tags out"},
    {"attrs", 0, OPT_VALUE, "NAMES", "only these attributes (comma-separated)"},
    {"no-attrs", 0, OPT_FLAG, NULL, "leave attributes out"},
    {"buckets", 0, OPT_VALUE, "SPEC", "int buckets: 'age=18,25,30;seen=year'"},
    {"sort", 0, OPT_VALUE, "tgi|count", "order of the cells (default tgi)"},
    {"top", 0, OPT_VALUE, "N", "over- and under-indexed cells to list (default 10)"},
    {"limit", 0, OPT_VALUE, "N", "cells in the full table (default 30; 0 = all)"},
    {"min-count", 0, OPT_VALUE, "N", "raise the minimum count (k-anonymity) for this report"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t insight_spec = {
    "insight",
    "CROWD|'EXPR'",
    "Share and TGI of a crowd against all users (or a baseline), per tag and attribute value.",
    "TGI = crowd share / baseline share x 100. Cells counting fewer users than the\n"
    "minimum count (default 50; `crowdpack analytics settings`) show \"suppressed\".\n\n"
    "Examples:\n"
    "  crowdpack insight --data ./dmp young_finance\n"
    "  crowdpack insight --data ./dmp 'tag:interest/finance' --baseline 'age >= 18' \\\n"
    "      --tags interest --buckets 'age=18,25,35,50' --sort count",
    insight_opts,
    CONN_ALL,
    1,
    1};

static int parse_count_opt(const cli_args_t *a, const char *name, uint64_t *v)
{
    const char *s = cli_get(a, name);
    if (s && cli_parse_u64(s, v) != 0)
        return cli_usage_error(a->spec, "--%s: expected a number, got '%s'", name, s);
    return CLI_OK;
}

/* 'age=18,25;seen=year' -> {"age":[18,25],"seen":"year"} */
static json_t *parse_buckets(const char *s)
{
    json_t *o = json_object();
    char *dup = strdup(s), *save = NULL;
    for (char *part = strtok_r(dup, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(part, '=');
        if (!eq) {
            json_decref(o);
            o = NULL;
            break;
        }
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(v, "year") == 0 || strcmp(v, "auto") == 0) {
            json_object_set_new(o, part, json_string(v));
            continue;
        }
        json_t *arr = json_array();
        for (char *x = (char *)v; *x;) {
            char *end;
            long long n = strtoll(x, &end, 10);
            if (end == x || (*end && *end != ',')) {
                /* timestamps as text */
                char *c = strchr(x, ',');
                json_array_append_new(arr, c ? json_stringn(x, (size_t)(c - x)) : json_string(x));
                x = c ? c + 1 : x + strlen(x);
                continue;
            }
            json_array_append_new(arr, json_integer(n));
            x = *end ? end + 1 : end;
        }
        json_object_set_new(o, part, arr);
    }
    free(dup);
    return o;
}

int cmd_insight(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&insight_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t top = 10, limit = 30, mc = 0;
    if ((rc = parse_count_opt(&a, "top", &top)) || (rc = parse_count_opt(&a, "limit", &limit)) ||
        (rc = parse_count_opt(&a, "min-count", &mc)))
        return rc;
    json_t *req = json_pack("{s:o,s:I}", "crowd", set_spec(a.pos[0]), "top", (json_int_t)top);
    if (cli_get(&a, "baseline"))
        json_object_set_new(req, "baseline", set_spec(cli_get(&a, "baseline")));
    if (cli_has(&a, "no-tags"))
        json_object_set_new(req, "tags", json_false());
    else if (cli_get(&a, "tags"))
        json_object_set_new(req, "tags", csv_strings(cli_get(&a, "tags")));
    if (cli_has(&a, "no-attrs"))
        json_object_set_new(req, "attributes", json_false());
    else if (cli_get(&a, "attrs"))
        json_object_set_new(req, "attributes", csv_strings(cli_get(&a, "attrs")));
    if (cli_get(&a, "buckets")) {
        json_t *b = parse_buckets(cli_get(&a, "buckets"));
        if (b == NULL) {
            json_decref(req);
            return cli_usage_error(&insight_spec, "--buckets: expected 'ATTR=B1,B2,...;ATTR=year'");
        }
        json_object_set_new(req, "buckets", b);
    }
    if (cli_get(&a, "sort"))
        json_object_set_new(req, "sort", json_string(cli_get(&a, "sort")));
    if (cli_get(&a, "min-count"))
        json_object_set_new(req, "min_count", json_integer((json_int_t)mc));
    json_t *j = NULL;
    rc =
        cli_request_view(&a, OPEN_READ, cp_insight_json, "POST", "/v1/insight", req, "insight", &j);
    if (rc != CLI_OK || j == NULL)
        return rc;
    char l1[512], l2[512];
    printf("crowd     %s\nbaseline  %s\n", set_label(json_object_get(j, "crowd"), l1, sizeof l1),
           set_label(json_object_get(j, "baseline"), l2, sizeof l2));
    printf("cells     %lld (%lld suppressed below %lld users)\n",
           (long long)json_integer_value(json_object_get(j, "cells_total")),
           (long long)json_integer_value(json_object_get(j, "suppressed")),
           (long long)json_integer_value(json_object_get(j, "min_count")));
    cells_table("Over-indexed (TGI > 100)", json_object_get(j, "top_over"), 0);
    cells_table("Under-indexed (TGI < 100)", json_object_get(j, "top_under"), 0);
    char title[64];
    snprintf(title, sizeof title, "All cells by %s", json_string_value(json_object_get(j, "sort")));
    cells_table(title, json_object_get(j, "cells"), (size_t)limit);
    json_decref(j);
    return CLI_OK;
}

/* --------------------------------------------------------------- overlap */

static const cli_opt_t overlap_opts[] = {
    {"min-count", 0, OPT_VALUE, "N", "raise the minimum count (k-anonymity) for this report"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t overlap_spec = {
    "overlap",
    "SET SET [SET...]",
    "Overlap of 2 to 10 crowds: pairwise intersections, Jaccard, containment, Venn regions.",
    "Each SET is a crowd name or a quoted expression.\n\nExample:\n"
    "  crowdpack overlap --data ./dmp young_finance loyal 'tag:interest/sports'",
    overlap_opts,
    CONN_ALL,
    2,
    10};

int cmd_overlap(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&overlap_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t mc = 0;
    if ((rc = parse_count_opt(&a, "min-count", &mc)))
        return rc;
    json_t *sets = json_array();
    for (int i = 0; i < a.npos; i++)
        json_array_append_new(sets, set_spec(a.pos[i]));
    json_t *req = json_pack("{s:o}", "crowds", sets);
    if (cli_get(&a, "min-count"))
        json_object_set_new(req, "min_count", json_integer((json_int_t)mc));
    json_t *j = NULL;
    rc =
        cli_request_view(&a, OPEN_READ, cp_overlap_json, "POST", "/v1/overlap", req, "overlap", &j);
    if (rc != CLI_OK || j == NULL)
        return rc;
    json_t *cr = json_object_get(j, "crowds");
    size_t i;
    json_t *c;
    char b1[32], b2[32], b3[32], b4[32], l[512];
    {
        const char *hdr[] = {"#", "crowd", "size", "unique", "unique share"};
        cli_table_t *t = cli_table_new(5, hdr);
        cli_table_right(t, 2);
        cli_table_right(t, 3);
        cli_table_right(t, 4);
        json_array_foreach(cr, i, c)
        {
            snprintf(b4, sizeof b4, "%zu", i + 1);
            const char *nm = json_string_value(json_object_get(c, "crowd"));
            snprintf(l, sizeof l, "%s",
                     nm ? nm : json_string_value(json_object_get(c, "expression")));
            json_t *u = json_object_get(c, "unique");
            const char *row[] = {b4, l, cli_json_count(json_object_get(c, "size"), b1),
                                 json_is_null(u) ? "suppressed" : cli_json_count(u, b2),
                                 pct(json_object_get(c, "unique_share"), b3)};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_t *uv = json_object_get(j, "union");
    printf("union: %s\n\n", json_is_null(uv) ? "suppressed" : cli_json_count(uv, b1));
    {
        const char *hdr[] = {"pair", "intersection", "jaccard", "share of A in B",
                             "share of B in A"};
        cli_table_t *t = cli_table_new(5, hdr);
        for (int k = 1; k < 5; k++)
            cli_table_right(t, k);
        json_array_foreach(json_object_get(j, "pairs"), i, c)
        {
            char pair[64], jac[32];
            snprintf(pair, sizeof pair, "%lld & %lld",
                     (long long)json_integer_value(json_object_get(c, "a")) + 1,
                     (long long)json_integer_value(json_object_get(c, "b")) + 1);
            if (json_is_true(json_object_get(c, "suppressed"))) {
                const char *row[] = {pair, "suppressed", "-", "-", "-"};
                cli_table_row(t, row);
                continue;
            }
            snprintf(jac, sizeof jac, "%.4f", json_number_value(json_object_get(c, "jaccard")));
            const char *row[] = {pair, cli_json_count(json_object_get(c, "intersection"), b1), jac,
                                 pct(json_object_get(c, "a_in_b"), b2),
                                 pct(json_object_get(c, "b_in_a"), b3)};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_t *venn = json_object_get(j, "venn");
    if (venn) {
        printf("\n");
        const char *hdr[] = {"Venn region (only in)", "users"};
        cli_table_t *t = cli_table_new(2, hdr);
        cli_table_right(t, 1);
        json_array_foreach(venn, i, c)
        {
            char reg[64] = "";
            size_t k;
            json_t *x;
            json_array_foreach(json_object_get(c, "in"), k, x)
            {
                char s[32];
                snprintf(s, sizeof s, "%s%lld", k ? " & " : "",
                         (long long)json_integer_value(x) + 1);
                strncat(reg, s, sizeof reg - strlen(reg) - 1);
            }
            json_t *n = json_object_get(c, "count");
            const char *row[] = {reg, n ? cli_json_count(n, b1) : "suppressed"};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(j);
    return CLI_OK;
}

/* --------------------------------------------------------------- cluster */

static const cli_opt_t cluster_opts[] = {
    {"attrs", 'a', OPT_VALUE, "NAMES", "int/timestamp attributes to cluster on (comma-separated)"},
    {"k", 'k', OPT_VALUE, "K", "number of clusters (1-64)"},
    {"crowd", 0, OPT_VALUE, "SET", "cluster this crowd's members (default: all users)"},
    {"root", 0, OPT_VALUE, "PATH", "store clusters as tags PATH/c1..cK"},
    {"elbow", 0, OPT_VALUE, "KMIN-KMAX", "inertia for each k in the range (stores nothing)"},
    {"seed", 0, OPT_VALUE, "S", "seed of the k-means++ seeding (default 42)"},
    {"sample", 0, OPT_VALUE, "N", "fit on at most N users (default 100,000)"},
    {"max-iterations", 0, OPT_VALUE, "N", "Lloyd iterations at most (default 100)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t cluster_spec = {
    "cluster",
    "",
    "k-means over numeric attributes (z-scored, k-means++ with a fixed seed).",
    "Users missing any chosen attribute are excluded (counted in the report).\n\n"
    "Examples:\n"
    "  crowdpack cluster --data ./dmp --attrs recency,frequency,monetary --k 4 \\\n"
    "      --root cluster/value\n"
    "  crowdpack cluster --data ./dmp --attrs age,points --elbow 2-8",
    cluster_opts,
    CONN_ALL,
    0,
    0};

int cmd_cluster(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&cluster_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    if (!cli_get(&a, "attrs"))
        return cli_usage_error(&cluster_spec, "--attrs NAMES is required");
    uint64_t k = 0, seed = 0, sample = 0, iters = 0;
    if ((rc = parse_count_opt(&a, "k", &k)) || (rc = parse_count_opt(&a, "seed", &seed)) ||
        (rc = parse_count_opt(&a, "sample", &sample)) ||
        (rc = parse_count_opt(&a, "max-iterations", &iters)))
        return rc;
    json_t *req = json_pack("{s:o}", "attributes", csv_strings(cli_get(&a, "attrs")));
    if (cli_get(&a, "k"))
        json_object_set_new(req, "k", json_integer((json_int_t)k));
    if (cli_get(&a, "seed"))
        json_object_set_new(req, "seed", json_integer((json_int_t)seed));
    if (cli_get(&a, "sample"))
        json_object_set_new(req, "sample", json_integer((json_int_t)sample));
    if (cli_get(&a, "max-iterations"))
        json_object_set_new(req, "max_iterations", json_integer((json_int_t)iters));
    if (cli_get(&a, "crowd"))
        json_object_set_new(req, "crowd", set_spec(cli_get(&a, "crowd")));
    if (cli_get(&a, "root"))
        json_object_set_new(req, "root", json_string(cli_get(&a, "root")));
    if (cli_get(&a, "elbow")) {
        long lo = 0, hi = 0;
        if (sscanf(cli_get(&a, "elbow"), "%ld-%ld", &lo, &hi) != 2) {
            json_decref(req);
            return cli_usage_error(&cluster_spec, "--elbow: expected KMIN-KMAX, e.g. 2-8");
        }
        json_object_set_new(req, "elbow", json_pack("[I,I]", (json_int_t)lo, (json_int_t)hi));
    }
    json_t *j = NULL;
    rc = cli_request_view(&a, cli_get(&a, "root") ? OPEN_WRITE : OPEN_READ, cp_cluster_json, "POST",
                          "/v1/clusters", req, "clusters", &j);
    if (rc != CLI_OK || j == NULL)
        return rc;
    char b1[32], b2[32], b3[32];
    printf("population %s users with every attribute (%s excluded), fitted on %s\n",
           cli_json_count(json_object_get(j, "population"), b1),
           cli_json_count(json_object_get(j, "excluded"), b2),
           cli_json_count(json_object_get(j, "sample"), b3));
    size_t i;
    json_t *c;
    json_t *el = json_object_get(j, "elbow");
    if (el) {
        const char *hdr[] = {"k", "inertia", "per user", "iterations"};
        cli_table_t *t = cli_table_new(4, hdr);
        for (int x = 0; x < 4; x++)
            cli_table_right(t, x);
        json_array_foreach(el, i, c)
        {
            char kk[32], in[32], pu[32], it[32];
            snprintf(kk, sizeof kk, "%lld", (long long)json_integer_value(json_object_get(c, "k")));
            snprintf(in, sizeof in, "%.1f", json_number_value(json_object_get(c, "inertia")));
            snprintf(pu, sizeof pu, "%.4f",
                     json_number_value(json_object_get(c, "inertia_per_user")));
            snprintf(it, sizeof it, "%lld",
                     (long long)json_integer_value(json_object_get(c, "iterations")));
            const char *row[] = {kk, in, pu, it};
            cli_table_row(t, row);
        }
        printf("\nElbow (inertia on the sample, z-scored units)\n");
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_t *cl = json_object_get(j, "clusters");
    if (cl) {
        printf("\n%s clusters, %lld iterations%s%s\n", cli_json_count(json_object_get(j, "k"), b1),
               (long long)json_integer_value(json_object_get(j, "iterations")),
               json_is_true(json_object_get(j, "stored")) ? ", stored under " : "",
               json_is_true(json_object_get(j, "stored"))
                   ? json_string_value(json_object_get(j, "root"))
                   : "");
        const char *hdr[] = {"cluster", "size", "share", "centroid", "top tags (TGI)"};
        cli_table_t *t = cli_table_new(5, hdr);
        cli_table_right(t, 1);
        cli_table_right(t, 2);
        json_array_foreach(cl, i, c)
        {
            const char *name = json_string_value(json_object_get(c, "tag"));
            if (!name)
                name = json_string_value(json_object_get(c, "name"));
            if (json_is_true(json_object_get(c, "suppressed"))) {
                const char *row[] = {name, "suppressed", "-", "-", "-"};
                cli_table_row(t, row);
                continue;
            }
            char cen[512] = "", tops[512] = "";
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(c, "centroid"), k, v)
            {
                char x[128], vb[64];
                snprintf(x, sizeof x, "%s%s=%s", cen[0] ? " " : "", k,
                         json_is_string(v)
                             ? json_string_value(v)
                             : (snprintf(vb, sizeof vb, "%.2f", json_number_value(v)), vb));
                strncat(cen, x, sizeof cen - strlen(cen) - 1);
            }
            size_t ti;
            json_t *tg;
            json_array_foreach(json_object_get(c, "top_tags"), ti, tg)
            {
                char x[160];
                snprintf(x, sizeof x, "%s%s (%.0f)", ti ? ", " : "",
                         json_string_value(json_object_get(tg, "tag")),
                         json_number_value(json_object_get(tg, "tgi")));
                strncat(tops, x, sizeof tops - strlen(tops) - 1);
            }
            const char *row[] = {name, cli_json_count(json_object_get(c, "size"), b1),
                                 pct(json_object_get(c, "share"), b2), cen, tops};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(j);
    return CLI_OK;
}

/* ----------------------------------------------------------------- tiers */

static void print_tiers(const char *text)
{
    json_t *j = cli_json_parse(text, "tiers");
    if (!j)
        return;
    char b1[32], b2[32];
    printf("points attribute %s; %s members with points, %s below the first tier\n",
           json_string_value(json_object_get(j, "attribute")),
           json_is_null(json_object_get(j, "members_with_points"))
               ? "suppressed"
               : cli_json_count(json_object_get(j, "members_with_points"), b1),
           json_is_null(json_object_get(j, "below_first_tier"))
               ? "suppressed"
               : cli_json_count(json_object_get(j, "below_first_tier"), b2));
    const char *hdr[] = {"tier", "points", "members", "expression"};
    cli_table_t *t = cli_table_new(4, hdr);
    cli_table_right(t, 2);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "tiers"), i, c)
    {
        char range[64];
        json_t *mx = json_object_get(c, "max");
        if (json_is_null(mx))
            snprintf(range, sizeof range, "%lld+",
                     (long long)json_integer_value(json_object_get(c, "min")));
        else
            snprintf(range, sizeof range, "%lld-%lld",
                     (long long)json_integer_value(json_object_get(c, "min")),
                     (long long)json_integer_value(mx));
        json_t *m = json_object_get(c, "members");
        const char *row[] = {json_string_value(json_object_get(c, "name")), range,
                             json_is_null(m) ? "suppressed" : cli_json_count(m, b1),
                             json_string_value(json_object_get(c, "expression"))};
        cli_table_row(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(j);
}

static const cli_spec_t tshow_spec = {"tiers show",
                                      "",
                                      "Member tiers with counts.",
                                      "Example:\n  crowdpack tiers show --data ./dmp",
                                      NULL,
                                      CONN_ALL,
                                      0,
                                      0};

static cp_status tiers_get_lib(cp_db_t *db, const char *b, size_t n, char **out, cp_error_t *err)
{
    CP_UNUSED(b);
    CP_UNUSED(n);
    return cp_tiers_json(db, out, err);
}

static int tiers_show(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&tshow_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    char *out = NULL;
    cli_conn_t c = {0};
    cp_error_t err = {0};
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    cp_status st;
    if (c.http) {
        st = client_call(c.http, "GET", "/v1/tiers", NULL, NULL, 0, &out, &err);
    } else {
        char *lib = NULL;
        st = tiers_get_lib(c.db, NULL, 0, &lib, &err);
        if (st == CP_OK && (out = strdup(lib)) == NULL)
            st = CP_ENOMEM;
        cp_free(lib);
    }
    cli_conn_close(&c);
    if (st != CP_OK)
        return cli_fail(st, &err);
    if (a.json)
        cli_print_json(out);
    else
        print_tiers(out);
    free(out);
    return CLI_OK;
}

static const cli_opt_t tset_opts[] = {
    {"attribute", 0, OPT_VALUE, "NAME", "the points attribute (int)"},
    {"file", 0, OPT_VALUE, "FILE", "the whole setting as JSON instead"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t tset_spec = {
    "tiers set",
    "[NAME=MIN ...]",
    "Set the member tiers (a database setting).",
    "Example:\n  crowdpack tiers set --data ./dmp --attribute points \\\n"
    "      silver=2000 gold=6000 platinum=20000",
    tset_opts,
    CONN_ALL,
    0,
    32};

static cp_status tiers_set_lib(cp_db_t *db, const char *b, size_t n, char **out, cp_error_t *err)
{
    return cp_tiers_set_json(db, b, n, out, err);
}

static int tiers_set(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&tset_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    json_t *req = NULL;
    if (cli_get(&a, "file")) {
        char *text = NULL;
        size_t len = 0;
        if ((rc = cli_read_file(cli_get(&a, "file"), 1u << 20, &text, &len)) != CLI_OK)
            return rc;
        json_error_t je;
        req = json_loadb(text, len, 0, &je);
        free(text);
        if (!req)
            return cli_failf("%s:%d:%d: %s", cli_get(&a, "file"), je.line, je.column, je.text);
    } else {
        if (!cli_get(&a, "attribute") || a.npos == 0)
            return cli_usage_error(&tset_spec,
                                   "give --attribute NAME and NAME=MIN tiers, or --file");
        json_t *tiers = json_array();
        for (int i = 0; i < a.npos; i++) {
            const char *eq = strchr(a.pos[i], '=');
            char *end = NULL;
            long long m = eq ? strtoll(eq + 1, &end, 10) : 0;
            if (!eq || end == eq + 1 || *end) {
                json_decref(tiers);
                return cli_usage_error(&tset_spec, "'%s': expected NAME=MIN, e.g. gold=6000",
                                       a.pos[i]);
            }
            json_array_append_new(tiers, json_pack("{s:s%,s:I}", "name", a.pos[i],
                                                   (size_t)(eq - a.pos[i]), "min", (json_int_t)m));
        }
        req = json_pack("{s:s,s:o}", "attribute", cli_get(&a, "attribute"), "tiers", tiers);
    }
    char *out = NULL;
    if ((rc = cli_request(&a, OPEN_WRITE, tiers_set_lib, "PUT", "/v1/tiers", req, &out)) != CLI_OK)
        return rc;
    if (a.json)
        cli_print_json(out);
    else
        print_tiers(out);
    free(out);
    return CLI_OK;
}

static const cli_opt_t tnudge_opts[] = {
    {"within", 'w', OPT_VALUE, "N", "points from the next tier"},
    {"tier", 0, OPT_VALUE, "NAMES", "only toward these tiers (comma-separated)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t tnudge_spec = {
    "tiers nudge",
    "",
    "Members within N points of their next tier, as an expression.",
    "Save the answer as a crowd to target an upgrade campaign:\n"
    "  crowdpack tiers nudge --data ./dmp --within 2000\n"
    "  crowdpack crowd create --data ./dmp near_upgrade \"$(crowdpack tiers nudge --data ./dmp \\\n"
    "      --within 2000 --json | jq -r .expression)\"",
    tnudge_opts,
    CONN_ALL,
    0,
    0};

static int tiers_nudge(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&tnudge_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t w = 0;
    if ((rc = parse_count_opt(&a, "within", &w)))
        return rc;
    if (!cli_get(&a, "within"))
        return cli_usage_error(&tnudge_spec, "--within N is required");
    json_t *req = json_pack("{s:I}", "within", (json_int_t)w);
    if (cli_get(&a, "tier"))
        json_object_set_new(req, "tiers", csv_strings(cli_get(&a, "tier")));
    json_t *j = NULL;
    rc = cli_request_view(&a, OPEN_READ, cp_tiers_nudge_json, "POST", "/v1/tiers/nudge", req,
                          "nudge", &j);
    if (rc != CLI_OK || j == NULL)
        return rc;
    char b[32];
    json_t *m = json_object_get(j, "members");
    printf("%s members within %lld points of their next tier\n",
           json_is_null(m) ? "suppressed:" : cli_json_count(m, b),
           (long long)json_integer_value(json_object_get(j, "within")));
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "parts"), i, c)
    {
        json_t *pm = json_object_get(c, "members");
        printf("  toward %-12s %12s  %s\n", json_string_value(json_object_get(c, "tier")),
               json_is_null(pm) ? "suppressed" : cli_json_count(pm, b),
               json_string_value(json_object_get(c, "expression")));
    }
    printf("expression: %s\n", json_string_value(json_object_get(j, "expression")));
    json_decref(j);
    return CLI_OK;
}

static const cli_sub_t tier_subs[] = {
    {"show", tiers_show, &tshow_spec},
    {"set", tiers_set, &tset_spec},
    {"nudge", tiers_nudge, &tnudge_spec},
    {NULL, NULL, NULL},
};

int cmd_tiers(int argc, char **argv)
{
    return cli_dispatch("tiers",
                        "Member tiers (会员等级) on a points attribute, and upgrade nudges.",
                        tier_subs, argc, argv);
}

/* ------------------------------------------------------------- analytics */

static const cli_opt_t settings_opts[] = {
    {"min-count", 0, OPT_VALUE, "N", "set the minimum count of every report (0 = none)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t settings_spec = {
    "analytics settings",
    "",
    "Show or set the analytics settings (k-anonymity minimum count).",
    "Example:\n  crowdpack analytics settings --data ./dmp --min-count 100",
    settings_opts,
    CONN_ALL,
    0,
    0};

static cp_status settings_lib(cp_db_t *db, const char *b, size_t n, char **out, cp_error_t *err)
{
    if (n > 2) {
        cp_status st = cp_analytics_settings_set_json(db, b, n, err);
        if (st != CP_OK)
            return st;
    }
    return cp_analytics_settings_json(db, out, err);
}

static int analytics_settings(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&settings_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t mc = 0;
    if ((rc = parse_count_opt(&a, "min-count", &mc)))
        return rc;
    int set = cli_get(&a, "min-count") != NULL;
    json_t *req = set ? json_pack("{s:I}", "min_count", (json_int_t)mc) : NULL;
    char *out = NULL;
    if ((rc = cli_request(&a, set ? OPEN_WRITE : OPEN_READ, settings_lib, set ? "PUT" : "GET",
                          "/v1/analytics/settings", req, &out)) != CLI_OK)
        return rc;
    if (a.json) {
        cli_print_json(out);
    } else {
        json_t *j = cli_json_parse(out, "settings");
        char b[32];
        if (j)
            printf("min_count %s\n", cli_json_count(json_object_get(j, "min_count"), b));
        json_decref(j);
    }
    free(out);
    return CLI_OK;
}

/* ------------------------------------------------------------- bench */

static const cli_opt_t bench_opts[] = {
    {"users", 'n', OPT_VALUE, "N", "population (default 10M)"},
    {"tags", 0, OPT_VALUE, "N", "tags in the insight (default 1,000)"},
    {"crowd", 0, OPT_VALUE, "N", "crowd size for insight (default 1M)"},
    {"crowds", 0, OPT_VALUE, "N", "crowds in the overlap (default 10)"},
    {"reps", 0, OPT_VALUE, "N", "repetitions; the median is reported (default 7)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t bench_spec = {
    "analytics bench",
    "",
    "Time insight (crowd x tags) and overlap (10 crowds) through the public API.",
    "Builds a synthetic population in a temporary data directory: tag bitmaps are\n"
    "set directly in the index (loading 10M users through the engine would take\n"
    "minutes), with densities log-uniform between 0.05% and 30%; the insight crowd\n"
    "and the overlap crowds are created with cp_crowd_create from tags of the wanted\n"
    "size. Every timed call is the public cp_insight_json / cp_overlap_json, JSON\n"
    "parsing and rendering included.\n\n"
    "Example:\n  crowdpack analytics bench --users 10M --tags 1000 --crowd 1M",
    bench_opts,
    CONN_JSON,
    0,
    0};

/* A random bitmap over [0, n) with about density * n members. */
static roaring_bitmap_t *random_bitmap(uint32_t n, double density, uint64_t *st, uint64_t *dense)
{
    roaring_bitmap_t *bm = roaring_bitmap_create();
    if (!bm)
        return NULL;
    for (uint32_t key = 0; (uint64_t)key * 65536 < n; key++) {
        uint32_t lim = n - key * 65536 < 65536 ? n - key * 65536 : 65536;
        dense_zero(dense);
        /* Positions drawn with replacement: -ln(1 - d) draws per slot give
         * an expected density of d. */
        uint64_t m = (uint64_t)llround(-log1p(-density) * lim);
        for (uint64_t i = 0; i < m; i++) {
            uint32_t p = (uint32_t)(rand_next(st) % lim);
            dense[p >> 6] |= UINT64_C(1) << (p & 63);
        }
        bm_append_dense(bm, (uint16_t)key, dense);
    }
    roaring_bitmap_run_optimize(bm);
    return bm;
}

static double median_ms(cp_db_t *db, cli_lib_fn fn, const char *req, int reps, int *ok)
{
    double t[64];
    *ok = 1;
    for (int r = 0; r < reps; r++) {
        char *out = NULL;
        cp_error_t err = {0};
        uint64_t t0 = time_mono_ns();
        cp_status st = fn(db, req, strlen(req), &out, &err);
        t[r] = (double)(time_mono_ns() - t0) / 1e6;
        cp_free(out);
        if (st != CP_OK) {
            fprintf(stderr, "crowdpack: %s\n", err.message);
            *ok = 0;
            return 0;
        }
    }
    qsort(t, (size_t)reps, sizeof t[0], cli_cmp_double);
    return t[reps / 2];
}

/*
 * The counting core on one thread (no JSON), and the memory floor: one
 * pass reading every byte of the bench tags' containers (summing array
 * values and bitset words) on one thread — what any exact answer must
 * at least read.
 */
static cp_status core_and_floor(cp_db_t *db, int reps, double *core_ms, double *floor_ms,
                                uint64_t *bytes)
{
    cp_status rc = CP_OK;
    db_lock_rd(db);
    const crowd_rec_t *cr = crowd_set_find(&db->crowds, "insight");
    const roaring_bitmap_t *crowd = cr ? index_crowd(db->ix, cr->id) : NULL;
    uint32_t root = tax_find(&db->tax, "bench", 5);
    const tax_tag_t *g = tax_get(&db->tax, root);
    ana_cell_t *cells = g ? calloc(g->nchildren + 1, sizeof *cells) : NULL;
    double t1[64], t2[64];
    volatile uint64_t sink = 0;
    if (crowd == NULL || cells == NULL) {
        rc = CP_ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < g->nchildren; i++)
        cells[i].bm = db->ix->tags[g->children[i]].eff;
    for (int r = 0; r < reps && rc == CP_OK; r++) {
        uint64_t t0 = time_mono_ns();
        rc = ana_count_cells(crowd, NULL, db->ix->universe, cells, g->nchildren, 1);
        t1[r] = (double)(time_mono_ns() - t0) / 1e6;
        t0 = time_mono_ns();
        uint64_t sum = 0, nb = 0;
        for (uint32_t i = 0; i < g->nchildren; i++)
            for (int32_t k = 0; k < bm_chunk_count(cells[i].bm); k++) {
                bm_chunk_t ch;
                bm_chunk_at(cells[i].bm, k, &ch);
                if (ch.type == BITSET_CONTAINER_TYPE_CODE) {
                    const uint64_t *w = ((const bitset_container_t *)ch.c)->array;
                    for (uint32_t x = 0; x < CP_CHUNK_WORDS; x++)
                        sum += w[x];
                    nb += CP_CHUNK_WORDS * 8;
                } else if (ch.type == ARRAY_CONTAINER_TYPE_CODE) {
                    const array_container_t *a = ch.c;
                    for (int32_t x = 0; x < a->cardinality; x++)
                        sum += a->array[x];
                    nb += (uint64_t)a->cardinality * 2;
                }
            }
        t2[r] = (double)(time_mono_ns() - t0) / 1e6;
        sink += sum;
        *bytes = nb;
    }
    (void)sink;
    qsort(t1, (size_t)reps, sizeof t1[0], cli_cmp_double);
    qsort(t2, (size_t)reps, sizeof t2[0], cli_cmp_double);
    *core_ms = t1[reps / 2];
    *floor_ms = t2[reps / 2];
out:
    pthread_rwlock_unlock(&db->lock);
    free(cells);
    return rc;
}

static int analytics_bench(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&bench_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t users = 10000000, ntags = 1000, crowd = 1000000, ncrowds = 10, reps = 7;
    if ((rc = parse_count_opt(&a, "users", &users)) || (rc = parse_count_opt(&a, "tags", &ntags)) ||
        (rc = parse_count_opt(&a, "crowd", &crowd)) ||
        (rc = parse_count_opt(&a, "crowds", &ncrowds)) || (rc = parse_count_opt(&a, "reps", &reps)))
        return rc;
    if (users < 1000 || users > 200000000 || ntags < 1 || ntags > 100000 || crowd > users ||
        ncrowds < 2 || ncrowds > 10 || reps < 1 || reps > 64)
        return cli_usage_error(&bench_spec, "out of range: --users 1000..200M, --tags 1..100000, "
                                            "--crowd <= users, --crowds 2..10, --reps 1..64");
    char dir[] = "/tmp/crowdpack-bench-analytics-XXXXXX";
    if (!mkdtemp(dir))
        return cli_failf("cannot create a temporary directory");
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    cp_open_options_t o = {.size = sizeof(cp_open_options_t), .flags = CP_OPEN_CREATE};
    uint64_t *dense = ana_dense_alloc(1);
    cp_status st = dense ? cp_db_open(dir, &o, &db, &err) : CP_ENOMEM;
    int ok = st == CP_OK;
    if (!ok)
        fprintf(stderr, "crowdpack: %s\n", err.message);
    /* Tags t0000..: the insight cells; "crowd" holds exactly `crowd` users;
     * "ov0".."ov9" the overlap crowds (10-50% of users). */
    char path[64];
    for (uint64_t i = 0; ok && i < ntags; i++) {
        snprintf(path, sizeof path, "bench/t%05llu", (unsigned long long)i);
        ok = cp_tag_create(db, path, NULL, NULL, &err) == CP_OK;
    }
    ok = ok && cp_tag_create(db, "crowd/insight", NULL, NULL, &err) == CP_OK;
    for (uint64_t i = 0; ok && i < ncrowds; i++) {
        snprintf(path, sizeof path, "crowd/ov%llu", (unsigned long long)i);
        ok = cp_tag_create(db, path, NULL, NULL, &err) == CP_OK;
    }
    uint64_t t0 = time_mono_ns(), seed = 1;
    uint64_t assignments = 0;
    if (ok) {
        /* Bitmaps go straight into the index under the write lock, past
         * the index's change recorder (index/change.h), on purpose: this is
         * the bench's own throwaway directory, opened above and removed
         * below, so no change feed listens (chg.record is off: nothing to
         * tell a subscriber) and the write's dirtiness stays unset, so the
         * next commit neither persists these members nor re-evaluates
         * crowds over them. A user's data directory must never be written
         * this way: the check below refuses if a feed ever listened. */
        db_lock_wr(db);
        if (db->ix->chg.record) {
            fprintf(stderr, "crowdpack: bench: a change feed listens to the bench directory\n");
            ok = 0;
        }
        roaring_bitmap_t *u = ok ? roaring_bitmap_create() : NULL;
        ok = u != NULL;
        if (ok) {
            roaring_bitmap_add_range(u, 0, users);
            index_bm_free(db->ix->universe);
            db->ix->universe = u;
            db->next_ordinal = (uint32_t)users;
        }
        for (uint32_t id = 1; ok && id < db->tax.next_id; id++) {
            const tax_tag_t *g = tax_get(&db->tax, id);
            if (!g || g->nchildren)
                continue;
            double dens;
            if (strncmp(g->path, "bench/", 6) == 0)
                dens = 0.0005 * exp(rand_double(&seed) * log(0.30 / 0.0005));
            else if (strcmp(g->path, "crowd/insight") == 0)
                dens = (double)crowd / (double)users;
            else
                dens = 0.1 + 0.4 * rand_double(&seed);
            roaring_bitmap_t *bm = random_bitmap((uint32_t)users, dens, &seed, dense);
            roaring_bitmap_t *eff = bm ? roaring_bitmap_copy(bm) : NULL;
            if (!eff) {
                ok = 0;
                break;
            }
            assignments += roaring_bitmap_get_cardinality(bm);
            idx_tag_t *t = &db->ix->tags[id];
            index_bm_free(t->direct);
            index_bm_free(t->eff);
            t->direct = bm;
            t->eff = eff;
        }
        /* parents' effective sets */
        ok = ok && index_recompute_effective(db->ix, &db->tax) == CP_OK;
        /* the per-user membership lists, past which the sets were written */
        ok = ok && member_list_build(db->ix) == CP_OK;
        pthread_rwlock_unlock(&db->lock);
    }
    ok = ok &&
         cp_crowd_create(db, "insight", "tag:crowd/insight", CP_CROWD_STATIC, NULL, &err) == CP_OK;
    char req[1024] = "{\"crowds\":[";
    for (uint64_t i = 0; ok && i < ncrowds; i++) {
        char name[32], ex[64];
        snprintf(name, sizeof name, "ov%llu", (unsigned long long)i);
        snprintf(ex, sizeof ex, "tag:crowd/%s", name);
        ok = cp_crowd_create(db, name, ex, CP_CROWD_STATIC, NULL, &err) == CP_OK;
        snprintf(ex, sizeof ex, "%s\"%s\"", i ? "," : "", name);
        strcat(req, ex);
    }
    strcat(req, "]}");
    double build = (double)(time_mono_ns() - t0) / 1e9;
    uint64_t csize = 0;
    ok = ok && cp_count(db, "crowd:insight", &csize, &err) == CP_OK;
    double ins = 0, ins_tags = 0, ovl = 0, core1 = 0, floor1 = 0;
    uint64_t bytes = 0;
    if (ok) {
        ins_tags = median_ms(db, cp_insight_json,
                             "{\"crowd\":\"insight\",\"tags\":\"bench\",\"attributes\":false}",
                             (int)reps, &ok);
        if (ok)
            ins = median_ms(db, cp_insight_json, "{\"crowd\":\"insight\"}", (int)reps, &ok);
        if (ok)
            ovl = median_ms(db, cp_overlap_json, req, (int)reps, &ok);
        if (ok)
            ok = core_and_floor(db, (int)reps, &core1, &floor1, &bytes) == CP_OK;
    } else if (err.message[0]) {
        fprintf(stderr, "crowdpack: %s\n", err.message);
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cp_db_close(db, NULL);
    free(dense);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "crowdpack: could not remove %s\n", dir);
    if (!ok)
        return CLI_FAIL;
    if (a.json) {
        json_t *j = json_pack("{s:I,s:I,s:I,s:I,s:I,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:I}", "users",
                              (json_int_t)users, "tags", (json_int_t)ntags, "crowd_size",
                              (json_int_t)csize, "overlap_crowds", (json_int_t)ncrowds,
                              "tag_assignments", (json_int_t)assignments, "reps", (int)reps, "cpus",
                              (int)cpus, "build_s", build, "insight_tags_ms", ins_tags,
                              "insight_all_ms", ins, "overlap_ms", ovl, "core_1thread_ms", core1,
                              "floor_1thread_ms", floor1, "floor_bytes", (json_int_t)bytes);
        cli_emit_json(j);
        return CLI_OK;
    }
    char b1[32], b2[32], b3[32];
    printf("population %s users, %s tags (%s tag assignments, built in %.1f s), %ld CPUs\n",
           cli_group(users, b1), cli_group(ntags, b2), cli_group(assignments, b3), build, cpus);
    printf("insight   crowd of %s x %llu tags            median %8.2f ms  (target < 100 ms)\n",
           cli_group(csize, b1), (unsigned long long)ntags, ins_tags);
    printf("insight   same, whole tree (%llu tags)        median %8.2f ms\n",
           (unsigned long long)(ntags + ncrowds + 3), ins);
    printf("overlap   %llu crowds                        median %8.2f ms  (target < 50 ms)\n",
           (unsigned long long)ncrowds, ovl);
    printf("core      counting only, 1 thread            median %8.2f ms\n", core1);
    printf("floor     reading the %s of tag containers once, 1 thread: %.2f ms "
           "(core / floor %.2fx)\n",
           cli_bytes((double)bytes, b1), floor1, floor1 > 0 ? core1 / floor1 : 0);
    return CLI_OK;
}

static const cli_sub_t analytics_subs[] = {
    {"settings", analytics_settings, &settings_spec},
    {"bench", analytics_bench, &bench_spec},
    {NULL, NULL, NULL},
};

int cmd_analytics(int argc, char **argv)
{
    return cli_dispatch("analytics",
                        "Analytics settings (k-anonymity) and the analytics benchmark.",
                        analytics_subs, argc, argv);
}
