/*
 * core/config.c - database configuration and per-query parameters.
 *
 * Both are plain containers: nothing is validated here beyond NULLs,
 * because the index plugin owns the meaning of its parameters and checks
 * them when the database opens or the query runs.
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include "iqdb_int.h"

static const char *const metric_names[] = {NULL, "euclidean", "cosine",
                                           "dot", "manhattan", "hamming"};

const char *iqdb_metric_name(iqdb_metric metric)
{
    if ((int)metric < 1 || (int)metric >= IQDB_M_COUNT)
        return NULL;
    return metric_names[metric];
}

int iqdb_metric_parse(const char *name, iqdb_metric *out)
{
    static const struct {
        const char *name;
        iqdb_metric m;
    } alias[] = {{"euclidean", IQDB_METRIC_EUCLIDEAN},
                 {"l2", IQDB_METRIC_EUCLIDEAN},
                 {"cosine", IQDB_METRIC_COSINE},
                 {"dot", IQDB_METRIC_DOT},
                 {"ip", IQDB_METRIC_DOT},
                 {"manhattan", IQDB_METRIC_MANHATTAN},
                 {"l1", IQDB_METRIC_MANHATTAN},
                 {"hamming", IQDB_METRIC_HAMMING}};
    if (name == NULL || out == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "metric: NULL argument");
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++) {
        if (strcasecmp(name, alias[i].name) == 0) {
            *out = alias[i].m;
            return 0;
        }
    }
    return iqdb__set_error(NULL, IQDB_EMETRIC,
                           "unknown metric '%s' (expected euclidean, cosine, "
                           "dot, manhattan or hamming)",
                           name);
}

int iqdb__kv_set(iqdb_kv **arr, size_t *n, const char *key,
                 const char *value)
{
    char *v = iqdb__strdup(value);
    if (v == NULL)
        return IQDB_ENOMEM;
    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*arr)[i].key, key) == 0) {
            iqdb__free((char *)(*arr)[i].value);
            (*arr)[i].value = v;
            return 0;
        }
    }
    char *k = iqdb__strdup(key);
    iqdb_kv *t = k ? iqdb__realloc(*arr, (*n + 1) * sizeof *t) : NULL;
    if (t == NULL) {
        iqdb__free(k);
        iqdb__free(v);
        return IQDB_ENOMEM;
    }
    t[*n].key = k;
    t[*n].value = v;
    *arr = t;
    (*n)++;
    return 0;
}

void iqdb__kv_free(iqdb_kv *arr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        iqdb__free((char *)arr[i].key);
        iqdb__free((char *)arr[i].value);
    }
    iqdb__free(arr);
}

iqdb_config *iqdb_config_new(uint32_t dim, iqdb_metric metric)
{
    iqdb_config *c = iqdb__calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->dim = dim;
    c->metric = (int)metric;
    c->fsync = IQDB_FSYNC_ALWAYS;
    c->period_ms = 100;
    c->rebuild = 1;
    c->compact_bytes = (uint64_t)64 << 20;
    c->index = iqdb__strdup("flat");
    if (c->index == NULL) {
        iqdb__free(c);
        return NULL;
    }
    return c;
}

void iqdb_config_free(iqdb_config *c)
{
    if (c == NULL)
        return;
    iqdb__free(c->index);
    iqdb__free(c->codec);
    iqdb__kv_free(c->params, c->nparams);
    for (size_t i = 0; i < c->ndirs; i++)
        iqdb__free(c->dirs[i]);
    iqdb__free(c->dirs);
    iqdb__free(c);
}

int iqdb_config_set_index(iqdb_config *c, const char *name)
{
    if (c == NULL || name == NULL || name[0] == '\0')
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "config: index name must be non-empty");
    char *n = iqdb__strdup(name);
    if (n == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "config: out of memory");
    iqdb__free(c->index);
    c->index = n;
    return 0;
}

int iqdb_config_set_param(iqdb_config *c, const char *key, const char *value)
{
    if (c == NULL || key == NULL || key[0] == '\0' || value == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "config: parameter key and value required");
    if (iqdb__kv_set(&c->params, &c->nparams, key, value) != 0)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "config: out of memory");
    return 0;
}

int iqdb_config_add_plugin_dir(iqdb_config *c, const char *dir)
{
    if (c == NULL || dir == NULL || dir[0] == '\0')
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "config: plugin directory required");
    char *d = iqdb__strdup(dir);
    char **t = d ? iqdb__realloc(c->dirs, (c->ndirs + 1) * sizeof *t) : NULL;
    if (t == NULL) {
        iqdb__free(d);
        return iqdb__set_error(NULL, IQDB_ENOMEM, "config: out of memory");
    }
    t[c->ndirs++] = d;
    c->dirs = t;
    return 0;
}

int iqdb_config_set_fsync(iqdb_config *c, iqdb_fsync policy,
                          uint32_t period_ms)
{
    if (c == NULL || (int)policy < IQDB_FSYNC_ALWAYS ||
        (int)policy > IQDB_FSYNC_NEVER ||
        (policy == IQDB_FSYNC_PERIODIC && period_ms == 0))
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "config: fsync policy must be always, never "
                               "or periodic with a period of at least 1 ms");
    c->fsync = (int)policy;
    if (policy == IQDB_FSYNC_PERIODIC)
        c->period_ms = period_ms;
    return 0;
}

int iqdb_config_set_compression(iqdb_config *c, const char *codec, int level)
{
    if (c == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "config: NULL config");
    char *n = NULL;
    if (codec != NULL && codec[0] != '\0' && strcmp(codec, "none") != 0 &&
        (n = iqdb__strdup(codec)) == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "config: out of memory");
    iqdb__free(c->codec);
    c->codec = n;
    c->level = level;
    c->codec_set = 1;
    return 0;
}

int iqdb_config_set_readonly(iqdb_config *c, int readonly)
{
    if (c == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "config: NULL config");
    c->readonly = readonly != 0;
    return 0;
}

int iqdb_config_set_rebuild(iqdb_config *c, int allow)
{
    if (c == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "config: NULL config");
    c->rebuild = allow != 0;
    return 0;
}

int iqdb_config_set_strict_recovery(iqdb_config *c, int strict)
{
    if (c == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "config: NULL config");
    c->strict_recovery = strict != 0;
    return 0;
}

int iqdb_config_set_compact_bytes(iqdb_config *c, uint64_t bytes)
{
    if (c == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "config: NULL config");
    c->compact_bytes = bytes;
    return 0;
}

iqdb_params *iqdb_params_new(void)
{
    return iqdb__calloc(1, sizeof(iqdb_params));
}

void iqdb_params_free(iqdb_params *p)
{
    if (p == NULL)
        return;
    iqdb__kv_free(p->kv, p->n);
    iqdb__free(p);
}

int iqdb_params_set(iqdb_params *p, const char *key, const char *value)
{
    if (p == NULL || key == NULL || key[0] == '\0' || value == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "params: key and value required");
    if (iqdb__kv_set(&p->kv, &p->n, key, value) != 0)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "params: out of memory");
    return 0;
}
