/*
 * tests/plugins/saver.h - a fixture index that saves and loads its state
 * (the set of slots it holds, behind a magic number) with a format
 * version given by the including file, to test the snapshot's index
 * section: load on reopen, rebuild when the saved format is newer than
 * the plugin, and refusal when rebuilding is not allowed.
 */
#ifndef IQDB_SAVER_H
#define IQDB_SAVER_H

#include "fixture.h"

#define SAVER_MAGIC 0x53415645u /* "SAVE" */

/* Loads performed in this process: lets a test see load, not rebuild. */
static int saver_loads;

static int saver_save(void *i, const iqdb_writer *w)
{
    fx *f = i;
    uint32_t magic = SAVER_MAGIC;
    int r = w->write(w->ctx, &magic, sizeof magic);
    return r ? r : w->write(w->ctx, f->held, sizeof f->held);
}

static int saver_load(void *i, const iqdb_reader *rd, uint32_t version)
{
    fx *f = i;
    uint32_t magic;
    (void)version;
    if (rd->remaining != sizeof magic + sizeof f->held)
        return fx_host->set_error(NULL, IQDB_ECORRUPT, "saver: bad size");
    int r = rd->read(rd->ctx, &magic, sizeof magic);
    if (r == 0 && magic != SAVER_MAGIC)
        return fx_host->set_error(NULL, IQDB_ECORRUPT, "saver: bad magic");
    if (r == 0)
        r = rd->read(rd->ctx, f->held, sizeof f->held);
    if (r == 0)
        saver_loads++;
    return r;
}

static int saver_remove(void *i, const uint64_t *s, size_t n)
{
    fx *f = i;
    for (size_t j = 0; j < n; j++)
        f->held[s[j] / 64] &= ~((uint64_t)1 << (s[j] % 64));
    return 0;
}

#define SAVER_OPS(fmt)                                                       \
    {                                                                        \
        .abi_version = IQDB_ABI_VERSION, .struct_size = sizeof(iqdb_index_ops), \
        .name = "saver", .description = "test fixture: persists its slots",  \
        .caps = IQDB_CAP_EXACT | IQDB_CAP_FILTER_BITMAP | IQDB_CAP_REMOVE |  \
                IQDB_CAP_PERSIST,                                            \
        .format_version = (fmt), .create = fx_create, .destroy = fx_destroy, \
        .add = fx_add, .remove = saver_remove, .search = fx_search,          \
        .save = saver_save, .load = saver_load                               \
    }

#endif
