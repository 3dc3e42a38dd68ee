/*
 * crowd_schedule.c — keeping crowds true: size history, scheduled refreshes of
 * static crowds and expiry of crowds nobody uses (docs/api.md "Crowd
 * refresh, schedule and history").
 *
 * Dynamic crowds are re-evaluated at every commit that changed data, in
 * dependency order (crowds_reeval_dynamic), so a refresh of a crowd reaches
 * every dynamic crowd built on it in the same commit. Static crowds are
 * snapshots: they change when refreshed by hand or by their schedule
 * ("daily HH:MM" in a time zone, run by the server's scheduler through
 * cp_crowds_tick). Each refresh that changes a crowd adds a point (time,
 * size, version) to its history (crowd_history_note; bounded).
 *
 * Expiry, as Tencent DMP does it: a crowd with expire_after_days that has
 * not been used for that long is frozen — kept with its members, but no
 * longer re-evaluated or refreshed on schedule, so it costs nothing — until
 * someone refreshes it by hand (which thaws it). "Used" means evaluated
 * (referenced by a query or another crowd's evaluation), exported, sampled
 * or listed as members, or referenced by a crowd created or updated.
 * Reads mark it in memory (crowds_mark_used); the tick writes the marks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine_int.h"

#define DAY_MS (86400ll * 1000)

/* ------------------------------------------------------------ time zones */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* UTC offset (seconds) of an IANA zone at time t from its TZif file (the
 * version 1 part: transitions until 2038, enough for a daily schedule). */
static cp_status tzif_offset(const char *name, int64_t t, long *off, cp_error_t *err)
{
    for (const char *p = name; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '/' || *p == '_' || *p == '-' || *p == '+') ||
            (p[0] == '/' && p[1] == '/'))
            return CP_ERR(err, CP_EINVAL, "time zone \"%.64s\" is not a zone name", name);
    if (name[0] == '/' || strstr(name, "..") || strlen(name) > 64)
        return CP_ERR(err, CP_EINVAL, "time zone \"%.64s\" is not a zone name", name);
    char path[128];
    snprintf(path, sizeof path, "/usr/share/zoneinfo/%s", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return CP_ERR(err, CP_EINVAL,
                      "unknown time zone \"%s\" (an IANA name such as Asia/Shanghai, or an "
                      "offset such as +08:00)",
                      name);
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n < 44 || memcmp(buf, "TZif", 4) != 0)
        return CP_ERR(err, CP_EINVAL, "time zone file %s is not in TZif format", path);
    uint32_t isut = be32(buf + 20), isstd = be32(buf + 24), leap = be32(buf + 28),
             timecnt = be32(buf + 32), typecnt = be32(buf + 36), charcnt = be32(buf + 40);
    uint64_t need = 44 + (uint64_t)timecnt * 5 + (uint64_t)typecnt * 6 + charcnt +
                    (uint64_t)leap * 8 + isstd + isut;
    if (typecnt == 0 || need > n)
        return CP_ERR(err, CP_EINVAL, "time zone file %s is damaged", path);
    const unsigned char *times = buf + 44, *idx = times + 4 * (size_t)timecnt,
                        *types = idx + timecnt;
    uint32_t type = 0;
    for (uint32_t i = 0; i < typecnt; i++)
        if (types[6 * i + 4] == 0) { /* before any transition: the first standard time */
            type = i;
            break;
        }
    for (uint32_t i = 0; i < timecnt && (int32_t)be32(times + 4 * i) <= t; i++)
        type = idx[i] < typecnt ? idx[i] : type;
    *off = (int32_t)be32(types + 6 * type);
    return CP_OK;
}

/* UTC offset (seconds) at time t (s) of a crowd's zone: NULL = the
 * server's, "+08:00" / "-0530" / "UTC+8" fixed, else an IANA name. */
static cp_status zone_offset(const char *tz, int64_t t, long *off, cp_error_t *err)
{
    if (tz == NULL || tz[0] == '\0') {
        time_t tt = (time_t)t;
        struct tm tm;
        if (localtime_r(&tt, &tm) == NULL)
            return CP_ERR(err, CP_EIO, "localtime failed");
        *off = tm.tm_gmtoff;
        return CP_OK;
    }
    const char *p = tz;
    if (strncmp(p, "UTC", 3) == 0 || strncmp(p, "GMT", 3) == 0)
        p += 3;
    if (*p == '\0') {
        *off = 0;
        return CP_OK;
    }
    if (*p == '+' || *p == '-') {
        int h = 0, m = 0, used = 0;
        if ((sscanf(p + 1, "%2d:%2d%n", &h, &m, &used) == 2 ||
             sscanf(p + 1, "%2d%2d%n", &h, &m, &used) == 2 ||
             (m = 0, sscanf(p + 1, "%2d%n", &h, &used) == 1)) &&
            p[1 + used] == '\0' && h <= 14 && m < 60) {
            *off = (*p == '-' ? -1 : 1) * (h * 3600l + m * 60l);
            return CP_OK;
        }
        return CP_ERR(err, CP_EINVAL, "time zone offset \"%.32s\" is not +HH:MM", tz);
    }
    return tzif_offset(tz, t, off, err);
}

/* The instant (ms) of the schedule's run on the local day of now_ms. */
static cp_status run_today(const crowd_rec_t *c, int64_t now_ms, int64_t *at, cp_error_t *err)
{
    long off;
    cp_status rc = zone_offset(c->timezone, now_ms / 1000, &off, err);
    if (rc)
        return rc;
    int64_t local = now_ms + off * 1000;
    int64_t day = local - ((local % DAY_MS) + DAY_MS) % DAY_MS;
    *at = day + (int64_t)c->refresh_min * 60000 - off * 1000;
    return CP_OK;
}

/* --------------------------------------------------------------- settings */

void crowd_settings_free(crowd_settings_t *s)
{
    free(s->refresh);
    free(s->tz);
    memset(s, 0, sizeof *s);
}

cp_status crowd_settings_parse(const char *json, size_t len, crowd_settings_t *s, cp_error_t *err)
{
    memset(s, 0, sizeof *s);
    json_error_t je;
    json_t *j = json_loadb_checked(json, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL && json_is_oom(&je))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading crowd settings");
    if (!json_is_object(j)) {
        json_decref(j);
        return CP_ERR(err, CP_EINVAL, "crowd settings: expected a JSON object");
    }
    const char *k;
    json_t *v;
    cp_status rc = CP_OK;
    json_object_foreach(j, k, v)
    {
        if (strcmp(k, "refresh") && strcmp(k, "timezone") && strcmp(k, "expire_after_days") &&
            strcmp(k, "frozen")) {
            rc = CP_ERR(err, CP_EINVAL,
                        "crowd settings: unknown field \"%.64s\" (known: refresh, timezone, "
                        "expire_after_days, frozen)",
                        k);
            goto out;
        }
    }
    json_t *r = json_object_get(j, "refresh"), *z = json_object_get(j, "timezone"),
           *x = json_object_get(j, "expire_after_days"), *fz = json_object_get(j, "frozen");
    if (r && !json_is_null(r) &&
        (!json_is_string(r) || (rc = crowd_parse_refresh(json_string_value(r), &s->minute, err)))) {
        if (!rc)
            rc = CP_ERR(err, CP_EINVAL, "crowd settings: refresh must be \"daily HH:MM\" or null");
        goto out;
    }
    if (z && !json_is_null(z)) {
        long off;
        if (!json_is_string(z)) {
            rc = CP_ERR(err, CP_EINVAL, "crowd settings: timezone must be a string or null");
            goto out;
        }
        if ((rc = zone_offset(json_string_value(z), time_now_ms() / 1000, &off, err)))
            goto out;
    }
    if (x && (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > 36500)) {
        rc =
            CP_ERR(err, CP_EINVAL, "crowd settings: expire_after_days must be 0..36500 (0: never)");
        goto out;
    }
    if (fz && !json_is_false(fz)) {
        rc = CP_ERR(err, CP_EINVAL,
                    "crowd settings: frozen can only be set to false (crowds freeze by expiry)");
        goto out;
    }
    s->set_refresh = r != NULL;
    s->set_tz = z != NULL;
    s->set_expire = x != NULL;
    s->expire_after_days = x ? (int)json_integer_value(x) : 0;
    s->thaw = fz != NULL || x != NULL;
    if ((r && json_is_string(r) && (s->refresh = strdup(json_string_value(r))) == NULL) ||
        (z && json_is_string(z) && (s->tz = strdup(json_string_value(z))) == NULL))
        rc = CP_ERR(err, CP_ENOMEM, "out of memory");
out:
    if (rc)
        crowd_settings_free(s);
    if (rc && rc != CP_ENOMEM && err && strncmp(err->message, "crowd settings", 14) != 0)
        error_prefix(err, "crowd settings: ");
    json_decref(j);
    return rc;
}

void crowd_settings_apply(crowd_rec_t *c, crowd_settings_t *s, int64_t now)
{
    if (s->set_refresh) {
        free(c->refresh);
        c->refresh = s->refresh;
        s->refresh = NULL;
        c->refresh_min = s->minute;
        c->last_run = now; /* the first run is the next one due, not at once */
    }
    if (s->set_tz) {
        free(c->timezone);
        c->timezone = s->tz;
        s->tz = NULL;
    }
    if (s->set_expire)
        c->expire_after_days = s->expire_after_days;
    if (s->thaw) {
        c->frozen = 0;
        crowds_mark_used(c, now);
    }
}

/* Takes the write lock and finds crowd `name` for a change. On CP_OK the
 * caller holds the lock through *txn and ends it with db_write_end, _fail
 * or _abort; on any failure nothing is held. */
cp_status crowd_write_find(cp_db_t *db, const char *name, store_txn_t **txn, crowd_rec_t **c,
                           cp_error_t *err)
{
    cp_status rc = db_write_begin(db, txn, err);
    if (rc)
        return rc;
    if ((*c = crowd_set_find(&db->crowds, name)) == NULL) {
        db_write_abort(db, *txn);
        *txn = NULL;
        return CP_ERR(err, CP_ENOTFOUND, "crowd \"%s\" not found", name);
    }
    return CP_OK;
}

/* Takes the read lock and finds crowd `name`. On CP_OK the caller holds
 * the lock and ends it with db_read_end; *c is borrowed until then. On
 * any failure nothing is held. */
cp_status crowd_read_find(cp_db_t *db, const char *name, const crowd_rec_t **c, cp_error_t *err)
{
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    if ((*c = crowd_set_find(&db->crowds, name)) == NULL) {
        db_read_end(db);
        return CP_ERR(err, CP_ENOTFOUND, "crowd \"%s\" not found", name);
    }
    return CP_OK;
}

cp_status cp_crowd_settings_json(cp_db_t *db, const char *name, const char *json, size_t len,
                                 cp_error_t *err)
{
    if (name == NULL || json == NULL)
        return CP_ERR(err, CP_EINVAL, "name or settings is NULL");
    crowd_settings_t set;
    cp_status rc = crowd_settings_parse(json, len, &set, err);
    if (rc)
        return rc;
    store_txn_t *txn;
    crowd_rec_t *c;
    if ((rc = crowd_write_find(db, name, &txn, &c, err)))
        goto out;
    crowd_settings_apply(c, &set, time_now_ms());
    if ((rc = crowd_store_put(txn, c, err)))
        rc = db_write_fail(db, txn, rc, err);
    else
        rc = db_write_end(db, txn, err);
out:
    crowd_settings_free(&set);
    return rc;
}

/* ---------------------------------------------------------------- history */

cp_status cp_crowd_history_json(cp_db_t *db, const char *name, char **out, cp_error_t *err)
{
    if (out == NULL || name == NULL)
        return CP_ERR(err, CP_EINVAL, "name or out is NULL");
    *out = NULL;
    const crowd_rec_t *c;
    cp_status rc = crowd_read_find(db, name, &c, err);
    if (rc)
        return rc;
    json_t *pts = json_array();
    int bad = pts == NULL;
    for (size_t i = 0; !bad && i < c->nhist; i++)
        bad |= json_array_append_new(
            pts, json_pack("{s:I,s:I,s:I}", "time", (json_int_t)c->hist[i].time, "size",
                           (json_int_t)c->hist[i].size, "version", (json_int_t)c->hist[i].version));
    json_t *o = bad ? NULL
                    : json_pack("{s:s,s:s,s:I,s:I,s:o}", "crowd", c->name, "kind",
                                crowd_kind_name(c->kind), "size", (json_int_t)c->size, "version",
                                (json_int_t)c->version, "points", pts);
    if (o == NULL && !bad)
        pts = NULL; /* json_pack took it */
    if (bad)
        json_decref(pts);
    db_read_end(db);
    return db_json_out(o, out, err);
}

/* Settings and state of a crowd for its JSON view (crowd_obj). */
int crowds_obj_keep(json_t *o, const crowd_rec_t *c)
{
    int bad = 0;
    if (c->as_of_day) {
        /* INT32_MIN stands for day 0, 1970-01-01 (db_as_of_day) */
        time_t t = (time_t)(c->as_of_day == INT32_MIN ? 0 : c->as_of_day) * 86400;
        struct tm tm;
        char day[32];
        gmtime_r(&t, &tm);
        strftime(day, sizeof day, "%Y-%m-%d", &tm);
        bad |= json_object_set_new(o, "as_of", json_string(day));
    }
    if (c->refresh) {
        bad |= json_object_set_new(o, "refresh", json_string(c->refresh));
        bad |= json_object_set_new(o, "timezone",
                                   c->timezone ? json_string(c->timezone) : json_null());
        bad |= json_object_set_new(o, "last_scheduled_refresh", json_integer(c->last_run));
    }
    if (c->expire_after_days)
        bad |= json_object_set_new(o, "expire_after_days", json_integer(c->expire_after_days));
    int64_t used = __atomic_load_n(&c->last_used, __ATOMIC_RELAXED);
    bad |= json_object_set_new(o, "last_used", json_integer(used ? used : c->created));
    bad |= json_object_set_new(o, "frozen", json_boolean(c->frozen));
    return bad;
}

/* ------------------------------------------------------------------- tick */

/* Refreshes c now (write lock held): new members, size, version, history. */
static cp_status refresh_one(cp_db_t *db, store_txn_t *txn, crowd_rec_t *c, int64_t now,
                             cp_error_t *err)
{
    roaring_bitmap_t *bm = NULL;
    cp_status rc = crowds_eval_one(db, c, &bm, err);
    if (rc)
        return rc;
    c->size = roaring_bitmap_get_cardinality(bm);
    c->version++;
    c->updated = now;
    if (index_crowd_set(db->ix, c->id, bm)) {
        index_bm_free(bm);
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    if (crowd_history_note(c, now, 0))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    return CP_OK;
}

cp_status cp_crowds_tick(cp_db_t *db, int64_t now_ms, int *ran, cp_error_t *err)
{
    if (ran)
        *ran = 0;
    /* Nothing to do (the usual case): no write transaction at all. */
    cp_status rc = db_read_begin_mem(db, err);
    if (rc)
        return rc;
    int any = 0;
    for (size_t i = 0; i < db->crowds.n && !any; i++) {
        const crowd_rec_t *c = db->crowds.items[i];
        any = c->refresh || c->expire_after_days ||
              __atomic_load_n(&c->last_used, __ATOMIC_RELAXED) != c->last_used_saved;
    }
    db_read_end(db);
    if (!any)
        return CP_OK;
    store_txn_t *txn;
    if ((rc = db_write_begin(db, &txn, err)))
        return rc;
    int n = 0;
    for (size_t i = 0; i < db->crowds.n && rc == CP_OK; i++) {
        crowd_rec_t *c = db->crowds.items[i];
        int dirty = 0;
        int64_t used = __atomic_load_n(&c->last_used, __ATOMIC_RELAXED);
        if (used != c->last_used_saved)
            dirty = 1;
        if (used == 0)
            used = c->created;
        if (c->expire_after_days && !c->frozen &&
            now_ms - used > (int64_t)c->expire_after_days * DAY_MS) {
            c->frozen = 1;
            dirty = 1;
            n++;
        }
        if (c->refresh && !c->frozen) {
            int64_t at;
            if ((rc = run_today(c, now_ms, &at, err))) {
                error_prefix(err, "crowd \"%s\": ", c->name);
                break;
            }
            if (now_ms >= at && c->last_run < at) {
                if ((rc = refresh_one(db, txn, c, now_ms, err)))
                    break;
                c->last_run = now_ms;
                dirty = 1;
                n++;
            }
        }
        if (dirty && (rc = crowd_store_put(txn, c, err)) == CP_OK)
            c->last_used_saved = __atomic_load_n(&c->last_used, __ATOMIC_RELAXED);
    }
    if (rc)
        return db_write_fail(db, txn, rc, err);
    if ((rc = db_write_end(db, txn, err)))
        return rc;
    if (ran)
        *ran = n;
    return CP_OK;
}
