//! Reading a snapshot the way its consumers do.
//!
//! lockstat(1) reads `/dev/ksyms` with libelf: it walks the section headers, takes
//! the `SHT_SYMTAB` section and the string table its `sh_link` names, and uses the
//! symbols as they are. [`Snapshot::parse`] does the same and no more, with every
//! offset and size checked against the file, so that `summary`, `lookup`, `find` and
//! `dump` work on any well-enough-formed ELF-64 little-endian symbol table (the
//! FreeBSD in-tree driver's output included). The strict rules of SPEC.md are
//! checked separately, by [`crate::check`].

use ksyms::elf::{
    Elf64Ehdr, Elf64Phdr, Elf64Shdr, Elf64Sym, EI_CLASS, EI_DATA, EI_NIDENT, ELFCLASS64,
    ELFDATA2LSB, ELFMAG, SHT_STRTAB, SHT_SYMTAB,
};
use std::borrow::Cow;
use std::fmt;

/// Sizes of the ELF-64 records on disk.
pub const EHDR_SIZE: usize = 64;
pub const PHDR_SIZE: usize = 56;
pub const SHDR_SIZE: usize = 64;
pub const SYM_SIZE: usize = 24;

/// Why a file cannot be read as a symbol table at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// `N` bytes at `off`, if the file has them.
fn field<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    b.get(off..end)?.try_into().ok()
}

pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    field(b, off).map(u16::from_le_bytes)
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    field(b, off).map(u32::from_le_bytes)
}

pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    field(b, off).map(u64::from_le_bytes)
}

/// The ELF header at the start of `b`, if `b` is long enough.
pub fn read_ehdr(b: &[u8]) -> Option<Elf64Ehdr> {
    Some(Elf64Ehdr {
        e_ident: field::<EI_NIDENT>(b, 0)?,
        e_type: u16_at(b, 16)?,
        e_machine: u16_at(b, 18)?,
        e_version: u32_at(b, 20)?,
        e_entry: u64_at(b, 24)?,
        e_phoff: u64_at(b, 32)?,
        e_shoff: u64_at(b, 40)?,
        e_flags: u32_at(b, 48)?,
        e_ehsize: u16_at(b, 52)?,
        e_phentsize: u16_at(b, 54)?,
        e_phnum: u16_at(b, 56)?,
        e_shentsize: u16_at(b, 58)?,
        e_shnum: u16_at(b, 60)?,
        e_shstrndx: u16_at(b, 62)?,
    })
}

/// The program header at byte offset `off`.
pub fn read_phdr(b: &[u8], off: usize) -> Option<Elf64Phdr> {
    Some(Elf64Phdr {
        p_type: u32_at(b, off)?,
        p_flags: u32_at(b, off.checked_add(4)?)?,
        p_offset: u64_at(b, off.checked_add(8)?)?,
        p_vaddr: u64_at(b, off.checked_add(16)?)?,
        p_paddr: u64_at(b, off.checked_add(24)?)?,
        p_filesz: u64_at(b, off.checked_add(32)?)?,
        p_memsz: u64_at(b, off.checked_add(40)?)?,
        p_align: u64_at(b, off.checked_add(48)?)?,
    })
}

/// The section header at byte offset `off`.
pub fn read_shdr(b: &[u8], off: usize) -> Option<Elf64Shdr> {
    Some(Elf64Shdr {
        sh_name: u32_at(b, off)?,
        sh_type: u32_at(b, off.checked_add(4)?)?,
        sh_flags: u64_at(b, off.checked_add(8)?)?,
        sh_addr: u64_at(b, off.checked_add(16)?)?,
        sh_offset: u64_at(b, off.checked_add(24)?)?,
        sh_size: u64_at(b, off.checked_add(32)?)?,
        sh_link: u32_at(b, off.checked_add(40)?)?,
        sh_info: u32_at(b, off.checked_add(44)?)?,
        sh_addralign: u64_at(b, off.checked_add(48)?)?,
        sh_entsize: u64_at(b, off.checked_add(56)?)?,
    })
}

/// The symbol at byte offset `off`.
pub fn read_sym(b: &[u8], off: usize) -> Option<Elf64Sym> {
    Some(Elf64Sym {
        st_name: u32_at(b, off)?,
        st_info: *b.get(off.checked_add(4)?)?,
        st_other: *b.get(off.checked_add(5)?)?,
        st_shndx: u16_at(b, off.checked_add(6)?)?,
        st_value: u64_at(b, off.checked_add(8)?)?,
        st_size: u64_at(b, off.checked_add(16)?)?,
    })
}

/// The bytes `[offset, offset + size)` of `b`, if they are all in the file.
pub fn range(b: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(size).ok()?;
    b.get(start..start.checked_add(len)?)
}

/// The NUL-terminated string at `index` of a string table, without its NUL; `None`
/// when `index` is outside the table or the string runs off its end.
pub fn c_str(table: &[u8], index: u32) -> Option<&[u8]> {
    let rest = table.get(usize::try_from(index).ok()?..)?;
    let len = rest.iter().position(|&c| c == 0)?;
    rest.get(..len)
}

/// A symbol table as lockstat sees it.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub bytes: &'a [u8],
    pub ehdr: Elf64Ehdr,
    pub shdrs: Vec<Elf64Shdr>,
    /// Section index of the symbol table.
    pub symtab_index: usize,
    pub syms: Vec<Elf64Sym>,
    pub strtab: &'a [u8],
}

impl<'a> Snapshot<'a> {
    /// Reads the section headers, the symbol table and its string table.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.len() < EHDR_SIZE {
            return err(format!(
                "truncated: {} bytes, the ELF header alone needs {EHDR_SIZE}",
                bytes.len()
            ));
        }
        let Some(ehdr) = read_ehdr(bytes) else {
            return err("truncated ELF header");
        };
        if ehdr.e_ident[..4] != ELFMAG {
            return err(format!(
                "not an ELF file (bad magic {})",
                hex_bytes(&ehdr.e_ident[..4])
            ));
        }
        if ehdr.e_ident[EI_CLASS] != ELFCLASS64 || ehdr.e_ident[EI_DATA] != ELFDATA2LSB {
            return err(format!(
                "not a 64-bit little-endian ELF file (class {}, data {})",
                ehdr.e_ident[EI_CLASS], ehdr.e_ident[EI_DATA]
            ));
        }
        if usize::from(ehdr.e_shentsize) != SHDR_SIZE {
            return err(format!(
                "e_shentsize is {}, an Elf64_Shdr is {SHDR_SIZE} bytes",
                ehdr.e_shentsize
            ));
        }
        let shnum = usize::from(ehdr.e_shnum);
        let table_len = (shnum as u64) * SHDR_SIZE as u64;
        if range(bytes, ehdr.e_shoff, table_len).is_none() {
            return err(format!(
                "truncated: the section headers ({} at offset {}) end past the file's {} bytes",
                shnum,
                ehdr.e_shoff,
                bytes.len()
            ));
        }
        let mut shdrs = Vec::with_capacity(shnum);
        for i in 0..shnum {
            let off = usize::try_from(ehdr.e_shoff)
                .ok()
                .and_then(|o| o.checked_add(i * SHDR_SIZE));
            match off.and_then(|o| read_shdr(bytes, o)) {
                Some(sh) => shdrs.push(sh),
                None => return err(format!("truncated: section header {i} is past the end")),
            }
        }
        // lockstat keeps the last SHT_SYMTAB it meets; a snapshot has exactly one.
        let Some(symtab_index) = shdrs.iter().rposition(|s| s.sh_type == SHT_SYMTAB) else {
            return err("no symbol table (no SHT_SYMTAB section)");
        };
        let symtab = shdrs[symtab_index];
        if symtab.sh_entsize != SYM_SIZE as u64 {
            return err(format!(
                "the symbol table's sh_entsize is {}, an Elf64_Sym is {SYM_SIZE} bytes",
                symtab.sh_entsize
            ));
        }
        let Some(sym_bytes) = range(bytes, symtab.sh_offset, symtab.sh_size) else {
            return err(format!(
                "truncated: the symbol table (offset {}, {} bytes) ends past the file's {} bytes",
                symtab.sh_offset,
                symtab.sh_size,
                bytes.len()
            ));
        };
        if !sym_bytes.len().is_multiple_of(SYM_SIZE) {
            return err(format!(
                "the symbol table's size {} is not a multiple of {SYM_SIZE}",
                sym_bytes.len()
            ));
        }
        let link = symtab.sh_link as usize;
        let Some(strsh) = shdrs.get(link).copied() else {
            return err(format!(
                "the symbol table's sh_link {link} names no section (there are {shnum})"
            ));
        };
        if strsh.sh_type != SHT_STRTAB {
            return err(format!(
                "the symbol table's sh_link {link} names a section of type {}, not SHT_STRTAB",
                strsh.sh_type
            ));
        }
        let Some(strtab) = range(bytes, strsh.sh_offset, strsh.sh_size) else {
            return err(format!(
                "truncated: the string table (offset {}, {} bytes) ends past the file's {} bytes",
                strsh.sh_offset,
                strsh.sh_size,
                bytes.len()
            ));
        };
        let syms = sym_bytes
            .chunks_exact(SYM_SIZE)
            .filter_map(|c| read_sym(c, 0))
            .collect();
        Ok(Snapshot {
            bytes,
            ehdr,
            shdrs,
            symtab_index,
            syms,
            strtab,
        })
    }

    /// A symbol's name, `None` when `st_name` is outside the string table.
    pub fn name_bytes(&self, sym: &Elf64Sym) -> Option<&'a [u8]> {
        c_str(self.strtab, sym.st_name)
    }

    /// A symbol's name for display: lossy UTF-8, `?` when it cannot be read.
    pub fn name(&self, sym: &Elf64Sym) -> Cow<'a, str> {
        match self.name_bytes(sym) {
            Some(n) => String::from_utf8_lossy(n),
            None => Cow::Borrowed("?"),
        }
    }

    /// The `sh_info` of the symbol table: one past the last local symbol.
    pub fn sh_info(&self) -> u32 {
        self.shdrs.get(self.symtab_index).map_or(0, |s| s.sh_info)
    }
}

/// `7f 45 4c 46` style.
pub fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|c| format!("{c:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
