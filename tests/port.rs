//! The port's crate list is the one the lockfiles call for.
//!
//! ports/sysutils/ksyms-kmod/Makefile.crates (CARGO_CRATES) must name every crates.io
//! package of the tree's Cargo.lock and of the standard library's lockfile in the
//! toolchain's rust-src (-Zbuild-std resolves it), and the port's BUILD_DEPENDS the
//! Rust release that lockfile belongs to. `sh ports/crates.sh check` compares them
//! with what `sh ports/crates.sh update` would write: the first test runs it on the
//! port, the others on copies of the port spoiled one way each, which it must refuse.
//!
//! When a crate is added or updated: `sh ports/crates.sh update`, and commit the port.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn port_dir() -> PathBuf {
    root().join("ports/sysutils/ksyms-kmod")
}

/// `sh ports/crates.sh check` on the port in `dir`.
fn check(dir: &Path) -> Output {
    Command::new("sh")
        .arg(root().join("ports/crates.sh"))
        .arg("check")
        .env("KSYMS_PORT_DIR", dir)
        .output()
        .expect("run sh ports/crates.sh check")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A copy of the port whose `file` is `f` applied to the original.
fn spoiled(file: &str, f: impl FnOnce(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["Makefile", "Makefile.crates"] {
        fs::copy(port_dir().join(name), dir.path().join(name)).expect("copy the port");
    }
    let orig = fs::read_to_string(port_dir().join(file)).expect("read the port");
    let new = f(&orig);
    assert_ne!(new, orig, "the spoiling of {file} changed nothing");
    fs::write(dir.path().join(file), new).expect("write the copy");
    dir
}

/// The crate on the first continuation line of CARGO_CRATES=.
fn second_crate(crates: &str) -> String {
    let mut lines = crates
        .lines()
        .skip_while(|l| !l.starts_with("CARGO_CRATES="));
    lines.next().expect("a CARGO_CRATES= line");
    let l = lines.next().expect("CARGO_CRATES= has more than one crate");
    l.trim().trim_end_matches('\\').trim().to_string()
}

#[test]
fn the_port_lists_the_crates_of_the_lockfiles() {
    let out = check(&port_dir());
    assert!(
        out.status.success(),
        "ports/crates.sh check failed: run `sh ports/crates.sh update` and commit the port\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn a_missing_crate_is_caught() {
    let crates = fs::read_to_string(port_dir().join("Makefile.crates")).expect("read");
    let gone = second_crate(&crates);
    let dir = spoiled("Makefile.crates", |s| {
        s.lines()
            .filter(|l| l.trim().trim_end_matches('\\').trim() != gone)
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let out = check(dir.path());
    assert!(
        !out.status.success(),
        "check accepted a list without {gone}"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("+\t\t{gone} \\")),
        "the difference does not show {gone} as missing:\n{err}"
    );
}

#[test]
fn a_crate_no_lockfile_names_is_caught() {
    let dir = spoiled("Makefile.crates", |s| {
        s.replacen(
            "CARGO_CRATES=\t",
            "CARGO_CRATES=\tksyms-no-such-crate-0.0.1 \\\n\t\t",
            1,
        )
    });
    let out = check(dir.path());
    assert!(
        !out.status.success(),
        "check accepted a crate no lockfile names"
    );
    assert!(text(&out.stderr).contains("-CARGO_CRATES=\tksyms-no-such-crate-0.0.1"));
}

#[test]
fn another_rust_release_is_caught() {
    let dir = spoiled("Makefile", |s| {
        let at = s.find("rust>=").expect("BUILD_DEPENDS names rust>=");
        let end = at + s[at..].find(":lang/rust").expect("rust>=...:lang/rust");
        format!("{}rust>=1.0.0<1.1{}", &s[..at], &s[end..])
    });
    let out = check(dir.path());
    assert!(
        !out.status.success(),
        "check accepted BUILD_DEPENDS on another Rust release"
    );
    assert!(text(&out.stderr).contains("does not ask for rust>="));
}
