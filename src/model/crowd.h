/*
 * crowd.h — crowd (audience pack) records: name, kind, expression (text and
 * JSON tree), size, version, timestamps, description and the names it
 * references (crowds and tags), which the engine uses for cycle checks and
 * for refusing deletes of referenced crowds and tags.
 *
 * Persistence: STORE_CROWDS name -> JSON record. The members live in the
 * index (bitmap key c/<id>); the id is stable for the crowd's life.
 * Not thread-safe: the engine's lock covers it.
 */
#ifndef CP_MODEL_CROWD_H
#define CP_MODEL_CROWD_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "model/strmap.h"
#include "store/store.h"

#define CROWD_MAX_NAME 128
#define CROWD_MAX_COUNT 100000u
#define CROWD_MAX_DESCRIPTION 4096
#define CROWD_HISTORY_MAX 400        /* size points kept per crowd (the oldest go first) */
#define CROWD_HISTORY_MERGE_MS 60000 /* refreshes closer than this share one point */

/* A crowd's size at one refresh. */
typedef struct crowd_point {
    int64_t time; /* ms */
    uint64_t size, version;
} crowd_point_t;

typedef struct crowd_rec {
    uint32_t id;
    char *name;
    cp_crowd_kind kind;
    char *expr;        /* canonical text form */
    char *tree;        /* JSON tree, compact */
    char *description; /* "" when none */
    uint64_t size, version;
    int64_t created, updated; /* ms */
    char **crowd_refs;
    size_t ncrowd_refs;
    char **tag_refs;
    size_t ntag_refs;
    /* Keeping crowds true (all optional: absent in records of older
     * versions, which load with none of them). */
    crowd_point_t *hist; /* oldest first, at most CROWD_HISTORY_MAX */
    size_t nhist;
    char *refresh;           /* schedule of a refresh, "daily HH:MM", or NULL */
    int refresh_min;         /* its minute of the day */
    char *timezone;          /* the schedule's zone (IANA name or +HH:MM), NULL = server's */
    int64_t last_run;        /* ms of the last scheduled refresh */
    int expire_after_days;   /* 0 = never: frozen after this long unused */
    int64_t last_used;       /* ms: evaluated, exported or referenced (0 = created time) */
    int frozen;              /* expired: neither re-evaluated nor refreshed on schedule */
    int64_t last_used_saved; /* last_used as last stored (memory only) */
    int32_t as_of_day;       /* a static crowd made as of this day (days since 1970-01-01,
                                UTC) is evaluated as of it at every refresh; 0 = current data */
} crowd_rec_t;

typedef struct crowd_set {
    crowd_rec_t **items; /* in creation order */
    size_t n, cap;
    strmap_t by_name; /* name -> index in items */
    uint32_t next_id;
} crowd_set_t;

cp_status crowd_validate_name(const char *name, cp_error_t *err);
const char *crowd_kind_name(cp_crowd_kind k);

void crowd_rec_free(crowd_rec_t *c); /* NULL fine */

void crowd_set_init(crowd_set_t *s);
void crowd_set_free(crowd_set_t *s);
crowd_rec_t *crowd_set_find(const crowd_set_t *s, const char *name);
/* Takes ownership of c on success. */
cp_status crowd_set_add(crowd_set_t *s, crowd_rec_t *c);
/* Removes and frees. */
void crowd_set_remove(crowd_set_t *s, const char *name);

/* Notes the crowd's size and version now in its history: a new point, or
 * with `merge` (automatic re-evaluations, which may follow every write)
 * the last one replaced when it is younger than CROWD_HISTORY_MERGE_MS.
 * CP_ENOMEM. */
cp_status crowd_history_note(crowd_rec_t *c, int64_t now_ms, int merge);
/* Parses "daily HH:MM" into *minute (0..1439). CP_EINVAL naming the text. */
cp_status crowd_parse_refresh(const char *text, int *minute, cp_error_t *err);

cp_status crowd_store_put(store_txn_t *t, const crowd_rec_t *c, cp_error_t *err);
cp_status crowd_store_del(store_txn_t *t, const char *name, cp_error_t *err);
cp_status crowd_set_load(crowd_set_t *s, store_txn_t *t, cp_error_t *err);

#endif /* CP_MODEL_CROWD_H */
