/*
 * intake_load.c — load generator for crowdpack's Segment intake: C
 * connections (threads, HTTP/1.1 keep-alive over loopback) each POST
 * /v1/batch requests of B track events as fast as they are acknowledged,
 * for S seconds. Every 200 means the events are durable (fsync before ack),
 * so the rate measured is durable events per second. Reports events/s and
 * the p50/p99/max acknowledgement latency.
 *
 *   cc -O2 -pthread -o intake_load bench/intake_load.c -lm
 *   crowdpack serve --data D --listen 127.0.0.1:8080 &
 *   ./intake_load -p 8080 -c 8 -b 100 -s 10 [-k WRITE_KEY] [-u USERS]
 *
 * Standalone (libc only) so it loads the server from outside, like an SDK.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port = 8080, conns = 8, batch = 100, seconds = 10, users = 100000;
static const char *auth = NULL; /* "Basic ..." header value */
static volatile int stop_flag;

typedef struct worker {
    int id;
    uint64_t requests, events, errors;
    double *lat; /* ms */
    size_t nlat, caplat;
} worker_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int connect_one(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Reads one HTTP response; returns the status or -1. */
static int read_response(int fd, char *buf, size_t cap)
{
    size_t have = 0;
    long clen = -1;
    char *body = NULL;
    for (;;) {
        ssize_t n = read(fd, buf + have, cap - have - 1);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = '\0';
        if (body == NULL && (body = strstr(buf, "\r\n\r\n")) != NULL) {
            body += 4;
            char *cl = strcasestr(buf, "Content-Length:");
            clen = cl ? strtol(cl + 15, NULL, 10) : 0;
        }
        if (body && (long)(have - (size_t)(body - buf)) >= clen)
            break;
        if (have + 1 >= cap)
            return -1;
    }
    return atoi(buf + 9);
}

static void *run(void *arg)
{
    worker_t *w = arg;
    size_t cap = (size_t)batch * 256 + 1024;
    char *body = malloc(cap), *req = malloc(cap + 1024), resp[65536];
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(w->id + 1), seq = 0;
    int fd = connect_one();
    while (!stop_flag && fd >= 0) {
        size_t len = (size_t)snprintf(body, cap, "{\"batch\":[");
        for (int i = 0; i < batch; i++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            len += (size_t)snprintf(body + len, cap - len,
                                    "%s{\"type\":\"track\",\"userId\":\"u%llu\",\"event\":"
                                    "\"view\",\"messageId\":\"w%d-%llu\",\"properties\":"
                                    "{\"category\":\"c%llu\"},\"timestamp\":"
                                    "\"2024-06-01T12:00:00Z\"}",
                                    i ? "," : "", (unsigned long long)(seed % (uint64_t)users),
                                    w->id, (unsigned long long)seq++,
                                    (unsigned long long)(seed % 20));
        }
        len += (size_t)snprintf(body + len, cap - len, "]}");
        size_t rl = (size_t)snprintf(req, cap + 1024,
                                     "POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     "Content-Type: application/json\r\n%s%s%s"
                                     "Content-Length: %zu\r\n\r\n",
                                     auth ? "Authorization: " : "", auth ? auth : "",
                                     auth ? "\r\n" : "", len);
        memcpy(req + rl, body, len);
        double t0 = now_s();
        if (write(fd, req, rl + len) != (ssize_t)(rl + len)) {
            w->errors++;
            break;
        }
        int st = read_response(fd, resp, sizeof resp);
        double ms = (now_s() - t0) * 1000;
        if (st != 200) {
            w->errors++;
            if (st < 0) {
                close(fd);
                fd = connect_one();
            }
            continue;
        }
        w->requests++;
        w->events += (uint64_t)batch;
        if (w->nlat == w->caplat) {
            w->caplat = w->caplat ? w->caplat * 2 : 4096;
            w->lat = realloc(w->lat, w->caplat * sizeof *w->lat);
        }
        w->lat[w->nlat++] = ms;
    }
    if (fd >= 0)
        close(fd);
    free(body);
    free(req);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char *basic_of(const char *key)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(key) + 1;
    unsigned char *in = malloc(n + 3);
    memcpy(in, key, n - 1);
    in[n - 1] = ':';
    char *out = malloc(6 + 4 * ((n + 2) / 3) + 1);
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

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "p:c:b:s:k:u:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 's': seconds = atoi(optarg); break;
        case 'k': auth = basic_of(optarg); break;
        case 'u': users = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-p PORT] [-c CONNS] [-b EVENTS_PER_BATCH] [-s SECONDS] "
                            "[-k WRITE_KEY] [-u USERS]\n", argv[0]);
            return 2;
        }
    }
    worker_t *w = calloc((size_t)conns, sizeof *w);
    pthread_t *th = calloc((size_t)conns, sizeof *th);
    double t0 = now_s();
    for (int i = 0; i < conns; i++) {
        w[i].id = i;
        pthread_create(&th[i], NULL, run, &w[i]);
    }
    sleep((unsigned)seconds);
    stop_flag = 1;
    for (int i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    double el = now_s() - t0;
    uint64_t req = 0, ev = 0, errs = 0;
    size_t nl = 0;
    for (int i = 0; i < conns; i++) {
        req += w[i].requests;
        ev += w[i].events;
        errs += w[i].errors;
        nl += w[i].nlat;
    }
    double *all = malloc((nl ? nl : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < conns; i++)
        for (size_t j = 0; j < w[i].nlat; j++)
            all[k++] = w[i].lat[j];
    qsort(all, nl, sizeof *all, cmp);
    printf("connections %d, batch %d events, %.1f s\n", conns, batch, el);
    printf("acknowledged %llu requests, %llu events (%.0f events/s, %.0f requests/s), %llu "
           "errors\n",
           (unsigned long long)req, (unsigned long long)ev, ev / el, req / el,
           (unsigned long long)errs);
    if (nl)
        printf("ack latency ms: p50 %.2f  p99 %.2f  max %.2f\n", all[nl / 2],
               all[(size_t)(nl * 0.99)], all[nl - 1]);
    return errs && !req ? 1 : 0;
}
