/*
 * bench_intake.c — `crowdpack bench --intake`: how fast events get in
 * (DESIGN.md §7 "Ingest": >= 1M updates/s per core for bulk import,
 * >= 50k durable events/s for HTTP batches).
 *
 * One run measures, each into a fresh temporary data directory:
 *
 *  1. Online Retail (UCI file, `--preset online-retail`) through
 *     cp_import_file, when the file is found;
 *  2. a synthetic CSV of N events over U users (zipf-ish: a few users do
 *     much), 20 event names, an indexed `category` of 200 values, an
 *     `amount`, timestamps over 90 days, imported with a mapping; and the
 *     same events as NDJSON Segment track events (`import --events`);
 *  3. HTTP: the server runs in this process (server_run on a thread,
 *     127.0.0.1, a free port); C load threads each keep one HTTP/1.1
 *     connection and POST /v1/batch bodies of B events for S seconds with
 *     a write key (Basic auth, as Segment SDKs send it). Only 200 answers
 *     count, and a 200 means the events are durable (fsync before ack).
 *     Afterwards the server's event count (GET /v1/events) must equal the
 *     acknowledged events, or the bench fails.
 *
 * Imports are single-threaded, so "per core" is events / CPU seconds of
 * the process (user + sys, getrusage) across cp_import_file. The floors
 * printed beside them, measured in the same run over the same files: the
 * CSV reader alone (csv_next, gunzip included) and, for NDJSON, reading
 * lines and parsing each with jansson; for HTTP, the disk's fdatasync rate
 * (4 KiB appends in the same directory), which says how many events must
 * share one fsync to reach the rate measured.
 *
 * This file is also the load generator that bench/intake_load.c used to
 * be (one implementation).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/bench_intake.h"
#include "cli/cli.h"
#include "cli/progress.h"
#include "ingest/csv.h"
#include "server/server.h"
#include "util/util.h"

#define NNAMES 20
#define NCATS 200
#define DAYS 90
#define BASE_DAY_SECS INT64_C(1711929600) /* 2024-04-01T00:00:00Z */
#define MAX_BATCH 2000                    /* 2,000 x ~180 B stays under the 500 KB batch limit */
#define MAX_CONNS 256
#define RESP_CAP (4u << 20)        /* largest answer read (GET /v1/events) */
#define LAT_MAX (4u * 1000 * 1000) /* latency samples kept per worker (~1 h at 1k req/s) */

static const char *const ev_names[NNAMES] = {
    "view",  "page_view", "click",    "search",    "add_to_cart",      "favorite",     "share",
    "like",  "comment",   "purchase", "checkout",  "remove_from_cart", "coupon_claim", "coupon_use",
    "login", "signup",    "review",   "subscribe", "refund",           "logout",
};

/* ------------------------------------------------------------ helpers */

static double tv_secs(struct timeval t)
{
    return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

/* CPU seconds (user + sys) of the process, or of the calling thread. */
static double cpu_secs(int who)
{
    struct rusage ru;
    if (getrusage(who, &ru) != 0)
        return 0;
    return tv_secs(ru.ru_utime) + tv_secs(ru.ru_stime);
}

/* CPU seconds (user + sys) of this process's thread named `name` (the
 * server's intake writer is "cp-intake"); -1 if there is none. */
static double thread_cpu_secs(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return -1;
    double secs = -1;
    long tick = sysconf(_SC_CLK_TCK);
    struct dirent *de;
    while (secs < 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[64], comm[64] = "", stat[1024];
        snprintf(path, sizeof path, "/proc/self/task/%.20s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(comm, sizeof comm, f) == NULL)
            comm[0] = '\0';
        fclose(f);
        comm[strcspn(comm, "\n")] = '\0';
        if (strcmp(comm, name) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", de->d_name);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        /* Fields after the parenthesised name: state is field 3, utime 14, stime 15. */
        const char *p = strrchr(stat, ')');
        unsigned long ut = 0, st = 0;
        if (p &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2 &&
            tick > 0)
            secs = (double)(ut + st) / (double)tick;
    }
    closedir(d);
    return secs;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)((double)n * p + 0.999999);
    i = i == 0 ? 0 : i - 1;
    return sorted[i >= n ? n - 1 : i];
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p) != 0 ? -1 : 0;
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* --------------------------------------------------------- generator */

/*
 * One synthetic event. Users: id = floor(U x^2) for uniform x, so the
 * lowest 1% of ids send 10% of the events (a zipf-ish head and a long
 * tail of users seen once). Names and categories are skewed the same way.
 */
typedef struct gen_event {
    uint64_t user; /* 0..U-1; written as "u<user+1>" */
    int name;
    int cat;
    uint32_t cents;
    int64_t ts;
} gen_event_t;

static void gen_next(uint64_t *rng, uint64_t users, gen_event_t *e)
{
    double x = rand_double(rng), y = rand_double(rng), z = rand_double(rng);
    e->user = (uint64_t)(x * x * (double)users);
    if (e->user >= users)
        e->user = users - 1;
    e->name = (int)(y * y * y * NNAMES);
    e->cat = (int)(z * z * NCATS);
    uint64_t r = rand_next(rng);
    e->cents = (uint32_t)(r % 50000u) + 1u;
    e->ts = BASE_DAY_SECS + (int64_t)((r >> 20) % (uint64_t)(DAYS * 86400));
}

/* The Segment track event of `e`, without the enclosing braces' context. */
static cp_status gen_segment(buf_t *b, const gen_event_t *e, const char *msg_prefix, uint64_t seq)
{
    char ts[40];
    time_format(e->ts, ts, sizeof ts);
    return buf_printf(b,
                      "{\"type\":\"track\",\"userId\":\"u%llu\",\"event\":\"%s\",\"messageId\":"
                      "\"%s%llu\",\"timestamp\":\"%s\",\"properties\":{\"category\":\"c%03d\","
                      "\"amount\":%u.%02u}}",
                      (unsigned long long)(e->user + 1), ev_names[e->name], msg_prefix,
                      (unsigned long long)seq, ts, e->cat, e->cents / 100, e->cents % 100);
}

static const char synth_mapping[] =
    "{\"name\":\"bench-synthetic\",\"header\":true,"
    "\"identifiers\":[{\"column\":\"user_id\",\"type\":\"user_id\"}],"
    "\"event\":{\"name\":{\"column\":\"event\"},"
    "\"timestamp\":{\"column\":\"ts\",\"format\":\"iso8601\"},"
    "\"properties\":[{\"column\":\"category\",\"name\":\"category\"},"
    "{\"column\":\"amount\",\"name\":\"amount\",\"type\":\"number\"}]},"
    "\"indexed_properties\":[\"category\"]}";

/*
 * Writes the same N events as CSV (for the mapping above) and as NDJSON
 * Segment track events (messageIds "m<line>"). *distinct = users that
 * appear. Returns CLI_OK or CLI_FAIL (printed).
 */
static int gen_files(const char *csv_path, const char *nd_path, uint64_t n, uint64_t users,
                     uint64_t seed, uint64_t *distinct)
{
    int rc = CLI_OK;
    FILE *fc = fopen(csv_path, "w"), *fn = fopen(nd_path, "w");
    uint64_t *seen = calloc((size_t)(users / 64 + 1), sizeof *seen);
    buf_t b;
    buf_init(&b, 0);
    if (!fc || !fn) {
        rc = cli_failf("cannot write %s: %s", !fc ? csv_path : nd_path, strerror(errno));
        goto out;
    }
    if (!seen) {
        rc = cli_failf("out of memory");
        goto out;
    }
    uint64_t rng = seed;
    *distinct = 0;
    fputs("user_id,event,category,amount,ts\n", fc);
    for (uint64_t i = 0; i < n; i++) {
        gen_event_t e;
        gen_next(&rng, users, &e);
        if (!(seen[e.user / 64] >> (e.user % 64) & 1)) {
            seen[e.user / 64] |= UINT64_C(1) << (e.user % 64);
            (*distinct)++;
        }
        char ts[40];
        time_format(e.ts, ts, sizeof ts);
        fprintf(fc, "u%llu,%s,c%03d,%u.%02u,%s\n", (unsigned long long)(e.user + 1),
                ev_names[e.name], e.cat, e.cents / 100, e.cents % 100, ts);
        buf_reset(&b);
        if (gen_segment(&b, &e, "m", i + 1) != CP_OK) {
            rc = cli_failf("out of memory");
            goto out;
        }
        fwrite(b.data, 1, b.len, fn);
        fputc('\n', fn);
    }
    if (ferror(fc) || ferror(fn))
        rc = cli_failf("cannot write the synthetic files: %s", strerror(errno));
out:
    if (fc && fclose(fc) != 0 && rc == CLI_OK)
        rc = cli_failf("cannot write %s: %s", csv_path, strerror(errno));
    if (fn && fclose(fn) != 0 && rc == CLI_OK)
        rc = cli_failf("cannot write %s: %s", nd_path, strerror(errno));
    buf_free(&b);
    free(seen);
    return rc;
}

/* ------------------------------------------------------------ imports */

/* Online Retail is imported this many times (about a second each); the
 * run with the median CPU is reported: one run moves ±15 % on this kind
 * of shared machine. */
#define RETAIL_RUNS 3

typedef struct imp_row {
    const char *name;
    const char *skipped; /* why not measured, or NULL */
    char file[4096];
    uint64_t file_bytes;
    cp_import_stats_t st;
    double wall, cpu, thread_cpu;
    /* the floor: read + parse only, over the same file */
    const char *floor_what;
    double cpu_runs[RETAIL_RUNS]; /* every run's CPU when the import was repeated */
    int nruns;
    uint64_t floor_records; /* over all passes */
    int floor_passes;
    double floor_wall, floor_cpu;
} imp_row_t;

/* Floors of small files are below the CPU clock's resolution in one pass:
 * passes repeat until this much CPU was spent (a large file: one pass). */
#define FLOOR_MIN_CPU 0.2
#define FLOOR_MAX_PASSES 10000

/* One pass of a file's CSV records through csv_next (header excluded):
 * the reader alone, no mapping, no apply. */
static int csv_pass(const char *file, uint64_t *records)
{
    csv_reader_t *cr = NULL;
    cp_error_t err = {0};
    cp_status st = csv_open(file, NULL, &cr, &err);
    if (st != CP_OK)
        return cli_fail(st, &err);
    uint64_t recs = 0, bytes = 0;
    for (;;) {
        const csv_field_t *f = NULL;
        size_t n = 0;
        st = csv_next(cr, &f, &n, &err);
        if (st == CP_EIO)
            break;
        if (st != CP_OK)
            continue; /* a bad record: the importer would reject it too */
        if (!f)
            break;
        for (size_t i = 0; i < n; i++)
            bytes += f[i].len; /* touch the fields as an importer would */
        recs++;
    }
    csv_close(cr);
    if (st == CP_EIO)
        return cli_fail(st, &err);
    *records = recs > 0 ? recs - 1 : 0;
    (void)bytes;
    return CLI_OK;
}

static int floor_csv(imp_row_t *r)
{
    double t0 = progress_now(), c0 = cpu_secs(RUSAGE_THREAD);
    uint64_t total = 0;
    for (int pass = 0; pass < FLOOR_MAX_PASSES; pass++) {
        uint64_t recs = 0;
        int rc = csv_pass(r->file, &recs);
        if (rc != CLI_OK)
            return rc;
        total += recs;
        r->floor_passes = pass + 1;
        if (recs == 0 || cpu_secs(RUSAGE_THREAD) - c0 >= FLOOR_MIN_CPU)
            break;
    }
    r->floor_wall = progress_now() - t0;
    r->floor_cpu = cpu_secs(RUSAGE_THREAD) - c0;
    r->floor_records = total;
    r->floor_what = "csv_next";
    return CLI_OK;
}

/* NDJSON lines read and parsed by jansson, then dropped: the JSON floor. */
static int floor_ndjson(imp_row_t *r)
{
    FILE *f = fopen(r->file, "r");
    if (!f)
        return cli_failf("cannot read %s: %s", r->file, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t recs = 0, bad = 0;
    double t0 = progress_now(), c0 = cpu_secs(RUSAGE_THREAD);
    while ((n = getline(&line, &cap, f)) > 0) {
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)n, JSON_DISABLE_EOF_CHECK, &je);
        if (j)
            recs++;
        else
            bad++;
        json_decref(j);
    }
    r->floor_wall = progress_now() - t0;
    r->floor_cpu = cpu_secs(RUSAGE_THREAD) - c0;
    free(line);
    fclose(f);
    if (bad)
        return cli_failf("bench: %llu NDJSON lines of %s do not parse", (unsigned long long)bad,
                         r->file);
    r->floor_records = recs;
    r->floor_passes = 1;
    r->floor_what = "json_loadb";
    return CLI_OK;
}

/*
 * Imports r->file into a fresh data directory under `tmp` with `o`;
 * `config` (or NULL) is set as the intake configuration first. Times the
 * cp_import_file call alone (wall, process CPU, thread CPU).
 */
static int run_import(imp_row_t *r, const char *tmp, const cp_import_options_t *o,
                      const char *config)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/import-data", tmp);
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    int rc = CLI_OK;
    cp_open_options_t oo = {.size = sizeof(cp_open_options_t), .flags = CP_OPEN_CREATE};
    cp_status st = cp_db_open(dir, &oo, &db, &err);
    if (st == CP_OK && config)
        st = cp_intake_config_set_json(db, config, strlen(config), &err);
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    r->file_bytes = file_size(r->file);
    memset(&r->st, 0, sizeof r->st);
    r->st.size = sizeof r->st;
    double t0 = progress_now(), c0 = cpu_secs(RUSAGE_SELF), tc0 = cpu_secs(RUSAGE_THREAD);
    st = cp_import_file(db, r->file, o, &r->st, &err);
    r->wall = progress_now() - t0;
    r->cpu = cpu_secs(RUSAGE_SELF) - c0;
    r->thread_cpu = cpu_secs(RUSAGE_THREAD) - tc0;
    if (st != CP_OK)
        rc = cli_fail(st, &err);
out:
    cp_db_close(db, NULL);
    rm_tree(dir);
    return rc;
}

/* ---------------------------------------------------------------- HTTP */

typedef struct http_run {
    int skipped;
    const char *skip_why;
    int conns, batch, seconds, server_threads, auth;
    uint16_t port;
    uint64_t requests, events, applied, errors, unknown;
    int first_status;
    char first_error[300];
    double elapsed;
    double p50, p99, max, mean; /* ms */
    double client_cpu, process_cpu;
    double writer_cpu; /* the intake writer thread's, -1 if not found */
    uint64_t server_events;
    int verified;
    int fsync_n;
    double fsync_secs, fsync_p50, fsync_max; /* total s; ms */
} http_run_t;

typedef struct worker {
    int id;
    uint16_t port;
    int batch;
    uint64_t users;
    uint64_t seed;
    const char *auth; /* "Basic ..." or NULL */
    atomic_int *stop;
    uint64_t requests, events, applied, errors, unknown;
    int first_status;
    char first_error[300];
    double *lat; /* ms */
    size_t nlat, caplat;
    double cpu;
} worker_t;

static int connect_loopback(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int send_all(int fd, const char *p, size_t n, int more)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Reads one HTTP/1.1 response into buf (cap bytes, NUL-terminated).
 * Returns its status, -1 on a read error or EOF, -2 when the answer is
 * malformed, chunked or larger than cap. *body / *blen point into buf;
 * *closing is set when the server will close the connection.
 */
static int http_read(int fd, char *buf, size_t cap, const char **body, size_t *blen, int *closing)
{
    size_t have = 0, hdr = 0;
    long long clen = -1;
    *closing = 0;
    for (;;) {
        if (have + 1 >= cap)
            return -2;
        ssize_t n = read(fd, buf + have, cap - have - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        size_t from = have > 3 ? have - 3 : 0;
        have += (size_t)n;
        buf[have] = '\0';
        if (hdr == 0) {
            char *e = memmem(buf + from, have - from, "\r\n\r\n", 4);
            if (!e)
                continue;
            hdr = (size_t)(e - buf) + 4;
            char save = buf[hdr];
            buf[hdr] = '\0';
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            if (cl)
                clen = strtoll(cl + 17, NULL, 10);
            if (strcasestr(buf, "\r\nTransfer-Encoding: chunked"))
                clen = -2;
            if (strcasestr(buf, "\r\nConnection: close"))
                *closing = 1;
            buf[hdr] = save;
            if (clen < 0 || strncmp(buf, "HTTP/1.", 7) != 0)
                return -2;
        }
        if (hdr && have - hdr >= (size_t)clen)
            break;
    }
    *body = buf + hdr;
    *blen = (size_t)clen;
    buf[hdr + (size_t)clen] = '\0';
    return atoi(buf + 9);
}

/* One request on a fresh connection (setup and verification). */
static int http_once(uint16_t port, const char *method, const char *path, const char *auth,
                     const char *body, char *resp, size_t cap, const char **rbody)
{
    int fd = connect_loopback(port);
    if (fd < 0)
        return -1;
    char hdr[1024];
    size_t blen = body ? strlen(body) : 0;
    int hl = snprintf(hdr, sizeof hdr,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%s"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, auth ? "Authorization: " : "", auth ? auth : "",
                      auth ? "\r\n" : "", blen);
    int status = -1;
    size_t rl;
    int closing;
    if (send_all(fd, hdr, (size_t)hl, blen > 0) == 0 &&
        send_all(fd, body ? body : "", blen, 0) == 0)
        status = http_read(fd, resp, cap, rbody, &rl, &closing);
    close(fd);
    return status;
}

static void worker_error(worker_t *w, int status, const char *body)
{
    w->errors++;
    if (w->first_status == 0) {
        w->first_status = status;
        snprintf(w->first_error, sizeof w->first_error, "%s",
                 status == -1   ? "connection closed or read error"
                 : status == -2 ? "malformed or oversized answer"
                 : body         ? body
                                : "");
    }
}

/* Keep-alive POST /v1/batch loop until *stop; each request's events have
 * distinct messageIds "h<worker>-<seq>". */
static void *worker_run(void *arg)
{
    worker_t *w = arg;
    buf_t body, hdr;
    buf_init(&body, 0);
    buf_init(&hdr, 0);
    char *resp = malloc(65536);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "h%d-", w->id);
    uint64_t rng = w->seed, seq = 0;
    int fd = -1;
    double c0 = cpu_secs(RUSAGE_THREAD);
    while (resp && !atomic_load(w->stop)) {
        if (fd < 0 && (fd = connect_loopback(w->port)) < 0) {
            worker_error(w, -1, NULL);
            usleep(10000);
            continue;
        }
        buf_reset(&body);
        cp_status st = buf_append(&body, "{\"batch\":[", 10);
        for (int i = 0; i < w->batch && st == CP_OK; i++) {
            gen_event_t e;
            gen_next(&rng, w->users, &e);
            if (i)
                st = buf_append(&body, ",", 1);
            if (st == CP_OK)
                st = gen_segment(&body, &e, prefix, ++seq);
        }
        if (st == CP_OK)
            st = buf_append(&body, "]}", 2);
        buf_reset(&hdr);
        if (st == CP_OK)
            st = buf_printf(&hdr,
                            "POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            "Content-Type: application/json\r\n%s%s%sContent-Length: %zu\r\n\r\n",
                            w->auth ? "Authorization: " : "", w->auth ? w->auth : "",
                            w->auth ? "\r\n" : "", body.len);
        if (st != CP_OK) {
            worker_error(w, -2, "out of memory building a request");
            break;
        }
        double t0 = progress_now();
        if (send_all(fd, hdr.data, hdr.len, 1) != 0 || send_all(fd, body.data, body.len, 0) != 0) {
            /* Possibly received in part: its outcome is unknown. */
            w->unknown++;
            worker_error(w, -1, NULL);
            close(fd);
            fd = -1;
            continue;
        }
        const char *rb = NULL;
        size_t rl = 0;
        int closing = 0;
        int status = http_read(fd, resp, 65536, &rb, &rl, &closing);
        double ms = (progress_now() - t0) * 1e3;
        if (status < 0) {
            w->unknown++; /* sent whole, no answer: applied or not */
            worker_error(w, status, NULL);
            close(fd);
            fd = -1;
            continue;
        }
        if (closing) {
            close(fd);
            fd = -1;
        }
        if (status != 200) {
            worker_error(w, status, rb);
            continue;
        }
        const char *ap = strstr(rb, "\"applied\":");
        w->applied += ap ? strtoull(ap + 10, NULL, 10) : 0;
        w->requests++;
        w->events += (uint64_t)w->batch;
        if (w->nlat == w->caplat && w->caplat < LAT_MAX) {
            size_t nc = w->caplat ? w->caplat * 2 : 4096;
            double *nl = realloc(w->lat, nc * sizeof *nl);
            if (nl) {
                w->lat = nl;
                w->caplat = nc;
            }
        }
        if (w->nlat < w->caplat)
            w->lat[w->nlat++] = ms;
    }
    w->cpu = cpu_secs(RUSAGE_THREAD) - c0;
    if (fd >= 0)
        close(fd);
    buf_free(&body);
    buf_free(&hdr);
    free(resp);
    return NULL;
}

/* "Basic base64(KEY:)": a Segment write key as SDKs send it. Caller frees. */
static char *basic_of(const char *key)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(key) + 1;
    unsigned char *in = malloc(n);
    char *out = malloc(6 + 4 * ((n + 2) / 3) + 1);
    if (!in || !out) {
        free(in);
        free(out);
        return NULL;
    }
    memcpy(in, key, n - 1);
    in[n - 1] = ':';
    strcpy(out, "Basic ");
    char *o = out + 6;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        *o++ = t[v >> 18 & 63];
        *o++ = t[v >> 12 & 63];
        *o++ = i + 1 < n ? t[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? t[v & 63] : '=';
    }
    *o = '\0';
    free(in);
    return out;
}

/* fdatasync rate of the disk under `dir`: n appends of 4 KiB, each
 * followed by fdatasync (at most ~3 s). */
static int measure_fsync(http_run_t *h, const char *dir, int n)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/fsync-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return cli_failf("cannot create %s: %s", path, strerror(errno));
    char block[4096];
    memset(block, 'x', sizeof block);
    double *t = calloc((size_t)n, sizeof *t);
    int rc = CLI_OK, k = 0;
    if (!t) {
        rc = cli_failf("out of memory");
        goto out;
    }
    double start = progress_now();
    for (; k < n && progress_now() - start < 3.0; k++) {
        double t0 = progress_now();
        if (write(fd, block, sizeof block) != (ssize_t)sizeof block || fdatasync(fd) != 0) {
            rc = cli_failf("fsync probe in %s: %s", dir, strerror(errno));
            goto out;
        }
        t[k] = (progress_now() - t0) * 1e3;
    }
    h->fsync_secs = progress_now() - start;
    h->fsync_n = k;
    qsort(t, (size_t)k, sizeof *t, cmp_double);
    h->fsync_p50 = pct(t, (size_t)k, 0.5);
    h->fsync_max = k ? t[k - 1] : 0;
out:
    free(t);
    close(fd);
    unlink(path);
    return rc;
}

typedef struct srv_thread {
    cp_db_t *db;
    server_options_t o;
    cp_error_t err;
    cp_status st;
    atomic_int done;
} srv_thread_t;

static void *server_main(void *arg)
{
    srv_thread_t *s = arg;
    s->st = server_run(s->db, &s->o, &s->err);
    atomic_store(&s->done, 1);
    return NULL;
}

/* Sum of "count" over GET /v1/events. */
static int server_event_count(uint16_t port, const char *auth, uint64_t *out)
{
    char *resp = malloc(RESP_CAP);
    if (!resp)
        return cli_failf("out of memory");
    const char *body = NULL;
    int rc = CLI_OK;
    int status = http_once(port, "GET", "/v1/events", auth, NULL, resp, RESP_CAP, &body);
    json_t *j = status == 200 ? json_loads(body, 0, NULL) : NULL;
    if (!j) {
        rc = cli_failf("bench: GET /v1/events answered %d: %.200s", status,
                       status > 0 && body ? body : "");
        goto out;
    }
    size_t i;
    json_t *e;
    *out = 0;
    json_array_foreach(json_object_get(j, "events"), i, e)
    {
        *out += (uint64_t)json_integer_value(json_object_get(e, "count"));
    }
out:
    json_decref(j);
    free(resp);
    return rc;
}

/*
 * The HTTP run: fsync probe, a fresh data directory with a write and an
 * admin key, the server on a thread, `category` indexed through PUT
 * /v1/intake/config, C load threads for S seconds, then the check that the
 * server holds exactly the acknowledged events, then SIGTERM to the
 * server thread (server_run's own shutdown path).
 */
static int run_http(http_run_t *h, const char *tmp, uint64_t users, uint64_t seed, int fsyncs)
{
    char dir[4200], portf[4300];
    snprintf(dir, sizeof dir, "%s/http-data", tmp);
    snprintf(portf, sizeof portf, "%s/port", tmp);
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    char *wkey = NULL, *akey = NULL, *wauth = NULL, *aauth = NULL, *resp = NULL;
    srv_thread_t srv;
    memset(&srv, 0, sizeof srv);
    pthread_t srv_tid;
    int srv_started = 0, rc = CLI_OK;
    worker_t *w = calloc((size_t)h->conns, sizeof *w);
    pthread_t *th = calloc((size_t)h->conns, sizeof *th);
    int nth = 0;
    atomic_int stop = 0;
    double *all = NULL;

    if (!w || !th || !(resp = malloc(65536))) {
        rc = cli_failf("out of memory");
        goto out;
    }
    if ((rc = measure_fsync(h, tmp, fsyncs)) != CLI_OK)
        goto out;
    cp_open_options_t oo = {.size = sizeof(cp_open_options_t), .flags = CP_OPEN_CREATE};
    cp_status st = cp_db_open(dir, &oo, &db, &err);
    if (st == CP_OK && h->auth) {
        /* A write key for the load (Basic, like an SDK); an admin key for
         * the configuration and the verification. */
        st = cp_key_create(db, CP_ROLE_WRITE, "bench write", &wkey, &err);
        if (st == CP_OK)
            st = cp_key_create(db, CP_ROLE_ADMIN, "bench admin", &akey, &err);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (h->auth) {
        size_t n = strlen(akey) + 8;
        wauth = basic_of(wkey);
        aauth = malloc(n);
        if (!wauth || !aauth) {
            rc = cli_failf("out of memory");
            goto out;
        }
        snprintf(aauth, n, "Bearer %s", akey);
    }
    srv.db = db;
    srv.o.listen = "127.0.0.1:0";
    srv.o.threads = h->server_threads;
    srv.o.port_file = portf;
    unlink(portf);
    if (pthread_create(&srv_tid, NULL, server_main, &srv) != 0) {
        rc = cli_failf("cannot start the server thread: %s", strerror(errno));
        goto out;
    }
    srv_started = 1;
    /* The port file appears once the server listens (and has installed
     * its SIGTERM handler, which the shutdown below relies on). */
    for (double t0 = progress_now(); !h->port;) {
        FILE *f = fopen(portf, "r");
        unsigned p = 0;
        if (f) {
            if (fscanf(f, "%u", &p) == 1 && p > 0 && p < 65536)
                h->port = (uint16_t)p;
            fclose(f);
        }
        if (h->port)
            break;
        if (atomic_load(&srv.done)) {
            rc = cli_fail(srv.st, &srv.err);
            goto out;
        }
        if (progress_now() - t0 > 30) {
            rc = cli_failf("bench: the server did not start listening within 30 s");
            goto out;
        }
        usleep(5000);
    }
    const char *rb = NULL;
    int status = http_once(h->port, "PUT", "/v1/intake/config", aauth,
                           "{\"indexed_properties\":[\"category\"]}", resp, 65536, &rb);
    if (status != 200) {
        rc = cli_failf("bench: PUT /v1/intake/config answered %d: %.200s", status,
                       status > 0 && rb ? rb : "");
        goto out;
    }

    /* The writer starts with the first request (the config PUT is not one). */
    double t0 = progress_now(), c0 = cpu_secs(RUSAGE_SELF), wc0 = thread_cpu_secs("cp-intake");
    for (int i = 0; i < h->conns; i++) {
        w[i].id = i;
        w[i].port = h->port;
        w[i].batch = h->batch;
        w[i].users = users;
        w[i].seed = seed * 1000003u + (uint64_t)i + 1;
        w[i].auth = wauth;
        w[i].stop = &stop;
        if (pthread_create(&th[i], NULL, worker_run, &w[i]) != 0) {
            rc = cli_failf("cannot start a load thread: %s", strerror(errno));
            break;
        }
        nth++;
    }
    progress_t bar;
    progress_start(&bar, "HTTP load", PROGRESS_ITEMS, (uint64_t)h->seconds, -1);
    bar.item = "s";
    while (rc == CLI_OK && progress_now() - t0 < (double)h->seconds) {
        usleep(50000);
        progress_update(&bar, (uint64_t)(progress_now() - t0), 0);
    }
    progress_finish(&bar);
    atomic_store(&stop, 1);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    h->elapsed = progress_now() - t0;
    h->process_cpu = cpu_secs(RUSAGE_SELF) - c0;
    double wc1 = thread_cpu_secs("cp-intake");
    h->writer_cpu = wc1 < 0 ? -1 : wc1 - (wc0 < 0 ? 0 : wc0);
    nth = 0;
    if (rc != CLI_OK)
        goto out;

    size_t nl = 0;
    for (int i = 0; i < h->conns; i++) {
        h->requests += w[i].requests;
        h->events += w[i].events;
        h->applied += w[i].applied;
        h->errors += w[i].errors;
        h->unknown += w[i].unknown;
        h->client_cpu += w[i].cpu;
        nl += w[i].nlat;
        if (!h->first_status && w[i].first_status) {
            h->first_status = w[i].first_status;
            snprintf(h->first_error, sizeof h->first_error, "%s", w[i].first_error);
        }
    }
    if (!(all = malloc((nl ? nl : 1) * sizeof *all))) {
        rc = cli_failf("out of memory");
        goto out;
    }
    size_t k = 0;
    double sum = 0;
    for (int i = 0; i < h->conns; i++)
        for (size_t j = 0; j < w[i].nlat; j++) {
            all[k++] = w[i].lat[j];
            sum += w[i].lat[j];
        }
    qsort(all, nl, sizeof *all, cmp_double);
    h->p50 = pct(all, nl, 0.50);
    h->p99 = pct(all, nl, 0.99);
    h->max = nl ? all[nl - 1] : 0;
    h->mean = nl ? sum / (double)nl : 0;

    /* Every acknowledged event must be in the server; requests whose
     * answer never came may or may not be. */
    if ((rc = server_event_count(h->port, aauth, &h->server_events)) != CLI_OK)
        goto out;
    uint64_t lo = h->events, hi = h->events + h->unknown * (uint64_t)h->batch;
    h->verified = h->server_events >= lo && h->server_events <= hi && h->applied == h->events;
out:
    atomic_store(&stop, 1);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    if (srv_started) {
        if (!atomic_load(&srv.done))
            pthread_kill(srv_tid, SIGTERM);
        pthread_join(srv_tid, NULL);
        if (srv.st != CP_OK && rc == CLI_OK)
            rc = cli_fail(srv.st, &srv.err);
    }
    cp_db_close(db, NULL);
    rm_tree(dir);
    unlink(portf);
    for (int i = 0; w && i < h->conns; i++)
        free(w[i].lat);
    free(w);
    free(th);
    free(all);
    free(resp);
    cp_free(wkey);
    cp_free(akey);
    free(wauth);
    free(aauth);
    return rc;
}

/* ------------------------------------------------------------- report */

typedef struct bench_cfg {
    uint64_t events, users, distinct, seed;
    double gen_secs;
    double load[3];
    long cpus;
} bench_cfg_t;

static double per(double n, double secs)
{
    return secs > 0 ? n / secs : 0;
}

static uint64_t all_updates(const cp_import_stats_t *s)
{
    return s->beh_updates + s->attr_updates + s->meas_updates;
}

/* "1.23M" style rates for the table. */
static const char *rate(double v, char *buf)
{
    if (v >= 1e6)
        snprintf(buf, 32, "%.2fM", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, 32, "%.1fk", v / 1e3);
    else
        snprintf(buf, 32, "%.0f", v);
    return buf;
}

static void print_imports(const imp_row_t *rows, int n)
{
    printf("\n== Bulk import: cp_import_file into a fresh data directory (single-threaded; per "
           "core = per CPU second of the process, user + sys) ==\n");
    const char *hdr[] = {"IMPORT",
                         "EVENTS",
                         "USERS",
                         "WALL",
                         "CPU",
                         "EVENTS/S/CORE",
                         "BEH UPD/S/CORE",
                         "ALL UPD/S/CORE",
                         "FLOOR REC/S/CORE",
                         "CPU / FLOOR"};
    cli_table_t *t = cli_table_new(10, hdr);
    for (int c = 1; c < 10; c++)
        cli_table_right(t, c);
    double best = 0;
    for (int i = 0; i < n; i++) {
        const imp_row_t *r = &rows[i];
        if (r->skipped) {
            const char *row[] = {r->name, "-", "-", "-", "-", "-", "-", "-", "-", "skipped"};
            cli_table_row(t, row);
            continue;
        }
        char ev[32], us[32], wall[32], cpu[32], eps[32], beh[32], all[32], fl[32], ratio[32];
        double up = (double)all_updates(&r->st);
        /* The target counts behaviour updates (tag-like assignments), not
         * the attribute and measure writes that come with them. */
        if (per((double)r->st.beh_updates, r->cpu) > best)
            best = per((double)r->st.beh_updates, r->cpu);
        snprintf(ratio, sizeof ratio, "%.1fx", r->floor_cpu > 0 ? r->cpu / r->floor_cpu : 0);
        const char *row[] = {r->name,
                             cli_group(r->st.events, ev),
                             cli_group(r->st.users_created, us),
                             cli_duration(r->wall, wall),
                             cli_duration(r->cpu, cpu),
                             rate(per((double)r->st.events, r->cpu), eps),
                             r->st.beh_updates ? rate(per((double)r->st.beh_updates, r->cpu), beh)
                                               : "n/a",
                             up > 0 ? rate(per(up, r->cpu), all) : "n/a",
                             rate(per((double)r->floor_records, r->floor_cpu), fl),
                             ratio};
        cli_table_row(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    for (int i = 0; i < n; i++) {
        const imp_row_t *r = &rows[i];
        if (r->skipped) {
            printf("  %s: skipped: %s\n", r->name, r->skipped);
            continue;
        }
        char a[32], b[32], c[32], d[32], e[32], f[32];
        printf("  %s: %s (%s); %s lines, %s skipped, %s rejected, %s duplicates; wall %s events/s; "
               "updates: behaviour %llu, attribute %llu, measure %llu\n",
               r->name, r->file, cli_bytes((double)r->file_bytes, a), cli_group(r->st.lines, b),
               cli_group(r->st.skipped, c), cli_group(r->st.rejected, d),
               cli_group(r->st.duplicates, e), rate(per((double)r->st.events, r->wall), f),
               (unsigned long long)r->st.beh_updates, (unsigned long long)r->st.attr_updates,
               (unsigned long long)r->st.meas_updates);
        if (r->nruns > 1) {
            printf("  %s: CPU of %d runs", r->name, r->nruns);
            for (int k = 0; k < r->nruns; k++)
                printf("%s %s", k ? "," : "", cli_duration(r->cpu_runs[k], a));
            printf(" (the median is in the table)\n");
        }
    }
    printf("floor = read + parse only over the same file, one core, no apply: CSV records through "
           "csv_next (gunzip included), NDJSON lines through json_loadb; CPU / FLOOR = import CPU "
           "over floor CPU\n");
    char bb[32];
    printf("target: >= 1M behaviour updates/s per core (DESIGN.md §7): %s (best %s/s)\n",
           best <= 0     ? "n/a (no import reported behaviour updates)"
           : best >= 1e6 ? "met"
                         : "NOT met",
           rate(best, bb));
}

static void print_http(const http_run_t *h)
{
    char a[32], b[32], c[32];
    printf("\n== HTTP batch intake: in-process server on 127.0.0.1:%u, %s HTTP threads; a 200 "
           "means fsynced (write-ahead log) ==\n",
           (unsigned)h->port,
           h->server_threads > 0 ? cli_group((uint64_t)h->server_threads, a) : "default");
    printf("load: %d connections (keep-alive, one thread each) x %d events per POST /v1/batch, "
           "%.1f s, %s\n",
           h->conns, h->batch, h->elapsed,
           h->auth ? "write key as Basic auth (like Segment SDKs)" : "no API key (loopback)");
    double eps = per((double)h->events, h->elapsed);
    printf("acknowledged: %s requests, %s events = %s events/s (%.0f requests/s); errors %llu",
           cli_group(h->requests, a), cli_group(h->events, b), cli_group((uint64_t)eps, c),
           per((double)h->requests, h->elapsed), (unsigned long long)h->errors);
    if (h->errors)
        printf(" (first: %d %.200s)", h->first_status, h->first_error);
    printf("\nack latency per request: p50 %.2f ms, p99 %.2f ms, max %.2f ms, mean %.2f ms\n",
           h->p50, h->p99, h->max, h->mean);
    double server_cpu = h->process_cpu - h->client_cpu;
    printf("CPU: server %.1f µs per event (%.2f cores), load generator %.1f µs per event (same "
           "machine)\n",
           h->events ? server_cpu / (double)h->events * 1e6 : 0, per(server_cpu, h->elapsed),
           h->events ? h->client_cpu / (double)h->events * 1e6 : 0);
    if (h->writer_cpu >= 0)
        printf("  of which the intake writer thread (applies every request, one at a time): %.1f "
               "µs per event, busy %.0f%% of the run\n",
               h->events ? h->writer_cpu / (double)h->events * 1e6 : 0,
               100 * per(h->writer_cpu, h->elapsed));
    double fps = per((double)h->fsync_n, h->fsync_secs);
    printf("disk floor: %.0f fdatasync/s (4 KiB appends, p50 %.2f ms, max %.2f ms): %s events/s "
           "needs >= %.0f events per fsync\n",
           fps, h->fsync_p50, h->fsync_max, cli_group((uint64_t)eps, a), fps > 0 ? eps / fps : 0);
    printf("server count (GET /v1/events): %s events — %s\n", cli_group(h->server_events, a),
           h->verified ? "equals the acknowledged events"
                       : "DOES NOT MATCH the acknowledged events");
    printf("target: >= 50,000 events/s: %s\n", eps >= 50000 ? "met" : "NOT met");
}

static json_t *imports_json(const imp_row_t *rows, int n)
{
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        const imp_row_t *r = &rows[i];
        json_t *o = json_pack("{s:s}", "name", r->name);
        if (r->skipped) {
            json_object_set_new(o, "skipped", json_string(r->skipped));
            json_array_append_new(arr, o);
            continue;
        }
        const cp_import_stats_t *s = &r->st;
        double up = (double)all_updates(s);
        json_t *m = json_pack(
            "{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f}", "file",
            r->file, "file_bytes", (json_int_t)r->file_bytes, "lines", (json_int_t)s->lines,
            "events", (json_int_t)s->events, "skipped_rows", (json_int_t)s->skipped, "rejected",
            (json_int_t)s->rejected, "duplicates", (json_int_t)s->duplicates, "users_created",
            (json_int_t)s->users_created, "merges", (json_int_t)s->merges, "beh_updates",
            (json_int_t)s->beh_updates, "attr_updates", (json_int_t)s->attr_updates, "meas_updates",
            (json_int_t)s->meas_updates, "wall_seconds", r->wall, "cpu_seconds", r->cpu,
            "thread_cpu_seconds", r->thread_cpu, "events_per_second_wall",
            per((double)s->events, r->wall), "events_per_cpu_second",
            per((double)s->events, r->cpu));
        json_object_update(o, m); /* copies references: m is released below */
        json_decref(m);
        json_object_set_new(o, "beh_updates_per_cpu_second",
                            s->beh_updates ? json_real(per((double)s->beh_updates, r->cpu))
                                           : json_null());
        json_object_set_new(o, "updates_per_cpu_second",
                            up > 0 ? json_real(per(up, r->cpu)) : json_null());
        json_object_set_new(o, "floor",
                            json_pack("{s:s,s:I,s:i,s:f,s:f,s:f}", "what", r->floor_what, "records",
                                      (json_int_t)r->floor_records, "passes", r->floor_passes,
                                      "wall_seconds", r->floor_wall, "cpu_seconds", r->floor_cpu,
                                      "records_per_cpu_second",
                                      per((double)r->floor_records, r->floor_cpu)));
        json_object_set_new(o, "cpu_over_floor",
                            json_real(r->floor_cpu > 0 ? r->cpu / r->floor_cpu : 0));
        if (r->nruns > 1) {
            json_t *runs = json_array();
            for (int k = 0; k < r->nruns; k++)
                json_array_append_new(runs, json_real(r->cpu_runs[k]));
            json_object_set_new(o, "cpu_seconds_of_runs", runs); /* the row is the median */
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

static json_t *http_json(const http_run_t *h)
{
    if (h->skipped)
        return json_pack("{s:s}", "skipped", h->skip_why);
    double server_cpu = h->process_cpu - h->client_cpu;
    json_t *o = json_pack(
        "{s:i,s:i,s:i,s:f,s:i,s:b,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:{s:f,s:f,s:f,s:f},"
        "s:f,s:f,s:I,s:b}",
        "connections", h->conns, "batch", h->batch, "server_threads", h->server_threads, "seconds",
        h->elapsed, "port", (int)h->port, "auth", h->auth, "requests", (json_int_t)h->requests,
        "events", (json_int_t)h->events, "applied", (json_int_t)h->applied, "errors",
        (json_int_t)h->errors, "unknown_outcome", (json_int_t)h->unknown, "events_per_second",
        per((double)h->events, h->elapsed), "requests_per_second",
        per((double)h->requests, h->elapsed), "ack_latency_ms", "p50", h->p50, "p99", h->p99, "max",
        h->max, "mean", h->mean, "server_cpu_us_per_event",
        h->events ? server_cpu / (double)h->events * 1e6 : 0.0, "client_cpu_us_per_event",
        h->events ? h->client_cpu / (double)h->events * 1e6 : 0.0, "server_events",
        (json_int_t)h->server_events, "verified", h->verified);
    if (o && h->writer_cpu >= 0)
        json_object_set_new(o, "writer_cpu_us_per_event",
                            json_real(h->events ? h->writer_cpu / (double)h->events * 1e6 : 0));
    if (o && h->errors)
        json_object_set_new(
            o, "first_error",
            json_pack("{s:i,s:s}", "status", h->first_status, "body", h->first_error));
    double fps = per((double)h->fsync_n, h->fsync_secs);
    if (o)
        json_object_set_new(o, "fsync",
                            json_pack("{s:i,s:f,s:f,s:f,s:f}", "calls", h->fsync_n, "per_second",
                                      fps, "p50_ms", h->fsync_p50, "max_ms", h->fsync_max,
                                      "events_per_fsync_needed",
                                      fps > 0 ? per((double)h->events, h->elapsed) / fps : 0.0));
    return o;
}

/* ------------------------------------------------------------ command */

static const cli_opt_t intake_opts[] = {
    {"intake", 0, OPT_FLAG, NULL, "measure intake (this mode)"},
    {"events", 'n', OPT_VALUE, "N", "synthetic events to import (default 2M; suffixes k M)"},
    {"users", 'u', OPT_VALUE, "U", "synthetic users, for imports and HTTP (default 1M)"},
    {"connections", 'c', OPT_VALUE, "C", "HTTP load connections, one thread each (default 8)"},
    {"batch", 'b', OPT_VALUE, "B", "events per POST /v1/batch (default 100, at most 2000)"},
    {"seconds", 's', OPT_VALUE, "S", "HTTP load duration (default 10)"},
    {"server-threads", 0, OPT_VALUE, "T", "HTTP server threads (default: the server's default)"},
    {"online-retail", 0, OPT_VALUE, "FILE",
     "the Online Retail file, or 'off' (default: found "
     "via $CP_ONLINE_RETAIL, $CP_SHARED_DATA or "
     "../shared/data)"},
    {"skip", 0, OPT_VALUE, "LIST", "parts to leave out: retail,csv,ndjson,http"},
    {"no-auth", 0, OPT_FLAG, NULL, "HTTP without an API key (the loopback open mode)"},
    {"fsyncs", 0, OPT_VALUE, "N", "fdatasync calls for the disk floor (default 200, <= 3 s)"},
    {"seed", 0, OPT_VALUE, "S", "random seed (default 42)"},
    {"dir", 0, OPT_VALUE, "DIR", "where the temporary directory goes (default $TMPDIR or /tmp)"},
    {"keep", 0, OPT_FLAG, NULL, "keep the generated files"},
    {"json-out", 0, OPT_VALUE, "FILE", "also write the JSON report to FILE"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t intake_spec = {
    "bench --intake",
    "",
    "Measure intake: bulk import rates per core and HTTP batch events/s with fsync before ack.",
    "Imports Online Retail (when found), a synthetic CSV of N events over U users and the same\n"
    "events as NDJSON, each into a fresh data directory, and reports events and index updates\n"
    "per CPU second beside the read+parse-only floor of the same file. Then runs the server in\n"
    "this process on 127.0.0.1 and posts /v1/batch requests over C keep-alive connections for\n"
    "S seconds: acknowledged events/s, ack latency p50/p99/max, the disk's fdatasync rate, and\n"
    "checks that the server holds exactly the acknowledged events (else exit 1).\n\nExamples:\n"
    "  crowdpack bench --intake\n"
    "  crowdpack bench --intake --events 200k --users 50k --seconds 5 --json\n"
    "  crowdpack bench --intake --skip retail,ndjson --connections 16 --batch 200",
    intake_opts,
    CONN_JSON,
    0,
    0};

static int in_list(const char *list, const char *word)
{
    if (!list)
        return 0;
    size_t n = strlen(word);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, word, n) == 0)
            return 1;
        p += len + (e ? 1 : 0);
    }
    return 0;
}

/* The Online Retail file: the option, else $CP_ONLINE_RETAIL, else
 * $CP_SHARED_DATA/online-retail/..., else ../shared/data/... from the
 * current directory. NULL with *why when it is not there. */
static const char *find_retail(const char *opt, char *buf, size_t cap, const char **why)
{
    static const char rel[] = "online-retail/online_retail.csv.gz";
    const char *env = getenv("CP_ONLINE_RETAIL"), *shared = getenv("CP_SHARED_DATA");
    if (opt) {
        snprintf(buf, cap, "%s", opt);
        return buf;
    }
    if (env && *env) {
        snprintf(buf, cap, "%s", env);
        if (access(buf, R_OK) == 0)
            return buf;
    }
    if (shared && *shared) {
        snprintf(buf, cap, "%s/%s", shared, rel);
        if (access(buf, R_OK) == 0)
            return buf;
    }
    snprintf(buf, cap, "../shared/data/%s", rel);
    if (access(buf, R_OK) == 0)
        return buf;
    *why = "file not found ($CP_ONLINE_RETAIL, $CP_SHARED_DATA/online-retail/, "
           "../shared/data/online-retail/; or --online-retail FILE)";
    return NULL;
}

static int opt_u64(const cli_args_t *a, const char *name, uint64_t lo, uint64_t hi, uint64_t *v)
{
    const char *s = cli_get(a, name);
    if (!s)
        return CLI_OK;
    if (cli_parse_u64(s, v) != 0 || *v < lo || *v > hi)
        return cli_usage_error(&intake_spec, "--%s: expected %llu to %llu, got '%s'", name,
                               (unsigned long long)lo, (unsigned long long)hi, s);
    return CLI_OK;
}

static void read_loadavg(double l[3])
{
    l[0] = l[1] = l[2] = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &l[0], &l[1], &l[2]) != 3)
            l[0] = l[1] = l[2] = 0;
        fclose(f);
    }
}

typedef struct reject_ctx {
    uint64_t shown;
} reject_ctx_t;

static void on_reject(void *ud, const cp_error_t *e)
{
    reject_ctx_t *c = ud;
    if (c->shown++ < 3)
        fprintf(stderr, "bench: rejected line %llu: %s\n", (unsigned long long)e->record,
                e->message);
}

int cmd_bench_intake(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&intake_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    bench_cfg_t cfg = {.events = 2000000, .users = 1000000, .seed = 42};
    uint64_t conns = 8, batch = 100, secs = 10, sthreads = 0, fsyncs = 200;
    if ((rc = opt_u64(&a, "events", 1, 1000000000ull, &cfg.events)) != CLI_OK ||
        (rc = opt_u64(&a, "users", 1, 1000000000ull, &cfg.users)) != CLI_OK ||
        (rc = opt_u64(&a, "connections", 1, MAX_CONNS, &conns)) != CLI_OK ||
        (rc = opt_u64(&a, "batch", 1, MAX_BATCH, &batch)) != CLI_OK ||
        (rc = opt_u64(&a, "seconds", 1, 3600, &secs)) != CLI_OK ||
        (rc = opt_u64(&a, "server-threads", 0, 64, &sthreads)) != CLI_OK ||
        (rc = opt_u64(&a, "fsyncs", 1, 100000, &fsyncs)) != CLI_OK ||
        (rc = opt_u64(&a, "seed", 0, UINT64_MAX, &cfg.seed)) != CLI_OK)
        return rc;
    const char *skip = cli_get(&a, "skip");
    static const char *const parts[] = {"retail", "csv", "ndjson", "http"};
    if (skip)
        for (const char *p = skip; *p;) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            int ok = 0;
            for (size_t i = 0; i < 4; i++)
                ok |= len == strlen(parts[i]) && strncmp(p, parts[i], len) == 0;
            if (!ok)
                return cli_usage_error(&intake_spec,
                                       "--skip: unknown part '%.*s' (retail, csv, "
                                       "ndjson, http)",
                                       (int)len, p);
            p += len + (e ? 1 : 0);
        }
    const char *retail_opt = cli_get(&a, "online-retail");
    int retail_off = retail_opt && strcmp(retail_opt, "off") == 0;

    imp_row_t rows[3];
    memset(rows, 0, sizeof rows);
    rows[0].name = "Online Retail (preset)";
    rows[1].name = "synthetic CSV (mapping)";
    rows[2].name = "synthetic NDJSON (Segment)";
    http_run_t h;
    memset(&h, 0, sizeof h);
    h.conns = (int)conns;
    h.batch = (int)batch;
    h.seconds = (int)secs;
    h.server_threads = (int)sthreads;
    h.auth = !cli_has(&a, "no-auth");
    json_t *out = NULL;
    reject_ctx_t rj = {0};

    char tmp[2048];
    const char *base = cli_get(&a, "dir") ? cli_get(&a, "dir") : getenv("TMPDIR");
    if (base && strlen(base) > 1900)
        return cli_usage_error(&intake_spec, "--dir / $TMPDIR: path too long");
    snprintf(tmp, sizeof tmp, "%s/crowdpack-bench-intake-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp))
        return cli_failf("cannot create a directory under %s: %s", base && *base ? base : "/tmp",
                         strerror(errno));

    if (retail_off)
        rows[0].skipped = "--online-retail off";
    else if (in_list(skip, "retail"))
        rows[0].skipped = "--skip retail";
    else if (!find_retail(retail_opt, rows[0].file, sizeof rows[0].file, &rows[0].skipped))
        rows[0].file[0] = '\0';
    cfg.cpus = sysconf(_SC_NPROCESSORS_ONLN);
    read_loadavg(cfg.load);
    if (!a.json)
        printf("crowdpack %s bench --intake — %ld CPUs, load average %.2f %.2f %.2f at start\n",
               CP_VERSION_STRING, cfg.cpus, cfg.load[0], cfg.load[1], cfg.load[2]);
    fflush(stdout);

    /* 1. Online Retail */
    if (!rows[0].skipped) {
        cp_import_options_t o = {.size = sizeof(cp_import_options_t),
                                 .format = CP_IMPORT_CSV,
                                 .preset = "online-retail",
                                 .on_reject = on_reject,
                                 .ud = &rj};
        if ((rc = floor_csv(&rows[0])) != CLI_OK)
            goto out;
        imp_row_t runs[RETAIL_RUNS];
        for (int i = 0; i < RETAIL_RUNS; i++) {
            runs[i] = rows[0];
            if ((rc = run_import(&runs[i], tmp, &o, NULL)) != CLI_OK)
                goto out;
        }
        for (int i = 1; i < RETAIL_RUNS; i++) /* by CPU */
            for (int j = i; j > 0 && runs[j].cpu < runs[j - 1].cpu; j--) {
                imp_row_t t = runs[j];
                runs[j] = runs[j - 1];
                runs[j - 1] = t;
            }
        rows[0] = runs[RETAIL_RUNS / 2];
        rows[0].nruns = RETAIL_RUNS;
        for (int i = 0; i < RETAIL_RUNS; i++)
            rows[0].cpu_runs[i] = runs[i].cpu;
    }

    /* 2. synthetic CSV and NDJSON */
    int want_csv = !in_list(skip, "csv"), want_nd = !in_list(skip, "ndjson");
    if (!want_csv)
        rows[1].skipped = "--skip csv";
    if (!want_nd)
        rows[2].skipped = "--skip ndjson";
    if (want_csv || want_nd) {
        snprintf(rows[1].file, sizeof rows[1].file, "%s/synthetic.csv", tmp);
        snprintf(rows[2].file, sizeof rows[2].file, "%s/synthetic.ndjson", tmp);
        double t0 = progress_now();
        if ((rc = gen_files(rows[1].file, rows[2].file, cfg.events, cfg.users, cfg.seed,
                            &cfg.distinct)) != CLI_OK)
            goto out;
        cfg.gen_secs = progress_now() - t0;
    }
    if (want_csv) {
        cp_import_options_t o = {.size = sizeof(cp_import_options_t),
                                 .format = CP_IMPORT_CSV,
                                 .mapping_json = synth_mapping,
                                 .mapping_len = strlen(synth_mapping),
                                 .on_reject = on_reject,
                                 .ud = &rj};
        if ((rc = floor_csv(&rows[1])) != CLI_OK ||
            (rc = run_import(&rows[1], tmp, &o, NULL)) != CLI_OK)
            goto out;
    }
    if (want_nd) {
        cp_import_options_t o = {.size = sizeof(cp_import_options_t),
                                 .format = CP_IMPORT_NDJSON,
                                 .on_reject = on_reject,
                                 .ud = &rj};
        if ((rc = floor_ndjson(&rows[2])) != CLI_OK ||
            (rc = run_import(&rows[2], tmp, &o, "{\"indexed_properties\":[\"category\"]}")) !=
                CLI_OK)
            goto out;
    }
    if (!a.json) {
        if (want_csv || want_nd)
            printf(
                "synthetic data: %llu events over %llu users (%llu distinct, zipf-ish), %d event "
                "names, category of %d values (indexed), amount, %d days; generated in %.1f s\n",
                (unsigned long long)cfg.events, (unsigned long long)cfg.users,
                (unsigned long long)cfg.distinct, NNAMES, NCATS, DAYS, cfg.gen_secs);
        print_imports(rows, 3);
        fflush(stdout);
    }
    for (int i = 1; i < 3; i++)
        if (!rows[i].skipped && (rows[i].st.events != cfg.events || rows[i].st.rejected ||
                                 rows[i].st.users_created != cfg.distinct)) {
            rc = cli_failf("bench: %s applied %llu of %llu events (%llu rejected) and created %llu "
                           "users for %llu distinct",
                           rows[i].name, (unsigned long long)rows[i].st.events,
                           (unsigned long long)cfg.events, (unsigned long long)rows[i].st.rejected,
                           (unsigned long long)rows[i].st.users_created,
                           (unsigned long long)cfg.distinct);
        }
    if (rc == CLI_OK && !rows[0].skipped && (rows[0].st.rejected || !rows[0].st.events))
        rc = cli_failf("bench: %s rejected %llu lines and applied %llu events (a broken import "
                       "is not a benchmark)",
                       rows[0].name, (unsigned long long)rows[0].st.rejected,
                       (unsigned long long)rows[0].st.events);
    if (rc != CLI_OK)
        goto out;
    /* The files are not needed by the HTTP part. */
    unlink(rows[1].file);
    unlink(rows[2].file);

    /* 3. HTTP */
    if (in_list(skip, "http")) {
        h.skipped = 1;
        h.skip_why = "--skip http";
    } else {
        if ((rc = run_http(&h, tmp, cfg.users, cfg.seed, (int)fsyncs)) != CLI_OK)
            goto out;
        if (!a.json)
            print_http(&h);
    }

    const char *jpath = cli_get(&a, "json-out");
    if (a.json || jpath) {
        out = json_pack("{s:s,s:{s:i,s:[f,f,f]},s:{s:I,s:I,s:I,s:i,s:i,s:i,s:f},s:o,s:o}",
                        "version", CP_VERSION_STRING, "machine", "cpus", (int)cfg.cpus,
                        "load_average", cfg.load[0], cfg.load[1], cfg.load[2], "synthetic",
                        "events", (json_int_t)cfg.events, "users", (json_int_t)cfg.users,
                        "distinct_users", (json_int_t)cfg.distinct, "event_names", NNAMES,
                        "categories", NCATS, "days", DAYS, "generate_seconds", cfg.gen_secs,
                        "imports", imports_json(rows, 3), "http", http_json(&h));
        char *s = out ? json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (a.json)
            puts(s ? s : "{}");
        if (jpath) {
            FILE *f = fopen(jpath, "w");
            if (!f || fprintf(f, "%s\n", s ? s : "{}") < 0 || fclose(f) != 0)
                rc = cli_failf("cannot write %s: %s", jpath, strerror(errno));
        }
        free(s);
    }
    if (rc == CLI_OK && !h.skipped && !h.verified)
        rc = cli_failf("bench: the server holds %llu events, %llu were acknowledged (%llu applied "
                       "per the answers, %llu requests without an answer)",
                       (unsigned long long)h.server_events, (unsigned long long)h.events,
                       (unsigned long long)h.applied, (unsigned long long)h.unknown);
out:
    json_decref(out);
    if (cli_has(&a, "keep"))
        fprintf(stderr, "bench: kept %s\n", tmp);
    else
        rm_tree(tmp);
    return rc;
}
