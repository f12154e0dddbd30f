#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
#
# tests/offline.sh: the build without network, as README's "offline" way in
# does it, in a copy of the tree (the tree itself is left as it is):
#
#   1. online: `make vendor` (ports/crates.sh: the crates of the lockfiles,
#      the standard library's included, into vendor/, and .cargo/config.toml)
#   2. with cargo cut off from every registry: an empty CARGO_HOME (no index,
#      no crate cache), CARGO_NET_OFFLINE=true, and every proxy variable cargo
#      or libcurl reads pointed at a closed port (127.0.0.1:9); first a probe
#      proves that no crate can be fetched so (and can be online)
#   3. `make kernel-lib` (the Rust half of ksyms.ko, core rebuilt with
#      -Zbuild-std) and the tool as BSDmakefile builds it
#      (cargo build --release -p ksyms-tool)
#   4. checks: build/amd64/ksyms_rs.o is an x86-64 relocatable object, the tool runs,
#      and CARGO_HOME is still without a registry or git directory.
#
# Run by .ci/run after `make test`. Needs git (the copy is of the files git
# tracks or would track), cargo with the pinned toolchain and rust-src, and
# the network for step 1 and for the probe's online run.
set -eu

ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$ROOT"
CARGO=${CARGO:-cargo}

die() {
	echo "offline: FAIL: $*" >&2
	exit 1
}

git rev-parse --git-dir >/dev/null 2>&1 ||
    die "not a git checkout (or no git): the copy of the tree is made from git ls-files"

T=$(mktemp -d "${TMPDIR:-/tmp}/ksyms-offline.XXXXXX")
trap 'rm -rf "$T"' EXIT
trap 'exit 1' INT TERM
mkdir "$T/src" "$T/cargo-home" "$T/probe" "$T/probe-home"

# The tree as a fresh checkout would have it, with uncommitted changes: no
# target/, build/, vendor/ or .cargo/config.toml.
git ls-files -c -o --exclude-standard | while IFS= read -r f; do
	[ -f "$f" ] && printf '%s\n' "$f"
done | tar -cf - -T - | tar -xf - -C "$T/src"
if [ -e "$T/src/vendor" ] || [ -e "$T/src/.cargo/config.toml" ]; then
	die "the copy of the tree already has vendor/ or .cargo/config.toml"
fi

echo "offline: 1. make vendor (online)"
(cd "$T/src" && make --no-print-directory vendor) || die "make vendor failed"

# Step 2: the environment without network. 127.0.0.1:9 (discard) has no
# listener here: a connection through any of these proxies is refused.
cut_off() {
	env CARGO_HOME="${home:-$T/cargo-home}" CARGO_NET_OFFLINE=true CARGO_NET_RETRY=0 \
	    CARGO_HTTP_PROXY=http://127.0.0.1:9 \
	    http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 \
	    HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
	    ALL_PROXY=http://127.0.0.1:9 all_proxy=http://127.0.0.1:9 \
	    no_proxy= NO_PROXY= "$@"
}

# The probe: a package outside the tree (so neither .cargo/config.toml nor
# vendor/ applies) cannot fetch its one crate from the registry, neither in
# offline mode nor, with offline mode off, through the proxies. It has a
# CARGO_HOME of its own, as cargo makes registry/ there when it tries.
cat >"$T/probe/Cargo.toml" <<'EOF'
[package]
name = "probe"
version = "0.0.0"
edition = "2021"

[dependencies]
static_assertions = "1"
EOF
mkdir "$T/probe/src" && : >"$T/probe/src/lib.rs"
# Online, with a CARGO_HOME of its own too, it must work, or its failures below
# would prove nothing.
if ! (cd "$T/probe" && CARGO_HOME="$T/probe-online" "$CARGO" fetch --quiet) >"$T/probe.log" 2>&1; then
	cat "$T/probe.log" >&2
	die "the probe cannot fetch its crate even online"
fi
rm -f "$T/probe/Cargo.lock"
if (cd "$T/probe" && home="$T/probe-home" cut_off "$CARGO" fetch --quiet) >"$T/probe.log" 2>&1; then
	die "the probe fetched a crate in offline mode: the network is not cut off"
fi
if (cd "$T/probe" && home="$T/probe-home" cut_off env CARGO_NET_OFFLINE=false "$CARGO" fetch --quiet) >"$T/probe.log" 2>&1; then
	die "the probe fetched a crate through the proxies: the network is not cut off"
fi
echo "offline: 2. cargo, cut off, cannot fetch a crate from the registry (probe)"

echo "offline: 3. make kernel-lib, cargo build --release -p ksyms-tool (offline)"
(cd "$T/src" && cut_off make --no-print-directory kernel-lib) || die "make kernel-lib failed offline"
(cd "$T/src" && cut_off "$CARGO" build --quiet --release -p ksyms-tool) ||
    die "cargo build --release -p ksyms-tool failed offline"

obj="$T/src/build/amd64/ksyms_rs.o"
[ -s "$obj" ] || die "no build/amd64/ksyms_rs.o"
hdr=$(readelf -h "$obj") || die "readelf -h build/amd64/ksyms_rs.o failed"
for want in 'REL (Relocatable file)' 'X86-64'; do
	printf '%s\n' "$hdr" | grep -q -F "$want" ||
	    die "build/amd64/ksyms_rs.o is not an x86-64 relocatable object"
done
tool="$T/src/target/release/ksyms"
[ -x "$tool" ] || die "no target/release/ksyms"
"$tool" --help >/dev/null 2>&1 || die "target/release/ksyms --help failed"
for d in registry git; do
	[ ! -e "$T/cargo-home/$d" ] || die "cargo wrote $d/ into the empty CARGO_HOME: it fetched something"
done
echo "offline: 4. build/amd64/ksyms_rs.o (x86-64 relocatable) and target/release/ksyms built" \
    "from $(find "$T/src/vendor" -mindepth 1 -maxdepth 1 -type d | wc -l | tr -d ' ') vendored crates; CARGO_HOME untouched"
echo "offline: 1 passed, 0 failed"
