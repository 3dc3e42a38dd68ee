/*
 * feed.h — the change feed's side inside the engine (feed.c; the public
 * contract is cp_db_subscribe in crowdpack.h). The write paths call these
 * at a handful of points; the feed knows nothing of its subscribers'
 * purposes, and the write paths nothing of the subscribers.
 */
#ifndef CP_ENGINE_FEED_H
#define CP_ENGINE_FEED_H

#include "engine/engine.h"

/* After a commit numbered `seq` succeeded (write lock held): when someone
 * listens, turns what the index recorded (index/change.h) and the events
 * noted into the commit's record and queues it for the feed thread; in
 * every case clears the recorder for the next write. Never fails: a record
 * that could not be built whole is delivered marked incomplete. */
void feed_commit(cp_db_t *db, uint64_t seq);
/* A write ended without a commit (aborted or failed): forgets what it
 * recorded (write lock held). */
void feed_discard(cp_db_t *db);
/* apply_event: event e was applied to user ord (write lock held). Costs a
 * test when no subscriber wants events. */
void feed_note_event(cp_db_t *db, const ingest_event_t *e, uint32_t ord);
/* Before a write takes the handle's lock (holding no lock): waits while
 * the feed is too far behind its writers. Returns at once on the feed
 * thread, when nobody subscribes, and while the handle closes. */
void feed_wait_room(cp_db_t *db);
/* How far the feed is behind its writers: records (commits) and bytes
 * waiting for the feed thread now, the most ever waiting since the limits
 * were last set, and the limits past which writers wait. All 0 when
 * nobody ever subscribed. For tests and stats. */
typedef struct feed_backlog {
    size_t queued, peak_queued, max_records;
    uint64_t bytes, peak_bytes, max_bytes;
} feed_backlog_t;
void feed_backlog(cp_db_t *db, feed_backlog_t *out);
/* Lowers (or, with 0, restores) the limits of feed_wait_room and restarts
 * the peaks: for tests, which cannot wait for 1,024 commits. No-op until
 * the first subscription. */
void feed_set_limits(cp_db_t *db, size_t max_records, uint64_t max_bytes);
/* cp_db_close, after the last commit (intake closed), before the index is
 * freed: delivers what waits, stops the feed thread, frees the feed. */
void feed_close(cp_db_t *db);

#endif /* CP_ENGINE_FEED_H */
