//! Linker files as the tests model them, shared by every test binary, bench and
//! example (the simulator's, and the engine and consumer tests' through
//! tests/common/mod.rs): read from real ELF files (compiled by the tests with the
//! system C compiler, or given on a command line), or synthesised in memory,
//! optionally lying about their tables the way a broken linker file would; what
//! `LINKER_DEBUG_SYMBOL_VALUES` resolves for them; the C compiler and the compiled inputs
//! of the simulator tests.
//!
//! Everything ELF here is read with the `object` crate or spelled out from the ELF
//! specification, never taken from the crate (src/elf.rs), so that the tests do not
//! check the crate against itself.

use ksyms::elf::Elf64Sym;
use ksyms::snapshot::LinkerFile;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

// ELF constants from the ELF specification (not the crate's).
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
pub const SHT_SYMTAB: u32 = 2;
pub const SHT_DYNSYM: u32 = 11;
const SHF_ALLOC: u64 = 2;
const ET_REL: u16 = 1;
const ET_DYN: u16 = 3;

/// The kernel's link address (FreeBSD/amd64's KERNBASE + 2 MiB).
pub const KERNEL_BASE: u64 = 0xffff_ffff_8020_0000;
/// Where the module load areas start.
pub const MODULE_BASE: u64 = 0xffff_ffff_8280_0000;

/// Where the simulated kernel linker "loads" module number `n`.
pub fn module_base(n: u64) -> u64 {
    MODULE_BASE + n * 0x40_0000
}

/// `ELF64_ST_INFO`.
pub fn info(bind: u8, kind: u8) -> u8 {
    (bind << 4) | (kind & 0xf)
}

/// What `LINKER_DEBUG_SYMBOL_VALUES` reports for a file's symbols.
#[derive(Clone, Debug)]
pub enum Values {
    /// The kernel: values are absolute already; the device must never ask.
    Absolute,
    /// A relocatable module: `bases[shndx]` is its section's load address (None when
    /// the section is not loaded); common symbols get `common + 64 * index`;
    /// undefined symbols resolve to nothing (an errno).
    Sections {
        bases: Vec<Option<u64>>,
        common: u64,
    },
    /// A shared object loaded at `base`: defined symbols are `base + st_value`.
    Base(u64),
    /// As FreeBSD's linkers report a loaded file's symbols: `base + st_value` for
    /// every one (link_elf: `base` is the load address; link_elf_obj: 0, its
    /// table values relocated at load).
    Linked(u64),
    /// One answer per symbol index.
    Table(Vec<Option<u64>>),
}

/// Lies a linker file tells about its tables (all memory-safe for a device that
/// checks what it can: a count is only ever smaller than the real table, or
/// impossible).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lie {
    /// Reported symbol count instead of the real one.
    pub symtab_count: Option<i64>,
    /// Report a NULL symbol table.
    pub symtab_null: bool,
    /// Report the symbol table 4 bytes past its start (misaligned).
    pub symtab_misaligned: bool,
    /// Reported string table size instead of the real one.
    pub strtab_len: Option<i64>,
    /// Report a NULL string table.
    pub strtab_null: bool,
}

/// Which symbol table [`SimFile::from_elf_at`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRead {
    /// Its section index.
    pub index: usize,
    /// SHT_SYMTAB, or SHT_DYNSYM when the file has no `.symtab`.
    pub sh_type: u32,
}

/// One linker file.
#[derive(Clone, Debug)]
pub struct SimFile {
    pub name: String,
    pub syms: Vec<Elf64Sym>,
    pub strs: Vec<u8>,
    pub values: Values,
    pub lie: Lie,
}

impl SimFile {
    pub fn is_kernel_file(&self) -> bool {
        matches!(self.values, Values::Absolute)
    }

    /// What the simulated linker reports for symbol `index`: Some(address) or None
    /// (an errno).
    pub fn resolve(&self, index: usize) -> Option<u64> {
        let sym = self.syms.get(index)?;
        match &self.values {
            Values::Absolute => Some(sym.st_value),
            Values::Table(t) => t.get(index).copied().flatten(),
            Values::Linked(base) => Some(base.wrapping_add(sym.st_value)),
            Values::Base(base) => match sym.st_shndx {
                SHN_UNDEF => None,
                SHN_ABS => Some(sym.st_value),
                _ => Some(base.wrapping_add(sym.st_value)),
            },
            Values::Sections { bases, common } => match sym.st_shndx {
                SHN_UNDEF => None,
                SHN_ABS => Some(sym.st_value),
                SHN_COMMON => Some(common + 64 * index as u64),
                s if s < SHN_LORESERVE => bases
                    .get(usize::from(s))
                    .copied()
                    .flatten()
                    .map(|b| b.wrapping_add(sym.st_value)),
                _ => None,
            },
        }
    }

    /// The value symbol `index` must have in a snapshot.
    pub fn expected_value(&self, index: usize) -> u64 {
        if self.is_kernel_file() {
            self.syms[index].st_value
        } else {
            self.resolve(index).unwrap_or(self.syms[index].st_value)
        }
    }

    /// The name of symbol `index` (bytes up to the NUL), None when it is outside the
    /// table or unterminated.
    pub fn name(&self, index: usize) -> Option<&[u8]> {
        let off = self.syms.get(index)?.st_name as usize;
        let rest = self.strs.get(off..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..len])
    }

    /// This file as the device sees it when it tells the truth about `count`/`len`
    /// smaller than the real tables (a truncating lie), or None when the lie makes
    /// the file unusable (null, misaligned, negative).
    pub fn effective(&self) -> Option<SimFile> {
        let l = &self.lie;
        let n = match l.symtab_count {
            None => self.syms.len(),
            Some(c) if c >= 0 && (c as u64) <= self.syms.len() as u64 => c as usize,
            Some(_) => return None,
        };
        let s = match l.strtab_len {
            None => self.strs.len(),
            Some(c) if c >= 0 && (c as u64) <= self.strs.len() as u64 => c as usize,
            Some(_) => return None,
        };
        if (l.symtab_null || l.symtab_misaligned) && n > 0 {
            return None;
        }
        if l.strtab_null && s > 0 {
            return None;
        }
        let values = match &self.values {
            Values::Table(t) => Values::Table(t.iter().take(n).copied().collect()),
            v => v.clone(),
        };
        Some(SimFile::new(
            &self.name,
            self.syms[..n].to_vec(),
            self.strs[..s].to_vec(),
            values,
        ))
    }

    /// Whether a snapshot of this file (as [`SimFile::effective`]) is well-formed input:
    /// names inside a NUL-terminated string table, entry 0 null where it is first.
    pub fn well_formed(&self) -> bool {
        if self.syms.is_empty() {
            return true;
        }
        if self.strs.last() != Some(&0) {
            return false;
        }
        self.syms
            .iter()
            .all(|s| (s.st_name as usize) < self.strs.len())
    }

    /// Total string bytes and symbol counts, for summaries.
    pub fn counts(&self) -> (usize, usize) {
        (self.syms.len(), self.strs.len())
    }

    /// A truthful linker file.
    pub fn new(name: &str, syms: Vec<Elf64Sym>, strs: Vec<u8>, values: Values) -> SimFile {
        SimFile {
            name: name.to_string(),
            syms,
            strs,
            values,
            lie: Lie::default(),
        }
    }

    /// Reads `.symtab` (or, failing that, `.dynsym`) of an ELF file. `module` is None for
    /// the kernel (absolute values), else the module number that picks its load area.
    pub fn from_elf(name: &str, data: &[u8], module: Option<u64>) -> Result<SimFile, String> {
        SimFile::from_elf_at(name, data, module.map(module_base)).map(|(f, _)| f)
    }

    /// [`SimFile::from_elf`] with the load address itself (None for the kernel); also
    /// says which table it read.
    pub fn from_elf_at(
        name: &str,
        data: &[u8],
        base: Option<u64>,
    ) -> Result<(SimFile, TableRead), String> {
        use object::read::elf::{FileHeader, SectionHeader};
        use object::Endianness;
        let hdr = object::elf::FileHeader64::<Endianness>::parse(data)
            .map_err(|e| format!("{name}: not a 64-bit ELF file: {e}"))?;
        let endian = hdr.endian().map_err(|e| format!("{name}: {e}"))?;
        let sections = hdr
            .sections(endian, data)
            .map_err(|e| format!("{name}: section headers: {e}"))?;
        let of_type = |t: u32| {
            sections
                .iter()
                .enumerate()
                .find(|(_, s)| s.sh_type(endian) == t)
        };
        let (index, symtab) = of_type(SHT_SYMTAB)
            .or_else(|| of_type(SHT_DYNSYM))
            .ok_or_else(|| format!("{name}: no .symtab and no .dynsym"))?;
        let read = TableRead {
            index,
            sh_type: symtab.sh_type(endian),
        };
        let raw = symtab
            .data(endian, data)
            .map_err(|e| format!("{name}: symbol table: {e}"))?;
        if raw.len() % 24 != 0 {
            return Err(format!(
                "{name}: symbol table size {} is not a multiple of 24",
                raw.len()
            ));
        }
        let strtab = sections
            .section(object::SectionIndex(symtab.sh_link(endian) as usize))
            .map_err(|e| format!("{name}: string table: {e}"))?;
        let strs = strtab
            .data(endian, data)
            .map_err(|e| format!("{name}: string table: {e}"))?
            .to_vec();
        let little = hdr.is_little_endian();
        let syms: Vec<Elf64Sym> = raw.chunks_exact(24).map(|b| sym_from(b, little)).collect();
        let values = match base {
            None => Values::Absolute,
            Some(base) => match hdr.e_type(endian) {
                ET_REL => {
                    // Allocated sections one after another, as link_elf_obj lays out
                    // a .ko.
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
                    Values::Sections {
                        bases,
                        common: cursor.div_ceil(64) * 64,
                    }
                }
                ET_DYN => Values::Base(base),
                _ => Values::Base(0),
            },
        };
        Ok((SimFile::new(name, syms, strs, values), read))
    }

    pub fn from_path(path: &Path, module: Option<u64>) -> Result<SimFile, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        SimFile::from_elf(&name, &data, module)
    }

    /// A small synthetic module (cheap to add mid-test): `count` symbols, names of
    /// 10 to 40 bytes, from seed `seed`.
    pub fn small_module(name: &str, count: usize, seed: u64) -> SimFile {
        SimFile::synthetic(name, false, count, 10, 40, &mut Rng::new(seed))
    }

    /// A synthetic file of `count` symbols (its null symbol included) with names of
    /// `min..=max` bytes, about 1 in 4 local, the locals first as in every ELF symbol
    /// table; a module resolves most of them.
    pub fn synthetic(
        name: &str,
        kernel: bool,
        count: usize,
        min: usize,
        max: usize,
        rng: &mut Rng,
    ) -> SimFile {
        let mut syms = Vec::with_capacity(count);
        let mut strs = Vec::with_capacity(count * (min + max) / 2 + 16);
        let mut table = Vec::with_capacity(count);
        strs.push(0);
        if count > 0 {
            syms.push(Elf64Sym::default());
            table.push(None);
        }
        let tag: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(6)
            .collect();
        for i in 1..count {
            let len = min + rng.below((max - min + 1) as u64) as usize;
            let st_name = strs.len() as u32;
            // A unique prefix, then filler to the drawn length.
            let head = format!("{tag}_{i}_");
            for k in 0..len {
                let b = head
                    .as_bytes()
                    .get(k)
                    .copied()
                    .unwrap_or(b"abcdefghijklmnopqrstuvwxyz_0123456789"[(i * 7 + k * 13) % 37]);
                strs.push(b);
            }
            strs.push(0);
            let bind = [STB_LOCAL, STB_GLOBAL, STB_GLOBAL, STB_WEAK][rng.below(4) as usize];
            let kind = [STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_FUNC][rng.below(4) as usize];
            let shndx = match rng.below(8) {
                0 => SHN_UNDEF,
                1 => SHN_ABS,
                _ => 1 + rng.below(20) as u16,
            };
            syms.push(Elf64Sym {
                st_name,
                st_info: (bind << 4) | kind,
                st_other: 0,
                st_shndx: shndx,
                st_value: if kernel {
                    0xffff_ffff_8020_0000 + rng.below(1 << 26)
                } else {
                    rng.below(1 << 20)
                },
                st_size: rng.below(512),
            });
            table.push(if shndx != SHN_UNDEF && rng.below(5) != 0 {
                Some(0xffff_ffff_8200_0000 + rng.below(1 << 30))
            } else {
                None
            });
        }
        // Locals first, each kind in the order drawn (a stable sort).
        let mut order: Vec<usize> = (0..syms.len()).collect();
        order.sort_by_key(|&i| syms[i].st_info >> 4 != STB_LOCAL);
        let syms = order.iter().map(|&i| syms[i]).collect();
        let table = order.iter().map(|&i| table[i]).collect();
        SimFile::new(
            name,
            syms,
            strs,
            if kernel {
                Values::Absolute
            } else {
                Values::Table(table)
            },
        )
    }
}

/// Anything that holds a linker file.
pub trait AsFile {
    fn file(&self) -> &SimFile;
}

impl AsFile for SimFile {
    fn file(&self) -> &SimFile {
        self
    }
}

impl<T: AsFile> AsFile for &T {
    fn file(&self) -> &SimFile {
        (**self).file()
    }
}

impl<T: AsFile> AsFile for std::sync::Arc<T> {
    fn file(&self) -> &SimFile {
        (**self).file()
    }
}

/// An `Elf64_Sym` from its 24 bytes.
pub fn sym_from(b: &[u8], little: bool) -> Elf64Sym {
    let u16_ = |x: [u8; 2]| {
        if little {
            u16::from_le_bytes(x)
        } else {
            u16::from_be_bytes(x)
        }
    };
    let u32_ = |x: [u8; 4]| {
        if little {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        }
    };
    let u64_ = |x: [u8; 8]| {
        if little {
            u64::from_le_bytes(x)
        } else {
            u64::from_be_bytes(x)
        }
    };
    Elf64Sym {
        st_name: u32_(b[0..4].try_into().unwrap()),
        st_info: b[4],
        st_other: b[5],
        st_shndx: u16_(b[6..8].try_into().unwrap()),
        st_value: u64_(b[8..16].try_into().unwrap()),
        st_size: u64_(b[16..24].try_into().unwrap()),
    }
}

/// The engine's view of a file (for the expected bytes of a snapshot).
pub struct EngineFile<'a>(pub &'a SimFile);

impl LinkerFile for EngineFile<'_> {
    fn is_kernel(&self) -> bool {
        self.0.is_kernel_file()
    }
    fn symbols(&self) -> ksyms::Result<&[Elf64Sym]> {
        Ok(&self.0.syms)
    }
    fn strings(&self) -> ksyms::Result<&[u8]> {
        Ok(&self.0.strs)
    }
    fn symbol_value(&self, index: usize, _sym: &Elf64Sym) -> Option<u64> {
        self.0.resolve(index)
    }
}

/// A small deterministic generator (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

// ---------------------------------------------------------------------------
// Real ELF inputs compiled by the tests
// ---------------------------------------------------------------------------

/// The C compiler: `$CC` or `cc`; a clear failure when it is missing.
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

/// Links `src` into a static ET_EXEC "kernel" with `.symtab`, linked at
/// [`KERNEL_BASE`], entry `_start`, no libc.
pub fn link_kernel(cc: &str, flags: &[&str], src: &Path, out: &Path) {
    run(Command::new(cc)
        .args(flags)
        .args([
            "-fno-pic",
            "-nostdlib",
            "-static",
            "-no-pie",
            "-Wl,-e,_start",
        ])
        .arg(format!("-Wl,-Ttext-segment={KERNEL_BASE:#x}"))
        .arg("-o")
        .arg(out)
        .arg(src));
}

/// Compiles `src` into a relocatable object (what link_elf_obj loads as a `.ko`);
/// `split`: one section per function and per object.
pub fn compile_module(cc: &str, flags: &[&str], split: bool, src: &Path, out: &Path) {
    let mut cmd = Command::new(cc);
    cmd.args(flags).arg("-c");
    if split {
        cmd.args(["-ffunction-sections", "-fdata-sections"]);
    }
    run(cmd.arg("-o").arg(out).arg(src));
}

/// Links `src` into a shared object without libc; `strip`: only `.dynsym` is left.
pub fn link_shared(cc: &str, flags: &[&str], strip: bool, src: &Path, out: &Path) {
    let mut cmd = Command::new(cc);
    cmd.args(flags).args(["-fPIC", "-shared", "-nostdlib"]);
    if strip {
        cmd.arg("-s");
    }
    run(cmd.arg("-o").arg(out).arg(src));
}

/// The one generator of the tests' C inputs (the simulator's here, the engine and
/// consumer tests' through tests/common/mod.rs): a translation unit with `funcs`
/// static, global and weak functions (the global ones with names of 10 to 60-odd
/// bytes) and a weak alias, `data` initialised data, read-only data, bss and
/// common objects, static and global, a weak datum, a function-local static, the
/// same static name in every file (as `static int debug` is in many modules), and,
/// for a module, references to kernel symbols, one of which stays undefined;
/// `ifunc`: an STT_GNU_IFUNC symbol too.
pub fn c_source(tag: &str, kernel: bool, funcs: usize, data: usize, ifunc: bool) -> String {
    use std::fmt::Write;
    let t = tag;
    let mut c = String::new();
    let w = &mut c;
    writeln!(w, "/* generated by tests/sim/files.rs */").unwrap();
    if kernel {
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
    writeln!(w, "__attribute__((used)) static int shared_counter = 1;").unwrap();
    for i in 0..data {
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
    for i in 0..funcs {
        let long = "_and_a_long_tail".repeat(i % 4);
        writeln!(
            w,
            "__attribute__((used, noinline)) static int {t}_sfn_{i}(int x) {{ return x * {i} + shared_counter; }}"
        )
        .unwrap();
        writeln!(
            w,
            "int {t}_gfn_{i}{long}(int x) {{ return {t}_sfn_{i}(x) + {i}; }}"
        )
        .unwrap();
        writeln!(
            w,
            "__attribute__((weak)) int {t}_wfn_{i}(int x) {{ return x - {i}; }}"
        )
        .unwrap();
    }
    if funcs > 0 {
        writeln!(
            w,
            "int {t}_alias(int) __attribute__((weak, alias(\"{t}_wfn_0\")));"
        )
        .unwrap();
    }
    writeln!(
        w,
        "int {t}_counting(void) {{ static int calls; return ++calls; }}"
    )
    .unwrap();
    if ifunc {
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

/// The compiled inputs of one test binary, read into memory.
pub struct Compiled {
    /// A static ET_EXEC "kernel" with `.symtab`.
    pub kernel: SimFile,
    /// The same kind of kernel as a stripped shared object: only `.dynsym`.
    pub kernel_dynsym: SimFile,
    /// Relocatable modules (`.o`), the first few with one section per function.
    pub modules: Vec<SimFile>,
    /// A module built as a shared object (ET_DYN).
    pub shared_module: SimFile,
}

/// Compiles the inputs once per test binary (a temporary directory, removed at once).
pub fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(compile_inputs)
}

/// Number of compiled relocatable modules.
pub const MODULES: usize = 6;

fn compile_inputs() -> Compiled {
    let cc = cc();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let common = [
        "-O0",
        "-fcommon",
        "-fno-asynchronous-unwind-tables",
        "-ffreestanding",
    ];

    let ksrc = dir.join("kernel.c");
    std::fs::write(&ksrc, c_source("kern", true, 40, 12, false)).unwrap();
    let kpath = dir.join("kernel");
    link_kernel(&cc, &common, &ksrc, &kpath);
    let kdyn = dir.join("kernel_dynsym.so");
    link_shared(&cc, &common, true, &ksrc, &kdyn);

    let mut modules = Vec::new();
    for m in 0..MODULES {
        let tag = format!("simmod{m}");
        let src = dir.join(format!("{tag}.c"));
        std::fs::write(&src, c_source(&tag, false, 10 + 7 * m, 3 + m, false)).unwrap();
        let obj = dir.join(format!("{tag}.o"));
        compile_module(&cc, &common, m % 3 == 1, &src, &obj);
        modules.push(SimFile::from_path(&obj, Some(m as u64 + 1)).unwrap());
    }
    let ssrc = dir.join("simshared.c");
    std::fs::write(&ssrc, c_source("simshared", false, 9, 3, false)).unwrap();
    let so = dir.join("simshared.so");
    link_shared(&cc, &common, false, &ssrc, &so);

    Compiled {
        kernel: SimFile::from_path(&kpath, None).unwrap(),
        kernel_dynsym: SimFile::from_path(&kdyn, None).unwrap(),
        modules,
        shared_module: SimFile::from_path(&so, Some(MODULES as u64 + 1)).unwrap(),
    }
}
