/*
 * util.h — errors, time, UTF-8, growable buffers, hashing helpers.
 * The lowest layer: includes nothing of crowdpack but the public header.
 */
#ifndef CP_UTIL_H
#define CP_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"

#define CP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define CP_UNUSED(x) ((void)(x))

/*
 * Records an error in `err` (may be NULL) and returns `code`, so callers
 * write `return CP_ERR(err, CP_EINVAL, "bad %s", x);`. The message is
 * printf-formatted; file, function and line of the call are kept.
 */
#define CP_ERR(err, code, ...) error_set((err), (code), __FILE__, __func__, __LINE__, __VA_ARGS__)
/* Same with an expression position (1-based line and column). */
#define CP_ERR_AT(err, code, line, col, ...)                                                       \
    error_set_at((err), (code), (line), (col), __FILE__, __func__, __LINE__, __VA_ARGS__)

cp_status error_set(cp_error_t *err, cp_status code, const char *file, const char *func, int line,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
cp_status error_set_at(cp_error_t *err, cp_status code, int eline, int ecol, const char *file,
                       const char *func, int line, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
/* Prefixes err->message with printf text (e.g. "line 7: "). */
void error_prefix(cp_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void error_clear(cp_error_t *err);

/*
 * Extensible structs of crowdpack.h (first member `size_t size`; the
 * rules are in crowdpack.h's header comment). `known` is sizeof the
 * library's struct, `min` the size of its first version: use
 * CP_SIZE_THROUGH(type, last field of the first version), never sizeof,
 * so the minimum stays put when fields are appended. `what` names the
 * struct in the message ("cp_open_options_t").
 *
 * sized_in: copies the caller's input struct `src` into `dst` (`known`
 * bytes, zeroed first; fields past src->size stay 0 = default); CP_EINVAL
 * for a size below `min` or a non-zero byte past `known`.
 * sized_out_check: CP_EINVAL when the caller's output struct `dst` is
 * smaller than `min` (nothing written).
 * sized_out: copies the library's filled struct `full` into `dst` up to
 * dst->size, zeroes what lies past `known`, keeps dst->size.
 */
#define CP_SIZE_THROUGH(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
cp_status sized_in(void *dst, size_t known, const void *src, size_t min, const char *what,
                   cp_error_t *err);
cp_status sized_out_check(const void *dst, size_t min, const char *what, cp_error_t *err);
void sized_out(void *dst, const void *full, size_t known);

/* ------------------------------------------------------------------ time */
/* Wall clock, milliseconds since the epoch. */
int64_t time_now_ms(void);
/* Monotonic clock, nanoseconds. */
uint64_t time_mono_ns(void);
/*
 * Parses ISO 8601 in UTC: "2024-01-01", "2024-01-01T10:20:30",
 * "2024-01-01T10:20:30Z", "2024-01-01T10:20:30.123+08:00", "... 10:20:30".
 * Fractional seconds are truncated. Returns 0 and seconds since the epoch,
 * or -1 if the text is not such a timestamp (or out of range 0001..9999).
 */
int time_parse(const char *s, size_t len, int64_t *secs);
/* Formats seconds since the epoch as "YYYY-MM-DDTHH:MM:SSZ" into buf (>= 32). */
void time_format(int64_t secs, char *buf, size_t cap);

/* ------------------------------------------------------------------ UTF-8 */
/* 1 if [s, s+len) is valid UTF-8 (no overlongs, no surrogates). */
int utf8_valid(const char *s, size_t len);

/* ---------------------------------------------------------------- buffers */
/* A growable byte buffer with a hard cap (curl's dynbuf). */
typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* appends past this fail with CP_ELIMIT; 0 = unlimited */
} buf_t;

void buf_init(buf_t *b, size_t max);
void buf_free(buf_t *b);
void buf_reset(buf_t *b);
cp_status buf_append(buf_t *b, const void *p, size_t n);
cp_status buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Makes room for `need` elements of `size` bytes in the array *p, whose
 * capacity is *cap elements: doubles from `first` (at least `need`).
 * CP_ENOMEM, with the array and *cap unchanged, when the allocation fails
 * or the size would overflow. The one growth rule of the tree's arrays.
 */
cp_status arr_grow(void **p, size_t *cap, size_t need, size_t size, size_t first);

/*
 * Writes "KIND message\n" to fd as one line (newlines in the message become
 * spaces; cut at 1 KiB), retrying short writes and giving up silently on
 * errors: how a child process walking damaged files reports to its
 * parent over a pipe (store_verify, cp_db_check).
 */
void fd_line_v(int fd, const char *kind, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* NUL-terminates (not counted in len) and returns data. */
const char *buf_cstr(buf_t *b);
/* Appends s[0..len) as a JSON string literal, as jansson writes one: quotes,
 * backslashes and control characters escaped (\b \f \n \r \t by name,
 * the others \u00XX), everything else (UTF-8 included) as it is. The one
 * JSON string writer of every layer. */
cp_status json_buf_str(buf_t *b, const char *s, size_t len);

/* ----------------------------------------------------------------- arena */
/* A bump allocator; everything is freed at once by arena_free, or
 * emptied by arena_reset, which keeps the blocks for the next round. */
typedef struct arena_block arena_block_t;
typedef struct arena {
    arena_block_t *head;
    arena_block_t *spare; /* blocks arena_reset kept for reuse */
    size_t total;
    size_t max; /* 0 = unlimited; allocations past it return NULL */
} arena_t;

void arena_init(arena_t *a, size_t max);
void *arena_alloc(arena_t *a, size_t n); /* 16-byte aligned, zeroed; NULL on ENOMEM/limit */
char *arena_strndup(arena_t *a, const char *s, size_t n);
void arena_reset(arena_t *a);
void arena_free(arena_t *a);

/* ------------------------------------------------------------------ misc */
/* Shortest "%.{15,16,17}g" text that parses back to exactly v. */
void fmt_double(double v, char *buf, size_t cap);
/* 64-bit hash (xxh3). */
uint64_t hash64(const void *p, size_t n, uint64_t seed);
/* splitmix64 step: a small deterministic PRNG for generators and tests. */
static inline uint64_t rand_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/*
 * a[0..n) == b[0..n), for the short names and values events repeat row
 * after row: up to 16 bytes in two overlapping loads per side instead of a
 * libc call; longer ones go to memcmp. The builtins need no header and fold
 * to plain loads.
 */
static inline int mem_eq(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    if (n >= 8) {
        if (n > 16)
            return __builtin_memcmp(x, y, n) == 0;
        uint64_t p, q, r, t;
        __builtin_memcpy(&p, x, 8);
        __builtin_memcpy(&q, y, 8);
        __builtin_memcpy(&r, x + n - 8, 8);
        __builtin_memcpy(&t, y + n - 8, 8);
        return ((p ^ q) | (r ^ t)) == 0;
    }
    if (n >= 4) {
        uint32_t p, q, r, t;
        __builtin_memcpy(&p, x, 4);
        __builtin_memcpy(&q, y, 4);
        __builtin_memcpy(&r, x + n - 4, 4);
        __builtin_memcpy(&t, y + n - 4, 4);
        return ((p ^ q) | (r ^ t)) == 0;
    }
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return 0;
    return 1;
}
/* Uniform double in [0, 1). */
static inline double rand_double(uint64_t *state)
{
    return (double)(rand_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* "an object", "an array", "a string", "an integer", "a number", "a boolean"
 * or "null": what a JSON value is, for "expected X, got Y" messages. */
struct json_t;
struct json_error_t;
const char *json_kind(const struct json_t *v);

/*
 * jansson's parser and printer, safe when memory runs out. jansson 2.14 is
 * not: a failed allocation inside json_dumps can leave a key out of the text
 * it returns, and one inside the parser's token buffer drops a byte and can
 * then write past the end of a string (heap corruption). These do the same
 * job as json_loads / json_loadb / json_loadf / json_dumps / json_dumpb, with
 * the same arguments and results, and:
 * - a print that met a failed allocation returns NULL (0 for dumpb): never
 *   text that is missing something;
 * - a parse that met one returns NULL with json_error_code(e) ==
 *   json_error_out_of_memory and the text "out of memory" (callers tell it
 *   from malformed input with json_is_oom). Before parsing it sets aside
 *   room (virtual memory, touched only after a failure) so that no
 *   allocation of jansson's token buffer ever fails, and stops feeding
 *   input once one has failed.
 * They work through an allocator hook that chains to the functions
 * installed before (json_set_alloc_funcs): json_guard_install() sets it
 * once per process; cp_db_open calls it, and each function here does too.
 * An application that installs its own jansson allocator after opening a
 * database replaces the hook: these then still never corrupt memory but
 * cannot see a failed allocation.
 */
void json_guard_install(void);
struct json_t *json_loads_checked(const char *s, size_t flags, struct json_error_t *e);
struct json_t *json_loadb_checked(const char *buf, size_t len, size_t flags,
                                  struct json_error_t *e);
/* Reads at most max_bytes of fp (the rest is an error, CP_ELIMIT-worthy). */
struct json_t *json_loadf_checked(FILE *fp, size_t max_bytes, size_t flags, struct json_error_t *e);
char *json_dumps_checked(const struct json_t *j, size_t flags);
size_t json_dumpb_checked(const struct json_t *j, char *buf, size_t size, size_t flags);
/* 1 if a parse failed for want of memory, not for what it was given. */
int json_is_oom(const struct json_error_t *e);

#endif /* CP_UTIL_H */
