/*
 * dedup.h — messageId deduplication with a time window and bounded memory:
 * a retried batch changes nothing.
 *
 * Keys are 64-bit hashes of messageIds (ingest_event_t.message_hash; with
 * at most a few million live entries a false "seen" has a probability
 * around 1e-7). Each key remembers when it was first seen (the *intake*
 * clock, not the event's own time: retries are about delivery). A key is
 * "seen" while that time is within the window (default 24 h) of now.
 *
 * Memory: at most `max_entries` keys (default 1,000,000, about 32 MB at
 * the limit; it grows on demand). Past the limit the oldest key is
 * forgotten first, so the window shrinks under a flood instead of memory
 * growing: dedup_stats() reports such evictions.
 *
 * Time is made monotonic inside the structure (an insert never goes back in
 * time), so keys are ordered by insertion time, which lets persistence keep
 * them as time-ordered LMDB keys and prune by deleting a prefix.
 *
 * Persistence (store.h) in a sub-database the caller chooses, keys
 *   "dedup/" + u64 BE time_ms + u64 BE hash  -> empty value
 * dedup_persist() writes the keys inserted since the last persist and
 * deletes those no longer held (expired or evicted); dedup_load() rebuilds
 * the structure at open. The engine persists it in the same transaction as
 * its checkpoint LSN, so a replay of the WAL after the checkpoint repeats
 * exactly the same decisions (records carry their receive time).
 *
 * Not thread-safe: the engine's write lock covers it.
 */
#ifndef CP_INGEST_DEDUP_H
#define CP_INGEST_DEDUP_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "store/store.h"

#define DEDUP_DEFAULT_WINDOW_MS (24ll * 3600 * 1000)
#define DEDUP_DEFAULT_MAX_ENTRIES 1000000u

typedef struct dedup dedup_t;

typedef struct dedup_stats {
    uint64_t entries; /* keys held */
    uint64_t hits;    /* dedup_check answers "seen" */
    uint64_t inserts;
    uint64_t expired; /* forgotten because they left the window */
    uint64_t evicted; /* forgotten early because of max_entries */
    uint64_t bytes;   /* memory held */
} dedup_stats_t;

/* window_ms <= 0: default; max_entries 0: default. CP_ENOMEM. */
cp_status dedup_create(int64_t window_ms, size_t max_entries, dedup_t **out);
void dedup_free(dedup_t *d); /* NULL fine */
/* Changes the window / bound (shrinking forgets the oldest at the next insert). */
void dedup_configure(dedup_t *d, int64_t window_ms, size_t max_entries);

/* 1 if hash was inserted within the window before now_ms. */
int dedup_check(dedup_t *d, uint64_t hash, int64_t now_ms);
/*
 * Remembers hash as seen at now_ms (forgetting expired and, past the
 * bound, the oldest keys first). Inserting a key already held refreshes
 * nothing (first sight counts). CP_ENOMEM leaves the structure valid.
 */
cp_status dedup_insert(dedup_t *d, uint64_t hash, int64_t now_ms);

void dedup_stats(const dedup_t *d, dedup_stats_t *out);

/* Writes the keys inserted since the last persist and deletes the keys of
 * forgotten entries, in txn's sub-database db. */
cp_status dedup_persist(dedup_t *d, store_txn_t *txn, store_db db, cp_error_t *err);
/* Loads the keys of db that are within the window of now_ms into an empty
 * structure. CP_EIO for malformed keys. */
cp_status dedup_load(dedup_t *d, store_txn_t *txn, store_db db, int64_t now_ms, cp_error_t *err);
/* Forgets everything (memory only; the next persist deletes the keys). */
void dedup_clear(dedup_t *d);

#endif /* CP_INGEST_DEDUP_H */
