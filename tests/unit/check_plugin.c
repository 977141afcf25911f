/*
 * tests/unit/check_plugin.c - loading plugins through libltdl: the real
 * flat module, and fixtures broken on purpose, each refused with its own
 * code and a message naming the file and what is wrong.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "iqdb_int.h"
#include "testutil.h"

static char fixture_path[4096];

static const char *fixture(const char *name)
{
    const char *dir = getenv("IQDB_FIXTURE_DIR");
    ck_assert_ptr_nonnull(dir);
    snprintf(fixture_path, sizeof fixture_path, "%s/%s.la", dir, name);
    return fixture_path;
}

static void assert_refused(const char *name, int code, const char *needle)
{
    int r = iqdb_plugin_load(fixture(name));
    const char *msg = iqdb_errmsg(NULL);
    ck_assert_msg(r == code, "%s: got %s (%s)", name, iqdb_errname(r), msg);
    ck_assert_msg(strstr(msg, needle) != NULL, "%s: message '%s' lacks '%s'",
                  name, msg, needle);
    ck_assert_msg(strstr(msg, name) != NULL, "%s: message '%s' lacks file",
                  name, msg);
    /* Nothing of it was registered. */
    iqdb_plugin_info *l;
    size_t n;
    ck_assert_int_eq(iqdb_plugin_list(&l, &n), 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_str_ne(l[i].module, name);
    iqdb_plugin_list_free(l);
}

START_TEST(test_plugin_wrong_abi_major)
{
    assert_refused("badabi", IQDB_EABI, "ABI 2.0");
}
END_TEST

START_TEST(test_plugin_newer_minor)
{
    assert_refused("newminor", IQDB_EABI, "newer than this core");
}
END_TEST

START_TEST(test_plugin_missing_entry_point)
{
    assert_refused("noentry", IQDB_EPLUGIN, "no entry point [noentry_LTX_iqdb_module]");
}
END_TEST

START_TEST(test_plugin_null_required_slot)
{
    assert_refused("nullslot", IQDB_EPLUGIN, "required slot 'search'");
}
END_TEST

START_TEST(test_plugin_table_too_small)
{
    assert_refused("smalltable", IQDB_EPLUGIN, "too small");
}
END_TEST

START_TEST(test_plugin_not_found_lists_dirs)
{
    ck_assert_int_eq(iqdb_plugin_add_dir("/nonexistent/one"), 0);
    int r = iqdb_plugin_load("absentplugin");
    ck_assert_int_eq(r, IQDB_ENOPLUGIN);
    const char *msg = iqdb_errmsg(NULL);
    ck_assert_ptr_nonnull(strstr(msg, "absentplugin"));
    ck_assert_ptr_nonnull(strstr(msg, "/nonexistent/one"));
    ck_assert_ptr_nonnull(strstr(msg, iqdb_plugin_dir()));
    ck_assert_int_eq(iqdb_plugin_load("../evil"), IQDB_EPLUGIN);
    ck_assert_int_eq(iqdb_plugin_load("bad name"), IQDB_EINVAL);
}
END_TEST

START_TEST(test_plugin_flat_listed)
{
    ck_assert_int_eq(iqdb_plugin_load("flat"), 0);
    ck_assert_int_eq(iqdb_plugin_load("flat"), 0); /* no-op */
    iqdb_plugin_info *l;
    size_t n, found = 0;
    ck_assert_int_eq(iqdb_plugin_list(&l, &n), 0);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(l[i].name, "flat") != 0)
            continue;
        found++;
        ck_assert_int_eq(l[i].kind, IQDB_PLUGIN_INDEX);
        ck_assert_uint_eq(l[i].abi_major, IQDB_ABI_MAJOR);
        ck_assert_ptr_nonnull(strstr(l[i].file, "flat"));
        ck_assert(l[i].caps & IQDB_CAP_EXACT);
        ck_assert_str_ne(l[i].version, "");
    }
    ck_assert_uint_eq(found, 1);
    iqdb_plugin_list_free(l);
}
END_TEST

START_TEST(test_plugin_config_dir)
{
    iqdb_config *c = iqdb_config_new(2, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_index(c, "extra");
    iqdb *db = NULL;
    /* Not in the default path: unknown until the config names the dir. */
    ck_assert_int_eq(iqdb_open_memory(c, &db), IQDB_ENOPLUGIN);
    iqdb_config_add_plugin_dir(c, getenv("IQDB_FIXTURE_DIR"));
    ck_assert_msg(iqdb_open_memory(c, &db) == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_str_eq(iqdb_index_name(db), "extra");
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

START_TEST(test_plugin_load_all)
{
    ck_assert_int_eq(iqdb_plugin_add_dir(getenv("IQDB_FIXTURE_DIR")), 0);
    /* The broken fixtures are skipped; flat and extra load. */
    int n = iqdb_plugin_load_all();
    ck_assert_int_ge(n, 2);
    iqdb_plugin_info *l;
    size_t cnt;
    iqdb_plugin_list(&l, &cnt);
    int flat = 0, extra = 0;
    for (size_t i = 0; i < cnt; i++) {
        flat += strcmp(l[i].name, "flat") == 0;
        extra += strcmp(l[i].name, "extra") == 0;
        ck_assert_str_ne(l[i].name, "nullslot");
    }
    ck_assert_int_eq(flat, 1);
    ck_assert_int_eq(extra, 1);
    iqdb_plugin_list_free(l);
}
END_TEST

START_TEST(test_plugin_host_table)
{
    const iqdb_host *h = iqdb__host();
    ck_assert_uint_eq(h->abi_version, IQDB_ABI_VERSION);
    ck_assert_uint_eq(h->struct_size, sizeof *h);
    ck_assert_ptr_nonnull(h->kernels);
    ck_assert_int_ge(h->max_threads(), 1);
    void *p = h->aligned_alloc(64, 100);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    h->aligned_free(p);
    ck_assert_int_eq(h->set_error(NULL, IQDB_EPARAM, "x=%d", 5), IQDB_EPARAM);
    ck_assert_str_eq(iqdb_errmsg(NULL), "x=5");
}
END_TEST

/* A third party's plugin: the sdk template, compiled here with nothing
 * but the public headers and a C compiler, then loaded and used. */
START_TEST(test_plugin_template_out_of_tree)
{
    const char *src = getenv("IQDB_SRCDIR");
    ck_assert_ptr_nonnull(src);
    char dir[] = "/tmp/iqdb-tmpl-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "cc -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror "
             "-I%s/sdk/include -o %s/template.so %s/sdk/template/template.c",
             src, dir, src);
    ck_assert_int_eq(system(cmd), 0);
    iqdb_config *c = iqdb_config_new(2, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_index(c, "template");
    iqdb_config_add_plugin_dir(c, dir);
    iqdb *db;
    ck_assert_msg(iqdb_open_memory(c, &db) == 0, "%s", iqdb_errmsg(NULL));
    iqdb_config_free(c);
    for (int i = 0; i < 50; i++) {
        float v[2] = {(float)i, 0};
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64((uint64_t)i), v, 2, NULL), 0);
    }
    iqdb_delete(db, iqdb_id_u64(10), NULL);
    iqdb_results *r;
    float q[2] = {10.2f, 0};
    ck_assert_int_eq(iqdb_search(db, q, 2, 2, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_hits(r, 0)[0].id.v.u64, 11);
    ck_assert_uint_eq(iqdb_results_hits(r, 0)[1].id.v.u64, 9);
    iqdb_results_free(r);
    iqdb_close(db);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *plugin_suite(void)
{
    Suite *s = suite_create("plugin");
    struct {
        const char *name;
        const TTest *t;
    } cases[] = {
        {"wrong_abi_major", test_plugin_wrong_abi_major},
        {"newer_minor", test_plugin_newer_minor},
        {"missing_entry_point", test_plugin_missing_entry_point},
        {"null_required_slot", test_plugin_null_required_slot},
        {"table_too_small", test_plugin_table_too_small},
        {"not_found_lists_dirs", test_plugin_not_found_lists_dirs},
        {"flat_listed", test_plugin_flat_listed},
        {"config_dir", test_plugin_config_dir},
        {"load_all", test_plugin_load_all},
        {"host_table", test_plugin_host_table},
        {"template_out_of_tree", test_plugin_template_out_of_tree},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].t);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return tu_run(plugin_suite());
}
