/*
 * wal.h — the write-ahead log (DESIGN.md §2, src/store/): an append-only,
 * checksummed sequence of records, each with a log sequence number (LSN),
 * made durable by group commit. Standalone: depends on util only.
 *
 * On disk, DIR/wal/ holds segment files named by the LSN of their first
 * record, 20 decimal digits: DIR/wal/00000000000000000001.wal. A segment is
 * a plain sequence of records (no file header), each
 *
 *     u32 len | u32 crc | u64 lsn | u8 type | payload[len]     (little endian)
 *
 * where crc is CRC32C (Castagnoli) over the 8 LSN bytes, the type byte and
 * the payload. LSNs start at 1 (or wal_options_t.initial_lsn) and grow by
 * exactly 1 per record across segments, so the first LSN of every segment
 * is the last LSN of the one before plus one. A segment is closed when the
 * next record would take it past segment_bytes (a record larger than that
 * gets a segment of its own) or on wal_rotate().
 *
 * Crash consistency:
 *  - records reach the file with write(); wal_sync() makes them durable
 *    with fdatasync() (one call serves every waiting thread: group commit);
 *  - a segment is fdatasync()ed before the next one is created, and the
 *    directory is fsync()ed after a segment is created or deleted, so only
 *    the LAST segment can have a torn tail after a crash;
 *  - wal_open() reads the last segment and cuts it after the longest valid
 *    prefix (a partial header or payload, a bad CRC, a length over
 *    WAL_MAX_RECORD, an LSN out of sequence all end the prefix), reporting
 *    the bytes cut through the log callback and wal_stats() — but only if
 *    no valid record follows the cut: a valid record after it (found by
 *    searching the rest of the file byte by byte) means damage, not a torn
 *    tail, and wal_open refuses with CP_ECORRUPT naming the segment, the
 *    byte offset and how many records follow;
 *  - older segments are read only by wal_replay(), which treats any damage
 *    in them, or a gap in the LSN sequence, as CP_ECORRUPT naming the
 *    segment, the byte offset and the records that follow: a damaged
 *    non-last segment is never skipped silently. wal_salvage() is the
 *    explicit way past such damage.
 *
 * Errors are CP_EIO with the errno text and the file name (never an abort).
 * After a failed write() or fdatasync() the log is "failed": the state of
 * the page cache is unknown (an fsync error is reported once), so every
 * later append/sync/rotate returns CP_EIO; close and reopen (which recovers
 * the valid prefix) to continue. A full disk is not a failure: a write()
 * or segment creation that gets ENOSPC/EDQUOT returns CP_ENOSPC (naming
 * the file and the free space), the segment is cut back to its last whole
 * record, buffered records stay buffered, and the next call tries again.
 * wal_reserve() lets a caller learn of a full disk before it commits to a
 * record.
 *
 * Threading: wal_append, wal_sync, wal_rotate, wal_durable_lsn,
 * wal_last_lsn and wal_stats may be called from any number of threads at
 * once. wal_replay and wal_truncate_before may run concurrently with those,
 * but not with each other; wal_close must be the last call on the handle.
 * One process at a time: wal_open flock()s DIR/wal (CP_ELOCKED otherwise).
 */
#ifndef CP_STORE_WAL_H
#define CP_STORE_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"

#define WAL_DEFAULT_SEGMENT_BYTES (64ull << 20)
#define WAL_MIN_SEGMENT_BYTES 4096ull
/* Largest payload of one record; larger appends are CP_ELIMIT and larger
 * lengths read from disk are corruption. */
#define WAL_MAX_RECORD (64u << 20)
/* Bytes of framing before each payload. */
#define WAL_HEADER_BYTES 17u

typedef struct wal wal_t;

typedef enum wal_sync_mode {
    WAL_SYNC_FDATASYNC = 0, /* default: wal_sync() and segment switches fdatasync */
    WAL_SYNC_NONE = 1,      /* tests and throwaway data: no fdatasync/fsync at all */
} wal_sync_mode;

typedef struct wal_options {
    uint64_t segment_bytes; /* rotate past this size; 0 = WAL_DEFAULT_SEGMENT_BYTES,
                               else >= WAL_MIN_SEGMENT_BYTES */
    wal_sync_mode sync;
    /* LSN of the first record when DIR/wal holds no segment yet (0 = 1).
     * Lets a data directory that already has state start its log after it.
     * Ignored when segments exist. */
    uint64_t initial_lsn;
    /* Receives one line per notable event (a torn tail cut at open). NULL =
     * write it to stderr prefixed "crowdpack: ". Called with no lock held. */
    void (*log)(void *ud, const char *msg);
    void *log_ud;
    /* Test hook: called by the group-commit leader after each fdatasync
     * of a segment (also in WAL_SYNC_NONE mode, where the fdatasync is
     * skipped), outside the lock. NULL = none. */
    void (*on_fsync)(void *ud);
    void *on_fsync_ud;
} wal_options_t;

typedef struct wal_stats {
    uint64_t appends;          /* records appended by this handle */
    uint64_t bytes_appended;   /* their framed bytes */
    uint64_t sync_calls;       /* wal_sync() calls that had to wait for durability */
    uint64_t fsyncs;           /* group commits: fdatasync rounds of the active segment */
    uint64_t segments;         /* segment files now in DIR/wal */
    uint64_t first_lsn;        /* first LSN of the oldest segment */
    uint64_t truncated_bytes;  /* torn tail cut by wal_open */
    uint64_t active_first_lsn; /* first LSN of the active (newest) segment: its name */
} wal_stats_t;

/*
 * Opens (creating if needed) the log in `dir`/wal; `dir` must exist.
 * `opts` may be NULL for defaults. Scans the segment names, reads the last
 * segment to find the end of the log and truncates a torn or corrupt tail
 * of it (logged with the byte count). Errors: CP_EIO (with file name and
 * errno text; also for a stray or misnamed *.wal file), CP_ELOCKED (another
 * handle has the directory), CP_EINVAL (bad options), CP_ENOMEM,
 * CP_ECORRUPT (damage in the last segment followed by valid records).
 * *out is owned by the caller: wal_close().
 */
cp_status wal_open(const char *dir, const wal_options_t *opts, wal_t **out, cp_error_t *err);

/*
 * Writes out buffered records, fdatasyncs them (sync mode permitting),
 * closes the files and frees the handle. NULL is fine. Records appended but
 * not synced are written but not guaranteed durable.
 */
void wal_close(wal_t *wal);

/*
 * Called by wal_replay for each record, in LSN order. `payload` is borrowed:
 * valid only during the call. A status other than CP_OK stops the replay
 * and is returned by wal_replay (the callback fills `err`).
 */
typedef cp_status (*wal_replay_fn)(void *ud, uint64_t lsn, uint8_t type, const void *payload,
                                   size_t len, cp_error_t *err);

/*
 * Calls `fn` for every record with LSN > after_lsn, oldest first, up to the
 * last LSN at the time of the call (records appended meanwhile are not
 * visited). CP_ECORRUPT for a damaged record or an LSN gap in a segment
 * other than the active one (naming the segment file, the byte offset and
 * how many valid records follow), and when records after after_lsn were
 * already deleted by wal_truncate_before. CP_EIO for a failed read.
 */
cp_status wal_replay(wal_t *wal, uint64_t after_lsn, wal_replay_fn fn, void *ud, cp_error_t *err);

/*
 * Appends one record of `len` payload bytes (payload may be NULL when len
 * is 0; copied before return) and sets *lsn (may be NULL) to its LSN, one
 * more than the previous record's. The record is written to the segment
 * file with write() immediately or, if small, at the latest by the next
 * wal_sync/wal_rotate/wal_close; it is durable only after wal_sync(lsn).
 * Errors: CP_ELIMIT (len > WAL_MAX_RECORD), CP_EIO (write failed or the log
 * had failed before), CP_ENOMEM.
 */
cp_status wal_append(wal_t *wal, uint8_t type, const void *payload, size_t len, uint64_t *lsn,
                     cp_error_t *err);

/*
 * Allocates the blocks a record of `len` payload bytes will need in the
 * segment it will be written to (rotating first if wal_append would), so
 * that the wal_append of it, by this thread and with no other append in
 * between, cannot meet a full disk. Blocks are allocated beyond the end of
 * the file without changing its length (fallocate FALLOC_FL_KEEP_SIZE), in
 * steps of 1 MiB. CP_ENOSPC (naming the segment and the free space) when
 * the disk is full; CP_OK without allocating on file systems that cannot.
 */
cp_status wal_reserve(wal_t *wal, size_t len, cp_error_t *err);

/*
 * Returns once every record with LSN <= lsn is durable (UINT64_MAX or any
 * value past the last LSN means "everything appended so far"). Group
 * commit: if another thread is already syncing, waits for it and returns if
 * that covered `lsn`; otherwise this thread leads: takes the current last
 * LSN, writes out what is buffered, fdatasyncs, publishes the durable LSN
 * and wakes the waiters. CP_EIO if the sync (or an earlier one) failed.
 */
cp_status wal_sync(wal_t *wal, uint64_t lsn, cp_error_t *err);

/* Every record <= this LSN is durable (0 if none). */
uint64_t wal_durable_lsn(wal_t *wal);
/* LSN of the last record appended (or recovered at open); first LSN - 1 if none. */
uint64_t wal_last_lsn(wal_t *wal);

/*
 * Ends the active segment (written out and fdatasynced) and starts a new
 * one for the next LSN, so a checkpoint at the last LSN can later free the
 * old segments whole. A no-op when the active segment has no record.
 * *next_lsn (may be NULL) is the first LSN of the new active segment.
 */
cp_status wal_rotate(wal_t *wal, uint64_t *next_lsn, cp_error_t *err);

/*
 * Deletes every segment all of whose records have LSN <= lsn (the state up
 * to lsn is safe elsewhere, e.g. checkpointed into LMDB), never the active
 * segment, then fsyncs the directory. *deleted (may be NULL) = files removed.
 */
cp_status wal_truncate_before(wal_t *wal, uint64_t lsn, unsigned *deleted, cp_error_t *err);

/*
 * What wal_salvage did (every count 0 for a whole log).
 */
typedef struct wal_salvage_report {
    int created;                 /* DIR/wal was missing and was created */
    uint64_t segments;           /* segment files read */
    uint64_t segments_rewritten; /* segment files replaced (or created) */
    uint64_t records_kept;       /* valid records kept */
    uint64_t ranges;             /* damaged stretches set aside in the side file */
    uint64_t bytes_dropped;      /* their bytes */
    uint64_t lsns_lost;          /* LSNs whose records were lost, now no-op records */
    uint64_t last_lsn;           /* the log's last LSN afterwards */
} wal_salvage_report_t;

/*
 * Makes a damaged log in `dir`/wal usable again, explicitly (the
 * `crowdpack recover` command; never called on a normal open). Every
 * segment is read whole; every valid record (right CRC, LSN not below the
 * one owed) is kept, byte for byte; every stretch of bytes that holds no
 * valid record is appended raw to `side_path`, each after one text line
 *   crowdpack-wal-dropped segment PATH offset O length L next-lsn N
 * and the LSNs they held become records of type `noop_type` with no
 * payload, so the sequence stays whole. The log is made to cover every
 * LSN after `applied` (what the store already holds): a missing DIR/wal
 * or deleted segments get no-ops for the LSNs that are gone, and a log
 * ending before `applied` is filled up to it. Changed segments are
 * rewritten through a temporary file, fsynced and renamed. Errors:
 * CP_EIO, CP_ENOMEM, CP_ELOCKED (the log is open), CP_ECORRUPT
 * (overlapping segments, which a person has to look at).
 */
cp_status wal_salvage(const char *dir, uint64_t applied, uint8_t noop_type, const char *side_path,
                      wal_salvage_report_t *rep, cp_error_t *err);

void wal_stats(wal_t *wal, wal_stats_t *out);
/* 1 once a write or fdatasync failed (sticky until reopened), else 0. */
int wal_failed(wal_t *wal);

/*
 * Writes buffered records to the segment file with write(), without
 * fdatasync: after it, a kill -9 cannot lose them (the page cache has
 * them), only a power cut can. For callers that are about to commit state
 * derived from those records elsewhere (LMDB's "wal_lsn"), so that state
 * never runs ahead of the log's file after a process crash. CP_EIO,
 * CP_ENOSPC (nothing lost: the records stay buffered).
 */
cp_status wal_write_out(wal_t *wal, cp_error_t *err);

/* Segment file name of a first LSN: 20 digits + ".wal" (cap >= 25). */
void wal_segment_name(uint64_t first_lsn, char *buf, size_t cap);

/*
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78) of [p, p+n)
 * continuing from `crc` (0 to start): wal_crc32c(0, "123456789", 9) ==
 * 0xE3069283. Uses SSE4.2 when the CPU has it, else slice-by-8 tables
 * computed on first use. Thread-safe. (crc32c.c)
 */
uint32_t wal_crc32c(uint32_t crc, const void *p, size_t n);
/* Records after after_lsn in DIR/wal, counted by their headers without the
 * lock or any change (read-only openers beside a writer; approximate). */
cp_status wal_peek_count(const char *dir, uint64_t after_lsn, uint64_t *n);
/* The portable slice-by-8 implementation, for tests. */
uint32_t wal__crc32c_sw(uint32_t crc, const void *p, size_t n);

#endif /* CP_STORE_WAL_H */
