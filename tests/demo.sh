#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# The demo of `make` on Linux: a /dev/ksyms snapshot of a simulated kernel made
# of ELF files on this machine, then what the ksyms tool says about it.
#
#   kernel   the C library (libc.so.6), its symbols at the values in the file
#   modules  tests/demo/*.c, compiled here to relocatable objects and "loaded"
#            by the simulated kernel linker
#
# examples/simulate.rs boots the simulated kernel of the tests (tests/sim) with
# these files and reads /dev/ksyms through the driver's real entry points (open,
# read, KIOCGSIZE, close); `ksyms` then summarises, checks, searches and resolves.
#
# Needs: cc, cargo (the pinned toolchain). Output: target/demo/.
set -eu

cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
CC=${CC:-cc}
OUT=target/demo
mkdir -p "$OUT"

die() {
	echo "demo: $*" >&2
	exit 1
}

command -v "$CC" >/dev/null 2>&1 || die "no C compiler ($CC): apt-get install gcc"

# The "kernel": the C library every Debian machine has.
KERNEL=$("$CC" -print-file-name=libc.so.6 2>/dev/null || true)
case "$KERNEL" in
/*) ;;
*) KERNEL=/lib/x86_64-linux-gnu/libc.so.6 ;;
esac
[ -r "$KERNEL" ] || die "cannot find libc.so.6 (tried $KERNEL)"
KERNEL=$(readlink -f "$KERNEL")

# The "modules".
MODULES=
for src in tests/demo/*.c; do
	obj="$OUT/$(basename "$src" .c).o"
	"$CC" -c -O2 -fno-inline -o "$obj" "$src"
	MODULES="$MODULES $obj"
done

SNAP="$OUT/ksyms.snapshot"
"$CARGO" build --quiet -p ksyms-tool
KSYMS=target/debug/ksyms

echo "==> simulated kernel: $KERNEL (the kernel) and$MODULES (modules)"
# shellcheck disable=SC2086
"$CARGO" run --quiet --example simulate -- -o "$SNAP" "$KERNEL" $MODULES

echo
echo "==> ksyms -f $SNAP summary"
"$KSYMS" -f "$SNAP" summary

echo
echo "==> ksyms -f $SNAP check"
"$KSYMS" -f "$SNAP" check

# An address 0x10 bytes into a module's function and one into the kernel's
# malloc: lookup prints them as lockstat(1) would.
addr_of() {
	"$KSYMS" -f "$SNAP" find "$1" | awk -v n="$1" '$NF == n { print $1; exit }'
}
HELLO=$(addr_of hello_modevent)
MALLOC=$(addr_of malloc)
[ -n "$HELLO" ] && [ -n "$MALLOC" ] || die "hello_modevent or malloc missing from the snapshot"
A1="$HELLO+0x10"
A2="$MALLOC+0x20"

echo
echo "==> ksyms -f $SNAP find 'hello_*' 'counter_*'"
"$KSYMS" -f "$SNAP" find 'hello_*' 'counter_*'

echo
echo "==> ksyms -f $SNAP lookup $A1 $A2"
"$KSYMS" -f "$SNAP" lookup "$A1" "$A2"
