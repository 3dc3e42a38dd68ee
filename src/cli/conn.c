/*
 * conn.c — opening what a command works on: an embedded data directory
 * (like sqlite3) or a running server (--server URL).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/*
 * A read-only handle sees what is in LMDB: changes a running server has
 * logged in its write-ahead log but not yet checkpointed (it does so every
 * few seconds and at exit) are not there. Replaying them would need the
 * writer's lock, so the command says what it cannot see instead.
 */
static void note_unseen(cp_db_t *db, const char *data)
{
    cp_health_t h = CP_HEALTH_INIT;
    if (cp_db_health(db, &h, NULL) == CP_OK && h.wal_records > 0)
        fprintf(stderr,
                "note: %llu recent change%s logged in %s/wal %s not checkpointed yet and not "
                "included here (a running server checkpoints within seconds; --server URL "
                "shows the live state)\n",
                (unsigned long long)h.wal_records, h.wal_records == 1 ? "" : "s", data,
                h.wal_records == 1 ? "is" : "are");
}

int cli_conn_open(const cli_args_t *a, int mode, int server_ok, cli_conn_t *c)
{
    memset(c, 0, sizeof *c);
    const char *server = a->server;
    const char *data = a->data;
    if (!server && !data)
        data = getenv("CROWDPACK_DATA");
    if (!server && !data && server_ok)
        server = getenv("CROWDPACK_SERVER");
    cp_error_t err = {0};

    if (server) {
        if (!server_ok)
            return cli_usage_error(a->spec, "'%s' works on a data directory only (--data DIR)",
                                   a->spec->name);
        const char *key = a->key ? a->key : getenv("CROWDPACK_KEY");
        cp_status st = client_open(server, key, &c->http, &err);
        if (st != CP_OK)
            return cli_fail(st, &err);
        return CLI_OK;
    }
    if (!data || !*data)
        return cli_usage_error(a->spec, "no data directory: give --data DIR%s",
                               server_ok ? " or --server URL" : "");

    cp_open_options_t o = CP_OPEN_OPTIONS_INIT;
    o.flags = mode == OPEN_WRITE ? 0 : CP_OPEN_READONLY;
    cp_status st = cp_db_open(data, &o, &c->db, &err);
    if (st != CP_OK) {
        int rc = cli_fail(st, &err);
        if (st == CP_ELOCKED)
            fprintf(stderr,
                    "hint: another crowdpack process is writing to %s; if it is "
                    "`crowdpack serve`, send commands to it with --server URL\n",
                    data);
        return rc;
    }
    c->data_dir = data;
    if (mode != OPEN_WRITE)
        note_unseen(c->db, data);
    return CLI_OK;
}

void cli_conn_close(cli_conn_t *c)
{
    cp_db_close(c->db, NULL);
    client_close(c->http);
    c->db = NULL;
    c->http = NULL;
}

int cli_request(const cli_args_t *a, int mode, cli_lib_fn fn, const char *method, const char *path,
                json_t *req, char **out)
{
    cli_conn_t c = {0};
    cp_error_t err = {0};
    cp_status st;
    *out = NULL;
    int rc = cli_conn_open(a, mode, 1, &c);
    if (rc != CLI_OK) {
        json_decref(req);
        return rc;
    }
    if (c.http) {
        st = req ? client_call_json(c.http, method, path, req, out, &err)
                 : client_call(c.http, method, path, NULL, NULL, 0, out, &err);
    } else {
        char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
        json_decref(req);
        char *lib = NULL;
        st = (body || !req) ? fn(c.db, body, body ? strlen(body) : 0, &lib, &err) : CP_ENOMEM;
        free(body);
        if (st == CP_OK && (*out = strdup(lib)) == NULL)
            st = CP_ENOMEM;
        cp_free(lib);
    }
    cli_conn_close(&c);
    return st != CP_OK ? cli_fail(st, &err) : CLI_OK;
}

int cli_request_view(const cli_args_t *a, int mode, cli_lib_fn fn, const char *method,
                     const char *path, json_t *req, const char *what, json_t **view)
{
    char *out = NULL;
    *view = NULL;
    int rc = cli_request(a, mode, fn, method, path, req, &out);
    if (rc != CLI_OK)
        return rc;
    if (a->json) {
        cli_print_json(out);
        free(out);
        return cli_finish_stdout(CLI_OK);
    }
    *view = cli_json_parse(out, what);
    free(out);
    return *view ? CLI_OK : CLI_FAIL;
}
