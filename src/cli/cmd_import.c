/*
 * cmd_import.c — `crowdpack import`: event files into a data directory
 * (NDJSON Segment events, CSV with a mapping or a preset; plain or gzip),
 * with a progress bar, a rejects side file and a summary. Resumable: a
 * rerun of an interrupted import continues after the last committed batch.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/progress.h"

static const cli_opt_t import_opts[] = {
    {"preset", 0, OPT_VALUE, "NAME", "a built-in CSV mapping: online-retail"},
    {"mapping", 0, OPT_VALUE, "M.json", "a CSV column mapping (docs/intake.md)"},
    {"events", 0, OPT_FLAG, NULL, "the file holds NDJSON Segment events (the default)"},
    {"rejects", 0, OPT_VALUE, "FILE", "write rejected lines (line number and reason) here"},
    {"batch", 0, OPT_VALUE, "N", "rows per committed batch (default 50000)"},
    {"restart", 0, OPT_FLAG, NULL, "ignore what was imported before: import the file from the start"},
    {"dedup-rows", 0, OPT_FLAG, NULL,
     "give rows without a message id one from their content, deduplicated in the dedup window"},
    {"final", 0, OPT_FLAG, NULL, "the file is complete: import a last line without a line break"},
    {"quiet", 'q', OPT_FLAG, NULL, "no progress bar"},
    {NULL, 0, 0, NULL, NULL},
};

static const cli_spec_t import_spec = {
    "import", "FILE",
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
    import_opts, CONN_DATA | CONN_JSON, 1, 1};

typedef struct import_ctx {
    progress_t bar;
    FILE *rejects;
    uint64_t nrejects;
} import_ctx_t;

static void on_reject(void *ud, const cp_error_t *err)
{
    import_ctx_t *c = ud;
    c->nrejects++;
    if (c->rejects)
        fprintf(c->rejects, "%llu\t%s\n", (unsigned long long)err->record, err->message);
}

static void on_progress(void *ud, uint64_t bytes, uint64_t lines)
{
    import_ctx_t *c = ud;
    progress_update(&c->bar, bytes, lines);
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
    cp_import_options_t o = {0};
    o.format = (preset || mpath) ? CP_IMPORT_CSV : CP_IMPORT_NDJSON;
    o.preset = preset;
    char *mapping = NULL;
    size_t mlen = 0;
    if (mpath && (rc = cli_read_file(mpath, 1u << 20, &mapping, &mlen)) != CLI_OK)
        return rc;
    o.mapping_json = mapping;
    o.mapping_len = mlen;
    if (cli_has(&a, "restart"))
        o.flags |= CP_IMPORT_RESTART;
    if (cli_has(&a, "final"))
        o.flags |= CP_IMPORT_FINAL;
    if (cli_has(&a, "dedup-rows"))
        o.flags |= CP_IMPORT_DEDUP_ROWS;
    if (cli_get(&a, "batch") && (cli_parse_u64(cli_get(&a, "batch"), &o.batch_lines) ||
                                 o.batch_lines == 0)) {
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
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 0, &c)) != CLI_OK) {
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
    cp_import_stats_t st;
    cp_error_t err = {0};
    cp_status s = cp_import_file(c.db, path, &o, &st, &err);
    double secs = progress_elapsed(&ctx.bar);
    progress_finish(&ctx.bar);
    if (ctx.rejects)
        fclose(ctx.rejects);
    if (s != CP_OK) {
        rc = cli_fail(s, &err);
        if (st.events)
            fprintf(stderr, "crowdpack: %llu events were committed before the failure; run the "
                            "same command again to resume\n",
                    (unsigned long long)st.events);
        goto out;
    }
    if (a.json) {
        json_t *j = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:f}", "file", path,
                              "lines", (json_int_t)st.lines, "events", (json_int_t)st.events,
                              "skipped", (json_int_t)st.skipped, "rejected",
                              (json_int_t)st.rejected, "duplicates", (json_int_t)st.duplicates,
                              "users_created", (json_int_t)st.users_created, "merges",
                              (json_int_t)st.merges, "resumed_at_line",
                              (json_int_t)st.resumed_at_line, "resumed_at_byte",
                              (json_int_t)st.resumed_at_offset, "held_back_bytes",
                              (json_int_t)st.held_back, "already_done", st.already_done,
                              "seconds", secs);
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
        printf("  new users %s, merges %s, skipped %s, duplicates %s, rejected %s%s%s\n",
               cli_group(st.users_created, b1), cli_group(st.merges, b2),
               cli_group(st.skipped, b3), cli_group(st.duplicates, b4),
               cli_group(st.rejected, b5), rpath && st.rejected ? " (see " : "",
               rpath && st.rejected ? rpath : "");
        if (rpath && st.rejected)
            printf(")\n");
        else
            printf("\n");
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
