/*
 * cmd_campaign.c — `crowdpack campaign ...`: the campaigns of
 * docs/activation.md. Each command works on a data directory (the
 * activation state in DIR/activate, opened through cp_activate_open without
 * its housekeeping thread) or over HTTP (/v1/campaigns...); both give the
 * same JSON, which one renderer turns into text.
 *
 * On a data directory every command opens it for writing: the campaigns
 * belong to one process at a time (a running server holds them; use
 * --server beside it).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define CONN_ALL (CONN_DATA | CONN_SERVER | CONN_JSON)
#define MAX_DOC (4u << 20) /* the library's limit of one campaign document */

/* A connection plus, on a data directory, the activation handle. */
typedef struct camp_conn {
    cli_conn_t c;
    cp_activate_t *act;
} camp_conn_t;

static int camp_open(const cli_args_t *a, camp_conn_t *cc)
{
    memset(cc, 0, sizeof *cc);
    int rc = cli_conn_open(a, OPEN_WRITE, 1, &cc->c);
    if (rc != CLI_OK || cc->c.http != NULL)
        return rc;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/activate", cc->c.data_dir);
    cp_activate_options_t o = CP_ACTIVATE_OPTIONS_INIT;
    o.flags = CP_ACTIVATE_MANUAL_TICK;
    cp_error_t err = {0};
    cp_status st = cp_activate_open(cc->c.db, dir, &o, &cc->act, &err);
    if (st != CP_OK) {
        cli_conn_close(&cc->c);
        return cli_fail(st, &err);
    }
    return CLI_OK;
}

static void camp_close(camp_conn_t *cc)
{
    cp_activate_close(cc->act, NULL);
    cli_conn_close(&cc->c);
}

/* "/v1/campaigns/ID" + suffix, the id escaped. NULL on ENOMEM. */
static char *camp_path(const char *id, const char *suffix)
{
    char *e = client_escape(id);
    if (!e)
        return NULL;
    size_t n = strlen(e) + strlen(suffix) + 16;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "/v1/campaigns/%s%s", e, suffix);
    free(e);
    return p;
}

/* The library's text copied to malloc'd memory (the CLI frees with free()). */
static cp_status take(cp_status st, char *lib, char **out)
{
    *out = NULL;
    if (st == CP_OK && lib != NULL && (*out = strdup(lib)) == NULL)
        st = CP_ENOMEM;
    cp_free(lib);
    return st;
}

typedef enum { GET_ONE, GET_HISTORY, GET_DELIVERY } get_kind;

/* GET of one campaign's view, or the library call doing the same. */
static cp_status camp_get(camp_conn_t *cc, get_kind k, const char *id, char **out, cp_error_t *err)
{
    char *lib = NULL;
    if (cc->c.http) {
        static const char *const suffix[] = {"", "/history", "/delivery"};
        char *p = camp_path(id, suffix[k]);
        if (!p)
            return CP_ENOMEM;
        cp_status st = client_call(cc->c.http, "GET", p, NULL, NULL, 0, out, err);
        free(p);
        return st;
    }
    cp_status st = k == GET_ONE       ? cp_campaign_json(cc->act, id, &lib, err)
                   : k == GET_HISTORY ? cp_campaign_history_json(cc->act, id, &lib, err)
                                      : cp_campaign_delivery_json(cc->act, id, 0, &lib, err);
    return take(st, lib, out);
}

/* --------------------------------------------------------------- load */

static const cli_opt_t load_opts[] = {
    {"id", 0, OPT_VALUE, "ID", "the campaign id (default: the document's \"id\")"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t load_spec = {
    "campaign load",
    "FILE|-",
    "Create or replace a campaign from its JSON document (a new version each time).",
    "The document is described in docs/activation.md. Names in targeting and premiums\n"
    "must exist in the data; a bad document is refused naming the field.\n\n"
    "Example:\n"
    "  crowdpack campaign load --data ./dmp spring-sale.json",
    load_opts,
    CONN_ALL,
    1,
    1};

static int campaign_load(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&load_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    char *doc = NULL, *out = NULL, *path = NULL;
    size_t len = 0;
    camp_conn_t cc;
    memset(&cc, 0, sizeof cc);
    cp_error_t err = {0};
    if ((rc = cli_read_file(a.pos[0], MAX_DOC, &doc, &len)) != CLI_OK)
        return rc;
    /* The id for the URL: --id, else the document's own (the library
     * checks the document again; this is only to address it). */
    const char *id = cli_get(&a, "id");
    json_t *j = NULL;
    if (id == NULL) {
        json_error_t je;
        j = json_loadb(doc, len, 0, &je);
        if (j == NULL) {
            rc = cli_failf("%s: invalid JSON at line %d, column %d: %s", a.pos[0], je.line,
                           je.column, je.text);
            goto out;
        }
        id = json_string_value(json_object_get(j, "id"));
        if (id == NULL) {
            rc = cli_failf("%s: the document has no \"id\": give --id ID", a.pos[0]);
            goto out;
        }
    }
    if ((rc = camp_open(&a, &cc)) != CLI_OK)
        goto out;
    uint64_t version = 0;
    cp_status st;
    if (cc.c.http) {
        if ((path = camp_path(id, "")) == NULL) {
            rc = cli_failf("out of memory");
            goto out;
        }
        char *resp = NULL;
        st = client_call(cc.c.http, "PUT", path, "application/json", doc, len, &resp, &err);
        json_t *r = st == CP_OK ? cli_json_parse(resp, "campaign load") : NULL;
        version = (uint64_t)json_integer_value(json_object_get(r, "version"));
        json_decref(r);
        free(resp);
    } else {
        st = cp_campaign_put_json(cc.act, id, doc, len, &version, &err);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json)
        cli_emit_json(json_pack("{s:s,s:I}", "id", id, "version", (json_int_t)version));
    else
        printf("campaign %s: version %llu\n", id, (unsigned long long)version);
out:
    json_decref(j);
    free(doc);
    free(out);
    free(path);
    camp_close(&cc);
    return rc;
}

/* --------------------------------------------------------------- list */

/* A money amount of the canonical form (yuan, two decimals) for a table;
 * "-" for none. Display only: the JSON keeps the exact value. */
static const char *money_text(const json_t *v, char *buf, size_t cap)
{
    if (!json_is_number(v))
        return "-";
    snprintf(buf, cap, "%.2f", json_number_value(v));
    return buf;
}

static const cli_spec_t list_spec = {
    "campaign list",
    "",
    "Every campaign: id, advertiser, version, schedule, budgets, lines.",
    "Example:\n  crowdpack campaign list --data ./dmp",
    NULL,
    CONN_ALL,
    0,
    0};

static int campaign_list(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&list_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    camp_conn_t cc;
    char *out = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = camp_open(&a, &cc)) != CLI_OK)
        return rc;
    if (cc.c.http) {
        st = client_call(cc.c.http, "GET", "/v1/campaigns", NULL, NULL, 0, &out, &err);
    } else {
        char *lib = NULL;
        st = cp_campaigns_json(cc.act, &lib, &err);
        st = take(st, lib, &out);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
        goto out;
    }
    json_t *j = cli_json_parse(out, "campaign list");
    static const char *const hdr[] = {"ID",    "ADVERTISER", "VERSION", "START", "END",
                                      "TOTAL", "DAILY",      "LINES",   "STATE"};
    cli_table_t *t = j ? cli_table_new(9, hdr) : NULL;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "campaigns"), i, c)
    {
        char b[8][64];
        json_t *budget = json_object_get(c, "budget"), *sched = json_object_get(c, "schedule");
        json_t *total = json_object_get(budget, "total"), *daily = json_object_get(budget, "daily");
        snprintf(b[7], 64, "%zu", json_array_size(json_object_get(c, "lines")));
        const char *cells[9] = {cli_json_text(json_object_get(c, "id"), b[0], 64),
                                cli_json_text(json_object_get(c, "advertiser"), b[1], 64),
                                cli_json_text(json_object_get(c, "version"), b[2], 64),
                                cli_json_text(json_object_get(sched, "start"), b[3], 64),
                                json_is_null(json_object_get(sched, "end"))
                                    ? "-"
                                    : cli_json_text(json_object_get(sched, "end"), b[4], 64),
                                money_text(total, b[5], 64),
                                money_text(daily, b[6], 64),
                                b[7],
                                json_is_true(json_object_get(c, "paused")) ? "paused" : "active"};
        if (t)
            cli_table_row(t, cells);
    }
    if (t) {
        cli_table_right(t, 2);
        cli_table_right(t, 5);
        cli_table_right(t, 6);
        cli_table_right(t, 7);
        cli_table_print(t, stdout);
    }
    cli_table_free(t);
    json_decref(j);
out:
    free(out);
    camp_close(&cc);
    return rc;
}

/* ----------------------------------------------------- show / delivery */

static const cli_spec_t show_spec = {
    "campaign show",
    "ID",
    "A campaign's current document (canonical form: every field, defaults filled in).",
    "Example:\n  crowdpack campaign show --data ./dmp spring-sale",
    NULL,
    CONN_ALL,
    1,
    1};

static const cli_spec_t delivery_spec = {
    "campaign delivery",
    "ID",
    "A campaign's spend today and in total, reservations, pacing, per line.",
    "Example:\n  crowdpack campaign delivery --server http://127.0.0.1:8080 spring-sale",
    NULL,
    CONN_ALL,
    1,
    1};

static int show_json(const cli_spec_t *spec, get_kind k, int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    camp_conn_t cc;
    char *out = NULL;
    cp_error_t err = {0};
    if ((rc = camp_open(&a, &cc)) != CLI_OK)
        return rc;
    cp_status st = camp_get(&cc, k, a.pos[0], &out, &err);
    if (st != CP_OK)
        rc = cli_fail(st, &err);
    else if (a.json)
        printf("%s\n", out);
    else
        cli_print_json(out);
    free(out);
    camp_close(&cc);
    return rc;
}

static int campaign_show(int argc, char **argv)
{
    return show_json(&show_spec, GET_ONE, argc, argv);
}

static int campaign_delivery(int argc, char **argv)
{
    return show_json(&delivery_spec, GET_DELIVERY, argc, argv);
}

/* ------------------------------------------------------------- delete */

static const cli_spec_t delete_spec = {
    "campaign delete",
    "ID",
    "Delete a campaign: it stops bidding; its history keeps every version.",
    "Example:\n  crowdpack campaign delete --data ./dmp spring-sale",
    NULL,
    CONN_ALL,
    1,
    1};

static int campaign_delete(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&delete_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    camp_conn_t cc;
    char *out = NULL, *path = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = camp_open(&a, &cc)) != CLI_OK)
        return rc;
    if (cc.c.http) {
        if ((path = camp_path(a.pos[0], "")) == NULL) {
            rc = cli_failf("out of memory");
            goto out;
        }
        st = client_call(cc.c.http, "DELETE", path, NULL, NULL, 0, &out, &err);
    } else {
        st = cp_campaign_delete(cc.act, a.pos[0], &err);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json)
        cli_emit_json(json_pack("{s:s,s:b}", "id", a.pos[0], "deleted", 1));
    else
        printf("deleted campaign %s\n", a.pos[0]);
out:
    free(out);
    free(path);
    camp_close(&cc);
    return rc;
}

/* ------------------------------------------------------------ history */

static const cli_spec_t history_spec = {
    "campaign history",
    "ID",
    "Every version of a campaign: version, time, deleted or not, lines, bids.",
    "--json prints each version's complete document.\n\n"
    "Example:\n  crowdpack campaign history --data ./dmp spring-sale",
    NULL,
    CONN_ALL,
    1,
    1};

static int campaign_history(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&history_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    camp_conn_t cc;
    char *out = NULL;
    cp_error_t err = {0};
    if ((rc = camp_open(&a, &cc)) != CLI_OK)
        return rc;
    cp_status st = camp_get(&cc, GET_HISTORY, a.pos[0], &out, &err);
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
        goto out;
    }
    json_t *j = cli_json_parse(out, "campaign history");
    static const char *const hdr[] = {"VERSION", "UPDATED", "STATE", "LINES"};
    cli_table_t *t = j ? cli_table_new(4, hdr) : NULL;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "versions"), i, v)
    {
        char b[3][64];
        json_t *doc = json_object_get(v, "campaign");
        snprintf(b[2], 64, "%zu", json_array_size(json_object_get(doc, "lines")));
        const char *state = json_is_true(json_object_get(v, "deleted"))    ? "deleted"
                            : json_is_true(json_object_get(doc, "paused")) ? "paused"
                                                                           : "active";
        const char *cells[4] = {cli_json_text(json_object_get(v, "version"), b[0], 64),
                                cli_json_time(json_object_get(v, "updated"), b[1], 64), state,
                                json_is_null(doc) ? "-" : b[2]};
        if (t)
            cli_table_row(t, cells);
    }
    if (t) {
        cli_table_right(t, 0);
        cli_table_right(t, 3);
        cli_table_print(t, stdout);
    }
    cli_table_free(t);
    json_decref(j);
out:
    free(out);
    camp_close(&cc);
    return rc;
}

/* --------------------------------------------------------------- group */

static const cli_sub_t subs[] = {
    {"load", campaign_load, &load_spec},
    {"list", campaign_list, &list_spec},
    {"show", campaign_show, &show_spec},
    {"history", campaign_history, &history_spec},
    {"delete", campaign_delete, &delete_spec},
    {"delivery", campaign_delivery, &delivery_spec},
    {NULL, NULL, NULL},
};

int cmd_campaign(int argc, char **argv)
{
    return cli_dispatch("campaign", "Campaigns: line items bidding on crowds (docs/activation.md).",
                        subs, argc, argv);
}
