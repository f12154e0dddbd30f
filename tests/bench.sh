#!/bin/sh
# tests/bench.sh: the benchmarks and their figures (`make bench`).
#
# benches/vs_c (crate ksyms-vs-c): ours against FreeBSD's C driver's algorithm
#   (benches/vs_c/ksyms_c.c), on the same linker tables and the same costed
#   kernel services, at two scales (a 13.2-like small kernel of 22,000 symbols
#   and 1 MB, and 120,000 symbols): the first open + read all + close after a
#   module change, and the build alone; ours/C and the kernel-service calls of
#   each (target: ours/C <= 0.7 at both).
# benches/open.rs: open + read-all + close through the driver's entry points on
#   the simulated kernel at the larger scale, first open (snapshot built)
#   against repeated opens (cached snapshot shared), and the ratio.
# Usage: sh tests/bench.sh
set -eu
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
for bench in "-p ksyms-vs-c --bench vs_c" "-p ksyms --bench open"; do
	# shellcheck disable=SC2086
	out=$($CARGO bench $bench 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
	printf '%s\n' "$out" | sed -n '/^ *Running [^u]/,$p' | sed '1d'
done
