//! Snapshots read by independent consumers: binutils `readelf` and `nm`, elfutils
//! `eu-readelf` and `eu-elflint`, and a C program that reads the file with libelf
//! exactly as FreeBSD's lockstat(1) does (tests/c/lockstat_reader.c).
//!
//! The inputs are the real ELF files of tests/common (a kernel and four modules,
//! with STT_GNU_IFUNC symbols in the kernel and in one module).

mod common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The snapshot of the real inputs, written to a file once per run.
fn snapshot_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let inp = inputs();
        let bytes = build(&inp.files);
        // The names hold none of the words the tools' outputs are searched for.
        for f in &inp.files {
            for i in 0..f.syms.len() {
                let n = String::from_utf8_lossy(f.name(i).expect("input name")).to_lowercase();
                assert!(!n.contains("warning") && !n.contains("error"), "{n}");
            }
        }
        let path = inp.dir.path().join("snapshot.elf");
        std::fs::write(&path, bytes).unwrap();
        path
    })
}

/// Runs a tool; returns (success, stdout, stderr). Panics when the tool is missing.
fn tool(prog: &str, args: &[&str], file: &Path) -> (bool, String, String) {
    let out = Command::new(prog)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {prog}: {e}; install binutils and elfutils (apt-get install binutils elfutils)")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Lines of a reader's output that complain ("warning", "Warning", "error",
/// "Error": binutils prints "readelf: Warning: ..." and "readelf: Error: ...").
fn complaints(stdout: &str, stderr: &str) -> Vec<String> {
    stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("warning") || l.contains("error")
        })
        .map(str::to_string)
        .collect()
}

/// A copy of the snapshot with one defect of FreeBSD 13.2's in-tree driver put back,
/// to show that the checks below can fail.
fn broken_copy(name: &str, patch: impl Fn(&mut [u8])) -> PathBuf {
    let mut bytes = std::fs::read(snapshot_file()).unwrap();
    patch(&mut bytes);
    let path = inputs().dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// sh_info = the symbol count, with globals inside the "local" range.
fn seed_sh_info(b: &mut [u8]) {
    let n = (u64_at(b, 176 + 64 + 32) / 24) as u32;
    b[176 + 64 + 44..176 + 64 + 48].copy_from_slice(&n.to_le_bytes());
}

/// Section indices of sections the snapshot does not have.
fn seed_shndx(b: &mut [u8]) {
    let n = (u64_at(b, 176 + 64 + 32) / 24) as usize;
    for i in (1..n).step_by(37) {
        if u16_at(b, 464 + 24 * i + 6) != SHN_UNDEF {
            b[464 + 24 * i + 6..464 + 24 * i + 8].copy_from_slice(&7u16.to_le_bytes());
        }
    }
}

/// `.symtab`'s sh_link naming a section that does not exist.
fn bad_link(b: &mut [u8]) {
    b[176 + 64 + 40..176 + 64 + 44].copy_from_slice(&7u32.to_le_bytes());
}

#[test]
fn readelf_reads_it_without_complaint() {
    let (ok, out, err) = tool("readelf", &["-a", "-W"], snapshot_file());
    assert!(ok, "readelf failed: {err}");
    assert_eq!(complaints(&out, &err), Vec::<String>::new());
    assert!(err.is_empty(), "readelf stderr: {err}");
    // It saw the whole table.
    let n: usize = inputs().files.iter().map(|f| f.syms.len()).sum();
    assert!(
        out.contains(&format!("Symbol table '.symtab' contains {n} entries")),
        "{out}"
    );
    // The check can fail: a bad sh_link draws warnings.
    let (_, out, err) = tool(
        "readelf",
        &["-a", "-W"],
        &broken_copy("link1.elf", bad_link),
    );
    assert!(!complaints(&out, &err).is_empty(), "{err}");
}

#[test]
fn eu_readelf_reads_it_without_complaint() {
    let (ok, out, err) = tool("eu-readelf", &["-a"], snapshot_file());
    assert!(ok, "eu-readelf failed: {err}");
    assert_eq!(complaints(&out, &err), Vec::<String>::new());
    assert!(err.is_empty(), "eu-readelf stderr: {err}");
    let n: usize = inputs().files.iter().map(|f| f.syms.len()).sum();
    assert!(
        out.contains(&format!("Symbol table [ 1] '.symtab' contains {n} entries")),
        "{out}"
    );
    // The check can fail: eu-readelf reports a bad sh_link on stderr.
    let (_, _, err) = tool("eu-readelf", &["-a"], &broken_copy("link2.elf", bad_link));
    assert!(err.contains("invalid sh_link"), "{err}");
}

/// The messages eu-elflint may print about a snapshot, and only these:
/// - the two compatibility PT_LOADs (R|X and R|W|X, empty) cover no sections:
///   "loadable segment [0] is executable but contains no executable sections",
///   "loadable segment [1] is executable but contains no executable sections",
///   "loadable segment [1] is writable but contains no writable sections";
/// - an STT_GNU_IFUNC symbol, a type elflint accepts only under ELFOSABI_GNU/NONE:
///   "section [ 1] '.symtab': symbol N (NAME): unknown type", for exactly the
///   symbols N whose type is STT_GNU_IFUNC.
///
/// Returns (allowed messages seen, other messages).
fn classify_elflint(output: &str, snapshot: &[u8]) -> (Vec<String>, Vec<String>) {
    const SEGMENTS: [&str; 3] = [
        "loadable segment [0] is executable but contains no executable sections",
        "loadable segment [1] is executable but contains no executable sections",
        "loadable segment [1] is writable but contains no writable sections",
    ];
    let nsyms = (snapshot.len() as u64 - 464).min(u64_at(snapshot, 176 + 64 + 32)) / 24;
    let strtab = &snapshot[u64_at(snapshot, 176 + 128 + 24) as usize..];
    let ifunc_line = |i: u64| {
        let s = sym_from(&snapshot[464 + 24 * i as usize..][..24], true);
        (s.st_info & 0xf == STT_GNU_IFUNC).then(|| {
            format!(
                "section [ 1] '.symtab': symbol {i} ({}): unknown type",
                String::from_utf8_lossy(cstr_at(strtab, s.st_name as usize))
            )
        })
    };
    let ifuncs: Vec<String> = (0..nsyms).filter_map(ifunc_line).collect();
    let mut allowed = Vec::new();
    let mut other = Vec::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        if line == "No errors" {
            continue;
        }
        if SEGMENTS.contains(&line) || ifuncs.iter().any(|l| l == line) {
            allowed.push(line.to_string());
        } else {
            other.push(line.to_string());
        }
    }
    (allowed, other)
}

fn elflint(args: &[&str], file: &Path) -> String {
    let (_, out, err) = tool("eu-elflint", args, file);
    out + &err
}

#[test]
fn eu_elflint_reports_only_the_allowed_messages() {
    let bytes = std::fs::read(snapshot_file()).unwrap();
    let nifunc = inputs()
        .files
        .iter()
        .flat_map(|f| f.syms.iter())
        .filter(|s| s.st_info & 0xf == STT_GNU_IFUNC)
        .count();
    assert!(nifunc >= 2, "the inputs must exercise the IFUNC allowance");
    for args in [&[][..], &["--gnu-ld"][..]] {
        let output = elflint(args, snapshot_file());
        let (allowed, other) = classify_elflint(&output, &bytes);
        assert!(
            other.is_empty(),
            "eu-elflint {args:?} says more than the allowed messages:\n{}",
            other.join("\n")
        );
        // The allowances are exercised: each segment message once, one per IFUNC.
        assert_eq!(allowed.len(), 3 + nifunc, "{output}");
    }

    // The checks can fail: the seed's defects are reported, as "other" messages.
    for (name, patch, needle) in [
        (
            "bad_info.elf",
            seed_sh_info as fn(&mut [u8]),
            "non-local symbol outside range described in sh_info",
        ),
        ("bad_shndx.elf", seed_shndx, "invalid section index"),
    ] {
        let path = broken_copy(name, patch);
        let bad = std::fs::read(&path).unwrap();
        let (_, other) = classify_elflint(&elflint(&[], &path), &bad);
        assert!(
            !other.is_empty() && other.iter().all(|l| l.contains(needle)),
            "{name}: {other:?}"
        );
    }
}

/// `nm -a`: every symbol but entry 0, with its name, its value (none for undefined
/// symbols) and a type letter that follows from binding and type under SHN_ABS.
#[test]
fn nm_lists_every_symbol_with_its_value() {
    let (ok, out, err) = tool("nm", &["-a"], snapshot_file());
    assert!(ok && err.is_empty(), "nm: {err}");
    let mut got: Vec<(String, Option<u64>, char)> = out
        .lines()
        .map(|l| {
            let (value, rest) = l.split_at(16);
            let value = (!value.trim().is_empty()).then(|| u64::from_str_radix(value, 16).unwrap());
            let letter = rest.chars().nth(1).unwrap();
            let name = rest.get(3..).unwrap_or("").to_string();
            (name, value, letter)
        })
        .collect();
    let mut want = Vec::new();
    for (k, f) in inputs().files.iter().enumerate() {
        for (i, s) in f.syms.iter().enumerate() {
            if k == 0 && i == 0 {
                continue; // entry 0 of the snapshot: nm skips the null symbol
            }
            let name = String::from_utf8_lossy(f.name(i).expect("input name")).into_owned();
            let bind = s.st_info >> 4;
            let kind = s.st_info & 0xf;
            let (value, letter) = if s.st_shndx == SHN_UNDEF {
                (None, if bind == STB_WEAK { 'w' } else { 'U' })
            } else {
                let letter = match (bind, kind) {
                    (_, STT_GNU_IFUNC) => 'i',
                    (STB_WEAK, STT_OBJECT) => 'V',
                    (STB_WEAK, _) => 'W',
                    (STB_LOCAL, _) => 'a',
                    _ => 'A',
                };
                (Some(f.expected_value(i)), letter)
            };
            want.push((name, value, letter));
        }
    }
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
}

/// Builds tests/c/lockstat_reader.c with -lelf, once.
fn lockstat_reader() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(build_lockstat_reader)
}

fn build_lockstat_reader() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/lockstat_reader.c");
    let exe = inputs().dir.path().join("lockstat_reader");
    let out = Command::new(cc())
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-lelf")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot build lockstat_reader (libelf is needed: apt-get install libelf-dev):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Feeds addresses to the reader; returns "kept N" and one answer per address.
fn lockstat_lookup(file: &Path, addrs: &[u64]) -> (usize, Vec<String>) {
    let mut child = Command::new(lockstat_reader())
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = addrs.iter().map(|a| format!("{a:x}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "lockstat_reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let kept = lines
        .next()
        .and_then(|l| l.strip_prefix("kept "))
        .unwrap()
        .parse()
        .unwrap();
    let answers: Vec<String> = lines.map(str::to_string).collect();
    assert_eq!(answers.len(), addrs.len());
    for (a, line) in addrs.iter().zip(&answers) {
        assert!(line.starts_with(&format!("{a:x} ")), "{line}");
    }
    let answers = answers
        .into_iter()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect();
    (kept, answers)
}

#[test]
fn lockstat_resolves_every_kept_symbol() {
    // What lockstat keeps: type NOTYPE/OBJECT/FUNC with a size, at its absolute address.
    let mut kept: BTreeMap<u64, Vec<(String, u64, u8)>> = BTreeMap::new();
    let mut nkept = 0;
    for f in &inputs().files {
        for (i, s) in f.syms.iter().enumerate() {
            if s.st_info & 0xf <= STT_FUNC && s.st_size != 0 {
                let name = String::from_utf8_lossy(f.name(i).expect("input name")).into_owned();
                kept.entry(f.expected_value(i)).or_default().push((
                    name,
                    s.st_size,
                    s.st_info & 0xf,
                ));
                nkept += 1;
            }
        }
    }
    assert!(nkept > 300, "{nkept}");
    assert!(
        kept.keys().all(|&a| a >= KERNEL_BASE),
        "kept symbols below the kernel"
    );

    // Each kept address gives a name of that address, offset 0; an address inside a
    // function, before the next kept address, gives that function's name+offset.
    let mut addrs = Vec::new();
    let mut expect: Vec<(Vec<String>, u64)> = Vec::new();
    let starts: Vec<u64> = kept.keys().copied().collect();
    for (k, (&addr, syms)) in kept.iter().enumerate() {
        let names: Vec<String> = syms.iter().map(|s| s.0.clone()).collect();
        addrs.push(addr);
        expect.push((names.clone(), 0));
        // (Aliases share an address; lockstat keeps one of them, any one.)
        if let Some((_, size, _)) = syms.iter().find(|s| s.2 == STT_FUNC && s.1 >= 2) {
            let off = size / 2;
            if starts.get(k + 1).is_none_or(|&next| addr + off < next) {
                addrs.push(addr + off);
                expect.push((names.clone(), off));
            }
        }
    }
    let inside = expect.iter().filter(|e| e.1 != 0).count();
    assert!(inside > 100, "{inside} inside-function lookups");

    let (n, answers) = lockstat_lookup(snapshot_file(), &addrs);
    assert_eq!(n, nkept, "symbols kept by lockstat's filter");
    let mut wrong = Vec::new();
    for ((addr, (names, off)), got) in addrs.iter().zip(&expect).zip(&answers) {
        let ok = names.iter().any(|n| *got == format!("{n}+{off:#x}"));
        if !ok {
            wrong.push(format!(
                "{addr:#x}: got {got}, want one of {names:?} +{off:#x}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Below the kernel: lockstat's own fake symbols, not ours.
    let (_, a) = lockstat_lookup(snapshot_file(), &[0x0100_0010, 5]);
    assert_eq!(a, ["cpu[0]+0x10", "(usermode)+0x5"]);
}

/// Module symbols resolve to module addresses: the fix-up is what lockstat sees.
#[test]
fn lockstat_sees_module_addresses() {
    let mut by_module: HashMap<usize, (u64, String)> = HashMap::new();
    for (m, f) in inputs().files[1..].iter().enumerate() {
        let i = (0..f.syms.len())
            .find(|&i| {
                f.syms[i].st_info & 0xf == STT_FUNC
                    && f.syms[i].st_size != 0
                    && f.syms[i].st_info >> 4 == STB_GLOBAL
            })
            .unwrap();
        let addr = f.expected_value(i);
        assert!((MODULE_BASE + m as u64 * MODULE_STRIDE
            ..MODULE_BASE + (m as u64 + 1) * MODULE_STRIDE)
            .contains(&addr));
        by_module.insert(
            m,
            (
                addr,
                String::from_utf8_lossy(f.name(i).expect("input name")).into_owned(),
            ),
        );
    }
    let addrs: Vec<u64> = (0..by_module.len()).map(|m| by_module[&m].0 + 1).collect();
    let (_, answers) = lockstat_lookup(snapshot_file(), &addrs);
    for (m, got) in answers.iter().enumerate() {
        assert_eq!(*got, format!("{}+0x1", by_module[&m].1), "module {m}");
    }
}
