//! The kernel build: the Rust crate for a FreeBSD architecture, as one relocatable
//! object that kmod/Makefile links into ksyms.ko.
//!
//! The crate is compiled for a target of its own, derived from rustc's bare-metal
//! target with the kernel's code generation rules ([`Arch::spec_settings`]), and
//! `core` is rebuilt from rust-src with the same target (`-Zbuild-std=core`, allowed
//! on the pinned stable compiler by `RUSTC_BOOTSTRAP=1`, as Rust-for-Linux does), so
//! nothing precompiled with other settings reaches the module. The static library is
//! then `ld -r`'d into one object rooted at the `ksyms_rs_*` entry points: the crate,
//! fat-LTO'd with `core`, and whatever compiler_builtins function it calls.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::arch::Arch;
use crate::header::Header;
use crate::Failure;

/// Where the build reads and writes.
pub struct Paths {
    /// The repository: Cargo.toml, kmod/ksyms_kpi.h.
    pub root: PathBuf,
    /// cargo's target directory for kernel builds (apart from the host build's, so
    /// neither invalidates the other).
    pub target_dir: PathBuf,
    /// Where build/<arch>/ksyms_rs.o goes.
    pub out_dir: PathBuf,
}

impl Paths {
    pub fn new(root: &Path) -> Paths {
        let env_path = |name: &str, default: PathBuf| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map_or(default, PathBuf::from)
        };
        Paths {
            root: root.to_path_buf(),
            target_dir: env_path("KSYMS_KERNEL_TARGET_DIR", root.join("target/kernel")),
            out_dir: env_path("KSYMS_KERNEL_OUT", root.join("build")),
        }
    }

    /// The object kmod/Makefile links for `arch`.
    pub fn object(&self, arch: Arch) -> PathBuf {
        self.out_dir.join(arch.name()).join("ksyms_rs.o")
    }
}

/// The program named by environment variable `var`, else the first of `defaults`
/// found in PATH, else the last default (whose absence the caller reports).
pub fn tool(var: &str, defaults: &[&str]) -> String {
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return v.to_string_lossy().into_owned();
    }
    let in_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    defaults
        .iter()
        .find(|d| in_path(d))
        .or(defaults.last())
        .map_or_else(String::new, |d| (*d).to_string())
}

/// A command for the program named by `var` (see [`tool`]), whose value may carry
/// arguments as FreeBSD's build environment gives them (`LD="ld.lld --sysroot=..."`
/// in `make buildenv`).
pub fn tool_command(var: &str, defaults: &[&str]) -> (String, Command) {
    let line = tool(var, defaults);
    let mut words = line.split_whitespace();
    let mut cmd = Command::new(words.next().unwrap_or_default());
    cmd.args(words);
    (line, cmd)
}

/// Runs `cmd`, failing with its name and output when it cannot start or fails.
pub fn run(cmd: &mut Command, what: &str) -> Result<(), Failure> {
    let out = cmd
        .output()
        .map_err(|e| Failure(format!("{what}: cannot run {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(Failure(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// The kernel target's spec: rustc's spec of `arch`'s bare-metal target, with the
/// kernel's settings laid over it. Fails when the base target no longer disables
/// what the kernel needs disabled.
pub fn target_spec(arch: Arch, base_json: &str) -> Result<String, Failure> {
    let mut spec: Value = serde_json::from_str(base_json)
        .map_err(|e| Failure(format!("rustc's spec of {}: {e}", arch.base_target())))?;
    let map = spec.as_object_mut().ok_or_else(|| {
        Failure(format!(
            "rustc's spec of {} is not an object",
            arch.base_target()
        ))
    })?;
    let features = map.get("features").and_then(Value::as_str).unwrap_or("");
    let have: Vec<&str> = features.split(',').collect();
    let missing: Vec<&str> = arch
        .required_features()
        .iter()
        .copied()
        .filter(|f| !have.contains(f))
        .collect();
    if !missing.is_empty() {
        return Err(Failure(format!(
            "{} no longer has the target features {} (it has \"{features}\"): the kernel \
             must not use floating-point or vector registers",
            arch.base_target(),
            missing.join(",")
        )));
    }
    let mut features = features.to_string();
    for extra in arch.extra_features() {
        features.push(',');
        features.push_str(extra);
    }
    map.insert("features".into(), Value::String(features));
    // Descriptive only, and rejected in a custom spec by some rustc versions.
    map.remove("metadata");
    for (key, value) in arch.spec_settings() {
        map.insert(key.to_string(), value);
    }
    let mut text = serde_json::to_string_pretty(&spec)
        .map_err(|e| Failure(format!("kernel target spec: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// rustc's spec of `arch`'s base target.
fn base_spec(arch: Arch) -> Result<String, Failure> {
    let rustc = tool("RUSTC", &["rustc"]);
    let out = Command::new(&rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .args([
            "-Z",
            "unstable-options",
            "--print",
            "target-spec-json",
            "--target",
        ])
        .arg(arch.base_target())
        .output()
        .map_err(|e| Failure(format!("cannot run {rustc}: {e}")))?;
    if !out.status.success() {
        return Err(Failure(format!(
            "{rustc} --print target-spec-json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    String::from_utf8(out.stdout).map_err(|e| Failure(format!("rustc's target spec: {e}")))
}

/// The kernel target's spec for `arch`, from the installed rustc.
pub fn spec_for(arch: Arch) -> Result<String, Failure> {
    target_spec(arch, &base_spec(arch)?)
}

/// Writes `contents` to `path` unless it already holds exactly that, so that cargo
/// does not see a changed target and rebuild everything.
fn write_if_changed(path: &Path, contents: &str) -> Result<(), Failure> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    }
    fs::write(path, contents).map_err(|e| Failure(format!("{}: {e}", path.display())))
}

/// rust-src is needed to rebuild `core`; rustup adds what rust-toolchain.toml lists
/// only where auto-install is on, so ask for it (a quick no-op once it is there).
/// Without rustup (a packaged toolchain), cargo says what is missing.
fn rust_src() -> Result<(), Failure> {
    let rustup = tool("RUSTUP", &["rustup"]);
    if Command::new(&rustup).arg("--version").output().is_err() {
        return Ok(());
    }
    run(
        Command::new(&rustup).args(["component", "add", "rust-src"]),
        "rustup component add rust-src",
    )
}

/// Builds the static library for `arch` and returns its path.
fn cargo_build(paths: &Paths, arch: Arch) -> Result<PathBuf, Failure> {
    rust_src()?;
    let spec_path = paths
        .target_dir
        .join(format!("{}.json", arch.target_name()));
    write_if_changed(&spec_path, &spec_for(arch)?)?;
    let cargo = tool("CARGO", &["cargo"]);
    run(
        Command::new(&cargo)
            .current_dir(&paths.root)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", &paths.target_dir)
            .env("CARGO_PROFILE_RELEASE_LTO", "fat")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
            .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            // panic=abort: nothing unwinds, so no .eh_frame.
            .env("RUSTFLAGS", "-C force-unwind-tables=no")
            // The crate is staticlib + rlib, and rustc does no LTO when an rlib is
            // among the outputs: ask for the staticlib alone.
            .args([
                "rustc",
                "--quiet",
                "--release",
                "--lib",
                "--crate-type",
                "staticlib",
            ])
            .arg("--manifest-path")
            .arg(paths.root.join("Cargo.toml"))
            .arg("--target")
            .arg(&spec_path)
            .args(["-Zbuild-std=core", "-Zjson-target-spec"]),
        "cargo (kernel build)",
    )?;
    let lib = paths
        .target_dir
        .join(arch.target_name())
        .join("release/libksyms.a");
    if !lib.is_file() {
        return Err(Failure(format!("cargo did not produce {}", lib.display())));
    }
    Ok(lib)
}

/// Builds build/<arch>/ksyms_rs.o and returns its path.
pub fn build(paths: &Paths, arch: Arch, header: &Header) -> Result<PathBuf, Failure> {
    let lib = cargo_build(paths, arch)?;
    let object = paths.object(arch);
    let dir = object.parent().unwrap_or(&paths.out_dir);
    fs::create_dir_all(dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    let tmp = object.with_extension("o.tmp");
    // ld.lld (FreeBSD's ld) links for any architecture; GNU ld only for its own.
    let (ld, mut cmd) = tool_command("LD", &["ld.lld", "ld"]);
    cmd.args(["-m", arch.ld_emulation(), "-r"]);
    if header.entry_points.is_empty() {
        return Err(Failure(
            "no ksyms_rs_* entry point in the kpi header".into(),
        ));
    }
    for entry in &header.entry_points {
        cmd.arg("-u").arg(entry);
    }
    cmd.arg("-o").arg(&tmp).arg(&lib);
    run(&mut cmd, &format!("{ld} -r"))?;
    fs::rename(&tmp, &object).map_err(|e| Failure(format!("{}: {e}", object.display())))?;
    Ok(object)
}
