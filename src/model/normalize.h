/*
 * normalize.h — identifier types and normalisation for OneID (DESIGN.md §4,
 * docs/identity.md).
 *
 * An identifier is (type, value). Before it is looked up or stored, the value
 * is normalised per type and turned into a *key*, the bytes the identity
 * graph (identity.h) stores:
 *
 *   "type:value"          for types stored in clear
 *   "type:#" + 64 hex     for PII types when hashing is on: lower-case hex of
 *                         SHA-256(salt || normalised value)
 *
 * Built-in types, in this order (their indexes are stable):
 *   user_id anonymous_id phone email device_id idfa oaid member_id openid
 *   unionid
 * plus up to IDENT_MAX_TYPES - 10 configured others named
 * [a-z][a-z0-9_]{0,31}.
 *
 * Normalisation per type (details and examples in docs/identity.md):
 *   phone      E.164 "+<digits>" (7..15 digits); +CC, 00CC and national
 *              numbers with the configured default country calling code
 *   email      trimmed, ASCII lower-cased, exactly one '@', <= 254 bytes
 *   device_id  trimmed
 *   idfa, oaid trimmed; all-zero ids (limited ad tracking) rejected; a
 *              UUID-shaped idfa is upper-cased, a hex oaid lower-cased
 *   others     exactly as given (user_id must equal the existing API's
 *              user "id", byte for byte)
 * Every value: 1..256 bytes of valid UTF-8 without control characters.
 *
 * Nothing here allocates or keeps global state; the config is a plain value
 * owned by the caller.
 */
#ifndef CP_MODEL_NORMALIZE_H
#define CP_MODEL_NORMALIZE_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "store/store.h"

#define IDENT_MAX_VALUE 256 /* bytes of a raw or normalised value */
#define IDENT_MAX_TYPE 32   /* bytes of a type name */
#define IDENT_MAX_TYPES 64  /* built-in + configured types */
#define IDENT_SALT_LEN 32
#define IDENT_HASH_HEX 64
/* Longest key: type ":" value. Buffers for keys hold IDENT_MAX_KEY + 1. */
#define IDENT_MAX_KEY (IDENT_MAX_TYPE + 1 + IDENT_MAX_VALUE)
#define IDENT_MAX_EMAIL 254

/* Indexes of the built-in types in ident_config_t.types. */
enum {
    IDENT_USER_ID = 0,
    IDENT_ANONYMOUS_ID,
    IDENT_PHONE,
    IDENT_EMAIL,
    IDENT_DEVICE_ID,
    IDENT_IDFA,
    IDENT_OAID,
    IDENT_MEMBER_ID,
    IDENT_OPENID,
    IDENT_UNIONID,
    IDENT_NBUILTIN
};

/* The names of the built-in types, in that order ("user_id", ...). */
extern const char *const ident_builtin_types[IDENT_NBUILTIN];

/*
 * What a data directory's identifiers are normalised and hashed with.
 * ident_config_init() fills the defaults; ident_config_bind() loads (or
 * creates) the salt and pins the PII settings to the data directory.
 */
typedef struct ident_config {
    char ic_country[4]; /* default country calling code, 1-3 digits ("86") */
    int ic_hash_pii;    /* 1: PII types stored as salted SHA-256 (default) */
    uint64_t ic_pii;    /* bit i set: type i is PII (default phone, email, idfa, oaid) */
    size_t ic_ntypes;
    char ic_types[IDENT_MAX_TYPES][IDENT_MAX_TYPE + 1];
    unsigned char ic_salt[IDENT_SALT_LEN];
    int ic_have_salt; /* set by ident_config_bind / ident_config_set_salt */
} ident_config_t;

/* Defaults: the 10 built-in types, country "86", PII phone/email/idfa/oaid,
 * hashing on, no salt yet. */
void ident_config_init(ident_config_t *c);

/* Adds a configured type (CP_EINVAL for a bad name, CP_EEXIST if present,
 * CP_ELIMIT past IDENT_MAX_TYPES). `pii` marks it PII. */
cp_status ident_config_add_type(ident_config_t *c, const char *name, int pii, cp_error_t *err);
/* Marks an existing type PII or not. CP_ENOTFOUND for an unknown type. */
cp_status ident_config_set_pii(ident_config_t *c, const char *name, int pii, cp_error_t *err);
/* Sets the default country calling code: 1-3 digits, no leading 0, an
 * optional leading '+' ("86", "+1", "44"). */
cp_status ident_config_set_country(ident_config_t *c, const char *cc, cp_error_t *err);
/* Uses an explicit salt (tests, or a salt shared by a cluster). */
void ident_config_set_salt(ident_config_t *c, const unsigned char salt[IDENT_SALT_LEN]);

/*
 * Pins the config to a data directory, inside the caller's transaction:
 * - the salt: meta "identity_salt" (32 random bytes from libsodium, created
 *   once when absent and `create` is set; CP_ENOTFOUND, silent, when absent
 *   and !create). An explicit salt set before must equal the stored one
 *   (CP_ECONFLICT otherwise).
 * - meta "identity_pii": the hashing setting and the set of PII types. A
 *   config that would hash differently from what is stored is CP_ECONFLICT
 *   (keys written under one setting would never be found under another).
 *   With !create and no stored setting the config is taken as is.
 * `create` needs a write transaction.
 */
cp_status ident_config_bind(store_txn_t *t, ident_config_t *c, int create, cp_error_t *err);

/* Index of type `name` (len bytes) or -1. */
int ident_type_find(const ident_config_t *c, const char *name, size_t len);
/* 1 if [name, name+len) matches [a-z][a-z0-9_]{0,31}. */
int ident_type_name_valid(const char *name, size_t len);
/* 1 if type index `type` is stored hashed under this config. */
int ident_type_hashed(const ident_config_t *c, int type);

/*
 * Normalises `value` (vlen bytes, need not be NUL-terminated) of type index
 * `type` into out (IDENT_MAX_VALUE + 1 bytes; NUL-terminated, length in
 * *outlen). Errors are CP_EINVAL / CP_ELIMIT with a message naming the
 * type and the value ("phone \"12\": too short for E.164 ...").
 */
cp_status ident_normalize(const ident_config_t *c, int type, const char *value, size_t vlen,
                          char *out, size_t *outlen, cp_error_t *err);

/*
 * The stored key of an identifier: normalises and, for hashed PII, hashes.
 * `type` is a type name (tlen bytes). out holds IDENT_MAX_KEY + 1 bytes; the
 * key is NUL-terminated and its length is in *outlen. CP_ENOTFOUND (with a
 * message) for an unknown type. Hashing needs the salt (CP_EINVAL if the
 * config has none).
 */
cp_status ident_key(const ident_config_t *c, const char *type, size_t tlen, const char *value,
                    size_t vlen, char *out, size_t *outlen, cp_error_t *err);

/* Same from one "TYPE:VALUE" text (CLI `whois`, URLs): split at the first ':'. */
cp_status ident_key_from_spec(const ident_config_t *c, const char *spec, size_t len, char *out,
                              size_t *outlen, cp_error_t *err);

/*
 * Checks that [key, key+len) is a well-formed stored key: a valid type name,
 * ':', and a value of 1..IDENT_MAX_VALUE bytes of UTF-8 without control
 * characters. It does not check the type against a config (a key read back
 * from disk may carry a type configured later).
 */
cp_status ident_key_check(const char *key, size_t len, cp_error_t *err);
/* 1 if the key's value is a hash ("type:#" + 64 lower-case hex). */
int ident_key_is_hashed(const char *key, size_t len);

/* Phone to E.164 with `country` as the default calling code (digits).
 * out: IDENT_MAX_VALUE + 1 bytes. Exposed for tests and the importers. */
cp_status ident_phone_e164(const char *country, const char *s, size_t len, char *out,
                           size_t *outlen, cp_error_t *err);
/*
 * Like ident_phone_e164, with a second calling code `hint` (digits, NULL or
 * "" for none; the country of the event's locale): a national number the
 * default country refuses is read as a number of the hint's country
 * ("415 555 0132" under +86 with hint "1" is "+14155550132"). The default
 * wins when it accepts the number; a number with its own country code
 * ('+', 00) never takes the hint.
 */
cp_status ident_phone_e164_hint(const char *country, const char *hint, const char *s, size_t len,
                                char *out, size_t *outlen, cp_error_t *err);

/* ident_key with a phone hint (see ident_phone_e164_hint); hint NULL = none. */
cp_status ident_key_hint(const ident_config_t *c, const char *type, size_t tlen, const char *value,
                         size_t vlen, const char *hint, char *out, size_t *outlen, cp_error_t *err);

/*
 * Whether an identifier value must not be used for identity, whatever its
 * type: IDENT_PLACEHOLDER for the stand-ins SDKs and forms send (empty,
 * "n/a", "na", "null", "nil", "undefined", "unknown", "none", "-",
 * "(null)", "nan", and all-zero ids such as the
 * "00000000-0000-0000-0000-000000000000" IDFA/GAID/OAID of limited ad
 * tracking); IDENT_BLOCKLISTED when it equals one of block[0..nblock)
 * (the intake config's blocklist); IDENT_USABLE otherwise. Comparisons are
 * on the trimmed value, ASCII case-insensitive.
 */
enum { IDENT_USABLE = 0, IDENT_PLACEHOLDER = 1, IDENT_BLOCKLISTED = 2 };
int ident_value_unusable(const char *v, size_t len, const char *const *block, size_t nblock);
/* "placeholder" / "blocklisted" for those answers; NULL for IDENT_USABLE. */
const char *ident_unusable_reason(int why);

/* The calling code (digits, into out[4]) of a locale's region: "en-US",
 * "en_US", "zh-Hans-CN", "zh_CN.UTF-8" -> "1" / "86". 0 and "" when the
 * locale names no region this table knows. */
int ident_locale_calling_code(const char *locale, size_t len, char out[4]);

/* Email normalisation; out: IDENT_MAX_VALUE + 1 bytes. */
cp_status ident_email_normalize(const char *s, size_t len, char *out, size_t *outlen,
                                cp_error_t *err);

#endif /* CP_MODEL_NORMALIZE_H */
