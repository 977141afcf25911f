/*
 * core/plugin_loader.c - finding, checking and registering plugins.
 *
 * Modules are opened with GNU libltdl, always under one process-wide
 * lock (libltdl keeps global state), and stay resident: index instances
 * keep pointers into them. The descriptor a module's entry point returns
 * is checked - ABI major equal, minor not newer than ours, table large
 * enough, required slots present - before any other code of the module
 * runs. Registrations made by a module's init are committed only when
 * init succeeds, so a failing module leaves nothing behind.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#if defined(HAVE_GETAUXVAL)
#include <sys/auxv.h>
#endif

#include <ltdl.h>

#include "iqdb_int.h"

#ifndef IQDB_PLUGIN_DIR
#define IQDB_PLUGIN_DIR "/usr/local/lib/iqdb/plugins"
#endif

typedef struct module {
    char *name;
    char *file;
    const iqdb_module *desc;
    lt_dlhandle handle;
} module;

typedef struct entry {
    iqdb_plugin_kind kind;
    const char *name;
    const void *ops; /* iqdb_index_ops or iqdb_codec_ops */
    module *mod;
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int ltdl_ready;
static char **api_dirs;
static size_t n_api_dirs;
static module **modules;
static size_t n_modules;
static entry *entries;
static size_t n_entries;

/* Registrations collected while one module's init runs. */
typedef struct pending {
    entry *e;
    size_t n;
    int err;
    const char *file;
} pending;

static int ensure_ltdl(void)
{
    if (ltdl_ready)
        return 0;
    if (lt_dlinit() != 0)
        return iqdb__set_error(NULL, IQDB_EPLUGIN, "libltdl: %s",
                               lt_dlerror());
    ltdl_ready = 1;
    return 0;
}

int iqdb_plugin_add_dir(const char *dir)
{
    if (dir == NULL || dir[0] == '\0')
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "plugin directory must be non-empty");
    char *d = iqdb__strdup(dir);
    if (d == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory");
    pthread_mutex_lock(&lock);
    char **t = iqdb__realloc(api_dirs, (n_api_dirs + 1) * sizeof *t);
    if (t == NULL) {
        pthread_mutex_unlock(&lock);
        iqdb__free(d);
        return iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory");
    }
    t[n_api_dirs++] = d;
    api_dirs = t;
    pthread_mutex_unlock(&lock);
    return 0;
}

const char *iqdb_plugin_dir(void)
{
    return IQDB_PLUGIN_DIR;
}

/* IQDB_PLUGIN_PATH, unless the process runs with elevated privileges. */
static const char *env_path(void)
{
#if defined(HAVE_GETAUXVAL)
    if (getauxval(AT_SECURE))
        return NULL;
#endif
#if defined(HAVE_SECURE_GETENV)
    return secure_getenv("IQDB_PLUGIN_PATH");
#else
    return getenv("IQDB_PLUGIN_PATH");
#endif
}

/* Calls fn(dir, arg) for each search directory in order until it returns
 * non-zero; returns that value or 0. */
static int each_dir(char *const *extra, size_t nextra,
                    int (*fn)(const char *dir, void *arg), void *arg)
{
    int r;
    for (size_t i = 0; i < n_api_dirs; i++)
        if ((r = fn(api_dirs[i], arg)) != 0)
            return r;
    for (size_t i = 0; i < nextra; i++)
        if ((r = fn(extra[i], arg)) != 0)
            return r;
    const char *env = env_path();
    if (env != NULL) {
        char buf[4096];
        const char *p = env;
        while (*p) {
            const char *colon = strchr(p, ':');
            size_t len = colon ? (size_t)(colon - p) : strlen(p);
            if (len > 0 && len < sizeof buf) {
                memcpy(buf, p, len);
                buf[len] = '\0';
                if ((r = fn(buf, arg)) != 0)
                    return r;
            }
            p += len + (colon != NULL);
        }
    }
    return fn(IQDB_PLUGIN_DIR, arg);
}

static module *module_by_name(const char *name)
{
    for (size_t i = 0; i < n_modules; i++)
        if (strcmp(modules[i]->name, name) == 0)
            return modules[i];
    return NULL;
}

static entry *entry_by_name(iqdb_plugin_kind kind, const char *name)
{
    for (size_t i = 0; i < n_entries; i++)
        if (entries[i].kind == kind && strcmp(entries[i].name, name) == 0)
            return &entries[i];
    return NULL;
}

int iqdb__plugin_name_valid(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static int check_abi(const char *file, const char *what, uint32_t v)
{
    uint32_t major = IQDB_ABI_VERSION_MAJOR(v), minor = IQDB_ABI_VERSION_MINOR(v);
    if (major != IQDB_ABI_MAJOR)
        return iqdb__set_error(NULL, IQDB_EABI,
                               "plugin %s: %s built for ABI %u.%u, this "
                               "core speaks ABI %u.%u (major must match)",
                               file, what, major, minor, IQDB_ABI_MAJOR,
                               IQDB_ABI_MINOR);
    if (minor > IQDB_ABI_MINOR)
        return iqdb__set_error(NULL, IQDB_EABI,
                               "plugin %s: %s built for ABI %u.%u, newer "
                               "than this core's ABI %u.%u",
                               file, what, major, minor, IQDB_ABI_MAJOR,
                               IQDB_ABI_MINOR);
    return 0;
}

#define REQUIRE_SLOT(ops, slot, file, table)                                 \
    do {                                                                     \
        if ((ops)->slot == NULL)                                             \
            return iqdb__set_error(NULL, IQDB_EPLUGIN,                      \
                                   "plugin %s: required slot '%s' of %s "    \
                                   "is NULL",                                \
                                   file, #slot, table);                      \
    } while (0)

static int check_table_size(const char *file, const char *table,
                            uint32_t have, size_t need)
{
    if (have < need)
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: table %s is too small "
                               "(struct_size %u, ABI 1.0 needs %zu)",
                               file, table, have, need);
    return 0;
}

static int check_index_ops(const char *file, const iqdb_index_ops *ops)
{
    int r;
    if (ops == NULL)
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: NULL iqdb_index_ops", file);
    if ((r = check_abi(file, "iqdb_index_ops", ops->abi_version)) != 0)
        return r;
    if ((r = check_table_size(file, "iqdb_index_ops", ops->struct_size,
                              IQDB__V1_SIZE(iqdb_index_ops, stats))) != 0)
        return r;
    if (!iqdb__plugin_name_valid(ops->name))
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: index name missing or invalid "
                               "(letters, digits, '_' and '-', 1 to 64)",
                               file);
    REQUIRE_SLOT(ops, create, file, "iqdb_index_ops");
    REQUIRE_SLOT(ops, destroy, file, "iqdb_index_ops");
    REQUIRE_SLOT(ops, add, file, "iqdb_index_ops");
    REQUIRE_SLOT(ops, search, file, "iqdb_index_ops");
    if ((ops->caps & IQDB_CAP_REMOVE) && ops->remove == NULL)
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: index '%s' claims IQDB_CAP_REMOVE "
                               "but slot 'remove' is NULL", file, ops->name);
    if ((ops->caps & IQDB_CAP_BATCH) && ops->search_batch == NULL)
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: index '%s' claims IQDB_CAP_BATCH "
                               "but slot 'search_batch' is NULL",
                               file, ops->name);
    if ((ops->caps & IQDB_CAP_PERSIST) &&
        (ops->save == NULL || ops->load == NULL))
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: index '%s' claims "
                               "IQDB_CAP_PERSIST but 'save' or 'load' is "
                               "NULL", file, ops->name);
    return 0;
}

static int check_codec_ops(const char *file, const iqdb_codec_ops *ops)
{
    int r;
    if (ops == NULL)
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: NULL iqdb_codec_ops", file);
    if ((r = check_abi(file, "iqdb_codec_ops", ops->abi_version)) != 0)
        return r;
    if ((r = check_table_size(file, "iqdb_codec_ops", ops->struct_size,
                              IQDB__V1_SIZE(iqdb_codec_ops, decompress))) != 0)
        return r;
    if (!iqdb__plugin_name_valid(ops->name))
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: codec name missing or invalid",
                               file);
    if (ops->id == IQDB_CODEC_ID_NONE)
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: codec '%s' uses reserved id 0",
                               file, ops->name);
    REQUIRE_SLOT(ops, bound, file, "iqdb_codec_ops");
    REQUIRE_SLOT(ops, compress, file, "iqdb_codec_ops");
    REQUIRE_SLOT(ops, decompress, file, "iqdb_codec_ops");
    return 0;
}

static int add_pending(pending *p, iqdb_plugin_kind kind, const char *name,
                       const void *ops)
{
    if (entry_by_name(kind, name) != NULL) {
        p->err = iqdb__set_error(NULL, IQDB_EEXIST,
                                 "plugin %s: %s '%s' is already registered",
                                 p->file,
                                 kind == IQDB_PLUGIN_INDEX ? "index" : "codec",
                                 name);
        return p->err;
    }
    entry *t = iqdb__realloc(p->e, (p->n + 1) * sizeof *t);
    if (t == NULL)
        return p->err = iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory");
    t[p->n].kind = kind;
    t[p->n].name = name;
    t[p->n].ops = ops;
    t[p->n].mod = NULL;
    p->e = t;
    p->n++;
    return 0;
}

static int reg_index(void *ctx, const iqdb_index_ops *ops)
{
    pending *p = ctx;
    int r = check_index_ops(p->file, ops);
    if (r != 0)
        return p->err = r;
    return add_pending(p, IQDB_PLUGIN_INDEX, ops->name, ops);
}

static int reg_codec(void *ctx, const iqdb_codec_ops *ops)
{
    pending *p = ctx;
    int r = check_codec_ops(p->file, ops);
    if (r != 0)
        return p->err = r;
    return add_pending(p, IQDB_PLUGIN_CODEC, ops->name, ops);
}

static int check_descriptor(const char *file, const iqdb_module *d)
{
    int r;
    if (d == NULL)
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: entry point returned NULL", file);
    if ((r = check_abi(file, "module descriptor", d->abi_version)) != 0)
        return r;
    if ((r = check_table_size(file, "iqdb_module", d->struct_size,
                              IQDB__V1_SIZE(iqdb_module, init))) != 0)
        return r;
    if (!iqdb__plugin_name_valid(d->name))
        return iqdb__set_error(NULL, IQDB_EPLUGIN,
                               "plugin %s: module name missing or invalid",
                               file);
    REQUIRE_SLOT(d, init, file, "iqdb_module");
    return 0;
}

/* The module name of a file: base name without directory and extension. */
static char *module_name_of(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strcspn(base, ".");
    char *n = iqdb__malloc(len + 1);
    if (n != NULL) {
        memcpy(n, base, len);
        n[len] = '\0';
    }
    return n;
}

static int commit_module(module *m, pending *p)
{
    module **mt = iqdb__realloc(modules, (n_modules + 1) * sizeof *mt);
    if (mt == NULL)
        return IQDB_ENOMEM;
    modules = mt;
    entry *et = iqdb__realloc(entries, (n_entries + p->n) * sizeof *et);
    if (et == NULL)
        return IQDB_ENOMEM;
    entries = et;
    for (size_t i = 0; i < p->n; i++) {
        p->e[i].mod = m;
        entries[n_entries++] = p->e[i];
    }
    modules[n_modules++] = m;
    return 0;
}

/* Open, check and initialise the module at path (no extension needed).
 * Called with the lock held. */
static int open_module(const char *path)
{
    int r;
    char *name = module_name_of(path);
    if (name == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory");
    if (module_by_name(name) != NULL) {
        iqdb__free(name);
        return 0;
    }
    lt_dladvise adv;
    lt_dladvise_init(&adv);
    lt_dladvise_ext(&adv);
    lt_dladvise_local(&adv);
    lt_dlhandle h = lt_dlopenadvise(path, adv);
    lt_dladvise_destroy(&adv);
    if (h == NULL) {
        r = iqdb__set_error(NULL, IQDB_EPLUGIN, "plugin %s: cannot load: %s",
                            path, lt_dlerror());
        iqdb__free(name);
        return r;
    }
    const lt_dlinfo *info = lt_dlgetinfo(h);
    const char *file = info && info->filename ? info->filename : path;
    iqdb_module_entry_fn fn;
    *(void **)&fn = lt_dlsym(h, IQDB_MODULE_ENTRY);
    if (fn == NULL) {
        r = iqdb__set_error(NULL, IQDB_EPLUGIN,
                            "plugin %s: no entry point [%s_LTX_%s] or [%s] "
                            "in shared library",
                            file, name, IQDB_MODULE_ENTRY, IQDB_MODULE_ENTRY);
        goto fail_close;
    }
    const iqdb_module *d = fn();
    if ((r = check_descriptor(file, d)) != 0)
        goto fail_close;
    pending p = {NULL, 0, 0, file};
    iqdb_registrar reg = {IQDB_ABI_VERSION, sizeof reg, &p, reg_index,
                          reg_codec};
    r = d->init(iqdb__host(), &reg);
    if (r == 0 && p.err != 0)
        r = p.err; /* a registration failed and init ignored it */
    if (r == 0 && p.n == 0)
        r = iqdb__set_error(NULL, IQDB_EPLUGIN,
                            "plugin %s: init registered nothing", file);
    else if (r != 0 && p.err == 0)
        r = iqdb__set_error(NULL, r < 0 ? r : IQDB_EPLUGIN,
                            "plugin %s: init failed: %s", file,
                            iqdb__last_error()[0] ? iqdb__last_error()
                                                  : iqdb_strerror(r));
    module *m = NULL;
    if (r == 0) {
        m = iqdb__calloc(1, sizeof *m);
        if (m) {
            m->name = name;
            m->file = iqdb__strdup(file);
            m->desc = d;
            m->handle = h;
        }
        if (m == NULL || m->file == NULL || commit_module(m, &p) != 0) {
            if (m)
                iqdb__free(m->file);
            iqdb__free(m);
            r = iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory");
        }
    }
    iqdb__free(p.e);
    if (r != 0)
        goto fail_close;
    lt_dlmakeresident(h);
    return 0;
fail_close:
    lt_dlclose(h);
    iqdb__free(name);
    return r;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

typedef struct find_arg {
    const char *name;
    char found[4096];
    char looked[2048];
} find_arg;

static int find_in_dir(const char *dir, void *arg)
{
    find_arg *a = arg;
    static const char *const exts[] = {".la", ".so"};
    for (size_t i = 0; i < 2; i++) {
        char path[4096];
        int n = snprintf(path, sizeof path, "%s/%s%s", dir, a->name, exts[i]);
        if (n > 0 && (size_t)n < sizeof path && file_exists(path)) {
            snprintf(a->found, sizeof a->found, "%s", path);
            return 1;
        }
    }
    size_t used = strlen(a->looked);
    snprintf(a->looked + used, sizeof a->looked - used, "%s%s",
             used ? ", " : "", dir);
    return 0;
}

/* Called with the lock held. */
static int load_locked(const char *name, char *const *extra, size_t nextra)
{
    int r = ensure_ltdl();
    if (r != 0)
        return r;
    if (strchr(name, '/') != NULL)
        return open_module(name);
    if (!iqdb__plugin_name_valid(name))
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "plugin name '%s' is invalid", name);
    if (module_by_name(name) != NULL)
        return 0;
    find_arg *a = iqdb__calloc(1, sizeof *a);
    if (a == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory");
    a->name = name;
    if (each_dir(extra, nextra, find_in_dir, a))
        r = open_module(a->found);
    else
        r = iqdb__set_error(NULL, IQDB_ENOPLUGIN,
                            "plugin '%s' not found (looked for %s.la and "
                            "%s.so in: %s)",
                            name, name, name, a->looked);
    iqdb__free(a);
    return r;
}

int iqdb_plugin_load(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return iqdb__set_error(NULL, IQDB_EINVAL, "plugin name required");
    pthread_mutex_lock(&lock);
    int r = load_locked(name, NULL, 0);
    pthread_mutex_unlock(&lock);
    return r;
}

static int load_dir(const char *dir, void *arg)
{
    int *count = arg;
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        char path[4096];
        int is_la = len > 3 && strcmp(de->d_name + len - 3, ".la") == 0;
        int is_so = len > 3 && strcmp(de->d_name + len - 3, ".so") == 0;
        if (!is_la && !is_so)
            continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >=
            (int)sizeof path)
            continue;
        if (is_so) {
            /* Prefer the .la beside it, when there is one. */
            char la[4096];
            snprintf(la, sizeof la, "%.*s.la", (int)(strlen(path) - 3), path);
            if (file_exists(la))
                continue;
        }
        size_t before = n_modules;
        if (open_module(path) != 0)
            iqdb__host()->log(IQDB_LOG_WARN, NULL, "%s", iqdb__last_error());
        else if (n_modules > before)
            (*count)++;
    }
    closedir(d);
    return 0;
}

int iqdb_plugin_load_all(void)
{
    int count = 0;
    pthread_mutex_lock(&lock);
    int r = ensure_ltdl();
    if (r == 0)
        each_dir(NULL, 0, load_dir, &count);
    pthread_mutex_unlock(&lock);
    return r != 0 ? r : count;
}

static int find_entry(iqdb_plugin_kind kind, const char *name,
                      char *const *extra, size_t nextra, const void **ops)
{
    pthread_mutex_lock(&lock);
    entry *e = entry_by_name(kind, name);
    int r = 0;
    if (e == NULL) {
        r = load_locked(name, extra, nextra);
        e = r == 0 ? entry_by_name(kind, name) : NULL;
        if (r == 0 && e == NULL)
            r = iqdb__set_error(NULL, IQDB_ENOPLUGIN,
                                "module '%s' is loaded but provides no %s "
                                "named '%s'",
                                name,
                                kind == IQDB_PLUGIN_INDEX ? "index" : "codec",
                                name);
    }
    if (e != NULL)
        *ops = e->ops;
    pthread_mutex_unlock(&lock);
    return r;
}

int iqdb__find_index(const char *name, char *const *extra, size_t nextra,
                     const iqdb_index_ops **ops)
{
    return find_entry(IQDB_PLUGIN_INDEX, name, extra, nextra,
                      (const void **)ops);
}

int iqdb__find_codec(const char *name, uint32_t id,
                     const iqdb_codec_ops **ops)
{
    if (name != NULL)
        return find_entry(IQDB_PLUGIN_CODEC, name, NULL, 0,
                          (const void **)ops);
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_entries; i++) {
        const iqdb_codec_ops *c = entries[i].ops;
        if (entries[i].kind == IQDB_PLUGIN_CODEC && c->id == id) {
            *ops = c;
            pthread_mutex_unlock(&lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&lock);
    return iqdb__set_error(NULL, IQDB_ENOPLUGIN,
                           "no loaded codec has id %u", id);
}

int iqdb_plugin_list(iqdb_plugin_info **out, size_t *n)
{
    if (out == NULL || n == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "NULL argument");
    pthread_mutex_lock(&lock);
    iqdb_plugin_info *l = iqdb__calloc(n_entries ? n_entries : 1, sizeof *l);
    if (l == NULL) {
        pthread_mutex_unlock(&lock);
        return iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n_entries; i++) {
        const entry *e = &entries[i];
        l[i].name = e->name;
        l[i].kind = e->kind;
        l[i].version = e->mod->desc->version ? e->mod->desc->version : "";
        l[i].abi_major = IQDB_ABI_VERSION_MAJOR(e->mod->desc->abi_version);
        l[i].abi_minor = IQDB_ABI_VERSION_MINOR(e->mod->desc->abi_version);
        l[i].file = e->mod->file;
        l[i].module = e->mod->name;
        if (e->kind == IQDB_PLUGIN_INDEX) {
            const iqdb_index_ops *o = e->ops;
            l[i].description = o->description ? o->description : "";
            l[i].caps = o->caps;
        } else {
            const iqdb_codec_ops *o = e->ops;
            l[i].description = o->description ? o->description : "";
            l[i].codec_id = o->id;
        }
    }
    *n = n_entries;
    *out = l;
    pthread_mutex_unlock(&lock);
    return 0;
}

void iqdb_plugin_list_free(iqdb_plugin_info *list)
{
    iqdb__free(list);
}
