/*
 * sched.c — the server's scheduler thread: runs the scheduled jobs (the
 * RFM recomputation of cp_rfm_tick, set with PUT /v1/rfm/schedule; crowd
 * refreshes and expiry of cp_crowds_tick, set with PUT
 * /v1/crowds/NAME/schedule) while the server runs. It wakes a second after the
 * start and then every SRV_SCHED_TICK_S seconds; each job decides itself
 * whether it is due (its last run is stored with the data, so a restart
 * does not run it again early). Jobs take the engine's write lock like
 * any request. A failure is logged to stderr once per distinct message.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "server/sched.h"
#include "server/srv.h"

#define SRV_SCHED_TICK_S 60

static void *sched_main(void *arg)
{
    srv_sched_t *s = arg;
    char last_msg[sizeof(((cp_error_t *)0)->message)] = "";
    char last_crowd_msg[sizeof(((cp_error_t *)0)->message)] = "";
    int first = 1;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += first ? 1 : SRV_SCHED_TICK_S;
        first = 0;
        while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &ts) == 0) {
        }
        if (s->stop)
            break;
        pthread_mutex_unlock(&s->mu);
        cp_error_t err = {0};
        int ran = 0;
        cp_status st = cp_rfm_tick(s->db, time_now_ms(), &ran, &err);
        if (st != CP_OK && strcmp(err.message, last_msg) != 0) {
            fprintf(stderr, "scheduled RFM failed: %s\n", err.message);
            snprintf(last_msg, sizeof last_msg, "%s", err.message);
        } else if (ran) {
            fprintf(stderr, "scheduled RFM recomputed\n");
            last_msg[0] = '\0';
        }
        /* Crowds: scheduled refreshes of static crowds, expiry. */
        cp_error_t cerr = {0};
        int nc = 0;
        st = cp_crowds_tick(s->db, time_now_ms(), &nc, &cerr);
        if (st != CP_OK && strcmp(cerr.message, last_crowd_msg) != 0) {
            fprintf(stderr, "scheduled crowd refresh failed: %s\n", cerr.message);
            snprintf(last_crowd_msg, sizeof last_crowd_msg, "%s", cerr.message);
        } else if (st == CP_OK && nc) {
            fprintf(stderr, "scheduled crowds: %d refreshed or frozen\n", nc);
            last_crowd_msg[0] = '\0';
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void srv_sched_start(srv_sched_t *s, cp_db_t *db)
{
    memset(s, 0, sizeof *s);
    s->db = db;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->th, NULL, sched_main, s) == 0)
        s->started = 1;
    else
        fprintf(stderr, "warning: no scheduler thread: scheduled RFM will not run\n");
}

void srv_sched_stop(srv_sched_t *s)
{
    if (!s->started)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    s->started = 0;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}
