//! Shared helpers of the engine and consumer tests, on top of the linker-file model
//! and checks the simulator tests use too (tests/sim/files.rs, tests/sim/check.rs,
//! included here as [`files`] and [`check`]).
//!
//! - [`inputs`]: real ELF inputs, compiled at test time by the system C compiler from
//!   C sources that [`c_source`] generates: a "kernel" (an ET_EXEC linked at the amd64 kernel base,
//!   whose `.symtab` values are absolute) and several "modules" (relocatable `.o`
//!   files, as FreeBSD's `link_elf_obj` loads `.ko`s: defined symbols have
//!   section-relative values).
//! - [`SimFile`] as a [`LinkerFile`] given straight to the engine, strict about how
//!   the engine calls it: the kernel file is never asked for a value, and the index
//!   matches the symbol.
//! - [`check_snapshot`]: reads a snapshot back at the offsets SPEC.md gives (not
//!   through the crate's own types) and compares it, symbol by symbol and st_name
//!   included, with what the inputs say.
#![allow(dead_code)]

#[path = "../sim/check.rs"]
pub mod check;
#[path = "../sim/files.rs"]
pub mod files;

pub use files::*;
use ksyms::elf::Elf64Sym;
use ksyms::snapshot::{self, LinkerFile, SliceSink};
use ksyms::values::FileKey;
use ksyms::{Error, Result};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Module `m` of [`inputs`] lives in
/// `[MODULE_BASE + m * MODULE_STRIDE, ... + MODULE_STRIDE)`.
pub const MODULE_STRIDE: u64 = 0x10_0000;

impl LinkerFile for SimFile {
    fn is_kernel(&self) -> bool {
        self.is_kernel_file()
    }
    fn symbols(&self) -> Result<&[Elf64Sym]> {
        Ok(&self.syms)
    }
    fn strings(&self) -> Result<&[u8]> {
        Ok(&self.strs)
    }
    fn symbol_value(&self, index: usize, sym: &Elf64Sym) -> Option<u64> {
        assert!(
            !self.is_kernel_file(),
            "the engine asked the kernel file for a symbol value"
        );
        assert_eq!(
            self.syms.get(index),
            Some(sym),
            "symbol_value called with an index that does not match the symbol"
        );
        self.resolve(index)
    }
}

/// A linker file loaded with load count `id` (a new one at every load), counting
/// the values asked of it.
pub struct Loaded<'a> {
    pub file: &'a SimFile,
    pub id: u64,
    pub asked: Cell<usize>,
}

impl<'a> Loaded<'a> {
    pub fn new(file: &'a SimFile, id: u64) -> Self {
        Loaded {
            file,
            id,
            asked: Cell::new(0),
        }
    }
}

impl LinkerFile for Loaded<'_> {
    fn is_kernel(&self) -> bool {
        self.file.is_kernel_file()
    }
    fn symbols(&self) -> Result<&[Elf64Sym]> {
        Ok(&self.file.syms)
    }
    fn strings(&self) -> Result<&[u8]> {
        Ok(&self.file.strs)
    }
    fn symbol_value(&self, index: usize, _sym: &Elf64Sym) -> Option<u64> {
        assert!(!self.is_kernel(), "the kernel was asked");
        self.asked.set(self.asked.get() + 1);
        self.file.resolve(index)
    }
    fn key(&self) -> Option<FileKey> {
        Some(FileKey {
            file: self.file as *const SimFile as u64,
            load: self.id,
            symbols: self.file.syms.as_ptr() as u64,
            symbol_count: self.file.syms.len() as u64,
            strings: self.file.strs.as_ptr() as u64,
            string_bytes: self.file.strs.len() as u64,
        })
    }
}

/// One random module change to `set` (each entry a file of a store of `store`
/// files and the id it is loaded under): an unload, a load of a file not loaded,
/// a reload (unloaded, and loaded again at the end), or none. Loads take a new id.
pub fn random_change(rng: &mut Rng, set: &mut Vec<(usize, u64)>, store: usize, next_id: &mut u64) {
    match rng.below(4) {
        0 if !set.is_empty() => {
            set.remove(rng.below(set.len() as u64) as usize);
        }
        1 => {
            let free: Vec<usize> = (0..store)
                .filter(|i| set.iter().all(|(j, _)| j != i))
                .collect();
            if !free.is_empty() {
                set.push((free[rng.below(free.len() as u64) as usize], *next_id));
                *next_id += 1;
            }
        }
        2 if !set.is_empty() => {
            let (i, _) = set.remove(rng.below(set.len() as u64) as usize);
            set.push((i, *next_id));
            *next_id += 1;
        }
        _ => {}
    }
}

/// The files as the engine's checks take them.
pub fn sim_files(files: &[Loaded]) -> Vec<SimFile> {
    files.iter().map(|f| f.file.clone()).collect()
}

/// The NUL-terminated string at `off` (without its NUL); panics when unterminated.
pub fn cstr_at(table: &[u8], off: usize) -> &[u8] {
    let rest = &table[off..];
    let len = rest
        .iter()
        .position(|&b| b == 0)
        .expect("unterminated string");
    &rest[..len]
}

// ---------------------------------------------------------------------------
// Real inputs
// ---------------------------------------------------------------------------

/// Compiled inputs, shared by every test of one test binary.
pub struct Inputs {
    pub dir: tempfile::TempDir,
    pub kernel_path: PathBuf,
    pub module_paths: Vec<PathBuf>,
    /// The kernel first, then the modules, in load order.
    pub files: Vec<SimFile>,
}

const MODULE_TAGS: [&str; 4] = ["mod_alpha", "mod_beta", "mod_gamma", "mod_delta"];

/// The real inputs, compiled once per test binary.
pub fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(build_inputs)
}

fn build_inputs() -> Inputs {
    let cc = cc();
    let dir = tempfile::tempdir().expect("temp dir");
    let common = [
        "-O0",
        "-fno-pic",
        "-mcmodel=kernel",
        "-mno-red-zone",
        "-ffreestanding",
        "-fcommon",
        "-fno-asynchronous-unwind-tables",
    ];
    let ksrc = dir.path().join("kernel.c");
    std::fs::write(&ksrc, c_source("kern", true, 30, 10, true)).unwrap();
    let kernel_path = dir.path().join("kernel");
    link_kernel(&cc, &common, &ksrc, &kernel_path);

    let mut module_paths = Vec::new();
    for (m, tag) in MODULE_TAGS.iter().enumerate() {
        let src = dir.path().join(format!("{tag}.c"));
        std::fs::write(&src, c_source(tag, false, 12 + 6 * m, 4 + m, m == 1)).unwrap();
        let obj = dir.path().join(format!("{tag}.o"));
        // One section per function and per object in the third module.
        compile_module(&cc, &common, m == 2, &src, &obj);
        module_paths.push(obj);
    }

    let mut files = vec![load_elf(&kernel_path, None)];
    for (m, p) in module_paths.iter().enumerate() {
        files.push(load_elf(p, Some(m)));
    }
    Inputs {
        dir,
        kernel_path,
        module_paths,
        files,
    }
}

/// Reads an ELF file's `.symtab` and the string table its `sh_link` names. `module`
/// is None for the kernel, else the module's number, which picks its load area.
pub fn load_elf(path: &Path, module: Option<usize>) -> SimFile {
    let data = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let base = module.map(|m| MODULE_BASE + m as u64 * MODULE_STRIDE);
    let (file, table) = SimFile::from_elf_at(&name, &data, base).unwrap();
    assert_eq!(table.sh_type, SHT_SYMTAB, "no SHT_SYMTAB");
    assert!(table.index > 0);
    if let (Some(base), Values::Sections { common, .. }) = (base, &file.values) {
        assert!(
            common + 64 * file.syms.len() as u64 - base < MODULE_STRIDE,
            "module {module:?} does not fit its load area"
        );
    }
    file
}

// ---------------------------------------------------------------------------
// Building and checking snapshots
// ---------------------------------------------------------------------------

/// Census, layout and write, into a buffer cut in pages of `page` bytes.
pub fn build_with(files: &[SimFile], page: usize) -> Result<Vec<u8>> {
    let census = snapshot::census(files)?;
    let layout = census.layout()?;
    let mut buf = vec![0u8; usize::try_from(layout.size()).map_err(|_| Error::TooLarge)?];
    let done = snapshot::write(
        files,
        layout,
        &ksyms::elf::FREEBSD_AMD64,
        &mut SliceSink::with_page_size(&mut buf, page),
    )?;
    assert_eq!(done, layout);
    Ok(buf)
}

/// A snapshot of `files` in pages of the kernel's size.
pub fn build(files: &[SimFile]) -> Vec<u8> {
    build_with(files, snapshot::PAGE_SIZE).expect("snapshot")
}

pub fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
/// sh_addralign, sh_entsize.
type ShdrFields = (u32, u32, u64, u64, u64, u64, u32, u32, u64, u64);

/// A snapshot read back at the offsets SPEC.md fixes.
pub struct Parsed<'a> {
    pub syms: Vec<Elf64Sym>,
    pub strtab: &'a [u8],
    pub sh_info: u32,
}

/// Checks every header field of a snapshot against SPEC.md for `nsyms` symbols,
/// `nlocals` of them local, and `strsz` string bytes; returns the tables.
pub fn parse_checked(b: &[u8], nsyms: u64, nlocals: u64, strsz: u64) -> Parsed<'_> {
    let symtab_off = 464u64;
    let symtab_size = 24 * nsyms;
    let strtab_off = symtab_off + symtab_size;
    let size = strtab_off + strsz;
    assert_eq!(b.len() as u64, size, "file size");

    // Elf64_Ehdr.
    assert_eq!(&b[0..4], b"\x7fELF", "magic");
    assert_eq!(b[4], 2, "ELFCLASS64");
    assert_eq!(b[5], 1, "ELFDATA2LSB");
    assert_eq!(b[6], 1, "EV_CURRENT");
    assert_eq!(b[7], 9, "ELFOSABI_FREEBSD");
    assert_eq!(b[8], 0, "ABI version");
    assert!(b[9..16].iter().all(|&x| x == 0), "e_ident padding");
    assert_eq!(u16_at(b, 16), 2, "e_type ET_EXEC");
    assert_eq!(u16_at(b, 18), 62, "e_machine EM_X86_64");
    assert_eq!(u32_at(b, 20), 1, "e_version");
    assert_eq!(u64_at(b, 24), 0, "e_entry");
    assert_eq!(u64_at(b, 32), 64, "e_phoff");
    assert_eq!(u64_at(b, 40), 64 + 2 * 56, "e_shoff");
    assert_eq!(u32_at(b, 48), 0, "e_flags");
    assert_eq!(u16_at(b, 52), 64, "e_ehsize");
    assert_eq!(u16_at(b, 54), 56, "e_phentsize");
    assert_eq!(u16_at(b, 56), 2, "e_phnum");
    assert_eq!(u16_at(b, 58), 64, "e_shentsize");
    assert_eq!(u16_at(b, 60), 4, "e_shnum");
    assert_eq!(u16_at(b, 62), 3, "e_shstrndx");

    // Two PT_LOADs: R|X then R|W|X, everything else zero.
    for (i, flags) in [(0usize, 0x4 | 0x1), (1, 0x4 | 0x2 | 0x1)] {
        let p = 64 + 56 * i;
        assert_eq!(u32_at(b, p), 1, "p_type PT_LOAD of phdr {i}");
        assert_eq!(u32_at(b, p + 4), flags, "p_flags of phdr {i}");
        assert!(b[p + 8..p + 56].iter().all(|&x| x == 0), "phdr {i} rest");
    }

    // Section headers: (name, type, flags, addr, offset, size, link, info, align, entsize).
    let shoff = 176;
    let expect: [ShdrFields; 4] = [
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (
            1,
            2,
            0,
            0,
            symtab_off,
            symtab_size,
            2,
            nlocals as u32,
            8,
            24,
        ),
        (9, 3, 0, 0, strtab_off, strsz, 0, 0, 1, 0),
        (17, 3, 0, 0, 432, 27, 0, 0, 1, 0),
    ];
    for (i, e) in expect.iter().enumerate() {
        let s = shoff + 64 * i;
        let got = (
            u32_at(b, s),
            u32_at(b, s + 4),
            u64_at(b, s + 8),
            u64_at(b, s + 16),
            u64_at(b, s + 24),
            u64_at(b, s + 32),
            u32_at(b, s + 40),
            u32_at(b, s + 44),
            u64_at(b, s + 48),
            u64_at(b, s + 56),
        );
        assert_eq!(got, *e, "section header {i}");
    }
    assert_eq!(&b[432..459], b"\0.symtab\0.strtab\0.shstrtab\0", "shstrtab");
    assert_eq!(&b[459..464], &[0u8; 5], "padding to 464");

    let syms = b[464..strtab_off as usize]
        .chunks_exact(24)
        .map(|b| sym_from(b, true))
        .collect();
    Parsed {
        syms,
        strtab: &b[strtab_off as usize..],
        sh_info: u32_at(b, shoff + 64 + 44),
    }
}

/// Checks a snapshot of `files` completely: header, sizes, the string table as the
/// concatenation of the files' tables, locals first with sh_info their count, entry
/// 0 null, and every input symbol exactly once with the right name, st_name and value.
pub fn check_snapshot(files: &[SimFile], bytes: &[u8]) {
    let nsyms: u64 = files.iter().map(|f| f.syms.len() as u64).sum();
    let nlocals: u64 = files
        .iter()
        .flat_map(|f| f.syms.iter())
        .filter(|s| s.st_info >> 4 == STB_LOCAL)
        .count() as u64;
    let strsz: u64 = files.iter().map(|f| f.strs.len() as u64).sum();
    let p = parse_checked(bytes, nsyms, nlocals, strsz);

    let concat: Vec<u8> = files.iter().flat_map(|f| f.strs.iter().copied()).collect();
    assert!(
        p.strtab == concat.as_slice(),
        "strtab is not the concatenation"
    );

    let split = p.sh_info as usize;
    if nsyms > 0 {
        assert_eq!(
            p.syms[0],
            Elf64Sym::default(),
            "entry 0 is not the null symbol"
        );
    }
    for (i, s) in p.syms.iter().enumerate() {
        let local = s.st_info >> 4 == STB_LOCAL;
        assert_eq!(local, i < split, "symbol {i} on the wrong side of sh_info");
        assert!(
            s.st_shndx == SHN_UNDEF || s.st_shndx == SHN_ABS,
            "symbol {i}: st_shndx {:#x}",
            s.st_shndx
        );
    }

    // (st_name, the rest): every field of every entry, as a multiset.
    let got: Vec<(u32, check::Seen)> = p
        .syms
        .iter()
        .map(|s| {
            let seen = check::Seen {
                name: cstr_at(p.strtab, s.st_name as usize).to_vec(),
                value: s.st_value,
                size: s.st_size,
                info: s.st_info,
                other: s.st_other,
                shndx: s.st_shndx,
            };
            (s.st_name, seen)
        })
        .collect();
    check::assert_same_symbols(got, check::expected(files));
}

// ---------------------------------------------------------------------------
// Synthetic tables
// ---------------------------------------------------------------------------

/// A synthetic linker file of `count` symbols (its null symbol included) with names
/// of `min_name..=max_name` bytes; a module resolves about 3 in 4 of its symbols.
/// Names may repeat, unlike [`SimFile::synthetic`]'s (which the simulator tests look
/// up by name).
pub fn synthetic(
    rng: &mut Rng,
    name: &str,
    kernel: bool,
    count: usize,
    min_name: usize,
    max_name: usize,
) -> SimFile {
    let mut syms = Vec::with_capacity(count);
    let mut strs = vec![0u8];
    let mut values = Vec::with_capacity(count);
    if count > 0 {
        syms.push(Elf64Sym::default());
        values.push(None);
    }
    for i in 1..count {
        let len = min_name + rng.below((max_name - min_name + 1) as u64) as usize;
        let st_name = strs.len() as u32;
        for k in 0..len {
            strs.push(b"abcdefghijklmnopqrstuvwxyz_0123456789"[(i * 7 + k * 13) % 37]);
        }
        strs.push(0);
        let bind = [STB_LOCAL, STB_GLOBAL, STB_GLOBAL, STB_WEAK][rng.below(4) as usize];
        let kind = [STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_FUNC][rng.below(4) as usize];
        let shndx = match rng.below(8) {
            0 => SHN_UNDEF,
            1 => SHN_ABS,
            _ => 1 + rng.below(20) as u16,
        };
        let value = rng.next() >> 20;
        syms.push(Elf64Sym {
            st_name,
            st_info: info(bind, kind),
            st_other: 0,
            st_shndx: shndx,
            st_value: value,
            st_size: rng.below(512),
        });
        values.push(if shndx != SHN_UNDEF && rng.below(4) != 0 {
            Some(0xffff_ffff_8000_0000 | rng.next() >> 24)
        } else {
            None
        });
    }
    let values = if kernel {
        Values::Absolute
    } else {
        Values::Table(values)
    };
    SimFile::new(
        name,
        syms,
        if count > 0 { strs } else { Vec::new() },
        values,
    )
}
