/* segment.c — Segment HTTP Tracking API payloads into ingest_event_t:
 * envelope and field checks, identifiers, clock-skew correction,
 * messageIds (given or derived). See event.h for the rules. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/event.h"
#include "ingest/ingest_int.h"
#include "ingest/rules.h"
#include "model/normalize.h"

/* ---------------------------------------------------------------- helpers */

/* Appends e to b, its identifiers copied from the parser's array into the
 * batch's arena. */
static cp_status push_event(ingest_batch_t *b, const ingest_event_t *e)
{
    ingest_ident_t *ids = NULL;
    if (e->nids && (ids = arena_alloc(&b->arena, e->nids * sizeof *ids)) == NULL)
        return CP_ENOMEM;
    if (e->nids)
        memcpy(ids, e->ids, e->nids * sizeof *ids);
    if (ingest_batch_grow(b))
        return CP_ENOMEM;
    b->events[b->n] = *e;
    b->events[b->n++].ids = ids;
    return CP_OK;
}

/*
 * An id-like JSON value as text: a string, or an integer written in
 * decimal (some SDKs send numeric user ids). Absent and null give
 * *s = NULL; any other JSON type gives *not_text naming it. Only CP_ENOMEM
 * fails: what the value means is for the rules (rules.h).
 */
static cp_status id_json(ingest_batch_t *b, const json_t *v, const char **s, size_t *len,
                         const char **not_text, cp_error_t *err)
{
    *s = NULL;
    *len = 0;
    *not_text = NULL;
    if (v == NULL || json_is_null(v))
        return CP_OK;
    if (json_is_integer(v)) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        *s = arena_strndup(&b->arena, buf, (size_t)n);
        if (*s == NULL)
            return CP_ERR(err, CP_ENOMEM, "out of memory");
        *len = (size_t)n;
        return CP_OK;
    }
    if (!json_is_string(v)) {
        *not_text = json_kind(v);
        return CP_OK;
    }
    *s = json_string_value(v);
    *len = json_string_length(v);
    return CP_OK;
}

/* groupId, previousId: ids their event type requires, so any fault in
 * one rejects the event. *s = NULL when absent. */
static cp_status id_required(ingest_batch_t *b, const json_t *v, const char *field, const char **s,
                             size_t *len, cp_error_t *err)
{
    const char *not_text;
    cp_status rc = id_json(b, v, s, len, &not_text, err);
    if (rc)
        return rc;
    if (not_text)
        return CP_ERR(err, CP_ETYPE, "\"%s\" must be a string, got %s", field, not_text);
    if (*s && (rc = rule_text(field, *s, *len, INGEST_ID_MAX, 0, 0, err)))
        return rc;
    return CP_OK;
}

/*
 * Identifier v of e, found at `field` (named so in warnings and errors):
 * added to e as `type` when the rules take it (rules.h: where it was found
 * decides whether a bad value is a warning or rejects the event).
 * `idfield` is the static name the identifier keeps (the event outlives
 * `field`). *used (may be NULL) says whether it was added.
 */
static cp_status ident(ingest_batch_t *b, ingest_event_t *e, const json_t *v, rule_id_where where,
                       const char *field, const char *type, const char *idfield, int *used,
                       cp_error_t *err)
{
    const char *s, *not_text;
    size_t len;
    int use = 0;
    if (used)
        *used = 0;
    cp_status rc = id_json(b, v, &s, &len, &not_text, err);
    if (rc || (s == NULL && not_text == NULL))
        return rc;
    if ((rc = rule_id_value(b, e->index, where, field, s, len, not_text, 0, &use, err)) || !use)
        return rc;
    if (used)
        *used = 1;
    /* e->ids is the parser's ingest_ident_t[INGEST_MAX_IDS] until the
     * event is pushed (push_event copies the used part into the arena). */
    return rule_id_add((ingest_ident_t *)e->ids, &e->nids, type, strlen(type), s, len, idfield,
                       err);
}

/* Identifier-typed keys of a traits object. `prefix` names the field. */
static cp_status traits_idents(ingest_batch_t *b, ingest_event_t *e, const json_t *traits,
                               const char *field, const segment_opts_t *o, cp_error_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)traits, k, v)
    {
        if (!ingest_trait_is_ident(&o->id_types, k))
            continue;
        char fname[80];
        snprintf(fname, sizeof fname, "%s.%s", field, k);
        /* null is Segment's way of saying "not known": absent. `field`
         * must outlive the event: the identifier keeps the static name. */
        cp_status rc = ident(b, e, v, RULE_ID_ELSEWHERE, fname, k, field, NULL, err);
        if (rc)
            return rc;
    }
    return CP_OK;
}

static int ci_prefix(const char *s, const char *p)
{
    return strncasecmp(s, p, strlen(p)) == 0;
}

/* context.device.{id,advertisingId}, context.externalIds. */
static cp_status context_idents(ingest_batch_t *b, ingest_event_t *e, const json_t *ctx,
                                const segment_opts_t *o, cp_error_t *err)
{
    cp_status rc;
    const json_t *dev = json_object_get(ctx, "device");
    if (dev && !json_is_null(dev)) {
        if (!json_is_object(dev))
            return CP_ERR(err, CP_ETYPE, "\"context.device\" must be an object, got %s",
                          json_kind(dev));
        if ((rc = ident(b, e, json_object_get(dev, "id"), RULE_ID_ELSEWHERE, "context.device.id",
                        "device_id", "context.device.id", NULL, err)))
            return rc;
        /* iOS sends the IDFA; elsewhere (Android in China) the OAID. */
        const json_t *os = json_object_get(ctx, "os");
        const char *osname = json_string_value(json_object_get(os, "name"));
        const char *dtype = json_string_value(json_object_get(dev, "type"));
        int ios = (osname && (ci_prefix(osname, "ios") || ci_prefix(osname, "ipados"))) ||
                  (dtype && ci_prefix(dtype, "ios"));
        if ((rc = ident(b, e, json_object_get(dev, "advertisingId"), RULE_ID_ELSEWHERE,
                        "context.device.advertisingId", ios ? "idfa" : "oaid",
                        "context.device.advertisingId", NULL, err)))
            return rc;
    }
    const json_t *ext = json_object_get(ctx, "externalIds");
    if (ext && !json_is_null(ext)) {
        if (!json_is_array(ext))
            return CP_ERR(err, CP_ETYPE, "\"context.externalIds\" must be an array, got %s",
                          json_kind(ext));
        size_t i;
        json_t *x;
        json_array_foreach(ext, i, x)
        {
            const char *type = json_string_value(json_object_get(x, "type"));
            if (!json_is_object(x) || type == NULL)
                return CP_ERR(err, CP_ETYPE,
                              "\"context.externalIds[%zu]\" must be an object with \"id\" and "
                              "\"type\"",
                              i);
            if (!ingest_trait_is_ident(&o->id_types, type))
                continue; /* other tools' ids: not ours to merge on */
            const json_t *xid = json_object_get(x, "id");
            if (xid == NULL || json_is_null(xid))
                return CP_ERR(err, CP_EINVAL, "\"context.externalIds[%zu]\" has no \"id\"", i);
            if ((rc = ident(b, e, xid, RULE_ID_ELSEWHERE, "context.externalIds[].id", type,
                            "context.externalIds", NULL, err)))
                return rc;
        }
    }
    return CP_OK;
}

/* A timestamp field: absent/null -> 0 (not given), else it must parse. */
static cp_status time_field(const json_t *j, const char *name, int64_t *out, int *given,
                            cp_error_t *err)
{
    const json_t *v = json_object_get(j, name);
    *given = 0;
    if (v == NULL || json_is_null(v))
        return CP_OK;
    if (!json_is_string(v))
        return CP_ERR(err, CP_ETYPE, "\"%s\" must be an ISO 8601 string, got %s", name,
                      json_kind(v));
    if (ingest_time_parse(v, out) != 0)
        return rule_time_bad(name, json_string_value(v), err);
    *given = 1;
    return CP_OK;
}

/* A field that must be an object (or absent/null). */
static cp_status obj_field(const json_t *j, const char *name, const json_t **out, cp_error_t *err)
{
    const json_t *v = json_object_get(j, name);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return CP_OK;
    if (!json_is_object(v))
        return CP_ERR(err, CP_ETYPE, "\"%s\" must be an object, got %s", name, json_kind(v));
    *out = v;
    return CP_OK;
}

static cp_status text_field(const json_t *j, const char *name, int required, size_t max,
                            const char **s, size_t *len, cp_error_t *err)
{
    const json_t *v = json_object_get(j, name);
    *s = NULL;
    *len = 0;
    if (v == NULL || json_is_null(v)) {
        if (required)
            return CP_ERR(err, CP_EINVAL, "missing \"%s\"", name);
        return CP_OK;
    }
    if (!json_is_string(v))
        return CP_ERR(err, CP_ETYPE, "\"%s\" must be a string, got %s", name, json_kind(v));
    *s = json_string_value(v);
    *len = json_string_length(v);
    cp_status rc = rule_text(name, *s, *len, max, !required, 0, err);
    if (rc)
        return rc;
    if (*len == 0)
        *s = NULL;
    return CP_OK;
}

/* ---------------------------------------------------------------- event */

/*
 * An upper bound of the compact JSON size of v (json_dumpb would take
 * ~8 % of intake's time just to check the 32 KB limit): a string's
 * characters escape to at most 6 bytes each, a number prints in at most
 * 24. Past a depth of 64 (or on a huge bound) it gives up with SIZE_MAX.
 */
static size_t size_bound(const json_t *v, int depth)
{
    if (depth > 64)
        return SIZE_MAX;
    size_t n = 2, sub;
    const char *k;
    json_t *x;
    size_t i;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        json_object_foreach((json_t *)v, k, x)
        {
            if ((sub = size_bound(x, depth + 1)) == SIZE_MAX)
                return SIZE_MAX;
            n += 6 * strlen(k) + 4 + sub;
        }
        return n;
    case JSON_ARRAY:
        json_array_foreach(v, i, x)
        {
            if ((sub = size_bound(x, depth + 1)) == SIZE_MAX)
                return SIZE_MAX;
            n += sub + 1;
        }
        return n;
    case JSON_STRING:
        return 2 + 6 * json_string_length(v);
    case JSON_INTEGER:
    case JSON_REAL:
        return 24;
    default:
        return 5;
    }
}

/*
 * The context an event sees: its own over the batch's, one level deep (the
 * event's context.traits keys win over the batch's, and so on). A merged
 * object is kept in b->keep for the events that borrow it. NULL with
 * *oom = 1 when out of memory.
 */
static const json_t *merge_ctx(ingest_batch_t *b, const json_t *batch_ctx, const json_t *ev_ctx,
                               int *oom)
{
    *oom = 0;
    if (batch_ctx == NULL || ev_ctx == NULL)
        return ev_ctx ? ev_ctx : batch_ctx;
    json_t *m = json_copy((json_t *)batch_ctx);
    const char *k;
    json_t *v;
    if (m == NULL)
        goto nomem;
    json_object_foreach((json_t *)ev_ctx, k, v)
    {
        json_t *was = json_object_get(m, k);
        if (json_is_object(v) && json_is_object(was)) {
            json_t *sub = json_copy(was);
            if (sub == NULL || json_object_update(sub, v) != 0) {
                json_decref(sub);
                goto nomem;
            }
            if (json_object_set_new(m, k, sub) != 0) /* takes sub either way */
                goto nomem;
        } else if (json_object_set(m, k, v) != 0) {
            goto nomem;
        }
    }
    if ((b->keep == NULL && (b->keep = json_array()) == NULL) ||
        json_array_append_new(b->keep, m) != 0) {
        m = NULL; /* json_array_append_new took it either way */
        goto nomem;
    }
    return m;
nomem:
    json_decref(m);
    *oom = 1;
    return NULL;
}

static cp_status parse_event_at(json_t *j, ingest_type endpoint, const json_t *ctx_default,
                                int64_t sent_at, const segment_opts_t *o, ingest_batch_t *b,
                                size_t index, cp_error_t *err);

cp_status segment_parse_event(json_t *j, ingest_type endpoint, const json_t *ctx_default,
                              int64_t sent_at, const segment_opts_t *o, ingest_batch_t *b,
                              cp_error_t *err)
{
    return parse_event_at(j, endpoint, ctx_default, sent_at, o, b, b->n, err);
}

static cp_status parse_event_at(json_t *j, ingest_type endpoint, const json_t *ctx_default,
                                int64_t sent_at, const segment_opts_t *o, ingest_batch_t *b,
                                size_t index, cp_error_t *err)
{
    static const segment_opts_t defaults = {0};
    if (o == NULL)
        o = &defaults;
    ingest_event_t e;
    ingest_ident_t ids[INGEST_MAX_IDS];
    memset(&e, 0, sizeof e);
    e.ids = ids;
    e.raw = j;
    e.index = (uint32_t)index;
    rule_warn_mark_t mark = rule_warn_mark(b);
    cp_status rc = CP_OK;
#define return_rc(x)                                                                               \
    do {                                                                                           \
        rc = (x);                                                                                  \
        goto out;                                                                                  \
    } while (0)
    if (!json_is_object(j))
        return_rc(CP_ERR(err, CP_ETYPE, "an event must be a JSON object, got %s", json_kind(j)));
    /* The exact compact size only when a cheap upper bound is over. */
    size_t bytes = size_bound(j, 0);
    if (bytes > INGEST_EVENT_MAX)
        bytes = json_dumpb_checked(j, NULL, 0, JSON_COMPACT);
    if ((rc = rule_event_size(bytes, err)))
        return_rc(rc);

    /* type */
    const json_t *jt = json_object_get(j, "type");
    if (jt && !json_is_null(jt)) {
        if (!json_is_string(jt))
            return_rc(CP_ERR(err, CP_ETYPE, "\"type\" must be a string, got %s", json_kind(jt)));
        e.type = ingest_type_parse(json_string_value(jt), json_string_length(jt));
        if (e.type == ING_NONE)
            return_rc(CP_ERR(err, CP_EINVAL,
                             "unknown \"type\" \"%.32s\" (expected identify, track, page, screen, "
                             "group or alias)",
                             json_string_value(jt)));
        if (endpoint != ING_NONE && e.type != endpoint)
            return_rc(CP_ERR(err, CP_EINVAL, "\"type\" is \"%s\" but the endpoint is /v1/%s",
                             ingest_type_name(e.type), ingest_type_name(endpoint)));
    } else if (endpoint != ING_NONE) {
        e.type = endpoint;
    } else {
        return_rc(CP_ERR(err, CP_EINVAL, "missing \"type\" (a batch item needs one)"));
    }

    /* objects */
    const json_t *ctx = NULL;
    if ((rc = obj_field(j, "traits", &e.traits, err)) ||
        (rc = obj_field(j, "properties", &e.properties, err)) ||
        (rc = obj_field(j, "context", &ctx, err)))
        return_rc(rc);
    const json_t *integ;
    if ((rc = obj_field(j, "integrations", &integ, err)))
        return_rc(rc);
    if (e.type == ING_GROUP) { /* Segment: a group's traits describe the group */
        e.group_traits = e.traits;
        e.traits = NULL;
    }
    int oom;
    ctx = merge_ctx(b, ctx_default, ctx, &oom);
    if (oom)
        return_rc(CP_ERR(err, CP_ENOMEM, "out of memory"));
    if (ctx) {
        const json_t *loc = json_object_get(ctx, "locale");
        if (json_is_string(loc)) /* a hint only: an odd locale gives none */
            ident_locale_calling_code(json_string_value(loc), json_string_length(loc), e.phone_cc);
        const json_t *ct = json_object_get(ctx, "traits");
        if (ct && !json_is_null(ct)) {
            if (!json_is_object(ct))
                return_rc(CP_ERR(err, CP_ETYPE, "\"context.traits\" must be an object, got %s",
                                 json_kind(ct)));
            e.ctx_traits = ct;
        }
    }

    /* identifiers */
    int has_user, has_anon;
    if ((rc = ident(b, &e, json_object_get(j, "userId"), RULE_ID_ENVELOPE, "userId", "user_id",
                    "userId", &has_user, err)) ||
        (rc = ident(b, &e, json_object_get(j, "anonymousId"), RULE_ID_ENVELOPE, "anonymousId",
                    "anonymous_id", "anonymousId", &has_anon, err)))
        return_rc(rc);
    if ((e.traits && (rc = traits_idents(b, &e, e.traits, "traits", o, err))) ||
        (e.ctx_traits && (rc = traits_idents(b, &e, e.ctx_traits, "context.traits", o, err))) ||
        (ctx && (rc = context_idents(b, &e, ctx, o, err))))
        return_rc(rc);
    if ((rc = rule_id_required(has_user, has_anon, e.nids, o, err)))
        return_rc(rc);

    /* per type */
    switch (e.type) {
    case ING_TRACK:
        if ((rc = text_field(j, "event", 1, INGEST_NAME_MAX, &e.event, &e.event_len, err)))
            return_rc(rc);
        break;
    case ING_PAGE:
    case ING_SCREEN:
        if ((rc = text_field(j, "name", 0, INGEST_NAME_MAX, &e.name, &e.name_len, err)))
            return_rc(rc);
        e.event = e.type == ING_PAGE ? "page" : "screen";
        e.event_len = strlen(e.event);
        break;
    case ING_GROUP:
        if ((rc = id_required(b, json_object_get(j, "groupId"), "groupId", &e.group_id,
                              &e.group_id_len, err)))
            return_rc(rc);
        if (e.group_id == NULL)
            return_rc(CP_ERR(err, CP_EINVAL, "missing \"groupId\" (group)"));
        e.event = "group";
        e.event_len = 5;
        break;
    case ING_ALIAS:
        if ((rc = id_required(b, json_object_get(j, "previousId"), "previousId", &e.previous_id,
                              &e.previous_id_len, err)))
            return_rc(rc);
        if (e.previous_id == NULL)
            return_rc(CP_ERR(err, CP_EINVAL, "missing \"previousId\" (alias)"));
        if (!has_user)
            return_rc(CP_ERR(err, CP_EINVAL, "missing \"userId\" (alias)"));
        break;
    default:
        break;
    }

    /* time */
    int64_t ts = 0, ots = 0, sat = 0, rat = 0;
    int g_ts, g_ots, g_sat, g_rat;
    if ((rc = time_field(j, "timestamp", &ts, &g_ts, err)) ||
        (rc = time_field(j, "originalTimestamp", &ots, &g_ots, err)) ||
        (rc = time_field(j, "sentAt", &sat, &g_sat, err)) ||
        (rc = time_field(j, "receivedAt", &rat, &g_rat, err)))
        return_rc(rc);
    if (!g_sat && sent_at >= 0) {
        sat = sent_at;
        g_sat = 1;
    }
    int64_t recv = o->received_at_ms > 0 ? o->received_at_ms / 1000 : 0;
    if (g_rat)
        recv = rat; /* an import of events Segment already received */
    e.received_at = recv;
    if (!g_ts && g_ots) {
        ts = ots;
        g_ts = 1;
    }
    /* An imported receivedAt was corrected by whoever received it. */
    if ((rc = rule_event_time(g_ts, ts, g_sat, sat, recv, o->no_skew_correction || g_rat, &e.ts,
                              err)))
        return_rc(rc);

    /* messageId */
    if ((rc = text_field(j, "messageId", 0, INGEST_MSGID_MAX, &e.message_id, &e.message_id_len,
                         err)))
        return_rc(rc);
    if (e.message_id == NULL) {
        char *canon = json_dumps_checked(j, JSON_COMPACT | JSON_SORT_KEYS);
        if (canon == NULL)
            return_rc(CP_ERR(err, CP_ENOMEM, "out of memory"));
        size_t cl = strlen(canon);
        const char *tn = ingest_type_name(e.type);
        uint64_t h1 = hash64(canon, cl, 0x5e6d) ^ hash64(tn, strlen(tn), 1);
        uint64_t h2 = hash64(canon, cl, 0x17a2);
        free(canon);
        char buf[64];
        int n = snprintf(buf, sizeof buf, "derived:%016llx%016llx", (unsigned long long)h1,
                         (unsigned long long)h2);
        e.message_id = arena_strndup(&b->arena, buf, (size_t)n);
        if (e.message_id == NULL)
            return_rc(CP_ERR(err, CP_ENOMEM, "out of memory"));
        e.message_id_len = (size_t)n;
        e.message_id_derived = 1;
    }
    e.no_dedup = o->no_dedup;
    e.message_hash = rule_message_hash(e.message_id, e.message_id_len);
    if (push_event(b, &e))
        return_rc(CP_ERR(err, CP_ENOMEM, "out of memory"));
out:
    if (rc) {
        rule_warn_drop(b, mark); /* the warnings of a rejected event go with it */
    }
    return rc;
#undef return_rc
}

/* ---------------------------------------------------------------- body */

cp_status segment_parse(ingest_type endpoint, const char *body, size_t len, const segment_opts_t *o,
                        ingest_batch_t *b, cp_error_t *err)
{
    size_t max = endpoint == ING_NONE ? INGEST_BATCH_MAX : INGEST_EVENT_MAX;
    if (body == NULL)
        return CP_ERR(err, CP_EINVAL, "empty request body");
    if (len > max)
        return CP_ERR(err, CP_ELIMIT, "request body is %zu bytes; the limit is %zu bytes%s", len,
                      max, endpoint == ING_NONE ? " per batch" : " per event");
    json_error_t je;
    json_t *root = json_loadb_checked(body, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading the events");
    if (root == NULL)
        return CP_ERR(err, CP_EINVAL, "malformed JSON at byte %d (line %d, column %d): %s",
                      je.position, je.line, je.column, je.text);
    json_decref(b->root);
    b->root = root;
    if (!json_is_object(root))
        return CP_ERR(err, CP_EINVAL, "the request body must be a JSON object, got %s",
                      json_kind(root));
    cp_error_t ee;
    if (endpoint != ING_NONE) {
        memset(&ee, 0, sizeof ee);
        cp_status rc = segment_parse_event(root, endpoint, NULL, -1, o, b, &ee);
        if (rc == CP_ENOMEM)
            return CP_ERR(err, rc, "out of memory");
        if (rc) {
            ingest_batch_reject(b, 0, rc, "%s", ee.message);
            return CP_ERR(err, CP_EINVAL, "invalid %s event: %s", ingest_type_name(endpoint),
                          ee.message);
        }
        return CP_OK;
    }
    const json_t *arr = json_object_get(root, "batch");
    if (arr == NULL)
        return CP_ERR(err, CP_EINVAL, "missing \"batch\" (an array of events)");
    if (!json_is_array(arr))
        return CP_ERR(err, CP_ETYPE, "\"batch\" must be an array, got %s", json_kind(arr));
    const json_t *ctx = json_object_get(root, "context");
    if (ctx && !json_is_null(ctx) && !json_is_object(ctx))
        return CP_ERR(err, CP_ETYPE, "\"context\" must be an object, got %s", json_kind(ctx));
    if (ctx && json_is_null(ctx))
        ctx = NULL;
    int64_t sent = -1;
    int g;
    memset(&ee, 0, sizeof ee);
    if (time_field(root, "sentAt", &sent, &g, &ee))
        return CP_ERR(err, CP_EINVAL, "batch envelope: %s", ee.message);
    if (!g)
        sent = -1;
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item)
    {
        memset(&ee, 0, sizeof ee);
        cp_status rc = parse_event_at(item, ING_NONE, ctx, sent, o, b, i, &ee);
        if (rc == CP_ENOMEM)
            return CP_ERR(err, rc, "out of memory");
        if (rc)
            ingest_batch_reject(b, i, rc, "%s", ee.message);
    }
    /* Strict: all or nothing. Lenient: the valid events go on, unless
     * there are none (then the request as a whole failed). */
    if (b->rejected && (b->n == 0 || (o && o->strict))) {
        b->n = 0;
        b->nwarnings = b->warned = 0;
        return CP_ERR(err, CP_EINVAL, "%zu of %zu events are invalid; nothing was applied",
                      b->rejected, json_array_size(arr));
    }
    return CP_OK;
}
