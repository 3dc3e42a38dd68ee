/* test_model_normalize.c — identifier normalisation tables (phones, emails,
 * device ids, exact types), stored keys and salted hashing, config and its
 * binding to a data directory. */
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
#include <sodium.h>

#include "model/normalize.h"
#include "util/util.h"

typedef struct norm_case {
    const char *type;
    const char *in;
    cp_status rc;
    const char *want; /* normalised value, or a fragment of the error message */
} norm_case;

static void run_cases(const ident_config_t *c, const norm_case *cs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char out[IDENT_MAX_VALUE + 1];
        size_t ol = 0;
        cp_error_t err = {0};
        int ti = ident_type_find(c, cs[i].type, strlen(cs[i].type));
        assert_true(ti >= 0);
        cp_status rc = ident_normalize(c, ti, cs[i].in, strlen(cs[i].in), out, &ol, &err);
        if (rc != cs[i].rc || (rc == CP_OK && (strcmp(out, cs[i].want) || ol != strlen(out))) ||
            (rc != CP_OK && strstr(err.message, cs[i].want) == NULL)) {
            print_error("case %zu: %s \"%s\": got rc %d \"%s\" / \"%s\", want rc %d \"%s\"\n", i,
                        cs[i].type, cs[i].in, rc, rc ? "" : out, err.message, cs[i].rc, cs[i].want);
            fail();
        }
    }
}

static void test_phones_cn(void **state)
{
    (void)state;
    ident_config_t c;
    ident_config_init(&c);
    static const norm_case cs[] = {
        {"phone", "+86 138 0013 8000", CP_OK, "+8613800138000"},
        {"phone", "008613800138000", CP_OK, "+8613800138000"},
        {"phone", "13800138000", CP_OK, "+8613800138000"},
        {"phone", "0086-138-0013-8000", CP_OK, "+8613800138000"},
        {"phone", " +86 (138) 0013.8000\t", CP_OK, "+8613800138000"},
        {"phone", "8613800138000", CP_OK, "+8613800138000"},
        {"phone", "138-0013-8000", CP_OK, "+8613800138000"},
        {"phone", "+86-199 1234 5678", CP_OK, "+8619912345678"},
        {"phone", "010-12345678", CP_OK, "+861012345678"},
        {"phone", "(0755) 8888 1234", CP_OK, "+8675588881234"},
        {"phone", "+86 010 1234 5678", CP_OK, "+861012345678"},
        {"phone", "+86 (0)10 1234 5678", CP_OK, "+861012345678"},
        {"phone", "+1 (415) 555-2671", CP_OK, "+14155552671"},
        {"phone", "001 415 555 2671", CP_OK, "+14155552671"},
        {"phone", "+44 (0)20 7946 0958", CP_OK, "+442079460958"},
        {"phone", "0044 (0)20 7946 0958", CP_OK, "+442079460958"},
        {"phone", "+852 9123 4567", CP_OK, "+85291234567"},
        {"phone", "+886 912 345 678", CP_OK, "+886912345678"},
        {"phone", "+49 30 1234567", CP_OK, "+49301234567"},
        /* bad ones */
        {"phone", "12", CP_EINVAL, "phone \"12\": too short for E.164"},
        {"phone", "+1 234", CP_EINVAL, "too short for E.164"},
        {"phone", "", CP_EINVAL, "empty"},
        {"phone", "   ", CP_EINVAL, "empty"},
        {"phone", "---", CP_EINVAL, "no digits"},
        {"phone", "abc", CP_EINVAL, "unexpected character 'a' at byte 1"},
        {"phone", "138+00138000", CP_EINVAL, "unexpected character '+' at byte 4"},
        {"phone", "+86 138 0013 8000 ext 5", CP_EINVAL, "unexpected character 'e'"},
        {"phone", "+86 138 0013 800", CP_EINVAL, "11 digits after +86"},
        {"phone", "+86 138 0013 80000", CP_EINVAL, "11 digits after +86"},
        {"phone", "1380013800", CP_EINVAL, "national number for +86"},
        {"phone", "12345678", CP_EINVAL, "national number for +86"},
        {"phone", "+1234567890123456", CP_EINVAL, "too long for E.164"},
        {"phone", "+0 123 4567 89", CP_EINVAL, "cannot start with 0"},
        {"phone", "\xef\xbc\x91\xef\xbc\x93\xef\xbc\x98", CP_EINVAL, "unexpected byte 0xef"},
        {"phone", "123456789012345678901234567890123456789", CP_EINVAL, "too long"},
        {"phone", "\xff\xfe", CP_EINVAL, "not valid UTF-8"},
    };
    run_cases(&c, cs, CP_ARRAY_LEN(cs));
}

static void test_phones_other_country(void **state)
{
    (void)state;
    ident_config_t c;
    ident_config_init(&c);
    cp_error_t err = {0};
    assert_int_equal(ident_config_set_country(&c, "+44", &err), CP_OK);
    static const norm_case uk[] = {
        {"phone", "020 7946 0958", CP_OK, "+442079460958"},
        {"phone", "07700 900123", CP_OK, "+447700900123"},
        {"phone", "+86 138 0013 8000", CP_OK, "+8613800138000"},
        {"phone", "1380013800", CP_OK, "+441380013800"},
    };
    run_cases(&c, uk, CP_ARRAY_LEN(uk));
    assert_int_equal(ident_config_set_country(&c, "1", &err), CP_OK);
    static const norm_case us[] = {
        {"phone", "(415) 555-2671", CP_OK, "+14155552671"},
        {"phone", "415.555.2671", CP_OK, "+14155552671"},
    };
    run_cases(&c, us, CP_ARRAY_LEN(us));
    assert_int_equal(ident_config_set_country(&c, "0", &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "country calling code"));
    assert_int_equal(ident_config_set_country(&c, "1234", &err), CP_EINVAL);
    assert_int_equal(ident_config_set_country(&c, "8a", &err), CP_EINVAL);
    assert_int_equal(ident_config_set_country(&c, "", &err), CP_EINVAL);
    assert_string_equal(c.ic_country, "1");
}

/* The event's locale as a hint for national numbers the default refuses. */
static void test_phone_hint(void **state)
{
    (void)state;
    static const struct {
        const char *cc, *hint, *in;
        cp_status rc;
        const char *want;
    } cs[] = {
        /* a US number under the +86 default: +1 with the en-US hint */
        {"86", "1", "(415) 555-0132", CP_OK, "+14155550132"},
        /* ambiguous: also an 11-digit Chinese mobile, and the default wins */
        {"86", "1", "1 415 555 0132", CP_OK, "+8614155550132"},
        {"44", "1", "+1 415 555 0132", CP_OK, "+14155550132"},
        {"86", "1", "415.555.0132", CP_OK, "+14155550132"},
        /* the default wins when it accepts the number */
        {"86", "1", "13800138000", CP_OK, "+8613800138000"},
        /* not a North American number either: the default's error stands */
        {"86", "1", "1380013800", CP_EINVAL, "national number for +86"},
        {"86", "1", "015 555 0132", CP_EINVAL, "11 digits after +86"},
        /* a number with its own country code never takes the hint */
        {"86", "1", "+86 138 0013 800", CP_EINVAL, "11 digits after +86"},
        /* without a hint, or the same country: as before */
        {"86", NULL, "(415) 555-0132", CP_EINVAL, "national number for +86"},
        {"86", "", "(415) 555-0132", CP_EINVAL, "national number for +86"},
        {"86", "86", "(415) 555-0132", CP_EINVAL, "national number for +86"},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(cs); i++) {
        char out[IDENT_MAX_VALUE + 1];
        size_t ol = 0;
        cp_error_t err = {0};
        cp_status rc =
            ident_phone_e164_hint(cs[i].cc, cs[i].hint, cs[i].in, strlen(cs[i].in), out, &ol, &err);
        if (rc != cs[i].rc || (rc == CP_OK && (strcmp(out, cs[i].want) || ol != strlen(out))) ||
            (rc != CP_OK && strstr(err.message, cs[i].want) == NULL)) {
            print_error("case %zu: \"%s\": rc %d \"%s\" / \"%s\", want %d \"%s\"\n", i, cs[i].in,
                        rc, rc ? "" : out, err.message, cs[i].rc, cs[i].want);
            fail();
        }
    }
    /* through ident_key_hint, as the engine calls it */
    ident_config_t c;
    ident_config_init(&c);
    c.ic_hash_pii = 0;
    char key[IDENT_MAX_KEY + 1];
    size_t kl;
    cp_error_t err = {0};
    assert_int_equal(ident_key_hint(&c, "phone", 5, "(415) 555-0132", 14, "1", key, &kl, &err),
                     CP_OK);
    assert_string_equal(key, "phone:+14155550132");
    assert_int_equal(ident_key_hint(&c, "phone", 5, "(415) 555-0132", 14, NULL, key, &kl, &err),
                     CP_EINVAL);

    static const struct {
        const char *locale, *cc;
    } loc[] = {
        {"en-US", "1"},       {"en_US", "1"},
        {"zh-Hans-CN", "86"}, {"zh_CN.UTF-8", "86"},
        {"en-us", "1"},       {"en-GB@euro", "44"},
        {"zh-TW", "886"},     {"en", ""},
        {"en-ZZ", ""},        {"", ""},
        {"US", ""},           {"es-419", ""},
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(loc); i++) {
        char cc[4];
        int found = ident_locale_calling_code(loc[i].locale, strlen(loc[i].locale), cc);
        if (strcmp(cc, loc[i].cc) != 0 || found != (loc[i].cc[0] != '\0')) {
            print_error("locale \"%s\": got \"%s\", want \"%s\"\n", loc[i].locale, cc, loc[i].cc);
            fail();
        }
    }
}

/* Stand-ins that must never become identifiers. */
static void test_unusable_values(void **state)
{
    (void)state;
    static const char *const placeholders[] = {
        "",
        "  ",
        "n/a",
        "N/A",
        "null",
        "NULL",
        "undefined",
        "unknown",
        "Unknown",
        "none",
        "-",
        " - ",
        "nil",
        "(null)",
        "NaN",
        "na",
        "00000000-0000-0000-0000-000000000000",
        "00000000000000000000000000000000",
        "00000000",
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(placeholders); i++)
        if (ident_value_unusable(placeholders[i], strlen(placeholders[i]), NULL, 0) !=
            IDENT_PLACEHOLDER) {
            print_error("\"%s\" is a placeholder\n", placeholders[i]);
            fail();
        }
    static const char *const usable[] = {
        "0",           "000",      "u1",   "nobody@example.com",
        "13800138000", "unknown1", "n/a2", "00000000-0000-0000-0000-000000000001",
        "nonexistent",
    };
    for (size_t i = 0; i < CP_ARRAY_LEN(usable); i++)
        if (ident_value_unusable(usable[i], strlen(usable[i]), NULL, 0) != IDENT_USABLE) {
            print_error("\"%s\" is usable\n", usable[i]);
            fail();
        }
    const char *const block[] = {"test@example.com", "13900000000"};
    assert_int_equal(ident_value_unusable(" TEST@example.com ", 18, block, 2), IDENT_BLOCKLISTED);
    assert_int_equal(ident_value_unusable("13900000000", 11, block, 2), IDENT_BLOCKLISTED);
    assert_int_equal(ident_value_unusable("test@example.org", 16, block, 2), IDENT_USABLE);
    assert_string_equal(ident_unusable_reason(IDENT_PLACEHOLDER), "placeholder");
    assert_string_equal(ident_unusable_reason(IDENT_BLOCKLISTED), "blocklisted");
    assert_null(ident_unusable_reason(IDENT_USABLE));
}

static void test_emails(void **state)
{
    (void)state;
    ident_config_t c;
    ident_config_init(&c);
    static const norm_case cs[] = {
        {"email", "  Alice.Smith@Example.COM ", CP_OK, "alice.smith@example.com"},
        {"email", "a@b", CP_OK, "a@b"},
        {"email", "Bob+Tag@Mail.Example.org", CP_OK, "bob+tag@mail.example.org"},
        {"email", "Zhang@\xe4\xbe\x8b\xe5\xad\x90.CN", CP_OK, "zhang@\xe4\xbe\x8b\xe5\xad\x90.cn"},
        {"email", "", CP_EINVAL, "empty"},
        {"email", " \t ", CP_EINVAL, "empty"},
        {"email", "alice", CP_EINVAL, "exactly one '@' (found 0)"},
        {"email", "a@@b", CP_EINVAL, "exactly one '@' (found 2)"},
        {"email", "a@b@c", CP_EINVAL, "exactly one '@'"},
        {"email", "@b.com", CP_EINVAL, "empty local part"},
        {"email", "a@", CP_EINVAL, "empty domain"},
        {"email", "a b@c.com", CP_EINVAL, "contains a space at byte 2"},
        {"email", "a@.com", CP_EINVAL, "malformed domain"},
        {"email", "a@b..com", CP_EINVAL, "malformed domain"},
        {"email", "a@b.com.", CP_EINVAL, "malformed domain"},
        {"email", "a\x01@b.com", CP_EINVAL, "control character"},
    };
    run_cases(&c, cs, CP_ARRAY_LEN(cs));
    /* 254 bytes is the limit; 255 is refused. */
    char big[300];
    memset(big, 'x', sizeof big);
    memcpy(big + 250, "@b.c", 4);
    big[254] = '\0';
    char out[IDENT_MAX_VALUE + 1];
    size_t ol;
    cp_error_t err = {0};
    assert_int_equal(ident_normalize(&c, IDENT_EMAIL, big, 254, out, &ol, &err), CP_OK);
    assert_int_equal(ol, 254);
    memmove(big + 1, big, 254);
    big[255] = '\0';
    assert_int_equal(ident_normalize(&c, IDENT_EMAIL, big, 255, out, &ol, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "longer than 254 bytes"));
}

static void test_devices_and_exact(void **state)
{
    (void)state;
    ident_config_t c;
    ident_config_init(&c);
    static const norm_case cs[] = {
        {"device_id", "  dev-123 ", CP_OK, "dev-123"},
        {"device_id", " ", CP_EINVAL, "device_id: empty value"},
        {"idfa", "6d92078a-8246-4ba4-ae5b-76104861e7dc", CP_OK,
         "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
        {"idfa", " 6D92078A-8246-4BA4-AE5B-76104861E7DC", CP_OK,
         "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
        {"idfa", "not-a-uuid", CP_OK, "not-a-uuid"},
        {"idfa", "00000000-0000-0000-0000-000000000000", CP_EINVAL, "all zeros"},
        {"idfa", "", CP_EINVAL, "idfa: empty value"},
        {"oaid", "0000000000000000", CP_EINVAL, "all zeros"},
        {"oaid", "A1B2C3D4-E5F6", CP_OK, "a1b2c3d4-e5f6"},
        {"oaid", "Oaid-XYZ", CP_OK, "Oaid-XYZ"},
        {"user_id", " u1 ", CP_OK, " u1 "},
        {"user_id", "Alice", CP_OK, "Alice"},
        {"member_id", "M\xe4\xbc\x9a\xe5\x91\x98", CP_OK, "M\xe4\xbc\x9a\xe5\x91\x98"},
        {"openid", "o\ta", CP_EINVAL, "control character"},
        {"unionid", "", CP_EINVAL, "unionid: empty value"},
        {"anonymous_id", "\xc3\x28", CP_EINVAL, "not valid UTF-8"},
    };
    run_cases(&c, cs, CP_ARRAY_LEN(cs));
    char v[300], out[IDENT_MAX_VALUE + 1];
    size_t ol;
    cp_error_t err = {0};
    memset(v, 'a', sizeof v);
    assert_int_equal(ident_normalize(&c, IDENT_USER_ID, v, 256, out, &ol, &err), CP_OK);
    assert_int_equal(ident_normalize(&c, IDENT_USER_ID, v, 257, out, &ol, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "longer than 256 bytes"));
}

static void test_config_types(void **state)
{
    (void)state;
    ident_config_t c;
    ident_config_init(&c);
    cp_error_t err = {0};
    assert_int_equal(ident_type_find(&c, "phone", 5), IDENT_PHONE);
    assert_int_equal(ident_type_find(&c, "unionid", 7), IDENT_UNIONID);
    assert_int_equal(ident_type_find(&c, "wechat", 6), -1);
    assert_true(ident_type_hashed(&c, IDENT_PHONE));
    assert_true(ident_type_hashed(&c, IDENT_EMAIL));
    assert_true(ident_type_hashed(&c, IDENT_IDFA));
    assert_true(ident_type_hashed(&c, IDENT_OAID));
    assert_false(ident_type_hashed(&c, IDENT_USER_ID));
    assert_false(ident_type_hashed(&c, IDENT_DEVICE_ID));

    assert_int_equal(ident_config_add_type(&c, "alipay_uid", 1, &err), CP_OK);
    assert_int_equal(ident_config_add_type(&c, "crm_id2", 0, &err), CP_OK);
    assert_int_equal(ident_config_add_type(&c, "alipay_uid", 0, &err), CP_EEXIST);
    assert_int_equal(ident_config_add_type(&c, "Bad", 0, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "[a-z][a-z0-9_]*"));
    assert_int_equal(ident_config_add_type(&c, "9x", 0, &err), CP_EINVAL);
    assert_int_equal(ident_config_add_type(&c, "a-b", 0, &err), CP_EINVAL);
    assert_int_equal(ident_config_add_type(&c, "", 0, &err), CP_EINVAL);
    assert_int_equal(ident_config_add_type(&c, "abcdefghijklmnopqrstuvwxyz0123456", 0, &err),
                     CP_EINVAL); /* 33 characters */
    assert_int_equal(ident_config_add_type(&c, "abcdefghijklmnopqrstuvwxyz012345", 0, &err),
                     CP_OK); /* 32 */
    int ai = ident_type_find(&c, "alipay_uid", 10);
    assert_true(ident_type_hashed(&c, ai));
    assert_int_equal(ident_config_set_pii(&c, "alipay_uid", 0, &err), CP_OK);
    assert_false(ident_type_hashed(&c, ai));
    assert_int_equal(ident_config_set_pii(&c, "nope", 1, &err), CP_ENOTFOUND);
    while (c.ic_ntypes < IDENT_MAX_TYPES) {
        char name[16];
        snprintf(name, sizeof name, "t%zu", c.ic_ntypes);
        assert_int_equal(ident_config_add_type(&c, name, 0, &err), CP_OK);
    }
    assert_int_equal(ident_config_add_type(&c, "one_more", 0, &err), CP_ELIMIT);
    c.ic_hash_pii = 0;
    assert_false(ident_type_hashed(&c, IDENT_PHONE));
}

/* The reference: hex(SHA-256(salt || value)) computed the obvious way. */
static void ref_hash(const unsigned char *salt, const char *v, char hex[65])
{
    unsigned char buf[IDENT_SALT_LEN + IDENT_MAX_VALUE], h[32];
    memcpy(buf, salt, IDENT_SALT_LEN);
    memcpy(buf + IDENT_SALT_LEN, v, strlen(v));
    crypto_hash_sha256(h, buf, IDENT_SALT_LEN + strlen(v));
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", h[i]);
}

static void key_of(const ident_config_t *c, const char *type, const char *v, char *out)
{
    size_t ol;
    cp_error_t err = {0};
    cp_status rc = ident_key(c, type, strlen(type), v, strlen(v), out, &ol, &err);
    if (rc != CP_OK)
        print_error("%s %s: %s\n", type, v, err.message);
    assert_int_equal(rc, CP_OK);
    assert_int_equal(ol, strlen(out));
}

static void test_keys_and_hashing(void **state)
{
    (void)state;
    ident_config_t c;
    ident_config_init(&c);
    unsigned char salt[IDENT_SALT_LEN];
    for (int i = 0; i < IDENT_SALT_LEN; i++)
        salt[i] = (unsigned char)(i * 7 + 1);
    char k1[IDENT_MAX_KEY + 1], k2[IDENT_MAX_KEY + 1], want[IDENT_MAX_KEY + 1], hex[65];
    size_t kl;
    cp_error_t err = {0};

    /* Hashing needs a salt. */
    assert_int_equal(ident_key(&c, "phone", 5, "13800138000", 11, k1, &kl, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "salt"));
    ident_config_set_salt(&c, salt);

    key_of(&c, "user_id", "alice", k1);
    assert_string_equal(k1, "user_id:alice");
    assert_false(ident_key_is_hashed(k1, strlen(k1)));
    key_of(&c, "device_id", " d1 ", k1);
    assert_string_equal(k1, "device_id:d1");

    /* Every spelling of one phone gives the same key: the reference hash of
     * its E.164 form. */
    ref_hash(salt, "+8613800138000", hex);
    snprintf(want, sizeof want, "phone:#%s", hex);
    const char *spellings[] = {"+86 138 0013 8000", "008613800138000", "13800138000",
                               "0086-138-0013-8000"};
    for (size_t i = 0; i < CP_ARRAY_LEN(spellings); i++) {
        key_of(&c, "phone", spellings[i], k1);
        assert_string_equal(k1, want);
        assert_true(ident_key_is_hashed(k1, strlen(k1)));
        assert_null(strstr(k1, "138"));
    }
    ref_hash(salt, "alice@example.com", hex);
    snprintf(want, sizeof want, "email:#%s", hex);
    key_of(&c, "email", " Alice@Example.com", k1);
    assert_string_equal(k1, want);

    /* Another salt, another hash. */
    key_of(&c, "email", "alice@example.com", k1);
    salt[0] ^= 1;
    ident_config_set_salt(&c, salt);
    key_of(&c, "email", "alice@example.com", k2);
    assert_string_not_equal(k1, k2);
    assert_int_equal(strlen(k1), strlen(k2));

    /* Hashing off: clear E.164. */
    c.ic_hash_pii = 0;
    key_of(&c, "phone", "+86 138 0013 8000", k1);
    assert_string_equal(k1, "phone:+8613800138000");
    c.ic_hash_pii = 1;

    /* Specs, unknown types, bad values name what went wrong. */
    assert_int_equal(ident_key_from_spec(&c, "user_id:a:b", 11, k1, &kl, &err), CP_OK);
    assert_string_equal(k1, "user_id:a:b");
    assert_int_equal(ident_key_from_spec(&c, "nocolon", 7, k1, &kl, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "TYPE:VALUE"));
    assert_int_equal(ident_key(&c, "wechat", 6, "x", 1, k1, &kl, &err), CP_ENOTFOUND);
    assert_non_null(strstr(err.message, "unknown identifier type \"wechat\""));
    assert_int_equal(ident_key(&c, "phone", 5, "12", 2, k1, &kl, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "phone \"12\": too short for E.164"));
    /* A configured type is stored like the built-in ones. */
    assert_int_equal(ident_config_add_type(&c, "alipay_uid", 1, &err), CP_OK);
    key_of(&c, "alipay_uid", "2088", k1);
    assert_true(ident_key_is_hashed(k1, strlen(k1)));
    assert_int_equal(strncmp(k1, "alipay_uid:#", 12), 0);

    /* Key checks for keys coming from elsewhere. */
    assert_int_equal(ident_key_check("user_id:x", 9, &err), CP_OK);
    assert_int_equal(ident_key_check("User:x", 6, &err), CP_EINVAL);
    assert_int_equal(ident_key_check("user_id:", 8, &err), CP_EINVAL);
    assert_int_equal(ident_key_check("nocolon", 7, &err), CP_EINVAL);
    assert_int_equal(ident_key_check("a:\x01", 3, &err), CP_EINVAL);
    assert_false(ident_key_is_hashed("email:#abc@x.com", 16));
}

static void test_bind(void **state)
{
    (void)state;
    char dir[256];
    test_tmpdir(dir, sizeof dir, "normalize");
    store_t *st = NULL;
    store_txn_t *t = NULL;
    cp_error_t err = {0};
    assert_int_equal(store_open(dir, STORE_CREATE, 1u << 24, 1, &st, &err), CP_OK);

    ident_config_t a, b;
    ident_config_init(&a);
    ident_config_init(&b);
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    assert_int_equal(ident_config_bind(t, &a, 0, &err), CP_ENOTFOUND);
    store_txn_abort(t);

    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    assert_int_equal(ident_config_bind(t, &a, 1, &err), CP_OK);
    assert_int_equal(store_txn_commit(t, &err), CP_OK);
    assert_true(a.ic_have_salt);

    /* A second opener gets the same salt, hence the same keys. */
    assert_int_equal(store_txn_begin(st, 0, &t, &err), CP_OK);
    assert_int_equal(ident_config_bind(t, &b, 0, &err), CP_OK);
    store_txn_abort(t);
    assert_memory_equal(a.ic_salt, b.ic_salt, IDENT_SALT_LEN);
    char ka[IDENT_MAX_KEY + 1], kb[IDENT_MAX_KEY + 1];
    key_of(&a, "phone", "13800138000", ka);
    key_of(&b, "phone", "+86 138 0013 8000", kb);
    assert_string_equal(ka, kb);

    /* Settings that would change stored keys are refused. */
    ident_config_t c;
    ident_config_init(&c);
    c.ic_hash_pii = 0;
    assert_int_equal(store_txn_begin(st, 1, &t, &err), CP_OK);
    assert_int_equal(ident_config_bind(t, &c, 1, &err), CP_ECONFLICT);
    assert_non_null(strstr(err.message, "\"clear\""));
    ident_config_init(&c);
    assert_int_equal(ident_config_set_pii(&c, "idfa", 0, &err), CP_OK);
    assert_int_equal(ident_config_bind(t, &c, 1, &err), CP_ECONFLICT);
    ident_config_init(&c);
    unsigned char other[IDENT_SALT_LEN] = {1};
    ident_config_set_salt(&c, other);
    assert_int_equal(ident_config_bind(t, &c, 1, &err), CP_ECONFLICT);
    assert_non_null(strstr(err.message, "salt"));
    /* The default country is free to change: it does not alter stored keys. */
    ident_config_init(&c);
    assert_int_equal(ident_config_set_country(&c, "44", &err), CP_OK);
    assert_int_equal(ident_config_bind(t, &c, 1, &err), CP_OK);
    store_txn_abort(t);
    store_close(st);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phones_cn),
        cmocka_unit_test(test_phones_other_country),
        cmocka_unit_test(test_emails),
        cmocka_unit_test(test_devices_and_exact),
        cmocka_unit_test(test_config_types),
        cmocka_unit_test(test_keys_and_hashing),
        cmocka_unit_test(test_bind),
        cmocka_unit_test(test_phone_hint),
        cmocka_unit_test(test_unusable_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
