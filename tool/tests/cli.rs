//! The `ksyms` command on snapshots that the engine builds from synthetic linker
//! files: every subcommand's output is checked against what the test put in, and
//! `check` must name each corruption.

use ksyms::elf::{
    Elf64Sym, FREEBSD_AMD64, SHN_ABS, SHN_UNDEF, STB_GLOBAL, STB_LOCAL, STB_WEAK, STT_FILE,
    STT_FUNC, STT_GNU_IFUNC, STT_NOTYPE, STT_OBJECT,
};
use ksyms::snapshot::{self, LinkerFile, SliceSink, HEADER_SIZE};
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------
// Synthetic linker files

/// One symbol as the test describes it.
#[derive(Clone, Debug)]
struct Def {
    name: &'static str,
    bind: u8,
    kind: u8,
    /// As in the file: absolute for the kernel, section-relative for modules.
    value: u64,
    size: u64,
    shndx: u16,
}

/// A linker file: its symbols (the null symbol first) and string table, and
/// where the test's "linker" loaded it.
struct Fake {
    kernel: bool,
    base: u64,
    defs: Vec<Def>,
    syms: Vec<Elf64Sym>,
    strs: Vec<u8>,
}

impl Fake {
    fn new(kernel: bool, base: u64, defs: Vec<Def>) -> Fake {
        let mut syms = vec![Elf64Sym::default()];
        let mut strs = vec![0u8];
        for d in &defs {
            let st_name = strs.len() as u32;
            strs.extend_from_slice(d.name.as_bytes());
            strs.push(0);
            syms.push(Elf64Sym {
                st_name,
                st_info: Elf64Sym::info(d.bind, d.kind),
                st_other: 0,
                st_shndx: d.shndx,
                st_value: d.value,
                st_size: d.size,
            });
        }
        Fake {
            kernel,
            base,
            defs,
            syms,
            strs,
        }
    }

    /// The address a symbol ends up at in the snapshot (what the kernel linker
    /// reports for modules: load base + value for symbols in a section).
    fn address(&self, d: &Def) -> u64 {
        if self.kernel || d.shndx == SHN_UNDEF || d.shndx == SHN_ABS {
            d.value
        } else {
            self.base + d.value
        }
    }

    fn def(&self, name: &str) -> &Def {
        self.defs.iter().find(|d| d.name == name).unwrap()
    }
}

impl LinkerFile for Fake {
    fn is_kernel(&self) -> bool {
        self.kernel
    }
    fn symbols(&self) -> ksyms::Result<&[Elf64Sym]> {
        Ok(&self.syms)
    }
    fn strings(&self) -> ksyms::Result<&[u8]> {
        Ok(&self.strs)
    }
    fn symbol_value(&self, _index: usize, sym: &Elf64Sym) -> Option<u64> {
        if sym.st_shndx == SHN_UNDEF || sym.st_shndx == SHN_ABS {
            None
        } else {
            Some(self.base + sym.st_value)
        }
    }
}

fn d(name: &'static str, bind: u8, kind: u8, value: u64, size: u64, shndx: u16) -> Def {
    Def {
        name,
        bind,
        kind,
        value,
        size,
        shndx,
    }
}

const K: u64 = 0xffff_ffff_8020_0000;
const MOD_A: u64 = 0xffff_ffff_8300_0000;
const MOD_B: u64 = 0xffff_ffff_8310_0000;

/// A kernel and two modules. mod_a declares a module (`_mod_a_depend_on_kernel`),
/// mod_b only has a source file name.
fn files() -> Vec<Fake> {
    vec![
        Fake::new(
            true,
            0,
            vec![
                d("kern_kldload", STB_GLOBAL, STT_FUNC, K + 0x1000, 0x100, 1),
                d("locore.S", STB_LOCAL, STT_FILE, 0, 0, SHN_ABS),
                d("static_helper", STB_LOCAL, STT_FUNC, K + 0x800, 0x40, 1),
                d("kern_exec", STB_GLOBAL, STT_FUNC, K + 0x1100, 0x80, 1),
                d("exec_alias", STB_GLOBAL, STT_FUNC, K + 0x1100, 0x80, 1),
                d("weak_fn", STB_WEAK, STT_FUNC, K + 0x1200, 0x10, 1),
                d("sizeless", STB_GLOBAL, STT_FUNC, K + 0x1208, 0, 1),
                d("memcpy", STB_GLOBAL, STT_GNU_IFUNC, K + 0x2000, 0x30, 1),
                d("ticks", STB_GLOBAL, STT_OBJECT, K + 0x10_0000, 4, 2),
                d("kern_label", STB_GLOBAL, STT_NOTYPE, K + 0x1300, 0, 1),
                d("kern_undef", STB_GLOBAL, STT_NOTYPE, 0, 0, SHN_UNDEF),
            ],
        ),
        Fake::new(
            false,
            MOD_A,
            vec![
                d("mod_a.c", STB_LOCAL, STT_FILE, 0, 0, SHN_ABS),
                d(
                    "_mod_a_depend_on_kernel",
                    STB_LOCAL,
                    STT_OBJECT,
                    0x400,
                    12,
                    3,
                ),
                d("moda_init", STB_GLOBAL, STT_FUNC, 0x100, 0x20, 1),
                d("moda_table", STB_GLOBAL, STT_OBJECT, 0x800, 0x40, 3),
                d("kern_exec", STB_GLOBAL, STT_NOTYPE, 0, 0, SHN_UNDEF),
            ],
        ),
        Fake::new(
            false,
            MOD_B,
            vec![
                d("modb_src.c", STB_LOCAL, STT_FILE, 0, 0, SHN_ABS),
                d("modb_fn", STB_GLOBAL, STT_FUNC, 0x40, 0x30, 1),
                d("modb_local", STB_LOCAL, STT_OBJECT, 0x200, 8, 3),
            ],
        ),
    ]
}

/// The snapshot bytes, as the engine writes them.
fn build(files: &[Fake]) -> Vec<u8> {
    let layout = snapshot::census(files).unwrap().layout().unwrap();
    let mut bytes = vec![0u8; layout.size() as usize];
    snapshot::write(
        files,
        layout,
        &FREEBSD_AMD64,
        &mut SliceSink::new(&mut bytes),
    )
    .unwrap();
    bytes
}

// ---------------------------------------------------------------------------
// Running the tool

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ksyms-tool-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    status: i32,
    out: String,
    err: String,
}

fn ksyms(args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_ksyms"))
        .args(args)
        .output()
        .unwrap();
    Run {
        status: o.status.code().unwrap(),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn on(file: &Path, args: &[&str]) -> Run {
    let mut v = vec!["-f", file.to_str().unwrap()];
    v.extend_from_slice(args);
    ksyms(&v)
}

/// The good snapshot in a file.
fn good(dir: &TempDir) -> (Vec<Fake>, Vec<u8>, PathBuf) {
    let f = files();
    let bytes = build(&f);
    let path = dir.file("good.ksyms", &bytes);
    (f, bytes, path)
}

fn count(files: &[Fake], pred: impl Fn(&Elf64Sym) -> bool) -> usize {
    files
        .iter()
        .flat_map(|f| f.syms.iter())
        .filter(|s| pred(s))
        .count()
}

/// The whitespace-separated fields of the line whose first field is `first`.
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

fn num(s: &str) -> u64 {
    s.replace(',', "").parse().unwrap()
}

// ---------------------------------------------------------------------------
// summary

#[test]
fn summary_counts_what_was_put_in() {
    let dir = TempDir::new("summary");
    let (f, bytes, path) = good(&dir);
    let r = on(&path, &["summary"]);
    assert_eq!(r.status, 0, "{}", r.err);
    let out = &r.out;

    let total = count(&f, |_| true);
    let locals = count(&f, |s| s.is_local());
    assert_eq!(num(row(out, "size")[1]), bytes.len() as u64);
    let sym_row = row(out, "symbols");
    assert_eq!(num(sym_row[1]), total as u64);
    assert_eq!(num(sym_row[2].trim_start_matches('(')), locals as u64);
    assert!(out.contains(&format!("sh_info {locals})")), "{out}");
    let strings: usize = f.iter().map(|x| x.strs.len()).sum();
    assert_eq!(num(row(out, "strings")[1]), strings as u64);
    assert_eq!(num(row(out, "linker")[2]), f.len() as u64);

    // The type x binding table.
    for (name, kind) in [
        ("FUNC", STT_FUNC),
        ("OBJECT", STT_OBJECT),
        ("FILE", STT_FILE),
        ("IFUNC", STT_GNU_IFUNC),
        ("NOTYPE", STT_NOTYPE),
    ] {
        let r = row(out, name);
        let by = |b: u8| count(&f, |s| s.kind() == kind && s.binding() == b) as u64;
        assert_eq!(num(r[1]), by(STB_LOCAL), "{name} local");
        assert_eq!(num(r[2]), by(STB_GLOBAL), "{name} global");
        assert_eq!(num(r[3]), by(STB_WEAK), "{name} weak");
        assert_eq!(num(r[5]), count(&f, |s| s.kind() == kind) as u64, "{name}");
    }
    assert_eq!(num(row(out, "total")[5]), total as u64);

    // Functions span from the lowest function to the end of the highest one.
    let fr = row(out, "functions");
    let funcs: Vec<(u64, u64)> = f
        .iter()
        .flat_map(|x| x.defs.iter().map(move |d| (x, d)))
        .filter(|(_, d)| matches!(d.kind, STT_FUNC | STT_GNU_IFUNC) && d.shndx != SHN_UNDEF)
        .map(|(x, d)| (x.address(d), x.address(d) + d.size.max(1)))
        .collect();
    assert_eq!(num(fr[1]), funcs.len() as u64);
    let lo = funcs.iter().map(|p| p.0).min().unwrap();
    let hi = funcs.iter().map(|p| p.1).max().unwrap();
    assert_eq!(fr[2], format!("{lo:#018x}"));
    assert_eq!(fr[4], format!("{hi:#018x}"));
}

#[test]
fn summary_recovers_the_linker_files() {
    let dir = TempDir::new("files");
    let (f, _, path) = good(&dir);
    let r = on(&path, &["summary"]);
    assert_eq!(r.status, 0, "{}", r.err);
    let labels = ["kernel", "mod_a", "modb_src.c"];
    let mut str_start = 0usize;
    for (i, (file, label)) in f.iter().zip(labels).enumerate() {
        let row = row(&r.out, &i.to_string());
        assert_eq!(row[1], label, "file {i}");
        assert_eq!(num(row[2]), file.syms.len() as u64, "symbols of file {i}");
        let locals = file.syms.iter().filter(|s| s.is_local()).count();
        assert_eq!(num(row[3]), locals as u64, "locals of file {i}");
        assert_eq!(num(row[6]), file.strs.len() as u64, "strings of file {i}");
        str_start += file.strs.len();
    }
    assert!(str_start > 0);
    // Module A's extent: from moda_init to the end of moda_table.
    let a = &f[1];
    let lo = a.address(a.def("moda_init"));
    let t = a.def("moda_table");
    let row = row(&r.out, "1");
    assert_eq!(row[7], format!("{lo:#018x}"));
    assert_eq!(row[9], format!("{:#018x}", a.address(t) + t.size));
}

// ---------------------------------------------------------------------------
// lookup

#[test]
fn lookup_prints_symbol_plus_offset_like_lockstat() {
    let dir = TempDir::new("lookup");
    let (f, _, path) = good(&dir);
    let k = &f[0];
    let a = &f[1];
    let kld = k.address(k.def("kern_kldload"));
    let init = a.address(a.def("moda_init"));
    let ticks = k.address(k.def("ticks"));
    let weak = k.address(k.def("weak_fn"));
    let exec = k.address(k.def("kern_exec"));
    let cases: Vec<(u64, String)> = vec![
        (kld, "kern_kldload".into()),
        (kld + 0x18, "kern_kldload+0x18".into()),
        (init + 4, "moda_init+0x4".into()),
        // Past the end but within 256 bytes: still symbol+offset.
        (ticks + 0x10, "ticks+0x10".into()),
        // Far past the end: the bare address.
        (ticks + 0x1000, format!("{:#x}", ticks + 0x1000)),
        // A size-0 symbol is not in lockstat's table: the one before it is used.
        (weak + 8, "weak_fn+0x8".into()),
        // Two symbols at one address: the later in table order is kept.
        (exec + 1, "exec_alias+0x1".into()),
        // A low address falls in "(usermode)", printed bare.
        (0x10, "0x10".into()),
        (0, "(usermode)".into()),
    ];
    let args: Vec<String> = cases.iter().map(|(a, _)| format!("{a:#x}")).collect();
    let mut v = vec!["lookup"];
    v.extend(args.iter().map(String::as_str));
    let r = on(&path, &v);
    assert_eq!(r.status, 0, "{}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{}", r.out);
    for ((addr, want), line) in cases.iter().zip(lines) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields, [format!("{addr:#018x}").as_str(), want.as_str()]);
    }
    // Without 0x, hexadecimal all the same.
    let r = on(&path, &["lookup", &format!("{:x}", kld + 0x18)]);
    assert!(r.out.contains("kern_kldload+0x18"), "{}", r.out);
}

#[test]
fn lookup_rejects_a_non_address() {
    let dir = TempDir::new("lookup-bad");
    let (_, _, path) = good(&dir);
    let r = on(&path, &["lookup", "kern_kldload"]);
    assert_eq!(r.status, 1);
    assert!(r.err.contains("not a hexadecimal address"), "{}", r.err);
}

// ---------------------------------------------------------------------------
// find

#[test]
fn find_reports_address_size_type_binding() {
    let dir = TempDir::new("find");
    let (f, _, path) = good(&dir);
    let a = &f[1];
    let init = a.def("moda_init");
    let r = on(&path, &["find", "moda_init"]);
    assert_eq!(r.status, 0, "{}", r.err);
    let fields = row(&r.out, &format!("{:#018x}", a.address(init)));
    assert_eq!(
        fields,
        [
            format!("{:#018x}", a.address(init)).as_str(),
            init.size.to_string().as_str(),
            "FUNC",
            "GLOBAL",
            "ABS",
            "1",
            "moda_init"
        ]
    );
    // A glob: every name starting with "kern_", in address order.
    let r = on(&path, &["find", "kern_*"]);
    assert_eq!(r.status, 0, "{}", r.err);
    let got: Vec<&str> = r
        .out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    let mut want: Vec<(u64, &str)> = f
        .iter()
        .flat_map(|x| x.defs.iter().map(move |d| (x.address(d), d.name)))
        .filter(|(_, n)| n.starts_with("kern_"))
        .collect();
    want.sort_by_key(|w| w.0);
    assert_eq!(got, want.iter().map(|w| w.1).collect::<Vec<_>>());
    // The undefined reference in mod_a is listed with UNDEF.
    assert!(r
        .out
        .lines()
        .any(|l| l.contains(" UNDEF ") && l.ends_with("kern_exec")));
}

#[test]
fn find_without_a_match_fails() {
    let dir = TempDir::new("find-none");
    let (_, _, path) = good(&dir);
    let r = on(&path, &["find", "no_such_*"]);
    assert_eq!(r.status, 1);
    assert!(r.err.contains("no symbol matches no_such_*"), "{}", r.err);
    assert!(r.out.is_empty());
}

// ---------------------------------------------------------------------------
// dump

#[test]
fn dump_lists_every_symbol_sorted_by_address() {
    let dir = TempDir::new("dump");
    let (f, _, path) = good(&dir);
    let r = on(&path, &["dump"]);
    assert_eq!(r.status, 0, "{}", r.err);
    let lines: Vec<&str> = r.out.lines().skip(1).collect();
    assert_eq!(lines.len(), count(&f, |_| true));
    let values: Vec<u64> = lines
        .iter()
        .map(|l| {
            u64::from_str_radix(
                l.split_whitespace()
                    .next()
                    .unwrap()
                    .trim_start_matches("0x"),
                16,
            )
            .unwrap()
        })
        .collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "not sorted");
    // Every defined symbol appears at the address the linker gave it.
    for x in &f {
        for dd in &x.defs {
            let want = format!("{:#018x}", x.address(dd));
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&want) && l.ends_with(&format!(" {}", dd.name))),
                "{} at {want}",
                dd.name
            );
        }
    }
}

#[test]
fn dump_json_is_complete_and_ordered() {
    let dir = TempDir::new("json");
    let (f, bytes, path) = good(&dir);
    let r = on(&path, &["dump", "--json"]);
    assert_eq!(r.status, 0, "{}", r.err);
    let j = &r.out;
    assert!(j.trim_start().starts_with('{') && j.trim_end().ends_with('}'));
    assert!(j.contains(&format!("\"size\": {},", bytes.len())));
    assert_eq!(j.matches("\"value\": ").count(), count(&f, |_| true));
    assert_eq!(j.matches("\"label\": ").count(), f.len());
    let a = &f[1];
    let t = a.def("moda_table");
    let want = format!(
        "\"value\": \"{:#x}\", \"size\": {}, \"type\": \"OBJECT\", \"bind\": \"GLOBAL\", \"shndx\": \"ABS\", \"file\": 1, \"name\": \"moda_table\"",
        a.address(t),
        t.size
    );
    assert!(j.contains(&want), "{want}\n{j}");
    let values: Vec<u64> = j
        .split("\"value\": \"0x")
        .skip(1)
        .map(|s| u64::from_str_radix(&s[..s.find('"').unwrap()], 16).unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]));
    // Braces and brackets balance (outside strings, which hold none here).
    assert_eq!(j.matches('{').count(), j.matches('}').count());
    assert_eq!(j.matches('[').count(), j.matches(']').count());
}

// ---------------------------------------------------------------------------
// check

#[test]
fn check_accepts_the_engines_snapshot() {
    let dir = TempDir::new("check-ok");
    let (f, bytes, path) = good(&dir);
    let r = on(&path, &["check"]);
    assert_eq!(r.status, 0, "{}", r.out);
    assert_eq!(
        r.out.trim(),
        format!(
            "{}: ok: a well-formed snapshot, {} symbols, {} bytes",
            path.display(),
            count(&f, |_| true),
            bytes.len()
        )
    );
}

/// Offsets into the good snapshot.
const SHDR1: usize = 176 + 64; // .symtab's section header
const SH_INFO: usize = SHDR1 + 44;

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Byte offset of symbol `i` in the snapshot.
fn sym_at(i: usize) -> usize {
    HEADER_SIZE as usize + 24 * i
}

/// Runs `check` on a corrupted copy; returns its stdout after asserting failure.
fn check_fails(tag: &str, bytes: &[u8]) -> String {
    let dir = TempDir::new(tag);
    let path = dir.file("bad.ksyms", bytes);
    let r = on(&path, &["check"]);
    assert_eq!(r.status, 1, "{tag}: {}{}", r.out, r.err);
    assert!(r.out.trim_end().ends_with("faults"), "{}", r.out);
    r.out
}

#[test]
fn check_catches_truncation() {
    let (_, bytes) = {
        let f = files();
        let b = build(&f);
        (f, b)
    };
    let half = &bytes[..bytes.len() / 2];
    let out = check_fails("trunc-half", half);
    assert!(out.contains("truncated"), "{out}");
    let out = check_fails("trunc-strtab", &bytes[..bytes.len() - 1]);
    assert!(
        out.contains(&format!(
            "truncated: section 2 (offset {}",
            bytes.len() - build_strsz()
        )),
        "{out}"
    );
    let out = check_fails("trunc-header", &bytes[..40]);
    assert!(
        out.contains("truncated: the file is 40 bytes, the ELF header alone needs 64"),
        "{out}"
    );
    // Extra bytes at the end are reported too.
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 3]);
    let out = check_fails("long", &long);
    assert!(out.contains("3 more than where .strtab ends"), "{out}");
}

fn build_strsz() -> usize {
    files().iter().map(|f| f.strs.len()).sum()
}

#[test]
fn check_catches_bad_magic() {
    let mut b = build(&files());
    b[1] = b'X';
    let out = check_fails("magic", &b);
    assert!(
        out.contains("bad magic: 7f 58 4c 46 is not an ELF file"),
        "{out}"
    );
}

#[test]
fn check_catches_a_wrong_sh_info() {
    let f = files();
    let mut b = build(&f);
    let locals = count(&f, |s| s.is_local()) as u32;
    assert_eq!(get32(&b, SH_INFO), locals);
    put32(&mut b, SH_INFO, locals + 1);
    let out = check_fails("sh-info", &b);
    assert!(
        out.contains(&format!(
            ".symtab: sh_info is {}, expected {locals}: one past the last local symbol (index {})",
            locals + 1,
            locals - 1
        )),
        "{out}"
    );
}

#[test]
fn check_catches_a_name_past_the_string_table() {
    let f = files();
    let mut b = build(&f);
    let strsz = build_strsz() as u32;
    put32(&mut b, sym_at(5), strsz + 7);
    let out = check_fails("st-name", &b);
    assert!(
        out.contains(&format!(
            "symbol 5: st_name {} is past the end of .strtab ({strsz} bytes)",
            strsz + 7
        )),
        "{out}"
    );
}

#[test]
fn check_catches_a_bogus_section_index() {
    let f = files();
    let mut b = build(&f);
    let locals = count(&f, |s| s.is_local());
    // The first global is the kernel's first global: kern_kldload.
    put16(&mut b, sym_at(locals) + 6, 7);
    let out = check_fails("shndx", &b);
    assert!(
        out.contains(&format!(
            "symbol {locals} (kern_kldload): st_shndx 0x7 names no section (the file has 4)"
        )),
        "{out}"
    );
}

#[test]
fn check_catches_a_local_among_the_globals() {
    let f = files();
    let mut b = build(&f);
    let locals = count(&f, |s| s.is_local());
    let at = sym_at(locals + 1) + 4;
    b[at] = Elf64Sym::info(STB_LOCAL, STT_FUNC);
    let out = check_fails("order", &b);
    assert!(
        out.contains(&format!(
            "symbol {} (kern_exec) is local but comes after global symbol {locals}: locals must come first",
            locals + 1
        )),
        "{out}"
    );
}

#[test]
fn check_catches_an_unterminated_string_table() {
    let mut b = build(&files());
    let last = b.len() - 1;
    b[last] = b'x';
    let out = check_fails("strtab-nul", &b);
    assert!(out.contains(".strtab is not NUL-terminated"), "{out}");
}

#[test]
fn check_catches_header_fields() {
    let mut b = build(&files());
    b[7] = 0; // EI_OSABI: SYSV instead of FreeBSD
    put16(&mut b, 60, 5); // e_shnum
    let out = check_fails("header", &b);
    assert!(out.contains("EI_OSABI is 0, expected 9"), "{out}");
    assert!(out.contains("e_shnum is 5, expected 4"), "{out}");
}

// ---------------------------------------------------------------------------
// Errors

#[test]
fn corrupt_input_is_an_error_for_the_readers() {
    let mut b = build(&files());
    b[0] = 0;
    let dir = TempDir::new("corrupt");
    let path = dir.file("bad.ksyms", &b);
    for cmd in ["summary", "dump"] {
        let r = on(&path, &[cmd]);
        assert_eq!(r.status, 2, "{cmd}");
        assert!(
            r.err.contains("corrupt snapshot: not an ELF file"),
            "{}",
            r.err
        );
        assert!(r.out.is_empty());
    }
}

#[test]
fn missing_file_and_usage_errors() {
    let r = ksyms(&["-f", "/nonexistent/snap", "summary"]);
    assert_eq!(r.status, 2);
    assert_eq!(r.err.trim(), "ksyms: /nonexistent/snap: no such file");
    let r = ksyms(&["frobnicate"]);
    assert_eq!(r.status, 2);
    assert!(r.err.contains("unknown command frobnicate"));
    let r = ksyms(&["lookup"]);
    assert_eq!(r.status, 2);
    assert!(r.err.contains("needs at least one operand"));
    let r = ksyms(&["summary", "--json"]);
    assert_eq!(r.status, 2);
    let r = ksyms(&["--help"]);
    assert_eq!(r.status, 0);
    assert!(r.out.starts_with("usage: ksyms"));
}

#[test]
fn device_errors_say_what_to_do() {
    use ksyms_tool::input::{describe, DEVICE, MODE_TUNABLE};
    use std::io::{Error, ErrorKind};
    let dev = Path::new(DEVICE);
    let m = describe(dev, &Error::from(ErrorKind::NotFound));
    assert!(
        m.starts_with(
            "/dev/ksyms: no such file: is ksyms.ko loaded? kldload /boot/modules/ksyms.ko"
        ),
        "{m}"
    );
    // EACCES is 13 on FreeBSD and Linux alike.
    let m = describe(dev, &Error::from_raw_os_error(13));
    assert!(m.contains("permission denied"), "{m}");
    assert!(m.contains("run as root"), "{m}");
    assert!(m.contains(MODE_TUNABLE), "{m}");
    let m = describe(dev, &Error::from_raw_os_error(16));
    assert!(m.contains("already has the device open"), "{m}");
    let m = describe(dev, &Error::from_raw_os_error(6));
    assert!(m.contains("try again"), "{m}");
    // A plain file gets the plain message.
    let m = describe(Path::new("snap"), &Error::from_raw_os_error(13));
    assert_eq!(m, "snap: permission denied");
}
