/* json.c — naming jansson values in error messages; jansson's parser and
 * printer made safe when memory runs out. */
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

/* ------------------------------------------------ checked parse and print */

/* jansson has one allocator per process, so the hook is process-wide; what
 * it records belongs to the checked call running on the thread, hence the
 * thread-local state (the library's only per-thread scratch). */
typedef struct guard {
    int active;          /* a checked call runs on this thread */
    int failed;          /* an allocation failed during it */
    unsigned char *room; /* parse only: what failed allocations are served from */
    size_t room_cap, room_used;
} guard_t;

static __thread guard_t t_guard;
static json_malloc_t g_prev_malloc = malloc;
static json_free_t g_prev_free = free;
static pthread_once_t g_guard_once = PTHREAD_ONCE_INIT;

static void *guard_malloc(size_t n)
{
    void *p = g_prev_malloc(n);
    guard_t *g = &t_guard;
    if (p != NULL || !g->active)
        return p;
    g->failed = 1;
    /* Inside a parse, the allocation may be the token buffer's growth, whose
     * failure jansson does not survive: serve it from the room set aside. */
    size_t need = (n + 15) & ~(size_t)15;
    if (g->room != NULL && need >= n && need <= g->room_cap - g->room_used) {
        p = g->room + g->room_used;
        g->room_used += need;
    }
    return p;
}

static void guard_free(void *p)
{
    const guard_t *g = &t_guard;
    uintptr_t a = (uintptr_t)p, r = (uintptr_t)g->room;
    if (g->room != NULL && a >= r && a < r + g->room_cap)
        return; /* served from the room: released with it */
    g_prev_free(p);
}

static void guard_install_once(void)
{
    json_malloc_t m = NULL;
    json_free_t f = NULL;
    json_get_alloc_funcs(&m, &f);
    if (m != NULL && f != NULL) {
        g_prev_malloc = m;
        g_prev_free = f;
    }
    json_set_alloc_funcs(guard_malloc, guard_free);
}

void json_guard_install(void)
{
    (void)pthread_once(&g_guard_once, guard_install_once);
}

static void set_oom(json_error_t *e)
{
    if (e == NULL)
        return;
    memset(e, 0, sizeof *e);
    e->line = e->column = -1;
    snprintf(e->text, sizeof e->text, "out of memory");
    snprintf(e->source, sizeof e->source, "<buffer>");
    e->text[JSON_ERROR_TEXT_LENGTH - 1] = (char)json_error_out_of_memory;
}

int json_is_oom(const json_error_t *e)
{
    return e != NULL && json_error_code(e) == json_error_out_of_memory;
}

typedef struct source {
    const char *p; /* a buffer, or NULL for fp */
    FILE *fp;
    size_t len, pos, max; /* max: fp only */
    int too_big;
} source_t;

/* Hands the parser small pieces so that it stops soon after a failed
 * allocation: from then on it gets end of input, and what it allocates
 * until it gives up is small. */
static size_t source_read(void *buf, size_t cap, void *data)
{
    source_t *s = data;
    if (t_guard.failed)
        return (size_t)-1;
    if (cap > 64)
        cap = 64;
    if (s->fp == NULL) {
        size_t n = s->len - s->pos < cap ? s->len - s->pos : cap;
        memcpy(buf, s->p + s->pos, n);
        s->pos += n;
        return n;
    }
    size_t n = fread(buf, 1, cap, s->fp);
    if (n > s->max - s->pos) {
        s->too_big = 1;
        return (size_t)-1;
    }
    s->pos += n;
    return n;
}

/* The parse proper, with room for twice the longest token plus slack: the
 * token buffer of jansson's lexer doubles, so it never asks more than
 * 2 * (len + 1) bytes at once, and the parse stops within 64 bytes of
 * input after a failure (at most some 20 values, a few KiB). The room is rarely touched: untouched
 * pages of a large malloc cost nothing. */
static json_t *load_guarded(source_t *src, size_t hint, size_t flags, json_error_t *e)
{
    json_guard_install();
    guard_t *g = &t_guard;
    if (g->active) { /* not nested: jansson never calls back into us */
        set_oom(e);
        return NULL;
    }
    size_t cap = hint > (SIZE_MAX - 16384) / 4 ? SIZE_MAX : hint * 4 + 16384;
    unsigned char *room = cap == SIZE_MAX ? NULL : malloc(cap);
    if (room == NULL) {
        set_oom(e);
        return NULL;
    }
    *g = (guard_t){.active = 1, .room = room, .room_cap = cap};
    json_t *j = json_load_callback(source_read, src, flags, e);
    int failed = g->failed;
    if (failed) /* whatever it built may hold pieces of the room */
        json_decref(j);
    *g = (guard_t){0};
    free(room);
    if (failed) {
        set_oom(e);
        return NULL;
    }
    return j;
}

json_t *json_loadb_checked(const char *buf, size_t len, size_t flags, json_error_t *e)
{
    if (buf == NULL)
        return json_loadb(buf, len, flags, e); /* jansson's own error */
    source_t src = {.p = buf, .len = len};
    return load_guarded(&src, len, flags, e);
}

json_t *json_loads_checked(const char *s, size_t flags, json_error_t *e)
{
    if (s == NULL)
        return json_loads(s, flags, e);
    return json_loadb_checked(s, strlen(s), flags, e);
}

json_t *json_loadf_checked(FILE *fp, size_t max_bytes, size_t flags, json_error_t *e)
{
    if (fp == NULL)
        return json_loadf(fp, flags, e);
    source_t src = {.fp = fp, .max = max_bytes};
    json_t *j = load_guarded(&src, max_bytes, flags, e);
    if (src.too_big) {
        json_decref(j);
        if (e) {
            memset(e, 0, sizeof *e);
            e->line = e->column = -1;
            snprintf(e->text, sizeof e->text, "longer than %zu bytes", max_bytes);
            e->text[JSON_ERROR_TEXT_LENGTH - 1] = (char)json_error_invalid_format;
        }
        return NULL;
    }
    return j;
}

char *json_dumps_checked(const json_t *j, size_t flags)
{
    json_guard_install();
    guard_t *g = &t_guard;
    if (g->active)
        return NULL;
    g->active = 1;
    g->failed = 0;
    char *s = json_dumps(j, flags);
    int failed = g->failed;
    *g = (guard_t){0};
    if (failed) { /* the text may miss a key: none rather than a wrong one */
        free(s);
        return NULL;
    }
    return s;
}

size_t json_dumpb_checked(const json_t *j, char *buf, size_t size, size_t flags)
{
    json_guard_install();
    guard_t *g = &t_guard;
    if (g->active)
        return 0;
    g->active = 1;
    g->failed = 0;
    size_t n = json_dumpb(j, buf, size, flags);
    int failed = g->failed;
    *g = (guard_t){0};
    return failed ? 0 : n;
}
