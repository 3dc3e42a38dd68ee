/* test_activate_ledger.c — the ledger's journal and notices: tokens (round
 * trip, forged, damaged), prices, duplicates counted once, settlement at
 * the first of win/billing, CPC and CPD charging, replay after reopen and
 * after a snapshot giving the same delivery report, kill -9 of a child
 * recording notices, a damaged journal and snapshot refused, a full disk,
 * and impressions sent to the engine as events of the person. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cp_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ledger_test.h"

#define T0 fx_sh(2026, 12, 7, 10, 0)

static ledger_t *open_l(const char *dir, unsigned flags)
{
    ledger_t *l = NULL;
    cp_error_t err = {0};
    cp_status rc = ledger_open_ex(dir, NULL, flags, &l, &err);
    if (rc != CP_OK)
        fail_msg("ledger_open %s: %s: %s", dir, cp_strerror(rc), err.message);
    return l;
}

static ledger_notice_result_t notice(ledger_t *l, ledger_notice_kind k, const char *tok,
                                     const char *price, int64_t now)
{
    ledger_notice_result_t r;
    cp_error_t err = {0};
    cp_status rc = ledger_notice(l, k, tok, price, 0, now, &r, &err);
    if (rc != CP_OK)
        fail_msg("ledger_notice kind %d: %s: %s", (int)k, cp_strerror(rc), err.message);
    return r;
}

static char *delivery(ledger_t *l, fx_t *f, int64_t now)
{
    char *j = NULL;
    cp_error_t err = {0};
    if (ledger_delivery_json(l, &f->c, now, &j, &err) != CP_OK)
        fail_msg("delivery: %s", err.message);
    return j;
}

static void test_price_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t want; /* -1: refused */
    } cases[] = {{"5.37", 537}, {"5", 500},         {"5.3", 530},    {"0.001", 0},
                 {"0.005", 1},  {"5.375", 538},     {"5.3749", 537}, {"99.99", 9999},
                 {"0", 0},      {"1234.5", 123450}, {"-1", -1},      {"1e3", -1},
                 {".5", -1},    {"5.", -1},         {"5.37 ", -1},   {"${AUCTION_PRICE}", -1},
                 {"0x10", -1},  {"1234567890", -1}};
    for (size_t i = 0; i < CP_ARRAY_LEN(cases); i++) {
        int64_t m = -7;
        cp_error_t err = {0};
        cp_status rc = notice_price_parse(cases[i].s, &m, &err);
        if (cases[i].want < 0) {
            if (rc != CP_EINVAL)
                fail_msg("price \"%s\" accepted as %lld", cases[i].s, (long long)m);
        } else if (rc != CP_OK || m != cases[i].want) {
            fail_msg("price \"%s\": %lld, want %lld (%s)", cases[i].s, (long long)m,
                     (long long)cases[i].want, err.message);
        }
    }
}

static void test_token_forged(void **state)
{
    (void)state;
    char dir[256], tok[LEDGER_TOKEN_MAX], bad[LEDGER_TOKEN_MAX];
    fx_t f;
    test_tmpdir(dir, sizeof dir, "ltok");
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    ledger_t *l = open_l(dir, LEDGER_OPEN_NOSYNC);
    fx_reserve(l, &f, 0, 1, LEDGER_PERSON_KNOWN | 42, T0, 800, tok);
    assert_true(strlen(tok) > 0 && strlen(tok) < LEDGER_TOKEN_MAX);
    for (const char *p = tok; *p; p++) /* URL-safe as it is */
        assert_true((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_');
    cp_error_t err = {0};
    ledger_notice_result_t r;
    /* every single-character change is refused */
    for (size_t i = 0; tok[i]; i++) {
        strcpy(bad, tok);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        assert_int_equal(ledger_notice(l, LEDGER_WIN, bad, "5.37", 0, T0, &r, &err), CP_EINVAL);
    }
    strcpy(bad, tok);
    bad[strlen(bad) - 3] = '\0';
    assert_int_equal(ledger_notice(l, LEDGER_WIN, bad, "5.37", 0, T0, &r, &err), CP_EINVAL);
    assert_int_equal(ledger_notice(l, LEDGER_WIN, "", "5.37", 0, T0, &r, &err), CP_EINVAL);
    assert_int_equal(ledger_notice(l, LEDGER_WIN, NULL, "5.37", 0, T0, &r, &err), CP_EINVAL);
    assert_int_equal(ledger_notice(l, LEDGER_WIN, "!!!!", "5.37", 0, T0, &r, &err), CP_EINVAL);
    assert_int_equal(ledger_notice(l, LEDGER_WIN, tok, "5,37", 0, T0, &r, &err), CP_EINVAL);
    assert_int_equal(ledger_notice(l, (ledger_notice_kind)9, tok, "5.37", 0, T0, &r, &err),
                     CP_EINVAL);
    /* expired: 24 h after the bid */
    assert_int_equal(
        ledger_notice(l, LEDGER_WIN, tok, "5.37", 0, T0 + LEDGER_DEDUP_WINDOW_MS + 1, &r, &err),
        CP_EINVAL);
    assert_non_null(strstr(err.message, "expired"));
    /* a token of another key (another data directory) is forged here */
    char dir2[256], tok2[LEDGER_TOKEN_MAX];
    test_tmpdir(dir2, sizeof dir2, "ltok2");
    ledger_t *l2 = open_l(dir2, LEDGER_OPEN_NOSYNC);
    fx_reserve(l2, &f, 0, 1, LEDGER_PERSON_KNOWN | 42, T0, 800, tok2);
    assert_int_equal(ledger_notice(l, LEDGER_WIN, tok2, "5.37", 0, T0, &r, &err), CP_EINVAL);
    ledger_close(l2);
    /* nothing was recorded by the refusals: the real one counts */
    r = notice(l, LEDGER_WIN, tok, "5.37", T0);
    assert_int_equal(r.duplicate, 0);
    assert_int_equal(r.charged_millifen, 537);
    assert_string_equal(r.campaign_id, "spring-sale");
    assert_string_equal(r.line_id, "l0");
    /* long ids: the identifier is dropped, then the bid is refused */
    ledger_bid_t b = fx_bid(&f, 0, 2, 1, T0, 800);
    char longid[300];
    memset(longid, 'x', 250);
    longid[250] = '\0';
    b.id_type = "user_id";
    b.id_value = longid;
    assert_int_equal(ledger_reserve(l, &b, 800, tok, &err), CP_OK);
    b.auction_id = longid;
    b.imp_id = longid;
    assert_int_equal(ledger_reserve(l, &b, 800, tok, &err), CP_ELIMIT);
    ledger_close(l);
    fx_free(&f);
    test_rmtree(dir);
    test_rmtree(dir2);
}

static void test_duplicates_once(void **state)
{
    (void)state;
    char dir[256], tok[LEDGER_TOKEN_MAX], tok2[LEDGER_TOKEN_MAX], tok3[LEDGER_TOKEN_MAX];
    fx_t f;
    test_tmpdir(dir, sizeof dir, "ldup");
    fx_init(&f, "spring-sale", 5000, 100000, ACT_PACE_ASAP);
    f.line[1].billing = ACT_BILL_CPC;
    f.line[1].bid_fen = 50; /* 0.50 yuan per click */
    f.line[2].billing = ACT_BILL_CPD;
    f.line[2].bid_fen = 10000; /* 100 yuan per day */
    ledger_t *l = open_l(dir, LEDGER_OPEN_NOSYNC);
    fx_reserve(l, &f, 0, 1, 7, T0, 800, tok);
    /* win settles at the clearing price; a repeat, the billing and a
     * second billing change nothing */
    assert_int_equal(notice(l, LEDGER_WIN, tok, "5.37", T0 + 1000).charged_millifen, 537);
    ledger_notice_result_t r = notice(l, LEDGER_WIN, tok, "5.37", T0 + 2000);
    assert_int_equal(r.duplicate, 1);
    assert_int_equal(r.charged_millifen, 0);
    r = notice(l, LEDGER_BILLING, tok, "5.37", T0 + 3000);
    assert_int_equal(r.duplicate, 0);
    assert_int_equal(r.charged_millifen, 0);
    assert_int_equal(notice(l, LEDGER_BILLING, tok, "5.37", T0 + 4000).duplicate, 1);
    assert_int_equal(notice(l, LEDGER_IMPRESSION, tok, NULL, T0 + 5000).duplicate, 0);
    assert_int_equal(notice(l, LEDGER_IMPRESSION, tok, NULL, T0 + 6000).duplicate, 1);
    /* a price above the bid is charged at the bid */
    fx_reserve(l, &f, 0, 2, 7, T0, 800, tok2);
    assert_int_equal(notice(l, LEDGER_BILLING, tok2, "9.99", T0).charged_millifen, 800);
    /* without a price, the bid */
    fx_reserve(l, &f, 0, 3, 7, T0, 700, tok2);
    assert_int_equal(notice(l, LEDGER_WIN, tok2, NULL, T0).charged_millifen, 700);
    /* CPC: nothing at win, bid_fen per click, once per auction */
    fx_reserve(l, &f, 1, 4, 7, T0, 300, tok2);
    assert_int_equal(notice(l, LEDGER_WIN, tok2, "2.00", T0).charged_millifen, 0);
    assert_int_equal(notice(l, LEDGER_CLICK, tok2, NULL, T0).charged_millifen, 50000);
    assert_int_equal(notice(l, LEDGER_CLICK, tok2, NULL, T0).duplicate, 1);
    /* CPD: the first settled impression of a day pays the day */
    fx_reserve(l, &f, 2, 5, 7, T0, 300, tok2);
    fx_reserve(l, &f, 2, 6, 7, T0 + 60000, 300, tok3);
    assert_int_equal(notice(l, LEDGER_WIN, tok2, "1.00", T0).charged_millifen, 10000000);
    assert_int_equal(notice(l, LEDGER_WIN, tok3, "1.00", T0).charged_millifen, 0);
    fx_reserve(l, &f, 2, 7, 7, T0 + DAY_MS, 300, tok3);
    assert_int_equal(notice(l, LEDGER_WIN, tok3, "1.00", T0 + DAY_MS).charged_millifen, 10000000);
    /* loss after a win: recorded, nothing released twice */
    assert_int_equal(notice(l, LEDGER_LOSS, tok, NULL, T0).duplicate, 0);
    char *j = delivery(l, &f, T0 + 10000);
    assert_non_null(
        strstr(j, "\"id\":\"l0\",\"today\":{\"spent\":0.02037,\"spent_millifen\":2037}"));
    assert_non_null(strstr(j, "\"wins\":2,\"billings\":2,\"losses\":1,\"impressions\":1"));
    assert_non_null(strstr(j, "\"clicks\":1"));
    free(j);
    ledger_close(l);
    fx_free(&f);
    test_rmtree(dir);
}

/* A mix of notices over two days and three lines. */
static void record_mix(ledger_t *l, fx_t *f, unsigned from, unsigned n, int64_t t0)
{
    char tok[LEDGER_TOKEN_MAX];
    uint64_t rnd = from * 7919u + 1;
    for (unsigned i = from; i < from + n; i++) {
        int64_t t = t0 + (int64_t)i * 37000;
        int64_t price = 300 + (int64_t)(rand_next(&rnd) % 500);
        fx_reserve(l, f, (int)(i % FX_LINES), i, LEDGER_PERSON_KNOWN | (i % 13), t, price, tok);
        char p[32];
        snprintf(p, sizeof p, "%lld.%02lld", (long long)(price / 100), (long long)(price % 100));
        switch (rand_next(&rnd) % 4) {
        case 0:
            notice(l, LEDGER_LOSS, tok, NULL, t + 100);
            break;
        case 1:
            notice(l, LEDGER_WIN, tok, p, t + 100);
            notice(l, LEDGER_IMPRESSION, tok, NULL, t + 200);
            break;
        case 2:
            notice(l, LEDGER_BILLING, tok, p, t + 100);
            notice(l, LEDGER_WIN, tok, p, t + 100);
            notice(l, LEDGER_CLICK, tok, NULL, t + 300);
            break;
        default:
            notice(l, LEDGER_IMPRESSION, tok, NULL, t + 100);
            notice(l, LEDGER_IMPRESSION, tok, NULL, t + 100);
        }
    }
}

static void test_replay_identical(void **state)
{
    (void)state;
    char dir[256], wal[300];
    fx_t f;
    test_tmpdir(dir, sizeof dir, "lreplay");
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    f.lcaps[0][0] = (act_cap_t){2, ACT_PER_DAY};
    f.line[0].ncaps = 1;
    int64_t t_end = T0 + 3000 * 37000LL + HOUR_MS; /* past every reservation's TTL */
    ledger_t *l = open_l(dir, LEDGER_OPEN_NOSYNC);
    record_mix(l, &f, 0, 1500, T0);
    assert_int_equal(ledger_contact_cap_set(l, 5, ACT_PER_WEEK, NULL), CP_OK);
    char *before = delivery(l, &f, t_end);
    uint32_t v1 = ledger_check(l, &f.line[0], LEDGER_PERSON_KNOWN | 3, 100, t_end, 0);
    size_t ncaps = ltab_count(&l->caps), ndedup = ltab_count(&l->dedup);
    /* without a snapshot: a child that dies replays the whole journal */
    pid_t pid = fork();
    if (pid == 0) {
        ledger_t *c = NULL;
        if (ledger_open_ex(dir, NULL, 0, &c, NULL) != CP_ELOCKED)
            _exit(3); /* the parent holds the journal */
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ledger_close(l);
    l = open_l(dir, LEDGER_OPEN_NOSYNC);
    char *after = delivery(l, &f, t_end);
    assert_string_equal(before, after);
    assert_int_equal(ledger_check(l, &f.line[0], LEDGER_PERSON_KNOWN | 3, 100, t_end, 0), v1);
    assert_int_equal(ltab_count(&l->caps), ncaps);
    assert_int_equal(ltab_count(&l->dedup), ndedup);
    assert_int_equal(atomic_load(&l->contact_count), 5);
    free(after);
    /* more, a snapshot in the middle, more: the same again */
    record_mix(l, &f, 1500, 500, T0);
    assert_int_equal(ledger_snapshot(l, t_end, NULL), CP_OK);
    record_mix(l, &f, 2000, 500, T0);
    free(before);
    before = delivery(l, &f, t_end);
    ledger_close(l); /* with a snapshot at close */
    snprintf(wal, sizeof wal, "%s/ledger/wal", dir);
    DIR *d = opendir(wal);
    assert_non_null(d);
    int segs = 0;
    for (struct dirent *e; (e = readdir(d));)
        segs += strstr(e->d_name, ".wal") != NULL;
    closedir(d);
    assert_true(segs <= 2); /* segments the snapshots cover were deleted */
    l = open_l(dir, LEDGER_OPEN_NOSYNC);
    after = delivery(l, &f, t_end);
    assert_string_equal(before, after);
    assert_int_equal(l->since_snap, 0); /* the close snapshot covered everything */
    free(before);
    free(after);
    ledger_close(l);
    fx_free(&f);
    test_rmtree(dir);
}

/* kill -9: a child records notices and reports each CP_OK on a pipe; the
 * parent kills it mid-way; every acknowledged notice must be there. */
static void test_kill9(void **state)
{
    (void)state;
    enum { N = 3000 };
    char dir[256];
    static char toks[N][LEDGER_TOKEN_MAX];
    fx_t f;
    test_tmpdir(dir, sizeof dir, "lkill");
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    ledger_t *l = open_l(dir, LEDGER_OPEN_NOSYNC);
    for (unsigned i = 0; i < N; i++)
        fx_reserve(l, &f, (int)(i % 2), i, (uint64_t)i + 1, T0 + i, 100 + i % 400, toks[i]);
    ledger_close(l);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        ledger_t *c = NULL;
        if (ledger_open_ex(dir, NULL, 0, &c, NULL) != CP_OK)
            _exit(2);
        for (unsigned i = 0; i < N; i++) {
            ledger_notice_result_t r;
            if (ledger_notice(c, LEDGER_WIN, toks[i], "1.00", 0, T0 + i, &r, NULL) != CP_OK)
                _exit(3);
            uint32_t v = i;
            if (write(fds[1], &v, sizeof v) != sizeof v)
                _exit(4);
        }
        _exit(0);
    }
    close(fds[1]);
    unsigned acked = 0;
    uint32_t v;
    while (acked < 200 && read(fds[0], &v, sizeof v) == sizeof v)
        acked = v + 1;
    kill(pid, SIGKILL);
    while (read(fds[0], &v, sizeof v) == sizeof v) /* acks written before the kill */
        acked = v + 1;
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(acked >= 200);
    l = open_l(dir, LEDGER_OPEN_NOSYNC);
    int64_t charged = 0;
    for (unsigned i = 0; i < acked; i++)
        assert_int_equal(notice(l, LEDGER_WIN, toks[i], "1.00", T0 + i).duplicate, 1);
    for (unsigned i = acked; i < N; i++)
        charged += notice(l, LEDGER_WIN, toks[i], "1.00", T0 + i).charged_millifen;
    /* every bid settled exactly once at 100 millifen (or its lower bid) */
    lcamp_t *c = ledger_camp(l, "spring-sale", 11, 0);
    assert_non_null(c);
    int64_t want = N * 100; /* every bid was 100 fen CPM or more */
    assert_int_equal(atomic_load(&c->spent_total), want);
    assert_true(charged <= want);
    ledger_close(l);
    fx_free(&f);
    test_rmtree(dir);
}

static void flip(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0x5a;
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void test_damaged(void **state)
{
    (void)state;
    char dir[256], path[400], seg[64];
    fx_t f;
    test_tmpdir(dir, sizeof dir, "ldamage");
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    /* records without a snapshot: a child that exits without closing */
    pid_t pid = fork();
    if (pid == 0) {
        ledger_t *c = NULL;
        if (ledger_open_ex(dir, NULL, 0, &c, NULL) != CP_OK)
            _exit(2);
        record_mix(c, &f, 0, 100, T0);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    wal_segment_name(1, seg, sizeof seg);
    snprintf(path, sizeof path, "%s/ledger/wal/%s", dir, seg);
    flip(path, 2000); /* in the middle: valid records follow */
    ledger_t *l = NULL;
    cp_error_t err = {0};
    assert_int_equal(ledger_open(dir, NULL, &l, &err), CP_ECORRUPT);
    assert_null(l);
    assert_non_null(strstr(err.message, seg));
    assert_non_null(strstr(err.message, "offset"));
    flip(path, 2000);
    l = open_l(dir, 0);
    ledger_close(l); /* writes the snapshot */
    snprintf(path, sizeof path, "%s/ledger/snapshot", dir);
    flip(path, 40);
    err = (cp_error_t){0};
    assert_int_equal(ledger_open(dir, NULL, &l, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "snapshot"));
    assert_non_null(strstr(err.message, "byte"));
    fx_free(&f);
    test_rmtree(dir);
}

/* A full disk: the notice is refused with CP_ENOSPC and nothing applied;
 * once there is room again, the same notice records normally. */
static void test_nospc(void **state)
{
    (void)state;
    char root[256], mnt[300], fill[400], tok[LEDGER_TOKEN_MAX];
    fx_t f;
    test_tmpfs(root, sizeof root, mnt, sizeof mnt, "lnospc", "4m");
    if (root[0] == '\0')
        skip();
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    ledger_t *l = open_l(mnt, 0);
    snprintf(fill, sizeof fill, "%s/fill", mnt);
    int fd = open(fill, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    static char block[65536];
    while (write(fd, block, sizeof block) > 0)
        ;
    close(fd);
    cp_status rc = CP_OK;
    cp_error_t err = {0};
    ledger_notice_result_t r;
    unsigned i;
    int64_t spent = 0;
    for (i = 0; i < 100000; i++) {
        fx_reserve(l, &f, 0, i, 1, T0, 500, tok);
        rc = ledger_notice(l, LEDGER_WIN, tok, "5.00", 0, T0, &r, &err);
        if (rc != CP_OK)
            break;
        spent += r.charged_millifen;
    }
    assert_int_equal(rc, CP_ENOSPC);
    lcamp_t *c = ledger_camp(l, "spring-sale", 11, 0);
    assert_int_equal(atomic_load(&c->spent_total), spent);
    unlink(fill);
    r = notice(l, LEDGER_WIN, tok, "5.00", T0);
    assert_int_equal(r.duplicate, 0);
    assert_int_equal(r.charged_millifen, 500);
    ledger_close(l);
    l = open_l(mnt, 0);
    c = ledger_camp(l, "spring-sale", 11, 0);
    assert_int_equal(atomic_load(&c->spent_total), spent + 500);
    ledger_close(l);
    fx_free(&f);
    test_tmpfs_free(root, mnt);
}

/* Notices from several threads at once: each recorded once, the spend
 * exact, and the fdatasyncs shared (group commit). */
enum { CT_THREADS = 4, CT_EACH = 150 };
typedef struct ct_arg {
    ledger_t *l;
    char (*toks)[LEDGER_TOKEN_MAX];
    int fails;
} ct_arg_t;

static void *ct_run(void *p)
{
    ct_arg_t *a = p;
    for (int i = 0; i < CT_EACH; i++) {
        ledger_notice_result_t r;
        if (ledger_notice(a->l, LEDGER_BILLING, a->toks[i], "3.21", 0, T0, &r, NULL) != CP_OK ||
            r.charged_millifen != 321)
            a->fails++;
        /* and repeats one of its earlier ones */
        if (ledger_notice(a->l, LEDGER_BILLING, a->toks[(i * 7) % (i + 1)], "3.21", 0, T0, &r,
                          NULL) != CP_OK)
            a->fails++;
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    char dir[256];
    static char toks[CT_THREADS][CT_EACH][LEDGER_TOKEN_MAX];
    fx_t f;
    test_tmpdir(dir, sizeof dir, "lconc");
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    ledger_t *l = open_l(dir, 0);
    for (unsigned t = 0; t < CT_THREADS; t++)
        for (unsigned i = 0; i < CT_EACH; i++)
            fx_reserve(l, &f, 0, t * CT_EACH + i, 1, T0, 800, toks[t][i]);
    pthread_t th[CT_THREADS];
    ct_arg_t args[CT_THREADS];
    for (int t = 0; t < CT_THREADS; t++) {
        args[t] = (ct_arg_t){l, toks[t], 0};
        assert_int_equal(pthread_create(&th[t], NULL, ct_run, &args[t]), 0);
    }
    for (int t = 0; t < CT_THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(args[t].fails, 0);
    }
    lcamp_t *c = ledger_camp(l, "spring-sale", 11, 0);
    assert_int_equal(atomic_load(&c->spent_total), CT_THREADS * CT_EACH * 321);
    wal_stats_t ws;
    wal_stats(l->wal, &ws);
    assert_int_equal(ws.appends, CT_THREADS * CT_EACH);
    assert_true(ws.fsyncs <= ws.appends);
    ledger_close(l);
    l = open_l(dir, 0);
    c = ledger_camp(l, "spring-sale", 11, 0);
    assert_int_equal(atomic_load(&c->spent_total), CT_THREADS * CT_EACH * 321);
    ledger_close(l);
    fx_free(&f);
    test_rmtree(dir);
}

/* Impressions become "impression" events of the person, so the crowd
 * language sees them: did(impression, campaign = "spring-sale", ...). */
static void test_events(void **state)
{
    (void)state;
    char dir[256], adir[300], tok[LEDGER_TOKEN_MAX];
    fx_t f;
    test_tmpdir(dir, sizeof dir, "levents");
    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = CP_OPEN_CREATE;
    cp_db_t *db = test_open_db(dir, &o);
    cp_error_t err = {0};
    const char *cfg = "{\"indexed_properties\":[\"campaign\"]}";
    assert_int_equal(cp_intake_config_set_json(db, cfg, strlen(cfg), &err), CP_OK);
    snprintf(adir, sizeof adir, "%s/activate", dir);
    ledger_t *l = NULL;
    assert_int_equal(ledger_open(adir, db, &l, &err), CP_OK);
    fx_init(&f, "spring-sale", 0, 0, ACT_PACE_ASAP);
    int64_t now = time_now_ms();
    static const char *ids[][2] = {{"user_id", "u1"},
                                   {"idfa", "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
                                   {"anonymous_id", "anon-9"}};
    for (unsigned i = 0; i < 3; i++) {
        ledger_bid_t b = fx_bid(&f, 0, i, LEDGER_PERSON_KNOWN | i, now, 800);
        b.id_type = ids[i][0];
        b.id_value = ids[i][1];
        assert_int_equal(ledger_reserve(l, &b, 800, tok, &err), CP_OK);
        notice(l, LEDGER_WIN, tok, "5.37", now);
        notice(l, LEDGER_IMPRESSION, tok, NULL, now);
        notice(l, LEDGER_IMPRESSION, tok, NULL, now); /* a repeat: no second event */
        if (i == 0)
            notice(l, LEDGER_CLICK, tok, NULL, now);
    }
    /* no identifier: no event */
    fx_reserve(l, &f, 0, 9, 5, now, 800, tok);
    notice(l, LEDGER_IMPRESSION, tok, NULL, now);
    ledger_events_flush(l);
    uint64_t sent, failed, dropped;
    ledger_event_counts(l, &sent, &failed, &dropped);
    assert_int_equal(sent, 4);
    assert_int_equal(failed, 0);
    assert_int_equal(dropped, 0);
    assert_int_equal(cp_checkpoint(db, &err), CP_OK);
    uint64_t n = 0;
    assert_int_equal(cp_count(db, "did(impression, campaign = \"spring-sale\", last 7d)", &n, &err),
                     CP_OK);
    assert_int_equal(n, 3);
    assert_int_equal(cp_count(db, "did(click, last 7d)", &n, &err), CP_OK);
    assert_int_equal(n, 1);
    ledger_close(l);
    assert_int_equal(cp_db_close(db, &err), CP_OK);
    fx_free(&f);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_price_parse),     cmocka_unit_test(test_token_forged),
        cmocka_unit_test(test_duplicates_once), cmocka_unit_test(test_replay_identical),
        cmocka_unit_test(test_kill9),           cmocka_unit_test(test_damaged),
        cmocka_unit_test(test_nospc),           cmocka_unit_test(test_events),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
