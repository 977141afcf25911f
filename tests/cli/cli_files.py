#!/usr/bin/env python3
"""tests/cli/cli_files.py - write the input files of tests/cli/test_cli.sh.

    cli_files.py DIR

Writes into DIR the same 20 vectors of dimension 4 (row i holds
i, i+0.5, -i, 1) in every import format, plus a malformed file per format.
Standard library only (no numpy): the formats are written by hand.
"""
import gzip
import json
import os
import struct
import sys

N, D = 20, 4


def rows():
    return [[float(i), i + 0.5, float(-i), 1.0] for i in range(N)]


def fvecs(path, vecs, opener=open):
    with opener(path, "wb") as f:
        for v in vecs:
            f.write(struct.pack("<i", len(v)))
            f.write(struct.pack("<%df" % len(v), *v))


def bvecs(path, vecs):
    with open(path, "wb") as f:
        for v in vecs:
            f.write(struct.pack("<i", len(v)))
            f.write(bytes(int(x) & 0xFF for x in v))


def npy(path, vecs, descr="<f4", fortran=False, cut=0):
    fmt = {"<f4": "f", "<f8": "d", "|u1": "B"}[descr]
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%d, %d), }" % (
        descr, "True" if fortran else "False", len(vecs), len(vecs[0]))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    body = b"".join(struct.pack("<%d%s" % (len(v), fmt),
                                *([int(x) & 0xFF for x in v] if fmt == "B"
                                  else v)) for v in vecs)
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)))
        f.write(header.encode("latin1"))
        f.write(body[:len(body) - cut] if cut else body)


def idx3(path, n, rows_, cols, magic=0x00000803, opener=open):
    with opener(path, "wb") as f:
        f.write(struct.pack(">IIII", magic, n, rows_, cols))
        f.write(bytes((i * 7 + j) & 0xFF for i in range(n)
                      for j in range(rows_ * cols)))


def idx1(path, labels, opener=open):
    with opener(path, "wb") as f:
        f.write(struct.pack(">II", 0x00000801, len(labels)))
        f.write(bytes(labels))


def main():
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    p = lambda name: os.path.join(d, name)
    v = rows()
    fvecs(p("a.fvecs"), v)
    fvecs(p("a.fvecs.gz"), v, opener=gzip.open)
    bvecs(p("a.bvecs"), [[i % 200, 1, 2, 3] for i in range(N)])
    npy(p("a.npy"), v)
    npy(p("a64.npy"), v, descr="<f8")
    npy(p("au8.npy"), [[i, 1, 2, 3] for i in range(N)], descr="|u1")
    with open(p("a.csv"), "w") as f:
        for r in v:
            f.write(",".join("%g" % x for x in r) + "\n")
    with open(p("a.jsonl"), "w") as f:
        for i, r in enumerate(v):
            rec = {"id": "doc-%d" % i, "vector": r,
                   "metadata": {"kind": "even" if i % 2 == 0 else "odd",
                                "n": i, "w": i / 4, "flag": i < 5,
                                "none": None}}
            f.write(json.dumps(rec) + "\n")
    idx3(p("img-idx3-ubyte"), 12, 2, 2)
    idx3(p("img-idx3-ubyte.gz"), 12, 2, 2, opener=gzip.open)
    idx1(p("fashion-labels-idx1-ubyte.gz"), [i % 10 for i in range(12)],
         opener=gzip.open)
    with open(p("ids.txt"), "w") as f:
        for i in range(N):
            f.write("key%d\n" % i)
    with open(p("meta.jsonl"), "w") as f:
        for i in range(N):
            f.write(json.dumps({"color": ["red", "green"][i % 2]}) + "\n")
    with open(p("q.csv"), "w") as f:
        f.write("3,3.5,-3,1\n")
        f.write("10,10.5,-10,1\n")

    # Malformed inputs: each names a record or line in its error.
    with open(p("bad_trunc.fvecs"), "wb") as f:
        for r in v[:5]:
            f.write(struct.pack("<i", D) + struct.pack("<4f", *r))
        f.write(struct.pack("<i", D) + struct.pack("<2f", 1, 2))
    fvecs(p("bad_dim.fvecs"), v[:3] + [[1.0, 2.0, 3.0]] + v[4:6])
    fvecs(p("wrongdim.fvecs"), [[1.0, 2.0, 3.0]] * 4)
    with open(p("bad.jsonl"), "w") as f:
        f.write(json.dumps({"id": 1001, "vector": [1, 2, 3, 4]}) + "\n")
        f.write(json.dumps({"id": 1002, "vector": [1, 2, 3, 4]}) + "\n")
        f.write('{"id": 1003, "vector": [1, 2, 3, 4\n')
        f.write(json.dumps({"id": 1004, "vector": [1, 2, 3, 4]}) + "\n")
    with open(p("bad_nan.csv"), "w") as f:
        f.write("1,2,3,4\n5,6,7,8\n1,nan,3,4\n9,9,9,9\n")
    idx3(p("bad-idx3-ubyte"), 4, 2, 2, magic=0x12340803)
    npy(p("bad_fortran.npy"), v, fortran=True)
    npy(p("bad_trunc.npy"), v, cut=6)


if __name__ == "__main__":
    main()
