/* test_store_wal.c — the write-ahead log: CRC32C, append/replay round trips,
 * LSN continuity across reopen, rotation and truncation, torn tails at
 * every byte and bit flips, damage in older segments, concurrent appenders
 * with group commit, and kill -9 of a writing child process. */
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
#include <time.h>
#include <unistd.h>

#include "store/wal.h"
#include "util/util.h"

/* ------------------------------------------------------------- helpers */

static void quiet_log(void *ud, const char *msg)
{
    (void)msg;
    if (ud != NULL)
        (*(int *)ud)++;
}

static wal_options_t opts_none(uint64_t seg)
{
    wal_options_t o = {0};
    o.segment_bytes = seg;
    o.sync = WAL_SYNC_NONE;
    o.log = quiet_log;
    return o;
}

/* Deterministic payload for a key: length from the key unless given. */
static void fill_payload(unsigned char *p, size_t len, uint64_t key)
{
    uint64_t s = key * 0x9E3779B97F4A7C15ull + 12345;
    for (size_t i = 0; i < len; i++) {
        if ((i & 7) == 0)
            s = rand_next(&s) ^ i;
        p[i] = (unsigned char)(s >> (8 * (i & 7)));
    }
}

/* A reference record kept by the tests. */
typedef struct ref {
    uint64_t lsn;
    uint8_t type;
    size_t len;
    uint64_t key;
} ref_t;

typedef struct collect {
    ref_t *refs; /* expected, indexed by lsn - base */
    size_t nrefs;
    uint64_t base;
    uint64_t seen; /* records visited */
    uint64_t last; /* last LSN visited */
    int mismatch;
} collect_t;

static cp_status check_cb(void *ud, uint64_t lsn, uint8_t type, const void *payload, size_t len,
                          cp_error_t *err)
{
    collect_t *c = ud;
    if (c->last != 0 && lsn != c->last + 1)
        c->mismatch++;
    c->last = lsn;
    c->seen++;
    if (lsn < c->base || lsn - c->base >= c->nrefs) {
        c->mismatch++;
        return CP_OK;
    }
    const ref_t *r = &c->refs[lsn - c->base];
    if (r->lsn != lsn || r->type != type || r->len != len) {
        c->mismatch++;
        return CP_OK;
    }
    unsigned char *want = malloc(len ? len : 1);
    fill_payload(want, len, r->key);
    if (len > 0 && memcmp(want, payload, len) != 0)
        c->mismatch++;
    free(want);
    (void)err;
    return CP_OK;
}

static void append_ref(wal_t *wal, ref_t *refs, size_t *n, uint8_t type, size_t len, uint64_t key)
{
    unsigned char *p = malloc(len ? len : 1);
    fill_payload(p, len, key);
    uint64_t lsn = 0;
    cp_error_t err = {0};
    assert_int_equal(wal_append(wal, type, p, len, &lsn, &err), CP_OK);
    free(p);
    refs[*n] = (ref_t){lsn, type, len, key};
    if (*n > 0)
        assert_int_equal(lsn, refs[*n - 1].lsn + 1);
    (*n)++;
}

/* Replays after `after` and checks against refs[0..n) whose first LSN is base. */
static void check_replay(wal_t *wal, uint64_t after, ref_t *refs, size_t n)
{
    collect_t c = {refs, n, n ? refs[0].lsn : 1, 0, 0, 0};
    cp_error_t err = {0};
    cp_status st = wal_replay(wal, after, check_cb, &c, &err);
    if (st != CP_OK)
        fail_msg("replay: %s", err.message);
    assert_int_equal(c.mismatch, 0);
    uint64_t want = 0;
    for (size_t i = 0; i < n; i++)
        want += refs[i].lsn > after;
    assert_int_equal(c.seen, want);
}

static size_t count_segments(const char *dir)
{
    char p[300];
    snprintf(p, sizeof p, "%s/wal", dir);
    DIR *d = opendir(p);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += strstr(de->d_name, ".wal") != NULL;
    closedir(d);
    return n;
}

static void seg_path(const char *dir, uint64_t first, char *buf, size_t cap)
{
    char name[32];
    wal_segment_name(first, name, sizeof name);
    snprintf(buf, cap, "%s/wal/%s", dir, name);
}

static void write_file(const char *path, const unsigned char *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
}

/* ---------------------------------------------------------------- CRC */

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(wal_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(wal__crc32c_sw(0, "123456789", 9), 0xE3069283u);
    unsigned char z[32], ff[32];
    memset(z, 0, sizeof z);
    memset(ff, 0xFF, sizeof ff);
    assert_int_equal(wal_crc32c(0, z, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    assert_int_equal(wal_crc32c(0, ff, 32), 0x62A8AB43u);
    unsigned char inc[32];
    for (int i = 0; i < 32; i++)
        inc[i] = (unsigned char)i;
    assert_int_equal(wal__crc32c_sw(0, inc, 32), 0x46DD794Eu);
    assert_int_equal(wal_crc32c(0, NULL, 0), 0);

    /* Hardware and tables agree at every length and alignment, and a CRC
     * can be continued in pieces; checked against a bitwise reference. */
    unsigned char buf[1100];
    fill_payload(buf, sizeof buf, 7);
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; len < 1000; len += 1 + len / 16) {
            uint32_t a = wal_crc32c(0, buf + off, len);
            uint32_t b = wal__crc32c_sw(0, buf + off, len);
            uint32_t c = 0xFFFFFFFFu;
            for (size_t i = 0; i < len; i++) {
                c ^= buf[off + i];
                for (int k = 0; k < 8; k++)
                    c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
            }
            c = ~c;
            assert_int_equal(a, c);
            assert_int_equal(b, c);
            size_t h = len / 3;
            assert_int_equal(wal_crc32c(wal_crc32c(0, buf + off, h), buf + off + h, len - h), c);
        }
}

/* ---------------------------------------------------------- round trip */

static void test_roundtrip(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "rt");
    wal_options_t o = opts_none(0);
    wal_t *wal = NULL;
    cp_error_t err = {0};
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), 0);
    assert_int_equal(wal_durable_lsn(wal), 0);
    check_replay(wal, 0, NULL, 0);

    size_t sizes[] = {0,    1,    2,     7,     8,     9,     16,     100,
                      4095, 4096, 16383, 16384, 16400, 65536, 100000, 1u << 20};
    ref_t refs[400];
    size_t n = 0;
    uint64_t rng = 42;
    for (size_t i = 0; i < CP_ARRAY_LEN(sizes); i++)
        append_ref(wal, refs, &n, (uint8_t)i, sizes[i], n + 1000);
    for (int i = 0; i < 300; i++) {
        size_t len = rand_next(&rng) % (i % 10 == 0 ? 70000 : 300);
        append_ref(wal, refs, &n, (uint8_t)(rand_next(&rng) & 0xFF), len, n + 1000);
    }
    assert_int_equal(refs[0].lsn, 1);
    assert_int_equal(wal_last_lsn(wal), n);
    /* Replay sees buffered records too, from any starting point. */
    check_replay(wal, 0, refs, n);
    check_replay(wal, 5, refs, n);
    check_replay(wal, n - 1, refs, n);
    check_replay(wal, n, refs, n);
    check_replay(wal, n + 100, refs, n);
    assert_int_equal(wal_sync(wal, UINT64_MAX, &err), CP_OK);
    assert_int_equal(wal_durable_lsn(wal), n);

    /* Too large, NULL payload. */
    uint64_t lsn = 0;
    assert_int_equal(wal_append(wal, 1, "", (size_t)WAL_MAX_RECORD + 1, &lsn, &err), CP_ELIMIT);
    assert_int_equal(wal_append(wal, 1, NULL, 3, &lsn, &err), CP_EINVAL);
    assert_int_equal(wal_last_lsn(wal), n);

    /* A replay without a callback just validates. */
    assert_int_equal(wal_replay(wal, 0, NULL, NULL, &err), CP_OK);
    wal_close(wal);

    /* Reopen: same records, LSNs continue. */
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), n);
    assert_int_equal(wal_durable_lsn(wal), n);
    check_replay(wal, 0, refs, n);
    append_ref(wal, refs, &n, 9, 33, 77);
    assert_int_equal(refs[n - 1].lsn, n);
    wal_close(wal);
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    check_replay(wal, 0, refs, n);
    wal_stats_t s;
    wal_stats(wal, &s);
    assert_int_equal(s.truncated_bytes, 0);
    assert_int_equal(s.first_lsn, 1);
    assert_int_equal(s.segments, 1);
    wal_close(wal);
    test_rmtree(dir);
}

static cp_status stop_cb(void *ud, uint64_t lsn, uint8_t type, const void *payload, size_t len,
                         cp_error_t *err)
{
    (void)type, (void)payload, (void)len;
    if (lsn == *(uint64_t *)ud)
        return CP_ERR(err, CP_ECONFLICT, "stop at %llu", (unsigned long long)lsn);
    return CP_OK;
}

static void test_open_errors(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "errs");
    wal_options_t o = opts_none(100);
    wal_t *wal = NULL, *w2 = NULL;
    cp_error_t err = {0};
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_EINVAL);
    assert_null(wal);
    o.segment_bytes = 0;
    o.initial_lsn = 1000;
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), 999);
    uint64_t lsn = 0;
    assert_int_equal(wal_append(wal, 1, "abc", 3, &lsn, &err), CP_OK);
    assert_int_equal(lsn, 1000);
    assert_int_equal(wal_append(wal, 1, "def", 3, &lsn, &err), CP_OK);
    uint64_t stop = 1001;
    assert_int_equal(wal_replay(wal, 0, stop_cb, &stop, &err), CP_ECORRUPT); /* before 1000 */
    assert_int_equal(wal_replay(wal, 999, stop_cb, &stop, &err), CP_ECONFLICT);
    assert_non_null(strstr(err.message, "stop at 1001"));

    /* One handle at a time. */
    assert_int_equal(wal_open(dir, &o, &w2, &err), CP_ELOCKED);
    assert_null(w2);
    wal_close(wal);

    /* initial_lsn is ignored once segments exist. */
    o.initial_lsn = 5;
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), 1001);
    wal_close(wal);

    /* A misnamed segment is an error, other files are ignored. */
    char p[400];
    snprintf(p, sizeof p, "%s/wal/notes.txt", dir);
    write_file(p, (const unsigned char *)"x", 1);
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    wal_close(wal);
    snprintf(p, sizeof p, "%s/wal/123.wal", dir);
    write_file(p, (const unsigned char *)"x", 1);
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_EIO);
    assert_non_null(strstr(err.message, "123.wal"));
    assert_null(wal);

    /* Missing parent directory. */
    assert_int_equal(wal_open("/nonexistent/cp-wal", &o, &wal, &err), CP_EIO);
    assert_non_null(strstr(err.message, "/nonexistent/cp-wal"));
    test_rmtree(dir);
}

/* ------------------------------------------------ rotation, truncation */

static void test_rotation_truncate(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "rot");
    wal_options_t o = opts_none(4096);
    wal_t *wal = NULL;
    cp_error_t err = {0};
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    ref_t *refs = calloc(2000, sizeof *refs);
    size_t n = 0;
    uint64_t rng = 9;
    for (int i = 0; i < 600; i++)
        append_ref(wal, refs, &n, (uint8_t)i, rand_next(&rng) % 500, i);
    append_ref(wal, refs, &n, 1, 10000, 5000); /* bigger than a segment: its own segment */
    append_ref(wal, refs, &n, 2, 10, 5001);
    wal_stats_t s;
    wal_stats(wal, &s);
    assert_true(s.segments > 20);
    assert_int_equal(count_segments(dir), s.segments);
    check_replay(wal, 0, refs, n);

    /* Segments are named by their first LSN and stay within the size
     * (the 10,000-byte record has one of its own). */
    char p[400];
    struct stat sb;
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        seg_path(dir, refs[i].lsn, p, sizeof p);
        if (stat(p, &sb) != 0)
            continue;
        found++;
        if (refs[i].len == 10000)
            assert_int_equal(sb.st_size, WAL_HEADER_BYTES + 10000);
        else
            assert_true(sb.st_size <= 4096);
    }
    assert_int_equal(found, s.segments);

    /* Rotation: an empty active segment is not rotated again. */
    uint64_t next = 0;
    assert_int_equal(wal_rotate(wal, &next, &err), CP_OK);
    assert_int_equal(next, n + 1);
    assert_int_equal(wal_rotate(wal, &next, &err), CP_OK);
    assert_int_equal(next, n + 1);
    wal_stats(wal, &s);
    uint64_t nseg = s.segments;
    seg_path(dir, n + 1, p, sizeof p);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_size, 0);

    /* truncate_before(300): segments whose records are all <= 300 go. */
    unsigned deleted = 0;
    assert_int_equal(wal_truncate_before(wal, 300, &deleted, &err), CP_OK);
    assert_true(deleted > 5);
    wal_stats(wal, &s);
    assert_int_equal(s.segments, nseg - deleted);
    assert_int_equal(count_segments(dir), s.segments);
    assert_true(s.first_lsn <= 301);
    assert_true(s.first_lsn > 250);
    check_replay(wal, 300, refs, n);
    check_replay(wal, s.first_lsn - 1, refs, n);
    /* Records before the first segment are gone: an error, not a silent skip. */
    assert_int_equal(wal_replay(wal, 0, check_cb, &(collect_t){0}, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "deleted"));

    /* Truncating everything keeps the (empty) active segment. */
    assert_int_equal(wal_truncate_before(wal, UINT64_MAX - 1, &deleted, &err), CP_OK);
    wal_stats(wal, &s);
    assert_int_equal(s.segments, 1);
    assert_int_equal(s.first_lsn, n + 1);
    check_replay(wal, n, refs, n);
    wal_close(wal);

    /* Reopen: the log continues after n even though it holds no record. */
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), n);
    append_ref(wal, refs, &n, 3, 100, 6000);
    assert_int_equal(refs[n - 1].lsn, n);
    check_replay(wal, n - 1, refs, n);
    wal_close(wal);
    free(refs);
    test_rmtree(dir);
}

/* ----------------------------------------------------------- torn tails */

/* Builds a log of 2+ segments, returns refs and the last segment's bytes. */
typedef struct torn_fixture {
    char dir[256];
    ref_t refs[200];
    size_t n;
    uint64_t last_first; /* first LSN of the last segment */
    unsigned char *seg;  /* its intact contents */
    size_t seg_len;
    size_t last_off; /* offset of the last record in it */
} torn_fixture_t;

static void torn_build(torn_fixture_t *fx, const char *tag)
{
    test_tmpdir(fx->dir, sizeof fx->dir, tag);
    wal_options_t o = opts_none(8192);
    wal_t *wal = NULL;
    cp_error_t err = {0};
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    fx->n = 0;
    for (int i = 0; i < 60; i++)
        append_ref(wal, fx->refs, &fx->n, (uint8_t)i, 200 + (size_t)i, i);
    wal_stats_t s;
    wal_stats(wal, &s);
    assert_true(s.segments >= 2);
    wal_close(wal);
    /* The last segment: the highest name. */
    uint64_t lf = 1;
    for (uint64_t l = 1; l <= fx->n; l++) {
        char p[400];
        seg_path(fx->dir, l, p, sizeof p);
        if (access(p, F_OK) == 0)
            lf = l;
    }
    fx->last_first = lf;
    char p[400];
    seg_path(fx->dir, lf, p, sizeof p);
    fx->seg = (unsigned char *)test_read_file(p, &fx->seg_len);
    fx->last_off = fx->seg_len - (WAL_HEADER_BYTES + fx->refs[fx->n - 1].len);
}

/* Writes `bytes` as the last segment, reopens, expects exactly the first
 * `keep` records, appends one more and checks it continues the LSNs. */
static void torn_check(torn_fixture_t *fx, const unsigned char *bytes, size_t len, size_t keep,
                       uint64_t cut)
{
    char p[400];
    seg_path(fx->dir, fx->last_first, p, sizeof p);
    write_file(p, bytes, len);
    wal_options_t o = opts_none(8192);
    int logged = 0;
    o.log_ud = &logged;
    wal_t *wal = NULL;
    cp_error_t err = {0};
    if (wal_open(fx->dir, &o, &wal, &err) != CP_OK)
        fail_msg("open: %s", err.message);
    assert_int_equal(wal_last_lsn(wal), keep);
    wal_stats_t s;
    wal_stats(wal, &s);
    assert_int_equal(s.truncated_bytes, cut);
    assert_int_equal(logged, cut > 0);
    check_replay(wal, 0, fx->refs, keep);
    ref_t extra[201];
    memcpy(extra, fx->refs, keep * sizeof *extra);
    size_t m = keep;
    append_ref(wal, extra, &m, 0xEE, 50, 999);
    assert_int_equal(extra[keep].lsn, keep + 1);
    wal_close(wal);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    check_replay(wal, 0, extra, m);
    wal_stats(wal, &s);
    assert_int_equal(s.truncated_bytes, 0);
    wal_close(wal);
}

static void test_torn_tail_every_byte(void **state)
{
    (void)state;
    torn_fixture_t *fx = calloc(1, sizeof *fx);
    torn_build(fx, "torn");
    /* Cut the last record at every byte offset. */
    for (size_t cut = fx->last_off; cut < fx->seg_len; cut++)
        torn_check(fx, fx->seg, cut, fx->n - 1, cut - fx->last_off);
    /* Intact, and with garbage (zeros) after the end. */
    torn_check(fx, fx->seg, fx->seg_len, fx->n, 0);
    unsigned char *z = calloc(1, fx->seg_len + 4096);
    memcpy(z, fx->seg, fx->seg_len);
    torn_check(fx, z, fx->seg_len + 4096, fx->n, 4096);
    /* The whole last segment empty or torn in its first record. */
    torn_check(fx, fx->seg, 0, fx->last_first - 1, 0);
    torn_check(fx, fx->seg, 5, fx->last_first - 1, 5);
    free(z);
    free(fx->seg);
    test_rmtree(fx->dir);
    free(fx);
}

static void test_torn_tail_bit_flips(void **state)
{
    (void)state;
    torn_fixture_t *fx = calloc(1, sizeof *fx);
    torn_build(fx, "flip");
    unsigned char *b = malloc(fx->seg_len);
    size_t rec = fx->last_off, tail = fx->seg_len - rec;
    /* Every bit of the header (length, CRC, LSN, type), sampled payload bits. */
    for (size_t off = rec; off < fx->seg_len; off += off < rec + WAL_HEADER_BYTES ? 1 : 13)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(b, fx->seg, fx->seg_len);
            b[off] ^= (unsigned char)(1u << bit);
            torn_check(fx, b, fx->seg_len, fx->n - 1, tail);
        }
    /* A well-formed record with the wrong LSN (valid CRC) ends the log too:
     * an LSN that skips ahead, and the previous record written twice. */
    memcpy(b, fx->seg, fx->seg_len);
    uint64_t bad = fx->refs[fx->n - 1].lsn + 5;
    for (int i = 0; i < 8; i++)
        b[rec + 8 + i] = (unsigned char)(bad >> (8 * i));
    uint32_t crc = wal_crc32c(wal_crc32c(0, b + rec + 8, 9), b + rec + WAL_HEADER_BYTES,
                              fx->refs[fx->n - 1].len);
    for (int i = 0; i < 4; i++)
        b[rec + 4 + i] = (unsigned char)(crc >> (8 * i));
    torn_check(fx, b, fx->seg_len, fx->n - 1, tail);
    size_t prev_len = WAL_HEADER_BYTES + fx->refs[fx->n - 2].len;
    unsigned char *dup = malloc(rec + prev_len);
    memcpy(dup, fx->seg, rec);
    memcpy(dup + rec, fx->seg + rec - prev_len, prev_len);
    torn_check(fx, dup, rec + prev_len, fx->n - 1, prev_len);
    free(dup);

    free(b);
    free(fx->seg);
    test_rmtree(fx->dir);
    free(fx);
}

/* Damage in a segment other than the last: open succeeds (only the last is
 * read), replay reports CP_ECORRUPT with the file, the offset and the
 * records that follow. */
static void test_middle_corruption(void **state)
{
    (void)state;
    torn_fixture_t *fx = calloc(1, sizeof *fx);
    torn_build(fx, "mid");
    char p[400];
    seg_path(fx->dir, 1, p, sizeof p);
    size_t len;
    unsigned char *orig = (unsigned char *)test_read_file(p, &len);
    unsigned char *b = malloc(len);
    wal_options_t o = opts_none(8192);
    wal_t *wal = NULL;
    cp_error_t err = {0};
    char name[32];
    wal_segment_name(1, name, sizeof name);

    /* A flipped payload byte in the second record. */
    size_t off = WAL_HEADER_BYTES + fx->refs[0].len;
    memcpy(b, orig, len);
    b[off + WAL_HEADER_BYTES + 10] ^= 1;
    write_file(p, b, len);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), fx->n);
    collect_t c = {fx->refs, fx->n, 1, 0, 0, 0};
    assert_int_equal(wal_replay(wal, 0, check_cb, &c, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, name));
    char want[64];
    snprintf(want, sizeof want, "offset %zu", off);
    assert_non_null(strstr(err.message, want));
    assert_non_null(strstr(err.message, "CRC"));
    snprintf(want, sizeof want, "%zu acknowledged records follow it", fx->n - 2);
    if (strstr(err.message, want) == NULL)
        fail_msg("%s: no \"%s\"", err.message, want);
    assert_int_equal(c.seen, 1); /* the record before it was delivered, none after */
    /* Replaying only later segments does not need the damaged one. */
    check_replay(wal, fx->last_first - 1, fx->refs, fx->n);
    wal_close(wal);

    /* The first segment lost its last record: an LSN gap. */
    size_t recs1 = 0, end1 = 0;
    while (end1 < len) {
        end1 += WAL_HEADER_BYTES + fx->refs[recs1].len;
        recs1++;
    }
    assert_int_equal(end1, len);
    write_file(p, orig, len - (WAL_HEADER_BYTES + fx->refs[recs1 - 1].len));
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_replay(wal, 0, NULL, NULL, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "gap"));
    wal_close(wal);

    /* ... or half of it: torn record in a non-last segment. */
    write_file(p, orig, len - 7);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_replay(wal, 0, NULL, NULL, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "partial record payload"));
    assert_non_null(strstr(err.message, name));
    wal_close(wal);

    /* A length over the limit in an older segment. */
    memcpy(b, orig, len);
    b[3] = 0x7F;
    write_file(p, b, len);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_replay(wal, 0, NULL, NULL, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "over the limit"));
    assert_non_null(strstr(err.message, "offset 0"));
    wal_close(wal);

    /* Restored, replay is whole again. */
    write_file(p, orig, len);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    check_replay(wal, 0, fx->refs, fx->n);
    wal_close(wal);
    free(b);
    free(orig);
    free(fx->seg);
    test_rmtree(fx->dir);
    free(fx);
}

/* Replay that records each LSN's type and length (for salvaged logs). */
typedef struct seen_rec {
    uint64_t n;
    uint8_t type[256];
    size_t len[256];
} seen_rec_t;

static cp_status seen_cb(void *ud, uint64_t lsn, uint8_t type, const void *payload, size_t len,
                         cp_error_t *err)
{
    (void)payload;
    (void)err;
    seen_rec_t *s = ud;
    if (lsn < 256) {
        s->type[lsn] = type;
        s->len[lsn] = len;
    }
    s->n++;
    return CP_OK;
}

/*
 * One flipped byte in the middle of the newest segment, valid records
 * after it: not a torn tail. wal_open refuses (it used to cut the log
 * there, dropping every acknowledged record after the flip), naming the
 * segment, the offset and the records that follow; wal_salvage keeps every
 * valid record, sets the damaged one aside and leaves a no-op in its LSN.
 */
static void test_damage_mid_newest_segment(void **state)
{
    (void)state;
    torn_fixture_t *fx = calloc(1, sizeof *fx);
    torn_build(fx, "midnew");
    size_t idx = fx->last_first - 1; /* refs index of the newest segment's first record */
    size_t recs = fx->n - idx;
    assert_true(recs >= 3);
    size_t off2 = WAL_HEADER_BYTES + fx->refs[idx].len; /* its second record */
    unsigned char *b = malloc(fx->seg_len);
    memcpy(b, fx->seg, fx->seg_len);
    b[off2 + WAL_HEADER_BYTES + 3] ^= 0x40;
    char p[400];
    seg_path(fx->dir, fx->last_first, p, sizeof p);
    write_file(p, b, fx->seg_len);

    wal_options_t o = opts_none(8192);
    wal_t *wal = NULL;
    cp_error_t err = {0};
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_ECORRUPT);
    assert_null(wal);
    char name[32], want[512];
    wal_segment_name(fx->last_first, name, sizeof name);
    assert_non_null(strstr(err.message, name));
    snprintf(want, sizeof want, "byte offset %zu", off2);
    assert_non_null(strstr(err.message, want));
    snprintf(want, sizeof want, "%zu acknowledged records follow it", recs - 2);
    if (strstr(err.message, want) == NULL)
        fail_msg("%s: no \"%s\"", err.message, want);
    /* Nothing was cut: the file is as it was. */
    size_t l2 = 0;
    unsigned char *now = (unsigned char *)test_read_file(p, &l2);
    assert_int_equal(l2, fx->seg_len);
    free(now);

    /* Zeroed 4 KiB in the middle of the newest segment: the same. */
    unsigned char *z = malloc(fx->seg_len);
    memcpy(z, fx->seg, fx->seg_len);
    assert_true(fx->seg_len > 6000);
    memset(z + 1000, 0, 4096 < fx->seg_len - 1500 ? 4096 : fx->seg_len - 1500);
    write_file(p, z, fx->seg_len);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_ECORRUPT);
    assert_non_null(strstr(err.message, "acknowledged records follow"));
    free(z);
    write_file(p, b, fx->seg_len);

    /* Explicit salvage. */
    char side[400];
    snprintf(side, sizeof side, "%s/dropped.bin", fx->dir);
    wal_salvage_report_t rep;
    assert_int_equal(wal_salvage(fx->dir, 0, 0xFE, side, &rep, &err), CP_OK);
    assert_int_equal(rep.ranges, 1);
    assert_int_equal(rep.lsns_lost, 1);
    assert_int_equal(rep.records_kept, fx->n - 1);
    assert_int_equal(rep.bytes_dropped, WAL_HEADER_BYTES + fx->refs[idx + 1].len);
    assert_int_equal(rep.last_lsn, fx->n);
    size_t sl = 0;
    unsigned char *sb = (unsigned char *)test_read_file(side, &sl);
    snprintf(want, sizeof want, "crowdpack-wal-dropped segment %s/wal/%s offset %zu length %zu",
             fx->dir, name, off2, (size_t)rep.bytes_dropped);
    assert_true(sl > strlen(want) + rep.bytes_dropped);
    assert_memory_equal(sb, want, strlen(want));
    /* The raw bytes follow the line, exactly. */
    unsigned char *nl = memchr(sb, '\n', sl);
    assert_non_null(nl);
    assert_memory_equal(nl + 1, b + off2, rep.bytes_dropped);
    free(sb);

    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), fx->n);
    seen_rec_t *sr = calloc(1, sizeof *sr);
    assert_int_equal(wal_replay(wal, 0, seen_cb, sr, &err), CP_OK);
    assert_int_equal(sr->n, fx->n);
    for (size_t i = 0; i < fx->n; i++) {
        uint64_t lsn = fx->refs[i].lsn;
        if (i == idx + 1) {
            assert_int_equal(sr->type[lsn], 0xFE);
            assert_int_equal(sr->len[lsn], 0);
        } else {
            assert_int_equal(sr->type[lsn], fx->refs[i].type);
            assert_int_equal(sr->len[lsn], fx->refs[i].len);
        }
    }
    free(sr);
    wal_close(wal);
    /* A second salvage finds nothing to do. */
    assert_int_equal(wal_salvage(fx->dir, 0, 0xFE, side, &rep, &err), CP_OK);
    assert_int_equal(rep.ranges + rep.lsns_lost + rep.segments_rewritten, 0);
    free(b);
    free(fx->seg);
    test_rmtree(fx->dir);
    free(fx);
}

/* Salvage of an older segment's damage, of deleted segments and of a log
 * that ends before what the store applied. */
static void test_salvage_cases(void **state)
{
    (void)state;
    torn_fixture_t *fx = calloc(1, sizeof *fx);
    torn_build(fx, "salv");
    char p[400], side[400];
    seg_path(fx->dir, 1, p, sizeof p);
    snprintf(side, sizeof side, "%s/dropped.bin", fx->dir);
    size_t len;
    unsigned char *orig = (unsigned char *)test_read_file(p, &len);
    /* The first segment loses its last 7 bytes: its last record is gone. */
    write_file(p, orig, len - 7);
    wal_options_t o = opts_none(8192);
    wal_t *wal = NULL;
    cp_error_t err = {0};
    wal_salvage_report_t rep;
    assert_int_equal(wal_salvage(fx->dir, 0, 0xFE, side, &rep, &err), CP_OK);
    assert_int_equal(rep.ranges, 1);
    assert_int_equal(rep.lsns_lost, 1);
    assert_int_equal(rep.records_kept, fx->n - 1);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    seen_rec_t *sr = calloc(1, sizeof *sr);
    assert_int_equal(wal_replay(wal, 0, seen_cb, sr, &err), CP_OK);
    assert_int_equal(sr->n, fx->n);
    wal_close(wal);

    /* Every segment deleted; the store had applied 70 (past the log's 60). */
    char wdir[600];
    snprintf(wdir, sizeof wdir, "%s/wal", fx->dir);
    DIR *wd = opendir(wdir);
    assert_non_null(wd);
    for (struct dirent *e; (e = readdir(wd)) != NULL;) {
        size_t nl = strlen(e->d_name);
        if (nl > 4 && strcmp(e->d_name + nl - 4, ".wal") == 0)
            assert_int_equal(unlinkat(dirfd(wd), e->d_name, 0), 0);
    }
    closedir(wd);
    assert_int_equal(wal_salvage(fx->dir, 70, 0xFE, side, &rep, &err), CP_OK);
    assert_int_equal(rep.lsns_lost, 0);
    assert_int_equal(rep.last_lsn, 70);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), 70);
    wal_close(wal);

    /* A log ending at 10 while the store applied 15: no-ops 11..15. */
    test_rmtree(wdir);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    for (int i = 0; i < 10; i++)
        assert_int_equal(wal_append(wal, 1, "x", 1, NULL, &err), CP_OK);
    wal_close(wal);
    assert_int_equal(wal_salvage(fx->dir, 15, 0xFE, side, &rep, &err), CP_OK);
    assert_int_equal(rep.lsns_lost, 5);
    assert_int_equal(rep.records_kept, 10);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), 15);
    wal_close(wal);
    /* 8 MiB of random bytes after the log's records: a torn tail (no valid
     * record in it), found in linear time — the byte-by-byte search tests
     * length and LSN before it computes a CRC. */
    test_rmtree(wdir);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(wal_append(wal, 1, "abc", 3, NULL, &err), CP_OK);
    wal_close(wal);
    seg_path(fx->dir, 1, p, sizeof p);
    size_t glen = 8u << 20;
    unsigned char *g = malloc(glen);
    uint64_t seed = 99;
    for (size_t i = 0; i < glen; i += 8) {
        uint64_t r = rand_next(&seed);
        memcpy(g + i, &r, 8);
    }
    FILE *f = fopen(p, "ab");
    assert_non_null(f);
    assert_int_equal(fwrite(g, 1, glen, f), glen);
    fclose(f);
    free(g);
    time_t t0 = time(NULL);
    assert_int_equal(wal_open(fx->dir, &o, &wal, &err), CP_OK);
    assert_int_equal(wal_last_lsn(wal), 3);
    wal_close(wal);
    assert_true(time(NULL) - t0 < 30);
    free(sr);
    free(orig);
    free(fx->seg);
    test_rmtree(fx->dir);
    free(fx);
}

/* ------------------------------------------------------- concurrency */

#define CONC_THREADS 8
#define CONC_RECORDS 250

typedef struct conc {
    wal_t *wal;
    int tid;
    uint64_t lsns[CONC_RECORDS];
    int failed;
} conc_t;

/* Payload of (thread, seq): 16 header bytes then filler; length varies. */
static size_t conc_payload(unsigned char *p, int tid, int seq)
{
    size_t len = 16 + (size_t)((tid * 131 + seq * 17) % 300);
    fill_payload(p, len, (uint64_t)tid << 32 | (uint64_t)seq);
    memcpy(p, &tid, sizeof tid);
    memcpy(p + 4, &seq, sizeof seq);
    return len;
}

static void *conc_thread(void *arg)
{
    conc_t *c = arg;
    unsigned char p[400];
    cp_error_t err = {0};
    for (int i = 0; i < CONC_RECORDS; i++) {
        size_t len = conc_payload(p, c->tid, i);
        if (wal_append(c->wal, (uint8_t)c->tid, p, len, &c->lsns[i], &err) != CP_OK)
            c->failed++;
        /* Every other record is synced on its own; the rest ride along. */
        if (i % 2 == 1 || i == CONC_RECORDS - 1) {
            if (wal_sync(c->wal, c->lsns[i], &err) != CP_OK)
                c->failed++;
            if (wal_durable_lsn(c->wal) < c->lsns[i])
                c->failed++;
        }
    }
    return NULL;
}

typedef struct conc_check {
    uint64_t last;
    int next_seq[CONC_THREADS];
    uint64_t (*lsn_of)[CONC_RECORDS];
    int bad;
    uint64_t seen;
} conc_check_t;

static cp_status conc_cb(void *ud, uint64_t lsn, uint8_t type, const void *payload, size_t len,
                         cp_error_t *err)
{
    (void)err;
    conc_check_t *k = ud;
    k->seen++;
    if (lsn != k->last + 1)
        k->bad++;
    k->last = lsn;
    int tid, seq;
    if (len < 16) {
        k->bad++;
        return CP_OK;
    }
    memcpy(&tid, payload, 4);
    memcpy(&seq, (const char *)payload + 4, 4);
    if (tid < 0 || tid >= CONC_THREADS || seq != k->next_seq[tid] || type != tid) {
        k->bad++;
        return CP_OK;
    }
    k->next_seq[tid]++;
    unsigned char want[400];
    size_t wl = conc_payload(want, tid, seq);
    if (wl != len || memcmp(want, payload, len) != 0 || k->lsn_of[tid][seq] != lsn)
        k->bad++;
    return CP_OK;
}

static void run_concurrent(const char *tag, wal_sync_mode mode, uint64_t seg)
{
    char dir[256];
    test_tmpdir(dir, sizeof dir, tag);
    wal_options_t o = {0};
    o.sync = mode;
    o.segment_bytes = seg;
    o.log = quiet_log;
    wal_t *wal = NULL;
    cp_error_t err = {0};
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    conc_t *cs = calloc(CONC_THREADS, sizeof *cs);
    pthread_t th[CONC_THREADS];
    for (int t = 0; t < CONC_THREADS; t++) {
        cs[t].wal = wal;
        cs[t].tid = t;
        assert_int_equal(pthread_create(&th[t], NULL, conc_thread, &cs[t]), 0);
    }
    for (int t = 0; t < CONC_THREADS; t++)
        pthread_join(th[t], NULL);
    uint64_t(*lsn_of)[CONC_RECORDS] = malloc(sizeof(uint64_t[CONC_THREADS][CONC_RECORDS]));
    for (int t = 0; t < CONC_THREADS; t++) {
        assert_int_equal(cs[t].failed, 0);
        memcpy(lsn_of[t], cs[t].lsns, sizeof cs[t].lsns);
        for (int i = 1; i < CONC_RECORDS; i++)
            assert_true(cs[t].lsns[i] > cs[t].lsns[i - 1]);
    }
    uint64_t total = CONC_THREADS * CONC_RECORDS;
    assert_int_equal(wal_last_lsn(wal), total);
    assert_int_equal(wal_durable_lsn(wal), total);
    wal_stats_t s;
    wal_stats(wal, &s);
    assert_true(s.fsyncs <= s.sync_calls);
    conc_check_t k = {0};
    k.lsn_of = lsn_of;
    assert_int_equal(wal_replay(wal, 0, conc_cb, &k, &err), CP_OK);
    assert_int_equal(k.bad, 0);
    assert_int_equal(k.seen, total);
    wal_close(wal);
    /* And once more from disk. */
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    memset(&k, 0, sizeof k);
    k.lsn_of = lsn_of;
    assert_int_equal(wal_replay(wal, 0, conc_cb, &k, &err), CP_OK);
    assert_int_equal(k.bad, 0);
    assert_int_equal(k.seen, total);
    wal_close(wal);
    free(lsn_of);
    free(cs);
    test_rmtree(dir);
}

static void test_concurrent_fdatasync(void **state)
{
    (void)state;
    run_concurrent("conc", WAL_SYNC_FDATASYNC, 0);
}

static void test_concurrent_rotating(void **state)
{
    (void)state;
    /* Small segments: rotations race with group-commit leaders. */
    run_concurrent("concrot", WAL_SYNC_FDATASYNC, 16384);
}

/* Group commit: with a slow "disk" (the hook sleeps 2 ms per fsync), eight
 * threads that each sync every record need far fewer fsyncs than syncs. */
typedef struct gc_state {
    wal_t *wal;
    int failed;
} gc_state_t;

static void slow_disk(void *ud)
{
    (*(volatile int *)ud)++;
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void *gc_thread(void *arg)
{
    gc_state_t *g = arg;
    cp_error_t err = {0};
    for (int i = 0; i < 60; i++) {
        uint64_t lsn;
        if (wal_append(g->wal, 1, "payload", 7, &lsn, &err) != CP_OK ||
            wal_sync(g->wal, lsn, &err) != CP_OK || wal_durable_lsn(g->wal) < lsn)
            g->failed++;
    }
    return NULL;
}

static void test_group_commit_batches(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "gc");
    int hook_calls = 0;
    wal_options_t o = {0};
    o.sync = WAL_SYNC_FDATASYNC;
    o.on_fsync = slow_disk;
    o.on_fsync_ud = &hook_calls;
    wal_t *wal = NULL;
    cp_error_t err = {0};
    assert_int_equal(wal_open(dir, &o, &wal, &err), CP_OK);
    gc_state_t g[8];
    pthread_t th[8];
    for (int t = 0; t < 8; t++) {
        g[t] = (gc_state_t){wal, 0};
        assert_int_equal(pthread_create(&th[t], NULL, gc_thread, &g[t]), 0);
    }
    for (int t = 0; t < 8; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(g[t].failed, 0);
    }
    wal_stats_t s;
    wal_stats(wal, &s);
    assert_int_equal(s.fsyncs, (uint64_t)hook_calls);
    assert_true(s.sync_calls <= 480);
    assert_true(s.sync_calls >= 100);
    /* Each round serves every thread that was waiting; allow a lot of slack. */
    if (s.fsyncs * 2 > s.sync_calls)
        fail_msg("group commit did not batch: %llu fsyncs for %llu syncs",
                 (unsigned long long)s.fsyncs, (unsigned long long)s.sync_calls);
    print_message("group commit: %llu fsyncs for %llu syncs\n", (unsigned long long)s.fsyncs,
                  (unsigned long long)s.sync_calls);
    /* Syncing what is already durable costs nothing. */
    uint64_t before = s.fsyncs;
    assert_int_equal(wal_sync(wal, 1, &err), CP_OK);
    assert_int_equal(wal_sync(wal, UINT64_MAX, &err), CP_OK);
    wal_stats(wal, &s);
    assert_int_equal(s.fsyncs, before);
    wal_close(wal);
    test_rmtree(dir);
}

/* --------------------------------------------------------------- crash */

/* What the child reports per durable record: 24 bytes, under PIPE_BUF so
 * writes from several threads never interleave. */
typedef struct crash_msg {
    uint64_t lsn;
    uint32_t cycle, tid;
    uint64_t seq;
} crash_msg_t;

static size_t crash_payload(unsigned char *p, uint32_t cycle, uint32_t tid, uint64_t seq)
{
    uint64_t key = (uint64_t)cycle << 48 ^ (uint64_t)tid << 40 ^ seq;
    size_t len = 16 + (size_t)(key * 2654435761u % 3000);
    fill_payload(p, len, key);
    memcpy(p, &cycle, 4);
    memcpy(p + 4, &tid, 4);
    memcpy(p + 8, &seq, 8);
    return len;
}

typedef struct crash_child {
    wal_t *wal;
    int fd;
    uint32_t cycle, tid;
} crash_child_t;

static void *crash_writer(void *arg)
{
    crash_child_t *c = arg;
    unsigned char p[4096];
    cp_error_t err = {0};
    for (uint64_t seq = 0;; seq++) {
        size_t len = crash_payload(p, c->cycle, c->tid, seq);
        uint64_t lsn;
        if (wal_append(c->wal, (uint8_t)c->tid, p, len, &lsn, &err) != CP_OK ||
            wal_sync(c->wal, lsn, &err) != CP_OK)
            _exit(3);
        crash_msg_t m = {lsn, c->cycle, c->tid, seq};
        if (write(c->fd, &m, sizeof m) != (ssize_t)sizeof m)
            _exit(4);
    }
    return NULL;
}

static void crash_child_main(const char *dir, int fd, uint32_t cycle)
{
    wal_options_t o = {0};
    o.segment_bytes = 64 << 10; /* rotations happen during the run too */
    o.log = quiet_log;
    wal_t *wal = NULL;
    if (wal_open(dir, &o, &wal, NULL) != CP_OK)
        _exit(2);
    crash_child_t cs[3];
    pthread_t th[3];
    for (uint32_t t = 0; t < 3; t++) {
        cs[t] = (crash_child_t){wal, fd, cycle, t};
        pthread_create(&th[t], NULL, crash_writer, &cs[t]);
    }
    for (;;)
        pause();
}

typedef struct crash_verify {
    unsigned char *present; /* by lsn: 1 if replayed with a valid payload */
    uint64_t cap;
    int bad;
} crash_verify_t;

static cp_status crash_cb(void *ud, uint64_t lsn, uint8_t type, const void *payload, size_t len,
                          cp_error_t *err)
{
    (void)err;
    crash_verify_t *v = ud;
    uint32_t cycle, tid;
    uint64_t seq;
    if (len < 16 || lsn >= v->cap) {
        v->bad++;
        return CP_OK;
    }
    memcpy(&cycle, payload, 4);
    memcpy(&tid, (const char *)payload + 4, 4);
    memcpy(&seq, (const char *)payload + 8, 8);
    unsigned char want[4096];
    size_t wl = crash_payload(want, cycle, tid, seq);
    if (wl != len || memcmp(want, payload, len) != 0 || type != tid)
        v->bad++;
    v->present[lsn] = 1;
    return CP_OK;
}

static void test_crash_kill9(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "crash");
    uint64_t rng = (uint64_t)time(NULL) ^ (uint64_t)getpid();
    uint64_t cap = 1u << 22;
    crash_msg_t *acked = malloc(sizeof *acked * cap);
    size_t nacked = 0;
    crash_verify_t v = {calloc(cap, 1), cap, 0};
    for (uint32_t cycle = 1; cycle <= 15; cycle++) {
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            crash_child_main(dir, pfd[1], cycle);
            _exit(0);
        }
        close(pfd[1]);
        /* Let it run 20-300 ms, reading what it reports meanwhile. */
        uint64_t until = time_mono_ns() + (20 + rand_next(&rng) % 280) * 1000000ull;
        int fl = fcntl(pfd[0], F_GETFL);
        fcntl(pfd[0], F_SETFL, fl | O_NONBLOCK);
        crash_msg_t m;
        while (time_mono_ns() < until) {
            ssize_t r = read(pfd[0], &m, sizeof m);
            if (r == (ssize_t)sizeof m && nacked < cap)
                acked[nacked++] = m;
            else if (r < 0 && errno == EAGAIN) {
                struct timespec ts = {0, 200000};
                nanosleep(&ts, NULL);
            } else if (r == 0)
                break;
        }
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status))
            fail_msg("child exited with %d before the kill", WEXITSTATUS(status));
        fcntl(pfd[0], F_SETFL, fl);
        ssize_t r;
        while ((r = read(pfd[0], &m, sizeof m)) == (ssize_t)sizeof m)
            if (nacked < cap)
                acked[nacked++] = m;
        close(pfd[0]);

        /* Reopen: everything reported durable is there, intact. */
        wal_options_t o = {0};
        o.sync = WAL_SYNC_NONE;
        o.segment_bytes = 64 << 10;
        o.log = quiet_log;
        wal_t *wal = NULL;
        cp_error_t err = {0};
        if (wal_open(dir, &o, &wal, &err) != CP_OK)
            fail_msg("reopen after kill: %s", err.message);
        memset(v.present, 0, cap);
        if (wal_replay(wal, 0, crash_cb, &v, &err) != CP_OK)
            fail_msg("replay after kill: %s", err.message);
        assert_int_equal(v.bad, 0);
        for (size_t i = 0; i < nacked; i++) {
            if (acked[i].lsn >= cap || !v.present[acked[i].lsn])
                fail_msg("cycle %u: acknowledged LSN %llu missing", cycle,
                         (unsigned long long)acked[i].lsn);
        }
        /* Replay delivered a contiguous 1..last. */
        uint64_t last = wal_last_lsn(wal);
        for (uint64_t l = 1; l <= last && l < cap; l++)
            assert_true(v.present[l]);
        wal_close(wal);
    }
    /* Some cycles must actually have written something. */
    assert_true(nacked > 15);
    print_message("crash test: %zu acknowledged records checked over 15 kills\n", nacked);
    free(acked);
    free(v.present);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_rotation_truncate),
        cmocka_unit_test(test_torn_tail_every_byte),
        cmocka_unit_test(test_torn_tail_bit_flips),
        cmocka_unit_test(test_middle_corruption),
        cmocka_unit_test(test_damage_mid_newest_segment),
        cmocka_unit_test(test_salvage_cases),
        cmocka_unit_test(test_concurrent_fdatasync),
        cmocka_unit_test(test_concurrent_rotating),
        cmocka_unit_test(test_group_commit_batches),
        cmocka_unit_test(test_crash_kill9),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
