# GNU make, for Linux hosts: the kernel static library, the host demo, the tests.
# On FreeBSD, make(1) reads BSDmakefile instead, which builds ksyms.ko.

CARGO ?= cargo

.PHONY: all kernel-lib demo test bench bindings clean

# The main job: the static library that ksyms.ko links, then a demo snapshot
# built from ELF files on this machine, summarised by the ksyms tool.
all: kernel-lib demo

# build/ARCH/ksyms_rs.o for this host's architecture (KSYMS_TARGET_ARCH=aarch64
# for arm64), built and checked by kmod/kbuild.
kernel-lib:
	$(CARGO) run -q -p ksyms-kbuild -- build

demo:
	sh tests/demo.sh

# The test command of the README and of .ci/run.
test:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	$(CARGO) run -q -p ksyms-kbuild -- build --arch amd64
	$(CARGO) run -q -p ksyms-kbuild -- build --arch aarch64

bench:
	sh tests/bench.sh

bindings:
	KSYMS_BLESS=1 $(CARGO) test --test bindings

clean:
	$(CARGO) clean

# A build without network: vendor/ and .cargo/config.toml (see ports/crates.sh),
# the crates of Cargo.lock and those -Zbuild-std needs. Online, once.
.PHONY: vendor unvendor

vendor:
	sh ports/crates.sh vendor

unvendor:
	sh ports/crates.sh unvendor
