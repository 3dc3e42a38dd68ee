/*
 * users.h — the user dictionary: external id (1..256 bytes of UTF-8) <->
 * dense uint32 ordinal, in two LMDB sub-databases (STORE_UID, STORE_UORD).
 * Ordinals are allocated in arrival order by the engine (meta
 * "next_ordinal") and never reused. The dictionary lives on disk only:
 * lookups go through the caller's transaction, so a write batch sees its
 * own new users.
 */
#ifndef CP_MODEL_USERS_H
#define CP_MODEL_USERS_H

#include <stddef.h>
#include <stdint.h>

#include "crowdpack.h"
#include "store/store.h"

#define USERS_MAX_ID 256
#define USERS_MAX_ORDINAL 0xFFFFFFFEu

/* 1..256 bytes, valid UTF-8, no control characters. */
cp_status users_validate_id(const char *id, size_t len, cp_error_t *err);
/* CP_ENOTFOUND (silent) when unknown. */
cp_status users_lookup(store_txn_t *t, const char *id, size_t len, uint32_t *ord, cp_error_t *err);
cp_status users_add(store_txn_t *t, const char *id, size_t len, uint32_t ord, cp_error_t *err);
cp_status users_remove(store_txn_t *t, const char *id, size_t len, uint32_t ord, cp_error_t *err);
/* The id of an ordinal, borrowed for the transaction. CP_ENOTFOUND silent. */
cp_status users_id_of(store_txn_t *t, uint32_t ord, const char **id, size_t *len, cp_error_t *err);

#endif /* CP_MODEL_USERS_H */
