#!/usr/bin/env python3
"""Check the output directory of `iqdb bench`.

    bench_svg_check.py DIR

Checks that DIR/results.json, DIR/results.csv and DIR/plot.svg are
well-formed and agree with each other: the same rows in the same order,
recall in [0, 1], QPS > 0, one <polyline> per series with one vertex per
Pareto point of that series, and one legend <text> per series name.
Exits 0 when all is well, else 1 with one line per problem on stderr.
Standard library only.
"""

import csv
import json
import math
import os
import sys
import xml.etree.ElementTree as ET

SVG_NS = "{http://www.w3.org/2000/svg}"
COLUMNS = ["series", "index", "params", "sweep", "k", "recall",
           "qps_single", "qps_batch", "build_seconds", "memory_bytes",
           "pareto"]


class Problems:
    def __init__(self):
        self.items = []

    def add(self, msg):
        self.items.append(msg)


def close(a, b, rel=1e-5, abs_=2e-3):
    return abs(a - b) <= max(abs_, rel * max(abs(a), abs(b)))


def num(value):
    """A finite float from a JSON number or CSV text, else None."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def load_json(path, p):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        p.add(f"{path}: not valid JSON: {e}")
        return None
    if not isinstance(doc, dict):
        p.add(f"{path}: top level is not an object")
        return None
    for key, kind in (("results", list), ("series", list), ("k", int),
                      ("dataset", dict)):
        if not isinstance(doc.get(key), kind):
            p.add(f"{path}: member '{key}' missing or not a {kind.__name__}")
            return None
    return doc


def load_csv(path, p):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        p.add(f"{path}: cannot read CSV: {e}")
        return None
    if header != COLUMNS:
        p.add(f"{path}: header {header} is not {COLUMNS}")
        return None
    for i, row in enumerate(rows, 2):
        if None in row or any(v is None for v in row.values()):
            p.add(f"{path}: line {i}: wrong number of fields")
            return None
    return rows


def check_row(i, jrow, crow, k, p):
    where = f"row {i + 1}"
    for key in ("series", "index", "params", "sweep"):
        if not isinstance(jrow.get(key), str):
            p.add(f"results.json {where}: '{key}' is not a string")
            return
        if jrow[key] != crow[key]:
            p.add(f"{where}: {key} differs: json {jrow[key]!r}, "
                  f"csv {crow[key]!r}")
    recall = num(jrow.get("recall"))
    if recall is None or not 0.0 <= recall <= 1.0:
        p.add(f"results.json {where}: recall {jrow.get('recall')!r} "
              "not in [0, 1]")
    qps = num(jrow.get("qps_single"))
    if qps is None or qps <= 0:
        p.add(f"results.json {where}: qps_single {jrow.get('qps_single')!r}"
              " is not > 0")
    qb = jrow.get("qps_batch")
    if qb is not None and (num(qb) is None or num(qb) <= 0):
        p.add(f"results.json {where}: qps_batch {qb!r} is neither null "
              "nor > 0")
    if jrow.get("k") != k or num(crow["k"]) != k:
        p.add(f"{where}: k is not {k}")
    for key in ("recall", "qps_single", "qps_batch", "build_seconds",
                "memory_bytes"):
        a, b = num(jrow.get(key)), num(crow[key])
        if (a is None) != (b is None) or (a is not None and not close(a, b)):
            p.add(f"{where}: {key} differs: json {jrow.get(key)!r}, "
                  f"csv {crow[key]!r}")
    if not isinstance(jrow.get("pareto"), bool) or \
            crow["pareto"] != ("1" if jrow.get("pareto") else "0"):
        p.add(f"{where}: pareto differs or is not a boolean")


def check_svg(path, names, pareto_counts, p):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        p.add(f"{path}: not well-formed XML: {e}")
        return
    if root.tag != SVG_NS + "svg":
        p.add(f"{path}: root element is {root.tag}, not svg")
        return
    polylines = root.findall(".//" + SVG_NS + "polyline")
    if len(polylines) != len(names):
        p.add(f"{path}: {len(polylines)} polylines for {len(names)} series")
    width = num(root.get("width")) or 0
    height = num(root.get("height")) or 0
    for name, line, count in zip(names, polylines, pareto_counts):
        pts = (line.get("points") or "").split()
        if len(pts) != count:
            p.add(f"{path}: series {name!r}: {len(pts)} vertices for "
                  f"{count} Pareto points")
        for pt in pts:
            xy = pt.split(",")
            if len(xy) != 2 or any(num(v) is None for v in xy):
                p.add(f"{path}: series {name!r}: bad vertex {pt!r}")
                break
            x, y = float(xy[0]), float(xy[1])
            if not (0 <= x <= width and 0 <= y <= height):
                p.add(f"{path}: series {name!r}: vertex {pt} outside "
                      "the picture")
                break
    texts = ["".join(t.itertext()) for t in root.iter(SVG_NS + "text")]
    for name in names:
        if name not in texts:
            p.add(f"{path}: no legend text for series {name!r}")


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR", file=sys.stderr)
        return 2
    out = argv[1]
    p = Problems()
    doc = load_json(os.path.join(out, "results.json"), p)
    rows = load_csv(os.path.join(out, "results.csv"), p)
    if doc is not None and rows is not None:
        jrows = doc["results"]
        if not jrows:
            p.add("results.json: no results")
        if len(jrows) != len(rows):
            p.add(f"results.json has {len(jrows)} rows, results.csv "
                  f"{len(rows)}")
        for i, (jrow, crow) in enumerate(zip(jrows, rows)):
            if not isinstance(jrow, dict):
                p.add(f"results.json row {i + 1}: not an object")
                continue
            check_row(i, jrow, crow, doc["k"], p)
        names = []
        for s in doc["series"]:
            if not isinstance(s, dict) or not isinstance(s.get("name"), str):
                p.add("results.json: a series without a name")
                continue
            names.append(s["name"])
        row_names = []
        for r in jrows:
            if isinstance(r, dict) and r.get("series") not in row_names:
                row_names.append(r.get("series"))
        if row_names != names:
            p.add(f"results.json: series {names} but rows name {row_names}")
        pareto = [sum(1 for r in jrows if isinstance(r, dict) and
                      r.get("series") == n and r.get("pareto") is True)
                  for n in names]
        check_svg(os.path.join(out, "plot.svg"), names, pareto, p)
    for msg in p.items:
        print(f"bench_svg_check: {msg}", file=sys.stderr)
    if p.items:
        return 1
    print(f"bench_svg_check: {out}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
