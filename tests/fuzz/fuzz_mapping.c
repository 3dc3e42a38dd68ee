/*
 * fuzz_mapping.c — a mapping document and a few CSV rows
 * (src/ingest/mapping*.c): the bytes before the first NUL are the mapping
 * JSON, the bytes after it the file (header first when the mapping says
 * so). A mapping that parses is bound to the header, then every row goes
 * both ways the importer and the tests know: typed (mapping_row_event)
 * and as a JSON document (mapping_row) through segment_parse_event. The
 * two must agree exactly, as mapping.h promises: the same status, the same
 * message (the typed one prefixed with the line), the same event; a
 * rejected typed row leaves the batch as it was. Any other outcome of
 * mapping_parse than CP_OK, CP_EINVAL or CP_ELIMIT with a message aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/csv.h"
#include "ingest/event.h"
#include "ingest/mapping.h"

#define MAX_ROWS 64

static void same_event(const ingest_event_t *a, const ingest_event_t *b)
{
    if (a->type != b->type || a->nids != b->nids || a->ts != b->ts ||
        a->received_at != b->received_at || a->message_id_len != b->message_id_len ||
        memcmp(a->message_id, b->message_id, a->message_id_len) ||
        a->message_hash != b->message_hash || a->event_len != b->event_len ||
        (a->event && memcmp(a->event, b->event, a->event_len)) || (!a->event != !b->event))
        abort();
    for (size_t i = 0; i < a->nids; i++)
        if (strcmp(a->ids[i].type, b->ids[i].type) || a->ids[i].len != b->ids[i].len ||
            memcmp(a->ids[i].value, b->ids[i].value, a->ids[i].len) ||
            b->ids[i].value[b->ids[i].len] != '\0' || strcmp(a->ids[i].field, b->ids[i].field))
            abort();
    size_t np = json_object_size(a->properties);
    size_t nt = json_object_size(a->type == ING_IDENTIFY ? a->traits : a->ctx_traits);
    if (np != b->ntprops || nt != b->nttraits)
        abort();
}

static void one_row(const mapping_t *m, const csv_field_t *f, size_t n, uint64_t line,
                    const segment_opts_t *o, ingest_batch_t *typed)
{
    cp_error_t e1 = {0}, e2 = {0};
    json_t *doc = NULL;
    map_result r1 = MAP_EVENT, r2 = MAP_EVENT;
    ingest_batch_t b1;
    ingest_batch_init(&b1);
    cp_status rc1 = mapping_row(m, f, n, line, "fz", &doc, &r1, &e1);
    if (rc1 == CP_OK && r1 == MAP_EVENT) {
        rc1 = segment_parse_event(doc, ING_NONE, NULL, -1, o, &b1, &e1);
        if (rc1)
            error_prefix(&e1, "line %llu: ", (unsigned long long)line);
    }
    size_t n0 = typed->n, arena0 = typed->arena.total, w0 = typed->warned;
    cp_status rc2 = mapping_row_event(m, f, n, line, "fz", o, typed, &r2, &e2);
    if (rc1 == CP_ENOMEM || rc2 == CP_ENOMEM)
        goto out; /* the arena's cap: not a disagreement */
    if (rc1 != rc2 || (rc1 && strcmp(e1.message, e2.message))) {
        fprintf(stderr, "fuzz_mapping: typed %d \"%s\" vs JSON %d \"%s\"\n", rc2, e2.message, rc1,
                e1.message);
        abort();
    }
    if (rc2 || r2 == MAP_SKIP) {
        if (typed->n != n0 || typed->arena.total != arena0 || typed->warned != w0)
            abort(); /* a row not taken leaves the batch as it was */
        if (rc2 == CP_OK && r1 != MAP_SKIP)
            abort();
    } else {
        if (r1 != MAP_EVENT || typed->n != n0 + 1 || b1.n != 1)
            abort();
        same_event(&b1.events[0], &typed->events[n0]);
        if (b1.warned != typed->warned - w0)
            abort(); /* the same warnings */
    }
out:
    ingest_batch_free(&b1);
    json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nul = memchr(text, '\0', size);
    size_t mlen = nul ? (size_t)(nul - text) : size;
    const char *rows = nul ? nul + 1 : "";
    size_t rlen = nul ? size - mlen - 1 : 0;
    mapping_t *m = NULL;
    cp_error_t err = {0};
    cp_status rc = mapping_parse(text, mlen, &m, &err);
    if (rc != CP_OK) {
        if ((rc != CP_EINVAL && rc != CP_ELIMIT) || err.message[0] == '\0' || m != NULL)
            abort();
        return 0;
    }
    csv_opts_t co = {.delim = m->delim};
    csv_reader_t *r = NULL;
    if (csv_open_mem(rows, rlen, &co, &r, &err) != CP_OK)
        abort();
    ingest_batch_t typed;
    ingest_batch_init(&typed);
    int bound = 0;
    if (!m->header)
        bound = mapping_bind(m, NULL, 0, &err) == CP_OK;
    for (int i = 0; i < MAX_ROWS; i++) {
        const csv_field_t *f = NULL;
        size_t n = 0;
        rc = csv_next(r, &f, &n, &err);
        if (rc == CP_OK && f == NULL)
            break;
        if (rc != CP_OK)
            continue;
        if (!bound && m->header) {
            if (mapping_bind(m, f, n, &err) != CP_OK)
                break;
            bound = 1;
            continue;
        }
        if (!bound)
            break;
        /* with and without a receive time; imports allow other ids */
        segment_opts_t o = {.received_at_ms = (i & 1) ? 1700000000000ll : 0,
                            .allow_other_ids = (i & 2) != 0,
                            .no_dedup = 1};
        one_row(m, f, n, csv_line(r), &o, &typed);
    }
    ingest_batch_free(&typed);
    csv_close(r);
    mapping_free(m);
    return 0;
}
