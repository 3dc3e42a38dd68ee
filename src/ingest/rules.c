/* rules.c — the validation rules of intake, shared by the Segment and the
 * mapping paths; see rules.h for what each rule decides and why. */
#include <stdio.h>
#include <string.h>

#include "ingest/rules.h"
#include "util/text.h"
#include "util/util.h"

cp_status rule_text(const char *field, const char *s, size_t len, size_t max, int empty_ok,
                    int known_printable, cp_error_t *err)
{
    if (len == 0 && !empty_ok)
        return CP_ERR(err, CP_EINVAL, "\"%s\" is empty", field);
    if (len > max)
        return CP_ERR(err, CP_ELIMIT, "\"%s\" is longer than %zu bytes", field, max);
    if (!known_printable && text_has_control(s, len))
        return CP_ERR(err, CP_EINVAL, "\"%s\" contains control characters", field);
    return CP_OK;
}

/*
 * SDKs do not retry a 400, so one odd value must not lose an event (or a
 * batch): a bad identifier found among the traits or the context is not
 * the event's fault and only costs the value. userId and anonymousId are
 * the envelope: a wrong type there is a malformed event, but an empty
 * string is how several SDKs say "not known", a placeholder like any other.
 */
cp_status rule_id_value(ingest_batch_t *b, uint32_t index, rule_id_where where, const char *field,
                        const char *s, size_t len, const char *not_text, int known_printable,
                        int *use, cp_error_t *err)
{
    *use = 0;
    int empty = not_text == NULL && len == 0;
    if (where == RULE_ID_ENVELOPE && !empty) {
        if (not_text)
            return CP_ERR(err, CP_ETYPE, "\"%s\" must be a string, got %s", field, not_text);
        cp_status rc = rule_text(field, s, len, INGEST_ID_MAX, 0, known_printable, err);
        if (rc)
            return rc;
        *use = 1;
        return CP_OK;
    }
    if (!empty && not_text == NULL &&
        rule_text(field, s, len, INGEST_ID_MAX, 0, known_printable, NULL) == CP_OK) {
        *use = 1;
        return CP_OK;
    }
    ingest_batch_warn(b, index, field, empty ? INGEST_WARN_PLACEHOLDER : INGEST_WARN_INVALID);
    return CP_OK;
}

cp_status rule_id_add(ingest_ident_t *ids, size_t *n, const char *type, size_t tlen,
                      const char *value, size_t len, const char *field, cp_error_t *err)
{
    for (size_t i = 0; i < *n; i++)
        if (strlen(ids[i].type) == tlen && memcmp(ids[i].type, type, tlen) == 0 &&
            ids[i].len == len && memcmp(ids[i].value, value, len) == 0)
            return CP_OK;
    if (*n >= INGEST_MAX_IDS)
        return CP_ERR(err, CP_ELIMIT, "more than %d identifiers on one event", INGEST_MAX_IDS);
    ingest_ident_t *d = &ids[(*n)++];
    if (tlen >= sizeof d->type)
        tlen = sizeof d->type - 1;
    memcpy(d->type, type, tlen);
    d->type[tlen] = '\0';
    d->value = value;
    d->len = len;
    d->field = field;
    return CP_OK;
}

cp_status rule_id_required(int has_user, int has_anon, size_t nids, const segment_opts_t *o,
                           cp_error_t *err)
{
    if (has_user || has_anon || (o->allow_other_ids && nids > 0))
        return CP_OK;
    return CP_ERR(err, CP_EINVAL, "missing \"userId\" and \"anonymousId\" (one is required)");
}

cp_status rule_time_bad(const char *field, const char *text, cp_error_t *err)
{
    return CP_ERR(err, CP_EINVAL,
                  "\"%s\": \"%.64s\" is not an ISO 8601 timestamp (such as "
                  "\"2024-01-01T10:20:30.000Z\")",
                  field, text);
}

cp_status rule_event_time(int has_ts, int64_t ts, int has_sent, int64_t sent, int64_t recv,
                          int no_skew, int64_t *out, cp_error_t *err)
{
    if (!has_ts) {
        if (recv == 0)
            return CP_ERR(err, CP_EINVAL, "missing \"timestamp\" (no receive time to default to)");
        *out = recv;
        return CP_OK;
    }
    /* The device clock may be wrong; the offset between its sentAt and our
     * receive time corrects it. Nothing happens after it is received. */
    if (has_sent && recv && !no_skew) {
        ts += recv - sent;
        if (ts > recv)
            ts = recv;
    }
    *out = ts;
    return CP_OK;
}

cp_status rule_event_size(size_t bytes, cp_error_t *err)
{
    if (bytes > INGEST_EVENT_MAX)
        return CP_ERR(err, CP_ELIMIT, "event is %zu bytes; the limit is %u bytes per event", bytes,
                      INGEST_EVENT_MAX);
    return CP_OK;
}

uint64_t rule_message_hash(const char *id, size_t len)
{
    return hash64(id, len, 0x6d736764);
}
