/* test_ingest_csv.c — the RFC 4180 reader (quotes, escaped quotes,
 * embedded newlines, CRLF, BOM, errors with line numbers and recovery,
 * limits, gzip, resume) against a naive writer, the column mappings and
 * the online-retail preset over the real file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cp_test.h"
#include <zlib.h>

#include "ingest/csv.h"
#include "ingest/event.h"
#include "ingest/mapping.h"
#include "util/util.h"

/* Reads every record of a buffer; returns them as "a|b|c\n" lines, and bad
 * records as "!<line>: <message>\n". */
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
            buf_printf(out, "!%llu: %s\n", (unsigned long long)err.record, err.message);
            continue;
        }
        if (f == NULL)
            break;
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(f[i].p[f[i].len], '\0');
            buf_printf(out, "%s%.*s", i ? "|" : "", (int)f[i].len, f[i].p);
        }
        buf_printf(out, "@%llu\n", (unsigned long long)csv_line(r));
    }
}

static void expect(const char *in, size_t len, const csv_opts_t *o, const char *want)
{
    csv_reader_t *r = NULL;
    assert_int_equal(csv_open_mem(in, len, o, &r, NULL), CP_OK);
    buf_t out;
    buf_init(&out, 0);
    read_all(r, &out);
    const char *got = buf_cstr(&out);
    if (strcmp(got, want) != 0)
        fail_msg("input:\n%.*s\ngot:\n%s\nwant:\n%s", (int)len, in, got, want);
    buf_free(&out);
    csv_close(r);
}
#define EXPECT(in, want) expect((in), sizeof(in) - 1, NULL, (want))

static void test_rfc4180(void **state)
{
    (void)state;
    EXPECT("a,b,c\n1,2,3\n", "a|b|c@1\n1|2|3@2\n");
    EXPECT("a,b\r\n1,2\r\n", "a|b@1\n1|2@2\n");                   /* CRLF */
    EXPECT("\xEF\xBB\xBFh1,h2\nx,y", "h1|h2@1\nx|y@2\n");         /* BOM, no final newline */
    EXPECT("\"a,b\",\"say \"\"hi\"\"\"\n", "a,b|say \"hi\"@1\n"); /* quotes */
    EXPECT("\"line1\nline2\",x\nnext,1\n", "line1\nline2|x@1\nnext|1@3\n"); /* embedded newline */
    EXPECT("\"crlf\r\ninside\",x\r\n", "crlf\r\ninside|x@1\n");
    EXPECT(",,\n", "||@1\n"); /* empty fields */
    EXPECT("\"\",\"\"\n", "|@1\n");
    EXPECT("7\" FRAME,x\n", "7\" FRAME|x@1\n"); /* a stray quote is literal */
    EXPECT("", "");
    EXPECT("\n\n", "@1\n@2\n"); /* blank lines are records of one empty field */
    /* errors carry the line and the reader continues */
    EXPECT("a,\"b\"x,c\nok,1\n", "!1: line 1: column 2: text after the closing quote of a quoted "
                                 "field\nok|1@2\n");
    EXPECT("ok\n\"never closed,\nmore\n",
           "ok@1\n!2: line 2: column 1: quoted field not closed before the end of the input\n");
    EXPECT("a,\xff\xfe\nb,c\n", "!1: line 1: column 2: invalid UTF-8\nb|c@2\n");
    csv_opts_t o = {.delim = ';', .max_field = 4, .max_fields = 3};
    const char *in = "a;b\nlonger;x\n1;2;3;4\nz;\"q;q\"\n";
    expect(in, strlen(in), &o,
           "a|b@1\n!2: line 2: column 1: field longer than 4 bytes\n!3: line 3: more than 3 "
           "fields in a record\nz|q;q@4\n");
}

/* Property test: random fields written by a naive RFC 4180 writer come back. */
static void test_roundtrip_random(void **state)
{
    (void)state;
    uint64_t seed = 42;
    static const char alphabet[] = "ab,\"\n\r x\xc3\xa9;";
    for (int round = 0; round < 200; round++) {
        buf_t in, want;
        buf_init(&in, 0);
        buf_init(&want, 0);
        int nrec = 1 + (int)(rand_next(&seed) % 20);
        uint64_t line = 1;
        for (int r = 0; r < nrec; r++) {
            int nf = 1 + (int)(rand_next(&seed) % 5);
            uint64_t start = line;
            for (int f = 0; f < nf; f++) {
                char field[32];
                int len = (int)(rand_next(&seed) % 8);
                int k = 0;
                for (int i = 0; i < len; i++) {
                    char c = alphabet[rand_next(&seed) % (sizeof alphabet - 1)];
                    if ((unsigned char)c == 0xc3) {
                        field[k++] = (char)0xc3;
                        field[k++] = (char)0xa9;
                        continue;
                    }
                    if ((unsigned char)c == 0xa9)
                        c = 'y';
                    field[k++] = c;
                }
                field[k] = '\0';
                int quote = strpbrk(field, ",\"\n\r") != NULL || (k == 0 && nf == 1) ||
                            rand_next(&seed) % 4 == 0;
                if (f)
                    buf_append(&in, ",", 1);
                if (quote) {
                    buf_append(&in, "\"", 1);
                    for (int i = 0; i < k; i++) {
                        if (field[i] == '"')
                            buf_append(&in, "\"", 1);
                        if (field[i] == '\n')
                            line++;
                        buf_append(&in, &field[i], 1);
                    }
                    buf_append(&in, "\"", 1);
                } else {
                    buf_append(&in, field, (size_t)k);
                }
                buf_printf(&want, "%s%s", f ? "|" : "", field);
            }
            if (rand_next(&seed) % 2)
                buf_append(&in, "\r\n", 2);
            else
                buf_append(&in, "\n", 1);
            line++;
            buf_printf(&want, "@%llu\n", (unsigned long long)start);
        }
        expect(in.data, in.len, NULL, buf_cstr(&want));
        buf_free(&in);
        buf_free(&want);
    }
}

static void tmpfile_path(char *buf, size_t cap, const char *tag)
{
    snprintf(buf, cap, "/tmp/cp-test-csv-%s-%ld", tag, (long)getpid());
}

static void test_gzip_and_resume(void **state)
{
    (void)state;
    char path[256];
    tmpfile_path(path, sizeof path, "gz");
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    gzprintf(g, "id,v\n");
    for (int i = 0; i < 5000; i++)
        gzprintf(g, "%d,\"v%d\nsecond\"\n", i, i);
    gzclose(g);
    csv_reader_t *r = NULL;
    assert_int_equal(csv_open(path, NULL, &r, NULL), CP_OK);
    const csv_field_t *f;
    size_t n;
    uint64_t off = 0, line = 0;
    for (int i = 0; i <= 2500; i++) {
        assert_int_equal(csv_next(r, &f, &n, NULL), CP_OK);
        assert_non_null(f);
        if (i == 1000) {
            off = csv_offset(r);
            line = csv_line(r);
            assert_int_equal(line, 2 + 2 * 999);
        }
    }
    csv_close(r);
    /* Resume after record 1000 (id 999): the next is id 1000 on its line. */
    assert_int_equal(csv_open(path, NULL, &r, NULL), CP_OK);
    assert_int_equal(csv_seek(r, off, line + 1, NULL), CP_OK);
    assert_int_equal(csv_next(r, &f, &n, NULL), CP_OK);
    assert_string_equal(f[0].p, "1000");
    assert_string_equal(f[1].p, "v1000\nsecond");
    assert_int_equal(csv_line(r), line + 2);
    int rest = 1;
    while (csv_next(r, &f, &n, NULL) == CP_OK && f)
        rest++;
    assert_int_equal(rest, 4000);
    assert_true(csv_raw_offset(r) > 0);
    csv_close(r);
    cp_error_t err = {0};
    assert_int_equal(csv_open("/nonexistent/x.csv", NULL, &r, &err), CP_ENOTFOUND);
    assert_non_null(strstr(err.message, "/nonexistent/x.csv"));
    unlink(path);
}

/* ----------------------------------------------------------- mappings */

static json_t *row(const mapping_t *m, const char *line, uint64_t lineno, map_result *res,
                   cp_error_t *err)
{
    csv_reader_t *r = NULL;
    assert_int_equal(csv_open_mem(line, strlen(line), NULL, &r, NULL), CP_OK);
    const csv_field_t *f;
    size_t n;
    assert_int_equal(csv_next(r, &f, &n, NULL), CP_OK);
    json_t *out = NULL;
    cp_status rc = mapping_row(m, f, n, lineno, "import:test", &out, res, err);
    csv_close(r);
    if (rc)
        assert_null(out);
    return out;
}

static void bind_header(mapping_t *m, const char *hdr)
{
    csv_reader_t *r = NULL;
    assert_int_equal(csv_open_mem(hdr, strlen(hdr), NULL, &r, NULL), CP_OK);
    const csv_field_t *f;
    size_t n;
    assert_int_equal(csv_next(r, &f, &n, NULL), CP_OK);
    cp_error_t err = {0};
    if (mapping_bind(m, f, n, &err))
        fail_msg("%s", err.message);
    csv_close(r);
}

static void test_online_retail_preset_rows(void **state)
{
    (void)state;
    mapping_t *m = NULL;
    cp_error_t err = {0};
    assert_int_equal(mapping_preset("online-retail", &m, &err), CP_OK);
    bind_header(m, "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,"
                   "Country\n");
    map_result res;
    json_t *ev = row(m,
                     "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,"
                     "17850.0,United Kingdom\n",
                     2, &res, &err);
    assert_non_null(ev);
    assert_int_equal(res, MAP_EVENT);
    assert_string_equal(json_string_value(json_object_get(ev, "type")), "track");
    assert_string_equal(json_string_value(json_object_get(ev, "event")), "purchase");
    assert_string_equal(json_string_value(json_object_get(ev, "userId")), "17850");
    assert_string_equal(json_string_value(json_object_get(ev, "timestamp")),
                        "2010-12-01T08:26:00Z");
    assert_string_equal(json_string_value(json_object_get(ev, "messageId")), "import:test:2");
    json_t *p = json_object_get(ev, "properties");
    assert_string_equal(json_string_value(json_object_get(p, "invoice")), "536365");
    assert_string_equal(json_string_value(json_object_get(p, "stock_code")), "85123A");
    assert_int_equal(json_integer_value(json_object_get(p, "quantity")), 6);
    assert_true(json_real_value(json_object_get(p, "unit_price")) == 2.55);
    assert_true(json_real_value(json_object_get(p, "amount")) == 15.3);
    json_t *ctx = json_object_get(ev, "context");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ctx, "traits"), "country")),
        "United Kingdom");
    /* The Segment parser takes it as is. */
    ingest_batch_t b;
    ingest_batch_init(&b);
    segment_opts_t so = {.allow_other_ids = 1, .no_dedup = 1};
    assert_int_equal(segment_parse_event(ev, ING_NONE, NULL, -1, &so, &b, &err), CP_OK);
    assert_int_equal(b.events[0].ts, 1291191960);
    assert_true(b.events[0].no_dedup);
    ingest_batch_free(&b);
    json_decref(ev);

    /* Cancellations are refunds (negative quantities stay negative). */
    ev = row(m, "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom\n", 3, &res,
             &err);
    assert_string_equal(json_string_value(json_object_get(ev, "event")), "refund");
    p = json_object_get(ev, "properties");
    assert_true(json_real_value(json_object_get(p, "amount")) == -27.5);
    json_decref(ev);
    /* No CustomerID: skipped, not rejected. */
    ev = row(m,
             "536544,90214D,\"LETTER \"\"D\"\" BLING KEY RING\",1,2010-12-01 14:32:00,0.85,,"
             "United Kingdom\n",
             4, &res, &err);
    assert_null(ev);
    assert_int_equal(res, MAP_SKIP);
    /* A bad quantity names the line, column and value. */
    ev = row(m, "536365,85123A,X,six,2010-12-01 08:26:00,2.55,17850.0,UK\n", 9, &res, &err);
    assert_null(ev);
    assert_non_null(strstr(err.message, "line 9"));
    assert_non_null(strstr(err.message, "Quantity"));
    assert_non_null(strstr(err.message, "\"six\""));
    ev = row(m, "536365,85123A,X,6,1/12/2010,2.55,17850.0,UK\n", 10, &res, &err);
    assert_null(ev);
    assert_non_null(strstr(err.message, "timestamp"));
    mapping_free(m);
}

static void test_mapping_documents(void **state)
{
    (void)state;
    mapping_t *m = NULL;
    cp_error_t err = {0};
    const char *doc =
        "{\"header\":false,\"delimiter\":\";\",\"identifiers\":[{\"column\":0,\"type\":\"phone\"},"
        "{\"column\":1,\"type\":\"email\",\"transform\":\"lower\"}],\"traits\":[{\"column\":2,"
        "\"name\":\"vip\",\"type\":\"bool\"},{\"column\":3,\"name\":\"joined\",\"type\":"
        "\"timestamp\",\"format\":\"%m/%d/%Y %H:%M\"}]}";
    assert_int_equal(mapping_parse(doc, strlen(doc), &m, &err), CP_OK);
    assert_int_equal(mapping_bind(m, NULL, 0, &err), CP_OK);
    map_result res;
    csv_reader_t *r = NULL;
    const char *line = "13800000000;A@B.COM;yes;12/1/2010 8:26\n";
    assert_int_equal(csv_open_mem(line, strlen(line), &(csv_opts_t){.delim = ';'}, &r, NULL),
                     CP_OK);
    const csv_field_t *f;
    size_t n;
    assert_int_equal(csv_next(r, &f, &n, NULL), CP_OK);
    json_t *ev = NULL;
    assert_int_equal(mapping_row(m, f, n, 1, NULL, &ev, &res, &err), CP_OK);
    csv_close(r);
    assert_string_equal(json_string_value(json_object_get(ev, "type")), "identify");
    json_t *t = json_object_get(ev, "traits");
    assert_string_equal(json_string_value(json_object_get(t, "phone")), "13800000000");
    assert_string_equal(json_string_value(json_object_get(t, "email")), "a@b.com");
    assert_true(json_is_true(json_object_get(t, "vip")));
    assert_string_equal(json_string_value(json_object_get(t, "joined")), "2010-12-01T08:26:00Z");
    json_decref(ev);
    mapping_free(m);

    /* Errors name the field. */
    static const struct {
        const char *doc, *want;
    } bad[] = {
        {"{\"identifiers\":[]}", "at least one"},
        {"{\"identifiers\":[{\"column\":\"a\"}]}", "needs \"type\""},
        {"{\"identifiers\":[{\"column\":\"a\",\"type\":\"x\"}],\"traits\":[{\"column\":\"b\","
         "\"name\":\"n\",\"type\":\"float\"}]}",
         "unknown type \"float\""},
        {"{\"identifiers\":[{\"column\":\"a\",\"type\":\"x\"}],\"oops\":1}", "unknown field"},
        {"{\"identifiers\":[{\"column\":-1,\"type\":\"x\"}]}", "position"},
        {"{\"identifiers\":[{\"column\":\"a\",\"type\":\"x\"}],\"event\":{\"name\":\"e\","
         "\"timestamp\":{\"column\":\"t\",\"format\":\"dd.mm.yyyy\"}}}",
         "unknown timestamp format"},
        {"{\"identifiers\":[{\"column\":\"a\",\"type\":\"x\"}],\"event\":{\"name\":\"e\","
         "\"properties\":[{\"name\":\"p\",\"product\":[\"a\"]}]}}",
         "product"},
        {"{", "malformed JSON"},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(bad); i++) {
        memset(&err, 0, sizeof err);
        assert_int_not_equal(mapping_parse(bad[i].doc, strlen(bad[i].doc), &m, &err), CP_OK);
        assert_null(m);
        if (strstr(err.message, bad[i].want) == NULL)
            fail_msg("mapping %zu: \"%s\" lacks \"%s\"", i, err.message, bad[i].want);
    }
    /* A header without the named column. */
    doc = "{\"identifiers\":[{\"column\":\"Email\",\"type\":\"email\"}]}";
    assert_int_equal(mapping_parse(doc, strlen(doc), &m, &err), CP_OK);
    csv_field_t hdr[] = {{"Phone", 5, 1}};
    assert_int_equal(mapping_bind(m, hdr, 1, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "\"Email\""));
    mapping_free(m);
    assert_int_equal(mapping_preset("nope", &m, &err), CP_ENOTFOUND);

    int64_t s;
    assert_int_equal(mapping_strftime_parse("%d %b %Y", "09 Dec 2011", 11, &s), 0);
    assert_int_equal(s, 1323388800);
    assert_int_equal(mapping_strftime_parse("%Y-%m-%d", "2011-13-01", 10, &s), -1);
}

/* The whole real file through the preset: counts match what the dataset's
 * README says and what a naive scan finds. */
static void test_online_retail_file(void **state)
{
    (void)state;
    char path[1200];
    if (!test_shared_data("online-retail/online_retail.csv.gz", path, sizeof path))
        skip();
    csv_reader_t *r = NULL;
    cp_error_t err = {0};
    assert_int_equal(csv_open(path, NULL, &r, &err), CP_OK);
    mapping_t *m = NULL;
    assert_int_equal(mapping_preset("online-retail", &m, &err), CP_OK);
    const csv_field_t *f;
    size_t n;
    assert_int_equal(csv_next(r, &f, &n, &err), CP_OK);
    assert_int_equal(mapping_bind(m, f, n, &err), CP_OK);
    uint64_t rows = 0, skipped = 0, purchases = 0, refunds = 0, bad = 0;
    ingest_batch_t b;
    ingest_batch_init(&b);
    segment_opts_t so = {.allow_other_ids = 1, .no_dedup = 1};
    for (;;) {
        cp_status rc = csv_next(r, &f, &n, &err);
        assert_int_equal(rc, CP_OK);
        if (f == NULL)
            break;
        rows++;
        assert_int_equal(n, 8);
        json_t *ev = NULL;
        map_result res;
        rc = mapping_row(m, f, n, csv_line(r), "import:x", &ev, &res, &err);
        if (rc) {
            bad++;
            continue;
        }
        if (res == MAP_SKIP) {
            skipped++;
            continue;
        }
        const char *name = json_string_value(json_object_get(ev, "event"));
        if (!strcmp(name, "purchase"))
            purchases++;
        else
            refunds++;
        if (rows % 5000 == 1) {
            /* and a sample through the Segment parser */
            assert_int_equal(segment_parse_event(ev, ING_NONE, NULL, -1, &so, &b, &err), CP_OK);
        }
        json_decref(ev);
    }
    ingest_batch_free(&b);
    assert_int_equal(rows, 541909);
    assert_int_equal(bad, 0);
    assert_int_equal(skipped, 135080);
    assert_int_equal(refunds, 8905);
    assert_int_equal(purchases, 541909 - 135080 - 8905);
    csv_close(r);
    mapping_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4180),           cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_gzip_and_resume),   cmocka_unit_test(test_online_retail_preset_rows),
        cmocka_unit_test(test_mapping_documents), cmocka_unit_test(test_online_retail_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
