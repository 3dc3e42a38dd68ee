/* time.c — clocks and ISO 8601 (UTC) parsing and formatting. */
#include <stdio.h>
#include <time.h>

#include "util/util.h"

int64_t time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, size_t len, size_t at, int n, int *out)
{
    int v = 0;
    if (at + (size_t)n > len)
        return -1;
    for (int i = 0; i < n; i++) {
        char c = s[at + (size_t)i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}

static int leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int time_parse(const char *s, size_t len, int64_t *secs)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h = 0, mi = 0, se = 0;
    size_t p = 0;
    if (digits(s, len, 0, 4, &y) || len < 10 || s[4] != '-' || digits(s, len, 5, 2, &mo) ||
        s[7] != '-' || digits(s, len, 8, 2, &d))
        return -1;
    if (y < 1 || mo < 1 || mo > 12 || d < 1)
        return -1;
    if (d > mdays[mo - 1] + (mo == 2 && leap(y)))
        return -1;
    p = 10;
    int64_t offset = 0;
    if (p < len) {
        if (s[p] != 'T' && s[p] != 't' && s[p] != ' ')
            return -1;
        p++;
        if (digits(s, len, p, 2, &h) || p + 2 >= len || s[p + 2] != ':' ||
            digits(s, len, p + 3, 2, &mi))
            return -1;
        p += 5;
        if (p < len && s[p] == ':') {
            if (digits(s, len, p + 1, 2, &se))
                return -1;
            p += 3;
            if (p < len && (s[p] == '.' || s[p] == ',')) {
                p++;
                size_t f = p;
                while (p < len && s[p] >= '0' && s[p] <= '9')
                    p++;
                if (p == f)
                    return -1;
            }
        }
        if (h > 23 || mi > 59 || se > 60)
            return -1;
        if (p < len) {
            if ((s[p] == 'Z' || s[p] == 'z') && p + 1 == len) {
                p++;
            } else if (s[p] == '+' || s[p] == '-') {
                int oh, om;
                int sign = s[p] == '-' ? -1 : 1;
                if (digits(s, len, p + 1, 2, &oh))
                    return -1;
                size_t q = p + 3;
                if (q < len && s[q] == ':')
                    q++;
                if (digits(s, len, q, 2, &om) || q + 2 != len || oh > 23 || om > 59)
                    return -1;
                offset = sign * (oh * 3600 + om * 60);
                p = len;
            } else {
                return -1;
            }
        }
    }
    if (p != len)
        return -1;
    *secs =
        days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se - offset;
    return 0;
}

void time_format(int64_t secs, char *buf, size_t cap)
{
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t rem = secs - days * 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    snprintf(buf, cap, "%04lld-%02u-%02uT%02d:%02d:%02dZ", (long long)y, m, d, (int)(rem / 3600),
             (int)(rem / 60 % 60), (int)(rem % 60));
}
