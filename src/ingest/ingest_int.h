/*
 * ingest_int.h — what the files of src/ingest/ share and nothing above
 * them may use: the batch's growth (event.c), and the converted row that
 * mapping_row.c makes and both mapping_row (JSON) and mapping_event.c
 * (typed events) read. The layer's public headers are event.h, csv.h,
 * dedup.h and mapping.h; its validation rules are in rules.h.
 */
#ifndef CP_INGEST_INT_H
#define CP_INGEST_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "ingest/csv.h"
#include "ingest/event.h"
#include "ingest/mapping.h"
#include "model/propval.h"
#include "util/text.h"

/* Room for one more event at b->events[b->n] (the array doubles).
 * CP_ENOMEM. */
cp_status ingest_batch_grow(ingest_batch_t *b);

/* ------------------------------------------------------------ cells */

static inline int maprow_col_ok(const map_col_t *c, size_t n)
{
    return c->pos >= 0 && (size_t)c->pos < n;
}

/* The cell of column c in a record of n fields; an empty one when the
 * record is shorter. */
static inline const csv_field_t *maprow_cell(const map_col_t *c, const csv_field_t *f, size_t n)
{
    static const csv_field_t empty = {"", 0, 1};
    return maprow_col_ok(c, n) ? &f[c->pos] : &empty;
}

/* The cell without surrounding white space. */
static inline void maprow_trimmed(const csv_field_t *f, const char **s, size_t *len)
{
    *s = f->p;
    *len = f->len;
    text_trim(s, len);
}

/* Decimal text of v into buf (>= 21 bytes); returns the length. */
size_t maprow_fmt_i64(int64_t v, char *buf);

/* ------------------------------------------------------------ the row */

/*
 * The row, converted: typed values that point into the CSV fields (or
 * small inline texts). Both outputs, the typed event and the JSON
 * document, are made from it, so they agree by construction.
 */
enum { G_COPY = 0, G_LOWER, G_TEXT };

typedef struct rval {
    const map_field_t *d; /* its name is the key */
    pv_kind kind;
    int gen;   /* PV_STR text: G_COPY s, G_LOWER s lower-cased, G_TEXT txt */
    int whole; /* G_COPY of a whole cell (s, slen are the field's p, len) */
    int print; /* PV_STR: the text is known to have no control bytes */
    const char *s;
    size_t slen;
    int64_t i;
    double x;
    char txt[40]; /* integer transform, timestamp text (time_format needs up to 39) */
} rval_t;

#define ROW_LOCAL 24

typedef struct row {
    rval_t uid, anon; /* userId, anonymousId (PV_NONE when absent) */
    int uid_first;    /* userId came before anonymousId (JSON key order) */
    rval_t *tv;       /* traits object, in key order */
    size_t ntv;
    rval_t *pv; /* properties */
    size_t npv;
    int *tslot, *pslot; /* key -> index in tv / pv, -1 none */
    const char *ev;     /* track: event name */
    size_t evlen;
    int ev_printable; /* 1: ev is known to have no control bytes */
    int has_ts;
    int64_t ts;
    const char *msgid;
    size_t msgid_len;
    char msgbuf[160];
    int msgid_printable; /* 1: msgid is known to have no control bytes */
    void *heap;          /* storage of wide mappings */
    rval_t local[ROW_LOCAL];
    int slots[2 * ROW_LOCAL];
} row_t;

/* The text of a PV_STR value (before any lower-casing G_LOWER asks for). */
static inline const char *maprow_str(const rval_t *v)
{
    return v->gen == G_TEXT ? v->txt : v->s;
}

/* Prepares r for a row of m (maprow_free after). CP_ENOMEM. */
cp_status maprow_init(row_t *r, const mapping_t *m, cp_error_t *err);
void maprow_free(row_t *r);

/*
 * Converts row f[0..n) (file line `line`) into r: every conversion and
 * check of the mapping itself (mapping.h: a value that does not convert
 * rejects the row, naming line, column and value). The values point into
 * f: r is valid as long as the fields are. MAP_SKIP for rows a
 * skip_if_empty column leaves out.
 */
cp_status maprow_build(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                       const char *msgid_prefix, row_t *r, map_result *res, cp_error_t *err);

/* The Segment-shaped document of a built row (caller decrefs; NULL: no
 * memory). */
json_t *maprow_json(const mapping_t *m, const row_t *r);

#endif /* CP_INGEST_INT_H */
