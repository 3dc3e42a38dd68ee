/* users.c — the id <-> ordinal dictionary; see users.h. */
#include <string.h>

#include "model/users.h"
#include "util/util.h"

cp_status users_validate_id(const char *id, size_t len, cp_error_t *err)
{
    if (len == 0)
        return CP_ERR(err, CP_EINVAL, "empty user id");
    if (len > USERS_MAX_ID)
        return CP_ERR(err, CP_ELIMIT, "user id \"%.32s...\" is longer than %d bytes",
                      utf8_valid(id, 32) ? id : "?", USERS_MAX_ID);
    if (!utf8_valid(id, len))
        return CP_ERR(err, CP_EINVAL, "user id is not valid UTF-8");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)id[i] < 0x20 || id[i] == 0x7f)
            return CP_ERR(err, CP_EINVAL, "user id contains a control character at byte %zu",
                          i + 1);
    return CP_OK;
}

cp_status users_lookup(store_txn_t *t, const char *id, size_t len, uint32_t *ord, cp_error_t *err)
{
    const void *v;
    size_t vl;
    cp_status rc = store_get(t, STORE_UID, id, len, &v, &vl, err);
    if (rc)
        return rc;
    if (vl != 4)
        return CP_ERR(err, CP_EIO, "corrupt user dictionary entry for \"%.*s\"", (int)len, id);
    memcpy(ord, v, 4);
    return CP_OK;
}

cp_status users_add(store_txn_t *t, const char *id, size_t len, uint32_t ord, cp_error_t *err)
{
    cp_status rc = store_put(t, STORE_UID, id, len, &ord, 4, err);
    if (rc)
        return rc;
    return store_put(t, STORE_UORD, &ord, 4, id, len, err);
}

cp_status users_remove(store_txn_t *t, const char *id, size_t len, uint32_t ord, cp_error_t *err)
{
    cp_status rc = store_del(t, STORE_UID, id, len, err);
    if (rc)
        return rc;
    return store_del(t, STORE_UORD, &ord, 4, err);
}

cp_status users_id_of(store_txn_t *t, uint32_t ord, const char **id, size_t *len, cp_error_t *err)
{
    const void *v;
    size_t vl;
    cp_status rc = store_get(t, STORE_UORD, &ord, 4, &v, &vl, err);
    if (rc)
        return rc;
    *id = v;
    *len = vl;
    return CP_OK;
}
