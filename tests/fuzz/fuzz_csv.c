/*
 * fuzz_csv.c — arbitrary bytes through the CSV reader (src/ingest/csv.c),
 * read four ways that must agree record for record: from memory, from a
 * plain file, gzip-compressed (inflated whole at open) and gzip-compressed
 * read through zlib's stream; plus a resume with csv_seek at a record
 * boundary, which must give the rest of the records again. Inputs that
 * start like gzip (1f 8b) are read as a file as they are instead of the
 * plain-file read (zlib would inflate them), so damaged gzip streams reach
 * both inflaters too; that read must end, nothing more.
 *
 * The first byte picks the delimiter and small or default limits (so
 * max_field / max_record / max_fields are reached by short inputs) and
 * which record to resume at. Checks on every record: at least one field,
 * fields NUL-terminated, `plain` only on printable ASCII, valid UTF-8, line
 * numbers and offsets never going backwards, offsets within the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "ingest/csv.h"
#include "util/util.h"

#define MAX_RECORDS 4096 /* records compared per input (inputs are short) */

/* What one read gave: a digest per record (or rejected record) and the
 * offset after it. */
typedef struct trace {
    uint64_t digest[MAX_RECORDS];
    uint64_t offset[MAX_RECORDS];
    uint64_t line[MAX_RECORDS];
    size_t n;
    int io_error;
} trace_t;

static char g_plain[128], g_gz[128], g_raw[128];

static void paths_remove(void)
{
    unlink(g_plain);
    unlink(g_gz);
    unlink(g_raw);
}

/* Three scratch files per process, removed at exit. */
static void paths_init(void)
{
    if (g_plain[0])
        return;
    atexit(paths_remove);
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_plain, sizeof g_plain, "%s/cp-fuzz-csv-%ld.csv", base, (long)getpid());
    snprintf(g_gz, sizeof g_gz, "%s/cp-fuzz-csv-%ld.csv.gz", base, (long)getpid());
    snprintf(g_raw, sizeof g_raw, "%s/cp-fuzz-csv-%ld.raw", base, (long)getpid());
}

static void write_file(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0)
        abort();
}

static void write_gzip(const char *path, const uint8_t *p, size_t n)
{
    gzFile g = gzopen(path, "wb6");
    if (g == NULL || (n && gzwrite(g, p, (unsigned)n) != (int)n) || gzclose(g) != Z_OK)
        abort();
}

static int plain_bytes(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
            return 0;
    return 1;
}

/* Reads r to its end into t (t->n records), checking each record. `size`:
 * the uncompressed input size; `line0`, `off0`: where the read starts. */
static void read_all(csv_reader_t *r, size_t size, uint64_t line0, uint64_t off0, trace_t *t)
{
    uint64_t last_line = line0, last_off = off0;
    t->n = 0;
    t->io_error = 0;
    for (size_t guard = 0; guard < 4 * size + 16; guard++) {
        const csv_field_t *f = NULL;
        size_t n = 0;
        cp_error_t err = {0};
        cp_status rc = csv_next(r, &f, &n, &err);
        if (rc == CP_EIO) {
            t->io_error = 1;
            return;
        }
        if (rc == CP_OK && f == NULL)
            return;
        uint64_t h = hash64(&rc, sizeof rc, 7);
        if (rc == CP_OK) {
            if (n == 0)
                abort();
            for (size_t i = 0; i < n; i++) {
                if (f[i].p[f[i].len] != '\0')
                    abort(); /* fields are NUL-terminated */
                if (f[i].plain && !plain_bytes(f[i].p, f[i].len))
                    abort(); /* a false claim lets control bytes through */
                if (!utf8_valid(f[i].p, f[i].len))
                    abort(); /* invalid UTF-8 is rejected */
                h = hash64(f[i].p, f[i].len, h ^ (i + 1));
            }
        } else if (rc != CP_EINVAL && rc != CP_ELIMIT) {
            abort();
        } else if (err.message[0] == '\0') {
            abort(); /* a rejected record says why */
        }
        uint64_t line = csv_line(r), off = csv_offset(r);
        if (line < last_line || off < last_off || off > size)
            abort();
        if (off == last_off && rc == CP_OK)
            abort(); /* a record consumed nothing */
        last_line = line;
        last_off = off;
        if (t->n < MAX_RECORDS) {
            t->digest[t->n] = h;
            t->offset[t->n] = off;
            t->line[t->n++] = line;
        }
    }
    abort(); /* more calls than the input can hold records: a loop */
}

/* b is a's records from `from` on. Lines are compared only for reads
 * from the start: a resumed reader numbers from the line it is given (the
 * record's first), not knowing how many lines that record spanned. */
static void same(const trace_t *a, const trace_t *b, size_t from)
{
    if (a->io_error || b->io_error || a->n - from != b->n)
        abort();
    for (size_t i = 0; i < b->n; i++)
        if (a->digest[from + i] != b->digest[i] || a->offset[from + i] != b->offset[i] ||
            (from == 0 && a->line[i] != b->line[i]))
            abort();
}

static trace_t g_mem, g_other;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    paths_init();
    static const char delims[] = {',', ';', '\t', '|'};
    unsigned mode = data[0];
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    csv_opts_t o = {.delim = delims[mode & 3]};
    if (mode & 4) {
        o.max_field = 16;
        o.max_record = 64;
        o.max_fields = 5;
    }
    cp_error_t err = {0};
    csv_reader_t *r = NULL;

    if (csv_open_mem(buf, len, &o, &r, &err) != CP_OK)
        abort();
    read_all(r, len, 0, 0, &g_mem);
    csv_close(r);

    /* A file is gzip when it starts like one (zlib reads the others as
     * they are): such inputs are the last read's. */
    int gzip_magic = len >= 2 && (unsigned char)buf[0] == 0x1f && (unsigned char)buf[1] == 0x8b;
    if (!gzip_magic) {
        write_file(g_plain, (const uint8_t *)buf, len);
        if (csv_open(g_plain, &o, &r, &err) != CP_OK)
            abort();
        read_all(r, len, 0, 0, &g_other);
        csv_close(r);
        same(&g_mem, &g_other, 0);
    }

    write_gzip(g_gz, (const uint8_t *)buf, len);
    for (int stream = 0; stream < 2; stream++) {
        o.stream = stream;
        if (csv_open(g_gz, &o, &r, &err) != CP_OK)
            abort();
        read_all(r, len, 0, 0, &g_other);
        if (!csv_compressed(r) && len > 0)
            abort();
        csv_close(r);
        same(&g_mem, &g_other, 0);
    }
    o.stream = 0;

    /* Resume after record k (a boundary an earlier read returned). */
    if (g_mem.n > 1 && g_mem.n < MAX_RECORDS) {
        size_t k = (mode >> 3) % (g_mem.n - 1);
        if (csv_open_mem(buf, len, &o, &r, &err) != CP_OK)
            abort();
        if (csv_seek(r, g_mem.offset[k], g_mem.line[k], &err) != CP_OK)
            abort();
        read_all(r, len, g_mem.line[k], g_mem.offset[k], &g_other);
        csv_close(r);
        same(&g_mem, &g_other, k + 1);
    }

    /* The bytes as a file as they are: a damaged gzip stream must end
     * (other bytes were the plain file's read above). */
    if (!gzip_magic)
        return 0;
    write_file(g_raw, (const uint8_t *)buf, len);
    o.stream = (mode >> 7) & 1;
    if (csv_open(g_raw, &o, &r, &err) == CP_OK) {
        read_all(r, len * 1100 + 64, 0, 0, &g_other); /* deflate's best ratio is ~1032:1 */
        csv_close(r);
    }
    return 0;
}
