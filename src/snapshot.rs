//! The snapshot: one ELF file holding the symbol tables of every linker file.
//!
//! Building one takes two walks over the linker files. The first feeds a
//! [`Census`] (how many symbols, how many of them local, how many string bytes),
//! which gives the [`SnapshotLayout`]. The second feeds a [`Writer`], which emits the
//! file into a [`Sink`] in bounded chunks. The writer never writes outside the
//! layout: when the second walk finds more (or, at [`Writer::finish`], fewer) symbols
//! or string bytes than the first, the linker files changed in between and the
//! attempt fails with [`Error::Changed`]; the caller throws it away and retries.
//!
//! # The file
//! ```text
//! 0    Elf64_Ehdr
//! 64   Elf64_Phdr x2      compatibility PT_LOADs (R|X, R|W|X), all zero
//! 176  Elf64_Shdr x4      null, .symtab, .strtab, .shstrtab
//! 432  .shstrtab          "\0.symtab\0.strtab\0.shstrtab\0", padded to 464
//! 464  .symtab            locals of every file, then the other symbols
//! ...  .strtab            the string tables of every file, concatenated
//! ```
//!
//! # Symbol order and fix-ups
//! ELF wants the local symbols first, with `.symtab`'s `sh_info` one past the last
//! of them. So the table is two runs: every file's local symbols (its null symbol
//! among them), then every file's global and weak symbols; within each run, files
//! in the kernel's order (the kernel first) and each file's symbols in its own
//! order. The kernel's null symbol is therefore entry 0.
//!
//! Each file's string table is appended whole, so a symbol's `st_name` grows by the
//! size of the string tables before its file. For every file but the kernel, whose
//! values are already addresses, `st_value` becomes the address the kernel linker
//! reports ([`LinkerFile::symbol_value`]) and is kept where it reports none.
//!
//! Defined symbols get `st_shndx = SHN_ABS`: their values are absolute addresses,
//! and the section indices they had name sections of the kernel or of a module,
//! not of this file, which has only the four above. Undefined symbols stay
//! `SHN_UNDEF`. Tools tell functions from data by `st_type`; `nm` prints `A`/`a`.

use crate::elf::{
    as_bytes, Elf64Ehdr, Elf64Phdr, Elf64Shdr, Elf64Sym, ElfTarget, SegmentFlags, EI_ABIVERSION,
    EI_CLASS, EI_DATA, EI_NIDENT, EI_OSABI, EI_VERSION, ELFMAG, ET_EXEC, EV_CURRENT, PT_LOAD,
    SHN_ABS, SHN_UNDEF, SHT_STRTAB, SHT_SYMTAB,
};
use crate::error::{Error, Result};
use static_assertions::const_assert_eq;

/// One linker file, as the kernel linker shows it while the linker files are held.
pub trait LinkerFile {
    /// Whether this is the kernel itself (linker file id 1), whose values are
    /// already absolute.
    fn is_kernel(&self) -> bool;
    /// The file's whole symbol table, its null symbol included.
    fn symbols(&self) -> Result<&[Elf64Sym]>;
    /// The file's whole string table.
    fn strings(&self) -> Result<&[u8]>;
    /// The absolute address the kernel linker reports for `symbols()[index]`, if any
    /// (`LINKER_DEBUG_SYMBOL_VALUES`). Asked only of files that are not the kernel.
    fn symbol_value(&self, index: usize, sym: &Elf64Sym) -> Option<u64>;
}

/// Where a snapshot's bytes go: "write these bytes at this offset". Offsets come in
/// no particular order, each byte of the file is written exactly once, and no
/// write ends past [`SnapshotLayout::size`].
pub trait Sink {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()>;
}

/// A sink over a buffer of exactly the snapshot's size.
pub struct SliceSink<'a>(pub &'a mut [u8]);

impl Sink for SliceSink<'_> {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| Error::TooLarge)?;
        let end = start.checked_add(bytes.len()).ok_or(Error::TooLarge)?;
        let dst = self.0.get_mut(start..end).ok_or(Error::TooLarge)?;
        dst.copy_from_slice(bytes);
        Ok(())
    }
}

/// Section indices of the snapshot.
pub const SHDR_SYMTAB: u16 = 1;
pub const SHDR_STRTAB: u16 = 2;
pub const SHDR_SHSTRTAB: u16 = 3;
const SHDR_NUM: usize = 4;

/// The section-name table, NUL included at both ends.
pub const SHSTRTAB: &[u8; 27] = b"\0.symtab\0.strtab\0.shstrtab\0";
const NAME_SYMTAB: u32 = 1;
const NAME_STRTAB: u32 = 9;
const NAME_SHSTRTAB: u32 = 17;

const SYM_SIZE: u64 = core::mem::size_of::<Elf64Sym>() as u64;

/// Everything before `.symtab`, as it lies in the file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HeaderBlock {
    pub ehdr: Elf64Ehdr,
    pub phdr: [Elf64Phdr; 2],
    pub shdr: [Elf64Shdr; SHDR_NUM],
    pub shstrtab: [u8; 27],
    pad: [u8; 5],
}

const_assert_eq!(core::mem::size_of::<HeaderBlock>(), 464);

// SAFETY: repr(C) of Pod records and byte arrays whose sizes add up to the asserted
// 464 bytes (64 + 2*56 + 4*64 + 27 + 5): no padding, every bit pattern valid.
unsafe impl crate::elf::Pod for HeaderBlock {}

/// Size of the header block; `.symtab` starts here.
pub const HEADER_SIZE: u64 = core::mem::size_of::<HeaderBlock>() as u64;

/// The totals of the first walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub files: u64,
    pub symbols: u64,
    pub locals: u64,
    pub string_bytes: u64,
}

impl Census {
    /// Counts one more linker file.
    pub fn add(&mut self, file: &impl LinkerFile) -> Result<()> {
        let symbols = file.symbols()?;
        let strings = file.strings()?;
        let locals = symbols.iter().filter(|s| s.is_local()).count();
        self.files = self.files.checked_add(1).ok_or(Error::TooLarge)?;
        self.symbols = add_len(self.symbols, symbols.len())?;
        self.locals = add_len(self.locals, locals)?;
        self.string_bytes = add_len(self.string_bytes, strings.len())?;
        Ok(())
    }

    /// The layout of a snapshot of these files.
    pub fn layout(&self) -> Result<SnapshotLayout> {
        SnapshotLayout::new(self.symbols, self.locals, self.string_bytes)
    }
}

fn add_len(total: u64, len: usize) -> Result<u64> {
    u64::try_from(len)
        .ok()
        .and_then(|len| total.checked_add(len))
        .ok_or(Error::TooLarge)
}

/// Sizes and offsets of one snapshot; every field was checked to fit the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotLayout {
    symbols: u64,
    locals: u64,
    string_bytes: u64,
    symtab_size: u64,
    strtab_offset: u64,
    size: u64,
}

impl SnapshotLayout {
    /// The layout for `symbols` symbols, `locals` of them local, and `string_bytes`
    /// bytes of strings. Fails with [`Error::TooLarge`] when a field would overflow:
    /// the file size, a section size, `sh_info` (32 bits) or an `st_name` (32 bits).
    pub fn new(symbols: u64, locals: u64, string_bytes: u64) -> Result<Self> {
        if locals > symbols || string_bytes > u64::from(u32::MAX) || locals > u64::from(u32::MAX) {
            return Err(Error::TooLarge);
        }
        let symtab_size = symbols.checked_mul(SYM_SIZE).ok_or(Error::TooLarge)?;
        let strtab_offset = HEADER_SIZE
            .checked_add(symtab_size)
            .ok_or(Error::TooLarge)?;
        let size = strtab_offset
            .checked_add(string_bytes)
            .ok_or(Error::TooLarge)?;
        // A snapshot is mapped and read through off_t/size_t arithmetic.
        if size > i64::MAX as u64 {
            return Err(Error::TooLarge);
        }
        Ok(SnapshotLayout {
            symbols,
            locals,
            string_bytes,
            symtab_size,
            strtab_offset,
            size,
        })
    }

    /// The size of the whole file in bytes.
    pub const fn size(&self) -> u64 {
        self.size
    }
    pub const fn symbols(&self) -> u64 {
        self.symbols
    }
    pub const fn locals(&self) -> u64 {
        self.locals
    }
    pub const fn string_bytes(&self) -> u64 {
        self.string_bytes
    }
    pub const fn symtab_offset(&self) -> u64 {
        HEADER_SIZE
    }
    pub const fn strtab_offset(&self) -> u64 {
        self.strtab_offset
    }

    /// The header block of this snapshot for `target`.
    pub fn header(&self, target: &ElfTarget) -> HeaderBlock {
        let mut ident = [0u8; EI_NIDENT];
        ident[..4].copy_from_slice(&ELFMAG);
        ident[EI_CLASS] = target.class;
        ident[EI_DATA] = target.data;
        ident[EI_VERSION] = EV_CURRENT;
        ident[EI_OSABI] = target.osabi;
        ident[EI_ABIVERSION] = 0;

        let phoff = core::mem::offset_of!(HeaderBlock, phdr) as u64;
        let shoff = core::mem::offset_of!(HeaderBlock, shdr) as u64;
        let shstrtab_off = core::mem::offset_of!(HeaderBlock, shstrtab) as u64;
        let load = |flags: SegmentFlags| Elf64Phdr {
            p_type: PT_LOAD,
            p_flags: flags.bits(),
            ..Default::default()
        };

        let mut shstrtab = [0u8; 27];
        shstrtab.copy_from_slice(SHSTRTAB);
        HeaderBlock {
            ehdr: Elf64Ehdr {
                e_ident: ident,
                e_type: ET_EXEC,
                e_machine: target.machine,
                e_version: u32::from(EV_CURRENT),
                e_entry: 0,
                e_phoff: phoff,
                e_shoff: shoff,
                e_flags: 0,
                e_ehsize: core::mem::size_of::<Elf64Ehdr>() as u16,
                e_phentsize: core::mem::size_of::<Elf64Phdr>() as u16,
                e_phnum: 2,
                e_shentsize: core::mem::size_of::<Elf64Shdr>() as u16,
                e_shnum: SHDR_NUM as u16,
                e_shstrndx: SHDR_SHSTRTAB,
            },
            phdr: [
                load(SegmentFlags::R | SegmentFlags::X),
                load(SegmentFlags::R | SegmentFlags::W | SegmentFlags::X),
            ],
            shdr: [
                Elf64Shdr::default(),
                Elf64Shdr {
                    sh_name: NAME_SYMTAB,
                    sh_type: SHT_SYMTAB,
                    sh_offset: HEADER_SIZE,
                    sh_size: self.symtab_size,
                    sh_link: u32::from(SHDR_STRTAB),
                    // Checked in new(): locals <= u32::MAX.
                    sh_info: self.locals as u32,
                    sh_addralign: 8,
                    sh_entsize: SYM_SIZE,
                    ..Default::default()
                },
                Elf64Shdr {
                    sh_name: NAME_STRTAB,
                    sh_type: SHT_STRTAB,
                    sh_offset: self.strtab_offset,
                    sh_size: self.string_bytes,
                    sh_addralign: 1,
                    ..Default::default()
                },
                Elf64Shdr {
                    sh_name: NAME_SHSTRTAB,
                    sh_type: SHT_STRTAB,
                    sh_offset: shstrtab_off,
                    sh_size: SHSTRTAB.len() as u64,
                    sh_addralign: 1,
                    ..Default::default()
                },
            ],
            shstrtab,
            pad: [0; 5],
        }
    }
}

/// Largest piece of a string table handed to the sink at once.
pub const STRING_CHUNK: usize = 64 * 1024;

/// A run of symbol-table entries being filled, in its own part of the scratch
/// buffer: the locals, or the others.
struct Run {
    /// Where the run's part of the scratch buffer starts, and how many entries it has.
    start: usize,
    cap: usize,
    /// Entries of that part filled and not yet handed to the sink.
    filled: usize,
    /// Index in `.symtab` of the first pending entry.
    next: u64,
    /// One past the last index this run may write.
    end: u64,
}

impl Run {
    /// Hands the pending entries to the sink, at their place in `.symtab`.
    fn flush(&mut self, scratch: &[Elf64Sym], sink: &mut impl Sink) -> Result<()> {
        let stop = self.start.checked_add(self.filled).ok_or(Error::Invalid)?;
        let pending = scratch.get(self.start..stop).ok_or(Error::Invalid)?;
        let after = add_len(self.next, pending.len())?;
        if after > self.end {
            // More symbols than the census counted.
            return Err(Error::Changed);
        }
        let offset = self
            .next
            .checked_mul(SYM_SIZE)
            .and_then(|o| o.checked_add(HEADER_SIZE))
            .ok_or(Error::TooLarge)?;
        if !pending.is_empty() {
            sink.write_at(offset, as_bytes(pending))?;
        }
        self.next = after;
        self.filled = 0;
        Ok(())
    }
}

/// The second walk: emits the snapshot of the files it is given, in order.
///
/// After an error from [`Writer::add`], the attempt is over: drop the writer.
pub struct Writer<'w, S: Sink> {
    layout: SnapshotLayout,
    sink: &'w mut S,
    /// The locals' part, then the others' part.
    scratch: &'w mut [Elf64Sym],
    locals: Run,
    globals: Run,
    /// Bytes of `.strtab` written so far: the rebase of the next file's names.
    strings: u64,
}

impl<'w, S: Sink> Writer<'w, S> {
    /// Starts a snapshot with `layout` in `sink`, writing the header block.
    /// `scratch` holds the symbols on their way to the sink (at least two entries;
    /// its size sets the chunk size), so no second copy of the file is needed.
    pub fn new(
        layout: SnapshotLayout,
        target: &ElfTarget,
        sink: &'w mut S,
        scratch: &'w mut [Elf64Sym],
    ) -> Result<Self> {
        if scratch.len() < 2 {
            return Err(Error::Invalid);
        }
        if layout.symbols > 0 && layout.locals == 0 {
            // Every symbol table starts with its null symbol, a local: without any
            // local, entry 0 of the snapshot would be some global symbol.
            return Err(Error::BadLinkerFile);
        }
        let half = scratch.len() / 2;
        let rest = scratch.len().saturating_sub(half);
        sink.write_at(0, as_bytes(core::slice::from_ref(&layout.header(target))))?;
        Ok(Writer {
            layout,
            sink,
            scratch,
            locals: Run {
                start: 0,
                cap: half,
                filled: 0,
                next: 0,
                end: layout.locals,
            },
            globals: Run {
                start: half,
                cap: rest,
                filled: 0,
                next: layout.locals,
                end: layout.symbols,
            },
            strings: 0,
        })
    }

    /// Appends one linker file: its symbols (fixed up) and its string table.
    pub fn add(&mut self, file: &impl LinkerFile) -> Result<()> {
        let symbols = file.symbols()?;
        let strings = file.strings()?;
        let strsz = u64::try_from(strings.len()).map_err(|_| Error::TooLarge)?;
        let base = self.strings;
        let end = base.checked_add(strsz).ok_or(Error::TooLarge)?;
        if end > self.layout.string_bytes {
            return Err(Error::Changed);
        }
        // Names must stay inside their own table, and the table must end a string:
        // otherwise a name would run on into the next file's strings.
        if !symbols.is_empty() && strings.last() != Some(&0) {
            return Err(Error::BadLinkerFile);
        }
        // end <= string_bytes <= u32::MAX (SnapshotLayout::new): every rebased name
        // fits an st_name.
        let base32 = u32::try_from(base).map_err(|_| Error::TooLarge)?;
        let strsz32 = u32::try_from(strsz).map_err(|_| Error::TooLarge)?;
        let module = !file.is_kernel();
        if self.locals.next == 0 && self.locals.filled == 0 {
            // The first local written is entry 0 of the symbol table, which must be the
            // null symbol, also after the fix-ups.
            let mut locals = symbols.iter().enumerate().filter(|(_, s)| s.is_local());
            if let Some((index, first)) = locals.next() {
                let resolved = module && file.symbol_value(index, first).is_some_and(|v| v != 0);
                if *first != Elf64Sym::default() || base != 0 || resolved {
                    return Err(Error::BadLinkerFile);
                }
            }
        }
        // One loop per kind of file, so the kernel's has no resolver call in it.
        if module {
            self.add_symbols::<_, true>(file, symbols, base32, strsz32)?;
        } else {
            self.add_symbols::<_, false>(file, symbols, base32, strsz32)?;
        }
        let mut at = self
            .layout
            .strtab_offset
            .checked_add(base)
            .ok_or(Error::TooLarge)?;
        for chunk in strings.chunks(STRING_CHUNK) {
            self.sink.write_at(at, chunk)?;
            at = add_len(at, chunk.len())?;
        }
        self.strings = end;
        Ok(())
    }

    /// Fixes up `symbols`, whose names are `base` bytes into `.strtab` and must lie
    /// in a table of `strsz` bytes, into the two runs.
    #[inline(always)]
    fn add_symbols<F: LinkerFile, const MODULE: bool>(
        &mut self,
        file: &F,
        symbols: &[Elf64Sym],
        base: u32,
        strsz: u32,
    ) -> Result<()> {
        // Symbols go in chunks that fit the room left in both runs, so the loop over
        // a chunk needs no check for a full run. The fill positions live in
        // registers, and each symbol goes to its run's part of the scratch buffer
        // without a branch on its binding, since bindings may come in any order.
        let lcap = self.locals.cap;
        let gstart = self.globals.start;
        let gend = gstart.checked_add(self.globals.cap).ok_or(Error::Invalid)?;
        // A run with less room than this is flushed early, so chunks stay long
        // while symbols keep going to the other run.
        let low = |cap: usize| (cap / 4).max(1);
        let (llow, glow) = (low(lcap), low(self.globals.cap));
        let mut li = self.locals.filled;
        let mut gi = gstart
            .checked_add(self.globals.filled)
            .ok_or(Error::Invalid)?;
        let mut done = 0usize;
        while let Some(rest) = symbols.get(done..).filter(|r| !r.is_empty()) {
            if lcap.saturating_sub(li) < llow {
                self.locals.filled = li;
                self.locals.flush(self.scratch, self.sink)?;
                li = 0;
            }
            if gend.saturating_sub(gi) < glow {
                self.globals.filled = gi.checked_sub(gstart).ok_or(Error::Invalid)?;
                self.globals.flush(self.scratch, self.sink)?;
                gi = gstart;
            }
            // At least one entry: both runs have at least `low` >= 1 free now.
            let room = lcap.saturating_sub(li).min(gend.saturating_sub(gi));
            let chunk = rest.get(..room.min(rest.len())).ok_or(Error::Invalid)?;
            for (k, sym) in chunk.iter().enumerate() {
                if sym.st_name >= strsz {
                    return Err(Error::BadLinkerFile);
                }
                let mut out = *sym;
                if MODULE {
                    let index = done.checked_add(k).ok_or(Error::Invalid)?;
                    if let Some(value) = file.symbol_value(index, sym) {
                        out.st_value = value;
                    }
                }
                out.st_name = base.checked_add(sym.st_name).ok_or(Error::TooLarge)?;
                out.st_shndx = if sym.st_shndx == SHN_UNDEF {
                    SHN_UNDEF
                } else {
                    SHN_ABS
                };
                let local = sym.is_local();
                let slot = if local { li } else { gi };
                *self.scratch.get_mut(slot).ok_or(Error::Invalid)? = out;
                li = li.checked_add(usize::from(local)).ok_or(Error::Invalid)?;
                gi = gi.checked_add(usize::from(!local)).ok_or(Error::Invalid)?;
            }
            done = done.checked_add(chunk.len()).ok_or(Error::Invalid)?;
        }
        self.locals.filled = li;
        self.globals.filled = gi.checked_sub(gstart).ok_or(Error::Invalid)?;
        Ok(())
    }

    /// Flushes what is pending and checks that the file came out exactly as laid
    /// out: every symbol and string byte the census counted was written.
    pub fn finish(mut self) -> Result<SnapshotLayout> {
        self.locals.flush(self.scratch, self.sink)?;
        self.globals.flush(self.scratch, self.sink)?;
        if self.locals.next != self.locals.end
            || self.globals.next != self.globals.end
            || self.strings != self.layout.string_bytes
        {
            return Err(Error::Changed);
        }
        Ok(self.layout)
    }
}

/// The census of files already at hand (host tools and tests; the kernel feeds
/// [`Census::add`] from its own walk).
pub fn census<F: LinkerFile>(files: &[F]) -> Result<Census> {
    let mut census = Census::default();
    for file in files {
        census.add(file)?;
    }
    Ok(census)
}

/// Writes the snapshot of `files` into `sink`, whose layout `layout` must come from
/// the census of the same files.
pub fn write<F: LinkerFile, S: Sink>(
    files: &[F],
    layout: SnapshotLayout,
    target: &ElfTarget,
    sink: &mut S,
    scratch: &mut [Elf64Sym],
) -> Result<SnapshotLayout> {
    let mut writer = Writer::new(layout, target, sink, scratch)?;
    for file in files {
        writer.add(file)?;
    }
    writer.finish()
}
