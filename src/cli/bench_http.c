/*
 * bench_http.c — the HTTP part of `crowdpack bench --intake`: the server
 * on a thread of this process, C load threads each keeping one HTTP/1.1
 * keep-alive connection and posting /v1/batch bodies of generated events
 * (bench_gen.c), the disk's fdatasync floor, and the check that the server
 * holds exactly the acknowledged events.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/bench_intake_int.h"
#include "cli/cli.h"
#include "cli/progress.h"
#include "server/server.h"
#include "util/util.h"

#define RESP_CAP (4u << 20)        /* largest answer read (GET /v1/events) */
#define LAT_MAX (4u * 1000 * 1000) /* latency samples kept per worker (~1 h at 1k req/s) */

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

static double pct(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)((double)n * p + 0.999999);
    i = i == 0 ? 0 : i - 1;
    return sorted[i >= n ? n - 1 : i];
}

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
    double c0 = bench_cpu_secs(RUSAGE_THREAD);
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
            bench_gen_next(&rng, w->users, &e);
            if (i)
                st = buf_append(&body, ",", 1);
            if (st == CP_OK)
                st = bench_gen_segment(&body, &e, prefix, ++seq);
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
    w->cpu = bench_cpu_secs(RUSAGE_THREAD) - c0;
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
    qsort(t, (size_t)k, sizeof *t, cli_cmp_double);
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
int bench_http_run(http_run_t *h, const char *tmp, uint64_t users, uint64_t seed, int fsyncs)
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
    double t0 = progress_now(), c0 = bench_cpu_secs(RUSAGE_SELF),
           wc0 = thread_cpu_secs("cp-intake");
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
    h->process_cpu = bench_cpu_secs(RUSAGE_SELF) - c0;
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
    qsort(all, nl, sizeof *all, cli_cmp_double);
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
    bench_rm_tree(dir);
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
