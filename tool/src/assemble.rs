//! `ksyms build`: a snapshot of ELF files on this machine, made by the engine.
//!
//! The files are read with the `object` crate ([`crate::elfread`]); the snapshot is
//! for the machine of the first file, amd64 or arm64, and the others must match it.
//! The first file plays the kernel: its symbols go in with their values as they
//! are, or, for a position-independent file (a shared object such as libc.so.6,
//! or a PIE), moved to the machine's kernel address ([`Machine::kernel_base`]) as
//! if it had been loaded there. The others play modules: a tiny "linker" places
//! each one's allocated sections at increasing addresses above the files before
//! it, and reports a symbol's value as its section's address plus its offset (for
//! a relocatable object, as FreeBSD's link_elf_obj.c does) or the load base plus
//! its value (for a shared object or executable, as link_elf.c does). The snapshot
//! is then written by `ksyms::snapshot`, the code that runs in the kernel. Symbols
//! come from `.symtab`, or from `.dynsym` when the file is stripped.

use crate::elfread::ElfSymbols;
use crate::machine::Machine;
use ksyms::elf::{Elf64Sym, SHN_ABS, SHN_LORESERVE, SHN_UNDEF};
use ksyms::snapshot::{self, LinkerFile, SliceSink};
use object::elf::{ET_DYN, ET_REL, SHF_ALLOC, STT_TLS};
use std::path::Path;

/// Where module placement starts when the kernel file has no addresses.
const MODULE_FLOOR: u64 = 0x100_0000;
const MODULE_ALIGN: u64 = 0x1000;

/// How the "linker" placed a file, which says what a symbol's address is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A relocatable object: the address of each section, by section index
    /// (`None` for a section that is not loaded); a symbol is at its section's
    /// address plus its value.
    Sections(Vec<Option<u64>>),
    /// A shared object or executable loaded at this base: a symbol is at the base
    /// plus its value.
    Base(u64),
}

/// One linker file for the engine: its symbol table, its string table and where
/// it was placed.
#[derive(Clone, Debug)]
pub struct InputFile {
    pub name: String,
    pub kernel: bool,
    pub syms: Vec<Elf64Sym>,
    pub strings: Vec<u8>,
    pub placement: Placement,
    /// One past the highest address this file occupies.
    pub end: u64,
}

impl LinkerFile for InputFile {
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
            x => match &self.placement {
                Placement::Sections(addr) => addr
                    .get(usize::from(x))
                    .copied()
                    .flatten()
                    .and_then(|a| a.checked_add(sym.st_value)),
                Placement::Base(base) => base.checked_add(sym.st_value),
            },
        }
    }
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    let a = a.max(1);
    v.checked_add(a - 1).map(|x| x / a * a)
}

const EXHAUSTED: &str = "address space exhausted";

/// Places the file `elf` read from `name`: as the kernel (`kernel`, on
/// `machine`), or as a module at `floor` or above.
pub fn place(
    name: &str,
    elf: &ElfSymbols<'_>,
    kernel: bool,
    machine: Machine,
    floor: u64,
) -> Result<InputFile, String> {
    let mut syms = elf.syms.clone();
    let span = elf
        .sections
        .iter()
        .filter(|s| s.sh_flags & u64::from(SHF_ALLOC) != 0)
        .map(|s| s.sh_addr.saturating_add(s.sh_size))
        .max()
        .unwrap_or(0);
    let (placement, base, mut end) = if kernel {
        let base = if elf.e_type == ET_DYN {
            machine.kernel_base()
        } else {
            0
        };
        if base != 0 {
            for s in syms.iter_mut().filter(|s| {
                s.st_shndx != SHN_UNDEF && s.st_shndx < SHN_LORESERVE && s.kind() != STT_TLS
            }) {
                s.st_value = s.st_value.checked_add(base).ok_or(EXHAUSTED)?;
            }
        }
        let end = span.checked_add(base).ok_or(EXHAUSTED)?;
        (Placement::Base(0), base, end)
    } else if elf.e_type == ET_REL {
        // Allocated sections one after the other, each at its own alignment.
        let base = align_up(floor, MODULE_ALIGN).ok_or(EXHAUSTED)?;
        let mut end = base;
        let mut addr = vec![None; elf.sections.len()];
        for (i, s) in elf.sections.iter().enumerate() {
            if s.sh_flags & u64::from(SHF_ALLOC) == 0 {
                continue;
            }
            let at = align_up(end, s.sh_addralign).ok_or(EXHAUSTED)?;
            addr[i] = Some(at);
            // .bss (SHT_NOBITS) takes room too, like any allocated section.
            end = at.checked_add(s.sh_size).ok_or(EXHAUSTED)?;
        }
        (Placement::Sections(addr), base, end)
    } else {
        let base = align_up(floor, MODULE_ALIGN).ok_or(EXHAUSTED)?;
        let end = base.checked_add(span).ok_or(EXHAUSTED)?;
        (Placement::Base(base), base, end)
    };
    if end == base {
        end = base.saturating_add(1);
    }
    Ok(InputFile {
        name: name.to_string(),
        kernel,
        syms,
        strings: elf.strtab.to_vec(),
        placement,
        end,
    })
}

/// Sizes of a built snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    pub size: u64,
    pub symbols: u64,
    pub machine: Machine,
}

/// The snapshot of `files` (the kernel first) for `machine`, in memory.
pub fn build(files: &[InputFile], machine: Machine) -> Result<Vec<u8>, String> {
    let census = snapshot::census(files).map_err(|e| format!("census: {e:?}"))?;
    let layout = census.layout().map_err(|e| format!("layout: {e:?}"))?;
    let size = usize::try_from(layout.size()).map_err(|_| "snapshot too large".to_string())?;
    let mut bytes = vec![0u8; size];
    snapshot::write(
        files,
        layout,
        machine.target(),
        &mut SliceSink::new(&mut bytes),
    )
    .map_err(|e| format!("writing: {e:?} (a malformed input symbol table?)"))?;
    Ok(bytes)
}

/// Reads `inputs` (the kernel first), builds their snapshot for the kernel file's
/// machine and writes it to `output`.
pub fn build_file(inputs: &[&Path], output: &Path) -> Result<Built, String> {
    let mut files = Vec::with_capacity(inputs.len());
    let mut machine: Option<Machine> = None;
    let mut floor = 0u64;
    for (i, p) in inputs.iter().enumerate() {
        let name = p.display().to_string();
        let bytes = std::fs::read(p).map_err(|e| format!("{name}: {e}"))?;
        let elf = ElfSymbols::parse_input(&bytes).map_err(|e| format!("{name}: {e}"))?;
        let m = match machine {
            Some(k) if k.e_machine() == elf.e_machine => k,
            Some(k) => {
                return Err(format!(
                    "{name}: e_machine {}, but the kernel file is {k} ({})",
                    elf.e_machine,
                    k.e_machine()
                ))
            }
            None => Machine::from_e_machine(elf.e_machine).ok_or_else(|| {
                let known: Vec<String> = Machine::ALL
                    .iter()
                    .map(|m| format!("{m} ({})", m.e_machine()))
                    .collect();
                format!(
                    "{name}: e_machine {}: snapshots are built for {}",
                    elf.e_machine,
                    known.join(" and ")
                )
            })?,
        };
        machine = Some(m);
        let f = place(&name, &elf, i == 0, m, floor)?;
        floor = align_up(f.end.max(MODULE_FLOOR), MODULE_ALIGN)
            .and_then(|x| x.checked_add(MODULE_ALIGN))
            .ok_or(EXHAUSTED)?;
        files.push(f);
    }
    let Some(machine) = machine else {
        return Err("no input files".to_string());
    };
    let bytes = build(&files, machine)?;
    std::fs::write(output, &bytes).map_err(|e| format!("{}: {e}", output.display()))?;
    Ok(Built {
        size: bytes.len() as u64,
        symbols: files.iter().map(|f| f.syms.len() as u64).sum(),
        machine,
    })
}
