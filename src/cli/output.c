/*
 * output.c — how the CLI talks to people: error lines, number and size
 * formatting, aligned tables, pretty JSON, and a careful end to stdout.
 */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

/* Reals in JSON with 15 significant digits: 0.201672, not jansson's
 * default 0.20167199999999999. */
#define CLI_JSON_REAL JSON_REAL_PRECISION(15)

int cli_failf(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("crowdpack: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_FAIL;
}

/* Does the message already start with "L:C" or mention the position? */
static int has_position(const char *msg, int line, int col)
{
    char pre[48];
    snprintf(pre, sizeof pre, "%d:%d", line, col);
    return strstr(msg, pre) != NULL;
}

int cli_fail(cp_status st, const cp_error_t *err)
{
    const char *msg = err && err->message[0] ? err->message : cp_strerror(st);
    if (err && err->line > 0 && !has_position(msg, err->line, err->column))
        return cli_failf("%d:%d: %s", err->line, err->column, msg);
    return cli_failf("%s", msg);
}

int cli_fail_expr(cp_status st, const cp_error_t *err, const char *expr)
{
    int rc = cli_fail(st, err);
    if (!err || err->line <= 0 || err->column <= 0 || !expr)
        return rc;
    /* Show the offending line with a caret under the column (bytes; fine
     * for ASCII expressions, approximate after multi-byte characters). */
    const char *p = expr;
    for (int l = 1; l < err->line && p; l++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (!p)
        return rc;
    size_t n = strcspn(p, "\n");
    if (n > 200 || (size_t)err->column > n + 1)
        return rc;
    fprintf(stderr, "  %.*s\n  %*s^\n", (int)n, p, err->column - 1, "");
    return rc;
}

const char *cli_group(uint64_t v, char *buf)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    int j = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            buf[j++] = ',';
        buf[j++] = tmp[i];
    }
    buf[j] = 0;
    return buf;
}

const char *cli_bytes(double v, char *buf)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, 32, "%.0f B", v);
    else
        snprintf(buf, 32, "%.*f %s", v < 10 ? 2 : v < 100 ? 1 : 0, v, units[u]);
    return buf;
}

const char *cli_duration(double s, char *buf)
{
    if (s < 0)
        s = 0;
    if (s < 1e-3)
        snprintf(buf, 32, "%.1f µs", s * 1e6);
    else if (s < 1)
        snprintf(buf, 32, "%.1f ms", s * 1e3);
    else if (s < 60)
        snprintf(buf, 32, "%.2f s", s);
    else if (s < 3600)
        snprintf(buf, 32, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, 32, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    return buf;
}

/* ------------------------------------------------------------- tables */

struct cli_table {
    int ncols;
    char **cells; /* rows * ncols, row 0 = headers */
    size_t rows, cap;
    unsigned right; /* bit per column */
};

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) {
        fputs("crowdpack: out of memory\n", stderr);
        exit(CLI_FAIL);
    }
    return d;
}

cli_table_t *cli_table_new(int ncols, const char *const *headers)
{
    cli_table_t *t = calloc(1, sizeof *t);
    if (!t) {
        fputs("crowdpack: out of memory\n", stderr);
        exit(CLI_FAIL);
    }
    t->ncols = ncols;
    if (headers)
        cli_table_row(t, headers);
    return t;
}

void cli_table_right(cli_table_t *t, int col)
{
    t->right |= 1u << col;
}

void cli_table_row(cli_table_t *t, const char *const *cells)
{
    if (t->rows == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 16;
        char **n = realloc(t->cells, nc * (size_t)t->ncols * sizeof *n);
        if (!n) {
            fputs("crowdpack: out of memory\n", stderr);
            exit(CLI_FAIL);
        }
        t->cells = n;
        t->cap = nc;
    }
    for (int c = 0; c < t->ncols; c++)
        t->cells[t->rows * (size_t)t->ncols + (size_t)c] = xstrdup(cells[c]);
    t->rows++;
}

/* Display width of UTF-8 text: code points, counting CJK as two columns. */
static int text_width(const char *s)
{
    int w = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned cp;
        int n;
        if (*p < 0x80) {
            cp = *p;
            n = 1;
        } else if ((*p & 0xE0) == 0xC0) {
            cp = *p & 0x1F;
            n = 2;
        } else if ((*p & 0xF0) == 0xE0) {
            cp = *p & 0x0F;
            n = 3;
        } else {
            cp = *p & 0x07;
            n = 4;
        }
        for (int i = 1; i < n; i++) {
            if (!p[i]) {
                n = i;
                break;
            }
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        p += n;
        w += (cp >= 0x1100 &&
              (cp <= 0x115F || (cp >= 0x2E80 && cp <= 0xA4CF) || (cp >= 0xAC00 && cp <= 0xD7A3) ||
               (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFE30 && cp <= 0xFE4F) ||
               (cp >= 0xFF00 && cp <= 0xFF60) || (cp >= 0xFFE0 && cp <= 0xFFE6)))
                 ? 2
                 : 1;
    }
    return w;
}

void cli_table_print(cli_table_t *t, FILE *f)
{
    int width[64] = {0};
    int nc = t->ncols < 64 ? t->ncols : 64;
    for (size_t r = 0; r < t->rows; r++)
        for (int c = 0; c < nc; c++) {
            int w = text_width(t->cells[r * (size_t)t->ncols + (size_t)c]);
            if (w > width[c])
                width[c] = w;
        }
    for (size_t r = 0; r < t->rows; r++) {
        for (int c = 0; c < nc; c++) {
            const char *s = t->cells[r * (size_t)t->ncols + (size_t)c];
            int pad = width[c] - text_width(s);
            int last = c == nc - 1;
            if (t->right & (1u << c))
                fprintf(f, "%*s%s", pad, "", s);
            else if (last)
                fputs(s, f);
            else
                fprintf(f, "%s%*s", s, pad, "");
            if (!last)
                fputs("  ", f);
        }
        fputc('\n', f);
    }
}

void cli_table_free(cli_table_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->rows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

/* --------------------------------------------------------------- misc */

void cli_print_json(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (!j) {
        fputs(text, stdout);
        fputc('\n', stdout);
        return;
    }
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER | CLI_JSON_REAL);
    json_decref(j);
    fputs(s ? s : text, stdout);
    fputc('\n', stdout);
    free(s);
}

int cli_read_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return cli_failf("cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    int rc = CLI_OK;
    if (!buf) {
        rc = cli_failf("out of memory");
        goto out;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= max) {
                rc = cli_failf("%s: larger than the limit of %zu bytes", path, max);
                goto out;
            }
            size_t nc = cap * 2 > max ? max : cap * 2;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                rc = cli_failf("out of memory");
                goto out;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                rc = cli_failf("cannot read %s: %s", path, strerror(errno));
                goto out;
            }
            break;
        }
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    buf = NULL;
out:
    free(buf);
    if (f && f != stdin)
        fclose(f);
    return rc;
}

/* 1 if standard output is a pipe whose reader has gone: Linux reports
 * POLLERR on the write end then. The errno of the write that failed is
 * long gone when the command ends (stdio keeps only the error flag). */
static int stdout_reader_gone(void)
{
    struct pollfd p = {.fd = STDOUT_FILENO, .events = POLLOUT};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLERR) != 0;
}

int cli_finish_stdout(int rc)
{
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (errno == EPIPE || stdout_reader_gone())
            return rc; /* the reader went away (`| head`): not our failure */
        cli_failf("cannot write to standard output: %s", strerror(errno ? errno : EIO));
        return rc == CLI_OK ? CLI_FAIL : rc;
    }
    return rc;
}

const char *cli_json_text(const json_t *v, char *buf, size_t cap)
{
    buf[0] = 0;
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v))
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, cap, "%g", json_real_value(v));
    else if (json_is_true(v))
        snprintf(buf, cap, "true");
    else if (json_is_false(v))
        snprintf(buf, cap, "false");
    else if (json_is_array(v) || json_is_object(v)) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | CLI_JSON_REAL);
        snprintf(buf, cap, "%s", s ? s : "");
        free(s);
    }
    return buf;
}

const char *cli_json_count(const json_t *v, char *buf)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        return cli_group((uint64_t)json_integer_value(v), buf);
    return cli_json_text(v, buf, 32);
}

const char *cli_json_time(const json_t *v, char *buf, size_t cap)
{
    if (json_is_integer(v)) {
        long long t = json_integer_value(v);
        /* Milliseconds when past year ~2286 in seconds. */
        time_t secs = (time_t)(t > 10000000000LL ? t / 1000 : t);
        struct tm tm;
        if (gmtime_r(&secs, &tm)) {
            strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
            return buf;
        }
    }
    return cli_json_text(v, buf, cap);
}

json_t *cli_json_parse(const char *text, const char *what)
{
    json_error_t je;
    json_t *j = json_loads(text ? text : "", JSON_DECODE_ANY, &je);
    if (!j)
        cli_failf("%s: invalid JSON answer: %s", what, je.text);
    return j;
}

void cli_emit_json(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | CLI_JSON_REAL) : NULL;
    json_decref(j);
    if (!s) {
        cli_failf("out of memory");
        return;
    }
    puts(s);
    free(s);
}
