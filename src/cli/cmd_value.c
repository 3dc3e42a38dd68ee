/*
 * cmd_value.c — `crowdpack measures`, `rfm`, `aipl` and `funnel`: the value
 * models and journeys of docs/analytics.md. Each builds the JSON request,
 * runs it embedded (cp_rfm_json ...) or over HTTP (/v1/rfm ...), and
 * renders the JSON answer as tables, or prints it with --json.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define CONN_ALL (CONN_DATA | CONN_SERVER | CONN_JSON)

int cmd_measures(int argc, char **argv);
int cmd_rfm(int argc, char **argv);
int cmd_aipl(int argc, char **argv);
int cmd_funnel(int argc, char **argv);

typedef cp_status (*lib_fn)(cp_db_t *, const char *, size_t, char **, cp_error_t *);

/* Runs a request (reference stolen; NULL = GET) embedded or on the
 * server; *out is the answer text (free()). */
static int run(const cli_args_t *a, int mode, lib_fn fn, const char *method, const char *path,
               json_t *req, char **out)
{
    cli_conn_t c = {0};
    cp_error_t err = {0};
    cp_status st;
    *out = NULL;
    int rc = cli_conn_open(a, mode, 1, &c);
    if (rc != CLI_OK) {
        json_decref(req);
        return rc;
    }
    if (c.http) {
        st = req ? client_call_json(c.http, method, path, req, out, &err)
                 : client_call(c.http, method, path, NULL, NULL, 0, out, &err);
    } else {
        char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
        json_decref(req);
        char *lib = NULL;
        st = (body || !req) ? fn(c.db, body, body ? strlen(body) : 0, &lib, &err) : CP_ENOMEM;
        free(body);
        if (st == CP_OK && (*out = strdup(lib)) == NULL)
            st = CP_ENOMEM;
        cp_free(lib);
    }
    cli_conn_close(&c);
    return st != CP_OK ? cli_fail(st, &err) : CLI_OK;
}

static const char *fmt_num(const json_t *v, char *buf, const char *f)
{
    if (!json_is_number(v))
        return "-";
    snprintf(buf, 32, f, json_number_value(v));
    return buf;
}

/* ------------------------------------------------------------ measures */

static const cli_opt_t measures_opts[] = {
    {"set", 0, OPT_VALUE, "FILE", "replace the configuration with this JSON file (- = stdin)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t measures_spec = {
    "measures", "",
    "Show or set the event measures (per-user sums, distinct counts, first/last times).",
    "A measure aggregates, per user, the events the intake applies. Defaults:\n"
    "net_amount (sum of amount over purchase and refund, cents), invoices (distinct\n"
    "purchase invoices), purchases (count), first_purchase and last_purchase.\n"
    "New or changed measures start empty: re-import the events to fill them.\n\n"
    "Examples:\n"
    "  crowdpack measures --data ./dmp\n"
    "  crowdpack measures --data ./dmp --set measures.json",
    measures_opts, CONN_ALL, 0, 0};

static cp_status measures_get_lib(cp_db_t *db, const char *b, size_t n, char **out,
                                  cp_error_t *err)
{
    (void)b;
    (void)n;
    return cp_measures_json(db, out, err);
}

int cmd_measures(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&measures_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    char *out = NULL;
    const char *file = cli_get(&a, "set");
    if (file) {
        char *text = NULL;
        size_t len = 0;
        if ((rc = cli_read_file(file, 1u << 20, &text, &len)) != CLI_OK)
            return rc;
        json_t *req = json_loadb(text, len, 0, NULL);
        free(text);
        if (req == NULL)
            return cli_failf("%s: not a JSON document", file);
        rc = run(&a, OPEN_WRITE, cp_measures_set_json, "PUT", "/v1/measures", req, &out);
    } else {
        rc = run(&a, OPEN_READ, measures_get_lib, "GET", "/v1/measures", NULL, &out);
    }
    if (rc != CLI_OK)
        return rc;
    if (a.json) {
        printf("%s\n", out);
        free(out);
        return cli_finish_stdout(CLI_OK);
    }
    json_t *j = cli_json_parse(out, "measures");
    free(out);
    if (j == NULL)
        return CLI_FAIL;
    const char *hdr[] = {"measure", "kind", "events", "property", "users"};
    cli_table_t *t = cli_table_new(5, hdr);
    cli_table_right(t, 4);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(j, "measures"), i, m)
    {
        char ev[512] = "", u[32];
        size_t k;
        json_t *e;
        json_array_foreach(json_object_get(m, "events"), k, e)
        {
            size_t l = strlen(ev);
            snprintf(ev + l, sizeof ev - l, "%s%s", k ? "," : "", json_string_value(e));
        }
        const char *prop = json_string_value(json_object_get(m, "property"));
        const char *row[] = {json_string_value(json_object_get(m, "name")),
                             json_string_value(json_object_get(m, "kind")), ev, prop ? prop : "-",
                             cli_json_count(json_object_get(m, "users"), u)};
        cli_table_row(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(j);
    return cli_finish_stdout(CLI_OK);
}

/* ----------------------------------------------------------------- rfm */

static const cli_opt_t rfm_opts[] = {
    {"as-of", 0, OPT_VALUE, "DATE", "reference date (default: the day after the last event)"},
    {"preview", 0, OPT_FLAG, NULL, "compute and report only: store no tags or attributes"},
    {"root", 0, OPT_VALUE, "PATH", "tag root of the segments (default rfm)"},
    {"detail", 0, OPT_FLAG, NULL, "list every customer's R, F, M, scores and segment"},
    {"schedule", 0, OPT_VALUE, "HOURS", "let the server recompute every HOURS hours (0 = off)"},
    {"show-schedule", 0, OPT_FLAG, NULL, "print the schedule"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t rfm_spec = {
    "rfm", "",
    "RFM value model: eight customer segments as tags rfm/..., values and scores as attributes.",
    "R = days from the last purchase to the reference date, F = distinct purchase\n"
    "invoices, M = net amount (refunds subtract), from the event measures. Scores\n"
    "1-5: 1 + floor(5 x share of customers strictly worse). A dimension is high when\n"
    "its score is above the mean score. Attributes: rfm_r, rfm_f, rfm_m (cents),\n"
    "rfm_r_score, rfm_f_score, rfm_m_score.\n\n"
    "Examples:\n"
    "  crowdpack rfm --data ./dmp\n"
    "  crowdpack rfm --data ./dmp --as-of 2011-12-10 --preview\n"
    "  crowdpack count --data ./dmp 'tag:rfm/important_value AND rfm_m >= 100000'\n"
    "  crowdpack rfm --server http://127.0.0.1:8080 --schedule 24",
    rfm_opts, CONN_ALL, 0, 0};

static cp_status rfm_sched_get_lib(cp_db_t *db, const char *b, size_t n, char **out,
                                   cp_error_t *err)
{
    (void)b;
    (void)n;
    return cp_rfm_schedule_json(db, out, err);
}

static void rfm_print(json_t *j)
{
    char b1[32], b2[32], b3[32], b4[32], b5[32];
    printf("RFM as of %s: %s customers\n\n", json_string_value(json_object_get(j, "as_of")),
           cli_json_count(json_object_get(j, "customers"), b1));
    const char *hdr[] = {"segment", "customers", "share", "mean R (days)", "mean F", "mean M"};
    cli_table_t *t = cli_table_new(6, hdr);
    for (int i = 1; i < 6; i++)
        cli_table_right(t, i);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(j, "segments"), i, s)
    {
        json_t *mean = json_object_get(s, "mean");
        double m = json_number_value(json_object_get(mean, "m_cents")) / 100.0;
        json_t *mv = json_real(m);
        char pct[32];
        snprintf(pct, sizeof pct, "%.1f%%", json_number_value(json_object_get(s, "share")) * 100);
        (void)b2;
        const char *row[] = {json_string_value(json_object_get(s, "tag")),
                             cli_json_count(json_object_get(s, "customers"), b1),
                             pct,
                             fmt_num(json_object_get(mean, "r"), b3, "%.1f"),
                             fmt_num(json_object_get(mean, "f"), b4, "%.1f"),
                             mean ? fmt_num(mv, b5, "%.2f") : "-"};
        cli_table_row(t, row);
        json_decref(mv);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    printf("\nScores (value ranges)\n");
    const char *h2[] = {"dimension", "mean score", "1", "2", "3", "4", "5"};
    t = cli_table_new(7, h2);
    static const char *const dn[3] = {"r", "f", "m"};
    for (int d = 0; d < 3; d++) {
        json_t *dim = json_object_get(json_object_get(j, "dimensions"), dn[d]);
        char cells[5][64];
        for (int k = 0; k < 5; k++)
            snprintf(cells[k], sizeof cells[k], "-");
        size_t x;
        json_t *sc;
        json_array_foreach(json_object_get(dim, "scores"), x, sc)
        {
            int k = (int)json_integer_value(json_object_get(sc, "score")) - 1;
            if (k < 0 || k > 4)
                continue;
            long long lo = json_integer_value(json_object_get(sc, "min")),
                      hi = json_integer_value(json_object_get(sc, "max"));
            if (d == 2)
                snprintf(cells[k], sizeof cells[k], "%.2f..%.2f", lo / 100.0, hi / 100.0);
            else
                snprintf(cells[k], sizeof cells[k], "%lld..%lld", lo, hi);
        }
        const char *row[] = {d == 0 ? "R (days)" : d == 1 ? "F (invoices)" : "M (amount)",
                             fmt_num(json_object_get(dim, "mean_score"), b1, "%.2f"),
                             cells[0], cells[1], cells[2], cells[3], cells[4]};
        cli_table_row(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_t *users = json_object_get(j, "users");
    if (json_array_size(users)) {
        printf("\n");
        const char *h3[] = {"user", "R", "F", "M", "R score", "F score", "M score", "segment"};
        t = cli_table_new(8, h3);
        for (int c = 1; c < 7; c++)
            cli_table_right(t, c);
        json_t *u;
        json_array_foreach(users, i, u)
        {
            char r[32], f[32], m[32], rs[8], fs[8], ms[8];
            snprintf(r, sizeof r, "%lld", (long long)json_integer_value(json_object_get(u, "r")));
            snprintf(f, sizeof f, "%lld", (long long)json_integer_value(json_object_get(u, "f")));
            snprintf(m, sizeof m, "%.2f", (double)json_integer_value(json_object_get(u, "m")) / 100);
            snprintf(rs, sizeof rs, "%d", (int)json_integer_value(json_object_get(u, "r_score")));
            snprintf(fs, sizeof fs, "%d", (int)json_integer_value(json_object_get(u, "f_score")));
            snprintf(ms, sizeof ms, "%d", (int)json_integer_value(json_object_get(u, "m_score")));
            const char *row[] = {json_string_value(json_object_get(u, "user")), r, f, m, rs, fs,
                                 ms, json_string_value(json_object_get(u, "segment"))};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    printf("\n%s in %.1f ms\n",
           json_is_true(json_object_get(j, "stored")) ? "stored" : "previewed (nothing stored)",
           json_number_value(json_object_get(j, "elapsed_ms")));
}

int cmd_rfm(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&rfm_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    char *out = NULL;
    const char *sched = cli_get(&a, "schedule");
    if (sched || cli_has(&a, "show-schedule")) {
        if (sched) {
            uint64_t h;
            if (cli_parse_u64(sched, &h) != 0)
                return cli_usage_error(&rfm_spec, "--schedule: expected hours, got '%s'", sched);
            json_t *req = json_pack("{s:I,s:{}}", "every_hours", (json_int_t)h, "request");
            if (cli_get(&a, "root"))
                json_object_set_new(json_object_get(req, "request"), "root",
                                    json_string(cli_get(&a, "root")));
            rc = run(&a, OPEN_WRITE, cp_rfm_schedule_set_json, "PUT", "/v1/rfm/schedule", req,
                     &out);
        } else {
            rc = run(&a, OPEN_READ, rfm_sched_get_lib, "GET", "/v1/rfm/schedule", NULL, &out);
        }
        if (rc == CLI_OK) {
            cli_print_json(out);
            free(out);
        }
        return cli_finish_stdout(rc);
    }
    json_t *req = json_object();
    int preview = cli_has(&a, "preview");
    if (cli_get(&a, "as-of"))
        json_object_set_new(req, "as_of", json_string(cli_get(&a, "as-of")));
    if (cli_get(&a, "root"))
        json_object_set_new(req, "root", json_string(cli_get(&a, "root")));
    json_object_set_new(req, "store", json_boolean(!preview));
    if (cli_has(&a, "detail"))
        json_object_set_new(req, "detail", json_true());
    rc = run(&a, preview ? OPEN_READ : OPEN_WRITE, cp_rfm_json, "POST", "/v1/rfm", req, &out);
    if (rc != CLI_OK)
        return rc;
    if (a.json) {
        printf("%s\n", out);
        free(out);
        return cli_finish_stdout(CLI_OK);
    }
    json_t *j = cli_json_parse(out, "rfm");
    free(out);
    if (j == NULL)
        return CLI_FAIL;
    rfm_print(j);
    json_decref(j);
    return cli_finish_stdout(CLI_OK);
}
