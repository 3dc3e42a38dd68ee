/*
 * test_ingest_csv_scan.c — the CSV reader's fast paths (runs of ordinary
 * bytes copied at once, inline delimiters, whole-record ASCII check)
 * against a naive byte-at-a-time reader of the same rules (csv.h), on
 * random byte soup with tight limits, from memory and through gzip (where
 * records straddle the input buffer); and CSV-shaped records for the
 * whole-record path (fields cut in place between delimiters).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "ingest/csv.h"
#include "util/util.h"

/* ------------------------------------------------------------ reference */

typedef struct ref {
    const char *in;
    size_t len, pos;
    uint64_t line;
    int started;
    csv_opts_t o;
} ref_t;

enum { R_START, R_UNQUOTED, R_QUOTED, R_QUOTE_SEEN, R_BAD };

/* One record as "a|b@line#offset\n" or "!line: message#offset\n"; 0 at the end. */
static int ref_next(ref_t *r, buf_t *out)
{
    char *rec = malloc(r->len + 2);
    size_t reclen = 0, nf = 1, cap = 64;
    size_t *starts = malloc(cap * sizeof *starts);
    starts[0] = 0;
    int state = R_START, any = 0, closed = 0;
    cp_status bad = CP_OK;
    char why[200] = "";
    uint64_t col = 1, line0 = r->line, bytes = 0, flen = 0;
#define RFAIL(code, ...)                                                                           \
    do {                                                                                           \
        if (bad == CP_OK) {                                                                        \
            bad = (code);                                                                          \
            snprintf(why, sizeof why, __VA_ARGS__);                                                \
        }                                                                                          \
    } while (0)
    while (r->pos < r->len) {
        if (!r->started) {
            r->started = 1;
            if (r->len - r->pos >= 3 && memcmp(r->in + r->pos, "\xEF\xBB\xBF", 3) == 0) {
                r->pos += 3;
                continue;
            }
        }
        char c = r->in[r->pos++];
        any = 1;
        if (++bytes > r->o.max_record)
            RFAIL(CP_ELIMIT, "record longer than %zu bytes", r->o.max_record);
        if (c == '\n')
            r->line++;
        int end_record = 0, end_field = 0, append = 0;
        switch (state) {
        case R_START:
            if (c == '"')
                state = R_QUOTED;
            else if (c == r->o.delim)
                end_field = 1;
            else if (c == '\n')
                end_record = 1;
            else if (c != '\r') {
                state = R_UNQUOTED;
                append = 1;
            }
            break;
        case R_UNQUOTED:
            if (c == r->o.delim)
                end_field = 1;
            else if (c == '\n')
                end_record = 1;
            else
                append = 1;
            break;
        case R_QUOTED:
            if (c == '"')
                state = R_QUOTE_SEEN;
            else
                append = 1;
            break;
        case R_QUOTE_SEEN:
            if (c == '"') {
                state = R_QUOTED;
                append = 1;
            } else if (c == r->o.delim) {
                end_field = 1;
            } else if (c == '\n') {
                end_record = 1;
            } else if (c != '\r') {
                RFAIL(CP_EINVAL, "column %llu: text after the closing quote of a quoted field",
                      (unsigned long long)col);
                state = R_BAD;
            }
            break;
        case R_BAD:
            if (c == '\n')
                end_record = 1;
            break;
        }
        if (append && bad == CP_OK) {
            if (++flen > r->o.max_field)
                RFAIL(CP_ELIMIT, "column %llu: field longer than %zu bytes",
                      (unsigned long long)col, r->o.max_field);
            else
                rec[reclen++] = c;
        }
        if (end_field || end_record) {
            if (state == R_UNQUOTED && end_record && reclen > starts[nf - 1] &&
                rec[reclen - 1] == '\r')
                reclen--;
            rec[reclen++] = '\0';
            flen = 0;
            if (end_record) {
                closed = 1;
                break;
            }
            col++;
            if (nf >= r->o.max_fields) {
                RFAIL(CP_ELIMIT, "more than %zu fields in a record", r->o.max_fields);
            } else {
                if (nf == cap)
                    starts = realloc(starts, (cap *= 2) * sizeof *starts);
                starts[nf++] = reclen;
            }
            state = R_START;
        }
    }
    int ret = 1;
    if (!any) {
        ret = 0;
        goto out;
    }
    if (state == R_QUOTED)
        RFAIL(CP_EINVAL, "column %llu: quoted field not closed before the end of the input",
              (unsigned long long)col);
    if (!closed) {
        if (state == R_UNQUOTED && reclen > starts[nf - 1] && rec[reclen - 1] == '\r')
            reclen--;
        rec[reclen++] = '\0';
    }
    if (bad) {
        buf_printf(out, "!%llu: line %llu: %s#%zu\n", (unsigned long long)line0,
                   (unsigned long long)line0, why, r->pos);
        goto out;
    }
    for (size_t i = 0; i < nf; i++) {
        size_t e = i + 1 < nf ? starts[i + 1] - 1 : reclen - 1;
        if (!utf8_valid(rec + starts[i], e - starts[i])) {
            buf_printf(out, "!%llu: line %llu: column %zu: invalid UTF-8#%zu\n",
                       (unsigned long long)line0, (unsigned long long)line0, i + 1, r->pos);
            goto out;
        }
    }
    for (size_t i = 0; i < nf; i++) {
        size_t e = i + 1 < nf ? starts[i + 1] - 1 : reclen - 1;
        buf_printf(out, "%s%.*s", i ? "|" : "", (int)(e - starts[i]), rec + starts[i]);
    }
    buf_printf(out, "@%llu#%zu\n", (unsigned long long)line0, r->pos);
out:
    free(rec);
    free(starts);
    return ret;
#undef RFAIL
}

static void ref_all(const char *in, size_t len, const csv_opts_t *o, buf_t *out)
{
    ref_t r = {.in = in, .len = len, .line = 1, .o = *o};
    while (ref_next(&r, out))
        ;
}

static void read_all(csv_reader_t *r, buf_t *out)
{
    for (;;) {
        const csv_field_t *f;
        size_t n;
        cp_error_t err = {0};
        cp_status rc = csv_next(r, &f, &n, &err);
        if (rc == CP_EIO)
            fail_msg("read error: %s", err.message);
        if (rc) {
            buf_printf(out, "!%llu: %s#%llu\n", (unsigned long long)err.record, err.message,
                       (unsigned long long)csv_offset(r));
            continue;
        }
        if (f == NULL)
            break;
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(f[i].p[f[i].len], '\0');
            int plain = 1; /* printable ASCII */
            for (size_t j = 0; j < f[i].len; j++)
                plain &= (unsigned char)f[i].p[j] >= 0x20 && (unsigned char)f[i].p[j] < 0x7f;
            assert_int_equal(f[i].plain, plain);
            buf_printf(out, "%s%.*s", i ? "|" : "", (int)f[i].len, f[i].p);
        }
        buf_printf(out, "@%llu#%llu\n", (unsigned long long)csv_line(r),
                   (unsigned long long)csv_offset(r));
    }
}

/* ------------------------------------------------------------ inputs */

static uint64_t rnd = 0xc5a1;
static unsigned rn(unsigned k)
{
    return (unsigned)(rand_next(&rnd) % k);
}

static void soup(buf_t *b, size_t len)
{
    static const char *const bits[] = {"a",   "b",    ",",        ",",           ";",        "\"",
                                       "\n",  "\r\n", "\r",       " ",           "\xc3\xa9", "\xff",
                                       "xyz", "\"\"", "\xe2\x82", "hello world", "12.5",     "\0"};
    if (rn(4) == 0)
        buf_append(b, "\xEF\xBB\xBF", 3);
    while (b->len < len) {
        unsigned k = rn(CP_ARRAY_LEN(bits) + 2);
        if (k >= CP_ARRAY_LEN(bits)) {
            /* a long plain run: limits, and runs across buffer refills */
            size_t run = rn(3) ? rn(40) : rn(3000);
            for (size_t i = 0; i < run; i++)
                buf_append(b, "q", 1);
            continue;
        }
        const char *s = bits[k];
        buf_append(b, s, k == CP_ARRAY_LEN(bits) - 1 ? 1 : strlen(s));
    }
}

static csv_opts_t random_opts(void)
{
    csv_opts_t o = {.delim = rn(4) ? ',' : ';'};
    o.max_field = rn(3) ? 1 + rn(60) : CSV_DEFAULT_MAX_FIELD;
    o.max_record = rn(3) ? 1 + rn(300) : CSV_DEFAULT_MAX_RECORD;
    o.max_fields = rn(3) ? 1 + rn(8) : CSV_DEFAULT_MAX_FIELDS;
    return o;
}

static void compare_mem(const char *in, size_t len, const csv_opts_t *o, const char *ctx)
{
    buf_t want, got;
    buf_init(&want, 0);
    buf_init(&got, 0);
    ref_all(in, len, o, &want);
    csv_reader_t *r = NULL;
    assert_int_equal(csv_open_mem(in, len, o, &r, NULL), CP_OK);
    read_all(r, &got);
    csv_close(r);
    if (strcmp(buf_cstr(&want), buf_cstr(&got)))
        fail_msg("%s: reader and reference differ\nwant:\n%.2000s\ngot:\n%.2000s", ctx,
                 buf_cstr(&want), buf_cstr(&got));
    buf_free(&want);
    buf_free(&got);
}

static void test_random_soup(void **state)
{
    (void)state;
    for (int i = 0; i < 3000; i++) {
        buf_t b;
        buf_init(&b, 0);
        soup(&b, rn(400));
        csv_opts_t o = random_opts();
        char ctx[64];
        snprintf(ctx, sizeof ctx, "case %d", i);
        compare_mem(b.data ? b.data : "", b.len, &o, ctx);
        buf_free(&b);
    }
}

/* b gzipped to a file, read inflated whole at open and streamed through
 * zlib: both the same as the naive reader over b. */
static void check_gzip(const buf_t *b, const csv_opts_t *opts, int round, const char *tag)
{
    csv_opts_t o = *opts;
    char path[128];
    snprintf(path, sizeof path, "/tmp/cp-test-csv-%s-%ld.gz", tag, (long)getpid());
    gzFile g = gzopen(path, "wb1");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, b->data, (unsigned)b->len), (int)b->len);
    gzclose(g);
    buf_t want, got, streamed;
    buf_init(&want, 0);
    buf_init(&got, 0);
    buf_init(&streamed, 0);
    ref_all(b->data, b->len, &o, &want);
    csv_reader_t *r = NULL;
    assert_int_equal(csv_open(path, &o, &r, NULL), CP_OK);
    read_all(r, &got);
    csv_close(r);
    o.stream = 1;
    assert_int_equal(csv_open(path, &o, &r, NULL), CP_OK);
    read_all(r, &streamed);
    csv_close(r);
    unlink(path);
    assert_string_equal(buf_cstr(&streamed), buf_cstr(&got));
    if (strcmp(buf_cstr(&want), buf_cstr(&got))) {
        const char *a = buf_cstr(&want), *c = buf_cstr(&got);
        size_t k = 0;
        while (a[k] && a[k] == c[k])
            k++;
        size_t from = k > 200 ? k - 200 : 0;
        fail_msg("%s round %d differs at byte %zu:\nwant: %.400s\ngot:  %.400s", tag, round, k,
                 a + from, c + from);
    }
    buf_free(&want);
    buf_free(&got);
    buf_free(&streamed);
}

/* Through gzip: several MB, so records straddle the reader's refills. */
static void test_random_gzip(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        buf_t b;
        buf_init(&b, 0);
        soup(&b, 1500000);
        csv_opts_t o = random_opts();
        if (round == 0)
            o = (csv_opts_t){0};
        o.delim = o.delim ? o.delim : ',';
        o.max_field = o.max_field ? o.max_field : CSV_DEFAULT_MAX_FIELD;
        o.max_record = o.max_record ? o.max_record : CSV_DEFAULT_MAX_RECORD;
        o.max_fields = o.max_fields ? o.max_fields : CSV_DEFAULT_MAX_FIELDS;
        check_gzip(&b, &o, round, "scan");
        buf_free(&b);
    }
}

/* CSV-shaped input: mostly plain records (the reader's whole-record fast
 * path), with now and then a quote, a CR, a NUL, a high byte, an empty
 * line, and fields and records sized around tight limits. */
static void records(buf_t *b, size_t nrec, char d)
{
    static const char *const rare[] = {"\"q\"", "\r",       "\xc3\xa9", "\xff",
                                       "x\"y",  "\xe2\x82", "\"a\nb\"", "\xf0\x9f\x98\x80"};
    for (size_t r = 0; r < nrec; r++) {
        unsigned nf = rn(6) ? 1 + rn(9) : 1;
        for (unsigned f = 0; f < nf; f++) {
            if (f)
                buf_append(b, &d, 1);
            unsigned len = rn(4) ? rn(12) : rn(70);
            for (unsigned i = 0; i < len; i++) {
                char c = (char)('a' + rn(26));
                buf_append(b, &c, 1);
            }
            if (rn(40) == 0) {
                const char *x = rare[rn(CP_ARRAY_LEN(rare))];
                buf_append(b, x, strlen(x));
            }
            if (rn(200) == 0)
                buf_append(b, "\0", 1);
        }
        if (rn(3) == 0)
            buf_append(b, "\r", 1);
        if (rn(50) || r + 1 < nrec) /* sometimes no final newline */
            buf_append(b, "\n", 1);
    }
}

static void test_random_records(void **state)
{
    (void)state;
    static const char delims[] = {',', ',', ';', '\t', '\r', '\xa7'};
    for (int i = 0; i < 2000; i++) {
        buf_t b;
        buf_init(&b, 0);
        if (rn(8) == 0)
            buf_append(&b, "\xEF\xBB\xBF", 3);
        char d = delims[rn(CP_ARRAY_LEN(delims))];
        records(&b, 1 + rn(40), d);
        csv_opts_t o = {.delim = d};
        o.max_field = rn(2) ? 1 + rn(70) : CSV_DEFAULT_MAX_FIELD;
        o.max_record = rn(2) ? 1 + rn(200) : CSV_DEFAULT_MAX_RECORD;
        o.max_fields = rn(2) ? 1 + rn(10) : CSV_DEFAULT_MAX_FIELDS;
        char ctx[64];
        snprintf(ctx, sizeof ctx, "records %d", i);
        compare_mem(b.data ? b.data : "", b.len, &o, ctx);
        buf_free(&b);
    }
}

/* The same through gzip, where the fields are cut in the reader's own
 * input buffer and records straddle its refills. */
static void test_records_gzip(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        buf_t b;
        buf_init(&b, 0);
        char d = round == 2 ? ';' : ',';
        records(&b, 20000, d);
        csv_opts_t o = {.delim = d,
                        .max_field = round ? 40 : CSV_DEFAULT_MAX_FIELD,
                        .max_record = round ? 150 : CSV_DEFAULT_MAX_RECORD,
                        .max_fields = round ? 8 : CSV_DEFAULT_MAX_FIELDS};
        check_gzip(&b, &o, round, "rec");
        buf_free(&b);
    }
}

/* The whole-record path reads 16-byte blocks: one special byte (a
 * delimiter, a quote, a CR, a high byte, a CRLF end) at every position of
 * records of every length around the block size, with the input ending
 * right after the record or going on. The record comes second: the
 * reader's first record always takes the state machine (BOM check). */
static void test_block_edges(void **state)
{
    (void)state;
    static const char *const special[] = {",",    "\"", "\r",   "\xc3\xa9", "\xff", ",,",
                                          "\r\n", "\t", "\x7f", "\x01",     "\t,"};
    char buf[128], ctx[96];
    for (int tab = 0; tab < 2; tab++)
        for (size_t len = 0; len <= 50; len++)
            for (size_t pos = 0; pos <= len; pos++)
                for (size_t s = 0; s < CP_ARRAY_LEN(special); s++)
                    for (int tail = 0; tail < 4; tail++) {
                        size_t n = 4;
                        memcpy(buf, "h,1\n", 4);
                        for (size_t i = 0; i <= len; i++) {
                            if (i == pos) {
                                memcpy(buf + n, special[s], strlen(special[s]));
                                n += strlen(special[s]);
                            }
                            if (i < len)
                                buf[n++] = (char)('a' + i % 26);
                        }
                        const char *end = tail == 0   ? "\n"
                                          : tail == 1 ? "\r\n"
                                          : tail == 2 ? "\nx,y\n"
                                                      : "";
                        memcpy(buf + n, end, strlen(end));
                        n += strlen(end);
                        csv_opts_t o = {.delim = tab ? '\t' : ',',
                                        .max_field = CSV_DEFAULT_MAX_FIELD,
                                        .max_record = CSV_DEFAULT_MAX_RECORD,
                                        .max_fields = CSV_DEFAULT_MAX_FIELDS};
                        snprintf(ctx, sizeof ctx, "len %zu pos %zu special %zu tail %d tab %d", len,
                                 pos, s, tail, tab);
                        compare_mem(buf, n, &o, ctx);
                    }
}

/* Every record and the final error of a reader, EIO included. */
static void read_to_end(csv_reader_t *r, buf_t *out)
{
    for (;;) {
        const csv_field_t *f;
        size_t n;
        cp_error_t err = {0};
        cp_status rc = csv_next(r, &f, &n, &err);
        if (rc == CP_EIO) {
            buf_printf(out, "EIO %s\n", err.message);
            return;
        }
        if (rc) {
            buf_printf(out, "!%s\n", err.message);
            continue;
        }
        if (f == NULL)
            return;
        for (size_t i = 0; i < n; i++)
            buf_printf(out, "%s%.*s", i ? "|" : "", (int)f[i].len, f[i].p);
        buf_printf(out, "@%llu#%llu\n", (unsigned long long)csv_line(r),
                   (unsigned long long)csv_offset(r));
    }
}

static void read_file(const char *path, int stream, buf_t *out)
{
    csv_opts_t o = {.stream = stream};
    csv_reader_t *r = NULL;
    assert_int_equal(csv_open(path, &o, &r, NULL), CP_OK);
    read_to_end(r, out);
    csv_close(r);
}

/* gzip files inflated whole at open against zlib's streaming: several
 * members (the trailer's size is only the last one's), a truncated file
 * (whole inflation refuses it; zlib reads up to the damage and reports
 * it), and resuming at a record's offset. */
static void test_gzip_whole_vs_stream(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "/tmp/cp-test-csv-whole-%ld.gz", (long)getpid());
    buf_t a, want, got;
    buf_init(&a, 0);
    records(&a, 30000, ',');
    /* three members */
    for (int m = 0; m < 3; m++) {
        gzFile g = gzopen(path, m ? "ab1" : "wb1");
        assert_non_null(g);
        size_t from = a.len * (size_t)m / 3, to = a.len * (size_t)(m + 1) / 3;
        assert_int_equal(gzwrite(g, a.data + from, (unsigned)(to - from)), (int)(to - from));
        gzclose(g);
    }
    buf_init(&want, 0);
    buf_init(&got, 0);
    read_file(path, 1, &want);
    read_file(path, 0, &got);
    assert_true(want.len > a.len / 2);
    assert_string_equal(buf_cstr(&got), buf_cstr(&want));

    /* resume after record 1000 of a whole-inflated reader */
    csv_reader_t *r = NULL;
    assert_int_equal(csv_open(path, NULL, &r, NULL), CP_OK);
    const csv_field_t *f;
    size_t n;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(csv_next(r, &f, &n, NULL) == CP_EIO, 0);
    uint64_t off = csv_offset(r), line = csv_line(r);
    assert_true(csv_raw_offset(r) > 0);
    csv_close(r);
    for (int stream = 0; stream < 2; stream++) {
        csv_opts_t o = {.stream = stream};
        buf_t rest;
        buf_init(&rest, 0);
        assert_int_equal(csv_open(path, &o, &r, NULL), CP_OK);
        assert_int_equal(csv_seek(r, off, line, NULL), CP_OK);
        read_to_end(r, &rest);
        csv_close(r);
        /* the tail of the full read, from the record after the 1000th */
        const char *full = buf_cstr(&want);
        char mark[64];
        snprintf(mark, sizeof mark, "#%llu\n", (unsigned long long)off);
        const char *at = strstr(full, mark);
        assert_non_null(at);
        assert_string_equal(buf_cstr(&rest), at + strlen(mark));
        buf_free(&rest);
    }

    /* inflating past the whole-file bound (64 MiB): streamed instead, the
     * same records */
    {
        char big[128];
        snprintf(big, sizeof big, "/tmp/cp-test-csv-big-%ld.gz", (long)getpid());
        gzFile g = gzopen(big, "wb9");
        assert_non_null(g);
        char line[1024];
        memset(line, 'x', sizeof line - 1);
        line[sizeof line - 1] = '\n';
        for (int i = 0; i < 70 * 1024; i++) /* 70 MiB */
            assert_int_equal(gzwrite(g, line, sizeof line), (int)sizeof line);
        gzclose(g);
        csv_reader_t *br = NULL;
        assert_int_equal(csv_open(big, NULL, &br, NULL), CP_OK);
        size_t nrec = 0;
        for (;;) {
            cp_error_t e = {0};
            assert_int_equal(csv_next(br, &f, &n, &e), CP_OK);
            if (f == NULL)
                break;
            assert_int_equal(n, 1);
            assert_int_equal(f[0].len, sizeof line - 1);
            nrec++;
        }
        assert_int_equal(nrec, 70 * 1024);
        assert_true(csv_raw_offset(br) > 0);
        csv_close(br);
        unlink(big);
    }

    /* truncated: the same records and the same error either way */
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size - 1000), 0);
    buf_free(&want);
    buf_free(&got);
    buf_init(&want, 0);
    buf_init(&got, 0);
    read_file(path, 1, &want);
    read_file(path, 0, &got);
    assert_non_null(strstr(buf_cstr(&want), "EIO "));
    assert_string_equal(buf_cstr(&got), buf_cstr(&want));
    unlink(path);
    buf_free(&want);
    buf_free(&got);
    buf_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_edges),  cmocka_unit_test(test_random_soup),
        cmocka_unit_test(test_random_gzip),  cmocka_unit_test(test_random_records),
        cmocka_unit_test(test_records_gzip), cmocka_unit_test(test_gzip_whole_vs_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
