/*
 * cmd_serve.c — `crowdpack serve`: open a data directory for writing and
 * hand it to the HTTP server (src/server) until SIGINT/SIGTERM.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "server/server.h"

#define SERVE_MAX_ORIGINS 64

/* --allow-origin may be given many times (the parser keeps the last value
 * only) and each value may list origins separated by commas: collect them
 * all from argv. The copies live in `store`, owned by the caller. */
static int collect_origins(int argc, char **argv, char *store, size_t cap, const char **out,
                           size_t *n)
{
    size_t used = 0;
    *n = 0;
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--allow-origin") == 0 && i + 1 < argc)
            v = argv[++i];
        else if (strncmp(argv[i], "--allow-origin=", 15) == 0)
            v = argv[i] + 15;
        if (v == NULL)
            continue;
        size_t len = strlen(v);
        if (used + len + 1 > cap)
            return -1;
        char *copy = store + used;
        memcpy(copy, v, len + 1);
        used += len + 1;
        for (char *tok = strtok(copy, ", "); tok != NULL; tok = strtok(NULL, ", ")) {
            if (*n == SERVE_MAX_ORIGINS)
                return -1;
            out[(*n)++] = tok;
        }
    }
    return 0;
}

/* Parses a positive number of seconds for option `name`. */
static int seconds_opt(const cli_args_t *a, const char *name, unsigned *out)
{
    const char *s = cli_get(a, name);
    uint64_t v;
    if (s == NULL)
        return 0;
    if (cli_parse_u64(s, &v) != 0 || v == 0 || v > 86400)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static const cli_opt_t serve_opts[] = {
    {"listen", 'l', OPT_VALUE, "HOST:PORT",
     "address to listen on (default 127.0.0.1:8080; port 0 = any)"},
    {"port-file", 0, OPT_VALUE, "FILE", "write the bound port here once listening"},
    {"threads", 0, OPT_VALUE, "N", "HTTP worker threads (default: 4 per CPU, at least 8)"},
    {"max-body", 0, OPT_VALUE, "BYTES", "largest request body (default 16M; suffixes k M G)"},
    {"tls-cert", 0, OPT_VALUE, "FILE", "PEM certificate: serve HTTPS (with --tls-key)"},
    {"tls-key", 0, OPT_VALUE, "FILE", "PEM private key for --tls-cert"},
    {"allow-origin", 0, OPT_VALUE, "ORIGIN",
     "let web pages at ORIGIN (https://host[:port]) call the API: CORS answers and "
     "state-changing requests (repeatable, or comma-separated)"},
    {"request-timeout", 0, OPT_VALUE, "SECONDS",
     "cut a connection whose request (headers and body) has not arrived in time (default 30)"},
    {"stall-timeout", 0, OPT_VALUE, "SECONDS",
     "cut an export whose reader takes nothing for this long (default 30)"},
    {"max-connections-per-ip", 0, OPT_VALUE, "N",
     "open connections per client address (default 128; raise it behind a proxy)"},
    {"read-only", 0, OPT_FLAG, NULL,
     "open the data directory read-only: reads only, beside another writer"},
    {"public-url", 0, OPT_VALUE, "URL",
     "base URL exchanges and browsers reach this server at, for the notice and tracker URLs "
     "of bids (default http://HOST:PORT of --listen)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t serve_spec = {
    "serve",
    "",
    "Serve the HTTP/JSON API (/v1/...) over a data directory.",
    "Listens on loopback by default. Listening on another address needs an API key to exist\n"
    "(crowdpack keys create). Stops cleanly on SIGINT or SIGTERM.\n\nExamples:\n"
    "  crowdpack serve --data ./dmp\n"
    "  crowdpack serve --data ./dmp --listen 127.0.0.1:0 --port-file port.txt\n"
    "  crowdpack serve --data ./dmp --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem\n"
    "  crowdpack serve --data ./dmp --allow-origin https://dmp.example.com",
    serve_opts,
    CONN_DATA,
    0,
    0};

int cmd_serve(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&serve_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    server_options_t o = {0};
    o.listen = cli_get(&a, "listen");
    o.port_file = cli_get(&a, "port-file");
    o.tls_cert = cli_get(&a, "tls-cert");
    o.tls_key = cli_get(&a, "tls-key");
    if (!!o.tls_cert != !!o.tls_key)
        return cli_usage_error(&serve_spec, "--tls-cert and --tls-key go together");
    uint64_t v;
    if (cli_get(&a, "threads")) {
        if (cli_parse_u64(cli_get(&a, "threads"), &v) != 0 || v > 1024)
            return cli_usage_error(&serve_spec, "--threads: expected a number up to 1024");
        o.threads = (int)v;
    }
    if (cli_get(&a, "max-body")) {
        if (cli_parse_u64(cli_get(&a, "max-body"), &v) != 0 || v == 0)
            return cli_usage_error(&serve_spec, "--max-body: expected a size in bytes (e.g. 64M)");
        o.max_body = (size_t)v;
    }
    if (o.listen && !strchr(o.listen, ':'))
        return cli_usage_error(&serve_spec, "--listen: expected HOST:PORT, got '%s'", o.listen);
    if (seconds_opt(&a, "request-timeout", &o.request_timeout_s) != 0)
        return cli_usage_error(&serve_spec, "--request-timeout: expected seconds from 1 to 86400");
    if (seconds_opt(&a, "stall-timeout", &o.stall_timeout_s) != 0)
        return cli_usage_error(&serve_spec, "--stall-timeout: expected seconds from 1 to 86400");
    if (cli_get(&a, "max-connections-per-ip")) {
        if (cli_parse_u64(cli_get(&a, "max-connections-per-ip"), &v) != 0 || v == 0 || v > 1000000)
            return cli_usage_error(&serve_spec,
                                   "--max-connections-per-ip: expected a number from 1 to 1000000");
        o.max_conns_per_ip = (unsigned)v;
    }
    static char origin_store[8192];
    static const char *origins[SERVE_MAX_ORIGINS];
    size_t norigins = 0;
    if (collect_origins(argc, argv, origin_store, sizeof origin_store, origins, &norigins) != 0)
        return cli_usage_error(&serve_spec, "--allow-origin: at most %d origins",
                               SERVE_MAX_ORIGINS);
    o.allow_origins = origins;
    o.nallow_origins = norigins;

    cli_conn_t c = {0};
    if ((rc = cli_conn_open(&a, cli_has(&a, "read-only") ? OPEN_READ : OPEN_WRITE, 0, &c)) !=
        CLI_OK)
        return rc;
    cp_error_t err = {0};
    cp_status st = CP_OK;
    /* Campaigns and the bidder live in DATA/activate; a read-only server
     * serves neither (bidding writes the ledger). */
    cp_activate_t *act = NULL;
    if (!cli_has(&a, "read-only")) {
        char dir[4096], base[512];
        const char *pub = cli_get(&a, "public-url");
        if (pub == NULL) {
            snprintf(base, sizeof base, "http://%s", o.listen ? o.listen : "127.0.0.1:8080");
            pub = base;
            /* A wildcard address is no place an exchange or a browser can
             * send notices to. */
            if (o.listen &&
                (strncmp(o.listen, "0.0.0.0:", 8) == 0 || strncmp(o.listen, "[::]:", 5) == 0))
                fprintf(stderr,
                        "note: bids will carry notice URLs on %s; give --public-url "
                        "with the address exchanges reach this server at\n",
                        base);
        }
        cp_activate_options_t ao = CP_ACTIVATE_OPTIONS_INIT;
        ao.notice_base = pub;
        if ((size_t)snprintf(dir, sizeof dir, "%s/activate", c.data_dir) >= sizeof dir) {
            cli_conn_close(&c);
            return cli_usage_error(&serve_spec, "--data: path too long");
        }
        st = cp_activate_open(c.db, dir, &ao, &act, &err);
        o.act = act;
    }
    if (st == CP_OK)
        st = server_run(c.db, &o, &err);
    if (st != CP_OK)
        rc = cli_fail(st, &err);
    cp_error_t cerr = {0};
    if (cp_activate_close(act, &cerr) != CP_OK && rc == CLI_OK)
        rc = cli_fail(CP_EIO, &cerr);
    cli_conn_close(&c);
    return rc;
}
