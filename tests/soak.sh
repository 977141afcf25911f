#!/bin/sh
# tests/soak.sh - long crash soak: SIGKILL a durable writer CYCLES times
# (default 10000) and check after each reopen that every acknowledged
# record survived. Three soaks run: crash_cycles (a growing database),
# crash_compacting (a small one compacted every few dozen writes on the
# background thread, so kills land inside compactions) and
# segments_crash_cycles (batches whose compactions keep log segments, on a
# database only ever opened read-only between the kills). Not part of make
# check (which runs 200, 150 and 150 cycles).
# Run from a build directory:  sh ../tests/soak.sh [CYCLES]
set -eu
cycles="${1:-10000}"
b="${IQDB_BUILDDIR:-.}"
if [ ! -x "$b/tests/unit/check_persist" ]; then
    echo "soak: build first (make check builds tests/unit/check_persist)" >&2
    exit 2
fi
export IQDB_PLUGIN_PATH="${IQDB_PLUGIN_PATH:-$b/plugins}"
export IQDB_CRASH_CYCLES="$cycles" CK_TIMEOUT_MULTIPLIER=1000 IQDB_LOG=0
export IQDB_CRASH_VERBOSE=1
for case in crash_cycles crash_compacting segments_crash_cycles; do
    start=$(date +%s)
    CK_RUN_CASE=$case "$b/tests/unit/check_persist"
    echo "soak: $case: $cycles crash cycles passed in $(( $(date +%s) - start )) s"
done
