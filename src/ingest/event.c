/* event.c — what every source of events shares (event.h): event type
 * names, which trait keys are identifiers, the batch that holds parsed
 * events with their rejects and warnings, and timestamps as JSON. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/event.h"
#include "ingest/ingest_int.h"
#include "model/normalize.h"

static const char *const type_names[] = {NULL,     "identify", "track", "page",
                                         "screen", "group",    "alias"};

const char *ingest_type_name(ingest_type t)
{
    return (t > ING_NONE && t <= ING_ALIAS) ? type_names[t] : NULL;
}

ingest_type ingest_type_parse(const char *s, size_t len)
{
    for (int t = ING_IDENTIFY; t <= ING_ALIAS; t++)
        if (strlen(type_names[t]) == len && memcmp(type_names[t], s, len) == 0)
            return (ingest_type)t;
    return ING_NONE;
}

/* ---------------------------------------------------------------- batch */

void ingest_batch_init(ingest_batch_t *b)
{
    memset(b, 0, sizeof *b);
    arena_init(&b->arena, 64u << 20);
}

void ingest_batch_free(ingest_batch_t *b)
{
    if (b == NULL)
        return;
    json_decref(b->root);
    json_decref(b->keep);
    free(b->events);
    free(b->rejects);
    free(b->warnings);
    arena_free(&b->arena);
    memset(b, 0, sizeof *b);
}

void ingest_batch_reset(ingest_batch_t *b)
{
    json_decref(b->root);
    b->root = NULL;
    json_decref(b->keep);
    b->keep = NULL;
    b->n = 0;
    b->nrejects = 0;
    b->rejected = 0;
    b->nwarnings = 0;
    b->warned = 0;
    arena_reset(&b->arena); /* keeps its blocks */
}

void ingest_batch_reject(ingest_batch_t *b, size_t index, cp_status code, const char *fmt, ...)
{
    b->rejected++;
    if (b->nrejects >= INGEST_MAX_REPORTED)
        return;
    if (b->rejects == NULL) {
        b->rejects = calloc(INGEST_MAX_REPORTED, sizeof *b->rejects);
        if (b->rejects == NULL)
            return;
    }
    ingest_reject_t *r = &b->rejects[b->nrejects++];
    r->index = index;
    r->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof r->reason, fmt, ap);
    va_end(ap);
}

void ingest_batch_warn(ingest_batch_t *b, size_t index, const char *field, const char *reason)
{
    b->warned++;
    if (b->nwarnings >= INGEST_MAX_REPORTED)
        return;
    if (b->warnings == NULL) {
        b->warnings = calloc(INGEST_MAX_REPORTED, sizeof *b->warnings);
        if (b->warnings == NULL)
            return;
    }
    ingest_warning_t *w = &b->warnings[b->nwarnings++];
    w->index = index;
    snprintf(w->field, sizeof w->field, "%s", field);
    w->reason = reason;
}

cp_status ingest_batch_grow(ingest_batch_t *b)
{
    if (b->n < b->cap)
        return CP_OK;
    size_t nc = b->cap ? b->cap * 2 : 16;
    ingest_event_t *p = realloc(b->events, nc * sizeof *p);
    if (p == NULL)
        return CP_ENOMEM;
    b->events = p;
    b->cap = nc;
    return CP_OK;
}

int ingest_trait_is_ident(const ingest_id_types_t *t, const char *key)
{
    const char *const *names = (t && t->names) ? t->names : ident_builtin_types;
    size_t n = (t && t->names) ? t->n : IDENT_NBUILTIN;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], key) == 0)
            return 1;
    return 0;
}

int ingest_time_parse(const json_t *v, int64_t *secs)
{
    if (!json_is_string(v))
        return -1;
    return time_parse(json_string_value(v), json_string_length(v), secs);
}
