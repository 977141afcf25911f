/*
 * tools/svg.h - the recall/QPS plot of iqdb bench as a self-contained SVG
 * file (no fonts, stylesheets or scripts from elsewhere), in the manner
 * of the ann-benchmarks plots: recall@k on a linear x axis, queries per
 * second on a log10 y axis, one line per series through the series'
 * Pareto frontier.
 *
 * Thread safety: there is no shared state; every function works on its
 * arguments alone.
 */
#ifndef IQDB_TOOLS_SVG_H
#define IQDB_TOOLS_SVG_H

#include <stddef.h>

/* One series of measured points: point i is (recall[i], qps[i]). The
 * arrays are borrowed for the duration of the call. */
typedef struct svg_series {
    const char *name; /* legend text, any bytes (escaped on output) */
    const double *recall;
    const double *qps;
    size_t n;
} svg_series;

/*
 * The Pareto frontier of n points: those that no other point beats in
 * both recall and QPS (at least as good in both, better in one). Points
 * whose recall or QPS is not finite, or whose QPS is not positive, are
 * never on it; of several identical points only the first is. Writes the
 * indexes of the frontier points, by recall ascending (and so by QPS
 * descending), to idx[0..n) and returns how many there are.
 */
size_t svg_pareto(const double *recall, const double *qps, size_t n,
                  size_t *idx);

/*
 * Write the plot of series[0..nseries) to path (created or truncated):
 * one <polyline> per series through its Pareto frontier, in order, with a
 * marker per frontier point, a colour and a marker shape per series, and
 * a legend with one <text> per series. The x axis runs from the lowest
 * plotted recall rounded down to a multiple of 0.05 up to 1; the y axis
 * spans whole decades around the plotted QPS. title may be NULL.
 *
 * Returns 0, or -1 with a message naming the file in err[0..errlen).
 */
int svg_plot_write(const char *path, const char *title,
                   const svg_series *series, size_t nseries, char *err,
                   size_t errlen);

#endif /* IQDB_TOOLS_SVG_H */
