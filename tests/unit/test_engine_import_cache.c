/* test_engine_import_cache.c — bulk imports take shortcuts the per-event
 * path does not (apply.c / deferred.c): identifier keys and their ordinals
 * cached per raw value, catalog notes by position, trait and value memos.
 * Property test: random CSV files imported with cp_import_file must leave
 * the same users, identities, merges, attributes, traits, behaviour and
 * catalog as the same rows sent one by one with cp_ingest_segment — across
 * batch boundaries, merges inside a batch, merges / unmerges / deletions
 * between imports, and an identity config change between imports (phone
 * numbers re-normalised with another default country). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cp_test.h"
#include <jansson.h>

#include "crowdpack.h"

#define NUIDS 120
#define NEMAILS NUIDS
#define NPHONES NUIDS

static const char *const countries[] = {"FR", "DE", "CN", "United Kingdom"};
static const char *const tiers[] = {"gold", "silver", "bronze"};
static const char *const evnames[] = {"purchase", "view", "refund"};

static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void ok(cp_status rc, const cp_error_t *err)
{
    if (rc)
        fail_msg("%s: %s", cp_strerror(rc), err->message);
}

static cp_db_t *open_db(const char *dir)
{
    return test_open_db(dir, &(cp_open_options_t){.size = sizeof(cp_open_options_t),
                                                  .flags = CP_OPEN_CREATE,
                                                  .map_size = 1ull << 28,
                                                  .threads = 1});
}

static const char mapping[] =
    "{\"name\":\"t\",\"delimiter\":\",\",\"header\":true,"
    "\"identifiers\":[{\"column\":\"uid\",\"type\":\"user_id\"},"
    "{\"column\":\"email\",\"type\":\"email\"},{\"column\":\"phone\",\"type\":\"phone\"}],"
    "\"traits\":[{\"column\":\"country\",\"name\":\"country\",\"type\":\"string\"},"
    "{\"column\":\"tier\",\"name\":\"tier\",\"type\":\"string\"}],"
    "\"event\":{\"name\":{\"column\":\"ev\"},\"timestamp\":{\"column\":\"ts\",\"format\":"
    "\"epoch\"},\"properties\":[{\"column\":\"sku\",\"name\":\"sku\"},"
    "{\"column\":\"qty\",\"name\":\"qty\",\"type\":\"int\"}]},"
    "\"attributes\":[{\"name\":\"country\",\"type\":\"string\"}],"
    "\"indexed_properties\":[\"sku\"]}";

typedef struct row {
    int uid, email, phone, country, tier, ev, sku, qty;
    long ts;
} row_t;

/* Rows favour runs of the same customer (an invoice's lines), as real
 * order files do, and now and then bring an email or phone of another
 * customer along (a merge). */
static void gen_rows(row_t *r, size_t n)
{
    int cur = (int)rnd(NUIDS);
    for (size_t i = 0; i < n; i++) {
        if (rnd(4) == 0)
            cur = (int)rnd(NUIDS);
        r[i].uid = cur;
        r[i].email = rnd(3) == 0 ? (rnd(60) == 0 ? (int)rnd(NEMAILS) : cur) : -1;
        r[i].phone = rnd(4) == 0 ? (rnd(60) == 0 ? (int)rnd(NPHONES) : cur) : -1;
        r[i].country = rnd(10) == 0 ? -1 : (cur + (rnd(30) == 0)) % 4;
        r[i].tier = rnd(3) == 0 ? -1 : (int)rnd(3);
        r[i].ev = (int)rnd(3);
        r[i].sku = (int)rnd(50);
        r[i].qty = (int)rnd(9) - 2;
        r[i].ts = 1600000000L + (long)rnd(90) * 86400 + (long)rnd(86400);
    }
}

static void email_of(int k, char *b, size_t cap)
{
    snprintf(b, cap, "%sUser%d@Example.com", k % 2 ? " " : "", k); /* normalised: trimmed, lower */
}

static void phone_of(int k, char *b, size_t cap)
{
    snprintf(b, cap, "13%09d", 800000000 + k); /* national: the default country applies */
}

static void write_csv(const char *path, const row_t *r, size_t n)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "uid,email,phone,country,tier,ev,ts,sku,qty\n");
    char e[64], p[64];
    for (size_t i = 0; i < n; i++) {
        email_of(r[i].email, e, sizeof e);
        phone_of(r[i].phone, p, sizeof p);
        fprintf(f, "u%d,%s,%s,%s,%s,%s,%ld,S%d,%d\n", r[i].uid, r[i].email >= 0 ? e : "",
                r[i].phone >= 0 ? p : "", r[i].country >= 0 ? countries[r[i].country] : "",
                r[i].tier >= 0 ? tiers[r[i].tier] : "", evnames[r[i].ev], r[i].ts, r[i].sku,
                r[i].qty);
    }
    fclose(f);
}

static void send_rows(cp_db_t *db, const row_t *r, size_t n, size_t base)
{
    char e[64], p[64], ts[40], uid[16], mid[32], sku[16];
    for (size_t i = 0; i < n; i++) {
        email_of(r[i].email, e, sizeof e);
        phone_of(r[i].phone, p, sizeof p);
        time_t t = (time_t)r[i].ts;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(uid, sizeof uid, "u%d", r[i].uid);
        snprintf(mid, sizeof mid, "m%zu", base + i);
        snprintf(sku, sizeof sku, "S%d", r[i].sku);
        json_t *ct = json_object();
        if (r[i].email >= 0)
            json_object_set_new(ct, "email", json_string(e));
        if (r[i].phone >= 0)
            json_object_set_new(ct, "phone", json_string(p));
        if (r[i].country >= 0)
            json_object_set_new(ct, "country", json_string(countries[r[i].country]));
        if (r[i].tier >= 0)
            json_object_set_new(ct, "tier", json_string(tiers[r[i].tier]));
        json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:{s:s,s:i},s:{s:o}}", "userId", uid, "event",
                              evnames[r[i].ev], "timestamp", ts, "messageId", mid, "properties",
                              "sku", sku, "qty", r[i].qty, "context", "traits", ct);
        char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(j);
        cp_ingest_result_t res = CP_INGEST_RESULT_INIT;
        cp_error_t err = {0};
        cp_status rc = cp_ingest_segment(db, CP_EVENT_TRACK, s, strlen(s), &res, &err);
        if (rc)
            fail_msg("ingest %s: %s %s", s, err.message, res.errors_json ? res.errors_json : "");
        cp_ingest_result_clear(&res);
        free(s);
    }
}

static void import_rows(cp_db_t *db, const char *path, uint64_t batch)
{
    cp_import_options_t o = {.size = sizeof(cp_import_options_t),
                             .format = CP_IMPORT_CSV,
                             .mapping_json = mapping,
                             .mapping_len = strlen(mapping),
                             .batch_lines = batch};
    cp_import_stats_t st = CP_IMPORT_STATS_INIT;
    cp_error_t err = {0};
    ok(cp_import_file(db, path, &o, &st, &err), &err);
    assert_int_equal(st.rejected, 0);
}

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A whois without what legitimately differs between the two paths: the
 * salted hashes (each data directory has its own salt) and the lineage's
 * time, messageId and source. */
static char *whois(cp_db_t *db, const char *type, const char *value)
{
    char *out = NULL;
    cp_error_t err = {0};
    cp_status rc = cp_whois_json(db, type, value, &out, &err);
    if (rc == CP_ENOTFOUND)
        return strdup("(none)");
    ok(rc, &err);
    json_t *j = json_loads(out, 0, NULL);
    cp_free(out);
    assert_non_null(j);
    size_t i;
    json_t *x;
    /* identifiers come sorted by key: hashed ones in salt order */
    json_t *ids = json_object_get(j, "identifiers");
    char **txt = calloc(json_array_size(ids) + 1, sizeof *txt);
    json_array_foreach(ids, i, x)
    {
        if (json_object_get(x, "hash"))
            json_object_set_new(x, "hash", json_string("#"));
        txt[i] = json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS);
    }
    qsort(txt, json_array_size(ids), sizeof *txt, cmpstr);
    json_t *sorted = json_array();
    for (i = 0; i < json_array_size(ids); i++) {
        json_array_append_new(sorted, json_string(txt[i]));
        free(txt[i]);
    }
    free(txt);
    json_object_set_new(j, "identifiers", sorted);
    json_array_foreach(json_object_get(j, "lineage"), i, x)
    {
        json_object_del(x, "time");
        json_object_del(x, "message_id");
        json_object_del(x, "source");
        json_object_del(x, "undone");
        size_t k;
        json_t *key;
        json_array_foreach(json_object_get(x, "identifiers"), k, key)
        {
            const char *h = strstr(json_string_value(key), ":#");
            if (h)
                json_array_set_new(
                    json_object_get(x, "identifiers"), k,
                    json_stringn(json_string_value(key), (size_t)(h - json_string_value(key)) + 2));
        }
    }
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

/* A user's attributes (country, first_seen, last_seen) as text, or
 * "(none)" for an id that is not a user's (deleted). */
static char *user_attrs(cp_db_t *db, const char *id)
{
    char *out = NULL;
    cp_error_t err = {0};
    cp_status rc = cp_user_json(db, id, &out, &err);
    if (rc == CP_ENOTFOUND)
        return strdup("(none)");
    ok(rc, &err);
    json_t *j = json_loads(out, 0, NULL);
    cp_free(out);
    assert_non_null(j);
    char *s = json_dumps(json_object_get(j, "attrs"), JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

static void compare_catalog(cp_db_t *a, cp_db_t *b, const char *when);

static void compare(cp_db_t *a, cp_db_t *b, const char *when)
{
    char v[64];
    for (int k = 0; k < NUIDS; k++) {
        snprintf(v, sizeof v, "u%d", k);
        char *x = user_attrs(a, v), *y = user_attrs(b, v);
        if (strcmp(x, y))
            fail_msg("%s: attributes of %s differ:\nimport:  %s\nsegment: %s", when, v, x, y);
        free(x);
        free(y);
    }
    for (int k = 0; k < NUIDS + NEMAILS + NPHONES; k++) {
        const char *type = k < NUIDS ? "user_id" : k < NUIDS + NEMAILS ? "email" : "phone";
        if (k < NUIDS)
            snprintf(v, sizeof v, "u%d", k);
        else if (k < NUIDS + NEMAILS)
            email_of(k - NUIDS, v, sizeof v);
        else
            phone_of(k - NUIDS - NEMAILS, v, sizeof v);
        char *x = whois(a, type, v), *y = whois(b, type, v);
        if (strcmp(x, y) && getenv("CP_TEST_DUMP")) {
            FILE *f = fopen("/tmp/cp-test-impcache.diff", "w");
            fprintf(f, "%s\n%s\n", x, y);
            fclose(f);
        }
        if (strcmp(x, y))
            fail_msg("%s: whois %s %s differs:\nimport:  %s\nsegment: %s", when, type, v, x, y);
        free(x);
        free(y);
    }
    static const char *const exprs[] = {
        "did(purchase, last 3650d) >= 2", "did(view, sku = \"S7\", last 3650d) >= 1",
        "did(refund, last 3650d) >= 3", "country = \"FR\"", "country = \"United Kingdom\""};
    for (size_t i = 0; i < sizeof exprs / sizeof *exprs; i++) {
        uint64_t na = 0, nb = 0;
        cp_error_t err = {0};
        ok(cp_count(a, exprs[i], &na, &err), &err);
        ok(cp_count(b, exprs[i], &nb, &err), &err);
        if (na != nb)
            fail_msg("%s: count %s: import %llu, segment %llu", when, exprs[i],
                     (unsigned long long)na, (unsigned long long)nb);
    }
    compare_catalog(a, b, when);
    cp_db_stats_t sa = CP_DB_STATS_INIT, sb = CP_DB_STATS_INIT;
    assert_int_equal(cp_db_stats(a, &sa, NULL), CP_OK);
    assert_int_equal(cp_db_stats(b, &sb, NULL), CP_OK);
    assert_int_equal(sa.users, sb.users);
}

/* The catalog views: properties (counts, examples, indexed) and events. */
static void compare_catalog(cp_db_t *a, cp_db_t *b, const char *when)
{
    char *pa = NULL, *pb = NULL;
    cp_error_t err = {0};
    ok(cp_properties_json(a, &pa, &err), &err);
    ok(cp_properties_json(b, &pb, &err), &err);
    json_t *ja = json_loads(pa, 0, NULL), *jb = json_loads(pb, 0, NULL);
    if (!json_equal(ja, jb))
        fail_msg("%s: catalog differs:\nimport:  %s\nsegment: %s", when, pa, pb);
    json_decref(ja);
    json_decref(jb);
    cp_free(pa);
    cp_free(pb);
    ok(cp_events_json(a, &pa, &err), &err);
    ok(cp_events_json(b, &pb, &err), &err);
    ja = json_loads(pa, 0, NULL);
    jb = json_loads(pb, 0, NULL);
    if (!json_equal(ja, jb))
        fail_msg("%s: events differ:\nimport:  %s\nsegment: %s", when, pa, pb);
    json_decref(ja);
    json_decref(jb);
    cp_free(pa);
    cp_free(pb);
}

/* The same change through both handles. */
static void both_send(cp_db_t *a, cp_db_t *b, const char *json)
{
    cp_db_t *dbs[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        cp_ingest_result_t res = CP_INGEST_RESULT_INIT;
        cp_error_t err = {0};
        cp_status rc = cp_ingest_segment(dbs[i], CP_EVENT_TRACK, json, strlen(json), &res, &err);
        if (rc)
            fail_msg("ingest %s: %s", json, err.message);
        cp_ingest_result_clear(&res);
    }
}

static uint64_t last_merge_id(cp_db_t *db, const char *uid)
{
    char *out = NULL;
    cp_error_t err = {0};
    ok(cp_whois_json(db, "user_id", uid, &out, &err), &err);
    json_t *j = json_loads(out, 0, NULL);
    cp_free(out);
    json_t *l = json_object_get(j, "lineage");
    uint64_t id = 0;
    size_t i;
    json_t *x;
    json_array_foreach(l, i, x) if (!json_object_get(x, "undone")) id =
        (uint64_t)json_integer_value(json_object_get(x, "merge_id"));
    json_decref(j);
    return id;
}

static void run(uint64_t seed)
{
    char da[256], db_[256], fdir[256], f1[300], f2[300];
    test_tmpdir(da, sizeof da, "impcache-a");
    test_tmpdir(db_, sizeof db_, "impcache-b");
    test_tmpdir(fdir, sizeof fdir, "impcache-files");
    snprintf(f1, sizeof f1, "%s/1.csv", fdir);
    snprintf(f2, sizeof f2, "%s/2.csv", fdir);
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    cp_db_t *a = open_db(da), *b = open_db(db_);
    cp_error_t err = {0};
    /* b gets the mapping's declarations by hand */
    const char *cfg = "{\"indexed_properties\":[\"sku\"]}";
    ok(cp_intake_config_set_json(b, cfg, strlen(cfg), &err), &err);
    ok(cp_attr_define(b, "country", CP_ATTR_STRING, &err), &err);

    size_t n1 = 1500 + rnd(500), n2 = 800 + rnd(400);
    row_t *r1 = calloc(n1, sizeof *r1), *r2 = calloc(n2, sizeof *r2);
    gen_rows(r1, n1);
    gen_rows(r2, n2);
    write_csv(f1, r1, n1);
    write_csv(f2, r2, n2);
    uint64_t batch = 50 + rnd(300);

    import_rows(a, f1, batch);
    send_rows(b, r1, n1, 0);
    compare(a, b, "after the first import");

    /* Between imports: a merge, an unmerge, a deletion, a config change. */
    both_send(a, b,
              "{\"userId\":\"u1\",\"event\":\"view\",\"timestamp\":\"2020-10-01T00:00:00Z\","
              "\"context\":{\"traits\":{\"email\":\"user7@example.com\"}}}");
    uint64_t ma = last_merge_id(a, "u1"), mb = last_merge_id(b, "u1");
    assert_int_equal(ma, mb);
    if (ma && rnd(2)) {
        ok(cp_unmerge(a, ma, NULL, &err), &err);
        ok(cp_unmerge(b, mb, NULL, &err), &err);
    }
    cp_status ra = cp_user_delete_by_identifier(a, "user_id", "u5", &err);
    cp_status rb = cp_user_delete_by_identifier(b, "user_id", "u5", &err);
    assert_int_equal(ra, rb);
    if (rnd(2)) {
        const char *cc = "{\"identity\":{\"default_country\":\"44\"}}";
        ok(cp_intake_config_set_json(a, cc, strlen(cc), &err), &err);
        ok(cp_intake_config_set_json(b, cc, strlen(cc), &err), &err);
    }
    compare(a, b, "between the imports");

    import_rows(a, f2, batch / 2 + 1);
    send_rows(b, r2, n2, n1);
    compare(a, b, "after the second import");

    cp_db_close(a, NULL);
    cp_db_close(b, NULL);
    free(r1);
    free(r2);
    test_rmtree(da);
    test_rmtree(db_);
    test_rmtree(fdir);
}

static void test_import_matches_per_event(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 4; seed++)
        run(seed);
}

/* Events with more properties than the catalog keeps positions for (64)
 * and than one catalog call takes (acc_catalog_props, 64 at a time), the
 * indexed one past both, in varying order: an NDJSON import (the memo
 * path) against the same events sent one by one. */
static void test_many_properties(void **state)
{
    (void)state;
    char da[256], db_[256], fdir[256], f[300];
    test_tmpdir(da, sizeof da, "impcache-pa");
    test_tmpdir(db_, sizeof db_, "impcache-pb");
    test_tmpdir(fdir, sizeof fdir, "impcache-files");
    snprintf(f, sizeof f, "%s/p.ndjson", fdir);
    cp_db_t *a = open_db(da), *b = open_db(db_);
    cp_error_t err = {0};
    const char *cfg = "{\"indexed_properties\":[\"p66\",\"p3\"]}";
    ok(cp_intake_config_set_json(a, cfg, strlen(cfg), &err), &err);
    ok(cp_intake_config_set_json(b, cfg, strlen(cfg), &err), &err);
    FILE *out = fopen(f, "w");
    assert_non_null(out);
    rng_state = 77;
    unsigned want[2] = {0, 0}; /* users (bits) with p66 = "v1", with p3 = "v2" */
    for (int ev = 0; ev < 40; ev++) {
        json_t *props = json_object();
        int np = 60 + (int)rnd(20), rev = ev % 3 == 0;
        unsigned u = rnd(6);
        for (int k = 0; k < np; k++) {
            int q = rev ? np - 1 - k : k;
            char name[16], val[16];
            unsigned x = rnd(4);
            snprintf(name, sizeof name, "p%d", q);
            snprintf(val, sizeof val, "v%u", x);
            int str = rnd(5) != 0;
            json_object_set_new(props, name, str ? json_string(val) : json_integer(q));
            if (str && ((q == 66 && x == 1) || (q == 3 && x == 2)))
                want[q == 3] |= 1u << u;
        }
        char uid[16], mid[16];
        snprintf(uid, sizeof uid, "u%u", u);
        snprintf(mid, sizeof mid, "m%d", ev);
        json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:o}", "type", "track", "userId", uid, "event",
                              "view", "messageId", mid, "properties", props);
        json_object_set_new(j, "timestamp", json_string("2020-10-01T10:00:00Z"));
        char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(j);
        fprintf(out, "%s\n", s);
        both_send(b, b, s); /* b twice: the second is a duplicate messageId */
        free(s);
    }
    fclose(out);
    cp_import_options_t o = {
        .size = sizeof(cp_import_options_t), .format = CP_IMPORT_NDJSON, .batch_lines = 7};
    cp_import_stats_t st = CP_IMPORT_STATS_INIT;
    ok(cp_import_file(a, f, &o, &st, &err), &err);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.events, 40);
    compare_catalog(a, b, "many properties");
    static const char *const exprs[] = {"did(view, p66 = \"v1\", last 3650d) >= 1",
                                        "did(view, p3 = \"v2\", last 3650d) >= 1",
                                        "did(view, p66 = 66, last 3650d) >= 1"};
    for (size_t i = 0; i < sizeof exprs / sizeof *exprs; i++) {
        uint64_t na = 0, nb = 0;
        ok(cp_count(a, exprs[i], &na, &err), &err);
        ok(cp_count(b, exprs[i], &nb, &err), &err);
        assert_int_equal(na, nb);
        if (i < 2) /* against the naive count */
            assert_int_equal(na, (uint64_t)__builtin_popcount(want[i]));
    }
    cp_db_close(a, NULL);
    cp_db_close(b, NULL);
    test_rmtree(da);
    test_rmtree(db_);
    test_rmtree(fdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_matches_per_event),
        cmocka_unit_test(test_many_properties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
