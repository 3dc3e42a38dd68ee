/*
 * schema.h — attributes (id, name, type) and the value dictionaries of
 * ENUM, STRING and BOOL attributes (value text <-> uint32 value id).
 *
 * Attribute ids and value ids start at 1, are allocated in order and are
 * never reused (bitmap keys a/<attr>/v/<value> depend on them). Value id 0
 * means "no value" in the index's per-user columns. A value no user holds
 * after a deletion is removed (schema_value_remove): its entry is NULL.
 *
 * Persistence: STORE_ATTRS big-endian id -> {"name","type","created"};
 * STORE_VALUES attr id BE + value id BE -> the value's bytes;
 * STORE_META "valias/<attr id>/<spelling>" -> value id (u64) per alias.
 * Not thread-safe: the engine's lock covers it.
 */
#ifndef CP_MODEL_SCHEMA_H
#define CP_MODEL_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "model/strmap.h"
#include "store/store.h"

#define SCHEMA_MAX_ATTRS 4096u
#define SCHEMA_MAX_NAME 64
#define SCHEMA_MAX_VALUE 1024               /* bytes of one string/enum value */
#define SCHEMA_MAX_ENUM_VALUES 65535u       /* distinct values of an ENUM */
#define SCHEMA_MAX_STRING_VALUES (1u << 24) /* distinct values of a STRING */

typedef struct schema_attr {
    uint32_t id;
    char *name;
    cp_attr_type type;
    int64_t created;
    /* Dictionary (ENUM/STRING/BOOL): values[1..nvalues]. */
    char **values;
    uint32_t *value_lens;
    uint32_t nvalues, capvalues; /* nvalues: the highest id given */
    uint32_t ndead;              /* ids of removed values (values[id] NULL) */
    strmap_t by_value;
    /* Aliases (ENUM/STRING): other spellings of a value (广州 -> the id of
     * guangzhou), looked up before the dictionary; by_alias maps the
     * spelling to its index in alias_text / alias_vid. */
    char **alias_text;
    uint32_t *alias_vid;
    uint32_t nalias, capalias;
    strmap_t by_alias;
} schema_attr_t;

typedef struct schema {
    schema_attr_t **attrs; /* by id; attrs[0] unused */
    uint32_t n;            /* highest id */
    uint32_t cap;
    strmap_t by_name;
} schema_t;

void schema_init(schema_t *s);
void schema_free(schema_t *s);

/* [a-z_][a-z0-9_]{0,63} */
cp_status schema_validate_name(const char *name, cp_error_t *err);
/* "int" -> CP_ATTR_INT ...; 0 if unknown. */
cp_attr_type schema_type_parse(const char *s);
/* 1 for types with a value dictionary. */
int schema_type_has_dict(cp_attr_type t);

schema_attr_t *schema_find(const schema_t *s, const char *name, size_t len);
schema_attr_t *schema_get(const schema_t *s, uint32_t id);

/*
 * Defines an attribute and persists it (txn). Same name and type: no-op
 * (*created_out = 0); another type: CP_ECONFLICT.
 */
cp_status schema_define(schema_t *s, store_txn_t *txn, const char *name, cp_attr_type type,
                        uint32_t *id_out, int *created_out, cp_error_t *err);

/* Value id of v in a's dictionary, 0 if absent. */
/* The value id of v, through an alias when v is one; 0 if never seen. */
uint32_t schema_value_find(const schema_attr_t *a, const char *v, size_t len);
/* Finds or adds v (persisting a new entry in txn). Limits per type. */
cp_status schema_value_intern(schema_attr_t *a, store_txn_t *txn, const char *v, size_t len,
                              uint32_t *id_out, cp_error_t *err);

#define SCHEMA_MAX_ALIAS 400      /* bytes of one alias (it is part of a store key) */
#define SCHEMA_MAX_ALIASES 10000u /* aliases of one attribute */
/* The value id an alias stands for, or 0 when v is no alias. */
uint32_t schema_alias_find(const schema_attr_t *a, const char *v, size_t len);
/* Makes `alias` (valid UTF-8, 1..SCHEMA_MAX_ALIAS bytes) stand for value
 * id `vid` (existing), replacing an earlier target; stored in txn. */
cp_status schema_alias_set(schema_attr_t *a, store_txn_t *txn, const char *alias, size_t len,
                           uint32_t vid, cp_error_t *err);
/* Removes an alias; CP_ENOTFOUND if there is none. */
cp_status schema_alias_remove(schema_attr_t *a, store_txn_t *txn, const char *alias, size_t len,
                              cp_error_t *err);
/*
 * Removes value vid (no user may hold it any more) from a's dictionary, in
 * memory and in STORE_VALUES: its text is gone, its id stays taken (a
 * one-NUL-byte row marks it) and values[vid] is NULL from now on, so
 * walks over 1..nvalues skip NULL entries. A deleted user's values that
 * nobody else holds leave this way. Unknown or removed ids: CP_OK.
 */
cp_status schema_value_remove(schema_attr_t *a, store_txn_t *txn, uint32_t vid, cp_error_t *err);
/* Distinct values held by the dictionary (removed ones not counted). */
uint32_t schema_value_count(const schema_attr_t *a);

cp_status schema_load(schema_t *s, store_txn_t *txn, cp_error_t *err);

#endif /* CP_MODEL_SCHEMA_H */
