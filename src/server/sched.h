/*
 * sched.h — the server's scheduler thread (sched.c): scheduled analytics
 * jobs (RFM) run inside `crowdpack serve`.
 */
#ifndef CP_SERVER_SCHED_H
#define CP_SERVER_SCHED_H

#include <pthread.h>

#include "crowdpack.h"

typedef struct srv_sched {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int started;
    cp_db_t *db; /* borrowed: outlives the scheduler */
} srv_sched_t;

/* Starts the thread (a failure to start is logged, not fatal). */
void srv_sched_start(srv_sched_t *s, cp_db_t *db);
/* Stops and joins it; waits for a running job. Fine on a zeroed s. */
void srv_sched_stop(srv_sched_t *s);

#endif /* CP_SERVER_SCHED_H */
