/*
 * progress.h — a one-line progress bar on stderr for long CLI jobs
 * (load, demo, bench). It draws only when stderr is a terminal, at most
 * ten times a second, so piping or redirecting stderr stays clean.
 */
#ifndef CP_CLI_PROGRESS_H
#define CP_CLI_PROGRESS_H

#include <stdint.h>

typedef enum progress_unit {
    PROGRESS_BYTES = 1, /* done/total are bytes: shown as MiB, rate MiB/s */
    PROGRESS_ITEMS = 2, /* done/total are items (users, lines): shown grouped */
} progress_unit;

typedef struct progress {
    int enabled; /* drawing (stderr is a tty and not disabled) */
    progress_unit unit;
    const char *label; /* "loading", borrowed */
    const char *item;  /* "users" / "lines" for the secondary counter; borrowed */
    uint64_t total;    /* 0 = unknown (no bar, no ETA) */
    uint64_t done;
    uint64_t items; /* secondary counter (lines when unit is bytes) */
    double start;   /* monotonic seconds */
    double last_draw;
    int drawn; /* something is on the line */
} progress_t;

/* Starts a bar; `enable` < 0 = auto (isatty(2)), 0 = never, 1 = always. */
void progress_start(progress_t *p, const char *label, progress_unit unit, uint64_t total,
                    int enable);
/* Records progress and redraws when due. `items` is the secondary counter. */
void progress_update(progress_t *p, uint64_t done, uint64_t items);
/* Clears the bar (the caller prints its own summary). */
void progress_finish(progress_t *p);
/* Seconds since progress_start. */
double progress_elapsed(const progress_t *p);

/* Monotonic clock in seconds. */
double progress_now(void);

#endif /* CP_CLI_PROGRESS_H */
