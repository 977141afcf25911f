#!/usr/bin/env bash
# tests/cli/test_cli.sh - the iqdb command-line program, through the built
# binary: every subcommand, every import format (and malformed input),
# --json output parsed by python3, exit codes, check finding a flipped
# byte, and bench writing a well-formed SVG. Run by make check (which sets
# IQDB_CLI, IQDB_PLUGIN_PATH and IQDB_SRCDIR). Prints a Check-style
# summary line that .ci/run counts.
set -u
IQDB=${IQDB_CLI:?run through make check}
SRC=${IQDB_SRCDIR:?}
PY=$(command -v python3 || true)
if [ -z "$PY" ]; then
    echo "SKIP: python3 is needed to generate the inputs and parse --json"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/iqdb-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
export IQDB_LOG=0
# In sanitizer builds, LeakSanitizer (gcc 12) can crash at exit while it
# scans the dynamic thread-local storage of OpenMP worker threads that ran
# a dlopen'ed plugin (seen with iqdb bench: "Tracer caught signal 11").
# Not treating TLS as roots avoids that; what is then reachable only
# from TLS - libgomp's own per-thread state - is suppressed by lsan.supp.
# The library's own leak checks run in the unit tests without this.
export LSAN_OPTIONS="use_tls=0:suppressions=$SRC/tests/cli/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
"$PY" "$SRC/tests/cli/cli_files.py" "$T/in" || exit 1
F=$T/in
pass=0
fail=0
last_out=$T/out
last_err=$T/err

# run NAME EXPECTED_STATUS CMD... : run, keep stdout/stderr, check status.
run() {
    local name=$1 want=$2
    shift 2
    "$@" >"$last_out" 2>"$last_err"
    local got=$?
    if [ "$got" -eq "$want" ]; then
        return 0
    fi
    echo "FAIL $name: exit $got, wanted $want: $*"
    sed 's/^/  stdout: /' "$last_out" | head -20
    sed 's/^/  stderr: /' "$last_err" | head -20
    return 1
}

# ok NAME STATUS CMD... / expect stdout or stderr to match too
ok() {
    if run "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
}
ok_grep() { # NAME STATUS PATTERN(stdout+stderr) CMD...
    local name=$1 want=$2 pat=$3
    shift 3
    if run "$name" "$want" "$@" && cat "$last_out" "$last_err" | grep -Eq -- "$pat"; then
        pass=$((pass + 1))
    else
        echo "FAIL $name: output does not match /$pat/"
        sed 's/^/  out: /' "$last_out" "$last_err" | head -20
        fail=$((fail + 1))
    fi
}
# pycheck NAME PYTHON-EXPR-on-j (j = parsed JSON of the last stdout)
pycheck() {
    if "$PY" - "$last_out" "$2" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
ok = eval(sys.argv[2])
sys.exit(0 if ok else 1)
EOF
    then pass=$((pass + 1))
    else
        echo "FAIL $1: JSON check failed: $2"
        head -c 2000 "$last_out"; echo
        fail=$((fail + 1))
    fi
}

# ---- general -----------------------------------------------------------------
ok_grep version 0 '^iqdb [0-9]+\.[0-9]+' "$IQDB" --version
ok_grep help 0 'commands:' "$IQDB" --help
ok_grep no-command 2 'usage' "$IQDB"
ok_grep unknown-command 2 "unknown command 'frob'" "$IQDB" frob
for c in create import search get delete info compact check export plugins bench demo; do
    ok_grep "help-$c" 0 "iqdb $c" "$IQDB" "$c" --help
done

# ---- plugins -----------------------------------------------------------------
ok_grep plugins 0 'hnsw' "$IQDB" plugins
ok plugins-json 0 "$IQDB" plugins --json
pycheck plugins-json-shape 'any(p["name"] == "flat" and p["kind"] == "index" and "exact" in p["capabilities"] for p in j) and any(p["name"] == "zstd" and p["kind"] == "codec" for p in j) and all(p["abi"].startswith("1.") and p["file"] for p in j)'

# ---- create ------------------------------------------------------------------
D=$T/db
ok_grep create 0 'created' "$IQDB" create "$D" --dim 4 --metric l2 --index hnsw --param m=8 --compression zstd:3
ok_grep create-exists 1 'already holds' "$IQDB" create "$D" --dim 4
ok_grep create-no-dim 2 'usage' "$IQDB" create "$T/x1"
ok_grep create-bad-metric 2 'unknown metric' "$IQDB" create "$T/x2" --dim 4 --metric cubic
ok_grep create-bad-index 1 'ENOPLUGIN' "$IQDB" create "$T/x3" --dim 4 --index nosuchindex
ok_grep create-bad-param 1 'EPARAM' "$IQDB" create "$T/x4" --dim 4 --index hnsw --param m=0
ok_grep create-bad-fsync 2 'fsync' "$IQDB" create "$T/x5" --dim 4 --fsync sometimes
ok_grep create-bad-option 2 'usage' "$IQDB" create "$T/x6" --dim 4 --bogus
mkdir -p "$T/notdb" && echo hello >"$T/notdb/file"
ok_grep create-not-empty 1 'EEXIST' "$IQDB" create "$T/notdb" --dim 4
ok_grep open-missing 4 'ENOTFOUND' "$IQDB" info "$T/nothing-here"

# ---- import: every format ------------------------------------------------------
ok_grep import-fvecs 0 'imported 20 records' "$IQDB" import "$D" "$F/a.fvecs"
ok_grep get-fvecs 0 'vector: 7,7.5,-7,1' "$IQDB" get "$D" 7
ok_grep import-fvecs-gz 0 'imported 20' "$IQDB" import "$D" "$F/a.fvecs.gz" --id-start 100
ok_grep import-npy 0 'imported 20' "$IQDB" import "$D" "$F/a.npy" --id-start 200
ok_grep get-npy 0 'vector: 3,3.5,-3,1' "$IQDB" get "$D" 203
ok_grep import-npy64 0 'imported 20' "$IQDB" import "$D" "$F/a64.npy" --id-start 300
ok_grep import-npyu8 0 'imported 20' "$IQDB" import "$D" "$F/au8.npy" --id-start 400
ok_grep get-npyu8 0 'vector: 5,1,2,3' "$IQDB" get "$D" 405
ok_grep import-bvecs 0 'imported 20' "$IQDB" import "$D" "$F/a.bvecs" --id-start 500
ok_grep import-csv 0 'imported 20' "$IQDB" import "$D" "$F/a.csv" --id-start 600 --metadata "$F/meta.jsonl"
ok_grep get-csv-meta 0 '"color":"green"' "$IQDB" get "$D" 601
ok_grep import-jsonl 0 'imported 20' "$IQDB" import "$D" "$F/a.jsonl"
ok get-jsonl-json 0 "$IQDB" get "$D" doc-4 --json
pycheck get-jsonl-json-shape 'j["id"] == "doc-4" and j["vector"] == [4, 4.5, -4, 1] and j["metadata"] == {"kind": "even", "n": 4, "w": 1.0, "flag": True, "none": None}'
ok_grep import-ids-file 0 'imported 20' "$IQDB" import "$D" "$F/a.csv" --ids "$F/ids.txt"
ok_grep get-string-id 0 'vector: 9,9.5,-9,1' "$IQDB" get "$D" key9
ok_grep import-ids-conflict 2 'exclude' "$IQDB" import "$D" "$F/a.csv" --ids "$F/ids.txt" --id-start 5
ok_grep import-unknown-ext 2 'format' "$IQDB" import "$D" "$F/ids.txt"
ok_grep import-missing-file 1 'a-missing.fvecs' "$IQDB" import "$D" "$F/a-missing.fvecs"
ok_grep import-wrong-dim 1 'dim|dimension' "$IQDB" import "$D" "$F/wrongdim.fvecs"

# idx images with Fashion-MNIST labels (names by the file name)
I=$T/idx
ok create-idx 0 "$IQDB" create "$I" --dim 4
ok_grep import-idx 0 'imported 12' "$IQDB" import "$I" "$F/img-idx3-ubyte.gz" --labels "$F/fashion-labels-idx1-ubyte.gz"
ok_grep get-idx-label 0 '"label":"Sneaker"' "$IQDB" get "$I" 7
ok_grep get-idx-class 0 '"class":7' "$IQDB" get "$I" 7
ok_grep import-idx-plain 0 'imported 12' "$IQDB" import "$I" "$F/img-idx3-ubyte" --id-start 100 --labels "$F/fashion-labels-idx1-ubyte.gz" --label-names none
ok_grep get-idx-numlabel 0 '"label":"3"' "$IQDB" get "$I" 103
ok_grep import-labels-mismatch 1 'labels' "$IQDB" import "$I" "$F/a.fvecs" --labels "$F/fashion-labels-idx1-ubyte.gz"

# ---- import: malformed input and the commit rule ---------------------------------
# Every record before the bad one is committed, nothing from it on.
B=$T/bad
ok create-bad 0 "$IQDB" create "$B" --dim 4
ok_grep bad-trunc-fvecs 1 'record 6' "$IQDB" import "$B" "$F/bad_trunc.fvecs" --batch 2
ok_grep bad-trunc-committed 0 '"count":5' "$IQDB" info "$B" --json
ok_grep bad-dim-fvecs 1 'record 4' "$IQDB" import "$B" "$F/bad_dim.fvecs" --id-start 100
ok get-bad-dim-before 0 "$IQDB" get "$B" 102
ok get-bad-dim-after 4 "$IQDB" get "$B" 104
ok_grep bad-json 1 'line 3' "$IQDB" import "$B" "$F/bad.jsonl"
ok get-bad-json-before 0 "$IQDB" get "$B" 1002
ok get-bad-json-after 4 "$IQDB" get "$B" 1003
ok_grep bad-nan-csv 1 'line 3' "$IQDB" import "$B" "$F/bad_nan.csv" --id-start 300
ok get-bad-nan-before 0 "$IQDB" get "$B" 301
ok get-bad-nan-at 4 "$IQDB" get "$B" 302
ok_grep bad-idx-magic 1 'magic' "$IQDB" import "$B" "$F/bad-idx3-ubyte"
ok_grep bad-npy-fortran 1 'fortran' "$IQDB" import "$B" "$F/bad_fortran.npy"
ok_grep bad-npy-trunc 1 'bad_trunc.npy' "$IQDB" import "$B" "$F/bad_trunc.npy" --id-start 900
ok_grep bad-summary 1 'records were imported before the error' "$IQDB" import "$B" "$F/bad_nan.csv" --id-start 700

# ---- search ----------------------------------------------------------------------
ok_grep search-vector 0 '^ +1 +7 ' "$IQDB" search "$D" --vector "7,7.5,-7,1" -k 3
ok search-json 0 "$IQDB" search "$D" --vector "7,7.5,-7,1" -k 3 --json
pycheck search-json-shape 'len(j) == 1 and j[0]["query"] == 0 and len(j[0]["hits"]) == 3 and j[0]["hits"][0]["distance"] == 0 and all(h["distance"] >= 0 for h in j[0]["hits"])'
ok search-file 0 "$IQDB" search "$D" --query "$F/q.csv" -k 2 --json
pycheck search-file-two 'len(j) == 2 and all(len(q["hits"]) == 2 for q in j) and j[1]["hits"][0]["distance"] == 0'
ok search-filter 0 "$IQDB" search "$D" --vector "4,4.5,-4,1" -k 50 --filter 'kind = "odd" AND n < 9' --json
pycheck search-filter-hits 'sorted(h["id"] for h in j[0]["hits"]) == ["doc-1", "doc-3", "doc-5", "doc-7"]'
ok search-param 0 "$IQDB" search "$D" --vector "4,4.5,-4,1" -k 5 --param ef_search=64 --json
pycheck search-param-k 'len(j[0]["hits"]) == 5'
ok_grep search-bad-param 1 'EPARAM' "$IQDB" search "$D" --vector "4,4.5,-4,1" --param ef_search=0
ok_grep search-stdin 0 'query 1:' sh -c "printf '1,1.5,-1,1\n2 2.5 -2 1\n' | '$IQDB' search '$D' - -k 1"
ok_grep search-bad-filter 2 'at byte' "$IQDB" search "$D" --vector "1,2,3,4" --filter 'kind = '
ok_grep search-bad-dim 1 'EDIM' "$IQDB" search "$D" --vector "1,2,3"
ok_grep search-nan 1 'not a finite' "$IQDB" search "$D" --vector "1,nan,3,4"
ok_grep search-no-query 2 'usage' "$IQDB" search "$D"
ok_grep search-k0 2 'at least 1' "$IQDB" search "$D" --vector "1,2,3,4" -k 0

# ---- get, delete -----------------------------------------------------------------
ok_grep get-missing 4 'ENOTFOUND' "$IQDB" get "$D" 99999
ok_grep delete 0 'deleted 2 of 3' "$IQDB" delete "$D" 7 doc-3 424242
ok get-deleted 4 "$IQDB" get "$D" 7
ok_grep get-str-prefix 4 'ENOTFOUND' "$IQDB" get "$D" str:7

# ---- info, compact, export ---------------------------------------------------------
ok info-json 0 "$IQDB" info "$D" --json
pycheck info-json-shape 'j["dim"] == 4 and j["metric"] == "euclidean" and j["index"] == "hnsw" and "m=8" in j["index_params"] and j["codec"] == "zstd" and j["count"] == 178 and j["snapshot_bytes"] > 0 and any(p["name"] == "hnsw" for p in j["plugins"])'
ok_grep info-text 0 'index: +hnsw \(m=8\)' "$IQDB" info "$D"
ok_grep compact 0 'compacted' "$IQDB" compact "$D"
ok info-after-compact 0 "$IQDB" info "$D" --json
pycheck info-still-zstd 'j["codec"] == "zstd" and j["count"] == 178'
ok_grep export-jsonl 0 'exported 178' "$IQDB" export "$D" "$T/out.jsonl"
E=$T/reimport
ok create-reimport 0 "$IQDB" create "$E" --dim 4
ok_grep reimport 0 'imported 178' "$IQDB" import "$E" "$T/out.jsonl"
ok reimport-get 0 "$IQDB" get "$E" doc-4 --json
pycheck reimport-same 'j["vector"] == [4, 4.5, -4, 1] and j["metadata"]["kind"] == "even"'
ok_grep export-fvecs 0 'exported 178' "$IQDB" export "$D" "$T/out.fvecs"
ok_grep export-fvecs-size 0 '^3560$' sh -c "wc -c <'$T/out.fvecs' | tr -d ' '"

# ---- check ----------------------------------------------------------------------------
ok_grep check-clean 0 'ok' "$IQDB" check "$D"
ok check-json 0 "$IQDB" check "$D" --json
pycheck check-json-ok 'j["ok"] is True and j["findings"] == []'
C=$T/flip
cp -r "$E" "$C"
size=$(stat -c %s "$C/snapshot")
off=$((size / 2))
"$PY" - "$C/snapshot" "$off" <<'EOF'
import sys
p, off = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read())
b[off] ^= 0x40
open(p, "wb").write(b)
EOF
ok_grep check-flip 3 'damage: snapshot' "$IQDB" check "$C"
ok check-flip-json 3 "$IQDB" check "$C" --json
pycheck check-flip-json-shape 'j["ok"] is False and len(j["findings"]) >= 1 and j["findings"][0]["file"] == "snapshot" and j["findings"][0]["damage"] is True'
ok_grep check-missing 4 'ENOTFOUND' "$IQDB" check "$T/nothing-here"
# ---- bench and demo ---------------------------------------------------------------------
BO=$T/bench
ok_grep bench 0 'plot.svg' "$IQDB" --quiet bench --dataset generated --n 2000 --nq 50 --dim 16 --out "$BO"
ok bench-files 0 "$PY" "$SRC/tests/cli/bench_svg_check.py" "$BO"
ok_grep bench-bad-index 1 'ENOPLUGIN' "$IQDB" --quiet bench --dataset generated --n 500 --nq 10 --dim 8 --index nosuch --out "$BO"

# demo on generated data (no Fashion-MNIST at that path), small; a second
# run reopens instead of rebuilding.
DM=$T/demo
ok_grep demo-build 0 'GENERATED.*recall@10 of HNSW against exact search: (0\.9[5-9]|1\.0)' sh -c "'$IQDB' --quiet demo '$DM' --fmnist-dir '$T/no-fmnist' --n 3000 --queries 100 | tr '\n' ' '"
cp "$last_out" "$T/demo.txt"
ok_grep demo-filter 0 'filter label = "cluster 7".* 1 +[0-9]+ +[0-9.]+ +cluster 7 ' cat "$T/demo.txt"
ok_grep demo-reopen 0 'reopened .* 3000 records' "$IQDB" --quiet demo "$DM" --fmnist-dir "$T/no-fmnist" --n 3000 --queries 100
ok_grep demo-mismatch 1 'not this data set' "$IQDB" --quiet demo "$DM" --fmnist-dir "$T/no-fmnist" --n 2000 --queries 10

echo "Checks: $((pass + fail)), Failures: $fail, Errors: 0"
[ "$fail" -eq 0 ]
