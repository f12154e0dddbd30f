//! `kbuild`: builds the Rust half of ksyms.ko and checks that it fits the kernel.
//!
//!     kbuild build [--arch ARCH]            build build/ARCH/ksyms_rs.o, then check it
//!     kbuild check [--arch ARCH] [--text-limit BYTES] OBJECT
//!                                           check any object (tests feed it bad ones)
//!     kbuild spec [--arch ARCH]             print the kernel target's rustc spec
//!
//! ARCH is FreeBSD's MACHINE_ARCH (amd64, aarch64) or MACHINE (arm64); by default
//! $KSYMS_TARGET_ARCH, else the host's. Exit status: 0, 1 when a check fails or a
//! step cannot be done, 2 for a usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ksyms_kbuild::arch::Arch;
use ksyms_kbuild::fit::{self, Options};
use ksyms_kbuild::header::Header;
use ksyms_kbuild::kernel::{self, Paths};
use ksyms_kbuild::Failure;

const USAGE: &str = "usage: kbuild build [--arch ARCH]\n       \
                     kbuild check [--arch ARCH] [--text-limit BYTES] OBJECT\n       \
                     kbuild spec [--arch ARCH]";

fn usage(problem: &str) -> ExitCode {
    eprintln!("kbuild: {problem}\n{USAGE}");
    ExitCode::from(2)
}

/// The repository: the nearest directory above the current one holding the kpi
/// header, else the one this program was built from.
fn root() -> PathBuf {
    let here = std::env::current_dir().unwrap_or_default();
    here.ancestors()
        .find(|d| d.join(ksyms_kbuild::header::PATH).is_file())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
            Path::to_path_buf,
        )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        return usage("no command");
    };
    let mut arch_name = std::env::var("KSYMS_TARGET_ARCH")
        .ok()
        .filter(|s| !s.is_empty());
    let mut text_limit = fit::TEXT_LIMIT;
    let mut operands = Vec::new();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--arch" => match it.next() {
                Some(v) => arch_name = Some(v.clone()),
                None => return usage("--arch needs a value"),
            },
            "--text-limit" => match it.next().map(|v| v.parse()) {
                Some(Ok(v)) => text_limit = v,
                _ => return usage("--text-limit needs a number of bytes"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            a if a.starts_with('-') => return usage(&format!("unknown option {a}")),
            _ => operands.push(arg.clone()),
        }
    }
    let arch = match arch_name {
        Some(name) => match Arch::from_name(&name) {
            Some(a) => a,
            None => return usage(&format!("unknown architecture {name} (amd64, aarch64)")),
        },
        None => match Arch::host() {
            Some(a) => a,
            None => return usage("no module for this host's architecture: give --arch"),
        },
    };
    let root = root();
    let result = match (command.as_str(), operands.as_slice()) {
        ("build", []) => Header::read(&root).and_then(|h| build(&root, arch, &h)),
        ("check", [object]) => {
            Header::read(&root).and_then(|h| check(&h, arch, Path::new(object), text_limit, false))
        }
        ("spec", []) => spec(arch),
        ("build" | "check" | "spec", _) => return usage("wrong number of operands"),
        (other, _) => return usage(&format!("unknown command {other}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kbuild: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build(root: &Path, arch: Arch, header: &Header) -> Result<bool, Failure> {
    let object = kernel::build(&Paths::new(root), arch, header)?;
    let ok = check(header, arch, &object, fit::TEXT_LIMIT, true)?;
    if ok {
        println!("kbuild: {} ready", object.display());
    }
    Ok(ok)
}

fn check(
    header: &Header,
    arch: Arch,
    object: &Path,
    text_limit: u64,
    entry_points: bool,
) -> Result<bool, Failure> {
    let report = fit::check_object(
        object,
        arch,
        header,
        &Options {
            text_limit,
            entry_points,
        },
    )?;
    report.print();
    if !report.passed() {
        eprintln!(
            "kbuild: the kernel-fit checks FAILED for {}",
            object.display()
        );
    }
    Ok(report.passed())
}

fn spec(arch: Arch) -> Result<bool, Failure> {
    print!("{}", kernel::spec_for(arch)?);
    Ok(true)
}
