/*
 * cmd_serve.c — `crowdpack serve`: open a data directory for writing and
 * hand it to the HTTP server (src/server) until SIGINT/SIGTERM.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "server/server.h"

static const cli_opt_t serve_opts[] = {
    {"listen", 'l', OPT_VALUE, "HOST:PORT", "address to listen on (default 127.0.0.1:8080; port 0 = any)"},
    {"port-file", 0, OPT_VALUE, "FILE", "write the bound port here once listening"},
    {"threads", 0, OPT_VALUE, "N", "HTTP worker threads (default: 4 per CPU, at least 8)"},
    {"max-body", 0, OPT_VALUE, "BYTES", "largest request body (default 16M; suffixes k M G)"},
    {"tls-cert", 0, OPT_VALUE, "FILE", "PEM certificate: serve HTTPS (with --tls-key)"},
    {"tls-key", 0, OPT_VALUE, "FILE", "PEM private key for --tls-cert"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t serve_spec = {
    "serve", "", "Serve the HTTP/JSON API (/v1/...) over a data directory.",
    "Listens on loopback by default. Listening on another address needs an API key to exist\n"
    "(crowdpack keys create). Stops cleanly on SIGINT or SIGTERM.\n\nExamples:\n"
    "  crowdpack serve --data ./dmp\n"
    "  crowdpack serve --data ./dmp --listen 127.0.0.1:0 --port-file port.txt\n"
    "  crowdpack serve --data ./dmp --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem",
    serve_opts, CONN_DATA, 0, 0};

int cmd_serve(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&serve_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    cp_server_options_t o = {0};
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

    cli_conn_t c = {0};
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 0, &c)) != CLI_OK)
        return rc;
    cp_error_t err = {0};
    cp_status st = cp_server_run(c.db, &o, &err);
    if (st != CP_OK)
        rc = cli_fail(st, &err);
    cli_conn_close(&c);
    return rc;
}
