#!/bin/sh
# tests/check_exports.sh - the shared library exports only iqdb_* symbols
# and each plugin exports only its LTX entry point.
set -u
b="${IQDB_BUILDDIR:-.}"
lib="$b/core/.libs/libiqdb.so"
status=0
if [ ! -f "$lib" ]; then
    echo "FAIL: $lib not built"; exit 1
fi
syms=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^_' )
bad=$(printf '%s\n' "$syms" | grep -v '^iqdb_' | grep -v '^$' || true)
if [ -n "$bad" ]; then
    echo "FAIL: libiqdb exports non-iqdb_ symbols:"; printf '%s\n' "$bad"; status=1
fi
internal=$(printf '%s\n' "$syms" | grep '^iqdb__' || true)
if [ -n "$internal" ]; then
    echo "FAIL: libiqdb exports internal iqdb__ symbols:"; printf '%s\n' "$internal"; status=1
fi
n=$(printf '%s\n' "$syms" | grep -c '^iqdb_')
if [ "$n" -lt 40 ]; then
    echo "FAIL: only $n iqdb_ symbols exported"; status=1
fi
for so in "$b"/plugins/.libs/*.so; do
    name=$(basename "$so" .so)
    psyms=$(nm -D --defined-only "$so" | awk '{print $3}' | grep -v '^_' | grep -v '^$')
    if [ "$psyms" != "${name}_LTX_iqdb_module" ]; then
        echo "FAIL: $so exports: $psyms"; status=1
    fi
done
[ $status -eq 0 ] && echo "PASS: exports ($n iqdb_ symbols; plugins export only their entry point)"
exit $status
