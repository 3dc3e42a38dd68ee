/*
 * cmd_user.c — `crowdpack user ...` (one user: show, delete, untag) and
 * `crowdpack keys ...` (API keys: create, list, revoke).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/util.h"

#define CONN_ALL (CONN_DATA | CONN_SERVER | CONN_JSON)

static char *user_url(const char *id, const char *suffix)
{
    char *e = client_escape(id);
    if (!e)
        return NULL;
    size_t n = strlen(e) + strlen(suffix) + 16;
    char *u = malloc(n);
    if (u)
        snprintf(u, n, "/v1/users/%s%s", e, suffix);
    free(e);
    return u;
}

static const cli_spec_t show_spec = {
    "user show",
    "ID",
    "Show one user: attributes, direct tags and the crowds it belongs to.",
    "Example:\n  crowdpack user show --data ./dmp u42",
    NULL,
    CONN_ALL,
    1,
    1};
static const cli_spec_t delete_spec = {
    "user delete",
    "ID|TYPE:VALUE",
    "Delete a user completely (every bitmap, column and the id).",
    "By an identifier (TYPE:VALUE) the whole merged user goes, with its identifiers and\n"
    "lineage, the write-ahead log and the freed pages of data.mdb (compacted).\n"
    "Example:\n  crowdpack user delete --data ./dmp u42\n"
    "  crowdpack user delete --data ./dmp email:ann@example.com",
    NULL,
    CONN_ALL,
    1,
    1};
static const cli_spec_t untag_spec = {
    "user untag",
    "ID PATH...",
    "Remove tags from a user.",
    "Example:\n  crowdpack user untag --data ./dmp u42 interest/finance interest/travel",
    NULL,
    CONN_ALL,
    2,
    -1};

static void print_user(const char *text)
{
    json_t *j = cli_json_parse(text, "user");
    if (!j)
        return;
    char b[256];
    printf("%-8s %s\n", "id", cli_json_text(json_object_get(j, "id"), b, sizeof b));
    if (json_object_get(j, "ordinal"))
        printf("%-8s %s\n", "ordinal", cli_json_text(json_object_get(j, "ordinal"), b, sizeof b));
    json_t *attrs = json_object_get(j, "attrs");
    if (json_object_size(attrs) > 0) {
        printf("attrs\n");
        const char *k;
        json_t *v;
        json_object_foreach(attrs, k, v) printf("  %-14s %s\n", k, cli_json_text(v, b, sizeof b));
    }
    const char *lists[] = {"tags", "crowds"};
    for (int l = 0; l < 2; l++) {
        json_t *arr = json_object_get(j, lists[l]);
        printf("%-8s", lists[l]);
        if (json_array_size(arr) == 0)
            printf(" (none)");
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) printf("%s%s", i ? ", " : " ", cli_json_text(x, b, sizeof b));
        printf("\n");
    }
    json_decref(j);
}

enum { U_SHOW, U_DELETE, U_UNTAG };

static int user_cmd(const cli_spec_t *spec, int op, int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *id = a.pos[0];
    cli_conn_t c = {0};
    char *out = NULL, *lib = NULL, *url = NULL;
    cp_error_t err = {0};
    cp_status st;
    if ((rc = cli_conn_open(&a, op == U_SHOW ? OPEN_READ : OPEN_WRITE, 1, &c)) != CLI_OK)
        return rc;
    if (c.http) {
        if (!(url = user_url(id, op == U_UNTAG ? "/tags/remove" : ""))) {
            rc = cli_failf("out of memory");
            goto out;
        }
        if (op == U_SHOW) {
            st = client_call(c.http, "GET", url, NULL, NULL, 0, &out, &err);
        } else if (op == U_DELETE) {
            st = client_call(c.http, "DELETE", url, NULL, NULL, 0, NULL, &err);
        } else {
            json_t *b = json_object(), *tags = json_array();
            for (int i = 1; i < a.npos; i++)
                json_array_append_new(tags, json_string(a.pos[i]));
            json_object_set_new(b, "tags", tags);
            st = client_call_json(c.http, "POST", url, b, NULL, &err);
        }
    } else if (op == U_SHOW) {
        st = cp_user_json(c.db, id, &lib, &err);
    } else if (op == U_DELETE) {
        st = cli_user_delete_embedded(c.db, id, &err); /* cmd_identity.c: TYPE:VALUE too */
    } else {
        st = cp_user_remove_tags(c.db, id, (const char *const *)&a.pos[1], (size_t)(a.npos - 1),
                                 &err);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (op == U_SHOW) {
        if (a.json)
            cli_print_json(out ? out : lib);
        else
            print_user(out ? out : lib);
    } else {
        json_t *o = json_object();
        json_object_set_new(o, op == U_DELETE ? "deleted" : "untagged", json_string(id));
        if (a.json) {
            char *s = json_dumps(o, JSON_COMPACT);
            puts(s ? s : "{}");
            free(s);
        } else if (op == U_DELETE) {
            printf("deleted user %s\n", id);
        } else {
            printf("removed %d tag%s from user %s\n", a.npos - 1, a.npos > 2 ? "s" : "", id);
        }
        json_decref(o);
    }
out:
    free(out);
    free(url);
    cp_free(lib);
    cli_conn_close(&c);
    return rc;
}

static int user_show(int argc, char **argv)
{
    return user_cmd(&show_spec, U_SHOW, argc, argv);
}
static int user_delete(int argc, char **argv)
{
    return user_cmd(&delete_spec, U_DELETE, argc, argv);
}
static int user_untag(int argc, char **argv)
{
    return user_cmd(&untag_spec, U_UNTAG, argc, argv);
}

static const cli_sub_t user_subs[] = {
    {"show", user_show, &show_spec},
    {"delete", user_delete, &delete_spec},
    {"untag", user_untag, &untag_spec},
    {NULL, NULL, NULL},
};

int cmd_user(int argc, char **argv)
{
    return cli_dispatch("user", "One user by id: show, delete (completely), untag.", user_subs,
                        argc, argv);
}

/* ---------------------------------------------------------------- keys */

/* Keys are managed on the data directory (whoever can write it is the
 * administrator) or over --server with an admin key. */
static const cli_opt_t kcreate_opts[] = {
    {"role", 0, OPT_VALUE, "read|write|admin", "what the key may do (required)"},
    {"label", 0, OPT_VALUE, "TEXT", "a note saying whose key it is"},
    {NULL, 0, 0, NULL, NULL},
};
static const cli_spec_t kcreate_spec = {
    "keys create",
    "",
    "Create an API key and print it (only the key, on stdout; shown once).",
    "Only a salted hash is stored. Once a key exists, the server requires one on every request.\n\n"
    "Example:\n  KEY=$(crowdpack keys create --data ./dmp --role write --label etl)",
    kcreate_opts,
    CONN_ALL,
    0,
    0};
static const cli_spec_t klist_spec = {"keys list",
                                      "",
                                      "List API keys (ids, roles, labels; never the keys).",
                                      "Example:\n  crowdpack keys list --data ./dmp",
                                      NULL,
                                      CONN_ALL,
                                      0,
                                      0};
static const cli_spec_t krevoke_spec = {"keys revoke",
                                        "ID",
                                        "Revoke an API key by its id.",
                                        "Example:\n  crowdpack keys revoke --data ./dmp k3",
                                        NULL,
                                        CONN_ALL,
                                        1,
                                        1};

static int keys_create(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&kcreate_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    const char *r = cli_get(&a, "role");
    if (!r)
        return cli_usage_error(&kcreate_spec, "--role is required (read, write or admin)");
    cp_role role = 0;
    for (int i = CP_ROLE_READ; i <= CP_ROLE_ADMIN; i++)
        if (cp_role_name((cp_role)i) && strcmp(cp_role_name((cp_role)i), r) == 0)
            role = (cp_role)i;
    if (!role)
        return cli_usage_error(&kcreate_spec, "--role: expected read, write or admin, got '%s'", r);
    cli_conn_t c = {0};
    char *key = NULL;
    cp_error_t err = {0};
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK)
        return rc;
    cp_status st;
    if (c.http) {
        char *resp = NULL;
        json_t *b = json_pack("{s:s}", "role", r);
        if (b && cli_get(&a, "label"))
            json_object_set_new(b, "label", json_string(cli_get(&a, "label")));
        st = client_call_json(c.http, "POST", "/v1/keys", b, &resp, &err);
        if (st == CP_OK) {
            json_t *j = json_loads(resp, 0, NULL);
            const char *k = json_string_value(json_object_get(j, "key"));
            key = k ? strdup(k) : NULL;
            if (!key)
                st = CP_ERR(&err, CP_EIO, "server answer has no \"key\"");
            json_decref(j);
        }
        free(resp);
    } else {
        st = cp_key_create(c.db, role, cli_get(&a, "label"), &key, &err);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
    } else if (a.json) {
        json_t *o = json_pack("{s:s,s:s}", "key", key, "role", r);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        puts(s ? s : "{}");
        free(s);
        json_decref(o);
    } else {
        puts(key);
    }
    cp_free(key);
    cli_conn_close(&c);
    return rc;
}

static int keys_list(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&klist_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    cli_conn_t c = {0};
    char *lib = NULL;
    cp_error_t err = {0};
    if ((rc = cli_conn_open(&a, OPEN_READ, 1, &c)) != CLI_OK)
        return rc;
    cp_status st;
    if (c.http) {
        char *resp = NULL;
        st = client_call(c.http, "GET", "/v1/keys", NULL, NULL, 0, &resp, &err);
        lib = resp; /* cp_free is free() */
    } else {
        st = cp_keys_json(c.db, &lib, &err);
    }
    if (st != CP_OK) {
        rc = cli_fail(st, &err);
        goto out;
    }
    if (a.json) {
        cli_print_json(lib);
        goto out;
    }
    json_t *j = cli_json_parse(lib, "keys");
    if (!j) {
        rc = CLI_FAIL;
        goto out;
    }
    json_t *keys = json_object_get(j, "keys");
    if (json_array_size(keys) == 0) {
        printf("no keys (the server accepts requests without a key on loopback only)\n");
    } else {
        const char *hdr[] = {"ID", "ROLE", "CREATED", "LABEL"};
        cli_table_t *t = cli_table_new(4, hdr);
        size_t i;
        json_t *k;
        json_array_foreach(keys, i, k)
        {
            char b[4][128];
            const char *row[] = {cli_json_text(json_object_get(k, "id"), b[0], 128),
                                 cli_json_text(json_object_get(k, "role"), b[1], 128),
                                 cli_json_time(json_object_get(k, "created"), b[2], 128),
                                 cli_json_text(json_object_get(k, "label"), b[3], 128)};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(j);
out:
    cp_free(lib);
    cli_conn_close(&c);
    return rc;
}

static int keys_revoke(int argc, char **argv)
{
    cli_args_t a;
    int rc = cli_parse(&krevoke_spec, argc, argv, &a);
    if (rc != CLI_OK || a.help)
        return rc;
    cli_conn_t c = {0};
    cp_error_t err = {0};
    if ((rc = cli_conn_open(&a, OPEN_WRITE, 1, &c)) != CLI_OK)
        return rc;
    cp_status st;
    if (c.http) {
        char *e = client_escape(a.pos[0]);
        char path[512];
        snprintf(path, sizeof path, "/v1/keys/%s", e ? e : "");
        st = e && strlen(e) < 400 ? client_call(c.http, "DELETE", path, NULL, NULL, 0, NULL, &err)
                                  : CP_ERR(&err, CP_EINVAL, "bad key id");
        free(e);
    } else {
        st = cp_key_revoke(c.db, a.pos[0], &err);
    }
    if (st != CP_OK)
        rc = cli_fail(st, &err);
    else if (a.json) {
        json_t *o = json_pack("{s:s}", "revoked", a.pos[0]);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        puts(s ? s : "{}");
        free(s);
        json_decref(o);
    } else
        printf("revoked key %s\n", a.pos[0]);
    cli_conn_close(&c);
    return rc;
}

static const cli_sub_t key_subs[] = {
    {"create", keys_create, &kcreate_spec},
    {"list", keys_list, &klist_spec},
    {"revoke", keys_revoke, &krevoke_spec},
    {NULL, NULL, NULL},
};

int cmd_keys(int argc, char **argv)
{
    return cli_dispatch("keys", "API keys with roles (read, write, admin) for the HTTP server.",
                        key_subs, argc, argv);
}
