//! Shared helpers of the engine and consumer tests.
//!
//! - [`inputs`]: real ELF inputs, compiled at test time by the system C compiler from
//!   generated C sources: a "kernel" (an ET_EXEC linked at the amd64 kernel base,
//!   whose `.symtab` values are absolute) and several "modules" (relocatable `.o`
//!   files, as FreeBSD's `link_elf_obj` loads `.ko`s: defined symbols have
//!   section-relative values).
//! - [`MemFile`]: a [`LinkerFile`] over one symbol table and string table, with the
//!   resolver a kernel linker would be: a module's defined symbol is worth the load
//!   address of its section plus `st_value`; undefined symbols resolve to nothing.
//! - [`check_snapshot`]: reads a snapshot back at the offsets SPEC.md gives (not
//!   through the crate's own types) and compares it with what the inputs say.
#![allow(dead_code)]

use ksyms::elf::Elf64Sym;
use ksyms::snapshot::{self, LinkerFile, SliceSink};
use ksyms::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

// ELF constants, spelled out here from the ELF specification so that the checks do
// not depend on the crate's own definitions.
pub const SHN_UNDEF: u16 = 0;
pub const SHN_LORESERVE: u16 = 0xff00;
pub const SHN_ABS: u16 = 0xfff1;
pub const SHN_COMMON: u16 = 0xfff2;
pub const STB_LOCAL: u8 = 0;
pub const STB_GLOBAL: u8 = 1;
pub const STB_WEAK: u8 = 2;
pub const STT_NOTYPE: u8 = 0;
pub const STT_OBJECT: u8 = 1;
pub const STT_FUNC: u8 = 2;
pub const STT_SECTION: u8 = 3;
pub const STT_FILE: u8 = 4;
pub const STT_GNU_IFUNC: u8 = 10;
const SHT_SYMTAB: u32 = 2;
const SHF_ALLOC: u64 = 2;

/// Where the modules are "loaded": module `m` lives in
/// `[MODULE_BASE + m * MODULE_STRIDE, ... + MODULE_STRIDE)`.
pub const MODULE_BASE: u64 = 0xffff_ffff_8280_0000;
pub const MODULE_STRIDE: u64 = 0x10_0000;
/// The kernel's link address (FreeBSD/amd64's KERNBASE + 2 MiB).
pub const KERNEL_BASE: u64 = 0xffff_ffff_8020_0000;

/// How a linker file resolves `LINKER_SYMBOL_VALUES`.
#[derive(Clone, Debug)]
pub enum Resolve {
    /// The kernel: its values are absolute and it must never be asked.
    Kernel,
    /// A loaded module: `bases[shndx]` is the load address of section `shndx` (None
    /// for sections not loaded); common symbols get `common_base + 64 * index`.
    Sections {
        bases: Vec<Option<u64>>,
        common_base: u64,
    },
    /// A value (or none) for every symbol index.
    Table(Vec<Option<u64>>),
}

/// One linker file held in memory.
#[derive(Clone, Debug)]
pub struct MemFile {
    pub name: String,
    pub syms: Vec<Elf64Sym>,
    pub strs: Vec<u8>,
    pub resolve: Resolve,
}

impl MemFile {
    pub fn is_kernel_file(&self) -> bool {
        matches!(self.resolve, Resolve::Kernel)
    }

    /// What the kernel linker reports for symbol `index`.
    pub fn resolved(&self, index: usize) -> Option<u64> {
        let sym = &self.syms[index];
        match &self.resolve {
            Resolve::Kernel => None,
            Resolve::Table(values) => values[index],
            Resolve::Sections { bases, common_base } => match sym.st_shndx {
                SHN_UNDEF => None,
                SHN_ABS => Some(sym.st_value),
                SHN_COMMON => Some(common_base + 64 * index as u64),
                s if s < SHN_LORESERVE => bases
                    .get(usize::from(s))
                    .copied()
                    .flatten()
                    .map(|b| b + sym.st_value),
                _ => None,
            },
        }
    }

    /// The value symbol `index` must have in a snapshot.
    pub fn expected_value(&self, index: usize) -> u64 {
        self.resolved(index).unwrap_or(self.syms[index].st_value)
    }

    /// The name of symbol `index` in this file's own string table.
    pub fn name(&self, index: usize) -> &[u8] {
        cstr_at(&self.strs, self.syms[index].st_name as usize)
    }
}

impl LinkerFile for MemFile {
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
        self.resolved(index)
    }
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

/// `ELF64_ST_INFO`.
pub fn info(bind: u8, kind: u8) -> u8 {
    (bind << 4) | (kind & 0xf)
}

// ---------------------------------------------------------------------------
// Real inputs
// ---------------------------------------------------------------------------

/// The compiler: `$CC` or `cc`. Fails with a clear message when it is missing.
pub fn cc() -> String {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let ok = Command::new(&cc)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "C compiler `{cc}` not found: these tests compile their ELF inputs (install gcc)"
    );
    cc
}

/// Runs a command and returns its stdout; panics with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is the tool installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What one generated input holds.
struct Spec {
    tag: &'static str,
    kernel: bool,
    funcs: usize,
    data: usize,
    ifunc: bool,
    split_sections: bool,
}

/// A C translation unit with static and global functions, weak functions and a weak
/// alias, initialised data, read-only data, bss, common symbols, a function-local
/// static, references to kernel symbols (undefined in a module) and, optionally, an
/// STT_GNU_IFUNC symbol.
fn source(s: &Spec) -> String {
    use std::fmt::Write;
    let t = s.tag;
    let mut c = String::new();
    let w = &mut c;
    writeln!(w, "/* generated by tests/common/mod.rs */").unwrap();
    if s.kernel {
        writeln!(w, "int kern_counter = 42;").unwrap();
        writeln!(
            w,
            "__attribute__((noinline)) int kern_helper(int x) {{ return x + kern_counter; }}"
        )
        .unwrap();
        writeln!(w, "void _start(void) {{ for (;;) ; }}").unwrap();
    } else {
        writeln!(w, "extern int kern_counter;").unwrap();
        writeln!(w, "extern int kern_helper(int);").unwrap();
        writeln!(w, "extern int kern_missing_{t}(void);").unwrap();
        writeln!(
            w,
            "int {t}_uses_kernel(int x) {{ return kern_helper(x) + kern_counter + kern_missing_{t}(); }}"
        )
        .unwrap();
    }
    // The same local name in every file, as `static int debug` is in many modules.
    writeln!(w, "__attribute__((used)) static int shared_counter = 1;").unwrap();
    for i in 0..s.data {
        // Names of 10 to 60-odd bytes.
        let long = "_with_a_longer_name".repeat(i % 3);
        writeln!(w, "int {t}_gdata_{i}{long} = {};", i + 1).unwrap();
        writeln!(
            w,
            "__attribute__((used)) static long {t}_sdata_{i} = {};",
            i + 7
        )
        .unwrap();
        writeln!(w, "int {t}_gbss_{i};").unwrap();
        writeln!(
            w,
            "__attribute__((used)) static char {t}_sbss_{i}[{}];",
            8 * (i + 1)
        )
        .unwrap();
        writeln!(w, "const char {t}_rodata_{i}[] = \"rodata {t} {i}\";").unwrap();
        // A tentative definition: SHN_COMMON in a relocatable file (-fcommon).
        writeln!(w, "long {t}_common_{i};").unwrap();
    }
    writeln!(w, "__attribute__((weak)) int {t}_weak_data = 3;").unwrap();
    for i in 0..s.funcs {
        let long = "_and_a_long_tail".repeat(i % 4);
        writeln!(
            w,
            "__attribute__((used, noinline)) static int {t}_static_fn_{i}(int x) {{ return x * {i} + shared_counter; }}"
        )
        .unwrap();
        writeln!(
            w,
            "int {t}_global_fn_{i}{long}(int x) {{ return {t}_static_fn_{i}(x) + {i}; }}"
        )
        .unwrap();
        writeln!(
            w,
            "__attribute__((weak)) int {t}_weak_fn_{i}(int x) {{ return x - {i}; }}"
        )
        .unwrap();
    }
    writeln!(
        w,
        "int {t}_alias(int) __attribute__((weak, alias(\"{t}_weak_fn_0\")));"
    )
    .unwrap();
    writeln!(
        w,
        "int {t}_counting(void) {{ static int calls; return ++calls; }}"
    )
    .unwrap();
    if s.ifunc {
        writeln!(w, "static int {t}_impl(int x) {{ return x + 1; }}").unwrap();
        writeln!(
            w,
            "static void *{t}_resolver(void) {{ return (void *){t}_impl; }}"
        )
        .unwrap();
        writeln!(
            w,
            "int {t}_ifunc(int) __attribute__((ifunc(\"{t}_resolver\")));"
        )
        .unwrap();
    }
    c
}

/// Compiled inputs, shared by every test of one test binary.
pub struct Inputs {
    pub dir: tempfile::TempDir,
    pub kernel_path: PathBuf,
    pub module_paths: Vec<PathBuf>,
    /// The kernel first, then the modules, in load order.
    pub files: Vec<MemFile>,
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
    let kspec = Spec {
        tag: "kern",
        kernel: true,
        funcs: 30,
        data: 10,
        ifunc: true,
        split_sections: false,
    };
    let ksrc = dir.path().join("kernel.c");
    std::fs::write(&ksrc, source(&kspec)).unwrap();
    let kernel_path = dir.path().join("kernel");
    run(Command::new(&cc)
        .args(common)
        .args(["-nostdlib", "-static", "-no-pie", "-Wl,-e,_start"])
        .arg(format!("-Wl,-Ttext-segment={KERNEL_BASE:#x}"))
        .arg("-o")
        .arg(&kernel_path)
        .arg(&ksrc));

    let mut module_paths = Vec::new();
    for (m, tag) in MODULE_TAGS.iter().enumerate() {
        let spec = Spec {
            tag,
            kernel: false,
            funcs: 12 + 6 * m,
            data: 4 + m,
            ifunc: m == 1,
            split_sections: m == 2,
        };
        let src = dir.path().join(format!("{tag}.c"));
        std::fs::write(&src, source(&spec)).unwrap();
        let obj = dir.path().join(format!("{tag}.o"));
        let mut cmd = Command::new(&cc);
        cmd.args(common).arg("-c");
        if spec.split_sections {
            cmd.args(["-ffunction-sections", "-fdata-sections"]);
        }
        run(cmd.arg("-o").arg(&obj).arg(&src));
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
pub fn load_elf(path: &Path, module: Option<usize>) -> MemFile {
    use object::read::elf::{FileHeader, SectionHeader};
    use object::Endianness;
    let data = std::fs::read(path).unwrap();
    let hdr = object::elf::FileHeader64::<Endianness>::parse(&*data).unwrap();
    let endian = hdr.endian().unwrap();
    let sections = hdr.sections(endian, &*data).unwrap();
    let (symtab_index, symtab) = sections
        .iter()
        .enumerate()
        .find(|(_, s)| s.sh_type(endian) == SHT_SYMTAB)
        .expect("no SHT_SYMTAB");
    assert!(symtab_index > 0);
    let raw = symtab.data(endian, &*data).unwrap();
    let strtab = sections
        .section(object::SectionIndex(symtab.sh_link(endian) as usize))
        .unwrap();
    let strs = strtab.data(endian, &*data).unwrap().to_vec();
    assert_eq!(raw.len() % 24, 0);
    let syms = raw.chunks_exact(24).map(sym_from_bytes).collect();

    let resolve = match module {
        None => Resolve::Kernel,
        Some(m) => {
            // Lay the allocated sections out one after another, as link_elf_obj does.
            let base = MODULE_BASE + m as u64 * MODULE_STRIDE;
            let mut cursor = base;
            let mut bases = Vec::new();
            for s in sections.iter() {
                if s.sh_flags(endian) & SHF_ALLOC != 0 {
                    let align = s.sh_addralign(endian).max(1);
                    cursor = cursor.div_ceil(align) * align;
                    bases.push(Some(cursor));
                    cursor += s.sh_size(endian).max(1);
                } else {
                    bases.push(None);
                }
            }
            let common_base = cursor.div_ceil(64) * 64;
            let syms_len = raw.len() / 24;
            assert!(
                common_base + 64 * syms_len as u64 - base < MODULE_STRIDE,
                "module {m} does not fit its load area"
            );
            Resolve::Sections { bases, common_base }
        }
    };
    MemFile {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        syms,
        strs,
        resolve,
    }
}

/// An `Elf64_Sym` from its 24 little-endian bytes.
pub fn sym_from_bytes(b: &[u8]) -> Elf64Sym {
    Elf64Sym {
        st_name: u32::from_le_bytes(b[0..4].try_into().unwrap()),
        st_info: b[4],
        st_other: b[5],
        st_shndx: u16::from_le_bytes(b[6..8].try_into().unwrap()),
        st_value: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        st_size: u64::from_le_bytes(b[16..24].try_into().unwrap()),
    }
}

// ---------------------------------------------------------------------------
// Building and checking snapshots
// ---------------------------------------------------------------------------

/// Census, layout and write, with `scratch` entries of scratch.
pub fn build_with(files: &[MemFile], scratch: usize) -> Result<Vec<u8>> {
    let census = snapshot::census(files)?;
    let layout = census.layout()?;
    let mut buf = vec![0u8; usize::try_from(layout.size()).map_err(|_| Error::TooLarge)?];
    let mut scratch = vec![Elf64Sym::default(); scratch];
    let done = snapshot::write(
        files,
        layout,
        &ksyms::elf::FREEBSD_AMD64,
        &mut SliceSink(&mut buf),
        &mut scratch,
    )?;
    assert_eq!(done, layout);
    Ok(buf)
}

/// A snapshot of `files` with a moderate scratch buffer.
pub fn build(files: &[MemFile]) -> Vec<u8> {
    build_with(files, 256).expect("snapshot")
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
        .map(sym_from_bytes)
        .collect();
    Parsed {
        syms,
        strtab: &b[strtab_off as usize..],
        sh_info: u32_at(b, shoff + 64 + 44),
    }
}

/// One symbol as it must come out, or as it came out.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub st_name: u32,
    pub name: Vec<u8>,
    pub value: u64,
    pub size: u64,
    pub info: u8,
    pub other: u8,
    pub shndx: u16,
}

/// What the snapshot of `files` must hold: every input symbol once, with its name
/// rebased by the string bytes before its file, its value fixed up for a module, and
/// its section index SHN_UNDEF or SHN_ABS.
pub fn expected_entries(files: &[MemFile]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut base = 0u64;
    for f in files {
        for (i, s) in f.syms.iter().enumerate() {
            out.push(Entry {
                st_name: (base + u64::from(s.st_name)) as u32,
                name: f.name(i).to_vec(),
                value: if f.is_kernel_file() {
                    s.st_value
                } else {
                    f.expected_value(i)
                },
                size: s.st_size,
                info: s.st_info,
                other: s.st_other,
                shndx: if s.st_shndx == SHN_UNDEF {
                    SHN_UNDEF
                } else {
                    SHN_ABS
                },
            });
        }
        base += f.strs.len() as u64;
    }
    out
}

/// Checks a snapshot of `files` completely: header, sizes, the string table as the
/// concatenation of the files' tables, locals first with sh_info their count, entry
/// 0 null, and every input symbol exactly once with the right name and value.
pub fn check_snapshot(files: &[MemFile], bytes: &[u8]) {
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

    let mut got: Vec<Entry> = p
        .syms
        .iter()
        .map(|s| Entry {
            st_name: s.st_name,
            name: cstr_at(p.strtab, s.st_name as usize).to_vec(),
            value: s.st_value,
            size: s.st_size,
            info: s.st_info,
            other: s.st_other,
            shndx: s.st_shndx,
        })
        .collect();
    let mut want = expected_entries(files);
    got.sort();
    want.sort();
    if got != want {
        let first = got
            .iter()
            .zip(&want)
            .find(|(g, w)| g != w)
            .map(|(g, w)| format!("got {g:?}\nwant {w:?}"));
        panic!(
            "symbols differ ({} got, {} wanted); first difference:\n{}",
            got.len(),
            want.len(),
            first.unwrap_or_default()
        );
    }
}

/// Names (as strings) of every symbol of `files` by expected value, for lookups.
pub fn names_by_value(files: &[MemFile]) -> BTreeMap<u64, Vec<String>> {
    let mut m: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for f in files {
        for i in 0..f.syms.len() {
            m.entry(f.expected_value(i))
                .or_default()
                .push(String::from_utf8_lossy(f.name(i)).into_owned());
        }
    }
    m
}

// ---------------------------------------------------------------------------
// Synthetic tables
// ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so synthetic tables are the same
/// on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A synthetic linker file of `count` symbols (its null symbol included) with names
/// of `min_name..=max_name` bytes; a module resolves about 3 in 4 of its symbols.
pub fn synthetic(
    rng: &mut Rng,
    name: &str,
    kernel: bool,
    count: usize,
    min_name: usize,
    max_name: usize,
) -> MemFile {
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
    MemFile {
        name: name.to_string(),
        syms,
        strs: if count > 0 { strs } else { Vec::new() },
        resolve: if kernel {
            Resolve::Kernel
        } else {
            Resolve::Table(values)
        },
    }
}
