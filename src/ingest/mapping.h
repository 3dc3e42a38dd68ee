/*
 * mapping.h — column mappings: how the rows of a CSV file become users and
 * events (docs/intake.md "Import mappings" is the user-facing reference).
 *
 * A mapping is a JSON document:
 *
 *   {
 *     "name": "online-retail",
 *     "delimiter": ",",                   optional, one byte (default ",")
 *     "header": true,                     first record names the columns (default true)
 *     "skip_if_empty": ["CustomerID"],    rows with an empty such column are
 *                                         counted as skipped, not rejected
 *     "identifiers": [                    at least one; the first non-empty one
 *       {"column": "CustomerID",          identifies the user, the others are
 *        "type": "user_id",               merged with it (OneID)
 *        "transform": "integer"}          optional: "integer" ("17850.0" -> "17850"),
 *     ],                                  "trim", "lower"
 *     "traits": [                         user attributes (schema) or unindexed traits
 *       {"column": "Country", "name": "country", "type": "string"}
 *     ],
 *     "event": {                          optional: without it each row is an identify
 *       "name": "purchase",               constant, or {"column": "Event"}
 *       "name_when": [{"column": "InvoiceNo", "prefix": "C", "name": "refund"}],
 *       "timestamp": {"column": "InvoiceDate",
 *                     "format": "%Y-%m-%d %H:%M:%S"},   or "iso8601", "epoch", "epoch_ms"
 *       "message_id": {"column": "Id"},   optional; default: file + line (no dedup)
 *       "properties": [
 *         {"column": "InvoiceNo", "name": "invoice"},
 *         {"column": "Quantity", "name": "quantity", "type": "int"},
 *         {"column": "UnitPrice", "name": "unit_price", "type": "number"},
 *         {"name": "amount", "type": "number",
 *          "product": ["Quantity", "UnitPrice"], "round": 2}
 *       ]
 *     },
 *     "attributes": [{"name": "country", "type": "string"}],  declared before the import
 *     "indexed_properties": ["stock_code"],                    added to the config
 *     "tags": [{"column": "usertag",      a cell of delimited tag ids: each one
 *               "separator": ",",          the dictionary knows becomes a tag of
 *               "dictionary": {"10006": "interest/finance"},   the row's user
 *               "unknown": "skip"}]       (no dictionary: the cells are tag paths)
 *   }
 *
 * Columns are header names (strings) or 0-based positions (integers).
 * Value types: "string" (default), "int", "number", "bool" (true/false,
 * 1/0, yes/no), "timestamp" (with "format"). An empty cell leaves the
 * property or trait out. A value that does not convert rejects the row,
 * naming the line, column and value.
 *
 * Each row means one Segment-shaped event: identify
 * {"type":"identify","userId"|"anonymousId"|traits.<type>..., "traits"}
 * or track {"type":"track", ..., "event", "timestamp", "properties",
 * "context":{"traits":{...}}}, with Segment's rules (segment_parse_event).
 * Imports take it typed, without JSON (mapping_row_event); mapping_row
 * builds the same event as a JSON document from the same conversion, so
 * there is one mapping implementation and the two agree by construction
 * (tests/unit/test_ingest_mapping.c checks them against the JSON path).
 */
#ifndef CP_INGEST_MAPPING_H
#define CP_INGEST_MAPPING_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "ingest/csv.h"
#include "ingest/event.h"

#define MAPPING_MAX_COLS 256

typedef enum map_vtype { MV_STRING = 1, MV_INT, MV_NUMBER, MV_BOOL, MV_TIMESTAMP } map_vtype;
typedef enum map_xform { MX_NONE = 0, MX_INTEGER, MX_TRIM, MX_LOWER } map_xform;
typedef enum map_tsfmt { TF_ISO = 1, TF_EPOCH, TF_EPOCH_MS, TF_STRF } map_tsfmt;

typedef struct map_col {
    char *name; /* header name, or NULL for a position */
    int pos;    /* resolved position (-1 until bound) */
} map_col_t;

typedef struct map_field {
    char *name; /* output name (trait, property, identifier type) */
    map_col_t col;
    map_vtype type;
    map_xform xform;
    map_tsfmt tsfmt;
    char *strf;  /* TF_STRF */
    int product; /* computed: col * col2 */
    map_col_t col2;
    int round; /* decimals for numbers, -1 = none */
    /* Set by mapping_parse: */
    int key;           /* output key of the field's object: fields with the same name
                          (ids' types and traits share one object) share a key */
    size_t nlen;       /* strlen(name) */
    size_t name_off;   /* of name in mapping_t.names (ids, traits, properties) */
    int id_kind;       /* identifiers: 1 user_id, 2 anonymous_id, 0 other */
    int builtin_ident; /* name is a built-in identifier type (ingest_trait_is_ident) */
} map_field_t;

typedef struct map_when {
    map_col_t col;
    char *prefix;
    char *name;
    size_t prefix_len, name_len; /* strlen of each (mapping_parse) */
    int name_print;              /* name has no control bytes (mapping_parse) */
} map_when_t;

#define MAPPING_MAX_TAGS 256 /* tags of one row, over all "tags" columns */
#define MAPPING_TAG_MAX 256  /* bytes of one tag id or path in a cell */

/* "tags": a column of delimited tag ids (through a dictionary) or tag paths. */
typedef struct map_tags {
    map_col_t col;
    char sep;     /* one byte, default ',' */
    json_t *dict; /* object id -> tag path (owned), or NULL: cells are paths */
} map_tags_t;

typedef struct mapping {
    char *name;
    char delim;
    int header;
    map_col_t *skip; /* skip_if_empty */
    size_t nskip;
    map_field_t *ids;
    size_t nids;
    map_field_t *traits;
    size_t ntraits;
    int has_event;
    char *event_name;      /* constant, or NULL with event_col */
    size_t event_name_len; /* strlen(event_name) */
    int event_name_print;  /* event_name has no control bytes (mapping_parse) */
    map_col_t event_col;
    map_when_t *when;
    size_t nwhen;
    map_field_t ts; /* ts.col.pos < 0 and no name: no timestamp column */
    int has_ts;
    map_col_t msgid_col;
    int has_msgid;
    map_field_t *props;
    size_t nprops;
    json_t *attributes; /* [{"name","type"}] (owned), may be NULL */
    json_t *indexed;    /* ["stock_code"] (owned), may be NULL */
    int bound;
    size_t ntkeys;      /* distinct keys of the traits object (ids' types + traits) */
    size_t npkeys;      /* distinct property names */
    int uniq_keys;      /* every output name is distinct (ntkeys == nids + ntraits,
                           npkeys == nprops): rows need no key -> value slots */
    size_t bound_fixed; /* the part of an event's JSON size bound that does not
                           depend on the row (mapping_row_event) */
    map_tags_t *tags;   /* "tags" (owned), [ntags] */
    size_t ntags;
    char *names; /* every field name, NUL-terminated, one after the other:
                    typed events' names point here (owned) */
    size_t names_len;
} mapping_t;

/* Parses a mapping document. CP_EINVAL naming the field. *out: mapping_free. */
cp_status mapping_parse(const char *json, size_t len, mapping_t **out, cp_error_t *err);
/*
 * Reads every tags[i].dictionary_file of a mapping document (a JSON object
 * id -> tag path, at most MAPPING_DICT_FILE_MAX bytes; a relative path is
 * taken from `dir`, the mapping file's directory, "." if NULL) into
 * tags[i].dictionary. *out: the resolved document (caller frees), or NULL
 * when nothing needed resolving (use the text as is). Errors name the
 * key and the file; malformed mapping JSON is left to mapping_parse.
 */
#define MAPPING_DICT_FILE_MAX (16u << 20)
cp_status mapping_resolve_files(const char *json, size_t len, const char *dir, char **out,
                                size_t *outlen, cp_error_t *err);
/* The built-in mapping of a preset ("online-retail"); CP_ENOTFOUND. */
cp_status mapping_preset(const char *name, mapping_t **out, cp_error_t *err);
/* The JSON text of a preset (docs, `import --show-preset`); NULL if unknown. */
const char *mapping_preset_json(const char *name);
void mapping_free(mapping_t *m); /* NULL fine */

/* Resolves column names against a header record. CP_EINVAL naming a
 * missing column. Mappings without names need no header. */
cp_status mapping_bind(mapping_t *m, const csv_field_t *hdr, size_t n, cp_error_t *err);

typedef enum map_result { MAP_EVENT = 0, MAP_SKIP = 1 } map_result;

/*
 * One data row into a new Segment-shaped event (*out, caller decrefs).
 * `msgid_prefix` + line number make the default messageId. MAP_SKIP (CP_OK,
 * *out NULL) for rows a skip_if_empty column leaves out. CP_EINVAL /
 * CP_ETYPE naming the column and value for a bad row.
 */
cp_status mapping_row(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                      const char *msgid_prefix, json_t **out, map_result *res, cp_error_t *err);

/*
 * One data row straight into a typed event appended to b: no JSON. The
 * event is exactly what mapping_row() followed by
 * segment_parse_event(doc, ING_NONE, NULL, -1, o, b, ...) gives (type,
 * identifiers with their type/value/field, messageId and its hash,
 * no_dedup, event name, ts, received_at), except that properties, traits,
 * ctx_traits and raw are NULL and tprops/ttraits hold the typed values in
 * the mapping's order (a later field of the same name replaces an earlier
 * one in place, as a JSON object would): PV_STR/PV_INT/PV_REAL/PV_BOOL as
 * the JSON value would have been; "timestamp" fields are PV_STR ISO 8601
 * text ("2010-12-01T08:26:00Z"). ttraits are the identify traits or the
 * track's context.traits, identifier-typed keys included (consumers skip
 * them with ingest_trait_is_ident, as for JSON).
 *
 * Every string the event points to (identifier values, property values,
 * event name, messageId) is copied into b->arena, NUL-terminated: the
 * fields may be reused by the reader after the call. Property and trait
 * names point into m->names instead: the mapping must outlive the batch's
 * use of the event (an import frees it after its last commit). Fields
 * with csv_field_t.plain set are taken as printable ASCII unchecked (an
 * invalid claim would let control bytes through). `o` may be NULL.
 *
 * Returns CP_OK with *res MAP_EVENT (one event appended) or MAP_SKIP
 * (skip_if_empty; nothing appended). A bad row returns CP_EINVAL /
 * CP_ETYPE / CP_ELIMIT with a message that starts with "line N: " and is
 * otherwise the text mapping_row or segment_parse_event would give; b is
 * then unchanged (not even its arena). Both make the row from one
 * conversion, which refuses what JSON cannot carry: a cell with invalid
 * UTF-8 is "line N: column C: invalid UTF-8", and a number that is not
 * finite after rounding or a product (or an int product beyond int64) is
 * a bad value. The 32 KB event limit
 * is checked on the exact size of the event's compact JSON (computed only
 * when a cheap upper bound exceeds it). CP_ENOMEM: no memory, or b->arena
 * reached its cap (commit the batch and retry the row).
 */
cp_status mapping_row_event(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                            const char *msgid_prefix, const segment_opts_t *o, ingest_batch_t *b,
                            map_result *res, cp_error_t *err);

/* strptime-like parse of %Y %m %d %H %M %S %y %b (numbers may be unpadded;
 * other characters match themselves; "%%" a percent). UTC. -1 on failure. */
int mapping_strftime_parse(const char *fmt, const char *s, size_t len, int64_t *secs);

#endif /* CP_INGEST_MAPPING_H */
