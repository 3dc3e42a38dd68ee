/*
 * value.c — helpers of value.h: tag members and int attributes written
 * back by RFM, AIPL and funnels, and UTC dates.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/value.h"

cp_status val_tag_set_members(cp_db_t *db, uint32_t id, const roaring_bitmap_t *members)
{
    const idx_tag_t *t = index_tag(db->ix, id);
    if (t == NULL)
        return CP_EINVAL;
    roaring_bitmap_t *want = roaring_bitmap_and(members, db->ix->universe);
    roaring_bitmap_t *leave = want && t->direct ? roaring_bitmap_andnot(t->direct, want) : NULL;
    roaring_bitmap_t *join = want && t->direct ? roaring_bitmap_andnot(want, t->direct)
                                               : (want ? roaring_bitmap_copy(want) : NULL);
    cp_status rc = CP_OK;
    if (want == NULL || join == NULL || (t->direct && leave == NULL)) {
        rc = CP_ENOMEM;
        goto out;
    }
    roaring_uint32_iterator_t it;
    if (leave) {
        roaring_init_iterator(leave, &it);
        for (; it.has_value; roaring_advance_uint32_iterator(&it))
            index_tag_unassign(db->ix, &db->tax, it.current_value, id);
    }
    roaring_init_iterator(join, &it);
    for (; it.has_value; roaring_advance_uint32_iterator(&it))
        index_tag_assign(db->ix, &db->tax, it.current_value, id);
out:
    index_bm_free(want);
    index_bm_free(leave);
    index_bm_free(join);
    return rc;
}

cp_status val_ensure_int_attr(cp_db_t *db, store_txn_t *txn, const char *name, uint32_t *id,
                              int *touched, cp_error_t *err)
{
    const schema_attr_t *a = schema_find(&db->sch, name, strlen(name));
    if (a) {
        if (a->type != CP_ATTR_INT)
            return CP_ERR(err, CP_ECONFLICT,
                          "attribute \"%s\" exists with another type; it must be an int", name);
        *id = a->id;
        return CP_OK;
    }
    int created = 0;
    cp_status rc = schema_define(&db->sch, txn, name, CP_ATTR_INT, id, &created, err);
    if (rc)
        return rc;
    if (created) {
        *touched = 1;
        if ((rc = index_attr_add(db->ix, *id, CP_ATTR_INT)))
            return CP_ERR(err, rc, "out of memory declaring \"%s\"", name);
    }
    return CP_OK;
}

int val_day_parse(const char *s, int32_t *day)
{
    int64_t secs;
    if (s == NULL || time_parse(s, strlen(s), &secs))
        return -1;
    int64_t d = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    *day = (int32_t)d;
    return 0;
}

const char *val_day_format(int32_t day, char *buf)
{
    char t[48];
    time_format((int64_t)day * 86400, t, sizeof t);
    snprintf(buf, 16, "%.10s", t);
    return buf;
}

int32_t val_default_day(cp_db_t *db, int *from_data)
{
    int32_t today = (int32_t)(time_now_ms() / 86400000), first, last;
    *from_data = 0;
    if (db->beh && beh_day_range(db->beh, &first, &last) && last < today) {
        *from_data = 1;
        return last;
    }
    return today;
}

cp_status val_window_warn(cp_db_t *db, int32_t d0, int32_t d1, json_t *warnings)
{
    int32_t first, last;
    char a[16], b[16], c[16], d[16], msg[320];
    if (db->beh == NULL || !beh_day_range(db->beh, &first, &last)) {
        snprintf(msg, sizeof msg, "no events have been recorded, so every count is 0");
    } else if (last < d0 || first > d1) {
        snprintf(msg, sizeof msg,
                 "the window %s .. %s holds no events: the data runs from %s to %s; give "
                 "\"as_of\" (--as-of) or \"from\"/\"to\" within it",
                 val_day_format(d0, a), val_day_format(d1, b), val_day_format(first, c),
                 val_day_format(last, d));
    } else {
        return CP_OK;
    }
    return json_array_append_new(warnings, json_string(msg)) ? CP_ENOMEM : CP_OK;
}

const char *val_user_id(store_txn_t *txn, uint32_t ord, char *buf, size_t cap)
{
    const char *id;
    size_t n;
    if (txn && users_id_of(txn, ord, &id, &n, NULL) == CP_OK)
        snprintf(buf, cap, "%.*s", (int)n, id);
    else
        snprintf(buf, cap, "#%u", ord);
    return buf;
}
