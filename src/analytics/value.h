/*
 * value.h — what the value and journey models share (RFM in rfm.c, AIPL
 * stages and funnels in aipl.c): writing computed memberships back as tags
 * and int attributes inside one engine write transaction, and UTC dates.
 *
 * All functions taking a txn run under the engine's write lock, between
 * db_write_begin and db_write_end (or db_write_fail once memory changed).
 */
#ifndef CP_ANALYTICS_VALUE_H
#define CP_ANALYTICS_VALUE_H

#include <roaring/roaring.h>
#include <stdint.h>

#include "analytics/analytics.h"

/* Makes `members` (clipped to live users) the exact direct members of tag
 * id: users leaving are unassigned, users joining assigned. CP_ENOMEM. */
cp_status val_tag_set_members(cp_db_t *db, uint32_t id, const roaring_bitmap_t *members);
/* Declares an int attribute if missing (CP_ECONFLICT if `name` exists
 * with another type, naming it). */
cp_status val_ensure_int_attr(cp_db_t *db, store_txn_t *txn, const char *name, uint32_t *id,
                              int *touched, cp_error_t *err);

/* "YYYY-MM-DD" (or any time_parse form) to days since 1970-01-01 UTC.
 * 0 on success. */
int val_day_parse(const char *s, int32_t *day);
/* Days since the epoch to "YYYY-MM-DD" (buf >= 16). */
const char *val_day_format(int32_t day, char *buf);

/*
 * The day a report's window ends on when the request names none (lock
 * held): the last day with events when that is before today — a
 * historical import, whose reports would otherwise look at empty days, as
 * RFM takes its reference date from the data — else today (UTC). *from_data
 * is 1 when the data decided.
 */
int32_t val_default_day(cp_db_t *db, int *from_data);

/*
 * Appends to `warnings` (a JSON array) one sentence when the behaviour
 * index holds no event in the window [d0, d1], naming the days the data
 * spans and how to look there (lock held). CP_ENOMEM.
 */
cp_status val_window_warn(cp_db_t *db, int32_t d0, int32_t d1, json_t *warnings);

/* The user id of an ordinal for reports ("#ORD" when unknown): into buf
 * (>= USERS_MAX_ID + 1). */
const char *val_user_id(store_txn_t *txn, uint32_t ord, char *buf, size_t cap);

#define VAL_MAX_FILTERS 3 /* property filters on one event (did()'s limit) */

/*
 * Validates a filters object {"prop": "value" | int | bool} (NULL = none)
 * against the indexed event properties; `what` prefixes messages. Fills
 * props[0..*n) borrowing names and values from f (integers rendered into
 * store, 64 bytes each). CP_EINVAL naming the property.
 */
cp_status val_filters_parse(cp_db_t *db, const json_t *f, const char *what, beh_prop_t *props,
                            char (*store)[64], size_t *n, cp_error_t *err);

#endif /* CP_ANALYTICS_VALUE_H */
