//! The manual pages: `mandoc -Tlint` has nothing to say about them, and they
//! name what the code names.
//!
//! One kind of message is set aside: "referenced manual not found" for `.Xr`
//! references (and mandoc.db staleness notes), which depend on which manuals the
//! machine running the test has installed: on Linux, lockstat(1), kldload(8) and
//! the other FreeBSD pages never are.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const PAGES: [&str; 2] = ["man/ksyms.4", "man/ksyms.8"];

/// Whether a mandoc message depends only on the host's installed manuals.
fn host_dependent(line: &str) -> bool {
    line.contains("STYLE: referenced manual not found: Xr ")
        || line.starts_with("mandoc: outdated mandoc.db lacks ")
}

/// What `mandoc -Tlint` prints (stdout and stderr) for `pages`.
fn lint<P: AsRef<std::ffi::OsStr>>(pages: impl IntoIterator<Item = P>) -> String {
    let out = Command::new("mandoc")
        .arg("-Tlint")
        .args(pages)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mandoc: {e}; install it (apt-get install mandoc)"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn mandoc_lint_is_clean() {
    let text = lint(PAGES.iter().map(|p| repo().join(p)));
    let complaints: Vec<&str> = text.lines().filter(|l| !host_dependent(l)).collect();
    assert!(
        complaints.is_empty(),
        "mandoc -Tlint:\n{}",
        complaints.join("\n")
    );
}

#[test]
fn lint_filter_lets_real_faults_through() {
    // A page with a real fault is caught by the same filter.
    let dir = std::env::temp_dir().join(format!("ksyms-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.4");
    std::fs::write(
        &bad,
        ".Dd November 26, 2026\n.Dt BAD 4\n.Os\n.Sh NAME\n.Nm bad\n.Nd bad page\n.Sh DESCRIPTION\nTrailing space \n.Xr nosuchpage 4\n",
    )
    .unwrap();
    let text = lint([&bad]);
    let kept: Vec<&str> = text.lines().filter(|l| !host_dependent(l)).collect();
    assert!(kept.iter().any(|l| l.contains("whitespace")), "{text}");
    // ... while the unknown reference is the one thing set aside.
    assert!(
        text.contains("referenced manual not found: Xr nosuchpage 4"),
        "{text}"
    );
    assert!(!kept.iter().any(|l| l.contains("nosuchpage")), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pages_agree_with_the_code() {
    let dev = std::fs::read_to_string(repo().join("man/ksyms.4")).unwrap();
    let tool = std::fs::read_to_string(repo().join("man/ksyms.8")).unwrap();
    // The tunable the tool's message names is the one the driver's page documents.
    assert!(dev.contains(ksyms_tool::input::MODE_TUNABLE));
    // ... and the one the shim fetches.
    let shim = std::fs::read_to_string(repo().join("kmod/ksyms_shim.c")).unwrap();
    assert!(shim.contains(&format!(
        "TUNABLE_INT_FETCH(\"{}\"",
        ksyms_tool::input::MODE_TUNABLE
    )));
    // The layout numbers of the page are the engine's.
    use ksyms::snapshot::HEADER_SIZE;
    assert!(dev.contains(&format!("At offset {HEADER_SIZE}:")));
    assert!(dev.contains(".Dt KSYMS 4\n") && tool.contains(".Dt KSYMS 8\n"));
    // Every command and option clap knows has its entry in the page.
    let mut cmd = ksyms_tool::cli::command();
    cmd.build();
    let subs: Vec<clap::Command> = cmd.get_subcommands().cloned().collect();
    assert_eq!(subs.len(), 6);
    for sub in std::iter::once(&cmd).chain(&subs) {
        let name = sub.get_name();
        if sub.get_name() != cmd.get_name() {
            assert!(ksyms_tool::cli::USAGE.contains(name));
            assert!(tool.contains(&format!(".It Cm {name}")), "{name}");
        }
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(tool.contains(&format!("Fl -{long}")), "{name} --{long}");
            }
            if let Some(short) = arg.get_short() {
                assert!(tool.contains(&format!(".It Fl {short}")), "{name} -{short}");
            }
        }
    }
}
