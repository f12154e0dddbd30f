//! Reading an ELF file's symbol table, with the `object` crate: any class, either
//! byte order, any machine.
//!
//! lockstat(1) reads `/dev/ksyms` with libelf: it walks the section headers, takes
//! the `SHT_SYMTAB` section and the string table its `sh_link` names, and uses the
//! symbols as they are. [`ElfSymbols::parse`] does the same and no more, so that
//! `summary`, `lookup`, `find` and `dump` work on any well-enough-formed symbol
//! table (the FreeBSD in-tree driver's output included); [`ElfSymbols::parse_input`]
//! also takes `.dynsym` when there is no `.symtab`, for `build`'s inputs. Symbols
//! are widened to [`Elf64Sym`] whatever the file's class. The strict rules of
//! SPEC.md are checked separately, by [`crate::check`].

use ksyms::elf::Elf64Sym;
use object::elf::{FileHeader32, FileHeader64, ELFMAG, SHT_DYNSYM, SHT_STRTAB, SHT_SYMTAB};
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::Endianness;
use std::borrow::Cow;
use std::fmt;

/// Why a file cannot be read as a symbol table at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl From<object::read::Error> for ParseError {
    fn from(e: object::read::Error) -> Self {
        ParseError(e.to_string())
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// What `build` needs of a section: where it goes and how much room it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub sh_type: u32,
    pub sh_flags: u64,
    pub sh_addr: u64,
    pub sh_size: u64,
    pub sh_addralign: u64,
}

/// A symbol table and what the file says around it.
#[derive(Debug)]
pub struct ElfSymbols<'a> {
    /// Bytes in the file.
    pub size: usize,
    pub e_type: u16,
    pub e_machine: u16,
    pub sections: Vec<Section>,
    /// Its `sh_info`: one past the last local symbol.
    pub sh_info: u32,
    pub syms: Vec<Elf64Sym>,
    pub strtab: &'a [u8],
}

/// Which symbol table to take.
#[derive(Clone, Copy)]
enum Table {
    /// The last `SHT_SYMTAB`, as lockstat does.
    Symtab,
    /// The first `SHT_SYMTAB`, else the first `SHT_DYNSYM`.
    SymtabElseDynsym,
}

impl<'a> ElfSymbols<'a> {
    /// The symbol table the way lockstat reads it.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_table(bytes, Table::Symtab)
    }

    /// `.symtab`, or `.dynsym` when the file is stripped.
    pub fn parse_input(bytes: &'a [u8]) -> Result<Self, ParseError> {
        Self::parse_table(bytes, Table::SymtabElseDynsym)
    }

    fn parse_table(bytes: &'a [u8], table: Table) -> Result<Self, ParseError> {
        match bytes.get(..5) {
            Some([m0, m1, m2, m3, class]) if [*m0, *m1, *m2, *m3] == ELFMAG => match class {
                1 => read::<FileHeader32<Endianness>>(bytes, table),
                2 => read::<FileHeader64<Endianness>>(bytes, table),
                c => err(format!("unknown ELF class {c}")),
            },
            _ => err(format!(
                "not an ELF file (bad magic {})",
                hex_bytes(&bytes[..bytes.len().min(4)])
            )),
        }
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
}

fn read<'a, Elf: FileHeader<Endian = Endianness>>(
    bytes: &'a [u8],
    table: Table,
) -> Result<ElfSymbols<'a>, ParseError> {
    let header = Elf::parse(bytes)?;
    let endian = header.endian()?;
    let headers = header.section_headers(endian, bytes)?;
    let of_type = |t: u32| headers.iter().position(|s| s.sh_type(endian) == t);
    let found = match table {
        Table::Symtab => headers
            .iter()
            .rposition(|s| s.sh_type(endian) == SHT_SYMTAB),
        Table::SymtabElseDynsym => of_type(SHT_SYMTAB).or_else(|| of_type(SHT_DYNSYM)),
    };
    let Some(symtab_index) = found else {
        return err(match table {
            Table::Symtab => "no symbol table (no SHT_SYMTAB section)",
            Table::SymtabElseDynsym => "no symbol table (.symtab or .dynsym)",
        });
    };
    let symtab = &headers[symtab_index];
    let entsize: u64 = symtab.sh_entsize(endian).into();
    let want = std::mem::size_of::<Elf::Sym>() as u64;
    if entsize != want {
        return err(format!(
            "the symbol table's sh_entsize is {entsize}, a symbol is {want} bytes"
        ));
    }
    let syms: &[Elf::Sym] = symtab
        .data_as_array(endian, bytes)
        .map_err(|_| ParseError(format!(
            "truncated: the symbol table (offset {}, {} bytes) is not a whole number of symbols inside the file's {} bytes",
            symtab.sh_offset(endian).into(),
            symtab.sh_size(endian).into(),
            bytes.len()
        )))?;
    let link = symtab.sh_link(endian) as usize;
    let Some(strsh) = headers.get(link) else {
        return err(format!(
            "the symbol table's sh_link {link} names no section (there are {})",
            headers.len()
        ));
    };
    if strsh.sh_type(endian) != SHT_STRTAB {
        return err(format!(
            "the symbol table's sh_link {link} names a section of type {}, not SHT_STRTAB",
            strsh.sh_type(endian)
        ));
    }
    let strtab = strsh.data(endian, bytes).map_err(|_| {
        ParseError(format!(
            "truncated: the string table (offset {}, {} bytes) ends past the file's {} bytes",
            strsh.sh_offset(endian).into(),
            strsh.sh_size(endian).into(),
            bytes.len()
        ))
    })?;
    Ok(ElfSymbols {
        size: bytes.len(),
        e_type: header.e_type(endian),
        e_machine: header.e_machine(endian),
        sections: headers
            .iter()
            .map(|s| Section {
                sh_type: s.sh_type(endian),
                sh_flags: s.sh_flags(endian).into(),
                sh_addr: s.sh_addr(endian).into(),
                sh_size: s.sh_size(endian).into(),
                sh_addralign: s.sh_addralign(endian).into(),
            })
            .collect(),
        sh_info: symtab.sh_info(endian),
        syms: syms
            .iter()
            .map(|s| Elf64Sym {
                st_name: s.st_name(endian),
                st_info: s.st_info(),
                st_other: s.st_other(),
                st_shndx: s.st_shndx(endian),
                st_value: s.st_value(endian).into(),
                st_size: s.st_size(endian).into(),
            })
            .collect(),
        strtab,
    })
}

/// The NUL-terminated string at `index` of a string table, without its NUL; `None`
/// when `index` is outside the table or the string runs off its end.
pub fn c_str(table: &[u8], index: u32) -> Option<&[u8]> {
    let rest = table.get(usize::try_from(index).ok()?..)?;
    let len = rest.iter().position(|&c| c == 0)?;
    rest.get(..len)
}

/// `7f 45 4c 46` style.
pub fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|c| format!("{c:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
