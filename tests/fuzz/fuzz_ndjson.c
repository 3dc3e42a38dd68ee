/*
 * fuzz_ndjson.c — arbitrary bytes into cp_load_ndjson_buf on a data
 * directory set up once (schema of every type, a small tag tree) and
 * recreated every few thousand inputs so it stays small. The first byte
 * picks strict or streaming mode and the batch size. Checks: no crash, no
 * leak (ASan), the handle never enters the failed state, and a strict load
 * that fails changes no count.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crowdpack.h"

static cp_db_t *g_db;
static char g_dir[128];
static unsigned g_inputs;

static void setup(void)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/cp-fuzz-ndjson-%ld", base, (long)getpid());
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        abort();
    cp_open_options_t o = {.size = sizeof(cp_open_options_t),
                           .flags = CP_OPEN_CREATE,
                           .map_size = 1u << 30,
                           .threads = 1};
    cp_error_t err = {0};
    if (cp_db_open(g_dir, &o, &g_db, &err) != CP_OK) {
        fprintf(stderr, "fuzz_ndjson: %s\n", err.message);
        abort();
    }
    const char *schema =
        "{\"attributes\":[{\"name\":\"age\",\"type\":\"int\"},"
        "{\"name\":\"g\",\"type\":\"enum\"},{\"name\":\"s\",\"type\":\"string\"},"
        "{\"name\":\"b\",\"type\":\"bool\"},{\"name\":\"t\",\"type\":\"timestamp\"},"
        "{\"name\":\"loc\",\"type\":\"geo\"}]}";
    const char *tags = "{\"tags\":[{\"path\":\"a/b/c\"},{\"path\":\"a/d\"},{\"path\":\"x\"}]}";
    if (cp_schema_load_json(g_db, schema, strlen(schema), &err) != CP_OK ||
        cp_taxonomy_load_json(g_db, tags, strlen(tags), &err) != CP_OK ||
        cp_crowd_create(g_db, "dyn", "tag:a AND age > 3", CP_CROWD_DYNAMIC, NULL, &err) != CP_OK) {
        fprintf(stderr, "fuzz_ndjson: %s\n", err.message);
        abort();
    }
}

static void on_reject(void *ud, const cp_error_t *e)
{
    (void)ud;
    if (e->record == 0 || e->message[0] == '\0')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_db == NULL || ++g_inputs % 4096 == 0) {
        cp_db_close(g_db, NULL);
        g_db = NULL;
        setup();
    }
    unsigned mode = size ? data[0] : 0;
    cp_load_options_t o = {.size = sizeof(cp_load_options_t),
                           .flags = (mode & 1) ? CP_LOAD_STRICT : 0,
                           .on_reject = on_reject,
                           .batch_lines = 1 + (mode >> 1) % 8};
    uint64_t before = 0, after = 0;
    cp_error_t err = {0};
    if (cp_count(g_db, "all OR tag:a", &before, &err) != CP_OK)
        abort();
    cp_load_stats_t st = CP_LOAD_STATS_INIT;
    cp_status rc = cp_load_ndjson_buf(g_db, (const char *)data + (size ? 1 : 0),
                                      size ? size - 1 : 0, &o, &st, &err);
    if (rc == CP_EIO || rc == CP_EINTERNAL) {
        fprintf(stderr, "fuzz_ndjson: unexpected %d: %s\n", rc, err.message);
        abort();
    }
    if (cp_count(g_db, "all OR tag:a", &after, &err) != CP_OK)
        abort();
    if ((mode & 1) && rc != CP_OK && after != before)
        abort(); /* a failed strict load must apply nothing */
    return 0;
}
