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
    "measures",
    "",
    "Show or set the event measures (per-user sums, distinct counts, first/last times).",
    "A measure aggregates, per user, the events the intake applies. Defaults:\n"
    "net_amount (sum of amount over purchase and refund, cents), invoices (distinct\n"
    "purchase invoices), purchases (count), first_purchase and last_purchase.\n"
    "New or changed measures start empty: re-import the events to fill them.\n\n"
    "Examples:\n"
    "  crowdpack measures --data ./dmp\n"
    "  crowdpack measures --data ./dmp --set measures.json",
    measures_opts,
    CONN_ALL,
    0,
    0};

static cp_status measures_get_lib(cp_db_t *db, const char *b, size_t n, char **out, cp_error_t *err)
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
    json_t *j = NULL;
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
        rc = cli_request_view(&a, OPEN_WRITE, cp_measures_set_json, "PUT", "/v1/measures", req,
                              "measures", &j);
    } else {
        rc = cli_request_view(&a, OPEN_READ, measures_get_lib, "GET", "/v1/measures", NULL,
                              "measures", &j);
    }
    if (rc != CLI_OK || j == NULL)
        return rc;
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
    "rfm",
    "",
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
    rfm_opts,
    CONN_ALL,
    0,
    0};

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
    /* The tag and, beside it, its display name (重要价值客户 ...). */
    const char *hdr[] = {"segment",       "name",   "customers", "share",
                         "mean R (days)", "mean F", "mean M"};
    cli_table_t *t = cli_table_new(7, hdr);
    for (int i = 2; i < 7; i++)
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
        const char *nm = json_string_value(json_object_get(s, "name"));
        const char *row[] = {json_string_value(json_object_get(s, "tag")),
                             nm ? nm : "",
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
        const char *row[] = {d == 0   ? "R (days)"
                             : d == 1 ? "F (invoices)"
                                      : "M (amount)",
                             fmt_num(json_object_get(dim, "mean_score"), b1, "%.2f"),
                             cells[0],
                             cells[1],
                             cells[2],
                             cells[3],
                             cells[4]};
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
            snprintf(m, sizeof m, "%.2f",
                     (double)json_integer_value(json_object_get(u, "m")) / 100);
            snprintf(rs, sizeof rs, "%d", (int)json_integer_value(json_object_get(u, "r_score")));
            snprintf(fs, sizeof fs, "%d", (int)json_integer_value(json_object_get(u, "f_score")));
            snprintf(ms, sizeof ms, "%d", (int)json_integer_value(json_object_get(u, "m_score")));
            const char *row[] = {
                json_string_value(json_object_get(u, "user")),   r, f, m, rs, fs, ms,
                json_string_value(json_object_get(u, "segment"))};
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
            rc = cli_request(&a, OPEN_WRITE, cp_rfm_schedule_set_json, "PUT", "/v1/rfm/schedule",
                             req, &out);
        } else {
            rc = cli_request(&a, OPEN_READ, rfm_sched_get_lib, "GET", "/v1/rfm/schedule", NULL,
                             &out);
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
    json_t *j = NULL;
    rc = cli_request_view(&a, preview ? OPEN_READ : OPEN_WRITE, cp_rfm_json, "POST", "/v1/rfm", req,
                          "rfm", &j);
    if (rc != CLI_OK || j == NULL)
        return rc;
    rfm_print(j);
    json_decref(j);
    return cli_finish_stdout(CLI_OK);
}

/* ---------------------------------------------------------------- aipl */

static const cli_opt_t aipl_opts[] = {
    {"as-of", 0, OPT_VALUE, "DATE", "last day of the window (default: the data's last day)"},
    {"window", 0, OPT_VALUE, "DAYS", "window in days (overrides the rules' window_days)"},
    {"preview", 0, OPT_FLAG, NULL, "report only: store no tags"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t aipl_spec = {
    "aipl",
    "RULES.json|'JSON'",
    "AIPL stages (awareness, interest, purchase, loyalty) as exclusive tags aipl/NAME/STAGE.",
    "Rules: {\"name\":\"default\",\"stages\":{\"awareness\":[\"exposure\",\"page\"],\n"
    "\"interest\":[\"click\",\"favorite\",\"add_to_cart\"],\"purchase\":[\"purchase\"],\n"
    "\"loyalty\":{\"repeat_purchases\":2,\"or_attribute\":\"is_member\"}},\"window_days\":90,\n"
    "\"filters\":{\"brand\":\"x\"}}. A user's stage is the highest reached in the window.\n\n"
    "Examples:\n"
    "  crowdpack aipl --data ./dmp rules.json\n"
    "  crowdpack count --data ./dmp 'tag:aipl/default/interest'",
    aipl_opts,
    CONN_ALL,
    1,
    1};

static json_t *json_arg(const char *s)
{
    if (s[0] == '{')
        return json_loads(s, 0, NULL);
    char *text = NULL;
    size_t len = 0;
    if (cli_read_file(s, 1u << 20, &text, &len) != CLI_OK)
        return NULL;
    json_t *j = json_loadb(text, len, 0, NULL);
    free(text);
    return j;
}

/* The "warnings" of a report as "note: ..." lines, and where the window
 * came from when the data chose it. */
static void print_notes(const json_t *j)
{
    size_t i;
    json_t *w;
    if (json_is_true(json_object_get(j, "as_of_from_data")))
        printf("note: no --as-of given: the window ends on the last day of the data\n");
    json_array_foreach(json_object_get(j, "warnings"), i, w)
        printf("note: %s\n", json_string_value(w));
}

int cmd_aipl(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&aipl_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    json_t *req = json_arg(a.pos[0]);
    if (!json_is_object(req)) {
        json_decref(req);
        return cli_failf("%s: not a JSON object of AIPL rules", a.pos[0]);
    }
    if (cli_get(&a, "as-of"))
        json_object_set_new(req, "as_of", json_string(cli_get(&a, "as-of")));
    if (cli_get(&a, "window")) {
        uint64_t w;
        if (cli_parse_u64(cli_get(&a, "window"), &w) != 0) {
            json_decref(req);
            return cli_usage_error(&aipl_spec, "--window: expected days");
        }
        json_object_set_new(req, "window_days", json_integer((json_int_t)w));
    }
    int preview = cli_has(&a, "preview");
    if (preview)
        json_object_set_new(req, "store", json_false());
    json_t *j = NULL;
    rc = cli_request_view(&a, preview ? OPEN_READ : OPEN_WRITE, cp_aipl_json, "POST", "/v1/aipl",
                          req, "aipl", &j);
    if (rc != CLI_OK || j == NULL)
        return rc;
    json_t *w = json_object_get(j, "window");
    char b1[32], b2[32];
    printf("AIPL \"%s\" over %s .. %s: %s users in a stage\n\n",
           json_string_value(json_object_get(j, "name")),
           json_string_value(json_object_get(w, "from")),
           json_string_value(json_object_get(w, "to")),
           cli_json_count(json_object_get(j, "staged_users"), b1));
    const char *hdr[] = {"stage", "name", "users (current)", "share", "reached"};
    cli_table_t *t = cli_table_new(5, hdr);
    for (int i = 2; i < 5; i++)
        cli_table_right(t, i);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(j, "stages"), i, s)
    {
        char pct[32], r[32];
        snprintf(pct, sizeof pct, "%.1f%%", json_number_value(json_object_get(s, "share")) * 100);
        const char *nm = json_string_value(json_object_get(s, "name"));
        const char *row[] = {json_string_value(json_object_get(s, "tag")), nm ? nm : "",
                             cli_json_count(json_object_get(s, "users"), b2), pct,
                             cli_json_count(json_object_get(s, "reached"), r)};
        cli_table_row(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_t *unk = json_object_get(j, "unknown_events");
    if (json_array_size(unk)) {
        printf("\nevents never recorded (left out):");
        json_t *e;
        json_array_foreach(unk, i, e) printf(" %s", json_string_value(e));
        printf("\n");
    }
    printf("\n%s\n",
           json_is_true(json_object_get(j, "stored")) ? "stored" : "previewed (nothing stored)");
    print_notes(j);
    json_decref(j);
    return cli_finish_stdout(CLI_OK);
}

/* -------------------------------------------------------------- funnel */

static const cli_opt_t funnel_opts[] = {
    {"from", 0, OPT_VALUE, "DATE", "first day of the window"},
    {"to", 0, OPT_VALUE, "DATE", "last day of the window"},
    {"days", 0, OPT_VALUE, "N", "window of N days ending at --as-of (default 30)"},
    {"as-of", 0, OPT_VALUE, "DATE", "last day of a --days window (default: the data's last day)"},
    {"crowd", 0, OPT_VALUE, "SET", "only users of this crowd or expression"},
    {"by", 0, OPT_VALUE, "ATTR[=B1,B2..]", "break down by an attribute (int: bucket bounds)"},
    {"by-tag", 0, OPT_VALUE, "ROOT", "break down by the child tags of ROOT"},
    {"name", 0, OPT_VALUE, "NAME", "funnel name (tags funnel/NAME/stepK with --store)"},
    {"store", 0, OPT_FLAG, NULL, "keep the users of each step as tags"},
    {"min-count", 0, OPT_VALUE, "N", "raise the minimum count of breakdown cells"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t funnel_spec = {
    "funnel",
    "STEP STEP...",
    "Users reaching each step in order within a window, with step-to-step conversion.",
    "A STEP is an event name, optionally with filters on indexed properties:\n"
    "'click:campaign=spring'. Order is at day granularity: a step done on the same\n"
    "UTC day as the previous one counts as in order.\n\n"
    "Examples:\n"
    "  crowdpack funnel --data ./dmp exposure click activation registration payment \\\n"
    "      --from 2024-06-01 --to 2024-06-30 --by gender\n"
    "  crowdpack funnel --data ./dmp page purchase --days 90 --by age=18,25,35 \\\n"
    "      --name checkout --store",
    funnel_opts,
    CONN_ALL,
    1,
    16};

/* "event:a=1,b=x" -> {"event":..., "filters":{...}} or a bare string. */
static json_t *step_json(const char *s)
{
    const char *c = strchr(s, ':');
    if (c == NULL)
        return json_string(s);
    json_t *f = json_object();
    const char *p = c + 1;
    while (*p) {
        const char *e = strchr(p, ','), *eq = strchr(p, '=');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (eq == NULL || eq >= p + n) {
            json_decref(f);
            return NULL;
        }
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
        json_object_set_new(f, key, json_stringn(eq + 1, (size_t)(p + n - eq - 1)));
        p += n + (e != NULL);
    }
    return json_pack("{s:s%,s:o}", "event", s, (size_t)(c - s), "filters", f);
}

int cmd_funnel(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&funnel_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    json_t *req = json_object(), *steps = json_array();
    json_object_set_new(req, "steps", steps);
    for (int i = 0; i < a.npos; i++) {
        json_t *s = step_json(a.pos[i]);
        if (s == NULL) {
            json_decref(req);
            return cli_usage_error(&funnel_spec, "step '%s': expected EVENT or EVENT:prop=value",
                                   a.pos[i]);
        }
        json_array_append_new(steps, s);
    }
    static const char *const dates[][2] = {{"from", "from"}, {"to", "to"}, {"as-of", "as_of"}};
    for (int i = 0; i < 3; i++)
        if (cli_get(&a, dates[i][0]))
            json_object_set_new(req, dates[i][1], json_string(cli_get(&a, dates[i][0])));
    const char *num[][2] = {{"days", "window_days"}, {"min-count", "min_count"}};
    for (int i = 0; i < 2; i++) {
        uint64_t v;
        const char *s = cli_get(&a, num[i][0]);
        if (s == NULL)
            continue;
        if (cli_parse_u64(s, &v) != 0) {
            json_decref(req);
            return cli_usage_error(&funnel_spec, "--%s: expected a number", num[i][0]);
        }
        json_object_set_new(req, num[i][1], json_integer((json_int_t)v));
    }
    if (cli_get(&a, "crowd")) {
        const char *c = cli_get(&a, "crowd");
        int name = strspn(c, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
                   strlen(c);
        json_object_set_new(req, "crowd",
                            name ? json_string(c) : json_pack("{s:s}", "expression", c));
    }
    if (cli_get(&a, "by")) {
        const char *b = cli_get(&a, "by"), *eq = strchr(b, '=');
        json_t *bd = json_pack("{s:s%}", "attribute", b, eq ? (size_t)(eq - b) : strlen(b));
        if (eq) {
            json_t *bk = json_array();
            for (const char *p = eq + 1; *p;) {
                char *end;
                long long v = strtoll(p, &end, 10);
                if (end == p || (*end && *end != ',')) {
                    json_decref(bk);
                    json_decref(bd);
                    json_decref(req);
                    return cli_usage_error(&funnel_spec, "--by %s: bucket bounds are integers", b);
                }
                json_array_append_new(bk, json_integer(v));
                p = *end ? end + 1 : end;
            }
            json_object_set_new(bd, "buckets", bk);
        }
        json_object_set_new(req, "breakdown", bd);
    } else if (cli_get(&a, "by-tag")) {
        json_object_set_new(req, "breakdown", json_pack("{s:s}", "tag", cli_get(&a, "by-tag")));
    }
    if (cli_get(&a, "name"))
        json_object_set_new(req, "name", json_string(cli_get(&a, "name")));
    int store = cli_has(&a, "store");
    if (store)
        json_object_set_new(req, "store", json_true());
    json_t *j = NULL;
    rc = cli_request_view(&a, store ? OPEN_WRITE : OPEN_READ, cp_funnel_json, "POST", "/v1/funnels",
                          req, "funnel", &j);
    if (rc != CLI_OK || j == NULL)
        return rc;
    json_t *w = json_object_get(j, "window");
    char b1[32], b2[32], b3[32];
    printf("Funnel over %s .. %s (order by UTC day), population %s\n\n",
           json_string_value(json_object_get(w, "from")),
           json_string_value(json_object_get(w, "to")),
           cli_json_count(json_object_get(j, "population"), b1));
    const char *hdr[] = {"step", "event", "users", "conversion", "from first"};
    cli_table_t *t = cli_table_new(5, hdr);
    for (int i = 2; i < 5; i++)
        cli_table_right(t, i);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(j, "steps"), i, s)
    {
        char st[24], ev[300];
        snprintf(st, sizeof st, "%zu", i + 1);
        json_t *f = json_object_get(s, "filters");
        char *fs = f ? json_dumps(f, JSON_COMPACT) : NULL;
        snprintf(ev, sizeof ev, "%s%s%s", json_string_value(json_object_get(s, "event")),
                 fs ? " " : "", fs ? fs : "");
        free(fs);
        const char *row[] = {st, ev, cli_json_count(json_object_get(s, "users"), b1),
                             fmt_num(json_object_get(s, "conversion"), b2, "%.3f"),
                             fmt_num(json_object_get(s, "conversion_from_first"), b3, "%.3f")};
        cli_table_row(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_t *bd = json_object_get(j, "breakdown");
    if (bd) {
        size_t ns = json_array_size(json_object_get(j, "steps"));
        const char **h = calloc(ns + 2, sizeof *h);
        char(*names)[32] = calloc(ns, sizeof *names);
        h[0] = "group";
        h[1] = "size";
        for (size_t k = 0; k < ns; k++) {
            snprintf(names[k], 32, "step %zu", k + 1);
            h[k + 2] = names[k];
        }
        t = cli_table_new((int)ns + 2, h);
        for (size_t k = 1; k < ns + 2; k++)
            cli_table_right(t, (int)k);
        json_t *g;
        json_array_foreach(json_object_get(bd, "groups"), i, g)
        {
            char cells[18][48];
            const char *row[18];
            row[0] = json_string_value(json_object_get(g, "group"));
            row[1] = json_object_get(g, "size")
                         ? cli_json_count(json_object_get(g, "size"), cells[0])
                         : "suppressed";
            for (size_t k = 0; k < ns && k < 16; k++) {
                json_t *c = json_array_get(json_object_get(g, "steps"), k);
                if (json_is_true(json_object_get(c, "suppressed")))
                    snprintf(cells[k + 2], 48, "suppressed");
                else
                    cli_json_count(json_object_get(c, "users"), cells[k + 2]);
                row[k + 2] = cells[k + 2];
            }
            cli_table_row(t, row);
        }
        printf("\n");
        cli_table_print(t, stdout);
        cli_table_free(t);
        free(h);
        free(names);
    }
    print_notes(j);
    json_decref(j);
    return cli_finish_stdout(CLI_OK);
}
