/* test_ingest_segment.c — Segment payload parsing: the shared analytics-go
 * payloads accepted unchanged, identifiers, clock skew, messageIds, and a
 * clear per-event reason for every kind of bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cp_test.h"
#include <dirent.h>

#include "ingest/event.h"

static void test_shared_payloads_accepted(void **state)
{
    (void)state;
    char dir[1200];
    if (!test_shared_data("segment-events", dir, sizeof dir))
        skip();
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcmp(e->d_name + nl - 5, ".json") != 0)
            continue;
        char path[1600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        char *body = test_read_file(path, &len);
        ingest_batch_t b;
        ingest_batch_init(&b);
        cp_error_t err = {0};
        segment_opts_t o = {.received_at_ms = 1700000000000ll};
        cp_status rc = segment_parse(ING_NONE, body, len, &o, &b, &err);
        if (rc)
            fprintf(stderr, "%s: %s\n", e->d_name, err.message);
        assert_int_equal(rc, CP_OK);
        assert_true(b.n >= 1);
        for (size_t i = 0; i < b.n; i++) {
            const ingest_event_t *ev = &b.events[i];
            assert_true(ev->type >= ING_IDENTIFY && ev->type <= ING_ALIAS);
            assert_true(ev->nids >= 1);
            assert_non_null(ev->message_id);
            assert_false(ev->message_id_derived);
            /* sentAt is given: the time is corrected and never after receipt */
            assert_true(ev->ts <= 1700000000);
        }
        if (strstr(e->d_name, "many"))
            assert_int_equal(b.n, 3);
        if (strstr(e->d_name, "alias")) {
            assert_int_equal(b.events[0].type, ING_ALIAS);
            assert_memory_equal(b.events[0].previous_id, "A", 1);
        }
        if (strstr(e->d_name, "group")) {
            assert_memory_equal(b.events[0].group_id, "A", 1);
            assert_string_equal(b.events[0].event, "group");
        }
        if (strstr(e->d_name, "page"))
            assert_string_equal(b.events[0].event, "page");
        if (strstr(e->d_name, "screen"))
            assert_string_equal(b.events[0].event, "screen");
        ingest_batch_free(&b);
        free(body);
        files++;
    }
    closedir(d);
    assert_int_equal(files, 12);
}

static cp_status parse1(ingest_type ep, const char *json, const segment_opts_t *o,
                        ingest_batch_t *b, cp_error_t *err)
{
    ingest_batch_init(b);
    memset(err, 0, sizeof *err);
    return segment_parse(ep, json, strlen(json), o, b, err);
}

static int has_ident(const ingest_event_t *e, const char *type, const char *v)
{
    for (size_t i = 0; i < e->nids; i++)
        if (!strcmp(e->ids[i].type, type) && e->ids[i].len == strlen(v) &&
            !memcmp(e->ids[i].value, v, e->ids[i].len))
            return 1;
    return 0;
}

static void test_identifiers(void **state)
{
    (void)state;
    ingest_batch_t b;
    cp_error_t err;
    const char *j =
        "{\"userId\":\"u1\",\"anonymousId\":\"a1\",\"traits\":{\"email\":\"X@Y.com\","
        "\"phone\":13800000000,\"age\":31,\"member_id\":\"m7\"},"
        "\"context\":{\"device\":{\"id\":\"dev1\",\"advertisingId\":\"AAAA\"},"
        "\"os\":{\"name\":\"iOS\"},\"externalIds\":[{\"id\":\"o1\",\"type\":\"openid\"},"
        "{\"id\":\"zz\",\"type\":\"hubspot\"}],\"traits\":{\"unionid\":\"un1\"}},"
        "\"timestamp\":\"2024-03-01T10:00:00Z\",\"messageId\":\"m-1\"}";
    assert_int_equal(parse1(ING_IDENTIFY, j, NULL, &b, &err), CP_OK);
    const ingest_event_t *e = &b.events[0];
    assert_int_equal(e->type, ING_IDENTIFY);
    assert_true(has_ident(e, "user_id", "u1"));
    assert_true(has_ident(e, "anonymous_id", "a1"));
    assert_true(has_ident(e, "email", "X@Y.com")); /* normalised later, by the identity model */
    assert_true(has_ident(e, "phone", "13800000000"));
    assert_true(has_ident(e, "member_id", "m7"));
    assert_true(has_ident(e, "device_id", "dev1"));
    assert_true(has_ident(e, "idfa", "AAAA"));
    assert_true(has_ident(e, "openid", "o1"));
    assert_true(has_ident(e, "unionid", "un1"));
    assert_false(has_ident(e, "hubspot", "zz"));
    assert_int_equal(e->nids, 9);
    assert_non_null(e->traits);
    assert_non_null(e->ctx_traits);
    assert_int_equal(e->ts, 1709287200);
    assert_null(e->event);
    ingest_batch_free(&b);

    /* Android advertising ids are OAIDs. */
    j = "{\"anonymousId\":\"a\",\"event\":\"x\",\"context\":{\"device\":{\"advertisingId\":\"b\","
        "\"type\":\"android\"}},\"timestamp\":\"2024-03-01T10:00:00Z\"}";
    assert_int_equal(parse1(ING_TRACK, j, NULL, &b, &err), CP_OK);
    assert_true(has_ident(&b.events[0], "oaid", "b"));
    ingest_batch_free(&b);

    /* Imports may identify by another identifier only. */
    j = "{\"type\":\"identify\",\"traits\":{\"phone\":\"138\"},\"timestamp\":\"2024-03-01\"}";
    assert_int_equal(parse1(ING_NONE,
                            "{\"batch\":[{\"type\":\"identify\",\"traits\":{\"phone\":"
                            "\"138\"},\"timestamp\":\"2024-03-01\"}]}",
                            NULL, &b, &err),
                     CP_EINVAL);
    assert_non_null(strstr(b.rejects[0].reason, "userId"));
    ingest_batch_free(&b);
    segment_opts_t o = {.allow_other_ids = 1};
    assert_int_equal(parse1(ING_IDENTIFY, j, &o, &b, &err), CP_OK);
    assert_true(has_ident(&b.events[0], "phone", "138"));
    ingest_batch_free(&b);
}

static void test_times(void **state)
{
    (void)state;
    ingest_batch_t b;
    cp_error_t err;
    segment_opts_t o = {.received_at_ms = 1000000 * 1000ll};
    /* Device clock 100 s behind: corrected by receivedAt - sentAt. */
    const char *j = "{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"1970-01-12T13:45:00Z\","
                    "\"sentAt\":\"1970-01-12T13:45:30Z\"}";
    /* 1970-01-12T13:45:00Z = 999900; sent 999930; received 1000000 */
    assert_int_equal(parse1(ING_TRACK, j, &o, &b, &err), CP_OK);
    assert_int_equal(b.events[0].ts, 999900 + 70);
    assert_int_equal(b.events[0].received_at, 1000000);
    ingest_batch_free(&b);
    /* Without sentAt the timestamp stands (historical data). */
    j = "{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"2011-01-01T00:00:00+08:00\"}";
    assert_int_equal(parse1(ING_TRACK, j, &o, &b, &err), CP_OK);
    assert_int_equal(b.events[0].ts, 1293840000 - 8 * 3600);
    ingest_batch_free(&b);
    /* A timestamp after sentAt would land after receipt: clamped. */
    j = "{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
        "\"timestamp\":\"1970-01-13T00:00:00Z\"}],\"sentAt\":\"1970-01-12T13:45:30Z\"}";
    assert_int_equal(parse1(ING_NONE, j, &o, &b, &err), CP_OK);
    assert_int_equal(b.events[0].ts, 1000000);
    ingest_batch_free(&b);
    /* Opt-out of the correction. */
    o.no_skew_correction = 1;
    j = "{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"1970-01-12T13:45:00Z\","
        "\"sentAt\":\"1970-01-12T13:45:30Z\"}";
    assert_int_equal(parse1(ING_TRACK, j, &o, &b, &err), CP_OK);
    assert_int_equal(b.events[0].ts, 999900);
    ingest_batch_free(&b);
    /* originalTimestamp stands in for timestamp; nothing = receive time. */
    o.no_skew_correction = 0;
    j = "{\"userId\":\"u\",\"event\":\"e\",\"originalTimestamp\":\"1970-01-12T13:45:00Z\"}";
    assert_int_equal(parse1(ING_TRACK, j, &o, &b, &err), CP_OK);
    assert_int_equal(b.events[0].ts, 999900);
    ingest_batch_free(&b);
    j = "{\"userId\":\"u\",\"event\":\"e\"}";
    assert_int_equal(parse1(ING_TRACK, j, &o, &b, &err), CP_OK);
    assert_int_equal(b.events[0].ts, 1000000);
    ingest_batch_free(&b);
    /* ... but with no receive time either, the event has no time. */
    assert_int_equal(parse1(ING_TRACK, j, NULL, &b, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "timestamp"));
    ingest_batch_free(&b);
}

static void test_message_ids(void **state)
{
    (void)state;
    ingest_batch_t b;
    cp_error_t err;
    const char *j1 = "{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"2020-01-01T00:00:00Z\"}";
    const char *j2 = "{\"timestamp\":\"2020-01-01T00:00:00Z\",\"event\":\"e\",\"userId\":\"u\"}";
    const char *j3 = "{\"userId\":\"u\",\"event\":\"f\",\"timestamp\":\"2020-01-01T00:00:00Z\"}";
    char id1[128], id2[128], id3[128];
    uint64_t h1, h3;
    assert_int_equal(parse1(ING_TRACK, j1, NULL, &b, &err), CP_OK);
    assert_true(b.events[0].message_id_derived);
    assert_memory_equal(b.events[0].message_id, "derived:", 8);
    snprintf(id1, sizeof id1, "%.*s", (int)b.events[0].message_id_len, b.events[0].message_id);
    h1 = b.events[0].message_hash;
    ingest_batch_free(&b);
    assert_int_equal(parse1(ING_TRACK, j2, NULL, &b, &err), CP_OK);
    snprintf(id2, sizeof id2, "%.*s", (int)b.events[0].message_id_len, b.events[0].message_id);
    ingest_batch_free(&b);
    assert_int_equal(parse1(ING_TRACK, j3, NULL, &b, &err), CP_OK);
    snprintf(id3, sizeof id3, "%.*s", (int)b.events[0].message_id_len, b.events[0].message_id);
    h3 = b.events[0].message_hash;
    ingest_batch_free(&b);
    assert_string_equal(id1, id2); /* key order does not matter */
    assert_string_not_equal(id1, id3);
    assert_true(h1 != h3);
    /* Same payload on another endpoint: another event. */
    assert_int_equal(parse1(ING_PAGE,
                            "{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":"
                            "\"2020-01-01T00:00:00Z\"}",
                            NULL, &b, &err),
                     CP_OK);
    assert_true(b.events[0].message_hash != h1);
    ingest_batch_free(&b);
    /* Given ids hash the same whatever else differs. */
    assert_int_equal(parse1(ING_TRACK,
                            "{\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"abc\","
                            "\"timestamp\":\"2020-01-01T00:00:00Z\"}",
                            NULL, &b, &err),
                     CP_OK);
    h1 = b.events[0].message_hash;
    ingest_batch_free(&b);
    assert_int_equal(parse1(ING_TRACK,
                            "{\"userId\":\"v\",\"event\":\"f\",\"messageId\":\"abc\","
                            "\"timestamp\":\"2021-01-01T00:00:00Z\"}",
                            NULL, &b, &err),
                     CP_OK);
    assert_true(b.events[0].message_hash == h1);
    ingest_batch_free(&b);
}

/* Each bad event and the words its reason must contain. */
static const struct {
    const char *event;
    const char *reason;
} bad_events[] = {
    {"{\"type\":\"track\",\"event\":\"e\",\"timestamp\":\"2020-01-01\"}", "anonymousId"},
    {"{\"type\":\"track\",\"userId\":\"u\",\"timestamp\":\"2020-01-01\"}", "missing \"event\""},
    {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"yesterday\"}",
     "ISO 8601"},
    {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"timestamp\":12}", "ISO 8601 string"},
    {"{\"type\":\"track\",\"userId\":[1],\"event\":\"e\"}", "\"userId\" must be a string"},
    {"{\"type\":\"track\",\"userId\":\"u\",\"event\":7}", "\"event\" must be a string"},
    {"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"properties\":[1]}",
     "\"properties\" must be an object"},
    {"{\"type\":\"identify\",\"userId\":\"u\",\"traits\":\"x\"}", "\"traits\" must be an object"},
    {"{\"type\":\"teleport\",\"userId\":\"u\"}", "unknown \"type\""},
    {"{\"userId\":\"u\"}", "missing \"type\""},
    {"{\"type\":\"alias\",\"userId\":\"u\"}", "previousId"},
    {"{\"type\":\"alias\",\"anonymousId\":\"a\",\"previousId\":\"p\"}", "missing \"userId\""},
    {"{\"type\":\"group\",\"userId\":\"u\"}", "groupId"},
    {"{\"type\":\"identify\",\"userId\":\"\"}", "missing \"userId\""},
    {"{\"type\":\"identify\",\"userId\":\"a\\u0001b\"}", "control"},
    {"{\"type\":\"identify\",\"userId\":\"u\",\"context\":{\"device\":\"x\"}}", "context.device"},
    {"[1]", "must be a JSON object"},
};

static void test_bad_batch_lists_every_event(void **state)
{
    (void)state;
    buf_t body;
    buf_init(&body, 0);
    buf_printf(&body, "{\"batch\":[");
    size_t n = CP_ARRAY_LEN(bad_events);
    for (size_t i = 0; i < n; i++) {
        /* a good event between every bad one */
        buf_printf(&body,
                   "{\"type\":\"track\",\"userId\":\"ok\",\"event\":\"e\","
                   "\"timestamp\":\"2020-01-01\"},%s,",
                   bad_events[i].event);
    }
    buf_printf(&body, "{\"type\":\"page\",\"userId\":\"ok\",\"timestamp\":\"2020-01-01\"}]}");
    for (int strict = 0; strict <= 1; strict++) {
        ingest_batch_t b;
        ingest_batch_init(&b);
        cp_error_t err = {0};
        segment_opts_t o = {.strict = strict};
        cp_status rc = segment_parse(ING_NONE, body.data, body.len, &o, &b, &err);
        if (strict) {
            assert_int_equal(rc, CP_EINVAL);
            assert_non_null(strstr(err.message, "nothing was applied"));
            assert_int_equal(b.n, 0); /* all or nothing */
        } else {
            /* the valid events go on, each knowing its place in the request */
            assert_int_equal(rc, CP_OK);
            assert_int_equal(b.n, n + 1);
            for (size_t i = 0; i < b.n; i++)
                assert_int_equal(b.events[i].index, 2 * i);
        }
        assert_int_equal(b.rejected, n);
        assert_int_equal(b.nrejects, n);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(b.rejects[i].index, 2 * i + 1);
            if (strstr(b.rejects[i].reason, bad_events[i].reason) == NULL)
                fail_msg("event %zu: reason \"%s\" lacks \"%s\"", i, b.rejects[i].reason,
                         bad_events[i].reason);
        }
        ingest_batch_free(&b);
    }
    buf_free(&body);
}

static void test_whole_body_errors(void **state)
{
    (void)state;
    ingest_batch_t b;
    cp_error_t err;
    /* malformed JSON names the position */
    assert_int_equal(parse1(ING_NONE, "{\"batch\":[{\"type\":}]}", NULL, &b, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "malformed JSON at byte"));
    ingest_batch_free(&b);
    /* invalid UTF-8 */
    assert_int_equal(parse1(ING_TRACK, "{\"userId\":\"\xff\xfe\",\"event\":\"e\"}", NULL, &b, &err),
                     CP_EINVAL);
    assert_non_null(strstr(err.message, "malformed JSON"));
    assert_non_null(strstr(err.message, "decode"));
    ingest_batch_free(&b);
    assert_int_equal(parse1(ING_NONE, "{\"events\":[]}", NULL, &b, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "\"batch\""));
    ingest_batch_free(&b);
    assert_int_equal(parse1(ING_NONE, "{\"batch\":{}}", NULL, &b, &err), CP_ETYPE);
    ingest_batch_free(&b);
    /* type/endpoint mismatch */
    assert_int_equal(parse1(ING_TRACK, "{\"type\":\"identify\",\"userId\":\"u\"}", NULL, &b, &err),
                     CP_EINVAL);
    assert_non_null(strstr(err.message, "/v1/track"));
    ingest_batch_free(&b);
    /* duplicate keys are ambiguous */
    assert_int_equal(parse1(ING_IDENTIFY, "{\"userId\":\"u\",\"userId\":\"v\"}", NULL, &b, &err),
                     CP_EINVAL);
    ingest_batch_free(&b);

    /* size limits: 32 KB per event, 500 KB per batch */
    size_t big = INGEST_EVENT_MAX + 100;
    char *pad = malloc(big + 1);
    memset(pad, 'x', big);
    pad[big] = '\0';
    buf_t body;
    buf_init(&body, 0);
    buf_printf(&body,
               "{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
               "\"properties\":{\"p\":\"%s\"}}]}",
               pad);
    ingest_batch_init(&b);
    assert_int_equal(segment_parse(ING_NONE, body.data, body.len, NULL, &b, &err), CP_EINVAL);
    assert_int_equal(b.rejects[0].code, CP_ELIMIT);
    assert_non_null(strstr(b.rejects[0].reason, "32768"));
    ingest_batch_free(&b);
    ingest_batch_init(&b);
    assert_int_equal(segment_parse(ING_TRACK, body.data, body.len, NULL, &b, &err), CP_ELIMIT);
    ingest_batch_free(&b);
    buf_reset(&body);
    buf_printf(&body, "{\"batch\":[");
    for (int i = 0; i < 20; i++)
        buf_printf(&body,
                   "%s{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
                   "\"properties\":{\"p\":\"%.30000s\"}}",
                   i ? "," : "", pad);
    buf_printf(&body, "]}");
    ingest_batch_init(&b);
    assert_int_equal(segment_parse(ING_NONE, body.data, body.len, NULL, &b, &err), CP_ELIMIT);
    assert_non_null(strstr(err.message, "512000"));
    ingest_batch_free(&b);
    buf_free(&body);
    free(pad);
}

static void test_many_reasons_capped(void **state)
{
    (void)state;
    buf_t body;
    buf_init(&body, 0);
    buf_printf(&body, "{\"batch\":[");
    for (int i = 0; i < INGEST_MAX_REPORTED + 500; i++)
        buf_printf(&body, "%s{\"type\":\"track\"}", i ? "," : "");
    buf_printf(&body, "]}");
    ingest_batch_t b;
    ingest_batch_init(&b);
    cp_error_t err = {0};
    assert_int_equal(segment_parse(ING_NONE, body.data, body.len, NULL, &b, &err), CP_EINVAL);
    assert_int_equal(b.rejected, INGEST_MAX_REPORTED + 500);
    assert_int_equal(b.nrejects, INGEST_MAX_REPORTED);
    ingest_batch_free(&b);
    buf_free(&body);
}

static const ingest_warning_t *warning_of(const ingest_batch_t *b, size_t index, const char *field)
{
    for (size_t i = 0; i < b->nwarnings; i++)
        if (b->warnings[i].index == index && strcmp(b->warnings[i].field, field) == 0)
            return &b->warnings[i];
    return NULL;
}

/* Values that cannot be identifiers are warnings; the event stays. */
static void test_bad_values_are_warnings(void **state)
{
    (void)state;
    ingest_batch_t b;
    cp_error_t err;
    const char *body =
        "{\"batch\":["
        "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"e\",\"timestamp\":\"2020-01-01\"},"
        "{\"type\":\"identify\",\"userId\":\"u2\",\"timestamp\":\"2020-01-01\","
        "\"traits\":{\"email\":{\"a\":1},\"phone\":\"\",\"openid\":null,\"age\":31.5},"
        "\"context\":{\"device\":{\"id\":\"\",\"advertisingId\":true}}},"
        "{\"type\":\"identify\",\"userId\":\"\",\"anonymousId\":\"a3\",\"timestamp\":\"2020-01-"
        "01\"}"
        "]}";
    assert_int_equal(parse1(ING_NONE, body, NULL, &b, &err), CP_OK);
    assert_int_equal(b.n, 3);
    assert_int_equal(b.rejected, 0);
    assert_int_equal(b.warned, 5);
    const ingest_warning_t *w = warning_of(&b, 1, "traits.email");
    assert_non_null(w);
    assert_string_equal(w->reason, INGEST_WARN_INVALID);
    assert_non_null(w = warning_of(&b, 1, "traits.phone"));
    assert_string_equal(w->reason, INGEST_WARN_PLACEHOLDER);
    assert_non_null(w = warning_of(&b, 1, "context.device.id"));
    assert_string_equal(w->reason, INGEST_WARN_PLACEHOLDER);
    assert_non_null(w = warning_of(&b, 1, "context.device.advertisingId"));
    assert_string_equal(w->reason, INGEST_WARN_INVALID);
    assert_non_null(w = warning_of(&b, 2, "userId"));
    assert_string_equal(w->reason, INGEST_WARN_PLACEHOLDER);
    /* only the usable identifiers are on the events */
    assert_int_equal(b.events[1].nids, 1);
    assert_true(has_ident(&b.events[1], "user_id", "u2"));
    assert_int_equal(b.events[2].nids, 1);
    assert_true(has_ident(&b.events[2], "anonymous_id", "a3"));
    ingest_batch_free(&b);
    /* a rejected event takes its warnings with it */
    assert_int_equal(parse1(ING_NONE,
                            "{\"batch\":[{\"type\":\"identify\",\"userId\":\"\","
                            "\"traits\":{\"email\":\"\"},\"timestamp\":\"2020-01-01\"},"
                            "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
                            "\"timestamp\":\"2020-01-01\"}]}",
                            NULL, &b, &err),
                     CP_OK);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.rejected, 1);
    assert_int_equal(b.warned, 0);
    ingest_batch_free(&b);
    /* every event rejected: the request fails whole */
    assert_int_equal(parse1(ING_NONE, "{\"batch\":[{\"type\":\"track\"}]}", NULL, &b, &err),
                     CP_EINVAL);
    assert_int_equal(b.n, 0);
    ingest_batch_free(&b);
}

/* group: the traits are the group's; context.traits the user's. */
static void test_group_traits_belong_to_the_group(void **state)
{
    (void)state;
    ingest_batch_t b;
    cp_error_t err;
    assert_int_equal(
        parse1(ING_GROUP,
               "{\"userId\":\"u\",\"groupId\":\"acme\",\"timestamp\":\"2020-01-01\","
               "\"traits\":{\"name\":\"Acme Inc\",\"email\":\"billing@acme.com\"},"
               "\"context\":{\"traits\":{\"email\":\"u@acme.com\",\"title\":\"cto\"}}}",
               NULL, &b, &err),
        CP_OK);
    const ingest_event_t *e = &b.events[0];
    assert_null(e->traits);
    assert_non_null(e->group_traits);
    assert_string_equal(json_string_value(json_object_get(e->group_traits, "name")), "Acme Inc");
    assert_memory_equal(e->group_id, "acme", 4);
    /* the company's billing email is no identifier of the user */
    assert_false(has_ident(e, "email", "billing@acme.com"));
    assert_true(has_ident(e, "email", "u@acme.com"));
    assert_non_null(e->ctx_traits);
    ingest_batch_free(&b);
}

/* A batch's context merges with each event's, the event's keys winning. */
static void test_batch_context_merges(void **state)
{
    (void)state;
    ingest_batch_t b;
    cp_error_t err;
    assert_int_equal(
        parse1(ING_NONE,
               "{\"context\":{\"locale\":\"en-US\",\"traits\":{\"plan\":\"a\",\"x\":1},"
               "\"device\":{\"id\":\"d1\"}},\"batch\":["
               "{\"type\":\"identify\",\"userId\":\"u\",\"timestamp\":\"2020-01-01\","
               "\"context\":{\"traits\":{\"plan\":\"b\"}}},"
               "{\"type\":\"identify\",\"userId\":\"v\",\"timestamp\":\"2020-01-01\","
               "\"context\":{\"locale\":\"zh_CN.UTF-8\"}}]}",
               NULL, &b, &err),
        CP_OK);
    assert_int_equal(b.n, 2);
    const ingest_event_t *e = &b.events[0];
    assert_string_equal(json_string_value(json_object_get(e->ctx_traits, "plan")), "b");
    assert_int_equal(json_integer_value(json_object_get(e->ctx_traits, "x")), 1);
    assert_true(has_ident(e, "device_id", "d1"));
    assert_string_equal(e->phone_cc, "1");
    e = &b.events[1];
    assert_string_equal(json_string_value(json_object_get(e->ctx_traits, "plan")), "a");
    assert_string_equal(e->phone_cc, "86");
    ingest_batch_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_payloads_accepted),
        cmocka_unit_test(test_identifiers),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_message_ids),
        cmocka_unit_test(test_bad_batch_lists_every_event),
        cmocka_unit_test(test_whole_body_errors),
        cmocka_unit_test(test_many_reasons_capped),
        cmocka_unit_test(test_bad_values_are_warnings),
        cmocka_unit_test(test_group_traits_belong_to_the_group),
        cmocka_unit_test(test_batch_context_merges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
