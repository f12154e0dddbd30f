//! `ksyms build`: a snapshot of ELF files on this machine, made by the engine.
//!
//! The first file plays the kernel: its symbols go in with their values as they
//! are, or, for a position-independent file (a shared object such as libc.so.6,
//! or a PIE), moved to FreeBSD/amd64's kernel address [`KERNEL_BASE`] as if it
//! had been loaded there. The others play modules: a tiny "linker" places each one's allocated
//! sections at increasing addresses above the files before it, and reports a
//! symbol's value as its section's address plus its offset (for a relocatable
//! object, as FreeBSD's link_elf_obj.c does) or the load base plus its value (for
//! a shared object or executable, as link_elf.c does). The snapshot is then written
//! by `ksyms::snapshot`, the code that runs in the kernel. Symbols come from
//! `.symtab`, or from `.dynsym` when the file is stripped.

use crate::elfread::{range, read_ehdr, read_shdr, read_sym, SHDR_SIZE, SYM_SIZE};
use ksyms::elf::{
    Elf64Shdr, Elf64Sym, ELFCLASS64, ELFDATA2LSB, ELFMAG, FREEBSD_AMD64, SHN_ABS, SHN_LORESERVE,
    SHN_UNDEF, SHT_STRTAB, SHT_SYMTAB,
};
use ksyms::snapshot::{self, LinkerFile, SliceSink};
use std::path::Path;

const SHT_DYNSYM: u32 = 11;
const SHF_ALLOC: u64 = 0x2;
const ET_REL: u16 = 1;
const ET_DYN: u16 = 3;
/// STT_TLS: a value that is an offset in the thread-local block, not an address.
const STT_TLS: u8 = 6;
/// Where a position-independent "kernel" is placed: KERNBASE + 2 MiB, where
/// FreeBSD/amd64 links its kernel.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8020_0000;
/// Where module placement starts when the kernel file has no addresses.
const MODULE_FLOOR: u64 = 0x100_0000;
const MODULE_ALIGN: u64 = 0x1000;

/// One input file, read and placed.
#[derive(Debug)]
pub struct ElfInput {
    pub name: String,
    kernel: bool,
    relocatable: bool,
    syms: Vec<Elf64Sym>,
    strings: Vec<u8>,
    /// Load address of each section (relocatable objects), indexed by section.
    section_addr: Vec<Option<u64>>,
    /// Load base (shared objects and executables as modules).
    base: u64,
    /// One past the highest address this file occupies.
    end: u64,
}

impl LinkerFile for ElfInput {
    fn is_kernel(&self) -> bool {
        self.kernel
    }
    fn symbols(&self) -> ksyms::Result<&[Elf64Sym]> {
        Ok(&self.syms)
    }
    fn strings(&self) -> ksyms::Result<&[u8]> {
        Ok(&self.strings)
    }
    fn symbol_value(&self, _index: usize, sym: &Elf64Sym) -> Option<u64> {
        match sym.st_shndx {
            SHN_UNDEF => None,
            SHN_ABS => Some(sym.st_value),
            x if x >= SHN_LORESERVE => None,
            x if self.relocatable => self
                .section_addr
                .get(usize::from(x))
                .copied()
                .flatten()
                .and_then(|a| a.checked_add(sym.st_value)),
            _ => self.base.checked_add(sym.st_value),
        }
    }
}

fn fail<T>(path: &Path, msg: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("{}: {msg}", path.display()))
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    let a = a.max(1);
    v.checked_add(a - 1).map(|x| x / a * a)
}

/// Reads `path`; `kernel` for the first file; `floor` is the lowest address a
/// module may take.
pub fn read_input(path: &Path, kernel: bool, floor: u64) -> Result<ElfInput, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(eh) = read_ehdr(&b) else {
        return fail(path, "too short for an ELF header");
    };
    if eh.e_ident[..4] != ELFMAG {
        return fail(path, "not an ELF file");
    }
    if eh.e_ident[4] != ELFCLASS64 || eh.e_ident[5] != ELFDATA2LSB {
        return fail(path, "not a 64-bit little-endian ELF file");
    }
    if usize::from(eh.e_shentsize) != SHDR_SIZE {
        return fail(path, "unexpected e_shentsize");
    }
    let shoff =
        usize::try_from(eh.e_shoff).map_err(|_| format!("{}: bad e_shoff", path.display()))?;
    let shdrs: Vec<Elf64Shdr> = (0..usize::from(eh.e_shnum))
        .map(|i| read_shdr(&b, shoff + i * SHDR_SIZE))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("{}: section headers past the end", path.display()))?;
    let symtab = shdrs
        .iter()
        .find(|s| s.sh_type == SHT_SYMTAB)
        .or_else(|| shdrs.iter().find(|s| s.sh_type == SHT_DYNSYM))
        .copied()
        .ok_or_else(|| format!("{}: no symbol table (.symtab or .dynsym)", path.display()))?;
    let strsh = shdrs
        .get(symtab.sh_link as usize)
        .filter(|s| s.sh_type == SHT_STRTAB)
        .copied()
        .ok_or_else(|| format!("{}: the symbol table has no string table", path.display()))?;
    let symbytes = range(&b, symtab.sh_offset, symtab.sh_size)
        .ok_or_else(|| format!("{}: symbol table past the end", path.display()))?;
    let strings = range(&b, strsh.sh_offset, strsh.sh_size)
        .ok_or_else(|| format!("{}: string table past the end", path.display()))?
        .to_vec();
    let mut syms: Vec<Elf64Sym> = symbytes
        .chunks_exact(SYM_SIZE)
        .filter_map(|c| read_sym(c, 0))
        .collect();

    let relocatable = eh.e_type == ET_REL;
    let mut section_addr = vec![None; shdrs.len()];
    let base;
    let mut end;
    if kernel {
        base = if eh.e_type == ET_DYN { KERNEL_BASE } else { 0 };
        end = shdrs
            .iter()
            .filter(|s| s.sh_flags & SHF_ALLOC != 0)
            .map(|s| s.sh_addr.saturating_add(s.sh_size))
            .max()
            .unwrap_or(0)
            .checked_add(base)
            .ok_or("address space exhausted")?;
        if base != 0 {
            for s in syms.iter_mut().filter(|s| {
                s.st_shndx != SHN_UNDEF && s.st_shndx < SHN_LORESERVE && s.kind() != STT_TLS
            }) {
                s.st_value = s
                    .st_value
                    .checked_add(base)
                    .ok_or("address space exhausted")?;
            }
        }
    } else if relocatable {
        // Allocated sections one after the other, each at its own alignment.
        base = align_up(floor, MODULE_ALIGN).ok_or("address space exhausted")?;
        end = base;
        for (i, s) in shdrs.iter().enumerate() {
            if s.sh_flags & SHF_ALLOC == 0 {
                continue;
            }
            let at = align_up(end, s.sh_addralign).ok_or("address space exhausted")?;
            section_addr[i] = Some(at);
            // .bss (SHT_NOBITS) takes room too, like any allocated section.
            end = at.checked_add(s.sh_size).ok_or("address space exhausted")?;
        }
    } else {
        base = align_up(floor, MODULE_ALIGN).ok_or("address space exhausted")?;
        let span = shdrs
            .iter()
            .filter(|s| s.sh_flags & SHF_ALLOC != 0)
            .map(|s| s.sh_addr.saturating_add(s.sh_size))
            .max()
            .unwrap_or(0);
        end = base.checked_add(span).ok_or("address space exhausted")?;
    }
    if end == base {
        end = base.saturating_add(1);
    }
    Ok(ElfInput {
        name: path.display().to_string(),
        kernel,
        relocatable,
        syms,
        strings,
        section_addr,
        base,
        end,
    })
}

/// Sizes of a built snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    pub size: u64,
    pub symbols: u64,
}

/// The snapshot of already-read inputs, in memory.
pub fn build(files: &[ElfInput]) -> Result<Vec<u8>, String> {
    let census = snapshot::census(files).map_err(|e| format!("census: {e:?}"))?;
    let layout = census.layout().map_err(|e| format!("layout: {e:?}"))?;
    let size = usize::try_from(layout.size()).map_err(|_| "snapshot too large".to_string())?;
    let mut bytes = vec![0u8; size];
    snapshot::write(
        files,
        layout,
        &FREEBSD_AMD64,
        &mut SliceSink::new(&mut bytes),
    )
    .map_err(|e| format!("writing: {e:?} (a malformed input symbol table?)"))?;
    Ok(bytes)
}

/// Reads `inputs` (the kernel first), builds their snapshot and writes it to
/// `output`.
pub fn build_file(inputs: &[&Path], output: &Path) -> Result<Built, String> {
    let mut files = Vec::with_capacity(inputs.len());
    let mut floor = 0u64;
    for (i, p) in inputs.iter().enumerate() {
        let f = read_input(p, i == 0, floor)?;
        floor = align_up(f.end.max(MODULE_FLOOR), MODULE_ALIGN)
            .and_then(|x| x.checked_add(MODULE_ALIGN))
            .ok_or("address space exhausted")?;
        files.push(f);
    }
    let bytes = build(&files)?;
    std::fs::write(output, &bytes).map_err(|e| format!("{}: {e}", output.display()))?;
    Ok(Built {
        size: bytes.len() as u64,
        symbols: files.iter().map(|f| f.syms.len() as u64).sum(),
    })
}
