/*
 * tools/progress.c - the progress bar of the iqdb program: one line on
 * stderr, redrawn at most ten times a second, showing the count, the
 * percentage and a bar when the total is known, the rate and the time
 * left. Drawn only on a terminal and without --quiet.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cli_progress {
    char label[48];
    uint64_t total, done;
    double start, last_draw;
};

static void human(char *buf, size_t cap, double x)
{
    if (x >= 1e9)
        snprintf(buf, cap, "%.2fG", x / 1e9);
    else if (x >= 1e6)
        snprintf(buf, cap, "%.2fM", x / 1e6);
    else if (x >= 1e4)
        snprintf(buf, cap, "%.1fk", x / 1e3);
    else
        snprintf(buf, cap, "%.0f", x);
}

static void duration(char *buf, size_t cap, double s)
{
    if (s < 0 || s > 359999)
        snprintf(buf, cap, "--:--");
    else if (s >= 3600)
        snprintf(buf, cap, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60,
                 (int)s % 60);
    else
        snprintf(buf, cap, "%02d:%02d", (int)s / 60, (int)s % 60);
}

static void draw(cli_progress *p, double now)
{
    double el = now - p->start;
    double rate = el > 0 ? (double)p->done / el : 0;
    char n[16], r[16], t[16], line[160];
    human(n, sizeof n, (double)p->done);
    human(r, sizeof r, rate);
    if (p->total > 0) {
        double f = (double)p->done / (double)p->total;
        if (f > 1)
            f = 1;
        char bar[26];
        int w = (int)(f * 24 + 0.5);
        for (int i = 0; i < 24; i++)
            bar[i] = i < w ? '#' : '.';
        bar[24] = '\0';
        char tot[16];
        human(tot, sizeof tot, (double)p->total);
        duration(t, sizeof t,
                 rate > 0 ? (double)(p->total - (p->done < p->total
                                                     ? p->done
                                                     : p->total)) / rate
                          : -1);
        snprintf(line, sizeof line, "%s [%s] %3.0f%% %s/%s  %s/s  ETA %s",
                 p->label, bar, f * 100, n, tot, r, t);
    } else {
        duration(t, sizeof t, el);
        snprintf(line, sizeof line, "%s %s  %s/s  %s", p->label, n, r, t);
    }
    fprintf(stderr, "\r%-79s", line);
    fflush(stderr);
    p->last_draw = now;
}

cli_progress *cli_progress_start(const char *label, uint64_t total)
{
    if (cli_quiet || !isatty(STDERR_FILENO))
        return NULL;
    const char *term = getenv("TERM");
    if (term != NULL && strcmp(term, "dumb") == 0)
        return NULL;
    cli_progress *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total;
    p->start = cli_now();
    draw(p, p->start);
    return p;
}

void cli_progress_update(cli_progress *p, uint64_t done)
{
    if (p == NULL)
        return;
    p->done = done;
    double now = cli_now();
    if (now - p->last_draw >= 0.1)
        draw(p, now);
}

void cli_progress_end(cli_progress *p)
{
    if (p == NULL)
        return;
    draw(p, cli_now());
    fputc('\n', stderr);
    free(p);
}
