#!/bin/sh
# tests/bench.sh: the snapshot benchmark (benches/snapshot.rs) and its figures.
#
# Builds a kernel-scale snapshot (60,000 kernel symbols + 40 modules x 1,500,
# names of 10 to 40 bytes) from in-memory tables into a preallocated buffer, in
# the same run as a plain memcpy of as many bytes, and prints bytes/s for both
# and their ratio (target: the snapshot at >= 50% of memcpy). Takes a few seconds
# once built. Usage: sh tests/bench.sh
set -eu
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
out=$($CARGO bench --bench snapshot 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
printf '%s\n' "$out" | grep -E '^(snapshot|memcpy|ratio)'
