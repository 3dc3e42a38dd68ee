/*
 * server.c — server_run: the libmicrohttpd daemon around srv_dispatch.
 *
 * We bind the listening socket ourselves (so a busy port is a clear error
 * and port 0 can be reported), hand it to MHD, and run MHD's internal
 * epoll thread pool. Request bodies are accumulated per connection up to
 * max_body; past it the body is discarded as it arrives and the answer is
 * 413. The calling thread waits on a self-pipe that SIGINT/SIGTERM write to.
 *
 * Slow clients. MHD's own timeout is an idle timeout: a client sending one
 * byte every few seconds never trips it, and each such connection holds a
 * slot. So every connection is tracked from accept (NOTIFY_CONNECTION) and
 * the calling thread, once a second, cuts (shutdown(2), which MHD sees as a
 * hang-up) a connection whose request has not fully arrived within the
 * request deadline, and a streaming response whose reader has not been
 * asked for bytes within the stall limit (the socket took nothing), so the
 * snapshot the export holds is released. A per-IP limit keeps one address
 * from taking every slot.
 */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/sched.h" /* scheduled RFM (sched.c) */
#include "server/server.h"
#include "server/srv.h"

#define SRV_CONN_LIMIT 4096u   /* lowered to what RLIMIT_NOFILE allows */
#define SRV_CONN_PER_IP 128u   /* default per-address connection limit */
#define SRV_CONN_TIMEOUT_S 60u /* MHD's idle timeout */
#define SRV_REQUEST_TIMEOUT_S 30u
#define SRV_STALL_TIMEOUT_S 30u
#define SRV_REAP_INTERVAL_MS 500
#define SRV_CONN_MEMORY (64u * 1024u) /* request line + headers must fit */
#define SRV_TLS_FILE_MAX (1u << 20)
#define SRV_MAX_THREADS 64

/* What a tracked connection is doing, as far as the deadlines go. */
enum {
    TRACK_REQUEST = 0, /* reading a request (headers or body), or idle between requests */
    TRACK_HANDLING,    /* the request has arrived: handler or a buffered response */
    TRACK_STREAMING,   /* sending a streamed response (an export) */
};

/* One per TCP connection, from accept to close. The list and the records'
 * lifetime are guarded by conns_t.mu; phase and clocks are atomics written
 * by the connection's MHD thread and read by the reaper. */
typedef struct track {
    struct track *prev, *next;
    int fd;
    _Atomic int phase;
    _Atomic uint64_t start_ns;    /* start of the current request (or of the idle wait) */
    _Atomic uint64_t progress_ns; /* streaming: the reader was last asked for bytes */
    int cut;                      /* the reaper shut it down (guarded by mu) */
    int outq;                     /* reaper's last reading of the unacknowledged bytes */
} track_t;

typedef struct conns {
    pthread_mutex_t mu;
    track_t *head;
    uint64_t deadline_ns;   /* whole request: headers and body */
    uint64_t stall_ns;      /* streaming response without progress */
    srv_metrics_t *metrics; /* counts the cuts */
} conns_t;

/* Per-request state kept by MHD between access handler calls. */
typedef struct conn_ctx {
    buf_t body;
    int too_large;
    int oom;
    int replied; /* a response is queued: never queue a second one */
    int route;
    int status;
    uint64_t start_ns;
    track_t *track; /* borrowed: the connection's record (NULL if untracked) */
} conn_ctx_t;

/* The daemon's context: the dispatch context plus the connection table. */
typedef struct daemon_ctx {
    srv_ctx_t srv;
    conns_t conns;
} daemon_ctx_t;

/* A streamed response with the connection's progress clock. */
typedef struct stream_ctx {
    srv_stream_t *stream;
    track_t *track; /* borrowed; outlives the response (freed at close) */
} stream_ctx_t;

/* ------------------------------------------------------------ signals */

/* A signal handler can only reach a global; one server per process is
 * the daemon's case, so one pipe. */
static volatile int g_stop_fd = -1;

static void on_stop_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (g_stop_fd >= 0) {
        ssize_t w = write(g_stop_fd, &b, 1);
        CP_UNUSED(w);
    }
    errno = saved;
}

/* --------------------------------------------------------------- MHD glue */

static size_t unescape_noop(void *cls, struct MHD_Connection *c, char *s)
{
    CP_UNUSED(cls);
    CP_UNUSED(c);
    /* Paths are decoded per segment by the router (a user id may contain
     * "%2F"), query values by srv_query. */
    return strlen(s);
}

static const char *query_lookup(void *ud, const char *key)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)ud, MHD_GET_ARGUMENT_KIND, key);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    CP_UNUSED(pos);
    stream_ctx_t *sc = cls;
    if (sc->track != NULL)
        atomic_store(&sc->track->progress_ns, time_mono_ns());
    ssize_t n = srv_stream_read(sc->stream, buf, max);
    if (n == -1)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void stream_free_cb(void *cls)
{
    stream_ctx_t *sc = cls;
    srv_stream_free(sc->stream);
    free(sc);
}
static void free_noop(void *p)
{
    CP_UNUSED(p);
}

/* Hands the response to MHD; takes the body or stream out of r. At most
 * one response per request: a second MHD_queue_response would be refused
 * and, worse, some paths used to write a second status line. */
static enum MHD_Result queue(struct MHD_Connection *c, conn_ctx_t *cc, srv_resp_t *r,
                             int close_after)
{
    if (cc->replied)
        return MHD_YES;
    struct MHD_Response *mr;
    if (r->stream != NULL) {
        stream_ctx_t *sc = calloc(1, sizeof *sc);
        if (sc == NULL)
            return MHD_NO;
        sc->stream = r->stream;
        sc->track = cc->track;
        mr = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_reader, sc,
                                               stream_free_cb);
        if (mr == NULL) {
            free(sc);
        } else {
            r->stream = NULL;
            if (cc->track != NULL) {
                atomic_store(&cc->track->progress_ns, time_mono_ns());
                atomic_store(&cc->track->phase, TRACK_STREAMING);
            }
        }
    } else {
        mr = MHD_create_response_from_buffer_with_free_callback(
            r->len, r->body, r->body_free != NULL ? r->body_free : free_noop);
        if (mr != NULL)
            r->body = NULL;
    }
    if (mr == NULL)
        return MHD_NO;
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (r->allow != NULL)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->disposition != NULL)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_DISPOSITION, r->disposition);
    if (r->location != NULL)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_LOCATION, r->location);
    if (r->www_authenticate)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"crowdpack\"");
    if (r->cors_origin != NULL) {
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, r->cors_origin);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_VARY, "Origin");
        if (r->cors_preflight) {
            MHD_add_response_header(mr, "Access-Control-Allow-Methods",
                                    "GET, HEAD, POST, PUT, PATCH, DELETE");
            MHD_add_response_header(mr, "Access-Control-Allow-Headers",
                                    "Authorization, Content-Type, Content-Encoding");
            MHD_add_response_header(mr, "Access-Control-Max-Age", "600");
        }
    }
    if (close_after)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    if (ret == MHD_YES)
        cc->replied = 1;
    return ret;
}

static enum MHD_Result reply_too_large(struct MHD_Connection *c, srv_ctx_t *srv, conn_ctx_t *cc)
{
    srv_resp_t r;
    srv_resp_init(&r);
    srv_reply_error(&r, 413, "body_too_large",
                    json_pack("{s:I}", "limit", (json_int_t)srv->max_body),
                    "request body: larger than the limit of %zu bytes", srv->max_body);
    cc->status = r.status;
    enum MHD_Result ret = queue(c, cc, &r, 1);
    srv_resp_free(&r);
    return ret;
}

static enum MHD_Result reply_timeout(struct MHD_Connection *c, daemon_ctx_t *dc, conn_ctx_t *cc)
{
    srv_resp_t r;
    srv_resp_init(&r);
    srv_reply_error(
        &r, 408, "request_timeout",
        json_pack("{s:I}", "limit_seconds", (json_int_t)(dc->conns.deadline_ns / 1000000000u)),
        "request: headers and body did not arrive within %llu s",
        (unsigned long long)(dc->conns.deadline_ns / 1000000000u));
    cc->status = r.status;
    cc->too_large = 1; /* drop whatever else arrives */
    enum MHD_Result ret = queue(c, cc, &r, 1);
    srv_resp_free(&r);
    return ret;
}

/* ------------------------------------------------------ connection table */

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    conns_t *cs = &((daemon_ctx_t *)cls)->conns;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        track_t *t = calloc(1, sizeof *t);
        if (t == NULL || ci == NULL) {
            free(t); /* untracked: only MHD's idle timeout applies */
            *socket_context = NULL;
            return;
        }
        t->fd = ci->connect_fd;
        atomic_store(&t->start_ns, time_mono_ns());
        pthread_mutex_lock(&cs->mu);
        t->next = cs->head;
        if (cs->head != NULL)
            cs->head->prev = t;
        cs->head = t;
        pthread_mutex_unlock(&cs->mu);
        *socket_context = t;
        return;
    }
    track_t *t = *socket_context;
    if (t == NULL)
        return;
    /* MHD notifies CLOSED before it closes the socket, so while the reaper
     * holds mu the fd it shuts down is still this connection's. */
    pthread_mutex_lock(&cs->mu);
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        cs->head = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    pthread_mutex_unlock(&cs->mu);
    free(t);
    *socket_context = NULL;
}

/*
 * Whether the client took bytes since the last look. The reader being
 * asked for more is one sign (stream_reader), but the kernel's send buffer
 * can hold megabytes, the whole rest of a small export: so the bytes still
 * unacknowledged in the socket's queue (TIOCOUTQ) going down count too.
 */
static int stream_moved(track_t *t, uint64_t now)
{
    int q = 0;
    if (ioctl(t->fd, TIOCOUTQ, &q) != 0)
        return 0;
    int moved = q < t->outq || q == 0;
    t->outq = q;
    if (moved)
        atomic_store(&t->progress_ns, now);
    return moved;
}

/* Cuts connections past the request deadline or the streaming stall
 * limit. Runs on the calling thread between signal checks. */
static void reap_connections(conns_t *cs)
{
    uint64_t now = time_mono_ns();
    pthread_mutex_lock(&cs->mu);
    for (track_t *t = cs->head; t != NULL; t = t->next) {
        if (t->cut)
            continue;
        int phase = atomic_load(&t->phase);
        if (phase == TRACK_REQUEST && cs->deadline_ns != 0 &&
            now - atomic_load(&t->start_ns) > cs->deadline_ns) {
            atomic_fetch_add(&cs->metrics->cut_deadline, 1);
        } else if (phase == TRACK_STREAMING && cs->stall_ns != 0 && !stream_moved(t, now) &&
                   now - atomic_load(&t->progress_ns) > cs->stall_ns) {
            atomic_fetch_add(&cs->metrics->cut_stall, 1);
        } else {
            continue;
        }
        t->cut = 1;
        shutdown(t->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&cs->mu);
}

/* The request's line and headers (borrowed from MHD for the request). */
static void fill_request(srv_req_t *req, struct MHD_Connection *c, const char *url,
                         const char *method)
{
    req->method = srv_method_parse(method);
    req->method_name = method;
    req->host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    req->path = url;
    req->content_type =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    req->authorization =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    req->origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ORIGIN);
    req->content_encoding =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    req->query = query_lookup;
    req->query_ud = c;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    req->client_loopback = ci != NULL && srv_sockaddr_is_loopback(ci->client_addr);
}

/*
 * A client that sends "Expect: 100-continue" waits for our go-ahead before
 * sending the body; MHD gives it ("100 Continue") as soon as this first
 * call returns without a response, so a request refused later carried two
 * status lines, "100 Continue" and the error. For such clients the checks
 * that need only the headers run now, and a refusal is the final answer,
 * as RFC 9110 15.2.1 intends: the body is never sent. Clients that send the
 * body at once are answered after it is read (and dropped), because closing
 * on a client still sending makes it see a reset instead of the answer.
 */
static enum MHD_Result precheck(struct MHD_Connection *c, srv_ctx_t *srv, conn_ctx_t *cc,
                                const char *url, const char *method)
{
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    if (expect == NULL || strcasestr(expect, "100-continue") == NULL)
        return MHD_YES;
    srv_req_t req;
    srv_resp_t resp;
    srv_req_init(&req);
    srv_resp_init(&resp);
    fill_request(&req, c, url, method);
    enum MHD_Result ret = MHD_YES;
    unsigned long long declared = cl != NULL ? strtoull(cl, NULL, 10) : 0;
    if (!srv_dispatch_head(srv, &req, &resp) ||
        (req.content_encoding == NULL &&
         srv_intake_declared_too_large(req.route, (size_t)declared, &resp))) {
        cc->route = req.route;
        cc->status = resp.status;
        cc->too_large = 1; /* drop the body if MHD still reads it */
        ret = queue(c, cc, &resp, 1);
    }
    srv_resp_free(&resp);
    srv_req_free(&req);
    return ret;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    CP_UNUSED(version);
    daemon_ctx_t *dc = cls;
    srv_ctx_t *srv = &dc->srv;
    conn_ctx_t *cc = *con_cls;
    if (cc == NULL) {
        cc = calloc(1, sizeof *cc);
        if (cc == NULL)
            return MHD_NO;
        cc->route = -1;
        cc->start_ns = time_mono_ns();
        const union MHD_ConnectionInfo *si =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        cc->track = si != NULL ? (track_t *)si->socket_context : NULL;
        buf_init(&cc->body, srv->max_body);
        *con_cls = cc;
        /* Refuse a declared oversized body before reading a byte of it. */
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL) {
            char *end = NULL;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno == ERANGE || n > srv->max_body) {
                cc->too_large = 1;
                return reply_too_large(c, srv, cc);
            }
        }
        return precheck(c, srv, cc, url, method);
    }
    if (*upload_data_size != 0) {
        if (!cc->replied && cc->track != NULL && dc->conns.deadline_ns != 0 &&
            time_mono_ns() - atomic_load(&cc->track->start_ns) > dc->conns.deadline_ns) {
            *upload_data_size = 0;
            return reply_timeout(c, dc, cc);
        }
        if (!cc->too_large && !cc->oom) {
            cp_status st = buf_append(&cc->body, upload_data, *upload_data_size);
            if (st != CP_OK) {
                /* Keep reading (and dropping) the rest, then answer once. */
                cc->too_large = st == CP_ELIMIT;
                cc->oom = st != CP_ELIMIT;
                buf_free(&cc->body);
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (cc->replied)
        return MHD_YES; /* answered early (413, 408); the rest was dropped */
    if (cc->too_large)
        return reply_too_large(c, srv, cc);
    if (cc->track != NULL)
        atomic_store(&cc->track->phase, TRACK_HANDLING);

    srv_req_t req;
    srv_resp_t resp;
    srv_req_init(&req);
    srv_resp_init(&resp);
    if (cc->oom) {
        srv_reply_error(&resp, 500, "out_of_memory", NULL,
                        "request body: out of memory while reading it");
    } else {
        fill_request(&req, c, url, method);
        req.body = buf_cstr(&cc->body);
        req.body_len = cc->body.len;
        srv_dispatch(srv, &req, &resp);
    }
    cc->route = req.route;
    cc->status = resp.status;
    enum MHD_Result ret = queue(c, cc, &resp, 0);
    srv_resp_free(&resp);
    srv_req_free(&req);
    /* The body is no longer needed while the response is sent. */
    buf_free(&cc->body);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    CP_UNUSED(c);
    CP_UNUSED(toe);
    srv_ctx_t *srv = &((daemon_ctx_t *)cls)->srv;
    conn_ctx_t *cc = *con_cls;
    if (cc == NULL)
        return;
    if (cc->track != NULL) {
        /* The next request on this keep-alive connection starts its clock
         * now: idle time counts toward its deadline. */
        atomic_store(&cc->track->start_ns, time_mono_ns());
        atomic_store(&cc->track->phase, TRACK_REQUEST);
    }
    if (cc->status != 0)
        srv_metrics_observe(&srv->metrics, cc->route, cc->status, time_mono_ns() - cc->start_ns);
    buf_free(&cc->body);
    free(cc);
    *con_cls = NULL;
}

/* ----------------------------------------------------------------- setup */

static cp_status read_small_file(const char *path, const char *what, char **out, cp_error_t *err)
{
    *out = NULL;
    cp_status st = CP_OK;
    buf_t b;
    buf_init(&b, SRV_TLS_FILE_MAX);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return CP_ERR(err, CP_EIO, "cannot open %s \"%s\": %s", what, path, strerror(errno));
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if ((st = buf_append(&b, chunk, n)) != CP_OK) {
            st = CP_ERR(err, st, "%s \"%s\" is larger than %u bytes", what, path, SRV_TLS_FILE_MAX);
            goto out;
        }
    }
    if (ferror(f)) {
        st = CP_ERR(err, CP_EIO, "cannot read %s \"%s\": %s", what, path, strerror(errno));
        goto out;
    }
    buf_cstr(&b);
    *out = b.data;
    b.data = NULL;
out:
    fclose(f);
    buf_free(&b);
    return st;
}

static cp_status bind_socket(const srv_addr_t *addr, const char *spec, int *fd_out,
                             uint16_t *port_out, cp_error_t *err)
{
    *fd_out = -1;
    int fd = socket(addr->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return CP_ERR(err, CP_EIO, "cannot create a socket for %s: %s", spec, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr->family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0) {
        int e = errno;
        close(fd);
        return CP_ERR(err, CP_EIO, "cannot listen on %s: %s", spec, strerror(e));
    }
    if (listen(fd, 511) != 0) {
        int e = errno;
        close(fd);
        return CP_ERR(err, CP_EIO, "cannot listen on %s: %s", spec, strerror(e));
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    uint16_t port = addr->port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    *fd_out = fd;
    *port_out = port;
    return CP_OK;
}

/* Writes the port atomically (temp file + rename) so that a test polling
 * for the file never reads it half-written. */
static cp_status write_port_file(const char *path, uint16_t port, cp_error_t *err)
{
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (tmp == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory writing the port file");
    snprintf(tmp, n, "%s.tmp", path);
    cp_status st = CP_OK;
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        st = CP_ERR(err, CP_EIO, "cannot write port file \"%s\": %s", tmp, strerror(errno));
        goto out;
    }
    int bad = fprintf(f, "%u\n", (unsigned)port) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        st = CP_ERR(err, CP_EIO, "cannot write port file \"%s\": %s", path, strerror(errno));
        unlink(tmp);
    }
out:
    free(tmp);
    return st;
}

/* The connection limit, lowered to what the file descriptor limit allows
 * (raising the soft limit to the hard one first): a limit MHD cannot reach
 * would make accept fail with EMFILE instead of a clean refusal. */
static unsigned conn_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    /* Room for LMDB, the WAL, the listening socket, epoll fds and pipes. */
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > SRV_CONN_LIMIT + 128)
        return SRV_CONN_LIMIT;
    return rl.rlim_cur > 256 ? (unsigned)(rl.rlim_cur - 128) : 128;
}

/* Default: 4 threads per CPU, at least 8. Event handlers block until
 * their WAL record is fsynced; with one thread per CPU only two requests
 * could share a group commit on this 2-core machine (docs/intake.md). */
static unsigned pool_size(int requested)
{
    long n = requested;
    if (n <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? 4 * cpus : 8;
        if (n < 8)
            n = 8;
    }
    if (n < 1)
        n = 1;
    if (n > SRV_MAX_THREADS)
        n = SRV_MAX_THREADS;
    return (unsigned)n;
}

cp_status server_run(cp_db_t *db, const server_options_t *opts, cp_error_t *err)
{
    server_options_t o;
    memset(&o, 0, sizeof o);
    if (opts != NULL)
        o = *opts;
    const char *spec = o.listen != NULL && o.listen[0] != '\0' ? o.listen : "127.0.0.1:8080";
    daemon_ctx_t dc;
    memset(&dc, 0, sizeof dc);
    srv_ctx_t *srv = &dc.srv;
    pthread_mutex_init(&dc.conns.mu, NULL);
    srv_addr_t addr;
    char *cert = NULL, *key = NULL;
    int lfd = -1;
    int pipefd[2] = {-1, -1};
    struct sigaction old_int, old_term, old_pipe;
    int signals_set = 0;
    struct MHD_Daemon *d = NULL;
    uint16_t port = 0;
    cp_status st;
    srv_sched_t sched = {0}; /* scheduled analytics jobs (sched.c) */

    if (db == NULL)
        return CP_ERR(err, CP_EINVAL, "server_run: no database handle");
    if ((st = srv_listen_parse(spec, &addr, err)) != CP_OK)
        return st;
    uint64_t nkeys = 0;
    if ((st = cp_key_count(db, &nkeys, err)) != CP_OK)
        return st;
    if (nkeys == 0 && !srv_sockaddr_is_loopback((const struct sockaddr *)&addr.ss))
        return CP_ERR(err, CP_EPERM,
                      "refusing to listen on %s without an API key: anyone who reaches it "
                      "could read and change every audience. Create a key first with "
                      "`crowdpack keys create --data DIR --role admin` (then send it as "
                      "\"Authorization: Bearer KEY\"), or listen on 127.0.0.1",
                      spec);
    if ((o.tls_cert != NULL) != (o.tls_key != NULL))
        return CP_ERR(err, CP_EINVAL, "HTTPS needs both a certificate and a key (got only the %s)",
                      o.tls_cert != NULL ? "certificate" : "key");
    int tls = o.tls_cert != NULL;
    if (tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return CP_ERR(err, CP_EINVAL, "this build of libmicrohttpd has no TLS support");
    if (tls) {
        if ((st = read_small_file(o.tls_cert, "TLS certificate", &cert, err)) != CP_OK)
            goto out;
        if ((st = read_small_file(o.tls_key, "TLS key", &key, err)) != CP_OK)
            goto out;
    }
    for (size_t i = 0; i < o.nallow_origins; i++) {
        if ((st = srv_origin_parse_check(o.allow_origins[i], err)) != CP_OK)
            goto out;
    }
    srv->db = db;
    srv->max_body = o.max_body != 0 ? o.max_body : SRV_DEFAULT_MAX_BODY;
    srv->allow_origins = o.allow_origins;
    srv->nallow_origins = o.nallow_origins;
    srv->act = o.act;
    dc.conns.deadline_ns =
        (uint64_t)(o.request_timeout_s != 0 ? o.request_timeout_s : SRV_REQUEST_TIMEOUT_S) *
        1000000000u;
    dc.conns.stall_ns =
        (uint64_t)(o.stall_timeout_s != 0 ? o.stall_timeout_s : SRV_STALL_TIMEOUT_S) * 1000000000u;
    dc.conns.metrics = &srv->metrics;
    if ((st = srv_metrics_init(&srv->metrics, srv_nroutes)) != CP_OK) {
        st = CP_ERR(err, st, "out of memory starting the server");
        goto out;
    }
    if ((st = bind_socket(&addr, spec, &lfd, &port, err)) != CP_OK)
        goto out;

    if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) {
        st = CP_ERR(err, CP_EIO, "cannot create the signal pipe: %s", strerror(errno));
        goto out;
    }
    g_stop_fd = pipefd[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old_pipe); /* a client hanging up is not our death */
    signals_set = 1;

    unsigned threads = pool_size(o.threads);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_POLL;
    if (addr.family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (tls)
        flags |= MHD_USE_TLS;
    if (getenv("CROWDPACK_HTTP_DEBUG") != NULL)
        flags |= MHD_USE_ERROR_LOG;
    struct MHD_OptionItem ops[16];
    size_t k = 0;
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, lfd, NULL};
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, conn_limit(), NULL};
    ops[k++] = (struct MHD_OptionItem){
        MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        o.max_conns_per_ip != 0 ? o.max_conns_per_ip : SRV_CONN_PER_IP, NULL};
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, &dc};
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, SRV_CONN_TIMEOUT_S, NULL};
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, SRV_CONN_MEMORY, NULL};
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, &dc};
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)unescape_noop, NULL};
    if (threads > 1)
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
    if (tls) {
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, cert};
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, key};
    }
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, &dc, MHD_OPTION_ARRAY, ops,
                         MHD_OPTION_END);
    if (d == NULL) {
        st = CP_ERR(err, CP_EIO,
                    "cannot start the HTTP server on %s%s (set CROWDPACK_HTTP_DEBUG=1 for "
                    "libmicrohttpd's reason)",
                    spec, tls ? " with TLS: check the certificate and key" : "");
        goto out;
    }
    lfd = -1; /* MHD owns and closes it */
    srv_sched_start(&sched, db);

    if (o.port_file != NULL && (st = write_port_file(o.port_file, port, err)) != CP_OK)
        goto out;
    if (addr.family == AF_INET6)
        fprintf(stderr, "listening on %s://[%s]:%u\n", tls ? "https" : "http", addr.host,
                (unsigned)port);
    else
        fprintf(stderr, "listening on %s://%s:%u\n", tls ? "https" : "http", addr.host,
                (unsigned)port);
    fflush(stderr);

    for (;;) {
        unsigned char b;
        fd_set rfds;
        FD_ZERO(&rfds);
        FD_SET(pipefd[0], &rfds);
        struct timeval tv = {0, SRV_REAP_INTERVAL_MS * 1000};
        int rc = select(pipefd[0] + 1, &rfds, NULL, NULL, &tv);
        reap_connections(&dc.conns);
        if (rc > 0 && read(pipefd[0], &b, 1) == 1) {
            fprintf(stderr, "%s received, shutting down\n", b == SIGINT ? "SIGINT" : "SIGTERM");
            break;
        }
        if (rc < 0 && errno != EINTR) {
            st = CP_ERR(err, CP_EIO, "waiting for signals: %s", strerror(errno));
            goto out;
        }
    }
    st = CP_OK;
out:
    srv_sched_stop(&sched);
    if (d != NULL)
        MHD_stop_daemon(d); /* waits for the worker threads; closes connections */
    if (lfd >= 0)
        close(lfd);
    if (signals_set) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGPIPE, &old_pipe, NULL);
    }
    g_stop_fd = -1;
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    srv_metrics_free(&srv->metrics);
    pthread_mutex_destroy(&dc.conns.mu);
    if (key != NULL) {
        memset(key, 0, strlen(key)); /* private key material */
        free(key);
    }
    free(cert);
    return st;
}
