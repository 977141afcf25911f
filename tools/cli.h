/*
 * tools/cli.h - declarations shared by the source files of the iqdb
 * command-line program. The program uses the public API (<iqdb/iqdb.h>)
 * only; nothing here is installed.
 *
 * Files:
 *   iqdb.c      main, option helpers, the record commands
 *               (create import search get delete info compact check
 *               export plugins)
 *   demo.c      iqdb demo
 *   cmd_bench.c iqdb bench
 *   svg.c       the self-contained SVG recall/QPS plot of iqdb bench
 *   progress.c  the terminal progress bar
 *   json.c      a small JSON reader and writer helpers
 *   readers.c   the vector file readers of iqdb import (and bench)
 */
#ifndef IQDB_TOOLS_CLI_H
#define IQDB_TOOLS_CLI_H

#include <iqdb/iqdb.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- exit codes (documented in iqdb(1)) --------------------------------- */
#define CLI_EXIT_OK 0       /* success */
#define CLI_EXIT_FAIL 1     /* the operation failed: library error, I/O,
                               malformed input data */
#define CLI_EXIT_USAGE 2    /* bad command line */
#define CLI_EXIT_DAMAGE 3   /* iqdb check found damage */
#define CLI_EXIT_NOTFOUND 4 /* iqdb get: no such id; no database at DIR */

/* ---- messages (iqdb.c) ---------------------------------------------------- */
/* Set by --quiet: no progress bars and no chatter on stderr. */
extern int cli_quiet;
/* "iqdb: " + the formatted message + newline, on stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "iqdb: WHAT: ERRNAME: <iqdb_errmsg(db)>" on stderr; returns the exit
 * code that goes with rc (CLI_EXIT_NOTFOUND for IQDB_ENOTFOUND, else
 * CLI_EXIT_FAIL). */
int cli_lib_err(const iqdb *db, int rc, const char *what);
/* How to run this program in a hint: "iqdb", or its path in the build
 * tree when it runs uninstalled. */
extern const char *cli_self;
/* Monotonic seconds. */
double cli_now(void);
/* Add the plugin directories the program should search (the build tree's
 * when the program runs uninstalled from it). Called once by main. */
void cli_setup_plugins(void);

/* ---- subcommands: each returns an exit code ------------------------------ */
int cli_cmd_demo(int argc, char **argv);
int cli_cmd_bench(int argc, char **argv);

/* ---- progress bar (progress.c) ------------------------------------------- */
/*
 * A one-line progress bar on stderr with count, rate and ETA, redrawn at
 * most 10 times a second. It draws only when stderr is a terminal and
 * cli_quiet is 0; otherwise every call is a cheap no-op. total 0 means
 * unknown (no percentage, no ETA). start returns NULL when it will not
 * draw; update and end accept NULL.
 */
typedef struct cli_progress cli_progress;
cli_progress *cli_progress_start(const char *label, uint64_t total);
void cli_progress_update(cli_progress *p, uint64_t done);
/* Draw the final state, end the line and free p. */
void cli_progress_end(cli_progress *p);

/* ---- JSON (json.c) ---------------------------------------------------------- */
/* Writing: a quoted, escaped JSON string of s[0..len) (any bytes; invalid
 * UTF-8 and control bytes are escaped as \u00XX). */
void cli_json_write_str(FILE *f, const char *s, size_t len);
/* A number: integers exactly, finite doubles with %.9g, non-finite as
 * null. */
void cli_json_write_double(FILE *f, double d);
/* An iqdb value (string, int, double, bool, null). */
void cli_json_write_value(FILE *f, const iqdb_value *v);
/* A metadata map as an object; NULL as {}. */
void cli_json_write_meta(FILE *f, const iqdb_meta *m);
/* An id: U64 ids as numbers, BYTES ids as strings. */
void cli_json_write_id(FILE *f, iqdb_id id);

/* Reading: a small DOM. */
typedef enum cli_json_type {
    CLI_JSON_NULL,
    CLI_JSON_BOOL,
    CLI_JSON_NUMBER,
    CLI_JSON_STRING,
    CLI_JSON_ARRAY,
    CLI_JSON_OBJECT
} cli_json_type;

typedef struct cli_json cli_json;
struct cli_json {
    cli_json_type type;
    int b;          /* BOOL */
    double num;     /* NUMBER */
    int is_int;     /* NUMBER written without fraction or exponent and
                       within int64 range */
    int64_t i;      /* NUMBER, when is_int */
    char *str;      /* STRING: NUL-terminated (may contain NUL: use len) */
    size_t len;     /* STRING length; ARRAY/OBJECT member count */
    cli_json *items; /* ARRAY elements or OBJECT values */
    char **keys;     /* OBJECT keys (NUL-terminated), same order */
};
/* Parse text[0..len) (exactly one value, surrounding whitespace allowed).
 * Returns 0, or -1 with "column N: what" in err. Nesting deeper than 64
 * is an error. Free with cli_json_free. */
int cli_json_parse(const char *text, size_t len, cli_json *out, char *err,
                   size_t errlen);
void cli_json_free(cli_json *v);
/* The member `key` of an OBJECT, or NULL. */
const cli_json *cli_json_get(const cli_json *obj, const char *key);
/* An OBJECT of scalar values (string, number, bool, null) as a new
 * metadata map (free with iqdb_meta_free). Returns 0, or -1 with the
 * reason in err ("\"metadata\" is not an object", "metadata \"k\":
 * nested arrays and objects are not supported", ...). */
int cli_json_to_meta(const cli_json *obj, iqdb_meta **out, char *err,
                     size_t errlen);

/* ---- vector file readers (readers.c) ------------------------------------------ */
typedef enum cli_format {
    CLI_FMT_AUTO = 0,
    CLI_FMT_FVECS,
    CLI_FMT_BVECS,
    CLI_FMT_NPY,
    CLI_FMT_CSV,
    CLI_FMT_JSONL,
    CLI_FMT_IDX
} cli_format;

/* "fvecs", "bvecs", "npy", "csv", "jsonl", "idx" -> 0; else -1. */
int cli_format_parse(const char *name, cli_format *out);
const char *cli_format_name(cli_format f);
/* Guess from the file name (a trailing .gz is ignored): .fvecs .bvecs
 * .npy .csv .jsonl/.ndjson, "-ubyte"/.idx -> idx; else CLI_FMT_AUTO. */
cli_format cli_format_guess(const char *path);

/* One record read from a file. Everything it points to is owned by the
 * reader and valid until the next cli_reader_next or cli_reader_close,
 * except meta, which the caller takes over (iqdb_meta_free). */
typedef struct cli_record {
    uint64_t index;   /* 0-based record number in the file */
    uint64_t line;    /* 1-based line (csv, jsonl), else 0 */
    uint32_t dim;
    const float *vec; /* dim finite floats */
    int has_id;       /* jsonl records with an "id" member */
    iqdb_id id;       /* non-negative integer -> U64, string -> BYTES */
    iqdb_meta *meta;  /* jsonl "metadata" object, else NULL */
} cli_record;

typedef struct cli_reader cli_reader;
/*
 * Open path (fmt CLI_FMT_AUTO: guess from the name, else fail) for
 * reading records one at a time; gzipped files are read transparently.
 * expect_dim 0 accepts any dimension (all records must still agree).
 * Returns 0, or -1 with a message naming the file in err.
 */
int cli_reader_open(const char *path, cli_format fmt, uint32_t expect_dim,
                    cli_reader **out, char *err, size_t errlen);
/* The vector dimension when known (binary formats: after open; text
 * formats: after the first record), else 0. */
uint32_t cli_reader_dim(const cli_reader *r);
/* Total records when the header tells (npy, idx, fvecs/bvecs of an
 * uncompressed file), else 0. For progress bars. */
uint64_t cli_reader_count_hint(const cli_reader *r);
/*
 * Read the next record: 1 and *rec filled, 0 at a clean end, -1 on
 * malformed input with "FILE: record N (line L): what" in err (the
 * record number 1-based as a person counts). Checks: truncated records,
 * a dimension that differs from the first record's or expect_dim, NaN or
 * infinite values, unparsable numbers, bad JSON, bad magic or header,
 * trailing garbage.
 */
int cli_reader_next(cli_reader *r, cli_record *rec, char *err,
                    size_t errlen);
void cli_reader_close(cli_reader *r);

/* Read a whole vector file into a row-major matrix (*data, *rows x *dim,
 * malloc'd, freed with free()). For bench and --query FILE. */
int cli_read_matrix(const char *path, cli_format fmt, float **data,
                    size_t *rows, uint32_t *dim, char *err, size_t errlen);

/*
 * A labels file for iqdb import --labels: an MNIST idx1 ubyte file
 * (gzipped or not; each label a number 0..255) or a text file with one
 * label per line. names: label names by number for idx labels (NULL: the
 * number's decimal text). Text labels are taken as written.
 */
typedef struct cli_labels {
    size_t n;
    char **text;   /* n NUL-terminated label strings */
    int64_t *num;  /* n numbers (idx) or NULL (text) */
} cli_labels;
int cli_labels_load(const char *path, const char *const *names,
                    size_t nnames, cli_labels *out, char *err,
                    size_t errlen);
void cli_labels_free(cli_labels *l);

/* The ten Fashion-MNIST class names ("T-shirt/top" ... "Ankle boot"). */
extern const char *const cli_fmnist_names[10];

#endif /* IQDB_TOOLS_CLI_H */
