/*
 * export.c — streams a crowd's members, or the users an expression
 * matches, as NDJSON, CSV or plain text.
 *
 * cp_crowd_export pushes its output through a callback, which would need a
 * producer thread and a bounded queue to feed libmicrohttpd's pull-style
 * content reader. The public API also offers a pull iterator over a result
 * snapshot (cp_crowd_members + cp_iter_*), so the stream pulls ids one at a
 * time as the socket drains: no thread, no queue, and memory per request is
 * the snapshot bitmap plus one pending line. The formats are the same as
 * cp_crowd_export's, byte for byte (a unit test holds them together):
 * NDJSON {"id":"..."} lines; CSV with an "id" header, LF line ends, and
 * RFC 4180 quoting of fields holding a comma, quote, CR or LF. Plain text
 * (for `crowdpack eval --server`) is one raw id per line, as the CLI prints.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

#define EXPORT_MAX_LINE (1u << 20) /* one id, escaped; ids are far shorter */

struct srv_stream {
    cp_result_t *result;
    cp_iter_t *it;
    int fmt;         /* cp_export_format or SRV_FORMAT_TEXT */
    uint64_t left;   /* ids still to send (the limit) */
    buf_t line;      /* the pending formatted line */
    size_t line_off; /* bytes of `line` already handed out */
    int header_done;
    int done;
};

cp_status srv_json_quote(buf_t *b, const char *s)
{
    return json_buf_str(b, s, strlen(s));
}

cp_status srv_csv_field(buf_t *b, const char *s)
{
    /* A leading = + - @ would make spreadsheets run the cell as a formula;
     * quoting does not stop that, but ids are data and must round-trip, so
     * they are written as they are (documented in docs/api.md). */
    if (strpbrk(s, ",\"\r\n") == NULL)
        return buf_append(b, s, strlen(s));
    cp_status st = buf_append(b, "\"", 1);
    for (const char *p = s; st == CP_OK && *p; p++) {
        st = *p == '"' ? buf_append(b, "\"\"", 2) : buf_append(b, p, 1);
    }
    if (st == CP_OK)
        st = buf_append(b, "\"", 1);
    return st;
}

cp_status srv_result_stream_open(cp_db_t *db, cp_result_t *result, int fmt, uint64_t limit,
                                 srv_stream_t **out, cp_error_t *err)
{
    *out = NULL;
    srv_stream_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        cp_result_free(result);
        return CP_ERR(err, CP_ENOMEM, "out of memory opening an id stream");
    }
    s->fmt = fmt;
    s->left = limit;
    s->result = result;
    buf_init(&s->line, EXPORT_MAX_LINE);
    cp_status st = cp_iter_open(db, s->result, &s->it, err);
    if (st != CP_OK) {
        srv_stream_free(s);
        return st;
    }
    *out = s;
    return CP_OK;
}

cp_status srv_export_open(cp_db_t *db, const char *name, cp_export_format fmt, srv_stream_t **out,
                          cp_error_t *err)
{
    cp_result_t *r = NULL;
    *out = NULL;
    cp_status st = cp_crowd_members(db, name, &r, err);
    if (st != CP_OK)
        return st;
    return srv_result_stream_open(db, r, (int)fmt, UINT64_MAX, out, err);
}

/* Formats the next line into s->line; sets s->done at the end. */
static cp_status next_line(srv_stream_t *s)
{
    buf_reset(&s->line);
    s->line_off = 0;
    if (s->fmt == CP_EXPORT_CSV && !s->header_done) {
        s->header_done = 1;
        return buf_append(&s->line, "id\n", 3);
    }
    const char *id = NULL;
    cp_error_t err = {0};
    cp_status st = s->left > 0 ? cp_iter_next(s->it, &id, &err) : CP_OK;
    if (st != CP_OK)
        return st;
    if (id == NULL) {
        s->done = 1;
        return CP_OK;
    }
    s->left--;
    if (s->fmt == SRV_FORMAT_TEXT) {
        st = buf_append(&s->line, id, strlen(id));
        if (st == CP_OK)
            st = buf_append(&s->line, "\n", 1);
    } else if (s->fmt == CP_EXPORT_CSV) {
        st = srv_csv_field(&s->line, id);
        if (st == CP_OK)
            st = buf_append(&s->line, "\n", 1);
    } else {
        st = buf_append(&s->line, "{\"id\":", 6);
        if (st == CP_OK)
            st = srv_json_quote(&s->line, id);
        if (st == CP_OK)
            st = buf_append(&s->line, "}\n", 2);
    }
    return st;
}

ssize_t srv_stream_read(srv_stream_t *s, char *buf, size_t max)
{
    size_t n = 0;
    while (n < max) {
        if (s->line_off == s->line.len) {
            if (s->done)
                break;
            if (next_line(s) != CP_OK)
                return -2;
            if (s->done)
                break;
        }
        size_t k = s->line.len - s->line_off;
        if (k > max - n)
            k = max - n;
        memcpy(buf + n, s->line.data + s->line_off, k);
        s->line_off += k;
        n += k;
    }
    if (s->done && s->it != NULL) {
        /* Every id is formatted: release the snapshot now rather than when
         * the client has read the last bytes. */
        cp_iter_close(s->it);
        cp_result_free(s->result);
        s->it = NULL;
        s->result = NULL;
    }
    if (n == 0)
        return -1;
    return (ssize_t)n;
}

void srv_stream_free(srv_stream_t *s)
{
    if (s == NULL)
        return;
    cp_iter_close(s->it);
    cp_result_free(s->result);
    buf_free(&s->line);
    free(s);
}
