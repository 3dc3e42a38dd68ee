/*
 * cmd_crowd.c — `crowdpack crowd ...`: audience packs (人群包). Each
 * command works embedded (cp_crowd_*) or over HTTP (/v1/crowds...); both
 * give the same JSON, which one renderer turns into text.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define CONN_ALL (CONN_DATA | CONN_SERVER | CONN_JSON)

/* "/v1/crowds/NAME" + suffix, the name escaped. NULL on ENOMEM. */
static char *crowd_path(const char *name, const char *suffix)
{
    char *e = client_escape(name);
    if (!e)
        return NULL;
    size_t n = strlen(e) + strlen(suffix) + 16;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "/v1/crowds/%s%s", e, suffix);
    free(e);
    return p;
}

/* GETs or runs `fn` for a crowd's JSON; returns the text (caller frees with free()). */
static cp_status crowd_get(cli_conn_t *c, const char *name, char **out, cp_error_t *err)
{
    if (c->http) {
        char *p = crowd_path(name, "");
        if (!p)
            return CP_ENOMEM;
        cp_status st = client_call(c->http, "GET", p, NULL, NULL, 0, out, err);
        free(p);
        return st;
    }
    char *j = NULL;
    cp_status st = cp_crowd_json(c->db, name, &j, err);
    if (st == CP_OK) {
        *out = strdup(j);
        cp_free(j);
        if (!*out)
            st = CP_ENOMEM;
    }
    return st;
}

static void print_crowd(const char *json)
{
    json_t *j = cli_json_parse(json, "crowd");
    if (!j)
        return;
    char b[64];
    const char *keys[] = {"name",    "kind",    "expression", "size",
                          "version", "created", "updated",    "description"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(j, keys[i]);
        if (!v || json_is_null(v) || (json_is_string(v) && !*json_string_value(v)))
            continue;
        const char *s = strcmp(keys[i], "size") == 0 ? cli_json_count(v, b)
                        : (strcmp(keys[i], "created") == 0 || strcmp(keys[i], "updated") == 0)
                            ? cli_json_time(v, b, sizeof b)
                            : cli_json_text(v, b, sizeof b);
        printf("%-12s %s\n", keys[i], s);
    }
    json_t *refs = json_object_get(j, "references");
    if (json_array_size(refs) > 0) {
        printf("%-12s", "references");
        size_t i;
        json_t *r;
        json_array_foreach(refs, i, r) printf(" %s", cli_json_text(r, b, sizeof b));
        printf("\n");
    }
    json_decref(j);
}

/* ------------------------------------------------------------- create */

static const cli_opt_t create_opts[] = {
    {"dynamic", 0, OPT_FLAG, NULL, "re-evaluate after every write (default: static snapshot)"},
    {"description", 0, OPT_VALUE, "TEXT", "a description"},
    {"tree", 0, OPT_VALUE, "FILE", "the expression as a JSON tree from FILE instead of EXPR"},
    {"as-of", 0, OPT_VALUE, "DATE", "evaluate as of DATE (static crowds; did() windows end there)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t create_spec = {
    "crowd create",
    "NAME 'EXPR'",
    "Create a crowd from an expression and materialise it.",
    "Names are [A-Za-z0-9_-] and letters of any script (广州理财), up to 128 bytes.\n\n"
    "Example:\n"
    "  crowdpack crowd create --data ./dmp young_finance \\\n"
    "      'tag:interest/finance AND age BETWEEN 25 AND 40' --description 'campaign 12'",
    create_opts,
    CONN_ALL,
    1,
    2};

static int crowd_create(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&create_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *name = a.pos[0], *expr = a.npos > 1 ? a.pos[1] : NULL;
    const char *tf = cli_get(&a, "tree"), *desc = cli_get(&a, "description");
    cp_crowd_kind kind = cli_has(&a, "dynamic") ? CP_CROWD_DYNAMIC : CP_CROWD_STATIC;
    if (!!expr == !!tf)
        return cli_usage_error(&create_spec, "give the expression or --tree FILE (one of them)");
    char *tree = NULL, *out = NULL;
    size_t tlen = 0;
    cli_conn_t c = {0};
    cp_error_t err = {0};
    cp_status st;
    if (tf && (rc = cli_read_file(tf, CP_EXPR_MAX_LEN * 16, &tree, &tlen)) != CLI_OK)
        return rc;
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK)
        goto out;
    if (c.http) {
        json_t *b = json_object();
        json_object_set_new(b, "name", json_string(name));
        if (expr) {
            json_object_set_new(b, "expression", json_string(expr));
        } else {
            json_error_t je;
            json_t *t = json_loadb(tree, tlen, 0, &je);
            if (!t) {
                json_decref(b);
                rc = cli_failf("%s:%d:%d: %s", tf, je.line, je.column, je.text);
                goto out;
            }
            json_object_set_new(b, "tree", t);
        }
        json_object_set_new(b, "kind",
                            json_string(kind == CP_CROWD_DYNAMIC ? "dynamic" : "static"));
        if (desc)
            json_object_set_new(b, "description", json_string(desc));
        if (cli_get(&a, "as-of"))
            json_object_set_new(b, "as_of", json_string(cli_get(&a, "as-of")));
        st = client_call_json(c.http, "POST", "/v1/crowds", b, &out, &err);
        /* The answer is the crowd; older servers may answer less. */
        if (st == CP_OK && !strstr(out, "\"size\"")) {
            free(out);
            out = NULL;
            st = crowd_get(&c, name, &out, &err);
        }
    } else {
        st = cp_crowd_create_as_of(c.db, name, expr, tree, tlen, kind, desc, cli_get(&a, "as-of"),
                                   &err);
        if (st == CP_OK)
            st = crowd_get(&c, name, &out, &err);
    }
    if (st != CP_OK) {
        rc = cli_fail_expr(st, &err, expr);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
    } else {
        json_t *j = cli_json_parse(out, "crowd");
        char b[32];
        printf("created crowd %s (%s): %s users\n", name,
               kind == CP_CROWD_DYNAMIC ? "dynamic" : "static",
               j ? cli_json_count(json_object_get(j, "size"), b) : "?");
        json_decref(j);
    }
out:
    free(tree);
    free(out);
    cli_conn_close(&c);
    return rc;
}

/* --------------------------------------------------------------- list */

static const cli_spec_t list_spec = {"crowd list",
                                     "",
                                     "List crowds with their sizes.",
                                     "Example:\n  crowdpack crowd list --data ./dmp",
                                     NULL,
                                     CONN_ALL,
                                     0,
                                     0};

static int crowd_list(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&list_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    cli_conn_t c = {0};
    char *out = NULL, *lib = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    if (c.http)
        st = client_call(c.http, "GET", "/v1/crowds", NULL, NULL, 0, &out, &err);
    else
        st = cp_crowds_json(c.db, &lib, &err);
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    const char *text = out ? out : lib;
    if (a.json) {
        cli_print_json(text);
        goto out;
    }
    json_t *j = cli_json_parse(text, "crowds");
    if (!j) {
        rc = CLI_FAIL;
        goto out;
    }
    const char *hdr[] = {"NAME", "KIND", "SIZE", "VERSION", "UPDATED", "EXPRESSION"};
    cli_table_t *t = cli_table_new(6, hdr);
    cli_table_right(t, 2);
    cli_table_right(t, 3);
    size_t i;
    json_t *cr;
    json_array_foreach(json_object_get(j, "crowds"), i, cr)
    {
        char b[6][64];
        const char *row[] = {
            cli_json_text(json_object_get(cr, "name"), b[0], 64),
            cli_json_text(json_object_get(cr, "kind"), b[1], 64),
            cli_json_count(json_object_get(cr, "size"), b[2]),
            cli_json_text(json_object_get(cr, "version"), b[3], 64),
            cli_json_time(json_object_get(cr, "updated"), b[4], 64),
            cli_json_text(json_object_get(cr, "expression"), b[5], 64),
        };
        cli_table_row(t, row);
    }
    if (json_array_size(json_object_get(j, "crowds")) == 0)
        printf("no crowds\n");
    else
        cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(j);
out:
    free(out);
    cp_free(lib);
    cli_conn_close(&c);
    return rc;
}

/* --------------------------------------------- show / refresh / delete */

static const cli_spec_t show_spec = {"crowd show",
                                     "NAME",
                                     "Show a crowd: expression, size, version, references.",
                                     "Example:\n  crowdpack crowd show --data ./dmp young_finance",
                                     NULL,
                                     CONN_ALL,
                                     1,
                                     1};
static const cli_spec_t refresh_spec = {
    "crowd refresh",
    "NAME",
    "Re-evaluate a crowd's expression now (bumps its version).",
    "Example:\n  crowdpack crowd refresh --data ./dmp young_finance",
    NULL,
    CONN_ALL,
    1,
    1};
static const cli_spec_t delete_spec = {
    "crowd delete",
    "NAME",
    "Delete a crowd (refused while other crowds reference it).",
    "Example:\n  crowdpack crowd delete --data ./dmp young_finance",
    NULL,
    CONN_ALL,
    1,
    1};
static const cli_spec_t update_spec = {"crowd update",
                                       "NAME 'EXPR'",
                                       "Replace a crowd's expression (bumps its version).",
                                       "Example:\n  crowdpack crowd update --data ./dmp "
                                       "young_finance 'tag:interest/finance AND age < 30'",
                                       NULL,
                                       CONN_ALL,
                                       2,
                                       2};

/* One crowd operation (0 show, 1 refresh, 2 delete, 3 update). */
static int crowd_one(const cli_spec_t *spec, int op, int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *name = a.pos[0], *expr = a.npos > 1 ? a.pos[1] : NULL;
    cli_conn_t c = {0};
    char *out = NULL, *path = NULL;
    cp_error_t err = {0};
    cp_status st = CP_OK;
    if ((rc = cli_conn_open(&a, op == 0 ? OPEN_READ : OPEN_WRITE, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        path = crowd_path(name, op == 1 ? "/refresh" : "");
        if (!path) {
            rc = cli_failf("out of memory");
            goto out;
        }
        if (op == 0)
            st = client_call(c.http, "GET", path, NULL, NULL, 0, &out, &err);
        else if (op == 1)
            st = client_call(c.http, "POST", path, NULL, NULL, 0, NULL, &err);
        else if (op == 2)
            st = client_call(c.http, "DELETE", path, NULL, NULL, 0, NULL, &err);
        else {
            json_t *b = json_object();
            json_object_set_new(b, "expression", json_string(expr));
            st = client_call_json(c.http, "PUT", path, b, NULL, &err);
        }
    } else if (op == 0) {
        st = crowd_get(&c, name, &out, &err);
    } else if (op == 1) {
        st = cp_crowd_refresh(c.db, name, &err);
    } else if (op == 2) {
        st = cp_crowd_delete(c.db, name, &err);
    } else {
        st = cp_crowd_update(c.db, name, expr, &err);
    }
    if (st == CP_OK && (op == 1 || op == 3))
        st = crowd_get(&c, name, &out, &err);
    if (st != CP_OK) {
        rc = cli_fail_expr(st, &err, expr);
        goto out;
    }
    if (op == 2) {
        if (a.json)
            cli_emit_json(json_pack("{s:s}", "deleted", name));
        else
            printf("deleted crowd %s\n", name);
    } else if (a.json) {
        cli_print_json(out);
    } else if (op == 0) {
        print_crowd(out);
    } else {
        json_t *j = cli_json_parse(out, "crowd");
        char b[32], v[32];
        printf("%s crowd %s: %s users (version %s)\n", op == 1 ? "refreshed" : "updated", name,
               j ? cli_json_count(json_object_get(j, "size"), b) : "?",
               j ? cli_json_text(json_object_get(j, "version"), v, sizeof v) : "?");
        json_decref(j);
    }
out:
    free(out);
    free(path);
    cli_conn_close(&c);
    return rc;
}

static int crowd_show(int argc, char **argv)
{
    return crowd_one(&show_spec, 0, argc, argv);
}
static int crowd_refresh(int argc, char **argv)
{
    return crowd_one(&refresh_spec, 1, argc, argv);
}
static int crowd_delete(int argc, char **argv)
{
    return crowd_one(&delete_spec, 2, argc, argv);
}
static int crowd_update(int argc, char **argv)
{
    return crowd_one(&update_spec, 3, argc, argv);
}

/* ------------------------------------------------------------- sample */

static const cli_opt_t sample_opts[] = {
    {"n", 'n', OPT_VALUE, "N", "how many ids (default 10)"},
    {"seed", 0, OPT_VALUE, "S", "random seed; the same seed gives the same sample (default 1)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t sample_spec = {
    "crowd sample",
    "NAME",
    "Print up to N member ids of a crowd, uniformly at random.",
    "Example:\n  crowdpack crowd sample --data ./dmp young_finance -n 5 --seed 7",
    sample_opts,
    CONN_ALL,
    1,
    1};

static int crowd_sample(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&sample_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t n = 10, seed = 1;
    if (cli_get(&a, "n") && cli_parse_u64(cli_get(&a, "n"), &n) != 0)
        return cli_usage_error(&sample_spec, "-n: expected a number, got '%s'", cli_get(&a, "n"));
    if (cli_get(&a, "seed") && cli_parse_u64(cli_get(&a, "seed"), &seed) != 0)
        return cli_usage_error(&sample_spec, "--seed: expected a number, got '%s'",
                               cli_get(&a, "seed"));
    cli_conn_t c = {0};
    char *out = NULL, *lib = NULL, *path = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        char q[96];
        snprintf(q, sizeof q, "/sample?n=%llu&seed=%llu", (unsigned long long)n,
                 (unsigned long long)seed);
        if (!(path = crowd_path(a.pos[0], q))) {
            rc = cli_failf("out of memory");
            goto out;
        }
        st = client_call(c.http, "GET", path, NULL, NULL, 0, &out, &err);
    } else {
        st = cp_crowd_sample_json(c.db, a.pos[0], n, seed, &lib, &err);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    const char *text = out ? out : lib;
    if (a.json) {
        cli_print_json(text);
        goto out;
    }
    json_t *j = cli_json_parse(text, "sample");
    if (!j) {
        rc = CLI_FAIL;
        goto out;
    }
    size_t i;
    json_t *id;
    char b[64];
    json_array_foreach(json_object_get(j, "ids"), i, id) puts(cli_json_text(id, b, sizeof b));
    json_decref(j);
out:
    free(out);
    free(path);
    cp_free(lib);
    cli_conn_close(&c);
    return rc;
}

/* ------------------------------------------------------------- export */

static const cli_opt_t export_opts[] = {
    {"format", 'f', OPT_VALUE, "ndjson|csv", "output format (default ndjson)"},
    {"output", 'o', OPT_VALUE, "FILE", "write to FILE instead of standard output"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t export_spec = {
    "crowd export",
    "NAME",
    "Stream a crowd's member ids as NDJSON {\"id\":...} lines or CSV.",
    "Constant memory, any size. A closed standard output (| head) ends it quietly.\n\n"
    "Examples:\n  crowdpack crowd export --data ./dmp young_finance --format csv -o ids.csv\n"
    "  crowdpack crowd export --data ./dmp young_finance | head",
    export_opts,
    CONN_DATA | CONN_SERVER,
    1,
    1};

typedef struct export_ctx {
    FILE *f;
    int err; /* errno of a failed write */
} export_ctx_t;

static int export_write(void *ud, const char *buf, size_t len)
{
    export_ctx_t *x = ud;
    if (len && fwrite(buf, 1, len, x->f) != len) {
        x->err = errno ? errno : EIO;
        return 1;
    }
    return 0;
}

static int crowd_export(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&export_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *fmt = cli_get(&a, "format") ? cli_get(&a, "format") : "ndjson";
    cp_export_format ef;
    if (strcmp(fmt, "ndjson") == 0 || strcmp(fmt, "json") == 0)
        ef = CP_EXPORT_NDJSON;
    else if (strcmp(fmt, "csv") == 0)
        ef = CP_EXPORT_CSV;
    else
        return cli_usage_error(&export_spec, "--format: expected ndjson or csv, got '%s'", fmt);
    const char *outp = cli_get(&a, "output");
    export_ctx_t x = {stdout, 0};
    cli_conn_t c = {0};
    char *path = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    if (outp && strcmp(outp, "-") != 0 && !(x.f = fopen(outp, "w"))) {
        x.f = NULL;
        rc = cli_failf("cannot create %s: %s", outp, strerror(errno));
        goto out;
    }
    if (c.http) {
        char q[32];
        snprintf(q, sizeof q, "/export?format=%s", ef == CP_EXPORT_CSV ? "csv" : "ndjson");
        if (!(path = crowd_path(a.pos[0], q))) {
            rc = cli_failf("out of memory");
            goto out;
        }
        st = client_stream(c.http, "GET", path, NULL, 0, export_write, &x, &err);
    } else {
        st = cp_crowd_export(c.db, a.pos[0], ef, export_write, &x, &err);
    }
    if (x.err == 0 && st == CP_OK && x.f != stdout && fflush(x.f) != 0)
        x.err = errno;
    if (x.err) {
        if (x.err == EPIPE && x.f == stdout)
            goto out; /* reader closed the pipe: stop quietly */
        rc = cli_failf("cannot write %s: %s", x.f == stdout ? "standard output" : outp,
                       strerror(x.err));
        goto out;
    }
    if (st != CP_OK)
        rc = cli_fail(st, &err);
out:
    if (x.f && x.f != stdout && fclose(x.f) != 0 && rc == CLI_OK)
        rc = cli_failf("cannot write %s: %s", outp, strerror(errno));
    free(path);
    cli_conn_close(&c);
    return rc;
}

/* ------------------------------------------------- history / schedule */

static const cli_spec_t history_spec = {
    "crowd history",
    "NAME",
    "A crowd's size at each refresh that changed it (time, size, version; the last 400).",
    "Example:\n  crowdpack crowd history --data ./dmp young_finance",
    NULL,
    CONN_ALL,
    1,
    1};

static int crowd_history(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&history_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *name = a.pos[0];
    cli_conn_t c = {0};
    char *out = NULL, *path = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        if ((path = crowd_path(name, "/history")) == NULL) {
            rc = cli_failf("out of memory");
            goto out;
        }
        st = client_call(c.http, "GET", path, NULL, NULL, 0, &out, &err);
    } else {
        char *lib = NULL;
        st = cp_crowd_history_json(c.db, name, &lib, &err);
        out = lib ? strdup(lib) : NULL;
        cp_free(lib);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
        goto out;
    }
    json_t *j = cli_json_parse(out, "crowd history");
    static const char *const hdr[] = {"TIME", "SIZE", "VERSION"};
    cli_table_t *t = j ? cli_table_new(3, hdr) : NULL;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(j, "points"), i, p)
    {
        char b[3][64];
        const char *cells[3] = {cli_json_time(json_object_get(p, "time"), b[0], 64),
                                cli_json_count(json_object_get(p, "size"), b[1]),
                                cli_json_text(json_object_get(p, "version"), b[2], 64)};
        if (t)
            cli_table_row(t, cells);
    }
    if (t)
        cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(j);
out:
    free(out);
    free(path);
    cli_conn_close(&c);
    return rc;
}

static const cli_opt_t schedule_opts[] = {
    {"refresh", 0, OPT_VALUE, "WHEN", "refresh a static crowd daily: 'daily 02:00' ('none' stops)"},
    {"timezone", 0, OPT_VALUE, "TZ",
     "the schedule's zone: Asia/Shanghai, +08:00 (default: the server's)"},
    {"expire-after-days", 0, OPT_VALUE, "N", "freeze the crowd after N days unused (0: never)"},
    {"thaw", 0, OPT_FLAG, NULL, "unfreeze a frozen crowd"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t schedule_spec = {
    "crowd schedule",
    "NAME",
    "Set a crowd's scheduled refresh, time zone and expiry (frozen when unused).",
    "Examples:\n"
    "  crowdpack crowd schedule --data ./dmp young_finance --refresh 'daily 02:00' "
    "--timezone Asia/Shanghai\n"
    "  crowdpack crowd schedule --data ./dmp young_finance --expire-after-days 90",
    schedule_opts,
    CONN_ALL,
    1,
    1};

static int crowd_schedule(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&schedule_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *name = a.pos[0], *when = cli_get(&a, "refresh"), *tz = cli_get(&a, "timezone"),
               *exp = cli_get(&a, "expire-after-days");
    json_t *set = json_object();
    uint64_t days = 0;
    if (exp && cli_parse_u64(exp, &days)) {
        json_decref(set);
        return cli_usage_error(&schedule_spec, "--expire-after-days needs a number of days");
    }
    if (when)
        json_object_set_new(set, "refresh",
                            strcmp(when, "none") == 0 ? json_null() : json_string(when));
    if (tz)
        json_object_set_new(set, "timezone", json_string(tz));
    if (exp)
        json_object_set_new(set, "expire_after_days", json_integer((json_int_t)days));
    if (cli_has(&a, "thaw"))
        json_object_set_new(set, "frozen", json_false());
    if (json_object_size(set) == 0) {
        json_decref(set);
        return cli_usage_error(&schedule_spec,
                               "give --refresh, --timezone, --expire-after-days or --thaw");
    }
    cli_conn_t c = {0};
    char *out = NULL, *path = NULL, *body = json_dumps(set, JSON_COMPACT);
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK) {
        json_decref(set);
        free(body);
        return rc;
    }
    if (c.http) {
        if ((path = crowd_path(name, "/schedule")) == NULL) {
            json_decref(set);
            rc = cli_failf("out of memory");
            goto out;
        }
        st = client_call_json(c.http, "PUT", path, set, &out, &err);
    } else {
        json_decref(set);
        if (body == NULL) {
            rc = cli_failf("out of memory");
            goto out;
        }
        st = cp_crowd_settings_json(c.db, name, body, strlen(body), &err);
        if (st == CP_OK)
            st = crowd_get(&c, name, &out, &err);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(out);
    } else {
        json_t *j = cli_json_parse(out, "crowd");
        const char *r = json_string_value(json_object_get(j, "refresh"));
        const char *z = json_string_value(json_object_get(j, "timezone"));
        json_int_t d = json_integer_value(json_object_get(j, "expire_after_days"));
        printf("crowd %s: refreshed %s%s%s; ", name, r ? r : "by hand only", r ? " " : "",
               r ? (z ? z : "(server time)") : "");
        if (d)
            printf("frozen after %lld days unused\n", (long long)d);
        else
            printf("never expires\n");
        json_decref(j);
    }
out:
    free(out);
    free(path);
    free(body);
    cli_conn_close(&c);
    return rc;
}

/* --------------------------------------------------------------- group */

static const cli_sub_t subs[] = {
    {"create", crowd_create, &create_spec},
    {"list", crowd_list, &list_spec},
    {"show", crowd_show, &show_spec},
    {"refresh", crowd_refresh, &refresh_spec},
    {"update", crowd_update, &update_spec},
    {"delete", crowd_delete, &delete_spec},
    {"sample", crowd_sample, &sample_spec},
    {"export", crowd_export, &export_spec},
    {"history", crowd_history, &history_spec},
    {"schedule", crowd_schedule, &schedule_spec},
    {NULL, NULL, NULL},
};

int cmd_crowd(int argc, char **argv)
{
    return cli_dispatch("crowd",
                        "Audience packs (人群包): named expressions with materialised members.",
                        subs, argc, argv);
}
