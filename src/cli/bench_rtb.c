/*
 * bench_rtb.c — `crowdpack bench --rtb`: the OpenRTB bidder under load
 * (docs/benchmarks.md "Bidding").
 *
 *   1. a data directory with the demo population (--users, default 1M),
 *      --crowds static crowds (default 1,000: an interest tag and an age
 *      band each) and --lines line items (default 100: ten campaigns of
 *      ten lines, each targeting two crowds, with premiums on two others,
 *      a daily cap of 10, three banner sizes), `asap` and budgets that do
 *      not run out during the run;
 *   2. --bodies recorded BidRequests (rtb_gen.c, the simulator's traffic:
 *      90 % for a person of the data) in an NDJSON file;
 *   3. the real server (`crowdpack serve`, this binary, a child process)
 *      on a loopback port;
 *   4. wrk (Debian's package) with a Lua script POSTing those requests
 *      over --conns keep-alive connections for --seconds: first to
 *      POST /openrtb2/nobid (a static 204 through the same HTTP stack and
 *      auth: the floor), then to POST /openrtb2/bid;
 *   5. the server's own bid-time histogram (crowdpack_bid_seconds in
 *      /metrics) read before and after the bid run, its p50/p99 from the
 *      difference; the server's CPU seconds (/proc/PID/stat) give the
 *      requests per CPU-second, the "per core" figure.
 * wrk and the server share the machine's cores: the requests/s are those
 * of the whole loopback setup, the per-CPU-second figure the server's.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/bench_intake_int.h"
#include "cli/bench_rtb.h"
#include "cli/cli.h"
#include "cli/demo.h"
#include "cli/progress.h"
#include "cli/rtb_gen.h"
#include "util/util.h"

#define NBID_BUCKETS 14 /* crowdpack_bid_seconds buckets, +Inf included */

static const cli_opt_t rtb_opts[] = {
    {"rtb", 0, OPT_FLAG, NULL, "measure the OpenRTB bidder (this mode)"},
    {"users", 'n', OPT_VALUE, "N", "demo users (default 1M; suffixes k M)"},
    {"crowds", 0, OPT_VALUE, "N", "crowds to create (default 1000)"},
    {"lines", 0, OPT_VALUE, "N", "line items, ten per campaign (default 100)"},
    {"bodies", 0, OPT_VALUE, "N", "distinct recorded requests (default 20000)"},
    {"seconds", 0, OPT_VALUE, "S", "length of each wrk run (default 15)"},
    {"conns", 0, OPT_VALUE, "C", "keep-alive connections (default 32)"},
    {"wrk-threads", 0, OPT_VALUE, "T", "wrk threads (default 2)"},
    {"server-threads", 0, OPT_VALUE, "T", "server worker threads (default: the server's)"},
    {"seed", 0, OPT_VALUE, "S", "random seed (default 42)"},
    {"dir", 0, OPT_VALUE, "DIR", "where the temporary data directory goes (default $TMPDIR)"},
    {"keep", 0, OPT_FLAG, NULL, "keep the temporary directory"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t rtb_spec = {
    "bench --rtb",
    "",
    "Measure the OpenRTB bidder: requests/s and the server's p50/p99 under wrk, with a floor.",
    "Generates the demo population, crowds and line items, starts `crowdpack serve` and drives\n"
    "POST /openrtb2/nobid (the floor: a static 204) and POST /openrtb2/bid with wrk over\n"
    "keep-alive connections, replaying the same recorded requests. Needs wrk (Debian package).\n\n"
    "Examples:\n"
    "  crowdpack bench --rtb --users 20k --seconds 5\n"
    "  crowdpack bench --rtb                      # 1M users, 1,000 crowds, 100 line items",
    rtb_opts,
    CONN_JSON,
    0,
    0};

/* The wrk script: each thread reads the recorded requests (one JSON per
 * line) and cycles through them from its own offset. */
static const char LUA[] = "local bodies = {}\n"
                          "local i = 0\n"
                          "function init(args)\n"
                          "  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end\n"
                          "  i = math.random(#bodies)\n"
                          "end\n"
                          "local headers = {[\"Content-Type\"] = \"application/json\"}\n"
                          "function request()\n"
                          "  i = i % #bodies + 1\n"
                          "  return wrk.format(\"POST\", nil, headers, bodies[i])\n"
                          "end\n";

typedef struct wrk_result {
    double rps, p50_ms, p99_ms;
    uint64_t requests, non2xx, errors;
} wrk_result_t;

typedef struct server_stats {
    uint64_t bid_bucket[NBID_BUCKETS]; /* cumulative, as exposed */
    uint64_t bid_200, bid_204, bid_400;
} server_stats_t;

/* ---------------------------------------------------------------- setup */

static int write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return cli_failf("%s: %s", path, strerror(errno));
    size_t n = fwrite(text, 1, len, f);
    if (fclose(f) != 0 || n != len)
        return cli_failf("%s: write failed", path);
    return CLI_OK;
}

/* Crowds "bench_c0000".. over an interest tag (any level) and an age band. */
static int make_crowds(cp_db_t *db, uint64_t n, uint64_t *rng)
{
    char name[32], expr[512];
    progress_t p;
    progress_start(&p, "crowds", PROGRESS_ITEMS, n, -1);
    for (uint64_t i = 0; i < n; i++) {
        const char *tag = demo_interest_tags[rand_next(rng) % demo_interest_tags_len].path;
        int lo = 18 + (int)(rand_next(rng) % 30), hi = lo + 5 + (int)(rand_next(rng) % 25);
        snprintf(name, sizeof name, "bench_c%04llu", (unsigned long long)i);
        snprintf(expr, sizeof expr, "tag:%s AND age BETWEEN %d AND %d", tag, lo, hi);
        cp_error_t err = {0};
        cp_status st = cp_crowd_create(db, name, expr, CP_CROWD_STATIC, NULL, &err);
        if (st != CP_OK)
            return cli_fail(st, &err);
        progress_update(&p, i + 1, i + 1);
    }
    progress_finish(&p);
    return CLI_OK;
}

/* Ten campaigns of ten lines (the last campaign may have fewer). */
static int make_campaigns(cp_db_t *db, const char *dir, uint64_t nlines, uint64_t ncrowds,
                          uint64_t *rng)
{
    cp_activate_t *act = NULL;
    cp_error_t err = {0};
    cp_activate_options_t ao = CP_ACTIVATE_OPTIONS_INIT;
    ao.flags = CP_ACTIVATE_MANUAL_TICK;
    cp_status st = cp_activate_open(db, dir, &ao, &act, &err);
    if (st != CP_OK)
        return cli_fail(st, &err);
    time_t now = time(NULL), from = now - 86400, to = now + 30 * 86400;
    char start[16], end[16];
    strftime(start, sizeof start, "%Y-%m-%d", gmtime(&from));
    strftime(end, sizeof end, "%Y-%m-%d", gmtime(&to));
    static const int sizes[3][2] = {{300, 250}, {728, 90}, {320, 50}};
    buf_t b;
    buf_init(&b, 0);
    int rc = CLI_OK;
    for (uint64_t c = 0; c * 10 < nlines && rc == CLI_OK; c++) {
        char id[32];
        snprintf(id, sizeof id, "bench-%02llu", (unsigned long long)c);
        buf_reset(&b);
        st = buf_printf(&b,
                        "{\"id\":\"%s\",\"advertiser\":\"adv%llu\",\"budget\":{\"total\":"
                        "100000000,\"daily\":10000000},\"schedule\":{\"start\":\"%s\",\"end\":"
                        "\"%s\",\"timezone\":\"Asia/Shanghai\"},\"pacing\":\"asap\",\"lines\":[",
                        id, (unsigned long long)c, start, end);
        for (uint64_t l = c * 10; l < nlines && l < c * 10 + 10 && st == CP_OK; l++) {
            uint64_t t1 = rand_next(rng) % ncrowds, t2 = rand_next(rng) % ncrowds;
            uint64_t p1 = rand_next(rng) % ncrowds, p2 = rand_next(rng) % ncrowds;
            if (p2 == p1)
                p2 = (p1 + 1) % ncrowds;
            st = buf_printf(&b,
                            "%s{\"id\":\"l%03llu\",\"billing\":\"cpm\",\"bid\":%d.%02d,"
                            "\"targeting\":\"crowd:bench_c%04llu OR crowd:bench_c%04llu\","
                            "\"premiums\":[{\"crowd\":\"bench_c%04llu\",\"pct\":%d},{\"crowd\":"
                            "\"bench_c%04llu\",\"pct\":%d}],\"caps\":[{\"count\":10,\"per\":"
                            "\"day\"}],\"creatives\":[",
                            l > c * 10 ? "," : "", (unsigned long long)l,
                            5 + (int)(rand_next(rng) % 10), (int)(rand_next(rng) % 100),
                            (unsigned long long)t1, (unsigned long long)t2, (unsigned long long)p1,
                            10 + (int)(rand_next(rng) % 90), (unsigned long long)p2,
                            10 + (int)(rand_next(rng) % 90));
            for (int k = 0; k < 3 && st == CP_OK; k++)
                st = buf_printf(&b,
                                "%s{\"id\":\"cr%03llu-%d\",\"w\":%d,\"h\":%d,\"adomain\":["
                                "\"adv%llu.example.cn\"],\"adm\":\"<a href=\\\"${CLICK_URL}\\\">"
                                "<img src=\\\"https://cdn.example.cn/%llu-%d.png\\\"></a>\"}",
                                k ? "," : "", (unsigned long long)l, k, sizes[k][0], sizes[k][1],
                                (unsigned long long)c, (unsigned long long)l, k);
            if (st == CP_OK)
                st = buf_printf(&b, "]}");
        }
        if (st == CP_OK)
            st = buf_printf(&b, "]}");
        if (st != CP_OK) {
            rc = cli_failf("out of memory");
            break;
        }
        if ((st = cp_campaign_put_json(act, id, b.data, b.len, NULL, &err)) != CP_OK)
            rc = cli_fail(st, &err);
    }
    buf_free(&b);
    if ((st = cp_activate_close(act, &err)) != CP_OK && rc == CLI_OK)
        rc = cli_fail(st, &err);
    return rc;
}

static int make_bodies(const char *path, uint64_t n, uint64_t users, uint64_t *rng)
{
    buf_t b;
    buf_init(&b, 0);
    cp_status st = CP_OK;
    for (uint64_t i = 0; i < n && st == CP_OK; i++) {
        char person[64];
        if (rand_double(rng) < 0.9)
            snprintf(person, sizeof person, "u%llu",
                     (unsigned long long)(1 + rand_next(rng) % users));
        else
            snprintf(person, sizeof person, "stranger-%llu",
                     (unsigned long long)(rand_next(rng) % 1000000));
        int64_t fl;
        st = rtb_gen_request(&b, rng, "bench", i + 1, person, &fl);
        if (st == CP_OK)
            st = buf_append(&b, "\n", 1);
    }
    int rc = st == CP_OK ? write_file(path, b.data, b.len) : cli_failf("out of memory");
    buf_free(&b);
    return rc;
}

/* --------------------------------------------------------------- server */

static pid_t serve(const char *data, const char *portf, const char *threads, const char *log)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    FILE *f = freopen(log, "w", stderr);
    (void)f;
    if (threads)
        execl(exe, exe, "serve", "--data", data, "--listen", "127.0.0.1:0", "--port-file", portf,
              "--threads", threads, (char *)NULL);
    else
        execl(exe, exe, "serve", "--data", data, "--listen", "127.0.0.1:0", "--port-file", portf,
              (char *)NULL);
    _exit(127);
}

static int wait_port(const char *portf, pid_t pid, unsigned *port)
{
    for (double t0 = progress_now(); progress_now() - t0 < 120;) {
        FILE *f = fopen(portf, "r");
        if (f) {
            int ok = fscanf(f, "%u", port) == 1 && *port > 0 && *port < 65536;
            fclose(f);
            if (ok)
                return CLI_OK;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return cli_failf("bench: the server exited before listening");
        usleep(20000);
    }
    return cli_failf("bench: the server did not listen within 120 s");
}

/* GET path through the CLI's HTTP client (libcurl); the body (free()) in *out. */
static int http_get(unsigned port, const char *path, char **out)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", port);
    cli_client_t *c = NULL;
    cp_error_t err = {0};
    cp_status st = client_open(url, NULL, &c, &err);
    if (st == CP_OK)
        st = client_call(c, "GET", path, NULL, NULL, 0, out, &err);
    client_close(c);
    return st == CP_OK ? CLI_OK : cli_fail(st, &err);
}

static uint64_t metric_value(const char *text, const char *prefix)
{
    const char *p = strstr(text, prefix);
    return p ? strtoull(p + strlen(prefix), NULL, 10) : 0;
}

static int scrape(unsigned port, server_stats_t *s)
{
    char *m = NULL;
    int rc = http_get(port, "/metrics", &m);
    if (rc != CLI_OK)
        return rc;
    memset(s, 0, sizeof *s);
    const char *p = m;
    for (int k = 0; k < NBID_BUCKETS; k++) {
        p = strstr(p, "crowdpack_bid_seconds_bucket{le=\"");
        if (p == NULL)
            break;
        p = strstr(p, "} ");
        s->bid_bucket[k] = strtoull(p + 2, NULL, 10);
    }
    s->bid_200 = metric_value(
        m,
        "crowdpack_http_requests_total{method=\"POST\",route=\"/openrtb2/bid\",status=\"200\"} ");
    s->bid_204 = metric_value(
        m,
        "crowdpack_http_requests_total{method=\"POST\",route=\"/openrtb2/bid\",status=\"204\"} ");
    s->bid_400 = metric_value(
        m,
        "crowdpack_http_requests_total{method=\"POST\",route=\"/openrtb2/bid\",status=\"400\"} ");
    free(m);
    return CLI_OK;
}

/* The q-quantile in seconds of a histogram difference, interpolated
 * linearly inside its bucket. */
static double hist_quantile(const server_stats_t *a, const server_stats_t *b, double q)
{
    static const double le[NBID_BUCKETS] = {0.00005, 0.0001,  0.00015, 0.0002, 0.0003,
                                            0.0005,  0.00075, 0.001,   0.0015, 0.0025,
                                            0.005,   0.01,    0.1,     1.0};
    uint64_t total = b->bid_bucket[NBID_BUCKETS - 1] - a->bid_bucket[NBID_BUCKETS - 1];
    if (total == 0)
        return 0;
    double want = q * (double)total;
    uint64_t prev = 0;
    for (int k = 0; k < NBID_BUCKETS; k++) {
        uint64_t cum = b->bid_bucket[k] - a->bid_bucket[k];
        if ((double)cum >= want) {
            double lo = k ? le[k - 1] : 0, hi = le[k];
            double f = cum > prev ? (want - (double)prev) / (double)(cum - prev) : 1;
            return lo + f * (hi - lo);
        }
        prev = cum;
    }
    return le[NBID_BUCKETS - 1];
}

/* utime + stime of a process, seconds. */
static double proc_cpu_secs(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double wrk_time_ms(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (strncmp(end, "us", 2) == 0)
        return v / 1000;
    if (strncmp(end, "ms", 2) == 0)
        return v;
    if (end[0] == 's')
        return v * 1000;
    if (end[0] == 'm')
        return v * 60000;
    return v;
}

static int run_wrk(unsigned port, const char *route, const char *lua, const char *bodies,
                   uint64_t threads, uint64_t conns, uint64_t secs, wrk_result_t *r)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "wrk -t%llu -c%llu -d%llus --latency -s '%s' 'http://127.0.0.1:%u%s' -- '%s' 2>&1",
             (unsigned long long)threads, (unsigned long long)conns, (unsigned long long)secs, lua,
             port, route, bodies);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return cli_failf("bench: cannot run wrk: %s", strerror(errno));
    memset(r, 0, sizeof *r);
    char line[1024];
    int in_lat = 0;
    while (fgets(line, sizeof line, p)) {
        const char *s = line + strspn(line, " \t");
        if (strncmp(s, "Requests/sec:", 13) == 0)
            r->rps = strtod(s + 13, NULL);
        else if (strncmp(s, "Latency Distribution", 20) == 0)
            in_lat = 1;
        else if (in_lat && strncmp(s, "50%", 3) == 0)
            r->p50_ms = wrk_time_ms(s + 3 + strspn(s + 3, " \t"));
        else if (in_lat && strncmp(s, "99%", 3) == 0)
            r->p99_ms = wrk_time_ms(s + 3 + strspn(s + 3, " \t"));
        else if (strstr(s, "requests in") != NULL)
            r->requests = strtoull(s, NULL, 10);
        else if (strncmp(s, "Non-2xx or 3xx responses:", 25) == 0)
            r->non2xx = strtoull(s + 25, NULL, 10);
        else if (strncmp(s, "Socket errors:", 14) == 0)
            r->errors = 1;
    }
    int st = pclose(p);
    if (st != 0 || r->rps <= 0)
        return cli_failf("bench: wrk failed (status %d); is it installed? (apt-get install wrk)",
                         st);
    return CLI_OK;
}

/* ------------------------------------------------------------- command */

int cmd_bench_rtb(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&rtb_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t users = 1000000, ncrowds = 1000, nlines = 100, nbodies = 20000, secs = 15, conns = 32,
             wthreads = 2, seed = 42;
    struct {
        const char *name;
        uint64_t *v, lo, hi;
    } nums[] = {
        {"users", &users, 1000, 100000000}, {"crowds", &ncrowds, 2, 100000},
        {"lines", &nlines, 1, 1000},        {"bodies", &nbodies, 100, 10000000},
        {"seconds", &secs, 1, 3600},        {"conns", &conns, 1, 10000},
        {"wrk-threads", &wthreads, 1, 256}, {"seed", &seed, 0, UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        const char *v = cli_get(&a, nums[i].name);
        if (v && (cli_parse_u64(v, nums[i].v) != 0 || *nums[i].v < nums[i].lo ||
                  *nums[i].v > nums[i].hi))
            return cli_usage_error(&rtb_spec, "--%s: expected %llu to %llu", nums[i].name,
                                   (unsigned long long)nums[i].lo, (unsigned long long)nums[i].hi);
    }
    if (system("command -v wrk >/dev/null 2>&1") != 0)
        return cli_failf("bench --rtb needs wrk: apt-get install wrk (scripts/install-deps.sh)");

    const char *base = cli_get(&a, "dir") ? cli_get(&a, "dir")
                       : getenv("TMPDIR") ? getenv("TMPDIR")
                                          : "/tmp";
    char tmp[4096], data[4200], act[4300], portf[4200], lua[4200], bodies[4200], log[4200];
    snprintf(tmp, sizeof tmp, "%s/crowdpack-bench-rtb-XXXXXX", base);
    if (mkdtemp(tmp) == NULL)
        return cli_failf("%s: %s", tmp, strerror(errno));
    snprintf(data, sizeof data, "%s/data", tmp);
    snprintf(act, sizeof act, "%s/activate", data);
    snprintf(portf, sizeof portf, "%s/port", tmp);
    snprintf(lua, sizeof lua, "%s/bid.lua", tmp);
    snprintf(bodies, sizeof bodies, "%s/requests.ndjson", tmp);
    snprintf(log, sizeof log, "%s/server.log", tmp);
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 7;
    cp_db_t *db = NULL;
    pid_t pid = -1;
    cp_error_t err = {0};
    json_t *out = NULL;
    rc = CLI_FAIL;

    /* 1-2: the data, the campaigns, the recorded requests. */
    double t0 = progress_now();
    cp_open_options_t oo = {.size = sizeof(cp_open_options_t), .flags = CP_OPEN_CREATE};
    cp_status st = cp_db_open(data, &oo, &db, &err);
    demo_options_t dopt = {.users = users, .seed = seed, .progress = !a.json};
    if (st == CP_OK)
        st = demo_generate(db, &dopt, &err);
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (make_crowds(db, ncrowds, &rng) != CLI_OK ||
        make_campaigns(db, act, nlines, ncrowds, &rng) != CLI_OK)
        goto out;
    if ((st = cp_db_close(db, &err)) != CP_OK) {
        db = NULL;
        rc = cli_fail(st, &err);
        goto out;
    }
    db = NULL;
    if (make_bodies(bodies, nbodies, users, &rng) != CLI_OK ||
        write_file(lua, LUA, sizeof LUA - 1) != CLI_OK)
        goto out;
    double setup_secs = progress_now() - t0;

    /* 3: the server. */
    unsigned port = 0;
    if ((pid = serve(data, portf, cli_get(&a, "server-threads"), log)) < 0) {
        cli_failf("bench: cannot start the server: %s", strerror(errno));
        goto out;
    }
    if (wait_port(portf, pid, &port) != CLI_OK)
        goto out;

    /* 4-5: the floor, then the bidder. A short first bid run warms the
     * targeting (materialised at open) and the page cache. */
    wrk_result_t floor, bid, warm;
    server_stats_t m0, m1;
    if (!a.json)
        fprintf(stderr, "wrk: POST /openrtb2/nobid for %llu s, then /openrtb2/bid\n",
                (unsigned long long)secs);
    if (run_wrk(port, "/openrtb2/bid", lua, bodies, wthreads, conns, 2, &warm) != CLI_OK ||
        run_wrk(port, "/openrtb2/nobid", lua, bodies, wthreads, conns, secs, &floor) != CLI_OK ||
        scrape(port, &m0) != CLI_OK)
        goto out;
    double c0 = proc_cpu_secs(pid);
    if (run_wrk(port, "/openrtb2/bid", lua, bodies, wthreads, conns, secs, &bid) != CLI_OK)
        goto out;
    double cpu = proc_cpu_secs(pid) - c0;
    if (scrape(port, &m1) != CLI_OK)
        goto out;
    uint64_t handled = m1.bid_bucket[NBID_BUCKETS - 1] - m0.bid_bucket[NBID_BUCKETS - 1];
    double p50 = hist_quantile(&m0, &m1, 0.50) * 1000, p99 = hist_quantile(&m0, &m1, 0.99) * 1000;
    uint64_t n200 = m1.bid_200 - m0.bid_200, n204 = m1.bid_204 - m0.bid_204,
             n400 = m1.bid_400 - m0.bid_400;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double per_cpu_sec = cpu > 0 ? (double)handled / cpu : 0;

    if (a.json) {
        out = json_pack(
            "{s:s,s:I,s:I,s:I,s:I,s:I,s:i,s:f,s:{s:f,s:f,s:f,s:I},s:{s:f,s:f,s:f,s:I,s:I,s:I,s:I,"
            "s:f,s:f,s:f,s:f,s:f}}",
            "path", "http", "users", (json_int_t)users, "crowds", (json_int_t)ncrowds, "lines",
            (json_int_t)nlines, "conns", (json_int_t)conns, "seconds", (json_int_t)secs, "cpus",
            (int)ncpu, "setup_seconds", setup_secs, "floor", "requests_per_sec", floor.rps,
            "wrk_p50_ms", floor.p50_ms, "wrk_p99_ms", floor.p99_ms, "non2xx",
            (json_int_t)floor.non2xx, "bid", "requests_per_sec", bid.rps, "wrk_p50_ms", bid.p50_ms,
            "wrk_p99_ms", bid.p99_ms, "answered_200", (json_int_t)n200, "answered_204",
            (json_int_t)n204, "answered_400", (json_int_t)n400, "handled", (json_int_t)handled,
            "server_p50_ms", p50, "server_p99_ms", p99, "server_cpu_seconds", cpu,
            "requests_per_server_cpu_second", per_cpu_sec, "share_of_floor",
            floor.rps > 0 ? bid.rps / floor.rps : 0.0);
        if (out == NULL) {
            cli_failf("out of memory");
            goto out;
        }
        cli_emit_json(out);
        out = NULL;
    } else {
        char g[4][32];
        printf("bench --rtb: %s users, %s crowds, %s line items; wrk %llu threads, %llu "
               "keep-alive connections, %llu s per run, %ld CPUs (shared by wrk and the "
               "server)\n\n",
               cli_group(users, g[0]), cli_group(ncrowds, g[1]), cli_group(nlines, g[2]),
               (unsigned long long)wthreads, (unsigned long long)conns, (unsigned long long)secs,
               ncpu);
        printf("%-28s %12s %10s %10s\n", "route", "requests/s", "wrk p50", "wrk p99");
        printf("%-28s %12.0f %8.2f ms %7.2f ms\n", "POST /openrtb2/nobid (floor)", floor.rps,
               floor.p50_ms, floor.p99_ms);
        printf("%-28s %12.0f %8.2f ms %7.2f ms\n", "POST /openrtb2/bid", bid.rps, bid.p50_ms,
               bid.p99_ms);
        printf("\nbidder inside the server (crowdpack_bid_seconds): p50 %.3f ms, p99 %.3f ms over "
               "%s requests\n",
               p50, p99, cli_group(handled, g[3]));
        printf("answers: %llu bids (200), %llu no-bids (204), %llu refused (400)\n",
               (unsigned long long)n200, (unsigned long long)n204, (unsigned long long)n400);
        printf("server CPU: %.1f s for the bid run = %.0f requests per CPU-second; the bidder "
               "runs at %.0f %% of the floor's rate\n",
               cpu, per_cpu_sec, floor.rps > 0 ? 100.0 * bid.rps / floor.rps : 0.0);
    }
    if (n400 > 0 || floor.non2xx > 0 || bid.non2xx > 0)
        rc = cli_failf("bench: requests were refused: %llu 400s from the bidder, %llu and %llu "
                       "non-2xx answers (floor, bid)",
                       (unsigned long long)n400, (unsigned long long)floor.non2xx,
                       (unsigned long long)bid.non2xx);
    else
        rc = CLI_OK;
out:
    json_decref(out);
    if (pid > 0) {
        kill(pid, SIGTERM);
        int status;
        waitpid(pid, &status, 0);
    }
    if (db != NULL)
        cp_db_close(db, NULL);
    if (cli_has(&a, "keep"))
        fprintf(stderr, "kept %s\n", tmp);
    else
        bench_rm_tree(tmp);
    return rc;
}
