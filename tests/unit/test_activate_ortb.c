/* test_activate_ortb.c — the OpenRTB BidRequest parser and BidResponse
 * writer (src/activate/ortb.c, ortb_resp.c): every example request of the
 * 2.5 and 2.6 specifications (../shared/data/openrtb) parses with the values
 * read off the JSON by hand; bad requests are refused naming the field's
 * path; unknown fields and extensions are ignored and the 2.5 extensions
 * read when the 2.6 field is absent; the limits (imps, depth, size, list
 * lengths); currency; and responses that jansson reads back with the
 * fields the specification's response examples have. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>

#include "activate/ortb.h"
#include "cp_test.h"

/* One parse with its own arena; the arena stays alive (the request points
 * into it) until done(). */
typedef struct parsed {
    arena_t arena;
    ortb_request_t r;
    cp_error_t err;
    cp_status st;
} parsed_t;

static parsed_t *parse(const char *body, size_t len)
{
    parsed_t *p = calloc(1, sizeof *p);
    assert_non_null(p);
    arena_init(&p->arena, 0);
    p->st = ortb_parse(body, len, &p->arena, &p->r, &p->err);
    return p;
}

static parsed_t *parse_s(const char *body)
{
    return parse(body, strlen(body));
}

static void done(parsed_t *p)
{
    arena_free(&p->arena);
    free(p);
}

static parsed_t *parse_example(const char *rel)
{
    char path[1024];
    if (!test_shared_data(rel, path, sizeof path))
        skip();
    size_t len;
    char *body = test_read_file(path, &len);
    parsed_t *p = parse(body, len);
    free(body);
    if (p->st != CP_OK)
        fail_msg("%s: %s", rel, p->err.message);
    return p;
}

/* ------------------------------------------------------------ examples */

static void test_every_example_parses(void **state)
{
    (void)state;
    const char *dirs[] = {"openrtb/openrtb2/bid-request/2.5", "openrtb/openrtb2/bid-request/2.6"};
    int files = 0;
    for (size_t d = 0; d < 2; d++) {
        char dir[1024];
        if (!test_shared_data(dirs[d], dir, sizeof dir))
            skip();
        DIR *dh = opendir(dir);
        assert_non_null(dh);
        struct dirent *e;
        while ((e = readdir(dh)) != NULL) {
            size_t n = strlen(e->d_name);
            if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0)
                continue;
            char rel[512];
            snprintf(rel, sizeof rel, "%s/%s", dirs[d], e->d_name);
            parsed_t *p = parse_example(rel);
            assert_true(p->r.nimps >= 1);
            assert_non_null(p->r.id);
            for (size_t i = 0; i < p->r.nimps; i++) {
                assert_non_null(p->r.imps[i].id);
                /* Every example floors in USD (stated or by default). */
                assert_string_equal(p->r.imps[i].bidfloorcur, "USD");
                assert_non_null(p->r.imps[i].unbiddable);
            }
            done(p);
            files++;
        }
        closedir(dh);
    }
    assert_int_equal(files, 11);
}

static void test_example_simple_banner(void **state)
{
    (void)state;
    const char *files[] = {"openrtb/openrtb2/bid-request/2.5/simple-banner.json",
                           "openrtb/openrtb2/bid-request/2.6/simple-banner.json"};
    for (size_t f = 0; f < 2; f++) {
        parsed_t *p = parse_example(files[f]);
        const ortb_request_t *r = &p->r;
        assert_string_equal(r->id, "80ce30c53c16e6ede735f123ef6e32361bfc7b22");
        assert_int_equal(r->at, 1);
        assert_int_equal(r->cur.n, 1);
        assert_string_equal(r->cur.v[0], "USD");
        assert_int_equal(r->nimps, 1);
        assert_string_equal(r->imps[0].id, "1");
        assert_int_equal(r->imps[0].bidfloor_fen, 3); /* 0.03 */
        assert_true(r->imps[0].has_banner);
        assert_false(r->imps[0].has_video);
        assert_int_equal(r->imps[0].nformats, 1);
        assert_int_equal(r->imps[0].formats[0].w, 300);
        assert_int_equal(r->imps[0].formats[0].h, 250);
        assert_false(r->is_app);
        assert_string_equal(r->site_id, "102855");
        assert_string_equal(r->domain, "www.foobar.com");
        assert_string_equal(r->page, "http://www.foobar.com/1234.html ");
        assert_string_equal(r->publisher_id, "8953");
        assert_int_equal(r->cat.n, 1);
        assert_string_equal(r->cat.v[0], "IAB3-1");
        assert_string_equal(r->user_id, "55816b39711f9b5acf3b90e313ed29e51665623f");
        assert_null(r->buyeruid);
        assert_int_equal(r->tmax, 0);
        assert_int_equal(r->gdpr, -1);
        assert_int_equal(r->coppa, -1);
        if (f == 0)
            assert_string_equal(r->ip, "123.145.167.10");
        else
            assert_null(r->ip); /* the 2.6 example has no device */
        done(p);
    }
}

static void test_example_mobile(void **state)
{
    (void)state;
    parsed_t *p = parse_example("openrtb/openrtb2/bid-request/2.5/mobile.json");
    const ortb_request_t *r = &p->r;
    assert_string_equal(r->id, "IxexyLDIIk");
    assert_int_equal(r->at, 2);
    assert_int_equal(r->cur.n, 0);
    assert_int_equal(r->bcat.n, 5);
    assert_string_equal(r->bcat.v[0], "IAB25");
    assert_string_equal(r->bcat.v[4], "IAB9-9");
    assert_int_equal(r->badv.n, 3);
    assert_string_equal(r->badv.v[2], "heywire.com");
    assert_int_equal(r->nimps, 2);
    assert_int_equal(r->imps[0].bidfloor_fen, 50);
    assert_string_equal(r->imps[0].tagid, "agltb3B1Yi1pbmNyDQsSBFNpdGUY7fD0FAw");
    assert_int_equal(r->imps[0].nformats, 1);
    assert_int_equal(r->imps[0].formats[0].w, 728);
    assert_int_equal(r->imps[0].formats[0].h, 90);
    assert_int_equal(r->imps[0].instl, 0);
    /* The interstitial: w = h = 0 is "no size given", not a refusal. */
    assert_string_equal(r->imps[1].id, "2");
    assert_int_equal(r->imps[1].instl, 1);
    assert_true(r->imps[1].has_banner);
    assert_int_equal(r->imps[1].nformats, 0);
    assert_true(r->is_app);
    assert_string_equal(r->site_id, "agltb3B1Yi1pbmNyDAsSA0FwcBiJkfIUDA");
    assert_string_equal(r->bundle, "12345");
    assert_string_equal(r->publisher_id, "agltb3B1Yi1pbmNyDAsSA0FwcBiJkfTUCV");
    assert_int_equal(r->cat.n, 2);
    assert_string_equal(r->cat.v[1], "IAB15-10");
    assert_string_equal(r->ifa, "AA000DFE74168477C70D291f574D344790E0BB11");
    assert_string_equal(r->ip, "123.145.167.189");
    assert_string_equal(r->os, "iOS");
    assert_string_equal(r->osv, "6.1");
    assert_string_equal(r->make, "Apple");
    assert_string_equal(r->model, "iPhone");
    assert_int_equal(r->devicetype, 1);
    assert_string_equal(r->country, "USA");
    assert_string_equal(r->region, "CA");
    assert_string_equal(r->city, "Los Angeles");
    assert_true(r->has_geo_point);
    assert_true(r->lat > 35.0123 && r->lat < 35.0124);
    assert_true(r->lon < -115.1234 && r->lon > -115.1235);
    assert_string_equal(r->user_id, "ffffffd5135596709273b3a1a07e466ea2bf4fff");
    assert_int_equal(r->yob, 1984);
    assert_string_equal(r->gender, "M");
    done(p);

    p = parse_example("openrtb/openrtb2/bid-request/2.6/mobile.json");
    assert_int_equal(p->r.nimps, 1);
    assert_true(p->r.is_app);
    assert_null(p->r.ip);
    assert_null(p->r.country);
    assert_false(p->r.has_geo_point);
    assert_int_equal(p->r.devicetype, 1);
    assert_int_equal(p->r.yob, 0);
    done(p);
}

static void test_example_native_and_deals(void **state)
{
    (void)state;
    parsed_t *p = parse_example("openrtb/openrtb2/bid-request/2.5/native-ad.json");
    assert_int_equal(p->r.at, 1);
    assert_true(p->r.imps[0].has_native);
    assert_false(p->r.imps[0].has_banner);
    assert_string_equal(p->r.imps[0].native_request,
                        "{\"native\":{\"ver\":\"1.0\",\"assets\":[ ... ]}}");
    done(p);

    const char *files[] = {"openrtb/openrtb2/bid-request/2.5/pmp-with-direct-deal.json",
                           "openrtb/openrtb2/bid-request/2.6/pmp-with-direct-deal.json"};
    for (size_t f = 0; f < 2; f++) {
        p = parse_example(files[f]);
        const ortb_imp_t *imp = &p->r.imps[0];
        assert_int_equal(imp->private_auction, 1);
        assert_int_equal(imp->ndeals, 2);
        assert_string_equal(imp->deals[0].id, "AB-Agency1-0001");
        assert_int_equal(imp->deals[0].bidfloor_fen, 250);
        assert_int_equal(imp->deals[0].at, 1);
        assert_int_equal(imp->deals[0].wseat.n, 1);
        assert_string_equal(imp->deals[0].wseat.v[0], "Agency1");
        assert_string_equal(imp->deals[1].id, "XY-Agency2-0001");
        assert_int_equal(imp->deals[1].bidfloor_fen, 200);
        assert_int_equal(imp->deals[1].at, 2);
        assert_string_equal(imp->deals[1].bidfloorcur, "USD");
        assert_non_null(imp->deals[1].unbiddable);
        assert_int_equal(imp->formats[0].w, 300);
        done(p);
    }
}

static void test_example_video_and_data(void **state)
{
    (void)state;
    const char *files[] = {"openrtb/openrtb2/bid-request/2.5/video.json",
                           "openrtb/openrtb2/bid-request/2.6/video.json"};
    for (size_t f = 0; f < 2; f++) {
        parsed_t *p = parse_example(files[f]);
        const ortb_request_t *r = &p->r;
        assert_string_equal(r->id, "1234567893");
        assert_int_equal(r->tmax, 120);
        assert_int_equal(r->at, 2);
        const ortb_imp_t *imp = &r->imps[0];
        assert_true(imp->has_video);
        assert_false(imp->has_banner);
        assert_int_equal(imp->video_mimes.n, f == 0 ? 4 : 3);
        assert_string_equal(imp->video_mimes.v[0], "video/x-flv");
        assert_string_equal(imp->video_mimes.v[1], "video/mp4");
        assert_int_equal(imp->video_w, 640);
        assert_int_equal(imp->video_h, 480);
        assert_int_equal(imp->video_minduration, 5);
        assert_int_equal(imp->video_maxduration, 30);
        assert_string_equal(r->site_id, "1345135123");
        assert_string_equal(r->domain, "siteabcd.com");
        assert_int_equal(r->cat.n, 2);
        assert_string_equal(r->cat.v[0], "IAB2-1");
        assert_string_equal(r->publisher_id, "pub12345");
        assert_string_equal(r->os, "OS X");
        assert_string_equal(r->buyeruid, "545678765467876567898765678987654");
        assert_int_equal(r->ndata, 1);
        assert_string_equal(r->data[0].id, "6");
        assert_string_equal(r->data[0].name, "Data Provider 1");
        assert_int_equal(r->data[0].segtax, 0);
        assert_int_equal(r->data[0].segments.n, 2);
        assert_string_equal(r->data[0].segments.v[1], "1234131839491234");
        done(p);
    }

    parsed_t *p = parse_example("openrtb/openrtb2/bid-request/2.5/expandable-creative.json");
    assert_int_equal(p->r.ndata, 1);
    assert_int_equal(p->r.data[0].segments.n, 3);
    assert_string_equal(p->r.data[0].segments.v[2], "23423424");
    assert_int_equal(p->r.imps[0].formats[0].w, 300);
    done(p);

    /* 2.6's version: three data objects, the last with a segment that has
     * only a value (no id: not listed). */
    p = parse_example("openrtb/openrtb2/bid-request/2.6/expandable-creative.json");
    assert_int_equal(p->r.ndata, 3);
    assert_string_equal(p->r.data[0].id, "12341318394918");
    assert_string_equal(p->r.data[2].name, "data-provider1-age");
    assert_int_equal(p->r.data[0].segments.n, 0);
    assert_int_equal(p->r.data[2].segments.n, 0);
    done(p);
}

/* ------------------------------------------------------- bad requests */

#define IMP "\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":300,\"h\":250}}]"

static const struct bad {
    const char *body;
    cp_status st;
    const char *want; /* in the message */
} BAD[] = {
    {"", CP_EINVAL, "empty body"},
    {"  \n ", CP_EINVAL, "empty body"},
    {"[]", CP_EINVAL, "expected a JSON object, got an array"},
    {"{\"id\":\"r\",", CP_EINVAL, "malformed JSON"},
    {"{\"id\":\"r\",\"id\":\"s\"," IMP "}", CP_EINVAL, "malformed JSON"},
    {"{" IMP "}", CP_EINVAL, "BidRequest id: required"},
    {"{\"id\":5," IMP "}", CP_EINVAL, "BidRequest id: must be a string, got an integer"},
    {"{\"id\":\"\"," IMP "}", CP_EINVAL, "BidRequest id: must not be empty"},
    {"{\"id\":\"r\"}", CP_EINVAL, "BidRequest imp: required"},
    {"{\"id\":\"r\",\"imp\":null}", CP_EINVAL, "BidRequest imp: required"},
    {"{\"id\":\"r\",\"imp\":{}}", CP_EINVAL, "BidRequest imp: must be an array, got an object"},
    {"{\"id\":\"r\",\"imp\":[]}", CP_EINVAL, "BidRequest imp: must hold at least one imp"},
    {"{\"id\":\"r\",\"imp\":[1]}", CP_EINVAL, "BidRequest imp[0]: must be an object"},
    {"{\"id\":\"r\",\"imp\":[{}]}", CP_EINVAL, "BidRequest imp[0].id: required"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":1}]}", CP_EINVAL, "BidRequest imp[0].id: must be a string"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"a\"},{\"id\":\"b\"},{\"id\":\"a\"}]}", CP_EINVAL,
     "BidRequest imp[2].id: \"a\" repeats the id of imp[0]"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":-300,\"h\":250}}]}", CP_EINVAL,
     "BidRequest imp[0].banner.w: must not be negative, got -300"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":300,\"h\":-1}}]}", CP_EINVAL,
     "BidRequest imp[0].banner.h: must not be negative"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":\"300\"}}]}", CP_EINVAL,
     "BidRequest imp[0].banner.w: must be an integer, got a string"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":300.5}}]}", CP_EINVAL,
     "BidRequest imp[0].banner.w: must be an integer, got a number"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"banner\":{\"w\":1e12,\"h\":1}}]}", CP_EINVAL,
     "BidRequest imp[0].banner.w: must be at most"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"banner\":[]}]}", CP_EINVAL,
     "BidRequest imp[0].banner: must be an object, got an array"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"banner\":{\"format\":{}}}]}", CP_EINVAL,
     "BidRequest imp[0].banner.format: must be an array"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"banner\":{\"format\":[{\"w\":1,\"h\":1},7]}}]}",
     CP_EINVAL, "BidRequest imp[0].banner.format[1]: must be an object"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"x\"},{\"id\":\"1\",\"banner\":{\"format\":[{\"w\":320,"
     "\"h\":50},{\"w\":-1,\"h\":50}]}}]}",
     CP_EINVAL, "BidRequest imp[1].banner.format[1].w: must not be negative"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"video\":{\"w\":640}}]}", CP_EINVAL,
     "BidRequest imp[0].video.mimes: required"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"video\":{\"mimes\":[]}}]}", CP_EINVAL,
     "BidRequest imp[0].video.mimes: must list at least one MIME type"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"video\":{\"mimes\":\"video/mp4\"}}]}", CP_EINVAL,
     "BidRequest imp[0].video.mimes: must be an array, got a string"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"video\":{\"mimes\":[\"video/mp4\",3]}}]}", CP_EINVAL,
     "BidRequest imp[0].video.mimes[1]: must be a string"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"video\":{\"mimes\":[\"video/mp4\"],\"h\":-2}}]}",
     CP_EINVAL, "BidRequest imp[0].video.h: must not be negative"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"video\":{\"mimes\":[\"v\"],\"minduration\":30,"
     "\"maxduration\":5}}]}",
     CP_EINVAL, "BidRequest imp[0].video.maxduration: 5 is less than minduration 30"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"audio\":{\"mimes\":[]}}]}", CP_EINVAL,
     "BidRequest imp[0].audio.mimes: must list at least one"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"audio\":{}}]}", CP_EINVAL,
     "BidRequest imp[0].audio.mimes: required"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"native\":{\"ver\":\"1.2\"}}]}", CP_EINVAL,
     "BidRequest imp[0].native.request: required"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"native\":{\"request\":{\"ver\":\"1.2\"}}}]}",
     CP_EINVAL, "BidRequest imp[0].native.request: must be a string"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"bidfloor\":-0.5}]}", CP_EINVAL,
     "BidRequest imp[0].bidfloor: must not be negative, got -0.5"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"bidfloor\":\"1.5\"}]}", CP_EINVAL,
     "BidRequest imp[0].bidfloor: must be a number, got a string"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"bidfloorcur\":840}]}", CP_EINVAL,
     "BidRequest imp[0].bidfloorcur: must be a string"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"pmp\":{\"deals\":[{\"bidfloor\":1}]}}]}", CP_EINVAL,
     "BidRequest imp[0].pmp.deals[0].id: required"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"pmp\":{\"deals\":[{\"id\":\"d\",\"bidfloor\":-1}]}}]"
     "}",
     CP_EINVAL, "BidRequest imp[0].pmp.deals[0].bidfloor: must not be negative"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"pmp\":{\"deals\":[{\"id\":\"d\",\"at\":3}]}}]}",
     CP_EINVAL, "BidRequest imp[0].pmp.deals[0].at: must be 1"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"pmp\":{\"deals\":{}}}]}", CP_EINVAL,
     "BidRequest imp[0].pmp.deals: must be an array"},
    {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"pmp\":{\"private_auction\":2}}]}", CP_EINVAL,
     "BidRequest imp[0].pmp.private_auction: must be at most 1"},
    {"{\"id\":\"r\",\"at\":3," IMP "}", CP_EINVAL,
     "BidRequest at: must be 1 (first price), 2 (second price) or above 500"},
    {"{\"id\":\"r\",\"at\":0," IMP "}", CP_EINVAL, "BidRequest at: must be 1"},
    {"{\"id\":\"r\",\"at\":500," IMP "}", CP_EINVAL, "BidRequest at: must be 1"},
    {"{\"id\":\"r\",\"tmax\":-1," IMP "}", CP_EINVAL,
     "BidRequest tmax: must not be negative, got -1"},
    {"{\"id\":\"r\",\"tmax\":\"100\"," IMP "}", CP_EINVAL, "BidRequest tmax: must be an integer"},
    {"{\"id\":\"r\",\"cur\":\"CNY\"," IMP "}", CP_EINVAL,
     "BidRequest cur: must be an array, got a string"},
    {"{\"id\":\"r\",\"bcat\":[\"IAB1\",1]," IMP "}", CP_EINVAL,
     "BidRequest bcat[1]: must be a string, got an integer"},
    {"{\"id\":\"r\",\"badv\":\"a.com\"," IMP "}", CP_EINVAL, "BidRequest badv: must be an array"},
    {"{\"id\":\"r\",\"bapp\":[null]," IMP "}", CP_EINVAL, "BidRequest bapp[0]: must be a string"},
    {"{\"id\":\"r\",\"site\":{},\"app\":{}," IMP "}", CP_EINVAL,
     "BidRequest app: a request must not hold both site and app"},
    {"{\"id\":\"r\",\"site\":\"s\"," IMP "}", CP_EINVAL,
     "BidRequest site: must be an object, got a string"},
    {"{\"id\":\"r\",\"site\":{\"pagecat\":[\"IAB1\",2]}," IMP "}", CP_EINVAL,
     "BidRequest site.pagecat[1]: must be a string"},
    {"{\"id\":\"r\",\"app\":{\"publisher\":{\"id\":7}}," IMP "}", CP_EINVAL,
     "BidRequest app.publisher.id: must be a string"},
    {"{\"id\":\"r\",\"device\":{\"geo\":{\"lat\":100,\"lon\":0}}," IMP "}", CP_EINVAL,
     "BidRequest device.geo.lat: must be at most 90, got 100"},
    {"{\"id\":\"r\",\"device\":{\"devicetype\":\"phone\"}," IMP "}", CP_EINVAL,
     "BidRequest device.devicetype: must be an integer"},
    {"{\"id\":\"r\",\"device\":{\"ifa\":[]}," IMP "}", CP_EINVAL,
     "BidRequest device.ifa: must be a string"},
    {"{\"id\":\"r\",\"user\":{\"buyeruid\":5}," IMP "}", CP_EINVAL,
     "BidRequest user.buyeruid: must be a string"},
    {"{\"id\":\"r\",\"user\":{\"eids\":{}}," IMP "}", CP_EINVAL,
     "BidRequest user.eids: must be an array"},
    {"{\"id\":\"r\",\"user\":{\"eids\":[{\"source\":\"a\",\"uids\":[{\"id\":\"x\"},{\"id\":5}]}]"
     "}," IMP "}",
     CP_EINVAL, "BidRequest user.eids[0].uids[1].id: must be a string"},
    {"{\"id\":\"r\",\"user\":{\"data\":[{\"segment\":[\"s\"]}]}," IMP "}", CP_EINVAL,
     "BidRequest user.data[0].segment[0]: must be an object"},
    {"{\"id\":\"r\",\"user\":{\"geo\":{\"lon\":181}}," IMP "}", CP_EINVAL,
     "BidRequest user.geo.lon: must be at most 180"},
    {"{\"id\":\"r\",\"regs\":{\"coppa\":2}," IMP "}", CP_EINVAL,
     "BidRequest regs.coppa: must be at most 1"},
    {"{\"id\":\"r\",\"regs\":{\"gdpr\":true}," IMP "}", CP_EINVAL,
     "BidRequest regs.gdpr: must be an integer, got a boolean"},
};

static void test_bad_requests(void **state)
{
    (void)state;
    size_t n = sizeof BAD / sizeof BAD[0];
    assert_true(n >= 25);
    for (size_t i = 0; i < n; i++) {
        parsed_t *p = parse_s(BAD[i].body);
        if (p->st != BAD[i].st || strstr(p->err.message, BAD[i].want) == NULL)
            fail_msg("bad request %zu (%s): status %d, message \"%s\"; wanted %d with \"%s\"", i,
                     BAD[i].body, p->st, p->err.message, BAD[i].st, BAD[i].want);
        /* A refused request leaves nothing half-filled behind. */
        assert_null(p->r.id);
        assert_int_equal(p->r.nimps, 0);
        done(p);
    }
}

/* ------------------------------------------------------ lenient parts */

static void test_unknown_fields_and_ext_ignored(void **state)
{
    (void)state;
    parsed_t *p = parse_s(
        "{\"id\":\"r\",\"ext\":{\"prebid\":{\"x\":[1,{\"y\":null}]}},\"unknown\":[true],"
        "\"source\":{\"ext\":{\"schain\":{\"nodes\":[{\"asi\":\"a.com\"}]}}},"
        "\"imp\":[{\"id\":\"1\",\"ext\":\"whatever\",\"rwdd\":1,\"banner\":{\"w\":300,\"h\":250,"
        "\"ext\":[1],\"vcm\":1,\"format\":[{\"wratio\":16,\"hratio\":9}]},\"metric\":[{}]}],"
        "\"site\":{\"id\":\"s\",\"ext\":5,\"content\":{\"cat\":[1]},\"keywords\":\"a,b\"},"
        "\"device\":{\"sua\":{\"browsers\":[]},\"ext\":null,\"ifa\":\"00000000-0000-0000-0000-"
        "000000000000\"},"
        "\"user\":{\"id\":\"\",\"buyeruid\":\"b1\",\"ext\":{\"eids\":\"not an array\","
        "\"consent\":\"xyz\"}},\"regs\":{\"ext\":{\"gdpr\":\"yes\"},\"us_privacy\":\"1YNN\"},"
        "\"wlang\":[\"zh\"]}");
    if (p->st != CP_OK)
        fail_msg("%s", p->err.message);
    assert_int_equal(p->r.nimps, 1);
    assert_int_equal(p->r.imps[0].nformats, 1); /* the ratio format has no size */
    assert_string_equal(p->r.site_id, "s");
    assert_null(p->r.ifa);     /* limit ad tracking: no person */
    assert_null(p->r.user_id); /* empty: absent */
    assert_string_equal(p->r.buyeruid, "b1");
    assert_int_equal(p->r.neids, 0);
    assert_int_equal(p->r.gdpr, -1);
    done(p);
}

static void test_versions(void **state)
{
    (void)state;
    /* 2.5: eids and gdpr as extensions, segtax in data.ext. */
    parsed_t *p = parse_s(
        "{\"id\":\"r\"," IMP ",\"regs\":{\"coppa\":0,\"ext\":{\"gdpr\":1}},"
        "\"user\":{\"ext\":{\"eids\":[{\"source\":\"crowdpack.io\",\"uids\":[{\"id\":\"u1\"},"
        "{\"id\":\"u2\",\"atype\":3}]}]},"
        "\"data\":[{\"id\":\"d\",\"ext\":{\"segtax\":4},\"segment\":[{\"id\":\"IAB-1\"}]},"
        "{\"ext\":{\"segtax\":\"four\"}}]}}");
    if (p->st != CP_OK)
        fail_msg("%s", p->err.message);
    assert_int_equal(p->r.gdpr, 1);
    assert_int_equal(p->r.coppa, 0);
    assert_int_equal(p->r.neids, 1);
    assert_string_equal(p->r.eids[0].source, "crowdpack.io");
    assert_int_equal(p->r.eids[0].uids.n, 2);
    assert_string_equal(p->r.eids[0].uids.v[1], "u2");
    assert_int_equal(p->r.ndata, 2);
    assert_int_equal(p->r.data[0].segtax, 4);
    assert_string_equal(p->r.data[0].segments.v[0], "IAB-1");
    assert_int_equal(p->r.data[1].segtax, 0); /* ill-typed extension: ignored */
    done(p);

    /* 2.6: the fields themselves, which win over the extensions. */
    p = parse_s("{\"id\":\"r\"," IMP ",\"regs\":{\"gdpr\":0,\"ext\":{\"gdpr\":1}},"
                "\"user\":{\"eids\":[{\"source\":\"adserver.org\",\"uids\":[{\"id\":\"t\"}]}],"
                "\"ext\":{\"eids\":[{\"source\":\"old\",\"uids\":[{\"id\":\"o\"}]}]}}}");
    if (p->st != CP_OK)
        fail_msg("%s", p->err.message);
    assert_int_equal(p->r.gdpr, 0);
    assert_int_equal(p->r.neids, 1);
    assert_string_equal(p->r.eids[0].source, "adserver.org");
    assert_string_equal(p->r.eids[0].uids.v[0], "t");
    done(p);

    /* The user's geo stands in for a device without one; at > 500 taken. */
    p = parse_s("{\"id\":\"r\",\"at\":501," IMP ",\"device\":{\"os\":\"Android\"},"
                "\"user\":{\"geo\":{\"country\":\"CHN\",\"city\":\"上海\"}}}");
    assert_int_equal(p->st, CP_OK);
    assert_int_equal(p->r.at, 501);
    assert_string_equal(p->r.country, "CHN");
    assert_string_equal(p->r.city, "上海");
    done(p);
}

static void test_currency(void **state)
{
    (void)state;
    struct {
        const char *body;
        int64_t fen;
        int biddable;
    } cases[] = {
        {"{\"id\":\"r\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"bidfloor\":1.5,"
         "\"bidfloorcur\":\"CNY\"}]}",
         150, 1},
        {"{\"id\":\"r\",\"cur\":[\"USD\",\"cny\"],\"imp\":[{\"id\":\"1\"}]}", 0, 1},
        /* A floor with no bidfloorcur is in USD (the specification's
         * default): no rate, no bid. */
        {"{\"id\":\"r\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"bidfloor\":1}]}", 100, 0},
        /* No cur: USD only. */
        {"{\"id\":\"r\",\"imp\":[{\"id\":\"1\",\"bidfloorcur\":\"CNY\",\"bidfloor\":2}]}", 200, 0},
        {"{\"id\":\"r\",\"cur\":[\"USD\"],\"imp\":[{\"id\":\"1\"}]}", 0, 0},
        /* Rounded up, with binary fractions absorbed. */
        {"{\"id\":\"r\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"bidfloor\":0.07,"
         "\"bidfloorcur\":\"CNY\"}]}",
         7, 1},
        {"{\"id\":\"r\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"bidfloor\":0.035,"
         "\"bidfloorcur\":\"CNY\"}]}",
         4, 1},
        {"{\"id\":\"r\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"1\",\"bidfloor\":8,"
         "\"bidfloorcur\":\"CNY\"}]}",
         800, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parsed_t *p = parse_s(cases[i].body);
        if (p->st != CP_OK)
            fail_msg("case %zu: %s", i, p->err.message);
        assert_int_equal(p->r.imps[0].bidfloor_fen, cases[i].fen);
        if (cases[i].biddable != (p->r.imps[0].unbiddable == NULL))
            fail_msg("case %zu: unbiddable = %s", i,
                     p->r.imps[0].unbiddable ? p->r.imps[0].unbiddable : "(null)");
        done(p);
    }
}

/* ------------------------------------------------------------- limits */

static char *imps_body(int n)
{
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_printf(&b, "{\"id\":\"r\",\"imp\":["), CP_OK);
    for (int i = 0; i < n; i++)
        assert_int_equal(
            buf_printf(&b, "%s{\"id\":\"i%d\",\"banner\":{\"w\":1,\"h\":1}}", i ? "," : "", i),
            CP_OK);
    assert_int_equal(buf_printf(&b, "]}"), CP_OK);
    buf_cstr(&b);
    return b.data;
}

/* A request whose deepest value sits at `depth` levels of brackets. */
static char *deep_body(int depth)
{
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_printf(&b, "{\"id\":\"r\"," IMP ",\"ext\":"), CP_OK);
    for (int i = 1; i < depth; i++)
        assert_int_equal(buf_append(&b, "[", 1), CP_OK);
    for (int i = 1; i < depth; i++)
        assert_int_equal(buf_append(&b, "]", 1), CP_OK);
    assert_int_equal(buf_printf(&b, "}"), CP_OK);
    buf_cstr(&b);
    return b.data;
}

static void test_limits(void **state)
{
    (void)state;
    char *s = imps_body(ORTB_MAX_IMPS);
    parsed_t *p = parse_s(s);
    assert_int_equal(p->st, CP_OK);
    assert_int_equal(p->r.nimps, 64);
    assert_string_equal(p->r.imps[63].id, "i63");
    done(p);
    free(s);

    s = imps_body(ORTB_MAX_IMPS + 1);
    p = parse_s(s);
    assert_int_equal(p->st, CP_ELIMIT);
    assert_non_null(strstr(p->err.message, "BidRequest imp: 65 imps, more than the limit of 64"));
    done(p);
    free(s);

    s = deep_body(ORTB_MAX_DEPTH);
    p = parse_s(s);
    if (p->st != CP_OK)
        fail_msg("depth 32: %s", p->err.message);
    done(p);
    free(s);
    s = deep_body(ORTB_MAX_DEPTH + 1);
    p = parse_s(s);
    assert_int_equal(p->st, CP_ELIMIT);
    assert_non_null(strstr(p->err.message, "nested deeper than 32 levels"));
    done(p);
    free(s);
    /* Brackets inside strings are not nesting. */
    p = parse_s("{\"id\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"," IMP "}");
    assert_int_equal(p->st, CP_OK);
    done(p);

    /* Size: exactly the limit is fine, one byte more is refused. */
    const char *base = "{\"id\":\"r\"," IMP "}";
    s = malloc(ORTB_MAX_BODY + 2);
    assert_non_null(s);
    memset(s, ' ', ORTB_MAX_BODY + 1);
    memcpy(s, base, strlen(base));
    p = parse(s, ORTB_MAX_BODY);
    assert_int_equal(p->st, CP_OK);
    done(p);
    p = parse(s, ORTB_MAX_BODY + 1);
    assert_int_equal(p->st, CP_ELIMIT);
    assert_non_null(strstr(p->err.message, "more than the limit of 262144"));
    done(p);
    free(s);

    /* Lists past ORTB_MAX_LIST are cut, not refused; the cut entries are
     * not even looked at. */
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_printf(&b, "{\"id\":\"r\"," IMP ",\"bcat\":["), CP_OK);
    for (int i = 0; i < 300; i++)
        assert_int_equal(buf_printf(&b, "%s\"IAB%d\"", i ? "," : "", i), CP_OK);
    assert_int_equal(buf_printf(&b, ",5],\"site\":{\"cat\":["), CP_OK);
    for (int i = 0; i < 200; i++)
        assert_int_equal(buf_printf(&b, "%s\"c%d\"", i ? "," : "", i), CP_OK);
    assert_int_equal(buf_printf(&b, "],\"pagecat\":["), CP_OK);
    for (int i = 0; i < 200; i++)
        assert_int_equal(buf_printf(&b, "%s\"p%d\"", i ? "," : "", i), CP_OK);
    assert_int_equal(buf_printf(&b, "]}}"), CP_OK);
    p = parse(b.data, b.len);
    if (p->st != CP_OK)
        fail_msg("%s", p->err.message);
    assert_int_equal(p->r.bcat.n, ORTB_MAX_LIST);
    assert_string_equal(p->r.bcat.v[255], "IAB255");
    assert_int_equal(p->r.cat.n, ORTB_MAX_LIST);
    assert_string_equal(p->r.cat.v[199], "c199");
    assert_string_equal(p->r.cat.v[200], "p0");
    done(p);
    buf_free(&b);

    /* An arena with a tiny limit: out of memory, reported, no crash. */
    arena_t a;
    arena_init(&a, 64);
    ortb_request_t r;
    cp_error_t err = {0};
    cp_status st = ortb_parse(base, strlen(base), &a, &r, &err);
    assert_int_equal(st, CP_ENOMEM);
    arena_free(&a);
}

/* ------------------------------------------------------------ response */

static json_t *load(const buf_t *b)
{
    json_error_t jerr;
    json_t *j = json_loadb(b->data, b->len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        fail_msg("response is not JSON (%s): %.*s", jerr.text, (int)b->len, b->data);
    return j;
}

static void test_response(void **state)
{
    (void)state;
    parsed_t *p = parse_s("{\"id\":\"req-\\\"1\\\"\",\"cur\":[\"CNY\"],\"imp\":[{\"id\":\"a\"},"
                          "{\"id\":\"b\"}]}");
    assert_int_equal(p->st, CP_OK);
    const char *adomain[] = {"acme.com"};
    const char *cat[] = {"IAB3", "IAB3-1"};
    const char *adm = "<a href=\"${CLICK_URL}\">\\ 春季大促\n\t\x01</a>";
    ortb_bid_t bids[2] = {
        {.imp_id = "a",
         .price_fen = 1200,
         .adm = adm,
         .crid = "c1",
         .cid = "spring-sale",
         .adid = "retarget",
         .iurl = "https://cdn.acme.com/c1.png",
         .adomain = {adomain, 1},
         .cat = {cat, 2},
         .w = 300,
         .h = 250,
         .nurl = "http://127.0.0.1:8080/openrtb2/win?t=abc&p=${AUCTION_PRICE}",
         .burl = "http://127.0.0.1:8080/openrtb2/billing?t=abc&p=${AUCTION_PRICE}",
         .lurl = "http://127.0.0.1:8080/openrtb2/loss?t=abc&r=${AUCTION_LOSS}",
         .mtype = 1},
        {.imp_id = "b", .price_fen = 5, .dealid = "D-1", .crid = "c2"},
    };
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_append(&b, "x", 1), CP_OK); /* appends, keeps what was there */
    cp_error_t err = {0};
    assert_int_equal(ortb_response_write(&b, &p->r, "bid-9", "crowdpack", bids, 2, &err), CP_OK);
    assert_int_equal(b.data[0], 'x');
    buf_t body = {.data = b.data + 1, .len = b.len - 1};
    assert_non_null(memmem(body.data, body.len, "\"price\":12.00", 13));
    assert_non_null(memmem(body.data, body.len, "\"price\":0.05", 12));
    json_t *j = load(&body);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "req-\"1\"");
    assert_string_equal(json_string_value(json_object_get(j, "bidid")), "bid-9");
    assert_string_equal(json_string_value(json_object_get(j, "cur")), "CNY");
    json_t *sb = json_array_get(json_object_get(j, "seatbid"), 0);
    assert_string_equal(json_string_value(json_object_get(sb, "seat")), "crowdpack");
    json_t *arr = json_object_get(sb, "bid");
    assert_int_equal(json_array_size(arr), 2);
    json_t *b0 = json_array_get(arr, 0), *b1 = json_array_get(arr, 1);
    assert_string_equal(json_string_value(json_object_get(b0, "id")), "1");
    assert_string_equal(json_string_value(json_object_get(b1, "id")), "2");
    assert_string_equal(json_string_value(json_object_get(b0, "impid")), "a");
    assert_true(json_number_value(json_object_get(b0, "price")) == 12.0);
    assert_true(json_number_value(json_object_get(b1, "price")) == 0.05);
    assert_string_equal(json_string_value(json_object_get(b0, "adm")), adm);
    assert_string_equal(json_string_value(json_object_get(b0, "nurl")), bids[0].nurl);
    assert_string_equal(json_string_value(json_object_get(b0, "burl")), bids[0].burl);
    assert_string_equal(json_string_value(json_object_get(b0, "lurl")), bids[0].lurl);
    assert_string_equal(json_string_value(json_array_get(json_object_get(b0, "adomain"), 0)),
                        "acme.com");
    assert_int_equal(json_array_size(json_object_get(b0, "cat")), 2);
    assert_int_equal(json_integer_value(json_object_get(b0, "w")), 300);
    assert_int_equal(json_integer_value(json_object_get(b0, "mtype")), 1);
    assert_string_equal(json_string_value(json_object_get(b1, "dealid")), "D-1");
    assert_null(json_object_get(b1, "adm"));
    assert_null(json_object_get(b1, "w"));

    /* The shape of the specification's own response example: every field
     * it has (but attr, which crowdpack does not declare) is in ours. */
    char path[1024];
    if (test_shared_data("openrtb/openrtb2/bid-response/2.6/ad-served-on-win-notice.json", path,
                         sizeof path)) {
        json_error_t jerr;
        json_t *ex = json_load_file(path, 0, &jerr);
        assert_non_null(ex);
        const char *key;
        json_t *v;
        json_object_foreach(ex, key, v)
        {
            if (json_object_get(j, key) == NULL)
                fail_msg("response lacks \"%s\"", key);
        }
        json_t *exsb = json_array_get(json_object_get(ex, "seatbid"), 0);
        json_object_foreach(exsb, key, v)
        {
            if (json_object_get(sb, key) == NULL)
                fail_msg("seatbid lacks \"%s\"", key);
        }
        json_object_foreach(json_array_get(json_object_get(exsb, "bid"), 0), key, v)
        {
            if (strcmp(key, "attr") == 0)
                continue;
            json_t *ours = json_object_get(b0, key);
            if (ours == NULL)
                fail_msg("bid lacks \"%s\"", key);
            if (json_typeof(v) != json_typeof(ours) && !(json_is_number(v) && json_is_number(ours)))
                fail_msg("bid \"%s\" has another type", key);
        }
        json_decref(ex);
    }
    json_decref(j);

    /* No bids: the bare id. */
    buf_reset(&b);
    assert_int_equal(ortb_response_write(&b, &p->r, "x", "s", NULL, 0, &err), CP_OK);
    assert_string_equal(buf_cstr(&b), "{\"id\":\"req-\\\"1\\\"\"}");

    /* Refusals leave the buffer as it was. */
    buf_reset(&b);
    assert_int_equal(buf_append(&b, "keep", 4), CP_OK);
    ortb_bid_t bad = {.imp_id = "a", .price_fen = -1};
    assert_int_equal(ortb_response_write(&b, &p->r, NULL, NULL, &bad, 1, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "negative price"));
    bad = (ortb_bid_t){.imp_id = "a", .price_fen = 1, .adm = "\xff\xfe"};
    assert_int_equal(ortb_response_write(&b, &p->r, NULL, NULL, &bad, 1, &err), CP_EINVAL);
    assert_non_null(strstr(err.message, "adm is not valid UTF-8"));
    bad = (ortb_bid_t){.price_fen = 1};
    assert_int_equal(ortb_response_write(&b, &p->r, NULL, NULL, &bad, 1, &err), CP_EINVAL);
    assert_int_equal(b.len, 4);
    buf_free(&b);

    /* The buffer's cap. */
    buf_init(&b, 40);
    assert_int_equal(ortb_response_write(&b, &p->r, "bid-9", "crowdpack", bids, 2, &err),
                     CP_ELIMIT);
    assert_int_equal(b.len, 0);
    assert_non_null(strstr(err.message, "BidResponse"));
    buf_free(&b);
    done(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_example_parses),
        cmocka_unit_test(test_example_simple_banner),
        cmocka_unit_test(test_example_mobile),
        cmocka_unit_test(test_example_native_and_deals),
        cmocka_unit_test(test_example_video_and_data),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_unknown_fields_and_ext_ignored),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_currency),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
