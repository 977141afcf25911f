/*
 * iqdb/topk.h - a bounded top-k selector for index plugins (header only).
 *
 * Keeps the k nearest candidates seen so far in a binary max-heap keyed by
 * (distance, insertion order), so results follow the core's ordering
 * promise: nearest first, equal distances by insertion order. Callers
 * usually test `d <= iqdb_topk_bound(h)` first (one compare per
 * candidate) and fetch the candidate's order only then.
 *
 *     iqdb_topk_entry buf[K];
 *     iqdb_topk h;
 *     iqdb_topk_init(&h, buf, k);
 *     for each slot s with distance d:
 *         if (d <= iqdb_topk_bound(&h))
 *             iqdb_topk_offer(&h, d, s, store->order(store->ctx, s));
 *     n = iqdb_topk_drain(&h, out);   // out sorted nearest first
 */
#ifndef IQDB_TOPK_H
#define IQDB_TOPK_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <iqdb/plugin.h>

typedef struct iqdb_topk_entry {
    float dist;
    uint64_t slot;
    uint64_t ord;
} iqdb_topk_entry;

typedef struct iqdb_topk {
    iqdb_topk_entry *e; /* caller's buffer of k entries */
    size_t n;
    size_t k;
} iqdb_topk;

static inline void iqdb_topk_init(iqdb_topk *h, iqdb_topk_entry *buf, size_t k)
{
    h->e = buf;
    h->n = 0;
    h->k = k;
}

/* Is a farther than b (larger distance, or equal and inserted later)? */
static inline int iqdb_topk_worse(const iqdb_topk_entry *a,
                                  const iqdb_topk_entry *b)
{
    return a->dist > b->dist || (a->dist == b->dist && a->ord > b->ord);
}

/* The distance a candidate must not exceed to enter (+inf until full). */
static inline float iqdb_topk_bound(const iqdb_topk *h)
{
    return h->n < h->k ? INFINITY : h->e[0].dist;
}

static inline void iqdb_topk__sift_down(iqdb_topk *h, size_t i)
{
    iqdb_topk_entry x = h->e[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && iqdb_topk_worse(&h->e[c + 1], &h->e[c]))
            c++;
        if (!iqdb_topk_worse(&h->e[c], &x))
            break;
        h->e[i] = h->e[c];
        i = c;
    }
    h->e[i] = x;
}

/* Offer a candidate; kept when the heap is not full or it beats the
 * current worst. Returns 1 when kept. */
static inline int iqdb_topk_offer(iqdb_topk *h, float dist, uint64_t slot,
                                  uint64_t ord)
{
    iqdb_topk_entry x = {dist, slot, ord};
    if (h->k == 0)
        return 0;
    if (h->n < h->k) {
        size_t i = h->n++;
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (!iqdb_topk_worse(&x, &h->e[p]))
                break;
            h->e[i] = h->e[p];
            i = p;
        }
        h->e[i] = x;
        return 1;
    }
    if (!iqdb_topk_worse(&h->e[0], &x))
        return 0;
    h->e[0] = x;
    iqdb_topk__sift_down(h, 0);
    return 1;
}

/* Empty the heap into out[0..n), nearest first; returns n. */
static inline size_t iqdb_topk_drain(iqdb_topk *h, iqdb_neighbor *out)
{
    size_t n = h->n;
    while (h->n > 0) {
        iqdb_topk_entry top = h->e[0];
        h->e[0] = h->e[--h->n];
        if (h->n > 0)
            iqdb_topk__sift_down(h, 0);
        out[h->n].slot = top.slot;
        out[h->n].dist = top.dist;
    }
    return n;
}

#endif /* IQDB_TOPK_H */
