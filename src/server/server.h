/*
 * server.h — the HTTP/JSON API (libmicrohttpd + jansson) over a cp_db_t.
 * Layering: uses only the public API (include/crowdpack.h) and util/.
 */
#ifndef CP_SERVER_H
#define CP_SERVER_H

#include <stddef.h>

#include "crowdpack.h"

typedef struct server_options {
    const char *listen;   /* "HOST:PORT"; NULL = "127.0.0.1:8080"; port 0 = any free port */
    size_t max_body;      /* bytes; 0 = 16 MiB */
    int threads;          /* HTTP worker threads; 0 = 4 per CPU, at least 8 */
    const char *tls_cert; /* PEM paths for HTTPS; both NULL = plain HTTP */
    const char *tls_key;
    const char *port_file; /* if set, the bound port is written here once listening */
    /* Origins ("https://app.example.com") whose web pages may call the API:
     * they get CORS answers and may send state-changing requests. Borrowed
     * for the server's life; NULL/0 = none. */
    const char *const *allow_origins;
    size_t nallow_origins;
    unsigned request_timeout_s; /* whole request (headers + body); 0 = 30 s */
    unsigned stall_timeout_s;   /* a streamed response taking nothing; 0 = 30 s */
    unsigned max_conns_per_ip;  /* open connections per client address; 0 = 128 */
    /* Campaigns and the OpenRTB bidder (/openrtb2/...); borrowed for the
     * server's life; NULL = those routes answer 503. */
    cp_activate_t *act;
} server_options_t;

/*
 * Serves `db` until SIGINT or SIGTERM, then returns CP_OK. Refuses
 * (CP_EPERM) to listen on a non-loopback address when no API key is
 * configured. Prints "listening on http://HOST:PORT" to stderr when ready.
 */
cp_status server_run(cp_db_t *db, const server_options_t *opts, cp_error_t *err);

#endif /* CP_SERVER_H */
