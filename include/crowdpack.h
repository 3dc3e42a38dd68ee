/*
 * crowdpack.h — the public, embeddable C API of crowdpack.
 *
 * If a function does not appear in this file, it is not a published API.
 * Everything here is prefixed cp_.
 *
 * Return values. Every function that can fail returns a cp_status (CP_OK
 * == 0) and hands its results back through out-parameters, and takes a
 * `cp_error_t *err` last. `err` may be NULL; when not NULL it is filled on
 * failure with the details (what, where); after CP_OK its contents are
 * unspecified. On failure, pointer out-parameters are set to NULL;
 * counts and structs are unspecified unless the function says otherwise.
 * The exceptions, which cannot fail, are exactly:
 *   - destructors, which accept NULL and return nothing: cp_free,
 *     cp_result_free, cp_iter_close, cp_batch_abort, cp_ingest_result_clear;
 *   - pure accessors, which return their value directly: cp_strerror,
 *     cp_libversion, cp_format_version, cp_attr_type_name, cp_role_name,
 *     cp_result_count.
 * Statuses not listed under a function are still possible in general:
 * CP_EINVAL for a NULL handle or out-parameter, CP_ENOMEM, CP_EIO (and
 * CP_ECORRUPT, CP_ENOSPC for writes) from storage, CP_EREADONLY for a
 * write on a read-only handle, CP_EINTERNAL for a bug.
 *
 * Threading. A cp_db_t may be used from many threads at once: reads run
 * concurrently, writes are serialised inside the handle. The objects a
 * handle gives out (cp_result_t, cp_iter_t, cp_batch_t) belong to one
 * thread at a time: do not call into the same object from two threads at
 * once. cp_db_close must not run while another thread uses the handle.
 * Functions without a handle (cp_expr_to_json, cp_db_backup, ...) are safe
 * from any thread. The library keeps no global state.
 *
 * Ownership. Strings and JSON texts returned through `char **out` are
 * allocated by the library, NUL-terminated, and freed by the caller with
 * cp_free(). Objects returned through `T **out` are freed with their own
 * destructor, named where they are made. Pointers passed in are borrowed
 * for the duration of the call only; the library keeps no pointer to
 * caller memory after a call returns (callbacks and their `ud` only during
 * the call that takes them). `const char *` returned directly (cp_strerror,
 * cp_libversion, the *_name functions) are static: never freed.
 *
 * Extensible structs. A struct that may gain fields begins with
 * `size_t size`, which the caller sets to the sizeof the struct it was
 * compiled with: write `cp_db_stats_t s = CP_DB_STATS_INIT;` (or set
 * `.size = sizeof s` yourself). Any size of this or an earlier version of
 * the struct is accepted: an input struct (options) is read up to its
 * size, missing fields taken as 0; an output struct (stats) is written up
 * to its size only. A larger size (a caller built with a newer header) is
 * accepted when every byte past the library's own struct is zero in an
 * input struct (else CP_EINVAL: the caller asks for something this library
 * cannot do); in an output struct those bytes are set to zero. A size of 0
 * or below the first version is CP_EINVAL. New fields are only appended,
 * 8-byte aligned, so an old size never cuts one.
 */
#ifndef CROWDPACK_H
#define CROWDPACK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header. cp_libversion() gives the version of the
 * library actually linked, which may differ (a shared library upgraded
 * under a program): compare the two to detect it. */
#define CP_VERSION_STRING "0.1.0"

/* The library's version, "MAJOR.MINOR.PATCH" (static; never NULL). */
const char *cp_libversion(void);

/* ---------------------------------------------------------------- status */

/* Frozen numbers: never renumber, only append. */
typedef enum cp_status {
    CP_OK = 0,
    CP_ENOMEM = 1,     /* out of memory */
    CP_EINVAL = 2,     /* invalid argument or input (bad JSON, bad value) */
    CP_ENOTFOUND = 3,  /* unknown tag, attribute, crowd, user, key */
    CP_EEXIST = 4,     /* already exists */
    CP_ESYNTAX = 5,    /* expression syntax error (line:column in cp_error_t) */
    CP_ETYPE = 6,      /* value of the wrong type for an attribute */
    CP_ELOCKED = 7,    /* data directory held for writing by another process */
    CP_EVERSION = 8,   /* data directory written by an incompatible build */
    CP_EIO = 9,        /* I/O or storage failure */
    CP_ELIMIT = 10,    /* an input exceeds a size, depth or length limit */
    CP_ECYCLE = 11,    /* crowd references would form a cycle */
    CP_ECONFLICT = 12, /* operation conflicts with current state (e.g. tag has children) */
    CP_EAUTH = 13,     /* missing or unknown API key */
    CP_EPERM = 14,     /* key lacks the role for this operation */
    CP_EREADONLY = 15, /* write on a handle opened read-only */
    CP_EINTERNAL = 16, /* broken invariant; a bug */
    CP_ENOSPC = 17,    /* storage full: the write was not stored; reads still work
                          (HTTP 507 "storage_full"); writes resume when space returns */
    CP_ECORRUPT = 18,  /* damaged data: a checksum, framing or invariant check failed;
                          the message names the file, key or offset */
} cp_status;

/* Static English description of a status (never NULL; "unknown status"
 * for a number outside the enum). Thread-safe; cannot fail. */
const char *cp_strerror(cp_status st);

/*
 * Details of a failure. `message` is a complete human sentence naming what
 * and where ("line 3: attribute \"age\" of user \"u7\": expected int, got
 * string \"x\""). `line`/`column` are 1-based positions inside an
 * expression (CP_ESYNTAX, unknown names) or 0. `record` is the 1-based
 * line of an NDJSON input the error belongs to, or 0. `src_*` say where in
 * crowdpack's own source the error was raised (for bug reports).
 */
typedef struct cp_error {
    cp_status code;
    int line;
    int column;
    uint64_t record;
    char message[512];
    const char *src_file;
    const char *src_func;
    int src_line;
} cp_error_t;

/* Frees memory returned by the library through `char **` (strings, JSON
 * texts, keys). NULL is fine. Not for objects with their own destructor
 * (cp_result_free, cp_iter_close, cp_batch_abort, cp_db_close). */
void cp_free(void *p);

/* ------------------------------------------------------------ data dir */

typedef struct cp_db cp_db_t;

enum {
    CP_OPEN_CREATE = 1u << 0,   /* create the data directory if missing */
    CP_OPEN_READONLY = 1u << 1, /* no writes; does not take the writer lock */
};

typedef struct cp_open_options {
    size_t size;       /* sizeof(cp_open_options_t): CP_OPEN_OPTIONS_INIT sets it */
    unsigned flags;    /* CP_OPEN_* */
    uint64_t map_size; /* LMDB map size in bytes; 0 = default (64 GiB) */
    int threads;       /* query threads; 0 = number of CPUs */
} cp_open_options_t;
/* clang-format off */
#define CP_OPEN_OPTIONS_INIT {.size = sizeof(cp_open_options_t)}
/* clang-format on */

/*
 * Opens (or with CP_OPEN_CREATE creates) a data directory and loads its
 * index into memory, replaying the write-ahead log. `opts` may be NULL
 * (defaults: no create, read-write); its .size must be set
 * (CP_OPEN_OPTIONS_INIT). Errors: CP_ENOTFOUND (no directory and no
 * CP_OPEN_CREATE), CP_ELOCKED (another process holds the writer lock;
 * the message names its pid), CP_EVERSION (another format version),
 * CP_ECORRUPT (a damaged write-ahead log: see cp_db_recover), CP_EIO,
 * CP_EINVAL (bad options). On success *out is owned by the caller and
 * must be closed with cp_db_close(); on failure *out is NULL. Safe to
 * call from any thread; one directory is opened for writing once per
 * process (a second handle gets CP_ELOCKED).
 */
cp_status cp_db_open(const char *dir, const cp_open_options_t *opts, cp_db_t **out,
                     cp_error_t *err);

/*
 * Checkpoints, stops the handle's threads, closes the data directory and
 * frees everything the handle owns; CP_OK for NULL. With a result
 * iterator (cp_iter_t) of the handle still open it is CP_ECONFLICT
 * (naming how many) and nothing is closed or freed: the handle stays
 * usable; close the iterators and call again. Results (cp_result_t) may
 * outlive the handle. Must not run while another thread uses the handle;
 * after CP_OK the handle is gone.
 */
cp_status cp_db_close(cp_db_t *db, cp_error_t *err);

/* The data directory format version this build reads and writes. Pure
 * accessor: cannot fail. */
uint32_t cp_format_version(void);

typedef struct cp_db_stats {
    size_t size;       /* sizeof(cp_db_stats_t): CP_DB_STATS_INIT sets it */
    uint64_t users;    /* live users */
    uint64_t ordinals; /* ordinals ever allocated (live + deleted) */
    uint64_t tags;
    uint64_t attributes;
    uint64_t crowds;
    uint64_t bitmap_bytes;    /* in-memory size of all bitmaps */
    uint64_t column_bytes;    /* in-memory per-user columns (geo coordinates, enum ids) */
    uint64_t disk_bytes;      /* size of the LMDB file */
    uint64_t queries;         /* counts/evaluations served since open */
    uint64_t writes;          /* committed write batches since open */
    uint64_t compact_pending; /* user deletions whose bytes data.mdb still holds in free
                                 pages, until the background compaction runs (it waits
                                 for open exports and other processes reading data.mdb) */
    uint64_t compactions;     /* compactions of data.mdb done since open */
} cp_db_stats_t;
/* clang-format off */
#define CP_DB_STATS_INIT {.size = sizeof(cp_db_stats_t)}
/* clang-format on */

/* Fills *out (its .size set: CP_DB_STATS_INIT) with a reading taken under
 * the read lock. CP_EINVAL for a NULL or wrongly sized *out, CP_EIO for a
 * failed handle. Thread-safe. */
cp_status cp_db_stats(cp_db_t *db, cp_db_stats_t *out, cp_error_t *err);

/*
 * Rewrites data.mdb now with only its live pages (what a deletion leaves
 * to a background compaction), under the write lock. CP_ECONFLICT while
 * result iterators (exports) of this handle are open, CP_ELOCKED (naming
 * the pid) while another process has data.mdb open; nothing changes then.
 */
cp_status cp_db_compact(cp_db_t *db, cp_error_t *err);

/*
 * Backs up the data directory `dir` into `out` (a new or empty directory),
 * also while a server writes `dir`: a consistent copy of data.mdb (live
 * pages only) plus the write-ahead log segments holding every write
 * acknowledged before the call began and not in that copy. `out` is itself
 * a data directory; opening it replays those segments. `info` may be NULL;
 * else its .size must be set (CP_BACKUP_INFO_INIT). Errors: CP_EEXIST
 * (`out` not empty), CP_ENOTFOUND or CP_EIO (`dir` is not a data
 * directory, or copying failed), CP_ENOSPC. Takes no handle: safe from any
 * thread, and beside a process that has `dir` open.
 */
typedef struct cp_backup_info {
    size_t size;           /* sizeof(cp_backup_info_t): CP_BACKUP_INFO_INIT sets it */
    uint64_t data_bytes;   /* bytes of the copied data.mdb */
    uint64_t wal_segments; /* WAL segments copied */
    uint64_t wal_bytes;
    uint64_t wal_lsn; /* last WAL record the copy of data.mdb holds */
} cp_backup_info_t;
/* clang-format off */
#define CP_BACKUP_INFO_INIT {.size = sizeof(cp_backup_info_t)}
/* clang-format on */
cp_status cp_db_backup(const char *dir, const char *out, cp_backup_info_t *info, cp_error_t *err);
/*
 * Restores a backup made by cp_db_backup into the data directory `dir`.
 * Refuses a `dir` holding anything unless `force` (CP_EEXIST), and always
 * one a process has open for writing (CP_ELOCKED). The restored directory
 * is opened once (replaying the WAL) before CP_OK. Takes no handle.
 */
cp_status cp_db_restore(const char *backup, const char *dir, int force, cp_error_t *err);

/*
 * Health of an open handle, for /healthz, /readyz and metrics. `writable`
 * is 1 only when a write would be accepted now; otherwise `reason` says
 * why: "read_only" (opened read-only), "storage_full" (the last write
 * failed with CP_ENOSPC and space has not returned), "wal_error" (the
 * write-ahead log failed), "failed" (the handle must be reopened). The
 * rest are readings taken by the call. A failed handle still answers
 * (CP_OK, readable 0): only a NULL handle or a NULL or wrongly sized *out
 * (.size: CP_HEALTH_INIT) is an error (CP_EINVAL). Thread-safe; takes no
 * lock, so it answers while a long write runs.
 */
typedef struct cp_health {
    size_t size;  /* sizeof(cp_health_t): CP_HEALTH_INIT sets it */
    int readable; /* reads answer (1 unless the handle failed) */
    int writable;
    char reason[32];           /* "" when writable */
    char detail[256];          /* a sentence for operators ("" when writable) */
    uint64_t wal_bytes;        /* bytes of write-ahead log segments on disk */
    uint64_t wal_records;      /* records applied but not yet checkpointed */
    int64_t checkpoint_age_ms; /* since the last checkpoint (-1: never/unknown) */
    uint64_t disk_free_bytes;  /* free space for the data directory (statvfs) */
    uint64_t disk_used_bytes;  /* allocated bytes of data.mdb and the WAL (st_blocks) */
} cp_health_t;
/* clang-format off */
#define CP_HEALTH_INIT {.size = sizeof(cp_health_t)}
/* clang-format on */

cp_status cp_db_health(cp_db_t *db, cp_health_t *out, cp_error_t *err);

/* ---------------------------------------------------------------- tags */

/*
 * Tags form a tree addressed by slug paths ("interest/finance/consulting").
 * A slug segment is [a-z0-9_-]+ (ASCII lower case); display names and
 * descriptions are any UTF-8. A tag's members include its descendants'.
 * A bad path, name or description is CP_EINVAL naming it; an unknown
 * path CP_ENOTFOUND. Writes are durable when CP_OK is returned.
 */

/* Creates a tag; missing parents are created (name = slug). CP_EEXIST if
 * the path exists. `name` and `description` may be NULL. */
cp_status cp_tag_create(cp_db_t *db, const char *path, const char *name, const char *description,
                        cp_error_t *err);

/*
 * Renames and/or moves a tag. `new_path` (NULL = keep) gives the tag a new
 * slug path, moving its whole subtree and keeping its members; the new
 * parent must exist. `name` / `description`: NULL = keep.
 */
cp_status cp_tag_update(cp_db_t *db, const char *path, const char *new_path, const char *name,
                        const char *description, cp_error_t *err);

/* Deletes a tag. A tag with children needs `recursive` (else CP_ECONFLICT);
 * crowds whose expressions reference it make it CP_ECONFLICT too. */
cp_status cp_tag_delete(cp_db_t *db, const char *path, int recursive, cp_error_t *err);

/* Bulk load {"tags":[{"path":..,"name":..,"description":..}, ...]}: creates
 * missing tags, updates names/descriptions of existing ones; all or nothing
 * (CP_EINVAL naming the first bad entry, nothing applied). `json` is `len`
 * bytes, borrowed (need not be NUL-terminated). */
cp_status cp_taxonomy_load_json(cp_db_t *db, const char *json, size_t len, cp_error_t *err);

/*
 * JSON of the tag tree under `root` (NULL or "" = whole tree):
 * {"tags":[{"path","name","description","level","parent","count","children":N}...]}
 * in depth-first order; `count` is the member count including descendants.
 * CP_ENOTFOUND for an unknown root. *out: caller frees with cp_free (as
 * for every `char **out` of this header).
 */
cp_status cp_tags_json(cp_db_t *db, const char *root, char **out, cp_error_t *err);

/* JSON of one tag:
 * {"path","name","description","level","parent","count","direct_count","children":[paths]} */
cp_status cp_tag_json(cp_db_t *db, const char *path, char **out, cp_error_t *err);

/*
 * Tags whose slug path, display name or display path (names of the tag
 * and its ancestors joined by '/', e.g. 兴趣/金融/理财) contains `q`: a
 * substring match after NFC, ASCII letters in any case. At most `limit`
 * (0 or above CP_TAGS_SEARCH_MAX: CP_TAGS_SEARCH_MAX) in depth-first order:
 * {"q","tags":[tag objects as in cp_tags_json, with "display_path"],
 *  "matched":N,"truncated":bool}. Caller frees *out with cp_free.
 * Everywhere a tag path is taken (cp_tag_json, cp_tags_json's root,
 * tag:PATH in expressions) a display path also finds the tag when no slug
 * path matches; one naming several tags is CP_EINVAL listing them.
 */
#define CP_TAGS_SEARCH_MAX 1000
cp_status cp_tags_search_json(cp_db_t *db, const char *q, size_t limit, char **out,
                              cp_error_t *err);

/* ----------------------------------------------------------- attributes */

typedef enum cp_attr_type {
    CP_ATTR_INT = 1,       /* int64; range-encoded bit-sliced index */
    CP_ATTR_ENUM = 2,      /* small set of strings; bitmap per value */
    CP_ATTR_STRING = 3,    /* any string; bitmap per value */
    CP_ATTR_BOOL = 4,      /* true/false; bitmap per value */
    CP_ATTR_TIMESTAMP = 5, /* ISO 8601 UTC, seconds; bit-sliced index */
    CP_ATTR_GEO = 6,       /* [lat, lon]; geohash cells + exact coordinates */
} cp_attr_type;

/* "int", "enum", ... (static); NULL for an unknown value. Pure accessor:
 * cannot fail. */
const char *cp_attr_type_name(cp_attr_type t);

/* Declares an attribute. Names are [a-z_][a-z0-9_]* (else CP_EINVAL).
 * Redeclaring with the same type is a no-op; with another type
 * CP_ECONFLICT. Durable. */
cp_status cp_attr_define(cp_db_t *db, const char *name, cp_attr_type type, cp_error_t *err);

/* Schema load {"attributes":[{"name":"age","type":"int"},...]}; all or
 * nothing (CP_EINVAL or CP_ECONFLICT naming the entry, nothing applied). */
cp_status cp_schema_load_json(cp_db_t *db, const char *json, size_t len, cp_error_t *err);

/* {"attributes":[{"name","type","count","values":N}]} */
cp_status cp_schema_json(cp_db_t *db, char **out, cp_error_t *err);

/*
 * The values of an ENUM, STRING or BOOL attribute with their user counts,
 * largest first, at most `limit` (0 = 100, capped at 100,000):
 * {"attribute","type","distinct":N,"users":N (with a value),
 *  "values":[{"value","count"}],"truncated":bool,
 *  "aliases":[{"alias","value"}]}. CP_ENOTFOUND for an unknown attribute,
 * CP_ETYPE for one without a value dictionary. Caller frees with cp_free.
 */
cp_status cp_attr_values_json(cp_db_t *db, const char *name, size_t limit, char **out,
                              cp_error_t *err);

/*
 * Makes `alias` another spelling of `value` of an ENUM or STRING attribute
 * (广州 = guangzhou): from now on intake stores it as `value` and
 * expressions read it as `value`. If `alias` was itself stored as a value,
 * its users move to `value` and it stops being a value of its own. `value`
 * must already be a value (CP_ENOTFOUND with suggestions otherwise);
 * alias == value, or an alias that is the target of other aliases, is
 * CP_EINVAL. Replacing an existing alias is allowed. Durable.
 */
cp_status cp_attr_alias_set(cp_db_t *db, const char *name, const char *alias, const char *value,
                            cp_error_t *err);
/* Removes an alias (CP_ENOTFOUND if there is none). Users already stored
 * under the value keep it. */
cp_status cp_attr_alias_remove(cp_db_t *db, const char *name, const char *alias, cp_error_t *err);

/* ---------------------------------------------------------------- users */

/*
 * One user as a JSON object (one NDJSON line):
 *   {"id":"u1","attrs":{"age":31,"gender":"female","loc":[23.02,113.12]},
 *    "tags":["interest/finance/consulting"]}
 * Attributes given overwrite (null removes the value); tags given are added.
 * Unknown attributes and tags, and values of the wrong type, are errors
 * naming the user, attribute and value; nothing of a bad line is applied.
 */
cp_status cp_user_upsert_json(cp_db_t *db, const char *json, size_t len, cp_error_t *err);

/* Removes tags from a user: each tag and every tag below it the user holds
 * directly, so the user no longer matches tag:PATH. `paths` is an array
 * of `n` borrowed strings. Unknown user or tag: CP_ENOTFOUND (nothing
 * removed). */
cp_status cp_user_remove_tags(cp_db_t *db, const char *id, const char *const *paths, size_t n,
                              cp_error_t *err);

/* Deletes a user completely: every bitmap, column and the id dictionary.
 * CP_ENOTFOUND for an unknown id. Open iterators skip the user from now
 * on. */
cp_status cp_user_delete(cp_db_t *db, const char *id, cp_error_t *err);

/* {"id","ordinal","attrs":{...},"tags":[direct tags],"crowds":[names]};
 * CP_ENOTFOUND for an unknown id. */
cp_status cp_user_json(cp_db_t *db, const char *id, char **out, cp_error_t *err);

typedef struct cp_load_stats {
    size_t size;    /* sizeof(cp_load_stats_t): CP_LOAD_STATS_INIT sets it */
    uint64_t lines; /* lines read (blank lines included) */
    uint64_t users_created;
    uint64_t users_updated;
    uint64_t tags_assigned; /* (user, tag) pairs newly set */
    uint64_t rejected;      /* bad lines, not applied */
    uint64_t bytes;         /* bytes consumed */
} cp_load_stats_t;
/* clang-format off */
#define CP_LOAD_STATS_INIT {.size = sizeof(cp_load_stats_t)}
/* clang-format on */

/* Called for each rejected line, with its 1-based number in err->record.
 * `err` is borrowed for the call. Called on the loading thread; must not
 * call back into the same handle. */
typedef void (*cp_reject_fn)(void *ud, const cp_error_t *err);
/* Called now and then during a load with bytes consumed so far (same
 * rules as cp_reject_fn). */
typedef void (*cp_progress_fn)(void *ud, uint64_t bytes_done, uint64_t lines_done);

enum {
    CP_LOAD_STRICT = 1u << 0, /* the first bad line aborts the load; nothing is applied */
};

typedef struct cp_load_options {
    size_t size;                /* sizeof(cp_load_options_t): CP_LOAD_OPTIONS_INIT sets it */
    unsigned flags;             /* CP_LOAD_* */
    cp_reject_fn on_reject;     /* may be NULL */
    cp_progress_fn on_progress; /* may be NULL */
    void *ud;
    uint64_t batch_lines; /* lines per committed batch; 0 = 50,000 (ignored when STRICT) */
} cp_load_options_t;
/* clang-format off */
#define CP_LOAD_OPTIONS_INIT {.size = sizeof(cp_load_options_t)}
/* clang-format on */

/*
 * Streams NDJSON users from `in` in constant memory (lines up to 1 MiB).
 * Without CP_LOAD_STRICT bad lines are reported and skipped and the others
 * committed in batches; with it, the load is all or nothing (held in
 * memory until the end, so meant for request bodies, not huge files).
 * `opts` and `stats` may be NULL; when given, their .size must be set
 * (CP_LOAD_OPTIONS_INIT, CP_LOAD_STATS_INIT). *stats is filled also on
 * failure (what was read and committed before it). Errors: CP_EINVAL
 * (with CP_LOAD_STRICT: the first bad line, err->record its number),
 * CP_ELIMIT (a line over 1 MiB), CP_EIO (reading `in`). `in` is read, not
 * closed.
 */
cp_status cp_load_ndjson(cp_db_t *db, FILE *in, const cp_load_options_t *opts,
                         cp_load_stats_t *stats, cp_error_t *err);
/* Same over a memory buffer. */
cp_status cp_load_ndjson_buf(cp_db_t *db, const char *buf, size_t len,
                             const cp_load_options_t *opts, cp_load_stats_t *stats,
                             cp_error_t *err);

/*
 * Fast binary batch for generators and importers: no JSON. Build with
 * cp_batch_begin, add users, then commit (all or nothing) or abort.
 * cp_batch_user starts a user (created if new); the following tag and attr
 * calls apply to it (CP_EINVAL before any cp_batch_user; CP_ETYPE for a
 * value of the wrong type; CP_ENOTFOUND for an unknown handle). Tag and
 * attribute handles are looked up once (cp_tag_handle, cp_attr_handle)
 * and stay valid while the tag or attribute exists. The batch is held in
 * memory until commit. *out of cp_batch_begin is owned by the caller and
 * freed by exactly one of cp_batch_commit (whatever it returns) or
 * cp_batch_abort. One thread at a time per batch; the handle must
 * outlive it.
 */
typedef struct cp_batch cp_batch_t;
cp_status cp_batch_begin(cp_db_t *db, cp_batch_t **out, cp_error_t *err);
cp_status cp_batch_user(cp_batch_t *b, const char *id, cp_error_t *err);
cp_status cp_batch_tag(cp_batch_t *b, int32_t tag_handle, cp_error_t *err);
cp_status cp_batch_int(cp_batch_t *b, int32_t attr_handle, int64_t v, cp_error_t *err);
cp_status cp_batch_str(cp_batch_t *b, int32_t attr_handle, const char *v, cp_error_t *err);
cp_status cp_batch_bool(cp_batch_t *b, int32_t attr_handle, int v, cp_error_t *err);
cp_status cp_batch_geo(cp_batch_t *b, int32_t attr_handle, double lat, double lon, cp_error_t *err);
cp_status cp_batch_commit(cp_batch_t *b, cp_error_t *err); /* frees b */
void cp_batch_abort(cp_batch_t *b);                        /* frees b; NULL fine */
/* Handles for the batch calls; CP_ENOTFOUND for unknown names. A handle
 * is a number (no ownership), valid while its tag or attribute exists. */
cp_status cp_tag_handle(cp_db_t *db, const char *path, int32_t *out, cp_error_t *err);
cp_status cp_attr_handle(cp_db_t *db, const char *name, int32_t *out, cp_error_t *err);

/* ---------------------------------------------------------- expressions */

/* Limits on expressions (text form length and nesting depth). */
#define CP_EXPR_MAX_LEN (64 * 1024)
#define CP_EXPR_MAX_DEPTH 64

/* Parses an expression (text) and returns its JSON tree. Syntax only: names
 * are not resolved. CP_ESYNTAX with line:column in err, CP_ELIMIT past
 * CP_EXPR_MAX_LEN or CP_EXPR_MAX_DEPTH. Takes no handle. */
cp_status cp_expr_to_json(const char *expr, char **json_out, cp_error_t *err);
/* Parses a JSON tree (`len` bytes) and returns the canonical text form.
 * CP_EINVAL for a malformed tree. Takes no handle. */
cp_status cp_expr_from_json(const char *json, size_t len, char **expr_out, cp_error_t *err);

/* Counts the users matching an expression (text form). Unknown tags,
 * attributes and crowds are CP_ENOTFOUND with line:column. */
cp_status cp_count(cp_db_t *db, const char *expr, uint64_t *count, cp_error_t *err);
/* Same with the JSON tree form. */
cp_status cp_count_json(cp_db_t *db, const char *json_tree, size_t len, uint64_t *count,
                        cp_error_t *err);

/* A set of users, detached from the database (a snapshot): later writes
 * do not change it, and it may outlive its handle (only cp_iter_open
 * needs the handle). */
typedef struct cp_result cp_result_t;

/* Evaluates an expression into a new result (errors as cp_count). *out is
 * owned by the caller: free with cp_result_free. */
cp_status cp_eval(cp_db_t *db, const char *expr, cp_result_t **out, cp_error_t *err);
cp_status cp_eval_json(cp_db_t *db, const char *json_tree, size_t len, cp_result_t **out,
                       cp_error_t *err);
/* Users in the result. Pure accessor: cannot fail (0 for NULL). */
uint64_t cp_result_count(const cp_result_t *r);
void cp_result_free(cp_result_t *r); /* NULL fine */

/*
 * Iterates a result's user ids in ordinal order. `*id` is valid until the
 * next call on the same iterator (or its close). Returns CP_OK with *id
 * set, or CP_OK with *id == NULL at the end. Users deleted after the
 * snapshot are skipped.
 *
 * Lifetime: cp_iter_open copies the result (the result may be freed at
 * once) and holds an LMDB read transaction on the handle until
 * cp_iter_close. That transaction pins the snapshot of data.mdb it began
 * on: pages freed by later writes cannot be reused while it is open, so
 * data.mdb grows under a long-lived iterator and deleted users' bytes stay
 * on disk; cp_db_compact answers CP_ECONFLICT and background compaction
 * waits. Close iterators promptly. Every iterator must be closed before
 * its handle: cp_db_close with one open is CP_ECONFLICT and closes
 * nothing. *out is owned by the caller (cp_iter_close, NULL fine); one
 * thread at a time per iterator.
 */
typedef struct cp_iter cp_iter_t;
cp_status cp_iter_open(cp_db_t *db, const cp_result_t *r, cp_iter_t **out, cp_error_t *err);
cp_status cp_iter_next(cp_iter_t *it, const char **id, cp_error_t *err);
void cp_iter_close(cp_iter_t *it); /* NULL fine */

/* ---------------------------------------------------------------- crowds */

typedef enum cp_crowd_kind {
    CP_CROWD_STATIC = 1,  /* snapshot: members fixed until refreshed */
    CP_CROWD_DYNAMIC = 2, /* re-evaluated after every write */
} cp_crowd_kind;

/* Names are [A-Za-z0-9_-] and letters of any script (广州理财), 1 to 128
 * bytes (else CP_EINVAL). `expr` is the text form; `description` may be
 * NULL. CP_EEXIST for a taken name, CP_ECYCLE when the expression would
 * reference the crowd itself, errors of cp_count for the expression. */
cp_status cp_crowd_create(cp_db_t *db, const char *name, const char *expr, cp_crowd_kind kind,
                          const char *description, cp_error_t *err);
cp_status cp_crowd_create_json(cp_db_t *db, const char *name, const char *json_tree, size_t len,
                               cp_crowd_kind kind, const char *description, cp_error_t *err);
/*
 * Creates a crowd from a specification in ONE commit: the crowd, its
 * members, its as-of day and its schedule and expiry (`settings`, the
 * object cp_crowd_settings_json takes) exist together or not at all; a
 * crash or a bad setting never leaves a crowd without what was asked for.
 * Set `size` to sizeof(cp_crowd_spec_t) (later versions may append fields).
 * Exactly one of `expression` (text) and `tree` (JSON, `tree_len` bytes).
 * `kind` 0 = static. `as_of` (static crowds only) evaluates as of that day,
 * now and at every later refresh; the crowd's view shows it. Errors: those
 * of cp_crowd_create and of cp_crowd_settings_json; nothing is written then.
 */
typedef struct cp_crowd_spec {
    size_t size;
    const char *name;
    const char *expression;
    const char *tree;
    size_t tree_len;
    cp_crowd_kind kind;
    const char *description; /* may be NULL */
    const char *as_of;       /* NULL or "": current data */
    const char *settings;    /* NULL: none */
    size_t settings_len;
} cp_crowd_spec_t;
cp_status cp_crowd_create_spec(cp_db_t *db, const cp_crowd_spec_t *spec, cp_error_t *err);
/* Replaces a crowd's expression (cycles: CP_ECYCLE); bumps its version. */
cp_status cp_crowd_update(cp_db_t *db, const char *name, const char *expr, cp_error_t *err);
/* Re-evaluates a crowd's expression now; bumps its version. */
cp_status cp_crowd_refresh(cp_db_t *db, const char *name, cp_error_t *err);
/* Deletes a crowd; CP_ENOTFOUND for an unknown one, CP_ECONFLICT if other
 * crowds reference it (their names in the message). */
cp_status cp_crowd_delete(cp_db_t *db, const char *name, cp_error_t *err);
/* {"crowds":[{name,kind,expression,size,version,created,updated,description}]} */
cp_status cp_crowds_json(cp_db_t *db, char **out, cp_error_t *err);
/* {name,kind,expression,tree,size,version,created,updated,description,references} */
cp_status cp_crowd_json(cp_db_t *db, const char *name, char **out, cp_error_t *err);
/* Up to n member ids, uniformly at random (deterministic for a seed):
 * {"crowd":..,"size":..,"ids":[...]} */
cp_status cp_crowd_sample_json(cp_db_t *db, const char *name, uint64_t n, uint64_t seed, char **out,
                               cp_error_t *err);
/*
 * Keeping crowds true (docs/api.md "Crowd refresh, schedule and history").
 * Dynamic crowds follow every write in dependency order (a refresh of any
 * crowd reaches the dynamic crowds built on it in the same commit); static
 * crowds change when refreshed, by hand or on a schedule.
 *
 * cp_crowd_settings_json sets any of {"refresh": "daily HH:MM" | null,
 * "timezone": "Asia/Shanghai" | "+08:00" | null (null: the server's),
 * "expire_after_days": N (0 = never), "frozen": false (thaws)}: CP_EINVAL
 * naming the field, CP_ENOTFOUND. A schedule first runs at its next time.
 * A crowd unused (not evaluated, exported, sampled or referenced) for
 * expire_after_days is frozen: kept, but not re-evaluated or refreshed on
 * schedule until refreshed by hand.
 *
 * cp_crowd_history_json: {"crowd","kind","size","version","points":
 * [{"time" (ms),"size","version"}]}: a point per refresh that changed the
 * crowd (refreshes within a minute share one), the last 400. *out: cp_free.
 *
 * cp_crowds_tick runs what is due at now_ms (scheduled refreshes, expiry)
 * and stores the use marks; *ran (may be NULL) = crowds refreshed or
 * frozen. The server calls it every minute.
 */
cp_status cp_crowd_settings_json(cp_db_t *db, const char *name, const char *json, size_t len,
                                 cp_error_t *err);
cp_status cp_crowd_history_json(cp_db_t *db, const char *name, char **out, cp_error_t *err);
cp_status cp_crowds_tick(cp_db_t *db, int64_t now_ms, int *ran, cp_error_t *err);
/* A crowd's members as a result (snapshot); *out: cp_result_free.
 * CP_ENOTFOUND for an unknown crowd. */
cp_status cp_crowd_members(cp_db_t *db, const char *name, cp_result_t **out, cp_error_t *err);

typedef enum cp_export_format { CP_EXPORT_NDJSON = 1, CP_EXPORT_CSV = 2 } cp_export_format;
/* Receives export output in pieces (`buf` borrowed for the call); returns
 * non-zero to stop, which makes the export CP_EIO. Must not call back into
 * the same handle to write (the export holds an iterator: see cp_iter_t). */
typedef int (*cp_write_fn)(void *ud, const char *buf, size_t len);
/* Streams a crowd's member ids: NDJSON {"id":"..."} lines or CSV with an
 * "id" header. Constant memory. CP_ENOTFOUND for an unknown crowd. Holds
 * an iterator (an LMDB read transaction) for the whole call. */
cp_status cp_crowd_export(cp_db_t *db, const char *name, cp_export_format fmt, cp_write_fn write,
                          void *ud, cp_error_t *err);

/* -------------------------------------------------------------- API keys */

typedef enum cp_role { CP_ROLE_READ = 1, CP_ROLE_WRITE = 2, CP_ROLE_ADMIN = 3 } cp_role;
/* "read", "write", "admin" (static); NULL for another value. Pure
 * accessor: cannot fail. */
const char *cp_role_name(cp_role r);

/* Creates a key; only its salted hash is stored. *key_out (caller frees
 * with cp_free; wipe it first, it is a secret) is shown once. `label` may
 * be NULL. CP_EINVAL for a bad role or label. */
cp_status cp_key_create(cp_db_t *db, cp_role role, const char *label, char **key_out,
                        cp_error_t *err);
/* Looks a presented key up (constant-time compare): CP_OK with its role
 * in *role_out (may be NULL), or CP_EAUTH for a malformed, unknown or
 * revoked key (NULL included; the message does not say which). `key` is
 * borrowed. Thread-safe; never touches the disk. */
cp_status cp_key_check(cp_db_t *db, const char *key, cp_role *role_out, cp_error_t *err);
/* Number of keys configured into *n (0: the server runs without auth).
 * CP_EINVAL for a NULL handle or n. */
cp_status cp_key_count(cp_db_t *db, uint64_t *n, cp_error_t *err);
/* {"keys":[{"id","role","label","created"}]} (never the key) */
cp_status cp_keys_json(cp_db_t *db, char **out, cp_error_t *err);
/* Revokes a key by its id (from cp_keys_json); CP_ENOTFOUND if none. */
cp_status cp_key_revoke(cp_db_t *db, const char *key_id, cp_error_t *err);

/* ----------------------------------------------------------- event intake
 *
 * Segment-compatible events (docs/intake.md): identify, track, page,
 * screen, group, alias, one at a time or in a {"batch":[...]} envelope.
 * A request is validated whole (nothing of an invalid request is applied),
 * its events are written to the write-ahead log and applied in memory, and
 * the call returns only once the log record is durable (fsync; concurrent
 * callers share one). Checkpoints move the applied state into LMDB.
 * Retries are harmless: events whose messageId was seen within the dedup
 * window are skipped (counted in `duplicates`).
 */
typedef enum cp_event_type {
    CP_EVENT_BATCH = 0, /* {"batch":[...]} (/v1/batch) */
    CP_EVENT_IDENTIFY = 1,
    CP_EVENT_TRACK = 2,
    CP_EVENT_PAGE = 3,
    CP_EVENT_SCREEN = 4,
    CP_EVENT_GROUP = 5,
    CP_EVENT_ALIAS = 6,
} cp_event_type;

typedef struct cp_ingest_result {
    size_t size;         /* sizeof(cp_ingest_result_t): CP_INGEST_RESULT_INIT sets it */
    uint64_t events;     /* events in the request */
    uint64_t applied;    /* applied (events - duplicates) */
    uint64_t duplicates; /* skipped: messageId seen within the window */
    uint64_t users_created;
    uint64_t merges; /* identity merges the request caused */
    uint64_t lsn;    /* its write-ahead log record (0: nothing to log) */
    /* Rejected events, [{"index":i,"reason":"..."},...]: on CP_EINVAL, and
     * on CP_OK when some events of a batch were rejected and the others
     * applied (caller frees with cp_free or cp_ingest_result_clear); else NULL. */
    char *errors_json;
    uint64_t rejected; /* events rejected (structural faults); not applied */
    uint64_t warnings; /* values not used on applied events */
    /* [{"index":i,"field":"traits.email","reason":"placeholder"},...] or
     * NULL: reasons "placeholder", "blocklisted", "invalid" (cannot be
     * normalised or not text), "type_mismatch" (kept unindexed). Caller
     * frees (cp_ingest_result_clear). */
    char *warnings_json;
} cp_ingest_result_t;
/* clang-format off */
#define CP_INGEST_RESULT_INIT {.size = sizeof(cp_ingest_result_t)}
/* clang-format on */

/* Ingests one Segment request body (limits: 32 KB per event, 500 KB per
 * batch: CP_ELIMIT). `res` may be NULL; else its .size must be set
 * (CP_INGEST_RESULT_INIT) and, on CP_OK and CP_EINVAL, it owns the texts
 * it points to until cp_ingest_result_clear. Durable when CP_OK is
 * returned. Thread-safe: concurrent callers are grouped into one log
 * write. */
cp_status cp_ingest_segment(cp_db_t *db, cp_event_type type, const char *json, size_t len,
                            cp_ingest_result_t *res, cp_error_t *err);
/* Frees errors_json and warnings_json and zeroes the struct but its .size
 * (ready for the next call). Destructor: NULL fine, cannot fail. */
void cp_ingest_result_clear(cp_ingest_result_t *res);

/*
 * cp_ingest_segment with flags. Lenient by default: a batch applies its
 * valid events and lists the rejected ones in res->errors_json (CP_OK
 * unless none was valid); values that cannot be used (placeholder or
 * unnormalisable identifiers, traits that do not fit their attribute) are
 * warnings, the event still applied. CP_INGEST_STRICT: a request with any
 * rejected event is refused whole (CP_EINVAL, nothing applied); warnings
 * stay warnings.
 */
enum { CP_INGEST_STRICT = 1u << 0 };
cp_status cp_ingest_segment_ex(cp_db_t *db, cp_event_type type, const char *json, size_t len,
                               unsigned flags, cp_ingest_result_t *res, cp_error_t *err);

/* What intake left out since the handle was opened (for /metrics): values
 * not used, by reason, and events rejected. Fails only for a NULL handle
 * or a NULL or wrongly sized *out (.size: CP_INTAKE_COUNTERS_INIT):
 * CP_EINVAL. Thread-safe (atomic counters, no lock). */
typedef struct cp_intake_counters {
    size_t size;                 /* sizeof(cp_intake_counters_t): CP_INTAKE_COUNTERS_INIT sets it */
    uint64_t warn_placeholder;   /* "", "n/a", "null", all-zero ad ids, ... */
    uint64_t warn_blocklisted;   /* the intake config's identity.blocklist */
    uint64_t warn_invalid;       /* identifiers that cannot be normalised */
    uint64_t warn_type_mismatch; /* traits kept unindexed */
    uint64_t rejected_events;
} cp_intake_counters_t;
/* clang-format off */
#define CP_INTAKE_COUNTERS_INIT {.size = sizeof(cp_intake_counters_t)}
/* clang-format on */
cp_status cp_intake_counters(cp_db_t *db, cp_intake_counters_t *out, cp_error_t *err);

/* Moves everything applied so far into LMDB and trims the write-ahead log
 * (also done periodically and on close). CP_ENOSPC when the disk is full
 * (nothing lost: the log still holds the writes), CP_EIO. */
cp_status cp_checkpoint(cp_db_t *db, cp_error_t *err);

/*
 * Bulk import of a file (plain or gzip): NDJSON Segment events, or CSV with
 * a column mapping (JSON, docs/intake.md) or a built-in preset
 * ("online-retail"). Streams in constant memory; bad lines go to on_reject
 * (err->record = line) and are skipped. Each batch commits with a record of
 * the content imported so far (a hash of the uncompressed bytes up to
 * there) in the same transaction. A later run on any file whose
 * uncompressed content starts with an imported range — the same file
 * grown by appended rows, a renamed, moved or gzipped copy, an interrupted
 * run — imports only what follows it (stats->resumed_at_offset); a file
 * imported whole is not imported again (stats->already_done) unless
 * CP_IMPORT_RESTART. With CP_IMPORT_DEDUP_ROWS, rows without a message id
 * get one from their content and ordinal among identical rows,
 * deduplicated like messageIds within the dedup window (for files that
 * overlap without being prefixes of one another). An
 * unterminated last line of a plain file is held back (stats->held_back)
 * until completed, unless CP_IMPORT_FINAL.
 */
typedef enum cp_import_format { CP_IMPORT_NDJSON = 1, CP_IMPORT_CSV = 2 } cp_import_format;
enum { CP_IMPORT_RESTART = 1u << 0, CP_IMPORT_FINAL = 1u << 1, CP_IMPORT_DEDUP_ROWS = 1u << 2 };
typedef struct cp_import_options {
    size_t size; /* sizeof(cp_import_options_t): CP_IMPORT_OPTIONS_INIT sets it */
    cp_import_format format;
    const char *mapping_json; /* CSV: a mapping document, or NULL with preset */
    size_t mapping_len;
    const char *preset;         /* CSV: "online-retail" */
    unsigned flags;             /* CP_IMPORT_* */
    cp_reject_fn on_reject;     /* may be NULL */
    cp_progress_fn on_progress; /* bytes of the (compressed) file read, lines */
    void *ud;
    uint64_t batch_lines; /* 0 = 50,000 */
} cp_import_options_t;
/* clang-format off */
#define CP_IMPORT_OPTIONS_INIT {.size = sizeof(cp_import_options_t)}
/* clang-format on */
typedef struct cp_import_stats {
    size_t size;      /* sizeof(cp_import_stats_t): CP_IMPORT_STATS_INIT sets it */
    uint64_t lines;   /* lines (CSV records) read in this run */
    uint64_t events;  /* events applied */
    uint64_t skipped; /* rows the mapping skips (e.g. no CustomerID) */
    uint64_t rejected;
    uint64_t duplicates;
    uint64_t users_created;
    uint64_t merges;
    uint64_t resumed_at_line;   /* 0: started at the beginning */
    uint64_t file_bytes;        /* size of the file */
    int already_done;           /* the file had been imported completely before */
    uint64_t beh_updates;       /* behaviour index increments (one per series an event feeds) */
    uint64_t attr_updates;      /* attribute values written (traits, first_seen, last_seen) */
    uint64_t meas_updates;      /* event measure values updated */
    uint64_t resumed_at_offset; /* uncompressed bytes recognised as imported before */
    uint64_t held_back;         /* bytes of an unterminated last line left for later */
    uint64_t tags_assigned;     /* mapping "tags": memberships added (not already held) */
    uint64_t tags_unknown; /* mapping "tags": ids no dictionary knows, paths not in the taxonomy */
} cp_import_stats_t;
/* clang-format off */
#define CP_IMPORT_STATS_INIT {.size = sizeof(cp_import_stats_t)}
/* clang-format on */
/* `opts` is required (its .size set: CP_IMPORT_OPTIONS_INIT); `stats` may
 * be NULL, else its .size set (CP_IMPORT_STATS_INIT) and it is filled also
 * on failure. Errors: CP_ENOTFOUND (no such file, unknown preset),
 * CP_EINVAL (bad mapping, naming the field), CP_EIO (reading the file or a
 * damaged gzip stream), and those of the writes. Callbacks run on the
 * calling thread and must not call back into the handle. */
cp_status cp_import_file(cp_db_t *db, const char *path, const cp_import_options_t *opts,
                         cp_import_stats_t *stats, cp_error_t *err);

/* -------------------------------------------------------------- identity
 * Identifiers are TYPE + VALUE (user_id, anonymous_id, phone, email,
 * device_id, idfa, oaid, member_id, openid, unionid, configured others);
 * docs/identity.md has the normalisation, hashing and merge rules.
 */

/* {"user":{"id","ordinal"},"identifiers":[{"type","value","hashed"}],
 *  "attrs":{..},"traits":{..},"tags":[..],"crowds":[..],
 *  "lineage":[{"merge_id","time","survivor","absorbed","identifiers",
 *  "message_id","source","undone"}]}. CP_ENOTFOUND for an unknown one. */
cp_status cp_whois_json(cp_db_t *db, const char *type, const char *value, char **out,
                        cp_error_t *err);
/* Undoes a merge (docs/identity.md "Unmerge"); *out (may be NULL) gets
 * {"merge_id","survivor","restored"}. */
cp_status cp_unmerge(cp_db_t *db, uint64_t merge_id, char **out, cp_error_t *err);
/* Deletes the whole (merged) user an identifier belongs to: bitmaps,
 * indexes, dictionaries, lineage, the write-ahead log, and compacts the
 * data file so no byte of the user remains. */
cp_status cp_user_delete_by_identifier(cp_db_t *db, const char *type, const char *value,
                                       cp_error_t *err);

/* Unindexed traits and properties seen, with counts and example values:
 * {"traits":{key:{"count","examples":[..]}},"properties":{key:{"count",
 *  "indexed","examples"}}} */
cp_status cp_properties_json(cp_db_t *db, char **out, cp_error_t *err);
/* Event names with counts: {"events":[{"name","count","users"}]} */
cp_status cp_events_json(cp_db_t *db, char **out, cp_error_t *err);

/*
 * Intake configuration, stored in the data directory:
 * {"identity":{"default_country":"86","hash_pii":true,"types":[{"name",
 *   "pii"}]},"indexed_properties":["category"],"dedup":{"window_hours":24,
 *   "max_entries":1000000},"retention_days":0,"checkpoint":{"interval_ms":
 *   2000,"records":10000},"clock_skew_correction":true}
 * set replaces the fields given and keeps the others.
 */
cp_status cp_intake_config_json(cp_db_t *db, char **out, cp_error_t *err);
cp_status cp_intake_config_set_json(cp_db_t *db, const char *json, size_t len, cp_error_t *err);

/* cp_count with did() windows ending on `as_of` ("2011-06-30"; NULL =
 * today, UTC). */
cp_status cp_count_as_of(cp_db_t *db, const char *expr, const char *as_of, uint64_t *count,
                         cp_error_t *err);
/*
 * History: the forms below behave as cp_count_json, cp_eval, cp_eval_json
 * and cp_crowd_create(_json) with the expression evaluated as of the day
 * `as_of` ("2011-06-30" or an ISO 8601 time, UTC; NULL or "" = today):
 * did() windows and WITHIN LAST / OLDER THAN end on that day, so events
 * dated after it never count. CP_EINVAL for an as_of that is not a date.
 * Every count and evaluation of this API goes through the same path, so
 * the same expression and as_of give the same users everywhere.
 */
cp_status cp_count_json_as_of(cp_db_t *db, const char *json_tree, size_t len, const char *as_of,
                              uint64_t *count, cp_error_t *err);

/*
 * What an expression that parses and evaluates may still have wrong, for
 * showing beside its count: {"warnings":[{"code","line","column",
 * "message"}]} (empty array when none). Today: `!=` on a value the
 * attribute never had ("unknown_value", with "did you mean" suggestions),
 * which matches every user with a value. (`=` and IN on such a value are
 * errors of the count itself.) Give exactly one of `expr` (text) and
 * `json_tree` (`len` bytes). *out: cp_free. Errors: the parse's; CP_ENOMEM.
 */
cp_status cp_expr_warnings_json(cp_db_t *db, const char *expr, const char *json_tree, size_t len,
                                char **out, cp_error_t *err);
cp_status cp_eval_as_of(cp_db_t *db, const char *expr, const char *as_of, cp_result_t **out,
                        cp_error_t *err);
cp_status cp_eval_json_as_of(cp_db_t *db, const char *json_tree, size_t len, const char *as_of,
                             cp_result_t **out, cp_error_t *err);
/* A crowd from exactly one of `expr` (text) and `json_tree` (len bytes),
 * evaluated as of `as_of`. Static crowds only when as_of is given (a
 * dynamic crowd follows the current data: CP_EINVAL); the as-of day is
 * not kept, so cp_crowd_refresh re-evaluates on the current data. */
cp_status cp_crowd_create_as_of(cp_db_t *db, const char *name, const char *expr,
                                const char *json_tree, size_t len, cp_crowd_kind kind,
                                const char *description, const char *as_of, cp_error_t *err);

/* ------------------------------------------------------------- analytics
 *
 * Reports over crowds (docs/analytics.md has every field). Each takes a
 * JSON request and returns a JSON report in *out (caller frees with
 * cp_free). A set of users in a request is a crowd name ("young") or an
 * object {"crowd": NAME}, {"expression": TEXT} or {"tree": {...}}.
 *
 * k-anonymity: a report cell counting fewer users than the minimum count
 * shows {"suppressed": true} instead of its count, shares and ratios. The
 * minimum is the database setting (default 50); a request's "min_count"
 * may raise it, never lower it. Unknown crowds, tags and attributes are
 * CP_ENOTFOUND; malformed requests CP_EINVAL naming the field.
 */

/* {"min_count":N} */
cp_status cp_analytics_settings_json(cp_db_t *db, char **out, cp_error_t *err);
/* Sets {"min_count":N} (0 disables suppression). */
cp_status cp_analytics_settings_set_json(cp_db_t *db, const char *json, size_t len,
                                         cp_error_t *err);

/*
 * Insight (洞察): how a crowd differs from a baseline. For every tag (or
 * those under given roots) and every attribute value or bucket: members in
 * the crowd, crowd share, baseline share and TGI = crowd share / baseline
 * share x 100. Request: {"crowd": SET, "baseline": SET (default: all
 * users), "tags": true|false|ROOT|[ROOTS], "attributes": true|false|[NAMES],
 * "buckets": {"age": [18,25,30], "signup": "year"}, "sort": "tgi"|"count",
 * "top": N, "min_count": N}.
 */
cp_status cp_insight_json(cp_db_t *db, const char *request, size_t len, char **out,
                          cp_error_t *err);

/*
 * Overlap of 2..10 crowds: sizes, every pairwise intersection with
 * Jaccard and containment both ways, the union, users unique to each
 * crowd, and for 2 or 3 crowds every Venn region.
 * Request: {"crowds": [SET, ...], "min_count": N}.
 */
cp_status cp_overlap_json(cp_db_t *db, const char *request, size_t len, char **out,
                          cp_error_t *err);

/*
 * k-means over int/timestamp attributes (z-scored), k-means++ seeding with
 * a fixed seed (deterministic), Lloyd iterations. Request: {"attributes":
 * [NAMES], "crowd": SET (default all), "k": K, "root": "cluster/NAME"
 * (store clusters as tags ROOT/c1..cK; omitted = preview only), "elbow":
 * [KMIN, KMAX], "seed": S, "max_iterations": N, "sample": N, "min_count": N}.
 */
cp_status cp_cluster_json(cp_db_t *db, const char *request, size_t len, char **out,
                          cp_error_t *err);

/*
 * Member tiers on a points attribute, kept as a database setting:
 * {"attribute":"points","tiers":[{"name":"silver","min":2000},...]}.
 * cp_tiers_json returns the setting with counts per tier (CP_ENOTFOUND
 * when none is set); cp_tiers_set_json validates and stores one.
 */
cp_status cp_tiers_json(cp_db_t *db, char **out, cp_error_t *err);
cp_status cp_tiers_set_json(cp_db_t *db, const char *json, size_t len, char **out, cp_error_t *err);
/*
 * Upgrade nudge: members within N points of their next tier, as an
 * expression (to save as a crowd) and a count. Request: {"within": N,
 * "tiers": [target tier names] (default: all)}.
 */
cp_status cp_tiers_nudge_json(cp_db_t *db, const char *request, size_t len, char **out,
                              cp_error_t *err);

/* ------------------------------------------ value models and journeys
 *
 * Event measures, RFM, AIPL stages and funnels (docs/analytics.md "Event
 * measures", "RFM", "AIPL", "Funnels"). JSON in, JSON out (cp_free).
 */

/*
 * Event measures: per-user aggregates over events kept by the intake
 * (sum of a numeric property in fixed point, distinct values, count,
 * first and last time). cp_measures_json returns the configuration with
 * the users holding a value; cp_measures_set_json replaces it:
 * {"measures":[{"name","kind":"sum|count|distinct|first|last","events":[..],
 * "property","scale"}]}. Unchanged measures keep their values; new or
 * changed ones accumulate from the events that follow.
 */
cp_status cp_measures_json(cp_db_t *db, char **out, cp_error_t *err);
cp_status cp_measures_set_json(cp_db_t *db, const char *json, size_t len, char **out,
                               cp_error_t *err);

/*
 * RFM over the purchase/refund measures: R days since the last purchase
 * (UTC dates) to the reference date, F distinct purchase invoices, M net
 * amount in cents; scores 1-5 (1 + floor(5 x share strictly worse));
 * eight segments as tags rfm/<segment> and int attributes rfm_r, rfm_f,
 * rfm_m, rfm_r_score, rfm_f_score, rfm_m_score, in one transaction.
 * Request: {"as_of": "YYYY-MM-DD" (default: the day after the last
 * event), "store": true|false, "root": "rfm", "detail": true|false,
 * "measures": {"recency","frequency","monetary"}}.
 */
cp_status cp_rfm_json(cp_db_t *db, const char *request, size_t len, char **out, cp_error_t *err);
/* The schedule {"every_hours": N (0 = off), "request": {...}, "last_run"}. */
cp_status cp_rfm_schedule_json(cp_db_t *db, char **out, cp_error_t *err);
cp_status cp_rfm_schedule_set_json(cp_db_t *db, const char *json, size_t len, char **out,
                                   cp_error_t *err);
/* Runs the scheduled RFM if due at now_ms (*ran = 1 when it ran). */
cp_status cp_rfm_tick(cp_db_t *db, int64_t now_ms, int *ran, cp_error_t *err);

/*
 * AIPL stages: rules map events to awareness / interest / purchase /
 * loyalty (repeat purchases or a bool membership attribute) within a
 * window; each user's current (highest) stage becomes one of the
 * exclusive tags aipl/<name>/<stage>. Request: {"name": "default",
 * "stages": {"awareness": [events], "interest": [...], "purchase": [...],
 * "loyalty": {"repeat_purchases": 2, "or_attribute": "is_member"}},
 * "window_days": 90, "as_of": DATE, "filters": {"brand": "x"}, "store"}.
 */
cp_status cp_aipl_json(cp_db_t *db, const char *request, size_t len, char **out, cp_error_t *err);

/*
 * Funnel: users reaching each of an ordered list of steps in order (day
 * granularity) within a window, step-to-step conversion, optionally by
 * attribute value / int bucket / child tag; "store" keeps the users of
 * step k as tag funnel/<name>/step<k>. Request: {"name", "steps": [EVENT
 * | {"event", "filters"}], "from", "to" | "window_days", "as_of", "crowd":
 * SET, "breakdown": {"attribute", "buckets"} | {"tag"}, "store",
 * "min_count"}.
 */
cp_status cp_funnel_json(cp_db_t *db, const char *request, size_t len, char **out, cp_error_t *err);

/* ------------------------------------------------------ damaged files */

/* Receives one line of text (borrowed for the call). */
typedef void (*cp_line_fn)(void *ud, const char *line);

/*
 * Checks the data directory `dir` without changing it (docs/operations.md
 * "Damaged files"): reads every page and value of data.mdb and verifies
 * the value checksums, then decodes every record and bitmap and
 * cross-checks them (users by id against users by ordinal, identity rows,
 * crowd sizes against their members, members of crowds, tags and
 * attributes against the live users). Runs in child processes, so damage
 * that crashes liblmdb is reported, not suffered. `problem` (may be NULL)
 * gets one line per problem; *problems their number. CP_OK when the check
 * ran (clean or not: see *problems); CP_ENOTFOUND without data.mdb; CP_EIO
 * when it could not run. May run while a server has the directory open.
 */
cp_status cp_db_check(const char *dir, cp_line_fn problem, void *ud, uint64_t *problems,
                      cp_error_t *err);

/*
 * The explicit way past a damaged write-ahead log, which cp_db_open
 * refuses (CP_ECORRUPT): keeps every valid record, appends each damaged
 * stretch raw to DIR/wal-dropped-<ms>.bin (one text line naming segment,
 * offset and length before its bytes), turns LSNs without a valid record
 * into no-ops, recreates a missing DIR/wal, then opens the directory once
 * so the kept records are applied. `say` (may be NULL) gets what was done,
 * a line at a time. Takes the writer lock: CP_ELOCKED while a server runs.
 * Damage inside data.mdb is not repaired (restore a backup).
 */
cp_status cp_db_recover(const char *dir, cp_line_fn say, void *ud, cp_error_t *err);

/* ------------------------------------------- membership and change feed
 *
 * What activation needs from the engine (docs/embedding.md): a typed,
 * allocation-free "which crowds and tags is this user in", and a feed of
 * what each commit changed, for bidders, webhooks and journeys that live
 * above the engine without the engine knowing them.
 *
 * Ids: crowds and tags are named by their ids here (a crowd's id never
 * changes and is never reused; a tag's id is its cp_tag_handle). Users by
 * their ordinal: dense, never reused (cp_user_ordinal).
 *
 * Commits: every committed write of a handle has a sequence number, 1, 2,
 * 3, ... since the handle was opened (not kept across opens). Events sent
 * to cp_ingest_segment are committed in groups by the intake writer, at
 * most 2 s after being applied, and dynamic crowds follow events at the
 * next checkpoint (the intake config's checkpoint.interval_ms), not at
 * every commit.
 */

/* The ordinal of the user an identifier (TYPE + VALUE, as cp_whois_json)
 * belongs to, merges followed. CP_ENOTFOUND for an unknown identifier or
 * a deleted user, CP_EINVAL for a value that cannot be normalised. The
 * identifier is resolved as of the last commit of data.mdb (see
 * cp_member_lookup). */
cp_status cp_user_ordinal(cp_db_t *db, const char *type, const char *value, uint32_t *ord,
                          cp_error_t *err);

/* Crowd id of a name; CP_ENOTFOUND. */
cp_status cp_crowd_id(cp_db_t *db, const char *name, uint32_t *id, cp_error_t *err);
/* The name of crowd `id` / the slug path of tag `id`, NUL-terminated into
 * buf[cap]: CP_ENOTFOUND for an unknown id, CP_ELIMIT (buf holds "") when
 * cap is too small (names are at most 128 bytes, paths 1,024). */
cp_status cp_crowd_name(cp_db_t *db, uint32_t id, char *buf, size_t cap, cp_error_t *err);
cp_status cp_tag_path(cp_db_t *db, uint32_t id, char *buf, size_t cap, cp_error_t *err);

enum {
    CP_MEMBER_DIRECT_TAGS = 1u << 0, /* tags given to the user directly, not
                                        those held through a descendant */
    CP_MEMBER_NO_CROWDS = 1u << 1,   /* skip crowds (crowds, crowds_cap ignored) */
    CP_MEMBER_NO_TAGS = 1u << 2,     /* skip tags */
};

/*
 * The caller's side of a membership lookup. The caller sets `size` to
 * sizeof(cp_membership_t) (later versions append fields and read only
 * those `size` covers), `flags`, and gives arrays of its own (`crowds` of
 * `crowds_cap` ids, `tags` of `tags_cap`; NULL when the cap is 0). The
 * library fills the rest.
 */
typedef struct cp_membership {
    size_t size;
    unsigned flags;    /* CP_MEMBER_* */
    uint32_t *crowds;  /* in: caller's array; out: ids of the user's crowds, ascending */
    size_t crowds_cap; /* in */
    size_t ncrowds;    /* out: the user's crowds, all of them (may exceed crowds_cap) */
    uint32_t *tags;    /* in: caller's array; out: tag ids (tag:PATH matches), ascending */
    size_t tags_cap;   /* in */
    size_t ntags;      /* out: may exceed tags_cap */
    uint32_t user;     /* out: the user's ordinal */
    uint64_t commit;   /* out: the answer includes every commit up to this one
                          (cp_commit_info_t.seq), and may include events
                          applied in memory since (they commit within 2 s) */
    int crowds_stale;  /* out: 1 when events were applied since dynamic crowds
                          were last re-evaluated (they follow at the next
                          checkpoint; cp_checkpoint forces one) */
} cp_membership_t;

/*
 * Which crowds and tags user `ord` is in, from the in-memory index, under
 * the handle's shared lock (concurrent with other reads, never waiting on
 * the intake writer's commit): no allocation, no I/O. Crowd membership is
 * the crowds' materialised members: static crowds as of their last
 * refresh, dynamic ones as of their last re-evaluation (see crowds_stale).
 * Errors: CP_EINVAL (NULL db or m, size too small, an array NULL with a
 * non-zero cap), CP_ENOTFOUND for an ordinal that is not a live user,
 * CP_ELIMIT when a list did not fit its array (the first cap ids are
 * there and ncrowds/ntags say how many there are: retry with more room),
 * CP_EIO on a failed handle.
 */
cp_status cp_member_lookup_ord(cp_db_t *db, uint32_t ord, cp_membership_t *m, cp_error_t *err);
/* The same for the user an identifier belongs to (cp_user_ordinal first;
 * that step reads data.mdb in a read transaction). */
cp_status cp_member_lookup(cp_db_t *db, const char *type, const char *value, cp_membership_t *m,
                           cp_error_t *err);

/* One tag or crowd whose members a commit changed. Users are ordinals,
 * ascending; entered and left are disjoint. */
typedef enum cp_change_kind { CP_CHANGE_CROWD = 1, CP_CHANGE_TAG = 2 } cp_change_kind;
typedef struct cp_change {
    cp_change_kind kind;
    uint32_t id;             /* crowd id or tag id */
    const char *name;        /* crowd name or tag slug path; NULL when the commit
                                deleted it (then every member is in `left`) */
    const uint32_t *entered; /* users now in it who were not before the commit */
    size_t nentered;
    const uint32_t *left; /* users in it before the commit who are not now */
    size_t nleft;
} cp_change_t;

/* One event applied by a commit, in apply order. */
typedef struct cp_feed_event {
    cp_event_type type; /* CP_EVENT_IDENTIFY ... CP_EVENT_ALIAS */
    uint32_t user;      /* ordinal of the user it was applied to (after merges) */
    int64_t time_ms;    /* the event's time (its timestamp, UTC) */
    const char *name;   /* track: the event name; page/screen: "page"/"screen";
                           group: "group"; NULL for identify and alias */
} cp_feed_event_t;

/*
 * What one commit changed. Everything pointed to is borrowed for the
 * duration of the callback only. A tag's members are those matching
 * tag:PATH (its descendants' included); a crowd's, its materialised
 * members. Entered/left is the exact difference between the members
 * before and after the commit, whatever the write (users, events,
 * merges, deletions, tag moves, crowd refreshes).
 */
typedef struct cp_commit_info {
    size_t size;                   /* sizeof(cp_commit_info_t) of the library */
    uint64_t seq;                  /* commit number since open: 1, 2, ... with no gaps */
    int64_t time_ms;               /* wall clock at the commit */
    const cp_change_t *changes;    /* crowds first (ascending id), then tags */
    size_t nchanges;               /* only the kinds subscribed to */
    const cp_feed_event_t *events; /* only with CP_FEED_EVENTS */
    size_t nevents;
    int incomplete; /* memory ran out while recording this commit: some changes
                       are missing; re-read the members you follow */
} cp_commit_info_t;

typedef void (*cp_commit_fn)(void *ctx, const cp_commit_info_t *c);

enum {
    CP_FEED_CROWDS = 1u << 0, /* crowd entries and exits */
    CP_FEED_TAGS = 1u << 1,   /* tag entries and exits */
    CP_FEED_EVENTS = 1u << 2, /* events applied */
    CP_FEED_ALL = 7u,
};

/*
 * Subscribes fn(ctx, commit) to every commit of the handle made after the
 * call returns, in the spirit of sqlite3_update_hook; *id (may be NULL)
 * names the subscription for cp_db_unsubscribe. `what` is a CP_FEED_* mask
 * (0 = CP_FEED_ALL). Up to 64 subscriptions.
 *
 * Thread and locks: callbacks run on one feed thread of the handle
 * (started by the first subscription), one at a time, never holding the
 * handle's lock: they may call any API of the handle, reads and writes
 * (a write's own commit is delivered after the current one).
 * Order: every subscriber sees every commit once, in commit order (seq
 * without gaps), each commit to every subscriber before the next commit.
 * Slow callbacks: commits wait in memory for the feed thread; past 1,024
 * commits or 256 MiB waiting, new writes (cp_* writes, each batch of
 * cp_import_file and event requests, not the feed thread's own) wait
 * before they begin until the feed catches up: a slow subscriber slows
 * writers, it never loses a commit.
 * Not durable: a feed starts empty at each open (after a restart,
 * re-read what you follow).
 * Cost when nobody subscribes: nothing is recorded. While subscribed, a
 * write copies the members of each tag it changes once (and keeps each
 * replaced crowd bitmap) until its commit is built.
 * Errors: CP_EINVAL (NULL fn, unknown bits), CP_ELIMIT (64 subscriptions),
 * CP_ENOMEM, CP_EIO on a failed handle.
 */
cp_status cp_db_subscribe(cp_db_t *db, cp_commit_fn fn, void *ctx, unsigned what, uint64_t *id,
                          cp_error_t *err);
/* Ends a subscription: when it returns, fn is not running (unless called
 * from fn itself, which then finishes) and is never called again.
 * CP_ENOTFOUND for an unknown id. */
cp_status cp_db_unsubscribe(cp_db_t *db, uint64_t id, cp_error_t *err);
/* Waits until every commit made before the call has been delivered to
 * every subscriber. CP_ECONFLICT when called from a callback (it would
 * wait for itself). */
cp_status cp_feed_flush(cp_db_t *db, cp_error_t *err);

/* =============================================================== activation
 *
 * Campaigns and the OpenRTB bidder over one handle (docs/activation.md,
 * DESIGN.md §10). Their state lives in the directory given to
 * cp_activate_open (the server uses DATA_DIR/activate): campaigns with
 * every version, and a journal of notices (spend, caps) made durable before
 * a notice is answered. Times: now_ms is UTC milliseconds, 0 = the wall
 * clock (the simulator passes its own clock).
 */
typedef struct cp_activate cp_activate_t;

enum {
    /* No housekeeping thread: the caller calls cp_activate_tick (simulator,
     * tests). */
    CP_ACTIVATE_MANUAL_TICK = 1u << 0,
};

typedef struct cp_activate_options {
    size_t size;             /* sizeof(cp_activate_options_t) */
    unsigned flags;          /* CP_ACTIVATE_* */
    const char *notice_base; /* base URL of notice and tracker URLs in bids,
                                e.g. "https://bid.example.com"; NULL =
                                "http://127.0.0.1:8080" */
    const char *seat;        /* seatbid.seat; NULL = "crowdpack" */
    int64_t refresh_ms;      /* targeting refresh after data changes; 0 = 1000 */
} cp_activate_options_t;
/* clang-format off */
#define CP_ACTIVATE_OPTIONS_INIT {.size = sizeof(cp_activate_options_t)}
/* clang-format on */

/* Opens (creating) the activation state in `dir` over `db` (borrowed: close
 * the activation handle first). opts may be NULL. */
cp_status cp_activate_open(cp_db_t *db, const char *dir, const cp_activate_options_t *opts,
                           cp_activate_t **out, cp_error_t *err);
/* NULL fine. Stops housekeeping, makes the journal durable. */
cp_status cp_activate_close(cp_activate_t *a, cp_error_t *err);
/* Housekeeping at now_ms (pacing steps, reservation expiry, targeting
 * refresh): call about once a second with CP_ACTIVATE_MANUAL_TICK. */
cp_status cp_activate_tick(cp_activate_t *a, int64_t now_ms, cp_error_t *err);

/* Creates or replaces campaign `id` from its JSON document (format in
 * docs/activation.md), atomically and durably; *version (may be NULL) gets
 * its new version (1, 2, ...). CP_EINVAL naming the field for a bad
 * document (unknown tags, attributes or crowds included), CP_ELIMIT past a
 * limit. */
cp_status cp_campaign_put_json(cp_activate_t *a, const char *id, const char *json, size_t len,
                               uint64_t *version, cp_error_t *err);
cp_status cp_campaign_delete(cp_activate_t *a, const char *id, cp_error_t *err);
/* JSON views; caller frees *out with cp_free. CP_ENOTFOUND for an unknown id. */
cp_status cp_campaign_json(cp_activate_t *a, const char *id, char **out, cp_error_t *err);
cp_status cp_campaigns_json(cp_activate_t *a, char **out, cp_error_t *err);
cp_status cp_campaign_history_json(cp_activate_t *a, const char *id, char **out, cp_error_t *err);
/* Spend today and in total, reservations, pacing, per line. */
cp_status cp_campaign_delivery_json(cp_activate_t *a, const char *id, int64_t now_ms, char **out,
                                    cp_error_t *err);

/* The global contact cap: at most `count` impressions per person per
 * period across every campaign (bidding; journeys will share it), each
 * period in the time zone of the campaign that bids. As JSON
 * {"count":N,"per":"hour"|"day"|"week"|"lifetime"}; count 0 = none (the
 * default). The set form is durable when it returns; CP_EINVAL naming the
 * field for a bad document. */
cp_status cp_contact_cap_json(cp_activate_t *a, char **out, cp_error_t *err);
cp_status cp_contact_cap_set_json(cp_activate_t *a, const char *json, size_t len, cp_error_t *err);

enum { CP_BID_DEBUG = 1u << 0 };

typedef struct cp_bid_reply {
    size_t size; /* sizeof(cp_bid_reply_t) */
    int status;  /* 200 (body is a BidResponse, or with CP_BID_DEBUG a no-bid
                    explanation) or 204 (no bid, body NULL) */
    char *body;  /* caller frees with cp_free */
    size_t len;
} cp_bid_reply_t;
/* clang-format off */
#define CP_BID_REPLY_INIT {.size = sizeof(cp_bid_reply_t)}
/* clang-format on */

/* Answers one OpenRTB 2.5/2.6 BidRequest. CP_EINVAL / CP_ELIMIT: refuse it
 * with 400 and err's message. Thread-safe; many at once. */
cp_status cp_rtb_bid(cp_activate_t *a, const char *body, size_t len, int64_t now_ms, unsigned flags,
                     cp_bid_reply_t *out, cp_error_t *err);

typedef enum cp_notice_kind {
    CP_NOTICE_WIN = 1,        /* nurl */
    CP_NOTICE_BILLING = 2,    /* burl */
    CP_NOTICE_LOSS = 3,       /* lurl */
    CP_NOTICE_IMPRESSION = 4, /* impression pixel */
    CP_NOTICE_CLICK = 5,      /* click redirect */
} cp_notice_kind;

/* Records one notice of a bid this handle made: `token` from the notice
 * URL, `price` the ${AUCTION_PRICE} text (NULL when none), loss_reason the
 * lurl's code. Durable when it returns CP_OK; a repeat of a recorded
 * notice is CP_OK and changes nothing (*duplicate = 1; may be NULL).
 * CP_EINVAL for a forged or damaged token or a bad price. */
cp_status cp_rtb_notice(cp_activate_t *a, cp_notice_kind kind, const char *token, const char *price,
                        int loss_reason, int64_t now_ms, int *duplicate, cp_error_t *err);

/* Records a click (as cp_rtb_notice with CP_NOTICE_CLICK) and gives the
 * landing page to redirect to in *location (caller frees with cp_free):
 * `url` (may be NULL; the click URL's "u" argument) when it is http(s) on
 * one of the advertiser domains (adomain) of the bid's line item or a
 * subdomain, else "https://ADOMAIN/" of the line's first creative; NULL
 * when the line item no longer exists. So the redirect never leads off
 * the advertiser's domains. Errors as cp_rtb_notice. */
cp_status cp_rtb_click(cp_activate_t *a, const char *token, const char *url, int64_t now_ms,
                       int *duplicate, char **location, cp_error_t *err);

/* Result ordinals: 1 when user ordinal `ord` is in r (NULL r: 0). */
int cp_result_contains(const cp_result_t *r, uint32_t ord);
/* Copies the user ordinals of r in ascending order, from the `offset`-th
 * (0-based) on, into out[cap]; *n gets
 * how many were copied (0 past the end). CP_EINVAL for a NULL r or n,
 * or a NULL out with cap > 0. Read in batches to walk a whole result. */
cp_status cp_result_ordinals(const cp_result_t *r, uint64_t offset, uint32_t *out, size_t cap,
                             size_t *n, cp_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* CROWDPACK_H */
