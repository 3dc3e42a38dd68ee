/*
 * cmd_data.c — commands on a data directory as a whole: init, load,
 * count, eval, stats, expr.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "util/util.h"

#define MAX_JSON_FILE (64u << 20) /* schema, taxonomy and tree files */

/* --------------------------------------------------------------- init */

static const cli_opt_t init_opts[] = {
    {"schema", 0, OPT_VALUE, "S.json", "load attribute definitions {\"attributes\":[...]}"},
    {"taxonomy", 0, OPT_VALUE, "T.json", "load a tag tree {\"tags\":[{\"path\",\"name\"}...]}"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t init_spec = {
    "init",
    "",
    "Create a data directory (or open an existing one) and optionally load a schema "
    "and a taxonomy into it.",
    "Both files are applied all or nothing. Running init again on an existing directory only\n"
    "loads the given files.\n\nExample:\n  crowdpack init --data ./dmp --schema schema.json "
    "--taxonomy taxonomy.json",
    init_opts,
    CONN_DATA | CONN_JSON,
    0,
    0};

/* Loads one JSON file through `fn` (schema or taxonomy loader). */
static int load_json_file(cp_db_t *db, const char *path,
                          cp_status (*fn)(cp_db_t *, const char *, size_t, cp_error_t *))
{
    char *text = NULL;
    size_t len = 0;
    int rc = cli_read_file(path, MAX_JSON_FILE, &text, &len);
    if (rc != CLI_OK)
        return rc;
    cp_error_t err = {0};
    cp_status st = fn(db, text, len, &err);
    free(text);
    if (st != CP_OK)
        return cli_failf("%s: %s", path, err.message[0] ? err.message : cp_strerror(st));
    return CLI_OK;
}

int cmd_init(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&init_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *dir = a.data ? a.data : getenv("CROWDPACK_DATA");
    if (!dir)
        return cli_usage_error(&init_spec, "init needs --data DIR");

    cp_open_options_t o = {.size = sizeof(cp_open_options_t), .flags = CP_OPEN_CREATE};
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    cp_status st = cp_db_open(dir, &o, &db, &err);
    if (st != CP_OK)
        return cli_fail(st, &err);
    const char *schema = cli_get(&a, "schema"), *tax = cli_get(&a, "taxonomy");
    if (schema && (rc = load_json_file(db, schema, cp_schema_load_json)) != CLI_OK)
        goto out;
    if (tax && (rc = load_json_file(db, tax, cp_taxonomy_load_json)) != CLI_OK)
        goto out;
    cp_db_stats_t s = CP_DB_STATS_INIT;
    cp_db_stats(db, &s, NULL);
    if (a.json) {
        cli_emit_json(json_pack("{s:s,s:I,s:I,s:I,s:I}", "data", dir, "format",
                                (json_int_t)cp_format_version(), "attributes",
                                (json_int_t)s.attributes, "tags", (json_int_t)s.tags, "users",
                                (json_int_t)s.users));
    } else {
        char b1[32], b2[32], b3[32];
        printf("initialised %s (format %u): %s attributes, %s tags, %s users\n", dir,
               cp_format_version(), cli_group(s.attributes, b1), cli_group(s.tags, b2),
               cli_group(s.users, b3));
    }
out:
    cp_db_close(db, NULL);
    return rc;
}

/* --------------------------------------------------------------- load */

static const cli_opt_t load_opts[] = {
    {"strict", 0, OPT_FLAG, NULL, "all or nothing: the first bad line aborts the load"},
    {"rejects", 0, OPT_VALUE, "FILE",
     "write rejected lines' numbers and reasons here (not stderr)"},
    {"batch", 0, OPT_VALUE, "LINES", "lines per committed batch (default 50,000)"},
    {"quiet", 'q', OPT_FLAG, NULL, "no progress bar and no summary"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t load_spec = {
    "load",
    "USERS.ndjson|-",
    "Load users from NDJSON, one {\"id\",\"attrs\",\"tags\"} object per line, streaming.",
    "Bad lines are reported with their line number and skipped (unless --strict); the others\n"
    "are committed in batches. A progress bar is drawn on stderr when it is a terminal.\n"
    "Exit status 1 on an error, or when a line was rejected under --strict.\n\nExamples:\n"
    "  crowdpack load --data ./dmp users.ndjson\n"
    "  zcat users.ndjson.gz | crowdpack load --data ./dmp --rejects bad.txt -\n"
    "  crowdpack load --server http://127.0.0.1:8080 --key $KEY users.ndjson",
    load_opts,
    CONN_DATA | CONN_SERVER | CONN_JSON,
    1,
    1};

typedef struct load_ctx {
    progress_t bar;
    FILE *rejects; /* stderr or the --rejects file */
    uint64_t nrejects;
} load_ctx_t;

static void print_reject(load_ctx_t *lc, uint64_t line, const char *msg)
{
    lc->nrejects++;
    if (lc->rejects == stderr)
        progress_finish(&lc->bar);
    /* The engine's messages usually start "line N: "; don't say it twice. */
    if (strncmp(msg, "line ", 5) == 0)
        fprintf(lc->rejects, "%s\n", msg);
    else
        fprintf(lc->rejects, "line %llu: %s\n", (unsigned long long)line, msg);
}

static void on_reject(void *ud, const cp_error_t *err)
{
    print_reject(ud, err->record, err->message[0] ? err->message : cp_strerror(err->code));
}

static void on_progress(void *ud, uint64_t bytes, uint64_t lines)
{
    load_ctx_t *lc = ud;
    progress_update(&lc->bar, bytes, lines);
}

static void print_load_summary(const cli_args_t *a, const cp_load_stats_t *s, double secs)
{
    if (a->json) {
        printf("{\"lines\":%llu,\"created\":%llu,\"updated\":%llu,\"tags_assigned\":%llu,"
               "\"rejected\":%llu,\"bytes\":%llu,\"seconds\":%.3f}\n",
               (unsigned long long)s->lines, (unsigned long long)s->users_created,
               (unsigned long long)s->users_updated, (unsigned long long)s->tags_assigned,
               (unsigned long long)s->rejected, (unsigned long long)s->bytes, secs);
        return;
    }
    if (cli_has(a, "quiet"))
        return;
    char l[32], c[32], u[32], t[32], r[32], d[32], rate[32];
    printf("loaded %s lines: %s created, %s updated, %s tags assigned, %s rejected in %s "
           "(%s lines/s)\n",
           cli_group(s->lines, l), cli_group(s->users_created, c), cli_group(s->users_updated, u),
           cli_group(s->tags_assigned, t), cli_group(s->rejected, r), cli_duration(secs, d),
           cli_group(secs > 0 ? (uint64_t)((double)s->lines / secs) : s->lines, rate));
}

/*
 * --server: the API loads a request body all or nothing (POST /v1/users
 * is strict), so the file goes in batches of lines. A batch refused for
 * one line (the error names its record) is sent again without that line,
 * which gives the same skip-and-report behaviour as an embedded load.
 * --strict sends the whole file as one request: all or nothing, within the
 * server's body limit.
 */
#define REMOTE_BATCH_LINES 10000
#define REMOTE_BATCH_BYTES (4u << 20)
#define REMOTE_MAX_LINE (1u << 20)

typedef struct rline {
    size_t off, len; /* in the batch text */
    uint64_t lineno; /* 1-based line of the input */
    int dropped;
} rline_t;

typedef struct rbatch {
    buf_t text; /* the lines as read, each ending in \n */
    rline_t *lines;
    size_t n, cap;
    buf_t body; /* the request: the lines not dropped */
} rbatch_t;

/* The message without a leading "line N: " (N is relative to the batch). */
static const char *strip_line_prefix(const char *m)
{
    if (strncmp(m, "line ", 5) != 0)
        return m;
    const char *p = m + 5;
    while (*p >= '0' && *p <= '9')
        p++;
    return p[0] == ':' && p[1] == ' ' ? p + 2 : m;
}

static int send_batch(const cli_args_t *a, cli_conn_t *conn, rbatch_t *b, load_ctx_t *lc,
                      cp_load_stats_t *s)
{
    for (;;) {
        buf_reset(&b->body);
        size_t *map = malloc((b->n ? b->n : 1) * sizeof *map), nm = 0;
        if (!map)
            return cli_failf("out of memory");
        for (size_t i = 0; i < b->n; i++) {
            if (b->lines[i].dropped)
                continue;
            map[nm++] = i;
            if (buf_append(&b->body, b->text.data + b->lines[i].off, b->lines[i].len) != CP_OK) {
                free(map);
                return cli_failf("out of memory");
            }
        }
        if (nm == 0) {
            free(map);
            return CLI_OK;
        }
        char *resp = NULL;
        cp_error_t err = {0};
        cp_status st = client_call(conn->http, "POST", "/v1/users", "application/x-ndjson",
                                   b->body.data, b->body.len, &resp, &err);
        if (st == CP_OK) {
            json_t *j = json_loads(resp, 0, NULL);
            free(resp);
            free(map);
            s->users_created += (uint64_t)json_integer_value(json_object_get(j, "created"));
            s->users_updated += (uint64_t)json_integer_value(json_object_get(j, "updated"));
            s->tags_assigned += (uint64_t)json_integer_value(json_object_get(j, "tags_assigned"));
            json_decref(j);
            return CLI_OK;
        }
        int bad_line = err.record > 0 && err.record <= nm &&
                       (st == CP_EINVAL || st == CP_ETYPE || st == CP_ENOTFOUND ||
                        st == CP_ELIMIT || st == CP_ESYNTAX);
        if (!bad_line) {
            free(map);
            return cli_fail(st, &err);
        }
        rline_t *l = &b->lines[map[err.record - 1]];
        free(map);
        l->dropped = 1;
        s->rejected++;
        print_reject(lc, l->lineno, strip_line_prefix(err.message));
        if (cli_has(a, "strict"))
            return cli_failf("nothing loaded (--strict): line %llu was rejected",
                             (unsigned long long)l->lineno);
    }
}

static int load_remote(const cli_args_t *a, cli_conn_t *conn, FILE *in, load_ctx_t *lc,
                       cp_load_stats_t *s)
{
    int strict = cli_has(a, "strict");
    rbatch_t b = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = CLI_OK;
    buf_init(&b.text, 0);
    buf_init(&b.body, 0);
    while ((n = getline(&line, &cap, in)) >= 0) {
        s->lines++;
        s->bytes += (uint64_t)n;
        progress_update(&lc->bar, s->bytes, s->lines);
        size_t len = (size_t)n;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        size_t sp = 0;
        while (sp < len && (line[sp] == ' ' || line[sp] == '\t'))
            sp++;
        if (sp == len)
            continue; /* blank lines are counted, not sent */
        if (len > REMOTE_MAX_LINE) {
            s->rejected++;
            print_reject(lc, s->lines, "longer than 1 MiB");
            if (strict) {
                rc = cli_failf("nothing loaded (--strict): line %llu was rejected",
                               (unsigned long long)s->lines);
                goto out;
            }
            continue;
        }
        if (b.n == b.cap) {
            size_t nc = b.cap ? b.cap * 2 : 1024;
            rline_t *nl = realloc(b.lines, nc * sizeof *nl);
            if (!nl) {
                rc = cli_failf("out of memory");
                goto out;
            }
            b.lines = nl;
            b.cap = nc;
        }
        b.lines[b.n] = (rline_t){b.text.len, len + 1, s->lines, 0};
        if (buf_append(&b.text, line, len) != CP_OK || buf_append(&b.text, "\n", 1) != CP_OK) {
            rc = cli_failf("out of memory");
            goto out;
        }
        b.n++;
        if (!strict && (b.n >= REMOTE_BATCH_LINES || b.text.len >= REMOTE_BATCH_BYTES)) {
            if ((rc = send_batch(a, conn, &b, lc, s)) != CLI_OK)
                goto out;
            b.n = 0;
            buf_reset(&b.text);
        }
    }
    if (ferror(in)) {
        rc = cli_failf("cannot read %s: %s", a->pos[0], strerror(errno));
        goto out;
    }
    rc = send_batch(a, conn, &b, lc, s);
out:
    progress_finish(&lc->bar);
    free(line);
    free(b.lines);
    buf_free(&b.text);
    buf_free(&b.body);
    return rc;
}

int cmd_load(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&load_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t batch = 0;
    if (cli_get(&a, "batch") && cli_parse_u64(cli_get(&a, "batch"), &batch) != 0)
        return cli_usage_error(&load_spec, "--batch: expected a number of lines");

    const char *path = a.pos[0];
    FILE *in = NULL;
    load_ctx_t lc = {.rejects = stderr};
    cli_conn_t conn = {0};
    cp_load_stats_t s = CP_LOAD_STATS_INIT;
    uint64_t total = 0;

    if (strcmp(path, "-") == 0) {
        in = stdin;
    } else if (!(in = fopen(path, "rb"))) {
        return cli_failf("cannot open %s: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fileno(in), &sb) == 0 && S_ISREG(sb.st_mode))
        total = (uint64_t)sb.st_size;
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &conn)) != CLI_OK)
        goto out;
    if (cli_get(&a, "rejects") && !(lc.rejects = fopen(cli_get(&a, "rejects"), "w"))) {
        lc.rejects = stderr;
        rc = cli_failf("cannot create %s: %s", cli_get(&a, "rejects"), strerror(errno));
        goto out;
    }
    progress_start(&lc.bar, "loading", PROGRESS_BYTES, total, cli_has(&a, "quiet") ? 0 : -1);

    if (conn.http) {
        rc = load_remote(&a, &conn, in, &lc, &s);
        if (rc != CLI_OK)
            goto out;
    } else {
        cp_load_options_t o = CP_LOAD_OPTIONS_INIT;
        o.flags = cli_has(&a, "strict") ? CP_LOAD_STRICT : 0;
        o.on_reject = on_reject;
        o.on_progress = on_progress;
        o.ud = &lc;
        o.batch_lines = batch;
        cp_error_t err = {0};
        cp_status st = cp_load_ndjson(conn.db, in, &o, &s, &err);
        progress_finish(&lc.bar);
        if (st != CP_OK) {
            /* Under --strict the bad line is the error itself. */
            if (err.record && !lc.nrejects)
                print_reject(&lc, err.record, err.message);
            if (cli_has(&a, "strict") && err.record)
                rc = cli_failf("nothing loaded (--strict): line %llu was rejected",
                               (unsigned long long)err.record);
            else
                rc = cli_fail(st, &err);
            goto out;
        }
    }
    print_load_summary(&a, &s, progress_elapsed(&lc.bar));
    if (cli_has(&a, "strict") && s.rejected > 0)
        rc = CLI_FAIL;
out:
    if (lc.rejects && lc.rejects != stderr && fclose(lc.rejects) != 0 && rc == CLI_OK)
        rc = cli_failf("cannot write %s: %s", cli_get(&a, "rejects"), strerror(errno));
    if (in && in != stdin)
        fclose(in);
    cli_conn_close(&conn);
    return rc;
}

/* -------------------------------------------------------------- count */

static const cli_opt_t count_opts[] = {
    {"tree", 0, OPT_VALUE, "FILE", "read the expression as a JSON tree from FILE (- = stdin)"},
    {"as-of", 0, OPT_VALUE, "DATE", "evaluate as of DATE (did() windows, WITHIN LAST end there)"},
    {"time", 't', OPT_FLAG, NULL, "also print the elapsed time on stderr"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t count_spec = {
    "count",
    "'EXPR'",
    "Count the users matching a crowd expression. Prints only the number.",
    "Examples:\n  crowdpack count --data ./dmp 'tag:interest/finance AND age BETWEEN 25 AND 40'\n"
    "  crowdpack count --data ./dmp --tree expr.json\n"
    "  crowdpack count --server http://127.0.0.1:8080 'near(23.13, 113.26, 50km)'",
    count_opts,
    CONN_DATA | CONN_SERVER | CONN_JSON,
    0,
    1};

/* The expression of count/eval: positional text or --tree JSON. */
static int expr_input(const cli_args_t *a, const cli_spec_t *spec, const char **text, char **tree,
                      size_t *tree_len)
{
    const char *tf = cli_get(a, "tree");
    *text = NULL;
    *tree = NULL;
    if (tf && a->npos > 0)
        return cli_usage_error(spec, "give either an expression or --tree FILE, not both");
    if (!tf && a->npos == 0)
        return cli_usage_error(spec, "missing the expression (or --tree FILE)");
    if (tf)
        return cli_read_file(tf, CP_EXPR_MAX_LEN * 16, tree, tree_len);
    *text = a->pos[0];
    return CLI_OK;
}

/* The JSON request body of an expression given as text or as a tree file,
 * with --as-of: {"expression"|"tree", "as_of"}. Prints errors. */
static int expr_body(const cli_args_t *a, const char *text, const char *tree, size_t tlen,
                     json_t **out)
{
    json_t *body = json_object(), *t = NULL;
    *out = NULL;
    if (body == NULL)
        return cli_failf("out of memory");
    if (text) {
        t = json_string(text);
    } else {
        json_error_t je;
        t = json_loadb(tree, tlen, 0, &je);
        if (!t) {
            json_decref(body);
            return cli_failf("%s:%d:%d: %s", cli_get(a, "tree"), je.line, je.column, je.text);
        }
    }
    int bad = json_object_set_new(body, text ? "expression" : "tree", t);
    if (cli_get(a, "as-of"))
        bad |= json_object_set_new(body, "as_of", json_string(cli_get(a, "as-of")));
    if (bad) {
        json_decref(body);
        return cli_failf("out of memory");
    }
    *out = body;
    return CLI_OK;
}

int cmd_count(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&count_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *text;
    char *tree = NULL, *resp = NULL;
    size_t tlen = 0;
    cli_conn_t conn = {0};
    cp_error_t err = {0};
    cp_status st;
    uint64_t n = 0;
    if ((rc = expr_input(&a, &count_spec, &text, &tree, &tlen)) != CLI_OK)
        return rc;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &conn)) != CLI_OK)
        goto out;
    double t0 = progress_now();
    if (conn.http) {
        json_t *body = NULL;
        if ((rc = expr_body(&a, text, tree, tlen, &body)) != CLI_OK)
            goto out;
        st = client_call_json(conn.http, "POST", "/v1/crowds/estimate", body, &resp, &err);
        if (st == CP_OK) {
            json_t *j = json_loads(resp, 0, NULL);
            json_t *c = j ? json_object_get(j, "count") : NULL;
            if (!json_is_integer(c))
                st = CP_ERR(&err, CP_EIO, "server answer has no \"count\": %.200s", resp);
            else
                n = (uint64_t)json_integer_value(c);
            json_decref(j);
        }
    } else if (text) {
        st = cp_count_as_of(conn.db, text, cli_get(&a, "as-of"), &n, &err);
    } else {
        st = cp_count_json_as_of(conn.db, tree, tlen, cli_get(&a, "as-of"), &n, &err);
    }
    double secs = progress_now() - t0;
    if (st != CP_OK) {
        rc = cli_fail_expr(st, &err, text);
        goto out;
    }
    if (a.json)
        printf("{\"count\":%llu}\n", (unsigned long long)n);
    else
        printf("%llu\n", (unsigned long long)n);
    if (cli_has(&a, "time")) {
        char d[32];
        fprintf(stderr, "%s\n", cli_duration(secs, d));
    }
out:
    free(tree);
    free(resp);
    cli_conn_close(&conn);
    return rc;
}

/* --------------------------------------------------------------- eval */

static const cli_opt_t eval_opts[] = {
    {"tree", 0, OPT_VALUE, "FILE", "read the expression as a JSON tree from FILE (- = stdin)"},
    {"limit", 'n', OPT_VALUE, "N", "print at most N ids"},
    {"as-of", 0, OPT_VALUE, "DATE", "evaluate as of DATE (did() windows, WITHIN LAST end there)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t eval_spec = {
    "eval",
    "'EXPR'",
    "Print the ids of the users matching an expression, one per line.",
    "Examples:\n  crowdpack eval --data ./dmp -n 10 'tag:interest/travel AND gender = \"female\"'\n"
    "  crowdpack eval --server http://127.0.0.1:8080 'tag:interest/travel' > ids.txt",
    eval_opts,
    CONN_DATA | CONN_SERVER,
    0,
    1};

/* eval --server: POST /v1/eval in plain text, streamed to stdout. */
static int eval_write(void *ud, const char *buf, size_t len)
{
    CP_UNUSED(ud);
    return fwrite(buf, 1, len, stdout) == len ? 0 : -1;
}

static int eval_server(const cli_args_t *a, cli_conn_t *conn, const char *text, const char *tree,
                       size_t tlen, uint64_t limit)
{
    json_t *body = NULL;
    cp_error_t err = {0};
    int rc = expr_body(a, text, tree, tlen, &body);
    if (rc != CLI_OK)
        return rc;
    int bad = json_object_set_new(body, "format", json_string("text"));
    if (limit != UINT64_MAX)
        bad |= json_object_set_new(body, "limit", json_integer((json_int_t)limit));
    char *req = bad ? NULL : json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (req == NULL)
        return cli_failf("out of memory");
    cp_status st =
        client_stream(conn->http, "POST", "/v1/eval", req, strlen(req), eval_write, NULL, &err);
    free(req);
    return st == CP_OK ? CLI_OK : cli_fail_expr(st, &err, text);
}

int cmd_eval(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&eval_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t limit = UINT64_MAX;
    if (cli_get(&a, "limit") && cli_parse_u64(cli_get(&a, "limit"), &limit) != 0)
        return cli_usage_error(&eval_spec, "--limit: expected a number");
    const char *text;
    char *tree = NULL;
    size_t tlen = 0;
    cli_conn_t conn = {0};
    cp_result_t *r = NULL;
    cp_iter_t *it = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = expr_input(&a, &eval_spec, &text, &tree, &tlen)) != CLI_OK)
        return rc;
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &conn)) != CLI_OK)
        goto out;
    if (conn.http) {
        rc = eval_server(&a, &conn, text, tree, tlen, limit);
        goto out;
    }
    const char *as_of = cli_get(&a, "as-of");
    st = text ? cp_eval_as_of(conn.db, text, as_of, &r, &err)
              : cp_eval_json_as_of(conn.db, tree, tlen, as_of, &r, &err);
    if (st != CP_OK) {
        rc = cli_fail_expr(st, &err, text);
        goto out;
    }
    if ((st = cp_iter_open(conn.db, r, &it, &err)) != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    for (uint64_t i = 0; i < limit; i++) {
        const char *id = NULL;
        if ((st = cp_iter_next(it, &id, &err)) != CP_OK) {
            rc = cli_fail(st, &err);
            goto out;
        }
        if (!id)
            break;
        if (puts(id) == EOF)
            break; /* stdout closed; cli_finish_stdout decides */
    }
out:
    cp_iter_close(it);
    cp_result_free(r);
    free(tree);
    cli_conn_close(&conn);
    return rc;
}

/* -------------------------------------------------------------- stats */

static const cli_spec_t stats_spec = {"stats",
                                      "",
                                      "Show sizes and counters of a data directory.",
                                      "Examples:\n  crowdpack stats --data ./dmp --json\n"
                                      "  crowdpack stats --server http://127.0.0.1:8080",
                                      NULL,
                                      CONN_DATA | CONN_SERVER | CONN_JSON,
                                      0,
                                      0};

/* stats --server: GET /v1/stats into the same struct. */
static cp_status stats_server(cli_conn_t *conn, cp_db_stats_t *s)
{
    char *resp = NULL;
    cp_error_t err = {0};
    cp_status st = client_call(conn->http, "GET", "/v1/stats", NULL, NULL, 0, &resp, &err);
    if (st != CP_OK) {
        cli_fail(st, &err);
        return st;
    }
    json_t *j = json_loads(resp, 0, NULL);
    free(resp);
    const struct {
        const char *k;
        uint64_t *v;
    } f[] = {{"users", &s->users},
             {"ordinals", &s->ordinals},
             {"tags", &s->tags},
             {"attributes", &s->attributes},
             {"crowds", &s->crowds},
             {"bitmap_bytes", &s->bitmap_bytes},
             {"column_bytes", &s->column_bytes},
             {"disk_bytes", &s->disk_bytes},
             {"queries", &s->queries},
             {"writes", &s->writes},
             {"compact_pending", &s->compact_pending},
             {"compactions", &s->compactions}};
    for (size_t i = 0; i < CP_ARRAY_LEN(f); i++) {
        json_t *v = json_object_get(j, f[i].k);
        if (!json_is_integer(v)) {
            json_decref(j);
            cli_failf("the server's /v1/stats answer has no integer \"%s\"", f[i].k);
            return CP_EIO;
        }
        *f[i].v = (uint64_t)json_integer_value(v);
    }
    json_decref(j);
    return CP_OK;
}

int cmd_stats(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&stats_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    cli_conn_t conn = {0};
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &conn)) != CLI_OK)
        return rc;
    cp_db_stats_t s = CP_DB_STATS_INIT;
    cp_error_t err = {0};
    cp_status st = conn.http ? stats_server(&conn, &s) : cp_db_stats(conn.db, &s, &err);
    if (st != CP_OK) {
        rc = conn.http ? CLI_FAIL : cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        printf("{\"users\":%llu,\"ordinals\":%llu,\"tags\":%llu,\"attributes\":%llu,"
               "\"crowds\":%llu,\"bitmap_bytes\":%llu,\"column_bytes\":%llu,\"disk_bytes\":%llu,"
               "\"queries\":%llu,\"writes\":%llu,\"compact_pending\":%llu}\n",
               (unsigned long long)s.users, (unsigned long long)s.ordinals,
               (unsigned long long)s.tags, (unsigned long long)s.attributes,
               (unsigned long long)s.crowds, (unsigned long long)s.bitmap_bytes,
               (unsigned long long)s.column_bytes, (unsigned long long)s.disk_bytes,
               (unsigned long long)s.queries, (unsigned long long)s.writes,
               (unsigned long long)s.compact_pending);
        goto out;
    }
    cli_table_t *t = cli_table_new(2, NULL);
    char b[32], b2[32], line[96];
    const struct {
        const char *k;
        uint64_t v;
        int bytes;
    } rows[] = {
        {"users", s.users, 0},
        {"ordinals", s.ordinals, 0},
        {"tags", s.tags, 0},
        {"attributes", s.attributes, 0},
        {"crowds", s.crowds, 0},
        {"bitmap memory", s.bitmap_bytes, 1},
        {"column memory", s.column_bytes, 1},
        {"disk", s.disk_bytes, 1},
        {"deletions awaiting compaction", s.compact_pending, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (rows[i].bytes)
            snprintf(line, sizeof line, "%s (%s bytes)", cli_bytes((double)rows[i].v, b),
                     cli_group(rows[i].v, b2));
        else
            cli_group(rows[i].v, line);
        const char *row[] = {rows[i].k, line};
        cli_table_row(t, row);
    }
    if (s.users > 0) {
        snprintf(line, sizeof line, "%s",
                 cli_bytes((double)(s.bitmap_bytes + s.column_bytes) / (double)s.users * 1e6, b));
        const char *row[] = {"memory per 1M users", line};
        cli_table_row(t, row);
    }
    /* Print without the empty header row. */
    cli_table_print(t, stdout);
    cli_table_free(t);
out:
    cli_conn_close(&conn);
    return rc;
}

/* --------------------------------------------------------------- expr */

static const cli_spec_t expr_parse_spec = {
    "expr parse",
    "'EXPR'",
    "Parse an expression and print its JSON tree (names are not resolved).",
    "Example:\n  crowdpack expr parse 'tag:interest/travel AND NOT age < 18'",
    NULL,
    CONN_NONE,
    1,
    1};
static const cli_opt_t expr_format_opts[] = {
    {"tree", 0, OPT_VALUE, "FILE", "the JSON tree to format (- = stdin)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t expr_format_spec = {
    "expr format",
    "[JSON]",
    "Print the canonical text form of a JSON expression tree.",
    "Examples:\n  crowdpack expr format --tree expr.json\n"
    "  crowdpack expr format '{\"tag\":\"interest/travel\"}'",
    expr_format_opts,
    CONN_NONE,
    0,
    1};

static int expr_parse_cmd(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&expr_parse_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    char *json = NULL;
    cp_error_t err = {0};
    cp_status st = cp_expr_to_json(a.pos[0], &json, &err);
    if (st != CP_OK)
        return cli_fail_expr(st, &err, a.pos[0]);
    cli_print_json(json);
    cp_free(json);
    return CLI_OK;
}

static int expr_format_cmd(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&expr_format_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *tf = cli_get(&a, "tree");
    char *buf = NULL, *text = NULL;
    size_t len = 0;
    if (tf && a.npos)
        return cli_usage_error(&expr_format_spec, "give either JSON or --tree FILE, not both");
    if (!tf && !a.npos)
        return cli_usage_error(&expr_format_spec, "missing the JSON tree (or --tree FILE)");
    if (tf && (rc = cli_read_file(tf, CP_EXPR_MAX_LEN * 16, &buf, &len)) != CLI_OK)
        return rc;
    const char *json = tf ? buf : a.pos[0];
    if (!tf)
        len = strlen(json);
    cp_error_t err = {0};
    cp_status st = cp_expr_from_json(json, len, &text, &err);
    if (st != CP_OK)
        rc = cli_fail(st, &err);
    else
        puts(text);
    cp_free(text);
    free(buf);
    return rc;
}

static const cli_sub_t expr_subs[] = {
    {"parse", expr_parse_cmd, &expr_parse_spec},
    {"format", expr_format_cmd, &expr_format_spec},
    {NULL, NULL, NULL},
};

int cmd_expr(int argc, char **argv)
{
    return cli_dispatch("expr", "Convert crowd expressions between their text and JSON forms.",
                        expr_subs, argc, argv);
}
