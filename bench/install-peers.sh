#!/bin/sh
# bench/install-peers.sh - install the peers that bench_hnsw (and
# `iqdb bench`) compare iqdb's hnsw index with, through apt: hnswlib
# (libhnswlib-dev, header only, compiled at run time with g++, and
# python3-hnswlib), FAISS (python3-faiss, for bench/peers/faiss_peer.py)
# and an OpenMP OpenBLAS for FAISS. Needs root: it uses sudo when run as
# another user. A missing peer is skipped by the bench, never fatal.
set -eu
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install-peers: run as root or install sudo" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    libhnswlib-dev python3-faiss python3-hnswlib libopenblas0-openmp \
    g++ >/dev/null
echo "install-peers: hnswlib, FAISS and g++ installed"
