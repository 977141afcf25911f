/*
 * core/serial_int.h - byte encodings of ids, metadata and record batches
 * (the layout is at the top of serial.c). Private to the core.
 */
#ifndef IQDB_SERIAL_INT_H
#define IQDB_SERIAL_INT_H

#include <stddef.h>
#include <stdint.h>
#include <iqdb/iqdb.h>

/* A growable output buffer. Writes after an allocation failure are
 * dropped and `oom` stays set: check it once at the end. */
typedef struct iqdb_buf {
    unsigned char *p;
    size_t len, cap;
    int oom;
} iqdb_buf;

void iqdb__buf_init(iqdb_buf *b);
void iqdb__buf_free(iqdb_buf *b);
void iqdb__buf_put(iqdb_buf *b, const void *src, size_t n);
void iqdb__buf_u8(iqdb_buf *b, uint8_t v);
void iqdb__buf_u16(iqdb_buf *b, uint16_t v);
void iqdb__buf_u32(iqdb_buf *b, uint32_t v);
void iqdb__buf_u64(iqdb_buf *b, uint64_t v);
void iqdb__buf_f32s(iqdb_buf *b, const float *v, size_t n);

/* A bounds-checked reader: every get returns -1 (consuming nothing) when
 * fewer bytes are left than asked for. */
typedef struct iqdb_rd {
    const unsigned char *p;
    size_t len, off;
} iqdb_rd;

void iqdb__rd_init(iqdb_rd *r, const void *p, size_t len);
int iqdb__rd_get(iqdb_rd *r, void *dst, size_t n);
int iqdb__rd_u8(iqdb_rd *r, uint8_t *v);
int iqdb__rd_u16(iqdb_rd *r, uint16_t *v);
int iqdb__rd_u32(iqdb_rd *r, uint32_t *v);
int iqdb__rd_u64(iqdb_rd *r, uint64_t *v);

void iqdb__enc_id(iqdb_buf *b, iqdb_id id);
void iqdb__enc_meta(iqdb_buf *b, const iqdb_meta *m);
/* Decode a map. Returns 0 and a new map (free with iqdb_meta_free),
 * IQDB_ECORRUPT with *why, or IQDB_ENOMEM. */
int iqdb__dec_meta(iqdb_rd *r, iqdb_meta **out, const char **why);

enum { IQDB_OP_UPSERT = 1, IQDB_OP_DELETE = 2 };

/* A decoded batch. Byte ids point into the decoded buffer, which must
 * outlive the batch; metadata and vectors are owned by the batch. */
typedef struct iqdb_batch {
    int op;
    uint32_t dim;
    size_t n;
    iqdb_record *recs;
    float *vecs;
    uint64_t *vec_at; /* upserts: where record i's vector starts in the
                         payload (bytes from its first) */
} iqdb_batch;

/* at (may be NULL): set at[i] to the offset in b where record i's vector
 * starts. */
void iqdb__enc_upserts(iqdb_buf *b, const iqdb_record *recs, size_t n,
                       uint32_t dim, uint64_t *at);
void iqdb__enc_delete(iqdb_buf *b, iqdb_id id);
/* Decode a batch of dimension want_dim (deletes carry none). Returns 0,
 * IQDB_ECORRUPT with *why naming the problem, or IQDB_ENOMEM. */
int iqdb__dec_batch(const void *p, size_t len, uint32_t want_dim,
                    iqdb_batch *bt, const char **why);
void iqdb__batch_free(iqdb_batch *bt);

#endif /* IQDB_SERIAL_INT_H */
