#!/bin/sh
#
# kmod/cargo-kernel.sh: build the Rust half of ksyms.ko, and check that it fits
# the FreeBSD amd64 kernel.
#
#   sh kmod/cargo-kernel.sh                   build build/libksyms.a and build/ksyms_rs.o
#   sh kmod/cargo-kernel.sh --check           build, then run the kernel-fit checks on
#                                             build/ksyms_rs.o
#   sh kmod/cargo-kernel.sh --check-object F  run the object checks on F only (no build);
#                                             tests/kernel_fit.rs feeds it bad objects
#
# Used by Makefile (GNU make, Linux: `make kernel-lib`, `make test`), by BSDmakefile
# (FreeBSD: `make`) and by kmod/Makefile. POSIX sh; needs cargo (the toolchain pinned
# in rust-toolchain.toml, with rust-src), ar, ld, readelf and objdump (llvm-objdump
# works too: set OBJDUMP).
#
# The build
# ---------
# The crate is compiled for x86_64-unknown-none. `core` is rebuilt from rust-src
# with the same flags (-Zbuild-std=core, allowed on a stable compiler by
# RUSTC_BOOTSTRAP=1, as Rust-for-Linux does) so that nothing precompiled with other
# codegen options reaches the module. compiler_builtins comes with it, minus its
# mem* functions: the kernel provides memcpy, memset, memmove and memcmp.
#
#   -C code-model=kernel        code and data live in the top 2 GiB (also the
#                               target's default; stated so a target change cannot
#                               silently drop it)
#   -C relocation-model=static  no GOT: the target defaults to PIC, whose
#                               GOTPCREL relocations FreeBSD's kernel linker rejects
#   -C relro-level=off          no RELRO bookkeeping in a kernel object
#   -C force-unwind-tables=no   no .eh_frame: panic=abort, nothing unwinds
# No red zone and soft-float (no SSE/MMX/x87) are the target's defaults; --check
# verifies that they still are, and that the code obeys them.
#
# The crate is declared as staticlib + rlib (the rlib is for the host tests), and
# rustc does no LTO when an rlib is among the outputs; this script asks cargo for
# the staticlib alone, with fat LTO and one codegen unit, so that what reaches the
# module is only the code the entry points use (core included), with every Rust
# symbol internal except the #[no_mangle] entry points.
#
# The products (build/ is git-ignored):
#   build/libksyms.a   the static library, minus compiler_builtins' mem* (below)
#   build/ksyms_rs.o   `ld -r` of the library, rooted at the ksyms_rs_* entry points
#                      of kmod/ksyms_kpi.h: the archive members they need and nothing
#                      else. This one object is what kmod/Makefile links into ksyms.ko
#                      (OBJS), and what the checks look at.
# The build uses its own target directory (target/kernel) so that it never
# invalidates the host build in target/.

set -eu

usage() {
	echo "usage: sh kmod/cargo-kernel.sh [--check | --check-object FILE]" >&2
	exit 2
}

MODE=build
OBJECT=
case $# in
0) ;;
1)	case $1 in
	--check) MODE=check ;;
	-h|--help) usage ;;
	*) usage ;;
	esac ;;
2)	[ "$1" = --check-object ] || usage
	MODE=object
	OBJECT=$2 ;;
*) usage ;;
esac

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
cd "$ROOT"

CARGO=${CARGO:-cargo}
AR=${AR:-ar}
LD=${LD:-ld}
READELF=${READELF:-readelf}
OBJDUMP=${OBJDUMP:-objdump}
TARGET=x86_64-unknown-none
HEADER=kmod/ksyms_kpi.h
OUT=${KSYMS_KERNEL_OUT:-build}
# The largest .text the checks accept: a sanity bound, ten times what the code needs.
TEXT_LIMIT=${KSYMS_TEXT_LIMIT:-102400}

die() {
	echo "cargo-kernel.sh: $*" >&2
	exit 1
}

need() {
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 ||
		    die "$t not found: install it (binutils on Debian/Ubuntu) or set its variable"
	done
}

# The functions kmod/ksyms_kpi.h declares with the prefix $1 (kpi_, ksyms_rs_).
declared() {
	grep -v '^typedef' "$HEADER" | grep -o "$1[a-z0-9_]*(" | tr -d '(' | sort -u
}

# rust-toolchain.toml lists the target and rust-src, but rustup adds them by itself
# only where auto-install is on (RUSTUP_AUTO_INSTALL=0 turns it off): ask for them
# (a quick no-op once they are there). Without rustup, cargo says what is missing.
toolchain_parts() {
	command -v rustup >/dev/null 2>&1 || return 0
	for step in "component add rust-src" "target add $TARGET"; do
		# shellcheck disable=SC2086 # $step is a rustup subcommand and its operand
		log=$(rustup $step 2>&1) || { printf '%s\n' "$log" >&2; die "rustup $step failed"; }
	done
}

build() {
	need "$CARGO" "$AR" "$LD"
	toolchain_parts
	mkdir -p "$OUT"
	RUSTC_BOOTSTRAP=1 \
	CARGO_TARGET_DIR="${KSYMS_KERNEL_TARGET_DIR:-$ROOT/target/kernel}" \
	CARGO_PROFILE_RELEASE_LTO=fat \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	CARGO_PROFILE_RELEASE_PANIC=abort \
	CARGO_PROFILE_RELEASE_DEBUG=false \
	RUSTFLAGS="${KSYMS_KERNEL_RUSTFLAGS:--C code-model=kernel -C relocation-model=static -C relro-level=off -C force-unwind-tables=no}" \
	    "$CARGO" rustc --quiet --release --lib --crate-type staticlib \
	    --config 'profile.release.package.compiler_builtins.codegen-units=10000' \
	    --target "$TARGET" -Zbuild-std=core
	lib="${KSYMS_KERNEL_TARGET_DIR:-$ROOT/target/kernel}/$TARGET/release/libksyms.a"
	[ -f "$lib" ] || die "cargo did not produce $lib"
	cp "$lib" "$OUT/libksyms.a.tmp"
	# compiler_builtins forces its `mem` feature on for every *-none target (its
	# build.rs), so the archive carries weak memcpy & co. Left in, `ld -r` would
	# pull them in for the first memcmp the code makes, and the module would use
	# them instead of the kernel's. Drop the members that define them (one function
	# per member: compiler_builtins is built with 10000 codegen units, as upstream
	# does), so those references stay undefined and resolve to the kernel's.
	memmembers=$("$READELF" -s -W "$OUT/libksyms.a.tmp" | awk '
	    /^File: / { m = $2; sub(/^[^(]*\(/, "", m); sub(/\)$/, "", m) }
	    $7 != "UND" && $5 != "LOCAL" && $8 ~ /^(memcpy|memset|memmove|memcmp|bcmp|strlen)$/ { print m }' |
	    sort -u)
	if [ -n "$memmembers" ]; then
		# GNU ar's LTO plugin (an older LLVM than rustc's) complains, on
		# stdout, about every member it cannot read: keep its chatter for
		# when ar fails.
		# shellcheck disable=SC2086 # a list of member names
		"$AR" d "$OUT/libksyms.a.tmp" $memmembers >"$OUT/ar.log" 2>&1 ||
		    { cat "$OUT/ar.log" >&2; die "$AR d failed"; }
	fi
	mv "$OUT/libksyms.a.tmp" "$OUT/libksyms.a"

	roots=
	for s in $(declared ksyms_rs_); do
		roots="$roots -u $s"
	done
	[ -n "$roots" ] || die "no ksyms_rs_* entry point found in $HEADER"
	# -m: with only an archive as input, ld.lld (FreeBSD's ld) cannot guess the
	# target.
	# shellcheck disable=SC2086 # $roots is a list of words
	"$LD" -m elf_x86_64 -r $roots -o "$OUT/ksyms_rs.o.tmp" "$OUT/libksyms.a"
	mv "$OUT/ksyms_rs.o.tmp" "$OUT/ksyms_rs.o"
	echo "cargo-kernel.sh: $OUT/libksyms.a $(wc -c <"$OUT/libksyms.a" | tr -d ' ') bytes;" \
	    "$OUT/ksyms_rs.o text $(text_size "$OUT/ksyms_rs.o") bytes"
}

# The section table of object $1, one line per section: name, type, size in
# bytes (decimal), flags ("-" for none).
section_table() {
	# readelf -S -W: "[Nr] Name Type Address Off Size ES Flg Lk Inf Al"; drop the
	# "[ n]" column (it may contain a blank), then Flg is the 7th field when present.
	"$READELF" -S -W "$1" | sed -n 's/^ *\[ *[0-9]*\] //p' | awk '
	    function hex(s,   i, v) {
		v = 0
		for (i = 1; i <= length(s); i++)
			v = v * 16 + index("0123456789abcdef", substr(tolower(s), i, 1)) - 1
		return v
	    }
	    NF == 10 || NF == 9 { print $1, $2, hex($5), (NF == 10 ? $7 : "-") }'
}

# The total size of the executable sections of object $1.
text_size() {
	section_table "$1" | awk '$4 ~ /X/ { total += $3 } END { printf "%d\n", total }'
}

FAILED=0
fail() {
	echo "KERNEL-FIT FAIL ($1): $2" >&2
	FAILED=1
}
pass() {
	echo "kernel-fit ok ($1): $2"
}

# --- the checks ---------------------------------------------------------------

# The target's own defaults that the flags above rely on.
check_target() {
	spec=$(RUSTC_BOOTSTRAP=1 rustc -Z unstable-options --print target-spec-json \
	    --target "$TARGET") || die "rustc --print target-spec-json failed"
	ok=1
	printf '%s\n' "$spec" | grep -q '"disable-redzone": *true' ||
	    { fail target "$TARGET no longer disables the red zone"; ok=0; }
	printf '%s\n' "$spec" | grep '"features"' | grep -q '+soft-float' ||
	    { fail target "$TARGET is no longer soft-float"; ok=0; }
	for f in -mmx -sse -sse2 -avx; do
		printf '%s\n' "$spec" | grep '"features"' | grep -q -- "$f," ||
		    { fail target "$TARGET no longer disables ${f#-}"; ok=0; }
	done
	printf '%s\n' "$spec" | grep -q '"panic-strategy": *"abort"' ||
	    { fail target "$TARGET no longer aborts on panic"; ok=0; }
	[ $ok = 0 ] || pass target "$TARGET: no red zone, soft-float, no MMX/SSE/AVX, panic=abort"
}

# Relocation types: sys/amd64/amd64/elf_machdep.c (FreeBSD 13.2), elf_reloc_internal,
# is what link_elf_obj.c applies to a module's relocations. For a relocatable object
# the types it handles are R_X86_64_64, PC32, PLT32 and 32S (plus NONE, and the
# dynamic-object types COPY/GLOB_DAT/JMP_SLOT/RELATIVE/IRELATIVE that `ld -r` never
# emits). Anything else, GOTPCREL(X) and R_X86_64_32 included, fails kldload with
# "unexpected relocation type".
check_relocs() {
	types=$("$READELF" -r -W "$1" | awk '$1 ~ /^[0-9a-f]+$/ && NF >= 3 { print $3 }' |
	    sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }')
	if [ -z "$types" ]; then
		# Fine for an object without relocation sections; otherwise readelf's
		# output was not understood, and passing would be a lie.
		if section_table "$1" | awk '($2 == "RELA" || $2 == "REL") && $3 > 0 { f = 1 } END { exit !f }'; then
			fail relocations "relocation sections in $1, but no relocation understood in readelf's output"
		else
			pass relocations "none"
		fi
		return
	fi
	bad=$("$READELF" -r -W "$1" | awk '$1 ~ /^[0-9a-f]+$/ && NF >= 3 { print $3 }' |
	    grep -v -x -e R_X86_64_64 -e R_X86_64_PC32 -e R_X86_64_PLT32 -e R_X86_64_32S |
	    sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }') || true
	if [ -n "$bad" ]; then
		fail relocations "types the kernel linker does not apply: $bad"
	else
		pass relocations "$types"
	fi
}

# No floating-point or vector state: the kernel does not save it for kernel code
# (fpu_kern_enter(9) aside). x87 instructions start with f, AVX ones with v.
check_instructions() {
	dis=$("$OBJDUMP" -d --no-show-raw-insn "$1") || die "$OBJDUMP -d $1 failed"
	n=$(printf '%s\n' "$dis" | grep -c '^ *[0-9a-f][0-9a-f]*:	') || true
	if [ "$n" -eq 0 ] && [ "$(text_size "$1")" -gt 0 ]; then
		fail instructions "code in $1, but no instruction understood in $OBJDUMP's output"
		return
	fi
	regs=$(printf '%s\n' "$dis" | grep -E '%([xyz]mm[0-9]+|mm[0-7]|st\b|st\([0-7]\)|k[0-7]\b)' | head -5) || true
	insns=$(printf '%s\n' "$dis" | grep '^ *[0-9a-f][0-9a-f]*:	' | cut -f2 |
	    awk '{ print $1 }' | grep -E -x '(f[a-z0-9]*|v[a-z0-9]*|emms|femms|ldmxcsr|stmxcsr|xsave[a-z0-9]*|xrstor[a-z0-9]*)' |
	    grep -v -x -e fs -e verr -e verw | sort | uniq -c | head -10) || true
	# The red zone: memory below %rsp, which an interrupt taken on this stack
	# overwrites. Seen as a negative offset from %rsp, or, in a function with a
	# frame pointer, a negative offset from %rbp when the function never lowers
	# %rsp after setting %rbp (a heuristic, per function, on objdump's output).
	redzone=$(printf '%s\n' "$dis" | awk '
	    function report() {
		if (fn != "" && negrbp != "" && framed && !lowered)
			print fn ": " negrbp
	    }
	    /^[0-9a-f]+ <.*>:$/ { report(); fn = $2; sub(/:$/, "", fn); framed = lowered = 0; negrbp = ""; next }
	    !/^ *[0-9a-f]+:	/ { next }
	    /-0x[0-9a-f]+\(%rsp[,)]/ { print fn ": " $0 }
	    /\tmov +%rsp,%rbp$/ { framed = 1; next }
	    framed && (/\tpush/ || /,%rsp$/ || /\tenter/) { lowered = 1 }
	    framed && negrbp == "" && /-0x[0-9a-f]+\(%rbp[,)]/ { negrbp = $0 }
	    END { report() }' | head -5) || true
	ok=1
	[ -z "$regs" ] || { fail instructions "FPU/SIMD registers used:
$regs"; ok=0; }
	[ -z "$insns" ] || { fail instructions "FPU/SIMD instructions used:
$insns"; ok=0; }
	[ -z "$redzone" ] || { fail red-zone "stack accessed below %rsp:
$redzone"; ok=0; }
	[ $ok = 0 ] || pass instructions "$n instructions, no x87/MMX/SSE/AVX, no red zone"
}

# Undefined symbols: only what the shim (the kpi_* of kmod/ksyms_kpi.h) and the
# kernel provide. The kernel's amd64 mem* functions (sys/amd64/amd64/machdep.c,
# support.S, 13.2): memcpy, memset, memmove (ifuncs) and memcmp. There is no bcmp
# on amd64 (sys/systm.h makes it a macro; libkern/bcmp.c is not in
# conf/files.amd64), so an LLVM that turned memcmp()==0 into bcmp() would produce
# a module that fails to load: it is not allowed.
check_undefined() {
	allowed=$( (declared kpi_; printf '%s\n' memcpy memset memmove memcmp) | sort -u)
	und=$("$READELF" -s -W "$1" | awk '$7 == "UND" && $8 != "" { print $8 }' | sort -u)
	bad=$(printf '%s\n' "$und" | grep . | grep -v -x -F "$allowed" | tr '\n' ' ') || true
	if [ -n "$bad" ]; then
		fail undefined "symbols neither the shim nor the kernel provides: $bad"
	else
		pass undefined "$(printf '%s\n' "$und" | grep -c .) symbols, all kpi_* of $HEADER or the kernel's mem*"
	fi
	# The kernel's mem* must be the ones used: a copy in the module (compiler_builtins
	# with its mem feature) would be slow byte loops that shadow them.
	own=$("$READELF" -s -W "$1" | awk '$7 != "UND" && $5 != "LOCAL" { print $8 }' |
	    grep -x -e memcpy -e memset -e memmove -e memcmp -e bcmp | tr '\n' ' ') || true
	[ -z "$own" ] || fail undefined "the object defines its own $own"
}

# Sections the kernel linker would mishandle or that a no-unwind, no-TLS,
# no-constructor build must not have. 13.2's link_elf_obj.c loads .init_array/.ctors
# and runs them at load, loads TLS sections as ordinary data (wrong per-thread
# semantics), maps .eh_frame (SHT_X86_64_UNWIND) uselessly, and has no GOT or PLT.
check_sections() {
	bad=$(section_table "$1" | awk '
	    $1 ~ /^\.(init_array|fini_array|preinit_array|ctors|dtors|tdata|tbss|eh_frame|eh_frame_hdr|gcc_except_table|got|got\.plt|plt|dynamic|interp)($|\.)/ ||
	    $2 ~ /^(INIT_ARRAY|FINI_ARRAY|PREINIT_ARRAY|X86_64_UNWIND|DYNAMIC|DYNSYM)$/ ||
	    $4 ~ /T/ { printf "%s%s (%s)", sep, $1, $2; sep = ", " }')
	common=$("$READELF" -s -W "$1" | awk '$7 == "COM" { print $8 }' | tr '\n' ' ')
	tls=$("$READELF" -s -W "$1" | awk '$4 == "TLS" { print $8 }' | tr '\n' ' ')
	ok=1
	[ -z "$bad" ] || { fail sections "$bad"; ok=0; }
	[ -z "$common" ] || { fail sections "common symbols: $common"; ok=0; }
	[ -z "$tls" ] || { fail sections "thread-local symbols: $tls"; ok=0; }
	[ $ok = 0 ] || pass sections "no constructors, TLS, unwind tables, GOT/PLT or commons"
}

check_text_size() {
	text=$(text_size "$1")
	if [ "$text" -ge "$TEXT_LIMIT" ]; then
		fail text-size "$text bytes of code, limit $TEXT_LIMIT"
	else
		pass text-size "$text bytes of code (limit $TEXT_LIMIT)"
	fi
}

# Every entry point the shim calls is defined, as a global function.
check_entry_points() {
	missing=
	for s in $(declared ksyms_rs_); do
		"$READELF" -s -W "$1" | awk -v s="$s" '
		    $8 == s && $7 != "UND" && $5 == "GLOBAL" && $4 == "FUNC" { found = 1 }
		    END { exit !found }' || missing="$missing $s"
	done
	if [ -n "$missing" ]; then
		fail entry-points "not defined as global functions:$missing"
	else
		pass entry-points "all $(declared ksyms_rs_ | grep -c .) ksyms_rs_* of $HEADER defined"
	fi
}

check_object() {
	[ -f "$1" ] || die "$1: no such file"
	need "$READELF" "$OBJDUMP"
	hdr=$("$READELF" -h "$1" 2>&1) || true
	if ! printf '%s\n' "$hdr" | grep -q 'REL (Relocatable file)' ||
	    ! printf '%s\n' "$hdr" | grep -q 'X86-64'; then
		fail object "$1 is not an x86-64 relocatable ELF object"
		return
	fi
	check_relocs "$1"
	check_instructions "$1"
	check_undefined "$1"
	check_sections "$1"
	check_text_size "$1"
}

case $MODE in
build)
	build ;;
check)
	build
	check_target
	check_object "$OUT/ksyms_rs.o"
	check_entry_points "$OUT/ksyms_rs.o" ;;
object)
	check_object "$OBJECT" ;;
esac

if [ $FAILED != 0 ]; then
	echo "cargo-kernel.sh: the kernel-fit checks FAILED (see KERNEL-FIT FAIL above)" >&2
	exit 1
fi
[ $MODE = build ] || echo "cargo-kernel.sh: all kernel-fit checks passed"
