/*
 * sdk/template/template.c - a complete, minimal index plugin to copy.
 *
 * It answers queries exactly by scanning the slots it was given, honours
 * the allowed-slot bitmap and the predicate, and breaks distance ties by
 * the core's insertion order. Rename "template" everywhere (the module
 * name, the entry point prefix and the file name must agree) and replace
 * the scan with your index. Build it against the installed headers:
 *
 *   cc -O2 -fPIC -shared -fvisibility=hidden $(pkg-config --cflags iqdb) \
 *      -o template.so template.c
 *
 * and put template.so in a directory named by IQDB_PLUGIN_PATH, or
 * install it into $(pkg-config --variable=plugindir iqdb).
 */
#include <string.h>

#include <iqdb/plugin.h>
#include <iqdb/topk.h>

static const iqdb_host *host;

typedef struct tmpl {
    void *hctx;
    const iqdb_store_view *sv;
    uint64_t *slots; /* slots held, unordered */
    size_t n, cap;
} tmpl;

static int tmpl_create(const iqdb_index_init *init, void **out)
{
    if (init->nparams > 0)
        return host->set_error(init->hctx, IQDB_EPARAM,
                               "template: unknown parameter '%s'",
                               init->params[0].key);
    tmpl *t = host->calloc(1, sizeof *t);
    if (t == NULL)
        return IQDB_ENOMEM;
    t->hctx = init->hctx;
    t->sv = init->store;
    *out = t;
    return 0;
}

static void tmpl_destroy(void *index)
{
    tmpl *t = index;
    host->free(t->slots);
    host->free(t);
}

static int tmpl_add(void *index, const uint64_t *slots, size_t n)
{
    tmpl *t = index;
    if (t->n + n > t->cap) {
        size_t cap = (t->n + n) * 2;
        uint64_t *s = host->realloc(t->slots, cap * sizeof *s);
        if (s == NULL)
            return host->set_error(t->hctx, IQDB_ENOMEM, "template: no memory");
        t->slots = s;
        t->cap = cap;
    }
    memcpy(t->slots + t->n, slots, n * sizeof *slots);
    t->n += n;
    return 0;
}

static int tmpl_remove(void *index, const uint64_t *slots, size_t n)
{
    tmpl *t = index;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < t->n; j++)
            if (t->slots[j] == slots[i]) {
                t->slots[j] = t->slots[--t->n];
                break;
            }
    return 0;
}

static int tmpl_search(void *index, iqdb_search_args *a)
{
    tmpl *t = index;
    iqdb_topk_entry *buf = host->alloc(a->k * sizeof *buf);
    if (buf == NULL)
        return host->set_error(t->hctx, IQDB_ENOMEM, "template: no memory");
    iqdb_topk h;
    iqdb_topk_init(&h, buf, a->k);
    iqdb_dist_fn dist = host->kernels->dist[t->sv->metric];
    for (size_t i = 0; i < t->n; i++) {
        uint64_t s = t->slots[i];
        if (!iqdb_filter_arg_allows(a->filter, s))
            continue;
        float d = dist(a->query, t->sv->vector(t->sv->ctx, s), t->sv->dim);
        if (d <= iqdb_topk_bound(&h))
            iqdb_topk_offer(&h, d, s, t->sv->order(t->sv->ctx, s));
    }
    a->out_count = iqdb_topk_drain(&h, a->out);
    host->free(buf);
    return 0;
}

static const iqdb_index_ops tmpl_ops = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_index_ops),
    .name = "template",
    .description = "template plugin: exact scan",
    .caps = IQDB_CAP_EXACT | IQDB_CAP_FILTER_BITMAP |
            IQDB_CAP_FILTER_PREDICATE | IQDB_CAP_REMOVE,
    .create = tmpl_create,
    .destroy = tmpl_destroy,
    .add = tmpl_add,
    .remove = tmpl_remove,
    .search = tmpl_search,
};

static int tmpl_init(const iqdb_host *h, const iqdb_registrar *reg)
{
    host = h;
    return reg->register_index(reg->ctx, &tmpl_ops);
}

static const iqdb_module tmpl_module = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_module),
    .name = "template",
    .version = "0.1.0",
    .init = tmpl_init,
};

IQDB_PLUGIN_EXPORT const iqdb_module *template_LTX_iqdb_module(void);

const iqdb_module *template_LTX_iqdb_module(void)
{
    return &tmpl_module;
}
