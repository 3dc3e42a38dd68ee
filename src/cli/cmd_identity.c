/*
 * cmd_identity.c — OneID on the command line: `crowdpack whois TYPE:VALUE`
 * (identifiers, attributes, traits, tags, crowds, lineage) and `crowdpack
 * unmerge MERGE_ID`; and cli_user_delete_embedded(), through which
 * `crowdpack user delete` (cmd_user.c) deletes by TYPE:VALUE.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const cli_spec_t whois_spec = {
    "whois",
    "TYPE:VALUE",
    "Show the user an identifier belongs to: its identifiers, attributes, traits, tags, crowds "
    "and merge lineage.",
    "Types: user_id anonymous_id phone email device_id idfa oaid member_id openid unionid\n"
    "(and configured others). Phones and emails are normalised and hashed as on intake.\n"
    "Examples:\n  crowdpack whois --data ./dmp user_id:17850\n"
    "  crowdpack whois --data ./dmp phone:13800138000",
    NULL,
    CONN_DATA | CONN_SERVER | CONN_JSON,
    1,
    1};

static const cli_opt_t unmerge_opts[] = {
    {"user", 0, OPT_VALUE, "TYPE:VALUE",
     "with --server: a user the merge concerns (the server checks its lineage)"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t unmerge_spec = {
    "unmerge",
    "MERGE_ID",
    "Undo an identity merge (its id is in the whois lineage): both users get their own data "
    "back.",
    "Examples:\n  crowdpack unmerge --data ./dmp 17\n"
    "  crowdpack unmerge --server http://127.0.0.1:8080 --user user_id:17850 17",
    unmerge_opts,
    CONN_DATA | CONN_SERVER | CONN_JSON,
    1,
    1};

/* "/v1/users/TYPE/VALUE" + suffix, escaped; NULL on ENOMEM. */
static char *user_path(const char *type, const char *value, const char *suffix)
{
    char *t = client_escape(type), *v = client_escape(value), *p = NULL;
    if (t && v) {
        size_t n = strlen(t) + strlen(v) + strlen(suffix) + 16;
        if ((p = malloc(n)) != NULL)
            snprintf(p, n, "/v1/users/%s/%s%s", t, v, suffix);
    }
    free(t);
    free(v);
    return p;
}

/* Splits TYPE:VALUE; 0 if there is no ':' after a non-empty type. */
static int split_spec(const char *spec, char *type, size_t cap, const char **value)
{
    const char *c = strchr(spec, ':');
    if (c == NULL || c == spec || (size_t)(c - spec) >= cap)
        return 0;
    memcpy(type, spec, (size_t)(c - spec));
    type[c - spec] = '\0';
    *value = c + 1;
    return 1;
}

static void print_whois(const char *text)
{
    json_t *j = cli_json_parse(text, "whois");
    if (j == NULL)
        return;
    char b[300], t[64];
    json_t *u = json_object_get(j, "user");
    printf("user       %s (ordinal %s)\n", cli_json_text(json_object_get(u, "id"), b, sizeof b),
           cli_json_text(json_object_get(u, "ordinal"), t, sizeof t));
    printf("identifiers\n");
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(j, "identifiers"), i, x)
    {
        json_t *h = json_object_get(x, "hash");
        printf("  %-14s %s%s\n", json_string_value(json_object_get(x, "type")), h ? "#" : "",
               cli_json_text(h ? h : json_object_get(x, "value"), b, sizeof b));
    }
    const char *objs[] = {"attrs", "traits"};
    for (int k = 0; k < 2; k++) {
        json_t *o = json_object_get(j, objs[k]);
        if (json_object_size(o) == 0)
            continue;
        printf("%s\n", objs[k]);
        const char *key;
        json_t *v;
        json_object_foreach(o, key, v) printf("  %-14s %s\n", key, cli_json_text(v, b, sizeof b));
    }
    const char *lists[] = {"tags", "crowds"};
    for (int l = 0; l < 2; l++) {
        json_t *arr = json_object_get(j, lists[l]);
        printf("%-10s", lists[l]);
        if (json_array_size(arr) == 0)
            printf(" (none)");
        json_array_foreach(arr, i, x) printf("%s%s", i ? ", " : " ", cli_json_text(x, b, sizeof b));
        printf("\n");
    }
    json_t *lin = json_object_get(j, "lineage");
    printf("lineage%s\n", json_array_size(lin) ? "" : "    (no merges)");
    json_array_foreach(lin, i, x)
    {
        json_t *undone = json_object_get(x, "undone");
        printf("  merge %s at %s: user %s absorbed %s (%s, messageId %s)%s%s\n",
               cli_json_text(json_object_get(x, "merge_id"), t, sizeof t),
               json_string_value(json_object_get(x, "time")),
               cli_json_text(json_object_get(x, "survivor"), b, sizeof b),
               json_string_value(json_object_get(x, "absorbed")) ? "" : "",
               json_string_value(json_object_get(x, "source")),
               json_string_value(json_object_get(x, "message_id")), undone ? ", undone " : "",
               undone ? json_string_value(undone) : "");
        printf("    absorbed user %s; identifiers:",
               cli_json_text(json_object_get(x, "absorbed"), t, sizeof t));
        size_t k;
        json_t *y;
        json_array_foreach(json_object_get(x, "identifiers"), k, y)
            printf(" %s", json_string_value(y));
        printf("\n");
    }
    json_decref(j);
}

int cmd_whois(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&whois_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    char type[64];
    const char *value;
    if (!split_spec(a.pos[0], type, sizeof type, &value))
        return cli_usage_error(&whois_spec, "expected TYPE:VALUE, such as user_id:17850");
    cli_conn_t c = {0};
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    char *out = NULL, *path = NULL;
    cp_error_t err = {0};
    cp_status st;
    if (c.http) {
        path = user_path(type, value, "");
        st = path ? client_call(c.http, "GET", path, NULL, NULL, 0, &out, &err) : CP_ENOMEM;
    } else {
        char *lib = NULL;
        st = cp_whois_json(c.db, type, value, &lib, &err);
        out = lib ? strdup(lib) : NULL;
        cp_free(lib);
        if (st == CP_OK && out == NULL)
            st = CP_ENOMEM;
    }
    if (st != CP_OK)
        rc = cli_fail(st, &err);
    else if (a.json)
        cli_print_json(out);
    else
        print_whois(out);
    free(out);
    free(path);
    cli_conn_close(&c);
    return rc;
}

int cmd_unmerge(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&unmerge_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    uint64_t id;
    if (cli_parse_u64(a.pos[0], &id) || id == 0)
        return cli_usage_error(&unmerge_spec, "MERGE_ID must be a positive number");
    const char *user = cli_get(&a, "user");
    char type[64];
    const char *value = NULL;
    if (user && !split_spec(user, type, sizeof type, &value))
        return cli_usage_error(&unmerge_spec, "--user expects TYPE:VALUE, such as user_id:17850");
    cli_conn_t c = {0};
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK)
        return rc;
    char *out = NULL, *path = NULL;
    cp_error_t err = {0};
    cp_status st;
    if (c.http) {
        if (user == NULL) {
            cli_conn_close(&c);
            return cli_usage_error(&unmerge_spec,
                                   "with --server give --user TYPE:VALUE, a user the merge "
                                   "concerns (whois shows merges with their ids)");
        }
        path = user_path(type, value, "/unmerge");
        st = path ? client_call_json(c.http, "POST", path,
                                     json_pack("{s:I}", "merge_id", (json_int_t)id), &out, &err)
                  : CP_ENOMEM;
    } else {
        char *lib = NULL;
        st = cp_unmerge(c.db, id, &lib, &err);
        out = lib ? strdup(lib) : NULL;
        cp_free(lib);
        if (st == CP_OK && out == NULL)
            st = CP_ENOMEM;
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
    } else if (a.json) {
        cli_print_json(out);
    } else {
        json_t *j = cli_json_parse(out, "unmerge");
        char b1[32], b2[32];
        printf("undid merge %llu: user %s restored beside user %s\n", (unsigned long long)id,
               cli_json_text(json_object_get(j, "restored"), b1, sizeof b1),
               cli_json_text(json_object_get(j, "survivor"), b2, sizeof b2));
        json_decref(j);
    }
    free(out);
    free(path);
    cli_conn_close(&c);
    return rc;
}

/* `user delete ID`: an ID of the form TYPE:VALUE with a known identifier
 * type deletes by identifier (with the full scrub); others by user id. */
cp_status cli_user_delete_embedded(cp_db_t *db, const char *id, cp_error_t *err)
{
    static const char *const types[] = {"user_id",   "anonymous_id", "phone", "email",
                                        "device_id", "idfa",         "oaid",  "member_id",
                                        "openid",    "unionid"};
    char type[64];
    const char *value;
    if (split_spec(id, type, sizeof type, &value))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (!strcmp(types[i], type))
                return cp_user_delete_by_identifier(db, type, value, err);
    return cp_user_delete(db, id, err);
}
