#!/bin/sh
# tests/bench.sh: the two benchmarks and their figures (`make bench`).
#
# benches/snapshot.rs: a kernel-scale snapshot (60,000 kernel symbols + 40
#   modules x 1,500, names of 10 to 40 bytes) built from in-memory tables into a
#   preallocated buffer, in the same run as a plain memcpy of as many bytes:
#   bytes/s for both and their ratio (target: the snapshot at >= 50% of memcpy).
# benches/open.rs: open + read-all + close through the driver's entry points on
#   the simulated kernel at the same scale, first open (snapshot built) against
#   repeated opens (cached snapshot shared), and the ratio.
# Usage: sh tests/bench.sh
set -eu
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
for bench in snapshot open; do
	out=$($CARGO bench --bench "$bench" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
	printf '%s\n' "$out" | sed -n '/^ *Running /,$p' | sed '1d'
done
