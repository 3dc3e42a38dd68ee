/*
 * quickstart.c — crowdpack's public C API in one page.
 *
 *   cc quickstart.c $(pkg-config --cflags --libs crowdpack) -o quickstart
 *   ./quickstart /tmp/qs
 *
 * (README.md, "Building, installing, embedding": after `make install`, or
 * against a build tree with PKG_CONFIG_PATH=build.)
 *
 * Creates a fresh data directory under the directory given as argv[1],
 * declares a schema, creates tags, loads six users from NDJSON in memory,
 * counts and evaluates expressions, lists the ids of a result, saves a
 * crowd, and closes. Every count is checked against the value it must
 * have, so the program is also a test: it exits 1 on any difference.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crowdpack.h"

static int failures;

/* Prints a failed call's status and message, and exits. */
static void check(cp_status st, const cp_error_t *err, const char *what)
{
    if (st == CP_OK)
        return;
    fprintf(stderr, "quickstart: %s: %s (%s)\n", what, err->message, cp_strerror(st));
    exit(1);
}

static void expect_count(cp_db_t *db, const char *expr, uint64_t want)
{
    cp_error_t err = {0};
    uint64_t n = 0;
    check(cp_count(db, expr, &n, &err), &err, expr);
    printf("%-62s %llu\n", expr, (unsigned long long)n);
    if (n != want) {
        fprintf(stderr, "quickstart: count(%s) = %llu, expected %llu\n", expr,
                (unsigned long long)n, (unsigned long long)want);
        failures++;
    }
}

static const char schema[] = "{\"attributes\":[{\"name\":\"age\",\"type\":\"int\"},"
                             "{\"name\":\"gender\",\"type\":\"enum\"},"
                             "{\"name\":\"loc\",\"type\":\"geo\"}]}";

/* Six users: Guangzhou (23.13, 113.26) and Foshan (23.02, 113.12) are about
 * 19 km apart; Beijing and Shanghai are far from both. */
static const char users[] =
    "{\"id\":\"u1\",\"attrs\":{\"age\":28,\"gender\":\"female\",\"loc\":[23.13,113.26]},"
    "\"tags\":[\"interest/finance/consulting\"]}\n"
    "{\"id\":\"u2\",\"attrs\":{\"age\":35,\"gender\":\"male\",\"loc\":[23.02,113.12]},"
    "\"tags\":[\"interest/finance/insurance\",\"interest/travel\"]}\n"
    "{\"id\":\"u3\",\"attrs\":{\"age\":45,\"gender\":\"female\",\"loc\":[39.90,116.40]},"
    "\"tags\":[\"interest/travel\"]}\n"
    "{\"id\":\"u4\",\"attrs\":{\"age\":22,\"gender\":\"female\",\"loc\":[31.23,121.47]},"
    "\"tags\":[\"interest/finance/consulting\",\"interest/travel\"]}\n"
    "{\"id\":\"u5\",\"attrs\":{\"age\":31,\"gender\":\"male\"},\"tags\":[]}\n"
    "{\"id\":\"u6\",\"attrs\":{\"age\":39,\"gender\":\"female\",\"loc\":[23.12,113.30]},"
    "\"tags\":[\"interest/finance\"]}\n";

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR  (creates a fresh data directory inside DIR)\n", argv[0]);
        return 2;
    }
    /* A fresh directory every run, so reruns never see old data. */
    char dir[4096];
    mkdir(argv[1], 0755);
    snprintf(dir, sizeof dir, "%s/qs-%ld-%ld", argv[1], (long)getpid(), (long)time(NULL));

    cp_error_t err = {0};
    cp_db_t *db = NULL;
    /* Option and stats structs carry their size: start from their _INIT. */
    cp_open_options_t opts = CP_OPEN_OPTIONS_INIT;
    opts.flags = CP_OPEN_CREATE;
    check(cp_db_open(dir, &opts, &db, &err), &err, "open");
    printf("crowdpack %s, data directory %s (format %u)\n", cp_libversion(), dir,
           cp_format_version());

    /* Schema and tags. A tag's members include its descendants' members. */
    check(cp_schema_load_json(db, schema, sizeof schema - 1, &err), &err, "schema");
    check(cp_tag_create(db, "interest/finance/consulting", "融资咨询", NULL, &err), &err, "tag");
    check(cp_tag_create(db, "interest/finance/insurance", "保险", NULL, &err), &err, "tag");
    check(cp_tag_create(db, "interest/travel", "旅游", "trips and hotels", &err), &err, "tag");

    /* Load users; a bad line would be reported through on_reject. */
    cp_load_stats_t ls = CP_LOAD_STATS_INIT;
    check(cp_load_ndjson_buf(db, users, sizeof users - 1, NULL, &ls, &err), &err, "load");
    printf("loaded %llu users, %llu tag assignments, %llu rejected\n",
           (unsigned long long)ls.users_created, (unsigned long long)ls.tags_assigned,
           (unsigned long long)ls.rejected);
    if (ls.users_created != 6 || ls.rejected != 0)
        failures++;

    /* Counts, checked against what the six users above must give. */
    expect_count(db, "all", 6);
    expect_count(db, "tag:interest/finance", 4);                            /* u1 u2 u4 u6 */
    expect_count(db, "tag:interest/finance AND tag:interest/travel", 2);    /* u2 u4 */
    expect_count(db, "age BETWEEN 25 AND 40", 4);                           /* u1 u2 u5 u6 */
    expect_count(db, "gender = \"female\" AND NOT tag:interest/travel", 2); /* u1 u6 */
    expect_count(db, "near(23.13, 113.26, 30km)", 3);                       /* u1 u2 u6 */
    expect_count(db, "tag:interest/finance AND age BETWEEN 25 AND 40 AND near(23.13, 113.26, 30km)",
                 3);

    /* Evaluate to a result and iterate its ids (in ordinal order). */
    const char *q = "tag:interest/travel OR age < 25";
    cp_result_t *r = NULL;
    cp_iter_t *it = NULL;
    check(cp_eval(db, q, &r, &err), &err, q);
    check(cp_iter_open(db, r, &it, &err), &err, "iterate");
    printf("%s:", q);
    char got[64] = "";
    for (;;) {
        const char *id = NULL;
        check(cp_iter_next(it, &id, &err), &err, "iterate");
        if (!id)
            break;
        printf(" %s", id);
        strncat(got, id, sizeof got - strlen(got) - 2);
        strcat(got, " ");
    }
    printf("\n");
    if (cp_result_count(r) != 3 || strcmp(got, "u2 u3 u4 ") != 0) {
        fprintf(stderr, "quickstart: expected u2 u3 u4, got %s(count %llu)\n", got,
                (unsigned long long)cp_result_count(r));
        failures++;
    }
    cp_iter_close(it);
    cp_result_free(r);

    /* An unknown tag is an error with its position, not an empty set. */
    uint64_t n = 0;
    cp_status st = cp_count(db, "tag:interest/travel AND tag:nope", &n, &err);
    printf("unknown tag -> %s: %s (line %d, column %d)\n", cp_strerror(st), err.message, err.line,
           err.column);
    if (st != CP_ENOTFOUND || err.column != 25)
        failures++;

    /* A crowd (audience pack): a named, materialised expression. */
    check(cp_crowd_create(db, "young_finance", "tag:interest/finance AND age < 30", CP_CROWD_STATIC,
                          "finance fans under 30", &err),
          &err, "crowd");
    expect_count(db, "crowd:young_finance", 2); /* u1 u4 */
    char *json = NULL;
    check(cp_crowd_json(db, "young_finance", &json, &err), &err, "crowd json");
    printf("crowd: %s\n", json);
    cp_free(json);

    /* Every iterator is closed: the close succeeds (with one open it would
     * be CP_ECONFLICT, closing nothing). */
    check(cp_db_close(db, &err), &err, "close");

    /* Reopen: everything is durable. */
    check(cp_db_open(dir, NULL, &db, &err), &err, "reopen");
    expect_count(db, "crowd:young_finance OR tag:interest/travel", 4); /* u1 u4 u2 u3 */
    check(cp_db_close(db, &err), &err, "close");

    if (failures) {
        fprintf(stderr, "quickstart: %d check(s) failed\n", failures);
        return 1;
    }
    printf("quickstart: all checks passed\n");
    return 0;
}
