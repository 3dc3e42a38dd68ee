/*
 * propval.h — a typed event property or trait value, without JSON.
 *
 * Events reach the engine from Segment JSON (HTTP, NDJSON files) and from
 * CSV rows through a column mapping. Both become arrays of ev_prop_t, so
 * the behaviour index, event measures and the catalog read one typed form
 * and the CSV import never builds a JSON document per row.
 *
 * The kinds are JSON's scalars and keep JSON's meaning: a value read from
 * {"quantity": 6} is PV_INT 6, from {"unit_price": 2.55} PV_REAL 2.55,
 * from {"invoice": "536365"} PV_STR. Null, objects and arrays are PV_NONE
 * (no value for indexes and measures; the catalog still lists the name).
 * Strings are borrowed (not NUL-terminated) and valid UTF-8 when they come
 * from a parser that checked it (jansson, the mapping layer).
 */
#ifndef CP_MODEL_PROPVAL_H
#define CP_MODEL_PROPVAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum pv_kind { PV_NONE = 0, PV_STR, PV_INT, PV_REAL, PV_BOOL } pv_kind;

#define PV_TEXT_MAX 40 /* bytes pv_text needs in buf for a number */

typedef struct ev_prop {
    const char *name; /* borrowed, not NUL-terminated */
    size_t nlen;
    pv_kind kind;
    const char *s; /* PV_STR, borrowed */
    size_t slen;
    int64_t i; /* PV_INT; PV_BOOL: 0 or 1 */
    double d;  /* PV_REAL */
} ev_prop_t;

/*
 * The text the indexes use for a value (behaviour series, distinct sets):
 * strings as they are, integers in decimal, reals in the shortest form that
 * reads back (fmt_double), booleans "true" / "false". Points *s at the
 * string or at buf (PV_TEXT_MAX bytes). Returns the length; 0 with *s NULL
 * for PV_NONE.
 */
size_t pv_text(const ev_prop_t *p, char *buf, const char **s);

/* The typed form of a jansson value under `name` (both borrowed: the json
 * must outlive *out). */
void pv_from_json(const char *name, size_t nlen, const json_t *v, ev_prop_t *out);

/* A new jansson value of the same meaning (NULL for PV_NONE or no memory). */
json_t *pv_to_json(const ev_prop_t *p);

/* The property called name in props[0..n) (first match), or NULL. */
const ev_prop_t *pv_find(const ev_prop_t *props, size_t n, const char *name, size_t nlen);

#endif /* CP_MODEL_PROPVAL_H */
