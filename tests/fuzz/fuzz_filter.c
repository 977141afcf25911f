/*
 * tests/fuzz/fuzz_filter.c - libFuzzer target for the filter parser and
 * what runs a parsed filter.
 *
 * The input is filter text (a NUL is appended). iqdb_filter_parse must
 * return 0, IQDB_EPARSE (with an offset inside the text), IQDB_ERANGE or
 * IQDB_ENOMEM. A parsed filter is cloned, evaluated against a few
 * metadata maps (every value type, a missing field, none at all), where
 * the clone must agree with the original, and used in a filtered search
 * of a small in-memory flat database, where every hit must satisfy it.
 * Anything else, or any sanitizer report, aborts.
 *
 * Seeds: run with FUZZ_FILTER_SEEDS=DIR to write a few filters there.
 *
 * Needs the flat plugin at run time (IQDB_PLUGIN_PATH=$B/plugins). Build
 * against a core compiled with coverage (see fuzz_wal.c; F that tree):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=all -I$S/sdk/include -I$S/core \
 *       $S/tests/fuzz/fuzz_filter.c $F/core/.libs/libiqdbcore.a \
 *       -lltdl -fopenmp -lm -lpthread -o fuzz_filter
 *
 * Run: see tests/fuzz/README.md. Not built by make.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iqdb/iqdb.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NMAPS 4
#define NREC 64

static iqdb_meta *maps[NMAPS];
static iqdb *db;

static void die(const char *what, int r)
{
    fprintf(stderr, "fuzz_filter: %s (%d, %s): %s\n", what, r,
            iqdb_strerror(r), iqdb_errmsg(NULL));
    abort();
}

static iqdb_meta *map_of(int i)
{
    iqdb_meta *m = iqdb_meta_new();
    if (m == NULL)
        die("out of memory", IQDB_ENOMEM);
    static const char *kinds[] = {"doc", "img", "a b", ""};
    iqdb_meta_set(m, "kind", iqdb_value_str(kinds[i % 4]));
    iqdb_meta_set(m, "year", iqdb_value_int(2000 + i * 7));
    iqdb_meta_set(m, "score", iqdb_value_double(i * 0.5 - 3));
    iqdb_meta_set(m, "ok", iqdb_value_bool(i % 2));
    if (i % 3 == 0)
        iqdb_meta_set(m, "gone", iqdb_value_null());
    iqdb_meta_set(m, "a.b", iqdb_value_int(-i));
    return m;
}

static const char *seeds[] = {
    "kind = \"doc\" AND year >= 2026 AND NOT tag IN (\"a\", \"b\")",
    "(ok = true OR score < -1.5) AND `a.b` != 0",
    "kind IN ('img', 'a b') OR gone = null",
    "NOT (year <> 2007 AND score >= 1e3) or kind == \"\\\"q\\\"\"",
    "year > -9223372036854775808 AND score <= 0.125",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *out = getenv("FUZZ_FILTER_SEEDS");
    if (out != NULL) {
        for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
            char p[512];
            snprintf(p, sizeof p, "%s/seed-%zu", out, i);
            FILE *f = fopen(p, "wb");
            if (f == NULL)
                die("writing a seed", -1);
            fputs(seeds[i], f);
            fclose(f);
        }
        exit(0);
    }
    for (int i = 0; i < NMAPS - 1; i++)
        maps[i] = map_of(i);
    maps[NMAPS - 1] = NULL; /* a record without metadata */
    iqdb_config *c = iqdb_config_new(2, IQDB_METRIC_EUCLIDEAN);
    int r = iqdb_open_memory(c, &db);
    if (r != 0)
        die("opening the database", r);
    iqdb_config_free(c);
    for (int i = 0; i < NREC; i++) {
        float v[2] = {(float)(i % 8), (float)(i / 8)};
        iqdb_meta *m = i % 5 == 4 ? NULL : map_of(i);
        if ((r = iqdb_upsert(db, iqdb_id_u64((uint64_t)i), v, 2, m)) != 0)
            die("filling the database", r);
        iqdb_meta_free(m);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > IQDB_FILTER_MAX_TEXT + 16)
        return 0;
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text);
    iqdb_filter *f = NULL;
    iqdb_parse_error pe;
    int r = iqdb_filter_parse(text, &f, &pe);
    if (r == IQDB_EPARSE) {
        if (pe.offset > len)
            die("a parse error offset past the text", r);
    } else if (r != 0 && r != IQDB_ERANGE && r != IQDB_ENOMEM) {
        die("iqdb_filter_parse", r);
    }
    if (r == 0) {
        iqdb_filter *g = iqdb_filter_clone(f);
        if (g == NULL)
            die("iqdb_filter_clone", IQDB_ENOMEM);
        for (int i = 0; i < NMAPS; i++) {
            int a = iqdb_filter_eval(f, maps[i]);
            if ((a != 0 && a != 1) || a != iqdb_filter_eval(g, maps[i]))
                die("iqdb_filter_eval: the clone disagrees", a);
        }
        iqdb_filter_free(g);
        float q[2] = {3, 3};
        iqdb_results *res = NULL;
        r = iqdb_search(db, q, 2, 10, f, NULL, &res);
        if (r != 0 && r != IQDB_ENOMEM)
            die("filtered iqdb_search", r);
        for (size_t i = 0; r == 0 && i < iqdb_results_count(res, 0); i++) {
            const iqdb_hit *h = &iqdb_results_hits(res, 0)[i];
            iqdb_meta *m = NULL;
            if (iqdb_get(db, h->id, NULL, 2, &m) != 0)
                die("iqdb_get of a hit", -1);
            if (iqdb_filter_eval(f, m) != 1)
                die("a hit that fails the filter", -1);
            iqdb_meta_free(m);
        }
        iqdb_results_free(res);
        iqdb_filter_free(f);
    }
    free(text);
    return 0;
}
