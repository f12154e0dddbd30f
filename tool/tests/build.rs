//! `ksyms build` on real ELF files compiled here: an executable plays the kernel,
//! a relocatable object plays a module; for this machine with `cc`, and for
//! FreeBSD/arm64 with clang and lld. Expected values come from nm(1).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNEL_C: &str = r#"
int kern_counter = 1;
static int kern_static(int x) { return x * kern_counter; }
int kern_entry(int x) { return kern_static(x) + 1; }
int main(void) { return kern_entry(2); }
"#;

const MODULE_C: &str = r#"
int mod_value = 7;
static int mod_hidden;
int mod_first(int x) { mod_hidden += x; return x + mod_value; }
int mod_second(int x) { return mod_first(x) * 2 + mod_hidden; }
"#;

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e}; install gcc and binutils (apt-get install gcc binutils)")
    });
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// name -> (value, type letter) from `nm`.
fn nm(path: &Path) -> HashMap<String, (u64, char)> {
    run(Command::new("nm").arg(path))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [v, t, n] => Some((
                    n.to_string(),
                    (u64::from_str_radix(v, 16).ok()?, t.chars().next()?),
                )),
                _ => None,
            }
        })
        .collect()
}

fn find(snap: &Path, name: &str) -> (u64, u64, String) {
    let out = run(Command::new(env!("CARGO_BIN_EXE_ksyms"))
        .args(["-f"])
        .arg(snap)
        .args(["find", name]));
    let line = out
        .lines()
        .find(|l| l.ends_with(&format!(" {name}")))
        .unwrap_or_else(|| panic!("{name} not found:\n{out}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        u64::from_str_radix(f[0].trim_start_matches("0x"), 16).unwrap(),
        f[1].parse().unwrap(),
        f[2].to_string(),
    )
}

#[test]
fn build_a_snapshot_of_real_elf_files() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ksyms-tool-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kern.c"), KERNEL_C).unwrap();
    std::fs::write(dir.join("mod.c"), MODULE_C).unwrap();
    let kern = dir.join("kern");
    let module = dir.join("mod.o");
    run(Command::new("cc")
        .args(["-O0", "-fno-inline", "-no-pie", "-o"])
        .arg(&kern)
        .arg(dir.join("kern.c")));
    run(Command::new("cc")
        .args(["-O0", "-fno-inline", "-c", "-o"])
        .arg(&module)
        .arg(dir.join("mod.c")));
    let snap = dir.join("snap.ksyms");
    let out = run(Command::new(env!("CARGO_BIN_EXE_ksyms"))
        .args(["build", "-o"])
        .arg(&snap)
        .arg(&kern)
        .arg(&module));
    // cc compiles for this machine, so the snapshot is for it too.
    let host = ksyms_tool::machine::Machine::host().expect("an amd64 or arm64 host");
    assert!(out.contains(&format!("from 2 files, for {host}")), "{out}");

    let check = run(Command::new(env!("CARGO_BIN_EXE_ksyms"))
        .arg("-f")
        .arg(&snap)
        .arg("check"));
    assert!(
        check.contains(&format!(": ok: a well-formed {host} snapshot")),
        "{check}"
    );

    // The kernel's symbols keep their values.
    let k = nm(&kern);
    for name in ["kern_entry", "kern_counter", "kern_static"] {
        let (value, _, _) = find(&snap, name);
        assert_eq!(value, k[name].0, "{name}");
    }
    assert_eq!(find(&snap, "kern_entry").2, "FUNC");
    assert_eq!(find(&snap, "kern_counter").2, "OBJECT");

    // The module is placed above the kernel; offsets within a section are kept.
    let m = nm(&module);
    let kernel_top = k.values().map(|v| v.0).max().unwrap();
    let (first, _, _) = find(&snap, "mod_first");
    let (second, _, _) = find(&snap, "mod_second");
    assert!(first > kernel_top, "{first:#x} <= {kernel_top:#x}");
    assert_eq!(second - first, m["mod_second"].0 - m["mod_first"].0);
    let (value, size, kind) = find(&snap, "mod_value");
    assert!(value > kernel_top);
    assert_eq!((size, kind.as_str()), (4, "OBJECT"));

    // lookup agrees: an address inside mod_second names it.
    let out = run(Command::new(env!("CARGO_BIN_EXE_ksyms"))
        .arg("-f")
        .arg(&snap)
        .args(["lookup", &format!("{:#x}", second + 3)]));
    assert!(out.trim_end().ends_with("mod_second+0x3"), "{out}");

    // The summary finds two linker files, the second named by its source file.
    let out = run(Command::new(env!("CARGO_BIN_EXE_ksyms"))
        .arg("-f")
        .arg(&snap)
        .arg("summary"));
    assert!(out.contains("linker files           2"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["1", "mod.c"])),
        "{out}"
    );

    // A position-independent "kernel" (a shared object) is placed at the kernel's
    // address, as if loaded there.
    let so = dir.join("kern.so");
    run(Command::new("cc")
        .args(["-O0", "-fno-inline", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(dir.join("kern.c")));
    let snap2 = dir.join("snap2.ksyms");
    run(Command::new(env!("CARGO_BIN_EXE_ksyms"))
        .args(["build", "-o"])
        .arg(&snap2)
        .arg(&so)
        .arg(&module));
    let s = nm(&so);
    assert_eq!(
        find(&snap2, "kern_entry").0,
        s["kern_entry"].0 + 0xffff_ffff_8020_0000
    );
    assert!(find(&snap2, "mod_first").0 > s["kern_entry"].0 + 0xffff_ffff_8020_0000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ksyms ARGS`: exit status, stdout, stderr.
fn ksyms(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ksyms"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// clang for FreeBSD on `arch`, linking with lld.
fn clang(arch: &str) -> Command {
    let mut c = Command::new("clang");
    c.arg(format!("--target={arch}-unknown-freebsd")).args([
        "-O0",
        "-fno-inline",
        "-ffreestanding",
        "-fuse-ld=lld",
    ]);
    c
}

#[test]
fn build_an_arm64_snapshot_of_aarch64_files() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ksyms-tool-arm64-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (kc, mc) = (dir.join("kern.c"), dir.join("mod.c"));
    std::fs::write(&kc, KERNEL_C).unwrap();
    std::fs::write(&mc, MODULE_C).unwrap();
    let (kern, so, module, x86_module) = (
        dir.join("kern"),
        dir.join("kern.so"),
        dir.join("mod.o"),
        dir.join("mod_x86.o"),
    );
    run(clang("aarch64")
        .args(["-nostdlib", "-static", "-Wl,-e,main", "-o"])
        .arg(&kern)
        .arg(&kc));
    run(clang("aarch64")
        .args(["-nostdlib", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&kc));
    run(clang("aarch64").arg("-c").arg("-o").arg(&module).arg(&mc));
    run(clang("x86_64")
        .arg("-c")
        .arg("-o")
        .arg(&x86_module)
        .arg(&mc));

    let snap = dir.join("snap.ksyms");
    let (status, out, err) = ksyms(&[
        "build".as_ref(),
        "-o".as_ref(),
        snap.as_ref(),
        kern.as_ref(),
        module.as_ref(),
    ]);
    assert_eq!(status, 0, "{err}");
    assert!(out.ends_with("from 2 files, for arm64\n"), "{out}");
    let (status, out, _) = ksyms(&["-f".as_ref(), snap.as_ref(), "check".as_ref()]);
    assert_eq!(status, 0, "{out}");
    assert!(out.contains(": ok: a well-formed arm64 snapshot"), "{out}");
    let (status, out, _) = ksyms(&[
        "-f".as_ref(),
        snap.as_ref(),
        "check".as_ref(),
        "--machine".as_ref(),
        "amd64".as_ref(),
    ]);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("e_machine is 183, expected 62"), "{out}");

    // The same placement rules as on amd64.
    let k = nm(&kern);
    for name in ["kern_entry", "kern_counter", "kern_static"] {
        assert_eq!(find(&snap, name).0, k[name].0, "{name}");
    }
    let m = nm(&module);
    let kernel_top = k.values().map(|v| v.0).max().unwrap();
    let (first, _, kind) = find(&snap, "mod_first");
    assert_eq!(kind, "FUNC");
    assert!(first > kernel_top, "{first:#x} <= {kernel_top:#x}");
    assert_eq!(
        find(&snap, "mod_second").0 - first,
        m["mod_second"].0 - m["mod_first"].0
    );

    // A position-independent arm64 kernel goes where arm64 links its kernel:
    // KERNBASE, 0xffff000000000000 (sys/arm64/include/vmparam.h).
    let snap2 = dir.join("snap2.ksyms");
    let (status, _, err) = ksyms(&["build".as_ref(), "-o".as_ref(), snap2.as_ref(), so.as_ref()]);
    assert_eq!(status, 0, "{err}");
    assert_eq!(
        find(&snap2, "kern_entry").0,
        nm(&so)["kern_entry"].0 + 0xffff_0000_0000_0000
    );

    // Files of two machines do not make one snapshot.
    let mixed = dir.join("mixed.ksyms");
    let (status, out, err) = ksyms(&[
        "build".as_ref(),
        "-o".as_ref(),
        mixed.as_ref(),
        kern.as_ref(),
        x86_module.as_ref(),
    ]);
    assert_eq!(status, 2, "{out}");
    assert_eq!(
        err,
        format!(
            "ksyms: build: {}: e_machine 62, but the kernel file is arm64 (183)\n",
            x86_module.display()
        )
    );
    assert!(!mixed.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readers_take_elf_of_any_class_and_byte_order() {
    // lockstat-style readers take the .symtab of any ELF file: 32-bit
    // little-endian (i386) and 64-bit big-endian (powerpc64) objects here.
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ksyms-tool-classes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("mod.c");
    std::fs::write(&src, MODULE_C).unwrap();
    for arch in ["i386", "powerpc64"] {
        let obj = dir.join(format!("mod_{arch}.o"));
        run(clang(arch).arg("-c").arg("-o").arg(&obj).arg(&src));
        let (status, out, err) = ksyms(&[
            "-f".as_ref(),
            obj.as_ref(),
            "find".as_ref(),
            "mod_*".as_ref(),
        ]);
        assert_eq!(status, 0, "{arch}: {err}");
        let rows: Vec<Vec<&str>> = out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        let names: Vec<&str> = rows.iter().map(|r| *r.last().unwrap()).collect();
        for name in ["mod_value", "mod_hidden", "mod_first", "mod_second"] {
            assert!(names.contains(&name), "{arch}: {name} in {out}");
        }
        let value = rows
            .iter()
            .find(|r| r.last() == Some(&"mod_value"))
            .unwrap();
        assert_eq!(value[1..4], ["4", "OBJECT", "GLOBAL"], "{arch}: {out}");
        // ... while check holds them to SPEC's ELF-64 little-endian layout.
        let (status, out, _) = ksyms(&["-f".as_ref(), obj.as_ref(), "check".as_ref()]);
        assert_eq!(status, 1, "{arch}: {out}");
        let fault = match arch {
            "i386" => "EI_CLASS is 1, expected 2 (ELFCLASS64)",
            _ => "EI_DATA is 2, expected 1 (ELFDATA2LSB)",
        };
        assert!(out.contains(fault), "{arch}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
