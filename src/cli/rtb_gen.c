/* rtb_gen.c — generated OpenRTB bid requests (rtb_gen.h). */
#include <stdio.h>

#include "cli/rtb_gen.h"

static const struct {
    int w, h;
} SIZES[] = {{300, 250}, {300, 250}, {728, 90}, {320, 50}};

cp_status rtb_gen_request(buf_t *b, uint64_t *rng, const char *prefix, uint64_t seq,
                          const char *person, int64_t *floor_fen)
{
    int app = rand_double(rng) < 0.6, ios = rand_double(rng) < 0.35;
    int si = (int)(rand_next(rng) % (sizeof SIZES / sizeof SIZES[0]));
    int64_t fl = rand_double(rng) < 0.3 ? 100 + (int64_t)(rand_next(rng) % 400) : 0;
    uint64_t dev = rand_next(rng);
    *floor_fen = fl;
    cp_status st = buf_printf(b,
                              "{\"id\":\"%s-%llu\",\"at\":2,\"cur\":[\"CNY\"],\"imp\":[{\"id\":"
                              "\"1\",\"bidfloor\":%lld.%02lld,\"bidfloorcur\":\"CNY\",\"banner\":"
                              "{\"w\":%d,\"h\":%d}}],",
                              prefix, (unsigned long long)seq, (long long)(fl / 100),
                              (long long)(fl % 100), SIZES[si].w, SIZES[si].h);
    if (st == CP_OK && app)
        st = buf_printf(b,
                        "\"app\":{\"id\":\"app%d\",\"bundle\":\"com.example.app%d\",\"cat\":["
                        "\"IAB%d\"]},\"device\":{\"devicetype\":4,\"os\":\"%s\",\"ifa\":\"%016llx-"
                        "sim\",\"geo\":{\"country\":\"CHN\"}},",
                        (int)(dev % 50), (int)(dev % 50), (int)(dev % 26) + 1,
                        ios ? "iOS" : "Android", (unsigned long long)dev);
    else if (st == CP_OK)
        st = buf_printf(b,
                        "\"site\":{\"id\":\"site%d\",\"domain\":\"site%d.example.cn\",\"cat\":["
                        "\"IAB%d\"]},\"device\":{\"devicetype\":2,\"os\":\"Windows\",\"geo\":{"
                        "\"country\":\"CHN\"}},",
                        (int)(dev % 80), (int)(dev % 80), (int)(dev % 26) + 1);
    if (st == CP_OK)
        st = buf_printf(b, "\"user\":{\"buyeruid\":\"%s\"}}", person);
    return st;
}
