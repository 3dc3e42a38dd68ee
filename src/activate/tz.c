/*
 * tz.c — local calendar arithmetic for campaigns: schedules, dayparting and
 * frequency-cap periods are in the campaign's time zone, not the server's.
 *
 * Reads the system's TZif files (RFC 8536; Debian's tzdata, "fat" files
 * listing every transition through 2037) once per zone at load, so lookups
 * on the bid path are a binary search with no locks and no TZ environment
 * (localtime_r would need setenv("TZ"), which is not thread-safe). Past the
 * last transition the last offset holds: exact for zones without daylight
 * saving (Asia/Shanghai), and for others until the table ends (2037).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activate/campaign.h"
#include "util/util.h"

#define TZ_DIR "/usr/share/zoneinfo/"
#define TZ_MAX_FILE (1u << 20)
#define DAY_MS 86400000LL
#define HOUR_MS 3600000LL

struct tz {
    size_t n;          /* transitions */
    int64_t *at_ms;    /* [n] UTC instants, ascending */
    int64_t *off_ms;   /* [n] offset from at_ms[i] on */
    int64_t first_off; /* before the first transition */
};

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

/* A zone name is a relative path of letters, digits and "/_+-": nothing
 * that could leave TZ_DIR. */
static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64 || name[0] == '/' || strstr(name, "..") != NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '/' || c == '_' || c == '+' || c == '-'))
            return 0;
    }
    return 1;
}

cp_status tz_load(const char *name, tz_t **out, cp_error_t *err)
{
    *out = NULL;
    if (name == NULL || !name_ok(name))
        return CP_ERR(err, CP_EINVAL,
                      "unknown time zone \"%s\" (an IANA name such as "
                      "\"Asia/Shanghai\")",
                      name ? name : "");
    char path[128];
    snprintf(path, sizeof path, TZ_DIR "%s", name);
    unsigned char *d = NULL;
    tz_t *tz = NULL;
    cp_status st = CP_OK;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return CP_ERR(err, CP_EINVAL, "unknown time zone \"%s\" (no %s: %s)", name, path,
                      strerror(errno));
    d = malloc(TZ_MAX_FILE);
    if (d == NULL) {
        st = CP_ERR(err, CP_ENOMEM, "out of memory reading %s", path);
        goto out;
    }
    size_t len = fread(d, 1, TZ_MAX_FILE, f);
    /* Version 1 header, then (version 2+) a second header with 64-bit times. */
    if (len < 44 || memcmp(d, "TZif", 4) != 0 || d[4] < '2') {
        st = CP_ERR(err, CP_EINVAL, "time zone \"%s\": %s is not a TZif version 2+ file", name,
                    path);
        goto out;
    }
    /* Header counts: isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt. */
    size_t v1 = (size_t)be32(d + 32) * 5 + (size_t)be32(d + 36) * 6 + be32(d + 40) +
                (size_t)be32(d + 28) * 8 + be32(d + 24) + be32(d + 20);
    const unsigned char *h = d + 44 + v1;
    if ((size_t)(h - d) + 44 > len || memcmp(h, "TZif", 4) != 0) {
        st = CP_ERR(err, CP_EINVAL, "time zone \"%s\": %s is damaged", name, path);
        goto out;
    }
    uint32_t isutcnt = be32(h + 20), isstdcnt = be32(h + 24), leapcnt = be32(h + 28);
    uint32_t timecnt = be32(h + 32), typecnt = be32(h + 36), charcnt = be32(h + 40);
    const unsigned char *p = h + 44;
    size_t need = (size_t)timecnt * 9 + (size_t)typecnt * 6 + charcnt + (size_t)leapcnt * 12 +
                  isstdcnt + isutcnt;
    if (typecnt == 0 || (size_t)(p - d) + need > len) {
        st = CP_ERR(err, CP_EINVAL, "time zone \"%s\": %s is damaged", name, path);
        goto out;
    }
    const unsigned char *times = p, *idx = p + (size_t)timecnt * 8;
    const unsigned char *types = idx + timecnt;
    tz = calloc(1, sizeof *tz);
    if (tz == NULL || (timecnt > 0 && ((tz->at_ms = malloc(timecnt * sizeof(int64_t))) == NULL ||
                                       (tz->off_ms = malloc(timecnt * sizeof(int64_t))) == NULL))) {
        st = CP_ERR(err, CP_ENOMEM, "out of memory reading %s", path);
        goto out;
    }
    /* Before the first transition: the first non-DST type (RFC 8536 3.2). */
    uint32_t first = 0;
    for (uint32_t t = 0; t < typecnt; t++) {
        if (types[t * 6 + 4] == 0) {
            first = t;
            break;
        }
    }
    tz->first_off = (int64_t)(int32_t)be32(types + first * 6) * 1000;
    for (uint32_t i = 0; i < timecnt; i++) {
        uint32_t t = idx[i];
        if (t >= typecnt) {
            st = CP_ERR(err, CP_EINVAL, "time zone \"%s\": %s is damaged", name, path);
            goto out;
        }
        tz->at_ms[i] = be64(times + (size_t)i * 8) * 1000;
        tz->off_ms[i] = (int64_t)(int32_t)be32(types + t * 6) * 1000;
    }
    tz->n = timecnt;
    *out = tz;
    tz = NULL;
out:
    fclose(f);
    free(d);
    tz_free(tz);
    return st;
}

void tz_free(tz_t *tz)
{
    if (tz == NULL)
        return;
    free(tz->at_ms);
    free(tz->off_ms);
    free(tz);
}

int64_t tz_offset_ms(const tz_t *tz, int64_t utc_ms)
{
    if (tz == NULL || tz->n == 0 || utc_ms < tz->at_ms[0])
        return tz ? tz->first_off : 0;
    size_t lo = 0, hi = tz->n; /* the last transition at or before utc_ms */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->at_ms[mid] <= utc_ms)
            lo = mid;
        else
            hi = mid;
    }
    return tz->off_ms[lo];
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int tz_hour_of_week(const tz_t *tz, int64_t utc_ms)
{
    int64_t local = utc_ms + tz_offset_ms(tz, utc_ms);
    int64_t day = floor_div(local, DAY_MS);
    int dow = (int)(((day + 3) % 7 + 7) % 7); /* 1970-01-01 was a Thursday: Monday = 0 */
    int hour = (int)((local - day * DAY_MS) / HOUR_MS);
    return dow * 24 + hour;
}

int64_t tz_period_start(const tz_t *tz, act_period per, int64_t utc_ms)
{
    int64_t off = tz_offset_ms(tz, utc_ms);
    int64_t local = utc_ms + off, start;
    switch (per) {
    case ACT_PER_HOUR:
        start = floor_div(local, HOUR_MS) * HOUR_MS;
        break;
    case ACT_PER_DAY:
        start = floor_div(local, DAY_MS) * DAY_MS;
        break;
    case ACT_PER_WEEK: {
        int64_t day = floor_div(local, DAY_MS);
        start = (day - (((day + 3) % 7 + 7) % 7)) * DAY_MS;
        break;
    }
    default:
        return 0;
    }
    /* Back to UTC with the offset in force at the local start (it may
     * differ from utc_ms's across a daylight-saving change). */
    int64_t guess = start - off;
    return start - tz_offset_ms(tz, guess);
}
