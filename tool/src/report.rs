//! The read-only subcommands: `summary`, `lookup`, `find`, `dump`.
//! Each returns its output as a string; `main` prints it.

use crate::elfread::ElfSymbols;
use crate::files::{self, FileSpan};
use crate::machine::Machine;
use globset::{Glob, GlobBuilder, GlobSet};
use ksyms::elf::{
    Elf64Sym, SHN_ABS, SHN_COMMON, SHN_UNDEF, SHN_XINDEX, STB_GLOBAL, STB_LOCAL, STB_WEAK,
    STT_FILE, STT_FUNC, STT_GNU_IFUNC, STT_NOTYPE, STT_OBJECT, STT_SECTION,
};
use object::elf::{STT_COMMON, STT_TLS};
use serde::Serialize;
use std::borrow::Cow;
use std::fmt::Write;

/// The name readelf gives a symbol type.
pub fn type_name(t: u8) -> String {
    match t {
        STT_NOTYPE => "NOTYPE".into(),
        STT_OBJECT => "OBJECT".into(),
        STT_FUNC => "FUNC".into(),
        STT_SECTION => "SECTION".into(),
        STT_FILE => "FILE".into(),
        STT_COMMON => "COMMON".into(),
        STT_TLS => "TLS".into(),
        STT_GNU_IFUNC => "IFUNC".into(),
        other => format!("TYPE{other}"),
    }
}

/// The name readelf gives a symbol binding.
pub fn bind_name(b: u8) -> String {
    match b {
        STB_LOCAL => "LOCAL".into(),
        STB_GLOBAL => "GLOBAL".into(),
        STB_WEAK => "WEAK".into(),
        other => format!("BIND{other}"),
    }
}

/// The name readelf gives a section index.
pub fn shndx_name(x: u16) -> String {
    match x {
        SHN_UNDEF => "UNDEF".into(),
        SHN_ABS => "ABS".into(),
        SHN_COMMON => "COMMON".into(),
        SHN_XINDEX => "XINDEX".into(),
        other => other.to_string(),
    }
}

/// Whether a symbol has an address worth counting in a range: defined, of a kind
/// that lives at an address, and not 0.
fn has_address(s: &Elf64Sym) -> bool {
    s.st_shndx != SHN_UNDEF
        && s.st_value != 0
        && matches!(
            s.kind(),
            STT_NOTYPE | STT_OBJECT | STT_FUNC | STT_GNU_IFUNC | STT_COMMON
        )
}

/// Lowest start and highest end (value + size) of a set of symbols.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    pub count: u64,
    pub lowest: u64,
    pub end: u64,
}

impl Extent {
    fn add(&mut self, s: &Elf64Sym) {
        let end = s.st_value.saturating_add(s.st_size.max(1));
        if self.count == 0 {
            self.lowest = s.st_value;
            self.end = end;
        } else {
            self.lowest = self.lowest.min(s.st_value);
            self.end = self.end.max(end);
        }
        self.count += 1;
    }

    fn show(&self) -> String {
        if self.count == 0 {
            "-".to_string()
        } else {
            format!("{:#018x} - {:#018x}", self.lowest, self.end)
        }
    }
}

/// Per linker file figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    pub symbols: u64,
    pub locals: u64,
    pub funcs: u64,
    pub objects: u64,
    pub extent: Extent,
}

/// `ksyms summary`.
pub fn summary(snap: &ElfSymbols<'_>, source: &str) -> String {
    let (spans, per_file) = file_stats(snap);
    let syms = &snap.syms;
    let mut out = String::new();

    // Counts by type (rows) and binding (columns); the last row and column are
    // for values outside the named ones.
    let kinds = [
        STT_NOTYPE,
        STT_OBJECT,
        STT_FUNC,
        STT_SECTION,
        STT_FILE,
        STT_COMMON,
        STT_TLS,
        STT_GNU_IFUNC,
    ];
    let binds = [STB_LOCAL, STB_GLOBAL, STB_WEAK];
    let mut table = vec![[0u64; 4]; kinds.len() + 1];
    let (mut funcs, mut objects, mut all) =
        (Extent::default(), Extent::default(), Extent::default());
    let mut undefined = 0u64;
    for s in syms {
        let row = kinds
            .iter()
            .position(|&k| k == s.kind())
            .unwrap_or(kinds.len());
        let col = binds
            .iter()
            .position(|&b| b == s.binding())
            .unwrap_or(binds.len());
        table[row][col] += 1;
        if s.st_shndx == SHN_UNDEF && !files::is_null_entry(s) {
            undefined += 1;
        }
        if has_address(s) {
            all.add(s);
            match s.kind() {
                STT_FUNC | STT_GNU_IFUNC => funcs.add(s),
                STT_OBJECT => objects.add(s),
                _ => {}
            }
        }
    }
    let locals = syms.iter().filter(|s| s.is_local()).count();
    let nulls = syms.iter().filter(|s| files::is_null_entry(s)).count();

    let _ = writeln!(out, "ksyms snapshot {source}");
    let _ = writeln!(out, "  size          {:>10} bytes", group(snap.size as u64));
    let _ = writeln!(out, "  machine       {}", machine_name(snap.e_machine));
    let _ = writeln!(
        out,
        "  symbols       {:>10}  ({} local incl. {} null, {} global or weak; sh_info {})",
        group(syms.len() as u64),
        group(locals as u64),
        nulls,
        group((syms.len() - locals) as u64),
        snap.sh_info
    );
    let _ = writeln!(
        out,
        "  strings       {:>10} bytes",
        group(snap.strtab.len() as u64)
    );
    let _ = writeln!(out, "  undefined     {:>10}", group(undefined));
    let _ = writeln!(out, "  linker files  {:>10}", spans.len());
    let _ = writeln!(out);

    let _ = writeln!(
        out,
        "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "type", "local", "global", "weak", "other", "total"
    );
    let mut totals = [0u64; 4];
    for (row, counts) in table.iter().enumerate() {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        let name = kinds
            .get(row)
            .map_or_else(|| "other".to_string(), |&k| type_name(k));
        let _ = writeln!(
            out,
            "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            group(counts[0]),
            group(counts[1]),
            group(counts[2]),
            group(counts[3]),
            group(total)
        );
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
    }
    let _ = writeln!(
        out,
        "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "total",
        group(totals[0]),
        group(totals[1]),
        group(totals[2]),
        group(totals[3]),
        group(totals.iter().sum())
    );
    let _ = writeln!(out);

    let _ = writeln!(
        out,
        "  addresses (defined symbols with a value; end = value + size)"
    );
    for (what, e) in [("functions", funcs), ("objects", objects), ("all", all)] {
        let _ = writeln!(out, "  {:<10} {:>9}  {}", what, group(e.count), e.show());
    }
    let _ = writeln!(out);

    let _ = writeln!(
        out,
        "  linker files (recovered from .strtab: each file's null symbol marks where its strings start)"
    );
    let _ = writeln!(
        out,
        "  {:>3}  {:<24} {:>9} {:>9} {:>9} {:>9} {:>10}  lowest - end",
        "#", "file", "symbols", "local", "funcs", "objects", "strings"
    );
    for (i, (span, st)) in spans.iter().zip(&per_file).enumerate() {
        let _ = writeln!(
            out,
            "  {:>3}  {:<24} {:>9} {:>9} {:>9} {:>9} {:>10}  {}",
            i,
            clip(&span.label, 24),
            group(st.symbols),
            group(st.locals),
            group(st.funcs),
            group(st.objects),
            group(u64::from(span.str_end - span.str_start)),
            st.extent.show()
        );
    }
    out
}

/// Per-file figures, for callers (and tests) that want them without the text.
pub fn file_stats(snap: &ElfSymbols<'_>) -> (Vec<FileSpan>, Vec<FileStats>) {
    let spans = files::recover(snap);
    let mut per_file = vec![FileStats::default(); spans.len()];
    for s in &snap.syms {
        let f = &mut per_file[files::file_of(&spans, s.st_name)];
        f.symbols += 1;
        if s.is_local() {
            f.locals += 1;
        }
        match s.kind() {
            STT_FUNC | STT_GNU_IFUNC => f.funcs += 1,
            STT_OBJECT => f.objects += 1,
            _ => {}
        }
        if has_address(s) {
            f.extent.add(s);
        }
    }
    (spans, per_file)
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(width - 1).collect();
        c.push('~');
        c
    }
}

/// 1234567 -> "1,234,567".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// lockstat's symbol table: the symbols it keeps, sorted by address.
#[derive(Clone, Debug)]
pub struct AddrTable {
    entries: Vec<(u64, u64, String)>,
}

impl AddrTable {
    /// Built as lockstat's `symtab_init` does (sym.c): keep symbols with
    /// `type <= STT_FUNC` and `size != 0`, add a sentinel at the top of the address
    /// space, sort by address, drop all but one of the symbols sharing an address,
    /// and put "(usermode)" at address 0. lockstat's fake `cpu[N]` symbols are not
    /// added: they stand for no address of the kernel. Of several symbols at one
    /// address, lockstat keeps whichever qsort(3) leaves last; here the sort is
    /// stable, so it is the last of them in table order.
    pub fn new(snap: &ElfSymbols<'_>) -> AddrTable {
        let mut entries: Vec<(u64, u64, String)> = snap
            .syms
            .iter()
            .filter(|s| s.kind() <= STT_FUNC && s.st_size != 0)
            .map(|s| (s.st_value, s.st_size, snap.name(s).into_owned()))
            .collect();
        entries.push((u64::MAX, 1, format!("{:#x}", u64::MAX)));
        entries.sort_by_key(|e| e.0);
        let mut kept: Vec<(u64, u64, String)> = Vec::with_capacity(entries.len() + 1);
        kept.push((0, 1, "(usermode)".to_string()));
        let mut it = entries.into_iter().peekable();
        while let Some(e) = it.next() {
            if e.0 == 0 || it.peek().is_some_and(|n| n.0 == e.0) {
                continue;
            }
            kept.push(e);
        }
        AddrTable { entries: kept }
    }

    /// `addr_to_sym`: the last entry at or below `addr`, never the sentinel.
    pub fn resolve(&self, addr: u64) -> (&str, u64, u64) {
        let below = self.entries.partition_point(|e| e.0 <= addr);
        // entries[0] is at address 0, so below >= 1; the sentinel is never chosen.
        let idx = below
            .saturating_sub(1)
            .min(self.entries.len().saturating_sub(2));
        let (a, size, name) = &self.entries[idx];
        (name, addr - a, *size)
    }

    /// lockstat's `format_symbol` without the size: `name`, `name+0xoff`, or the
    /// bare address when it is too far past the symbol.
    pub fn format(&self, addr: u64) -> String {
        let (name, off, size) = self.resolve(addr);
        if off == 0 {
            name.to_string()
        } else if off <= size || (off < 256 && addr != off) {
            format!("{name}+{off:#x}")
        } else {
            format!("{addr:#x}")
        }
    }
}

/// Parses an address the way ddb and lockstat users write them: hexadecimal,
/// with or without `0x`, optionally plus or minus a hexadecimal offset
/// (`0xffffffff80a1b2c0+0x10`).
pub fn parse_addr(s: &str) -> Option<u64> {
    let t = s.trim();
    if let Some(i) = t.rfind(['+', '-']).filter(|&i| i > 0) {
        let (base, off) = (parse_hex(&t[..i])?, parse_hex(&t[i + 1..])?);
        return if t.as_bytes()[i] == b'+' {
            base.checked_add(off)
        } else {
            base.checked_sub(off)
        };
    }
    parse_hex(t)
}

fn parse_hex(t: &str) -> Option<u64> {
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// `ksyms lookup ADDR...`: one line per address.
pub fn lookup(snap: &ElfSymbols<'_>, addrs: &[u64]) -> String {
    let table = AddrTable::new(snap);
    let mut out = String::new();
    for &a in addrs {
        let _ = writeln!(out, "{a:#018x}  {}", table.format(a));
    }
    out
}

/// A `find` pattern: a shell pattern as fnmatch(3) reads it (`*`, `?`, `[...]`,
/// `[!...]` or `[^...]`, backslash escapes), where `*` also matches `/`.
pub fn pattern(p: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(p)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
}

/// Symbols matching any of `patterns`, sorted by address then table order.
pub fn find<'s>(snap: &'s ElfSymbols<'_>, patterns: &GlobSet) -> Vec<(usize, &'s Elf64Sym)> {
    let mut hits: Vec<(usize, &Elf64Sym)> = snap
        .syms
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            snap.name_bytes(s)
                .is_some_and(|n| !n.is_empty() && patterns.is_match(&*String::from_utf8_lossy(n)))
        })
        .collect();
    hits.sort_by_key(|(i, s)| (s.st_value, *i));
    hits
}

fn sym_header() -> String {
    format!(
        "{:<18} {:>10} {:<7} {:<6} {:<6} {:>4}  {}",
        "address", "size", "type", "bind", "shndx", "file", "name"
    )
}

fn sym_line(snap: &ElfSymbols<'_>, spans: &[FileSpan], s: &Elf64Sym) -> String {
    format!(
        "{:#018x} {:>10} {:<7} {:<6} {:<6} {:>4}  {}",
        s.st_value,
        s.st_size,
        type_name(s.kind()),
        bind_name(s.binding()),
        shndx_name(s.st_shndx),
        files::file_of(spans, s.st_name),
        snap.name(s)
    )
}

/// `ksyms find` output for the hits of [`find`].
pub fn find_text(snap: &ElfSymbols<'_>, hits: &[(usize, &Elf64Sym)]) -> String {
    let spans = files::recover(snap);
    let mut out = sym_header();
    out.push('\n');
    for (_, s) in hits {
        out.push_str(&sym_line(snap, &spans, s));
        out.push('\n');
    }
    out
}

/// Every symbol, sorted by address (then by table order).
fn by_address<'s>(snap: &'s ElfSymbols<'_>) -> Vec<(usize, &'s Elf64Sym)> {
    let mut all: Vec<(usize, &Elf64Sym)> = snap.syms.iter().enumerate().collect();
    all.sort_by_key(|(i, s)| (s.st_value, *i));
    all
}

/// `ksyms dump`.
pub fn dump_text(snap: &ElfSymbols<'_>) -> String {
    let spans = files::recover(snap);
    let mut out = sym_header();
    out.push('\n');
    for (_, s) in by_address(snap) {
        out.push_str(&sym_line(snap, &spans, s));
        out.push('\n');
    }
    out
}

/// `ksyms dump --json`: the whole snapshot as one object.
#[derive(Serialize)]
struct Dump<'a> {
    source: &'a str,
    size: usize,
    e_machine: u16,
    sh_info: u32,
    files: Vec<DumpFile<'a>>,
    symbols: Vec<DumpSymbol<'a>>,
}

#[derive(Serialize)]
struct DumpFile<'a> {
    index: usize,
    label: &'a str,
    strings_start: u32,
    strings_end: u32,
}

#[derive(Serialize)]
struct DumpSymbol<'a> {
    index: usize,
    /// A string ("0x..."): a 64-bit address does not fit a JSON number exactly in
    /// most readers.
    value: String,
    size: u64,
    #[serde(rename = "type")]
    kind: String,
    bind: String,
    shndx: String,
    file: usize,
    /// `null` when `st_name` is outside the string table.
    name: Option<Cow<'a, str>>,
}

/// `ksyms dump --json`: the source, its size, machine and `sh_info`, the linker
/// files and every symbol sorted by address.
pub fn dump_json(snap: &ElfSymbols<'_>, source: &str) -> String {
    let spans = files::recover(snap);
    let dump = Dump {
        source,
        size: snap.size,
        e_machine: snap.e_machine,
        sh_info: snap.sh_info,
        files: spans
            .iter()
            .enumerate()
            .map(|(index, f)| DumpFile {
                index,
                label: &f.label,
                strings_start: f.str_start,
                strings_end: f.str_end,
            })
            .collect(),
        symbols: by_address(snap)
            .into_iter()
            .map(|(index, s)| DumpSymbol {
                index,
                value: format!("{:#x}", s.st_value),
                size: s.st_size,
                kind: type_name(s.kind()),
                bind: bind_name(s.binding()),
                shndx: shndx_name(s.st_shndx),
                file: files::file_of(&spans, s.st_name),
                name: snap.name_bytes(s).map(String::from_utf8_lossy),
            })
            .collect(),
    };
    // Serialising plain structs of strings and integers cannot fail.
    let mut out = serde_json::to_string_pretty(&dump).unwrap_or_default();
    out.push('\n');
    out
}

/// `amd64 (EM_X86_64)`, or the number for a machine the tool does not know.
pub fn machine_name(e_machine: u16) -> String {
    match Machine::from_e_machine(e_machine) {
        Some(m) => format!("{m} ({})", m.em_name()),
        None => format!("e_machine {e_machine}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{group, parse_addr, pattern};

    #[test]
    fn patterns_read_as_fnmatch_does() {
        let m = |p: &str, n: &str| pattern(p).unwrap().compile_matcher().is_match(n);
        assert!(m("kern_kldload", "kern_kldload"));
        assert!(!m("kern_kldload", "kern_kldload2"));
        assert!(m("kern_*", "kern_kldload"));
        assert!(m("*kld*", "kern_kldload"));
        assert!(!m("*kld*", "kern_exec"));
        assert!(m("k?rn_*", "kern_x"));
        assert!(!m("k?rn_*", "krn_x"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        // Classes, negated with ! or ^ as FreeBSD's fnmatch(3) allows.
        assert!(m("x[0-9]", "x7"));
        assert!(!m("x[0-9]", "xa"));
        assert!(m("x[!0-9]", "xa"));
        assert!(!m("x[^0-9]", "x1"));
        assert!(m("[]]", "]"));
        // A backslash escapes; `*` crosses `/` (names are no paths).
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(m("g_*", "g_a/b"));
        // What fnmatch would take literally is an error that names the pattern.
        let e = pattern("x[").unwrap_err().to_string();
        assert!(e.contains("'x['"), "{e}");
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("0x10"), Some(0x10));
        assert_eq!(parse_addr("ffffffff80200000"), Some(0xffff_ffff_8020_0000));
        assert_eq!(
            parse_addr("0xffffffff80200000+0x10"),
            Some(0xffff_ffff_8020_0010)
        );
        assert_eq!(parse_addr("0x100-8"), Some(0xf8));
        assert_eq!(parse_addr("0xffffffffffffffff+1"), None);
        assert_eq!(parse_addr("0x8-0x10"), None);
        assert_eq!(parse_addr("kern_kldload"), None);
        assert_eq!(parse_addr("+5"), None);
        assert_eq!(parse_addr("0x"), None);
        assert_eq!(parse_addr("0x1_0"), None);
        assert_eq!(parse_addr("10000000000000000"), None);
    }

    #[test]
    fn grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
