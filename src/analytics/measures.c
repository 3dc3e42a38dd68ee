/*
 * measures.c — the public side of the event measures (index/measure.h):
 * reading and replacing their configuration through the engine's
 * locks, so a change is persisted with the write that makes it.
 */
#include <stdlib.h>
#include <string.h>

#include "analytics/analytics.h"

cp_status cp_measures_json(cp_db_t *db, char **out, cp_error_t *err)
{
    if (out == NULL)
        return CP_ERR(err, CP_EINVAL, "out is NULL");
    *out = NULL;
    cp_status rc = db_read_begin(db, err);
    if (rc)
        return rc;
    json_t *j = db->meas ? meas_config_json(db->meas) : json_pack("{s:[]}", "measures");
    if (j && db->meas &&
        json_object_set_new(j, "skipped_values",
                            json_integer((json_int_t)meas_skipped(db->meas)))) {
        json_decref(j);
        j = NULL; /* db_json_out: CP_ENOMEM */
    }
    db_read_end(db);
    return db_json_out(j, out, err);
}

cp_status cp_measures_set_json(cp_db_t *db, const char *json, size_t len, char **out,
                               cp_error_t *err)
{
    if (out)
        *out = NULL;
    json_t *req = NULL;
    cp_status rc = ana_parse_request(json, len, &req, err);
    if (rc)
        return rc;
    store_txn_t *txn;
    if ((rc = db_write_begin(db, &txn, err)))
        goto out;
    if (db->meas == NULL) {
        db_write_abort(db, txn);
        rc = CP_ERR(err, CP_EINVAL, "event measures are not available on this handle");
        goto out;
    }
    /* Validation happens before anything changes: a failure aborts. */
    if ((rc = meas_config_set_json(db->meas, req, err))) {
        db_write_abort(db, txn);
        goto out;
    }
    if ((rc = db_write_end(db, txn, err)))
        goto out;
    if (out)
        rc = cp_measures_json(db, out, err);
out:
    json_decref(req);
    return rc;
}
