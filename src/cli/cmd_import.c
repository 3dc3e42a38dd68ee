/*
 * cmd_import.c — `crowdpack import`: event files into a data directory
 * (NDJSON Segment events, CSV with a mapping or a preset; plain or gzip),
 * with a progress bar, a rejects side file and a summary. Resumable: a
 * rerun of an interrupted import continues after the last committed batch.
 */
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "ingest/csv.h"
#include "ingest/mapping.h"

static const cli_opt_t import_opts[] = {
    {"preset", 0, OPT_VALUE, "NAME", "a built-in CSV mapping: online-retail"},
    {"mapping", 0, OPT_VALUE, "M.json", "a CSV column mapping (docs/intake.md)"},
    {"events", 0, OPT_FLAG, NULL, "the file holds NDJSON Segment events (the default)"},
    {"rejects", 0, OPT_VALUE, "FILE", "write rejected lines (line number and reason) here"},
    {"batch", 0, OPT_VALUE, "N", "rows per committed batch (default 50000)"},
    {"restart", 0, OPT_FLAG, NULL,
     "ignore what was imported before: import the file from the start"},
    {"dedup-rows", 0, OPT_FLAG, NULL,
     "give rows without a message id one from their content, deduplicated in the dedup window"},
    {"final", 0, OPT_FLAG, NULL, "the file is complete: import a last line without a line break"},
    {"quiet", 'q', OPT_FLAG, NULL, "no progress bar"},
    {NULL, 0, 0, NULL, NULL},
};

static const cli_spec_t import_spec = {
    "import",
    "FILE",
    "Import events from a file (plain or .gz): NDJSON Segment events, or CSV through a column "
    "mapping or a preset.",
    "Examples:\n"
    "  crowdpack import --data ./dmp --preset online-retail online_retail.csv.gz\n"
    "  crowdpack import --data ./dmp --mapping orders.json --rejects bad.txt orders.csv\n"
    "  crowdpack import --data ./dmp --events events.ndjson.gz\n"
    "Files are recognised by content: run again on a file that grew, only the new rows are\n"
    "imported; a renamed, moved or gzipped copy of an imported file imports nothing; an\n"
    "interrupted import resumes where it stopped (use --restart to import from the start).\n"
    "A last line without a line break (a file still being written) waits for the next run\n"
    "unless --final.",
    import_opts,
    CONN_DATA | CONN_SERVER | CONN_JSON,
    1,
    1};

#define IMPORT_SHOW_REJECTS 5 /* reasons printed when there is no --rejects file */

typedef struct import_ctx {
    progress_t bar;
    FILE *rejects;
    uint64_t nrejects;
    /* The first few rejects, so that a rejected line always says why. */
    uint64_t first_line[IMPORT_SHOW_REJECTS];
    char first_msg[IMPORT_SHOW_REJECTS][200];
} import_ctx_t;

static void on_reject(void *ud, const cp_error_t *err)
{
    import_ctx_t *c = ud;
    if (c->nrejects < IMPORT_SHOW_REJECTS) {
        c->first_line[c->nrejects] = err->record;
        snprintf(c->first_msg[c->nrejects], sizeof c->first_msg[0], "%.199s", err->message);
    }
    c->nrejects++;
    if (c->rejects)
        fprintf(c->rejects, "%llu\t%s\n", (unsigned long long)err->record, err->message);
}

/* On stderr: how many lines were rejected and, without a --rejects file,
 * the reasons of the first few. */
static void report_rejects(const import_ctx_t *c, const char *rpath)
{
    if (c->nrejects == 0)
        return;
    char b[32];
    if (rpath) {
        fprintf(stderr, "crowdpack: %s line%s rejected (reasons in %s)\n",
                cli_group(c->nrejects, b), c->nrejects == 1 ? "" : "s", rpath);
        return;
    }
    fprintf(stderr, "crowdpack: %s line%s rejected%s:\n", cli_group(c->nrejects, b),
            c->nrejects == 1 ? "" : "s", c->nrejects > IMPORT_SHOW_REJECTS ? "; the first" : "");
    for (uint64_t i = 0; i < c->nrejects && i < IMPORT_SHOW_REJECTS; i++) {
        /* Messages of the readers already start with "line N: ". */
        if (strncmp(c->first_msg[i], "line ", 5) == 0)
            fprintf(stderr, "  %s\n", c->first_msg[i]);
        else
            fprintf(stderr, "  line %llu: %s\n", (unsigned long long)c->first_line[i],
                    c->first_msg[i]);
    }
    if (c->nrejects > IMPORT_SHOW_REJECTS)
        fprintf(stderr, "  ... (--rejects FILE writes every rejected line with its reason)\n");
}

static void on_progress(void *ud, uint64_t bytes, uint64_t lines)
{
    import_ctx_t *c = ud;
    progress_update(&c->bar, bytes, lines);
}

/* ------------------------------------------------------------ --server */

/*
 * Over HTTP the file is streamed as POST /v1/batch requests of at most
 * SEND_BYTES (the server takes 500 KB) or SEND_EVENTS events: CSV rows are
 * turned into Segment events here by the same mapping code the embedded
 * import uses. The server applies a batch's valid events and lists the
 * rejected ones, counted here with their lines and reasons; a batch it
 * refuses whole (nothing valid, or an older server) is sent again one
 * event at a time. Reruns are deduplicated by the events'
 * message ids within the server's dedup window (CSV rows: file name and
 * line); content recognition (resume, copies) is for embedded imports.
 */
#define SEND_BYTES (400u * 1024)
#define SEND_EVENTS 2000u
#define LINE_MAX_BYTES (1u << 20)

typedef struct sender {
    cli_client_t *http;
    char *body; /* {"batch":[ e, e, ... */
    size_t len, cap, n;
    uint64_t line[SEND_EVENTS]; /* input line of each event gathered */
    cp_import_stats_t *st;
    import_ctx_t *ctx;
} sender_t;

/* Posts one batch whose events came from lines[0..events). The server
 * applies the valid events and lists the others under "rejected" (index
 * and reason): those count as rejected lines, with their reasons. */
static cp_status send_body(sender_t *s, const char *body, size_t len, uint64_t events,
                           const uint64_t *lines, cp_error_t *err)
{
    char *resp = NULL;
    cp_status st =
        client_call(s->http, "POST", "/v1/batch", "application/json", body, len, &resp, err);
    if (st == CP_OK) {
        json_t *j = json_loads(resp ? resp : "{}", 0, NULL);
        json_int_t ap = json_integer_value(json_object_get(j, "applied"));
        s->st->events += (uint64_t)ap;
        s->st->duplicates += (uint64_t)json_integer_value(json_object_get(j, "duplicates"));
        if (json_object_get(j, "applied") == NULL)
            s->st->events += events;
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(j, "rejected"), i, r)
        {
            json_int_t at = json_integer_value(json_object_get(r, "index"));
            const char *why = json_string_value(json_object_get(r, "reason"));
            cp_error_t e = {0};
            e.record = at >= 0 && (uint64_t)at < events ? lines[at] : 0;
            snprintf(e.message, sizeof e.message, "line %llu: %s", (unsigned long long)e.record,
                     why ? why : "rejected by the server");
            s->st->rejected++;
            on_reject(s->ctx, &e);
        }
        json_decref(j);
    }
    free(resp);
    return st;
}

/* Sends what is gathered; a refused batch goes again event by event. */
static cp_status send_flush(sender_t *s, cp_error_t *err)
{
    if (s->n == 0)
        return CP_OK;
    s->body[s->len] = ']';
    s->body[s->len + 1] = '}';
    cp_status st = send_body(s, s->body, s->len + 2, s->n, s->line, err);
    if (st == CP_EINVAL || st == CP_ETYPE || st == CP_ELIMIT || st == CP_ENOTFOUND) {
        /* one by one: the events are the elements of the array */
        json_t *j = json_loadb(s->body, s->len + 2, 0, NULL);
        size_t i;
        json_t *e;
        st = CP_OK;
        json_array_foreach(json_object_get(j, "batch"), i, e)
        {
            json_t *one = json_pack("{s:[O]}", "batch", e);
            char *txt = one ? json_dumps(one, JSON_COMPACT) : NULL;
            json_decref(one);
            cp_error_t e1 = {0};
            cp_status s1 = txt ? send_body(s, txt, strlen(txt), 1, &s->line[i], &e1) : CP_ENOMEM;
            free(txt);
            if (s1 == CP_EINVAL || s1 == CP_ETYPE || s1 == CP_ELIMIT || s1 == CP_ENOTFOUND) {
                e1.record = s->line[i];
                s->st->rejected++;
                on_reject(s->ctx, &e1);
            } else if (s1) {
                st = s1;
                if (err)
                    *err = e1;
                break;
            }
        }
        json_decref(j);
    }
    s->len = strlen("{\"batch\":[");
    s->n = 0;
    return st;
}

/* Adds one event (compact JSON text) to the batch, sending first if full. */
static cp_status send_add(sender_t *s, const char *ev, size_t len, uint64_t line, cp_error_t *err)
{
    cp_status st;
    if (s->n && (s->len + len + 3 > SEND_BYTES || s->n >= SEND_EVENTS) && (st = send_flush(s, err)))
        return st;
    if (s->len + len + 3 > s->cap) {
        size_t nc = s->len + len + 3 + SEND_BYTES;
        char *b = realloc(s->body, nc);
        if (b == NULL)
            return CP_ENOMEM;
        s->body = b;
        s->cap = nc;
    }
    if (s->n)
        s->body[s->len++] = ',';
    memcpy(s->body + s->len, ev, len);
    s->len += len;
    s->line[s->n++] = line;
    return CP_OK;
}

static cp_status send_ndjson(sender_t *s, const char *path, cp_error_t *err)
{
    gzFile g = gzopen(path, "rb");
    if (g == NULL)
        return CP_ENOTFOUND;
    char *line = malloc(LINE_MAX_BYTES + 2);
    cp_status st = line ? CP_OK : CP_ENOMEM;
    uint64_t no = 0;
    while (st == CP_OK && gzgets(g, line, LINE_MAX_BYTES + 2)) {
        size_t n = strlen(line);
        no++;
        s->st->lines++;
        int whole = n && line[n - 1] == '\n';
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (!whole && !gzeof(g)) { /* longer than the bound: skip the rest of it */
            int c;
            while ((c = gzgetc(g)) >= 0 && c != '\n') {
            }
            cp_error_t e = {0};
            snprintf(e.message, sizeof e.message, "line %llu: longer than %u bytes",
                     (unsigned long long)no, LINE_MAX_BYTES);
            e.record = no;
            s->st->rejected++;
            on_reject(s->ctx, &e);
            continue;
        }
        if (n == 0)
            continue;
        json_error_t je;
        json_t *j = json_loadb(line, n, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(j)) {
            cp_error_t e = {0};
            snprintf(e.message, sizeof e.message, "line %llu: %s", (unsigned long long)no,
                     j ? "not a JSON object" : je.text);
            e.record = no;
            s->st->rejected++;
            on_reject(s->ctx, &e);
            json_decref(j);
            continue;
        }
        json_decref(j);
        st = send_add(s, line, n, no, err);
        if (s->ctx->bar.total)
            progress_update(&s->ctx->bar, (uint64_t)gzoffset(g), s->st->lines);
    }
    free(line);
    gzclose(g);
    return st == CP_OK ? send_flush(s, err) : st;
}

static cp_status send_csv(sender_t *s, const char *path, const cp_import_options_t *o,
                          cp_error_t *err)
{
    mapping_t *m = NULL;
    csv_reader_t *r = NULL;
    cp_status st = o->mapping_json ? mapping_parse(o->mapping_json, o->mapping_len, &m, err)
                                   : mapping_preset(o->preset, &m, err);
    if (st)
        return st;
    if (m->ntags) {
        /* Rows go to the server as Segment events, which carry no tags. */
        st = CP_ERR(err, CP_EINVAL,
                    "a mapping with \"tags\" imports only with --data (a "
                    "local import), not --server");
        goto out;
    }
    csv_opts_t co = {.delim = m->delim};
    if ((st = csv_open(path, &co, &r, err)))
        goto out;
    const csv_field_t *f;
    size_t n;
    if (m->header) {
        if ((st = csv_next(r, &f, &n, err)))
            goto out;
        if (f == NULL) {
            st = CP_EINVAL;
            snprintf(err->message, sizeof err->message, "%s is empty (no header)", path);
            goto out;
        }
    }
    if ((st = mapping_bind(m, m->header ? f : NULL, m->header ? n : 0, err)))
        goto out;
    const char *base = strrchr(path, '/');
    char prefix[96];
    snprintf(prefix, sizeof prefix, "import:%.80s", base ? base + 1 : path);
    for (;;) {
        cp_error_t e = {0};
        cp_status rs = csv_next(r, &f, &n, &e);
        if (rs == CP_EIO || rs == CP_ENOMEM) {
            *err = e;
            st = rs;
            break;
        }
        if (rs == CP_OK && f == NULL)
            break;
        s->st->lines++;
        if (rs == CP_OK && n == 1 && f[0].len == 0)
            continue;
        json_t *doc = NULL;
        map_result res = MAP_EVENT;
        if (rs == CP_OK)
            rs = mapping_row(m, f, n, csv_line(r), prefix, &doc, &res, &e);
        if (rs) {
            s->st->rejected++;
            e.record = csv_line(r);
            on_reject(s->ctx, &e);
            continue;
        }
        if (res == MAP_SKIP) {
            s->st->skipped++;
            continue;
        }
        char *txt = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        st = txt ? send_add(s, txt, strlen(txt), csv_line(r), err) : CP_ENOMEM;
        free(txt);
        if (st)
            break;
        if (s->ctx->bar.total)
            progress_update(&s->ctx->bar, csv_raw_offset(r), s->st->lines);
    }
    if (st == CP_OK)
        st = send_flush(s, err);
out:
    csv_close(r);
    mapping_free(m);
    return st;
}

static cp_status import_server(cli_client_t *http, const char *path, const cp_import_options_t *o,
                               import_ctx_t *ctx, cp_import_stats_t *stats, cp_error_t *err)
{
    sender_t s = {.http = http, .st = stats, .ctx = ctx};
    memset(stats, 0, sizeof *stats);
    s.cap = SEND_BYTES + 64;
    if ((s.body = malloc(s.cap)) == NULL)
        return CP_ENOMEM;
    s.len = (size_t)sprintf(s.body, "{\"batch\":[");
    cp_status st =
        o->format == CP_IMPORT_CSV ? send_csv(&s, path, o, err) : send_ndjson(&s, path, err);
    if (st == CP_ENOTFOUND && err && !err->message[0])
        snprintf(err->message, sizeof err->message, "cannot open %s", path);
    free(s.body);
    return st;
}

int cmd_import(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&import_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *preset = cli_get(&a, "preset"), *mpath = cli_get(&a, "mapping");
    if (preset && mpath)
        return cli_usage_error(&import_spec, "--preset and --mapping exclude each other");
    if ((preset || mpath) && cli_has(&a, "events"))
        return cli_usage_error(&import_spec, "--events is for NDJSON files, not CSV mappings");
    cp_import_options_t o = CP_IMPORT_OPTIONS_INIT;
    o.format = (preset || mpath) ? CP_IMPORT_CSV : CP_IMPORT_NDJSON;
    o.preset = preset;
    char *mapping = NULL;
    size_t mlen = 0;
    if (mpath && (rc = cli_read_file(mpath, 1u << 20, &mapping, &mlen)) != CLI_OK)
        return rc;
    if (mapping) {
        /* tags[].dictionary_file: read relative to the mapping's directory. */
        char *dir = strdup(mpath), *resolved = NULL;
        size_t rlen = 0;
        cp_error_t e = {0};
        cp_status rs =
            dir ? mapping_resolve_files(mapping, mlen, dirname(dir), &resolved, &rlen, &e)
                : CP_ERR(&e, CP_ENOMEM, "out of memory");
        free(dir);
        if (rs) {
            free(mapping);
            return cli_fail(rs, &e);
        }
        if (resolved) {
            free(mapping);
            mapping = resolved;
            mlen = rlen;
        }
    }
    o.mapping_json = mapping;
    o.mapping_len = mlen;
    if (cli_has(&a, "restart"))
        o.flags |= CP_IMPORT_RESTART;
    if (cli_has(&a, "final"))
        o.flags |= CP_IMPORT_FINAL;
    if (cli_has(&a, "dedup-rows"))
        o.flags |= CP_IMPORT_DEDUP_ROWS;
    if (cli_get(&a, "batch") &&
        (cli_parse_u64(cli_get(&a, "batch"), &o.batch_lines) || o.batch_lines == 0)) {
        free(mapping);
        return cli_usage_error(&import_spec, "--batch needs a positive number");
    }
    import_ctx_t ctx = {0};
    const char *rpath = cli_get(&a, "rejects");
    if (rpath && (ctx.rejects = fopen(rpath, "w")) == NULL) {
        free(mapping);
        return cli_failf("cannot write %s", rpath);
    }
    o.on_reject = on_reject;
    o.on_progress = on_progress;
    o.ud = &ctx;
    cli_conn_t c = {0};
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK) {
        free(mapping);
        if (ctx.rejects)
            fclose(ctx.rejects);
        return rc;
    }
    const char *path = a.pos[0];
    FILE *f = fopen(path, "rb");
    uint64_t total = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        total = n > 0 ? (uint64_t)n : 0;
        fclose(f);
    }
    progress_start(&ctx.bar, "importing", PROGRESS_BYTES, total, cli_has(&a, "quiet") ? 0 : -1);
    ctx.bar.item = "lines";
    cp_import_stats_t st = CP_IMPORT_STATS_INIT;
    cp_error_t err = {0};
    cp_status s = c.http ? import_server(c.http, path, &o, &ctx, &st, &err)
                         : cp_import_file(c.db, path, &o, &st, &err);
    double secs = progress_elapsed(&ctx.bar);
    progress_finish(&ctx.bar);
    if (ctx.rejects)
        fclose(ctx.rejects);
    report_rejects(&ctx, rpath);
    if (s != CP_OK) {
        rc = cli_fail(s, &err);
        if (st.events)
            fprintf(stderr,
                    "crowdpack: %llu events were committed before the failure; run the "
                    "same command again to resume\n",
                    (unsigned long long)st.events);
        goto out;
    }
    if (a.json) {
        json_t *j = json_pack(
            "{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:f}", "file", path, "lines",
            (json_int_t)st.lines, "events", (json_int_t)st.events, "skipped",
            (json_int_t)st.skipped, "rejected", (json_int_t)st.rejected, "duplicates",
            (json_int_t)st.duplicates, "users_created", (json_int_t)st.users_created, "merges",
            (json_int_t)st.merges, "resumed_at_line", (json_int_t)st.resumed_at_line,
            "resumed_at_byte", (json_int_t)st.resumed_at_offset, "held_back_bytes",
            (json_int_t)st.held_back, "already_done", st.already_done, "seconds", secs);
        if (j &&
            (json_object_set_new(j, "tags_assigned", json_integer((json_int_t)st.tags_assigned)) ||
             json_object_set_new(j, "tags_unknown", json_integer((json_int_t)st.tags_unknown)))) {
            json_decref(j);
            j = NULL;
        }
        cli_emit_json(j);
    } else if (st.already_done) {
        printf("%s: its content was imported completely before (%s lines); nothing to do "
               "(--restart imports it again)\n",
               path, cli_group(st.resumed_at_line, (char[32]){0}));
    } else {
        char b1[32], b2[32], b3[32], b4[32], b5[32], d[32];
        if (st.resumed_at_line)
            printf("the first %s lines were imported before: resumed after them\n",
                   cli_group(st.resumed_at_line, b1));
        printf("imported %s events from %s lines in %s (%s events/s)\n", cli_group(st.events, b1),
               cli_group(st.lines, b2), cli_duration(secs, d),
               cli_group(secs > 0 ? (uint64_t)((double)st.events / secs) : st.events, b3));
        printf("  new users %s, merges %s, skipped %s, duplicates %s, rejected %s%s%s",
               cli_group(st.users_created, b1), cli_group(st.merges, b2), cli_group(st.skipped, b3),
               cli_group(st.duplicates, b4), cli_group(st.rejected, b5),
               rpath && st.rejected ? " (see " : "", rpath && st.rejected ? rpath : "");
        if (rpath && st.rejected)
            printf(")\n");
        else
            printf("\n");
        if (st.tags_assigned || st.tags_unknown)
            printf("  tags assigned %s, unknown tag ids %s (not in the dictionary or the "
                   "taxonomy; skipped)\n",
                   cli_group(st.tags_assigned, b1), cli_group(st.tags_unknown, b2));
        if (st.held_back)
            printf("  the last line (%s bytes) has no line break yet: held back until it is "
                   "complete (--final imports it now)\n",
                   cli_group(st.held_back, b1));
    }
out:
    free(mapping);
    cli_conn_close(&c);
    return rc;
}
