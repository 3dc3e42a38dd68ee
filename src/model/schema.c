/* schema.c — attributes and value dictionaries; see schema.h. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "model/codec.h"
#include "model/schema.h"
#include "util/util.h"

const char *cp_attr_type_name(cp_attr_type t)
{
    switch (t) {
    case CP_ATTR_INT:
        return "int";
    case CP_ATTR_ENUM:
        return "enum";
    case CP_ATTR_STRING:
        return "string";
    case CP_ATTR_BOOL:
        return "bool";
    case CP_ATTR_TIMESTAMP:
        return "timestamp";
    case CP_ATTR_GEO:
        return "geo";
    }
    return NULL;
}

cp_attr_type schema_type_parse(const char *s)
{
    for (int t = CP_ATTR_INT; t <= CP_ATTR_GEO; t++)
        if (s && strcmp(s, cp_attr_type_name((cp_attr_type)t)) == 0)
            return (cp_attr_type)t;
    return (cp_attr_type)0;
}

int schema_type_has_dict(cp_attr_type t)
{
    return t == CP_ATTR_ENUM || t == CP_ATTR_STRING || t == CP_ATTR_BOOL;
}

static void attr_free(schema_attr_t *a)
{
    if (a == NULL)
        return;
    for (uint32_t i = 1; i <= a->nvalues; i++)
        free(a->values[i]);
    free(a->values);
    free(a->value_lens);
    strmap_free(&a->by_value);
    for (uint32_t i = 0; i < a->nalias; i++)
        free(a->alias_text[i]);
    free(a->alias_text);
    free(a->alias_vid);
    strmap_free(&a->by_alias);
    free(a->name);
    free(a);
}

void schema_init(schema_t *s)
{
    memset(s, 0, sizeof *s);
    strmap_init(&s->by_name);
}

void schema_free(schema_t *s)
{
    if (s == NULL)
        return;
    for (uint32_t i = 1; i <= s->n; i++)
        attr_free(s->attrs[i]);
    free(s->attrs);
    strmap_free(&s->by_name);
    memset(s, 0, sizeof *s);
}

cp_status schema_validate_name(const char *name, cp_error_t *err)
{
    if (name == NULL || name[0] == '\0')
        return CP_ERR(err, CP_EINVAL, "empty attribute name");
    size_t n = strnlen(name, SCHEMA_MAX_NAME + 1);
    if (n > SCHEMA_MAX_NAME)
        return CP_ERR(err, CP_ELIMIT, "attribute name \"%.64s...\" is longer than %d bytes", name,
                      SCHEMA_MAX_NAME);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return CP_ERR(err, CP_EINVAL,
                          "attribute name \"%s\" is not allowed (names are [a-z_][a-z0-9_]*)",
                          utf8_valid(name, n) ? name : "?");
    }
    return CP_OK;
}

schema_attr_t *schema_find(const schema_t *s, const char *name, size_t len)
{
    uint32_t id;
    return strmap_get(&s->by_name, name, len, &id) ? s->attrs[id] : NULL;
}

schema_attr_t *schema_get(const schema_t *s, uint32_t id)
{
    return id >= 1 && id <= s->n ? s->attrs[id] : NULL;
}

static cp_status attr_insert(schema_t *s, uint32_t id, const char *name, cp_attr_type type,
                             int64_t created, schema_attr_t **out)
{
    if (id >= s->cap) {
        uint32_t nc = s->cap ? s->cap : 16;
        while (nc <= id)
            nc *= 2;
        schema_attr_t **n = realloc(s->attrs, nc * sizeof *n);
        if (n == NULL)
            return CP_ENOMEM;
        memset(n + s->cap, 0, (nc - s->cap) * sizeof *n);
        s->attrs = n;
        s->cap = nc;
    }
    schema_attr_t *a = calloc(1, sizeof *a);
    if (a == NULL)
        return CP_ENOMEM;
    strmap_init(&a->by_value);
    strmap_init(&a->by_alias);
    a->id = id;
    a->type = type;
    a->created = created;
    a->name = strdup(name);
    if (a->name == NULL || strmap_put(&s->by_name, name, strlen(name), id)) {
        attr_free(a);
        return CP_ENOMEM;
    }
    s->attrs[id] = a;
    if (id > s->n)
        s->n = id;
    *out = a;
    return CP_OK;
}

cp_status schema_define(schema_t *s, store_txn_t *txn, const char *name, cp_attr_type type,
                        uint32_t *id_out, int *created_out, cp_error_t *err)
{
    cp_status rc;
    *created_out = 0;
    if ((rc = schema_validate_name(name, err)))
        return rc;
    if (cp_attr_type_name(type) == NULL)
        return CP_ERR(err, CP_EINVAL, "attribute \"%s\": unknown type %d", name, (int)type);
    schema_attr_t *a = schema_find(s, name, strlen(name));
    if (a) {
        if (a->type != type)
            return CP_ERR(err, CP_ECONFLICT, "attribute \"%s\" is already defined as %s, not %s",
                          name, cp_attr_type_name(a->type), cp_attr_type_name(type));
        *id_out = a->id;
        return CP_OK;
    }
    if (s->n >= SCHEMA_MAX_ATTRS)
        return CP_ERR(err, CP_ELIMIT, "too many attributes (limit %u)", SCHEMA_MAX_ATTRS);
    int64_t now = time_now_ms();
    json_t *j = json_pack("{s:s,s:s,s:I}", "name", name, "type", cp_attr_type_name(type), "created",
                          (json_int_t)now);
    char *text = j ? json_dumps_checked(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory defining attribute \"%s\"", name);
    unsigned char k[4];
    uint32_t id = s->n + 1;
    be32_put(k, id);
    rc = store_put(txn, STORE_ATTRS, k, 4, text, strlen(text), err);
    free(text);
    if (rc)
        return rc;
    if (attr_insert(s, id, name, type, now, &a))
        return CP_ERR(err, CP_ENOMEM, "out of memory defining attribute \"%s\"", name);
    *id_out = id;
    *created_out = 1;
    return CP_OK;
}

uint32_t schema_value_find(const schema_attr_t *a, const char *v, size_t len)
{
    uint32_t id = 0;
    /* Aliases first: a spelling stored as a value before it was made an
     * alias now stands for the alias's target. */
    if (a->nalias && (id = schema_alias_find(a, v, len)) != 0)
        return id;
    return strmap_get(&a->by_value, v, len, &id) ? id : 0;
}

uint32_t schema_alias_find(const schema_attr_t *a, const char *v, size_t len)
{
    uint32_t i = 0;
    if (a->nalias == 0 || !strmap_get(&a->by_alias, v, len, &i) || i >= a->nalias)
        return 0;
    return a->alias_vid[i];
}

/* "valias/<attr id>/<spelling>" into buf (cap > SCHEMA_MAX_ALIAS + 32). */
static void alias_key(char *buf, size_t cap, uint32_t aid, const char *v, size_t len)
{
    snprintf(buf, cap, "valias/%u/%.*s", aid, (int)len, v);
}

/* Adds or retargets an alias in memory only (shared by set and load). */
static cp_status alias_insert(schema_attr_t *a, const char *v, size_t len, uint32_t vid)
{
    uint32_t i = 0;
    if (strmap_get(&a->by_alias, v, len, &i) && i < a->nalias) {
        a->alias_vid[i] = vid;
        return CP_OK;
    }
    if (a->nalias == a->capalias) {
        uint32_t nc = a->capalias ? a->capalias * 2 : 8;
        char **t = realloc(a->alias_text, nc * sizeof *t);
        if (t == NULL)
            return CP_ENOMEM;
        a->alias_text = t;
        uint32_t *d = realloc(a->alias_vid, nc * sizeof *d);
        if (d == NULL)
            return CP_ENOMEM;
        a->alias_vid = d;
        a->capalias = nc;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return CP_ENOMEM;
    memcpy(copy, v, len);
    copy[len] = '\0';
    if (strmap_put(&a->by_alias, v, len, a->nalias)) {
        free(copy);
        return CP_ENOMEM;
    }
    a->alias_text[a->nalias] = copy;
    a->alias_vid[a->nalias++] = vid;
    return CP_OK;
}

cp_status schema_alias_set(schema_attr_t *a, store_txn_t *txn, const char *alias, size_t len,
                           uint32_t vid, cp_error_t *err)
{
    if (len == 0 || len > SCHEMA_MAX_ALIAS || !utf8_valid(alias, len) || memchr(alias, '\0', len))
        return CP_ERR(err, CP_EINVAL,
                      "attribute \"%s\": an alias is 1 to %d bytes of UTF-8 without NUL", a->name,
                      SCHEMA_MAX_ALIAS);
    if (vid == 0 || vid > a->nvalues)
        return CP_ERR(err, CP_EINTERNAL, "attribute \"%s\": alias target %u out of range", a->name,
                      vid);
    if (schema_alias_find(a, alias, len) == 0 && a->nalias >= SCHEMA_MAX_ALIASES)
        return CP_ERR(err, CP_ELIMIT, "attribute \"%s\" has too many aliases (limit %u)", a->name,
                      SCHEMA_MAX_ALIASES);
    char key[SCHEMA_MAX_ALIAS + 32];
    alias_key(key, sizeof key, a->id, alias, len);
    cp_status rc = store_meta_put_u64(txn, key, vid, err);
    if (rc)
        return rc;
    if (alias_insert(a, alias, len, vid))
        return CP_ERR(err, CP_ENOMEM, "out of memory adding an alias of \"%s\"", a->name);
    return CP_OK;
}

cp_status schema_alias_remove(schema_attr_t *a, store_txn_t *txn, const char *alias, size_t len,
                              cp_error_t *err)
{
    uint32_t i = 0;
    if (!strmap_get(&a->by_alias, alias, len, &i) || i >= a->nalias)
        return CP_ERR(err, CP_ENOTFOUND, "attribute \"%s\" has no alias \"%.*s\"", a->name,
                      (int)(len > 200 ? 200 : len), alias);
    char key[SCHEMA_MAX_ALIAS + 32];
    alias_key(key, sizeof key, a->id, alias, len);
    cp_status rc = store_del(txn, STORE_META, key, strlen(key), err);
    if (rc)
        return rc;
    strmap_del(&a->by_alias, alias, len);
    free(a->alias_text[i]);
    uint32_t last = --a->nalias;
    if (i != last) {
        /* Swap-remove: the moved alias's map entry gets its new index
         * (the key exists, so the put replaces without allocating). */
        a->alias_text[i] = a->alias_text[last];
        a->alias_vid[i] = a->alias_vid[last];
        strmap_put(&a->by_alias, a->alias_text[i], strlen(a->alias_text[i]), i);
    }
    return CP_OK;
}

static cp_status load_alias(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                            cp_error_t *err)
{
    schema_t *s = ud;
    const char *key = k, *end = key + kl, *p = key + 7; /* past "valias/" */
    uint32_t aid = 0;
    while (p < end && *p >= '0' && *p <= '9' && aid < SCHEMA_MAX_ATTRS)
        aid = aid * 10 + (uint32_t)(*p++ - '0');
    schema_attr_t *a = schema_get(s, aid);
    uint64_t vid = 0;
    if (vl == 8)
        for (int i = 7; i >= 0; i--)
            vid = vid << 8 | ((const unsigned char *)v)[i];
    if (a == NULL || p >= end || *p != '/' || p + 1 >= end || vl != 8 || vid == 0 ||
        vid > a->nvalues || !utf8_valid(p + 1, (size_t)(end - p - 1)))
        return CP_ERR(err, CP_EIO, "corrupt value alias record \"%.*s\"", (int)(kl > 80 ? 80 : kl),
                      key);
    if (alias_insert(a, p + 1, (size_t)(end - p - 1), (uint32_t)vid))
        return CP_ERR(err, CP_ENOMEM, "out of memory loading value aliases");
    return CP_OK;
}

/* Room for value id `id` in a's arrays (new slots NULL / 0). */
static cp_status value_grow(schema_attr_t *a, uint32_t id)
{
    if (id >= a->capvalues) {
        uint32_t nc = a->capvalues ? a->capvalues : 16;
        while (nc <= id)
            nc *= 2;
        char **nv = realloc(a->values, nc * sizeof *nv);
        if (nv == NULL)
            return CP_ENOMEM;
        a->values = nv;
        uint32_t *nl = realloc(a->value_lens, nc * sizeof *nl);
        if (nl == NULL)
            return CP_ENOMEM;
        a->value_lens = nl;
        memset(nv + a->capvalues, 0, (nc - a->capvalues) * sizeof *nv);
        memset(nl + a->capvalues, 0, (nc - a->capvalues) * sizeof *nl);
        a->capvalues = nc;
    }
    return CP_OK;
}

static cp_status value_insert(schema_attr_t *a, uint32_t id, const char *v, size_t len)
{
    if (value_grow(a, id))
        return CP_ENOMEM;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return CP_ENOMEM;
    memcpy(copy, v, len);
    copy[len] = '\0';
    if (strmap_put(&a->by_value, v, len, id)) {
        free(copy);
        return CP_ENOMEM;
    }
    free(a->values[id]);
    a->values[id] = copy;
    a->value_lens[id] = (uint32_t)len;
    if (id > a->nvalues)
        a->nvalues = id;
    return CP_OK;
}

cp_status schema_value_intern(schema_attr_t *a, store_txn_t *txn, const char *v, size_t len,
                              uint32_t *id_out, cp_error_t *err)
{
    uint32_t id = schema_value_find(a, v, len);
    if (id) {
        *id_out = id;
        return CP_OK;
    }
    uint32_t max = a->type == CP_ATTR_STRING ? SCHEMA_MAX_STRING_VALUES : SCHEMA_MAX_ENUM_VALUES;
    if (a->nvalues >= max)
        return CP_ERR(err, CP_ELIMIT, "attribute \"%s\" has too many distinct values (limit %u)",
                      a->name, max);
    if (len > SCHEMA_MAX_VALUE)
        return CP_ERR(err, CP_ELIMIT, "attribute \"%s\": value longer than %d bytes", a->name,
                      SCHEMA_MAX_VALUE);
    id = a->nvalues + 1;
    unsigned char k[8];
    be32_put(k, a->id);
    be32_put(k + 4, id);
    cp_status rc = store_put(txn, STORE_VALUES, k, 8, v, len, err);
    if (rc)
        return rc;
    if (value_insert(a, id, v, len))
        return CP_ERR(err, CP_ENOMEM, "out of memory adding a value of \"%s\"", a->name);
    *id_out = id;
    return CP_OK;
}

/* A removed value's row: one NUL byte, which no value can hold. It keeps
 * the id from being given again (bitmap keys name ids) and holds no byte
 * of the value. */
#define VALUE_TOMBSTONE "\0"
#define VALUE_DEAD UINT32_MAX /* value_lens[] of a removed id */

cp_status schema_value_remove(schema_attr_t *a, store_txn_t *txn, uint32_t vid, cp_error_t *err)
{
    if (vid == 0 || vid > a->nvalues || a->values[vid] == NULL)
        return CP_OK;
    /* A value an alias stands for is the operator's configuration, not
     * the user's data: it stays. */
    for (uint32_t i = 0; i < a->nalias; i++)
        if (a->alias_vid[i] == vid)
            return CP_OK;
    unsigned char k[8];
    be32_put(k, a->id);
    be32_put(k + 4, vid);
    cp_status rc = store_put(txn, STORE_VALUES, k, 8, VALUE_TOMBSTONE, 1, err);
    if (rc)
        return rc;
    strmap_del(&a->by_value, a->values[vid], a->value_lens[vid]);
    free(a->values[vid]);
    a->values[vid] = NULL;
    a->value_lens[vid] = VALUE_DEAD;
    a->ndead++;
    return CP_OK;
}

uint32_t schema_value_count(const schema_attr_t *a)
{
    return a->nvalues - a->ndead;
}

static cp_status load_attr(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                           cp_error_t *err)
{
    schema_t *s = ud;
    if (kl != 4)
        return CP_ERR(err, CP_EIO, "corrupt attribute record key");
    uint32_t id = be32_get(k);
    json_error_t je;
    json_t *j = json_loadb_checked(v, vl, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading attribute records");
    const char *name = NULL, *type = NULL;
    json_int_t created = 0;
    cp_status rc = CP_OK;
    if (j == NULL ||
        json_unpack(j, "{s:s,s:s,s?I}", "name", &name, "type", &type, "created", &created) ||
        schema_validate_name(name, NULL) || !schema_type_parse(type) || id == 0 ||
        id > SCHEMA_MAX_ATTRS || schema_get(s, id) || schema_find(s, name, strlen(name))) {
        rc = CP_ERR(err, CP_EIO, "corrupt record of attribute %u", id);
    } else {
        schema_attr_t *a;
        if (attr_insert(s, id, name, schema_type_parse(type), created, &a))
            rc = CP_ERR(err, CP_ENOMEM, "out of memory loading attributes");
    }
    json_decref(j);
    return rc;
}

static cp_status load_value(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                            cp_error_t *err)
{
    schema_t *s = ud;
    if (kl != 8)
        return CP_ERR(err, CP_EIO, "corrupt attribute value key");
    uint32_t aid = be32_get(k), vid = be32_get((const unsigned char *)k + 4);
    schema_attr_t *a = schema_get(s, aid);
    if (a != NULL && schema_type_has_dict(a->type) && vid > 0 && vid <= SCHEMA_MAX_STRING_VALUES &&
        vl == 1 && *(const char *)v == '\0' && !(vid <= a->nvalues && a->values[vid])) {
        /* a removed value: the id stays taken */
        if (value_grow(a, vid))
            return CP_ERR(err, CP_ENOMEM, "out of memory loading attribute values");
        a->value_lens[vid] = VALUE_DEAD;
        if (vid > a->nvalues)
            a->nvalues = vid;
        a->ndead++;
        return CP_OK;
    }
    if (a == NULL || !schema_type_has_dict(a->type) || vid == 0 || vid > SCHEMA_MAX_STRING_VALUES ||
        vl > SCHEMA_MAX_VALUE || !utf8_valid(v, vl) || (vid <= a->nvalues && a->values[vid]))
        return CP_ERR(err, CP_EIO, "corrupt value %u of attribute %u", vid, aid);
    if (value_insert(a, vid, v, vl))
        return CP_ERR(err, CP_ENOMEM, "out of memory loading attribute values");
    return CP_OK;
}

cp_status schema_load(schema_t *s, store_txn_t *txn, cp_error_t *err)
{
    cp_status rc = store_each(txn, STORE_ATTRS, NULL, 0, load_attr, s, err);
    if (rc)
        return rc;
    rc = store_each(txn, STORE_VALUES, NULL, 0, load_value, s, err);
    if (rc)
        return rc;
    rc = store_each(txn, STORE_META, "valias/", 7, load_alias, s, err);
    if (rc)
        return rc;
    /* Dictionaries must be gapless (ids allocated in order). */
    for (uint32_t i = 1; i <= s->n; i++) {
        schema_attr_t *a = s->attrs[i];
        if (a == NULL)
            continue;
        for (uint32_t v = 1; v <= a->nvalues; v++)
            if (a->values[v] == NULL && a->value_lens[v] != VALUE_DEAD)
                return CP_ERR(err, CP_EIO, "attribute \"%s\": value %u missing", a->name, v);
    }
    return CP_OK;
}
