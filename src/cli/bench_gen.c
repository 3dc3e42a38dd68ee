/*
 * bench_gen.c — the synthetic events of `crowdpack bench --intake`: one
 * generator for the CSV and NDJSON files the imports read and for the
 * bodies the HTTP load threads post (bench_http.c), so every part of the
 * benchmark measures the same events.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench_intake_int.h"
#include "cli/cli.h"
#include "util/util.h"

#define BASE_DAY_SECS INT64_C(1711929600) /* 2024-04-01T00:00:00Z */

static const char *const ev_names[NNAMES] = {
    "view",  "page_view", "click",    "search",    "add_to_cart",      "favorite",     "share",
    "like",  "comment",   "purchase", "checkout",  "remove_from_cart", "coupon_claim", "coupon_use",
    "login", "signup",    "review",   "subscribe", "refund",           "logout",
};

void bench_gen_next(uint64_t *rng, uint64_t users, gen_event_t *e)
{
    double x = rand_double(rng), y = rand_double(rng), z = rand_double(rng);
    e->user = (uint64_t)(x * x * (double)users);
    if (e->user >= users)
        e->user = users - 1;
    e->name = (int)(y * y * y * NNAMES);
    e->cat = (int)(z * z * NCATS);
    uint64_t r = rand_next(rng);
    e->cents = (uint32_t)(r % 50000u) + 1u;
    e->ts = BASE_DAY_SECS + (int64_t)((r >> 20) % (uint64_t)(DAYS * 86400));
}

/* The Segment track event of `e`, without the enclosing braces' context. */
cp_status bench_gen_segment(buf_t *b, const gen_event_t *e, const char *msg_prefix, uint64_t seq)
{
    char ts[40];
    time_format(e->ts, ts, sizeof ts);
    return buf_printf(b,
                      "{\"type\":\"track\",\"userId\":\"u%llu\",\"event\":\"%s\",\"messageId\":"
                      "\"%s%llu\",\"timestamp\":\"%s\",\"properties\":{\"category\":\"c%03d\","
                      "\"amount\":%u.%02u}}",
                      (unsigned long long)(e->user + 1), ev_names[e->name], msg_prefix,
                      (unsigned long long)seq, ts, e->cat, e->cents / 100, e->cents % 100);
}

const char bench_synth_mapping[] =
    "{\"name\":\"bench-synthetic\",\"header\":true,"
    "\"identifiers\":[{\"column\":\"user_id\",\"type\":\"user_id\"}],"
    "\"event\":{\"name\":{\"column\":\"event\"},"
    "\"timestamp\":{\"column\":\"ts\",\"format\":\"iso8601\"},"
    "\"properties\":[{\"column\":\"category\",\"name\":\"category\"},"
    "{\"column\":\"amount\",\"name\":\"amount\",\"type\":\"number\"}]},"
    "\"indexed_properties\":[\"category\"]}";

/*
 * Writes the same N events as CSV (for the mapping above) and as NDJSON
 * Segment track events (messageIds "m<line>"). *distinct = users that
 * appear. Returns CLI_OK or CLI_FAIL (printed).
 */
int bench_gen_files(const char *csv_path, const char *nd_path, uint64_t n, uint64_t users,
                    uint64_t seed, uint64_t *distinct)
{
    int rc = CLI_OK;
    FILE *fc = fopen(csv_path, "w"), *fn = fopen(nd_path, "w");
    uint64_t *seen = calloc((size_t)(users / 64 + 1), sizeof *seen);
    buf_t b;
    buf_init(&b, 0);
    if (!fc || !fn) {
        rc = cli_failf("cannot write %s: %s", !fc ? csv_path : nd_path, strerror(errno));
        goto out;
    }
    if (!seen) {
        rc = cli_failf("out of memory");
        goto out;
    }
    uint64_t rng = seed;
    *distinct = 0;
    fputs("user_id,event,category,amount,ts\n", fc);
    for (uint64_t i = 0; i < n; i++) {
        gen_event_t e;
        bench_gen_next(&rng, users, &e);
        if (!(seen[e.user / 64] >> (e.user % 64) & 1)) {
            seen[e.user / 64] |= UINT64_C(1) << (e.user % 64);
            (*distinct)++;
        }
        char ts[40];
        time_format(e.ts, ts, sizeof ts);
        fprintf(fc, "u%llu,%s,c%03d,%u.%02u,%s\n", (unsigned long long)(e.user + 1),
                ev_names[e.name], e.cat, e.cents / 100, e.cents % 100, ts);
        buf_reset(&b);
        if (bench_gen_segment(&b, &e, "m", i + 1) != CP_OK) {
            rc = cli_failf("out of memory");
            goto out;
        }
        fwrite(b.data, 1, b.len, fn);
        fputc('\n', fn);
    }
    if (ferror(fc) || ferror(fn))
        rc = cli_failf("cannot write the synthetic files: %s", strerror(errno));
out:
    if (fc && fclose(fc) != 0 && rc == CLI_OK)
        rc = cli_failf("cannot write %s: %s", csv_path, strerror(errno));
    if (fn && fclose(fn) != 0 && rc == CLI_OK)
        rc = cli_failf("cannot write %s: %s", nd_path, strerror(errno));
    buf_free(&b);
    free(seen);
    return rc;
}
