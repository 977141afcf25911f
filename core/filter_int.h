/*
 * core/filter_int.h - what filter.c and filter_parse.c need from the
 * metadata map beyond its public API. Private to the core.
 *
 * Filters evaluate once per candidate record, so they look fields up
 * through iqdb__meta_find: no copy, no error message, no strlen.
 */
#ifndef IQDB_FILTER_INT_H
#define IQDB_FILTER_INT_H

#include <stddef.h>
#include <iqdb/iqdb.h>

/* The value stored under key[0..key_len) in m, or NULL when m is NULL or
 * has no such key. Borrowed: valid until m is changed or freed. Sets no
 * error message. Safe on a shared map from any number of threads. */
const iqdb_value *iqdb__meta_find(const iqdb_meta *m, const char *key,
                                  size_t key_len);

/* Approximate bytes held by m (0 for NULL), for memory statistics. */
size_t iqdb__meta_memory(const iqdb_meta *m);

#endif /* IQDB_FILTER_INT_H */
