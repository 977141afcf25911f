/*
 * tools/svg.c - the recall/QPS plot of iqdb bench (see svg.h).
 *
 * The file is plain SVG 1.1 with presentation attributes only, so it
 * renders the same in browsers, image viewers and XML tools, and parses
 * with any XML parser: every piece of text is escaped and bytes that are
 * not valid UTF-8, or not allowed in XML 1.0, are replaced by '?'.
 *
 * Layout (user units = pixels):
 *
 *   +--------------------------------------------------------------+
 *   |                        title                                 |
 *   |  QPS   +--------------------------------+   legend           |
 *   |  (log) |  plot area: grid, series lines |   marker  name     |
 *   |        +--------------------------------+   ...              |
 *   |                     recall@k                                 |
 *   +--------------------------------------------------------------+
 *
 * The legend sits right of the plot area and its width follows the
 * longest series name, so the lines are never hidden under it.
 */
#include "svg.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLOT_LEFT 80.0
#define PLOT_TOP 56.0
#define PLOT_W 620.0
#define PLOT_H 420.0
#define PLOT_BOTTOM 64.0
#define LEGEND_GAP 24.0
#define LEGEND_ROW 20.0
/* Rough advance widths of the 12px legend font and the 16px bold title
 * font (sans-serif, generous): an estimate is all SVG without font
 * metrics allows. */
#define CHAR_W 7.5
#define TITLE_CHAR_W 10.0
#define MARK_R 4.5
/* Recall axis ticks and the rounding of its lower end. */
#define RECALL_STEP 0.05

/* Colour-blind friendly first (Okabe and Ito), then further dark hues. */
static const char *const colours[] = {
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00",
    "#56b4e9", "#333333", "#8e5bb5", "#8c6d46", "#7a9a01",
};
#define NCOLOURS (sizeof(colours) / sizeof(colours[0]))

enum shape {
    SHAPE_CIRCLE,
    SHAPE_SQUARE,
    SHAPE_TRIANGLE_UP,
    SHAPE_DIAMOND,
    SHAPE_TRIANGLE_DOWN,
    SHAPE_PLUS,
    SHAPE_CROSS,
    SHAPE_COUNT
};

/* The axis ranges and the mapping of data to picture coordinates. */
typedef struct frame {
    double xmin, xmax; /* recall */
    int emin, emax;    /* QPS decades: 10^emin .. 10^emax */
} frame;

__attribute__((format(printf, 3, 4))) static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Pareto frontier                                                      */

static int plottable(double recall, double qps)
{
    return isfinite(recall) && isfinite(qps) && qps > 0.0;
}

/* Does point a come before point b in the sweep order: recall
 * descending, then QPS descending, then input order? */
static int sweep_before(const double *recall, const double *qps, size_t a,
                        size_t b)
{
    if (recall[a] != recall[b])
        return recall[a] > recall[b];
    if (qps[a] != qps[b])
        return qps[a] > qps[b];
    return a < b;
}

/*
 * Sweep from the highest recall down keeping the best QPS seen so far: a
 * point is on the frontier exactly when its QPS beats every point with
 * at least its recall. Insertion sort: a series has a handful of sweep
 * points, and it needs no allocation.
 */
size_t svg_pareto(const double *recall, const double *qps, size_t n,
                  size_t *idx)
{
    size_t m = 0, out = 0, i, j;
    double best = -INFINITY;

    for (i = 0; i < n; i++) {
        if (!plottable(recall[i], qps[i]))
            continue;
        for (j = m; j > 0 && sweep_before(recall, qps, i, idx[j - 1]); j--)
            idx[j] = idx[j - 1];
        idx[j] = i;
        m++;
    }
    for (i = 0; i < m; i++)
        if (qps[idx[i]] > best) {
            best = qps[idx[i]];
            idx[out++] = idx[i];
        }
    /* Reverse into recall ascending. */
    for (i = 0; i < out / 2; i++) {
        size_t t = idx[i];

        idx[i] = idx[out - 1 - i];
        idx[out - 1 - i] = t;
    }
    return out;
}

/* ------------------------------------------------------------------ */
/* Text                                                                 */

/* Length of the valid UTF-8 sequence at s[0..len) that XML 1.0 allows,
 * or 0 when there is none. */
static size_t utf8_char(const unsigned char *s, size_t len)
{
    unsigned cp;
    size_t n, i;

    if (s[0] < 0x80)
        return s[0] >= 0x20 || s[0] == '\t' || s[0] == '\n' ? 1 : 0;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        cp = s[0] & 0x1fu;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        cp = s[0] & 0x0fu;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    /* Overlong forms, surrogates, beyond U+10FFFF, U+FFFE/U+FFFF. */
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || cp == 0xfffe ||
        cp == 0xffff)
        return 0;
    return n;
}

/* s as XML character data or attribute text. */
static void put_text(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s), i = 0;

    while (i < len) {
        size_t n = utf8_char(p + i, len - i);

        if (n == 0) {
            fputc('?', f);
            i++;
            continue;
        }
        switch (p[i]) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        case '\n':
        case '\t': fputc(' ', f); break;
        default: fwrite(p + i, 1, n, f); break;
        }
        i += n;
    }
}

/* Characters (code points) in s, for the legend width. */
static size_t text_width(const char *s)
{
    size_t w = 0;

    for (; *s != '\0'; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

/* A decade label: 1 10 100 1k ... 100M, else 1e-3 or 1e12. */
static void decade_label(int e, char *buf, size_t len)
{
    static const char *const small[] = {"0.01", "0.1", "1", "10", "100"};
    static const char sfx[] = {'k', 'M', 'G'};

    if (e >= -2 && e <= 2)
        snprintf(buf, len, "%s", small[e + 2]);
    else if (e >= 3 && e <= 11)
        snprintf(buf, len, "%s%c", e % 3 == 0 ? "1" : e % 3 == 1 ? "10" : "100",
                 sfx[e / 3 - 1]);
    else
        snprintf(buf, len, "1e%d", e);
}

/* ------------------------------------------------------------------ */
/* Geometry                                                             */

static double px(const frame *fr, double recall)
{
    return PLOT_LEFT + (recall - fr->xmin) / (fr->xmax - fr->xmin) * PLOT_W;
}

static double py(const frame *fr, double qps)
{
    double t = (log10(qps) - fr->emin) / (double)(fr->emax - fr->emin);

    return PLOT_TOP + PLOT_H - t * PLOT_H;
}

/* The axis ranges from the frontier points of every series. */
static void frame_fit(frame *fr, const svg_series *series, size_t nseries,
                      size_t *const *front, const size_t *nfront)
{
    double rmin = INFINITY, qmin = INFINITY, qmax = -INFINITY;
    size_t s, i;

    for (s = 0; s < nseries; s++)
        for (i = 0; i < nfront[s]; i++) {
            size_t j = front[s][i];

            rmin = fmin(rmin, series[s].recall[j]);
            qmin = fmin(qmin, series[s].qps[j]);
            qmax = fmax(qmax, series[s].qps[j]);
        }
    fr->xmax = 1.0;
    fr->xmin = isfinite(rmin) ? floor(rmin / RECALL_STEP) * RECALL_STEP : 0.0;
    if (fr->xmin < 0.0)
        fr->xmin = 0.0;
    if (fr->xmin > 1.0 - RECALL_STEP)
        fr->xmin = 1.0 - RECALL_STEP;
    if (isfinite(qmin)) {
        fr->emin = (int)floor(log10(qmin));
        fr->emax = (int)ceil(log10(qmax));
    } else {
        fr->emin = 0;
        fr->emax = 1;
    }
    if (fr->emax <= fr->emin)
        fr->emax = fr->emin + 1;
}

/* A marker of shape sh at (x, y). */
static void put_marker(FILE *f, int sh, const char *colour, double x,
                       double y)
{
    double r = MARK_R;

    switch (sh) {
    case SHAPE_CIRCLE:
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\"/>",
                x, y, r, colour);
        break;
    case SHAPE_SQUARE:
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                "fill=\"%s\"/>",
                x - r * 0.85, y - r * 0.85, r * 1.7, r * 1.7, colour);
        break;
    case SHAPE_TRIANGLE_UP:
    case SHAPE_TRIANGLE_DOWN: {
        double d = sh == SHAPE_TRIANGLE_UP ? 1.0 : -1.0;

        fprintf(f,
                "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" "
                "fill=\"%s\"/>",
                x, y - d * r * 1.15, x - r, y + d * r * 0.85, x + r,
                y + d * r * 0.85, colour);
        break;
    }
    case SHAPE_DIAMOND:
        fprintf(f,
                "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\" "
                "fill=\"%s\"/>",
                x, y - r * 1.2, x + r * 1.2, y, x, y + r * 1.2, x - r * 1.2,
                y, colour);
        break;
    case SHAPE_PLUS:
        fprintf(f,
                "<path d=\"M%.1f %.1fH%.1fM%.1f %.1fV%.1f\" stroke=\"%s\" "
                "stroke-width=\"2\" fill=\"none\"/>",
                x - r * 1.2, y, x + r * 1.2, x, y - r * 1.2, y + r * 1.2,
                colour);
        break;
    default:
        fprintf(f,
                "<path d=\"M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f\" "
                "stroke=\"%s\" stroke-width=\"2\" fill=\"none\"/>",
                x - r, y - r, x + r, y + r, x - r, y + r, x + r, y - r,
                colour);
        break;
    }
}

/* ------------------------------------------------------------------ */
/* The picture                                                          */

static void put_grid(FILE *f, const frame *fr)
{
    double step = fr->xmax - fr->xmin > 0.5 ? 2 * RECALL_STEP : RECALL_STEP;
    /* Recall ticks on whole multiples of the step. */
    double first = ceil(fr->xmin / step - 1e-9) * step;
    double bottom = PLOT_TOP + PLOT_H;
    char label[32];
    int i, e, m;

    fprintf(f, "<g stroke=\"#e4e4e4\" stroke-width=\"1\">\n");
    for (e = fr->emin; e < fr->emax; e++)
        for (m = 2; m <= 9; m++) {
            double y = py(fr, m * pow(10.0, e));

            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n",
                    PLOT_LEFT, y, PLOT_LEFT + PLOT_W, y);
        }
    fprintf(f, "</g>\n<g stroke=\"#bdbdbd\" stroke-width=\"1\">\n");
    for (e = fr->emin; e <= fr->emax; e++) {
        double y = py(fr, pow(10.0, e));

        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n",
                PLOT_LEFT, y, PLOT_LEFT + PLOT_W, y);
    }
    for (i = 0; first + i * step <= fr->xmax + 1e-9; i++) {
        double x = px(fr, first + i * step);

        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n",
                x, PLOT_TOP, x, bottom);
    }
    fprintf(f, "</g>\n<g font-size=\"12\" fill=\"#222222\">\n");
    for (e = fr->emin; e <= fr->emax; e++) {
        decade_label(e, label, sizeof(label));
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                PLOT_LEFT - 8, py(fr, pow(10.0, e)) + 4, label);
    }
    for (i = 0; first + i * step <= fr->xmax + 1e-9; i++) {
        double v = first + i * step;

        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.2f"
                "</text>\n",
                px(fr, v), bottom + 18, v);
    }
    fprintf(f, "</g>\n");
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
            "fill=\"none\" stroke=\"#555555\" stroke-width=\"1\"/>\n",
            PLOT_LEFT, PLOT_TOP, PLOT_W, PLOT_H);
}

static void put_labels(FILE *f, const char *title, double width)
{
    double bottom = PLOT_TOP + PLOT_H;
    double ymid = PLOT_TOP + PLOT_H / 2;

    if (title != NULL) {
        fprintf(f,
                "<text x=\"%.1f\" y=\"30\" font-size=\"16\" "
                "font-weight=\"bold\" text-anchor=\"middle\" "
                "fill=\"#111111\">",
                width / 2);
        put_text(f, title);
        fprintf(f, "</text>\n");
    }
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" "
            "text-anchor=\"middle\" fill=\"#111111\">recall@k (fraction of "
            "the true k nearest neighbours found)</text>\n",
            PLOT_LEFT + PLOT_W / 2, bottom + 44);
    fprintf(f,
            "<text x=\"22\" y=\"%.1f\" font-size=\"13\" "
            "text-anchor=\"middle\" fill=\"#111111\" "
            "transform=\"rotate(-90 22 %.1f)\">queries per second "
            "(log scale)</text>\n",
            ymid, ymid);
}

static void put_series(FILE *f, const frame *fr, const svg_series *s,
                       const size_t *front, size_t nfront, size_t which)
{
    const char *colour = colours[which % NCOLOURS];
    int sh = (int)(which % SHAPE_COUNT);
    size_t i;

    fprintf(f, "<g class=\"series\">\n<title>");
    put_text(f, s->name != NULL ? s->name : "");
    fprintf(f, "</title>\n<polyline fill=\"none\" stroke=\"%s\" "
               "stroke-width=\"2\" stroke-linejoin=\"round\" points=\"",
            colour);
    for (i = 0; i < nfront; i++)
        fprintf(f, "%s%.1f,%.1f", i ? " " : "", px(fr, s->recall[front[i]]),
                py(fr, s->qps[front[i]]));
    fprintf(f, "\"/>\n");
    for (i = 0; i < nfront; i++) {
        put_marker(f, sh, colour, px(fr, s->recall[front[i]]),
                   py(fr, s->qps[front[i]]));
        fputc('\n', f);
    }
    fprintf(f, "</g>\n");
}

static void put_legend(FILE *f, const svg_series *series, size_t nseries,
                       double x0)
{
    size_t i;

    fprintf(f, "<g class=\"legend\" font-size=\"12\" fill=\"#111111\">\n");
    for (i = 0; i < nseries; i++) {
        double y = PLOT_TOP + 12 + LEGEND_ROW * (double)i;
        const char *colour = colours[i % NCOLOURS];

        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"%s\" stroke-width=\"2\"/>",
                x0, y, x0 + 28, y, colour);
        put_marker(f, (int)(i % SHAPE_COUNT), colour, x0 + 14, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", x0 + 36, y + 4);
        put_text(f, series[i].name != NULL ? series[i].name : "");
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</g>\n");
}

int svg_plot_write(const char *path, const char *title,
                   const svg_series *series, size_t nseries, char *err,
                   size_t errlen)
{
    size_t **front, *nfront, i, maxname = 0;
    double width, height, legend_x;
    frame fr;
    FILE *f;
    int rc = -1;

    front = calloc(nseries ? nseries : 1, sizeof(*front));
    nfront = calloc(nseries ? nseries : 1, sizeof(*nfront));
    if (front == NULL || nfront == NULL) {
        seterr(err, errlen, "%s: out of memory", path);
        goto done;
    }
    for (i = 0; i < nseries; i++) {
        front[i] = malloc((series[i].n ? series[i].n : 1) * sizeof(size_t));
        if (front[i] == NULL) {
            seterr(err, errlen, "%s: out of memory", path);
            goto done;
        }
        nfront[i] = svg_pareto(series[i].recall, series[i].qps, series[i].n,
                               front[i]);
        if (series[i].name != NULL && text_width(series[i].name) > maxname)
            maxname = text_width(series[i].name);
    }
    frame_fit(&fr, series, nseries, front, nfront);
    legend_x = PLOT_LEFT + PLOT_W + LEGEND_GAP;
    width = fmax(legend_x + 36 + CHAR_W * (double)maxname + 24,
                 title != NULL ? TITLE_CHAR_W * (double)text_width(title) + 40
                               : 0.0);
    height = fmax(PLOT_TOP + PLOT_H + PLOT_BOTTOM,
                  PLOT_TOP + 24 + LEGEND_ROW * (double)nseries);

    f = fopen(path, "w");
    if (f == NULL) {
        seterr(err, errlen, "%s: %s", path, strerror(errno));
        goto done;
    }
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" "
            "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
            "font-family=\"sans-serif\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n",
            width, height, width, height);
    put_labels(f, title, width);
    put_grid(f, &fr);
    for (i = 0; i < nseries; i++)
        put_series(f, &fr, &series[i], front[i], nfront[i], i);
    put_legend(f, series, nseries, legend_x);
    fprintf(f, "</svg>\n");
    if (ferror(f)) {
        seterr(err, errlen, "%s: write error", path);
        fclose(f);
    } else if (fclose(f) != 0) {
        seterr(err, errlen, "%s: %s", path, strerror(errno));
    } else {
        rc = 0;
    }
done:
    for (i = 0; front != NULL && i < nseries; i++)
        free(front[i]);
    free(front);
    free(nfront);
    return rc;
}
