/*
 * cmd_intake.c — `crowdpack intake config`: the intake configuration
 * (identifier types and hashing, indexed event properties, dedup window,
 * retention; docs/intake.md "Configuration") read or replaced on a data
 * directory or a running server, so an NDJSON import needs no HTTP call
 * to be set up.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const cli_opt_t config_opts[] = {
    {"set", 0, OPT_VALUE, "JSON|@FILE",
     "change the configuration: the fields given replace theirs (PUT /v1/intake/config)"},
    {NULL, 0, 0, NULL, NULL},
};

static const cli_spec_t config_spec = {
    "intake config",
    "",
    "Show or change the intake configuration: identifier types, indexed event properties, "
    "dedup window, retention.",
    "Examples:\n"
    "  crowdpack intake config --data ./dmp\n"
    "  crowdpack intake config --data ./dmp --set '{\"indexed_properties\":[\"category\"]}'\n"
    "  crowdpack intake config --server http://127.0.0.1:8080 --key $ADMIN --set @intake.json",
    config_opts,
    CONN_DATA | CONN_SERVER | CONN_JSON,
    0,
    0};

static cp_status lib_get(cp_db_t *db, const char *body, size_t len, char **out, cp_error_t *err)
{
    (void)body;
    (void)len;
    return cp_intake_config_json(db, out, err);
}

static cp_status lib_set(cp_db_t *db, const char *body, size_t len, char **out, cp_error_t *err)
{
    cp_status st = cp_intake_config_set_json(db, body, len, err);
    return st != CP_OK ? st : cp_intake_config_json(db, out, err);
}

static int intake_config(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&config_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *set = cli_get(&a, "set");
    json_t *req = NULL;
    if (set) {
        char *text = NULL;
        size_t len = 0;
        if (set[0] == '@') {
            if ((rc = cli_read_file(set + 1, 1u << 20, &text, &len)) != CLI_OK)
                return rc;
        } else {
            text = strdup(set);
            len = text ? strlen(text) : 0;
        }
        json_error_t je;
        snprintf(je.text, sizeof je.text, "out of memory");
        req = text ? json_loadb(text, len, JSON_REJECT_DUPLICATES, &je) : NULL;
        free(text);
        if (!json_is_object(req)) {
            json_decref(req);
            return cli_usage_error(&config_spec, "--set needs a JSON object (%s)",
                                   req ? "not an object" : je.text);
        }
    }
    char *out = NULL;
    rc = cli_request(&a, set ? OPEN_WRITE : OPEN_READ, set ? lib_set : lib_get, set ? "PUT" : "GET",
                     "/v1/intake/config", req, &out);
    if (rc != CLI_OK)
        return rc;
    if (set && !a.json)
        printf("intake configuration changed:\n");
    cli_print_json(out);
    free(out);
    return cli_finish_stdout(CLI_OK);
}

static const cli_sub_t subs[] = {
    {"config", intake_config, &config_spec},
    {NULL, NULL, NULL},
};

int cmd_intake(int argc, char **argv)
{
    return cli_dispatch("intake", "Event intake: its configuration.", subs, argc, argv);
}
