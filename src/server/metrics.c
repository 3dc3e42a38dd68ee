/* metrics.c — Prometheus text exposition of request counters, latencies and
 * database gauges. Counters are relaxed atomics: exact totals, no ordering
 * needed between them. */
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

/* Statuses the server answers with; anything else lands in "other". */
static const int status_codes[] = {200, 201, 204, 400, 401, 403, 404, 405, 408,
                                   409, 413, 414, 415, 431, 500, 503, 507, 302};
#define NSTATUS (CP_ARRAY_LEN(status_codes) + 1)

/* Upper bounds in seconds; the last bucket is +Inf. */
static const double bucket_le[SRV_NBUCKETS - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                   0.05,   0.1,   0.25,   0.5,   1.0};

/* crowdpack_bid_seconds: fine below a millisecond, where the bidder's
 * target (p99 under 1 ms) lies; the last bucket is +Inf. */
static const double bid_le[SRV_NBID_BUCKETS - 1] = {0.00005, 0.0001,  0.00015, 0.0002, 0.0003,
                                                    0.0005,  0.00075, 0.001,   0.0015, 0.0025,
                                                    0.005,   0.01,    0.1};

void srv_metrics_bid_observe(srv_metrics_t *m, uint64_t ns)
{
    double secs = (double)ns / 1e9;
    size_t b = 0;
    while (b < SRV_NBID_BUCKETS - 1 && secs > bid_le[b])
        b++;
    atomic_fetch_add_explicit(&m->bid_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bid_sum_ns, ns, memory_order_relaxed);
}

/* The bid histogram, once a bid request was handled. */
static cp_status render_bid(srv_metrics_t *m, buf_t *b)
{
    uint64_t n = 0;
    for (size_t k = 0; k < SRV_NBID_BUCKETS; k++)
        n += atomic_load_explicit(&m->bid_bucket[k], memory_order_relaxed);
    if (n == 0)
        return CP_OK;
    cp_status st = buf_printf(b, "# HELP crowdpack_bid_seconds OpenRTB bid requests: time in the "
                                 "bidder, from the parsed HTTP request to the response body.\n"
                                 "# TYPE crowdpack_bid_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t k = 0; k < SRV_NBID_BUCKETS && st == CP_OK; k++) {
        cum += atomic_load_explicit(&m->bid_bucket[k], memory_order_relaxed);
        char le[32] = "+Inf";
        if (k < SRV_NBID_BUCKETS - 1)
            fmt_double(bid_le[k], le, sizeof le);
        st = buf_printf(b, "crowdpack_bid_seconds_bucket{le=\"%s\"} %llu\n", le,
                        (unsigned long long)cum);
    }
    uint64_t ns = atomic_load_explicit(&m->bid_sum_ns, memory_order_relaxed);
    if (st == CP_OK)
        st = buf_printf(b,
                        "crowdpack_bid_seconds_sum %llu.%09llu\ncrowdpack_bid_seconds_count %llu\n",
                        (unsigned long long)(ns / 1000000000u),
                        (unsigned long long)(ns % 1000000000u), (unsigned long long)cum);
    return st;
}

static size_t status_index(int status)
{
    for (size_t i = 0; i < CP_ARRAY_LEN(status_codes); i++) {
        if (status_codes[i] == status)
            return i;
    }
    return NSTATUS - 1;
}

cp_status srv_metrics_init(srv_metrics_t *m, size_t nroutes)
{
    memset(m, 0, sizeof *m);
    m->nroutes = nroutes + 1;
    m->count = calloc(m->nroutes * NSTATUS, sizeof *m->count);
    m->bucket = calloc(m->nroutes * SRV_NBUCKETS, sizeof *m->bucket);
    m->sum_us = calloc(m->nroutes, sizeof *m->sum_us);
    m->total = calloc(m->nroutes, sizeof *m->total);
    if (m->count == NULL || m->bucket == NULL || m->sum_us == NULL || m->total == NULL) {
        srv_metrics_free(m);
        return CP_ENOMEM;
    }
    return CP_OK;
}

void srv_metrics_free(srv_metrics_t *m)
{
    free((void *)m->count);
    free((void *)m->bucket);
    free((void *)m->sum_us);
    free((void *)m->total);
    memset(m, 0, sizeof *m);
}

void srv_metrics_observe(srv_metrics_t *m, int route, int status, uint64_t ns)
{
    if (m->count == NULL)
        return;
    size_t r = route >= 0 && (size_t)route < m->nroutes - 1 ? (size_t)route : m->nroutes - 1;
    atomic_fetch_add_explicit(&m->count[r * NSTATUS + status_index(status)], 1,
                              memory_order_relaxed);
    double secs = (double)ns / 1e9;
    size_t b = 0;
    while (b < SRV_NBUCKETS - 1 && secs > bucket_le[b])
        b++;
    atomic_fetch_add_explicit(&m->bucket[r * SRV_NBUCKETS + b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->sum_us[r], ns / 1000, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->total[r], 1, memory_order_relaxed);
}

static void route_label(const srv_metrics_t *m, size_t r, const char **method, const char **pat)
{
    if (r < m->nroutes - 1 && r < srv_nroutes) {
        *method = srv_method_name(srv_routes[r].method);
        *pat = srv_routes[r].pattern;
    } else {
        *method = "ANY";
        *pat = "unmatched";
    }
}

cp_status srv_metrics_render(srv_metrics_t *m, cp_db_t *db, char **out, size_t *len)
{
    buf_t b;
    buf_init(&b, 0);
    cp_status st = CP_OK;
    *out = NULL;
    *len = 0;
#define P(...)                                                                                     \
    do {                                                                                           \
        if ((st = buf_printf(&b, __VA_ARGS__)))                                                    \
            goto out;                                                                              \
    } while (0)

    P("# HELP crowdpack_http_requests_total HTTP requests answered, by route and status.\n"
      "# TYPE crowdpack_http_requests_total counter\n");
    for (size_t r = 0; r < m->nroutes; r++) {
        const char *method, *pat;
        route_label(m, r, &method, &pat);
        for (size_t s = 0; s < NSTATUS; s++) {
            uint64_t v = atomic_load_explicit(&m->count[r * NSTATUS + s], memory_order_relaxed);
            if (v == 0)
                continue;
            if (s < NSTATUS - 1)
                P("crowdpack_http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n",
                  method, pat, status_codes[s], (unsigned long long)v);
            else
                P("crowdpack_http_requests_total{method=\"%s\",route=\"%s\",status=\"other\"} "
                  "%llu\n",
                  method, pat, (unsigned long long)v);
        }
    }

    P("# HELP crowdpack_http_request_duration_seconds Time from the first request byte "
      "to the last response byte, by route.\n"
      "# TYPE crowdpack_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r < m->nroutes; r++) {
        uint64_t total = atomic_load_explicit(&m->total[r], memory_order_relaxed);
        if (total == 0)
            continue;
        const char *method, *pat;
        route_label(m, r, &method, &pat);
        uint64_t cum = 0;
        for (size_t k = 0; k < SRV_NBUCKETS; k++) {
            cum += atomic_load_explicit(&m->bucket[r * SRV_NBUCKETS + k], memory_order_relaxed);
            if (k < SRV_NBUCKETS - 1) {
                char le[32];
                fmt_double(bucket_le[k], le, sizeof le);
                P("crowdpack_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
                  "le=\"%s\"} %llu\n",
                  method, pat, le, (unsigned long long)cum);
            } else {
                P("crowdpack_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
                  "le=\"+Inf\"} %llu\n",
                  method, pat, (unsigned long long)cum);
            }
        }
        uint64_t us = atomic_load_explicit(&m->sum_us[r], memory_order_relaxed);
        P("crowdpack_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %llu.%06llu\n",
          method, pat, (unsigned long long)(us / 1000000), (unsigned long long)(us % 1000000));
        P("crowdpack_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} %llu\n",
          method, pat, (unsigned long long)cum);
    }

    if ((st = render_bid(m, &b)))
        goto out;

    if (db != NULL) {
        cp_db_stats_t s = CP_DB_STATS_INIT;
        if (cp_db_stats(db, &s, NULL) == CP_OK) {
            static const struct {
                const char *name, *help, *type;
                size_t off;
            } g[] = {
                {"crowdpack_users", "Live users.", "gauge", offsetof(cp_db_stats_t, users)},
                {"crowdpack_ordinals", "User ordinals ever allocated.", "gauge",
                 offsetof(cp_db_stats_t, ordinals)},
                {"crowdpack_tags", "Tags in the taxonomy.", "gauge", offsetof(cp_db_stats_t, tags)},
                {"crowdpack_attributes", "Declared attributes.", "gauge",
                 offsetof(cp_db_stats_t, attributes)},
                {"crowdpack_crowds", "Crowds (audience packs).", "gauge",
                 offsetof(cp_db_stats_t, crowds)},
                {"crowdpack_bitmap_bytes", "In-memory size of all bitmaps.", "gauge",
                 offsetof(cp_db_stats_t, bitmap_bytes)},
                {"crowdpack_column_bytes", "In-memory per-user columns.", "gauge",
                 offsetof(cp_db_stats_t, column_bytes)},
                {"crowdpack_disk_bytes", "Size of the LMDB file.", "gauge",
                 offsetof(cp_db_stats_t, disk_bytes)},
                {"crowdpack_queries_total", "Counts and evaluations served since open.", "counter",
                 offsetof(cp_db_stats_t, queries)},
                {"crowdpack_writes_total", "Committed write batches since open.", "counter",
                 offsetof(cp_db_stats_t, writes)},
                {"crowdpack_compact_pending", "User deletions whose bytes await compaction.",
                 "gauge", offsetof(cp_db_stats_t, compact_pending)},
            };
            for (size_t i = 0; i < CP_ARRAY_LEN(g); i++) {
                uint64_t v;
                memcpy(&v, (const char *)&s + g[i].off, sizeof v);
                P("# HELP %s %s\n# TYPE %s %s\n%s %llu\n", g[i].name, g[i].help, g[i].name,
                  g[i].type, g[i].name, (unsigned long long)v);
            }
        }
    }
    P("# HELP crowdpack_http_connections_cut_total Connections cut by the server: "
      "reason=\"deadline\" (request not received within --request-timeout), "
      "reason=\"stall\" (a streamed response the client stopped reading).\n"
      "# TYPE crowdpack_http_connections_cut_total counter\n"
      "crowdpack_http_connections_cut_total{reason=\"deadline\"} %llu\n"
      "crowdpack_http_connections_cut_total{reason=\"stall\"} %llu\n",
      (unsigned long long)atomic_load_explicit(&m->cut_deadline, memory_order_relaxed),
      (unsigned long long)atomic_load_explicit(&m->cut_stall, memory_order_relaxed));

    if (db != NULL) {
        cp_health_t h = CP_HEALTH_INIT;
        if (cp_db_health(db, &h, NULL) == CP_OK) {
            static const char *const reasons[] = {"read_only", "storage_full", "wal_error",
                                                  "failed"};
            P("# HELP crowdpack_readable 1 when reads answer.\n# TYPE crowdpack_readable gauge\n"
              "crowdpack_readable %d\n",
              h.readable ? 1 : 0);
            P("# HELP crowdpack_writable 1 when a write would be accepted now.\n"
              "# TYPE crowdpack_writable gauge\ncrowdpack_writable %d\n",
              h.writable ? 1 : 0);
            P("# HELP crowdpack_unavailable 1 for the reason writes are refused (see /healthz).\n"
              "# TYPE crowdpack_unavailable gauge\n");
            for (size_t i = 0; i < CP_ARRAY_LEN(reasons); i++)
                P("crowdpack_unavailable{reason=\"%s\"} %d\n", reasons[i],
                  strcmp(h.reason, reasons[i]) == 0 ? 1 : 0);
            P("# HELP crowdpack_wal_bytes Bytes of write-ahead log segments on disk.\n"
              "# TYPE crowdpack_wal_bytes gauge\ncrowdpack_wal_bytes %llu\n",
              (unsigned long long)h.wal_bytes);
            P("# HELP crowdpack_wal_records Records applied but not yet checkpointed.\n"
              "# TYPE crowdpack_wal_records gauge\ncrowdpack_wal_records %llu\n",
              (unsigned long long)h.wal_records);
            if (h.checkpoint_age_ms >= 0)
                P("# HELP crowdpack_checkpoint_age_seconds Time since the last checkpoint.\n"
                  "# TYPE crowdpack_checkpoint_age_seconds gauge\n"
                  "crowdpack_checkpoint_age_seconds %lld.%03lld\n",
                  (long long)(h.checkpoint_age_ms / 1000), (long long)(h.checkpoint_age_ms % 1000));
            P("# HELP crowdpack_disk_free_bytes Free space for the data directory.\n"
              "# TYPE crowdpack_disk_free_bytes gauge\ncrowdpack_disk_free_bytes %llu\n",
              (unsigned long long)h.disk_free_bytes);
            P("# HELP crowdpack_disk_used_bytes Allocated bytes of data.mdb and the WAL.\n"
              "# TYPE crowdpack_disk_used_bytes gauge\ncrowdpack_disk_used_bytes %llu\n",
              (unsigned long long)h.disk_used_bytes);
        }
    }
#undef P
    buf_cstr(&b);
    *out = b.data;
    *len = b.len;
    b.data = NULL;
out:
    buf_free(&b);
    return st;
}
