/*
 * fuzz_segment.c — libFuzzer target for the Segment payload parser
 * (src/ingest/segment.c). The first byte picks the endpoint (batch or one
 * of the six event types); the rest is the body. Checks the contract:
 * success means every event has a type, a messageId, its hash, 1..16
 * identifiers with values inside the batch's strings, and (lenient mode)
 * every rejected event a reason, or (strict mode) no rejected event;
 * failure of a batch means no event is left and at least one reason. Corpus: tests/fuzz/segment/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/event.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_segment: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    ingest_type ep = (ingest_type)(data[0] % 7);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    ingest_batch_t b;
    ingest_batch_init(&b);
    cp_error_t err = {0};
    segment_opts_t o = {.received_at_ms = 1700000000000ll};
    o.strict = (data[0] / 7) & 1; /* both modes: partial batches and all-or-nothing */
    cp_status rc = segment_parse(ep, body, len, &o, &b, &err);
    if (rc == CP_OK) {
        /* Lenient mode applies the valid events and lists the others. */
        if (b.rejected && o.strict)
            die("strict success with rejects");
        for (size_t i = 0; i < b.nrejects; i++)
            if (b.rejects[i].reason[0] == '\0')
                die("empty reason");
        for (size_t i = 0; i < b.n; i++) {
            const ingest_event_t *e = &b.events[i];
            if (e->type < ING_IDENTIFY || e->type > ING_ALIAS)
                die("bad type");
            if (e->message_id == NULL || e->message_id_len == 0)
                die("no messageId");
            if (e->message_hash != hash64(e->message_id, e->message_id_len, 0x6d736764))
                die("messageId hash mismatch");
            if (e->nids == 0 || e->nids > INGEST_MAX_IDS)
                die("identifier count");
            for (size_t k = 0; k < e->nids; k++)
                if (e->ids[k].len == 0 || e->ids[k].len > INGEST_ID_MAX ||
                    !utf8_valid(e->ids[k].value, e->ids[k].len))
                    die("bad identifier value");
            if (e->type == ING_TRACK && (e->event == NULL || e->event_len == 0))
                die("track without event");
        }
    } else if (b.rejected) {
        if (b.n != 0)
            die("events left after a rejected batch");
        for (size_t i = 0; i < b.nrejects; i++)
            if (b.rejects[i].reason[0] == '\0')
                die("empty reason");
    } else if (err.message[0] == '\0') {
        die("failure without a message");
    }
    ingest_batch_free(&b);
    return 0;
}
