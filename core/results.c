/*
 * core/results.c - search results owned by the caller.
 *
 * One allocation holds the hit arrays of every query; byte-string ids are
 * copied into a second block; metadata is shared by reference with the
 * store (stored maps are immutable), so results stay valid after later
 * writes and after the database is closed.
 */
#include "config.h"

#include <string.h>

#include "iqdb_int.h"

struct iqdb_results {
    size_t nq;
    size_t *offsets; /* nq + 1 */
    iqdb_hit *hits;
    unsigned char *bytes;
};

int iqdb__results_build(iqdb *db, const iqdb_neighbor *nb,
                        const size_t *counts, size_t nq, size_t k,
                        iqdb_results **out)
{
    const iqdb_store *s = &db->store;
    size_t total = 0, nbytes = 0;
    for (size_t q = 0; q < nq; q++) {
        total += counts[q];
        for (size_t i = 0; i < counts[q]; i++) {
            const iqdb_id *id = &s->ids[nb[q * k + i].slot];
            if (id->kind == IQDB_ID_BYTES)
                nbytes += id->len;
        }
    }
    iqdb_results *r = iqdb__calloc(1, sizeof *r);
    if (r == NULL)
        return IQDB_ENOMEM;
    r->nq = nq;
    r->offsets = iqdb__malloc((nq + 1) * sizeof *r->offsets);
    r->hits = iqdb__malloc(total * sizeof *r->hits);
    r->bytes = nbytes ? iqdb__malloc(nbytes) : NULL;
    if (r->offsets == NULL || r->hits == NULL || (nbytes && !r->bytes)) {
        iqdb__free(r->offsets);
        iqdb__free(r->hits);
        iqdb__free(r->bytes);
        iqdb__free(r);
        return IQDB_ENOMEM;
    }
    size_t h = 0, b = 0;
    for (size_t q = 0; q < nq; q++) {
        r->offsets[q] = h;
        for (size_t i = 0; i < counts[q]; i++, h++) {
            const iqdb_neighbor *n = &nb[q * k + i];
            iqdb_hit *hit = &r->hits[h];
            hit->id = s->ids[n->slot];
            if (hit->id.kind == IQDB_ID_BYTES) {
                memcpy(r->bytes + b, hit->id.v.bytes, hit->id.len);
                hit->id.v.bytes = r->bytes + b;
                b += hit->id.len;
            }
            hit->distance = db->kernels->finalize(db->metric, n->dist);
            hit->meta = s->meta[n->slot] ? iqdb__meta_ref(s->meta[n->slot])
                                         : NULL;
        }
    }
    r->offsets[nq] = h;
    *out = r;
    return 0;
}

size_t iqdb_results_nqueries(const iqdb_results *r)
{
    return r ? r->nq : 0;
}

size_t iqdb_results_count(const iqdb_results *r, size_t q)
{
    if (r == NULL || q >= r->nq)
        return 0;
    return r->offsets[q + 1] - r->offsets[q];
}

const iqdb_hit *iqdb_results_hits(const iqdb_results *r, size_t q)
{
    if (iqdb_results_count(r, q) == 0)
        return NULL;
    return r->hits + r->offsets[q];
}

void iqdb_results_free(iqdb_results *r)
{
    if (r == NULL)
        return;
    size_t total = r->offsets[r->nq];
    for (size_t i = 0; i < total; i++)
        iqdb_meta_free((iqdb_meta *)r->hits[i].meta);
    iqdb__free(r->offsets);
    iqdb__free(r->hits);
    iqdb__free(r->bytes);
    iqdb__free(r);
}
