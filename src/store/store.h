/*
 * store.h — durability (DESIGN.md §2, src/store/): a thin wrapper over one
 * LMDB environment holding a crowdpack data directory.
 *
 * Layout of a data directory DIR:
 *   DIR/data.mdb       the LMDB file (MDB_NOSUBDIR): LMDB's pages, then blocks
 *                      allocated ahead for the next commits (store_ensure_room)
 *   DIR/data.mdb-lock  LMDB's reader table
 *   DIR/LOCK           flock()ed by the one read-write opener; holds its pid
 *
 * Named sub-databases (store_db): meta, bitmaps, users by id, users by
 * ordinal, tags, attributes, attribute values, crowds, API keys, identity.
 *
 * Every LMDB failure is mapped to a cp_status with mdb_strerror() text.
 * MDB_MAP_FULL becomes CP_ELIMIT (the map size is a limit, not a fault);
 * ENOSPC/EDQUOT become CP_ENOSPC naming the file and the free space.
 *
 * Every value carries a CRC32C of its key and bytes (a 4-byte trailer the
 * callers never see): get, each and cursor seek return CP_ECORRUPT naming
 * the sub-database and the key when it does not match. Directories from
 * before checksums are upgraded by their first read-write open.
 *
 * Threading: the environment is opened MDB_NOTLS, so a read transaction
 * is not tied to the thread that began it (iterators may move between
 * threads). One write transaction at a time; the engine serialises them.
 */
#ifndef CP_STORE_H
#define CP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"

typedef enum store_db {
    STORE_META = 0, /* text key -> value (numbers as 8-byte little endian) */
    STORE_BITMAPS,  /* text key (t/1, a/2/e, ...) -> CRoaring portable bytes */
    STORE_UID,      /* user id bytes -> uint32 ordinal (native) */
    STORE_UORD,     /* uint32 ordinal (MDB_INTEGERKEY) -> user id bytes */
    STORE_TAGS,     /* uint32 big-endian tag id -> record */
    STORE_ATTRS,    /* uint32 big-endian attr id -> record */
    STORE_VALUES,   /* attr id BE + value id BE -> value bytes */
    STORE_CROWDS,   /* crowd name -> record */
    STORE_KEYS,     /* key id -> record */
    STORE_IDENTITY, /* OneID graph: one-byte prefixed rows, see model/identity.h */
    STORE_INTAKE,   /* event intake: behaviour (beh/), dedup window (dedup/), import
                       positions (imp/), unindexed traits (ut/), catalog, config */
    STORE_NDBS
} store_db;

enum {
    STORE_CREATE = 1u << 0,
    STORE_READONLY = 1u << 1,
};

#define STORE_DEFAULT_MAP_SIZE (64ull << 30)

typedef struct store store_t;
typedef struct store_txn store_txn_t;

/*
 * Opens the data directory `dir`. Read-write opens take DIR/LOCK first:
 * CP_ELOCKED naming the holder's pid if another process (or another
 * handle of this process) holds it. Errors: CP_ENOTFOUND (missing
 * directory without STORE_CREATE), CP_EINVAL (not a crowdpack data
 * directory), CP_EVERSION (format_version != `version`).
 * On creation the meta keys "magic", "format_version" and "created" are
 * written. *out is owned by the caller: store_close().
 */
cp_status store_open(const char *dir, unsigned flags, uint64_t map_size, uint32_t version,
                     store_t **out, cp_error_t *err);
void store_close(store_t *st); /* NULL fine; releases the lock */

int store_readonly(const store_t *st);
/* 0 after a compaction could not reopen the environment (every later
 * call fails; the handle must be closed). */
int store_usable(const store_t *st);
const char *store_dir(const store_t *st);
/* Bytes allocated to data.mdb on disk (its pages and the room allocated
 * ahead for commits; never the length of a hole), 0 if unknown. */
uint64_t store_disk_bytes(const store_t *st);

/* Begins a transaction (write != 0 for a write transaction). */
cp_status store_txn_begin(store_t *st, int write, store_txn_t **out, cp_error_t *err);
/* Commits and frees the transaction (also on failure). */
cp_status store_txn_commit(store_txn_t *t, cp_error_t *err);
void store_txn_abort(store_txn_t *t); /* NULL fine; frees */

cp_status store_put(store_txn_t *t, store_db db, const void *k, size_t klen, const void *v,
                    size_t vlen, cp_error_t *err);
/*
 * Reserves `vlen` bytes for key k and returns where to write them
 * (MDB_RESERVE). *out is valid until the next update in the transaction.
 */
cp_status store_reserve(store_txn_t *t, store_db db, const void *k, size_t klen, size_t vlen,
                        void **out, cp_error_t *err);
/*
 * Looks k up. CP_ENOTFOUND when absent (err is NOT filled then: absence is
 * an answer, not a failure). *v is borrowed until the end of the
 * transaction or the next update in it.
 */
cp_status store_get(store_txn_t *t, store_db db, const void *k, size_t klen, const void **v,
                    size_t *vlen, cp_error_t *err);
/* Deletes k; absent keys are fine (CP_OK). */
cp_status store_del(store_txn_t *t, store_db db, const void *k, size_t klen, cp_error_t *err);

/*
 * Calls fn for each key starting with `prefix` (plen 0 = every key), in key
 * order. Pointers are borrowed for the call only. fn returning non-CP_OK
 * stops the walk and that status is returned. fn must not write to `db`.
 */
typedef cp_status (*store_each_fn)(void *ud, const void *k, size_t klen, const void *v, size_t vlen,
                                   cp_error_t *err);
cp_status store_each(store_txn_t *t, store_db db, const void *prefix, size_t plen, store_each_fn fn,
                     void *ud, cp_error_t *err);
/* Deletes every key starting with prefix. */
cp_status store_del_prefix(store_txn_t *t, store_db db, const void *prefix, size_t plen,
                           cp_error_t *err);

/* Meta numbers: 8-byte little endian. get: CP_ENOTFOUND (silent) if absent. */
cp_status store_meta_get_u64(store_txn_t *t, const char *key, uint64_t *v, cp_error_t *err);
cp_status store_meta_put_u64(store_txn_t *t, const char *key, uint64_t v, cp_error_t *err);

/*
 * Rewrites data.mdb with LMDB's compacting copy (mdb_env_copy2 with
 * MDB_CP_COMPACT: only live pages, so bytes of deleted records are gone)
 * into DIR/data.mdb.compact, fsyncs it, renames it over data.mdb and
 * reopens the environment. No transaction may be open on st (callers
 * hold their own write lock and make sure of that); on failure the old
 * file is kept and st stays usable if the reopen succeeded.
 * CP_ELOCKED (naming the pid) when another process has data.mdb open (a
 * read-only CLI, a backup): the swap would break its view and ours, so
 * nothing changes and the caller tries again later. CP_ECONFLICT when a
 * transaction of st is open (an iterator's, say): likewise.
 */
cp_status store_compact(store_t *st, cp_error_t *err);
/* Removes DIR/data.mdb.compact left by a compaction that was interrupted
 * (read-write handles only; nothing else writes that name). 1 if one was
 * removed. */
int store_compact_cleanup(store_t *st);

/*
 * Writes a consistent copy of data.mdb (one read transaction, live pages
 * only: mdb_env_copy2 with MDB_CP_COMPACT) to the file `path`, which must
 * not exist, and fsyncs it. Works on read-only handles, so a second
 * process can copy a directory a server is writing.
 */
cp_status store_backup(store_t *st, const char *path, cp_error_t *err);

/*
 * Commits after store_set_lazy_commit(st, 1) write and fdatasync their
 * pages but write the meta page without syncing it (MDB_NOMETASYNC): a
 * power cut may undo the last such commit, never corrupt the file, and
 * the next commit's sync or store_sync() makes it durable. For callers
 * whose own write-ahead log holds what the commit holds. The flag is
 * environment-wide: callers toggle it only while no other commit can run.
 */
cp_status store_set_lazy_commit(store_t *st, int on, cp_error_t *err);
/* Flushes every commit to disk (mdb_env_sync, forced). */
cp_status store_sync(store_t *st, cp_error_t *err);

/*
 * Makes sure data.mdb has at least `bytes` allocated past LMDB's last
 * committed page (posix_fallocate, grown in steps of STORE_ROOM_STEP_MIN..
 * STORE_ROOM_STEP_MAX), so a transaction that dirties up to that much
 * finds its blocks on disk. Call before changing anything that a failed
 * commit would lose. CP_ENOSPC naming data.mdb, the bytes wanted and the
 * free space when the file system cannot give them. Callers serialise it
 * with their commits (the engine's write lock).
 */
#define STORE_ROOM_STEP_MIN (1ull << 20)
#define STORE_ROOM_STEP_MAX (64ull << 20)
cp_status store_ensure_room(store_t *st, uint64_t bytes, cp_error_t *err);

/* A cursor over one sub-database for lookups by key during iteration
 * (cp_iter). Lives inside a transaction. */
typedef struct store_cursor store_cursor_t;
cp_status store_cursor_open(store_txn_t *t, store_db db, store_cursor_t **out, cp_error_t *err);
/* Positions at exactly k: CP_OK with *v, or CP_ENOTFOUND (silent). */
cp_status store_cursor_seek(store_cursor_t *c, const void *k, size_t klen, const void **v,
                            size_t *vlen, cp_error_t *err);
void store_cursor_close(store_cursor_t *c); /* NULL fine */

/*
 * Reads every page of DIR/data.mdb that LMDB can reach — the free list,
 * the main tree, every sub-database, every value byte, checking the value
 * checksums — in a child process, so damage that would crash liblmdb
 * (SIGSEGV, SIGABRT on its assertions, SIGBUS past the end of the file) is
 * contained. fn (may be NULL) gets one line per problem found, naming the
 * sub-database and key or where the child died; *problems (may be NULL)
 * their number. CP_OK when clean, else CP_ECORRUPT with the first problem;
 * CP_EIO if the child cannot be started. store_open runs it before opening
 * an existing file, unless the environment says CROWDPACK_OPEN_CHECK=0.
 */
typedef void (*store_verify_fn)(void *ud, const char *problem);
cp_status store_verify(const char *dir, uint64_t map_size, store_verify_fn fn, void *ud,
                       uint64_t *problems, cp_error_t *err);

#endif /* CP_STORE_H */
