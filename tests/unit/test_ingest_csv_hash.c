/*
 * test_ingest_csv_hash.c — the CSV reader's prefix hash (csv_hash_start /
 * csv_hash_at, csv.h), which imports use to recognise content they took
 * before: at every record end it must equal XXH3-128 of the raw bytes up
 * to there, whatever the reader did to them (fields cut in place in its
 * buffer, records straddling refills, quoted fields through the state
 * machine), from plain and gzip files, streamed and whole, from the start
 * and resumed with a saved state. Also csv_last_closed on a last line
 * without a line break.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>
#include <zlib.h>

#include "ingest/csv.h"

/* ~600 KB of rows (more than two 256 KiB refills), some quoted, some with
 * CRLF, one long one. */
static char *make_text(size_t *len)
{
    size_t cap = 1u << 21, n = 0;
    char *t = malloc(cap);
    assert_non_null(t);
    n += (size_t)sprintf(t, "id,name,amount\n");
    for (int i = 0; n + 5000 < cap && i < 9000; i++) {
        if (i % 13 == 0)
            n += (size_t)sprintf(t + n, "%d,\"Name, with comma %d\",%d.5\r\n", i, i, i);
        else if (i == 4000) {
            n += (size_t)sprintf(t + n, "%d,", i);
            for (int k = 0; k < 3000; k++)
                t[n++] = 'x';
            n += (size_t)sprintf(t + n, ",1\n");
        } else
            n += (size_t)sprintf(t + n, "%d,plain name %d,%d\n", i, i % 50, i * 3);
    }
    *len = n;
    return t;
}

static void write_file(const char *path, const char *t, size_t n, int gz)
{
    if (gz) {
        gzFile g = gzopen(path, "wb");
        assert_non_null(g);
        assert_int_equal(gzwrite(g, t, (unsigned)n), (int)n);
        gzclose(g);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(t, 1, n, f), n);
        fclose(f);
    }
}

/* Reads path from offset `from` (state st there, NULL at 0) and checks the
 * digest at every record end against the text. */
static void check_reader(const char *path, int stream, const char *t, size_t n, uint64_t from,
                         uint64_t line0, const XXH3_state_t *st)
{
    csv_opts_t o = {.stream = stream};
    csv_reader_t *r = NULL;
    cp_error_t err = {0};
    assert_int_equal(csv_open(path, &o, &r, &err), CP_OK);
    if (from)
        assert_int_equal(csv_seek(r, from, line0, &err), CP_OK);
    assert_int_equal(csv_hash_start(r, st, &err), CP_OK);
    XXH3_state_t *out = XXH3_createState();
    const csv_field_t *f;
    size_t nf;
    uint64_t records = 0;
    for (;;) {
        cp_status rc = csv_next(r, &f, &nf, &err);
        assert_int_equal(rc, CP_OK);
        uint64_t off = csv_offset(r);
        assert_int_equal(csv_hash_at(r, off, out, &err), CP_OK);
        XXH128_hash_t want = XXH3_128bits(t, (size_t)off);
        assert_true(XXH128_isEqual(XXH3_128bits_digest(out), want));
        if (f == NULL)
            break;
        assert_true(csv_last_closed(r));
        records++;
    }
    assert_int_equal(csv_offset(r), n);
    assert_true(records > 100);
    XXH3_freeState(out);
    csv_close(r);
}

static void test_prefix_hash(void **state)
{
    (void)state;
    size_t n;
    char *t = make_text(&n);
    char plain[] = "/tmp/cp-csvhash-XXXXXX";
    int fd = mkstemp(plain);
    assert_true(fd >= 0);
    close(fd);
    char gz[64];
    snprintf(gz, sizeof gz, "%s.gz", plain);
    write_file(plain, t, n, 0);
    write_file(gz, t, n, 1);
    check_reader(plain, 0, t, n, 0, 0, NULL);
    check_reader(gz, 0, t, n, 0, 0, NULL); /* inflated whole */
    check_reader(gz, 1, t, n, 0, 0, NULL); /* streamed */
    /* Resumed at a record end with the state of the bytes before it. */
    size_t at = 0;
    uint64_t lines = 0;
    for (size_t i = 0; i < n && lines < 5000; i++)
        if (t[i] == '\n') {
            lines++;
            at = i + 1;
        }
    XXH3_state_t *st = XXH3_createState();
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, t, at);
    check_reader(plain, 0, t, n, at, lines, st);
    check_reader(gz, 1, t, n, at, lines, st);
    XXH3_freeState(st);
    unlink(plain);
    unlink(gz);
    free(t);
}

/* A last line without a line break: reported, and the hash before it is
 * still there (an import holds the line back and records the bytes before). */
static void test_unterminated_last_line(void **state)
{
    (void)state;
    size_t n;
    char *t = make_text(&n);
    memcpy(t + n, "77,half a li", 12);
    n += 12;
    char plain[] = "/tmp/cp-csvhash-XXXXXX";
    int fd = mkstemp(plain);
    assert_true(fd >= 0);
    close(fd);
    write_file(plain, t, n, 0);
    csv_opts_t o = {.stream = 1};
    csv_reader_t *r = NULL;
    cp_error_t err = {0};
    assert_int_equal(csv_open(plain, &o, &r, &err), CP_OK);
    assert_int_equal(csv_hash_start(r, NULL, &err), CP_OK);
    assert_int_equal(csv_compressed(r), 0);
    const csv_field_t *f;
    size_t nf;
    uint64_t before = 0;
    for (;;) {
        assert_int_equal(csv_next(r, &f, &nf, &err), CP_OK);
        assert_non_null(f);
        if (!csv_last_closed(r))
            break;
        before = csv_offset(r);
    }
    assert_int_equal(before, n - 12);
    XXH3_state_t *out = XXH3_createState();
    assert_int_equal(csv_hash_at(r, before, out, &err), CP_OK);
    assert_true(XXH128_isEqual(XXH3_128bits_digest(out), XXH3_128bits(t, (size_t)before)));
    XXH3_freeState(out);
    csv_close(r);
    unlink(plain);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_hash),
        cmocka_unit_test(test_unterminated_last_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
