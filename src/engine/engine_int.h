/*
 * engine_int.h — declarations shared by the engine's own files only
 * (src/engine/); the layers above include engine.h.
 */
#ifndef CP_ENGINE_INT_H
#define CP_ENGINE_INT_H

#include "engine/engine.h"

/* ------------------------------------------------ event application */

/* apply.c: applies a batch of parsed file events into txn, each on its
 * own: a bad one is reported through on_reject with its line (lines[i])
 * and skipped, the others applied. Lock held. */
cp_status intake_import_batch(cp_db_t *db, store_txn_t *txn, ingest_batch_t *b,
                              const uint64_t *lines, cp_reject_fn on_reject, void *ud,
                              int64_t now_ms, uint64_t *counts, cp_error_t *err);
/* events.c: parses and applies one logged request (recovery). Lock held. */
cp_status intake_apply_record(cp_db_t *db, const void *payload, size_t len, uint64_t lsn,
                              cp_error_t *err);
/* delete.c: deletes the user with user id `id`. */
cp_status intake_delete_by_id(cp_db_t *db, const char *id, cp_error_t *err);

/* ------------------------------------------------ traits (traits.c) */

/* A trait as a value of attribute a; *why gets the reason on failure. */
typedef struct tval {
    int kind; /* 0 clear, 1 int, 2 str, 3 geo */
    int64_t i;
    char sbuf[64];
    const char *s;
    size_t slen;
    double lat, lon;
} tval_t;

int trait_value(const schema_attr_t *a, const ev_prop_t *v, const json_t *raw, tval_t *o, char *why,
                size_t cap);
int trait_value_json(const schema_attr_t *a, const json_t *v, tval_t *o, char *why, size_t cap);
cp_status set_value(cp_db_t *db, store_txn_t *txn, const schema_attr_t *a, uint32_t ord,
                    const tval_t *t, uint32_t *vid_out, cp_error_t *err);
json_t *attr_json(const cp_db_t *db, const schema_attr_t *a, uint32_t ord, int typed);
void ut_key(unsigned char k[7], uint32_t ord);
cp_status traits_get(store_txn_t *txn, uint32_t ord, json_t **out, cp_error_t *err);
cp_status traits_put(store_txn_t *txn, uint32_t ord, json_t *t, cp_error_t *err);
json_t *user_own(cp_db_t *db, store_txn_t *txn, uint32_t ord);
cp_status user_restore(cp_db_t *db, store_txn_t *txn, uint32_t ord, const json_t *own,
                       cp_error_t *err);

/* ---------------------------------------------------- other files */

void cfg_clear(intake_cfg_t *c);
void cfg_defaults(intake_cfg_t *c);
cp_status cfg_apply_json(const json_t *j, intake_cfg_t *c, ident_config_t *idc, cp_error_t *err);
cp_status eval_crowd(cp_db_t *db, const crowd_rec_t *c, roaring_bitmap_t **out, cp_error_t *err);
cp_status wal_trim(cp_db_t *db, uint64_t lsn, cp_error_t *err);
int ckpt_room(cp_db_t *db);
void *ckpt_main(void *arg);
cp_status find_user(cp_db_t *db, store_txn_t *txn, const char *type, const char *value,
                    uint32_t *ord, cp_error_t *err);
cp_status parse_doc(const char *json, size_t len, const char *key, json_t **doc, json_t **arr,
                    cp_error_t *err);

/* -------------------------------------------- the intake writer (writer.c) */

/* One event request queued for the intake writer (writer.c, events.c). */
typedef struct intake_req {
    struct intake_req *next;
    ingest_batch_t *b;
    batch_prep_t *bp;
    const unsigned char *rec; /* the WAL record */
    size_t reclen;
    int64_t recv;
    apply_counts_t c;
    uint64_t lsn;
    cp_status rc;
    cp_error_t *err;   /* the requester's (may be NULL) */
    int strict;        /* CP_INGEST_STRICT */
    int done;          /* set by the writer under grp_mu; the request is the requester's again */
    pthread_cond_t cv; /* its requester waits here: only it is woken */
} intake_req_t;
void group_submit(cp_db_t *db, intake_req_t *req);
void iw_wait_closed(cp_db_t *db, int *wanting);
void iw_unwant(cp_db_t *db);

/* A crowd's schedule and expiry settings (cp_crowd_settings_json's
 * object), parsed and checked before any write, applied to a record in
 * memory: the create path stores them in the crowd's first record. */
typedef struct crowd_settings {
    int set_refresh, set_tz, set_expire, thaw;
    char *refresh; /* owned until applied; NULL = stop refreshing */
    int minute;
    char *tz; /* owned until applied; NULL = the server's zone */
    int expire_after_days;
} crowd_settings_t;
cp_status crowd_settings_parse(const char *json, size_t len, crowd_settings_t *s, cp_error_t *err);
/* Moves the strings into c; s then holds nothing to free. */
void crowd_settings_apply(crowd_rec_t *c, crowd_settings_t *s, int64_t now);
void crowd_settings_free(crowd_settings_t *s);

#endif /* CP_ENGINE_INT_H */
