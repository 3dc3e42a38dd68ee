/* test_activate_tz.c — campaign time zones from the system's TZif files:
 * offsets of a zone without daylight saving (Asia/Shanghai) and of one with
 * it (America/New_York, both changes of 2026), period starts on either side
 * of a change, hour of week, and names that must not load. Expected values
 * come from Python's zoneinfo over the same tzdata. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "activate/campaign.h"

#define H 3600000LL

static tz_t *load(const char *name)
{
    tz_t *tz = NULL;
    cp_error_t err = {0};
    cp_status st = tz_load(name, &tz, &err);
    if (st != CP_OK)
        fail_msg("tz_load %s: %s", name, err.message);
    return tz;
}

static void test_shanghai(void **state)
{
    (void)state;
    tz_t *tz = load("Asia/Shanghai");
    const int64_t dec1 = 1796054400000LL; /* 2026-12-01T00:00+08:00 */
    assert_int_equal(tz_offset_ms(tz, dec1), 8 * H);
    assert_int_equal(tz_offset_ms(tz, 0), 8 * H);
    /* 2026-12-01 11:30 local (a Tuesday). */
    int64_t t = dec1 + 11 * H + 30 * 60000;
    assert_int_equal(tz_period_start(tz, ACT_PER_DAY, t), dec1);
    assert_int_equal(tz_period_start(tz, ACT_PER_HOUR, t), dec1 + 11 * H);
    assert_int_equal(tz_period_start(tz, ACT_PER_WEEK, t), 1795968000000LL); /* Mon 11-30 */
    assert_int_equal(tz_period_start(tz, ACT_PER_LIFETIME, t), 0);
    assert_int_equal(tz_hour_of_week(tz, t), 24 + 11);
    /* One millisecond before local midnight is the day before's last hour. */
    assert_int_equal(tz_period_start(tz, ACT_PER_DAY, dec1 - 1), dec1 - 24 * H);
    assert_int_equal(tz_hour_of_week(tz, dec1 - 1), 23);
    /* UTC midnight is already 08:00 local. */
    assert_int_equal(tz_hour_of_week(tz, dec1 + 8 * H), 24 + 8);
    tz_free(tz);
}

static void test_new_york_dst(void **state)
{
    (void)state;
    tz_t *tz = load("America/New_York");
    const int64_t spring = 1772953200000LL; /* 2026-03-08T07:00Z: EST -> EDT */
    const int64_t fall = 1793512800000LL;   /* 2026-11-01T06:00Z: EDT -> EST */
    assert_int_equal(tz_offset_ms(tz, spring - 1), -5 * H);
    assert_int_equal(tz_offset_ms(tz, spring), -4 * H);
    assert_int_equal(tz_offset_ms(tz, fall - 1), -4 * H);
    assert_int_equal(tz_offset_ms(tz, fall), -5 * H);
    /* 08:00 EDT on the day of the change: the day began at 00:00 EST. */
    assert_int_equal(tz_period_start(tz, ACT_PER_DAY, spring + 5 * H), 1772946000000LL);
    /* The 23-hour day: 01:59 EST and 03:00 EDT are one local hour apart. */
    assert_int_equal(tz_hour_of_week(tz, spring - 1), 6 * 24 + 1);
    assert_int_equal(tz_hour_of_week(tz, spring), 6 * 24 + 3);
    /* The 25-hour day: 01:xx happens twice, the day starts at 00:00 EDT. */
    assert_int_equal(tz_hour_of_week(tz, fall - 1), 6 * 24 + 1);
    assert_int_equal(tz_hour_of_week(tz, fall), 6 * 24 + 1);
    assert_int_equal(tz_period_start(tz, ACT_PER_DAY, fall + 10 * H), 1793505600000LL);
    /* Weeks: Monday 2026-03-09 09:30 EDT is hour 9 of a week that began
     * Monday 00:00 EDT; the week before began Monday 00:00 EST. */
    int64_t mon = 1773028800000LL + 9 * H + 30 * 60000;
    assert_int_equal(tz_hour_of_week(tz, mon), 9);
    assert_int_equal(tz_period_start(tz, ACT_PER_WEEK, mon), 1773028800000LL);
    assert_int_equal(tz_period_start(tz, ACT_PER_WEEK, spring), 1772427600000LL);
    /* Hour periods keep their length across the change. */
    assert_int_equal(tz_period_start(tz, ACT_PER_HOUR, spring + 30 * 60000), spring);
    tz_free(tz);
}

static void test_utc_epoch(void **state)
{
    (void)state;
    tz_t *tz = load("UTC");
    assert_int_equal(tz_offset_ms(tz, 1796054400000LL), 0);
    assert_int_equal(tz_hour_of_week(tz, 0), 3 * 24); /* 1970-01-01 was a Thursday */
    assert_int_equal(tz_period_start(tz, ACT_PER_WEEK, 0), -3 * 24 * H);
    assert_int_equal(tz_period_start(tz, ACT_PER_DAY, -1), -24 * H);
    tz_free(tz);
}

static void test_bad_names(void **state)
{
    (void)state;
    static const char *const bad[] = {"",
                                      "Mars/Olympus_Mons",
                                      "../../etc/passwd",
                                      "/etc/localtime",
                                      "Asia/Shang hai",
                                      "Asia/../Asia/Shanghai",
                                      "posixrules/x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tz_t *tz = (tz_t *)1;
        cp_error_t err = {0};
        assert_int_equal(tz_load(bad[i], &tz, &err), CP_EINVAL);
        assert_null(tz);
        assert_non_null(strstr(err.message, "time zone"));
    }
    tz_t *tz = (tz_t *)1;
    cp_error_t err = {0};
    assert_int_equal(tz_load(NULL, &tz, &err), CP_EINVAL);
    /* A file under zoneinfo that is not TZif (a directory or a table). */
    assert_int_equal(tz_load("zone.tab", &tz, &err), CP_EINVAL);
    tz_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shanghai),
        cmocka_unit_test(test_new_york_dst),
        cmocka_unit_test(test_utc_epoch),
        cmocka_unit_test(test_bad_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
