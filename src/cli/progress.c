/* progress.c — the stderr progress bar (see progress.h). */
#include "cli/progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#define BAR_WIDTH 24
#define REDRAW_SECS 0.1

double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void progress_start(progress_t *p, const char *label, progress_unit unit, uint64_t total,
                    int enable)
{
    p->enabled = enable < 0 ? isatty(STDERR_FILENO) : enable;
    p->unit = unit;
    p->label = label;
    p->item = unit == PROGRESS_BYTES ? "lines" : "";
    p->total = total;
    p->done = 0;
    p->items = 0;
    p->start = progress_now();
    p->last_draw = 0;
    p->drawn = 0;
}

double progress_elapsed(const progress_t *p)
{
    return progress_now() - p->start;
}

static void fmt_amount(const progress_t *p, double v, char *buf)
{
    if (p->unit == PROGRESS_BYTES)
        cli_bytes(v, buf);
    else
        cli_group((uint64_t)v, buf);
}

static void draw(progress_t *p, double now)
{
    double el = now - p->start;
    double rate = el > 0 ? (double)p->done / el : 0;
    char done[32], total[32], rbuf[32], eta[32], items[32];
    fmt_amount(p, (double)p->done, done);
    fmt_amount(p, rate, rbuf);

    char bar[BAR_WIDTH + 1];
    fputs("\r\033[K", stderr);
    if (p->total > 0) {
        double f = (double)p->done / (double)p->total;
        if (f > 1)
            f = 1;
        int fill = (int)(f * BAR_WIDTH);
        for (int i = 0; i < BAR_WIDTH; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[BAR_WIDTH] = 0;
        fmt_amount(p, (double)p->total, total);
        double left =
            rate > 0 ? (double)(p->total - (p->done < p->total ? p->done : p->total)) / rate : 0;
        if (left < 60)
            snprintf(eta, sizeof eta, "%ds", (int)(left + 0.5));
        else
            cli_duration(left, eta);
        fprintf(stderr, "%s [%s] %5.1f%% %s/%s %s%s ETA %s", p->label, bar, f * 100.0, done, total,
                rbuf, p->unit == PROGRESS_BYTES ? "/s" : " /s", eta);
    } else {
        fprintf(stderr, "%s %s %s%s", p->label, done, rbuf,
                p->unit == PROGRESS_BYTES ? "/s" : " /s");
    }
    if (p->unit == PROGRESS_BYTES && p->items > 0)
        fprintf(stderr, " (%s %s)", cli_group(p->items, items), p->item);
    fflush(stderr);
    p->drawn = 1;
    p->last_draw = now;
}

void progress_update(progress_t *p, uint64_t done, uint64_t items)
{
    p->done = done;
    p->items = items;
    if (!p->enabled)
        return;
    double now = progress_now();
    if (now - p->last_draw < REDRAW_SECS)
        return;
    draw(p, now);
}

void progress_finish(progress_t *p)
{
    if (p->enabled && p->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    p->drawn = 0;
}
