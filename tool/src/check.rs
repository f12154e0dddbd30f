//! `ksyms check`: is this a snapshot as SPEC.md defines it?
//!
//! Three layers, each reported with one message per fault:
//! 1. What any ELF reader (libelf, readelf) needs: magic, class, byte order,
//!    headers and sections inside the file, a symbol table whose `sh_link` names a
//!    string table.
//! 2. What SPEC.md's layout fixes: every header field (`e_machine` that of the
//!    machine asked for, else of one the tool knows: [`Machine::ALL`]), the
//!    section-name table, the section offsets and sizes, the file size.
//! 3. What makes a symbol table well formed: the null symbol first, the locals
//!    before all others with `sh_info` one past the last of them, every `st_name`
//!    inside `.strtab`, every `st_shndx` a reserved index or a section of the file,
//!    a string table that starts and ends with NUL.
//!
//! The expected values are written out here from SPEC.md, not taken from the
//! engine, so that `check` also cross-checks the engine. The records are read as
//! the `object` crate's raw ELF-64 little-endian types, at whatever offset the
//! file gives, so that every field can be judged even in a broken file.

use crate::elfread::{c_str, hex_bytes};
use crate::machine::Machine;
use ksyms::elf::{
    EI_ABIVERSION, EI_CLASS, EI_DATA, EI_NIDENT, EI_OSABI, EI_VERSION, ELFCLASS64, ELFDATA2LSB,
    ELFMAG, ELFOSABI_FREEBSD, ET_EXEC, EV_CURRENT, PT_LOAD, SHN_ABS, SHN_COMMON, SHN_UNDEF,
    SHT_STRTAB, SHT_SYMTAB,
};
use object::elf::{FileHeader64, ProgramHeader64, SectionHeader64, Sym64};
use object::read::elf::Sym as _;
use object::{pod, LittleEndian as LE, ReadRef};
use std::mem::size_of;

type Ehdr = FileHeader64<LE>;
type Phdr = ProgramHeader64<LE>;
type Shdr = SectionHeader64<LE>;
type Sym = Sym64<LE>;

/// Sizes of the ELF-64 records on disk.
const EHDR_SIZE: usize = size_of::<Ehdr>();
const PHDR_SIZE: usize = size_of::<Phdr>();
const SHDR_SIZE: usize = size_of::<Shdr>();
const SYM_SIZE: usize = size_of::<Sym>();

/// Whether a record is all zero bytes.
fn is_zero<T: pod::Pod>(record: &T) -> bool {
    pod::bytes_of(record).iter().all(|&c| c == 0)
}

/// The bytes `[offset, offset + size)` of `b`, if they are all in the file.
fn range(b: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    b.read_bytes_at(offset, size).ok()
}

/// SPEC.md's layout, in numbers.
pub mod spec {
    pub const PHOFF: u64 = 64;
    pub const SHOFF: u64 = 176;
    pub const PHNUM: u16 = 2;
    pub const SHNUM: u16 = 4;
    pub const SHSTRNDX: u16 = 3;
    pub const SHSTRTAB_OFFSET: u64 = 432;
    pub const SHSTRTAB: &[u8] = b"\0.symtab\0.strtab\0.shstrtab\0";
    pub const SYMTAB_OFFSET: u64 = 464;
    /// PF_R | PF_X, then PF_R | PF_W | PF_X.
    pub const PHDR_FLAGS: [u32; 2] = [0x5, 0x7];
    pub const SECTION_NAMES: [&str; 4] = ["", ".symtab", ".strtab", ".shstrtab"];
}

/// How many faults of one kind about individual symbols are listed before the
/// rest are only counted.
pub const PER_KIND_LIMIT: usize = 10;

/// What `check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One line per fault.
    pub faults: Vec<String>,
    /// Symbols examined (0 when the symbol table could not be located).
    pub symbols: u64,
    /// The machine of `e_machine`, when it is one that was asked for.
    pub machine: Option<Machine>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.faults.is_empty()
    }

    fn fault(&mut self, msg: impl Into<String>) {
        self.faults.push(msg.into());
    }

    /// A fault when a field is not what SPEC.md says.
    fn expect(&mut self, what: &str, got: u64, want: u64) {
        if got != want {
            self.fault(format!("{what} is {got}, expected {want}"));
        }
    }
}

/// Faults about individual symbols, grouped by kind so that a table with
/// thousands of bad entries gives a readable report.
struct SymFaults {
    kind: &'static str,
    shown: Vec<String>,
    count: usize,
}

impl SymFaults {
    fn new(kind: &'static str) -> Self {
        SymFaults {
            kind,
            shown: Vec::new(),
            count: 0,
        }
    }

    fn push(&mut self, msg: String) {
        self.count += 1;
        if self.shown.len() < PER_KIND_LIMIT {
            self.shown.push(msg);
        }
    }

    fn flush(self, report: &mut Report) {
        let more = self.count - self.shown.len();
        for m in self.shown {
            report.fault(m);
        }
        if more > 0 {
            report.fault(format!("... and {more} more symbols {}", self.kind));
        }
    }
}

/// Checks the bytes of a snapshot. `machine`: the machine whose snapshot it must
/// be; `None` accepts any of [`Machine::ALL`].
pub fn check(b: &[u8], machine: Option<Machine>) -> Report {
    let mut r = Report::default();
    let size = b.len() as u64;

    // ---- Layer 1: an ELF file at all ----
    let Ok(eh) = b.read_at::<Ehdr>(0) else {
        r.fault(format!(
            "truncated: the file is {size} bytes, the ELF header alone needs {EHDR_SIZE}"
        ));
        return r;
    };
    let ident = &pod::bytes_of(eh)[..EI_NIDENT];
    if ident[..4] != ELFMAG {
        r.fault(format!(
            "bad magic: {} is not an ELF file (expected 7f 45 4c 46)",
            hex_bytes(&ident[..4])
        ));
        return r;
    }
    if ident[EI_CLASS] != ELFCLASS64 {
        r.fault(format!(
            "EI_CLASS is {}, expected {ELFCLASS64} (ELFCLASS64)",
            ident[EI_CLASS]
        ));
        return r;
    }
    if ident[EI_DATA] != ELFDATA2LSB {
        r.fault(format!(
            "EI_DATA is {}, expected {ELFDATA2LSB} (ELFDATA2LSB)",
            ident[EI_DATA]
        ));
        return r;
    }

    // ---- Layer 2: the header fields of SPEC.md ----
    r.expect("EI_VERSION", ident[EI_VERSION].into(), EV_CURRENT.into());
    r.expect("EI_OSABI", ident[EI_OSABI].into(), ELFOSABI_FREEBSD.into());
    r.expect("EI_ABIVERSION", ident[EI_ABIVERSION].into(), 0);
    r.expect("e_type", eh.e_type.get(LE).into(), ET_EXEC.into());
    check_machine(&mut r, eh.e_machine.get(LE), machine);
    r.expect("e_version", eh.e_version.get(LE).into(), EV_CURRENT.into());
    r.expect("e_entry", eh.e_entry.get(LE), 0);
    r.expect("e_phoff", eh.e_phoff.get(LE), spec::PHOFF);
    r.expect("e_shoff", eh.e_shoff.get(LE), spec::SHOFF);
    r.expect("e_flags", eh.e_flags.get(LE).into(), 0);
    r.expect("e_ehsize", eh.e_ehsize.get(LE).into(), EHDR_SIZE as u64);
    r.expect(
        "e_phentsize",
        eh.e_phentsize.get(LE).into(),
        PHDR_SIZE as u64,
    );
    r.expect("e_phnum", eh.e_phnum.get(LE).into(), spec::PHNUM.into());
    r.expect(
        "e_shentsize",
        eh.e_shentsize.get(LE).into(),
        SHDR_SIZE as u64,
    );
    r.expect("e_shnum", eh.e_shnum.get(LE).into(), spec::SHNUM.into());
    r.expect(
        "e_shstrndx",
        eh.e_shstrndx.get(LE).into(),
        spec::SHSTRNDX.into(),
    );
    if ident[EI_ABIVERSION + 1..EI_NIDENT].iter().any(|&c| c != 0) {
        r.fault("e_ident padding (bytes 9-15) is not zero");
    }

    // Program headers: where e_phoff says, as readers find them.
    let phnum = usize::from(eh.e_phnum.get(LE));
    let ph_end = (phnum as u64)
        .checked_mul(u64::from(eh.e_phentsize.get(LE)))
        .and_then(|n| n.checked_add(eh.e_phoff.get(LE)));
    if ph_end.is_none_or(|e| e > size) {
        r.fault(format!(
            "truncated: the program headers (offset {}, {phnum} of {} bytes) end past the file's {size} bytes",
            eh.e_phoff.get(LE), eh.e_phentsize.get(LE)
        ));
    } else if usize::from(eh.e_phentsize.get(LE)) == PHDR_SIZE {
        let phdrs = b
            .read_slice_at::<Phdr>(eh.e_phoff.get(LE), phnum)
            .unwrap_or_default();
        for (i, ph) in phdrs.iter().enumerate() {
            let want_flags = spec::PHDR_FLAGS.get(i).copied();
            if ph.p_type.get(LE) != PT_LOAD {
                r.fault(format!(
                    "program header {i}: p_type is {}, expected {PT_LOAD} (PT_LOAD)",
                    ph.p_type.get(LE)
                ));
            }
            if want_flags.is_some_and(|f| f != ph.p_flags.get(LE)) {
                r.fault(format!(
                    "program header {i}: p_flags is {:#x}, expected {:#x}",
                    ph.p_flags.get(LE),
                    want_flags.unwrap_or(0)
                ));
            }
            if [
                ph.p_offset.get(LE),
                ph.p_vaddr.get(LE),
                ph.p_paddr.get(LE),
                ph.p_filesz.get(LE),
                ph.p_memsz.get(LE),
                ph.p_align.get(LE),
            ]
            .iter()
            .any(|&v| v != 0)
            {
                r.fault(format!(
                    "program header {i}: addresses, sizes and alignment should all be 0"
                ));
            }
        }
    }

    // Section headers: needed for everything that follows.
    if usize::from(eh.e_shentsize.get(LE)) != SHDR_SIZE {
        r.fault("cannot read the section headers: e_shentsize is not 64");
        return r;
    }
    let shnum = usize::from(eh.e_shnum.get(LE));
    let sh_end = (shnum as u64)
        .checked_mul(SHDR_SIZE as u64)
        .and_then(|n| n.checked_add(eh.e_shoff.get(LE)));
    if sh_end.is_none_or(|e| e > size) {
        r.fault(format!(
            "truncated: the section headers (offset {}, {shnum} of {SHDR_SIZE} bytes) end past the file's {size} bytes",
            eh.e_shoff.get(LE)
        ));
        return r;
    }
    let shdrs = b
        .read_slice_at::<Shdr>(eh.e_shoff.get(LE), shnum)
        .unwrap_or_default();
    if shdrs.first().is_some_and(|s| !is_zero(s)) {
        r.fault("section header 0 is not all zeros");
    }
    for (i, sh) in shdrs.iter().enumerate().skip(1) {
        if range(b, sh.sh_offset.get(LE), sh.sh_size.get(LE)).is_none() {
            r.fault(format!(
                "truncated: section {i} (offset {}, {} bytes) ends past the file's {size} bytes",
                sh.sh_offset.get(LE),
                sh.sh_size.get(LE)
            ));
        }
    }

    // Section names.
    let shstr = shdrs
        .get(usize::from(eh.e_shstrndx.get(LE)))
        .and_then(|s| range(b, s.sh_offset.get(LE), s.sh_size.get(LE)));
    if let Some(sh) = shdrs.get(usize::from(spec::SHSTRNDX)) {
        expect_section(&mut r, 3, sh, SHT_STRTAB, Some(spec::SHSTRTAB_OFFSET));
        if sh.sh_size.get(LE) != spec::SHSTRTAB.len() as u64 {
            r.fault(format!(
                "section 3 (.shstrtab): sh_size is {}, expected {}",
                sh.sh_size.get(LE),
                spec::SHSTRTAB.len()
            ));
        }
    }
    match shstr {
        Some(t) if t == spec::SHSTRTAB => {}
        Some(_) => r.fault(format!(
            "the section-name table is not {:?}",
            String::from_utf8_lossy(spec::SHSTRTAB)
        )),
        None => r.fault("the section-name table (e_shstrndx) cannot be read"),
    }
    if let Some(t) = shstr {
        for (i, sh) in shdrs.iter().enumerate().skip(1) {
            let name = c_str(t, sh.sh_name.get(LE)).map(String::from_utf8_lossy);
            let want = spec::SECTION_NAMES.get(i).copied();
            match (name, want) {
                (Some(n), Some(w)) if n == w => {}
                (Some(n), Some(w)) => {
                    r.fault(format!("section {i} is named {n:?}, expected {w:?}"))
                }
                (None, _) => r.fault(format!(
                    "section {i}: sh_name {} is outside the section-name table",
                    sh.sh_name.get(LE)
                )),
                (Some(_), None) => {}
            }
        }
    }

    // ---- The symbol and string tables ----
    let Some(sym_index) = shdrs.iter().position(|s| s.sh_type.get(LE) == SHT_SYMTAB) else {
        r.fault("no symbol table: no section of type SHT_SYMTAB");
        return r;
    };
    if shdrs
        .iter()
        .filter(|s| s.sh_type.get(LE) == SHT_SYMTAB)
        .count()
        > 1
    {
        r.fault("more than one SHT_SYMTAB section");
    }
    if sym_index != 1 {
        r.fault(format!(
            "the symbol table is section {sym_index}, expected 1"
        ));
    }
    let symsh = &shdrs[sym_index];
    expect_section(
        &mut r,
        sym_index,
        symsh,
        SHT_SYMTAB,
        Some(spec::SYMTAB_OFFSET),
    );
    if symsh.sh_entsize.get(LE) != SYM_SIZE as u64 {
        r.fault(format!(
            ".symtab: sh_entsize is {}, expected {SYM_SIZE}",
            symsh.sh_entsize.get(LE)
        ));
        return r;
    }
    if symsh.sh_addralign.get(LE) != 8 {
        r.fault(format!(
            ".symtab: sh_addralign is {}, expected 8",
            symsh.sh_addralign.get(LE)
        ));
    }
    if !symsh.sh_size.get(LE).is_multiple_of(SYM_SIZE as u64) {
        r.fault(format!(
            ".symtab: sh_size {} is not a multiple of {SYM_SIZE}",
            symsh.sh_size.get(LE)
        ));
    }
    if symsh.sh_link.get(LE) != 2 {
        r.fault(format!(
            ".symtab: sh_link is {}, expected 2",
            symsh.sh_link.get(LE)
        ));
    }
    let Some(strsh) = shdrs.get(symsh.sh_link.get(LE) as usize) else {
        r.fault(format!(
            ".symtab: sh_link {} names no section (the file has {shnum})",
            symsh.sh_link.get(LE)
        ));
        return r;
    };
    let want_stroff = symsh.sh_offset.get(LE).checked_add(symsh.sh_size.get(LE));
    expect_section(
        &mut r,
        symsh.sh_link.get(LE) as usize,
        strsh,
        SHT_STRTAB,
        want_stroff,
    );
    if strsh.sh_type.get(LE) != SHT_STRTAB {
        return r;
    }
    let (Some(symbytes), Some(strtab)) = (
        range(b, symsh.sh_offset.get(LE), symsh.sh_size.get(LE)),
        range(b, strsh.sh_offset.get(LE), strsh.sh_size.get(LE)),
    ) else {
        // Already reported as a truncated section.
        return r;
    };
    let file_end = strsh
        .sh_offset
        .get(LE)
        .saturating_add(strsh.sh_size.get(LE));
    if size < file_end {
        r.fault(format!(
            "truncated: the file is {size} bytes, .strtab ends at {file_end}"
        ));
    } else if size > file_end {
        r.fault(format!(
            "the file is {size} bytes, {} more than where .strtab ends ({file_end})",
            size - file_end
        ));
    }
    match (strtab.first(), strtab.last()) {
        (None, _) => r.fault(".strtab is empty: not even the empty name"),
        (Some(&first), Some(&last)) => {
            if first != 0 {
                r.fault(".strtab does not start with a NUL byte");
            }
            if last != 0 {
                r.fault(".strtab is not NUL-terminated: its last string runs off the end");
            }
        }
        (Some(_), None) => {}
    }

    // ---- Layer 3: the symbols ----
    let (syms, _) =
        pod::slice_from_bytes::<Sym>(symbytes, symbytes.len() / SYM_SIZE).unwrap_or_default();
    r.symbols = syms.len() as u64;
    check_symbols(&mut r, syms, strtab, symsh.sh_info.get(LE), shnum);
    r
}

/// `e_machine`: the one of `machine`, else any FreeBSD machine the tool knows.
fn check_machine(r: &mut Report, e_machine: u16, machine: Option<Machine>) {
    let want: Vec<Machine> = match machine {
        Some(m) => vec![m],
        None => Machine::ALL.to_vec(),
    };
    r.machine = want.iter().copied().find(|m| m.e_machine() == e_machine);
    if r.machine.is_none() {
        let names: Vec<String> = want
            .iter()
            .map(|m| format!("{} ({}, {m})", m.e_machine(), m.em_name()))
            .collect();
        r.fault(format!(
            "e_machine is {e_machine}, expected {}",
            names.join(" or ")
        ));
    }
}

fn expect_section(r: &mut Report, i: usize, sh: &Shdr, ty: u32, offset: Option<u64>) {
    let name = spec::SECTION_NAMES.get(i).copied().unwrap_or("?");
    if sh.sh_type.get(LE) != ty {
        r.fault(format!(
            "section {i} ({name}): sh_type is {}, expected {ty}",
            sh.sh_type.get(LE)
        ));
    }
    if let Some(off) = offset {
        if sh.sh_offset.get(LE) != off {
            r.fault(format!(
                "section {i} ({name}): sh_offset is {}, expected {off}",
                sh.sh_offset.get(LE)
            ));
        }
    }
    if sh.sh_flags.get(LE) != 0 || sh.sh_addr.get(LE) != 0 {
        r.fault(format!(
            "section {i} ({name}): sh_flags and sh_addr should be 0"
        ));
    }
}

fn describe(i: usize, sym: &Sym, strtab: &[u8]) -> String {
    match c_str(strtab, sym.st_name.get(LE)) {
        Some(n) if !n.is_empty() => format!("symbol {i} ({})", String::from_utf8_lossy(n)),
        _ => format!("symbol {i}"),
    }
}

fn check_symbols(r: &mut Report, syms: &[Sym], strtab: &[u8], sh_info: u32, shnum: usize) {
    match syms.first() {
        None => r.fault(".symtab is empty: even an empty table has the null symbol"),
        Some(s0) if !is_zero(s0) => r.fault("symbol 0 is not the null symbol (all fields zero)"),
        Some(_) => {}
    }

    // Locals first, and sh_info one past the last of them.
    let leading_locals = syms.iter().take_while(|s| s.is_local()).count();
    let mut misplaced = SymFaults::new("local after the first global");
    for (i, s) in syms.iter().enumerate().skip(leading_locals) {
        if s.is_local() {
            misplaced.push(format!(
                "{} is local but comes after global symbol {leading_locals}: locals must come first",
                describe(i, s, strtab)
            ));
        }
    }
    let misplaced_count = misplaced.count;
    misplaced.flush(r);
    if misplaced_count == 0 && sh_info as usize != leading_locals {
        r.fault(format!(
            ".symtab: sh_info is {sh_info}, expected {leading_locals}: one past the last local symbol (index {})",
            leading_locals.saturating_sub(1)
        ));
    } else if misplaced_count > 0 && sh_info as usize > leading_locals {
        r.fault(format!(
            ".symtab: sh_info is {sh_info}, but symbol {leading_locals} is already global"
        ));
    }

    let strsz = strtab.len();
    let mut names = SymFaults::new("with st_name past .strtab");
    let mut unterminated = SymFaults::new("whose name runs off the end of .strtab");
    let mut shndx = SymFaults::new("with a bad st_shndx");
    for (i, s) in syms.iter().enumerate() {
        if s.st_name.get(LE) as usize >= strsz {
            names.push(format!(
                "symbol {i}: st_name {} is past the end of .strtab ({strsz} bytes)",
                s.st_name.get(LE)
            ));
        } else if c_str(strtab, s.st_name.get(LE)).is_none() {
            unterminated.push(format!(
                "symbol {i}: the name at st_name {} runs off the end of .strtab",
                s.st_name.get(LE)
            ));
        }
        let x = s.st_shndx.get(LE);
        let ok = x == SHN_UNDEF || x == SHN_ABS || x == SHN_COMMON || usize::from(x) < shnum;
        if !ok {
            shndx.push(format!(
                "{}: st_shndx {x:#x} names no section (the file has {shnum}) and is not SHN_UNDEF, SHN_ABS or SHN_COMMON",
                describe(i, s, strtab)
            ));
        }
    }
    names.flush(r);
    unterminated.flush(r);
    shndx.flush(r);
}

#[cfg(test)]
mod tests {
    use super::spec;
    use ksyms::snapshot::{HEADER_SIZE, SHSTRTAB};

    /// The numbers written out here agree with the engine's.
    #[test]
    fn spec_numbers_match_the_engine() {
        assert_eq!(spec::SYMTAB_OFFSET, HEADER_SIZE);
        assert_eq!(spec::SHSTRTAB, &SHSTRTAB[..]);
        assert_eq!(spec::SHSTRTAB_OFFSET + 27 + 5, HEADER_SIZE);
    }
}
