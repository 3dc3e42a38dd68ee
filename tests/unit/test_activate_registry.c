/* test_activate_registry.c — the campaigns of DIR/activate/: versions and
 * history kept across reopen, deletes, names checked against the data,
 * snapshots read by threads while campaigns change, a damaged log refused
 * naming the file, an unfinished append dropped, and a full disk that
 * changes nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "activate/campaign.h"
#include "cp_test.h"
#include "util/util.h"

static const char EXAMPLE[] =
    "{\"id\":\"spring-sale\",\"advertiser\":\"acme\",\"budget\":{\"total\":100000,\"daily\":5000,"
    "\"currency\":\"CNY\"},\"schedule\":{\"start\":\"2026-12-01\",\"end\":\"2026-12-31\","
    "\"timezone\":\"Asia/Shanghai\"},\"pacing\":\"even\",\"lines\":[{\"id\":\"retarget\","
    "\"billing\":\"cpm\",\"bid\":%s,\"targeting\":\"tag:interest/finance AND age BETWEEN 25 AND "
    "40\",\"premiums\":[{\"crowd\":\"high_value\",\"pct\":50}],\"caps\":[{\"count\":3,\"per\":"
    "\"day\"}],\"creatives\":[{\"id\":\"c1\",\"w\":300,\"h\":250,\"adomain\":[\"acme.com\"],"
    "\"adm\":\"<a href=\\\"${CLICK_URL}\\\"><img src=\\\"https://cdn.acme.com/c1.png\\\"></a>\"}]}"
    "]}";

/* A small campaign `id` with `nlines` lines and markup of `adm` bytes. */
static char *small_doc(const char *id, int nlines, size_t adm)
{
    buf_t b;
    buf_init(&b, 0);
    char *markup = malloc(adm + 1);
    memset(markup, 'x', adm);
    markup[adm] = '\0';
    buf_printf(&b,
               "{\"id\":\"%s\",\"advertiser\":\"a\",\"schedule\":{\"start\":\"2026-01-01\"},"
               "\"lines\":[",
               id);
    for (int i = 0; i < nlines; i++)
        buf_printf(&b,
                   "%s{\"id\":\"l%d\",\"bid\":1,\"creatives\":[{\"id\":\"c\",\"w\":1,\"h\":1,"
                   "\"adomain\":[\"a.com\"],\"adm\":\"%s\"}]}",
                   i ? "," : "", i, markup);
    buf_append(&b, "]}", 2);
    free(markup);
    buf_cstr(&b);
    return b.data;
}

static char *example(const char *bid)
{
    char *s = malloc(sizeof EXAMPLE + 32);
    sprintf(s, EXAMPLE, bid);
    return s;
}

typedef struct world {
    char tmp[512];
    char data[600];
    char act[640];
    cp_db_t *db;
} world_t;

static int setup(void **state)
{
    world_t *w = calloc(1, sizeof *w);
    test_tmpdir(w->tmp, sizeof w->tmp, "registry");
    snprintf(w->data, sizeof w->data, "%s/data", w->tmp);
    snprintf(w->act, sizeof w->act, "%s/activate", w->data);
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = CP_OPEN_CREATE;
    w->db = test_open_db(w->data, &o);
    cp_error_t err = {0};
    if (cp_attr_define(w->db, "age", CP_ATTR_INT, &err) != CP_OK ||
        cp_tag_create(w->db, "interest", NULL, NULL, &err) != CP_OK ||
        cp_tag_create(w->db, "interest/finance", NULL, NULL, &err) != CP_OK ||
        cp_crowd_create(w->db, "high_value", "age >= 30", CP_CROWD_STATIC, NULL, &err) != CP_OK)
        fail_msg("setup: %s", err.message);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world_t *w = *state;
    cp_db_close(w->db, NULL);
    test_rmtree(w->tmp);
    free(w);
    return 0;
}

static registry_t *open_reg(const char *dir)
{
    registry_t *r = NULL;
    cp_error_t err = {0};
    if (registry_open(dir, &r, &err) != CP_OK)
        fail_msg("registry_open %s: %s", dir, err.message);
    return r;
}

static uint64_t put(registry_t *r, cp_db_t *db, const char *id, const char *doc, int64_t now)
{
    uint64_t v = 0;
    cp_error_t err = {0};
    if (registry_put(r, db, id, doc, strlen(doc), now, &v, &err) != CP_OK)
        fail_msg("registry_put %s: %s", id ? id : "", err.message);
    return v;
}

static char *get(registry_t *r, const char *id)
{
    char *out = NULL;
    cp_error_t err = {0};
    if (registry_get_json(r, id, &out, &err) != CP_OK)
        fail_msg("registry_get_json %s: %s", id, err.message);
    return out;
}

static char *history(registry_t *r, const char *id)
{
    char *out = NULL;
    cp_error_t err = {0};
    if (registry_history_json(r, id, &out, &err) != CP_OK)
        fail_msg("registry_history_json %s: %s", id, err.message);
    return out;
}

/* noinline: gcc 12 -O3 takes the strstr chain for a dangling pointer
 * once inlined next to history()'s out-parameter (a false positive). */
__attribute__((noinline)) static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_versions_history_reopen(void **state)
{
    world_t *w = *state;
    registry_t *r = open_reg(w->act);
    struct stat sb;
    assert_int_equal(stat(w->act, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    act_snapshot_t *s0 = registry_snapshot(r);
    assert_int_equal(s0->ncampaigns, 0);
    assert_int_equal(s0->version, 0);

    const int64_t t1 = 1796054400000LL;
    char *doc = example("8.00");
    assert_int_equal(put(r, w->db, "spring-sale", doc, t1), 1);
    free(doc);
    char *g = get(r, "spring-sale");
    assert_non_null(strstr(g, "\"version\":1,\"updated\":\"2026-11-30T16:00:00Z\""));
    assert_non_null(strstr(g, "\"bid\":8.00,"));
    free(g);
    doc = example("9.50");
    assert_int_equal(put(r, w->db, NULL, doc, t1 + 1000), 2);
    free(doc);
    doc = small_doc("aaa", 3, 10);
    assert_int_equal(put(r, w->db, "aaa", doc, t1 + 2000), 1);

    /* The snapshot: campaigns by id, lines flat, indexes and owners set. */
    act_snapshot_t *s = registry_snapshot(r);
    assert_int_equal(s->version, 3);
    assert_int_equal(s->ncampaigns, 2);
    assert_string_equal(s->campaigns[0]->id, "aaa");
    assert_string_equal(s->campaigns[1]->id, "spring-sale");
    assert_int_equal(s->campaigns[1]->version, 2);
    assert_int_equal(s->campaigns[1]->updated_ms, t1 + 1000);
    assert_int_equal(s->nlines, 4);
    for (size_t i = 0; i < s->ncampaigns; i++)
        assert_int_equal(s->campaigns[i]->index, i);
    for (size_t i = 0; i < s->nlines; i++) {
        assert_int_equal(s->lines[i]->index, i);
        assert_ptr_equal(s->lines[i]->campaign, s->campaigns[i < 3 ? 0 : 1]);
    }
    assert_int_equal(s->lines[3]->bid_fen, 950);
    /* The old snapshot is still whole. */
    assert_int_equal(s0->ncampaigns, 0);
    snapshot_release(s0);

    cp_error_t err = {0};
    assert_int_equal(registry_delete(r, "aaa", t1 + 3000, &err), CP_OK);
    assert_int_equal(registry_delete(r, "aaa", t1 + 3000, &err), CP_ENOTFOUND);
    assert_int_equal(registry_delete(r, "nope", t1 + 3000, &err), CP_ENOTFOUND);
    char *out = NULL;
    assert_int_equal(registry_get_json(r, "aaa", &out, &err), CP_ENOTFOUND);
    assert_string_equal(err.message, "campaign \"aaa\" not found");
    assert_int_equal(registry_history_json(r, "zzz", &out, &err), CP_ENOTFOUND);
    char *h = history(r, "aaa");
    assert_int_equal(count(h, "\"deleted\":true,\"campaign\":null"), 1);
    assert_int_equal(count(h, "\"version\":"), 3); /* 1 and its document's, 2 */
    free(h);
    /* A put after a delete continues the versions. */
    assert_int_equal(put(r, w->db, "aaa", doc, t1 + 4000), 3);
    free(doc);
    act_snapshot_t *s2 = registry_snapshot(r);
    assert_int_equal(s2->version, 5);
    assert_int_equal(s2->ncampaigns, 2);
    snapshot_release(s2);

    h = history(r, "spring-sale");
    assert_non_null(strstr(h, "{\"id\":\"spring-sale\",\"versions\":[{\"version\":1,"));
    assert_int_equal(count(h, "\"bid\":8.00"), 1);
    assert_int_equal(count(h, "\"bid\":9.50"), 1);
    assert_int_equal(count(h, "\"deleted\":false"), 2);
    char *list = NULL;
    assert_int_equal(registry_list_json(r, &list, &err), CP_OK);
    assert_non_null(strstr(list, "{\"version\":5,\"campaigns\":[{\"id\":\"aaa\""));
    assert_int_equal(count(list, "\"advertiser\""), 2);
    char *g1 = get(r, "spring-sale"), *g2 = get(r, "aaa");
    registry_close(r);
    /* The snapshot taken before close stays valid. */
    assert_string_equal(s->campaigns[1]->lines[0].id, "retarget");
    snapshot_release(s);

    r = open_reg(w->act);
    char *g1b = get(r, "spring-sale"), *g2b = get(r, "aaa"), *hb = history(r, "spring-sale");
    char *listb = NULL;
    assert_int_equal(registry_list_json(r, &listb, &err), CP_OK);
    assert_string_equal(g1, g1b);
    assert_string_equal(g2, g2b);
    assert_string_equal(h, hb);
    assert_string_equal(list, listb);
    s = registry_snapshot(r);
    assert_int_equal(s->version, 5);
    assert_int_equal(s->nlines, 4);
    snapshot_release(s);
    doc = example("8.00");
    assert_int_equal(put(r, w->db, "spring-sale", doc, 0), 3);
    free(doc);
    registry_close(r);
    free(g1);
    free(g2);
    free(g1b);
    free(g2b);
    free(h);
    free(hb);
    free(list);
    free(listb);
}

static void test_names_checked(void **state)
{
    world_t *w = *state;
    registry_t *r = open_reg(w->act);
    static const struct {
        const char *from, *to, *msg;
    } cases[] = {
        {"tag:interest/finance", "tag:interest/sports", "lines[0].targeting: "},
        {"age BETWEEN", "height BETWEEN", "lines[0].targeting: "},
        {"tag:interest/finance", "crowd:nobody", "lines[0].targeting: "},
        {"\"crowd\":\"high_value\"", "\"crowd\":\"low_value\"",
         "lines[0].premiums[0].crowd: unknown crowd \"low_value\""},
    };
    char *base = example("8.00");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char doc[4096];
        const char *at = strstr(base, cases[i].from);
        assert_non_null(at);
        snprintf(doc, sizeof doc, "%.*s%s%s", (int)(at - base), base, cases[i].to,
                 at + strlen(cases[i].from));
        cp_error_t err = {0};
        uint64_t v = 99;
        cp_status st = registry_put(r, w->db, NULL, doc, strlen(doc), 0, &v, &err);
        if (st != CP_EINVAL || strncmp(err.message, cases[i].msg, strlen(cases[i].msg)) != 0)
            fail_msg("case %zu: %s \"%s\"", i, cp_strerror(st), err.message);
        assert_int_equal(v, 99);
    }
    /* Nothing was stored. */
    char *out = NULL;
    cp_error_t err = {0};
    assert_int_equal(registry_history_json(r, "spring-sale", &out, &err), CP_ENOTFOUND);
    /* A bad document is the parser's 400; the URL id must agree. */
    assert_int_equal(registry_put(r, w->db, "other", base, strlen(base), 0, NULL, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "id: "));
    assert_int_equal(put(r, w->db, "spring-sale", base, 0), 1);
    free(base);
    registry_close(r);
}

typedef struct listen_state {
    int calls;
    uint64_t last;
    size_t ncampaigns;
} listen_state_t;

static void on_change(void *ctx, act_snapshot_t *s)
{
    listen_state_t *l = ctx;
    l->calls++;
    l->last = s->version;
    l->ncampaigns = s->ncampaigns;
}

static void test_listener(void **state)
{
    world_t *w = *state;
    registry_t *r = open_reg(w->act);
    listen_state_t l = {0};
    registry_listen(r, on_change, &l);
    char *doc = small_doc("x", 1, 1);
    put(r, NULL, NULL, doc, 0);
    put(r, NULL, NULL, doc, 0);
    cp_error_t err = {0};
    assert_int_equal(registry_delete(r, "x", 0, &err), CP_OK);
    assert_int_equal(l.calls, 3);
    assert_int_equal(l.last, 3);
    assert_int_equal(l.ncampaigns, 0);
    /* A refused put calls nobody. */
    assert_int_equal(registry_put(r, NULL, NULL, "{}", 2, 0, NULL, &err), CP_EINVAL);
    assert_int_equal(l.calls, 3);
    free(doc);
    registry_close(r);
}

/* Readers take and drop snapshots while a writer replaces campaigns; each
 * snapshot they see must be whole (ASan: no use after free, no leak). */
typedef struct reader {
    registry_t *r;
    atomic_int *stop;
    uint64_t seen, max_version;
    int bad;
} reader_t;

static void *read_loop(void *arg)
{
    reader_t *rd = arg;
    while (!atomic_load(rd->stop)) {
        act_snapshot_t *s = registry_snapshot(rd->r);
        if (s->version < rd->max_version)
            rd->bad = 1; /* versions never go back */
        rd->max_version = s->version;
        size_t lines = 0;
        for (size_t i = 0; i < s->ncampaigns; i++) {
            const act_campaign_t *c = s->campaigns[i];
            if (c->index != i || c->nlines < 1)
                rd->bad = 1;
            for (size_t j = 0; j < c->nlines; j++, lines++)
                if (s->lines[lines] != &c->lines[j] || c->lines[j].campaign != c ||
                    c->lines[j].index != lines || c->lines[j].creatives[0].adm[0] != 'x')
                    rd->bad = 1;
        }
        if (lines != s->nlines)
            rd->bad = 1;
        rd->seen++;
        snapshot_release(s);
    }
    return NULL;
}

static void test_concurrent_snapshots(void **state)
{
    world_t *w = *state;
    registry_t *r = open_reg(w->act);
    atomic_int stop = 0;
    reader_t rd[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        rd[i] = (reader_t){.r = r, .stop = &stop};
        assert_int_equal(pthread_create(&th[i], NULL, read_loop, &rd[i]), 0);
    }
    for (int i = 0; i < 60; i++) {
        char id[16];
        snprintf(id, sizeof id, "c%d", i % 7);
        char *doc = small_doc(id, 1 + i % 5, 8);
        put(r, NULL, NULL, doc, 0);
        free(doc);
        if (i % 9 == 8) {
            cp_error_t err = {0};
            assert_int_equal(registry_delete(r, id, 0, &err), CP_OK);
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(rd[i].bad, 0);
        assert_true(rd[i].seen > 0);
    }
    registry_close(r);
}

static char *log_path(const world_t *w)
{
    static char p[700];
    snprintf(p, sizeof p, "%s/campaigns.log", w->act);
    return p;
}

static off_t file_size(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return sb.st_size;
}

static void poke(const char *path, off_t off, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, off), (ssize_t)n);
    close(fd);
}

static void test_damage(void **state)
{
    world_t *w = *state;
    registry_t *r = open_reg(w->act);
    char *doc = small_doc("d", 2, 100);
    put(r, NULL, NULL, doc, 0);
    off_t one = file_size(log_path(w));
    put(r, NULL, NULL, doc, 0);
    off_t two = file_size(log_path(w));
    registry_close(r);

    /* An append cut short by a crash (half a record, or zeros from space
     * reserved for it) is dropped; the log continues after it. */
    char *half = malloc((size_t)(two - one));
    int fd = open(log_path(w), O_RDONLY);
    assert_int_equal(pread(fd, half, (size_t)(two - one), one), two - one);
    close(fd);
    poke(log_path(w), two, half, (size_t)(two - one) / 2);
    r = open_reg(w->act);
    assert_int_equal(file_size(log_path(w)), two);
    assert_int_equal(put(r, NULL, NULL, doc, 0), 3);
    registry_close(r);
    off_t three = file_size(log_path(w));
    char zeros[300] = {0};
    poke(log_path(w), three, zeros, sizeof zeros);
    r = open_reg(w->act);
    assert_int_equal(file_size(log_path(w)), three);
    registry_close(r);

    /* A flipped byte inside the second record's document. */
    char orig;
    fd = open(log_path(w), O_RDONLY);
    assert_int_equal(pread(fd, &orig, 1, one + 100), 1);
    close(fd);
    char flip = (char)(orig ^ 0x20);
    poke(log_path(w), one + 100, &flip, 1);
    registry_t *bad = NULL;
    cp_error_t err = {0};
    assert_int_equal(registry_open(w->act, &bad, &err), CP_ECORRUPT);
    assert_null(bad);
    assert_non_null(strstr(err.message, log_path(w)));
    char at[64];
    snprintf(at, sizeof at, "offset %lld", (long long)one);
    assert_non_null(strstr(err.message, at));
    poke(log_path(w), one + 100, &orig, 1);
    /* A damaged record header (its length). */
    poke(log_path(w), one + 5, &flip, 1);
    assert_int_equal(registry_open(w->act, &bad, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "damaged record header"));
    /* Zeros in the middle followed by records: damage, not a torn tail. */
    poke(log_path(w), one, zeros, 16);
    assert_int_equal(registry_open(w->act, &bad, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "zeros at offset"));
    /* Not a campaign log at all. */
    poke(log_path(w), 0, "NOTALOG!", 8);
    assert_int_equal(registry_open(w->act, &bad, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "not a campaign log"));
    assert_non_null(strstr(err.message, log_path(w)));
    free(half);
    free(doc);
}

/* A put that cannot be made durable changes nothing (a 1 MiB tmpfs
 * nearly filled by another file). */
static void test_full_disk(void **state)
{
    (void)state;
    char root[256], mnt[300], dir[400], filler[700];
    test_tmpfs(root, sizeof root, mnt, sizeof mnt, "registry-full", "1m");
    if (root[0] == '\0') {
        printf("SKIP: needs root to mount a tmpfs\n");
        return;
    }
    snprintf(dir, sizeof dir, "%s/activate", mnt);
    registry_t *r = open_reg(dir);
    char *doc = small_doc("f", 1, 100);
    assert_int_equal(put(r, NULL, NULL, doc, 0), 1);
    char *before = get(r, "f");
    /* Fill the file system, leaving less than one big record. */
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    int fd = open(filler, O_CREAT | O_WRONLY, 0600);
    char block[4096];
    memset(block, 1, sizeof block);
    while (write(fd, block, sizeof block) == (ssize_t)sizeof block)
        ;
    close(fd);
    char *big = small_doc("f", 4, 60000);
    snprintf(filler, sizeof filler, "%s/campaigns.log", dir);
    off_t size = file_size(filler);
    cp_error_t err = {0};
    uint64_t v = 0;
    assert_int_equal(registry_put(r, NULL, NULL, big, strlen(big), 0, &v, &err), CP_ENOSPC);
    assert_non_null(strstr(err.message, "campaigns.log"));
    assert_int_equal(v, 0);
    assert_int_equal(file_size(filler), size);
    char *after = get(r, "f");
    assert_string_equal(before, after);
    act_snapshot_t *s = registry_snapshot(r);
    assert_int_equal(s->version, 1);
    assert_int_equal(s->campaigns[0]->nlines, 1);
    snapshot_release(s);
    registry_close(r);
    r = open_reg(dir);
    char *reopened = get(r, "f");
    assert_string_equal(before, reopened);
    registry_close(r);
    free(doc);
    free(big);
    free(before);
    free(after);
    free(reopened);
    test_tmpfs_free(root, mnt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_versions_history_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage, setup, teardown),
        cmocka_unit_test(test_full_disk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
